//! scikit-learn's stratified train/test split, reproduced index for index: what
//! `train_test_split(..., test_size=f, stratify=y, random_state=s)` (scikit-learn 1.x, numpy's
//! legacy `RandomState`) puts in the test set. Reference benchmarks (anchors.md) were made on
//! that split; comparing with them on the same cells needs the same draw, so this module
//! replays numpy's MT19937 stream, its `permutation` and scikit-learn's `StratifiedShuffleSplit`
//! allocation (`_approximate_mode`) exactly.

use crate::split::{by_class, ensure_test_fraction};
use crate::{PreprocessError, Result};

/// numpy's legacy `RandomState(seed)`: MT19937 seeded by `init_genrand`, 32-bit draws.
struct LegacyRandomState {
    state: [u32; 624],
    pos: usize,
}

impl LegacyRandomState {
    fn new(seed: u32) -> Self {
        let mut state = [0u32; 624];
        state[0] = seed;
        for i in 1..624 {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        LegacyRandomState { state, pos: 624 }
    }

    fn regenerate(&mut self) {
        for i in 0..624 {
            let y = (self.state[i] & 0x8000_0000) | (self.state[(i + 1) % 624] & 0x7fff_ffff);
            let mag = if y & 1 == 1 { 0x9908_b0df } else { 0 };
            self.state[i] = self.state[(i + 397) % 624] ^ (y >> 1) ^ mag;
        }
        self.pos = 0;
    }

    fn next_u32(&mut self) -> u32 {
        if self.pos >= 624 {
            self.regenerate();
        }
        let mut y = self.state[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// numpy's `random_interval(max)`: uniform on `0..=max` by masked rejection.
    fn interval(&mut self, max: u32) -> u32 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        for shift in [1, 2, 4, 8, 16] {
            mask |= mask >> shift;
        }
        loop {
            let v = self.next_u32() & mask;
            if v <= max {
                return v;
            }
        }
    }

    /// `RandomState.permutation(n)`: Fisher-Yates from the end over `0..n`.
    fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut a: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.interval(i as u32) as usize;
            a.swap(i, j);
        }
        a
    }
}

/// scikit-learn's `_approximate_mode`: `floor(counts / total * draws)` per class, the shortfall
/// given to the largest remainders, ties broken by `rng.choice(..., replace=False)`.
fn approximate_mode(counts: &[usize], draws: usize, rng: &mut LegacyRandomState) -> Vec<usize> {
    let total: usize = counts.iter().sum();
    let continuous: Vec<f64> = counts
        .iter()
        .map(|&c| c as f64 / total as f64 * draws as f64)
        .collect();
    let mut floored: Vec<f64> = continuous.iter().map(|c| c.floor()).collect();
    let mut need = draws as i64 - floored.iter().sum::<f64>() as i64;
    if need > 0 {
        let remainder: Vec<f64> = continuous
            .iter()
            .zip(&floored)
            .map(|(c, f)| c - f)
            .collect();
        let mut values = remainder.clone();
        values.sort_by(|a, b| b.total_cmp(a));
        values.dedup();
        for value in values {
            let inds: Vec<usize> = (0..remainder.len())
                .filter(|&i| remainder[i] == value)
                .collect();
            let add_now = inds.len().min(need as usize);
            // Legacy `choice(a, size, replace=False)` is `a[permutation(len(a))[:size]]`.
            for k in rng.permutation(inds.len()).into_iter().take(add_now) {
                floored[inds[k]] += 1.0;
            }
            need -= add_now as i64;
            if need == 0 {
                break;
            }
        }
    }
    floored.iter().map(|&f| f as usize).collect()
}

/// The `(train, test)` rows (each sorted) of scikit-learn's
/// `train_test_split(rows, test_size=test_fraction, stratify=labels, random_state=seed)`:
/// `ceil(test_fraction * n)` test rows, allocated to classes by `_approximate_mode` and drawn by
/// numpy's legacy MT19937. Classes are ordered by index, as `np.unique` orders the label text
/// when the indices come from [`crate::LabelEncoder`]. Errors, like scikit-learn, when a class
/// has fewer than 2 members or either side would hold fewer rows than there are classes.
pub fn sklearn_stratified_split(
    labels: &[u32],
    test_fraction: f64,
    seed: u32,
) -> Result<(Vec<usize>, Vec<usize>)> {
    ensure_test_fraction(test_fraction)?;
    let n = labels.len();
    let n_test = (test_fraction * n as f64).ceil() as usize;
    let n_train = n.saturating_sub(n_test);
    // Classes ascending, rows ascending within each (numpy's stable argsort of the class index).
    let (classes, members): (Vec<u32>, Vec<Vec<usize>>) = by_class(labels).into_iter().unzip();
    if let Some((c, m)) = classes.iter().zip(&members).find(|(_, m)| m.len() < 2) {
        return Err(PreprocessError::Data(format!(
            "class {c} has {} member(s); a stratified split needs at least 2 per class",
            m.len()
        )));
    }
    if n_train < classes.len() || n_test < classes.len() {
        return Err(PreprocessError::Data(format!(
            "{n_train} training and {n_test} test rows cannot hold all {} classes",
            classes.len()
        )));
    }
    let counts: Vec<usize> = members.iter().map(Vec::len).collect();
    let mut rng = LegacyRandomState::new(seed);
    let train_per_class = approximate_mode(&counts, n_train, &mut rng);
    let remaining: Vec<usize> = counts
        .iter()
        .zip(&train_per_class)
        .map(|(c, t)| c - t)
        .collect();
    let test_per_class = approximate_mode(&remaining, n_test, &mut rng);
    let (mut train, mut test) = (Vec::with_capacity(n_train), Vec::with_capacity(n_test));
    for (i, rows) in members.iter().enumerate() {
        let perm: Vec<usize> = rng
            .permutation(rows.len())
            .into_iter()
            .map(|p| rows[p])
            .collect();
        let (a, b) = (train_per_class[i], train_per_class[i] + test_per_class[i]);
        train.extend_from_slice(&perm[..a]);
        test.extend_from_slice(&perm[a..b]);
    }
    // scikit-learn then permutes each list; the sets are final here.
    train.sort_unstable();
    test.sort_unstable();
    Ok((train, test))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `numpy.random.MT19937()._legacy_seeding(0)` then `random_raw()` x3, and
    /// `numpy.random.RandomState(0).permutation(10)` (numpy 2.x).
    #[test]
    fn legacy_random_state_matches_numpy() {
        let mut rng = LegacyRandomState::new(0);
        let first: Vec<u32> = (0..3).map(|_| rng.next_u32()).collect();
        assert_eq!(first, [2_357_136_044, 2_546_248_239, 3_071_714_933]);
        let mut rng = LegacyRandomState::new(0);
        assert_eq!(rng.permutation(10), [2, 8, 4, 9, 1, 6, 7, 3, 0, 5]);
    }

    /// Sorted test rows of scikit-learn 1.9.1
    /// `train_test_split(np.arange(23), test_size=f, stratify=y, random_state=s)` on a label
    /// vector whose class sizes (6, 5, 6, 6) leave tied remainders, so the random tie-break of
    /// `_approximate_mode` is exercised.
    #[test]
    fn matches_scikit_learn_train_test_split() {
        let y = [
            0, 3, 2, 1, 0, 3, 2, 1, 0, 3, 2, 1, 0, 3, 2, 1, 0, 3, 2, 1, 0, 3, 2,
        ];
        let cases: [(f64, u32, &[usize]); 3] = [
            (0.2, 0, &[0, 1, 2, 11, 20]),
            (0.3, 1, &[2, 7, 12, 17, 20, 21, 22]),
            (0.5, 42, &[5, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17, 18]),
        ];
        for (f, seed, expected) in cases {
            let (train, test) = sklearn_stratified_split(&y, f, seed).unwrap();
            assert_eq!(test, expected, "test_size {f}, random_state {seed}");
            assert_eq!(train.len() + test.len(), y.len());
            assert!(train.iter().all(|r| !test.contains(r)));
        }
    }

    #[test]
    fn refuses_classes_with_one_member() {
        let err = sklearn_stratified_split(&[0, 0, 0, 1], 0.5, 0).unwrap_err();
        assert!(err.to_string().contains("class 1 has 1 member"), "{err}");
    }
}

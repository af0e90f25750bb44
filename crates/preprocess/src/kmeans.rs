//! k-means (Lloyd) with greedy k-means++ initialisation and seeded restarts, as scikit-learn's
//! `KMeans(init="k-means++", n_init, max_iter=300, tol=1e-4)`. Shared by the PCA + k-means
//! baseline and by CICL's clustering head.

use rand::Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{Result, ensure};
use cellident_tensor::DenseMatrix;

/// Parameters of [`kmeans`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KMeansParams {
    pub k: usize,
    /// Independent k-means++ starts; the lowest inertia wins.
    pub n_init: usize,
    pub max_iter: usize,
    /// Convergence: centre shift (squared, summed) below `tol * mean per-feature variance`.
    pub tol: f64,
    pub seed: u64,
}

impl KMeansParams {
    /// `k` clusters with scikit-learn's defaults otherwise (10 restarts).
    pub fn new(k: usize, seed: u64) -> Self {
        KMeansParams {
            k,
            n_init: 10,
            max_iter: 300,
            tol: 1e-4,
            seed,
        }
    }
}

/// A fitted clustering.
#[derive(Debug, Clone, PartialEq)]
pub struct KMeansResult {
    pub labels: Vec<u32>,
    /// `[k, dim]` row-major.
    pub centroids: Vec<f32>,
    /// Sum of squared distances of points to their centre.
    pub inertia: f64,
    pub iterations: usize,
}

/// Squared Euclidean distance, accumulated in f64.
///
/// Thirty-two independent partial sums, added at the end: one running sum makes every addition
/// wait for the previous one (the compiler may not reorder float additions), and k-means spends
/// most of its time here (CICL clusters `[cells, 2000]` embeddings). The lanes vectorise (four
/// AVX-512 registers) and change the result only by rounding (the order of the additions).
#[inline(always)]
fn sq_dist(a: &[f32], b: &[f32]) -> f64 {
    const LANES: usize = 32;
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| {
            let d = f64::from(*x - *y);
            d * d
        })
        .sum();
    let mut acc = [0f64; LANES];
    for (xa, xb) in ca.zip(cb) {
        for l in 0..LANES {
            let d = f64::from(xa[l] - xb[l]);
            acc[l] += d * d;
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// Rows per parallel task of [`nearest`].
const NEAREST_CHUNK: usize = 64;

/// The nearest centre of every row of `x` and its squared distance (ties: the lower centre
/// index), `centres` `[k, dim]` row-major. Rows are shared among the threads in fixed chunks,
/// so the result does not depend on the thread count.
fn nearest(x: &DenseMatrix, centres: &[f32]) -> (Vec<u32>, Vec<f64>) {
    let n = x.n_rows;
    let (mut labels, mut dists) = (vec![0u32; n], vec![0f64; n]);
    if x.n_cols == 0 {
        return (labels, dists);
    }
    labels
        .par_chunks_mut(NEAREST_CHUNK)
        .zip(dists.par_chunks_mut(NEAREST_CHUNK))
        .enumerate()
        .for_each(|(chunk, (labels, dists))| {
            let first = chunk * NEAREST_CHUNK * x.n_cols;
            let last = first + labels.len() * x.n_cols;
            pulp::Arch::new().dispatch(Nearest {
                rows: &x.values[first..last],
                centres,
                dim: x.n_cols,
                labels,
                dists,
            })
        });
    (labels, dists)
}

/// [`nearest`] on one chunk of rows. A `pulp` kernel: its body is compiled once per
/// instruction set and the widest the machine has (AVX-512, AVX2) is chosen at run time, so
/// the 32 f64 lanes of [`sq_dist`] run in four AVX-512 registers instead of sixteen SSE2 ones.
/// The additions happen in the same order on every instruction set (Rust does not fuse or
/// reorder float operations), so the distances are the same bits everywhere.
struct Nearest<'a> {
    rows: &'a [f32],
    centres: &'a [f32],
    dim: usize,
    labels: &'a mut [u32],
    dists: &'a mut [f64],
}

impl pulp::WithSimd for Nearest<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let rows = self.rows.chunks_exact(self.dim);
        for ((row, label), dist) in rows.zip(self.labels.iter_mut()).zip(self.dists.iter_mut()) {
            let mut best = (f64::INFINITY, 0u32);
            for (c, centre) in self.centres.chunks_exact(self.dim).enumerate() {
                let d = sq_dist(row, centre);
                if d < best.0 {
                    best = (d, c as u32);
                }
            }
            (*dist, *label) = best;
        }
    }
}

/// Clusters the rows of `x` (`[n, dim]`).
pub fn kmeans(x: &DenseMatrix, p: &KMeansParams) -> Result<KMeansResult> {
    let n = x.n_rows;
    ensure(p.k >= 1 && p.k <= n, "k", || {
        format!(
            "must be between 1 and the number of points ({n}), got {}",
            p.k
        )
    })?;
    ensure(p.n_init >= 1, "n_init", || "must be at least 1".into())?;
    let tol = absolute_tol(x, p.tol);
    let mut best: Option<KMeansResult> = None;
    for run in 0..p.n_init {
        let mut rng = cellident_tensor::batch::rng_for(p.seed, 1000 + run as u64);
        let init = kmeans_plus_plus(x, p.k, &mut rng);
        let r = lloyd(x, init, p.k, p.max_iter, tol);
        if best.as_ref().is_none_or(|b| r.inertia < b.inertia) {
            best = Some(r);
        }
    }
    best.ok_or_else(|| crate::PreprocessError::Data("k-means produced no result".into()))
}

/// Lloyd iterations on the rows of `x` starting from the given centres (`[k, dim]` row-major):
/// the warm start that CICL's iterated clustering uses to follow its moving embedding.
/// `tol` and `max_iter` as in [`KMeansParams`].
pub fn kmeans_from(
    x: &DenseMatrix,
    centres: &[f32],
    max_iter: usize,
    tol: f64,
) -> Result<KMeansResult> {
    let dim = x.n_cols;
    ensure(
        dim > 0 && !centres.is_empty() && centres.len().is_multiple_of(dim),
        "centres",
        || format!("{} values are not k rows of {dim}", centres.len()),
    )?;
    let k = centres.len() / dim;
    ensure(k <= x.n_rows, "centres", || {
        format!("{k} centres for {} points", x.n_rows)
    })?;
    Ok(lloyd(
        x,
        centres.to_vec(),
        k,
        max_iter.max(1),
        absolute_tol(x, tol),
    ))
}

/// scikit-learn's tolerance: `tol` times the mean per-feature variance of `x`.
fn absolute_tol(x: &DenseMatrix, tol: f64) -> f64 {
    let (n, dim) = (x.n_rows, x.n_cols);
    let mut mean = vec![0f64; dim];
    for row in x.values.chunks_exact(dim) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += v as f64 / n as f64;
        }
    }
    let mut var_sum = 0f64;
    for row in x.values.chunks_exact(dim) {
        for (m, &v) in mean.iter().zip(row) {
            var_sum += (v as f64 - m).powi(2);
        }
    }
    tol * var_sum / (n as f64 * dim as f64)
}

/// Greedy k-means++ (Arthur & Vassilvitskii 2007) with `2 + ln k` local trials per centre.
fn kmeans_plus_plus(x: &DenseMatrix, k: usize, rng: &mut impl Rng) -> Vec<f32> {
    let (n, dim) = (x.n_rows, x.n_cols);
    let trials = 2 + (k as f64).ln() as usize;
    let mut centres = Vec::with_capacity(k * dim);
    let first = rng.random_range(0..n);
    centres.extend_from_slice(x.row(first));
    let mut closest = nearest(x, x.row(first)).1;
    let mut pot: f64 = closest.iter().sum();
    for _ in 1..k {
        let mut best_cand = 0;
        let mut best_pot = f64::INFINITY;
        let mut best_closest = Vec::new();
        for _ in 0..trials {
            // Sample proportionally to the current squared distance.
            let target = rng.random::<f64>() * pot;
            let mut acc = 0.0;
            let mut cand = n - 1;
            for (i, &d) in closest.iter().enumerate() {
                acc += d;
                if acc > target {
                    cand = i;
                    break;
                }
            }
            let mut new_closest = nearest(x, x.row(cand)).1;
            for (new, &old) in new_closest.iter_mut().zip(&closest) {
                *new = old.min(*new);
            }
            let new_pot: f64 = new_closest.iter().sum();
            if new_pot < best_pot {
                best_pot = new_pot;
                best_cand = cand;
                best_closest = new_closest;
            }
        }
        centres.extend_from_slice(x.row(best_cand));
        closest = best_closest;
        pot = best_pot;
    }
    centres
}

fn lloyd(
    x: &DenseMatrix,
    mut centres: Vec<f32>,
    k: usize,
    max_iter: usize,
    tol: f64,
) -> KMeansResult {
    let (n, dim) = (x.n_rows, x.n_cols);
    let mut iterations = 0;
    for it in 0..max_iter {
        iterations = it + 1;
        let (labels, dists) = nearest(x, &centres[..k * dim]);
        let mut sums = vec![0f64; k * dim];
        let mut counts = vec![0usize; k];
        for (i, &l) in labels.iter().enumerate() {
            counts[l as usize] += 1;
            for (s, &v) in sums[l as usize * dim..(l as usize + 1) * dim]
                .iter_mut()
                .zip(x.row(i))
            {
                *s += v as f64;
            }
        }
        let mut shift = 0f64;
        let mut new = centres.clone();
        for c in 0..k {
            if counts[c] == 0 {
                // Empty cluster: move it to the point farthest from its centre.
                let far = (0..n)
                    .max_by(|&a, &b| dists[a].total_cmp(&dists[b]))
                    .unwrap_or(0);
                new[c * dim..(c + 1) * dim].copy_from_slice(x.row(far));
            } else {
                for j in 0..dim {
                    new[c * dim + j] = (sums[c * dim + j] / counts[c] as f64) as f32;
                }
            }
            shift += sq_dist(
                &centres[c * dim..(c + 1) * dim],
                &new[c * dim..(c + 1) * dim],
            );
        }
        centres = new;
        if shift <= tol {
            break;
        }
    }
    let (labels, dists) = nearest(x, &centres[..k * dim]);
    let inertia = dists.iter().sum();
    KMeansResult {
        labels,
        centroids: centres,
        inertia,
        iterations,
    }
}

/// Parameters of [`minibatch_kmeans`] (scikit-learn's `MiniBatchKMeans` defaults where it has
/// one).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MiniBatchKMeansParams {
    pub k: usize,
    /// Points per update step (scikit-learn: 1,024).
    pub batch_size: usize,
    /// Passes over the data at most (scikit-learn's `max_iter`, 100); early stopping usually
    /// ends far sooner.
    pub max_epochs: usize,
    /// Stop after this many steps without a new minimum of the smoothed batch inertia
    /// (scikit-learn's `max_no_improvement`, 10).
    pub max_no_improvement: usize,
    /// k-means++ starts, each on its own random sample of `3 * batch_size` points; the lowest
    /// inertia on that sample wins (scikit-learn: 3).
    pub n_init: usize,
    pub seed: u64,
}

impl MiniBatchKMeansParams {
    /// `k` clusters, scikit-learn's defaults otherwise.
    pub fn new(k: usize, seed: u64) -> Self {
        MiniBatchKMeansParams {
            k,
            batch_size: 1024,
            max_epochs: 100,
            max_no_improvement: 10,
            n_init: 3,
            seed,
        }
    }
}

/// Mini-batch k-means (Sculley 2010, as scikit-learn's `MiniBatchKMeans` without the
/// reassignment of near-empty centres): each step assigns a random batch to its nearest centres
/// and moves every centre to the running mean of all points it has received. Memory and time per
/// step are those of one batch, which is what clustering a million cells needs; the final labels
/// come from one full assignment pass. Rows of `x` are `[n, dim]`.
pub fn minibatch_kmeans(x: &DenseMatrix, p: &MiniBatchKMeansParams) -> Result<KMeansResult> {
    let (n, dim) = (x.n_rows, x.n_cols);
    ensure(p.k >= 1 && p.k <= n, "k", || {
        format!(
            "must be between 1 and the number of points ({n}), got {}",
            p.k
        )
    })?;
    ensure(p.batch_size >= 1, "batch_size", || {
        "must be at least 1".into()
    })?;
    ensure(p.n_init >= 1 && p.max_epochs >= 1, "n_init", || {
        "n_init and max_epochs must be at least 1".into()
    })?;
    let batch = p.batch_size.min(n);
    // Initial centres: the best of n_init k-means++ runs, each on a random sample.
    let init_size = (3 * batch).max(p.k).min(n);
    let mut centres: Option<(f64, Vec<f32>)> = None;
    for run in 0..p.n_init {
        let mut rng = cellident_tensor::batch::rng_for(p.seed, 2000 + run as u64);
        let sample = sample_rows(x, init_size, &mut rng);
        let init = kmeans_plus_plus(&sample, p.k, &mut rng);
        let inertia: f64 = assign(&sample, &init, p.k)
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                sq_dist(
                    sample.row(i),
                    &init[c as usize * dim..(c as usize + 1) * dim],
                )
            })
            .sum();
        if centres.as_ref().is_none_or(|(best, _)| inertia < *best) {
            centres = Some((inertia, init));
        }
    }
    let mut centres = centres.map(|(_, c)| c).unwrap_or_default();
    let mut counts = vec![0f64; p.k];
    let mut rng = cellident_tensor::batch::rng_for(p.seed, 3000);
    let steps = p.max_epochs.saturating_mul(n.div_ceil(batch));
    let (mut ewa, mut best, mut since_best) = (f64::NAN, f64::INFINITY, 0usize);
    let mut iterations = 0;
    for step in 0..steps {
        iterations = step + 1;
        let rows: Vec<usize> = (0..batch).map(|_| rng.random_range(0..n)).collect();
        let mut sums = vec![0f64; p.k * dim];
        let mut got = vec![0usize; p.k];
        let mut batch_inertia = 0f64;
        for &r in &rows {
            let row = x.row(r);
            let mut near = (f64::INFINITY, 0usize);
            for c in 0..p.k {
                let d = sq_dist(row, &centres[c * dim..(c + 1) * dim]);
                if d < near.0 {
                    near = (d, c);
                }
            }
            batch_inertia += near.0;
            got[near.1] += 1;
            for (s, &v) in sums[near.1 * dim..(near.1 + 1) * dim].iter_mut().zip(row) {
                *s += v as f64;
            }
        }
        for c in 0..p.k {
            if got[c] == 0 {
                continue;
            }
            let total = counts[c] + got[c] as f64;
            for j in 0..dim {
                let old = centres[c * dim + j] as f64;
                centres[c * dim + j] = ((old * counts[c] + sums[c * dim + j]) / total) as f32;
            }
            counts[c] = total;
        }
        // scikit-learn's stopping rule: an exponentially weighted average of the per-point batch
        // inertia (alpha = 2 batch / (n + 1)) that has not reached a new minimum for a while.
        let per_point = batch_inertia / batch as f64;
        let alpha = (2.0 * batch as f64 / (n as f64 + 1.0)).min(1.0);
        ewa = if ewa.is_nan() {
            per_point
        } else {
            ewa * (1.0 - alpha) + per_point * alpha
        };
        if ewa < best {
            (best, since_best) = (ewa, 0);
        } else {
            since_best += 1;
            if since_best >= p.max_no_improvement {
                break;
            }
        }
    }
    let labels = assign(x, &centres, p.k);
    let inertia = (0..n)
        .into_par_iter()
        .map(|i| {
            let c = labels[i] as usize;
            sq_dist(x.row(i), &centres[c * dim..(c + 1) * dim])
        })
        .sum();
    Ok(KMeansResult {
        labels,
        centroids: centres,
        inertia,
        iterations,
    })
}

/// `m` rows of `x` drawn without replacement.
fn sample_rows(x: &DenseMatrix, m: usize, rng: &mut impl Rng) -> DenseMatrix {
    x.select_rows(&rand::seq::index::sample(rng, x.n_rows, m).into_vec())
}

/// Index of the nearest centre of every point.
pub fn assign(x: &DenseMatrix, centres: &[f32], k: usize) -> Vec<u32> {
    nearest(x, &centres[..k * x.n_cols]).0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separates_three_blobs_and_is_reproducible() {
        let mut v = Vec::new();
        for i in 0..90 {
            let (cx, cy) = [(0.0, 0.0), (10.0, 0.0), (0.0, 10.0)][i / 30];
            let jitter = ((i * 7919) % 13) as f32 / 13.0;
            v.extend_from_slice(&[cx + jitter, cy - jitter]);
        }
        let x = DenseMatrix::new(90, 2, v).unwrap();
        let r = kmeans(&x, &KMeansParams::new(3, 0)).unwrap();
        for b in 0..3 {
            let l = r.labels[b * 30];
            assert!(r.labels[b * 30..(b + 1) * 30].iter().all(|&x| x == l));
        }
        assert_eq!(r, kmeans(&x, &KMeansParams::new(3, 0)).unwrap());
    }

    /// Deterministic values in [-2, 2) (a multiplicative hash), so the test needs no RNG.
    fn values(n: usize, salt: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 2_654_435_761 + salt * 40_503) % 4096) as f32 / 1024.0 - 2.0)
            .collect()
    }

    #[test]
    fn lane_split_distance_matches_one_running_sum() {
        // 2,000 = 62 full 32-lane chunks + a 16-value tail; 7 has only a tail.
        for dim in [7, 32, 2000] {
            let (a, b) = (values(dim, 1), values(dim, 2));
            let naive: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| f64::from(x - y).powi(2))
                .sum();
            let d = sq_dist(&a, &b);
            assert!(
                (d - naive).abs() <= 1e-12 * naive,
                "dim {dim}: {d} vs {naive}"
            );
        }
    }

    #[test]
    fn nearest_is_the_brute_force_argmin_over_several_chunks() {
        // 150 rows = three parallel chunks of 64 (the last one short); 5 centres of 40 features.
        let (n, dim, k) = (150, 40, 5);
        let x = DenseMatrix::new(n, dim, values(n * dim, 3)).unwrap();
        let centres = values(k * dim, 4);
        let (labels, dists) = nearest(&x, &centres);
        for i in 0..n {
            let d: Vec<f64> = (0..k)
                .map(|c| sq_dist(x.row(i), &centres[c * dim..(c + 1) * dim]))
                .collect();
            let best = (0..k).min_by(|&a, &b| d[a].total_cmp(&d[b])).unwrap();
            assert_eq!((labels[i] as usize, dists[i]), (best, d[best]), "row {i}");
        }
    }
}

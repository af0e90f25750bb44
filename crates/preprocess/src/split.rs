//! Train/test splits, cross-validation folds and label encoding. Every split is seeded and
//! stratified where the name says so.

use std::collections::BTreeMap;

use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::{PreprocessError, Result, ensure};

/// One cross-validation fold: `(train, test)` row indices.
pub type Fold = (Vec<usize>, Vec<usize>);

/// One leave-one-group-out fold: `(held-out group, train, test)`.
pub type GroupFold = (u32, Vec<usize>, Vec<usize>);

/// Maps text labels to class indices `0..k` in sorted order of the label text (the stable
/// class order of scikit-learn's `LabelEncoder`). Missing labels are not classes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelEncoder {
    pub classes: Vec<String>,
}

impl LabelEncoder {
    /// Learns the classes present in `labels`.
    pub fn fit(labels: &[Option<String>]) -> Result<Self> {
        let mut classes: Vec<String> = labels.iter().flatten().cloned().collect();
        classes.sort();
        classes.dedup();
        if classes.is_empty() {
            return Err(PreprocessError::Data(
                "the label column has no values".into(),
            ));
        }
        Ok(LabelEncoder { classes })
    }

    /// Class index of each label; `None` for missing or unknown labels.
    pub fn transform(&self, labels: &[Option<String>]) -> Vec<Option<u32>> {
        labels
            .iter()
            .map(|l| {
                l.as_ref()
                    .and_then(|s| self.classes.binary_search(s).ok().map(|i| i as u32))
            })
            .collect()
    }

    /// The rows whose label is one of the classes, and their class indices (in row order):
    /// what a supervised model trains on when some cells are unlabelled.
    pub fn labelled_rows(&self, labels: &[Option<String>]) -> (Vec<usize>, Vec<u32>) {
        self.transform(labels)
            .into_iter()
            .enumerate()
            .filter_map(|(i, c)| c.map(|c| (i, c)))
            .unzip()
    }

    /// The label text of class `i`.
    pub fn name(&self, i: u32) -> &str {
        &self.classes[i as usize]
    }
}

/// Rows of each class, classes ascending and rows ascending within a class.
pub(crate) fn by_class(labels: &[u32]) -> BTreeMap<u32, Vec<usize>> {
    let mut m: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, &l) in labels.iter().enumerate() {
        m.entry(l).or_default().push(i);
    }
    m
}

/// The test fraction of a train/test split must lie strictly between 0 and 1.
pub(crate) fn ensure_test_fraction(test_fraction: f64) -> Result<()> {
    ensure(
        test_fraction > 0.0 && test_fraction < 1.0,
        "test_fraction",
        || format!("must be in (0, 1), got {test_fraction}"),
    )
}

/// Stratified train/test split: in each class, `round(n_class * test_fraction)` samples go to
/// the test set (at least one when the class has two or more), chosen by a seeded shuffle.
/// Returns `(train, test)` indices, each sorted.
pub fn stratified_split(
    labels: &[u32],
    test_fraction: f64,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>)> {
    ensure_test_fraction(test_fraction)?;
    let mut rng = cellident_tensor::batch::rng_for(seed, 0x5_1717);
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (_, mut members) in by_class(labels) {
        members.shuffle(&mut rng);
        let mut k = (members.len() as f64 * test_fraction).round() as usize;
        if members.len() >= 2 {
            k = k.clamp(1, members.len() - 1);
        } else {
            k = 0;
        }
        test.extend_from_slice(&members[..k]);
        train.extend_from_slice(&members[k..]);
    }
    train.sort_unstable();
    test.sort_unstable();
    Ok((train, test))
}

/// Stratified k-fold: each class is shuffled (seeded) and dealt round-robin to the folds, so
/// fold sizes per class differ by at most one. Returns `k` `(train, test)` pairs.
pub fn stratified_kfold(labels: &[u32], k: usize, seed: u64) -> Result<Vec<Fold>> {
    ensure(k >= 2, "k", || format!("needs at least 2 folds, got {k}"))?;
    ensure(labels.len() >= k, "k", || {
        format!("{k} folds for {} samples", labels.len())
    })?;
    let mut rng = cellident_tensor::batch::rng_for(seed, 0xF01D);
    let mut fold_of = vec![0usize; labels.len()];
    let mut offset = 0usize;
    for (_, mut members) in by_class(labels) {
        members.shuffle(&mut rng);
        for (i, &m) in members.iter().enumerate() {
            fold_of[m] = (offset + i) % k;
        }
        // Continue dealing where the previous class stopped, so folds stay balanced in size.
        offset = (offset + members.len()) % k;
    }
    Ok(folds_from_assignment(&fold_of, k))
}

fn folds_from_assignment(fold_of: &[usize], k: usize) -> Vec<Fold> {
    (0..k)
        .map(|f| {
            let test: Vec<usize> = (0..fold_of.len()).filter(|&i| fold_of[i] == f).collect();
            let train: Vec<usize> = (0..fold_of.len()).filter(|&i| fold_of[i] != f).collect();
            (train, test)
        })
        .collect()
}

/// Group k-fold: whole groups go to one fold (groups assigned largest first to the currently
/// smallest fold, as scikit-learn's `GroupKFold`). Needs at least `k` groups.
pub fn group_kfold(groups: &[u32], k: usize) -> Result<Vec<Fold>> {
    ensure(k >= 2, "k", || format!("needs at least 2 folds, got {k}"))?;
    let members = by_class(groups);
    if members.len() < k {
        return Err(PreprocessError::Data(format!(
            "{} groups cannot fill {k} folds",
            members.len()
        )));
    }
    let mut sizes: Vec<(u32, usize)> = members.iter().map(|(g, m)| (*g, m.len())).collect();
    sizes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut fold_size = vec![0usize; k];
    let mut fold_of_group = BTreeMap::new();
    for (g, n) in sizes {
        let f = (0..k).min_by_key(|&f| (fold_size[f], f)).unwrap_or(0);
        fold_size[f] += n;
        fold_of_group.insert(g, f);
    }
    let fold_of: Vec<usize> = groups.iter().map(|g| fold_of_group[g]).collect();
    Ok(folds_from_assignment(&fold_of, k))
}

/// Leave-one-group-out: one fold per group (in group order), that group as the test set —
/// the "completely new data set" evaluation.
pub fn leave_one_group_out(groups: &[u32]) -> Result<Vec<GroupFold>> {
    let members = by_class(groups);
    if members.len() < 2 {
        return Err(PreprocessError::Data(
            "leave-one-group-out needs at least 2 groups".into(),
        ));
    }
    Ok(members
        .keys()
        .map(|&g| {
            let test: Vec<usize> = (0..groups.len()).filter(|&i| groups[i] == g).collect();
            let train: Vec<usize> = (0..groups.len()).filter(|&i| groups[i] != g).collect();
            (g, train, test)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labelled_rows_skip_missing_and_unknown_labels() {
        let some = |s: &str| Some(s.to_string());
        let enc = LabelEncoder::fit(&[some("T"), None, some("B")]).unwrap();
        let query = [some("B"), None, some("NK"), some("T")];
        assert_eq!(enc.labelled_rows(&query), (vec![0, 3], vec![0, 1]));
    }

    #[test]
    fn stratified_split_keeps_class_proportions() {
        let labels: Vec<u32> = (0..100).map(|i| if i < 80 { 0 } else { 1 }).collect();
        let (train, test) = stratified_split(&labels, 0.2, 0).unwrap();
        assert_eq!(test.len(), 20);
        assert_eq!(test.iter().filter(|&&i| labels[i] == 1).count(), 4);
        assert_eq!(train.len() + test.len(), 100);
        assert_eq!(stratified_split(&labels, 0.2, 0).unwrap(), (train, test));
    }

    #[test]
    fn kfold_partitions_every_sample_once() {
        let labels: Vec<u32> = (0..23).map(|i| (i % 3) as u32).collect();
        let folds = stratified_kfold(&labels, 5, 1).unwrap();
        let mut seen = [0; 23];
        for (train, test) in &folds {
            assert_eq!(train.len() + test.len(), 23);
            for &t in test {
                seen[t] += 1;
            }
        }
        assert!(seen.iter().all(|&s| s == 1));
        let sizes: Vec<usize> = folds.iter().map(|f| f.1.len()).collect();
        assert!(
            sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1,
            "{sizes:?}"
        );
    }

    #[test]
    fn groups_never_straddle_folds() {
        let groups = [0, 0, 0, 1, 1, 2, 2, 2, 2, 3];
        for (train, test) in group_kfold(&groups, 2).unwrap() {
            for &t in &test {
                assert!(train.iter().all(|&r| groups[r] != groups[t]));
            }
        }
        let logo = leave_one_group_out(&groups).unwrap();
        assert_eq!(logo.len(), 4);
        assert_eq!(logo[2].2, vec![5, 6, 7, 8]);
    }

    #[test]
    fn label_encoder_sorts_classes() {
        let l = vec![
            Some("T".to_string()),
            None,
            Some("B".into()),
            Some("T".into()),
        ];
        let e = LabelEncoder::fit(&l).unwrap();
        assert_eq!(e.classes, vec!["B", "T"]);
        assert_eq!(e.transform(&l), vec![Some(1), None, Some(0), Some(1)]);
    }
}

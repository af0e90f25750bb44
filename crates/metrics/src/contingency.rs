//! The contingency table of two labelings: the shared O(n) pass behind every label metric.

use std::collections::HashMap;

use crate::{MetricError, Result};

/// Counts of (true class, predicted label) pairs. Classes and labels are re-indexed to
/// `0..k` in increasing order of their original value (as `np.unique` does).
#[derive(Debug, Clone, PartialEq)]
pub struct Contingency {
    /// Sorted distinct true labels.
    pub classes: Vec<u32>,
    /// Sorted distinct predicted labels.
    pub clusters: Vec<u32>,
    /// `[classes.len(), clusters.len()]`, row-major.
    pub counts: Vec<u64>,
    /// Number of samples.
    pub n: u64,
}

/// Maps arbitrary `u32` labels to dense indices `0..k` in increasing label order.
fn compact(labels: &[u32]) -> (Vec<u32>, Vec<u32>) {
    let max = labels.iter().copied().max().unwrap_or(0) as usize;
    // Dense labels (the usual case): a direct lookup table; otherwise a hash map.
    if max <= 4 * labels.len().max(1024) {
        let mut present = vec![false; max + 1];
        for &l in labels {
            present[l as usize] = true;
        }
        let mut index = vec![u32::MAX; max + 1];
        let mut values = Vec::new();
        for (v, &p) in present.iter().enumerate() {
            if p {
                index[v] = values.len() as u32;
                values.push(v as u32);
            }
        }
        (values, labels.iter().map(|&l| index[l as usize]).collect())
    } else {
        let mut values: Vec<u32> = labels.to_vec();
        values.sort_unstable();
        values.dedup();
        let index: HashMap<u32, u32> = values
            .iter()
            .enumerate()
            .map(|(i, &v)| (v, i as u32))
            .collect();
        (values, labels.iter().map(|l| index[l]).collect())
    }
}

pub(crate) fn check_pair(truth: &[u32], pred: &[u32]) -> Result<()> {
    if truth.len() != pred.len() {
        return Err(MetricError::LengthMismatch {
            truth: truth.len(),
            pred: pred.len(),
        });
    }
    if truth.is_empty() {
        return Err(MetricError::Empty);
    }
    Ok(())
}

impl Contingency {
    /// Builds the table; errors on empty input or a length mismatch.
    pub fn new(truth: &[u32], pred: &[u32]) -> Result<Self> {
        check_pair(truth, pred)?;
        let (classes, t) = compact(truth);
        let (clusters, p) = compact(pred);
        let k = clusters.len();
        let mut counts = vec![0u64; classes.len() * k];
        for (&a, &b) in t.iter().zip(&p) {
            counts[a as usize * k + b as usize] += 1;
        }
        Ok(Contingency {
            classes,
            clusters,
            counts,
            n: truth.len() as u64,
        })
    }

    /// Row sums (samples per true class).
    pub fn class_sizes(&self) -> Vec<u64> {
        self.counts
            .chunks(self.clusters.len())
            .map(|r| r.iter().sum())
            .collect()
    }

    /// Column sums (samples per predicted label).
    pub fn cluster_sizes(&self) -> Vec<u64> {
        let k = self.clusters.len();
        let mut s = vec![0u64; k];
        for (i, &c) in self.counts.iter().enumerate() {
            s[i % k] += c;
        }
        s
    }

    /// The count of (class `i`, cluster `j`).
    pub fn get(&self, i: usize, j: usize) -> u64 {
        self.counts[i * self.clusters.len() + j]
    }
}

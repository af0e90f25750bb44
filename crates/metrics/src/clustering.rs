//! Clustering scores. Formulas and special cases follow scikit-learn 1.x
//! (`sklearn/metrics/cluster/_supervised.py`, `_unsupervised.py`).

use crate::contingency::Contingency;
use crate::hungarian::max_weight_assignment;
use crate::{MetricError, Result};

impl Contingency {
    /// Adjusted Rand index (Hubert & Arabie), via the pair confusion matrix as scikit-learn
    /// computes it; exact integer arithmetic (i128) up to the final division.
    pub fn adjusted_rand_index(&self) -> f64 {
        let n = self.n as i128;
        let sum_squares: i128 = self.counts.iter().map(|&c| (c as i128) * (c as i128)).sum();
        let a = self.class_sizes();
        let b = self.cluster_sizes();
        // contingency.dot(n_k).sum() = sum_ij n_ij * b_j ; contingency.T.dot(n_c).sum() = sum_ij n_ij * a_i
        let k = self.clusters.len();
        let mut dot_b: i128 = 0;
        let mut dot_a: i128 = 0;
        for (idx, &c) in self.counts.iter().enumerate() {
            if c > 0 {
                dot_b += c as i128 * b[idx % k] as i128;
                dot_a += c as i128 * a[idx / k] as i128;
            }
        }
        let tp = sum_squares - n;
        let fp = dot_b - sum_squares;
        let fn_ = dot_a - sum_squares;
        let tn = n * n - fp - fn_ - sum_squares;
        if fn_ == 0 && fp == 0 {
            return 1.0;
        }
        let num = 2 * (tp * tn - fn_ * fp);
        let den = (tp + fn_) * (fn_ + tn) + (tp + fp) * (fp + tn);
        num as f64 / den as f64
    }

    /// Mutual information in nats (`mutual_info_score`).
    pub fn mutual_information(&self) -> f64 {
        let a = self.class_sizes();
        let b = self.cluster_sizes();
        if a.len() == 1 || b.len() == 1 {
            return 0.0;
        }
        let k = self.clusters.len();
        let n = self.n as f64;
        let (log_n, log_sum_a, log_sum_b) = (n.ln(), n.ln(), n.ln());
        let mut mi = 0.0f64;
        for (idx, &c) in self.counts.iter().enumerate() {
            if c == 0 {
                continue;
            }
            let nij = c as f64;
            let p = nij / n;
            let outer = (a[idx / k] as f64) * (b[idx % k] as f64);
            let log_outer = -outer.ln() + log_sum_a + log_sum_b;
            let term = p * (nij.ln() - log_n) + p * log_outer;
            if term.abs() >= f64::EPSILON {
                mi += term;
            }
        }
        mi.max(0.0)
    }

    fn entropies(&self) -> (f64, f64) {
        (
            entropy(&self.class_sizes(), self.n),
            entropy(&self.cluster_sizes(), self.n),
        )
    }

    /// Normalized mutual information with the arithmetic mean of the entropies
    /// (scikit-learn's default `average_method="arithmetic"`).
    pub fn normalized_mutual_information(&self) -> f64 {
        let (r, c) = (self.classes.len(), self.clusters.len());
        if r == c && (r == 1 || r == 0) {
            return 1.0;
        }
        let mi = self.mutual_information();
        if is_close_to_zero(mi) {
            return 0.0;
        }
        let (ht, hp) = self.entropies();
        mi / ((ht + hp) / 2.0)
    }

    /// Expected mutual information under the permutation model (Vinh et al. 2010), as
    /// scikit-learn's `expected_mutual_information`.
    pub fn expected_mutual_information(&self) -> f64 {
        let a = self.class_sizes();
        let b = self.cluster_sizes();
        if a.len() == 1 || b.len() == 1 {
            return 0.0;
        }
        let n = self.n as f64;
        let lg = |x: f64| libm::lgamma(x);
        let gln_n1 = lg(n + 1.0);
        let log_n = n.ln();
        let mut emi = 0.0f64;
        for &ai in &a {
            let ai_f = ai as f64;
            let (log_a, gln_a, gln_na) = (ai_f.ln(), lg(ai_f + 1.0), lg(n - ai_f + 1.0));
            for &bj in &b {
                let bj_f = bj as f64;
                let (log_b, gln_b, gln_nb) = (bj_f.ln(), lg(bj_f + 1.0), lg(n - bj_f + 1.0));
                let start = 1i64.max(ai as i64 - self.n as i64 + bj as i64);
                let end = ai.min(bj) as i64;
                for nij in start..=end {
                    let nij_f = nij as f64;
                    let term1 = nij_f / n;
                    let term2 = log_n + nij_f.ln() - log_a - log_b;
                    let gln = gln_a + gln_b + gln_na + gln_nb
                        - (lg(nij_f + 1.0) + gln_n1)
                        - lg(ai_f - nij_f + 1.0)
                        - lg(bj_f - nij_f + 1.0)
                        - lg(n - ai_f - bj_f + nij_f + 1.0);
                    emi += term1 * term2 * gln.exp();
                }
            }
        }
        emi
    }

    /// Adjusted mutual information (arithmetic normalisation), as scikit-learn.
    pub fn adjusted_mutual_information(&self) -> f64 {
        let (r, c) = (self.classes.len(), self.clusters.len());
        if r == c && (r == 1 || r == 0) {
            return 1.0;
        }
        let mi = self.mutual_information();
        let emi = self.expected_mutual_information();
        let (ht, hp) = self.entropies();
        let normalizer = (ht + hp) / 2.0;
        let mut denominator = normalizer - emi;
        if denominator < 0.0 {
            denominator = denominator.min(-f64::EPSILON);
        } else {
            denominator = denominator.max(f64::EPSILON);
        }
        (mi - emi) / denominator
    }

    /// Fraction of samples correctly labelled under the best one-to-one matching of predicted
    /// labels to true classes (Hungarian algorithm); unmatched labels count as wrong.
    pub fn matching_accuracy(&self) -> f64 {
        let (r, c) = (self.classes.len(), self.clusters.len());
        // Rows = predicted labels, columns = classes.
        let mut w = vec![0.0f64; c * r];
        for i in 0..r {
            for j in 0..c {
                w[j * r + i] = self.get(i, j) as f64;
            }
        }
        let assignment = max_weight_assignment(&w, c, r);
        let matched: f64 = assignment
            .iter()
            .enumerate()
            .filter_map(|(j, m)| m.map(|i| w[j * r + i]))
            .sum();
        matched / self.n as f64
    }
}

/// `np.isclose(x, 0)` with numpy's default tolerances (atol 1e-8).
fn is_close_to_zero(x: f64) -> bool {
    x.abs() <= 1e-8
}

/// Shannon entropy (nats) of a labeling given its class sizes (`sklearn...entropy`).
fn entropy(sizes: &[u64], n: u64) -> f64 {
    let nonzero: Vec<f64> = sizes
        .iter()
        .filter(|&&s| s > 0)
        .map(|&s| s as f64)
        .collect();
    if nonzero.len() <= 1 {
        return 0.0;
    }
    let total = n as f64;
    let log_total = total.ln();
    -nonzero
        .iter()
        .map(|&p| (p / total) * (p.ln() - log_total))
        .sum::<f64>()
}

/// Adjusted Rand index of two labelings (`sklearn.metrics.adjusted_rand_score`).
pub fn adjusted_rand_index(truth: &[u32], pred: &[u32]) -> Result<f64> {
    Ok(Contingency::new(truth, pred)?.adjusted_rand_index())
}

/// Normalized mutual information, arithmetic mean (`normalized_mutual_info_score`).
pub fn normalized_mutual_information(truth: &[u32], pred: &[u32]) -> Result<f64> {
    Ok(Contingency::new(truth, pred)?.normalized_mutual_information())
}

/// Adjusted mutual information, arithmetic mean (`adjusted_mutual_info_score`).
pub fn adjusted_mutual_information(truth: &[u32], pred: &[u32]) -> Result<f64> {
    Ok(Contingency::new(truth, pred)?.adjusted_mutual_information())
}

/// Clustering accuracy with Hungarian matching of clusters to classes.
pub fn clustering_accuracy(truth: &[u32], pred: &[u32]) -> Result<f64> {
    Ok(Contingency::new(truth, pred)?.matching_accuracy())
}

/// Mean silhouette coefficient with Euclidean distances (`sklearn.metrics.silhouette_score`).
/// `points` is row-major `[n, dim]`. O(n^2 dim) time, O(n + k) memory.
pub fn silhouette_score(points: &[f64], dim: usize, labels: &[u32]) -> Result<f64> {
    let n = labels.len();
    if n == 0 {
        return Err(MetricError::Empty);
    }
    if dim == 0 || points.len() != n * dim {
        return Err(MetricError::Invalid(format!(
            "{} coordinates for {n} points of dimension {dim}",
            points.len()
        )));
    }
    let c = Contingency::new(labels, labels)?;
    let k = c.classes.len();
    if k < 2 || k > n - 1 {
        return Err(MetricError::Invalid(format!(
            "number of labels is {k}; valid values are 2 to n_samples - 1 (inclusive)"
        )));
    }
    let index: std::collections::HashMap<u32, usize> =
        c.classes.iter().enumerate().map(|(i, &l)| (l, i)).collect();
    let lab: Vec<usize> = labels.iter().map(|l| index[l]).collect();
    let sizes = c.class_sizes();
    let mut total = 0.0f64;
    let mut sums = vec![0.0f64; k];
    for i in 0..n {
        sums.fill(0.0);
        let xi = &points[i * dim..(i + 1) * dim];
        for j in 0..n {
            if i == j {
                continue;
            }
            let xj = &points[j * dim..(j + 1) * dim];
            let d2: f64 = xi.iter().zip(xj).map(|(a, b)| (a - b) * (a - b)).sum();
            sums[lab[j]] += d2.sqrt();
        }
        let own = lab[i];
        if sizes[own] <= 1 {
            continue; // singleton clusters score 0
        }
        let a = sums[own] / (sizes[own] - 1) as f64;
        let b = (0..k)
            .filter(|&l| l != own)
            .map(|l| sums[l] / sizes[l] as f64)
            .fold(f64::INFINITY, f64::min);
        let s = (b - a) / a.max(b);
        if s.is_finite() {
            total += s;
        }
    }
    Ok(total / n as f64)
}

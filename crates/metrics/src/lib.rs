//! cellident-metrics owns the scores every method is judged by: classification (accuracy,
//! balanced accuracy, macro/weighted F1, per-class precision/recall/F1, confusion matrix) and
//! clustering (adjusted Rand index, normalized and adjusted mutual information, Hungarian
//! clustering accuracy, silhouette) and profile similarity (Pearson, Spearman). Each equals
//! scikit-learn 1.x / scipy to 1e-9 (the tests record the call behind every expected number).
//!
//! Labels are `u32` slices (class or cluster indices, any values). Every label-based score is
//! computed from one [`Contingency`] table in O(n + k_true * k_pred). This crate depends on no
//! other cellident crate and does no I/O.

mod classification;
mod clustering;
mod contingency;
mod correlation;
mod hungarian;

pub use classification::{
    ClassReport, accuracy, balanced_accuracy, classification_report, confusion_matrix, f1_macro,
    f1_weighted,
};
pub use clustering::{
    adjusted_mutual_information, adjusted_rand_index, clustering_accuracy,
    normalized_mutual_information, silhouette_score,
};
pub use contingency::Contingency;
pub use correlation::{average_ranks, pearson_correlation, spearman_correlation};
pub use hungarian::max_weight_assignment;

/// Errors of the metric functions.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricError {
    #[error("no labels: metrics need at least one sample")]
    Empty,
    #[error("label vectors differ in length: {truth} true labels, {pred} predicted")]
    LengthMismatch { truth: usize, pred: usize },
    #[error("{0}")]
    Invalid(String),
}

/// Result alias of cellident-metrics.
pub type Result<T, E = MetricError> = std::result::Result<T, E>;

/// Every score of a clustering against true labels.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ClusteringScores {
    pub ari: f64,
    pub nmi: f64,
    pub ami: f64,
    /// Clustering accuracy under the best one-to-one matching of clusters to classes.
    pub acc: f64,
}

/// ARI, NMI, AMI and Hungarian accuracy from one contingency table.
pub fn clustering_scores(truth: &[u32], pred: &[u32]) -> Result<ClusteringScores> {
    let c = Contingency::new(truth, pred)?;
    Ok(ClusteringScores {
        ari: c.adjusted_rand_index(),
        nmi: c.normalized_mutual_information(),
        ami: c.adjusted_mutual_information(),
        acc: c.matching_accuracy(),
    })
}

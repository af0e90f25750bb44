//! cellident-preprocess owns every transformation between an imported dataset and a model's
//! input, each matching scanpy 1.11 (the tests record the scanpy calls):
//!
//! - QC filters ([`qc`]): min/max genes per cell, min cells per gene, max mitochondrial fraction;
//! - [`normalize_total`], [`log1p`] (refusing to log twice), value-type detection;
//! - highly variable genes ([`hvg`]): `seurat` (binned dispersion z-scores) and `seurat_v3`
//!   (LOESS-stabilised variance on counts);
//! - [`scale::Scaler`] (zero mean, unit variance, clip) and seeded randomized [`pca::Pca`], both
//!   keeping their fitted parameters for query data;
//! - the kNN graph with UMAP connectivities ([`neighbors`]) and Leiden communities on it
//!   ([`leiden`]), scanpy's `pp.neighbors` + `tl.leiden`;
//! - splits and label encoding ([`split`]; scikit-learn's stratified `train_test_split` in
//!   [`sklearn_split`]); supervised gene selection by the ANOVA F-statistic ([`select`]);
//! - a recorded [`pipeline::Pipeline`] that replays the same steps on new data (saved in model
//!   checkpoints);
//! - streaming ([`stream`]): the recipe fitted in passes over a Parquet dataset (the sparse
//!   steps in one; scaling and PCA one more each), replayed batch by batch, and a shuffle-buffer
//!   [`stream::ParquetBatchSource`] for training on more cells than fit in memory.
//!
//! It works on `cellident-io` data types; it reads files only through cellident-io's Parquet
//! reader (streaming) and never writes any.

pub mod hvg;
pub mod kmeans;
pub mod leiden;
mod loess;
pub mod markers;
pub mod neighbors;
mod normalize;
pub mod pca;
pub mod pipeline;
pub mod qc;
pub mod scale;
pub mod select;
pub mod sklearn_split;
pub mod split;
pub mod stream;

pub use hvg::{HvgFlavor, HvgParams, HvgResult, highly_variable_genes};
pub use kmeans::{
    KMeansParams, KMeansResult, MiniBatchKMeansParams, kmeans, kmeans_from, minibatch_kmeans,
};
pub use leiden::{LeidenParams, LeidenResult, leiden, modularity};
pub use neighbors::{NeighborsParams, WeightedGraph, neighbors};
pub use normalize::{log1p, looks_like_counts, looks_log_transformed, normalize_total};
pub use pca::{Pca, PcaParams};
pub use pipeline::{Pipeline, PipelineParams, Prepared, Step};
pub use scale::Scaler;
pub use select::{anova_f, anova_f_from_moments, top_by_f, top_genes_by_anova_f};
pub use sklearn_split::sklearn_stratified_split;
pub use split::{
    LabelEncoder, group_kfold, leave_one_group_out, stratified_kfold, stratified_split,
};

/// Errors of preprocessing.
#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    /// A parameter is out of range.
    #[error("invalid parameter `{name}`: {message}")]
    InvalidParam { name: &'static str, message: String },
    /// The data cannot go through this step (e.g. logging data that is already logged).
    #[error("{0}")]
    Data(String),
    #[error(transparent)]
    Io(#[from] cellident_io::IoError),
    #[error(transparent)]
    Tensor(#[from] cellident_tensor::TensorError),
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Result alias of cellident-preprocess.
pub type Result<T, E = PreprocessError> = std::result::Result<T, E>;

pub(crate) fn ensure(ok: bool, name: &'static str, message: impl FnOnce() -> String) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(PreprocessError::InvalidParam {
            name,
            message: message(),
        })
    }
}

/// Per-gene mean and unbiased variance (ddof 1) of a sparse `[cells, genes]` matrix, in f64,
/// counting the implicit zeros (scanpy's `_get_mean_var`).
pub fn gene_mean_var(m: &cellident_io::CsrMatrix) -> (Vec<f64>, Vec<f64>) {
    gene_mean_var_of(m, |v| v as f64)
}

/// [`gene_mean_var`] of `f` applied to every stored value (`f(0)` must be 0), without a
/// mapped copy of the matrix: at a million cells the copy's first touch cost more than the
/// statistics.
pub fn gene_mean_var_of(
    m: &cellident_io::CsrMatrix,
    f: impl Fn(f32) -> f64 + Sync,
) -> (Vec<f64>, Vec<f64>) {
    use rayon::prelude::*;
    let n = m.n_rows();
    let g = m.n_cols();
    // Rows in a few large shares (one per thread), each into its own per-gene sums; the shares
    // are added in a fixed order: the same thread count gives the same sums.
    let share = n.div_ceil(rayon::current_num_threads().max(1)).max(1);
    let shares: Vec<std::ops::Range<usize>> = (0..n)
        .step_by(share)
        .map(|s| s..(s + share).min(n))
        .collect();
    let per_share = |visit: &(dyn Fn(&mut [f64], usize, f64) + Sync)| -> Vec<f64> {
        let parts: Vec<Vec<f64>> = shares
            .par_iter()
            .map(|rows| {
                let mut acc = vec![0f64; g];
                let lo = m.indptr()[rows.start];
                let hi = m.indptr()[rows.end];
                for (&c, &v) in m.indices()[lo..hi].iter().zip(&m.data()[lo..hi]) {
                    visit(&mut acc, c as usize, f(v));
                }
                acc
            })
            .collect();
        let mut total = vec![0f64; g];
        for p in parts {
            total.iter_mut().zip(p).for_each(|(t, v)| *t += v);
        }
        total
    };
    let sum = per_share(&|acc, c, v| acc[c] += v);
    let mut nnz = vec![0usize; g];
    for &c in m.indices() {
        nnz[c as usize] += 1;
    }
    let nf = n.max(1) as f64;
    let mean: Vec<f64> = sum.iter().map(|s| s / nf).collect();
    let ss = per_share(&|acc, c, v| {
        let d = v - mean[c];
        acc[c] += d * d;
    });
    let var = (0..g)
        .map(|j| {
            let total = ss[j] + (n - nnz[j]) as f64 * mean[j] * mean[j];
            if n > 1 { total / (n - 1) as f64 } else { 0.0 }
        })
        .collect();
    (mean, var)
}

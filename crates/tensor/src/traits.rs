//! The shared vocabulary: every cellident model implements these traits, so that xtask, the
//! CLI and `explain` can train, apply and explain any of them the same way.

use candle_core::Tensor;
use cellident_io::CsrMatrix;

use crate::error::Result;
use crate::train::{NoProgress, Progress, TrainReport};

/// Validated configuration, in the style of linfa: a user-facing `*Params` value is checked
/// once and becomes a `*Config` that the model can trust.
pub trait CheckParams {
    /// The validated configuration.
    type Checked;
    /// Checks every field; the error names the parameter and the valid range.
    fn check(&self) -> Result<Self::Checked>;
}

/// A dense row-major matrix of `f32`, `[n_rows, n_cols]` (probabilities, embeddings).
#[derive(Debug, Clone, PartialEq)]
pub struct DenseMatrix {
    pub n_rows: usize,
    pub n_cols: usize,
    /// Row-major values, `n_rows * n_cols` of them.
    pub values: Vec<f32>,
}

impl DenseMatrix {
    /// Wraps values, checking the length.
    pub fn new(n_rows: usize, n_cols: usize, values: Vec<f32>) -> Result<Self> {
        crate::error::ensure_param(values.len() == n_rows * n_cols, "values", || {
            format!("{} values for a {n_rows} x {n_cols} matrix", values.len())
        })?;
        Ok(DenseMatrix {
            n_rows,
            n_cols,
            values,
        })
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.n_cols..(i + 1) * self.n_cols]
    }

    /// A new `[rows.len(), n_cols]` matrix holding the given rows, in the given order (rows may
    /// repeat), as `CsrMatrix::select_rows` for sparse data. Panics on a row index out of range.
    pub fn select_rows(&self, rows: &[usize]) -> DenseMatrix {
        let mut values = Vec::with_capacity(rows.len() * self.n_cols);
        for &r in rows {
            values.extend_from_slice(self.row(r));
        }
        DenseMatrix {
            n_rows: rows.len(),
            n_cols: self.n_cols,
            values,
        }
    }

    /// Index of the largest value of each row (ties: the first).
    pub fn argmax_rows(&self) -> Vec<u32> {
        (0..self.n_rows)
            .map(|i| {
                let r = self.row(i);
                let mut best = 0;
                for (j, &v) in r.iter().enumerate() {
                    if v > r[best] {
                        best = j;
                    }
                }
                best as u32
            })
            .collect()
    }

    /// The same values as a sparse `[n_rows, n_cols]` matrix (exact zeros dropped), the input
    /// type of every model and baseline: e.g. to classify codes or embeddings.
    pub fn to_csr(&self) -> Result<CsrMatrix> {
        Ok(CsrMatrix::from_dense(
            self.n_rows,
            self.n_cols,
            &self.values,
        )?)
    }

    /// Copies a 2-D tensor to the host.
    pub fn from_tensor(t: &Tensor) -> Result<Self> {
        let (n_rows, n_cols) = t.dims2()?;
        let values = t.flatten_all()?.to_vec1::<f32>()?;
        Ok(DenseMatrix {
            n_rows,
            n_cols,
            values,
        })
    }
}

/// A supervised cell-type classifier (N-ACT, ACTINN, the metadata MLP, the CIC classifier).
///
/// Inputs are preprocessed `[cells, genes]` matrices; labels are class indices `< n_classes`.
pub trait Classifier {
    /// Trains on `x` with labels `y`, reporting progress.
    fn fit(
        &mut self,
        x: &CsrMatrix,
        y: &[u32],
        n_classes: usize,
        progress: &mut dyn Progress,
    ) -> Result<TrainReport>;

    /// Class probabilities, `[cells, n_classes]`, rows summing to 1.
    fn predict_proba(&self, x: &CsrMatrix) -> Result<DenseMatrix>;

    /// The most probable class of each cell.
    fn predict(&self, x: &CsrMatrix) -> Result<Vec<u32>> {
        Ok(self.predict_proba(x)?.argmax_rows())
    }

    /// Trains without progress reporting.
    fn fit_quiet(&mut self, x: &CsrMatrix, y: &[u32], n_classes: usize) -> Result<TrainReport> {
        self.fit(x, y, n_classes, &mut NoProgress)
    }
}

/// A classifier that also trains from a [`crate::BatchSource`]: cells streamed from disk in
/// mini-batches (N-ACT, ACTINN), so training memory is bounded by the source's buffer and the
/// model. Streaming has no validation hold-out.
pub trait StreamingClassifier: Classifier {
    /// Trains on every cell `source` delivers; `n_classes` classes.
    fn fit_source(
        &mut self,
        source: &mut dyn crate::BatchSource,
        n_classes: usize,
        progress: &mut dyn Progress,
    ) -> Result<TrainReport>;
}

/// An unsupervised clustering method (CICL, k-means, Leiden).
pub trait Clusterer {
    /// Assigns each cell of `x` to one of `n_clusters` clusters.
    fn fit_predict(
        &mut self,
        x: &CsrMatrix,
        n_clusters: usize,
        progress: &mut dyn Progress,
    ) -> Result<Vec<u32>>;
}

/// A model that maps cells to a low-dimensional code (CIC codes, CICL embeddings, PCA).
pub trait Embedder {
    /// The code of each cell, `[cells, embedding_dim]`.
    fn embed(&self, x: &CsrMatrix) -> Result<DenseMatrix>;
    /// Size of the code.
    fn embedding_dim(&self) -> usize;
}

/// A model whose class logits are a differentiable function of a dense input batch; what
/// gradient-based attribution (integrated gradients, gradient x input) needs.
pub trait DifferentiableClassifier {
    /// Pre-softmax logits `[batch, n_classes]` of a dense input `[batch, genes]`.
    fn logits(&self, x: &Tensor) -> Result<Tensor>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_csr_keeps_every_value_and_drops_only_exact_zeros() {
        let d = DenseMatrix::new(2, 3, vec![0.0, -1.5, 2.0, 0.0, 0.0, 3.25]).unwrap();
        let m = d.to_csr().unwrap();
        assert_eq!((m.n_rows(), m.n_cols(), m.nnz()), (2, 3, 3));
        assert_eq!(m.to_dense(), d.values);
    }

    #[test]
    fn select_rows_keeps_the_order_and_repeats() {
        let d = DenseMatrix::new(3, 2, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        let s = d.select_rows(&[2, 0, 2]);
        assert_eq!((s.n_rows, s.n_cols), (3, 2));
        assert_eq!(s.values, vec![5.0, 6.0, 1.0, 2.0, 5.0, 6.0]);
        assert_eq!(d.select_rows(&[]).values, Vec::<f32>::new());
    }
}

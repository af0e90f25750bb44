//! Per-gene standardisation (scanpy `pp.scale`), keeping the statistics for query data.

use cellident_io::CsrMatrix;
use cellident_tensor::DenseMatrix;
use serde::{Deserialize, Serialize};

use crate::{Result, ensure, gene_mean_var};

/// Fitted scaling: `(x - mean) / std`, clipped to `[-max_value, max_value]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scaler {
    /// Per-gene mean of the training data.
    pub mean: Vec<f64>,
    /// Per-gene standard deviation (ddof 1); genes with zero variance get 1.
    pub std: Vec<f64>,
    /// Clip bound (scanpy's `max_value`; 10 is the usual choice), `None` = no clipping.
    pub max_value: Option<f64>,
}

impl Scaler {
    /// Learns per-gene mean and standard deviation of `m` (`[cells, genes]`).
    pub fn fit(m: &CsrMatrix, max_value: Option<f64>) -> Result<Self> {
        if let Some(c) = max_value {
            ensure(c > 0.0, "max_value", || format!("must be > 0, got {c}"))?;
        }
        let (mean, var) = gene_mean_var(m);
        Self::from_mean_var(mean, &var, max_value)
    }

    /// The scaler of cells summarised by their per-gene mean and unbiased variance (ddof 1),
    /// e.g. gathered in a streamed pass ([`crate::stream::GeneMoments::mean_var`]): the same
    /// statistics as [`Scaler::fit`] on the cells themselves.
    pub fn from_mean_var(mean: Vec<f64>, var: &[f64], max_value: Option<f64>) -> Result<Self> {
        if let Some(c) = max_value {
            ensure(c > 0.0, "max_value", || format!("must be > 0, got {c}"))?;
        }
        ensure(mean.len() == var.len(), "var", || {
            format!("{} means but {} variances", mean.len(), var.len())
        })?;
        let std = var
            .iter()
            .map(|&v| if v > 0.0 { v.sqrt() } else { 1.0 })
            .collect();
        Ok(Scaler {
            mean,
            std,
            max_value,
        })
    }

    /// Scales `m` (same genes, same order as the fit) into a dense `[cells, genes]` matrix.
    pub fn transform(&self, m: &CsrMatrix) -> Result<DenseMatrix> {
        ensure(m.n_cols() == self.mean.len(), "genes", || {
            format!(
                "the scaler was fitted on {} genes, the data have {}",
                self.mean.len(),
                m.n_cols()
            )
        })?;
        let g = m.n_cols();
        let clip = self.max_value.unwrap_or(f64::INFINITY);
        let base: Vec<f32> = (0..g)
            .map(|j| ((-self.mean[j] / self.std[j]).clamp(-clip, clip)) as f32)
            .collect();
        let mut values = Vec::with_capacity(m.n_rows() * g);
        for r in 0..m.n_rows() {
            let start = values.len();
            values.extend_from_slice(&base);
            let (idx, val) = m.row(r);
            for (&c, &v) in idx.iter().zip(val) {
                let c = c as usize;
                values[start + c] =
                    (((v as f64 - self.mean[c]) / self.std[c]).clamp(-clip, clip)) as f32;
            }
        }
        Ok(DenseMatrix::new(m.n_rows(), g, values)?)
    }
}

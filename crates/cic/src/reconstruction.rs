//! How well a code reproduces a profile: per-sample MSE and Spearman correlation between the
//! reproduced profile (REP) and the original (GEP), both in the model's scaled input units,
//! and the PCA baseline of the same code size on the same input (the paper's comparison).

use cellident_io::CsrMatrix;
use cellident_preprocess::{Pca, PcaParams};
use cellident_tensor::{DenseMatrix, Result, TensorError, ensure_param};
use serde::{Deserialize, Serialize};

use crate::input::InputScaler;

/// Per-sample reconstruction scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReconstructionScores {
    /// Mean squared error over the genes of each sample.
    pub mse: Vec<f64>,
    /// Spearman correlation between each sample's original and reproduced profile; `None` where
    /// the original profile is constant (every input gene equal, e.g. a cell that expresses none
    /// of them): it has no ranking to reproduce, and it is left out of the median.
    pub spearman: Vec<Option<f64>>,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    }
}

impl ReconstructionScores {
    /// Median Spearman over the samples whose original profile is not constant (the
    /// benchmark's `reconstruction_spearman`); `None` when there is no such sample.
    pub fn median_spearman(&self) -> Option<f64> {
        let defined: Vec<f64> = self.spearman.iter().flatten().copied().collect();
        (!defined.is_empty()).then(|| median(&defined))
    }
    /// How many samples have a constant original profile (no Spearman correlation).
    pub fn n_constant(&self) -> usize {
        self.spearman.iter().filter(|s| s.is_none()).count()
    }
    /// Median MSE over samples.
    pub fn median_mse(&self) -> f64 {
        median(&self.mse)
    }
    /// The scores of the samples `rows`.
    pub fn select(&self, rows: &[usize]) -> ReconstructionScores {
        ReconstructionScores {
            mse: rows.iter().map(|&r| self.mse[r]).collect(),
            spearman: rows.iter().map(|&r| self.spearman[r]).collect(),
        }
    }
}

/// Scores each row of `reproduced` against the same row of `original` (same shape).
pub fn reconstruction_scores(
    original: &DenseMatrix,
    reproduced: &DenseMatrix,
) -> Result<ReconstructionScores> {
    ensure_param(
        original.n_rows == reproduced.n_rows && original.n_cols == reproduced.n_cols,
        "reproduced",
        || {
            format!(
                "{} x {} reproduced profiles for {} x {} originals",
                reproduced.n_rows, reproduced.n_cols, original.n_rows, original.n_cols
            )
        },
    )?;
    let mut mse = Vec::with_capacity(original.n_rows);
    let mut spearman = Vec::with_capacity(original.n_rows);
    for i in 0..original.n_rows {
        let (a, b) = (original.row(i), reproduced.row(i));
        let e = a
            .iter()
            .zip(b)
            .map(|(&x, &y)| ((x - y) as f64).powi(2))
            .sum::<f64>()
            / a.len().max(1) as f64;
        mse.push(e);
        // A constant original has no ranking to reproduce; any other failure (a constant or
        // non-finite reproduction) is the model's and an error.
        let constant = a.iter().all(|&v| v == a[0]);
        let s = if constant {
            None
        } else {
            Some(cellident_metrics::spearman_correlation(a, b).map_err(|e| {
                TensorError::InvalidParam {
                    name: "reproduced",
                    message: format!("sample {i}: {e}"),
                }
            })?)
        };
        spearman.push(s);
    }
    Ok(ReconstructionScores { mse, spearman })
}

/// The PCA baseline: the same gene selection and [0, 1] scaling as CIC, then PCA with as many
/// components as CIC's code; reconstruction = `scores V + mean`.
#[derive(Debug, Clone)]
pub struct PcaCodec {
    pub scaler: InputScaler,
    pub pca: Pca,
}

impl PcaCodec {
    /// Fits on the training cells `x` (`[cells, genes]`): `n_top_genes` most variable genes
    /// (0 = all), `n_components` components (at most `min(cells - 1, genes)`).
    pub fn fit(x: &CsrMatrix, n_top_genes: usize, n_components: usize, seed: u64) -> Result<Self> {
        let scaler = InputScaler::fit(x, n_top_genes)?;
        let scaled = scaler.transform(x)?;
        let k = n_components
            .min(scaled.n_rows.saturating_sub(1))
            .min(scaled.n_cols);
        ensure_param(k >= 1, "n_components", || {
            "PCA needs at least 2 cells and 1 component".into()
        })?;
        let pca = Pca::fit(
            &scaled,
            &PcaParams {
                n_components: k,
                seed,
                ..Default::default()
            },
        )
        .map_err(|e| TensorError::InvalidParam {
            name: "pca",
            message: e.to_string(),
        })?;
        Ok(PcaCodec { scaler, pca })
    }

    /// PCA scores of `x`, `[cells, n_components]`.
    pub fn encode(&self, x: &CsrMatrix) -> Result<DenseMatrix> {
        let scaled = self.scaler.transform(x)?;
        self.pca.transform(&scaled).map_err(pca_err)
    }

    /// `(scaled input, reconstruction)`, both `[cells, selected genes]`.
    pub fn reconstruct(&self, x: &CsrMatrix) -> Result<(DenseMatrix, DenseMatrix)> {
        let scaled = self.scaler.transform(x)?;
        let scores = self.pca.transform(&scaled).map_err(pca_err)?;
        let rep = self.pca.inverse_transform(&scores).map_err(pca_err)?;
        Ok((scaled, rep))
    }
}

fn pca_err(e: cellident_preprocess::PreprocessError) -> TensorError {
    TensorError::InvalidParam {
        name: "pca",
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn scores_are_per_sample() {
        let a = DenseMatrix::new(2, 3, vec![0.0, 0.5, 1.0, 1.0, 0.0, 0.5]).unwrap();
        let b = DenseMatrix::new(2, 3, vec![0.1, 0.4, 0.9, 0.0, 1.0, 0.5]).unwrap();
        let s = reconstruction_scores(&a, &b).unwrap();
        assert!((s.spearman[0].unwrap() - 1.0).abs() < 1e-12);
        assert!((s.spearman[1].unwrap() + 1.0).abs() < 1e-12);
        assert!((s.mse[0] - 0.01).abs() < 1e-7);
        assert!((s.mse[1] - 2.0 / 3.0).abs() < 1e-7);
        assert!((s.median_spearman().unwrap() - 0.0).abs() < 1e-12);
        assert_eq!(s.n_constant(), 0);
        // A constant reproduction of a varying profile is the model's failure: an error.
        let c = DenseMatrix::new(2, 3, vec![0.0; 6]).unwrap();
        assert!(reconstruction_scores(&a, &c).is_err());
    }

    /// A sample whose original profile is constant (a cell expressing none of the input genes)
    /// has no ranking to reproduce: no Spearman, left out of the median, still in the MSE.
    #[test]
    fn constant_originals_are_left_out_of_the_median() {
        let a = DenseMatrix::new(3, 3, vec![0.0, 0.5, 1.0, 1.0, 0.0, 0.5, 0.0, 0.0, 0.0]).unwrap();
        let b = DenseMatrix::new(3, 3, vec![0.1, 0.4, 0.9, 0.0, 1.0, 0.5, 0.2, 0.3, 0.4]).unwrap();
        let s = reconstruction_scores(&a, &b).unwrap();
        assert_eq!(s.spearman[2], None);
        assert_eq!(s.n_constant(), 1);
        // The median of {1, -1}, not of {1, -1, anything}.
        assert!((s.median_spearman().unwrap() - 0.0).abs() < 1e-12);
        assert!((s.mse[2] - (0.04 + 0.09 + 0.16) / 3.0).abs() < 1e-7);
        let only_constant = s.select(&[2]);
        assert_eq!(only_constant.median_spearman(), None);
    }
}

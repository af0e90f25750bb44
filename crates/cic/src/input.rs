//! The input transform of CIC: the most variable genes, each min-max scaled to [0, 1] over the
//! training cells. Fitted once on training data and replayed unchanged on new data, so new
//! profiles may fall slightly outside [0, 1] (they are not clipped: clipping would hide how
//! far they are from anything seen in training).

use candle_core::Tensor;
use cellident_io::CsrMatrix;
use cellident_tensor::{DenseMatrix, Result, ensure_gene_count, ensure_param};
use serde::{Deserialize, Serialize};

/// Selected genes and their `[min, max]` over the training cells.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputScaler {
    /// Number of genes of the data the scaler was fitted on.
    pub n_inputs: usize,
    /// Indices of the selected genes in the input, ascending.
    pub genes: Vec<usize>,
    /// Training minimum of each selected gene.
    pub min: Vec<f32>,
    /// Training `max - min` of each selected gene (1 for a constant gene, which then maps to 0).
    pub range: Vec<f32>,
}

impl InputScaler {
    /// Selects the `n_top` genes of highest variance over the cells of `x` (all genes when
    /// `n_top` is 0 or at least the gene count; ties go to the lower index) and records their
    /// minimum and range.
    pub fn fit(x: &CsrMatrix, n_top: usize) -> Result<Self> {
        ensure_param(x.n_rows() >= 2, "cells", || {
            format!("CIC needs at least 2 training cells, got {}", x.n_rows())
        })?;
        let (_, var) = cellident_preprocess::gene_mean_var(x);
        let genes = top_variance_genes(&var, n_top);
        let dense = select_dense(x, &genes);
        let k = genes.len();
        let mut min = vec![f32::INFINITY; k];
        let mut max = vec![f32::NEG_INFINITY; k];
        for row in dense.chunks_exact(k) {
            for j in 0..k {
                min[j] = min[j].min(row[j]);
                max[j] = max[j].max(row[j]);
            }
        }
        Ok(Self::from_min_max(x.n_cols(), genes, &min, &max))
    }

    /// [`InputScaler::fit`] from statistics gathered elsewhere (a streamed pass): the variance,
    /// minimum and maximum of every input gene (`[genes]` each).
    pub fn from_statistics(var: &[f64], min: &[f32], max: &[f32], n_top: usize) -> Self {
        let genes = top_variance_genes(var, n_top);
        let pick = |v: &[f32]| -> Vec<f32> { genes.iter().map(|&j| v[j]).collect() };
        let (min, max) = (pick(min), pick(max));
        Self::from_min_max(var.len(), genes, &min, &max)
    }

    /// The scaler of the selected `genes` (ascending) with their `min` and `max`.
    fn from_min_max(n_inputs: usize, genes: Vec<usize>, min: &[f32], max: &[f32]) -> Self {
        let range = min
            .iter()
            .zip(max)
            .map(|(&lo, &hi)| if hi > lo { hi - lo } else { 1.0 })
            .collect();
        InputScaler {
            n_inputs,
            genes,
            min: min.to_vec(),
            range,
        }
    }

    /// The scaling alone, on a batch already restricted to the selected genes
    /// (`[cells, selected]` tensor): the same f32 operations as [`InputScaler::transform`].
    pub fn scale_selected(&self, x: &Tensor) -> Result<Tensor> {
        let k = self.genes.len();
        let min = Tensor::from_slice(&self.min, (1, k), x.device())?;
        let range = Tensor::from_slice(&self.range, (1, k), x.device())?;
        Ok(x.broadcast_sub(&min)?.broadcast_div(&range)?)
    }

    /// [`InputScaler::transform`] of a dense batch `[cells, input genes]` on any device.
    pub fn transform_tensor(&self, x: &Tensor) -> Result<Tensor> {
        ensure_gene_count("CIC", self.n_inputs, x.dims2()?.1)?;
        let idx: Vec<u32> = self.genes.iter().map(|&g| g as u32).collect();
        let idx = Tensor::from_vec(idx, self.genes.len(), x.device())?;
        self.scale_selected(&x.index_select(&idx, 1)?)
    }

    /// Number of selected genes (the autoencoder's width at input and output).
    pub fn n_selected(&self) -> usize {
        self.genes.len()
    }

    /// The scaled profiles `[cells, selected genes]`.
    pub fn transform(&self, x: &CsrMatrix) -> Result<DenseMatrix> {
        ensure_gene_count("CIC", self.n_inputs, x.n_cols())?;
        let k = self.genes.len();
        let mut dense = select_dense(x, &self.genes);
        for row in dense.chunks_exact_mut(k) {
            for j in 0..k {
                row[j] = (row[j] - self.min[j]) / self.range[j];
            }
        }
        DenseMatrix::new(x.n_rows(), k, dense)
    }

    /// Per-gene `(scale, shift)` with `scaled = x * scale + shift` (for the feed-forward
    /// description that attribution walks).
    pub fn affine(&self) -> (Vec<f32>, Vec<f32>) {
        self.min
            .iter()
            .zip(&self.range)
            .map(|(&m, &r)| (1.0 / r, -m / r))
            .unzip()
    }
}

/// The `n_top` genes of highest variance (all when `n_top` is 0 or at least the gene count;
/// ties go to the lower index), ascending.
fn top_variance_genes(var: &[f64], n_top: usize) -> Vec<usize> {
    let mut genes: Vec<usize> = (0..var.len()).collect();
    if n_top > 0 && n_top < var.len() {
        genes.sort_by(|&a, &b| var[b].total_cmp(&var[a]).then(a.cmp(&b)));
        genes.truncate(n_top);
        genes.sort_unstable();
    }
    genes
}

/// The columns `genes` of `x`, dense row-major.
fn select_dense(x: &CsrMatrix, genes: &[usize]) -> Vec<f32> {
    let cols: Vec<Option<usize>> = genes.iter().map(|&g| Some(g)).collect();
    x.select_columns(&cols).to_dense()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn keeps_the_most_variable_genes_and_scales_them_to_the_unit_interval() {
        // Gene 0 constant, gene 1 variance small, gene 2 large, gene 3 medium.
        let x = CsrMatrix::from_dense(
            3,
            4,
            &[5.0, 1.0, 0.0, 2.0, 5.0, 1.5, 10.0, 4.0, 5.0, 2.0, 20.0, 6.0],
        )
        .unwrap();
        let s = InputScaler::fit(&x, 2).unwrap();
        assert_eq!(s.genes, vec![2, 3]);
        let t = s.transform(&x).unwrap();
        assert_eq!(t.values, vec![0.0, 0.0, 0.5, 0.5, 1.0, 1.0]);
        // All genes when asked for more than there are; a constant gene maps to 0.
        let all = InputScaler::fit(&x, 10).unwrap();
        assert_eq!(all.genes, vec![0, 1, 2, 3]);
        assert_eq!(all.transform(&x).unwrap().row(0)[0], 0.0);
        // The affine form gives the same values.
        let (scale, shift) = s.affine();
        assert_eq!(20.0 * scale[0] + shift[0], 1.0);
        // Other gene counts are refused with a message saying what to do.
        let y = CsrMatrix::from_dense(1, 3, &[1.0, 2.0, 3.0]).unwrap();
        assert!(s.transform(&y).unwrap_err().to_string().contains("align"));
    }
}

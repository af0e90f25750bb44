//! What each code unit means (paper §2.4): decode the mean code, then the mean code with one
//! unit raised by `n_sd` standard deviations; the genes whose reproduced value changes most are
//! the unit's genes.

use cellident_io::CsrMatrix;
use cellident_tensor::{DenseMatrix, Embedder, Result, ensure_param};
use serde::{Deserialize, Serialize};

use crate::model::Cic;

/// One row of the unit -> gene table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitGeneEffect {
    /// Code unit, 0-based.
    pub unit: usize,
    /// 1 = largest |delta|.
    pub rank: usize,
    /// Index of the gene in the training data's genes (not in the selected subset).
    pub gene: usize,
    /// Change of the reproduced value (scaled units, [0, 1] = the gene's training range) when
    /// the unit is raised; signed.
    pub delta: f32,
}

impl Cic {
    /// For every code unit, the `top` genes whose reproduction changes most when that unit of
    /// the mean code of `x`'s cells is raised by `n_sd` standard deviations (the paper: 2 SD,
    /// 100 genes). Units are ranked independently; ties go to the lower gene index.
    pub fn unit_gene_effects(
        &self,
        x: &CsrMatrix,
        top: usize,
        n_sd: f32,
    ) -> Result<Vec<UnitGeneEffect>> {
        ensure_param(x.n_rows() >= 2, "cells", || {
            "the code statistics need at least 2 cells".into()
        })?;
        let codes = self.embed(x)?;
        let (n, d) = (codes.n_rows, codes.n_cols);
        let mut mean = vec![0f64; d];
        for i in 0..n {
            for (m, &v) in mean.iter_mut().zip(codes.row(i)) {
                *m += v as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let mut sd = vec![0f64; d];
        for i in 0..n {
            for (j, &v) in codes.row(i).iter().enumerate() {
                sd[j] += (v as f64 - mean[j]).powi(2);
            }
        }
        sd.iter_mut()
            .for_each(|s| *s = (*s / (n - 1) as f64).sqrt());
        // Row 0: the mean code; row 1 + u: unit u raised.
        let mut probe = Vec::with_capacity((d + 1) * d);
        for u in 0..=d {
            for j in 0..d {
                let raise = if u == j + 1 { n_sd as f64 * sd[j] } else { 0.0 };
                probe.push((mean[j] + raise) as f32);
            }
        }
        let rep = self.decode(&DenseMatrix::new(d + 1, d, probe)?)?;
        let genes = self.selected_genes()?;
        let base = rep.row(0);
        let mut out = Vec::with_capacity(d * top.min(genes.len()));
        for u in 0..d {
            let delta: Vec<f32> = rep
                .row(u + 1)
                .iter()
                .zip(base)
                .map(|(a, b)| a - b)
                .collect();
            let mut order: Vec<usize> = (0..delta.len()).collect();
            order.sort_by(|&a, &b| delta[b].abs().total_cmp(&delta[a].abs()).then(a.cmp(&b)));
            for (r, &k) in order.iter().take(top).enumerate() {
                out.push(UnitGeneEffect {
                    unit: u,
                    rank: r + 1,
                    gene: genes[k],
                    delta: delta[k],
                });
            }
        }
        Ok(out)
    }
}

//! Quality-control filters (scanpy `pp.filter_cells`, `pp.filter_genes`, and the usual
//! mitochondrial-fraction cut).

use cellident_io::ExpressionDataset;
use serde::{Deserialize, Serialize};

use crate::{PreprocessError, Result};

/// Which genes are mitochondrial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MitoPrefix {
    /// `MT-` (human) if any gene starts with it, otherwise `mt-` (mouse).
    #[default]
    Auto,
    /// An explicit, case-sensitive prefix.
    Prefix(String),
}

/// QC thresholds; `None` disables a filter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct QcParams {
    /// Keep cells with at least this many expressed genes.
    pub min_genes: Option<usize>,
    /// Keep cells with at most this many expressed genes (doublet guard).
    pub max_genes: Option<usize>,
    /// Keep genes expressed in at least this many (kept) cells.
    pub min_cells: Option<usize>,
    /// Keep cells whose mitochondrial fraction of total counts is at most this (e.g. 0.05).
    pub max_mito_fraction: Option<f64>,
    pub mito_prefix: MitoPrefix,
}

/// What the filters removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct QcReport {
    pub cells_in: usize,
    pub cells_kept: usize,
    pub removed_min_genes: usize,
    pub removed_max_genes: usize,
    pub removed_mito: usize,
    pub genes_in: usize,
    pub genes_kept: usize,
    /// The mitochondrial prefix used (when the mito filter ran).
    pub mito_prefix: Option<String>,
    pub n_mito_genes: usize,
}

/// Applies the cell filters, then the gene filter, and reports what each removed.
pub fn apply_qc(d: &ExpressionDataset, p: &QcParams) -> Result<(ExpressionDataset, QcReport)> {
    let m = d.matrix();
    let mut report = QcReport {
        cells_in: d.n_cells(),
        genes_in: d.n_genes(),
        ..Default::default()
    };
    let n_genes_per_cell = m.row_nnz();
    let mito: Option<(String, Vec<bool>)> = match p.max_mito_fraction {
        Some(f) if !(0.0..=1.0).contains(&f) => {
            return Err(PreprocessError::InvalidParam {
                name: "max_mito_fraction",
                message: format!("must be in [0, 1], got {f}"),
            });
        }
        Some(_) => {
            let prefix = match &p.mito_prefix {
                MitoPrefix::Prefix(s) => s.clone(),
                MitoPrefix::Auto => {
                    if d.gene_ids().iter().any(|g| g.starts_with("MT-")) {
                        "MT-".into()
                    } else {
                        "mt-".into()
                    }
                }
            };
            let is_mito: Vec<bool> = d
                .gene_ids()
                .iter()
                .map(|g| g.starts_with(&prefix))
                .collect();
            report.n_mito_genes = is_mito.iter().filter(|&&b| b).count();
            if report.n_mito_genes == 0 {
                return Err(PreprocessError::Data(format!(
                    "no gene name starts with '{prefix}', so the mitochondrial fraction cannot be computed (these may be Ensembl ids or a gene subset without mitochondrial genes); set the prefix or drop the mito filter"
                )));
            }
            report.mito_prefix = Some(prefix.clone());
            Some((prefix, is_mito))
        }
        None => None,
    };
    let mut keep_cells = Vec::with_capacity(d.n_cells());
    for r in 0..d.n_cells() {
        let ng = n_genes_per_cell[r];
        if p.min_genes.is_some_and(|t| ng < t) {
            report.removed_min_genes += 1;
            continue;
        }
        if p.max_genes.is_some_and(|t| ng > t) {
            report.removed_max_genes += 1;
            continue;
        }
        if let (Some(max), Some((_, is_mito))) = (p.max_mito_fraction, &mito) {
            let (idx, val) = m.row(r);
            let total: f64 = val.iter().map(|&v| v as f64).sum();
            let mt: f64 = idx
                .iter()
                .zip(val)
                .filter(|(c, _)| is_mito[**c as usize])
                .map(|(_, &v)| v as f64)
                .sum();
            if total > 0.0 && mt / total > max {
                report.removed_mito += 1;
                continue;
            }
        }
        keep_cells.push(r);
    }
    if keep_cells.is_empty() {
        return Err(PreprocessError::Data(format!(
            "the QC filters removed all {} cells ({report:?})",
            d.n_cells()
        )));
    }
    let d = if keep_cells.len() == d.n_cells() {
        d.clone()
    } else {
        d.select_cells(&keep_cells)?
    };
    report.cells_kept = d.n_cells();
    let d = match p.min_cells {
        Some(t) => {
            let mut cells_per_gene = vec![0usize; d.n_genes()];
            for &c in d.matrix().indices() {
                cells_per_gene[c as usize] += 1;
            }
            let keep: Vec<usize> = (0..d.n_genes())
                .filter(|&j| cells_per_gene[j] >= t)
                .collect();
            if keep.is_empty() {
                return Err(PreprocessError::Data(format!(
                    "no gene is expressed in at least {t} cells"
                )));
            }
            if keep.len() == d.n_genes() {
                d
            } else {
                d.select_genes(&keep)?
            }
        }
        None => d,
    };
    report.genes_kept = d.n_genes();
    Ok((d, report))
}

//! A recorded preprocessing pipeline: fitted once on training data, saved with a model, and
//! replayed exactly on query data (same genes, same normalisation, same scaling statistics,
//! same PCA loadings).

use cellident_io::{CsrMatrix, ExpressionDataset};
use cellident_tensor::DenseMatrix;
use serde::{Deserialize, Serialize};

use crate::hvg::{HvgParams, highly_variable_genes};
use crate::normalize::{log1p, normalize_total};
use crate::pca::{Pca, PcaParams};
use crate::scale::Scaler;
use crate::{PreprocessError, Result};

/// What to do, as a user asks for it (`cellident preprocess` flags).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PipelineParams {
    /// `normalize_total` target (e.g. 1e4).
    pub normalize_total: Option<f64>,
    pub log1p: bool,
    /// Highly variable gene selection.
    pub hvg: Option<HvgParams>,
    /// Scale to unit variance, clipping at this value (scanpy's `max_value`, e.g. 10).
    pub scale: Option<Option<f64>>,
    /// PCA.
    pub pca: Option<PcaParams>,
}

impl PipelineParams {
    /// The recipe every cellident model and baseline starts from (scanpy's standard workflow):
    /// counts are normalised to 10,000 per cell and logged, log-scale data are used as they
    /// are, non-negative values that are neither (FPKM, TPM: already depth-normalised) are
    /// logged without normalising, and datasets with more than `n_top_genes` genes keep the
    /// `n_top_genes` most variable ones (`seurat` flavour) — unless the values have negatives
    /// (e.g. already scaled), where logging and HVG selection would be meaningless.
    pub fn log_hvg(d: &ExpressionDataset, n_top_genes: usize) -> Self {
        Self::log_hvg_for(d.matrix(), n_top_genes)
    }

    /// [`Self::log_hvg`] decided on the values of `m` (`[cells, genes]`: all cells, or for a
    /// streamed file a sample of its first cells).
    pub fn log_hvg_for(m: &CsrMatrix, n_top_genes: usize) -> Self {
        let is_counts = crate::looks_like_counts(m);
        let logged = crate::looks_log_transformed(m);
        // FPKM/TPM: left unlogged they kept every gene (47,192 on hsmm_single_cell), which
        // put a G x G transformer (CICL) out of memory and left HVG selection off.
        let unlogged = !is_counts && !logged && m.data().iter().all(|&v| v >= 0.0);
        PipelineParams {
            normalize_total: is_counts.then_some(1e4),
            log1p: is_counts || unlogged,
            hvg: (m.n_cols() > n_top_genes && (is_counts || logged || unlogged)).then_some(
                HvgParams {
                    n_top_genes,
                    ..Default::default()
                },
            ),
            scale: None,
            pca: None,
        }
    }

    /// [`Self::log_hvg`] with 2,000 genes, then scaling (clip 10) and PCA with `n_pcs`
    /// components (fewer when the data have fewer cells or genes): the input of the PCA +
    /// k-means and Leiden baselines.
    pub fn log_hvg_pca(d: &ExpressionDataset, n_pcs: usize, seed: u64) -> Self {
        let n_pcs = n_pcs
            .min(d.n_cells().saturating_sub(1))
            .min(d.n_genes())
            .max(1);
        PipelineParams {
            scale: Some(Some(10.0)),
            pca: Some(PcaParams {
                n_components: n_pcs,
                seed,
                ..Default::default()
            }),
            ..Self::log_hvg(d, 2000)
        }
    }
}

/// Dense scaled values (bytes) above which scaling + PCA run block by block
/// ([`Pca::fit_transform_scaled_by_blocks`]) instead of on a dense copy: 2 GiB, about 270,000
/// cells of 2,000 genes. Below it (every fixture and benchmark set) the dense randomized PCA runs.
pub const DENSE_LIMIT_BYTES: usize = 2 << 30;

/// One fitted step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    NormalizeTotal {
        target_sum: f64,
    },
    Log1p,
    /// Keep these genes, in this order (HVG selection); query genes are aligned by name.
    SelectGenes {
        genes: Vec<String>,
    },
    Scale(Scaler),
    Pca(Pca),
}

/// The fitted pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Pipeline {
    pub steps: Vec<Step>,
}

/// The result of a pipeline: still sparse (`[cells, genes]`), or dense features after
/// scaling/PCA (`feature_names` are genes or `PC1..PCk`).
#[derive(Debug, Clone, PartialEq)]
pub enum Prepared {
    Sparse(ExpressionDataset),
    Dense {
        cell_ids: Vec<String>,
        feature_names: Vec<String>,
        values: DenseMatrix,
        obs: cellident_io::Table,
    },
}

impl Pipeline {
    /// [`Pipeline::fit`] for recipes that end in scaling or PCA: the dense `[cells, features]`
    /// values (an error for a recipe that leaves the data sparse).
    pub fn fit_dense(
        data: &ExpressionDataset,
        p: &PipelineParams,
    ) -> Result<(Pipeline, DenseMatrix)> {
        match Pipeline::fit(data, p)? {
            (pipeline, Prepared::Dense { values, .. }) => Ok((pipeline, values)),
            (_, Prepared::Sparse(_)) => Err(PreprocessError::InvalidParam {
                name: "recipe",
                message: "fit_dense needs a recipe with scaling or PCA; this one leaves the \
                          data sparse"
                    .into(),
            }),
        }
    }

    /// Fits every requested step on `data` and returns the pipeline and the transformed data.
    pub fn fit(data: &ExpressionDataset, p: &PipelineParams) -> Result<(Pipeline, Prepared)> {
        Self::fit_owned(data.clone(), p)
    }

    /// [`Pipeline::fit`] consuming `data`, so that the matrix is transformed in place instead of
    /// copied (at a million cells the copy is a gigabyte or more); `seurat_v3`, which ranks genes
    /// on the raw counts, keeps a copy of them.
    pub fn fit_owned(mut d: ExpressionDataset, p: &PipelineParams) -> Result<(Pipeline, Prepared)> {
        let mut steps = Vec::new();
        let raw_counts = p
            .hvg
            .as_ref()
            .is_some_and(|h| h.flavor == crate::HvgFlavor::SeuratV3)
            .then(|| d.matrix().clone());
        if let Some(t) = p.normalize_total {
            normalize_total(&mut d, t)?;
            steps.push(Step::NormalizeTotal { target_sum: t });
        }
        if p.log1p {
            log1p(&mut d, false)?;
            steps.push(Step::Log1p);
        }
        if let Some(h) = &p.hvg {
            // seurat_v3 ranks genes on the raw counts (as scanpy expects it to be run before
            // normalisation); seurat on the log-normalised values.
            let source = raw_counts.as_ref().unwrap_or(d.matrix());
            let r = highly_variable_genes(source, h)?;
            if r.selected.windows(2).all(|w| w[0] < w[1]) {
                // In place: no second copy of the values at a million cells.
                d.retain_genes(&r.selected)?;
            } else {
                d = d.select_genes(&r.selected)?;
            }
            steps.push(Step::SelectGenes {
                genes: d.gene_ids().to_vec(),
            });
        }
        let mut pipeline = Pipeline { steps };
        if p.scale.is_none() && p.pca.is_none() {
            return Ok((pipeline, Prepared::Sparse(d)));
        }
        let pc_names = |k: usize| (1..=k).map(|i| format!("PC{i}")).collect::<Vec<_>>();
        let (values, names) = match (p.scale, &p.pca) {
            // PCA without scaling: implicit centring of the sparse matrix (scanpy's `pca` on
            // sparse input), never the dense `[cells, genes]` copy.
            (None, Some(pp)) => {
                let (pca, scores) = Pca::fit_transform_sparse(d.matrix(), pp)?;
                let names = pc_names(pca.n_components);
                pipeline.steps.push(Step::Pca(pca));
                (scores, names)
            }
            // Scaling then PCA on more cells than a dense copy should take (a million cells):
            // scaled a block at a time into the scatter matrix, never densified whole.
            (Some(clip), Some(pp)) if d.n_cells() * d.n_genes() * 4 > DENSE_LIMIT_BYTES => {
                let s = Scaler::fit(d.matrix(), clip)?;
                let (pca, scores) = Pca::fit_transform_scaled_by_blocks(d.matrix(), &s, pp, 8192)?;
                let names = pc_names(pca.n_components);
                pipeline.steps.push(Step::Scale(s));
                pipeline.steps.push(Step::Pca(pca));
                (scores, names)
            }
            (Some(clip), pca) => {
                let s = Scaler::fit(d.matrix(), clip)?;
                let v = s.transform(d.matrix())?;
                pipeline.steps.push(Step::Scale(s));
                match pca {
                    Some(pp) => {
                        let (pca, scores) = Pca::fit_transform(v, pp)?;
                        let names = pc_names(pca.n_components);
                        pipeline.steps.push(Step::Pca(pca));
                        (scores, names)
                    }
                    None => (v, d.gene_ids().to_vec()),
                }
            }
            (None, None) => unreachable!("returned sparse above"),
        };
        let (_, cell_ids, _, obs, _) = d.into_parts();
        Ok((
            pipeline,
            Prepared::Dense {
                cell_ids,
                feature_names: names,
                values,
                obs,
            },
        ))
    }

    /// Replays the fitted steps on query data. Genes are aligned by name at the gene-selection
    /// step; fewer than `min_overlap` of the selected genes present is an error.
    pub fn apply(&self, data: &ExpressionDataset, min_overlap: f64) -> Result<Prepared> {
        let mut d = data.clone();
        let mut dense: Option<(DenseMatrix, Vec<String>)> = None;
        for step in &self.steps {
            match step {
                Step::NormalizeTotal { target_sum } => normalize_total(&mut d, *target_sum)?,
                Step::Log1p => log1p(&mut d, false)?,
                Step::SelectGenes { genes } => d = d.align_to_genes(genes, min_overlap)?.0,
                Step::Scale(s) => {
                    if s.mean.len() != d.n_genes() {
                        return Err(PreprocessError::Data(
                            "scaling step does not match the data's genes".into(),
                        ));
                    }
                    dense = Some((s.transform(d.matrix())?, d.gene_ids().to_vec()));
                }
                Step::Pca(pca) => {
                    let x = match dense.take() {
                        Some((x, _)) => x,
                        None => DenseMatrix::new(d.n_cells(), d.n_genes(), d.matrix().to_dense())?,
                    };
                    let names = (1..=pca.n_components).map(|i| format!("PC{i}")).collect();
                    dense = Some((pca.transform(&x)?, names));
                }
            }
        }
        Ok(match dense {
            None => Prepared::Sparse(d),
            Some((values, feature_names)) => {
                let (_, cell_ids, _, obs, _) = d.into_parts();
                Prepared::Dense {
                    cell_ids,
                    feature_names,
                    values,
                    obs,
                }
            }
        })
    }
}

#[cfg(test)]
mod recipe_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use cellident_io::Table;

    /// 2 cells x 3 genes with the given values (a hand-made matrix: only the recipe choice
    /// is under test).
    fn two_cells(values: [f32; 6]) -> ExpressionDataset {
        ExpressionDataset::from_dense(
            &values,
            vec!["c1".into(), "c2".into()],
            vec!["g1".into(), "g2".into(), "g3".into()],
            Table::empty(2),
        )
        .unwrap()
    }

    #[test]
    fn the_recipe_follows_the_value_kind() {
        // Counts: normalise, log, HVG.
        let r = PipelineParams::log_hvg(&two_cells([3., 0., 1., 7., 2., 0.]), 2);
        assert_eq!(
            (r.normalize_total, r.log1p, r.hvg.is_some()),
            (Some(1e4), true, true)
        );
        // Log values: as they are, HVG.
        let r = PipelineParams::log_hvg(&two_cells([1.2, 0., 0.7, 2.3, 0.1, 0.]), 2);
        assert_eq!(
            (r.normalize_total, r.log1p, r.hvg.is_some()),
            (None, false, true)
        );
        // FPKM / TPM (non-negative, non-integer, beyond log range): log without normalising, HVG.
        let r = PipelineParams::log_hvg(&two_cells([152.3, 0., 0.5, 2210.7, 3.1, 0.]), 2);
        assert_eq!(
            (r.normalize_total, r.log1p, r.hvg.is_some()),
            (None, true, true)
        );
        // Scaled values (negatives): nothing.
        let r = PipelineParams::log_hvg(&two_cells([-0.4, 1.3, 0.2, 0.9, -1.7, 0.]), 2);
        assert_eq!(
            (r.normalize_total, r.log1p, r.hvg.is_some()),
            (None, false, false)
        );
        // No more genes than asked for: no HVG step.
        let r = PipelineParams::log_hvg(&two_cells([3., 0., 1., 7., 2., 0.]), 3);
        assert!(r.hvg.is_none());
    }
}

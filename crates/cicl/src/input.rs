//! CICL's input: the preprocessing recipe the encoder is trained on (docs/cicl.md, "input").
//!
//! methods.md open question 6 fixes library-size normalisation, log1p and the top 2000 HVGs
//! and is silent on scaling genes. cellident scales each gene to unit variance (clipped at
//! [`SCALE_CLIP`], scanpy's `max_value`) by default ([`SCALE_GENES_DEFAULT`]). Every encoder
//! layer ends in a per-cell LayerNorm, so the first k-means — the start the method iterates from
//! — sees per-cell standardised values: on log values a cell is dominated by its most expressed
//! genes. On eight full datasets CICL's mean ARI is 0.643 with scaled genes and 0.541 without
//! (better on six; cellbench_3cl 0.946 vs 0.431), though on the PBMC and pancreas fixture subsets
//! the unscaled recipe does better (docs/cicl.md, "Input scaling").

use cellident_io::ExpressionDataset;
use cellident_preprocess::Pipeline;
use cellident_preprocess::pipeline::{PipelineParams, Prepared};
use cellident_tensor::{DenseMatrix, Result, TensorError};

/// Genes kept by the HVG step (methods.md open question 6).
pub const N_TOP_GENES: usize = 2000;

/// Scaled genes are clipped at this many standard deviations (scanpy's `max_value`).
pub const SCALE_CLIP: f64 = 10.0;

/// Whether CICL's genes are scaled unless a caller says otherwise: yes (see the module docs).
pub const SCALE_GENES_DEFAULT: bool = true;

/// The recipe of CICL's input for `d`: normalise + log1p for counts (logged data as they are),
/// top [`N_TOP_GENES`] seurat HVGs, then, when `scale_genes`, each gene to unit variance
/// clipped at [`SCALE_CLIP`].
pub fn input_recipe(d: &ExpressionDataset, scale_genes: bool) -> PipelineParams {
    PipelineParams {
        scale: scale_genes.then_some(Some(SCALE_CLIP)),
        ..PipelineParams::log_hvg(d, N_TOP_GENES)
    }
}

/// CICL's input for one dataset: the dense `[cells, genes]` values of [`input_recipe`], with
/// the cell ids (in the order of the rows) and the recipe that made them.
#[derive(Debug, Clone)]
pub struct CiclInput {
    pub recipe: PipelineParams,
    pub cell_ids: Vec<String>,
    pub gene_ids: Vec<String>,
    /// `[cells, genes]`, f32.
    pub values: DenseMatrix,
}

/// Prepares `d` (taken over, transformed in place) with [`input_recipe`].
pub fn prepare_input(d: ExpressionDataset, scale_genes: bool) -> Result<CiclInput> {
    let recipe = input_recipe(&d, scale_genes);
    let (_, out) = Pipeline::fit_owned(d, &recipe).map_err(|e| TensorError::InvalidParam {
        name: "input",
        message: format!("preprocessing CICL's input: {e}"),
    })?;
    Ok(match out {
        Prepared::Sparse(p) => CiclInput {
            cell_ids: p.cell_ids().to_vec(),
            gene_ids: p.gene_ids().to_vec(),
            values: DenseMatrix::new(p.n_cells(), p.n_genes(), p.matrix().to_dense())?,
            recipe,
        },
        Prepared::Dense {
            cell_ids,
            feature_names,
            values,
            ..
        } => CiclInput {
            cell_ids,
            gene_ids: feature_names,
            values,
            recipe,
        },
    })
}

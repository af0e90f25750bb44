//! `cellident preprocess`: QC, normalisation, log, HVG, scaling and PCA of a Parquet dataset,
//! with the fitted pipeline recorded in the output file's metadata (`cellident.pipeline`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use cellident_io::{ExpressionDataset, ParquetWriteOptions};
use cellident_preprocess::pipeline::{PipelineParams, Prepared};
use cellident_preprocess::qc::{MitoPrefix, QcParams, apply_qc};
use cellident_preprocess::{HvgFlavor, HvgParams, PcaParams, Pipeline};
use clap::ValueEnum;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FlavorArg {
    /// scanpy's default: dispersion z-scores on log-normalised data.
    Seurat,
    /// Variance-stabilised ranking on raw counts.
    SeuratV3,
}

#[derive(Debug, clap::Args)]
pub struct PreprocessArgs {
    /// Input dataset (a cellident Parquet file, or anything `import` reads).
    input: PathBuf,
    /// Output Parquet dataset.
    #[arg(short, long)]
    output: PathBuf,
    /// Keep cells with at least N expressed genes.
    #[arg(long)]
    min_genes: Option<usize>,
    /// Keep cells with at most N expressed genes.
    #[arg(long)]
    max_genes: Option<usize>,
    /// Keep genes expressed in at least N cells.
    #[arg(long)]
    min_cells: Option<usize>,
    /// Keep cells with at most this fraction of counts in mitochondrial genes (e.g. 0.05).
    #[arg(long)]
    max_mito: Option<f64>,
    /// Gene-name prefix of mitochondrial genes (default: MT- if present, else mt-).
    #[arg(long)]
    mito_prefix: Option<String>,
    /// Scale each cell to this total (scanpy normalize_total), e.g. 10000.
    #[arg(long)]
    normalize_total: Option<f64>,
    /// Natural log of 1 + x (refused on data that already look logged).
    #[arg(long)]
    log1p: bool,
    /// Keep the N most variable genes.
    #[arg(long)]
    hvg: Option<usize>,
    /// Highly variable gene definition.
    #[arg(long, value_enum, default_value_t = FlavorArg::Seurat)]
    flavor: FlavorArg,
    /// Scale genes to zero mean and unit variance, clipped at --clip.
    #[arg(long)]
    scale: bool,
    /// Clip bound of --scale.
    #[arg(long, default_value_t = 10.0)]
    clip: f64,
    /// Replace the genes by the first K principal components.
    #[arg(long)]
    pca: Option<usize>,
    /// Seed of the randomized PCA.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(a: PreprocessArgs, quiet: bool) -> Result<()> {
    let data = crate::read_dataset(&a.input)?;
    let qc = QcParams {
        min_genes: a.min_genes,
        max_genes: a.max_genes,
        min_cells: a.min_cells,
        max_mito_fraction: a.max_mito,
        mito_prefix: a
            .mito_prefix
            .clone()
            .map(MitoPrefix::Prefix)
            .unwrap_or_default(),
    };
    let (data, report) = apply_qc(&data, &qc).context("quality control")?;
    let params = PipelineParams {
        normalize_total: a.normalize_total,
        log1p: a.log1p,
        hvg: a.hvg.map(|n| HvgParams {
            n_top_genes: n,
            flavor: match a.flavor {
                FlavorArg::Seurat => HvgFlavor::Seurat,
                FlavorArg::SeuratV3 => HvgFlavor::SeuratV3,
            },
            ..HvgParams::default()
        }),
        scale: a.scale.then_some(Some(a.clip)),
        pca: a.pca.map(|k| PcaParams {
            n_components: k,
            seed: a.seed,
            ..PcaParams::default()
        }),
    };
    let (pipeline, out) = Pipeline::fit(&data, &params).context("preprocessing")?;
    let out = match out {
        Prepared::Sparse(d) => d,
        Prepared::Dense {
            cell_ids,
            feature_names,
            values,
            obs,
        } => ExpressionDataset::from_dense(&values.values, cell_ids, feature_names, obs)?,
    };
    let record =
        serde_json::json!({"qc": qc, "qc_report": report, "params": params, "pipeline": pipeline});
    let options = ParquetWriteOptions {
        extra_metadata: vec![("cellident.pipeline".into(), record.to_string())],
        ..ParquetWriteOptions::default()
    };
    cellident_io::write_parquet(&a.output, &out, &options)
        .with_context(|| format!("cannot write {}", a.output.display()))?;
    if !quiet {
        eprintln!(
            "kept {} of {} cells; wrote {} cells x {} features to {}",
            report.cells_kept,
            report.cells_in,
            out.n_cells(),
            out.n_genes(),
            a.output.display()
        );
    }
    Ok(())
}

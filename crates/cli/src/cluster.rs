//! `cellident cluster`: unsupervised clusters of the cells of a dataset — Leiden on the
//! 15-neighbour graph of PCA-50 (scanpy's default; K not needed), PCA-50 + k-means, or CICL —
//! written as `cell,cluster` CSV. All three start from the standard recipe (counts normalised
//! and logged, top 2,000 HVGs, genes scaled unless `--no-scale`; `PipelineParams::log_hvg`,
//! `cellident_cicl::input_recipe`).

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use cellident_cicl::{Cicl, CiclParams};
use cellident_io::{ExpressionDataset, ParquetWriteOptions, Table};
use cellident_preprocess::pipeline::{PipelineParams, Prepared};
use cellident_preprocess::{
    KMeansParams, LeidenParams, MiniBatchKMeansParams, NeighborsParams, Pipeline, kmeans, leiden,
    minibatch_kmeans, neighbors,
};
use cellident_tensor::{CheckParams, DenseMatrix, DeviceChoice};
use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClusterMethod {
    /// Leiden communities (resolution --resolution) on the UMAP kNN graph of PCA-50.
    Leiden,
    /// k-means (k-means++, 10 restarts) on PCA-50.
    Kmeans,
    /// CICL: contrastive transformer encoder with iterated k-means centroids (slow on CPU:
    /// about 10 s per epoch per 1,000 cells at 2,000 genes on 2 cores).
    Cicl,
}

#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    /// Input dataset (a cellident Parquet file, or anything `import` reads).
    input: PathBuf,
    /// Output CSV: one row per cell, columns `cell,cluster` (clusters numbered from 0).
    #[arg(short, long)]
    output: PathBuf,
    #[arg(long, value_enum, default_value_t = ClusterMethod::Leiden)]
    method: ClusterMethod,
    /// Number of clusters (k-means, CICL). Without it, the number of Leiden communities is
    /// used (a rough estimate: docs/cicl.md measures it) and reported.
    #[arg(long)]
    k: Option<usize>,
    /// Leiden resolution: larger gives more, smaller clusters.
    #[arg(long, default_value_t = 1.0)]
    resolution: f64,
    /// Neighbours per cell of the Leiden graph, counting the cell itself.
    #[arg(long, default_value_t = 15)]
    n_neighbors: usize,
    /// Principal components for Leiden and k-means.
    #[arg(long, default_value_t = 50)]
    n_pcs: usize,
    /// CICL: training epochs (default 50).
    #[arg(long)]
    epochs: Option<usize>,
    /// CICL: temperature τ of the InfoNCE and cluster-aware losses (default 0.5, the paper's).
    /// Smaller is sharper; docs/cicl.md "Temperature" measures 0.2 on thirteen datasets.
    #[arg(long)]
    temperature: Option<f64>,
    /// CICL: dropout rate inside the encoder during training, in [0, 1) (default 0; the
    /// paper's is 0.2). docs/cicl.md "Dropout 0" measures both on thirteen datasets.
    #[arg(long)]
    dropout: Option<f64>,
    /// CICL: height of the constant (+a, -a, ...) profile added to every cell before the
    /// encoder, so that its per-cell LayerNorm rescales all cells alike (default 0.5; 0 is the
    /// paper's, off). docs/cicl.md "A constant profile under the LayerNorm" measures it.
    #[arg(long, allow_negative_numbers = true)]
    input_offset: Option<f64>,
    /// CICL: principal components of the untrained embedding that the first k-means runs in
    /// (default 50; 0 is the paper's, the whole embedding). `--dropout 0.2 --input-offset 0
    /// --first-kmeans-pcs 0` is the paper's recipe. docs/cicl.md "The first k-means in the
    /// embedding's principal components".
    #[arg(long)]
    first_kmeans_pcs: Option<usize>,
    /// CICL: also write the cells' embedding (Parquet, features h0..) to this file.
    #[arg(long)]
    embedding: Option<PathBuf>,
    /// k-means: mini-batch updates (batches of 1,024 cells) instead of full Lloyd iterations —
    /// about 90x faster at a million cells, with a somewhat higher inertia (docs/benchmarks.md).
    #[arg(long)]
    minibatch: bool,
    /// Do not scale the log-normalised HVGs to unit variance. Leiden and k-means: PCA on the
    /// sparse matrix centred implicitly (as scanpy's `pca` on sparse input), no dense
    /// `[cells, genes]` copy, so a million cells need about 2 GB (docs/scaling.md). CICL: the
    /// encoder gets the log values (docs/cicl.md: worse on 6 of 8 datasets, better on the PBMC
    /// and pancreas fixture subsets).
    #[arg(long)]
    no_scale: bool,
    /// Leiden and k-means on a cellident Parquet file that is never read whole: the recipe's
    /// statistics (HVG moments, scaling moments, the PCA's gene-by-gene scatter) are gathered in
    /// passes over the row groups and only the PC scores are held — at a million cells a
    /// quarter of the in-memory run's peak memory (docs/scaling.md). The recipe is decided on the
    /// file's first 10,000 cells, as `train --stream` does.
    #[arg(long)]
    stream: bool,
    /// Seed of PCA, k-means, Leiden and CICL.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where CICL trains: cpu, cuda[:N], metal[:N] (GPU builds need the matching feature).
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// PCA coordinates of the standard recipe, consuming `d` (transformed in place, not copied).
fn pca_coordinates(
    d: ExpressionDataset,
    n_pcs: usize,
    seed: u64,
    scale: bool,
) -> Result<DenseMatrix> {
    let mut params = PipelineParams::log_hvg_pca(&d, n_pcs, seed);
    if !scale {
        params.scale = None;
    }
    match Pipeline::fit_owned(d, &params).context("preprocessing (log, HVG, PCA)")? {
        (_, Prepared::Dense { values, .. }) => Ok(values),
        (_, Prepared::Sparse(_)) => bail!("the PCA recipe returned sparse data"),
    }
}

fn leiden_labels(x: &DenseMatrix, a: &ClusterArgs) -> Result<Vec<u32>> {
    let graph = neighbors(
        x,
        &NeighborsParams {
            n_neighbors: a.n_neighbors,
        },
    )
    .context("building the neighbour graph")?;
    let r = leiden(
        &graph,
        &LeidenParams {
            resolution: a.resolution,
            seed: a.seed,
            ..Default::default()
        },
    )?;
    Ok(r.labels)
}

/// `--stream`: the PCA coordinates of every cell of a Parquet file, the cells read a batch at a
/// time (four passes: HVG, scaling, the PCA's scatter, the scores), with the cell ids.
fn streamed_pca_coordinates(a: &ClusterArgs, quiet: bool) -> Result<(Vec<String>, DenseMatrix)> {
    use cellident_preprocess::PcaParams;
    use cellident_preprocess::stream::{
        BatchTransform, fit_pipeline_streaming, log_hvg_streaming, transform_streaming,
    };
    if cellident_io::InputFormat::detect(&a.input)? != cellident_io::InputFormat::Parquet {
        bail!(
            "--stream reads a cellident Parquet file; convert {} first with `cellident import`",
            a.input.display()
        );
    }
    if a.method == ClusterMethod::Cicl {
        bail!(
            "--stream covers --method leiden and kmeans; CICL trains on the cells in memory \
             (drop --stream)"
        );
    }
    let file = cellident_io::ParquetDataset::open(&a.input)?;
    if file.n_cells() < 3 {
        bail!(
            "{} has {} cells; clustering needs at least 3",
            a.input.display(),
            file.n_cells()
        );
    }
    let spinner = crate::spinner(
        quiet,
        format!(
            "fitting log, HVG, {}PCA over {} cells in passes",
            if a.no_scale { "" } else { "scaling, " },
            file.n_cells()
        ),
    );
    let mut recipe = log_hvg_streaming(&file, 2000)?;
    // The in-memory recipe's component count (PipelineParams::log_hvg_pca).
    let n_pcs = a.n_pcs.min(file.n_cells() - 1).min(file.n_genes()).max(1);
    recipe.scale = (!a.no_scale).then_some(Some(10.0));
    recipe.pca = Some(PcaParams {
        n_components: n_pcs,
        seed: a.seed,
        ..Default::default()
    });
    let pipeline = fit_pipeline_streaming(&file, &recipe)
        .with_context(|| format!("preprocessing {} (log, HVG, PCA)", a.input.display()))?;
    let transform = BatchTransform::new(&pipeline, file.gene_ids(), 1.0)?;
    let scored = transform_streaming(&file, &transform)
        .with_context(|| format!("scoring the cells of {}", a.input.display()))?;
    spinner.finish_and_clear();
    Ok(scored)
}

pub fn run(a: ClusterArgs, quiet: bool) -> Result<()> {
    if a.stream {
        let (cell_ids, pcs) = streamed_pca_coordinates(&a, quiet)?;
        return cluster_and_write(&a, quiet, cell_ids, Some(pcs), None);
    }
    let data = crate::read_dataset(&a.input)?;
    if data.n_cells() < 3 {
        bail!(
            "{} has {} cells; clustering needs at least 3",
            a.input.display(),
            data.n_cells()
        );
    }
    if a.embedding.is_some() && a.method != ClusterMethod::Cicl {
        bail!("--embedding is written by --method cicl only");
    }
    // Only CICL needs the data after the PCA; the others hand it over to be transformed in place.
    let cell_ids = data.cell_ids().to_vec();
    let scale = !a.no_scale;
    let (pcs, data) = match (a.method, a.k) {
        (ClusterMethod::Cicl, Some(_)) => (None, Some(data)),
        (ClusterMethod::Cicl, None) => (
            Some(pca_coordinates(data.clone(), a.n_pcs, a.seed, scale)?),
            Some(data),
        ),
        _ => (Some(pca_coordinates(data, a.n_pcs, a.seed, scale)?), None),
    };
    cluster_and_write(&a, quiet, cell_ids, pcs, data)
}

/// Clusters the cells (their PCA coordinates `pcs` for Leiden, k-means and K's estimate; the
/// dataset itself for CICL) and writes `cell,cluster`.
fn cluster_and_write(
    a: &ClusterArgs,
    quiet: bool,
    cell_ids: Vec<String>,
    pcs: Option<DenseMatrix>,
    data: Option<ExpressionDataset>,
) -> Result<()> {
    let say = |text: String| {
        if !quiet {
            eprintln!("{text}");
        }
    };
    let scale = !a.no_scale;
    // K: given, or the number of Leiden communities.
    let needs_k = a.method != ClusterMethod::Leiden;
    let k = match (needs_k, a.k) {
        (true, Some(k)) => Some(k),
        (true, None) => {
            let x = pcs.as_ref().context("PCA coordinates")?;
            let n = leiden_labels(x, a)?
                .iter()
                .max()
                .map_or(1, |m| *m as usize + 1);
            say(format!(
                "--k not given: Leiden finds {n} communities; clustering into {n}"
            ));
            Some(n)
        }
        (false, _) => None,
    };
    let labels = match a.method {
        ClusterMethod::Leiden => leiden_labels(pcs.as_ref().context("PCA coordinates")?, a)?,
        ClusterMethod::Kmeans => {
            let x = pcs.as_ref().context("PCA coordinates")?;
            let k = k.unwrap_or(1);
            if a.minibatch {
                minibatch_kmeans(x, &MiniBatchKMeansParams::new(k, a.seed))?.labels
            } else {
                kmeans(x, &KMeansParams::new(k, a.seed))?.labels
            }
        }
        ClusterMethod::Cicl => {
            let data = data.context("the dataset")?;
            let input = cellident_cicl::prepare_input(data, scale)
                .context("preprocessing (log, HVG, scaling)")?;
            let x = &input.values;
            let mut params = CiclParams {
                seed: a.seed,
                ..CiclParams::default()
            };
            if let Some(e) = a.epochs {
                params.epochs = e;
            }
            if let Some(t) = a.temperature {
                params.temperature = t;
            }
            if let Some(p) = a.dropout {
                params.dropout = p;
            }
            if let Some(o) = a.input_offset {
                params.input_offset = o;
            }
            if let Some(n) = a.first_kmeans_pcs {
                params.first_kmeans_pcs = n;
            }
            let device: DeviceChoice = a.device.parse()?;
            let mut model = Cicl::new(params.check()?, device.device()?);
            let mut bar = crate::epoch_bar("CICL", quiet);
            let fit = model.fit(x, k.unwrap_or(1), &mut bar)?;
            if let Some(path) = &a.embedding {
                let h = &fit.embedding;
                let features = (0..h.n_cols).map(|j| format!("h{j}")).collect();
                let embedding = ExpressionDataset::from_dense(
                    &h.values,
                    input.cell_ids.clone(),
                    features,
                    Table::empty(h.n_rows),
                )?;
                cellident_io::write_parquet(path, &embedding, &ParquetWriteOptions::default())
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            fit.labels
        }
    };
    let mut text = String::from("cell,cluster\n");
    for (cell, l) in cell_ids.iter().zip(&labels) {
        let _ = writeln!(text, "{},{l}", cellident_io::csv_field(cell));
    }
    cellident_io::write_atomic(&a.output, |w| w.write_all(text.as_bytes()))
        .with_context(|| format!("cannot write {}", a.output.display()))?;
    let n_clusters = labels.iter().max().map_or(0, |m| *m as usize + 1);
    let mut sizes = vec![0usize; n_clusters];
    for &l in &labels {
        sizes[l as usize] += 1;
    }
    say(format!(
        "{} cells in {n_clusters} clusters (sizes {}); wrote {}",
        labels.len(),
        sizes
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        a.output.display()
    ));
    Ok(())
}

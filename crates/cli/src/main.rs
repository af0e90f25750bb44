//! `cellident`: import, inspect, export and preprocess expression data, train and apply a
//! cell-type classifier, cluster cells, encode them as cell identity codes, explain a
//! classifier's decisions gene by gene, evaluate predictions, and render benchmark reports.
//!
//! Exit codes: 0 success, 1 a runtime error (bad input, failed I/O), 2 a usage error (clap).
//! Errors are printed as one line on stderr: `error: <cause>: <cause>...`.

/// mimalloc instead of glibc malloc: glibc unmaps large freed tensors and faults them back in on
/// the next step, which doubled training time (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod annotate;
mod cluster;
mod embed;
mod evaluate;
mod explain;
mod preprocess;
mod report;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use cellident_io::{
    ImportOptions, InputFormat, ParquetDataset, ParquetWriteOptions, TenxVarNames,
    summarize_parquet,
};
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Parser)]
#[command(
    name = "cellident",
    version,
    about = "Turn gene-expression profiles into cell identities.",
    long_about = "cellident imports single-cell and bulk expression data into one Parquet format, \
                  and trains, applies and explains cell-identity models on it.\n\n\
                  Start with `cellident import` (10x folder, Matrix Market folder, CSV, h5ad) and \
                  `cellident inspect`."
)]
struct Cli {
    /// Worker threads for numeric work (0 = all cores).
    #[arg(long, global = true, default_value_t = 0, env = "CELLIDENT_THREADS")]
    threads: usize,
    /// Print nothing but errors (no progress spinners).
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Convert expression data into a cellident Parquet dataset.
    Import(ImportArgs),
    /// Write a Parquet dataset out as a Matrix Market folder or a dense CSV.
    Export(ExportArgs),
    /// Summarise a dataset: shape, non-zeros, value sum and type, obs columns with class counts.
    Inspect(InspectArgs),
    /// QC, normalize_total, log1p, highly variable genes, scale and PCA (scanpy-compatible).
    Preprocess(preprocess::PreprocessArgs),
    /// Train a cell-type classifier (N-ACT, ACTINN or CIC) on a labelled dataset -> checkpoint.
    Train(annotate::TrainArgs),
    /// Label cells with a trained model: cell types, probabilities, `Unassigned` below a threshold.
    Annotate(annotate::AnnotateArgs),
    /// Cell identity codes (CIC) of every cell, from a model trained here or a saved one.
    Embed(embed::EmbedArgs),
    /// Genes behind a saved classifier's decisions: IG, gradient x input or DeepLIFT rankings per class.
    Explain(explain::ExplainArgs),
    /// Cluster cells without labels: Leiden (default), PCA + k-means or CICL -> cell,cluster CSV.
    Cluster(cluster::ClusterArgs),
    /// Score predicted labels against true labels (classification and clustering metrics, JSON).
    Evaluate(evaluate::EvaluateArgs),
    /// Render a benchmark results.json as report.md with SVG figures.
    Report(report::ReportArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FormatArg {
    /// Guess from the file name or the files in the folder.
    Auto,
    /// A folder in the ../shared/datasets layout (matrix.mtx.gz rows = cells, genes.tsv.gz,
    /// cells.tsv.gz, obs.csv.gz).
    Mtx,
    /// A 10x Genomics matrix folder (matrix.mtx genes x barcodes, features.tsv, barcodes.tsv).
    #[value(name = "10x")]
    TenX,
    /// A dense CSV/TSV, cells as rows (use --transpose when genes are rows).
    Csv,
    /// An AnnData .h5ad file.
    H5ad,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum VarNamesArg {
    /// Gene symbols, made unique (scanpy's default).
    GeneSymbols,
    /// Feature ids (e.g. Ensembl).
    GeneIds,
}

#[derive(Debug, clap::Args)]
struct ImportArgs {
    /// Input file or folder.
    input: PathBuf,
    /// Output Parquet file.
    #[arg(short, long)]
    output: PathBuf,
    /// Input format.
    #[arg(long, value_enum, default_value_t = FormatArg::Auto)]
    format: FormatArg,
    /// CSV of per-cell annotations joined by cell id (first column), for 10x and CSV inputs.
    #[arg(long)]
    obs: Option<PathBuf>,
    /// The CSV has genes as rows and cells as columns.
    #[arg(long)]
    transpose: bool,
    /// h5ad: read raw/X instead of X.
    #[arg(long)]
    raw: bool,
    /// 10x: which feature column names the genes.
    #[arg(long, value_enum, default_value_t = VarNamesArg::GeneSymbols)]
    var_names: VarNamesArg,
    /// Cells per Parquet row group (the unit of streaming).
    #[arg(long, default_value_t = 1024)]
    cells_per_row_group: usize,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ExportFormat {
    /// The ../shared/datasets layout: matrix.mtx.gz (rows = cells), genes.tsv.gz, cells.tsv.gz, obs.csv.gz.
    Mtx,
    /// A folder with matrix.csv (dense, cells x genes) and obs.csv.
    Csv,
}

#[derive(Debug, clap::Args)]
struct ExportArgs {
    /// Input Parquet dataset.
    input: PathBuf,
    /// Output folder (must not exist or be empty).
    #[arg(short, long)]
    output: PathBuf,
    /// Output format.
    #[arg(long, value_enum)]
    format: ExportFormat,
}

#[derive(Debug, clap::Args)]
struct InspectArgs {
    /// Input Parquet dataset.
    input: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    cellident_tensor::set_threads(cli.threads);
    match cli.command {
        Command::Import(a) => import(a, cli.quiet),
        Command::Export(a) => export(a, cli.quiet),
        Command::Inspect(a) => inspect(a),
        Command::Preprocess(a) => preprocess::run(a, cli.quiet),
        Command::Train(a) => annotate::train(a, cli.quiet),
        Command::Annotate(a) => annotate::annotate(a, cli.quiet),
        Command::Cluster(a) => cluster::run(a, cli.quiet),
        Command::Embed(a) => embed::run(a, cli.quiet),
        Command::Explain(a) => explain::run(a, cli.quiet),
        Command::Evaluate(a) => evaluate::run(a),
        Command::Report(a) => report::run(a, cli.quiet),
    }
}

/// Reads a dataset in any format `import` understands (a cellident Parquet file included).
pub(crate) fn read_dataset(path: &Path) -> Result<cellident_io::ExpressionDataset> {
    let format = InputFormat::detect(path)?;
    cellident_io::import(path, format, &Default::default())
        .with_context(|| format!("cannot read {}", path.display()))
}

/// The cells of `data` labelled in obs column `column` (`path` names the file in errors): the
/// classes, the labelled rows and their class indices. A classifier needs two classes at least.
pub(crate) fn labelled_rows(
    data: &cellident_io::ExpressionDataset,
    column: &str,
    path: &Path,
) -> Result<(cellident_preprocess::LabelEncoder, Vec<usize>, Vec<u32>)> {
    let labels = data
        .obs()
        .labels(column)
        .with_context(|| format!("{}: the --label column", path.display()))?;
    let enc = cellident_preprocess::LabelEncoder::fit(&labels)?;
    if enc.classes.len() < 2 {
        bail!(
            "{}: column '{column}' has {} class(es); a classifier needs at least 2",
            path.display(),
            enc.classes.len()
        );
    }
    let (rows, y) = enc.labelled_rows(&labels);
    Ok((enc, rows, y))
}

/// The epoch progress bar of a training run, hidden under `--quiet`.
pub(crate) fn epoch_bar(name: &str, quiet: bool) -> cellident_tensor::progress_bar::EpochBar {
    use cellident_tensor::progress_bar::EpochBar;
    if quiet {
        EpochBar::hidden(name)
    } else {
        EpochBar::new(name)
    }
}

/// A bar counting cells through a long streamed pass.
pub(crate) fn cell_bar(quiet: bool, total: u64, message: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} cells ({per_sec}, {eta} left)")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.set_message(message.to_string());
    pb
}

pub(crate) fn spinner(quiet: bool, message: String) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.set_message(message);
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

fn import(a: ImportArgs, quiet: bool) -> Result<()> {
    let format = match a.format {
        FormatArg::Auto => InputFormat::detect(&a.input)?,
        FormatArg::Mtx => InputFormat::Mtx,
        FormatArg::TenX => InputFormat::TenX,
        FormatArg::Csv => InputFormat::Csv,
        FormatArg::H5ad => InputFormat::H5ad,
    };
    check_output_file(&a.output)?;
    let options = ImportOptions {
        obs: a.obs,
        transpose: a.transpose,
        use_raw: a.raw,
        tenx_var_names: match a.var_names {
            VarNamesArg::GeneSymbols => TenxVarNames::GeneSymbols,
            VarNamesArg::GeneIds => TenxVarNames::GeneIds,
        },
    };
    let pb = spinner(quiet, format!("reading {}", a.input.display()));
    let dataset = cellident_io::import(&a.input, format, &options)
        .with_context(|| format!("cannot import {}", a.input.display()))?;
    pb.set_message(format!("writing {}", a.output.display()));
    let write_options = ParquetWriteOptions {
        cells_per_row_group: a.cells_per_row_group,
        ..ParquetWriteOptions::default()
    };
    cellident_io::write_parquet(&a.output, &dataset, &write_options)
        .with_context(|| format!("cannot write {}", a.output.display()))?;
    pb.finish_and_clear();
    if !quiet {
        eprintln!(
            "imported {} cells x {} genes ({} non-zeros, {} obs columns) into {}",
            dataset.n_cells(),
            dataset.n_genes(),
            dataset.matrix().nnz(),
            dataset.obs().columns().len(),
            a.output.display()
        );
    }
    Ok(())
}

fn check_output_file(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.is_dir()
    {
        bail!("output folder {} does not exist", parent.display());
    }
    if path.is_dir() {
        bail!(
            "output {} is a folder; give a file name ending in .parquet",
            path.display()
        );
    }
    Ok(())
}

fn export(a: ExportArgs, quiet: bool) -> Result<()> {
    let pb = spinner(quiet, format!("reading {}", a.input.display()));
    let dataset = cellident_io::read_parquet(&a.input)
        .with_context(|| format!("cannot read {}", a.input.display()))?;
    pb.set_message(format!("writing {}", a.output.display()));
    match a.format {
        ExportFormat::Mtx => {
            let comment = format!(
                "exported by cellident {} from {}; rows = cells, columns = genes",
                env!("CARGO_PKG_VERSION"),
                a.input
                    .file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default()
            );
            cellident_io::write_mtx_folder(&a.output, &dataset, &comment)
        }
        ExportFormat::Csv => export_csv(&a.output, &dataset),
    }
    .with_context(|| format!("cannot export to {}", a.output.display()))?;
    pb.finish_and_clear();
    if !quiet {
        eprintln!(
            "exported {} cells x {} genes to {}",
            dataset.n_cells(),
            dataset.n_genes(),
            a.output.display()
        );
    }
    Ok(())
}

fn export_csv(dir: &Path, d: &cellident_io::ExpressionDataset) -> cellident_io::Result<()> {
    if dir.exists()
        && std::fs::read_dir(dir)
            .map(|mut r| r.next().is_some())
            .unwrap_or(true)
    {
        return Err(cellident_io::IoError::Format {
            path: dir.to_path_buf(),
            message: "already exists and is not empty; remove it or choose another output folder"
                .into(),
        });
    }
    std::fs::create_dir_all(dir).map_err(|e| cellident_io::IoError::Io {
        path: dir.to_path_buf(),
        source: e,
    })?;
    cellident_io::write_dense_csv(&dir.join("matrix.csv"), d)?;
    cellident_io::write_annotation_csv(&dir.join("obs.csv"), "cell", d.cell_ids(), d.obs())
}

fn inspect(a: InspectArgs) -> Result<()> {
    use std::fmt::Write as _;
    let p = ParquetDataset::open(&a.input)
        .with_context(|| format!("cannot open {}", a.input.display()))?;
    let s = summarize_parquet(&p).with_context(|| format!("cannot read {}", a.input.display()))?;
    let mut out = String::new();
    if a.json {
        out = serde_json::to_string_pretty(&s)?;
        out.push('\n');
        return print_stdout(&out);
    }
    let _ = writeln!(out, "{}", a.input.display());
    let _ = writeln!(out, "  cells       {}", s.n_cells);
    let _ = writeln!(out, "  genes       {}", s.n_genes);
    let density = s.nnz as f64 / (s.n_cells.max(1) as f64 * s.n_genes.max(1) as f64);
    let _ = writeln!(out, "  non-zeros   {} (density {:.4})", s.nnz, density);
    let _ = writeln!(out, "  value sum   {}", s.value_sum);
    if let (Some(lo), Some(hi)) = (s.value_min, s.value_max) {
        let _ = writeln!(
            out,
            "  values      {:?} in [{}, {}]",
            s.value_kind,
            readable(lo),
            readable(hi)
        );
    }
    let _ = writeln!(out, "  row groups  {}", p.n_row_groups());
    if !s.var_columns.is_empty() {
        let _ = writeln!(out, "  var         {}", s.var_columns.join(", "));
    }
    for c in &s.obs {
        let _ = write!(
            out,
            "  obs {:<20} {:<8} {} distinct",
            c.name, c.dtype, c.n_distinct
        );
        if c.n_missing > 0 {
            let _ = write!(out, ", {} missing", c.n_missing);
        }
        match (&c.class_counts, c.min, c.max) {
            (Some(counts), _, _) if counts.len() <= 30 => {
                let mut v: Vec<_> = counts.iter().collect();
                v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
                let parts: Vec<String> = v.iter().map(|(k, n)| format!("{k}: {n}")).collect();
                let _ = writeln!(out, "\n      {}", parts.join(", "));
            }
            (_, Some(lo), Some(hi)) => {
                let _ = writeln!(out, ", range [{lo}, {hi}]");
            }
            _ => {
                let _ = writeln!(out);
            }
        }
    }
    print_stdout(&out)
}

/// `v` as Display writes it, or in scientific notation when it is far from 1: FPKM tables hold
/// values like 1e-45 (the smallest positive f32), which Display spells with 45 decimals.
fn readable<T: std::fmt::Display + std::fmt::LowerExp + Into<f64> + Copy>(v: T) -> String {
    let a = v.into().abs();
    if a != 0.0 && !(1e-4..1e9).contains(&a) {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

/// Writes to stdout; a closed pipe (`cellident inspect x | head`) is not an error.
fn print_stdout(text: &str) -> Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

#[cfg(test)]
mod tests {
    use super::readable;

    #[test]
    fn readable_numbers_are_short_at_any_magnitude() {
        assert_eq!(readable(f32::from_bits(1)), "1e-45");
        assert_eq!(readable(47677.1f32), "47677.1");
        assert_eq!(readable(0.0f32), "0");
        assert_eq!(readable(-3.5f32), "-3.5");
        assert_eq!(readable(2.5e10f64), "2.5e10");
    }
}

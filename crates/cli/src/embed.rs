//! `cellident embed`: the 30-number cell identity code (CIC) of every cell — from a CIC model
//! trained here (plain autoencoder, or the classifier autoencoder with `--label`) or from a
//! saved one (`--model`, genes matched by name) — written as a table of cell ids and codes.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use cellident_cic::{Cic, CicParams};
use cellident_io::{ExpressionDataset, ParquetWriteOptions, Table};
use cellident_preprocess::pipeline::{Pipeline, PipelineParams, Prepared};
use cellident_tensor::{CheckParams, Classifier, DenseMatrix, DeviceChoice, Embedder};

#[derive(Debug, clap::Args)]
pub struct EmbedArgs {
    /// Input dataset (a cellident Parquet file, or anything `import` reads).
    input: PathBuf,
    /// Output table: Parquet (cell ids + one column per code unit, `cic_0`…) or, when the name
    /// ends in `.csv`, CSV with a `cell` column first.
    #[arg(short, long)]
    output: PathBuf,
    /// Encode with this saved CIC model instead of training one.
    #[arg(long, conflicts_with_all = ["label", "code_dim", "epochs"])]
    model: Option<PathBuf>,
    /// Train the classifier autoencoder on this obs column (cells without a value are
    /// encoded but not used for the classifier); without it, the plain autoencoder.
    #[arg(long)]
    label: Option<String>,
    /// Code size (the paper's 30).
    #[arg(long)]
    code_dim: Option<usize>,
    /// Upper bound on training epochs (CIC's default: 40).
    #[arg(long)]
    epochs: Option<usize>,
    /// Save the trained model here (`.safetensors` + `.json` sidecar) for later `--model` runs.
    #[arg(long)]
    save_model: Option<PathBuf>,
    /// Refuse data that hold fewer than this fraction of a saved model's genes.
    #[arg(long, default_value_t = 0.5)]
    min_gene_overlap: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where to run: cpu, cuda[:N], metal[:N].
    #[arg(long, default_value = "cpu")]
    device: String,
}

pub fn run(a: EmbedArgs, quiet: bool) -> Result<()> {
    let data = crate::read_dataset(&a.input)?;
    let device = a.device.parse::<DeviceChoice>()?.device()?;
    let (model, x) = match &a.model {
        Some(path) => {
            let (model, meta) = Cic::load(path, &device)
                .with_context(|| format!("cannot load the model {}", path.display()))?;
            let x =
                crate::annotate::prepare_query(&meta, path, &data, &a.input, a.min_gene_overlap)?;
            (model, x)
        }
        None => train(&a, &data, device, quiet)?,
    };
    let codes = model.embed(x.matrix())?;
    write_codes(&a.output, x.cell_ids(), &codes)?;
    if !quiet {
        eprintln!(
            "encoded {} cells into {}-number codes; wrote {}",
            codes.n_rows,
            codes.n_cols,
            a.output.display()
        );
    }
    Ok(())
}

/// Trains CIC on the cells of `data` after the standard log recipe (no HVG step: CIC keeps its
/// own top-variance genes) and saves it if asked; returns the model and its input.
fn train(
    a: &EmbedArgs,
    data: &ExpressionDataset,
    device: cellident_tensor::candle_core::Device,
    quiet: bool,
) -> Result<(Cic, ExpressionDataset)> {
    let recipe = PipelineParams::log_hvg(data, usize::MAX);
    let (pipeline, out) = Pipeline::fit(data, &recipe).context("preprocessing (log)")?;
    let Prepared::Sparse(x) = out else {
        bail!("the CIC recipe returned dense data")
    };
    let mut params = CicParams {
        seed: a.seed,
        ..CicParams::default()
    };
    if let Some(c) = a.code_dim {
        params.code_dim = c;
    }
    if let Some(e) = a.epochs {
        params.max_epochs = e;
    }
    let mut model = Cic::new(params.check()?, device);
    let mut bar = crate::epoch_bar("CIC", quiet);
    let classes = match &a.label {
        None => {
            model.fit_autoencoder(x.matrix(), &mut bar)?;
            Vec::new()
        }
        Some(column) => {
            let (enc, keep, y) = crate::labelled_rows(&x, column, &a.input)?;
            model.fit(
                &x.matrix().select_rows(&keep),
                &y,
                enc.classes.len(),
                &mut bar,
            )?;
            enc.classes
        }
    };
    if let Some(path) = &a.save_model {
        model.save(
            path,
            x.gene_ids().to_vec(),
            classes,
            serde_json::to_value(&pipeline)?,
        )?;
    }
    Ok((model, x))
}

/// Writes `[cells, code]` with the cell ids: Parquet in the canonical layout, or CSV for a
/// `.csv` name. Atomic either way.
fn write_codes(path: &Path, cells: &[String], codes: &DenseMatrix) -> Result<()> {
    let names: Vec<String> = (0..codes.n_cols).map(|j| format!("cic_{j}")).collect();
    let is_csv = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    if is_csv {
        use std::fmt::Write as _;
        let mut text = String::from("cell");
        for n in &names {
            let _ = write!(text, ",{n}");
        }
        text.push('\n');
        for (i, cell) in cells.iter().enumerate() {
            text.push_str(&cellident_io::csv_field(cell));
            for v in codes.row(i) {
                let _ = write!(text, ",{v}");
            }
            text.push('\n');
        }
        cellident_io::write_atomic(path, |w| w.write_all(text.as_bytes()))
    } else {
        let d = ExpressionDataset::from_dense(
            &codes.values,
            cells.to_vec(),
            names,
            Table::empty(codes.n_rows),
        )?;
        cellident_io::write_parquet(path, &d, &ParquetWriteOptions::default())
    }
    .with_context(|| format!("cannot write {}", path.display()))
}

//! `cellident train` (an N-ACT, ACTINN, CIC or MLP cell-type classifier from a labelled dataset, saved
//! as a checkpoint with its preprocessing) and `cellident annotate` (that model applied to new
//! data: genes matched by name, the recorded preprocessing replayed, labels with
//! probabilities and an `Unassigned` threshold).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use cellident_cic::{Cic, CicParams};
use cellident_io::{CsrMatrix, ExpressionDataset};
use cellident_metadata::{MetadataMlp, MlpParams};
use cellident_nact::{Actinn, ActinnParams, Nact, NactParams};
use cellident_preprocess::looks_like_counts;
use cellident_preprocess::pipeline::{Pipeline, PipelineParams, Prepared, Step};
use cellident_tensor::{CheckParams, Classifier, DeviceChoice, StreamingClassifier};

/// The label written for cells whose top probability is below `--min-probability`.
pub const UNASSIGNED: &str = "Unassigned";

/// The cell-type classifiers `train` builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClassifierKind {
    /// N-ACT: gene attention + projection blocks (salient genes via `cellident explain`).
    Nact,
    /// ACTINN: a 100-50-25 ReLU network, N-ACT's baseline.
    Actinn,
    /// CIC's classifier autoencoder: the class is read from the 30-number code (CIC keeps its
    /// own 1,000 most variable genes; `--n-top-genes` does not apply).
    Cic,
    /// The metadata study's deep MLP (512-256-128, dropout, early stopping), trained as
    /// cellident's default: ANOVA-F gene selection, standardisation, a 5-member ensemble.
    Mlp,
}

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Labelled training data (a cellident Parquet file, or anything `import` reads).
    input: PathBuf,
    /// Which classifier to train.
    #[arg(long, value_enum, default_value = "nact")]
    model: ClassifierKind,
    /// Obs column holding the cell types; cells without a value are left out.
    #[arg(long)]
    label: String,
    /// Output checkpoint (`.safetensors`; the sidecar `.json` beside it holds the genes, the
    /// class names and the preprocessing).
    #[arg(short, long)]
    output: PathBuf,
    /// Keep the N most variable genes (all genes when the data have fewer).
    #[arg(long, default_value_t = 2000)]
    n_top_genes: usize,
    /// Training epochs (N-ACT and ACTINN: 50; CIC and MLP: an upper bound, early stopping
    /// usually ends sooner; defaults 40 and 100).
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long, default_value_t = 12345)]
    seed: u64,
    /// Where to train: cpu, cuda[:N], metal[:N] (GPU builds need the matching feature).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Stream the training cells from a cellident Parquet file instead of reading it into
    /// memory (any model): the recipe's statistics in one pass (and the model's own: CIC's gene
    /// scaling and PCA start, the MLP's gene selection and standardisation), then mini-batches
    /// through a shuffle buffer of row groups; memory is bounded by the buffer and the model.
    /// No validation hold-out: the MLP trains a fixed number of epochs (default 20).
    #[arg(long)]
    stream: bool,
    /// With --stream: cells held in the shuffle buffer (whole row groups are read into it).
    #[arg(long, default_value_t = 65_536)]
    buffer_cells: usize,
}

#[derive(Debug, clap::Args)]
pub struct AnnotateArgs {
    /// Data to annotate (any gene order; genes are matched by name).
    input: PathBuf,
    /// Checkpoint written by `cellident train`.
    #[arg(long)]
    model: PathBuf,
    /// Output CSV: cell, prediction, probability, then one `p_<class>` column per class.
    #[arg(short, long)]
    output: PathBuf,
    /// Cells whose top probability is below this get the label `Unassigned` (0 = off).
    #[arg(long, default_value_t = 0.0)]
    min_probability: f64,
    /// Refuse data that hold fewer than this fraction of the model's genes (missing genes
    /// count as zero expression).
    #[arg(long, default_value_t = 0.5)]
    min_gene_overlap: f64,
    /// Where to run: cpu, cuda[:N], metal[:N].
    #[arg(long, default_value = "cpu")]
    device: String,
}

pub fn train(a: TrainArgs, quiet: bool) -> Result<()> {
    if a.stream {
        return train_streaming(a, quiet);
    }
    let data = crate::read_dataset(&a.input)?;
    let (enc, keep, y) = crate::labelled_rows(&data, &a.label, &a.input)?;
    let d = data.select_cells(&keep)?;
    // CIC selects its own top-variance genes inside the model.
    let n_top = if a.model == ClassifierKind::Cic {
        usize::MAX
    } else {
        a.n_top_genes
    };
    let recipe = PipelineParams::log_hvg(&d, n_top);
    let (pipeline, out) = Pipeline::fit(&d, &recipe).context("preprocessing (log, HVG)")?;
    let Prepared::Sparse(p) = out else {
        bail!("the N-ACT recipe returned dense data")
    };
    let device = a.device.parse::<DeviceChoice>()?.device()?;
    let genes = p.gene_ids().to_vec();
    let recorded = serde_json::to_value(&pipeline)?;
    let (name, mut model) = build_classifier(&a, device, false)?;
    let mut bar = crate::epoch_bar(name, quiet);
    let report = model.fit(p.matrix(), &y, enc.classes.len(), &mut bar)?;
    model.save_to(&a.output, genes, enc.classes.clone(), recorded)?;
    if !quiet {
        let train_acc = cellident_metrics::accuracy(&y, &model.predict(p.matrix())?)?;
        eprintln!(
            "trained {name} on {} of {} cells ({} types, {} genes; final loss {:.4}, training \
             accuracy {train_acc:.3}); wrote {}",
            y.len(),
            data.n_cells(),
            enc.classes.len(),
            p.n_genes(),
            report.epochs.last().map_or(f32::NAN, |e| e.train_loss),
            a.output.display()
        );
    }
    Ok(())
}

/// Epochs of the metadata MLP when streamed without `--epochs`: there is no validation
/// hold-out to stop early, and every epoch is a pass over the file per ensemble member.
const STREAMED_MLP_EPOCHS: usize = 20;

/// The classifier `a` asks for, with its defaults, `--seed`, and `--epochs` in its epoch
/// field when given. `streamed`: the settings a stream needs (no validation hold-out; the
/// MLP's epoch count capped).
fn build_classifier(
    a: &TrainArgs,
    device: cellident_tensor::candle_core::Device,
    streamed: bool,
) -> Result<(&'static str, Box<dyn TrainableClassifier>)> {
    macro_rules! params {
        ($params:ty, $epochs:ident) => {{
            let mut p = <$params>::default();
            p.seed = a.seed;
            if let Some(e) = a.epochs {
                p.$epochs = e;
            }
            p
        }};
    }
    Ok(match a.model {
        ClassifierKind::Nact => (
            "N-ACT",
            Box::new(Nact::new(params!(NactParams, epochs).check()?, device)),
        ),
        ClassifierKind::Actinn => (
            "ACTINN",
            Box::new(Actinn::new(params!(ActinnParams, epochs), device)?),
        ),
        ClassifierKind::Cic => (
            "CIC",
            Box::new(Cic::new(params!(CicParams, max_epochs).check()?, device)),
        ),
        ClassifierKind::Mlp => {
            let mut p = params!(MlpParams, max_epochs);
            if streamed {
                p.validation_fraction = 0.0;
                if a.epochs.is_none() {
                    p.max_epochs = STREAMED_MLP_EPOCHS;
                }
            }
            ("MLP", Box::new(MetadataMlp::new(p, device)?))
        }
    })
}

/// `train --stream`: any classifier from a Parquet file that is never read whole.
fn train_streaming(a: TrainArgs, quiet: bool) -> Result<()> {
    use cellident_preprocess::stream::{
        BatchTransform, ParquetBatchSource, fit_pipeline_streaming, log_hvg_streaming,
    };
    if cellident_io::InputFormat::detect(&a.input)? != cellident_io::InputFormat::Parquet {
        bail!(
            "--stream reads a cellident Parquet file; convert {} first with `cellident import`",
            a.input.display()
        );
    }
    let file = cellident_io::ParquetDataset::open(&a.input)?;
    let spinner = crate::spinner(
        quiet,
        format!("fitting the preprocessing over {} cells", file.n_cells()),
    );
    // CIC selects its own top-variance genes inside the model (as in memory).
    let n_top = if a.model == ClassifierKind::Cic {
        usize::MAX
    } else {
        a.n_top_genes
    };
    let recipe = log_hvg_streaming(&file, n_top)?;
    let pipeline = fit_pipeline_streaming(&file, &recipe)
        .with_context(|| format!("preprocessing {} (log, HVG)", a.input.display()))?;
    spinner.finish_and_clear();
    let transform = BatchTransform::new(&pipeline, file.gene_ids(), 1.0)?;
    let genes = match pipeline.steps.last() {
        Some(Step::SelectGenes { genes }) => genes.clone(),
        _ => file.gene_ids().to_vec(),
    };
    let mut source = ParquetBatchSource::new(file, transform, &a.label, a.buffer_cells, a.seed)
        .with_context(|| format!("{}: the --label column", a.input.display()))?;
    let classes = source.classes().classes.clone();
    if classes.len() < 2 {
        bail!(
            "{}: column '{}' has {} class(es); a classifier needs at least 2",
            a.input.display(),
            a.label,
            classes.len()
        );
    }
    let device = a.device.parse::<DeviceChoice>()?.device()?;
    let recorded = serde_json::to_value(&pipeline)?;
    let (name, mut model) = build_classifier(&a, device, true)?;
    let mut bar = crate::epoch_bar(name, quiet);
    let report = model.fit_source(&mut source, classes.len(), &mut bar)?;
    model.save_to(&a.output, genes.clone(), classes.clone(), recorded)?;
    if !quiet {
        eprintln!(
            "trained {name} on {} streamed cells ({} types, {} genes; {:.0} s, final loss {:.4}); \
             wrote {}",
            cellident_tensor::BatchSource::n_cells(&source),
            classes.len(),
            genes.len(),
            report.seconds,
            report.epochs.last().map_or(f32::NAN, |e| e.train_loss),
            a.output.display()
        );
    }
    Ok(())
}

/// A classifier `train` builds: fitted in memory or from a stream, then saved.
trait TrainableClassifier: StreamingClassifier + SavableClassifier {}
impl<T: StreamingClassifier + SavableClassifier> TrainableClassifier for T {}

/// A classifier `train` can write and `annotate` can read back.
trait SavableClassifier: Classifier {
    fn save_to(
        &self,
        path: &Path,
        genes: Vec<String>,
        labels: Vec<String>,
        preprocessing: serde_json::Value,
    ) -> cellident_tensor::Result<()>;
}

/// Every model `train` offers has an inherent `save` with this signature.
macro_rules! savable_by_inherent_save {
    ($($model:ty),+) => {$(
        impl SavableClassifier for $model {
            fn save_to(
                &self,
                path: &Path,
                genes: Vec<String>,
                labels: Vec<String>,
                preprocessing: serde_json::Value,
            ) -> cellident_tensor::Result<()> {
                self.save(path, genes, labels, preprocessing)
            }
        }
    )+};
}

savable_by_inherent_save!(Nact, Actinn, Cic, MetadataMlp);

/// Loads a classifier checkpoint written by `cellident train`, whichever model it holds.
fn load_classifier(
    path: &Path,
    device: &cellident_tensor::candle_core::Device,
) -> Result<(Box<dyn Classifier>, cellident_tensor::CheckpointMeta)> {
    let kind = cellident_tensor::read_checkpoint_meta(path)?.model_kind;
    Ok(match kind.as_str() {
        "nact" => {
            let (m, meta) = Nact::load(path, device)?;
            (Box::new(m), meta)
        }
        "actinn" => {
            let (m, meta) = Actinn::load(path, device)?;
            (Box::new(m), meta)
        }
        "mlp" => {
            let (m, meta) = MetadataMlp::load(path, device)?;
            (Box::new(m), meta)
        }
        "cic" => {
            let (m, meta) = Cic::load(path, device)?;
            if meta.labels.is_empty() {
                bail!(
                    "{} is a CIC autoencoder trained without labels; train the classifier \
                     autoencoder (`cellident train --model cic --label COLUMN`) to annotate",
                    path.display()
                );
            }
            (Box::new(m), meta)
        }
        other => bail!(
            "{} holds a '{other}' model; annotate takes a classifier written by \
             `cellident train` (nact, actinn, cic or mlp)",
            path.display()
        ),
    })
}

/// `data` as a saved model sees it: the value kind checked against the model's recorded
/// preprocessing, that preprocessing replayed, and the genes matched by name to the model's
/// input genes (missing genes are zeros; below `min_overlap` of them present is an error).
pub(crate) fn prepare_query(
    meta: &cellident_tensor::CheckpointMeta,
    model_path: &Path,
    data: &ExpressionDataset,
    data_path: &Path,
    min_overlap: f64,
) -> Result<ExpressionDataset> {
    let pipeline: Pipeline =
        serde_json::from_value(meta.preprocessing.clone()).with_context(|| {
            format!(
                "{}: the recorded preprocessing is unreadable",
                model_path.display()
            )
        })?;
    check_value_kind(&pipeline, data.matrix(), data_path)?;
    let Prepared::Sparse(p) = pipeline.apply(data, min_overlap).with_context(|| {
        format!(
            "preprocessing {} as the model was trained",
            data_path.display()
        )
    })?
    else {
        bail!("the model's preprocessing returned dense data")
    };
    // The recorded gene selection already puts the genes in the model's order; without one
    // (a model trained on all genes) this is where the query's genes are matched by name.
    let (p, _) = p
        .align_to_genes(&meta.genes, min_overlap)
        .with_context(|| {
            format!(
                "{} does not hold enough of the model's {} genes",
                data_path.display(),
                meta.genes.len()
            )
        })?;
    Ok(p)
}

/// The preprocessing a model recorded must fit the query's values: a model trained from counts
/// normalises and logs, so it needs counts; a model trained on log values cannot take counts.
fn check_value_kind(pipeline: &Pipeline, data: &CsrMatrix, path: &Path) -> Result<()> {
    let wants_counts = pipeline
        .steps
        .iter()
        .any(|s| matches!(s, Step::NormalizeTotal { .. }));
    let counts = looks_like_counts(data);
    if wants_counts && !counts {
        bail!(
            "{}: the model was trained on raw counts (it normalises and logs them), but these \
             values are not counts; annotate the raw count matrix",
            path.display()
        );
    }
    if !wants_counts && counts {
        bail!(
            "{}: these values look like raw counts, but the model was trained on log-normalised \
             values; normalise to 1e4 per cell and log1p first (`cellident preprocess \
             --normalize-total 1e4 --log1p`)",
            path.display()
        );
    }
    Ok(())
}

pub fn annotate(a: AnnotateArgs, quiet: bool) -> Result<()> {
    if !(0.0..=1.0).contains(&a.min_probability) {
        bail!(
            "--min-probability {} is not a probability in [0, 1]",
            a.min_probability
        );
    }
    let device: DeviceChoice = a.device.parse()?;
    let (model, meta) = load_classifier(&a.model, &device.device()?)
        .with_context(|| format!("cannot load the model {}", a.model.display()))?;
    if let Some(transform) = streamable(&meta, &a)? {
        return annotate_streaming(&a, model.as_ref(), &meta, transform, quiet);
    }
    let data = crate::read_dataset(&a.input)?;
    let p = prepare_query(&meta, &a.model, &data, &a.input, a.min_gene_overlap)?;
    let proba = model.predict_proba(p.matrix())?;
    let classes = &meta.labels;
    let mut text = prediction_header(classes);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    prediction_rows(
        &mut text,
        p.cell_ids(),
        &proba,
        classes,
        a.min_probability,
        &mut counts,
    );
    cellident_io::write_atomic(&a.output, |w| w.write_all(text.as_bytes()))
        .with_context(|| format!("cannot write {}", a.output.display()))?;
    if !quiet {
        let missing = cellident_io::align_genes(&meta.genes, data.gene_ids(), 0.0)?
            .missing
            .len();
        eprintln!(
            "annotated {} cells ({missing} of the model's {} genes missing, taken as zero): {}; \
             wrote {}",
            p.n_cells(),
            meta.genes.len(),
            counts
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", "),
            a.output.display()
        );
    }
    Ok(())
}

/// The CSV header of a prediction file.
fn prediction_header(classes: &[String]) -> String {
    let mut text = String::from("cell,prediction,probability");
    for c in classes {
        let _ = write!(text, ",{}", cellident_io::csv_field(&format!("p_{c}")));
    }
    text.push('\n');
    text
}

/// Appends one CSV row per cell (`Unassigned` below `min_probability`) and counts the labels.
fn prediction_rows(
    text: &mut String,
    cells: &[String],
    proba: &cellident_tensor::DenseMatrix,
    classes: &[String],
    min_probability: f64,
    counts: &mut BTreeMap<String, usize>,
) {
    for (i, cell) in cells.iter().enumerate() {
        let row = proba.row(i);
        let (best, top) = row
            .iter()
            .enumerate()
            .fold((0, f32::MIN), |b, (j, &v)| if v > b.1 { (j, v) } else { b });
        let label = if (top as f64) < min_probability {
            UNASSIGNED
        } else {
            classes[best].as_str()
        };
        *counts.entry(label.to_string()).or_default() += 1;
        let _ = write!(
            text,
            "{},{},{top}",
            cellident_io::csv_field(cell),
            cellident_io::csv_field(label)
        );
        for v in row {
            let _ = write!(text, ",{v}");
        }
        text.push('\n');
    }
}

/// For a cellident Parquet input and a model whose preprocessing is sparse (normalise, log,
/// gene selection: N-ACT, ACTINN), the batch transform that streams it; `None` reads the input
/// into memory instead.
fn streamable(
    meta: &cellident_tensor::CheckpointMeta,
    a: &AnnotateArgs,
) -> Result<
    Option<(
        cellident_io::ParquetDataset,
        cellident_preprocess::stream::BatchTransform,
    )>,
> {
    if cellident_io::InputFormat::detect(&a.input)? != cellident_io::InputFormat::Parquet {
        return Ok(None);
    }
    let Ok(mut pipeline) = serde_json::from_value::<Pipeline>(meta.preprocessing.clone()) else {
        return Ok(None);
    };
    // The model's own gene order, whether or not its recipe selected genes.
    pipeline
        .steps
        .retain(|s| !matches!(s, Step::SelectGenes { .. }));
    pipeline.steps.push(Step::SelectGenes {
        genes: meta.genes.clone(),
    });
    let file = cellident_io::ParquetDataset::open(&a.input)?;
    match cellident_preprocess::stream::BatchTransform::new(
        &pipeline,
        file.gene_ids(),
        a.min_gene_overlap,
    ) {
        Ok(t) => Ok(Some((file, t))),
        Err(cellident_preprocess::PreprocessError::InvalidParam { .. }) => Ok(None),
        Err(e) => Err(e).with_context(|| {
            format!(
                "{} does not hold enough of the model's {} genes",
                a.input.display(),
                meta.genes.len()
            )
        }),
    }
}

/// Annotates a Parquet file batch by batch: memory is one batch of cells and its
/// probabilities; the CSV is written to a temporary file and renamed when complete.
fn annotate_streaming(
    a: &AnnotateArgs,
    model: &dyn Classifier,
    meta: &cellident_tensor::CheckpointMeta,
    (file, transform): (
        cellident_io::ParquetDataset,
        cellident_preprocess::stream::BatchTransform,
    ),
    quiet: bool,
) -> Result<()> {
    let pipeline: Pipeline = serde_json::from_value(meta.preprocessing.clone())?;
    let classes = &meta.labels;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let bar = crate::cell_bar(quiet, file.n_cells() as u64, "annotating");
    let mut failure: Option<anyhow::Error> = None;
    let written = cellident_io::write_atomic(&a.output, |w| {
        w.write_all(prediction_header(classes).as_bytes())?;
        let mut run = || -> Result<()> {
            for batch in file.batches(4096, true)? {
                let b = batch?;
                let range = b.first_cell..b.first_cell + b.cell_ids.len();
                check_value_kind(&pipeline, &b.matrix, &a.input)
                    .with_context(|| format!("cells {}..{}", range.start, range.end))?;
                let x = transform.apply(b.matrix).with_context(|| {
                    format!(
                        "{}, cells {}..{}",
                        a.input.display(),
                        range.start,
                        range.end
                    )
                })?;
                let proba = model.predict_proba(&x)?;
                let mut text = String::new();
                prediction_rows(
                    &mut text,
                    &b.cell_ids,
                    &proba,
                    classes,
                    a.min_probability,
                    &mut counts,
                );
                w.write_all(text.as_bytes())?;
                bar.inc(b.cell_ids.len() as u64);
            }
            Ok(())
        };
        if let Err(e) = run() {
            failure = Some(e);
            return Err(std::io::Error::other("annotation stopped"));
        }
        Ok(())
    });
    bar.finish_and_clear();
    if let Some(e) = failure {
        return Err(e);
    }
    written.with_context(|| format!("cannot write {}", a.output.display()))?;
    if !quiet {
        eprintln!(
            "annotated {} streamed cells: {}; wrote {}",
            file.n_cells(),
            counts
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", "),
            a.output.display()
        );
    }
    Ok(())
}

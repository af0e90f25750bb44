//! `cellident explain`: which genes drive a saved classifier's decisions — integrated
//! gradients, gradient × input or DeepLIFT attributions of each cell's class logit, averaged
//! per class into ranked gene tables (`class,rank,gene,score`).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use cellident_cic::Cic;
use cellident_explain::{
    Attributions, Ranking, Reference, deeplift, gradient_x_input, integrated_gradients, rank_genes,
    rankings_csv,
};
use cellident_metadata::MetadataMlp;
use cellident_nact::{Actinn, Nact};
use cellident_tensor::{
    CheckpointMeta, Classifier, DeviceChoice, DifferentiableClassifier, FeedForward,
    read_checkpoint_meta,
};
use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExplainMethod {
    /// Integrated gradients from the reference to each cell (completeness: the attributions of
    /// a cell sum to its logit minus the reference's).
    Ig,
    /// Gradient × input: fast, first order.
    GradXInput,
    /// DeepLIFT-Rescale (feed-forward models: ACTINN, CIC's classifier, the MLP).
    Deeplift,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RankingArg {
    /// Genes that push cells towards their class, largest mean attribution first.
    Signed,
    /// Genes that move the class logit either way (mean absolute attribution).
    Absolute,
}

#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// Cells to explain (any gene order; genes are matched by name).
    input: PathBuf,
    /// A classifier saved by `cellident train` or `cellident embed --label` (CIC).
    #[arg(long)]
    model: PathBuf,
    /// Output CSV: class, rank, gene, score.
    #[arg(short, long)]
    output: PathBuf,
    #[arg(long, value_enum, default_value_t = ExplainMethod::Ig)]
    method: ExplainMethod,
    /// Explain each cell's class in this obs column (cells whose value is not one of the
    /// model's classes are skipped); without it, the model's predicted class.
    #[arg(long)]
    label: Option<String>,
    /// Genes per class in the table.
    #[arg(long, default_value_t = 25)]
    top: usize,
    #[arg(long, value_enum, default_value_t = RankingArg::Signed)]
    ranking: RankingArg,
    /// Integrated gradients: trapezoid steps along the path.
    #[arg(long, default_value_t = 32)]
    steps: usize,
    /// Refuse data that hold fewer than this fraction of the model's genes.
    #[arg(long, default_value_t = 0.5)]
    min_gene_overlap: f64,
    /// Where to run: cpu, cuda[:N], metal[:N].
    #[arg(long, default_value = "cpu")]
    device: String,
}

const NO_DEEPLIFT: &str = "DeepLIFT needs a feed-forward model (ACTINN, CIC or MLP); N-ACT's \
                           attention is explained with --method ig or grad-x-input";

/// The saved classifiers `explain` understands.
enum Model {
    Nact(Nact),
    Actinn(Actinn),
    Cic(Cic),
    Mlp(MetadataMlp),
}

fn load(
    a: &ExplainArgs,
    device: &cellident_tensor::candle_core::Device,
) -> Result<(Model, CheckpointMeta)> {
    let cant = || format!("cannot load the model {}", a.model.display());
    // The sidecar says which model the weights belong to.
    let kind = read_checkpoint_meta(&a.model)?.model_kind;
    match kind.as_str() {
        "nact" => {
            let (m, meta) = Nact::load(&a.model, device).with_context(cant)?;
            Ok((Model::Nact(m), meta))
        }
        "actinn" => {
            let (m, meta) = Actinn::load(&a.model, device).with_context(cant)?;
            Ok((Model::Actinn(m), meta))
        }
        "mlp" => {
            let (m, meta) = MetadataMlp::load(&a.model, device).with_context(cant)?;
            Ok((Model::Mlp(m), meta))
        }
        "cic" => {
            let (m, meta) = Cic::load(&a.model, device).with_context(cant)?;
            if meta.labels.is_empty() {
                bail!(
                    "{} is a plain CIC autoencoder without a classifier; train one with \
                     `cellident embed --label COLUMN --save-model ...`",
                    a.model.display()
                );
            }
            Ok((Model::Cic(m), meta))
        }
        other => bail!(
            "{} holds a '{other}' model; explain takes the classifiers of `cellident train` \
             (nact, actinn, cic, mlp) or a CIC classifier of `cellident embed --label`",
            a.model.display()
        ),
    }
}

pub fn run(a: ExplainArgs, quiet: bool) -> Result<()> {
    let device = a.device.parse::<DeviceChoice>()?.device()?;
    let (model, meta) = load(&a, &device)?;
    // One view of the model per use: predictions, gradients, and the layer list DeepLIFT walks
    // (N-ACT's attention is not a feed-forward layer).
    let (classifier, differentiable, feed_forward): (
        &dyn Classifier,
        &dyn DifferentiableClassifier,
        Option<&dyn FeedForward>,
    ) = match &model {
        Model::Nact(m) => (m, m, None),
        Model::Actinn(m) => (m, m, Some(m)),
        Model::Cic(m) => (m, m, Some(m)),
        Model::Mlp(m) => (m, m, Some(m)),
    };
    if a.method == ExplainMethod::Deeplift && feed_forward.is_none() {
        bail!("{NO_DEEPLIFT}");
    }
    let data = crate::read_dataset(&a.input)?;
    let x = crate::annotate::prepare_query(&meta, &a.model, &data, &a.input, a.min_gene_overlap)?;
    // Which class each cell's attribution explains, and which cells take part.
    let (rows, targets): (Vec<usize>, Vec<u32>) = match &a.label {
        Some(column) => {
            let labels = x
                .obs()
                .labels(column)
                .with_context(|| format!("{}: the --label column", a.input.display()))?;
            labels
                .iter()
                .enumerate()
                .filter_map(|(i, l)| {
                    let c = meta.labels.iter().position(|m| Some(m) == l.as_ref())?;
                    Some((i, c as u32))
                })
                .unzip()
        }
        None => classifier
            .predict(x.matrix())?
            .into_iter()
            .enumerate()
            .unzip(),
    };
    if rows.is_empty() {
        bail!(
            "{}: no cell carries one of the model's classes ({}) in the --label column",
            a.input.display(),
            meta.labels.join(", ")
        );
    }
    let xm = x.matrix().select_rows(&rows);
    // The reference is the mean profile of the explained cells: a checkpoint keeps no
    // training mean, and the mean of the data at hand is what DeepLIFT users usually take.
    let reference = Reference::mean_of(&xm);
    let attributions: Attributions = match (a.method, feed_forward) {
        (ExplainMethod::Deeplift, Some(m)) => deeplift(m, &xm, &targets, &reference, &device)?,
        (ExplainMethod::Deeplift, None) => bail!("{NO_DEEPLIFT}"),
        (ExplainMethod::Ig, _) => {
            integrated_gradients(differentiable, &xm, &targets, &reference, a.steps, &device)?
        }
        (ExplainMethod::GradXInput, _) => gradient_x_input(differentiable, &xm, &targets, &device)?,
    };
    let ranking = match a.ranking {
        RankingArg::Signed => Ranking::Signed,
        RankingArg::Absolute => Ranking::Absolute,
    };
    let table = rank_genes(
        &attributions.scores,
        &targets,
        &meta.labels,
        &meta.genes,
        a.top,
        ranking,
    )?;
    cellident_io::write_atomic(&a.output, |w| w.write_all(rankings_csv(&table).as_bytes()))
        .with_context(|| format!("cannot write {}", a.output.display()))?;
    if !quiet && a.method == ExplainMethod::GradXInput {
        eprintln!(
            "explained {} cells (gradient x input); wrote {}",
            rows.len(),
            a.output.display()
        );
    } else if !quiet {
        // Completeness (IG, DeepLIFT): each cell's attributions sum to its logit difference.
        let mut errors: Vec<f64> = (0..attributions.scores.n_rows)
            .map(|i| {
                let sum: f64 = attributions.scores.row(i).iter().map(|&v| v as f64).sum();
                let d = attributions.delta[i] as f64;
                (sum - d).abs() / d.abs().max(1e-6)
            })
            .collect();
        errors.sort_by(f64::total_cmp);
        eprintln!(
            "explained {} cells ({:?}, reference: mean of these cells; median relative \
             summation-to-delta error {:.2e}); wrote {}",
            rows.len(),
            a.method,
            errors[errors.len() / 2],
            a.output.display()
        );
    }
    Ok(())
}

//! The method registry of the benchmark: which method ids run on which task, and the code
//! that runs them. A method without an implementation yet is listed with the issue that adds it.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::Device;
use cellident_io::{CsrMatrix, ExpressionDataset};
use cellident_nact::{Actinn, ActinnParams, GeneScore, Nact, NactParams};
use cellident_preprocess::pipeline::{PipelineParams, Prepared};
use cellident_preprocess::{
    KMeansParams, LabelEncoder, LeidenParams, NeighborsParams, Pipeline, kmeans, leiden,
};
use cellident_tensor::{CheckParams, Classifier};
use serde_json::json;

use super::TaskSpec;

/// What one run (or one fold of a cross-validated run) measured.
pub struct RunOutput {
    pub metrics: BTreeMap<String, f64>,
    pub train_seconds: f64,
    pub predict_seconds: f64,
    pub config: serde_json::Value,
    /// Whether the runs are cross-validation folds.
    pub folds: bool,
    /// How the folds were made (`stratified_5fold`, `leave_one_batch_out`); `None` for one split.
    pub split: Option<String>,
}

/// Where a run may write its side outputs (rankings, tables): `<out>/<dataset>/<target>/`.
pub struct RunContext {
    pub dir: std::path::PathBuf,
    /// The suite's parameter overrides for this method (a JSON object), if any.
    pub params: Option<serde_json::Value>,
}

type Runner = fn(&ExpressionDataset, &TaskSpec, u64, &RunContext) -> Result<Vec<RunOutput>>;

pub struct Method {
    pub id: &'static str,
    pub run: Option<Runner>,
    pub pending: &'static str,
}

/// Methods of a task, in report order.
pub fn for_task(task: &str) -> Result<Vec<Method>> {
    let m = |id, run, pending| Method { id, run, pending };
    Ok(match task {
        "annotate" => vec![
            m("nact", Some(run_nact as Runner), ""),
            m("actinn", Some(run_actinn as Runner), ""),
            m("logreg", Some(run_logreg as Runner), ""),
            m("rf", Some(run_rf as Runner), ""),
        ],
        "cluster" => vec![
            m("cicl", Some(super::cluster::run_cicl as Runner), ""),
            m("leiden", Some(run_leiden as Runner), ""),
            m("kmeans", Some(run_kmeans as Runner), ""),
        ],
        "embed" => vec![
            m("cic", Some(super::embed::run_cic as Runner), ""),
            m("pca", Some(super::embed::run_pca as Runner), ""),
        ],
        "metadata" => vec![
            m("mlp", Some(super::metadata::run_mlp as Runner), ""),
            m("rf", Some(super::metadata::run_rf as Runner), ""),
        ],
        other => bail!("unknown task '{other}' (expected annotate, cluster, embed or metadata)"),
    })
}

/// `base` with the fields of the JSON object in the environment variable `var` (if set)
/// replaced: how experiments try other hyper-parameters without editing code.
pub(super) fn with_env_override<T>(base: T, var: &str) -> Result<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    with_overrides(base, None, var)
}

/// `base` with the suite's overrides (`suite`, a JSON object) and then those of the environment
/// variable `var` applied, field by field.
pub(super) fn with_overrides<T>(base: T, suite: Option<&serde_json::Value>, var: &str) -> Result<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    use anyhow::Context as _;
    let mut v = serde_json::to_value(base)?;
    let env = match std::env::var(var) {
        Ok(text) => Some(
            serde_json::from_str::<serde_json::Value>(&text)
                .with_context(|| format!("{var} is not JSON"))?,
        ),
        Err(_) => None,
    };
    for over in suite.into_iter().chain(env.as_ref()) {
        if let (Some(base), Some(over)) = (v.as_object_mut(), over.as_object()) {
            for (k, val) in over {
                base.insert(k.clone(), val.clone());
            }
        }
    }
    serde_json::from_value(v)
        .with_context(|| format!("the suite's parameters or {var} have an invalid field"))
}

/// The labels of `rows`, in that order.
pub(super) fn pick(y: &[u32], rows: &[usize]) -> Vec<u32> {
    rows.iter().map(|&i| y[i]).collect()
}

/// Labels of the cells that have one, encoded in sorted class order.
pub(super) fn labelled(
    data: &ExpressionDataset,
    column: &str,
) -> Result<(ExpressionDataset, Vec<u32>, LabelEncoder)> {
    labelled_by(data, &data.obs().labels(column)?)
}

/// The cells of `data` that have a label in `labels` (one per cell), with the labels encoded.
fn labelled_by(
    data: &ExpressionDataset,
    labels: &[Option<String>],
) -> Result<(ExpressionDataset, Vec<u32>, LabelEncoder)> {
    let enc = LabelEncoder::fit(labels)?;
    let (keep, y) = enc.labelled_rows(labels);
    let d = if keep.len() == data.n_cells() {
        data.clone()
    } else {
        data.select_cells(&keep)?
    };
    Ok((d, y, enc))
}

/// The standard recipe with 2,000 HVGs (`PipelineParams::log_hvg`).
pub(super) fn log_hvg_recipe(d: &ExpressionDataset) -> PipelineParams {
    PipelineParams::log_hvg(d, 2000)
}

fn pca_features(
    d: &ExpressionDataset,
    seed: u64,
) -> Result<(cellident_tensor::DenseMatrix, serde_json::Value)> {
    let params = PipelineParams::log_hvg_pca(d, 50, seed);
    let (_, values) = Pipeline::fit_dense(d, &params)?;
    Ok((values, serde_json::to_value(&params)?))
}

/// ARI / NMI / AMI / Hungarian accuracy of a clustering against the labels.
pub fn clustering_metrics(y: &[u32], pred: &[u32]) -> Result<BTreeMap<String, f64>> {
    let s = cellident_metrics::clustering_scores(y, pred)?;
    Ok([
        ("ari", s.ari),
        ("nmi", s.nmi),
        ("ami", s.ami),
        ("acc", s.acc),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect())
}

/// scanpy's default graph clustering: PCA-50 of the recipe, 15-neighbour UMAP graph, Leiden at
/// resolution 1. It is not told K; the number of communities it finds is in the config (the
/// K estimate offered to CICL users, docs/cicl.md).
fn run_leiden(
    data: &ExpressionDataset,
    spec: &TaskSpec,
    seed: u64,
    _ctx: &RunContext,
) -> Result<Vec<RunOutput>> {
    let (d, y, enc) = labelled(data, &spec.label)?;
    let t = Instant::now();
    let (x, prep) = pca_features(&d, seed)?;
    let neighbors = NeighborsParams::default();
    let graph = cellident_preprocess::neighbors(&x, &neighbors)?;
    let params = LeidenParams {
        seed,
        ..Default::default()
    };
    let r = leiden(&graph, &params)?;
    let train_seconds = t.elapsed().as_secs_f64();
    Ok(vec![RunOutput {
        metrics: clustering_metrics(&y, &r.labels)?,
        train_seconds,
        predict_seconds: 0.0,
        config: json!({
            "preprocessing": prep,
            "neighbors": neighbors,
            "leiden": params,
            "n_clusters": r.n_communities,
            "k_true": enc.classes.len(),
            "modularity": r.quality,
            "iterations": r.iterations,
            "n_cells": d.n_cells(),
        }),
        folds: false,
        split: None,
    }])
}

fn run_kmeans(
    data: &ExpressionDataset,
    spec: &TaskSpec,
    seed: u64,
    _ctx: &RunContext,
) -> Result<Vec<RunOutput>> {
    let (d, y, enc) = labelled(data, &spec.label)?;
    let t = Instant::now();
    let (x, prep) = pca_features(&d, seed)?;
    let k = enc.classes.len();
    let r = kmeans(&x, &KMeansParams::new(k, seed))?;
    let train_seconds = t.elapsed().as_secs_f64();
    Ok(vec![RunOutput {
        metrics: clustering_metrics(&y, &r.labels)?,
        train_seconds,
        predict_seconds: 0.0,
        config: json!({"preprocessing": prep, "k": k, "n_init": 10, "n_cells": d.n_cells()}),
        folds: false,
        split: None,
    }])
}

/// The annotation recipe of anchors.md §A: counts are normalised to 1e4 and logged (logged data
/// used as they are), then the top 2000 `seurat` HVGs (all genes when fewer); the anchors'
/// stratified 80/20 split (scikit-learn's, random_state 0).
struct AnnotationData {
    xtr: CsrMatrix,
    ytr: Vec<u32>,
    xte: CsrMatrix,
    yte: Vec<u32>,
    /// All labelled cells after preprocessing, with their labels (for salient genes).
    all: ExpressionDataset,
    y: Vec<u32>,
    classes: Vec<String>,
    config: serde_json::Value,
}

/// The labelled cells of `column` for a stratified train/test split: classes with fewer than
/// `min_cells` cells cannot be on both sides of it (scikit-learn's `train_test_split` refuses
/// them), so their cells are left out, with a warning; the left-out classes come back as
/// `(class, cells)` for the run's config.
pub(super) fn labelled_for_split(
    data: &ExpressionDataset,
    column: &str,
    min_cells: usize,
) -> Result<SplitLabels> {
    let mut labels = data.obs().labels(column)?;
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for l in labels.iter().flatten() {
        *counts.entry(l.as_str()).or_default() += 1;
    }
    let dropped: Vec<(String, usize)> = counts
        .iter()
        .filter(|&(_, &n)| n < min_cells)
        .map(|(&c, &n)| (c.to_string(), n))
        .collect();
    if !dropped.is_empty() {
        let kept = counts.len() - dropped.len();
        if kept < 2 {
            bail!(
                "column '{column}' has {kept} class(es) with at least {min_cells} cells; a classifier needs 2"
            );
        }
        let named: Vec<String> = dropped
            .iter()
            .map(|(c, n)| format!("'{c}' ({n} cell(s))"))
            .collect();
        eprintln!(
            "warning: leaving out the classes of '{column}' with fewer than {min_cells} cells, which a stratified split cannot place: {}",
            named.join(", ")
        );
        for l in labels.iter_mut() {
            if l.as_ref()
                .is_some_and(|c| dropped.iter().any(|(d, _)| d == c))
            {
                *l = None;
            }
        }
    }
    let (d, y, enc) = labelled_by(data, &labels)?;
    Ok(SplitLabels {
        data: d,
        y,
        enc,
        dropped,
    })
}

/// The labelled cells of [`labelled_for_split`].
pub(super) struct SplitLabels {
    /// The cells kept: labelled, of a class with enough cells.
    data: ExpressionDataset,
    /// Their class numbers, in `enc`'s classes.
    y: Vec<u32>,
    enc: LabelEncoder,
    /// `(class, cells)` of each class left out.
    dropped: Vec<(String, usize)>,
}

fn annotation_split(data: &ExpressionDataset, spec: &TaskSpec) -> Result<AnnotationData> {
    let SplitLabels {
        data: d,
        y,
        enc,
        dropped,
    } = labelled_for_split(data, &spec.label, 2)?;
    let params = log_hvg_recipe(&d);
    let (_, out) = Pipeline::fit(&d, &params)?;
    let Prepared::Sparse(p) = out else {
        bail!("expected sparse data")
    };
    // The anchors' split (scikit-learn's `train_test_split(stratify=y, test_size=0.2,
    // random_state=0)`, reproduced cell for cell), so that every annotation figure compares with
    // anchors.md §A on the same test cells; `CELLIDENT_SPLIT=cellident` takes cellident's own
    // seeded stratified split instead (the benchmark's split before 2026-11-22).
    let (split, result) = match std::env::var("CELLIDENT_SPLIT").ok().as_deref() {
        None | Some("sklearn") => (
            "scikit-learn train_test_split 80/20, stratified, random_state 0",
            cellident_preprocess::sklearn_stratified_split(&y, 0.2, 0),
        ),
        Some("cellident") => (
            "stratified 80/20, seed 0",
            cellident_preprocess::stratified_split(&y, 0.2, 0),
        ),
        Some(other) => bail!("CELLIDENT_SPLIT must be `sklearn` or `cellident`, got `{other}`"),
    };
    // Classes of one cell were left out above, so a split fails only when the test (or training)
    // side is too small to hold a cell of every class; the error says so in numbers.
    let (train, test) = result.with_context(|| {
        format!(
            "splitting the {} labelled cells by '{}'",
            y.len(),
            spec.label
        )
    })?;
    let mut config = json!({"preprocessing": params, "split": split, "n_genes": p.n_genes(), "n_train": train.len(), "n_test": test.len(), "classes": enc.classes});
    if !dropped.is_empty() {
        config["dropped_classes"] = json!(
            dropped
                .iter()
                .map(|(c, n)| json!({"class": c, "cells": n}))
                .collect::<Vec<_>>()
        );
    }
    Ok(AnnotationData {
        xtr: p.matrix().select_rows(&train),
        ytr: pick(&y, &train),
        xte: p.matrix().select_rows(&test),
        yte: pick(&y, &test),
        all: p,
        y,
        classes: enc.classes,
        config,
    })
}

pub(super) fn classification_metrics(truth: &[u32], pred: &[u32]) -> Result<BTreeMap<String, f64>> {
    Ok([
        ("accuracy", cellident_metrics::accuracy(truth, pred)?),
        ("macro_f1", cellident_metrics::f1_macro(truth, pred)?),
        ("weighted_f1", cellident_metrics::f1_weighted(truth, pred)?),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect())
}

fn run_classifier(
    a: &AnnotationData,
    name: &str,
    model: &mut dyn Classifier,
    model_config: serde_json::Value,
) -> Result<RunOutput> {
    let t = Instant::now();
    let mut bar = ProgressBar::new(name);
    let report = model.fit(&a.xtr, &a.ytr, a.classes.len(), &mut bar)?;
    let train_seconds = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let pred = model.predict(&a.xte)?;
    let predict_seconds = t.elapsed().as_secs_f64();
    let mut config = a.config.clone();
    config["model"] = model_config;
    // Test-set confusion matrix over every class (rows: true, columns: predicted), for the
    // report's plots.
    let k = a.classes.len();
    let mut confusion = vec![vec![0u64; k]; k];
    for (&t, &p) in a.yte.iter().zip(&pred) {
        confusion[t as usize][p as usize] += 1;
    }
    config["confusion"] = json!(confusion);
    config["loss_curve"] = json!(
        report
            .epochs
            .iter()
            .map(|e| e.train_loss)
            .collect::<Vec<_>>()
    );
    Ok(RunOutput {
        metrics: classification_metrics(&a.yte, &pred)?,
        train_seconds,
        predict_seconds,
        config,
        folds: false,
        split: None,
    })
}

fn run_nact(
    data: &ExpressionDataset,
    spec: &TaskSpec,
    seed: u64,
    ctx: &RunContext,
) -> Result<Vec<RunOutput>> {
    let a = annotation_split(data, spec)?;
    // N-ACT's recipe, then the suite's `params.nact`, then `CELLIDENT_NACT_PARAMS` (JSON).
    let params = with_overrides(
        NactParams {
            seed: 12345 + seed,
            ..NactParams::default()
        },
        ctx.params.as_ref(),
        "CELLIDENT_NACT_PARAMS",
    )?;
    let mut model = Nact::new(params.check()?, Device::Cpu);
    let mut out = run_classifier(&a, "N-ACT", &mut model, serde_json::to_value(&params)?)?;
    // Salient genes (methods.md §1.4): attention over all labelled cells, summed over the
    // correctly predicted ones of each type; beside them the Wilcoxon one-vs-rest ranking.
    let alpha = model.attention_weights(a.all.matrix())?;
    let pred = model.predict(a.all.matrix())?;
    let genes = a.all.gene_ids();
    let (sums, _) =
        cellident_nact::attention_sums(&alpha.values, genes.len(), &a.y, &pred, a.classes.len());
    let attention = cellident_nact::rank_by_attention(&sums, genes, &a.classes, 25);
    let (sums_expressed, _) = cellident_nact::attention_sums_expressed(
        &alpha.values,
        a.all.matrix(),
        &a.y,
        &pred,
        a.classes.len(),
    );
    let attention_expressed =
        cellident_nact::rank_by_attention(&sums_expressed, genes, &a.classes, 25);
    let tfidf = cellident_nact::rank_by_attention_tfidf(&sums, genes, &a.classes, 25);
    let global = cellident_nact::rank_global(&sums, genes, 50);
    let scores =
        cellident_preprocess::markers::wilcoxon_scores(a.all.matrix(), &a.y, a.classes.len())?;
    let mut wilcoxon = Vec::new();
    for (k, top) in cellident_preprocess::markers::top_genes(&scores, 25)
        .iter()
        .enumerate()
    {
        for (r, &j) in top.iter().enumerate() {
            wilcoxon.push(GeneScore {
                cell_type: a.classes[k].clone(),
                rank: r + 1,
                gene: genes[j].clone(),
                score: scores[k][j],
            });
        }
    }
    std::fs::create_dir_all(&ctx.dir)?;
    for (file, table) in [
        ("nact_salient_genes.csv", &attention),
        ("nact_salient_genes_tfidf.csv", &tfidf),
        ("nact_salient_genes_expressed.csv", &attention_expressed),
        ("nact_global_genes.csv", &global),
        ("wilcoxon_markers.csv", &wilcoxon),
    ] {
        write_ranking(&ctx.dir.join(file), table)?;
    }
    if let Some((present, hits_attention)) =
        super::markers::canonical_marker_hits(genes, &attention)
    {
        let hits_wilcoxon =
            super::markers::canonical_marker_hits(genes, &wilcoxon).map_or(0, |h| h.1);
        out.metrics
            .insert("markers_in_input".into(), present as f64);
        out.metrics
            .insert("marker_hits_attention".into(), hits_attention as f64);
        out.metrics
            .insert("marker_hits_wilcoxon".into(), hits_wilcoxon as f64);
        let hits_expressed =
            super::markers::canonical_marker_hits(genes, &attention_expressed).map_or(0, |h| h.1);
        out.metrics.insert(
            "marker_hits_attention_expressed".into(),
            hits_expressed as f64,
        );
        let hits_tfidf = super::markers::canonical_marker_hits(genes, &tfidf).map_or(0, |h| h.1);
        out.metrics
            .insert("marker_hits_attention_tfidf".into(), hits_tfidf as f64);
        // The same count for integrated gradients of each cell's true-class logit (reference:
        // the mean profile), ranked by mean attribution per type: what the trained network
        // uses, beside where its attention points.
        let reference = cellident_explain::Reference::mean_of(a.all.matrix());
        let ig = cellident_explain::integrated_gradients(
            &model,
            a.all.matrix(),
            &a.y,
            &reference,
            IG_STEPS,
            &Device::Cpu,
        )?;
        let ranked = cellident_explain::rank_genes(
            &ig.scores,
            &a.y,
            &a.classes,
            genes,
            25,
            cellident_explain::Ranking::Signed,
        )?;
        let ig_table: Vec<GeneScore> = ranked
            .into_iter()
            .map(|r| GeneScore {
                cell_type: r.class,
                rank: r.rank,
                gene: r.gene,
                score: r.score,
            })
            .collect();
        write_ranking(&ctx.dir.join("nact_integrated_gradients.csv"), &ig_table)?;
        let hits_ig = super::markers::canonical_marker_hits(genes, &ig_table).map_or(0, |h| h.1);
        out.metrics.insert("marker_hits_ig".into(), hits_ig as f64);
        let mut errors: Vec<f64> = (0..ig.scores.n_rows)
            .map(|i| {
                let sum: f64 = ig.scores.row(i).iter().map(|&v| v as f64).sum();
                (sum - ig.delta[i] as f64).abs() / (ig.delta[i] as f64).abs().max(1e-6)
            })
            .collect();
        errors.sort_by(f64::total_cmp);
        out.config["ig"] = json!({
            "steps": IG_STEPS,
            "reference": "mean profile of the labelled cells",
            "median_relative_summation_error": errors[errors.len() / 2],
        });
    }
    Ok(vec![out])
}

/// Integrated-gradient steps of the salient-gene comparison (the run's config records the
/// median summation-to-delta error they leave).
const IG_STEPS: usize = 8;

fn run_actinn(
    data: &ExpressionDataset,
    spec: &TaskSpec,
    seed: u64,
    ctx: &RunContext,
) -> Result<Vec<RunOutput>> {
    let a = annotation_split(data, spec)?;
    // ACTINN-PyTorch's recipe, then the suite's `params.actinn`, then `CELLIDENT_ACTINN_PARAMS`.
    let params = with_overrides(
        ActinnParams {
            seed: 12345 + seed,
            ..ActinnParams::default()
        },
        ctx.params.as_ref(),
        "CELLIDENT_ACTINN_PARAMS",
    )?;
    let mut model = Actinn::new(params.clone(), Device::Cpu)?;
    Ok(vec![run_classifier(
        &a,
        "ACTINN",
        &mut model,
        serde_json::to_value(&params)?,
    )?])
}

fn run_logreg(
    data: &ExpressionDataset,
    spec: &TaskSpec,
    _seed: u64,
    _ctx: &RunContext,
) -> Result<Vec<RunOutput>> {
    let a = annotation_split(data, spec)?;
    let params = cellident_baselines::LogisticRegressionParams::default();
    let mut model = cellident_baselines::LogisticRegression::new(params.clone())?;
    Ok(vec![run_classifier(
        &a,
        "logistic regression",
        &mut model,
        serde_json::to_value(&params)?,
    )?])
}

fn run_rf(
    data: &ExpressionDataset,
    spec: &TaskSpec,
    seed: u64,
    _ctx: &RunContext,
) -> Result<Vec<RunOutput>> {
    let a = annotation_split(data, spec)?;
    let params = cellident_baselines::RandomForestParams {
        seed,
        ..Default::default()
    };
    let mut model = cellident_baselines::RandomForest::new(params.clone())?;
    Ok(vec![run_classifier(
        &a,
        "random forest",
        &mut model,
        serde_json::to_value(&params)?,
    )?])
}

/// Writes a tidy ranking (`cell_type,rank,gene,score`) as CSV, atomically.
fn write_ranking(path: &std::path::Path, rows: &[GeneScore]) -> Result<()> {
    use cellident_io::csv_field as quote;
    let mut text = String::from("cell_type,rank,gene,score\n");
    for r in rows {
        text.push_str(&format!(
            "{},{},{},{}\n",
            quote(&r.cell_type),
            r.rank,
            quote(&r.gene),
            r.score
        ));
    }
    cellident_io::write_atomic(path, |w| w.write_all(text.as_bytes()))?;
    Ok(())
}

/// The progress bar of every training run in the suite.
pub(super) type ProgressBar = cellident_tensor::progress_bar::EpochBar;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The annotate task of the fixture suite on `label`, with no parameter overrides.
    fn annotate_by(label: &str) -> TaskSpec {
        TaskSpec {
            task: "annotate".into(),
            label: label.into(),
            groups: None,
            params: BTreeMap::new(),
            unseen_types: None,
        }
    }

    /// Classes too small for a stratified split are left out of the annotate task instead of
    /// failing it: pollen_simlr's fixture with class '5' cut to one cell (its 7 cells counted
    /// from obs.csv) keeps every other cell and class, and the split then goes through.
    #[test]
    fn classes_of_one_cell_are_left_out_of_the_split() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let data = cellident_io::read_mtx_folder(&root.join("fixtures/pollen_simlr")).unwrap();
        let labels = data.obs().labels("label").unwrap();
        let in_5: Vec<usize> = (0..labels.len())
            .filter(|&i| labels[i].as_deref() == Some("5"))
            .collect();
        assert_eq!(in_5.len(), 7);
        let keep: Vec<usize> = (0..labels.len())
            .filter(|i| !in_5[1..].contains(i))
            .collect();
        let data = data.select_cells(&keep).unwrap();
        let SplitLabels {
            data: d,
            y,
            enc,
            dropped,
        } = labelled_for_split(&data, "label", 2).unwrap();
        assert_eq!(dropped, vec![("5".to_string(), 1)]);
        assert_eq!(d.n_cells(), 249 - 7);
        assert_eq!(y.len(), d.n_cells());
        assert_eq!(enc.classes.len(), 10);
        assert!(!enc.classes.contains(&"5".to_string()));
        let spec = annotate_by("label");
        let a = annotation_split(&data, &spec).unwrap();
        assert_eq!(a.ytr.len() + a.yte.len(), 249 - 7);
        assert_eq!(a.config["dropped_classes"][0]["class"], "5");
        // With fewer than two classes left there is nothing to classify: an error naming the column.
        let Err(err) = labelled_for_split(&data, "label", 40) else {
            panic!("one class left must be an error")
        };
        assert!(err.to_string().contains("'label'"), "{err}");
    }

    /// A split that cannot hold every class on both sides is an error naming the column and the
    /// numbers: pollen_simlr's fixture cut to the first 2 cells of each of its 11 classes gives 22
    /// cells, of which scikit-learn's test side holds ceil(0.2 * 22) = 5, fewer than 11 classes
    /// (scikit-learn's `train_test_split` refuses it too).
    #[test]
    fn a_split_too_small_for_its_classes_names_the_column() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let data = cellident_io::read_mtx_folder(&root.join("fixtures/pollen_simlr")).unwrap();
        let labels = data.obs().labels("label").unwrap();
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let keep: Vec<usize> = (0..labels.len())
            .filter(|&i| {
                let n = seen.entry(labels[i].clone().unwrap()).or_default();
                *n += 1;
                *n <= 2
            })
            .collect();
        assert_eq!((seen.len(), keep.len()), (11, 22));
        let spec = annotate_by("label");
        let Err(err) = annotation_split(&data.select_cells(&keep).unwrap(), &spec) else {
            panic!("5 test cells cannot hold 11 classes")
        };
        assert_eq!(
            format!("{err:#}"),
            "splitting the 22 labelled cells by 'label': 17 training and 5 test rows cannot hold all 11 classes"
        );
    }

    /// Issue #7's marker bar, over initialisation seeds: on pbmc68k_reduced (the whole 700-cell
    /// dataset; the benchmark's split, scikit-learn's 80/20 with random_state 0) the default
    /// N-ACT's attention puts at least 8 of the 19 canonical PBMC markers present in the input
    /// into the top 25 of a type they mark, on average over the seeds 0-2, and never fewer than
    /// 6. Measured (2 threads): 8, 11, 8 (seeds 0-5: 8, 11, 8, 7, 5, 10; on cellident's own
    /// split 8, 9, 9, 6, 6, 10). The default before the zero start, warm-up and masking gave
    /// 8, 4, 2 on that split (mean 4.3 over six seeds); the released recipe 3 at seed 0; a
    /// Wilcoxon ranking of the same cells 17 (docs/nact.md). Counting only the attention each
    /// cell gives genes it expresses (the attention sink on unexpressed genes left out,
    /// `attention_sums_expressed`): 10, 12, 10 (seeds 0-5: 10, 12, 10, 7, 10, 11), asserted at
    /// a mean of at least 9 and at least 8 per seed.
    #[test]
    fn nact_attention_names_eight_canonical_markers_on_pbmc68k_reduced() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let data = cellident_io::read_mtx_folder(&root.join("fixtures/pbmc68k_reduced")).unwrap();
        let spec = TaskSpec {
            task: "annotate".into(),
            label: "bulk_labels".into(),
            groups: None,
            params: BTreeMap::new(),
            unseen_types: None,
        };
        let dir = std::env::temp_dir().join(format!("cellident-markers-{}", std::process::id()));
        let ctx = RunContext {
            dir: dir.clone(),
            params: None,
        };
        let (mut hits, mut hits_expressed) = (Vec::new(), Vec::new());
        for seed in 0..3 {
            let out = run_nact(&data, &spec, seed, &ctx).unwrap();
            let m = &out[0].metrics;
            eprintln!(
                "seed {seed}: markers by attention {} (expressed genes only {}), wilcoxon {}, \
                 accuracy {:.3}",
                m["marker_hits_attention"],
                m["marker_hits_attention_expressed"],
                m["marker_hits_wilcoxon"],
                m["accuracy"]
            );
            assert_eq!(m["markers_in_input"], 19.0);
            hits.push(m["marker_hits_attention"]);
            hits_expressed.push(m["marker_hits_attention_expressed"]);
        }
        let _ = std::fs::remove_dir_all(&dir);
        let mean = |h: &[f64]| h.iter().sum::<f64>() / h.len() as f64;
        assert!(
            mean(&hits) >= 8.0,
            "markers by attention per seed: {hits:?}"
        );
        assert!(hits.iter().all(|&h| h >= 6.0), "{hits:?}");
        assert!(
            mean(&hits_expressed) >= 9.0,
            "markers by attention on expressed genes per seed: {hits_expressed:?}"
        );
        assert!(
            hits_expressed.iter().all(|&h| h >= 8.0),
            "{hits_expressed:?}"
        );
    }
}

//! The method registry of the benchmark: which method ids run on which task, and the code
//! that runs them. A method without an implementation yet is listed with the issue that adds it.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Result, bail};
use candle_core::Device;
use cellident_io::{CsrMatrix, ExpressionDataset};
use cellident_nact::{Actinn, ActinnParams, Nact, NactParams};
use cellident_preprocess::pipeline::{PipelineParams, Prepared};
use cellident_preprocess::{
    HvgParams, KMeansParams, LabelEncoder, PcaParams, Pipeline, kmeans, looks_log_transformed,
};
use cellident_tensor::{CheckParams, Classifier, Progress, TrainEvent};
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
}

type Runner = fn(&ExpressionDataset, &TaskSpec, u64) -> Result<Vec<RunOutput>>;

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
            m(
                "logreg",
                None,
                "logistic-regression baseline lands with the reproduction issue",
            ),
            m(
                "rf",
                None,
                "random-forest baseline lands with the reproduction issue",
            ),
        ],
        "cluster" => vec![
            m("cicl", None, "CICL lands with the cellident-cicl issue"),
            m(
                "leiden",
                None,
                "Leiden baseline lands with the reproduction issue",
            ),
            m("kmeans", Some(run_kmeans as Runner), ""),
        ],
        "embed" => vec![
            m("cic", None, "CIC lands with the cellident-cic issue"),
            m(
                "pca",
                None,
                "PCA-30 reconstruction baseline lands with the cellident-cic issue",
            ),
        ],
        "metadata" => vec![
            m(
                "mlp",
                None,
                "the metadata MLP lands with the cellident-explain issue",
            ),
            m(
                "rf",
                None,
                "random-forest baseline lands with the cellident-explain issue",
            ),
        ],
        other => bail!("unknown task '{other}' (expected annotate, cluster, embed or metadata)"),
    })
}

/// Labels of the cells that have one, encoded in sorted class order.
fn labelled(
    data: &ExpressionDataset,
    column: &str,
) -> Result<(ExpressionDataset, Vec<u32>, LabelEncoder)> {
    let labels = data.obs().labels(column)?;
    let enc = LabelEncoder::fit(&labels)?;
    let codes = enc.transform(&labels);
    let keep: Vec<usize> = (0..codes.len()).filter(|&i| codes[i].is_some()).collect();
    let y = keep.iter().filter_map(|&i| codes[i]).collect();
    let d = if keep.len() == data.n_cells() {
        data.clone()
    } else {
        data.select_cells(&keep)?
    };
    Ok((d, y, enc))
}

/// The shared scanpy-style recipe of the clustering baselines: counts are normalised to 1e4
/// and logged, logged data are used as they are; top 2000 `seurat` HVGs; scale (clip 10); PCA 50.
fn pca_features(
    d: &ExpressionDataset,
    seed: u64,
) -> Result<(cellident_tensor::DenseMatrix, serde_json::Value)> {
    let is_counts = d
        .matrix()
        .data()
        .iter()
        .all(|v| v.fract() == 0.0 && *v >= 0.0);
    let logged = looks_log_transformed(d.matrix());
    let n_pcs = 50.min(d.n_cells() - 1).min(d.n_genes());
    let params = PipelineParams {
        normalize_total: is_counts.then_some(1e4),
        log1p: is_counts,
        hvg: (d.n_genes() > 2000 && (is_counts || logged)).then_some(HvgParams {
            n_top_genes: 2000,
            ..Default::default()
        }),
        scale: Some(Some(10.0)),
        pca: Some(PcaParams {
            n_components: n_pcs,
            seed,
            ..Default::default()
        }),
    };
    let (_, out) = Pipeline::fit(d, &params)?;
    let Prepared::Dense { values, .. } = out else {
        bail!("the PCA pipeline returned sparse data")
    };
    Ok((values, serde_json::to_value(&params)?))
}

fn run_kmeans(data: &ExpressionDataset, spec: &TaskSpec, seed: u64) -> Result<Vec<RunOutput>> {
    let (d, y, enc) = labelled(data, &spec.label)?;
    let t = Instant::now();
    let (x, prep) = pca_features(&d, seed)?;
    let k = enc.classes.len();
    let r = kmeans(&x, &KMeansParams::new(k, seed))?;
    let train_seconds = t.elapsed().as_secs_f64();
    let s = cellident_metrics::clustering_scores(&y, &r.labels)?;
    let metrics = [
        ("ari", s.ari),
        ("nmi", s.nmi),
        ("ami", s.ami),
        ("acc", s.acc),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Ok(vec![RunOutput {
        metrics,
        train_seconds,
        predict_seconds: 0.0,
        config: json!({"preprocessing": prep, "k": k, "n_init": 10, "n_cells": d.n_cells()}),
        folds: false,
    }])
}

/// The annotation recipe of anchors.md §A: counts are normalised to 1e4 and logged (logged data
/// used as they are), then the top 2000 `seurat` HVGs (all genes when fewer); stratified 80/20
/// split with seed 0. Returns (train x, train y, test x, test y, classes, config).
#[allow(clippy::type_complexity)]
fn annotation_split(
    data: &ExpressionDataset,
    spec: &TaskSpec,
) -> Result<(
    CsrMatrix,
    Vec<u32>,
    CsrMatrix,
    Vec<u32>,
    usize,
    serde_json::Value,
)> {
    let (d, y, enc) = labelled(data, &spec.label)?;
    let is_counts = d
        .matrix()
        .data()
        .iter()
        .all(|v| v.fract() == 0.0 && *v >= 0.0);
    let logged = looks_log_transformed(d.matrix());
    let params = PipelineParams {
        normalize_total: is_counts.then_some(1e4),
        log1p: is_counts,
        hvg: (d.n_genes() > 2000 && (is_counts || logged)).then_some(HvgParams {
            n_top_genes: 2000,
            ..Default::default()
        }),
        scale: None,
        pca: None,
    };
    let (_, out) = Pipeline::fit(&d, &params)?;
    let Prepared::Sparse(p) = out else {
        bail!("expected sparse data")
    };
    let (train, test) = cellident_preprocess::stratified_split(&y, 0.2, 0)?;
    let pick = |rows: &[usize]| rows.iter().map(|&i| y[i]).collect::<Vec<u32>>();
    let config = json!({"preprocessing": params, "split": "stratified 80/20, seed 0", "n_genes": p.n_genes(), "n_train": train.len(), "n_test": test.len()});
    Ok((
        p.matrix().select_rows(&train),
        pick(&train),
        p.matrix().select_rows(&test),
        pick(&test),
        enc.classes.len(),
        config,
    ))
}

fn classification_metrics(truth: &[u32], pred: &[u32]) -> Result<BTreeMap<String, f64>> {
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
    data: &ExpressionDataset,
    spec: &TaskSpec,
    name: &str,
    model: &mut dyn Classifier,
    model_config: serde_json::Value,
) -> Result<Vec<RunOutput>> {
    let (xtr, ytr, xte, yte, k, mut config) = annotation_split(data, spec)?;
    let t = Instant::now();
    let mut bar = ProgressBar::new(name);
    let report = model.fit(&xtr, &ytr, k, &mut bar)?;
    let train_seconds = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let pred = model.predict(&xte)?;
    let predict_seconds = t.elapsed().as_secs_f64();
    config["model"] = model_config;
    config["loss_curve"] = json!(
        report
            .epochs
            .iter()
            .map(|e| e.train_loss)
            .collect::<Vec<_>>()
    );
    Ok(vec![RunOutput {
        metrics: classification_metrics(&yte, &pred)?,
        train_seconds,
        predict_seconds,
        config,
        folds: false,
    }])
}

fn run_nact(data: &ExpressionDataset, spec: &TaskSpec, seed: u64) -> Result<Vec<RunOutput>> {
    let params = NactParams {
        seed: 12345 + seed,
        ..NactParams::default()
    };
    let mut model = Nact::new(params.check()?, Device::Cpu);
    run_classifier(
        data,
        spec,
        "N-ACT",
        &mut model,
        serde_json::to_value(&params)?,
    )
}

fn run_actinn(data: &ExpressionDataset, spec: &TaskSpec, seed: u64) -> Result<Vec<RunOutput>> {
    let params = ActinnParams {
        seed: 12345 + seed,
        ..ActinnParams::default()
    };
    let mut model = Actinn::new(params.clone(), Device::Cpu)?;
    run_classifier(
        data,
        spec,
        "ACTINN",
        &mut model,
        serde_json::to_value(&params)?,
    )
}

/// An indicatif progress bar over training epochs.
struct ProgressBar {
    name: String,
    bar: Option<indicatif::ProgressBar>,
}

impl ProgressBar {
    fn new(name: &str) -> Self {
        ProgressBar {
            name: name.to_string(),
            bar: None,
        }
    }
}

impl Progress for ProgressBar {
    fn event(&mut self, e: &TrainEvent) {
        match e {
            TrainEvent::Start { epochs, .. } => {
                let b = indicatif::ProgressBar::new(*epochs as u64);
                b.set_style(
                    indicatif::ProgressStyle::with_template(
                        "  {prefix} [{bar:30}] epoch {pos}/{len} {msg} ({elapsed})",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                b.set_prefix(self.name.clone());
                self.bar = Some(b);
            }
            TrainEvent::Epoch(r) => {
                if let Some(b) = &self.bar {
                    b.set_message(format!("loss {:.4}", r.train_loss));
                    b.inc(1);
                }
            }
            TrainEvent::Finish => {
                if let Some(b) = self.bar.take() {
                    b.finish_and_clear();
                }
            }
            TrainEvent::Batch { .. } => {}
        }
    }
}

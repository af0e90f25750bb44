//! The method registry of the benchmark: which method ids run on which task, and the code
//! that runs them. A method without an implementation yet is listed with the issue that adds it.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Result, bail};
use cellident_io::ExpressionDataset;
use cellident_preprocess::pipeline::{PipelineParams, Prepared};
use cellident_preprocess::{
    HvgParams, KMeansParams, LabelEncoder, PcaParams, Pipeline, kmeans, looks_log_transformed,
};
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
            m("nact", None, "N-ACT lands with the cellident-nact issue"),
            m("actinn", None, "ACTINN lands with the cellident-nact issue"),
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

//! `cellident evaluate`: every classification and clustering metric of a prediction file
//! against a label file, matched by cell id.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use cellident_io::{AnnotationCsv, Table};
use serde::Serialize;

#[derive(Debug, clap::Args)]
pub struct EvaluateArgs {
    /// File with the true labels: a cellident Parquet dataset, a Parquet table or a CSV/TSV
    /// whose first column (or `cell_id`/`cell`) holds cell ids.
    #[arg(long)]
    truth: PathBuf,
    /// File with the predicted labels (same kinds of file).
    #[arg(long)]
    pred: PathBuf,
    /// Label column of the truth file (default: its only column, or `label`).
    #[arg(long)]
    truth_column: Option<String>,
    /// Label column of the prediction file (default: its only column, or `prediction`).
    #[arg(long)]
    pred_column: Option<String>,
    /// Also compute the silhouette of the predicted labels on these coordinates (a CSV or
    /// Parquet table of cell id + numeric columns, e.g. an embedding).
    #[arg(long)]
    embedding: Option<PathBuf>,
    /// Print JSON (the default is JSON too; this flag is kept for scripts that pass it).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct PerClass {
    precision: f64,
    recall: f64,
    f1: f64,
    support: u64,
}

#[derive(Debug, Serialize)]
struct Evaluation {
    n_cells: usize,
    n_truth_only: usize,
    n_pred_only: usize,
    accuracy: f64,
    balanced_accuracy: f64,
    macro_f1: f64,
    weighted_f1: f64,
    per_class: BTreeMap<String, PerClass>,
    confusion_matrix: ConfusionMatrix,
    ari: f64,
    nmi: f64,
    ami: f64,
    /// Hungarian clustering accuracy.
    acc: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    silhouette: Option<f64>,
}

#[derive(Debug, Serialize)]
struct ConfusionMatrix {
    labels: Vec<String>,
    /// `counts[i][j]`: cells of true class `labels[i]` predicted as `labels[j]`.
    counts: Vec<Vec<u64>>,
}

fn read_table(path: &Path) -> Result<AnnotationCsv> {
    let lower = path.to_string_lossy().to_ascii_lowercase();
    if lower.ends_with(".parquet") || lower.ends_with(".pq") {
        if let Ok(d) = cellident_io::ParquetDataset::open(path) {
            let (ids, table) = d.read_obs()?;
            return Ok(AnnotationCsv {
                id_column: "cell_id".into(),
                ids,
                table,
            });
        }
        return Ok(cellident_io::read_parquet_table(path, None)?);
    }
    Ok(cellident_io::read_annotation_csv(path)?)
}

fn pick_column(t: &Table, path: &Path, asked: Option<&str>, preferred: &[&str]) -> Result<String> {
    if let Some(c) = asked {
        t.column(c).with_context(|| format!("{}", path.display()))?;
        return Ok(c.to_string());
    }
    let names = t.column_names();
    if names.len() == 1 {
        return Ok(names[0].to_string());
    }
    if let Some(p) = preferred.iter().find(|p| names.contains(p)) {
        return Ok(p.to_string());
    }
    bail!(
        "{}: which column holds the labels? pass a column name; columns: {}",
        path.display(),
        names.join(", ")
    )
}

pub fn run(a: EvaluateArgs) -> Result<()> {
    let truth =
        read_table(&a.truth).with_context(|| format!("cannot read {}", a.truth.display()))?;
    let pred = read_table(&a.pred).with_context(|| format!("cannot read {}", a.pred.display()))?;
    let tc = pick_column(
        &truth.table,
        &a.truth,
        a.truth_column.as_deref(),
        &["label", "cell_type", "truth"],
    )
    .context("--truth-column")?;
    let pc = pick_column(
        &pred.table,
        &a.pred,
        a.pred_column.as_deref(),
        &["prediction", "predicted", "label", "cluster"],
    )
    .context("--pred-column")?;
    let t_labels = truth.table.labels(&tc)?;
    let p_labels = pred.table.labels(&pc)?;
    let p_index: std::collections::HashMap<&str, usize> = pred
        .ids
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i))
        .collect();
    // Pair cells present (with a label) in both files.
    let mut names: Vec<String> = Vec::new();
    let mut pairs: Vec<(String, String, &str)> = Vec::new();
    for (i, id) in truth.ids.iter().enumerate() {
        if let (Some(t), Some(&j)) = (&t_labels[i], p_index.get(id.as_str()))
            && let Some(p) = &p_labels[j]
        {
            pairs.push((t.clone(), p.clone(), id.as_str()));
        }
    }
    if pairs.is_empty() {
        bail!(
            "no cell id of {} (with a label in '{tc}') is in {} (with a label in '{pc}'); are the id columns the same kind of id?",
            a.truth.display(),
            a.pred.display()
        );
    }
    for (t, p, _) in &pairs {
        names.push(t.clone());
        names.push(p.clone());
    }
    names.sort();
    names.dedup();
    let code = |s: &str| names.binary_search_by(|n| n.as_str().cmp(s)).unwrap_or(0) as u32;
    let y: Vec<u32> = pairs.iter().map(|(t, _, _)| code(t)).collect();
    let yhat: Vec<u32> = pairs.iter().map(|(_, p, _)| code(p)).collect();
    let report = cellident_metrics::classification_report(&y, &yhat)?;
    let (cm_labels, counts) = cellident_metrics::confusion_matrix(&y, &yhat)?;
    let clustering = cellident_metrics::clustering_scores(&y, &yhat)?;
    let silhouette = match &a.embedding {
        Some(path) => Some(silhouette(path, &pairs, &yhat)?),
        None => None,
    };
    let truth_ids: std::collections::HashSet<&str> = truth.ids.iter().map(String::as_str).collect();
    let e = Evaluation {
        n_cells: pairs.len(),
        n_truth_only: truth
            .ids
            .iter()
            .filter(|id| !p_index.contains_key(id.as_str()))
            .count(),
        n_pred_only: pred
            .ids
            .iter()
            .filter(|id| !truth_ids.contains(id.as_str()))
            .count(),
        accuracy: cellident_metrics::accuracy(&y, &yhat)?,
        balanced_accuracy: cellident_metrics::balanced_accuracy(&y, &yhat)?,
        macro_f1: cellident_metrics::f1_macro(&y, &yhat)?,
        weighted_f1: cellident_metrics::f1_weighted(&y, &yhat)?,
        per_class: report
            .labels
            .iter()
            .enumerate()
            .map(|(i, &l)| {
                (
                    names[l as usize].clone(),
                    PerClass {
                        precision: report.precision[i],
                        recall: report.recall[i],
                        f1: report.f1[i],
                        support: report.support[i],
                    },
                )
            })
            .collect(),
        confusion_matrix: ConfusionMatrix {
            labels: cm_labels
                .iter()
                .map(|&l| names[l as usize].clone())
                .collect(),
            counts,
        },
        ari: clustering.ari,
        nmi: clustering.nmi,
        ami: clustering.ami,
        acc: clustering.acc,
        silhouette,
    };
    let _ = a.json;
    crate::print_stdout(&(serde_json::to_string_pretty(&e)? + "\n"))
}

fn silhouette(path: &Path, pairs: &[(String, String, &str)], labels: &[u32]) -> Result<f64> {
    let t = read_table(path).with_context(|| format!("cannot read {}", path.display()))?;
    let index: std::collections::HashMap<&str, usize> = t
        .ids
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i))
        .collect();
    let cols: Vec<&cellident_io::Column> = t
        .table
        .columns()
        .iter()
        .filter(|c| !matches!(c.data, cellident_io::ColumnData::Text(_)))
        .collect();
    if cols.is_empty() {
        bail!(
            "{}: no numeric columns to compute a silhouette on",
            path.display()
        );
    }
    let mut points = Vec::with_capacity(pairs.len() * cols.len());
    for (_, _, id) in pairs {
        let r = *index
            .get(id)
            .with_context(|| format!("{}: cell '{id}' has no coordinates", path.display()))?;
        for c in &cols {
            let v = c.data.text(r).and_then(|s| s.parse::<f64>().ok());
            points.push(v.with_context(|| {
                format!(
                    "{}: cell '{id}', column '{}' is missing",
                    path.display(),
                    c.name
                )
            })?);
        }
    }
    Ok(cellident_metrics::silhouette_score(
        &points,
        cols.len(),
        labels,
    )?)
}

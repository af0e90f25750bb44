//! cellident-report owns the results of a benchmark run and their presentation: the
//! `results.json` records ([`Results`], schema in docs/results-schema.md), the markdown report
//! with its tables, and the SVG figures (plotters' SVG backend: metric bars, loss curves,
//! confusion matrices, salient-gene heatmaps, 2-D views). `cargo xtask reproduce` writes
//! through it and `cellident report` re-renders a results file.
//!
//! It reads the tables a run wrote beside its results and writes only into the output folder
//! it is given (atomically); it knows nothing about models or training.

pub mod figures;
pub mod plots;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use figures::{Figure, pca_view};

/// Errors of report writing.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Io(#[from] cellident_io::IoError),
    /// The cause follows in the error chain.
    #[error("{path}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading the table {path}")]
    Csv { path: PathBuf, source: csv::Error },
    #[error("{path} is not a results file")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("drawing {path} failed: {message}")]
    Draw { path: PathBuf, message: String },
    #[error(transparent)]
    Preprocess(#[from] cellident_preprocess::PreprocessError),
}

/// Result alias of cellident-report.
pub type Result<T, E = ReportError> = std::result::Result<T, E>;

/// One measured run, as written to results.json.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub dataset: String,
    pub task: String,
    pub target: String,
    pub method: String,
    pub seed: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fold: Option<usize>,
    /// How the folds were made (`stratified_5fold`, `leave_one_batch_out`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub split: Option<String>,
    pub metrics: std::collections::BTreeMap<String, f64>,
    pub train_seconds: f64,
    pub predict_seconds: f64,
    pub peak_rss_bytes: Option<u64>,
    pub config: serde_json::Value,
}

/// The whole results file.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Results {
    pub records: Vec<Record>,
    /// Method/task pairs of the suite that have no implementation yet (with the issue that adds them).
    #[serde(default)]
    pub pending: Vec<String>,
    /// Runs that stopped with an error; the rest of the suite still ran (`cargo xtask reproduce`
    /// exits non-zero when this is not empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<FailedRun>,
}

/// One run of the suite that stopped with an error, and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FailedRun {
    pub dataset: String,
    pub task: String,
    pub target: String,
    /// The method id; `None` when the dataset itself could not be read (no method ran).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub seed: Option<u64>,
    /// The error and its causes, outermost first (`anyhow`'s `{:#}`).
    pub error: String,
}

impl Results {
    /// Reads a `results.json`.
    pub fn read(path: &Path) -> Result<Results> {
        let text = std::fs::read_to_string(path).map_err(|source| ReportError::File {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| ReportError::Json {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// Draws the figures of `results` and writes `<out>/report.md` (tables, fold summaries,
/// figures, pending methods). `seconds` is the run's wall time when known. The run's side
/// tables (salient genes, 2-D views) are looked up under `out`.
pub fn write_report(results: &Results, out: &Path, seconds: Option<f64>) -> Result<()> {
    let figures = figures::make(results, out)?;
    let text = report_markdown(results, &figures, seconds);
    cellident_io::write_atomic(&out.join("report.md"), |w| w.write_all(text.as_bytes()))?;
    Ok(())
}

/// The markdown text of the report.
pub fn report_markdown(r: &Results, figures: &[Figure], seconds: Option<f64>) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "# cellident reproduction report\n");
    let took = seconds.map_or(String::new(), |t| format!(" in {t:.1} s"));
    let _ = writeln!(
        s,
        "{} records{took}. Metrics: ARI, NMI, AMI and Hungarian accuracy (`acc`) for clustering; accuracy and F1 for annotation.\n",
        r.records.len()
    );
    let mut tasks: Vec<&str> = r.records.iter().map(|x| x.task.as_str()).collect();
    tasks.sort();
    tasks.dedup();
    for task in tasks {
        let recs: Vec<&Record> = r.records.iter().filter(|x| x.task == task).collect();
        let mut keys: Vec<&String> = recs.iter().flat_map(|x| x.metrics.keys()).collect();
        keys.sort();
        keys.dedup();
        let _ = writeln!(s, "## {task}\n");
        let _ = write!(s, "| dataset | target | method | seed |");
        for k in &keys {
            let _ = write!(s, " {k} |");
        }
        let _ = writeln!(s, " train s | peak RSS MB |");
        let _ = writeln!(s, "|{}", " --- |".repeat(6 + keys.len()));
        for x in recs {
            let _ = write!(
                s,
                "| {} | {} | {} | {} |",
                x.dataset, x.target, x.method, x.seed
            );
            for k in &keys {
                match x.metrics.get(*k) {
                    Some(v) => {
                        let _ = write!(s, " {v:.3} |");
                    }
                    None => s.push_str(" - |"),
                }
            }
            let _ = writeln!(
                s,
                " {:.2} | {} |",
                x.train_seconds,
                x.peak_rss_bytes
                    .map_or("-".into(), |b| (b >> 20).to_string())
            );
        }
        s.push('\n');
    }
    let summary = fold_summary(r);
    if !summary.is_empty() {
        let _ = writeln!(s, "## Cross-validated accuracy (mean ± sd over folds)\n");
        let _ = writeln!(
            s,
            "| dataset | target | split | method | folds | accuracy | macro F1 |"
        );
        let _ = writeln!(s, "| --- | --- | --- | --- | --- | --- | --- |");
        for line in summary {
            let _ = writeln!(s, "{line}");
        }
        s.push('\n');
    }
    if !figures.is_empty() {
        let _ = writeln!(s, "## Figures\n");
        for f in figures {
            let _ = writeln!(s, "### {}\n\n![{}]({})\n", f.caption, f.caption, f.path);
        }
    }
    if !r.failed.is_empty() {
        let _ = writeln!(s, "## Failed runs\n");
        let _ = writeln!(s, "| dataset | task | target | method | seed | error |");
        let _ = writeln!(s, "| --- | --- | --- | --- | --- | --- |");
        for f in &r.failed {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} |",
                f.dataset,
                f.task,
                f.target,
                f.method.as_deref().unwrap_or("(reading the data)"),
                f.seed.map_or("-".into(), |x| x.to_string()),
                f.error.replace('|', "\\|").replace('\n', " ")
            );
        }
        s.push('\n');
    }
    if !r.pending.is_empty() {
        let _ = writeln!(s, "## Not implemented yet\n");
        for p in &r.pending {
            let _ = writeln!(s, "- {p}");
        }
    }
    s
}

/// One markdown row per (dataset, target, split, method, seed) of fold records: mean ± sd of
/// accuracy and macro F1.
fn fold_summary(r: &Results) -> Vec<String> {
    use std::collections::BTreeMap;
    type Key<'a> = (&'a str, &'a str, &'a str, &'a str, u64);
    let mut groups: BTreeMap<Key<'_>, Vec<&Record>> = BTreeMap::new();
    for x in r.records.iter().filter(|x| x.fold.is_some()) {
        let key = (
            x.dataset.as_str(),
            x.target.as_str(),
            x.split.as_deref().unwrap_or("folds"),
            x.method.as_str(),
            x.seed,
        );
        groups.entry(key).or_default().push(x);
    }
    let stat = |v: &[f64]| {
        let n = v.len() as f64;
        let m = v.iter().sum::<f64>() / n;
        let sd = if v.len() > 1 {
            (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0)).sqrt()
        } else {
            0.0
        };
        format!("{m:.3} ± {sd:.3}")
    };
    groups
        .into_iter()
        .map(|((d, t, sp, m, _), recs)| {
            let get = |k: &str| -> Vec<f64> {
                recs.iter()
                    .filter_map(|x| x.metrics.get(k).copied())
                    .collect()
            };
            format!(
                "| {d} | {t} | {sp} | {m} | {} | {} | {} |",
                recs.len(),
                stat(&get("accuracy")),
                stat(&get("macro_f1"))
            )
        })
        .collect()
}

//! `cargo xtask reproduce`: the benchmark of every method and baseline on the datasets that
//! suit it, with `results.json` (schema in docs/results-schema.md), `report.md`, and a
//! regression check against committed expected metrics.

mod check;
mod cluster;
mod embed;
mod markers;
mod metadata;
mod methods;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use cellident_io::{
    ExpressionDataset, ParquetWriteOptions, read_mtx_folder, read_parquet, write_parquet,
};
use cellident_report::FailedRun;
use serde::{Deserialize, Serialize};

pub use check::compare;

/// One task of one dataset in the suite file.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct TaskSpec {
    pub task: String,
    pub label: String,
    /// An obs column of groups (e.g. `batch`): the metadata task then also runs
    /// leave-one-group-out, the study's "completely new data set" test.
    #[serde(default)]
    pub groups: Option<String>,
    /// Per-method parameter overrides (method id -> fields of its params), e.g.
    /// `params = { cicl = { epochs = 4 } }` in the fixture suite's time budget.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub params: std::collections::BTreeMap<String, serde_json::Value>,
    /// Embed task: how many of the largest cell types are left out of training in turn in the
    /// unseen-type experiment (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unseen_types: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
struct DatasetSpec {
    name: String,
    tasks: Vec<TaskSpec>,
}

#[derive(Debug, Clone, Deserialize)]
struct Suite {
    dataset: Vec<DatasetSpec>,
}

pub use cellident_report::{Record, Results};

/// Options of a reproduction run.
#[derive(Debug, Clone)]
pub struct ReproduceOptions {
    pub data_dir: PathBuf,
    pub suite: PathBuf,
    pub out: PathBuf,
    /// Ad hoc run: one dataset folder, one task, one label column.
    pub dataset: Option<PathBuf>,
    pub task: Option<String>,
    pub label: Option<String>,
    /// Ad hoc run: obs column of groups for leave-one-group-out (metadata task).
    pub groups: Option<String>,
    /// Only these method ids (all implemented ones when empty).
    pub methods: Vec<String>,
    pub seeds: u64,
    pub check: Option<PathBuf>,
    /// Write this run's metrics as the expected values of a baseline file.
    pub write_baseline: Option<PathBuf>,
}

struct Job {
    name: String,
    folder: PathBuf,
    spec: TaskSpec,
}

fn jobs(o: &ReproduceOptions) -> Result<Vec<Job>> {
    if let Some(path) = &o.dataset {
        let (Some(task), Some(label)) = (&o.task, &o.label) else {
            bail!("--dataset needs --task and --label");
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "dataset".into());
        return Ok(vec![Job {
            name,
            folder: path.clone(),
            spec: TaskSpec {
                task: task.clone(),
                label: label.clone(),
                groups: o.groups.clone(),
                params: Default::default(),
                unseen_types: None,
            },
        }]);
    }
    let text = std::fs::read_to_string(&o.suite)
        .with_context(|| format!("cannot read the suite file {}", o.suite.display()))?;
    let suite: Suite = toml::from_str(&text)
        .with_context(|| format!("{} is not a valid suite file", o.suite.display()))?;
    let mut out = Vec::new();
    for d in suite.dataset {
        let folder = o.data_dir.join(&d.name);
        if !folder.is_dir() {
            continue;
        }
        for t in d.tasks {
            if o.task.as_ref().is_none_or(|only| *only == t.task) {
                out.push(Job {
                    name: d.name.clone(),
                    folder: folder.clone(),
                    spec: t,
                });
            }
        }
    }
    if out.is_empty() {
        bail!(
            "no dataset of {} is in {}",
            o.suite.display(),
            o.data_dir.display()
        );
    }
    Ok(out)
}

/// Loads a dataset folder through the canonical format: mtx folder -> Parquet -> memory.
fn load(job: &Job, out: &Path) -> Result<ExpressionDataset> {
    let dir = out.join("data");
    std::fs::create_dir_all(&dir)?;
    let pq = dir.join(format!("{}.parquet", job.name));
    if !pq.exists() {
        let d = read_mtx_folder(&job.folder)
            .with_context(|| format!("cannot read {}", job.folder.display()))?;
        write_parquet(&pq, &d, &ParquetWriteOptions::default())?;
    }
    Ok(read_parquet(&pq)?)
}

pub fn run(o: &ReproduceOptions) -> Result<()> {
    let started = Instant::now();
    std::fs::create_dir_all(&o.out)
        .with_context(|| format!("cannot create {}", o.out.display()))?;
    let jobs = jobs(o)?;
    let mut results = Results::default();
    println!(
        "{:<24} {:<9} {:<20} {:<8} {:>4}  metrics",
        "dataset", "task", "target", "method", "seed"
    );
    let mut cache: Option<(String, ExpressionDataset)> = None;
    for job in &jobs {
        let data = match &cache {
            Some((n, d)) if *n == job.name => d.clone(),
            _ => match load(job, &o.out) {
                Ok(d) => {
                    cache = Some((job.name.clone(), d.clone()));
                    d
                }
                Err(e) => {
                    record_failure(&mut results, job, None, None, &e);
                    continue;
                }
            },
        };
        for method in methods::for_task(&job.spec.task)? {
            if !o.methods.is_empty() && !o.methods.iter().any(|m| m == method.id) {
                continue;
            }
            let Some(runner) = method.run else {
                let note = format!(
                    "{} on {} ({}): {}",
                    method.id, job.spec.task, job.name, method.pending
                );
                results.pending.push(note);
                continue;
            };
            for seed in 0..o.seeds.max(1) {
                reset_peak_rss();
                let ctx = methods::RunContext {
                    dir: o.out.join(&job.name).join(&job.spec.label),
                    params: job.spec.params.get(method.id).cloned(),
                };
                let run = match runner(&data, &job.spec, seed, &ctx) {
                    Ok(run) => run,
                    Err(e) => {
                        record_failure(&mut results, job, Some(method.id), Some(seed), &e);
                        continue;
                    }
                };
                // Fold numbers count within each kind of split (stratified k-fold, leave-one-group-out).
                let mut next_fold: std::collections::HashMap<Option<String>, usize> =
                    Default::default();
                for r in run {
                    let counter = next_fold.entry(r.split.clone()).or_default();
                    let fold = *counter;
                    *counter += 1;
                    let record = Record {
                        dataset: job.name.clone(),
                        task: job.spec.task.clone(),
                        target: job.spec.label.clone(),
                        method: method.id.to_string(),
                        seed,
                        fold: r.folds.then_some(fold),
                        split: r.split,
                        metrics: r.metrics,
                        train_seconds: r.train_seconds,
                        predict_seconds: r.predict_seconds,
                        peak_rss_bytes: peak_rss_bytes(),
                        config: r.config,
                    };
                    let shown: Vec<String> = record
                        .metrics
                        .iter()
                        .map(|(k, v)| format!("{k}={v:.3}"))
                        .collect();
                    let fold_note = match (&record.split, record.fold) {
                        (Some(s), Some(f)) => format!("  [{s} fold {f}]"),
                        (None, Some(f)) => format!("  [fold {f}]"),
                        _ => String::new(),
                    };
                    println!(
                        "{:<24} {:<9} {:<20} {:<8} {:>4}  {}{fold_note}",
                        record.dataset,
                        record.task,
                        record.target,
                        record.method,
                        seed,
                        shown.join(" ")
                    );
                    results.records.push(record);
                }
            }
        }
    }
    results.pending.sort();
    results.pending.dedup();
    let json = serde_json::to_vec_pretty(&results)?;
    cellident_io::write_atomic(&o.out.join("results.json"), |w| w.write_all(&json))?;
    cellident_report::write_report(&results, &o.out, Some(started.elapsed().as_secs_f64()))?;
    println!(
        "\nwrote {} and {} ({:.1} s)",
        o.out.join("results.json").display(),
        o.out.join("report.md").display(),
        started.elapsed().as_secs_f64()
    );
    if !results.pending.is_empty() {
        println!(
            "{} method/task pairs of the suite are not implemented yet (listed in report.md)",
            results.pending.len()
        );
    }
    if let Some(path) = &o.write_baseline {
        let b = check::Baseline::from_results(&results, 0.02);
        let json = serde_json::to_vec_pretty(&b)?;
        cellident_io::write_atomic(path, |w| w.write_all(&json))?;
        println!(
            "wrote the expected metrics of {} records to {}",
            b.records.len(),
            path.display()
        );
    }
    if let Some(baseline) = &o.check {
        let text = std::fs::read_to_string(baseline)
            .with_context(|| format!("cannot read {}", baseline.display()))?;
        let expected: check::Baseline = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a baseline file", baseline.display()))?;
        let outcome = compare(&expected, &results);
        print!("{}", outcome.render());
        if !outcome.passed() {
            bail!("regression check against {} failed", baseline.display());
        }
        println!("regression check against {} passed", baseline.display());
    }
    if !results.failed.is_empty() {
        bail!(
            "{} run(s) failed (listed above, in results.json `failed` and in report.md)",
            results.failed.len()
        );
    }
    Ok(())
}

/// Prints a run's error and records it in `results.failed`. A failed run does not stop the suite,
/// so that one odd dataset or method does not cost the results of all the others; `run` still
/// fails at the end. `method` is `None` when the dataset itself could not be read.
fn record_failure(
    results: &mut Results,
    job: &Job,
    method: Option<&str>,
    seed: Option<u64>,
    e: &anyhow::Error,
) {
    let what = method.map_or(String::new(), |m| format!(" / {m}"));
    eprintln!("error: {} / {}{what}: {e:#}", job.name, job.spec.task);
    results.failed.push(FailedRun {
        dataset: job.name.clone(),
        task: job.spec.task.clone(),
        target: job.spec.label.clone(),
        method: method.map(str::to_string),
        seed,
        error: format!("{e:#}"),
    });
}

/// Resets this process's peak-RSS counter (Linux `clear_refs` 5), so each method's peak is its own.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// One unreadable dataset (a copy of the pollen_simlr fixture whose genes.tsv repeats a gene
    /// id) and one failing run (a label column that does not exist) are recorded in `failed`;
    /// the rest of the suite is still benchmarked, results.json and report.md are written, and
    /// the run fails at the end.
    #[test]
    fn failed_runs_are_recorded_and_the_suite_goes_on() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let fixture = root.join("fixtures/pollen_simlr");
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().join("data");
        for name in ["pollen_simlr", "pollen_broken"] {
            let dir = data_dir.join(name);
            std::fs::create_dir_all(&dir).unwrap();
            for file in [
                "matrix.mtx.gz",
                "cells.tsv.gz",
                "obs.csv.gz",
                "genes.tsv.gz",
            ] {
                std::fs::copy(fixture.join(file), dir.join(file)).unwrap();
            }
        }
        let broken = data_dir.join("pollen_broken");
        let mut genes = read_mtx_folder(&fixture).unwrap().gene_ids().to_vec();
        genes[1] = genes[0].clone();
        std::fs::remove_file(broken.join("genes.tsv.gz")).unwrap();
        cellident_io::write_lines(&broken.join("genes.tsv"), &genes).unwrap();
        let suite = tmp.path().join("suite.toml");
        std::fs::write(
            &suite,
            "[[dataset]]\nname = \"pollen_broken\"\ntasks = [{ task = \"cluster\", label = \"label\" }]\n\n\
             [[dataset]]\nname = \"pollen_simlr\"\ntasks = [\n  { task = \"cluster\", label = \"no_such_column\" },\n  { task = \"cluster\", label = \"label\" },\n]\n",
        )
        .unwrap();
        let out = tmp.path().join("out");
        let err = run(&ReproduceOptions {
            data_dir,
            suite,
            out: out.clone(),
            dataset: None,
            task: None,
            label: None,
            groups: None,
            methods: vec!["kmeans".into()],
            seeds: 1,
            check: None,
            write_baseline: None,
        })
        .unwrap_err();
        assert!(err.to_string().contains("2 run(s) failed"), "{err:#}");
        let results = Results::read(&out.join("results.json")).unwrap();
        assert_eq!(results.records.len(), 1);
        let r = &results.records[0];
        assert_eq!(
            (r.dataset.as_str(), r.target.as_str()),
            ("pollen_simlr", "label")
        );
        assert!(r.metrics["ari"] > 0.5, "{:?}", r.metrics);
        assert_eq!(results.failed.len(), 2);
        let unreadable = &results.failed[0];
        assert_eq!(unreadable.dataset, "pollen_broken");
        assert_eq!(
            (unreadable.method.as_deref(), unreadable.seed),
            (None, None)
        );
        assert!(
            unreadable.error.contains("duplicate gene id"),
            "{}",
            unreadable.error
        );
        let no_column = &results.failed[1];
        assert_eq!(no_column.dataset, "pollen_simlr");
        assert_eq!(no_column.target, "no_such_column");
        assert_eq!(
            (no_column.method.as_deref(), no_column.seed),
            (Some("kmeans"), Some(0))
        );
        assert!(
            no_column.error.contains("no_such_column"),
            "{}",
            no_column.error
        );
        let report = std::fs::read_to_string(out.join("report.md")).unwrap();
        assert!(report.contains("## Failed runs") && report.contains("pollen_broken"));
    }
}

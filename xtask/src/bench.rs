//! `cargo xtask bench`: the whole-pipeline figures of docs/benchmarks.md in one command.
//!
//! Builds the measurement binaries of `cellident-benches` in release mode, runs each workload in
//! its own process (peak RSS is per process), collects the `BENCH {json}` lines they print, and
//! rewrites the generated section of docs/benchmarks.md (between the two marker comments) with
//! the machine, the command, the date and a table. Hand-written analysis outside the markers is
//! kept. Large inputs are real cells resampled from a fixture (bootstrap + binomial thinning),
//! written once under `target/bench-data/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

const BEGIN: &str = "<!-- cargo xtask bench: generated section, begin -->";
const END: &str = "<!-- cargo xtask bench: generated section, end -->";

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Cells of the streamed N-ACT run (train one epoch, then annotate every cell).
    pub stream_cells: usize,
    /// Cells of the streamed ACTINN, CIC and MLP runs (one epoch each, then annotation).
    pub model_cells: usize,
    /// Cells of the largest in-memory preprocessing run (0 skips it).
    pub preprocess_cells: Vec<usize>,
    /// Labels of the ARI + NMI run.
    pub metric_labels: usize,
    /// Cells of the k-means comparison (full vs mini-batch).
    pub kmeans_cells: usize,
    /// The page to update (`None`: print only).
    pub doc: Option<PathBuf>,
    /// The command line, recorded on the page.
    pub command: String,
}

pub fn run(o: &BenchOptions) -> Result<()> {
    let root = crate::workspace_root();
    eprintln!("building the benchmark binaries (release)");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&root)
        .args(["build", "--release", "-p", "cellident-benches", "--bins"])
        .status()
        .context("cannot run cargo build")?;
    if !status.success() {
        bail!("building the benchmark binaries failed");
    }
    let bin = |name: &str| root.join("target/release").join(name);
    let data_dir = root.join("target/bench-data");
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;

    let mut records: Vec<Value> = Vec::new();
    for &n in &o.preprocess_cells {
        let repeats = if n >= 1_000_000 { "1" } else { "3" };
        records.extend(measure(
            &bin("bench_pipeline"),
            &["preprocess", &n.to_string(), repeats],
        )?);
    }
    // scanpy's sparse recipe (no scaling, PCA with implicit centring) at the largest size.
    if let Some(&n) = o.preprocess_cells.iter().max() {
        records.extend(measure(
            &bin("bench_pipeline"),
            &["preprocess-sparse", &n.to_string(), "1"],
        )?);
    }
    records.extend(measure(
        &bin("bench_pipeline"),
        &["metrics", &o.metric_labels.to_string(), "5"],
    )?);
    records.extend(measure(
        &bin("bench_pipeline"),
        &["kmeans", &o.kmeans_cells.to_string()],
    )?);
    let file = data_dir.join(format!("resampled_{}.parquet", o.stream_cells));
    if !file.exists() {
        records.extend(measure(
            &bin("stream_parquet"),
            &["make", &file.to_string_lossy(), &o.stream_cells.to_string()],
        )?);
    }
    records.extend(measure(
        &bin("stream_parquet"),
        &["read", &file.to_string_lossy(), "1024"],
    )?);
    // The user's path for scanpy's recipe: read the file whole, then the sparse recipe.
    records.extend(measure(
        &bin("bench_pipeline"),
        &["preprocess-file", &file.to_string_lossy()],
    )?);
    records.extend(measure(
        &bin("stream_parquet"),
        &["train", "nact", &file.to_string_lossy(), "1"],
    )?);
    // The other models at the smaller size (CIC's epoch at 1M cells alone takes ~16 minutes).
    let small = data_dir.join(format!("resampled_{}.parquet", o.model_cells));
    if !small.exists() {
        records.extend(measure(
            &bin("stream_parquet"),
            &["make", &small.to_string_lossy(), &o.model_cells.to_string()],
        )?);
    }
    for model in ["actinn", "cic", "mlp"] {
        records.extend(measure(
            &bin("stream_parquet"),
            &["train", model, &small.to_string_lossy(), "1"],
        )?);
    }

    let section = render(&records, &o.command);
    println!("{section}");
    if let Some(doc) = &o.doc {
        update_page(&root.join(doc), &section)?;
        eprintln!("updated {}", doc.display());
    }
    Ok(())
}

/// Runs one measurement binary (its progress goes to the terminal) and returns its records.
fn measure(bin: &Path, args: &[&str]) -> Result<Vec<Value>> {
    eprintln!("== {} {}", bin.display(), args.join(" "));
    let out = Command::new(bin)
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("{} {} failed:\n{text}", bin.display(), args.join(" "));
    }
    let mut records = Vec::new();
    for line in text.lines() {
        match line.strip_prefix("BENCH ") {
            Some(json) => records
                .push(serde_json::from_str(json).with_context(|| {
                    format!("{}: unreadable result line {json}", bin.display())
                })?),
            None => eprintln!("   {line}"),
        }
    }
    Ok(records)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / (1024.0 * 1024.0));
    format!(
        "{cpu}, {cores} cores, {mem_gib:.0} GiB, {}",
        std::env::consts::OS
    )
}

fn today() -> String {
    Command::new("date")
        .arg("+%Y-%m-%d")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown date".into())
}

/// The generated section: machine, command, date, one table row per record.
fn render(records: &[Value], command: &str) -> String {
    let mut s = format!(
        "{BEGIN}\n### Whole-pipeline figures (`cargo xtask bench`)\n\nMachine: {}. Command: `{command}`. \
         Date: {}. Each workload runs in its own process (release build, mimalloc); seconds are the \
         median of the repeats shown; peak RSS is the whole process's, input generation included. \
         Inputs: real cells resampled from `fixtures/pbmc_10x_4k_top2000` (bootstrap + binomial \
         thinning of counts), never synthetic profiles.\n\n\
         | workload | size | seconds | repeats | rate | peak RSS |\n| --- | --- | --- | --- | --- | --- |\n",
        machine(),
        today()
    );
    for r in records {
        s.push_str(&format!(
            "| {} | {} | {:.3} | {} | {} | {} MB |\n",
            r["benchmark"].as_str().unwrap_or("?"),
            r["size"].as_str().unwrap_or("?"),
            r["seconds"].as_f64().unwrap_or(f64::NAN),
            r["repeats"],
            r["rate"].as_str().unwrap_or("-"),
            r["peak_rss_mb"]
        ));
    }
    s.push_str(END);
    s
}

/// Replaces the generated section of `page` (or appends one), writing atomically.
fn update_page(page: &Path, section: &str) -> Result<()> {
    let text =
        std::fs::read_to_string(page).with_context(|| format!("cannot read {}", page.display()))?;
    let updated = match (text.find(BEGIN), text.find(END)) {
        (Some(b), Some(e)) if e > b => format!("{}{section}{}", &text[..b], &text[e + END.len()..]),
        _ => format!("{}\n{section}\n", text.trim_end()),
    };
    cellident_io::write_atomic(page, |w| w.write_all(updated.as_bytes()))
        .with_context(|| format!("cannot write {}", page.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_generated_section_is_replaced_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let page = dir.path().join("benchmarks.md");
        std::fs::write(&page, "# Benchmarks\n\nhand-written analysis\n").unwrap();
        let rec = serde_json::json!({"benchmark": "ARI + NMI", "size": "10 labels",
            "seconds": 0.5, "repeats": 5, "rate": "20 labels/s", "peak_rss_mb": 3});
        update_page(&page, &render(&[rec], "cargo xtask bench")).unwrap();
        let first = std::fs::read_to_string(&page).unwrap();
        assert!(first.starts_with("# Benchmarks\n\nhand-written analysis\n"));
        assert!(first.contains("| ARI + NMI | 10 labels | 0.500 | 5 | 20 labels/s | 3 MB |"));
        // A second run replaces the section instead of appending another.
        let rec2 = serde_json::json!({"benchmark": "ARI + NMI", "size": "10 labels",
            "seconds": 0.25, "repeats": 5, "rate": "40 labels/s", "peak_rss_mb": 3});
        std::fs::write(&page, format!("{first}\nlater notes\n")).unwrap();
        update_page(&page, &render(&[rec2], "cargo xtask bench")).unwrap();
        let second = std::fs::read_to_string(&page).unwrap();
        assert_eq!(second.matches(BEGIN).count(), 1);
        assert!(second.contains("| 0.250 |") && !second.contains("| 0.500 |"));
        assert!(second.contains("hand-written analysis") && second.contains("later notes"));
    }
}

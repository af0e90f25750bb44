//! `cellident report`: re-renders a benchmark's `results.json` (from `cargo xtask reproduce`
//! or any tool writing that schema) as `report.md` with its SVG figures.

use std::path::PathBuf;

use anyhow::Result;

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// A results.json (schema in docs/results-schema.md).
    results: PathBuf,
    /// Output folder for report.md and plots/ (default: the folder of the results file, where
    /// the run's side tables — salient genes, 2-D views — are found).
    #[arg(short, long)]
    output: Option<PathBuf>,
}

pub fn run(a: ReportArgs, quiet: bool) -> Result<()> {
    let results = cellident_report::Results::read(&a.results)?;
    let out = match a.output {
        Some(dir) => dir,
        None => a
            .results
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_else(|| PathBuf::from(".")),
    };
    std::fs::create_dir_all(&out)?;
    cellident_report::write_report(&results, &out, None)?;
    if !quiet {
        eprintln!(
            "{} records; wrote {}",
            results.records.len(),
            out.join("report.md").display()
        );
    }
    Ok(())
}

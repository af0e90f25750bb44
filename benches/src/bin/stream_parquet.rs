//! Whole-file streaming measurement (peak RSS is per process, so it gets its own process).
//!
//! `stream_parquet make OUT.parquet N_CELLS` writes a dataset of real cells resampled from
//! `fixtures/pbmc_10x_4k_top2000` (bootstrap + binomial thinning, 2,000 genes).
//! `stream_parquet read IN.parquet BATCH` streams it in batches and prints cells/s and peak RSS.

/// mimalloc instead of glibc malloc: glibc unmaps large freed tensors and faults them back in on
/// the next step, which doubled training time (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use cellident_benches::{peak_rss_bytes, write_resampled_counts};
use cellident_io::ParquetDataset;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("make") if args.len() == 4 => {
            let n: usize = args[3].parse().context("N_CELLS must be a number")?;
            let source =
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/pbmc_10x_4k_top2000");
            let t = Instant::now();
            write_resampled_counts(&source, "label", n, &PathBuf::from(&args[2]), 42)?;
            println!(
                "wrote {n} cells in {:.1} s, peak RSS {} MB",
                t.elapsed().as_secs_f64(),
                peak_rss_bytes().unwrap_or(0) / (1 << 20)
            );
        }
        Some("read") if args.len() == 4 => {
            let batch: usize = args[3].parse().context("BATCH must be a number")?;
            let t = Instant::now();
            let p = ParquetDataset::open(&PathBuf::from(&args[2]))?;
            let (mut cells, mut nnz, mut sum) = (0usize, 0usize, 0f64);
            for b in p.batches(batch, true)? {
                let b = b?;
                cells += b.cell_ids.len();
                nnz += b.matrix.nnz();
                sum += b.matrix.sum();
            }
            let secs = t.elapsed().as_secs_f64();
            println!(
                "streamed {cells} cells x {} genes ({nnz} non-zeros, value sum {sum}) in batches of {batch}: {secs:.2} s, {:.0} cells/s, peak RSS {} MB",
                p.n_genes(),
                cells as f64 / secs,
                peak_rss_bytes().unwrap_or(0) / (1 << 20)
            );
        }
        _ => bail!("usage: stream_parquet make OUT.parquet N_CELLS | read IN.parquet BATCH"),
    }
    Ok(())
}

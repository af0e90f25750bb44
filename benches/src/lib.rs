//! Shared helpers of cellident's benchmarks: resampled large datasets made from real cells,
//! and peak-memory readings.
//!
//! Large benchmark inputs are never synthetic profiles: they are real cells (from a fixture)
//! drawn with replacement (bootstrap) and binomially thinned (each count kept with a
//! per-cell probability), the usual way to make "more cells" with realistic sparsity and
//! library-size variation. Benchmarks must not be run as tests.

use std::path::Path;

use anyhow::{Context, Result, bail};
use cellident_io::{
    ColumnData, CsrMatrix, ExpressionDataset, ParquetDatasetWriter, ParquetWriteOptions, Table,
    read_mtx_folder,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Binomial, Distribution};

/// Writes a Parquet dataset of `n_cells` cells resampled from the real count matrix `source`
/// (an mtx folder of integer counts): each new cell is a random source cell whose counts are
/// thinned with `Binomial(count, p)`, `p ~ U(0.5, 1)` per cell. Streams in chunks, so memory
/// stays bounded whatever `n_cells` is. The `label` obs column carries the source cell's label.
pub fn write_resampled_counts(
    source: &Path,
    label: &str,
    n_cells: usize,
    out: &Path,
    seed: u64,
) -> Result<()> {
    let d = read_mtx_folder(source).with_context(|| format!("cannot read {}", source.display()))?;
    if !cellident_preprocess::looks_like_counts(d.matrix()) {
        bail!("{} does not hold integer counts", source.display());
    }
    let labels = d.obs().labels(label)?;
    let template = Table::new(
        0,
        vec![cellident_io::Column {
            name: "label".into(),
            data: ColumnData::Text(vec![]),
        }],
    )?;
    let mut writer = ParquetDatasetWriter::create(
        out,
        d.gene_ids(),
        d.var(),
        &template,
        &ParquetWriteOptions::default(),
    )?;
    let mut rng = StdRng::seed_from_u64(seed);
    let chunk = 16_384;
    let mut done = 0;
    while done < n_cells {
        let n = chunk.min(n_cells - done);
        let (chunk_ds, _) = resample_chunk(&d, &labels, n, done, &mut rng)?;
        writer.write(chunk_ds.cell_ids(), chunk_ds.matrix(), chunk_ds.obs())?;
        done += n;
    }
    writer.finish()?;
    Ok(())
}

fn resample_chunk(
    d: &ExpressionDataset,
    labels: &[Option<String>],
    n: usize,
    offset: usize,
    rng: &mut StdRng,
) -> Result<(ExpressionDataset, ())> {
    let m = d.matrix();
    let mut indptr = vec![0usize];
    let mut indices = Vec::new();
    let mut data = Vec::new();
    let mut cells = Vec::with_capacity(n);
    let mut obs = Vec::with_capacity(n);
    for i in 0..n {
        let src = rng.random_range(0..m.n_rows());
        let p: f64 = rng.random_range(0.5..1.0);
        let (idx, val) = m.row(src);
        for (&c, &v) in idx.iter().zip(val) {
            let k = Binomial::new(v as u64, p)?.sample(rng);
            if k > 0 {
                indices.push(c);
                data.push(k as f32);
            }
        }
        indptr.push(indices.len());
        cells.push(format!("resampled-{}-{}", offset + i, d.cell_ids()[src]));
        obs.push(labels[src].clone());
    }
    let matrix = CsrMatrix::new(n, m.n_cols(), indptr, indices, data)?;
    let obs = Table::new(
        n,
        vec![cellident_io::Column {
            name: "label".into(),
            data: ColumnData::Text(obs),
        }],
    )?;
    Ok((
        ExpressionDataset::new(matrix, cells, d.gene_ids().to_vec(), obs, d.var().clone())?,
        (),
    ))
}

/// An in-memory dataset of `n_cells` cells resampled from the real counts of `source`
/// (bootstrap + binomial thinning, as [`write_resampled_counts`]).
pub fn resampled_counts(
    source: &Path,
    label: &str,
    n_cells: usize,
    seed: u64,
) -> Result<ExpressionDataset> {
    let d = read_mtx_folder(source).with_context(|| format!("cannot read {}", source.display()))?;
    let labels = d.obs().labels(label)?;
    let mut rng = StdRng::seed_from_u64(seed);
    Ok(resample_chunk(&d, &labels, n_cells, 0, &mut rng)?.0)
}

/// Two real labelings of the same cells (pbmc68k_reduced's `bulk_labels` and its `louvain`
/// clusters), resampled with replacement to `n` cells: inputs for ARI/NMI at scale.
pub fn resampled_label_pairs(fixtures: &Path, n: usize, seed: u64) -> Result<(Vec<u32>, Vec<u32>)> {
    let d = read_mtx_folder(&fixtures.join("pbmc68k_reduced"))?;
    let encode = |col: &str| -> Result<Vec<u32>> {
        let l = d.obs().labels(col)?;
        let mut classes: Vec<String> = l.iter().flatten().cloned().collect();
        classes.sort();
        classes.dedup();
        Ok(l.iter()
            .map(|x| {
                x.as_ref()
                    .and_then(|s| classes.binary_search(s).ok())
                    .unwrap_or(0) as u32
            })
            .collect())
    };
    let (t, p) = (encode("bulk_labels")?, encode("louvain")?);
    let mut rng = StdRng::seed_from_u64(seed);
    let idx: Vec<usize> = (0..n).map(|_| rng.random_range(0..t.len())).collect();
    Ok((
        idx.iter().map(|&i| t[i]).collect(),
        idx.iter().map(|&i| p[i]).collect(),
    ))
}

/// `n` cells drawn with replacement (seeded) from the pbmc_10x_4k_top2000 fixture in
/// `fixtures`, normalised to 1e4 and logged (`[n, 2000]`), with their class indices (column
/// `label`) and the number of classes: the criterion benches' training and query cells.
pub fn resampled_pbmc_cells(
    fixtures: &Path,
    n: usize,
    seed: u64,
) -> Result<(CsrMatrix, Vec<u32>, usize)> {
    let mut d = read_mtx_folder(&fixtures.join("pbmc_10x_4k_top2000"))?;
    cellident_preprocess::normalize_total(&mut d, 1e4)?;
    cellident_preprocess::log1p(&mut d, false)?;
    let names = d.obs().labels("label")?;
    let encoder = cellident_preprocess::LabelEncoder::fit(&names)?;
    let labels = encoder.transform(&names);
    let mut rng = StdRng::seed_from_u64(seed);
    let rows: Vec<usize> = (0..n).map(|_| rng.random_range(0..d.n_cells())).collect();
    let y = rows
        .iter()
        .map(|&i| labels[i].context("every fixture cell is labelled"))
        .collect::<Result<_>>()?;
    Ok((d.matrix().select_rows(&rows), y, encoder.classes.len()))
}

/// Peak resident memory of this process so far (`VmHWM`), in bytes; `None` off Linux.
/// Prints one machine-readable result line (`BENCH {json}`) that `cargo xtask bench` collects
/// into docs/benchmarks.md: what was measured, on what size, the median seconds of `repeats`
/// runs, an optional rate (`count` items per second, e.g. cells/s) and the process's peak RSS.
pub fn emit(benchmark: &str, size: &str, seconds: f64, repeats: usize, count: Option<(f64, &str)>) {
    let rate = count.map(|(n, unit)| format!("{:.0} {unit}/s", n / seconds));
    println!(
        "BENCH {}",
        serde_json::json!({
            "benchmark": benchmark,
            "size": size,
            "seconds": seconds,
            "repeats": repeats,
            "rate": rate,
            "peak_rss_mb": peak_rss_bytes().map(|b| b >> 20),
        })
    );
}

/// Peak resident set size of this process (Linux `VmHWM`), bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

//! Whole-pipeline timings for docs/benchmarks.md (median of repeated runs, peak RSS).
//!
//! `bench_pipeline preprocess N_CELLS [REPEATS]`: normalize_total -> log1p -> HVG (seurat 2000)
//! -> scale -> PCA 50 on resampled real cells; prints each step's median seconds.
//! `bench_pipeline preprocess-sparse N_CELLS [REPEATS]`: the same without scaling, PCA with
//! implicit centring of the sparse matrix (scanpy's recipe on sparse input).
//! `bench_pipeline metrics N_LABELS [REPEATS]`: ARI + NMI on resampled real labelings.
//! `bench_pipeline kmeans N_CELLS`: full k-means (10 k-means++ starts) vs mini-batch k-means
//! (batches of 1,024) with k = 8 on the PCA-50 scores of resampled real cells.
//! Above `pipeline::DENSE_LIMIT_BYTES` of dense values the scaled PCA runs block by block, as
//! `Pipeline::fit` does (its "scale" time is then the statistics only).
//! `bench_pipeline export-preprocess N_CELLS OUT.mtx.gz`: writes the same resampled input for scanpy.
//! `bench_pipeline preprocess-file IN.parquet`: what a user's process does with scanpy's sparse
//! recipe on a file: read the whole Parquet dataset into memory, then normalize_total and log1p in
//! place, seurat HVG (2,000), PCA 50 with implicit centring; read and recipe timed apart, peak RSS
//! of the whole process (compare with scanpy's `read_h5ad` + the same calls).

/// mimalloc instead of glibc malloc: glibc unmaps large freed tensors and faults them back in on
/// the next step, which doubled training time (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use cellident_benches::{emit, peak_rss_bytes, resampled_counts, resampled_label_pairs};
use cellident_metrics::Contingency;
use cellident_preprocess::{
    HvgParams, Pca, PcaParams, Scaler, highly_variable_genes, log1p, normalize_total,
};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("preprocess-file") {
        return preprocess_file(&PathBuf::from(args.get(2).context("IN.parquet argument")?));
    }
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    let n: usize = args.get(2).context("size argument")?.parse()?;
    let repeats: usize = args.get(3).and_then(|r| r.parse().ok()).unwrap_or(5);
    match args.get(1).map(String::as_str) {
        Some(mode @ ("preprocess" | "preprocess-sparse")) => {
            // preprocess-sparse: scanpy's recipe on sparse input at 1M cells in anchors.md §E
            // (no scaling; PCA with implicit centring of the sparse matrix).
            let sparse = mode == "preprocess-sparse";
            let base = resampled_counts(&fixtures.join("pbmc_10x_4k_top2000"), "label", n, 42)?;
            let mut steps: Vec<Vec<f64>> = vec![Vec::new(); 6];
            for _ in 0..repeats {
                let mut d = base.clone();
                let t0 = Instant::now();
                normalize_total(&mut d, 1e4)?;
                let t1 = Instant::now();
                log1p(&mut d, false)?;
                let t2 = Instant::now();
                let h = highly_variable_genes(
                    d.matrix(),
                    &HvgParams {
                        n_top_genes: 2000,
                        ..Default::default()
                    },
                )?;
                let d = d.select_genes(&h.selected)?;
                let t3 = Instant::now();
                let pca_params = PcaParams {
                    n_components: 50,
                    ..Default::default()
                };
                let (t4, t5) = if sparse {
                    let t4 = Instant::now();
                    let _ = Pca::fit_transform_sparse(d.matrix(), &pca_params)?;
                    (t4, Instant::now())
                } else if d.n_cells() * d.n_genes() * 4
                    > cellident_preprocess::pipeline::DENSE_LIMIT_BYTES
                {
                    // What `Pipeline::fit` does at this size: scaled a block at a time into
                    // the scatter matrix, never densified whole.
                    let s = Scaler::fit(d.matrix(), Some(10.0))?;
                    let t4 = Instant::now();
                    let _ = Pca::fit_transform_scaled_by_blocks(d.matrix(), &s, &pca_params, 8192)?;
                    (t4, Instant::now())
                } else {
                    let x = Scaler::fit(d.matrix(), Some(10.0))?.transform(d.matrix())?;
                    let t4 = Instant::now();
                    let _ = Pca::fit_transform(x, &pca_params)?;
                    (t4, Instant::now())
                };
                for (i, (a, b)) in [(t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5), (t0, t5)]
                    .iter()
                    .enumerate()
                {
                    steps[i].push((*b - *a).as_secs_f64());
                }
            }
            let names = [
                "normalize_total",
                "log1p",
                "hvg_seurat",
                "scale",
                "pca50",
                "total",
            ];
            let total = median(steps[5].clone());
            let parts: Vec<String> = names
                .iter()
                .zip(steps)
                .map(|(n, v)| format!("{n} {:.3} s", median(v)))
                .collect();
            emit(
                if sparse {
                    "preprocess, sparse: normalize_total, log1p, HVG seurat 2000, PCA 50 with implicit centring (no scale; scanpy's 1M recipe in anchors.md)"
                } else {
                    "preprocess: normalize_total, log1p, HVG seurat 2000, scale, PCA 50 (in memory)"
                },
                &format!("{n} cells x 2000 genes"),
                total,
                repeats,
                Some((n as f64, "cells")),
            );
            println!(
                "{mode} {n} cells x 2000 genes, median of {repeats}: {}; peak RSS {} MB",
                parts.join(", "),
                peak_rss_bytes().unwrap_or(0) >> 20
            );
        }
        Some("metrics") => {
            let (t, p) = resampled_label_pairs(&fixtures, n, 7)?;
            let mut times = Vec::new();
            let mut last = (0.0, 0.0);
            for _ in 0..repeats {
                let s = Instant::now();
                let ct = Contingency::new(&t, &p)?;
                last = (ct.adjusted_rand_index(), ct.normalized_mutual_information());
                times.push(s.elapsed().as_secs_f64());
            }
            let secs = median(times);
            emit(
                "ARI + NMI (one contingency table)",
                &format!("{n} labels"),
                secs,
                repeats,
                Some((n as f64, "labels")),
            );
            println!(
                "ARI+NMI on {n} labels, median of {repeats}: {:.4} s (ARI {:.6}, NMI {:.6}); peak RSS {} MB",
                secs,
                last.0,
                last.1,
                peak_rss_bytes().unwrap_or(0) >> 20
            );
        }
        Some("kmeans") => {
            use cellident_preprocess::{
                KMeansParams, MiniBatchKMeansParams, Pipeline, PipelineParams, kmeans,
                minibatch_kmeans,
            };
            let d = resampled_counts(&fixtures.join("pbmc_10x_4k_top2000"), "label", n, 42)?;
            let (_, x) = Pipeline::fit_dense(&d, &PipelineParams::log_hvg_pca(&d, 50, 0))?;
            drop(d);
            let t = Instant::now();
            let mb = minibatch_kmeans(&x, &MiniBatchKMeansParams::new(8, 0))?;
            let mb_s = t.elapsed().as_secs_f64();
            emit(
                "mini-batch k-means, k = 8, batches of 1,024 (PCA-50 scores; RSS includes the PCA)",
                &format!("{n} cells"),
                mb_s,
                1,
                Some((n as f64, "cells")),
            );
            let t = Instant::now();
            let full = kmeans(&x, &KMeansParams::new(8, 0))?;
            let full_s = t.elapsed().as_secs_f64();
            emit(
                "full k-means (Lloyd), k = 8, 10 k-means++ starts (same input)",
                &format!("{n} cells"),
                full_s,
                1,
                Some((n as f64, "cells")),
            );
            let agree = Contingency::new(&mb.labels, &full.labels)?.adjusted_rand_index();
            println!(
                "k-means on {n} cells: mini-batch {mb_s:.2} s ({} steps, inertia {:.4e}), full \
                 {full_s:.2} s (inertia {:.4e}); ARI between them {agree:.3}",
                mb.iterations, mb.inertia, full.inertia
            );
        }
        Some("export-preprocess") => {
            let out = PathBuf::from(args.get(3).context("output path")?);
            let d = resampled_counts(&fixtures.join("pbmc_10x_4k_top2000"), "label", n, 42)?;
            cellident_io::write_matrix_market(
                &out,
                d.matrix(),
                "resampled pbmc_10x_4k_top2000 cells (bootstrap + binomial thinning, seed 42)",
            )?;
            println!("wrote {}", out.display());
        }
        Some("export-labels") => {
            let out = PathBuf::from(args.get(3).context("output path")?);
            let (t, p) = resampled_label_pairs(&fixtures, n, 7)?;
            let text: String = t
                .iter()
                .zip(&p)
                .map(|(a, b)| format!("{a} {b}\n"))
                .collect();
            std::fs::write(&out, text)?;
            println!("wrote {}", out.display());
        }
        _ => bail!(
            "usage: bench_pipeline preprocess|metrics|export-preprocess|export-labels N [REPEATS|OUT]"
        ),
    }
    Ok(())
}

fn preprocess_file(path: &std::path::Path) -> Result<()> {
    let t0 = Instant::now();
    let mut d = cellident_io::read_parquet(path)?;
    let read_s = t0.elapsed().as_secs_f64();
    let read_rss = peak_rss_bytes().unwrap_or(0) >> 20;
    let t1 = Instant::now();
    normalize_total(&mut d, 1e4)?;
    log1p(&mut d, false)?;
    let h = highly_variable_genes(
        d.matrix(),
        &HvgParams {
            n_top_genes: 2000,
            ..Default::default()
        },
    )?;
    if h.selected.len() < d.n_genes() {
        d.retain_genes(&h.selected)?;
    }
    let t2 = Instant::now();
    let (_, scores) = Pca::fit_transform_sparse(
        d.matrix(),
        &PcaParams {
            n_components: 50,
            ..Default::default()
        },
    )?;
    let t3 = Instant::now();
    let (n, g) = (d.n_cells(), d.n_genes());
    emit(
        "preprocess a Parquet file: read, then normalize_total, log1p, HVG seurat 2000, PCA 50 with implicit centring (seconds: the recipe; RSS: the whole process)",
        &format!("{n} cells x {g} genes"),
        (t3 - t1).as_secs_f64(),
        1,
        Some((n as f64, "cells")),
    );
    println!(
        "read {n} cells x {g} genes in {read_s:.1} s (peak RSS {read_rss} MB); recipe {:.1} s \
         (normalize+log1p+HVG {:.1} s, PCA {:.1} s, scores {} x {}); peak RSS {} MB",
        (t3 - t1).as_secs_f64(),
        (t2 - t1).as_secs_f64(),
        (t3 - t2).as_secs_f64(),
        scores.n_rows,
        scores.n_cols,
        peak_rss_bytes().unwrap_or(0) >> 20
    );
    Ok(())
}

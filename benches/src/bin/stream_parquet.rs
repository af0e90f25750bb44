//! Whole-file streaming measurement (peak RSS is per process, so it gets its own process).
//!
//! `stream_parquet make OUT.parquet N_CELLS` writes a dataset of real cells resampled from
//! `fixtures/pbmc_10x_4k_top2000` (bootstrap + binomial thinning, 2,000 genes).
//! `stream_parquet read IN.parquet BATCH` streams it in batches and prints cells/s and peak RSS.
//! `stream_parquet train MODEL IN.parquet EPOCHS` trains MODEL (`nact`, `actinn`, `cic` or `mlp`;
//! defaults as `cellident train --stream` uses them, the MLP with one ensemble member so that the
//! figure is one network's epoch; `label` column) on every cell streamed through the shuffle
//! buffer, then annotates every cell streamed in batches, printing each phase's seconds, cells/s,
//! the training-cell accuracy and the peak RSS.

/// mimalloc instead of glibc malloc: glibc unmaps large freed tensors and faults them back in on
/// the next step, which doubled training time (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use cellident_benches::{emit, peak_rss_bytes, write_resampled_counts};
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
            emit(
                "write a resampled Parquet dataset (streaming writer)",
                &format!("{n} cells x 2000 genes"),
                t.elapsed().as_secs_f64(),
                1,
                Some((n as f64, "cells")),
            );
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
            emit(
                &format!("stream a Parquet dataset in batches of {batch}"),
                &format!("{cells} cells x {} genes", p.n_genes()),
                secs,
                1,
                Some((cells as f64, "cells")),
            );
            println!(
                "streamed {cells} cells x {} genes ({nnz} non-zeros, value sum {sum}) in batches of {batch}: {secs:.2} s, {:.0} cells/s, peak RSS {} MB",
                p.n_genes(),
                cells as f64 / secs,
                peak_rss_bytes().unwrap_or(0) / (1 << 20)
            );
        }
        Some("train") if args.len() == 5 => {
            let epochs: usize = args[4].parse().context("EPOCHS must be a number")?;
            stream_model(&args[2], &PathBuf::from(&args[3]), epochs)?;
        }
        _ => bail!(
            "usage: stream_parquet make OUT.parquet N_CELLS | read IN.parquet BATCH | train nact|actinn|cic|mlp IN.parquet EPOCHS"
        ),
    }
    Ok(())
}

fn stream_model(kind: &str, path: &std::path::Path, epochs: usize) -> Result<()> {
    use cellident_cic::{Cic, CicParams};
    use cellident_metadata::{MetadataMlp, MlpParams};
    use cellident_nact::{Actinn, ActinnParams, Nact, NactParams};
    use cellident_preprocess::stream::{
        BatchTransform, ParquetBatchSource, fit_pipeline_streaming, log_hvg_streaming,
    };
    use cellident_tensor::{BatchSource, CheckParams, Progress, StreamingClassifier, TrainEvent};

    /// Prints the running loss every 200 batches (a progress line for a long run).
    struct Every200(Instant);
    impl Progress for Every200 {
        fn event(&mut self, e: &TrainEvent) {
            if let TrainEvent::Batch { epoch, batch, loss } = e
                && batch % 200 == 0
            {
                eprintln!(
                    "  epoch {epoch} batch {batch}: loss {loss:.4} ({:.0} s)",
                    self.0.elapsed().as_secs_f64()
                );
            }
        }
    }

    let cpu = cellident_tensor::candle_core::Device::Cpu;
    let (name, mut model): (&str, Box<dyn StreamingClassifier>) = match kind {
        "nact" => (
            "N-ACT",
            Box::new(Nact::new(
                NactParams {
                    epochs,
                    ..NactParams::default()
                }
                .check()?,
                cpu,
            )),
        ),
        "actinn" => (
            "ACTINN",
            Box::new(Actinn::new(
                ActinnParams {
                    epochs,
                    ..ActinnParams::default()
                },
                cpu,
            )?),
        ),
        "cic" => (
            "CIC",
            Box::new(Cic::new(
                CicParams {
                    max_epochs: epochs,
                    ..CicParams::default()
                }
                .check()?,
                cpu,
            )),
        ),
        "mlp" => (
            "metadata MLP (one member)",
            Box::new(MetadataMlp::new(
                MlpParams {
                    max_epochs: epochs,
                    validation_fraction: 0.0,
                    ensemble: 1,
                    ..MlpParams::default()
                },
                cpu,
            )?),
        ),
        other => bail!("unknown model {other}: nact, actinn, cic or mlp"),
    };
    let file = ParquetDataset::open(path)?;
    let n = file.n_cells();
    let t = Instant::now();
    // CIC selects its own top-variance genes (as `cellident train` does).
    let n_top = if kind == "cic" { usize::MAX } else { 2000 };
    let recipe = log_hvg_streaming(&file, n_top)?;
    let pipeline = fit_pipeline_streaming(&file, &recipe)?;
    let transform = BatchTransform::new(&pipeline, file.gene_ids(), 1.0)?;
    let recipe_s = t.elapsed().as_secs_f64();
    println!(
        "recipe ({} steps, {} genes) fitted over {n} cells in {recipe_s:.1} s",
        pipeline.steps.len(),
        transform.n_genes_out()
    );
    let mut source = ParquetBatchSource::new(file.clone(), transform.clone(), "label", 65_536, 0)?;
    let classes = source.classes().clone();
    let report = model.fit_source(&mut source, classes.classes.len(), &mut Every200(t))?;
    let train_s = t.elapsed().as_secs_f64();
    emit(
        &format!(
            "{name} training, {epochs} epoch(s) streamed through the shuffle buffer (G = {})",
            source.n_genes()
        ),
        &format!("{} cells", source.n_cells()),
        train_s,
        1,
        Some(((source.n_cells() * epochs) as f64, "cells")),
    );
    println!(
        "trained {name} (G = {}, {} classes) for {epochs} epoch(s) over {} cells in {train_s:.1} s \
         ({:.0} cells/s incl. the statistics passes); final loss {:.4}; peak RSS so far {} MB",
        source.n_genes(),
        classes.classes.len(),
        source.n_cells(),
        (source.n_cells() * epochs) as f64 / train_s,
        report.epochs.last().map_or(f32::NAN, |e| e.train_loss),
        peak_rss_bytes().unwrap_or(0) / (1 << 20)
    );
    let t = Instant::now();
    let (mut correct, mut seen) = (0usize, 0usize);
    for batch in file.batches(4096, true)? {
        let b = batch?;
        let truth = classes.transform(&b.obs.labels("label")?);
        let predicted = model.predict(&transform.apply(b.matrix)?)?;
        for (t, p) in truth.iter().zip(&predicted) {
            correct += usize::from(*t == Some(*p));
        }
        seen += predicted.len();
    }
    let predict_s = t.elapsed().as_secs_f64();
    emit(
        &format!(
            "{name} annotation, streamed in batches of 4,096 (peak RSS: training and annotation)"
        ),
        &format!("{seen} cells"),
        predict_s,
        1,
        Some((seen as f64, "cells")),
    );
    println!(
        "annotated {seen} streamed cells in {predict_s:.1} s ({:.0} cells/s); training-cell \
         accuracy {:.3}; peak RSS {} MB",
        seen as f64 / predict_s,
        correct as f64 / seen.max(1) as f64,
        peak_rss_bytes().unwrap_or(0) / (1 << 20)
    );
    Ok(())
}

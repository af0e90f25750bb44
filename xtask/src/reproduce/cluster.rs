//! The `cluster` task's deep method: CICL (methods.md §3) on the reproduce recipe, scored with
//! ARI / NMI / AMI / Hungarian accuracy on exactly the cells the baselines use (all labelled
//! cells: the reference's "> 200 expressed genes" filter is off, docs/cicl.md).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use cellident_cicl::{Cicl, CiclFit, CiclParams};
use cellident_io::{ExpressionDataset, ParquetWriteOptions, Table, write_parquet};
use cellident_tensor::CheckParams;
use serde_json::json;

use super::TaskSpec;
use super::methods::{ProgressBar, RunContext, RunOutput, clustering_metrics, labelled};

/// Whether CICL's genes are scaled: `cellident_cicl::SCALE_GENES_DEFAULT` (yes) unless
/// `CELLIDENT_CICL_SCALE_GENES` says `1`/`true` or `0`/`false` (docs/cicl.md compares the two).
fn scale_genes() -> Result<bool> {
    match std::env::var("CELLIDENT_CICL_SCALE_GENES").as_deref() {
        Err(_) => Ok(cellident_cicl::SCALE_GENES_DEFAULT),
        Ok("1") | Ok("true") => Ok(true),
        Ok("0") | Ok("false") => Ok(false),
        Ok(other) => bail!("CELLIDENT_CICL_SCALE_GENES must be 0/1/true/false, got {other:?}"),
    }
}

/// CICL's parameters for a run: cellident's defaults, then the suite's `params.cicl`, then a
/// JSON object in `CELLIDENT_CICL_PARAMS` (e.g. `{"epochs": 10}`).
fn cicl_params(seed: u64, ctx: &RunContext) -> Result<CiclParams> {
    let base = CiclParams {
        seed,
        ..CiclParams::default()
    };
    super::methods::with_overrides(base, ctx.params.as_ref(), "CELLIDENT_CICL_PARAMS")
}

/// ARI / NMI / AMI / ACC of `pred`, keyed `ari{suffix}`, … .
fn scores(
    suffix: &str,
    truth: &[u32],
    pred: &[u32],
    out: &mut BTreeMap<String, f64>,
) -> Result<()> {
    for (name, v) in clustering_metrics(truth, pred)? {
        out.insert(format!("{name}{suffix}"), v);
    }
    Ok(())
}

pub fn run_cicl(
    data: &ExpressionDataset,
    spec: &TaskSpec,
    seed: u64,
    ctx: &RunContext,
) -> Result<Vec<RunOutput>> {
    let (d, y, enc) = labelled(data, &spec.label)?;
    let input = cellident_cicl::prepare_input(d, scale_genes()?)?;
    let x = &input.values;
    let params = cicl_params(seed, ctx)?;
    let k = enc.classes.len();
    let t = Instant::now();
    let mut model = Cicl::new(params.check()?, candle_core::Device::Cpu);
    let mut bar = ProgressBar::new("CICL");
    let fit = model.fit(x, k, &mut bar)?;
    let train_seconds = t.elapsed().as_secs_f64();
    let mut metrics = BTreeMap::new();
    // The model's clusters (argmax q with the final centroids) are the method's result; k-means
    // on the final embedding and the first k-means (untrained encoder) are reported beside them.
    scores("", &y, &fit.labels, &mut metrics)?;
    scores("_kmeans", &y, &fit.kmeans_labels, &mut metrics)?;
    scores("_initial", &y, &fit.initial_labels, &mut metrics)?;
    if seed == 0 {
        write_outputs(ctx, &input.cell_ids, &enc.classes, &y, &fit)?;
    }
    let config = json!({
        "preprocessing": input.recipe,
        "model": params,
        "k": k,
        "n_cells": x.n_rows,
        "n_genes": x.n_cols,
        "loss_curve": fit.losses.iter().map(|l| l.total).collect::<Vec<_>>(),
        // Per epoch: how far the pseudo-labels strayed from the last k-means between re-fits.
        "labels_off_partition": fit
            .losses
            .iter()
            .map(|l| l.labels_off_partition)
            .collect::<Vec<_>>(),
        "refits": fit.refits,
    });
    Ok(vec![RunOutput {
        metrics,
        train_seconds,
        predict_seconds: 0.0,
        config,
        folds: false,
        split: None,
    }])
}

/// `cicl_clusters.csv` (cell, label, cicl, cicl_kmeans, initial_kmeans) and
/// `cicl_embedding.parquet` (the `[cells, G]` embedding in the canonical Parquet layout, one
/// feature `h0..` per dimension, with the cell ids).
fn write_outputs(
    ctx: &RunContext,
    cell_ids: &[String],
    classes: &[String],
    y: &[u32],
    fit: &CiclFit,
) -> Result<()> {
    use cellident_io::csv_field as quote;
    std::fs::create_dir_all(&ctx.dir)?;
    let mut text = String::from("cell,label,cicl,cicl_kmeans,initial_kmeans\n");
    for (i, cell) in cell_ids.iter().enumerate() {
        let _ = writeln!(
            text,
            "{},{},{},{},{}",
            quote(cell),
            quote(&classes[y[i] as usize]),
            fit.labels[i],
            fit.kmeans_labels[i],
            fit.initial_labels[i]
        );
    }
    cellident_io::write_atomic(&ctx.dir.join("cicl_clusters.csv"), |w| {
        w.write_all(text.as_bytes())
    })
    .context("writing the CICL clusters")?;
    let h = &fit.embedding;
    let features = (0..h.n_cols).map(|j| format!("h{j}")).collect();
    let embedding = ExpressionDataset::from_dense(
        &h.values,
        cell_ids.to_vec(),
        features,
        Table::empty(h.n_rows),
    )?;
    write_parquet(
        &ctx.dir.join("cicl_embedding.parquet"),
        &embedding,
        &ParquetWriteOptions::default(),
    )
    .context("writing the CICL embedding")?;
    cellident_report::pca_view(
        &ctx.dir.join("cicl_embedding_2d.svg"),
        "CICL embedding, coloured by the true labels",
        h,
        y,
        classes,
    )?;
    Ok(())
}

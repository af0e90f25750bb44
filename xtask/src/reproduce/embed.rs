//! The embed task (methods.md §2): CIC's 30-number cell identity code against PCA with as many
//! components, in 5-fold stratified cross-validation. Each fold reports `accuracy` (CIC: its
//! classifier head; PCA: logistic regression on the PCA scores) and the median over test
//! samples of the reconstruction Spearman and MSE. Beside the folds: the unseen-type experiment
//! (leave one cell type out of training, reproduce it) and, for `cic`, the unit -> gene table
//! and the codes of every cell, written to `<out>/<dataset>/<target>/`.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use cellident_baselines::{LogisticRegression, LogisticRegressionParams};
use cellident_cic::{Cic, CicParams, PcaCodec, reconstruction_scores};
use cellident_io::{CsrMatrix, ExpressionDataset};
use cellident_preprocess::{looks_like_counts, stratified_kfold, stratified_split};
use cellident_tensor::{CheckParams, Classifier, DenseMatrix, Embedder};
use serde_json::json;

use super::TaskSpec;
use super::methods::{ProgressBar, RunContext, RunOutput, classification_metrics, labelled, pick};

const FOLDS: usize = 5;
/// A cell type takes part in the unseen-type experiment when it has at least this many cells.
const MIN_UNSEEN_CELLS: usize = 10;
/// At most this many types are left out in turn (the largest ones), to bound the run time,
/// unless the suite's `unseen_types` says otherwise.
const MAX_UNSEEN_TYPES: usize = 3;

/// Labelled cells, log-scale: counts are normalised to 1e4 and logged, log-scale data (bulk
/// arrays, log-normalised scRNA) are used as they are. CIC and PCA choose their own genes.
struct EmbedData {
    x: CsrMatrix,
    y: Vec<u32>,
    classes: Vec<String>,
    data: ExpressionDataset,
    config: serde_json::Value,
    /// Types left out in turn in the unseen-type experiment.
    unseen_types: usize,
}

fn embed_data(data: &ExpressionDataset, spec: &TaskSpec) -> Result<EmbedData> {
    let (mut d, y, enc) = labelled(data, &spec.label)?;
    if d.n_cells() < FOLDS {
        bail!(
            "column '{}' labels only {} cells; {FOLDS}-fold cross-validation needs at least {FOLDS}",
            spec.label,
            d.n_cells()
        );
    }
    let counts = looks_like_counts(d.matrix());
    if counts {
        cellident_preprocess::normalize_total(&mut d, 1e4)?;
        cellident_preprocess::log1p(&mut d, false)?;
    }
    let config = json!({
        "target": spec.label,
        "classes": enc.classes,
        "n_cells": y.len(),
        "n_genes": d.n_genes(),
        "preprocessing": if counts { "normalize_total 1e4 + log1p" } else { "none (log-scale input used as is)" },
    });
    Ok(EmbedData {
        x: d.matrix().clone(),
        y,
        classes: enc.classes,
        data: d,
        config,
        unseen_types: spec.unseen_types.unwrap_or(MAX_UNSEEN_TYPES),
    })
}

/// CIC's recipe, then the suite's `params.cic`, then `CELLIDENT_CIC_PARAMS` (JSON, any subset
/// of fields) for experiments; every record's config says what ran.
fn cic_params(seed: u64, ctx: &RunContext) -> Result<CicParams> {
    super::methods::with_overrides(
        CicParams {
            seed,
            ..CicParams::default()
        },
        ctx.params.as_ref(),
        "CELLIDENT_CIC_PARAMS",
    )
}

/// What one codec (CIC or PCA) needs to provide to be scored.
trait Codec {
    /// `(scaled input, reproduction)` of `x`.
    fn reconstruct(&self, x: &CsrMatrix) -> Result<(DenseMatrix, DenseMatrix)>;
}

impl Codec for Cic {
    fn reconstruct(&self, x: &CsrMatrix) -> Result<(DenseMatrix, DenseMatrix)> {
        Ok(Cic::reconstruct(self, x)?)
    }
}

impl Codec for PcaCodec {
    fn reconstruct(&self, x: &CsrMatrix) -> Result<(DenseMatrix, DenseMatrix)> {
        Ok(PcaCodec::reconstruct(self, x)?)
    }
}

/// Median reconstruction Spearman and MSE of `x` through `codec`, and how many samples had a
/// constant profile over the input genes (left out of the Spearman median, with a warning).
fn reconstruction_metrics(codec: &dyn Codec, x: &CsrMatrix) -> Result<(f64, f64, usize)> {
    let (orig, rep) = codec.reconstruct(x)?;
    let s = reconstruction_scores(&orig, &rep)?;
    let n_constant = s.n_constant();
    let spearman = s.median_spearman().with_context(|| {
        format!(
            "all {} samples have a constant profile over the input genes; the reconstruction Spearman is undefined",
            orig.n_rows
        )
    })?;
    if n_constant > 0 {
        eprintln!(
            "warning: {n_constant} of {} samples have a constant profile over the input genes (no ranking to reproduce); left out of the reconstruction Spearman",
            orig.n_rows
        );
    }
    Ok((spearman, s.median_mse(), n_constant))
}

/// A codec trained on `train` rows (labels given for the classifier autoencoder).
type Fit<'a, C> = dyn Fn(&CsrMatrix, &[u32], usize) -> Result<C> + 'a;

/// Predicted classes of the test cells: `(model, train x, test x, train labels)`.
type Classify<C> = dyn Fn(&C, &CsrMatrix, &CsrMatrix, &[u32]) -> Result<Vec<u32>>;

/// The cross-validated folds and the unseen-type experiment for one codec.
fn evaluate<C: Codec>(
    e: &EmbedData,
    seed: u64,
    fit: &Fit<'_, C>,
    fit_unsupervised: &Fit<'_, C>,
    classify: &Classify<C>,
    first_fold: &mut dyn FnMut(&C) -> Result<()>,
    model_config: serde_json::Value,
) -> Result<Vec<RunOutput>> {
    let mut out = Vec::new();
    for (fold, (train, test)) in stratified_kfold(&e.y, FOLDS, seed)?.into_iter().enumerate() {
        let (xtr, xte) = (e.x.select_rows(&train), e.x.select_rows(&test));
        let ytr = pick(&e.y, &train);
        let t = Instant::now();
        let model = fit(&xtr, &ytr, e.classes.len())?;
        let train_seconds = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let pred = classify(&model, &xtr, &xte, &ytr)?;
        let (spearman, mse, n_constant) = reconstruction_metrics(&model, &xte)?;
        let predict_seconds = t.elapsed().as_secs_f64();
        if fold == 0 {
            first_fold(&model)?;
        }
        let mut metrics = classification_metrics(&pick(&e.y, &test), &pred)?;
        metrics.insert("reconstruction_spearman".into(), spearman);
        metrics.insert("reconstruction_mse".into(), mse);
        let mut config = e.config.clone();
        config["model"] = model_config.clone();
        config["n_train"] = json!(train.len());
        config["n_test"] = json!(test.len());
        if n_constant > 0 {
            config["n_test_constant_profiles"] = json!(n_constant);
        }
        out.push(RunOutput {
            metrics,
            train_seconds,
            predict_seconds,
            config,
            folds: true,
            split: Some(format!("stratified_{FOLDS}fold")),
        });
    }
    // Universality (paper §2.4): leave one type out of training entirely, hold out 20% of the
    // seen types' cells too, and compare how well both are reproduced.
    let mut sizes: Vec<(usize, u32)> = (0..e.classes.len() as u32)
        .map(|c| (e.y.iter().filter(|&&v| v == c).count(), c))
        .filter(|&(n, _)| n >= MIN_UNSEEN_CELLS)
        .collect();
    sizes.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    // The experiment needs a seen type beside the left-out one: at least two eligible types.
    let eligible = sizes.len();
    sizes.truncate(e.unseen_types);
    if eligible >= 2 {
        for &(_, unseen) in &sizes {
            let others: Vec<usize> = (0..e.y.len()).filter(|&i| e.y[i] != unseen).collect();
            let held: Vec<usize> = (0..e.y.len()).filter(|&i| e.y[i] == unseen).collect();
            let (tr, te) = stratified_split(&pick(&e.y, &others), 0.2, seed)?;
            let train: Vec<usize> = tr.iter().map(|&i| others[i]).collect();
            let seen_test: Vec<usize> = te.iter().map(|&i| others[i]).collect();
            let t = Instant::now();
            let xtr = e.x.select_rows(&train);
            let model = fit_unsupervised(&xtr, &pick(&e.y, &train), e.classes.len())?;
            let train_seconds = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let (seen, _, _) = reconstruction_metrics(&model, &e.x.select_rows(&seen_test))?;
            let (unseen_s, _, _) = reconstruction_metrics(&model, &e.x.select_rows(&held))?;
            let predict_seconds = t.elapsed().as_secs_f64();
            let mut config = e.config.clone();
            config["model"] = model_config.clone();
            config["unseen_type"] = json!(e.classes[unseen as usize]);
            config["n_train"] = json!(train.len());
            config["n_seen_test"] = json!(seen_test.len());
            config["n_unseen"] = json!(held.len());
            out.push(RunOutput {
                metrics: [
                    ("reconstruction_spearman_seen".to_string(), seen),
                    ("reconstruction_spearman_unseen".to_string(), unseen_s),
                ]
                .into_iter()
                .collect(),
                train_seconds,
                predict_seconds,
                config,
                folds: true,
                split: Some("leave_one_type_out".into()),
            });
        }
    }
    Ok(out)
}

pub fn run_cic(
    data: &ExpressionDataset,
    spec: &TaskSpec,
    seed: u64,
    ctx: &RunContext,
) -> Result<Vec<RunOutput>> {
    let e = embed_data(data, spec)?;
    let params = cic_params(seed, ctx)?;
    let config = params.check()?;
    let p = config.clone();
    let fit = |x: &CsrMatrix, y: &[u32], c: usize| -> Result<Cic> {
        let mut m = Cic::new(p.clone(), candle_core::Device::Cpu);
        m.fit(x, y, c, &mut ProgressBar::new("CIC"))?;
        Ok(m)
    };
    let p = config.clone();
    let fit_ae = |x: &CsrMatrix, _: &[u32], _: usize| -> Result<Cic> {
        let mut m = Cic::new(p.clone(), candle_core::Device::Cpu);
        m.fit_autoencoder(x, &mut ProgressBar::new("CIC autoencoder"))?;
        Ok(m)
    };
    let classify = |m: &Cic, _: &CsrMatrix, xte: &CsrMatrix, _: &[u32]| -> Result<Vec<u32>> {
        Ok(m.predict(xte)?)
    };
    // The first fold's classifier autoencoder (trained on 80% of the cells) gives the codes of
    // every cell and the unit -> gene table; a separate model on all cells would cost one more
    // training for the same picture.
    let mut side = |m: &Cic| write_side_outputs(m, &e, ctx);
    evaluate(
        &e,
        seed,
        &fit,
        &fit_ae,
        &classify,
        &mut side,
        serde_json::to_value(&params)?,
    )
}

fn write_side_outputs(model: &Cic, e: &EmbedData, ctx: &RunContext) -> Result<()> {
    use cellident_io::csv_field as quote;
    use std::fmt::Write as _;
    std::fs::create_dir_all(&ctx.dir)?;
    let genes = e.data.gene_ids();
    let effects = model.unit_gene_effects(&e.x, 100, 2.0)?;
    let mut text = String::from("unit,rank,gene,delta\n");
    for r in &effects {
        let _ = writeln!(
            text,
            "{},{},{},{}",
            r.unit,
            r.rank,
            quote(&genes[r.gene]),
            r.delta
        );
    }
    cellident_io::write_atomic(&ctx.dir.join("cic_unit_genes.csv"), |w| {
        w.write_all(text.as_bytes())
    })?;
    let codes = model.embed(&e.x)?;
    let labels: Vec<&str> =
        e.y.iter()
            .map(|&c| e.classes[c as usize].as_str())
            .collect();
    let mut text = String::from("cell,label");
    for j in 0..codes.n_cols {
        let _ = write!(text, ",cic_{j}");
    }
    text.push('\n');
    for (i, cell) in e.data.cell_ids().iter().enumerate() {
        let _ = write!(text, "{},{}", quote(cell), quote(labels[i]));
        for v in codes.row(i) {
            let _ = write!(text, ",{v}");
        }
        text.push('\n');
    }
    cellident_io::write_atomic(&ctx.dir.join("cic_codes.csv"), |w| {
        w.write_all(text.as_bytes())
    })
    .context("writing the CIC codes")?;
    cellident_report::pca_view(
        &ctx.dir.join("cic_codes_2d.svg"),
        "CIC codes, coloured by the true labels",
        &codes,
        &e.y,
        &e.classes,
    )?;
    Ok(())
}

pub fn run_pca(
    data: &ExpressionDataset,
    spec: &TaskSpec,
    seed: u64,
    ctx: &RunContext,
) -> Result<Vec<RunOutput>> {
    let e = embed_data(data, spec)?;
    // The same gene selection and code size as CIC.
    let cic = cic_params(seed, ctx)?;
    let (n_top, k) = (cic.n_top_genes, cic.code_dim);
    // PCA ignores the labels: the same fit serves the folds and the unseen-type runs.
    let fit = |x: &CsrMatrix, _: &[u32], _: usize| -> Result<PcaCodec> {
        Ok(PcaCodec::fit(x, n_top, k, seed)?)
    };
    let n_classes = e.classes.len();
    let classify =
        move |m: &PcaCodec, xtr: &CsrMatrix, xte: &CsrMatrix, ytr: &[u32]| -> Result<Vec<u32>> {
            let (ctr, cte) = (m.encode(xtr)?.to_csr()?, m.encode(xte)?.to_csr()?);
            let mut lr = LogisticRegression::new(LogisticRegressionParams::default())?;
            lr.fit_quiet(&ctr, ytr, n_classes)?;
            Ok(lr.predict(&cte)?)
        };
    evaluate(
        &e,
        seed,
        &fit,
        &fit,
        &classify,
        &mut |_| Ok(()),
        json!({"n_top_genes": n_top, "n_components": k, "scaling": "min-max [0, 1] per gene over the training cells", "classifier": "logistic regression on the PCA scores (cellident-baselines defaults)"}),
    )
}

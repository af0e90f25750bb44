//! The metadata task (methods.md §4): predict a bulk sample's metadata (lineage, sex, molecular
//! subtype, age group, outcome) from its expression profile, by the deep MLP and a random forest,
//! in 5-fold stratified cross-validation and, where the suite names a group column,
//! leave-one-group-out. The MLP's folds also give out-of-fold DeepLIFT attributions, ranked per
//! class into `<out>/<dataset>/<target>/deeplift_top_genes.csv`.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::Device;
use cellident_baselines::{RandomForest, RandomForestParams};
use cellident_explain::{Ranking, Reference, deeplift, rank_genes, rankings_csv};
use cellident_io::{CsrMatrix, ExpressionDataset};
use cellident_metadata::{MetadataMlp, MlpParams};
use cellident_preprocess::{
    LabelEncoder, leave_one_group_out, looks_like_counts, stratified_kfold,
};
use cellident_tensor::{Classifier, DenseMatrix};
use serde_json::json;

use super::TaskSpec;
use super::methods::{ProgressBar, RunContext, RunOutput, classification_metrics, pick};

/// Folds of the stratified cross-validation (anchors.md §C uses 5).
const FOLDS: usize = 5;
/// A numeric label column with more distinct values than this is split at its median.
const MAX_NUMERIC_CLASSES: usize = 10;

/// The samples of a metadata target, ready for cross-validation.
pub struct MetadataData {
    pub x: CsrMatrix,
    pub y: Vec<u32>,
    pub classes: Vec<String>,
    pub genes: Vec<String>,
    /// When the task names a group column: its name, each sample's group, the group names.
    pub groups: Option<(String, Vec<u32>, Vec<String>)>,
    pub config: serde_json::Value,
}

/// Labels of `column`; a numeric column with many values (e.g. `age`) becomes two classes split
/// at the median of the labelled samples (`age<=m`, `age>m`), as the study's age groups.
fn target_labels(d: &ExpressionDataset, column: &str) -> Result<(Vec<Option<String>>, String)> {
    let raw = d.obs().labels(column)?;
    let numbers: Vec<Option<f64>> = raw
        .iter()
        .map(|v| v.as_ref().and_then(|s| s.trim().parse::<f64>().ok()))
        .collect();
    let present = raw.iter().filter(|v| v.is_some()).count();
    let numeric = numbers.iter().filter(|v| v.is_some()).count();
    let mut distinct: Vec<f64> = numbers.iter().flatten().copied().collect();
    distinct.sort_by(f64::total_cmp);
    distinct.dedup();
    if present > 0 && numeric == present && distinct.len() > MAX_NUMERIC_CLASSES {
        let mut v: Vec<f64> = numbers.iter().flatten().copied().collect();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            0.5 * (v[n / 2 - 1] + v[n / 2])
        };
        let labels = numbers
            .iter()
            .map(|x| {
                x.map(|x| {
                    if x <= median {
                        format!("{column}<={median}")
                    } else {
                        format!("{column}>{median}")
                    }
                })
            })
            .collect();
        return Ok((labels, format!("numeric, split at the median {median}")));
    }
    Ok((raw, "categorical".into()))
}

pub fn metadata_data(data: &ExpressionDataset, spec: &TaskSpec) -> Result<MetadataData> {
    let (labels, kind) = target_labels(data, &spec.label)?;
    let enc = LabelEncoder::fit(&labels)?;
    let (keep, y) = enc.labelled_rows(&labels);
    if keep.len() < FOLDS {
        bail!(
            "column '{}' labels only {} samples; {FOLDS}-fold cross-validation needs at least {FOLDS}",
            spec.label,
            keep.len()
        );
    }
    let mut d = data.select_cells(&keep)?;
    // Bulk arrays arrive as log2 intensities and are used as they are; count data get the
    // study's library-size normalisation and log.
    let counts = looks_like_counts(d.matrix());
    if counts {
        cellident_preprocess::normalize_total(&mut d, 1e6)?;
        cellident_preprocess::log1p(&mut d, false)?;
    }
    let groups = match &spec.groups {
        Some(col) => {
            let g = d.obs().labels(col)?;
            let genc = LabelEncoder::fit(&g)?;
            let gc: Vec<u32> = genc
                .transform(&g)
                .into_iter()
                .enumerate()
                .map(|(i, c)| c.with_context(|| format!("sample {i} has no '{col}' group")))
                .collect::<Result<_>>()?;
            Some((col.clone(), gc, genc.classes))
        }
        None => None,
    };
    let config = json!({
        "target": spec.label,
        "target_kind": kind,
        "groups": spec.groups,
        "classes": enc.classes,
        "n_samples": y.len(),
        "n_genes": d.n_genes(),
        "preprocessing": if counts { "normalize_total 1e6 + log1p" } else { "none (log-scale input used as is)" },
    });
    Ok(MetadataData {
        x: d.matrix().clone(),
        y,
        classes: enc.classes,
        genes: d.gene_ids().to_vec(),
        groups,
        config,
    })
}

/// The folds of one target: `(split name, held-out group, train, test)`.
type FoldList = Vec<(String, Option<String>, Vec<usize>, Vec<usize>)>;

fn folds(m: &MetadataData, seed: u64) -> Result<FoldList> {
    let mut out: FoldList = stratified_kfold(&m.y, FOLDS, seed)?
        .into_iter()
        .map(|(tr, te)| (format!("stratified_{FOLDS}fold"), None, tr, te))
        .collect();
    if let Some((column, g, names)) = &m.groups {
        for (group, tr, te) in leave_one_group_out(g)? {
            out.push((
                format!("leave_one_{column}_out"),
                Some(names[group as usize].clone()),
                tr,
                te,
            ));
        }
    }
    Ok(out)
}

/// Cross-validates `make()` models; `after` sees each fitted stratified fold (for attributions).
fn cross_validate<M: Classifier>(
    m: &MetadataData,
    seed: u64,
    name: &str,
    mut make: impl FnMut() -> Result<M>,
    mut after: impl FnMut(&M, bool, &[usize], &[usize]) -> Result<Option<serde_json::Value>>,
    model_config: serde_json::Value,
) -> Result<Vec<RunOutput>> {
    let mut out = Vec::new();
    for (split, held_out, train, test) in folds(m, seed)? {
        let xtr = m.x.select_rows(&train);
        let ytr = pick(&m.y, &train);
        let t = Instant::now();
        let mut model = make()?;
        let mut bar = ProgressBar::new(name);
        let report = model.fit(&xtr, &ytr, m.classes.len(), &mut bar)?;
        let train_seconds = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let pred = model.predict(&m.x.select_rows(&test))?;
        let predict_seconds = t.elapsed().as_secs_f64();
        let fitted = after(&model, held_out.is_none(), &train, &test)?;
        let mut config = m.config.clone();
        if let Some(f) = fitted {
            config["fitted"] = f;
        }
        config["model"] = model_config.clone();
        config["split"] = json!(split);
        config["n_train"] = json!(train.len());
        config["n_test"] = json!(test.len());
        if let Some(g) = &held_out {
            config["held_out_group"] = json!(g);
        }
        if !report.epochs.is_empty() {
            // Summed over every network the model trained (ensemble members x gene-set sizes).
            config["epochs_trained"] = json!(report.epochs.len());
        }
        out.push(RunOutput {
            metrics: classification_metrics(&pick(&m.y, &test), &pred)?,
            train_seconds,
            predict_seconds,
            config,
            folds: true,
            split: Some(split),
        });
    }
    Ok(out)
}

pub fn run_rf(
    data: &ExpressionDataset,
    spec: &TaskSpec,
    seed: u64,
    _ctx: &RunContext,
) -> Result<Vec<RunOutput>> {
    let m = metadata_data(data, spec)?;
    let params = RandomForestParams {
        seed,
        ..Default::default()
    };
    let p = params.clone();
    cross_validate(
        &m,
        seed,
        "random forest",
        move || Ok(RandomForest::new(p.clone())?),
        |_, _, _, _| Ok(None),
        serde_json::to_value(&params)?,
    )
}

pub fn run_mlp(
    data: &ExpressionDataset,
    spec: &TaskSpec,
    seed: u64,
    ctx: &RunContext,
) -> Result<Vec<RunOutput>> {
    let m = metadata_data(data, spec)?;
    let params = mlp_params(seed)?;
    // Out-of-fold DeepLIFT: each sample is explained (towards its own class) by the model of the
    // fold that held it out, against that fold's training mean — the zero of the standardised
    // input the network sees.
    let genes = m.x.n_cols();
    let mut attributions = vec![0f32; m.y.len() * genes];
    let mut max_delta_error = 0f64;
    let p = params.clone();
    let mut outputs = {
        let x = &m.x;
        let y = &m.y;
        cross_validate(
            &m,
            seed,
            "metadata MLP",
            move || Ok(MetadataMlp::new(p.clone(), Device::Cpu)?),
            |mlp: &MetadataMlp, stratified, train, test| {
                let fitted = json!({"member_genes": mlp.member_gene_counts()});
                if !stratified {
                    return Ok(Some(fitted));
                }
                let reference = Reference::mean_of(&x.select_rows(train));
                let xte = x.select_rows(test);
                let a = deeplift(mlp, &xte, &pick(y, test), &reference, &Device::Cpu)?;
                for (k, &i) in test.iter().enumerate() {
                    let row = a.scores.row(k);
                    attributions[i * genes..(i + 1) * genes].copy_from_slice(row);
                    let sum: f64 = row.iter().map(|&v| v as f64).sum();
                    let d = a.delta[k] as f64;
                    max_delta_error = max_delta_error.max((sum - d).abs() / d.abs().max(1e-3));
                }
                Ok(Some(fitted))
            },
            serde_json::to_value(&params)?,
        )?
    };
    let scores = DenseMatrix::new(m.y.len(), genes, attributions)?;
    let top = rank_genes(&scores, &m.y, &m.classes, &m.genes, 25, Ranking::Signed)?;
    std::fs::create_dir_all(&ctx.dir)?;
    cellident_io::write_atomic(&ctx.dir.join("deeplift_top_genes.csv"), |w| {
        w.write_all(rankings_csv(&top).as_bytes())
    })?;
    for o in &mut outputs {
        o.config["deeplift"] = json!({
            "reference": "training mean of the fold (zero after standardisation)",
            "explained": "pre-softmax logit of the sample's own class, out of fold",
            "max_relative_summation_to_delta_error": max_delta_error,
        });
    }
    Ok(outputs)
}

/// The MLP recipe; `CELLIDENT_MLP_PARAMS` (JSON, any subset of fields) overrides it for
/// experiments, and the config of every record says what ran.
fn mlp_params(seed: u64) -> Result<MlpParams> {
    super::methods::with_env_override(
        MlpParams {
            seed,
            ..MlpParams::default()
        },
        "CELLIDENT_MLP_PARAMS",
    )
}

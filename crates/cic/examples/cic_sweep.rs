//! Experiment driver behind the tables of docs/cic.md: 5-fold stratified CV of CIC on one
//! dataset folder (Matrix Market layout), printing per-fold test reconstruction Spearman (median
//! over samples) and, with labels, accuracy; parameters from `CIC_PARAMS` (JSON override of
//! `CicParams::default()`), mode from `CIC_MODE` (`ae` or `classifier`).
//!
//! `cargo run --release -p cellident-cic --example cic_sweep -- ../shared/datasets/all_leukemia BT`
#![allow(clippy::unwrap_used)]

use cellident_cic::{Cic, CicParams, PcaCodec, reconstruction_scores};
use cellident_tensor::{CheckParams, Classifier, NoProgress};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let d = cellident_io::read_mtx_folder(std::path::Path::new(&args[1])).unwrap();
    let labels = d.obs().labels(&args[2]).unwrap();
    let enc = cellident_preprocess::LabelEncoder::fit(&labels).unwrap();
    let codes = enc.transform(&labels);
    let keep: Vec<usize> = (0..codes.len()).filter(|&i| codes[i].is_some()).collect();
    let y: Vec<u32> = keep.iter().map(|&i| codes[i].unwrap()).collect();
    let mut d = d.select_cells(&keep).unwrap();
    if cellident_preprocess::looks_like_counts(d.matrix()) {
        cellident_preprocess::normalize_total(&mut d, 1e4).unwrap();
        cellident_preprocess::log1p(&mut d, false).unwrap();
    }
    let x = d.matrix();
    let mut v = serde_json::to_value(CicParams::default()).unwrap();
    if let Ok(t) = std::env::var("CIC_PARAMS") {
        let o: serde_json::Value = serde_json::from_str(&t).unwrap();
        for (k, val) in o.as_object().unwrap() {
            v[k] = val.clone();
        }
    }
    let params: CicParams = serde_json::from_value(v).unwrap();
    let mode = std::env::var("CIC_MODE").unwrap_or_else(|_| "classifier".into());
    let pca = std::env::var("CIC_PCA").is_ok();
    let (mut sp, mut acc, mut secs, mut epochs, mut mse) = (vec![], vec![], 0.0, 0, vec![]);
    for (train, test) in cellident_preprocess::stratified_kfold(&y, 5, 0).unwrap() {
        let (xtr, xte) = (x.select_rows(&train), x.select_rows(&test));
        let ytr: Vec<u32> = train.iter().map(|&i| y[i]).collect();
        let yte: Vec<u32> = test.iter().map(|&i| y[i]).collect();
        let t = std::time::Instant::now();
        let (o, r) = if pca {
            let codec = PcaCodec::fit(&xtr, params.n_top_genes, params.code_dim, 0).unwrap();
            // The reproduce baseline's classifier: logistic regression on the PCA scores.
            let (ctr, cte) = (
                codec.encode(&xtr).unwrap().to_csr().unwrap(),
                codec.encode(&xte).unwrap().to_csr().unwrap(),
            );
            let mut lr = cellident_baselines::LogisticRegression::new(
                cellident_baselines::LogisticRegressionParams::default(),
            )
            .unwrap();
            lr.fit_quiet(&ctr, &ytr, enc.classes.len()).unwrap();
            acc.push(cellident_metrics::accuracy(&yte, &lr.predict(&cte).unwrap()).unwrap());
            codec.reconstruct(&xte).unwrap()
        } else {
            let mut m = Cic::new(params.check().unwrap(), candle_core::Device::Cpu);
            let rep = if mode == "ae" {
                m.fit_autoencoder(&xtr, &mut NoProgress).unwrap()
            } else {
                let rep = m
                    .fit(&xtr, &ytr, enc.classes.len(), &mut NoProgress)
                    .unwrap();
                let pred = m.predict(&xte).unwrap();
                acc.push(cellident_metrics::accuracy(&yte, &pred).unwrap());
                rep
            };
            epochs += rep.epochs.len();
            m.reconstruct(&xte).unwrap()
        };
        secs += t.elapsed().as_secs_f64();
        let sc = reconstruction_scores(&o, &r).unwrap();
        sp.push(
            sc.median_spearman()
                .expect("a test sample with a non-constant profile"),
        );
        mse.push(sc.median_mse());
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    println!(
        "mse {:.5} spearman {:.4} {:?} accuracy {:.3} epochs {} seconds {:.1}",
        mean(&mse),
        mean(&sp),
        sp.iter()
            .map(|v| (v * 1000.0).round() / 1000.0)
            .collect::<Vec<_>>(),
        mean(&acc),
        epochs,
        secs
    );
}

//! Experiment driver behind the tables of docs/cicl.md: CICL on one dataset folder (Matrix
//! Market layout) with CICL's input recipe (normalise + log1p for counts, top 2000 seurat HVGs,
//! genes scaled unless `CICL_UNSCALED=1`),
//! printing per-epoch loss, the label movement at each re-fit, and ARI/NMI of the first k-means,
//! the model's argmax q and k-means on the final embedding, and a label-free score of the argmax-q
//! partition: its mean silhouette in PCA-50 of the input (the same space for every CICL parameter
//! set, so recipes can be compared without labels). Parameters from `CICL_PARAMS` (JSON override of
//! `CiclParams::default()`; `CICL_REFERENCE=1` starts from `CiclParams::reference()`).
//! `CICL_LABELS_OUT=path` also writes the argmax-q labels, one per line.
//!
//! `cargo run --release -p cellident-cicl --example cicl_run -- ../shared/datasets/pollen_simlr label`
#![allow(clippy::unwrap_used)]

use cellident_cicl::{Cicl, CiclParams};
use cellident_tensor::NoProgress;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let d = cellident_io::read_mtx_folder(std::path::Path::new(&args[1])).unwrap();
    let labels = d.obs().labels(&args[2]).unwrap();
    let enc = cellident_preprocess::LabelEncoder::fit(&labels).unwrap();
    let (keep, y) = enc.labelled_rows(&labels);
    let d = d.select_cells(&keep).unwrap();
    // CICL's input recipe (genes scaled unless CICL_UNSCALED=1).
    let x = cellident_cicl::prepare_input(d, std::env::var("CICL_UNSCALED").is_err())
        .unwrap()
        .values;
    let base = if std::env::var("CICL_REFERENCE").is_ok() {
        CiclParams::reference()
    } else {
        CiclParams::default()
    };
    let mut v = serde_json::to_value(base).unwrap();
    if let Ok(t) = std::env::var("CICL_PARAMS") {
        let o: serde_json::Value = serde_json::from_str(&t).unwrap();
        for (k, val) in o.as_object().unwrap() {
            v[k] = val.clone();
        }
    }
    let params: CiclParams = serde_json::from_value(v).unwrap();
    let k = enc.classes.len();
    println!(
        "{} cells x {} genes, k = {k}, params {}",
        x.n_rows,
        x.n_cols,
        serde_json::to_string(&params).unwrap()
    );
    let mut m = Cicl::from_params(&params).unwrap();
    let t = std::time::Instant::now();
    let fit = m.fit(&x, k, &mut NoProgress).unwrap();
    let secs = t.elapsed().as_secs_f64();
    for l in &fit.losses {
        if l.epoch % 5 == 0 || l.epoch % 5 == 4 || l.epoch + 1 == fit.losses.len() {
            println!(
                "epoch {:>3} loss {:.4} (ins {:.4}, clu {:.4}), pseudo-labels off the partition {:.3}",
                l.epoch, l.total, l.instance, l.cluster, l.labels_off_partition
            );
        }
    }
    for r in &fit.refits {
        let ari = cellident_metrics::clustering_scores(&y, &r.labels)
            .unwrap()
            .ari;
        println!(
            "refit before epoch {:>3}: labels changed {:.3}, ARI {ari:.3}",
            r.epoch, r.labels_changed
        );
    }
    let score = |name: &str, pred: &[u32]| {
        let s = cellident_metrics::clustering_scores(&y, pred).unwrap();
        println!("{name:<22} ARI {:.3} NMI {:.3}", s.ari, s.nmi);
    };
    score("first k-means", &fit.initial_labels);
    score("CICL argmax q", &fit.labels);
    score("CICL k-means on h", &fit.kmeans_labels);
    // Silhouette in PCA-50 of the (scaled) input: the same space for every CICL parameter set,
    // unlike the model's own embedding, so it can rank recipes' partitions without labels.
    // The input is not needed after this, so PCA takes it rather than a copy.
    let n_components = 50.min(x.n_rows).min(x.n_cols);
    let pcs = cellident_preprocess::Pca::fit_transform(
        x,
        &cellident_preprocess::PcaParams {
            n_components,
            ..Default::default()
        },
    )
    .unwrap()
    .1;
    let points: Vec<f64> = pcs.values.iter().map(|&v| f64::from(v)).collect();
    let sil =
        |pred: &[u32]| cellident_metrics::silhouette_score(&points, pcs.n_cols, pred).unwrap();
    println!(
        "silhouette in input PCA-50: first k-means {:.4}, argmax q {:.4}",
        sil(&fit.initial_labels),
        sil(&fit.labels)
    );
    if let Ok(path) = std::env::var("CICL_LABELS_OUT") {
        let lines: Vec<String> = fit.labels.iter().map(u32::to_string).collect();
        cellident_io::write_lines(std::path::Path::new(&path), &lines).unwrap();
    }
    println!(
        "train {:.1} s ({:.2} s/epoch)",
        secs,
        secs / params.epochs.max(1) as f64
    );
}

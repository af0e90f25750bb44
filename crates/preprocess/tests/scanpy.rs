//! Preprocessing against scanpy 1.11.5 (anndata 0.12, scikit-misc 0.5) on the fixtures.
//! `fixtures/reference/scanpy.json` holds scanpy's outputs; each entry records its call
//! (the script that wrote it is described in fixtures/reference/README.md).

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::path::Path;

use cellident_io::{ExpressionDataset, read_mtx_folder};
use cellident_preprocess::*;
use serde_json::Value;

fn fixture(name: &str) -> ExpressionDataset {
    read_mtx_folder(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures")
            .join(name),
    )
    .unwrap()
}

/// The class encoder and every cell's class index of a label column with no missing values.
fn class_codes(d: &ExpressionDataset, column: &str) -> (LabelEncoder, Vec<u32>) {
    let labels = d.obs().labels(column).unwrap();
    let enc = LabelEncoder::fit(&labels).unwrap();
    let y = enc
        .transform(&labels)
        .into_iter()
        .map(Option::unwrap)
        .collect();
    (enc, y)
}

fn reference() -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/reference/scanpy.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn genes(v: &Value) -> HashSet<String> {
    v["genes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap().to_string())
        .collect()
}

fn jaccard(a: &HashSet<String>, b: &HashSet<String>) -> f64 {
    a.intersection(b).count() as f64 / a.union(b).count() as f64
}

fn selected(d: &ExpressionDataset, r: &HvgResult) -> HashSet<String> {
    r.selected
        .iter()
        .map(|&j| d.gene_ids()[j].clone())
        .collect()
}

fn log_normalised_pbmc4k() -> ExpressionDataset {
    let mut d = fixture("pbmc_10x_4k_top2000");
    normalize_total(&mut d, 1e4).unwrap();
    log1p(&mut d, false).unwrap();
    d
}

#[test]
fn normalize_total_and_log1p_match_scanpy() {
    let r = &reference()["log1p_pbmc_10x_4k"];
    let d = log_normalised_pbmc4k();
    let m = d.matrix();
    // Every cell's sum of log values, relative 1e-5.
    for (i, want) in r["row_sums"].as_array().unwrap().iter().enumerate() {
        let (_, v) = m.row(i);
        let got: f64 = v.iter().map(|&x| x as f64).sum();
        let want = want.as_f64().unwrap();
        assert!(
            (got - want).abs() <= 1e-5 * want.abs(),
            "cell {i}: {got} vs {want}"
        );
    }
    // 300 sampled entries, relative 1e-5.
    for e in r["entries"].as_array().unwrap() {
        let (row, col, want) = (
            e[0].as_u64().unwrap() as usize,
            e[1].as_u64().unwrap() as u32,
            e[2].as_f64().unwrap(),
        );
        let (idx, val) = m.row(row);
        let k = idx.binary_search(&col).unwrap();
        assert!(
            (val[k] as f64 - want).abs() <= 1e-5 * want.abs(),
            "({row}, {col}): {} vs {want}",
            val[k]
        );
    }
}

#[test]
fn logging_twice_is_refused() {
    let mut d = fixture("pbmc3k_seurat");
    let err = log1p(&mut d, false).unwrap_err().to_string();
    assert!(err.contains("look log-transformed already"), "{err}");
    let mut counts = fixture("pbmc_10x_4k_top2000");
    log1p(&mut counts, false).unwrap();
    assert!(log1p(&mut counts, false).is_err());
}

#[test]
fn hvg_seurat_matches_scanpy() {
    let want = genes(&reference()["hvg_seurat_pbmc_10x_4k_1000"]);
    let d = log_normalised_pbmc4k();
    let r = highly_variable_genes(
        d.matrix(),
        &HvgParams {
            n_top_genes: 1000,
            ..Default::default()
        },
    )
    .unwrap();
    let got = selected(&d, &r);
    let j = jaccard(&got, &want);
    eprintln!(
        "seurat HVG pbmc_10x_4k: {} genes, Jaccard {j:.4}",
        got.len()
    );
    assert!(j >= 0.98, "Jaccard {j}");

    let want = genes(&reference()["hvg_seurat_pbmc3k_500"]);
    let d = fixture("pbmc3k_seurat");
    let r = highly_variable_genes(
        d.matrix(),
        &HvgParams {
            n_top_genes: 500,
            ..Default::default()
        },
    )
    .unwrap();
    let j = jaccard(&selected(&d, &r), &want);
    eprintln!("seurat HVG pbmc3k: Jaccard {j:.4}");
    assert!(j >= 0.98, "Jaccard {j}");
}

#[test]
fn hvg_seurat_v3_matches_scanpy() {
    for (name, n) in [("pbmc_10x_4k_top2000", 1000), ("baron_mouse", 2000)] {
        let want = genes(&reference()[format!("hvg_seurat_v3_{name}_{n}")]);
        let d = fixture(name);
        let r = highly_variable_genes(
            d.matrix(),
            &HvgParams {
                flavor: HvgFlavor::SeuratV3,
                n_top_genes: n,
                ..Default::default()
            },
        )
        .unwrap();
        let got = selected(&d, &r);
        assert_eq!(got.len(), n);
        let j = jaccard(&got, &want);
        eprintln!("seurat_v3 HVG {name}: Jaccard {j:.4}");
        assert!(j >= 0.98, "{name}: Jaccard {j}");
    }
    // Non-count input is refused.
    let logs = fixture("pbmc3k_seurat");
    let err = highly_variable_genes(
        logs.matrix(),
        &HvgParams {
            flavor: HvgFlavor::SeuratV3,
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("raw counts"), "{err}");
}

#[test]
fn scale_and_pca_match_scanpy() {
    let reference = reference();
    let want_genes = genes(&reference["hvg_seurat_pbmc_10x_4k_1000"]);
    let d = log_normalised_pbmc4k();
    let cols: Vec<usize> = (0..d.n_genes())
        .filter(|&j| want_genes.contains(&d.gene_ids()[j]))
        .collect();
    let d = d.select_genes(&cols).unwrap();
    let scaler = Scaler::fit(d.matrix(), Some(10.0)).unwrap();
    let x = scaler.transform(d.matrix()).unwrap();
    let s = &reference["scale_pbmc_10x_4k_hvg"];
    let sum_abs: f64 = x.values.iter().map(|v| v.abs() as f64).sum();
    let want = s["sum_abs"].as_f64().unwrap();
    assert!((sum_abs - want).abs() <= 1e-5 * want, "{sum_abs} vs {want}");
    for (got, want) in x.values[..5]
        .iter()
        .zip(s["first_row_first5"].as_array().unwrap())
    {
        assert!((*got as f64 - want.as_f64().unwrap()).abs() <= 1e-5);
    }
    assert_eq!(
        x.values.iter().copied().fold(f32::MIN, f32::max) as f64,
        s["max"].as_f64().unwrap()
    );

    let pca = Pca::fit(
        &x,
        &PcaParams {
            n_components: 50,
            ..Default::default()
        },
    )
    .unwrap();
    let want = reference["pca_pbmc_10x_4k_hvg"]["explained_variance_ratio"]
        .as_array()
        .unwrap();
    for (i, (got, want)) in pca.explained_variance_ratio.iter().zip(want).enumerate() {
        let want = want.as_f64().unwrap();
        assert!((got - want).abs() <= 1e-3, "PC{}: {got} vs {want}", i + 1);
    }
    // Same seed, same result; scores from the factorisation equal the projection of the data.
    let params = PcaParams {
        n_components: 50,
        ..Default::default()
    };
    let (again, scores) = Pca::fit_transform(x.clone(), &params).unwrap();
    assert_eq!(pca, again);
    let projected = pca.transform(&x).unwrap();
    let max_diff = scores
        .values
        .iter()
        .zip(&projected.values)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        max_diff < 1e-3,
        "scores differ from the projection by {max_diff}"
    );
    for q in [3, 4, 7] {
        let p = Pca::fit(
            &x,
            &PcaParams {
                power_iterations: q,
                ..params
            },
        )
        .unwrap();
        let worst = p
            .explained_variance_ratio
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b.as_f64().unwrap()).abs())
            .fold(0f64, f64::max);
        eprintln!("power iterations {q}: worst |ratio - scanpy| = {worst:.2e}");
    }
}

#[test]
fn recorded_pipeline_replays_on_query_data() {
    let d = fixture("pbmc_10x_4k_top2000");
    let params = pipeline::PipelineParams {
        normalize_total: Some(1e4),
        log1p: true,
        hvg: Some(HvgParams {
            n_top_genes: 300,
            ..Default::default()
        }),
        scale: Some(Some(10.0)),
        pca: Some(PcaParams {
            n_components: 10,
            ..Default::default()
        }),
    };
    let (pipe, out) = Pipeline::fit(&d, &params).unwrap();
    let pipeline::Prepared::Dense {
        values,
        feature_names,
        ..
    } = out
    else {
        panic!("dense output expected")
    };
    assert_eq!((values.n_rows, values.n_cols), (1000, 10));
    assert_eq!(feature_names[0], "PC1");
    // The saved pipeline (JSON round trip) gives the same scores on the same cells, even with
    // the query's genes in reverse order.
    let pipe: Pipeline = serde_json::from_str(&serde_json::to_string(&pipe).unwrap()).unwrap();
    let reversed: Vec<usize> = (0..d.n_genes()).rev().collect();
    let query = d.select_genes(&reversed).unwrap();
    let pipeline::Prepared::Dense { values: replay, .. } = pipe.apply(&query, 0.5).unwrap() else {
        panic!()
    };
    for (a, b) in values.values.iter().zip(&replay.values) {
        assert!((a - b).abs() < 1e-3, "{a} vs {b}");
    }
    // fit_dense: the same values; a recipe that stays sparse is refused by name.
    let (_, dense) = Pipeline::fit_dense(&d, &params).unwrap();
    assert_eq!(dense, values);
    let sparse = pipeline::PipelineParams::log_hvg(&d, 300);
    let err = Pipeline::fit_dense(&d, &sparse).unwrap_err().to_string();
    assert!(err.contains("recipe"), "{err}");
}

#[test]
fn qc_filters_count_what_they_remove() {
    let d = fixture("pbmc_10x_4k_top2000");
    let p = qc::QcParams {
        min_genes: Some(150),
        min_cells: Some(10),
        ..Default::default()
    };
    let (out, report) = qc::apply_qc(&d, &p).unwrap();
    let expected_cells = d.matrix().row_nnz().iter().filter(|&&n| n >= 150).count();
    assert_eq!(report.cells_kept, expected_cells);
    assert_eq!(report.removed_min_genes, d.n_cells() - expected_cells);
    assert_eq!(out.n_cells(), expected_cells);
    assert!(out.n_genes() <= d.n_genes());
    // No mitochondrial genes among these 2000 variable genes: the filter says so.
    let p = qc::QcParams {
        max_mito_fraction: Some(0.05),
        ..Default::default()
    };
    let err = qc::apply_qc(&d, &p).unwrap_err().to_string();
    assert!(err.contains("no gene name starts with"), "{err}");
}

#[test]
fn wilcoxon_markers_match_scanpy() {
    let r = &reference()["wilcoxon_pbmc68k_bulk_labels_25"]["groups"];
    let d = fixture("pbmc68k_reduced");
    let (enc, y) = class_codes(&d, "bulk_labels");
    let scores = markers::wilcoxon_scores(d.matrix(), &y, enc.classes.len()).unwrap();
    let top = markers::top_genes(&scores, 25);
    for (k, class) in enc.classes.iter().enumerate() {
        let want: Vec<&str> = r[class]["names"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let got: Vec<&str> = top[k].iter().map(|&j| d.gene_ids()[j].as_str()).collect();
        assert_eq!(got, want, "{class}");
        for (&j, want) in top[k].iter().zip(r[class]["scores"].as_array().unwrap()) {
            let want = want.as_f64().unwrap();
            // scanpy stores the scores as float32
            assert!(
                (scores[k][j] - want).abs() <= 1e-5 * want.abs().max(1.0),
                "{class}: {} vs {want}",
                scores[k][j]
            );
        }
    }
}

#[test]
fn anova_f_matches_scikit_learn_f_classif() {
    // scikit-learn 1.9.1: `f_classif(X[labelled], obs["sex"][labelled])` on the all_leukemia
    // fixture (125 of 128 samples have a sex); the six largest F values, in order.
    let d = fixture("all_leukemia");
    let labels = d.obs().labels("sex").unwrap();
    let enc = LabelEncoder::fit(&labels).unwrap();
    let codes = enc.transform(&labels);
    let keep: Vec<usize> = (0..codes.len()).filter(|&i| codes[i].is_some()).collect();
    let y: Vec<u32> = keep.iter().map(|&i| codes[i].unwrap()).collect();
    let x = d.matrix().select_rows(&keep);
    assert_eq!(y.len(), 125);
    let expected = [
        ("41214_at", 559.6551282867946),
        ("38355_at", 465.49530061996927),
        ("37583_at", 285.42893861001915),
        ("38446_at", 257.3490743831135),
        ("35885_at", 150.55567919095773),
        ("34477_at", 142.8926081950664),
    ];
    let f = anova_f(&x, &y, enc.classes.len()).unwrap();
    let top = top_genes_by_anova_f(&x, &y, enc.classes.len(), 6).unwrap();
    for (&j, (gene, value)) in top.iter().zip(expected) {
        assert_eq!(d.gene_ids()[j], gene);
        // f32 input summed in f64: agreement to 1e-5 relative.
        assert!(
            (f[j] - value).abs() < 1e-5 * value,
            "{gene}: {} vs {value}",
            f[j]
        );
    }
}

/// Adjusted Rand index by the pair-counting formula (Hubert & Arabie), in f64; the metrics
/// crate is not a dependency of preprocess.
fn adjusted_rand(a: &[u32], b: &[u32]) -> f64 {
    use std::collections::HashMap;
    let choose2 = |x: f64| x * (x - 1.0) / 2.0;
    let mut table: HashMap<(u32, u32), f64> = HashMap::new();
    let mut ra: HashMap<u32, f64> = HashMap::new();
    let mut rb: HashMap<u32, f64> = HashMap::new();
    for (&x, &y) in a.iter().zip(b) {
        *table.entry((x, y)).or_default() += 1.0;
        *ra.entry(x).or_default() += 1.0;
        *rb.entry(y).or_default() += 1.0;
    }
    let index: f64 = table.values().map(|&v| choose2(v)).sum();
    let sa: f64 = ra.values().map(|&v| choose2(v)).sum();
    let sb: f64 = rb.values().map(|&v| choose2(v)).sum();
    let expected = sa * sb / choose2(a.len() as f64);
    (index - expected) / ((sa + sb) / 2.0 - expected)
}

#[test]
fn neighbors_and_leiden_match_scanpy_and_leidenalg() {
    // Graph of the pbmc68k_reduced fixture's own values (700 x 765, no PCA so that both sides
    // start from identical coordinates); the reference entry records the scanpy and leidenalg
    // calls.
    let reference = &reference()["neighbors_leiden_pbmc68k_X"];
    let d = fixture("pbmc68k_reduced");
    let x = cellident_tensor::DenseMatrix::new(d.n_cells(), d.n_genes(), d.matrix().to_dense())
        .unwrap();
    let g = neighbors(&x, &NeighborsParams::default()).unwrap();
    // Distances are rounded differently (f32 here, sklearn's f32 expansion there), which can
    // swap a near-tied 14th and 15th neighbour: allow 0.05 % of the stored entries to differ.
    let nnz = reference["nnz"].as_u64().unwrap() as f64;
    assert!(
        (g.targets.len() as f64 - nnz).abs() <= 5e-4 * nnz,
        "{} stored entries of the connectivities vs scanpy's {nnz}",
        g.targets.len()
    );
    let want = reference["weight_sum"].as_f64().unwrap();
    let sum: f64 = g.weights.iter().sum();
    assert!((sum - want).abs() <= 1e-4 * want, "{sum} vs {want}");
    let degrees = g.degrees();
    for (i, want) in reference["row_sums_first10"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let want = want.as_f64().unwrap();
        assert!(
            (degrees[i] - want).abs() <= 1e-4,
            "cell {i}: {} vs {want}",
            degrees[i]
        );
    }

    // Leiden: per seed at least leidenalg's modularity less 0.005 on average, and the same
    // partition up to a few cells (ARI with leidenalg's seed-0 partition).
    let theirs: Vec<f64> = reference["leiden_modularity"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let their_labels: Vec<u32> = reference["leiden_labels_seed0"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let mut ours = Vec::new();
    for seed in 0..5 {
        let r = leiden(
            &g,
            &LeidenParams {
                seed,
                ..Default::default()
            },
        )
        .unwrap();
        let ari = adjusted_rand(&r.labels, &their_labels);
        eprintln!(
            "seed {seed}: modularity {:.4}, {} communities, ARI with leidenalg {ari:.3}",
            r.quality, r.n_communities
        );
        assert!(ari > 0.8, "seed {seed}: ARI {ari} with leidenalg");
        assert!((modularity(&g, &r.labels, 1.0) - r.quality).abs() < 1e-12);
        ours.push(r.quality);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    assert!(
        mean(&ours) >= mean(&theirs) - 0.005,
        "modularity {:.4} vs leidenalg {:.4}",
        mean(&ours),
        mean(&theirs)
    );
}

/// The anchors' split (anchors.md §A): scikit-learn 1.9.1
/// `train_test_split(np.arange(700), test_size=0.2, stratify=obs["bulk_labels"], random_state=0)`
/// on pbmc68k_reduced gives 140 test cells whose row indices sum to 48,477 and start
/// 2, 7, 13, 26, 28, 48, …; `sklearn_stratified_split` draws the same cells.
#[test]
fn sklearn_split_matches_train_test_split_on_pbmc68k_reduced() {
    let d = fixture("pbmc68k_reduced");
    let (_, y) = class_codes(&d, "bulk_labels");
    let (train, test) = sklearn_stratified_split(&y, 0.2, 0).unwrap();
    assert_eq!((train.len(), test.len()), (560, 140));
    assert_eq!(test.iter().sum::<usize>(), 48_477);
    assert_eq!(
        test[..20],
        [
            2, 7, 13, 26, 28, 48, 51, 57, 61, 64, 68, 69, 72, 89, 91, 98, 99, 101, 107, 115
        ]
    );
}

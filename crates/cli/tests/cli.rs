//! The one CLI integration-test binary: real `cellident` commands on the fixtures, each test
//! in its own temp dir.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture(p: &str) -> PathBuf {
    root().join("fixtures").join(p)
}

fn cellident(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cellident"));
    for a in args {
        c.arg(a);
    }
    c.arg("--quiet");
    c.output().expect("cellident runs")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn inspect_json(path: &Path) -> Value {
    serde_json::from_str(&ok(&cellident(&[&"inspect", &path, &"--json"])))
        .expect("inspect --json prints JSON")
}

fn class_counts(summary: &Value, column: &str) -> Value {
    summary["obs"]
        .as_array()
        .and_then(|cols| cols.iter().find(|c| c["name"] == column))
        .map(|c| c["class_counts"].clone())
        .unwrap_or(Value::Null)
}

#[test]
fn import_inspect_export_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let pq = dir.path().join("pbmc.parquet");
    ok(&cellident(&[
        &"import",
        &fixture("pbmc68k_reduced"),
        &"-o",
        &pq,
    ]));
    let s = inspect_json(&pq);
    // scipy: shape (700, 765), nnz 174400, float32 values summed in float64 = 319044.23824107647
    assert_eq!(s["n_cells"], 700);
    assert_eq!(s["n_genes"], 765);
    assert_eq!(s["nnz"], 174400);
    assert!((s["value_sum"].as_f64().unwrap() - 319044.23824107647).abs() < 1e-6 * 319044.0);
    assert_eq!(s["value_kind"], "log");
    assert_eq!(class_counts(&s, "bulk_labels")["Dendritic"], 240);

    let out = dir.path().join("export");
    ok(&cellident(&[
        &"export",
        &pq,
        &"-o",
        &out,
        &"--format",
        &"mtx",
    ]));
    let back = cellident_io::read_mtx_folder(&out).unwrap();
    assert_eq!(
        back,
        cellident_io::read_mtx_folder(&fixture("pbmc68k_reduced")).unwrap()
    );

    let csv = dir.path().join("csv");
    ok(&cellident(&[
        &"export",
        &pq,
        &"-o",
        &csv,
        &"--format",
        &"csv",
    ]));
    let dense = cellident_io::read_dense_text(
        &csv.join("matrix.csv"),
        Some(&csv.join("obs.csv")),
        &Default::default(),
    )
    .unwrap();
    assert_eq!(dense.matrix(), back.matrix());
    assert_eq!(
        dense.obs().labels("bulk_labels").unwrap(),
        back.obs().labels("bulk_labels").unwrap()
    );
}

#[test]
fn import_10x_with_obs_then_inspect() {
    let dir = tempfile::tempdir().unwrap();
    let pq = dir.path().join("tenx.parquet");
    let tenx = fixture("pbmc3k_10x");
    ok(&cellident(&[
        &"import",
        &tenx.join("filtered_feature_bc_matrix"),
        &"--obs",
        &tenx.join("obs.csv.gz"),
        &"-o",
        &pq,
    ]));
    let s = inspect_json(&pq);
    assert_eq!(
        (s["n_cells"].as_u64(), s["n_genes"].as_u64()),
        (Some(999), Some(2000))
    );
    assert_eq!(s["value_kind"], "counts");
    assert_eq!(s["value_sum"], 596163.0); // scipy: sum of the integer counts
    assert_eq!(
        s["var_columns"],
        serde_json::json!(["gene_ids", "feature_types"])
    );
    let total: u64 = class_counts(&s, "classified")
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(total, 999);
}

#[test]
fn import_h5ad_and_transposed_tsv() {
    let dir = tempfile::tempdir().unwrap();
    let pq = dir.path().join("h5.parquet");
    ok(&cellident(&[
        &"import",
        &fixture("pbmc68k_reduced/pbmc68k_reduced.h5ad"),
        &"--raw",
        &"-o",
        &pq,
    ]));
    let s = inspect_json(&pq);
    assert_eq!(s["nnz"], 174400);
    assert_eq!(class_counts(&s, "bulk_labels")["CD34+"], 13);

    let tsv = dir.path().join("tsv.parquet");
    ok(&cellident(&[
        &"import",
        &fixture("dense/pbmc68k_reduced_genes_by_cells.tsv.gz"),
        &"--format",
        &"csv",
        &"--transpose",
        &"--obs",
        &fixture("dense/pbmc68k_reduced_obs.csv"),
        &"-o",
        &tsv,
    ]));
    let s = inspect_json(&tsv);
    assert_eq!(
        (s["n_cells"].as_u64(), s["n_genes"].as_u64()),
        (Some(40), Some(765))
    );
}

#[test]
fn errors_are_one_line_and_name_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let out = cellident(&[
        &"import",
        &dir.path().join("missing.h5ad"),
        &"-o",
        &dir.path().join("x.parquet"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: ")
            && err.contains("missing.h5ad")
            && err.trim_end().lines().count() == 1,
        "{err}"
    );
    assert!(!dir.path().join("x.parquet").exists());

    // A folder that is neither layout.
    let out = cellident(&[&"import", &dir.path(), &"-o", &dir.path().join("x.parquet")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pass --format"));

    // Inspecting a file that is not a cellident dataset.
    let f = dir.path().join("plain.parquet");
    std::fs::write(&f, b"not parquet").unwrap();
    let out = cellident(&[&"inspect", &f]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("plain.parquet"));

    // Usage errors exit with 2.
    let out = cellident(&[&"frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}

/// Every dataset of `../shared/datasets` imports, inspects to the numbers scipy/pandas computed
/// (fixtures/shared_expectations.json records the calls), and exports back to the same data.
/// The shared folder is not part of a clone; without it this test has nothing to check and says so.
#[test]
fn every_shared_dataset_round_trips() {
    let shared = root().join("../shared/datasets");
    if !shared.is_dir() {
        eprintln!("../shared/datasets not found: shared-dataset round trip not checked");
        return;
    }
    let expect: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("shared_expectations.json")).unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for (name, e) in expect["datasets"].as_object().unwrap() {
        let src = shared.join(name);
        if !src.is_dir() {
            continue;
        }
        let pq = dir.path().join(format!("{name}.parquet"));
        ok(&cellident(&[&"import", &src, &"-o", &pq]));
        let s = inspect_json(&pq);
        for key in ["n_cells", "n_genes", "nnz"] {
            assert_eq!(s[key], e[key], "{name}: {key}");
        }
        let (got, want) = (
            s["value_sum"].as_f64().unwrap(),
            e["value_sum"].as_f64().unwrap(),
        );
        assert!(
            (got - want).abs() <= 1e-6 * want.abs().max(1.0),
            "{name}: value sum {got} vs {want}"
        );
        for (col, counts) in e["class_counts"].as_object().unwrap() {
            assert_eq!(&class_counts(&s, col), counts, "{name}: {col}");
        }
        let out = dir.path().join(name);
        ok(&cellident(&[
            &"export",
            &pq,
            &"-o",
            &out,
            &"--format",
            &"mtx",
        ]));
        assert_eq!(
            cellident_io::read_mtx_folder(&out).unwrap(),
            cellident_io::read_mtx_folder(&src).unwrap(),
            "{name}: export differs from the source"
        );
        checked += 1;
    }
    assert!(checked >= 16, "only {checked} shared datasets found");
}

#[test]
fn preprocess_records_its_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pca.parquet");
    ok(&cellident(&[
        &"preprocess",
        &fixture("pbmc_10x_4k_top2000"),
        &"-o",
        &out,
        &"--min-genes",
        &"100",
        &"--normalize-total",
        &"1e4",
        &"--log1p",
        &"--hvg",
        &"500",
        &"--scale",
        &"--pca",
        &"20",
    ]));
    let s = inspect_json(&out);
    assert_eq!(s["n_genes"], 20);
    let kept = s["n_cells"].as_u64().unwrap();
    assert!(kept > 900 && kept <= 1000, "{kept}");
    let d = cellident_io::read_parquet(&out).unwrap();
    assert_eq!(d.gene_ids()[0], "PC1");
    // Logging log-normalised data is refused with an explanation.
    let out = cellident(&[
        &"preprocess",
        &fixture("pbmc3k_seurat"),
        &"-o",
        &dir.path().join("x.parquet"),
        &"--log1p",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("look log-transformed already"));
}

#[test]
fn evaluate_reports_every_metric() {
    // truth = bulk_labels, prediction = the louvain clusters shipped with pbmc68k_reduced.
    // scikit-learn 1.9.1: adjusted_rand_score = 0.4147795455021274,
    // normalized_mutual_info_score = 0.6174435999754219, adjusted_mutual_info_score = 0.6041008199271367.
    let obs = fixture("pbmc68k_reduced/obs.csv.gz");
    let out = cellident(&[
        &"evaluate",
        &"--truth",
        &obs,
        &"--pred",
        &obs,
        &"--truth-column",
        &"bulk_labels",
        &"--pred-column",
        &"louvain",
        &"--json",
    ]);
    let e: Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(e["n_cells"], 700);
    assert!((e["ari"].as_f64().unwrap() - 0.4147795455021274).abs() < 1e-9);
    assert!((e["nmi"].as_f64().unwrap() - 0.6174435999754219).abs() < 1e-9);
    assert!((e["ami"].as_f64().unwrap() - 0.6041008199271367).abs() < 1e-9);
    assert_eq!(e["accuracy"], 0.0); // cluster numbers never equal cell-type names
    assert!(e["per_class"]["Dendritic"]["support"] == 240);

    // A prediction file with one wrong label out of 700.
    let dir = tempfile::tempdir().unwrap();
    let d = cellident_io::read_mtx_folder(&fixture("pbmc68k_reduced")).unwrap();
    let mut labels = d.obs().labels("bulk_labels").unwrap();
    labels[0] = Some("CD34+".into());
    let pred = cellident_io::Table::new(
        700,
        vec![cellident_io::Column {
            name: "prediction".into(),
            data: cellident_io::ColumnData::Text(labels),
        }],
    )
    .unwrap();
    let path = dir.path().join("pred.csv");
    cellident_io::write_annotation_csv(&path, "cell", d.cell_ids(), &pred).unwrap();
    let e: Value = serde_json::from_str(&ok(&cellident(&[
        &"evaluate",
        &"--truth",
        &obs,
        &"--pred",
        &path,
        &"--truth-column",
        &"bulk_labels",
    ])))
    .unwrap();
    assert!((e["accuracy"].as_f64().unwrap() - 699.0 / 700.0).abs() < 1e-12);
    // Unknown columns are named.
    let out = cellident(&[
        &"evaluate",
        &"--truth",
        &obs,
        &"--pred",
        &path,
        &"--truth-column",
        &"cell_type",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("'cell_type'"));
}

/// ARI of `clusters.csv` (column `cluster`) against the pollen fixture's `label`, through
/// `cellident evaluate`.
fn pollen_ari(clusters: &Path) -> f64 {
    let e = evaluate_fixture("pollen_simlr", "label", clusters, "cluster");
    assert_eq!(e["n_cells"], 249, "every cell is clustered");
    e["ari"].as_f64().unwrap()
}

/// `cellident evaluate` of column `pred_column` of `pred` against obs column `truth_column`
/// of a fixture.
fn evaluate_fixture(name: &str, truth_column: &str, pred: &Path, pred_column: &str) -> Value {
    let obs = fixture(&format!("{name}/obs.csv.gz"));
    serde_json::from_str(&ok(&cellident(&[
        &"evaluate",
        &"--truth",
        &obs,
        &"--truth-column",
        &truth_column,
        &"--pred",
        &pred,
        &"--pred-column",
        &pred_column,
    ])))
    .unwrap()
}

/// The cells of a fixture with the genes in reverse order, as a Parquet dataset in `dir`.
fn reversed_gene_copy(fixture_dir: &Path, dir: &Path) -> PathBuf {
    let d = cellident_io::read_mtx_folder(fixture_dir).unwrap();
    let reversed: Vec<usize> = (0..d.n_genes()).rev().collect();
    let path = dir.join("reversed.parquet");
    cellident_io::write_parquet(
        &path,
        &d.select_genes(&reversed).unwrap(),
        &Default::default(),
    )
    .unwrap();
    path
}

#[test]
fn cluster_with_leiden_kmeans_and_cicl() {
    // pollen_simlr (249 cells, 11 labelled tissues). The same recipe in `cargo xtask reproduce`
    // scores Leiden 0.749 and PCA-50 + k-means (K = 11) 0.920 on this fixture
    // (docs/results.md); CICL after 2 epochs stays near its first k-means (0.936 with the default
    // since 2026-12-07).
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("pollen_simlr");
    // `cellident cluster pollen -o OUT --method METHOD --k 11 EXTRA...`; `cluster_k11` also
    // requires it to succeed.
    let run_k11 = |out: &Path, method: &str, extra: &[&dyn AsRef<std::ffi::OsStr>]| {
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
            &"cluster",
            &input,
            &"-o",
            &out,
            &"--method",
            &method,
            &"--k",
            &"11",
        ];
        args.extend_from_slice(extra);
        cellident(&args)
    };
    let cluster_k11 = |out: &Path, method: &str, extra: &[&dyn AsRef<std::ffi::OsStr>]| {
        ok(&run_k11(out, method, extra));
    };
    let leiden = dir.path().join("leiden.csv");
    ok(&cellident(&[&"cluster", &input, &"-o", &leiden]));
    let first = std::fs::read_to_string(&leiden).unwrap();
    assert!(first.starts_with("cell,cluster\ncell_1,"), "{first:.40}");
    assert!(pollen_ari(&leiden) > 0.7);
    // Same seed, same clusters.
    ok(&cellident(&[&"cluster", &input, &"-o", &leiden]));
    assert_eq!(std::fs::read_to_string(&leiden).unwrap(), first);

    let km = dir.path().join("kmeans.csv");
    cluster_k11(&km, "kmeans", &[]);
    assert!(pollen_ari(&km) > 0.85);
    // Mini-batch k-means (batches of 1,024 > 249 cells: each step sees a resample of all cells).
    let mb = dir.path().join("minibatch.csv");
    cluster_k11(&mb, "kmeans", &[&"--minibatch"]);
    let mb_ari = pollen_ari(&mb);
    eprintln!("pollen mini-batch k-means ARI {mb_ari:.3}");
    assert!(mb_ari > 0.8, "{mb_ari} (measured 0.893)");
    // Without scaling (the sparse PCA with implicit centring, the million-cell path).
    let unscaled = dir.path().join("unscaled.csv");
    cluster_k11(&unscaled, "kmeans", &[&"--no-scale"]);
    let unscaled_ari = pollen_ari(&unscaled);
    eprintln!("pollen k-means on unscaled PCA ARI {unscaled_ari:.3}");
    assert!(unscaled_ari > 0.8, "{unscaled_ari} (measured 0.885)");
    // Streamed from Parquet in row groups of 64 cells (HVG, scaling and the PCA's scatter
    // gathered in passes): the in-memory run's clusters up to the trailing components of the
    // PCA (the scatter's subspace iteration against the dense one; measured 0.908 vs 0.920).
    let parquet = dir.path().join("pollen.parquet");
    ok(&cellident(&[
        &"import",
        &input,
        &"-o",
        &parquet,
        &"--cells-per-row-group",
        &"64",
    ]));
    let streamed = dir.path().join("streamed.csv");
    ok(&cellident(&[
        &"cluster",
        &parquet,
        &"-o",
        &streamed,
        &"--method",
        &"kmeans",
        &"--k",
        &"11",
        &"--stream",
    ]));
    let (streamed_ari, km_ari) = (pollen_ari(&streamed), pollen_ari(&km));
    eprintln!("pollen k-means streamed ARI {streamed_ari:.3}, in memory {km_ari:.3}");
    assert!(
        (streamed_ari - km_ari).abs() < 0.02,
        "{streamed_ari} vs {km_ari}"
    );
    // Only a Parquet file streams, and only Leiden and k-means.
    let out = cellident(&[&"cluster", &input, &"-o", &streamed, &"--stream"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cellident import"));

    let cicl = dir.path().join("cicl.csv");
    let emb = dir.path().join("embedding.parquet");
    cluster_k11(&cicl, "cicl", &[&"--epochs", &"2", &"--embedding", &emb]);
    let cicl_ari = pollen_ari(&cicl);
    eprintln!("pollen CICL (2 epochs) ARI {cicl_ari:.3}");
    assert!(cicl_ari > 0.88, "{cicl_ari}");
    // The same with the log values unscaled (docs/cicl.md, the paper's recipe: the first
    // k-means 0.880 on pollen, 0.934 scaled).
    let cicl_unscaled = dir.path().join("cicl_unscaled.csv");
    cluster_k11(&cicl_unscaled, "cicl", &[&"--epochs", &"1", &"--no-scale"]);
    let unscaled_cicl_ari = pollen_ari(&cicl_unscaled);
    eprintln!("pollen CICL (1 epoch) on unscaled genes ARI {unscaled_cicl_ari:.3}");
    assert!(unscaled_cicl_ari > 0.8, "{unscaled_cicl_ari}");
    // One CICL option, one epoch: a value outside its range is refused before training, with
    // an error naming the parameter and no output file; a value inside it trains to a sensible
    // clustering of pollen_simlr.
    let cicl_option = |flag: &str, refused: &str, accepted: &str| -> f64 {
        let csv = dir.path().join(format!("cicl_{flag}.csv"));
        let run = |value: &str| {
            run_k11(
                &csv,
                "cicl",
                &[&"--epochs", &"1", &format!("--{flag}"), &value],
            )
        };
        let out = run(refused);
        assert_eq!(out.status.code(), Some(1), "--{flag} {refused}");
        let err = String::from_utf8_lossy(&out.stderr);
        // The message names the parameter (`input_offset` for `--input-offset`).
        assert!(err.contains(&flag.replace('-', "_")), "{err}");
        assert!(!csv.exists(), "no output after a refused --{flag}");
        ok(&run(accepted));
        let ari = pollen_ari(&csv);
        eprintln!("pollen CICL (1 epoch, --{flag} {accepted}) ARI {ari:.3}");
        ari
    };
    // A sharper temperature (docs/cicl.md "Temperature": 0.964 on the full cellbench_5cl at
    // τ 0.2); a non-positive one is refused.
    let sharp_ari = cicl_option("temperature", "0", "0.2");
    assert!(sharp_ari > 0.8, "{sharp_ari}");
    // Dropout is a rate in [0, 1): 1 is refused; the paper's 0.2 (docs/cicl.md "Dropout 0";
    // the default is 0) trains.
    let dropout_ari = cicl_option("dropout", "1", "0.2");
    assert!(dropout_ari > 0.8, "{dropout_ari}");
    // The profile under the LayerNorm is a height >= 0: -1 is refused; at 2 the first k-means
    // on the full pollen_simlr scores 0.852, one epoch 0.869 (docs/cicl.md "The profile without
    // dropout").
    let profile_ari = cicl_option("input-offset", "-1", "2");
    assert!(profile_ari > 0.75, "{profile_ari}");
    // The paper's recipe through the three flags that undo the default's changes.
    let cicl_paper = dir.path().join("cicl_paper.csv");
    cluster_k11(
        &cicl_paper,
        "cicl",
        &[
            &"--epochs",
            &"1",
            &"--dropout",
            &"0.2",
            &"--input-offset",
            &"0",
            &"--first-kmeans-pcs",
            &"0",
        ],
    );
    let paper_ari = pollen_ari(&cicl_paper);
    eprintln!("pollen CICL (1 epoch, the paper's recipe) ARI {paper_ari:.3}");
    assert!(paper_ari > 0.8, "{paper_ari}");
    let summary = inspect_json(&emb);
    assert_eq!(summary["n_cells"], 249);
    assert_eq!(
        summary["n_genes"], 2000,
        "one embedding feature per input gene"
    );

    // Without --k, k-means takes the number of Leiden communities and says so.
    let out = Command::new(env!("CARGO_BIN_EXE_cellident"))
        .args(["cluster", "--method", "kmeans", "-o"])
        .arg(&km)
        .arg(&input)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Leiden finds"));

    // Misuse is an error that says what to do, exit code 1.
    let out = cellident(&[&"cluster", &input, &"-o", &km, &"--embedding", &emb]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--method cicl"));
}

/// `cell -> (prediction, probability)` of an annotate output.
fn predictions(path: &Path) -> std::collections::BTreeMap<String, (String, f64)> {
    let mut r = csv_reader(path);
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            (
                rec[0].to_string(),
                (rec[1].to_string(), rec[2].parse::<f64>().unwrap()),
            )
        })
        .collect()
}

fn csv_reader(path: &Path) -> csv::Reader<std::fs::File> {
    csv::Reader::from_path(path).unwrap()
}

#[test]
fn train_then_annotate_with_another_gene_order() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixture("pbmc68k_reduced");
    let model = dir.path().join("nact.safetensors");
    ok(&cellident(&[
        &"train",
        &data,
        &"--label",
        &"bulk_labels",
        &"-o",
        &model,
        &"--epochs",
        &"10",
    ]));
    assert!(dir.path().join("nact.json").exists(), "sidecar written");

    // The same cells with the genes in reverse order, as a Parquet dataset.
    let shuffled = reversed_gene_copy(&data, dir.path());

    let a = dir.path().join("a.csv");
    let b = dir.path().join("b.csv");
    ok(&cellident(&[
        &"annotate",
        &data,
        &"--model",
        &model,
        &"-o",
        &a,
    ]));
    ok(&cellident(&[
        &"annotate",
        &shuffled,
        &"--model",
        &model,
        &"-o",
        &b,
    ]));
    let (pa, pb) = (predictions(&a), predictions(&b));
    assert_eq!(pa.len(), 700);
    for (cell, (label, p)) in &pa {
        let (lb, q) = &pb[cell];
        assert_eq!(label, lb, "cell {cell}");
        assert!((p - q).abs() < 1e-6, "cell {cell}: {p} vs {q}");
    }
    // On its own training cells N-ACT (10 epochs) is right for most of them.
    let e = evaluate_fixture("pbmc68k_reduced", "bulk_labels", &a, "prediction");
    assert!(e["accuracy"].as_f64().unwrap() > 0.75, "{}", e["accuracy"]);

    // A threshold turns exactly the low-confidence cells into Unassigned.
    let c = dir.path().join("c.csv");
    ok(&cellident(&[
        &"annotate",
        &data,
        &"--model",
        &model,
        &"-o",
        &c,
        &"--min-probability",
        &"0.9",
    ]));
    let pc = predictions(&c);
    let low = pa.values().filter(|(_, p)| *p < 0.9).count();
    assert!(low > 0, "some cells are below 0.9");
    assert_eq!(pc.values().filter(|(l, _)| l == "Unassigned").count(), low);

    // Raw counts for a model trained on log values: refused, saying what to do.
    let out = cellident(&[
        &"annotate",
        &fixture("pbmc3k_10x/filtered_feature_bc_matrix"),
        &"--model",
        &model,
        &"-o",
        &c,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("raw counts") && err.contains("log1p"), "{err}");
}

/// `train --stream` fits the recipe in one pass over a Parquet file and trains N-ACT through
/// the shuffle buffer; the model is the one in-memory training records (same genes, same
/// preprocessing), and annotating the Parquet file (streamed) or the 10x folder (in memory)
/// gives the same predictions.
#[test]
fn streamed_training_and_annotation_of_a_parquet_file() {
    let dir = tempfile::tempdir().unwrap();
    let tenx = fixture("pbmc3k_10x");
    let pq = dir.path().join("pbmc3k.parquet");
    ok(&cellident(&[
        &"import",
        &tenx.join("filtered_feature_bc_matrix"),
        &"--obs",
        &tenx.join("obs.csv.gz"),
        &"-o",
        &pq,
    ]));
    let streamed = dir.path().join("streamed.safetensors");
    let out = cellident(&[
        &"train",
        &pq,
        &"--stream",
        &"--buffer-cells",
        &"256",
        &"--label",
        &"classified",
        &"--n-top-genes",
        &"1000",
        &"--epochs",
        &"15",
        &"-o",
        &streamed,
    ]);
    ok(&out);
    let in_memory = dir.path().join("in_memory.safetensors");
    ok(&cellident(&[
        &"train",
        &pq,
        &"--label",
        &"classified",
        &"--n-top-genes",
        &"1000",
        &"--epochs",
        &"1",
        &"-o",
        &in_memory,
    ]));
    let sidecar = |name: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(dir.path().join(name)).unwrap()).unwrap()
    };
    let (s, m) = (sidecar("streamed.json"), sidecar("in_memory.json"));
    assert_eq!(
        s["preprocessing"], m["preprocessing"],
        "one-pass recipe = in-memory recipe"
    );
    assert_eq!(s["genes"], m["genes"]);
    assert_eq!(s["genes"].as_array().unwrap().len(), 1000);

    let a = dir.path().join("a.csv");
    let b = dir.path().join("b.csv");
    ok(&cellident(&[
        &"annotate",
        &pq,
        &"--model",
        &streamed,
        &"-o",
        &a,
    ]));
    ok(&cellident(&[
        &"annotate",
        &tenx.join("filtered_feature_bc_matrix"),
        &"--model",
        &streamed,
        &"-o",
        &b,
    ]));
    let (pa, pb) = (predictions(&a), predictions(&b));
    assert_eq!(pa.len(), 999);
    for (cell, (label, p)) in &pa {
        let (lb, q) = &pb[cell];
        assert_eq!(label, lb, "cell {cell}");
        assert!((p - q).abs() < 1e-6, "cell {cell}: {p} vs {q}");
    }
    let e = evaluate_fixture("pbmc3k_seurat", "classified", &a, "prediction");
    eprintln!("streamed N-ACT, training-cell accuracy {}", e["accuracy"]);
    assert!(e["accuracy"].as_f64().unwrap() > 0.75, "{}", e["accuracy"]);

    // --stream needs a Parquet file.
    let out = cellident(&[
        &"train",
        &tenx.join("filtered_feature_bc_matrix"),
        &"--stream",
        &"--label",
        &"classified",
        &"-o",
        &streamed,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cellident import"));

    // CIC and the MLP stream too (their own statistics in extra passes over the file); a few
    // epochs, and the streamed checkpoint annotates the Parquet file.
    for (kind, epochs, floor) in [("cic", "5", 0.75), ("mlp", "5", 0.75)] {
        let model = dir.path().join(format!("streamed_{kind}.safetensors"));
        ok(&cellident(&[
            &"train",
            &pq,
            &"--stream",
            &"--model",
            &kind,
            &"--buffer-cells",
            &"256",
            &"--label",
            &"classified",
            &"--epochs",
            &epochs,
            &"-o",
            &model,
        ]));
        let out_csv = dir.path().join(format!("streamed_{kind}.csv"));
        ok(&cellident(&[
            &"annotate",
            &pq,
            &"--model",
            &model,
            &"-o",
            &out_csv,
        ]));
        let e = evaluate_fixture("pbmc3k_seurat", "classified", &out_csv, "prediction");
        eprintln!("streamed {kind}, training-cell accuracy {}", e["accuracy"]);
        assert!(
            e["accuracy"].as_f64().unwrap() > floor,
            "{kind}: {}",
            e["accuracy"]
        );
    }
}

/// `train --model actinn|cic` writes a checkpoint that `annotate` recognises from its sidecar;
/// on its own training cells each model is right for most of them (ACTINN 50 epochs, CIC's
/// classifier autoencoder 10).
#[test]
fn train_actinn_cic_and_mlp_then_annotate_and_explain() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixture("pbmc68k_reduced");
    for kind in ["actinn", "cic", "mlp"] {
        let model = dir.path().join(format!("{kind}.safetensors"));
        // CIC at 10 epochs keeps the test short; the MLP stops early on its own.
        let epochs = match kind {
            "cic" => "10",
            "mlp" => "100",
            _ => "50",
        };
        ok(&cellident(&[
            &"train",
            &data,
            &"--model",
            &kind,
            &"--label",
            &"bulk_labels",
            &"-o",
            &model,
            &"--epochs",
            &epochs,
        ]));
        let sidecar = std::fs::read_to_string(dir.path().join(format!("{kind}.json"))).unwrap();
        assert!(sidecar.contains(&format!("\"{kind}\"")), "{sidecar}");
        let a = dir.path().join(format!("{kind}.csv"));
        ok(&cellident(&[
            &"annotate",
            &data,
            &"--model",
            &model,
            &"-o",
            &a,
        ]));
        assert_eq!(predictions(&a).len(), 700);
        let e = evaluate_fixture("pbmc68k_reduced", "bulk_labels", &a, "prediction");
        eprintln!("{kind}: training-cell accuracy {}", e["accuracy"]);
        assert!(
            e["accuracy"].as_f64().unwrap() > 0.7,
            "{kind}: {}",
            e["accuracy"]
        );
        // The three are feed-forward classifiers: DeepLIFT explains each saved model.
        let genes = dir.path().join(format!("{kind}_deeplift.csv"));
        ok(&cellident(&[
            &"explain",
            &data,
            &"--model",
            &model,
            &"--method",
            &"deeplift",
            &"--label",
            &"bulk_labels",
            &"-o",
            &genes,
        ]));
        let table = std::fs::read_to_string(&genes).unwrap();
        let mono: Vec<&str> = table
            .lines()
            .filter(|l| l.starts_with("CD14+ Monocyte,"))
            .filter_map(|l| l.split(',').nth(2))
            .collect();
        eprintln!("{kind}: DeepLIFT top genes of CD14+ monocytes {mono:?}");
        assert_eq!(mono.len(), 25, "{table}");
        // Measured (seed 12345): ACTINN 2 (FCGR3A, FCN1; 4 with PyTorch's default init before
        // 2026-11-22), CIC 3, MLP 3 of these monocyte markers.
        let markers = ["CD14", "LYZ", "FCN1", "S100A8", "S100A9", "FCGR3A", "CST3"];
        let hits = mono.iter().filter(|g| markers.contains(g)).count();
        assert!(
            hits >= 2,
            "{kind}: monocyte markers in the top 25: {mono:?}"
        );
    }
}

#[test]
fn embed_trains_saves_and_reencodes_by_gene_name() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixture("pbmc68k_reduced");
    let codes = dir.path().join("codes.parquet");
    let model = dir.path().join("cic.safetensors");
    ok(&cellident(&[
        &"embed",
        &data,
        &"-o",
        &codes,
        &"--label",
        &"bulk_labels",
        &"--epochs",
        &"5",
        &"--save-model",
        &model,
    ]));
    let summary = inspect_json(&codes);
    assert_eq!(summary["n_cells"], 700);
    assert_eq!(summary["n_genes"], 30, "a 30-number code per cell");

    // The saved model encodes the same cells given with the genes in reverse order to the
    // same codes.
    let shuffled = reversed_gene_copy(&data, dir.path());
    let again = dir.path().join("again.csv");
    ok(&cellident(&[
        &"embed", &shuffled, &"--model", &model, &"-o", &again,
    ]));
    let first = cellident_io::read_parquet(&codes).unwrap();
    let dense = first.matrix().to_dense();
    let mut r = csv_reader(&again);
    let mut n = 0;
    for (i, rec) in r.records().enumerate() {
        let rec = rec.unwrap();
        assert_eq!(&rec[0], first.cell_ids()[i].as_str());
        for j in 0..30 {
            let v: f32 = rec[j + 1].parse().unwrap();
            assert!((v - dense[i * 30 + j]).abs() < 1e-4, "cell {i} unit {j}");
        }
        n += 1;
    }
    assert_eq!(n, 700);

    // The codes carry the cell types: k-means on them recovers bulk_labels with ARI 0.40 at
    // this seed (PCA-50 + k-means on the full profiles: 0.50).
    let clusters = dir.path().join("clusters.csv");
    ok(&cellident(&[
        &"cluster",
        &codes,
        &"-o",
        &clusters,
        &"--method",
        &"kmeans",
        &"--k",
        &"10",
    ]));
    let e = evaluate_fixture("pbmc68k_reduced", "bulk_labels", &clusters, "cluster");
    assert!(e["ari"].as_f64().unwrap() > 0.3, "{}", e["ari"]);
}

/// Genes of `class` in an explain table (`class,rank,gene,score`), best first.
fn ranked_genes(path: &Path, class: &str) -> Vec<String> {
    let mut r = csv_reader(path);
    r.records()
        .map(|rec| rec.unwrap())
        .filter(|rec| &rec[0] == class)
        .map(|rec| rec[2].to_string())
        .collect()
}

fn hits(genes: &[String], markers: &[&str]) -> usize {
    markers
        .iter()
        .filter(|m| genes.iter().any(|g| g == *m))
        .count()
}

#[test]
fn explain_ranks_canonical_markers() {
    // Canonical PBMC markers (issue #7's list) in the top 25 of their own type on the
    // pbmc68k_reduced fixture.
    let (mono, b, nk) = (
        ["CD14", "LYZ", "FCN1", "S100A8", "FCGR3A"],
        ["CD79A", "CD79B", "MS4A1"],
        ["NKG7", "GNLY", "GZMB", "PRF1"],
    );
    let dir = tempfile::tempdir().unwrap();
    let data = fixture("pbmc68k_reduced");
    let nact = dir.path().join("nact.safetensors");
    ok(&cellident(&[
        &"train",
        &data,
        &"--label",
        &"bulk_labels",
        &"-o",
        &nact,
        &"--epochs",
        &"10",
    ]));
    let ig = dir.path().join("ig.csv");
    ok(&cellident(&[
        &"explain",
        &data,
        &"--model",
        &nact,
        &"-o",
        &ig,
        &"--label",
        &"bulk_labels",
        &"--steps",
        &"16",
    ]));
    let found = hits(&ranked_genes(&ig, "CD14+ Monocyte"), &mono)
        + hits(&ranked_genes(&ig, "CD19+ B"), &b)
        + hits(&ranked_genes(&ig, "CD56+ NK"), &nk);
    // 7 of these 12 at this seed (FCGR3A, FCN1; CD79A; NKG7, GNLY, GZMB, PRF1).
    assert!(found >= 5, "N-ACT integrated gradients: {found} markers");
    assert_eq!(ranked_genes(&ig, "CD19+ B").len(), 25);

    // A CIC classifier explained by DeepLIFT: the B-cell receptor genes lead.
    let cic = dir.path().join("cic.safetensors");
    let codes = dir.path().join("codes.parquet");
    ok(&cellident(&[
        &"embed",
        &data,
        &"-o",
        &codes,
        &"--label",
        &"bulk_labels",
        &"--epochs",
        &"5",
        &"--save-model",
        &cic,
    ]));
    let dl = dir.path().join("deeplift.csv");
    ok(&cellident(&[
        &"explain",
        &data,
        &"--model",
        &cic,
        &"-o",
        &dl,
        &"--method",
        &"deeplift",
    ]));
    assert!(hits(&ranked_genes(&dl, "CD19+ B"), &b) >= 2);

    // DeepLIFT on N-ACT's attention is refused with the alternative named.
    let out = cellident(&[
        &"explain",
        &data,
        &"--model",
        &nact,
        &"-o",
        &dl,
        &"--method",
        &"deeplift",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--method ig"));
}

#[test]
fn report_renders_a_results_file() {
    // A results.json of two real clustering runs (pollen fixture numbers from docs/results.md)
    // and an annotate run with its confusion matrix.
    let dir = tempfile::tempdir().unwrap();
    let results = serde_json::json!({"records": [
        {"dataset": "pollen_simlr", "task": "cluster", "target": "label", "method": "kmeans", "seed": 0,
         "metrics": {"ari": 0.920, "nmi": 0.930}, "train_seconds": 0.1, "predict_seconds": 0.0,
         "peak_rss_bytes": null, "config": {}},
        {"dataset": "pollen_simlr", "task": "cluster", "target": "label", "method": "leiden", "seed": 0,
         "metrics": {"ari": 0.749, "nmi": 0.853}, "train_seconds": 0.1, "predict_seconds": 0.0,
         "peak_rss_bytes": null, "config": {}},
        {"dataset": "toy", "task": "annotate", "target": "type", "method": "logreg", "seed": 0,
         "metrics": {"accuracy": 0.75}, "train_seconds": 0.1, "predict_seconds": 0.0,
         "peak_rss_bytes": null,
         "config": {"classes": ["B", "T"], "confusion": [[3, 1], [0, 4]], "loss_curve": [1.0, 0.5, 0.25]}}
    ]});
    let path = dir.path().join("results.json");
    std::fs::write(&path, serde_json::to_vec(&results).unwrap()).unwrap();
    ok(&cellident(&[&"report", &path]));
    let report = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(
        report.contains("| pollen_simlr | label | leiden | 0 |"),
        "{report}"
    );
    assert!(report.contains("plots/cluster_ari.svg"));
    let bars = std::fs::read_to_string(dir.path().join("plots/cluster_ari.svg")).unwrap();
    assert!(bars.contains("leiden") && bars.contains("kmeans"));
    let confusion =
        std::fs::read_to_string(dir.path().join("plots/confusion_toy_type_logreg.svg")).unwrap();
    // Row B: 3 of 4 right -> 0.75 of the darkest blue; row T: 4 of 4 -> the darkest.
    assert!(confusion.contains("#08306B"));
    let out = cellident(&[&"report", &dir.path().join("missing.json")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.json"));
}

//! cellident-io on the real fixtures: every importer, the Parquet round trip, streaming, and
//! every bad input the foundation issue lists, each checked by its error message.
//!
//! Expected numbers were computed independently in Python (scipy 1.17.1, anndata 0.12.19):
//! `m = scipy.io.mmread(path).tocsr(); m.shape, m.nnz, m.data.astype(np.float32).astype(np.float64).sum()`.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};

use cellident_io::*;

fn fixture(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(p)
}

fn rel_close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * b.abs().max(1e-12)
}

fn pbmc68k() -> ExpressionDataset {
    read_mtx_folder(&fixture("pbmc68k_reduced")).expect("fixture pbmc68k_reduced")
}

#[test]
fn mtx_folder_matches_scipy() {
    let d = pbmc68k();
    assert_eq!(
        (d.n_cells(), d.n_genes(), d.matrix().nnz()),
        (700, 765, 174400)
    );
    // scipy: 319044.23824107647
    assert!(
        rel_close(d.matrix().sum(), 319044.23824107647, 1e-9),
        "{}",
        d.matrix().sum()
    );
    assert_eq!(d.cell_ids()[0], "AAAGCCTGGCTAAC-1");
    assert_eq!(d.gene_ids()[..3], ["HES4", "TNFRSF4", "SSU72"]);
    let counts = d.obs().class_counts("bulk_labels").unwrap();
    assert_eq!(counts[&Some("Dendritic".to_string())], 240);
    assert_eq!(counts[&Some("CD4+/CD45RA+/CD25- Naive T".to_string())], 8);
    // Numeric obs columns keep their exact text.
    assert_eq!(
        d.obs().labels("percent_mito").unwrap()[0].as_deref(),
        Some("0.023856081")
    );
}

#[test]
fn parquet_round_trip_and_streaming() {
    let d = pbmc68k();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pbmc.parquet");
    let options = ParquetWriteOptions {
        cells_per_row_group: 256,
        ..Default::default()
    };
    write_parquet(&path, &d, &options).unwrap();
    let p = ParquetDataset::open(&path).unwrap();
    assert_eq!((p.n_cells(), p.n_genes(), p.n_row_groups()), (700, 765, 3));
    assert_eq!(read_parquet(&path).unwrap(), d);

    // Streaming in batches of 100 gives back every cell, in order.
    let mut seen = 0;
    let mut parts = Vec::new();
    for b in p.batches(100, true).unwrap() {
        let b = b.unwrap();
        assert_eq!(b.first_cell, seen);
        assert!(b.cell_ids.len() <= 100);
        seen += b.cell_ids.len();
        parts.push(b.matrix);
    }
    assert_eq!(seen, 700);
    assert_eq!(CsrMatrix::vstack(&parts).unwrap(), *d.matrix());

    // Row groups read one at a time, in any order, are the file's cells 0..256, 256..512, 512..700.
    assert_eq!(p.row_group_cells(2), 512..700);
    let mut by_group = Vec::new();
    for g in (0..3).rev() {
        let b = p.read_row_group(g).unwrap();
        assert_eq!(b.first_cell, p.row_group_cells(g).start);
        assert_eq!(b.cell_ids, d.cell_ids()[p.row_group_cells(g)].to_vec());
        assert_eq!(b.obs.n_rows(), b.cell_ids.len());
        by_group.insert(0, b.matrix);
    }
    assert_eq!(CsrMatrix::vstack(&by_group).unwrap(), *d.matrix());
    let err = p.read_row_group(3).unwrap_err().to_string();
    assert!(err.contains("row group 3 does not exist"), "{err}");

    // Obs only, without decoding expression values.
    let (cells, obs) = p.read_obs().unwrap();
    assert_eq!(cells, d.cell_ids());
    assert_eq!(&obs, d.obs());
    // No temporary files are left beside the output.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[test]
fn mtx_folder_export_round_trips() {
    let d = pbmc68k();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("export");
    write_mtx_folder(&out, &d, "test export").unwrap();
    assert_eq!(read_mtx_folder(&out).unwrap(), d);
    // A second export into the now non-empty folder is refused and leaves it untouched.
    let err = write_mtx_folder(&out, &d, "again").unwrap_err().to_string();
    assert!(err.contains("already exists and is not empty"), "{err}");
    assert_eq!(read_mtx_folder(&out).unwrap(), d);
}

#[test]
fn tenx_folder_with_obs_join() {
    let root = fixture("pbmc3k_10x");
    let d = read_10x_folder(
        &root.join("filtered_feature_bc_matrix"),
        Some(&root.join("obs.csv.gz")),
        &TenxOptions::default(),
    )
    .unwrap();
    // scipy on the genes x barcodes file: shape (2000, 999), nnz 194438, sum 596163.0
    assert_eq!(
        (d.n_cells(), d.n_genes(), d.matrix().nnz()),
        (999, 2000, 194438)
    );
    assert_eq!(d.matrix().sum(), 596163.0);
    assert!(d.matrix().data().iter().all(|v| v.fract() == 0.0));
    let labels = d.obs().labels("classified").unwrap();
    assert!(labels.iter().all(Option::is_some));
    assert_eq!(d.var().column_names(), vec!["gene_ids", "feature_types"]);
    // Same cells, genes and labels as the log-normalised fixture of the same cells.
    let logs = read_mtx_folder(&fixture("pbmc3k_seurat")).unwrap();
    assert_eq!(d.cell_ids(), logs.cell_ids());
    assert_eq!(d.gene_ids(), logs.gene_ids());
    assert_eq!(labels, logs.obs().labels("classified").unwrap());
}

#[test]
fn dense_genes_by_cells_tsv_matches_mtx() {
    let dense = read_dense_text(
        &fixture("dense/pbmc68k_reduced_genes_by_cells.tsv.gz"),
        Some(&fixture("dense/pbmc68k_reduced_obs.csv")),
        &DenseTextOptions {
            genes_by_cells: true,
            delimiter: None,
        },
    )
    .unwrap();
    let rows: Vec<usize> = (0..40).collect();
    let reference = pbmc68k().select_cells(&rows).unwrap();
    assert_eq!(dense.matrix(), reference.matrix());
    assert_eq!(dense.cell_ids(), reference.cell_ids());
    assert_eq!(dense.gene_ids(), reference.gene_ids());
    assert_eq!(
        dense.obs().labels("bulk_labels").unwrap(),
        reference.obs().labels("bulk_labels").unwrap()
    );
}

#[test]
fn legacy_h5ad_raw_equals_the_converted_files() {
    let path = fixture("pbmc68k_reduced/pbmc68k_reduced.h5ad");
    let raw = read_h5ad(&path, &H5adOptions { use_raw: true }).unwrap();
    let reference = pbmc68k();
    assert_eq!(raw.matrix(), reference.matrix());
    assert_eq!(raw.cell_ids(), reference.cell_ids());
    assert_eq!(raw.gene_ids(), reference.gene_ids());
    // Categorical codes decoded through uns/<col>_categories.
    assert_eq!(
        raw.obs().labels("bulk_labels").unwrap(),
        reference.obs().labels("bulk_labels").unwrap()
    );
    assert_eq!(
        raw.obs().labels("percent_mito").unwrap()[0].as_deref(),
        Some("0.023856081")
    );
    // X holds scanpy's scaled values; anndata: X.astype(float64).sum() = -243.681057988666
    let x = read_h5ad(&path, &H5adOptions { use_raw: false }).unwrap();
    assert!(
        rel_close(x.matrix().sum(), -243.681057988666, 1e-6),
        "{}",
        x.matrix().sum()
    );
}

#[test]
fn modern_h5ad_csc_raw_dense_x_and_categoricals() {
    // Written by anndata 0.12.19 (see fixtures/h5ad/README.md): raw/X is CSC, X is dense.
    let path = fixture("h5ad/pbmc68k_reduced_anndata.h5ad");
    let raw = read_h5ad(&path, &H5adOptions { use_raw: true }).unwrap();
    let rows: Vec<usize> = (0..150).map(|i| 4 * i).collect();
    let reference = pbmc68k().select_cells(&rows).unwrap();
    assert_eq!(raw.matrix(), reference.matrix());
    assert_eq!(raw.cell_ids(), reference.cell_ids());
    assert_eq!(
        raw.obs().labels("bulk_labels").unwrap(),
        reference.obs().labels("bulk_labels").unwrap()
    );
    let t_cells = raw.obs().labels("is_t_cell").unwrap();
    assert_eq!(
        t_cells
            .iter()
            .filter(|v| v.as_deref() == Some("True"))
            .count(),
        27
    );
    assert_eq!(
        raw.var().labels("n_cells").unwrap()[..3],
        [Some("21".into()), Some("5".into()), Some("64".into())]
    );
    let x = read_h5ad(&path, &H5adOptions { use_raw: false }).unwrap();
    // anndata: X.sum(dtype=float64) = -16.850051094837
    assert!(
        rel_close(x.matrix().sum(), -16.850051094837, 1e-5),
        "{}",
        x.matrix().sum()
    );
}

// ---------------------------------------------------------------- bad inputs

/// A copy of the pbmc68k fixture in a temp dir, to be broken by the caller.
fn broken_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "matrix.mtx.gz",
        "genes.tsv.gz",
        "cells.tsv.gz",
        "obs.csv.gz",
    ] {
        std::fs::copy(fixture("pbmc68k_reduced").join(f), dir.path().join(f)).unwrap();
    }
    dir
}

fn gz(path: &Path, text: &str) {
    let f = std::fs::File::create(path).unwrap();
    let mut w = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    w.write_all(text.as_bytes()).unwrap();
    w.finish().unwrap();
}

fn small_folder(matrix: &str, genes: &str, cells: &str, obs: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    gz(&dir.path().join("matrix.mtx.gz"), matrix);
    gz(&dir.path().join("genes.tsv.gz"), genes);
    gz(&dir.path().join("cells.tsv.gz"), cells);
    gz(&dir.path().join("obs.csv.gz"), obs);
    let err = read_mtx_folder(dir.path())
        .map(|_| ())
        .unwrap_err()
        .to_string();
    (dir, err)
}

const MM: &str = "%%MatrixMarket matrix coordinate real general\n2 3 3\n1 1 1.5\n2 2 2\n2 3 4\n";

#[test]
fn small_folder_reads() {
    let dir = tempfile::tempdir().unwrap();
    gz(&dir.path().join("matrix.mtx.gz"), MM);
    gz(&dir.path().join("genes.tsv.gz"), "g1\ng2\ng3\n");
    gz(&dir.path().join("cells.tsv.gz"), "c1\nc2\n");
    gz(&dir.path().join("obs.csv.gz"), "cell,label\nc2,B\nc1,A\n");
    let d = read_mtx_folder(dir.path()).unwrap();
    assert_eq!(d.matrix().to_dense(), vec![1.5, 0.0, 0.0, 0.0, 2.0, 4.0]);
    // obs rows are matched by id, not by position.
    assert_eq!(
        d.obs().labels("label").unwrap(),
        vec![Some("A".into()), Some("B".into())]
    );
}

#[test]
fn truncated_gzip_is_reported() {
    let dir = broken_copy();
    let p = dir.path().join("matrix.mtx.gz");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let err = read_mtx_folder(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("matrix.mtx.gz") && err.contains("truncated"),
        "{err}"
    );
}

#[test]
fn corrupt_gzip_is_reported() {
    let dir = broken_copy();
    let p = dir.path().join("matrix.mtx.gz");
    let original = std::fs::read(&p).unwrap();
    // A damaged CRC trailer: the data decodes but the checksum fails.
    let mut bytes = original.clone();
    let n = bytes.len();
    bytes[n - 8] ^= 0xFF;
    std::fs::write(&p, &bytes).unwrap();
    let err = read_mtx_folder(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("matrix.mtx.gz") && err.contains("corrupt"),
        "{err}"
    );
    // Damage inside the deflate stream: either the decoder or the parser stops, naming the
    // file and the line it reached.
    let mut bytes = original;
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0x5A;
    }
    std::fs::write(&p, &bytes).unwrap();
    let err = read_mtx_folder(dir.path()).unwrap_err().to_string();
    assert!(err.contains("matrix.mtx.gz: line "), "{err}");
}

#[test]
fn non_numeric_value_names_the_line() {
    let mm = MM.replace("2 2 2", "2 2 abc");
    let (_d, err) = small_folder(&mm, "g1\ng2\ng3\n", "c1\nc2\n", "cell,l\nc1,a\nc2,b\n");
    assert!(
        err.contains("matrix.mtx.gz: line 4") && err.contains("'abc' is not a number"),
        "{err}"
    );
}

#[test]
fn nan_and_inf_values_are_rejected() {
    for bad in ["nan", "inf", "-Infinity"] {
        let mm = MM.replace("2 2 2", &format!("2 2 {bad}"));
        let (_d, err) = small_folder(&mm, "g1\ng2\ng3\n", "c1\nc2\n", "cell,l\nc1,a\nc2,b\n");
        assert!(
            err.contains("line 4") && err.contains("not finite"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn header_that_disagrees_with_the_data() {
    let more = MM.replace("2 3 3", "2 3 5");
    let (_d, err) = small_folder(&more, "g1\ng2\ng3\n", "c1\nc2\n", "cell,l\nc1,a\nc2,b\n");
    assert!(
        err.contains("declares 5 entries but the file holds 3"),
        "{err}"
    );
    let fewer = MM.replace("2 3 3", "2 3 2");
    let (_d, err) = small_folder(&fewer, "g1\ng2\ng3\n", "c1\nc2\n", "cell,l\nc1,a\nc2,b\n");
    assert!(
        err.contains("line 5") && err.contains("more entries than the 2"),
        "{err}"
    );
    let outside = MM.replace("2 3 4", "3 3 4");
    let (_d, err) = small_folder(&outside, "g1\ng2\ng3\n", "c1\nc2\n", "cell,l\nc1,a\nc2,b\n");
    assert!(
        err.contains("line 5") && err.contains("outside the declared 2 x 3"),
        "{err}"
    );
    // The header's shape must also agree with genes.tsv / cells.tsv.
    let (_d, err) = small_folder(MM, "g1\ng2\n", "c1\nc2\n", "cell,l\nc1,a\nc2,b\n");
    assert!(
        err.contains("3 columns (genes)") && err.contains("lists 2 genes"),
        "{err}"
    );
    let (_d, err) = small_folder(
        "%%MatrixMarket matrix array real general\n2 3\n",
        "g1\n",
        "c1\n",
        "cell\nc1\n",
    );
    assert!(err.contains("only 'matrix coordinate'"), "{err}");
}

#[test]
fn duplicate_ids_are_rejected() {
    let (_d, err) = small_folder(MM, "g1\ng2\ng1\n", "c1\nc2\n", "cell,l\nc1,a\nc2,b\n");
    assert!(err.contains("duplicate gene id 'g1'"), "{err}");
    let (_d, err) = small_folder(MM, "g1\ng2\ng3\n", "c1\nc1\n", "cell,l\nc1,a\nc2,b\n");
    assert!(err.contains("duplicate cell id 'c1'"), "{err}");
    let dup = MM.replace("2 3 3", "2 3 4") + "1 1 2\n";
    let (_d, err) = small_folder(&dup, "g1\ng2\ng3\n", "c1\nc2\n", "cell,l\nc1,a\nc2,b\n");
    assert!(err.contains("duplicate entry at row 1, column 1"), "{err}");
}

#[test]
fn obs_rows_that_do_not_match_the_cells() {
    let (_d, err) = small_folder(MM, "g1\ng2\ng3\n", "c1\nc2\n", "cell,l\nc1,a\nc9,b\n");
    assert!(
        err.contains("obs.csv.gz") && err.contains("names cell 'c9', which is not in the matrix"),
        "{err}"
    );
    let (_d, err) = small_folder(MM, "g1\ng2\ng3\n", "c1\nc2\n", "cell,l\nc1,a\n");
    assert!(err.contains("has no row for cell 'c2'"), "{err}");
    let (_d, err) = small_folder(MM, "g1\ng2\ng3\n", "c1\nc2\n", "cell,l\nc1,a\nc1,b\nc2,c\n");
    assert!(err.contains("'c1' appears in more than one row"), "{err}");
    let (_d, err) = small_folder(MM, "g1\ng2\ng3\n", "c1\nc2\n", "cell,l\nc1,a,extra\nc2,b\n");
    assert!(
        err.contains("obs.csv.gz: line 2") && err.contains("3 fields but the header has 2"),
        "{err}"
    );
}

#[test]
fn empty_inputs_are_rejected() {
    let (_d, err) = small_folder("", "g1\n", "c1\n", "cell\nc1\n");
    assert!(
        err.contains("matrix.mtx.gz") && err.contains("empty"),
        "{err}"
    );
    let (_d, err) = small_folder(
        "%%MatrixMarket matrix coordinate real general\n0 0 0\n",
        "",
        "",
        "cell\n",
    );
    assert!(err.contains("genes.tsv.gz: the id list is empty"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("empty.csv");
    std::fs::write(&p, "").unwrap();
    let err = read_dense_text(&p, None, &DenseTextOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("empty.csv: the file is empty"), "{err}");
}

#[test]
fn missing_label_column_lists_the_columns() {
    let err = pbmc68k().obs().labels("cell_type").unwrap_err().to_string();
    assert!(
        err.contains("column 'cell_type': does not exist") && err.contains("bulk_labels"),
        "{err}"
    );
}

#[test]
fn dense_csv_errors_name_line_and_gene() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.csv");
    std::fs::write(&p, "cell,CD3E,LYZ\nc1,1,2\nc2,x,3\n").unwrap();
    let err = read_dense_text(&p, None, &DenseTextOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("m.csv: line 3")
            && err.contains("gene 'CD3E'")
            && err.contains("'x' is not a number"),
        "{err}"
    );
    std::fs::write(&p, "cell,CD3E,LYZ\nc1,1,NaN\n").unwrap();
    let err = read_dense_text(&p, None, &DenseTextOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("gene 'LYZ'") && err.contains("not finite"),
        "{err}"
    );
    std::fs::write(&p, "cell,CD3E,LYZ\nc1,1\n").unwrap();
    let err = read_dense_text(&p, None, &DenseTextOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("line 2") && err.contains("has 1 values but the header names 2"),
        "{err}"
    );
}

#[test]
fn failed_writes_leave_no_output() {
    let d = pbmc68k();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.parquet");
    // A writer dropped before `finish` (e.g. on an error midway) leaves nothing behind.
    {
        let mut w = ParquetDatasetWriter::create(
            &path,
            d.gene_ids(),
            d.var(),
            d.obs(),
            &ParquetWriteOptions::default(),
        )
        .unwrap();
        let rows: Vec<usize> = (0..10).collect();
        let part = d.select_cells(&rows).unwrap();
        w.write(part.cell_ids(), part.matrix(), part.obs()).unwrap();
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    // An obs column that collides with a reserved column name is refused up front.
    let (m, cells, genes, _, var) = d.clone().into_parts();
    let obs = Table::new(
        700,
        vec![Column {
            name: "expression".into(),
            data: ColumnData::Int(vec![Some(1); 700]),
        }],
    )
    .unwrap();
    let bad = ExpressionDataset::new(m, cells, genes, obs, var).unwrap();
    let err = write_parquet(&path, &bad, &ParquetWriteOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("'expression'") && err.contains("reserved"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn non_cellident_parquet_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.parquet");
    std::fs::write(&p, b"PAR1 not really").unwrap();
    let err = ParquetDataset::open(&p).unwrap_err().to_string();
    assert!(
        err.contains("x.parquet") && err.contains("not a readable Parquet file"),
        "{err}"
    );
}

#[test]
fn gene_alignment_reorders_fills_and_refuses() {
    let d = pbmc68k();
    let reference: Vec<String> = vec!["LYZ".into(), "NOT_A_GENE".into(), "CD3E".into()];
    let (aligned, report) = d.align_to_genes(&reference, 0.5).unwrap();
    assert_eq!(report.n_found, 2);
    assert_eq!(report.missing, vec!["NOT_A_GENE".to_string()]);
    let lyz = d.gene_ids().iter().position(|g| g == "LYZ").unwrap();
    let cols: Vec<Option<usize>> = vec![Some(lyz)];
    assert_eq!(
        aligned.matrix().select_columns(&[Some(0)]),
        d.matrix().select_columns(&cols)
    );
    assert!(aligned.matrix().indices().iter().all(|&c| c != 1));
    let err = d.align_to_genes(&reference, 0.9).unwrap_err().to_string();
    assert!(
        err.contains("only 2 of 3") && err.contains("NOT_A_GENE"),
        "{err}"
    );
}

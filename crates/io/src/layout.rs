//! The folder layout of `../shared/datasets` ("mtx folder"): `matrix.mtx.gz` (rows = cells),
//! `genes.tsv.gz`, `cells.tsv.gz`, `obs.csv.gz` (first column `cell`), optional `var.csv.gz`
//! (first column `gene`). Also the obs/var CSV reader and writer shared by other importers.

use std::path::{Path, PathBuf};

use crate::dataset::{ExpressionDataset, ObsJoin, join_obs, table_from_text};
use crate::error::{IoError, Result};
use crate::mtx::{MtxOrientation, read_matrix_market, write_matrix_market};
use crate::table::Table;
use crate::text::{find_file, open_maybe_gz, read_tsv_rows, write_atomic, write_folder_atomic};

/// An annotation CSV read from disk: the ids in its first column and the other columns.
#[derive(Debug)]
pub struct AnnotationCsv {
    /// Name of the first (id) column as written in the header.
    pub id_column: String,
    pub ids: Vec<String>,
    pub table: Table,
}

/// Reads a CSV (or TSV when the name ends in `.tsv[.gz]`) whose first column holds ids and
/// whose other columns are annotations. Empty fields are missing values.
pub fn read_annotation_csv(path: &Path) -> Result<AnnotationCsv> {
    let name = path.to_string_lossy().to_ascii_lowercase();
    let delimiter = if name.ends_with(".tsv")
        || name.ends_with(".tsv.gz")
        || name.ends_with(".txt")
        || name.ends_with(".txt.gz")
    {
        b'\t'
    } else {
        b','
    };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .flexible(false)
        .from_reader(open_maybe_gz(path)?);
    let csv_err = |e: csv::Error| -> IoError {
        let line = e.position().map_or(0, |p| p.line());
        match e.kind() {
            csv::ErrorKind::UnequalLengths {
                expected_len, len, ..
            } => IoError::parse(
                path,
                line,
                format!("has {len} fields but the header has {expected_len}"),
            ),
            csv::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
                IoError::parse(
                    path,
                    line,
                    "the gzip stream ends early: the file is truncated",
                )
            }
            _ => IoError::parse(path, line, e.to_string()),
        }
    };
    let header: Vec<String> = reader
        .headers()
        .map_err(csv_err)?
        .iter()
        .map(|s| s.trim().to_string())
        .collect();
    if header.is_empty() || (header.len() == 1 && header[0].is_empty()) {
        return Err(IoError::format(path, "the file is empty (no header line)"));
    }
    let n_cols = header.len() - 1;
    let mut ids = Vec::new();
    let mut columns: Vec<Vec<Option<String>>> = vec![Vec::new(); n_cols];
    for record in reader.records() {
        let record = record.map_err(csv_err)?;
        let id = record.get(0).unwrap_or("").trim();
        if id.is_empty() {
            let line = record.position().map_or(0, |p| p.line());
            return Err(IoError::parse(path, line, "the id (first) field is empty"));
        }
        ids.push(id.to_string());
        for (j, col) in columns.iter_mut().enumerate() {
            let v = record.get(j + 1).unwrap_or("").trim();
            col.push((!v.is_empty()).then(|| v.to_string()));
        }
    }
    let names: Vec<String> = header[1..].to_vec();
    if let Some(dup) = names
        .iter()
        .enumerate()
        .find(|(i, n)| names[..*i].contains(n))
        .map(|(_, n)| n)
    {
        return Err(IoError::format(
            path,
            format!("column '{dup}' appears twice in the header"),
        ));
    }
    let table = table_from_text(ids.len(), names, columns).map_err(|e| e.in_file(path))?;
    Ok(AnnotationCsv {
        id_column: header[0].clone(),
        ids,
        table,
    })
}

/// Writes an annotation table as CSV with the ids in a first column `id_column`; atomic, and
/// compressed when `path` ends in `.gz`.
pub fn write_annotation_csv(
    path: &Path,
    id_column: &str,
    ids: &[String],
    table: &Table,
) -> Result<()> {
    write_atomic(path, |w| {
        let mut out = csv::Writer::from_writer(w);
        let mut header = vec![id_column.to_string()];
        header.extend(table.column_names().iter().map(|s| s.to_string()));
        out.write_record(&header)?;
        let mut record: Vec<String> = Vec::with_capacity(header.len());
        for (i, id) in ids.iter().enumerate() {
            record.clear();
            record.push(id.clone());
            for c in table.columns() {
                record.push(c.data.text(i).unwrap_or_default());
            }
            out.write_record(&record)?;
        }
        out.flush()?;
        Ok(())
    })
}

/// The files of an mtx folder.
#[derive(Debug, Clone)]
pub struct MtxFolderFiles {
    pub matrix: PathBuf,
    pub genes: PathBuf,
    pub cells: PathBuf,
    pub obs: Option<PathBuf>,
    pub var: Option<PathBuf>,
}

impl MtxFolderFiles {
    /// Locates the files of an mtx folder, or explains what is missing.
    pub fn locate(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(IoError::format(dir, "is not a folder"));
        }
        let need = |names: &[&str]| {
            find_file(dir, names).ok_or_else(|| {
                IoError::format(
                    dir,
                    format!(
                        "has no {} (expected the ../shared/datasets layout)",
                        names.join(" or ")
                    ),
                )
            })
        };
        Ok(MtxFolderFiles {
            matrix: need(&["matrix.mtx.gz", "matrix.mtx"])?,
            genes: need(&["genes.tsv.gz", "genes.tsv"])?,
            cells: need(&["cells.tsv.gz", "cells.tsv"])?,
            obs: find_file(dir, &["obs.csv.gz", "obs.csv"]),
            var: find_file(dir, &["var.csv.gz", "var.csv"]),
        })
    }
}

/// Reads a folder in the `../shared/datasets` layout.
///
/// The matrix must be cells x genes with as many rows as `cells.tsv` has lines and as many
/// columns as `genes.tsv`; `obs.csv` must have exactly one row per cell (matched by the ids in
/// its first column; order may differ).
pub fn read_mtx_folder(dir: &Path) -> Result<ExpressionDataset> {
    let files = MtxFolderFiles::locate(dir)?;
    let genes = first_fields(&files.genes)?;
    let cells = first_fields(&files.cells)?;
    let contents = read_matrix_market(&files.matrix, MtxOrientation::CellsByGenes)?;
    let m = contents.matrix;
    if m.n_rows() != cells.len() {
        return Err(IoError::format(
            &files.matrix,
            format!(
                "has {} rows (cells) but {} lists {} cells",
                m.n_rows(),
                files.cells.display(),
                cells.len()
            ),
        ));
    }
    if m.n_cols() != genes.len() {
        return Err(IoError::format(
            &files.matrix,
            format!(
                "has {} columns (genes) but {} lists {} genes",
                m.n_cols(),
                files.genes.display(),
                genes.len()
            ),
        ));
    }
    let obs = match &files.obs {
        Some(p) => {
            let a = read_annotation_csv(p)?;
            join_obs(&cells, &a.ids, &a.table, ObsJoin::Exact).map_err(|e| e.in_file(p))?
        }
        None => Table::empty(cells.len()),
    };
    let var = match &files.var {
        Some(p) => {
            let a = read_annotation_csv(p)?;
            join_obs(&genes, &a.ids, &a.table, ObsJoin::Exact).map_err(|e| e.in_file(p))?
        }
        None => Table::empty(genes.len()),
    };
    ExpressionDataset::new(m, cells, genes, obs, var).map_err(|e| e.in_file(dir))
}

/// The first tab-separated field of each line of an id list.
pub(crate) fn first_fields(path: &Path) -> Result<Vec<String>> {
    let rows = read_tsv_rows(path)?;
    if rows.is_empty() {
        return Err(IoError::format(path, "the id list is empty"));
    }
    Ok(rows.into_iter().map(|mut r| r.swap_remove(0)).collect())
}

/// Writes `dataset` as a folder in the `../shared/datasets` layout. The folder is built
/// under a temporary name beside `dir` and renamed into place when complete; an existing
/// non-empty `dir` is an error.
pub fn write_mtx_folder(dir: &Path, dataset: &ExpressionDataset, comment: &str) -> Result<()> {
    write_folder_atomic(dir, |t| {
        write_matrix_market(&t.join("matrix.mtx.gz"), dataset.matrix(), comment)?;
        write_lines(&t.join("genes.tsv.gz"), dataset.gene_ids())?;
        write_lines(&t.join("cells.tsv.gz"), dataset.cell_ids())?;
        write_annotation_csv(
            &t.join("obs.csv.gz"),
            "cell",
            dataset.cell_ids(),
            dataset.obs(),
        )?;
        if !dataset.var().columns().is_empty() {
            write_annotation_csv(
                &t.join("var.csv.gz"),
                "gene",
                dataset.gene_ids(),
                dataset.var(),
            )?;
        }
        Ok(())
    })
}

/// Writes one line per item; atomic, gzip when the name ends in `.gz`.
pub fn write_lines(path: &Path, items: &[String]) -> Result<()> {
    write_atomic(path, |w| {
        for s in items {
            w.write_all(s.as_bytes())?;
            w.write_all(b"\n")?;
        }
        Ok(())
    })
}

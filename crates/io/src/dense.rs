//! Dense delimited text matrices (CSV/TSV, optionally gzip): cells x genes, or genes x cells.

use std::path::Path;

use crate::dataset::{ExpressionDataset, ObsJoin, join_obs};
use crate::error::{IoError, Result};
use crate::layout::read_annotation_csv;
use crate::matrix::CsrMatrix;
use crate::table::Table;
use crate::text::{LineReader, write_atomic};

/// Options of [`read_dense_text`].
#[derive(Debug, Clone, Default)]
pub struct DenseTextOptions {
    /// The file's rows are genes and its columns cells (the header then holds cell ids).
    pub genes_by_cells: bool,
    /// Field separator; `None` picks tab for `.tsv`/`.txt` names and comma otherwise.
    pub delimiter: Option<char>,
}

/// Reads a dense matrix with a header line (a corner field, then column ids) and one line
/// per row (the row id, then one value per column). Values must be finite numbers; the error
/// names the line and the gene. An optional obs CSV is joined by cell id (left join).
pub fn read_dense_text(
    path: &Path,
    obs_csv: Option<&Path>,
    options: &DenseTextOptions,
) -> Result<ExpressionDataset> {
    let lower = path.to_string_lossy().to_ascii_lowercase();
    let delim = options.delimiter.unwrap_or(
        if lower.ends_with(".tsv")
            || lower.ends_with(".tsv.gz")
            || lower.ends_with(".txt")
            || lower.ends_with(".txt.gz")
        {
            '\t'
        } else {
            ','
        },
    );
    let mut reader = LineReader::open(path)?;
    let mut buf = String::new();
    if !reader.next_line(&mut buf)? {
        return Err(IoError::format(path, "the file is empty (no header line)"));
    }
    let header: Vec<String> = buf
        .split(delim)
        .skip(1)
        .map(|s| unquote(s).to_string())
        .collect();
    if header.is_empty() {
        return Err(IoError::parse(path, 1, "the header has no column ids"));
    }
    let mut row_ids = Vec::new();
    let mut dense: Vec<f32> = Vec::new();
    while reader.next_line(&mut buf)? {
        let line = buf.as_str();
        if line.trim().is_empty() {
            continue;
        }
        let mut fields = line.split(delim);
        let id = unquote(fields.next().unwrap_or("")).to_string();
        let start = dense.len();
        for (j, f) in fields.enumerate() {
            if j >= header.len() {
                return Err(reader.error(format!(
                    "row '{id}' has more than the {} values the header names",
                    header.len()
                )));
            }
            let f = unquote(f).trim();
            let column_name = if options.genes_by_cells {
                "cell"
            } else {
                "gene"
            };
            let v: f32 = f.parse().map_err(|_| {
                reader.error(format!(
                    "{column_name} '{}': '{f}' is not a number",
                    header[j]
                ))
            })?;
            if !v.is_finite() {
                return Err(reader.error(format!(
                    "{column_name} '{}': value '{f}' is not finite",
                    header[j]
                )));
            }
            dense.push(v);
        }
        let got = dense.len() - start;
        if got != header.len() {
            return Err(reader.error(format!(
                "row '{id}' has {got} values but the header names {} columns",
                header.len()
            )));
        }
        row_ids.push(id);
    }
    if row_ids.is_empty() {
        return Err(IoError::format(path, "the matrix has no data rows"));
    }
    let m =
        CsrMatrix::from_dense(row_ids.len(), header.len(), &dense).map_err(|e| e.in_file(path))?;
    drop(dense);
    let (m, cells, genes) = if options.genes_by_cells {
        (m.transpose(), header, row_ids)
    } else {
        (m, row_ids, header)
    };
    let obs = match obs_csv {
        Some(p) => {
            let a = read_annotation_csv(p)?;
            join_obs(&cells, &a.ids, &a.table, ObsJoin::Left).map_err(|e| e.in_file(p))?
        }
        None => Table::empty(cells.len()),
    };
    let n_genes = genes.len();
    ExpressionDataset::new(m, cells, genes, obs, Table::empty(n_genes)).map_err(|e| e.in_file(path))
}

fn unquote(s: &str) -> &str {
    let t = s.trim();
    t.strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .unwrap_or(t)
}

/// Writes the matrix densely as CSV (cells x genes, header `cell,<genes...>`); atomic.
pub fn write_dense_csv(path: &Path, dataset: &ExpressionDataset) -> Result<()> {
    let m = dataset.matrix();
    write_atomic(path, |w| {
        let mut out = csv::Writer::from_writer(w);
        let mut header = vec!["cell".to_string()];
        header.extend(dataset.gene_ids().iter().cloned());
        out.write_record(&header)?;
        let mut row = vec![0f32; m.n_cols()];
        let mut record: Vec<String> = Vec::with_capacity(m.n_cols() + 1);
        for (r, id) in dataset.cell_ids().iter().enumerate() {
            m.densify_rows_into(&[r], &mut row);
            record.clear();
            record.push(id.clone());
            record.extend(row.iter().map(|v| v.to_string()));
            out.write_record(&record)?;
        }
        out.flush()?;
        Ok(())
    })
}

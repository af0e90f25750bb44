//! Matrix Market coordinate files (`%%MatrixMarket matrix coordinate real|integer|pattern general`).

use std::path::Path;

use crate::error::{IoError, Result};
use crate::matrix::CsrMatrix;
use crate::text::{LineReader, write_atomic};

/// Which way round the file's rows and columns are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MtxOrientation {
    /// File rows are cells (the `../shared/datasets` layout).
    CellsByGenes,
    /// File rows are genes (10x Genomics output).
    GenesByCells,
}

/// A Matrix Market file read into memory, as cells x genes.
#[derive(Debug)]
pub struct MtxContents {
    pub matrix: CsrMatrix,
    /// Whether every stored value is integral (field `integer`, or `real` values that happen
    /// to be whole numbers).
    pub all_integer: bool,
}

/// Reads a Matrix Market coordinate file (plain or `.gz`) into a cells x genes CSR matrix.
///
/// Checks: the banner (coordinate format; real, integer or pattern field; general symmetry),
/// the size line, that every entry line has the right number of fields, 1-based indices within
/// the declared size, finite numeric values, no duplicate coordinates, and that the number of
/// entries equals the header's count.
pub fn read_matrix_market(path: &Path, orientation: MtxOrientation) -> Result<MtxContents> {
    let mut reader = LineReader::open(path)?;
    let mut buf = String::with_capacity(128);
    if !reader.next_line(&mut buf)? {
        return Err(IoError::format(
            path,
            "the file is empty (no Matrix Market banner)",
        ));
    }
    let banner = buf.clone();
    let tokens: Vec<String> = banner
        .split_whitespace()
        .map(|t| t.to_ascii_lowercase())
        .collect();
    if tokens.first().map(String::as_str) != Some("%%matrixmarket") || tokens.len() < 5 {
        return Err(reader.error(format!(
            "not a Matrix Market banner: '{banner}' (expected '%%MatrixMarket matrix coordinate real general')"
        )));
    }
    if tokens[1] != "matrix" || tokens[2] != "coordinate" {
        return Err(reader.error(format!(
            "only 'matrix coordinate' files are supported, found '{} {}'",
            tokens[1], tokens[2]
        )));
    }
    let field = tokens[3].as_str();
    let pattern = match field {
        "real" | "integer" | "double" => false,
        "pattern" => true,
        other => return Err(reader.error(format!("unsupported field type '{other}'"))),
    };
    if tokens[4] != "general" {
        return Err(reader.error(format!(
            "only 'general' symmetry is supported, found '{}'",
            tokens[4]
        )));
    }
    // Skip comments, then parse the size line.
    let (n_file_rows, n_file_cols, n_entries) = loop {
        if !reader.next_line(&mut buf)? {
            return Err(IoError::format(path, "the file ends before the size line"));
        }
        let t = buf.trim();
        if t.is_empty() || t.starts_with('%') {
            continue;
        }
        let parts: Vec<&str> = t.split_whitespace().collect();
        if parts.len() != 3 {
            return Err(reader.error(format!(
                "size line must hold 'rows columns entries', found '{t}'"
            )));
        }
        let parse = |s: &str, what: &str| -> Result<usize> {
            s.parse::<usize>()
                .map_err(|_| reader.error(format!("{what} '{s}' in the size line is not a count")))
        };
        break (
            parse(parts[0], "rows")?,
            parse(parts[1], "columns")?,
            parse(parts[2], "entries")?,
        );
    };
    if n_file_rows > u32::MAX as usize || n_file_cols > u32::MAX as usize {
        return Err(reader.error("matrix dimensions exceed 2^32"));
    }
    let mut rows = Vec::with_capacity(n_entries.min(1 << 28));
    let mut cols = Vec::with_capacity(n_entries.min(1 << 28));
    let mut vals = Vec::with_capacity(n_entries.min(1 << 28));
    let mut all_integer = true;
    let mut seen = 0usize;
    while reader.next_line(&mut buf)? {
        let t = buf.trim();
        if t.is_empty() || t.starts_with('%') {
            continue;
        }
        seen += 1;
        if seen > n_entries {
            return Err(reader.error(format!(
                "more entries than the {n_entries} the size line declares"
            )));
        }
        let mut it = t.split_ascii_whitespace();
        let (r, c) = (it.next(), it.next());
        let v = if pattern { Some("1") } else { it.next() };
        let (Some(r), Some(c), Some(v)) = (r, c, v) else {
            return Err(reader.error(format!(
                "expected '{}' but found '{t}'",
                if pattern {
                    "row column"
                } else {
                    "row column value"
                }
            )));
        };
        if it.next().is_some() {
            return Err(reader.error(format!("too many fields in '{t}'")));
        }
        let r: usize = r
            .parse()
            .map_err(|_| reader.error(format!("row index '{r}' is not a positive integer")))?;
        let c: usize = c
            .parse()
            .map_err(|_| reader.error(format!("column index '{c}' is not a positive integer")))?;
        if r == 0 || r > n_file_rows || c == 0 || c > n_file_cols {
            return Err(reader.error(format!(
                "entry ({r}, {c}) lies outside the declared {n_file_rows} x {n_file_cols} matrix"
            )));
        }
        let value: f64 = v
            .parse()
            .map_err(|_| reader.error(format!("value '{v}' is not a number")))?;
        if !value.is_finite() {
            return Err(reader.error(format!("value '{v}' is not finite")));
        }
        let value32 = value as f32;
        if !value32.is_finite() {
            return Err(reader.error(format!("value '{v}' overflows 32-bit floats")));
        }
        if all_integer && value.fract() != 0.0 {
            all_integer = false;
        }
        rows.push((r - 1) as u32);
        cols.push((c - 1) as u32);
        vals.push(value32);
    }
    if seen != n_entries {
        return Err(IoError::format(
            path,
            format!(
                "the size line declares {n_entries} entries but the file holds {seen} (truncated or wrong header)"
            ),
        ));
    }
    let matrix = match orientation {
        MtxOrientation::CellsByGenes => {
            CsrMatrix::from_triplets(n_file_rows, n_file_cols, &rows, &cols, &vals)
        }
        MtxOrientation::GenesByCells => {
            CsrMatrix::from_triplets(n_file_cols, n_file_rows, &cols, &rows, &vals)
        }
    }
    .map_err(|e| e.in_file(path))?;
    Ok(MtxContents {
        matrix,
        all_integer,
    })
}

/// Writes `matrix` (cells x genes) as a Matrix Market coordinate file with rows = cells,
/// field `integer` when every value is whole and `real` otherwise; values as the shortest
/// decimal that reads back to the same `f32`. Compressed when `path` ends in `.gz`; atomic.
pub fn write_matrix_market(path: &Path, matrix: &CsrMatrix, comment: &str) -> Result<()> {
    let integral = matrix.data().iter().all(|v| v.fract() == 0.0);
    write_atomic(path, |w| {
        writeln!(
            w,
            "%%MatrixMarket matrix coordinate {} general",
            if integral { "integer" } else { "real" }
        )?;
        for line in comment.lines() {
            writeln!(w, "% {line}")?;
        }
        writeln!(
            w,
            "{} {} {}",
            matrix.n_rows(),
            matrix.n_cols(),
            matrix.nnz()
        )?;
        let mut buf = String::with_capacity(64);
        for r in 0..matrix.n_rows() {
            let (idx, val) = matrix.row(r);
            for (&c, &v) in idx.iter().zip(val) {
                use std::fmt::Write as _;
                buf.clear();
                // `Display` of f32 is the shortest round-trip decimal, without exponent.
                let _ = writeln!(buf, "{} {} {}", r + 1, c + 1, v);
                w.write_all(buf.as_bytes())?;
            }
        }
        Ok(())
    })
}

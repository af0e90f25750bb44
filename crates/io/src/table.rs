//! Annotation tables: `obs` (one row per cell) and `var` (one row per gene).
//!
//! A small, typed, columnar table: each column is text, integer or float, and any value may
//! be missing. It covers what per-cell metadata needs (labels, batches, QC covariates) and
//! converts losslessly to Arrow arrays for Parquet (see `docs/format.md`).

use std::collections::BTreeMap;

use crate::error::{IoError, Result};

/// The values of one column. Missing values are `None`.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnData {
    /// Text (labels, categorical values are stored as their text).
    Text(Vec<Option<String>>),
    /// 64-bit integers.
    Int(Vec<Option<i64>>),
    /// 64-bit floats (always finite).
    Float(Vec<Option<f64>>),
}

impl ColumnData {
    /// Number of values (rows).
    pub fn len(&self) -> usize {
        match self {
            ColumnData::Text(v) => v.len(),
            ColumnData::Int(v) => v.len(),
            ColumnData::Float(v) => v.len(),
        }
    }

    /// True when the column has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Infers the narrowest type that represents every value exactly: integers when every
    /// present value is a canonical integer (`"7"`, not `"007"` or `"7.0"`), floats when every
    /// present value parses as a finite number, text otherwise. Empty fields are missing.
    pub fn infer(values: Vec<Option<String>>) -> ColumnData {
        let present = || values.iter().flatten();
        if present().next().is_none() {
            return ColumnData::Text(values);
        }
        let is_int = present().all(|s| s.parse::<i64>().is_ok_and(|v| v.to_string() == *s));
        if is_int {
            return ColumnData::Int(
                values
                    .iter()
                    .map(|v| v.as_ref().and_then(|s| s.parse().ok()))
                    .collect(),
            );
        }
        // Identifiers such as "007" or "01.5" stay text: a leading zero would be lost.
        let leading_zero = |s: &str| {
            let t = s.trim_start_matches(['-', '+']).as_bytes();
            t.len() > 1 && t[0] == b'0' && t[1].is_ascii_digit()
        };
        let is_float = present().all(|s| {
            s.parse::<f64>().is_ok_and(f64::is_finite)
                && s.bytes().any(|b| b.is_ascii_digit())
                && !leading_zero(s)
        });
        if is_float {
            return ColumnData::Float(
                values
                    .iter()
                    .map(|v| v.as_ref().and_then(|s| s.parse().ok()))
                    .collect(),
            );
        }
        ColumnData::Text(values)
    }

    /// The value of row `i` as text (`None` when missing). Floats use the shortest decimal
    /// that reads back to the same `f64`.
    pub fn text(&self, i: usize) -> Option<String> {
        match self {
            ColumnData::Text(v) => v[i].clone(),
            ColumnData::Int(v) => v[i].map(|x| x.to_string()),
            ColumnData::Float(v) => v[i].map(format_float),
        }
    }

    /// Keeps the rows `rows` (in that order; `None` gives a missing value).
    pub fn take(&self, rows: &[Option<usize>]) -> ColumnData {
        fn pick<T: Clone>(v: &[Option<T>], rows: &[Option<usize>]) -> Vec<Option<T>> {
            rows.iter().map(|r| r.and_then(|r| v[r].clone())).collect()
        }
        match self {
            ColumnData::Text(v) => ColumnData::Text(pick(v, rows)),
            ColumnData::Int(v) => ColumnData::Int(pick(v, rows)),
            ColumnData::Float(v) => ColumnData::Float(pick(v, rows)),
        }
    }

    /// Name of the type, as shown by `cellident inspect`.
    pub fn type_name(&self) -> &'static str {
        match self {
            ColumnData::Text(_) => "text",
            ColumnData::Int(_) => "integer",
            ColumnData::Float(_) => "float",
        }
    }
}

/// Formats a float as the shortest decimal that reads back exactly, always with a decimal
/// point or exponent (so `2557.0`, `0.023856081`, `1e-7`).
pub fn format_float(x: f64) -> String {
    format!("{x:?}")
}

/// One named column.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub data: ColumnData,
}

/// A table of named columns of equal length.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    n_rows: usize,
    columns: Vec<Column>,
}

impl Table {
    /// A table with `n_rows` rows and no columns.
    pub fn empty(n_rows: usize) -> Self {
        Table {
            n_rows,
            columns: Vec::new(),
        }
    }

    /// Builds a table, checking that every column has `n_rows` values and names are unique.
    pub fn new(n_rows: usize, columns: Vec<Column>) -> Result<Self> {
        let mut t = Table::empty(n_rows);
        for c in columns {
            t.push(c)?;
        }
        Ok(t)
    }

    /// Appends a column.
    pub fn push(&mut self, column: Column) -> Result<()> {
        if column.data.len() != self.n_rows {
            return Err(IoError::invalid(
                format!("column '{}'", column.name),
                format!(
                    "has {} values but the table has {} rows",
                    column.data.len(),
                    self.n_rows
                ),
            ));
        }
        if self.columns.iter().any(|c| c.name == column.name) {
            return Err(IoError::invalid(
                format!("column '{}'", column.name),
                "appears twice",
            ));
        }
        self.columns.push(column);
        Ok(())
    }

    /// Number of rows.
    pub fn n_rows(&self) -> usize {
        self.n_rows
    }

    /// The columns, in order.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// Column names, in order.
    pub fn column_names(&self) -> Vec<&str> {
        self.columns.iter().map(|c| c.name.as_str()).collect()
    }

    /// The column called `name`, or an error listing the columns that exist.
    pub fn column(&self, name: &str) -> Result<&Column> {
        self.columns.iter().find(|c| c.name == name).ok_or_else(|| {
            IoError::invalid(
                format!("column '{name}'"),
                format!(
                    "does not exist; available columns: {}",
                    if self.columns.is_empty() {
                        "(none)".to_string()
                    } else {
                        self.column_names().join(", ")
                    }
                ),
            )
        })
    }

    /// The values of column `name` as text, for use as labels (`None` = missing).
    pub fn labels(&self, name: &str) -> Result<Vec<Option<String>>> {
        let c = self.column(name)?;
        Ok((0..self.n_rows).map(|i| c.data.text(i)).collect())
    }

    /// Counts of each distinct (text) value of column `name`, missing values under `None`.
    pub fn class_counts(&self, name: &str) -> Result<BTreeMap<Option<String>, usize>> {
        let mut counts = BTreeMap::new();
        for v in self.labels(name)? {
            *counts.entry(v).or_insert(0) += 1;
        }
        Ok(counts)
    }

    /// A new table holding rows `rows` (in order; `None` gives missing values).
    pub fn take(&self, rows: &[Option<usize>]) -> Table {
        Table {
            n_rows: rows.len(),
            columns: self
                .columns
                .iter()
                .map(|c| Column {
                    name: c.name.clone(),
                    data: c.data.take(rows),
                })
                .collect(),
        }
    }

    /// Appends the rows of `other`, which must have the same columns and types.
    pub fn append(&mut self, other: &Table) -> Result<()> {
        if self.columns.len() != other.columns.len() {
            return Err(IoError::invalid(
                "table",
                "appended table has other columns",
            ));
        }
        for (a, b) in self.columns.iter_mut().zip(&other.columns) {
            match (&mut a.data, &b.data) {
                (ColumnData::Text(x), ColumnData::Text(y)) if a.name == b.name => {
                    x.extend(y.iter().cloned())
                }
                (ColumnData::Int(x), ColumnData::Int(y)) if a.name == b.name => {
                    x.extend(y.iter().cloned())
                }
                (ColumnData::Float(x), ColumnData::Float(y)) if a.name == b.name => {
                    x.extend(y.iter().cloned())
                }
                _ => {
                    return Err(IoError::invalid(
                        format!("column '{}'", a.name),
                        "appended table has another name or type here",
                    ));
                }
            }
        }
        self.n_rows += other.n_rows;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<Option<String>> {
        v.iter()
            .map(|x| (!x.is_empty()).then(|| x.to_string()))
            .collect()
    }

    #[test]
    fn inference_keeps_text_exact() {
        assert!(matches!(
            ColumnData::infer(s(&["1", "10", ""])),
            ColumnData::Int(_)
        ));
        assert!(matches!(
            ColumnData::infer(s(&["007", "1"])),
            ColumnData::Text(_)
        ));
        assert!(matches!(
            ColumnData::infer(s(&["2557.0", "1e-3"])),
            ColumnData::Float(_)
        ));
        assert!(matches!(
            ColumnData::infer(s(&["nan", "1.0"])),
            ColumnData::Text(_)
        ));
        assert!(matches!(
            ColumnData::infer(s(&["B", "T"])),
            ColumnData::Text(_)
        ));
        let f = ColumnData::infer(s(&["2557.0", "0.023856081"]));
        assert_eq!(f.text(0).as_deref(), Some("2557.0"));
        assert_eq!(f.text(1).as_deref(), Some("0.023856081"));
    }

    #[test]
    fn missing_column_error_lists_columns() {
        let t = Table::new(
            1,
            vec![Column {
                name: "cell_type".into(),
                data: ColumnData::Text(s(&["B"])),
            }],
        )
        .unwrap();
        let err = t.column("label").unwrap_err().to_string();
        assert!(
            err.contains("'label'") && err.contains("cell_type"),
            "{err}"
        );
    }
}

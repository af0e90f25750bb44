//! Dataset summaries for `cellident inspect`: shape, non-zeros, value sum, a guess of the value
//! type, and the class counts of every obs column.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::dataset::ExpressionDataset;
use crate::error::Result;
use crate::matrix::CsrMatrix;
use crate::parquet_format::ParquetDataset;
use crate::table::{ColumnData, Table};

/// What the stored values look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueKind {
    /// Non-negative whole numbers: raw counts.
    Counts,
    /// Non-negative, non-integral, maximum below 30: log-transformed (e.g. log1p of normalised
    /// counts, or log2 microarray intensities).
    Log,
    /// Anything else: negative values (scaled data) or large non-integral values (TPM, FPKM).
    Other,
}

/// Running statistics over stored values, so that summaries can be computed in one streaming pass.
#[derive(Debug, Clone, Default)]
struct ValueStats {
    nnz: u64,
    sum: f64,
    min: f32,
    max: f32,
    all_integer: bool,
    started: bool,
}

impl ValueStats {
    fn update(&mut self, m: &CsrMatrix) {
        if !self.started {
            self.started = true;
            self.all_integer = true;
            self.min = f32::INFINITY;
            self.max = f32::NEG_INFINITY;
        }
        self.nnz += m.nnz() as u64;
        for &v in m.data() {
            self.sum += v as f64;
            self.min = self.min.min(v);
            self.max = self.max.max(v);
            if self.all_integer && v.fract() != 0.0 {
                self.all_integer = false;
            }
        }
    }

    fn kind(&self) -> ValueKind {
        if self.nnz == 0 {
            return ValueKind::Other;
        }
        if self.min < 0.0 {
            ValueKind::Other
        } else if self.all_integer {
            ValueKind::Counts
        } else if self.max < 30.0 {
            ValueKind::Log
        } else {
            ValueKind::Other
        }
    }
}

/// The summary of one obs column.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnSummary {
    pub name: String,
    /// `text`, `integer` or `float`.
    pub dtype: String,
    pub n_missing: usize,
    pub n_distinct: usize,
    /// Counts per value (text and integer columns); missing values are not counted here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class_counts: Option<BTreeMap<String, usize>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

/// What `cellident inspect` reports.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetSummary {
    pub n_cells: usize,
    pub n_genes: usize,
    pub nnz: u64,
    /// Sum of all stored values (accumulated in f64).
    pub value_sum: f64,
    pub value_min: Option<f32>,
    pub value_max: Option<f32>,
    pub value_kind: ValueKind,
    pub obs: Vec<ColumnSummary>,
    pub var_columns: Vec<String>,
}

/// Summarises an in-memory dataset.
pub fn summarize(d: &ExpressionDataset) -> DatasetSummary {
    let mut stats = ValueStats::default();
    stats.update(d.matrix());
    build(d.n_cells(), d.n_genes(), &stats, d.obs(), d.var())
}

/// Summarises a Parquet dataset in one streaming pass (memory bounded by one row group).
pub fn summarize_parquet(p: &ParquetDataset) -> Result<DatasetSummary> {
    let mut stats = ValueStats::default();
    let mut obs: Option<Table> = None;
    for batch in p.batches(4096, true)? {
        let b = batch?;
        stats.update(&b.matrix);
        match &mut obs {
            None => obs = Some(b.obs),
            Some(o) => o.append(&b.obs)?,
        }
    }
    let obs = obs.unwrap_or_else(|| Table::empty(0));
    Ok(build(p.n_cells(), p.n_genes(), &stats, &obs, p.var()))
}

fn build(
    n_cells: usize,
    n_genes: usize,
    s: &ValueStats,
    obs: &Table,
    var: &Table,
) -> DatasetSummary {
    DatasetSummary {
        n_cells,
        n_genes,
        nnz: s.nnz,
        value_sum: s.sum,
        value_min: (s.nnz > 0).then_some(s.min),
        value_max: (s.nnz > 0).then_some(s.max),
        value_kind: s.kind(),
        obs: obs
            .columns()
            .iter()
            .map(|c| summarize_column(&c.name, &c.data))
            .collect(),
        var_columns: var.column_names().iter().map(|s| s.to_string()).collect(),
    }
}

fn summarize_column(name: &str, data: &ColumnData) -> ColumnSummary {
    let n = data.len();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut n_missing = 0;
    for i in 0..n {
        match data.text(i) {
            Some(v) => *counts.entry(v).or_insert(0) += 1,
            None => n_missing += 1,
        }
    }
    let (min, max) = match data {
        ColumnData::Float(v) => (
            v.iter().flatten().copied().reduce(f64::min),
            v.iter().flatten().copied().reduce(f64::max),
        ),
        ColumnData::Int(v) => (
            v.iter().flatten().map(|&x| x as f64).reduce(f64::min),
            v.iter().flatten().map(|&x| x as f64).reduce(f64::max),
        ),
        ColumnData::Text(_) => (None, None),
    };
    let n_distinct = counts.len();
    ColumnSummary {
        name: name.to_string(),
        dtype: data.type_name().to_string(),
        n_missing,
        n_distinct,
        class_counts: (!matches!(data, ColumnData::Float(_))).then_some(counts),
        min,
        max,
    }
}

//! The canonical on-disk format: one Parquet file per dataset (specified in `docs/format.md`).
//!
//! One row per cell: `cell_id` (utf8), the obs columns (utf8 / int64 / float64, nullable),
//! then the sparse expression row as two list columns, `gene_index` (list<uint32>, 0-based,
//! strictly increasing) and `expression` (list<float32>). Genes, `var` and the format version
//! live in the file's key-value metadata. Row groups hold a fixed number of cells (1,024 by
//! default) so that a reader can stream mini-batches with memory bounded by one row group.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Float32Array, Float64Array, Int64Array, ListArray, RecordBatch, StringArray,
    UInt32Array,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use serde_json::{Value, json};

use crate::dataset::ExpressionDataset;
use crate::error::{IoError, Result};
use crate::matrix::CsrMatrix;
use crate::table::{Column, ColumnData, Table};
use crate::text::parent_dir;

/// Value of the `cellident.format` metadata key.
pub const FORMAT_NAME: &str = "cellident-expression";
/// Version of the layout described in `docs/format.md`.
pub const FORMAT_VERSION: u32 = 1;
/// Metadata keys.
pub const KEY_FORMAT: &str = "cellident.format";
pub const KEY_VERSION: &str = "cellident.format_version";
pub const KEY_GENES: &str = "cellident.genes";
pub const KEY_VAR: &str = "cellident.var";
/// Reserved column names.
pub const COL_CELL_ID: &str = "cell_id";
pub const COL_GENE_INDEX: &str = "gene_index";
pub const COL_EXPRESSION: &str = "expression";
const RESERVED: [&str; 3] = [COL_CELL_ID, COL_GENE_INDEX, COL_EXPRESSION];

/// Options of the Parquet writer.
#[derive(Debug, Clone)]
pub struct ParquetWriteOptions {
    /// Cells per row group: the unit a streaming reader loads at once.
    pub cells_per_row_group: usize,
    /// zstd compression level (1-22).
    pub zstd_level: i32,
    /// Extra key-value metadata (e.g. `cellident.pipeline`, the preprocessing that made the file).
    pub extra_metadata: Vec<(String, String)>,
}

impl Default for ParquetWriteOptions {
    fn default() -> Self {
        ParquetWriteOptions {
            cells_per_row_group: 1024,
            zstd_level: 3,
            extra_metadata: Vec::new(),
        }
    }
}

fn obs_data_type(c: &ColumnData) -> DataType {
    match c {
        ColumnData::Text(_) => DataType::Utf8,
        ColumnData::Int(_) => DataType::Int64,
        ColumnData::Float(_) => DataType::Float64,
    }
}

fn list_field(item: DataType) -> Arc<Field> {
    Arc::new(Field::new("item", item, false))
}

fn table_to_json(t: &Table) -> Value {
    let cols: Vec<Value> = t
        .columns()
        .iter()
        .map(|c| {
            let values = match &c.data {
                ColumnData::Text(v) => json!(v),
                ColumnData::Int(v) => json!(v),
                ColumnData::Float(v) => json!(v),
            };
            json!({"name": c.name, "type": c.data.type_name(), "values": values})
        })
        .collect();
    json!({ "columns": cols })
}

fn table_from_json(path: &Path, n_rows: usize, v: &Value) -> Result<Table> {
    let bad = |m: &str| IoError::format(path, format!("metadata '{KEY_VAR}': {m}"));
    let mut t = Table::empty(n_rows);
    let cols = v["columns"]
        .as_array()
        .ok_or_else(|| bad("no 'columns' array"))?;
    for c in cols {
        let name = c["name"]
            .as_str()
            .ok_or_else(|| bad("a column has no name"))?;
        let values = c["values"]
            .as_array()
            .ok_or_else(|| bad("a column has no values"))?;
        let data = match c["type"].as_str() {
            Some("text") => ColumnData::Text(
                values
                    .iter()
                    .map(|x| x.as_str().map(str::to_string))
                    .collect(),
            ),
            Some("integer") => ColumnData::Int(values.iter().map(Value::as_i64).collect()),
            Some("float") => ColumnData::Float(values.iter().map(Value::as_f64).collect()),
            _ => return Err(bad("unknown column type")),
        };
        t.push(Column {
            name: name.to_string(),
            data,
        })
        .map_err(|e| e.in_file(path))?;
    }
    Ok(t)
}

/// Writes a dataset as Parquet in chunks of cells, so that datasets larger than memory can
/// be written. The file appears at its final path only after [`ParquetDatasetWriter::finish`].
pub struct ParquetDatasetWriter {
    path: PathBuf,
    tmp: tempfile::NamedTempFile,
    writer: ArrowWriter<File>,
    schema: SchemaRef,
    n_genes: usize,
    cells_per_row_group: usize,
    cells_written: usize,
}

impl std::fmt::Debug for ParquetDatasetWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetDatasetWriter")
            .field("path", &self.path)
            .field("cells_written", &self.cells_written)
            .finish()
    }
}

impl ParquetDatasetWriter {
    /// Starts a file for genes `gene_ids` (with annotations `var`) and obs columns shaped
    /// like `obs_template` (its names and types; its rows are ignored).
    pub fn create(
        path: &Path,
        gene_ids: &[String],
        var: &Table,
        obs_template: &Table,
        options: &ParquetWriteOptions,
    ) -> Result<Self> {
        if options.cells_per_row_group == 0 {
            return Err(IoError::invalid(
                "Parquet options",
                "cells_per_row_group must be > 0",
            ));
        }
        for c in obs_template.columns() {
            if RESERVED.contains(&c.name.as_str()) {
                return Err(IoError::invalid(
                    format!("obs column '{}'", c.name),
                    "collides with a reserved column of the cellident Parquet format (cell_id, gene_index, expression); rename it",
                ));
            }
        }
        let mut fields = vec![Field::new(COL_CELL_ID, DataType::Utf8, false)];
        for c in obs_template.columns() {
            fields.push(Field::new(&c.name, obs_data_type(&c.data), true));
        }
        fields.push(Field::new(
            COL_GENE_INDEX,
            DataType::List(list_field(DataType::UInt32)),
            false,
        ));
        fields.push(Field::new(
            COL_EXPRESSION,
            DataType::List(list_field(DataType::Float32)),
            false,
        ));
        // File-level key-value metadata, visible to every Parquet reader (pyarrow:
        // `pq.read_metadata(f).metadata`, polars: `pl.read_parquet_metadata(f)`).
        let metadata: Vec<KeyValue> = [
            (KEY_FORMAT.to_string(), FORMAT_NAME.to_string()),
            (KEY_VERSION.to_string(), FORMAT_VERSION.to_string()),
            (
                KEY_GENES.to_string(),
                serde_json::to_string(gene_ids).unwrap_or_default(),
            ),
            (KEY_VAR.to_string(), table_to_json(var).to_string()),
        ]
        .into_iter()
        .chain(options.extra_metadata.iter().cloned())
        .map(|(k, v)| KeyValue::new(k, v))
        .collect();
        let schema = Arc::new(Schema::new(fields));
        let level = ZstdLevel::try_new(options.zstd_level)
            .map_err(|e| IoError::invalid("Parquet options", e.to_string()))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            .set_max_row_group_row_count(Some(options.cells_per_row_group))
            .set_created_by(format!("cellident {}", env!("CARGO_PKG_VERSION")))
            .set_key_value_metadata(Some(metadata))
            .build();
        let dir = parent_dir(path);
        let tmp = tempfile::Builder::new()
            .prefix(".cellident-")
            .suffix(".parquet.tmp")
            .tempfile_in(dir)
            .map_err(|e| IoError::io(path, e))?;
        let file = tmp
            .as_file()
            .try_clone()
            .map_err(|e| IoError::io(path, e))?;
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(props))
            .map_err(|e| IoError::format(path, e.to_string()))?;
        Ok(ParquetDatasetWriter {
            path: path.to_path_buf(),
            tmp,
            writer,
            schema,
            n_genes: gene_ids.len(),
            cells_per_row_group: options.cells_per_row_group,
            cells_written: 0,
        })
    }

    /// Appends cells: their ids, their rows of the matrix and their obs rows.
    pub fn write(&mut self, cell_ids: &[String], matrix: &CsrMatrix, obs: &Table) -> Result<()> {
        if matrix.n_cols() != self.n_genes {
            return Err(IoError::invalid(
                "Parquet writer",
                format!(
                    "chunk has {} genes, file has {}",
                    matrix.n_cols(),
                    self.n_genes
                ),
            ));
        }
        if matrix.n_rows() != cell_ids.len() || obs.n_rows() != cell_ids.len() {
            return Err(IoError::invalid(
                "Parquet writer",
                "chunk parts differ in cell count",
            ));
        }
        // Write in slices of one row group so list offsets (i32) can never overflow.
        let mut start = 0;
        while start < cell_ids.len() {
            let end = (start + self.cells_per_row_group).min(cell_ids.len());
            let batch = self.record_batch(&cell_ids[start..end], matrix, start, end, obs)?;
            self.writer
                .write(&batch)
                .map_err(|e| IoError::format(&self.path, e.to_string()))?;
            start = end;
        }
        self.cells_written += cell_ids.len();
        Ok(())
    }

    fn record_batch(
        &self,
        cell_ids: &[String],
        matrix: &CsrMatrix,
        start: usize,
        end: usize,
        obs: &Table,
    ) -> Result<RecordBatch> {
        let indptr = &matrix.indptr()[start..=end];
        let (lo, hi) = (indptr[0], indptr[end - start]);
        let offsets: Vec<i32> = indptr.iter().map(|&p| (p - lo) as i32).collect();
        let mut columns: Vec<ArrayRef> = vec![Arc::new(StringArray::from_iter_values(cell_ids))];
        let rows: Vec<Option<usize>> = (start..end).map(Some).collect();
        for c in obs.columns() {
            let part = c.data.take(&rows);
            let array: ArrayRef = match part {
                ColumnData::Text(v) => Arc::new(StringArray::from(v)),
                ColumnData::Int(v) => Arc::new(Int64Array::from(v)),
                ColumnData::Float(v) => Arc::new(Float64Array::from(v)),
            };
            columns.push(array);
        }
        let offsets = OffsetBuffer::new(offsets.into());
        columns.push(Arc::new(ListArray::new(
            list_field(DataType::UInt32),
            offsets.clone(),
            Arc::new(UInt32Array::from(matrix.indices()[lo..hi].to_vec())),
            None,
        )));
        columns.push(Arc::new(ListArray::new(
            list_field(DataType::Float32),
            offsets,
            Arc::new(Float32Array::from(matrix.data()[lo..hi].to_vec())),
            None,
        )));
        RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|e| IoError::invalid("Parquet writer", e.to_string()))
    }

    /// Number of cells written so far.
    pub fn cells_written(&self) -> usize {
        self.cells_written
    }

    /// Closes the file and moves it to its final path.
    pub fn finish(self) -> Result<()> {
        let ParquetDatasetWriter {
            path, tmp, writer, ..
        } = self;
        writer
            .close()
            .map_err(|e| IoError::format(&path, e.to_string()))?;
        tmp.as_file()
            .sync_all()
            .map_err(|e| IoError::io(&path, e))?;
        crate::text::publish_permissions(tmp.as_file()).map_err(|e| IoError::io(&path, e))?;
        tmp.persist(&path)
            .map_err(|e| IoError::io(&path, e.error))?;
        Ok(())
    }
}

/// Writes a whole dataset to a Parquet file (atomically).
pub fn write_parquet(
    path: &Path,
    dataset: &ExpressionDataset,
    options: &ParquetWriteOptions,
) -> Result<()> {
    let mut w = ParquetDatasetWriter::create(
        path,
        dataset.gene_ids(),
        dataset.var(),
        dataset.obs(),
        options,
    )?;
    w.write(dataset.cell_ids(), dataset.matrix(), dataset.obs())?;
    w.finish()
}

/// A cellident Parquet dataset opened for reading: its genes and shape are known without
/// reading any cells.
#[derive(Debug, Clone)]
pub struct ParquetDataset {
    path: PathBuf,
    gene_ids: Vec<String>,
    var: Table,
    n_cells: usize,
    /// Index of each row group's first cell, plus the number of cells at the end.
    row_group_starts: Vec<usize>,
    schema: SchemaRef,
    obs_columns: Vec<String>,
}

impl ParquetDataset {
    /// Opens a file and checks that it is a cellident expression dataset.
    pub fn open(path: &Path) -> Result<Self> {
        let builder = Self::builder(path)?;
        let schema = builder.schema().clone();
        let meta: std::collections::HashMap<String, String> = builder
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .map(|kv| {
                kv.iter()
                    .map(|e| (e.key.clone(), e.value.clone().unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default();
        match meta.get(KEY_FORMAT) {
            Some(f) if f == FORMAT_NAME => {}
            _ => {
                return Err(IoError::format(
                    path,
                    format!(
                        "is a Parquet file but not a cellident expression dataset (no '{KEY_FORMAT}' metadata); convert your data with `cellident import`"
                    ),
                ));
            }
        }
        let version: u32 = meta
            .get(KEY_VERSION)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if version != FORMAT_VERSION {
            return Err(IoError::format(
                path,
                format!(
                    "has format version {version}; this cellident reads version {FORMAT_VERSION}"
                ),
            ));
        }
        let gene_ids: Vec<String> = meta
            .get(KEY_GENES)
            .and_then(|g| serde_json::from_str(g).ok())
            .ok_or_else(|| {
                IoError::format(
                    path,
                    format!("metadata '{KEY_GENES}' is missing or not a JSON list"),
                )
            })?;
        let var = match meta.get(KEY_VAR) {
            Some(v) => {
                let value: Value = serde_json::from_str(v)
                    .map_err(|e| IoError::format(path, format!("metadata '{KEY_VAR}': {e}")))?;
                table_from_json(path, gene_ids.len(), &value)?
            }
            None => Table::empty(gene_ids.len()),
        };
        for col in RESERVED {
            if schema.field_with_name(col).is_err() {
                return Err(IoError::format(path, format!("has no '{col}' column")));
            }
        }
        let obs_columns = schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .filter(|n| !RESERVED.contains(&n.as_str()))
            .collect();
        let md = builder.metadata();
        let mut row_group_starts = vec![0usize];
        for g in md.row_groups() {
            let last = row_group_starts[row_group_starts.len() - 1];
            row_group_starts.push(last + g.num_rows().max(0) as usize);
        }
        Ok(ParquetDataset {
            path: path.to_path_buf(),
            n_cells: md.file_metadata().num_rows() as usize,
            row_group_starts,
            gene_ids,
            var,
            schema,
            obs_columns,
        })
    }

    fn builder(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>> {
        let file = File::open(path).map_err(|e| IoError::io(path, e))?;
        ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| IoError::format(path, format!("not a readable Parquet file: {e}")))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Gene ids, in column order.
    pub fn gene_ids(&self) -> &[String] {
        &self.gene_ids
    }
    /// Gene annotations.
    pub fn var(&self) -> &Table {
        &self.var
    }
    /// Number of cells (rows).
    pub fn n_cells(&self) -> usize {
        self.n_cells
    }
    /// Number of genes.
    pub fn n_genes(&self) -> usize {
        self.gene_ids.len()
    }
    /// Number of row groups.
    pub fn n_row_groups(&self) -> usize {
        self.row_group_starts.len() - 1
    }
    /// The cells of row group `group`: `start..end` in file order.
    pub fn row_group_cells(&self, group: usize) -> std::ops::Range<usize> {
        let g = group.min(self.n_row_groups());
        self.row_group_starts[g]..self.row_group_starts[(g + 1).min(self.n_row_groups())]
    }

    /// Reads one row group (all its cells, with the expression matrix) — the unit of random
    /// access that a shuffling reader draws from; memory is one row group.
    pub fn read_row_group(&self, group: usize) -> Result<CellBatch> {
        if group >= self.n_row_groups() {
            return Err(IoError::format(
                &self.path,
                format!(
                    "has {} row groups; row group {group} does not exist",
                    self.n_row_groups()
                ),
            ));
        }
        let cells = self.row_group_cells(group);
        let builder = Self::builder(&self.path)?;
        let reader = builder
            .with_batch_size(cells.len().max(1))
            .with_row_groups(vec![group])
            .build()
            .map_err(|e| IoError::format(&self.path, e.to_string()))?;
        let mut batches = CellBatches {
            path: self.path.clone(),
            reader,
            n_genes: self.gene_ids.len(),
            next_row: cells.start,
            with_matrix: true,
        };
        match batches.next() {
            Some(b) => b,
            None => Ok(CellBatch {
                first_cell: cells.start,
                cell_ids: Vec::new(),
                matrix: CsrMatrix::zeros(0, self.gene_ids.len()),
                obs: Table::empty(0),
            }),
        }
    }
    /// Names of the obs columns.
    pub fn obs_columns(&self) -> &[String] {
        &self.obs_columns
    }

    /// Streams the cells in batches of `batch_size`, reading one row group at a time.
    /// With `with_matrix = false` only ids and obs are decoded (cheap).
    pub fn batches(&self, batch_size: usize, with_matrix: bool) -> Result<CellBatches> {
        let builder = Self::builder(&self.path)?;
        let wanted: Vec<usize> = self
            .schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| {
                with_matrix || (f.name() != COL_GENE_INDEX && f.name() != COL_EXPRESSION)
            })
            .map(|(i, _)| i)
            .collect();
        let mask = ProjectionMask::roots(builder.parquet_schema(), wanted);
        let reader = builder
            .with_batch_size(batch_size.max(1))
            .with_projection(mask)
            .build()
            .map_err(|e| IoError::format(&self.path, e.to_string()))?;
        Ok(CellBatches {
            path: self.path.clone(),
            reader,
            n_genes: self.gene_ids.len(),
            next_row: 0,
            with_matrix,
        })
    }

    /// Reads the whole dataset into memory.
    pub fn read(&self) -> Result<ExpressionDataset> {
        // Each batch is appended to one matrix sized from the file's metadata, so memory peaks
        // at the matrix plus one batch (collecting the batches and stacking them held two
        // copies, three while a vector grew).
        let mut matrix =
            CsrMatrix::with_capacity(self.n_genes(), self.n_cells, self.stored_values_hint()?);
        let mut cells = Vec::with_capacity(self.n_cells);
        let mut obs: Option<Table> = None;
        for batch in self.batches(8192, true)? {
            let b = batch?;
            cells.extend(b.cell_ids);
            matrix.append_rows(&b.matrix)?;
            match &mut obs {
                None => obs = Some(b.obs),
                Some(o) => o.append(&b.obs).map_err(|e| e.in_file(&self.path))?,
            }
        }
        let obs = obs.unwrap_or_else(|| Table::empty(0));
        ExpressionDataset::new(matrix, cells, self.gene_ids.clone(), obs, self.var.clone())
            .map_err(|e| e.in_file(&self.path))
    }

    /// An upper bound on the stored values (non-zeros) of the file, from the row groups'
    /// metadata: the value count of the gene-index column (an empty row also counts one).
    fn stored_values_hint(&self) -> Result<usize> {
        let builder = Self::builder(&self.path)?;
        let meta = builder.metadata();
        let leaf = meta
            .file_metadata()
            .schema_descr()
            .columns()
            .iter()
            .position(|c| c.path().parts().first().map(String::as_str) == Some(COL_GENE_INDEX));
        Ok(match leaf {
            Some(i) => meta
                .row_groups()
                .iter()
                .map(|rg| rg.column(i).num_values().max(0) as usize)
                .sum(),
            None => 0,
        })
    }

    /// Reads only cell ids and obs (no expression values).
    pub fn read_obs(&self) -> Result<(Vec<String>, Table)> {
        let mut cells = Vec::with_capacity(self.n_cells);
        let mut obs: Option<Table> = None;
        for batch in self.batches(65536, false)? {
            let b = batch?;
            cells.extend(b.cell_ids);
            match &mut obs {
                None => obs = Some(b.obs),
                Some(o) => o.append(&b.obs).map_err(|e| e.in_file(&self.path))?,
            }
        }
        Ok((cells, obs.unwrap_or_else(|| Table::empty(0))))
    }
}

/// Reads a cellident Parquet file into memory.
pub fn read_parquet(path: &Path) -> Result<ExpressionDataset> {
    ParquetDataset::open(path)?.read()
}

/// A batch of consecutive cells from a Parquet dataset.
#[derive(Debug, Clone)]
pub struct CellBatch {
    /// Index of the batch's first cell in the file.
    pub first_cell: usize,
    pub cell_ids: Vec<String>,
    /// `[batch cells, genes]`; all-zero with no stored values when read without the matrix.
    pub matrix: CsrMatrix,
    pub obs: Table,
}

/// Iterator over [`CellBatch`]es; memory is bounded by one row group plus one batch.
pub struct CellBatches {
    path: PathBuf,
    reader: ParquetRecordBatchReader,
    n_genes: usize,
    next_row: usize,
    with_matrix: bool,
}

impl std::fmt::Debug for CellBatches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CellBatches")
            .field("path", &self.path)
            .field("next_row", &self.next_row)
            .finish()
    }
}

impl Iterator for CellBatches {
    type Item = Result<CellBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        let batch = match self.reader.next()? {
            Ok(b) => b,
            Err(e) => {
                return Some(Err(IoError::format(
                    &self.path,
                    format!("cannot decode cells from row {}: {e}", self.next_row),
                )));
            }
        };
        let out = self.convert(&batch);
        self.next_row += batch.num_rows();
        Some(out)
    }
}

impl CellBatches {
    fn convert(&self, batch: &RecordBatch) -> Result<CellBatch> {
        let path = &self.path;
        let n = batch.num_rows();
        let first = self.next_row;
        let bad = |m: String| IoError::format(path, format!("rows {first}..{}: {m}", first + n));
        let ids = batch
            .column_by_name(COL_CELL_ID)
            .ok_or_else(|| bad("no cell_id column".into()))?;
        let ids = arrow::compute::cast(ids, &DataType::Utf8).map_err(|e| bad(e.to_string()))?;
        let ids = ids
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| bad("cell_id is not text".into()))?;
        if ids.null_count() > 0 {
            return Err(bad("cell_id has missing values".into()));
        }
        let cell_ids: Vec<String> = ids
            .iter()
            .map(|s| s.unwrap_or_default().to_string())
            .collect();
        let mut obs = Table::empty(n);
        for (i, field) in batch.schema().fields().iter().enumerate() {
            if RESERVED.contains(&field.name().as_str()) {
                continue;
            }
            let data = column_from_arrow(batch.column(i))
                .map_err(|m| bad(format!("obs column '{}': {m}", field.name())))?;
            obs.push(Column {
                name: field.name().clone(),
                data,
            })
            .map_err(|e| e.in_file(path))?;
        }
        let matrix = if self.with_matrix {
            let index =
                list_parts::<arrow::datatypes::UInt32Type>(batch, COL_GENE_INDEX).map_err(&bad)?;
            let values =
                list_parts::<arrow::datatypes::Float32Type>(batch, COL_EXPRESSION).map_err(&bad)?;
            if index.0 != values.0 {
                return Err(bad(
                    "gene_index and expression lists differ in length".into()
                ));
            }
            let base = index.0[0];
            let indptr: Vec<usize> = index.0.iter().map(|&o| (o - base) as usize).collect();
            let m = CsrMatrix::new(n, self.n_genes, indptr, index.1, values.1);
            m.map_err(|e| bad(e.to_string()))?
        } else {
            CsrMatrix::zeros(n, self.n_genes)
        };
        Ok(CellBatch {
            first_cell: first,
            cell_ids,
            matrix,
            obs,
        })
    }
}

fn list_parts<T>(
    batch: &RecordBatch,
    name: &str,
) -> std::result::Result<(Vec<i32>, Vec<T::Native>), String>
where
    T: arrow::array::ArrowPrimitiveType,
{
    let col = batch
        .column_by_name(name)
        .ok_or_else(|| format!("no '{name}' column"))?;
    let list = col
        .as_any()
        .downcast_ref::<ListArray>()
        .ok_or_else(|| format!("'{name}' is not a list column"))?;
    if list.null_count() > 0 {
        return Err(format!("'{name}' has missing rows"));
    }
    let offsets = list.value_offsets();
    let (lo, hi) = (offsets[0] as usize, offsets[offsets.len() - 1] as usize);
    let values = list
        .values()
        .as_any()
        .downcast_ref::<arrow::array::PrimitiveArray<T>>()
        .ok_or_else(|| format!("'{name}' has the wrong item type"))?;
    if values.null_count() > 0 {
        return Err(format!("'{name}' has missing items"));
    }
    Ok((offsets.to_vec(), values.values()[lo..hi].to_vec()))
}

fn column_from_arrow(a: &ArrayRef) -> std::result::Result<ColumnData, String> {
    use arrow::compute::cast;
    let dt = a.data_type();
    if dt.is_integer() {
        let c = cast(a, &DataType::Int64).map_err(|e| e.to_string())?;
        let c = c
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or("cast failed")?;
        return Ok(ColumnData::Int(c.iter().collect()));
    }
    if dt.is_floating() {
        let c = cast(a, &DataType::Float64).map_err(|e| e.to_string())?;
        let c = c
            .as_any()
            .downcast_ref::<Float64Array>()
            .ok_or("cast failed")?;
        if c.iter().flatten().any(|x| !x.is_finite()) {
            return Err("holds a non-finite value".into());
        }
        return Ok(ColumnData::Float(c.iter().collect()));
    }
    let c = cast(a, &DataType::Utf8).map_err(|e| format!("unsupported type {dt}: {e}"))?;
    let c = c
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or("cast failed")?;
    Ok(ColumnData::Text(
        c.iter().map(|s| s.map(str::to_string)).collect(),
    ))
}

/// Reads any Parquet file as an annotation table: ids from the column `id_column` (or, when
/// `None`, from `cell_id`, `cell`, or the first text column), the other non-list columns as
/// annotations. Used for prediction and label files.
pub fn read_parquet_table(
    path: &Path,
    id_column: Option<&str>,
) -> Result<crate::layout::AnnotationCsv> {
    let file = File::open(path).map_err(|e| IoError::io(path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| IoError::format(path, format!("not a readable Parquet file: {e}")))?;
    let schema = builder.schema().clone();
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let id_name = match id_column {
        Some(c) => names.iter().find(|n| *n == c).cloned().ok_or_else(|| {
            IoError::format(
                path,
                format!("has no column '{c}'; columns: {}", names.join(", ")),
            )
        })?,
        None => names
            .iter()
            .find(|n| *n == COL_CELL_ID || *n == "cell")
            .or_else(|| names.first())
            .cloned()
            .ok_or_else(|| IoError::format(path, "has no columns"))?,
    };
    let keep: Vec<usize> = schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| !matches!(f.data_type(), DataType::List(_) | DataType::LargeList(_)))
        .map(|(i, _)| i)
        .collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), keep);
    let reader = builder
        .with_projection(mask)
        .build()
        .map_err(|e| IoError::format(path, e.to_string()))?;
    let mut ids: Vec<String> = Vec::new();
    let mut table: Option<Table> = None;
    for batch in reader {
        let batch = batch.map_err(|e| IoError::format(path, e.to_string()))?;
        let mut part = Table::empty(batch.num_rows());
        for (i, field) in batch.schema().fields().iter().enumerate() {
            let data = column_from_arrow(batch.column(i))
                .map_err(|m| IoError::format(path, format!("column '{}': {m}", field.name())))?;
            if *field.name() == id_name {
                for r in 0..data.len() {
                    ids.push(data.text(r).ok_or_else(|| {
                        IoError::format(
                            path,
                            format!("row {}: the id column '{id_name}' is empty", ids.len() + 1),
                        )
                    })?);
                }
            } else {
                part.push(Column {
                    name: field.name().clone(),
                    data,
                })
                .map_err(|e| e.in_file(path))?;
            }
        }
        match &mut table {
            None => table = Some(part),
            Some(t) => t.append(&part).map_err(|e| e.in_file(path))?,
        }
    }
    Ok(crate::layout::AnnotationCsv {
        id_column: id_name,
        ids,
        table: table.unwrap_or_default(),
    })
}

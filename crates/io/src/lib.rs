//! cellident-io owns the expression data model and every file format.
//!
//! - The data model: [`ExpressionDataset`] — a sparse [`CsrMatrix`] (`[cells, genes]`, `f32`)
//!   with unique cell ids, unique gene ids, and [`Table`]s of per-cell (`obs`) and per-gene
//!   (`var`) annotations.
//! - The canonical format, Parquet ([`parquet_format`], specified in `docs/format.md`), with a
//!   streaming batch reader ([`ParquetDataset::batches`]) whose memory is bounded by one row group.
//! - Importers: the `../shared/datasets` mtx folder ([`read_mtx_folder`]), 10x Genomics folders
//!   ([`read_10x_folder`]), dense CSV/TSV ([`read_dense_text`]), AnnData `.h5ad`
//!   ([`read_h5ad`], feature `h5ad`). Exporters: Parquet, mtx folder, CSV.
//!
//! Every error names the file and, where there is one, the line, row or gene. Every writer is
//! atomic (temporary file, then rename). This crate knows nothing of models, tensors or
//! preprocessing; it must not depend on any other cellident crate.

mod dataset;
mod dense;
mod error;
#[cfg(feature = "h5ad")]
mod h5ad;
mod layout;
mod matrix;
mod mtx;
pub mod parquet_format;
mod summary;
mod table;
mod tenx;
mod text;

use std::path::Path;

pub use dataset::{ExpressionDataset, GeneAlignment, ObsJoin, align_genes};
pub use dense::{DenseTextOptions, read_dense_text, write_dense_csv};
pub use error::{IoError, Result};
#[cfg(feature = "h5ad")]
pub use h5ad::{H5adOptions, read_h5ad};
pub use layout::{
    AnnotationCsv, MtxFolderFiles, read_annotation_csv, read_mtx_folder, write_annotation_csv,
    write_lines, write_mtx_folder,
};
pub use matrix::CsrMatrix;
pub use mtx::{MtxContents, MtxOrientation, read_matrix_market, write_matrix_market};
pub use parquet_format::{
    CellBatch, CellBatches, ParquetDataset, ParquetDatasetWriter, ParquetWriteOptions,
    read_parquet, read_parquet_table, write_parquet,
};
pub use summary::{ColumnSummary, DatasetSummary, ValueKind, summarize, summarize_parquet};
pub use table::{Column, ColumnData, Table, format_float};
pub use tenx::{TenxOptions, TenxVarNames, make_unique, read_10x_folder, write_10x_folder};
pub use text::{csv_field, write_atomic};

/// Input formats that [`import`] understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// A folder in the `../shared/datasets` layout (matrix.mtx.gz rows = cells, genes.tsv.gz, ...).
    Mtx,
    /// A 10x Genomics matrix folder (matrix.mtx genes x barcodes, features.tsv, barcodes.tsv).
    TenX,
    /// A dense CSV/TSV matrix.
    Csv,
    /// An AnnData `.h5ad` file.
    H5ad,
    /// A cellident Parquet file.
    Parquet,
}

impl InputFormat {
    /// Guesses the format of `path` from its name, or from the files in a folder.
    pub fn detect(path: &Path) -> Result<InputFormat> {
        if path.is_dir() {
            let has = |n: &str| path.join(n).is_file();
            if has("barcodes.tsv.gz") || has("barcodes.tsv") {
                return Ok(InputFormat::TenX);
            }
            if has("cells.tsv.gz") || has("cells.tsv") {
                return Ok(InputFormat::Mtx);
            }
            return Err(IoError::Format {
                path: path.to_path_buf(),
                message: "is a folder with neither cells.tsv[.gz] (mtx layout) nor barcodes.tsv[.gz] (10x); pass --format".into(),
            });
        }
        let name = path.to_string_lossy().to_ascii_lowercase();
        let name = name.strip_suffix(".gz").unwrap_or(&name);
        if name.ends_with(".h5ad") {
            Ok(InputFormat::H5ad)
        } else if name.ends_with(".parquet") || name.ends_with(".pq") {
            Ok(InputFormat::Parquet)
        } else if name.ends_with(".csv") || name.ends_with(".tsv") || name.ends_with(".txt") {
            Ok(InputFormat::Csv)
        } else if !path.exists() {
            Err(IoError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
            })
        } else {
            Err(IoError::Format {
                path: path.to_path_buf(),
                message: "cannot tell the format from the name; pass --format".into(),
            })
        }
    }
}

/// Options of [`import`] shared by all formats.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// An obs CSV to join by cell id (10x and CSV inputs; left join).
    pub obs: Option<std::path::PathBuf>,
    /// Dense text input has genes as rows.
    pub transpose: bool,
    /// h5ad: read `raw/X`.
    pub use_raw: bool,
    /// 10x: which feature field names the genes.
    pub tenx_var_names: TenxVarNames,
}

/// Reads any supported input into memory.
pub fn import(
    path: &Path,
    format: InputFormat,
    options: &ImportOptions,
) -> Result<ExpressionDataset> {
    let obs = options.obs.as_deref();
    match format {
        InputFormat::Mtx => {
            if obs.is_some() {
                return Err(IoError::invalid(
                    "--obs",
                    "an mtx folder carries its own obs.csv.gz; --obs applies to 10x and CSV inputs",
                ));
            }
            read_mtx_folder(path)
        }
        InputFormat::TenX => read_10x_folder(
            path,
            obs,
            &TenxOptions {
                var_names: options.tenx_var_names,
                all_feature_types: false,
            },
        ),
        InputFormat::Csv => read_dense_text(
            path,
            obs,
            &DenseTextOptions {
                genes_by_cells: options.transpose,
                delimiter: None,
            },
        ),
        InputFormat::Parquet => read_parquet(path),
        #[cfg(feature = "h5ad")]
        InputFormat::H5ad => read_h5ad(
            path,
            &H5adOptions {
                use_raw: options.use_raw,
            },
        ),
        #[cfg(not(feature = "h5ad"))]
        InputFormat::H5ad => Err(IoError::Format {
            path: path.to_path_buf(),
            message: "h5ad support was not compiled in; rebuild with `--features h5ad`".into(),
        }),
    }
}

//! AnnData `.h5ad` import through a pure-Rust HDF5 reader (`hdf5-pure`; no system library).
//!
//! Both on-disk generations are read:
//! - anndata >= 0.7: `obs`/`var` are groups (`_index` attribute, one dataset per column,
//!   categoricals as `categories` + `codes` groups, or 0.7's `__categories/<col>`), sparse
//!   matrices are groups with `encoding-type` `csr_matrix`/`csc_matrix` and a `shape` attribute;
//!   the raw layer lives in `raw/X`, `raw/var`.
//! - legacy files (anndata < 0.7, e.g. scanpy's bundled `pbmc68k_reduced`): `obs`/`var` are
//!   compound datasets with an `index` field, categoricals are integer codes with their
//!   categories in `uns/<col>_categories`, sparse groups carry `h5sparse_format` /
//!   `h5sparse_shape`, and the raw layer lives in `raw.X`, `raw.var`.

use std::path::Path;

use hdf5_pure::{AttrValue, Datatype, DatatypeByteOrder, File};

use crate::dataset::ExpressionDataset;
use crate::error::{IoError, Result};
use crate::matrix::CsrMatrix;
use crate::table::{Column, ColumnData, Table};

/// Options of [`read_h5ad`].
#[derive(Debug, Clone, Default)]
pub struct H5adOptions {
    /// Read `raw/X` (and `raw/var` for gene ids) instead of `X`.
    pub use_raw: bool,
}

/// Reads an `.h5ad` file: the matrix (dense, CSR or CSC), `obs_names`, `var_names` and every
/// 1-D obs column (categoricals as text).
pub fn read_h5ad(path: &Path, options: &H5adOptions) -> Result<ExpressionDataset> {
    let file = File::open(path)
        .map_err(|e| IoError::format(path, format!("not a readable HDF5 file: {e}")))?;
    let h = H5ad { path, file: &file };
    let (x_path, var_path) = if options.use_raw {
        if h.exists_group("raw") {
            ("raw/X", "raw/var")
        } else if h.exists_any("raw.X") {
            ("raw.X", "raw.var")
        } else {
            return Err(IoError::format(
                path,
                "has no raw layer (raw/X); drop --raw to read X",
            ));
        }
    } else {
        ("X", "var")
    };
    let matrix = h.read_matrix(x_path)?;
    let (gene_ids, var) = h.read_frame(var_path)?;
    let (cell_ids, obs) = h.read_frame("obs")?;
    if matrix.n_cols() != gene_ids.len() {
        return Err(IoError::format(
            path,
            format!(
                "{x_path} has {} columns but {var_path} has {} rows",
                matrix.n_cols(),
                gene_ids.len()
            ),
        ));
    }
    // Keep var annotations only when they describe the matrix's genes.
    ExpressionDataset::new(matrix, cell_ids, gene_ids, obs, var).map_err(|e| e.in_file(path))
}

struct H5ad<'a> {
    path: &'a Path,
    file: &'a File,
}

fn attr_text(v: &AttrValue) -> Option<String> {
    match v {
        AttrValue::String(s) | AttrValue::AsciiString(s) | AttrValue::VarLenString(s) => {
            Some(s.clone())
        }
        AttrValue::StringSized { value, .. } | AttrValue::AsciiStringSized { value, .. } => {
            Some(value.clone())
        }
        _ => None,
    }
}

fn attr_texts(v: &AttrValue) -> Option<Vec<String>> {
    match v {
        AttrValue::StringArray(s)
        | AttrValue::AsciiStringArray(s)
        | AttrValue::VarLenStringArray(s)
        | AttrValue::VarLenAsciiCharArray(s) => Some(s.clone()),
        other => attr_text(other).map(|s| vec![s]),
    }
}

fn attr_u64s(v: &AttrValue) -> Option<Vec<u64>> {
    match v {
        AttrValue::I64Array(a) => Some(a.iter().map(|&x| x as u64).collect()),
        AttrValue::I32Array(a) => Some(a.iter().map(|&x| x as u64).collect()),
        AttrValue::U64Array(a) => Some(a.clone()),
        AttrValue::U32Array(a) => Some(a.iter().map(|&x| x as u64).collect()),
        _ => None,
    }
}

impl H5ad<'_> {
    fn err(&self, m: impl Into<String>) -> IoError {
        IoError::format(self.path, m.into())
    }

    fn exists_group(&self, p: &str) -> bool {
        self.file.group(p).is_ok()
    }

    fn exists_any(&self, p: &str) -> bool {
        self.file.group(p).is_ok() || self.file.dataset(p).is_ok()
    }

    fn read_matrix(&self, p: &str) -> Result<CsrMatrix> {
        if let Ok(ds) = self.file.dataset(p) {
            let shape = ds.shape().map_err(|e| self.err(format!("{p}: {e}")))?;
            if shape.len() != 2 {
                return Err(self.err(format!("{p} is not a 2-D matrix (shape {shape:?})")));
            }
            let values = ds.read_f32().map_err(|e| self.err(format!("{p}: {e}")))?;
            check_finite(self, p, &values)?;
            return CsrMatrix::from_dense(shape[0] as usize, shape[1] as usize, &values)
                .map_err(|e| e.in_file(self.path));
        }
        let g = self
            .file
            .group(p)
            .map_err(|_| self.err(format!("has no matrix '{p}'")))?;
        let attrs = g.attrs().map_err(|e| self.err(format!("{p}: {e}")))?;
        let format = attrs
            .get("encoding-type")
            .or_else(|| attrs.get("h5sparse_format"))
            .and_then(attr_text)
            .ok_or_else(|| self.err(format!("{p} is a group without a sparse encoding-type")))?;
        let shape = attrs
            .get("shape")
            .or_else(|| attrs.get("h5sparse_shape"))
            .and_then(attr_u64s)
            .filter(|s| s.len() == 2)
            .ok_or_else(|| self.err(format!("{p} has no 2-D shape attribute")))?;
        let (n_rows, n_cols) = (shape[0] as usize, shape[1] as usize);
        let read_i64 = |name: &str| -> Result<Vec<i64>> {
            g.dataset(name)
                .and_then(|d| d.read_i64())
                .map_err(|e| self.err(format!("{p}/{name}: {e}")))
        };
        let data = g
            .dataset("data")
            .and_then(|d| d.read_f32())
            .map_err(|e| self.err(format!("{p}/data: {e}")))?;
        check_finite(self, p, &data)?;
        let indices = read_i64("indices")?;
        let indptr = read_i64("indptr")?;
        let is_csr = matches!(format.as_str(), "csr_matrix" | "csr");
        let is_csc = matches!(format.as_str(), "csc_matrix" | "csc");
        if !is_csr && !is_csc {
            return Err(self.err(format!("{p}: unsupported sparse format '{format}'")));
        }
        let (major, minor) = if is_csr {
            (n_rows, n_cols)
        } else {
            (n_cols, n_rows)
        };
        if indptr.len() != major + 1 || indices.len() != data.len() {
            return Err(self.err(format!(
                "{p}: indptr has {} entries and indices {} for a {} x {} {format}",
                indptr.len(),
                indices.len(),
                n_rows,
                n_cols
            )));
        }
        // Build coordinates; from_triplets sorts indices and rejects duplicates.
        let mut rows = Vec::with_capacity(data.len());
        let mut cols = Vec::with_capacity(data.len());
        for m in 0..major {
            let (s, e) = (indptr[m], indptr[m + 1]);
            if s < 0 || e < s || e as usize > indices.len() {
                return Err(self.err(format!("{p}: indptr is not monotone at {m}")));
            }
            for &k in &indices[s as usize..e as usize] {
                if k < 0 || k as usize >= minor {
                    return Err(self.err(format!("{p}: index {k} out of range")));
                }
                if is_csr {
                    rows.push(m as u32);
                    cols.push(k as u32);
                } else {
                    rows.push(k as u32);
                    cols.push(m as u32);
                }
            }
        }
        CsrMatrix::from_triplets(n_rows, n_cols, &rows, &cols, &data)
            .map_err(|e| e.in_file(self.path))
    }

    /// Reads a dataframe (`obs` or `var`): its index and its 1-D columns.
    fn read_frame(&self, p: &str) -> Result<(Vec<String>, Table)> {
        if let Ok(g) = self.file.group(p) {
            let attrs = g.attrs().map_err(|e| self.err(format!("{p}: {e}")))?;
            let index_name = attrs
                .get("_index")
                .and_then(attr_text)
                .unwrap_or_else(|| "_index".to_string());
            let index = g
                .dataset(&index_name)
                .and_then(|d| d.read_string())
                .map_err(|e| self.err(format!("{p}/{index_name}: {e}")))?;
            let order = attrs
                .get("column-order")
                .and_then(attr_texts)
                .unwrap_or_default();
            let mut table = Table::empty(index.len());
            for name in order.iter().filter(|n| !n.is_empty()) {
                if let Some(data) = self.read_modern_column(p, name, index.len())? {
                    table
                        .push(Column {
                            name: name.clone(),
                            data,
                        })
                        .map_err(|e| e.in_file(self.path))?;
                }
            }
            return Ok((index, table));
        }
        let ds = self
            .file
            .dataset(p)
            .map_err(|_| self.err(format!("has no '{p}' dataframe")))?;
        self.read_legacy_frame(p, &ds)
    }

    fn read_modern_column(&self, frame: &str, name: &str, n: usize) -> Result<Option<ColumnData>> {
        let p = format!("{frame}/{name}");
        if let Ok(g) = self.file.group(&p) {
            let attrs = g.attrs().map_err(|e| self.err(format!("{p}: {e}")))?;
            let kind = attrs
                .get("encoding-type")
                .and_then(attr_text)
                .unwrap_or_default();
            return match kind.as_str() {
                "categorical" => {
                    let cats = g
                        .dataset("categories")
                        .map_err(|e| self.err(format!("{p}/categories: {e}")))?;
                    let codes = g
                        .dataset("codes")
                        .and_then(|d| d.read_i64())
                        .map_err(|e| self.err(format!("{p}/codes: {e}")))?;
                    let cats = read_any_text(&cats)
                        .map_err(|e| self.err(format!("{p}/categories: {e}")))?;
                    Ok(Some(decode_categorical(self, &p, &codes, &cats)?))
                }
                "nullable-integer" | "nullable-boolean" => {
                    let values = g
                        .dataset("values")
                        .and_then(|d| d.read_i64())
                        .map_err(|e| self.err(format!("{p}/values: {e}")))?;
                    let mask = g
                        .dataset("mask")
                        .and_then(|d| d.read_u8())
                        .map_err(|e| self.err(format!("{p}/mask: {e}")))?;
                    let vals = values
                        .iter()
                        .zip(&mask)
                        .map(|(&v, &m)| (m == 0).then_some(v));
                    Ok(Some(if kind == "nullable-boolean" {
                        ColumnData::Text(
                            vals.map(|v| {
                                v.map(|b| if b != 0 { "True" } else { "False" }.to_string())
                            })
                            .collect(),
                        )
                    } else {
                        ColumnData::Int(vals.collect())
                    }))
                }
                _ => Ok(None),
            };
        }
        let ds = match self.file.dataset(&p) {
            Ok(d) => d,
            Err(_) => return Ok(None),
        };
        let shape = ds.shape().map_err(|e| self.err(format!("{p}: {e}")))?;
        if shape.len() != 1 || shape[0] as usize != n {
            return Ok(None);
        }
        // anndata 0.7: codes with their categories in `<frame>/__categories/<name>`.
        let cat_path = format!("{frame}/__categories/{name}");
        if let Ok(cats) = self.file.dataset(&cat_path) {
            let codes = ds.read_i64().map_err(|e| self.err(format!("{p}: {e}")))?;
            let cats = read_any_text(&cats).map_err(|e| self.err(format!("{cat_path}: {e}")))?;
            return Ok(Some(decode_categorical(self, &p, &codes, &cats)?));
        }
        let dt = ds.datatype().map_err(|e| self.err(format!("{p}: {e}")))?;
        Ok(Some(match dt {
            Datatype::FloatingPoint { size: 4, .. } => {
                let v = ds.read_f32().map_err(|e| self.err(format!("{p}: {e}")))?;
                ColumnData::Float(
                    v.into_iter()
                        .map(|x| x.is_finite().then(|| shortest_f64(x)))
                        .collect(),
                )
            }
            Datatype::FloatingPoint { .. } => {
                let v = ds.read_f64().map_err(|e| self.err(format!("{p}: {e}")))?;
                ColumnData::Float(v.into_iter().map(|x| x.is_finite().then_some(x)).collect())
            }
            Datatype::FixedPoint { .. } => {
                let v = ds.read_i64().map_err(|e| self.err(format!("{p}: {e}")))?;
                ColumnData::Int(v.into_iter().map(Some).collect())
            }
            Datatype::Enumeration { .. } => {
                let v = ds.read_i64().map_err(|e| self.err(format!("{p}: {e}")))?;
                ColumnData::Text(
                    v.into_iter()
                        .map(|b| Some(if b != 0 { "True" } else { "False" }.to_string()))
                        .collect(),
                )
            }
            _ => {
                let v = ds
                    .read_string()
                    .map_err(|e| self.err(format!("{p}: {e}")))?;
                ColumnData::Text(
                    v.into_iter()
                        .map(|s| (!s.is_empty()).then_some(s))
                        .collect(),
                )
            }
        }))
    }

    fn read_legacy_frame(&self, p: &str, ds: &hdf5_pure::Dataset) -> Result<(Vec<String>, Table)> {
        let dt = ds.datatype().map_err(|e| self.err(format!("{p}: {e}")))?;
        let Datatype::Compound { size, members } = dt else {
            return Err(self.err(format!("{p} is neither a group nor a compound dataset")));
        };
        let raw = ds.read_raw().map_err(|e| self.err(format!("{p}: {e}")))?;
        let size = size as usize;
        if size == 0 || raw.len() % size != 0 {
            return Err(self.err(format!("{p}: record size does not divide the data")));
        }
        let n = raw.len() / size;
        let mut index: Option<Vec<String>> = None;
        let mut table = Table::empty(n);
        for m in &members {
            let off = m.byte_offset as usize;
            let field = |i: usize, w: usize| &raw[i * size + off..i * size + off + w];
            let data = match &m.datatype {
                Datatype::String { size: w, .. } => {
                    let w = *w as usize;
                    let v: Vec<String> = (0..n)
                        .map(|i| {
                            String::from_utf8_lossy(field(i, w))
                                .trim_end_matches(['\0', ' '])
                                .to_string()
                        })
                        .collect();
                    if m.name == "index" {
                        index = Some(v);
                        continue;
                    }
                    ColumnData::Text(
                        v.into_iter()
                            .map(|s| (!s.is_empty()).then_some(s))
                            .collect(),
                    )
                }
                Datatype::FixedPoint {
                    size: w,
                    byte_order: DatatypeByteOrder::LittleEndian,
                    layout,
                } => {
                    let w = *w as usize;
                    let codes: Vec<i64> = (0..n)
                        .map(|i| {
                            let b = field(i, w);
                            let mut buf = [0u8; 8];
                            buf[..w].copy_from_slice(b);
                            let u = u64::from_le_bytes(buf);
                            if layout.signed && w < 8 && (b[w - 1] & 0x80) != 0 {
                                (u | (!0u64 << (8 * w))) as i64
                            } else {
                                u as i64
                            }
                        })
                        .collect();
                    let cat_path = format!("uns/{}_categories", m.name);
                    match self.file.dataset(&cat_path) {
                        Ok(cats) => {
                            let cats = read_any_text(&cats)
                                .map_err(|e| self.err(format!("{cat_path}: {e}")))?;
                            decode_categorical(self, &format!("{p}.{}", m.name), &codes, &cats)?
                        }
                        Err(_) => ColumnData::Int(codes.into_iter().map(Some).collect()),
                    }
                }
                Datatype::FloatingPoint {
                    size: w,
                    byte_order: DatatypeByteOrder::LittleEndian,
                    ..
                } => {
                    let v: Vec<Option<f64>> = (0..n)
                        .map(|i| {
                            let x = match *w {
                                // Widen float32 through its shortest decimal, so 0.0048417132
                                // stays 0.0048417132 rather than 0.004841713234782219.
                                4 => shortest_f64(f32::from_le_bytes(
                                    field(i, 4).try_into().unwrap_or([0; 4]),
                                )),
                                _ => f64::from_le_bytes(field(i, 8).try_into().unwrap_or([0; 8])),
                            };
                            x.is_finite().then_some(x)
                        })
                        .collect();
                    ColumnData::Float(v)
                }
                Datatype::Enumeration { size: w, .. } => {
                    let w = *w as usize;
                    ColumnData::Text(
                        (0..n)
                            .map(|i| {
                                Some(
                                    if field(i, w).iter().any(|&b| b != 0) {
                                        "True"
                                    } else {
                                        "False"
                                    }
                                    .to_string(),
                                )
                            })
                            .collect(),
                    )
                }
                _ => continue, // multi-dimensional members (obsm-like) are not obs columns
            };
            table
                .push(Column {
                    name: m.name.clone(),
                    data,
                })
                .map_err(|e| e.in_file(self.path))?;
        }
        let index = index.ok_or_else(|| self.err(format!("{p} has no 'index' field")))?;
        Ok((index, table))
    }
}

fn read_any_text(ds: &hdf5_pure::Dataset) -> std::result::Result<Vec<String>, hdf5_pure::Error> {
    match ds.read_string() {
        Ok(v) => Ok(v),
        Err(e) => match ds.read_i64() {
            Ok(v) => Ok(v.into_iter().map(|x| x.to_string()).collect()),
            Err(_) => Err(e),
        },
    }
}

fn decode_categorical(h: &H5ad<'_>, p: &str, codes: &[i64], cats: &[String]) -> Result<ColumnData> {
    let mut out = Vec::with_capacity(codes.len());
    for &c in codes {
        if c < 0 {
            out.push(None);
        } else if (c as usize) < cats.len() {
            out.push(Some(cats[c as usize].clone()));
        } else {
            return Err(h.err(format!(
                "{p}: category code {c} but only {} categories",
                cats.len()
            )));
        }
    }
    Ok(ColumnData::Text(out))
}

fn shortest_f64(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(x as f64)
}

fn check_finite(h: &H5ad<'_>, p: &str, v: &[f32]) -> Result<()> {
    match v.iter().position(|x| !x.is_finite()) {
        Some(i) => Err(h.err(format!("{p}: value {} at position {i} is not finite", v[i]))),
        None => Ok(()),
    }
}

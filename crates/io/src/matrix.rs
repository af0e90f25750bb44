//! The sparse matrix of the data model: compressed sparse rows, `f32` values, rows = cells.

use crate::error::{IoError, Result};

/// A sparse matrix in compressed-sparse-row form, `[n_rows, n_cols]`, with `f32` values.
///
/// Invariants (checked by [`CsrMatrix::new`], kept by every method):
/// - `indptr.len() == n_rows + 1`, `indptr[0] == 0`, non-decreasing, `indptr[n_rows] == nnz`;
/// - within a row, column indices are strictly increasing (sorted, no duplicates) and `< n_cols`;
/// - every stored value is finite. Explicit zeros are allowed but importers drop them.
#[derive(Debug, Clone, PartialEq)]
pub struct CsrMatrix {
    n_rows: usize,
    n_cols: usize,
    indptr: Vec<usize>,
    indices: Vec<u32>,
    data: Vec<f32>,
}

impl CsrMatrix {
    /// Builds a matrix from raw CSR arrays, checking every invariant.
    pub fn new(
        n_rows: usize,
        n_cols: usize,
        indptr: Vec<usize>,
        indices: Vec<u32>,
        data: Vec<f32>,
    ) -> Result<Self> {
        let m = CsrMatrix {
            n_rows,
            n_cols,
            indptr,
            indices,
            data,
        };
        m.validate()?;
        Ok(m)
    }

    /// An all-zero matrix.
    pub fn zeros(n_rows: usize, n_cols: usize) -> Self {
        CsrMatrix {
            n_rows,
            n_cols,
            indptr: vec![0; n_rows + 1],
            indices: Vec::new(),
            data: Vec::new(),
        }
    }

    fn validate(&self) -> Result<()> {
        let what = "sparse matrix";
        if self.n_cols > u32::MAX as usize {
            return Err(IoError::invalid(what, "more than 2^32 columns"));
        }
        if self.indptr.len() != self.n_rows + 1 {
            return Err(IoError::invalid(
                what,
                format!(
                    "indptr has {} entries, expected n_rows + 1 = {}",
                    self.indptr.len(),
                    self.n_rows + 1
                ),
            ));
        }
        if self.indices.len() != self.data.len() {
            return Err(IoError::invalid(
                what,
                format!(
                    "{} column indices but {} values",
                    self.indices.len(),
                    self.data.len()
                ),
            ));
        }
        if self.indptr[0] != 0 || self.indptr[self.n_rows] != self.data.len() {
            return Err(IoError::invalid(
                what,
                "indptr must start at 0 and end at the number of stored values",
            ));
        }
        for row in 0..self.n_rows {
            let (start, end) = (self.indptr[row], self.indptr[row + 1]);
            if end < start {
                return Err(IoError::invalid(
                    what,
                    format!("indptr decreases at row {row}"),
                ));
            }
            let mut previous: Option<u32> = None;
            for k in start..end {
                let col = self.indices[k];
                if col as usize >= self.n_cols {
                    return Err(IoError::invalid(
                        what,
                        format!(
                            "row {row}: column index {col} out of range (n_cols = {})",
                            self.n_cols
                        ),
                    ));
                }
                if previous.is_some_and(|p| p >= col) {
                    return Err(IoError::invalid(
                        what,
                        format!(
                            "row {row}: column indices not strictly increasing at column {col}"
                        ),
                    ));
                }
                previous = Some(col);
                if !self.data[k].is_finite() {
                    return Err(IoError::invalid(
                        what,
                        format!(
                            "row {row}, column {col}: value {} is not finite",
                            self.data[k]
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Builds a matrix from coordinate triplets (any order). Duplicate coordinates are an
    /// error (Matrix Market files from 10x and scanpy never contain them, and summing them
    /// silently would hide a broken file). Zero values are dropped.
    pub fn from_triplets(
        n_rows: usize,
        n_cols: usize,
        rows: &[u32],
        cols: &[u32],
        values: &[f32],
    ) -> Result<Self> {
        let what = "coordinate matrix";
        if rows.len() != cols.len() || rows.len() != values.len() {
            return Err(IoError::invalid(what, "triplet arrays differ in length"));
        }
        // Counting sort by row: O(nnz + n_rows), then sort each row by column.
        let mut counts = vec![0usize; n_rows + 1];
        for &r in rows {
            if r as usize >= n_rows {
                return Err(IoError::invalid(
                    what,
                    format!("row index {r} out of range (n_rows = {n_rows})"),
                ));
            }
            counts[r as usize + 1] += 1;
        }
        for i in 0..n_rows {
            counts[i + 1] += counts[i];
        }
        let mut next = counts.clone();
        let mut indices = vec![0u32; rows.len()];
        let mut data = vec![0f32; rows.len()];
        for k in 0..rows.len() {
            let r = rows[k] as usize;
            if cols[k] as usize >= n_cols {
                return Err(IoError::invalid(
                    what,
                    format!("column index {} out of range (n_cols = {n_cols})", cols[k]),
                ));
            }
            indices[next[r]] = cols[k];
            data[next[r]] = values[k];
            next[r] += 1;
        }
        let mut out_indptr = Vec::with_capacity(n_rows + 1);
        out_indptr.push(0);
        let mut out_indices = Vec::with_capacity(indices.len());
        let mut out_data = Vec::with_capacity(data.len());
        let mut pairs: Vec<(u32, f32)> = Vec::new();
        for r in 0..n_rows {
            pairs.clear();
            pairs.extend((counts[r]..counts[r + 1]).map(|k| (indices[k], data[k])));
            pairs.sort_unstable_by_key(|p| p.0);
            for w in pairs.windows(2) {
                if w[0].0 == w[1].0 {
                    return Err(IoError::invalid(
                        what,
                        format!(
                            "duplicate entry at row {}, column {} (1-based)",
                            r + 1,
                            w[0].0 + 1
                        ),
                    ));
                }
            }
            for &(c, v) in &pairs {
                if v != 0.0 {
                    out_indices.push(c);
                    out_data.push(v);
                }
            }
            out_indptr.push(out_indices.len());
        }
        CsrMatrix::new(n_rows, n_cols, out_indptr, out_indices, out_data)
    }

    /// Builds a matrix from a dense row-major slice `[n_rows, n_cols]`, dropping zeros.
    pub fn from_dense(n_rows: usize, n_cols: usize, dense: &[f32]) -> Result<Self> {
        if dense.len() != n_rows * n_cols {
            return Err(IoError::invalid(
                "dense matrix",
                format!("{} values for a {n_rows} x {n_cols} matrix", dense.len()),
            ));
        }
        let mut indptr = Vec::with_capacity(n_rows + 1);
        indptr.push(0);
        let mut indices = Vec::new();
        let mut data = Vec::new();
        for row in dense.chunks_exact(n_cols.max(1)).take(n_rows) {
            for (c, &v) in row.iter().enumerate() {
                if v != 0.0 {
                    indices.push(c as u32);
                    data.push(v);
                }
            }
            indptr.push(indices.len());
        }
        if n_cols == 0 {
            indptr = vec![0; n_rows + 1];
        }
        CsrMatrix::new(n_rows, n_cols, indptr, indices, data)
    }

    /// Number of rows (cells).
    pub fn n_rows(&self) -> usize {
        self.n_rows
    }
    /// Number of columns (genes).
    pub fn n_cols(&self) -> usize {
        self.n_cols
    }
    /// Number of stored (non-zero) values.
    pub fn nnz(&self) -> usize {
        self.data.len()
    }
    /// Row pointer array, length `n_rows + 1`.
    pub fn indptr(&self) -> &[usize] {
        &self.indptr
    }
    /// Column indices of the stored values.
    pub fn indices(&self) -> &[u32] {
        &self.indices
    }
    /// The stored values.
    pub fn data(&self) -> &[f32] {
        &self.data
    }
    /// Mutable access to the stored values (the sparsity pattern stays fixed).
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// The stored column indices and values of one row.
    pub fn row(&self, row: usize) -> (&[u32], &[f32]) {
        let (s, e) = (self.indptr[row], self.indptr[row + 1]);
        (&self.indices[s..e], &self.data[s..e])
    }

    /// Sum of all stored values, accumulated in `f64`.
    pub fn sum(&self) -> f64 {
        self.data.iter().map(|&v| v as f64).sum()
    }

    /// Writes rows `rows` densely into `out` (row-major `[rows.len(), n_cols]`), zero-filled.
    pub fn densify_rows_into(&self, rows: &[usize], out: &mut [f32]) {
        debug_assert_eq!(out.len(), rows.len() * self.n_cols);
        out.fill(0.0);
        for (i, &r) in rows.iter().enumerate() {
            let dst = &mut out[i * self.n_cols..(i + 1) * self.n_cols];
            let (idx, val) = self.row(r);
            for (&c, &v) in idx.iter().zip(val) {
                dst[c as usize] = v;
            }
        }
    }

    /// The whole matrix as a dense row-major vector `[n_rows, n_cols]`.
    pub fn to_dense(&self) -> Vec<f32> {
        let rows: Vec<usize> = (0..self.n_rows).collect();
        let mut out = vec![0f32; self.n_rows * self.n_cols];
        self.densify_rows_into(&rows, &mut out);
        out
    }

    /// A new matrix holding the given rows, in the given order (rows may repeat).
    pub fn select_rows(&self, rows: &[usize]) -> CsrMatrix {
        let mut indptr = Vec::with_capacity(rows.len() + 1);
        indptr.push(0);
        let nnz: usize = rows
            .iter()
            .map(|&r| self.indptr[r + 1] - self.indptr[r])
            .sum();
        let mut indices = Vec::with_capacity(nnz);
        let mut data = Vec::with_capacity(nnz);
        for &r in rows {
            let (idx, val) = self.row(r);
            indices.extend_from_slice(idx);
            data.extend_from_slice(val);
            indptr.push(indices.len());
        }
        CsrMatrix {
            n_rows: rows.len(),
            n_cols: self.n_cols,
            indptr,
            indices,
            data,
        }
    }

    /// A new matrix whose column `j` is column `columns[j]` of this one (`None` = all zeros),
    /// e.g. to align a query to a trained gene order.
    pub fn select_columns(&self, columns: &[Option<usize>]) -> CsrMatrix {
        let mut map = vec![u32::MAX; self.n_cols];
        for (j, c) in columns.iter().enumerate() {
            if let Some(c) = c {
                map[*c] = j as u32;
            }
        }
        // Kept columns in increasing source order (an HVG selection) stay sorted: no per-row sort.
        let kept: Vec<usize> = columns.iter().flatten().copied().collect();
        let monotonic = kept.windows(2).all(|w| w[0] < w[1]);
        let mut indptr = Vec::with_capacity(self.n_rows + 1);
        indptr.push(0);
        // Sized once: growing two vectors of up to nnz values by doubling copied (and first-
        // touched) them several times at a million cells.
        let mut indices = Vec::with_capacity(self.nnz());
        let mut data = Vec::with_capacity(self.nnz());
        let mut pairs: Vec<(u32, f32)> = Vec::new();
        for r in 0..self.n_rows {
            let (idx, val) = self.row(r);
            if monotonic {
                for (&c, &v) in idx.iter().zip(val) {
                    let j = map[c as usize];
                    if j != u32::MAX {
                        indices.push(j);
                        data.push(v);
                    }
                }
            } else {
                pairs.clear();
                for (&c, &v) in idx.iter().zip(val) {
                    let j = map[c as usize];
                    if j != u32::MAX {
                        pairs.push((j, v));
                    }
                }
                pairs.sort_unstable_by_key(|p| p.0);
                for &(j, v) in &pairs {
                    indices.push(j);
                    data.push(v);
                }
            }
            indptr.push(indices.len());
        }
        CsrMatrix {
            n_rows: self.n_rows,
            n_cols: columns.len(),
            indptr,
            indices,
            data,
        }
    }

    /// The transpose, also in CSR form (i.e. this matrix in CSC form).
    pub fn transpose(&self) -> CsrMatrix {
        let mut counts = vec![0usize; self.n_cols + 1];
        for &c in &self.indices {
            counts[c as usize + 1] += 1;
        }
        for i in 0..self.n_cols {
            counts[i + 1] += counts[i];
        }
        let mut next = counts.clone();
        let mut indices = vec![0u32; self.nnz()];
        let mut data = vec![0f32; self.nnz()];
        for r in 0..self.n_rows {
            let (idx, val) = self.row(r);
            for (&c, &v) in idx.iter().zip(val) {
                let k = next[c as usize];
                indices[k] = r as u32;
                data[k] = v;
                next[c as usize] += 1;
            }
        }
        CsrMatrix {
            n_rows: self.n_cols,
            n_cols: self.n_rows,
            indptr: counts,
            indices,
            data,
        }
    }

    /// Stacks matrices with the same number of columns on top of each other.
    pub fn vstack(parts: &[CsrMatrix]) -> Result<CsrMatrix> {
        let n_cols = parts.first().map_or(0, |p| p.n_cols);
        // Sized once: growing by doubling holds up to three copies of the values at the peak.
        let mut out = CsrMatrix::with_capacity(
            n_cols,
            parts.iter().map(|p| p.n_rows).sum(),
            parts.iter().map(CsrMatrix::nnz).sum(),
        );
        for p in parts {
            out.append_rows(p)?;
        }
        Ok(out)
    }

    /// An empty matrix (0 rows, `n_cols` columns) with room for `rows` rows and `nnz` values,
    /// to be filled by [`CsrMatrix::append_rows`].
    pub fn with_capacity(n_cols: usize, rows: usize, nnz: usize) -> CsrMatrix {
        let mut indptr = Vec::with_capacity(rows + 1);
        indptr.push(0);
        CsrMatrix {
            n_rows: 0,
            n_cols,
            indptr,
            indices: Vec::with_capacity(nnz),
            data: Vec::with_capacity(nnz),
        }
    }

    /// Appends the rows of `other` (same column count) below this matrix's.
    pub fn append_rows(&mut self, other: &CsrMatrix) -> Result<()> {
        if other.n_cols != self.n_cols {
            return Err(IoError::invalid(
                "vstack",
                "matrices differ in their number of columns",
            ));
        }
        let base = self.indices.len();
        self.indices.extend_from_slice(&other.indices);
        self.data.extend_from_slice(&other.data);
        self.indptr
            .extend(other.indptr[1..].iter().map(|&x| x + base));
        self.n_rows += other.n_rows;
        Ok(())
    }

    /// Keeps only the columns `columns` (strictly increasing, each `< n_cols`), renumbered
    /// `0..columns.len()`, compacting the arrays in place: the same result as
    /// [`CsrMatrix::select_columns`] without a second copy of the values (a gene selection on a
    /// million cells).
    pub fn retain_columns(&mut self, columns: &[usize]) -> Result<()> {
        if columns.windows(2).any(|w| w[0] >= w[1])
            || columns.last().is_some_and(|&c| c >= self.n_cols)
        {
            return Err(IoError::invalid(
                "column selection",
                format!(
                    "in-place selection needs strictly increasing columns below {}",
                    self.n_cols
                ),
            ));
        }
        let mut map = vec![u32::MAX; self.n_cols];
        for (j, &c) in columns.iter().enumerate() {
            map[c] = j as u32;
        }
        // The write position never passes the read position, so one pass compacts in place.
        let mut write = 0;
        for r in 0..self.n_rows {
            let (start, end) = (self.indptr[r], self.indptr[r + 1]);
            self.indptr[r] = write;
            for k in start..end {
                let j = map[self.indices[k] as usize];
                if j != u32::MAX {
                    self.indices[write] = j;
                    self.data[write] = self.data[k];
                    write += 1;
                }
            }
        }
        self.indptr[self.n_rows] = write;
        self.indices.truncate(write);
        self.data.truncate(write);
        self.indices.shrink_to_fit();
        self.data.shrink_to_fit();
        self.n_cols = columns.len();
        Ok(())
    }

    /// Number of stored values per row.
    pub fn row_nnz(&self) -> Vec<usize> {
        self.indptr.windows(2).map(|w| w[1] - w[0]).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_place_column_selection_equals_the_copying_one() {
        let m = CsrMatrix::from_dense(
            3,
            5,
            &[
                1.0, 0.0, 2.0, 0.0, 3.0, //
                0.0, 0.0, 0.0, 0.0, 0.0, //
                4.0, 5.0, 0.0, 6.0, 7.0,
            ],
        )
        .unwrap();
        let keep = [1usize, 2, 4];
        let expected = m.select_columns(&keep.iter().map(|&c| Some(c)).collect::<Vec<_>>());
        let mut in_place = m.clone();
        in_place.retain_columns(&keep).unwrap();
        assert_eq!(in_place, expected);
        assert_eq!(
            in_place.to_dense(),
            vec![0.0, 2.0, 3.0, 0.0, 0.0, 0.0, 5.0, 0.0, 7.0]
        );
        // Unordered or out-of-range selections are refused, the matrix untouched.
        let mut bad = m.clone();
        assert!(bad.retain_columns(&[2, 1]).is_err());
        assert!(bad.retain_columns(&[5]).is_err());
        assert_eq!(bad, m);
        // Stacking is appending.
        let stacked = CsrMatrix::vstack(&[m.clone(), expected.clone()]);
        assert!(stacked.is_err(), "different column counts");
        let stacked = CsrMatrix::vstack(&[m.clone(), m.clone()]).unwrap();
        assert_eq!(stacked.n_rows(), 6);
        assert_eq!(stacked.row(3), m.row(0));
    }

    #[test]
    fn triplets_are_sorted_and_zeros_dropped() {
        let m = CsrMatrix::from_triplets(2, 3, &[1, 0, 0, 1], &[2, 2, 0, 0], &[5.0, 2.0, 1.0, 0.0])
            .unwrap();
        assert_eq!(m.indptr(), &[0, 2, 3]);
        assert_eq!(m.indices(), &[0, 2, 2]);
        assert_eq!(m.data(), &[1.0, 2.0, 5.0]);
        assert_eq!(m.to_dense(), vec![1.0, 0.0, 2.0, 0.0, 0.0, 5.0]);
    }

    #[test]
    fn duplicate_triplets_are_rejected_with_coordinates() {
        let err = CsrMatrix::from_triplets(2, 2, &[0, 0], &[1, 1], &[1.0, 2.0]).unwrap_err();
        assert!(
            err.to_string()
                .contains("duplicate entry at row 1, column 2"),
            "{err}"
        );
    }

    #[test]
    fn non_finite_values_are_rejected() {
        let err = CsrMatrix::new(1, 2, vec![0, 1], vec![0], vec![f32::NAN]).unwrap_err();
        assert!(err.to_string().contains("not finite"), "{err}");
    }

    #[test]
    fn transpose_twice_is_identity_and_columns_select() {
        let dense = [0.0, 1.0, 2.0, 3.0, 0.0, 0.0];
        let m = CsrMatrix::from_dense(2, 3, &dense).unwrap();
        assert_eq!(m.transpose().transpose(), m);
        assert_eq!(m.transpose().to_dense(), vec![0.0, 3.0, 1.0, 0.0, 2.0, 0.0]);
        let s = m.select_columns(&[Some(2), None, Some(0)]);
        assert_eq!(s.to_dense(), vec![2.0, 0.0, 0.0, 0.0, 0.0, 3.0]);
        let r = m.select_rows(&[1, 1, 0]);
        assert_eq!(
            r.to_dense(),
            vec![3.0, 0.0, 0.0, 3.0, 0.0, 0.0, 0.0, 1.0, 2.0]
        );
    }
}

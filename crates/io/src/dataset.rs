//! The expression dataset: a cells x genes matrix with its cell ids, gene ids and annotations.

use std::collections::{HashMap, HashSet};

use crate::error::{IoError, Result};
use crate::matrix::CsrMatrix;
use crate::table::{Column, ColumnData, Table};

/// A cells x genes expression matrix with everything needed to interpret it.
///
/// Invariants (checked by [`ExpressionDataset::new`]):
/// - `matrix` is `[cell_ids.len(), gene_ids.len()]`;
/// - cell ids are unique and non-empty; gene ids are unique and non-empty;
/// - `obs` has one row per cell (same order), `var` one row per gene (same order);
/// - every stored value is finite (guaranteed by [`CsrMatrix`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ExpressionDataset {
    matrix: CsrMatrix,
    cell_ids: Vec<String>,
    gene_ids: Vec<String>,
    obs: Table,
    var: Table,
}

impl ExpressionDataset {
    /// A dataset of dense per-cell features (PCA scores, an embedding, codes): `values` is
    /// row-major `[cells, features]`; `obs` annotates the cells, the features have none.
    pub fn from_dense(
        values: &[f32],
        cell_ids: Vec<String>,
        feature_names: Vec<String>,
        obs: Table,
    ) -> Result<Self> {
        let n_features = feature_names.len();
        let matrix = CsrMatrix::from_dense(cell_ids.len(), n_features, values)?;
        ExpressionDataset::new(
            matrix,
            cell_ids,
            feature_names,
            obs,
            Table::empty(n_features),
        )
    }

    /// Builds a dataset, checking every invariant.
    pub fn new(
        matrix: CsrMatrix,
        cell_ids: Vec<String>,
        gene_ids: Vec<String>,
        obs: Table,
        var: Table,
    ) -> Result<Self> {
        if matrix.n_rows() != cell_ids.len() {
            return Err(IoError::invalid(
                "dataset",
                format!(
                    "the matrix has {} rows (cells) but there are {} cell ids",
                    matrix.n_rows(),
                    cell_ids.len()
                ),
            ));
        }
        if matrix.n_cols() != gene_ids.len() {
            return Err(IoError::invalid(
                "dataset",
                format!(
                    "the matrix has {} columns (genes) but there are {} gene ids",
                    matrix.n_cols(),
                    gene_ids.len()
                ),
            ));
        }
        check_unique_ids("cell", &cell_ids)?;
        check_unique_ids("gene", &gene_ids)?;
        if obs.n_rows() != cell_ids.len() {
            return Err(IoError::invalid(
                "obs",
                format!(
                    "has {} rows but there are {} cells",
                    obs.n_rows(),
                    cell_ids.len()
                ),
            ));
        }
        if var.n_rows() != gene_ids.len() {
            return Err(IoError::invalid(
                "var",
                format!(
                    "has {} rows but there are {} genes",
                    var.n_rows(),
                    gene_ids.len()
                ),
            ));
        }
        Ok(ExpressionDataset {
            matrix,
            cell_ids,
            gene_ids,
            obs,
            var,
        })
    }

    /// The expression values, `[n_cells, n_genes]`.
    pub fn matrix(&self) -> &CsrMatrix {
        &self.matrix
    }
    /// Mutable access to the stored values (shape and ids stay fixed).
    pub fn values_mut(&mut self) -> &mut [f32] {
        self.matrix.data_mut()
    }
    /// Cell (row) identifiers.
    pub fn cell_ids(&self) -> &[String] {
        &self.cell_ids
    }
    /// Gene (column) identifiers.
    pub fn gene_ids(&self) -> &[String] {
        &self.gene_ids
    }
    /// Per-cell annotations (labels, batches, covariates).
    pub fn obs(&self) -> &Table {
        &self.obs
    }
    /// Per-gene annotations (e.g. `gene_ids` and `feature_types` from 10x).
    pub fn var(&self) -> &Table {
        &self.var
    }
    /// Number of cells.
    pub fn n_cells(&self) -> usize {
        self.cell_ids.len()
    }
    /// Number of genes.
    pub fn n_genes(&self) -> usize {
        self.gene_ids.len()
    }

    /// Splits the dataset into its parts.
    pub fn into_parts(self) -> (CsrMatrix, Vec<String>, Vec<String>, Table, Table) {
        (
            self.matrix,
            self.cell_ids,
            self.gene_ids,
            self.obs,
            self.var,
        )
    }

    /// The cells `rows`, in that order.
    pub fn select_cells(&self, rows: &[usize]) -> Result<ExpressionDataset> {
        let idx: Vec<Option<usize>> = rows.iter().map(|&r| Some(r)).collect();
        ExpressionDataset::new(
            self.matrix.select_rows(rows),
            rows.iter().map(|&r| self.cell_ids[r].clone()).collect(),
            self.gene_ids.clone(),
            self.obs.take(&idx),
            self.var.clone(),
        )
    }

    /// The genes `columns`, in that order.
    pub fn select_genes(&self, columns: &[usize]) -> Result<ExpressionDataset> {
        let idx: Vec<Option<usize>> = columns.iter().map(|&c| Some(c)).collect();
        ExpressionDataset::new(
            self.matrix.select_columns(&idx),
            self.cell_ids.clone(),
            columns.iter().map(|&c| self.gene_ids[c].clone()).collect(),
            self.obs.clone(),
            self.var.take(&idx),
        )
    }

    /// [`ExpressionDataset::select_genes`] in place, for strictly increasing `columns` (an HVG
    /// selection): the matrix is compacted without a second copy of its values.
    pub fn retain_genes(&mut self, columns: &[usize]) -> Result<()> {
        self.matrix.retain_columns(columns)?;
        let idx: Vec<Option<usize>> = columns.iter().map(|&c| Some(c)).collect();
        self.gene_ids = columns.iter().map(|&c| self.gene_ids[c].clone()).collect();
        self.var = self.var.take(&idx);
        Ok(())
    }

    /// Replaces `obs` (one row per cell, same order).
    pub fn with_obs(self, obs: Table) -> Result<ExpressionDataset> {
        ExpressionDataset::new(self.matrix, self.cell_ids, self.gene_ids, obs, self.var)
    }
}

fn check_unique_ids(kind: &str, ids: &[String]) -> Result<()> {
    let mut seen: HashSet<&str> = HashSet::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        if id.is_empty() {
            return Err(IoError::invalid(
                format!("{kind} ids"),
                format!("{kind} {} (1-based) has an empty id", i + 1),
            ));
        }
        if !seen.insert(id) {
            return Err(IoError::invalid(
                format!("{kind} ids"),
                format!(
                    "duplicate {kind} id '{id}' (first repeated at position {})",
                    i + 1
                ),
            ));
        }
    }
    Ok(())
}

/// How an annotation table read from a file is matched to the cells of a matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObsJoin {
    /// Every cell must have exactly one row and every row must name a cell.
    Exact,
    /// Every row must name a cell; cells without a row get missing values.
    Left,
}

/// Matches obs rows (with their own cell ids) to `cell_ids`, reordering them.
pub(crate) fn join_obs(
    cell_ids: &[String],
    obs_ids: &[String],
    obs: &Table,
    how: ObsJoin,
) -> Result<Table> {
    check_unique_ids("cell", cell_ids)?;
    let mut position: HashMap<&str, usize> = HashMap::with_capacity(obs_ids.len());
    for (i, id) in obs_ids.iter().enumerate() {
        if position.insert(id.as_str(), i).is_some() {
            return Err(IoError::invalid(
                "obs",
                format!("cell '{id}' appears in more than one row (row {})", i + 2),
            ));
        }
    }
    let cells: HashSet<&str> = cell_ids.iter().map(String::as_str).collect();
    if let Some((i, id)) = obs_ids
        .iter()
        .enumerate()
        .find(|(_, id)| !cells.contains(id.as_str()))
    {
        let unknown = obs_ids
            .iter()
            .filter(|id| !cells.contains(id.as_str()))
            .count();
        return Err(IoError::invalid(
            "obs",
            format!(
                "row {} names cell '{id}', which is not in the matrix ({unknown} obs rows name unknown cells)",
                i + 2
            ),
        ));
    }
    let rows: Vec<Option<usize>> = cell_ids
        .iter()
        .map(|id| position.get(id.as_str()).copied())
        .collect();
    if how == ObsJoin::Exact
        && let Some(missing) = cell_ids
            .iter()
            .find(|id| !position.contains_key(id.as_str()))
    {
        let n = rows.iter().filter(|r| r.is_none()).count();
        return Err(IoError::invalid(
            "obs",
            format!("has no row for cell '{missing}' ({n} cells have no obs row)"),
        ));
    }
    Ok(obs.take(&rows))
}

/// Builds a table from text columns, inferring each column's type.
pub(crate) fn table_from_text(
    n_rows: usize,
    names: Vec<String>,
    mut columns: Vec<Vec<Option<String>>>,
) -> Result<Table> {
    let mut t = Table::empty(n_rows);
    for (name, values) in names.into_iter().zip(columns.drain(..)) {
        t.push(Column {
            name,
            data: ColumnData::infer(values),
        })?;
    }
    Ok(t)
}

/// How query genes map onto a reference gene list (a trained model's genes).
#[derive(Debug, Clone, PartialEq)]
pub struct GeneAlignment {
    /// For each reference gene, its column in the query (`None`: missing, filled with 0).
    pub columns: Vec<Option<usize>>,
    /// Number of reference genes found in the query.
    pub n_found: usize,
    /// Reference genes absent from the query, in reference order.
    pub missing: Vec<String>,
}

impl GeneAlignment {
    /// Fraction of reference genes present in the query.
    pub fn overlap(&self) -> f64 {
        if self.columns.is_empty() {
            0.0
        } else {
            self.n_found as f64 / self.columns.len() as f64
        }
    }
}

/// Maps `query` gene ids onto `reference` (exact, case-sensitive match) and refuses when fewer
/// than `min_overlap` (a fraction in `[0, 1]`) of the reference genes are found.
pub fn align_genes(
    reference: &[String],
    query: &[String],
    min_overlap: f64,
) -> Result<GeneAlignment> {
    let position: HashMap<&str, usize> = query
        .iter()
        .enumerate()
        .map(|(i, g)| (g.as_str(), i))
        .collect();
    let columns: Vec<Option<usize>> = reference
        .iter()
        .map(|g| position.get(g.as_str()).copied())
        .collect();
    let missing: Vec<String> = reference
        .iter()
        .zip(&columns)
        .filter(|(_, c)| c.is_none())
        .map(|(g, _)| g.clone())
        .collect();
    let alignment = GeneAlignment {
        n_found: reference.len() - missing.len(),
        columns,
        missing,
    };
    if alignment.overlap() < min_overlap {
        let examples: Vec<&str> = alignment
            .missing
            .iter()
            .take(5)
            .map(String::as_str)
            .collect();
        return Err(IoError::invalid(
            "gene alignment",
            format!(
                "only {} of {} reference genes ({:.1}%) are in the query data, below the required {:.0}% (missing e.g. {}); check that both use the same kind of gene id (symbols vs Ensembl ids) and species",
                alignment.n_found,
                reference.len(),
                100.0 * alignment.overlap(),
                100.0 * min_overlap,
                examples.join(", ")
            ),
        ));
    }
    Ok(alignment)
}

impl ExpressionDataset {
    /// Reorders the genes to `reference`, filling missing genes with zeros; refuses below
    /// `min_overlap` (see [`align_genes`]). Gene annotations (`var`) are dropped.
    pub fn align_to_genes(
        &self,
        reference: &[String],
        min_overlap: f64,
    ) -> Result<(ExpressionDataset, GeneAlignment)> {
        let a = align_genes(reference, &self.gene_ids, min_overlap)?;
        let d = ExpressionDataset::new(
            self.matrix.select_columns(&a.columns),
            self.cell_ids.clone(),
            reference.to_vec(),
            self.obs.clone(),
            Table::empty(reference.len()),
        )?;
        Ok((d, a))
    }
}

//! 10x Genomics Cell Ranger matrix folders: `matrix.mtx[.gz]` (genes x barcodes),
//! `features.tsv[.gz]` (id, name, type) or `genes.tsv` (id, name), `barcodes.tsv[.gz]`.

use std::collections::HashMap;
use std::path::Path;

use crate::dataset::{ExpressionDataset, ObsJoin, join_obs};
use crate::error::{IoError, Result};
use crate::layout::{first_fields, read_annotation_csv};
use crate::mtx::{MtxOrientation, read_matrix_market};
use crate::table::{Column, ColumnData, Table};
use crate::text::{find_file, read_tsv_rows};

/// Which feature field becomes the gene identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TenxVarNames {
    /// Gene symbols (column 2), made unique as scanpy's `var_names_make_unique` does
    /// (`TBCE`, `TBCE-1`, ...). scanpy's default; needed for marker-gene names.
    #[default]
    GeneSymbols,
    /// Stable feature ids (column 1, e.g. Ensembl ids).
    GeneIds,
}

/// Options of [`read_10x_folder`].
#[derive(Debug, Clone, Default)]
pub struct TenxOptions {
    pub var_names: TenxVarNames,
    /// Keep every feature type, not only `Gene Expression` (scanpy's `gex_only=False`).
    pub all_feature_types: bool,
}

/// Reads a Cell Ranger (v2 or v3+) matrix folder, with an optional obs CSV joined by barcode
/// (every obs row must name a barcode of the matrix; barcodes without a row get missing values).
pub fn read_10x_folder(
    dir: &Path,
    obs_csv: Option<&Path>,
    options: &TenxOptions,
) -> Result<ExpressionDataset> {
    if !dir.is_dir() {
        return Err(IoError::format(dir, "is not a folder"));
    }
    let matrix_path = find_file(dir, &["matrix.mtx.gz", "matrix.mtx"])
        .ok_or_else(|| IoError::format(dir, "has no matrix.mtx[.gz] (not a 10x matrix folder)"))?;
    let features_path = find_file(
        dir,
        &[
            "features.tsv.gz",
            "features.tsv",
            "genes.tsv.gz",
            "genes.tsv",
        ],
    )
    .ok_or_else(|| IoError::format(dir, "has no features.tsv[.gz] or genes.tsv"))?;
    let barcodes_path = find_file(dir, &["barcodes.tsv.gz", "barcodes.tsv"])
        .ok_or_else(|| IoError::format(dir, "has no barcodes.tsv[.gz]"))?;

    let features = read_tsv_rows(&features_path)?;
    for (i, f) in features.iter().enumerate() {
        if f.len() < 2 {
            return Err(IoError::parse(
                &features_path,
                i as u64 + 1,
                "expected at least two tab-separated fields (feature id, gene symbol)",
            ));
        }
    }
    let barcodes = first_fields(&barcodes_path)?;
    let contents = read_matrix_market(&matrix_path, MtxOrientation::GenesByCells)?;
    let m = contents.matrix;
    if m.n_cols() != features.len() {
        return Err(IoError::format(
            &matrix_path,
            format!(
                "has {} rows (features) but {} lists {}",
                m.n_cols(),
                features_path.display(),
                features.len()
            ),
        ));
    }
    if m.n_rows() != barcodes.len() {
        return Err(IoError::format(
            &matrix_path,
            format!(
                "has {} columns (barcodes) but {} lists {}",
                m.n_rows(),
                barcodes_path.display(),
                barcodes.len()
            ),
        ));
    }
    let keep: Vec<usize> = (0..features.len())
        .filter(|&i| {
            options.all_feature_types || features[i].get(2).is_none_or(|t| t == "Gene Expression")
        })
        .collect();
    if keep.is_empty() {
        return Err(IoError::format(
            &features_path,
            "has no 'Gene Expression' features",
        ));
    }
    let ids: Vec<String> = keep.iter().map(|&i| features[i][0].clone()).collect();
    let symbols: Vec<String> = keep.iter().map(|&i| features[i][1].clone()).collect();
    let gene_names = match options.var_names {
        TenxVarNames::GeneIds => ids.clone(),
        TenxVarNames::GeneSymbols => make_unique(&symbols),
    };
    let mut var = Table::empty(keep.len());
    let other = match options.var_names {
        TenxVarNames::GeneIds => ("gene_symbols", symbols),
        TenxVarNames::GeneSymbols => ("gene_ids", ids),
    };
    var.push(Column {
        name: other.0.into(),
        data: ColumnData::Text(other.1.into_iter().map(Some).collect()),
    })?;
    if features[0].len() >= 3 {
        var.push(Column {
            name: "feature_types".into(),
            data: ColumnData::Text(keep.iter().map(|&i| features[i].get(2).cloned()).collect()),
        })?;
    }
    let cols: Vec<Option<usize>> = keep.iter().map(|&i| Some(i)).collect();
    let m = if keep.len() == features.len() {
        m
    } else {
        m.select_columns(&cols)
    };
    let obs = match obs_csv {
        Some(p) => {
            let a = read_annotation_csv(p)?;
            join_obs(&barcodes, &a.ids, &a.table, ObsJoin::Left).map_err(|e| e.in_file(p))?
        }
        None => Table::empty(barcodes.len()),
    };
    ExpressionDataset::new(m, barcodes, gene_names, obs, var).map_err(|e| e.in_file(dir))
}

/// anndata's `make_index_unique`: the second occurrence of `X` becomes `X-1`, the third `X-2`,
/// skipping suffixes that already exist.
pub fn make_unique(names: &[String]) -> Vec<String> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for n in names {
        *seen.entry(n.as_str()).or_insert(0) += 1;
    }
    let mut taken: std::collections::HashSet<String> = names.iter().cloned().collect();
    let mut counter: HashMap<&str, usize> = HashMap::new();
    let mut first_seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
    names
        .iter()
        .map(|n| {
            if seen[n.as_str()] == 1 || first_seen.insert(n.as_str()) {
                return n.clone();
            }
            let k = counter.entry(n.as_str()).or_insert(0);
            loop {
                *k += 1;
                let candidate = format!("{n}-{k}");
                if taken.insert(candidate.clone()) {
                    return candidate;
                }
            }
        })
        .collect()
}

/// Writes `dataset` as a Cell Ranger v3 matrix folder: `matrix.mtx.gz` (genes x barcodes,
/// integer field for counts), `features.tsv.gz` (id, name, `Gene Expression`) and
/// `barcodes.tsv.gz`. `feature_ids` gives column 1 (defaults to the gene ids). The folder is
/// written under a temporary name and renamed into place.
pub fn write_10x_folder(
    dir: &Path,
    dataset: &ExpressionDataset,
    feature_ids: Option<&[String]>,
    comment: &str,
) -> Result<()> {
    use crate::layout::write_lines;
    use crate::mtx::write_matrix_market;
    let ids = feature_ids.unwrap_or(dataset.gene_ids());
    if ids.len() != dataset.n_genes() {
        return Err(IoError::invalid("feature ids", "one id per gene is needed"));
    }
    let features: Vec<String> = ids
        .iter()
        .zip(dataset.gene_ids())
        .map(|(id, name)| format!("{id}\t{name}\tGene Expression"))
        .collect();
    crate::text::write_folder_atomic(dir, |t| {
        write_matrix_market(
            &t.join("matrix.mtx.gz"),
            &dataset.matrix().transpose(),
            comment,
        )?;
        write_lines(&t.join("features.tsv.gz"), &features)?;
        write_lines(&t.join("barcodes.tsv.gz"), dataset.cell_ids())
    })
}

#[cfg(test)]
mod tests {
    use super::make_unique;

    #[test]
    fn duplicates_get_numbered_suffixes_like_anndata() {
        let v: Vec<String> = ["A", "B", "A", "A", "A-1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(make_unique(&v), vec!["A", "B", "A-2", "A-3", "A-1"]);
    }
}

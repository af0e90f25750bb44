//! Per-class gene rankings from attributions, as a tidy table `(class, rank, gene, score)`.

use cellident_tensor::{DenseMatrix, Result, ensure_param};
use serde::{Deserialize, Serialize};

/// How genes are ordered within a class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ranking {
    /// By mean signed attribution, largest first: genes that push cells towards the class.
    Signed,
    /// By mean absolute attribution: genes that move the class logit either way.
    Absolute,
}

/// One row of a ranking table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneRank {
    pub class: String,
    /// 1-based.
    pub rank: usize,
    pub gene: String,
    /// Mean attribution over the class's cells (signed or absolute, per [`Ranking`]).
    pub score: f64,
}

/// For each class, the `top_n` genes by mean attribution over the cells whose explained class
/// (`groups[i]`) it is. `scores` is `[cells, genes]`; classes without cells are left out. Ties
/// keep gene order.
pub fn rank_genes(
    scores: &DenseMatrix,
    groups: &[u32],
    class_names: &[String],
    gene_names: &[String],
    top_n: usize,
    ranking: Ranking,
) -> Result<Vec<GeneRank>> {
    ensure_param(groups.len() == scores.n_rows, "groups", || {
        format!("{} groups for {} cells", groups.len(), scores.n_rows)
    })?;
    ensure_param(gene_names.len() == scores.n_cols, "gene_names", || {
        format!("{} names for {} genes", gene_names.len(), scores.n_cols)
    })?;
    ensure_param(
        groups.iter().all(|&g| (g as usize) < class_names.len()),
        "groups",
        || format!("a group is not below the {} class names", class_names.len()),
    )?;
    let g = scores.n_cols;
    let mut out = Vec::new();
    for (c, name) in class_names.iter().enumerate() {
        let mut sum = vec![0f64; g];
        let mut n = 0usize;
        for (i, &grp) in groups.iter().enumerate() {
            if grp as usize != c {
                continue;
            }
            n += 1;
            for (s, &v) in sum.iter_mut().zip(scores.row(i)) {
                *s += match ranking {
                    Ranking::Signed => v as f64,
                    Ranking::Absolute => v.abs() as f64,
                };
            }
        }
        if n == 0 {
            continue;
        }
        let mean: Vec<f64> = sum.iter().map(|s| s / n as f64).collect();
        let mut order: Vec<usize> = (0..g).collect();
        order.sort_by(|&a, &b| mean[b].total_cmp(&mean[a]).then(a.cmp(&b)));
        out.extend(
            order
                .into_iter()
                .take(top_n)
                .enumerate()
                .map(|(r, j)| GeneRank {
                    class: name.clone(),
                    rank: r + 1,
                    gene: gene_names[j].clone(),
                    score: mean[j],
                }),
        );
    }
    Ok(out)
}

/// The table as CSV text with a header (`class,rank,gene,score`), quoting fields as needed.
pub fn rankings_csv(rows: &[GeneRank]) -> String {
    use cellident_io::csv_field as field;
    let mut s = String::from("class,rank,gene,score\n");
    for r in rows {
        s.push_str(&format!(
            "{},{},{},{:.6e}\n",
            field(&r.class),
            r.rank,
            field(&r.gene),
            r.score
        ));
    }
    s
}

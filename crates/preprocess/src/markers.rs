//! Marker genes by the one-vs-rest Wilcoxon rank-sum test (scanpy
//! `tl.rank_genes_groups(method="wilcoxon")`, no tie correction): for each group, genes ranked by
//! the z-score of the rank sum of the group's cells among all cells.

use cellident_io::CsrMatrix;
use rayon::prelude::*;

use crate::{Result, ensure};

/// z-scores `[groups][genes]` of the one-vs-rest Wilcoxon rank-sum test, ranks averaged over
/// ties (as `scipy.stats.rankdata`), NaN (constant genes) reported as 0.
pub fn wilcoxon_scores(m: &CsrMatrix, groups: &[u32], n_groups: usize) -> Result<Vec<Vec<f64>>> {
    ensure(groups.len() == m.n_rows(), "groups", || {
        format!("{} group labels for {} cells", groups.len(), m.n_rows())
    })?;
    ensure(
        groups.iter().all(|&g| (g as usize) < n_groups),
        "groups",
        || format!("group labels must be < {n_groups}"),
    )?;
    let n = m.n_rows();
    let mut sizes = vec![0usize; n_groups];
    for &g in groups {
        sizes[g as usize] += 1;
    }
    // Column-wise access: the transpose holds each gene's non-zero cells.
    let t = m.transpose();
    let nf = n as f64;
    let per_gene: Vec<Vec<f64>> = (0..m.n_cols())
        .into_par_iter()
        .map(|j| {
            let (cells, values) = t.row(j);
            // Values of all cells: implicit zeros plus the stored ones. Sort the stored values;
            // the zero block (including stored zeros, negatives ordered around it) gets one
            // average rank.
            let mut entries: Vec<(f32, u32)> =
                values.iter().copied().zip(cells.iter().copied()).collect();
            entries.sort_by(|a, b| a.0.total_cmp(&b.0));
            let neg = entries.partition_point(|e| e.0 < 0.0);
            let zero_end = entries.partition_point(|e| e.0 <= 0.0);
            // Implicit zeros plus any explicitly stored zeros share one tie block.
            let n_zero = n - entries.len() + (zero_end - neg);
            // Ranks are 1-based; negatives come first, then the zero block, then positives.
            let mut rank_sum = vec![0f64; n_groups];
            let mut assign = |slice: &[(f32, u32)], first_rank: f64| {
                let mut i = 0;
                while i < slice.len() {
                    let mut k = i;
                    while k + 1 < slice.len() && slice[k + 1].0 == slice[i].0 {
                        k += 1;
                    }
                    let avg = first_rank + (i + k) as f64 / 2.0;
                    for e in &slice[i..=k] {
                        rank_sum[groups[e.1 as usize] as usize] += avg;
                    }
                    i = k + 1;
                }
            };
            assign(&entries[..neg], 1.0);
            let zero_rank = neg as f64 + (n_zero as f64 + 1.0) / 2.0;
            assign(&entries[zero_end..], (neg + n_zero) as f64 + 1.0);
            // Zero cells of each group: group size minus its stored non-zero entries.
            let mut stored = vec![0usize; n_groups];
            for e in entries.iter().filter(|e| e.0 != 0.0) {
                stored[groups[e.1 as usize] as usize] += 1;
            }
            for g in 0..n_groups {
                rank_sum[g] += (sizes[g] - stored[g]) as f64 * zero_rank;
            }
            (0..n_groups)
                .map(|g| {
                    let na = sizes[g] as f64;
                    let sd = (na * (nf - na) * (nf + 1.0) / 12.0).sqrt();
                    let z = (rank_sum[g] - na * (nf + 1.0) / 2.0) / sd;
                    if z.is_finite() { z } else { 0.0 }
                })
                .collect()
        })
        .collect();
    Ok((0..n_groups)
        .map(|g| per_gene.iter().map(|s| s[g]).collect())
        .collect())
}

/// The `n` highest-scoring gene indices of each group (ties: lower index first).
pub fn top_genes(scores: &[Vec<f64>], n: usize) -> Vec<Vec<usize>> {
    scores
        .iter()
        .map(|s| {
            let mut order: Vec<usize> = (0..s.len()).collect();
            order.sort_by(|&a, &b| s[b].total_cmp(&s[a]).then(a.cmp(&b)));
            order.truncate(n);
            order
        })
        .collect()
}

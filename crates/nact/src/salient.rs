//! Salient genes from attention (methods.md §1.4): per cell type, genes ranked by attention
//! summed over the correctly predicted cells of that type; the tf-idf-weighted ranking as the
//! reference code intends it; and the global ranking.

use cellident_io::CsrMatrix;
use serde::Serialize;

/// One row of a tidy gene ranking table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GeneScore {
    /// Cell type (or `all` for the global ranking).
    pub cell_type: String,
    /// 1-based rank.
    pub rank: usize,
    pub gene: String,
    pub score: f64,
}

/// Per-class attention sums `[classes][genes]` over cells whose prediction equals their true
/// label (`alpha` is row-major `[cells, genes]`), and the number of such cells per class.
pub fn attention_sums(
    alpha: &[f32],
    n_genes: usize,
    truth: &[u32],
    pred: &[u32],
    n_classes: usize,
) -> (Vec<Vec<f64>>, Vec<usize>) {
    sums_over_correct_cells(truth, pred, n_classes, n_genes, |i, sums| {
        for (s, &a) in sums.iter_mut().zip(&alpha[i * n_genes..(i + 1) * n_genes]) {
            *s += a as f64;
        }
    })
}

/// [`attention_sums`] over only the genes each cell expresses (`x[i, g] != 0`, `x` the
/// network's input `[cells, genes]` as CSR): the attention that reaches the gene scores
/// `gamma = alpha * x`. A softmax over all genes must put its mass somewhere, and the trained
/// network parks much of it on genes a cell does not express (on pbmc3k_seurat at one seed, 19
/// of the platelets' summed-attention top 25 are genes no platelet expresses: docs/nact.md),
/// where it multiplies zero and changes nothing the network computes downstream — an attention
/// sink, not salience.
pub fn attention_sums_expressed(
    alpha: &[f32],
    x: &CsrMatrix,
    truth: &[u32],
    pred: &[u32],
    n_classes: usize,
) -> (Vec<Vec<f64>>, Vec<usize>) {
    let n_genes = x.n_cols();
    sums_over_correct_cells(truth, pred, n_classes, n_genes, |i, sums| {
        let row = &alpha[i * n_genes..(i + 1) * n_genes];
        let (idx, val) = x.row(i);
        for (&j, &v) in idx.iter().zip(val) {
            if v != 0.0 {
                sums[j as usize] += row[j as usize] as f64;
            }
        }
    })
}

/// Per-class `[classes][genes]` sums of what `add(cell, class_sums)` adds for each cell whose
/// prediction equals its true label, and the number of such cells per class.
fn sums_over_correct_cells(
    truth: &[u32],
    pred: &[u32],
    n_classes: usize,
    n_genes: usize,
    mut add: impl FnMut(usize, &mut [f64]),
) -> (Vec<Vec<f64>>, Vec<usize>) {
    let mut sums = vec![vec![0f64; n_genes]; n_classes];
    let mut counts = vec![0usize; n_classes];
    for (i, (&t, &p)) in truth.iter().zip(pred).enumerate() {
        if t != p {
            continue;
        }
        counts[t as usize] += 1;
        add(i, &mut sums[t as usize]);
    }
    (sums, counts)
}

fn top_n(scores: &[f64], n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    order.truncate(n);
    order
}

/// Top `n` genes of each class by summed attention (what the reference code returns).
pub fn rank_by_attention(
    sums: &[Vec<f64>],
    genes: &[String],
    classes: &[String],
    n: usize,
) -> Vec<GeneScore> {
    let mut out = Vec::new();
    for (k, s) in sums.iter().enumerate() {
        for (r, j) in top_n(s, n).into_iter().enumerate() {
            out.push(GeneScore {
                cell_type: classes[k].clone(),
                rank: r + 1,
                gene: genes[j].clone(),
                score: s[j],
            });
        }
    }
    out
}

/// The tf-idf-weighted ranking as the reference code intends it (its returned ranking ignores
/// the weights: a bug, methods.md §1.4). Each class's top-`n` list is a document;
/// `tf(g,k) = 1/n` for listed genes, `idf(g) = ln(K / #lists containing g)`, corpus weight
/// `w(g) = 1 - sum_k tfidf(g,k) / ln K`; genes are re-ranked by `sum_k(g) * w(g)`. Genes
/// that are in every list get weight 1; class-specific genes are kept, common ones demoted
/// relative to the plain sum. With one class the weights are all 1.
pub fn rank_by_attention_tfidf(
    sums: &[Vec<f64>],
    genes: &[String],
    classes: &[String],
    n: usize,
) -> Vec<GeneScore> {
    let k = sums.len();
    let lists: Vec<Vec<usize>> = sums.iter().map(|s| top_n(s, n)).collect();
    let mut df = vec![0usize; genes.len()];
    for l in &lists {
        for &g in l {
            df[g] += 1;
        }
    }
    let ln_k = (k as f64).ln();
    let weight: Vec<f64> = (0..genes.len())
        .map(|g| {
            if df[g] == 0 || k < 2 {
                return 1.0;
            }
            let idf = (k as f64 / df[g] as f64).ln();
            let tfidf_sum = df[g] as f64 * (1.0 / n as f64) * idf;
            1.0 - tfidf_sum / ln_k
        })
        .collect();
    let weighted: Vec<Vec<f64>> = sums
        .iter()
        .map(|s| s.iter().zip(&weight).map(|(a, w)| a * w).collect())
        .collect();
    rank_by_attention(&weighted, genes, classes, n)
}

/// Genes ranked by attention summed over all correctly predicted cells (`cell_type = "all"`).
pub fn rank_global(sums: &[Vec<f64>], genes: &[String], n: usize) -> Vec<GeneScore> {
    let total: Vec<f64> = (0..genes.len())
        .map(|g| sums.iter().map(|s| s[g]).sum())
        .collect();
    rank_by_attention(&[total], genes, &["all".to_string()], n)
}

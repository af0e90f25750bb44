//! Supervised gene selection for small labelled sets: the one-way ANOVA F-statistic of each
//! gene across classes (scikit-learn's `f_classif`), and the top genes by it. Fit it on the
//! training cells only; selecting on all cells leaks the test labels into the features.

use cellident_io::CsrMatrix;

use crate::stream::GeneMoments;
use crate::{Result, ensure};

/// The ANOVA F-statistic of every gene, `[genes]`: between-class mean square over
/// within-class mean square, in f64, counting implicit zeros. Genes that are constant within
/// every class (zero within-class variance) get `f64::INFINITY` when the class means differ and
/// `0` when the gene is constant overall (scikit-learn returns `inf` and `nan`).
pub fn anova_f(x: &CsrMatrix, y: &[u32], n_classes: usize) -> Result<Vec<f64>> {
    cellident_tensor::ensure_labels(x.n_rows(), y, n_classes)?;
    let mut size = vec![0f64; n_classes];
    for &c in y {
        size[c as usize] += 1.0;
    }
    let k = size.iter().filter(|&&s| s > 0.0).count();
    let n = y.len();
    ensure(k >= 2 && n > k, "labels", || {
        format!(
            "the F-statistic needs at least 2 classes and more cells than classes ({k} classes, {n} cells)"
        )
    })?;
    let g = x.n_cols();
    // Per class and gene: sum and sum of squares.
    let mut sum = vec![0f64; n_classes * g];
    let mut sq = vec![0f64; n_classes * g];
    for i in 0..n {
        let c = y[i] as usize;
        let (idx, val) = x.row(i);
        for (&j, &v) in idx.iter().zip(val) {
            let v = v as f64;
            sum[c * g + j as usize] += v;
            sq[c * g + j as usize] += v * v;
        }
    }
    Ok((0..g)
        .map(|j| {
            let total: f64 = (0..n_classes).map(|c| sum[c * g + j]).sum();
            let grand = total / n as f64;
            let (mut between, mut within) = (0f64, 0f64);
            for c in 0..n_classes {
                if size[c] == 0.0 {
                    continue;
                }
                let m = sum[c * g + j] / size[c];
                between += size[c] * (m - grand) * (m - grand);
                within += (sq[c * g + j] - size[c] * m * m).max(0.0);
            }
            f_value(between, within, k, n, grand)
        })
        .collect())
}

/// Between-class over within-class mean square of one gene (`k` non-empty classes, `n`
/// cells, grand mean `grand`), with the zero-variance conventions of [`anova_f`].
fn f_value(between: f64, within: f64, k: usize, n: usize, grand: f64) -> f64 {
    let msb = between / (k - 1) as f64;
    let msw = within / (n - k) as f64;
    if msw > 1e-12 * (1.0 + grand * grand) {
        msb / msw
    } else if msb > 0.0 {
        f64::INFINITY
    } else {
        0.0
    }
}

/// [`anova_f`] from per-class moments (one [`GeneMoments`] per class, e.g. accumulated over a
/// streamed file): equal to it to rounding.
pub fn anova_f_from_moments(classes: &[GeneMoments]) -> Result<Vec<f64>> {
    let k = classes.iter().filter(|c| c.n_cells() > 0).count();
    let n: usize = classes.iter().map(GeneMoments::n_cells).sum();
    ensure(k >= 2 && n > k, "labels", || {
        format!(
            "the F-statistic needs at least 2 classes and more cells than classes ({k} classes, {n} cells)"
        )
    })?;
    let g = classes[0].means().len();
    Ok((0..g)
        .map(|j| {
            let grand = classes
                .iter()
                .map(|c| c.n_cells() as f64 * c.means()[j])
                .sum::<f64>()
                / n as f64;
            let (mut between, mut within) = (0f64, 0f64);
            for c in classes.iter().filter(|c| c.n_cells() > 0) {
                let d = c.means()[j] - grand;
                between += c.n_cells() as f64 * d * d;
                within += c.sums_of_squares()[j];
            }
            f_value(between, within, k, n, grand)
        })
        .collect())
}

/// The `k` genes of largest `f` (all when fewer), in decreasing order; ties keep the lower
/// gene index first.
pub fn top_by_f(f: &[f64], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..f.len()).collect();
    order.sort_by(|&a, &b| f[b].total_cmp(&f[a]).then(a.cmp(&b)));
    order.truncate(k);
    order
}

/// The `k` genes with the largest F-statistic (all genes when fewer), in decreasing order of
/// F; ties keep the lower gene index first.
pub fn top_genes_by_anova_f(
    x: &CsrMatrix,
    y: &[u32],
    n_classes: usize,
    k: usize,
) -> Result<Vec<usize>> {
    ensure(k > 0, "k", || "must be at least 1".into())?;
    Ok(top_by_f(&anova_f(x, y, n_classes)?, k))
}

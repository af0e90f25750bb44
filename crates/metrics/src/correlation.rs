//! Correlation between two profiles: Pearson and Spearman (Pearson of average ranks, as
//! `scipy.stats.spearmanr`). Used to score how well a reconstruction reproduces a profile.

use crate::{MetricError, Result};

/// Average ranks (1-based; ties share the mean of their positions), as `scipy.stats.rankdata`.
pub fn average_ranks(values: &[f32]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0f64; values.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i + 1;
        while j < order.len() && values[order[j]] == values[order[i]] {
            j += 1;
        }
        // Positions i..j (0-based) share the rank (i + 1 + j) / 2.
        let r = (i + 1 + j) as f64 / 2.0;
        for &k in &order[i..j] {
            ranks[k] = r;
        }
        i = j;
    }
    ranks
}

fn pearson_f64(a: &[f64], b: &[f64]) -> Result<f64> {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    if saa == 0.0 || sbb == 0.0 {
        return Err(MetricError::Invalid(
            "correlation is undefined for a constant profile".into(),
        ));
    }
    Ok(sab / (saa * sbb).sqrt())
}

fn check(a: &[f32], b: &[f32]) -> Result<()> {
    if a.len() != b.len() {
        return Err(MetricError::LengthMismatch {
            truth: a.len(),
            pred: b.len(),
        });
    }
    if a.len() < 2 {
        return Err(MetricError::Invalid(
            "correlation needs at least 2 values".into(),
        ));
    }
    if a.iter().chain(b).any(|v| !v.is_finite()) {
        return Err(MetricError::Invalid(
            "correlation of a profile with NaN or infinite values".into(),
        ));
    }
    Ok(())
}

/// Pearson correlation of two equally long profiles (error when either is constant).
pub fn pearson_correlation(a: &[f32], b: &[f32]) -> Result<f64> {
    check(a, b)?;
    let a: Vec<f64> = a.iter().map(|&v| v as f64).collect();
    let b: Vec<f64> = b.iter().map(|&v| v as f64).collect();
    pearson_f64(&a, &b)
}

/// Spearman rank correlation of two equally long profiles: Pearson of average ranks (error
/// when either is constant).
pub fn spearman_correlation(a: &[f32], b: &[f32]) -> Result<f64> {
    check(a, b)?;
    pearson_f64(&average_ranks(a), &average_ranks(b))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ranks_average_ties_as_scipy() {
        // scipy.stats.rankdata([3, 1, 4, 1, 5, 9, 2, 6, 5]) = [4, 1.5, 5, 1.5, 6.5, 9, 3, 8, 6.5]
        let r = average_ranks(&[3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0]);
        assert_eq!(r, vec![4.0, 1.5, 5.0, 1.5, 6.5, 9.0, 3.0, 8.0, 6.5]);
    }

    #[test]
    fn spearman_matches_scipy() {
        // scipy 1.17.1: spearmanr([3,1,4,1,5,9,2,6,5], [2,7,1,8,2,8,1,8,2]).statistic and
        // pearsonr(...).statistic of the same lists (ties in both, average ranks).
        let a = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0];
        let b = [2.0, 7.0, 1.0, 8.0, 2.0, 8.0, 1.0, 8.0, 2.0];
        let s = spearman_correlation(&a, &b).unwrap();
        assert!((s - SCIPY_SPEARMAN).abs() < 1e-12, "{s}");
        // pearsonr of the same vectors
        let p = pearson_correlation(&a, &b).unwrap();
        assert!((p - SCIPY_PEARSON).abs() < 1e-12, "{p}");
        // Monotone transforms leave Spearman at 1.
        let c: Vec<f32> = a.iter().map(|v| v.exp()).collect();
        assert!((spearman_correlation(&a, &c).unwrap() - 1.0).abs() < 1e-12);
    }

    const SCIPY_SPEARMAN: f64 = 0.20970498222359887;
    const SCIPY_PEARSON: f64 = 0.161415999493031;

    #[test]
    fn constant_and_mismatched_profiles_are_errors() {
        assert!(spearman_correlation(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]).is_err());
        assert!(spearman_correlation(&[1.0, 2.0], &[1.0, 2.0, 3.0]).is_err());
        assert!(spearman_correlation(&[1.0, f32::NAN], &[1.0, 2.0]).is_err());
    }
}

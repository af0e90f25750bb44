//! CICL's clustering head (methods.md §3.2): Student-t soft assignment of embeddings to the
//! k-means centroids, and the pseudo-labels taken from it.

use cellident_tensor::{DenseMatrix, Result, ensure_param};
use rayon::prelude::*;

/// Student-t soft assignment with `alpha` degrees of freedom:
/// `q_ij ∝ (1 + ‖h_i − c_j‖² / α)^(−(α+1)/2)`, rows summing to 1. `h` `[cells, dim]`,
/// `centroids` `[k, dim]` row-major; returns `[cells, k]`.
pub fn soft_assignment(h: &DenseMatrix, centroids: &[f32], alpha: f64) -> Result<DenseMatrix> {
    let dim = h.n_cols;
    ensure_param(
        dim > 0 && !centroids.is_empty() && centroids.len().is_multiple_of(dim),
        "centroids",
        || format!("{} values are not rows of {dim}", centroids.len()),
    )?;
    ensure_param(alpha > 0.0, "alpha", || format!("must be > 0, got {alpha}"))?;
    let k = centroids.len() / dim;
    let exponent = -(alpha + 1.0) / 2.0;
    let values: Vec<f32> = (0..h.n_rows)
        .into_par_iter()
        .flat_map_iter(|i| {
            let row = h.row(i);
            let kernel: Vec<f64> = centroids
                .chunks_exact(dim)
                .map(|c| {
                    let d2: f64 = row
                        .iter()
                        .zip(c)
                        .map(|(a, b)| ((a - b) as f64).powi(2))
                        .sum();
                    (1.0 + d2 / alpha).powf(exponent)
                })
                .collect();
            let total: f64 = kernel.iter().sum();
            kernel.into_iter().map(move |v| (v / total) as f32)
        })
        .collect();
    DenseMatrix::new(h.n_rows, k, values)
}

/// Pseudo-labels `argmax_j q_ij` (the nearest centroid, since q falls with the distance).
pub fn pseudo_labels(h: &DenseMatrix, centroids: &[f32]) -> Result<Vec<u32>> {
    Ok(soft_assignment(h, centroids, 1.0)?.argmax_rows())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_sum_to_one_and_argmax_is_the_nearest_centroid() {
        let h = DenseMatrix::new(3, 2, vec![0.0, 0.0, 4.0, 1.0, 1.0, 3.0]).unwrap();
        let c = [0.5f32, 0.0, 4.0, 0.0, 0.0, 4.0];
        let q = soft_assignment(&h, &c, 1.0).unwrap();
        for i in 0..3 {
            let s: f32 = q.row(i).iter().sum();
            assert!((s - 1.0).abs() < 1e-6);
        }
        // Row 0: distances² 0.25, 16, 16 -> q ∝ 1/1.25, 1/17, 1/17.
        let expect = 1.0 / 1.25 / (1.0 / 1.25 + 2.0 / 17.0);
        assert!((q.row(0)[0] - expect as f32).abs() < 1e-6);
        assert_eq!(pseudo_labels(&h, &c).unwrap(), vec![0, 1, 2]);
    }
}

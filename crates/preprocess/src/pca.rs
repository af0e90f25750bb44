//! Principal component analysis by seeded randomized truncated SVD (Halko, Martinsson & Tropp
//! 2011, the algorithm behind scikit-learn's `randomized_svd`), keeping the loadings so that
//! query data project onto the same components.
//!
//! The large products (`[cells, genes] x [genes, k + p]`) run through candle's matmul (gemm,
//! multi-threaded, AVX-512); the small orthonormalisations and the final eigenproblem run in f64.

use candle_core::{DType, Device, Tensor};
use cellident_tensor::DenseMatrix;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::{PreprocessError, Result, ensure};

/// Parameters of [`Pca::fit`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PcaParams {
    /// Number of components.
    pub n_components: usize,
    /// Extra random directions (scikit-learn's default 10).
    pub oversamples: usize,
    /// Power iterations (scikit-learn's `n_iter="auto"`: 7 when few components are asked for).
    pub power_iterations: usize,
    pub seed: u64,
}

impl Default for PcaParams {
    fn default() -> Self {
        PcaParams {
            n_components: 50,
            oversamples: 10,
            power_iterations: 7,
            seed: 0,
        }
    }
}

/// A fitted PCA: `scores = (x - mean) * components^T`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pca {
    /// Per-gene mean removed before projection.
    pub mean: Vec<f32>,
    /// Loadings, `[n_components, genes]` row-major, orthonormal rows; each row's largest-magnitude
    /// entry is positive (a deterministic sign convention).
    pub components: Vec<f32>,
    pub n_components: usize,
    pub n_genes: usize,
    /// Variance along each component (`s^2 / (n - 1)`).
    pub explained_variance: Vec<f64>,
    /// `explained_variance / total variance`.
    pub explained_variance_ratio: Vec<f64>,
}

fn tensor(m: &DenseMatrix, device: &Device) -> Result<Tensor> {
    Ok(Tensor::from_slice(&m.values, (m.n_rows, m.n_cols), device)?)
}

impl Pca {
    /// Fits on a dense `[cells, genes]` matrix (e.g. the output of [`crate::Scaler`]).
    pub fn fit(x: &DenseMatrix, params: &PcaParams) -> Result<Pca> {
        Ok(Self::fit_transform(x.clone(), params)?.0)
    }

    /// Fits and returns the scores of the training data, `[cells, n_components]`: the exact
    /// projection `(x - mean) V^T` (as [`Pca::transform`] gives). Takes the matrix by value and
    /// centres it in place: on this class of machine, first-touching a fresh 800 MB buffer costs
    /// more than the whole subspace iteration.
    pub fn fit_transform(x: DenseMatrix, params: &PcaParams) -> Result<(Pca, DenseMatrix)> {
        let (n, g) = (x.n_rows, x.n_cols);
        ensure(params.n_components >= 1, "n_components", || {
            "must be at least 1".into()
        })?;
        ensure(params.n_components <= n.min(g), "n_components", || {
            format!(
                "{} components asked for a {n} x {g} matrix (at most min(cells, genes))",
                params.n_components
            )
        })?;
        if n < 2 {
            return Err(PreprocessError::Data("PCA needs at least 2 cells".into()));
        }
        let device = Device::Cpu;
        let k = params.n_components;
        let l = (k + params.oversamples).min(n.min(g));
        // Centre in place and take the total sum of squares on the way.
        let mut mean = vec![0f64; g];
        for row in x.values.chunks_exact(g) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += v as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let mean32: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
        let mut centred = x.values;
        let mut total_ss = 0f64;
        for row in centred.chunks_exact_mut(g) {
            let mut row_ss = 0f64;
            for (v, &m) in row.iter_mut().zip(&mean32) {
                *v -= m;
                row_ss += (*v as f64) * (*v as f64);
            }
            total_ss += row_ss;
        }
        let xc = Tensor::from_vec(centred, (n, g), &device)?;
        // A transposed view: gemm reads it through strides (slower than a plain layout, but a
        // transposed copy costs more in page faults than it saves).
        let xct = xc.t()?;
        // Random start, seeded.
        let mut rng = cellident_tensor::batch::rng_for(params.seed, 0xC0FFEE);
        let omega: Vec<f32> = (0..g * l)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();
        let omega = Tensor::from_vec(omega, (g, l), &device)?;
        // Subspace iteration. Inside the loop one Cholesky-QR pass keeps the columns independent;
        // the final basis gets the second pass (CholeskyQR2) for full orthogonality.
        let mut q = orthonormalize(&xc.matmul(&omega)?, 1)?;
        for _ in 0..params.power_iterations {
            let z = orthonormalize(&xct.matmul(&q)?, 1)?;
            q = orthonormalize(&xc.matmul(&z)?, 1)?;
        }
        let q = orthonormalize(&q, 2)?;
        // B = Q^T Xc  [l, g];  B B^T = U S^2 U^T;  V^T = S^-1 U^T B.
        let b = q.t()?.matmul(&xc)?.to_dtype(DType::F64)?;
        let bbt = b.matmul(&b.t()?)?.to_vec2::<f64>()?;
        let (eigenvalues, eigenvectors) = symmetric_eigen(bbt);
        let mut order: Vec<usize> = (0..l).collect();
        order.sort_by(|&a, &c| eigenvalues[c].total_cmp(&eigenvalues[a]));
        let b_rows = b.to_vec2::<f64>()?;
        let mut components = vec![0f32; k * g];
        let mut explained_variance = Vec::with_capacity(k);

        for (ci, &e) in order.iter().take(k).enumerate() {
            let s2 = eigenvalues[e].max(0.0);
            let s = s2.sqrt();
            let mut v = vec![0f64; g];
            if s > 0.0 {
                for (r, brow) in b_rows.iter().enumerate() {
                    let u = eigenvectors[r][e] / s;
                    for (vj, &bj) in v.iter_mut().zip(brow) {
                        *vj += u * bj;
                    }
                }
            }
            let big = v
                .iter()
                .copied()
                .fold(0f64, |a, x| if x.abs() > a.abs() { x } else { a });
            let sign = if big < 0.0 { -1.0 } else { 1.0 };
            for (j, vj) in v.iter().enumerate() {
                components[ci * g + j] = (sign * vj) as f32;
            }
            explained_variance.push(s2 / (n - 1) as f64);
        }
        let scores = xc.matmul(&Tensor::from_slice(&components, (k, g), &device)?.t()?)?;
        let total_var = total_ss / (n - 1) as f64;
        let explained_variance_ratio = explained_variance.iter().map(|v| v / total_var).collect();
        let pca = Pca {
            mean: mean32,
            components,
            n_components: k,
            n_genes: g,
            explained_variance,
            explained_variance_ratio,
        };
        Ok((pca, DenseMatrix::from_tensor(&scores)?))
    }

    /// Projects `[cells, genes]` data (same genes as the fit) onto the components:
    /// `[cells, n_components]`.
    pub fn transform(&self, x: &DenseMatrix) -> Result<DenseMatrix> {
        ensure(x.n_cols == self.n_genes, "genes", || {
            format!(
                "PCA fitted on {} genes, data have {}",
                self.n_genes, x.n_cols
            )
        })?;
        let device = Device::Cpu;
        let xc = tensor(x, &device)?.broadcast_sub(&Tensor::from_slice(
            &self.mean,
            (1, self.n_genes),
            &device,
        )?)?;
        let w = Tensor::from_slice(&self.components, (self.n_components, self.n_genes), &device)?;
        let scores = xc.matmul(&w.t()?)?;
        Ok(DenseMatrix::from_tensor(&scores)?)
    }
}

impl Pca {
    /// Maps scores `[cells, n_components]` back to gene space, `scores V + mean`
    /// (`[cells, genes]`): the rank-`n_components` reconstruction, as scikit-learn's
    /// `PCA.inverse_transform` (without whitening).
    pub fn inverse_transform(&self, scores: &DenseMatrix) -> Result<DenseMatrix> {
        ensure(scores.n_cols == self.n_components, "scores", || {
            format!(
                "PCA has {} components, scores have {} columns",
                self.n_components, scores.n_cols
            )
        })?;
        let device = Device::Cpu;
        let w = Tensor::from_slice(&self.components, (self.n_components, self.n_genes), &device)?;
        let x = tensor(scores, &device)?
            .matmul(&w)?
            .broadcast_add(&Tensor::from_slice(&self.mean, (1, self.n_genes), &device)?)?;
        Ok(DenseMatrix::from_tensor(&x)?)
    }
}

/// Orthonormal basis of the columns of `y` (`[n, l]`, f32) by `passes` rounds of Cholesky QR
/// in f64 (two rounds = CholeskyQR2).
fn orthonormalize(y: &Tensor, passes: usize) -> Result<Tensor> {
    let mut q = y.to_dtype(DType::F64)?;
    for _ in 0..passes {
        let gram = q.t()?.matmul(&q)?.to_vec2::<f64>()?;
        let r_inv = cholesky_upper_inverse(gram)?;
        let l = r_inv.len();
        let flat: Vec<f64> = r_inv.into_iter().flatten().collect();
        q = q.matmul(&Tensor::from_vec(flat, (l, l), q.device())?)?;
    }
    Ok(q.to_dtype(DType::F32)?)
}

/// For a symmetric positive semi-definite `a`, the inverse of its upper Cholesky factor
/// (`a = R^T R`, returns `R^-1`). Near-zero pivots (rank deficiency) are regularised.
fn cholesky_upper_inverse(mut a: Vec<Vec<f64>>) -> Result<Vec<Vec<f64>>> {
    let l = a.len();
    let scale = (0..l)
        .map(|i| a[i][i])
        .fold(0f64, f64::max)
        .max(f64::MIN_POSITIVE);
    let mut r = vec![vec![0f64; l]; l];
    for i in 0..l {
        let mut d = a[i][i] - (0..i).map(|k| r[k][i] * r[k][i]).sum::<f64>();
        if d <= 1e-13 * scale {
            d = 1e-13 * scale; // a dependent direction: keep it tiny rather than fail
        }
        r[i][i] = d.sqrt();
        for j in i + 1..l {
            let s = a[i][j] - (0..i).map(|k| r[k][i] * r[k][j]).sum::<f64>();
            r[i][j] = s / r[i][i];
        }
        a[i].clear();
    }
    // Invert the upper-triangular R by back substitution.
    let mut inv = vec![vec![0f64; l]; l];
    for col in 0..l {
        for i in (0..=col).rev() {
            let target = if i == col { 1.0 } else { 0.0 };
            let s: f64 = (i + 1..=col).map(|k| r[i][k] * inv[k][col]).sum();
            inv[i][col] = (target - s) / r[i][i];
        }
    }
    if inv.iter().flatten().any(|v| !v.is_finite()) {
        return Err(PreprocessError::Data(
            "PCA: orthonormalisation failed (non-finite values in the data?)".into(),
        ));
    }
    Ok(inv)
}

/// Eigen-decomposition of a small symmetric matrix by cyclic Jacobi rotations: returns the
/// eigenvalues and the eigenvectors as columns (`vectors[row][k]`).
fn symmetric_eigen(mut a: Vec<Vec<f64>>) -> (Vec<f64>, Vec<Vec<f64>>) {
    let n = a.len();
    let mut v = vec![vec![0f64; n]; n];
    for (i, row) in v.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i][j] * a[i][j])
            .sum();
        let diag: f64 = (0..n).map(|i| a[i][i] * a[i][i]).sum();
        if off <= 1e-30 * diag.max(f64::MIN_POSITIVE) {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                if a[p][q].abs() < f64::MIN_POSITIVE {
                    continue;
                }
                let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k][p], a[k][q]);
                    a[k][p] = c * akp - s * akq;
                    a[k][q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p][k], a[q][k]);
                    a[p][k] = c * apk - s * aqk;
                    a[q][k] = s * apk + c * aqk;
                }
                for row in v.iter_mut() {
                    let (vkp, vkq) = (row[p], row[q]);
                    row[p] = c * vkp - s * vkq;
                    row[q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i][i]).collect(), v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jacobi_recovers_known_eigenvalues() {
        let (e, _) = symmetric_eigen(vec![vec![2.0, 1.0], vec![1.0, 2.0]]);
        let mut e = e;
        e.sort_by(f64::total_cmp);
        assert!((e[0] - 1.0).abs() < 1e-12 && (e[1] - 3.0).abs() < 1e-12);
    }

    #[test]
    fn exact_on_a_low_rank_matrix() {
        // Rank-2 data: two components explain everything, the third nothing.
        let n = 40;
        let mut values = Vec::new();
        for i in 0..n {
            let (a, b) = ((i as f32 * 0.37).sin(), (i as f32 * 1.3).cos());
            values.extend_from_slice(&[a, 2.0 * a + b, -b, 0.5 * a, 3.0 * b]);
        }
        let x = DenseMatrix::new(n, 5, values).unwrap();
        let pca = Pca::fit(
            &x,
            &PcaParams {
                n_components: 3,
                ..Default::default()
            },
        )
        .unwrap();
        let r = &pca.explained_variance_ratio;
        assert!(
            (r[0] + r[1] - 1.0).abs() < 1e-5 && r[2].abs() < 1e-5,
            "{r:?}"
        );
        // Components are orthonormal.
        let c = &pca.components;
        for i in 0..2 {
            for j in 0..2 {
                let d: f32 = (0..5).map(|k| c[i * 5 + k] * c[j * 5 + k]).sum();
                assert!((d - if i == j { 1.0 } else { 0.0 }).abs() < 1e-4);
            }
        }
        let scores = pca.transform(&x).unwrap();
        assert_eq!((scores.n_rows, scores.n_cols), (n, 3));
        // Two components reconstruct rank-2 data exactly (up to f32 rounding).
        let two = Pca::fit(
            &x,
            &PcaParams {
                n_components: 2,
                ..Default::default()
            },
        )
        .unwrap();
        let back = two.inverse_transform(&two.transform(&x).unwrap()).unwrap();
        let worst = back
            .values
            .iter()
            .zip(&x.values)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-4, "largest reconstruction error {worst}");
        assert!(two.inverse_transform(&scores).is_err());
    }
}

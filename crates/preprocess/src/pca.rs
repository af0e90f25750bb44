//! Principal component analysis by seeded randomized truncated SVD (Halko, Martinsson & Tropp
//! 2011, the algorithm behind scikit-learn's `randomized_svd`), keeping the loadings so that
//! query data project onto the same components.
//!
//! The large products (`[cells, genes] x [genes, k + p]`) run through candle's matmul (gemm,
//! multi-threaded, AVX-512); the small orthonormalisations and the final eigenproblem run in f64.

use candle_core::{DType, Device, Tensor};
use cellident_io::CsrMatrix;
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

/// The component count fits a `[n, g]` matrix and there are at least 2 cells.
fn check_shape(params: &PcaParams, n: usize, g: usize) -> Result<()> {
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
    Ok(())
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
        check_shape(params, n, g)?;
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
        // B = Q^T Xc  [l, g].
        let b = q.t()?.matmul(&xc)?.to_dtype(DType::F64)?;
        let (components, explained_variance) = components_from_range(&b, k, g, n)?;
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

/// From `B = Q^T Xc` (`[l, genes]`, f64): `B B^T = U S^2 U^T`, `V^T = S^-1 U^T B`; the top `k`
/// rows of `V^T` with the sign convention, and their variances `s^2 / (n - 1)`.
fn components_from_range(b: &Tensor, k: usize, g: usize, n: usize) -> Result<(Vec<f32>, Vec<f64>)> {
    let bbt = b.matmul(&b.t()?)?.to_vec2::<f64>()?;
    let l = bbt.len();
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
        let sign = sign_convention(&v);
        for (j, vj) in v.iter().enumerate() {
            components[ci * g + j] = (sign * vj) as f32;
        }
        explained_variance.push(s2 / (n - 1) as f64);
    }
    Ok((components, explained_variance))
}

/// `Xc B` for the implicitly centred sparse `X` (`[n, g]`, mean `mu`) and dense `B` (`[g, l]`,
/// row-major): `X B - 1 (mu^T B)`, `[n, l]`. Rows in parallel.
fn centred_times(x: &CsrMatrix, mu: &[f32], b: &[f32], l: usize) -> Vec<f32> {
    let mut out = vec![0f32; x.n_rows() * l];
    centred_times_into(x, mu, b, l, &mut out);
    out
}

/// [`centred_times`] into an existing `[n, l]` buffer (every value overwritten): the power
/// iterations reuse one buffer instead of first-touching a fresh 240 MB one per pass at a
/// million cells (the page faults were a tenth of the PCA's time).
fn centred_times_into(x: &CsrMatrix, mu: &[f32], b: &[f32], l: usize, out: &mut [f32]) {
    use rayon::prelude::*;
    let g = x.n_cols();
    let mut mu_b = vec![0f32; l];
    for j in 0..g {
        let row = &b[j * l..(j + 1) * l];
        for (o, &v) in mu_b.iter_mut().zip(row) {
            *o += mu[j] * v;
        }
    }
    out.par_chunks_mut(l * 1024)
        .enumerate()
        .for_each(|(chunk, block)| {
            pulp::Arch::new().dispatch(RowsTimes {
                x,
                first_row: chunk * 1024,
                mu_b: &mu_b,
                b,
                out: block,
            })
        });
}

/// The rows `first_row..` of `X B - 1 (mu^T B)` into `out` (`[rows, l]`). A `pulp` kernel: its
/// body is compiled once per instruction set and the widest the machine has (AVX-512, AVX2) is
/// chosen at run time — the `l`-wide update per stored value is the whole cost at a million
/// cells, and a portable build would otherwise run it 4 lanes wide.
struct RowsTimes<'a> {
    x: &'a CsrMatrix,
    first_row: usize,
    mu_b: &'a [f32],
    b: &'a [f32],
    out: &'a mut [f32],
}

impl pulp::WithSimd for RowsTimes<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let l = self.mu_b.len();
        for (r, o) in self.out.chunks_exact_mut(l).enumerate() {
            let (idx, val) = self.x.row(self.first_row + r);
            for (oi, &m) in o.iter_mut().zip(self.mu_b) {
                *oi = -m;
            }
            for (&j, &v) in idx.iter().zip(val) {
                let brow = &self.b[j as usize * l..(j as usize + 1) * l];
                for (oi, &bv) in o.iter_mut().zip(brow) {
                    *oi += v * bv;
                }
            }
        }
    }
}

/// `part += X[rows]^T C[rows]` (`[genes, l]`) and `col += 1^T C[rows]`, as [`RowsTimes`] a
/// kernel compiled for the machine's widest SIMD.
struct TransposeTimes<'a> {
    x: &'a CsrMatrix,
    rows: std::ops::Range<usize>,
    c: &'a [f32],
    col: &'a mut [f64],
    part: &'a mut [f32],
}

impl pulp::WithSimd for TransposeTimes<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let l = self.col.len();
        for i in self.rows {
            let crow = &self.c[i * l..(i + 1) * l];
            for (s, &v) in self.col.iter_mut().zip(crow) {
                *s += v as f64;
            }
            let (idx, val) = self.x.row(i);
            for (&j, &v) in idx.iter().zip(val) {
                let a = &mut self.part[j as usize * l..(j as usize + 1) * l];
                for (ai, &cv) in a.iter_mut().zip(crow) {
                    *ai += v * cv;
                }
            }
        }
    }
}

/// `Xc^T C` for the implicitly centred sparse `X` (`[n, g]`, mean `mu`) and dense `C` (`[n, l]`):
/// `X^T C - mu (1^T C)`, `[g, l]`. One share of rows per thread.
fn centred_t_times(x: &CsrMatrix, mu: &[f32], c: &[f32], l: usize) -> Vec<f32> {
    use rayon::prelude::*;
    let g = x.n_cols();
    let n = x.n_rows();
    // One contiguous share of rows per thread: a handful of [g, l] accumulators per pass, not
    // one per block (fresh accumulators cost more in page faults than the arithmetic).
    let shares = rayon::current_num_threads().max(1);
    let share = n.div_ceil(shares).max(1);
    let (acc, col_sums) = (0..n.div_ceil(share))
        .into_par_iter()
        .map(|si| {
            let mut acc = vec![0f64; g * l];
            let mut col = vec![0f64; l];
            let mut part = vec![0f32; g * l];
            let rows = si * share..((si + 1) * share).min(n);
            // f32 partial sums over 4,096 rows at a time (so the inner loop vectorises), added
            // into f64.
            for start in rows.clone().step_by(4096) {
                part.iter_mut().for_each(|v| *v = 0.0);
                pulp::Arch::new().dispatch(TransposeTimes {
                    x,
                    rows: start..(start + 4096).min(rows.end),
                    c,
                    col: &mut col,
                    part: &mut part,
                });
                acc.iter_mut().zip(&part).for_each(|(a, &p)| *a += p as f64);
            }
            (acc, col)
        })
        .reduce(
            || (vec![0f64; g * l], vec![0f64; l]),
            |(mut a, mut c), (b, d)| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                c.iter_mut().zip(&d).for_each(|(x, y)| *x += y);
                (a, c)
            },
        );
    let mut out = vec![0f32; g * l];
    for j in 0..g {
        for k in 0..l {
            out[j * l + k] = (acc[j * l + k] - mu[j] as f64 * col_sums[k]) as f32;
        }
    }
    out
}

impl Pca {
    /// [`Pca::fit_transform`] on a sparse `[cells, genes]` matrix without densifying it: the
    /// centring is implicit (`Xc B = X B - 1 mu^T B`), as scanpy's `pca` on sparse input does
    /// (no scaling step), so memory stays that of the sparse matrix plus `[cells, k + p]`
    /// blocks. Same randomized subspace iteration, same sign convention, same outputs.
    pub fn fit_transform_sparse(x: &CsrMatrix, params: &PcaParams) -> Result<(Pca, DenseMatrix)> {
        let (n, g) = (x.n_rows(), x.n_cols());
        check_shape(params, n, g)?;
        let device = Device::Cpu;
        let k = params.n_components;
        // The subspace rounded up to a whole number of 8-float SIMD vectors (60 -> 64 at the
        // default 50 + 10): a few more random directions cost less than the scalar tail of every
        // l-wide update in the sparse kernels.
        let l = (k + params.oversamples).next_multiple_of(8).min(n.min(g));
        let (mut sum, mut sq) = (vec![0f64; g], 0f64);
        for (&j, &v) in x.indices().iter().zip(x.data()) {
            sum[j as usize] += v as f64;
            sq += (v as f64) * (v as f64);
        }
        let mean: Vec<f64> = sum.iter().map(|s| s / n as f64).collect();
        let mean32: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
        // sum ||x_i - mu||^2 = sum x^2 - n ||mu||^2.
        let total_ss = sq - n as f64 * mean.iter().map(|m| m * m).sum::<f64>();
        let mut rng = cellident_tensor::batch::rng_for(params.seed, 0xC0FFEE);
        let omega: Vec<f32> = (0..g * l)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();
        let as_tensor = |v: Vec<f32>, rows: usize| -> Result<Tensor> {
            Ok(Tensor::from_vec(v, (rows, l), &device)?)
        };
        let values = |t: &Tensor| -> Result<Vec<f32>> { Ok(t.flatten_all()?.to_vec1::<f32>()?) };
        // Only the small `[genes, l]` side is orthonormalised inside the loop: `Xc Z` with an
        // orthonormal `Z` stays as well conditioned as `Xc` itself, and at a million cells each
        // `[cells, l]` Cholesky-QR (f64 copies and products) cost more than the sparse products.
        let mut q = centred_times(x, &mean32, &omega, l);
        for _ in 0..params.power_iterations {
            let z = centred_t_times(x, &mean32, &q, l);
            let z = orthonormalize(&as_tensor(z, g)?, 1)?;
            centred_times_into(x, &mean32, &values(&z)?, l, &mut q);
        }
        // The [cells, l] basis in place, block by block (a whole-matrix f64 copy was 1 GB of
        // the peak at a million cells).
        orthonormalize_rows(&mut q, l, 2)?;
        // B = Q^T Xc = (Xc^T Q)^T  [l, g].
        let bt = centred_t_times(x, &mean32, &q, l);
        let b = as_tensor(bt, g)?.t()?.to_dtype(DType::F64)?;
        let (components, explained_variance) = components_from_range(&b, k, g, n)?;
        // Scores Xc V^T: V^T as a [g, k] row-major block.
        let mut vt = vec![0f32; g * k];
        for c in 0..k {
            for j in 0..g {
                vt[j * k + c] = components[c * g + j];
            }
        }
        let scores = centred_times(x, &mean32, &vt, k);
        let total_var = total_ss / (n - 1) as f64;
        let explained_variance_ratio = explained_variance.iter().map(|v| v / total_var).collect();
        Ok((
            Pca {
                mean: mean32,
                components,
                n_components: k,
                n_genes: g,
                explained_variance,
                explained_variance_ratio,
            },
            DenseMatrix::new(n, k, scores)?,
        ))
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

impl Pca {
    /// The PCA of `scaler.transform(x)` (`[cells, genes]`, scaled and clipped) and its scores,
    /// without ever holding the dense scaled matrix: rows are scaled a block at a time into a
    /// streamed scatter matrix ([`Pca::from_scatter`]), then scored a block at a time. Memory:
    /// a block and the `[genes, genes]` scatter, where the dense path holds `cells x genes`
    /// floats (8 GB at a million cells and 2,000 genes). Same components as
    /// [`Pca::fit_transform`] of the scaled matrix to the accuracy of the randomized method.
    /// `block_rows`: cells scaled at a time (8,192 in the pipeline).
    pub fn fit_transform_scaled_by_blocks(
        x: &CsrMatrix,
        scaler: &crate::Scaler,
        params: &PcaParams,
        block_rows: usize,
    ) -> Result<(Pca, DenseMatrix)> {
        let (n, g) = (x.n_rows(), x.n_cols());
        check_shape(params, n, g)?;
        let block_rows = block_rows.max(1);
        let block = |start: usize| -> Result<DenseMatrix> {
            let rows: Vec<usize> = (start..(start + block_rows).min(n)).collect();
            scaler.transform(&x.select_rows(&rows))
        };
        let mut scatter = crate::stream::GeneScatter::new(g);
        for start in (0..n).step_by(block_rows) {
            scatter.add_dense(&block(start)?.values)?;
        }
        let pca = Pca::from_scatter(&scatter, params)?;
        let mut scores = Vec::with_capacity(n * pca.n_components);
        for start in (0..n).step_by(block_rows) {
            scores.extend(pca.transform(&block(start)?)?.values);
        }
        let k = pca.n_components;
        Ok((pca, DenseMatrix::new(n, k, scores)?))
    }
}

/// `1` or `-1`: the sign that makes the largest-magnitude entry of `v` positive.
fn sign_convention(v: &[f64]) -> f64 {
    let big = v
        .iter()
        .copied()
        .fold(0f64, |a, x| if x.abs() > a.abs() { x } else { a });
    if big < 0.0 { -1.0 } else { 1.0 }
}

impl Pca {
    /// The PCA of cells seen only through their mean and scatter matrix (a streamed pass,
    /// [`crate::stream::GeneScatter`]): the same randomized subspace iteration run on the
    /// `[genes, genes]` scatter `S = Xc^T Xc` (one product with `S` is one power iteration),
    /// then the Rayleigh-Ritz eigenproblem of `Z^T S Z` in f64. Same components, variances and
    /// sign convention as [`Pca::fit`] on the cells themselves (to rounding); no scores.
    pub fn from_scatter(stats: &crate::stream::GeneScatter, params: &PcaParams) -> Result<Pca> {
        let (n, g) = (stats.n_cells(), stats.n_genes());
        check_shape(params, n, g)?;
        let device = Device::Cpu;
        let k = params.n_components;
        let l = (k + params.oversamples).min(n.min(g));
        let s32: Vec<f32> = stats.scatter().iter().map(|&v| v as f32).collect();
        let s = Tensor::from_vec(s32, (g, g), &device)?;
        let mut rng = cellident_tensor::batch::rng_for(params.seed, 0xC0FFEE);
        let omega: Vec<f32> = (0..g * l)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();
        let mut z = orthonormalize(&s.matmul(&Tensor::from_vec(omega, (g, l), &device)?)?, 1)?;
        for _ in 0..params.power_iterations {
            z = orthonormalize(&s.matmul(&z)?, 1)?;
        }
        let z = orthonormalize(&z, 2)?.to_dtype(DType::F64)?;
        let s64 = Tensor::from_slice(stats.scatter(), (g, g), &device)?;
        let t = z.t()?.matmul(&s64.matmul(&z)?)?.to_vec2::<f64>()?;
        let (eigenvalues, eigenvectors) = symmetric_eigen(t);
        let mut order: Vec<usize> = (0..l).collect();
        order.sort_by(|&a, &c| eigenvalues[c].total_cmp(&eigenvalues[a]));
        let z_rows = z.to_vec2::<f64>()?;
        let mut components = vec![0f32; k * g];
        let mut explained_variance = Vec::with_capacity(k);
        for (ci, &e) in order.iter().take(k).enumerate() {
            // The Ritz vector Z w_e.
            let v: Vec<f64> = z_rows
                .iter()
                .map(|zr| zr.iter().zip(&eigenvectors).map(|(a, w)| a * w[e]).sum())
                .collect();
            let sign = sign_convention(&v);
            for (j, vj) in v.iter().enumerate() {
                components[ci * g + j] = (sign * vj) as f32;
            }
            explained_variance.push(eigenvalues[e].max(0.0) / (n - 1) as f64);
        }
        let total_var = (0..g).map(|j| stats.scatter()[j * g + j]).sum::<f64>() / (n - 1) as f64;
        let explained_variance_ratio = explained_variance.iter().map(|v| v / total_var).collect();
        Ok(Pca {
            mean: stats.mean().iter().map(|&m| m as f32).collect(),
            components,
            n_components: k,
            n_genes: g,
            explained_variance,
            explained_variance_ratio,
        })
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

/// [`orthonormalize`] of a tall `[n, l]` row-major f32 matrix in place: per pass, the Gram
/// matrix summed in f64 over blocks of rows, then each block times `R^-1` in f64, stored back
/// as f32. Memory: one block, not an f64 copy of the whole matrix.
fn orthonormalize_rows(q: &mut [f32], l: usize, passes: usize) -> Result<()> {
    const BLOCK_ROWS: usize = 65_536;
    let device = Device::Cpu;
    let block = |b: &[f32]| -> Result<Tensor> {
        Ok(Tensor::from_slice(b, (b.len() / l, l), &device)?.to_dtype(DType::F64)?)
    };
    for _ in 0..passes {
        let mut gram = Tensor::zeros((l, l), DType::F64, &device)?;
        for b in q.chunks(BLOCK_ROWS * l) {
            let t = block(b)?;
            gram = (gram + t.t()?.matmul(&t)?)?;
        }
        let r_inv = cholesky_upper_inverse(gram.to_vec2::<f64>()?)?;
        let flat: Vec<f64> = r_inv.into_iter().flatten().collect();
        let r_inv = Tensor::from_vec(flat, (l, l), &device)?;
        for b in q.chunks_mut(BLOCK_ROWS * l) {
            let t = block(b)?.matmul(&r_inv)?.to_dtype(DType::F32)?;
            b.copy_from_slice(&t.flatten_all()?.to_vec1::<f32>()?);
        }
    }
    Ok(())
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

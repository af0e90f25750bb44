//! Layers with a working backward pass.
//!
//! candle-nn's fused `ops::layer_norm` and `ops::softmax_last_dim` have no backward: gradients
//! silently stop there (see `../shared/docs/dependencies.md`). These versions are built from
//! differentiable primitives, and the tests check their gradients against finite differences.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, D, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::Result;

/// Layer normalisation over the last dimension, `(x - mean) / sqrt(var + eps) * gamma + beta`
/// (biased variance, as PyTorch). `gamma`/`beta` of shape `[d]`; `None` means no affine part.
///
/// On the CPU this is one fused op whose backward is one pass over the rows as well (the
/// composed version below costs ~10 broadcasting element-wise ops forward and ~15 backward,
/// which dominated the transformer encoder of CICL); elsewhere, and when only one of
/// `gamma`/`beta` is given, the composed version.
pub fn layer_norm(
    x: &Tensor,
    gamma: Option<&Tensor>,
    beta: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    if !x.device().is_cpu() || x.dtype() != DType::F32 || x.rank() == 0 {
        return layer_norm_composed(x, gamma, beta, eps);
    }
    let x = x.contiguous()?;
    match (gamma, beta) {
        (Some(g), Some(b)) if g.dtype() == DType::F32 && b.dtype() == DType::F32 => {
            Ok(x.apply_op3(&g.contiguous()?, &b.contiguous()?, FusedLayerNorm { eps })?)
        }
        (None, None) => Ok(x.apply_op1(FusedLayerNorm { eps })?),
        _ => layer_norm_composed(&x, gamma, beta, eps),
    }
}

/// [`layer_norm`] from differentiable primitives (any device); the reference the fused op is
/// tested against.
pub fn layer_norm_composed(
    x: &Tensor,
    gamma: Option<&Tensor>,
    beta: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let centered = x.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
    let mut y = centered.broadcast_div(&(var + eps)?.sqrt()?)?;
    if let Some(g) = gamma {
        y = y.broadcast_mul(g)?;
    }
    if let Some(b) = beta {
        y = y.broadcast_add(b)?;
    }
    Ok(y)
}

/// Fused CPU layer norm: op1 without affine part, op3 `(x, gamma, beta)` with it.
#[derive(Debug, Clone, Copy)]
struct FusedLayerNorm {
    eps: f64,
}

/// Mean and `1 / sqrt(var + eps)` of one row (two passes, f64 accumulation).
fn row_stats(row: &[f32], eps: f64) -> (f32, f32) {
    let d = row.len() as f64;
    let mean = row.iter().map(|&v| v as f64).sum::<f64>() / d;
    let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / d;
    (mean as f32, (1.0 / (var + eps).sqrt()) as f32)
}

fn contiguous_slice<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("a fused op needs a contiguous input"),
    }
}

impl FusedLayerNorm {
    fn forward(&self, x: &[f32], dims: &[usize], affine: Option<(&[f32], &[f32])>) -> Vec<f32> {
        let d = dims.last().copied().unwrap_or(1).max(1);
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(d)
            .zip(x.par_chunks(d))
            .for_each(|(o, r)| {
                let (mean, inv) = row_stats(r, self.eps);
                match affine {
                    Some((g, b)) => {
                        for j in 0..d {
                            o[j] = (r[j] - mean) * inv * g[j] + b[j];
                        }
                    }
                    None => {
                        for j in 0..d {
                            o[j] = (r[j] - mean) * inv;
                        }
                    }
                }
            });
        out
    }

    /// Gradients `(dx, dgamma, dbeta)` of the rows of `x` given the output gradient `grad`.
    fn backward(
        &self,
        x: &[f32],
        grad: &[f32],
        d: usize,
        gamma: Option<&[f32]>,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let mut dx = vec![0f32; x.len()];
        // Per-chunk partial sums of dgamma/dbeta, reduced afterwards (reproducible: the chunking
        // depends only on the shape).
        let rows_per_chunk = 64;
        let partial: Vec<(Vec<f64>, Vec<f64>)> = dx
            .par_chunks_mut(d * rows_per_chunk)
            .zip(x.par_chunks(d * rows_per_chunk))
            .zip(grad.par_chunks(d * rows_per_chunk))
            .map(|((dx_c, x_c), g_c)| {
                let mut dg = vec![0f64; if gamma.is_some() { d } else { 0 }];
                let mut db = vec![0f64; if gamma.is_some() { d } else { 0 }];
                let mut gy = vec![0f32; d];
                let mut yhat = vec![0f32; d];
                for ((dxr, r), g) in dx_c.chunks_mut(d).zip(x_c.chunks(d)).zip(g_c.chunks(d)) {
                    let (mean, inv) = row_stats(r, self.eps);
                    let (mut s1, mut s2) = (0f64, 0f64);
                    for j in 0..d {
                        yhat[j] = (r[j] - mean) * inv;
                        gy[j] = match gamma {
                            Some(gm) => g[j] * gm[j],
                            None => g[j],
                        };
                        s1 += gy[j] as f64;
                        s2 += (gy[j] * yhat[j]) as f64;
                    }
                    let (m1, m2) = ((s1 / d as f64) as f32, (s2 / d as f64) as f32);
                    for j in 0..d {
                        dxr[j] = inv * (gy[j] - m1 - yhat[j] * m2);
                    }
                    if gamma.is_some() {
                        for j in 0..d {
                            dg[j] += (g[j] * yhat[j]) as f64;
                            db[j] += g[j] as f64;
                        }
                    }
                }
                (dg, db)
            })
            .collect();
        let (mut dgamma, mut dbeta) = (vec![0f64; d], vec![0f64; d]);
        if gamma.is_some() {
            for (dg, db) in &partial {
                for j in 0..d {
                    dgamma[j] += dg[j];
                    dbeta[j] += db[j];
                }
            }
        }
        (
            dx,
            dgamma.into_iter().map(|v| v as f32).collect(),
            dbeta.into_iter().map(|v| v as f32).collect(),
        )
    }

    fn host_backward(
        &self,
        x: &Tensor,
        gamma: Option<&Tensor>,
        grad: &Tensor,
    ) -> candle_core::Result<(Tensor, Vec<f32>, Vec<f32>)> {
        let d = x.dim(D::Minus1)?;
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let gs = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let gm = gamma.map(|g| g.to_vec1::<f32>()).transpose()?;
        let (dx, dg, db) = self.backward(&xs, &gs, d, gm.as_deref());
        Ok((Tensor::from_vec(dx, x.shape(), x.device())?, dg, db))
    }
}

impl CustomOp1 for FusedLayerNorm {
    fn name(&self) -> &'static str {
        "fused-layer-norm"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_slice(s, l)?;
        let out = self.forward(x, l.dims(), None);
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(self.host_backward(arg, None, grad)?.0))
    }
}

impl CustomOp3 for FusedLayerNorm {
    fn name(&self) -> &'static str {
        "fused-layer-norm-affine"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_slice(s1, l1)?;
        let (g, b) = (contiguous_slice(s2, l2)?, contiguous_slice(s3, l3)?);
        let d = l1.dims().last().copied().unwrap_or(1);
        if g.len() != d || b.len() != d {
            candle_core::bail!(
                "layer norm over {d} features got gamma of {} and beta of {}",
                g.len(),
                b.len()
            );
        }
        let out = self.forward(x, l1.dims(), Some((g, b)));
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dg, db) = self.host_backward(x, Some(gamma), grad)?;
        let dg = Tensor::from_vec(dg, gamma.shape(), gamma.device())?;
        let db = Tensor::from_vec(db, beta.shape(), beta.device())?;
        Ok((Some(dx), Some(dg), Some(db)))
    }
}

/// LogSigmoid, `log(1 / (1 + e^-x)) = min(x, 0) - log(1 + e^-|x|)` (stable for large `|x|`),
/// element-wise; its derivative is `1 / (1 + e^x)`.
///
/// On the CPU (f32) one fused op forward and one backward: the composition from candle's
/// primitives is nine element-wise ops forward and about as many backward, each a fresh tensor,
/// which cost CIC's autoencoder (two LogSigmoid layers of 2,000 units) as much as its matrix
/// products at batch 64. Elsewhere the composed version. Forward values are those of the
/// composition exactly (same f32 operations in the same order).
pub fn log_sigmoid(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        return Ok(x.contiguous()?.apply_op1(FusedLogSigmoid)?);
    }
    let min0 = x.neg()?.relu()?.neg()?;
    Ok((min0 - (x.abs()?.neg()?.exp()? + 1.0)?.log()?)?)
}

/// Element-wise maps below this many values run on one thread.
const PARALLEL_MAP_MIN: usize = 1 << 15;

/// `out[i] = f(a[i], b[i])`, split across the thread pool when large.
fn map2(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    let mut out = vec![0f32; a.len()];
    if a.len() >= PARALLEL_MAP_MIN {
        out.par_chunks_mut(PARALLEL_MAP_MIN)
            .zip(
                a.par_chunks(PARALLEL_MAP_MIN)
                    .zip(b.par_chunks(PARALLEL_MAP_MIN)),
            )
            .for_each(|(o, (a, b))| {
                for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
                    *o = f(a, b);
                }
            });
    } else {
        for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
            *o = f(a, b);
        }
    }
    out
}

struct FusedLogSigmoid;

impl CustomOp1 for FusedLogSigmoid {
    fn name(&self) -> &'static str {
        "fused-log-sigmoid"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_slice(s, l)?;
        // min(x, 0) as -relu(-x) and log(exp(-|x|) + 1): the composed version's f32 steps.
        let out = map2(x, x, |v, _| {
            let min0 = -(-v).max(0.0);
            min0 - ((-v.abs()).exp() + 1.0).ln()
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(
            arg.contiguous()?
                .apply_op2_no_bwd(&grad.contiguous()?, &LogSigmoidGrad)?,
        ))
    }
}

/// `grad / (1 + e^x)`: LogSigmoid's backward.
struct LogSigmoidGrad;

impl CustomOp2 for LogSigmoidGrad {
    fn name(&self) -> &'static str {
        "log-sigmoid-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, g) = (contiguous_slice(s1, l1)?, contiguous_slice(s2, l2)?);
        if x.len() != g.len() {
            candle_core::bail!(
                "log-sigmoid gradient: {} values, {} gradients",
                x.len(),
                g.len()
            );
        }
        let out = map2(x, g, |v, g| g / (1.0 + v.exp()));
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// A dense layer, `x W^T + b`: `x` `[batch, in]`, `weight` `[out, in]`, `bias` `[out]`; returns
/// `[batch, out]` (higher-rank `x` broadcasts over its leading dimensions, as candle-nn's `Linear`).
///
/// Why not candle-nn's `Linear`: candle's backward of a matmul computes the gradient of *both*
/// operands, including a network input that no variable depends on. For a first layer that is a
/// `[batch, out] x [out, in]` product thrown away, plus a zero-filled `[batch, in]` buffer it is
/// added to: a third of ACTINN's arithmetic per step, a ninth of N-ACT's. And for the weight it
/// goes through `W^T` as a separate op, so `dW` is accumulated twice — into a zero-filled
/// `[in, out]` buffer, then transposed into a second zero-filled `[out, in]` buffer by a strided
/// add: two extra passes over every weight matrix per step. On the CPU (f32, rank 2) this runs
/// the same forward gemm call as one custom op whose backward computes exactly the gradients
/// that are needed: `dW = grad^T x` (`[out, in]`, already in the weight's layout) when the
/// weight is tracked, `dx = grad W` when the input is. Elsewhere (GPU, rank > 2) it is the plain
/// matmul.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let fused = x.device().is_cpu()
        && x.rank() == 2
        && weight.rank() == 2
        && x.dtype() == DType::F32
        && weight.dtype() == DType::F32;
    let y = if fused {
        x.contiguous()?.apply_op2(
            weight,
            DenseLinear {
                input_grad: x.track_op(),
                weight_grad: weight.track_op(),
            },
        )?
    } else if x.rank() == 2 {
        x.matmul(&weight.t()?)?
    } else {
        x.broadcast_matmul(&weight.t()?)?
    };
    Ok(match bias {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    })
}

/// `x W^T` with a backward that computes only the gradients asked for (see [`linear`]).
struct DenseLinear {
    /// `x` carries a gradient: compute `dx = grad W`.
    input_grad: bool,
    /// `W` carries a gradient: compute `dW = grad^T x`.
    weight_grad: bool,
}

impl CustomOp2 for DenseLinear {
    fn name(&self) -> &'static str {
        "dense-linear"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        w: &CpuStorage,
        w_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (m, k) = x_layout.shape().dims2()?;
        let (n, k_w) = w_layout.shape().dims2()?;
        if k != k_w {
            candle_core::bail!("linear: input has {k} features, weight expects {k_w}");
        }
        // The same gemm call that `x.matmul(&w.t())` makes, so the forward is bit-identical.
        let y = x.matmul(w, (1, m, n, k), x_layout, &w_layout.transpose(0, 1)?)?;
        Ok((y, Shape::from((m, n))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let dx = if self.input_grad {
            Some(grad.matmul(&w.contiguous()?)?)
        } else {
            None
        };
        // Inside [`backward`], a variable weight's gradient is written outside candle's
        // `GradStore` (see there); otherwise candle accumulates the product as usual.
        let dw = if self.weight_grad && !defer_weight_gradient(x, w, grad)? {
            Some(grad.t()?.matmul(x)?)
        } else {
            None
        };
        Ok((dx, dw))
    }
}

/// A weight's gradient computed outside candle's `GradStore`: the weight (a variable) and
/// `dW` row-major, `[out, in]`.
type DeferredGradient = (Tensor, Vec<f32>);

thread_local! {
    /// `Some` while [`backward`] runs on this thread: [`DenseLinear`]'s backward then puts the
    /// weight gradients here instead of returning them to candle.
    static DEFERRED_WEIGHT_GRADIENTS: std::cell::RefCell<Option<Vec<DeferredGradient>>> =
        const { std::cell::RefCell::new(None) };
}

#[cfg(test)]
thread_local! {
    /// Weight gradients computed on the deferred path on this thread (so a test can tell that
    /// the path was taken, not only that the values agree).
    static DEFERRED_PRODUCTS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Back-propagates `loss` like `loss.backward()` and returns the same gradients (bit for bit),
/// with less memory traffic for the weights of [`linear`] layers.
///
/// Why: candle's backprop accumulates every gradient into a fresh zero-filled tensor
/// (`GradStore::or_insert` then `add`), and its matmul zero-fills its output before gemm
/// overwrites it. For a `[out, in]` weight that is two zero-fills, an add that reads two
/// buffers and writes a third, on top of gemm's own write: on CIC's 4.1 M weights about a
/// sixth of a training step's time in `perf` (zero-fills 8 %, the adds 8 %). Here each weight
/// gradient `dW = grad^T x` is written by the same gemm call candle's matmul makes (so the
/// same values) into an uninitialised buffer, a weight used more than once (CICL's two views)
/// adds the later products into it in place in the order candle would, and the results are
/// inserted into the `GradStore` when the backward pass is over. Only weights that are
/// variables (leaves) take this path; a derived weight tensor must pass its gradient on
/// through candle's graph.
pub fn backward(loss: &Tensor) -> Result<candle_core::backprop::GradStore> {
    /// Switches the deferral off when the pass ends, also by an error or a panic.
    struct Active;
    impl Drop for Active {
        fn drop(&mut self) {
            DEFERRED_WEIGHT_GRADIENTS.with(|d| d.borrow_mut().take());
        }
    }
    DEFERRED_WEIGHT_GRADIENTS.with(|d| *d.borrow_mut() = Some(Vec::new()));
    let active = Active;
    let mut grads = loss.backward()?;
    let deferred = DEFERRED_WEIGHT_GRADIENTS
        .with(|d| d.borrow_mut().take())
        .unwrap_or_default();
    drop(active);
    for (weight, dw) in deferred {
        let dw = Tensor::from_vec(dw, weight.shape(), weight.device())?;
        // The weight also took part in ops other than `linear` (a penalty, say): candle holds
        // their part of its gradient, and the sum is the gradient.
        let total = match grads.remove(&weight) {
            Some(other) => (other + dw)?,
            None => dw,
        };
        grads.insert(&weight, total);
    }
    Ok(grads)
}

/// In a [`backward`] pass, computes `dW = grad^T x` for a variable `w` into the deferred
/// gradients and returns `true`; otherwise (no such pass on this thread, a derived weight,
/// not f32 on the CPU) returns `false` and leaves the gradient to candle.
///
/// `unsafe` is allowed here for the one gemm call (gemm's API is raw pointers and strides, as
/// in candle's matmul), which writes into memory that is not zero-filled first.
#[allow(unsafe_code)]
fn defer_weight_gradient(x: &Tensor, w: &Tensor, grad: &Tensor) -> candle_core::Result<bool> {
    let active = DEFERRED_WEIGHT_GRADIENTS.with(|d| d.borrow().is_some());
    if !active
        || !w.is_variable()
        || !w.device().is_cpu()
        || w.dtype() != DType::F32
        || x.dtype() != DType::F32
        || grad.dtype() != DType::F32
    {
        return Ok(false);
    }
    let (rows, out) = grad.dims2()?;
    let (x_rows, inputs) = x.dims2()?;
    if rows != x_rows || w.dims2()? != (out, inputs) {
        candle_core::bail!(
            "linear backward: grad [{rows}, {out}], input [{x_rows}, {inputs}], weight {:?}",
            w.dims()
        );
    }
    let grad = grad.contiguous()?;
    let x = x.contiguous()?;
    let (g_storage, g_layout) = grad.storage_and_layout();
    let (x_storage, x_layout) = x.storage_and_layout();
    let (
        candle_core::Storage::Cpu(CpuStorage::F32(g)),
        candle_core::Storage::Cpu(CpuStorage::F32(xs)),
    ) = (&*g_storage, &*x_storage)
    else {
        return Ok(false);
    };
    let g = &g[g_layout.start_offset()..g_layout.start_offset() + rows * out];
    let xs = &xs[x_layout.start_offset()..x_layout.start_offset() + rows * inputs];
    let n = out * inputs;
    let mut dw: Vec<f32> = Vec::with_capacity(n);
    let threads = candle_core::utils::get_num_threads();
    // SAFETY: `dw` has room for `out x inputs` values, written row-major (row stride `inputs`)
    // by gemm, which with `read_dst = false` and `alpha = 0` never reads them; `g` holds
    // `rows x out` and `xs` `rows x inputs` values, read through the strides given. These are
    // the arguments candle's matmul passes for `grad.t().matmul(x)` (lhs `grad^T` with column
    // stride `out` and row stride 1, rhs `x` row-major), so the values are the same.
    unsafe {
        gemm::gemm(
            out,
            inputs,
            rows,
            dw.as_mut_ptr(),
            1,
            inputs as isize,
            false,
            g.as_ptr(),
            out as isize,
            1,
            xs.as_ptr(),
            1,
            inputs as isize,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            if threads > 1 {
                gemm::Parallelism::Rayon(threads)
            } else {
                gemm::Parallelism::None
            },
        );
        dw.set_len(n);
    }
    #[cfg(test)]
    DEFERRED_PRODUCTS.with(|c| c.set(c.get() + 1));
    DEFERRED_WEIGHT_GRADIENTS.with(|d| {
        let mut d = d.borrow_mut();
        let Some(list) = d.as_mut() else {
            return;
        };
        match list.iter_mut().find(|(t, _)| t.id() == w.id()) {
            // candle would add this product to the sum so far: the same additions in the
            // same order.
            Some((_, sum)) => {
                let add = |s: &mut [f32], d: &[f32]| s.iter_mut().zip(d).for_each(|(s, d)| *s += d);
                // Split over the pool as the optimizers split their element-wise updates.
                if n < crate::optim::PARALLEL_UPDATE_MIN {
                    add(sum, &dw);
                } else {
                    sum.par_chunks_mut(crate::optim::PARALLEL_UPDATE_CHUNK)
                        .zip(dw.par_chunks(crate::optim::PARALLEL_UPDATE_CHUNK))
                        .for_each(|(s, d)| add(s, d));
                }
            }
            None => list.push((w.clone(), dw)),
        }
    });
    Ok(true)
}

/// Inverted dropout with a mask drawn from `rng` (candle's CPU dropout cannot be seeded): each
/// entry of `x` is kept with probability `1 - p` and scaled by `1 / (1 - p)`, else zeroed. The
/// mask is a constant, so the gradient flows to `x` through the kept entries. `p <= 0` returns
/// `x`. Draws one `u32` per entry, in row-major order.
pub fn dropout(x: &Tensor, p: f64, rng: &mut rand::rngs::StdRng) -> Result<Tensor> {
    use rand::Rng;
    if p <= 0.0 {
        return Ok(x.clone());
    }
    let keep = 1.0 - p;
    let scale = (1.0 / keep) as f32;
    let threshold = (keep * u32::MAX as f64) as u32;
    let mask: Vec<f32> = (0..x.elem_count())
        .map(|_| {
            if rng.random::<u32>() < threshold {
                scale
            } else {
                0.0
            }
        })
        .collect();
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
    Ok(x.mul(&mask)?)
}

/// The largest absolute element-wise difference of two tensors of one shape (how tests
/// compare two computations of the same function).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    Ok((a - b)?
        .abs()?
        .max_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_scalar::<f32>()?)
}

/// Softmax over the last dimension, numerically stabilised, differentiable.
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::ops::softmax(x, D::Minus1)?)
}

/// Mean softmax cross-entropy of `logits` `[n, C]` against class indices `targets` `[n]` (u32).
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::loss::cross_entropy(logits, targets)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn numeric_grad(f: &dyn Fn(&Tensor) -> f32, x: &[f32], shape: (usize, usize)) -> Vec<f32> {
        let h = 1e-3f32;
        (0..x.len())
            .map(|i| {
                let mut a = x.to_vec();
                let mut b = x.to_vec();
                a[i] += h;
                b[i] -= h;
                let ta = Tensor::from_vec(a, shape, &Device::Cpu).unwrap();
                let tb = Tensor::from_vec(b, shape, &Device::Cpu).unwrap();
                (f(&ta) - f(&tb)) / (2.0 * h)
            })
            .collect()
    }

    #[test]
    fn layer_norm_gradients_match_finite_differences() {
        let xs = vec![0.3f32, -1.2, 2.0, 0.7, 1.1, -0.4, 0.0, 0.9];
        let weights = Tensor::new(&[0.5f32, -1.0, 2.0, 0.25], &Device::Cpu).unwrap();
        let gamma = Var::from_vec(vec![1.5f32, 0.5, 1.0, 2.0], 4, &Device::Cpu).unwrap();
        let f = |x: &Tensor| -> Tensor {
            layer_norm(x, Some(gamma.as_tensor()), None, 1e-5)
                .unwrap()
                .broadcast_mul(&weights)
                .unwrap()
                .sum_all()
                .unwrap()
        };
        let x = Var::from_vec(xs.clone(), (2, 4), &Device::Cpu).unwrap();
        let grads = f(x.as_tensor()).backward().unwrap();
        let analytic = grads
            .get(x.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let numeric = numeric_grad(&|t| f(t).to_scalar::<f32>().unwrap(), &xs, (2, 4));
        for (a, n) in analytic.iter().zip(&numeric) {
            assert!((a - n).abs() < 2e-2, "{analytic:?} vs {numeric:?}");
        }
        // The affine weight receives a gradient too (the trap: fused layer_norm gives none).
        let g = grads
            .get(gamma.as_tensor())
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(g > 0.0);
    }

    #[test]
    fn fused_log_sigmoid_equals_the_composition_and_its_derivative() {
        let dev = Device::Cpu;
        // Large |x| on both sides (the stable form), zero, and a [1, 40000] row that takes the
        // parallel path.
        let small = vec![-40.0f32, -3.5, -0.2, 0.0, 0.2, 3.5, 40.0, 1e-4];
        let large: Vec<f32> = (0..40_000)
            .map(|i| ((i * 37 % 1001) as f32 - 500.0) / 60.0)
            .collect();
        for xs in [small, large] {
            let n = xs.len();
            let x = Var::from_vec(xs.clone(), (1, n), &dev).unwrap();
            let fused = log_sigmoid(x.as_tensor()).unwrap();
            let t = x.as_tensor();
            let composed = (t.neg().unwrap().relu().unwrap().neg().unwrap()
                - (t.abs().unwrap().neg().unwrap().exp().unwrap() + 1.0)
                    .unwrap()
                    .log()
                    .unwrap())
            .unwrap();
            assert_eq!(
                fused.to_vec2::<f32>().unwrap(),
                composed.to_vec2::<f32>().unwrap(),
                "same f32 steps, same values"
            );
            // d/dx log sigmoid(x) = 1 / (1 + e^x), through autograd, against f64.
            let grads = fused.sum_all().unwrap().backward().unwrap();
            let g = grads.get(t).unwrap().to_vec2::<f32>().unwrap();
            for (gi, &xi) in g[0].iter().zip(&xs) {
                let want = 1.0 / (1.0 + (xi as f64).exp());
                assert!((*gi as f64 - want).abs() < 1e-6, "x {xi}: {gi} vs {want}");
            }
        }
    }

    #[test]
    fn linear_computes_only_the_gradients_that_are_needed() {
        let dev = Device::Cpu;
        // Irregular values so that every product term matters; 3 cells, 5 inputs, 4 outputs.
        let xs: Vec<f32> = (0..15).map(|i| ((i * 7 % 11) as f32 - 5.0) / 3.0).collect();
        let ws: Vec<f32> = (0..20).map(|i| ((i * 5 % 13) as f32 - 6.0) / 7.0).collect();
        let weights_out = Tensor::new(&[1.0f32, -2.0, 0.5, 3.0], &dev).unwrap();
        let x = Tensor::from_vec(xs.clone(), (3, 5), &dev).unwrap();
        let w = Var::from_vec(ws.clone(), (4, 5), &dev).unwrap();
        let b = Var::from_vec(vec![0.1f32, -0.2, 0.3, 0.0], 4, &dev).unwrap();

        // The reference: candle-nn's Linear, whose backward also differentiates x.
        let plain = candle_nn::Linear::new(w.as_tensor().clone(), Some(b.as_tensor().clone()));
        let y_plain = candle_core::Module::forward(&plain, &x).unwrap();
        let y = linear(&x, w.as_tensor(), Some(b.as_tensor())).unwrap();
        assert_eq!(
            y.to_vec2::<f32>().unwrap(),
            y_plain.to_vec2::<f32>().unwrap(),
            "the forward is the same gemm call"
        );
        let loss = |y: &Tensor| y.broadcast_mul(&weights_out).unwrap().sum_all().unwrap();
        let g_plain = loss(&y_plain).backward().unwrap();
        let g = loss(&y).backward().unwrap();
        let grad_of = |grads: &candle_core::backprop::GradStore, v: &Var| -> Vec<f32> {
            let t = grads.get(v).unwrap();
            t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        for v in [&w, &b] {
            let (a, r) = (grad_of(&g, v), grad_of(&g_plain, v));
            for (a, r) in a.iter().zip(&r) {
                assert!((a - r).abs() < 1e-5, "{a} vs {r}");
            }
        }
        // dW[o, i] = sum over cells of weights_out[o] * x[c, i], computed by hand.
        let dw = g.get(&w).unwrap().to_vec2::<f32>().unwrap();
        let out = [1.0f32, -2.0, 0.5, 3.0];
        for (o, row) in dw.iter().enumerate() {
            for (i, &d) in row.iter().enumerate() {
                let expected: f32 = (0..3).map(|c| out[o] * xs[c * 5 + i]).sum();
                assert!((d - expected).abs() < 1e-5);
            }
        }
        assert!(
            g.get(&x).is_none(),
            "no gradient is computed for the constant input"
        );
        assert!(g_plain.get(&x).is_some(), "candle's matmul computes one");

        // A tracked input gets its gradient, dx = grad W, equal to autograd's and to a hand
        // computation; the weight's gradient is unchanged.
        let xv = Var::from_vec(xs, (3, 5), &dev).unwrap();
        let y_tracked = linear(xv.as_tensor(), w.as_tensor(), Some(b.as_tensor())).unwrap();
        let y_plain = candle_core::Module::forward(&plain, xv.as_tensor()).unwrap();
        assert_eq!(
            y_tracked.to_vec2::<f32>().unwrap(),
            y_plain.to_vec2::<f32>().unwrap()
        );
        let g = loss(&y_tracked).backward().unwrap();
        let g_plain = loss(&y_plain).backward().unwrap();
        for v in [&xv, &w, &b] {
            let (a, r) = (grad_of(&g, v), grad_of(&g_plain, v));
            assert_eq!(a.len(), r.len());
            for (a, r) in a.iter().zip(&r) {
                assert!((a - r).abs() < 1e-5, "{a} vs {r}");
            }
        }
        let dx = g.get(&xv).unwrap().to_vec2::<f32>().unwrap();
        for (c, row) in dx.iter().enumerate() {
            for (i, &d) in row.iter().enumerate() {
                // dx[c, i] = sum over outputs of weights_out[o] * W[o, i].
                let expected: f32 = (0..4).map(|o| out[o] * ws[o * 5 + i]).sum();
                assert!((d - expected).abs() < 1e-5, "cell {c}: {d} vs {expected}");
            }
        }

        // A constant weight (attribution through a trained network): only dx.
        let wc = w.as_tensor().detach();
        let g = loss(&linear(xv.as_tensor(), &wc, None).unwrap())
            .backward()
            .unwrap();
        assert!(g.get(&xv).is_some() && g.get(&wc).is_none());
    }

    #[test]
    fn softmax_rows_sum_to_one_and_pass_gradients() {
        let x = Var::from_vec(vec![1f32, 2.0, 3.0, -1.0, 0.0, 1.0], (2, 3), &Device::Cpu).unwrap();
        let s = softmax(x.as_tensor()).unwrap();
        for row in s.to_vec2::<f32>().unwrap() {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        let w = Tensor::new(&[[1f32, 0.0, 0.0], [0.0, 0.0, 1.0]], &Device::Cpu).unwrap();
        let grads = (s * w).unwrap().sum_all().unwrap().backward().unwrap();
        let g = grads
            .get(x.as_tensor())
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(g > 0.0);
    }

    #[test]
    fn fused_layer_norm_matches_the_composed_one_in_value_and_gradient() {
        use candle_core::Device;
        let dev = Device::Cpu;
        let xs: Vec<f32> = (0..3 * 70)
            .map(|i| ((i * 37 % 101) as f32 / 13.0).sin() * 3.0)
            .collect();
        let w: Vec<f32> = (0..3 * 70)
            .map(|i| ((i * 11 % 17) as f32) / 7.0 - 1.0)
            .collect();
        let weights = Tensor::from_vec(w, (3, 70), &dev).unwrap();
        let gv: Vec<f32> = (0..70).map(|j| 0.5 + j as f32 / 70.0).collect();
        let bv: Vec<f32> = (0..70).map(|j| j as f32 / 140.0 - 0.25).collect();
        for affine in [true, false] {
            let run = |fused: bool| {
                let x = Var::from_vec(xs.clone(), (3, 70), &dev).unwrap();
                let g = Var::from_vec(gv.clone(), 70, &dev).unwrap();
                let b = Var::from_vec(bv.clone(), 70, &dev).unwrap();
                let (gr, br) = if affine {
                    (Some(g.as_tensor()), Some(b.as_tensor()))
                } else {
                    (None, None)
                };
                let y = if fused {
                    layer_norm(x.as_tensor(), gr, br, 1e-5).unwrap()
                } else {
                    layer_norm_composed(x.as_tensor(), gr, br, 1e-5).unwrap()
                };
                let grads = (&y * &weights)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let mut out = vec![flat(&y), flat(grads.get(x.as_tensor()).unwrap())];
                if affine {
                    out.push(flat(grads.get(g.as_tensor()).unwrap()));
                    out.push(flat(grads.get(b.as_tensor()).unwrap()));
                }
                out
            };
            for (f, c) in run(true).iter().zip(run(false)) {
                for (a, b) in f.iter().zip(&c) {
                    assert!((a - b).abs() < 1e-4, "fused {a} vs composed {b}");
                }
            }
        }
    }

    /// [`backward`] must return exactly what candle's own `backward` returns, for every kind of
    /// parameter use: a weight used by two `linear` calls (CICL's two views; its `[600, 500]`
    /// gradient takes the parallel in-place sum), a derived weight (`w * 1`, not a variable,
    /// left to candle), a bias and a tracked input — bit for bit, since the gemm calls and the
    /// additions are the same — and a weight also in a penalty term (candle's part and the
    /// deferred part are added, in another order: equal to rounding).
    /// After the pass the deferral is off: a plain `backward` still yields weight gradients.
    #[test]
    fn backward_defers_weight_gradients_and_returns_the_same_values() {
        let dev = Device::Cpu;
        let values = |n: usize, a: usize, b: usize| -> Vec<f32> {
            (0..n)
                .map(|i| ((i * a % b) as f32 - (b / 2) as f32) / b as f32)
                .collect()
        };
        let (cells, genes, hidden) = (48, 500, 600);
        let x1 = Var::from_vec(values(cells * genes, 7, 101), (cells, genes), &dev).unwrap();
        let x2 = Tensor::from_vec(values(cells * genes, 11, 97), (cells, genes), &dev).unwrap();
        let w1 = Var::from_vec(values(hidden * genes, 13, 89), (hidden, genes), &dev).unwrap();
        let b1 = Var::from_vec(values(hidden, 3, 17), hidden, &dev).unwrap();
        let w2 = Var::from_vec(values(8 * hidden, 5, 23), (8, hidden), &dev).unwrap();
        let w3 = Var::from_vec(values(4 * 8, 3, 7), (4, 8), &dev).unwrap();
        let loss = || -> Tensor {
            let view = |x: &Tensor| -> Tensor {
                let h = linear(x, w1.as_tensor(), Some(b1.as_tensor()))
                    .unwrap()
                    .relu()
                    .unwrap();
                let z = linear(&h, w2.as_tensor(), None).unwrap();
                let w3_derived = (w3.as_tensor() * 1.0).unwrap();
                linear(&z, &w3_derived, None).unwrap()
            };
            let a = view(x1.as_tensor());
            let b = view(&x2);
            let penalty = (w2.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.01).unwrap();
            ((a - b).unwrap().sqr().unwrap().sum_all().unwrap() + penalty).unwrap()
        };
        let reference = loss().backward().unwrap();
        DEFERRED_PRODUCTS.with(|c| c.set(0));
        let deferred = backward(&loss()).unwrap();
        // w1 and w2 twice each (two views); w3's derived copy is left to candle.
        assert_eq!(DEFERRED_PRODUCTS.with(|c| c.get()), 4);
        for (name, v) in [
            ("w1", &w1),
            ("b1", &b1),
            ("w2", &w2),
            ("w3", &w3),
            ("x1", &x1),
        ] {
            let get = |g: &candle_core::backprop::GradStore| -> Vec<f32> {
                g.get(v.as_tensor())
                    .unwrap_or_else(|| panic!("no gradient for {name}"))
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
            };
            let (r, d) = (get(&reference), get(&deferred));
            assert!(
                r.iter().any(|&v| v != 0.0),
                "{name}: a gradient that matters"
            );
            assert_eq!(r.len(), d.len());
            if name == "w2" {
                // Three terms, summed in another order: candle adds them as its graph walk
                // meets them, `backward` adds the penalty's part last; the two views' parts
                // nearly cancel, so the rounding is that of their size (~1e-6 relative).
                for (a, b) in r.iter().zip(&d) {
                    assert!(
                        (a - b).abs() <= 1e-5 * a.abs().max(1.0),
                        "{name}: {a} vs {b}"
                    );
                }
            } else {
                assert_eq!(r, d, "{name}: deferred differs from candle's");
            }
        }
        let again = loss().backward().unwrap();
        assert_eq!(
            DEFERRED_PRODUCTS.with(|c| c.get()),
            4,
            "no deferral outside the pass"
        );
        assert!(
            again.get(w1.as_tensor()).is_some(),
            "the deferral ended with the pass"
        );
        DEFERRED_WEIGHT_GRADIENTS.with(|d| assert!(d.borrow().is_none()));
    }

    /// Inverted dropout: about `1 - p` of the entries survive, scaled by `1 / (1 - p)` (so the
    /// expected value is `x`); the same seed gives the same mask; the gradient is the mask.
    #[test]
    fn dropout_keeps_the_expected_fraction_scaled_and_is_seeded() {
        use rand::SeedableRng;
        let n = 20_000;
        let x = Var::from_vec(vec![1.0f32; n], n, &Device::Cpu).unwrap();
        let draw = |seed: u64| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            dropout(x.as_tensor(), 0.5, &mut rng).unwrap()
        };
        let y = draw(7);
        let values = y.to_vec1::<f32>().unwrap();
        let kept = values.iter().filter(|&&v| v != 0.0).count();
        // Binomial(20000, 0.5): sd 71, so +-500 is seven standard deviations.
        assert!((kept as i64 - 10_000).abs() < 500, "kept {kept}");
        assert!(values.iter().all(|&v| v == 0.0 || v == 2.0));
        assert_eq!(values, draw(7).to_vec1::<f32>().unwrap());
        assert_ne!(values, draw(8).to_vec1::<f32>().unwrap());
        let grads = y.sum_all().unwrap().backward().unwrap();
        let g = grads.get(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(g, values, "d(sum(mask * x))/dx = mask");
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let same = dropout(x.as_tensor(), 0.0, &mut rng).unwrap();
        assert_eq!(same.to_vec1::<f32>().unwrap(), vec![1.0f32; n]);
    }
}

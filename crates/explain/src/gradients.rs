//! Gradient-based attributions through candle's autograd, for any
//! [`DifferentiableClassifier`]: plain input gradients, gradient x input, and integrated
//! gradients (Sundararajan et al. 2017) with the trapezoid rule.

use candle_core::{DType, Device, Tensor, Var};
use cellident_io::CsrMatrix;
use cellident_tensor::batch::dense_rows;
use cellident_tensor::{DenseMatrix, DifferentiableClassifier, Result, TensorError, ensure_param};

use crate::deeplift::{Attributions, Reference};

/// `d logit_{t_i}(x_i) / d x_i` for a dense batch (`[batch, genes]`), and the explained logits.
fn gradient_batch(
    model: &dyn DifferentiableClassifier,
    x: &Tensor,
    targets: &[u32],
) -> Result<(Tensor, Vec<f32>)> {
    let var = Var::from_tensor(&x.to_dtype(DType::F32)?)?;
    let logits = model.logits(var.as_tensor())?;
    let (b, classes) = logits.dims2()?;
    ensure_param(
        targets.iter().all(|&t| (t as usize) < classes),
        "targets",
        || format!("a target class is not below the model's {classes} classes"),
    )?;
    let mut onehot = vec![0f32; b * classes];
    for (i, &t) in targets.iter().enumerate() {
        onehot[i * classes + t as usize] = 1.0;
    }
    let mask = Tensor::from_vec(onehot, (b, classes), x.device())?;
    // Rows are independent, so the gradient of the sum is every row's own gradient.
    let picked = (logits * mask)?;
    let values = picked.sum(1)?.to_vec1::<f32>()?;
    let grads = picked.sum_all()?.backward()?;
    let g = grads.get(&var).ok_or_else(|| TensorError::InvalidParam {
        name: "model",
        message: "its logits do not depend on the input".into(),
    })?;
    Ok((g.clone(), values))
}

fn check_targets(x: &CsrMatrix, targets: &[u32]) -> Result<()> {
    ensure_param(targets.len() == x.n_rows(), "targets", || {
        format!("{} targets for {} cells", targets.len(), x.n_rows())
    })
}

/// Input gradients of each cell's target logit, `[cells, genes]`.
pub fn input_gradients(
    model: &dyn DifferentiableClassifier,
    x: &CsrMatrix,
    targets: &[u32],
    device: &Device,
) -> Result<DenseMatrix> {
    check_targets(x, targets)?;
    let mut out = Vec::with_capacity(x.n_rows() * x.n_cols());
    let rows: Vec<usize> = (0..x.n_rows()).collect();
    for chunk in rows.chunks(crate::CHUNK) {
        let xb = dense_rows(x, chunk, device)?;
        let t: Vec<u32> = chunk.iter().map(|&i| targets[i]).collect();
        let (g, _) = gradient_batch(model, &xb, &t)?;
        out.extend(g.flatten_all()?.to_vec1::<f32>()?);
    }
    DenseMatrix::new(x.n_rows(), x.n_cols(), out)
}

/// Gradient x input: `C_i = x_i * d logit / d x_i` (DeepLIFT with a zero reference on a
/// bias-free ReLU network; cheap, but it saturates). `delta` holds the explained logits.
pub fn gradient_x_input(
    model: &dyn DifferentiableClassifier,
    x: &CsrMatrix,
    targets: &[u32],
    device: &Device,
) -> Result<Attributions> {
    check_targets(x, targets)?;
    let mut scores = Vec::with_capacity(x.n_rows() * x.n_cols());
    let mut delta = Vec::with_capacity(x.n_rows());
    let rows: Vec<usize> = (0..x.n_rows()).collect();
    for chunk in rows.chunks(crate::CHUNK) {
        let xb = dense_rows(x, chunk, device)?;
        let t: Vec<u32> = chunk.iter().map(|&i| targets[i]).collect();
        let (g, v) = gradient_batch(model, &xb, &t)?;
        scores.extend((g * xb)?.flatten_all()?.to_vec1::<f32>()?);
        delta.extend(v);
    }
    Ok(Attributions {
        scores: DenseMatrix::new(x.n_rows(), x.n_cols(), scores)?,
        delta,
    })
}

/// Integrated gradients with `steps` trapezoid intervals along the straight path from the
/// reference to each cell: `IG_i = (x_i - x0_i) * mean_path d logit / d x_i`. Completeness:
/// the row sums approach `delta = logit(x) - logit(x0)` as `steps` grows. All `steps + 1` path
/// points of a group of cells go through the model as one batch. With several reference
/// profiles the attributions are averaged over them.
pub fn integrated_gradients(
    model: &dyn DifferentiableClassifier,
    x: &CsrMatrix,
    targets: &[u32],
    reference: &Reference,
    steps: usize,
    device: &Device,
) -> Result<Attributions> {
    check_targets(x, targets)?;
    ensure_param(steps >= 1, "steps", || "must be at least 1".into())?;
    let genes = x.n_cols();
    let refs = reference.rows(genes)?;
    // Trapezoid weights over alpha_k = k / steps.
    let weights: Vec<f32> = (0..=steps)
        .map(|k| {
            if k == 0 || k == steps {
                0.5 / steps as f32
            } else {
                1.0 / steps as f32
            }
        })
        .collect();
    let cells_per_pass = (crate::CHUNK / (steps + 1)).max(1);
    let share = 1.0 / refs.len() as f32;
    let mut scores = vec![0f32; x.n_rows() * genes];
    let mut delta = vec![0f32; x.n_rows()];
    let rows: Vec<usize> = (0..x.n_rows()).collect();
    for r in &refs {
        let x0 = Tensor::from_vec(r.clone(), (1, genes), device)?;
        for chunk in rows.chunks(cells_per_pass) {
            let b = chunk.len();
            let xb = dense_rows(x, chunk, device)?;
            let diff = xb.broadcast_sub(&x0)?;
            // [(steps + 1) * b, genes]: path point k of cell i at row k * b + i.
            let path = (0..=steps)
                .map(|k| x0.broadcast_add(&(&diff * (k as f64 / steps as f64))?))
                .collect::<candle_core::Result<Vec<_>>>()?;
            let path = Tensor::cat(&path, 0)?;
            let t: Vec<u32> = (0..=steps)
                .flat_map(|_| chunk.iter().map(|&i| targets[i]))
                .collect();
            let (g, v) = gradient_batch(model, &path, &t)?;
            let w = Tensor::from_vec(weights.clone(), (steps + 1, 1, 1), device)?;
            let avg = g
                .reshape((steps + 1, b, genes))?
                .broadcast_mul(&w)?
                .sum(0)?;
            let ig = (avg * diff)?.flatten_all()?.to_vec1::<f32>()?;
            let start = chunk[0];
            for (o, val) in scores[start * genes..(start + b) * genes]
                .iter_mut()
                .zip(ig)
            {
                *o += val * share;
            }
            for i in 0..b {
                delta[start + i] += (v[steps * b + i] - v[i]) * share;
            }
        }
    }
    Ok(Attributions {
        scores: DenseMatrix::new(x.n_rows(), genes, scores)?,
        delta,
    })
}

//! DeepLIFT with the Rescale rule (methods.md §4.4).
//!
//! Forward the input `x` and the reference `x0` through the network, keeping each
//! non-linearity's two inputs `z`, `z0`. Back-propagate multipliers from the explained logit:
//! a dense layer multiplies by `W`, an affine map by its scale, a gene selection scatters back
//! to all genes, and a non-linearity by its secant slope `(f(z) - f(z0)) / (z - z0)` (the
//! derivative at the midpoint when `|z - z0|` is tiny, where the secant would lose its digits).
//! The contributions are `C_i = m_i (x_i - x0_i)`, and `sum_i C_i = logit(x) - logit(x0)`
//! (summation-to-delta) holds exactly in exact arithmetic.
//!
//! Cost: one forward pass of the cells (the reference is one row), and one backward sweep of
//! matrix products without weight gradients; see benches/ for the measured ratio to a
//! forward + backward pass.

use candle_core::{DType, Device, Tensor};
use cellident_io::CsrMatrix;
use cellident_tensor::batch::dense_rows;
use cellident_tensor::{
    Activation, DenseMatrix, FeedForward, FeedForwardLayer, FeedForwardNet, Result, ensure_param,
};

/// The reference input `x0` that attributions are measured against.
#[derive(Debug, Clone, PartialEq)]
pub enum Reference {
    /// All genes at zero (after the model's own input transform: "no expression").
    Zeros,
    /// One profile `[genes]` (e.g. the training mean).
    Profile(Vec<f32>),
    /// Several profiles `[k, genes]`; attributions are averaged over them (each reference gives
    /// its own summation-to-delta, so the mean does too).
    Profiles(DenseMatrix),
}

impl Reference {
    /// The mean profile of `x` (`[cells, genes]`).
    pub fn mean_of(x: &CsrMatrix) -> Reference {
        let mut sum = vec![0f64; x.n_cols()];
        for (&g, &v) in x.indices().iter().zip(x.data()) {
            sum[g as usize] += v as f64;
        }
        let n = x.n_rows().max(1) as f64;
        Reference::Profile(sum.iter().map(|s| (s / n) as f32).collect())
    }

    /// A short description for reports.
    pub fn describe(&self) -> String {
        match self {
            Reference::Zeros => "zeros".into(),
            Reference::Profile(_) => "one profile (mean of the training cells)".into(),
            Reference::Profiles(m) => format!("mean over {} reference profiles", m.n_rows),
        }
    }

    /// The reference profiles, each checked to have `genes` values.
    pub(crate) fn rows(&self, genes: usize) -> Result<Vec<Vec<f32>>> {
        let rows = match self {
            Reference::Zeros => vec![vec![0f32; genes]],
            Reference::Profile(p) => vec![p.clone()],
            Reference::Profiles(m) => (0..m.n_rows).map(|i| m.row(i).to_vec()).collect(),
        };
        ensure_param(
            !rows.is_empty() && rows.iter().all(|r| r.len() == genes),
            "reference",
            || format!("reference profiles must have {genes} genes, one or more rows"),
        )?;
        Ok(rows)
    }
}

/// Attributions of a batch of cells.
#[derive(Debug, Clone, PartialEq)]
pub struct Attributions {
    /// Contribution of each gene to each cell's explained logit, `[cells, genes]`.
    pub scores: DenseMatrix,
    /// `logit(x) - logit(x0)` of each cell's explained class (averaged over references and
    /// ensemble members, as the scores are); equals the row sums of `scores` up to rounding.
    pub delta: Vec<f32>,
}

/// DeepLIFT-Rescale contributions of every gene to the logit of class `targets[i]` of cell `i`,
/// for the cells of `x` (`[cells, genes]`, the model's input space).
pub fn deeplift(
    model: &dyn FeedForward,
    x: &CsrMatrix,
    targets: &[u32],
    reference: &Reference,
    device: &Device,
) -> Result<Attributions> {
    ensure_param(targets.len() == x.n_rows(), "targets", || {
        format!("{} targets for {} cells", targets.len(), x.n_rows())
    })?;
    let nets = model.networks()?;
    ensure_param(!nets.is_empty(), "model", || "has no networks".into())?;
    let genes = x.n_cols();
    let refs = row_tensors(&reference.rows(genes)?, device)?;
    let weight = 1.0 / (nets.len() * refs.len()) as f32;
    let mut scores = vec![0f32; x.n_rows() * genes];
    let mut delta = vec![0f32; x.n_rows()];
    let rows: Vec<usize> = (0..x.n_rows()).collect();
    for chunk in rows.chunks(crate::CHUNK) {
        let xb = dense_rows(x, chunk, device)?;
        let t: Vec<u32> = chunk.iter().map(|&i| targets[i]).collect();
        let mut acc = vec![0f32; chunk.len() * genes];
        let mut acc_delta = vec![0f32; chunk.len()];
        for net in &nets {
            for r in &refs {
                let (c, d) = deeplift_chunk(net, &xb, r, &t)?;
                for (a, v) in acc.iter_mut().zip(c) {
                    *a += v * weight;
                }
                for (a, v) in acc_delta.iter_mut().zip(d) {
                    *a += v * weight;
                }
            }
        }
        let start = chunk[0];
        scores[start * genes..(start + chunk.len()) * genes].copy_from_slice(&acc);
        delta[start..start + chunk.len()].copy_from_slice(&acc_delta);
    }
    Ok(Attributions {
        scores: DenseMatrix::new(x.n_rows(), genes, scores)?,
        delta,
    })
}

fn row_tensors(rows: &[Vec<f32>], device: &Device) -> Result<Vec<Tensor>> {
    rows.iter()
        .map(|r| Ok(Tensor::from_vec(r.clone(), (1, r.len()), device)?))
        .collect()
}

/// One network, one reference row (`[1, genes]`), one chunk: (contributions, deltas).
fn deeplift_chunk(
    net: &FeedForwardNet,
    x: &Tensor,
    x0: &Tensor,
    targets: &[u32],
) -> Result<(Vec<f32>, Vec<f32>)> {
    let (b, _) = x.dims2()?;
    // Forward both, keeping the inputs of every layer.
    let (mut h, mut h0) = (x.to_dtype(DType::F32)?, x0.to_dtype(DType::F32)?);
    let mut inputs = Vec::with_capacity(net.layers.len());
    for l in &net.layers {
        let (nh, nh0) = (l.forward(&h)?, l.forward(&h0)?);
        inputs.push((h, h0));
        h = nh;
        h0 = nh0;
    }
    let (_, classes) = h.dims2()?;
    ensure_param(
        targets.iter().all(|&t| (t as usize) < classes),
        "targets",
        || format!("a target class is not below the model's {classes} classes"),
    )?;
    let logits = h.to_vec2::<f32>()?;
    let logits0 = h0.flatten_all()?.to_vec1::<f32>()?;
    let delta: Vec<f32> = targets
        .iter()
        .enumerate()
        .map(|(i, &t)| logits[i][t as usize] - logits0[t as usize])
        .collect();
    let mut onehot = vec![0f32; b * classes];
    for (i, &t) in targets.iter().enumerate() {
        onehot[i * classes + t as usize] = 1.0;
    }
    let mut m = Tensor::from_vec(onehot, (b, classes), x.device())?;
    for (l, (z, z0)) in net.layers.iter().zip(&inputs).rev() {
        m = match l {
            FeedForwardLayer::Linear { weight, .. } => m.matmul(weight)?,
            FeedForwardLayer::Affine { scale, .. } => m.broadcast_mul(scale)?,
            FeedForwardLayer::Select { indices, n_inputs } => {
                Tensor::zeros((b, *n_inputs), DType::F32, x.device())?.index_add(indices, &m, 1)?
            }
            FeedForwardLayer::Activation(a) => (m * secant_slopes(*a, z, z0)?)?,
        };
    }
    let c = (m * x.broadcast_sub(x0)?)?;
    Ok((c.flatten_all()?.to_vec1::<f32>()?, delta))
}

/// `(f(z) - f(z0)) / (z - z0)` element-wise (`z0` is one row, broadcast), in f64; the derivative
/// at the midpoint when `|z - z0|` is below 1e-4, where it is the secant to second order and the
/// f32 difference quotient would not be.
fn secant_slopes(a: Activation, z: &Tensor, z0: &Tensor) -> Result<Tensor> {
    let (b, w) = z.dims2()?;
    let zs = z.flatten_all()?.to_vec1::<f32>()?;
    let z0s = z0.flatten_all()?.to_vec1::<f32>()?;
    let per_row = z0s.len() == w;
    let mut out = vec![0f32; b * w];
    for i in 0..b {
        for j in 0..w {
            let u = zs[i * w + j] as f64;
            let u0 = if per_row { z0s[j] } else { z0s[i * w + j] } as f64;
            let d = u - u0;
            out[i * w + j] = if d.abs() > 1e-4 {
                ((a.value(u) - a.value(u0)) / d) as f32
            } else {
                a.derivative(0.5 * (u + u0)) as f32
            };
        }
    }
    Ok(Tensor::from_vec(out, (b, w), z.device())?)
}

//! Feed-forward networks described layer by layer, so that layer-wise attribution (DeepLIFT in
//! cellident-explain) can walk any model built from them: gene selection, per-gene affine
//! maps (standardisation), dense layers and element-wise non-linearities.

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// An element-wise non-linearity.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Relu,
    /// `max(x, 0) + slope * min(x, 0)`.
    LeakyRelu(f64),
    Tanh,
    Sigmoid,
    /// `log(sigmoid(x))` (CIC's activation).
    LogSigmoid,
    /// `log(1 + exp(x))`.
    Softplus,
}

impl Activation {
    /// Applies the function with differentiable candle ops (every op used has a backward).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::Relu => x.relu()?,
            Activation::LeakyRelu(s) => (x.relu()? - (x.neg()?.relu()? * *s)?)?,
            Activation::Tanh => x.tanh()?,
            Activation::Sigmoid => (x.neg()?.exp()? + 1.0)?.recip()?,
            // log sigmoid(x) = min(x, 0) - log(1 + exp(-|x|)), stable for large |x|; fused on
            // the CPU.
            Activation::LogSigmoid => crate::nn::log_sigmoid(x)?,
            // softplus(x) = max(x, 0) + log(1 + exp(-|x|)).
            Activation::Softplus => (x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?)?,
        })
    }

    /// The function at one point, in f64 (for DeepLIFT's secant slopes).
    pub fn value(&self, x: f64) -> f64 {
        match *self {
            Activation::Relu => x.max(0.0),
            Activation::LeakyRelu(s) => {
                if x >= 0.0 {
                    x
                } else {
                    s * x
                }
            }
            Activation::Tanh => x.tanh(),
            Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Activation::LogSigmoid => x.min(0.0) - (-x.abs()).exp().ln_1p(),
            Activation::Softplus => x.max(0.0) + (-x.abs()).exp().ln_1p(),
        }
    }

    /// The derivative at one point, in f64 (ReLU's at 0 is taken as 0, as autograd does).
    pub fn derivative(&self, x: f64) -> f64 {
        match *self {
            Activation::Relu => {
                if x > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Activation::LeakyRelu(s) => {
                if x > 0.0 {
                    1.0
                } else {
                    s
                }
            }
            Activation::Tanh => 1.0 - x.tanh().powi(2),
            Activation::Sigmoid => {
                let s = 1.0 / (1.0 + (-x).exp());
                s * (1.0 - s)
            }
            Activation::LogSigmoid => 1.0 / (1.0 + x.exp()),
            Activation::Softplus => 1.0 / (1.0 + (-x).exp()),
        }
    }
}

/// One layer, as attribution sees it.
#[derive(Debug, Clone)]
pub enum FeedForwardLayer {
    /// Keeps input columns `indices` (`u32`, `[k]`) of `n_inputs`: `[batch, n_inputs] -> [batch, k]`.
    Select { indices: Tensor, n_inputs: usize },
    /// Per-column `x * scale + shift` (`[features]` each), e.g. standardisation.
    Affine { scale: Tensor, shift: Tensor },
    /// `x W^T + b`, weight `[out, in]`, bias `[out]`.
    Linear {
        weight: Tensor,
        bias: Option<Tensor>,
    },
    /// An element-wise non-linearity.
    Activation(Activation),
}

impl FeedForwardLayer {
    /// The layer's output for `x` (`[batch, in]`).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            FeedForwardLayer::Select { indices, .. } => x.index_select(indices, 1)?,
            FeedForwardLayer::Affine { scale, shift } => {
                x.broadcast_mul(scale)?.broadcast_add(shift)?
            }
            FeedForwardLayer::Linear { weight, bias } => {
                crate::nn::linear(x, weight, bias.as_ref())?
            }
            FeedForwardLayer::Activation(a) => a.forward(x)?,
        })
    }
}

/// A chain of layers from the input genes to pre-softmax logits.
#[derive(Debug, Clone, Default)]
pub struct FeedForwardNet {
    pub layers: Vec<FeedForwardLayer>,
}

impl FeedForwardNet {
    /// Logits `[batch, classes]` of `x` (`[batch, genes]`, f32).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.to_dtype(DType::F32)?;
        for l in &self.layers {
            h = l.forward(&h)?;
        }
        Ok(h)
    }
}

/// A classifier whose logits are the mean of the logits of one or more [`FeedForwardNet`]s
/// (one for a single network, several for an ensemble). DeepLIFT explains any such model.
pub trait FeedForward {
    /// The member networks; the model's logits are their mean.
    fn networks(&self) -> Result<Vec<FeedForwardNet>>;
}

/// Mean logits of several networks (`[batch, classes]`).
pub fn mean_logits(nets: &[FeedForwardNet], x: &Tensor) -> Result<Tensor> {
    crate::error::ensure_param(!nets.is_empty(), "networks", || {
        "a feed-forward model needs at least one network".into()
    })?;
    let mut sum = nets[0].forward(x)?;
    for n in &nets[1..] {
        sum = (sum + n.forward(x)?)?;
    }
    Ok((sum / nets.len() as f64)?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use candle_core::Device;

    const ALL: [Activation; 6] = [
        Activation::Relu,
        Activation::LeakyRelu(0.01),
        Activation::Tanh,
        Activation::Sigmoid,
        Activation::LogSigmoid,
        Activation::Softplus,
    ];

    #[test]
    fn tensor_and_scalar_forms_agree_and_derivatives_match_autograd() {
        let xs: Vec<f32> = vec![-30.0, -3.0, -0.7, -0.1, 0.2, 0.9, 4.0, 30.0];
        for a in ALL {
            let v = candle_core::Var::from_vec(xs.clone(), xs.len(), &Device::Cpu).unwrap();
            let y = a.forward(v.as_tensor()).unwrap();
            let grads = y.sum_all().unwrap().backward().unwrap();
            let dy = grads.get(&v).unwrap().to_vec1::<f32>().unwrap();
            let y = y.to_vec1::<f32>().unwrap();
            for (i, &x) in xs.iter().enumerate() {
                let x = x as f64;
                assert!((y[i] as f64 - a.value(x)).abs() < 1e-5, "{a:?}({x})");
                assert!(
                    (dy[i] as f64 - a.derivative(x)).abs() < 1e-5,
                    "{a:?}'({x}): {} vs {}",
                    dy[i],
                    a.derivative(x)
                );
            }
        }
    }
}

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

    /// The same function in fewer passes over the batch, for prediction.
    ///
    /// A leading [`FeedForwardLayer::Select`] comes back as column indices, so that the caller
    /// picks those columns from its sparse input before densifying (`None` when the network
    /// keeps every input column in order, or starts with another layer); and every `Affine`
    /// directly followed by a `Linear` is folded into that linear layer
    /// (`x (W diag(scale))^T + (b + W shift)`). Why: at prediction time the selection and the
    /// standardisation cost three more passes over each densified `[batch, genes]` chunk;
    /// without them the metadata MLP predicts in about half the time (docs/benchmarks.md).
    /// Outputs equal [`FeedForwardNet::forward`]'s on the selected input up to f32 rounding;
    /// attribution keeps the layer-by-layer form.
    pub fn inference_form(&self) -> Result<(Option<Vec<usize>>, FeedForwardNet)> {
        let mut layers = self.layers.as_slice();
        let mut selection = None;
        if let Some(FeedForwardLayer::Select { indices, n_inputs }) = layers.first() {
            let idx: Vec<usize> = indices
                .to_vec1::<u32>()?
                .into_iter()
                .map(|i| i as usize)
                .collect();
            let identity = idx.len() == *n_inputs && idx.iter().enumerate().all(|(i, &g)| i == g);
            if !identity {
                selection = Some(idx);
            }
            layers = &layers[1..];
        }
        let mut folded = Vec::with_capacity(layers.len());
        let mut i = 0;
        while i < layers.len() {
            match (&layers[i], layers.get(i + 1)) {
                (
                    FeedForwardLayer::Affine { scale, shift },
                    Some(FeedForwardLayer::Linear { weight, bias }),
                ) => {
                    let weight = weight.to_dtype(DType::F32)?;
                    let shift = shift.to_dtype(DType::F32)?;
                    let folded_weight =
                        weight.broadcast_mul(&scale.to_dtype(DType::F32)?.unsqueeze(0)?)?;
                    let mut folded_bias = weight.matmul(&shift.unsqueeze(1)?)?.squeeze(1)?;
                    if let Some(b) = bias {
                        folded_bias = (folded_bias + b.to_dtype(DType::F32)?)?;
                    }
                    folded.push(FeedForwardLayer::Linear {
                        weight: folded_weight.contiguous()?,
                        bias: Some(folded_bias),
                    });
                    i += 2;
                }
                (layer, _) => {
                    folded.push(layer.clone());
                    i += 1;
                }
            }
        }
        Ok((selection, FeedForwardNet { layers: folded }))
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

    /// A small seeded net `select -> affine -> linear -> relu -> affine -> linear`.
    fn small_net(select: Vec<u32>, n_inputs: usize) -> FeedForwardNet {
        let dev = Device::Cpu;
        let k = select.len();
        let wave =
            |n: usize, f: f32| -> Vec<f32> { (0..n).map(|i| (i as f32 * f).sin() * 0.7).collect() };
        FeedForwardNet {
            layers: vec![
                FeedForwardLayer::Select {
                    indices: Tensor::from_vec(select, k, &dev).unwrap(),
                    n_inputs,
                },
                FeedForwardLayer::Affine {
                    scale: Tensor::from_vec(
                        wave(k, 1.3).iter().map(|v| v + 1.0).collect(),
                        k,
                        &dev,
                    )
                    .unwrap(),
                    shift: Tensor::from_vec(wave(k, 0.9), k, &dev).unwrap(),
                },
                FeedForwardLayer::Linear {
                    weight: Tensor::from_vec(wave(5 * k, 0.37), (5, k), &dev).unwrap(),
                    bias: Some(Tensor::from_vec(wave(5, 2.1), 5, &dev).unwrap()),
                },
                FeedForwardLayer::Activation(Activation::Relu),
                FeedForwardLayer::Affine {
                    scale: Tensor::from_vec(wave(5, 0.5), 5, &dev).unwrap(),
                    shift: Tensor::from_vec(wave(5, 0.2), 5, &dev).unwrap(),
                },
                FeedForwardLayer::Linear {
                    weight: Tensor::from_vec(wave(15, 0.77), (3, 5), &dev).unwrap(),
                    bias: None,
                },
            ],
        }
    }

    #[test]
    fn the_inference_form_is_the_same_function() {
        let dev = Device::Cpu;
        let x: Vec<f32> = (0..4 * 6).map(|i| ((i * 7) % 11) as f32 * 0.3).collect();
        let x = Tensor::from_vec(x, (4, 6), &dev).unwrap();
        for select in [vec![0u32, 1, 2, 3, 4, 5], vec![4u32, 0, 2]] {
            let net = small_net(select.clone(), 6);
            let expected = net.forward(&x).unwrap().to_vec2::<f32>().unwrap();
            let (selection, fused) = net.inference_form().unwrap();
            // Both affine maps are folded: only the selection, two linear layers and the ReLU stay.
            assert_eq!(fused.layers.len(), 3);
            let input = match &selection {
                None => {
                    assert_eq!(select.len(), 6, "only the identity selection is dropped");
                    x.clone()
                }
                Some(cols) => {
                    assert_eq!(cols, &[4, 0, 2]);
                    let idx = Tensor::new(select.as_slice(), &dev).unwrap();
                    x.index_select(&idx, 1).unwrap()
                }
            };
            let got = fused.forward(&input).unwrap().to_vec2::<f32>().unwrap();
            for (e, g) in expected.iter().flatten().zip(got.iter().flatten()) {
                assert!((e - g).abs() < 1e-5 * (1.0 + e.abs()), "{e} vs {g}");
            }
        }
    }

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

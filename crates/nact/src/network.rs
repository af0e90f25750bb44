//! The N-ACT networks (methods.md §1.2) and ACTINN.

use candle_core::{D, Tensor};
use candle_nn::Linear;
use cellident_tensor::Result;
use serde::{Deserialize, Serialize};

use crate::layers::{LayerNorm, SeededParams, apply, torch_linear, xavier_linear};

/// Which N-ACT architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum NactVariant {
    /// The released default: two projection blocks (dense G->G + residual + LayerNorm), a shared
    /// pointwise feed-forward block (G->128->G + residual + LayerNorm), a LeakyReLU task head.
    #[default]
    Projection,
    /// Additive (feed-forward) attention followed by a Tanh MLP G->1024->512->256->128->64->C.
    Additive,
}

/// The gene-attention module shared by both variants: `alpha = softmax(W_a x + b)` over genes
/// and `gamma = alpha * x`.
#[derive(Debug, Clone)]
pub struct GeneAttention {
    w: Linear,
    /// While training with a centred attention input: the training mean of `x`, `[1, genes]`;
    /// the logits are then `W_a (x - mean) + b`. `None` otherwise (and after training, when
    /// the mean has been folded into the bias).
    input_center: Option<Tensor>,
}

impl GeneAttention {
    /// Attention weights starting at zero: `alpha` is uniform at initialisation and every
    /// departure from uniform is learned from the labels.
    pub fn zero_init(genes: usize, vb: &SeededParams) -> Result<Self> {
        let w = vb.constant("weight", &[genes, genes], 0.0)?;
        let b = vb.constant("bias", &[genes], 0.01)?;
        Ok(GeneAttention {
            w: Linear::new(w, Some(b)),
            input_center: None,
        })
    }

    pub fn new(genes: usize, vb: &SeededParams) -> Result<Self> {
        Ok(GeneAttention {
            w: xavier_linear(genes, genes, vb)?,
            input_center: None,
        })
    }

    /// Attention weights `[batch, genes]`, each row summing to 1.
    pub fn weights(&self, x: &Tensor) -> Result<Tensor> {
        let logits = match &self.input_center {
            Some(center) => apply(&self.w, &x.broadcast_sub(center)?)?,
            None => apply(&self.w, x)?,
        };
        cellident_tensor::nn::softmax(&logits)
    }

    /// Computes the attention logits from `x - center` (`center`: `[genes]`) until
    /// [`GeneAttention::fold_input_center`]. `W_a (x - c) + b = W_a x + (b - W_a c)`: the same
    /// family of functions, reparametrised so that the weight gradients carry no common mode.
    pub fn set_input_center(&mut self, center: Tensor) -> Result<()> {
        self.input_center = Some(center.unsqueeze(0)?);
        Ok(())
    }

    /// Folds the centre into the bias (`b <- b - W_a c`, written into `bias`, the variable
    /// that backs this layer's bias) and computes logits from `x` again, so that the trained
    /// layer is the plain `softmax(W_a x + b)` of the method.
    pub fn fold_input_center(&mut self, bias: &candle_core::Var) -> Result<()> {
        if let Some(center) = self.input_center.take() {
            let shift = center.matmul(&self.w.weight().t()?)?.squeeze(0)?;
            bias.set(&(bias.as_tensor() - shift)?)?;
        }
        Ok(())
    }
}

/// One projection block: `LayerNorm(W z + b + z)`.
#[derive(Debug, Clone)]
struct Projection {
    w: Linear,
    norm: LayerNorm,
}

impl Projection {
    fn new(genes: usize, vb: &SeededParams) -> Result<Self> {
        Ok(Projection {
            w: xavier_linear(genes, genes, &vb.pp("linear"))?,
            norm: LayerNorm::new(genes, &vb.pp("norm"))?,
        })
    }
    fn forward(&self, z: &Tensor) -> Result<Tensor> {
        self.norm.forward(&(apply(&self.w, z)? + z)?)
    }
}

/// The pointwise feed-forward block: `LayerNorm(u + W2 ReLU(W1 u + b1) + b2)`.
#[derive(Debug, Clone)]
struct FeedForward {
    w1: Linear,
    w2: Linear,
    norm: LayerNorm,
}

impl FeedForward {
    fn new(genes: usize, hidden: usize, vb: &SeededParams) -> Result<Self> {
        Ok(FeedForward {
            w1: xavier_linear(genes, hidden, &vb.pp("linear1"))?,
            w2: xavier_linear(hidden, genes, &vb.pp("linear2"))?,
            norm: LayerNorm::new(genes, &vb.pp("norm"))?,
        })
    }
    fn forward(&self, u: &Tensor) -> Result<Tensor> {
        let h = apply(&self.w2, &apply(&self.w1, u)?.relu()?)?;
        self.norm.forward(&(u + h)?)
    }
}

/// An N-ACT network for `genes` inputs and `classes` outputs.
#[derive(Debug, Clone)]
pub struct NactNetwork {
    pub attention: GeneAttention,
    body: Body,
    /// Factor applied to the gene scores `gamma = alpha * x` (1 in the reference).
    gamma_scale: f64,
}

#[derive(Debug, Clone)]
enum Body {
    Projection {
        p1: Projection,
        p2: Projection,
        ffn: FeedForward,
        head: Linear,
    },
    Additive {
        layers: Vec<Linear>,
    },
}

impl NactNetwork {
    /// Builds the network under `vb` (parameter names follow the reference modules).
    pub fn new(
        genes: usize,
        classes: usize,
        variant: NactVariant,
        ffn_hidden: usize,
        vb: &SeededParams,
    ) -> Result<Self> {
        Self::with_gamma_scale(genes, classes, variant, ffn_hidden, 1.0, false, vb)
    }

    /// As [`NactNetwork::new`], with the gene scores `gamma = alpha * x` multiplied by
    /// `gamma_scale` (1 in the reference) and, with `zero_attention`, attention weights that
    /// start at zero (uniform attention) instead of Xavier-uniform.
    pub fn with_gamma_scale(
        genes: usize,
        classes: usize,
        variant: NactVariant,
        ffn_hidden: usize,
        gamma_scale: f64,
        zero_attention: bool,
        vb: &SeededParams,
    ) -> Result<Self> {
        let attention = if zero_attention {
            GeneAttention::zero_init(genes, &vb.pp("attention"))?
        } else {
            GeneAttention::new(genes, &vb.pp("attention"))?
        };
        let body = match variant {
            NactVariant::Projection => Body::Projection {
                p1: Projection::new(genes, &vb.pp("projection1"))?,
                p2: Projection::new(genes, &vb.pp("projection2"))?,
                ffn: FeedForward::new(genes, ffn_hidden, &vb.pp("feed_forward"))?,
                head: xavier_linear(genes, classes, &vb.pp("task_head"))?,
            },
            NactVariant::Additive => {
                let dims = [genes, 1024, 512, 256, 128, 64, classes];
                let layers = dims
                    .windows(2)
                    .enumerate()
                    .map(|(i, w)| xavier_linear(w[0], w[1], &vb.pp(format!("mlp{i}"))))
                    .collect::<Result<Vec<_>>>()?;
                Body::Additive { layers }
            }
        };
        Ok(NactNetwork {
            attention,
            body,
            gamma_scale,
        })
    }

    /// Logits `[batch, classes]` and attention weights `[batch, genes]`.
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.forward_masked(x, x)
    }

    /// As [`NactNetwork::forward`], with the gene scores `gamma = alpha(x) * masked` (the
    /// reference's masking dropout: `masked` is `x` with entries dropped, `alpha` still sees
    /// all of `x`).
    pub fn forward_masked(&self, x: &Tensor, masked: &Tensor) -> Result<(Tensor, Tensor)> {
        let alpha = self.attention.weights(x)?;
        let mut gamma = (&alpha * masked)?;
        if self.gamma_scale != 1.0 {
            gamma = (gamma * self.gamma_scale)?;
        }
        let logits = match &self.body {
            Body::Projection { p1, p2, ffn, head } => {
                let s1 = ffn.forward(&p1.forward(&gamma)?)?;
                let s2 = ffn.forward(&p2.forward(&(&s1 + &gamma)?)?)?;
                // The reference applies LeakyReLU(0.01) to the logits, before the softmax-CE.
                let z = apply(head, &(s2 + &gamma)?)?;
                leaky_relu(&z, 0.01)?
            }
            Body::Additive { layers } => {
                let mut h = gamma;
                for l in layers {
                    h = apply(l, &h)?.tanh()?;
                }
                h
            }
        };
        Ok((logits, alpha))
    }
}

fn leaky_relu(x: &Tensor, slope: f64) -> Result<Tensor> {
    // max(x, 0) + slope * min(x, 0), differentiable.
    Ok((x.relu()? + (x.neg()?.relu()? * (-slope))?)?)
}

/// ACTINN: `G -> 100 -> 50 -> 25 -> C` with ReLU; Xavier-uniform weights, bias 0.01
/// (ACTINN-PyTorch applies its `init_weights` to every `nn.Linear`).
#[derive(Debug, Clone)]
pub struct ActinnNetwork {
    layers: Vec<Linear>,
}

impl ActinnNetwork {
    /// `xavier`: Xavier-uniform weights with bias 0.01, else PyTorch's default `nn.Linear` start.
    pub fn new(genes: usize, classes: usize, xavier: bool, vb: &SeededParams) -> Result<Self> {
        let dims = [genes, 100, 50, 25, classes];
        let init = if xavier { xavier_linear } else { torch_linear };
        let layers = dims
            .windows(2)
            .enumerate()
            .map(|(i, w)| init(w[0], w[1], &vb.pp(format!("fc{}", i + 1))))
            .collect::<Result<Vec<_>>>()?;
        Ok(ActinnNetwork { layers })
    }

    /// The same function as [`ActinnNetwork::forward`], layer by layer (for DeepLIFT).
    pub fn feed_forward(&self) -> cellident_tensor::FeedForwardNet {
        use cellident_tensor::{Activation, FeedForwardLayer};
        let mut layers = Vec::new();
        let last = self.layers.len() - 1;
        for (i, l) in self.layers.iter().enumerate() {
            layers.push(FeedForwardLayer::Linear {
                weight: l.weight().clone(),
                bias: l.bias().cloned(),
            });
            if i < last {
                layers.push(FeedForwardLayer::Activation(Activation::Relu));
            }
        }
        cellident_tensor::FeedForwardNet { layers }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        let last = self.layers.len() - 1;
        for (i, l) in self.layers.iter().enumerate() {
            h = apply(l, &h)?;
            if i < last {
                h = h.relu()?;
            }
        }
        Ok(h)
    }
}

/// Row sums, for invariant checks (`[batch]`).
pub fn row_sums(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.sum(D::Minus1)?.to_vec1::<f32>()?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use candle_core::{Device, Var};
    use candle_nn::VarMap;

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        cellident_tensor::nn::max_abs_diff(a, b).unwrap()
    }

    /// Centring the attention input is a reparametrisation: after folding `-W_a c` into the
    /// bias, the plain layer gives the attention the centred one gave (f32 rounding only).
    #[test]
    fn folding_the_input_centre_keeps_the_attention() {
        let dev = Device::Cpu;
        let vars = VarMap::new();
        let mut att = GeneAttention::new(50, &SeededParams::new(&vars, 7, &dev)).unwrap();
        let x: Vec<f32> = (0..4 * 50).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let x = Tensor::from_vec(x, (4, 50), &dev).unwrap();
        let center = x.mean(0).unwrap();
        let plain = att.weights(&x).unwrap();
        att.set_input_center(center).unwrap();
        let centred = att.weights(&x).unwrap();
        // The centre changes the logits by a per-gene constant, so the attention differs ...
        assert!(max_abs_diff(&plain, &centred) > 1e-3);
        let bias: Var = vars.data().lock().unwrap()["bias"].clone();
        att.fold_input_center(&bias).unwrap();
        let folded = att.weights(&x).unwrap();
        // ... and folding restores exactly the centred layer's function.
        let err = max_abs_diff(&folded, &centred);
        assert!(err < 1e-6, "{err}");
        let rows = folded.sum(1).unwrap().to_vec1::<f32>().unwrap();
        assert!(rows.iter().all(|s| (s - 1.0).abs() < 1e-5), "{rows:?}");
    }
}

//! CICL's network (methods.md §3.2): a transformer encoder over a one-token sequence (the cell's
//! whole gene vector, d_model = G) and the projection head.
//!
//! With one token, softmax(QKᵀ/√d) is the 1×1 matrix [1] for every head, so multi-head
//! attention is exactly `fc(W_V x)`: Q and K never change the output and get no gradient. The
//! encoder therefore holds only `W_V` and `fc` and skips the Q/K products;
//! [`multi_head_attention`] is the straightforward computation the tests compare it with.

use candle_core::{D, Tensor};
use candle_nn::Linear;
use cellident_tensor::nn::{layer_norm, linear};
use cellident_tensor::params::{LayerNorm, SeededParams, apply, torch_linear};
use cellident_tensor::{Result, TensorError};
use rand::rngs::StdRng;

use crate::params::CiclParams;

/// Inverted dropout with a seeded mask (candle's CPU dropout cannot be seeded). `None` = the
/// evaluation pass (identity).
#[derive(Debug)]
pub struct Dropout {
    p: f64,
    rng: Option<StdRng>,
}

impl Dropout {
    /// Training-time dropout with drop probability `p`, masks drawn from `rng`.
    pub fn train(p: f64, rng: StdRng) -> Self {
        Dropout { p, rng: Some(rng) }
    }

    /// No dropout (evaluation).
    pub fn eval() -> Self {
        Dropout { p: 0.0, rng: None }
    }

    fn apply(&mut self, x: &Tensor) -> Result<Tensor> {
        match self.rng.as_mut() {
            Some(rng) => cellident_tensor::nn::dropout(x, self.p, rng),
            None => Ok(x.clone()),
        }
    }
}

/// A bias-free `nn.Linear` weight `[out, in]`, PyTorch's default initialisation.
fn torch_weight(in_dim: usize, out_dim: usize, p: &SeededParams) -> Result<Tensor> {
    p.uniform("weight", &[out_dim, in_dim], 1.0 / (in_dim as f64).sqrt())
}

/// One post-norm encoder layer.
#[derive(Debug, Clone)]
pub struct EncoderLayer {
    /// Value projection of all heads, `[heads * head_dim, G]`.
    pub w_v: Tensor,
    /// Output projection of the concatenated heads, `[G, heads * head_dim]`.
    pub fc: Tensor,
    ln1: LayerNorm,
    ln2: LayerNorm,
    ff1: Linear,
    ff2: Linear,
}

impl EncoderLayer {
    fn new(g: usize, c: &CiclParams, p: &SeededParams) -> Result<Self> {
        let inner = c.n_heads * c.head_dim;
        Ok(EncoderLayer {
            w_v: torch_weight(g, inner, &p.pp("attention.w_v"))?,
            fc: torch_weight(inner, g, &p.pp("attention.fc"))?,
            ln1: LayerNorm::new(g, &p.pp("ln1"))?,
            ln2: LayerNorm::new(g, &p.pp("ln2"))?,
            ff1: torch_linear(g, c.ffn_hidden, &p.pp("ffn.w1"))?,
            ff2: torch_linear(c.ffn_hidden, g, &p.pp("ffn.w2"))?,
        })
    }

    /// `x` `[batch, G]` -> `[batch, G]`:
    /// `a = LN(fc(W_V x) + x)` (a parameter-free LayerNorm, as the reference creates a fresh one
    /// at every call), `x = LN1(x + drop(a))`, `x = LN2(x + drop(W2 drop(relu(W1 x))))`.
    pub fn forward(&self, x: &Tensor, drop: &mut Dropout) -> Result<Tensor> {
        let attention = linear(&linear(x, &self.w_v, None)?, &self.fc, None)?;
        let a = layer_norm(&(attention + x)?, None, None, 1e-5)?;
        let x = self.ln1.forward(&(x + drop.apply(&a)?)?)?;
        let hidden = drop.apply(&apply(&self.ff1, &x)?.relu()?)?;
        let f = drop.apply(&apply(&self.ff2, &hidden)?)?;
        self.ln2.forward(&(x + f)?)
    }
}

/// The encoder: `n_layers` layers and a final LayerNorm; output `h` has the input's size G.
#[derive(Debug, Clone)]
pub struct Encoder {
    pub layers: Vec<EncoderLayer>,
    final_norm: LayerNorm,
    /// `[1, G]`: the constant profile of [`CiclParams::input_offset`] (`None` when it is 0).
    offset: Option<Tensor>,
}

impl Encoder {
    pub fn new(g: usize, c: &CiclParams, p: &SeededParams) -> Result<Self> {
        let layers = (0..c.n_layers)
            .map(|l| EncoderLayer::new(g, c, &p.pp(format!("layer{l}"))))
            .collect::<Result<Vec<_>>>()?;
        let offset = if c.input_offset > 0.0 {
            let a = c.input_offset as f32;
            let profile: Vec<f32> = (0..g).map(|j| if j % 2 == 0 { a } else { -a }).collect();
            Some(Tensor::from_vec(profile, (1, g), p.device())?)
        } else {
            None
        };
        Ok(Encoder {
            layers,
            final_norm: LayerNorm::new(g, &p.pp("final_norm"))?,
            offset,
        })
    }

    /// The embedding `h` `[batch, G]` of `x` `[batch, G]` (plus the constant profile of
    /// [`CiclParams::input_offset`] when it is set).
    pub fn forward(&self, x: &Tensor, drop: &mut Dropout) -> Result<Tensor> {
        let mut h = match &self.offset {
            Some(o) => x.broadcast_add(o)?,
            None => x.clone(),
        };
        for layer in &self.layers {
            h = layer.forward(&h, drop)?;
        }
        self.final_norm.forward(&h)
    }
}

/// Projection head g: Linear(G, hidden) -> ReLU -> Linear(hidden, dim), output L2-normalised.
#[derive(Debug, Clone)]
pub struct ProjectionHead {
    l1: Linear,
    l2: Linear,
}

impl ProjectionHead {
    pub fn new(g: usize, c: &CiclParams, p: &SeededParams) -> Result<Self> {
        Ok(ProjectionHead {
            l1: torch_linear(g, c.projection_hidden, &p.pp("l1"))?,
            l2: torch_linear(c.projection_hidden, c.projection_dim, &p.pp("l2"))?,
        })
    }

    /// `z = g(h) / ‖g(h)‖₂`, `[batch, projection_dim]`.
    pub fn forward(&self, h: &Tensor) -> Result<Tensor> {
        let z = apply(&self.l2, &apply(&self.l1, h)?.relu()?)?;
        l2_normalize(&z)
    }
}

/// Rows divided by their Euclidean norm (floored at 1e-12, as `F.normalize`).
pub fn l2_normalize(z: &Tensor) -> Result<Tensor> {
    let norm = z.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.maximum(1e-12)?;
    Ok(z.broadcast_div(&norm)?)
}

/// Textbook multi-head scaled dot-product attention over sequences, `x` `[batch, len, G]`:
/// `concat_h softmax(Q_h K_hᵀ / √d) V_h`, then `fc`. Weights as in [`EncoderLayer`] (`w_q`,
/// `w_k`, `w_v` `[heads * d, G]`, `fc` `[G, heads * d]`). Used to check the one-token shortcut.
pub fn multi_head_attention(
    x: &Tensor,
    w_q: &Tensor,
    w_k: &Tensor,
    w_v: &Tensor,
    fc: &Tensor,
    heads: usize,
) -> Result<Tensor> {
    let (b, len, _) = x.dims3()?;
    let inner = w_v.dim(0)?;
    if inner % heads != 0 {
        return Err(TensorError::InvalidParam {
            name: "heads",
            message: format!("{inner} is not divisible by {heads} heads"),
        });
    }
    let d = inner / heads;
    let split = |w: &Tensor| -> Result<Tensor> {
        // [b, len, G] x [G, inner] -> [b, heads, len, d]
        Ok(x.broadcast_matmul(&w.t()?)?
            .reshape((b, len, heads, d))?
            .transpose(1, 2)?
            .contiguous()?)
    };
    let (q, k, v) = (split(w_q)?, split(w_k)?, split(w_v)?);
    let scores = (q.matmul(&k.transpose(2, 3)?.contiguous()?)? / (d as f64).sqrt())?;
    let weights = candle_nn::ops::softmax(&scores, D::Minus1)?;
    let out = weights
        .matmul(&v)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b, len, inner))?;
    Ok(out.broadcast_matmul(&fc.t()?)?)
}

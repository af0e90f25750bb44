//! The CIC network: encoder, decoder and the optional classifier head, built from seeded
//! parameters (PyTorch's default `nn.Linear` initialisation).

use candle_core::Tensor;
use candle_nn::{Linear, VarMap};
use cellident_tensor::params::{SeededParams, apply, torch_linear, var_named};
use cellident_tensor::{Activation, FeedForwardLayer, Result};

/// Layers of one CIC model. Shapes: input `[batch, genes]`, code `[batch, code_dim]`,
/// logits `[batch, classes]`.
#[derive(Debug, Clone)]
pub(crate) struct CicNetwork {
    pub encoder_hidden: Linear,
    pub encoder_code: Linear,
    pub decoder_hidden: Linear,
    pub decoder_out: Linear,
    pub head: Option<ClassifierHead>,
    pub activation: Activation,
}

/// Code -> (optional hidden ReLU layer) -> class logits.
#[derive(Debug, Clone)]
pub(crate) struct ClassifierHead {
    pub hidden: Option<Linear>,
    pub out: Linear,
}

/// Sizes of a network.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    pub genes: usize,
    pub hidden: usize,
    pub code: usize,
    /// `(classifier hidden units, classes)` when the network has a classifier head.
    pub head: Option<(usize, usize)>,
}

impl CicNetwork {
    /// Builds the layers in `vars` (names `encoder.hidden.weight`, ...), seeded.
    pub fn new(shape: Shape, activation: Activation, vars: &VarMap, seed: u64) -> Result<Self> {
        let p = SeededParams::new(vars, seed, &candle_core::Device::Cpu);
        Self::build(shape, activation, &p)
    }

    pub fn build(shape: Shape, activation: Activation, p: &SeededParams) -> Result<Self> {
        let head = match shape.head {
            Some((h, c)) => Some(ClassifierHead {
                hidden: if h > 0 {
                    Some(torch_linear(shape.code, h, &p.pp("classifier.hidden"))?)
                } else {
                    None
                },
                out: torch_linear(
                    if h > 0 { h } else { shape.code },
                    c,
                    &p.pp("classifier.out"),
                )?,
            }),
            None => None,
        };
        Ok(CicNetwork {
            encoder_hidden: torch_linear(shape.genes, shape.hidden, &p.pp("encoder.hidden"))?,
            encoder_code: torch_linear(shape.hidden, shape.code, &p.pp("encoder.code"))?,
            decoder_hidden: torch_linear(shape.code, shape.hidden, &p.pp("decoder.hidden"))?,
            decoder_out: torch_linear(shape.hidden, shape.genes, &p.pp("decoder.out"))?,
            head,
            activation,
        })
    }

    /// The code of scaled profiles.
    pub fn encode(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.activation.forward(&apply(&self.encoder_hidden, x)?)?;
        apply(&self.encoder_code, &h)
    }

    /// The reproduced (scaled) profiles of codes.
    pub fn decode(&self, code: &Tensor) -> Result<Tensor> {
        let h = self
            .activation
            .forward(&apply(&self.decoder_hidden, code)?)?;
        apply(&self.decoder_out, &h)
    }

    /// Class logits of codes (`None` without a classifier head).
    pub fn classify(&self, code: &Tensor) -> Result<Option<Tensor>> {
        let Some(head) = &self.head else {
            return Ok(None);
        };
        let h = match &head.hidden {
            Some(l) => apply(l, code)?.relu()?,
            None => code.clone(),
        };
        Ok(Some(apply(&head.out, &h)?))
    }

    /// The encoder and classifier head as feed-forward layers (after the input transform).
    pub fn classifier_layers(&self) -> Option<Vec<FeedForwardLayer>> {
        let head = self.head.as_ref()?;
        let lin = |l: &Linear| FeedForwardLayer::Linear {
            weight: l.weight().clone(),
            bias: l.bias().cloned(),
        };
        let mut layers = vec![
            lin(&self.encoder_hidden),
            FeedForwardLayer::Activation(self.activation),
            lin(&self.encoder_code),
        ];
        if let Some(h) = &head.hidden {
            layers.push(lin(h));
            layers.push(FeedForwardLayer::Activation(Activation::Relu));
        }
        layers.push(lin(&head.out));
        Some(layers)
    }
}

/// Sets the variable `name` of `vars` to `values` (same shape).
pub(crate) fn set_var(vars: &VarMap, name: &str, values: &[f32]) -> Result<()> {
    let var = var_named(vars, name)?;
    let t = Tensor::from_slice(values, var.shape(), var.device())?;
    var.set(&t)?;
    Ok(())
}

/// The values of variable `name` of `vars`, row-major.
fn var_values(vars: &VarMap, name: &str) -> Result<Vec<f32>> {
    Ok(var_named(vars, name)?
        .as_tensor()
        .flatten_all()?
        .to_vec1::<f32>()?)
}

/// Puts the autoencoder at the PCA solution (see `CicInit::Pca`): for each component `j` with
/// scores `s_j = V_j (x - mean)` of standard deviation `sd_j`, encoder hidden units `2j` and
/// `2j+1` compute `logsigmoid(+-s_j / sd_j)`, code unit `j` their difference (= `s_j / sd_j`,
/// exactly, since `logsigmoid(z) - logsigmoid(-z) = z`); the decoder repeats the trick and its
/// output layer maps the differences back through `sd_j V_j` onto the mean. Other hidden units
/// keep their random input weights and get zero output weights, so the initial network computes
/// the whitened PCA code and the PCA reconstruction, and training can recruit them.
pub(crate) fn init_from_pca(
    vars: &VarMap,
    shape: Shape,
    mean: &[f32],
    components: &[f32],
    sd: &[f64],
) -> Result<()> {
    let (g, h, k) = (shape.genes, shape.hidden, shape.code);
    let m = sd.len().min(k).min(h / 2);
    let mut w1 = var_values(vars, "encoder.hidden.weight")?; // [h, g]
    let mut b1 = var_values(vars, "encoder.hidden.bias")?; // [h]
    let mut w2 = vec![0f32; k * h]; // [k, h]
    let mut b2 = vec![0f32; k];
    let mut w3 = var_values(vars, "decoder.hidden.weight")?; // [h, k]
    let mut b3 = var_values(vars, "decoder.hidden.bias")?; // [h]
    let mut w4 = vec![0f32; g * h]; // [g, h]
    let old_w2 = var_values(vars, "encoder.code.weight")?;
    let old_b2 = var_values(vars, "encoder.code.bias")?;
    for j in 0..k {
        if j >= m || sd[j] <= 1e-8 {
            // No component for this unit: keep its random weights.
            w2[j * h..(j + 1) * h].copy_from_slice(&old_w2[j * h..(j + 1) * h]);
            b2[j] = old_b2[j];
        }
    }
    for j in 0..m {
        if sd[j] <= 1e-8 {
            continue;
        }
        let v = &components[j * g..(j + 1) * g];
        let scale = (1.0 / sd[j]) as f32;
        let v_dot_mean: f32 = v.iter().zip(mean).map(|(a, b)| a * b).sum();
        for (unit, sign) in [(2 * j, 1f32), (2 * j + 1, -1f32)] {
            for c in 0..g {
                w1[unit * g + c] = sign * scale * v[c];
            }
            b1[unit] = -sign * scale * v_dot_mean;
            w2[j * h + unit] = sign;
            for c in 0..k {
                w3[unit * k + c] = if c == j { sign } else { 0.0 };
            }
            b3[unit] = 0.0;
            for r in 0..g {
                w4[r * h + unit] = sign * sd[j] as f32 * v[r];
            }
        }
    }
    set_var(vars, "encoder.hidden.weight", &w1)?;
    set_var(vars, "encoder.hidden.bias", &b1)?;
    set_var(vars, "encoder.code.weight", &w2)?;
    set_var(vars, "encoder.code.bias", &b2)?;
    set_var(vars, "decoder.hidden.weight", &w3)?;
    set_var(vars, "decoder.hidden.bias", &b3)?;
    set_var(vars, "decoder.out.weight", &w4)?;
    set_var(vars, "decoder.out.bias", mean)?;
    Ok(())
}

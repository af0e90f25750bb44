//! Seeded parameter creation and the layers built from it (Linear with PyTorch's or Xavier
//! initialisation, LayerNorm with a working backward).
//!
//! candle's CPU device cannot be seeded (`Device::set_seed` fails on CPU), so `VarBuilder`'s
//! random `Init`s are not reproducible. [`SeededParams`] creates every parameter itself, from
//! the ChaCha12 stream of the user's seed (`batch::chacha_for`, the stream of `rng_for`'s
//! `StdRng`), in construction order, and registers it in a `VarMap` under its full name (so
//! checkpoints load into the same names). Large uniform draws run in parallel chunks that jump
//! to their place in the stream, with the serial loop's values.

use std::cell::RefCell;
use std::rc::Rc;

use crate::error::{Result, TensorError};
use candle_core::{Device, Tensor, Var};
use candle_nn::{Linear, VarMap};
use rand::Rng;
use rand_chacha::ChaCha12Rng;
use rayon::prelude::*;

/// Every variable of `vars` with its name, sorted by name: a `VarMap` is a `HashMap`, and
/// optimizers and parameter groups need the same order on every run.
pub fn named_vars(vars: &VarMap) -> Result<Vec<(String, Var)>> {
    let data = vars.data().lock().map_err(|_| TensorError::InvalidParam {
        name: "parameters",
        message: "lock poisoned".into(),
    })?;
    let mut all: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(all)
}

/// The variable `name` of `vars` (an error names a missing variable).
pub fn var_named(vars: &VarMap, name: &str) -> Result<Var> {
    let data = vars.data().lock().map_err(|_| TensorError::InvalidParam {
        name: "parameters",
        message: "lock poisoned".into(),
    })?;
    data.get(name)
        .cloned()
        .ok_or_else(|| TensorError::InvalidParam {
            name: "parameters",
            message: format!("no parameter named {name}"),
        })
}

/// Creates named, seeded parameters in a `VarMap`.
#[derive(Clone)]
pub struct SeededParams {
    map: VarMap,
    /// `rng_for(seed, 0x1417)`'s stream, as the ChaCha12 type behind `StdRng` so that a draw
    /// can be split at word positions.
    rng: Rc<RefCell<ChaCha12Rng>>,
    prefix: String,
    device: Device,
}

impl std::fmt::Debug for SeededParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeededParams")
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl SeededParams {
    /// Parameters in `map`, initialised from `seed`.
    pub fn new(map: &VarMap, seed: u64, device: &Device) -> Self {
        SeededParams {
            map: map.clone(),
            rng: Rc::new(RefCell::new(crate::batch::chacha_for(seed, 0x1417))),
            prefix: String::new(),
            device: device.clone(),
        }
    }

    /// The device the parameters live on (for constants a layer keeps beside them).
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A sub-namespace (`prefix.name`).
    pub fn pp(&self, name: impl AsRef<str>) -> Self {
        let mut s = self.clone();
        s.prefix = if self.prefix.is_empty() {
            name.as_ref().to_string()
        } else {
            format!("{}.{}", self.prefix, name.as_ref())
        };
        s
    }

    fn insert(&self, name: &str, values: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
        let full = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        };
        let var = Var::from_vec(values, shape, &self.device)?;
        let t = var.as_tensor().clone();
        self.map
            .data()
            .lock()
            .map_err(|_| TensorError::InvalidParam {
                name: "parameters",
                message: "lock poisoned".into(),
            })?
            .insert(full, var);
        Ok(t)
    }

    /// U(-bound, bound), `bound > 0`.
    pub fn uniform(&self, name: &str, shape: &[usize], bound: f64) -> Result<Tensor> {
        if !(bound > 0.0 && bound.is_finite()) {
            return Err(TensorError::InvalidParam {
                name: "bound",
                message: format!("parameter {name}: uniform bound must be positive, got {bound}"),
            });
        }
        let n: usize = shape.iter().product();
        let values = draw_uniform(&mut self.rng.borrow_mut(), n, bound);
        self.insert(name, values, shape)
    }

    /// A constant.
    pub fn constant(&self, name: &str, shape: &[usize], value: f32) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        self.insert(name, vec![value; n], shape)
    }
}

/// Draws of at least this many values are split over the rayon pool (a 2,000 x 1,000 weight is
/// 2,000,000); smaller ones are not worth a thread.
const PARALLEL_DRAW_MIN: usize = 1 << 18;
/// Values per parallel chunk.
const PARALLEL_DRAW_CHUNK: usize = 1 << 16;

/// `n` values of `rng.random_range(-bound..bound) as f32`: the values, in the order, of the serial
/// loop, and `rng` left where that loop leaves it, whatever the number of threads.
///
/// Why this is exact: each f64 draw takes one `u64`, two 32-bit words of the ChaCha stream, so
/// value `i` starts at word `start + 2 i` and a chunk can jump there with `set_word_pos`. rand
/// redraws a value only when rounding lands on the upper bound (a chance near 2^-52 per draw);
/// then a chunk ends at another word than expected, and the serial loop runs instead.
/// For CIC on 1,000 genes (4.1 M weights) the split cut initialisation plus one all_leukemia epoch
/// by a quarter (docs/benchmarks.md, "Dense backward and the inference form", change 5).
fn draw_uniform(rng: &mut ChaCha12Rng, n: usize, bound: f64) -> Vec<f32> {
    let serial = |rng: &mut ChaCha12Rng| -> Vec<f32> {
        (0..n)
            .map(|_| rng.random_range(-bound..bound) as f32)
            .collect()
    };
    if n < PARALLEL_DRAW_MIN {
        return serial(rng);
    }
    let start = rng.get_word_pos();
    let mut values = vec![0f32; n];
    let template: &ChaCha12Rng = rng;
    let exact = values
        .par_chunks_mut(PARALLEL_DRAW_CHUNK)
        .enumerate()
        .map(|(c, chunk)| {
            let mut r = template.clone();
            let first = (c * PARALLEL_DRAW_CHUNK) as u128;
            r.set_word_pos(start + 2 * first);
            for v in chunk.iter_mut() {
                *v = r.random_range(-bound..bound) as f32;
            }
            r.get_word_pos() == start + 2 * (first + chunk.len() as u128)
        })
        .collect::<Vec<bool>>();
    if exact.iter().all(|&e| e) {
        rng.set_word_pos(start + 2 * n as u128);
        values
    } else {
        serial(rng)
    }
}

/// `nn.Linear` with Xavier-uniform weights and bias 0.01 (N-ACT's `init_weights`).
pub fn xavier_linear(in_dim: usize, out_dim: usize, p: &SeededParams) -> Result<Linear> {
    let bound = (6.0 / (in_dim + out_dim) as f64).sqrt();
    let w = p.uniform("weight", &[out_dim, in_dim], bound)?;
    let b = p.constant("bias", &[out_dim], 0.01)?;
    Ok(Linear::new(w, Some(b)))
}

/// `nn.Linear` with PyTorch's default initialisation (U(-1/sqrt(in), 1/sqrt(in)) for weight and
/// bias), what a `torch.nn.Linear` starts with when no `init_weights` is applied.
pub fn torch_linear(in_dim: usize, out_dim: usize, p: &SeededParams) -> Result<Linear> {
    let bound = 1.0 / (in_dim as f64).sqrt();
    let w = p.uniform("weight", &[out_dim, in_dim], bound)?;
    let b = p.uniform("bias", &[out_dim], bound)?;
    Ok(Linear::new(w, Some(b)))
}

/// LayerNorm over the last dimension with affine parameters (PyTorch defaults: weight 1,
/// bias 0, eps 1e-5), using the differentiable implementation of cellident-tensor.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

impl LayerNorm {
    pub fn new(dim: usize, p: &SeededParams) -> Result<Self> {
        Ok(LayerNorm {
            weight: p.constant("weight", &[dim], 1.0)?,
            bias: p.constant("bias", &[dim], 0.0)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        crate::nn::layer_norm(x, Some(&self.weight), Some(&self.bias), 1e-5)
    }
}

/// Applies a linear layer through [`crate::nn::linear`] (no gradient for a constant input).
pub fn apply(l: &Linear, x: &Tensor) -> Result<Tensor> {
    crate::nn::linear(x, l.weight(), l.bias())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The parallel draw against a serial loop over rand's `StdRng` from the same seed (the
    /// generator the parameters were drawn from before): a draw above the parallel threshold
    /// with a partial last chunk, then a small draw, must give the serial values bit for bit, so
    /// the chunks start at the right words and the generator is left where the loop leaves it.
    #[test]
    fn a_large_draw_in_parallel_chunks_gives_the_serial_values() {
        let n = PARALLEL_DRAW_MIN + PARALLEL_DRAW_CHUNK / 2 + 3;
        let bound = 0.0316;
        let mut serial = crate::batch::rng_for(42, 0x1417);
        let expected: Vec<f32> = (0..n + 10)
            .map(|_| serial.random_range(-bound..bound) as f32)
            .collect();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let (large, small) = pool.install(|| {
            let map = VarMap::new();
            let p = SeededParams::new(&map, 42, &Device::Cpu);
            (
                p.uniform("large", &[n], bound).unwrap(),
                p.uniform("small", &[10], bound).unwrap(),
            )
        });
        let got: Vec<f32> = [
            large.to_vec1::<f32>().unwrap(),
            small.to_vec1::<f32>().unwrap(),
        ]
        .concat();
        assert_eq!(got.len(), expected.len());
        let first_difference = got
            .iter()
            .zip(&expected)
            .position(|(a, b)| a.to_bits() != b.to_bits());
        assert_eq!(first_difference, None);
    }

    #[test]
    fn a_non_positive_bound_is_an_error_naming_the_parameter() {
        let map = VarMap::new();
        let p = SeededParams::new(&map, 0, &Device::Cpu);
        let e = p.uniform("weight", &[2, 2], 0.0).unwrap_err().to_string();
        assert!(e.contains("weight") && e.contains("positive"), "{e}");
    }
}

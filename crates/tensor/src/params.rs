//! Seeded parameter creation and the layers built from it (Linear with PyTorch's or Xavier
//! initialisation, LayerNorm with a working backward).
//!
//! candle's CPU device cannot be seeded (`Device::set_seed` fails on CPU), so `VarBuilder`'s
//! random `Init`s are not reproducible. [`SeededParams`] creates every parameter itself, from a
//! `StdRng` seeded by the user's seed, in construction order, and registers it in a `VarMap`
//! under its full name (so checkpoints load into the same names).

use std::cell::RefCell;
use std::rc::Rc;

use crate::error::{Result, TensorError};
use candle_core::{Device, Tensor, Var};
use candle_nn::{Linear, VarMap};
use rand::Rng;
use rand::rngs::StdRng;

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
    rng: Rc<RefCell<StdRng>>,
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
            rng: Rc::new(RefCell::new(crate::batch::rng_for(seed, 0x1417))),
            prefix: String::new(),
            device: device.clone(),
        }
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
        let values = {
            let mut rng = self.rng.borrow_mut();
            (0..n)
                .map(|_| rng.random_range(-bound..bound) as f32)
                .collect()
        };
        self.insert(name, values, shape)
    }

    /// A constant.
    pub fn constant(&self, name: &str, shape: &[usize], value: f32) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        self.insert(name, vec![value; n], shape)
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

    #[test]
    fn a_non_positive_bound_is_an_error_naming_the_parameter() {
        let map = VarMap::new();
        let p = SeededParams::new(&map, 0, &Device::Cpu);
        let e = p.uniform("weight", &[2, 2], 0.0).unwrap_err().to_string();
        assert!(e.contains("weight") && e.contains("positive"), "{e}");
    }
}

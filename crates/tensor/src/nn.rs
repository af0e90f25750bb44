//! Layers with a working backward pass.
//!
//! candle-nn's fused `ops::layer_norm` and `ops::softmax_last_dim` have no backward: gradients
//! silently stop there (see `../shared/docs/dependencies.md`). These versions are built from
//! differentiable primitives, and the tests check their gradients against finite differences.

use candle_core::{D, Tensor};

use crate::error::Result;

/// Layer normalisation over the last dimension, `(x - mean) / sqrt(var + eps) * gamma + beta`
/// (biased variance, as PyTorch). `gamma`/`beta` of shape `[d]`; `None` means no affine part.
pub fn layer_norm(
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
}

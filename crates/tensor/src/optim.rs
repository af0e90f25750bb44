//! Optimizers: Adam, AdamW (decoupled weight decay) and SGD with momentum.
//!
//! On the CPU each parameter is updated in one fused loop over host memory (one read of the
//! gradient, one write of the parameter), instead of the ~10 allocating element-wise tensor
//! ops per parameter that a tensor-level implementation costs. Other devices use tensor ops.
//! All three implement [`candle_nn::Optimizer`], so `backward_step` works as usual; training loops
//! call `opt.step(&crate::nn::backward(&loss)?)` instead, which gives the same gradients with less
//! memory traffic ([`crate::nn::backward`]).

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use candle_nn::Optimizer;

use crate::error::{Result, ensure_param};

/// Hyper-parameters of Adam / AdamW. The defaults are PyTorch's.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamParams {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// L2 penalty added to the gradient (Adam) or decoupled decay (AdamW).
    pub weight_decay: f64,
    /// `true`: AdamW (decay applied to the weights, Loshchilov & Hutter); `false`: Adam
    /// (decay added to the gradient, as `torch.optim.Adam(weight_decay=...)`).
    pub decoupled: bool,
}

impl Default for AdamParams {
    fn default() -> Self {
        AdamParams {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
        }
    }
}

impl AdamParams {
    /// Checks the ranges (`lr > 0`, `0 <= beta < 1`, `eps > 0`, `weight_decay >= 0`).
    pub fn check(&self) -> Result<()> {
        ensure_param(self.lr > 0.0 && self.lr.is_finite(), "lr", || {
            format!("must be > 0, got {}", self.lr)
        })?;
        ensure_param((0.0..1.0).contains(&self.beta1), "beta1", || {
            format!("must be in [0, 1), got {}", self.beta1)
        })?;
        ensure_param((0.0..1.0).contains(&self.beta2), "beta2", || {
            format!("must be in [0, 1), got {}", self.beta2)
        })?;
        ensure_param(self.eps > 0.0, "eps", || {
            format!("must be > 0, got {}", self.eps)
        })?;
        ensure_param(self.weight_decay >= 0.0, "weight_decay", || {
            format!("must be >= 0, got {}", self.weight_decay)
        })
    }
}

#[derive(Debug)]
struct Slot {
    var: Var,
    m: Vec<f32>,
    v: Vec<f32>,
    /// Multiplies the learning rate for this variable (1 unless set by [`Adam::set_lr_scale`]).
    lr_scale: f32,
}

/// Adam / AdamW over a set of variables.
#[derive(Debug)]
pub struct Adam {
    slots: Vec<Slot>,
    params: AdamParams,
    step: u64,
}

fn host_values(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()
}

/// Lets `update(weights, grads)` change `var` in one fused loop over its values. Variables
/// without a gradient are skipped.
///
/// On the CPU, with f32 contiguous weights and gradient, the loop runs on the variable's own
/// storage (a candle in-place op): no copy of the weights or the gradient is made, which for
/// N-ACT's 12 M or CICL's 38 M parameters was several hundred MB of memory traffic per step.
/// Elsewhere the values go through host memory and back.
fn update_in_place(
    var: &Var,
    grads: &GradStore,
    update: impl FnOnce(&mut [f32], &[f32]),
) -> candle_core::Result<()> {
    let Some(grad) = grads.get(var.as_tensor()) else {
        return Ok(());
    };
    let t = var.as_tensor();
    let in_place = t.device().is_cpu()
        && t.dtype() == DType::F32
        && grad.dtype() == DType::F32
        && t.shape() == grad.shape()
        && t.layout().contiguous_offsets().is_some()
        && grad.layout().contiguous_offsets().is_some();
    if in_place {
        return t.inplace_op2(
            grad,
            &HostUpdate {
                update: std::cell::RefCell::new(Some(update)),
            },
        );
    }
    let g = host_values(grad)?;
    let mut w = host_values(t)?;
    update(&mut w, &g);
    var.set(&Tensor::from_vec(w, t.shape(), t.device())?.to_dtype(t.dtype())?)
}

/// The in-place form of [`update_in_place`]: runs the update once on the weights' storage.
struct HostUpdate<F> {
    update: std::cell::RefCell<Option<F>>,
}

impl<F: FnOnce(&mut [f32], &[f32])> candle_core::InplaceOp2 for HostUpdate<F> {
    fn name(&self) -> &'static str {
        "optimizer-update"
    }

    fn cpu_fwd(
        &self,
        weights: &mut candle_core::CpuStorage,
        weights_layout: &candle_core::Layout,
        grad: &candle_core::CpuStorage,
        grad_layout: &candle_core::Layout,
    ) -> candle_core::Result<()> {
        use candle_core::CpuStorage::F32;
        let (Some((w0, w1)), Some((g0, g1))) = (
            weights_layout.contiguous_offsets(),
            grad_layout.contiguous_offsets(),
        ) else {
            candle_core::bail!("optimizer update: weights and gradient must be contiguous");
        };
        let (F32(w), F32(g)) = (weights, grad) else {
            candle_core::bail!("optimizer update: weights and gradient must be f32");
        };
        let update = self.update.borrow_mut().take();
        match update {
            Some(update) => update(&mut w[w0..w1], &g[g0..g1]),
            None => candle_core::bail!("optimizer update applied twice"),
        }
        Ok(())
    }
}

impl Adam {
    /// Scales the learning rate of `var` by `scale` from now on (a parameter group in
    /// PyTorch's terms); `false` when `var` is not one of the optimised variables.
    pub fn set_lr_scale(&mut self, var: &Var, scale: f64) -> bool {
        match self
            .slots
            .iter_mut()
            .find(|s| s.var.as_tensor().id() == var.as_tensor().id())
        {
            Some(slot) => {
                slot.lr_scale = scale as f32;
                true
            }
            None => false,
        }
    }
}

/// Parameters at which an element-wise update is split over the thread pool (below, the
/// hand-off costs more than it saves), and the split's chunk length.
pub(crate) const PARALLEL_UPDATE_MIN: usize = 1 << 18;
pub(crate) const PARALLEL_UPDATE_CHUNK: usize = 1 << 16;

impl Optimizer for Adam {
    type Config = AdamParams;

    fn new(vars: Vec<Var>, params: AdamParams) -> candle_core::Result<Self> {
        let slots = vars
            .into_iter()
            .filter(|v| v.dtype().is_float())
            .map(|var| {
                let n = var.elem_count();
                Slot {
                    var,
                    m: vec![0.0; n],
                    v: vec![0.0; n],
                    lr_scale: 1.0,
                }
            })
            .collect();
        Ok(Adam {
            slots,
            params,
            step: 0,
        })
    }

    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        self.step += 1;
        let p = self.params;
        let (b1, b2) = (p.beta1 as f32, p.beta2 as f32);
        let bc1 = 1.0 - p.beta1.powi(self.step as i32);
        let bc2 = 1.0 - p.beta2.powi(self.step as i32);
        // PyTorch's formulation: p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps).
        let step_size = (p.lr / bc1) as f32;
        let bc2_sqrt = bc2.sqrt() as f32;
        let (eps, wd, lr) = (p.eps as f32, p.weight_decay as f32, p.lr as f32);
        for slot in &mut self.slots {
            let Slot {
                var,
                m: ms,
                v: vs,
                lr_scale,
            } = slot;
            let (step_size, lr) = (step_size * *lr_scale, lr * *lr_scale);
            // The weight decay's two forms as coefficients, so that the loop has no branch and
            // no bounds checks and the compiler vectorises it (a zero coefficient leaves every
            // finite value unchanged, so the result is the same as skipping the term).
            let (decay_weights, decay_grad) = match (wd != 0.0, p.decoupled) {
                (true, true) => (lr * wd, 0.0),
                (true, false) => (0.0, wd),
                (false, _) => (0.0, 0.0),
            };
            update_in_place(var, grads, |w, g| {
                debug_assert!(w.len() == g.len() && w.len() == ms.len() && w.len() == vs.len());
                let chunk = |w: &mut [f32], g: &[f32], ms: &mut [f32], vs: &mut [f32]| {
                    let moments = ms.iter_mut().zip(vs.iter_mut());
                    for ((w, &g), (m, v)) in w.iter_mut().zip(g).zip(moments) {
                        let gi = g + decay_grad * *w;
                        *w -= decay_weights * *w;
                        *m = b1 * *m + (1.0 - b1) * gi;
                        *v = b2 * *v + (1.0 - b2) * gi * gi;
                        *w -= step_size * *m / (v.sqrt() / bc2_sqrt + eps);
                    }
                };
                if w.len() < PARALLEL_UPDATE_MIN {
                    chunk(w, g, ms, vs);
                } else {
                    use rayon::prelude::*;
                    w.par_chunks_mut(PARALLEL_UPDATE_CHUNK)
                        .zip(g.par_chunks(PARALLEL_UPDATE_CHUNK))
                        .zip(ms.par_chunks_mut(PARALLEL_UPDATE_CHUNK))
                        .zip(vs.par_chunks_mut(PARALLEL_UPDATE_CHUNK))
                        .for_each(|(((w, g), m), v)| chunk(w, g, m, v));
                }
            })?;
        }
        Ok(())
    }

    fn learning_rate(&self) -> f64 {
        self.params.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.params.lr = lr;
    }
}

/// Stochastic gradient descent with (optionally Nesterov) momentum and L2 weight decay,
/// following `torch.optim.SGD`.
#[derive(Debug)]
pub struct SgdMomentum {
    slots: Vec<(Var, Vec<f32>)>,
    params: SgdParams,
    started: bool,
}

/// Hyper-parameters of [`SgdMomentum`].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SgdParams {
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
}

impl Default for SgdParams {
    fn default() -> Self {
        SgdParams {
            lr: 1e-2,
            momentum: 0.9,
            weight_decay: 0.0,
            nesterov: false,
        }
    }
}

impl Optimizer for SgdMomentum {
    type Config = SgdParams;

    fn new(vars: Vec<Var>, params: SgdParams) -> candle_core::Result<Self> {
        let slots = vars
            .into_iter()
            .filter(|v| v.dtype().is_float())
            .map(|v| {
                let n = v.elem_count();
                (v, vec![0.0; n])
            })
            .collect();
        Ok(SgdMomentum {
            slots,
            params,
            started: false,
        })
    }

    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        let p = self.params;
        let (lr, mu, wd) = (p.lr as f32, p.momentum as f32, p.weight_decay as f32);
        let first = !self.started;
        self.started = true;
        for (var, buf) in &mut self.slots {
            update_in_place(var, grads, |w, g| {
                for i in 0..w.len() {
                    let gi = g[i] + wd * w[i];
                    // torch initialises the buffer with the first gradient.
                    buf[i] = if first { gi } else { mu * buf[i] + gi };
                    let d = if p.nesterov {
                        gi + mu * buf[i]
                    } else if mu != 0.0 {
                        buf[i]
                    } else {
                        gi
                    };
                    w[i] -= lr * d;
                }
            })?;
        }
        Ok(())
    }

    fn learning_rate(&self) -> f64 {
        self.params.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.params.lr = lr;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Adam's first step moves each weight by lr * g / (|g| + eps), i.e. by lr for |g| >> eps
    /// (PyTorch docs' algorithm box with bias correction at t = 1): a variable given a learning
    /// rate scale of 30 moves 30 times as far, the others as before.
    /// `sum((w - target)^2)`, the objective the optimizer tests minimise.
    fn squared_distance(w: &Var, target: f64) -> Tensor {
        (w.as_tensor() - target)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
    }

    #[test]
    fn lr_scale_multiplies_one_variables_step() {
        let a = Var::from_vec(vec![0f32, 0.0], 2, &Device::Cpu).unwrap();
        let b = Var::from_vec(vec![0f32, 0.0], 2, &Device::Cpu).unwrap();
        let params = AdamParams {
            lr: 1e-3,
            ..AdamParams::default()
        };
        let mut opt = Adam::new(vec![a.clone(), b.clone()], params).unwrap();
        assert!(opt.set_lr_scale(&b, 30.0));
        let stranger = Var::from_vec(vec![0f32], 1, &Device::Cpu).unwrap();
        assert!(!opt.set_lr_scale(&stranger, 2.0));
        // d/dw of sum(w) = 1 for every weight.
        let loss = (a.as_tensor().sum_all().unwrap() + b.as_tensor().sum_all().unwrap()).unwrap();
        opt.backward_step(&loss).unwrap();
        for v in a.as_tensor().to_vec1::<f32>().unwrap() {
            assert!((v + 1e-3).abs() < 1e-8, "{v}");
        }
        for v in b.as_tensor().to_vec1::<f32>().unwrap() {
            // f32 rounding of (1 - beta2) makes the step 1 + 7e-6 times lr.
            assert!((v + 30e-3).abs() < 1e-6, "{v}");
        }
    }

    /// Minimises f(w) = sum((w - 3)^2) from w = 0 and compares with an independent scalar
    /// transcription of torch.optim.Adam's update (PyTorch 2.x docs, algorithm box).
    #[test]
    fn adam_matches_the_reference_update_rule() {
        let w = Var::from_vec(vec![0f32, 1.0], 2, &Device::Cpu).unwrap();
        let params = AdamParams {
            lr: 0.1,
            weight_decay: 0.01,
            ..AdamParams::default()
        };
        let mut opt = Adam::new(vec![w.clone()], params).unwrap();
        let (mut ref_w, mut m, mut v) = ([0f64, 1.0], [0f64; 2], [0f64; 2]);
        for t in 1..=5 {
            let loss = squared_distance(&w, 3.0);
            opt.backward_step(&loss).unwrap();
            for i in 0..2 {
                let g = 2.0 * (ref_w[i] - 3.0) + 0.01 * ref_w[i];
                m[i] = 0.9 * m[i] + 0.1 * g;
                v[i] = 0.999 * v[i] + 0.001 * g * g;
                let mh = m[i] / (1.0 - 0.9f64.powi(t));
                let vh = v[i] / (1.0 - 0.999f64.powi(t));
                ref_w[i] -= 0.1 * mh / (vh.sqrt() + 1e-8);
            }
        }
        let got = w.as_tensor().to_vec1::<f32>().unwrap();
        for i in 0..2 {
            assert!(
                (got[i] as f64 - ref_w[i]).abs() < 1e-5,
                "{got:?} vs {ref_w:?}"
            );
        }
    }

    /// The CPU f32 update runs on the variable's own storage: tensors that share it (a layer
    /// built from the variable) see the new values, and the result equals the host-memory path
    /// that other dtypes and devices take (here an f64 copy of the same problem).
    #[test]
    fn adam_updates_in_place_and_matches_the_host_path() {
        let start = vec![0.5f32, -1.0, 2.0, 0.25];
        let w32 = Var::from_vec(start.clone(), (2, 2), &Device::Cpu).unwrap();
        let shared = w32.as_tensor().clone();
        let w64 = Var::from_vec(
            start.iter().map(|&v| v as f64).collect::<Vec<_>>(),
            (2, 2),
            &Device::Cpu,
        )
        .unwrap();
        let params = AdamParams {
            lr: 0.05,
            ..AdamParams::default()
        };
        let mut o32 = Adam::new(vec![w32.clone()], params).unwrap();
        let mut o64 = Adam::new(vec![w64.clone()], params).unwrap();
        for _ in 0..4 {
            o32.backward_step(&squared_distance(&w32, 1.0)).unwrap();
            o64.backward_step(&squared_distance(&w64, 1.0)).unwrap();
        }
        let flat = |t: &Tensor| t.flatten_all().unwrap();
        let a = flat(w32.as_tensor()).to_vec1::<f32>().unwrap();
        let b = flat(w64.as_tensor()).to_vec1::<f64>().unwrap();
        let c = flat(&shared).to_vec1::<f32>().unwrap();
        assert_eq!(
            a, c,
            "a tensor sharing the variable's storage sees the update"
        );
        for ((a, b), s) in a.iter().zip(&b).zip(&start) {
            assert!((*a as f64 - b).abs() < 1e-6, "{a} vs {b}");
            assert!((a - s).abs() > 0.1, "the weights moved");
        }
    }

    #[test]
    fn adam_splits_a_large_update_over_threads_with_the_serial_values() {
        // Above the threshold the update runs in chunks on the thread pool; each element's
        // arithmetic is the same, so the values equal a serial evaluation of PyTorch's rule bit
        // for bit, also across a chunk boundary that is not a multiple of the chunk length.
        let n = PARALLEL_UPDATE_MIN + 12_345;
        let start: Vec<f32> = (0..n).map(|i| ((i % 97) as f32 - 48.0) / 50.0).collect();
        let w = Var::from_vec(start.clone(), n, &Device::Cpu).unwrap();
        let params = AdamParams {
            lr: 0.01,
            weight_decay: 0.1,
            ..AdamParams::default()
        };
        let mut opt = Adam::new(vec![w.clone()], params).unwrap();
        let (mut expected, mut m, mut v) = (start.clone(), vec![0f32; n], vec![0f32; n]);
        let (b1, b2, eps, wd) = (0.9f32, 0.999f32, 1e-8f32, 0.1f32);
        for step in 1..=3 {
            // Loss sum(w^2 / 2): the gradient is w itself.
            let loss = (w.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.5).unwrap();
            opt.backward_step(&loss).unwrap();
            let step_size = (0.01 / (1.0 - 0.9f64.powi(step))) as f32;
            let bc2_sqrt = (1.0 - 0.999f64.powi(step)).sqrt() as f32;
            for i in 0..n {
                let gi = expected[i] + wd * expected[i];
                m[i] = b1 * m[i] + (1.0 - b1) * gi;
                v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
                expected[i] -= step_size * m[i] / (v[i].sqrt() / bc2_sqrt + eps);
            }
        }
        assert_eq!(w.as_tensor().to_vec1::<f32>().unwrap(), expected);
    }

    #[test]
    fn sgd_momentum_matches_torch_rule() {
        let w = Var::from_vec(vec![0f32], 1, &Device::Cpu).unwrap();
        let mut opt = SgdMomentum::new(
            vec![w.clone()],
            SgdParams {
                lr: 0.1,
                momentum: 0.9,
                ..Default::default()
            },
        )
        .unwrap();
        let (mut rw, mut b) = (0f64, 0f64);
        for t in 0..4 {
            let loss = squared_distance(&w, 3.0);
            opt.backward_step(&loss).unwrap();
            let g = 2.0 * (rw - 3.0);
            b = if t == 0 { g } else { 0.9 * b + g };
            rw -= 0.1 * b;
        }
        let got = w.as_tensor().to_vec1::<f32>().unwrap()[0] as f64;
        assert!((got - rw).abs() < 1e-5, "{got} vs {rw}");
    }

    #[test]
    fn bad_params_are_named() {
        let e = AdamParams {
            beta1: 1.5,
            ..Default::default()
        }
        .check()
        .unwrap_err()
        .to_string();
        assert!(e.contains("beta1"), "{e}");
    }
}

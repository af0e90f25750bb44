//! The supervised training loop shared by every classifier (N-ACT, ACTINN, the metadata MLP,
//! CIC's classifier head): seeded mini-batches from a sparse matrix, softmax cross-entropy,
//! an optimizer step per batch, the learning-rate schedule per epoch, divergence detection,
//! optional validation split with early stopping (restoring the best weights), and progress events.

use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use candle_nn::Optimizer;
use cellident_io::CsrMatrix;
use serde::{Deserialize, Serialize};

use crate::batch::{batches, dense_rows, epoch_order, label_rows, rng_for};
use crate::error::{Result, ensure_param};
use crate::optim::{Adam, AdamParams};
use crate::train::{
    EarlyStopping, EpochRecord, LrSchedule, Progress, StopDecision, TrainEvent, TrainReport,
    check_loss,
};

/// How to train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitParams {
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: AdamParams,
    pub schedule: LrSchedule,
    /// Fraction of the training cells held out (stratified by class) to monitor a validation
    /// loss; 0 disables validation and early stopping.
    pub validation_fraction: f64,
    /// Epochs without validation improvement before stopping (with `validation_fraction > 0`).
    pub patience: usize,
    pub seed: u64,
}

impl FitParams {
    /// Checks the ranges.
    pub fn check(&self) -> Result<()> {
        ensure_param(self.epochs > 0, "epochs", || "must be at least 1".into())?;
        ensure_param(self.batch_size > 0, "batch_size", || {
            "must be at least 1".into()
        })?;
        ensure_param(
            (0.0..0.9).contains(&self.validation_fraction),
            "validation_fraction",
            || format!("must be in [0, 0.9), got {}", self.validation_fraction),
        )?;
        self.schedule.check()?;
        self.optimizer.check()
    }
}

/// A network trained by [`fit_classifier`]: logits from a dense batch.
pub trait LogitNetwork {
    /// Pre-softmax logits `[batch, classes]` of a dense input `[batch, genes]`; `train` enables
    /// dropout-like behaviour where a network has it.
    fn logits(&self, x: &Tensor, train: bool) -> Result<Tensor>;
    /// The trainable variables.
    fn vars(&self) -> Vec<Var>;
    /// Variables trained at a multiple of the learning rate (PyTorch parameter groups);
    /// every other variable uses the rate itself.
    fn lr_scales(&self) -> Vec<(Var, f64)> {
        Vec::new()
    }
    /// Epochs at the start of training during which the [`LogitNetwork::lr_scales`] variables
    /// train at the rate itself (multiple 1); the multiples apply from this epoch on.
    fn lr_scale_warmup_epochs(&self) -> usize {
        0
    }
}

/// Splits the cells into (train, validation) stratified by class: `round(fraction * n)` of
/// each class with 4 or more cells is held out, chosen by shuffling with `rng`. Both lists sorted.
pub fn stratified_holdout(
    y: &[u32],
    fraction: f64,
    rng: &mut rand::rngs::StdRng,
) -> (Vec<usize>, Vec<usize>) {
    use rand::seq::SliceRandom;
    let mut by_class: std::collections::BTreeMap<u32, Vec<usize>> = Default::default();
    for (i, &c) in y.iter().enumerate() {
        by_class.entry(c).or_default().push(i);
    }
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for (_, mut m) in by_class {
        m.shuffle(rng);
        let k = if m.len() >= 4 {
            ((m.len() as f64) * fraction).round() as usize
        } else {
            0
        };
        val.extend_from_slice(&m[..k]);
        train.extend_from_slice(&m[k..]);
    }
    train.sort_unstable();
    val.sort_unstable();
    (train, val)
}

fn mean_loss(
    net: &dyn LogitNetwork,
    x: &CsrMatrix,
    y: &[u32],
    rows: &[usize],
    device: &Device,
) -> Result<f32> {
    let mut total = 0f64;
    for chunk in rows.chunks(4096) {
        let xb = dense_rows(x, chunk, device)?;
        let yb = label_rows(y, chunk, device)?;
        let loss = crate::nn::cross_entropy(&net.logits(&xb, false)?, &yb)?.to_scalar::<f32>()?;
        total += loss as f64 * chunk.len() as f64;
    }
    Ok((total / rows.len().max(1) as f64) as f32)
}

/// Trains `net` on `x` (`[cells, genes]`) with labels `y`.
pub fn fit_classifier(
    name: &str,
    net: &dyn LogitNetwork,
    x: &CsrMatrix,
    y: &[u32],
    params: &FitParams,
    device: &Device,
    progress: &mut dyn Progress,
) -> Result<TrainReport> {
    // Checked before the split (which relies on a valid fraction); the labels are checked
    // by `fit_classifier_on_rows`.
    params.check()?;
    let (train, val) = if params.validation_fraction > 0.0 {
        stratified_holdout(
            y,
            params.validation_fraction,
            &mut rng_for(params.seed, 0xA11D),
        )
    } else {
        ((0..y.len()).collect(), Vec::new())
    };
    fit_classifier_on_rows(name, net, x, y, &train, &val, params, device, progress)
}

/// Training cells delivered one mini-batch at a time: rows of an in-memory matrix
/// ([`RowsSource`]), or a file streamed through a shuffle buffer (cellident-preprocess's
/// Parquet source), so that memory is bounded by a batch and the model, not the dataset.
pub trait BatchSource {
    /// Input width (genes).
    fn n_genes(&self) -> usize;
    /// Training cells per epoch.
    fn n_cells(&self) -> usize;
    /// Calls `visit(x, y)` for every mini-batch of epoch `epoch`, in an order that depends only
    /// on the source's seed and `epoch`: `x` `[batch, genes]` f32 and `y` `[batch]` u32 class
    /// indices on `device`. Every training cell is visited once per epoch.
    fn for_each_batch(
        &mut self,
        epoch: usize,
        batch_size: usize,
        device: &Device,
        visit: &mut dyn FnMut(&Tensor, &Tensor) -> Result<()>,
    ) -> Result<()>;
    /// Mean input of each gene over the training cells (`[genes]`), accumulated in f64.
    fn column_means(&mut self) -> Result<Vec<f32>>;
}

/// Streamed training has no held-out cells, so no validation split and no early stopping:
/// a model's `validation_fraction` must be 0 before it trains from a [`BatchSource`].
pub fn ensure_no_validation_split(validation_fraction: f64) -> Result<()> {
    ensure_param(validation_fraction == 0.0, "validation_fraction", || {
        "streamed training has no validation hold-out; set it to 0".into()
    })
}

/// The rows `rows` of an in-memory matrix, shuffled each epoch by [`epoch_order`].
#[derive(Debug, Clone, Copy)]
pub struct RowsSource<'a> {
    pub x: &'a CsrMatrix,
    pub y: &'a [u32],
    pub rows: &'a [usize],
    pub seed: u64,
}

impl BatchSource for RowsSource<'_> {
    fn n_genes(&self) -> usize {
        self.x.n_cols()
    }
    fn n_cells(&self) -> usize {
        self.rows.len()
    }
    fn for_each_batch(
        &mut self,
        epoch: usize,
        batch_size: usize,
        device: &Device,
        visit: &mut dyn FnMut(&Tensor, &Tensor) -> Result<()>,
    ) -> Result<()> {
        let order: Vec<usize> = epoch_order(self.rows.len(), self.seed, epoch)
            .into_iter()
            .map(|i| self.rows[i])
            .collect();
        for rows in batches(&order, batch_size, false) {
            visit(
                &dense_rows(self.x, rows, device)?,
                &label_rows(self.y, rows, device)?,
            )?;
        }
        Ok(())
    }
    fn column_means(&mut self) -> Result<Vec<f32>> {
        let mut sums = vec![0f64; self.x.n_cols()];
        for &r in self.rows {
            let (idx, val) = self.x.row(r);
            for (&j, &v) in idx.iter().zip(val) {
                sums[j as usize] += v as f64;
            }
        }
        let n = self.rows.len().max(1) as f64;
        Ok(sums.into_iter().map(|s| (s / n) as f32).collect())
    }
}

/// Held-out cells whose mean loss decides early stopping.
#[derive(Debug, Clone, Copy)]
pub struct Validation<'a> {
    pub x: &'a CsrMatrix,
    pub y: &'a [u32],
    pub rows: &'a [usize],
}

/// [`fit_classifier`] with the training and validation rows given (`val` empty: no early
/// stopping); `params.validation_fraction` is ignored.
#[allow(clippy::too_many_arguments)]
pub fn fit_classifier_on_rows(
    name: &str,
    net: &dyn LogitNetwork,
    x: &CsrMatrix,
    y: &[u32],
    train: &[usize],
    val: &[usize],
    params: &FitParams,
    device: &Device,
    progress: &mut dyn Progress,
) -> Result<TrainReport> {
    params.check()?;
    ensure_param(x.n_rows() == y.len(), "labels", || {
        format!("{} labels for {} cells", y.len(), x.n_rows())
    })?;
    ensure_param(!train.is_empty(), "labels", || "no training cells".into())?;
    ensure_param(
        train.iter().chain(val).all(|&i| i < y.len()),
        "rows",
        || format!("a row index is not below the {} cells", y.len()),
    )?;
    let mut source = RowsSource {
        x,
        y,
        rows: train,
        seed: params.seed,
    };
    let validation = (!val.is_empty()).then_some(Validation { x, y, rows: val });
    fit_classifier_source(name, net, &mut source, validation, params, device, progress)
}

/// The training loop over any [`BatchSource`]: per epoch the scheduled learning rate, one Adam
/// step per batch (divergence stops it with an error), then the validation loss and early
/// stopping (restoring the best weights) when `validation` is given.
pub fn fit_classifier_source(
    name: &str,
    net: &dyn LogitNetwork,
    source: &mut dyn BatchSource,
    validation: Option<Validation<'_>>,
    params: &FitParams,
    device: &Device,
    progress: &mut dyn Progress,
) -> Result<TrainReport> {
    params.check()?;
    ensure_param(source.n_cells() > 0, "labels", || {
        "no training cells".into()
    })?;
    let started = Instant::now();
    let vars = net.vars();
    let mut opt = Adam::new(vars.clone(), params.optimizer)?;
    let lr_scales = net.lr_scales();
    for (_, scale) in &lr_scales {
        ensure_param(*scale > 0.0 && scale.is_finite(), "lr_scale", || {
            format!("must be > 0, got {scale}")
        })?;
    }
    let warmup = net.lr_scale_warmup_epochs();
    let mut stopper = match validation {
        Some(_) => Some(EarlyStopping::new(params.patience.max(1), 0.0)?),
        None => None,
    };
    let mut best: Option<Vec<Tensor>> = None;
    let n_batches = source.n_cells().div_ceil(params.batch_size);
    progress.event(&TrainEvent::Start {
        model: name.to_string(),
        epochs: params.epochs,
        batches_per_epoch: n_batches,
    });
    let mut report = TrainReport::default();
    let mut step = 0usize;
    for epoch in 0..params.epochs {
        let lr = params.schedule.lr_at_step(params.optimizer.lr, epoch, step);
        opt.set_learning_rate(lr);
        if epoch == 0 || epoch == warmup {
            for (var, scale) in &lr_scales {
                opt.set_lr_scale(var, if epoch < warmup { 1.0 } else { *scale });
            }
        }
        let (mut sum, mut seen, mut b) = (0f64, 0usize, 0usize);
        source.for_each_batch(epoch, params.batch_size, device, &mut |xb, yb| {
            if params.schedule.is_per_step() {
                opt.set_learning_rate(params.schedule.lr_at_step(params.optimizer.lr, epoch, step));
            }
            step += 1;
            let loss = crate::nn::cross_entropy(&net.logits(xb, true)?, yb)?;
            let value = loss.to_scalar::<f32>()?;
            check_loss(value, epoch, b)?;
            opt.step(&crate::nn::backward(&loss)?)?;
            let rows = yb.dims1()?;
            sum += value as f64 * rows as f64;
            seen += rows;
            progress.event(&TrainEvent::Batch {
                epoch,
                batch: b,
                loss: value,
            });
            b += 1;
            Ok(())
        })?;
        let val_loss = match validation {
            None => None,
            Some(v) => Some(mean_loss(net, v.x, v.y, v.rows, device)?),
        };
        let record = EpochRecord {
            epoch,
            train_loss: (sum / seen.max(1) as f64) as f32,
            val_loss,
            lr,
        };
        progress.event(&TrainEvent::Epoch(record.clone()));
        report.epochs.push(record);
        report.kept_epoch = epoch;
        if let (Some(s), Some(v)) = (stopper.as_mut(), val_loss) {
            match s.update(epoch, v as f64) {
                StopDecision::Improved => {
                    best = Some(
                        vars.iter()
                            .map(|v| v.as_tensor().copy())
                            .collect::<candle_core::Result<_>>()?,
                    )
                }
                StopDecision::Continue => {}
                StopDecision::Stop => {
                    report.stopped_early = true;
                    break;
                }
            }
        }
    }
    if let (Some(s), Some(snapshot)) = (&stopper, best) {
        for (v, t) in vars.iter().zip(snapshot) {
            v.set(&t)?;
        }
        report.kept_epoch = s.best_epoch().unwrap_or(report.kept_epoch);
    }
    progress.event(&TrainEvent::Finish);
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Class probabilities `[cells, classes]` of `x`, in batches of `batch` cells.
pub fn predict_proba(
    net: &dyn LogitNetwork,
    x: &CsrMatrix,
    device: &Device,
    batch: usize,
) -> Result<crate::DenseMatrix> {
    let rows: Vec<usize> = (0..x.n_rows()).collect();
    let mut values = Vec::new();
    let mut n_classes = 0;
    for chunk in rows.chunks(batch.max(1)) {
        let xb = dense_rows(x, chunk, device)?;
        let p = crate::nn::softmax(&net.logits(&xb, false)?)?;
        n_classes = p.dims2()?.1;
        values.extend(p.flatten_all()?.to_vec1::<f32>()?);
    }
    crate::DenseMatrix::new(x.n_rows(), n_classes, values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NoProgress;

    /// Logits = the variable `w` itself for every cell (the input is ignored).
    struct Constant {
        w: Var,
        scale: f64,
        warmup: usize,
    }

    impl LogitNetwork for Constant {
        fn logits(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
            let n = x.dims2()?.0;
            Ok(self
                .w
                .as_tensor()
                .unsqueeze(0)?
                .broadcast_as((n, 2))?
                .contiguous()?)
        }
        fn vars(&self) -> Vec<Var> {
            vec![self.w.clone()]
        }
        fn lr_scales(&self) -> Vec<(Var, f64)> {
            vec![(self.w.clone(), self.scale)]
        }
        fn lr_scale_warmup_epochs(&self) -> usize {
            self.warmup
        }
    }

    /// How far `w[0]` moves in each of `epochs` one-step epochs (one cell, batch 1): training
    /// for 1, 2, … epochs from zero and differencing, as Adam's state lives in one run.
    fn steps(scale: f64, warmup: usize, epochs: usize) -> Vec<f32> {
        let net = Constant {
            w: Var::from_vec(vec![0f32, 0.0], 2, &Device::Cpu).unwrap(),
            scale,
            warmup,
        };
        let x = CsrMatrix::from_dense(1, 1, &[1.0]).unwrap();
        let mut position = vec![0f32];
        for e in 1..=epochs {
            net.w
                .set(&Tensor::zeros(2, candle_core::DType::F32, &Device::Cpu).unwrap())
                .unwrap();
            let params = FitParams {
                epochs: e,
                batch_size: 1,
                optimizer: AdamParams {
                    lr: 1e-3,
                    ..AdamParams::default()
                },
                schedule: LrSchedule::Constant,
                validation_fraction: 0.0,
                patience: 1,
                seed: 0,
            };
            fit_classifier(
                "test",
                &net,
                &x,
                &[0],
                &params,
                &Device::Cpu,
                &mut NoProgress,
            )
            .unwrap();
            position.push(net.w.as_tensor().to_vec1::<f32>().unwrap()[0]);
        }
        position.windows(2).map(|w| w[1] - w[0]).collect()
    }

    /// Adam's first step moves a weight by lr (PyTorch's algorithm at t = 1, |g| >> eps): with
    /// a 30x multiple from the start it moves 30 lr; with one warm-up epoch the first step is
    /// lr and the second, at 30x, moves more than 10 lr (Adam's step at t = 2 for a gradient of
    /// steady sign is about lr times the multiple).
    #[test]
    fn lr_scale_applies_after_the_warmup_epochs() {
        let plain = steps(30.0, 0, 1);
        assert!((plain[0] - 30e-3).abs() < 1e-5, "{plain:?}");
        let warm = steps(30.0, 1, 2);
        assert!((warm[0] - 1e-3).abs() < 1e-6, "{warm:?}");
        assert!(warm[1] > 10e-3, "{warm:?}");
    }
}

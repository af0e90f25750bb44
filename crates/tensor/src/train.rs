//! Training utilities shared by every model: learning-rate schedules, early stopping on a
//! validation split, progress reporting and divergence detection.

use serde::{Deserialize, Serialize};

use crate::error::{Result, TensorError, ensure_param};

/// A learning-rate schedule: the rate used during epoch `e` (0-based) given a base rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LrSchedule {
    /// The base rate throughout.
    Constant,
    /// Multiply by `factor` once after each listed epoch has finished. N-ACT's schedule is
    /// `factor = 0.95`, `epochs = [25, 30, 35, 40, 45]` (an `ExponentialLR` stepped at those epochs).
    MultiplyAfterEpochs { factor: f64, epochs: Vec<usize> },
    /// Multiply by `factor` every `every` epochs (step decay).
    StepDecay { factor: f64, every: usize },
    /// Cosine annealing from the base rate to `min_lr` over `total_epochs`.
    Cosine { total_epochs: usize, min_lr: f64 },
    /// Multiply by `factor` after every `every` optimiser steps, counted over the whole run
    /// (ACTINN-PyTorch: `ExponentialLR(0.95)` stepped after step `i` when `i % 1000 == 0`,
    /// `i > 0`, so steps `0..=1000` use the base rate and `1001..=2000` the base × 0.95).
    MultiplyEverySteps { factor: f64, every: usize },
}

impl LrSchedule {
    /// N-ACT's reference schedule (`--lr_decay --decay_epoch 25 --decay_frequency 5`, 50 epochs).
    pub fn nact_default() -> Self {
        LrSchedule::MultiplyAfterEpochs {
            factor: 0.95,
            epochs: vec![25, 30, 35, 40, 45],
        }
    }

    /// ACTINN-PyTorch's schedule: × 0.95 every 1,000 steps.
    pub fn actinn_default() -> Self {
        LrSchedule::MultiplyEverySteps {
            factor: 0.95,
            every: 1000,
        }
    }

    /// Whether the rate changes between the steps of one epoch (so a training loop must ask
    /// [`LrSchedule::lr_at_step`] before each step, not only [`LrSchedule::lr_at`] per epoch).
    pub fn is_per_step(&self) -> bool {
        matches!(self, LrSchedule::MultiplyEverySteps { .. })
    }

    /// Checks the ranges (`factor > 0`, `every >= 1`).
    pub fn check(&self) -> Result<()> {
        let factor = match self {
            LrSchedule::MultiplyAfterEpochs { factor, .. }
            | LrSchedule::StepDecay { factor, .. } => *factor,
            LrSchedule::MultiplyEverySteps { factor, every } => {
                ensure_param(*every >= 1, "schedule.every", || {
                    "must be at least 1 step".into()
                })?;
                *factor
            }
            LrSchedule::Constant | LrSchedule::Cosine { .. } => return Ok(()),
        };
        ensure_param(
            factor > 0.0 && factor.is_finite(),
            "schedule.factor",
            || format!("must be > 0, got {factor}"),
        )
    }

    /// The rate of the optimiser step `step` (0-based, counted over the whole run) during
    /// epoch `epoch`: [`LrSchedule::lr_at`] for the per-epoch schedules.
    pub fn lr_at_step(&self, base: f64, epoch: usize, step: usize) -> f64 {
        match self {
            LrSchedule::MultiplyEverySteps { factor, every } => {
                base * factor.powi((step.saturating_sub(1) / (*every).max(1)) as i32)
            }
            _ => self.lr_at(base, epoch),
        }
    }

    /// The rate during epoch `epoch` (for a per-step schedule, the rate of its first step when
    /// nothing is known of the steps: the base rate).
    pub fn lr_at(&self, base: f64, epoch: usize) -> f64 {
        match self {
            LrSchedule::Constant | LrSchedule::MultiplyEverySteps { .. } => base,
            LrSchedule::MultiplyAfterEpochs { factor, epochs } => {
                base * factor.powi(epochs.iter().filter(|&&m| m < epoch).count() as i32)
            }
            LrSchedule::StepDecay { factor, every } => {
                base * factor.powi((epoch / (*every).max(1)) as i32)
            }
            LrSchedule::Cosine {
                total_epochs,
                min_lr,
            } => {
                let t = (epoch as f64 / (*total_epochs).max(1) as f64).min(1.0);
                min_lr + 0.5 * (base - min_lr) * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }
}

/// What early stopping decided after an epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopDecision {
    /// The monitored loss improved: keep (snapshot) this model.
    Improved,
    /// No improvement yet, patience left.
    Continue,
    /// Patience exhausted: stop and restore the best snapshot.
    Stop,
}

/// Early stopping on a validation loss: stop after `patience` epochs without an improvement
/// larger than `min_delta`.
#[derive(Debug, Clone)]
pub struct EarlyStopping {
    patience: usize,
    min_delta: f64,
    best: f64,
    best_epoch: Option<usize>,
    bad_epochs: usize,
}

impl EarlyStopping {
    pub fn new(patience: usize, min_delta: f64) -> Result<Self> {
        ensure_param(patience > 0, "patience", || "must be at least 1".into())?;
        ensure_param(min_delta >= 0.0, "min_delta", || {
            format!("must be >= 0, got {min_delta}")
        })?;
        Ok(EarlyStopping {
            patience,
            min_delta,
            best: f64::INFINITY,
            best_epoch: None,
            bad_epochs: 0,
        })
    }

    /// Records the validation loss of `epoch`.
    pub fn update(&mut self, epoch: usize, val_loss: f64) -> StopDecision {
        if val_loss < self.best - self.min_delta {
            self.best = val_loss;
            self.best_epoch = Some(epoch);
            self.bad_epochs = 0;
            StopDecision::Improved
        } else {
            self.bad_epochs += 1;
            if self.bad_epochs >= self.patience {
                StopDecision::Stop
            } else {
                StopDecision::Continue
            }
        }
    }

    /// The epoch with the best loss so far.
    pub fn best_epoch(&self) -> Option<usize> {
        self.best_epoch
    }

    /// The best loss so far.
    pub fn best_loss(&self) -> f64 {
        self.best
    }
}

/// Fails with [`TensorError::Diverged`] when a loss is NaN or infinite.
pub fn check_loss(loss: f32, epoch: usize, batch: usize) -> Result<()> {
    if loss.is_finite() {
        Ok(())
    } else {
        Err(TensorError::Diverged { epoch, batch, loss })
    }
}

/// Events a training loop reports.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainEvent {
    /// Training starts: `epochs` epochs of `batches_per_epoch` batches.
    Start {
        model: String,
        epochs: usize,
        batches_per_epoch: usize,
    },
    /// A batch finished with this mean loss.
    Batch {
        epoch: usize,
        batch: usize,
        loss: f32,
    },
    /// An epoch finished.
    Epoch(EpochRecord),
    /// Training finished.
    Finish,
}

/// Losses of one epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub train_loss: f32,
    pub val_loss: Option<f32>,
    pub lr: f64,
}

/// Receives training events (the CLI draws progress bars from them).
pub trait Progress {
    fn event(&mut self, event: &TrainEvent);
}

/// Ignores every event.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&mut self, _: &TrainEvent) {}
}

/// Keeps every epoch record (for loss curves in reports and for tests).
#[derive(Debug, Default, Clone)]
pub struct RecordProgress {
    pub epochs: Vec<EpochRecord>,
}

impl Progress for RecordProgress {
    fn event(&mut self, event: &TrainEvent) {
        if let TrainEvent::Epoch(r) = event {
            self.epochs.push(r.clone());
        }
    }
}

/// What a finished training run reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    pub epochs: Vec<EpochRecord>,
    /// Epoch whose weights were kept (the last one, or the best one under early stopping).
    pub kept_epoch: usize,
    pub stopped_early: bool,
    pub seconds: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nact_schedule_decays_after_the_milestones() {
        let s = LrSchedule::nact_default();
        assert_eq!(s.lr_at(1e-4, 0), 1e-4);
        assert_eq!(s.lr_at(1e-4, 25), 1e-4);
        assert!((s.lr_at(1e-4, 26) - 0.95e-4).abs() < 1e-15);
        assert!((s.lr_at(1e-4, 49) - 1e-4 * 0.95f64.powi(5)).abs() < 1e-15);
    }

    #[test]
    fn actinn_schedule_decays_after_every_thousand_steps_as_pytorch() {
        // torch: opt.step(); if i % 1000 == 0 and i != 0: ExponentialLR(0.95).step() — so
        // step 1000 still runs at the base rate and step 1001 at 0.95 of it.
        let s = LrSchedule::actinn_default();
        assert!(s.is_per_step());
        assert_eq!(s.lr_at_step(1e-4, 0, 0), 1e-4);
        assert_eq!(s.lr_at_step(1e-4, 7, 1000), 1e-4);
        assert!((s.lr_at_step(1e-4, 7, 1001) - 0.95e-4).abs() < 1e-15);
        assert!((s.lr_at_step(1e-4, 9, 2000) - 0.95e-4).abs() < 1e-15);
        assert!((s.lr_at_step(1e-4, 9, 2001) - 1e-4 * 0.9025).abs() < 1e-15);
        assert!(!LrSchedule::nact_default().is_per_step());
        assert!(
            LrSchedule::MultiplyEverySteps {
                factor: 0.95,
                every: 0
            }
            .check()
            .is_err()
        );
    }

    #[test]
    fn cosine_ends_at_min_lr() {
        let s = LrSchedule::Cosine {
            total_epochs: 10,
            min_lr: 1e-5,
        };
        assert!((s.lr_at(1e-3, 0) - 1e-3).abs() < 1e-12);
        assert!((s.lr_at(1e-3, 10) - 1e-5).abs() < 1e-12);
    }

    #[test]
    fn early_stopping_waits_for_patience() {
        let mut e = EarlyStopping::new(2, 0.0).unwrap();
        assert_eq!(e.update(0, 1.0), StopDecision::Improved);
        assert_eq!(e.update(1, 0.5), StopDecision::Improved);
        assert_eq!(e.update(2, 0.6), StopDecision::Continue);
        assert_eq!(e.update(3, 0.7), StopDecision::Stop);
        assert_eq!(e.best_epoch(), Some(1));
    }

    #[test]
    fn divergence_names_the_epoch() {
        let e = check_loss(f32::NAN, 7, 3).unwrap_err().to_string();
        assert!(e.contains("epoch 7") && e.contains("batch 3"), "{e}");
        assert!(check_loss(0.5, 0, 0).is_ok());
    }
}

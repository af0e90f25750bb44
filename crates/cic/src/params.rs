//! CIC's hyper-parameters: `CicParams` (what a user writes) -> `check()` -> `CicConfig`.

use cellident_tensor::{Activation, CheckParams, LrSchedule, Result, ensure_param};
use serde::{Deserialize, Serialize};

/// How the weights are updated.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CicOptimizer {
    /// Plain stochastic gradient descent (the paper: one sample per update, lr 0.001-0.003).
    Sgd { lr: f64, momentum: f64 },
    /// Adam with an optional L2 penalty on the gradient (`torch.optim.Adam(weight_decay=...)`).
    Adam { lr: f64, weight_decay: f64 },
}

impl CicOptimizer {
    /// The base learning rate.
    pub fn lr(&self) -> f64 {
        match *self {
            CicOptimizer::Sgd { lr, .. } | CicOptimizer::Adam { lr, .. } => lr,
        }
    }
}

/// How the autoencoder's weights start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CicInit {
    /// PyTorch's default `nn.Linear` initialisation everywhere (what the paper's Torch7 did).
    Random,
    /// Start at the PCA solution of the training cells: `code_dim` pairs of hidden units hold
    /// `logsigmoid(z)` and `logsigmoid(-z)`, whose difference is exactly `z`, so the encoder
    /// starts as the (whitened) PCA projection and the decoder as its inverse; the remaining
    /// hidden units start with random input weights and zero output weights. Training then
    /// moves away from PCA only where that lowers the loss (docs/cic.md).
    Pca,
}

/// Hyper-parameters of CIC. [`CicParams::default`] is cellident's recipe; [`CicParams::reference`]
/// the paper's training as far as it is described (methods.md "Open questions" item 5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CicParams {
    /// Input genes: the `n_top_genes` with the highest variance over the training cells (all
    /// genes when there are fewer; 0 = all).
    pub n_top_genes: usize,
    /// Width of the two hidden layers (encoder and decoder).
    pub hidden: usize,
    /// Size of the code (the paper's 30).
    pub code_dim: usize,
    /// Non-linearity of the hidden layers (the paper chose LogSigmoid).
    pub activation: Activation,
    /// Hidden ReLU units of the classifier head (0 = softmax directly on the code).
    pub classifier_hidden: usize,
    /// Weight of the reconstruction MSE in the loss.
    pub reconstruction_weight: f64,
    /// Weight of the cross-entropy of the classifier head (classifier autoencoder only).
    pub classification_weight: f64,
    pub optimizer: CicOptimizer,
    /// Learning rate of the classifier head (same optimizer kind); `None` = the optimizer's.
    /// A PCA-started autoencoder wants small steps, a fresh head larger ones.
    pub classifier_lr: Option<f64>,
    /// L2 penalty of the classifier head (Adam only, added to the gradient as
    /// `torch.optim.Adam(weight_decay=...)`); `None` = the optimizer's `weight_decay`. Lets the
    /// fresh head be regularised without pulling the PCA-started autoencoder off its solution.
    #[serde(default)]
    pub classifier_weight_decay: Option<f64>,
    pub batch_size: usize,
    /// Upper bound on epochs (early stopping may end training sooner).
    pub max_epochs: usize,
    pub schedule: LrSchedule,
    /// Fraction of the training cells held out (stratified by class when labels are given) to
    /// monitor the loss for early stopping; 0 trains for `max_epochs`.
    pub validation_fraction: f64,
    /// Epochs without validation improvement before stopping.
    pub patience: usize,
    /// Standard deviation of Gaussian noise added to the scaled input during training (a
    /// denoising autoencoder; the target stays the clean profile). 0 = none.
    pub input_noise: f64,
    /// How the weights start.
    pub init: CicInit,
    /// Start the output layer's bias at the training mean of each gene, so that the network
    /// begins at the mean profile and learns the deviations from it.
    pub mean_output_bias: bool,
    pub seed: u64,
}

impl Default for CicParams {
    /// cellident's recipe (docs/cic.md "Training it better"): start at the PCA solution,
    /// small Adam steps for the autoencoder (3e-5) and larger ones for the fresh classifier
    /// head (3e-3), the reconstruction MSE weighted 30:1 against the cross-entropy so that
    /// classification shapes the code without undoing the reconstruction, mini-batches of 64,
    /// 40 epochs, no validation split (every training cell is used; model selection by a
    /// held-out split cost more than it bought on small bulk sets).
    fn default() -> Self {
        CicParams {
            reconstruction_weight: 30.0,
            optimizer: CicOptimizer::Adam {
                lr: 3e-5,
                weight_decay: 0.0,
            },
            classifier_lr: Some(3e-3),
            batch_size: 64,
            max_epochs: 40,
            schedule: LrSchedule::Constant,
            validation_fraction: 0.0,
            patience: 10,
            input_noise: 0.0,
            init: CicInit::Pca,
            ..CicParams::reference()
        }
    }
}

impl CicParams {
    /// The paper's training as methods.md reads it: plain SGD on one sample per update,
    /// lr 0.003 halved every 10 epochs, 40 epochs, no validation, default initialisation.
    pub fn reference() -> Self {
        CicParams {
            n_top_genes: 1000,
            hidden: 2000,
            code_dim: 30,
            activation: Activation::LogSigmoid,
            classifier_hidden: 30,
            reconstruction_weight: 1.0,
            classification_weight: 1.0,
            optimizer: CicOptimizer::Sgd {
                lr: 3e-3,
                momentum: 0.0,
            },
            classifier_lr: None,
            classifier_weight_decay: None,
            batch_size: 1,
            max_epochs: 40,
            schedule: LrSchedule::StepDecay {
                factor: 0.5,
                every: 10,
            },
            validation_fraction: 0.0,
            patience: 20,
            input_noise: 0.0,
            mean_output_bias: false,
            init: CicInit::Random,
            seed: 0,
        }
    }
}

/// Validated [`CicParams`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CicConfig(pub(crate) CicParams);

impl CicConfig {
    /// The checked parameters.
    pub fn params(&self) -> &CicParams {
        &self.0
    }
}

impl CheckParams for CicParams {
    type Checked = CicConfig;

    fn check(&self) -> Result<CicConfig> {
        ensure_param(self.hidden > 0, "hidden", || "must be at least 1".into())?;
        ensure_param(self.code_dim > 0, "code_dim", || {
            "must be at least 1".into()
        })?;
        ensure_param(
            self.reconstruction_weight >= 0.0 && self.classification_weight >= 0.0,
            "loss weights",
            || "reconstruction_weight and classification_weight must be >= 0".into(),
        )?;
        ensure_param(
            self.reconstruction_weight > 0.0 || self.classification_weight > 0.0,
            "loss weights",
            || "at least one loss weight must be > 0".into(),
        )?;
        let lr = self.optimizer.lr();
        ensure_param(lr > 0.0 && lr.is_finite(), "lr", || {
            format!("must be > 0, got {lr}")
        })?;
        match self.optimizer {
            CicOptimizer::Sgd { momentum, .. } => {
                ensure_param((0.0..1.0).contains(&momentum), "momentum", || {
                    format!("must be in [0, 1), got {momentum}")
                })?
            }
            CicOptimizer::Adam { weight_decay, .. } => {
                ensure_param(weight_decay >= 0.0, "weight_decay", || {
                    format!("must be >= 0, got {weight_decay}")
                })?
            }
        }
        if let Some(lr) = self.classifier_lr {
            ensure_param(lr > 0.0 && lr.is_finite(), "classifier_lr", || {
                format!("must be > 0, got {lr}")
            })?;
        }
        if let Some(wd) = self.classifier_weight_decay {
            ensure_param(
                wd >= 0.0 && wd.is_finite(),
                "classifier_weight_decay",
                || format!("must be >= 0, got {wd}"),
            )?;
            ensure_param(
                matches!(self.optimizer, CicOptimizer::Adam { .. }),
                "classifier_weight_decay",
                || "needs the Adam optimizer (SGD here has no weight decay)".into(),
            )?;
        }
        ensure_param(self.batch_size > 0, "batch_size", || {
            "must be at least 1".into()
        })?;
        ensure_param(self.max_epochs > 0, "max_epochs", || {
            "must be at least 1".into()
        })?;
        ensure_param(
            (0.0..0.9).contains(&self.validation_fraction),
            "validation_fraction",
            || format!("must be in [0, 0.9), got {}", self.validation_fraction),
        )?;
        ensure_param(self.patience > 0, "patience", || {
            "must be at least 1".into()
        })?;
        ensure_param(
            self.input_noise >= 0.0 && self.input_noise.is_finite(),
            "input_noise",
            || format!("must be >= 0, got {}", self.input_noise),
        )?;
        Ok(CicConfig(self.clone()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert!(CicParams::default().check().is_ok());
        assert!(CicParams::reference().check().is_ok());
        let bad = CicParams {
            code_dim: 0,
            ..CicParams::default()
        };
        assert!(bad.check().unwrap_err().to_string().contains("code_dim"));
        let bad = CicParams {
            input_noise: -1.0,
            ..CicParams::default()
        };
        assert!(bad.check().unwrap_err().to_string().contains("input_noise"));
        let bad = CicParams {
            classifier_weight_decay: Some(-0.1),
            ..CicParams::default()
        };
        assert!(
            bad.check()
                .unwrap_err()
                .to_string()
                .contains("classifier_weight_decay")
        );
        let bad = CicParams {
            classifier_weight_decay: Some(0.01),
            ..CicParams::reference()
        };
        assert!(bad.check().unwrap_err().to_string().contains("Adam"));
    }

    #[test]
    fn params_without_the_head_decay_still_parse() {
        // Parameter files and saved models written before the field existed.
        let mut v = serde_json::to_value(CicParams::default()).unwrap();
        v.as_object_mut().unwrap().remove("classifier_weight_decay");
        let p: CicParams = serde_json::from_value(v).unwrap();
        assert_eq!(p.classifier_weight_decay, None);
    }
}

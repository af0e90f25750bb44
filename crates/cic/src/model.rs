//! The CIC model: training (autoencoder or classifier autoencoder), encoding, decoding,
//! classification and checkpoints.

use std::path::Path;
use std::time::Instant;

use candle_core::{Device, Tensor};
use candle_nn::{Optimizer, VarMap};
use cellident_io::CsrMatrix;
use cellident_tensor::batch::{batches, epoch_order, label_rows, matrix_rows, rng_for};
use cellident_tensor::{
    AdamParams, CheckParams, CheckpointMeta, Classifier, DenseMatrix, DifferentiableClassifier,
    Embedder, EpochRecord, FeedForward, FeedForwardLayer, FeedForwardNet, Progress, Result,
    SgdParams, TensorError, TrainEvent, TrainReport, check_loss, ensure_gene_count, ensure_labels,
    ensure_param, stratified_holdout,
};
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

use crate::input::InputScaler;
use crate::network::{CicNetwork, Shape, init_from_pca, set_var};
use crate::params::{CicConfig, CicInit, CicOptimizer, CicParams};

const NAME: &str = "CIC";
/// Cells per forward pass when encoding, decoding or predicting.
const CHUNK: usize = 1024;

/// A CIC model: untrained until [`Cic::fit_autoencoder`] or [`Classifier::fit`] has run.
pub struct Cic {
    config: CicConfig,
    device: Device,
    vars: VarMap,
    trained: Option<Trained>,
}

#[derive(Clone)]
struct Trained {
    scaler: InputScaler,
    net: CicNetwork,
    n_classes: Option<usize>,
}

impl std::fmt::Debug for Cic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cic")
            .field("config", &self.config)
            .field("trained", &self.trained.is_some())
            .finish()
    }
}

/// What the checkpoint sidecar's `extra` holds besides the config.
#[derive(Serialize, Deserialize)]
struct Extra {
    scaler: InputScaler,
    n_classes: Option<usize>,
}

enum Opt {
    Adam(cellident_tensor::Adam),
    Sgd(cellident_tensor::SgdMomentum),
}

impl Opt {
    fn new(vars: Vec<candle_core::Var>, o: CicOptimizer) -> Result<Self> {
        Ok(match o {
            CicOptimizer::Adam { lr, weight_decay } => Opt::Adam(cellident_tensor::Adam::new(
                vars,
                AdamParams {
                    lr,
                    weight_decay,
                    ..AdamParams::default()
                },
            )?),
            CicOptimizer::Sgd { lr, momentum } => Opt::Sgd(cellident_tensor::SgdMomentum::new(
                vars,
                SgdParams {
                    lr,
                    momentum,
                    weight_decay: 0.0,
                    nesterov: false,
                },
            )?),
        })
    }
    fn set_lr(&mut self, lr: f64) {
        match self {
            Opt::Adam(o) => o.set_learning_rate(lr),
            Opt::Sgd(o) => o.set_learning_rate(lr),
        }
    }
    fn step(&mut self, grads: &candle_core::backprop::GradStore) -> Result<()> {
        match self {
            Opt::Adam(o) => o.step(grads)?,
            Opt::Sgd(o) => o.step(grads)?,
        }
        Ok(())
    }
}

impl Cic {
    /// A new, untrained model.
    pub fn new(config: CicConfig, device: Device) -> Self {
        Cic {
            config,
            device,
            vars: VarMap::new(),
            trained: None,
        }
    }

    /// Checks `params` and makes a model on the CPU.
    pub fn with_params(params: &CicParams) -> Result<Self> {
        Ok(Cic::new(params.check()?, Device::Cpu))
    }

    pub fn config(&self) -> &CicConfig {
        &self.config
    }

    fn trained(&self) -> Result<&Trained> {
        self.trained
            .as_ref()
            .ok_or_else(|| TensorError::InvalidParam {
                name: "model",
                message: "CIC is not trained (call fit or fit_autoencoder first)".into(),
            })
    }

    /// The input transform (selected genes and their scaling) of the trained model.
    pub fn scaler(&self) -> Result<&InputScaler> {
        Ok(&self.trained()?.scaler)
    }

    /// Indices (into the training data's genes) of the model's input genes, ascending.
    pub fn selected_genes(&self) -> Result<&[usize]> {
        Ok(&self.trained()?.scaler.genes)
    }

    /// Trains the plain autoencoder (reconstruction loss only) on `x` (`[cells, genes]`).
    pub fn fit_autoencoder(
        &mut self,
        x: &CsrMatrix,
        progress: &mut dyn Progress,
    ) -> Result<TrainReport> {
        self.train(x, None, progress)
    }

    fn train(
        &mut self,
        x: &CsrMatrix,
        labels: Option<(&[u32], usize)>,
        progress: &mut dyn Progress,
    ) -> Result<TrainReport> {
        let started = Instant::now();
        let p = self.config.params().clone();
        if let Some((y, c)) = labels {
            ensure_labels(x.n_rows(), y, c)?;
        }
        let scaler = InputScaler::fit(x, p.n_top_genes)?;
        let data = scaler.transform(x)?;
        let n = data.n_rows;
        // Hold-out for early stopping: stratified by class when labels are given.
        let (train, val) = if p.validation_fraction > 0.0 {
            let y0 = vec![0u32; n];
            let y = labels.map_or(&y0[..], |(y, _)| y);
            stratified_holdout(y, p.validation_fraction, &mut rng_for(p.seed, 0xC1C0))
        } else {
            ((0..n).collect(), Vec::new())
        };
        ensure_param(!train.is_empty(), "cells", || "no training cells".into())?;
        self.vars = VarMap::new();
        let shape = Shape {
            genes: scaler.n_selected(),
            hidden: p.hidden,
            code: p.code_dim,
            head: labels.map(|(_, c)| (p.classifier_hidden, c)),
        };
        let net = CicNetwork::new(shape, p.activation, &self.vars, p.seed)?;
        if p.init == CicInit::Pca {
            let rows: Vec<f32> = train.iter().flat_map(|&r| data.row(r).to_vec()).collect();
            let sub = DenseMatrix::new(train.len(), data.n_cols, rows)?;
            let k = p
                .code_dim
                .min(train.len().saturating_sub(1))
                .min(data.n_cols);
            if k >= 1 {
                let pca = cellident_preprocess::Pca::fit(
                    &sub,
                    &cellident_preprocess::PcaParams {
                        n_components: k,
                        seed: p.seed,
                        ..Default::default()
                    },
                )
                .map_err(|e| TensorError::InvalidParam {
                    name: "init",
                    message: format!("PCA initialisation: {e}"),
                })?;
                let sd: Vec<f64> = pca.explained_variance.iter().map(|v| v.sqrt()).collect();
                init_from_pca(&self.vars, shape, &pca.mean, &pca.components, &sd)?;
            }
        } else if p.mean_output_bias {
            let k = data.n_cols;
            let mut mean = vec![0f64; k];
            for &r in &train {
                for (m, &v) in mean.iter_mut().zip(data.row(r)) {
                    *m += v as f64;
                }
            }
            let mean: Vec<f32> = mean
                .iter()
                .map(|m| (m / train.len() as f64) as f32)
                .collect();
            set_var(&self.vars, "decoder.out.bias", &mean)?;
        }
        let y_tensor_rows = |rows: &[usize]| -> Result<Option<Tensor>> {
            match labels {
                Some((y, _)) => Ok(Some(label_rows(y, rows, &self.device)?)),
                None => Ok(None),
            }
        };
        let loss_of = |input: &Tensor, target: &Tensor, yb: Option<&Tensor>| -> Result<Tensor> {
            let code = net.encode(input)?;
            let rep = net.decode(&code)?;
            let mut loss = ((rep - target)?.sqr()?.mean_all()? * p.reconstruction_weight)?;
            if let (Some(yb), Some(logits)) = (yb, net.classify(&code)?) {
                let ce = cellident_tensor::nn::cross_entropy(&logits, yb)?;
                loss = (loss + (ce * p.classification_weight)?)?;
            }
            Ok(loss)
        };
        let vars = self.vars.all_vars();
        // Two parameter groups: the autoencoder, and the classifier head with its own rate.
        let (head_vars, ae_vars): (Vec<(String, candle_core::Var)>, Vec<_>) =
            cellident_tensor::params::named_vars(&self.vars)?
                .into_iter()
                .partition(|(k, _)| k.starts_with("classifier."));
        let head_lr = p.classifier_lr.unwrap_or(p.optimizer.lr());
        let mut opt = Opt::new(ae_vars.into_iter().map(|(_, v)| v).collect(), p.optimizer)?;
        let head_optimizer = match p.optimizer {
            CicOptimizer::Adam { weight_decay, .. } => CicOptimizer::Adam {
                lr: head_lr,
                weight_decay,
            },
            CicOptimizer::Sgd { momentum, .. } => CicOptimizer::Sgd {
                lr: head_lr,
                momentum,
            },
        };
        let mut head_opt = Opt::new(
            head_vars.into_iter().map(|(_, v)| v).collect(),
            head_optimizer,
        )?;
        let val_loss = || -> Result<Option<f32>> {
            if val.is_empty() {
                return Ok(None);
            }
            let mut total = 0f64;
            for chunk in val.chunks(CHUNK) {
                let t = matrix_rows(&data, chunk, &self.device)?;
                let yb = y_tensor_rows(chunk)?;
                let l = loss_of(&t, &t, yb.as_ref())?.to_scalar::<f32>()?;
                total += l as f64 * chunk.len() as f64;
            }
            Ok(Some((total / val.len() as f64) as f32))
        };
        let snapshot = || -> Result<Vec<Tensor>> {
            Ok(vars
                .iter()
                .map(|v| v.as_tensor().copy())
                .collect::<candle_core::Result<_>>()?)
        };
        // Early stopping on the validation loss, keeping the best weights. A PCA start is itself
        // a candidate: training must beat it on the held-out cells to replace it.
        let (mut best_loss, mut best, mut bad_epochs) = (f32::INFINITY, None, 0usize);
        let mut report = TrainReport::default();
        if p.init == CicInit::Pca
            && let Some(v) = val_loss()?
        {
            best_loss = v;
            best = Some(snapshot()?);
        }
        let noise =
            Normal::new(0.0f32, p.input_noise as f32).map_err(|e| TensorError::InvalidParam {
                name: "input_noise",
                message: e.to_string(),
            })?;
        let mut noise_rng = rng_for(p.seed, 0x0015E);
        progress.event(&TrainEvent::Start {
            model: NAME.into(),
            epochs: p.max_epochs,
            batches_per_epoch: train.len().div_ceil(p.batch_size),
        });
        for epoch in 0..p.max_epochs {
            let lr = p.schedule.lr_at(p.optimizer.lr(), epoch);
            opt.set_lr(lr);
            head_opt.set_lr(p.schedule.lr_at(head_lr, epoch));
            let order: Vec<usize> = epoch_order(train.len(), p.seed, epoch)
                .into_iter()
                .map(|i| train[i])
                .collect();
            let (mut sum, mut seen) = (0f64, 0usize);
            for (b, rows) in batches(&order, p.batch_size, false).enumerate() {
                let target = matrix_rows(&data, rows, &self.device)?;
                let input = if p.input_noise > 0.0 {
                    let e: Vec<f32> = (0..target.elem_count())
                        .map(|_| noise.sample(&mut noise_rng))
                        .collect();
                    (&target + Tensor::from_vec(e, target.shape(), &self.device)?)?
                } else {
                    target.clone()
                };
                let yb = y_tensor_rows(rows)?;
                let loss = loss_of(&input, &target, yb.as_ref())?;
                let value = loss.to_scalar::<f32>()?;
                check_loss(value, epoch, b)?;
                let grads = loss.backward()?;
                opt.step(&grads)?;
                head_opt.step(&grads)?;
                sum += value as f64 * rows.len() as f64;
                seen += rows.len();
                progress.event(&TrainEvent::Batch {
                    epoch,
                    batch: b,
                    loss: value,
                });
            }
            let val_loss = val_loss()?;
            let record = EpochRecord {
                epoch,
                train_loss: (sum / seen.max(1) as f64) as f32,
                val_loss,
                lr,
            };
            progress.event(&TrainEvent::Epoch(record.clone()));
            report.epochs.push(record);
            report.kept_epoch = epoch;
            if let Some(v) = val_loss {
                if v < best_loss {
                    best_loss = v;
                    best = Some(snapshot()?);
                    bad_epochs = 0;
                } else {
                    bad_epochs += 1;
                    if bad_epochs >= p.patience {
                        report.stopped_early = true;
                        break;
                    }
                }
            }
        }
        if let Some(weights) = best {
            for (v, t) in vars.iter().zip(weights) {
                v.set(&t)?;
            }
            // The epoch whose weights were kept (0 also when the PCA start was never beaten).
            report.kept_epoch = report
                .epochs
                .iter()
                .filter(|e| e.val_loss == Some(best_loss))
                .map(|e| e.epoch)
                .next()
                .unwrap_or(0);
        }
        progress.event(&TrainEvent::Finish);
        self.trained = Some(Trained {
            scaler,
            net,
            n_classes: labels.map(|(_, c)| c),
        });
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// The scaled model input of `x`: selected genes, min-max scaled, `[cells, selected]`.
    pub fn scaled_input(&self, x: &CsrMatrix) -> Result<DenseMatrix> {
        self.trained()?.scaler.transform(x)
    }

    /// Codes of already scaled profiles (`[cells, selected]` -> `[cells, code_dim]`).
    pub fn encode_scaled(&self, scaled: &DenseMatrix) -> Result<DenseMatrix> {
        let t = self.trained()?;
        ensure_gene_count(NAME, t.scaler.n_selected(), scaled.n_cols)?;
        self.map_rows(scaled, |x| t.net.encode(x))
    }

    /// Reproduced profiles of codes, in the scaled units of the input
    /// (`[cells, code_dim]` -> `[cells, selected]`).
    pub fn decode(&self, codes: &DenseMatrix) -> Result<DenseMatrix> {
        let t = self.trained()?;
        ensure_param(
            codes.n_cols == self.config.params().code_dim,
            "codes",
            || {
                format!(
                    "{} columns, the code has {}",
                    codes.n_cols,
                    self.config.params().code_dim
                )
            },
        )?;
        self.map_rows(codes, |c| t.net.decode(c))
    }

    /// `(scaled input, reproduced profile)` of each cell of `x`, both `[cells, selected]`.
    pub fn reconstruct(&self, x: &CsrMatrix) -> Result<(DenseMatrix, DenseMatrix)> {
        let scaled = self.scaled_input(x)?;
        let t = self.trained()?;
        let rep = self.map_rows(&scaled, |s| t.net.decode(&t.net.encode(s)?))?;
        Ok((scaled, rep))
    }

    fn map_rows(
        &self,
        m: &DenseMatrix,
        f: impl Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<DenseMatrix> {
        let rows: Vec<usize> = (0..m.n_rows).collect();
        let mut values = Vec::new();
        let mut cols = 0;
        for chunk in rows.chunks(CHUNK) {
            let out = f(&matrix_rows(m, chunk, &self.device)?)?;
            cols = out.dims2()?.1;
            values.extend(out.flatten_all()?.to_vec1::<f32>()?);
        }
        if m.n_rows == 0 {
            return DenseMatrix::new(0, 0, Vec::new());
        }
        DenseMatrix::new(m.n_rows, cols, values)
    }

    /// The feed-forward description of the classification path (input genes -> selection ->
    /// scaling -> encoder -> classifier head -> logits), for DeepLIFT.
    fn classifier_net(&self) -> Result<FeedForwardNet> {
        let t = self.trained()?;
        let head = t
            .net
            .classifier_layers()
            .ok_or_else(|| TensorError::InvalidParam {
                name: "model",
                message: "this CIC has no classifier head (trained with fit_autoencoder); train it with labels".into(),
            })?;
        let k = t.scaler.n_selected();
        let idx: Vec<u32> = t.scaler.genes.iter().map(|&g| g as u32).collect();
        let (scale, shift) = t.scaler.affine();
        let mut layers = vec![
            FeedForwardLayer::Select {
                indices: Tensor::from_vec(idx, k, &self.device)?,
                n_inputs: t.scaler.n_inputs,
            },
            FeedForwardLayer::Affine {
                scale: Tensor::from_vec(scale, k, &self.device)?,
                shift: Tensor::from_vec(shift, k, &self.device)?,
            },
        ];
        layers.extend(head);
        Ok(FeedForwardNet { layers })
    }

    /// Saves weights and sidecar: `genes` are the names of the training data's genes (all of
    /// them, in input order), `labels` the class names (empty for a plain autoencoder).
    pub fn save(
        &self,
        path: &Path,
        genes: Vec<String>,
        labels: Vec<String>,
        preprocessing: serde_json::Value,
    ) -> Result<()> {
        let t = self.trained()?;
        ensure_param(genes.len() == t.scaler.n_inputs, "genes", || {
            format!(
                "{} gene names for a model of {} input genes",
                genes.len(),
                t.scaler.n_inputs
            )
        })?;
        let mut meta = CheckpointMeta::new(crate::MODEL_KIND, &self.config, genes, labels)?;
        meta.preprocessing = preprocessing;
        meta.extra = serde_json::to_value(Extra {
            scaler: t.scaler.clone(),
            n_classes: t.n_classes,
        })
        .map_err(|e| TensorError::InvalidParam {
            name: "model",
            message: e.to_string(),
        })?;
        cellident_tensor::save_checkpoint(path, &self.vars, &meta)
    }

    /// Loads a model saved by [`Cic::save`].
    pub fn load(path: &Path, device: &Device) -> Result<(Cic, CheckpointMeta)> {
        let ck = cellident_tensor::load_checkpoint(path, device)?;
        let bad = |m: String| TensorError::Checkpoint {
            path: path.to_path_buf(),
            message: m,
        };
        let config: CicConfig = ck.config(crate::MODEL_KIND, "CIC")?;
        let extra: Extra = serde_json::from_value(ck.meta.extra.clone())
            .map_err(|e| bad(format!("bad CIC scaler: {e}")))?;
        let p = config.params();
        let shape = Shape {
            genes: extra.scaler.n_selected(),
            hidden: p.hidden,
            code: p.code_dim,
            head: extra.n_classes.map(|c| (p.classifier_hidden, c)),
        };
        let mut model = Cic::new(config.clone(), device.clone());
        let net = CicNetwork::new(shape, p.activation, &model.vars, p.seed)?;
        ck.restore(&model.vars)?;
        model.trained = Some(Trained {
            scaler: extra.scaler,
            net,
            n_classes: extra.n_classes,
        });
        Ok((model, ck.meta))
    }
}

impl Classifier for Cic {
    /// Trains the classifier autoencoder: reconstruction MSE plus cross-entropy of the head.
    fn fit(
        &mut self,
        x: &CsrMatrix,
        y: &[u32],
        n_classes: usize,
        progress: &mut dyn Progress,
    ) -> Result<TrainReport> {
        self.train(x, Some((y, n_classes)), progress)
    }

    fn predict_proba(&self, x: &CsrMatrix) -> Result<DenseMatrix> {
        let t = self.trained()?;
        ensure_param(t.net.head.is_some(), "model", || {
            "this CIC has no classifier head (trained with fit_autoencoder)".into()
        })?;
        let scaled = t.scaler.transform(x)?;
        self.map_rows(&scaled, |s| {
            let logits =
                t.net
                    .classify(&t.net.encode(s)?)?
                    .ok_or_else(|| TensorError::InvalidParam {
                        name: "model",
                        message: "no classifier head".into(),
                    })?;
            cellident_tensor::nn::softmax(&logits)
        })
    }
}

impl Embedder for Cic {
    /// The cell identity code of each cell, `[cells, code_dim]`.
    fn embed(&self, x: &CsrMatrix) -> Result<DenseMatrix> {
        self.encode_scaled(&self.scaled_input(x)?)
    }

    fn embedding_dim(&self) -> usize {
        self.config.params().code_dim
    }
}

impl FeedForward for Cic {
    /// The classifier autoencoder's classification path (needs a classifier head).
    fn networks(&self) -> Result<Vec<FeedForwardNet>> {
        Ok(vec![self.classifier_net()?])
    }
}

impl DifferentiableClassifier for Cic {
    fn logits(&self, x: &Tensor) -> Result<Tensor> {
        let net = self.classifier_net()?;
        ensure_gene_count(NAME, self.trained()?.scaler.n_inputs, x.dims2()?.1)?;
        net.forward(x)
    }
}

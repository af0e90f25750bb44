//! The CIC model: training (autoencoder or classifier autoencoder), encoding, decoding,
//! classification and checkpoints.

use std::path::Path;
use std::time::Instant;

use candle_core::{Device, Tensor};
use candle_nn::{Optimizer, VarMap};
use cellident_io::CsrMatrix;
use cellident_tensor::batch::{label_rows, matrix_rows, rng_for};
use cellident_tensor::{
    AdamParams, BatchSource, CheckParams, CheckpointMeta, Classifier, DenseMatrix,
    DifferentiableClassifier, Embedder, EpochRecord, FeedForward, FeedForwardLayer, FeedForwardNet,
    Progress, Result, RowsSource, SgdParams, StreamingClassifier, TensorError, TrainEvent,
    TrainReport, check_loss, ensure_gene_count, ensure_labels, ensure_param, stratified_holdout,
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
        let unlabelled = vec![0u32; n];
        let y = labels.map_or(&unlabelled[..], |(y, _)| y);
        let (train, val) = if p.validation_fraction > 0.0 {
            stratified_holdout(y, p.validation_fraction, &mut rng_for(p.seed, 0xC1C0))
        } else {
            ((0..n).collect(), Vec::new())
        };
        ensure_param(!train.is_empty(), "cells", || "no training cells".into())?;
        let (net, shape) = self.build_network(&scaler, labels.map(|(_, c)| c))?;
        if p.init == CicInit::Pca {
            let rows: Vec<f32> = train.iter().flat_map(|&r| data.row(r).to_vec()).collect();
            let sub = DenseMatrix::new(train.len(), data.n_cols, rows)?;
            if let Some(params) = pca_start_params(&p, train.len(), data.n_cols) {
                let pca = cellident_preprocess::Pca::fit(&sub, &params).map_err(pca_error)?;
                self.start_from_pca(&pca, shape)?;
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
        let val_loss = || -> Result<Option<f32>> {
            if val.is_empty() {
                return Ok(None);
            }
            let mut total = 0f64;
            for chunk in val.chunks(CHUNK) {
                let t = matrix_rows(&data, chunk, &self.device)?;
                let yb = match labels {
                    Some(_) => Some(label_rows(y, chunk, &self.device)?),
                    None => None,
                };
                let l = cic_loss(&net, &p, &t, &t, yb.as_ref())?.to_scalar::<f32>()?;
                total += l as f64 * chunk.len() as f64;
            }
            Ok(Some((total / val.len() as f64) as f32))
        };
        // Training batches: the selected genes of the training rows, scaled per batch (the
        // same f32 operations as `data`), in `RowsSource`'s seeded order.
        let selected = scaler.genes.iter().map(|&g| Some(g)).collect::<Vec<_>>();
        let x_selected = x.select_columns(&selected);
        let mut source = RowsSource {
            x: &x_selected,
            y,
            rows: &train,
            seed: p.seed,
        };
        let mut report = run_training(
            &p,
            &self.vars,
            &net,
            &mut source,
            &|t| scaler.scale_selected(t),
            labels.is_some(),
            &val_loss,
            p.init == CicInit::Pca,
            &self.device,
            progress,
        )?;
        self.trained = Some(Trained {
            scaler,
            net,
            n_classes: labels.map(|(_, c)| c),
        });
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// A fresh network on `self.vars` for the scaler's genes (and a classifier head for
    /// `n_classes` classes when given).
    fn build_network(
        &mut self,
        scaler: &InputScaler,
        n_classes: Option<usize>,
    ) -> Result<(CicNetwork, Shape)> {
        let p = self.config.params();
        self.vars = VarMap::new();
        let shape = Shape {
            genes: scaler.n_selected(),
            hidden: p.hidden,
            code: p.code_dim,
            head: n_classes.map(|c| (p.classifier_hidden, c)),
        };
        Ok((
            CicNetwork::new(shape, p.activation, &self.vars, p.seed)?,
            shape,
        ))
    }

    /// Sets the encoder and decoder to the PCA start (methods.md; docs/cic.md).
    fn start_from_pca(&self, pca: &cellident_preprocess::Pca, shape: Shape) -> Result<()> {
        let sd: Vec<f64> = pca.explained_variance.iter().map(|v| v.sqrt()).collect();
        init_from_pca(&self.vars, shape, &pca.mean, &pca.components, &sd)
    }

    /// Trains on cells streamed from `source` (e.g. a Parquet file through a shuffle buffer):
    /// memory is bounded by the source's buffer and the model, whatever the number of cells.
    /// One pass gathers each input gene's variance, minimum and maximum (the gene selection and
    /// scaling), a second the scatter matrix of the scaled genes for the PCA start
    /// ([`cellident_preprocess::Pca::from_scatter`]); then the same loss, optimizer and
    /// schedule as in memory. Streaming has no validation hold-out, so `validation_fraction`
    /// must be 0 (the default).
    fn train_source(
        &mut self,
        source: &mut dyn BatchSource,
        n_classes: Option<usize>,
        progress: &mut dyn Progress,
    ) -> Result<TrainReport> {
        let started = Instant::now();
        let p = self.config.params().clone();
        cellident_tensor::ensure_no_validation_split(p.validation_fraction)?;
        let g = source.n_genes();
        let cpu = Device::Cpu;
        let mut moments = cellident_preprocess::stream::GeneMoments::new(g);
        let (mut min, mut max) = (vec![f32::INFINITY; g], vec![f32::NEG_INFINITY; g]);
        // Statistics are order-free, so any epoch's order serves.
        source.for_each_batch(0, STATS_BATCH, &cpu, &mut |xb, _| {
            let rows = xb.dims2()?.0;
            let values = xb.flatten_all()?.to_vec1::<f32>()?;
            for row in values.chunks_exact(g) {
                for (j, &v) in row.iter().enumerate() {
                    min[j] = min[j].min(v);
                    max[j] = max[j].max(v);
                }
            }
            moments.add(&CsrMatrix::from_dense(rows, g, &values)?, f64::from);
            Ok(())
        })?;
        ensure_param(moments.n_cells() >= 2, "cells", || {
            format!(
                "CIC needs at least 2 training cells, got {}",
                moments.n_cells()
            )
        })?;
        let (_, var) = moments.mean_var();
        let scaler = InputScaler::from_statistics(&var, &min, &max, p.n_top_genes);
        let (net, shape) = self.build_network(&scaler, n_classes)?;
        if p.init == CicInit::Pca || p.mean_output_bias {
            let mut scatter = cellident_preprocess::stream::GeneScatter::new(scaler.n_selected());
            source.for_each_batch(0, STATS_BATCH, &cpu, &mut |xb, _| {
                let scaled = scaler.transform_tensor(xb)?;
                scatter
                    .add_dense(&scaled.flatten_all()?.to_vec1::<f32>()?)
                    .map_err(|e| TensorError::Source(e.to_string()))
            })?;
            match pca_start_params(&p, scatter.n_cells(), scaler.n_selected()) {
                Some(params) if p.init == CicInit::Pca => {
                    let pca = cellident_preprocess::Pca::from_scatter(&scatter, &params)
                        .map_err(pca_error)?;
                    self.start_from_pca(&pca, shape)?;
                }
                _ if p.init != CicInit::Pca => {
                    let mean: Vec<f32> = scatter.mean().iter().map(|&m| m as f32).collect();
                    set_var(&self.vars, "decoder.out.bias", &mean)?;
                }
                _ => {}
            }
        }
        let mut report = run_training(
            &p,
            &self.vars,
            &net,
            source,
            &|t| scaler.transform_tensor(t),
            n_classes.is_some(),
            &|| Ok(None),
            false,
            &self.device,
            progress,
        )?;
        self.trained = Some(Trained {
            scaler,
            net,
            n_classes,
        });
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// [`Cic::fit_autoencoder`] on cells streamed from `source` (labels ignored); see
    /// [`StreamingClassifier::fit_source`] for the passes.
    pub fn fit_autoencoder_source(
        &mut self,
        source: &mut dyn BatchSource,
        progress: &mut dyn Progress,
    ) -> Result<TrainReport> {
        self.train_source(source, None, progress)
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

/// Cells per batch of the streamed statistics passes.
const STATS_BATCH: usize = 1024;

/// The PCA start's parameters for `n` cells of `g` genes (`None` when no component fits).
fn pca_start_params(p: &CicParams, n: usize, g: usize) -> Option<cellident_preprocess::PcaParams> {
    let k = p.code_dim.min(n.saturating_sub(1)).min(g);
    (k >= 1).then(|| cellident_preprocess::PcaParams {
        n_components: k,
        seed: p.seed,
        ..Default::default()
    })
}

fn pca_error(e: cellident_preprocess::PreprocessError) -> TensorError {
    TensorError::InvalidParam {
        name: "init",
        message: format!("PCA initialisation: {e}"),
    }
}

/// The training objective: weighted reconstruction MSE of `target` from `input`, plus the
/// weighted cross-entropy of the classifier head when labels `yb` are given.
fn cic_loss(
    net: &CicNetwork,
    p: &CicParams,
    input: &Tensor,
    target: &Tensor,
    yb: Option<&Tensor>,
) -> Result<Tensor> {
    let code = net.encode(input)?;
    let rep = net.decode(&code)?;
    let mut loss = ((rep - target)?.sqr()?.mean_all()? * p.reconstruction_weight)?;
    if let (Some(yb), Some(logits)) = (yb, net.classify(&code)?) {
        let ce = cellident_tensor::nn::cross_entropy(&logits, yb)?;
        loss = (loss + (ce * p.classification_weight)?)?;
    }
    Ok(loss)
}

/// The epochs: per batch of `source`, the model input `input(x)` (with Gaussian noise when
/// asked), the loss, one step of each optimizer (the autoencoder, and the classifier head at
/// its own rate); per epoch the validation loss and early stopping, keeping the best weights.
/// `start_is_candidate`: the starting weights (a PCA start) must be beaten on validation.
#[allow(clippy::too_many_arguments)]
fn run_training(
    p: &CicParams,
    var_map: &VarMap,
    net: &CicNetwork,
    source: &mut dyn BatchSource,
    input: &dyn Fn(&Tensor) -> Result<Tensor>,
    labelled: bool,
    val_loss: &dyn Fn() -> Result<Option<f32>>,
    start_is_candidate: bool,
    device: &Device,
    progress: &mut dyn Progress,
) -> Result<TrainReport> {
    let vars = var_map.all_vars();
    // Two parameter groups: the autoencoder, and the classifier head with its own rate.
    let (head_vars, ae_vars): (Vec<(String, candle_core::Var)>, Vec<_>) =
        cellident_tensor::params::named_vars(var_map)?
            .into_iter()
            .partition(|(k, _)| k.starts_with("classifier."));
    let head_lr = p.classifier_lr.unwrap_or(p.optimizer.lr());
    let mut opt = Opt::new(ae_vars.into_iter().map(|(_, v)| v).collect(), p.optimizer)?;
    let head_optimizer = match p.optimizer {
        CicOptimizer::Adam { weight_decay, .. } => CicOptimizer::Adam {
            lr: head_lr,
            weight_decay: p.classifier_weight_decay.unwrap_or(weight_decay),
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
    if start_is_candidate && let Some(v) = val_loss()? {
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
        batches_per_epoch: source.n_cells().div_ceil(p.batch_size),
    });
    for epoch in 0..p.max_epochs {
        let lr = p.schedule.lr_at(p.optimizer.lr(), epoch);
        opt.set_lr(lr);
        head_opt.set_lr(p.schedule.lr_at(head_lr, epoch));
        let (mut sum, mut seen, mut b) = (0f64, 0usize, 0usize);
        source.for_each_batch(epoch, p.batch_size, device, &mut |xb, yb| {
            let target = input(xb)?;
            let noisy = if p.input_noise > 0.0 {
                let e: Vec<f32> = (0..target.elem_count())
                    .map(|_| noise.sample(&mut noise_rng))
                    .collect();
                (&target + Tensor::from_vec(e, target.shape(), device)?)?
            } else {
                target.clone()
            };
            let loss = cic_loss(net, p, &noisy, &target, labelled.then_some(yb))?;
            let value = loss.to_scalar::<f32>()?;
            check_loss(value, epoch, b)?;
            let grads = cellident_tensor::nn::backward(&loss)?;
            opt.step(&grads)?;
            head_opt.step(&grads)?;
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
    Ok(report)
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

impl StreamingClassifier for Cic {
    /// Trains the classifier autoencoder on cells streamed from `source`: two statistics
    /// passes (gene variance, minimum and maximum; then the scatter matrix of the scaled genes
    /// for the PCA start), then the epochs. Memory is the source's buffer, the model and a
    /// `[genes, genes]` scatter matrix. `validation_fraction` must be 0.
    fn fit_source(
        &mut self,
        source: &mut dyn BatchSource,
        n_classes: usize,
        progress: &mut dyn Progress,
    ) -> Result<TrainReport> {
        ensure_param(n_classes > 0, "labels", || "no classes".into())?;
        self.train_source(source, Some(n_classes), progress)
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

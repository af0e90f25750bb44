//! cellident-nact owns N-ACT (Heydari et al. 2022: supervised cell-type identification with
//! neural attention over genes, whose weights name each type's salient genes) and ACTINN
//! (the MLP baseline N-ACT is compared with), both behind the shared `Classifier` trait.
//!
//! Inputs are preprocessed `[cells, genes]` matrices (the reference recipe: normalize_total 1e4,
//! log1p, top 5000 HVGs — done by cellident-preprocess, recorded in the checkpoint). This crate
//! does no file I/O except through `cellident_tensor::checkpoint`, and depends on no other model.

pub mod layers;
pub mod network;
pub mod salient;

use std::path::Path;

use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;
use cellident_io::CsrMatrix;
use cellident_tensor::batch::dense_rows;
use cellident_tensor::params::var_named;
use cellident_tensor::{
    AdamParams, BatchSource, CheckParams, CheckpointMeta, Classifier, DenseMatrix, FitParams,
    LogitNetwork, LrSchedule, Progress, Result, RowsSource, StreamingClassifier, TensorError,
    TrainReport, ensure_gene_count, ensure_labels, ensure_param, fit_classifier,
    fit_classifier_source, predict_proba,
};
use serde::{Deserialize, Serialize};

pub use network::{ActinnNetwork, NactNetwork, NactVariant};

const MODEL_NAME: &str = "N-ACT";
const ACTINN_NAME: &str = "ACTINN";
pub use salient::{
    GeneScore, attention_sums, attention_sums_expressed, rank_by_attention,
    rank_by_attention_tfidf, rank_global,
};

/// N-ACT hyper-parameters (defaults: the reference run of methods.md §1.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NactParams {
    pub variant: NactVariant,
    /// Hidden width of the pointwise feed-forward block.
    pub ffn_hidden: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    /// The reference's x0.95 decay after epochs 25, 30, 35, 40, 45.
    pub lr_decay: bool,
    /// Stratified validation hold-out for early stopping (0 = off, as the reference).
    pub validation_fraction: f64,
    pub patience: usize,
    pub seed: u64,
    /// Multiply the gene scores `gamma = alpha * x` by the number of genes, so that uniform
    /// attention passes `x` through at its own scale (the reference: off).
    #[serde(default)]
    pub scale_gamma: bool,
    /// Start the attention weights at zero (uniform attention) instead of Xavier-uniform
    /// (the reference: off; the default: on). A Xavier start puts a random, type-dependent
    /// preference on every gene's logit (`W_a (x - mean)` with random `W_a`); for types the
    /// network separates early that preference is never trained away and fills their salient
    /// lists with arbitrary genes, different for every seed (docs/nact.md).
    #[serde(default)]
    pub zero_attention_init: bool,
    /// Learning rate of the attention weight matrix `W_a` as a multiple of `lr` (its bias and
    /// every other layer train at `lr`). The reference trains everything at `lr` (1 here, see
    /// [`NactParams::reference`]); at 1e-4 for ~100-1,000 Adam steps no attention logit can move
    /// far from its random Xavier start, so the attention ranks the same genes for every type.
    /// The default 30 lets it learn (docs/nact.md: accuracy and marker recovery both improve).
    #[serde(default = "one")]
    pub attention_lr_scale: f64,
    /// Epochs at the start during which `W_a` trains at `lr` itself, before
    /// `attention_lr_scale` applies (0: from the first step). At 30x from the first step, Adam's
    /// first sign-sized moves commit the attention to what the randomly initialised layers
    /// after it reward; a warm-up lets those layers learn first (docs/nact.md). `None` (the
    /// default): a fifth of `epochs`, rounded — 10 of the recipe's 50, and a run shortened to
    /// 10 epochs still trains the attention at its multiple for 8.
    #[serde(default)]
    pub attention_warmup_epochs: Option<usize>,
    /// Train the attention logits as `W_a (x - mean) + b`, `mean` the training cells' mean
    /// input, and fold `-W_a mean` into `b` afterwards, so the trained model is the method's
    /// `softmax(W_a x + b)`. A reparametrisation, not a new layer: log expression is never
    /// centred, so every weight gradient of `W_a` carries the mean profile, and with Adam's
    /// per-weight step that common mode moves a gene's attention in every cell alike
    /// (docs/nact.md). The reference: off.
    #[serde(default)]
    pub center_attention_input: bool,
    /// The reference's masking dropout: during training, each entry of `x` that enters the gene
    /// scores `gamma = alpha * dropout(x)` is zeroed with this probability (and the rest scaled
    /// by `1 / (1 - p)`); `alpha` is computed from the unmasked `x`. The reference code has this
    /// layer and sets it only in its contrastive mode (off in its supervised runs). Default
    /// 0.5: with half of each cell's genes missing from `gamma` at every step, no single gene
    /// carries a type, so the loss keeps rewarding attention on every gene that marks it —
    /// the canonical markers of the types that are easy to separate included (docs/nact.md).
    #[serde(default)]
    pub masking_fraction: f64,
}

fn one() -> f64 {
    1.0
}

impl Default for NactParams {
    fn default() -> Self {
        NactParams {
            variant: NactVariant::Projection,
            ffn_hidden: 128,
            epochs: 50,
            batch_size: 512,
            lr: 1e-4,
            lr_decay: true,
            validation_fraction: 0.0,
            patience: 5,
            seed: 12345,
            scale_gamma: false,
            zero_attention_init: true,
            attention_lr_scale: 30.0,
            attention_warmup_epochs: None,
            center_attention_input: true,
            masking_fraction: 0.5,
        }
    }
}

impl NactParams {
    /// The attention's warm-up in epochs: `attention_warmup_epochs`, or a fifth of `epochs`.
    pub fn warmup_epochs(&self) -> usize {
        self.attention_warmup_epochs
            .unwrap_or_else(|| (self.epochs as f64 / 5.0).round() as usize)
    }

    /// The released reference recipe exactly: one learning rate for every layer.
    pub fn reference() -> Self {
        NactParams {
            attention_lr_scale: 1.0,
            center_attention_input: false,
            zero_attention_init: false,
            attention_warmup_epochs: Some(0),
            masking_fraction: 0.0,
            ..NactParams::default()
        }
    }
}

/// Validated N-ACT parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NactConfig(NactParams);

impl NactConfig {
    pub fn params(&self) -> &NactParams {
        &self.0
    }

    fn fit_params(&self) -> FitParams {
        let p = &self.0;
        FitParams {
            epochs: p.epochs,
            batch_size: p.batch_size,
            optimizer: AdamParams {
                lr: p.lr,
                ..AdamParams::default()
            },
            schedule: if p.lr_decay {
                LrSchedule::nact_default()
            } else {
                LrSchedule::Constant
            },
            validation_fraction: p.validation_fraction,
            patience: p.patience,
            seed: p.seed,
        }
    }
}

impl CheckParams for NactParams {
    type Checked = NactConfig;
    fn check(&self) -> Result<NactConfig> {
        ensure_param(self.ffn_hidden > 0, "ffn_hidden", || {
            "must be at least 1".into()
        })?;
        ensure_param(self.lr > 0.0, "lr", || {
            format!("must be > 0, got {}", self.lr)
        })?;
        ensure_param(
            (0.0..1.0).contains(&self.masking_fraction),
            "masking_fraction",
            || format!("must be in [0, 1), got {}", self.masking_fraction),
        )?;
        ensure_param(
            self.attention_lr_scale > 0.0 && self.attention_lr_scale.is_finite(),
            "attention_lr_scale",
            || format!("must be > 0, got {}", self.attention_lr_scale),
        )?;
        let c = NactConfig(self.clone());
        c.fit_params().check()?;
        Ok(c)
    }
}

/// A trainable N-ACT model.
pub struct Nact {
    config: NactConfig,
    device: Device,
    vars: VarMap,
    net: Option<NactNetwork>,
    n_genes: usize,
    n_classes: usize,
}

struct Trainer<'a> {
    net: &'a NactNetwork,
    /// Masking dropout of the gene-score input while training (probability, seeded masks).
    masking: Option<(f64, std::cell::RefCell<rand::rngs::StdRng>)>,
    vars: Vec<Var>,
    /// The attention layer's variables with their learning-rate multiple.
    lr_scales: Vec<(Var, f64)>,
    /// Epochs before the multiples apply.
    warmup_epochs: usize,
}

impl LogitNetwork for Trainer<'_> {
    fn logits(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match (&self.masking, train) {
            (Some((p, rng)), true) => {
                let masked = cellident_tensor::nn::dropout(x, *p, &mut rng.borrow_mut())?;
                Ok(self.net.forward_masked(x, &masked)?.0)
            }
            _ => Ok(self.net.forward(x)?.0),
        }
    }
    fn vars(&self) -> Vec<Var> {
        self.vars.clone()
    }
    fn lr_scales(&self) -> Vec<(Var, f64)> {
        self.lr_scales.clone()
    }
    fn lr_scale_warmup_epochs(&self) -> usize {
        self.warmup_epochs
    }
}

impl std::fmt::Debug for Nact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nact")
            .field("config", &self.config)
            .field("n_genes", &self.n_genes)
            .field("n_classes", &self.n_classes)
            .finish()
    }
}

impl std::fmt::Debug for Actinn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Actinn")
            .field("params", &self.params)
            .field("n_genes", &self.n_genes)
            .finish()
    }
}

impl Nact {
    /// An untrained model.
    pub fn new(config: NactConfig, device: Device) -> Self {
        Nact {
            config,
            device,
            vars: VarMap::new(),
            net: None,
            n_genes: 0,
            n_classes: 0,
        }
    }

    fn build(&mut self, genes: usize, classes: usize) -> Result<()> {
        let p = self.config.params();
        ensure_param(
            p.variant != NactVariant::Projection || genes > 0,
            "genes",
            || "no input genes".into(),
        )?;
        self.vars = VarMap::new();
        let params = layers::SeededParams::new(&self.vars, p.seed, &self.device);
        let scale = if p.scale_gamma { genes as f64 } else { 1.0 };
        self.net = Some(NactNetwork::with_gamma_scale(
            genes,
            classes,
            p.variant,
            p.ffn_hidden,
            scale,
            p.zero_attention_init,
            &params,
        )?);
        self.n_genes = genes;
        self.n_classes = classes;
        Ok(())
    }

    fn net_mut(&mut self) -> Result<&mut NactNetwork> {
        self.net.as_mut().ok_or_else(|| TensorError::InvalidParam {
            name: "model",
            message: "N-ACT is not built".into(),
        })
    }

    fn net(&self) -> Result<&NactNetwork> {
        self.net.as_ref().ok_or_else(|| TensorError::InvalidParam {
            name: "model",
            message: "N-ACT is not trained".into(),
        })
    }

    /// Attention weights `[cells, genes]` of `x`; each row sums to 1.
    pub fn attention_weights(&self, x: &CsrMatrix) -> Result<DenseMatrix> {
        let net = self.net()?;
        let rows: Vec<usize> = (0..x.n_rows()).collect();
        let mut values = Vec::with_capacity(x.n_rows() * x.n_cols());
        for chunk in rows.chunks(2048) {
            let a = net
                .attention
                .weights(&dense_rows(x, chunk, &self.device)?)?;
            values.extend(a.flatten_all()?.to_vec1::<f32>()?);
        }
        DenseMatrix::new(x.n_rows(), x.n_cols(), values)
    }

    /// Saves weights and sidecar (genes in input order, class names in output order, the
    /// preprocessing to replay).
    pub fn save(
        &self,
        path: &Path,
        genes: Vec<String>,
        labels: Vec<String>,
        preprocessing: serde_json::Value,
    ) -> Result<()> {
        let mut meta = CheckpointMeta::new("nact", &self.config, genes, labels)?;
        meta.preprocessing = preprocessing;
        cellident_tensor::save_checkpoint(path, &self.vars, &meta)
    }

    /// Loads a model saved by [`Nact::save`].
    pub fn load(path: &Path, device: &Device) -> Result<(Nact, CheckpointMeta)> {
        let ck = cellident_tensor::load_checkpoint(path, device)?;
        let config: NactConfig = ck.config("nact", MODEL_NAME)?;
        let mut model = Nact::new(config, device.clone());
        model.build(ck.meta.genes.len(), ck.meta.labels.len())?;
        ck.restore(&model.vars)?;
        Ok((model, ck.meta))
    }
}

impl Nact {
    /// The network with its variables and the attention's learning-rate multiple.
    fn trainer(&self) -> Result<Trainer<'_>> {
        let p = self.config.params();
        let scale = p.attention_lr_scale;
        let lr_scales = if scale == 1.0 {
            Vec::new()
        } else {
            vec![(var_named(&self.vars, "attention.weight")?, scale)]
        };
        let masking = (p.masking_fraction > 0.0).then(|| {
            use rand::SeedableRng;
            let rng = rand::rngs::StdRng::seed_from_u64(p.seed ^ 0x6D61_736B);
            (p.masking_fraction, std::cell::RefCell::new(rng))
        });
        Ok(Trainer {
            net: self.net()?,
            masking,
            vars: self.vars.all_vars(),
            lr_scales,
            warmup_epochs: p.warmup_epochs(),
        })
    }

    /// After training with a centred attention input: `b <- b - W_a m`.
    fn fold_center(&mut self) -> Result<()> {
        if self.config.params().center_attention_input {
            let bias = var_named(&self.vars, "attention.bias")?;
            self.net_mut()?.attention.fold_input_center(&bias)?;
        }
        Ok(())
    }
}

impl StreamingClassifier for Nact {
    /// Trains on cells streamed from `source` (e.g. a Parquet file through a shuffle buffer),
    /// so memory is bounded by the source's buffer and the model, whatever the number of
    /// cells. Same network, loss and schedule as [`Classifier::fit`]; the attention input
    /// centre is the source's column means (one extra pass). Streaming has no validation
    /// hold-out, so `validation_fraction` must be 0 (the default).
    fn fit_source(
        &mut self,
        source: &mut dyn BatchSource,
        n_classes: usize,
        progress: &mut dyn Progress,
    ) -> Result<TrainReport> {
        cellident_tensor::ensure_no_validation_split(self.config.params().validation_fraction)?;
        ensure_param(n_classes > 0, "labels", || "no classes".into())?;
        self.build(source.n_genes(), n_classes)?;
        if self.config.params().center_attention_input {
            let mean = Tensor::from_vec(source.column_means()?, source.n_genes(), &self.device)?;
            self.net_mut()?.attention.set_input_center(mean)?;
        }
        let trainer = self.trainer()?;
        let report = fit_classifier_source(
            MODEL_NAME,
            &trainer,
            source,
            None,
            &self.config.fit_params(),
            &self.device,
            progress,
        )?;
        self.fold_center()?;
        Ok(report)
    }
}

impl Classifier for Nact {
    fn fit(
        &mut self,
        x: &CsrMatrix,
        y: &[u32],
        n_classes: usize,
        progress: &mut dyn Progress,
    ) -> Result<TrainReport> {
        ensure_labels(x.n_rows(), y, n_classes)?;
        self.build(x.n_cols(), n_classes)?;
        if self.config.params().center_attention_input {
            let rows: Vec<usize> = (0..x.n_rows()).collect();
            let mut all = RowsSource {
                x,
                y,
                rows: &rows,
                seed: 0,
            };
            let mean = Tensor::from_vec(all.column_means()?, x.n_cols(), &self.device)?;
            self.net_mut()?.attention.set_input_center(mean)?;
        }
        let trainer = self.trainer()?;
        let report = fit_classifier(
            MODEL_NAME,
            &trainer,
            x,
            y,
            &self.config.fit_params(),
            &self.device,
            progress,
        )?;
        self.fold_center()?;
        Ok(report)
    }

    fn predict_proba(&self, x: &CsrMatrix) -> Result<DenseMatrix> {
        ensure_gene_count(MODEL_NAME, self.n_genes, x.n_cols())?;
        let trainer = Trainer {
            net: self.net()?,
            masking: None,
            vars: Vec::new(),
            lr_scales: Vec::new(),
            warmup_epochs: 0,
        };
        predict_proba(&trainer, x, &self.device, 2048)
    }
}

/// ACTINN hyper-parameters. The defaults are ACTINN-PyTorch's `classify.py` (the port the N-ACT
/// paper compares against): Xavier-uniform weights with bias 0.01 (its `init_weights`), Adam
/// lr 1e-4 with L2 weight decay 5e-3, the rate × 0.95 every 1,000 steps, batch 128, 50 epochs
/// (methods.md §1.3; the script's loop runs `range(0, 51)`, one pass more).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ActinnParams {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    /// L2 penalty added to the gradient (`torch.optim.Adam(weight_decay=…)`); ≥ 0.
    pub weight_decay: f64,
    /// Learning-rate schedule ([`LrSchedule::actinn_default`]: × 0.95 every 1,000 steps).
    pub schedule: LrSchedule,
    /// Xavier-uniform weights with bias 0.01 (the reference's `init_weights`); `false` starts
    /// from `torch.nn.Linear`'s own U(±1/√fan_in) weights and biases.
    pub xavier_init: bool,
    pub seed: u64,
}

impl Default for ActinnParams {
    fn default() -> Self {
        ActinnParams {
            epochs: 50,
            batch_size: 128,
            lr: 1e-4,
            weight_decay: 5e-3,
            schedule: LrSchedule::actinn_default(),
            xavier_init: true,
            seed: 12345,
        }
    }
}

/// A trainable ACTINN model.
pub struct Actinn {
    params: ActinnParams,
    device: Device,
    vars: VarMap,
    net: Option<ActinnNetwork>,
    n_genes: usize,
}

struct ActinnTrainer<'a> {
    net: &'a ActinnNetwork,
    vars: Vec<Var>,
}

impl LogitNetwork for ActinnTrainer<'_> {
    fn logits(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        self.net.forward(x)
    }
    fn vars(&self) -> Vec<Var> {
        self.vars.clone()
    }
}

impl Actinn {
    pub fn new(params: ActinnParams, device: Device) -> Result<Self> {
        ensure_param(params.lr > 0.0, "lr", || {
            format!("must be > 0, got {}", params.lr)
        })?;
        Ok(Actinn {
            params,
            device,
            vars: VarMap::new(),
            net: None,
            n_genes: 0,
        })
    }

    fn build(&mut self, genes: usize, classes: usize) -> Result<()> {
        self.vars = VarMap::new();
        let params = layers::SeededParams::new(&self.vars, self.params.seed, &self.device);
        self.net = Some(ActinnNetwork::new(
            genes,
            classes,
            self.params.xavier_init,
            &params,
        )?);
        self.n_genes = genes;
        Ok(())
    }

    /// Saves weights and sidecar, as [`Nact::save`] (model kind `actinn`).
    pub fn save(
        &self,
        path: &Path,
        genes: Vec<String>,
        labels: Vec<String>,
        preprocessing: serde_json::Value,
    ) -> Result<()> {
        self.trained_net()?;
        let mut meta = CheckpointMeta::new("actinn", &self.params, genes, labels)?;
        meta.preprocessing = preprocessing;
        cellident_tensor::save_checkpoint(path, &self.vars, &meta)
    }

    /// Loads a model saved by [`Actinn::save`].
    pub fn load(path: &Path, device: &Device) -> Result<(Actinn, CheckpointMeta)> {
        let ck = cellident_tensor::load_checkpoint(path, device)?;
        let params: ActinnParams = ck.config("actinn", ACTINN_NAME)?;
        let mut model = Actinn::new(params, device.clone())?;
        model.build(ck.meta.genes.len(), ck.meta.labels.len())?;
        ck.restore(&model.vars)?;
        Ok((model, ck.meta))
    }
}

impl StreamingClassifier for Actinn {
    /// ACTINN trained from streamed cells (memory bounded by the source's buffer).
    fn fit_source(
        &mut self,
        source: &mut dyn BatchSource,
        n_classes: usize,
        progress: &mut dyn Progress,
    ) -> Result<TrainReport> {
        ensure_param(n_classes > 0, "labels", || "no classes".into())?;
        self.build(source.n_genes(), n_classes)?;
        let p = FitParams {
            epochs: self.params.epochs,
            batch_size: self.params.batch_size,
            optimizer: AdamParams {
                lr: self.params.lr,
                weight_decay: self.params.weight_decay,
                ..AdamParams::default()
            },
            schedule: self.params.schedule.clone(),
            validation_fraction: 0.0,
            patience: 1,
            seed: self.params.seed,
        };
        let net = self.net.as_ref().ok_or_else(|| TensorError::InvalidParam {
            name: "model",
            message: "not built".into(),
        })?;
        fit_classifier_source(
            ACTINN_NAME,
            &ActinnTrainer {
                net,
                vars: self.vars.all_vars(),
            },
            source,
            None,
            &p,
            &self.device,
            progress,
        )
    }
}

impl Classifier for Actinn {
    /// Every cell, shuffled each epoch with the seed: [`StreamingClassifier::fit_source`] over
    /// the in-memory rows.
    fn fit(
        &mut self,
        x: &CsrMatrix,
        y: &[u32],
        n_classes: usize,
        progress: &mut dyn Progress,
    ) -> Result<TrainReport> {
        ensure_labels(x.n_rows(), y, n_classes)?;
        let rows: Vec<usize> = (0..x.n_rows()).collect();
        let mut source = RowsSource {
            x,
            y,
            rows: &rows,
            seed: self.params.seed,
        };
        self.fit_source(&mut source, n_classes, progress)
    }

    fn predict_proba(&self, x: &CsrMatrix) -> Result<DenseMatrix> {
        ensure_gene_count(ACTINN_NAME, self.n_genes, x.n_cols())?;
        let net = self.net.as_ref().ok_or_else(|| TensorError::InvalidParam {
            name: "model",
            message: "ACTINN is not trained".into(),
        })?;
        predict_proba(
            &ActinnTrainer {
                net,
                vars: Vec::new(),
            },
            x,
            &self.device,
            4096,
        )
    }
}

impl cellident_tensor::DifferentiableClassifier for Nact {
    /// Logits of a dense batch `[batch, genes]` through the attention model (for integrated
    /// gradients and gradient x input).
    fn logits(&self, x: &Tensor) -> Result<Tensor> {
        ensure_gene_count(MODEL_NAME, self.n_genes, x.dims2()?.1)?;
        Ok(self.net()?.forward(x)?.0)
    }
}

impl cellident_tensor::DifferentiableClassifier for Actinn {
    fn logits(&self, x: &Tensor) -> Result<Tensor> {
        ensure_gene_count(ACTINN_NAME, self.n_genes, x.dims2()?.1)?;
        self.trained_net()?.forward(x)
    }
}

impl cellident_tensor::FeedForward for Actinn {
    /// ACTINN is a plain ReLU MLP, so DeepLIFT can walk it layer by layer.
    fn networks(&self) -> Result<Vec<cellident_tensor::FeedForwardNet>> {
        Ok(vec![self.trained_net()?.feed_forward()])
    }
}

impl Actinn {
    fn trained_net(&self) -> Result<&ActinnNetwork> {
        self.net.as_ref().ok_or_else(|| TensorError::InvalidParam {
            name: "model",
            message: "ACTINN is not trained".into(),
        })
    }
}

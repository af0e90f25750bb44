//! The metadata MLP and its training.

use std::cell::RefCell;

use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;
use cellident_io::CsrMatrix;
use cellident_preprocess::stream::GeneMoments;
use cellident_preprocess::{anova_f_from_moments, top_by_f, top_genes_by_anova_f};
use cellident_tensor::batch::rng_for;
use cellident_tensor::params::{SeededParams, torch_linear};
use cellident_tensor::{
    Activation, AdamParams, BatchSource, Classifier, DenseMatrix, DifferentiableClassifier,
    FeedForward, FeedForwardLayer, FeedForwardNet, FitParams, LogitNetwork, LrSchedule, Progress,
    Result, StreamingClassifier, TensorError, TrainReport, ensure_gene_count, ensure_labels,
    ensure_param, fit_classifier_on_rows, fit_classifier_source, mean_logits, stratified_holdout,
};
use rand::Rng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

/// Hyper-parameters of the metadata MLP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlpParams {
    /// Hidden layer widths (ReLU after each).
    pub hidden: Vec<usize>,
    /// Dropout probability after each hidden layer during training.
    pub dropout: f64,
    pub lr: f64,
    /// Decoupled weight decay (AdamW); 0 = plain Adam.
    pub weight_decay: f64,
    pub batch_size: usize,
    /// Upper bound on epochs; early stopping usually ends training sooner.
    pub max_epochs: usize,
    /// Epochs without inner-validation improvement before stopping.
    pub patience: usize,
    /// Fraction of the training samples each member holds out (stratified) for early stopping.
    pub validation_fraction: f64,
    /// Gene selection by the ANOVA F-statistic on each member's own training samples: empty =
    /// every gene; one size = that many genes; several sizes = each member trains one network
    /// per size and keeps the one with the lowest loss on its inner validation split.
    pub select_genes: Vec<usize>,
    /// Standardise each (selected) gene with the training mean and standard deviation.
    pub standardize: bool,
    /// Members of the ensemble; each has its own initialisation, batches, dropout masks and
    /// inner validation split.
    pub ensemble: usize,
    pub seed: u64,
}

impl Default for MlpParams {
    /// The improved recipe (docs/explain.md): standardised genes, 5 members, each choosing
    /// between the top 50 and the top 500 genes by F on its own inner validation split.
    fn default() -> Self {
        MlpParams {
            select_genes: vec![50, 500],
            ensemble: 5,
            ..MlpParams::plain()
        }
    }
}

impl MlpParams {
    /// The study's plain network (methods.md "Open questions" 11): every gene, standardised,
    /// one member.
    pub fn plain() -> Self {
        MlpParams {
            hidden: vec![512, 256, 128],
            dropout: 0.5,
            lr: 1e-3,
            weight_decay: 0.0,
            batch_size: 64,
            max_epochs: 100,
            patience: 10,
            validation_fraction: 0.2,
            select_genes: Vec::new(),
            standardize: true,
            ensemble: 1,
            seed: 0,
        }
    }

    fn check(&self) -> Result<()> {
        ensure_param(self.hidden.iter().all(|&h| h > 0), "hidden", || {
            "every hidden width must be at least 1".into()
        })?;
        ensure_param((0.0..1.0).contains(&self.dropout), "dropout", || {
            format!("must be in [0, 1), got {}", self.dropout)
        })?;
        ensure_param(self.lr > 0.0, "lr", || {
            format!("must be > 0, got {}", self.lr)
        })?;
        ensure_param(self.ensemble > 0, "ensemble", || {
            "must be at least 1".into()
        })?;
        ensure_param(
            self.select_genes.iter().all(|&k| k > 0),
            "select_genes",
            || "every size must be at least 1 (or none for all genes)".into(),
        )?;
        self.fit_params(0).check()
    }

    fn fit_params(&self, member: usize) -> FitParams {
        FitParams {
            epochs: self.max_epochs,
            batch_size: self.batch_size,
            optimizer: AdamParams {
                lr: self.lr,
                weight_decay: self.weight_decay,
                decoupled: self.weight_decay > 0.0,
                ..AdamParams::default()
            },
            schedule: LrSchedule::Constant,
            validation_fraction: self.validation_fraction,
            patience: self.patience,
            seed: member_seed(self.seed, member),
        }
    }
}

fn member_seed(seed: u64, member: usize) -> u64 {
    seed.wrapping_mul(1_000_003).wrapping_add(member as u64)
}

/// The trained input transform: selected genes, then `(x - mean) / sd`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct InputTransform {
    genes: Vec<usize>,
    scale: Vec<f32>,
    shift: Vec<f32>,
}

impl InputTransform {
    /// Gene selection (top `k` by F, all genes when `None`) and scaling, fitted on `x` and `y`.
    fn fit(
        x: &CsrMatrix,
        y: &[u32],
        n_classes: usize,
        k: Option<usize>,
        standardize: bool,
    ) -> Result<Self> {
        let genes = match k {
            Some(k) if k < x.n_cols() => {
                top_genes_by_anova_f(x, y, n_classes, k).map_err(|e| TensorError::InvalidParam {
                    name: "select_genes",
                    message: e.to_string(),
                })?
            }
            _ => (0..x.n_cols()).collect(),
        };
        let sel = select(x, &genes);
        let (mean, var) = cellident_preprocess::gene_mean_var(&sel);
        // Population sd (scikit-learn's StandardScaler).
        let n = sel.n_rows().max(2) as f64;
        let sd: Vec<f64> = var.iter().map(|&v| (v * (n - 1.0) / n).sqrt()).collect();
        Ok(Self::standardizing(genes, &mean, &sd, standardize))
    }

    /// The transform of one streamed pass: `classes` holds each class's moments of every
    /// input gene; selection by the F-statistic from them, standardisation by the pooled
    /// moments (population sd, as [`InputTransform::fit`]).
    fn from_class_moments(
        classes: &[GeneMoments],
        k: Option<usize>,
        standardize: bool,
    ) -> Result<Self> {
        let n_genes = classes.first().map_or(0, |c| c.means().len());
        let genes = match k {
            Some(k) if k < n_genes => {
                let f = anova_f_from_moments(classes).map_err(|e| TensorError::InvalidParam {
                    name: "select_genes",
                    message: e.to_string(),
                })?;
                top_by_f(&f, k)
            }
            _ => (0..n_genes).collect(),
        };
        let mut all = GeneMoments::new(n_genes);
        for c in classes {
            all.merge(c);
        }
        let n = all.n_cells().max(1) as f64;
        let mean: Vec<f64> = genes.iter().map(|&j| all.means()[j]).collect();
        let sd: Vec<f64> = genes
            .iter()
            .map(|&j| (all.sums_of_squares()[j] / n).sqrt())
            .collect();
        Ok(Self::standardizing(genes, &mean, &sd, standardize))
    }

    /// `genes` with `(x - mean) / sd` when `standardize` (constant genes keep scale 1), the
    /// identity otherwise.
    fn standardizing(genes: Vec<usize>, mean: &[f64], sd: &[f64], standardize: bool) -> Self {
        let (scale, shift) = if standardize {
            mean.iter()
                .zip(sd)
                .map(|(&m, &sd)| {
                    let s = if sd > 1e-8 { 1.0 / sd } else { 1.0 };
                    (s as f32, (-m * s) as f32)
                })
                .unzip()
        } else {
            (vec![1.0; genes.len()], vec![0.0; genes.len()])
        };
        InputTransform {
            genes,
            scale,
            shift,
        }
    }

    /// The standardisation as a fixed layer in front of a member's dense layers, applied to
    /// each densified batch of the selected genes. Why not a standardised copy of the
    /// matrix: standardised values are dense, so the copy was a `[cells, genes]` matrix stored
    /// as CSR (values and indices, twice the dense size, built through a dense intermediate)
    /// rebuilt for every member.
    fn affine_layer(&self, device: &Device) -> Result<FeedForwardLayer> {
        let k = self.genes.len();
        Ok(FeedForwardLayer::Affine {
            scale: Tensor::from_vec(self.scale.clone(), k, device)?,
            shift: Tensor::from_vec(self.shift.clone(), k, device)?,
        })
    }

    /// The gene selection and the standardisation as layers over all `n_inputs` genes.
    fn layers(&self, n_inputs: usize, device: &Device) -> Result<Vec<FeedForwardLayer>> {
        let idx: Vec<u32> = self.genes.iter().map(|&g| g as u32).collect();
        let k = idx.len();
        Ok(vec![
            FeedForwardLayer::Select {
                indices: Tensor::from_vec(idx, k, device)?,
                n_inputs,
            },
            self.affine_layer(device)?,
        ])
    }
}

fn select(x: &CsrMatrix, genes: &[usize]) -> CsrMatrix {
    let cols: Vec<Option<usize>> = genes.iter().map(|&g| Some(g)).collect();
    x.select_columns(&cols)
}

/// One member during training: the dense layers, with seeded dropout after each ReLU.
struct MemberTrainer {
    layers: Vec<FeedForwardLayer>,
    /// Leading fixed layers (a streamed input transform), not part of the member's network.
    n_front: usize,
    vars: Vec<Var>,
    dropout: f64,
    rng: RefCell<StdRng>,
}

impl MemberTrainer {
    /// The trained dense layers (without the fixed front).
    fn dense_layers(&self) -> Vec<FeedForwardLayer> {
        self.layers[self.n_front..].to_vec()
    }
}

impl LogitNetwork for MemberTrainer {
    fn logits(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = x.clone();
        for l in &self.layers {
            h = l.forward(&h)?;
            if train && self.dropout > 0.0 && matches!(l, FeedForwardLayer::Activation(_)) {
                // Inverted dropout with our own seeded masks (candle's CPU RNG cannot be seeded).
                let keep = 1.0 - self.dropout;
                let n = h.elem_count();
                let mask: Vec<f32> = {
                    let mut rng = self.rng.borrow_mut();
                    (0..n)
                        .map(|_| {
                            if rng.random::<f64>() < keep {
                                (1.0 / keep) as f32
                            } else {
                                0.0
                            }
                        })
                        .collect()
                };
                let mask = Tensor::from_vec(mask, h.shape(), h.device())?;
                h = (h * mask)?;
            }
        }
        Ok(h)
    }
    fn vars(&self) -> Vec<Var> {
        self.vars.clone()
    }
}

/// One trained network of the ensemble.
#[derive(Debug, Clone)]
struct Member {
    transform: InputTransform,
    layers: Vec<FeedForwardLayer>,
    /// Best inner-validation loss (`None` without validation).
    val_loss: Option<f32>,
}

/// The metadata MLP (an ensemble of one or more members).
pub struct MetadataMlp {
    params: MlpParams,
    device: Device,
    /// Each member: its input transform and its dense layers.
    members: Vec<Member>,
    n_genes: usize,
}

impl std::fmt::Debug for MetadataMlp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataMlp")
            .field("params", &self.params)
            .field("members", &self.members.len())
            .field("n_genes", &self.n_genes)
            .finish()
    }
}

impl MetadataMlp {
    pub fn new(params: MlpParams, device: Device) -> Result<Self> {
        params.check()?;
        Ok(MetadataMlp {
            params,
            device,
            members: Vec::new(),
            n_genes: 0,
        })
    }

    pub fn params(&self) -> &MlpParams {
        &self.params
    }

    /// Number of input genes each member reads (after its gene selection).
    pub fn member_gene_counts(&self) -> Vec<usize> {
        self.members
            .iter()
            .map(|m| m.transform.genes.len())
            .collect()
    }

    fn trained(&self) -> Result<()> {
        ensure_param(!self.members.is_empty(), "model", || {
            "the metadata MLP is not trained".into()
        })
    }

    /// One member's trainer: `front` (fixed layers, e.g. a streamed input transform), then
    /// fresh dense layers `n_inputs -> hidden... -> n_classes` seeded by `seed`.
    fn member_trainer(
        &self,
        n_inputs: usize,
        n_classes: usize,
        seed: u64,
        front: Vec<FeedForwardLayer>,
    ) -> Result<MemberTrainer> {
        let map = VarMap::new();
        let vb = SeededParams::new(&map, seed, &self.device);
        let mut dims = vec![n_inputs];
        dims.extend(&self.params.hidden);
        dims.push(n_classes);
        let n_front = front.len();
        let mut layers = front;
        for (i, w) in dims.windows(2).enumerate() {
            let lin = torch_linear(w[0], w[1], &vb.pp(format!("fc{}", i + 1)))?;
            layers.push(FeedForwardLayer::Linear {
                weight: lin.weight().clone(),
                bias: lin.bias().cloned(),
            });
            if i + 2 < dims.len() {
                layers.push(FeedForwardLayer::Activation(Activation::Relu));
            }
        }
        Ok(MemberTrainer {
            layers,
            n_front,
            vars: map.all_vars(),
            dropout: self.params.dropout,
            rng: RefCell::new(rng_for(seed, 0xD50)),
        })
    }

    /// Trains one network on rows `train` of `xt` (the selected genes), behind the fixed
    /// `front` layers (the standardisation), early-stopped on `val`.
    #[allow(clippy::too_many_arguments)]
    fn train_network(
        &self,
        xt: &CsrMatrix,
        front: Vec<FeedForwardLayer>,
        y: &[u32],
        n_classes: usize,
        train: &[usize],
        val: &[usize],
        fit: &FitParams,
        name: &str,
        progress: &mut dyn Progress,
    ) -> Result<(Vec<FeedForwardLayer>, TrainReport)> {
        let trainer = self.member_trainer(xt.n_cols(), n_classes, fit.seed, front)?;
        let report = fit_classifier_on_rows(
            name,
            &trainer,
            xt,
            y,
            train,
            val,
            fit,
            &self.device,
            progress,
        )?;
        Ok((trainer.dense_layers(), report))
    }

    /// The gene-set sizes to try: every input gene (`None`), or each `select_genes` size
    /// (capped at `n_genes`, deduplicated, ascending); without a validation split there is
    /// nothing to choose by, so only the largest.
    fn gene_set_sizes(&self, n_genes: usize) -> Vec<Option<usize>> {
        if self.params.select_genes.is_empty() {
            return vec![None];
        }
        let mut k: Vec<usize> = self
            .params
            .select_genes
            .iter()
            .map(|&k| k.min(n_genes))
            .collect();
        k.sort_unstable();
        k.dedup();
        if k.len() > 1 && self.params.validation_fraction == 0.0 {
            k.drain(..k.len() - 1);
        }
        k.into_iter().map(Some).collect()
    }
}

/// A source whose epochs are numbered from `offset`: each ensemble member sees its own
/// batch orders.
struct EpochShifted<'a> {
    inner: &'a mut dyn BatchSource,
    offset: usize,
}

impl BatchSource for EpochShifted<'_> {
    fn n_genes(&self) -> usize {
        self.inner.n_genes()
    }
    fn n_cells(&self) -> usize {
        self.inner.n_cells()
    }
    fn for_each_batch(
        &mut self,
        epoch: usize,
        batch_size: usize,
        device: &Device,
        visit: &mut dyn FnMut(&Tensor, &Tensor) -> Result<()>,
    ) -> Result<()> {
        self.inner
            .for_each_batch(self.offset + epoch, batch_size, device, visit)
    }
    fn column_means(&mut self) -> Result<Vec<f32>> {
        self.inner.column_means()
    }
}

/// Cells per batch of the streamed statistics pass.
const STATS_BATCH: usize = 1024;

impl StreamingClassifier for MetadataMlp {
    /// Trains the ensemble on cells streamed from `source`, so memory is bounded by the
    /// source's buffer and the model. One pass gathers each class's moments of every gene:
    /// the ANOVA-F gene selection and the standardisation come from them (over all cells,
    /// shared by the members, where in memory each member fits its own on its training
    /// rows). Then each member trains for `max_epochs` epochs with its own initialisation,
    /// dropout masks and batch orders. Streaming has no validation hold-out, so
    /// `validation_fraction` must be 0 (no early stopping; with several `select_genes` sizes
    /// the largest is used, as in memory without validation).
    fn fit_source(
        &mut self,
        source: &mut dyn BatchSource,
        n_classes: usize,
        progress: &mut dyn Progress,
    ) -> Result<TrainReport> {
        let started = std::time::Instant::now();
        cellident_tensor::ensure_no_validation_split(self.params.validation_fraction)?;
        ensure_param(n_classes >= 2, "labels", || {
            format!("need at least 2 classes, got {n_classes}")
        })?;
        let g = source.n_genes();
        let mut classes = vec![GeneMoments::new(g); n_classes];
        // Statistics are order-free, so any epoch's order serves.
        source.for_each_batch(0, STATS_BATCH, &Device::Cpu, &mut |xb, yb| {
            let rows = xb.dims2()?.0;
            let x = CsrMatrix::from_dense(rows, g, &xb.flatten_all()?.to_vec1::<f32>()?)?;
            let y = yb.to_vec1::<u32>()?;
            let mut by_class = vec![Vec::new(); n_classes];
            for (i, &c) in y.iter().enumerate() {
                by_class
                    .get_mut(c as usize)
                    .ok_or_else(|| {
                        TensorError::Source(format!(
                            "class index {c} from the source, but {n_classes} classes"
                        ))
                    })?
                    .push(i);
            }
            for (moments, rows) in classes.iter_mut().zip(&by_class) {
                if !rows.is_empty() {
                    moments.add(&x.select_rows(rows), f64::from);
                }
            }
            Ok(())
        })?;
        let k = self.gene_set_sizes(g).pop().flatten();
        let transform = InputTransform::from_class_moments(&classes, k, self.params.standardize)?;
        let mut members = Vec::with_capacity(self.params.ensemble);
        let mut report = TrainReport::default();
        for m in 0..self.params.ensemble {
            let fit = self.params.fit_params(m);
            let front = transform.layers(g, &self.device)?;
            let trainer = self.member_trainer(transform.genes.len(), n_classes, fit.seed, front)?;
            let name = format!(
                "metadata MLP {}/{} ({} genes, streamed)",
                m + 1,
                self.params.ensemble,
                transform.genes.len()
            );
            let mut shifted = EpochShifted {
                inner: &mut *source,
                offset: m * fit.epochs,
            };
            let r = fit_classifier_source(
                &name,
                &trainer,
                &mut shifted,
                None,
                &fit,
                &self.device,
                progress,
            )?;
            report.epochs.extend(r.epochs);
            members.push(Member {
                transform: transform.clone(),
                layers: trainer.dense_layers(),
                val_loss: None,
            });
        }
        self.members = members;
        self.n_genes = g;
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }
}

impl Classifier for MetadataMlp {
    fn fit(
        &mut self,
        x: &CsrMatrix,
        y: &[u32],
        n_classes: usize,
        progress: &mut dyn Progress,
    ) -> Result<TrainReport> {
        let started = std::time::Instant::now();
        ensure_labels(x.n_rows(), y, n_classes)?;
        ensure_param(n_classes >= 2, "labels", || {
            format!("need at least 2 classes, got {n_classes}")
        })?;
        let sizes = self.gene_set_sizes(x.n_cols());
        let mut members = Vec::with_capacity(self.params.ensemble);
        let mut report = TrainReport::default();
        for m in 0..self.params.ensemble {
            let fit = self.params.fit_params(m);
            let (train, val) = if self.params.validation_fraction > 0.0 {
                // Its own stream, so the split differs from the one `fit_classifier` would draw.
                stratified_holdout(
                    y,
                    self.params.validation_fraction,
                    &mut rng_for(fit.seed, 0x1_AA11),
                )
            } else {
                ((0..y.len()).collect(), Vec::new())
            };
            // Gene selection and scaling see the member's training rows only, so that its
            // validation loss is honest and can choose the number of genes.
            let xtr = x.select_rows(&train);
            let ytr: Vec<u32> = train.iter().map(|&i| y[i]).collect();
            let mut best: Option<Member> = None;
            for &k in &sizes {
                let transform =
                    InputTransform::fit(&xtr, &ytr, n_classes, k, self.params.standardize)?;
                let xt = select(x, &transform.genes);
                let front = vec![transform.affine_layer(&self.device)?];
                let name = format!(
                    "metadata MLP {}/{} ({} genes)",
                    m + 1,
                    self.params.ensemble,
                    transform.genes.len()
                );
                let (layers, r) = self.train_network(
                    &xt, front, y, n_classes, &train, &val, &fit, &name, progress,
                )?;
                let val_loss = r
                    .epochs
                    .iter()
                    .filter_map(|e| e.val_loss)
                    .min_by(|a, b| a.total_cmp(b));
                report.epochs.extend(r.epochs);
                report.stopped_early |= r.stopped_early;
                let better = match (&best, val_loss) {
                    (None, _) => true,
                    (Some(b), Some(v)) => b.val_loss.is_some_and(|bv| v < bv),
                    (Some(_), None) => false,
                };
                if better {
                    best = Some(Member {
                        transform,
                        layers,
                        val_loss,
                    });
                }
            }
            members.extend(best);
        }
        self.members = members;
        self.n_genes = x.n_cols();
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    fn predict_proba(&self, x: &CsrMatrix) -> Result<DenseMatrix> {
        self.trained()?;
        ensure_gene_count("metadata MLP", self.n_genes, x.n_cols())?;
        // Each member in its inference form: its genes picked from the sparse input before
        // densifying, its standardisation folded into the first dense layer.
        let members = self
            .networks()?
            .iter()
            .map(|net| {
                let (selection, net) = net.inference_form()?;
                let input = match selection {
                    Some(genes) => std::borrow::Cow::Owned(select(x, &genes)),
                    None => std::borrow::Cow::Borrowed(x),
                };
                Ok((input, net))
            })
            .collect::<Result<Vec<_>>>()?;
        let rows: Vec<usize> = (0..x.n_rows()).collect();
        let mut values = Vec::new();
        let mut classes = 0;
        for chunk in rows.chunks(4096) {
            let mut sum: Option<Tensor> = None;
            for (input, net) in &members {
                let xb = cellident_tensor::batch::dense_rows(input, chunk, &self.device)?;
                let logits = net.forward(&xb)?;
                sum = Some(match sum {
                    None => logits,
                    Some(s) => (s + logits)?,
                });
            }
            let Some(sum) = sum else {
                return Err(TensorError::InvalidParam {
                    name: "members",
                    message: "a trained metadata MLP has at least one member".into(),
                });
            };
            let p = cellident_tensor::nn::softmax(&(sum / members.len() as f64)?)?;
            classes = p.dims2()?.1;
            values.extend(p.flatten_all()?.to_vec1::<f32>()?);
        }
        DenseMatrix::new(x.n_rows(), classes, values)
    }
}

impl FeedForward for MetadataMlp {
    /// Each member with its gene selection and standardisation in front: input = all genes.
    fn networks(&self) -> Result<Vec<FeedForwardNet>> {
        self.trained()?;
        self.members
            .iter()
            .map(|m| {
                let mut layers = m.transform.layers(self.n_genes, &self.device)?;
                layers.extend(m.layers.iter().cloned());
                Ok(FeedForwardNet { layers })
            })
            .collect()
    }
}

impl DifferentiableClassifier for MetadataMlp {
    fn logits(&self, x: &Tensor) -> Result<Tensor> {
        mean_logits(&self.networks()?, x)
    }
}

/// What a checkpoint's sidecar keeps beside the weights: each member's input transform.
#[derive(Serialize, Deserialize)]
struct SavedMembers {
    members: Vec<InputTransform>,
}

const MODEL_KIND: &str = "mlp";

impl MetadataMlp {
    /// Saves the ensemble: every member's dense layers as `member{m}.fc{i}.weight|bias`
    /// tensors, its gene selection and standardisation in the sidecar, with `genes` (the
    /// model's input genes in order), `labels` (class names in output order) and the
    /// `preprocessing` to replay on new data.
    pub fn save(
        &self,
        path: &std::path::Path,
        genes: Vec<String>,
        labels: Vec<String>,
        preprocessing: serde_json::Value,
    ) -> Result<()> {
        self.trained()?;
        ensure_param(genes.len() == self.n_genes, "genes", || {
            format!(
                "{} gene names for a model of {} input genes",
                genes.len(),
                self.n_genes
            )
        })?;
        let mut tensors = std::collections::HashMap::new();
        for (m, member) in self.members.iter().enumerate() {
            let linears = member.layers.iter().filter_map(|l| match l {
                FeedForwardLayer::Linear { weight, bias } => Some((weight, bias)),
                _ => None,
            });
            for (i, (weight, bias)) in linears.enumerate() {
                tensors.insert(format!("member{m}.fc{}.weight", i + 1), weight.clone());
                if let Some(b) = bias {
                    tensors.insert(format!("member{m}.fc{}.bias", i + 1), b.clone());
                }
            }
        }
        let mut meta =
            cellident_tensor::CheckpointMeta::new(MODEL_KIND, &self.params, genes, labels)?;
        meta.preprocessing = preprocessing;
        meta.extra = serde_json::to_value(SavedMembers {
            members: self.members.iter().map(|m| m.transform.clone()).collect(),
        })
        .map_err(|e| TensorError::InvalidParam {
            name: "model",
            message: e.to_string(),
        })?;
        cellident_tensor::save_checkpoint_tensors(path, &tensors, &meta)
    }

    /// Loads a model saved by [`MetadataMlp::save`].
    pub fn load(
        path: &std::path::Path,
        device: &Device,
    ) -> Result<(MetadataMlp, cellident_tensor::CheckpointMeta)> {
        let ck = cellident_tensor::load_checkpoint(path, device)?;
        let params: MlpParams = ck.config(MODEL_KIND, "metadata MLP")?;
        let bad = |message: String| TensorError::Checkpoint {
            path: ck.path.clone(),
            message,
        };
        let saved: SavedMembers = serde_json::from_value(ck.meta.extra.clone())
            .map_err(|e| bad(format!("bad member transforms: {e}")))?;
        let n_genes = ck.meta.genes.len();
        let mut members = Vec::with_capacity(saved.members.len());
        for (m, transform) in saved.members.into_iter().enumerate() {
            let k = transform.genes.len();
            if transform.genes.iter().any(|&g| g >= n_genes)
                || transform.scale.len() != k
                || transform.shift.len() != k
            {
                return Err(bad(format!(
                    "member {m}: gene selection does not fit {n_genes} input genes"
                )));
            }
            let n_linear = params.hidden.len() + 1;
            let mut layers = Vec::with_capacity(2 * n_linear);
            for i in 1..=n_linear {
                let weight = ck.tensor(&format!("member{m}.fc{i}.weight"))?.clone();
                let bias = ck.tensors.get(&format!("member{m}.fc{i}.bias")).cloned();
                layers.push(FeedForwardLayer::Linear { weight, bias });
                if i < n_linear {
                    layers.push(FeedForwardLayer::Activation(Activation::Relu));
                }
            }
            members.push(Member {
                transform,
                layers,
                val_loss: None,
            });
        }
        if members.is_empty() {
            return Err(bad("the checkpoint holds no ensemble member".into()));
        }
        params.check()?;
        let model = MetadataMlp {
            params,
            device: device.clone(),
            members,
            n_genes,
        };
        Ok((model, ck.meta))
    }
}

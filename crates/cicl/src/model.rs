//! The CICL model and its training loop (methods.md §3.2-3.4).

use std::time::Instant;

use candle_core::{Device, Var};
use candle_nn::{Optimizer, VarMap};
use cellident_io::CsrMatrix;
use cellident_preprocess::{KMeansParams, KMeansResult, Pca, PcaParams, kmeans, kmeans_from};
use cellident_tensor::batch::{batches, epoch_order, matrix_rows, rng_for};
use cellident_tensor::params::SeededParams;
use cellident_tensor::{
    Adam, AdamParams, CheckParams, Clusterer, DenseMatrix, Embedder, EpochRecord, Progress, Result,
    TensorError, TrainEvent, TrainReport, check_loss, ensure_gene_count, ensure_param,
};
use serde::{Deserialize, Serialize};

use crate::augment::augmented_view;
use crate::clustering::pseudo_labels;
use crate::encoder::{Dropout, Encoder, ProjectionHead};
use crate::loss::cicl_loss;
use crate::params::{CiclConfig, CiclParams, encoder_learning_rate};

/// Cells per forward pass when embedding without gradients.
const EMBED_BATCH: usize = 1024;
/// The most genes CICL takes: its encoder is as wide as the input (d_model = G).
pub const MAX_GENES: usize = 10_000;

/// What happened at one (re-)fit of the centroids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefitRecord {
    /// Epoch before which the centroids were (re-)fitted (0 = the first k-means).
    pub epoch: usize,
    /// Fraction of cells whose pseudo-label differs from the previous fit's.
    pub labels_changed: f64,
    pub inertia: f64,
    /// The partition this fit left (nearest centroid of every cell), for diagnostics; not
    /// serialised.
    #[serde(skip)]
    pub labels: Vec<u32>,
}

/// One epoch's loss parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossRecord {
    pub epoch: usize,
    pub total: f32,
    pub instance: f32,
    pub cluster: f32,
    /// Fraction of the epoch's pseudo-labels (argmax q of each batch's un-augmented cells)
    /// that differ from the last (re-)fit's partition.
    #[serde(default)]
    pub labels_off_partition: f64,
}

/// The outcome of [`Cicl::fit`].
#[derive(Debug, Clone)]
pub struct CiclFit {
    /// The model's clusters: `argmax_j q_ij` with the final centroids.
    pub labels: Vec<u32>,
    /// A fresh k-means (k-means++, `kmeans_restarts` starts) on the final embedding.
    pub kmeans_labels: Vec<u32>,
    /// The first k-means, on the untrained encoder's embedding.
    pub initial_labels: Vec<u32>,
    /// The final embedding `h`, `[cells, G]`.
    pub embedding: DenseMatrix,
    pub losses: Vec<LossRecord>,
    pub refits: Vec<RefitRecord>,
    pub report: TrainReport,
}

/// CICL: a transformer encoder trained with InfoNCE and a cluster-aware contrastive loss on
/// pseudo-labels from k-means centroids that are re-fitted as the embedding moves.
pub struct Cicl {
    config: CiclConfig,
    device: Device,
    varmap: VarMap,
    net: Option<(Encoder, ProjectionHead)>,
    n_genes: usize,
    centroids: Vec<f32>,
}

impl std::fmt::Debug for Cicl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cicl")
            .field("config", &self.config)
            .field("n_genes", &self.n_genes)
            .field("trained", &self.net.is_some())
            .finish()
    }
}

/// k-means on the top `n_pcs` principal components of `h` (`[cells, dim]`); the centroids
/// returned are each cluster's mean in `h` itself (`[k, dim]`), and the inertia is measured there.
/// A cell can be nearer another cluster's mean in `h` than in the components, so the first
/// epoch's pseudo-labels (nearest centroid in `h`) can differ from these labels; the first re-fit
/// makes the partition in force agree with them again.
fn kmeans_in_principal_components(
    h: &DenseMatrix,
    n_pcs: usize,
    params: &KMeansParams,
) -> Result<KMeansResult> {
    let n_components = n_pcs.min(h.n_rows.saturating_sub(1)).min(h.n_cols).max(1);
    let (_, scores) = Pca::fit_transform(
        h.clone(),
        &PcaParams {
            n_components,
            seed: params.seed,
            ..PcaParams::default()
        },
    )
    .map_err(kmeans_error)?;
    let r = kmeans(&scores, params).map_err(kmeans_error)?;
    let (k, dim) = (params.k, h.n_cols);
    let mut sums = vec![0f64; k * dim];
    let mut counts = vec![0usize; k];
    for (i, &c) in r.labels.iter().enumerate() {
        counts[c as usize] += 1;
        for (s, &v) in sums[c as usize * dim..][..dim].iter_mut().zip(h.row(i)) {
            *s += v as f64;
        }
    }
    let centroids: Vec<f32> = sums
        .chunks(dim)
        .zip(&counts)
        .flat_map(|(row, &n)| row.iter().map(move |&s| (s / n.max(1) as f64) as f32))
        .collect();
    let inertia = r
        .labels
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            h.row(i)
                .iter()
                .zip(&centroids[c as usize * dim..][..dim])
                .map(|(&a, &b)| ((a - b) as f64).powi(2))
                .sum::<f64>()
        })
        .sum();
    Ok(KMeansResult {
        labels: r.labels,
        centroids,
        inertia,
        iterations: r.iterations,
    })
}

/// A k-means failure of the clustering head, as this crate's error type.
fn kmeans_error(e: cellident_preprocess::PreprocessError) -> TensorError {
    TensorError::InvalidParam {
        name: "k-means",
        message: e.to_string(),
    }
}

fn fraction_changed(a: &[u32], b: &[u32]) -> f64 {
    let n = a.len().max(1);
    a.iter().zip(b).filter(|(x, y)| x != y).count() as f64 / n as f64
}

impl Cicl {
    pub fn new(config: CiclConfig, device: Device) -> Self {
        Cicl {
            config,
            device,
            varmap: VarMap::new(),
            net: None,
            n_genes: 0,
            centroids: Vec::new(),
        }
    }

    /// Checks `params` and builds an untrained model on the CPU.
    pub fn from_params(params: &CiclParams) -> Result<Self> {
        Ok(Cicl::new(params.check()?, Device::Cpu))
    }

    pub fn params(&self) -> &CiclParams {
        self.config.params()
    }

    /// Centroids `[k, G]` row-major (empty before `fit`).
    pub fn centroids(&self) -> &[f32] {
        &self.centroids
    }

    fn build(&mut self, g: usize) -> Result<()> {
        let p = self.config.params();
        self.varmap = VarMap::new();
        let sp = SeededParams::new(&self.varmap, p.seed, &self.device);
        let encoder = Encoder::new(g, p, &sp.pp("encoder"))?;
        let head = ProjectionHead::new(g, p, &sp.pp("projection"))?;
        self.net = Some((encoder, head));
        self.n_genes = g;
        Ok(())
    }

    fn network(&self) -> Result<&(Encoder, ProjectionHead)> {
        self.net.as_ref().ok_or_else(|| TensorError::InvalidParam {
            name: "model",
            message: "CICL is not trained yet: call fit first".into(),
        })
    }

    /// The encoder's embedding `h` of every row of `x` (`[cells, G]`), without dropout.
    pub fn embed_dense(&self, x: &DenseMatrix) -> Result<DenseMatrix> {
        let (encoder, _) = self.network()?;
        ensure_gene_count("CICL", self.n_genes, x.n_cols)?;
        let mut values = Vec::with_capacity(x.n_rows * x.n_cols);
        let all: Vec<usize> = (0..x.n_rows).collect();
        for rows in all.chunks(EMBED_BATCH) {
            let h = encoder.forward(&matrix_rows(x, rows, &self.device)?, &mut Dropout::eval())?;
            values.extend(h.flatten_all()?.to_vec1::<f32>()?);
        }
        DenseMatrix::new(x.n_rows, x.n_cols, values)
    }

    /// Vars of the encoder and of the projection head, in name order (for reproducible
    /// optimizer state), as two groups with their own learning rates.
    fn var_groups(&self) -> Result<(Vec<Var>, Vec<Var>)> {
        let (mut encoder, mut head) = (Vec::new(), Vec::new());
        for (name, var) in cellident_tensor::params::named_vars(&self.varmap)? {
            if name.starts_with("projection.") {
                head.push(var);
            } else {
                encoder.push(var);
            }
        }
        Ok((encoder, head))
    }

    /// Trains on the preprocessed matrix `x` (`[cells, G]`: normalised, logged HVGs) and clusters
    /// its cells into `k` groups.
    pub fn fit(
        &mut self,
        x: &DenseMatrix,
        k: usize,
        progress: &mut dyn Progress,
    ) -> Result<CiclFit> {
        let started = Instant::now();
        let p = self.config.params().clone();
        let n = x.n_rows;
        ensure_param(n >= 2, "cells", || {
            format!("CICL needs at least 2 cells, got {n}")
        })?;
        ensure_param(k >= 1 && k <= n, "n_clusters", || {
            format!("must be between 1 and the number of cells ({n}), got {k}")
        })?;
        // The encoder's width is the gene count (d_model = G, four layers of G x 1024 maps):
        // ~16,000 G parameters, four copies with the gradient and Adam's moments. Far past the
        // 2,000 HVGs of the recipe that is tens of GB; say so before allocating it.
        ensure_param(x.n_cols <= MAX_GENES, "genes", || {
            format!(
                "CICL's encoder is as wide as its input ({} genes here; about {:.0} GB to train); \
                 select at most {MAX_GENES} genes first (the recipe keeps 2,000 highly variable \
                 genes)",
                x.n_cols,
                x.n_cols as f64 * 16_400.0 * 16.0 / 1e9
            )
        })?;
        if let Some(j) = x.values.iter().position(|v| !v.is_finite()) {
            return Err(TensorError::InvalidParam {
                name: "input",
                message: format!(
                    "cell {} gene {} is {} (CICL needs finite expression values)",
                    j / x.n_cols,
                    j % x.n_cols,
                    x.values[j]
                ),
            });
        }
        self.build(x.n_cols)?;
        let kmeans_params = KMeansParams {
            n_init: p.kmeans_restarts,
            ..KMeansParams::new(k, p.seed)
        };

        // The first k-means, on the untrained encoder's embedding (the reference's init).
        let h = self.embed_dense(x)?;
        let first = if p.first_kmeans_pcs == 0 {
            kmeans(&h, &kmeans_params).map_err(kmeans_error)?
        } else {
            kmeans_in_principal_components(&h, p.first_kmeans_pcs, &kmeans_params)?
        };
        self.centroids = first.centroids;
        // The last record's `labels` is the partition now in force: the loop reads it from
        // there rather than keeping a second copy.
        let mut refits = vec![RefitRecord {
            epoch: 0,
            labels_changed: 0.0,
            inertia: first.inertia,
            labels: first.labels,
        }];

        let (encoder_vars, head_vars) = self.var_groups()?;
        let adam = |lr| AdamParams {
            lr,
            weight_decay: p.weight_decay,
            ..AdamParams::default()
        };
        // A last batch of one cell has no negatives: fold it away.
        let batch_size = p.batch_size.min(n);
        let drop_last = n % batch_size == 1;
        let batches_per_epoch = n / batch_size + usize::from(n % batch_size > 1);
        let lr_encoder = encoder_learning_rate(p.lr_encoder, p.lr_batch_budget, batches_per_epoch);
        let mut encoder_opt = Adam::new(encoder_vars, adam(lr_encoder))?;
        let mut head_opt = Adam::new(head_vars, adam(p.lr_head))?;
        let mut dropout = Dropout::train(p.dropout, rng_for(p.seed, 0xD20_9047));
        let mut views = (
            augmented_view(x, &p.augment, p.seed, 1)?,
            augmented_view(x, &p.augment, p.seed, 2)?,
        );
        progress.event(&TrainEvent::Start {
            model: "CICL".into(),
            epochs: p.epochs,
            batches_per_epoch,
        });
        let mut losses = Vec::with_capacity(p.epochs);
        let mut epochs = Vec::with_capacity(p.epochs);
        for epoch in 0..p.epochs {
            if !p.frozen_centroids && p.refit_every > 0 && epoch > 0 && epoch % p.refit_every == 0 {
                let refit = self.refit(x, partition_in_force(&refits))?;
                refits.push(RefitRecord { epoch, ..refit });
            }
            if p.augment.resample_each_epoch && epoch > 0 {
                let s = 2 * epoch as u64 + 1;
                views = (
                    augmented_view(x, &p.augment, p.seed, s)?,
                    augmented_view(x, &p.augment, p.seed, s + 1)?,
                );
            }
            let last_labels = partition_in_force(&refits);
            let order = epoch_order(n, p.seed, epoch);
            let (mut sum, mut sum_ins, mut sum_clu, mut count) = (0f64, 0f64, 0f64, 0usize);
            let mut off = 0usize;
            for (b, rows) in batches(&order, batch_size, drop_last).enumerate() {
                let (encoder, head) = self.network()?;
                // Pseudo-labels from the un-augmented cells with the current encoder.
                let h0 = encoder
                    .forward(&matrix_rows(x, rows, &self.device)?, &mut Dropout::eval())?
                    .detach();
                let labels = pseudo_labels(&DenseMatrix::from_tensor(&h0)?, &self.centroids)?;
                off += rows
                    .iter()
                    .zip(&labels)
                    .filter(|&(&r, &l)| last_labels[r] != l)
                    .count();
                let z1 = head.forward(
                    &encoder.forward(&matrix_rows(&views.0, rows, &self.device)?, &mut dropout)?,
                )?;
                let z2 = head.forward(
                    &encoder.forward(&matrix_rows(&views.1, rows, &self.device)?, &mut dropout)?,
                )?;
                let (loss, ins, clu) =
                    cicl_loss(&z1, &z2, &labels, p.temperature, p.cluster_weight)?;
                let value = loss.to_scalar::<f32>()?;
                check_loss(value, epoch, b)?;
                let grads = cellident_tensor::nn::backward(&loss)?;
                encoder_opt.step(&grads)?;
                head_opt.step(&grads)?;
                progress.event(&TrainEvent::Batch {
                    epoch,
                    batch: b,
                    loss: value,
                });
                let w = rows.len();
                sum += value as f64 * w as f64;
                sum_ins += ins as f64 * w as f64;
                sum_clu += clu as f64 * w as f64;
                count += w;
            }
            let c = count.max(1) as f64;
            let record = EpochRecord {
                epoch,
                train_loss: (sum / c) as f32,
                val_loss: None,
                lr: lr_encoder,
            };
            losses.push(LossRecord {
                epoch,
                total: (sum / c) as f32,
                instance: (sum_ins / c) as f32,
                cluster: (sum_clu / c) as f32,
                labels_off_partition: off as f64 / c,
            });
            progress.event(&TrainEvent::Epoch(record.clone()));
            epochs.push(record);
        }
        // The paper's iteration ends with a last re-fit on the final embedding; frozen
        // centroids (the reference code) keep the first k-means.
        if !p.frozen_centroids && p.refit_every > 0 {
            let refit = self.refit(x, partition_in_force(&refits))?;
            refits.push(RefitRecord {
                epoch: p.epochs,
                ..refit
            });
        }
        let embedding = self.embed_dense(x)?;
        let labels = pseudo_labels(&embedding, &self.centroids)?;
        let kmeans_labels = kmeans(&embedding, &kmeans_params)
            .map_err(kmeans_error)?
            .labels;
        progress.event(&TrainEvent::Finish);
        Ok(CiclFit {
            labels,
            kmeans_labels,
            initial_labels: refits[0].labels.clone(),
            embedding,
            losses,
            refits,
            report: TrainReport {
                kept_epoch: p.epochs.saturating_sub(1),
                epochs,
                stopped_early: false,
                seconds: started.elapsed().as_secs_f64(),
            },
        })
    }

    /// Lloyd iterations (at most `refit_max_iter`) from the current centroids on the current
    /// embedding; `previous` is the partition it replaces.
    fn refit(&mut self, x: &DenseMatrix, previous: &[u32]) -> Result<RefitRecord> {
        let h = self.embed_dense(x)?;
        let max_iter = self.config.params().refit_max_iter;
        let r = kmeans_from(&h, &self.centroids, max_iter, 1e-4).map_err(kmeans_error)?;
        let changed = fraction_changed(previous, &r.labels);
        self.centroids = r.centroids;
        Ok(RefitRecord {
            epoch: 0,
            labels_changed: changed,
            inertia: r.inertia,
            labels: r.labels,
        })
    }
}

/// The partition in force: the last (re-)fit's labels. `refits` always holds the first
/// k-means, so it is never empty.
fn partition_in_force(refits: &[RefitRecord]) -> &[u32] {
    &refits[refits.len() - 1].labels
}

fn dense(x: &CsrMatrix) -> Result<DenseMatrix> {
    DenseMatrix::new(x.n_rows(), x.n_cols(), x.to_dense())
}

impl Clusterer for Cicl {
    fn fit_predict(
        &mut self,
        x: &CsrMatrix,
        n_clusters: usize,
        progress: &mut dyn Progress,
    ) -> Result<Vec<u32>> {
        Ok(self.fit(&dense(x)?, n_clusters, progress)?.labels)
    }
}

impl Embedder for Cicl {
    fn embed(&self, x: &CsrMatrix) -> Result<DenseMatrix> {
        self.embed_dense(&dense(x)?)
    }

    fn embedding_dim(&self) -> usize {
        self.n_genes
    }
}

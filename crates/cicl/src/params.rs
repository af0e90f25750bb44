//! CICL's hyper-parameters: `CiclParams` (what a user writes) -> `check()` -> `CiclConfig`.

use cellident_tensor::{CheckParams, Result, ensure_param};
use serde::{Deserialize, Serialize};

/// How the two augmented views of each cell are drawn (methods.md §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AugmentParams {
    /// Fraction of genes that receive noise in each view (the reference: 0.8).
    pub gene_fraction: f64,
    /// Standard deviation of the Gaussian noise (the reference: 0.5).
    pub noise_sd: f64,
    /// `false`: two views drawn once before training (the reference code); `true`: drawn anew
    /// every epoch.
    pub resample_each_epoch: bool,
}

impl Default for AugmentParams {
    fn default() -> Self {
        AugmentParams {
            gene_fraction: 0.8,
            noise_sd: 0.5,
            resample_each_epoch: false,
        }
    }
}

/// Hyper-parameters of CICL. [`CiclParams::default`] is cellident's recipe: the paper's network,
/// losses and iterated k-means in mini-batches, trained without dropout, with the constant input
/// profile `input_offset` 0.5 and the first k-means in the embedding's top 50 principal
/// components (docs/cicl.md "The first k-means in the embedding's principal components": over
/// five seeds on thirteen labelled sets it is the recipe whose mean median ARI clears
/// PCA-50 + k-means'). [`CiclParams::paper`] is the paper's recipe as described (dropout 0.2,
/// neither addition); [`CiclParams::reference`] the authors' code as released (frozen
/// centroids, one batch of up to 6000 cells per step).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CiclParams {
    /// Transformer encoder layers (the reference: 4).
    pub n_layers: usize,
    /// Attention heads (2) and the width of each head's value projection (512).
    pub n_heads: usize,
    pub head_dim: usize,
    /// Hidden width of each layer's feed-forward block (1024).
    pub ffn_hidden: usize,
    /// Dropout inside the encoder during training (the paper: 0.2; cellident's default: 0,
    /// docs/cicl.md "Dropout 0").
    pub dropout: f64,
    /// Projection head G -> `projection_hidden` -> `projection_dim` (2048, 512).
    pub projection_hidden: usize,
    pub projection_dim: usize,
    /// InfoNCE / cluster-aware temperature τ (0.5) and the weight λ of the cluster-aware loss (0.1).
    pub temperature: f64,
    pub cluster_weight: f64,
    /// Adam learning rates: encoder (1e-4) and projection head (1e-5); L2 weight decay (1e-3).
    pub lr_encoder: f64,
    pub lr_head: f64,
    pub weight_decay: f64,
    /// Cells per optimisation step.
    pub batch_size: usize,
    /// Training epochs (passes over all cells).
    pub epochs: usize,
    /// Re-fit k-means on the current embeddings every this many epochs, warm-started from the
    /// current centroids (the paper's iteration; 0 = never).
    pub refit_every: usize,
    /// Lloyd iterations of each re-fit (300 = to convergence, the paper's "re-fit k-means").
    /// 1 is a damped re-fit: every cell goes to its nearest current centroid and each centroid
    /// to the mean of its cells, once, so a re-fit cannot carry the partition to another
    /// k-means optimum of the moved embedding. Opt-in: docs/cicl.md "One Lloyd step per re-fit".
    #[serde(default = "default_refit_max_iter")]
    pub refit_max_iter: usize,
    /// Batches per epoch above which the encoder's learning rate is scaled down (0 = off, the
    /// paper: one rate for every set). With `n > 0`, an epoch of `b > n` batches trains the
    /// encoder at `lr_encoder · n / b`, so that an epoch, and the stretch between two re-fits,
    /// moves the encoder about as far on a large set as on one of `n · batch_size` cells: on
    /// the largest set the embedding otherwise drifts away from a good first k-means within
    /// the first epoch. Opt-in: docs/cicl.md "An encoder learning rate scaled by the batches
    /// per epoch".
    #[serde(default)]
    pub lr_batch_budget: usize,
    /// Principal components of the untrained embedding that the first k-means runs on (0 = off:
    /// on the whole embedding, the paper). With `n > 0` the first partition is found in the
    /// embedding's top `n` principal components, where the noise of the thousands of other
    /// directions does not blur the clusters, as PCA-50 + k-means does for the input; the first
    /// centroids are then each cluster's mean embedding, and everything after (Student-t
    /// assignment, re-fits) works on the whole embedding as before. The default is 50
    /// (docs/cicl.md "The first k-means in the embedding's principal components"); a parameter
    /// file without this field loads as 0, the behaviour it was written under.
    #[serde(default)]
    pub first_kmeans_pcs: usize,
    /// Keep the centroids of the first k-means for the whole run (the reference code).
    pub frozen_centroids: bool,
    pub augment: AugmentParams,
    /// k-means++ restarts of the first and the final k-means (scikit-learn's 10).
    pub kmeans_restarts: usize,
    pub seed: u64,
    /// Height `a` of a fixed profile added to every cell before the encoder: `+a` on even gene
    /// positions, `-a` on odd ones (0 = off, the paper). Every encoder layer ends in a per-cell
    /// LayerNorm, which divides a cell by its spread over the genes; on gene-scaled input a
    /// cell close to the mean profile (baron_mouse's beta cells) has a small spread, so its noise
    /// is blown up to the size of every other cell's signal. The constant profile makes every
    /// cell's spread about `sqrt(a² + its own)`, so the LayerNorm rescales all cells alike; the
    /// profile is the same for every cell, so it moves no cell relative to another. The default
    /// is 0.5 (docs/cicl.md "A constant profile under the LayerNorm" and "a = 0.5 trained"); a
    /// parameter file without this field loads as 0, the behaviour it was written under.
    #[serde(default)]
    pub input_offset: f64,
}

fn default_refit_max_iter() -> usize {
    300
}

impl Default for CiclParams {
    fn default() -> Self {
        CiclParams {
            n_layers: 4,
            n_heads: 2,
            head_dim: 512,
            ffn_hidden: 1024,
            dropout: 0.0,
            projection_hidden: 2048,
            projection_dim: 512,
            temperature: 0.5,
            cluster_weight: 0.1,
            lr_encoder: 1e-4,
            lr_head: 1e-5,
            weight_decay: 1e-3,
            batch_size: 256,
            epochs: 50,
            refit_every: 5,
            refit_max_iter: default_refit_max_iter(),
            lr_batch_budget: 0,
            first_kmeans_pcs: 50,
            frozen_centroids: false,
            augment: AugmentParams::default(),
            kmeans_restarts: 10,
            seed: 0,
            input_offset: 0.5,
        }
    }
}

impl CiclParams {
    /// The paper's recipe as methods.md §3 describes it: dropout 0.2 in the encoder, the first
    /// k-means on the whole untrained embedding, no input profile; mini-batches of 256 and a
    /// k-means re-fit every 5 epochs as [`CiclParams::default`]. cellident's default before
    /// 2026-12-07.
    pub fn paper() -> Self {
        CiclParams {
            dropout: 0.2,
            first_kmeans_pcs: 0,
            input_offset: 0.0,
            ..CiclParams::default()
        }
    }

    /// The authors' code as released (methods.md §3.4): the paper's network and dropout, every
    /// cell of a dataset of up to 6000 in one batch, 51 passes (epochs 0..=50), centroids frozen
    /// at the first k-means.
    pub fn reference() -> Self {
        CiclParams {
            batch_size: 6000,
            epochs: 51,
            refit_every: 0,
            frozen_centroids: true,
            ..CiclParams::paper()
        }
    }
}

/// The encoder's learning rate for an epoch of `batches_per_epoch` batches under
/// [`CiclParams::lr_batch_budget`] `budget`: `lr_encoder` up to `budget` batches (or with
/// `budget` 0), `lr_encoder · budget / batches_per_epoch` above.
pub fn encoder_learning_rate(lr_encoder: f64, budget: usize, batches_per_epoch: usize) -> f64 {
    if budget > 0 && batches_per_epoch > budget {
        lr_encoder * budget as f64 / batches_per_epoch as f64
    } else {
        lr_encoder
    }
}

/// Validated CICL parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct CiclConfig(pub(crate) CiclParams);

impl CiclConfig {
    /// The checked parameters.
    pub fn params(&self) -> &CiclParams {
        &self.0
    }
}

impl CheckParams for CiclParams {
    type Checked = CiclConfig;

    fn check(&self) -> Result<CiclConfig> {
        let positive = [
            ("n_layers", self.n_layers),
            ("n_heads", self.n_heads),
            ("head_dim", self.head_dim),
            ("ffn_hidden", self.ffn_hidden),
            ("projection_hidden", self.projection_hidden),
            ("projection_dim", self.projection_dim),
            ("batch_size", self.batch_size),
            ("kmeans_restarts", self.kmeans_restarts),
            ("refit_max_iter", self.refit_max_iter),
        ];
        for (name, v) in positive {
            ensure_param(v > 0, name, || "must be at least 1".into())?;
        }
        ensure_param(self.batch_size >= 2, "batch_size", || {
            "contrastive losses need at least 2 cells per batch".into()
        })?;
        ensure_param((0.0..1.0).contains(&self.dropout), "dropout", || {
            format!("must be in [0, 1), got {}", self.dropout)
        })?;
        ensure_param(
            self.temperature > 0.0 && self.temperature.is_finite(),
            "temperature",
            || format!("must be > 0, got {}", self.temperature),
        )?;
        ensure_param(
            self.cluster_weight >= 0.0 && self.cluster_weight.is_finite(),
            "cluster_weight",
            || format!("must be >= 0, got {}", self.cluster_weight),
        )?;
        for (name, lr) in [("lr_encoder", self.lr_encoder), ("lr_head", self.lr_head)] {
            ensure_param(lr > 0.0 && lr.is_finite(), name, || {
                format!("must be > 0, got {lr}")
            })?;
        }
        ensure_param(self.weight_decay >= 0.0, "weight_decay", || {
            format!("must be >= 0, got {}", self.weight_decay)
        })?;
        ensure_param(
            self.input_offset >= 0.0 && self.input_offset.is_finite(),
            "input_offset",
            || format!("must be >= 0, got {}", self.input_offset),
        )?;
        let a = &self.augment;
        ensure_param(
            (0.0..=1.0).contains(&a.gene_fraction),
            "augment.gene_fraction",
            || format!("must be in [0, 1], got {}", a.gene_fraction),
        )?;
        ensure_param(
            a.noise_sd >= 0.0 && a.noise_sd.is_finite(),
            "augment.noise_sd",
            || format!("must be >= 0, got {}", a.noise_sd),
        )?;
        Ok(CiclConfig(self.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_and_bad_values_name_the_parameter() {
        assert!(CiclParams::default().check().is_ok());
        assert!(CiclParams::reference().check().is_ok());
        assert!(CiclParams::paper().check().is_ok());
        let bad = CiclParams {
            temperature: 0.0,
            ..CiclParams::default()
        };
        let e = bad.check().unwrap_err().to_string();
        assert!(e.contains("temperature"), "{e}");
        let bad = CiclParams {
            batch_size: 1,
            ..CiclParams::default()
        };
        assert!(bad.check().unwrap_err().to_string().contains("batch_size"));
        let bad = CiclParams {
            refit_max_iter: 0,
            ..CiclParams::default()
        };
        assert!(
            bad.check()
                .unwrap_err()
                .to_string()
                .contains("refit_max_iter")
        );
    }

    /// Parameter files written before `refit_max_iter`, `lr_batch_budget`, `first_kmeans_pcs`
    /// and `input_offset` existed still load as what they ran: full re-fits at one learning rate
    /// from a first k-means on the whole embedding, no input profile — the paper's recipe, not
    /// today's default.
    #[test]
    fn params_without_newer_fields_load_as_before() {
        let mut v = serde_json::to_value(CiclParams::paper()).unwrap();
        for field in [
            "refit_max_iter",
            "lr_batch_budget",
            "first_kmeans_pcs",
            "input_offset",
        ] {
            v.as_object_mut().unwrap().remove(field);
        }
        let p: CiclParams = serde_json::from_value(v).unwrap();
        assert_eq!(p.refit_max_iter, 300);
        assert_eq!(p.lr_batch_budget, 0);
        assert_eq!(p.first_kmeans_pcs, 0);
        assert_eq!(p.input_offset, 0.0);
        assert_eq!(p, CiclParams::paper());
        assert_ne!(p, CiclParams::default());
    }

    /// The default is the paper's recipe with exactly three changes (docs/cicl.md), and the
    /// reference keeps the paper's dropout and first k-means.
    #[test]
    fn default_differs_from_the_paper_in_three_fields() {
        let (d, p) = (CiclParams::default(), CiclParams::paper());
        assert_eq!((d.dropout, p.dropout), (0.0, 0.2));
        assert_eq!((d.input_offset, p.input_offset), (0.5, 0.0));
        assert_eq!((d.first_kmeans_pcs, p.first_kmeans_pcs), (50, 0));
        let undone = CiclParams {
            dropout: 0.2,
            input_offset: 0.0,
            first_kmeans_pcs: 0,
            ..d
        };
        assert_eq!(undone, p);
        let r = CiclParams::reference();
        assert_eq!(
            (r.dropout, r.input_offset, r.first_kmeans_pcs),
            (0.2, 0.0, 0)
        );
    }

    /// The rates of docs/cicl.md's runs at budget 8 and batch size 256 (ceil(cells / 256)
    /// batches): cbmc_citeseq_top2000's 8,617 cells take 34 batches, 1e-4 · 8 / 34.
    #[test]
    fn encoder_learning_rate_scales_only_above_the_budget() {
        assert_eq!(encoder_learning_rate(1e-4, 0, 34), 1e-4);
        assert_eq!(encoder_learning_rate(1e-4, 8, 8), 1e-4);
        assert_eq!(encoder_learning_rate(1e-4, 8, 1), 1e-4);
        assert!((encoder_learning_rate(1e-4, 8, 34) - 2.3529411764705883e-5).abs() < 1e-18);
        assert!((encoder_learning_rate(1e-4, 8, 17) - 4.705882352941177e-5).abs() < 1e-18);
    }
}

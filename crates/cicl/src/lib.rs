//! cellident-cicl owns CICL (Jiang et al. 2023, "cluster-aware iterative contrastive
//! learning"): unsupervised clustering of scRNA-seq cells with a transformer encoder trained by
//! InfoNCE between two noisy views of each cell plus a cluster-aware contrastive loss whose
//! pseudo-labels come from Student-t assignment to k-means centroids, re-fitted as training goes
//! (methods.md §3; the choices are in docs/cicl.md).
//!
//! Input is a preprocessed `[cells, genes]` matrix (library-size normalised, log1p, top 2000
//! HVGs, genes scaled — [`input_recipe`], run by cellident-preprocess); k-means comes
//! from cellident-preprocess. This crate does no file I/O and depends on no other model.

pub mod augment;
pub mod clustering;
pub mod encoder;
mod input;
pub mod loss;
mod model;
mod params;

pub use clustering::{pseudo_labels, soft_assignment};
pub use input::{
    CiclInput, N_TOP_GENES, SCALE_CLIP, SCALE_GENES_DEFAULT, input_recipe, prepare_input,
};
pub use loss::{cicl_loss, cluster_aware_loss, info_nce};
pub use model::{Cicl, CiclFit, LossRecord, MAX_GENES, RefitRecord};
pub use params::{AugmentParams, CiclConfig, CiclParams, encoder_learning_rate};

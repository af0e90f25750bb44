//! cellident-explain owns gene attributions: which input genes drive a model's prediction.
//!
//! - [`deeplift`]: DeepLIFT with the Rescale rule (Shrikumar et al. 2017) for any model that
//!   describes itself layer by layer ([`cellident_tensor::FeedForward`]: gene selection, affine
//!   maps, dense layers, element-wise non-linearities, ensembles of such networks). It explains a
//!   chosen pre-softmax logit against a [`Reference`] and satisfies summation-to-delta.
//! - [`integrated_gradients`] and [`gradient_x_input`]: through candle's autograd, for any
//!   [`cellident_tensor::DifferentiableClassifier`] (N-ACT's attention model included).
//! - [`rank_genes`]: per-class gene rankings by mean attribution, as a tidy table.
//!
//! Every method is batched: a chunk of cells is one pass, never one pass per cell.
//!
//! It depends on the tensor and io crates only; it must not depend on any model crate (models
//! reach it through the traits) and it does no file I/O (callers write the tables).

mod deeplift;
mod gradients;
mod ranking;

pub use deeplift::{Attributions, Reference, deeplift};
pub use gradients::{gradient_x_input, input_gradients, integrated_gradients};
pub use ranking::{GeneRank, Ranking, rank_genes, rankings_csv};

pub use cellident_tensor::{Result, TensorError};

/// Cells per pass: bounds memory (`CHUNK x genes` floats per activation) while keeping the
/// matrix products large enough to run at full speed.
pub(crate) const CHUNK: usize = 4096;

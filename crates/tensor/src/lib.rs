//! cellident-tensor is the shared layer every model stands on.
//!
//! It owns: device selection ([`DeviceChoice`], CPU by default, `cuda`/`metal` features with
//! the same API) and the thread count; the shared model traits ([`Classifier`],
//! [`Clusterer`], [`Embedder`], [`DifferentiableClassifier`], [`CheckParams`], and
//! [`FeedForward`] for models that layer-wise attribution can walk); training
//! utilities (seeded shuffling and sparse-to-dense mini-batches, the [`Adam`] / AdamW /
//! [`SgdMomentum`] optimizers, [`LrSchedule`]s, [`EarlyStopping`], [`Progress`] reporting,
//! divergence detection); layers whose backward pass works ([`nn`]); and checkpoints
//! (safetensors + JSON sidecar, gene alignment on load).
//!
//! It must not contain any model (models live in their own crates and depend on this one),
//! and it touches the filesystem only to read and write checkpoints.

pub mod batch;
pub mod checkpoint;
mod device;
mod error;
pub mod feedforward;
pub mod fit;
pub mod nn;
pub mod optim;
pub mod params;
#[cfg(feature = "progress-bar")]
pub mod progress_bar;
pub mod train;
mod traits;

pub use candle_core;
pub use candle_nn;

pub use checkpoint::{
    Checkpoint, CheckpointMeta, checkpoint_paths, load_checkpoint, read_checkpoint_meta,
    save_checkpoint, save_checkpoint_tensors,
};
pub use device::{DeviceChoice, set_threads, threads};
pub use error::{Result, TensorError, ensure_gene_count, ensure_labels, ensure_param};
pub use feedforward::{Activation, FeedForward, FeedForwardLayer, FeedForwardNet, mean_logits};
pub use fit::{
    BatchSource, FitParams, LogitNetwork, RowsSource, Validation, ensure_no_validation_split,
    fit_classifier, fit_classifier_on_rows, fit_classifier_source, predict_proba,
    stratified_holdout,
};
pub use optim::{Adam, AdamParams, SgdMomentum, SgdParams};
pub use train::{
    EarlyStopping, EpochRecord, LrSchedule, NoProgress, Progress, RecordProgress, StopDecision,
    TrainEvent, TrainReport, check_loss,
};
pub use traits::{
    CheckParams, Classifier, Clusterer, DenseMatrix, DifferentiableClassifier, Embedder,
    StreamingClassifier,
};

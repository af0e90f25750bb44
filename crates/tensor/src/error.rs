//! Typed errors of cellident-tensor.

use std::path::PathBuf;

/// Errors raised by the shared tensor layer.
#[derive(Debug, thiserror::Error)]
pub enum TensorError {
    /// An error inside candle (shape mismatch, device error, ...).
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// A parameter value is outside its valid range.
    #[error("invalid parameter `{name}`: {message}")]
    InvalidParam { name: &'static str, message: String },
    /// The loss became NaN or infinite.
    #[error(
        "training diverged at epoch {epoch}, batch {batch}: loss is {loss} (lower the learning rate or check the input scaling)"
    )]
    Diverged {
        epoch: usize,
        batch: usize,
        loss: f32,
    },
    /// A checkpoint could not be written or read.
    #[error("checkpoint {}: {message}", path.display())]
    Checkpoint { path: PathBuf, message: String },
    /// Genes of the query data do not match the model's well enough.
    #[error("{message}")]
    GeneMismatch { message: String },
    /// The requested device is not available in this build or on this machine.
    #[error("device {0}")]
    Device(String),
    /// An error from cellident-io.
    #[error(transparent)]
    Io(#[from] cellident_io::IoError),
    /// A [`crate::BatchSource`] outside this crate failed (reading or preprocessing a
    /// streamed file); the message names the file and the cells.
    #[error("{0}")]
    Source(String),
}

/// Result alias of cellident-tensor.
pub type Result<T, E = TensorError> = std::result::Result<T, E>;

/// Returns an [`TensorError::InvalidParam`] unless `ok`.
pub fn ensure_param(ok: bool, name: &'static str, message: impl FnOnce() -> String) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(TensorError::InvalidParam {
            name,
            message: message(),
        })
    }
}

/// Fails unless `y` holds one class index below `n_classes` for each of `n_cells` cells, and at
/// least one: the check every `Classifier::fit` starts with.
pub fn ensure_labels(n_cells: usize, y: &[u32], n_classes: usize) -> Result<()> {
    ensure_param(n_cells == y.len(), "labels", || {
        format!("{} labels for {n_cells} cells", y.len())
    })?;
    ensure_param(!y.is_empty(), "labels", || "no training cells".into())?;
    ensure_param(
        y.iter().all(|&c| (c as usize) < n_classes),
        "labels",
        || format!("a label is not below n_classes = {n_classes}"),
    )
}

/// Fails unless a model with `expected` input genes is given data with as many columns; the
/// message says how to fix it.
pub fn ensure_gene_count(model: &str, expected: usize, got: usize) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(TensorError::GeneMismatch {
            message: format!(
                "{model} has {expected} input genes but the data have {got}; align the data to the model's genes (Checkpoint::align) and repeat its preprocessing"
            ),
        })
    }
}

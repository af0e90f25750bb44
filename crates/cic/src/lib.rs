//! cellident-cic owns CIC, the cell identity code of Abdolhosseini et al. (Sci Rep 2019):
//! a deep autoencoder `G -> 2000 (LogSigmoid) -> 30 (linear code) -> 2000 (LogSigmoid) -> G`
//! over the most variable genes scaled to [0, 1], optionally with a classifier head on the
//! code trained jointly (the "classifier autoencoder"); encoding, decoding, per-sample
//! reconstruction scores (MSE, Spearman) beside a PCA baseline of the same size, and the
//! paper's code-unit interpretation (raise one unit by 2 SD, rank the genes that change).
//!
//! Inputs are preprocessed `[cells, genes]` matrices (log expression); the gene selection and
//! scaling are fitted on the training cells and kept for new data. This crate does no file
//! I/O except checkpoints through `cellident_tensor::checkpoint`, and depends on no other model
//! crate. Every choice the paper leaves open is written down in `docs/cic.md`.

mod input;
mod interpret;
mod model;
mod network;
mod params;
pub mod reconstruction;

pub use input::InputScaler;
pub use interpret::UnitGeneEffect;
pub use model::Cic;
pub use params::{CicConfig, CicInit, CicOptimizer, CicParams};
pub use reconstruction::{PcaCodec, ReconstructionScores, reconstruction_scores};

/// Model kind in checkpoints.
pub const MODEL_KIND: &str = "cic";

//! cellident-metadata owns the deep classifier of the explainable metadata-prediction study
//! (Fiosina, Fiosins & Bonn 2019; methods.md §4): a multilayer perceptron that predicts a
//! sample's tissue, sex, age group or disease from its expression profile.
//!
//! The network is the study's default (input -> 512 -> 256 -> 128 -> classes, ReLU, dropout
//! 0.5, Adam 1e-3, early stopping on an inner validation split). On a hundred bulk samples that
//! plain network loses to a random forest (anchors.md §C), so [`MlpParams::default`] trains it
//! better without changing it: the genes with the largest ANOVA F-statistic on the training
//! samples, per-gene standardisation, and an ensemble whose members hold out different inner
//! validation splits (their logits are averaged). [`MlpParams::plain`] is the unimproved
//! reference. docs/explain.md records what each choice bought.
//!
//! The trained model describes itself layer by layer ([`cellident_tensor::FeedForward`]), so
//! cellident-explain's DeepLIFT attributes its logits to the input genes (gene selection and
//! standardisation included). It depends on tensor, io and preprocess; never on another model
//! crate; its only file I/O is the checkpoint, written and read through cellident-tensor.

mod mlp;

pub use mlp::{MetadataMlp, MlpParams};

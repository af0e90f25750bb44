//! Layers re-exported from cellident-tensor (seeded initialisation, LayerNorm).

pub use cellident_tensor::params::{LayerNorm, SeededParams, apply, torch_linear, xavier_linear};

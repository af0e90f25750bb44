//! Checkpoints: safetensors weights plus a JSON sidecar describing how to use them.
//!
//! `model.safetensors` holds the tensors; `model.json` holds the model kind, its config, the
//! gene list (input order), the label names (output order), the preprocessing parameters and
//! the cellident version. Both files are written atomically (weights first).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use cellident_io::{ExpressionDataset, GeneAlignment, write_atomic};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Result, TensorError};

/// Value of [`CheckpointMeta::format`].
pub const CHECKPOINT_FORMAT: &str = "cellident-checkpoint";
/// Version of the sidecar layout.
pub const CHECKPOINT_VERSION: u32 = 1;

/// The JSON sidecar of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub format: String,
    pub format_version: u32,
    /// Which model the weights belong to (`nact`, `actinn`, `cic`, `mlp`, ...).
    pub model_kind: String,
    /// cellident version that wrote the checkpoint.
    pub crate_version: String,
    /// The model's validated configuration.
    pub config: Value,
    /// Input genes, in the order of the model's input columns.
    pub genes: Vec<String>,
    /// Output class names, in the order of the model's outputs (empty for unsupervised models).
    pub labels: Vec<String>,
    /// The recorded preprocessing pipeline, replayed on query data.
    pub preprocessing: Value,
    /// Anything else a model needs (e.g. scaling statistics).
    #[serde(default)]
    pub extra: Value,
}

impl CheckpointMeta {
    /// A sidecar for `model_kind` with its config, genes and labels.
    pub fn new(
        model_kind: &str,
        config: &impl Serialize,
        genes: Vec<String>,
        labels: Vec<String>,
    ) -> Result<Self> {
        let config = serde_json::to_value(config).map_err(|e| TensorError::InvalidParam {
            name: "config",
            message: format!("cannot be serialised: {e}"),
        })?;
        Ok(CheckpointMeta {
            format: CHECKPOINT_FORMAT.into(),
            format_version: CHECKPOINT_VERSION,
            model_kind: model_kind.into(),
            crate_version: env!("CARGO_PKG_VERSION").into(),
            config,
            genes,
            labels,
            preprocessing: Value::Null,
            extra: Value::Null,
        })
    }
}

/// The weight and sidecar paths of a checkpoint named `path` (`x.safetensors` / `x.json`;
/// any extension of `path` is replaced).
pub fn checkpoint_paths(path: &Path) -> (PathBuf, PathBuf) {
    (
        path.with_extension("safetensors"),
        path.with_extension("json"),
    )
}

/// Saves every variable of `vars` and the sidecar.
pub fn save_checkpoint(path: &Path, vars: &VarMap, meta: &CheckpointMeta) -> Result<()> {
    let tensors: HashMap<String, Tensor> = crate::params::named_vars(vars)?
        .into_iter()
        .map(|(k, v)| (k, v.as_tensor().clone()))
        .collect();
    save_checkpoint_tensors(path, &tensors, meta)
}

/// Saves named tensors and the sidecar (for models whose weights do not live in one
/// `VarMap`, such as an ensemble). Both files are written to a temporary file and renamed.
pub fn save_checkpoint_tensors(
    path: &Path,
    tensors: &HashMap<String, Tensor>,
    meta: &CheckpointMeta,
) -> Result<()> {
    let (weights, sidecar) = checkpoint_paths(path);
    let bytes = safetensors_bytes(tensors).map_err(|e| TensorError::Checkpoint {
        path: weights.clone(),
        message: e.to_string(),
    })?;
    write_atomic(&weights, |w| w.write_all(&bytes))?;
    let json = serde_json::to_vec_pretty(meta).map_err(|e| TensorError::Checkpoint {
        path: sidecar.clone(),
        message: e.to_string(),
    })?;
    write_atomic(&sidecar, |w| w.write_all(&json))?;
    Ok(())
}

fn safetensors_bytes(tensors: &HashMap<String, Tensor>) -> candle_core::Result<Vec<u8>> {
    let tmp = tempfile::NamedTempFile::new().map_err(candle_core::Error::wrap)?;
    candle_core::safetensors::save(tensors, tmp.path())?;
    std::fs::read(tmp.path()).map_err(candle_core::Error::wrap)
}

/// A loaded checkpoint.
#[derive(Debug)]
pub struct Checkpoint {
    pub meta: CheckpointMeta,
    pub tensors: HashMap<String, Tensor>,
    pub device: Device,
    /// The weights file the tensors came from (named in errors).
    pub path: PathBuf,
}

/// Reads and checks the JSON sidecar of the checkpoint `path` (format and version), without
/// touching the weights: enough to learn which model a checkpoint holds.
pub fn read_checkpoint_meta(path: &Path) -> Result<CheckpointMeta> {
    let sidecar = checkpoint_paths(path).1;
    let err = |m: String| TensorError::Checkpoint {
        path: sidecar.clone(),
        message: m,
    };
    let text =
        std::fs::read(&sidecar).map_err(|e| err(format!("cannot read the JSON sidecar: {e}")))?;
    let meta: CheckpointMeta =
        serde_json::from_slice(&text).map_err(|e| err(format!("not a checkpoint sidecar: {e}")))?;
    if meta.format != CHECKPOINT_FORMAT {
        return Err(err(format!(
            "format is '{}', expected '{CHECKPOINT_FORMAT}'",
            meta.format
        )));
    }
    if meta.format_version != CHECKPOINT_VERSION {
        return Err(err(format!(
            "version {} is not supported (expected {CHECKPOINT_VERSION})",
            meta.format_version
        )));
    }
    Ok(meta)
}

/// Loads a checkpoint saved by [`save_checkpoint`] onto `device`.
pub fn load_checkpoint(path: &Path, device: &Device) -> Result<Checkpoint> {
    let meta = read_checkpoint_meta(path)?;
    let weights = checkpoint_paths(path).0;
    let tensors =
        candle_core::safetensors::load(&weights, device).map_err(|e| TensorError::Checkpoint {
            path: weights.clone(),
            message: e.to_string(),
        })?;
    Ok(Checkpoint {
        meta,
        tensors,
        device: device.clone(),
        path: weights,
    })
}

impl Checkpoint {
    /// The model's configuration, after checking that the checkpoint holds a `model_kind`
    /// model (`name` is how errors call it, e.g. "N-ACT").
    pub fn config<C: serde::de::DeserializeOwned>(
        &self,
        model_kind: &str,
        name: &str,
    ) -> Result<C> {
        let bad = |message: String| TensorError::Checkpoint {
            path: self.path.clone(),
            message,
        };
        if self.meta.model_kind != model_kind {
            return Err(bad(format!(
                "holds a '{}' model, not {model_kind}",
                self.meta.model_kind
            )));
        }
        serde_json::from_value(self.meta.config.clone())
            .map_err(|e| bad(format!("bad {name} config: {e}")))
    }

    /// Sets every variable of `vars` (a model just built with the checkpoint's shapes) to the
    /// loaded tensor of the same name, as `VarMap::load` does, without reading the file again.
    pub fn restore(&self, vars: &VarMap) -> Result<()> {
        for (name, var) in crate::params::named_vars(vars)? {
            var.set(self.tensor(&name)?)?;
        }
        Ok(())
    }

    /// The loaded tensor `name`, or an error naming the weights file.
    pub fn tensor(&self, name: &str) -> Result<&Tensor> {
        self.tensors
            .get(name)
            .ok_or_else(|| TensorError::Checkpoint {
                path: self.path.clone(),
                message: format!("no tensor '{name}' (not this model's checkpoint?)"),
            })
    }

    /// A `VarBuilder` over the loaded tensors, for rebuilding the model's layers.
    pub fn var_builder(&self) -> VarBuilder<'static> {
        VarBuilder::from_tensors(self.tensors.clone(), DType::F32, &self.device)
    }

    /// Reorders `data`'s genes to the model's input order by name (missing genes become 0)
    /// and reports the alignment; refuses below `min_overlap`.
    pub fn align(
        &self,
        data: &ExpressionDataset,
        min_overlap: f64,
    ) -> Result<(ExpressionDataset, GeneAlignment)> {
        data.align_to_genes(&self.meta.genes, min_overlap)
            .map_err(|e| TensorError::GeneMismatch {
                message: format!("model '{}' vs query data: {e}", self.meta.model_kind),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::{Init, VarMap};
    use cellident_io::{CsrMatrix, Table};

    #[test]
    fn round_trip_keeps_weights_and_meta() {
        let dir = tempfile::tempdir().unwrap();
        let vm = VarMap::new();
        let w = vm
            .get(
                (2, 3),
                "layer.weight",
                Init::Randn {
                    mean: 0.0,
                    stdev: 1.0,
                },
                DType::F32,
                &Device::Cpu,
            )
            .unwrap();
        let genes = vec!["A".to_string(), "B".into(), "C".into()];
        let meta = CheckpointMeta::new(
            "test",
            &serde_json::json!({"hidden": 3}),
            genes.clone(),
            vec!["x".into(), "y".into()],
        )
        .unwrap();
        let path = dir.path().join("model.safetensors");
        save_checkpoint(&path, &vm, &meta).unwrap();
        let ck = load_checkpoint(&path, &Device::Cpu).unwrap();
        assert_eq!(ck.meta, meta);
        assert_eq!(
            ck.tensors["layer.weight"].to_vec2::<f32>().unwrap(),
            w.to_vec2::<f32>().unwrap()
        );
        assert_eq!(read_checkpoint_meta(&path).unwrap(), meta);
        // The config of the right kind parses; another kind is refused by name.
        let config: serde_json::Value = ck.config("test", "Test").unwrap();
        assert_eq!(config["hidden"], 3);
        let err = ck
            .config::<serde_json::Value>("nact", "N-ACT")
            .unwrap_err()
            .to_string();
        assert!(err.contains("holds a 'test' model, not nact"), "{err}");
        // Restoring into a freshly built map of the same shapes gives the saved weights; a map
        // with a variable the file lacks is refused by name.
        let fresh = VarMap::new();
        let v = fresh
            .get(
                (2, 3),
                "layer.weight",
                Init::Const(0.0),
                DType::F32,
                &Device::Cpu,
            )
            .unwrap();
        ck.restore(&fresh).unwrap();
        assert_eq!(v.to_vec2::<f32>().unwrap(), w.to_vec2::<f32>().unwrap());
        let other = VarMap::new();
        other
            .get(2, "other.bias", Init::Const(0.0), DType::F32, &Device::Cpu)
            .unwrap();
        let err = ck.restore(&other).unwrap_err().to_string();
        assert!(err.contains("other.bias"), "{err}");

        // Query data with genes in another order and one missing: aligned by name.
        let m = CsrMatrix::from_dense(1, 3, &[1.0, 2.0, 3.0]).unwrap();
        let q = ExpressionDataset::new(
            m,
            vec!["c1".into()],
            vec!["C".into(), "Z".into(), "A".into()],
            Table::empty(1),
            Table::empty(3),
        )
        .unwrap();
        let (aligned, report) = ck.align(&q, 0.5).unwrap();
        assert_eq!(aligned.matrix().to_dense(), vec![3.0, 0.0, 1.0]);
        assert_eq!(report.missing, vec!["B".to_string()]);
        let err = ck.align(&q, 0.9).unwrap_err().to_string();
        assert!(
            err.contains("only 2 of 3 reference genes") && err.contains("B"),
            "{err}"
        );
    }

    #[test]
    fn missing_sidecar_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_checkpoint(&dir.path().join("nope.safetensors"), &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope.json"), "{err}");
    }
}

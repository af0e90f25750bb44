//! Device selection and CPU thread count.

use std::str::FromStr;

use candle_core::Device;

use crate::error::{Result, TensorError};

/// Where tensors live. `Cpu` always works; `Cuda`/`Metal` need the crate features of the
/// same name and the hardware. The API is the same for all three.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    #[default]
    Cpu,
    /// A CUDA GPU by ordinal (feature `cuda`).
    Cuda(usize),
    /// A Metal GPU by ordinal (feature `metal`).
    Metal(usize),
}

impl FromStr for DeviceChoice {
    type Err = TensorError;

    /// Parses `cpu`, `cuda`, `cuda:1`, `metal`, `metal:0`.
    fn from_str(s: &str) -> Result<Self> {
        let (kind, ordinal) = match s.split_once(':') {
            Some((k, o)) => (
                k,
                o.parse::<usize>().map_err(|_| {
                    TensorError::Device(format!("'{s}': ordinal '{o}' is not a number"))
                })?,
            ),
            None => (s, 0),
        };
        match kind.to_ascii_lowercase().as_str() {
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda(ordinal)),
            "metal" | "mps" => Ok(DeviceChoice::Metal(ordinal)),
            _ => Err(TensorError::Device(format!(
                "'{s}' is unknown; use cpu, cuda[:N] or metal[:N]"
            ))),
        }
    }
}

impl DeviceChoice {
    /// Opens the device. Asking for a GPU in a build without its feature is an error that
    /// says which feature to enable.
    pub fn device(self) -> Result<Device> {
        match self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Cuda(i) => {
                if !cfg!(feature = "cuda") {
                    return Err(TensorError::Device(
                        "cuda: this build has no CUDA support; rebuild with `--features cuda`"
                            .into(),
                    ));
                }
                Device::new_cuda(i).map_err(|e| TensorError::Device(format!("cuda:{i}: {e}")))
            }
            DeviceChoice::Metal(i) => {
                if !cfg!(feature = "metal") {
                    return Err(TensorError::Device(
                        "metal: this build has no Metal support; rebuild with `--features metal`"
                            .into(),
                    ));
                }
                Device::new_metal(i).map_err(|e| TensorError::Device(format!("metal:{i}: {e}")))
            }
        }
    }
}

/// Sets the number of CPU worker threads used by candle's kernels and by cellident's own
/// parallel loops (`0` keeps the default: all cores).
///
/// Call it first thing in `main`, before any other thread exists: candle reads the thread
/// count from the `RAYON_NUM_THREADS` environment variable, which this function sets.
#[allow(unsafe_code)]
pub fn set_threads(n: usize) {
    if n == 0 {
        return;
    }
    // SAFETY: `set_var` is unsound only when another thread reads or writes the environment
    // at the same time; this function is documented to run before any thread is spawned.
    unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
    // An already-built global pool (e.g. in tests) keeps its size; that is not an error.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global();
}

/// The number of CPU threads numeric work will use.
pub fn threads() -> usize {
    candle_core::utils::get_num_threads()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!("cpu".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert_eq!(
            "cuda:1".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Cuda(1)
        );
        assert_eq!(
            "metal".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Metal(0)
        );
        assert!("tpu".parse::<DeviceChoice>().is_err());
        assert!(DeviceChoice::Cpu.device().unwrap().is_cpu());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn gpu_without_feature_names_the_feature() {
        let err = DeviceChoice::Cuda(0).device().unwrap_err().to_string();
        assert!(err.contains("--features cuda"), "{err}");
    }
}

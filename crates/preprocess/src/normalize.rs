//! Library-size normalisation and log transformation.

use cellident_io::{CsrMatrix, ExpressionDataset};

use crate::{PreprocessError, Result, ensure};

/// Scales each cell so that its values sum to `target_sum` (scanpy `normalize_total`;
/// 1e4 is the usual choice). Cells whose total is zero are left at zero. Computed in f64,
/// stored as f32.
pub fn normalize_total(d: &mut ExpressionDataset, target_sum: f64) -> Result<()> {
    ensure(
        target_sum > 0.0 && target_sum.is_finite(),
        "target_sum",
        || format!("must be > 0, got {target_sum}"),
    )?;
    if let Some(v) = d.matrix().data().iter().find(|v| **v < 0.0) {
        return Err(PreprocessError::Data(format!(
            "normalize_total needs non-negative values (counts), found {v}; the data look scaled already"
        )));
    }
    let indptr = d.matrix().indptr().to_vec();
    let values = d.values_mut();
    for w in indptr.windows(2) {
        let row = &mut values[w[0]..w[1]];
        let total: f64 = row.iter().map(|&v| v as f64).sum();
        if total > 0.0 {
            let factor = target_sum / total;
            for v in row {
                *v = (*v as f64 * factor) as f32;
            }
        }
    }
    Ok(())
}

/// Whether every stored value is a non-negative whole number (raw counts).
pub fn looks_like_counts(m: &CsrMatrix) -> bool {
    m.data().iter().all(|v| v.fract() == 0.0 && *v >= 0.0)
}

/// Whether the stored values look log-transformed already: non-negative, not all integers,
/// and no value above 30 (e^30 is beyond any count). Counts (integers) and TPM/FPKM (large
/// non-integers) do not.
pub fn looks_log_transformed(m: &CsrMatrix) -> bool {
    let data = m.data();
    !data.is_empty()
        && data.iter().all(|&v| v >= 0.0)
        && data.iter().any(|v| v.fract() != 0.0)
        && data.iter().all(|&v| v <= 30.0)
}

/// Natural log of one plus each value (scanpy `log1p`), sparse (zeros stay zero).
///
/// Refuses data that already look log-transformed ([`looks_log_transformed`]) unless `force`:
/// logging twice silently compresses the dynamic range and ruins downstream HVG and models.
pub fn log1p(d: &mut ExpressionDataset, force: bool) -> Result<()> {
    if !force && looks_log_transformed(d.matrix()) {
        let max = d.matrix().data().iter().copied().fold(0f32, f32::max);
        return Err(PreprocessError::Data(format!(
            "the values look log-transformed already (non-integers, maximum {max}); refusing to log them twice (skip --log1p, or force it if you are sure)"
        )));
    }
    if let Some(v) = d.matrix().data().iter().find(|v| **v <= -1.0) {
        return Err(PreprocessError::Data(format!(
            "log1p needs values > -1, found {v}"
        )));
    }
    use rayon::prelude::*;
    d.values_mut().par_chunks_mut(1 << 16).for_each(|chunk| {
        for v in chunk {
            *v = v.ln_1p();
        }
    });
    Ok(())
}

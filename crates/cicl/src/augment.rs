//! The two augmented views of each cell (methods.md §3.1): in each view a random
//! `⌊gene_fraction · G⌋` genes, drawn without replacement per cell, get N(0, noise_sd²) noise.

use cellident_tensor::batch::rng_for;
use cellident_tensor::{DenseMatrix, Result};
use rand_distr::{Distribution, Normal};

use crate::params::AugmentParams;

/// One augmented copy of `x` `[cells, G]`, reproducible from `(seed, stream)`.
pub fn augmented_view(
    x: &DenseMatrix,
    p: &AugmentParams,
    seed: u64,
    stream: u64,
) -> Result<DenseMatrix> {
    let g = x.n_cols;
    let n_noisy = (p.gene_fraction * g as f64).floor() as usize;
    let mut rng = rng_for(seed, 0xA0_0000 + stream);
    let normal = Normal::new(0.0f32, p.noise_sd as f32).map_err(|e| {
        cellident_tensor::TensorError::InvalidParam {
            name: "augment.noise_sd",
            message: e.to_string(),
        }
    })?;
    let mut values = x.values.clone();
    for row in values.chunks_exact_mut(g) {
        for j in rand::seq::index::sample(&mut rng, g, n_noisy) {
            row[j] += normal.sample(&mut rng);
        }
    }
    DenseMatrix::new(x.n_rows, g, values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_touches_the_requested_fraction_of_genes() {
        let x = DenseMatrix::new(4, 10, vec![1.0; 40]).unwrap();
        let p = AugmentParams::default();
        let v = augmented_view(&x, &p, 7, 1).unwrap();
        for i in 0..4 {
            let changed = v.row(i).iter().filter(|&&a| a != 1.0).count();
            assert_eq!(changed, 8);
        }
        assert_eq!(v, augmented_view(&x, &p, 7, 1).unwrap());
        assert_ne!(v, augmented_view(&x, &p, 7, 2).unwrap());
    }
}

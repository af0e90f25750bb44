//! Seeded shuffling and mini-batching from a sparse matrix to dense candle tensors.

use candle_core::{Device, Tensor};
use cellident_io::CsrMatrix;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha12Rng;

use crate::error::Result;
use crate::traits::DenseMatrix;

/// A random generator for `(seed, stream)`: independent, reproducible streams (e.g. one per
/// epoch) from one user seed.
pub fn rng_for(seed: u64, stream: u64) -> StdRng {
    StdRng::seed_from_u64(mixed_seed(seed, stream))
}

/// The generator of [`rng_for`] as the ChaCha12 type that rand's `StdRng` wraps: the same
/// stream of values (tested), with `get_word_pos`/`set_word_pos` to jump within it.
pub fn chacha_for(seed: u64, stream: u64) -> ChaCha12Rng {
    ChaCha12Rng::seed_from_u64(mixed_seed(seed, stream))
}

/// SplitMix64-style mixing so that nearby (seed, stream) pairs give unrelated states.
fn mixed_seed(seed: u64, stream: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The order in which epoch `epoch` visits `n` samples: a permutation that depends only on
/// `(seed, epoch)`.
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng_for(seed, epoch as u64 + 1));
    order
}

/// Splits an order into consecutive batches of `batch_size` (the last may be smaller, and is
/// kept unless `drop_last`).
pub fn batches(
    order: &[usize],
    batch_size: usize,
    drop_last: bool,
) -> impl Iterator<Item = &[usize]> {
    let size = batch_size.max(1);
    order
        .chunks(size)
        .filter(move |c| !drop_last || c.len() == size)
}

/// The rows `rows` of `x` as a dense `[rows.len(), n_genes]` f32 tensor on `device`.
pub fn dense_rows(x: &CsrMatrix, rows: &[usize], device: &Device) -> Result<Tensor> {
    let mut buf = vec![0f32; rows.len() * x.n_cols()];
    x.densify_rows_into(rows, &mut buf);
    Ok(Tensor::from_vec(buf, (rows.len(), x.n_cols()), device)?)
}

/// The rows `rows` of a dense matrix as a `[rows.len(), n_cols]` f32 tensor on `device`.
pub fn matrix_rows(m: &DenseMatrix, rows: &[usize], device: &Device) -> Result<Tensor> {
    Ok(Tensor::from_vec(
        m.select_rows(rows).values,
        (rows.len(), m.n_cols),
        device,
    )?)
}

/// Labels of `rows` as a `[rows.len()]` u32 tensor.
pub fn label_rows(y: &[u32], rows: &[usize], device: &Device) -> Result<Tensor> {
    let v: Vec<u32> = rows.iter().map(|&r| y[r]).collect();
    Ok(Tensor::from_vec(v, rows.len(), device)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_orders_are_reproducible_permutations() {
        let a = epoch_order(100, 7, 3);
        assert_eq!(a, epoch_order(100, 7, 3));
        assert_ne!(a, epoch_order(100, 7, 4));
        assert_ne!(a, epoch_order(100, 8, 3));
        let mut s = a.clone();
        s.sort_unstable();
        assert_eq!(s, (0..100).collect::<Vec<_>>());
    }

    /// `chacha_for` is `rng_for`'s stream (rand 0.9's `StdRng` is ChaCha12 seeded the same way),
    /// so parameters drawn from it keep the values they had when drawn from `StdRng`.
    #[test]
    fn chacha_for_is_the_stream_of_rng_for() {
        use rand::RngCore;
        for (seed, stream) in [(0, 0), (12345, 0x1417), (u64::MAX, 7)] {
            let mut a = rng_for(seed, stream);
            let mut b = chacha_for(seed, stream);
            for _ in 0..1000 {
                assert_eq!(a.next_u64(), b.next_u64());
            }
            assert_eq!(a.next_u32(), b.next_u32());
        }
    }

    #[test]
    fn batches_cover_the_order() {
        let order: Vec<usize> = (0..10).collect();
        let b: Vec<&[usize]> = batches(&order, 4, false).collect();
        assert_eq!(b.len(), 3);
        assert_eq!(b[2], &[8, 9]);
        assert_eq!(batches(&order, 4, true).count(), 2);
    }

    #[test]
    fn dense_rows_fill_zeros() {
        let x = CsrMatrix::from_dense(2, 3, &[0.0, 1.0, 0.0, 2.0, 0.0, 3.0]).unwrap();
        let t = dense_rows(&x, &[1, 0], &Device::Cpu).unwrap();
        assert_eq!(
            t.to_vec2::<f32>().unwrap(),
            vec![vec![2.0, 0.0, 3.0], vec![0.0, 1.0, 0.0]]
        );
    }
}

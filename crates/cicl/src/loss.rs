//! CICL's training objective "para" (methods.md §3.3): InfoNCE between the two views plus λ
//! times the cluster-aware contrastive loss, both at temperature τ on L2-normalised projections.

use candle_core::{D, Tensor};
use cellident_tensor::{Result, TensorError};

/// InfoNCE with cross-view negatives only: the mean over cells `i` of
/// `-log( exp(z1_i·z2_i/τ) / Σ_j exp(z1_i·z2_j/τ) )`, i.e. the cross-entropy of the rows of
/// `z1 z2ᵀ / τ` against the diagonal. `z1`, `z2`: `[batch, dim]`, rows of unit length.
pub fn info_nce(z1: &Tensor, z2: &Tensor, temperature: f64) -> Result<Tensor> {
    let n = z1.dim(0)?;
    let logits = (z1.matmul(&z2.t()?)? / temperature)?;
    let targets = Tensor::arange(0u32, n as u32, z1.device())?;
    Ok(candle_nn::loss::cross_entropy(&logits, &targets)?)
}

/// The cluster-aware contrastive loss (the reference's `CirculatePairConLoss`): for each
/// pseudo-cluster `k` in the batch, every one of its `2 n_k` view projections `f` is an anchor
/// whose positive is its own cell's pair similarity `exp(z1_i·z2_i/τ)` and whose negatives are
/// the views of the cells of *other* clusters; cells of the same cluster are neither. The loss
/// is `Σ_k mean_{f ∈ P_k} -log( pos(f) / (pos(f) + Σ_{n ∈ N_k} exp(f·n/τ)) )` — a sum over
/// clusters, not a mean. `labels`: the pseudo-label of each of the `batch` cells.
pub fn cluster_aware_loss(
    z1: &Tensor,
    z2: &Tensor,
    labels: &[u32],
    temperature: f64,
) -> Result<Tensor> {
    let n = z1.dim(0)?;
    if labels.len() != n {
        return Err(TensorError::InvalidParam {
            name: "labels",
            message: format!("{} pseudo-labels for a batch of {n}", labels.len()),
        });
    }
    let device = z1.device();
    // Anchors and candidates: the 2n views [z1; z2]; view f belongs to cell f mod n.
    let z = Tensor::cat(&[z1, z2], 0)?;
    let similarity = (z.matmul(&z.t()?)? / temperature)?;
    let pair = ((z1 * z2)?.sum(D::Minus1)? / temperature)?;
    let pos = Tensor::cat(&[&pair, &pair], 0)?;
    let label_of = |f: usize| labels[f % n];
    let mut count = std::collections::HashMap::<u32, usize>::new();
    for &l in labels {
        *count.entry(l).or_default() += 1;
    }
    let mut mask = vec![0f32; 4 * n * n];
    let mut weight = vec![0f32; 2 * n];
    for f in 0..2 * n {
        for m in 0..2 * n {
            if label_of(f) != label_of(m) {
                mask[f * 2 * n + m] = 1.0;
            }
        }
        // Mean over the 2 n_k anchors of the cluster, summed over clusters.
        weight[f] = 1.0 / (2 * count[&label_of(f)]) as f32;
    }
    let mask = Tensor::from_vec(mask, (2 * n, 2 * n), device)?;
    let weight = Tensor::from_vec(weight, 2 * n, device)?;
    // |logits| <= 1/τ for unit vectors, so plain exp cannot overflow for any sane τ.
    let negatives = (similarity.exp()? * mask)?.sum(D::Minus1)?;
    let per_anchor = ((pos.exp()? + negatives)?.log()? - pos)?;
    Ok((per_anchor * weight)?.sum_all()?)
}

/// `L = L_ins + λ L_clu`, returning `(total, instance part, cluster part)`.
pub fn cicl_loss(
    z1: &Tensor,
    z2: &Tensor,
    labels: &[u32],
    temperature: f64,
    cluster_weight: f64,
) -> Result<(Tensor, f32, f32)> {
    let ins = info_nce(z1, z2, temperature)?;
    let clu = cluster_aware_loss(z1, z2, labels, temperature)?;
    let total = (&ins + (&clu * cluster_weight)?)?;
    Ok((total, ins.to_scalar::<f32>()?, clu.to_scalar::<f32>()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn unit_rows(v: &[[f32; 2]]) -> Tensor {
        let flat: Vec<f32> = v
            .iter()
            .flat_map(|r| {
                let n = (r[0] * r[0] + r[1] * r[1]).sqrt();
                [r[0] / n, r[1] / n]
            })
            .collect();
        Tensor::from_vec(flat, (v.len(), 2), &Device::Cpu).unwrap()
    }

    // Expected values computed independently with numpy 2.4.6 from the definitions in
    // methods.md §3.3 (python, float64):
    //   z1 = normalize([[1,0],[0.6,0.8],[-1,0.2]]); z2 = normalize([[0.8,0.6],[0,1],[-0.9,-0.3]])
    //   S = z1 @ z2.T / 0.5
    //   ins = mean(-diag(S) + log(exp(S).sum(1)))
    //   Z = vstack([z1, z2]); A = Z @ Z.T / 0.5; pos = tile(sum(z1*z2, 1) / 0.5, 2)
    //   lab = tile([0, 0, 1], 2)
    //   per = log(exp(pos) + (exp(A) * (lab[:,None] != lab[None,:])).sum(1)) - pos
    //   clu = sum(per[lab == k].mean() for k in (0, 1))
    #[test]
    fn losses_equal_a_hand_computed_value_on_a_tiny_batch() {
        let z1 = unit_rows(&[[1.0, 0.0], [0.6, 0.8], [-1.0, 0.2]]);
        let z2 = unit_rows(&[[0.8, 0.6], [0.0, 1.0], [-0.9, -0.3]]);
        let ins = info_nce(&z1, &z2, 0.5).unwrap().to_scalar::<f32>().unwrap();
        let clu = cluster_aware_loss(&z1, &z2, &[0, 0, 1], 0.5)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((ins - EXPECTED_INS).abs() < 1e-5, "InfoNCE {ins}");
        assert!((clu - EXPECTED_CLU).abs() < 1e-5, "cluster-aware {clu}");
        // One cluster only: no negatives, every anchor's loss is log(pos/pos) = 0.
        let single = cluster_aware_loss(&z1, &z2, &[3, 3, 3], 0.5)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(single.abs() < 1e-6);
        assert!(cluster_aware_loss(&z1, &z2, &[0, 1], 0.5).is_err());
    }

    const EXPECTED_INS: f32 = 0.452_931_1;
    const EXPECTED_CLU: f32 = 0.402_176_5;
}

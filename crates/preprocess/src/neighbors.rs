//! The cell-cell graph of scanpy's `pp.neighbors` (defaults: 15 neighbours counting the cell
//! itself, Euclidean distance on the PCA coordinates, UMAP fuzzy connectivities), the input of
//! [`crate::leiden`].
//!
//! Neighbours are exact (brute force, rows in parallel): scanpy switches to approximate
//! neighbours (pynndescent) above 4,096 cells, so on large sets the two graphs can differ in a
//! few edges. The connectivities follow UMAP's `fuzzy_simplicial_set` with its defaults
//! (local connectivity 1, 64 bisection steps, union `a + b - a*b` of the two directions).

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{PreprocessError, Result, ensure};
use cellident_tensor::DenseMatrix;

/// Parameters of [`neighbors`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NeighborsParams {
    /// Neighbours per cell counting the cell itself (scanpy's `n_neighbors`, default 15).
    pub n_neighbors: usize,
}

impl Default for NeighborsParams {
    fn default() -> Self {
        NeighborsParams { n_neighbors: 15 }
    }
}

/// The exact k nearest neighbours of each row, the row itself excluded.
#[derive(Debug, Clone, PartialEq)]
pub struct Knn {
    /// Neighbours per row (`n_neighbors - 1`).
    pub k: usize,
    /// `[n, k]` row-major neighbour indices, nearest first (ties: lower index first).
    pub indices: Vec<u32>,
    /// `[n, k]` Euclidean distances matching `indices`.
    pub distances: Vec<f32>,
}

/// An undirected weighted graph without self-loops in compressed rows: the neighbours of node
/// `i` are `targets[offsets[i]..offsets[i + 1]]` (ascending) with `weights` alongside; every
/// edge is stored in both rows with the same weight.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightedGraph {
    pub offsets: Vec<usize>,
    pub targets: Vec<u32>,
    pub weights: Vec<f64>,
}

impl WeightedGraph {
    /// Builds the graph from undirected edges `(i, j, w)` with `i != j`, `w > 0`; a pair given
    /// twice gets the sum of its weights.
    pub fn from_edges(n: usize, edges: &[(u32, u32, f64)]) -> Result<Self> {
        let mut rows: Vec<Vec<(u32, f64)>> = vec![Vec::new(); n];
        for &(i, j, w) in edges {
            ensure(
                (i as usize) < n && (j as usize) < n && i != j,
                "edges",
                || format!("edge ({i}, {j}) in a graph of {n} nodes (self-loops not allowed)"),
            )?;
            ensure(w.is_finite() && w > 0.0, "edges", || {
                format!("edge ({i}, {j}) has weight {w}; weights must be positive")
            })?;
            rows[i as usize].push((j, w));
            rows[j as usize].push((i, w));
        }
        Ok(Self::from_rows(rows))
    }

    /// Builds the graph from adjacency rows `(neighbour, weight)`, summing repeated pairs; the
    /// caller keeps the rows symmetric.
    pub(crate) fn from_rows(mut rows: Vec<Vec<(u32, f64)>>) -> Self {
        let mut offsets = Vec::with_capacity(rows.len() + 1);
        offsets.push(0);
        let mut targets = Vec::new();
        let mut weights = Vec::new();
        for row in &mut rows {
            row.sort_by_key(|&(j, _)| j);
            let start = targets.len();
            for &(j, w) in row.iter() {
                if targets.len() > start && targets[targets.len() - 1] == j {
                    *weights.last_mut().expect("pushed with the target") += w;
                } else {
                    targets.push(j);
                    weights.push(w);
                }
            }
            offsets.push(targets.len());
        }
        WeightedGraph {
            offsets,
            targets,
            weights,
        }
    }

    pub fn n_nodes(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Undirected edges (each counted once).
    pub fn n_edges(&self) -> usize {
        self.targets.len() / 2
    }

    /// `(neighbour, weight)` pairs of node `i`.
    pub fn edges(&self, i: usize) -> impl Iterator<Item = (usize, f64)> + '_ {
        let r = self.offsets[i]..self.offsets[i + 1];
        self.targets[r.clone()]
            .iter()
            .zip(&self.weights[r])
            .map(|(&j, &w)| (j as usize, w))
    }

    /// Weighted degree of every node.
    pub fn degrees(&self) -> Vec<f64> {
        (0..self.n_nodes())
            .map(|i| self.edges(i).map(|(_, w)| w).sum())
            .collect()
    }
}

fn check_finite(x: &DenseMatrix) -> Result<()> {
    if let Some(pos) = x.values.iter().position(|v| !v.is_finite()) {
        return Err(PreprocessError::Data(format!(
            "value {} at row {}, column {} is not finite; neighbours need finite coordinates",
            x.values[pos],
            pos / x.n_cols.max(1),
            pos % x.n_cols.max(1)
        )));
    }
    Ok(())
}

/// Exact nearest neighbours of the rows of `x` (`[n, dim]`), `n_neighbors - 1` per row.
pub fn knn(x: &DenseMatrix, n_neighbors: usize) -> Result<Knn> {
    let n = x.n_rows;
    ensure(n_neighbors >= 2, "n_neighbors", || {
        format!("{n_neighbors}; at least 2 (the cell and one neighbour)")
    })?;
    ensure(n >= n_neighbors, "n_neighbors", || {
        format!("{n_neighbors} neighbours need at least as many cells; got {n}")
    })?;
    check_finite(x)?;
    let k = n_neighbors - 1;
    let rows: Vec<(Vec<u32>, Vec<f32>)> = (0..n)
        .into_par_iter()
        .map(|i| {
            let a = x.row(i);
            // Squared differences summed in f64: near-tied neighbours (distances equal to 1e-5
            // relative are common on scaled data) keep the order an exact computation gives.
            let mut d: Vec<(f64, u32)> = (0..n)
                .filter(|&j| j != i)
                .map(|j| {
                    let s: f64 = a
                        .iter()
                        .zip(x.row(j))
                        .map(|(p, q)| {
                            let e = (*p - *q) as f64;
                            e * e
                        })
                        .sum();
                    (s, j as u32)
                })
                .collect();
            let cmp = |p: &(f64, u32), q: &(f64, u32)| p.0.total_cmp(&q.0).then(p.1.cmp(&q.1));
            if d.len() > k {
                d.select_nth_unstable_by(k, cmp);
                d.truncate(k);
            }
            d.sort_unstable_by(cmp);
            (
                d.iter().map(|p| p.1).collect(),
                d.iter().map(|p| p.0.sqrt() as f32).collect(),
            )
        })
        .collect();
    let mut indices = Vec::with_capacity(n * k);
    let mut distances = Vec::with_capacity(n * k);
    for (ix, dx) in rows {
        indices.extend(ix);
        distances.extend(dx);
    }
    Ok(Knn {
        k,
        indices,
        distances,
    })
}

/// UMAP's smooth kNN distances of one row (`d` ascending, self excluded): `(rho, sigma)` with
/// `sum_j exp(-max(d_j - rho, 0) / sigma) = log2(k + 1)`.
fn smooth_knn_distance(d: &[f32], mean_all: f64) -> (f64, f64) {
    const TOLERANCE: f64 = 1e-5;
    const MIN_DIST_SCALE: f64 = 1e-3;
    let target = ((d.len() + 1) as f64).log2();
    // local_connectivity = 1: rho is the distance to the nearest neighbour at a non-zero
    // distance.
    let rho = d.iter().find(|&&v| v > 0.0).map_or(0.0, |&v| v as f64);
    let (mut lo, mut hi, mut mid) = (0.0f64, f64::INFINITY, 1.0f64);
    for _ in 0..64 {
        let psum: f64 = d
            .iter()
            .map(|&v| {
                let e = v as f64 - rho;
                if e > 0.0 { (-e / mid).exp() } else { 1.0 }
            })
            .sum();
        if (psum - target).abs() < TOLERANCE {
            break;
        }
        if psum > target {
            hi = mid;
            mid = (lo + hi) / 2.0;
        } else {
            lo = mid;
            mid = if hi.is_infinite() {
                mid * 2.0
            } else {
                (lo + hi) / 2.0
            };
        }
    }
    let mean_row = d.iter().map(|&v| v as f64).sum::<f64>() / d.len() as f64;
    let floor = if rho > 0.0 { mean_row } else { mean_all } * MIN_DIST_SCALE;
    (rho, mid.max(floor))
}

/// UMAP fuzzy connectivities of a kNN result: directed memberships
/// `exp(-max(d - rho_i, 0) / sigma_i)`, combined over the two directions as `a + b - a*b`.
pub fn connectivities(knn: &Knn) -> Result<WeightedGraph> {
    let k = knn.k;
    ensure(k >= 1, "knn", || "no neighbours".to_string())?;
    let n = knn.indices.len() / k;
    let mean_all =
        knn.distances.iter().map(|&v| v as f64).sum::<f64>() / knn.distances.len() as f64;
    // Directed memberships, row i -> its neighbours.
    let mut own: Vec<Vec<(u32, f64)>> = (0..n)
        .map(|i| {
            let d = &knn.distances[i * k..(i + 1) * k];
            let (rho, sigma) = smooth_knn_distance(d, mean_all);
            knn.indices[i * k..(i + 1) * k]
                .iter()
                .zip(d)
                .map(|(&j, &v)| {
                    let e = v as f64 - rho;
                    (j, if e > 0.0 { (-e / sigma).exp() } else { 1.0 })
                })
                .collect()
        })
        .collect();
    let mut incoming: Vec<Vec<(u32, f64)>> = vec![Vec::new(); n];
    for (i, row) in own.iter().enumerate() {
        for &(j, a) in row {
            incoming[j as usize].push((i as u32, a));
        }
    }
    let mut rows: Vec<Vec<(u32, f64)>> = Vec::with_capacity(n);
    for (out, inc) in own.iter_mut().zip(&mut incoming) {
        out.sort_by_key(|p| p.0);
        inc.sort_by_key(|p| p.0);
        let (mut p, mut q) = (0, 0);
        let mut row = Vec::with_capacity(out.len() + inc.len());
        while p < out.len() || q < inc.len() {
            let take_out = q >= inc.len() || (p < out.len() && out[p].0 <= inc[q].0);
            let take_in = p >= out.len() || (q < inc.len() && inc[q].0 <= out[p].0);
            let (j, a, b) = match (take_out, take_in) {
                (true, true) => {
                    let r = (out[p].0, out[p].1, inc[q].1);
                    p += 1;
                    q += 1;
                    r
                }
                (true, false) => {
                    p += 1;
                    (out[p - 1].0, out[p - 1].1, 0.0)
                }
                _ => {
                    q += 1;
                    (inc[q - 1].0, 0.0, inc[q - 1].1)
                }
            };
            let w = a + b - a * b;
            if w > 0.0 {
                row.push((j, w));
            }
        }
        rows.push(row);
    }
    Ok(WeightedGraph::from_rows(rows))
}

/// kNN graph with UMAP connectivities of the rows of `x` (`[cells, dim]`, e.g. PCA
/// coordinates): scanpy's `pp.neighbors(adata, n_neighbors)` with exact neighbours.
pub fn neighbors(x: &DenseMatrix, p: &NeighborsParams) -> Result<WeightedGraph> {
    connectivities(&knn(x, p.n_neighbors)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knn_finds_the_nearest_rows_in_order() {
        // Points on a line at 0, 1, 3, 7: neighbours by hand.
        let x = DenseMatrix::new(4, 1, vec![0.0, 1.0, 3.0, 7.0]).unwrap();
        let r = knn(&x, 3).unwrap();
        assert_eq!(r.indices, vec![1, 2, 0, 2, 1, 0, 2, 1]);
        assert_eq!(r.distances, vec![1.0, 3.0, 1.0, 2.0, 2.0, 3.0, 4.0, 6.0]);
    }

    #[test]
    fn sigma_solves_the_umap_equation() {
        let d = [0.5f32, 1.0, 1.5, 2.0];
        let (rho, sigma) = smooth_knn_distance(&d, 1.0);
        assert_eq!(rho, 0.5);
        let s: f64 = d
            .iter()
            .map(|&v| (-((v as f64 - rho).max(0.0)) / sigma).exp())
            .sum();
        assert!((s - 5f64.log2()).abs() < 1e-4, "{s}");
    }

    #[test]
    fn connectivities_are_symmetric_fuzzy_unions() {
        let x = DenseMatrix::new(5, 2, vec![0., 0., 1., 0., 0., 1., 5., 5., 6., 5.]).unwrap();
        let r = knn(&x, 3).unwrap();
        let g = connectivities(&r).unwrap();
        for i in 0..5 {
            for (j, w) in g.edges(i) {
                let back = g.edges(j).find(|e| e.0 == i).map(|e| e.1);
                assert_eq!(back, Some(w), "edge {i}-{j}");
                assert!(w > 0.0 && w <= 1.0);
            }
        }
        // The nearest neighbour of each cell gets membership 1 (d = rho).
        assert_eq!(g.edges(0).find(|e| e.0 == 1).map(|e| e.1), Some(1.0));
    }

    #[test]
    fn too_few_cells_and_nan_are_refused() {
        let x = DenseMatrix::new(3, 1, vec![0.0, 1.0, 2.0]).unwrap();
        assert!(knn(&x, 15).unwrap_err().to_string().contains("n_neighbors"));
        let x = DenseMatrix::new(3, 1, vec![0.0, f32::NAN, 2.0]).unwrap();
        assert!(knn(&x, 2).unwrap_err().to_string().contains("row 1"));
    }
}

//! Leiden community detection (Traag, Waltman & van Eck, Sci Rep 2019) with the
//! Reichardt-Bornholdt configuration-model quality — what scanpy's `tl.leiden` optimises by
//! default (`RBConfigurationVertexPartition`, resolution 1, edge weights, iterated until a
//! pass changes nothing).
//!
//! Each pass: fast local moving of nodes (a queue revisits only the neighbours of moved
//! nodes), refinement inside every community (singletons merge, randomly with probability
//! `∝ exp(gain / θ)`, only into well-connected sub-communities, so every community stays
//! connected), then aggregation of the refined communities with the unrefined partition as the
//! starting point of the next level. Seeded: the same seed gives the same partition.

use rand::Rng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::neighbors::WeightedGraph;
use crate::{Result, ensure};

/// Parameters of [`leiden`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LeidenParams {
    /// γ of the quality function; larger gives more, smaller communities (scanpy: 1).
    pub resolution: f64,
    /// θ of the refinement's random merges (leidenalg: 0.01).
    pub randomness: f64,
    /// Most passes; the algorithm stops earlier when a pass leaves the partition unchanged
    /// (scanpy's `n_iterations=-1`).
    pub max_iterations: usize,
    pub seed: u64,
}

impl Default for LeidenParams {
    fn default() -> Self {
        LeidenParams {
            resolution: 1.0,
            randomness: 0.01,
            max_iterations: 50,
            seed: 0,
        }
    }
}

/// A partition found by [`leiden`].
#[derive(Debug, Clone, PartialEq)]
pub struct LeidenResult {
    /// Community of each node, `0..n_communities`, numbered by decreasing size (ties: the
    /// community of the lower node first).
    pub labels: Vec<u32>,
    pub n_communities: usize,
    /// [`modularity`] of `labels` at the run's resolution.
    pub quality: f64,
    /// Passes run.
    pub iterations: usize,
}

/// Generalised modularity `Q = 1/(2m) Σ_ij (A_ij − γ k_i k_j / (2m)) δ(c_i, c_j)` of a
/// partition; at γ = 1 it is networkx's `modularity` and igraph's `Graph.modularity`.
pub fn modularity(g: &WeightedGraph, labels: &[u32], resolution: f64) -> f64 {
    let degree = g.degrees();
    let two_m: f64 = degree.iter().sum();
    if two_m == 0.0 {
        return 0.0;
    }
    let n_comm = labels.iter().map(|&c| c as usize + 1).max().unwrap_or(0);
    let mut internal = vec![0f64; n_comm];
    let mut total = vec![0f64; n_comm];
    for i in 0..g.n_nodes() {
        let c = labels[i] as usize;
        total[c] += degree[i];
        internal[c] += g
            .edges(i)
            .filter(|&(j, _)| labels[j] as usize == c)
            .map(|(_, w)| w)
            .sum::<f64>();
    }
    internal
        .iter()
        .zip(&total)
        .map(|(e, k)| e - resolution * k * k / two_m)
        .sum::<f64>()
        / two_m
}

/// One level of the algorithm: a graph without self-loops plus the weighted degree of each
/// node in the original graph (an aggregate node's degree is its members' sum, which keeps
/// the edges folded into it).
/// One level of the hierarchy: the caller's graph at the first level (borrowed, not copied),
/// aggregated graphs above it.
struct Level<'g> {
    graph: std::borrow::Cow<'g, WeightedGraph>,
    degree: Vec<f64>,
}

/// Scratch space for the weights from one node to the communities around it.
struct NeighbourWeights {
    weight: Vec<f64>,
    seen: Vec<bool>,
    touched: Vec<usize>,
}

impl NeighbourWeights {
    fn new(n: usize) -> Self {
        NeighbourWeights {
            weight: vec![0.0; n],
            seen: vec![false; n],
            touched: Vec::new(),
        }
    }

    fn add(&mut self, c: usize, w: f64) {
        if !self.seen[c] {
            self.seen[c] = true;
            self.touched.push(c);
        }
        self.weight[c] += w;
    }

    fn clear(&mut self) {
        for &c in &self.touched {
            self.weight[c] = 0.0;
            self.seen[c] = false;
        }
        self.touched.clear();
    }
}

struct Run<'a, R: Rng> {
    gamma_over_2m: f64,
    theta: f64,
    rng: &'a mut R,
}

impl<R: Rng> Run<'_, R> {
    /// Moves single nodes to the community with the largest quality gain until no move
    /// improves it. Returns whether any node moved.
    fn move_nodes_fast(&mut self, level: &Level<'_>, memb: &mut [usize]) -> bool {
        let n = level.graph.n_nodes();
        let mut comm_degree = vec![0f64; n];
        let mut comm_size = vec![0usize; n];
        for v in 0..n {
            comm_degree[memb[v]] += level.degree[v];
            comm_size[memb[v]] += 1;
        }
        let mut empty: Vec<usize> = (0..n).filter(|&c| comm_size[c] == 0).rev().collect();
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(self.rng);
        let mut queue: std::collections::VecDeque<usize> = order.into();
        let mut queued = vec![true; n];
        let mut nw = NeighbourWeights::new(n);
        let mut moved = false;
        while let Some(v) = queue.pop_front() {
            queued[v] = false;
            let old = memb[v];
            let kv = level.degree[v];
            for (u, w) in level.graph.edges(v) {
                nw.add(memb[u], w);
            }
            comm_degree[old] -= kv;
            comm_size[old] -= 1;
            // Gain of joining c (v already taken out): w(v, c) − γ k_v K_c / 2m; an empty
            // community gains 0. Ties keep v where it was.
            let gain = |c: usize, nw: &NeighbourWeights| {
                nw.weight[c] - self.gamma_over_2m * kv * comm_degree[c]
            };
            let mut best = old;
            let mut best_gain = gain(old, &nw);
            for &c in &nw.touched {
                let g = gain(c, &nw);
                if g > best_gain {
                    best = c;
                    best_gain = g;
                }
            }
            if best_gain < 0.0
                && comm_size[old] > 0
                && let Some(c) = empty.pop()
            {
                best = c;
            }
            comm_degree[best] += kv;
            comm_size[best] += 1;
            memb[v] = best;
            if best != old {
                moved = true;
                if comm_size[old] == 0 {
                    empty.push(old);
                }
                for (u, _) in level.graph.edges(v) {
                    if !queued[u] && memb[u] != best {
                        queued[u] = true;
                        queue.push_back(u);
                    }
                }
            }
            nw.clear();
        }
        moved
    }

    /// The refined partition: starting from singletons, each singleton node that is well
    /// connected to its community may join a well-connected sub-community of the same
    /// community, chosen at random with probability ∝ exp(gain / θ) among gains ≥ 0.
    fn refine(&mut self, level: &Level<'_>, memb: &[usize]) -> Vec<usize> {
        let n = level.graph.n_nodes();
        let g2m = self.gamma_over_2m;
        let mut comm_degree = vec![0f64; n];
        for v in 0..n {
            comm_degree[memb[v]] += level.degree[v];
        }
        let mut refined: Vec<usize> = (0..n).collect();
        let mut r_degree = level.degree.clone();
        let mut r_size = vec![1usize; n];
        // Weight from each sub-community to the rest of its community.
        let mut r_external: Vec<f64> = (0..n)
            .map(|v| {
                level
                    .graph
                    .edges(v)
                    .filter(|&(u, _)| memb[u] == memb[v])
                    .map(|(_, w)| w)
                    .sum()
            })
            .collect();
        let node_external = r_external.clone();
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(self.rng);
        let mut nw = NeighbourWeights::new(n);
        let mut candidates: Vec<(usize, f64)> = Vec::new();
        for v in order {
            if r_size[refined[v]] > 1 {
                continue;
            }
            let c = memb[v];
            let kv = level.degree[v];
            if node_external[v] < g2m * kv * (comm_degree[c] - kv) {
                continue;
            }
            for (u, w) in level.graph.edges(v) {
                if memb[u] == c {
                    nw.add(refined[u], w);
                }
            }
            candidates.clear();
            candidates.push((refined[v], 0.0));
            for &r in &nw.touched {
                if r == refined[v] {
                    continue;
                }
                let well_connected =
                    r_external[r] >= g2m * r_degree[r] * (comm_degree[c] - r_degree[r]);
                let gain = nw.weight[r] - g2m * kv * r_degree[r];
                if well_connected && gain >= 0.0 {
                    candidates.push((r, gain));
                }
            }
            let chosen = if candidates.len() == 1 {
                candidates[0].0
            } else {
                let top = candidates.iter().map(|p| p.1).fold(0.0, f64::max);
                let total: f64 = candidates
                    .iter()
                    .map(|p| ((p.1 - top) / self.theta).exp())
                    .sum();
                let mut draw = self.rng.random::<f64>() * total;
                let mut pick = candidates[candidates.len() - 1].0;
                for &(r, gain) in &candidates {
                    draw -= ((gain - top) / self.theta).exp();
                    if draw <= 0.0 {
                        pick = r;
                        break;
                    }
                }
                pick
            };
            let own = refined[v];
            if chosen != own {
                r_external[chosen] += node_external[v] - 2.0 * nw.weight[chosen];
                r_degree[chosen] += kv;
                r_size[chosen] += 1;
                r_degree[own] = 0.0;
                r_size[own] = 0;
                refined[v] = chosen;
            }
            nw.clear();
        }
        refined
    }
}

/// Renumbers `memb` to `0..count` in order of first appearance; returns the count.
fn compact(memb: &mut [usize]) -> usize {
    let mut map = vec![usize::MAX; memb.len().max(memb.iter().max().map_or(0, |m| m + 1))];
    let mut next = 0;
    for c in memb.iter_mut() {
        if map[*c] == usize::MAX {
            map[*c] = next;
            next += 1;
        }
        *c = map[*c];
    }
    next
}

/// The graph whose nodes are the (compacted) communities of `part`.
fn aggregate(level: &Level<'_>, part: &[usize], count: usize) -> Level<'static> {
    let mut rows: Vec<Vec<(u32, f64)>> = vec![Vec::new(); count];
    let mut degree = vec![0f64; count];
    for v in 0..level.graph.n_nodes() {
        let a = part[v];
        degree[a] += level.degree[v];
        for (u, w) in level.graph.edges(v) {
            if part[u] != a {
                rows[a].push((part[u] as u32, w));
            }
        }
    }
    Level {
        graph: std::borrow::Cow::Owned(WeightedGraph::from_rows(rows)),
        degree,
    }
}

/// One Leiden pass starting from `labels` (node → community); returns whether it moved any
/// node.
fn leiden_pass<R: Rng>(run: &mut Run<'_, R>, base: &WeightedGraph, labels: &mut [usize]) -> bool {
    let n = base.n_nodes();
    let mut level = Level {
        graph: std::borrow::Cow::Borrowed(base),
        degree: base.degrees(),
    };
    let mut memb = labels.to_vec();
    let mut node_of: Vec<usize> = (0..n).collect();
    let mut changed = false;
    loop {
        changed |= run.move_nodes_fast(&level, &mut memb);
        let n_comm = compact(&mut memb);
        if n_comm == level.graph.n_nodes() {
            break;
        }
        let mut refined = run.refine(&level, &memb);
        let count = compact(&mut refined);
        if count == level.graph.n_nodes() {
            break;
        }
        let next = aggregate(&level, &refined, count);
        let mut next_memb = vec![0usize; count];
        for v in 0..level.graph.n_nodes() {
            next_memb[refined[v]] = memb[v];
        }
        for o in node_of.iter_mut() {
            *o = refined[*o];
        }
        level = next;
        memb = next_memb;
    }
    for (o, l) in labels.iter_mut().enumerate() {
        *l = memb[node_of[o]];
    }
    changed
}

/// Leiden communities of `g`; see the module documentation.
pub fn leiden(g: &WeightedGraph, p: &LeidenParams) -> Result<LeidenResult> {
    ensure(
        p.resolution.is_finite() && p.resolution > 0.0,
        "resolution",
        || format!("{}; must be positive", p.resolution),
    )?;
    ensure(
        p.randomness.is_finite() && p.randomness > 0.0,
        "randomness",
        || format!("{}; must be positive", p.randomness),
    )?;
    ensure(p.max_iterations >= 1, "max_iterations", || "0".to_string())?;
    let n = g.n_nodes();
    let two_m: f64 = g.weights.iter().sum();
    let mut labels: Vec<usize> = (0..n).collect();
    let mut iterations = 0;
    if two_m > 0.0 {
        let mut rng = cellident_tensor::batch::rng_for(p.seed, 0x1e1d);
        let mut run = Run {
            gamma_over_2m: p.resolution / two_m,
            theta: p.randomness,
            rng: &mut rng,
        };
        while iterations < p.max_iterations {
            iterations += 1;
            if !leiden_pass(&mut run, g, &mut labels) {
                break;
            }
        }
    }
    // Number by decreasing size, ties by first node.
    let n_communities = compact(&mut labels);
    let mut size = vec![0usize; n_communities];
    for &c in &labels {
        size[c] += 1;
    }
    let mut rank: Vec<usize> = (0..n_communities).collect();
    rank.sort_by_key(|&c| (std::cmp::Reverse(size[c]), c));
    let mut new_id = vec![0u32; n_communities];
    for (i, &c) in rank.iter().enumerate() {
        new_id[c] = i as u32;
    }
    let labels: Vec<u32> = labels.iter().map(|&c| new_id[c]).collect();
    let quality = modularity(g, &labels, p.resolution);
    Ok(LeidenResult {
        labels,
        n_communities,
        quality,
        iterations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two triangles {0,1,2}, {3,4,5} joined by the edge 2-3 (unit weights).
    fn two_triangles() -> WeightedGraph {
        let e = [(0, 1), (1, 2), (0, 2), (3, 4), (4, 5), (3, 5), (2, 3)];
        let edges: Vec<_> = e.iter().map(|&(i, j)| (i, j, 1.0)).collect();
        WeightedGraph::from_edges(6, &edges).unwrap()
    }

    #[test]
    fn modularity_matches_the_hand_value() {
        // m = 7; each triangle: 3 internal edges, degree sum 7:
        // Q = 2 * (3/7 - (7/14)^2) = 0.357142857...; networkx.community.modularity agrees.
        let q = modularity(&two_triangles(), &[0, 0, 0, 1, 1, 1], 1.0);
        assert!((q - (2.0 * (3.0 / 7.0 - 0.25))).abs() < 1e-12, "{q}");
        // One community: Q = 1 - 1 = 0.
        assert!(modularity(&two_triangles(), &[0; 6], 1.0).abs() < 1e-12);
    }

    #[test]
    fn finds_the_two_triangles_for_every_seed() {
        for seed in 0..10 {
            let r = leiden(
                &two_triangles(),
                &LeidenParams {
                    seed,
                    ..Default::default()
                },
            )
            .unwrap();
            assert_eq!(r.labels, vec![0, 0, 0, 1, 1, 1], "seed {seed}");
            assert!((r.quality - 0.357142857142857).abs() < 1e-9);
        }
    }

    #[test]
    fn higher_resolution_splits_more() {
        let g = two_triangles();
        let coarse = leiden(&g, &LeidenParams::default()).unwrap();
        let fine = leiden(
            &g,
            &LeidenParams {
                resolution: 5.0,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(fine.n_communities > coarse.n_communities);
    }

    #[test]
    fn isolated_nodes_stay_alone_and_bad_params_are_refused() {
        let g = WeightedGraph::from_edges(3, &[(0, 1, 1.0)]).unwrap();
        let r = leiden(&g, &LeidenParams::default()).unwrap();
        assert_eq!(r.labels, vec![0, 0, 1]);
        let bad = LeidenParams {
            resolution: 0.0,
            ..Default::default()
        };
        assert!(
            leiden(&g, &bad)
                .unwrap_err()
                .to_string()
                .contains("resolution")
        );
    }
}

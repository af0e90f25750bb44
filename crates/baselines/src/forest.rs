//! A random forest of CART classification trees, with scikit-learn's
//! `RandomForestClassifier` semantics: bootstrap samples, `sqrt(genes)` candidate genes per
//! split, Gini impurity, fully grown trees (`min_samples_leaf = 1`), thresholds at the midpoint
//! between consecutive distinct values (`x <= threshold` goes left), and probabilities that are
//! the mean of the trees' leaf class fractions.
//!
//! Each tree draws from its own random stream `(seed, tree index)`, so the forest is the same
//! for every thread count. Training reads a dense gene-major copy of the input (`[genes, cells]`),
//! which is the only large allocation.

use cellident_io::CsrMatrix;
use cellident_tensor::batch::rng_for;
use cellident_tensor::{
    Classifier, DenseMatrix, Progress, Result, TrainEvent, TrainReport, ensure_gene_count,
    ensure_labels, ensure_param,
};
use rand::Rng;
use rand::seq::SliceRandom;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// How many genes each split considers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaxFeatures {
    /// `round(sqrt(genes))`, at least 1 (scikit-learn's default for classification).
    Sqrt,
    /// `round(log2(genes))`, at least 1.
    Log2,
    /// A fixed number (capped at the number of genes).
    Count(usize),
    /// Every gene (bagged trees).
    All,
}

/// Hyper-parameters (scikit-learn's names and defaults, except `n_trees` = 500 as in the
/// metadata study of methods.md §4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RandomForestParams {
    pub n_trees: usize,
    pub max_features: MaxFeatures,
    /// No split leaves fewer cells than this on either side.
    pub min_samples_leaf: usize,
    /// Depth limit (`None`: grow until pure).
    pub max_depth: Option<usize>,
    /// Train each tree on a bootstrap sample (otherwise on every cell).
    pub bootstrap: bool,
    pub seed: u64,
}

impl Default for RandomForestParams {
    fn default() -> Self {
        RandomForestParams {
            n_trees: 500,
            max_features: MaxFeatures::Sqrt,
            min_samples_leaf: 1,
            max_depth: None,
            bootstrap: true,
            seed: 0,
        }
    }
}

impl RandomForestParams {
    fn check(&self) -> Result<()> {
        ensure_param(self.n_trees > 0, "n_trees", || "must be at least 1".into())?;
        ensure_param(self.min_samples_leaf > 0, "min_samples_leaf", || {
            "must be at least 1".into()
        })?;
        ensure_param(
            !matches!(self.max_features, MaxFeatures::Count(0)),
            "max_features",
            || "must be at least 1".into(),
        )?;
        ensure_param(self.max_depth != Some(0), "max_depth", || {
            "must be at least 1 (or unset)".into()
        })
    }

    fn candidates(&self, genes: usize) -> usize {
        let n = match self.max_features {
            MaxFeatures::Sqrt => (genes as f64).sqrt().round() as usize,
            MaxFeatures::Log2 => (genes as f64).log2().round() as usize,
            MaxFeatures::Count(n) => n,
            MaxFeatures::All => genes,
        };
        n.clamp(1, genes.max(1))
    }
}

#[derive(Debug, Clone, Copy)]
enum Node {
    /// `x[gene] <= threshold` goes to `left`, otherwise `right` (node indices in the tree).
    Split {
        gene: u32,
        threshold: f32,
        left: u32,
        right: u32,
    },
    /// Class fractions at `offset..offset + n_classes` of the tree's `leaf_values`.
    Leaf { offset: u32 },
}

#[derive(Debug, Clone)]
struct Tree {
    nodes: Vec<Node>,
    leaf_values: Vec<f32>,
}

impl Tree {
    fn leaf<'a>(&'a self, row: &[f32], n_classes: usize) -> &'a [f32] {
        let mut i = 0usize;
        loop {
            match self.nodes[i] {
                Node::Split {
                    gene,
                    threshold,
                    left,
                    right,
                } => {
                    i = if row[gene as usize] <= threshold {
                        left as usize
                    } else {
                        right as usize
                    };
                }
                Node::Leaf { offset } => {
                    let o = offset as usize;
                    return &self.leaf_values[o..o + n_classes];
                }
            }
        }
    }
}

/// A random-forest classifier behind the shared [`Classifier`] trait.
#[derive(Debug, Clone)]
pub struct RandomForest {
    params: RandomForestParams,
    trees: Vec<Tree>,
    /// Total weighted Gini decrease per gene, normalised to sum 1 (mean decrease in impurity).
    importances: Vec<f64>,
    n_genes: usize,
    n_classes: usize,
}

impl RandomForest {
    pub fn new(params: RandomForestParams) -> Result<Self> {
        params.check()?;
        Ok(RandomForest {
            params,
            trees: Vec::new(),
            importances: Vec::new(),
            n_genes: 0,
            n_classes: 0,
        })
    }

    /// Mean decrease in Gini impurity per gene (scikit-learn's `feature_importances_`), summing
    /// to 1 unless no tree split; `[genes]`. Empty before training.
    pub fn feature_importances(&self) -> &[f64] {
        &self.importances
    }
}

/// Gini decrease is maximal where `sum_c l_c^2 / n_l + sum_c r_c^2 / n_r` is.
fn split_score(left: &[f64], n_left: f64, right: &[f64], n_right: f64) -> f64 {
    let l: f64 = left.iter().map(|c| c * c).sum::<f64>() / n_left;
    let r: f64 = right.iter().map(|c| c * c).sum::<f64>() / n_right;
    l + r
}

fn gini(counts: &[f64], n: f64) -> f64 {
    1.0 - counts.iter().map(|c| (c / n) * (c / n)).sum::<f64>()
}

struct Grower<'a> {
    /// `[genes, cells]`, gene-major.
    x: &'a [f32],
    n_cells: usize,
    n_genes: usize,
    y: &'a [u32],
    n_classes: usize,
    mtry: usize,
    min_leaf: usize,
    max_depth: usize,
    /// Cells of the whole bootstrap sample (for importance normalisation).
    total: f64,
}

struct Best {
    gene: usize,
    threshold: f32,
    score: f64,
    /// Number of sample positions going left.
    n_left: usize,
}

impl Grower<'_> {
    fn counts(&self, samples: &[u32]) -> Vec<f64> {
        let mut c = vec![0f64; self.n_classes];
        for &s in samples {
            c[self.y[s as usize] as usize] += 1.0;
        }
        c
    }

    /// The best split of `samples` over up to `mtry` non-constant genes, drawn in random order.
    fn best_split(
        &self,
        samples: &[u32],
        parent: &[f64],
        rng: &mut impl Rng,
        genes: &mut [u32],
        pairs: &mut Vec<(f32, u32)>,
    ) -> Option<Best> {
        let n = samples.len();
        let mut best: Option<Best> = None;
        let mut examined = 0usize;
        // A partial Fisher-Yates shuffle draws genes without replacement as needed.
        for k in 0..self.n_genes {
            if examined >= self.mtry {
                break;
            }
            let j = rng.random_range(k..self.n_genes);
            genes.swap(k, j);
            let g = genes[k] as usize;
            let col = &self.x[g * self.n_cells..(g + 1) * self.n_cells];
            pairs.clear();
            pairs.extend(
                samples
                    .iter()
                    .map(|&s| (col[s as usize], self.y[s as usize])),
            );
            let (lo, hi) = pairs
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), p| {
                    (a.min(p.0), b.max(p.0))
                });
            if lo >= hi {
                // Constant here: does not count towards mtry (as scikit-learn).
                continue;
            }
            examined += 1;
            pairs.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
            let mut left = vec![0f64; self.n_classes];
            let mut right = parent.to_vec();
            for i in 0..n - 1 {
                let c = pairs[i].1 as usize;
                left[c] += 1.0;
                right[c] -= 1.0;
                let n_left = i + 1;
                if pairs[i].0 >= pairs[i + 1].0
                    || n_left < self.min_leaf
                    || n - n_left < self.min_leaf
                {
                    continue;
                }
                let score = split_score(&left, n_left as f64, &right, (n - n_left) as f64);
                if best.as_ref().is_none_or(|b| score > b.score + 1e-12) {
                    let (a, b) = (pairs[i].0, pairs[i + 1].0);
                    let mut t = a + (b - a) / 2.0;
                    if t >= b {
                        t = a;
                    }
                    best = Some(Best {
                        gene: g,
                        threshold: t,
                        score,
                        n_left,
                    });
                }
            }
        }
        best
    }

    fn grow(&self, samples: &mut [u32], rng: &mut impl Rng, importances: &mut [f64]) -> Tree {
        let mut tree = Tree {
            nodes: vec![Node::Leaf { offset: 0 }],
            leaf_values: Vec::new(),
        };
        let mut genes: Vec<u32> = (0..self.n_genes as u32).collect();
        let mut pairs = Vec::with_capacity(samples.len());
        // (node index, start, end, depth) of the sample positions still to split.
        let mut stack = vec![(0usize, 0usize, samples.len(), 0usize)];
        while let Some((node, start, end, depth)) = stack.pop() {
            let part = &mut samples[start..end];
            let n = part.len();
            let counts = self.counts(part);
            let pure = counts.iter().filter(|&&c| c > 0.0).count() <= 1;
            let split = if pure || n < 2 * self.min_leaf || depth >= self.max_depth {
                None
            } else {
                self.best_split(part, &counts, rng, &mut genes, &mut pairs)
            };
            let Some(best) = split else {
                let offset = tree.leaf_values.len() as u32;
                tree.leaf_values
                    .extend(counts.iter().map(|&c| (c / n as f64) as f32));
                tree.nodes[node] = Node::Leaf { offset };
                continue;
            };
            // Partition the positions: genes <= threshold first.
            let col = &self.x[best.gene * self.n_cells..(best.gene + 1) * self.n_cells];
            let mut i = 0;
            for k in 0..n {
                if col[part[k] as usize] <= best.threshold {
                    part.swap(i, k);
                    i += 1;
                }
            }
            debug_assert_eq!(i, best.n_left);
            let (l, r) = (self.counts(&part[..i]), self.counts(&part[i..]));
            let decrease = n as f64 * gini(&counts, n as f64)
                - i as f64 * gini(&l, i as f64)
                - (n - i) as f64 * gini(&r, (n - i) as f64);
            importances[best.gene] += decrease / self.total;
            let left = tree.nodes.len();
            tree.nodes.push(Node::Leaf { offset: 0 });
            tree.nodes.push(Node::Leaf { offset: 0 });
            tree.nodes[node] = Node::Split {
                gene: best.gene as u32,
                threshold: best.threshold,
                left: left as u32,
                right: left as u32 + 1,
            };
            stack.push((left + 1, start + i, end, depth + 1));
            stack.push((left, start, start + i, depth + 1));
        }
        tree
    }
}

impl Classifier for RandomForest {
    fn fit(
        &mut self,
        x: &CsrMatrix,
        y: &[u32],
        n_classes: usize,
        progress: &mut dyn Progress,
    ) -> Result<TrainReport> {
        let started = std::time::Instant::now();
        ensure_labels(x.n_rows(), y, n_classes)?;
        let (n_cells, n_genes) = (x.n_rows(), x.n_cols());
        // Gene-major dense copy: each split candidate reads one contiguous column.
        let mut xt = vec![0f32; n_cells * n_genes];
        for i in 0..n_cells {
            let (idx, val) = x.row(i);
            for (&g, &v) in idx.iter().zip(val) {
                xt[g as usize * n_cells + i] = v;
            }
        }
        let grower = Grower {
            x: &xt,
            n_cells,
            n_genes,
            y,
            n_classes,
            mtry: self.params.candidates(n_genes),
            min_leaf: self.params.min_samples_leaf,
            max_depth: self.params.max_depth.unwrap_or(usize::MAX),
            total: n_cells as f64,
        };
        progress.event(&TrainEvent::Start {
            model: "random forest".into(),
            epochs: 1,
            batches_per_epoch: self.params.n_trees,
        });
        let seed = self.params.seed;
        let bootstrap = self.params.bootstrap;
        let grown: Vec<(Tree, Vec<f64>)> = (0..self.params.n_trees)
            .into_par_iter()
            .map(|t| {
                let mut rng = rng_for(seed, 0xF0_0000 + t as u64);
                let mut samples: Vec<u32> = if bootstrap {
                    (0..n_cells)
                        .map(|_| rng.random_range(0..n_cells) as u32)
                        .collect()
                } else {
                    (0..n_cells as u32).collect()
                };
                if !bootstrap {
                    samples.shuffle(&mut rng);
                }
                let mut imp = vec![0f64; n_genes];
                let tree = grower.grow(&mut samples, &mut rng, &mut imp);
                (tree, imp)
            })
            .collect();
        let mut importances = vec![0f64; n_genes];
        let mut trees = Vec::with_capacity(grown.len());
        for (b, (tree, imp)) in grown.into_iter().enumerate() {
            // Normalise each tree's importances before averaging, as scikit-learn does.
            let s: f64 = imp.iter().sum();
            if s > 0.0 {
                for (a, v) in importances.iter_mut().zip(&imp) {
                    *a += v / s;
                }
            }
            trees.push(tree);
            progress.event(&TrainEvent::Batch {
                epoch: 0,
                batch: b,
                loss: 0.0,
            });
        }
        let s: f64 = importances.iter().sum();
        if s > 0.0 {
            importances.iter_mut().for_each(|v| *v /= s);
        }
        progress.event(&TrainEvent::Finish);
        self.trees = trees;
        self.importances = importances;
        self.n_genes = n_genes;
        self.n_classes = n_classes;
        Ok(TrainReport {
            seconds: started.elapsed().as_secs_f64(),
            ..TrainReport::default()
        })
    }

    fn predict_proba(&self, x: &CsrMatrix) -> Result<DenseMatrix> {
        ensure_param(!self.trees.is_empty(), "model", || {
            "the random forest is not trained".into()
        })?;
        ensure_gene_count("random forest", self.n_genes, x.n_cols())?;
        let c = self.n_classes;
        let n_trees = self.trees.len() as f32;
        let mut values = vec![0f32; x.n_rows() * c];
        values
            .par_chunks_mut(c * 64)
            .enumerate()
            .for_each(|(chunk, out)| {
                let mut row = vec![0f32; self.n_genes];
                for (k, probs) in out.chunks_mut(c).enumerate() {
                    let i = chunk * 64 + k;
                    row.iter_mut().for_each(|v| *v = 0.0);
                    let (idx, val) = x.row(i);
                    for (&g, &v) in idx.iter().zip(val) {
                        row[g as usize] = v;
                    }
                    for tree in &self.trees {
                        for (p, &v) in probs.iter_mut().zip(tree.leaf(&row, c)) {
                            *p += v;
                        }
                    }
                    probs.iter_mut().for_each(|p| *p /= n_trees);
                }
            });
        DenseMatrix::new(x.n_rows(), c, values)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn csr(rows: &[&[f32]]) -> CsrMatrix {
        let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        CsrMatrix::from_dense(rows.len(), rows[0].len(), &flat).unwrap()
    }

    #[test]
    fn one_tree_without_bootstrap_finds_the_midpoint_split() {
        // Gene 1 separates the classes (<= 2.5 vs >= 3); gene 0 is noise. With every gene a
        // candidate and no bootstrap, one tree is exactly CART: root split on gene 1 at 2.5
        // (scikit-learn's DecisionTreeClassifier gives feature 1, threshold 2.5 on these rows).
        let x = csr(&[&[1.0, 1.0], &[0.0, 2.0], &[1.0, 3.0], &[0.0, 4.0]]);
        let mut rf = RandomForest::new(RandomForestParams {
            n_trees: 1,
            max_features: MaxFeatures::All,
            bootstrap: false,
            ..Default::default()
        })
        .unwrap();
        rf.fit_quiet(&x, &[0, 0, 1, 1], 2).unwrap();
        match rf.trees[0].nodes[0] {
            Node::Split {
                gene, threshold, ..
            } => {
                assert_eq!(gene, 1);
                assert_eq!(threshold, 2.5);
            }
            Node::Leaf { .. } => panic!("expected a split"),
        }
        assert_eq!(rf.predict(&x).unwrap(), vec![0, 0, 1, 1]);
        assert_eq!(rf.feature_importances(), &[0.0, 1.0]);
        let p = rf.predict_proba(&csr(&[&[0.0, 2.5], &[0.0, 2.6]])).unwrap();
        assert_eq!(p.values, vec![1.0, 0.0, 0.0, 1.0]);
    }

    #[test]
    fn same_forest_for_any_thread_count() {
        let rows: Vec<Vec<f32>> = (0..60)
            .map(|i| (0..12).map(|g| ((i * 7 + g * 13) % 17) as f32).collect())
            .collect();
        let refs: Vec<&[f32]> = rows.iter().map(|r| r.as_slice()).collect();
        let x = csr(&refs);
        let y: Vec<u32> = (0..60).map(|i| (rows[i][3] > 8.0) as u32).collect();
        let fit = |threads| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut rf = RandomForest::new(RandomForestParams {
                    n_trees: 20,
                    seed: 3,
                    ..Default::default()
                })
                .unwrap();
                rf.fit_quiet(&x, &y, 2).unwrap();
                rf.predict_proba(&x).unwrap().values
            })
        };
        assert_eq!(fit(1), fit(2));
    }

    #[test]
    fn bad_parameters_are_named() {
        let e = RandomForest::new(RandomForestParams {
            n_trees: 0,
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("n_trees"), "{e}");
    }
}

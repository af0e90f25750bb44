//! CICL on real fixtures and its invariants: the one-token attention shortcut equals textbook
//! attention, every parameter is trained, and training runs end to end reproducibly.
#![allow(clippy::unwrap_used)]

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use cellident_cicl::encoder::{Dropout, Encoder, ProjectionHead, multi_head_attention};
use cellident_cicl::{Cicl, CiclParams, cicl_loss};
use cellident_tensor::params::SeededParams;
use cellident_tensor::{DenseMatrix, NoProgress};
use rand::Rng;

fn small_params() -> CiclParams {
    small(CiclParams::default())
}

/// `base` with a network small enough for debug-build tests.
fn small(base: CiclParams) -> CiclParams {
    CiclParams {
        n_layers: 2,
        n_heads: 2,
        head_dim: 4,
        ffn_hidden: 16,
        projection_hidden: 32,
        projection_dim: 8,
        ..base
    }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    cellident_tensor::nn::max_abs_diff(a, b).unwrap()
}

fn random(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = cellident_tensor::batch::rng_for(seed, 0);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

#[test]
fn one_token_attention_shortcut_equals_full_attention() {
    let g = 24;
    let map = VarMap::new();
    let sp = SeededParams::new(&map, 3, &Device::Cpu);
    let enc = Encoder::new(g, &small_params(), &sp).unwrap();
    let layer = &enc.layers[0];
    let (w_q, w_k) = (random(&[8, g], 1), random(&[8, g], 2));
    let x = random(&[5, g], 3);
    // What the encoder computes: fc(W_V x), no Q/K work.
    let shortcut = x
        .matmul(&layer.w_v.t().unwrap())
        .unwrap()
        .matmul(&layer.fc.t().unwrap())
        .unwrap();
    // Textbook multi-head attention over a sequence of one token per cell.
    let full = multi_head_attention(
        &x.reshape((5, 1, g)).unwrap(),
        &w_q,
        &w_k,
        &layer.w_v,
        &layer.fc,
        2,
    )
    .unwrap()
    .reshape((5, g))
    .unwrap();
    let diff = max_abs_diff(&shortcut, &full);
    assert!(diff < 1e-5, "max difference {diff}");
    // With two tokens Q and K do matter: the comparison above is not vacuous.
    let pair = random(&[5, 2, g], 4);
    let a = multi_head_attention(&pair, &w_q, &w_k, &layer.w_v, &layer.fc, 2).unwrap();
    let b = multi_head_attention(&pair, &w_k, &w_q, &layer.w_v, &layer.fc, 2).unwrap();
    let d = max_abs_diff(&a, &b);
    assert!(d > 1e-3);
}

#[test]
fn every_parameter_receives_a_gradient() {
    let g = 20;
    let p = small_params();
    let map = VarMap::new();
    let sp = SeededParams::new(&map, 5, &Device::Cpu);
    let enc = Encoder::new(g, &p, &sp.pp("encoder")).unwrap();
    let head = ProjectionHead::new(g, &p, &sp.pp("projection")).unwrap();
    let mut drop = Dropout::train(0.2, cellident_tensor::batch::rng_for(1, 1));
    let z1 = head
        .forward(&enc.forward(&random(&[6, g], 7), &mut drop).unwrap())
        .unwrap();
    let z2 = head
        .forward(&enc.forward(&random(&[6, g], 8), &mut drop).unwrap())
        .unwrap();
    let (loss, _, _) = cicl_loss(&z1, &z2, &[0, 0, 1, 1, 2, 2], 0.5, 0.1).unwrap();
    let grads = loss.backward().unwrap();
    let data = map.data().lock().unwrap();
    assert!(data.len() >= 2 * 10 + 4);
    for (name, var) in data.iter() {
        let gsum = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name} has no gradient"))
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(gsum > 0.0, "{name} has a zero gradient");
    }
}

/// The pollen fixture (249 cells x 2000 genes, log-transformed values, 11 types) with its
/// encoded labels and the number of types.
fn pollen_dataset() -> (cellident_io::ExpressionDataset, Vec<u32>, usize) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/pollen_simlr");
    let d = cellident_io::read_mtx_folder(&root).unwrap();
    let labels = d.obs().labels("label").unwrap();
    let enc = cellident_preprocess::LabelEncoder::fit(&labels).unwrap();
    let y: Vec<u32> = enc
        .transform(&labels)
        .into_iter()
        .map(|c| c.unwrap())
        .collect();
    (d, y, enc.classes.len())
}

/// The pollen fixture's values as they are (a dense matrix) with its labels.
fn pollen() -> (DenseMatrix, Vec<u32>, usize) {
    let (d, y, k) = pollen_dataset();
    let x = DenseMatrix::new(d.n_cells(), d.n_genes(), d.matrix().to_dense()).unwrap();
    (x, y, k)
}

#[test]
fn short_run_on_pollen_is_reproducible_and_clusters_the_cell_types() {
    let (x, y, k) = pollen();
    let params = CiclParams {
        epochs: 3,
        refit_every: 2,
        kmeans_restarts: 3,
        ..small_params()
    };
    let mut a = Cicl::from_params(&params).unwrap();
    let fa = a.fit(&x, k, &mut NoProgress).unwrap();
    let mut b = Cicl::from_params(&params).unwrap();
    let fb = b.fit(&x, k, &mut NoProgress).unwrap();
    assert_eq!(fa.labels, fb.labels);
    assert_eq!(fa.losses, fb.losses);
    assert_eq!(fa.embedding.n_cols, 2000);
    assert_eq!(fa.refits.len(), 3, "first fit, epoch 2, final");
    // Each re-fit record keeps its partition: the first is the first k-means, the last the
    // nearest final centroid of every cell, which is argmax q (q falls with the distance).
    assert_eq!(fa.refits[0].labels, fa.initial_labels);
    assert_eq!(fa.refits[2].labels, fa.labels);
    let ari = cellident_metrics::adjusted_rand_index(&y, &fa.labels).unwrap();
    // The 11 pollen types are well separated: any working pipeline gets ARI > 0.7
    // (PCA-50 + k-means on this fixture: 0.92, fixtures/baseline.json).
    assert!(ari > 0.7, "ARI {ari}");
    assert!(fa.losses.iter().all(|l| l.total.is_finite()));
}

#[test]
fn bad_input_is_refused_with_a_message() {
    let x = DenseMatrix::new(
        3,
        4,
        vec![
            0.0,
            1.0,
            f32::NAN,
            2.0,
            1.0,
            1.0,
            1.0,
            1.0,
            0.0,
            0.0,
            0.0,
            1.0,
        ],
    )
    .unwrap();
    let mut m = Cicl::from_params(&small_params()).unwrap();
    let e = m.fit(&x, 2, &mut NoProgress).unwrap_err().to_string();
    assert!(e.contains("cell 0 gene 2"), "{e}");
    let x = DenseMatrix::new(2, 2, vec![0.0, 1.0, 1.0, 0.0]).unwrap();
    let e = m.fit(&x, 3, &mut NoProgress).unwrap_err().to_string();
    assert!(e.contains("n_clusters"), "{e}");
    // Too many genes for an encoder as wide as its input: refused before any allocation.
    let wide = cellident_cicl::MAX_GENES + 1;
    let x = DenseMatrix::new(2, wide, vec![1.0; 2 * wide]).unwrap();
    let e = m.fit(&x, 2, &mut NoProgress).unwrap_err().to_string();
    assert!(
        e.contains("10001 genes") && e.contains("at most 10000"),
        "{e}"
    );
}

/// CICL's input recipe on the pollen fixture: scaled genes have mean 0 and unit variance
/// (clipped at 10), and they give the method a better start — the first k-means on the
/// untrained encoder's embedding (the paper's recipe, this small encoder: ARI 0.918 scaled vs
/// 0.891 unscaled; the paper's encoder: 0.934 vs 0.880, docs/cicl.md "Input scaling"). The
/// finding was made on the paper's recipe, which this test keeps; with today's default (the
/// input profile and the first k-means in 50 principal components) this small encoder starts
/// at 0.895 scaled against 0.926 unscaled on this fixture.
#[test]
fn scaled_input_gives_cicl_a_better_first_kmeans_on_pollen() {
    let (d, y, k) = pollen_dataset();
    let scaled = cellident_cicl::prepare_input(d.clone(), true).unwrap();
    let unscaled = cellident_cicl::prepare_input(d, false).unwrap();
    assert_eq!(scaled.values.n_cols, 2000);
    assert_eq!(scaled.cell_ids.len(), 249);
    let x = &scaled.values;
    for j in (0..x.n_cols).step_by(97) {
        let col: Vec<f64> = (0..x.n_rows).map(|i| x.row(i)[j] as f64).collect();
        let mean = col.iter().sum::<f64>() / col.len() as f64;
        let max = col.iter().fold(0f64, |m, v| m.max(v.abs()));
        assert!(mean.abs() < 0.2, "gene {j}: mean {mean}");
        assert!(max <= 10.0 + 1e-4, "gene {j}: |x| up to {max}");
    }
    let first_kmeans_ari = |x: &DenseMatrix| {
        let params = CiclParams {
            epochs: 1,
            refit_every: 0,
            ..small(CiclParams::paper())
        };
        let fit = Cicl::from_params(&params)
            .unwrap()
            .fit(x, k, &mut NoProgress)
            .unwrap();
        cellident_metrics::adjusted_rand_index(&y, &fit.initial_labels).unwrap()
    };
    let (a_scaled, a_unscaled) = (
        first_kmeans_ari(&scaled.values),
        first_kmeans_ari(&unscaled.values),
    );
    eprintln!("first k-means ARI: scaled {a_scaled:.3}, unscaled {a_unscaled:.3}");
    assert!(a_scaled > 0.9, "scaled {a_scaled}");
    assert!(a_scaled > a_unscaled, "{a_scaled} vs {a_unscaled}");
}

/// Issue #8's test: a short run of CICL as the benchmark runs it (the default network, scaled
/// genes) clusters the pollen fixture better than k-means on the PCA of the same input (the
/// `kmeans` baseline of `cargo xtask reproduce`: PCA-50 of the scaled HVGs, 10 k-means++ starts,
/// seed 0). Here: ARI 0.936 against 0.920 with the default since 2026-12-07 (the paper's recipe
/// gave 0.932). The margin is the method's start: the first k-means on the untrained encoder's
/// embedding already scores about as high, and three epochs with a re-fit after each keep that
/// partition (docs/cicl.md). On the full pollen_simlr the default's five-seed median, 0.903, is
/// 0.007 below PCA-50 + k-means' five-seed median, 0.910 (docs/results.md); this fixture run is
/// one seed with 3 epochs.
#[test]
fn short_run_beats_kmeans_on_the_pca_of_its_input_on_pollen() {
    let (d, y, k) = pollen_dataset();
    let x = cellident_cicl::prepare_input(d, true).unwrap().values;
    let (_, pcs) = cellident_preprocess::Pca::fit_transform(
        x.clone(),
        &cellident_preprocess::PcaParams::default(),
    )
    .unwrap();
    let baseline =
        cellident_preprocess::kmeans(&pcs, &cellident_preprocess::KMeansParams::new(k, 0))
            .unwrap()
            .labels;
    let ari_pca = cellident_metrics::adjusted_rand_index(&y, &baseline).unwrap();
    let params = CiclParams {
        epochs: 3,
        refit_every: 1,
        ..CiclParams::default()
    };
    let fit = Cicl::from_params(&params)
        .unwrap()
        .fit(&x, k, &mut NoProgress)
        .unwrap();
    assert_eq!(fit.refits.len(), 4, "first fit, epochs 1 and 2, final");
    let ari = cellident_metrics::adjusted_rand_index(&y, &fit.labels).unwrap();
    eprintln!("CICL (argmax q) ARI {ari:.4}, PCA-50 + k-means {ari_pca:.4}");
    assert!(ari_pca > 0.85, "the baseline itself works: {ari_pca}");
    assert!(ari > ari_pca, "CICL {ari} vs PCA-50 + k-means {ari_pca}");
}

/// `input_offset` is exactly "add the profile (+a, -a, +a, ...) over the genes to every cell,
/// then run the paper's encoder": the same weights (the profile draws nothing from the seed)
/// give the same embedding of `x` as the plain encoder gives of `x + profile`.
#[test]
fn input_offset_adds_the_alternating_profile_before_the_encoder() {
    let (g, a) = (6usize, 2.0f32);
    let x = random(&[3, g], 7);
    let profile: Vec<f32> = (0..g).map(|j| if j % 2 == 0 { a } else { -a }).collect();
    let shifted = x
        .broadcast_add(&Tensor::from_vec(profile, (1, g), &Device::Cpu).unwrap())
        .unwrap();
    let encoder = |offset: f64| {
        let params = CiclParams {
            input_offset: offset,
            ..small_params()
        };
        Encoder::new(
            g,
            &params,
            &SeededParams::new(&VarMap::new(), 3, &Device::Cpu),
        )
        .unwrap()
    };
    let with = encoder(a as f64).forward(&x, &mut Dropout::eval()).unwrap();
    let plain = encoder(0.0)
        .forward(&shifted, &mut Dropout::eval())
        .unwrap();
    let unshifted = encoder(0.0).forward(&x, &mut Dropout::eval()).unwrap();
    assert!(max_abs_diff(&with, &plain) < 1e-6);
    assert!(
        max_abs_diff(&with, &unshifted) > 1e-2,
        "the profile changes the embedding"
    );
    let bad = CiclParams {
        input_offset: -1.0,
        ..small_params()
    };
    let e = Cicl::from_params(&bad).unwrap_err().to_string();
    assert!(e.contains("input_offset"), "{e}");
}

/// Why `input_offset` exists (docs/cicl.md): on baron_mouse the per-cell LayerNorm blows up the
/// small spread of the beta cells, which sit near the mean profile, and the first k-means on the
/// untrained encoder's embedding cuts them apart. A constant profile of height 2 under the
/// LayerNorm keeps them together. On this fixture (598 cells, 13 types, scaled genes, the default
/// network, seed 0) the first k-means scores ARI 0.810 with the profile against 0.338 without
/// (PCA-50 + k-means on the same input: 0.379, fixtures/baseline.json). The small test network
/// does not show it (0.365 against 0.361): its attention and feed-forward maps have rank 8 and
/// 16, not 1024.
#[test]
fn input_offset_gives_a_better_first_kmeans_on_the_baron_mouse_fixture() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/baron_mouse");
    let d = cellident_io::read_mtx_folder(&root).unwrap();
    let labels = d.obs().labels("cell_type").unwrap();
    let enc = cellident_preprocess::LabelEncoder::fit(&labels).unwrap();
    let (keep, y) = enc.labelled_rows(&labels);
    let d = d.select_cells(&keep).unwrap();
    let k = enc.classes.len();
    let x = cellident_cicl::prepare_input(d, true).unwrap().values;
    let first_kmeans_ari = |offset: f64| {
        let params = CiclParams {
            epochs: 1,
            refit_every: 0,
            input_offset: offset,
            // The paper's recipe, so that the offset is the only change measured.
            ..CiclParams::paper()
        };
        let fit = Cicl::from_params(&params)
            .unwrap()
            .fit(&x, k, &mut NoProgress)
            .unwrap();
        cellident_metrics::adjusted_rand_index(&y, &fit.initial_labels).unwrap()
    };
    let (with, without) = (first_kmeans_ari(2.0), first_kmeans_ari(0.0));
    eprintln!("first k-means ARI: input_offset 2 {with:.3}, 0 {without:.3}");
    assert!(with > without + 0.1, "{with} vs {without}");
}

/// `labels_off_partition` counts the pseudo-labels that differ from the last k-means: with the
/// untrained encoder (the first batch of the first epoch, here the only one) the pseudo-label of
/// every cell is its nearest first-k-means centroid, i.e. exactly that k-means' label, so the
/// fraction is 0; after a step at a large encoder learning rate the embedding has moved and
/// some cells are nearer another centroid. Pollen fixture, one batch of all 249 cells per epoch.
#[test]
fn pseudo_labels_leave_the_partition_only_once_the_encoder_moves() {
    let (x, _, k) = pollen();
    let params = CiclParams {
        epochs: 2,
        refit_every: 0,
        kmeans_restarts: 3,
        lr_encoder: 1e-2,
        ..small_params()
    };
    let fit = Cicl::from_params(&params)
        .unwrap()
        .fit(&x, k, &mut NoProgress)
        .unwrap();
    let off: Vec<f64> = fit.losses.iter().map(|l| l.labels_off_partition).collect();
    eprintln!("pseudo-labels off the first partition per epoch: {off:?}");
    assert_eq!(off[0], 0.0);
    assert!(off[1] > 0.0 && off[1] <= 1.0, "{off:?}");
}

/// `lr_batch_budget` only rescales the encoder's rate: pollen's 249 cells in batches of 32 make
/// 8 batches per epoch, so a budget of 2 trains at 1e-2 · 2 / 8 = 2.5e-3, exactly as a run
/// without a budget at that rate (same seed: same losses and labels), and the epoch record
/// reports the rate used.
#[test]
fn lr_batch_budget_trains_as_the_scaled_rate_would() {
    let (x, _, k) = pollen();
    let base = CiclParams {
        epochs: 1,
        refit_every: 0,
        kmeans_restarts: 2,
        batch_size: 32,
        ..small_params()
    };
    let budget = CiclParams {
        lr_encoder: 1e-2,
        lr_batch_budget: 2,
        ..base.clone()
    };
    let scaled = CiclParams {
        lr_encoder: 2.5e-3,
        ..base
    };
    let fit = |p: &CiclParams| {
        Cicl::from_params(p)
            .unwrap()
            .fit(&x, k, &mut NoProgress)
            .unwrap()
    };
    let (a, b) = (fit(&budget), fit(&scaled));
    assert_eq!(a.report.epochs[0].lr, 2.5e-3);
    assert_eq!(a.losses, b.losses);
    assert_eq!(a.labels, b.labels);
    // At the unscaled rate the same step moves the network elsewhere.
    let c = fit(&CiclParams {
        lr_batch_budget: 0,
        ..budget
    });
    assert_ne!(a.embedding.values, c.embedding.values);
}

/// `first_kmeans_pcs` moves only the first k-means into the untrained embedding's top principal
/// components: the first partition is exactly k-means (the same starts and seed) on the PCA-10
/// scores of that embedding, computed here through cellident-preprocess, and it differs from
/// k-means on the whole embedding (pollen fixture, the small test network, epochs 0 so that the
/// model's embedding afterwards is still the untrained one).
#[test]
fn first_kmeans_pcs_clusters_the_embeddings_principal_components() {
    use cellident_preprocess::{KMeansParams, Pca, PcaParams, kmeans};
    let (x, _, k) = pollen();
    let params = CiclParams {
        epochs: 0,
        refit_every: 0,
        kmeans_restarts: 3,
        first_kmeans_pcs: 10,
        ..small_params()
    };
    let mut model = Cicl::from_params(&params).unwrap();
    let fit = model.fit(&x, k, &mut NoProgress).unwrap();
    let h = model.embed_dense(&x).unwrap();
    let (_, scores) = Pca::fit_transform(
        h.clone(),
        &PcaParams {
            n_components: 10,
            seed: 0,
            ..PcaParams::default()
        },
    )
    .unwrap();
    let kmeans_params = KMeansParams {
        n_init: 3,
        ..KMeansParams::new(k, 0)
    };
    let in_pcs = kmeans(&scores, &kmeans_params).unwrap();
    assert_eq!(fit.initial_labels, in_pcs.labels);
    let whole = kmeans(&h, &kmeans_params).unwrap();
    let agreement = cellident_metrics::adjusted_rand_index(&whole.labels, &in_pcs.labels).unwrap();
    eprintln!("ARI between the first k-means in 10 PCs and on the whole embedding: {agreement:.3}");
    assert!(agreement < 1.0);
}

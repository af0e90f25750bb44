//! Criterion: N-ACT (projection variant, methods.md §1.2) at G = 2,000 genes on real cells —
//! the pbmc_10x_4k_top2000 fixture (1,000 cells x 2,000 genes, normalised to 1e4 and logged),
//! resampled with replacement to the batch sizes below. Run with `RAYON_NUM_THREADS=2`.
//!
//! - `train_step_batch512`: one training step as `Nact::fit` takes it: forward, softmax
//!   cross-entropy, backward, Adam update of all 18 parameter tensors (anchors.md §A: the
//!   PyTorch reference takes 450 ms median, 334 ms best, per step at G = 2,000, batch 512).
//! - `train_step_batch512_masked`: the same step with the default masking dropout
//!   (`NactParams::masking_fraction` = 0.5: a seeded mask of the batch, `gamma = alpha(x) *
//!   dropout(x)`), what `Nact::fit` takes by default since 2026-11-22.
//! - `predict_20000_cells`: class probabilities of 20,000 cells in `Nact::predict_proba`'s
//!   batches of 2,048. FLOPs per cell = 2·(3·G² + 2·(2·128·G) + C·G) ≈ 26.1 M (attention and
//!   two projections G×G, the shared feed-forward block used twice, the head), so cells/s x
//!   26.1 MFLOP is the GEMM rate to compare with anchors.md's measured f32 ceiling.
//! - `actinn_g2000/epoch_12800_cells_batch128`: ACTINN (G -> 100 -> 50 -> 25 -> C) trained one
//!   epoch by `Actinn::fit` on 12,800 cells at its default batch of 128, so 100 steps (densifying
//!   each batch, forward, cross-entropy, backward, Adam): one step = the time / 100 (anchors.md §A:
//!   the PyTorch reference takes 1.6 ms per step at G = 2,000, batch 128).
//! - `actinn_g2000/predict_20000_cells`: class probabilities of the 20,000 cells above.

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use candle_nn::{Optimizer, VarMap};
use cellident_io::CsrMatrix;
use cellident_nact::{Actinn, ActinnParams, Nact, NactNetwork, NactParams, NactVariant};
use cellident_tensor::params::SeededParams;
use cellident_tensor::{Adam, AdamParams, CheckParams, Classifier, NoProgress};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::SeedableRng;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `(cells [n, 2000] log-normalised, labels)` drawn with replacement from the fixture.
fn cells(n: usize, seed: u64) -> (CsrMatrix, Vec<u32>) {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    let (x, y, _) = cellident_benches::resampled_pbmc_cells(&fixtures, n, seed).expect("fixture");
    (x, y)
}

fn bench(c: &mut Criterion) {
    let (x, y) = cells(512, 1);
    let genes = x.n_cols();
    let classes = (*y.iter().max().expect("labels") + 1) as usize;
    let device = Device::Cpu;
    let vars = VarMap::new();
    let net = NactNetwork::new(
        genes,
        classes,
        NactVariant::Projection,
        128,
        &SeededParams::new(&vars, 0, &device),
    )
    .expect("network");
    let mut opt = Adam::new(
        vars.all_vars(),
        AdamParams {
            lr: 1e-4,
            ..AdamParams::default()
        },
    )
    .expect("adam");
    let xb = Tensor::from_vec(x.to_dense(), (x.n_rows(), genes), &device).expect("batch");
    let yb = Tensor::new(y.as_slice(), &device).expect("labels");
    let mut g = c.benchmark_group("nact_g2000");
    g.sample_size(10);
    g.bench_function("train_step_batch512", |b| {
        b.iter(|| {
            let logits = net.forward(&xb).expect("forward").0;
            let loss = cellident_tensor::nn::cross_entropy(&logits, &yb).expect("loss");
            opt.step(&cellident_tensor::nn::backward(&loss).expect("backward"))
                .expect("step");
        })
    });
    let mut mask_rng = rand::rngs::StdRng::seed_from_u64(7);
    g.bench_function("train_step_batch512_masked", |b| {
        b.iter(|| {
            let masked = cellident_tensor::nn::dropout(&xb, 0.5, &mut mask_rng).expect("mask");
            let logits = net.forward_masked(&xb, &masked).expect("forward").0;
            let loss = cellident_tensor::nn::cross_entropy(&logits, &yb).expect("loss");
            opt.step(&cellident_tensor::nn::backward(&loss).expect("backward"))
                .expect("step");
        })
    });

    // A model trained for one epoch on 1,000 cells; prediction cost does not depend on the
    // weights' values.
    let (train_x, train_y) = cells(1000, 2);
    let mut model = Nact::new(
        NactParams {
            epochs: 1,
            ..NactParams::default()
        }
        .check()
        .expect("params"),
        Device::Cpu,
    );
    model
        .fit(&train_x, &train_y, classes, &mut NoProgress)
        .expect("fit");
    let (query, _) = cells(20_000, 3);
    g.throughput(Throughput::Elements(query.n_rows() as u64));
    g.bench_function("predict_20000_cells", |b| {
        b.iter(|| model.predict_proba(&query).expect("predict"))
    });
    g.finish();

    let (actinn_x, actinn_y) = cells(12_800, 4);
    let mut g = c.benchmark_group("actinn_g2000");
    g.sample_size(10);
    g.bench_function("epoch_12800_cells_batch128", |b| {
        b.iter(|| {
            let mut m = Actinn::new(
                ActinnParams {
                    epochs: 1,
                    ..ActinnParams::default()
                },
                Device::Cpu,
            )
            .expect("actinn");
            m.fit(&actinn_x, &actinn_y, classes, &mut NoProgress)
                .expect("fit")
        })
    });
    let mut trained = Actinn::new(
        ActinnParams {
            epochs: 1,
            ..ActinnParams::default()
        },
        Device::Cpu,
    )
    .expect("actinn");
    trained
        .fit(&actinn_x, &actinn_y, classes, &mut NoProgress)
        .expect("fit");
    g.throughput(Throughput::Elements(query.n_rows() as u64));
    g.bench_function("predict_20000_cells", |b| {
        b.iter(|| trained.predict_proba(&query).expect("predict"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

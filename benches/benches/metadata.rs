//! Criterion: the metadata MLP (methods.md §4: G -> 512 -> 256 -> 128 -> C, ReLU, dropout 0.5,
//! Adam 1e-3, mini-batches of 64) trained one epoch by `MetadataMlp::fit` with
//! `MlpParams::plain()` (every gene, standardised, one member) on 12,800 cells drawn with
//! replacement from the pbmc_10x_4k_top2000 fixture (normalised to 1e4 and logged, G = 2,000):
//! the standardisation statistics, then 200 steps (densifying each batch, forward,
//! cross-entropy, backward, Adam). No inner validation split, so one step = about the time /
//! 200. `predict_20000_cells`: class probabilities of 20,000 other resampled cells. Run with
//! `RAYON_NUM_THREADS=2`.

use std::path::PathBuf;

use cellident_io::CsrMatrix;
use cellident_metadata::{MetadataMlp, MlpParams};
use cellident_tensor::candle_core::Device;
use cellident_tensor::{Classifier, NoProgress};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `(cells [n, 2000] log-normalised, labels, classes)` drawn with replacement from the fixture.
fn cells(n: usize, seed: u64) -> (CsrMatrix, Vec<u32>, usize) {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    cellident_benches::resampled_pbmc_cells(&fixtures, n, seed).expect("fixture")
}

fn bench(c: &mut Criterion) {
    let (x, y, classes) = cells(12_800, 5);
    let params = MlpParams {
        max_epochs: 1,
        validation_fraction: 0.0,
        ..MlpParams::plain()
    };
    let mut g = c.benchmark_group("metadata_mlp_g2000");
    g.sample_size(10);
    g.bench_function("epoch_12800_cells_batch64", |b| {
        b.iter(|| {
            let mut m = MetadataMlp::new(params.clone(), Device::Cpu).expect("mlp");
            m.fit(&x, &y, classes, &mut NoProgress).expect("fit")
        })
    });
    let mut trained = MetadataMlp::new(params.clone(), Device::Cpu).expect("mlp");
    trained.fit(&x, &y, classes, &mut NoProgress).expect("fit");
    let (query, _, _) = cells(20_000, 6);
    g.throughput(Throughput::Elements(query.n_rows() as u64));
    g.bench_function("predict_20000_cells", |b| {
        b.iter(|| trained.predict_proba(&query).expect("predict"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Criterion: CICL training on real cells — the pbmc_10x_4k_top2000 fixture (1,000 cells x
//! 2,000 genes, normalised to 1e4 and logged), defaults of `CiclParams` (4 layers, batch 256).
//! `one_epoch` is `fit` with one epoch, one k-means start and no re-fit: one pass of four
//! batches (pseudo-label forward, two augmented forward+backward passes, two Adam groups) plus
//! the two no-gradient embeddings around it. `kmeans_1000x2000/k8_10_starts` is the k-means that
//! CICL runs on its `[cells, G]` embedding (first clustering, and the final k-means on h), here on
//! the logged genes: k = 8 (the fixture's cell types), 10 k-means++ starts, Lloyd to convergence.
//! Run with `RAYON_NUM_THREADS=2`.

use std::path::PathBuf;

use cellident_cicl::{Cicl, CiclParams};
use cellident_tensor::{DenseMatrix, NoProgress};
use criterion::{Criterion, criterion_group, criterion_main};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn fixture() -> DenseMatrix {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/pbmc_10x_4k_top2000");
    let mut d = cellident_io::read_mtx_folder(&dir).expect("fixture");
    cellident_preprocess::normalize_total(&mut d, 1e4).expect("normalize");
    cellident_preprocess::log1p(&mut d, false).expect("log1p");
    DenseMatrix::new(d.n_cells(), d.n_genes(), d.matrix().to_dense()).expect("dense")
}

fn bench(c: &mut Criterion) {
    let x = fixture();
    let params = CiclParams {
        epochs: 1,
        refit_every: 0,
        kmeans_restarts: 1,
        ..CiclParams::default()
    };
    let mut g = c.benchmark_group("cicl_1000x2000");
    g.sample_size(10);
    g.bench_function("one_epoch", |b| {
        b.iter(|| {
            let mut m = Cicl::from_params(&params).expect("params");
            m.fit(&x, 8, &mut NoProgress).expect("fit").labels
        })
    });
    g.finish();

    let kmeans = cellident_preprocess::KMeansParams::new(8, 0);
    let mut g = c.benchmark_group("kmeans_1000x2000");
    g.sample_size(10);
    g.bench_function("k8_10_starts", |b| {
        b.iter(|| {
            cellident_preprocess::kmeans(&x, &kmeans)
                .expect("kmeans")
                .inertia
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

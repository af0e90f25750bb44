//! Criterion: one CIC training epoch (methods.md §2: the classifier autoencoder G -> 2000 ->
//! 30 -> 2000 -> G with LogSigmoid, plus the code's classifier head; MSE + cross-entropy, Adam,
//! mini-batches of 64 as `CicParams::default`) on real data. Run with `RAYON_NUM_THREADS=2`.
//!
//! - `epoch_all_leukemia`: the all_leukemia fixture (128 bulk samples, RMA log2 intensities,
//!   target `BT`), the 1,000 most variable probes.
//! - `epoch_5000_cells`: 5,000 cells drawn with replacement from the pbmc_10x_4k_top2000 fixture
//!   (normalised to 1e4 and logged), the 1,000 most variable genes.
//!
//! Each iteration is `Cic::fit` with `max_epochs = 1` and the random start (the PCA start is a
//! one-off cost before the first epoch, measured by `pca_start_and_epoch_5000_cells` minus `epoch_5000_cells`): gene selection,
//! [0, 1] scaling and one pass over the data. `predict_20000_cells`: class probabilities (gene
//! selection, scaling, encoder, head) of 20,000 cells.

use std::path::PathBuf;

use candle_core::Device;
use cellident_cic::{Cic, CicInit, CicParams};
use cellident_io::CsrMatrix;
use cellident_tensor::{CheckParams, Classifier, NoProgress};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn fixture(name: &str) -> cellident_io::ExpressionDataset {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures")
        .join(name);
    cellident_io::read_mtx_folder(&dir).expect("fixture")
}

/// `(matrix, labels)` of the labelled rows of `d` in column `column`.
fn labelled(d: &cellident_io::ExpressionDataset, column: &str) -> (CsrMatrix, Vec<u32>, usize) {
    let names = d.obs().labels(column).expect("label column");
    let enc = cellident_preprocess::LabelEncoder::fit(&names).expect("labels");
    let codes = enc.transform(&names);
    let rows: Vec<usize> = (0..codes.len()).filter(|&i| codes[i].is_some()).collect();
    let y = rows.iter().map(|&i| codes[i].expect("kept")).collect();
    (d.matrix().select_rows(&rows), y, enc.classes.len())
}

fn one_epoch(init: CicInit) -> Cic {
    Cic::new(
        CicParams {
            max_epochs: 1,
            init,
            ..CicParams::default()
        }
        .check()
        .expect("params"),
        Device::Cpu,
    )
}

fn bench(c: &mut Criterion) {
    let (bulk, bulk_y, bulk_k) = labelled(&fixture("all_leukemia"), "BT");

    let mut d = fixture("pbmc_10x_4k_top2000");
    cellident_preprocess::normalize_total(&mut d, 1e4).expect("normalize");
    cellident_preprocess::log1p(&mut d, false).expect("log1p");
    let (cells, labels, sc_k) = labelled(&d, "label");
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let rows: Vec<usize> = (0..5000)
        .map(|_| rng.random_range(0..cells.n_rows()))
        .collect();
    let sc = cells.select_rows(&rows);
    let sc_y: Vec<u32> = rows.iter().map(|&i| labels[i]).collect();

    let mut g = c.benchmark_group("cic");
    g.sample_size(10);
    g.bench_function("epoch_all_leukemia", |b| {
        b.iter(|| {
            one_epoch(CicInit::Random)
                .fit(&bulk, &bulk_y, bulk_k, &mut NoProgress)
                .expect("fit")
        })
    });
    g.bench_function("epoch_5000_cells", |b| {
        b.iter(|| {
            one_epoch(CicInit::Random)
                .fit(&sc, &sc_y, sc_k, &mut NoProgress)
                .expect("fit")
        })
    });
    g.bench_function("pca_start_and_epoch_5000_cells", |b| {
        b.iter(|| {
            let mut m = one_epoch(CicInit::Pca);
            m.fit(&sc, &sc_y, sc_k, &mut NoProgress).expect("fit")
        })
    });
    // Prediction: class probabilities from the code of 20,000 cells (gene selection, scaling,
    // encoder, head) by a model trained one epoch on the 5,000.
    let mut trained = one_epoch(CicInit::Random);
    trained.fit(&sc, &sc_y, sc_k, &mut NoProgress).expect("fit");
    let query_rows: Vec<usize> = (0..20_000)
        .map(|_| rng.random_range(0..cells.n_rows()))
        .collect();
    let query = cells.select_rows(&query_rows);
    g.throughput(Throughput::Elements(query.n_rows() as u64));
    g.bench_function("predict_20000_cells", |b| {
        b.iter(|| trained.predict_proba(&query).expect("predict"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

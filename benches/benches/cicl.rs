//! Criterion: CICL training on real cells — the pbmc_10x_4k_top2000 fixture (1,000 cells x
//! 2,000 genes, normalised to 1e4 and logged), `CiclParams::paper()` (4 layers, batch 256,
//! dropout 0.2: the network whose epoch issue #8 compares with the PyTorch reference's; the
//! default since 2026-12-07 trains without dropout, so its epoch does a little less work).
//! `one_epoch` is `fit` with one epoch, one k-means start and no re-fit: one pass of four
//! batches (pseudo-label forward, two augmented forward+backward passes, two Adam groups) plus
//! the two no-gradient embeddings around it. `kmeans_1000x2000/k8_10_starts` is the k-means that
//! CICL runs on its `[cells, G]` embedding (first clustering, and the final k-means on h), here on
//! the logged genes: k = 8 (the fixture's cell types), 10 k-means++ starts, Lloyd to convergence.
//! `cicl_4000x2000/epoch` is issue #8's shape: 4,000 cells drawn with replacement from the
//! fixture's 1,000 real cells, and the time of the training epoch alone (from the `Start` to the
//! `Epoch` progress event of `fit`; the embeddings and k-means around it are not counted): 16
//! batches of 256 (the last 160), each a pseudo-label forward, two augmented forward+backward
//! passes and two Adam steps over 38 M parameters. One iteration builds a fresh model and takes
//! about half a minute, so this group runs for several minutes.
//! Run with `RAYON_NUM_THREADS=2`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cellident_cicl::{Cicl, CiclParams};
use cellident_tensor::{DenseMatrix, NoProgress, Progress, TrainEvent};
use criterion::{Criterion, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn fixture() -> DenseMatrix {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/pbmc_10x_4k_top2000");
    let mut d = cellident_io::read_mtx_folder(&dir).expect("fixture");
    cellident_preprocess::normalize_total(&mut d, 1e4).expect("normalize");
    cellident_preprocess::log1p(&mut d, false).expect("log1p");
    DenseMatrix::new(d.n_cells(), d.n_genes(), d.matrix().to_dense()).expect("dense")
}

/// Times the first epoch of a `fit`: from its `Start` event to its first `Epoch` event.
#[derive(Default)]
struct EpochTimer {
    started: Option<Instant>,
    epoch: Option<Duration>,
}

impl Progress for EpochTimer {
    fn event(&mut self, event: &TrainEvent) {
        match event {
            TrainEvent::Start { .. } => self.started = Some(Instant::now()),
            TrainEvent::Epoch(_) if self.epoch.is_none() => {
                self.epoch = self.started.map(|t| t.elapsed());
            }
            _ => {}
        }
    }
}

/// `n` rows drawn with replacement from `x` (seeded).
fn resample(x: &DenseMatrix, n: usize, seed: u64) -> DenseMatrix {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let rows: Vec<usize> = (0..n).map(|_| rng.random_range(0..x.n_rows)).collect();
    x.select_rows(&rows)
}

fn bench(c: &mut Criterion) {
    let x = fixture();
    let params = CiclParams {
        epochs: 1,
        refit_every: 0,
        kmeans_restarts: 1,
        ..CiclParams::paper()
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

    let cells_4000 = resample(&x, 4000, 1);
    let mut g = c.benchmark_group("cicl_4000x2000");
    g.sample_size(10);
    g.bench_function("epoch", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut m = Cicl::from_params(&params).expect("params");
                let mut timer = EpochTimer::default();
                m.fit(&cells_4000, 8, &mut timer).expect("fit");
                total += timer.epoch.expect("one epoch ran");
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

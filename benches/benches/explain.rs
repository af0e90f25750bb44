//! Criterion: attributing 10,000 cells x 2,000 genes (pbmc_10x_4k_top2000 cells, resampled)
//! through the metadata MLP's shape (2000 -> 512 -> 256 -> 128 -> 10, ReLU). DeepLIFT's target
//! is at most 3 forward+backward passes; `forward_backward` is one such pass (autograd input
//! gradients, weight gradients included, as in training). Integrated gradients with m = 50 run
//! batched on 1,000 cells.

use std::path::PathBuf;

use candle_core::{Device, Tensor, Var};
use cellident_explain::{Reference, deeplift, input_gradients, integrated_gradients};
use cellident_io::{CsrMatrix, read_mtx_folder};
use cellident_tensor::{
    Activation, DifferentiableClassifier, FeedForward, FeedForwardLayer, FeedForwardNet,
    mean_logits,
};
use criterion::{Criterion, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};

struct Mlp(FeedForwardNet);

impl FeedForward for Mlp {
    fn networks(&self) -> cellident_tensor::Result<Vec<FeedForwardNet>> {
        Ok(vec![self.0.clone()])
    }
}

impl DifferentiableClassifier for Mlp {
    fn logits(&self, x: &Tensor) -> cellident_tensor::Result<Tensor> {
        mean_logits(std::slice::from_ref(&self.0), x)
    }
}

fn mlp(genes: usize, rng: &mut rand::rngs::StdRng) -> Mlp {
    let dims = [genes, 512, 256, 128, 10];
    let mut layers = Vec::new();
    for (i, w) in dims.windows(2).enumerate() {
        let bound = 1.0 / (w[0] as f32).sqrt();
        let weight: Vec<f32> = (0..w[0] * w[1])
            .map(|_| rng.random_range(-bound..bound))
            .collect();
        let bias: Vec<f32> = (0..w[1]).map(|_| rng.random_range(-bound..bound)).collect();
        // Vars, so that the forward+backward pass computes weight gradients as training does.
        layers.push(FeedForwardLayer::Linear {
            weight: Var::from_vec(weight, (w[1], w[0]), &Device::Cpu)
                .expect("weight")
                .as_tensor()
                .clone(),
            bias: Some(
                Var::from_vec(bias, w[1], &Device::Cpu)
                    .expect("bias")
                    .as_tensor()
                    .clone(),
            ),
        });
        if i + 2 < dims.len() {
            layers.push(FeedForwardLayer::Activation(Activation::Relu));
        }
    }
    Mlp(FeedForwardNet { layers })
}

fn cells(n: usize, rng: &mut rand::rngs::StdRng) -> CsrMatrix {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/pbmc_10x_4k_top2000");
    let d = read_mtx_folder(&dir).expect("fixture");
    let rows: Vec<usize> = (0..n).map(|_| rng.random_range(0..d.n_cells())).collect();
    d.matrix().select_rows(&rows)
}

fn attributions(c: &mut Criterion) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let x = cells(10_000, &mut rng);
    let model = mlp(x.n_cols(), &mut rng);
    let targets: Vec<u32> = (0..x.n_rows()).map(|i| (i % 10) as u32).collect();
    let reference = Reference::mean_of(&x);
    let mut g = c.benchmark_group("explain_10000x2000");
    g.sample_size(10);
    g.bench_function("forward_backward", |b| {
        b.iter(|| input_gradients(&model, &x, &targets, &Device::Cpu).expect("gradients"))
    });
    g.bench_function("deeplift_rescale", |b| {
        b.iter(|| deeplift(&model, &x, &targets, &reference, &Device::Cpu).expect("deeplift"))
    });
    let rows: Vec<usize> = (0..1000).collect();
    let small = x.select_rows(&rows);
    g.bench_function("integrated_gradients_m50_1000_cells", |b| {
        b.iter(|| {
            integrated_gradients(
                &model,
                &small,
                &targets[..1000],
                &reference,
                50,
                &Device::Cpu,
            )
            .expect("ig")
        })
    });
    g.finish();
}

criterion_group!(benches, attributions);
criterion_main!(benches);

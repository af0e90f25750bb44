//! Criterion: the scanpy-style pipeline normalize_total -> log1p -> HVG (seurat, 2000) ->
//! scale (clip 10) -> PCA 50 on 10,000 and 100,000 resampled real cells x 2,000 genes.

use std::path::PathBuf;

use cellident_benches::resampled_counts;
use cellident_preprocess::pipeline::PipelineParams;
use cellident_preprocess::{HvgParams, PcaParams, Pipeline};
use criterion::{Criterion, criterion_group, criterion_main};

fn params() -> PipelineParams {
    PipelineParams {
        normalize_total: Some(1e4),
        log1p: true,
        hvg: Some(HvgParams {
            n_top_genes: 2000,
            ..Default::default()
        }),
        scale: Some(Some(10.0)),
        pca: Some(PcaParams {
            n_components: 50,
            ..Default::default()
        }),
    }
}

fn pipeline(c: &mut Criterion) {
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/pbmc_10x_4k_top2000");
    let mut g = c.benchmark_group("preprocess_pipeline");
    g.sample_size(10);
    for n in [10_000usize, 100_000] {
        let d = resampled_counts(&source, "label", n, 42).expect("resampled data");
        g.bench_function(format!("{n}_cells_2000_genes"), |b| {
            b.iter(|| Pipeline::fit(&d, &params()).expect("pipeline"))
        });
    }
    g.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);

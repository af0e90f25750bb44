//! Criterion: streaming a Parquet dataset of 100,000 resampled real cells x 2,000 genes in
//! batches of 1,024 cells, and reading the Matrix Market fixture. (The 1,000,000-cell figure
//! with peak RSS comes from the `stream_parquet` binary; see docs/benchmarks.md.)

use std::path::PathBuf;

use cellident_benches::write_resampled_counts;
use cellident_io::{ParquetDataset, read_mtx_folder};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

fn stream(c: &mut Criterion) {
    let dir = std::env::temp_dir().join("cellident-bench");
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("resampled_100k.parquet");
    if !path.exists() {
        write_resampled_counts(
            &fixtures().join("pbmc_10x_4k_top2000"),
            "label",
            100_000,
            &path,
            42,
        )
        .expect("make input");
    }
    let mut g = c.benchmark_group("parquet_stream");
    g.sample_size(10);
    g.throughput(Throughput::Elements(100_000));
    g.bench_function("100k_cells_batch_1024", |b| {
        b.iter(|| {
            let p = ParquetDataset::open(&path).expect("open");
            let mut n = 0;
            for batch in p.batches(1024, true).expect("batches") {
                n += batch.expect("batch").matrix.nnz();
            }
            n
        })
    });
    g.finish();

    let mut g = c.benchmark_group("import");
    g.sample_size(10);
    g.bench_function("mtx_folder_pbmc_10x_4k_1000_cells", |b| {
        b.iter(|| read_mtx_folder(&fixtures().join("pbmc_10x_4k_top2000")).expect("read"))
    });
    g.finish();
}

criterion_group!(benches, stream);
criterion_main!(benches);

//! Criterion: ARI + NMI on 1,000,000 and 10,000,000 labels (real pbmc68k labelings resampled).

use std::path::PathBuf;

use cellident_benches::resampled_label_pairs;
use cellident_metrics::Contingency;
use criterion::{Criterion, criterion_group, criterion_main};

fn ari_nmi(c: &mut Criterion) {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    let mut g = c.benchmark_group("ari_plus_nmi");
    g.sample_size(10);
    for n in [1_000_000usize, 10_000_000] {
        let (t, p) = resampled_label_pairs(&fixtures, n, 7).expect("labels");
        g.bench_function(format!("{n}_labels"), |b| {
            b.iter(|| {
                let ct = Contingency::new(&t, &p).expect("contingency");
                (ct.adjusted_rand_index(), ct.normalized_mutual_information())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, ari_nmi);
criterion_main!(benches);

//! Logistic regression against scikit-learn 1.9.1 on the pbmc68k_reduced fixture (700 cells x
//! 765 log-normalised genes, `bulk_labels` as sorted class codes):
//! `LogisticRegression(C=1.0, max_iter=10000, tol=1e-10).fit(X, y)`; the objective is strictly
//! convex, so both solvers must reach the same optimum.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use cellident_baselines::{LogisticRegression, LogisticRegressionParams};
use cellident_io::read_mtx_folder;
use cellident_preprocess::LabelEncoder;
use cellident_tensor::Classifier;

#[test]
fn reaches_the_scikit_learn_optimum() {
    let d = read_mtx_folder(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/pbmc68k_reduced"),
    )
    .unwrap();
    let labels = d.obs().labels("bulk_labels").unwrap();
    let enc = LabelEncoder::fit(&labels).unwrap();
    let y: Vec<u32> = enc
        .transform(&labels)
        .into_iter()
        .map(Option::unwrap)
        .collect();
    let mut m = LogisticRegression::new(LogisticRegressionParams {
        tol: 1e-6,
        ..Default::default()
    })
    .unwrap();
    m.fit_quiet(d.matrix(), &y, enc.classes.len()).unwrap();
    let p = m.predict_proba(d.matrix()).unwrap();
    // scikit-learn: training accuracy 1.0; predict_proba rows 0-2 (rounded to 1e-6).
    assert_eq!(
        cellident_metrics::accuracy(&y, &p.argmax_rows()).unwrap(),
        1.0
    );
    let want = [
        [
            0.996779, 1e-05, 4e-06, 2e-06, 1e-06, 4e-06, 1e-06, 3e-06, 0.0, 0.003195,
        ],
        [
            0.007653, 1.6e-05, 4e-06, 3.6e-05, 1e-06, 3e-06, 1e-06, 1e-06, 0.0, 0.992285,
        ],
        [
            2e-06, 1e-06, 2.2e-05, 2.3e-05, 2.9e-05, 4.4e-05, 0.996707, 0.003034, 0.00011, 2.9e-05,
        ],
    ];
    for (i, row) in want.iter().enumerate() {
        for (j, &w) in row.iter().enumerate() {
            let got = p.row(i)[j] as f64;
            assert!(
                (got - w).abs() < 2e-4,
                "cell {i}, class {j}: {got} vs scikit-learn {w}"
            );
        }
    }
}

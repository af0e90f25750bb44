//! Every metric against scikit-learn 1.9.1 (Python 3.11, numpy 2.x). Each expected value is
//! the repr of the call written beside it; tolerance 1e-9 absolute.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]

use cellident_metrics::*;

fn close(got: f64, want: f64) {
    assert!(
        (got - want).abs() <= 1e-9,
        "got {got:?}, scikit-learn {want:?}"
    );
}

/// (name, truth, pred, ARI, NMI, AMI, Hungarian ACC)
/// ARI = adjusted_rand_score(t, p); NMI = normalized_mutual_info_score(t, p);
/// AMI = adjusted_mutual_info_score(t, p); ACC = contingency_matrix + linear_sum_assignment(maximize=True).
#[allow(clippy::type_complexity)]
const CASES: &[(&str, &[u32], &[u32], f64, f64, f64, f64)] = &[
    (
        "permuted",
        &[0, 0, 1, 1, 2, 2, 2, 3],
        &[1, 1, 0, 0, 2, 2, 3, 3],
        0.6037735849056604,
        0.847819798936787,
        0.6578662492646182,
        0.875,
    ),
    (
        "one_cluster",
        &[0, 0, 1, 1, 2, 2],
        &[0, 0, 0, 0, 0, 0],
        0.0,
        0.0,
        0.0,
        0.3333333333333333,
    ),
    (
        "singletons",
        &[0, 0, 1, 1, 2, 2],
        &[0, 1, 2, 3, 4, 5],
        0.0,
        0.7601875334318686,
        6.406853007629838e-16,
        0.5,
    ),
    (
        "unequal_sets",
        &[0, 0, 0, 1, 1, 2, 2, 2, 2],
        &[5, 7, 7, 9, 9, 9, 11, 11, 5],
        0.21052631578947367,
        0.5717826706954658,
        0.28863482837839866,
        0.6666666666666666,
    ),
    ("both_one", &[3, 3, 3], &[7, 7, 7], 1.0, 1.0, 1.0, 1.0),
];

#[test]
fn clustering_scores_match_sklearn() {
    for &(name, t, p, ari, nmi, ami, acc) in CASES {
        let s = clustering_scores(t, p).unwrap();
        eprintln!("{name}: {s:?}");
        close(s.ari, ari);
        close(s.nmi, nmi);
        close(s.ami, ami);
        close(s.acc, acc);
        close(adjusted_rand_index(t, p).unwrap(), ari);
        close(normalized_mutual_information(t, p).unwrap(), nmi);
        close(adjusted_mutual_information(t, p).unwrap(), ami);
        close(clustering_accuracy(t, p).unwrap(), acc);
    }
}

fn pbmc68k_labels() -> (Vec<u32>, Vec<u32>) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/pbmc68k_reduced/obs.csv.gz");
    let text = {
        use std::io::Read;
        let mut s = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
            .read_to_string(&mut s)
            .unwrap();
        s
    };
    let mut rows: Vec<(String, u32)> = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        rows.push((f[1].to_string(), f[2].parse().unwrap()));
    }
    let mut classes: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    classes.sort();
    classes.dedup();
    let t = rows
        .iter()
        .map(|r| classes.binary_search(&r.0).unwrap() as u32)
        .collect();
    let p = rows.iter().map(|r| r.1).collect();
    (t, p)
}

#[test]
fn real_labels_bulk_vs_louvain_match_sklearn() {
    // t = pd.Categorical(obs.bulk_labels).codes; p = obs.louvain (fixtures/pbmc68k_reduced)
    let (t, p) = pbmc68k_labels();
    assert_eq!(t.len(), 700);
    let s = clustering_scores(&t, &p).unwrap();
    close(s.ari, 0.4147795455021274);
    close(s.nmi, 0.6174435999754219);
    close(s.ami, 0.6041008199271367);
    close(s.acc, 0.5485714285714286);
}

#[test]
fn classification_scores_match_sklearn() {
    // Class 4 appears only in the predictions; class 3 is never predicted correctly.
    let t = [0, 0, 0, 1, 1, 2, 2, 2, 3];
    let p = [0, 1, 0, 1, 1, 2, 4, 2, 2];
    close(accuracy(&t, &p).unwrap(), 0.6666666666666666); // accuracy_score
    close(balanced_accuracy(&t, &p).unwrap(), 0.5833333333333333); // balanced_accuracy_score
    close(f1_macro(&t, &p).unwrap(), 0.4533333333333333); // f1_score(average='macro', zero_division=0)
    close(f1_weighted(&t, &p).unwrap(), 0.6666666666666666); // f1_score(average='weighted', zero_division=0)
    // precision_recall_fscore_support(t, p, zero_division=0)
    let r = classification_report(&t, &p).unwrap();
    assert_eq!(r.labels, vec![0, 1, 2, 3, 4]);
    for (got, want) in r
        .precision
        .iter()
        .zip([1.0, 2.0 / 3.0, 2.0 / 3.0, 0.0, 0.0])
    {
        close(*got, want);
    }
    for (got, want) in r.recall.iter().zip([2.0 / 3.0, 1.0, 2.0 / 3.0, 0.0, 0.0]) {
        close(*got, want);
    }
    for (got, want) in r.f1.iter().zip([0.8, 0.8, 2.0 / 3.0, 0.0, 0.0]) {
        close(*got, want);
    }
    assert_eq!(r.support, vec![3, 2, 3, 1, 0]);
    // confusion_matrix(t, p)
    let (labels, m) = confusion_matrix(&t, &p).unwrap();
    assert_eq!(labels, vec![0, 1, 2, 3, 4]);
    assert_eq!(
        m,
        vec![
            vec![2, 1, 0, 0, 0],
            vec![0, 2, 0, 0, 0],
            vec![0, 0, 2, 0, 1],
            vec![0, 0, 1, 0, 0],
            vec![0, 0, 0, 0, 0]
        ]
    );
}

#[test]
fn silhouette_matches_sklearn() {
    // silhouette_score([[0,0],[0,1],[5,5],[5,6],[10,0]], [0,0,1,1,2])  (a singleton cluster scores 0)
    let x = [0.0, 0.0, 0.0, 1.0, 5.0, 5.0, 5.0, 6.0, 10.0, 0.0];
    close(
        silhouette_score(&x, 2, &[0, 0, 1, 1, 2]).unwrap(),
        0.6868685568070343,
    );
    let err = silhouette_score(&x, 2, &[0, 0, 0, 0, 0])
        .unwrap_err()
        .to_string();
    assert!(err.contains("number of labels is 1"), "{err}");
}

#[test]
fn empty_and_mismatched_inputs_are_errors() {
    assert_eq!(
        adjusted_rand_index(&[], &[]).unwrap_err(),
        MetricError::Empty
    );
    assert_eq!(accuracy(&[], &[]).unwrap_err(), MetricError::Empty);
    assert_eq!(
        normalized_mutual_information(&[1, 2], &[1]).unwrap_err(),
        MetricError::LengthMismatch { truth: 2, pred: 1 }
    );
    assert!(f1_macro(&[0], &[0, 1]).is_err());
    assert!(silhouette_score(&[], 2, &[]).is_err());
}

#[test]
fn large_sparse_label_values_are_handled() {
    // Labels need not be small: same partition as "permuted" with huge ids.
    let t: Vec<u32> = [0, 0, 1, 1, 2, 2, 2, 3]
        .iter()
        .map(|&x| x * 1_000_000_000)
        .collect();
    let p: Vec<u32> = [1, 1, 0, 0, 2, 2, 3, 3]
        .iter()
        .map(|&x| 4_000_000_000 - x)
        .collect();
    close(adjusted_rand_index(&t, &p).unwrap(), 0.6037735849056604);
}

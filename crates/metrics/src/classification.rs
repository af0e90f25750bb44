//! Classification scores. Labels are the union of true and predicted classes, sorted
//! (`sklearn.utils.multiclass.unique_labels`); `zero_division` gives 0.

use serde::Serialize;

use crate::Result;
use crate::contingency::{Contingency, check_pair};

/// Precision, recall, F1 and support of every class.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassReport {
    /// The classes, sorted (union of true and predicted).
    pub labels: Vec<u32>,
    pub precision: Vec<f64>,
    pub recall: Vec<f64>,
    pub f1: Vec<f64>,
    /// Number of true samples of each class.
    pub support: Vec<u64>,
}

/// Per-class true positives, predicted counts and true counts over the label union.
struct LabelCounts {
    labels: Vec<u32>,
    tp: Vec<u64>,
    predicted: Vec<u64>,
    actual: Vec<u64>,
}

fn counts(truth: &[u32], pred: &[u32]) -> Result<LabelCounts> {
    check_pair(truth, pred)?;
    let mut labels: Vec<u32> = truth.iter().chain(pred).copied().collect();
    labels.sort_unstable();
    labels.dedup();
    let pos = |l: u32| labels.binary_search(&l).unwrap_or(0);
    let k = labels.len();
    let (mut tp, mut predicted, mut actual) = (vec![0u64; k], vec![0u64; k], vec![0u64; k]);
    for (&t, &p) in truth.iter().zip(pred) {
        let (ti, pi) = (pos(t), pos(p));
        actual[ti] += 1;
        predicted[pi] += 1;
        if ti == pi {
            tp[ti] += 1;
        }
    }
    Ok(LabelCounts {
        labels,
        tp,
        predicted,
        actual,
    })
}

/// Per-class precision, recall, F1 and support (`precision_recall_fscore_support`).
pub fn classification_report(truth: &[u32], pred: &[u32]) -> Result<ClassReport> {
    let LabelCounts {
        labels,
        tp,
        predicted,
        actual,
    } = counts(truth, pred)?;
    let div = |a: f64, b: f64| if b == 0.0 { 0.0 } else { a / b };
    let precision = tp
        .iter()
        .zip(&predicted)
        .map(|(&t, &p)| div(t as f64, p as f64))
        .collect();
    let recall = tp
        .iter()
        .zip(&actual)
        .map(|(&t, &a)| div(t as f64, a as f64))
        .collect();
    // F1 = 2 tp / (2 tp + fn + fp), as scikit-learn >= 1.3 computes F-beta.
    let f1 = (0..labels.len())
        .map(|i| {
            let (t, fp, fn_) = (
                tp[i] as f64,
                (predicted[i] - tp[i]) as f64,
                (actual[i] - tp[i]) as f64,
            );
            div(2.0 * t, 2.0 * t + fn_ + fp)
        })
        .collect();
    Ok(ClassReport {
        labels,
        precision,
        recall,
        f1,
        support: actual,
    })
}

/// Fraction of exact matches (`accuracy_score`).
pub fn accuracy(truth: &[u32], pred: &[u32]) -> Result<f64> {
    check_pair(truth, pred)?;
    let hits = truth.iter().zip(pred).filter(|(a, b)| a == b).count();
    Ok(hits as f64 / truth.len() as f64)
}

/// Mean recall over the classes present in `truth` (`balanced_accuracy_score`).
pub fn balanced_accuracy(truth: &[u32], pred: &[u32]) -> Result<f64> {
    let LabelCounts { tp, actual, .. } = counts(truth, pred)?;
    let recalls: Vec<f64> = tp
        .iter()
        .zip(&actual)
        .filter(|(_, a)| **a > 0)
        .map(|(&t, &a)| t as f64 / a as f64)
        .collect();
    Ok(recalls.iter().sum::<f64>() / recalls.len() as f64)
}

/// Unweighted mean of the per-class F1 scores (`f1_score(average="macro")`).
pub fn f1_macro(truth: &[u32], pred: &[u32]) -> Result<f64> {
    let r = classification_report(truth, pred)?;
    Ok(r.f1.iter().sum::<f64>() / r.f1.len() as f64)
}

/// Support-weighted mean of the per-class F1 scores (`f1_score(average="weighted")`).
pub fn f1_weighted(truth: &[u32], pred: &[u32]) -> Result<f64> {
    let r = classification_report(truth, pred)?;
    let total: u64 = r.support.iter().sum();
    if total == 0 {
        return Ok(0.0);
    }
    Ok(r.f1
        .iter()
        .zip(&r.support)
        .map(|(f, &s)| f * s as f64)
        .sum::<f64>()
        / total as f64)
}

/// Confusion matrix over the sorted label union: `(labels, counts)` with `counts[i][j]` the
/// number of samples of class `labels[i]` predicted as `labels[j]` (`confusion_matrix`).
pub fn confusion_matrix(truth: &[u32], pred: &[u32]) -> Result<(Vec<u32>, Vec<Vec<u64>>)> {
    check_pair(truth, pred)?;
    let mut labels: Vec<u32> = truth.iter().chain(pred).copied().collect();
    labels.sort_unstable();
    labels.dedup();
    let c = Contingency::new(truth, pred)?;
    let mut m = vec![vec![0u64; labels.len()]; labels.len()];
    for (i, &a) in c.classes.iter().enumerate() {
        for (j, &b) in c.clusters.iter().enumerate() {
            let (ri, ci) = (
                labels.binary_search(&a).unwrap_or(0),
                labels.binary_search(&b).unwrap_or(0),
            );
            m[ri][ci] = c.get(i, j);
        }
    }
    Ok((labels, m))
}

//! The regression check: compare a run with committed expected metrics.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Results;

/// Expected metrics (`fixtures/baseline.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Baseline {
    /// Allowed drop below the expected value, per metric name (`default` for the others).
    pub tolerance: BTreeMap<String, f64>,
    pub records: Vec<ExpectedRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExpectedRecord {
    pub dataset: String,
    pub task: String,
    pub target: String,
    pub method: String,
    pub seed: u64,
    #[serde(default)]
    pub fold: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<String>,
    pub metrics: BTreeMap<String, f64>,
}

impl Baseline {
    /// Expected values = the metrics of `run`, with one default tolerance.
    pub fn from_results(run: &Results, default_tolerance: f64) -> Baseline {
        Baseline {
            tolerance: [("default".to_string(), default_tolerance)]
                .into_iter()
                .collect(),
            records: run
                .records
                .iter()
                .map(|r| ExpectedRecord {
                    dataset: r.dataset.clone(),
                    task: r.task.clone(),
                    target: r.target.clone(),
                    method: r.method.clone(),
                    seed: r.seed,
                    fold: r.fold,
                    split: r.split.clone(),
                    metrics: r.metrics.clone(),
                })
                .collect(),
        }
    }
}

/// One line of the comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckLine {
    pub key: String,
    pub metric: String,
    pub expected: f64,
    pub got: Option<f64>,
    pub tolerance: f64,
}

impl CheckLine {
    fn failed(&self) -> bool {
        self.got
            .is_none_or(|g| !g.is_finite() || g < self.expected - self.tolerance)
    }
}

/// The comparison of a run with a baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckOutcome {
    pub lines: Vec<CheckLine>,
}

impl CheckOutcome {
    pub fn passed(&self) -> bool {
        !self.lines.iter().any(CheckLine::failed)
    }

    /// A readable diff: every failing metric with expected, got and the allowed drop.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let failed: Vec<&CheckLine> = self.lines.iter().filter(|l| l.failed()).collect();
        if failed.is_empty() {
            return format!(
                "all {} expected metrics within tolerance\n",
                self.lines.len()
            );
        }
        s.push_str(&format!(
            "{} of {} expected metrics regressed:\n",
            failed.len(),
            self.lines.len()
        ));
        for l in failed {
            match l.got {
                Some(g) => s.push_str(&format!(
                    "  {} {}: expected >= {:.4} - {:.4}, got {:.4} ({:+.4})\n",
                    l.key,
                    l.metric,
                    l.expected,
                    l.tolerance,
                    g,
                    g - l.expected
                )),
                None => s.push_str(&format!(
                    "  {} {}: expected {:.4}, missing from this run\n",
                    l.key, l.metric, l.expected
                )),
            }
        }
        s
    }
}

/// Compares `run` with `expected`: a metric fails when it is missing or falls below its
/// expected value by more than the tolerance. Improvements never fail.
pub fn compare(expected: &Baseline, run: &Results) -> CheckOutcome {
    let default_tol = expected.tolerance.get("default").copied().unwrap_or(0.0);
    let mut lines = Vec::new();
    for e in &expected.records {
        let found = run.records.iter().find(|r| {
            r.dataset == e.dataset
                && r.task == e.task
                && r.target == e.target
                && r.method == e.method
                && r.seed == e.seed
                && r.fold == e.fold
                && r.split == e.split
        });
        let key = format!(
            "{}/{}/{}/{} seed {}{}{}",
            e.dataset,
            e.task,
            e.target,
            e.method,
            e.seed,
            e.split
                .as_ref()
                .map(|s| format!(" {s}"))
                .unwrap_or_default(),
            e.fold.map(|f| format!(" fold {f}")).unwrap_or_default()
        );
        for (metric, &value) in &e.metrics {
            lines.push(CheckLine {
                key: key.clone(),
                metric: metric.clone(),
                expected: value,
                got: found.and_then(|r| r.metrics.get(metric).copied()),
                tolerance: expected
                    .tolerance
                    .get(metric)
                    .copied()
                    .unwrap_or(default_tol),
            });
        }
    }
    CheckOutcome { lines }
}

#[cfg(test)]
mod tests {
    use super::super::Record;
    use super::*;

    fn run_with(ari: f64) -> Results {
        Results {
            records: vec![Record {
                dataset: "d".into(),
                task: "cluster".into(),
                target: "label".into(),
                method: "kmeans".into(),
                seed: 0,
                fold: None,
                split: None,
                metrics: [("ari".to_string(), ari)].into_iter().collect(),
                train_seconds: 0.0,
                predict_seconds: 0.0,
                peak_rss_bytes: None,
                config: serde_json::Value::Null,
            }],
            pending: vec![],
            failed: vec![],
        }
    }

    fn baseline(ari: f64) -> Baseline {
        Baseline {
            tolerance: [("default".to_string(), 0.02)].into_iter().collect(),
            records: vec![ExpectedRecord {
                dataset: "d".into(),
                task: "cluster".into(),
                target: "label".into(),
                method: "kmeans".into(),
                seed: 0,
                fold: None,
                split: None,
                metrics: [("ari".to_string(), ari)].into_iter().collect(),
            }],
        }
    }

    #[test]
    fn a_drop_beyond_tolerance_fails_with_a_readable_diff() {
        let outcome = compare(&baseline(0.80), &run_with(0.70));
        assert!(!outcome.passed());
        let text = outcome.render();
        assert!(
            text.contains("d/cluster/label/kmeans seed 0 ari")
                && text.contains("got 0.7000")
                && text.contains("-0.1000"),
            "{text}"
        );
    }

    #[test]
    fn drops_within_tolerance_and_improvements_pass() {
        assert!(compare(&baseline(0.80), &run_with(0.79)).passed());
        assert!(compare(&baseline(0.80), &run_with(0.95)).passed());
    }

    #[test]
    fn a_missing_record_fails() {
        let mut b = baseline(0.5);
        b.records[0].method = "cicl".into();
        let outcome = compare(&b, &run_with(0.9));
        assert!(!outcome.passed());
        assert!(outcome.render().contains("missing from this run"));
    }
}

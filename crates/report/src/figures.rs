//! The report's figures, made from the records of a run and the tables it wrote: per-task
//! metric bars per method, training-loss curves, confusion matrices of the annotators, the
//! N-ACT salient-gene heatmap, and (drawn by the tasks themselves) the 2-D views of CIC codes
//! and CICL embeddings. Files go to `<out>/plots/` and `<out>/<dataset>/<target>/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::{Record, ReportError, Result, Results, plots};

/// A figure for the report: caption and path relative to the output folder.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub caption: String,
    pub path: String,
}

/// The headline metric of each task's bar chart(s), for records of the given split kind
/// (`None`: single-split records; otherwise stratified folds, averaged).
const BARS: [(&str, &str); 5] = [
    ("annotate", "accuracy"),
    ("cluster", "ari"),
    ("embed", "accuracy"),
    ("embed", "reconstruction_spearman"),
    ("metadata", "accuracy"),
];

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn relative(out: &Path, path: &Path) -> String {
    path.strip_prefix(out)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

/// Records that score the whole method on a dataset: single-split runs and stratified folds
/// (not leave-one-group-out or leave-one-type-out).
fn headline(x: &Record) -> bool {
    x.split
        .as_deref()
        .is_none_or(|s| s.starts_with("stratified"))
}

pub fn make(results: &Results, out: &Path) -> Result<Vec<Figure>> {
    let mut figures = Vec::new();
    let plots_dir = out.join("plots");
    for (task, metric) in BARS {
        // (dataset:target) -> method -> values
        let mut table: BTreeMap<String, BTreeMap<String, Vec<f64>>> = BTreeMap::new();
        let mut methods: Vec<String> = Vec::new();
        for x in results
            .records
            .iter()
            .filter(|x| x.task == task && headline(x))
        {
            if let Some(&v) = x.metrics.get(metric) {
                let group = format!("{}:{}", x.dataset, x.target);
                table
                    .entry(group)
                    .or_default()
                    .entry(x.method.clone())
                    .or_default()
                    .push(v);
                if !methods.contains(&x.method) {
                    methods.push(x.method.clone());
                }
            }
        }
        if table.is_empty() {
            continue;
        }
        let groups: Vec<String> = table.keys().cloned().collect();
        let series: Vec<(String, Vec<Option<f64>>)> = methods
            .iter()
            .map(|m| {
                let values = groups
                    .iter()
                    .map(|g| {
                        table[g]
                            .get(m)
                            .map(|v| v.iter().sum::<f64>() / v.len() as f64)
                    })
                    .collect();
                (m.clone(), values)
            })
            .collect();
        let path = plots_dir.join(format!("{task}_{metric}.svg"));
        plots::grouped_bars(
            &path,
            &format!("{task}: {metric} per dataset (mean over folds)"),
            metric,
            &groups,
            &series,
        )?;
        figures.push(Figure {
            caption: format!("{task}: {metric} by method"),
            path: relative(out, &path),
        });
    }
    figures.extend(loss_curves(results, out, &plots_dir)?);
    figures.extend(confusions(results, out, &plots_dir)?);
    figures.extend(salient_heatmaps(results, out)?);
    // The 2-D views are drawn by the cluster and embed tasks beside their tables.
    for x in results.records.iter().filter(|x| x.seed == 0) {
        for (file, what) in [
            ("cicl_embedding_2d.svg", "CICL embedding"),
            ("cic_codes_2d.svg", "CIC codes"),
        ] {
            let p = out.join(&x.dataset).join(&x.target).join(file);
            let rel = relative(out, &p);
            if p.exists() && !figures.iter().any(|f| f.path == rel) {
                figures.push(Figure {
                    caption: format!("{what}, {} ({}), first two PCs", x.dataset, x.target),
                    path: rel,
                });
            }
        }
    }
    Ok(figures)
}

/// One chart per (dataset, task, target): each method's training loss over epochs divided by
/// its first-epoch loss (the methods' losses have different scales), seed 0, first fold.
fn loss_curves(results: &Results, out: &Path, dir: &Path) -> Result<Vec<Figure>> {
    type Key = (String, String, String);
    let mut groups: BTreeMap<Key, Vec<(String, Vec<f64>)>> = BTreeMap::new();
    for x in results
        .records
        .iter()
        .filter(|x| x.seed == 0 && x.fold.unwrap_or(0) == 0 && headline(x))
    {
        let Some(curve) = x.config.get("loss_curve").and_then(|v| v.as_array()) else {
            continue;
        };
        let values: Vec<f64> = curve.iter().filter_map(|v| v.as_f64()).collect();
        let Some(&first) = values.first() else {
            continue;
        };
        if values.len() < 2 || first == 0.0 || !first.is_finite() {
            continue;
        }
        let key = (x.dataset.clone(), x.task.clone(), x.target.clone());
        let entry = groups.entry(key).or_default();
        if !entry.iter().any(|(m, _)| *m == x.method) {
            entry.push((x.method.clone(), values.iter().map(|v| v / first).collect()));
        }
    }
    let mut figures = Vec::new();
    for ((dataset, task, target), series) in groups {
        let path = dir.join(format!(
            "loss_{}_{}_{}.svg",
            slug(&dataset),
            task,
            slug(&target)
        ));
        plots::lines(
            &path,
            &format!("{dataset} ({task}, {target}): training loss"),
            "epoch",
            "loss / first-epoch loss",
            &series,
        )?;
        figures.push(Figure {
            caption: format!("training loss, {dataset} {task}"),
            path: relative(out, &path),
        });
    }
    Ok(figures)
}

/// Row-normalised test-set confusion matrices of the annotators (rows: true type).
fn confusions(results: &Results, out: &Path, dir: &Path) -> Result<Vec<Figure>> {
    let mut figures = Vec::new();
    for x in results
        .records
        .iter()
        .filter(|x| x.task == "annotate" && x.seed == 0)
    {
        let (Some(m), Some(classes)) = (
            x.config.get("confusion").and_then(|v| v.as_array()),
            x.config.get("classes").and_then(|v| v.as_array()),
        ) else {
            continue;
        };
        let classes: Vec<String> = classes
            .iter()
            .filter_map(|c| c.as_str().map(String::from))
            .collect();
        let k = classes.len();
        let mut values = Vec::with_capacity(k * k);
        for row in m {
            let row: Vec<f64> = row
                .as_array()
                .map(|r| r.iter().filter_map(|v| v.as_f64()).collect())
                .unwrap_or_default();
            let total: f64 = row.iter().sum();
            values.extend(
                row.iter()
                    .map(|v| if total > 0.0 { v / total } else { 0.0 }),
            );
        }
        if values.len() != k * k {
            continue;
        }
        let path = dir.join(format!(
            "confusion_{}_{}_{}.svg",
            slug(&x.dataset),
            slug(&x.target),
            x.method
        ));
        plots::heatmap(
            &path,
            &format!(
                "{} {} on {} (rows: true, fraction per row)",
                x.method, x.target, x.dataset
            ),
            &classes,
            &classes,
            &values,
        )?;
        figures.push(Figure {
            caption: format!("confusion matrix, {} on {}", x.method, x.dataset),
            path: relative(out, &path),
        });
    }
    Ok(figures)
}

/// N-ACT's salient genes: cell types × the union of each type's top 3 genes, coloured by the
/// gene's summed attention in that type's ranking (blank where it is not in the top 25).
fn salient_heatmaps(results: &Results, out: &Path) -> Result<Vec<Figure>> {
    let mut figures = Vec::new();
    let mut seen: Vec<PathBuf> = Vec::new();
    for x in results
        .records
        .iter()
        .filter(|x| x.method == "nact" && x.seed == 0)
    {
        let dir = out.join(&x.dataset).join(&x.target);
        let table = dir.join("nact_salient_genes.csv");
        if seen.contains(&table) || !table.exists() {
            continue;
        }
        seen.push(table.clone());
        // cell_type,rank,gene,score
        let csv_error = |source| ReportError::Csv {
            path: table.clone(),
            source,
        };
        let mut reader = csv::Reader::from_path(&table).map_err(csv_error)?;
        let mut rows: Vec<(String, usize, String, f64)> = Vec::new();
        for row in reader.deserialize() {
            rows.push(row.map_err(csv_error)?);
        }
        let mut types: Vec<String> = Vec::new();
        let mut genes: Vec<String> = Vec::new();
        for (t, rank, g, _) in &rows {
            if !types.contains(t) {
                types.push(t.clone());
            }
            if *rank <= 3 && !genes.contains(g) {
                genes.push(g.clone());
            }
        }
        if types.is_empty() || genes.is_empty() {
            continue;
        }
        let mut values = vec![0.0; types.len() * genes.len()];
        for (t, _, g, score) in &rows {
            if let (Some(i), Some(j)) = (
                types.iter().position(|v| v == t),
                genes.iter().position(|v| v == g),
            ) {
                values[i * genes.len() + j] = *score;
            }
        }
        let path = dir.join("nact_salient_genes.svg");
        plots::heatmap(
            &path,
            &format!("N-ACT salient genes, {} ({})", x.dataset, x.target),
            &types,
            &genes,
            &values,
        )?;
        figures.push(Figure {
            caption: format!("N-ACT salient genes per cell type, {}", x.dataset),
            path: relative(out, &path),
        });
    }
    Ok(figures)
}

/// A 2-D view of the rows of `x` (`[cells, dim]`): their first two principal components,
/// coloured by the true labels; written to `path`.
pub fn pca_view(
    path: &Path,
    title: &str,
    x: &cellident_tensor::DenseMatrix,
    labels: &[u32],
    classes: &[String],
) -> Result<()> {
    let params = cellident_preprocess::PcaParams {
        n_components: 2.min(x.n_cols).min(x.n_rows.saturating_sub(1)).max(1),
        ..Default::default()
    };
    let (_, scores) = cellident_preprocess::Pca::fit_transform(x.clone(), &params)?;
    let points: Vec<(f64, f64)> = (0..scores.n_rows)
        .map(|i| {
            let r = scores.row(i);
            (r[0] as f64, r.get(1).copied().unwrap_or(0.0) as f64)
        })
        .collect();
    plots::scatter(path, title, ("PC1", "PC2"), &points, labels, classes)
}

//! Highly variable genes, as scanpy's `pp.highly_variable_genes`.

use cellident_io::CsrMatrix;
use serde::{Deserialize, Serialize};

use crate::loess::loess_fit;
use crate::{PreprocessError, Result, ensure, gene_mean_var};

/// Which definition of "variable".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HvgFlavor {
    /// Seurat v1/v2 (scanpy's default): on log-normalised data; dispersion = var/mean of
    /// expm1(x), log-dispersions z-scored within 20 equal-width bins of log1p(mean).
    #[default]
    Seurat,
    /// Seurat v3: on raw counts; variance standardised by a LOESS fit of log10(var) on
    /// log10(mean) (span 0.3, degree 2), with values clipped at mean + sqrt(n) * sd.
    SeuratV3,
}

/// Parameters of [`highly_variable_genes`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HvgParams {
    pub flavor: HvgFlavor,
    /// How many genes to select.
    pub n_top_genes: usize,
    /// Seurat: number of mean bins (scanpy default 20).
    pub n_bins: usize,
    /// Seurat v3: LOESS span (scanpy default 0.3).
    pub span: f64,
}

impl Default for HvgParams {
    fn default() -> Self {
        HvgParams {
            flavor: HvgFlavor::Seurat,
            n_top_genes: 2000,
            n_bins: 20,
            span: 0.3,
        }
    }
}

/// Per-gene statistics and the selection.
#[derive(Debug, Clone, PartialEq)]
pub struct HvgResult {
    /// Selected gene columns, in increasing column order.
    pub selected: Vec<usize>,
    /// Seurat: log1p of the mean of expm1(x); Seurat v3: mean of the counts.
    pub means: Vec<f64>,
    /// Seurat: normalized log-dispersion (NaN where undefined); Seurat v3: normalized variance.
    pub score: Vec<f64>,
}

/// Selects the `n_top_genes` most variable genes of `m` (`[cells, genes]`).
///
/// `Seurat` expects log-normalised data (natural log), `SeuratV3` raw counts; a gene set larger
/// than the number of genes returns every gene. Ties at the cut-off are all kept (as scanpy does
/// for `seurat`), so `selected` may exceed `n_top_genes` by the number of tied genes.
pub fn highly_variable_genes(m: &CsrMatrix, params: &HvgParams) -> Result<HvgResult> {
    ensure(params.n_top_genes > 0, "n_top_genes", || {
        "must be at least 1".into()
    })?;
    ensure(params.n_bins > 0, "n_bins", || "must be at least 1".into())?;
    ensure(params.span > 0.0, "span", || {
        format!("must be > 0, got {}", params.span)
    })?;
    if m.n_rows() < 2 {
        return Err(PreprocessError::Data(
            "highly variable genes need at least 2 cells".into(),
        ));
    }
    match params.flavor {
        HvgFlavor::Seurat => seurat(m, params),
        HvgFlavor::SeuratV3 => seurat_v3(m, params),
    }
}

fn seurat(m: &CsrMatrix, params: &HvgParams) -> Result<HvgResult> {
    // Dispersion of expm1(x) (computed in f32, as a mapped copy would hold it).
    let (mean, var) = crate::gene_mean_var_of(m, |v| v.exp_m1() as f64);
    seurat_from_moments(mean, var, params)
}

/// The `seurat` selection from per-gene moments of `expm1(x)` (`x` log-normalised): `mean` and
/// unbiased `var` (ddof 1) over the cells. What [`highly_variable_genes`] computes in memory,
/// for moments gathered in one streaming pass ([`crate::stream::GeneMoments`]).
pub fn seurat_from_moments(
    mut mean: Vec<f64>,
    var: Vec<f64>,
    params: &HvgParams,
) -> Result<HvgResult> {
    ensure(params.n_top_genes > 0, "n_top_genes", || {
        "must be at least 1".into()
    })?;
    ensure(params.n_bins > 0, "n_bins", || "must be at least 1".into())?;
    ensure(mean.len() == var.len(), "moments", || {
        format!("{} means for {} variances", mean.len(), var.len())
    })?;
    let g = mean.len();
    let mut disp = vec![f64::NAN; g];
    for j in 0..g {
        if mean[j] == 0.0 {
            mean[j] = 1e-12;
        }
        let d = var[j] / mean[j];
        disp[j] = if d == 0.0 { f64::NAN } else { d.ln() };
        mean[j] = mean[j].ln_1p();
    }
    let bins = equal_width_bins(&mean, params.n_bins);
    // Mean and sample std (ddof 1) of the non-NaN dispersions of each bin (pandas groupby).
    let nb = params.n_bins;
    let (mut cnt, mut sum) = (vec![0usize; nb], vec![0f64; nb]);
    for j in 0..g {
        if !disp[j].is_nan() {
            cnt[bins[j]] += 1;
            sum[bins[j]] += disp[j];
        }
    }
    let mut avg: Vec<f64> = (0..nb)
        .map(|b| {
            if cnt[b] > 0 {
                sum[b] / cnt[b] as f64
            } else {
                f64::NAN
            }
        })
        .collect();
    let mut ss = vec![0f64; nb];
    for j in 0..g {
        if !disp[j].is_nan() {
            ss[bins[j]] += (disp[j] - avg[bins[j]]).powi(2);
        }
    }
    let mut dev: Vec<f64> = (0..nb)
        .map(|b| {
            if cnt[b] > 1 {
                (ss[b] / (cnt[b] - 1) as f64).sqrt()
            } else {
                f64::NAN
            }
        })
        .collect();
    // A bin with a single gene: scanpy sets dev = avg and avg = 0 (normalized dispersion 1).
    for b in 0..nb {
        if dev[b].is_nan() {
            dev[b] = avg[b];
            avg[b] = 0.0;
        }
    }
    let norm: Vec<f64> = (0..g)
        .map(|j| (disp[j] - avg[bins[j]]) / dev[bins[j]])
        .collect();
    // Cut-off: the n-th highest non-NaN normalized dispersion; keep every gene >= it.
    let mut finite: Vec<f64> = norm.iter().copied().filter(|v| !v.is_nan()).collect();
    if finite.is_empty() {
        return Err(PreprocessError::Data(
            "no gene has a defined dispersion (all genes constant?)".into(),
        ));
    }
    finite.sort_by(|a, b| b.total_cmp(a));
    let n = params.n_top_genes.min(finite.len());
    let cut = finite[n - 1];
    let selected = (0..g)
        .filter(|&j| !norm[j].is_nan() && norm[j] >= cut)
        .collect();
    Ok(HvgResult {
        selected,
        means: mean,
        score: norm,
    })
}

/// `pd.cut(values, bins=n)`: equal-width bins over [min, max], right-closed, with the lowest
/// edge lowered by 0.1% of the range; edges computed as `np.linspace` does.
fn equal_width_bins(values: &[f64], n: usize) -> Vec<usize> {
    let (mn, mx) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    if mn == mx {
        // Every value in one bin (pandas widens the range; the grouping is the same).
        return vec![0; values.len()];
    }
    let step = (mx - mn) / n as f64;
    let mut edges: Vec<f64> = (0..=n).map(|i| i as f64 * step + mn).collect();
    edges[n] = mx;
    edges[0] -= (mx - mn) * 0.001;
    values
        .iter()
        .map(|&v| {
            // First edge >= v (searchsorted side='left'), minus one.
            let k = edges.partition_point(|&e| e < v);
            k.saturating_sub(1).min(n - 1)
        })
        .collect()
}

fn seurat_v3(m: &CsrMatrix, params: &HvgParams) -> Result<HvgResult> {
    if !crate::looks_like_counts(m) {
        return Err(PreprocessError::Data(
            "seurat_v3 highly variable genes need raw counts (non-negative integers); use flavor seurat on log-normalised data".into(),
        ));
    }
    let n = m.n_rows();
    let (mean, var) = gene_mean_var(m);
    let g = mean.len();
    let not_const: Vec<usize> = (0..g).filter(|&j| var[j] > 0.0).collect();
    let x: Vec<f64> = not_const.iter().map(|&j| mean[j].log10()).collect();
    let y: Vec<f64> = not_const.iter().map(|&j| var[j].log10()).collect();
    let fitted = loess_fit(&x, &y, params.span, 2);
    let mut estimated = vec![0f64; g];
    for (k, &j) in not_const.iter().enumerate() {
        estimated[j] = fitted[k];
    }
    let reg_std: Vec<f64> = estimated.iter().map(|e| 10f64.powf(*e).sqrt()).collect();
    let vmax = (n as f64).sqrt();
    let clip: Vec<f64> = (0..g).map(|j| reg_std[j] * vmax + mean[j]).collect();
    let (mut sum, mut sq) = (vec![0f64; g], vec![0f64; g]);
    for (&c, &v) in m.indices().iter().zip(m.data()) {
        let c = c as usize;
        let v = (v as f64).min(clip[c]);
        sum[c] += v;
        sq[c] += v * v;
    }
    let nf = n as f64;
    let norm: Vec<f64> = (0..g)
        .map(|j| {
            (1.0 / ((nf - 1.0) * reg_std[j] * reg_std[j]))
                * (nf * mean[j] * mean[j] + sq[j] - 2.0 * sum[j] * mean[j])
        })
        .collect();
    // Rank by normalized variance (descending; stable on ties, like numpy's argsort on -x).
    let mut order: Vec<usize> = (0..g).collect();
    order.sort_by(|&a, &b| {
        let (va, vb) = (
            if norm[a].is_nan() {
                f64::NEG_INFINITY
            } else {
                norm[a]
            },
            if norm[b].is_nan() {
                f64::NEG_INFINITY
            } else {
                norm[b]
            },
        );
        vb.total_cmp(&va).then(a.cmp(&b))
    });
    let mut selected: Vec<usize> = order.into_iter().take(params.n_top_genes.min(g)).collect();
    selected.sort_unstable();
    Ok(HvgResult {
        selected,
        means: mean,
        score: norm,
    })
}

//! Preprocessing and training batches streamed from a Parquet dataset, for data that do not fit
//! in memory: the recipe's global statistics (HVG moments) are gathered in one pass over the
//! row groups, the fitted steps are replayed batch by batch ([`BatchTransform`]), and
//! [`ParquetBatchSource`] feeds a model's training loop through a seeded shuffle buffer of row
//! groups. Memory is bounded by the buffer, never by the number of cells.
//!
//! Streaming covers the sparse recipes every classifier starts from (normalize_total, log1p,
//! `seurat` HVG) and the dense steps after them (scaling, PCA): one pass over the file per
//! statistic — HVG moments, scaling moments, the scatter matrix of the PCA — then
//! [`transform_streaming`] scores the cells a batch at a time. `seurat_v3` needs the counts in
//! memory ([`crate::Pipeline::fit`]).

use cellident_io::{CsrMatrix, ParquetDataset, align_genes};
use cellident_tensor::candle_core::{Device, Tensor};
use cellident_tensor::{BatchSource, DenseMatrix, TensorError};

use crate::hvg::{HvgFlavor, seurat_from_moments};
use crate::pca::Pca;
use crate::pipeline::{Pipeline, PipelineParams, Step};
use crate::scale::Scaler;
use crate::split::LabelEncoder;
use crate::{PreprocessError, Result};

/// Row groups are read this many cells at a time by the statistics pass.
const PASS_BATCH: usize = 8192;

/// Per-gene mean and sum of squared deviations over cells, merged batch by batch (Chan et
/// al.'s pairwise update), in f64; implicit zeros count.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneMoments {
    n: usize,
    mean: Vec<f64>,
    m2: Vec<f64>,
}

impl GeneMoments {
    /// No cells yet, `n_genes` genes.
    pub fn new(n_genes: usize) -> Self {
        GeneMoments {
            n: 0,
            mean: vec![0.0; n_genes],
            m2: vec![0.0; n_genes],
        }
    }

    /// Cells seen.
    pub fn n_cells(&self) -> usize {
        self.n
    }

    /// Adds the cells of `m` (`[cells, genes]`), each stored value mapped through `f` first
    /// (`f(0)` must be 0: implicit zeros are not mapped).
    pub fn add(&mut self, m: &CsrMatrix, f: impl Fn(f32) -> f64) {
        let nb = m.n_rows();
        if nb == 0 {
            return;
        }
        let g = self.mean.len();
        let (mut sum, mut nnz) = (vec![0f64; g], vec![0usize; g]);
        for (&c, &v) in m.indices().iter().zip(m.data()) {
            sum[c as usize] += f(v);
            nnz[c as usize] += 1;
        }
        let nbf = nb as f64;
        let mean: Vec<f64> = sum.iter().map(|s| s / nbf).collect();
        let mut m2 = vec![0f64; g];
        for (&c, &v) in m.indices().iter().zip(m.data()) {
            let d = f(v) - mean[c as usize];
            m2[c as usize] += d * d;
        }
        // The implicit zeros' deviations.
        for ((s, &z), &mu) in m2.iter_mut().zip(&nnz).zip(&mean) {
            *s += (nb - z) as f64 * mu * mu;
        }
        self.merge(&GeneMoments { n: nb, mean, m2 });
    }

    /// Adds the cells summarised by `other` (same genes; Chan et al.'s pairwise merge).
    pub fn merge(&mut self, other: &GeneMoments) {
        if other.n == 0 {
            return;
        }
        let (na, nb) = (self.n as f64, other.n as f64);
        let n = na + nb;
        for j in 0..self.mean.len() {
            let delta = other.mean[j] - self.mean[j];
            self.mean[j] += delta * nb / n;
            self.m2[j] += other.m2[j] + delta * delta * na * nb / n;
        }
        self.n += other.n;
    }

    /// Per-gene mean, `[genes]`.
    pub fn means(&self) -> &[f64] {
        &self.mean
    }

    /// Per-gene sum of squared deviations from the mean, `[genes]`.
    pub fn sums_of_squares(&self) -> &[f64] {
        &self.m2
    }

    /// Per-gene mean and unbiased variance (ddof 1), as [`crate::gene_mean_var`].
    pub fn mean_var(&self) -> (Vec<f64>, Vec<f64>) {
        let var = self
            .m2
            .iter()
            .map(|&s| {
                if self.n > 1 {
                    s / (self.n - 1) as f64
                } else {
                    0.0
                }
            })
            .collect();
        (self.mean.clone(), var)
    }
}

/// Per-gene mean and the scatter matrix (sum over cells of the outer products of their
/// deviations from the mean, `[genes, genes]` row-major) of dense cells, merged batch by batch
/// in f64: what a PCA needs ([`crate::Pca::from_scatter`]), in one streamed pass. Memory
/// `8 genes^2` bytes: meant for the few thousand genes a model reads, not a whole transcriptome.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneScatter {
    n: usize,
    mean: Vec<f64>,
    scatter: Vec<f64>,
}

impl GeneScatter {
    /// No cells yet, `n_genes` genes.
    pub fn new(n_genes: usize) -> Self {
        GeneScatter {
            n: 0,
            mean: vec![0.0; n_genes],
            scatter: vec![0.0; n_genes * n_genes],
        }
    }

    pub fn n_cells(&self) -> usize {
        self.n
    }

    pub fn n_genes(&self) -> usize {
        self.mean.len()
    }

    /// Per-gene mean, `[genes]`.
    pub fn mean(&self) -> &[f64] {
        &self.mean
    }

    /// The scatter matrix, `[genes, genes]` row-major.
    pub fn scatter(&self) -> &[f64] {
        &self.scatter
    }

    /// Adds a batch of cells, `rows` = `[cells, genes]` row-major. The batch is centred on its
    /// own mean (so the f32 product loses little) and merged by Chan et al.'s update.
    pub fn add_dense(&mut self, rows: &[f32]) -> Result<()> {
        let g = self.mean.len();
        crate::ensure(g > 0 && rows.len().is_multiple_of(g), "rows", || {
            format!("{} values are not whole rows of {g} genes", rows.len())
        })?;
        let nb = rows.len() / g;
        if nb == 0 {
            return Ok(());
        }
        let mut mean_b = vec![0f64; g];
        for row in rows.chunks_exact(g) {
            for (m, &v) in mean_b.iter_mut().zip(row) {
                *m += v as f64;
            }
        }
        mean_b.iter_mut().for_each(|m| *m /= nb as f64);
        let centred: Vec<f32> = rows
            .chunks_exact(g)
            .flat_map(|row| {
                row.iter()
                    .zip(&mean_b)
                    .map(|(&v, &m)| (v as f64 - m) as f32)
            })
            .collect();
        let c = Tensor::from_vec(centred, (nb, g), &Device::Cpu)?;
        let s_b = c.t()?.matmul(&c)?.flatten_all()?.to_vec1::<f32>()?;
        let (na, nbf) = (self.n as f64, nb as f64);
        let n = na + nbf;
        let delta: Vec<f64> = mean_b.iter().zip(&self.mean).map(|(b, a)| b - a).collect();
        let w = na * nbf / n;
        for i in 0..g {
            let row = &mut self.scatter[i * g..(i + 1) * g];
            for (j, s) in row.iter_mut().enumerate() {
                *s += s_b[i * g + j] as f64 + delta[i] * delta[j] * w;
            }
        }
        for (m, d) in self.mean.iter_mut().zip(&delta) {
            *m += d * nbf / n;
        }
        self.n += nb;
        Ok(())
    }
}

/// The recipe of [`PipelineParams::log_hvg`], decided on the first cells of a streamed file
/// (its first row groups, up to 10,000 cells).
pub fn log_hvg_streaming(dataset: &ParquetDataset, n_top_genes: usize) -> Result<PipelineParams> {
    let mut parts = Vec::new();
    let mut cells = 0;
    for g in 0..dataset.n_row_groups() {
        if cells >= 10_000 {
            break;
        }
        let b = dataset.read_row_group(g)?;
        cells += b.matrix.n_rows();
        parts.push(b.matrix);
    }
    if cells == 0 {
        return Err(PreprocessError::Data(format!(
            "{} holds no cells",
            dataset.path().display()
        )));
    }
    Ok(PipelineParams::log_hvg_for(
        &CsrMatrix::vstack(&parts)?,
        n_top_genes,
    ))
}

/// Fits a recipe (normalize_total, log1p, `seurat` HVG, scaling, PCA) on every cell of `dataset`,
/// one pass over the file for each statistic (HVG moments, scaling moments, the PCA's scatter
/// matrix); the result equals [`Pipeline::fit`] on the same cells read into memory (the
/// moments agree to rounding; the PCA is [`crate::Pca::from_scatter`] of the scaled cells, the
/// same subspace iteration as in memory). Memory: one batch of cells and, with PCA, the
/// `[genes, genes]` scatter matrix in f64 (32 MB at 2,000 genes). `seurat_v3` is refused: it
/// ranks genes on the counts in memory. Values that contradict the recipe (negative or
/// non-integer values where counts are normalised) are reported with the file and the cells.
pub fn fit_pipeline_streaming(dataset: &ParquetDataset, p: &PipelineParams) -> Result<Pipeline> {
    if let Some(h) = &p.hvg
        && h.flavor != HvgFlavor::Seurat
    {
        return Err(PreprocessError::InvalidParam {
            name: "hvg",
            message: "streamed HVG selection uses the seurat flavour (seurat_v3 needs the \
                      counts in memory)"
                .into(),
        });
    }
    let mut steps = Vec::new();
    if let Some(t) = p.normalize_total {
        crate::ensure(t > 0.0 && t.is_finite(), "target_sum", || {
            format!("must be > 0, got {t}")
        })?;
        steps.push(Step::NormalizeTotal { target_sum: t });
    }
    if p.log1p {
        steps.push(Step::Log1p);
    }
    if let Some(hvg) = &p.hvg {
        // The seurat dispersion is that of expm1 of the logged values, as in memory.
        let moments = moments_pass(dataset, &steps, |v| v.exp_m1() as f64)?;
        if moments.n_cells() < 2 {
            return Err(PreprocessError::Data(
                "highly variable genes need at least 2 cells".into(),
            ));
        }
        let (mean, var) = moments.mean_var();
        let r = seurat_from_moments(mean, var, hvg)?;
        steps.push(Step::SelectGenes {
            genes: r
                .selected
                .iter()
                .map(|&j| dataset.gene_ids()[j].clone())
                .collect(),
        });
    }
    if let Some(clip) = p.scale {
        let (mean, var) = moments_pass(dataset, &steps, |v| v as f64)?.mean_var();
        steps.push(Step::Scale(Scaler::from_mean_var(mean, &var, clip)?));
    }
    if let Some(pp) = &p.pca {
        let transform = BatchTransform::new(
            &Pipeline {
                steps: steps.clone(),
            },
            dataset.gene_ids(),
            1.0,
        )?;
        let mut scatter = GeneScatter::new(transform.n_features_out());
        for_each_batch(
            dataset,
            |m| transform.apply_dense(m),
            |x, _| scatter.add_dense(&x.values),
        )?;
        steps.push(Step::Pca(Pca::from_scatter(&scatter, pp)?));
    }
    Ok(Pipeline { steps })
}

/// One pass over `dataset` through the sparse `steps`, gathering the per-gene moments of the
/// output with each stored value mapped through `f`.
fn moments_pass(
    dataset: &ParquetDataset,
    steps: &[Step],
    f: impl Fn(f32) -> f64 + Copy,
) -> Result<GeneMoments> {
    let transform = BatchTransform::new(
        &Pipeline {
            steps: steps.to_vec(),
        },
        dataset.gene_ids(),
        1.0,
    )?;
    let mut moments = GeneMoments::new(transform.n_genes_out());
    for_each_batch(
        dataset,
        |m| transform.apply(m),
        |x, _| {
            moments.add(&x, f);
            Ok(())
        },
    )?;
    Ok(moments)
}

/// One pass over every cell of `dataset`, `PASS_BATCH` cells at a time: each batch's matrix
/// through `apply` (an error names the file and the cells), then `use_batch` with the result
/// and the batch's cell ids.
fn for_each_batch<T>(
    dataset: &ParquetDataset,
    apply: impl Fn(CsrMatrix) -> Result<T>,
    mut use_batch: impl FnMut(T, Vec<String>) -> Result<()>,
) -> Result<()> {
    for batch in dataset.batches(PASS_BATCH, true)? {
        let b = batch?;
        let (first, n) = (b.first_cell, b.cell_ids.len());
        let x = apply(b.matrix).map_err(|e| {
            PreprocessError::Data(format!(
                "{}, cells {}..{}: {e}",
                dataset.path().display(),
                first,
                first + n
            ))
        })?;
        use_batch(x, b.cell_ids)?;
    }
    Ok(())
}

/// Every cell of `dataset` through a transform that ends dense (scaling or PCA; a sparse one is
/// densified), a batch at a time: the cell ids and `[cells, features]` (PC scores after a PCA,
/// scaled genes otherwise). Memory: the output plus one batch; at a million cells PC-50 scores
/// take 200 MB, where 2,000 scaled genes would take 8 GB.
pub fn transform_streaming(
    dataset: &ParquetDataset,
    transform: &BatchTransform,
) -> Result<(Vec<String>, DenseMatrix)> {
    let k = transform.n_features_out();
    let mut cell_ids = Vec::with_capacity(dataset.n_cells());
    let mut values = Vec::with_capacity(dataset.n_cells() * k);
    for_each_batch(
        dataset,
        |m| transform.apply_dense(m),
        |x, ids| {
            values.extend_from_slice(&x.values);
            cell_ids.extend(ids);
            Ok(())
        },
    )?;
    let n = cell_ids.len();
    Ok((cell_ids, DenseMatrix::new(n, k, values)?))
}

/// A fitted pipeline compiled for batches of one gene layout: each batch of cells
/// (`[cells, source genes]`) is normalised, logged and aligned to the selected genes
/// ([`BatchTransform::apply`], still sparse), then scaled and projected when the pipeline has
/// those steps ([`BatchTransform::apply_dense`]) — exactly as [`Pipeline::apply`] does for a
/// whole dataset.
#[derive(Debug, Clone)]
pub struct BatchTransform {
    target_sum: Option<f64>,
    log1p: bool,
    /// Source column of each output gene (`None`: absent, zeros); `None` keeps every gene.
    columns: Option<Vec<Option<usize>>>,
    n_genes_out: usize,
    scale: Option<Scaler>,
    pca: Option<Pca>,
}

impl BatchTransform {
    /// Compiles `pipeline` for data whose genes are `source_genes`; fewer than `min_overlap`
    /// of the pipeline's selected genes present is an error naming missing genes.
    pub fn new(pipeline: &Pipeline, source_genes: &[String], min_overlap: f64) -> Result<Self> {
        let mut t = BatchTransform {
            target_sum: None,
            log1p: false,
            columns: None,
            n_genes_out: source_genes.len(),
            scale: None,
            pca: None,
        };
        for step in &pipeline.steps {
            let sparse_open = t.columns.is_none() && !t.log1p && !t.is_dense();
            match step {
                Step::NormalizeTotal { target_sum } if sparse_open => {
                    t.target_sum = Some(*target_sum)
                }
                Step::Log1p if sparse_open => t.log1p = true,
                Step::SelectGenes { genes } if t.columns.is_none() && !t.is_dense() => {
                    let a = align_genes(genes, source_genes, min_overlap)?;
                    t.n_genes_out = genes.len();
                    t.columns = Some(a.columns);
                }
                Step::Scale(s) if !t.is_dense() && s.mean.len() == t.n_genes_out => {
                    t.scale = Some(s.clone())
                }
                Step::Pca(p) if t.pca.is_none() && p.n_genes == t.n_genes_out => {
                    t.pca = Some(p.clone())
                }
                other => {
                    return Err(PreprocessError::InvalidParam {
                        name: "pipeline",
                        message: format!(
                            "the step {} cannot be replayed batch by batch here (streaming \
                             covers normalize_total, log1p, gene selection, scaling and PCA, in \
                             that order, each fitted on the genes the step before it gives: {})",
                            step_name(other),
                            t.n_genes_out
                        ),
                    });
                }
            }
        }
        Ok(t)
    }

    /// Whether the pipeline ends in scaling or PCA (use [`BatchTransform::apply_dense`]).
    pub fn is_dense(&self) -> bool {
        self.scale.is_some() || self.pca.is_some()
    }

    /// Features of [`BatchTransform::apply_dense`]'s output: principal components after a
    /// PCA, genes otherwise.
    pub fn n_features_out(&self) -> usize {
        self.pca
            .as_ref()
            .map_or(self.n_genes_out, |p| p.n_components)
    }

    /// Transforms one batch `[cells, source genes]` through every step into dense
    /// `[cells, features]` (scaled genes, PC scores, or the sparse steps' output densified).
    pub fn apply_dense(&self, m: CsrMatrix) -> Result<DenseMatrix> {
        let x = self.apply_sparse(m)?;
        let x = match &self.scale {
            Some(s) => s.transform(&x)?,
            None => DenseMatrix::new(x.n_rows(), x.n_cols(), x.to_dense())?,
        };
        match &self.pca {
            Some(p) => p.transform(&x),
            None => Ok(x),
        }
    }

    /// Genes of the output.
    pub fn n_genes_out(&self) -> usize {
        self.n_genes_out
    }

    /// Transforms one batch `[cells, source genes]` into `[cells, output genes]` (the sparse
    /// steps; a pipeline that ends in scaling or PCA is refused: use
    /// [`BatchTransform::apply_dense`]).
    pub fn apply(&self, m: CsrMatrix) -> Result<CsrMatrix> {
        if self.is_dense() {
            return Err(PreprocessError::InvalidParam {
                name: "pipeline",
                message: "this pipeline ends in scaling or PCA, which give dense values; \
                          replay it with apply_dense"
                    .into(),
            });
        }
        self.apply_sparse(m)
    }

    /// The sparse steps: normalise, log, align to the selected genes.
    fn apply_sparse(&self, mut m: CsrMatrix) -> Result<CsrMatrix> {
        if let Some(target) = self.target_sum {
            if let Some(v) = m.data().iter().find(|v| **v < 0.0 || !v.is_finite()) {
                return Err(PreprocessError::Data(format!(
                    "normalize_total needs non-negative counts, found {v}"
                )));
            }
            let indptr = m.indptr().to_vec();
            let data = m.data_mut();
            for w in indptr.windows(2) {
                let row = &mut data[w[0]..w[1]];
                let total: f64 = row.iter().map(|&v| v as f64).sum();
                if total > 0.0 {
                    let factor = target / total;
                    for v in row {
                        *v = (*v as f64 * factor) as f32;
                    }
                }
            }
        }
        if self.log1p {
            if let Some(v) = m.data().iter().find(|v| **v <= -1.0) {
                return Err(PreprocessError::Data(format!(
                    "log1p needs values > -1, found {v}"
                )));
            }
            for v in m.data_mut() {
                *v = v.ln_1p();
            }
        }
        Ok(match &self.columns {
            Some(columns) => m.select_columns(columns),
            None => m,
        })
    }
}

fn step_name(s: &Step) -> &'static str {
    match s {
        Step::NormalizeTotal { .. } => "normalize_total",
        Step::Log1p => "log1p",
        Step::SelectGenes { .. } => "gene selection",
        Step::Scale(_) => "scale",
        Step::Pca(_) => "PCA",
    }
}

/// Training cells streamed from a Parquet dataset: each epoch visits the row groups in a
/// seeded random order, fills a shuffle buffer of about `buffer_cells` cells, shuffles the
/// cells inside it and cuts it into mini-batches (cells left over join the next buffer).
/// Cells without a label are skipped. A reader thread prepares the next row groups while the
/// model trains. Memory: one buffer of preprocessed sparse cells, up to two row groups read
/// ahead, and one dense batch.
#[derive(Debug)]
pub struct ParquetBatchSource {
    dataset: ParquetDataset,
    transform: BatchTransform,
    /// Class index of each cell of the file (`None`: unlabelled, skipped).
    labels: Vec<Option<u32>>,
    classes: LabelEncoder,
    n_labelled: usize,
    buffer_cells: usize,
    seed: u64,
}

impl ParquetBatchSource {
    /// Reads the labels (column `label_column`, obs only) and prepares the transform.
    pub fn new(
        dataset: ParquetDataset,
        transform: BatchTransform,
        label_column: &str,
        buffer_cells: usize,
        seed: u64,
    ) -> Result<Self> {
        crate::ensure(buffer_cells > 0, "buffer_cells", || {
            "must be at least 1".into()
        })?;
        // Models train on the sparse recipe's genes; a scaled or projected pipeline is not one.
        crate::ensure(!transform.is_dense(), "transform", || {
            "training batches come from the sparse steps (normalise, log, gene selection); \
             this pipeline ends in scaling or PCA"
                .into()
        })?;
        let mut names = Vec::with_capacity(dataset.n_cells());
        for batch in dataset.batches(65_536, false)? {
            let b = batch?;
            names.extend(b.obs.labels(label_column).map_err(|e| {
                PreprocessError::Data(format!("{}: {e}", dataset.path().display()))
            })?);
        }
        let classes = LabelEncoder::fit(&names)?;
        let labels = classes.transform(&names);
        let n_labelled = labels.iter().flatten().count();
        Ok(ParquetBatchSource {
            dataset,
            transform,
            labels,
            classes,
            n_labelled,
            buffer_cells,
            seed,
        })
    }

    /// The classes, in the order of the class indices.
    pub fn classes(&self) -> &LabelEncoder {
        &self.classes
    }

    /// The streamed file.
    pub fn dataset(&self) -> &ParquetDataset {
        &self.dataset
    }

    /// Row group `g` preprocessed, restricted to its labelled cells, with their labels.
    fn group(&self, g: usize) -> std::result::Result<(CsrMatrix, Vec<u32>), TensorError> {
        let b = self.dataset.read_row_group(g)?;
        let x = self
            .transform
            .apply(b.matrix)
            .map_err(|e| source_error(&self.dataset, b.first_cell, b.cell_ids.len(), e))?;
        let labels = &self.labels[b.first_cell..b.first_cell + x.n_rows()];
        let rows: Vec<usize> = (0..x.n_rows()).filter(|&i| labels[i].is_some()).collect();
        let y = rows.iter().filter_map(|&i| labels[i]).collect();
        let x = if rows.len() == x.n_rows() {
            x
        } else {
            x.select_rows(&rows)
        };
        Ok((x, y))
    }
}

fn source_error(d: &ParquetDataset, first: usize, n: usize, e: PreprocessError) -> TensorError {
    TensorError::Source(format!(
        "{}, cells {first}..{}: {e}",
        d.path().display(),
        first + n
    ))
}

impl BatchSource for ParquetBatchSource {
    fn n_genes(&self) -> usize {
        self.transform.n_genes_out()
    }

    fn n_cells(&self) -> usize {
        self.n_labelled
    }

    fn for_each_batch(
        &mut self,
        epoch: usize,
        batch_size: usize,
        device: &Device,
        visit: &mut dyn FnMut(&Tensor, &Tensor) -> cellident_tensor::Result<()>,
    ) -> cellident_tensor::Result<()> {
        use rand::seq::SliceRandom;
        let batch_size = batch_size.max(1);
        let mut rng = cellident_tensor::batch::rng_for(self.seed, 0x5EED_0000 + epoch as u64);
        let mut groups: Vec<usize> = (0..self.dataset.n_row_groups()).collect();
        groups.shuffle(&mut rng);
        let n_groups = groups.len();
        let genes = self.n_genes();
        let this: &ParquetBatchSource = self;
        // A reader thread reads and preprocesses the row groups, in the epoch's order, while
        // this thread trains on the current buffer: reading is single-threaded, and done in
        // turn with training it left one of the two cores idle for a sixth of a streamed
        // epoch. The channel holds one finished group, so memory is the buffer plus at most
        // two row groups. The batches are the same as reading in turn (same order, same rng).
        std::thread::scope(|scope| {
            let (sender, groups_read) = std::sync::mpsc::sync_channel(1);
            scope.spawn(move || {
                for g in groups {
                    let group = this.group(g);
                    let failed = group.is_err();
                    // A closed channel means training stopped (an error): stop reading.
                    if sender.send(group).is_err() || failed {
                        break;
                    }
                }
            });
            let next_group = || -> cellident_tensor::Result<(CsrMatrix, Vec<u32>)> {
                groups_read.recv().map_err(|_| {
                    TensorError::Source(format!(
                        "{}: the reader thread stopped early",
                        this.dataset.path().display()
                    ))
                })?
            };
            let mut carry: (Vec<CsrMatrix>, Vec<u32>) = (Vec::new(), Vec::new());
            let mut next = 0;
            // At least one batch per buffer: the carried cells (fewer than a batch) never fill
            // it alone, so every round reads a row group or ends the epoch.
            let target = this.buffer_cells.max(batch_size);
            while next < n_groups || !carry.1.is_empty() {
                let (mut parts, mut y) = std::mem::take(&mut carry);
                while y.len() < target && next < n_groups {
                    let (x, yg) = next_group()?;
                    next += 1;
                    parts.push(x);
                    y.extend(yg);
                }
                let x = if parts.is_empty() {
                    CsrMatrix::zeros(0, genes)
                } else {
                    CsrMatrix::vstack(&parts)?
                };
                let mut order: Vec<usize> = (0..y.len()).collect();
                order.shuffle(&mut rng);
                let last = next >= n_groups;
                let mut chunks = order.chunks(batch_size).peekable();
                while let Some(rows) = chunks.next() {
                    if rows.len() < batch_size && !last && chunks.peek().is_none() {
                        // A partial batch waits for the next buffer.
                        carry = (
                            vec![x.select_rows(rows)],
                            rows.iter().map(|&r| y[r]).collect(),
                        );
                        break;
                    }
                    let xb = cellident_tensor::batch::dense_rows(&x, rows, device)?;
                    let yb = cellident_tensor::batch::label_rows(&y, rows, device)?;
                    visit(&xb, &yb)?;
                }
            }
            Ok(())
        })
    }

    fn column_means(&mut self) -> cellident_tensor::Result<Vec<f32>> {
        use rayon::prelude::*;
        // Row groups are read and summed in parallel (one per thread at a time); the per-group
        // sums are then added in group order, so the result does not depend on the threads.
        let genes = self.n_genes();
        let per_group = (0..self.dataset.n_row_groups())
            .into_par_iter()
            .map(|g| {
                let (x, y) = self.group(g)?;
                let mut sums = vec![0f64; genes];
                for (&j, &v) in x.indices().iter().zip(x.data()) {
                    sums[j as usize] += v as f64;
                }
                Ok((sums, y.len()))
            })
            .collect::<cellident_tensor::Result<Vec<_>>>()?;
        let mut sums = vec![0f64; genes];
        let mut n = 0usize;
        for (group_sums, cells) in per_group {
            for (s, g) in sums.iter_mut().zip(group_sums) {
                *s += g;
            }
            n += cells;
        }
        let n = n.max(1) as f64;
        Ok(sums.into_iter().map(|s| (s / n) as f32).collect())
    }
}

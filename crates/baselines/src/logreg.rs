//! Multinomial logistic regression with an L2 penalty: minimises
//! `sum_i CE(softmax(W x_i + b), y_i) + ||W||^2 / (2 C)` (scikit-learn's `LogisticRegression`
//! objective with `penalty="l2"`, intercept not penalised), by L-BFGS on the full batch.

use candle_core::{DType, Device, Tensor};
use cellident_io::CsrMatrix;
use cellident_tensor::batch::dense_rows;
use cellident_tensor::{
    Classifier, DenseMatrix, Progress, Result, TrainEvent, TrainReport, ensure_gene_count,
    ensure_labels, ensure_param,
};
use serde::{Deserialize, Serialize};

/// Hyper-parameters (scikit-learn's names and defaults, except `max_iter`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogisticRegressionParams {
    /// Inverse regularisation strength.
    pub c: f64,
    /// L-BFGS iterations (scikit-learn's default of 100 often stops before convergence).
    pub max_iter: usize,
    /// Stop when the largest gradient component is below this.
    pub tol: f64,
}

impl Default for LogisticRegressionParams {
    fn default() -> Self {
        LogisticRegressionParams {
            c: 1.0,
            max_iter: 1000,
            tol: 1e-4,
        }
    }
}

/// A fitted (or unfitted) logistic regression.
#[derive(Debug, Clone)]
pub struct LogisticRegression {
    params: LogisticRegressionParams,
    /// `[genes, classes]` row-major, then the `classes` intercepts.
    coef: Vec<f32>,
    n_genes: usize,
    n_classes: usize,
}

impl LogisticRegression {
    pub fn new(params: LogisticRegressionParams) -> Result<Self> {
        ensure_param(params.c > 0.0, "c", || {
            format!("must be > 0, got {}", params.c)
        })?;
        ensure_param(params.max_iter > 0, "max_iter", || {
            "must be at least 1".into()
        })?;
        Ok(LogisticRegression {
            params,
            coef: Vec::new(),
            n_genes: 0,
            n_classes: 0,
        })
    }

    fn logits(&self, x: &Tensor) -> Result<Tensor> {
        let (g, k) = (self.n_genes, self.n_classes);
        let w = Tensor::from_slice(&self.coef[..g * k], (g, k), x.device())?;
        let b = Tensor::from_slice(&self.coef[g * k..], (1, k), x.device())?;
        Ok(x.matmul(&w)?.broadcast_add(&b)?)
    }
}

impl Classifier for LogisticRegression {
    fn fit(
        &mut self,
        x: &CsrMatrix,
        y: &[u32],
        n_classes: usize,
        progress: &mut dyn Progress,
    ) -> Result<TrainReport> {
        ensure_labels(x.n_rows(), y, n_classes)?;
        let started = std::time::Instant::now();
        let (n, g, k) = (x.n_rows(), x.n_cols(), n_classes);
        let device = Device::Cpu;
        let rows: Vec<usize> = (0..n).collect();
        let xd = dense_rows(x, &rows, &device)?.to_dtype(DType::F64)?;
        let xt = xd.t()?.contiguous()?;
        let mut onehot = vec![0f64; n * k];
        for (i, &c) in y.iter().enumerate() {
            onehot[i * k + c as usize] = 1.0;
        }
        let onehot = Tensor::from_vec(onehot, (n, k), &device)?;
        let inv_c = 1.0 / self.params.c;
        progress.event(&TrainEvent::Start {
            model: "logistic regression".into(),
            epochs: 1,
            batches_per_epoch: 1,
        });
        // Value and gradient of the objective, in f64 (the problem is small and convex).
        let objective = |theta: &[f64], grad: &mut [f64]| -> Result<f64> {
            let w = Tensor::from_slice(&theta[..g * k], (g, k), &device)?;
            let b = Tensor::from_slice(&theta[g * k..], (1, k), &device)?;
            let z = xd.matmul(&w)?.broadcast_add(&b)?;
            let zmax = z.max_keepdim(1)?;
            let zs = z.broadcast_sub(&zmax)?;
            let lse = zs.exp()?.sum_keepdim(1)?.log()?;
            let logp = zs.broadcast_sub(&lse)?;
            let ce = -(logp.clone() * &onehot)?.sum_all()?.to_scalar::<f64>()?;
            let p = logp.exp()?;
            let diff = (p - &onehot)?;
            let gw = (xt.matmul(&diff)? + (w * inv_c)?)?;
            let gb = diff.sum(0)?;
            grad[..g * k].copy_from_slice(&gw.flatten_all()?.to_vec1::<f64>()?);
            grad[g * k..].copy_from_slice(&gb.to_vec1::<f64>()?);
            let l2: f64 = theta[..g * k].iter().map(|v| v * v).sum::<f64>() * 0.5 * inv_c;
            Ok(ce + l2)
        };
        let (theta, iterations) = crate::lbfgs::minimize(
            objective,
            vec![0.0; g * k + k],
            10,
            self.params.max_iter,
            self.params.tol,
        )?;
        self.coef = theta.iter().map(|&v| v as f32).collect();
        self.n_genes = g;
        self.n_classes = k;
        progress.event(&TrainEvent::Finish);
        Ok(TrainReport {
            epochs: Vec::new(),
            kept_epoch: iterations,
            stopped_early: false,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    fn predict_proba(&self, x: &CsrMatrix) -> Result<DenseMatrix> {
        ensure_gene_count("logistic regression", self.n_genes, x.n_cols())?;
        let rows: Vec<usize> = (0..x.n_rows()).collect();
        let mut values = Vec::with_capacity(x.n_rows() * self.n_classes);
        for chunk in rows.chunks(4096) {
            let p = cellident_tensor::nn::softmax(&self.logits(&dense_rows(
                x,
                chunk,
                &Device::Cpu,
            )?)?)?;
            values.extend(p.flatten_all()?.to_vec1::<f32>()?);
        }
        DenseMatrix::new(x.n_rows(), self.n_classes, values)
    }
}

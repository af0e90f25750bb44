//! cellident-baselines owns the simple methods the deep ones are measured against, behind the
//! same `Classifier` trait: multinomial logistic regression (scikit-learn's
//! `LogisticRegression(C=1.0)` objective, solved by L-BFGS). It depends on no model crate and
//! does no I/O.

mod lbfgs;
mod logreg;

pub use logreg::{LogisticRegression, LogisticRegressionParams};

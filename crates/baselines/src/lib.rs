//! cellident-baselines owns the simple methods the deep ones are measured against, behind the
//! same `Classifier` trait: multinomial logistic regression (scikit-learn's
//! `LogisticRegression(C=1.0)` objective, solved by L-BFGS) and a random forest (scikit-learn's
//! `RandomForestClassifier` semantics, 500 trees by default). It depends on no model crate and
//! does no I/O.

mod forest;
mod lbfgs;
mod logreg;

pub use forest::{MaxFeatures, RandomForest, RandomForestParams};
pub use logreg::{LogisticRegression, LogisticRegressionParams};

//! A terminal progress bar over training epochs ([`EpochBar`]), for binaries (`xtask`, the
//! CLI): behind the `progress-bar` feature so that the libraries do not pull in indicatif.

use crate::train::{Progress, TrainEvent};

/// Shows `name [=====>    ] epoch 12/50 loss 0.1234 (3s)` on stderr while a model trains,
/// and clears it when training ends. Hidden when stderr is not a terminal (indicatif's rule).
#[derive(Debug)]
pub struct EpochBar {
    name: String,
    hidden: bool,
    bar: Option<indicatif::ProgressBar>,
}

impl EpochBar {
    pub fn new(name: &str) -> Self {
        EpochBar {
            name: name.to_string(),
            hidden: false,
            bar: None,
        }
    }

    /// A bar that draws nothing (`--quiet`).
    pub fn hidden(name: &str) -> Self {
        EpochBar {
            hidden: true,
            ..Self::new(name)
        }
    }
}

impl Progress for EpochBar {
    fn event(&mut self, e: &TrainEvent) {
        match e {
            TrainEvent::Start { epochs, .. } => {
                let b = if self.hidden {
                    indicatif::ProgressBar::hidden()
                } else {
                    indicatif::ProgressBar::new(*epochs as u64)
                };
                b.set_style(
                    indicatif::ProgressStyle::with_template(
                        "  {prefix} [{bar:30}] epoch {pos}/{len} {msg} ({elapsed})",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                b.set_prefix(self.name.clone());
                self.bar = Some(b);
            }
            TrainEvent::Epoch(r) => {
                if let Some(b) = &self.bar {
                    b.set_message(format!("loss {:.4}", r.train_loss));
                    b.inc(1);
                }
            }
            TrainEvent::Finish => {
                if let Some(b) = self.bar.take() {
                    b.finish_and_clear();
                }
            }
            TrainEvent::Batch { .. } => {}
        }
    }
}

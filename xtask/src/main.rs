//! cellident's task runner (`cargo xtask <task>`), in the style of rust-analyzer's xtask.
//!
//! - `reproduce`: the benchmark of every method and baseline (default: the fixture suite).
//! - `fixtures --from ../shared/datasets`: write the small real subsets under `fixtures/`.
//! - `bench`: the whole-pipeline speed and memory figures, written into docs/benchmarks.md.

/// mimalloc instead of glibc malloc: glibc unmaps large freed tensors and faults them back in on
/// the next step, which doubled training time (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc still hands freed pages back to the OS after 1 s (its `purge_delay`), and candle's
/// per-op tensors of a few MB then fault in fresh zeroed pages on every training step: a third
/// of CICL's step time went to `clear_page` (docs/benchmarks.md). Never purging keeps the
/// process's peak, which training reaches anyway.
#[allow(unsafe_code)]
mod allocator {
    use std::ffi::{c_int, c_long};

    // mimalloc's `mi_option_purge_delay` (mimalloc.h, option 15 of `mi_option_t`).
    const MI_OPTION_PURGE_DELAY: c_int = 15;

    unsafe extern "C" {
        fn mi_option_set(option: c_int, value: c_long);
    }

    pub fn keep_freed_pages() {
        // SAFETY: mi_option_set only stores an integer in mimalloc's option table; it is
        // linked in by the mimalloc global allocator above, and -1 is its documented "never".
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
    }
}

mod bench;
mod fixtures;
mod reproduce;

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "xtask", about = "cellident's task runner")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Run the benchmark suite (every method and baseline on the datasets that suit it) and write
    /// results.json and report.md.
    Reproduce {
        /// Folder of datasets in the ../shared/datasets layout.
        #[arg(long, default_value = "fixtures")]
        data_dir: PathBuf,
        /// Suite file: dataset -> task -> label column (default: reproduce/fixtures.toml for
        /// the fixtures, reproduce/suite.toml for any other --data-dir).
        #[arg(long)]
        suite: Option<PathBuf>,
        /// Output folder.
        #[arg(long, default_value = "out/reproduce")]
        out: PathBuf,
        /// Ad hoc run on one dataset folder (needs --task and --label).
        #[arg(long)]
        dataset: Option<PathBuf>,
        /// Task of the ad hoc run, or only this task of the suite: annotate, cluster, embed, metadata.
        #[arg(long)]
        task: Option<String>,
        /// Label column of the ad hoc run.
        #[arg(long)]
        label: Option<String>,
        /// Obs column of groups for an extra leave-one-group-out evaluation (metadata task).
        #[arg(long)]
        groups: Option<String>,
        /// Comma-separated method ids (default: all): nact, actinn, logreg, rf, mlp, cic, pca, cicl, leiden, kmeans.
        #[arg(long, value_delimiter = ',')]
        methods: Vec<String>,
        /// Number of seeds (0..N) per method.
        #[arg(long, default_value_t = 1)]
        seeds: u64,
        /// Compare with expected metrics and fail on a regression (e.g. fixtures/baseline.json).
        #[arg(long)]
        check: Option<PathBuf>,
        /// Write this run's metrics as a new baseline file (tolerance 0.02).
        #[arg(long)]
        write_baseline: Option<PathBuf>,
    },
    /// Whole-pipeline speed and memory figures (release build, each workload in its own
    /// process): in-memory preprocessing at 100k and 1M cells (with scaling, and scanpy's sparse
    /// recipe without it), ARI + NMI at 10M labels, full vs
    /// mini-batch k-means at 1M cells, and N-ACT
    /// trained for one epoch and annotating with every cell streamed from a 1M-cell Parquet file.
    /// Rewrites the generated section of docs/benchmarks.md. Takes about 25 minutes on 2 cores.
    Bench {
        /// Smaller sizes (100k streamed cells, preprocessing at 10k and 100k, 1M labels): a
        /// few minutes, for checking the command itself.
        #[arg(long)]
        quick: bool,
        /// Print the table without touching docs/benchmarks.md.
        #[arg(long)]
        no_write: bool,
    },
    /// Write the small real subsets under fixtures/ from the shared datasets.
    Fixtures {
        /// Folder of datasets in the ../shared/datasets layout.
        #[arg(long, default_value = "../shared/datasets")]
        from: PathBuf,
        /// Output folder.
        #[arg(long, default_value = "fixtures")]
        out: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    allocator::keep_freed_pages();
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.task {
        Task::Fixtures { from, out } => fixtures::run(&from, &out),
        Task::Bench { quick, no_write } => {
            let mut command = String::from("cargo xtask bench");
            if quick {
                command.push_str(" --quick");
            }
            bench::run(&bench::BenchOptions {
                stream_cells: if quick { 100_000 } else { 1_000_000 },
                model_cells: if quick { 20_000 } else { 100_000 },
                preprocess_cells: if quick {
                    vec![10_000, 100_000]
                } else {
                    vec![100_000, 1_000_000]
                },
                metric_labels: if quick { 1_000_000 } else { 10_000_000 },
                kmeans_cells: if quick { 100_000 } else { 1_000_000 },
                doc: (!no_write).then(|| PathBuf::from("docs/benchmarks.md")),
                command,
            })
        }
        Task::Reproduce {
            data_dir,
            suite,
            out,
            dataset,
            task,
            label,
            groups,
            methods,
            seeds,
            check,
            write_baseline,
        } => {
            let root = workspace_root();
            let at_root = |p: PathBuf| {
                if p.is_relative() && !p.exists() {
                    root.join(p)
                } else {
                    p
                }
            };
            let suite = suite.unwrap_or_else(|| {
                if data_dir == Path::new("fixtures") {
                    PathBuf::from("reproduce/fixtures.toml")
                } else {
                    PathBuf::from("reproduce/suite.toml")
                }
            });
            reproduce::run(&reproduce::ReproduceOptions {
                data_dir: at_root(data_dir),
                suite: at_root(suite),
                out,
                dataset,
                task,
                label,
                groups,
                methods,
                seeds,
                check: check.map(at_root),
                write_baseline,
            })
        }
    }
}

/// The workspace root (xtask is run through `cargo xtask` from anywhere inside it).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

//! Typed errors of cellident-io. Every variant names the file (or the in-memory object) and,
//! where one exists, the line, row or gene, so that a person can find and fix the input.

use std::path::{Path, PathBuf};

/// Errors raised while reading, validating or writing expression data.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// The operating system refused an operation on a file.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A text file (Matrix Market, TSV, CSV) has a bad line.
    #[error("{}: line {line}: {message}", path.display())]
    Parse {
        path: PathBuf,
        /// 1-based line number in the (decompressed) file.
        line: u64,
        message: String,
    },
    /// A file is readable but its content is inconsistent or unsupported.
    #[error("{}: {message}", path.display())]
    Format { path: PathBuf, message: String },
    /// An in-memory object violates an invariant (shape mismatch, duplicate ids, NaN, ...).
    #[error("{what}: {message}")]
    Invalid { what: String, message: String },
}

impl IoError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        IoError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn parse(path: &Path, line: u64, message: impl Into<String>) -> Self {
        IoError::Parse {
            path: path.to_path_buf(),
            line,
            message: message.into(),
        }
    }

    pub(crate) fn format(path: &Path, message: impl Into<String>) -> Self {
        IoError::Format {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    pub(crate) fn invalid(what: impl Into<String>, message: impl Into<String>) -> Self {
        IoError::Invalid {
            what: what.into(),
            message: message.into(),
        }
    }

    /// Attaches a file to an in-memory validation error, so that the message names the input
    /// the invalid object came from.
    pub(crate) fn in_file(self, path: &Path) -> Self {
        match self {
            IoError::Invalid { what, message } => IoError::Format {
                path: path.to_path_buf(),
                message: format!("{what}: {message}"),
            },
            other => other,
        }
    }
}

/// Result alias of cellident-io.
pub type Result<T, E = IoError> = std::result::Result<T, E>;

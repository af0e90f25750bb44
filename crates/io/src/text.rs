//! Line-oriented reading of plain or gzip-compressed text files, with errors that name the
//! file and the line, and atomic writing helpers.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use crate::error::{IoError, Result};

/// Opens a file for reading, decompressing it when its name ends in `.gz`.
pub(crate) fn open_maybe_gz(path: &Path) -> Result<Box<dyn BufRead>> {
    let file = File::open(path).map_err(|e| IoError::io(path, e))?;
    let reader: Box<dyn Read> = if is_gz(path) {
        Box::new(MultiGzDecoder::new(BufReader::with_capacity(1 << 16, file)))
    } else {
        Box::new(file)
    };
    Ok(Box::new(BufReader::with_capacity(1 << 16, reader)))
}

pub(crate) fn is_gz(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"))
}

/// Reads a text file line by line, tracking the 1-based line number.
pub(crate) struct LineReader {
    path: PathBuf,
    inner: Box<dyn BufRead>,
    line: u64,
}

impl LineReader {
    pub(crate) fn open(path: &Path) -> Result<Self> {
        Ok(LineReader {
            path: path.to_path_buf(),
            inner: open_maybe_gz(path)?,
            line: 0,
        })
    }

    /// The number of the line last returned.
    pub(crate) fn line_number(&self) -> u64 {
        self.line
    }

    /// Reads the next line into `buf` without its line terminator; `false` at the end of the
    /// file. The caller owns the buffer, so errors can be built while a line is borrowed.
    pub(crate) fn next_line(&mut self, buf: &mut String) -> Result<bool> {
        buf.clear();
        let read = self.inner.read_line(buf).map_err(|e| {
            let what = match e.kind() {
                std::io::ErrorKind::UnexpectedEof => {
                    "the gzip stream ends early: the file is truncated".to_string()
                }
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
                    if is_gz(&self.path) =>
                {
                    format!("the gzip stream is corrupt or not UTF-8 text ({e})")
                }
                std::io::ErrorKind::InvalidData => format!("not valid UTF-8 text ({e})"),
                _ => e.to_string(),
            };
            IoError::parse(&self.path, self.line + 1, what)
        })?;
        if read == 0 {
            return Ok(false);
        }
        self.line += 1;
        while buf.ends_with(['\n', '\r']) {
            buf.pop();
        }
        Ok(true)
    }

    pub(crate) fn error(&self, message: impl Into<String>) -> IoError {
        IoError::parse(&self.path, self.line, message)
    }
}

/// Reads a one-column (or first-column) TSV file of identifiers, e.g. `genes.tsv.gz`.
/// Returns every tab-separated field of every line. Empty trailing lines are ignored.
pub(crate) fn read_tsv_rows(path: &Path) -> Result<Vec<Vec<String>>> {
    let mut reader = LineReader::open(path)?;
    let mut rows = Vec::new();
    let mut blank_at: Option<u64> = None;
    let mut buf = String::new();
    while reader.next_line(&mut buf)? {
        let line = buf.as_str();
        if line.is_empty() {
            blank_at.get_or_insert(reader.line_number());
            continue;
        }
        if let Some(b) = blank_at {
            return Err(IoError::parse(path, b, "empty line inside the list"));
        }
        rows.push(line.split('\t').map(str::to_string).collect());
    }
    Ok(rows)
}

/// One CSV field: quoted (with inner quotes doubled, RFC 4180) when it holds a comma, a quote,
/// or a line break; as it is otherwise. For small hand-built tables such as gene rankings.
pub fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([',', '"', '\n']) {
        std::borrow::Cow::Owned(format!("\"{}\"", s.replace('"', "\"\"")))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// Writes a file atomically: the content goes to a temporary file in the same folder, which
/// is renamed over `path` only once everything was written and flushed. A failure leaves no
/// partial output behind.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let dir = parent_dir(path);
    let tmp = tempfile::Builder::new()
        .prefix(".cellident-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| IoError::io(path, e))?;
    {
        let mut w: Box<dyn Write> = if is_gz(path) {
            Box::new(flate2::write::GzEncoder::new(
                BufWriter::with_capacity(1 << 16, tmp.as_file()),
                flate2::Compression::new(6),
            ))
        } else {
            Box::new(BufWriter::with_capacity(1 << 16, tmp.as_file()))
        };
        write(&mut w).map_err(|e| IoError::io(path, e))?;
        w.flush().map_err(|e| IoError::io(path, e))?;
    }
    tmp.as_file().sync_all().map_err(|e| IoError::io(path, e))?;
    publish_permissions(tmp.as_file()).map_err(|e| IoError::io(path, e))?;
    tmp.persist(path).map_err(|e| IoError::io(path, e.error))?;
    Ok(())
}

/// Temporary files are created private (0600); outputs get the usual 0644 before the rename.
pub(crate) fn publish_permissions(file: &std::fs::File) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    #[cfg(not(unix))]
    let _ = file;
    Ok(())
}

/// The folder a file lives in (`.` for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Finds the first of `names` that exists in `dir`.
pub(crate) fn find_file(dir: &Path, names: &[&str]) -> Option<PathBuf> {
    names.iter().map(|n| dir.join(n)).find(|p| p.is_file())
}

/// Builds a folder atomically: `fill` writes into a temporary folder beside `dir`, which is
/// renamed to `dir` only when `fill` succeeded. `dir` must not exist or be empty.
pub(crate) fn write_folder_atomic(
    dir: &Path,
    fill: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    if dir.exists() {
        let empty = std::fs::read_dir(dir)
            .map_err(|e| IoError::io(dir, e))?
            .next()
            .is_none();
        if !empty {
            return Err(IoError::format(
                dir,
                "already exists and is not empty; remove it or choose another output folder",
            ));
        }
        std::fs::remove_dir(dir).map_err(|e| IoError::io(dir, e))?;
    }
    let parent = parent_dir(dir);
    std::fs::create_dir_all(parent).map_err(|e| IoError::io(parent, e))?;
    let tmp = tempfile::Builder::new()
        .prefix(".cellident-folder-")
        .tempdir_in(parent)
        .map_err(|e| IoError::io(parent, e))?;
    fill(tmp.path())?;
    let kept = tmp.keep();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&kept, std::fs::Permissions::from_mode(0o755));
    }
    std::fs::rename(&kept, dir).map_err(|e| {
        let _ = std::fs::remove_dir_all(&kept);
        IoError::io(dir, e)
    })
}

//! Errors of the store. The CLI maps each to an exit status
//! ([`crate::cli::exit`], docs/CLI.md).

use std::io;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}: not a bkfs store ({1})")]
    NotAStore(PathBuf, String),
    #[error("{path}: store format version {found} is newer than this bkfs understands (up to {supported}); upgrade bkfs")]
    NewerVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("no snapshot named {0:?}")]
    NoSnapshot(String),
    #[error("no path {path:?} in snapshot {snapshot:?}")]
    NoPath { snapshot: String, path: String },
    #[error("snapshot {0:?} already exists")]
    SnapshotExists(String),
    #[error("invalid snapshot name {0:?}: {1}")]
    InvalidName(String, &'static str),
    #[error("store is locked by another writer ({0}); try again when it is done")]
    Locked(String),
    #[error("damaged data: {0}")]
    Corrupt(String),
    #[error("{0}: destination is not empty (use --overwrite to restore into it)")]
    DestNotEmpty(PathBuf),
    #[error("snapshot cancelled before it was complete (nothing was recorded)")]
    Cancelled,
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// An I/O error in `context`; `source` is an `io::Error` or an errno of
    /// the OS layer (which keeps its raw value in the `io::Error`).
    pub fn io(context: impl Into<String>, source: impl Into<io::Error>) -> Self {
        Error::Io {
            context: context.into(),
            source: source.into(),
        }
    }

    /// True when the error is the device holding the store running full.
    pub fn is_no_space(&self) -> bool {
        matches!(self, Error::Io { source, .. }
            if matches!(source.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)))
    }
}

/// Attach a context (usually a path and what was being done) to io results.
pub trait IoContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(context(), e))
    }
}

impl<T> IoContext<T> for crate::os::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(context(), e))
    }
}

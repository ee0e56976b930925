//! The watch wing's errors: a watched database that cannot be read, a store
//! error met during a run, a watcher asked for something it cannot do.

use std::path::PathBuf;
use std::time::Duration;

/// What went wrong in a watcher or one of its runs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    /// The store (or the capture) failed.
    #[error(transparent)]
    Store(#[from] crate::Error),
    /// Another connection held the database locked for longer than the run's
    /// busy timeout. The connection and what it last saw stay valid.
    #[error("{}: database is locked by another process (gave up after {})", path.display(), crate::watch::fmt_duration(*busy_timeout))]
    Busy {
        path: PathBuf,
        busy_timeout: Duration,
    },
    #[error("{}: not an SQLite database (file is not a database)", path.display())]
    NotADatabase { path: PathBuf },
    /// Any other SQLite error on the watched database.
    #[error("{}: {source}", path.display())]
    Sql {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// The saved retention policy could not be read.
    #[error("cannot read the store's retention policy: {0}")]
    ReadPolicy(#[source] crate::Error),
    /// The integrity check of a captured image found damage or could not run.
    #[error("{0}")]
    ImageCheck(String),
    /// A run was abandoned at its deadline or at stop.
    #[error("{0}")]
    Abandoned(String),
    /// A file or folder the watcher needs (the image check's temporary folder).
    #[error("{}: {what}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start a thread for {what}: {source}")]
    Thread {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no watched database is named {0:?}")]
    UnknownDatabase(String),
    #[error("a database named {0:?} is already watched")]
    DuplicateDatabase(String),
    #[error("invalid watch setting: {0}")]
    Invalid(String),
    #[error("the watcher has stopped")]
    Stopped,
}

impl WatchError {
    /// Whether it only says the database was locked by another connection: the
    /// source stays open and keeps what it last saw (other errors reset it).
    pub fn is_busy(&self) -> bool {
        matches!(
            self,
            WatchError::Busy { .. }
                | WatchError::Store(crate::Error::Capture(
                    crate::capture::CaptureError::Locked { .. }
                ))
        )
    }
}

impl From<crate::capture::CaptureError> for WatchError {
    fn from(e: crate::capture::CaptureError) -> WatchError {
        WatchError::Store(e.into())
    }
}

//! A watched database: its open read-only connection, and whether it changed
//! since its last snapshot.
//!
//! Unchanged means all of these are as they were when the last snapshot was
//! taken: `PRAGMA data_version` on the watcher's own connection (it changes when
//! any other connection commits), the file's identity (device and inode: a
//! database replaced by a rename is a new file), and the size and modification
//! time of the database file and of its `-wal`. The first run after the watcher
//! starts (or after an error closed the connection) always takes a snapshot.

use super::error::WatchError;
use crate::capture::{
    is_hot_journal, open_source, retry_hot_journal, source_metadata, wal_path, CaptureError,
};
use crate::{Abandon, BackupOptions, BackupReport, SnapshotId, Store};
use rusqlite::{Connection, ErrorCode, OpenFlags};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

type Result<T> = std::result::Result<T, WatchError>;

/// What identifies the file's content cheaply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileState {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    /// Size and mtime of the `-wal` file, when there is one.
    wal: Option<(u64, i128)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    data_version: i64,
    file: FileState,
}

/// Whether a run has to take a snapshot, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Unchanged,
    Changed(&'static str),
}

/// What the integrity check of a captured image runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ImageCheck {
    #[default]
    Off,
    /// `PRAGMA quick_check`.
    Quick,
    /// `PRAGMA integrity_check`.
    Full,
}

impl ImageCheck {
    pub fn as_str(&self) -> &'static str {
        match self {
            ImageCheck::Off => "off",
            ImageCheck::Quick => "quick",
            ImageCheck::Full => "full",
        }
    }
}

/// A watched database file and the connection the watcher keeps open to it.
pub struct Source {
    path: PathBuf,
    /// The path recorded in manifests (absolute).
    abs: PathBuf,
    conn: Option<(Connection, (u64, u64))>,
    last: Option<Seen>,
}

fn mtime_ns(m: &std::fs::Metadata) -> i128 {
    m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128
}

impl Source {
    pub fn new(path: &Path) -> Source {
        Source {
            path: path.to_path_buf(),
            abs: std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()),
            conn: None,
            last: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes the connection and forgets the last snapshot's state: the next run
    /// opens the database afresh and takes a snapshot.
    pub fn reset(&mut self) {
        self.conn = None;
        self.last = None;
    }

    fn stat(&self) -> Result<FileState> {
        // Refuses a FIFO or a device before anything opens it (that could block).
        let m = source_metadata(&self.path)?;
        let wal = std::fs::metadata(wal_path(&self.path))
            .ok()
            .map(|w| (w.len(), mtime_ns(&w)));
        Ok(FileState {
            dev: m.dev(),
            ino: m.ino(),
            size: m.len(),
            mtime_ns: mtime_ns(&m),
            wal,
        })
    }

    /// The open connection to the file `file` describes, (re)opened if needed.
    /// Returns whether it was (re)opened.
    fn connect(&mut self, file: &FileState, busy_timeout: Duration) -> Result<bool> {
        let id = (file.dev, file.ino);
        if self.conn.as_ref().is_some_and(|(_, open)| *open == id) {
            return Ok(false);
        }
        self.reset();
        let conn = open_source(&self.path)?;
        conn.busy_timeout(busy_timeout)
            .map_err(|e| sql_error(&self.path, busy_timeout, e))?;
        self.conn = Some((conn, id));
        Ok(true)
    }

    /// Whether the database changed since the last snapshot. Cheap: a stat of
    /// two files and one `PRAGMA data_version` (a read transaction, which waits
    /// up to `busy_timeout` for a writer's exclusive lock in rollback-journal mode).
    pub fn check(&mut self, busy_timeout: Duration) -> Result<Change> {
        let file = self.stat()?;
        let had = self.conn.is_some();
        let reopened = self.connect(&file, busy_timeout)?;
        let Some((conn, _)) = &self.conn else {
            return Err(WatchError::Invalid(format!(
                "{}: not open",
                self.path.display()
            )));
        };
        let data_version = data_version(conn, &self.path, busy_timeout)?;
        let now = Seen { data_version, file };
        Ok(match self.last {
            _ if reopened && had => Change::Changed("the file was replaced"),
            None => Change::Changed("first run"),
            Some(l) if l == now => Change::Unchanged,
            Some(l) if l.data_version != data_version => Change::Changed("committed changes"),
            Some(_) => Change::Changed("the file changed"),
        })
    }

    /// Takes a snapshot through the open connection. `data_version` is read
    /// first, then the capture opens its own read transaction: a commit between
    /// the two is in the snapshot but not in what is recorded as "seen", so at
    /// worst a later run takes one snapshot too many, never one too few (the
    /// file state is taken before both, likewise). The capture must own its
    /// transaction to read the file directly and follow the WAL
    /// (backup/capture/direct.rs, guide.rs): inside a caller's, it goes
    /// through SQLite's backup API.
    ///
    /// `abandon` lets the watcher abandon the snapshot until it commits (see
    /// [`Store::backup_connection_abandonable`]); it holds the store lock.
    pub fn snapshot(
        &mut self,
        store: &Store,
        opts: &BackupOptions,
        abandon: &Abandon,
    ) -> Result<BackupReport> {
        let file = self.stat()?;
        self.connect(&file, opts.busy_timeout)?;
        let Some((conn, _)) = &self.conn else {
            return Err(WatchError::Invalid(format!(
                "{}: not open",
                self.path.display()
            )));
        };
        let data_version = data_version(conn, &self.path, opts.busy_timeout)?;
        let report = store.backup_connection_abandonable(conn, &self.abs, opts, abandon)?;
        self.last = Some(Seen { data_version, file });
        Ok(report)
    }
}

fn data_version(conn: &Connection, path: &Path, busy_timeout: Duration) -> Result<i64> {
    retry_hot_journal(|| conn.query_row("PRAGMA data_version", [], |r| r.get(0)))
        .map_err(|e| sql_error(path, busy_timeout, e))
}

/// An SQLite error on a watched database, typed so that the caller can act.
fn sql_error(path: &Path, busy_timeout: Duration, e: rusqlite::Error) -> WatchError {
    if is_hot_journal(&e) {
        return crate::Error::from(CaptureError::HotJournal(path.to_path_buf())).into();
    }
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => WatchError::Busy {
            path: path.to_path_buf(),
            busy_timeout,
        },
        Some(ErrorCode::NotADatabase) => WatchError::NotADatabase {
            path: path.to_path_buf(),
        },
        _ => WatchError::Sql {
            path: path.to_path_buf(),
            source: e,
        },
    }
}

/// Restores snapshot `id` into a temporary directory under `dir` (default: the
/// system's) and runs `PRAGMA quick_check` or `integrity_check` on the copy: the
/// captured image is checked, never the live database. `Ok(None)`: the check
/// passed; `Ok(Some(detail))`: it found damage.
pub fn check_image(
    store: &Store,
    id: &SnapshotId,
    mode: ImageCheck,
    dir: Option<&Path>,
) -> Result<Option<String>> {
    let pragma = match mode {
        ImageCheck::Off => return Ok(None),
        ImageCheck::Quick => "PRAGMA quick_check(20)",
        ImageCheck::Full => "PRAGMA integrity_check(20)",
    };
    let snap = store.load_snapshot(id)?;
    let base = dir
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::Builder::new()
        .prefix("pagesnap-watch-check-")
        .tempdir_in(&base)
        .map_err(|e| WatchError::Io {
            path: base.clone(),
            what: "cannot create a temporary directory",
            source: e,
        })?;
    let out = tmp.path().join("image.db");
    store.restore_to_path(&snap, &out, false)?;
    // Immutable: nothing (journal, -wal, -shm) is created beside the copy.
    let escaped = out
        .display()
        .to_string()
        .replace('%', "%25")
        .replace('?', "%3f")
        .replace('#', "%23");
    let sql = |e| WatchError::Sql {
        path: out.clone(),
        source: e,
    };
    let conn = Connection::open_with_flags(
        format!("file:{escaped}?immutable=1"),
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(sql)?;
    let rows: Vec<String> = {
        let mut stmt = conn.prepare(pragma).map_err(sql)?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(sql)?;
        rows.collect::<rusqlite::Result<_>>().map_err(sql)?
    };
    Ok(if rows == ["ok"] {
        None
    } else {
        Some(rows.join("; "))
    })
}

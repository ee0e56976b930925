//! Capture: a consistent image of a live database through SQLite's online backup
//! API, streamed page by page into the chunk writer.
//!
//! The source connection holds a read transaction for the whole copy. In WAL mode
//! that never blocks the application's writers (they append to the WAL while the
//! copy reads the snapshot it pinned). In rollback-journal mode a reader holds a
//! SHARED lock, so writers wait (or get SQLITE_BUSY) until the copy ends.

mod image;
mod pipeline;
pub(crate) mod tree_hash;
// The one place with `unsafe`: a VFS is a table of C callbacks SQLite calls.
#[allow(unsafe_code)]
pub mod vfs;

use crate::chunk_writer::ChunkWriter;
use crate::types::ChunkRef;
use crate::{Error, Result};
use image::CaptureImage;
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, ErrorCode, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Pages copied per backup step: large enough to be cheap, small enough to report progress.
const STEP_PAGES: i32 = 1024;

/// Why a source database could not be captured.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{0}: no such database file")]
    Missing(PathBuf),
    #[error("{0}: is a directory, not a database file")]
    IsDirectory(PathBuf),
    #[error("{0}: not an SQLite database (file is not a database)")]
    NotADatabase(PathBuf),
    #[error("{path}: database is corrupt or truncated: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("{0}: the connection has uncommitted changes in an open transaction; SQLite cannot back up through it until that transaction commits or rolls back")]
    UncommittedWrites(PathBuf),
    #[error("{path}: database is locked by another process (gave up after {timeout:?}; try a longer --busy-timeout)")]
    Locked { path: PathBuf, timeout: Duration },
    #[error("{path}: cannot open: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
}

/// Opens `path` read-only for capture, with clear errors for the usual mistakes.
pub fn open_source(path: &Path) -> Result<Connection, CaptureError> {
    match std::fs::metadata(path) {
        Err(_) => return Err(CaptureError::Missing(path.to_path_buf())),
        Ok(m) if m.is_dir() => return Err(CaptureError::IsDirectory(path.to_path_buf())),
        Ok(_) => {}
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    Connection::open_with_flags(path, flags).map_err(|source| CaptureError::Open {
        path: path.to_path_buf(),
        source,
    })
}

/// Maps an SQLite error on the source to a message a user can act on.
fn source_error(path: &Path, timeout: Duration, e: rusqlite::Error) -> CaptureError {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => CaptureError::NotADatabase(path.to_path_buf()),
        Some(ErrorCode::DatabaseCorrupt) => CaptureError::Corrupt {
            path: path.to_path_buf(),
            detail: e.to_string(),
        },
        Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => CaptureError::Locked {
            path: path.to_path_buf(),
            timeout,
        },
        _ => CaptureError::Sqlite {
            path: path.to_path_buf(),
            source: e,
        },
    }
}

/// The result of one capture.
pub(crate) struct Capture {
    pub page_size: u32,
    pub chunks: Vec<ChunkRef>,
    pub image_hash: [u8; 32],
    pub image_check: [u8; 16],
    pub image_len: u64,
    pub writer: ChunkWriter,
}

/// Ends the read transaction the capture opened, on every path out.
struct ReadTxn<'c> {
    conn: &'c Connection,
    owned: bool,
}

impl Drop for ReadTxn<'_> {
    fn drop(&mut self) {
        if self.owned {
            // A read-only transaction: nothing to lose; an error here only means it already ended.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

/// Copies a consistent image of `src` (labelled `path` in messages) into `writer`.
pub(crate) fn capture(
    src: &Connection,
    path: &Path,
    busy_timeout: Duration,
    chunk_pages: u32,
    writer: ChunkWriter,
    progress: Option<&crate::Progress>,
) -> Result<Capture> {
    let err = |e| Error::Capture(source_error(path, busy_timeout, e));
    src.busy_timeout(busy_timeout).map_err(err)?;
    // Pin one read transaction for the whole copy, unless the caller already holds
    // one (an application embedding the library may back up inside its own).
    let owned = src.is_autocommit();
    if owned {
        src.execute_batch("BEGIN DEFERRED").map_err(err)?;
    } else if src
        .transaction_state(Some(rusqlite::MAIN_DB))
        .map_err(err)?
        == rusqlite::TransactionState::Write
    {
        // The backup API answers SQLITE_BUSY to every step while its source
        // connection is writing; only the caller can end that, so waiting is futile.
        return Err(Error::Capture(CaptureError::UncommittedWrites(
            path.to_path_buf(),
        )));
    }
    let _txn = ReadTxn { conn: src, owned };
    src.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
        r.get::<_, i64>(0)
    })
    .map_err(err)?;
    let page_size: u32 = src
        .query_row("PRAGMA main.page_size", [], |r| r.get(0))
        .map_err(err)?;
    let chunk_len = page_size as u64 * chunk_pages as u64;

    let image = Arc::new(Mutex::new(CaptureImage::new(writer, chunk_len)?));
    let step_result = copy(src, path, busy_timeout, page_size, image.clone(), progress);
    let mut image = Arc::try_unwrap(image)
        .map_err(|_| Error::Internal("capture target still referenced after the copy".into()))?
        .into_inner()
        .map_err(|_| Error::Internal("capture target lock poisoned".into()))?;
    if let Err(e) = step_result {
        // A store error seen by the target explains the failure better than SQLite's code.
        return Err(image.take_error().unwrap_or(e));
    }
    if let Some(e) = image.take_error() {
        return Err(e);
    }
    let captured = image.finish()?;
    if captured.image_len % page_size as u64 != 0 {
        return Err(Error::Internal(format!(
            "captured image of {} bytes is not a whole number of {page_size}-byte pages",
            captured.image_len
        )));
    }
    Ok(Capture {
        page_size,
        chunks: captured.chunks,
        image_hash: captured.image_hash,
        image_check: captured.image_check,
        image_len: captured.image_len,
        writer: captured.writer,
    })
}

/// Runs the backup API from `src` into a capture connection over `image`.
fn copy(
    src: &Connection,
    path: &Path,
    busy_timeout: Duration,
    page_size: u32,
    image: Arc<Mutex<CaptureImage>>,
    progress: Option<&crate::Progress>,
) -> Result<()> {
    let err = |e| Error::Capture(source_error(path, busy_timeout, e));
    let internal = |e: rusqlite::Error| Error::Internal(format!("capture connection: {e}"));
    let mut dest = vfs::open_capture_connection(image).map_err(internal)?;
    // A negative cache_size is turned into pages at the page size of the moment; set the
    // source's page size first so the cache stays ~1 MiB even for 64 KiB pages.
    dest.conn()
        .execute_batch(&format!(
            "PRAGMA page_size={page_size}; PRAGMA cache_size=-1024;"
        ))
        .map_err(internal)?;
    {
        let backup = Backup::new(src, dest.conn()).map_err(err)?;
        let deadline = Instant::now() + busy_timeout;
        loop {
            // sqlite3_backup_step does not reset the busy handler's counter: set it each time.
            src.busy_timeout(busy_timeout).map_err(err)?;
            match backup.step(STEP_PAGES) {
                Ok(StepResult::Done) => break,
                Ok(StepResult::More) => {
                    let p = backup.progress();
                    let (total, left) = (p.pagecount.max(0) as u64, p.remaining.max(0) as u64);
                    let page = page_size as u64;
                    crate::progress::report(
                        progress,
                        (total - left.min(total)) * page,
                        total * page,
                    );
                }
                Ok(StepResult::Busy) | Ok(StepResult::Locked) => {
                    if Instant::now() > deadline {
                        return Err(Error::Capture(CaptureError::Locked {
                            path: path.to_path_buf(),
                            timeout: busy_timeout,
                        }));
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(_) => {}
                // The caller replaces this with the store error the target recorded, if any.
                Err(e) => return Err(err(e)),
            }
        }
    }
    drop(dest);
    Ok(())
}

//! Capture: a consistent image of a live database, read straight from its file
//! and WAL under a pinned read transaction (direct.rs) or, where that cannot be
//! proven right, through SQLite's online backup API; streamed into the chunk writer.
//!
//! The source connection holds a read transaction for the whole copy. In WAL mode
//! that never blocks the application's writers (they append to the WAL while the
//! copy reads the snapshot it pinned). In rollback-journal mode a reader holds a
//! SHARED lock, so writers wait (or get SQLITE_BUSY) until the copy ends.

mod direct;
pub(crate) mod guide;
mod image;
mod pipeline;
// `unsafe`: calls the VFS methods of the source connection's own files (see its header).
#[allow(unsafe_code)]
mod source_files;
pub(crate) mod wal;
pub(crate) use image::block_len;
#[cfg(feature = "fuzzing")]
pub(crate) use wal::fuzz as wal_fuzz;
// `unsafe`: a VFS is a table of C callbacks SQLite calls.
#[allow(unsafe_code)]
pub mod vfs;

use crate::backup::chunk_writer::ChunkWriter;
use crate::backup::prints::file::Pending;
use crate::backup::prints::Printing;
use crate::types::ChunkRef;
use crate::{Error, Result};
use image::CaptureImage;
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, ErrorCode, OpenFlags};
use std::fs::Metadata;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Pages copied per backup step: large enough to be cheap, small enough to report progress.
const STEP_PAGES: i32 = 1024;

/// Why a source database could not be captured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaptureError {
    #[error("{0}: no such database file")]
    Missing(PathBuf),
    #[error("{0}: is a directory, not a database file")]
    IsDirectory(PathBuf),
    /// A FIFO, a device or a socket: opening one can block forever (a FIFO waits
    /// for a writer) or read endless bytes (`/dev/zero`), so it is never opened.
    #[error("{path}: is a {kind}, not a regular file: only a database file can be backed up")]
    NotARegularFile { path: PathBuf, kind: &'static str },
    #[error("{path}: {source}")]
    Inaccessible {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: not an SQLite database (file is not a database)")]
    NotADatabase(PathBuf),
    #[error("{path}: database is corrupt or truncated: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("{0}: the connection has uncommitted changes in an open transaction; SQLite cannot back up through it until that transaction commits or rolls back")]
    UncommittedWrites(PathBuf),
    /// SQLite's busy timeout (`timeout`, from [`crate::BackupOptions`]) ran out.
    #[error("{path}: database is locked by another process (gave up after {timeout:?})")]
    Locked { path: PathBuf, timeout: Duration },
    /// SQLITE_READONLY_ROLLBACK (776): the journal of an interrupted write
    /// transaction is waiting to be rolled back, which takes write access.
    #[error("{0}: has a hot journal ({0}-journal): a write transaction was interrupted (its process crashed or was killed) and must be rolled back, which a read-only backup cannot do (SQLite error 776, \"attempt to write a readonly database\"); open the database once with write access (restart the application that writes it, or run `sqlite3 {0} 'PRAGMA quick_check'` as a user allowed to write it) so that SQLite rolls the journal back, then back up again")]
    HotJournal(PathBuf),
    /// The backup was abandoned (see [`crate::Abandon`]) before it published anything.
    #[error("{0}: the backup was abandoned before its snapshot was published")]
    Abandoned(PathBuf),
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

/// The metadata of the source database file, refusing what is not a regular file.
///
/// `metadata` follows symlinks (a link to a database is fine) and never opens
/// the file, so it cannot block on a FIFO the way `open(2)` would.
pub fn source_metadata(path: &Path) -> Result<Metadata, CaptureError> {
    let m = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CaptureError::Missing(path.to_path_buf()))
        }
        Err(source) => {
            return Err(CaptureError::Inaccessible {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let t = m.file_type();
    let kind = if t.is_file() {
        return Ok(m);
    } else if t.is_dir() {
        return Err(CaptureError::IsDirectory(path.to_path_buf()));
    } else if t.is_fifo() {
        "FIFO (named pipe)"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_socket() {
        "socket"
    } else {
        "special file"
    };
    Err(CaptureError::NotARegularFile {
        path: path.to_path_buf(),
        kind,
    })
}

/// Opens `path` read-only for capture, with clear errors for the usual mistakes.
///
/// Only a regular file is opened ([`source_metadata`]). The file could still be
/// swapped for a FIFO between that check and SQLite's `open(2)`; that takes
/// someone racing the backup on purpose and is not guarded against.
pub fn open_source(path: &Path) -> Result<Connection, CaptureError> {
    source_metadata(path)?;
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    Connection::open_with_flags(path, flags).map_err(|source| CaptureError::Open {
        path: path.to_path_buf(),
        source,
    })
}

/// SQLITE_READONLY_ROLLBACK: a read-only connection found a hot journal.
const READONLY_ROLLBACK: std::ffi::c_int = 776;

/// Pauses before each retry of a read refused for a hot journal (0.3 s in all).
const HOT_JOURNAL_RETRIES: [Duration; 5] = [
    Duration::from_millis(10),
    Duration::from_millis(20),
    Duration::from_millis(40),
    Duration::from_millis(80),
    Duration::from_millis(160),
];

/// Whether `e` is SQLITE_READONLY_ROLLBACK (776): the database has a hot journal
/// that a read-only connection cannot roll back.
pub fn is_hot_journal(e: &rusqlite::Error) -> bool {
    e.sqlite_error()
        .is_some_and(|e| e.extended_code == READONLY_ROLLBACK)
}

/// Runs `read` (the read that starts a read transaction), again after short
/// pauses while it fails with a hot journal: in rollback-journal mode a reader
/// that starts just as a writer commits (a `VACUUM` makes it likely) can see
/// the journal before it is deleted and take it for a hot one. A journal left
/// by a crashed writer is still there after the retries; the error is returned.
pub fn retry_hot_journal<T>(mut read: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    for pause in HOT_JOURNAL_RETRIES {
        match read() {
            Err(e) if is_hot_journal(&e) => std::thread::sleep(pause),
            r => return r,
        }
    }
    read()
}

/// Maps an SQLite error on the source to a message a user can act on.
fn source_error(path: &Path, timeout: Duration, e: rusqlite::Error) -> CaptureError {
    if is_hot_journal(&e) {
        return CaptureError::HotJournal(path.to_path_buf());
    }
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
    pub prints: Option<Pending>,
    /// Whether blocks were compared with the parent's prints.
    pub compared: bool,
    /// Why the image was read through the backup API, or `None` if it was
    /// read directly from the file (and WAL).
    pub fallback: Option<String>,
    /// Bytes of the image taken from the parent without being read, the WAL
    /// proving them untouched (guide.rs); `None` if the capture was not guided.
    pub unread_bytes: Option<u64>,
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

/// Pages of the source's cache during the copy. The backup API reads each page
/// once: a small cache keeps the buffers SQLite reads into hot in the CPU's
/// cache (SQLite's default, 2 MB, cycles through cold ones): −8% of a 1 GiB
/// backup's CPU, −4% of its time (docs/PERFORMANCE.md).
const SOURCE_CACHE_PAGES: i64 = 16;

/// Sets the source connection's cache size for the copy and puts the caller's
/// back afterwards (the connection may be an application's own).
struct SourceCache<'c> {
    conn: &'c Connection,
    was: Option<i64>,
}

impl<'c> SourceCache<'c> {
    fn shrink(conn: &'c Connection) -> Self {
        let was = conn
            .query_row("PRAGMA main.cache_size", [], |r| r.get::<_, i64>(0))
            .ok();
        // Only a hint: if it cannot be set, the copy runs with the caller's.
        if was.is_some() {
            let _ = conn.execute_batch(&format!("PRAGMA main.cache_size={SOURCE_CACHE_PAGES}"));
        }
        SourceCache { conn, was }
    }
}

impl Drop for SourceCache<'_> {
    fn drop(&mut self) {
        if let Some(was) = self.was {
            let _ = self
                .conn
                .execute_batch(&format!("PRAGMA main.cache_size={was}"));
        }
    }
}

/// The database file's device and inode, which a WAL mark records
/// (guide.rs): the file `src` has open, by its name.
fn file_identity(src: &Connection) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(src.path().filter(|p| !p.is_empty())?).ok()?;
    Some((m.dev(), m.ino()))
}

/// Copies a consistent image of `src` (labelled `path` in messages) into `writer`,
/// printing its chunks with `printing` (backup/prints/) if given. With
/// `follow_wal`, a WAL database whose parent's record holds a WAL mark is read
/// only where the WAL proves pages changed (guide.rs).
#[allow(clippy::too_many_arguments)]
pub(crate) fn capture(
    src: &Connection,
    path: &Path,
    busy_timeout: Duration,
    chunk_pages: u32,
    mut writer: ChunkWriter,
    mut printing: Option<Printing>,
    follow_wal: bool,
    progress: Option<&crate::Progress>,
    abandon: Option<&crate::Abandon>,
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
    let _cache = SourceCache::shrink(src);
    let first_read = || {
        retry_hot_journal(|| {
            src.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
                r.get::<_, i64>(0)
            })
        })?;
        let size: u32 = src.query_row("PRAGMA main.page_size", [], |r| r.get(0))?;
        let pages: i64 = src.query_row("PRAGMA main.page_count", [], |r| r.get(0))?;
        Ok((size, pages.max(0) as u64))
    };
    let (mut page_size, mut pages) = first_read().map_err(err)?;
    // The parent's WAL mark, if this capture may follow it (guide.rs).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let file = file_identity(src);
    let parent_mark = printing
        .as_ref()
        .and_then(|p| p.parent.as_ref())
        .and_then(|p| p.wal())
        .filter(|m| follow_wal && file.is_some_and(|f| guide::may_follow(m, f, now)));
    // Only a transaction this capture started may be restarted to pin a WAL
    // snapshot; inside a caller's own, the backup API reads what it sees.
    let plan = match owned {
        true => {
            let restart = || {
                src.execute_batch("ROLLBACK; BEGIN DEFERRED")?;
                first_read()
            };
            let since = parent_mark.map(|m| m.position);
            direct::pin(src, (page_size, pages), since, restart).map_err(err)?
        }
        false => Err(direct::Fallback(
            "the caller holds its own transaction".into(),
        )),
    };
    if let Ok(plan) = &plan {
        (page_size, pages) = (plan.page_size, plan.pages);
    }
    let chunk_len = page_size as u64 * chunk_pages as u64;
    // This snapshot's WAL mark: a guided capture keeps the time of the full
    // read it follows from, any other is one.
    let guided = plan.as_ref().is_ok_and(|p| p.guide.is_some());
    let mark = plan.as_ref().ok().and_then(|p| p.position).zip(file);
    let mark = mark.map(|(position, file)| guide::WalMark {
        position,
        file,
        full_read_at: match (guided, parent_mark) {
            (true, Some(m)) => m.full_read_at,
            _ => now,
        },
    });
    if let Some(p) = &mut printing {
        p.begin(chunk_len);
        p.mark(mark);
    }
    let compared = printing.as_ref().is_some_and(|p| p.parent.is_some());

    // The size at the start of the copy (through the backup API it may still
    // change: it restarts after a write through another connection); tables,
    // and a first backup's table of new chunks, are sized for it, and grow if needed.
    let expect = pages.div_ceil(chunk_pages.max(1) as u64);
    let expect = expect.min(1 << 30) as usize;
    writer.expect_new(expect);
    let mut image = CaptureImage::new(writer, chunk_len, printing, expect, plan.is_ok())?;
    let fallback = match plan {
        Ok(plan) => {
            let mut sink = DirectSink {
                image: &mut image,
                path,
                progress,
                abandon,
                reported: 0,
            };
            let block = image::block_len(chunk_len);
            if let Err(failed) = direct::copy(src, &plan, block, &mut sink)? {
                return Err(unreadable(path, failed));
            }
            None
        }
        Err(direct::Fallback(why)) => {
            let shared = Arc::new(Mutex::new(image));
            let step_result = copy(
                src,
                path,
                busy_timeout,
                page_size,
                shared.clone(),
                progress,
                abandon,
            );
            image = Arc::try_unwrap(shared)
                .map_err(|_| {
                    Error::Internal("capture target still referenced after the copy".into())
                })?
                .into_inner()
                .map_err(|_| Error::Internal("capture target lock poisoned".into()))?;
            if let Err(e) = step_result {
                // A store error seen by the target explains the failure better than SQLite's code.
                return Err(image.take_error().unwrap_or(e));
            }
            Some(why)
        }
    };
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
        prints: captured.prints,
        compared,
        fallback,
        unread_bytes: guided.then_some(captured.unread * image::block_len(chunk_len)),
    })
}

/// The error of a direct read that failed: the database at `path`, or its
/// WAL, could not be read.
fn unreadable(path: &Path, failed: direct::ReadFailed) -> Error {
    let path = match failed.wal {
        true => wal_path(path),
        false => path.to_path_buf(),
    };
    Error::Capture(CaptureError::Inaccessible {
        path,
        source: failed.error,
    })
}

/// `path` with `-wal` appended: the WAL SQLite keeps beside it.
pub(crate) fn wal_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// Bytes between two progress reports of a direct read (as the backup API's steps).
const DIRECT_REPORT_BYTES: u64 = 4 << 20;

/// Feeds a direct read into the capture image.
struct DirectSink<'a> {
    image: &'a mut CaptureImage,
    path: &'a Path,
    progress: Option<&'a crate::Progress>,
    abandon: Option<&'a crate::Abandon>,
    reported: u64,
}

impl direct::BlockSink for DirectSink<'_> {
    fn buffer(&mut self, len: usize) -> Vec<u8> {
        self.image.buffer(len)
    }

    fn put(&mut self, offset: u64, buf: Vec<u8>) -> Result<()> {
        self.image.put(offset, buf)
    }

    fn read_blocks(
        &mut self,
        blocks: std::ops::Range<u64>,
        read: &direct::ReadBlock<'_>,
        untouched: &direct::Untouched<'_>,
    ) -> Result<std::result::Result<(), direct::ReadFailed>> {
        // A failed read stops the batch with the error the capture reports.
        let path = self.path;
        let read = |b, buf: &mut [u8]| read(b, buf).map_err(|f| unreadable(path, f));
        self.image.read_blocks(blocks, &read, untouched).map(Ok)
    }

    fn between(&mut self, done: u64, total: u64) -> Result<()> {
        if self.abandon.is_some_and(|a| a.is_abandoned()) {
            return Err(Error::Capture(CaptureError::Abandoned(
                self.path.to_path_buf(),
            )));
        }
        if done == total || done >= self.reported + DIRECT_REPORT_BYTES {
            self.reported = done;
            crate::progress::report(self.progress, done, total);
        }
        Ok(())
    }
}

/// Runs the backup API from `src` into a capture connection over `image`.
fn copy(
    src: &Connection,
    path: &Path,
    busy_timeout: Duration,
    page_size: u32,
    image: Arc<Mutex<CaptureImage>>,
    progress: Option<&crate::Progress>,
    abandon: Option<&crate::Abandon>,
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
            // An abandoned capture that wakes up (its source stalled) stops copying.
            if abandon.is_some_and(|a| a.is_abandoned()) {
                return Err(Error::Capture(CaptureError::Abandoned(path.to_path_buf())));
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_are_sources() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        Connection::open(&db)
            .unwrap()
            .execute_batch("CREATE TABLE t(x)")
            .unwrap();
        let link = dir.path().join("link.db");
        std::os::unix::fs::symlink(&db, &link).unwrap();
        assert!(source_metadata(&link).is_ok(), "a symlink to a database");
        let sock = dir.path().join("s.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert!(matches!(
            open_source(&sock),
            Err(CaptureError::NotARegularFile { kind: "socket", .. })
        ));
        assert!(matches!(
            open_source(Path::new("/dev/null")),
            Err(CaptureError::NotARegularFile {
                kind: "character device",
                ..
            })
        ));
        assert!(matches!(
            open_source(dir.path()),
            Err(CaptureError::IsDirectory(_))
        ));
        assert!(matches!(
            open_source(&dir.path().join("none.db")),
            Err(CaptureError::Missing(_))
        ));
    }

    /// `hot.db` and its journal as a writer killed mid-transaction leaves them.
    fn hot_copy(dir: &Path) -> PathBuf {
        let live = dir.join("live.db");
        let w = Connection::open(&live).unwrap();
        w.execute_batch(
            "PRAGMA journal_mode = DELETE;
             CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB);
             WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 500)
             INSERT INTO t SELECT x, randomblob(500) FROM c;
             PRAGMA cache_size = 5;
             BEGIN; UPDATE t SET b = randomblob(600);",
        )
        .unwrap();
        let hot = dir.join("hot.db");
        std::fs::copy(&live, &hot).unwrap();
        std::fs::copy(dir.join("live.db-journal"), dir.join("hot.db-journal")).unwrap();
        w.execute_batch("ROLLBACK").unwrap();
        hot
    }

    fn first_read(c: &Connection) -> rusqlite::Result<i64> {
        c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
    }

    #[test]
    fn a_hot_journal_that_stays_is_reported_after_the_retries() {
        let dir = tempfile::tempdir().unwrap();
        let hot = hot_copy(dir.path());
        let c = open_source(&hot).unwrap();
        let started = Instant::now();
        let e = retry_hot_journal(|| first_read(&c)).unwrap_err();
        assert!(is_hot_journal(&e), "{e}");
        assert!(started.elapsed() >= Duration::from_millis(300));
        let msg = source_error(&hot, Duration::ZERO, e).to_string();
        assert!(
            msg.contains("hot journal") && msg.contains("hot.db-journal"),
            "{msg}"
        );
    }

    #[test]
    fn a_hot_journal_rolled_back_meanwhile_is_retried_through() {
        let dir = tempfile::tempdir().unwrap();
        let hot = hot_copy(dir.path());
        let c = open_source(&hot).unwrap();
        assert!(is_hot_journal(&first_read(&c).unwrap_err()));
        // Another process with write access rolls it back shortly after (the
        // writer of a racing commit deletes its journal the same way).
        let h = hot.clone();
        let rollback = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            first_read(&Connection::open(&h).unwrap()).unwrap()
        });
        assert_eq!(retry_hot_journal(|| first_read(&c)).unwrap(), 500);
        assert_eq!(rollback.join().unwrap(), 500);
    }
}

//! A capture VFS: lets SQLite's online backup API stream a database image into
//! a Rust [`CaptureTarget`] without a temporary file.
//!
//! The process-wide VFS `pagesnap-capture` is registered lazily (never as the
//! default VFS). Each [`open_capture_connection`] call registers its target
//! under a unique file name in a global registry; when SQLite opens that name
//! as a main database file, the file's `xRead`/`xWrite`/`xTruncate`/`xFileSize`
//! are forwarded to the target. No other file type can be opened: the
//! connection runs with `journal_mode=OFF`, so no journal, WAL or temp file is
//! needed.
//!
//! `unsafe` lives here, in the snapshot VFS (query/vfs.rs), in what both
//! share (sqlite_vfs.rs) and in the direct capture's calls into the source's
//! own files (source_files.rs), and nowhere else. Every SQLite callback catches panics (no unwinding crosses the FFI boundary) and
//! maps a poisoned mutex to an I/O error code instead of panicking.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

use std::any::Any;
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::fmt;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use crate::sqlite_vfs;
use rusqlite::{ffi, Connection, OpenFlags};

/// Receives the destination main-file I/O of a backup. Implemented by the chunker elsewhere.
pub trait CaptureTarget: Send {
    /// SQLite wrote `data` at byte `offset` of the main database file.
    fn write_at(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()>;
    /// Fill `buf` with the bytes at `offset`. The implementation zero-fills what does not exist
    /// and returns how many leading bytes of `buf` were real content (< buf.len() means a short read).
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize>;
    /// Drop everything at and beyond `size`.
    fn truncate(&mut self, size: u64) -> std::io::Result<()>;
    /// Current logical file size in bytes.
    fn size(&self) -> u64;
}

pub type SharedTarget = Arc<Mutex<dyn CaptureTarget>>;

/// Name under which the capture VFS is registered with SQLite.
const VFS_NAME: &CStr = c"pagesnap-capture";

/// Where the file methods leave the last error a target returned.
type ErrorSlot = Arc<Mutex<Option<io::Error>>>;

/// What `xOpen` needs to find for a registered file name.
#[derive(Clone)]
struct Registration {
    target: SharedTarget,
    error: ErrorSlot,
}

/// File name -> target, for the connections opened by [`open_capture_connection`].
fn registry() -> MutexGuard<'static, HashMap<String, Registration>> {
    static REGISTRY: OnceLock<Mutex<HashMap<String, Registration>>> = OnceLock::new();
    // A panic while the registry was locked cannot leave the map half-updated
    // (every critical section is a single insert/remove/get), so a poisoned
    // lock is safe to keep using.
    REGISTRY
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// Removes a registry entry when dropped.
struct RegistryGuard {
    name: String,
}

impl Drop for RegistryGuard {
    fn drop(&mut self) {
        // Take the entry out under the lock but drop it (and thereby possibly
        // the last reference to a target) after the lock is released.
        let entry = registry().remove(&self.name);
        drop(entry);
    }
}

/// A destination connection whose main database file is a CaptureTarget.
pub struct CaptureConnection {
    // Field order matters: fields are dropped in declaration order, so the
    // connection is closed before the registry entry is removed.
    conn: Connection,
    error: ErrorSlot,
    registration: RegistryGuard,
}

impl CaptureConnection {
    pub fn conn(&mut self) -> &mut rusqlite::Connection {
        &mut self.conn
    }

    /// The last I/O error message the target returned, if any (so callers can report e.g. "No space left on device" rather than SQLite's generic disk I/O error).
    pub fn take_target_error(&self) -> Option<std::io::Error> {
        self.error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// The unique file name this connection's main database is registered under.
    #[cfg(test)]
    fn file_name(&self) -> &str {
        &self.registration.name
    }
}

impl fmt::Debug for CaptureConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaptureConnection")
            .field("file_name", &self.registration.name)
            .finish_non_exhaustive()
    }
}

/// Open a connection on the process-wide VFS "pagesnap-capture" (registered once, lazily, thread-safely, NOT as the default VFS)
/// whose main database file is `target`. The connection is configured for streaming:
/// `PRAGMA journal_mode=OFF`, `PRAGMA synchronous=OFF`, a small `cache_size` (e.g. -1024, i.e. 1 MiB), cache_spill left on,
/// `PRAGMA locking_mode=EXCLUSIVE` is fine.
///
/// Memory note: SQLite sizes the page cache for a negative `cache_size` with the
/// page size current when the size is set, and does not recompute it when the
/// backup later switches the empty destination to the source's page size. The
/// cache is therefore sized for 4096-byte pages (about 240 pages): a 64 KiB-page
/// source holds up to ~14 MiB of dirty pages before the first spill. Callers
/// that know the source page size can run `PRAGMA page_size=<source>;
/// PRAGMA cache_size=-1024;` on [`CaptureConnection::conn`] before starting the
/// backup to get the intended ~1 MiB bound (the captured image is unchanged).
pub fn open_capture_connection(target: SharedTarget) -> rusqlite::Result<CaptureConnection> {
    ensure_vfs_registered().map_err(|rc| {
        rusqlite::Error::SqliteFailure(
            ffi::Error::new(rc),
            Some("cannot register the pagesnap-capture VFS".to_owned()),
        )
    })?;

    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "pagesnap-capture-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let error = ErrorSlot::default();
    registry().insert(
        name.clone(),
        Registration {
            target,
            error: Arc::clone(&error),
        },
    );
    // From here on the guard removes the entry again, also if opening fails.
    let registration = RegistryGuard { name };

    let conn = Connection::open_with_flags_and_vfs(
        &registration.name,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        VFS_NAME,
    )?;
    conn.execute_batch(
        "PRAGMA locking_mode=EXCLUSIVE;
         PRAGMA synchronous=OFF;
         PRAGMA cache_size=-1024;",
    )?;
    let mode: String = conn.query_row("PRAGMA journal_mode=OFF", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("off") {
        return Err(rusqlite::Error::SqliteFailure(
            ffi::Error::new(ffi::SQLITE_ERROR),
            Some(format!(
                "capture connection refused journal_mode=OFF (got {mode})"
            )),
        ));
    }
    Ok(CaptureConnection {
        conn,
        error,
        registration,
    })
}

// ---------------------------------------------------------------------------
// VFS registration
// ---------------------------------------------------------------------------

/// Registers the capture VFS on first use; later calls return the first result.
fn ensure_vfs_registered() -> Result<(), c_int> {
    static REGISTERED: OnceLock<c_int> = OnceLock::new();
    match *REGISTERED.get_or_init(register_vfs) {
        ffi::SQLITE_OK => Ok(()),
        rc => Err(rc),
    }
}

fn register_vfs() -> c_int {
    let size = sqlite_vfs::file_size::<FileState>();
    // SAFETY: the three callbacks have the signatures SQLite expects and
    // follow its contracts (see each); VFS_NAME is a 'static C string.
    unsafe { sqlite_vfs::register(VFS_NAME, size, x_open, x_delete, x_access) }
}

unsafe extern "C" fn x_open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite passes a writable buffer of szOsFile bytes (room for one
    // of our files, suitably aligned for pointers) and reads pMethods after a
    // failed xOpen; a null pMethods tells it not to call xClose.
    unsafe { (*file).pMethods = ptr::null() };
    if flags & ffi::SQLITE_OPEN_MAIN_DB == 0 || name.is_null() {
        // journal_mode=OFF: no journal, WAL, temp or sub-journal is ever needed.
        return ffi::SQLITE_CANTOPEN;
    }
    // SAFETY: a non-null name passed to xOpen is a NUL-terminated string that
    // stays valid for the duration of the call (it is the output of our
    // xFullPathname, possibly followed by URI parameters after the NUL).
    let name = unsafe { CStr::from_ptr(name) };
    let state = sqlite_vfs::no_unwind(None, || {
        let name = name.to_str().ok()?;
        let registration = registry().get(name).cloned()?;
        Some(FileState {
            target: registration.target,
            error: registration.error,
        })
    });
    let Some(state) = state else {
        return ffi::SQLITE_CANTOPEN;
    };
    // SAFETY: `file` is SQLite's xOpen buffer of szOsFile bytes, room for one
    // of our files; IO_METHODS is a 'static.
    unsafe { sqlite_vfs::install(file, &IO_METHODS, state) };
    if !out_flags.is_null() {
        // SAFETY: a non-null pOutFlags points to a writable int.
        unsafe { *out_flags = flags };
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_delete(
    _vfs: *mut ffi::sqlite3_vfs,
    _name: *const c_char,
    _sync_dir: c_int,
) -> c_int {
    // Nothing but registered main files ever exists here, and those are owned
    // by their CaptureTarget.
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_access(
    _vfs: *mut ffi::sqlite3_vfs,
    _name: *const c_char,
    _flags: c_int,
    res_out: *mut c_int,
) -> c_int {
    // Report that nothing exists, so SQLite never looks for a hot journal or
    // a WAL file next to the capture file.
    if !res_out.is_null() {
        // SAFETY: SQLite passes a valid, writable int for the result.
        unsafe { *res_out = 0 };
    }
    ffi::SQLITE_OK
}

// ---------------------------------------------------------------------------
// The main database file
// ---------------------------------------------------------------------------

struct FileState {
    target: SharedTarget,
    error: ErrorSlot,
}

impl FileState {
    /// Runs `op` on the locked target. An `Err`, a poisoned target mutex or a
    /// panic is recorded in the error slot and turned into an SQLite code:
    /// `SQLITE_FULL` for "no space left" when `full_allowed`, else `io_err`.
    fn with_target(
        &self,
        io_err: c_int,
        full_allowed: bool,
        op: impl FnOnce(&mut dyn CaptureTarget) -> io::Result<c_int>,
    ) -> c_int {
        // Ok(Err(_)): the target returned an error. Err(_): the target mutex
        // is poisoned, i.e. an earlier call panicked.
        let result = catch_unwind(AssertUnwindSafe(|| match self.target.lock() {
            Ok(mut target) => Ok(op(&mut *target)),
            Err(_) => Err(()),
        }))
        .unwrap_or_else(|payload| {
            Ok(Err(io::Error::other(format!(
                "capture target panicked: {}",
                panic_message(payload.as_ref())
            ))))
        });
        let mut slot = self.error.lock().unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(Ok(rc)) => rc,
            Ok(Err(err)) => {
                let rc = if full_allowed && is_storage_full(&err) {
                    ffi::SQLITE_FULL
                } else {
                    io_err
                };
                *slot = Some(err);
                rc
            }
            Err(()) => {
                // Keep the error that explains the poisoning (the panic
                // message) rather than replacing it with this consequence.
                if slot.is_none() {
                    *slot = Some(io::Error::other(
                        "capture target mutex is poisoned (an earlier call panicked)",
                    ));
                }
                io_err
            }
        }
    }
}

fn is_storage_full(err: &io::Error) -> bool {
    const ENOSPC: i32 = 28;
    err.kind() == io::ErrorKind::StorageFull || err.raw_os_error() == Some(ENOSPC)
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "non-string panic payload"
    }
}

/// The Rust state of an open capture file.
///
/// # Safety
/// `file` must be a file opened successfully by [`x_open`] and not yet closed.
unsafe fn file_state<'a>(file: *mut ffi::sqlite3_file) -> Option<&'a FileState> {
    // SAFETY: per the contract, x_open installed it with a FileState; its
    // contents are synchronised with mutexes.
    unsafe { sqlite_vfs::state(file) }
}

static IO_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 1,
    xClose: Some(x_close),
    xRead: Some(x_read),
    xWrite: Some(x_write),
    xTruncate: Some(x_truncate),
    xSync: Some(sqlite_vfs::x_sync),
    xFileSize: Some(x_file_size),
    xLock: Some(x_lock),
    xUnlock: Some(sqlite_vfs::x_unlock),
    xCheckReservedLock: Some(sqlite_vfs::x_check_reserved_lock),
    xFileControl: Some(sqlite_vfs::x_file_control),
    xSectorSize: Some(sqlite_vfs::x_sector_size),
    xDeviceCharacteristics: Some(x_device_characteristics),
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

unsafe extern "C" fn x_close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite calls xClose once, on a file x_open installed with a
    // FileState. Dropping it may release the last reference to the target.
    unsafe { sqlite_vfs::close::<FileState>(file) }
}

unsafe extern "C" fn x_read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amount: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: SQLite only calls xRead on files x_open opened and has not closed.
    let Some(state) = (unsafe { file_state(file) }) else {
        return ffi::SQLITE_IOERR_READ;
    };
    let (Ok(len), Ok(offset)) = (usize::try_from(amount), u64::try_from(offset)) else {
        return ffi::SQLITE_IOERR_READ;
    };
    if len == 0 {
        return ffi::SQLITE_OK;
    }
    // SAFETY: SQLite passes a buffer of `amount` writable bytes that nothing
    // else accesses during the call. It may be uninitialised, so it is zeroed
    // before a `&mut [u8]` is formed over it (which also gives a short read
    // its required zero fill).
    let buf = unsafe {
        ptr::write_bytes(buf.cast::<u8>(), 0, len);
        std::slice::from_raw_parts_mut(buf.cast::<u8>(), len)
    };
    state.with_target(ffi::SQLITE_IOERR_READ, false, |target| {
        let got = target.read_at(offset, buf)?;
        if got >= buf.len() {
            Ok(ffi::SQLITE_OK)
        } else {
            // SQLite requires the unread tail to be zero; don't rely on the target.
            buf[got..].fill(0);
            Ok(ffi::SQLITE_IOERR_SHORT_READ)
        }
    })
}

unsafe extern "C" fn x_write(
    file: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amount: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: SQLite only calls xWrite on files x_open opened and has not closed.
    let Some(state) = (unsafe { file_state(file) }) else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    let (Ok(len), Ok(offset)) = (usize::try_from(amount), u64::try_from(offset)) else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    if len == 0 {
        return ffi::SQLITE_OK;
    }
    // SAFETY: SQLite passes `amount` initialised bytes (page images it is
    // writing out) that stay valid and unmodified for the duration of the call.
    let data = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) };
    state.with_target(ffi::SQLITE_IOERR_WRITE, true, |target| {
        target.write_at(offset, data)?;
        Ok(ffi::SQLITE_OK)
    })
}

unsafe extern "C" fn x_truncate(file: *mut ffi::sqlite3_file, size: ffi::sqlite3_int64) -> c_int {
    // SAFETY: SQLite only calls xTruncate on files x_open opened and has not closed.
    let Some(state) = (unsafe { file_state(file) }) else {
        return ffi::SQLITE_IOERR_TRUNCATE;
    };
    let Ok(size) = u64::try_from(size) else {
        return ffi::SQLITE_IOERR_TRUNCATE;
    };
    state.with_target(ffi::SQLITE_IOERR_TRUNCATE, true, |target| {
        target.truncate(size)?;
        Ok(ffi::SQLITE_OK)
    })
}

unsafe extern "C" fn x_file_size(
    file: *mut ffi::sqlite3_file,
    size_out: *mut ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: SQLite only calls xFileSize on files x_open opened and has not closed.
    let Some(state) = (unsafe { file_state(file) }) else {
        return ffi::SQLITE_IOERR_FSTAT;
    };
    let mut size: ffi::sqlite3_int64 = 0;
    let rc = state.with_target(ffi::SQLITE_IOERR_FSTAT, false, |target| {
        size = ffi::sqlite3_int64::try_from(target.size()).map_err(io::Error::other)?;
        Ok(ffi::SQLITE_OK)
    });
    if rc == ffi::SQLITE_OK {
        // SAFETY: SQLite passes a valid, writable sqlite3_int64 for the result.
        unsafe { *size_out = size };
    }
    rc
}

unsafe extern "C" fn x_lock(_file: *mut ffi::sqlite3_file, _level: c_int) -> c_int {
    // The file belongs to exactly one connection: locks always succeed.
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_device_characteristics(_file: *mut ffi::sqlite3_file) -> c_int {
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::backup::{Backup, StepResult};
    use std::cell::RefCell;
    use std::path::{Path, PathBuf};

    /// One I/O call as seen by a target.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Op {
        Write(u64, usize),
        Read(u64, usize),
        Truncate(u64),
        Size(u64),
    }

    /// In-memory target: grows on write, zero-filled, truncate shrinks.
    #[derive(Default)]
    struct VecTarget {
        data: Vec<u8>,
        log: RefCell<Vec<Op>>,
    }

    impl CaptureTarget for VecTarget {
        fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
            self.log.get_mut().push(Op::Write(offset, data.len()));
            let start = usize::try_from(offset).map_err(io::Error::other)?;
            let end = start + data.len();
            if self.data.len() < end {
                self.data.resize(end, 0);
            }
            self.data[start..end].copy_from_slice(data);
            Ok(())
        }

        fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
            self.log.get_mut().push(Op::Read(offset, buf.len()));
            buf.fill(0);
            let start = usize::try_from(offset).map_err(io::Error::other)?;
            if start >= self.data.len() {
                return Ok(0);
            }
            let n = buf.len().min(self.data.len() - start);
            buf[..n].copy_from_slice(&self.data[start..start + n]);
            Ok(n)
        }

        fn truncate(&mut self, size: u64) -> io::Result<()> {
            self.log.get_mut().push(Op::Truncate(size));
            let size = usize::try_from(size).map_err(io::Error::other)?;
            self.data.truncate(size);
            Ok(())
        }

        fn size(&self) -> u64 {
            let size = self.data.len() as u64;
            self.log.borrow_mut().push(Op::Size(size));
            size
        }
    }

    /// A target whose writes fail with ENOSPC.
    struct FullTarget;

    impl CaptureTarget for FullTarget {
        fn write_at(&mut self, _offset: u64, _data: &[u8]) -> io::Result<()> {
            Err(io::Error::from_raw_os_error(28))
        }
        fn read_at(&mut self, _offset: u64, buf: &mut [u8]) -> io::Result<usize> {
            buf.fill(0);
            Ok(0)
        }
        fn truncate(&mut self, _size: u64) -> io::Result<()> {
            Ok(())
        }
        fn size(&self) -> u64 {
            0
        }
    }

    /// A target whose writes panic.
    struct PanickingTarget;

    impl CaptureTarget for PanickingTarget {
        fn write_at(&mut self, _offset: u64, _data: &[u8]) -> io::Result<()> {
            panic!("write_at exploded");
        }
        fn read_at(&mut self, _offset: u64, buf: &mut [u8]) -> io::Result<usize> {
            buf.fill(0);
            Ok(0)
        }
        fn truncate(&mut self, _size: u64) -> io::Result<()> {
            Ok(())
        }
        fn size(&self) -> u64 {
            0
        }
    }

    /// Builds a source database with a few thousand rows, blobs (some
    /// overflowing), indexes and free pages from a dropped table. Returns the
    /// open connection (a WAL source keeps its content in the -wal file).
    fn build_source(path: &Path, page_size: u32, wal: bool) -> Connection {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(&format!("PRAGMA page_size={page_size};"))
            .unwrap();
        let mode: String = conn
            .query_row(
                if wal {
                    "PRAGMA journal_mode=WAL"
                } else {
                    "PRAGMA journal_mode=DELETE"
                },
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(mode, if wal { "wal" } else { "delete" });
        conn.execute_batch(
            "PRAGMA wal_autocheckpoint=0;
             BEGIN;
             CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER, payload BLOB);
             CREATE INDEX items_name ON items(name);
             CREATE INDEX items_qty ON items(qty, name);
             CREATE TABLE doomed(a TEXT, b BLOB);
             CREATE INDEX doomed_a ON doomed(a);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
               INSERT INTO items(name, qty, payload)
               SELECT printf('item-%05d-%s', i, hex(randomblob(8))), i * 7 % 1000,
                      CASE WHEN i % 97 = 0 THEN randomblob(20000 + i)
                           WHEN i % 5 = 0 THEN randomblob(300)
                           ELSE NULL END
               FROM n;
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1500)
               INSERT INTO doomed SELECT hex(randomblob(40)), randomblob(200) FROM n;
             COMMIT;
             DROP TABLE doomed;
             DELETE FROM items WHERE id % 11 = 0;",
        )
        .unwrap();
        let free: i64 = conn
            .query_row("PRAGMA freelist_count", [], |r| r.get(0))
            .unwrap();
        assert!(free > 0, "source should have free pages");
        // Back up through a fresh connection. The writer's page cache may still
        // hold freed (freelist-leaf) pages whose in-memory content was never
        // written to disk, and a backup reads through that cache: which
        // version of such a page it sees depends on cache eviction, so two
        // backups from the writer need not agree byte for byte. Opening the
        // reader before closing the writer keeps a WAL source's -wal file.
        let reader = Connection::open(path).unwrap();
        reader
            .query_row("SELECT count(*) FROM items", [], |r| r.get::<_, i64>(0))
            .unwrap();
        drop(conn);
        if wal {
            let wal_len = std::fs::metadata(path.with_extension("db-wal"))
                .unwrap()
                .len();
            assert!(wal_len > 0, "WAL source should keep its content in the WAL");
        }
        reader
    }

    /// Streams `src` into a fresh VecTarget via the capture VFS.
    fn capture(src: &Connection) -> (Vec<u8>, Vec<Op>) {
        let target = Arc::new(Mutex::new(VecTarget::default()));
        let shared: SharedTarget = target.clone();
        let mut cap = open_capture_connection(shared).unwrap();
        let name = cap.file_name().to_owned();
        assert!(registry().contains_key(&name));
        let at_done = {
            let backup = Backup::new(src, cap.conn()).unwrap();
            loop {
                match backup.step(16).unwrap() {
                    StepResult::Done => break,
                    StepResult::More => {}
                    other => panic!("unexpected step result {other:?}"),
                }
            }
            target.lock().unwrap().data.clone()
        };
        assert!(cap.take_target_error().is_none());
        drop(cap);
        assert!(
            !registry().contains_key(&name),
            "registry entry left behind"
        );
        assert_eq!(Arc::strong_count(&target), 1, "target still referenced");
        let target = Arc::try_unwrap(target).ok().unwrap().into_inner().unwrap();
        assert_eq!(
            at_done, target.data,
            "closing the connection changed the image"
        );
        (target.data, target.log.into_inner())
    }

    /// Plain file backup of `src`.
    fn file_backup(src: &Connection, dir: &Path) -> Vec<u8> {
        let path = dir.join("file-backup.db");
        src.backup(rusqlite::MAIN_DB, &path, rusqlite::backup::NO_PROGRESS)
            .unwrap();
        std::fs::read(path).unwrap()
    }

    fn check_image(image: &[u8], dir: &Path, page_size: u32) {
        let path: PathBuf = dir.join("captured.db");
        std::fs::write(&path, image).unwrap();
        let conn = Connection::open(&path).unwrap();
        let ok: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
        let ps: u32 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ps, page_size);
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM items", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 3000 - 3000 / 11);
    }

    fn round_trip(page_size: u32, wal: bool) {
        let dir = tempfile::tempdir().unwrap();
        let src = build_source(&dir.path().join("src.db"), page_size, wal);
        let (captured, log) = capture(&src);
        let expected = file_backup(&src, dir.path());
        assert_eq!(captured.len(), expected.len());
        assert_eq!(blake3::hash(&captured), blake3::hash(&expected));
        check_image(&captured, dir.path(), page_size);
        if std::env::var_os("PAGESNAP_VFS_TRACE").is_some() {
            print_trace(page_size, wal, captured.len(), &log);
        }
    }

    /// Summarises how SQLite drove the file (shown with PAGESNAP_VFS_TRACE=1
    /// and --nocapture).
    fn print_trace(page_size: u32, wal: bool, len: usize, log: &[Op]) {
        let pages = len / page_size as usize;
        let mut writes_per_page = vec![0u32; pages];
        let mut write_order = Vec::new();
        for op in log {
            if let Op::Write(off, n) = *op {
                assert_eq!(n, page_size as usize);
                writes_per_page[(off / u64::from(page_size)) as usize] += 1;
                write_order.push(off / u64::from(page_size) + 1);
            }
        }
        let page1_pos = write_order.iter().position(|&p| p == 1);
        let head: Vec<_> = log.iter().take(12).collect();
        let tail: Vec<_> = log.iter().rev().take(8).rev().collect();
        println!(
            "page_size={page_size} wal={wal} pages={pages} ops={} writes={} reads={} truncates={:?} sizes={} \
             max_writes_per_page={} never_written={} page1_write_index={page1_pos:?}\n  head={head:?}\n  tail={tail:?}",
            log.len(),
            write_order.len(),
            log.iter().filter(|o| matches!(o, Op::Read(..))).count(),
            log.iter()
                .filter_map(|o| match o {
                    Op::Truncate(s) => Some(*s),
                    _ => None,
                })
                .collect::<Vec<_>>(),
            log.iter().filter(|o| matches!(o, Op::Size(..))).count(),
            writes_per_page.iter().max().unwrap_or(&0),
            writes_per_page.iter().filter(|&&w| w == 0).count(),
        );
    }

    #[test]
    fn rollback_512() {
        round_trip(512, false);
    }

    #[test]
    fn rollback_4096() {
        round_trip(4096, false);
    }

    #[test]
    fn rollback_65536() {
        round_trip(65536, false);
    }

    #[test]
    fn wal_512() {
        round_trip(512, true);
    }

    #[test]
    fn wal_4096() {
        round_trip(4096, true);
    }

    #[test]
    fn wal_65536() {
        round_trip(65536, true);
    }

    #[test]
    fn parallel_captures() {
        let handles: Vec<_> = [(4096, false), (1024, true)]
            .into_iter()
            .map(|(page_size, wal)| std::thread::spawn(move || round_trip(page_size, wal)))
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
    }

    #[test]
    fn reads_go_through_the_target() {
        // Open a capture connection on a target that already holds an image
        // and query it: every page comes through xRead / xFileSize.
        let dir = tempfile::tempdir().unwrap();
        let src = build_source(&dir.path().join("src.db"), 4096, false);
        let image = file_backup(&src, dir.path());
        let target = Arc::new(Mutex::new(VecTarget {
            data: image,
            log: RefCell::default(),
        }));
        let mut cap = open_capture_connection(target.clone()).unwrap();
        let rows: i64 = cap
            .conn()
            .query_row("SELECT count(*) FROM items", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 3000 - 3000 / 11);
        let ok: String = cap
            .conn()
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
        drop(cap);
        let target = target.lock().unwrap();
        assert!(target
            .log
            .borrow()
            .iter()
            .any(|op| matches!(op, Op::Read(..))));
    }

    #[test]
    fn registry_entry_removed_on_drop() {
        let target = Arc::new(Mutex::new(VecTarget::default()));
        let cap = open_capture_connection(target.clone()).unwrap();
        let name = cap.file_name().to_owned();
        assert!(name.starts_with(&format!("pagesnap-capture-{}-", std::process::id())));
        assert!(registry().contains_key(&name));
        // Registry entry + open file each hold a clone.
        assert_eq!(Arc::strong_count(&target), 3);
        drop(cap);
        assert!(!registry().contains_key(&name));
        assert_eq!(Arc::strong_count(&target), 1);
    }

    #[test]
    fn unregistered_name_cannot_be_opened() {
        ensure_vfs_registered().unwrap();
        let err = Connection::open_with_flags_and_vfs(
            "pagesnap-capture-not-registered",
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
            VFS_NAME,
        )
        .unwrap_err();
        assert_eq!(
            err.sqlite_error_code(),
            Some(rusqlite::ErrorCode::CannotOpen)
        );
    }

    #[test]
    fn not_the_default_vfs() {
        ensure_vfs_registered().unwrap();
        // SAFETY: sqlite3_vfs_find(null) returns the default VFS (static,
        // registered by SQLite); zName is a NUL-terminated static string.
        let name = unsafe { CStr::from_ptr((*ffi::sqlite3_vfs_find(ptr::null())).zName) };
        assert_ne!(name, VFS_NAME);
    }

    fn run_backup_expecting_error(
        cap: &mut CaptureConnection,
        src: &Connection,
    ) -> rusqlite::Error {
        let backup = Backup::new(src, cap.conn()).unwrap();
        loop {
            match backup.step(16) {
                Ok(StepResult::Done) => panic!("backup into a failing target succeeded"),
                Ok(_) => {}
                Err(err) => return err,
            }
        }
    }

    #[test]
    fn enospc_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let src = build_source(&dir.path().join("src.db"), 4096, false);
        let mut cap = open_capture_connection(Arc::new(Mutex::new(FullTarget))).unwrap();
        let err = run_backup_expecting_error(&mut cap, &src);
        assert_eq!(err.sqlite_error_code(), Some(rusqlite::ErrorCode::DiskFull));
        let io_err = cap.take_target_error().expect("target error recorded");
        assert_eq!(io_err.raw_os_error(), Some(28));
        assert_eq!(io_err.kind(), io::ErrorKind::StorageFull);
        assert!(cap.take_target_error().is_none(), "error is taken once");
    }

    #[test]
    fn panicking_target_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let src = build_source(&dir.path().join("src.db"), 4096, false);
        let target = Arc::new(Mutex::new(PanickingTarget));
        let mut cap = open_capture_connection(target.clone()).unwrap();
        let err = run_backup_expecting_error(&mut cap, &src);
        assert_eq!(
            err.sqlite_error_code(),
            Some(rusqlite::ErrorCode::SystemIoFailure)
        );
        let io_err = cap.take_target_error().expect("panic recorded");
        assert!(io_err.to_string().contains("write_at exploded"), "{io_err}");
        drop(cap);
        assert!(target.is_poisoned());
    }

    /// Returns (image, most pages copied but not yet written after any step).
    fn capture_tracking_lag(src: &Connection, page_size: Option<u32>) -> (Vec<u8>, i64) {
        let target = Arc::new(Mutex::new(VecTarget::default()));
        let mut cap = open_capture_connection(target.clone()).unwrap();
        if let Some(ps) = page_size {
            cap.conn()
                .execute_batch(&format!("PRAGMA page_size={ps}; PRAGMA cache_size=-1024;"))
                .unwrap();
        }
        let mut max_lag = 0;
        {
            let backup = Backup::new(src, cap.conn()).unwrap();
            while backup.step(16).unwrap() != StepResult::Done {
                let progress = backup.progress();
                let copied = i64::from(progress.pagecount - progress.remaining);
                let t = target.lock().unwrap();
                let written = t
                    .log
                    .borrow()
                    .iter()
                    .filter(|o| matches!(o, Op::Write(..)))
                    .count();
                max_lag = max_lag.max(copied - written as i64);
            }
        }
        drop(cap);
        let image = std::mem::take(&mut target.lock().unwrap().data);
        (image, max_lag)
    }

    #[test]
    fn setting_page_size_first_bounds_the_destination_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big-pages.db");
        let writer = Connection::open(&path).unwrap();
        writer
            .execute_batch(
                "PRAGMA page_size=65536;
                 CREATE TABLE t(b);
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 400)
                   INSERT INTO t SELECT randomblob(30000) FROM n;",
            )
            .unwrap();
        drop(writer);
        let src = Connection::open(&path).unwrap();
        let expected = file_backup(&src, dir.path());

        let (plain, plain_lag) = capture_tracking_lag(&src, None);
        let (sized, sized_lag) = capture_tracking_lag(&src, Some(65536));
        assert_eq!(blake3::hash(&plain), blake3::hash(&expected));
        assert_eq!(blake3::hash(&sized), blake3::hash(&expected));
        // ~1 MiB of 64 KiB pages (+ one step of slack), instead of a cache
        // sized for 4096-byte pages.
        assert!(sized_lag <= 32, "dirty pages held: {sized_lag}");
        println!("64 KiB pages held dirty: default {plain_lag}, page size set first {sized_lag}");
    }
}

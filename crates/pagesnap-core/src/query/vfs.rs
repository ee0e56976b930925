//! The snapshot VFS: SQLite reads a snapshot's image through it, page by page,
//! from an [`Image`] (the page cache over the snapshot reader, `pages.rs`).
//!
//! The process-wide VFS `pagesnap-snapshot` is registered lazily (never as the
//! default VFS). [`register`] files an image under a unique name; opening that
//! name (with `vfs=pagesnap-snapshot`) gives a main database file whose reads
//! come from the image. The file is immutable (`SQLITE_IOCAP_IMMUTABLE`): SQLite
//! takes no locks and looks for no journal or WAL; a write, a truncate, a
//! journal or a WAL is refused with `SQLITE_READONLY`/`SQLITE_CANTOPEN`.
//!
//! Any other file is the default VFS's, opened in the same file object (the VFS
//! asks for room for either, as SQLite's own shims do): temporary files of
//! sorts and temporary indexes, and a real database someone ATTACHes (read-only,
//! like the connection). Every callback catches panics; an image's read error is
//! kept for [`take_error`], so callers can name the damaged chunk and the
//! snapshot instead of SQLite's "disk I/O error".
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

use super::pages::ReadStats;
use crate::sqlite_vfs;
use rusqlite::ffi;
use std::collections::{HashMap, VecDeque};
use std::ffi::{c_char, c_int, c_void, CStr};
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

/// A database image SQLite reads: the bytes of one snapshot.
pub(crate) trait Image: Send + Sync {
    /// Its length in bytes.
    fn len(&self) -> u64;
    /// Fills `buf` with the bytes at `offset` (within the image).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> crate::Result<()>;
    /// What its reads have cost so far.
    fn stats(&self) -> ReadStats;
}

/// Name under which the snapshot VFS is registered with SQLite.
pub(crate) const VFS_NAME: &CStr = c"pagesnap-snapshot";
/// The prefix of every name [`register`] gives out (and of nothing else).
const NAME_PREFIX: &str = "pagesnap-snapshot-";

/// What an open image file needs: the image, and where its last error goes.
#[derive(Clone)]
struct Registration {
    image: Arc<dyn Image>,
    error: Arc<Mutex<Option<crate::Error>>>,
}

/// Name -> image, from [`register`] until the file is closed (or [`unregister`]).
fn registry() -> MutexGuard<'static, HashMap<String, Registration>> {
    static REGISTRY: OnceLock<Mutex<HashMap<String, Registration>>> = OnceLock::new();
    // Every critical section is one insert, remove or get: a poisoned lock
    // cannot hide a half-done update.
    REGISTRY
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// Files `image` under a new unique name and returns it: open it with
/// [`uri`]. The entry goes when the file opened under it is closed, or with
/// [`unregister`] if it is never opened.
pub(crate) fn register(image: Arc<dyn Image>) -> Result<String, c_int> {
    static REGISTERED: OnceLock<c_int> = OnceLock::new();
    let rc = *REGISTERED.get_or_init(|| {
        let size = sqlite_vfs::file_size::<FileState>();
        // SAFETY: the callbacks below follow SQLite's contracts (see each) and
        // this runs once (OnceLock); VFS_NAME is a 'static C string.
        unsafe { sqlite_vfs::register(VFS_NAME, size, x_open, x_delete, x_access) }
    });
    if rc != ffi::SQLITE_OK {
        return Err(rc);
    }
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "{NAME_PREFIX}{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let error = Arc::default();
    registry().insert(name.clone(), Registration { image, error });
    Ok(name)
}

/// Removes `name`'s entry (an image that was never opened, or failed to).
pub(crate) fn unregister(name: &str) {
    let entry = registry().remove(name);
    drop(entry);
}

/// The URI that opens `name` read-only through the snapshot VFS.
pub(crate) fn uri(name: &str) -> String {
    format!("file:{name}?vfs=pagesnap-snapshot&immutable=1")
}

/// The last read error of the image open under `name`, taken (`None`: no error,
/// or no such image).
pub(crate) fn take_error(name: &str) -> Option<crate::Error> {
    if let Some(reg) = registry().get(name).cloned() {
        let err = reg
            .error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        return err;
    }
    let mut closed = closed_errors();
    let at = closed.iter().position(|(n, _)| n == name)?;
    closed.remove(at).map(|(_, e)| e)
}

/// The errors of images SQLite closed after a failed read (it closes the file
/// when the schema cannot be read, before the caller can ask why): the last
/// few, for [`take_error`].
fn closed_errors() -> MutexGuard<'static, VecDeque<(String, crate::Error)>> {
    static CLOSED: OnceLock<Mutex<VecDeque<(String, crate::Error)>>> = OnceLock::new();
    CLOSED
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// How many errors of closed images are kept.
const CLOSED_ERRORS: usize = 16;

/// What reading the image open under `name` has cost so far.
pub(crate) fn stats(name: &str) -> Option<ReadStats> {
    let reg = registry().get(name).cloned()?;
    Some(reg.image.stats())
}

/// Whether `name` (a C string from SQLite) is one [`register`] gave out (or a
/// journal or WAL name derived from one): such files are this VFS's.
///
/// # Safety
/// `name` must be null or a NUL-terminated string valid for the call.
unsafe fn ours(name: *const c_char) -> Option<String> {
    if name.is_null() {
        return None;
    }
    // SAFETY: per the contract, a valid NUL-terminated string.
    let name = unsafe { CStr::from_ptr(name) }.to_str().ok()?;
    name.starts_with(NAME_PREFIX).then(|| name.to_string())
}

// ---------------------------------------------------------------------------
// sqlite3_vfs methods
// ---------------------------------------------------------------------------

unsafe extern "C" fn x_open(
    vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite passes a writable buffer of szOsFile bytes and reads
    // pMethods after a failed xOpen; a null pMethods tells it not to call xClose.
    unsafe { (*file).pMethods = ptr::null() };
    // SAFETY: `name` is null or a NUL-terminated string valid for this call.
    let Some(ours) = (unsafe { ours(name) }) else {
        // Not an image: temporary files, or a real database someone attaches.
        // The buffer has room for the default VFS's file (szOsFile is the larger
        // of both), which SQLite then drives through that VFS's own methods.
        // SAFETY: the VFS is ours (so pAppData is the live default VFS) and its
        // xOpen gets exactly the arguments SQLite gave us.
        return unsafe {
            let dflt = sqlite_vfs::default_vfs(vfs);
            match (*dflt).xOpen {
                Some(open) => open(dflt, name, file, flags, out_flags),
                None => ffi::SQLITE_CANTOPEN,
            }
        };
    };
    let writes = ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_CREATE;
    if flags & ffi::SQLITE_OPEN_MAIN_DB == 0 || flags & writes != 0 {
        // A journal or WAL of an image, or an image opened for writing.
        return ffi::SQLITE_CANTOPEN;
    }
    let state = sqlite_vfs::no_unwind(None, || {
        let reg = registry().get(&ours).cloned()?;
        Some(FileState { name: ours, reg })
    });
    let Some(state) = state else {
        return ffi::SQLITE_CANTOPEN;
    };
    // SAFETY: `file` is SQLite's xOpen buffer of szOsFile bytes, room for one
    // of our files; IO_METHODS is a 'static.
    unsafe { sqlite_vfs::install(file, &IO_METHODS, state) };
    if !out_flags.is_null() {
        // SAFETY: a non-null pOutFlags points to a writable int.
        unsafe { *out_flags = ffi::SQLITE_OPEN_READONLY | ffi::SQLITE_OPEN_MAIN_DB };
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_delete(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    sync_dir: c_int,
) -> c_int {
    // SAFETY: `name` is null or a NUL-terminated string valid for this call.
    if unsafe { ours(name) }.is_some() {
        // An image is never deleted, and its journals never exist.
        return ffi::SQLITE_IOERR_DELETE;
    }
    // SAFETY: as in x_open, the default VFS gets SQLite's arguments unchanged.
    unsafe {
        let dflt = sqlite_vfs::default_vfs(vfs);
        match (*dflt).xDelete {
            Some(delete) => delete(dflt, name, sync_dir),
            None => ffi::SQLITE_IOERR_DELETE,
        }
    }
}

unsafe extern "C" fn x_access(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    flags: c_int,
    res_out: *mut c_int,
) -> c_int {
    // SAFETY: `name` is null or a NUL-terminated string valid for this call.
    if let Some(ours) = unsafe { ours(name) } {
        // An image exists (read-only); its journal or WAL never does.
        let exists = flags != ffi::SQLITE_ACCESS_READWRITE && registry().contains_key(&ours);
        if !res_out.is_null() {
            // SAFETY: SQLite passes a valid, writable int for the result.
            unsafe { *res_out = exists as c_int };
        }
        return ffi::SQLITE_OK;
    }
    // SAFETY: as in x_open, the default VFS gets SQLite's arguments unchanged.
    unsafe {
        let dflt = sqlite_vfs::default_vfs(vfs);
        match (*dflt).xAccess {
            Some(access) => access(dflt, name, flags, res_out),
            None => ffi::SQLITE_IOERR_ACCESS,
        }
    }
}

// ---------------------------------------------------------------------------
// An image file
// ---------------------------------------------------------------------------

struct FileState {
    name: String,
    reg: Registration,
}

/// The image an open file reads from, when the file goes: its registry entry
/// goes too, and its last error is kept for [`take_error`].
impl Drop for FileState {
    fn drop(&mut self) {
        unregister(&self.name);
        let error = self
            .reg
            .error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(e) = error {
            let mut closed = closed_errors();
            if closed.len() == CLOSED_ERRORS {
                closed.pop_front();
            }
            closed.push_back((self.name.clone(), e));
        }
    }
}

/// The Rust state of an open image file.
///
/// # Safety
/// `file` must be a file [`x_open`] opened as an image and not yet closed.
unsafe fn file_state<'a>(file: *mut ffi::sqlite3_file) -> Option<&'a FileState> {
    // SAFETY: per the contract, x_open installed it with a FileState.
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
    // FileState (whose Drop unregisters the image and keeps its error).
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
    // before a `&mut [u8]` is formed over it (a short read's zero fill, too).
    let buf = unsafe {
        ptr::write_bytes(buf.cast::<u8>(), 0, len);
        std::slice::from_raw_parts_mut(buf.cast::<u8>(), len)
    };
    sqlite_vfs::no_unwind(ffi::SQLITE_IOERR_READ, || {
        let image = &state.reg.image;
        let have = image.len().saturating_sub(offset).min(len as u64) as usize;
        let result = match have {
            0 => Ok(()),
            n => image.read_at(offset, &mut buf[..n]),
        };
        match result {
            Ok(()) if have == len => ffi::SQLITE_OK,
            // Past the end: SQLite wants the rest zeroed (it is) and this code.
            Ok(()) => ffi::SQLITE_IOERR_SHORT_READ,
            Err(e) => {
                *state
                    .reg
                    .error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(e);
                ffi::SQLITE_IOERR_READ
            }
        }
    })
}

unsafe extern "C" fn x_write(
    _file: *mut ffi::sqlite3_file,
    _buf: *const c_void,
    _amount: c_int,
    _offset: ffi::sqlite3_int64,
) -> c_int {
    ffi::SQLITE_READONLY
}

unsafe extern "C" fn x_truncate(_file: *mut ffi::sqlite3_file, _size: ffi::sqlite3_int64) -> c_int {
    ffi::SQLITE_READONLY
}

unsafe extern "C" fn x_file_size(
    file: *mut ffi::sqlite3_file,
    size_out: *mut ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: SQLite only calls xFileSize on files x_open opened and has not closed.
    let Some(state) = (unsafe { file_state(file) }) else {
        return ffi::SQLITE_IOERR_FSTAT;
    };
    let Ok(size) = ffi::sqlite3_int64::try_from(state.reg.image.len()) else {
        return ffi::SQLITE_IOERR_FSTAT;
    };
    // SAFETY: SQLite passes a valid, writable sqlite3_int64 for the result.
    unsafe { *size_out = size };
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_lock(_file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // Reading needs no lock (nothing changes an image); writing is refused.
    match level > ffi::SQLITE_LOCK_SHARED {
        true => ffi::SQLITE_READONLY,
        false => ffi::SQLITE_OK,
    }
}

unsafe extern "C" fn x_device_characteristics(_file: *mut ffi::sqlite3_file) -> c_int {
    // Nothing changes the file while it is open: no locks, no journal checks.
    ffi::SQLITE_IOCAP_IMMUTABLE
}

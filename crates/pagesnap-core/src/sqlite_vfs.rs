//! What pagesnap's two SQLite VFS modules share (the capture VFS, backup/capture/vfs.rs,
//! and the snapshot VFS, query/vfs.rs): registration, and the process-level methods
//! (time, randomness, sleep, full path names) handed to the default VFS.
//!
//! Each VFS keeps its default VFS in `pAppData`, so these methods can reach it,
//! and asks for file objects large enough for a file of the default VFS too: the
//! snapshot VFS opens SQLite's temporary files (sorts, temporary indexes) there.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

use rusqlite::ffi;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

/// Longest file name (in bytes, without the NUL) SQLite may hand to our VFSs.
const MAX_PATHNAME: c_int = 512;

/// `xOpen` of a VFS.
pub(crate) type XOpen = unsafe extern "C" fn(
    *mut ffi::sqlite3_vfs,
    ffi::sqlite3_filename,
    *mut ffi::sqlite3_file,
    c_int,
    *mut c_int,
) -> c_int;
/// `xDelete` of a VFS.
pub(crate) type XDelete =
    unsafe extern "C" fn(*mut ffi::sqlite3_vfs, *const c_char, c_int) -> c_int;
/// `xAccess` of a VFS.
pub(crate) type XAccess =
    unsafe extern "C" fn(*mut ffi::sqlite3_vfs, *const c_char, c_int, *mut c_int) -> c_int;

/// Registers the VFS `name` (never as the default) whose files are `file_size`
/// bytes (or the default VFS's, if larger), with the given file methods; the
/// rest are this module's. Returns SQLite's result code.
///
/// # Safety
/// The callbacks must follow SQLite's contracts for them; they are called with a
/// VFS whose `pAppData` is the default VFS ([`default_vfs`]). Call once per name.
pub(crate) unsafe fn register(
    name: &'static CStr,
    file_size: c_int,
    x_open: XOpen,
    x_delete: XDelete,
    x_access: XAccess,
) -> c_int {
    // SAFETY: sqlite3_vfs_find accepts a null name (meaning "the default VFS")
    // and initialises the library itself if needed; it only reads the VFS list
    // under SQLite's own static mutex.
    let default_vfs = unsafe { ffi::sqlite3_vfs_find(ptr::null()) };
    if default_vfs.is_null() {
        return ffi::SQLITE_ERROR;
    }
    // SAFETY: the default VFS is registered and never freed; szOsFile is a plain int.
    let default_size = unsafe { (*default_vfs).szOsFile };
    let vfs = Box::new(ffi::sqlite3_vfs {
        iVersion: 2,
        szOsFile: file_size.max(default_size),
        mxPathname: MAX_PATHNAME,
        pNext: ptr::null_mut(),
        zName: name.as_ptr(),
        // The default VFS is what the process-level methods delegate to.
        pAppData: default_vfs.cast(),
        xOpen: Some(x_open),
        xDelete: Some(x_delete),
        xAccess: Some(x_access),
        xFullPathname: Some(x_full_pathname),
        xDlOpen: Some(x_dl_open),
        xDlError: Some(x_dl_error),
        xDlSym: Some(x_dl_sym),
        xDlClose: Some(x_dl_close),
        xRandomness: Some(x_randomness),
        xSleep: Some(x_sleep),
        xCurrentTime: Some(x_current_time),
        xGetLastError: Some(x_get_last_error),
        xCurrentTimeInt64: Some(x_current_time_int64),
        xSetSystemCall: None,
        xGetSystemCall: None,
        xNextSystemCall: None,
    });
    // Leaked on purpose: SQLite keeps the pointer for as long as the VFS is
    // registered, i.e. for the rest of the process.
    let vfs = Box::into_raw(vfs);
    // SAFETY: `vfs` points to a fully initialised sqlite3_vfs that is never
    // freed while registered (it is leaked); its zName is a 'static C string,
    // and every callback it names matches the signature SQLite expects.
    // makeDflt = 0 keeps the existing default VFS. sqlite3_vfs_register is
    // serialised by SQLite's static mutex, and the caller calls it once per name.
    let rc = unsafe { ffi::sqlite3_vfs_register(vfs, 0) };
    if rc != ffi::SQLITE_OK {
        // SAFETY: registration failed, so SQLite holds no pointer to `vfs`; it
        // came from Box::into_raw above and is freed exactly once here.
        drop(unsafe { Box::from_raw(vfs) });
    }
    rc
}

/// The default VFS captured at registration time (stored in `pAppData`).
///
/// # Safety
/// `vfs` must be a VFS registered by [`register`].
pub(crate) unsafe fn default_vfs(vfs: *mut ffi::sqlite3_vfs) -> *mut ffi::sqlite3_vfs {
    // SAFETY: per the contract `vfs` is our leaked, never-freed sqlite3_vfs,
    // whose pAppData was set to the non-null default VFS and never changes.
    unsafe { (*vfs).pAppData.cast() }
}

/// Runs `f`, turning a panic into `on_panic`.
pub(crate) fn no_unwind<T>(on_panic: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(on_panic)
}

// ---------------------------------------------------------------------------
// sqlite3_vfs methods
// ---------------------------------------------------------------------------

pub(crate) unsafe extern "C" fn x_full_pathname(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    n_out: c_int,
    z_out: *mut c_char,
) -> c_int {
    if name.is_null() || z_out.is_null() {
        return ffi::SQLITE_CANTOPEN;
    }
    // SAFETY: SQLite passes a NUL-terminated name valid for this call.
    let bytes = unsafe { CStr::from_ptr(name) }.to_bytes_with_nul();
    let capacity = usize::try_from(n_out).unwrap_or(0);
    if bytes.len() > capacity {
        return ffi::SQLITE_CANTOPEN;
    }
    // SAFETY: z_out has room for n_out >= bytes.len() bytes (checked above),
    // and SQLite's output buffer never overlaps the input name.
    unsafe { ptr::copy_nonoverlapping(bytes.as_ptr().cast::<c_char>(), z_out, bytes.len()) };
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_dl_open(_vfs: *mut ffi::sqlite3_vfs, _name: *const c_char) -> *mut c_void {
    ptr::null_mut()
}

unsafe extern "C" fn x_dl_error(_vfs: *mut ffi::sqlite3_vfs, n_byte: c_int, z_err: *mut c_char) {
    const MSG: &CStr = c"extension loading is not supported by pagesnap's VFSs";
    let Ok(capacity) = usize::try_from(n_byte) else {
        return;
    };
    if capacity == 0 || z_err.is_null() {
        return;
    }
    let bytes = MSG.to_bytes();
    let len = bytes.len().min(capacity - 1);
    // SAFETY: z_err has room for n_byte = capacity bytes; we write `len` <
    // capacity bytes plus a terminating NUL, from a static that cannot overlap.
    unsafe {
        ptr::copy_nonoverlapping(bytes.as_ptr().cast::<c_char>(), z_err, len);
        *z_err.add(len) = 0;
    }
}

unsafe extern "C" fn x_dl_sym(
    _vfs: *mut ffi::sqlite3_vfs,
    _handle: *mut c_void,
    _symbol: *const c_char,
) -> Option<unsafe extern "C" fn(*mut ffi::sqlite3_vfs, *mut c_void, *const c_char)> {
    None
}

unsafe extern "C" fn x_dl_close(_vfs: *mut ffi::sqlite3_vfs, _handle: *mut c_void) {}

unsafe extern "C" fn x_randomness(
    vfs: *mut ffi::sqlite3_vfs,
    n_byte: c_int,
    z_out: *mut c_char,
) -> c_int {
    // SAFETY: SQLite calls this with our registered VFS, so default_vfs
    // returns the live default VFS; its xRandomness receives the same buffer
    // contract SQLite gave us.
    unsafe {
        let dflt = default_vfs(vfs);
        match (*dflt).xRandomness {
            Some(f) => f(dflt, n_byte, z_out),
            None => 0,
        }
    }
}

unsafe extern "C" fn x_sleep(vfs: *mut ffi::sqlite3_vfs, microseconds: c_int) -> c_int {
    // SAFETY: as in x_randomness; the default VFS is live and xSleep takes no
    // pointers besides the VFS itself.
    unsafe {
        let dflt = default_vfs(vfs);
        match (*dflt).xSleep {
            Some(f) => f(dflt, microseconds),
            None => 0,
        }
    }
}

unsafe extern "C" fn x_current_time(vfs: *mut ffi::sqlite3_vfs, out: *mut f64) -> c_int {
    // SAFETY: as in x_randomness; `out` is SQLite's writable double, passed on.
    unsafe {
        let dflt = default_vfs(vfs);
        match (*dflt).xCurrentTime {
            Some(f) => f(dflt, out),
            None => ffi::SQLITE_ERROR,
        }
    }
}

unsafe extern "C" fn x_get_last_error(
    vfs: *mut ffi::sqlite3_vfs,
    n_byte: c_int,
    z_out: *mut c_char,
) -> c_int {
    // SAFETY: as in x_randomness; the output buffer contract is passed on.
    unsafe {
        let dflt = default_vfs(vfs);
        match (*dflt).xGetLastError {
            Some(f) => f(dflt, n_byte, z_out),
            None => 0,
        }
    }
}

unsafe extern "C" fn x_current_time_int64(
    vfs: *mut ffi::sqlite3_vfs,
    out: *mut ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: as in x_randomness. xCurrentTimeInt64 only exists from iVersion
    // 2 on, so it is used only when the default VFS says it has it; otherwise
    // the f64 variant is converted (the same fallback SQLite itself uses).
    unsafe {
        let dflt = default_vfs(vfs);
        if (*dflt).iVersion >= 2 {
            if let Some(f) = (*dflt).xCurrentTimeInt64 {
                return f(dflt, out);
            }
        }
        let mut days = 0.0_f64;
        let rc = x_current_time(vfs, &mut days);
        if rc == ffi::SQLITE_OK {
            *out = (days * 86_400_000.0) as ffi::sqlite3_int64;
        }
        rc
    }
}

// ---------------------------------------------------------------------------
// File methods both VFSs' files answer alike
// ---------------------------------------------------------------------------

/// Nothing to flush: a capture file's target and an image are not files.
pub(crate) unsafe extern "C" fn x_sync(_file: *mut ffi::sqlite3_file, _flags: c_int) -> c_int {
    ffi::SQLITE_OK
}

pub(crate) unsafe extern "C" fn x_unlock(_file: *mut ffi::sqlite3_file, _level: c_int) -> c_int {
    ffi::SQLITE_OK
}

/// No other connection shares the file: nobody else holds a reserved lock.
pub(crate) unsafe extern "C" fn x_check_reserved_lock(
    _file: *mut ffi::sqlite3_file,
    res_out: *mut c_int,
) -> c_int {
    if !res_out.is_null() {
        // SAFETY: SQLite passes a valid, writable int for the result.
        unsafe { *res_out = 0 };
    }
    ffi::SQLITE_OK
}

pub(crate) unsafe extern "C" fn x_file_control(
    _file: *mut ffi::sqlite3_file,
    _op: c_int,
    _arg: *mut c_void,
) -> c_int {
    ffi::SQLITE_NOTFOUND
}

pub(crate) unsafe extern "C" fn x_sector_size(_file: *mut ffi::sqlite3_file) -> c_int {
    4096
}

// ---------------------------------------------------------------------------
// A file of ours in SQLite's allocation
// ---------------------------------------------------------------------------

/// SQLite's per-file allocation for a file one of our VFSs opens: the
/// `sqlite3_file` base first (SQLite reads `pMethods` there), then a pointer
/// to the Rust state `S`, owned by the file until xClose.
#[repr(C)]
pub(crate) struct OurFile<S> {
    base: ffi::sqlite3_file,
    state: *mut S,
}

/// What a VFS asks SQLite to allocate for one of its files (two pointers).
pub(crate) fn file_size<S>() -> c_int {
    // Two pointers: the cast cannot truncate.
    std::mem::size_of::<OurFile<S>>() as c_int
}

/// Writes a file of ours with `state` into SQLite's buffer `file`.
///
/// # Safety
/// `file` must be the buffer SQLite passed to xOpen, of the VFS's `szOsFile`
/// bytes (at least [`file_size::<S>`]), and aligned for pointers, as SQLite's
/// allocations are.
pub(crate) unsafe fn install<S>(
    file: *mut ffi::sqlite3_file,
    methods: &'static ffi::sqlite3_io_methods,
    state: S,
) {
    let state = Box::into_raw(Box::new(state));
    // SAFETY: per the contract `file` has room for an OurFile<S> and is
    // aligned for it; ptr::write does not drop the uninitialised contents.
    // `methods` is 'static, so pMethods never dangles.
    unsafe {
        ptr::write(
            file.cast::<OurFile<S>>(),
            OurFile {
                base: ffi::sqlite3_file { pMethods: methods },
                state,
            },
        );
    }
}

/// The state of a file of ours.
///
/// # Safety
/// `file` must have been [`install`]ed with a state of type `S`; SQLite calls
/// no method of a file concurrently with its xClose.
pub(crate) unsafe fn state<'a, S>(file: *mut ffi::sqlite3_file) -> Option<&'a S> {
    // SAFETY: per the contract `file` points to an OurFile<S>, whose `state`
    // is null (after close) or the Box pointer install made, valid until
    // `close`. The state is only used through `&`.
    unsafe { (*file.cast::<OurFile<S>>()).state.as_ref() }
}

/// xClose of a file of ours: its state dropped (once; a panic in a Drop does
/// not unwind into SQLite).
///
/// # Safety
/// As for [`state`].
pub(crate) unsafe fn close<S>(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: per the contract `file` points to an OurFile<S>. Swapping in
    // null makes a repeated call harmless and hands us sole ownership.
    let state = unsafe { ptr::replace(&mut (*file.cast::<OurFile<S>>()).state, ptr::null_mut()) };
    if !state.is_null() {
        // SAFETY: `state` came from Box::into_raw in `install` and, swapped
        // out above, is turned back into a Box exactly once.
        let state = unsafe { Box::from_raw(state) };
        no_unwind((), move || drop(state));
    }
    ffi::SQLITE_OK
}

//! The source connection's own open files, read through SQLite's VFS methods.
//!
//! A direct capture reads the database file and its WAL without opening them
//! again: closing a second descriptor of a file releases every POSIX lock the
//! process holds on it, SQLite's read lock included (and an application's, if
//! the library runs inside one). So the reads go through the `sqlite3_file`
//! objects SQLite opened, found with `SQLITE_FCNTL_FILE_POINTER` and
//! `SQLITE_FCNTL_JOURNAL_POINTER`, and the wal-index through `xShmMap`, which
//! hands back the mapping SQLite already holds.
//!
//! Only the default `unix` VFS is used this way: its `xRead` is a `pread` of any
//! length at any offset. Another VFS (an encrypting or checksumming one) may
//! store pages differently, so the capture then keeps to the backup API.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

use super::wal::INDEX_HEADER_BYTES;
use rusqlite::{ffi, Connection};
use std::ffi::{c_int, c_void, CStr};
use std::io;
use std::marker::PhantomData;
use std::ptr;
use std::sync::atomic::{fence, Ordering};

/// The VFS whose files are read directly.
const UNIX_VFS: &CStr = c"unix";
/// The size of a wal-index region, as SQLite maps it.
const SHM_REGION: c_int = 32768;

/// The main database file (and, in WAL mode, the WAL and wal-index) of one
/// connection, borrowed for as long as the connection.
pub(crate) struct SourceFiles<'c> {
    db: *mut ffi::sqlite3,
    main: *mut ffi::sqlite3_file,
    /// Raw pointers make this `!Send`: it is used on the connection's thread only.
    _conn: PhantomData<&'c Connection>,
}

impl<'c> SourceFiles<'c> {
    /// The files of `conn`'s main database, if it is open on the `unix` VFS.
    pub(crate) fn of(conn: &'c Connection) -> Option<SourceFiles<'c>> {
        // SAFETY: the handle is valid while `conn` lives, and `SourceFiles`
        // borrows `conn` for its whole life.
        let db = unsafe { conn.handle() };
        let mut vfs: *mut ffi::sqlite3_vfs = ptr::null_mut();
        // SAFETY: SQLITE_FCNTL_VFS_POINTER writes one `sqlite3_vfs*` to the
        // pointer it is given; "main" is NUL-terminated.
        let rc = unsafe {
            ffi::sqlite3_file_control(
                db,
                c"main".as_ptr(),
                ffi::SQLITE_FCNTL_VFS_POINTER,
                (&mut vfs as *mut *mut ffi::sqlite3_vfs).cast::<c_void>(),
            )
        };
        if rc != ffi::SQLITE_OK || vfs.is_null() {
            return None;
        }
        // SAFETY: a registered VFS is never freed while a connection uses it,
        // and its zName is a NUL-terminated string.
        let name = unsafe { CStr::from_ptr((*vfs).zName) };
        if name != UNIX_VFS {
            return None;
        }
        let main = file_pointer(db, ffi::SQLITE_FCNTL_FILE_POINTER)?;
        Some(SourceFiles {
            db,
            main,
            _conn: PhantomData,
        })
    }

    /// The reads of the database file and of `wal` (if given), to share
    /// between threads.
    pub(crate) fn reads<'r>(&'r self, wal: Option<&'r WalFile<'r>>) -> Reads<'r> {
        Reads {
            main: self.main,
            wal: wal.map(|w| w.file),
            _files: PhantomData,
        }
    }

    /// The WAL file, once the connection has it open (in WAL mode, inside a
    /// read transaction).
    pub(crate) fn wal(&self) -> Option<WalFile<'_>> {
        let file = file_pointer(self.db, ffi::SQLITE_FCNTL_JOURNAL_POINTER)?;
        Some(WalFile {
            main: self.main,
            file,
            _files: PhantomData,
        })
    }
}

/// The WAL and wal-index of a connection in WAL mode.
pub(crate) struct WalFile<'f> {
    main: *mut ffi::sqlite3_file,
    file: *mut ffi::sqlite3_file,
    _files: PhantomData<&'f SourceFiles<'f>>,
}

impl WalFile<'_> {
    /// Fills `buf` with the WAL's bytes at `offset`; a read past its end fails.
    pub(crate) fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        read(self.file, offset, buf, false)
    }

    /// The first bytes of the wal-index as they are now: both header copies
    /// and `nBackfill`, read the way SQLite's readers do (the first copy, a
    /// barrier, the second), or `None` without a shared wal-index.
    pub(crate) fn index_header(&self) -> Option<[u8; INDEX_HEADER_BYTES]> {
        // SAFETY: `main` is the open main-database file of a live connection;
        // its methods table is SQLite's and lives as long as the file.
        let methods = unsafe { (*self.main).pMethods };
        if methods.is_null() {
            return None;
        }
        // SAFETY: as above; `iVersion` and `xShmMap` are plain fields.
        let (version, shm_map) = unsafe { ((*methods).iVersion, (*methods).xShmMap) };
        let shm_map = shm_map.filter(|_| version >= 2)?;
        let mut region: *mut c_void = ptr::null_mut();
        // SAFETY: xShmMap of region 0 without extending returns the mapping
        // the connection already made for its read transaction (the unix VFS
        // keeps it until the file is closed), or an error / null.
        let rc = unsafe { shm_map(self.main, 0, SHM_REGION, 0, &mut region) };
        // SQLITE_READONLY means a read-only wal-index that SQLite's readers
        // do not trust either (they build a private one in heap memory).
        if rc != ffi::SQLITE_OK || region.is_null() {
            return None;
        }
        let base = region.cast::<u8>().cast_const();
        let mut out = [0u8; INDEX_HEADER_BYTES];
        let copy = 48;
        for (i, b) in out.iter_mut().enumerate() {
            if i == copy {
                // Writers update the second copy, then the first: reading the
                // first, then the second, sees a torn update as two copies
                // that differ.
                fence(Ordering::SeqCst);
            }
            // SAFETY: the region is at least SHM_REGION bytes, mapped and
            // readable; other processes write it concurrently, so each byte
            // is read with a volatile read and compared afterwards, as SQLite
            // itself does.
            *b = unsafe { ptr::read_volatile(base.add(i)) };
        }
        fence(Ordering::SeqCst);
        Some(out)
    }
}

/// Reads of a connection's database file and WAL that several threads may
/// make at once: a direct capture's workers each read the blocks they process.
pub(crate) struct Reads<'r> {
    main: *mut ffi::sqlite3_file,
    wal: Option<*mut ffi::sqlite3_file>,
    _files: PhantomData<&'r SourceFiles<'r>>,
}

// SAFETY: `Reads` only calls `xRead` of the unix VFS (checked in
// `SourceFiles::of`), which is a `pread` on the file's descriptor into the
// caller's buffer (or, when the connection maps the file, a `memcpy` from that
// read-only mapping). It changes nothing in the file object but the
// last-error code it records when a read fails: two failing reads may both
// store that int, and nothing reads it back while the capture runs (the
// capture reports the error `xRead` returned). Reads from several threads are
// otherwise as safe as `pread` is. The connection itself is idle meanwhile:
// `SourceFiles` borrows it, and a `Connection` is not `Sync`, so no other
// thread can call into it.
unsafe impl Sync for Reads<'_> {}

impl Reads<'_> {
    /// Fills `buf` with the database file's bytes at `offset`; bytes past the
    /// end of the file read as zeros (as SQLite reads them).
    pub(crate) fn main(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        read(self.main, offset, buf, true)
    }

    /// Fills `buf` with the WAL's bytes at `offset` (see [`WalFile::read`]);
    /// an error without a WAL.
    pub(crate) fn wal(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        match self.wal {
            Some(file) => read(file, offset, buf, false),
            None => Err(io::Error::other("the snapshot's WAL is not open")),
        }
    }
}

/// The `sqlite3_file` a file control returns for "main", if it is open.
fn file_pointer(db: *mut ffi::sqlite3, op: c_int) -> Option<*mut ffi::sqlite3_file> {
    let mut file: *mut ffi::sqlite3_file = ptr::null_mut();
    // SAFETY: both file controls write one `sqlite3_file*` through the pointer;
    // `db` is a live handle (the caller borrows its connection).
    let rc = unsafe {
        ffi::sqlite3_file_control(
            db,
            c"main".as_ptr(),
            op,
            (&mut file as *mut *mut ffi::sqlite3_file).cast::<c_void>(),
        )
    };
    // A file SQLite has not opened (no WAL yet) has no methods.
    // SAFETY: a non-null file pointer from SQLite points to a live sqlite3_file.
    if rc != ffi::SQLITE_OK || file.is_null() || unsafe { (*file).pMethods.is_null() } {
        return None;
    }
    Some(file)
}

/// Reads `buf.len()` bytes at `offset` through the file's `xRead`, in pieces
/// that fit an int. A short read is zero-filled by the unix VFS: accepted when
/// `short_ok`, an error otherwise.
fn read(
    file: *mut ffi::sqlite3_file,
    offset: u64,
    buf: &mut [u8],
    short_ok: bool,
) -> io::Result<()> {
    const PIECE: usize = 1 << 30;
    // SAFETY: `file` is a live, open sqlite3_file (checked when found) whose
    // methods table lives as long as it.
    let x_read = unsafe { (*(*file).pMethods).xRead }
        .ok_or_else(|| io::Error::other("the VFS file has no xRead"))?;
    let mut done = 0usize;
    while done < buf.len() {
        let n = (buf.len() - done).min(PIECE);
        let at = i64::try_from(offset + done as u64)
            .map_err(|_| io::Error::other("offset beyond what SQLite can read"))?;
        // SAFETY: the destination is `n` writable bytes of `buf`; xRead writes
        // at most `n` bytes there and nothing else. The connection is idle
        // (its thread is in the capture), so no other call uses the file
        // meanwhile but other reads (see `Reads`).
        let rc = unsafe {
            x_read(
                file,
                buf[done..].as_mut_ptr().cast::<c_void>(),
                n as c_int,
                at,
            )
        };
        match rc {
            ffi::SQLITE_OK => {}
            ffi::SQLITE_IOERR_SHORT_READ if short_ok => {}
            ffi::SQLITE_IOERR_SHORT_READ => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file ends before the bytes the snapshot needs",
                ))
            }
            rc => {
                return Err(io::Error::other(format!(
                    "read failed (SQLite I/O error {rc})"
                )))
            }
        }
        done += n;
    }
    Ok(())
}

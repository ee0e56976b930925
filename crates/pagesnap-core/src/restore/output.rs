//! The restore's output: the image written to a stream in pieces, or into a file at
//! its blocks' offsets (queued, so that one task writes at a time), and the
//! temporary file beside the output that is filled, fsynced and renamed into place
//! (`to_path`), the temporaries of killed restores removed first.

use crate::{Error, Result};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;

/// Largest single write of the image into the output (a file or stdout).
///
/// Why: Linux sizes a file's page-cache folios by the write that creates them, and
/// on a VM that hands free memory back to its host, large folios were often made
/// of memory the host had taken back: each first touch waited for the host, and a
/// 1 GiB restore took seconds instead of half of one. 32 KiB writes avoided it in
/// every run measured, at the cost of a few more system calls (docs/PERFORMANCE.md,
/// "Writing into fresh memory").
pub(super) const WRITE_PIECE: usize = 32 << 10;

/// `bytes` meant for `offset`, cut into writes of at most [`WRITE_PIECE`] bytes:
/// (offset, piece) in order.
pub(super) fn pieces(offset: u64, bytes: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    bytes
        .chunks(WRITE_PIECE)
        .enumerate()
        .map(move |(i, piece)| (offset + (i * WRITE_PIECE) as u64, piece))
}

/// Where a restore writes the image.
pub(crate) enum Sink<'a> {
    /// In order, window by window, from the calling thread (stdout, any writer).
    Stream(&'a mut dyn Write),
    /// A file written at positions: each block by the task that decoded and hashed
    /// it, while its bytes are still in that core's cache. Copying 4 MiB windows
    /// from one writer thread read them back from memory and was most of a
    /// restore into the page cache.
    At {
        file: &'a File,
        /// The file will be fsynced: start writing each window to disk as soon as
        /// it is complete (see [`write_behind`]).
        durable: bool,
    },
}

/// Blocks of a window waiting to be written at their offsets, and whether a task
/// is writing them.
///
/// Why: two cores writing one file at once take turns at its inode lock in the
/// kernel, and the one waiting spins (`rwsem_spin_on_owner` was 3–17 % of a
/// restore's CPU). Here a task that finds another writing leaves its block in the
/// queue and goes on decoding; the writing task writes it next.
#[derive(Default)]
pub(super) struct Writes<'a> {
    queue: Mutex<Queued<'a>>,
    busy: std::sync::atomic::AtomicBool,
}

/// Blocks to write: (offset in the file, bytes).
type Queued<'a> = Vec<(u64, &'a [u8])>;

impl<'a> Writes<'a> {
    /// Queues `bytes` for `offset`, then writes the queue unless a task already is.
    pub(super) fn add(&self, f: &File, offset: u64, bytes: &'a [u8]) -> Result<()> {
        self.lock()?.push((offset, bytes));
        self.drain(f)
    }

    fn drain(&self, f: &File) -> Result<()> {
        use std::sync::atomic::Ordering;
        // Whoever sets `busy` writes; it looks at the queue again after clearing
        // it, so a block queued while it wrote is never left behind.
        while !self.busy.swap(true, Ordering::Acquire) {
            let written = self.write_queued(f);
            self.busy.store(false, Ordering::Release);
            written?;
            if self.lock()?.is_empty() {
                break;
            }
        }
        Ok(())
    }

    fn write_queued(&self, f: &File) -> Result<()> {
        loop {
            let batch = std::mem::take(&mut *self.lock()?);
            if batch.is_empty() {
                return Ok(());
            }
            for (offset, bytes) in batch {
                for (at, piece) in pieces(offset, bytes) {
                    f.write_all_at(piece, at).map_err(output_err)?;
                }
            }
        }
    }

    /// Writes what is left once every task of the window is done.
    pub(super) fn finish(&self, f: &File) -> Result<()> {
        self.write_queued(f)
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Queued<'a>>> {
        self.queue
            .lock()
            .map_err(|_| Error::Internal("restore write queue poisoned".into()))
    }
}

/// A failed write of the image, in order or at a position (the caller names the file).
pub(super) fn output_err(source: std::io::Error) -> Error {
    Error::Io {
        path: "restore output".into(),
        source,
    }
}

/// Starts writing `len` bytes at `offset` of `file` to disk without waiting
/// (`posix_fadvise(DONTNEED)` on dirty pages starts their writeback), so the disk
/// works while later windows are decoded and the final fsync has little left to
/// wait for. Advice only: an error changes nothing.
pub(super) fn write_behind(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    if let Some(len) = std::num::NonZeroU64::new(len) {
        let _ = rustix::fs::fadvise(file, offset, Some(len), rustix::fs::Advice::DontNeed);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// Drops a durable restore's pages from the page cache once they are on disk: a
/// restore beside a running application should not push its cached pages out.
fn drop_cached(file: &File) {
    #[cfg(target_os = "linux")]
    let _ = rustix::fs::fadvise(file, 0, None, rustix::fs::Advice::DontNeed);
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}

/// Reserves the blocks of a `len`-byte file before anything is written to it.
///
/// Why: on ext4 (and XFS) a buffered write into a hole takes the delayed
/// allocation path, reserving space page by page under the inode lock; into
/// reserved (unwritten) blocks the same write is a copy. On the project's machine
/// writing 1 GiB through the page cache took 0.7–1.4 s into a new file and 0.16 s
/// into a reserved one, and two cores writing at once spun on the inode lock
/// instead of waiting. It also fails a restore that cannot fit before any work is
/// done. A file system without `fallocate` is written the ordinary way.
fn reserve(file: &File, len: u64) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    if len > 0 {
        use rustix::io::Errno;
        match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, len) {
            Ok(()) => {}
            Err(e) if [Errno::NOSPC, Errno::DQUOT, Errno::FBIG, Errno::IO].contains(&e) => {
                return Err(e.into())
            }
            // Not supported here (EOPNOTSUPP, ENOSYS, EINVAL): nothing reserved.
            Err(_) => {}
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, len);
    Ok(())
}

/// Name prefix of a restore's temporary file beside its output. The full name is
/// `.pagesnap-restore-<pid>-<random>`; the restore holds an exclusive `flock` on
/// it while it writes (see [`remove_stale_temporaries`]).
pub const TEMP_PREFIX: &str = ".pagesnap-restore-";

/// Whether `name` is the temporary file of a restore that names its process
/// (`.pagesnap-restore-<pid>-…`, what [`to_path`] creates). Older builds named it
/// `.pagesnap-restore-<random>` and held no lock: such files are left alone,
/// since nothing tells a live one from a dead one.
fn is_locked_temporary(name: &str) -> bool {
    name.strip_prefix(TEMP_PREFIX)
        .and_then(|rest| rest.split_once('-'))
        .is_some_and(|(pid, rest)| {
            !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) && !rest.is_empty()
        })
}

/// Takes the exclusive `flock` of a file without waiting: `Ok(true)` when taken,
/// `Ok(false)` when another open file holds it.
fn try_flock(file: &File) -> std::io::Result<bool> {
    match rustix::fs::flock(file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Removes the temporary files that killed restores left in `dir`; returns them.
///
/// Why: a restore reserves its output's blocks up front, so a killed one leaves a
/// file the size of the whole database beside the output. A restore holds an
/// exclusive `flock` on its temporary file until it is renamed into place, and
/// the kernel drops the lock when the process dies however it dies; so a file of
/// ours whose lock can be taken belongs to no live restore. It is removed while
/// the lock is held, and only if the name still leads to the file locked. Best
/// effort: a file that cannot be opened, locked or removed is left (and a file
/// system without `flock` keeps every file). Pid reuse cannot fool it, unlike a
/// check of the pid in the name.
pub(crate) fn remove_stale_temporaries(dir: &Path) -> Vec<std::path::PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return removed;
    };
    for e in entries.flatten() {
        if !is_locked_temporary(&e.file_name().to_string_lossy()) {
            continue;
        }
        let path = e.path();
        let Ok(file) = File::open(&path) else {
            continue;
        };
        if !matches!(try_flock(&file), Ok(true)) {
            continue; // a live restore is writing it (or locks are not supported here)
        }
        // The name must still lead to the file locked (not to a link, nor to a
        // file made since under the same name).
        let same = match (file.metadata(), path.symlink_metadata()) {
            (Ok(a), Ok(b)) => b.is_file() && a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        };
        if same && std::fs::remove_file(&path).is_ok() {
            removed.push(path);
        }
    }
    removed
}

/// A new temporary file for a restore into `dir`, named after this process and
/// locked (see [`remove_stale_temporaries`]).
fn locked_temporary(dir: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    let prefix = format!("{TEMP_PREFIX}{}-", std::process::id());
    let mut attempts = 0;
    loop {
        let tmp = tempfile::Builder::new().prefix(&prefix).tempfile_in(dir)?;
        // Between its creation and this lock another restore may have found the
        // file unlocked and removed it: then the file has no name any more, and
        // another one is made.
        let locked = match try_flock(tmp.as_file()) {
            Ok(taken) => taken,
            // No `flock` on this file system: no restore removes anything here.
            Err(_) => return Ok(tmp),
        };
        let named = tmp
            .as_file()
            .metadata()
            .map(|m| std::os::unix::fs::MetadataExt::nlink(&m) > 0)?;
        if locked && named {
            return Ok(tmp);
        }
        attempts += 1;
        if attempts >= 8 {
            return Err(std::io::Error::other(
                "cannot create a temporary file that stays: other restores keep removing them",
            ));
        }
    }
}

/// Runs `write` into a temporary file beside `out`, then fsyncs and renames it into
/// place. On any error the temporary file is removed and `out` is untouched.
/// Temporary files of killed restores in that folder are removed first; they are
/// returned beside `write`'s result.
pub(crate) fn to_path<T>(
    out: &Path,
    len: u64,
    force: bool,
    fsync: bool,
    write: impl FnOnce(Sink<'_>) -> Result<T>,
) -> Result<(T, Vec<std::path::PathBuf>)> {
    let io = |path: &Path, source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    if out.is_dir() {
        return Err(io(out, std::io::Error::other("is a directory")));
    }
    if !force && out.symlink_metadata().is_ok() {
        return Err(Error::OutputExists(out.to_path_buf()));
    }
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    // Before this restore reserves its own blocks: a killed one's file holds as many.
    let removed = remove_stale_temporaries(&dir);
    let tmp = locked_temporary(&dir).map_err(|e| io(&dir, e))?;
    reserve(tmp.as_file(), len).map_err(|e| io(out, e))?;
    // Each block is written where it belongs by the task that built it, through
    // the page cache. A durable restore starts each window's writeback as soon as
    // it is complete and drops the pages once fsynced. Direct writes (as packs
    // use) were tried and measured worse here: 1.4–2.8 s for 1 GiB, against
    // 1.5–1.6 s this way and 1.3–1.8 s for `zstd -d` + `sync` (docs/PERFORMANCE.md).
    let result = write(Sink::At {
        file: tmp.as_file(),
        durable: fsync,
    })?;
    // A replaced file keeps its permissions; a new one stays owner-only (0600), as
    // the temporary file was created: a database is private until its owner says otherwise.
    if let Ok(meta) = std::fs::metadata(out) {
        tmp.as_file()
            .set_permissions(meta.permissions())
            .map_err(|e| io(out, e))?;
    }
    if fsync {
        tmp.as_file().sync_all().map_err(|e| io(out, e))?;
        drop_cached(tmp.as_file());
    }
    if force {
        tmp.persist(out).map_err(|e| io(out, e.error))?;
    } else {
        tmp.persist_noclobber(out).map_err(|e| {
            if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                Error::OutputExists(out.to_path_buf())
            } else {
                io(out, e.error)
            }
        })?;
    }
    if let Ok(d) = std::fs::File::open(&dir) {
        // Make the rename durable; a failure here does not make the file wrong.
        let _ = d.sync_all();
    }
    Ok((result, removed))
}

#[cfg(test)]
mod tests {
    use super::{pieces, Writes, WRITE_PIECE};
    use rayon::prelude::*;

    /// The output is written in pieces of at most `WRITE_PIECE` bytes that cover a
    /// block's bytes in order, at their offsets.
    #[test]
    fn pieces_cover_the_bytes_in_order_none_longer_than_a_piece() {
        let p = WRITE_PIECE;
        for len in [0, 1, p - 1, p, p + 1, 2 * p, 64 << 10, (4 << 20) + 5] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4099) as u8).collect();
            let (offset, mut next, mut joined) = (12_345u64, 12_345u64, Vec::new());
            for (at, piece) in pieces(offset, &bytes) {
                assert_eq!(at, next, "len {len}: pieces are contiguous");
                assert!(
                    !piece.is_empty() && piece.len() <= p,
                    "len {len}: piece of {}",
                    piece.len()
                );
                next += piece.len() as u64;
                joined.extend_from_slice(piece);
            }
            assert!(joined == bytes, "len {len}: the pieces are the bytes");
        }
    }

    /// Temporary files of restores that no process holds locked are removed; a
    /// locked one (a live restore's), a file of an older build (no pid in its
    /// name), other files and a link to a file are left.
    #[test]
    fn stale_restore_temporaries_are_removed_and_live_ones_kept() -> anyhow::Result<()> {
        use super::{remove_stale_temporaries, try_flock, TEMP_PREFIX};
        let dir = tempfile::tempdir()?;
        let path = |n: &str| dir.path().join(n);
        let stale = path(&format!("{TEMP_PREFIX}4242-aBc123"));
        let live = path(&format!("{TEMP_PREFIX}4243-dEf456"));
        let old = path(&format!("{TEMP_PREFIX}Xyz789"));
        let other = path("app.db");
        let target = path("target.db");
        let link = path(&format!("{TEMP_PREFIX}4244-link"));
        for p in [&stale, &live, &old, &other, &target] {
            std::fs::write(p, b"image bytes")?;
        }
        std::os::unix::fs::symlink(&target, &link)?;
        let held = std::fs::File::open(&live)?;
        assert!(try_flock(&held)?, "the test holds the live one's lock");

        let removed = remove_stale_temporaries(dir.path());
        assert_eq!(removed, vec![stale.clone()]);
        assert!(!stale.exists());
        for p in [&live, &old, &other, &target, &link] {
            assert!(p.symlink_metadata().is_ok(), "{} was kept", p.display());
        }
        // Once its process lets go, the live one is stale too.
        drop(held);
        assert_eq!(remove_stale_temporaries(dir.path()), vec![live.clone()]);
        Ok(())
    }

    /// A restore's temporary file names its process and is locked while it is
    /// written: another restore into the folder meanwhile leaves it alone.
    #[test]
    fn a_restore_temporary_is_locked_while_it_is_written() -> anyhow::Result<()> {
        use super::{is_locked_temporary, locked_temporary, remove_stale_temporaries};
        let dir = tempfile::tempdir()?;
        let tmp = locked_temporary(dir.path())?;
        let name = tmp
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            name.starts_with(&format!(".pagesnap-restore-{}-", std::process::id())),
            "{name}"
        );
        assert!(is_locked_temporary(&name));
        assert!(remove_stale_temporaries(dir.path()).is_empty());
        assert!(tmp.path().exists());
        Ok(())
    }

    /// Blocks written from every core through the queue all land at their offsets,
    /// whichever task writes them.
    #[test]
    fn queued_writes_land_at_their_offsets() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("out");
        let file = std::fs::File::create(&path)?;
        let data: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
        let writes = Writes::default();
        data.par_chunks(4096)
            .enumerate()
            .try_for_each(|(i, block)| writes.add(&file, (i * 4096) as u64, block))?;
        writes.finish(&file)?;
        assert!(writes.lock()?.is_empty());
        assert_eq!(std::fs::read(&path)?, data);
        Ok(())
    }

    /// A failed write is reported, and leaves the queue to the next task (no task
    /// stays marked as writing).
    #[test]
    fn a_failed_write_is_reported_every_time() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("out");
        std::fs::write(&path, b"")?;
        let read_only = std::fs::File::open(&path)?;
        let writes = Writes::default();
        let block = [1u8; 16];
        for offset in [0u64, 16] {
            let err = writes
                .add(&read_only, offset, &block)
                .expect_err("not writable");
            assert!(err.to_string().contains("restore output"), "{err}");
        }
        Ok(())
    }
}

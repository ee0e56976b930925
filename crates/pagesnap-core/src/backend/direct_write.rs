//! Writing large files past the page cache (`O_DIRECT` on Linux), for files that
//! are fsynced anyway: packs in a local store. (Durable restores used it too, until
//! positioned writes with early writeback measured faster: see restore/output.rs.)
//!
//! Why: such a file must reach the disk before pagesnap may go on, so copying it
//! into the page cache first only costs CPU (the kernel's copy into fresh cache
//! pages was 13 % of a first backup's CPU) and evicts the application's own cached
//! pages: a backup that runs every 10 minutes beside a busy database should not
//! push that database out of memory. On the project's machine a 1 GiB write with
//! `O_DIRECT` took 0.7 s every time; through the cache and `fsync`, 0.7–4 s.
//!
//! `O_DIRECT` needs the buffer address, the file offset and the length aligned to
//! the device's block size. The writer copies into an aligned buffer of its own
//! (the copy is cheap next to the I/O) and writes whole blocks; the last, partial
//! block is written padded with zeros and the file is then cut to its length.
//! Where `O_DIRECT` is refused (tmpfs, some network file systems) or a direct write
//! fails with `EINVAL`, it falls back to ordinary writes: the bytes are the same.
//! `PAGESNAP_NO_DIRECT_IO=1` turns direct writes off.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Alignment of direct writes: covers 512-byte and 4 KiB logical blocks.
const ALIGN: usize = 4096;
/// Bytes written per direct write.
const BLOCK: usize = 1 << 20;
/// Files smaller than this are written the ordinary way (the saving is nil).
pub(crate) const MIN_DIRECT: usize = 1 << 20;

/// A sequential writer of a whole new file; [`DirectWriter::finish`] completes it.
pub(crate) struct DirectWriter {
    /// An ordinary handle of the file: for the fallback, the cut, and the fsync.
    plain: File,
    /// The `O_DIRECT` handle, while direct writes work.
    direct: Option<File>,
    /// Aligned staging buffer: `buf[start..start + BLOCK]`.
    buf: Vec<u8>,
    start: usize,
    filled: usize,
    /// Bytes already in the file.
    pos: u64,
}

/// Whether direct writes are allowed (not turned off by `PAGESNAP_NO_DIRECT_IO`).
fn allowed() -> bool {
    !std::env::var_os("PAGESNAP_NO_DIRECT_IO").is_some_and(|v| !v.is_empty() && v != "0")
}

#[cfg(target_os = "linux")]
fn open_direct(path: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_path: &Path) -> Option<File> {
    None
}

impl DirectWriter {
    /// A writer for the empty file at `path`, already open as `plain`.
    pub(crate) fn new(path: &Path, plain: File) -> DirectWriter {
        let direct = if allowed() { open_direct(path) } else { None };
        let buf = if direct.is_some() {
            vec![0u8; BLOCK + ALIGN]
        } else {
            Vec::new()
        };
        // `align_offset` of a u8 pointer is always within ALIGN.
        let start = buf.as_ptr().align_offset(ALIGN).min(ALIGN);
        DirectWriter {
            plain,
            direct,
            buf,
            start,
            filled: 0,
            pos: 0,
        }
    }

    /// Whether writes still bypass the page cache.
    #[cfg(test)]
    pub(crate) fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Writes `len` staged bytes (a multiple of [`ALIGN`] while direct) at `pos`.
    fn write_staged(&mut self, len: usize) -> io::Result<()> {
        let data = &self.buf[self.start..self.start + len];
        if let Some(d) = &self.direct {
            match d.write_all_at(data, self.pos) {
                Ok(()) => {
                    self.pos += len as u64;
                    return Ok(());
                }
                // Alignment refused after all: write the ordinary way from here on.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => self.direct = None,
                Err(e) => return Err(e),
            }
        }
        self.plain.write_all_at(data, self.pos)?;
        self.pos += len as u64;
        Ok(())
    }

    /// Writes what is staged and cuts the file to the bytes written; returns the
    /// ordinary handle (not fsynced: the caller does that).
    pub(crate) fn finish(mut self) -> io::Result<File> {
        if self.filled > 0 {
            let len = self.filled;
            let padded = if self.direct.is_some() {
                let p = len.div_ceil(ALIGN) * ALIGN;
                self.buf[self.start + len..self.start + p].fill(0);
                p
            } else {
                len
            };
            self.write_staged(padded)?;
            // The padding (if any) goes again.
            let end = self.pos - (padded - len) as u64;
            if end != self.pos {
                self.plain.set_len(end)?;
            }
            self.filled = 0;
        }
        Ok(self.plain)
    }
}

impl Write for DirectWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.direct.is_none() && self.filled == 0 {
            self.plain.write_all_at(data, self.pos)?;
            self.pos += data.len() as u64;
            return Ok(data.len());
        }
        let n = data.len().min(BLOCK - self.filled);
        let at = self.start + self.filled;
        self.buf[at..at + n].copy_from_slice(&data[..n]);
        self.filled += n;
        if self.filled == BLOCK {
            self.write_staged(BLOCK)?;
            self.filled = 0;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes the whole content of the new, empty file at `path` (open as `file`):
/// about `len` bytes, which `write` produces in pieces; directly if `len` is large
/// enough. Returns the file's length once written. The caller fsyncs.
pub(crate) fn write_new_file_with(
    path: &Path,
    file: &File,
    len: u64,
    write: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
) -> io::Result<u64> {
    if len < MIN_DIRECT as u64 {
        let mut w = io::BufWriter::with_capacity(64 << 10, file);
        write(&mut w)?;
        w.flush()?;
    } else {
        let mut w = DirectWriter::new(path, file.try_clone()?);
        write(&mut w)?;
        w.finish()?;
    }
    Ok(file.metadata()?.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn roundtrip(data: &[u8], pieces: &[usize], direct: bool) -> (Vec<u8>, bool) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = File::create(&path).unwrap();
        let mut w = DirectWriter::new(&path, file);
        if !direct {
            w.direct = None;
        }
        let mut rest = data;
        let mut i = 0;
        while !rest.is_empty() {
            let n = pieces[i % pieces.len()].clamp(1, rest.len());
            w.write_all(&rest[..n]).unwrap();
            rest = &rest[n..];
            i += 1;
        }
        let was_direct = w.is_direct();
        let f = w.finish().unwrap();
        f.sync_all().unwrap();
        (std::fs::read(&path).unwrap(), was_direct)
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 12) as u8)
            .collect()
    }

    #[test]
    fn odd_lengths_come_back_exactly() {
        for len in [
            0,
            1,
            4095,
            4096,
            4097,
            BLOCK - 1,
            BLOCK,
            BLOCK + 1,
            3 * BLOCK + 12345,
        ] {
            let data = pattern(len, len as u8);
            for direct in [true, false] {
                let (got, _) = roundtrip(&data, &[7000, 1 << 20, 1, 65536], direct);
                assert_eq!(got.len(), data.len(), "len {len} direct {direct}");
                assert!(got == data, "content of len {len} direct {direct}");
            }
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn direct_writes_are_used_where_the_file_system_allows_them() {
        // The test directory's file system may refuse O_DIRECT (tmpfs): then the
        // writer must have fallen back, and the content is checked above anyway.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("probe");
        File::create(&path).unwrap();
        let supported = open_direct(&path).is_some();
        let data = pattern(2 * BLOCK + 100, 3);
        let (got, was_direct) = roundtrip(&data, &[BLOCK], true);
        assert!(got == data);
        assert_eq!(was_direct, supported && allowed());
    }

    /// Small and large files, written whole or in pieces of every size around
    /// the staging block's.
    #[test]
    fn whole_files_small_and_large() {
        for len in [0, 10, MIN_DIRECT + 4097, 3 * BLOCK] {
            for piece in [len.max(1), 7, 64 << 10, BLOCK - 1, BLOCK + 1] {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("f");
                let file = File::create(&path).unwrap();
                let data = pattern(len, 9);
                let got = write_new_file_with(&path, &file, len as u64, &mut |w| {
                    data.chunks(piece).try_for_each(|c| w.write_all(c))
                })
                .unwrap();
                assert_eq!(got, len as u64);
                assert!(
                    std::fs::read(&path).unwrap() == data,
                    "len {len}, pieces of {piece}"
                );
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn any_split_of_any_length(len in 0usize..(2 * BLOCK + 9000), a in 1usize..300_000, b in 1usize..5000, seed: u8) {
            let data = pattern(len, seed);
            let (got, _) = roundtrip(&data, &[a, b], true);
            prop_assert!(got == data);
        }
    }
}

//! Read-only maps of part of a stored object (a pack), for restores from a local
//! store: the decoder reads the pack's bytes where the page cache holds them,
//! instead of a `read` copying them into a buffer first.
//!
//! Why `unsafe` here, the one place outside the capture VFS that has it: mapping
//! a file is `unsafe` in memmap2 because the bytes can change or vanish under the
//! map. The `read` copy it saves was 8-10 % of a 1 GiB restore's CPU
//! (`_copy_to_iter`, docs/PERFORMANCE.md). What makes it sound here:
//! * Packs are immutable. pagesnap writes each to a temporary file and renames it
//!   into place, and never writes, truncates or reuses one afterwards: `prune`
//!   and `repair` delete whole files, and a deleted file stays readable through
//!   a map of it until the map is dropped.
//! * The map is populated when it is made (`MADV_POPULATE_READ`), so a read error
//!   of the disk, or a file that is shorter than the store's index says, is an
//!   ordinary error here, not a `SIGBUS` later. A kernel without it (before
//!   Linux 5.14) gets no map: the caller reads instead.
//! * Maps live only while their window is decoded (a few MiB at a time), so a
//!   restore's memory does not grow with the packs it reads.
//!
//! What is left is another program truncating a pack file while a restore reads
//! it, or the kernel dropping a populated page under memory pressure and then
//! failing to read it back: the restore is then killed by `SIGBUS` and may leave
//! its temporary output file (named `.<name>.pagesnap-*`) behind. Both are damage
//! to the store from outside that a read would have reported instead.

use std::fs::File;
use std::ops::{Deref, Range};

/// `range` of a file, mapped read-only.
pub struct Mapped {
    map: memmap2::Mmap,
    /// Bytes of the map before `range.start` (maps start on a page boundary).
    skip: usize,
}

impl Mapped {
    /// Maps `range` of `file` (which must lie inside it) and reads it into the map.
    /// `Ok(None)` when this system cannot map and populate it: read instead.
    pub(crate) fn of(file: &File, range: Range<u64>) -> std::io::Result<Option<Mapped>> {
        if !cfg!(target_os = "linux") || range.is_empty() {
            return Ok(None);
        }
        let page = page_size();
        let skip = range.start % page;
        let Ok(len) = usize::try_from(range.end - range.start + skip) else {
            return Ok(None);
        };
        // SAFETY: the file is a pack, which no one writes or truncates once it is
        // in place (see the module's comment); the map is read-only and private
        // to this value, and is populated below before any byte of it is read.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .offset(range.start - skip)
                .len(len)
                .map(file)?
        };
        #[cfg(target_os = "linux")]
        if let Err(e) = map.advise(memmap2::Advice::PopulateRead) {
            // EINVAL: a kernel without MADV_POPULATE_READ. Anything else (EFAULT
            // for a part past the file's end, EIO) is a failed read.
            return match e.raw_os_error() {
                Some(libc::EINVAL) => Ok(None),
                _ => Err(e),
            };
        }
        Ok(Some(Mapped {
            map,
            skip: skip as usize,
        }))
    }
}

impl Deref for Mapped {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.map[self.skip..]
    }
}

/// An object's bytes, or a range of them, as a backend gave them: mapped from a
/// local file, or read into memory.
pub enum ObjectBytes {
    Mapped(Mapped),
    Owned(Vec<u8>),
}

impl Deref for ObjectBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            ObjectBytes::Mapped(m) => m,
            ObjectBytes::Owned(v) => v,
        }
    }
}

fn page_size() -> u64 {
    rustix::param::page_size() as u64
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::Mapped;
    use std::io::Write;

    fn file_of(len: usize) -> (tempfile::NamedTempFile, Vec<u8>) {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4096) as u8).collect();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&bytes).unwrap();
        f.flush().unwrap();
        (f, bytes)
    }

    /// A map gives exactly the bytes of its range, wherever the range starts and
    /// ends relative to pages.
    #[test]
    fn a_map_holds_its_range() {
        let (f, bytes) = file_of(5 * 4096 + 123);
        for (start, end) in [
            (0, 1),
            (0, 4096),
            (1, 4097),
            (4095, 4097),
            (8193, 5 * 4096 + 123),
        ] {
            let m = Mapped::of(f.as_file(), start as u64..end as u64)
                .unwrap()
                .expect("Linux since 5.14 maps");
            assert_eq!(&m[..], &bytes[start..end], "range {start}..{end}");
        }
        assert!(Mapped::of(f.as_file(), 10..10).unwrap().is_none());
    }

    /// A file shorter than the range (a pack truncated under a restore) is an
    /// error when the map is made, not a SIGBUS when it is read.
    #[test]
    fn a_range_past_the_end_of_the_file_is_an_error() {
        let (f, _) = file_of(2 * 4096);
        let err = Mapped::of(f.as_file(), 0..5 * 4096)
            .err()
            .expect("an error");
        assert_eq!(err.raw_os_error(), Some(libc::EFAULT), "{err}");
    }
}

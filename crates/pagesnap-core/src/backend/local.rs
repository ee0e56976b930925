//! A store in a local directory. Every object is written to a temporary file in
//! its final directory, fsynced, renamed into place, and the directory fsynced, so
//! a crash leaves either the whole object or none (plus, at worst, a temporary
//! file whose name starts with `.tmp-`, which `list` never reports).

use super::{Backend, BackendError, ObjectInfo, OpenObject, PutMode, Result};
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Objects at least this long are read in two halves at once (see `get`).
const SPLIT_READ: u64 = 4 << 20;

/// Prefix of temporary files; never a valid key component.
pub const TEMP_PREFIX: &str = ".tmp-";

pub struct LocalBackend {
    root: PathBuf,
}

impl LocalBackend {
    /// A backend rooted at `root` (which need not exist yet: `put` creates directories).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalBackend { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        self.check_key(key)?;
        Ok(self.root.join(key))
    }

    /// Keys are relative paths of plain names (`packs/ab/abcd…`): never absolute,
    /// never `..` or `.`, never a temporary file's name, never NUL or a newline, so
    /// no key can reach outside the store or collide with a write in progress.
    fn check_key(&self, key: &str) -> Result<()> {
        let bad = key.is_empty()
            || key.starts_with('/')
            || key.contains(['\0', '\n', '\r', '\\'])
            || key
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == ".." || c.starts_with(TEMP_PREFIX));
        if bad {
            return Err(self.io(
                "use",
                key,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "invalid object key"),
            ));
        }
        Ok(())
    }

    fn io(&self, op: &'static str, key: &str, source: std::io::Error) -> BackendError {
        if source.kind() == std::io::ErrorKind::NotFound && matches!(op, "read" | "open") {
            return BackendError::NotFound {
                location: self.location(),
                key: key.to_string(),
            };
        }
        BackendError::Io {
            location: self.location(),
            op,
            key: key.to_string(),
            source,
        }
    }

    fn create_dirs(&self, dir: &Path, key: &str) -> Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        let mut b = fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            b.mode(0o700);
        }
        b.create(dir)
            .map_err(|e| self.io("create directory for", key, e))
    }

    /// A temporary file in `dir` holding the `len` bytes `write` produces, fsynced.
    fn write_temp(
        &self,
        dir: &Path,
        key: &str,
        len: u64,
        write: &mut dyn FnMut(&mut dyn std::io::Write) -> std::io::Result<()>,
    ) -> Result<tempfile::TempPath> {
        let tmp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(dir)
            .map_err(|e| self.io("create temporary file for", key, e))?;
        // tempfile creates files with mode 0600 on Unix: owner-only, as store files should be.
        // Large objects (packs) go past the page cache: they are fsynced anyway.
        super::direct_write::write_new_file_with(tmp.path(), tmp.as_file(), len, write)
            .and_then(|got| super::check_streamed_len(got, len))
            .map_err(|e| self.io("write", key, e))?;
        tmp.as_file()
            .sync_all()
            .map_err(|e| self.io("fsync", key, e))?;
        Ok(tmp.into_temp_path())
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A temporary lock file older than this belongs to a process killed while taking
/// a lock: writing one takes milliseconds.
const LOCK_TEMP_STALE: std::time::Duration = std::time::Duration::from_secs(3600);

impl LocalBackend {
    /// Removes `locks/.tmp-*` files older than [`LOCK_TEMP_STALE`]. Younger ones may
    /// be a lock being taken right now, by a process that holds no lock yet.
    fn clean_old_lock_temporaries(&self) -> Result<u64> {
        let dir = self.root.join("locks");
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(self.io("list", "locks/", e)),
        };
        let mut removed = 0;
        for ent in rd {
            let ent = ent.map_err(|e| self.io("list", "locks/", e))?;
            if !ent.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                continue;
            }
            let old = ent
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > LOCK_TEMP_STALE);
            if old && fs::remove_file(ent.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

impl LocalBackend {
    /// Reads `range` of the open object `f` (named `key`) into `buf`. With
    /// `shared`, `f` is a handle other threads read too ([`OpenObject`]):
    /// positional reads only, since a seek would move the file offset they
    /// share.
    fn read_range(
        &self,
        f: &File,
        key: &str,
        range: Range<u64>,
        buf: &mut Vec<u8>,
        shared: bool,
    ) -> Result<()> {
        let out_of_range = |len: u64| BackendError::Range {
            location: self.location(),
            key: key.to_string(),
            len,
            start: range.start,
            end: range.end,
        };
        if range.start > range.end {
            let len = f.metadata().map_err(|e| self.io("stat", key, e))?.len();
            return Err(out_of_range(len));
        }
        let want = usize::try_from(range.end - range.start)
            .map_err(|_| self.io("read", key, std::io::Error::other("range too large")))?;
        let read = if buf.len() >= want || (shared && buf.capacity() >= want) {
            // A reused buffer: one `pread` into bytes an earlier read filled (a
            // restore makes thousands of these reads; a seek and `read_to_end`,
            // which grows its reads from 8 KiB, took five to eight system calls).
            buf.resize(want, 0);
            f.read_exact_at(buf, range.start)
        } else if shared {
            // A buffer of exactly `want` bytes, read into without zeroing.
            let mut fresh = Vec::with_capacity(want);
            let read = loop {
                if fresh.len() >= want {
                    fresh.truncate(want);
                    break Ok(());
                }
                let at = range.start + fresh.len() as u64;
                match rustix::io::pread(f, rustix::buffer::spare_capacity(&mut fresh), at) {
                    Ok(0) => break Err(std::io::ErrorKind::UnexpectedEof.into()),
                    Ok(_) | Err(rustix::io::Errno::INTR) => {}
                    Err(e) => break Err(std::io::Error::from(e)),
                }
            };
            *buf = fresh;
            read
        } else {
            // A buffer that must grow: read into its spare capacity, which
            // `read_to_end` fills without zeroing it first (zeroing fresh
            // buffers cost more CPU than the calls saved).
            buf.clear();
            buf.reserve(want);
            let mut f = f;
            f.seek(SeekFrom::Start(range.start))
                .and_then(|_| f.take(want as u64).read_to_end(buf))
                .and_then(|got| match got == want {
                    true => Ok(()),
                    false => Err(std::io::ErrorKind::UnexpectedEof.into()),
                })
        };
        match read {
            Ok(()) => Ok(()),
            // Past the end: the range was not inside the object (or it shrank).
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                let len = f.metadata().map_err(|e| self.io("stat", key, e))?.len();
                buf.clear();
                Err(out_of_range(len))
            }
            Err(e) => {
                buf.clear();
                Err(self.io("read", key, e))
            }
        }
    }
}

impl Backend for LocalBackend {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn put(&self, key: &str, data: &[u8], mode: PutMode) -> Result<()> {
        self.put_streamed(key, data.len() as u64, mode, &mut |w| w.write_all(data))
    }

    fn put_streamed(
        &self,
        key: &str,
        len: u64,
        mode: PutMode,
        write: &mut dyn FnMut(&mut dyn std::io::Write) -> std::io::Result<()>,
    ) -> Result<()> {
        let path = self.path(key)?;
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        self.create_dirs(&dir, key)?;
        let tmp = self.write_temp(&dir, key, len, write)?;
        match mode {
            PutMode::Overwrite => tmp
                .persist(&path)
                .map_err(|e| self.io("rename into", key, e.error))?,
            PutMode::Create => {
                // hard_link fails if the target exists: an atomic create-if-absent.
                match fs::hard_link(&tmp, &path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        return Err(BackendError::AlreadyExists {
                            location: self.location(),
                            key: key.to_string(),
                        })
                    }
                    Err(e) => return Err(self.io("link into", key, e)),
                }
                // `tmp` is removed when dropped.
            }
        }
        sync_dir(&dir).map_err(|e| self.io("fsync directory of", key, e))
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        let mut f = File::open(self.path(key)?).map_err(|e| self.io("read", key, e))?;
        let len = f.metadata().map_err(|e| self.io("stat", key, e))?.len();
        if len < SPLIT_READ {
            let mut bytes = Vec::with_capacity(len as usize);
            f.read_to_end(&mut bytes)
                .map_err(|e| self.io("read", key, e))?;
            return Ok(bytes);
        }
        // A large object (a first backup's index object: 10 MB for 1 GiB) is read
        // in two halves on two cores: most of a read into a fresh buffer is the
        // page faults on it, which each core takes for its own half. It was the
        // longest step before a restore's first write.
        let len = usize::try_from(len)
            .map_err(|_| self.io("read", key, std::io::Error::other("object too large")))?;
        let mut bytes = vec![0u8; len];
        let (front, back) = bytes.split_at_mut(len / 2);
        let (a, b) = rayon::join(
            || f.read_exact_at(front, 0),
            || f.read_exact_at(back, (len / 2) as u64),
        );
        // Objects never change once stored; one that shrank since `stat` fails
        // here, one that grew fails its reader's check against its name.
        a.and(b).map_err(|e| self.io("read", key, e))?;
        Ok(bytes)
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.get_range_into(key, range, &mut buf)?;
        Ok(buf)
    }

    fn get_range_into(&self, key: &str, range: Range<u64>, buf: &mut Vec<u8>) -> Result<()> {
        let f = File::open(self.path(key)?).map_err(|e| self.io("open", key, e))?;
        self.read_range(&f, key, range, buf, false)
    }

    fn open_for_reads(&self, key: &str) -> Result<Option<OpenObject>> {
        let f = File::open(self.path(key)?).map_err(|e| self.io("open", key, e))?;
        Ok(Some(OpenObject::new(f)))
    }

    fn read_open(
        &self,
        obj: &OpenObject,
        key: &str,
        range: Range<u64>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        self.read_range(obj.file(), key, range, buf, true)
    }

    fn get_ranges(&self, key: &str, ranges: &[Range<u64>]) -> Result<Vec<Vec<u8>>> {
        let f = File::open(self.path(key)?).map_err(|e| self.io("open", key, e))?;
        ranges
            .iter()
            .map(|r| {
                let mut buf = Vec::new();
                self.read_range(&f, key, r.clone(), &mut buf, false)
                    .map(|()| buf)
            })
            .collect()
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        match fs::metadata(self.path(key)?) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io("stat", key, e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let mut out = Vec::new();
        // A prefix is a folder (`snapshots/`) or empty: a key with a trailing slash.
        if !prefix.is_empty() {
            self.check_key(prefix.trim_end_matches('/'))?;
        }
        let start = self.root.join(prefix);
        let mut stack = vec![start];
        while let Some(dir) = stack.pop() {
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.io("list", prefix, e)),
            };
            for ent in rd {
                let ent = ent.map_err(|e| self.io("list", prefix, e))?;
                let name = ent.file_name();
                let name = name.to_string_lossy();
                if name.starts_with(TEMP_PREFIX) {
                    continue;
                }
                // An object deleted by another process between the directory read
                // and this look at it is simply not listed.
                let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
                let ft = match ent.file_type() {
                    Ok(ft) => ft,
                    Err(e) if gone(&e) => continue,
                    Err(e) => return Err(self.io("list", prefix, e)),
                };
                if ft.is_dir() {
                    stack.push(ent.path());
                } else if ft.is_file() {
                    let size = match ent.metadata() {
                        Ok(m) => m.len(),
                        Err(e) if gone(&e) => continue,
                        Err(e) => return Err(self.io("list", prefix, e)),
                    };
                    let rel = ent.path();
                    let rel = rel.strip_prefix(&self.root).unwrap_or(&rel);
                    let key = rel
                        .components()
                        .map(|c| c.as_os_str().to_string_lossy())
                        .collect::<Vec<_>>()
                        .join("/");
                    out.push(ObjectInfo { key, size });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn clean_temporary(&self) -> Result<u64> {
        let mut removed = self.clean_old_lock_temporaries()?;
        // Only the folders written under a shared lock: lock objects (and the root's
        // `config` and `policy`) are written without one, by processes that may be
        // trying to take a lock right now.
        let mut stack: Vec<PathBuf> = ["packs", "index", "maps", "snapshots", "dicts"]
            .iter()
            .map(|d| self.root.join(d))
            .collect();
        while let Some(dir) = stack.pop() {
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.io("list", "", e)),
            };
            for ent in rd {
                let ent = ent.map_err(|e| self.io("list", "", e))?;
                let ft = ent.file_type().map_err(|e| self.io("list", "", e))?;
                if ft.is_dir() {
                    stack.push(ent.path());
                } else if ent.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                    match fs::remove_file(ent.path()) {
                        Ok(()) => removed += 1,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(self.io("delete temporary file", "", e)),
                    }
                }
            }
        }
        Ok(removed)
    }

    fn delete(&self, key: &str) -> Result<()> {
        match fs::remove_file(self.path(key)?) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io("delete", key, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_lock_temporaries_are_cleaned_young_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path());
        fs::create_dir_all(dir.path().join("locks")).unwrap();
        let old = dir.path().join("locks/.tmp-old");
        let young = dir.path().join("locks/.tmp-young");
        fs::write(&old, b"").unwrap();
        fs::write(&young, b"").unwrap();
        let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
        assert_eq!(b.clean_temporary().unwrap(), 1);
        assert!(!old.exists());
        assert!(young.exists());
    }

    /// A streamed object lands whole, small or past the direct-write size; one
    /// whose pieces do not come to the announced length, or whose writer fails,
    /// is not stored and leaves no temporary file. The default (buffering) put
    /// of other backends checks the same.
    #[test]
    fn streamed_puts_store_exactly_what_was_announced() {
        let dir = tempfile::tempdir().unwrap();
        let local = LocalBackend::new(dir.path());
        // Every put allowed: only its default (buffering) `put_streamed` is tested.
        let faulty = crate::backend::FaultyBackend::new(
            std::sync::Arc::new(LocalBackend::new(dir.path())),
            u64::MAX,
            crate::backend::Fault::NoSpace,
        );
        let backends: [&dyn Backend; 2] = [&local, &faulty];
        for (n, b) in backends.into_iter().enumerate() {
            for len in [5usize, (3 << 20) + 7] {
                let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
                let key = format!("index/{n}-{len}");
                b.put_streamed(&key, len as u64, PutMode::Overwrite, &mut |w| {
                    data.chunks(100_000).try_for_each(|c| w.write_all(c))
                })
                .unwrap();
                assert!(b.get(&key).unwrap() == data);
                let short = format!("index/{n}-{len}-short");
                let err = b
                    .put_streamed(&short, len as u64 + 1, PutMode::Overwrite, &mut |w| {
                        w.write_all(&data)
                    })
                    .expect_err("one byte short");
                assert!(err.to_string().contains("announced"), "{err}");
                let failing = format!("index/{n}-{len}-failing");
                let err = b
                    .put_streamed(&failing, len as u64, PutMode::Overwrite, &mut |w| {
                        w.write_all(&data[..len / 2])?;
                        Err(std::io::Error::other("encoder gave up"))
                    })
                    .expect_err("the writer failed");
                assert!(err.to_string().contains("encoder gave up"), "{err}");
                for k in [&short, &failing] {
                    assert_eq!(b.size(k).unwrap(), None, "{k}");
                }
            }
        }
        let left: Vec<_> = fs::read_dir(dir.path().join("index"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(TEMP_PREFIX))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn keys_cannot_leave_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().join("store"));
        for key in [
            "../escape",
            "packs/../../escape",
            "/etc/passwd",
            "a//b",
            "snapshots/.tmp-x",
            "a\nb",
            "a\0b",
            "",
            ".",
        ] {
            let err = b.put(key, b"x", PutMode::Overwrite).unwrap_err();
            assert!(
                err.to_string().contains("invalid object key"),
                "{key:?}: {err}"
            );
            assert!(b.get(key).is_err(), "{key:?}");
            assert!(b.delete(key).is_err(), "{key:?}");
        }
        assert!(b.list("../").is_err());
        assert!(!dir.path().join("escape").exists());
        b.put("damaged/index/ab", b"x", PutMode::Overwrite).unwrap();
        assert_eq!(b.get("damaged/index/ab").unwrap(), b"x");
    }

    /// Objects from `SPLIT_READ` on are read in two halves: every byte comes back
    /// in its place, at even and odd lengths; a missing one is `NotFound`.
    #[test]
    fn large_objects_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().join("store"));
        for len in [
            SPLIT_READ - 1,
            SPLIT_READ,
            SPLIT_READ + 1,
            3 * SPLIT_READ + 7,
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4093) as u8).collect();
            b.put("index/big", &data, PutMode::Overwrite).unwrap();
            let got = b.get("index/big").unwrap();
            assert_eq!(got.len(), data.len());
            assert!(got == data, "length {len}");
        }
        let path = dir.path().join("store/index/big");
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(SPLIT_READ + 5).unwrap();
        assert_eq!(b.get("index/big").unwrap().len() as u64, SPLIT_READ + 5);
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            b.get("index/big"),
            Err(BackendError::NotFound { .. })
        ));
    }

    /// Ranges read into a reused buffer hold exactly the range, whatever the
    /// buffer held before; a range past the end, or reversed, is a range error
    /// naming the object's length.
    #[test]
    fn ranges_read_into_reused_buffers() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().join("store"));
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        b.put("packs/ab/abcd", &data, PutMode::Overwrite).unwrap();
        let mut buf = vec![0xee; 20_000];
        for range in [100..5_000u64, 0..10_000, 9_999..10_000, 7..7, 3_000..9_000] {
            b.get_range_into("packs/ab/abcd", range.clone(), &mut buf)
                .unwrap();
            assert!(buf[..] == data[range.start as usize..range.end as usize]);
            // And into a buffer that must grow.
            let mut fresh = vec![0xee; 3];
            b.get_range_into("packs/ab/abcd", range.clone(), &mut fresh)
                .unwrap();
            assert!(fresh == buf);
        }
        #[allow(clippy::reversed_empty_ranges)] // a reversed range, on purpose
        let reversed = 20..10;
        for range in [9_000..10_001u64, 10_001..10_002, reversed] {
            let mut fresh = Vec::new();
            assert!(matches!(
                b.get_range_into("packs/ab/abcd", range.clone(), &mut fresh),
                Err(BackendError::Range { len: 10_000, .. })
            ));
            match b.get_range_into("packs/ab/abcd", range.clone(), &mut buf) {
                Err(BackendError::Range {
                    len, start, end, ..
                }) => {
                    assert_eq!((len, start, end), (10_000, range.start, range.end));
                }
                other => panic!("{range:?}: {other:?}"),
            }
        }
        assert!(matches!(
            b.get_range_into("packs/ab/none", 0..1, &mut buf),
            Err(BackendError::NotFound { .. })
        ));
    }

    /// Several ranges of one object read through one open file are each what
    /// `get_range` reads, in order, whatever their order in the file; one past
    /// the end fails the call with the range error naming it, and a missing
    /// object is not found (damage the caller can tell from an I/O error).
    #[test]
    fn several_ranges_read_through_one_open() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().join("store"));
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        b.put("packs/ab/abcd", &data, PutMode::Overwrite).unwrap();
        let ranges = [9_000..10_000u64, 0..17, 4_096..8_192, 5..5, 0..10_000];
        let got = b.get_ranges("packs/ab/abcd", &ranges).unwrap();
        assert_eq!(got.len(), ranges.len());
        for (r, bytes) in ranges.iter().zip(&got) {
            assert!(bytes[..] == data[r.start as usize..r.end as usize], "{r:?}");
        }
        match b.get_ranges("packs/ab/abcd", &[0..10, 9_990..10_001]) {
            Err(BackendError::Range {
                len, start, end, ..
            }) => {
                assert_eq!((len, start, end), (10_000, 9_990, 10_001));
            }
            other => panic!("{other:?}"),
        }
        match b.get_ranges("packs/ab/none", &[0..1, 1..2]) {
            Err(e @ BackendError::NotFound { .. }) => assert!(e.is_damage()),
            other => panic!("{other:?}"),
        }
    }
    #[test]
    fn put_get_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().join("store"));
        b.put("packs/ab/abcd", b"hello", PutMode::Overwrite)
            .unwrap();
        b.put("snapshots/x", b"12", PutMode::Overwrite).unwrap();
        assert_eq!(b.get("packs/ab/abcd").unwrap(), b"hello");
        assert_eq!(b.get_range("packs/ab/abcd", 1..3).unwrap(), b"el");
        assert!(b.get_range("packs/ab/abcd", 3..9).is_err());
        let keys: Vec<_> = b
            .list("packs/")
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys, vec!["packs/ab/abcd".to_string()]);
        assert_eq!(b.size("snapshots/x").unwrap(), Some(2));
        b.delete("snapshots/x").unwrap();
        assert_eq!(b.size("snapshots/x").unwrap(), None);
        assert!(matches!(
            b.get("snapshots/x"),
            Err(BackendError::NotFound { .. })
        ));
    }

    #[test]
    fn create_mode_refuses_to_replace() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path());
        b.put("config", b"one", PutMode::Create).unwrap();
        let err = b.put("config", b"two", PutMode::Create).unwrap_err();
        assert!(matches!(err, BackendError::AlreadyExists { .. }), "{err}");
        assert_eq!(b.get("config").unwrap(), b"one");
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[cfg(unix)]
    #[test]
    fn objects_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().join("s"));
        b.put("packs/aa/x", b"1", PutMode::Overwrite).unwrap();
        let mode = fs::metadata(dir.path().join("s/packs/aa/x"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let mode = fs::metadata(dir.path().join("s/packs/aa"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn temporary_files_of_killed_writers_are_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path());
        b.put("packs/ab/x", b"1", PutMode::Overwrite).unwrap();
        fs::write(dir.path().join("packs/ab/.tmp-dead"), b"partial").unwrap();
        fs::create_dir_all(dir.path().join("snapshots")).unwrap();
        fs::write(dir.path().join("snapshots/.tmp-1"), b"").unwrap();
        // A lock being taken right now is not touched.
        fs::create_dir_all(dir.path().join("locks")).unwrap();
        fs::write(dir.path().join("locks/.tmp-2"), b"").unwrap();
        assert_eq!(b.clean_temporary().unwrap(), 2);
        assert!(dir.path().join("locks/.tmp-2").exists());
        assert!(!dir.path().join("packs/ab/.tmp-dead").exists());
        assert_eq!(b.get("packs/ab/x").unwrap(), b"1", "objects are kept");
        assert_eq!(b.clean_temporary().unwrap(), 0);
    }

    #[test]
    fn temp_files_are_not_listed() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path());
        fs::create_dir_all(dir.path().join("snapshots")).unwrap();
        fs::write(dir.path().join("snapshots/.tmp-abc"), b"partial").unwrap();
        assert!(b.list("snapshots/").unwrap().is_empty());
    }
}

//! A [`Backend`] that seals every object on its way to another one and opens
//! it on the way back, so that nothing above it changes for an encrypted store:
//! the layers above see plaintext objects under the same names.
//!
//! Packs and dictionaries (page contents) are sealed under the data key,
//! everything else under the metadata key (seal.rs); `config` and `keys/` pass
//! through as they are (they carry their own protection). Sizes (`size`,
//! `list`) are the plaintext's, computed from the sealed length. A ranged read
//! fetches the object's header once (its key is kept, bounded) and then only
//! the segments covering the range.

use super::seal::{self, KeyKind, ObjectKey, SealKeys, Sealer, SEGMENT};
use super::CryptoError;
use crate::backend::{Backend, BackendError, ObjectInfo, PutMode, RequestCounts, Result};
use crate::layout;
use std::collections::HashMap;
use std::io::Write;
use std::ops::Range;
use std::sync::{Arc, Mutex};

/// Keys of objects read by range kept at most: a restore reads a few hundred
/// packs, each key 100 bytes.
const KEYS_KEPT: usize = 4096;

/// Under which key the object named `key` is sealed; `None`: not sealed.
pub fn kind_of(key: &str) -> Option<KeyKind> {
    let k = key.strip_prefix(layout::DAMAGED).unwrap_or(key);
    if k == layout::CONFIG || k.starts_with(layout::KEYS) {
        None
    } else if k.starts_with(layout::PACKS) || k.starts_with(layout::DICTS) {
        Some(KeyKind::Data)
    } else {
        Some(KeyKind::Metadata)
    }
}

/// See the module comment.
pub struct SealedBackend {
    inner: Arc<dyn Backend>,
    keys: SealKeys,
    opened: Mutex<HashMap<String, ObjectKey>>,
}

impl SealedBackend {
    pub fn new(inner: Arc<dyn Backend>, keys: SealKeys) -> SealedBackend {
        SealedBackend {
            inner,
            keys,
            opened: Mutex::new(HashMap::new()),
        }
    }

    fn err(&self, key: &str, source: CryptoError) -> BackendError {
        BackendError::Sealed {
            location: self.inner.location(),
            key: key.to_string(),
            source,
        }
    }

    /// The key of object `key`, from its header (read once, then kept).
    fn key_for(&self, key: &str, kind: KeyKind, fresh: bool) -> Result<ObjectKey> {
        if !fresh {
            if let Some(k) = self.opened.lock().ok().and_then(|m| m.get(key).cloned()) {
                return Ok(k);
            }
        }
        let header = self.inner.get_range(key, 0..kind.header_len() as u64)?;
        let k = seal::object_key(&self.keys, kind, key, &header).map_err(|e| self.err(key, e))?;
        if let Ok(mut m) = self.opened.lock() {
            if m.len() >= KEYS_KEPT {
                m.clear();
            }
            m.insert(key.to_string(), k.clone());
        }
        Ok(k)
    }

    /// Ranges of plaintext of object `key`, each read and opened alone.
    fn ranges_once(
        &self,
        key: &str,
        kind: KeyKind,
        ranges: &[Range<u64>],
        fresh: bool,
    ) -> Result<Vec<Vec<u8>>> {
        let k = self.key_for(key, kind, fresh)?;
        let mut sealed = Vec::with_capacity(ranges.len());
        for r in ranges {
            if r.start > r.end || r.end > k.plain_len {
                return Err(BackendError::Range {
                    location: self.inner.location(),
                    key: key.to_string(),
                    len: k.plain_len,
                    start: r.start,
                    end: r.end,
                });
            }
            let segs = k.segments_of(r).map_err(|e| self.err(key, e))?;
            sealed.push(k.sealed_range(segs));
        }
        let got = self.inner.get_ranges(key, &sealed)?;
        ranges
            .iter()
            .zip(got)
            .map(|(r, s)| k.open_range_owned(r, s).map_err(|e| self.err(key, e)))
            .collect()
    }

    fn ranges(&self, key: &str, ranges: &[Range<u64>]) -> Result<Vec<Vec<u8>>> {
        let Some(kind) = kind_of(key) else {
            return self.inner.get_ranges(key, ranges);
        };
        match self.ranges_once(key, kind, ranges, false) {
            // A kept key may be of an object since written again under the
            // same name (sealed afresh): read its header again before calling
            // anything damage.
            Err(BackendError::Sealed { .. }) => self.ranges_once(key, kind, ranges, true),
            r => r,
        }
    }

    fn plain_size(kind: Option<KeyKind>, sealed: u64) -> u64 {
        match kind {
            // A length no object has: shorter than anything, so a reader that
            // compares it with a record sees damage.
            Some(kind) => seal::plain_len(kind, sealed).unwrap_or(0),
            None => sealed,
        }
    }
}

/// Seals what a streamed put writes, a segment at a time.
struct SealingWriter<'a> {
    out: &'a mut dyn Write,
    sealer: &'a Sealer,
    buf: Vec<u8>,
    segment: u64,
    written: u64,
}

impl SealingWriter<'_> {
    fn seal_buffered(&mut self) -> std::io::Result<()> {
        let tag = self
            .sealer
            .seal_segment(self.segment, &mut self.buf)
            .map_err(std::io::Error::other)?;
        self.out.write_all(&self.buf)?;
        self.out.write_all(&tag)?;
        self.segment += 1;
        self.buf.clear();
        Ok(())
    }
}

impl Write for SealingWriter<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        let take = data.len().min(SEGMENT as usize - self.buf.len());
        // The last segment is sealed by `finish`, knowing it is the last.
        if take == 0 {
            self.seal_buffered()?;
            return self.write(data);
        }
        self.buf.extend_from_slice(&data[..take]);
        self.written += take as u64;
        Ok(take)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Backend for SealedBackend {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn put(&self, key: &str, data: &[u8], mode: PutMode) -> Result<()> {
        match kind_of(key) {
            None => self.inner.put(key, data, mode),
            Some(kind) => {
                let sealed =
                    seal::seal(&self.keys, kind, key, data).map_err(|e| self.err(key, e))?;
                self.inner.put_vec(key, sealed, mode).map(drop)
            }
        }
    }

    fn put_vec(&self, key: &str, data: Vec<u8>, mode: PutMode) -> Result<Option<Vec<u8>>> {
        match kind_of(key) {
            None => self.inner.put_vec(key, data, mode),
            Some(_) => {
                self.put(key, &data, mode)?;
                Ok(Some(data))
            }
        }
    }

    fn put_streamed(
        &self,
        key: &str,
        len: u64,
        mode: PutMode,
        write: &mut dyn FnMut(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<()> {
        let Some(kind) = kind_of(key) else {
            return self.inner.put_streamed(key, len, mode, write);
        };
        let sealer = Sealer::new(&self.keys, kind, key, len).map_err(|e| self.err(key, e))?;
        self.inner
            .put_streamed(key, seal::sealed_len(kind, len), mode, &mut |out| {
                out.write_all(sealer.header())?;
                let mut w = SealingWriter {
                    out,
                    sealer: &sealer,
                    buf: Vec::with_capacity(SEGMENT as usize),
                    segment: 0,
                    written: 0,
                };
                write(&mut w)?;
                crate::backend::check_streamed_len(w.written, len)?;
                // The last segment (an empty object's only one).
                w.seal_buffered()
            })
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        let sealed = self.inner.get(key)?;
        match kind_of(key) {
            None => Ok(sealed),
            Some(kind) => seal::open(&self.keys, kind, key, &sealed).map_err(|e| self.err(key, e)),
        }
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>> {
        Ok(self.ranges(key, &[range])?.pop().unwrap_or_default())
    }

    fn get_ranges(&self, key: &str, ranges: &[Range<u64>]) -> Result<Vec<Vec<u8>>> {
        self.ranges(key, ranges)
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        Ok(self
            .inner
            .size(key)?
            .map(|s| Self::plain_size(kind_of(key), s)))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let mut v = self.inner.list(prefix)?;
        for o in &mut v {
            o.size = Self::plain_size(kind_of(&o.key), o.size);
        }
        Ok(v)
    }

    fn delete(&self, key: &str) -> Result<()> {
        if let Ok(mut m) = self.opened.lock() {
            m.remove(key);
        }
        self.inner.delete(key)
    }

    fn clean_temporary(&self) -> Result<u64> {
        self.inner.clean_temporary()
    }

    fn requests(&self) -> Option<RequestCounts> {
        self.inner.requests()
    }

    fn parallel_reads(&self) -> usize {
        self.inner.parallel_reads()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::LocalBackend;

    fn pair() -> (tempfile::TempDir, Arc<dyn Backend>, SealedBackend) {
        let dir = tempfile::tempdir().unwrap();
        let raw: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path()));
        let sealed = SealedBackend::new(raw.clone(), super::super::seal::tests::keys());
        (dir, raw, sealed)
    }

    /// Whole, ranged, several-ranged and streamed objects read back as
    /// written; what lies below is sealed and sized as plaintext above.
    #[test]
    fn objects_read_back_through_every_call() {
        let (_d, raw, b) = pair();
        let data: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        b.put("packs/ab/abcd", &data, PutMode::Overwrite).unwrap();
        b.put_streamed(
            "index/01",
            data.len() as u64,
            PutMode::Overwrite,
            &mut |w| {
                for piece in data.chunks(777) {
                    w.write_all(piece)?;
                }
                Ok(())
            },
        )
        .unwrap();
        b.put_streamed("index/empty", 0, PutMode::Overwrite, &mut |_| Ok(()))
            .unwrap();
        assert_eq!(b.get("index/empty").unwrap(), b"");
        for key in ["packs/ab/abcd", "index/01"] {
            assert_eq!(b.get(key).unwrap(), data);
            assert_eq!(b.size(key).unwrap(), Some(data.len() as u64));
            assert_ne!(raw.get(key).unwrap(), data);
            for r in [
                0..0,
                0..1,
                4095..4097,
                100..9000,
                49_999..50_000,
                50_000..50_000,
            ] {
                assert_eq!(
                    b.get_range(key, r.clone()).unwrap(),
                    &data[r.start as usize..r.end as usize]
                );
            }
            let rs = [10..20, 8000..8200, 0..50_000];
            let got = b.get_ranges(key, &rs).unwrap();
            for (r, g) in rs.iter().zip(got) {
                assert_eq!(g, &data[r.start as usize..r.end as usize]);
            }
            assert!(b.get_range(key, 49_000..50_001).unwrap_err().is_damage());
        }
        let listed = b.list("index/").unwrap();
        assert!(listed
            .iter()
            .any(|o| o.key == "index/01" && o.size == data.len() as u64));
        // A streamed put that writes another length than announced stores nothing.
        assert!(b
            .put_streamed("index/02", 10, PutMode::Overwrite, &mut |w| w
                .write_all(b"short"))
            .is_err());
        assert_eq!(b.size("index/02").unwrap(), None);
        // Not sealed: the config and key files.
        b.put("config", b"clear", PutMode::Overwrite).unwrap();
        assert_eq!(raw.get("config").unwrap(), b"clear");
    }

    /// An object written again under its name (sealed afresh) reads back
    /// through a kept key; a tampered one is damage.
    #[test]
    fn a_rewritten_object_is_not_damage_and_a_tampered_one_is() {
        let (_d, raw, b) = pair();
        let data = vec![3u8; 10_000];
        b.put("packs/ab/ab", &data, PutMode::Overwrite).unwrap();
        assert_eq!(b.get_range("packs/ab/ab", 5..9).unwrap(), &data[5..9]);
        b.put("packs/ab/ab", &data, PutMode::Overwrite).unwrap();
        assert_eq!(
            b.get_range("packs/ab/ab", 5000..5009).unwrap(),
            &data[5000..5009]
        );
        let mut t = raw.get("packs/ab/ab").unwrap();
        let last = t.len() - 1;
        t[last] ^= 1;
        raw.put("packs/ab/ab", &t, PutMode::Overwrite).unwrap();
        let e = b.get_range("packs/ab/ab", 9990..10_000).unwrap_err();
        assert!(e.is_damage(), "{e}");
        assert!(b.get("packs/ab/ab").unwrap_err().is_damage());
        // Moved under another name: damage too.
        b.put("index/bb", b"meta", PutMode::Overwrite).unwrap();
        raw.put(
            "index/cc",
            &raw.get("index/bb").unwrap(),
            PutMode::Overwrite,
        )
        .unwrap();
        assert!(b.get("index/cc").unwrap_err().is_damage());
    }
}

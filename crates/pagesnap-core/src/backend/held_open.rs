//! Objects kept open across the many ranged reads of one operation.
//!
//! A restore of a store with deltas reads each window's chain links level by
//! level, pack by pack: at 1 GiB after 144 steps that was 68,000 `open`s of
//! 145 packs (26,000 without deltas), and holding them open made the restore
//! 8 % faster (docs/PERFORMANCE.md, "Restoring a store with deltas"); a
//! backup with deltas opened a pack for every link of every base's chain.
//! Only for the length of one operation, under a lock that keeps prune and
//! repair out: no pack is deleted or replaced meanwhile, so a handle never
//! outlives the object it was opened on, and a later operation sees the
//! store as it is then (a file made unreadable since is refused, as any read
//! would be).

use super::{Backend, Result};
use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::sync::{Arc, Mutex};

/// At most this many objects held open at once (well below the usual limit of
/// 1,024 file descriptors); past it they are all closed and opened again as
/// needed, so a store of many packs costs no more than one open per read.
const MAX_OPEN: usize = 256;

/// An object opened for ranged reads by [`Backend::open_for_reads`].
pub struct OpenObject {
    file: File,
}

impl OpenObject {
    pub(crate) fn new(file: File) -> Self {
        OpenObject { file }
    }

    pub(crate) fn file(&self) -> &File {
        &self.file
    }
}

/// The objects one operation holds open, for ranged reads of whichever
/// backend each call names: objects it opens for reads
/// ([`Backend::open_for_reads`]) are kept open, the others are read as
/// [`Backend::get_range_into`] reads them. Errors are the backend's own. Its
/// owner keeps it only while no object can be deleted or replaced (under a
/// lock that keeps prune and repair out).
#[derive(Default)]
pub struct OpenObjects {
    /// `None` for an object the backend reads range by range.
    open: Mutex<HashMap<String, Option<Arc<OpenObject>>>>,
}

impl OpenObjects {
    fn handle(&self, backend: &dyn Backend, key: &str) -> Result<Option<Arc<OpenObject>>> {
        // A poisoned lock only means another reader panicked: the map is whole.
        let held = |m: &HashMap<String, Option<Arc<OpenObject>>>| m.get(key).cloned();
        if let Some(h) = held(&self.open.lock().unwrap_or_else(|e| e.into_inner())) {
            return Ok(h);
        }
        // Opened outside the lock: two readers may open one object at once,
        // and one of the handles is dropped.
        let h = backend.open_for_reads(key)?.map(Arc::new);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.len() >= MAX_OPEN {
            open.clear();
        }
        open.insert(key.to_string(), h.clone());
        Ok(h)
    }

    /// `range` of object `key` into `buf`, as [`Backend::get_range_into`].
    pub fn get_range_into(
        &self,
        backend: &dyn Backend,
        key: &str,
        range: Range<u64>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        match self.handle(backend, key)? {
            Some(obj) => backend.read_open(&obj, key, range, buf),
            None => backend.get_range_into(key, range, buf),
        }
    }

    /// `range` of object `key`, as [`Backend::get_range`].
    pub fn get_range(
        &self,
        backend: &dyn Backend,
        key: &str,
        range: Range<u64>,
    ) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.get_range_into(backend, key, range, &mut buf)?;
        Ok(buf)
    }

    /// Several ranges of object `key`, as [`Backend::get_ranges`].
    pub fn get_ranges(
        &self,
        backend: &dyn Backend,
        key: &str,
        ranges: &[Range<u64>],
    ) -> Result<Vec<Vec<u8>>> {
        match self.handle(backend, key)? {
            Some(obj) => ranges
                .iter()
                .map(|r| {
                    let mut buf = Vec::new();
                    backend
                        .read_open(&obj, key, r.clone(), &mut buf)
                        .map(|()| buf)
                })
                .collect(),
            None => backend.get_ranges(key, ranges),
        }
    }
}

/// [`OpenObjects`] of one backend: a restore's reads of its packs.
pub struct HeldOpen<'a> {
    backend: &'a dyn Backend,
    open: OpenObjects,
}

impl<'a> HeldOpen<'a> {
    pub fn new(backend: &'a dyn Backend) -> Self {
        HeldOpen {
            backend,
            open: OpenObjects::default(),
        }
    }

    pub fn backend(&self) -> &'a dyn Backend {
        self.backend
    }

    /// See [`OpenObjects::get_range_into`].
    pub fn get_range_into(&self, key: &str, range: Range<u64>, buf: &mut Vec<u8>) -> Result<()> {
        self.open.get_range_into(self.backend, key, range, buf)
    }

    /// See [`OpenObjects::get_range`].
    pub fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>> {
        self.open.get_range(self.backend, key, range)
    }

    /// See [`OpenObjects::get_ranges`].
    pub fn get_ranges(&self, key: &str, ranges: &[Range<u64>]) -> Result<Vec<Vec<u8>>> {
        self.open.get_ranges(self.backend, key, ranges)
    }
}

#[cfg(test)]
mod tests {
    use super::HeldOpen;
    use crate::backend::{Backend, BackendError, LocalBackend, PutMode};
    use rayon::prelude::*;

    fn object(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// Many threads reading one held handle each get their own range: the
    /// reads are positional, never a seek of the offset they share (the first
    /// form sought in a shared handle, and restores read other ranges' bytes).
    #[test]
    fn threads_reading_one_held_object_each_get_their_range() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let local = LocalBackend::new(dir.path());
        let data = object(1 << 20);
        local.put("packs/ab/one", &data, PutMode::Overwrite)?;
        let held = HeldOpen::new(&local);
        let ranges: Vec<(u64, u64)> = (0..4000u64)
            .map(|i| {
                let start = (i * 7919) % (1 << 20);
                (start, (start + 1 + (i * 131) % 20_000).min(1 << 20))
            })
            .collect();
        ranges
            .par_iter()
            .try_for_each(|&(a, b)| -> anyhow::Result<()> {
                // A buffer too small (a fresh one), one with room, and one too long.
                for mut buf in [Vec::new(), Vec::with_capacity(1 << 16), vec![9u8; 1 << 15]] {
                    held.get_range_into("packs/ab/one", a..b, &mut buf)?;
                    assert_eq!(buf, data[a as usize..b as usize]);
                }
                let got = held.get_ranges("packs/ab/one", &[a..b, 0..(b - a)])?;
                assert_eq!(got[0], data[a as usize..b as usize]);
                assert_eq!(got[1], data[..(b - a) as usize]);
                Ok(())
            })?;
        Ok(())
    }

    /// Errors are the backend's own: a range past the end, a missing object
    /// (and a missing object is not held: it is looked for again).
    #[test]
    fn a_held_object_reports_what_the_backend_does() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let local = LocalBackend::new(dir.path());
        local.put("packs/ab/one", &object(100), PutMode::Overwrite)?;
        let held = HeldOpen::new(&local);
        let mut buf = vec![1u8; 10];
        let past = held.get_range_into("packs/ab/one", 90..110, &mut buf);
        assert!(
            matches!(past, Err(BackendError::Range { len: 100, .. })),
            "{past:?}"
        );
        assert!(buf.is_empty(), "a failed read leaves no bytes");
        let want = local
            .get_range("packs/ab/one", 90..110)
            .map(|_| ())
            .unwrap_err();
        assert_eq!(past.unwrap_err().to_string(), want.to_string());
        let gone = held.get_range("packs/cd/two", 0..1);
        assert!(
            matches!(gone, Err(BackendError::NotFound { .. })),
            "{gone:?}"
        );
        local.put("packs/cd/two", &object(5), PutMode::Overwrite)?;
        assert_eq!(held.get_range("packs/cd/two", 1..3)?, object(5)[1..3]);
        Ok(())
    }

    /// A backend that does not open objects for reads (S3, a wrapper that
    /// watches its reads) is read range by range, through its own methods;
    /// one that does is opened once for all of them.
    #[test]
    fn a_backend_without_open_objects_is_read_range_by_range() -> anyhow::Result<()> {
        use crate::backend::TestReads;
        use std::sync::atomic::Ordering::Relaxed;
        let dir = tempfile::tempdir()?;
        for hold in [false, true] {
            let b = TestReads::counting(dir.path(), hold);
            b.put("packs/ab/one", &object(100), PutMode::Overwrite)?;
            let held = HeldOpen::new(&b);
            assert_eq!(held.get_range("packs/ab/one", 3..9)?, object(100)[3..9]);
            let two = held.get_ranges("packs/ab/one", &[0..2, 5..7])?;
            assert_eq!(
                two,
                [object(100)[0..2].to_vec(), object(100)[5..7].to_vec()]
            );
            assert_eq!(b.ranges.load(Relaxed), 3, "every range read");
            assert_eq!(
                b.opens.load(Relaxed),
                usize::from(hold),
                "opened once when held"
            );
        }
        Ok(())
    }
}

//! A fault-injection wrapper for crash tests: after a given number of object
//! writes and deletes, the process aborts on the spot — as if killed with SIGKILL
//! at exactly that point — or the operation fails like a full disk.
//!
//! Compiled for the crate's own tests and with the `testing` feature only. The
//! CLI's store goes through [`super::wrap_for_tests`], which with that feature
//! wraps it in a [`FaultyBackend`] when `PAGESNAP_FAULT_AFTER=N` is set
//! (`PAGESNAP_FAULT_KIND=abort|enospc`, default abort); `cargo test` builds the
//! binary with the feature, a release build does not (docs/FEATURES.md).

use super::{Backend, BackendError, ObjectInfo, PutMode, Result};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// What happens when the budget of mutating operations is spent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `std::process::abort()`: no destructor, no cleanup, like SIGKILL.
    Abort,
    /// The operation fails with ENOSPC (and every later one too).
    NoSpace,
}

pub struct FaultyBackend {
    inner: Arc<dyn Backend>,
    remaining: AtomicU64,
    fault: Fault,
}

impl FaultyBackend {
    /// Lets `ops` puts/deletes through, then faults on the next one.
    pub fn new(inner: Arc<dyn Backend>, ops: u64, fault: Fault) -> Self {
        FaultyBackend {
            inner,
            remaining: AtomicU64::new(ops),
            fault,
        }
    }

    fn spend(&self, key: &str) -> Result<()> {
        let left = self
            .remaining
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some(n.saturating_sub(1))
            })
            .unwrap_or(0);
        if left > 0 {
            return Ok(());
        }
        match self.fault {
            Fault::Abort => std::process::abort(),
            Fault::NoSpace => Err(BackendError::Io {
                location: self.inner.location(),
                op: "write",
                key: key.to_string(),
                source: std::io::Error::from_raw_os_error(28),
            }),
        }
    }
}

/// `inner` in a [`FaultyBackend`] if `PAGESNAP_FAULT_AFTER` holds a number.
#[cfg(feature = "testing")]
pub(super) fn from_env(inner: &Arc<dyn Backend>) -> Option<Arc<dyn Backend>> {
    let n = std::env::var("PAGESNAP_FAULT_AFTER")
        .ok()
        .and_then(|v| v.parse().ok())?;
    let fault = match std::env::var("PAGESNAP_FAULT_KIND").as_deref() {
        Ok("enospc") => Fault::NoSpace,
        _ => Fault::Abort,
    };
    Some(Arc::new(FaultyBackend::new(inner.clone(), n, fault)))
}

impl Backend for FaultyBackend {
    fn parallel_reads(&self) -> usize {
        self.inner.parallel_reads()
    }
    fn location(&self) -> String {
        self.inner.location()
    }
    fn put(&self, key: &str, data: &[u8], mode: PutMode) -> Result<()> {
        self.spend(key)?;
        self.inner.put(key, data, mode)
    }
    fn put_vec(&self, key: &str, data: Vec<u8>, mode: PutMode) -> Result<Option<Vec<u8>>> {
        self.spend(key)?;
        self.inner.put_vec(key, data, mode)
    }
    fn get(&self, key: &str) -> Result<Vec<u8>> {
        self.inner.get(key)
    }
    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>> {
        self.inner.get_range(key, range)
    }
    fn size(&self, key: &str) -> Result<Option<u64>> {
        self.inner.size(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> Result<()> {
        self.spend(key)?;
        self.inner.delete(key)
    }
    fn clean_temporary(&self) -> Result<u64> {
        self.inner.clean_temporary()
    }
    fn requests(&self) -> Option<super::RequestCounts> {
        self.inner.requests()
    }
}

/// A local directory for the tests of reads. Reads of objects under `fail`
/// fail with an I/O error (a disk that cannot be read, a permission), for the
/// commands that must not take such a failure for damage; ranges read, calls
/// of `get_ranges` and objects opened for reads are counted. Without `hold`
/// it opens no object for reads ([`Backend::open_for_reads`] is `None`, as
/// for S3), so every range goes through `get_range`; with `parallel` over 1
/// it says it serves reads in parallel, as S3 does.
#[cfg(test)]
pub(crate) struct TestReads {
    pub inner: super::LocalBackend,
    pub fail: Option<String>,
    pub hold: bool,
    pub parallel: usize,
    /// Ranges read, through `get_range` or an open object.
    pub ranges: std::sync::atomic::AtomicUsize,
    /// Calls of `get_ranges` (an open each on a local store).
    pub batches: std::sync::atomic::AtomicUsize,
    /// Objects opened for reads.
    pub opens: std::sync::atomic::AtomicUsize,
    /// Objects opened for one read (`get_range`) or one batch of reads
    /// (`get_ranges`), as a local store opens them when they are not held.
    pub one_off_opens: std::sync::atomic::AtomicUsize,
}

#[cfg(test)]
impl TestReads {
    /// Reads of objects under `prefix` of the store at `root` fail.
    pub(crate) fn failing(root: &std::path::Path, prefix: &str) -> Self {
        TestReads {
            fail: Some(prefix.to_string()),
            ..Self::counting(root, false)
        }
    }

    /// Reads of the store at `root` counted, objects held open with `hold`.
    pub(crate) fn counting(root: &std::path::Path, hold: bool) -> Self {
        TestReads {
            inner: super::LocalBackend::new(root),
            fail: None,
            hold,
            parallel: 1,
            ranges: Default::default(),
            batches: Default::default(),
            opens: Default::default(),
            one_off_opens: Default::default(),
        }
    }

    fn check(&self, key: &str) -> Result<()> {
        if self.fail.as_deref().is_some_and(|p| key.starts_with(p)) {
            return Err(BackendError::Io {
                location: self.inner.location(),
                op: "read",
                key: key.to_string(),
                source: std::io::Error::from_raw_os_error(5),
            });
        }
        Ok(())
    }

    fn count(n: &std::sync::atomic::AtomicUsize) {
        n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// One range read, counted, and failed under `fail`.
    fn range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>> {
        self.check(key)?;
        Self::count(&self.ranges);
        self.inner.get_range(key, range)
    }
}

#[cfg(test)]
impl Backend for TestReads {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn put(&self, key: &str, data: &[u8], mode: PutMode) -> Result<()> {
        self.inner.put(key, data, mode)
    }
    fn get(&self, key: &str) -> Result<Vec<u8>> {
        self.check(key)?;
        self.inner.get(key)
    }
    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>> {
        Self::count(&self.one_off_opens);
        self.range(key, range)
    }
    fn get_ranges(&self, key: &str, ranges: &[Range<u64>]) -> Result<Vec<Vec<u8>>> {
        Self::count(&self.batches);
        Self::count(&self.one_off_opens);
        // Each range counted, and failed, as `get_range` does.
        ranges.iter().map(|r| self.range(key, r.clone())).collect()
    }
    fn parallel_reads(&self) -> usize {
        self.parallel
    }
    fn open_for_reads(&self, key: &str) -> Result<Option<super::OpenObject>> {
        if !self.hold {
            return Ok(None);
        }
        self.check(key)?;
        Self::count(&self.opens);
        self.inner.open_for_reads(key)
    }
    fn read_open(
        &self,
        obj: &super::OpenObject,
        key: &str,
        range: Range<u64>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        self.check(key)?;
        Self::count(&self.ranges);
        self.inner.read_open(obj, key, range, buf)
    }
    fn size(&self, key: &str) -> Result<Option<u64>> {
        self.inner.size(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::LocalBackend;

    #[test]
    fn no_space_after_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let b = FaultyBackend::new(Arc::new(LocalBackend::new(dir.path())), 2, Fault::NoSpace);
        b.put("a", b"1", PutMode::Overwrite).unwrap();
        b.delete("a").unwrap();
        let e = b.put("b", b"2", PutMode::Overwrite).unwrap_err();
        assert!(e.is_storage_full(), "{e}");
        assert_eq!(b.get("b").ok(), None, "nothing written after the fault");
    }
}

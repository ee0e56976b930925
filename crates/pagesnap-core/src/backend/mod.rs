//! Where store objects live. A backend stores whole immutable objects by key:
//! put, get, get a byte range, list, delete. Nothing above this layer renames or
//! appends, so the same code can run on object storage.

mod cache;
mod direct_write;
#[cfg(any(test, feature = "testing"))]
mod fault;
mod held_open;
mod local;
#[cfg(feature = "s3")]
mod s3;

pub use cache::CachedBackend;
#[cfg(test)]
pub(crate) use fault::TestReads;
#[cfg(any(test, feature = "testing"))]
pub use fault::{Fault, FaultyBackend};
pub use held_open::{HeldOpen, OpenObject, OpenObjects};
pub use local::LocalBackend;
#[cfg(feature = "s3")]
pub use s3::{S3Backend, S3Settings, S3Url};
use std::ops::Range;
use std::sync::Arc;

/// The backend the CLI's crash tests run on. With the `testing` feature and
/// `PAGESNAP_FAULT_AFTER=N` set: `inner` in a `FaultyBackend`, which lets N
/// object writes and deletes through, then aborts the process (or, with
/// `PAGESNAP_FAULT_KIND=enospc`, fails like a full disk). Otherwise `inner`
/// itself; without the feature (a release build) the variables are not even read.
pub fn wrap_for_tests(inner: Arc<dyn Backend>) -> Arc<dyn Backend> {
    #[cfg(feature = "testing")]
    if let Some(faulty) = fault::from_env(&inner) {
        return faulty;
    }
    inner
}

/// Errors of the backend layer; each names the object (key) and the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    #[error("{location}: object {key} does not exist")]
    NotFound { location: String, key: String },
    #[error("{location}: object {key} already exists")]
    AlreadyExists { location: String, key: String },
    #[error("{location}: {op} {key}: {source}")]
    Io {
        location: String,
        op: &'static str,
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{location}: object {key} is {len} bytes; range {start}..{end} is outside it")]
    Range {
        location: String,
        key: String,
        len: u64,
        start: u64,
        end: u64,
    },
    /// An object of an encrypted store that could not be sealed or opened.
    #[error("{location}: object {key}: {source}")]
    Sealed {
        location: String,
        key: String,
        #[source]
        source: crate::crypto::CryptoError,
    },
}

impl BackendError {
    /// True when the error says the object's bytes are gone or wrong: it does not
    /// exist, or is shorter than its record says. An I/O, permission or network
    /// error is not damage: it says nothing about the bytes, and the next try may
    /// read them whole, so nothing is ever deleted on its account.
    pub fn is_damage(&self) -> bool {
        match self {
            BackendError::NotFound { .. } | BackendError::Range { .. } => true,
            // Read and found wrong: it does not authenticate.
            BackendError::Sealed { source, .. } => source.is_damage(),
            _ => false,
        }
    }

    /// True when the underlying error is a full disk (ENOSPC / quota).
    pub fn is_storage_full(&self) -> bool {
        match self {
            BackendError::Io { source, .. } => {
                source.kind() == std::io::ErrorKind::StorageFull
                    || source.raw_os_error() == Some(28)
            }
            _ => false,
        }
    }
}

pub type Result<T, E = BackendError> = std::result::Result<T, E>;

/// The error of a streamed put whose pieces came to `got` bytes, not `want`.
pub(crate) fn check_streamed_len(got: u64, want: u64) -> std::io::Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "{got} bytes written of an object announced as {want}"
        )))
    }
}

/// How `put` treats an existing object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutMode {
    /// Replace it (content-addressed objects: the bytes are the same anyway).
    Overwrite,
    /// Fail with [`BackendError::AlreadyExists`] (used for `config`).
    Create,
}

/// Requests a remote backend sent, per kind (failed and retried ones included),
/// and the reads a local cache answered instead.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RequestCounts {
    /// PUTs of objects other than packs.
    pub put: u64,
    /// Requests that uploaded packs (one PUT, or the parts of a multipart upload
    /// with its create and complete requests).
    pub pack_put: u64,
    pub get: u64,
    pub list: u64,
    pub head: u64,
    pub delete: u64,
    /// Reads answered by the local cache (no request sent).
    pub cached: u64,
}

impl RequestCounts {
    /// Every request sent.
    pub fn total(&self) -> u64 {
        self.put + self.pack_put + self.get + self.list + self.head + self.delete
    }

    /// Requests other than pack uploads: what a backup costs beyond its data.
    pub fn metadata(&self) -> u64 {
        self.total() - self.pack_put
    }
}

/// An object found by `list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
}

/// Storage of whole immutable objects.
pub trait Backend: Send + Sync {
    /// Human-readable location, used in every message (a path or a URL).
    fn location(&self) -> String;
    /// Stores `data` under `key` atomically: readers see all of it or nothing.
    fn put(&self, key: &str, data: &[u8], mode: PutMode) -> Result<()>;
    /// Like `put`, for a buffer the caller gives away. A backend whose client
    /// must own what it sends (S3) takes it without a copy and returns `None`;
    /// the others store it and hand the buffer back, for the caller to reuse.
    /// (A first backup to S3 held a second copy of each 16 MiB pack and of its
    /// index object while they were uploaded: 176 MB at its peak for 2 GiB.)
    fn put_vec(&self, key: &str, data: Vec<u8>, mode: PutMode) -> Result<Option<Vec<u8>>> {
        self.put(key, &data, mode)?;
        Ok(Some(data))
    }
    /// Like `put`, for an object of `len` bytes that `write` produces in pieces
    /// (called once; a different length is an error and stores nothing). A local
    /// store writes the pieces to the file as they come, so a large object is
    /// never held whole in memory; the default collects them and calls `put_vec`.
    fn put_streamed(
        &self,
        key: &str,
        len: u64,
        mode: PutMode,
        write: &mut dyn FnMut(&mut dyn std::io::Write) -> std::io::Result<()>,
    ) -> Result<()> {
        let mut data = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        let wrote = write(&mut data).and_then(|()| check_streamed_len(data.len() as u64, len));
        wrote.map_err(|source| BackendError::Io {
            location: self.location(),
            op: "write",
            key: key.to_string(),
            source,
        })?;
        self.put_vec(key, data, mode).map(drop)
    }
    fn get(&self, key: &str) -> Result<Vec<u8>>;
    /// Reads `range` of an object; the range must lie inside it.
    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>>;
    /// Like `get_range`, into `buf` (replacing its content): lets a caller that
    /// reads many ranges reuse one allocation.
    fn get_range_into(&self, key: &str, range: Range<u64>, buf: &mut Vec<u8>) -> Result<()> {
        *buf = self.get_range(key, range)?;
        Ok(())
    }
    /// Reads several ranges of one object, each as `get_range` would: a
    /// local store opens the file once for all of them (a restore of a store
    /// with deltas reads thousands of scattered chain links, and an `open` per
    /// read cost as much as the reads).
    fn get_ranges(&self, key: &str, ranges: &[Range<u64>]) -> Result<Vec<Vec<u8>>> {
        ranges
            .iter()
            .map(|r| self.get_range(key, r.clone()))
            .collect()
    }
    /// Object `key` opened for many [`Backend::read_open`] calls, or `None`
    /// when each range is read as cheaply on its own: the default, for a
    /// remote store and for a wrapper that changes or watches what it reads
    /// (a read through it must stay its own). [`HeldOpen`] keeps them.
    fn open_for_reads(&self, _key: &str) -> Result<Option<OpenObject>> {
        Ok(None)
    }
    /// `range` of `obj` (object `key`, from [`Backend::open_for_reads`]) into
    /// `buf`, as `get_range_into` reads it.
    fn read_open(
        &self,
        _obj: &OpenObject,
        key: &str,
        range: Range<u64>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        self.get_range_into(key, range, buf)
    }
    /// Size of an object, or `None` if it does not exist.
    fn size(&self, key: &str) -> Result<Option<u64>>;
    /// All objects whose key starts with `prefix` (a folder such as `snapshots/`).
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;
    /// Removes an object; removing a missing object is not an error.
    fn delete(&self, key: &str) -> Result<()>;
    /// Removes what interrupted writes left behind (temporary files); returns how
    /// many. Only safe while no other process writes (under the exclusive lock).
    fn clean_temporary(&self) -> Result<u64> {
        Ok(0)
    }
    /// Requests sent so far, for backends that pay per request (`None` for a
    /// local directory).
    fn requests(&self) -> Option<RequestCounts> {
        None
    }
    /// This backend with `wrap` put below the local cache it keeps, if it is
    /// one ([`CachedBackend`]); `None` for any other. An encrypted store seals
    /// its objects below the metadata cache: the cache's copies are checked
    /// against their names, which are the blake3 of the plaintext.
    fn wrap_below_cache(
        &self,
        _wrap: &dyn Fn(Arc<dyn Backend>) -> Arc<dyn Backend>,
    ) -> Option<Arc<dyn Backend>> {
        None
    }
    /// How many reads are worth having in flight at once. A local directory
    /// answers 1: its reads are copies from the page cache, done on every core.
    /// A remote store answers more: each read waits a round trip on the network.
    fn parallel_reads(&self) -> usize {
        1
    }
}

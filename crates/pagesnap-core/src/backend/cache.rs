//! A local cache of a remote store's metadata, so that listing snapshots and
//! backing up do not download every manifest, page map and index object again
//! (on S3 each is a billed request, and the index grows with the store).
//!
//! Only objects named by the blake3 of their bytes are cached: `snapshots/`,
//! `maps/`, `index/` and `dicts/` (see [`crate::layout`]). Such an object never
//! changes, so a cached copy is either the object or detectably not (every read
//! from the cache is checked against its name, and a mismatch is dropped and
//! fetched again). Packs (large, read by range), `config` and locks always go to
//! the store.
//!
//! The cache is only an accelerator: whether an object exists is always decided
//! by the store's listings (a `list` of a cached folder also deletes cached
//! objects the store no longer has), and deleting the cache changes no result.
//! Commands that judge the store itself (`verify`, `repair`) open it without the
//! cache, so that a damaged remote object is never hidden by a good cached copy.
//!
//! Layout: `<dir>/<folder>/<id hex>`, written to a temporary file and renamed
//! (not fsynced: a torn file fails its check and is fetched again).

use super::{Backend, ObjectInfo, PutMode, RequestCounts, Result};
use crate::layout;
use crate::types::Id;
use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Folders of content-addressed objects, the only ones cached.
const CACHED: [&str; 4] = [
    layout::SNAPSHOTS,
    layout::MAPS,
    layout::INDEX,
    layout::DICTS,
];

/// A temporary file older than this was left by a process that died.
const STALE_TEMP: Duration = Duration::from_secs(3600);

pub struct CachedBackend {
    inner: Arc<dyn Backend>,
    dir: PathBuf,
    /// Reads the cache answered, shared with the caches `wrap_below_cache` makes.
    hits: Arc<AtomicU64>,
    /// Whether this process has recorded the store in the folder yet (once:
    /// see `store::cache_dirs`).
    marked: AtomicBool,
}

impl CachedBackend {
    /// Caches `inner`'s metadata under `dir` (created when first needed).
    pub fn new(inner: Arc<dyn Backend>, dir: impl Into<PathBuf>) -> CachedBackend {
        CachedBackend {
            inner,
            dir: dir.into(),
            hits: Arc::new(AtomicU64::new(0)),
            marked: AtomicBool::new(false),
        }
    }

    /// The default cache folder of the store identified by `identity` (its URL
    /// and endpoint): `$PAGESNAP_CACHE_DIR`, else `$XDG_CACHE_HOME/pagesnap`, else
    /// `~/.cache/pagesnap`, then `stores/<blake3(identity)>`.
    pub fn default_dir(identity: &str) -> Option<PathBuf> {
        let hex = Id::of_object(identity.as_bytes()).to_hex();
        Some(crate::cache_root()?.join("stores").join(&hex[..32]))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cache file of `key` and the id it must hash to, if `key` is cached.
    fn file(&self, key: &str) -> Option<(PathBuf, Id)> {
        let folder = CACHED.iter().find(|f| key.starts_with(**f))?;
        let name = &key[folder.len()..];
        let id = Id::from_hex(name)?;
        Some((self.dir.join(folder).join(name), id))
    }

    fn read_cached(&self, key: &str) -> Option<Vec<u8>> {
        let (path, id) = self.file(key)?;
        let bytes = std::fs::read(&path).ok()?;
        if Id::of_object(&bytes) == id {
            self.hits.fetch_add(1, Ordering::Relaxed);
            self.mark();
            return Some(bytes);
        }
        // Torn or damaged local copy: drop it, the store has the object.
        let _ = std::fs::remove_file(&path);
        None
    }

    /// Keeps a copy of `data` if it is the object `key` names (best effort: a
    /// cache that cannot be written only costs requests).
    fn keep(&self, key: &str, data: &[u8]) {
        let Some((path, id)) = self.file(key) else {
            return;
        };
        if Id::of_object(data) != id || path.exists() {
            return;
        }
        let Some(dir) = path.parent() else { return };
        if crate::create_private_dirs(dir).is_err() {
            return;
        }
        self.mark();
        if let Ok(mut tmp) = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir) {
            use std::io::Write;
            if tmp.write_all(data).is_ok() {
                let _ = tmp.persist(&path);
            }
        }
    }

    /// Records the store's location and the time of use in the folder, once
    /// per process (so cleanup knows whose cache it is and when it was used).
    fn mark(&self) {
        if !self.marked.swap(true, Ordering::Relaxed) {
            crate::store::cache_dirs::mark(&self.dir, &self.inner.location());
        }
    }

    /// Deletes cached objects of `folder` that the store's listing lacks
    /// (forgotten or pruned, by this machine or another), and stale temporary files.
    fn trim(&self, folder: &str, listed: &[ObjectInfo]) {
        let Ok(entries) = std::fs::read_dir(self.dir.join(folder)) else {
            return;
        };
        let keep: HashSet<&str> = listed
            .iter()
            .filter_map(|o| o.key.strip_prefix(folder))
            .collect();
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            let remove = if name.starts_with(".tmp-") {
                e.metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .is_some_and(|age| age > STALE_TEMP)
            } else {
                !keep.contains(name)
            };
            if remove {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

impl Backend for CachedBackend {
    fn wrap_below_cache(
        &self,
        wrap: &dyn Fn(Arc<dyn Backend>) -> Arc<dyn Backend>,
    ) -> Option<Arc<dyn Backend>> {
        Some(Arc::new(CachedBackend {
            inner: wrap(self.inner.clone()),
            dir: self.dir.clone(),
            hits: self.hits.clone(),
            marked: AtomicBool::new(self.marked.load(Ordering::Relaxed)),
        }))
    }

    fn parallel_reads(&self) -> usize {
        self.inner.parallel_reads()
    }
    fn location(&self) -> String {
        self.inner.location()
    }

    fn put(&self, key: &str, data: &[u8], mode: PutMode) -> Result<()> {
        self.inner.put(key, data, mode)?;
        // Written through: the next backup finds its own index and map locally.
        self.keep(key, data);
        Ok(())
    }

    fn put_vec(&self, key: &str, data: Vec<u8>, mode: PutMode) -> Result<Option<Vec<u8>>> {
        let Some((path, _)) = self.file(key) else {
            // Not cached (packs): straight through, without a copy.
            return self.inner.put_vec(key, data, mode);
        };
        // The store may take the buffer, so the copy is kept first, and dropped
        // again when the put fails. A copy left by a crash in between is
        // harmless: it is the object its name says, and the store's listings,
        // not the cache, decide what exists (`trim` drops it at the next listing).
        self.keep(key, &data);
        self.inner.put_vec(key, data, mode).inspect_err(|_| {
            let _ = std::fs::remove_file(&path);
        })
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        if let Some(bytes) = self.read_cached(key) {
            return Ok(bytes);
        }
        let bytes = self.inner.get(key)?;
        self.keep(key, &bytes);
        Ok(bytes)
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>> {
        self.inner.get_range(key, range)
    }

    fn get_range_into(&self, key: &str, range: Range<u64>, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.get_range_into(key, range, buf)
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        self.inner.size(key)
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let listed = self.inner.list(prefix)?;
        if let Some(folder) = CACHED.iter().find(|f| **f == prefix) {
            self.trim(folder, &listed);
        }
        Ok(listed)
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key)?;
        if let Some((path, _)) = self.file(key) {
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    }

    fn clean_temporary(&self) -> Result<u64> {
        self.inner.clean_temporary()
    }

    fn requests(&self) -> Option<RequestCounts> {
        let mut r = self.inner.requests().unwrap_or_default();
        r.cached += self.hits.load(Ordering::Relaxed);
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::LocalBackend;

    fn setup() -> (tempfile::TempDir, Arc<dyn Backend>, CachedBackend) {
        let d = tempfile::tempdir().unwrap();
        let inner: Arc<dyn Backend> = Arc::new(LocalBackend::new(d.path().join("store")));
        let cached = CachedBackend::new(inner.clone(), d.path().join("cache"));
        (d, inner, cached)
    }

    #[test]
    fn second_read_comes_from_the_cache() {
        let (_d, inner, c) = setup();
        let data = b"manifest bytes".to_vec();
        let key = layout::snapshot(&Id::of_object(&data));
        inner.put(&key, &data, PutMode::Overwrite).unwrap();
        assert_eq!(c.get(&key).unwrap(), data);
        assert_eq!(c.requests().unwrap().cached, 0);
        assert_eq!(c.get(&key).unwrap(), data);
        assert_eq!(c.requests().unwrap().cached, 1);
        // Served locally: the store's copy is not read again.
        inner.delete(&key).unwrap();
        assert_eq!(c.get(&key).unwrap(), data);
    }

    #[test]
    fn puts_are_written_through_and_deletes_remove() {
        let (_d, _inner, c) = setup();
        let data = b"index bytes".to_vec();
        let key = layout::index(&Id::of_object(&data));
        c.put(&key, &data, PutMode::Overwrite).unwrap();
        assert!(c.dir().join(&key).exists());
        c.delete(&key).unwrap();
        assert!(!c.dir().join(&key).exists());
    }

    /// A buffer given away is stored, kept in the cache when it is metadata, and
    /// handed back by a local store; a pack is not cached.
    #[test]
    fn given_buffers_are_stored_cached_and_handed_back() {
        let (_d, inner, c) = setup();
        let data = b"index bytes given away".to_vec();
        let key = layout::index(&Id::of_object(&data));
        let back = c.put_vec(&key, data.clone(), PutMode::Overwrite).unwrap();
        assert_eq!(back.as_deref(), Some(&data[..]));
        assert_eq!(inner.get(&key).unwrap(), data);
        assert_eq!(std::fs::read(c.dir().join(&key)).unwrap(), data);
        let pack = b"pack bytes".to_vec();
        let pkey = layout::pack(&Id::of_object(&pack));
        assert_eq!(
            c.put_vec(&pkey, pack.clone(), PutMode::Overwrite).unwrap(),
            Some(pack.clone())
        );
        assert_eq!(inner.get(&pkey).unwrap(), pack);
        assert!(!c.dir().join(&pkey).exists());
    }

    /// The copy kept before the store took the buffer goes again when the store
    /// refuses it: the cache never has an object a failed put did not store.
    #[test]
    fn a_failed_given_put_leaves_no_cached_copy() {
        use crate::backend::{Fault, FaultyBackend};
        let d = tempfile::tempdir().unwrap();
        let local: Arc<dyn Backend> = Arc::new(LocalBackend::new(d.path().join("store")));
        let full: Arc<dyn Backend> = Arc::new(FaultyBackend::new(local.clone(), 0, Fault::NoSpace));
        let c = CachedBackend::new(full, d.path().join("cache"));
        let data = b"map bytes that do not fit".to_vec();
        let key = layout::map(&Id::of_object(&data));
        let err = c.put_vec(&key, data, PutMode::Overwrite).unwrap_err();
        assert!(err.is_storage_full(), "{err}");
        assert!(!c.dir().join(&key).exists());
        assert_eq!(local.size(&key).unwrap(), None);
    }

    #[test]
    fn a_damaged_cached_copy_is_fetched_again() {
        let (_d, inner, c) = setup();
        let data = b"map bytes".to_vec();
        let key = layout::map(&Id::of_object(&data));
        inner.put(&key, &data, PutMode::Overwrite).unwrap();
        c.get(&key).unwrap();
        std::fs::write(c.dir().join(&key), b"flipped").unwrap();
        assert_eq!(c.get(&key).unwrap(), data);
        assert_eq!(c.requests().unwrap().cached, 0);
        // And the repaired copy serves the next read.
        assert_eq!(c.get(&key).unwrap(), data);
        assert_eq!(c.requests().unwrap().cached, 1);
    }

    #[test]
    fn misnamed_and_uncached_objects_are_not_kept() {
        let (_d, inner, c) = setup();
        // Content that does not hash to its name is not cached (nor hidden).
        let key = layout::snapshot(&Id::of_object(b"something else"));
        inner.put(&key, b"forged", PutMode::Overwrite).unwrap();
        assert_eq!(c.get(&key).unwrap(), b"forged");
        assert!(!c.dir().join(&key).exists());
        // config and locks are never cached.
        inner.put("config", b"cfg", PutMode::Create).unwrap();
        c.get("config").unwrap();
        assert!(!c.dir().join("config").exists());
    }

    #[test]
    fn listing_drops_objects_the_store_no_longer_has() {
        let (_d, inner, c) = setup();
        let a = b"manifest a".to_vec();
        let b = b"manifest b".to_vec();
        let (ka, kb) = (
            layout::snapshot(&Id::of_object(&a)),
            layout::snapshot(&Id::of_object(&b)),
        );
        c.put(&ka, &a, PutMode::Overwrite).unwrap();
        c.put(&kb, &b, PutMode::Overwrite).unwrap();
        // Forgotten by another machine.
        inner.delete(&ka).unwrap();
        let listed = c.list(layout::SNAPSHOTS).unwrap();
        assert_eq!(listed.len(), 1);
        assert!(!c.dir().join(&ka).exists());
        assert!(c.dir().join(&kb).exists());
    }

    /// The folder says whose cache it is once something is cached (for
    /// `store::cache_dirs`), and not before.
    #[test]
    fn the_folder_records_its_store_when_first_used() {
        let (_d, inner, c) = setup();
        let marker = c.dir().join(crate::store::cache_dirs::MARKER);
        let data = b"manifest bytes".to_vec();
        let key = layout::snapshot(&Id::of_object(&data));
        inner.put(&key, &data, PutMode::Overwrite).unwrap();
        assert!(!marker.exists());
        assert_eq!(c.get(&key).unwrap(), data);
        let recorded = std::fs::read_to_string(&marker).unwrap();
        assert_eq!(recorded, format!("{}\n", inner.location()));
        // A listing's trim leaves it alone.
        c.list(layout::SNAPSHOTS).unwrap();
        assert!(marker.exists());
    }
}

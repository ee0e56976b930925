//! store: the handle on a store (open, init, config, locks) and the objects it reads
//! and writes for every operation. Below the operations: it must not import backup/,
//! restore/ or maintenance/, which build on it.
//!
//! * `mod.rs`: `Store`, `InitOptions`, opening and creating a store, its locks,
//!   reading an object checked against its name.
//! * `snapshot.rs`: `Snapshot`, listing, loading, selecting and publishing manifests;
//!   `select.rs`: choosing a snapshot from a list (pure functions).
//! * `maps.rs`: page-map chains resolved into chunk lists; writing a new snapshot's
//!   map and index object (`put_map`).
//! * `index_objects.rs`: index objects read into the chunk index, and written.
//! * `packs.rs`: which packs are present; a pack's trailer read without its data.
//!   `pack_sink.rs`, `pack_upload.rs`: writing packs of already compressed chunks,
//!   and the upload thread every pack goes through.
//! * `listing.rs`: what a backup knows of packs and index objects without
//!   listing them (this machine's record, and the store's marker).
//! * `lock.rs`: store locks; `head_hint.rs`: this machine's hint of each database's
//!   newest snapshot; `cache_dirs.rs`: this machine's cache folders, each marked
//!   with its store, listed and cleaned up.

pub mod base_cache;
pub(crate) mod bases;
pub mod cache_dirs;
pub(crate) mod head_hint;
mod index_objects;
pub mod keys;
pub(crate) mod listing;
pub mod lock;
mod maps;
pub(crate) mod pack_sink;
pub(crate) mod pack_upload;
pub(crate) mod packs;
pub mod select;
mod snapshot;

pub(crate) use index_objects::{put_index, DeltaFacts};
pub(crate) use maps::{check_lists_named, MapBase, NewChunks, WrittenMap};
pub use snapshot::{DamagedSnapshot, Snapshot};

use crate::backend::{Backend, BackendError, LocalBackend, PutMode};
use crate::format::config::{ConfigObject, StoreConfig};
use crate::format::FormatError;
use crate::types::{ChunkIds, Id};
use crate::{layout, Error, Result};
use chrono::Utc;
use lock::LockGuard;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Parameters fixed when a store is created.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// Pages per chunk (power of two, 1..=256). 1 dedups best for scattered changes.
    pub chunk_pages: u32,
    /// zstd level for chunks.
    pub zstd_level: i32,
    /// Target size of pack objects in bytes.
    pub pack_target_size: u32,
    /// Compress with zstd dictionaries trained on each database's own pages.
    pub dictionary: bool,
    /// Store changed chunks as deltas against their previous version (a
    /// format-version-2 store; older builds refuse it). Off by default.
    pub deltas: bool,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            chunk_pages: 1,
            zstd_level: 3,
            pack_target_size: 16 << 20,
            dictionary: true,
            deltas: false,
        }
    }
}

#[cfg(test)]
impl InitOptions {
    /// The defaults with deltas (the unit tests' stores with deltas).
    pub(crate) fn with_deltas() -> Self {
        InitOptions {
            deltas: true,
            ..InitOptions::default()
        }
    }
}

/// A pagesnap store.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    config: StoreConfig,
    progress: Option<crate::Progress>,
    /// Whether backups may use this machine's local index cache (index/cache/).
    index_cache: bool,
    /// An encrypted store's master secret, and the key file it was unlocked
    /// with (`backend` seals and opens every object with it).
    key: Option<keys::Unlocked>,
    /// The backend objects are stored in: `backend` itself for a plain store,
    /// the one below the sealing for an encrypted store.
    stored: Arc<dyn Backend>,
}

impl Store {
    /// Creates a store in directory `path` (created if missing).
    pub fn init(path: impl AsRef<Path>, opts: &InitOptions) -> Result<Store> {
        Self::init_backend(Arc::new(LocalBackend::new(path.as_ref())), opts)
    }

    /// Creates a store on any backend.
    pub fn init_backend(backend: Arc<dyn Backend>, opts: &InitOptions) -> Result<Store> {
        let config = new_config(opts, false)?;
        match backend.put(layout::CONFIG, &config.encode(), PutMode::Create) {
            Ok(()) => {}
            Err(BackendError::AlreadyExists { location, .. }) => {
                return Err(Error::AlreadyExists(location))
            }
            Err(e) => return Err(e.into()),
        }
        Ok(Store {
            stored: backend.clone(),
            backend,
            config,
            progress: None,
            index_cache: true,
            key: None,
        })
    }

    /// Creates an encrypted store on any backend: a new master secret, wrapped
    /// by `passphrase` (Argon2id with `params`) in the store's first key file.
    pub fn init_encrypted_backend(
        backend: Arc<dyn Backend>,
        opts: &InitOptions,
        passphrase: &[u8],
        params: crate::crypto::KdfParams,
    ) -> Result<Store> {
        let config = new_config(opts, true)?;
        let key = keys::create(&backend, &config, passphrase, params)?;
        Ok(Store {
            backend: key.sealed(backend.clone()),
            stored: backend,
            config,
            progress: None,
            index_cache: true,
            key: Some(key),
        })
    }

    /// Opens the store in directory `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Store> {
        let path = path.as_ref();
        if !path.is_dir() {
            let shown = path.display().to_string();
            return Err(match std::fs::metadata(path) {
                Ok(_) => Error::StoreNotADirectory(shown),
                Err(_) => Error::StoreMissing(shown),
            });
        }
        Self::open_backend(Arc::new(LocalBackend::new(path)))
    }

    /// [`Store::open`], unlocking an encrypted store with the passphrase
    /// `passphrase` gives (asked only then, once).
    pub fn open_unlocking(
        path: impl AsRef<Path>,
        passphrase: &keys::AskPassphrase<'_>,
    ) -> Result<Store> {
        let path = path.as_ref();
        if !path.is_dir() {
            return Self::open(path);
        }
        Self::open_backend_unlocking(Arc::new(LocalBackend::new(path)), passphrase)
    }

    /// Opens a store on any backend. An encrypted store is refused
    /// ([`Error::Encrypted`]): [`Store::open_backend_unlocking`] opens it.
    pub fn open_backend(backend: Arc<dyn Backend>) -> Result<Store> {
        Self::open_backend_with(backend, None)
    }

    /// Opens a store on any backend; if it is encrypted, with the passphrase
    /// `passphrase` gives (asked only then, once).
    pub fn open_backend_unlocking(
        backend: Arc<dyn Backend>,
        passphrase: &keys::AskPassphrase<'_>,
    ) -> Result<Store> {
        Self::open_backend_with(backend, Some(passphrase))
    }

    fn open_backend_with(
        backend: Arc<dyn Backend>,
        passphrase: Option<&keys::AskPassphrase<'_>>,
    ) -> Result<Store> {
        let bytes = match backend.get(layout::CONFIG) {
            Ok(b) => b,
            Err(BackendError::NotFound { location, .. }) => return Err(Error::NotAStore(location)),
            Err(e) => return Err(e.into()),
        };
        let object = ConfigObject::decode(&bytes).map_err(|source| match source {
            // Not damage: this build cannot read it, a newer one can.
            FormatError::UnsupportedVersion { found, supported } => Error::NewerStore {
                object: format!("{}/{}", backend.location(), layout::CONFIG),
                found,
                supported,
            },
            source => Error::Format {
                object: format!("{}/{}", backend.location(), layout::CONFIG),
                source,
            },
        })?;
        let stored = backend.clone();
        let (backend, config, key) = match object {
            ConfigObject::Plain(config) => (backend, config, None),
            ConfigObject::Sealed { store_id, sealed } => {
                let Some(ask) = passphrase else {
                    return Err(Error::Encrypted(backend.location()));
                };
                let pass = ask().map_err(Error::Passphrase)?;
                let (key, config) = keys::unlock(&backend, &store_id, &sealed, &pass)?;
                (key.sealed(backend), config, Some(key))
            }
        };
        Ok(Store {
            backend,
            stored,
            config,
            progress: None,
            index_cache: true,
            key,
        })
    }

    /// Takes a store lock (see [`crate::store::lock`]); released when the guard drops.
    pub fn lock(&self, exclusive: bool, command: &str, wait: Duration) -> Result<LockGuard> {
        lock::acquire(&self.backend, exclusive, command, wait)
    }

    /// A shared lock for a command that only reads. On a store this process
    /// cannot write to (a read-only mount, another user's files), reading goes on
    /// without one: nothing can prune such a store under us either. On a full
    /// disk too: that is when restores are needed most, and a prune (the only
    /// thing a lock keeps out) would have to make room first.
    pub fn read_lock(&self, command: &str) -> Result<Option<LockGuard>> {
        match self.lock(false, command, Duration::from_secs(600)) {
            Ok(g) => Ok(Some(g)),
            Err(Error::Backend(BackendError::Io { source, .. }))
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::PermissionDenied
                        | std::io::ErrorKind::ReadOnlyFilesystem
                        | std::io::ErrorKind::StorageFull
                        | std::io::ErrorKind::QuotaExceeded
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Reports the progress of backups, restores and prunes to `p`.
    pub fn with_progress(mut self, p: crate::Progress) -> Self {
        self.progress = Some(p);
        self
    }

    /// Backups read every index object (the long way) instead of this machine's
    /// local index cache, and leave the cache as it is; nor do they use the base
    /// cache (store/base_cache.rs). Changes no result.
    pub fn without_index_cache(mut self) -> Self {
        self.index_cache = false;
        self
    }

    /// This machine's local index cache of the store, unless turned off.
    pub(crate) fn index_cache(&self) -> Option<crate::index::cache::IndexCache> {
        let cache = self
            .index_cache
            .then(|| crate::index::cache::IndexCache::for_store(&self.config.store_id))
            .flatten();
        if cache.is_some() {
            self.mark_cache();
        }
        cache
    }

    /// This machine's base cache of the store, bounded to `limit` bytes (0: none),
    /// unless local caches are turned off ([`Store::without_index_cache`]: the
    /// backup then stores its new chunks plain on a store that pays per request).
    pub(crate) fn base_cache(&self, limit: u64) -> Option<base_cache::BaseCache> {
        let cache = self
            .index_cache
            .then(|| {
                base_cache::BaseCache::for_store(&self.config.store_id, limit, self.chunk_ids())
            })
            .flatten();
        if cache.is_some() {
            self.mark_cache();
        }
        cache
    }

    /// Whether this machine's caches may be used (not `--no-cache`).
    pub(crate) fn uses_local_cache(&self) -> bool {
        self.index_cache
    }

    /// Records in this machine's cache folder of the store which store it is and
    /// that it is in use (see [`cache_dirs`]), before anything is cached there.
    pub(crate) fn mark_cache(&self) {
        cache_dirs::mark_store(&self.config.store_id, &self.backend.location());
    }

    pub(crate) fn progress(&self) -> Option<&crate::Progress> {
        self.progress.as_ref()
    }

    /// How this store names its chunks (keyed for an encrypted store).
    pub fn chunk_ids(&self) -> ChunkIds {
        self.key.as_ref().map(|k| k.chunk_ids()).unwrap_or_default()
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    pub fn location(&self) -> String {
        self.backend.location()
    }

    /// The backend every object is read and written through (an encrypted
    /// store's seals and opens them: sizes are the plaintext's).
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The backend the objects are stored in as they are (for a plain store,
    /// [`Store::backend`]): what an encrypted store's objects take on disk.
    pub fn stored_backend(&self) -> &Arc<dyn Backend> {
        &self.stored
    }

    pub(crate) fn format_err(&self, key: &str) -> impl Fn(FormatError) -> Error + '_ {
        let object = format!("{}/{key}", self.backend.location());
        move |source| Error::Format {
            object: object.clone(),
            source,
        }
    }

    /// Reads a content-addressed object and checks it against its name.
    pub(crate) fn get_verified(&self, key: &str, id: &Id) -> Result<Vec<u8>> {
        let bytes = self.backend.get(key)?;
        if Id::of_object(&bytes) != *id {
            return Err(self.format_err(key)(FormatError::Invalid(
                "content does not match its name (object is damaged)".into(),
            )));
        }
        Ok(bytes)
    }
}

/// A new store's config: a fresh id, `opts`, checked (the error says which
/// parameter is wrong and what is allowed).
fn new_config(opts: &InitOptions, encrypted: bool) -> Result<StoreConfig> {
    let config = StoreConfig {
        store_id: Id::of_object(&random_seed()),
        chunk_pages: opts.chunk_pages,
        zstd_level: opts.zstd_level,
        pack_target_size: opts.pack_target_size,
        created_unix: Utc::now().timestamp(),
        dictionary: opts.dictionary,
        deltas: opts.deltas,
        encrypted,
    };
    config.validate().map_err(Error::BadStoreParameters)?;
    Ok(config)
}

fn random_seed() -> Vec<u8> {
    // Unique enough for a store identity: time, process and a stack address.
    let now = Utc::now();
    let marker = 0u8;
    format!(
        "{}-{}-{}-{:p}",
        now.timestamp_nanos_opt().unwrap_or_default(),
        std::process::id(),
        hostname::get()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        &marker
    )
    .into_bytes()
}

/// Where a store is when neither `--store` nor `PAGESNAP_STORE` says:
/// `$XDG_DATA_HOME/pagesnap/store`, else `~/.local/share/pagesnap/store`.
pub fn default_store_path() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return Some(PathBuf::from(x).join("pagesnap").join("store"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".local/share/pagesnap/store"))
}

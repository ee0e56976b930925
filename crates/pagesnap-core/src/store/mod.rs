//! The store API: init/open a store, back up, list, select and restore snapshots.

mod head_hint;
mod index_objects;
pub mod lock;
mod maps;
pub(crate) mod pack_sink;
pub(crate) mod pack_upload;
pub(crate) mod packs;
pub mod select;
mod snapshot;

pub(crate) use index_objects::put_index;
pub(crate) use maps::{check_lists_named, MapBase, NewChunks, WrittenMap};
pub use snapshot::{DamagedSnapshot, Snapshot};

use crate::backend::{Backend, BackendError, LocalBackend, PutMode};
use crate::capture::{self, open_source, CaptureError};
use crate::chunk_writer::{ChunkWriter, DictPlan, WriteStats};
use crate::format::config::StoreConfig;
use crate::format::manifest::Manifest;
use crate::format::FormatError;
use crate::index::cache::ChunkLookup;
use crate::types::{ChunkRef, Id, SnapshotId};
use crate::{codec, layout, restore, Error, Result};
use chrono::{DateTime, Utc};
use lock::LockGuard;
use rusqlite::Connection;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            chunk_pages: 1,
            zstd_level: 3,
            pack_target_size: 16 << 20,
            dictionary: true,
        }
    }
}

/// How to record a backup.
#[derive(Clone, Debug)]
pub struct BackupOptions {
    /// Database name; defaults to the file stem of the source path.
    pub name: Option<String>,
    pub tags: Vec<String>,
    /// Recorded time; defaults to now.
    pub time: Option<DateTime<Utc>>,
    /// How long to wait for a lock held by another process.
    pub busy_timeout: Duration,
    /// How long to wait for a running `prune` (which locks the store) to finish.
    pub lock_wait: Duration,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            name: None,
            tags: Vec::new(),
            time: None,
            busy_timeout: Duration::from_secs(5),
            lock_wait: Duration::from_secs(600),
        }
    }
}

/// What a backup did.
#[derive(Clone, Debug)]
pub struct BackupReport {
    pub snapshot: SnapshotId,
    pub name: String,
    pub time: DateTime<Utc>,
    pub page_size: u32,
    pub page_count: u64,
    pub image_len: u64,
    pub image_hash: [u8; 32],
    pub chunks: u64,
    pub stats: WriteStats,
    /// Bytes of every object this backup wrote (packs, index, page map, manifest).
    pub bytes_added: u64,
    /// Bytes of metadata this snapshot added (manifest, page map, index).
    pub metadata_bytes: u64,
    /// Positions recorded in the page map this backup wrote (0 if it reused its parent's).
    pub delta_len: u64,
    /// Whether the backup wrote a full page map (rather than a skip-delta).
    pub new_base: bool,
    /// Damage the backup worked around (it still succeeded), for the user to see.
    pub warnings: Vec<String>,
    /// Chunks in the store's index and how long loading it took (the one part of
    /// a backup whose cost grows with the store rather than with the change).
    pub index_chunks: u64,
    pub index_load: Duration,
    /// Whether the index was this machine's derived copy (index_cache/), not
    /// every index object read into memory.
    pub index_cached: bool,
    pub duration: Duration,
}

/// What a restore wrote.
#[derive(Clone, Debug)]
pub struct RestoreReport {
    pub snapshot: SnapshotId,
    pub image_len: u64,
    pub image_hash: [u8; 32],
    pub duration: Duration,
    /// Temporary files of killed restores removed from the output's folder.
    pub removed_temporaries: Vec<PathBuf>,
}

/// A pagesnap store.
pub struct Store {
    backend: Arc<dyn Backend>,
    config: StoreConfig,
    progress: Option<crate::Progress>,
    /// Whether backups may use this machine's local index cache (index_cache/).
    index_cache: bool,
}

/// Names and tags are printed and matched, never used as paths; still, refuse what
/// would make output ambiguous or hide in logs.
fn check_label(what: &'static str, s: &str) -> Result<()> {
    let bad = if s.is_empty() {
        Some("is empty")
    } else if s.len() > 255 {
        Some("is longer than 255 bytes")
    } else if s.chars().any(|c| c.is_control()) {
        Some("contains a control character (newline, NUL, ...)")
    } else if s.contains("..") || s.contains('/') || s.contains('\\') {
        Some("contains a path separator or `..`")
    } else {
        None
    };
    match bad {
        Some(why) => Err(Error::Invalid {
            what,
            detail: format!("{s:?} {why}"),
        }),
        None => Ok(()),
    }
}

impl Store {
    /// Creates a store in directory `path` (created if missing).
    pub fn init(path: impl AsRef<Path>, opts: &InitOptions) -> Result<Store> {
        Self::init_backend(Arc::new(LocalBackend::new(path.as_ref())), opts)
    }

    /// Creates a store on any backend.
    pub fn init_backend(backend: Arc<dyn Backend>, opts: &InitOptions) -> Result<Store> {
        let config = StoreConfig {
            store_id: Id::of_object(&random_seed()),
            chunk_pages: opts.chunk_pages,
            zstd_level: opts.zstd_level,
            pack_target_size: opts.pack_target_size,
            created_unix: Utc::now().timestamp(),
            dictionary: opts.dictionary,
        };
        config.validate().map_err(|e| Error::Invalid {
            what: "store parameters",
            // validate() says which parameter is wrong and what is allowed.
            detail: e.to_string(),
        })?;
        match backend.put(layout::CONFIG, &config.encode(), PutMode::Create) {
            Ok(()) => {}
            Err(BackendError::AlreadyExists { location, .. }) => {
                return Err(Error::AlreadyExists(location))
            }
            Err(e) => return Err(e.into()),
        }
        Ok(Store {
            backend,
            config,
            progress: None,
            index_cache: true,
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

    /// Opens a store on any backend.
    pub fn open_backend(backend: Arc<dyn Backend>) -> Result<Store> {
        let bytes = match backend.get(layout::CONFIG) {
            Ok(b) => b,
            Err(BackendError::NotFound { location, .. }) => return Err(Error::NotAStore(location)),
            Err(e) => return Err(e.into()),
        };
        let config = StoreConfig::decode(&bytes).map_err(|source| match source {
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
        Ok(Store {
            backend,
            config,
            progress: None,
            index_cache: true,
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
    /// local index cache, and leave the cache as it is. Changes no result.
    pub fn without_index_cache(mut self) -> Self {
        self.index_cache = false;
        self
    }

    /// This machine's local index cache of the store, unless turned off.
    pub(crate) fn index_cache(&self) -> Option<crate::index::cache::IndexCache> {
        self.index_cache
            .then(|| crate::index::cache::IndexCache::for_store(&self.config.store_id))
            .flatten()
    }

    pub(crate) fn progress(&self) -> Option<&crate::Progress> {
        self.progress.as_ref()
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    pub fn location(&self) -> String {
        self.backend.location()
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
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

    /// Backs up the database file at `path` (opened read-only).
    pub fn backup_path(&self, path: &Path, opts: &BackupOptions) -> Result<BackupReport> {
        let conn = open_source(path)?;
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        self.backup_connection(&conn, &abs, opts)
    }

    /// Backs up through an open connection (e.g. an application's own). `path` is
    /// recorded as the source and names it in messages; the default name is its stem.
    ///
    /// Outside a transaction, the capture opens a read transaction for the copy and
    /// ends it. Inside the caller's transaction it uses that transaction and leaves it
    /// open; the snapshot is then the database as that transaction sees it. A
    /// transaction that has written cannot be backed up through (SQLite's backup
    /// API refuses while its source connection writes): that fails at once with
    /// [`crate::capture::CaptureError::UncommittedWrites`]. The connection's busy
    /// timeout is set to `opts.busy_timeout`.
    pub fn backup_connection(
        &self,
        conn: &Connection,
        path: &Path,
        opts: &BackupOptions,
    ) -> Result<BackupReport> {
        self.backup_inner(conn, path, opts, None)
    }

    /// [`Store::backup_connection`] that another thread may abandon with
    /// `abandon` (see [`crate::Abandon`]): until it commits to publishing, an
    /// abandoned backup stops at its next check with
    /// [`crate::capture::CaptureError::Abandoned`] and never publishes. Its store
    /// lock is the one `abandon` holds, if any (the caller's, taken beforehand),
    /// else one it takes and hands to `abandon`; it stays held after the backup
    /// returns, until [`crate::Abandon::release`].
    pub fn backup_connection_abandonable(
        &self,
        conn: &Connection,
        path: &Path,
        opts: &BackupOptions,
        abandon: &crate::Abandon,
    ) -> Result<BackupReport> {
        self.backup_inner(conn, path, opts, Some(abandon))
    }

    fn backup_inner(
        &self,
        conn: &Connection,
        path: &Path,
        opts: &BackupOptions,
        abandon: Option<&crate::Abandon>,
    ) -> Result<BackupReport> {
        let started = Instant::now();
        let name = match &opts.name {
            Some(n) => n.clone(),
            None => path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "db".to_string()),
        };
        check_label("database name", &name)?;
        for t in &opts.tags {
            check_label("tag", t)?;
        }
        let time = opts.time.unwrap_or_else(Utc::now);
        // Refused before anything is written, by the rule the manifest's decoder applies.
        Manifest::check_time(time.timestamp_subsec_nanos()).map_err(|e| Error::Invalid {
            what: "snapshot time",
            detail: format!("{time:?}: {e}"),
        })?;
        let abandoned = || Error::Capture(CaptureError::Abandoned(path.to_path_buf()));
        // Shared: other backups may run too, but prune may not delete chunks under us.
        let _lock = match abandon {
            None => Some(self.lock(false, "backup", opts.lock_wait)?),
            Some(a) if a.holds_lock() => None,
            Some(a) => {
                if !a.hold(self.lock(false, "backup", opts.lock_wait)?) {
                    return Err(abandoned());
                }
                None
            }
        };
        if abandon.is_some_and(|a| a.is_abandoned()) {
            return Err(abandoned());
        }

        // The newest earlier snapshot of the same database is the delta's reference:
        // the one this machine recorded last, else found by reading every manifest.
        let same_db = |s: &Snapshot| {
            s.manifest.name == name && s.manifest.chunk_pages == self.config.chunk_pages
        };
        let hinted = head_hint::read(&self.config.store_id, &name)
            .and_then(|id| self.load_snapshot(&id).ok())
            .filter(same_db);
        let parent = match hinted {
            Some(p) => Some(p),
            None => self
                .snapshots()?
                .into_iter()
                .filter(same_db)
                .max_by_key(|s| (s.time(), s.id)),
        };
        // The index to deduplicate against, the short way when this machine's
        // derived copy of it can be trusted (backup_index.rs).
        let turn = Utc::now().timestamp_nanos_opt().unwrap_or_default() as u64;
        let mut bi = self.backup_index(parent.as_ref(), turn)?;
        let index = std::mem::replace(&mut bi.lookup, ChunkLookup::Whole(Box::default()));
        let (index_chunks, index_load) = (index.entries(), bi.load);
        let base = bi.base.take();
        let mut warnings = std::mem::take(&mut bi.warnings);
        let (plan, used_ratio) = self.dict_plan(parent.as_ref());
        let mut writer = ChunkWriter::new(self.backend.clone(), index, &self.config, plan)?;
        if index_chunks == 0 {
            // Every chunk of a first backup is new: size the writer's map once.
            let pages: i64 = conn
                .query_row("PRAGMA page_count", [], |r| r.get(0))
                .unwrap_or(0);
            let chunks = pages.max(0) as u64 / self.config.chunk_pages as u64;
            writer.expect_new(chunks.min(1 << 28) as usize);
        }
        let cap = capture::capture(
            conn,
            path,
            opts.busy_timeout,
            self.config.chunk_pages,
            writer,
            self.progress(),
            abandon,
        )?;
        let (new, stats, index) = cap.writer.finish()?;
        // The last moment to abandon: so far only packs (and a dictionary) were
        // written, which nothing names; from here on the index, the page map and
        // the manifest make them reachable.
        if abandon.is_some_and(|a| !a.commit()) {
            return Err(abandoned());
        }
        let mut bytes_added = stats.pack_bytes;
        let mut metadata_bytes = 0u64;
        let dict_used = new.dict;
        // A dictionary that no longer fits the data (new chunks compress much worse
        // than its training samples did) is replaced by the next backup.
        let retrain_dict = match used_ratio {
            Some(trained) if stats.new_raw_bytes >= 4 << 20 && stats.dict_bytes == 0 => {
                let ratio = stats.new_raw_bytes as f32 / stats.new_stored_bytes.max(1) as f32;
                ratio < 0.85 * trained
            }
            _ => false,
        };
        bytes_added += stats.dict_bytes;
        let written = self.put_map(
            |id| index.name_of(id),
            base,
            new,
            &cap.chunks,
            &mut metadata_bytes,
        )?;
        let manifest = Manifest {
            time_unix: time.timestamp(),
            time_nanos: time.timestamp_subsec_nanos(),
            name: name.clone(),
            source_path: path.display().to_string(),
            host: hostname::get()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            tags: opts.tags.clone(),
            page_size: cap.page_size,
            page_count: cap.image_len / cap.page_size as u64,
            image_len: cap.image_len,
            image_hash: cap.image_hash,
            sqlite_version: rusqlite::version().to_string(),
            pagesnap_version: env!("CARGO_PKG_VERSION").to_string(),
            chunk_pages: self.config.chunk_pages,
            chunk_count: cap.chunks.len() as u64,
            map: written.map,
            parent: parent.as_ref().map(|p| p.id),
            dict: dict_used,
            retrain_dict,
            image_check: Some(cap.image_check),
        };
        let (id, manifest_len) = self.publish(&manifest, true)?;
        metadata_bytes += manifest_len;
        bytes_added += metadata_bytes;
        warnings.extend(self.index_upkeep(
            &bi,
            &written,
            &index,
            &cap.chunks,
            parent.as_ref().map(|p| p.manifest.map),
        ));
        Ok(BackupReport {
            snapshot: id,
            name,
            time,
            page_size: manifest.page_size,
            page_count: manifest.page_count,
            image_len: manifest.image_len,
            image_hash: manifest.image_hash,
            chunks: manifest.chunk_count,
            stats,
            bytes_added,
            metadata_bytes,
            delta_len: written.changes,
            new_base: written.full,
            warnings,
            index_chunks,
            index_load,
            index_cached: bi.short,
            duration: started.elapsed(),
        })
    }

    /// How a backup compresses: with its database's dictionary, by training one
    /// (first backup, a retrain request, or a dictionary that cannot be read), or
    /// without. Also returns the ratio the dictionary reached on its samples.
    fn dict_plan(&self, parent: Option<&Snapshot>) -> (DictPlan, Option<f32>) {
        if !self.config.dictionary {
            return (DictPlan::None, None);
        }
        match parent
            .filter(|p| !p.manifest.retrain_dict)
            .and_then(|p| p.manifest.dict)
        {
            Some(id) => match codec::load_dict(self.backend.as_ref(), &id) {
                Ok(body) => (DictPlan::Use(id, body.dict), Some(body.trained_ratio)),
                // A damaged or missing dictionary only costs a new one.
                Err(_) => (DictPlan::Train, None),
            },
            None => (DictPlan::Train, None),
        }
    }

    /// Writes the snapshot's image to `out`, checking it against the manifest's image
    /// check (or, for snapshots from before the check, its blake3 hash).
    /// On a mismatch the bytes already written are wrong: callers writing to a
    /// file should use [`Store::restore_to_path`], which never leaves such a file.
    pub fn restore_to_writer(&self, snap: &Snapshot, out: &mut dyn Write) -> Result<RestoreReport> {
        self.restore_to_sink(snap, restore::Sink::Stream(out))
    }

    fn restore_to_sink(&self, snap: &Snapshot, out: restore::Sink<'_>) -> Result<RestoreReport> {
        let started = Instant::now();
        let _lock = self.read_lock("restore")?;
        let backend = self.backend.as_ref();
        let image_hash = match self.restore_plan(snap)? {
            Some(plan) => restore::write_located(
                backend,
                &plan.packs,
                snap,
                &plan,
                out,
                self.progress(),
                false,
            )?,
            // A chunk to look for by id, or a problem to name: the whole index.
            None => {
                let index = self.load_index()?;
                let chunks = self.chunk_list_with(&index, snap)?;
                restore::write_image(backend, &index, snap, &chunks, out, self.progress(), false)?
            }
        };
        Ok(RestoreReport {
            snapshot: snap.id,
            image_len: snap.manifest.image_len,
            image_hash,
            duration: started.elapsed(),
            removed_temporaries: Vec::new(),
        })
    }

    /// The salvage restore of `snap` into `file` (see [`Store::salvage_to_path`]).
    pub(crate) fn salvage_into(
        &self,
        snap: &Snapshot,
        file: &std::fs::File,
        durable: bool,
    ) -> Result<restore::Salvaged> {
        let _lock = self.read_lock("restore")?;
        let backend = self.backend.as_ref();
        if let Some(plan) = self.restore_plan(snap)? {
            return restore::write_salvaged(
                backend,
                &plan.packs,
                snap,
                &plan,
                file,
                durable,
                self.progress(),
                restore::SalvageLog::default(),
            );
        }
        // Something is not located by the names the maps use: the whole index
        // finds what it can, and says why the rest is lost.
        let index = self.load_index()?;
        let chunks = self.chunk_list_with(&index, snap)?;
        let locs = index.locate_all(&chunks);
        let log = restore::SalvageLog::default();
        for (pos, (c, loc)) in chunks.iter().zip(&locs).enumerate() {
            if let (ChunkRef::Stored(id), None) = (c, loc) {
                let (object, detail) = match index.unlocated(snap.id, id) {
                    Error::PackMissing { pack, .. } => {
                        (Some(pack), "its pack is missing from the store".to_string())
                    }
                    _ => (
                        None,
                        "no index object locates it (missing from the store)".to_string(),
                    ),
                };
                log.record(pos, *id, object, detail);
            }
        }
        let positions = restore::Listed {
            chunks: &chunks,
            locs: &locs,
        };
        restore::write_salvaged(
            backend,
            index.packs(),
            snap,
            &positions,
            file,
            durable,
            self.progress(),
            log,
        )
    }

    /// Restores to the file `out`: written to a temporary file beside it, checked,
    /// fsynced and renamed into place. An existing file is replaced only with `force`.
    pub fn restore_to_path(
        &self,
        snap: &Snapshot,
        out: &Path,
        force: bool,
    ) -> Result<RestoreReport> {
        self.restore_to_path_with(snap, out, force, true)
    }

    /// [`Store::restore_to_path`], choosing whether the file is flushed to disk
    /// before it is renamed into place. Without `fsync` a restore does not wait for
    /// the disk, but a crash just after it may leave the file incomplete.
    pub fn restore_to_path_with(
        &self,
        snap: &Snapshot,
        out: &Path,
        force: bool,
        fsync: bool,
    ) -> Result<RestoreReport> {
        let (mut report, removed) =
            restore::to_path(out, snap.manifest.image_len, force, fsync, |sink| {
                self.restore_to_sink(snap, sink)
            })?;
        report.removed_temporaries = removed;
        Ok(report)
    }
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

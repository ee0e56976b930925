//! The store API: init/open a store, back up, list, select and restore snapshots.

mod head_hint;
pub mod lock;
pub(crate) mod pack_sink;
pub(crate) mod pack_upload;
pub mod select;

use crate::backend::{Backend, BackendError, LocalBackend, ObjectInfo, PutMode};
use crate::capture::{self, open_source, CaptureError};
use crate::chunk_writer::NewChunks;
use crate::chunk_writer::{ChunkWriter, DictPlan, WriteStats};
use crate::format::config::StoreConfig;
use crate::format::index::IndexBody;
use crate::format::manifest::Manifest;
use crate::format::pagemap::{
    diff, encode_changes, new_chunk_ordinals, reference_seq, should_write_full, MapHead, OrdinalOf,
    PageMap,
};
use crate::format::FormatError;
use crate::index::cache::ChunkLookup;
use crate::index::chunk_index::ChunkIndex;
use crate::index::id_table::IdTable;
use crate::types::{ChunkId, ChunkRef, Id, IdMap, SnapshotId};
use crate::{codec, layout, restore, Error, Result};
use chrono::{DateTime, TimeZone, Utc};
use lock::LockGuard;
use rayon::prelude::*;
use rusqlite::Connection;
use select::SnapshotSelector;
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

/// A snapshot: its id and manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub id: SnapshotId,
    pub manifest: Manifest,
}

impl Snapshot {
    pub fn time(&self) -> DateTime<Utc> {
        Utc.timestamp_opt(self.manifest.time_unix, self.manifest.time_nanos)
            .single()
            .unwrap_or_default()
    }
}

/// A manifest that could not be read, reported beside the readable ones.
#[derive(Debug)]
pub struct DamagedSnapshot {
    pub key: String,
    pub error: Error,
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

/// What a backup (or a copied snapshot) continues from: its parent's map and list,
/// and the skip-delta reference (map id and resolved list) its own map is a delta against.
pub(crate) struct MapBase {
    parent_map: Id,
    /// blake3 of the parent's chunk list (the list itself is not kept: at 33 bytes
    /// a chunk, it is a sizeable part of a backup's memory).
    parent_list: [u8; 32],
    seq: u64,
    reference: (Id, Vec<ChunkRef>),
}

impl MapBase {
    /// The base of a backup whose parent has map `parent_map` and chunk list
    /// `parent_list`; its own map will be number `seq`, a delta against `reference`.
    pub(crate) fn new(
        parent_map: Id,
        parent_list: &[ChunkRef],
        seq: u64,
        reference: (Id, Vec<ChunkRef>),
    ) -> MapBase {
        MapBase {
            parent_map,
            parent_list: list_hash(parent_list),
            seq,
            reference,
        }
    }
}

/// The page map a backup recorded, and the index object it wrote (if it stored chunks).
pub(crate) struct WrittenMap {
    pub(crate) map: Id,
    pub(crate) changes: u64,
    pub(crate) full: bool,
    pub(crate) index: Option<(Id, IndexBody)>,
    /// The index object's size in the store (0 without one).
    pub(crate) index_len: u64,
    /// Positions of its entries by chunk id (see id_table.rs).
    pub(crate) index_table: IdTable,
    /// A new map's sequence number and named chunk ids (see index_cache/resolved.rs;
    /// `None` for a full map: they are then the list's stored chunks, not held
    /// twice); `None` when the parent's map was reused.
    pub(crate) resolved: Option<(u64, Option<Vec<ChunkId>>)>,
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

    /// Every readable snapshot, oldest first, and the manifests that could not be read.
    pub fn snapshots_with_damage(&self) -> Result<(Vec<Snapshot>, Vec<DamagedSnapshot>)> {
        let mut good = Vec::new();
        let mut damaged = Vec::new();
        for obj in self.backend.list(layout::SNAPSHOTS)? {
            let Some(id) = layout::id_of(&obj.key) else {
                continue; // not a manifest name: ignore foreign files
            };
            match self.load_snapshot(&id) {
                Ok(s) => good.push(s),
                // Forgotten by another process since the listing: not damage.
                Err(Error::Backend(BackendError::NotFound { .. })) => {}
                Err(error) => damaged.push(DamagedSnapshot {
                    key: obj.key,
                    error,
                }),
            }
        }
        good.sort_by_key(|s| (s.time(), s.id));
        Ok((good, damaged))
    }

    /// Every readable snapshot, oldest first (damaged manifests are skipped).
    pub fn snapshots(&self) -> Result<Vec<Snapshot>> {
        Ok(self.snapshots_with_damage()?.0)
    }

    pub fn load_snapshot(&self, id: &SnapshotId) -> Result<Snapshot> {
        let key = layout::snapshot(id);
        let bytes = self.get_verified(&key, id)?;
        let manifest = Manifest::decode(&bytes).map_err(self.format_err(&key))?;
        Ok(Snapshot { id: *id, manifest })
    }

    /// Chooses a snapshot. A damaged manifest whose id matches the selector is reported, not skipped.
    pub fn select(&self, sel: &SnapshotSelector) -> Result<Snapshot> {
        self.select_reporting(sel, |_| {})
    }

    /// Like [`Store::select`], and calls `warn` for every manifest that could not be
    /// read when the choice is by time (`latest`, `--at`): such a manifest might have
    /// been the one wanted, so the caller must be told.
    pub fn select_reporting(
        &self,
        sel: &SnapshotSelector,
        mut warn: impl FnMut(&DamagedSnapshot),
    ) -> Result<Snapshot> {
        let (snaps, damaged) = self.snapshots_with_damage()?;
        match sel {
            SnapshotSelector::Id(prefix) => {
                let p = prefix.to_ascii_lowercase();
                let matches_damaged = |d: &DamagedSnapshot| {
                    layout::id_of(&d.key).is_some_and(|id| id.to_hex().starts_with(&p))
                };
                if !snaps.iter().any(|s| s.id.to_hex().starts_with(&p)) {
                    if let Some(d) = damaged.into_iter().find(matches_damaged) {
                        return Err(d.error);
                    }
                }
            }
            SnapshotSelector::Latest { .. } => damaged.iter().for_each(&mut warn),
        }
        select::select(&snaps, sel).cloned()
    }

    /// Every pack in the store, by id, with its length: a pack counts as present
    /// only with the length its index objects recorded.
    pub(crate) fn pack_sizes(&self) -> Result<IdMap<u64>> {
        Ok(self
            .backend
            .list(layout::PACKS)?
            .into_iter()
            .filter_map(|o| Some((layout::id_of(&o.key)?, o.size)))
            .collect())
    }

    /// The in-memory chunk index built from every `index/` object. Locations are
    /// kept only in packs that exist with their recorded length: a lost pack's
    /// chunks are then unknown, so a backup stores them again rather than
    /// publishing a snapshot that references them, and a restore names them missing.
    pub(crate) fn load_index(&self) -> Result<ChunkIndex> {
        let present = self.pack_sizes()?;
        let objects = self.backend.list(layout::INDEX)?;
        let mut index = self.index_of(&objects, &present);
        index.seal();
        Ok(index)
    }

    /// The index objects `objects` read into an index (not sealed), locations only
    /// in the packs of `present` (by id, with their length).
    pub(crate) fn index_of(&self, objects: &[ObjectInfo], present: &IdMap<u64>) -> ChunkIndex {
        let mut index = ChunkIndex::default();
        // Sized once from the objects' sizes (an entry takes about 38 bytes): growing
        // by doubling left the table up to half empty, the largest part of a backup's memory.
        index.reserve((objects.iter().map(|o| o.size).sum::<u64>() / 38) as usize);
        let objects: Vec<(Id, &str)> = objects
            .iter()
            .filter_map(|o| Some((layout::id_of(&o.key)?, o.key.as_str())))
            .collect();
        // Objects are read and checked against their names on every core, a batch
        // at a time (memory stays bounded), then decoded into the index in order.
        for batch in objects.chunks(64) {
            let fetched: Vec<Result<Vec<u8>>> = batch
                .par_iter()
                .map(|(id, key)| self.get_verified(key, id))
                .collect();
            for ((id, key), bytes) in batch.iter().zip(fetched) {
                // A damaged index object costs its chunks (stored again by the next
                // backup) and the snapshots whose maps name them, never the whole store.
                let added = bytes.and_then(|bytes| {
                    index
                        .add_encoded(*id, &bytes, |pack, len| present.get(pack) == Some(&len))
                        .map_err(self.format_err(key))
                });
                match added {
                    Ok(()) => {}
                    // Deleted by a prune since the listing: not damage.
                    Err(Error::Backend(BackendError::NotFound { .. })) => {}
                    Err(e) => index.mark_damaged(*id, e.to_string()),
                }
            }
        }
        index
    }

    pub(crate) fn load_map(&self, id: &Id) -> Result<PageMap> {
        self.finish_map(id, self.load_map_head(id)?)
    }

    /// Map `id`, read, checked against its name and decoded but for its changes.
    fn load_map_head(&self, id: &Id) -> Result<MapHead> {
        let key = layout::map(id);
        let bytes = self.get_verified(&key, id)?;
        PageMap::decode_head(&bytes).map_err(self.format_err(&key))
    }

    /// The maps from `id` down to its full map, each checked to follow the skip-delta rule.
    pub fn map_chain(&self, id: &Id) -> Result<Vec<(Id, PageMap)>> {
        self.walk_chain(id, |s, mid| s.load_map(mid), |m| m)
    }

    /// [`Store::map_chain`] with each map decoded but for its changes
    /// ([`PageMap::decode_head`]); [`Store::finish_map`] decodes them.
    pub(crate) fn map_chain_heads(&self, id: &Id) -> Result<Vec<(Id, MapHead)>> {
        self.walk_chain(id, |s, mid| s.load_map_head(mid), |h| &h.map)
    }

    /// Map `id`'s changes, decoded from its head.
    pub(crate) fn finish_map(&self, id: &Id, head: MapHead) -> Result<PageMap> {
        head.finish().map_err(self.format_err(&layout::map(id)))
    }

    /// The chain from `id` down: each map loaded, checked to follow the
    /// skip-delta rule from the one before it, and followed to its reference.
    fn walk_chain<M>(
        &self,
        id: &Id,
        load: impl Fn(&Self, &Id) -> Result<M>,
        map: impl Fn(&M) -> &PageMap,
    ) -> Result<Vec<(Id, M)>> {
        let mut chain: Vec<(Id, M)> = Vec::new();
        let mut next = Some(*id);
        while let Some(mid) = next {
            let m = load(self, &mid)?;
            if let Some((_, child)) = chain.last() {
                let (seq, want) = (map(&m).seq, reference_seq(map(child).seq));
                if seq != want {
                    return Err(self.format_err(&layout::map(&mid))(FormatError::Invalid(
                        format!("page map has sequence number {seq} where {want} was expected"),
                    )));
                }
            }
            next = map(&m).reference;
            chain.push((mid, m));
        }
        Ok(chain)
    }

    /// Resolves a chain (as [`Store::map_chain`] returns it) from its full map down,
    /// calling `visit` with every map's resolved list; returns the last list.
    pub(crate) fn resolve_chain(
        &self,
        index: &ChunkIndex,
        chain: &[(Id, PageMap)],
        mut visit: impl FnMut(&Id, &PageMap, &[ChunkRef]),
    ) -> Result<Vec<ChunkRef>> {
        let mut list: Vec<ChunkRef> = Vec::new();
        for (mid, m) in chain.iter().rev() {
            check_lists_named(index, mid, m)?;
            list = m
                .apply(&list, |l, o| index.lookup(l, o))
                .map_err(self.format_err(&layout::map(mid)))?;
            visit(mid, m, &list);
        }
        Ok(list)
    }

    /// The full, ordered chunk list of a snapshot, using an index already loaded.
    pub fn chunk_list_with(&self, index: &ChunkIndex, snap: &Snapshot) -> Result<Vec<ChunkRef>> {
        let chain = self.map_chain(&snap.manifest.map)?;
        let list = self.resolve_chain(index, &chain, |_, _, _| {})?;
        self.check_chunk_count(snap, list.len())?;
        Ok(list)
    }

    /// Fails when a snapshot's resolved page map has `n` chunks where its manifest
    /// says otherwise.
    pub(crate) fn check_chunk_count(&self, snap: &Snapshot, n: usize) -> Result<()> {
        if n as u64 != snap.manifest.chunk_count {
            return Err(self.format_err(&layout::snapshot(&snap.id))(
                FormatError::Invalid(format!(
                    "page map has {n} chunks, the manifest says {}",
                    snap.manifest.chunk_count
                )),
            ));
        }
        Ok(())
    }

    /// The full, ordered chunk list of a snapshot.
    pub fn chunk_list(&self, snap: &Snapshot) -> Result<Vec<ChunkRef>> {
        self.chunk_list_with(&self.load_index()?, snap)
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

    /// Writes a manifest: from this moment on the snapshot exists. With `newest`,
    /// records it as this machine's hint of the newest snapshot of its database.
    /// Returns its id and size.
    pub(crate) fn publish(&self, manifest: &Manifest, newest: bool) -> Result<(SnapshotId, u64)> {
        let encoded = manifest.encode();
        let id = Id::of_object(&encoded);
        // A manifest its own decoder would refuse would publish a snapshot nothing
        // can read: read it back first (a manifest is a few hundred bytes).
        match Manifest::decode(&encoded) {
            Ok(back) if back == *manifest => {}
            Ok(_) => {
                return Err(Error::Internal(
                    "a manifest does not read back as it was written".into(),
                ))
            }
            Err(e) => {
                return Err(Error::Invalid {
                    what: "manifest",
                    detail: format!("it would not read back ({e}); nothing was published"),
                })
            }
        }
        self.backend
            .put(&layout::snapshot(&id), &encoded, PutMode::Overwrite)?;
        if newest {
            head_hint::write(&self.config.store_id, &manifest.name, &id);
        }
        Ok((id, encoded.len() as u64))
    }

    /// The parent's page-map chain gives the skip-delta reference of a backup's map
    /// (and the parent's own list, to notice an unchanged database).
    pub(crate) fn map_base(&self, index: &ChunkIndex, p: &Snapshot) -> Result<MapBase> {
        self.map_base_visiting(index, p, |_, _, _| {}, &mut Vec::new())
    }

    /// [`Store::map_base`], calling `visit` with every map of the parent's chain
    /// and its resolved list, and recording the chain (map id, sequence number).
    pub(crate) fn map_base_visiting(
        &self,
        index: &ChunkIndex,
        p: &Snapshot,
        mut visit: impl FnMut(&Id, &PageMap, &[ChunkRef]),
        chain_seqs: &mut Vec<(Id, u64)>,
    ) -> Result<MapBase> {
        let chain = self.map_chain(&p.manifest.map)?;
        let seq = chain[0].1.seq + 1;
        let want = reference_seq(seq);
        let mut reference: Option<(Id, Vec<ChunkRef>)> = None;
        let parent_list = self.resolve_chain(index, &chain, |mid, m, list| {
            visit(mid, m, list);
            if m.seq == want && reference.is_none() {
                reference = Some((*mid, list.to_vec()));
            }
        })?;
        let reference = reference.ok_or_else(|| {
            Error::Internal("skip-delta reference not in the parent's chain".into())
        })?;
        chain_seqs.extend(chain.iter().map(|(mid, m)| (*mid, m.seq)));
        Ok(MapBase::new(p.manifest.map, &parent_list, seq, reference))
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

    /// Writes this backup's index object (if it stored chunks) and page map (unless
    /// the chunk list equals the parent's, whose map is then reused).
    pub(crate) fn put_map(
        &self,
        name_of: impl Fn(&ChunkId) -> Option<(Id, u64)>,
        base: Option<MapBase>,
        new: NewChunks,
        chunks: &[ChunkRef],
        metadata_bytes: &mut u64,
    ) -> Result<WrittenMap> {
        if let Some(b) = &base {
            if b.parent_list == list_hash(chunks) && new.entries.is_empty() {
                return Ok(WrittenMap {
                    map: b.parent_map,
                    changes: 0,
                    full: false,
                    index: None,
                    index_len: 0,
                    index_table: IdTable::default(),
                    resolved: None,
                });
            }
        }
        let none: &[ChunkRef] = &[];
        let (seq, reference, reference_list) = match &base {
            Some(b)
                if !should_write_full(
                    diff(&b.reference.1, chunks).count(),
                    chunks.len(),
                    b.seq,
                ) =>
            {
                (b.seq, Some(b.reference.0), &b.reference.1[..])
            }
            _ => (0, None, none),
        };
        // The index object lists new chunks in the order the map's `New` references
        // take them. Found by position through a table of 4-byte slots (id_table.rs),
        // and put in that order in place: a first backup has 10⁵–10⁶ of them.
        let mut entries = new.entries;
        let mut table = IdTable::with_capacity(entries.len());
        for (p, e) in entries.iter().enumerate() {
            let id = e.entry.id;
            if table
                .insert(&id, p as u32, |q| entries[q as usize].entry.id)
                .is_some()
            {
                return Err(Error::Internal(format!(
                    "chunk {} is listed twice among a backup's new chunks",
                    id.short()
                )));
            }
        }
        let mut ordinals = new_chunk_ordinals(diff(reference_list, chunks), entries.len(), |id| {
            table.get(id, |q| entries[q as usize].entry.id)
        });
        table.remap(|p| ordinals[p as usize]);
        move_to(&mut entries, &mut ordinals);
        drop(ordinals);
        let mut index_len = 0;
        let index_object = if entries.is_empty() {
            None
        } else {
            let body = IndexBody {
                packs: new.packs,
                entries,
            };
            let (id, len) = put_index(self.backend.as_ref(), &body)?;
            *metadata_bytes += len;
            index_len = len;
            Some((id, body))
        };
        let own = index_object.as_ref().map(|(id, _)| *id);
        let ordinal_of = |id: &ChunkId| -> Option<u32> {
            let listed = &index_object.as_ref()?.1.entries;
            table.get(id, |q| listed[q as usize].entry.id)
        };
        let (encoded, lists) = encode_changes(
            diff(reference_list, chunks),
            own.map(|id| (id, &ordinal_of as OrdinalOf<'_>)),
            name_of,
        )
        .map_err(|e| Error::Internal(format!("encoding the page map: {e}")))?;
        let map = PageMap {
            chunk_count: chunks.len() as u64,
            seq,
            reference,
            new_list: own,
            lists,
            changes: encoded,
        };
        let bytes = map.encode();
        let id = Id::of_object(&bytes);
        self.backend
            .put(&layout::map(&id), &bytes, PutMode::Overwrite)?;
        *metadata_bytes += bytes.len() as u64;
        let resolved = if reference.is_none() {
            Some((seq, None))
        } else {
            crate::index::cache::resolved::named_ids(&map, chunks).map(|ids| (seq, Some(ids)))
        };
        Ok(WrittenMap {
            map: id,
            changes: map.changes.len() as u64,
            full: reference.is_none(),
            index: index_object,
            index_len,
            index_table: table,
            resolved,
        })
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

/// Stores an index object; returns its id and length. Streamed (see
/// [`crate::format::envelope::Streamed`]): into a local store it is written as it
/// is encoded, never held whole in memory.
pub(crate) fn put_index(backend: &dyn Backend, body: &IndexBody) -> Result<(Id, u64)> {
    let plan = body.plan_streamed().map_err(|source| Error::Format {
        object: format!("{}/{}", backend.location(), layout::INDEX),
        source,
    })?;
    let id = Id(plan.hash);
    backend.put_streamed(
        &layout::index(&id),
        plan.len,
        PutMode::Overwrite,
        &mut |w| body.write_streamed(&plan, w),
    )?;
    Ok((id, plan.len))
}

/// Moves each item `p` to position `dest[p]` (a permutation), in place, by
/// following its cycles; `dest` ends as the identity.
fn move_to<T>(items: &mut [T], dest: &mut [u32]) {
    for start in 0..items.len() {
        while dest[start] as usize != start {
            let d = dest[start] as usize;
            items.swap(start, d);
            dest.swap(start, d);
        }
    }
}

/// A digest of a chunk list, to tell whether two lists are equal.
fn list_hash(list: &[ChunkRef]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    for c in list {
        match c {
            ChunkRef::Zero => h.update(&[0]),
            ChunkRef::Stored(id) => h.update(&[1]).update(&id.0),
        };
    }
    *h.finalize().as_bytes()
}

/// Fails, naming the index object, when map `mid` names chunks through an index
/// object that is damaged or missing (rather than "no such entry" later).
pub(crate) fn check_lists_named(index: &ChunkIndex, mid: &Id, m: &PageMap) -> Result<()> {
    for list in m.lists.iter().chain(m.new_list.iter()) {
        if index.has_list(list) {
            continue;
        }
        let why = match index.damaged(list) {
            Some(d) => format!("it is damaged ({d})"),
            None => "it is missing from the store".to_string(),
        };
        return Err(Error::Format {
            object: layout::map(mid),
            source: FormatError::Invalid(format!(
                "names chunks through {}, but {why}; the snapshots using this map cannot be restored (see `pagesnap verify` and `pagesnap repair`)",
                layout::index(list)
            )),
        });
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::move_to;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn move_to_puts_every_item_at_its_destination(dest in Just((0u32..300).collect::<Vec<u32>>()).prop_shuffle()) {
            let items: Vec<u32> = (0..dest.len() as u32).collect();
            let mut moved = items.clone();
            let mut d = dest.clone();
            move_to(&mut moved, &mut d);
            for (p, &to) in dest.iter().enumerate() {
                prop_assert_eq!(moved[to as usize], items[p]);
            }
            prop_assert!(d.iter().enumerate().all(|(i, &x)| x as usize == i));
        }
    }
}

//! backup: taking a snapshot of a live database, from the capture to the published
//! manifest, and `Store::backup_*`. It records what it wrote through store/ (packs,
//! index object, page map, manifest) and must not reach into restore/ or maintenance/.
//!
//! * `mod.rs`: the entry points (`backup_path`, `backup_connection`,
//!   `backup_connection_abandonable`), their options and report, the dictionary plan.
//! * `capture/`: a consistent image through SQLite's backup API (the VFS is the
//!   crate's one `unsafe` module), streamed into the chunk writer.
//! * `chunk_writer.rs`: names, dedups and compresses chunks into packs: which forms
//!   to try and the dictionary's training are its policy; compressing one chunk is
//!   the codec's `Encoder` (codec/, the chunk codec seam). `base_choice.rs`,
//!   `skip.rs` and `sketch/` say which stored chunks a delta is made against.
//! * `prints/`: recognising the blocks that did not change since the parent
//!   (fingerprints under this machine's secret), so that only changed blocks are
//!   hashed with blake3.
//! * `index.rs`: the index a backup dedups against (the local cache, or the whole
//!   index) and the cache's upkeep after publishing.
//! * `abandon.rs`: abandoning a backup from another thread (`pagesnap watch`).

mod abandon;
mod base_choice;
pub mod capture;
pub(crate) mod chunk_writer;
mod index;
pub(crate) mod prints;
#[cfg(test)]
mod scale_tests;
pub mod sketch;
pub(crate) mod skip;

pub use abandon::Abandon;
pub use chunk_writer::WriteStats;

use crate::format::manifest::Manifest;
use crate::index::cache::ChunkLookup;
use crate::store::{head_hint, Snapshot, Store};
use crate::types::SnapshotId;
use crate::{codec, Error, Result};
use capture::{open_source, CaptureError};
use chrono::{DateTime, Utc};
use chunk_writer::{ChunkWriter, DictPlan};
use rusqlite::Connection;
use sketch::Sketcher;
use std::path::Path;
use std::time::{Duration, Instant};

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
    /// Bound in bytes of this machine's base cache, used by a store with deltas
    /// that pays per request (S3; store/base_cache.rs); `Some(0)` turns it off
    /// (new chunks are then stored plain there). `None`: `$PAGESNAP_BASE_CACHE`,
    /// else 64 MiB.
    pub base_cache: Option<u64>,
    /// Hash every page with blake3, as if nothing were known of the parent,
    /// instead of taking blocks whose fingerprints match the parent's as
    /// unchanged (backup/prints/; docs/SECURITY.md, "Fingerprints"); and list
    /// the store's index objects and packs in full instead of taking this
    /// machine's record of them (store/listing.rs).
    pub paranoid: bool,
    /// Read every page of a WAL database even where the WAL proves which
    /// pages changed since the parent (capture/guide.rs). `paranoid` implies it.
    pub full_read: bool,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            name: None,
            tags: Vec::new(),
            time: None,
            busy_timeout: Duration::from_secs(5),
            lock_wait: Duration::from_secs(600),
            base_cache: None,
            paranoid: false,
            full_read: false,
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
    /// Whether the index was this machine's derived copy (index/cache/), not
    /// every index object read into memory.
    pub index_cached: bool,
    /// Whether the capture compared its blocks with the parent's fingerprints
    /// (this machine's record of them was sound, and not `paranoid`); the
    /// blocks found unchanged were not hashed with blake3.
    pub parent_prints: bool,
    /// Whether the backup listed the store's index objects and packs in full,
    /// rather than taking this machine's record of them (store/listing.rs):
    /// always on a local store; on S3 when the record was missing, stale or
    /// under another marker value, or the backup was `paranoid`.
    pub store_listed: bool,
    /// Why the capture read the database through SQLite's backup API, or
    /// `None` if it read the file (and WAL) directly under its read
    /// transaction (backup/capture/direct.rs).
    pub capture_fallback: Option<String>,
    /// Whether the capture followed the WAL from the parent's position
    /// (capture/guide.rs), and how many bytes of the image it then took from
    /// the parent without reading them; `None`: it read every page.
    pub unread_bytes: Option<u64>,
    pub duration: Duration,
}

/// The rule for database names and tags (`what` says which, e.g. `"tag"`), which
/// backups enforce and `pagesnap watch` checks its configuration with. Names and
/// tags are printed and matched, never used as paths; still, refuse what would
/// make output ambiguous or hide in logs.
pub fn check_label(what: &'static str, s: &str) -> Result<()> {
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
    /// [`capture::CaptureError::UncommittedWrites`]. The connection's busy
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
    /// [`capture::CaptureError::Abandoned`] and never publishes. Its store
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
        Manifest::check_time(time.timestamp_subsec_nanos())
            .map_err(|source| Error::BadSnapshotTime { time, source })?;
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
            s.manifest.name == name && s.manifest.chunk_pages == self.config().chunk_pages
        };
        let hinted = head_hint::read(&self.config().store_id, &name)
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
        // Content-found bases (DELTAS.md): the parent's sketch, if this machine
        // holds a sound one, read (~9 MB at 1 GiB, checked) and its lookup
        // table built on threads of their own while the index loads
        // (sketch/mod.rs); taken before the capture begins.
        let sketcher = self.config().deltas.then(|| {
            let wanted = parent
                .as_ref()
                .map(|p| (p.id, p.manifest.chunk_count as usize));
            Sketcher::loading(self.config().store_id, name.clone(), wanted)
        });
        // The index to deduplicate against, the short way when this machine's
        // derived copy of it can be trusted (backup/index.rs).
        let turn = Utc::now().timestamp_nanos_opt().unwrap_or_default() as u64;
        let mut bi = self.backup_index(parent.as_ref(), turn, opts.paranoid)?;
        let index = std::mem::replace(&mut bi.lookup, ChunkLookup::Whole(Box::default()));
        let (index_chunks, index_load) = (index.entries(), bi.load);
        let mut base = bi.base.take();
        let mut warnings = std::mem::take(&mut bi.warnings);
        let (plan, used_ratio) = self.dict_plan(parent.as_ref());
        let mut writer = ChunkWriter::new(
            self.backend().clone(),
            index,
            self.config(),
            plan,
            self.chunk_ids(),
        )?;
        // Deltas against the parent's chunks (a store with deltas; DELTAS.md).
        // Their bases are read from the store's packs, one ranged read each: on
        // a store that pays per request (S3) that would break the backup's
        // request budget, so there they come from this machine's base cache
        // only, which every such backup fills (store/base_cache.rs); a miss, or
        // no cache, stores the chunk plain.
        let parent_chunks = base.as_mut().and_then(|b| b.parent_chunks.take());
        // Blocks are compared with the parent's on the short way: their chunks
        // then come from the index's record of the parent's list (the long way
        // keeps none).
        let printing = self.printing(&name, parent.as_ref().filter(|_| bi.short), opts);
        let mut base_cache = None;
        if self.backend().requests().is_none() {
            if let Some(parent_chunks) = parent_chunks {
                writer.use_deltas(parent_chunks, crate::store::bases::BACKUP_CACHE_BYTES)?;
            }
        } else if self.config().deltas {
            let limit = crate::store::base_cache::configured_limit(opts.base_cache);
            if let Some(cache) = self.base_cache(limit) {
                let cache = std::sync::Arc::new(cache);
                writer.use_cached_deltas(parent_chunks, cache.clone())?;
                base_cache = Some(cache);
            }
        }
        // Content-found bases where bases can be had at all (on S3, a base
        // found by content comes from the base cache, as any base there).
        if self.backend().requests().is_none() || base_cache.is_some() {
            if let Some(s) = sketcher {
                writer.use_sketch(s.take());
            }
        }
        let mut cap = capture::capture(
            conn,
            path,
            opts.busy_timeout,
            self.config().chunk_pages,
            writer,
            printing,
            !opts.full_read,
            self.progress(),
            abandon,
        )?;
        let sketch = cap.writer.take_sketch(&cap.chunks);
        let pending_prints = cap.prints.take();
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
        if let Some(cache) = &base_cache {
            cache.settle(new.entries.iter().map(|e| {
                let depth = new.bases.get(&e.entry.id).map_or(0, |row| row.1);
                (e.entry.id, depth)
            }));
        }
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
            chunk_pages: self.config().chunk_pages,
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
        // This machine's records for the next backup, each on its own: the
        // sketch (the largest write), and the fingerprints beside the index
        // cache's upkeep (they share nothing, and the backup waits for them).
        let write_sketch = || {
            if let Some(sketch) = sketch {
                sketch::file::write(&self.config().store_id, &name, &id, &sketch);
            }
        };
        let records = || {
            if let Some(p) = pending_prints {
                p.finish(&id);
            }
            if let Some(cache) = &base_cache {
                cache.commit();
            }
        };
        let upkeep = || {
            self.index_upkeep(
                &bi,
                &written,
                &index,
                &cap.chunks,
                parent.as_ref().map(|p| p.manifest.map),
            )
        };
        let ((), (_, upkept)) = rayon::join(write_sketch, || rayon::join(records, upkeep));
        warnings.extend(upkept);
        // The objects this backup added, for this machine's record of the
        // listing and the store's marker (store/listing.rs).
        let (added_index, added_packs): (Vec<_>, Vec<_>) = match &written.index {
            Some((id, body)) => (
                vec![(*id, written.index_len)],
                body.packs.iter().map(|p| (p.id, p.len)).collect(),
            ),
            None => (Vec::new(), Vec::new()),
        };
        let (listing, index_sizes) = bi.listing();
        warnings.extend(self.record_listing(listing, index_sizes, &added_index, &added_packs));
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
            parent_prints: cap.compared,
            store_listed: !bi.listing().0.cached,
            capture_fallback: cap.fallback,
            unread_bytes: cap.unread_bytes,
            duration: started.elapsed(),
        })
    }

    /// How the capture prints its chunks (backup/prints/): with this machine's
    /// secret for the store, if it uses the local cache, comparing with the
    /// parent's prints if this machine recorded sound ones and the backup is
    /// not `paranoid`.
    fn printing(
        &self,
        name: &str,
        parent: Option<&Snapshot>,
        opts: &BackupOptions,
    ) -> Option<prints::Printing> {
        if !self.uses_local_cache() {
            return None;
        }
        let store = &self.config().store_id;
        let printer = prints::Printer::for_store(store)?;
        let parent = match (opts.paranoid, parent) {
            (false, Some(p)) => {
                let want = prints::file::Expected {
                    snapshot: &p.id,
                    secret_id: printer.id(),
                    chunk_len: u32::try_from(p.manifest.chunk_len()).ok()?,
                    image_len: p.manifest.image_len,
                };
                let path = prints::file::path(store, name)?;
                prints::file::Recorded::open(&path, &want).and_then(|found| {
                    prints::Parent::new(found, p.manifest.image_len, p.manifest.chunk_count)
                })
            }
            _ => None,
        };
        Some(prints::Printing::new(printer, parent, *store, name))
    }

    /// How a backup compresses: with its database's dictionary, by training one
    /// (first backup, a retrain request, or a dictionary that cannot be read), or
    /// without. Also returns the ratio the dictionary reached on its samples.
    fn dict_plan(&self, parent: Option<&Snapshot>) -> (DictPlan, Option<f32>) {
        if !self.config().dictionary {
            return (DictPlan::None, None);
        }
        match parent
            .filter(|p| !p.manifest.retrain_dict)
            .and_then(|p| p.manifest.dict)
        {
            Some(id) => match codec::load_dict(self.backend().as_ref(), &id) {
                Ok(body) => (DictPlan::Use(id, body.dict), Some(body.trained_ratio)),
                // A damaged or missing dictionary only costs a new one.
                Err(_) => (DictPlan::Train, None),
            },
            None => (DictPlan::Train, None),
        }
    }
}

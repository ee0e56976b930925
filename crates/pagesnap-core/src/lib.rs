//! pagesnap-core: a deduplicating, page-level snapshot store for SQLite.
//!
//! Data flows one way: [`capture`] reads a consistent image of a live database
//! through SQLite's online backup API; the chunk writer names each chunk of pages
//! by its blake3 hash and stores new ones, zstd-compressed, in packs; a
//! [`format::manifest::Manifest`] published last makes the snapshot exist.
//!
//! ```no_run
//! use pagesnap_core::{Store, InitOptions, BackupOptions, SnapshotSelector};
//! # fn main() -> pagesnap_core::Result<()> {
//! let store = Store::init("/var/backups/pagesnap", &InitOptions::default())?;
//! let report = store.backup_path("app.db".as_ref(), &BackupOptions::default())?;
//! println!("snapshot {}", report.snapshot.short());
//! let snap = store.select(&SnapshotSelector::Latest { name: None, at: None })?;
//! store.restore_to_path(&snap, "restored.db".as_ref(), false)?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! The source is grouped into wings, each owning one part of the work. A wing uses
//! only wings listed below it, never one above:
//!
//! * [`watch`](mod@watch): watching databases on a schedule (change detection,
//!   runs with a deadline, retention, prune, status, events): what
//!   `pagesnap watch` is built on, for embedding in an application.
//! * `maintenance/`: forget and prune, retention, verify, repair, copy, stats.
//! * `backup/`: capture, the chunk writer, the index a backup dedups against,
//!   `Store::backup_*`.
//! * `restore/`: what to read, rebuilding and checking the image, writing it out,
//!   salvage, `Store::restore_*`.
//! * `store/`: the [`Store`] handle and the objects it reads and writes (manifests,
//!   page maps, index objects, packs, locks).
//! * `index/`: the chunk index as data, and this machine's derived copy of it.
//! * `codec/` (a stored chunk: the one way to encode one, and to decode one and
//!   check it against its id) and `digest/` (an image's hash and check).
//! * [`format`](mod@format) (how each object is encoded) and [`backend`] (where objects live),
//!   beside the shared [`types`], [`layout`], [`progress`] and `error.rs`.
//!
//! Public paths (`pagesnap_core::capture`, `::verify`, `::lock`, …) are re-exports
//! below and do not follow the folders.

// `unsafe` is allowed only in the SQLite VFS modules (capture's, query's, and what
// they share), which must call SQLite's C API.
#![deny(unsafe_code)]

pub mod backend;
mod backup;
mod codec;
pub mod crypto;
mod digest;
mod error;
pub mod format;
mod index;
pub mod layout;
mod maintenance;
pub mod progress;
pub mod query;
mod restore;
// What the two VFS modules share; `unsafe` like them (a VFS is C callbacks).
#[allow(unsafe_code)]
mod sqlite_vfs;
mod store;
pub mod types;
pub mod watch;

/// The SQLite binding the library speaks (its `Connection`s, its errors): use
/// it rather than a `rusqlite` of your own, whose version could differ.
pub use rusqlite;

pub use backup::sketch;
pub use backup::{capture, check_label, Abandon, BackupOptions, BackupReport, WriteStats};
pub use digest::image_check;
pub use error::{Error, LockConflict, Result};
pub use maintenance::copy::{CopyOptions, CopyOutcome, CopyReport};
pub use maintenance::repair::{BrokenSnapshot, RepairIndexReport, RepairSnapshotsReport};
pub use maintenance::retag::{Retagged, TagEdit};
pub use maintenance::verify::{DataSubset, Problem, ProblemKind, VerifyOptions, VerifyReport};
pub use maintenance::{
    copy, repair, retag, retention, stats, verify, PruneOptions, PruneReport, UpgradeReport,
};
pub use progress::Progress;
pub use restore::salvage::{self, LostChunk, LostPage, PageOwner, SalvageReport};
pub use restore::RestoreReport;
pub use store::base_cache;
pub use store::cache_dirs;
pub use store::keys::{self as store_keys, AskPassphrase, KeyInfo, Passphrase};
pub use store::select::SnapshotSelector;
pub use store::{default_store_path, lock, select, DamagedSnapshot, InitOptions, Snapshot, Store};
pub use types::{ChunkId, ChunkIds, ChunkRef, Id, SnapshotId};

/// This machine's cache folder for pagesnap (hints and remote stores' metadata):
/// `$PAGESNAP_CACHE_DIR`, else `$XDG_CACHE_HOME/pagesnap`, else `~/.cache/pagesnap`.
pub fn cache_root() -> Option<std::path::PathBuf> {
    use std::path::PathBuf;
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    var("PAGESNAP_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| var("XDG_CACHE_HOME").map(|x| PathBuf::from(x).join("pagesnap")))
        .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache/pagesnap")))
}

/// Creates `dir` and its missing parents as owner-only folders (0700 whatever the
/// umask): the cache holds the store's metadata, which is as private as the store.
pub(crate) fn create_private_dirs(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Replaces the local cache file `path` with `bytes`, its folder made (owner-only)
/// if missing: written to a temporary name and renamed, so that a reader sees the
/// old file or the new one. Not fsynced: a cache file is checked or only a hint,
/// and one torn by a crash costs time, never a result.
pub(crate) fn replace_cache_file(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("a cache file needs a folder"))?;
    create_private_dirs(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// The slot of the calling thread among `slots` per-thread states: rayon's thread
/// index, the last slot for any other thread (so `slots` is the pool size + 1).
pub(crate) fn thread_slot(slots: usize) -> usize {
    rayon::current_thread_index()
        .filter(|&i| i + 1 < slots)
        .unwrap_or(slots - 1)
}

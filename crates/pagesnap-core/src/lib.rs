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

// `unsafe` is allowed only in the capture VFS, which must call SQLite's C API.
#![deny(unsafe_code)]

pub mod backend;
mod backup;
mod codec;
mod digest;
mod direct_write;
pub mod format;
mod index;
pub mod layout;
mod maintenance;
pub mod progress;
mod restore;
mod store;
pub mod types;

// format/fuzz.rs (left as it is on this branch) reaches the cache's fuzz entry
// points by the cache's old path.
use index::cache as index_cache;

pub use backup::{capture, Abandon, BackupOptions, BackupReport, WriteStats};
pub use digest::image_check;
pub use maintenance::copy::{CopyOptions, CopyOutcome, CopyReport};
pub use maintenance::repair::{BrokenSnapshot, RepairIndexReport, RepairSnapshotsReport};
pub use maintenance::verify::{DataSubset, Problem, ProblemKind, VerifyOptions, VerifyReport};
pub use maintenance::{copy, repair, retention, stats, verify, PruneOptions, PruneReport};
pub use progress::Progress;
pub use restore::salvage::{self, LostChunk, LostPage, PageOwner, SalvageReport};
pub use restore::RestoreReport;
pub use store::select::SnapshotSelector;
pub use store::{default_store_path, lock, select, DamagedSnapshot, InitOptions, Snapshot, Store};
pub use types::{ChunkId, ChunkRef, Id, SnapshotId};

use std::path::PathBuf;

/// Errors of the store layer; lower layers' errors are wrapped with the object they concern.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Backend(#[from] backend::BackendError),
    #[error("{object}: {source}")]
    Format {
        object: String,
        #[source]
        source: format::FormatError,
    },
    #[error(transparent)]
    Capture(#[from] capture::CaptureError),
    #[error("{0}: not a pagesnap store (no config object); create one with `pagesnap init`")]
    NotAStore(String),
    #[error("{0}: a pagesnap store already exists here")]
    AlreadyExists(String),
    #[error("{0}: store directory does not exist")]
    StoreMissing(String),
    #[error("{0}: is a file, not a store (a store is a directory)")]
    StoreNotADirectory(String),
    #[error("{object}: store format version {found} is newer than this pagesnap supports (up to {supported}); upgrade pagesnap to use this store")]
    NewerStore {
        /// The store's `config` object.
        object: String,
        found: u16,
        supported: u16,
    },
    #[error("no snapshot matches {0:?}")]
    UnknownSnapshot(String),
    #[error("snapshot id {prefix:?} is ambiguous: it matches {}", candidates.join(", "))]
    AmbiguousSnapshot {
        prefix: String,
        candidates: Vec<String>,
    },
    #[error("the store holds snapshots of several databases ({}): choose one with --name", names.join(", "))]
    AmbiguousName { names: Vec<String> },
    #[error("no snapshot{} at or before {at}; the earliest is from {earliest}", name.as_ref().map(|n| format!(" of {n:?}")).unwrap_or_default())]
    NoSnapshotAt {
        name: Option<String>,
        at: String,
        earliest: String,
    },
    #[error("no snapshots{} in the store", name.as_ref().map(|n| format!(" of {n:?}")).unwrap_or_default())]
    NoSnapshots { name: Option<String> },
    #[error("{0}: already exists; pass --force to overwrite it")]
    OutputExists(PathBuf),
    #[error("snapshot {}: chunk {} is not in the index (missing from the store)", snapshot.short(), chunk.to_hex())]
    ChunkMissing {
        snapshot: SnapshotId,
        chunk: ChunkId,
    },
    #[error("snapshot {}: chunk {} is in {pack}, which is missing from the store", snapshot.short(), chunk.to_hex())]
    PackMissing {
        snapshot: SnapshotId,
        chunk: ChunkId,
        pack: String,
    },
    #[error("{}chunk {} in {object} is damaged: {detail}", snapshot.map(|s| format!("snapshot {}: ", s.short())).unwrap_or_default(), chunk.to_hex())]
    ChunkDamaged {
        snapshot: Option<SnapshotId>,
        chunk: ChunkId,
        object: String,
        detail: String,
    },
    #[error("snapshot {}: the restored image's {check} {actual} does not match the recorded {expected}", snapshot.short())]
    ImageMismatch {
        snapshot: SnapshotId,
        /// Which check failed: "image check" or "blake3 hash".
        check: &'static str,
        expected: String,
        actual: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid {what}: {detail}")]
    Invalid { what: &'static str, detail: String },
    #[error("{location}: the store is locked by {holder}; {hint}")]
    Locked {
        location: String,
        holder: String,
        hint: String,
    },
    #[error("cannot copy from {from} ({from_pages} page(s) per chunk) to {to} ({to_pages} page(s) per chunk): the stores must have the same chunk size (copying does not re-chunk); create the destination with `pagesnap init --chunk-pages {from_pages}`")]
    ChunkSizeMismatch {
        from: String,
        from_pages: u32,
        to: String,
        to_pages: u32,
    },
    /// An error about a store that is one of several a command uses (copy's source).
    #[error("{store}: {source}")]
    InStore {
        store: String,
        #[source]
        source: Box<Error>,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// True when the error is damage: bytes that were read and found wrong, or an
    /// object that is gone. False when the bytes could not be judged (a permission,
    /// I/O or network error, an object of a newer format): `verify` then reports
    /// "could not check", and `repair` never deletes on its account.
    pub fn is_damage(&self) -> bool {
        match self {
            Error::Backend(b) => b.is_damage(),
            Error::Format { source, .. } => {
                !matches!(source, format::FormatError::UnsupportedVersion { .. })
            }
            Error::ChunkMissing { .. }
            | Error::PackMissing { .. }
            | Error::ChunkDamaged { .. }
            | Error::ImageMismatch { .. } => true,
            Error::InStore { source, .. } => source.is_damage(),
            _ => false,
        }
    }
}

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

/// The slot of the calling thread among `slots` per-thread states: rayon's thread
/// index, the last slot for any other thread (so `slots` is the pool size + 1).
pub(crate) fn thread_slot(slots: usize) -> usize {
    rayon::current_thread_index()
        .filter(|&i| i + 1 < slots)
        .unwrap_or(slots - 1)
}

//! The crate's error type: every wing's failures, each with the object it concerns.

use crate::{backend, capture, format, retention, ChunkId, SnapshotId};
use chrono::{DateTime, Utc};
use std::path::PathBuf;
use std::time::Duration;

/// Errors of the store layer; lower layers' errors are wrapped with the object they concern.
///
/// Messages say what is wrong in the library's terms; the data needed to act is in
/// the variants' fields. A program using the library (the `pagesnap` binary) adds
/// its own remedies ("pass --force …") from those fields. New variants may be added
/// in any release, hence `#[non_exhaustive]`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    /// The location has no `config` object.
    #[error("{0}: not a pagesnap store (no config object)")]
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
    /// A selector that is neither `latest` nor a hexadecimal id prefix.
    #[error("invalid snapshot id: {0:?} is not a hexadecimal snapshot id (or `latest`)")]
    BadSnapshotId(String),
    /// Forgetting these snapshots would leave a database with none (the caller
    /// did not allow it).
    #[error("invalid forget: this would remove every snapshot of {name:?}")]
    WouldForgetAll { name: String },
    /// A retag of several snapshots failed part way: the snapshots in `done`
    /// (old id, new id) were retagged before `source` stopped it; the others
    /// were not touched (the one being retagged may exist under both ids).
    #[error("retagging stopped after {} snapshot(s) ({}): {source}", done.len(), done.iter().map(|(o, n)| format!("{} is now {}", o.short(), n.short())).collect::<Vec<_>>().join(", "))]
    RetagIncomplete {
        done: Vec<(SnapshotId, SnapshotId)>,
        #[source]
        source: Box<Error>,
    },
    /// A snapshot time no manifest can hold (a leap second).
    #[error("invalid snapshot time: {time:?}: {source}")]
    BadSnapshotTime {
        time: DateTime<Utc>,
        #[source]
        source: format::FormatError,
    },
    /// Store parameters (`InitOptions`) outside what the format allows; the
    /// source says which one and what is allowed.
    #[error("invalid store parameters: {0}")]
    BadStoreParameters(#[source] format::FormatError),
    #[error("invalid retention policy: {0}")]
    BadPolicy(#[from] retention::PolicyError),
    #[error("snapshot id {prefix:?} is ambiguous: it matches {}", candidates.join(", "))]
    AmbiguousSnapshot {
        prefix: String,
        candidates: Vec<String>,
    },
    /// A selection without a database name, in a store that holds several.
    #[error("the store holds snapshots of several databases ({})", names.join(", "))]
    AmbiguousName { names: Vec<String> },
    #[error("no snapshot{} at or before {at}; the earliest is from {earliest}", name.as_ref().map(|n| format!(" of {n:?}")).unwrap_or_default())]
    NoSnapshotAt {
        name: Option<String>,
        at: String,
        earliest: String,
    },
    #[error("no snapshots{} in the store", name.as_ref().map(|n| format!(" of {n:?}")).unwrap_or_default())]
    NoSnapshots { name: Option<String> },
    /// A restore's output exists and overwriting it was not asked for.
    #[error("{0}: already exists")]
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
    /// A page map names chunks through an index object that is damaged or
    /// missing: the snapshots using the map cannot be restored.
    #[error("{map}: names chunks through {index}, but {why}; the snapshots using this map cannot be restored")]
    IndexUnusable {
        map: String,
        index: String,
        /// "it is damaged (…)" or "it is missing from the store".
        why: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid {what}: {detail}")]
    Invalid { what: &'static str, detail: String },
    /// Another lock stands in the way of the one asked for.
    #[error("{location}: the store is locked by {holder}{conflict}")]
    Locked {
        location: String,
        /// The other lock, described ("a shared lock of `backup` …").
        holder: String,
        /// Why the lock was not granted; [`LockConflict::Stale`] and
        /// [`LockConflict::Unreadable`] locks stay until removed (`store::unlock`).
        conflict: LockConflict,
    },
    #[error("cannot copy from {from} ({from_pages} page(s) per chunk) to {to} ({to_pages} page(s) per chunk): the stores must have the same chunk size (copying does not re-chunk)")]
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
    /// The store is encrypted and was opened without a way to ask for its
    /// passphrase.
    #[error("{0}: the store is encrypted; its passphrase is needed")]
    Encrypted(String),
    /// No key file of the store opens with the passphrase given.
    #[error("{0}: wrong passphrase (no key of this store opens with it)")]
    WrongPassphrase(String),
    /// The passphrase could not be had (its file, its command, the terminal).
    #[error("cannot read the passphrase: {0}")]
    Passphrase(String),
    /// A key operation refused (the last read key, an unknown key, a
    /// write-only key asked to read).
    #[error("{location}: {detail}")]
    KeyRefused { location: String, detail: String },
    #[error("internal error: {0}")]
    Internal(String),
}

/// Why a store lock was not granted (see [`Error::Locked`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LockConflict {
    /// The other lock object cannot be decoded; it never goes away by itself.
    Unreadable,
    /// The other lock's process is gone; it never goes away by itself.
    Stale,
    /// An exclusive lock was asked for and another lock is held: exclusive
    /// requests do not wait.
    Exclusive,
    /// A live exclusive lock was still held after waiting this long.
    Waited(Duration),
}

impl LockConflict {
    /// True when the other lock outlived its owner (or cannot be read): waiting
    /// does not help, only removing it does.
    pub fn is_stale(self) -> bool {
        matches!(self, LockConflict::Unreadable | LockConflict::Stale)
    }
}

/// Written after the holder in [`Error::Locked`]'s message.
impl std::fmt::Display for LockConflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockConflict::Unreadable => Ok(()),
            LockConflict::Stale => f.write_str("; its process is gone"),
            LockConflict::Exclusive => f.write_str("; wait until it ends, then try again"),
            LockConflict::Waited(d) => write!(f, "; gave up after waiting {d:?}"),
        }
    }
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
            | Error::IndexUnusable { .. }
            | Error::ImageMismatch { .. } => true,
            Error::InStore { source, .. } => source.is_damage(),
            _ => false,
        }
    }
}

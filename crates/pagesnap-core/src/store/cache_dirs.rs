//! This machine's cache folders, one per store, listed and cleaned up.
//!
//! The cache directory ([`crate::cache_root`]) holds two kinds of folder:
//!
//! * `<store id>/` (64 hex digits): head hints (`heads/`, see `head_hint.rs`),
//!   the derived index (`index/`, see `index/cache/`) of any store, local or
//!   remote, the base cache (`bases/`, see `base_cache.rs`) of a remote store
//!   with deltas, a local store's sketches (`sketches/`, see
//!   `backup/sketch/`), the fingerprints of each database's newest
//!   snapshot with this machine's secret for them (`prints/`, see
//!   `backup/prints/`), and an S3 store's record of its listing (`listing`,
//!   see `store/listing.rs`);
//! * `stores/<blake3(url and endpoint)>/` (32 hex digits): a remote store's
//!   metadata (`backend/cache.rs`).
//!
//! A folder cannot say by its name which store it belongs to, so each records it
//! when first used: a `store` file holding the store's location (an absolute
//! path, or the `s3://` URL) on one line. Its modification time is refreshed on
//! each use, so the newest file of a folder is its last use.
//!
//! A folder is removable ([`cleanup_caches`]) when its local store is gone (the
//! directory has no `config`), when that directory now holds another store (the
//! store was deleted and a new one made there), or when it has not been used for
//! [`UNUSED_DAYS`]: the only test for a remote store's folder (whether a bucket
//! still holds the store cannot be known without the network) and for folders
//! made before the `store` file existed. Removing a cache changes no result:
//! everything in it is derived from the store and is rebuilt when needed.

use crate::format::config::StoreConfig;
use crate::types::Id;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The file in each cache folder naming its store.
pub const MARKER: &str = "store";

/// A folder unused for this many days is removed by [`cleanup_caches`] unless
/// its store is a local one that still exists.
pub const UNUSED_DAYS: u64 = 30;

/// Where remote stores' metadata caches live, under the cache directory.
const REMOTE: &str = "stores";

#[derive(Debug, thiserror::Error)]
pub enum CacheDirsError {
    #[error("cache directory {path}: cannot read it: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cache folder {path}: cannot remove it: {source}")]
    Remove {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// What a cache folder holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheKind {
    /// `<store id>/`: head hints and the derived index of one store.
    Store,
    /// `stores/<hash>/`: a remote store's cached metadata objects.
    RemoteMetadata,
}

impl CacheKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheKind::Store => "store",
            CacheKind::RemoteMetadata => "remote_metadata",
        }
    }
}

/// What is known of a cache folder's store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreState {
    /// A local store that exists (with the folder's store id, where it has one).
    Present,
    /// A local store whose directory or `config` is gone.
    Missing,
    /// The local directory holds another store now (another store id).
    Replaced,
    /// A remote store: not checked (that would need the network).
    Remote,
    /// The folder does not say which store it belongs to (made by an older
    /// pagesnap, before the `store` file).
    Unrecorded,
    /// The local store could not be checked (its directory or `config` is
    /// unreadable, or the `config` does not decode): kept, never judged.
    Unchecked,
}

impl StoreState {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreState::Present => "present",
            StoreState::Missing => "missing",
            StoreState::Replaced => "replaced",
            StoreState::Remote => "remote",
            StoreState::Unrecorded => "unrecorded",
            StoreState::Unchecked => "unchecked",
        }
    }
}

/// One cache folder.
#[derive(Debug, Clone)]
pub struct CacheFolder {
    pub path: PathBuf,
    pub kind: CacheKind,
    /// The store's location, as recorded in the folder's `store` file.
    pub store: Option<String>,
    pub state: StoreState,
    /// Bytes of the files in it.
    pub bytes: u64,
    /// Modification time of its newest file or folder.
    pub last_used: Option<SystemTime>,
}

/// Why [`cleanup_caches`] removes a folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveReason {
    StoreMissing,
    StoreReplaced,
    /// Not used for at least [`UNUSED_DAYS`] (and not the cache of a local store
    /// known to exist).
    Unused,
}

impl RemoveReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RemoveReason::StoreMissing => "store_missing",
            RemoveReason::StoreReplaced => "store_replaced",
            RemoveReason::Unused => "unused",
        }
    }
}

impl CacheFolder {
    /// Whether (and why) cleanup at time `now` removes this folder.
    pub fn removable(&self, now: SystemTime) -> Option<RemoveReason> {
        match self.state {
            StoreState::Missing => return Some(RemoveReason::StoreMissing),
            StoreState::Replaced => return Some(RemoveReason::StoreReplaced),
            // A live local store's cache is what makes its backups fast.
            StoreState::Present => return None,
            StoreState::Remote | StoreState::Unrecorded | StoreState::Unchecked => {}
        }
        let limit = Duration::from_secs(UNUSED_DAYS * 86_400);
        // No time at all (an empty, unreadable folder): judged by age alone is
        // impossible, and such a folder holds nothing worth keeping.
        let idle = match self.last_used {
            Some(t) => now.duration_since(t).unwrap_or_default(),
            None => limit,
        };
        (idle >= limit && self.state != StoreState::Unchecked).then_some(RemoveReason::Unused)
    }
}

/// What [`cleanup_caches`] did.
#[derive(Debug, Default)]
pub struct CleanupReport {
    /// Removed (or, on a dry run, to be removed).
    pub removed: Vec<(CacheFolder, RemoveReason)>,
    pub kept: Vec<CacheFolder>,
    /// Folders that could not be removed, with the error.
    pub failed: Vec<(CacheFolder, CacheDirsError)>,
}

impl CleanupReport {
    pub fn freed_bytes(&self) -> u64 {
        self.removed.iter().map(|(f, _)| f.bytes).sum()
    }
}

/// Every cache folder under `root` (the cache directory), oldest use first. A
/// missing `root` has none.
pub fn list_caches(root: &Path) -> Result<Vec<CacheFolder>, CacheDirsError> {
    let mut out = Vec::new();
    for (dir, kind) in [
        (root.to_path_buf(), CacheKind::Store),
        (root.join(REMOTE), CacheKind::RemoteMetadata),
    ] {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(CacheDirsError::Read {
                    path: dir.display().to_string(),
                    source,
                })
            }
        };
        let hex_len = match kind {
            CacheKind::Store => 64,
            CacheKind::RemoteMetadata => 32,
        };
        for ent in entries.flatten() {
            let name = ent.file_name();
            let Some(name) = name.to_str() else { continue };
            // Only pagesnap's own folders: anything else here is not ours to judge.
            let ours = name.len() == hex_len
                && name
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            // Not followed: a link in the cache is not a cache folder.
            let is_dir = ent.file_type().is_ok_and(|t| t.is_dir());
            if ours && is_dir {
                out.push(inspect(ent.path(), kind, name));
            }
        }
    }
    out.sort_by_key(|f| f.last_used);
    Ok(out)
}

/// Removes the folders [`CacheFolder::removable`] at `now` (with `dry_run`,
/// only says which). A folder that cannot be removed is reported, the others
/// are still removed.
pub fn cleanup_caches(
    root: &Path,
    now: SystemTime,
    dry_run: bool,
) -> Result<CleanupReport, CacheDirsError> {
    let mut report = CleanupReport::default();
    for folder in list_caches(root)? {
        match folder.removable(now) {
            None => report.kept.push(folder),
            Some(reason) => {
                if dry_run {
                    report.removed.push((folder, reason));
                    continue;
                }
                match std::fs::remove_dir_all(&folder.path) {
                    Ok(()) => report.removed.push((folder, reason)),
                    Err(source) if source.kind() == std::io::ErrorKind::NotFound => {
                        report.removed.push((folder, reason))
                    }
                    Err(source) => {
                        let path = folder.path.display().to_string();
                        report
                            .failed
                            .push((folder, CacheDirsError::Remove { path, source }));
                    }
                }
            }
        }
    }
    Ok(report)
}

/// Removes the cache folder of store `store_id` under `root` (head hints and
/// derived index), if there is one: for a process that made throwaway stores
/// (a benchmark). Returns whether there was one.
pub fn remove_store_cache(root: &Path, store_id: &Id) -> Result<bool, CacheDirsError> {
    let dir = root.join(store_id.to_hex());
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(CacheDirsError::Remove {
            path: dir.display().to_string(),
            source,
        }),
    }
}

/// Records in `dir` (created if missing) that it is the cache of the store at
/// `location`, and that it is in use now. Best effort: a cache that cannot be
/// marked only costs cleanup its certainty (and is removed once unused).
pub(crate) fn mark(dir: &Path, location: &str) {
    let path = dir.join(MARKER);
    let line = format!("{location}\n");
    if std::fs::read_to_string(&path).is_ok_and(|s| s == line) {
        // Refreshes the time of last use.
        if let Ok(f) = std::fs::File::options().write(true).open(&path) {
            let _ = f.set_modified(SystemTime::now());
        }
        return;
    }
    let _ = crate::replace_cache_file(&path, line.as_bytes());
}

/// The location to record for a store at `location` (a backend's location): an
/// absolute path for a local store, so that cleanup can find it from anywhere.
pub(crate) fn recorded_location(location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    std::path::absolute(location)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| location.to_string())
}

/// Marks the folder of store `store_id` (see [`mark`]).
pub(crate) fn mark_store(store_id: &Id, location: &str) {
    if let Some(root) = crate::cache_root() {
        mark(&root.join(store_id.to_hex()), &recorded_location(location));
    }
}

fn inspect(path: PathBuf, kind: CacheKind, name: &str) -> CacheFolder {
    let store = std::fs::read_to_string(path.join(MARKER))
        .ok()
        .map(|s| s.trim_end_matches('\n').to_string())
        .filter(|s| !s.is_empty());
    let state = match &store {
        None => StoreState::Unrecorded,
        Some(loc) if loc.contains("://") => StoreState::Remote,
        Some(loc) => local_state(Path::new(loc), kind, name),
    };
    let (bytes, last_used) = walk(&path);
    CacheFolder {
        path,
        kind,
        store,
        state,
        bytes,
        last_used,
    }
}

/// Whether the local store at `loc` still exists, and (for a `<store id>/`
/// folder named `name`) is still the same store.
fn local_state(loc: &Path, kind: CacheKind, name: &str) -> StoreState {
    let bytes = match std::fs::read(loc.join(crate::layout::CONFIG)) {
        Ok(b) => b,
        // The directory, or the store in it, is gone. (A path through a missing
        // mount point reads the same: its cache is only an accelerator.)
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return StoreState::Missing
        }
        Err(_) => return StoreState::Unchecked,
    };
    if kind == CacheKind::RemoteMetadata {
        return StoreState::Present;
    }
    match StoreConfig::decode(&bytes) {
        Ok(c) if c.store_id.to_hex() == name => StoreState::Present,
        Ok(_) => StoreState::Replaced,
        Err(_) => StoreState::Unchecked,
    }
}

/// Total bytes of the files under `dir` and the newest modification time, links
/// not followed; unreadable parts are skipped (sizes are for a person to read).
fn walk(dir: &Path) -> (u64, Option<SystemTime>) {
    let mut bytes = 0;
    let mut newest = std::fs::symlink_metadata(dir)
        .and_then(|m| m.modified())
        .ok();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for ent in entries.flatten() {
            let Ok(meta) = ent.metadata() else { continue };
            if let Ok(t) = meta.modified() {
                newest = newest.max(Some(t));
            }
            if meta.is_dir() {
                stack.push(ent.path());
            } else if meta.is_file() {
                bytes += meta.len();
            }
        }
    }
    (bytes, newest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(state: StoreState, age_days: u64, now: SystemTime) -> CacheFolder {
        CacheFolder {
            path: PathBuf::from("/x"),
            kind: CacheKind::Store,
            store: None,
            state,
            bytes: 0,
            last_used: Some(now - Duration::from_secs(age_days * 86_400)),
        }
    }

    #[test]
    fn removable_by_state_and_age() {
        let now = SystemTime::now();
        let old = UNUSED_DAYS + 1;
        assert_eq!(
            folder(StoreState::Missing, 0, now).removable(now),
            Some(RemoveReason::StoreMissing)
        );
        assert_eq!(
            folder(StoreState::Replaced, 0, now).removable(now),
            Some(RemoveReason::StoreReplaced)
        );
        assert_eq!(folder(StoreState::Present, old, now).removable(now), None);
        assert_eq!(folder(StoreState::Remote, 1, now).removable(now), None);
        assert_eq!(
            folder(StoreState::Remote, old, now).removable(now),
            Some(RemoveReason::Unused)
        );
        assert_eq!(folder(StoreState::Unrecorded, 1, now).removable(now), None);
        assert_eq!(
            folder(StoreState::Unrecorded, old, now).removable(now),
            Some(RemoveReason::Unused)
        );
        assert_eq!(folder(StoreState::Unchecked, old, now).removable(now), None);
    }

    #[test]
    fn lists_only_pagesnap_folders_with_their_store() {
        let root = tempfile::tempdir().unwrap();
        let id = Id([9; 32]);
        let store_dir = root.path().join(id.to_hex());
        mark(&store_dir, "/nowhere/at/all");
        std::fs::create_dir_all(store_dir.join("heads")).unwrap();
        std::fs::write(store_dir.join("heads/x"), b"0123").unwrap();
        // The base cache is part of the store's folder: counted, and removed with it.
        std::fs::create_dir_all(store_dir.join("bases")).unwrap();
        std::fs::write(store_dir.join("bases").join("ab".repeat(32)), b"56").unwrap();
        let remote = root.path().join(REMOTE).join("ab".repeat(16));
        mark(&remote, "s3://bucket/prefix");
        // Not ours: left alone whatever its age.
        std::fs::create_dir_all(root.path().join("something-else")).unwrap();
        let list = list_caches(root.path()).unwrap();
        assert_eq!(list.len(), 2, "{list:?}");
        let local = list.iter().find(|f| f.kind == CacheKind::Store).unwrap();
        assert_eq!(local.store.as_deref(), Some("/nowhere/at/all"));
        assert_eq!(local.state, StoreState::Missing);
        assert_eq!(local.bytes, 4 + 2 + "/nowhere/at/all\n".len() as u64);
        let r = list
            .iter()
            .find(|f| f.kind == CacheKind::RemoteMetadata)
            .unwrap();
        assert_eq!(r.state, StoreState::Remote);

        let report = cleanup_caches(root.path(), SystemTime::now(), false).unwrap();
        assert_eq!(report.removed.len(), 1);
        assert!(!store_dir.exists());
        assert!(remote.exists());
        assert!(root.path().join("something-else").exists());
        assert!(!remove_store_cache(root.path(), &id).unwrap());
    }
}

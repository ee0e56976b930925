//! This machine's memory of the newest snapshot of each database in a store, so
//! that a backup finds its parent without reading every manifest (a store with a
//! month of 10-minute snapshots holds thousands).
//!
//! A hint, never the truth: the snapshot it names is loaded and checked (its
//! manifest is verified against its id, and must be of the same database), and a
//! missing, stale or unreadable hint falls back to reading the manifests. A parent
//! older than the newest snapshot (another machine backed the database up since)
//! only makes the page-map delta larger, never wrong.
//!
//! The hints live in `$PAGESNAP_CACHE_DIR`, else `$XDG_CACHE_HOME/pagesnap`, else
//! `~/.cache/pagesnap`, under the store's id: `<store id>/heads/<blake3(name)>`,
//! each holding a snapshot id in hex. Failing to write one is not an error.

use crate::types::{Id, SnapshotId};
use std::path::PathBuf;

fn path(store: &Id, name: &str) -> Option<PathBuf> {
    Some(
        crate::cache_root()?
            .join(store.to_hex())
            .join("heads")
            .join(Id::of_object(name.as_bytes()).to_hex()),
    )
}

/// The snapshot this machine last recorded for database `name`, if any.
pub(crate) fn read(store: &Id, name: &str) -> Option<SnapshotId> {
    let text = std::fs::read_to_string(path(store, name)?).ok()?;
    Id::from_hex(text.trim())
}

/// Records `id` as the newest snapshot of `name` (best effort).
pub(crate) fn write(store: &Id, name: &str, id: &SnapshotId) {
    if let Some(p) = path(store, name) {
        let _ = crate::replace_cache_file(&p, id.to_hex().as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_round_trip_per_store_and_name() {
        let dir = tempfile::tempdir().unwrap();
        std::env::set_var("PAGESNAP_CACHE_DIR", dir.path());
        let (s1, s2) = (Id([1; 32]), Id([2; 32]));
        let snap = Id([7; 32]);
        assert_eq!(read(&s1, "app"), None);
        write(&s1, "app", &snap);
        assert_eq!(read(&s1, "app"), Some(snap));
        assert_eq!(read(&s2, "app"), None, "hints are per store");
        assert_eq!(read(&s1, "other"), None, "and per database");
        std::fs::write(path(&s1, "app").unwrap(), "garbage").unwrap();
        assert_eq!(read(&s1, "app"), None, "a damaged hint is no hint");
    }
}

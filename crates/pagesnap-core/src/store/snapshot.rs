//! Snapshots as the store holds them: a manifest read and checked against its id,
//! the list of every snapshot (and the manifests that could not be read), choosing
//! one, and publishing a new manifest (the moment a snapshot starts to exist).

use super::select::{self, SnapshotSelector};
use super::{head_hint, Store};
use crate::backend::{BackendError, PutMode};
use crate::format::manifest::Manifest;
use crate::types::{Id, SnapshotId};
use crate::{layout, Error, Result};
use chrono::{DateTime, TimeZone, Utc};

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

impl Store {
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
            self.mark_cache();
            head_hint::write(&self.config.store_id, &manifest.name, &id);
        }
        Ok((id, encoded.len() as u64))
    }
}

//! Changing a snapshot's tags after the fact.
//!
//! A snapshot's id is the hash of its manifest, so new tags mean a new manifest
//! and a new id. Nothing else in the store names a snapshot by id in a way that
//! matters: page maps refer to page maps (the skip-delta reference) and to index
//! objects, never to snapshots; a manifest's `parent` is informative only (a
//! backup finds its parent by name, through the head hint or the manifests);
//! the head hint is a hint, checked and falling back to the manifests; copy
//! recognises a snapshot by database name, time and image hash, which a retag
//! keeps. The new manifest differs from the old one in its tags only: same page
//! map, same image hash and check, same time, so it restores byte-identically.
//!
//! Crash safety: the new manifest is published first (through the backup's
//! publish path, which reads it back before writing), the old one is deleted
//! after. A crash between leaves both: two snapshots of the same time and
//! content, one with the old tags, one with the new. Running the same retag
//! again (on the old id) computes the same new manifest, hence the same id,
//! rewrites it with the same bytes and deletes the old one: it converges.
//!
//! The lock is forget's shared one: backups go on meanwhile, a prune (which
//! must see every manifest) waits. Two retags of the same snapshot at the same
//! moment are not kept apart by it; each publishes its own manifest, so the
//! snapshot may then be listed twice with different tags (forget one by id).

use crate::format::manifest::Manifest;
use crate::store::head_hint;
use crate::types::SnapshotId;
use crate::{check_label, layout, Error, Result, Store};
use std::time::Duration;

/// How to change the tags: `set` replaces them (when given), then `add` appends
/// the tags not there yet, then `remove` takes tags out. Order is kept and
/// duplicates are dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TagEdit {
    pub set: Option<Vec<String>>,
    pub add: Vec<String>,
    pub remove: Vec<String>,
}

impl TagEdit {
    /// The tags after the edit of `tags`.
    pub fn apply(&self, tags: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let start = self.set.as_deref().unwrap_or(tags);
        for t in start.iter().chain(&self.add) {
            if !out.contains(t) && !self.remove.contains(t) {
                out.push(t.clone());
            }
        }
        out
    }

    /// Every tag the edit would write must be one a backup accepts.
    fn validate(&self) -> Result<()> {
        let set = self.set.iter().flatten();
        for t in set.chain(&self.add) {
            check_label("tag", t)?;
        }
        Ok(())
    }
}

/// What a retag did to one snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retagged {
    /// The snapshot's id before.
    pub old: SnapshotId,
    /// Its id now (the same when the tags did not change).
    pub new: SnapshotId,
    /// The database.
    pub name: String,
    pub old_tags: Vec<String>,
    pub tags: Vec<String>,
}

impl Retagged {
    pub fn changed(&self) -> bool {
        self.old != self.new
    }
}

impl Store {
    /// Applies `edit` to the tags of the snapshots `ids` (each once), under the
    /// shared lock a forget takes. Every snapshot is read and every new manifest
    /// built before anything is written: an unknown id or a bad tag changes
    /// nothing. A snapshot whose tags do not change keeps its manifest and id.
    pub fn retag(&self, ids: &[SnapshotId], edit: &TagEdit) -> Result<Vec<Retagged>> {
        self.check_may_delete("retag snapshots")?;
        edit.validate()?;
        let _lock = self.lock(false, "tag", Duration::from_secs(600))?;
        let mut plan: Vec<(Retagged, Option<Manifest>)> = Vec::new();
        for id in ids {
            if plan.iter().any(|(r, _)| r.old == *id) {
                continue;
            }
            let snap = match self.load_snapshot(id) {
                Ok(s) => s,
                Err(Error::Backend(crate::backend::BackendError::NotFound { .. })) => {
                    return Err(Error::UnknownSnapshot(id.to_hex()))
                }
                Err(e) => return Err(e),
            };
            let tags = edit.apply(&snap.manifest.tags);
            let mut r = Retagged {
                old: *id,
                new: *id,
                name: snap.manifest.name.clone(),
                old_tags: snap.manifest.tags.clone(),
                tags: tags.clone(),
            };
            let manifest = if tags != snap.manifest.tags {
                Some(Manifest {
                    tags,
                    ..snap.manifest
                })
            } else {
                None
            };
            if let Some(m) = &manifest {
                r.new = crate::types::Id::of_object(&m.encode());
            }
            plan.push((r, manifest));
        }
        let mut done = Vec::new();
        for (r, manifest) in plan {
            if let Some(m) = manifest {
                if let Err(e) = self.replace_manifest(&r, &m) {
                    return Err(if done.iter().any(Retagged::changed) {
                        Error::RetagIncomplete {
                            done: done
                                .iter()
                                .filter(|d: &&Retagged| d.changed())
                                .map(|d| (d.old, d.new))
                                .collect(),
                            source: Box::new(e),
                        }
                    } else {
                        e
                    });
                }
            }
            done.push(r);
        }
        Ok(done)
    }

    /// Publishes `m` (the new manifest of `r.old`), then deletes the old one.
    fn replace_manifest(&self, r: &Retagged, m: &Manifest) -> Result<()> {
        // This machine's hint of the newest snapshot follows the snapshot it named.
        let hinted = head_hint::read(&self.config().store_id, &r.name) == Some(r.old);
        let (id, _) = self.publish(m, hinted)?;
        if id != r.new {
            return Err(Error::Internal(
                "a retagged manifest's id changed between planning and publishing".into(),
            ));
        }
        self.backend().delete(&layout::snapshot(&r.old))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn edits_set_then_add_then_remove_without_duplicates() {
        let old = v(&["a", "b"]);
        let add = TagEdit {
            add: v(&["b", "c", "c"]),
            ..Default::default()
        };
        assert_eq!(add.apply(&old), v(&["a", "b", "c"]));
        let remove = TagEdit {
            remove: v(&["a", "x"]),
            ..Default::default()
        };
        assert_eq!(remove.apply(&old), v(&["b"]));
        let set = TagEdit {
            set: Some(v(&["z", "z"])),
            ..Default::default()
        };
        assert_eq!(set.apply(&old), v(&["z"]));
        let clear = TagEdit {
            set: Some(vec![]),
            ..Default::default()
        };
        assert!(clear.apply(&old).is_empty());
        assert_eq!(TagEdit::default().apply(&old), old);
    }

    #[test]
    fn a_tag_a_backup_would_refuse_is_refused() {
        for bad in ["", "a/b", "x\ny"] {
            let e = TagEdit {
                add: v(&[bad]),
                ..Default::default()
            };
            assert!(matches!(
                e.validate(),
                Err(Error::Invalid { what: "tag", .. })
            ));
        }
    }
}

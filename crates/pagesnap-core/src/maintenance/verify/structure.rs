//! The structural checks of `verify`: index objects against the packs they name,
//! page-map chains resolved (each map read once), every referenced chunk located.

use super::{detail, PackMeta, Verifier};
use crate::backend::BackendError;
use crate::format::index::IndexBody;
use crate::format::pagemap::{reference_seq, PageMap};
use crate::store::{check_lists_named, Snapshot};
use crate::types::{ChunkId, ChunkRef, Id, SnapshotId};
use crate::{layout, Error};
use std::collections::{HashMap, HashSet};

impl Verifier<'_> {
    /// An index object must agree with the packs it names: each exists, has the
    /// recorded length and dictionary, and holds each chunk where the index says.
    pub(super) fn check_index_against_packs(
        &mut self,
        key: &str,
        body: &IndexBody,
        sizes: &HashMap<String, u64>,
        metas: &HashMap<Id, PackMeta>,
    ) {
        for p in &body.packs {
            let pkey = layout::pack(&p.id);
            match sizes.get(&pkey) {
                // Normal after a prune rewrote the pack: the index object is kept for
                // the names page maps use, and the chunks are located in the new pack.
                // A referenced chunk located nowhere is reported by `check_located`.
                None => {}
                Some(&len) if len != p.len => {
                    let i = self.problems.add(
                        pkey,
                        format!(
                            "is {len} bytes, {key} says {} (truncated or damaged)",
                            p.len
                        ),
                    );
                    self.bad_packs.insert(p.id, i);
                }
                Some(_) => {
                    let Some(meta) = metas.get(&p.id) else {
                        continue;
                    };
                    let want = p.dict.map(|d| {
                        let mut a = [0u8; 16];
                        a.copy_from_slice(&d.0[..16]);
                        a
                    });
                    if meta.dict_prefix != want {
                        self.problems.add(
                            key.to_string(),
                            format!(
                                "names a different dictionary for {pkey} than the pack's header"
                            ),
                        );
                    }
                }
            }
        }
        for e in &body.entries {
            let Some(p) = body.packs.get(e.pack as usize) else {
                continue; // decode bounds pack positions
            };
            let Some(meta) = metas.get(&p.id) else {
                continue;
            };
            if meta.entries.get(&e.entry.id) != Some(&e.entry) {
                self.problems.add(
                    key.to_string(),
                    format!(
                        "places chunk {} in {} where the pack's trailer does not",
                        e.entry.id.to_hex(),
                        layout::pack(&p.id)
                    ),
                );
                return;
            }
        }
    }

    /// Every dictionary an index object's packs need must be in the store (a
    /// restore of their chunks needs it); one that is missing is damage.
    pub(super) fn check_dicts_present(&mut self, body: &IndexBody, present: &HashSet<Id>) {
        for p in &body.packs {
            let Some(d) = p.dict else { continue };
            if present.contains(&d) || self.bad_dicts.contains_key(&d) {
                continue;
            }
            let detail = format!(
                "missing from the store ({} needs it to decode its chunks)",
                layout::pack(&p.id)
            );
            let i = self.problems.add(layout::dict(&d), detail);
            self.bad_dicts.insert(d, i);
        }
    }

    /// Charges `problem` with `snap`: the snapshot is broken when the problem is
    /// damage, and only unchecked when its object could not be read.
    pub(super) fn breaks(&mut self, problem: usize, snap: SnapshotId) {
        self.problems.affects(problem, snap);
        if self.problems.is_damage(problem) {
            self.broken.insert(snap);
        }
    }

    /// A map, read once per run; a map that cannot be read becomes a problem.
    pub(super) fn map(&mut self, id: &Id) -> std::result::Result<&PageMap, usize> {
        if !self.maps.contains_key(id) {
            let m = self.store.load_map(id).map_err(|e| {
                let key = layout::map(id);
                match e {
                    Error::Backend(BackendError::NotFound { .. }) => {
                        self.problems.add(key, "missing from the store".to_string())
                    }
                    e => self.problems.add_error(key, &e),
                }
            });
            self.maps.insert(*id, m);
        }
        match &self.maps[id] {
            Ok(m) => Ok(m),
            Err(i) => Err(*i),
        }
    }

    /// The chunk list of a snapshot; on failure records the problem and returns None.
    pub(super) fn resolve(&mut self, s: &Snapshot) -> Option<Vec<ChunkRef>> {
        match self.try_resolve(s) {
            Ok(l) => Some(l),
            Err(i) => {
                self.breaks(i, s.id);
                None
            }
        }
    }

    pub(super) fn try_resolve(
        &mut self,
        s: &Snapshot,
    ) -> std::result::Result<Vec<ChunkRef>, usize> {
        // The chain down to a full map or a list already resolved.
        let mut chain: Vec<Id> = Vec::new();
        let mut next = Some(s.manifest.map);
        let mut child_seq: Option<u64> = None;
        while let Some(mid) = next {
            if self.lists.contains_key(&mid) {
                break;
            }
            let m = self.map(&mid)?;
            if let Some(cs) = child_seq {
                if m.seq != reference_seq(cs) {
                    let detail = format!(
                        "page map has sequence number {} where {} was expected",
                        m.seq,
                        reference_seq(cs)
                    );
                    return Err(self.problems.add(layout::map(&mid), detail));
                }
            }
            if chain.len() > 64 {
                let detail = "page-map chain is longer than any valid one (a loop?)".into();
                return Err(self.problems.add(layout::map(&mid), detail));
            }
            child_seq = Some(m.seq);
            next = m.reference;
            chain.push(mid);
        }
        let mut list = match next {
            Some(cached) => self.lists[&cached].clone(),
            None => Vec::new(),
        };
        if self.lists.len() > 32 {
            self.lists.clear();
        }
        for mid in chain.iter().rev() {
            // Loaded (and found readable) by the walk above.
            let Some(Ok(m)) = self.maps.get(mid) else {
                let detail = "page map was not loaded".to_string();
                return Err(self.problems.add(layout::map(mid), detail));
            };
            if let Err(e) = check_lists_named(&self.index, mid, m) {
                let named = m.lists.iter().chain(m.new_list.iter()).copied();
                // Charge the index object when it is the one at fault.
                let culprit = named
                    .into_iter()
                    .find(|l| !self.index.has_list(l))
                    .map(|l| layout::index(&l));
                let i = match culprit.and_then(|k| self.problems.find(&k).map(|i| (k, i))) {
                    Some((_, i)) => i,
                    None => self.problems.add(layout::map(mid), detail(&e)),
                };
                return Err(i);
            }
            let applied = m.apply(&list, |l, o| self.index.lookup(l, o));
            list = match applied {
                Ok(l) => l,
                Err(e) => return Err(self.problems.add(layout::map(mid), e.to_string())),
            };
            self.lists.insert(*mid, list.clone());
        }
        if list.len() as u64 != s.manifest.chunk_count {
            let detail = format!(
                "its page map has {} chunks, the manifest says {}",
                list.len(),
                s.manifest.chunk_count
            );
            return Err(self.problems.add(layout::snapshot(&s.id), detail));
        }
        Ok(list)
    }

    /// A referenced chunk must be located in a pack that is present and sound,
    /// with the dictionary the pack needs.
    pub(super) fn check_located(&mut self, snap: SnapshotId, id: &ChunkId) {
        match self.index.get(id) {
            Some(loc) => {
                let pack = self.index.pack_id(loc.pack);
                if let Some(&i) = self.bad_packs.get(&pack) {
                    self.problems.affects(i, snap);
                }
                let dict = self.index.pack_dict(loc.pack);
                if let Some(&i) = dict.as_ref().and_then(|d| self.bad_dicts.get(d)) {
                    self.breaks(i, snap);
                }
            }
            None => {
                let i = match self.index.lost_pack(id) {
                    Some(pack) => match self.bad_packs.get(&pack) {
                        Some(&i) => i,
                        None => self
                            .problems
                            .add(layout::pack(&pack), "missing from the store".into()),
                    },
                    None => match self.unreadable_index {
                        // It may be in the index object that could not be read.
                        Some(i) => i,
                        None => self.problems.add(
                            format!("chunk {}", id.to_hex()),
                            "no index object locates it (missing from the store)".into(),
                        ),
                    },
                };
                self.breaks(i, snap);
            }
        }
    }
}

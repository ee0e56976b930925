//! What a restore reads, found the short way: each position's chunk and where it
//! is, through the index objects the snapshot's page maps name.
//!
//! Page maps name chunks as (index object, ordinal), and that index entry says
//! where the chunk is. So a restore needs only the objects its maps name, read on
//! every core, and no search by chunk id. Building the whole chunk index instead
//! (every object decoded into one table, sorted by id, then each wanted id merged
//! against it) was 0.12 s of a 0.55 s restore of 1 GiB, all before its first write.
//!
//! When the short way cannot answer, a restore takes the long one
//! ([`Store::load_index`]): when a named index object cannot be read, or a chunk is
//! in a pack that is missing (a later backup may have stored that chunk again in
//! another pack, which only the whole index finds). The long way also names what
//! is wrong when nothing can be done.
//!
//! The plan answers each position from what it read (see [`Positions`]): the
//! position's name, and the entry of the index object it names, whose chunk id is
//! read from the object's bytes where it lies. Nothing per position is copied
//! before the first write but the names.

use super::rebuild::{Position, Positions};
use crate::format::envelope::{self, Kind};
use crate::format::index::{IndexBody, PackRef};
use crate::index::chunk_index::{Location, PackTable, Slot};
use crate::store::Snapshot;
use crate::types::{ChunkId, Id, IdMap};
use crate::{layout, Result, Store};
use rayon::prelude::*;
use std::borrow::Cow;

/// Where each position's chunk is: the positions' names and the index objects
/// they name, with the packs those objects list numbered in `packs`.
pub(crate) struct RestorePlan {
    pub packs: PackTable,
    /// Per position: `ZERO`, or the index object (high 32 bits) and the ordinal.
    names: Vec<u64>,
    /// The index objects, numbered as in `names`.
    read: Vec<Entries>,
    /// Per index object, its packs' numbers in `packs`; `None` for a pack that
    /// is missing or not of its recorded length.
    pack_numbers: Vec<Vec<Option<u32>>>,
}

/// One index object's entries in ordinal order, with its bytes (where the chunk
/// ids are).
struct Entries {
    packs: Vec<PackRef>,
    entries: Vec<Entry>,
    body: Body,
}

/// An index entry without its chunk id: 24 bytes instead of 52. A 1 GiB image's
/// first index object has a quarter of a million of them, and every byte of the
/// table is fresh memory faulted in before the first write.
#[derive(Clone, Copy)]
struct Entry {
    /// Where the chunk id is in the object's body.
    id_at: u32,
    /// Which of the object's packs.
    pack: u32,
    slot: Slot,
}

/// An index object decoded: its packs, its entries, and its body if it was
/// stored compressed.
type Decoded = (Vec<PackRef>, Vec<Entry>, Option<Vec<u8>>);

/// An index object's body, as read.
enum Body {
    /// Stored uncompressed: the object's bytes, the body past the header.
    Stored(Vec<u8>),
    /// Stored compressed (by older builds): the decompressed body.
    Decompressed(Vec<u8>),
}

impl Body {
    fn bytes(&self) -> &[u8] {
        match self {
            Body::Stored(object) => object.get(envelope::HEADER_LEN..).unwrap_or_default(),
            Body::Decompressed(body) => body,
        }
    }
}

impl Entries {
    /// Entry `ordinal`, if it exists and its chunk id lies in the body.
    fn entry(&self, ordinal: u32) -> Option<&Entry> {
        let e = self.entries.get(ordinal as usize)?;
        let end = (e.id_at as usize).checked_add(32)?;
        (end <= self.body.bytes().len()).then_some(e)
    }

    /// The chunk id of entry `e`, read where it lies in the body.
    fn id(&self, e: &Entry) -> Option<ChunkId> {
        let at = e.id_at as usize;
        Some(Id(self.body.bytes().get(at..at + 32)?.try_into().ok()?))
    }
}

/// Where a position's name leads.
enum Named<'a> {
    Zero,
    /// Entry `ordinal` of index object `n`, and its pack's number in the plan's
    /// `packs` (`None`: the pack is missing).
    Entry {
        n: u32,
        ordinal: u32,
        read: &'a Entries,
        entry: &'a Entry,
        pack: Option<u32>,
    },
}

impl RestorePlan {
    /// Where position `i`'s name leads; `None` past the end, or for a name whose
    /// index object lacks the entry.
    fn named(&self, i: usize) -> Option<Named<'_>> {
        let name = *self.names.get(i)?;
        if name == ZERO {
            return Some(Named::Zero);
        }
        let (n, ordinal) = ((name >> 32) as u32, name as u32);
        let read = self.read.get(n as usize)?;
        let entry = read.entry(ordinal)?;
        let numbers = self.pack_numbers.get(n as usize)?;
        let pack = numbers.get(entry.pack as usize).copied().flatten();
        Some(Named::Entry {
            n,
            ordinal,
            read,
            entry,
            pack,
        })
    }

    /// Whether position `i` is zeros, or a stored chunk whose entry exists and
    /// whose pack is present: what [`Positions::at`] answers with `Zero` or
    /// `Stored`, without copying the chunk id.
    fn locates(&self, i: usize) -> bool {
        matches!(
            self.named(i),
            Some(Named::Zero | Named::Entry { pack: Some(_), .. })
        )
    }
}

impl Positions for RestorePlan {
    fn len(&self) -> usize {
        self.names.len()
    }

    fn at(&self, i: usize) -> Option<Position> {
        let Named::Entry {
            n,
            ordinal,
            read,
            entry,
            pack,
        } = self.named(i)?
        else {
            return Some(Position::Zero);
        };
        let id = read.id(entry)?;
        Some(match pack {
            Some(pack) => Position::Stored(
                id,
                Location {
                    pack,
                    entry: entry.slot,
                    list: n,
                    ordinal,
                },
            ),
            None => Position::Unlocated(id),
        })
    }
}

/// A position's name while the maps are resolved: the index object's number in
/// the plan (high 32 bits) and the ordinal (low 32; an index object holds fewer
/// than 2³² entries), or `ZERO`. A quarter of the bytes of a chunk id.
const ZERO: u64 = u64::MAX;

impl Store {
    /// The tests' shorthand for [`Store::restore_plan_with`], packs checked.
    #[cfg(test)]
    pub(crate) fn restore_plan(&self, snap: &Snapshot) -> Result<Option<RestorePlan>> {
        self.restore_plan_with(snap, true)
    }

    /// The plan of a restore of `snap`, or `None` when the whole index is needed
    /// (see the module comment, and a map naming an entry its index object lacks).
    /// Errors are those the long way would report too: a page map that is missing
    /// or damaged. Without `check_packs` every pack the index objects list is
    /// taken to be there, as recorded, without listing the packs (one request
    /// fewer on S3): the caller must take the long way when a read finds a pack
    /// missing (the snapshot reader does).
    pub(crate) fn restore_plan_with(
        &self,
        snap: &Snapshot,
        check_packs: bool,
    ) -> Result<Option<RestorePlan>> {
        // The maps (but for their changes) and the listing of packs, at once.
        let (chain, present) = rayon::join(
            || self.map_chain_heads(&snap.manifest.map),
            || match check_packs {
                true => self.pack_sizes().map(Some),
                false => Ok(None),
            },
        );
        let (chain, present) = (chain?, present?);
        // The index objects the chain names, each once, numbered.
        let mut number: IdMap<u32> = IdMap::default();
        let mut lists: Vec<Id> = Vec::new();
        for (_, head) in &chain {
            let m = &head.map;
            for list in m.lists.iter().chain(m.new_list.iter()) {
                number.entry(*list).or_insert_with(|| {
                    lists.push(*list);
                    lists.len() as u32 - 1
                });
            }
        }
        // The index objects are read and decoded while the maps' changes are
        // decoded and the chain resolved, from its full map down, in names (their
        // ordinals are checked against the objects below).
        let (read, names) = rayon::join(
            || -> Option<Vec<Entries>> { lists.par_iter().map(|id| self.entries(id)).collect() },
            || -> Result<Vec<u64>> {
                let mut names: Vec<u64> = Vec::new();
                for (mid, head) in chain.into_iter().rev() {
                    let m = self.finish_map(&mid, head)?;
                    names = m
                        .apply_with(&names, ZERO, |list, ordinal| {
                            let n = *number.get(list)?;
                            let ordinal = u32::try_from(ordinal).ok()?;
                            Some((u64::from(n) << 32) | u64::from(ordinal))
                        })
                        .map_err(self.format_err(&layout::map(&mid)))?;
                }
                Ok(names)
            },
        );
        // An unreadable index object first: the long way names it before any map.
        let Some(read) = read else {
            return Ok(None);
        };
        let names = names?;
        // Pack numbers, per index object; `None` for a pack that is missing or not
        // of its recorded length (as the whole index counts them).
        let mut packs = PackTable::default();
        let pack_numbers: Vec<Vec<Option<u32>>> = read
            .iter()
            .map(|e| {
                e.packs
                    .iter()
                    .map(|p| {
                        let there = present
                            .as_ref()
                            .is_none_or(|l| l.get(&p.id) == Some(&p.len));
                        there.then(|| packs.add(p))
                    })
                    .collect()
            })
            .collect();
        self.check_chunk_count(snap, names.len())?;
        let plan = RestorePlan {
            packs,
            names,
            read,
            pack_numbers,
        };
        // Every position answered and every stored chunk located; otherwise the
        // long way (for an entry the object lacks, it names the map).
        let located = (0..plan.names.len())
            .into_par_iter()
            .all(|i| plan.locates(i));
        Ok(located.then_some(plan))
    }

    /// Index object `id`, read, checked against its name and decoded; `None` when
    /// that fails for any reason (the long way reports it).
    fn entries(&self, id: &Id) -> Option<Entries> {
        let bytes = self.backend().get(&layout::index(id)).ok()?;
        // Checked against its name on one core while decoded on the other (a
        // 10 MB object for a 1 GiB image: ~5 ms of hashing before the first
        // write). Decoding unchecked bytes is safe: the decoder refuses what is
        // not an index object, and a mismatch discards what was decoded.
        let (named, decoded) = rayon::join(
            || Id::of_object(&bytes) == *id,
            || -> Option<Decoded> {
                // Either version: a version-2 object's base table is checked
                // and skipped (a store with deltas does not plan this way yet).
                let (version, body) = envelope::open_versioned(Kind::Index, &bytes).ok()?;
                // Sized once: an entry takes about 38 bytes (grown by doubling,
                // the table was copied and fresh pages faulted in several times).
                let mut entries = Vec::with_capacity(body.len() / 36);
                let packs = IndexBody::decode_body_each_as(version, &body, |_, e, _, at| {
                    entries.push(Entry {
                        id_at: at as u32,
                        pack: e.pack,
                        slot: Slot::from(&e.entry),
                    });
                })
                .ok()?;
                let decompressed = match body {
                    Cow::Owned(body) => Some(body),
                    Cow::Borrowed(_) => None,
                };
                Some((packs, entries, decompressed))
            },
        );
        let (packs, entries, decompressed) = decoded.filter(|_| named)?;
        let body = match decompressed {
            Some(body) => Body::Decompressed(body),
            None => Body::Stored(bytes),
        };
        Some(Entries {
            packs,
            entries,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::IndexBody;
    use crate::backend::PutMode;
    use crate::index::chunk_index::Slot;
    use crate::restore::rebuild::{Position, Positions};
    use crate::types::ChunkRef;
    use crate::types::Id;
    use crate::{layout, Store};
    use crate::{BackupOptions, InitOptions};

    /// A store with snapshots of a database that grows, changes, shrinks and
    /// grows again (maps that are deltas of deltas, new chunks, zero chunks).
    fn store_with_history() -> anyhow::Result<(tempfile::TempDir, Store)> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("app.db");
        let store = Store::init(dir.path().join("store"), &InitOptions::default())?;
        let conn = rusqlite::Connection::open(&db)?;
        conn.execute_batch(
            "PRAGMA page_size=4096; CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB);",
        )?;
        let steps = [
            "INSERT INTO t(v) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300) SELECT randomblob(3000) FROM n",
            "UPDATE t SET v = randomblob(3000) WHERE k % 17 = 0",
            "INSERT INTO t(v) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100) SELECT zeroblob(3000) FROM n",
            "DELETE FROM t WHERE k > 150",
            "VACUUM",
            "INSERT INTO t(v) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200) SELECT randomblob(2000) FROM n",
            "UPDATE t SET v = randomblob(10) WHERE k % 5 = 0",
        ];
        for sql in steps {
            conn.execute_batch(sql)?;
            store.backup_path(&db, &BackupOptions::default())?;
        }
        Ok((dir, store))
    }

    /// The short way gives the chunk list the whole index gives, with every stored
    /// chunk located where an index entry of that chunk says, and restores.
    #[test]
    fn plan_agrees_with_the_whole_index() -> anyhow::Result<()> {
        let (_dir, store) = store_with_history()?;
        let snaps = store.snapshots()?;
        assert_eq!(snaps.len(), 7);
        let index = store.load_index()?;
        for snap in &snaps {
            let plan = store.restore_plan(snap)?.expect("nothing is missing");
            let listed = store.chunk_list_with(&index, snap)?;
            assert_eq!(plan.len(), listed.len());
            assert_eq!(plan.at(listed.len()), None, "no position past the end");
            for (i, c) in listed.iter().enumerate() {
                assert!(plan.locates(i), "position {i}");
                match (c, plan.at(i)) {
                    (ChunkRef::Zero, Some(Position::Zero)) => {}
                    (ChunkRef::Stored(id), Some(Position::Stored(got, l))) => {
                        assert_eq!(got, *id, "position {i}");
                        // Same pack and place as the index has for this chunk (each
                        // chunk is stored once in this store).
                        let whole = index.get(id).expect("indexed");
                        assert_eq!(plan.packs.id(l.pack), index.pack_id(whole.pack));
                        assert_eq!(l.entry, whole.entry);
                    }
                    other => panic!("position {i}: plan and index disagree: {other:?}"),
                }
            }
            let mut image = Vec::new();
            let report = store.restore_to_writer(snap, &mut image)?;
            assert_eq!(report.image_hash, snap.manifest.image_hash);
            assert_eq!(*blake3::hash(&image).as_bytes(), snap.manifest.image_hash);
        }
        Ok(())
    }

    /// An index object is read the same whether its body was stored as is or
    /// compressed (as older builds could): every entry, with its chunk id.
    #[test]
    fn index_objects_stored_compressed_give_the_same_entries() -> anyhow::Result<()> {
        let (_dir, store) = store_with_history()?;
        let backend = store.backend().clone();
        for o in backend.list(layout::INDEX)? {
            let id = layout::id_of(&o.key).expect("an index object's name");
            let bytes = backend.get(&o.key)?;
            let body = IndexBody::decode(&bytes)?;
            let compressed = body.encode_compressed();
            assert_ne!(compressed[10], 0, "flagged compressed");
            let compressed_id = Id::of_object(&compressed);
            backend.put(
                &layout::index(&compressed_id),
                &compressed,
                PutMode::Overwrite,
            )?;
            for (name, body_kind) in [(id, "stored"), (compressed_id, "compressed")] {
                let read = store.entries(&name).expect("readable");
                assert_eq!(read.entries.len(), body.entries.len(), "{body_kind}");
                assert!(
                    read.entry(body.entries.len() as u32).is_none(),
                    "{body_kind}: none past the end"
                );
                for (k, want) in body.entries.iter().enumerate() {
                    let e = read.entry(k as u32).expect("an entry");
                    assert_eq!(read.id(e), Some(want.entry.id), "{body_kind} entry {k}");
                    assert_eq!(e.pack, want.pack);
                    assert_eq!(e.slot, Slot::from(&want.entry));
                }
            }
            // An object that is not what its name says is not read.
            backend.put(&layout::index(&id), &compressed, PutMode::Overwrite)?;
            assert!(store.entries(&id).is_none());
        }
        Ok(())
    }

    /// A snapshot with a chunk in a missing pack, or whose index object is
    /// missing, needs the whole index: the plan says so instead of failing.
    #[test]
    fn plan_gives_way_when_a_pack_or_an_index_object_is_missing() -> anyhow::Result<()> {
        let (_dir, store) = store_with_history()?;
        let snaps = store.snapshots()?;
        let backend = store.backend().clone();
        let newest = snaps.last().expect("snapshots");
        let index = store.load_index()?;
        let used = store.chunk_list_with(&index, newest)?;
        let id = used
            .iter()
            .find_map(|c| match c {
                ChunkRef::Stored(id) => Some(*id),
                ChunkRef::Zero => None,
            })
            .expect("a stored chunk");
        let pack = index.pack_id(index.get(&id).expect("indexed").pack);
        backend.delete(&layout::pack(&pack))?;
        assert!(store.restore_plan(newest)?.is_none());
        let indexes = backend.list(layout::INDEX)?;
        for o in &indexes {
            backend.delete(&o.key)?;
        }
        assert!(store.restore_plan(newest)?.is_none());
        // The whole index then names the problem.
        let err = store
            .restore_to_writer(newest, &mut std::io::sink())
            .expect_err("cannot restore");
        assert!(err.to_string().contains("index/"), "{err}");
        Ok(())
    }
}

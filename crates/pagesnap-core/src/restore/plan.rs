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
//!
//! In a store with deltas a chain's links may be any stored chunk, named in a
//! delta's blob by its id's first 8 bytes. So the plan reads every index
//! object, not only those the maps name, and sorts the located entries' id
//! prefixes into a table ([`BaseRows`]) where links are searched
//! ([`BaseIndex`]): 16 bytes a chunk, where the whole index copied each id
//! and location into a table it sorted (0.2 s before the first write at 1 GiB
//! after 144 steps, against 0.1 s this way). Any index object that cannot be
//! read sends the restore the long way, as a named one does.

use super::rebuild::{Position, Positions};
use crate::format::envelope::{self, Kind};
use crate::format::index::{IndexBody, PackRef};
use crate::format::pack::{BasePrefix, Codec};
use crate::index::cache::Placed;
use crate::index::chunk_index::{
    copy_rank, prefix, run_of, unique_of_many, Location, PackTable, Slot,
};
use crate::store::bases::{BaseIndex, Chains, Locate};
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
    /// A store with deltas: every located chunk of every index object, by id
    /// (the bases of its chains may be any stored chunk).
    bases: Option<BaseRows>,
}

/// Every located chunk of the index objects a plan read, sorted by id and
/// each chunk once (the copy [`copy_rank`] keeps, then the first read): its
/// id's first 8 bytes (as [`prefix`] makes them, searched as
/// [`ChunkIndex::unique_many`] searches its own), and the entry it is. 16 bytes
/// a chunk where the whole index took 68, and no table of chunk ids: only
/// these are sorted.
///
/// [`ChunkIndex::unique_many`]: crate::index::chunk_index::ChunkIndex::unique_many
struct BaseRows {
    prefixes: Vec<u64>,
    /// The index object's number (high 32 bits) and the entry's ordinal.
    entries: Vec<u64>,
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
        self.entry_at((name >> 32) as u32, name as u32)
    }

    /// Entry `ordinal` of index object `n`, with its pack's number; `None`
    /// for an entry the object lacks.
    fn entry_at(&self, n: u32, ordinal: u32) -> Option<Named<'_>> {
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

    /// Where `named` leads, as a position.
    fn position(named: Named<'_>) -> Option<Position> {
        let Named::Entry {
            n,
            ordinal,
            read,
            entry,
            pack,
        } = named
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
        Self::position(self.named(i)?)
    }
}

impl RestorePlan {
    /// Entry `ordinal` of index object `n`, located: its chunk id and where it
    /// is; `None` for one it lacks, or whose pack is missing.
    fn located(&self, n: u32, ordinal: u32) -> Option<(ChunkId, Location)> {
        match Self::position(self.entry_at(n, ordinal)?)? {
            Position::Stored(id, loc) => Some((id, loc)),
            Position::Zero | Position::Unlocated(_) => None,
        }
    }

    /// Row `i` of the bases' table, located.
    fn base_row(&self, rows: &BaseRows, i: usize) -> Option<(ChunkId, Location)> {
        let e = *rows.entries.get(i)?;
        self.located((e >> 32) as u32, e as u32)
    }

    /// The bases' table rows whose ids begin with `key` (none without a table).
    fn base_run(&self, key: u64) -> impl Iterator<Item = (ChunkId, Location)> + '_ {
        let rows = self.bases.as_ref();
        let run = rows.map_or(0..0, |r| run_of(&r.prefixes, key));
        run.filter_map(move |i| self.base_row(rows?, i))
    }

    /// A reader of delta bases through this plan, in a store with deltas
    /// (`None` for a plan of a store without).
    pub(crate) fn chains(&self, store: &Store) -> Result<Option<Chains<'_>>> {
        match self.bases {
            Some(_) => Ok(Some(Chains::new(
                store.backend().clone(),
                self,
                store.chunk_ids(),
            )?)),
            None => Ok(None),
        }
    }
}

impl Locate for RestorePlan {
    fn locate(&self, id: &ChunkId) -> Option<Placed> {
        let (_, loc) = self.base_run(prefix(id)).find(|(got, _)| got == id)?;
        Some((
            self.packs.id(loc.pack),
            self.packs.dict(loc.pack),
            loc.pack_entry(*id),
        ))
    }

    fn sharing(&self, p: &BasePrefix) -> Vec<ChunkId> {
        self.base_run(p.key()).map(|(id, _)| id).collect()
    }
}

impl BaseIndex for RestorePlan {
    fn unique_many(&self, keys: &[u64]) -> Vec<Option<(ChunkId, Location)>> {
        let Some(rows) = &self.bases else {
            return vec![None; keys.len()];
        };
        let found: Vec<Option<u64>> = unique_of_many(&rows.prefixes, keys)
            .into_iter()
            .map(|i| rows.entries.get(i?).copied())
            .collect();
        // A found row leads to its entry, which leads to the id in the body:
        // loads that depend on each other. Made a pass at a time, each pass's
        // loads (one per key) are in flight together, as in the search.
        let mut touched = 0u32;
        for e in found.iter().flatten() {
            let object = self.read.get((e >> 32) as usize);
            if let Some(entry) = object.and_then(|o| o.entries.get(*e as u32 as usize)) {
                touched ^= entry.id_at;
            }
        }
        std::hint::black_box(touched);
        found
            .into_iter()
            .map(|e| self.located((e? >> 32) as u32, e? as u32))
            .collect()
    }

    fn packs(&self) -> &PackTable {
        &self.packs
    }
}

/// The bases' table of the index objects `read` (their packs numbered as
/// `numbers` says): see [`BaseRows`]. Chunks whose packs are missing are left
/// out, as the whole index leaves them.
fn base_rows(read: &[Entries], numbers: &[Vec<Option<u32>>]) -> BaseRows {
    let per_object: Vec<Vec<(u64, u64)>> = read
        .par_iter()
        .zip(numbers)
        .enumerate()
        .map(|(n, (object, numbers))| {
            let body = object.body.bytes();
            let located = object.entries.iter().enumerate().filter_map(|(k, e)| {
                numbers.get(e.pack as usize).copied().flatten()?;
                let at = e.id_at as usize;
                let first: [u8; 8] = body.get(at..at + 32)?[..8].try_into().ok()?;
                Some((u64::from_be_bytes(first), ((n as u64) << 32) | k as u64))
            });
            located.collect()
        })
        .collect();
    // Ids are uniform: a counting sort on their first bits puts each row
    // among a handful of others, which are then sorted alone. Sorted whole,
    // the table took 37 ms before the first write at 1 GiB after 144 steps
    // (~800,000 rows), 30 ms this way.
    let count: usize = per_object.iter().map(Vec::len).sum();
    let bits = (usize::BITS - (count / 8).leading_zeros()).clamp(1, 24);
    let bucket = |prefix: u64| (prefix >> (64 - bits)) as usize;
    let mut next = vec![0usize; 1 << bits];
    for r in per_object.iter().flatten() {
        next[bucket(r.0)] += 1;
    }
    let mut start = 0;
    for n in &mut next {
        (*n, start) = (start, start + *n);
    }
    let mut rows = vec![(0u64, 0u64); count];
    for r in per_object.into_iter().flatten() {
        let at = &mut next[bucket(r.0)];
        rows[*at] = r;
        *at += 1;
    }
    // Ids sharing their first 8 bytes are copies of one chunk but by a 2^-64
    // accident: compared whole only then, ordered as the whole index orders
    // copies (`ChunkIndex::seal`), and each chunk kept once.
    let id_of = |e: u64| -> Option<(ChunkId, Codec)> {
        let object = read.get((e >> 32) as usize)?;
        let entry = object.entry(e as u32)?;
        Some((object.id(entry)?, entry.slot.codec))
    };
    let copy = |e: u64| id_of(e).map(|(id, codec)| (id, copy_rank(codec), e));
    rows.par_chunk_by_mut(|a, b| bucket(a.0) == bucket(b.0))
        .for_each(|c| {
            c.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| copy(a.1).cmp(&copy(b.1))))
        });
    rows.dedup_by(|later, first| {
        later.0 == first.0 && id_of(later.1).map(|c| c.0) == id_of(first.1).map(|c| c.0)
    });
    let (prefixes, entries) = rows.par_iter().copied().unzip();
    BaseRows { prefixes, entries }
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
        // A store with deltas reads every index object: a delta's base may be
        // any stored chunk, not only one the maps name.
        let with_bases = self.config().deltas;
        // The maps (but for their changes) and the listings, at once.
        let ((chain, present), all) = rayon::join(
            || {
                rayon::join(
                    || self.map_chain_heads(&snap.manifest.map),
                    || match check_packs {
                        true => self.pack_sizes().map(Some),
                        false => Ok(None),
                    },
                )
            },
            || match with_bases {
                true => self.backend().list(layout::INDEX).map(Some),
                false => Ok(None),
            },
        );
        let (chain, present, all) = (chain?, present?, all?);
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
        // Then the others, for the bases' table (an object whose name is not
        // an id is no index object: the whole index skips it too).
        for list in all.iter().flatten().filter_map(|o| layout::id_of(&o.key)) {
            number.entry(list).or_insert_with(|| {
                lists.push(list);
                lists.len() as u32 - 1
            });
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
        let bases = with_bases.then(|| base_rows(&read, &pack_numbers));
        let plan = RestorePlan {
            packs,
            names,
            read,
            pack_numbers,
            bases,
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

    /// A store with deltas whose small updates make chains of deltas, and a
    /// VACUUM (whose pages are stored again) between them.
    fn store_with_deltas() -> anyhow::Result<(tempfile::TempDir, Store)> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("app.db");
        let store = Store::init(dir.path().join("store"), &InitOptions::with_deltas())?;
        let conn = rusqlite::Connection::open(&db)?;
        conn.execute_batch(
            "PRAGMA page_size=4096; CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB);
             INSERT INTO t(v) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 400) SELECT randomblob(900) FROM n;",
        )?;
        store.backup_path(&db, &BackupOptions::default())?;
        for step in 0..9 {
            let sql = match step {
                4 => "DELETE FROM t WHERE k % 7 = 0; VACUUM;".to_string(),
                _ => format!(
                    "UPDATE t SET v = substr(v, 1, 400) || randomblob(8) || substr(v, 409) WHERE k % 3 = {}",
                    step % 3
                ),
            };
            conn.execute_batch(&sql)?;
            store.backup_path(&db, &BackupOptions::default())?;
        }
        Ok((dir, store))
    }

    /// In a store with deltas the plan reads every index object, and locates
    /// any chunk (a base) as the whole index does: by id, by prefix, and the
    /// prefixes of a window's links searched together; what no chunk has is
    /// found nowhere. Every snapshot restores through it.
    #[test]
    fn plan_of_a_store_with_deltas_locates_bases_as_the_whole_index() -> anyhow::Result<()> {
        use crate::store::bases::{BaseIndex, Locate};
        let (_dir, store) = store_with_deltas()?;
        let index = store.load_index()?;
        let deltas = index
            .iter()
            .filter(|(_, l)| l.entry.codec == crate::format::pack::Codec::ZstdDelta)
            .count();
        assert!(deltas > 50, "the history makes deltas: {deltas}");
        let snaps = store.snapshots()?;
        for snap in &snaps {
            let plan = store.restore_plan(snap)?.expect("nothing is missing");
            assert!(plan.chains(&store)?.is_some());
            let mut keys = Vec::new();
            for (id, whole) in index.iter() {
                let (pack, dict, entry) = plan.locate(id).expect("located");
                assert_eq!(pack, index.pack_id(whole.pack));
                assert_eq!(dict, index.pack_dict(whole.pack));
                assert_eq!(entry, whole.pack_entry(*id));
                let p = crate::format::pack::BasePrefix::of(id);
                assert_eq!(plan.sharing(&p), vec![*id]);
                keys.push(p.key());
                // A key between stored ones, and one no id has.
                keys.push(p.key() ^ 1);
            }
            keys.extend([0, u64::MAX]);
            let (got, want) = (
                BaseIndex::unique_many(&plan, &keys),
                index.unique_many(&keys),
            );
            assert_eq!(got.len(), want.len());
            for (k, (g, w)) in keys.iter().zip(got.iter().zip(&want)) {
                match (g, w) {
                    (None, None) => {}
                    (Some((gid, gl)), Some((wid, wl))) => {
                        assert_eq!(gid, wid, "key {k:x}");
                        assert_eq!(plan.packs.id(gl.pack), index.pack_id(wl.pack));
                        assert_eq!(gl.entry, wl.entry);
                    }
                    _ => panic!("key {k:x}: plan {g:?}, whole index {w:?}"),
                }
            }
            let mut image = Vec::new();
            let report = store.restore_to_writer(snap, &mut image)?;
            assert_eq!(*blake3::hash(&image).as_bytes(), snap.manifest.image_hash);
            assert_eq!(report.image_hash, snap.manifest.image_hash);
        }
        Ok(())
    }

    /// Copies of one chunk are one row, the copy stored whole kept before a
    /// delta (as the whole index keeps it) whichever object was read first;
    /// two ids sharing their first 8 bytes are both found by prefix and
    /// neither alone; a chunk whose pack is missing is not located.
    #[test]
    fn base_rows_keep_one_copy_and_tell_shared_prefixes_apart() -> anyhow::Result<()> {
        use super::{base_rows, Body, Entries, Entry, RestorePlan};
        use crate::format::index::PackRef;
        use crate::format::pack::{BasePrefix, Codec};
        use crate::index::chunk_index::PackTable;
        use crate::store::bases::{BaseIndex, Locate};
        let id = |first: u8, last: u8| {
            let mut b = [first; 32];
            b[31] = last;
            Id(b)
        };
        let (a, b, c, lost) = (id(1, 0), id(2, 0), id(2, 1), id(3, 0));
        let slot = |offset: u32, codec: Codec| Slot {
            offset,
            stored_len: 10,
            raw_len: 4096,
            codec,
        };
        // Object 0: a (a delta), b; object 1: a (whole), c, and `lost` in a
        // missing pack.
        let object = |chunks: &[(Id, u32, Slot)], packs: Vec<PackRef>| Entries {
            packs,
            entries: chunks
                .iter()
                .enumerate()
                .map(|(k, (_, pack, slot))| Entry {
                    id_at: 32 * k as u32,
                    pack: *pack,
                    slot: *slot,
                })
                .collect(),
            body: Body::Decompressed(chunks.iter().flat_map(|(id, _, _)| id.0).collect()),
        };
        let pack = |n: u8| PackRef {
            id: Id([0xf0 + n; 32]),
            len: 100,
            dict: None,
        };
        let read = vec![
            object(
                &[
                    (a, 0, slot(0, Codec::ZstdDelta)),
                    (b, 0, slot(10, Codec::Zstd)),
                ],
                vec![pack(0)],
            ),
            object(
                &[
                    (a, 0, slot(0, Codec::Zstd)),
                    (c, 0, slot(10, Codec::Zstd)),
                    (lost, 1, slot(0, Codec::Zstd)),
                ],
                vec![pack(1), pack(2)],
            ),
        ];
        let mut packs = PackTable::default();
        let numbers = vec![
            vec![Some(packs.add(&pack(0)))],
            vec![Some(packs.add(&pack(1))), None],
        ];
        let bases = Some(base_rows(&read, &numbers));
        let plan = RestorePlan {
            packs,
            names: Vec::new(),
            read,
            pack_numbers: numbers,
            bases,
        };
        let (p, _, e) = plan.locate(&a).expect("a");
        assert_eq!((p, e.codec), (pack(1).id, Codec::Zstd), "the whole copy");
        assert_eq!(plan.sharing(&BasePrefix::of(&a)), vec![a], "one row");
        assert!(plan.locate(&lost).is_none());
        assert!(plan.sharing(&BasePrefix::of(&lost)).is_empty());
        assert_eq!(plan.locate(&c).map(|(p, _, _)| p), Some(pack(1).id));
        let mut shared = plan.sharing(&BasePrefix::of(&b));
        shared.sort();
        assert_eq!(shared, vec![b, c]);
        let keys = [a, b, lost].map(|i| BasePrefix::of(&i).key());
        let found = plan.unique_many(&keys);
        assert_eq!(
            found[0].map(|(i, l)| (i, l.entry.codec)),
            Some((a, Codec::Zstd))
        );
        assert!(found[1].is_none(), "two ids share the prefix");
        assert!(found[2].is_none(), "its pack is missing");
        Ok(())
    }

    /// In a store with deltas, an index object the maps do not name is read
    /// too (it may hold bases): when it cannot be, the plan gives way to the
    /// whole index, which restores what it can locate.
    #[test]
    fn plan_with_deltas_gives_way_when_any_index_object_is_unreadable() -> anyhow::Result<()> {
        let (_dir, store) = store_with_deltas()?;
        let backend = store.backend().clone();
        let snaps = store.snapshots()?;
        let first = snaps.first().expect("snapshots");
        let newest = snaps.last().expect("snapshots");
        let index = store.load_index()?;
        // The first snapshot's index object: the VACUUM stored every page again,
        // so the newest snapshot's maps do not name it.
        let named: std::collections::HashSet<Id> = store
            .chunk_list_with(&index, newest)?
            .iter()
            .filter_map(|c| match c {
                ChunkRef::Stored(id) => index.name_of(id).map(|(list, _)| list),
                ChunkRef::Zero => None,
            })
            .collect();
        let (list, _) = store
            .chunk_list_with(&index, first)?
            .iter()
            .find_map(|c| match c {
                ChunkRef::Stored(id) => index.name_of(id),
                ChunkRef::Zero => None,
            })
            .expect("a stored chunk");
        assert!(
            !named.contains(&list),
            "the newest snapshot does not name it"
        );
        assert!(store.restore_plan(newest)?.is_some());
        let mut bytes = backend.get(&layout::index(&list))?;
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        backend.put(&layout::index(&list), &bytes, PutMode::Overwrite)?;
        assert!(store.restore_plan(newest)?.is_none());
        // The long way restores the newest snapshot (its bases are elsewhere:
        // before the VACUUM's, every chunk was stored again), or names the
        // chunk it lacks.
        match store.restore_to_writer(newest, &mut std::io::sink()) {
            Ok(r) => assert_eq!(r.image_hash, newest.manifest.image_hash),
            Err(e) => assert!(e.to_string().contains("chunk"), "{e}"),
        }
        Ok(())
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

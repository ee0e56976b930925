//! The in-memory chunk index, built from every `index/` object: where each chunk
//! is (only chunks in packs that exist), and the names page maps use for chunks
//! (index object, ordinal → chunk id).

use crate::format::index::{DeltaBase, IndexBody, IndexEntry, PackRef};
use crate::format::pack::{Codec, PackEntry};
use crate::types::{ChunkId, ChunkRef, Id, IdMap, SnapshotId};
use rayon::prelude::*;

/// Where a chunk's blob is in its pack (the chunk id is the map key: not repeated).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub offset: u32,
    pub stored_len: u32,
    pub raw_len: u32,
    pub codec: Codec,
}

impl From<&PackEntry> for Slot {
    fn from(e: &PackEntry) -> Slot {
        Slot {
            offset: e.offset,
            stored_len: e.stored_len,
            raw_len: e.raw_len,
            codec: e.codec,
        }
    }
}

/// Location of a chunk: which pack (by position in the index's pack table) and where
/// in it, and one name of it (index object by position in the list table, ordinal).
/// Kept small: a store of a 1 GiB database holds a quarter of a million of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    pub pack: u32,
    pub entry: Slot,
    pub list: u32,
    pub ordinal: u32,
}

impl Location {
    /// The pack entry of chunk `id` at this location.
    pub fn pack_entry(&self, id: ChunkId) -> PackEntry {
        PackEntry {
            id,
            offset: self.entry.offset,
            stored_len: self.entry.stored_len,
            raw_len: self.entry.raw_len,
            codec: self.entry.codec,
        }
    }
}

/// An index object decoded on its own, to be added to an index in order
/// ([`ChunkIndex::add_decoded`]). A restore of a store with deltas loads the
/// whole index before its first write: decoding the objects one after another
/// on one core took 90 ms of its 140 ms at 1 GiB after 144 steps, so they are
/// decoded on every core and only added in order.
pub struct DecodedObject {
    /// The object's packs, as its entries name them (empty without entries).
    packs: Vec<PackRef>,
    /// Its entries in order, up to where decoding stopped.
    entries: Vec<IndexEntry>,
    /// The base-table rows of its delta entries, with the entry's number.
    rows: Vec<(u32, DeltaBase)>,
    /// How decoding ended: the packs, or why it failed after `entries`.
    end: Result<Vec<PackRef>, crate::format::FormatError>,
}

impl DecodedObject {
    /// Decodes an index object's bytes (either version), keeping what came
    /// before an error as adding the bytes entry by entry would.
    pub fn decode(bytes: &[u8]) -> DecodedObject {
        let (mut packs, mut entries, mut rows) = (None, Vec::new(), Vec::new());
        let end = IndexBody::decode_each_with_bases(bytes, |p, e, base| {
            if packs.is_none() {
                packs = Some(p.to_vec());
            }
            if let Some(b) = base {
                // Index bodies are bounded well below 2³² entries.
                rows.push((entries.len() as u32, b));
            }
            entries.push(e);
        });
        DecodedObject {
            packs: packs.unwrap_or_default(),
            entries,
            rows,
            end,
        }
    }
}

/// An index object being added.
struct Adding {
    list: Id,
    list_pos: u32,
    pack_pos: Vec<Option<u32>>,
    ids: Vec<ChunkId>,
}

/// The packs locations point into, numbered as [`Location::pack`] numbers them.
#[derive(Default, Debug)]
pub struct PackTable {
    ids: Vec<Id>,
    dicts: Vec<Option<Id>>,
    /// The length the index object recorded (a pack counts as present only with it).
    lens: Vec<u64>,
    pos: IdMap<u32>,
}

impl PackTable {
    /// The number of pack `p` (added now if new).
    pub fn add(&mut self, p: &PackRef) -> u32 {
        *self.pos.entry(p.id).or_insert_with(|| {
            self.ids.push(p.id);
            self.dicts.push(p.dict);
            self.lens.push(p.len);
            self.ids.len() as u32 - 1
        })
    }

    pub fn id(&self, pos: u32) -> Id {
        self.ids[pos as usize]
    }

    /// The dictionary of the pack at `pos`, if its chunks use one.
    pub fn dict(&self, pos: u32) -> Option<Id> {
        self.dicts[pos as usize]
    }

    /// Whether any of the packs has a dictionary.
    pub fn any_dict(&self) -> bool {
        self.dicts.iter().any(Option::is_some)
    }

    /// The pack at `pos`, as its index object recorded it.
    pub fn pack_ref(&self, pos: u32) -> PackRef {
        let i = pos as usize;
        PackRef {
            id: self.ids[i],
            len: self.lens[i],
            dict: self.dicts[i],
        }
    }

    /// How many packs are numbered.
    pub fn count(&self) -> usize {
        self.ids.len()
    }
}

#[derive(Default, Debug)]
pub struct ChunkIndex {
    packs: PackTable,
    /// Every located chunk, sorted by id once loading ends ([`ChunkIndex::seal`]);
    /// searched by interpolation (ids are uniform). A hash table of 32-byte keys
    /// took twice the memory: it grows by doubling, to a power of two.
    chunks: Vec<(ChunkId, Location)>,
    /// The first 8 bytes of each id in `chunks`, as a big-endian number: a dense
    /// array the interpolation search probes (8 per cache line, not one).
    prefixes: Vec<u64>,
    sealed: bool,
    lists: Vec<Id>,
    list_ids: IdMap<Vec<ChunkId>>,
    /// Chunks whose packs are missing: the pack an index object put them in.
    lost: IdMap<Id>,
    /// Index objects that could not be read, and why: their names are unknown.
    damaged: IdMap<String>,
    /// Locations of chunks located more than once, other than the one kept.
    dups: Vec<(ChunkId, Location)>,
}

impl ChunkIndex {
    /// Adds the index object `list`. Its names are always kept; its locations only
    /// for packs `present` accepts (a lost pack's chunks are then unknown, so a
    /// backup stores them again). A chunk found in several packs keeps one
    /// location when the index is sealed ([`copy_rank`]).
    pub fn add(&mut self, list: Id, body: &IndexBody, present: impl Fn(&Id, u64) -> bool) {
        self.chunks.reserve(body.entries.len());
        self.sealed = false;
        let mut adding = self.begin(list, &body.packs, present);
        for e in &body.entries {
            self.push(&mut adding, &body.packs, e);
        }
        self.end(adding);
    }

    /// Adds index object `list` from its encoded bytes, entry by entry (see
    /// [`IndexBody::decode_each`]): never holds the decoded object whole.
    /// Each delta entry's base-table row goes to `row` (whether or not its
    /// pack is present). Its names are always kept, its locations only for
    /// packs `present` accepts, as [`ChunkIndex::add`] does. The entries an
    /// object gave before its decoding failed stay added, and the error is
    /// returned (the caller marks the object damaged).
    pub fn add_encoded_with_bases(
        &mut self,
        list: Id,
        bytes: &[u8],
        present: impl Fn(&Id, u64) -> bool,
        row: impl FnMut(&ChunkId, &DeltaBase),
    ) -> Result<(), crate::format::FormatError> {
        self.add_each(list, present, row, 0, |each| {
            IndexBody::decode_each_with_bases(bytes, |packs, e, base| {
                each(packs, &e, base.as_ref())
            })
        })
    }

    /// [`ChunkIndex::add_encoded_with_bases`] of an object decoded apart
    /// ([`DecodedObject::decode`], on any thread): the same entries, rows and
    /// error.
    pub fn add_decoded(
        &mut self,
        list: Id,
        d: DecodedObject,
        present: impl Fn(&Id, u64) -> bool,
        row: impl FnMut(&ChunkId, &DeltaBase),
    ) -> Result<(), crate::format::FormatError> {
        // Sized once: grown by doubling, then shrunk, the names were copied
        // twice more.
        self.add_each(list, present, row, d.entries.len(), |each| {
            let mut rows = d.rows.iter().peekable();
            for (n, e) in d.entries.iter().enumerate() {
                let base = rows.next_if(|(at, _)| *at as usize == n).map(|(_, b)| b);
                each(&d.packs, e, base);
            }
            d.end
        })
    }

    /// Adds index object `list` from `feed`, which hands each entry (with the
    /// object's packs and its base-table row) to the function it is given and
    /// returns how decoding ended: the one way both kinds of adding go.
    fn add_each(
        &mut self,
        list: Id,
        present: impl Fn(&Id, u64) -> bool,
        mut row: impl FnMut(&ChunkId, &DeltaBase),
        entries: usize,
        feed: impl FnOnce(
            &mut dyn FnMut(&[PackRef], &IndexEntry, Option<&DeltaBase>),
        ) -> Result<Vec<PackRef>, crate::format::FormatError>,
    ) -> Result<(), crate::format::FormatError> {
        let mut adding: Option<Adding> = None;
        let end = feed(&mut |packs, e, base| {
            let a = adding.get_or_insert_with(|| {
                let mut a = self.begin(list, packs, &present);
                a.ids.reserve_exact(entries);
                a
            });
            if let Some(b) = base {
                row(&e.entry.id, b);
            }
            self.push(a, packs, e);
        });
        end.map(|packs| {
            // An object without entries still names its packs (and is a list of none).
            let a = adding.unwrap_or_else(|| self.begin(list, &packs, &present));
            self.end(a);
        })
    }

    fn begin(&mut self, list: Id, packs: &[PackRef], present: impl Fn(&Id, u64) -> bool) -> Adding {
        let list_pos = self.lists.len() as u32;
        self.lists.push(list);
        let mut pack_pos = Vec::with_capacity(packs.len());
        for p in packs {
            let pos = if present(&p.id, p.len) {
                Some(self.packs.add(p))
            } else {
                None
            };
            pack_pos.push(pos);
        }
        Adding {
            list,
            list_pos,
            pack_pos,
            ids: Vec::new(),
        }
    }

    fn push(&mut self, a: &mut Adding, packs: &[PackRef], e: &IndexEntry) {
        let ordinal = a.ids.len();
        a.ids.push(e.entry.id);
        match a.pack_pos[e.pack as usize] {
            Some(pack) => {
                self.sealed = false;
                self.chunks.push((
                    e.entry.id,
                    Location {
                        pack,
                        entry: Slot::from(&e.entry),
                        list: a.list_pos,
                        // Index bodies are bounded well below 2³² entries (1 GiB / 38 bytes).
                        ordinal: ordinal as u32,
                    },
                ));
            }
            None => {
                self.lost.insert(e.entry.id, packs[e.pack as usize].id);
            }
        }
    }

    fn end(&mut self, mut a: Adding) {
        a.ids.shrink_to_fit();
        self.list_ids.insert(a.list, a.ids);
    }

    /// Forgets the names (index object, ordinal → chunk id), keeping locations and
    /// the names of located chunks (`name_of`): once a backup has resolved its
    /// parent's page maps it needs no other, and they take 32 bytes a chunk.
    pub fn drop_names(&mut self) {
        self.list_ids = IdMap::default();
    }

    /// Makes room for `additional` more chunks without growing the table again.
    pub fn reserve(&mut self, additional: usize) {
        self.chunks.reserve(additional);
    }

    /// Records an index object that could not be read. Its chunks are unknown (a
    /// backup stores them again); page maps naming it cannot be resolved.
    pub fn mark_damaged(&mut self, list: Id, why: String) {
        self.damaged.insert(list, why);
    }

    /// Why index object `list` could not be read, if it could not.
    pub fn damaged(&self, list: &Id) -> Option<&str> {
        self.damaged.get(list).map(String::as_str)
    }

    /// Whether index object `list` was read.
    pub fn has_list(&self, list: &Id) -> bool {
        self.list_ids.contains_key(list)
    }

    /// The index objects added, numbered as [`Location::list`] numbers them.
    pub fn lists(&self) -> &[Id] {
        &self.lists
    }

    /// The index objects that could not be read.
    pub fn damaged_lists(&self) -> impl Iterator<Item = &Id> {
        self.damaged.keys()
    }

    /// The locations [`ChunkIndex::seal`] set aside: other copies of chunks
    /// located more than once.
    pub fn duplicates(&self) -> &[(ChunkId, Location)] {
        &self.dups
    }

    /// Every located chunk.
    pub fn iter(&self) -> impl Iterator<Item = (&ChunkId, &Location)> {
        self.chunks.iter().map(|(id, l)| (id, l))
    }

    /// Ends loading: sorts the chunks by id, keeping one location for a chunk
    /// found in several packs ([`copy_rank`], then the first added).
    /// Lookups need it; adding more unseals.
    pub fn seal(&mut self) {
        if !self.sealed {
            // Of a chunk stored twice, a copy stored whole wins, then the
            // first-loaded, as in load order. Compared by the ids' first 8 bytes
            // first: ids are uniform, so these almost always decide, where
            // comparing whole ids was a memcmp call per comparison (half of the
            // sort's time).
            self.chunks.par_sort_unstable_by(|a, b| {
                prefix(&a.0).cmp(&prefix(&b.0)).then_with(|| {
                    (a.0, copy_rank(a.1.entry.codec), a.1.list, a.1.ordinal).cmp(&(
                        b.0,
                        copy_rank(b.1.entry.codec),
                        b.1.list,
                        b.1.ordinal,
                    ))
                })
            });
            // The other copies are kept aside (they are rare: chunks stored twice by
            // concurrent backups or a copy): the local index cache keeps every copy,
            // so that a prune deleting one leaves it the others.
            let mut dups = std::mem::take(&mut self.dups);
            self.chunks.dedup_by(|later, first| {
                let same = later.0 == first.0;
                if same {
                    dups.push(*later);
                }
                same
            });
            self.dups = dups;
            self.chunks.shrink_to_fit();
            self.prefixes = self.chunks.iter().map(|(id, _)| prefix(id)).collect();
            self.sealed = true;
        }
    }

    fn find(&self, id: &ChunkId) -> Option<&Location> {
        self.run(prefix(id))
            .find(|&i| self.chunks[i].0 == *id)
            .map(|i| &self.chunks[i].1)
    }

    /// The positions in `chunks` of the ids whose first 8 bytes are `key`
    /// (big-endian): empty, or one but by a 2^-64 accident.
    fn run(&self, key: u64) -> std::ops::Range<usize> {
        debug_assert!(
            self.sealed || self.chunks.is_empty(),
            "lookup in an unsealed index"
        );
        run_of(&self.prefixes, key)
    }

    /// The located chunks whose first 8 bytes, big-endian, are `key`: how a
    /// delta blob's base prefix is resolved (store/bases.rs).
    pub fn sharing(&self, key: u64) -> Vec<ChunkId> {
        self.run(key).map(|i| self.chunks[i].0).collect()
    }

    /// The one located chunk whose first 8 bytes, big-endian, are `key`, and
    /// where it is; `None` when there is none or several (a 2^-64 accident or
    /// a hostile store). [`ChunkIndex::sharing`] then [`ChunkIndex::get`] in
    /// one search and without a `Vec`; a restore resolves the links of its
    /// chains many at a time ([`ChunkIndex::unique_many`]).
    pub fn unique(&self, key: u64) -> Option<(ChunkId, Location)> {
        let r = self.run(key);
        (r.len() == 1).then(|| self.chunks[r.start])
    }

    /// [`ChunkIndex::unique`] of each of `keys`, searched together: the
    /// searches advance a probe at a time in step, so the probes of one step
    /// are loads independent of each other that the CPU has in flight at once,
    /// where one search after another waited on each probe's cache miss in
    /// turn. A restore resolves a window's links this way, a level at a time:
    /// the misses were most of the time a restore with deltas spent on its own
    /// (1 GiB after 144 steps, ~900,000 chunks in the index).
    pub fn unique_many(&self, keys: &[u64]) -> Vec<Option<(ChunkId, Location)>> {
        debug_assert!(
            self.sealed || self.chunks.is_empty(),
            "lookup in an unsealed index"
        );
        let found = unique_of_many(&self.prefixes, keys);
        // The found entries' loads in flight together too, before they are read.
        let mut touched = 0u32;
        for &i in found.iter().flatten() {
            touched ^= self.chunks[i].1.entry.offset;
        }
        std::hint::black_box(touched);
        found.iter().map(|f| f.map(|i| self.chunks[i])).collect()
    }

    pub fn get(&self, id: &ChunkId) -> Option<&Location> {
        self.find(id)
    }

    /// The location of each stored chunk of `chunks` (`None` for a zero chunk or one
    /// not in the index), as [`ChunkIndex::get`] gives it, found by one merge of the
    /// sorted wanted ids with the index. A restore looks up a quarter of a million
    /// chunks in page order, which is random in id order: searched one by one, each
    /// probe was a cache miss (100 ms of CPU for 1 GiB); sorted, both arrays are
    /// read front to back.
    pub fn locate_all(&self, chunks: &[ChunkRef]) -> Vec<Option<Location>> {
        debug_assert!(
            self.sealed || self.chunks.is_empty(),
            "lookup in an unsealed index"
        );
        let mut wanted: Vec<(u64, u32)> = chunks
            .iter()
            .enumerate()
            .filter_map(|(pos, c)| match c {
                ChunkRef::Stored(id) => Some((prefix(id), pos as u32)),
                ChunkRef::Zero => None,
            })
            .collect();
        wanted.par_sort_unstable();
        let p = &self.prefixes;
        // Parts of the sorted list merge on every core, each from where its first
        // prefix is in the index.
        let part = wanted
            .len()
            .div_ceil(4 * rayon::current_num_threads())
            .max(1);
        let hits: Vec<Vec<(u32, Location)>> = wanted
            .par_chunks(part)
            .map(|part| {
                let mut j = p.partition_point(|&x| x < part[0].0);
                let mut hits = Vec::with_capacity(part.len());
                for &(key, pos) in part {
                    while j < p.len() && p[j] < key {
                        j += 1;
                    }
                    let ChunkRef::Stored(id) = &chunks[pos as usize] else {
                        continue;
                    };
                    // Ids sharing these 8 bytes (vanishingly rare) sit next to each other.
                    if let Some(k) = (j..p.len())
                        .take_while(|&k| p[k] == key)
                        .find(|&k| self.chunks[k].0 == *id)
                    {
                        hits.push((pos, self.chunks[k].1));
                    }
                }
                hits
            })
            .collect();
        let mut out = vec![None; chunks.len()];
        for (pos, loc) in hits.into_iter().flatten() {
            out[pos as usize] = Some(loc);
        }
        out
    }

    pub fn contains(&self, id: &ChunkId) -> bool {
        self.find(id).is_some()
    }

    /// The packs this index's locations point into.
    pub fn packs(&self) -> &PackTable {
        &self.packs
    }

    pub fn pack_id(&self, pos: u32) -> Id {
        self.packs.id(pos)
    }

    /// The dictionary of the pack at `pos`, if its chunks use one.
    pub fn pack_dict(&self, pos: u32) -> Option<Id> {
        self.packs.dict(pos)
    }

    /// The chunk that entry `ordinal` of index object `list` names.
    pub fn lookup(&self, list: &Id, ordinal: u64) -> Option<ChunkId> {
        self.list_ids.get(list)?.get(ordinal as usize).copied()
    }

    /// A name (index object, ordinal) of a stored chunk.
    pub fn name_of(&self, id: &ChunkId) -> Option<(Id, u64)> {
        self.find(id)
            .map(|l| (self.lists[l.list as usize], l.ordinal as u64))
    }

    /// Number of distinct chunks with a location (once sealed).
    pub fn entries(&self) -> usize {
        self.chunks.len()
    }

    /// For a chunk with no location: the missing pack an index object put it in.
    pub fn lost_pack(&self, id: &ChunkId) -> Option<Id> {
        if self.find(id).is_some() {
            return None;
        }
        self.lost.get(id).copied()
    }

    /// The error for chunk `id` of `snapshot` when it has no location: its pack is
    /// missing (if an index object names one), else the chunk is unknown.
    pub(crate) fn unlocated(&self, snapshot: SnapshotId, id: &ChunkId) -> crate::Error {
        match self.lost_pack(id) {
            Some(pack) => crate::Error::PackMissing {
                snapshot,
                chunk: *id,
                pack: crate::layout::pack(&pack),
            },
            None => crate::Error::ChunkMissing {
                snapshot,
                chunk: *id,
            },
        }
    }
}

/// Where an interpolation search of the sorted prefixes for one key stands:
/// the range still searched, the position of a prefix equal to the key, or
/// none there.
#[derive(Clone, Copy)]
enum Search {
    Within(usize, usize),
    At(usize),
    Absent,
}

/// The positions in `p` (sorted prefixes of ids, as [`prefix`] makes them) of
/// the prefixes equal to `key`: empty, or one but by a 2^-64 accident.
/// Interpolation search: ids are uniform, so each probe lands near the key and
/// a lookup takes a few probes, not log2(n).
pub(crate) fn run_of(p: &[u64], key: u64) -> std::ops::Range<usize> {
    if p.is_empty() {
        return 0..0;
    }
    let mut search = Search::Within(0, p.len() - 1);
    loop {
        match search {
            Search::Within(lo, hi) => search = probe(p, key, lo, hi),
            Search::At(at) => return around(p, at, key),
            Search::Absent => return 0..0,
        }
    }
}

/// For each of `keys`, the position in `p` of the one prefix equal to it
/// (`None`: none, or several), the searches advanced a probe at a time in
/// step ([`ChunkIndex::unique_many`] says why).
pub(crate) fn unique_of_many(p: &[u64], keys: &[u64]) -> Vec<Option<usize>> {
    let mut searches: Vec<Search> = match p.len() {
        0 => vec![Search::Absent; keys.len()],
        n => vec![Search::Within(0, n - 1); keys.len()],
    };
    let mut open = keys.len();
    while open > 0 {
        open = 0;
        for (s, &key) in searches.iter_mut().zip(keys) {
            if let Search::Within(lo, hi) = *s {
                *s = probe(p, key, lo, hi);
                open += matches!(s, Search::Within(..)) as usize;
            }
        }
    }
    searches
        .iter()
        .zip(keys)
        .map(|(s, &key)| match *s {
            Search::At(i) => {
                let r = around(p, i, key);
                (r.len() == 1).then_some(r.start)
            }
            _ => None,
        })
        .collect()
}

/// One probe of the interpolation search for `key` within `p[lo..=hi]`:
/// ids are uniform, so the probe lands near the key.
fn probe(p: &[u64], key: u64, lo: usize, hi: usize) -> Search {
    if key < p[lo] || key > p[hi] {
        return Search::Absent;
    }
    let span = (p[hi] - p[lo]) as u128;
    let pos = ((key - p[lo]) as u128 * (hi - lo) as u128)
        .checked_div(span)
        .map_or(lo, |d| lo + d as usize);
    match p[pos].cmp(&key) {
        std::cmp::Ordering::Equal => Search::At(pos),
        std::cmp::Ordering::Less if pos < hi => Search::Within(pos + 1, hi),
        std::cmp::Ordering::Greater if pos > lo => Search::Within(lo, pos - 1),
        _ => Search::Absent,
    }
}

/// The positions of every prefix equal to `key`, found at `at`: ids sharing
/// these 8 bytes (a 2^-64 accident) sit next to each other.
fn around(p: &[u64], at: usize, key: u64) -> std::ops::Range<usize> {
    let mut first = at;
    while first > 0 && p[first - 1] == key {
        first -= 1;
    }
    let mut end = at + 1;
    while end < p.len() && p[end] == key {
        end += 1;
    }
    first..end
}

/// The first 8 bytes of an id as a number ordered like the id itself.
pub(crate) fn prefix(id: &ChunkId) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&id.0[..8]);
    u64::from_be_bytes(first)
}

/// How a copy of a chunk stored more than once ranks (the lowest is kept):
/// one stored whole before a delta. Every reader then meets a chain no deeper
/// than the one its writer recorded. A backup records a delta's depth from the
/// copy of its base it read; if readers took a delta copy where that backup
/// read a whole one (two machines writing to one store, one without the base
/// in its base cache), the chain could pass the depth bound, and a restore
/// would refuse it. `prune`, which keeps one copy, keeps this one.
pub(crate) fn copy_rank(codec: Codec) -> u8 {
    u8::from(codec == Codec::ZstdDelta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pack::Codec;

    fn loc(n: u32) -> Location {
        Location {
            pack: n,
            entry: Slot {
                offset: n,
                stored_len: 1,
                raw_len: 1,
                codec: Codec::Raw,
            },
            list: 0,
            ordinal: n,
        }
    }

    /// An index object decoded apart and added ([`ChunkIndex::add_decoded`],
    /// how the whole index is loaded) leaves the index as adding its bytes
    /// entry by entry does: the same locations, names, lost chunks and rows,
    /// with a pack present or not; and an object whose decoding fails part way
    /// (its body cut short, resealed) keeps the entries before the cut in both,
    /// with the same error.
    #[test]
    fn an_object_decoded_apart_adds_what_its_bytes_add() {
        use crate::format::pack::{PackBuilder, DELTA_HEADER_MIN};
        let mut b = PackBuilder::new();
        for i in 0..12u8 {
            let data = vec![i; 40 + DELTA_HEADER_MIN];
            b.push(Id::of_chunk(&data), &data, data.len() as u32, Codec::Raw);
        }
        let (pack, bytes, entries) = b.finish();
        let pack = PackRef {
            id: pack,
            len: bytes.len() as u64,
            dict: None,
        };
        let mut body = IndexBody::of_one_pack(pack, entries);
        for i in [1usize, 4, 5, 11] {
            body.entries[i].entry.codec = Codec::ZstdDelta;
            body.entries[i].entry.raw_len = 4096;
            body.deltas.push(DeltaBase {
                ordinal: i as u64,
                base: Id([i as u8; 32]),
                depth: 1 + i as u8 % 3,
                whole_len: 100 * i as u32,
            });
        }
        let whole = body.encode_as(2).unwrap();
        let list = Id::of_object(&whole);
        let mut objects = vec![whole.clone()];
        // Cut inside the entries (the body's stored and raw lengths follow the cut).
        for keep in [whole.len() - 1, whole.len() - 100, whole.len() - 250] {
            let mut cut = whole[..keep].to_vec();
            let stored = (keep - crate::format::envelope::HEADER_LEN) as u32;
            cut[12..16].copy_from_slice(&stored.to_le_bytes());
            cut[16..20].copy_from_slice(&stored.to_le_bytes());
            objects.push(crate::format::fuzz::seal_envelope(&cut));
        }
        for (n, bytes) in objects.iter().enumerate() {
            for present in [true, false] {
                let (mut streamed, mut apart) = (ChunkIndex::default(), ChunkIndex::default());
                let (mut rows_s, mut rows_a) = (Vec::new(), Vec::new());
                let got_s = streamed.add_encoded_with_bases(
                    list,
                    bytes,
                    |_, _| present,
                    |id, b| rows_s.push((*id, *b)),
                );
                let got_a = apart.add_decoded(
                    list,
                    DecodedObject::decode(bytes),
                    |_, _| present,
                    |id, b| rows_a.push((*id, *b)),
                );
                assert_eq!(format!("{got_s:?}"), format!("{got_a:?}"), "object {n}");
                assert_eq!(got_s.is_ok(), n == 0, "object {n}");
                assert_eq!(rows_s, rows_a, "object {n}");
                assert_eq!(format!("{streamed:?}"), format!("{apart:?}"), "object {n}");
                // The cut objects gave some entries before failing, not all.
                let located = apart.chunks.len() + apart.lost.len();
                assert!(
                    located > 0 && (n == 0) == (located == 12),
                    "object {n}: {located}"
                );
                if n == 0 {
                    assert_eq!(rows_a.len(), 4);
                }
            }
        }
    }

    /// Of a chunk located twice, the copy stored whole is kept whichever was
    /// added first; of two deltas, the first added; the others go aside.
    #[test]
    fn a_copy_stored_whole_is_kept_before_a_delta() {
        let id = Id::of_object(b"twice");
        let with = |n: u32, codec: Codec| Location {
            entry: Slot {
                codec,
                ..loc(n).entry
            },
            ..loc(n)
        };
        let cases = [
            ([Codec::ZstdDelta, Codec::Zstd], 1),
            ([Codec::Zstd, Codec::ZstdDelta], 0),
            ([Codec::ZstdDelta, Codec::Raw], 1),
            ([Codec::ZstdDelta, Codec::ZstdDelta], 0),
            ([Codec::ZstdDict, Codec::Zstd], 0),
        ];
        for (codecs, kept) in cases {
            let mut index = ChunkIndex::default();
            for (n, codec) in codecs.iter().enumerate() {
                index.chunks.push((id, with(n as u32, *codec)));
            }
            index.seal();
            let want = with(kept, codecs[kept as usize]);
            assert_eq!(index.get(&id), Some(&want), "{codecs:?}");
            assert_eq!(index.duplicates().len(), 1, "{codecs:?}");
            assert_ne!(index.duplicates()[0].1, want, "{codecs:?}");
        }
    }

    #[test]
    fn interpolation_search_finds_every_chunk_and_no_other() {
        for n in [0u32, 1, 2, 100, 50_000] {
            let mut index = ChunkIndex::default();
            for i in 0..n {
                index.chunks.push((Id::of_object(&i.to_le_bytes()), loc(i)));
            }
            // A duplicate later in load order does not replace the first location.
            if n > 0 {
                index
                    .chunks
                    .push((Id::of_object(&0u32.to_le_bytes()), loc(u32::MAX)));
            }
            index.seal();
            assert_eq!(index.entries(), n as usize);
            for i in 0..n {
                assert_eq!(index.get(&Id::of_object(&i.to_le_bytes())), Some(&loc(i)));
            }
            for i in n..n + 1000 {
                assert!(!index.contains(&Id::of_object(&i.to_le_bytes())));
            }
            // Extremes of the id space.
            assert!(!index.contains(&Id([0; 32])));
            assert!(!index.contains(&Id([0xff; 32])));
        }
    }

    /// `sharing` gives every located chunk whose id begins with a prefix, and
    /// only those: what a delta blob's 8-byte base prefix resolves to.
    #[test]
    fn sharing_finds_every_chunk_of_a_prefix() {
        let a = Id::of_object(b"a");
        let mut twin = a.0;
        twin[31] ^= 1;
        let b = Id(twin);
        let c = Id::of_object(b"c");
        let mut index = ChunkIndex::default();
        for (i, id) in [a, b, c].into_iter().enumerate() {
            index.chunks.push((id, loc(i as u32)));
        }
        for i in 0..1000u32 {
            index.chunks.push((Id::of_object(&i.to_le_bytes()), loc(i)));
        }
        index.seal();
        let mut got = index.sharing(prefix(&a));
        got.sort();
        let mut want = vec![a, b];
        want.sort();
        assert_eq!(got, want);
        assert_eq!(index.sharing(prefix(&c)), vec![c]);
        assert!(index.sharing(prefix(&Id::of_object(b"absent"))).is_empty());
        assert!(ChunkIndex::default().sharing(prefix(&a)).is_empty());
        // `unique`: the one chunk with its location, none for a shared or absent prefix.
        assert_eq!(index.unique(prefix(&c)), Some((c, *index.get(&c).unwrap())));
        assert_eq!(index.unique(prefix(&a)), None);
        assert_eq!(index.unique(prefix(&Id::of_object(b"absent"))), None);
        assert_eq!(ChunkIndex::default().unique(prefix(&a)), None);
    }

    /// Id `n` of [`index_of_shared`]: every third id shares its first 8
    /// bytes with its neighbours.
    fn id(n: u32) -> Id {
        let mut b = Id::of_object(&(n / 3 * 3).to_le_bytes()).0;
        b[31] = n as u8;
        Id(b)
    }

    /// A sealed index of the ids [`id`] gives for `stored`, located at `loc(n)`.
    fn index_of_shared(stored: &[u32]) -> ChunkIndex {
        let mut index = ChunkIndex::default();
        for &n in stored {
            index.chunks.push((id(n), loc(n)));
        }
        index.seal();
        index
    }

    proptest::proptest! {
        /// `locate_all` gives what `get` gives, chunk by chunk: present, absent,
        /// repeated, zero, and ids sharing a prefix with another.
        #[test]
        fn locate_all_agrees_with_get(
            stored in proptest::collection::vec(0u32..400, 0..300),
            asked in proptest::collection::vec((0u32..500, 0u8..4), 0..600),
        ) {
            let index = index_of_shared(&stored);
            let chunks: Vec<ChunkRef> = asked
                .iter()
                .map(|&(n, kind)| if kind == 0 { ChunkRef::Zero } else { ChunkRef::Stored(id(n)) })
                .collect();
            let want: Vec<Option<Location>> = chunks
                .iter()
                .map(|c| match c {
                    ChunkRef::Stored(id) => index.get(id).copied(),
                    ChunkRef::Zero => None,
                })
                .collect();
            proptest::prop_assert_eq!(index.locate_all(&chunks), want);
        }

        /// `unique_many` gives what `unique` gives, key by key: a stored
        /// prefix alone, one shared by two or three stored ids, absent ones
        /// (between stored prefixes, below and above them all), repeated keys,
        /// and any index size from empty up.
        #[test]
        fn unique_many_agrees_with_unique(
            stored in proptest::collection::vec(0u32..400, 0..300),
            asked in proptest::collection::vec(0u32..500, 0..300),
            stray in proptest::collection::vec(proptest::prelude::any::<u64>(), 0..20),
        ) {
            let index = index_of_shared(&stored);
            let mut keys: Vec<u64> = asked.iter().map(|&n| prefix(&id(n))).collect();
            keys.extend(stray);
            keys.extend([0, u64::MAX]);
            let want: Vec<_> = keys.iter().map(|&k| index.unique(k)).collect();
            proptest::prop_assert_eq!(index.unique_many(&keys), want);
        }
    }

    #[test]
    fn ids_sharing_a_prefix_are_told_apart() {
        let mut index = ChunkIndex::default();
        let ids: Vec<Id> = (0..5u8)
            .map(|i| {
                let mut b = [7u8; 32];
                b[31] = i * 2;
                Id(b)
            })
            .collect();
        for (i, id) in ids.iter().enumerate() {
            index.chunks.push((*id, loc(i as u32)));
        }
        index.chunks.push((Id([1; 32]), loc(9)));
        index.chunks.push((Id([9; 32]), loc(10)));
        index.seal();
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(index.get(id), Some(&loc(i as u32)));
            let mut miss = id.0;
            miss[31] += 1;
            assert!(!index.contains(&Id(miss)));
        }
        assert_eq!(index.get(&Id([9; 32])), Some(&loc(10)));
    }
}

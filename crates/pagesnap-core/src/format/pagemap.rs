//! Page maps: the ordered chunk list of a snapshot, stored as skip-deltas.
//!
//! Writing the full list for every snapshot would cost 33 bytes per chunk per
//! snapshot (8.6 MB for a 1 GiB database of 4 KiB pages). Instead each backup
//! writes a page map that lists only the positions where its chunk list differs
//! from a *reference* map, chosen like Subversion's skip-deltas: the k-th map since
//! the last full map refers to map number `k − lowbit(k)` (1→0, 2→0, 3→2, 4→0,
//! 5→4, 6→4, 7→6, 8→0, …). Resolving any map reads at most popcount(k) ≤ 17 maps
//! (a full map is forced at k = 2¹⁶), each delta covers at most lowbit(k) backups,
//! and on average a change is repeated in about log₂(k)/2 later maps.
//!
//! Positions name chunks compactly: `New` takes the next chunk of this backup's own
//! index object (in the order the map mentions them), `At` names entry `ordinal` of
//! an index object listed in the map's table. The 32-byte chunk id is written once
//! in the whole store, in the index object of the backup that stored the chunk.

use super::envelope::{self, Kind};
use super::wire::{take_id, take_option_id, take_seq, take_varint_u32, take_varint_u64};
use super::{FormatError, Result};
use crate::types::{ChunkId, ChunkRef, Id};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Hard bound on the number of chunks of one image.
pub const MAX_CHUNKS: u64 = 1 << 32;
/// A full map is written at the latest after this many deltas, bounding chains.
pub const MAX_SEQ: u64 = 1 << 16;

/// How a position of a page map names its chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MapRef {
    /// An all-zero chunk (never stored).
    Zero,
    /// The next not yet used entry of `new_list`, in map order.
    New,
    /// Entry `ordinal` of the index object `lists[list]`.
    At { list: u32, ordinal: u64 },
}

/// One position where a map differs from its reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Positions skipped since the previous change (index − previous index − 1).
    pub skip: u64,
    pub chunk: MapRef,
}

/// A page map decoded but for its changes ([`PageMap::decode_head`]).
pub struct MapHead {
    /// The map, with no changes yet.
    pub map: PageMap,
    /// Its body, whose changes start at `changes_at`.
    body: Vec<u8>,
    changes_at: usize,
}

impl MapHead {
    /// The whole map: its changes decoded, and checked.
    pub fn finish(self) -> Result<PageMap> {
        let mut map = self.map;
        map.changes = take_changes(&self.body[self.changes_at..])?;
        map.check_changes()?;
        Ok(map)
    }
}

/// A page map object (`maps/<id>`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageMap {
    /// Positions in the chunk list it describes.
    pub chunk_count: u64,
    /// Maps since the last full map; 0 for a full map.
    pub seq: u64,
    /// The map this one is a delta against; `None` for a full map.
    pub reference: Option<Id>,
    /// The index object of the backup that wrote this map, whose entries `New` takes in order.
    pub new_list: Option<Id>,
    /// Index objects named by `At`.
    pub lists: Vec<Id>,
    pub changes: Vec<Change>,
}

impl PageMap {
    pub fn encode(&self) -> Vec<u8> {
        envelope::encode(Kind::PageMap, self)
    }

    /// Decodes and checks the structure (bounds, a reference exactly when seq > 0).
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        Self::decode_head(bytes)?.finish()
    }

    /// Decodes and checks all but the changes, which [`MapHead::finish`] decodes
    /// and checks: a restore learns which index objects to read from the heads of
    /// its chain, and reads them while the changes are decoded (a full map of a
    /// 1 GiB image has a quarter of a million, ~7 ms).
    pub fn decode_head(bytes: &[u8]) -> Result<MapHead> {
        let body = envelope::open(Kind::PageMap, bytes)?.into_owned();
        let (head, rest) = take_head(&body)?;
        let changes_at = body.len() - rest.len();
        if head.chunk_count > MAX_CHUNKS {
            return Err(FormatError::TooLarge {
                what: "chunk count",
                value: head.chunk_count,
                limit: MAX_CHUNKS,
            });
        }
        if (head.seq == 0) != head.reference.is_none() || head.seq > MAX_SEQ {
            return Err(FormatError::Invalid(
                "page map: sequence number and reference disagree".into(),
            ));
        }
        Ok(MapHead {
            map: head,
            body,
            changes_at,
        })
    }

    /// Checks the changes against the rest of the map.
    fn check_changes(&self) -> Result<()> {
        let bad = |s: &str| Err(FormatError::Invalid(format!("page map: {s}")));
        if self.changes.len() as u64 > self.chunk_count {
            return bad("more changes than positions");
        }
        for c in &self.changes {
            match c.chunk {
                MapRef::At { list, .. } if list as usize >= self.lists.len() => {
                    return bad("names a list it does not have")
                }
                MapRef::New if self.new_list.is_none() => {
                    return bad("takes new chunks but has no list of them")
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The chunk list: `reference` (the resolved list of `self.reference`, empty for
    /// a full map) with the changes applied. `lookup(list, ordinal)` names index entries.
    pub fn apply(
        &self,
        reference: &[ChunkRef],
        lookup: impl Fn(&Id, u64) -> Option<ChunkId>,
    ) -> Result<Vec<ChunkRef>> {
        self.apply_with(reference, ChunkRef::Zero, |list, ordinal| {
            lookup(list, ordinal).map(ChunkRef::Stored)
        })
    }

    /// [`PageMap::apply`] for any name of a position: `zero` for a zero chunk, and
    /// what `lookup` gives for an index entry. A restore resolves (index object,
    /// ordinal) pairs packed in a `u64`, a quarter of the bytes of chunk ids.
    pub fn apply_with<T: Copy>(
        &self,
        reference: &[T],
        zero: T,
        lookup: impl Fn(&Id, u64) -> Option<T>,
    ) -> Result<Vec<T>> {
        // Every position is either inherited from the reference or named by a
        // change, so a count beyond both is damage; checking it first bounds the
        // allocation below by data actually decoded (a hostile count cannot OOM).
        if self.chunk_count > reference.len() as u64 + self.changes.len() as u64 {
            return Err(FormatError::Invalid(format!(
                "page map claims {} positions; its reference and changes cover at most {}",
                self.chunk_count,
                reference.len() + self.changes.len()
            )));
        }
        let n = self.chunk_count as usize;
        let mut out: Vec<Option<T>> = Vec::with_capacity(n);
        out.extend(reference.iter().take(n).map(|c| Some(*c)));
        out.resize(n, None);
        let mut pos = 0u64;
        let mut next_new = 0u64;
        for c in &self.changes {
            let i = pos
                .checked_add(c.skip)
                .filter(|&i| i < self.chunk_count)
                .ok_or_else(|| {
                    FormatError::Invalid("page map change beyond the chunk count".into())
                })?;
            let (list, ordinal) = match c.chunk {
                MapRef::Zero => {
                    out[i as usize] = Some(zero);
                    pos = i + 1;
                    continue;
                }
                MapRef::New => {
                    next_new += 1;
                    (self.new_list.as_ref(), next_new - 1)
                }
                MapRef::At { list, ordinal } => (self.lists.get(list as usize), ordinal),
            };
            let list =
                list.ok_or_else(|| FormatError::Invalid("page map names a missing list".into()))?;
            let named = lookup(list, ordinal).ok_or_else(|| {
                FormatError::Invalid(format!(
                    "page map names entry {ordinal} of index {}, which has no such entry",
                    list.short()
                ))
            })?;
            out[i as usize] = Some(named);
            pos = i + 1;
        }
        out.into_iter()
            .enumerate()
            .map(|(i, c)| {
                c.ok_or_else(|| {
                    FormatError::Invalid(format!(
                        "position {i} is beyond the reference and not in the map"
                    ))
                })
            })
            .collect()
    }
}

/// Reads a page map's body as `postcard::from_bytes` does, with the two readers
/// [`PageMap::decode`] uses; the proptests hold it to postcard (the same bytes
/// accepted and refused, trailing bytes ignored).
#[cfg(test)]
fn take_map(b: &[u8]) -> std::result::Result<PageMap, postcard::Error> {
    let (mut map, b) = take_head(b)?;
    map.changes = take_changes(b)?;
    Ok(map)
}

/// A page map's fields before its changes (left empty), and the bytes after them.
///
/// Read by hand, not through serde: a full map of a 1 GiB image is a quarter of
/// a million changes (133 bytes compressed), which serde visited element by
/// element; its decode took ~10 ms before a restore could read the index objects
/// the map names. Now 7 ms, most of it page faults on the list of changes.
fn take_head(b: &[u8]) -> std::result::Result<(PageMap, &[u8]), postcard::Error> {
    let (chunk_count, b) = take_varint_u64(b)?;
    let (seq, b) = take_varint_u64(b)?;
    let (reference, b) = take_option_id(b)?;
    let (new_list, b) = take_option_id(b)?;
    let (lists, b) = take_seq(b, 32, take_id)?;
    let map = PageMap {
        chunk_count,
        seq,
        reference,
        new_list,
        lists,
        changes: Vec::new(),
    };
    Ok((map, b))
}

/// A page map's changes (the sequence that ends its body; what follows is ignored).
fn take_changes(b: &[u8]) -> std::result::Result<Vec<Change>, postcard::Error> {
    // A change takes at least two bytes (its skip and its variant).
    let (changes, _) = take_seq(b, 2, |b| {
        let (skip, rest) = take_varint_u64(b)?;
        let (variant, rest) = take_varint_u32(rest)?;
        let (chunk, rest) = match variant {
            0 => (MapRef::Zero, rest),
            1 => (MapRef::New, rest),
            2 => {
                let (list, rest) = take_varint_u32(rest)?;
                let (ordinal, rest) = take_varint_u64(rest)?;
                (MapRef::At { list, ordinal }, rest)
            }
            // serde's derived visitor refuses an unknown variant index.
            _ => return Err(postcard::Error::SerdeDeCustom),
        };
        Ok((Change { skip, chunk }, rest))
    })?;
    Ok(changes)
}

/// The sequence number of the map a map number `k` (≥ 1) is a delta against.
pub fn reference_seq(k: u64) -> u64 {
    k & (k - 1)
}

/// Positions where `target` differs from `reference` (ascending), lazily: a full
/// map of a large image would otherwise hold a second copy of its chunk list.
pub fn diff<'a>(
    reference: &'a [ChunkRef],
    target: &'a [ChunkRef],
) -> impl Iterator<Item = (u64, ChunkRef)> + Clone + 'a {
    target
        .iter()
        .enumerate()
        .filter(move |(i, c)| reference.get(*i) != Some(*c))
        .map(|(i, c)| (i as u64, *c))
}

/// Whether to write a full map rather than a delta of `delta_len` positions: when the
/// delta would cover half the image a full map costs about as much and shortens chains.
pub fn should_write_full(delta_len: usize, chunk_count: usize, next_seq: u64) -> bool {
    next_seq >= MAX_SEQ || delta_len * 2 > chunk_count
}

/// The ordinal of each chunk a backup stored, in its index object, by the chunk's
/// position among the `count` new chunks: first the chunks the map's changes
/// mention, at their first position (the order `New` takes them), then the others
/// in position order. `position_of` gives a new chunk's position (`None`: not new).
///
/// (A vector of ordinals by position, not a map by id: a first backup of a 2 GiB
/// database has half a million new chunks, and a map repeated every 32-byte id.)
pub fn new_chunk_ordinals(
    changes: impl Iterator<Item = (u64, ChunkRef)>,
    count: usize,
    position_of: impl Fn(&ChunkId) -> Option<u32>,
) -> Vec<u32> {
    const UNSET: u32 = u32::MAX;
    let mut ord = vec![UNSET; count];
    let mut next = 0u32;
    for (_, c) in changes {
        if let ChunkRef::Stored(id) = c {
            if let Some(o) = position_of(&id).and_then(|p| ord.get_mut(p as usize)) {
                if *o == UNSET {
                    *o = next;
                    next += 1;
                }
            }
        }
    }
    for o in ord.iter_mut().filter(|o| **o == UNSET) {
        *o = next;
        next += 1;
    }
    ord
}

/// The ordinal of a chunk in this backup's own index object (`None`: not in it).
pub type OrdinalOf<'a> = &'a dyn Fn(&ChunkId) -> Option<u32>;

/// Encodes changed positions as map references.
///
/// `own` is this backup's index object and the ordinal of each chunk it lists (as
/// [`new_chunk_ordinals`] gave them; `None` for chunks it does not list); `name_of`
/// gives (index object, ordinal) for chunks stored earlier.
pub fn encode_changes(
    changes: impl Iterator<Item = (u64, ChunkRef)>,
    own: Option<(Id, OrdinalOf<'_>)>,
    name_of: impl Fn(&ChunkId) -> Option<(Id, u64)>,
) -> Result<(Vec<Change>, Vec<Id>)> {
    let mut lists: Vec<Id> = Vec::new();
    let mut list_pos: HashMap<Id, u32> = HashMap::new();
    let mut table = |id: Id| -> u32 {
        *list_pos.entry(id).or_insert_with(|| {
            lists.push(id);
            lists.len() as u32 - 1
        })
    };
    let mut out = Vec::new();
    let mut next_new = 0u64;
    let mut prev_end = 0u64;
    for (pos, c) in changes {
        let chunk = match c {
            ChunkRef::Zero => MapRef::Zero,
            ChunkRef::Stored(id) => match own
                .and_then(|(list, ordinal_of)| Some((list, ordinal_of(&id)? as u64)))
            {
                Some((_, ordinal)) if ordinal == next_new => {
                    next_new += 1;
                    MapRef::New
                }
                Some((list, ordinal)) => MapRef::At {
                    list: table(list),
                    ordinal,
                },
                None => {
                    let (list, ordinal) = name_of(&id).ok_or_else(|| {
                        FormatError::Invalid(format!("chunk {} is in no index object", id.short()))
                    })?;
                    MapRef::At {
                        list: table(list),
                        ordinal,
                    }
                }
            },
        };
        out.push(Change {
            skip: pos - prev_end,
            chunk,
        });
        prev_end = pos + 1;
    }
    Ok((out, lists))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_ref() -> impl Strategy<Value = ChunkRef> {
        prop_oneof![
            Just(ChunkRef::Zero),
            (0u8..12).prop_map(|b| ChunkRef::Stored(Id([b; 32])))
        ]
    }

    #[test]
    fn skip_delta_references() {
        let refs: Vec<u64> = (1..=8).map(reference_seq).collect();
        assert_eq!(refs, vec![0, 0, 2, 0, 4, 4, 6, 0]);
    }

    /// A tiny store of index objects: list id → chunk ids.
    struct Lists(HashMap<Id, Vec<ChunkId>>);

    impl Lists {
        fn lookup(&self, list: &Id, ordinal: u64) -> Option<ChunkId> {
            self.0.get(list)?.get(ordinal as usize).copied()
        }
        fn name_of(&self, id: &ChunkId) -> Option<(Id, u64)> {
            self.0
                .iter()
                .find_map(|(l, ids)| ids.iter().position(|x| x == id).map(|p| (*l, p as u64)))
        }
    }

    /// Encodes `target` against `reference` the way a backup does, returning the map
    /// (after an encode/decode round trip) and the lists it needs.
    fn write_map(lists: &mut Lists, reference: &[ChunkRef], target: &[ChunkRef], n: u8) -> PageMap {
        let known: Vec<ChunkId> = lists.0.values().flatten().copied().collect();
        let mut new_ids: Vec<ChunkId> = Vec::new();
        for c in target {
            if let ChunkRef::Stored(id) = c {
                if !known.contains(id) && !new_ids.contains(id) {
                    new_ids.push(*id);
                }
            }
        }
        let pos: HashMap<ChunkId, u32> = new_ids
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, i as u32))
            .collect();
        let ords = new_chunk_ordinals(diff(reference, target), new_ids.len(), |id| {
            pos.get(id).copied()
        });
        let ordinal_of = |id: &ChunkId| pos.get(id).map(|&p| ords[p as usize]);
        let own_id = Id([200 + n; 32]);
        let own = (!new_ids.is_empty()).then_some((own_id, &ordinal_of as OrdinalOf<'_>));
        let (changes, table) =
            encode_changes(diff(reference, target), own, |id| lists.name_of(id)).unwrap();
        if !new_ids.is_empty() {
            let mut order = new_ids.clone();
            order.sort_by_key(|id| ords[pos[id] as usize]);
            lists.0.insert(own_id, order);
        }
        let m = PageMap {
            chunk_count: target.len() as u64,
            seq: if reference.is_empty() { 0 } else { 1 },
            reference: (!reference.is_empty()).then_some(Id([1; 32])),
            new_list: own.map(|o| o.0),
            lists: table,
            changes,
        };
        PageMap::decode(&m.encode()).unwrap()
    }

    fn arb_map_ref() -> impl Strategy<Value = MapRef> {
        prop_oneof![
            Just(MapRef::Zero),
            Just(MapRef::New),
            (any::<u32>(), any::<u64>()).prop_map(|(list, ordinal)| MapRef::At { list, ordinal }),
        ]
    }

    fn arb_page_map() -> impl Strategy<Value = PageMap> {
        (
            any::<u64>(),
            any::<u64>(),
            proptest::option::of(any::<[u8; 32]>()),
            proptest::option::of(any::<[u8; 32]>()),
            proptest::collection::vec(any::<[u8; 32]>(), 0..4),
            proptest::collection::vec((any::<u64>(), arb_map_ref()), 0..40),
        )
            .prop_map(
                |(chunk_count, seq, reference, new_list, lists, changes)| PageMap {
                    chunk_count,
                    seq,
                    reference: reference.map(Id),
                    new_list: new_list.map(Id),
                    lists: lists.into_iter().map(Id).collect(),
                    changes: changes
                        .into_iter()
                        .map(|(skip, chunk)| Change { skip, chunk })
                        .collect(),
                },
            )
    }

    /// A map's head decodes without its changes; damage in them (here a change
    /// naming a list the map lacks, or more changes than positions) is found by
    /// `finish`, as `decode` finds it.
    #[test]
    fn heads_leave_the_changes_to_finish() {
        let good = PageMap {
            chunk_count: 3,
            seq: 0,
            reference: None,
            new_list: Some(Id([7; 32])),
            lists: vec![Id([1; 32])],
            changes: vec![
                Change {
                    skip: 0,
                    chunk: MapRef::New,
                },
                Change {
                    skip: 1,
                    chunk: MapRef::At {
                        list: 0,
                        ordinal: 5,
                    },
                },
            ],
        };
        let head = PageMap::decode_head(&good.encode()).unwrap();
        assert_eq!(head.map.changes, vec![]);
        assert_eq!(head.map.lists, good.lists);
        assert_eq!(head.finish().unwrap(), good);
        let mut bad_list = good.clone();
        bad_list.changes[1].chunk = MapRef::At {
            list: 1,
            ordinal: 0,
        };
        let mut too_many = good.clone();
        too_many.chunk_count = 1;
        for bad in [bad_list, too_many] {
            let bytes = bad.encode();
            let head = PageMap::decode_head(&bytes).unwrap();
            assert!(head.finish().is_err());
            assert!(PageMap::decode(&bytes).is_err());
        }
        // A head that is itself wrong fails at once.
        let mut no_reference = good.clone();
        no_reference.seq = 3;
        assert!(PageMap::decode_head(&no_reference.encode()).is_err());
    }

    proptest! {
        /// The hand-written reader takes what postcard takes: any map postcard
        /// writes, and the same bytes cut short, damaged or followed by more.
        #[test]
        fn take_map_agrees_with_postcard(
            m in arb_page_map(),
            cut in any::<prop::sample::Index>(),
            flip in any::<(prop::sample::Index, u8)>(),
            tail in proptest::collection::vec(any::<u8>(), 0..4),
        ) {
            let bytes = postcard::to_stdvec(&m).unwrap();
            prop_assert_eq!(take_map(&bytes).ok(), Some(m.clone()));
            let longer = [&bytes[..], &tail].concat();
            prop_assert_eq!(take_map(&longer).ok(), Some(m));
            let short = &bytes[..cut.index(bytes.len())];
            prop_assert_eq!(take_map(short).ok(), postcard::from_bytes::<PageMap>(short).ok());
            let mut damaged = bytes.clone();
            let at = flip.0.index(damaged.len());
            damaged[at] ^= flip.1;
            prop_assert_eq!(take_map(&damaged).ok(), postcard::from_bytes::<PageMap>(&damaged).ok());
        }

        /// And on any bytes at all.
        #[test]
        fn take_map_agrees_with_postcard_on_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..120)) {
            prop_assert_eq!(take_map(&data).ok(), postcard::from_bytes::<PageMap>(&data).ok());
        }
    }

    proptest! {
        #[test]
        fn maps_resolve_to_their_target(steps in proptest::collection::vec(proptest::collection::vec(arb_ref(), 1..80), 1..6)) {
            let mut lists = Lists(HashMap::new());
            let mut reference: Vec<ChunkRef> = Vec::new();
            for (n, target) in steps.iter().enumerate() {
                let m = write_map(&mut lists, &reference, target, n as u8);
                let got = m.apply(&reference, |l, o| lists.lookup(l, o)).unwrap();
                prop_assert_eq!(&got, target);
                reference = got;
            }
        }
    }

    proptest! {
        /// A history of backups as the store writes it: skip-delta references,
        /// full maps when a delta would cover half the image; every map of the
        /// history resolves through its chain (after an encode/decode round trip).
        #[test]
        fn skip_delta_histories_resolve(steps in proptest::collection::vec(
            (proptest::collection::vec((0usize..60, arb_ref()), 0..40), 20usize..60), 1..24)) {
            let mut lists = Lists(HashMap::new());
            // (seq, resolved list, encoded map) of every map written, newest last.
            let mut history: Vec<(u64, Vec<ChunkRef>, PageMap)> = Vec::new();
            let mut current: Vec<ChunkRef> = Vec::new();
            for (n, (edits, len)) in steps.iter().enumerate() {
                current.resize(*len, ChunkRef::Zero);
                for (pos, c) in edits {
                    if *pos < current.len() {
                        current[*pos] = *c;
                    }
                }
                let (seq, reference) = match history.last() {
                    None => (0, Vec::new()),
                    Some((pseq, _, _)) => {
                        let k = pseq + 1;
                        let want = reference_seq(k);
                        let r = history.iter().rev().find(|h| h.0 == want).map(|h| h.1.clone()).unwrap();
                        if should_write_full(diff(&r, &current).count(), current.len(), k) {
                            (0, Vec::new())
                        } else {
                            (k, r)
                        }
                    }
                };
                let mut m = write_map(&mut lists, &reference, &current, n as u8);
                m.seq = seq;
                m.reference = (seq > 0).then_some(Id([1; 32]));
                let m = PageMap::decode(&m.encode()).unwrap();
                let got = m.apply(&reference, |l, o| lists.lookup(l, o)).unwrap();
                prop_assert_eq!(&got, &current);
                history.push((seq, got, m));
            }
            // Chains stay within popcount(seq) + 1 maps.
            for (seq, _, _) in &history {
                let mut depth = 1;
                let mut k = *seq;
                while k > 0 {
                    k = reference_seq(k);
                    depth += 1;
                }
                prop_assert_eq!(depth, seq.count_ones() + 1);
            }
        }
    }

    fn arb_id() -> impl Strategy<Value = Id> {
        proptest::array::uniform32(any::<u8>()).prop_map(Id)
    }

    /// Any structurally valid map: changes name only lists it has, `New` only with
    /// a new list, a reference exactly when `seq > 0`.
    fn arb_map() -> impl Strategy<Value = PageMap> {
        let changes =
            proptest::collection::vec((any::<u64>(), 0u8..3, any::<u32>(), any::<u64>()), 0..60);
        (
            0u64..=MAX_SEQ,
            arb_id(),
            proptest::option::of(arb_id()),
            proptest::collection::vec(arb_id(), 0..4),
            changes,
            0u64..1000,
        )
            .prop_map(|(seq, r, new_list, lists, raw, extra)| {
                let changes: Vec<Change> = raw
                    .into_iter()
                    .map(|(skip, kind, list, ordinal)| Change {
                        skip,
                        chunk: match kind {
                            1 if new_list.is_some() => MapRef::New,
                            2 if !lists.is_empty() => MapRef::At {
                                list: list % lists.len() as u32,
                                ordinal,
                            },
                            _ => MapRef::Zero,
                        },
                    })
                    .collect();
                PageMap {
                    chunk_count: changes.len() as u64 + extra,
                    seq,
                    reference: (seq > 0).then_some(r),
                    new_list,
                    lists,
                    changes,
                }
            })
    }

    proptest! {
        #[test]
        fn valid_maps_round_trip(m in arb_map()) {
            prop_assert_eq!(PageMap::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn a_chunk_new_twice_is_new_once_then_named() {
        let a = ChunkRef::Stored(Id([5; 32]));
        let mut lists = Lists(HashMap::new());
        let m = write_map(&mut lists, &[], &[a, ChunkRef::Zero, a], 0);
        assert_eq!(m.changes[0].chunk, MapRef::New);
        assert_eq!(
            m.changes[2].chunk,
            MapRef::At {
                list: 0,
                ordinal: 0
            }
        );
    }

    #[test]
    fn broken_maps_are_rejected() {
        let m = PageMap {
            chunk_count: 4,
            seq: 0,
            reference: None,
            new_list: None,
            lists: vec![],
            changes: vec![Change {
                skip: 0,
                chunk: MapRef::At {
                    list: 3,
                    ordinal: 0,
                },
            }],
        };
        assert!(PageMap::decode(&m.encode()).is_err());
        let m = PageMap {
            changes: vec![Change {
                skip: 9,
                chunk: MapRef::Zero,
            }],
            ..m
        };
        let decoded = PageMap::decode(&m.encode()).unwrap();
        assert!(
            decoded.apply(&[], |_, _| None).is_err(),
            "change beyond the chunk count"
        );
        let m = PageMap {
            seq: 3,
            changes: vec![],
            ..decoded
        };
        assert!(
            PageMap::decode(&m.encode()).is_err(),
            "seq > 0 without a reference"
        );
    }

    /// A count no reference and no changes can fill is rejected before anything is
    /// allocated for it (it used to reserve `chunk_count` entries: 140 GB for 2³²).
    #[test]
    fn a_huge_count_without_changes_is_rejected_before_allocating() {
        let m = PageMap {
            chunk_count: MAX_CHUNKS,
            seq: 0,
            reference: None,
            new_list: None,
            lists: vec![],
            changes: vec![],
        };
        let m = PageMap::decode(&m.encode()).unwrap();
        assert!(m.apply(&[ChunkRef::Zero; 3], |_, _| None).is_err());
    }

    #[test]
    fn growing_past_the_reference_needs_every_new_position() {
        let m = PageMap {
            chunk_count: 3,
            seq: 1,
            reference: Some(Id([1; 32])),
            new_list: None,
            lists: vec![],
            changes: vec![],
        };
        assert!(m.apply(&[ChunkRef::Zero; 2], |_, _| None).is_err());
        assert_eq!(
            m.apply(&[ChunkRef::Zero; 5], |_, _| None).unwrap(),
            vec![ChunkRef::Zero; 3]
        );
    }
}

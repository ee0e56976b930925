//! Resolved page maps: for a page map, the chunk id of each of its changes that
//! names an index entry, in the map's order. With them a backup resolves its
//! parent's chain without reading the index objects the chain names (a long-lived
//! database's full map names nearly every index object in the store).
//!
//! Layout (little-endian): magic `PSNPRMAP`, version u32, count u32, the map's id
//! (32 bytes), `count` chunk ids, then blake3 of everything before it (32 bytes).

use super::base::CacheError;
use crate::format::pagemap::{MapRef, PageMap, MAX_CHUNKS};
use crate::format::LeReader;
use crate::types::{ChunkId, ChunkRef, Id};
use std::io::{Read, Write};
use std::path::Path;

const MAGIC: [u8; 8] = *b"PSNPRMAP";
const VERSION: u32 = 1;
const HEADER: usize = 8 + 4 + 4 + 32;

/// The ids of a map's named changes, as a list resolved through it gives them:
/// `list` is the map applied to its reference.
pub fn named_ids(map: &PageMap, list: &[ChunkRef]) -> Option<Vec<ChunkId>> {
    let mut out = Vec::new();
    let mut pos = 0u64;
    for c in &map.changes {
        let i = pos.checked_add(c.skip)?;
        pos = i + 1;
        if c.chunk == MapRef::Zero {
            continue;
        }
        match list.get(i as usize)? {
            ChunkRef::Stored(id) => out.push(*id),
            ChunkRef::Zero => return None,
        }
    }
    Some(out)
}

/// Ids hashed and written (or read) at once.
const ID_BATCH: usize = 2048;

/// Writes the file of map `map` naming `count` ids (the iterator must give
/// exactly that many), without holding it whole.
pub fn write(
    out: &mut impl Write,
    map: &Id,
    ids: impl Iterator<Item = ChunkId>,
    count: usize,
) -> std::io::Result<()> {
    let mut h = blake3::Hasher::new();
    let mut put = |b: &[u8]| -> std::io::Result<()> {
        h.update(b);
        out.write_all(b)
    };
    put(&MAGIC)?;
    put(&VERSION.to_le_bytes())?;
    put(&u32::try_from(count)
        .map_err(std::io::Error::other)?
        .to_le_bytes())?;
    put(&map.0)?;
    // Ids go to the hasher and the file in batches: blake3 fed 32 bytes at a
    // time hashes one 1 KiB chunk after another, never several at once (SIMD),
    // and a full map of 1 GiB is 8 MiB of ids, written by every backup.
    let mut n = 0usize;
    let mut batch = Vec::with_capacity(ID_BATCH * 32);
    for id in ids {
        batch.extend_from_slice(&id.0);
        n += 1;
        if batch.len() == ID_BATCH * 32 {
            put(&batch)?;
            batch.clear();
        }
    }
    put(&batch)?;
    if n != count {
        return Err(std::io::Error::other("resolved map: count mismatch"));
    }
    let sum = *h.finalize().as_bytes();
    out.write_all(&sum)
}

#[cfg(test)]
pub fn encode(map: &Id, ids: &[ChunkId]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + 32 * ids.len() + 32);
    // Writing into a Vec cannot fail, and the count is the slice's.
    let _ = write(&mut out, map, ids.iter().copied(), ids.len());
    out
}

/// Reads the file of map `map`, straight into ids (the file is not held as
/// well: a full map's is 32 bytes per chunk).
pub fn read(path: &Path, map: &Id) -> Result<Vec<ChunkId>, CacheError> {
    let bad = || CacheError::Damaged {
        path: path.to_path_buf(),
        why: "not a whole resolved page map of this map".into(),
    };
    let io = |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let mut r = std::io::BufReader::new(file);
    let mut head = [0u8; HEADER];
    r.read_exact(&mut head).map_err(|_| bad())?;
    let mut f = LeReader::new(&head);
    let (magic, version, count, of) = (
        f.array::<8>().map_err(|_| bad())?,
        f.u32().map_err(|_| bad())?,
        u64::from(f.u32().map_err(|_| bad())?),
        f.array::<32>().map_err(|_| bad())?,
    );
    if magic != MAGIC
        || version != VERSION
        || of != map.0
        || count > MAX_CHUNKS
        || len != HEADER as u64 + 32 * count + 32
    {
        return Err(bad());
    }
    let mut h = blake3::Hasher::new();
    h.update(&head);
    let mut ids = Vec::with_capacity(count as usize);
    // In batches, for the hasher's sake (see `write`).
    let mut batch = vec![0u8; ID_BATCH * 32];
    let mut left = count as usize;
    while left > 0 {
        let n = left.min(ID_BATCH);
        let bytes = &mut batch[..n * 32];
        r.read_exact(bytes).map_err(io)?;
        h.update(bytes);
        ids.extend(bytes.chunks_exact(32).map(|c| {
            let mut id = [0u8; 32];
            id.copy_from_slice(c);
            Id(id)
        }));
        left -= n;
    }
    let mut id = [0u8; 32];
    r.read_exact(&mut id).map_err(io)?;
    if h.finalize().as_bytes() != &id {
        return Err(bad());
    }
    Ok(ids)
}

/// Applies `map` to `list` (its reference's list), in place, naming its changes
/// with `ids` in order; `None` when they do not fit the map (a stale or wrong
/// file), as [`PageMap::apply`] would refuse it. In place: the list of a large
/// image is 33 bytes per chunk, and `PageMap::apply` builds a second one.
pub fn apply_in_place(map: &PageMap, list: &mut Vec<ChunkRef>, ids: &[ChunkId]) -> Option<()> {
    let n = usize::try_from(map.chunk_count).ok()?;
    if map.chunk_count > list.len() as u64 + map.changes.len() as u64 {
        return None;
    }
    let inherited = list.len().min(n);
    list.truncate(n);
    list.resize(n, ChunkRef::Zero);
    let (mut pos, mut next, mut beyond) = (0u64, 0usize, 0usize);
    for c in &map.changes {
        let i = pos.checked_add(c.skip).filter(|&i| i < map.chunk_count)?;
        pos = i + 1;
        if i as usize >= inherited {
            beyond += 1;
        }
        list[i as usize] = match c.chunk {
            MapRef::Zero => ChunkRef::Zero,
            _ => {
                next += 1;
                ChunkRef::Stored(*ids.get(next - 1)?)
            }
        };
    }
    // Every position past the reference must be named by a change (they are
    // distinct and ascending, so counting them is enough).
    (next == ids.len() && beyond == n - inherited).then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pagemap::Change;

    fn map(changes: Vec<Change>, count: u64) -> PageMap {
        PageMap {
            chunk_count: count,
            seq: 0,
            reference: None,
            new_list: Some(Id([1; 32])),
            lists: vec![Id([2; 32])],
            changes,
        }
    }

    #[test]
    fn named_ids_apply_back_to_the_list() {
        let id = |n: u8| Id([n; 32]);
        let m = map(
            vec![
                Change {
                    skip: 0,
                    chunk: MapRef::New,
                },
                Change {
                    skip: 0,
                    chunk: MapRef::Zero,
                },
                Change {
                    skip: 2,
                    chunk: MapRef::At {
                        list: 0,
                        ordinal: 5,
                    },
                },
            ],
            5,
        );
        let list = vec![
            ChunkRef::Stored(id(7)),
            ChunkRef::Zero,
            ChunkRef::Stored(id(3)),
            ChunkRef::Stored(id(3)),
            ChunkRef::Stored(id(9)),
        ];
        let reference = vec![
            ChunkRef::Zero,
            ChunkRef::Zero,
            ChunkRef::Stored(id(3)),
            ChunkRef::Stored(id(3)),
            ChunkRef::Zero,
        ];
        let ids = named_ids(&m, &list).unwrap();
        assert_eq!(ids, vec![id(7), id(9)]);
        let applied = |r: &[ChunkRef], ids: &[ChunkId]| {
            let mut l = r.to_vec();
            apply_in_place(&m, &mut l, ids).map(|()| l)
        };
        assert_eq!(applied(&reference, &ids), Some(list.clone()));
        assert_eq!(
            m.apply(&reference, |_, o| Some(if o == 0 { id(7) } else { id(9) }))
                .unwrap(),
            list
        );
        // Too few or too many ids do not fit.
        assert_eq!(applied(&reference, &ids[..1]), None);
        assert_eq!(applied(&reference, &[id(7), id(9), id(1)]), None);
        // A reference too short for the map's count (a position past it that no
        // change names), and one longer than the count (truncated).
        assert_eq!(applied(&reference[..3], &ids), None);
        let mut longer = reference.clone();
        longer.push(ChunkRef::Stored(id(4)));
        assert_eq!(applied(&longer, &ids), Some(list));
    }

    /// [`read`] of these bytes, through a file.
    fn decode(map: &Id, bytes: &[u8]) -> Option<Vec<ChunkId>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        std::fs::write(&path, bytes).unwrap();
        read(&path, map).ok()
    }

    #[test]
    fn files_round_trip_and_damage_or_another_map_is_refused() {
        let (m, other) = (Id([5; 32]), Id([6; 32]));
        let ids: Vec<ChunkId> = (0..10u8).map(|n| Id([n; 32])).collect();
        let bytes = encode(&m, &ids);
        assert_eq!(decode(&m, &bytes), Some(ids.clone()));
        assert_eq!(decode(&other, &bytes), None);
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 1;
            assert_eq!(decode(&m, &bad), None, "byte {at} flipped");
        }
        for len in 0..bytes.len() {
            assert_eq!(decode(&m, &bytes[..len]), None, "truncated to {len}");
        }
        assert_eq!(decode(&m, &encode(&m, &[])), Some(vec![]));
    }
}

/// Where each stored chunk of a snapshot's list was when the snapshot was
/// taken: a table of packs (id, length) and, per stored chunk in list order, the
/// number of its pack. A backup takes a chunk of its parent as stored only while
/// that pack is present with that length; so a pack lost since (damage, not a
/// prune: prune moves live chunks first) makes it store the chunk again.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    pub packs: Vec<(Id, u64)>,
    pub at: Vec<u32>,
}

const PLACED_MAGIC: [u8; 8] = *b"PSNPPLCD";
/// Magic, version, pack count, chunk count, map id.
const PLACED_HEADER: usize = 8 + 4 + 4 + 4 + 32;

pub fn encode_placement(map: &Id, p: &Placement) -> Vec<u8> {
    let mut out = Vec::with_capacity(PLACED_HEADER + 40 * p.packs.len() + 4 * p.at.len() + 32);
    out.extend_from_slice(&PLACED_MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(p.packs.len() as u32).to_le_bytes());
    out.extend_from_slice(&(p.at.len() as u32).to_le_bytes());
    out.extend_from_slice(&map.0);
    for (id, len) in &p.packs {
        out.extend_from_slice(&id.0);
        out.extend_from_slice(&len.to_le_bytes());
    }
    for a in &p.at {
        out.extend_from_slice(&a.to_le_bytes());
    }
    let sum = *blake3::hash(&out).as_bytes();
    out.extend_from_slice(&sum);
    out
}

/// Decodes the placement file of map `map`: `None` unless whole, for that map,
/// and every pack number in the table.
pub fn decode_placement(map: &Id, bytes: &[u8]) -> Option<Placement> {
    let body_len = bytes.len().checked_sub(32)?;
    if body_len < PLACED_HEADER || bytes[..8] != PLACED_MAGIC {
        return None;
    }
    if blake3::hash(&bytes[..body_len]).as_bytes() != &bytes[body_len..] {
        return None;
    }
    let mut r = LeReader::new(&bytes[8..body_len]);
    if r.u32().ok()? != VERSION {
        return None;
    }
    let (packs, chunks) = (r.u32().ok()? as usize, r.u32().ok()? as usize);
    if r.array::<32>().ok()? != map.0 || PLACED_HEADER + 40 * packs + 4 * chunks != body_len {
        return None;
    }
    let packs: Vec<(Id, u64)> = (0..packs)
        .map(|_| Some((Id(r.array().ok()?), r.u64().ok()?)))
        .collect::<Option<_>>()?;
    let at: Vec<u32> = (0..chunks).map(|_| r.u32().ok()).collect::<Option<_>>()?;
    at.iter()
        .all(|&a| (a as usize) < packs.len())
        .then_some(Placement { packs, at })
}

#[cfg(test)]
mod placement_tests {
    use super::*;
    use proptest::prelude::*;

    /// `bytes` with a right trailing checksum (a random file would only ever
    /// test the checksum comparison).
    fn sealed(mut bytes: Vec<u8>) -> Vec<u8> {
        let sum = *blake3::hash(&bytes).as_bytes();
        bytes.extend_from_slice(&sum);
        bytes
    }

    proptest! {
        /// Hostile resolved maps and placements with right checksums (random
        /// bodies behind a valid magic and version, or wholly random): decoding
        /// never panics, and what decodes is consistent.
        #[test]
        fn hostile_files_never_panic(
            body in proptest::collection::vec(any::<u8>(), 0..400),
            with_header in any::<bool>(),
        ) {
            let map = Id([9; 32]);
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("f");
            for magic in [MAGIC, PLACED_MAGIC] {
                let mut bytes = Vec::new();
                if with_header {
                    bytes.extend_from_slice(&magic);
                    bytes.extend_from_slice(&VERSION.to_le_bytes());
                }
                bytes.extend_from_slice(&body);
                let bytes = sealed(bytes);
                std::fs::write(&path, &bytes).unwrap();
                if let Ok(ids) = read(&path, &map) {
                    prop_assert_eq!(bytes.len(), HEADER + 32 * ids.len() + 32);
                }
                if let Some(p) = decode_placement(&map, &bytes) {
                    prop_assert!(p.at.iter().all(|&a| (a as usize) < p.packs.len()));
                }
            }
        }
    }

    #[test]
    fn placements_round_trip_and_damage_is_refused() {
        let map = Id([3; 32]);
        let p = Placement {
            packs: vec![(Id([1; 32]), 100), (Id([2; 32]), 7)],
            at: vec![0, 1, 1, 0, 1],
        };
        let bytes = encode_placement(&map, &p);
        assert_eq!(decode_placement(&map, &bytes), Some(p.clone()));
        assert_eq!(decode_placement(&Id([4; 32]), &bytes), None);
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 2;
            assert_eq!(decode_placement(&map, &bad), None, "byte {at} flipped");
        }
        for len in 0..bytes.len() {
            assert_eq!(decode_placement(&map, &bytes[..len]), None);
        }
        // A pack number beyond the table, even with a good checksum.
        let bad = Placement {
            packs: vec![(Id([1; 32]), 1)],
            at: vec![0, 1],
        };
        assert_eq!(decode_placement(&map, &encode_placement(&map, &bad)), None);
        let empty = Placement::default();
        assert_eq!(
            decode_placement(&map, &encode_placement(&map, &empty)),
            Some(empty)
        );
    }
}

//! Fuzz entry points for the decoders of this machine's cache files (the sorted
//! chunk file, resolved page maps, placements), called through
//! [`crate::format::fuzz::Target`] like the store's decoders.
//!
//! The files are this machine's own, never read from a store, but a disk or a
//! crash can damage them and every backup reads them: a damaged file must be an
//! error (the backup then takes the long way), never a panic or a huge
//! allocation. Each function decodes the input (from a temporary file, for the
//! decoders that read files), checks what decodes for consistency, and
//! re-encodes it.

use super::base::{self, Base, Entry, Meta, PackInfo, BLOCK_ENTRIES, ENTRY_LEN, FOOTER_LEN};
use super::resolved::{self, Placement};
use crate::format::pack::Codec;
use crate::format::{checksum64, FormatError, Result};
use crate::index::chunk_index::Slot;
use crate::types::Id;
use std::io::Write;

fn invalid(e: impl std::fmt::Display) -> FormatError {
    FormatError::Invalid(e.to_string())
}

fn temp_file(data: &[u8]) -> Result<tempfile::NamedTempFile> {
    let mut f = tempfile::NamedTempFile::new().map_err(invalid)?;
    f.write_all(data).map_err(invalid)?;
    Ok(f)
}

/// [`Base::open`], every entry through [`Base::iter`]; for a file whose entries
/// are in id order under a right block table, [`Base::find`] of each (and none
/// once [`Base::retain`] drops every index object), and the file written again
/// from what was read, which must read back the same.
pub(crate) fn chunks(data: &[u8]) -> Result<()> {
    let file = temp_file(data)?;
    let mut b = Base::open(file.path()).map_err(invalid)?;
    let entries: Vec<Entry> = b.iter().collect::<Result<_, _>>().map_err(invalid)?;
    assert_eq!(entries.len() as u64, b.entries(), "entry count");
    for e in &entries {
        assert!(
            (e.list as usize) < b.meta.lists.len(),
            "list out of the table"
        );
        assert!(
            (e.pack as usize) < b.meta.packs.len(),
            "pack out of the table"
        );
    }
    let sorted = entries.windows(2).all(|w| w[0].id <= w[1].id);
    let table_right = entries
        .chunks(BLOCK_ENTRIES)
        .zip(&b.meta.blocks)
        .all(|(block, (first, _))| *first == base::prefix(&block[0].id));
    if !(sorted && table_right) {
        return Ok(());
    }
    for e in &entries {
        let found = b.find(&e.id).map_err(invalid)?;
        assert_eq!(found.map(|f| f.id), Some(e.id), "entry not found");
    }
    let again = temp_file(&[])?;
    base::write(again.path(), b.meta.clone(), entries.iter().copied()).map_err(invalid)?;
    let reread = Base::open(again.path()).map_err(invalid)?;
    let back: Vec<Entry> = reread.iter().collect::<Result<_, _>>().map_err(invalid)?;
    assert_eq!(back, entries, "chunk file round trip: entries");
    // Block checksums aside: the reserved bytes of entries are not read, and are
    // written as zeros.
    let tables = |m: &Meta| {
        let firsts: Vec<u64> = m.blocks.iter().map(|b| b.0).collect();
        (m.lists.clone(), m.packs.clone(), m.damaged.clone(), firsts)
    };
    assert_eq!(
        tables(&reread.meta),
        tables(&b.meta),
        "chunk file round trip: tables"
    );
    b.retain(|_, _| false, |_| true);
    for e in &entries {
        assert_eq!(
            b.find(&e.id).map_err(invalid)?,
            None,
            "entry of a dropped object"
        );
    }
    Ok(())
}

/// The map id a resolved-map file names (bytes 16..48), or zeros.
fn named_map(data: &[u8], at: usize) -> Id {
    let mut id = [0u8; 32];
    if let Some(b) = data.get(at..at + 32) {
        id.copy_from_slice(b);
    }
    Id(id)
}

/// [`resolved::read`] of the input as the file of the map it names; what reads
/// must encode to the same bytes.
pub(crate) fn resolved_map(data: &[u8]) -> Result<()> {
    let map = named_map(data, 16);
    let file = temp_file(data)?;
    let ids = resolved::read(file.path(), &map).map_err(invalid)?;
    let mut again = Vec::new();
    resolved::write(&mut again, &map, ids.iter().copied(), ids.len()).map_err(invalid)?;
    assert_eq!(again, data, "resolved map round trip");
    Ok(())
}

/// [`resolved::decode_placement`] of the input as the placement of the map it
/// names; what decodes must name packs of its table and encode to the same bytes.
pub(crate) fn placement(data: &[u8]) -> Result<()> {
    let map = named_map(data, 20);
    // Bytes, not a file: the cache reads a placement whole, then decodes it.
    let p = resolved::decode_placement(&map, data)
        .ok_or_else(|| invalid("not a whole placement of the map it names"))?;
    assert!(
        p.at.iter().all(|&a| (a as usize) < p.packs.len()),
        "pack number"
    );
    assert_eq!(
        resolved::encode_placement(&map, &p),
        data,
        "placement round trip"
    );
    Ok(())
}

/// Copies `data` and makes the last 32 bytes blake3 of the rest (the checksum of
/// resolved maps and placements); leaves shorter inputs alone.
pub(crate) fn seal_trailing_hash(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    if let Some(body) = out.len().checked_sub(32) {
        let sum = *blake3::hash(&out[..body]).as_bytes();
        out[body..].copy_from_slice(&sum);
    }
    out
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Copies `data` and makes a chunk file's checksums right: when the footer's
/// section lengths fit and its tables decode, each block's checksum in the block
/// table (the tables are encoded again, and the footer's length follows), then
/// the tables' and the footer's checksums. Leaves inputs shorter than a footer
/// alone.
pub(crate) fn seal_chunks(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    if out.len() < FOOTER_LEN {
        return out;
    }
    let f = out.len() - FOOTER_LEN;
    let (count, meta_at, meta_len) = (
        u64_at(&out, f + 16),
        u64_at(&out, f + 24),
        u64_at(&out, f + 32),
    );
    let fits = meta_at
        .checked_add(meta_len)
        .is_some_and(|end| end == f as u64)
        && count.checked_mul(ENTRY_LEN as u64) == Some(meta_at);
    if fits {
        // The entries end where the tables start.
        let meta_at = meta_at as usize;
        let mut meta_bytes = out[meta_at..f].to_vec();
        if let Ok(mut meta) = postcard::from_bytes::<Meta>(&meta_bytes) {
            let block_len = BLOCK_ENTRIES * ENTRY_LEN;
            for (b, (_, sum)) in meta.blocks.iter_mut().enumerate() {
                let start = b.saturating_mul(block_len);
                if start < meta_at {
                    let end = (start + block_len).min(meta_at);
                    *sum = checksum64(&out[start..end]);
                }
            }
            if let Ok(encoded) = postcard::to_allocvec(&meta) {
                meta_bytes = encoded;
            }
        }
        let footer = out[f..].to_vec();
        out.truncate(meta_at);
        out.extend_from_slice(&meta_bytes);
        out.extend_from_slice(&footer);
        let f = out.len() - FOOTER_LEN;
        out[f + 32..f + 40].copy_from_slice(&(meta_bytes.len() as u64).to_le_bytes());
        out[f + 40..f + 56].copy_from_slice(&blake3::hash(&meta_bytes).as_bytes()[..16]);
    }
    let f = out.len() - FOOTER_LEN;
    let sum = checksum64(&out[f..f + 56]);
    out[f + 56..f + 64].copy_from_slice(&sum.to_le_bytes());
    out
}

fn seed_entry(n: u32, lists: u32, packs: u32) -> Entry {
    Entry {
        id: Id::of_object(&n.to_le_bytes()),
        list: n % lists,
        ordinal: n,
        pack: n % packs,
        slot: Slot {
            offset: n * 4000,
            stored_len: 2000 + n,
            raw_len: 4096,
            codec: if n % 5 == 0 { Codec::Raw } else { Codec::Zstd },
        },
    }
}

fn seed_meta(lists: u32, packs: u32) -> Meta {
    Meta {
        lists: (0..lists)
            .map(|l| (Id([l as u8 + 1; 32]), 1000 + l as u64))
            .collect(),
        packs: (0..packs)
            .map(|p| PackInfo {
                id: Id([p as u8 + 100; 32]),
                len: 1 << 20,
                dict: (p == 1).then_some(Id([7; 32])),
            })
            .collect(),
        damaged: vec![(Id([9; 32]), 55)],
        blocks: Vec::new(),
    }
}

/// A chunk file of these entries (sorted here) and tables, as bytes.
fn chunk_file(mut entries: Vec<Entry>, meta: Meta) -> Result<Vec<u8>> {
    entries.sort_by_key(|e| e.id);
    let dir = tempfile::tempdir().map_err(invalid)?;
    let path = dir.path().join("chunks");
    base::write(&path, meta, entries.into_iter()).map_err(invalid)?;
    std::fs::read(&path).map_err(invalid)
}

/// Valid files of each kind (seeds, which must decode), by target name.
pub(crate) fn seeds() -> Result<Vec<(&'static str, &'static str, Vec<u8>)>> {
    let entries = (0..150).map(|n| seed_entry(n, 3, 2)).collect();
    let map = Id([0x42; 32]);
    let ids: Vec<Id> = (0..5u32).map(|n| Id::of_object(&n.to_le_bytes())).collect();
    let mut resolved_five = Vec::new();
    let mut resolved_none = Vec::new();
    // Writing into a Vec cannot fail, and the counts are the slices'.
    let _ = resolved::write(&mut resolved_five, &map, ids.iter().copied(), ids.len());
    let _ = resolved::write(&mut resolved_none, &map, std::iter::empty(), 0);
    let placed = Placement {
        packs: vec![(Id([1; 32]), 100), (Id([2; 32]), 7)],
        at: vec![0, 1, 1, 0, 1],
    };
    Ok(vec![
        (
            "cache-chunks",
            "synthetic-three-blocks",
            chunk_file(entries, seed_meta(3, 2))?,
        ),
        (
            "cache-chunks",
            "synthetic-empty",
            chunk_file(Vec::new(), Meta::default())?,
        ),
        ("cache-map", "synthetic-five", resolved_five),
        ("cache-map", "synthetic-empty", resolved_none),
        (
            "cache-placed",
            "synthetic-two-packs",
            resolved::encode_placement(&map, &placed),
        ),
        (
            "cache-placed",
            "synthetic-empty",
            resolved::encode_placement(&map, &Placement::default()),
        ),
    ])
}

/// Hand-made damaged files whose checksums are right (so each reaches the check
/// it targets), which must be rejected, by target name.
pub(crate) fn hostile() -> Result<Vec<(&'static str, &'static str, Vec<u8>)>> {
    // An entry naming a pack the tables do not have.
    let mut entries: Vec<Entry> = (0..70).map(|n| seed_entry(n, 2, 2)).collect();
    entries[3].pack = 2;
    let bad_pack = chunk_file(entries, seed_meta(2, 2))?;
    // A block table one block short of the entry count.
    let entries: Vec<Entry> = (0..70).map(|n| seed_entry(n, 2, 2)).collect();
    let whole = chunk_file(entries, seed_meta(2, 2))?;
    let f = whole.len() - FOOTER_LEN;
    let meta_at = u64_at(&whole, f + 24) as usize;
    let mut meta: Meta = postcard::from_bytes(&whole[meta_at..f])?;
    meta.blocks.pop();
    let tables = postcard::to_allocvec(&meta)?;
    let mut short_table = whole[..meta_at].to_vec();
    short_table.extend_from_slice(&tables);
    short_table.extend_from_slice(&whole[f..]);
    let f = short_table.len() - FOOTER_LEN;
    short_table[f + 32..f + 40].copy_from_slice(&(tables.len() as u64).to_le_bytes());
    let short_table = seal_chunks(&short_table);
    // A resolved map whose count says more ids than the file holds.
    let map = Id([0x42; 32]);
    let ids: Vec<Id> = (0..5u32).map(|n| Id::of_object(&n.to_le_bytes())).collect();
    let mut long_count = Vec::new();
    let _ = resolved::write(&mut long_count, &map, ids.iter().copied(), ids.len());
    long_count[12..16].copy_from_slice(&9u32.to_le_bytes());
    let long_count = seal_trailing_hash(&long_count);
    // A placement naming a pack beyond its table.
    let beyond = Placement {
        packs: vec![(Id([1; 32]), 1)],
        at: vec![0, 1],
    };
    Ok(vec![
        ("cache-chunks", "hostile-entry-names-no-pack", bad_pack),
        ("cache-chunks", "hostile-block-table-short", short_table),
        ("cache-map", "hostile-count-past-the-end", long_count),
        (
            "cache-placed",
            "hostile-pack-beyond-table",
            resolved::encode_placement(&map, &beyond),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::fuzz::Target;
    use proptest::prelude::*;

    fn target(name: &str) -> Target {
        Target::ALL.into_iter().find(|t| t.name() == name).unwrap()
    }

    #[test]
    fn sealing_a_valid_file_changes_nothing_and_reaches_the_entries() {
        for (name, file, bytes) in seeds().unwrap() {
            let t = target(name);
            assert_eq!(t.seal(&bytes), bytes, "{name}/{file}");
            assert!(t.decode(&bytes).is_ok(), "{name}/{file}");
        }
        // A flipped id byte of the chunk file fails its block checksum; sealed,
        // the block table follows and the file opens (it may now be out of order,
        // which the target tolerates).
        let (_, _, chunks) = seeds().unwrap().remove(0);
        let mut bad = chunks.clone();
        bad[ENTRY_LEN * 70 + 5] ^= 0x10;
        assert!(Target::CacheChunks.decode(&bad).is_err());
        assert!(Target::CacheChunks
            .decode(&Target::CacheChunks.seal(&bad))
            .is_ok());
        // An id of a resolved map: refused as is, read once sealed.
        let (_, _, map) = seeds().unwrap().remove(2);
        let mut bad = map.clone();
        bad[48 + 40] ^= 1;
        assert!(Target::CacheMap.decode(&bad).is_err());
        assert!(Target::CacheMap
            .decode(&Target::CacheMap.seal(&bad))
            .is_ok());
    }

    #[test]
    fn hostile_files_are_refused_for_what_they_break() {
        for (name, file, bytes) in hostile().unwrap() {
            let err = target(name).run(&bytes).unwrap_err().to_string();
            let why = match file {
                "hostile-entry-names-no-pack" => "bad entry",
                "hostile-block-table-short" => "block table disagrees",
                "hostile-count-past-the-end" => "not a whole resolved page map",
                _ => "not a whole placement",
            };
            assert!(err.contains(why), "{name}/{file}: {err}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// A small fuzzer on stable: seeds with bytes changed, as given and
        /// sealed, never panic (the targets' own consistency checks included).
        #[test]
        fn changed_seeds_never_panic(
            which in 0usize..6,
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            cut in any::<prop::sample::Index>(),
            shorten in any::<bool>(),
        ) {
            let (name, _, mut bytes) = seeds().unwrap().remove(which);
            for (at, v) in edits {
                let i = at.index(bytes.len());
                bytes[i] = v;
            }
            if shorten {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            let _ = target(name).run(&bytes);
        }
    }
}

//! The data checks of `verify`: packs read whole, chunks decoded and hashed,
//! image hashes merged from chunk chaining values, and restore checks.

use super::{DataSubset, ProblemKind, Verifier, VerifyReport};
use crate::backend::BackendError;
use crate::codec::{ChunkError, Decoder};
use crate::digest::image_check::{self, Digest};
use crate::digest::tree_hash::{block_cv, root_from_blocks};
use crate::format::pack::Codec;
use crate::index::chunk_index::{ChunkIndex, Location};
use crate::store::bases::{Bases, Chains, DEFAULT_CACHE_BYTES};
use crate::store::Snapshot;
use crate::types::{ChunkId, ChunkRef, Id, SnapshotId};
use crate::{layout, restore, Error, Result, Store};
use blake3::hazmat::ChainingValue;
use rayon::prelude::*;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::time::Instant;

/// What reading one pack found.
#[derive(Default)]
struct PackResult {
    /// The pack could not be read, or is damaged (then its chunks are checked still).
    pack_problem: Option<(ProblemKind, String)>,
    /// Its chunks were not checked: the pack could not be read.
    unread: bool,
    /// Its dictionary could not be loaded: its chunks were not decoded.
    dict_problem: Option<Error>,
    /// Its chunks found damaged, or (`Unreadable`) whose base could not be read.
    bad_chunks: Vec<(ChunkId, ProblemKind, String)>,
    cvs: Vec<((ChunkId, u64), ChainingValue)>,
    digests: Vec<(ChunkId, Digest)>,
    chunks_read: u64,
    bytes_read: u64,
}

/// What `--read-data` found: damaged chunks (with their problem), the chaining
/// value of every (chunk, offset) pair the selected snapshots use, and the
/// image-check digest of every chunk they use.
pub(super) struct DataRead {
    pub(super) bad_chunks: HashMap<ChunkId, usize>,
    pub(super) cvs: HashMap<(ChunkId, u64), ChainingValue>,
    pub(super) digests: HashMap<ChunkId, Digest>,
}

impl Verifier<'_> {
    /// Reads the packs holding referenced chunks (those `subset` selects), in
    /// parallel, one whole pack at a time.
    pub(super) fn read_data(
        &mut self,
        subset: DataSubset,
        referenced: &HashSet<ChunkId>,
        offsets: &HashMap<ChunkId, Vec<u64>>,
        report: &mut VerifyReport,
    ) -> DataRead {
        let mut by_pack: HashMap<u32, Vec<(ChunkId, Location)>> = HashMap::new();
        for (id, loc) in self.index.iter() {
            if referenced.contains(id) {
                by_pack.entry(loc.pack).or_default().push((*id, *loc));
            }
        }
        let seed = *blake3::hash(format!("{:?}", Instant::now()).as_bytes()).as_bytes();
        let mut packs: Vec<(Id, Vec<(ChunkId, Location)>)> = by_pack
            .into_iter()
            .map(|(pos, items)| (self.index.pack_id(pos), items))
            .filter(|(id, _)| subset.selects(id, &seed))
            .collect();
        packs.sort_by_key(|(id, _)| *id);
        let index = &self.index;
        let store = self.store;
        // A store with deltas: each delta is checked with its base, decoded
        // through its chain (a damaged base fails every delta made against it,
        // each naming it).
        let bases = match store.config().deltas {
            true => Bases::new(
                store.backend().clone(),
                DEFAULT_CACHE_BYTES,
                store.chunk_ids(),
            )
            .ok(),
            false => None,
        };
        let chains = bases.as_ref().map(|b| (b, index));
        let results: Vec<(Id, PackResult)> = packs
            .par_iter()
            .map(|(pack, items)| {
                let dict = items.first().and_then(|(_, l)| index.pack_dict(l.pack));
                (*pack, read_pack(store, pack, dict, items, offsets, chains))
            })
            .collect();
        let mut out = DataRead {
            bad_chunks: HashMap::new(),
            cvs: HashMap::new(),
            digests: HashMap::new(),
        };
        let items: HashMap<Id, &Vec<(ChunkId, Location)>> =
            packs.iter().map(|(id, items)| (*id, items)).collect();
        for (pack, r) in results {
            report.packs_read += 1;
            report.chunks_read += r.chunks_read;
            report.bytes_read += r.bytes_read;
            let key = layout::pack(&pack);
            // One problem for the object at fault, charged to every chunk it
            // leaves unchecked or breaks (not one line per chunk).
            let mut whole = None;
            if let Some((kind, p)) = r.pack_problem {
                let i = self.problems.add_kind(key.clone(), kind, p);
                self.bad_packs.insert(pack, i);
                whole = r.unread.then_some(i);
            }
            if let Some(e) = &r.dict_problem {
                let dict = items[&pack]
                    .first()
                    .and_then(|(_, l)| index.pack_dict(l.pack));
                if let Some(d) = dict {
                    let i = match self.bad_dicts.get(&d) {
                        Some(&i) => i,
                        None => self.problems.add_error(layout::dict(&d), e),
                    };
                    self.bad_dicts.insert(d, i);
                    whole = Some(i);
                }
            }
            if let Some(i) = whole {
                for (chunk, _) in items[&pack].iter() {
                    out.bad_chunks.insert(*chunk, i);
                }
            }
            for (chunk, kind, why) in r.bad_chunks {
                let i =
                    self.problems
                        .add_kind(format!("{key} chunk {}", chunk.to_hex()), kind, why);
                out.bad_chunks.insert(chunk, i);
            }
            out.cvs.extend(r.cvs);
            out.digests.extend(r.digests);
        }
        out
    }

    /// Merges a snapshot's root hash from chunk chaining values, and its image
    /// check from chunk digests; returns whether the checks could be made (every
    /// chunk's values are known).
    pub(super) fn check_image_by_tree(
        &mut self,
        s: &Snapshot,
        list: &[ChunkRef],
        cvs: &HashMap<(ChunkId, u64), ChainingValue>,
        digests: &HashMap<ChunkId, Digest>,
    ) -> bool {
        let m = &s.manifest;
        let len = m.chunk_len();
        let mut blocks = Vec::with_capacity(list.len());
        // One zero chunk for all zero positions (the last may use a prefix).
        let zeros = vec![0u8; len as usize];
        for (pos, c) in list.iter().enumerate() {
            let off = pos as u64 * len;
            match c {
                ChunkRef::Zero => {
                    let n = (m.image_len - off).min(len) as usize;
                    blocks.push(block_cv(off, &zeros[..n]));
                }
                ChunkRef::Stored(id) => match cvs.get(&(*id, off)) {
                    Some(cv) => blocks.push(*cv),
                    None => return false, // its pack is outside the subset read
                },
            }
        }
        let root = root_from_blocks(&blocks, len, m.image_len);
        if *root.as_bytes() != m.image_hash {
            self.image_mismatch(s, "blake3 hash", root.as_bytes(), &m.image_hash);
            return true;
        }
        if let Some(want) = m.image_check {
            let Some(got) = check_from_digests(m.image_len, len, list, digests) else {
                return false;
            };
            if got != want {
                self.image_mismatch(s, "image check", &got, &want);
            }
        }
        true
    }

    /// For images the tree cannot be split at chunk boundaries (chunks under 1 KiB,
    /// one-chunk images): reassemble the image into a hasher, as a restore would.
    pub(super) fn check_image_by_reading(&mut self, s: &Snapshot, list: &[ChunkRef]) -> bool {
        let mut sink = std::io::sink();
        let chains = match self.store.config().deltas {
            true => Chains::new(
                self.store.backend().clone(),
                &self.index,
                self.store.chunk_ids(),
            )
            .ok(),
            false => None,
        };
        match restore::write_image(
            self.store.backend().as_ref(),
            &self.index,
            s,
            list,
            restore::Sink::Stream(&mut sink),
            None,
            true,
            chains.as_ref(),
            &self.store.chunk_ids(),
        ) {
            Ok(_) => {}
            Err(Error::ImageMismatch {
                check,
                expected,
                actual,
                ..
            }) => {
                let detail = format!(
                    "reassembled image's {check} {actual} does not match the recorded {expected}"
                );
                let i = self.problems.add(layout::snapshot(&s.id), detail);
                self.breaks(i, s.id);
            }
            Err(e) => {
                let i = self.problems.add_error(layout::snapshot(&s.id), &e);
                self.breaks(i, s.id);
            }
        }
        true
    }

    pub(super) fn image_mismatch(
        &mut self,
        s: &Snapshot,
        check: &str,
        actual: &[u8],
        expected: &[u8],
    ) {
        let detail = format!(
            "its chunks give the {check} {}, not the recorded {} (a page map or index object names the wrong chunks)",
            crate::types::to_hex(actual),
            crate::types::to_hex(expected)
        );
        let i = self.problems.add(layout::snapshot(&s.id), detail);
        self.breaks(i, s.id);
    }

    pub(super) fn problems_snapshots(&self) -> BTreeSet<SnapshotId> {
        self.problems
            .list
            .iter()
            .flat_map(|p| p.snapshots.iter().copied())
            .collect()
    }

    /// Restores `s` into a temporary directory and runs `PRAGMA integrity_check`.
    /// Damage becomes a problem; failing to write the temporary file is an error.
    pub(super) fn restore_check(&mut self, s: &Snapshot, dir: Option<&Path>) -> Result<()> {
        let tmp = match dir {
            Some(d) => tempfile::Builder::new()
                .prefix("pagesnap-verify-")
                .tempdir_in(d),
            None => tempfile::Builder::new()
                .prefix("pagesnap-verify-")
                .tempdir(),
        }
        .map_err(|e| Error::Io {
            path: dir
                .map(Path::to_path_buf)
                .unwrap_or_else(std::env::temp_dir),
            source: e,
        })?;
        let out = tmp.path().join("restore.db");
        let key = layout::snapshot(&s.id);
        match self.store.restore_to_path(s, &out, false) {
            Ok(_) => {}
            Err(e @ Error::Io { .. }) => return Err(e),
            Err(e) => {
                let kind = match e.is_damage() {
                    true => ProblemKind::Damage,
                    false => ProblemKind::Unreadable,
                };
                let i = self
                    .problems
                    .add_kind(key, kind, format!("restore failed: {e}"));
                self.breaks(i, s.id);
                return Ok(());
            }
        }
        if let Err(detail) = integrity_check(&out) {
            let i = self
                .problems
                .add(key, format!("restored image fails PRAGMA integrity_check: {detail} (the image matches its recorded hash: the database was already damaged when it was captured)"));
            // Not broken: it is a faithful copy, possibly the best one there is.
            self.problems.affects(i, s.id);
        }
        Ok(())
    }
}

/// Reads one whole pack and checks it against its name and every listed chunk
/// against its id; computes the chaining values at the offsets each chunk is used.
fn read_pack(
    store: &Store,
    pack: &Id,
    dict: Option<Id>,
    items: &[(ChunkId, Location)],
    offsets: &HashMap<ChunkId, Vec<u64>>,
    chains: Option<(&Bases, &ChunkIndex)>,
) -> PackResult {
    let mut r = PackResult::default();
    let key = layout::pack(pack);
    let bytes = match store.backend().get(&key) {
        Ok(b) => b,
        Err(e) => {
            let (kind, detail) = match e {
                BackendError::NotFound { .. } => {
                    (ProblemKind::Damage, "missing from the store".to_string())
                }
                e if e.is_damage() => (ProblemKind::Damage, format!("cannot be read: {e}")),
                e => (ProblemKind::Unreadable, format!("cannot be read: {e}")),
            };
            r.pack_problem = Some((kind, detail));
            r.unread = true;
            return r;
        }
    };
    r.bytes_read = bytes.len() as u64;
    if Id::of_object(&bytes) != *pack {
        let detail = "content does not match its name (the pack is damaged)".into();
        r.pack_problem = Some((ProblemKind::Damage, detail));
    }
    let mut decoders = match Decoder::new(store.chunk_ids()) {
        Ok(d) => d,
        Err(e) => {
            r.pack_problem = Some((ProblemKind::Unreadable, e.to_string()));
            r.unread = true;
            return r;
        }
    };
    if let Some(d) = dict {
        if let Err(e) = decoders.ensure_dict(store.backend().as_ref(), &d) {
            r.dict_problem = Some(e);
            return r;
        }
    }
    for (id, loc) in items {
        r.chunks_read += 1;
        let start = loc.entry.offset as usize;
        let Some(stored) = start
            .checked_add(loc.entry.stored_len as usize)
            .and_then(|end| bytes.get(start..end))
        else {
            r.bad_chunks.push((
                *id,
                ProblemKind::Damage,
                "its location lies outside the pack".into(),
            ));
            continue;
        };
        let entry = loc.pack_entry(*id);
        let base = match (chains, entry.codec) {
            (Some((b, index)), Codec::ZstdDelta) => b.base_for(&entry, stored, index),
            _ => Ok(None),
        };
        let decoded = base.and_then(|base| {
            decoders.decode_checked_with_base(
                &entry,
                stored,
                dict.as_ref(),
                base.as_deref().map(|b| b.as_slice()),
            )
        });
        let raw = match decoded {
            Ok(raw) => raw,
            Err(ChunkError::Decode(e)) => {
                let why = format!("cannot be decoded: {e}");
                r.bad_chunks.push((*id, ProblemKind::Damage, why));
                continue;
            }
            Err(ChunkError::Mismatch { .. }) => {
                let why = "content does not match its id (damaged)".to_string();
                r.bad_chunks.push((*id, ProblemKind::Damage, why));
                continue;
            }
            // A delta whose base cannot be had: the base is what is damaged.
            Err(e @ ChunkError::Base { .. }) => {
                let why = format!("cannot be decoded: {e}");
                r.bad_chunks.push((*id, ProblemKind::Damage, why));
                continue;
            }
            // A link of its chain could not be read: not checked, not damage.
            Err(e @ ChunkError::Unreadable { .. }) => {
                let why = format!("not checked: {e}");
                r.bad_chunks.push((*id, ProblemKind::Unreadable, why));
                continue;
            }
        };
        for &off in offsets.get(id).map(Vec::as_slice).unwrap_or(&[]) {
            r.cvs.push(((*id, off), block_cv(off, &raw)));
        }
        r.digests.push((*id, image_check::chunk_digest(&raw)));
    }
    r
}

/// The image check of a snapshot of `image_len` bytes in chunks of `chunk_len`
/// (chunk list `list`) from its chunks' digests; `None` when one is unknown (its
/// pack was outside the subset read).
fn check_from_digests(
    image_len: u64,
    chunk_len: u64,
    list: &[ChunkRef],
    digests: &HashMap<ChunkId, Digest>,
) -> Option<Digest> {
    let per_block = image_check::chunks_per_block(chunk_len);
    let mut blocks = Vec::with_capacity(list.len().div_ceil(per_block));
    // Every zero chunk but a short last one has the same digest: computed once.
    let zero = image_check::chunk_digest(&vec![0u8; chunk_len as usize]);
    for (b, chunks) in list.chunks(per_block).enumerate() {
        let mut block = image_check::BlockDigest::default();
        for (k, c) in chunks.iter().enumerate() {
            match c {
                ChunkRef::Stored(id) => block.add_digest(digests.get(id)?),
                ChunkRef::Zero => {
                    let off = (b * per_block + k) as u64 * chunk_len;
                    match (image_len - off).min(chunk_len) {
                        n if n == chunk_len => block.add_digest(&zero),
                        n => block.add_chunk(&vec![0u8; n as usize]),
                    }
                }
            }
        }
        blocks.push(block.finish());
    }
    Some(image_check::image_check(image_len, chunk_len, &blocks))
}

/// `PRAGMA integrity_check` of a database file, opened immutable (no journal,
/// WAL or lock files are created beside it).
pub(crate) fn integrity_check(path: &Path) -> std::result::Result<(), String> {
    use rusqlite::{Connection, OpenFlags};
    let uri = crate::restore::salvage::immutable_uri(path);
    let conn = Connection::open_with_flags(
        uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(|e| e.to_string())?;
    let mut stmt = conn
        .prepare("PRAGMA integrity_check(20)")
        .map_err(|e| e.to_string())?;
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect())
        .map_err(|e| e.to_string())?;
    if rows == ["ok"] {
        Ok(())
    } else {
        Err(rows.join("; "))
    }
}

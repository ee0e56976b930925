//! Entry points shared by the fuzz targets (`fuzz/fuzz_targets/`) and the
//! regression test (`crates/pagesnap-core/tests/library/fuzz_regressions.rs`):
//! one function per decoder, taking arbitrary bytes.
//!
//! A decoder must answer every input with `Ok` or `Err`: a panic, an allocation
//! sized by an unchecked length or an endless loop is a bug. When decoding succeeds
//! these functions also re-encode the value and check that it decodes to itself;
//! a failed round trip panics on purpose, so the fuzzer reports it as a crash.
//!
//! Every header carries a blake3 checksum, which a random mutation practically never
//! gets right, so a fuzzer would only ever test the checksum comparison.
//! [`Target::run`] therefore decodes the input as given *and* with its checksums
//! recomputed ([`seal_envelope`], [`seal_pack`]): the lengths, postcard bodies and
//! validations behind the checksums are fuzzed too. An encrypted store's key
//! files and sealed objects carry authentication tags instead, which cannot be
//! recomputed: those targets take inputs as given (`crypto/fuzz.rs` says why
//! that still reaches every check).
//!
//! Two targets are not of the store's format: `btree`, the walker `diff` runs on
//! SQLite pages read from a snapshot (`query/btree.rs`, entry point in
//! `query/fuzz.rs`; SQLite's pages carry no checksum, its inputs are taken as
//! given), and `wal`, a source's wal-index header and WAL as a direct capture
//! reads them (`backup/capture/wal.rs`).

use super::config::{ConfigObject, StoreConfig};
use super::dict::DictBody;
use super::envelope::{self, Kind};
use super::index::IndexBody;
use super::manifest::Manifest;
use super::pack::{self, Codec, PackBuilder, PackEntry, FOOTER_LEN, HEADER_LEN};
use super::pagemap::PageMap;
use super::{checksum32, checksum64, Result};
use crate::backup::capture::wal_fuzz as wal;
use crate::backup::prints::fuzz as prints;
use crate::backup::sketch::file::fuzz as sketch;
use crate::crypto::fuzz as crypto;
use crate::index::cache::fuzz as cache;
use crate::query::fuzz as query;
use crate::restore::position_cache::fuzz as positions;
use crate::store::base_cache;
use crate::store::listing::fuzz as listing;
use crate::types::{ChunkRef, Id};

/// One fuzz target: a decoder, or a group of decoders of one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Config,
    Manifest,
    PageMap,
    Index,
    Dict,
    Envelope,
    Pack,
    /// This machine's sorted chunk file (`index/cache/base.rs`).
    CacheChunks,
    /// A resolved page map of the local cache.
    CacheMap,
    /// A placement of the local cache.
    CachePlaced,
    /// A file of the local base cache (`store/base_cache.rs`).
    BaseCache,
    /// A position file of a snapshot opened in place (`restore/position_cache.rs`).
    CachePositions,
    /// A fingerprint file of a database's newest snapshot (`backup/prints/file.rs`).
    CachePrints,
    /// A sketch file of a database's newest snapshot: resemblance features and
    /// skip-delta states (`backup/sketch/file.rs`).
    CacheSketch,
    /// This machine's record of the store's listing (`store/listing.rs`).
    CacheListing,
    /// A key file of an encrypted store (`crypto/key_file.rs`).
    KeyFile,
    /// A sealed object of an encrypted store, of either key kind (`crypto/seal.rs`).
    Sealed,
    /// The b-tree page-owner walker of `diff` over an SQLite image (`query/btree.rs`).
    Btree,
    /// A source database's wal-index header and WAL, as a direct capture reads
    /// them (`backup/capture/wal.rs`).
    Wal,
}

impl Target {
    pub const ALL: [Target; 19] = [
        Target::Config,
        Target::Manifest,
        Target::PageMap,
        Target::Index,
        Target::Dict,
        Target::Envelope,
        Target::Pack,
        Target::CacheChunks,
        Target::CacheMap,
        Target::CachePlaced,
        Target::BaseCache,
        Target::CachePositions,
        Target::CachePrints,
        Target::CacheSketch,
        Target::CacheListing,
        Target::KeyFile,
        Target::Sealed,
        Target::Btree,
        Target::Wal,
    ];

    /// The name of its fuzz target, seed folder and regression folder.
    pub fn name(self) -> &'static str {
        match self {
            Target::Config => "config",
            Target::Manifest => "manifest",
            Target::PageMap => "pagemap",
            Target::Index => "index",
            Target::Dict => "dict",
            Target::Envelope => "envelope",
            Target::Pack => "pack",
            Target::CacheChunks => "cache-chunks",
            Target::CacheMap => "cache-map",
            Target::CachePlaced => "cache-placed",
            Target::BaseCache => "base-cache",
            Target::CachePositions => "cache-positions",
            Target::CachePrints => "cache-prints",
            Target::CacheSketch => "cache-sketch",
            Target::CacheListing => "cache-listing",
            Target::KeyFile => "key-file",
            Target::Sealed => "sealed",
            Target::Btree => "btree",
            Target::Wal => "wal",
        }
    }

    /// Decodes `data` exactly as given (see the functions of this module).
    pub fn decode(self, data: &[u8]) -> Result<()> {
        match self {
            Target::Config => config(data),
            Target::Manifest => manifest(data),
            Target::PageMap => pagemap(data),
            Target::Index => index(data),
            Target::Dict => dict(data),
            Target::Envelope => envelope(data),
            Target::Pack => pack(data),
            Target::CacheChunks => cache::chunks(data),
            Target::CacheMap => cache::resolved_map(data),
            Target::CachePlaced => cache::placement(data),
            Target::BaseCache => base_cache::fuzz(data),
            Target::CachePositions => positions::run(data),
            Target::CachePrints => prints::run(data),
            Target::CacheSketch => sketch::run(data),
            Target::CacheListing => listing::run(data),
            Target::KeyFile => crypto::key_file(data),
            Target::Sealed => crypto::sealed(data),
            Target::Btree => query::btree(data),
            Target::Wal => wal::run(data),
        }
    }

    /// `data` with its checksums made right for this target's object (as it is
    /// for an object with authentication tags instead, which only sealing
    /// again could make right, and for SQLite pages, which have no checksum).
    pub fn seal(self, data: &[u8]) -> Vec<u8> {
        match self {
            Target::KeyFile | Target::Sealed | Target::Btree => data.to_vec(),
            Target::Pack => seal_pack(data),
            Target::CacheChunks => cache::seal_chunks(data),
            Target::CacheMap | Target::CachePlaced => cache::seal_trailing_hash(data),
            Target::BaseCache => base_cache::seal(data),
            Target::CachePositions => positions::seal(data),
            Target::CachePrints => prints::seal(data),
            Target::CacheSketch => sketch::seal(data),
            Target::CacheListing => listing::seal(data),
            Target::Wal => wal::seal(data),
            _ => seal_envelope(data),
        }
    }

    /// What a fuzz target runs: `data` as given, then sealed. Returns the result of
    /// the sealed one (equal to the first for inputs whose checksums are right).
    pub fn run(self, data: &[u8]) -> Result<()> {
        if matches!(self, Target::KeyFile | Target::Sealed | Target::Btree) {
            return self.decode(data);
        }
        let _ = self.decode(data);
        self.decode(&self.seal(data))
    }
}

/// Valid local cache files (seeds of the cache targets), as (target name, file
/// name, bytes); written by the `fuzz_seeds` example. The store's seeds are
/// copies of the fixture stores' objects.
pub fn cache_seeds() -> Result<Vec<(&'static str, &'static str, Vec<u8>)>> {
    let mut all = cache::seeds()?;
    let (seeds, _) = base_cache::fuzz_files();
    all.extend(seeds.into_iter().map(|(n, b)| ("base-cache", n, b)));
    let (seeds, _) = positions::files();
    all.extend(seeds.into_iter().map(|(n, b)| ("cache-positions", n, b)));
    let (seeds, _) = prints::files();
    all.extend(seeds.into_iter().map(|(n, b)| ("cache-prints", n, b)));
    let (seeds, _) = sketch::files();
    all.extend(seeds.into_iter().map(|(n, b)| ("cache-sketch", n, b)));
    let (seeds, _) = listing::files();
    all.extend(seeds.into_iter().map(|(n, b)| ("cache-listing", n, b)));
    let (seeds, _) = wal::files();
    all.extend(seeds.into_iter().map(|(n, b)| ("wal", n, b)));
    Ok(all)
}

/// Damaged local cache files with right checksums, which must be rejected, as
/// (target name, file name, bytes); written by the `fuzz_seeds` example.
pub fn cache_hostile() -> Result<Vec<(&'static str, &'static str, Vec<u8>)>> {
    let mut all = cache::hostile()?;
    let (_, hostile) = base_cache::fuzz_files();
    all.extend(hostile.into_iter().map(|(n, b)| ("base-cache", n, b)));
    let (_, hostile) = positions::files();
    all.extend(hostile.into_iter().map(|(n, b)| ("cache-positions", n, b)));
    let (_, hostile) = prints::files();
    all.extend(hostile.into_iter().map(|(n, b)| ("cache-prints", n, b)));
    let (_, hostile) = sketch::files();
    all.extend(hostile.into_iter().map(|(n, b)| ("cache-sketch", n, b)));
    let (_, hostile) = listing::files();
    all.extend(hostile.into_iter().map(|(n, b)| ("cache-listing", n, b)));
    let (_, hostile) = wal::files();
    all.extend(hostile.into_iter().map(|(n, b)| ("wal", n, b)));
    Ok(all)
}

/// Valid objects of an encrypted store (key files, sealed objects, version-3
/// configs), sealed under the fuzz targets' fixed keys, as (target name, file
/// name, bytes); written by the `fuzz_seeds` example.
pub fn crypto_seeds() -> Result<Vec<(&'static str, &'static str, Vec<u8>)>> {
    crypto::seeds()
}

/// Objects of an encrypted store each refused for one reason, as (target
/// name, file name, bytes); written by the `fuzz_seeds` example.
pub fn crypto_hostile() -> Result<Vec<(&'static str, &'static str, Vec<u8>)>> {
    crypto::hostile()
}

/// SQLite database images made with rusqlite (a table and index with overflow
/// rows and a free list, a deep b-tree, auto-vacuum ones), as inputs of the
/// `btree` target, as (target name, file name, bytes); written by the
/// `fuzz_seeds` example.
pub fn btree_seeds() -> Result<Vec<(&'static str, &'static str, Vec<u8>)>> {
    query::seeds()
}

/// Those images damaged so that pages are left without an owner (cycles, a
/// looping overflow chain, a huge free list, a pointer out of the file), as
/// (target name, file name, bytes); written by the `fuzz_seeds` example.
pub fn btree_hostile() -> Result<Vec<(&'static str, &'static str, Vec<u8>)>> {
    query::hostile()
}

/// Copies `data` and recomputes the envelope's body checksum (when its stored length
/// fits) and header checksum; leaves inputs shorter than a header alone.
pub fn seal_envelope(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    if out.len() < envelope::HEADER_LEN {
        return out;
    }
    let stored = u32::from_le_bytes([out[12], out[13], out[14], out[15]]) as usize;
    let body = out[envelope::HEADER_LEN..].get(..stored);
    if let Some(sum) = body.map(checksum64) {
        out[20..28].copy_from_slice(&sum.to_le_bytes());
    }
    let hc = checksum32(&out[..28]);
    out[28..32].copy_from_slice(&hc.to_le_bytes());
    out
}

/// Copies `data` and recomputes a pack's header, trailer (when the footer's length
/// fits) and footer checksums; leaves inputs shorter than a header alone.
pub fn seal_pack(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    if out.len() < HEADER_LEN.max(FOOTER_LEN) {
        return out;
    }
    let hc = checksum32(&out[..28]);
    out[28..32].copy_from_slice(&hc.to_le_bytes());
    let f = out.len() - FOOTER_LEN;
    let trailer_len = u32::from_le_bytes([out[f + 4], out[f + 5], out[f + 6], out[f + 7]]);
    if let Some(start) = f.checked_sub(trailer_len as usize) {
        let sum = checksum64(&out[start..f]);
        out[f + 8..f + 16].copy_from_slice(&sum.to_le_bytes());
    }
    let fc = checksum32(&out[f..f + 20]);
    out[f + 20..f + 24].copy_from_slice(&fc.to_le_bytes());
    out
}

/// [`ConfigObject::decode`] (every version), then the round trip; a plain config
/// must be what [`StoreConfig::decode`] reads, and a version-3 one (an encrypted
/// store's) is refused by it, its sealed part opened with the fuzz keys and
/// decoded as a plain config, as opening the store does with its key.
pub fn config(data: &[u8]) -> Result<()> {
    match ConfigObject::decode(data)? {
        ConfigObject::Plain(c) => {
            assert_eq!(StoreConfig::decode(data).ok().as_ref(), Some(&c), "plain");
            assert_eq!(StoreConfig::decode(&c.encode()).ok(), Some(c), "config");
            Ok(())
        }
        ConfigObject::Sealed { store_id, sealed } => {
            assert!(
                StoreConfig::decode(data).is_err(),
                "version 3 read as plain"
            );
            let again = ConfigObject::encode_sealed(&store_id, sealed.clone());
            let back = ConfigObject::decode(&again).ok();
            let want = ConfigObject::Sealed {
                store_id,
                sealed: sealed.clone(),
            };
            assert_eq!(back, Some(want), "version-3 config");
            crypto::sealed_config(&sealed).map(|_| ())
        }
    }
}

/// [`Manifest::decode`], then the round trip.
pub fn manifest(data: &[u8]) -> Result<()> {
    let m = Manifest::decode(data)?;
    assert_eq!(Manifest::decode(&m.encode()).ok(), Some(m), "manifest");
    Ok(())
}

/// Largest reference list [`pagemap`] resolves a delta map against: real maps of a
/// few thousand chunks resolve, and a huge count costs the fuzzer no memory.
const FAKE_REFERENCE: u64 = 4096;

/// [`PageMap::decode`], the round trip, then [`PageMap::apply`] against a fake
/// reference (none for a full map; all-zero chunks for a delta) and a lookup that
/// knows the first 2²⁰ entries of every index object. Returns `apply`'s verdict.
pub fn pagemap(data: &[u8]) -> Result<()> {
    let m = PageMap::decode(data)?;
    assert_eq!(PageMap::decode(&m.encode()).ok().as_ref(), Some(&m), "map");
    let lookup = |list: &Id, ordinal: u64| {
        (ordinal < 1 << 20).then(|| {
            let mut id = list.0;
            id[..8].copy_from_slice(&ordinal.to_le_bytes());
            Id(id)
        })
    };
    let reference = match m.seq {
        0 => Vec::new(),
        _ => vec![ChunkRef::Zero; m.chunk_count.min(FAKE_REFERENCE) as usize],
    };
    // A reference of another length exercises positions left over or missing.
    let other = vec![ChunkRef::Zero; (FAKE_REFERENCE as usize) - reference.len()];
    if let Ok(list) = m.apply(&other, lookup) {
        assert_eq!(list.len() as u64, m.chunk_count, "resolved length");
    }
    let list = m.apply(&reference, lookup)?;
    assert_eq!(list.len() as u64, m.chunk_count, "resolved length");
    Ok(())
}

/// [`IndexBody::decode`] (either version), then the round trip through the
/// lowest version that holds the body (what it decoded from, or version 1 for a
/// version-2 object without deltas): the encoder takes every body the decoder
/// gives, base table included.
pub fn index(data: &[u8]) -> Result<()> {
    let b = IndexBody::decode(data)?;
    let again = b.encode_as(b.needed_version());
    let again = again.unwrap_or_else(|e| panic!("a decoded index does not encode: {e}"));
    assert_eq!(IndexBody::decode(&again).ok().as_ref(), Some(&b), "index");
    Ok(())
}

/// [`DictBody::decode`], then the round trip (the ratio compared bit for bit: a
/// NaN is not equal to itself).
pub fn dict(data: &[u8]) -> Result<()> {
    let d = DictBody::decode(data)?;
    let again = DictBody::decode(&d.encode());
    let same = again.as_ref().is_ok_and(|e| {
        e.dict == d.dict
            && e.sample_bytes == d.sample_bytes
            && e.trained_ratio.to_bits() == d.trained_ratio.to_bits()
    });
    assert!(same, "dictionary round trip: {again:?}");
    Ok(())
}

/// [`envelope::open_versioned`] for every kind (every version it reads); `Ok`
/// when one opens it (bodies are postcard, with no encoder of raw bytes to
/// round-trip through). Otherwise the error of the kind the tag names (or of
/// `config`, for an unknown tag).
pub fn envelope(data: &[u8]) -> Result<()> {
    let mut verdict = Ok(());
    for kind in Kind::ALL {
        match envelope::open_versioned(kind, data) {
            Ok((_, raw)) => {
                assert!(raw.len() <= kind.max_body() as usize, "{kind:?} body");
                return Ok(());
            }
            Err(e) if verdict.is_ok() || data.get(4..8) == Some(&kind.tag()[..]) => {
                verdict = Err(e)
            }
            Err(_) => {}
        }
    }
    verdict
}

/// Raw bytes [`pack`] decompresses at most per input (four largest chunks), so a
/// trailer of many entries naming one small zstd bomb cannot time the fuzzer out.
const BLOB_BUDGET: u64 = 64 << 20;

/// A pack's decoders one by one ([`pack::check_header`] on the first 32 bytes,
/// [`pack::decode_footer`] on the last 32, [`pack::decode_trailer`]), then
/// [`pack::decode_pack`], which must agree with them, and [`pack::decode_blob`] on
/// every entry's slice ([`pack::split_delta`] on a delta's, which needs its base
/// to decode). Returns `decode_pack`'s verdict.
pub fn pack(data: &[u8]) -> Result<()> {
    let len = data.len() as u64;
    let header = pack::check_header_version(data.get(..HEADER_LEN).unwrap_or(data));
    let tail = data
        .get(data.len().saturating_sub(FOOTER_LEN)..)
        .unwrap_or(data);
    let mut trailer = None;
    if let Ok(footer) = pack::decode_footer(tail, len) {
        let end = data.len().saturating_sub(FOOTER_LEN);
        let start = end.saturating_sub(footer.trailer_len as usize);
        trailer = Some(pack::decode_trailer(&data[start..end], &footer, len));
    }
    let entries = pack::decode_pack(data)?;
    assert!(header.is_ok(), "pack decoded with a bad header");
    match &trailer {
        Some(Ok(t)) => assert_eq!(t, &entries, "trailer and pack disagree"),
        _ => panic!("pack decoded without its footer and trailer"),
    }
    let mut budget = BLOB_BUDGET;
    for e in &entries {
        let start = e.offset as usize;
        let blob = data.get(start..start + e.stored_len as usize);
        let blob = blob.unwrap_or_else(|| panic!("entry {e:?} outside the pack"));
        if e.codec == Codec::ZstdDelta {
            let delta = pack::split_delta(e, blob);
            assert!(delta.is_ok(), "pack decoded with a bad delta: {delta:?}");
            continue;
        }
        if let Some(left) = budget.checked_sub(e.raw_len as u64) {
            budget = left;
            if let Ok(raw) = pack::decode_blob(e, blob) {
                assert_eq!(raw.len() as u64, e.raw_len as u64, "blob length");
            }
        }
    }
    if let Ok((version, dict)) = header {
        round_trip_pack(data, version, dict, &entries);
    }
    Ok(())
}

/// Rebuilds a decoded pack from its blobs and checks it decodes to the same entries
/// (offsets aside: a hostile pack may leave gaps), every blob through the checks
/// of [`PackBuilder::try_push`], which must take what the decoder took. Skipped
/// when entries overlap (their blobs add up to more than the pack), which would
/// make the copy larger.
fn round_trip_pack(data: &[u8], version: u16, dict: Option<[u8; 16]>, entries: &[PackEntry]) {
    let blobs: u64 = entries.iter().map(|e| e.stored_len as u64).sum();
    if blobs > data.len() as u64 {
        return;
    }
    let dict = dict.map(|d| {
        let mut id = [0u8; 32];
        id[..16].copy_from_slice(&d);
        Id(id)
    });
    let b = PackBuilder::with_version(Vec::with_capacity(data.len()), dict, version);
    let mut b = b.unwrap_or_else(|e| panic!("a decoded pack's version is refused: {e}"));
    for e in entries {
        let start = e.offset as usize;
        if let Some(blob) = data.get(start..start + e.stored_len as usize) {
            let pushed = b.try_push(e.id, blob, e.raw_len, e.codec);
            assert!(pushed.is_ok(), "a decoded blob is refused: {pushed:?}");
        }
    }
    let (_, bytes, _) = b.finish();
    let again = pack::decode_pack(&bytes);
    let key = |e: &PackEntry| (e.id, e.stored_len, e.raw_len, e.codec);
    let want: Vec<(Id, u32, u32, Codec)> = entries.iter().map(key).collect();
    let got: Option<Vec<_>> = again.ok().map(|v| v.iter().map(key).collect());
    assert_eq!(got, Some(want), "pack round trip");
}

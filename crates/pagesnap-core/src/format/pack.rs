//! Pack files: many compressed chunks in one immutable object.
//!
//! ```text
//! header (32 bytes)
//!   0  4  magic "PSNP"       4  4  tag "PACK"
//!   8  2  format version    10  2  flags: bit 0 = the pack uses a dictionary
//!  12 16  first 16 bytes of the dictionary's id (0 without one)
//!  28  4  header checksum: blake3(bytes 0..28)[..4], LE
//! chunk blobs, back to back (each a zstd frame or raw bytes)
//! trailer: one 48-byte entry per chunk
//!   0 32  chunk id          32  4  offset of the blob from the pack start (u32 LE)
//!  36  4  stored length     40  4  raw length
//!  44  1  codec (0 raw, 1 zstd, 2 zstd with the pack's dictionary,
//!           3 zstd delta: format version 2 only)                  45 3 reserved (0)
//! footer (32 bytes)
//!   0  4  entry count        4  4  trailer length (= 48 × count)
//!   8  8  trailer checksum: blake3(trailer)[..8]
//!  16  2  format version    18  2  reserved (0)
//!  20  4  footer checksum: blake3(footer bytes 0..20)[..4]
//!  24  8  magic "PSNPPEND"
//! ```
//! The trailer makes every pack self-describing, so the index can always be
//! rebuilt from the packs alone. The pack's object name is the blake3 of its bytes.
//!
//! A pack of format version 2 ([`DELTA_FORMAT_VERSION`], in header and footer)
//! may also hold delta blobs (codec 3): the first 8 bytes of the base chunk's
//! id and its raw length (a varint), then
//! a zstd frame made with the base's raw bytes as its prefix ([`DeltaHeader`];
//! FORMAT.md, "Format version 2: deltas"). The layout around them is unchanged.

use super::{
    check_version_up_to, checksum32, checksum64, FormatError, LeReader, Result,
    DELTA_FORMAT_VERSION, FORMAT_VERSION, MAGIC,
};
use crate::types::{ChunkId, Id};
use serde::{Deserialize, Serialize};

pub const HEADER_LEN: usize = 32;
pub const FOOTER_LEN: usize = 32;
pub const ENTRY_LEN: usize = 48;
const TAG: [u8; 4] = *b"PACK";
const END_MAGIC: [u8; 8] = *b"PSNPPEND";
/// A pack is at most 4 GiB: offsets are u32.
pub const MAX_PACK_LEN: u64 = u32::MAX as u64;
/// Largest raw chunk: 256 pages of 64 KiB.
pub const MAX_CHUNK_LEN: u32 = 16 << 20;

/// How a chunk's bytes are stored in a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum Codec {
    Raw = 0,
    Zstd = 1,
    /// zstd with the dictionary named in the pack header (and the index).
    ZstdDict = 2,
    /// A delta: [`DeltaHeader`] (the base chunk), then a zstd frame made with the
    /// base's raw bytes as prefix. Format version 2 only.
    ZstdDelta = 3,
}

impl Codec {
    /// Any codec this build knows; whether the object's version allows it is
    /// [`Codec::check_in`]'s question.
    pub fn from_u8(v: u8) -> Result<Codec> {
        match v {
            0 => Ok(Codec::Raw),
            1 => Ok(Codec::Zstd),
            2 => Ok(Codec::ZstdDict),
            3 => Ok(Codec::ZstdDelta),
            other => Err(FormatError::Invalid(format!("unknown codec {other}"))),
        }
    }

    /// The format version that introduced this codec.
    pub fn since(self) -> u16 {
        match self {
            Codec::Raw | Codec::Zstd | Codec::ZstdDict => FORMAT_VERSION,
            Codec::ZstdDelta => DELTA_FORMAT_VERSION,
        }
    }

    /// Refuses a codec newer than the object (`version`) it is found in: a
    /// version-1 pack or index object never holds a delta.
    pub fn check_in(self, version: u16) -> Result<()> {
        if self.since() > version {
            return Err(FormatError::Invalid(format!(
                "codec {} needs format version {}, found in a version-{version} object",
                self as u8,
                self.since()
            )));
        }
        Ok(())
    }
}

/// Bytes of a base chunk's id a delta blob keeps: enough that two located
/// chunks share them only by a 2^-64 accident, which costs a reader a second
/// try, never wrong bytes (FORMAT.md, "Format version 2: deltas").
pub const BASE_PREFIX_LEN: usize = 8;

/// The shortest delta header: the base prefix and a one-byte length.
pub const DELTA_HEADER_MIN: usize = BASE_PREFIX_LEN + 1;

/// The first [`BASE_PREFIX_LEN`] bytes of a base chunk's id: how a delta blob
/// names its base. The index's base table names it in full; a reader with only
/// the blob resolves the prefix among the chunks it can locate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BasePrefix(pub [u8; BASE_PREFIX_LEN]);

impl BasePrefix {
    pub fn of(id: &ChunkId) -> BasePrefix {
        let mut p = [0u8; BASE_PREFIX_LEN];
        p.copy_from_slice(&id.0[..BASE_PREFIX_LEN]);
        BasePrefix(p)
    }

    /// Whether chunk `id` begins with this prefix.
    pub fn matches(&self, id: &ChunkId) -> bool {
        id.0[..BASE_PREFIX_LEN] == self.0
    }

    /// The prefix as a big-endian number: the key sorted indexes search by.
    pub fn key(&self) -> u64 {
        u64::from_be_bytes(self.0)
    }

    /// As [`Id::short`] shows an id: the first 4 bytes in hex.
    pub fn short(&self) -> String {
        self.0[..4].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The first 4 bytes of a zstd dictionary (`ZSTD_MAGIC_DICTIONARY`, LE). zstd
/// reads a "dictionary" starting with them as a trained one, not raw content, so
/// no base may start with them (the encoder makes no delta against such a base
/// and the decoder refuses one): a delta's base is always raw content.
pub const ZSTD_DICT_MAGIC: [u8; 4] = [0x37, 0xa4, 0x30, 0xec];

/// What a delta blob says of its base.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeltaHeader {
    /// The base chunk, whose raw bytes are the frame's prefix, by the first
    /// bytes of its id.
    pub base: BasePrefix,
    /// Its raw length, so that a base of the wrong length is refused before
    /// zstd sees it.
    pub base_len: u32,
}

impl DeltaHeader {
    /// The header's bytes: the prefix, then the length as a LEB128 varint
    /// (2 bytes for a 4 KiB page, at most 4 for a chunk).
    pub fn encode(&self) -> Vec<u8> {
        let mut h = Vec::with_capacity(DELTA_HEADER_MIN + 3);
        h.extend_from_slice(&self.base.0);
        let mut v = self.base_len;
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                h.push(byte);
                return h;
            }
            h.push(byte | 0x80);
        }
    }
}

/// A base length: a minimal LEB128 varint of at most 4 bytes (a chunk is at
/// most 16 MiB, 25 bits), and the bytes it took.
fn base_len_varint(b: &[u8]) -> Result<(u32, usize)> {
    let mut v = 0u32;
    for (i, &byte) in b.iter().enumerate().take(4) {
        v |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if byte == 0 && i > 0 {
                return Err(FormatError::Invalid(
                    "a delta's base length is not minimally encoded".into(),
                ));
            }
            return Ok((v, i + 1));
        }
    }
    Err(FormatError::Invalid(
        "a delta's base length is longer than 4 bytes or cut short".into(),
    ))
}

/// Splits the stored bytes of delta entry `e` into its header and zstd frame,
/// with the format's checks: the blob is the entry's length and longer than the
/// header, the base prefix is not the chunk's own, its length is a minimal
/// varint and no longer than a chunk.
pub fn split_delta<'a>(e: &PackEntry, stored: &'a [u8]) -> Result<(DeltaHeader, &'a [u8])> {
    if e.codec != Codec::ZstdDelta {
        return Err(FormatError::Invalid(format!(
            "chunk {} is not a delta",
            e.id.short()
        )));
    }
    if stored.len() != e.stored_len as usize || stored.len() < DELTA_HEADER_MIN {
        return Err(FormatError::Truncated {
            needed: (e.stored_len as u64).max(DELTA_HEADER_MIN as u64),
            have: stored.len() as u64,
        });
    }
    let base = BasePrefix(LeReader::new(stored).array()?);
    let (base_len, n) = base_len_varint(&stored[BASE_PREFIX_LEN..])?;
    let frame = &stored[BASE_PREFIX_LEN + n..];
    check_delta(e.id, base, base_len, frame.len())?;
    Ok((DeltaHeader { base, base_len }, frame))
}

/// The rules of a delta blob that do not need its base (shared by the decoder and
/// [`PackBuilder::try_push`]). A base sharing the chunk's own prefix is refused
/// as a delta against itself (the encoder never makes one: see `encode_delta`).
fn check_delta(id: ChunkId, base: BasePrefix, base_len: u32, frame_len: usize) -> Result<()> {
    if base.matches(&id) {
        return Err(FormatError::Invalid(format!(
            "chunk {} is a delta against itself",
            id.short()
        )));
    }
    if base_len > MAX_CHUNK_LEN {
        return Err(FormatError::TooLarge {
            what: "base chunk length",
            value: base_len as u64,
            limit: MAX_CHUNK_LEN as u64,
        });
    }
    if frame_len == 0 {
        return Err(FormatError::Invalid(format!(
            "delta chunk {} has no frame after its base",
            id.short()
        )));
    }
    Ok(())
}

/// Where a chunk lives inside a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackEntry {
    pub id: ChunkId,
    pub offset: u32,
    pub stored_len: u32,
    pub raw_len: u32,
    pub codec: Codec,
}

/// Builds a pack in memory.
pub struct PackBuilder {
    buf: Vec<u8>,
    entries: Vec<PackEntry>,
    /// Written in header and footer: [`FORMAT_VERSION`] unless asked for more.
    version: u16,
}

impl Default for PackBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl PackBuilder {
    pub fn new() -> Self {
        Self::with_capacity(1 << 20, None)
    }

    /// A builder whose buffer will not need to grow below `capacity` bytes (growth
    /// doubles a buffer, which would double a pack's peak memory), for chunks
    /// compressed with `dict` (if any).
    pub fn with_capacity(capacity: usize, dict: Option<Id>) -> Self {
        Self::with_buffer(Vec::with_capacity(capacity), dict)
    }

    /// A builder writing into `buf` (emptied first): lets a writer reuse the
    /// allocation of a pack already stored.
    pub fn with_buffer(buf: Vec<u8>, dict: Option<Id>) -> Self {
        Self::build(buf, dict, FORMAT_VERSION)
    }

    /// [`PackBuilder::with_buffer`] for a pack of format `version` (1 or 2; a
    /// version-2 pack may hold delta blobs, pushed with [`PackBuilder::try_push`]).
    pub fn with_version(buf: Vec<u8>, dict: Option<Id>, version: u16) -> Result<Self> {
        check_version_up_to(version, DELTA_FORMAT_VERSION)?;
        Ok(Self::build(buf, dict, version))
    }

    fn build(mut buf: Vec<u8>, dict: Option<Id>, version: u16) -> Self {
        buf.clear();
        buf.extend_from_slice(&MAGIC);
        buf.extend_from_slice(&TAG);
        buf.extend_from_slice(&version.to_le_bytes());
        let flags: u16 = if dict.is_some() { 1 } else { 0 };
        buf.extend_from_slice(&flags.to_le_bytes());
        buf.extend_from_slice(&dict.map(|d| d.0).unwrap_or_default()[..16]);
        let hc = checksum32(&buf[..28]);
        buf.extend_from_slice(&hc.to_le_bytes());
        PackBuilder {
            buf,
            entries: Vec::new(),
            version,
        }
    }

    /// The format version this pack is written as.
    pub fn version(&self) -> u16 {
        self.version
    }

    /// Makes this pack a version-2 one (header now, footer when finished), so it
    /// may take delta blobs: a backup learns it needs one only at its first
    /// delta, after plain chunks were pushed (their blobs are the same in both
    /// versions).
    pub fn allow_deltas(&mut self) {
        if self.version >= DELTA_FORMAT_VERSION {
            return;
        }
        self.version = DELTA_FORMAT_VERSION;
        self.buf[8..10].copy_from_slice(&DELTA_FORMAT_VERSION.to_le_bytes());
        let hc = checksum32(&self.buf[..28]);
        self.buf[28..32].copy_from_slice(&hc.to_le_bytes());
    }

    /// [`PackBuilder::push`] after the checks a decoder makes of one blob (its
    /// codec allowed in this pack's version, lengths within limits, a raw blob as
    /// long as its chunk, a delta blob's header), so that nothing the decoder would
    /// refuse is written. The way to push a delta blob.
    pub fn try_push(
        &mut self,
        id: ChunkId,
        stored: &[u8],
        raw_len: u32,
        codec: Codec,
    ) -> Result<PackEntry> {
        codec.check_in(self.version)?;
        let e = PackEntry {
            id,
            offset: self.buf.len() as u32,
            stored_len: stored.len() as u32,
            raw_len,
            codec,
        };
        let end = self.buf.len() as u64 + stored.len() as u64;
        if end > MAX_PACK_LEN {
            return Err(FormatError::TooLarge {
                what: "pack length",
                value: end,
                limit: MAX_PACK_LEN,
            });
        }
        check_entry(&e, end)?;
        match codec {
            Codec::ZstdDelta => {
                split_delta(&e, stored)?;
            }
            // Header flags, bit 0: the pack has a dictionary.
            Codec::ZstdDict if self.buf[10] & 1 == 0 => {
                return Err(FormatError::Invalid(format!(
                    "chunk {} needs a dictionary the pack does not name",
                    id.short()
                )))
            }
            _ => {}
        }
        Ok(self.push(id, stored, raw_len, codec))
    }

    /// Appends one stored blob; returns its entry. The caller vouches for it: a
    /// chunk the encoder made, or a blob copied from a decoded pack of the same
    /// version ([`PackBuilder::try_push`] checks).
    pub fn push(&mut self, id: ChunkId, stored: &[u8], raw_len: u32, codec: Codec) -> PackEntry {
        let entry = PackEntry {
            id,
            offset: self.buf.len() as u32,
            stored_len: stored.len() as u32,
            raw_len,
            codec,
        };
        self.buf.extend_from_slice(stored);
        self.entries.push(entry);
        entry
    }

    /// Bytes of blobs so far (what the pack size target is measured against).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> &[PackEntry] {
        &self.entries
    }

    /// The stored bytes of a blob already pushed (for read-back before the pack is written).
    pub fn blob(&self, e: &PackEntry) -> &[u8] {
        &self.buf[e.offset as usize..(e.offset + e.stored_len) as usize]
    }

    /// Finishes the pack: returns its id, bytes and entries.
    pub fn finish(mut self) -> (Id, Vec<u8>, Vec<PackEntry>) {
        let trailer_start = self.buf.len();
        for e in &self.entries {
            self.buf.extend_from_slice(&e.id.0);
            self.buf.extend_from_slice(&e.offset.to_le_bytes());
            self.buf.extend_from_slice(&e.stored_len.to_le_bytes());
            self.buf.extend_from_slice(&e.raw_len.to_le_bytes());
            self.buf.push(e.codec as u8);
            self.buf.extend_from_slice(&[0u8; 3]);
        }
        let trailer_sum = checksum64(&self.buf[trailer_start..]);
        let footer_start = self.buf.len();
        self.buf
            .extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        self.buf
            .extend_from_slice(&((self.entries.len() * ENTRY_LEN) as u32).to_le_bytes());
        self.buf.extend_from_slice(&trailer_sum.to_le_bytes());
        self.buf.extend_from_slice(&self.version.to_le_bytes());
        self.buf.extend_from_slice(&[0u8; 2]);
        let fc = checksum32(&self.buf[footer_start..footer_start + 20]);
        self.buf.extend_from_slice(&fc.to_le_bytes());
        self.buf.extend_from_slice(&END_MAGIC);
        let id = Id::of_object(&self.buf);
        (id, self.buf, self.entries)
    }
}

/// Checks a pack header (the first [`HEADER_LEN`] bytes); returns the first 16
/// bytes of its dictionary's id, if it has one.
pub fn check_header(bytes: &[u8]) -> Result<Option<[u8; 16]>> {
    check_header_version(bytes).map(|(_, dict)| dict)
}

/// [`check_header`], with the pack's format version.
pub fn check_header_version(bytes: &[u8]) -> Result<(u16, Option<[u8; 16]>)> {
    let mut r = LeReader::new(bytes);
    let magic: [u8; 4] = r.array()?;
    let tag: [u8; 4] = r.array()?;
    if magic != MAGIC || tag != TAG {
        return Err(FormatError::BadMagic { expected: "pack" });
    }
    let version = r.u16()?;
    let flags = r.u16()?;
    let dict: [u8; 16] = r.array()?;
    let hc = r.u32()?;
    if checksum32(&bytes[..28]) != hc {
        return Err(FormatError::HeaderChecksum);
    }
    check_version_up_to(version, DELTA_FORMAT_VERSION)?;
    match flags {
        0 => Ok((version, None)),
        1 => Ok((version, Some(dict))),
        other => Err(FormatError::Invalid(format!(
            "unknown pack flags {other:#x}"
        ))),
    }
}

/// Decoded footer: how long the trailer before it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    pub count: u32,
    pub trailer_len: u32,
    trailer_sum: u64,
    /// The pack's format version: which codecs its trailer may name.
    pub version: u16,
}

/// Decodes the last [`FOOTER_LEN`] bytes of a pack of `pack_len` bytes.
pub fn decode_footer(footer: &[u8], pack_len: u64) -> Result<Footer> {
    let mut r = LeReader::new(footer);
    let count = r.u32()?;
    let trailer_len = r.u32()?;
    let trailer_sum = r.u64()?;
    let version = r.u16()?;
    r.bytes(2)?;
    let fc = r.u32()?;
    let magic: [u8; 8] = r.array()?;
    if magic != END_MAGIC {
        return Err(FormatError::BadMagic {
            expected: "pack footer",
        });
    }
    if checksum32(&footer[..20]) != fc {
        return Err(FormatError::HeaderChecksum);
    }
    check_version_up_to(version, DELTA_FORMAT_VERSION)?;
    if count as u64 * ENTRY_LEN as u64 != trailer_len as u64 {
        return Err(FormatError::Invalid(format!(
            "pack footer: {count} entries do not fill a trailer of {trailer_len} bytes"
        )));
    }
    let overhead = (HEADER_LEN + FOOTER_LEN) as u64 + trailer_len as u64;
    if overhead > pack_len {
        return Err(FormatError::Truncated {
            needed: overhead,
            have: pack_len,
        });
    }
    Ok(Footer {
        count,
        trailer_len,
        trailer_sum,
        version,
    })
}

/// Decodes the trailer (the `footer.trailer_len` bytes before the footer).
pub fn decode_trailer(trailer: &[u8], footer: &Footer, pack_len: u64) -> Result<Vec<PackEntry>> {
    if trailer.len() != footer.trailer_len as usize {
        return Err(FormatError::Truncated {
            needed: footer.trailer_len as u64,
            have: trailer.len() as u64,
        });
    }
    if checksum64(trailer) != footer.trailer_sum {
        return Err(FormatError::BodyChecksum);
    }
    // `footer` came from `decode_footer`, but maybe for another length: never underflow.
    let overhead = FOOTER_LEN as u64 + footer.trailer_len as u64;
    let blobs_end = pack_len
        .checked_sub(overhead)
        .ok_or(FormatError::Truncated {
            needed: overhead,
            have: pack_len,
        })?;
    let mut r = LeReader::new(trailer);
    let mut out = Vec::with_capacity(footer.count as usize);
    for _ in 0..footer.count {
        let id = Id(r.array()?);
        let offset = r.u32()?;
        let stored_len = r.u32()?;
        let raw_len = r.u32()?;
        let codec = Codec::from_u8(r.u8()?)?;
        codec.check_in(footer.version)?;
        r.bytes(3)?;
        let e = PackEntry {
            id,
            offset,
            stored_len,
            raw_len,
            codec,
        };
        check_entry(&e, blobs_end)?;
        out.push(e);
    }
    Ok(out)
}

/// Bounds an entry against the blob area of its pack (used for index entries too).
pub fn check_entry(e: &PackEntry, blobs_end: u64) -> Result<()> {
    let end = e.offset as u64 + e.stored_len as u64;
    if (e.offset as u64) < HEADER_LEN as u64 || end > blobs_end {
        return Err(FormatError::Invalid(format!(
            "chunk {} at {}..{end} lies outside the blob area ..{blobs_end}",
            e.id.short(),
            e.offset
        )));
    }
    if e.raw_len > MAX_CHUNK_LEN {
        return Err(FormatError::TooLarge {
            what: "chunk length",
            value: e.raw_len as u64,
            limit: MAX_CHUNK_LEN as u64,
        });
    }
    if e.codec == Codec::Raw && e.raw_len != e.stored_len {
        return Err(FormatError::Invalid(format!(
            "raw chunk {} has stored length {} but raw length {}",
            e.id.short(),
            e.stored_len,
            e.raw_len
        )));
    }
    if e.codec == Codec::ZstdDelta && e.stored_len as usize <= DELTA_HEADER_MIN {
        return Err(FormatError::Invalid(format!(
            "delta chunk {} of {} stored bytes has no room for its base and frame",
            e.id.short(),
            e.stored_len
        )));
    }
    Ok(())
}

/// Decodes a whole pack held in memory: header, footer and trailer.
pub fn decode_pack(bytes: &[u8]) -> Result<Vec<PackEntry>> {
    let len = bytes.len() as u64;
    if bytes.len() < HEADER_LEN + FOOTER_LEN {
        return Err(FormatError::Truncated {
            needed: (HEADER_LEN + FOOTER_LEN) as u64,
            have: len,
        });
    }
    let (version, dict) = check_header_version(&bytes[..HEADER_LEN])?;
    let footer = decode_footer(&bytes[bytes.len() - FOOTER_LEN..], len)?;
    if version != footer.version {
        return Err(FormatError::Invalid(format!(
            "pack header says format version {version}, its footer {}",
            footer.version
        )));
    }
    let t_end = bytes.len() - FOOTER_LEN;
    let t_start = t_end - footer.trailer_len as usize;
    let entries = decode_trailer(&bytes[t_start..t_end], &footer, len)?;
    if dict.is_none() && entries.iter().any(|e| e.codec == Codec::ZstdDict) {
        return Err(FormatError::Invalid(
            "a chunk needs a dictionary the pack does not name".into(),
        ));
    }
    for e in entries.iter().filter(|e| e.codec == Codec::ZstdDelta) {
        // Inside the blob area: `decode_trailer` checked every entry.
        split_delta(
            e,
            &bytes[e.offset as usize..(e.offset + e.stored_len) as usize],
        )?;
    }
    Ok(entries)
}

/// Turns a stored blob back into the chunk's bytes, bounded by the entry's raw length.
/// `zstd` decompresses (with the pack's dictionary loaded, for [`Codec::ZstdDict`]).
pub fn decode_blob_with(
    e: &PackEntry,
    stored: &[u8],
    zstd: impl FnOnce(Codec, &[u8], usize) -> std::io::Result<Vec<u8>>,
) -> Result<Vec<u8>> {
    check_blob(e, stored)?;
    let raw = match e.codec {
        Codec::Raw => stored.to_vec(),
        c => zstd(c, stored, e.raw_len as usize).map_err(FormatError::Decompress)?,
    };
    check_decoded(e, &raw)?;
    Ok(raw)
}

/// What a blob must be before it is decoded: as long as its entry says, and
/// its raw length within [`MAX_CHUNK_LEN`] (the decoder's bound).
pub fn check_blob(e: &PackEntry, stored: &[u8]) -> Result<()> {
    if stored.len() != e.stored_len as usize {
        return Err(FormatError::Truncated {
            needed: e.stored_len as u64,
            have: stored.len() as u64,
        });
    }
    if e.raw_len > MAX_CHUNK_LEN {
        return Err(FormatError::TooLarge {
            what: "chunk length",
            value: e.raw_len as u64,
            limit: MAX_CHUNK_LEN as u64,
        });
    }
    Ok(())
}

/// A decoded blob must be its entry's raw length.
pub fn check_decoded(e: &PackEntry, raw: &[u8]) -> Result<()> {
    if raw.len() != e.raw_len as usize {
        return Err(FormatError::Invalid(format!(
            "chunk decoded to {} bytes, expected {}",
            raw.len(),
            e.raw_len
        )));
    }
    Ok(())
}

/// [`decode_blob_with`] for packs without a dictionary, and chunks that are not
/// deltas.
pub fn decode_blob(e: &PackEntry, stored: &[u8]) -> Result<Vec<u8>> {
    decode_blob_with(e, stored, |codec, s, cap| match codec {
        Codec::Zstd => zstd::bulk::decompress(s, cap),
        Codec::ZstdDelta => Err(std::io::Error::other("this chunk needs its base chunk")),
        _ => Err(std::io::Error::other(
            "this chunk needs its pack's dictionary",
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn build(chunks: &[Vec<u8>]) -> (Vec<u8>, Vec<PackEntry>) {
        let mut b = PackBuilder::new();
        for c in chunks {
            let z = zstd::bulk::compress(c, 3).unwrap();
            b.push(Id::of_chunk(c), &z, c.len() as u32, Codec::Zstd);
        }
        let (id, bytes, entries) = b.finish();
        assert_eq!(id, Id::of_object(&bytes));
        (bytes, entries)
    }

    proptest! {
        #[test]
        fn packs_round_trip(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 0..20)) {
            let (bytes, entries) = build(&chunks);
            let decoded = decode_pack(&bytes).unwrap();
            prop_assert_eq!(&decoded, &entries);
            for (e, c) in decoded.iter().zip(&chunks) {
                let stored = &bytes[e.offset as usize..(e.offset + e.stored_len) as usize];
                prop_assert_eq!(&decode_blob(e, stored).unwrap(), c);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_pack(&data);
        }

        #[test]
        fn metadata_bit_flips_are_detected(pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let chunks = vec![vec![1u8; 100], vec![2u8; 300]];
            let (bytes, entries) = build(&chunks);
            let blob_end = entries.last().map(|e| (e.offset + e.stored_len) as usize).unwrap();
            // Flip a bit in the header, the trailer or the footer.
            let meta: Vec<usize> = (0..HEADER_LEN).chain(blob_end..bytes.len()).collect();
            let i = meta[pos.index(meta.len())];
            let mut bad = bytes.clone();
            bad[i] ^= 1 << bit;
            prop_assert!(decode_pack(&bad).is_err());
        }
    }

    /// `decode_trailer` is public: a pack length shorter than the footer says used to
    /// underflow (a panic in debug builds) instead of returning an error.
    #[test]
    fn trailer_with_a_shorter_pack_length_is_rejected() {
        let (bytes, _) = build(&[vec![5u8; 100]]);
        let len = bytes.len();
        let footer = decode_footer(&bytes[len - FOOTER_LEN..], len as u64).unwrap();
        let trailer = &bytes[len - FOOTER_LEN - footer.trailer_len as usize..len - FOOTER_LEN];
        assert!(decode_trailer(trailer, &footer, 10).is_err());
    }

    /// A delta blob: its header, then some bytes standing for the frame (the
    /// format checks the header, the codec decodes the frame).
    fn delta_blob(base: Id, base_len: u32, frame: &[u8]) -> Vec<u8> {
        let mut b = DeltaHeader {
            base: BasePrefix::of(&base),
            base_len,
        }
        .encode();
        b.extend_from_slice(frame);
        b
    }

    fn v2_pack(blobs: &[(Id, Vec<u8>, u32, Codec)]) -> Result<(Vec<u8>, Vec<PackEntry>)> {
        let mut b = PackBuilder::with_version(Vec::new(), None, DELTA_FORMAT_VERSION)?;
        for (id, stored, raw_len, codec) in blobs {
            b.try_push(*id, stored, *raw_len, *codec)?;
        }
        let (_, bytes, entries) = b.finish();
        Ok((bytes, entries))
    }

    /// A delta header is 8 bytes of the base's id and its length as a minimal
    /// varint: every length up to a chunk's comes back, in 1 to 4 bytes; a
    /// length not minimally encoded, longer than 4 bytes or cut short, and a
    /// blob shorter than the shortest header, are refused.
    #[test]
    fn delta_headers_round_trip_and_bad_lengths_are_refused() {
        let (base, id) = (Id([7; 32]), Id([1; 32]));
        let entry = |blob: &[u8]| PackEntry {
            id,
            offset: 32,
            stored_len: blob.len() as u32,
            raw_len: 10,
            codec: Codec::ZstdDelta,
        };
        for (len, n) in [
            (0u32, 1usize),
            (127, 1),
            (128, 2),
            (4096, 2),
            (16383, 2),
            (16384, 3),
            (MAX_CHUNK_LEN, 4),
        ] {
            let blob = delta_blob(base, len, b"f");
            assert_eq!(blob.len(), BASE_PREFIX_LEN + n + 1, "length {len}");
            let (h, frame) = split_delta(&entry(&blob), &blob).unwrap();
            assert_eq!(
                (h.base, h.base_len, frame),
                (BasePrefix::of(&base), len, &b"f"[..])
            );
        }
        let prefix = BasePrefix::of(&base).0;
        for bad in [
            &[0x80u8, 0x00][..],
            &[0x80, 0x80, 0x80, 0x80],
            &[0xff, 0xff, 0xff, 0xff, 0x0f],
        ] {
            let blob = [&prefix[..], bad, b"frame"].concat();
            assert!(split_delta(&entry(&blob), &blob).is_err(), "{bad:?}");
        }
        // Cut inside the length, and shorter than the shortest header.
        let blob = [&prefix[..], &[0x80]].concat();
        assert!(split_delta(&entry(&blob), &blob).is_err());
        assert!(split_delta(&entry(&prefix), &prefix).is_err());
        let e = PackEntry {
            stored_len: DELTA_HEADER_MIN as u32,
            ..entry(&[])
        };
        assert!(check_entry(&e, 1 << 20).is_err());
    }

    /// Version 2 packs hold deltas and say so in header and footer; their
    /// entries and delta headers decode as written. A version-1 builder refuses
    /// a delta, and the packs it writes are version 1, byte for byte as before.
    #[test]
    fn version_2_packs_hold_deltas() {
        let base = Id([7; 32]);
        let blob = delta_blob(base, 4096, b"frame");
        let (bytes, entries) = v2_pack(&[
            (Id([1; 32]), blob.clone(), 4096, Codec::ZstdDelta),
            (Id([2; 32]), vec![3; 9], 9, Codec::Raw),
        ])
        .unwrap();
        assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), 2);
        let f = bytes.len() - FOOTER_LEN;
        assert_eq!(u16::from_le_bytes([bytes[f + 16], bytes[f + 17]]), 2);
        assert_eq!(decode_pack(&bytes).unwrap(), entries);
        let e = entries[0];
        let (h, frame) =
            split_delta(&e, &bytes[e.offset as usize..][..e.stored_len as usize]).unwrap();
        assert_eq!(
            (h.base, h.base_len, frame),
            (BasePrefix::of(&base), 4096, &b"frame"[..])
        );
        // 8 bytes of the base's id, 2 of its length (4096 as a varint), the frame.
        assert_eq!(e.stored_len as usize, 8 + 2 + 5);

        let mut v1 = PackBuilder::new();
        assert!(v1
            .try_push(Id([1; 32]), &blob, 4096, Codec::ZstdDelta)
            .is_err());
        assert!(v1.is_empty(), "a refused blob is not pushed");
        v1.try_push(Id([2; 32]), &[3; 9], 9, Codec::Raw).unwrap();
        let (_, v1_bytes, _) = v1.finish();
        let mut old = PackBuilder::new();
        old.push(Id([2; 32]), &[3; 9], 9, Codec::Raw);
        assert!(v1_bytes == old.finish().1);
        assert_eq!(u16::from_le_bytes([v1_bytes[8], v1_bytes[9]]), 1);
        assert!(PackBuilder::with_version(Vec::new(), None, 3).is_err());
        // A dictionary's frame only in a pack that names a dictionary.
        let mut no_dict = PackBuilder::new();
        assert!(no_dict
            .try_push(Id([3; 32]), b"frame", 99, Codec::ZstdDict)
            .is_err());
        let mut with_dict = PackBuilder::with_capacity(64, Some(Id([4; 32])));
        with_dict
            .try_push(Id([3; 32]), b"frame", 99, Codec::ZstdDict)
            .unwrap();
    }

    /// What a decoder refuses, the builder refuses: a delta against itself, one
    /// without a frame, one whose base is longer than a chunk. And a pack that
    /// gets past the builder anyway (`push`) is refused on decode.
    #[test]
    fn bad_deltas_are_refused_on_write_and_on_read() {
        let id = Id([1; 32]);
        let bad = [
            delta_blob(id, 10, b"frame"),
            delta_blob(Id([2; 32]), 10, b""),
            delta_blob(Id([2; 32]), MAX_CHUNK_LEN + 1, b"frame"),
            // No room for a frame after the shortest header.
            vec![0; DELTA_HEADER_MIN],
            // A base length that is not a minimal varint.
            [&[2u8; BASE_PREFIX_LEN][..], &[0x80, 0x00], b"frame"].concat(),
        ];
        for blob in &bad {
            assert!(v2_pack(&[(id, blob.clone(), 10, Codec::ZstdDelta)]).is_err());
            let mut b = PackBuilder::with_version(Vec::new(), None, 2).unwrap();
            b.push(id, blob, 10, Codec::ZstdDelta);
            assert!(decode_pack(&b.finish().1).is_err());
        }
    }

    /// A version-1 pack naming codec 3 (checksums right) is refused, and so is
    /// a pack whose header and footer disagree on the version.
    #[test]
    fn codec_3_in_a_version_1_pack_is_refused() {
        let blob = delta_blob(Id([7; 32]), 100, b"frame");
        let (bytes, entries) = v2_pack(&[(Id([1; 32]), blob, 100, Codec::ZstdDelta)]).unwrap();
        let f = bytes.len() - FOOTER_LEN;
        let mut as_v1 = bytes.clone();
        as_v1[8..10].copy_from_slice(&1u16.to_le_bytes());
        as_v1[f + 16..f + 18].copy_from_slice(&1u16.to_le_bytes());
        let as_v1 = crate::format::fuzz::seal_pack(&as_v1);
        let err = decode_pack(&as_v1).unwrap_err();
        assert!(err.to_string().contains("codec 3"), "{err}");
        let mut mixed = bytes.clone();
        mixed[8..10].copy_from_slice(&1u16.to_le_bytes());
        let mixed = crate::format::fuzz::seal_pack(&mixed);
        assert!(decode_pack(&mixed).is_err());
        // A version this build does not know yet.
        let mut v3 = bytes.clone();
        v3[8..10].copy_from_slice(&3u16.to_le_bytes());
        v3[f + 16..f + 18].copy_from_slice(&3u16.to_le_bytes());
        let err = decode_pack(&crate::format::fuzz::seal_pack(&v3)).unwrap_err();
        assert!(
            matches!(
                err,
                FormatError::UnsupportedVersion {
                    found: 3,
                    supported: 2
                }
            ),
            "{err}"
        );
        assert_eq!(decode_pack(&bytes).unwrap(), entries);
    }

    #[test]
    fn truncated_pack_is_rejected() {
        let (bytes, _) = build(&[vec![5u8; 1000]]);
        assert!(decode_pack(&bytes[..bytes.len() - 1]).is_err());
    }
}

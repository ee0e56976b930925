//! Index objects (`index/<id>`): where chunks are, and their names.
//!
//! Each backup that stores chunks writes one index object. Its entries, in order,
//! are the chunks that backup stored; page maps name a chunk as (index object,
//! ordinal), so the 32-byte chunk id is written once in the store. Offsets are
//! written as the gap after the previous entry in the same pack (zero for chunks
//! written back to back), which keeps an entry at about 38 bytes.
//!
//! An object of format version 2 may hold delta entries (codec 3); its body then
//! carries a base table before the entries: for each delta entry, in entry order,
//! its base chunk's id and its chain depth ([`DeltaBase`]), so that restore and
//! prune can plan chains without reading blobs. Version 1 bodies are read and
//! written exactly as before.

use super::envelope::{self, Kind};
use super::pack::{check_entry, Codec, PackEntry, ENTRY_LEN, FOOTER_LEN, HEADER_LEN, MAX_PACK_LEN};
use super::wire::{take_id, take_seq, take_varint_u32, take_varint_u64};
use super::{check_version_up_to, FormatError, Result, DELTA_FORMAT_VERSION, FORMAT_VERSION};
use crate::types::{ChunkId, Id};
use serde::{Deserialize, Serialize};

/// A pack an index object points into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackRef {
    pub id: Id,
    /// Total length of the pack object in bytes.
    pub len: u64,
    /// The dictionary its codec-2 chunks were compressed with.
    pub dict: Option<Id>,
}

/// One chunk: which of the object's packs holds it, and where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    pub pack: u32,
    pub entry: PackEntry,
}

/// Longest chain of deltas behind a chunk: a delta's depth is 1 against a chunk
/// that is not a delta, its base's depth + 1 otherwise, and never more than this.
/// It bounds the work of reading any chunk (at most this many deltas decoded
/// after one plain chunk) against how often a changing page must be stored whole;
/// FORMAT.md, "Format version 2: deltas", says why 8.
pub const MAX_DELTA_DEPTH: u8 = 8;

/// The base of one delta entry (codec 3) of a version-2 index object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeltaBase {
    /// The entry's position in [`IndexBody::entries`] (not on the wire: the
    /// base table lists the delta entries' bases in entry order).
    pub ordinal: u64,
    /// The chunk whose raw bytes the delta was made against (its blob names it
    /// too: the index is what plans without reading blobs).
    pub base: ChunkId,
    /// 1..=[`MAX_DELTA_DEPTH`].
    pub depth: u8,
    /// The bytes the chunk would take stored alone (its smallest form that is
    /// not a delta, at most its raw length), measured when the delta was made:
    /// what the delta saved is this minus its stored length (`stats`). 0 when
    /// unknown (a row `repair index` rebuilt from a blob).
    pub whole_len: u32,
}

/// The checks of one base-table row against its entry (decode and encode alike).
fn check_base(id: &ChunkId, raw_len: u32, base: &ChunkId, depth: u8, whole_len: u32) -> Result<()> {
    if whole_len > raw_len {
        return Err(FormatError::Invalid(format!(
            "delta chunk {} would take {whole_len} bytes whole, more than its {raw_len} raw bytes",
            id.short(),
        )));
    }
    if depth == 0 || depth > MAX_DELTA_DEPTH {
        return Err(FormatError::Invalid(format!(
            "delta chunk {} has depth {depth}, outside 1..={MAX_DELTA_DEPTH}",
            id.short()
        )));
    }
    if base == id {
        return Err(FormatError::Invalid(format!(
            "chunk {} is a delta against itself",
            id.short()
        )));
    }
    Ok(())
}

/// A decoded index object. `entries` order is the ordinal order page maps use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexBody {
    pub packs: Vec<PackRef>,
    pub entries: Vec<IndexEntry>,
    /// One row per delta entry, in entry order (empty in a version-1 object).
    pub deltas: Vec<DeltaBase>,
}

#[derive(Serialize, Deserialize)]
struct WireEntry {
    id: ChunkId,
    pack: u32,
    /// offset − end of the previous entry of the same pack (zigzag varint).
    gap: i64,
    stored_len: u32,
    raw_len: u32,
    codec: Codec,
}

// The wire body is postcard of the struct `{ packs: Vec<PackRef>, entries:
// Vec<WireEntry> }` in version 1, and `{ packs: Vec<PackRef>, bases: Vec<([u8;
// 32], u8)>, entries: Vec<WireEntry> }` in version 2 (the base table first, so a
// reader streaming the entries knows each delta's base when it meets it):
// written by `Wire` below, read entry by entry by `decode_each`.

/// Serialises an [`IndexBody`] as the wire body of `version`, computing gaps on
/// the fly, so a large index is not copied into a second representation first.
struct Wire<'a> {
    body: &'a IndexBody,
    version: u16,
}

struct WireEntries<'a>(&'a IndexBody);

struct WireBases<'a>(&'a [DeltaBase]);

impl Serialize for Wire<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let v2 = self.version >= DELTA_FORMAT_VERSION;
        let mut st = s.serialize_struct("WireBody", if v2 { 3 } else { 2 })?;
        st.serialize_field("packs", &self.body.packs)?;
        if v2 {
            st.serialize_field("bases", &WireBases(&self.body.deltas))?;
        }
        st.serialize_field("entries", &WireEntries(self.body))?;
        st.end()
    }
}

impl Serialize for WireBases<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for d in self.0 {
            seq.serialize_element(&(d.base, d.depth, d.whole_len))?;
        }
        seq.end()
    }
}

/// One row of a version-2 base table: 32 bytes of id, one byte of depth, the
/// whole length (a varint).
fn take_base(b: &[u8]) -> super::wire::Taken<'_, (ChunkId, u8, u32)> {
    let (id, b) = take_id(b)?;
    let (depth, b) = b
        .split_first()
        .ok_or(postcard::Error::DeserializeUnexpectedEnd)?;
    let (whole_len, b) = take_varint_u32(b)?;
    Ok(((id, *depth, whole_len), b))
}

impl Serialize for WireEntries<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let body = self.0;
        let mut prev_end: Vec<i64> = vec![HEADER_LEN as i64; body.packs.len()];
        let mut seq = s.serialize_seq(Some(body.entries.len()))?;
        for e in &body.entries {
            let p = e.pack as usize;
            if p >= prev_end.len() {
                // Only a malformed body (as in tests) names a pack it lacks; decode rejects it.
                prev_end.resize(p + 1, HEADER_LEN as i64);
            }
            let gap = e.entry.offset as i64 - prev_end[p];
            prev_end[p] = e.entry.offset as i64 + e.entry.stored_len as i64;
            seq.serialize_element(&WireEntry {
                id: e.entry.id,
                pack: e.pack,
                gap,
                stored_len: e.entry.stored_len,
                raw_len: e.entry.raw_len,
                codec: e.entry.codec,
            })?;
        }
        seq.end()
    }
}

/// Reads one [`WireEntry`] exactly as postcard does (the same bytes, accepted and
/// refused alike: a proptest holds the two together), without serde.
///
/// Why: an index object is read entry by entry when a store is opened, a quarter
/// of a million entries for a 1 GiB database; through serde each 32-byte id was
/// taken byte by byte, and decoding was most of the time before a restore's
/// first byte.
fn take_entry(b: &[u8]) -> std::result::Result<(WireEntry, &[u8]), postcard::Error> {
    let (id, b) = take_id(b)?;
    let (pack, b) = take_varint_u32(b)?;
    let (gap, b) = take_varint_u64(b)?;
    let (stored_len, b) = take_varint_u32(b)?;
    let (raw_len, b) = take_varint_u32(b)?;
    let (codec, b) = take_varint_u32(b)?;
    let codec = match codec {
        0 => Codec::Raw,
        1 => Codec::Zstd,
        2 => Codec::ZstdDict,
        3 => Codec::ZstdDelta,
        _ => return Err(postcard::Error::DeserializeBadEnum),
    };
    let entry = WireEntry {
        id,
        pack,
        // Zigzag, as postcard writes signed integers.
        gap: ((gap >> 1) as i64) ^ -((gap & 1) as i64),
        stored_len,
        raw_len,
        codec,
    };
    Ok((entry, b))
}

impl IndexBody {
    /// The index object of one pack's chunks, in the pack's order, without
    /// deltas (what the tests and fuzz seeds build from a `PackBuilder`).
    pub fn of_one_pack(pack: PackRef, entries: Vec<PackEntry>) -> Self {
        IndexBody {
            packs: vec![pack],
            entries: entries
                .into_iter()
                .map(|entry| IndexEntry { pack: 0, entry })
                .collect(),
            deltas: Vec::new(),
        }
    }

    /// The version-1 object (a body without deltas; one with deltas needs
    /// [`IndexBody::encode_as`], and its entries of codec 3 would make this
    /// object one every decoder refuses).
    pub fn encode(&self) -> Vec<u8> {
        envelope::encode(
            Kind::Index,
            &Wire {
                body: self,
                version: FORMAT_VERSION,
            },
        )
    }

    /// The object of format `version` (1, or 2 with the base table), after the
    /// checks its decoder makes of delta entries ([`IndexBody::check_deltas`]).
    pub fn encode_as(&self, version: u16) -> Result<Vec<u8>> {
        self.check_deltas(version)?;
        Ok(envelope::encode_as(
            Kind::Index,
            version,
            &Wire {
                body: self,
                version,
            },
        ))
    }

    /// The lowest format version that can hold this body: 2 with a delta entry.
    pub fn needed_version(&self) -> u16 {
        let deltas = self.entries.iter().map(|e| e.entry.codec.since());
        deltas
            .chain(self.deltas.iter().map(|_| DELTA_FORMAT_VERSION))
            .max()
            .unwrap_or(FORMAT_VERSION)
    }

    /// Whether the base table fits the entries for an object of `version`: none
    /// in version 1; in version 2 one row per codec-3 entry, in entry order, with
    /// a depth in 1..=[`MAX_DELTA_DEPTH`] and a base other than the chunk itself.
    pub fn check_deltas(&self, version: u16) -> Result<()> {
        check_version_up_to(version, DELTA_FORMAT_VERSION)?;
        let mut rows = self.deltas.iter();
        for (i, e) in self.entries.iter().enumerate() {
            e.entry.codec.check_in(version)?;
            if e.entry.codec != Codec::ZstdDelta {
                continue;
            }
            let row = rows
                .next()
                .filter(|d| d.ordinal == i as u64)
                .ok_or_else(|| {
                    FormatError::Invalid(format!(
                        "delta chunk {} (entry {i}) has no row in the base table",
                        e.entry.id.short()
                    ))
                })?;
            check_base(
                &e.entry.id,
                e.entry.raw_len,
                &row.base,
                row.depth,
                row.whole_len,
            )?;
        }
        match rows.next() {
            Some(d) => Err(FormatError::Invalid(format!(
                "the base table has a row for entry {}, which is not a delta",
                d.ordinal
            ))),
            None => Ok(()),
        }
    }

    /// The object with its body compressed, as older builds could write it.
    #[cfg(test)]
    pub(crate) fn encode_compressed(&self) -> Vec<u8> {
        envelope::encode_compressed(
            Kind::Index,
            &Wire {
                body: self,
                version: FORMAT_VERSION,
            },
        )
    }

    /// Its version-1 envelope, planned without being built in memory (see
    /// [`envelope::Streamed`]); [`IndexBody::write_streamed`] writes it. The bytes
    /// are [`IndexBody::encode`]'s. Refuses a body with deltas.
    pub fn plan_streamed(&self) -> Result<envelope::Streamed> {
        self.plan_streamed_as(FORMAT_VERSION)
    }

    /// [`IndexBody::plan_streamed`] for an object of format `version`; the bytes
    /// are [`IndexBody::encode_as`]'s.
    pub fn plan_streamed_as(&self, version: u16) -> Result<envelope::Streamed> {
        self.check_deltas(version)?;
        envelope::plan_streamed_as(
            Kind::Index,
            version,
            &Wire {
                body: self,
                version,
            },
        )
    }

    /// Writes the object `plan` (from [`IndexBody::plan_streamed`]) describes.
    pub fn write_streamed(
        &self,
        plan: &envelope::Streamed,
        w: &mut dyn std::io::Write,
    ) -> std::io::Result<()> {
        // The plan's header says which version's body it planned.
        let version = u16::from_le_bytes([plan.header[8], plan.header[9]]);
        envelope::write_streamed(
            plan,
            &Wire {
                body: self,
                version,
            },
            w,
        )
    }

    /// Decodes and bounds every entry against its pack's length (either version).
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut entries = Vec::new();
        let mut deltas = Vec::new();
        let packs = Self::decode_each_with_bases(bytes, |_, e, d| {
            entries.push(e);
            deltas.extend(d);
        })?;
        Ok(IndexBody {
            packs,
            entries,
            deltas,
        })
    }

    /// [`IndexBody::decode_each`] handing each delta entry its row of the base
    /// table too.
    pub fn decode_each_with_bases(
        bytes: &[u8],
        mut each: impl FnMut(&[PackRef], IndexEntry, Option<DeltaBase>),
    ) -> Result<Vec<PackRef>> {
        let (version, raw) = envelope::open_versioned(Kind::Index, bytes)?;
        Self::decode_body_each_as(version, &raw, |packs, e, d, _| each(packs, e, d))
    }

    /// Decodes like [`IndexBody::decode`], handing each entry to `each` (with the
    /// object's packs) instead of collecting them: a store's first index object has
    /// an entry per page of the database, and collecting them (twice, wire form and
    /// decoded) tripled the memory a backup needed to load the index.
    ///
    /// Either version; a version-2 object's base table is checked but not handed
    /// on ([`IndexBody::decode_each_with_bases`] does).
    pub fn decode_each(
        bytes: &[u8],
        mut each: impl FnMut(&[PackRef], IndexEntry),
    ) -> Result<Vec<PackRef>> {
        Self::decode_each_with_bases(bytes, |packs, e, _| each(packs, e))
    }

    /// Decodes a version-1 index object's body (what [`envelope::open`] returns),
    /// handing each entry to `each` with the offset of its chunk id in `body`, so
    /// that a reader that keeps the body need not copy the ids.
    pub fn decode_body_each(
        body: &[u8],
        mut each: impl FnMut(&[PackRef], IndexEntry, usize),
    ) -> Result<Vec<PackRef>> {
        Self::decode_body_each_as(FORMAT_VERSION, body, |packs, e, _, at| each(packs, e, at))
    }

    /// [`IndexBody::decode_body_each`] for a body of format `version` (what
    /// [`envelope::open_versioned`] returns), handing each delta entry its row of
    /// the base table.
    pub fn decode_body_each_as(
        version: u16,
        body: &[u8],
        mut each: impl FnMut(&[PackRef], IndexEntry, Option<DeltaBase>, usize),
    ) -> Result<Vec<PackRef>> {
        check_version_up_to(version, DELTA_FORMAT_VERSION)?;
        let (packs, mut rest): (Vec<PackRef>, &[u8]) = postcard::take_from_bytes(body)?;
        for p in &packs {
            if p.len > MAX_PACK_LEN || p.len < (HEADER_LEN + FOOTER_LEN) as u64 {
                return Err(FormatError::Invalid(format!(
                    "pack {} has impossible length {}",
                    p.id.short(),
                    p.len
                )));
            }
        }
        // Version 2: the base table (34 bytes a row at least, bounded by the
        // bytes left before anything is allocated), rows checked as their
        // entries come.
        let mut bases = Vec::new();
        if version >= DELTA_FORMAT_VERSION {
            let (rows, after) = take_seq(rest, 34, take_base)?;
            bases = rows;
            rest = after;
        }
        let mut rows = bases.into_iter();
        // The entry sequence: its length (a varint, as postcard writes sequences),
        // then the entries; each is decoded and checked before the next is read.
        let (count, after): (usize, &[u8]) = postcard::take_from_bytes(rest)?;
        rest = after;
        let mut prev_end = vec![HEADER_LEN as i64; packs.len()];
        for ordinal in 0..count as u64 {
            // An entry starts with its chunk id.
            let id_at = body.len() - rest.len();
            let (w, after) = take_entry(rest)?;
            rest = after;
            w.codec.check_in(version)?;
            let delta = match w.codec {
                Codec::ZstdDelta => {
                    let (base, depth, whole_len) = rows.next().ok_or_else(|| {
                        FormatError::Invalid(format!(
                            "delta chunk {} has no row in the base table",
                            w.id.short()
                        ))
                    })?;
                    check_base(&w.id, w.raw_len, &base, depth, whole_len)?;
                    Some(DeltaBase {
                        ordinal,
                        base,
                        depth,
                        whole_len,
                    })
                }
                _ => None,
            };
            let p = w.pack as usize;
            let pack = packs.get(p).ok_or_else(|| {
                FormatError::Invalid(format!("entry names pack #{p} of {}", packs.len()))
            })?;
            let offset = prev_end[p]
                .checked_add(w.gap)
                .filter(|o| (0..=u32::MAX as i64).contains(o))
                .ok_or_else(|| {
                    FormatError::Invalid(format!("chunk {} has an impossible offset", w.id.short()))
                })?;
            let entry = PackEntry {
                id: w.id,
                offset: offset as u32,
                stored_len: w.stored_len,
                raw_len: w.raw_len,
                codec: w.codec,
            };
            // The trailer takes at least one entry; the blob area ends before it. A pack
            // too short for even one entry (64..80 bytes) has an empty blob area, so
            // `check_entry` rejects the entry (subtracting would underflow).
            let blobs_end = pack.len.saturating_sub((FOOTER_LEN + ENTRY_LEN) as u64);
            check_entry(&entry, blobs_end)?;
            if entry.codec == Codec::ZstdDict && pack.dict.is_none() {
                return Err(FormatError::Invalid(format!(
                    "chunk {} needs a dictionary its pack does not name",
                    w.id.short()
                )));
            }
            prev_end[p] = offset + w.stored_len as i64;
            each(
                &packs,
                IndexEntry {
                    pack: w.pack,
                    entry,
                },
                delta,
                id_at,
            );
        }
        if rows.next().is_some() {
            return Err(FormatError::Invalid(
                "the base table has more rows than the object has delta entries".into(),
            ));
        }
        Ok(packs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pack::{PackBuilder, DELTA_HEADER_MIN};
    use proptest::prelude::*;

    fn body_of(sizes: &[usize], shuffle: u64) -> IndexBody {
        let mut b = PackBuilder::new();
        for (i, s) in sizes.iter().enumerate() {
            let data = vec![i as u8; *s];
            b.push(Id::of_chunk(&data), &data, *s as u32, Codec::Raw);
        }
        let (id, bytes, entries) = b.finish();
        let pack = PackRef {
            id,
            len: bytes.len() as u64,
            dict: None,
        };
        let mut body = IndexBody::of_one_pack(pack, entries);
        // Index order need not be pack order.
        if !body.entries.is_empty() {
            let k = (shuffle % body.entries.len() as u64) as usize;
            body.entries.rotate_left(k);
        }
        body
    }

    /// A write that fails while an index object streams (a full disk) comes back
    /// as that error, not as postcard's "buffer full"; an interrupted one is retried.
    #[test]
    fn a_failed_write_is_returned_as_it_was() {
        struct Fills(usize);
        impl std::io::Write for Fills {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                if self.0 < buf.len() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::StorageFull,
                        "no space left on device",
                    ));
                }
                self.0 -= buf.len();
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let body = body_of(&vec![3; 5000], 17);
        let plan = body.plan_streamed().unwrap();
        // Interrupted writes (every other call) are tried again, not failures.
        struct Interrupts(bool, Vec<u8>);
        impl std::io::Write for Interrupts {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0 = !self.0;
                if self.0 {
                    return Err(std::io::ErrorKind::Interrupted.into());
                }
                self.1.extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut w = Interrupts(false, Vec::new());
        body.write_streamed(&plan, &mut w)
            .expect("interruptions are retried");
        assert!(w.1 == body.encode());
        for room in [0, 40, 70_000] {
            let err = body
                .write_streamed(&plan, &mut Fills(room))
                .expect_err("the disk is full");
            assert_eq!(err.kind(), std::io::ErrorKind::StorageFull, "{room}: {err}");
            assert!(err.to_string().contains("no space left"), "{room}: {err}");
        }
    }

    /// A body larger than the writer's buffer streams the same bytes too.
    #[test]
    fn a_large_index_streams_the_bytes_encode_builds() {
        let body = body_of(&vec![3; 5000], 17);
        let bytes = body.encode();
        assert!(bytes.len() > 150_000);
        let plan = body.plan_streamed().unwrap();
        let mut written = Vec::new();
        body.write_streamed(&plan, &mut written).unwrap();
        assert!(written == bytes);
        assert_eq!(plan.hash, *blake3::hash(&bytes).as_bytes());
    }

    proptest! {
        #[test]
        fn round_trips(sizes in proptest::collection::vec(1usize..500, 0..30), shuffle in any::<u64>()) {
            let body = body_of(&sizes, shuffle);
            prop_assert_eq!(IndexBody::decode(&body.encode()).unwrap(), body);
        }

        /// Each entry's chunk id is in the body where `decode_body_each` says, and
        /// the entries are those `decode` gives, in order.
        #[test]
        fn id_offsets_point_at_the_ids(sizes in proptest::collection::vec(1usize..500, 0..30), shuffle in any::<u64>()) {
            let body = body_of(&sizes, shuffle);
            let bytes = body.encode();
            let raw = envelope::open(Kind::Index, &bytes).unwrap();
            let mut seen = Vec::new();
            IndexBody::decode_body_each(&raw, |_, e, at| {
                assert_eq!(&raw[at..at + 32], &e.entry.id.0[..]);
                seen.push(e);
            })
            .unwrap();
            prop_assert_eq!(seen, body.entries);
        }

        /// Streamed, an index object is the bytes `encode` builds, under the same name.
        #[test]
        fn streamed_is_encoded(sizes in proptest::collection::vec(1usize..500, 0..300), shuffle in any::<u64>()) {
            let body = body_of(&sizes, shuffle);
            let bytes = body.encode();
            let plan = body.plan_streamed().unwrap();
            let mut written = Vec::new();
            body.write_streamed(&plan, &mut written).unwrap();
            prop_assert_eq!(&written, &bytes);
            prop_assert_eq!(plan.len, bytes.len() as u64);
            prop_assert_eq!(plan.hash, *blake3::hash(&bytes).as_bytes());
        }

        /// The hand-written entry reader takes what postcard takes, the same way, and
        /// refuses what it refuses: on encoded entries (with every field's range),
        /// and on the same bytes cut short or damaged.
        #[test]
        fn take_entry_agrees_with_postcard(
            id in any::<[u8; 32]>(),
            pack in any::<u32>(),
            gap in any::<i64>(),
            stored_len in any::<u32>(),
            raw_len in any::<u32>(),
            codec in 0u8..4,
            cut in any::<prop::sample::Index>(),
            flip in any::<(prop::sample::Index, u8)>(),
        ) {
            let w = WireEntry {
                id: Id(id),
                pack,
                gap,
                stored_len,
                raw_len,
                codec: Codec::from_u8(codec).unwrap(),
            };
            let mut bytes = postcard::to_allocvec(&w).unwrap();
            bytes.extend_from_slice(b"tail");
            let same = |b: &[u8]| -> std::result::Result<(), TestCaseError> {
                let ours = take_entry(b).map(|(e, r)| ((e.id, e.pack, e.gap, e.stored_len, e.raw_len, e.codec), r));
                let theirs = postcard::take_from_bytes::<WireEntry>(b)
                    .map(|(e, r)| ((e.id, e.pack, e.gap, e.stored_len, e.raw_len, e.codec), r));
                match (ours, theirs) {
                    (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                    (Err(_), Err(_)) => {}
                    (a, b) => prop_assert!(false, "take_entry {:?}, postcard {:?}", a.is_ok(), b.is_ok()),
                }
                Ok(())
            };
            same(&bytes)?;
            same(&bytes[..cut.index(bytes.len())])?;
            let mut damaged = bytes.clone();
            let at = flip.0.index(damaged.len());
            damaged[at] ^= flip.1 | 1;
            same(&damaged)?;
        }

        /// Arbitrary bytes (non-canonical and overlong varints, bad codecs) are read
        /// alike by both.
        #[test]
        fn take_entry_agrees_with_postcard_on_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let ours = take_entry(&data).map(|(e, r)| ((e.id, e.pack, e.gap, e.stored_len, e.raw_len, e.codec), r.len()));
            let theirs = postcard::take_from_bytes::<WireEntry>(&data)
                .map(|(e, r)| ((e.id, e.pack, e.gap, e.stored_len, e.raw_len, e.codec), r.len()));
            prop_assert_eq!(ours.ok(), theirs.ok());
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = IndexBody::decode(&data);
        }
    }

    /// `body_of(sizes)` with every entry `delta` picks made a delta (codec 3,
    /// its blob long enough for a delta header) against another chunk, at the
    /// depth it picks.
    fn with_deltas(sizes: &[usize], picks: &[(bool, u8)]) -> IndexBody {
        let sizes: Vec<usize> = sizes.iter().map(|s| s + DELTA_HEADER_MIN).collect();
        let mut body = body_of(&sizes, 0);
        for (i, e) in body.entries.iter_mut().enumerate() {
            let Some(&(true, depth)) = picks.get(i) else {
                continue;
            };
            e.entry.codec = Codec::ZstdDelta;
            e.entry.raw_len = 4096;
            body.deltas.push(DeltaBase {
                ordinal: i as u64,
                base: Id([i as u8 ^ 0xff; 32]),
                depth,
                // 0 (unknown) up to the raw length, varints of 1 to 2 bytes.
                whole_len: (i as u32 * 1531) % 4097,
            });
        }
        body
    }

    proptest! {
        /// A version-2 object keeps its base table: each delta entry's base and
        /// depth come back, in order, and `decode_each_with_bases` hands each to
        /// its entry. A body without deltas encodes as version 1 byte for byte
        /// whichever way it is asked, and decodes the same from either version.
        #[test]
        fn version_2_round_trips_with_its_base_table(
            sizes in proptest::collection::vec(1usize..500, 0..30),
            picks in proptest::collection::vec((any::<bool>(), 1u8..=MAX_DELTA_DEPTH), 0..30),
        ) {
            let body = with_deltas(&sizes, &picks);
            let bytes = body.encode_as(2).unwrap();
            prop_assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), 2);
            prop_assert_eq!(IndexBody::decode(&bytes).unwrap(), body.clone());
            let mut rows = Vec::new();
            IndexBody::decode_each_with_bases(&bytes, |_, e, d| {
                assert_eq!(d.is_some(), e.entry.codec == Codec::ZstdDelta);
                rows.extend(d);
            }).unwrap();
            prop_assert_eq!(&rows, &body.deltas);
            let plan = body.plan_streamed_as(2).unwrap();
            let mut written = Vec::new();
            body.write_streamed(&plan, &mut written).unwrap();
            prop_assert_eq!(&written, &bytes);
            prop_assert_eq!(body.needed_version(), if body.deltas.is_empty() { 1 } else { 2 });
            if body.deltas.is_empty() {
                prop_assert_eq!(&body.encode_as(1).unwrap(), &body.encode());
                prop_assert_eq!(IndexBody::decode(&body.encode()).unwrap(), body);
            } else {
                // Never as version 1, and the version-1 path refuses it.
                prop_assert!(body.encode_as(1).is_err());
                prop_assert!(body.plan_streamed().is_err());
                // A version-1 reader of bodies does not take it for one.
                prop_assert!(envelope::open(Kind::Index, &bytes).is_err());
            }
        }
    }

    /// What the decoder refuses in a base table (depth 0 or above the bound, a
    /// delta against itself, a delta without a row, a row without a delta, a
    /// whole length above the raw length),
    /// `encode_as` refuses too; forced onto the wire anyway, decode refuses it.
    #[test]
    fn bad_base_tables_are_refused_on_write_and_on_read() {
        let good = with_deltas(
            &[10, 20, 30],
            &[(false, 1), (true, 1), (true, MAX_DELTA_DEPTH)],
        );
        good.encode_as(2).unwrap();
        let mut bad = Vec::new();
        for depth in [0, MAX_DELTA_DEPTH + 1, u8::MAX] {
            let mut b = good.clone();
            b.deltas[1].depth = depth;
            bad.push(b);
        }
        let mut itself = good.clone();
        itself.deltas[0].base = itself.entries[1].entry.id;
        bad.push(itself);
        let mut missing = good.clone();
        missing.deltas.pop();
        bad.push(missing);
        let mut extra = good.clone();
        extra.deltas.push(DeltaBase {
            ordinal: 0,
            base: Id([1; 32]),
            depth: 1,
            whole_len: 0,
        });
        bad.push(extra);
        let mut misplaced = good.clone();
        misplaced.deltas[0].ordinal = 0;
        bad.push(misplaced);
        // Whole, it would take more than its raw bytes: impossible.
        let mut too_long = good.clone();
        too_long.deltas[1].whole_len = 4097;
        bad.push(too_long);
        for (i, b) in bad.iter().enumerate() {
            assert!(b.encode_as(2).is_err(), "case {i} encoded");
            assert!(b.plan_streamed_as(2).is_err(), "case {i} planned");
            let forced = envelope::encode_as(
                Kind::Index,
                2,
                &Wire {
                    body: b,
                    version: 2,
                },
            );
            // The misplaced row is only a position in memory: on the wire it is
            // the same table, which is valid.
            if i == 6 {
                assert_eq!(IndexBody::decode(&forced).unwrap(), good);
                continue;
            }
            assert!(IndexBody::decode(&forced).is_err(), "case {i} decoded");
        }
        // Codec 3 in a version-1 object (its entries as version 2 wrote them).
        let forced = envelope::encode(
            Kind::Index,
            &Wire {
                body: &good,
                version: 1,
            },
        );
        let err = IndexBody::decode(&forced).unwrap_err();
        assert!(err.to_string().contains("codec 3"), "{err}");
        assert!(good.encode_as(3).is_err());
    }

    /// A version this build does not know is refused with the newest it reads.
    #[test]
    fn version_3_index_objects_are_refused() {
        let good = with_deltas(&[10], &[(true, 1)]);
        let mut bytes = good.encode_as(2).unwrap();
        bytes[8..10].copy_from_slice(&3u16.to_le_bytes());
        let bytes = crate::format::fuzz::seal_envelope(&bytes);
        match IndexBody::decode(&bytes) {
            Err(FormatError::UnsupportedVersion {
                found: 3,
                supported: 2,
            }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn back_to_back_entries_cost_about_38_bytes() {
        let body = body_of(&vec![300; 1000], 0);
        let per = body.encode().len() as f64 / 1000.0;
        assert!(per < 40.0, "{per} bytes per entry");
    }

    /// A pack length of 64..80 passed the length check and then underflowed
    /// computing the blob area (a panic in debug builds; found in review, then by
    /// the fuzzer: `tests/fixtures/fuzz-regressions/index/crash-*`).
    #[test]
    fn entry_in_a_pack_too_short_for_a_trailer_is_rejected() {
        let mut body = body_of(&[3], 0);
        body.packs[0].len = (HEADER_LEN + FOOTER_LEN) as u64 + 5;
        body.entries[0].entry.offset = HEADER_LEN as u32;
        assert!(IndexBody::decode(&body.encode()).is_err());
    }

    #[test]
    fn entries_outside_their_pack_are_rejected() {
        let mut body = body_of(&[3], 0);
        body.entries[0].entry.offset = body.packs[0].len as u32;
        assert!(IndexBody::decode(&body.encode()).is_err());
        let mut body = body_of(&[3], 0);
        body.entries[0].pack = 1;
        assert!(IndexBody::decode(&body.encode()).is_err());
    }
}

//! codec: what a stored chunk is, and the one way in and out of that form: one of
//! the two seams (DESIGN.md, "Modules"; the other is restore/reader.rs).
//!
//! A chunk is stored in a pack as a blob whose pack entry names its codec
//! ([`Codec`](crate::format::pack::Codec), `format/pack.rs`; FORMAT.md "Packs"):
//! the raw bytes, a zstd frame, a zstd frame made with the pack's dictionary, or
//! (format version 2) a delta: a zstd frame made with a base chunk's raw bytes as
//! its prefix, after the base's id and length. Everything that turns stored
//! bytes back into a chunk goes through [`Decoder`] (restore's rebuild and
//! salvage, verify's data pass, copy, prune's rewrite, repair, the chunk writer's
//! read-back), and everything that stores a chunk goes through [`Encoder`] (the
//! chunk writer). A new encoding is one new `Codec` variant, its arms in
//! `decode.rs` and `encode.rs`, and its section in FORMAT.md.
//!
//! A chunk's id is the blake3 of its raw bytes, so a decoded chunk is checked
//! against the id its entry names: [`Decoder::decode_checked`] does both and says
//! which failed ([`ChunkError`]), so no caller compares ids itself. The one
//! unchecked decode is [`Decoder::decode_into_with_base`], for restore's hot path: a
//! restore checks the whole image against the manifest's image check instead of
//! hashing every chunk again (restore/rebuild.rs), and names a damaged chunk with
//! [`Decoder::decode_into_checked`] only when that check fails.
//!
//! * `decode.rs`: [`Decoder`] (decompression contexts, one per dictionary), the
//!   per-thread decoders of restore and copy, and loading dictionaries.
//! * `encode.rs`: [`Encoder`]: compressing one chunk, plain or with a dictionary,
//!   keeping the smallest of the forms tried; or as a delta against a base
//!   ([`Encoder::encode_delta`], [`Encoder::encode_smallest`]).
//! * `whole.rs`: what a delta would take stored alone, measured for a sample
//!   of the small deltas and estimated for the rest.
//!
//! A delta decodes only with its base's raw bytes, which the caller finds (the
//! blob names the base by the first 8 bytes of its id: [`base_of`]; a reader
//! resolves them among the chunks it knows, `store/bases.rs`) and hands to the
//! `*_with_base` decoders;
//! without them, or with a base of the wrong length, decoding fails with
//! [`ChunkError::Base`] naming the base. Which base a backup picks, and how a
//! reader follows a chain, are the callers' (docs/DELTAS.md). Which forms a backup tries (its
//!   `PlainTrial`) and training a dictionary are the backup's policy and stay in
//!   `backup/chunk_writer.rs`.
//!
//! Below every wing that reads or writes chunks; it knows backend/ and format/,
//! nothing above.

mod decode;
mod encode;
pub(crate) mod whole;

pub(crate) use decode::base_of;
pub(crate) use decode::{decode_checked_on_thread, load_dict, Decoder, DecoderPool};
pub(crate) use encode::{slot_len, Attempt, Encoder};

use crate::format::pack::BasePrefix;
use crate::format::FormatError;
use crate::types::ChunkId;

/// What is wrong with the base a delta was handed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BaseFault {
    /// None was given (the caller could not find or decode it).
    Missing,
    /// One of `found` bytes, where the delta was made against `expected`.
    Length { expected: u32, found: usize },
}

/// Why a stored chunk could not be given back.
#[derive(Debug)]
pub(crate) enum ChunkError {
    /// Its stored bytes do not decode (or not to its length).
    Decode(FormatError),
    /// They decode, but to bytes whose id is `actual`, not the entry's.
    Mismatch { actual: ChunkId },
    /// A delta whose base chunk `base` (by the prefix its blob names it with)
    /// is missing or unusable: the base is what is damaged (or lost), and every
    /// chunk made against it with it.
    Base { base: BasePrefix, fault: BaseFault },
    /// A link of a delta's chain could not be read (an I/O, permission or
    /// network error): not damage, nothing is decided on its account.
    Unreadable {
        base: BasePrefix,
        source: crate::backend::BackendError,
    },
}

impl ChunkError {
    /// The store's error for it: an unreadable base is the read error it was
    /// (not damage: exit 1, nothing quarantined); anything else is what
    /// `damaged` makes of this error's text.
    pub(crate) fn or_damaged(self, damaged: impl FnOnce(String) -> crate::Error) -> crate::Error {
        match self {
            ChunkError::Unreadable { source, .. } => crate::Error::Backend(source),
            other => damaged(other.to_string()),
        }
    }
}

impl std::fmt::Display for ChunkError {
    /// The detail the errors that name a damaged chunk carry (restore, copy and
    /// the chunk writer print it as it is; verify and prune add their own words).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChunkError::Decode(e) => e.fmt(f),
            ChunkError::Mismatch { .. } => f.write_str("content does not match its id"),
            ChunkError::Base {
                base,
                fault: BaseFault::Missing,
            } => write!(f, "its base chunk {} is missing or damaged", base.short()),
            ChunkError::Unreadable { base, source } => {
                write!(
                    f,
                    "its base chunk {} could not be read: {source}",
                    base.short()
                )
            }
            ChunkError::Base {
                base,
                fault: BaseFault::Length { expected, found },
            } => write!(
                f,
                "its base chunk {} is {found} bytes long, the delta needs {expected}",
                base.short()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pack::{Codec, PackEntry};
    use crate::types::Id;
    use proptest::prelude::*;

    fn page(seed: u8) -> Vec<u8> {
        (0..4096u32)
            .map(|i| if i % 7 < 3 { seed } else { (i / 13) as u8 })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Whatever the chunk, the dictionary and the forms tried, what the encoder
        /// stores decodes back to the chunk, checked against its id, both ways
        /// (to a new buffer and into a slot); a flipped id is a mismatch naming
        /// the real one, and a truncated blob does not decode.
        #[test]
        fn encoded_chunks_decode_checked(
            data in proptest::collection::vec(prop_oneof![Just(0u8), Just(7u8), any::<u8>()], 1..6000),
            with_dict in any::<bool>(),
            attempt in prop_oneof![Just(Attempt::Plain), Just(Attempt::Dict), Just(Attempt::Both)],
        ) {
            let dict_bytes = page(7);
            let dict_id = Id::of_object(&dict_bytes);
            let dict = with_dict.then_some((dict_id, &dict_bytes[..]));
            let mut enc = Encoder::new(3, dict).expect("encoder");
            let mut slot = vec![0x55; slot_len(data.len())];
            let out = enc.encode(&data, &mut slot, attempt).expect("encodes");
            prop_assert!(out.len <= data.len());
            let id = Id::of_chunk(&data);
            let entry = PackEntry {
                id,
                offset: 32,
                stored_len: out.len as u32,
                raw_len: data.len() as u32,
                codec: out.codec,
            };
            let stored = &slot[..out.len];
            let mut dec = Decoder::new(crate::types::ChunkIds::default()).expect("decoder");
            dec.add_dict(dict_id, &dict_bytes).expect("dictionary");
            let d = Some(&dict_id);
            prop_assert_eq!(&dec.decode_checked(&entry, stored, d).expect("decodes"), &data);
            let mut into = vec![0u8; data.len()];
            dec.decode_into_checked(&entry, stored, d, &mut into).expect("decodes into");
            prop_assert_eq!(&into, &data);
            let wrong = PackEntry { id: Id([1; 32]), ..entry };
            match dec.decode_checked(&wrong, stored, d) {
                Err(ChunkError::Mismatch { actual }) => prop_assert_eq!(actual, id),
                other => prop_assert!(false, "{:?}", other.map(|v| v.len())),
            }
            if out.len > 1 {
                let short = &stored[..out.len - 1];
                prop_assert!(matches!(dec.decode_checked(&entry, short, d), Err(ChunkError::Decode(_))));
            }
        }

        /// Whatever the chunk and its base (a few bytes changed, other lengths,
        /// unrelated bytes), a delta the encoder makes decodes back to the chunk
        /// with its base, checked, both ways; without the base, or with one of
        /// another length, it fails naming the base; with a damaged base of the
        /// right length it fails or still gives the chunk, never other bytes;
        /// cut short, it does not decode. And `encode_smallest` never stores
        /// more than the plain forms.
        #[test]
        fn deltas_decode_checked_with_their_base(
            data in proptest::collection::vec(prop_oneof![Just(0u8), Just(7u8), any::<u8>()], 1..6000),
            similar in any::<bool>(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..12),
            other in proptest::collection::vec(any::<u8>(), 0..6000),
            cut in 0usize..64,
            flip in any::<prop::sample::Index>(),
        ) {
            let base = match similar {
                true => {
                    let mut b = data.clone();
                    for (at, v) in &edits {
                        let i = at.index(b.len());
                        b[i] = *v;
                    }
                    b.truncate(b.len().saturating_sub(cut));
                    b
                }
                false => other,
            };
            let id = Id::of_chunk(&data);
            let base_id = Id::of_chunk(&base);
            let mut enc = Encoder::new(3, None).expect("encoder");
            let mut slot = vec![0x55; slot_len(data.len())];
            let mut plain_slot = slot.clone();
            let plain = enc.encode(&data, &mut plain_slot, Attempt::Plain).expect("plain");
            let best = enc
                .encode_smallest(&data, &id, &mut slot, Attempt::Plain, Some((&base_id, &base)))
                .expect("encodes");
            prop_assert!(best.len <= plain.len);
            let Some(out) = enc.encode_delta(&data, &id, &base_id, &base, &mut slot).expect("delta") else {
                // No delta smaller than the raw chunk (or the base is the chunk).
                prop_assert!(BasePrefix::of(&base_id) == BasePrefix::of(&id) || best.codec != Codec::ZstdDelta);
                return Ok(());
            };
            prop_assert_eq!(out.codec, Codec::ZstdDelta);
            prop_assert!(out.len < data.len());
            let entry = PackEntry { id, offset: 32, stored_len: out.len as u32, raw_len: data.len() as u32, codec: out.codec };
            let stored = &slot[..out.len];
            let header = base_of(&entry, stored).expect("a delta header").expect("a delta");
            prop_assert_eq!(header.base, BasePrefix::of(&base_id));
            prop_assert_eq!(header.base_len as usize, base.len());
            // The blob: 8 bytes of the base's id, its length as a minimal
            // varint, then a zstd frame without a checksum (the chunk's blake3
            // id checks what it decodes to).
            let varint = match base.len() { 0..=127 => 1, 128..=16383 => 2, _ => 3 };
            let frame = &stored[8 + varint..];
            prop_assert_eq!(&frame[..4], &[0x28, 0xb5, 0x2f, 0xfd][..]);
            prop_assert_eq!(frame[4] & 0x04, 0, "frame checksum flag set");
            let mut dec = Decoder::new(crate::types::ChunkIds::default()).expect("decoder");
            prop_assert_eq!(&dec.decode_checked_with_base(&entry, stored, None, Some(&base)).expect("decodes"), &data);
            let mut into = vec![0u8; data.len()];
            dec.decode_into_checked_with_base(&entry, stored, None, Some(&base), &mut into).expect("decodes into");
            prop_assert_eq!(&into, &data);
            // No base: the base is named.
            match dec.decode_checked(&entry, stored, None) {
                Err(ChunkError::Base { base, fault: BaseFault::Missing }) => prop_assert_eq!(base, BasePrefix::of(&base_id)),
                other => prop_assert!(false, "{:?}", other.map(|v| v.len())),
            }
            // A base of another length is refused before zstd sees it.
            let mut longer = base.clone();
            longer.push(1);
            match dec.decode_checked_with_base(&entry, stored, None, Some(&longer)) {
                Err(ChunkError::Base { base: named, fault: BaseFault::Length { expected, found } }) => {
                    prop_assert_eq!(named, BasePrefix::of(&base_id));
                    prop_assert_eq!((expected as usize, found), (base.len(), longer.len()));
                }
                other => prop_assert!(false, "{:?}", other.map(|v| v.len())),
            }
            // A damaged base of the right length: never other bytes.
            if !base.is_empty() {
                let mut damaged = base.clone();
                let i = flip.index(damaged.len());
                damaged[i] ^= 0x5a;
                match dec.decode_checked_with_base(&entry, stored, None, Some(&damaged)) {
                    Ok(v) => prop_assert_eq!(&v, &data),
                    Err(ChunkError::Mismatch { .. } | ChunkError::Decode(_)) => {}
                    Err(e) => prop_assert!(false, "{e}"),
                }
            }
            // Cut short, as the entry says or as the blob is.
            let short = &stored[..out.len - 1];
            prop_assert!(matches!(
                dec.decode_checked_with_base(&entry, short, None, Some(&base)),
                Err(ChunkError::Decode(_))
            ));
            let short_entry = PackEntry { stored_len: out.len as u32 - 1, ..entry };
            match dec.decode_checked_with_base(&short_entry, short, None, Some(&base)) {
                Err(ChunkError::Decode(_) | ChunkError::Mismatch { .. }) => {}
                other => prop_assert!(false, "a truncated delta decoded: {:?}", other.map(|v| v.len())),
            }
        }
    }

    /// Pages of rows with a few changed: what deltas are for. A delta of a page
    /// that differs from its base by a few bytes costs a small part of the
    /// page compressed alone (the issue measured 6–26% on whole workloads).
    #[test]
    fn a_delta_of_a_slightly_changed_page_is_much_smaller_than_plain() {
        // Rows of text with pseudo-random numbers: compressible, but not to nothing.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut base = Vec::new();
        while base.len() < 4096 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            base.extend_from_slice(format!("row {:>6} name-{:016x};", x % 1_000_000, x).as_bytes());
        }
        base.truncate(4096);
        let mut page = base.clone();
        for at in [100, 101, 2000, 2001, 2002, 4000] {
            page[at] ^= 0x21;
        }
        let (id, base_id) = (Id::of_chunk(&page), Id::of_chunk(&base));
        let mut enc = Encoder::new(3, None).expect("encoder");
        let mut slot = vec![0; slot_len(page.len())];
        let plain = enc.encode(&page, &mut slot, Attempt::Plain).expect("plain");
        let delta = enc
            .encode_delta(&page, &id, &base_id, &base, &mut slot)
            .expect("delta")
            .expect("a delta smaller than the page");
        assert!(
            delta.len * 4 < plain.len,
            "delta {} bytes, plain {} bytes",
            delta.len,
            plain.len
        );
        let best = enc
            .encode_smallest(
                &page,
                &id,
                &mut slot,
                Attempt::Plain,
                Some((&base_id, &base)),
            )
            .expect("smallest");
        assert_eq!((best.codec, best.len), (Codec::ZstdDelta, delta.len));
        let entry = PackEntry {
            id,
            offset: 32,
            stored_len: delta.len as u32,
            raw_len: 4096,
            codec: Codec::ZstdDelta,
        };
        let mut dec = Decoder::new(crate::types::ChunkIds::default()).expect("decoder");
        let raw = dec
            .decode_checked_with_base(&entry, &slot[..delta.len], None, Some(&base))
            .expect("decodes");
        assert!(raw == page);

        // Made again at the backup's level for large deltas (and the highest):
        // no larger, and the decoder, unchanged, reads it checked against the
        // chunk's id; a wrong base fails the check.
        for level in [15, 19, 22] {
            let mut again = vec![0; slot_len(page.len())];
            let mut best = plain;
            assert!(enc
                .improve_with_delta_at(&page, &id, &mut again, &mut best, &base_id, &base, level)
                .expect("delta"));
            assert_eq!(best.codec, Codec::ZstdDelta);
            assert!(
                best.len <= delta.len,
                "level {level}: {} > {}",
                best.len,
                delta.len
            );
            let frame = &again[8 + 2..best.len];
            assert_eq!(&frame[..4], &[0x28, 0xb5, 0x2f, 0xfd][..]);
            assert_eq!(frame[4] & 0x04, 0, "frame checksum flag set");
            let entry = PackEntry {
                stored_len: best.len as u32,
                ..entry
            };
            let raw = dec
                .decode_checked_with_base(&entry, &again[..best.len], None, Some(&base))
                .expect("decodes");
            assert!(raw == page);
            let mut other = base.clone();
            other[7] ^= 1;
            assert!(dec
                .decode_checked_with_base(&entry, &again[..best.len], None, Some(&other))
                .is_err());
        }
    }

    /// End to end through the format: a page and a delta of its next version go
    /// into a version-2 pack and its version-2 index object, come back out of
    /// both, and the delta decodes with the page the base table names.
    #[test]
    fn a_delta_travels_through_a_version_2_pack_and_index() {
        use crate::format::index::{DeltaBase, IndexBody, IndexEntry, PackRef};
        use crate::format::pack::{decode_pack, PackBuilder};
        let base = page(1);
        let mut next = base.clone();
        next[10] = 0xaa;
        let (base_id, next_id) = (Id::of_chunk(&base), Id::of_chunk(&next));
        let mut enc = Encoder::new(3, None).expect("encoder");
        let mut b = PackBuilder::with_version(Vec::new(), None, 2).expect("version 2");
        let mut slot = vec![0; slot_len(4096)];
        let plain = enc.encode(&base, &mut slot, Attempt::Plain).expect("plain");
        b.try_push(base_id, &slot[..plain.len], 4096, plain.codec)
            .expect("plain chunk");
        let d = enc
            .encode_smallest(
                &next,
                &next_id,
                &mut slot,
                Attempt::Plain,
                Some((&base_id, &base)),
            )
            .expect("delta");
        assert_eq!(d.codec, Codec::ZstdDelta);
        b.try_push(next_id, &slot[..d.len], 4096, d.codec)
            .expect("delta chunk");
        let (pack_id, bytes, entries) = b.finish();
        assert_eq!(decode_pack(&bytes).expect("pack"), entries);
        let index = IndexBody {
            packs: vec![PackRef {
                id: pack_id,
                len: bytes.len() as u64,
                dict: None,
            }],
            entries: entries
                .iter()
                .map(|&entry| IndexEntry { pack: 0, entry })
                .collect(),
            deltas: vec![DeltaBase {
                ordinal: 1,
                base: base_id,
                depth: 1,
                whole_len: 0,
            }],
        };
        let index = IndexBody::decode(&index.encode_as(2).expect("index")).expect("decodes");
        let blob = |e: &PackEntry| &bytes[e.offset as usize..(e.offset + e.stored_len) as usize];
        let mut dec = Decoder::new(crate::types::ChunkIds::default()).expect("decoder");
        let row = index.deltas[0];
        let named = index.entries[row.ordinal as usize].entry;
        assert_eq!(
            base_of(&named, blob(&named))
                .expect("header")
                .map(|h| h.base),
            Some(BasePrefix::of(&row.base))
        );
        let base_entry = index
            .entries
            .iter()
            .find(|e| e.entry.id == row.base)
            .expect("the base is located")
            .entry;
        let got_base = dec
            .decode_checked(&base_entry, blob(&base_entry), None)
            .expect("base");
        let got = dec
            .decode_checked_with_base(&named, blob(&named), None, Some(&got_base))
            .expect("delta");
        assert!(got == next);
    }

    /// The encoder makes no delta the decoder would refuse: against the chunk
    /// itself, or against a base zstd would read as a trained dictionary.
    #[test]
    fn no_delta_against_itself_or_a_dictionary_lookalike() {
        let page = vec![9u8; 4096];
        let id = Id::of_chunk(&page);
        let mut enc = Encoder::new(3, None).expect("encoder");
        let mut slot = vec![0; slot_len(page.len())];
        assert!(enc
            .encode_delta(&page, &id, &id, &page, &mut slot)
            .expect("ok")
            .is_none());
        let mut magic = page.clone();
        magic[..4].copy_from_slice(&crate::format::pack::ZSTD_DICT_MAGIC);
        let magic_id = Id::of_chunk(&magic);
        assert!(enc
            .encode_delta(&page, &id, &magic_id, &magic, &mut slot)
            .expect("ok")
            .is_none());
        // And a blob naming such a base is refused, not handed to zstd as a dictionary.
        let other = vec![8u8; 4096];
        let other_id = Id::of_chunk(&other);
        let made = enc
            .encode_delta(&page, &id, &other_id, &other, &mut slot)
            .expect("ok")
            .expect("delta");
        let entry = PackEntry {
            id,
            offset: 32,
            stored_len: made.len as u32,
            raw_len: 4096,
            codec: Codec::ZstdDelta,
        };
        let mut dec = Decoder::new(crate::types::ChunkIds::default()).expect("decoder");
        let mut lookalike = other.clone();
        lookalike[..4].copy_from_slice(&crate::format::pack::ZSTD_DICT_MAGIC);
        assert!(matches!(
            dec.decode_checked_with_base(&entry, &slot[..made.len], None, Some(&lookalike)),
            Err(ChunkError::Decode(_))
        ));
    }
}

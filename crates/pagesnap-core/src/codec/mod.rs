//! codec: what a stored chunk is, and the one way in and out of that form: one of
//! the two seams (DESIGN.md, "Modules"; the other is restore/reader.rs).
//!
//! A chunk is stored in a pack as a blob whose pack entry names its codec
//! ([`Codec`](crate::format::pack::Codec), `format/pack.rs`; FORMAT.md "Packs"):
//! the raw bytes, a zstd frame, or a zstd frame made with the pack's dictionary. Everything that turns stored
//! bytes back into a chunk goes through [`Decoder`] (restore's rebuild and
//! salvage, verify's data pass, copy, prune's rewrite, repair, the chunk writer's
//! read-back), and everything that stores a chunk goes through [`Encoder`] (the
//! chunk writer). A new encoding is one new `Codec` variant, its arms in
//! `decode.rs` and `encode.rs`, and its section in FORMAT.md.
//!
//! A chunk's id is the blake3 of its raw bytes, so a decoded chunk is checked
//! against the id its entry names: [`Decoder::decode_checked`] does both and says
//! which failed ([`ChunkError`]), so no caller compares ids itself. The one
//! unchecked decode is [`Decoder::decode_into`], for restore's hot path: a
//! restore checks the whole image against the manifest's image check instead of
//! hashing every chunk again (restore/rebuild.rs), and names a damaged chunk with
//! [`Decoder::decode_into_checked`] only when that check fails.
//!
//! * `decode.rs`: [`Decoder`] (decompression contexts, one per dictionary), the
//!   per-thread decoders of restore and copy, and loading dictionaries.
//! * `encode.rs`: [`Encoder`]: compressing one chunk, plain or with a dictionary,
//!   keeping the smallest of the forms tried. Which forms a backup tries (its
//!   `PlainTrial`) and training a dictionary are the backup's policy and stay in
//!   `backup/chunk_writer.rs`.
//!
//! Below every wing that reads or writes chunks; it knows backend/ and format/,
//! nothing above.

mod decode;
mod encode;

pub(crate) use decode::{decode_checked_on_thread, load_dict, Decoder, DecoderPool};
pub(crate) use encode::{slot_len, Attempt, Encoder};

use crate::format::FormatError;
use crate::types::ChunkId;

/// Why a stored chunk could not be given back.
#[derive(Debug)]
pub(crate) enum ChunkError {
    /// Its stored bytes do not decode (or not to its length).
    Decode(FormatError),
    /// They decode, but to bytes whose id is `actual`, not the entry's.
    Mismatch { actual: ChunkId },
}

impl std::fmt::Display for ChunkError {
    /// The detail the errors that name a damaged chunk carry (restore, copy and
    /// the chunk writer print it as it is; verify and prune add their own words).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChunkError::Decode(e) => e.fmt(f),
            ChunkError::Mismatch { .. } => f.write_str("content does not match its id"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
            let entry = crate::format::pack::PackEntry {
                id,
                offset: 32,
                stored_len: out.len as u32,
                raw_len: data.len() as u32,
                codec: out.codec,
            };
            let stored = &slot[..out.len];
            let mut dec = Decoder::new().expect("decoder");
            dec.add_dict(dict_id, &dict_bytes).expect("dictionary");
            let d = Some(&dict_id);
            prop_assert_eq!(&dec.decode_checked(&entry, stored, d).expect("decodes"), &data);
            let mut into = vec![0u8; data.len()];
            dec.decode_into_checked(&entry, stored, d, &mut into).expect("decodes into");
            prop_assert_eq!(&into, &data);
            let wrong = crate::format::pack::PackEntry { id: Id([1; 32]), ..entry };
            match dec.decode_checked(&wrong, stored, d) {
                Err(ChunkError::Mismatch { actual }) => prop_assert_eq!(actual, id),
                other => prop_assert!(false, "{:?}", other.map(|v| v.len())),
            }
            if out.len > 1 {
                let short = &stored[..out.len - 1];
                prop_assert!(matches!(dec.decode_checked(&entry, short, d), Err(ChunkError::Decode(_))));
            }
        }
    }
}

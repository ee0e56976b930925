//! The envelope shared by all metadata objects (config, manifests, page maps, index).
//!
//! ```text
//! offset size field
//!  0      4   magic "PSNP"
//!  4      4   kind tag ("CONF", "SNAP", "PMAP", "INDX", "DICT")
//!  8      2   format version (u16 LE)
//! 10      2   flags: bit 0 = body is zstd-compressed; other bits must be 0
//! 12      4   stored body length (u32 LE)
//! 16      4   raw body length (u32 LE), bounded per kind before any allocation
//! 20      8   body checksum: first 8 bytes of blake3(stored body), LE
//! 28      4   header checksum: first 4 bytes of blake3(bytes 0..28), LE
//! 32      …   body (postcard), possibly zstd-compressed
//! ```

use super::{
    check_version, checksum32, checksum64, FormatError, LeReader, Result, FORMAT_VERSION, MAGIC,
};
use serde::{de::DeserializeOwned, Serialize};

pub const HEADER_LEN: usize = 32;
const FLAG_ZSTD: u16 = 1;
/// Bodies smaller than this are stored uncompressed (zstd gains nothing on them).
const COMPRESS_FROM: usize = 512;

/// Which object an envelope holds, with its tag and the largest body it may decode to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Config,
    Manifest,
    PageMap,
    Index,
    Dict,
    Lock,
    Policy,
}

impl Kind {
    pub fn tag(self) -> [u8; 4] {
        match self {
            Kind::Config => *b"CONF",
            Kind::Manifest => *b"SNAP",
            Kind::PageMap => *b"PMAP",
            Kind::Index => *b"INDX",
            Kind::Dict => *b"DICT",
            Kind::Lock => *b"LOCK",
            Kind::Policy => *b"POLI",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Config => "config",
            Kind::Manifest => "manifest",
            Kind::PageMap => "page map",
            Kind::Index => "index",
            Kind::Dict => "dictionary",
            Kind::Lock => "lock",
            Kind::Policy => "policy",
        }
    }

    /// Decode limit for the raw body. A page map of a 64 TiB database of 4 KiB
    /// pages would need ~560 MB; anything beyond these limits is damage or hostile.
    pub fn max_body(self) -> u32 {
        match self {
            Kind::Config => 64 * 1024,
            Kind::Manifest => 256 << 20,
            Kind::PageMap => 1 << 30,
            Kind::Index => 1 << 30,
            Kind::Dict => 2 << 20,
            Kind::Lock => 64 * 1024,
            Kind::Policy => 64 * 1024,
        }
    }
}

/// Serialises `value` with postcard and wraps it in an envelope of `kind`.
///
/// The body is written once, straight after a reserved header (index bodies run to
/// megabytes; no intermediate copies). Index bodies are mostly random chunk ids, so
/// compressing them is not even tried.
pub fn encode<T: Serialize>(kind: Kind, value: &T) -> Vec<u8> {
    // postcard into a Vec cannot fail for the plain data types stored here.
    let mut out =
        postcard::to_extend(value, vec![0u8; HEADER_LEN]).unwrap_or_else(|_| vec![0u8; HEADER_LEN]);
    let raw_len = out.len() - HEADER_LEN;
    let mut flags = 0u16;
    if raw_len >= COMPRESS_FROM && kind != Kind::Index {
        if let Ok(c) = zstd::bulk::compress(&out[HEADER_LEN..], 3) {
            if c.len() < raw_len {
                out.truncate(HEADER_LEN);
                out.extend_from_slice(&c);
                flags = FLAG_ZSTD;
            }
        }
    }
    let body_len = out.len() - HEADER_LEN;
    let body_sum = checksum64(&out[HEADER_LEN..]);
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&MAGIC);
    h[4..8].copy_from_slice(&kind.tag());
    h[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[10..12].copy_from_slice(&flags.to_le_bytes());
    h[12..16].copy_from_slice(&(body_len as u32).to_le_bytes());
    h[16..20].copy_from_slice(&(raw_len as u32).to_le_bytes());
    h[20..28].copy_from_slice(&body_sum.to_le_bytes());
    let hc = checksum32(&h[..28]);
    h[28..32].copy_from_slice(&hc.to_le_bytes());
    out[..HEADER_LEN].copy_from_slice(&h);
    out
}

/// Checks the envelope of `kind` and returns the decoded value.
pub fn decode<T: DeserializeOwned>(kind: Kind, bytes: &[u8]) -> Result<T> {
    let raw = open(kind, bytes)?;
    let value = postcard::from_bytes(&raw)?;
    Ok(value)
}

/// Checks magic, version, header and body checksums and limits; returns the raw body
/// (borrowed when it is stored uncompressed: index bodies run to tens of MB).
pub fn open(kind: Kind, bytes: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>> {
    let mut r = LeReader::new(bytes);
    let magic: [u8; 4] = r.array()?;
    let tag: [u8; 4] = r.array()?;
    if magic != MAGIC || tag != kind.tag() {
        return Err(FormatError::BadMagic {
            expected: kind.name(),
        });
    }
    let version = r.u16()?;
    let flags = r.u16()?;
    let stored_len = r.u32()?;
    let raw_len = r.u32()?;
    let body_sum = r.u64()?;
    let header_sum = r.u32()?;
    if checksum32(&bytes[..28]) != header_sum {
        return Err(FormatError::HeaderChecksum);
    }
    check_version(version)?;
    if flags & !FLAG_ZSTD != 0 {
        return Err(FormatError::Invalid(format!("unknown flags {flags:#x}")));
    }
    if raw_len > kind.max_body() {
        return Err(FormatError::TooLarge {
            what: "body length",
            value: raw_len as u64,
            limit: kind.max_body() as u64,
        });
    }
    let body = r.bytes(stored_len as usize)?;
    if bytes.len() != HEADER_LEN + stored_len as usize {
        return Err(FormatError::Invalid(format!(
            "{} trailing bytes after the body",
            bytes.len() - HEADER_LEN - stored_len as usize
        )));
    }
    if checksum64(body) != body_sum {
        return Err(FormatError::BodyChecksum);
    }
    if flags & FLAG_ZSTD != 0 {
        let raw =
            zstd::bulk::decompress(body, raw_len as usize).map_err(FormatError::Decompress)?;
        if raw.len() != raw_len as usize {
            return Err(FormatError::Invalid(format!(
                "body decompressed to {} bytes, header says {raw_len}",
                raw.len()
            )));
        }
        Ok(std::borrow::Cow::Owned(raw))
    } else {
        if stored_len != raw_len {
            return Err(FormatError::Invalid(
                "stored and raw lengths differ on an uncompressed body".into(),
            ));
        }
        Ok(std::borrow::Cow::Borrowed(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trips(data in proptest::collection::vec(any::<u8>(), 0..3000), repeat in 0usize..3) {
            let mut v = data.clone();
            for _ in 0..repeat { v.extend_from_slice(&data); }
            let enc = encode(Kind::Manifest, &v);
            let dec: Vec<u8> = decode(Kind::Manifest, &enc).unwrap();
            prop_assert_eq!(dec, v);
        }

        #[test]
        fn any_single_bit_flip_is_detected(data in proptest::collection::vec(any::<u8>(), 1..2000), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let enc = encode(Kind::Index, &data);
            let mut bad = enc.clone();
            let i = pos.index(bad.len());
            bad[i] ^= 1 << bit;
            prop_assert!(decode::<Vec<u8>>(Kind::Index, &bad).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode::<Vec<u8>>(Kind::Config, &data);
        }
    }

    #[test]
    fn wrong_kind_is_rejected() {
        let enc = encode(Kind::Manifest, &1u32);
        let err = decode::<u32>(Kind::Config, &enc).unwrap_err();
        assert!(
            matches!(err, FormatError::BadMagic { expected: "config" }),
            "{err}"
        );
    }

    #[test]
    fn newer_version_is_rejected_with_upgrade_hint() {
        let mut enc = encode(Kind::Config, &1u32);
        enc[8..10].copy_from_slice(&7u16.to_le_bytes());
        let hc = checksum32(&enc[..28]);
        enc[28..32].copy_from_slice(&hc.to_le_bytes());
        let err = decode::<u32>(Kind::Config, &enc).unwrap_err();
        assert!(err.to_string().contains("version 7"), "{err}");
    }

    #[test]
    fn oversized_body_is_rejected_before_allocation() {
        let mut enc = encode(Kind::Config, &1u32);
        enc[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        let hc = checksum32(&enc[..28]);
        enc[28..32].copy_from_slice(&hc.to_le_bytes());
        let err = decode::<u32>(Kind::Config, &enc).unwrap_err();
        assert!(matches!(err, FormatError::TooLarge { .. }), "{err}");
    }
}

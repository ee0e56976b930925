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
    check_version_up_to, checksum32, checksum64, FormatError, LeReader, Result,
    DELTA_FORMAT_VERSION, ENCRYPTED_FORMAT_VERSION, FORMAT_VERSION, MAGIC,
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
    Marker,
}

impl Kind {
    /// Every kind, in declaration order (the envelope fuzz target and the
    /// version tests go through all of them).
    pub const ALL: [Kind; 8] = [
        Kind::Config,
        Kind::Manifest,
        Kind::PageMap,
        Kind::Index,
        Kind::Dict,
        Kind::Lock,
        Kind::Policy,
        Kind::Marker,
    ];

    pub fn tag(self) -> [u8; 4] {
        match self {
            Kind::Config => *b"CONF",
            Kind::Manifest => *b"SNAP",
            Kind::PageMap => *b"PMAP",
            Kind::Index => *b"INDX",
            Kind::Dict => *b"DICT",
            Kind::Lock => *b"LOCK",
            Kind::Policy => *b"POLI",
            Kind::Marker => *b"MARK",
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
            Kind::Marker => "marker",
        }
    }

    /// The newest format version of this kind: index objects have a version 2
    /// (with a base table), the config a version 2 (with `deltas`) and a
    /// version 3 (encrypted), every other kind only version 1.
    pub fn newest_version(self) -> u16 {
        match self {
            Kind::Config => ENCRYPTED_FORMAT_VERSION,
            Kind::Index => DELTA_FORMAT_VERSION,
            _ => FORMAT_VERSION,
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
            Kind::Marker => 1024,
        }
    }
}

/// Serialises `value` with postcard and wraps it in an envelope of `kind`.
///
/// The body is written once, straight after a reserved header (index bodies run to
/// megabytes; no intermediate copies). Index bodies are mostly random chunk ids, so
/// compressing them is not even tried.
pub fn encode<T: Serialize>(kind: Kind, value: &T) -> Vec<u8> {
    encode_as(kind, FORMAT_VERSION, value)
}

/// [`encode`] with format `version` in the header (the caller's body is that
/// version's; index objects of version 2).
pub fn encode_as<T: Serialize>(kind: Kind, version: u16, value: &T) -> Vec<u8> {
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
    let h = header(
        kind,
        version,
        flags,
        body_len as u32,
        raw_len as u32,
        body_sum,
    );
    out[..HEADER_LEN].copy_from_slice(&h);
    out
}

/// [`encode`], with the body compressed whatever its kind and size: objects as
/// older builds wrote them (index objects were compressed once), for tests.
#[cfg(test)]
pub(crate) fn encode_compressed<T: Serialize>(kind: Kind, value: &T) -> Vec<u8> {
    let raw = postcard::to_stdvec(value).expect("serializable");
    let body = zstd::bulk::compress(&raw, 3).expect("compressible");
    let h = header(
        kind,
        FORMAT_VERSION,
        FLAG_ZSTD,
        body.len() as u32,
        raw.len() as u32,
        checksum64(&body),
    );
    [&h[..], &body].concat()
}

fn header(
    kind: Kind,
    version: u16,
    flags: u16,
    body_len: u32,
    raw_len: u32,
    body_sum: u64,
) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&MAGIC);
    h[4..8].copy_from_slice(&kind.tag());
    h[8..10].copy_from_slice(&version.to_le_bytes());
    h[10..12].copy_from_slice(&flags.to_le_bytes());
    h[12..16].copy_from_slice(&body_len.to_le_bytes());
    h[16..20].copy_from_slice(&raw_len.to_le_bytes());
    h[20..28].copy_from_slice(&body_sum.to_le_bytes());
    let hc = checksum32(&h[..28]);
    h[28..32].copy_from_slice(&hc.to_le_bytes());
    h
}

/// An uncompressed envelope planned without being built: its header, the blake3
/// hash of the whole object (its name in the store) and its length. The body is
/// serialised three times (for its checksum, for the object's hash, and when
/// written: [`write_streamed`]), never held whole.
///
/// Why: a first backup's index object holds an entry per chunk, 20 MB for a
/// 2 GiB database and ten times that for 20 GiB, and building it in memory was
/// the peak of a first backup's memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Streamed {
    pub header: [u8; HEADER_LEN],
    pub hash: [u8; 32],
    pub len: u64,
}

/// Plans the envelope of `kind` around `value`'s postcard body, stored
/// uncompressed; bytes identical to [`encode`]'s for kinds it does not compress.
pub fn plan_streamed<T: Serialize>(kind: Kind, value: &T) -> Result<Streamed> {
    plan_streamed_as(kind, FORMAT_VERSION, value)
}

/// [`plan_streamed`] with format `version` in the header.
pub fn plan_streamed_as<T: Serialize>(kind: Kind, version: u16, value: &T) -> Result<Streamed> {
    let mut body = blake3::Hasher::new();
    // Hashing cannot fail: an error here is postcard's.
    let encode_err = |e: std::io::Error| FormatError::Invalid(e.to_string());
    let body_len = serialize_into(value, &mut body).map_err(encode_err)?;
    if body_len > u64::from(kind.max_body()) {
        return Err(FormatError::TooLarge {
            what: "body",
            value: body_len,
            limit: u64::from(kind.max_body()),
        });
    }
    // As `checksum64`: the first 8 bytes of the body's blake3 hash.
    let mut sum = [0u8; 8];
    sum.copy_from_slice(&body.finalize().as_bytes()[..8]);
    let h = header(
        kind,
        version,
        0,
        body_len as u32,
        body_len as u32,
        u64::from_le_bytes(sum),
    );
    let mut whole = blake3::Hasher::new();
    whole.update(&h);
    serialize_into(value, &mut whole).map_err(encode_err)?;
    Ok(Streamed {
        header: h,
        hash: *whole.finalize().as_bytes(),
        len: HEADER_LEN as u64 + body_len,
    })
}

/// Writes the object `plan` describes: its header, then `value`'s body (the value
/// it was planned from).
pub fn write_streamed<T: Serialize>(
    plan: &Streamed,
    value: &T,
    w: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    w.write_all(&plan.header)?;
    let n = serialize_into(value, w)?;
    if HEADER_LEN as u64 + n != plan.len {
        return Err(std::io::Error::other(
            "the body's length changed since its envelope was planned",
        ));
    }
    Ok(())
}

/// Serialises `value` into `w` through a buffer (postcard writes a few bytes at a
/// time); returns the body's length. A failed write is returned as it was (postcard
/// would report any as "buffer full", and a full disk must be named as one).
fn serialize_into<T: Serialize, W: std::io::Write + ?Sized>(
    value: &T,
    w: &mut W,
) -> std::io::Result<u64> {
    /// Counts what reaches `W`, and keeps the first error it gave.
    struct Counted<'a, W: ?Sized> {
        w: &'a mut W,
        len: u64,
        failed: Option<std::io::Error>,
    }
    impl<W: std::io::Write + ?Sized> Counted<'_, W> {
        fn keep(&mut self, e: std::io::Error) -> std::io::Error {
            let kind = e.kind();
            // An interrupted write is tried again (by `write_all`), not a failure.
            if kind == std::io::ErrorKind::Interrupted {
                return e;
            }
            self.failed.get_or_insert(e);
            std::io::Error::from(kind)
        }
    }
    impl<W: std::io::Write + ?Sized> std::io::Write for Counted<'_, W> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            match self.w.write(buf) {
                Ok(n) => {
                    self.len += n as u64;
                    Ok(n)
                }
                Err(e) => Err(self.keep(e)),
            }
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.w.flush().map_err(|e| self.keep(e))
        }
    }
    let mut counted = Counted {
        w,
        len: 0,
        failed: None,
    };
    let done = {
        let mut buffered = std::io::BufWriter::with_capacity(64 << 10, &mut counted);
        match postcard::to_io(value, &mut buffered) {
            Ok(_) => std::io::Write::flush(&mut buffered),
            Err(e) => Err(std::io::Error::other(format!(
                "cannot encode the body: {e}"
            ))),
        }
    };
    match (done, counted.failed) {
        (_, Some(e)) => Err(e),
        (Err(e), None) => Err(e),
        (Ok(()), None) => Ok(counted.len),
    }
}

/// Checks the envelope of `kind` and returns the decoded value.
pub fn decode<T: DeserializeOwned>(kind: Kind, bytes: &[u8]) -> Result<T> {
    let raw = open(kind, bytes)?;
    let value = postcard::from_bytes(&raw)?;
    Ok(value)
}

/// Checks magic, version, header and body checksums and limits; returns the raw body
/// (borrowed when it is stored uncompressed: index bodies run to tens of MB).
/// Version 1 only: a caller that reads a newer version's body says so with
/// [`open_versioned`], so no version-2 body is ever read as a version-1 one.
pub fn open(kind: Kind, bytes: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>> {
    open_up_to(kind, bytes, FORMAT_VERSION).map(|(_, body)| body)
}

/// [`open`] for every version of `kind` this build reads
/// ([`Kind::newest_version`]); returns the object's version with its body.
pub fn open_versioned(kind: Kind, bytes: &[u8]) -> Result<(u16, std::borrow::Cow<'_, [u8]>)> {
    open_up_to(kind, bytes, kind.newest_version())
}

fn open_up_to(kind: Kind, bytes: &[u8], newest: u16) -> Result<(u16, std::borrow::Cow<'_, [u8]>)> {
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
    check_version_up_to(version, newest)?;
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
        Ok((version, std::borrow::Cow::Owned(raw)))
    } else {
        if stored_len != raw_len {
            return Err(FormatError::Invalid(
                "stored and raw lengths differ on an uncompressed body".into(),
            ));
        }
        Ok((version, std::borrow::Cow::Borrowed(body)))
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

    /// Version 2 exists for index objects and the config only: every other
    /// kind refuses it, they open as version 2 only through `open_versioned`;
    /// version 3 exists for the config only.
    #[test]
    fn version_2_is_read_for_index_objects_and_config_only() {
        for kind in Kind::ALL {
            let v2 = encode_as(kind, 2, &vec![1u8; 40]);
            let opened = open_versioned(kind, &v2).map(|(v, body)| (v, body.len()));
            match kind {
                Kind::Index | Kind::Config => assert_eq!(opened.unwrap(), (2, 41)),
                _ => assert!(
                    matches!(
                        opened,
                        Err(FormatError::UnsupportedVersion {
                            found: 2,
                            supported: 1
                        })
                    ),
                    "{kind:?}"
                ),
            }
            assert!(
                open(kind, &v2).is_err(),
                "{kind:?}: a version-2 body read as version 1"
            );
            let v1 = encode(kind, &vec![1u8; 40]);
            assert_eq!(open_versioned(kind, &v1).unwrap().0, 1);
            // Version 3 is an encrypted store's config, and nothing else's.
            let v3 = open_versioned(kind, &encode_as(kind, 3, &0u8)).is_ok();
            assert_eq!(v3, kind == Kind::Config, "{kind:?}: version 3");
            assert!(open_versioned(kind, &encode_as(kind, 4, &0u8)).is_err());
        }
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

//! Encodings of every store object. Pure: bytes in, values out, no I/O.
//!
//! Every object starts with 4 bytes `PSNP`, a 4-byte kind tag and a little-endian
//! format version; headers carry a checksum and every decoded length is bounded
//! before it is used. `docs/FORMAT.md` describes each layout and why it is so.

pub mod config;
pub mod dict;
pub mod envelope;
/// Fuzz entry points: with the `fuzzing` feature (and in the crate's own tests).
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
pub mod index;
pub mod manifest;
pub mod pack;
pub mod pagemap;
mod wire;

/// The store format version this build writes by default: every object of a
/// version-1 store, byte for byte as before deltas existed.
pub const FORMAT_VERSION: u16 = 1;

/// Format version 2: packs that hold delta chunks ([`pack::Codec::ZstdDelta`])
/// and index objects with a base table ([`index::DeltaBase`]). Only those two
/// kinds have a version 2; it is written only when a caller asks for it, and this
/// build reads both versions of both (FORMAT.md, "Format version 2: deltas").
pub const DELTA_FORMAT_VERSION: u16 = 2;

/// Format version 3: an encrypted store. Only the `config` object has a
/// version 3 (its clear part: the store id and the sealed rest); every other
/// object of such a store is sealed whole (crypto/seal.rs), inside which it is
/// a version-1 or -2 object as in a plain store (FORMAT.md, "Format version 3").
pub const ENCRYPTED_FORMAT_VERSION: u16 = 3;

/// Leading bytes of every pagesnap object.
pub const MAGIC: [u8; 4] = *b"PSNP";

/// First 4 bytes of blake3, used as header checksum.
pub(crate) fn checksum32(bytes: &[u8]) -> u32 {
    let h = blake3::hash(bytes);
    let b = h.as_bytes();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// First 8 bytes of blake3, used as body checksum.
pub(crate) fn checksum64(bytes: &[u8]) -> u64 {
    let h = blake3::hash(bytes);
    let b = h.as_bytes();
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// Why an object could not be decoded. The caller adds which object it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    #[error("not a pagesnap {expected} object (bad magic bytes)")]
    BadMagic { expected: &'static str },
    #[error("format version {found} is newer than this pagesnap supports (up to {supported}); upgrade pagesnap")]
    UnsupportedVersion { found: u16, supported: u16 },
    #[error("header checksum mismatch (object is damaged)")]
    HeaderChecksum,
    #[error("body checksum mismatch (object is damaged)")]
    BodyChecksum,
    #[error("truncated: need {needed} bytes, have {have}")]
    Truncated { needed: u64, have: u64 },
    #[error("{what} is {value}, above the limit of {limit}")]
    TooLarge {
        what: &'static str,
        value: u64,
        limit: u64,
    },
    #[error("invalid value: {0}")]
    Invalid(String),
    #[error("cannot decode body: {0}")]
    Decode(#[from] postcard::Error),
    #[error("cannot decompress: {0}")]
    Decompress(std::io::Error),
}

pub type Result<T, E = FormatError> = std::result::Result<T, E>;

/// Reads little-endian integers from a slice with bounds checks.
pub(crate) struct LeReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> LeReader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        LeReader { buf, pos: 0 }
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(FormatError::Truncated {
                needed: (self.pos + n) as u64,
                have: self.buf.len() as u64,
            }),
        }
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let s = self.bytes(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
}

/// Checks the format version field of a decoded header of an object whose
/// newest version is `newest`.
pub(crate) fn check_version_up_to(found: u16, newest: u16) -> Result<()> {
    if found == 0 || found > newest {
        return Err(FormatError::UnsupportedVersion {
            found,
            supported: newest,
        });
    }
    Ok(())
}

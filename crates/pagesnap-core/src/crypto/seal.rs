//! The sealed form of a store object: pure, bytes in and out (docs/FORMAT.md,
//! "Sealed objects").
//!
//! ```text
//! offset size field
//!  0      4   magic "PSNP"
//!  4      4   tag "SEAL"
//!  8      2   version (1)
//! 10      1   key kind: 1 = metadata, 2 = data
//! 11      1   log2 of the segment size (12: 4 KiB of plaintext per segment)
//! 12      8   plaintext length (u64 LE), at most MAX_PLAIN
//! 20      …   key block: metadata: a random 32-byte salt;
//!             data: a 32-byte ephemeral X25519 public key, then the object's
//!             32-byte key sealed with AES-256-GCM (48 bytes with its tag)
//! then        the plaintext in segments of 4 KiB (the last shorter), each
//!             AES-256-GCM under the object's key: ciphertext, 16-byte tag
//! ```
//!
//! Why this shape:
//! * **A key per object**, never a key used twice with one nonce: metadata
//!   objects derive theirs from the metadata key, a random salt, the header and
//!   the object's name (HKDF-SHA256); data objects (packs, dictionaries) take a
//!   random one, sealed to the store's data public key, so a write-only key can
//!   write packs it cannot read back. The segment nonce is the segment's number
//!   and a last-segment flag.
//! * **The name and the header are bound to the key** (the derivation's info,
//!   or the sealed key's associated data): an object moved to another name, a
//!   changed length, a swapped key block all fail to authenticate. Cutting the
//!   object at a segment boundary fails too: the length says how many segments
//!   there are and the last carries the flag.
//! * **4 KiB segments** let a ranged read (a chain link of ~200 bytes)
//!   authenticate at most two segments rather than the whole pack, for 16 bytes
//!   per 4 KiB of stored bytes (0.4 %); a segment per chunk would have cost a
//!   tag and a nonce per 200-byte delta (8–20 %).

use super::CryptoError;
use hkdf::Hkdf;
use rayon::prelude::*;
use sha2::Sha256;
use std::ops::Range;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

pub const MAGIC: [u8; 4] = *b"PSNP";
pub const TAG: [u8; 4] = *b"SEAL";
pub const VERSION: u16 = 1;
/// Plaintext bytes per segment (log2).
pub const SEGMENT_LOG2: u8 = 12;
pub const SEGMENT: u64 = 1 << SEGMENT_LOG2;
/// Authentication tag of AES-256-GCM.
pub const TAG_LEN: u64 = 16;
/// The fixed part of the header, before the key block.
const FIXED: usize = 20;
/// Largest plaintext a sealed object may claim (a pack is at most 1 GiB; 1 TiB
/// bounds any arithmetic on a hostile length).
pub const MAX_PLAIN: u64 = 1 << 40;

/// Which key an object is sealed under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// Manifests, page maps, index objects, policy, locks, the config's private
    /// part: every key of the store, write-only ones too, reads them.
    Metadata,
    /// Packs and dictionaries (page contents): only read keys open them.
    Data,
}

impl KeyKind {
    fn byte(self) -> u8 {
        match self {
            KeyKind::Metadata => 1,
            KeyKind::Data => 2,
        }
    }

    /// Length of the whole header for this kind.
    pub fn header_len(self) -> usize {
        FIXED
            + match self {
                KeyKind::Metadata => 32,
                KeyKind::Data => 32 + 32 + TAG_LEN as usize,
            }
    }
}

/// The keys objects are sealed and opened with.
pub struct SealKeys {
    /// Derives metadata objects' keys.
    pub metadata: Zeroizing<[u8; 32]>,
    /// The store's data public key: data objects' keys are sealed to it.
    pub data_public: [u8; 32],
    /// Its private half: `None` for a write-only key.
    pub data_secret: Option<Zeroizing<[u8; 32]>>,
}

/// An object's key, found from its header.
#[derive(Clone)]
pub struct ObjectKey {
    key: Zeroizing<[u8; 32]>,
    /// The plaintext's length, from the (authenticated) header.
    pub plain_len: u64,
    pub header_len: usize,
}

/// Number of segments of `plain` bytes (an empty object still has one, so that
/// its tag authenticates it).
fn segments(plain: u64) -> u64 {
    plain.div_ceil(SEGMENT).max(1)
}

/// Stored length of an object of `plain` bytes sealed under `kind`.
pub fn sealed_len(kind: KeyKind, plain: u64) -> u64 {
    kind.header_len() as u64 + plain + segments(plain) * TAG_LEN
}

/// Plaintext length of a sealed object of `sealed` bytes (`None` when no
/// plaintext length gives it: damage).
pub fn plain_len(kind: KeyKind, sealed: u64) -> Option<u64> {
    let body = sealed.checked_sub(kind.header_len() as u64)?;
    let n = body.div_ceil(SEGMENT + TAG_LEN).max(1);
    let plain = body.checked_sub(n * TAG_LEN)?;
    (sealed_len(kind, plain) == sealed).then_some(plain)
}

fn nonce(segment: u64, last: bool) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&segment.to_le_bytes());
    n[8] = last as u8;
    n
}

fn fixed_header(kind: KeyKind, plain: u64) -> [u8; FIXED] {
    let mut h = [0u8; FIXED];
    h[..4].copy_from_slice(&MAGIC);
    h[4..8].copy_from_slice(&TAG);
    h[8..10].copy_from_slice(&VERSION.to_le_bytes());
    h[10] = kind.byte();
    h[11] = SEGMENT_LOG2;
    h[12..20].copy_from_slice(&plain.to_le_bytes());
    h
}

/// What binds a key to the object: the fixed header and the name.
fn binding(fixed: &[u8], name: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(fixed.len() + name.len());
    b.extend_from_slice(fixed);
    b.extend_from_slice(name.as_bytes());
    b
}

fn metadata_key(master: &[u8; 32], salt: &[u8], fixed: &[u8], name: &str) -> Zeroizing<[u8; 32]> {
    let hk = Hkdf::<Sha256>::new(Some(salt), master);
    let mut out = Zeroizing::new([0u8; 32]);
    let mut info = b"pagesnap seal v1 metadata ".to_vec();
    info.extend_from_slice(&binding(fixed, name));
    // 32 bytes is far below HKDF-SHA256's limit of 8160: cannot fail.
    let _ = hk.expand(&info, out.as_mut());
    out
}

/// The key that seals a data object's key, from the X25519 shared secret.
fn wrap_key(shared: &[u8; 32], ephemeral: &[u8; 32], public: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(ephemeral);
    salt[32..].copy_from_slice(public);
    let hk = Hkdf::<Sha256>::new(Some(&salt), shared);
    let mut out = Zeroizing::new([0u8; 32]);
    let _ = hk.expand(b"pagesnap seal v1 data key", out.as_mut());
    out
}

/// AES-256-GCM under one key: ring's (6 GB/s a core here, against 1.3 GB/s
/// for RustCrypto's `aes-gcm`: docs/PERFORMANCE.md, "Encryption"). The
/// format is the standard AEAD either way.
struct Gcm(ring::aead::LessSafeKey);

impl Gcm {
    fn new(key: &[u8; 32]) -> Gcm {
        // A 32-byte key is always a valid AES-256 key.
        let unbound = ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, key)
            .unwrap_or_else(|_| unreachable!("AES-256 takes a 32-byte key"));
        Gcm(ring::aead::LessSafeKey::new(unbound))
    }

    fn seal(&self, nonce: [u8; 12], aad: &[u8], buf: &mut [u8]) -> Result<[u8; 16], CryptoError> {
        let tag = self
            .0
            .seal_in_place_separate_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(aad),
                buf,
            )
            .map_err(|_| CryptoError::Malformed("cannot seal"))?;
        let mut t = [0u8; 16];
        t.copy_from_slice(tag.as_ref());
        Ok(t)
    }

    fn open(
        &self,
        nonce: [u8; 12],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8],
    ) -> Result<(), CryptoError> {
        let tag = ring::aead::Tag::try_from(tag).map_err(|_| CryptoError::Truncated)?;
        self.0
            .open_in_place_separate_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(aad),
                tag,
                buf,
                0..,
            )
            .map(drop)
            .map_err(|_| CryptoError::Authentication)
    }
}

pub(crate) fn random<const N: usize>() -> Result<Zeroizing<[u8; N]>, CryptoError> {
    let mut b = Zeroizing::new([0u8; N]);
    getrandom::getrandom(b.as_mut()).map_err(|e| CryptoError::Random(e.to_string()))?;
    Ok(b)
}

/// A sealer of one object: its header and key, and the segments' cipher.
pub struct Sealer {
    header: Vec<u8>,
    cipher: Gcm,
    plain_len: u64,
}

impl Sealer {
    /// Starts sealing an object of `plain_len` bytes named `name` under `kind`.
    pub fn new(
        keys: &SealKeys,
        kind: KeyKind,
        name: &str,
        plain_len: u64,
    ) -> Result<Sealer, CryptoError> {
        let ephemeral = match kind {
            KeyKind::Metadata => Zeroizing::new([0; 32]),
            KeyKind::Data => random::<32>()?,
        };
        let fresh = random::<32>()?;
        Sealer::with_random(keys, kind, name, plain_len, &fresh, &ephemeral)
    }

    /// [`Sealer::new`] with its random bytes given: `fresh` is a metadata
    /// object's salt or a data object's key, `ephemeral` a data object's
    /// ephemeral X25519 secret (apart: the fuzz seeds are made repeatably).
    fn with_random(
        keys: &SealKeys,
        kind: KeyKind,
        name: &str,
        plain_len: u64,
        fresh: &[u8; 32],
        ephemeral: &[u8; 32],
    ) -> Result<Sealer, CryptoError> {
        if plain_len > MAX_PLAIN {
            return Err(CryptoError::TooLarge(plain_len));
        }
        let fixed = fixed_header(kind, plain_len);
        let mut header = fixed.to_vec();
        let key = match kind {
            KeyKind::Metadata => {
                header.extend_from_slice(fresh);
                metadata_key(&keys.metadata, fresh, &fixed, name)
            }
            KeyKind::Data => {
                let key = Zeroizing::new(*fresh);
                let eph = StaticSecret::from(*ephemeral);
                let eph_pub = PublicKey::from(&eph);
                let shared = eph.diffie_hellman(&PublicKey::from(keys.data_public));
                if !shared.was_contributory() {
                    return Err(CryptoError::Malformed(
                        "the store's data public key is invalid",
                    ));
                }
                let wk = wrap_key(shared.as_bytes(), eph_pub.as_bytes(), &keys.data_public);
                let mut sealed = Zeroizing::new(*key);
                let tag = Gcm::new(&wk).seal([0; 12], &binding(&fixed, name), sealed.as_mut())?;
                header.extend_from_slice(eph_pub.as_bytes());
                header.extend_from_slice(sealed.as_ref());
                header.extend_from_slice(&tag);
                key
            }
        };
        Ok(Sealer {
            header,
            cipher: Gcm::new(&key),
            plain_len,
        })
    }

    pub fn header(&self) -> &[u8] {
        &self.header
    }

    /// Seals segment `n` (its plaintext `buf`, replaced by ciphertext) and
    /// returns its tag.
    pub fn seal_segment(&self, n: u64, buf: &mut [u8]) -> Result<[u8; 16], CryptoError> {
        let last = n + 1 == segments(self.plain_len);
        self.cipher.seal(nonce(n, last), &[], buf)
    }
}

/// Seals `plain` as object `name` under `kind`.
pub fn seal(
    keys: &SealKeys,
    kind: KeyKind,
    name: &str,
    plain: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    seal_all(
        &Sealer::new(keys, kind, name, plain.len() as u64)?,
        kind,
        plain,
    )
}

/// [`seal`] with its random bytes given (see [`Sealer::with_random`]): only
/// for the fuzz seeds, which must come out the same at every run.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn seal_repeatably(
    keys: &SealKeys,
    kind: KeyKind,
    name: &str,
    plain: &[u8],
    random: (&[u8; 32], &[u8; 32]),
) -> Result<Vec<u8>, CryptoError> {
    let s = Sealer::with_random(keys, kind, name, plain.len() as u64, random.0, random.1)?;
    seal_all(&s, kind, plain)
}

/// `plain` sealed by `s`: its header, then every segment and its tag.
fn seal_all(s: &Sealer, kind: KeyKind, plain: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let mut out = Vec::with_capacity(sealed_len(kind, plain.len() as u64) as usize);
    out.extend_from_slice(s.header());
    let mut n = 0u64;
    let mut rest = plain;
    loop {
        let take = rest.len().min(SEGMENT as usize);
        let start = out.len();
        out.extend_from_slice(&rest[..take]);
        let tag = s.seal_segment(n, &mut out[start..])?;
        out.extend_from_slice(&tag);
        rest = &rest[take..];
        n += 1;
        if rest.is_empty() {
            break;
        }
    }
    Ok(out)
}

/// The kind a sealed header says, checked against the one expected.
fn check_fixed(kind: KeyKind, h: &[u8]) -> Result<u64, CryptoError> {
    if h.len() < FIXED {
        return Err(CryptoError::Truncated);
    }
    if h[..4] != MAGIC || h[4..8] != TAG {
        return Err(CryptoError::Malformed(
            "not a sealed pagesnap object (bad magic bytes)",
        ));
    }
    let version = u16::from_le_bytes([h[8], h[9]]);
    if version != VERSION {
        return Err(CryptoError::Version(version));
    }
    if h[10] != kind.byte() {
        return Err(CryptoError::Malformed("sealed under the wrong kind of key"));
    }
    if h[11] != SEGMENT_LOG2 {
        return Err(CryptoError::Malformed("unknown segment size"));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&h[12..20]);
    let plain = u64::from_le_bytes(len);
    if plain > MAX_PLAIN {
        return Err(CryptoError::TooLarge(plain));
    }
    Ok(plain)
}

/// The key of object `name` from its header (the first
/// [`KeyKind::header_len`] bytes). Fails when the header is not one, or does
/// not authenticate for this name (tampered, moved, or another store's), or
/// when a data object's key is wanted without the data secret.
pub fn object_key(
    keys: &SealKeys,
    kind: KeyKind,
    name: &str,
    header: &[u8],
) -> Result<ObjectKey, CryptoError> {
    let plain_len = check_fixed(kind, header)?;
    let header_len = kind.header_len();
    if header.len() < header_len {
        return Err(CryptoError::Truncated);
    }
    let fixed = &header[..FIXED];
    let key = match kind {
        KeyKind::Metadata => metadata_key(&keys.metadata, &header[FIXED..FIXED + 32], fixed, name),
        KeyKind::Data => {
            let secret = keys.data_secret.as_ref().ok_or(CryptoError::WriteOnly)?;
            let mut eph = [0u8; 32];
            eph.copy_from_slice(&header[FIXED..FIXED + 32]);
            let shared = StaticSecret::from(**secret).diffie_hellman(&PublicKey::from(eph));
            if !shared.was_contributory() {
                return Err(CryptoError::Authentication);
            }
            let wk = wrap_key(shared.as_bytes(), &eph, &keys.data_public);
            let mut key = Zeroizing::new([0u8; 32]);
            key.copy_from_slice(&header[FIXED + 32..FIXED + 64]);
            Gcm::new(&wk).open(
                [0; 12],
                &binding(fixed, name),
                key.as_mut(),
                &header[FIXED + 64..FIXED + 80],
            )?;
            key
        }
    };
    Ok(ObjectKey {
        key,
        plain_len,
        header_len,
    })
}

impl ObjectKey {
    /// Where segments `segs` are in the sealed object.
    pub fn sealed_range(&self, segs: Range<u64>) -> Range<u64> {
        let start = self.header_len as u64 + segs.start * (SEGMENT + TAG_LEN);
        let last = segs.end - 1;
        let last_len = (self.plain_len - last * SEGMENT).min(SEGMENT);
        start..self.header_len as u64 + last * (SEGMENT + TAG_LEN) + last_len + TAG_LEN
    }

    /// The segments covering plaintext `range` (which must lie inside the object).
    pub fn segments_of(&self, range: &Range<u64>) -> Result<Range<u64>, CryptoError> {
        if range.start > range.end || range.end > self.plain_len {
            return Err(CryptoError::Range);
        }
        let first = (range.start / SEGMENT).min(segments(self.plain_len) - 1);
        Ok(first..range.end.div_ceil(SEGMENT).max(first + 1))
    }

    /// Opens the consecutive segments starting at `first`, read as `sealed`,
    /// into their plaintext. Many segments (a restore's window, a whole pack)
    /// are opened on every core.
    pub fn open_segments(&self, first: u64, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let cipher = Gcm::new(&self.key);
        let total = segments(self.plain_len);
        // Where each segment is: (number, offset in `sealed`, plaintext length).
        let mut segs = Vec::with_capacity(sealed.len() / (SEGMENT + TAG_LEN) as usize + 1);
        let (mut at, mut n, mut plain) = (0usize, first, 0usize);
        while at < sealed.len() {
            if n >= total {
                return Err(CryptoError::Truncated);
            }
            let len = (self.plain_len - n * SEGMENT).min(SEGMENT) as usize;
            if sealed.len() - at < len + TAG_LEN as usize {
                return Err(CryptoError::Truncated);
            }
            segs.push((n, at, len));
            at += len + TAG_LEN as usize;
            plain += len;
            n += 1;
        }
        let mut out = vec![0u8; plain];
        if plain == 0 {
            // An empty object's one empty segment: `chunks_mut` of nothing
            // yields nothing, but its tag must still be checked.
            for &(n, at, _) in &segs {
                cipher.open(
                    nonce(n, n + 1 == total),
                    &[],
                    &mut [],
                    &sealed[at..at + TAG_LEN as usize],
                )?;
            }
            return Ok(out);
        }
        let open = |(&(n, at, len), dst): (&(u64, usize, usize), &mut [u8])| {
            dst.copy_from_slice(&sealed[at..at + len]);
            let tag = &sealed[at + len..at + len + TAG_LEN as usize];
            cipher.open(nonce(n, n + 1 == total), &[], dst, tag)
        };
        // Segments are equal-sized but for the object's last one, which ends
        // the output: plain chunks of SEGMENT bytes line up with them.
        if segs.len() >= 64 {
            segs.par_iter()
                .zip(out.par_chunks_mut(SEGMENT as usize))
                .try_for_each(open)?;
        } else {
            segs.iter()
                .zip(out.chunks_mut(SEGMENT as usize))
                .try_for_each(open)?;
        }
        Ok(out)
    }

    /// Plaintext `range`, given the sealed bytes of [`ObjectKey::segments_of`] it.
    pub fn open_range(&self, range: &Range<u64>, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.open_range_owned(range, sealed.to_vec())
    }

    /// [`ObjectKey::open_range`] in the buffer the sealed bytes were read
    /// into: each segment decrypted where it lies (many on every core), then
    /// the wanted plaintext moved down over the tags. A restore reads its
    /// packs through this: no second buffer, no zeroing, one move.
    pub fn open_range_owned(
        &self,
        range: &Range<u64>,
        mut sealed: Vec<u8>,
    ) -> Result<Vec<u8>, CryptoError> {
        let segs = self.segments_of(range)?;
        let want = self.sealed_range(segs.clone());
        if sealed.len() as u64 != want.end - want.start {
            return Err(CryptoError::Truncated);
        }
        let total = segments(self.plain_len);
        let cipher = Gcm::new(&self.key);
        let stride = (SEGMENT + TAG_LEN) as usize;
        // Segment `first + i` is at `i * stride`, all full but the object's last.
        let open = |(i, piece): (usize, &mut [u8])| {
            let n = segs.start + i as u64;
            let len = piece.len() - TAG_LEN as usize;
            let (ct, tag) = piece.split_at_mut(len);
            cipher.open(nonce(n, n + 1 == total), &[], ct, tag)
        };
        if segs.end - segs.start >= 64 {
            sealed
                .par_chunks_mut(stride)
                .enumerate()
                .try_for_each(open)?;
        } else {
            sealed.chunks_mut(stride).enumerate().try_for_each(open)?;
        }
        // The wanted bytes, moved down over the tags and the part before them.
        let from = (range.start - segs.start * SEGMENT) as usize;
        let end = from + (range.end - range.start) as usize;
        let mut w = 0usize;
        for i in 0..(segs.end - segs.start) as usize {
            let (at, plain_at) = (i * stride, i * SEGMENT as usize);
            let len = (sealed.len() - at).min(stride) - TAG_LEN as usize;
            let lo = from.saturating_sub(plain_at).min(len);
            let hi = end.saturating_sub(plain_at).min(len);
            if hi > lo {
                sealed.copy_within(at + lo..at + hi, w);
                w += hi - lo;
            }
        }
        sealed.truncate(w);
        Ok(sealed)
    }
}

/// Opens what can be opened of sealed object `name` (`repair` salvaging a
/// damaged pack): the plaintext, with zeros for every segment that does not
/// authenticate or is cut off, and how many such segments there were. Fails
/// only when the header itself does not authenticate (nothing can be opened).
/// Zeros are never taken for data: the chunks they cover fail their id check.
pub fn open_lossy(
    keys: &SealKeys,
    kind: KeyKind,
    name: &str,
    sealed: &[u8],
) -> Result<(Vec<u8>, u64), CryptoError> {
    let k = object_key(keys, kind, name, sealed)?;
    let total = segments(k.plain_len);
    let plain_len = usize::try_from(k.plain_len).map_err(|_| CryptoError::TooLarge(k.plain_len))?;
    let mut out = vec![0u8; plain_len];
    let mut failed = 0u64;
    for n in 0..total {
        let r = k.sealed_range(n..n + 1);
        let opened = sealed
            .get(r.start as usize..r.end as usize)
            .ok_or(CryptoError::Truncated)
            .and_then(|seg| k.open_segments(n, seg));
        match opened {
            Ok(plain) => {
                let at = (n * SEGMENT) as usize;
                out[at..at + plain.len()].copy_from_slice(&plain);
            }
            Err(_) => failed += 1,
        }
    }
    Ok((out, failed))
}

/// Opens sealed object `name` whole.
pub fn open(
    keys: &SealKeys,
    kind: KeyKind,
    name: &str,
    sealed: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let k = object_key(keys, kind, name, sealed)?;
    if sealed.len() as u64 != sealed_len(kind, k.plain_len) {
        return Err(CryptoError::Truncated);
    }
    k.open_segments(0, &sealed[k.header_len..])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn keys() -> SealKeys {
        let secret = [7u8; 32];
        SealKeys {
            metadata: Zeroizing::new([9u8; 32]),
            data_public: *PublicKey::from(&StaticSecret::from(secret)).as_bytes(),
            data_secret: Some(Zeroizing::new(secret)),
        }
    }

    const KINDS: [KeyKind; 2] = [KeyKind::Metadata, KeyKind::Data];

    proptest! {
        #[test]
        fn objects_round_trip_whole_and_by_range(
            data in proptest::collection::vec(any::<u8>(), 0..20_000),
            a in any::<u64>(),
            b in any::<u64>(),
        ) {
            let k = keys();
            for kind in KINDS {
                let s = seal(&k, kind, "packs/ab/abcd", &data).unwrap();
                prop_assert_eq!(s.len() as u64, sealed_len(kind, data.len() as u64));
                prop_assert_eq!(plain_len(kind, s.len() as u64), Some(data.len() as u64));
                prop_assert_eq!(&open(&k, kind, "packs/ab/abcd", &s).unwrap(), &data);
                let n = data.len() as u64 + 1;
                let (lo, hi) = ((a % n).min(b % n), (a % n).max(b % n));
                let ok = object_key(&k, kind, "packs/ab/abcd", &s).unwrap();
                let segs = ok.segments_of(&(lo..hi)).unwrap();
                let r = ok.sealed_range(segs);
                let got = ok.open_range(&(lo..hi), &s[r.start as usize..r.end as usize]).unwrap();
                prop_assert_eq!(&got[..], &data[lo as usize..hi as usize]);
            }
        }

        /// No plaintext length maps to another's sealed length, and lengths no
        /// object has are refused.
        #[test]
        fn sealed_lengths_invert(sealed in 0u64..100_000) {
            for kind in KINDS {
                if let Some(p) = plain_len(kind, sealed) {
                    prop_assert_eq!(sealed_len(kind, p), sealed);
                }
            }
        }
    }

    /// Every flipped byte, every cut, another name or another store's keys
    /// fail; nothing is ever returned.
    #[test]
    fn tampering_cutting_and_moving_fail() {
        let k = keys();
        let data: Vec<u8> = (0..9000u32).map(|i| (i * 7) as u8).collect();
        for kind in KINDS {
            let s = seal(&k, kind, "index/aa", &data).unwrap();
            for i in 0..s.len() {
                let mut t = s.clone();
                t[i] ^= 0x01;
                assert!(open(&k, kind, "index/aa", &t).is_err(), "{kind:?} byte {i}");
            }
            for cut in 0..s.len() {
                assert!(open(&k, kind, "index/aa", &s[..cut]).is_err());
            }
            assert!(open(&k, kind, "index/ab", &s).is_err());
            let mut other = keys();
            other.metadata = Zeroizing::new([1; 32]);
            let os = StaticSecret::from([3u8; 32]);
            other.data_public = *PublicKey::from(&os).as_bytes();
            other.data_secret = Some(Zeroizing::new([3u8; 32]));
            assert!(open(&other, kind, "index/aa", &s).is_err());
        }
        // An empty object's one tag is checked too (no plaintext to decrypt).
        for kind in KINDS {
            let s = seal(&k, kind, "index/aa", b"").unwrap();
            assert_eq!(open(&k, kind, "index/aa", &s).unwrap(), b"");
            for i in 0..s.len() {
                let mut t = s.clone();
                t[i] ^= 0x80;
                assert!(
                    open(&k, kind, "index/aa", &t).is_err(),
                    "{kind:?} empty, byte {i}"
                );
            }
        }
        // The other kind's object is refused before any key is tried.
        let s = seal(&k, KeyKind::Metadata, "index/aa", &data).unwrap();
        assert!(open(&k, KeyKind::Data, "index/aa", &s).is_err());
    }

    /// A flipped byte costs its segment only: the others open, the damaged
    /// one comes back as zeros, counted; a bad header opens nothing.
    #[test]
    fn a_lossy_open_salvages_every_segment_that_authenticates() {
        let k = keys();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 200) as u8 + 1).collect();
        for kind in KINDS {
            let mut s = seal(&k, kind, "packs/ab/ab", &data).unwrap();
            assert_eq!(
                open_lossy(&k, kind, "packs/ab/ab", &s).unwrap(),
                (data.clone(), 0)
            );
            let at = kind.header_len() + (SEGMENT + TAG_LEN) as usize + 10;
            s[at] ^= 1;
            let (got, failed) = open_lossy(&k, kind, "packs/ab/ab", &s).unwrap();
            assert_eq!(failed, 1);
            assert_eq!(got[..4096], data[..4096]);
            assert!(got[4096..8192].iter().all(|&b| b == 0));
            assert_eq!(got[8192..], data[8192..]);
            let cut = &s[..s.len() - 5];
            assert_eq!(open_lossy(&k, kind, "packs/ab/ab", cut).unwrap().1, 2);
            s[0] ^= 1;
            assert!(open_lossy(&k, kind, "packs/ab/ab", &s).is_err());
        }
    }

    /// Two seals of the same bytes share nothing (fresh salt or key), and the
    /// plaintext appears nowhere in them.
    #[test]
    fn seals_are_fresh_and_hide_the_plaintext() {
        let k = keys();
        let data = b"MARKER-MARKER-MARKER".repeat(50);
        for kind in KINDS {
            let a = seal(&k, kind, "x", &data).unwrap();
            let b = seal(&k, kind, "x", &data).unwrap();
            assert_ne!(a[FIXED..], b[FIXED..]);
            assert!(!a.windows(6).any(|w| w == b"MARKER"));
        }
    }

    /// A write-only key seals data objects and cannot open them.
    #[test]
    fn a_write_only_key_seals_but_cannot_open_data() {
        let mut k = keys();
        k.data_secret = None;
        let s = seal(&k, KeyKind::Data, "packs/ab/ab", b"page").unwrap();
        assert!(matches!(
            open(&k, KeyKind::Data, "packs/ab/ab", &s),
            Err(CryptoError::WriteOnly)
        ));
        assert_eq!(
            open(&keys(), KeyKind::Data, "packs/ab/ab", &s).unwrap(),
            b"page"
        );
    }
}

//! Plain value types shared by every layer: object and chunk identifiers.
//! Nothing here does I/O.

use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};

/// Length of every identifier (a blake3 digest).
pub const ID_LEN: usize = 32;

/// Domain-separation prefix hashed before a chunk's bytes, so a chunk id can never
/// collide with the id of another kind of object holding the same bytes.
pub const CHUNK_DOMAIN: &[u8] = b"pagesnap chunk v1\0";

/// Content address of an object or chunk: 32 bytes of blake3.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Id(pub [u8; ID_LEN]);

/// An id is already a uniform hash: its first 8 bytes are as good a hash-table
/// key as any hash of all 32 (and hashing them again dominated index lookups).
impl Hash for Id {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(first));
    }
}

/// A hasher for keys that hash themselves as one uniform `u64` (ids): it passes
/// that value through. Anything else written is mixed in, so it stays correct.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = self.0.rotate_left(5) ^ v;
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
}

/// Hash maps and sets keyed by ids, without rehashing them.
pub type IdMap<V> = HashMap<Id, V, BuildHasherDefault<IdHasher>>;
pub type IdSet = HashSet<Id, BuildHasherDefault<IdHasher>>;

/// How a store names its chunks: blake3 of the chunk domain and the bytes
/// ([`Id::of_chunk`], a plain store), or keyed blake3 under the store's id key
/// (an encrypted store: equal pages dedup inside the store, and no one without
/// the key can tell whether a known page is in it).
#[derive(Clone, Default)]
pub struct ChunkIds(Option<std::sync::Arc<zeroize::Zeroizing<[u8; 32]>>>);

impl ChunkIds {
    pub fn keyed(key: &[u8; 32]) -> ChunkIds {
        ChunkIds(Some(std::sync::Arc::new(zeroize::Zeroizing::new(*key))))
    }

    pub fn is_keyed(&self) -> bool {
        self.0.is_some()
    }

    /// The id of chunk `data`.
    pub fn of(&self, data: &[u8]) -> ChunkId {
        match &self.0 {
            None => Id::of_chunk(data),
            Some(key) => Id(*blake3::keyed_hash(key, data).as_bytes()),
        }
    }
}

impl std::fmt::Debug for ChunkIds {
    // Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_keyed() {
            "ChunkIds(keyed)"
        } else {
            "ChunkIds(plain)"
        })
    }
}

impl Id {
    /// Id of a store object: blake3 of its exact encoded bytes.
    pub fn of_object(bytes: &[u8]) -> Id {
        Id(*blake3::hash(bytes).as_bytes())
    }

    /// Id of a chunk of database pages (domain-separated).
    pub fn of_chunk(data: &[u8]) -> Id {
        // blake3(domain ‖ data). Hashed in one piece when it fits a stack buffer: fed
        // to a `Hasher` in two updates, the 18-byte prefix leaves every blake3 chunk
        // misaligned with the input and they are compressed one lane at a time
        // (2.4x slower for a 4 KiB page); in one piece they go through `hash_many`.
        const PAGE: usize = 4096;
        if data.len() <= PAGE {
            let mut buf = [0u8; PAGE + CHUNK_DOMAIN.len()];
            let n = CHUNK_DOMAIN.len() + data.len();
            buf[..CHUNK_DOMAIN.len()].copy_from_slice(CHUNK_DOMAIN);
            buf[CHUNK_DOMAIN.len()..n].copy_from_slice(data);
            return Id(*blake3::hash(&buf[..n]).as_bytes());
        }
        if data.len() <= 1 << 20 {
            let mut buf = Vec::with_capacity(CHUNK_DOMAIN.len() + data.len());
            buf.extend_from_slice(CHUNK_DOMAIN);
            buf.extend_from_slice(data);
            return Id(*blake3::hash(&buf).as_bytes());
        }
        let mut h = blake3::Hasher::new();
        h.update(CHUNK_DOMAIN);
        h.update(data);
        Id(*h.finalize().as_bytes())
    }

    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }

    /// The short form shown to people (like a git abbreviated hash).
    pub fn short(&self) -> String {
        self.to_hex()[..8].to_string()
    }

    pub fn from_hex(s: &str) -> Option<Id> {
        let bytes = from_hex(s)?;
        let arr: [u8; ID_LEN] = bytes.try_into().ok()?;
        Some(Id(arr))
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Identifier of a chunk (blake3 over [`CHUNK_DOMAIN`] and the chunk bytes).
pub type ChunkId = Id;
/// Identifier of a snapshot: the id of its manifest object.
pub type SnapshotId = Id;

/// What one position of a snapshot's chunk list holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChunkRef {
    /// A chunk made only of zero bytes: recorded, never stored.
    Zero,
    /// A stored chunk.
    Stored(ChunkId),
}

pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

/// True when every byte is zero (eight bytes at a time; the compiler vectorises this).
pub fn is_all_zero(data: &[u8]) -> bool {
    let mut words = data.chunks_exact(8);
    let body_zero = words
        .by_ref()
        .all(|w| u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]) == 0);
    body_zero && words.remainder().iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn chunk_ids_are_blake3_of_domain_and_data_at_every_size() {
        for len in [0usize, 1, 512, 4095, 4096, 4097, 65536, (1 << 20) + 1] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 + i / 977) as u8).collect();
            let mut h = blake3::Hasher::new();
            h.update(CHUNK_DOMAIN);
            h.update(&data);
            assert_eq!(Id::of_chunk(&data).0, *h.finalize().as_bytes(), "len {len}");
        }
    }

    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn hex_round_trips(bytes in proptest::array::uniform32(any::<u8>())) {
            let id = Id(bytes);
            prop_assert_eq!(Id::from_hex(&id.to_hex()), Some(id));
        }
    }

    #[test]
    fn chunk_ids_are_domain_separated() {
        assert_ne!(Id::of_chunk(b"abc"), Id::of_object(b"abc"));
    }

    #[test]
    fn bad_hex_is_rejected() {
        assert_eq!(Id::from_hex("zz"), None);
        assert_eq!(Id::from_hex("abc"), None);
        assert_eq!(Id::from_hex("abcd"), None);
    }

    #[test]
    fn zero_detection() {
        assert!(is_all_zero(&[0u8; 4096]));
        let mut v = vec![0u8; 4096];
        v[4095] = 1;
        assert!(!is_all_zero(&v));
    }
}

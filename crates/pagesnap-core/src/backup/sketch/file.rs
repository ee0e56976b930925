//! The sketch file: this machine's record of the resemblance features of every
//! chunk of a database's newest snapshot, so that the next backup finds
//! content-found bases among its parent's chunks without reading the parent's
//! image (DELTAS.md, "Content-found bases"; the format is in FORMAT.md, "Sketch
//! file").
//!
//! A local cache, derived and never trusted: it lives at
//! `<cache dir>/<store id>/sketches/<blake3(database name)>`, is written after a
//! backup publishes (temporary file, fsync, rename), and is used only if its
//! magic, version, length and checksum are right and it names the snapshot the
//! backup diffs against, with as many chunks. Anything else and the backup goes
//! on without it (same-position bases only) and writes a new one. A wrong
//! feature can only pick a poor base, never wrong bytes: every delta's decode is
//! checked against its chunk id. Failing to write one is not an error.

use super::features::{Features, FEATURES};
use crate::types::{Id, SnapshotId};
use std::path::PathBuf;

const MAGIC: &[u8; 8] = b"PSNSKTCH";
const VERSION: u32 = 1;
/// Magic, version, features per chunk, snapshot id, chunk count.
const HEADER_LEN: usize = 8 + 4 + 4 + 32 + 8;
const TRAILER_LEN: usize = 32;
/// The most chunks a sketch describes (a 4 TiB database of 4 KiB pages): a
/// header claiming more is damage, not a size to allocate.
const MAX_CHUNKS: u64 = 1 << 30;

/// Where the sketch of database `name` in store `store` lives.
pub(crate) fn path(store: &Id, name: &str) -> Option<PathBuf> {
    Some(
        crate::cache_root()?
            .join(store.to_hex())
            .join("sketches")
            .join(Id::of_object(name.as_bytes()).to_hex()),
    )
}

/// The file's bytes.
pub(crate) fn encode(snapshot: &SnapshotId, features: &[Features]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + features.len() * FEATURES * 4 + TRAILER_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(FEATURES as u32).to_le_bytes());
    out.extend_from_slice(&snapshot.0);
    out.extend_from_slice(&(features.len() as u64).to_le_bytes());
    for f in features {
        for x in f {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    let sum = blake3::hash(&out);
    out.extend_from_slice(sum.as_bytes());
    out
}

/// The features of each chunk of `snapshot`, if `bytes` is a sound sketch of it
/// with `chunks` chunks.
pub(crate) fn decode(bytes: &[u8], snapshot: &SnapshotId, chunks: usize) -> Option<Vec<Features>> {
    let body_end = bytes.len().checked_sub(TRAILER_LEN)?;
    let (body, sum) = bytes.split_at(body_end);
    if body.len() < HEADER_LEN || blake3::hash(body).as_bytes() != sum {
        return None;
    }
    let u32_at = |at: usize| Some(u32::from_le_bytes(body.get(at..at + 4)?.try_into().ok()?));
    if &body[..8] != MAGIC
        || u32_at(8)? != VERSION
        || u32_at(12)? != FEATURES as u32
        || body[16..48] != snapshot.0
    {
        return None;
    }
    let count = u64::from_le_bytes(body[48..56].try_into().ok()?);
    if count > MAX_CHUNKS || count != chunks as u64 {
        return None;
    }
    let rows = &body[HEADER_LEN..];
    if rows.len() as u64 != count * (FEATURES as u64 * 4) {
        return None;
    }
    Some(
        rows.chunks_exact(FEATURES * 4)
            .map(|r| {
                let mut f = [0u32; FEATURES];
                for (x, b) in f.iter_mut().zip(r.chunks_exact(4)) {
                    *x = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
                f
            })
            .collect(),
    )
}

/// The sketch of `snapshot` (with `chunks` chunks) this machine holds for
/// database `name`, if there is a sound one.
pub(crate) fn read(
    store: &Id,
    name: &str,
    snapshot: &SnapshotId,
    chunks: usize,
) -> Option<Vec<Features>> {
    let bytes = std::fs::read(path(store, name)?).ok()?;
    decode(&bytes, snapshot, chunks)
}

/// Records the sketch of `snapshot` for database `name` (best effort: a sketch
/// that cannot be written only costs the next backup its content-found bases).
pub(crate) fn write(store: &Id, name: &str, snapshot: &SnapshotId, features: &[Features]) {
    let Some(p) = path(store, name) else { return };
    let Some(dir) = p.parent() else { return };
    if crate::create_private_dirs(dir).is_err() {
        return;
    }
    // Temporary file, fsync, rename: a reader sees the old sketch or the new
    // one, whole (and checks it anyway).
    let Ok(mut tmp) = tempfile::NamedTempFile::new_in(dir) else {
        return;
    };
    use std::io::Write;
    let bytes = encode(snapshot, features);
    if tmp.write_all(&bytes).is_ok() && tmp.as_file().sync_all().is_ok() {
        let _ = tmp.persist(&p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_anything_wrong_is_no_sketch() {
        let snap = Id([7; 32]);
        let rows: Vec<Features> = (0..5u32).map(|i| [i; FEATURES]).collect();
        let bytes = encode(&snap, &rows);
        assert_eq!(bytes.len(), HEADER_LEN + 5 * FEATURES * 4 + TRAILER_LEN);
        assert_eq!(decode(&bytes, &snap, 5), Some(rows));
        assert_eq!(decode(&bytes, &Id([8; 32]), 5), None, "another snapshot's");
        assert_eq!(decode(&bytes, &snap, 6), None, "another chunk count");
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 1;
            assert_eq!(decode(&bad, &snap, 5), None, "byte {at} flipped");
            assert_eq!(decode(&bytes[..at], &snap, 5), None, "cut at {at}");
        }
        assert_eq!(decode(&[], &snap, 0), None);
    }
}

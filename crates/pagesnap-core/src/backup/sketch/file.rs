//! The sketch file: this machine's record of the resemblance features of every
//! chunk of a database's newest snapshot, so that the next backup finds
//! content-found bases among its parent's chunks without reading the parent's
//! image (DELTAS.md, "Content-found bases"; the format is in FORMAT.md, "Sketch
//! file"), and, from version 2, of each chunk's skip-delta version
//! (`backup/skip.rs`), which says which link of its chain the next version at
//! that position is made against.
//!
//! A local cache, derived and never trusted: it lives at
//! `<cache dir>/<store id>/sketches/<blake3(database name)>`, is written after a
//! backup publishes (temporary file, rename; not fsynced: checked on read), and
//! is used only if its magic, version, length and checksum are right and it
//! names the snapshot the backup diffs against, with as many chunks. Anything
//! else and the backup goes on without it (same-position bases only) and
//! writes a new one. A wrong feature can only pick a poor base, never wrong
//! bytes: every delta's decode is checked against its chunk id. Failing to
//! write one is not an error.

use super::features::{Features, FEATURES};
use crate::types::{Id, SnapshotId};
use std::io::{Read, Write};
use std::path::PathBuf;

const MAGIC: &[u8; 8] = b"PSNSKTCH";
/// Version 2 adds the skip-delta states after the features; version 1
/// (features only) is still read, its states unknown.
const VERSION: u32 = 2;
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

/// What a sketch file holds for each chunk of its snapshot: resemblance
/// features, and skip-delta states (as many).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Sketch {
    pub features: Vec<Features>,
    pub states: Vec<u8>,
}

/// The file's bytes (version 2).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn encode(snapshot: &SnapshotId, sketch: &Sketch) -> Vec<u8> {
    encode_as(VERSION, snapshot, sketch)
}

/// The file's bytes as `version` writes them (1: no states).
#[cfg(any(test, feature = "fuzzing"))]
fn encode_as(version: u32, snapshot: &SnapshotId, sketch: &Sketch) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(HEADER_LEN + sketch.features.len() * (FEATURES * 4 + 1) + TRAILER_LEN);
    match write_as(&mut out, version, snapshot, sketch) {
        Ok(()) => out,
        // Writing into a `Vec` does not fail.
        Err(_) => Vec::new(),
    }
}

/// Writes the file's bytes as `version` writes them into `out`, the
/// checksum taken on the way: a backup streams its sketch (~9 MB at 1 GiB)
/// to the file instead of building it whole in fresh memory first.
fn write_as(
    out: &mut impl Write,
    version: u32,
    snapshot: &SnapshotId,
    sketch: &Sketch,
) -> std::io::Result<()> {
    let features = &sketch.features;
    let mut w = Summed {
        out,
        sum: blake3::Hasher::new(),
    };
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&version.to_le_bytes());
    header.extend_from_slice(&(FEATURES as u32).to_le_bytes());
    header.extend_from_slice(&snapshot.0);
    header.extend_from_slice(&(features.len() as u64).to_le_bytes());
    w.write_all(&header)?;
    // Rows a block at a time: one checksum update and one write per block.
    let mut block = Vec::with_capacity(ROWS_A_BLOCK * FEATURES * 4);
    for rows in features.chunks(ROWS_A_BLOCK) {
        block.clear();
        for x in rows.iter().flatten() {
            block.extend_from_slice(&x.to_le_bytes());
        }
        w.write_all(&block)?;
    }
    if version >= 2 {
        w.write_all(&sketch.states)?;
    }
    let sum = w.sum.finalize();
    w.out.write_all(sum.as_bytes())
}

/// Rows encoded ([`write_as`]) or decoded ([`decode_from`]) a block at a
/// time (64 KiB).
const ROWS_A_BLOCK: usize = 2048;

/// A writer that hashes what it passes on (the file's trailer).
struct Summed<'a, W: Write> {
    out: &'a mut W,
    sum: blake3::Hasher,
}

impl<W: Write> Write for Summed<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.sum.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// The features and states of each chunk of `snapshot`, if `bytes` is a
/// sound sketch of it with `chunks` chunks.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn decode(bytes: &[u8], snapshot: &SnapshotId, chunks: usize) -> Option<Sketch> {
    decode_from(bytes, bytes.len() as u64, snapshot, chunks)
}

/// [`decode`] of the `len` bytes `r` reads, a block of rows at a time: a
/// backup reads its parent's sketch (~9 MB at 1 GiB) into its rows without
/// holding the file's bytes too (fresh memory is slow on the project's VMs:
/// PERFORMANCE.md). The lengths the header claims must add up to `len`
/// before anything is allocated for them.
fn decode_from(mut r: impl Read, len: u64, snapshot: &SnapshotId, chunks: usize) -> Option<Sketch> {
    let body_len = len.checked_sub(TRAILER_LEN as u64)?;
    if body_len < HEADER_LEN as u64 {
        return None;
    }
    let mut sum = blake3::Hasher::new();
    let mut header = [0u8; HEADER_LEN];
    r.read_exact(&mut header).ok()?;
    sum.update(&header);
    let u32_at = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let version = u32_at(8);
    if &header[..8] != MAGIC
        || !(1..=VERSION).contains(&version)
        || u32_at(12) != FEATURES as u32
        || header[16..48] != snapshot.0
    {
        return None;
    }
    let mut count = [0u8; 8];
    count.copy_from_slice(&header[48..56]);
    let count = u64::from_le_bytes(count);
    if count > MAX_CHUNKS || count != chunks as u64 {
        return None;
    }
    let row_bytes = count * (FEATURES as u64 * 4);
    let version_bytes = if version >= 2 { count } else { 0 };
    if body_len - HEADER_LEN as u64 != row_bytes + version_bytes {
        return None;
    }
    let mut features = Vec::with_capacity(chunks);
    let mut block = vec![0u8; ROWS_A_BLOCK * FEATURES * 4];
    let mut left = chunks;
    while left > 0 {
        let n = left.min(ROWS_A_BLOCK);
        let rows = &mut block[..n * FEATURES * 4];
        r.read_exact(rows).ok()?;
        sum.update(rows);
        features.extend(rows.chunks_exact(FEATURES * 4).map(|r| {
            let mut f = [0u32; FEATURES];
            for (x, b) in f.iter_mut().zip(r.chunks_exact(4)) {
                *x = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
            f
        }));
        left -= n;
    }
    let states = match version {
        1 => vec![crate::backup::skip::UNKNOWN; chunks],
        _ => {
            let mut states = vec![0u8; chunks];
            r.read_exact(&mut states).ok()?;
            sum.update(&states);
            states
        }
    };
    let mut trailer = [0u8; TRAILER_LEN];
    r.read_exact(&mut trailer).ok()?;
    (sum.finalize().as_bytes() == &trailer).then_some(Sketch { features, states })
}

/// The sketch of `snapshot` (with `chunks` chunks) this machine holds for
/// database `name`, if there is a sound one.
pub(crate) fn read(store: &Id, name: &str, snapshot: &SnapshotId, chunks: usize) -> Option<Sketch> {
    let file = std::fs::File::open(path(store, name)?).ok()?;
    let len = file.metadata().ok()?.len();
    decode_from(
        std::io::BufReader::with_capacity(1 << 16, file),
        len,
        snapshot,
        chunks,
    )
}

/// Records the sketch of `snapshot` for database `name` (best effort: a sketch
/// that cannot be written only costs the next backup its content-found bases).
pub(crate) fn write(store: &Id, name: &str, snapshot: &SnapshotId, sketch: &Sketch) {
    let Some(p) = path(store, name) else { return };
    let Some(dir) = p.parent() else { return };
    if crate::create_private_dirs(dir).is_err() {
        return;
    }
    // Temporary file, rename: a reader sees the old sketch or the new one.
    // Not fsynced: the file is checked whole on every read (its trailer), so
    // one a crash left torn is only not used, and the next backup writes a
    // sound one; syncing its ~9 MB (at 1 GiB) was a tenth of the time a
    // backup with deltas takes beyond a plain one (PERFORMANCE.md).
    let Ok(mut tmp) = tempfile::NamedTempFile::new_in(dir) else {
        return;
    };
    let mut out = std::io::BufWriter::with_capacity(1 << 16, tmp.as_file_mut());
    if write_as(&mut out, VERSION, snapshot, sketch).is_ok() && out.flush().is_ok() {
        drop(out);
        let _ = tmp.persist(&p);
    }
}

/// The fuzz target `cache-sketch` (see `format::fuzz`).
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzz {
    use super::*;
    use crate::format::{FormatError, Result};

    fn invalid(why: &str) -> FormatError {
        FormatError::Invalid(format!("sketch file: {why}"))
    }

    /// Decodes `data` as the sketch of what its own header names (snapshot and
    /// chunk count), so that a sealed input passes the identity checks; a
    /// decoded sketch has a row and a state for every chunk.
    pub(crate) fn run(data: &[u8]) -> Result<()> {
        if data.len() < HEADER_LEN + TRAILER_LEN {
            return Err(invalid("too short"));
        }
        let mut snapshot = Id([0; 32]);
        snapshot.0.copy_from_slice(&data[16..48]);
        let mut count = [0u8; 8];
        count.copy_from_slice(&data[48..56]);
        // A count the file cannot hold is refused by `decode` before any
        // allocation; `usize` holds every count up to MAX_CHUNKS.
        let chunks = usize::try_from(u64::from_le_bytes(count).min(MAX_CHUNKS + 1))
            .map_err(|_| invalid("chunk count"))?;
        let s = decode(data, &snapshot, chunks).ok_or_else(|| invalid("refused"))?;
        assert_eq!(s.features.len(), chunks);
        assert_eq!(s.states.len(), chunks);
        Ok(())
    }

    /// `data` with its checksum made right (the trailing blake3).
    pub(crate) use crate::index::cache::fuzz::seal_trailing_hash as seal;

    /// Files by name.
    type Named = Vec<(&'static str, Vec<u8>)>;

    /// Seeds (sound files of both versions) and hostile files (sealed, to be
    /// refused).
    pub(crate) fn files() -> (Named, Named) {
        let snap = Id([0x5c; 32]);
        let sketch = |n: u32| Sketch {
            features: (0..n)
                .map(|i| [i.wrapping_mul(0x9e37_79b9); FEATURES])
                .collect(),
            states: (0..n).map(|i| (i * 7) as u8).collect(),
        };
        let seeds = vec![
            ("sketch-v2-40", encode(&snap, &sketch(40))),
            ("sketch-v1-40", encode_as(1, &snap, &sketch(40))),
            ("sketch-empty", encode(&snap, &sketch(0))),
        ];
        let lie = |at: usize, bytes: &[u8]| {
            let mut b = encode(&snap, &sketch(40));
            b[at..at + bytes.len()].copy_from_slice(bytes);
            seal(&b)
        };
        let hostile = vec![
            ("hostile-chunk-count-huge", lie(48, &u64::MAX.to_le_bytes())),
            (
                "hostile-chunk-count-one-more",
                lie(48, &41u64.to_le_bytes()),
            ),
            ("hostile-version-3", lie(8, &3u32.to_le_bytes())),
            ("hostile-version-0", lie(8, &0u32.to_le_bytes())),
            ("hostile-features-per-chunk", lie(12, &9u32.to_le_bytes())),
            // A version-1 header on a version-2 body: states left over.
            ("hostile-v1-with-states", lie(8, &1u32.to_le_bytes())),
        ];
        (seeds, hostile)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes at most 5 bytes a write: every short write must still be
    /// hashed as written.
    struct Dribble(Vec<u8>);

    impl Write for Dribble {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = buf.len().min(5);
            self.0.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_sketch_streamed_in_blocks_and_short_writes_reads_back() {
        let snap = Id([9; 32]);
        // More rows than one write's block, the last block partial.
        let n = ROWS_A_BLOCK * 2 + 3;
        let rows = Sketch {
            features: (0..n as u32)
                .map(|i| std::array::from_fn(|k| i.wrapping_mul(0x9e37_79b9) ^ k as u32))
                .collect(),
            states: (0..n).map(|i| (i % 32) as u8).collect(),
        };
        let mut dribble = Dribble(Vec::new());
        write_as(&mut dribble, VERSION, &snap, &rows).unwrap();
        assert_eq!(dribble.0, encode(&snap, &rows));
        assert_eq!(
            dribble.0.len(),
            HEADER_LEN + n * (FEATURES * 4 + 1) + TRAILER_LEN
        );
        assert_eq!(decode(&dribble.0, &snap, n).as_ref(), Some(&rows));
        // The trailer covers every byte: one flipped row byte is no sketch.
        let mut b = dribble.0.clone();
        b[HEADER_LEN + ROWS_A_BLOCK * FEATURES * 4 + 1] ^= 1;
        assert_eq!(decode(&b, &snap, n), None);
    }

    #[test]
    fn round_trip_and_anything_wrong_is_no_sketch() {
        let snap = Id([7; 32]);
        let rows = Sketch {
            features: (0..5u32).map(|i| [i; FEATURES]).collect(),
            states: vec![0, 1, 31, 4, 7],
        };
        let bytes = encode(&snap, &rows);
        assert_eq!(
            bytes.len(),
            HEADER_LEN + 5 * (FEATURES * 4 + 1) + TRAILER_LEN
        );
        assert_eq!(decode(&bytes, &snap, 5).as_ref(), Some(&rows));
        // Version 1 (features only) still reads, its states unknown.
        let v1 = encode_as(1, &snap, &rows);
        assert_eq!(v1.len(), HEADER_LEN + 5 * FEATURES * 4 + TRAILER_LEN);
        let old = decode(&v1, &snap, 5).unwrap();
        let unknown = vec![crate::backup::skip::UNKNOWN; 5];
        assert_eq!((old.features, old.states), (rows.features.clone(), unknown));
        assert_eq!(
            decode(&encode_as(3, &snap, &rows), &snap, 5),
            None,
            "a newer version"
        );
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

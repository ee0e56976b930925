//! The fingerprint file: this machine's record of a database's newest snapshot
//! as the next backup compares its blocks with it (mod.rs). The bytes are in
//! FORMAT.md, "Local fingerprint files".
//!
//! A local cache, derived and never trusted: it lives at
//! `<cache dir>/<store id>/prints/<blake3(database name)>`, and is used only if
//! its magic, version, lengths and checksum are right and it names the snapshot
//! the backup continues from, made with this machine's secret, with that
//! snapshot's chunk length and image length. Anything else and the backup
//! hashes every page (and records a new file). Failing to write one is not an
//! error.
//!
//! Neither side holds the prints in memory (at 16 bytes a chunk they would be
//! 200 MB of a 50 GB database's backup, twice): a record of fixed length per
//! block, so that the capture writes each block's record where it belongs as
//! the block is processed ([`Recorder`]), in whatever order blocks come, and
//! the next backup reads the record of the block it compares ([`Recorded`]),
//! from the file it checked whole when it opened it. Version 2 adds, after the
//! blocks, the snapshot's *WAL mark* (where in its WAL it was captured, for the
//! next capture to learn which pages changed since: capture/guide.rs). The
//! snapshot id, which only publishing gives, and the checksum end the file
//! after publishing ([`Pending::finish`]: fsync, rename).

use super::{secret, Print};
use crate::backup::capture::block_len;
use crate::backup::capture::guide::WalMark;
use crate::backup::capture::wal::WalPosition;
use crate::digest::image_check::Digest;
use crate::types::{Id, SnapshotId};
use blake3::hazmat::ChainingValue;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

const MAGIC: &[u8; 8] = b"PSNPRINT";
/// The version written; version 1 (no WAL mark) is still read.
const VERSION: u32 = 2;
/// A version-2 file's WAL mark, after the blocks ([`encode_mark`]).
const MARK_LEN: usize = 48;
/// Magic, version, chunk length, secret id, image length, chunk count, block count.
const HEADER_LEN: usize = 8 + 4 + 4 + 16 + 8 + 8 + 8;
/// A block's chaining value and image-check digest, before its prints.
const BLOCK_HEAD: usize = 32 + 16;
const PRINT_LEN: usize = 16;
/// The snapshot id and the checksum (blake3 of everything before it).
const TRAILER_LEN: usize = 32 + 32;
/// The most chunks a file describes (a 4 TiB database of 4 KiB pages): a
/// header claiming more is damage, not a size to read.
const MAX_CHUNKS: u64 = 1 << 30;

/// Where the prints of database `name` in store `store` live.
pub(crate) fn path(store: &Id, name: &str) -> Option<PathBuf> {
    Some(secret::dir(store)?.join(Id::of_object(name.as_bytes()).to_hex()))
}

/// The shape of a file: chunks per block and the length of a block's record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Shape {
    chunk_len: u32,
    per_block: usize,
    record: usize,
}

impl Shape {
    fn of(chunk_len: u32) -> Option<Shape> {
        if chunk_len == 0 {
            return None;
        }
        let per_block = crate::digest::image_check::chunks_per_block(chunk_len as u64);
        Some(Shape {
            chunk_len,
            per_block,
            record: BLOCK_HEAD + per_block * PRINT_LEN,
        })
    }

    fn at(&self, b: u64) -> u64 {
        HEADER_LEN as u64 + b * self.record as u64
    }
}

fn header(shape: Shape, secret_id: &[u8; 16], image_len: u64) -> [u8; HEADER_LEN] {
    header_of(VERSION, shape, secret_id, image_len)
}

fn header_of(version: u32, shape: Shape, secret_id: &[u8; 16], image_len: u64) -> [u8; HEADER_LEN] {
    let chunks = image_len.div_ceil(shape.chunk_len as u64);
    let blocks = image_len.div_ceil(block_len(shape.chunk_len as u64));
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&version.to_le_bytes());
    h[12..16].copy_from_slice(&shape.chunk_len.to_le_bytes());
    h[16..32].copy_from_slice(secret_id);
    h[32..40].copy_from_slice(&image_len.to_le_bytes());
    h[40..48].copy_from_slice(&chunks.to_le_bytes());
    h[48..56].copy_from_slice(&blocks.to_le_bytes());
    h
}

/// A block's record: its chaining value, image-check digest and prints (a
/// last block's missing chunks as zeros).
fn record(shape: Shape, cv: &ChainingValue, check: &Digest, prints: &[Print]) -> Vec<u8> {
    let mut r = vec![0u8; shape.record];
    r[..32].copy_from_slice(cv);
    r[32..48].copy_from_slice(check);
    for (i, p) in prints.iter().take(shape.per_block).enumerate() {
        r[BLOCK_HEAD + i * PRINT_LEN..BLOCK_HEAD + (i + 1) * PRINT_LEN].copy_from_slice(p);
    }
    r
}

/// A WAL mark's bytes: salts, frame, chain (2 × u32), device, inode, time of
/// the last full read, flags (1: a mark; 2: big-endian WAL checksums), three
/// zero bytes. No mark: 48 zeros.
fn encode_mark(mark: Option<&WalMark>) -> [u8; MARK_LEN] {
    let mut m = [0u8; MARK_LEN];
    let Some(mark) = mark else {
        return m;
    };
    let p = &mark.position;
    m[..8].copy_from_slice(&p.salt);
    m[8..12].copy_from_slice(&p.max_frame.to_le_bytes());
    m[12..16].copy_from_slice(&p.checksum[0].to_le_bytes());
    m[16..20].copy_from_slice(&p.checksum[1].to_le_bytes());
    m[20..28].copy_from_slice(&mark.file.0.to_le_bytes());
    m[28..36].copy_from_slice(&mark.file.1.to_le_bytes());
    m[36..44].copy_from_slice(&mark.full_read_at.to_le_bytes());
    m[44] = 1 | (p.big_endian as u8) << 1;
    m
}

/// [`encode_mark`]'s inverse: `Err` for bytes it never writes (unknown flags,
/// padding, a missing mark's bytes not all zero).
fn decode_mark(m: &[u8; MARK_LEN]) -> Result<Option<WalMark>, ()> {
    if m[44] & !3 != 0 || m[45..] != [0; 3] {
        return Err(());
    }
    if m[44] & 1 == 0 {
        return match m.iter().all(|&b| b == 0) {
            true => Ok(None),
            false => Err(()),
        };
    }
    let u32_at = |at: usize| u32::from_le_bytes([m[at], m[at + 1], m[at + 2], m[at + 3]]);
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&m[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let mut salt = [0u8; 8];
    salt.copy_from_slice(&m[..8]);
    Ok(Some(WalMark {
        position: WalPosition {
            salt,
            max_frame: u32_at(8),
            checksum: [u32_at(12), u32_at(16)],
            big_endian: m[44] & 2 != 0,
        },
        file: (u64_at(20), u64_at(28)),
        full_read_at: u64_at(36),
    }))
}

fn trailer(mut sum: blake3::Hasher, snapshot: &SnapshotId) -> [u8; TRAILER_LEN] {
    sum.update(&snapshot.0);
    let mut t = [0u8; TRAILER_LEN];
    t[..32].copy_from_slice(&snapshot.0);
    t[32..].copy_from_slice(sum.finalize().as_bytes());
    t
}

/// Reads the next `len` bytes of `file` into `sum`, 64 KiB at a time.
fn hash_through(file: &mut File, mut len: u64, sum: &mut blake3::Hasher) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 << 10];
    while len > 0 {
        let n = len.min(buf.len() as u64) as usize;
        file.read_exact(&mut buf[..n])?;
        sum.update(&buf[..n]);
        len -= n as u64;
    }
    Ok(())
}

/// What a file must say to be used: the snapshot it describes, the secret and
/// the snapshot's chunk and image lengths.
pub(crate) struct Expected<'a> {
    pub snapshot: &'a SnapshotId,
    pub secret_id: [u8; 16],
    pub chunk_len: u32,
    pub image_len: u64,
}

/// One block of a recorded snapshot.
pub(crate) struct BlockRecord {
    pub cv: ChainingValue,
    pub check: Digest,
    /// Its chunks' prints (a partial last block's missing ones are zeros).
    pub prints: Vec<Print>,
}

/// A checked file of a parent snapshot, read a block at a time. It keeps the
/// file it checked open: a later backup's file replaces it by a rename, which
/// leaves this one's bytes as they were.
pub(crate) struct Recorded {
    file: File,
    shape: Shape,
    blocks: u64,
    chunks: u64,
    wal: Option<WalMark>,
}

impl Recorded {
    /// The file at `path`, if it is sound and describes what `want` says.
    pub(crate) fn open(path: &std::path::Path, want: &Expected) -> Option<Recorded> {
        Recorded::check(File::open(path).ok()?, want)
    }

    fn check(mut file: File, want: &Expected) -> Option<Recorded> {
        let shape = Shape::of(want.chunk_len)?;
        let mut head = [0u8; HEADER_LEN];
        file.read_exact(&mut head).ok()?;
        let (chunks, blocks) = (
            u64::from_le_bytes(head[40..48].try_into().ok()?),
            u64::from_le_bytes(head[48..56].try_into().ok()?),
        );
        let version = [1, VERSION]
            .into_iter()
            .find(|&v| head == header_of(v, shape, &want.secret_id, want.image_len))?;
        if chunks > MAX_CHUNKS {
            return None;
        }
        // The header is what the expected lengths make, so the counts are
        // bounded and the length exact before a byte more is read.
        let body_end = shape.at(blocks);
        let mark_len = if version >= 2 { MARK_LEN as u64 } else { 0 };
        if file.metadata().ok()?.len() != body_end + mark_len + TRAILER_LEN as u64 {
            return None;
        }
        let mut sum = blake3::Hasher::new();
        sum.update(&head);
        hash_through(&mut file, body_end - HEADER_LEN as u64, &mut sum).ok()?;
        let mut mark = [0u8; MARK_LEN];
        if version >= 2 {
            file.read_exact(&mut mark).ok()?;
            sum.update(&mark);
        }
        let mut tail = [0u8; TRAILER_LEN];
        file.read_exact(&mut tail).ok()?;
        if tail != trailer(sum, want.snapshot) {
            return None;
        }
        Some(Recorded {
            file,
            shape,
            blocks,
            chunks,
            wal: decode_mark(&mark).ok()?,
        })
    }

    /// Where in its WAL the snapshot was captured, if this machine recorded it.
    pub(crate) fn wal(&self) -> Option<WalMark> {
        self.wal
    }

    pub(crate) fn chunk_len(&self) -> u64 {
        self.shape.chunk_len as u64
    }

    pub(crate) fn chunks(&self) -> u64 {
        self.chunks
    }

    /// Chunks a block's record holds prints of.
    pub(crate) fn per_block(&self) -> usize {
        self.shape.per_block
    }

    /// Block `b`'s record (`None` beyond the last block, or if it cannot be read).
    pub(crate) fn block(&self, b: u64) -> Option<BlockRecord> {
        if b >= self.blocks {
            return None;
        }
        let mut r = vec![0u8; self.shape.record];
        self.file.read_exact_at(&mut r, self.shape.at(b)).ok()?;
        let mut cv = [0u8; 32];
        cv.copy_from_slice(&r[..32]);
        let mut check = [0u8; 16];
        check.copy_from_slice(&r[32..48]);
        let prints = r[BLOCK_HEAD..]
            .chunks_exact(PRINT_LEN)
            .map(|p| {
                let mut x = [0u8; PRINT_LEN];
                x.copy_from_slice(p);
                x
            })
            .collect();
        Some(BlockRecord { cv, check, prints })
    }
}

/// The file a capture writes as its blocks are processed.
pub(crate) struct Recorder {
    tmp: tempfile::NamedTempFile,
    shape: Shape,
    secret_id: [u8; 16],
    path: PathBuf,
    wal: Option<WalMark>,
}

impl Recorder {
    /// A new file for the prints of database `name` in chunks of `chunk_len`
    /// (best effort: `None` if it cannot be made, which only costs the next
    /// backup the comparison).
    pub(crate) fn create(
        store: &Id,
        name: &str,
        chunk_len: u64,
        secret_id: [u8; 16],
    ) -> Option<Recorder> {
        let path = path(store, name)?;
        let dir = path.parent()?;
        crate::create_private_dirs(dir).ok()?;
        Some(Recorder {
            tmp: tempfile::NamedTempFile::new_in(dir).ok()?,
            shape: Shape::of(u32::try_from(chunk_len).ok()?)?,
            secret_id,
            path,
            wal: None,
        })
    }

    /// The snapshot's WAL mark, to record with its blocks.
    pub(crate) fn mark(&mut self, wal: Option<WalMark>) {
        self.wal = wal;
    }

    /// Records block `b` (again, if SQLite rewrote it).
    pub(crate) fn put(
        &self,
        b: u64,
        cv: &ChainingValue,
        check: &Digest,
        prints: &[Print],
    ) -> std::io::Result<()> {
        let r = record(self.shape, cv, check, prints);
        self.tmp.as_file().write_all_at(&r, self.shape.at(b))
    }

    /// Ends the body for an image of `image_len` bytes, every block of which
    /// was put: the header, the length (records past the end, of blocks a
    /// truncation dropped, go), and the checksum so far.
    pub(crate) fn seal(self, image_len: u64) -> Option<Pending> {
        let Recorder {
            mut tmp,
            shape,
            secret_id,
            path,
            wal,
        } = self;
        let blocks = image_len.div_ceil(block_len(shape.chunk_len as u64));
        let f = tmp.as_file();
        f.write_all_at(&header(shape, &secret_id, image_len), 0)
            .ok()?;
        let body_end = shape.at(blocks);
        f.set_len(body_end).ok()?;
        f.write_all_at(&encode_mark(wal.as_ref()), body_end).ok()?;
        let end = body_end + MARK_LEN as u64;
        let mut sum = blake3::Hasher::new();
        let file = tmp.as_file_mut();
        file.seek(SeekFrom::Start(0)).ok()?;
        hash_through(file, end, &mut sum).ok()?;
        Some(Pending { tmp, sum, path })
    }
}

/// A file whose body is written and whose snapshot is not yet known.
pub(crate) struct Pending {
    tmp: tempfile::NamedTempFile,
    sum: blake3::Hasher,
    path: PathBuf,
}

impl Pending {
    /// Ends the file with `snapshot` (the published snapshot), fsyncs and
    /// renames it into place: a reader sees the old file or the new one, whole.
    pub(crate) fn finish(mut self, snapshot: &SnapshotId) {
        let t = trailer(self.sum, snapshot);
        let f = self.tmp.as_file_mut();
        if f.seek(SeekFrom::End(0)).is_ok() && f.write_all(&t).is_ok() && f.sync_all().is_ok() {
            let _ = self.tmp.persist(&self.path);
        }
    }
}

/// The whole file of a snapshot's blocks (cv, check, prints of each), in memory:
/// tests and fuzzing.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn encode(
    snapshot: &SnapshotId,
    secret_id: &[u8; 16],
    chunk_len: u32,
    image_len: u64,
    blocks: &[(ChainingValue, Digest, Vec<Print>)],
) -> Vec<u8> {
    encode_as(
        VERSION, None, snapshot, secret_id, chunk_len, image_len, blocks,
    )
}

/// [`encode`] in file version `version` (1 or 2), with the WAL mark `mark`
/// (version 2).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn encode_as(
    version: u32,
    mark: Option<&WalMark>,
    snapshot: &SnapshotId,
    secret_id: &[u8; 16],
    chunk_len: u32,
    image_len: u64,
    blocks: &[(ChainingValue, Digest, Vec<Print>)],
) -> Vec<u8> {
    let shape = Shape::of(chunk_len).expect("a chunk length");
    let mut out = header_of(version, shape, secret_id, image_len).to_vec();
    for (cv, check, prints) in blocks {
        out.extend_from_slice(&record(shape, cv, check, prints));
    }
    if version >= 2 {
        out.extend_from_slice(&encode_mark(mark));
    }
    let mut sum = blake3::Hasher::new();
    sum.update(&out);
    out.extend_from_slice(&trailer(sum, snapshot));
    out
}

/// The fuzz target `cache-prints` (see `format::fuzz`).
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzz {
    use super::*;
    use crate::format::{FormatError, Result};

    fn invalid(why: &str) -> FormatError {
        FormatError::Invalid(format!("fingerprint file: {why}"))
    }

    /// Opens `data` (written to a temporary file) as the file of what its own
    /// header and trailer name, so that a sealed input passes the identity
    /// checks, and reads every block of it (at most 4,096).
    pub(crate) fn run(data: &[u8]) -> Result<()> {
        if data.len() < HEADER_LEN + TRAILER_LEN {
            return Err(invalid("too short"));
        }
        let mut snapshot = Id([0; 32]);
        snapshot
            .0
            .copy_from_slice(&data[data.len() - TRAILER_LEN..][..32]);
        let mut secret_id = [0u8; 16];
        secret_id.copy_from_slice(&data[16..32]);
        let mut image_len = [0u8; 8];
        image_len.copy_from_slice(&data[32..40]);
        let want = Expected {
            snapshot: &snapshot,
            secret_id,
            chunk_len: u32::from_le_bytes([data[12], data[13], data[14], data[15]]),
            image_len: u64::from_le_bytes(image_len),
        };
        let mut tmp = tempfile::tempfile().map_err(|e| invalid(&e.to_string()))?;
        tmp.write_all(data).map_err(|e| invalid(&e.to_string()))?;
        tmp.seek(SeekFrom::Start(0))
            .map_err(|e| invalid(&e.to_string()))?;
        let r = Recorded::check(tmp, &want).ok_or_else(|| invalid("refused"))?;
        for b in 0..r.blocks.min(1 << 12) {
            let rec = r.block(b).ok_or_else(|| invalid("a block unread"))?;
            assert_eq!(rec.prints.len(), r.shape.per_block);
        }
        Ok(())
    }

    /// `data` with its checksum made right (the trailer's last 32 bytes).
    pub(crate) use crate::index::cache::fuzz::seal_trailing_hash as seal;

    /// Files by name.
    type Named = Vec<(&'static str, Vec<u8>)>;

    /// Seeds (sound files) and hostile files (sealed, to be refused).
    pub(crate) fn files() -> (Named, Named) {
        let snap = Id([0x5e; 32]);
        let file = |chunks: u64, chunk_len: u32| {
            let shape = Shape::of(chunk_len).expect("a chunk length");
            let image_len = chunks * chunk_len as u64;
            let blocks = image_len.div_ceil(block_len(chunk_len as u64));
            let rows: Vec<_> = (0..blocks)
                .map(|b| {
                    let prints = (0..shape.per_block).map(|c| [(b as u8) ^ (c as u8); 16]);
                    ([b as u8; 32], [b as u8 ^ 0xff; 16], prints.collect())
                })
                .collect();
            encode(&snap, &[0x11; 16], chunk_len, image_len, &rows)
        };
        let mark = WalMark {
            position: WalPosition {
                salt: [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88],
                max_frame: 1234,
                checksum: [0xabcd_ef01, 0x2345_6789],
                big_endian: false,
            },
            file: (2049, 131_075),
            full_read_at: 1_796_000_000,
        };
        let with = |version: u32, mark: Option<&WalMark>| {
            let rows: Vec<_> = (0..3u8)
                .map(|b| ([b; 32], [b ^ 0xff; 16], vec![[b; 16]; 16]))
                .collect();
            encode_as(version, mark, &snap, &[0x11; 16], 4096, 3 * 65536, &rows)
        };
        let seeds = vec![
            ("prints-40-of-4k", file(40, 4096)),
            ("prints-3-of-64k", file(3, 65536)),
            ("prints-empty", file(0, 4096)),
            ("prints-wal-mark", with(2, Some(&mark))),
            ("prints-version-1", with(1, None)),
        ];
        let mark_at = |i: usize, v: u8| {
            let mut b = with(2, Some(&mark));
            let at = b.len() - TRAILER_LEN - MARK_LEN + i;
            b[at] = v;
            seal(&b)
        };
        let lie = |at: usize, value: u64| {
            let mut b = file(40, 4096);
            b[at..at + 8].copy_from_slice(&value.to_le_bytes());
            seal(&b)
        };
        let hostile = vec![
            ("hostile-chunk-count-huge", lie(40, u64::MAX)),
            ("hostile-chunk-count-one-more", lie(40, 41)),
            ("hostile-block-count-huge", lie(48, 1 << 40)),
            ("hostile-block-count-short", lie(48, 2)),
            ("hostile-mark-flags", mark_at(44, 0x05)),
            ("hostile-mark-padding", mark_at(46, 1)),
            ("hostile-mark-absent-but-salted", {
                let mut b = with(2, None);
                let at = b.len() - TRAILER_LEN - MARK_LEN;
                b[at] = 1;
                seal(&b)
            }),
        ];
        (seeds, hostile)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: [u8; 16] = [3; 16];

    /// 2 blocks and a chunk of 4 KiB chunks.
    fn rows() -> Vec<(ChainingValue, Digest, Vec<Print>)> {
        (0..3u8)
            .map(|b| {
                let n = if b == 2 { 1 } else { 16 };
                (
                    [b; 32],
                    [b ^ 0xff; 16],
                    (0..n).map(|c| [b * 16 + c; 16]).collect(),
                )
            })
            .collect()
    }

    const IMAGE: u64 = 2 * 65536 + 4096;

    fn want(snap: &SnapshotId) -> Expected<'_> {
        Expected {
            snapshot: snap,
            secret_id: SECRET,
            chunk_len: 4096,
            image_len: IMAGE,
        }
    }

    fn open(bytes: &[u8], want: &Expected) -> Option<Recorded> {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        Recorded::check(f, want)
    }

    #[test]
    fn round_trip_and_anything_else_is_no_prints() {
        let snap = Id([7; 32]);
        let bytes = encode(&snap, &SECRET, 4096, IMAGE, &rows());
        assert_eq!(
            bytes.len(),
            HEADER_LEN + 3 * (48 + 16 * 16) + MARK_LEN + TRAILER_LEN
        );
        let r = open(&bytes, &want(&snap)).unwrap();
        assert_eq!(r.chunks(), 33);
        for (b, (cv, check, prints)) in rows().iter().enumerate() {
            let rec = r.block(b as u64).unwrap();
            assert_eq!((&rec.cv, &rec.check), (cv, check));
            assert_eq!(rec.prints[..prints.len()], prints[..]);
            assert!(rec.prints[prints.len()..].iter().all(|p| p == &[0; 16]));
        }
        assert!(r.block(3).is_none());
        let other = Id([8; 32]);
        assert!(open(&bytes, &want(&other)).is_none(), "another snapshot's");
        let w = |f: &dyn Fn(&mut Expected)| {
            let mut e = want(&snap);
            f(&mut e);
            open(&bytes, &e).is_none()
        };
        assert!(w(&|e| e.secret_id = [4; 16]), "another secret's");
        assert!(w(&|e| e.chunk_len = 8192), "another chunk length");
        assert!(w(&|e| e.image_len += 4096), "another image length");
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(open(&b, &want(&snap)).is_none(), "byte {i} flipped");
        }
        for cut in 0..bytes.len() {
            assert!(open(&bytes[..cut], &want(&snap)).is_none(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(open(&longer, &want(&snap)).is_none(), "a byte more");
    }

    #[test]
    fn a_recorder_writes_blocks_in_any_order_and_seals_the_encoding() {
        let d = tempfile::tempdir().unwrap();
        let snap = Id([7; 32]);
        let rec = Recorder {
            tmp: tempfile::NamedTempFile::new_in(d.path()).unwrap(),
            shape: Shape::of(4096).unwrap(),
            secret_id: SECRET,
            path: d.path().join("f"),
            wal: None,
        };
        let rows = rows();
        // Out of order, a block written twice, one past the end (a truncation).
        rec.put(5, &[9; 32], &[9; 16], &[[9; 16]]).unwrap();
        rec.put(1, &[0; 32], &[0; 16], &[]).unwrap();
        for b in [2, 0, 1] {
            let (cv, check, prints) = &rows[b];
            rec.put(b as u64, cv, check, prints).unwrap();
        }
        rec.seal(IMAGE).unwrap().finish(&snap);
        let bytes = std::fs::read(d.path().join("f")).unwrap();
        assert_eq!(bytes, encode(&snap, &SECRET, 4096, IMAGE, &rows));
        let r = Recorded::open(&d.path().join("f"), &want(&snap)).unwrap();
        assert_eq!(r.wal(), None);
    }

    fn mark() -> WalMark {
        WalMark {
            position: WalPosition {
                salt: [1, 2, 3, 4, 5, 6, 7, 8],
                max_frame: 77,
                checksum: [0xdead_beef, 9],
                big_endian: true,
            },
            file: (64769, 1 << 40),
            full_read_at: 1_780_000_000,
        }
    }

    #[test]
    fn a_wal_mark_round_trips_and_a_version_1_file_is_read_without_one() {
        let snap = Id([7; 32]);
        let m = mark();
        let bytes = encode_as(2, Some(&m), &snap, &SECRET, 4096, IMAGE, &rows());
        let r = open(&bytes, &want(&snap)).unwrap();
        assert_eq!(r.wal(), Some(m));
        let d = tempfile::tempdir().unwrap();
        let mut rec = Recorder {
            tmp: tempfile::NamedTempFile::new_in(d.path()).unwrap(),
            shape: Shape::of(4096).unwrap(),
            secret_id: SECRET,
            path: d.path().join("f"),
            wal: None,
        };
        rec.mark(Some(m));
        for (b, (cv, check, prints)) in rows().iter().enumerate() {
            rec.put(b as u64, cv, check, prints).unwrap();
        }
        rec.seal(IMAGE).unwrap().finish(&snap);
        assert_eq!(std::fs::read(d.path().join("f")).unwrap(), bytes);
        // Version 1, as the backups before WAL marks wrote it.
        let v1 = encode_as(1, None, &snap, &SECRET, 4096, IMAGE, &rows());
        assert_eq!(v1.len(), bytes.len() - MARK_LEN);
        let r = open(&v1, &want(&snap)).unwrap();
        assert_eq!(r.wal(), None);
        assert_eq!(r.block(1).unwrap().cv, [1; 32]);
        for i in 0..v1.len() {
            let mut b = v1.clone();
            b[i] ^= 0x10;
            assert!(open(&b, &want(&snap)).is_none(), "v1 byte {i} flipped");
        }
        // A version this build does not know.
        let mut v3 = bytes.clone();
        v3[8] = 3;
        assert!(open(&resealed(&v3), &want(&snap)).is_none());
    }

    #[test]
    fn a_mark_of_bytes_never_written_is_refused_even_under_a_sound_checksum() {
        let snap = Id([7; 32]);
        let bytes = encode_as(2, Some(&mark()), &snap, &SECRET, 4096, IMAGE, &rows());
        let at = bytes.len() - TRAILER_LEN - MARK_LEN;
        assert!(open(&bytes, &want(&snap)).is_some());
        for (i, v) in [(44, 4u8), (44, 0x81), (45, 1), (47, 1)] {
            let mut b = bytes.clone();
            b[at + i] = v;
            assert!(
                open(&resealed(&b), &want(&snap)).is_none(),
                "byte {i} = {v}"
            );
        }
        // No mark, yet a salt: refused.
        let none = encode_as(2, None, &snap, &SECRET, 4096, IMAGE, &rows());
        let mut b = none.clone();
        b[at] = 1;
        assert!(open(&resealed(&b), &want(&snap)).is_none());
        assert_eq!(open(&none, &want(&snap)).unwrap().wal(), None);
    }

    /// `data` with its trailing checksum made right again.
    fn resealed(data: &[u8]) -> Vec<u8> {
        let mut out = data.to_vec();
        let end = out.len() - 32;
        let sum = blake3::hash(&out[..end]);
        out[end..].copy_from_slice(sum.as_bytes());
        out
    }
}

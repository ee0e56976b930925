//! This machine's resolved positions of the snapshots opened in place
//! (`<cache dir>/<store id>/positions/<snapshot id>`): for every chunk position
//! of a snapshot, its chunk id and where it is, so that a second query of the
//! same snapshot reads the few positions it needs instead of resolving all of
//! them again.
//!
//! Resolving a 1 GiB snapshot (its page maps and the 10 MB index object they
//! name, read, hashed and decoded) is ~20 ms, most of a lookup's time; with
//! this file a lookup reads its header and one 3,328-byte block per position.
//! Like every cache here it is never the truth: the header and every block are
//! checksummed, a file that fails a check is deleted, and the reader then
//! resolves the snapshot through the store (FORMAT.md, "Local position cache").
//! Only what a snapshot's plan resolved the short way is written: a store with
//! deltas, or a snapshot resolved through the whole index, gets no file.

use super::rebuild::{Position, Positions};
use crate::format::index::PackRef;
use crate::format::pack::Codec;
use crate::index::chunk_index::{Location, PackTable, Slot};
use crate::types::{Id, SnapshotId};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

const MAGIC: &[u8; 8] = b"PSNPQPOS";
const VERSION: u32 = 1;
/// id 32, pack u32, offset u32, stored_len u32, raw_len u32, codec u8, 3 zero bytes.
const RECORD: usize = 52;
/// Records per checksummed block.
const PER_BLOCK: usize = 64;
/// The pack number of a zero chunk's record.
const ZERO: u32 = u32::MAX;
/// magic, version, record length, block length, snapshot id, positions, packs.
const HEAD: usize = 8 + 4 + 4 + 4 + 32 + 8 + 8;
/// A pack in the table: id 32, length u64, dictionary flag u8 + id 32.
const PACK: usize = 32 + 8 + 1 + 32;
/// Files kept per store: those of the snapshots opened last.
const KEEP: usize = 8;
/// Positions a file may claim (a 16 TiB image of 4 KiB pages): bounds what a
/// hostile header makes the reader allocate.
const MAX_POSITIONS: u64 = 1 << 32;

/// A snapshot's positions, read from this machine's file.
pub(crate) struct PositionFile {
    file: File,
    path: PathBuf,
    count: usize,
    packs: PackTable,
    sums: Vec<[u8; 8]>,
    records_at: u64,
    /// The block read last, and its number.
    block: Mutex<Option<(usize, Vec<u8>)>>,
}

/// The folder of a store's position files.
pub(crate) fn folder(store: &Id) -> Option<PathBuf> {
    Some(crate::cache_root()?.join(store.to_hex()).join("positions"))
}

/// What this machine knows of a snapshot's positions.
pub(crate) enum Lookup {
    /// Its file, sound (boxed: the other answers carry nothing).
    File(Box<PositionFile>),
    /// It was opened before, and has no file yet: an empty file marks that.
    Seen,
    Unknown,
}

/// What `dir` holds for `snap` (of `count` positions): a file that fails its
/// checks is deleted.
pub(crate) fn lookup(dir: &Path, snap: &SnapshotId, count: u64) -> Lookup {
    let path = dir.join(snap.to_hex());
    let Ok(file) = File::open(&path) else {
        return Lookup::Unknown;
    };
    if file.metadata().is_ok_and(|m| m.len() == 0) {
        return Lookup::Seen;
    }
    match PositionFile::read(file, path.clone(), snap, count) {
        Some(f) => Lookup::File(Box::new(f)),
        None => {
            let _ = std::fs::remove_file(&path);
            Lookup::Unknown
        }
    }
}

/// Marks `snap` as opened once (an empty file), so that the next opening
/// writes its positions; nothing for a snapshot too small to get a file.
pub(crate) fn mark_seen(dir: &Path, snap: &SnapshotId, count: usize) -> Option<()> {
    if !worth_a_file(count) {
        return None;
    }
    crate::create_private_dirs(dir).ok()?;
    File::create(dir.join(snap.to_hex())).ok()?;
    prune(dir);
    Some(())
}

impl PositionFile {
    /// The file of `snap` in `dir`, if there is one that passes its checks for a
    /// snapshot of `count` positions; a file that fails them is deleted.
    #[cfg(test)]
    pub(crate) fn open(dir: &Path, snap: &SnapshotId, count: u64) -> Option<PositionFile> {
        match lookup(dir, snap, count) {
            Lookup::File(f) => Some(*f),
            _ => None,
        }
    }

    fn read(file: File, path: PathBuf, snap: &SnapshotId, count: u64) -> Option<PositionFile> {
        let len = file.metadata().ok()?.len();
        let mut head = [0u8; HEAD];
        file.read_exact_at(&mut head, 0).ok()?;
        let u32_at =
            |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default());
        let u64_at =
            |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default());
        let fits = &head[..8] == MAGIC
            && u32_at(&head, 8) == VERSION
            && u32_at(&head, 12) as usize == RECORD
            && u32_at(&head, 16) as usize == PER_BLOCK
            && head[20..52] == snap.0
            && u64_at(&head, 52) == count
            && count <= MAX_POSITIONS;
        if !fits {
            return None;
        }
        let packs = u64_at(&head, 60);
        let blocks = count.div_ceil(PER_BLOCK as u64);
        // The records, then the trailer: the packs, the blocks' sums, and the
        // checksum of the header and the trailer, read and checked at once.
        let trailer_at = HEAD as u64 + count * RECORD as u64;
        let trailer = packs
            .checked_mul(PACK as u64)?
            .checked_add(blocks * 8 + 32)?;
        if trailer_at.checked_add(trailer)? != len || trailer > len {
            return None;
        }
        let mut all = vec![0u8; trailer as usize];
        file.read_exact_at(&mut all, trailer_at).ok()?;
        let (body, sum) = all.split_at(trailer as usize - 32);
        let mut h = blake3::Hasher::new();
        h.update(&head);
        h.update(body);
        if h.finalize().as_bytes()[..] != sum[..] {
            return None;
        }
        let mut table = PackTable::default();
        let mut at = 0;
        for _ in 0..packs {
            let p = &body[at..at + PACK];
            let dict = match p[40] {
                0 => None,
                1 => Some(Id(p[41..73].try_into().ok()?)),
                _ => return None,
            };
            let pack = PackRef {
                id: Id(p[..32].try_into().ok()?),
                len: u64_at(p, 32),
                dict,
            };
            // Numbered in order: a pack listed twice is not a file this wrote.
            let next = table.count();
            if table.add(&pack) as usize != next {
                return None;
            }
            at += PACK;
        }
        let sums = body[at..]
            .chunks_exact(8)
            .map(|c| c.try_into().unwrap_or_default())
            .collect();
        Some(PositionFile {
            file,
            path,
            count: count as usize,
            packs: table,
            sums,
            records_at: HEAD as u64,
            block: Mutex::new(None),
        })
    }

    /// The packs the records number.
    pub(crate) fn packs(&self) -> &PackTable {
        &self.packs
    }

    /// Deletes the file (a block failed its check, or it led to a missing pack).
    pub(crate) fn discard(&self) {
        let _ = std::fs::remove_file(&self.path);
    }

    /// Record `i`, from its block (read and checked once in a row).
    fn record(&self, i: usize) -> Option<[u8; RECORD]> {
        let b = i / PER_BLOCK;
        let mut slot = self.block.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.as_ref().is_none_or(|(n, _)| *n != b) {
            let first = b * PER_BLOCK;
            let n = (self.count - first).min(PER_BLOCK);
            let mut buf = vec![0u8; n * RECORD];
            let at = self.records_at + (first * RECORD) as u64;
            self.file.read_exact_at(&mut buf, at).ok()?;
            if blake3::hash(&buf).as_bytes()[..8] != self.sums.get(b)?[..] {
                return None;
            }
            *slot = Some((b, buf));
        }
        let (_, buf) = slot.as_ref()?;
        let at = (i % PER_BLOCK) * RECORD;
        buf.get(at..at + RECORD)?.try_into().ok()
    }
}

impl Positions for PositionFile {
    fn len(&self) -> usize {
        self.count
    }

    /// `None` for a block that fails its check, or a record no writer makes:
    /// the reader then resolves through the store.
    fn at(&self, i: usize) -> Option<Position> {
        if i >= self.count {
            return None;
        }
        let r = self.record(i)?;
        let u32_at = |at: usize| u32::from_le_bytes(r[at..at + 4].try_into().unwrap_or_default());
        let pack = u32_at(32);
        if pack == ZERO {
            let blank = r[..32].iter().chain(&r[36..]).all(|&b| b == 0);
            return blank.then_some(Position::Zero);
        }
        if pack as usize >= self.packs.count() || r[49..52] != [0, 0, 0] {
            return None;
        }
        let slot = Slot {
            offset: u32_at(36),
            stored_len: u32_at(40),
            raw_len: u32_at(44),
            codec: Codec::from_u8(r[48]).ok()?,
        };
        let id = Id(r[..32].try_into().ok()?);
        Some(Position::Stored(
            id,
            Location {
                pack,
                entry: slot,
                list: 0,
                ordinal: 0,
            },
        ))
    }
}

/// Snapshots of fewer positions get no file: resolving them is quick anyway
/// (64 MiB of 4 KiB chunks).
const MIN_POSITIONS: usize = 1 << 14;

/// Whether a snapshot of `count` positions gets a file (every size in the
/// unit tests).
fn worth_a_file(count: usize) -> bool {
    cfg!(test) || count >= MIN_POSITIONS
}

/// Writes the positions of `snap` (all of them stored or zero, none unlocated)
/// to `dir`, then removes all but the [`KEEP`] newest files there. Best effort:
/// a cache that cannot be written changes nothing but the next query's time.
/// The records are streamed (a 1 GiB image's are 13.6 MB), the trailer last.
pub(crate) fn write(
    dir: &Path,
    snap: &SnapshotId,
    positions: &dyn Positions,
    packs: &PackTable,
) -> Option<()> {
    if !worth_a_file(positions.len()) {
        return None;
    }
    write_file(dir, snap, positions, packs)
}

/// [`write`], whatever the snapshot's size.
fn write_file(
    dir: &Path,
    snap: &SnapshotId,
    positions: &dyn Positions,
    packs: &PackTable,
) -> Option<()> {
    let count = positions.len();
    crate::create_private_dirs(dir).ok()?;
    // A temporary name, renamed whole: a reader never sees half a file (not
    // fsynced: a file torn by a crash fails its checks and is written again).
    let mut tmp = tempfile::NamedTempFile::new_in(dir).ok()?;
    let mut head = Vec::with_capacity(HEAD);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&VERSION.to_le_bytes());
    head.extend_from_slice(&(RECORD as u32).to_le_bytes());
    head.extend_from_slice(&(PER_BLOCK as u32).to_le_bytes());
    head.extend_from_slice(&snap.0);
    head.extend_from_slice(&(count as u64).to_le_bytes());
    head.extend_from_slice(&(packs.count() as u64).to_le_bytes());
    let mut out = std::io::BufWriter::with_capacity(256 << 10, tmp.as_file_mut());
    out.write_all(&head).ok()?;
    let mut sums = Vec::with_capacity(count.div_ceil(PER_BLOCK) * 8);
    let mut block = blake3::Hasher::new();
    for i in 0..count {
        let mut r = [0u8; RECORD];
        match positions.at(i)? {
            Position::Zero => r[32..36].copy_from_slice(&ZERO.to_le_bytes()),
            Position::Stored(id, loc) => {
                r[..32].copy_from_slice(&id.0);
                r[32..36].copy_from_slice(&loc.pack.to_le_bytes());
                r[36..40].copy_from_slice(&loc.entry.offset.to_le_bytes());
                r[40..44].copy_from_slice(&loc.entry.stored_len.to_le_bytes());
                r[44..48].copy_from_slice(&loc.entry.raw_len.to_le_bytes());
                r[48] = loc.entry.codec as u8;
            }
            Position::Unlocated(_) => return None,
        }
        out.write_all(&r).ok()?;
        block.update(&r);
        if (i + 1) % PER_BLOCK == 0 || i + 1 == count {
            sums.extend_from_slice(&block.finalize().as_bytes()[..8]);
            block = blake3::Hasher::new();
        }
    }
    let mut trailer = Vec::with_capacity(packs.count() * PACK + sums.len() + 32);
    for n in 0..packs.count() as u32 {
        let p = packs.pack_ref(n);
        trailer.extend_from_slice(&p.id.0);
        trailer.extend_from_slice(&p.len.to_le_bytes());
        match p.dict {
            Some(d) => {
                trailer.push(1);
                trailer.extend_from_slice(&d.0);
            }
            None => trailer.extend_from_slice(&[0u8; 33]),
        }
    }
    trailer.extend_from_slice(&sums);
    let mut h = blake3::Hasher::new();
    h.update(&head);
    h.update(&trailer);
    trailer.extend_from_slice(h.finalize().as_bytes());
    out.write_all(&trailer).ok()?;
    out.flush().ok()?;
    drop(out);
    tmp.persist(dir.join(snap.to_hex())).ok()?;
    prune(dir);
    Some(())
}

/// Removes all but the [`KEEP`] most recently written files of `dir`.
fn prune(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            Some((e.metadata().ok()?.modified().ok()?, e.path()))
        })
        .collect();
    if files.len() <= KEEP {
        return;
    }
    files.sort();
    for (_, path) in &files[..files.len() - KEEP] {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::fuzz::sample;
    use super::*;

    fn same(a: Option<Position>, b: Option<Position>) -> bool {
        match (a, b) {
            (Some(Position::Stored(x, l)), Some(Position::Stored(y, m))) => {
                x == y && l.pack == m.pack && l.entry == m.entry
            }
            (a, b) => a == b,
        }
    }

    /// A file written reads back every position and the packs; one for another
    /// snapshot or another count is refused; every single-byte flip is either
    /// refused at open or at the record it damages (never a wrong position),
    /// and a file refused at open is deleted.
    #[test]
    fn round_trip_and_every_flip_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let snap = Id([7; 32]);
        let (pos, packs) = sample(150);
        write(dir.path(), &snap, &pos, &packs).unwrap();
        let f = PositionFile::open(dir.path(), &snap, 150).unwrap();
        assert_eq!(f.packs().count(), 3);
        assert_eq!(f.packs().dict(1), Some(Id([9; 32])));
        for i in 0..150 {
            assert!(same(f.at(i), pos.at(i)), "position {i}");
        }
        assert!(f.at(150).is_none());
        assert!(PositionFile::open(dir.path(), &snap, 151).is_none());
        let path = dir.path().join(snap.to_hex());
        assert!(!path.exists(), "a refused file is deleted");
        write(dir.path(), &snap, &pos, &packs).unwrap();
        let good = std::fs::read(&path).unwrap();
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x01;
            std::fs::write(&path, &bad).unwrap();
            if let Some(f) = PositionFile::open(dir.path(), &snap, 150) {
                for i in 0..150 {
                    let got = f.at(i);
                    assert!(
                        got.is_none() || same(got, pos.at(i)),
                        "byte {at}, position {i}"
                    );
                }
            }
        }
        // Cut short: refused.
        for len in [0, HEAD, good.len() - 1] {
            std::fs::write(&path, &good[..len]).unwrap();
            assert!(PositionFile::open(dir.path(), &snap, 150).is_none());
        }
    }

    /// Only the newest files are kept.
    #[test]
    fn only_the_newest_files_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (pos, packs) = sample(10);
        for k in 0..KEEP as u8 + 3 {
            write(dir.path(), &Id([k; 32]), &pos, &packs).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), KEEP);
        assert!(PositionFile::open(dir.path(), &Id([KEEP as u8 + 2; 32]), 10).is_some());
        assert!(PositionFile::open(dir.path(), &Id([0; 32]), 10).is_none());
    }
}

/// The `cache-positions` fuzz target: a position file's decoder (`lookup`,
/// then every record), its sealing, and its seeds and hostile inputs.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod fuzz {
    use super::*;
    use crate::format::{FormatError, Result};
    use crate::index::chunk_index::Slot;

    /// The snapshot every fuzzed file is read as.
    const SNAP: Id = Id([0x5e; 32]);

    fn invalid(why: &str) -> FormatError {
        FormatError::Invalid(format!("position file: {why}"))
    }

    /// Reads `data` as the position file of a snapshot of the positions its
    /// header claims: `Ok` when it opens and every record reads (at most 65,536).
    pub(crate) fn run(data: &[u8]) -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| invalid(&e.to_string()))?;
        std::fs::write(dir.path().join(SNAP.to_hex()), data)
            .map_err(|e| invalid(&e.to_string()))?;
        let count = data
            .get(52..60)
            .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or_default()));
        match lookup(dir.path(), &SNAP, count) {
            Lookup::File(f) => {
                for i in 0..f.count.min(1 << 16) {
                    f.at(i)
                        .ok_or_else(|| invalid(&format!("record {i} refused")))?;
                }
                Ok(())
            }
            Lookup::Seen => Err(invalid("empty")),
            Lookup::Unknown => Err(invalid("refused")),
        }
    }

    /// `data` with its block sums and checksum made right, where its header's
    /// counts fit its length (else unchanged).
    pub(crate) fn seal(data: &[u8]) -> Vec<u8> {
        let mut out = data.to_vec();
        let u64_at =
            |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default());
        if out.len() < HEAD {
            return out;
        }
        let (count, packs) = (u64_at(&out, 52), u64_at(&out, 60));
        let blocks = count.div_ceil(PER_BLOCK as u64);
        let Some(trailer_at) = count
            .checked_mul(RECORD as u64)
            .and_then(|r| r.checked_add(HEAD as u64))
        else {
            return out;
        };
        let sums_at = packs
            .checked_mul(PACK as u64)
            .and_then(|p| p.checked_add(trailer_at));
        let end = sums_at.and_then(|s| s.checked_add(blocks * 8 + 32));
        let (Some(sums_at), Some(end)) = (sums_at, end) else {
            return out;
        };
        if end != out.len() as u64 {
            return out;
        }
        let (trailer_at, sums_at) = (trailer_at as usize, sums_at as usize);
        for b in 0..blocks as usize {
            let from = HEAD + b * PER_BLOCK * RECORD;
            let to = (from + PER_BLOCK * RECORD).min(trailer_at);
            let sum = blake3::hash(&out[from..to]);
            out[sums_at + b * 8..sums_at + b * 8 + 8].copy_from_slice(&sum.as_bytes()[..8]);
        }
        let mut h = blake3::Hasher::new();
        h.update(&out[..HEAD]);
        h.update(&out[trailer_at..out.len() - 32]);
        let n = out.len();
        out[n - 32..].copy_from_slice(h.finalize().as_bytes());
        out
    }

    /// Positions over 3 packs (one with a dictionary), every fifth a zero chunk.
    pub(super) struct List(Vec<Position>);

    impl Positions for List {
        fn len(&self) -> usize {
            self.0.len()
        }
        fn at(&self, i: usize) -> Option<Position> {
            self.0.get(i).copied()
        }
    }

    /// `n` such positions, and their packs.
    pub(super) fn sample(n: usize) -> (List, PackTable) {
        let mut packs = PackTable::default();
        for k in 0..3u8 {
            packs.add(&PackRef {
                id: Id([k + 1; 32]),
                len: 1 << 20,
                dict: (k == 1).then_some(Id([9; 32])),
            });
        }
        let list = (0..n)
            .map(|i| match i % 5 {
                2 => Position::Zero,
                _ => Position::Stored(
                    Id(*blake3::hash(&(i as u64).to_le_bytes()).as_bytes()),
                    Location {
                        pack: (i % 3) as u32,
                        entry: Slot {
                            offset: 32 + i as u32 * 100,
                            stored_len: 90,
                            raw_len: 4096,
                            codec: if i % 3 == 1 {
                                Codec::ZstdDict
                            } else {
                                Codec::Zstd
                            },
                        },
                        list: 0,
                        ordinal: 0,
                    },
                ),
            })
            .collect();
        (List(list), packs)
    }

    /// A valid file of `n` positions.
    fn file(n: usize) -> Vec<u8> {
        let (list, packs) = sample(n);
        let dir = tempfile::tempdir().ok();
        dir.as_ref()
            .and_then(|d| {
                write_file(d.path(), &SNAP, &list, &packs)?;
                std::fs::read(d.path().join(SNAP.to_hex())).ok()
            })
            .unwrap_or_default()
    }

    /// Named files: (name, bytes).
    type Named = Vec<(&'static str, Vec<u8>)>;

    /// (seeds, hostile inputs).
    pub(crate) fn files() -> (Named, Named) {
        let small = file(5);
        let seeds = vec![("positions-5", small.clone()), ("positions-200", file(200))];
        let record = |i: usize| HEAD + i * RECORD;
        let patch = |at: usize, bytes: &[u8]| {
            let mut f = small.clone();
            f[at..at + bytes.len()].copy_from_slice(bytes);
            seal(&f)
        };
        let hostile = vec![
            // A record numbering a pack the table lacks.
            (
                "hostile-pack-out-of-table",
                patch(record(0) + 32, &7u32.to_le_bytes()),
            ),
            // A zero chunk's record with an id.
            ("hostile-zero-with-id", patch(record(2), &[1])),
            // A codec no build has.
            ("hostile-codec", patch(record(0) + 48, &[9])),
            // Padding that is not zero.
            ("hostile-padding", patch(record(1) + 50, &[1])),
            // More positions than the file holds.
            ("hostile-count", patch(52, &6u64.to_le_bytes())),
            // A pack listed twice.
            ("hostile-pack-twice", {
                let mut f = small.clone();
                let t = record(5);
                let (a, b) = f.split_at_mut(t + PACK);
                b[..PACK].copy_from_slice(&a[t..t + PACK]);
                seal(&f)
            }),
        ];
        (seeds, hostile)
    }

    #[test]
    fn seeds_open_and_hostile_files_are_refused() {
        let (seeds, hostile) = files();
        for (name, bytes) in &seeds {
            assert!(!bytes.is_empty(), "{name}");
            assert!(run(bytes).is_ok(), "{name}: {:?}", run(bytes));
            assert_eq!(seal(bytes), *bytes, "{name}");
        }
        for (name, bytes) in &hostile {
            assert!(run(bytes).is_err(), "{name} was accepted");
        }
    }
}

//! The WAL of a pinned snapshot: which page's newest version lies in which frame.
//!
//! A direct capture (direct.rs) reads the database file itself and takes the
//! pages the snapshot sees in the WAL from there. This module decodes the two
//! structures that say which frames those are, both documented by SQLite
//! (<https://www.sqlite.org/walformat.html>, <https://www.sqlite.org/fileformat2.html#walformat>):
//!
//! - the wal-index header (the first 136 bytes of the `-shm` file, native byte
//!   order, two copies of the header and then the checkpoint information);
//! - the WAL file: a 32-byte header, then frames of a 24-byte header and a page,
//!   each with a running checksum seeded by the one before it.
//!
//! Nothing here is trusted: a header whose copies differ or whose checksum is
//! wrong, a frame with other salts or a broken checksum chain, a chain that does
//! not end in the checksum the snapshot's header recorded, all make the caller
//! fall back to SQLite's backup API.

use std::collections::HashMap;

/// Bytes of the wal-index the capture reads: two header copies and `nBackfill`.
pub(crate) const INDEX_HEADER_BYTES: usize = 2 * HEADER_COPY + 4;
/// One copy of the wal-index header (`WalIndexHdr`).
const HEADER_COPY: usize = 48;
/// The WAL file's own header.
pub(crate) const WAL_HEADER: u64 = 32;
/// A frame's header, before its page.
pub(crate) const FRAME_HEADER: u64 = 24;
/// The WAL header's magic number; its low bit says the checksums are big-endian.
const WAL_MAGIC: u32 = 0x377f_0682;
/// The only WAL format version there is.
const WAL_VERSION: u32 = 3_007_000;

/// A snapshot's view of the WAL, from the wal-index header it was pinned at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexHeader {
    /// The raw copy, compared whole to prove no commit came between two reads.
    raw: [u8; HEADER_COPY],
    /// Frames of the WAL the snapshot sees (1-based, the last committed one).
    pub max_frame: u32,
    /// The database's size in pages at that frame (0: the file's size).
    pub pages: u32,
    /// The page size the WAL was written with; 0 when the WAL holds no frame
    /// (SQLite's recovery of an empty WAL leaves it unset).
    pub page_size: u32,
    /// The checksum chain's value after frame `max_frame`.
    frame_checksum: [u32; 2],
    /// The WAL header's salts, as stored (big-endian bytes).
    salt: [u8; 8],
    big_endian_checksums: bool,
}

/// What one read of the wal-index says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexState {
    pub header: IndexHeader,
    /// Frames already copied into the database file (`nBackfill`).
    pub backfilled: u32,
}

impl IndexState {
    /// Decodes the first [`INDEX_HEADER_BYTES`] of the wal-index, or `None` if
    /// the two copies differ (a writer was updating it), the header was never
    /// initialised, or its checksum is wrong.
    pub(crate) fn parse(bytes: &[u8; INDEX_HEADER_BYTES]) -> Option<IndexState> {
        let (first, rest) = bytes.split_at(HEADER_COPY);
        let (second, info) = rest.split_at(HEADER_COPY);
        if first != second {
            return None;
        }
        let ne = |at: usize| u32::from_ne_bytes(word(first, at));
        let is_init = first[12];
        if ne(0) != WAL_VERSION || is_init != 1 {
            return None;
        }
        // The header's own checksum covers its first 40 bytes, in native order.
        if checksum(&first[..40], [0, 0], cfg!(target_endian = "big")) != [ne(40), ne(44)] {
            return None;
        }
        let size = u16::from_ne_bytes([first[14], first[15]]) as u32;
        // 65536 does not fit in 16 bits: SQLite stores it as 1.
        let page_size = match size {
            1 => 65536,
            s => s,
        };
        // SQLite's page sizes: powers of two from 512 to 65536. An index
        // recovered from an empty WAL (a database no connection had open) has
        // none, and no frame to read with one.
        let empty = page_size == 0 && ne(16) == 0;
        if !empty && (!page_size.is_power_of_two() || !(512..=65536).contains(&page_size)) {
            return None;
        }
        let mut raw = [0; HEADER_COPY];
        raw.copy_from_slice(first);
        let mut salt = [0; 8];
        salt.copy_from_slice(&first[32..40]);
        Some(IndexState {
            header: IndexHeader {
                raw,
                max_frame: ne(16),
                pages: ne(20),
                page_size,
                frame_checksum: [ne(24), ne(28)],
                salt,
                big_endian_checksums: first[13] != 0,
            },
            backfilled: u32::from_ne_bytes(word(info, 0)),
        })
    }
}

impl IndexHeader {
    /// Whether `other` is exactly this header: no commit, checkpoint restart or
    /// recovery came between the two reads.
    pub(crate) fn same(&self, other: &IndexHeader) -> bool {
        self.raw == other.raw
    }

    /// Where in the WAL this snapshot ends: what the next capture checks the
    /// WAL against to learn which pages changed since (guide.rs).
    pub(crate) fn position(&self) -> WalPosition {
        WalPosition {
            salt: self.salt,
            max_frame: self.max_frame,
            checksum: self.frame_checksum,
            big_endian: self.big_endian_checksums,
        }
    }
}

/// A point in one WAL's history: the WAL's salts (which a restart changes),
/// a frame of it, and the checksum chain's value after that frame (which
/// names every frame up to it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WalPosition {
    pub salt: [u8; 8],
    pub max_frame: u32,
    pub checksum: [u32; 2],
    pub big_endian: bool,
}

fn word(b: &[u8], at: usize) -> [u8; 4] {
    [b[at], b[at + 1], b[at + 2], b[at + 3]]
}

/// SQLite's WAL checksum: over 32-bit words taken in pairs, in the given order.
fn checksum(data: &[u8], seed: [u32; 2], big_endian: bool) -> [u32; 2] {
    let [mut s0, mut s1] = seed;
    for pair in data.chunks_exact(8) {
        let (a, b) = (word(pair, 0), word(pair, 4));
        let (x0, x1) = if big_endian {
            (u32::from_be_bytes(a), u32::from_be_bytes(b))
        } else {
            (u32::from_le_bytes(a), u32::from_le_bytes(b))
        };
        s0 = s0.wrapping_add(x0).wrapping_add(s1);
        s1 = s1.wrapping_add(x1).wrapping_add(s0);
    }
    [s0, s1]
}

/// Why a WAL could not be used for a snapshot (the capture then falls back).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum WalMismatch {
    #[error("the WAL header is not a valid one")]
    Header,
    #[error("the WAL's page size {wal} is not the database's {db}")]
    PageSize { wal: u32, db: u32 },
    #[error("the WAL's salts are not the wal-index's")]
    Salt,
    #[error("frame {0} does not belong to the snapshot (salt, checksum or page number)")]
    Frame(u32),
    #[error("the frames' checksum chain does not end where the wal-index says")]
    Chain,
}

/// Where the newest version of each page the snapshot sees in the WAL lies.
#[derive(Debug, Default)]
pub(crate) struct WalPages {
    /// (page number, byte offset of the page in the WAL file), by page number.
    pages: Vec<(u32, u64)>,
    /// Bytes of a frame (its header and page).
    frame_len: u64,
    /// The checksum chain's value after the frame `build` was asked to
    /// remember (0: after the WAL's header), if the WAL reached it.
    remembered: Option<[u32; 2]>,
    /// The least database size (pages) a commit after that frame left.
    least_size_after: Option<u32>,
}

impl WalPages {
    /// Reads frames 1..=`header.max_frame` of the WAL through `read` (which must
    /// fill the buffer with the bytes at the offset, or fail), checks every
    /// frame's salts and the checksum chain against `header`, and returns the
    /// newest frame of each page, and the chain's value after frame `remember`
    /// ([`WalPages::remembered`]).
    ///
    /// `read` is called with consecutive whole frames, `buf_frames` at a time.
    pub(crate) fn build<E>(
        header: &IndexHeader,
        page_size: u32,
        buf_frames: u32,
        remember: Option<u32>,
        mut read: impl FnMut(u64, &mut [u8]) -> Result<(), E>,
    ) -> Result<Result<WalPages, WalMismatch>, E> {
        if header.max_frame == 0 {
            return Ok(Ok(WalPages::default()));
        }
        if header.page_size != page_size {
            return Ok(Err(WalMismatch::PageSize {
                wal: header.page_size,
                db: page_size,
            }));
        }
        let mut head = [0u8; WAL_HEADER as usize];
        read(0, &mut head)?;
        let be = |at: usize| u32::from_be_bytes(word(&head, at));
        let magic = be(0);
        if magic & !1 != WAL_MAGIC || be(4) != WAL_VERSION {
            return Ok(Err(WalMismatch::Header));
        }
        let big_endian = magic & 1 == 1;
        if big_endian != header.big_endian_checksums
            || checksum(&head[..24], [0, 0], big_endian) != [be(24), be(28)]
        {
            return Ok(Err(WalMismatch::Header));
        }
        if be(8) != page_size {
            return Ok(Err(WalMismatch::PageSize {
                wal: be(8),
                db: page_size,
            }));
        }
        if head[16..24] != header.salt {
            return Ok(Err(WalMismatch::Salt));
        }
        let frame_len = FRAME_HEADER + page_size as u64;
        let mut sum = [be(24), be(28)];
        let mut remembered = (remember == Some(0)).then_some(sum);
        let mut least_size_after: Option<u32> = None;
        let mut newest: HashMap<u32, u64> = HashMap::new();
        let per_read = buf_frames.max(1);
        let mut buf = vec![0u8; (frame_len * per_read.min(header.max_frame) as u64) as usize];
        let mut frame = 1u32;
        while frame <= header.max_frame {
            let n = per_read.min(header.max_frame - frame + 1);
            let start = WAL_HEADER + (frame - 1) as u64 * frame_len;
            let bytes = &mut buf[..(n as u64 * frame_len) as usize];
            read(start, bytes)?;
            for (i, f) in bytes.chunks_exact(frame_len as usize).enumerate() {
                let number = frame + i as u32;
                let fbe = |at: usize| u32::from_be_bytes(word(f, at));
                let (page, size_after) = (fbe(0), fbe(4));
                if page == 0 || f[8..16] != header.salt {
                    return Ok(Err(WalMismatch::Frame(number)));
                }
                sum = checksum(&f[..8], sum, big_endian);
                sum = checksum(&f[FRAME_HEADER as usize..], sum, big_endian);
                if sum != [fbe(16), fbe(20)] {
                    return Ok(Err(WalMismatch::Frame(number)));
                }
                let offset = start + i as u64 * frame_len + FRAME_HEADER;
                newest.insert(page, offset);
                if remember == Some(number) {
                    remembered = Some(sum);
                }
                if size_after != 0 && remember.is_some_and(|r| number > r) {
                    least_size_after =
                        Some(least_size_after.map_or(size_after, |l| l.min(size_after)));
                }
            }
            frame += n;
        }
        if sum != header.frame_checksum {
            return Ok(Err(WalMismatch::Chain));
        }
        let mut pages: Vec<(u32, u64)> = newest.into_iter().collect();
        pages.sort_unstable();
        Ok(Ok(WalPages {
            pages,
            frame_len,
            remembered,
            least_size_after,
        }))
    }

    /// The chain's value after the frame `build` was asked to remember.
    pub(crate) fn remembered(&self) -> Option<[u32; 2]> {
        self.remembered
    }

    /// The least database size, in pages, that a commit after the remembered
    /// frame left (`None`: no commit after it).
    pub(crate) fn least_size_after(&self) -> Option<u32> {
        self.least_size_after
    }

    /// The pages whose newest frame comes after frame `frame`, in order: with
    /// frames only appended since then, every page that changed.
    pub(crate) fn pages_after(&self, frame: u32) -> Vec<u32> {
        let first = WAL_HEADER + frame as u64 * self.frame_len + FRAME_HEADER;
        self.pages
            .iter()
            .filter(|&&(_, at)| at >= first)
            .map(|&(p, _)| p)
            .collect()
    }

    /// The pages in the WAL whose numbers are in `first..=last`, in order.
    pub(crate) fn in_range(&self, first: u32, last: u32) -> &[(u32, u64)] {
        let from = self.pages.partition_point(|&(p, _)| p < first);
        let to = self.pages.partition_point(|&(p, _)| p <= last);
        &self.pages[from..to]
    }

    pub(crate) fn len(&self) -> usize {
        self.pages.len()
    }
}

#[cfg(any(test, feature = "fuzzing"))]
/// A WAL of `frames` (page, fill byte) with valid salts and checksums, and
/// the wal-index header that describes it.
pub(crate) fn make_wal(
    page_size: u32,
    frames: &[(u32, u8)],
    big_endian: bool,
) -> (Vec<u8>, [u8; INDEX_HEADER_BYTES]) {
    make_wal_of(page_size, frames, big_endian, 10)
}

#[cfg(any(test, feature = "fuzzing"))]
/// [`make_wal`] of a database of `db_pages` pages (what every commit leaves).
pub(crate) fn make_wal_of(
    page_size: u32,
    frames: &[(u32, u8)],
    big_endian: bool,
    db_pages: u32,
) -> (Vec<u8>, [u8; INDEX_HEADER_BYTES]) {
    let mut wal = Vec::new();
    let magic = WAL_MAGIC | big_endian as u32;
    for v in [magic, WAL_VERSION, page_size, 7, 0x1122_3344, 0x5566_7788] {
        wal.extend_from_slice(&v.to_be_bytes());
    }
    let mut sum = checksum(&wal, [0, 0], big_endian);
    wal.extend_from_slice(&sum[0].to_be_bytes());
    wal.extend_from_slice(&sum[1].to_be_bytes());
    for &(page, fill) in frames {
        // Every frame commits (its own transaction), so a shorter WAL is a prefix.
        let commit = db_pages;
        let mut head = Vec::new();
        head.extend_from_slice(&page.to_be_bytes());
        head.extend_from_slice(&commit.to_be_bytes());
        let data = vec![fill; page_size as usize];
        sum = checksum(&head, sum, big_endian);
        sum = checksum(&data, sum, big_endian);
        wal.extend_from_slice(&head);
        wal.extend_from_slice(&0x1122_3344u32.to_be_bytes());
        wal.extend_from_slice(&0x5566_7788u32.to_be_bytes());
        wal.extend_from_slice(&sum[0].to_be_bytes());
        wal.extend_from_slice(&sum[1].to_be_bytes());
        wal.extend_from_slice(&data);
    }
    let mut h = [0u8; HEADER_COPY];
    h[0..4].copy_from_slice(&WAL_VERSION.to_ne_bytes());
    h[8..12].copy_from_slice(&(frames.len() as u32).to_ne_bytes());
    h[12] = 1;
    h[13] = big_endian as u8;
    let stored = if page_size == 65536 {
        1
    } else {
        page_size as u16
    };
    h[14..16].copy_from_slice(&stored.to_ne_bytes());
    h[16..20].copy_from_slice(&(frames.len() as u32).to_ne_bytes());
    h[20..24].copy_from_slice(&db_pages.to_ne_bytes());
    h[24..28].copy_from_slice(&sum[0].to_ne_bytes());
    h[28..32].copy_from_slice(&sum[1].to_ne_bytes());
    h[32..40].copy_from_slice(&wal[16..24]);
    let own = checksum(&h[..40], [0, 0], cfg!(target_endian = "big"));
    h[40..44].copy_from_slice(&own[0].to_ne_bytes());
    h[44..48].copy_from_slice(&own[1].to_ne_bytes());
    let mut index = [0u8; INDEX_HEADER_BYTES];
    index[..48].copy_from_slice(&h);
    index[48..96].copy_from_slice(&h);
    (wal, index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    fn build(
        wal: &[u8],
        index: &[u8; INDEX_HEADER_BYTES],
        page_size: u32,
    ) -> Result<WalPages, WalMismatch> {
        let header = IndexState::parse(index).expect("valid index").header;
        WalPages::build(&header, page_size, 3, None, |at, buf: &mut [u8]| {
            let at = at as usize;
            match wal.get(at..at + buf.len()) {
                Some(b) => {
                    buf.copy_from_slice(b);
                    Ok(())
                }
                None => Err(()),
            }
        })
        .expect("read in bounds")
    }

    #[test]
    fn the_pages_after_a_frame_and_the_chain_there_are_what_a_shorter_wal_ended_with() {
        let frames = [(3, 1), (1, 2), (3, 3), (9, 4), (1, 5), (2, 6), (3, 7)];
        let (wal, index) = make_wal(512, &frames, false);
        let header = IndexState::parse(&index).unwrap().header;
        let read = |at: u64, buf: &mut [u8]| -> Result<(), ()> {
            buf.copy_from_slice(&wal[at as usize..at as usize + buf.len()]);
            Ok(())
        };
        for k in 0..=frames.len() as u32 {
            let pages = WalPages::build(&header, 512, 2, Some(k), read)
                .unwrap()
                .unwrap();
            // The WAL of the first k frames alone: its index header holds the
            // chain's value after frame k, and its salts.
            let (_, shorter) = make_wal(512, &frames[..k as usize], false);
            let then = IndexState::parse(&shorter).unwrap().header.position();
            assert_eq!(pages.remembered(), Some(then.checksum), "after frame {k}");
            assert_eq!(then.salt, header.position().salt);
            let mut want: Vec<u32> = frames[k as usize..].iter().map(|f| f.0).collect();
            want.sort_unstable();
            want.dedup();
            assert_eq!(pages.pages_after(k), want, "after frame {k}");
            // Every frame of make_wal's commits, leaving 10 pages.
            let commits_after = (k as usize) < frames.len();
            assert_eq!(pages.least_size_after(), commits_after.then_some(10));
        }
        let none = WalPages::build(&header, 512, 2, None, read)
            .unwrap()
            .unwrap();
        assert_eq!(none.remembered(), None);
        let past = WalPages::build(&header, 512, 2, Some(8), read)
            .unwrap()
            .unwrap();
        assert_eq!(past.remembered(), None, "a frame the WAL does not reach");
    }

    #[test]
    fn the_newest_frame_of_each_page_is_found() {
        for big_endian in [false, true] {
            let frames = [(3, 1), (1, 2), (3, 3), (9, 4), (1, 5), (2, 6), (3, 7)];
            let (wal, index) = make_wal(512, &frames, big_endian);
            let pages = build(&wal, &index, 512).unwrap();
            let at = |frame: u64| WAL_HEADER + (frame - 1) * (FRAME_HEADER + 512) + FRAME_HEADER;
            assert_eq!(
                pages.in_range(1, 100),
                &[(1, at(5)), (2, at(6)), (3, at(7)), (9, at(4))]
            );
            assert_eq!(pages.in_range(2, 3), &[(2, at(6)), (3, at(7))]);
            assert_eq!(pages.in_range(4, 8), &[]);
            assert_eq!(wal[at(7) as usize], 7, "the offset is the page's");
        }
    }

    #[test]
    fn every_flipped_byte_of_the_wal_or_its_index_is_refused() {
        let (wal, index) = make_wal(512, &[(1, 1), (2, 2), (1, 3)], false);
        for i in 0..wal.len() {
            let mut bad = wal.clone();
            bad[i] ^= 0x40;
            assert!(build(&bad, &index, 512).is_err(), "WAL byte {i}");
        }
        for i in 0..2 * HEADER_COPY {
            let mut one = index;
            one[i] ^= 0x40;
            assert!(IndexState::parse(&one).is_none(), "one copy, byte {i}");
        }
        for i in 0..HEADER_COPY {
            let mut both = index;
            both[i] ^= 0x40;
            both[i + HEADER_COPY] ^= 0x40;
            assert!(IndexState::parse(&both).is_none(), "both copies, byte {i}");
        }
    }

    #[test]
    fn an_index_of_fewer_frames_than_the_wal_holds_is_a_snapshot_of_its_past() {
        let (longer, _) = make_wal(512, &[(1, 1), (2, 2), (1, 9)], false);
        let (shorter, index) = make_wal(512, &[(1, 1), (2, 2)], false);
        let pages = build(&longer, &index, 512).unwrap();
        assert_eq!(pages.in_range(1, 1), &[(1, WAL_HEADER + FRAME_HEADER)]);
        // An index of more frames than the file holds: the read fails.
        let (_, index3) = make_wal(512, &[(1, 1), (2, 2), (1, 9)], false);
        let header = IndexState::parse(&index3).unwrap().header;
        let r = WalPages::build(&header, 512, 3, None, |at, buf: &mut [u8]| {
            let at = at as usize;
            let b = shorter.get(at..at + buf.len()).ok_or(())?;
            buf.copy_from_slice(b);
            Ok::<(), ()>(())
        });
        assert!(r.is_err());
    }

    #[test]
    fn a_wal_of_another_page_size_or_salt_is_refused() {
        let (wal, index) = make_wal(1024, &[(1, 1)], false);
        assert_eq!(
            build(&wal, &index, 512).unwrap_err(),
            WalMismatch::PageSize { wal: 1024, db: 512 }
        );
        let (other, _) = make_wal(1024, &[(1, 1)], false);
        let mut salted = other.clone();
        salted[16] ^= 1;
        // Re-seal the header so only the salt differs from the index's.
        let sum = checksum(&salted[..24], [0, 0], false);
        salted[24..28].copy_from_slice(&sum[0].to_be_bytes());
        salted[28..32].copy_from_slice(&sum[1].to_be_bytes());
        assert_eq!(build(&salted, &index, 1024).unwrap_err(), WalMismatch::Salt);
        assert!(build(&wal, &index, 1024).is_ok());
    }

    #[test]
    fn a_real_wal_index_and_wal_decode() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("w.db");
        let c = Connection::open(&db).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;
             CREATE TABLE t(x); INSERT INTO t VALUES (randomblob(3000));
             INSERT INTO t VALUES (randomblob(3000));",
        )
        .unwrap();
        let shm = std::fs::read(dir.path().join("w.db-shm")).unwrap();
        let wal = std::fs::read(dir.path().join("w.db-wal")).unwrap();
        let mut index = [0u8; INDEX_HEADER_BYTES];
        index.copy_from_slice(&shm[..INDEX_HEADER_BYTES]);
        let state = IndexState::parse(&index).expect("SQLite's own index header");
        assert_eq!(state.header.page_size, 4096);
        assert_eq!(state.backfilled, 0);
        let frames = (wal.len() as u64 - WAL_HEADER) / (FRAME_HEADER + 4096);
        assert_eq!(state.header.max_frame as u64, frames);
        let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
        assert_eq!(state.header.pages as i64, pages);
        let map = build(&wal, &index, 4096).unwrap();
        assert_eq!(map.in_range(1, u32::MAX).len() as i64, pages);
    }

    /// A WAL database no connection has open: the next connection's recovery
    /// of its empty WAL writes an index without a page size, which decodes as
    /// a snapshot of no frames. A page size of 0 with frames is refused.
    #[test]
    fn the_index_of_an_empty_wal_has_no_page_size_and_no_frames() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("idle.db");
        let c = Connection::open(&db).unwrap();
        c.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1);")
            .unwrap();
        drop(c);
        assert!(!dir.path().join("idle.db-wal").exists(), "closed cleanly");
        let c = Connection::open(&db).unwrap();
        let n: i64 = c
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
        let shm = std::fs::read(dir.path().join("idle.db-shm")).unwrap();
        let mut index = [0u8; INDEX_HEADER_BYTES];
        index.copy_from_slice(&shm[..INDEX_HEADER_BYTES]);
        let state = IndexState::parse(&index).expect("the recovered index");
        assert_eq!((state.header.max_frame, state.header.page_size), (0, 0));
        assert!(build(&[], &index, 4096).is_ok(), "no frame to read");

        // The same header claiming a frame (copies and checksum made right).
        let mut framed = index;
        framed[16..20].copy_from_slice(&1u32.to_ne_bytes());
        let sum = checksum(&framed[..40], [0, 0], cfg!(target_endian = "big"));
        framed[40..44].copy_from_slice(&sum[0].to_ne_bytes());
        framed[44..48].copy_from_slice(&sum[1].to_ne_bytes());
        let (first, rest) = framed.split_at_mut(HEADER_COPY);
        rest[..HEADER_COPY].copy_from_slice(first);
        assert_eq!(IndexState::parse(&framed), None);
    }
}

/// Entry points of the fuzz target `wal` (`format::fuzz`): the input is a
/// wal-index's first [`INDEX_HEADER_BYTES`], then a WAL file.
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzz {
    use super::*;
    use crate::format::{FormatError, Result};

    fn refused(why: impl std::fmt::Display) -> FormatError {
        FormatError::Invalid(why.to_string())
    }

    /// Decodes the index header and the WAL; what is accepted must point at
    /// whole pages inside the WAL, one frame per page, in page order.
    pub(crate) fn run(data: &[u8]) -> Result<()> {
        let (index, wal) = split(data)?;
        let state = IndexState::parse(&index).ok_or_else(|| refused("wal-index header"))?;
        let size = state.header.page_size;
        // A WAL never holds more frames than it has bytes for: a header that says
        // otherwise is refused when the read comes up short.
        let read = |at: u64, buf: &mut [u8]| -> Result<()> {
            let end = at
                .checked_add(buf.len() as u64)
                .ok_or_else(|| refused("offset"))?;
            let bytes = wal
                .get(at as usize..end as usize)
                .ok_or_else(|| refused("the WAL ends early"))?;
            buf.copy_from_slice(bytes);
            Ok(())
        };
        if state.header.max_frame as u64 > wal.len() as u64 / (FRAME_HEADER + size as u64).max(1) {
            return Err(refused("more frames than the WAL holds"));
        }
        let pages = WalPages::build(&state.header, size, 4, None, read)?.map_err(refused)?;
        let mut last = 0u32;
        for &(page, at) in pages.in_range(0, u32::MAX) {
            assert!(page > last, "pages in order, each once");
            last = page;
            assert!(
                at + size as u64 <= wal.len() as u64,
                "a page inside the WAL"
            );
            assert_eq!(
                (at - WAL_HEADER) % (FRAME_HEADER + size as u64),
                FRAME_HEADER
            );
        }
        assert!(pages.len() <= state.header.max_frame as usize);
        Ok(())
    }

    fn split(data: &[u8]) -> Result<([u8; INDEX_HEADER_BYTES], &[u8])> {
        if data.len() < INDEX_HEADER_BYTES {
            return Err(FormatError::Truncated {
                needed: INDEX_HEADER_BYTES as u64,
                have: data.len() as u64,
            });
        }
        let (head, wal) = data.split_at(INDEX_HEADER_BYTES);
        let mut index = [0u8; INDEX_HEADER_BYTES];
        index.copy_from_slice(head);
        Ok((index, wal))
    }

    /// `data` with every checksum and copy made right: the WAL header's, each
    /// frame's (salts copied from the header, the chain recomputed over as many
    /// whole frames as the index names and the WAL holds), the index's frame
    /// checksum and salts, its own checksum, and its second copy.
    pub(crate) fn seal(data: &[u8]) -> Vec<u8> {
        let mut out = data.to_vec();
        if out.len() < INDEX_HEADER_BYTES {
            return out;
        }
        let (index, wal) = out.split_at_mut(INDEX_HEADER_BYTES);
        let size = match u16::from_ne_bytes([index[14], index[15]]) as u32 {
            1 => 65536,
            s => s,
        };
        let big_endian = index[13] != 0;
        if wal.len() >= WAL_HEADER as usize {
            let sum = checksum(&wal[..24], [0, 0], big_endian);
            wal[24..28].copy_from_slice(&sum[0].to_be_bytes());
            wal[28..32].copy_from_slice(&sum[1].to_be_bytes());
            let mut salt = [0u8; 8];
            salt.copy_from_slice(&wal[16..24]);
            index[32..40].copy_from_slice(&salt);
            let frame_len = (FRAME_HEADER + size as u64) as usize;
            let frames = u32::from_ne_bytes(word(index, 16)) as usize;
            let mut chain = sum;
            let mut at = WAL_HEADER as usize;
            for _ in 0..frames {
                let Some(f) = wal.get_mut(at..at + frame_len) else {
                    break;
                };
                f[8..16].copy_from_slice(&salt);
                chain = checksum(&f[..8], chain, big_endian);
                chain = checksum(&f[FRAME_HEADER as usize..], chain, big_endian);
                f[16..20].copy_from_slice(&chain[0].to_be_bytes());
                f[20..24].copy_from_slice(&chain[1].to_be_bytes());
                at += frame_len;
            }
            index[24..28].copy_from_slice(&chain[0].to_ne_bytes());
            index[28..32].copy_from_slice(&chain[1].to_ne_bytes());
        }
        let own = checksum(&index[..40], [0, 0], cfg!(target_endian = "big"));
        index[40..44].copy_from_slice(&own[0].to_ne_bytes());
        index[44..48].copy_from_slice(&own[1].to_ne_bytes());
        let (first, second) = index.split_at_mut(HEADER_COPY);
        second[..HEADER_COPY].copy_from_slice(first);
        out
    }

    type Named = Vec<(&'static str, Vec<u8>)>;

    /// Seeds (sound index headers and WALs) and hostile ones (sealed, to be refused).
    pub(crate) fn files() -> (Named, Named) {
        let join = |(wal, index): (Vec<u8>, [u8; INDEX_HEADER_BYTES])| {
            let mut b = index.to_vec();
            b.extend_from_slice(&wal);
            b
        };
        let seeds = vec![
            (
                "wal-512-le",
                join(make_wal(512, &[(1, 1), (2, 2), (1, 3)], false)),
            ),
            ("wal-1024-be", join(make_wal(1024, &[(3, 9), (1, 8)], true))),
            ("wal-empty", join(make_wal(512, &[], false))),
        ];
        let sound = join(make_wal(512, &[(1, 1), (2, 2)], false));
        let with = |at: usize, bytes: &[u8]| {
            let mut b = sound.clone();
            b[at..at + bytes.len()].copy_from_slice(bytes);
            seal(&b)
        };
        let hostile = vec![
            // Four billion frames in a WAL of two.
            ("hostile-frames-huge", with(16, &u32::MAX.to_ne_bytes())),
            // A frame of page 0.
            (
                "hostile-page-zero",
                with(INDEX_HEADER_BYTES + 32, &0u32.to_be_bytes()),
            ),
            // The WAL of another page size than the index's.
            (
                "hostile-page-size",
                with(INDEX_HEADER_BYTES + 8, &1024u32.to_be_bytes()),
            ),
        ];
        (seeds, hostile)
    }
}

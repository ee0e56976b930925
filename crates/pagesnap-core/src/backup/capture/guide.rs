//! WAL-guided capture (issue #30 part 3): when this machine's record of the
//! parent snapshot names the WAL position it was captured at, and the WAL has
//! only grown since, the pages of the frames after that position are the only
//! ones that changed; the blocks holding none of them are the parent's, taken
//! from its record without being read.
//!
//! Why that is the same image (docs/DESIGN.md, "WAL-guided capture"): while a
//! WAL is not restarted, SQLite only appends frames to it, and a checkpoint
//! only copies frames into the database file. A page with no frame after the
//! parent's position therefore reads now as it read then: either its newest
//! frame up to that position, or the file's bytes from before the WAL began.
//! "Not restarted" is proven, not assumed: the same salts (a restart draws new
//! ones), the checksum chain after the parent's frame equal to the one recorded
//! then (so frames 1..=that one are the frames it saw), the frames since
//! checked against the pinned header like any direct read's, and the same
//! database file (device, inode). Anything else, and the capture reads every
//! page as before; so does the first capture a day ([`FULL_READ_EVERY`]), and
//! every `--paranoid` or `--full-read` backup.

use super::wal::{IndexHeader, WalPages, WalPosition};

/// How long captures may follow each other without reading the whole
/// database: the guide trusts the file's pages outside the WAL to stay as
/// SQLite left them; a full read a day bounds how long a change made behind
/// SQLite's back (or a flaw in that reasoning) can go unseen.
pub(crate) const FULL_READ_EVERY: u64 = 24 * 3600;

/// What this machine records of a snapshot captured from a WAL database, for
/// the next capture to follow (the fingerprint file's WAL mark: FORMAT.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WalMark {
    /// Where in the WAL the snapshot ends.
    pub position: WalPosition,
    /// The database file's device and inode.
    pub file: (u64, u64),
    /// When the capture this one follows from (or this one) read every page,
    /// in Unix seconds.
    pub full_read_at: u64,
}

/// Whether a capture of the database file `file` at `now` (Unix seconds) may
/// follow the parent's `mark`: the same file, a WAL position past its header,
/// and the last full read less than [`FULL_READ_EVERY`] ago (and not in the
/// future: a clock set back reads whole).
pub(crate) fn may_follow(mark: &WalMark, file: (u64, u64), now: u64) -> bool {
    mark.file == file
        && mark.position.max_frame > 0
        && now >= mark.full_read_at
        && now - mark.full_read_at < FULL_READ_EVERY
}

/// Whether the WAL the snapshot's pinned `header` describes may be the one
/// `since` was in, only grown (the same salts and byte order, a frame past
/// its header and not past this WAL's end): what is checked before the WAL
/// is read, and again by [`changed_since`].
pub(crate) fn may_have_grown_from(since: &WalPosition, header: &IndexHeader) -> bool {
    let now = header.position();
    now.salt == since.salt
        && now.big_endian == since.big_endian
        && since.max_frame > 0
        && since.max_frame <= now.max_frame
}

/// Which pages changed since `since`, given the snapshot's pinned `header`,
/// its size in `pages`, and its WAL built remembering `since.max_frame`; or
/// `None` if the WAL cannot be proven to be the one `since` was in, only grown.
pub(crate) fn changed_since(
    since: &WalPosition,
    header: &IndexHeader,
    pages: u64,
    wal: &WalPages,
    page_size: u32,
) -> Option<Guide> {
    if !may_have_grown_from(since, header) || wal.remembered() != Some(since.checksum) {
        return None;
    }
    // A commit that cut the database may have had the file truncated by a
    // checkpoint since: pages past the least size are read, whatever their frames.
    let kept = wal
        .least_size_after()
        .map_or(pages, |l| pages.min(l as u64));
    Some(Guide {
        changed: wal.pages_after(since.max_frame),
        kept,
        page_size: page_size as u64,
    })
}

/// The pages a guided capture must read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Guide {
    /// Pages with a frame after the parent's position, in order.
    changed: Vec<u32>,
    /// Pages 1..=kept had no commit since that left the database shorter.
    kept: u64,
    page_size: u64,
}

impl Guide {
    /// Whether block `b` (of `block_len` bytes) holds no page that changed, so
    /// that it is the parent's block `b` (if that one was whole). Block 0 is
    /// always read: page 1 is stamped with the page count (direct.rs).
    pub(crate) fn untouched(&self, b: u64, block_len: u64) -> bool {
        if b == 0 || self.page_size == 0 {
            return false;
        }
        let first = b * block_len / self.page_size + 1;
        let last = (b + 1) * block_len / self.page_size;
        if last > self.kept {
            return false;
        }
        let i = self.changed.partition_point(|&p| (p as u64) < first);
        self.changed.get(i).is_none_or(|&p| p as u64 > last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::capture::wal::{make_wal, make_wal_of, IndexState};

    fn position(max_frame: u32) -> WalPosition {
        WalPosition {
            salt: [1; 8],
            max_frame,
            checksum: [2, 3],
            big_endian: false,
        }
    }

    #[test]
    fn a_capture_follows_only_the_same_file_within_a_day_of_its_full_read() {
        let mark = WalMark {
            position: position(10),
            file: (1, 2),
            full_read_at: 1_000_000,
        };
        let day = FULL_READ_EVERY;
        // (file, now, WAL frame, may follow)
        let table = [
            ((1, 2), 1_000_000, 10, true),
            ((1, 2), 1_000_000 + day - 1, 10, true),
            ((1, 2), 1_000_000 + day, 10, false),
            ((1, 2), 999_999, 10, false),
            ((1, 3), 1_000_100, 10, false),
            ((2, 2), 1_000_100, 10, false),
            ((1, 2), 1_000_100, 0, false),
        ];
        for (file, now, frame, want) in table {
            let m = WalMark {
                position: position(frame),
                ..mark
            };
            assert_eq!(
                may_follow(&m, file, now),
                want,
                "{file:?} at {now}, frame {frame}"
            );
        }
    }

    /// A WAL of `frames` (page, fill), its header, and its pages built
    /// remembering frame `since`.
    fn built(frames: &[(u32, u8)], since: u32) -> (IndexHeader, WalPages) {
        let (wal, index) = make_wal_of(1024, frames, false, 200);
        let header = IndexState::parse(&index).unwrap().header;
        let read = |at: u64, buf: &mut [u8]| -> Result<(), ()> {
            buf.copy_from_slice(&wal[at as usize..at as usize + buf.len()]);
            Ok(())
        };
        let pages = WalPages::build(&header, 1024, 4, Some(since), read)
            .unwrap()
            .unwrap();
        (header, pages)
    }

    #[test]
    fn only_the_same_wal_grown_since_guides_and_names_the_pages_of_the_new_frames() {
        let frames = [(3, 1), (70, 2), (3, 3), (5, 4), (140, 5), (5, 6)];
        let (_, then) = make_wal_of(1024, &frames[..3], false, 200);
        let since = IndexState::parse(&then).unwrap().header.position();
        let (header, pages) = built(&frames, 3);
        let g = changed_since(&since, &header, 200, &pages, 1024).unwrap();
        assert_eq!(g.changed, vec![5, 140]);
        // 64 KiB blocks of 1 KiB pages: block b holds pages 64b+1..=64b+64.
        let untouched: Vec<bool> = (0..4).map(|b| g.untouched(b, 65536)).collect();
        // Page 70 changed before the parent's position: block 1 untouched;
        // block 3 reaches past the 200 pages the commits left.
        assert_eq!(untouched, [false, true, false, false]);

        // Another chain at the same frame (frames rewritten after a restart
        // that kept the salts), a position past the WAL's end, other salts,
        // another byte order: no guide.
        let (_, other) = make_wal_of(1024, &[(3, 9), (70, 2), (3, 3)], false, 200);
        let other = IndexState::parse(&other).unwrap().header.position();
        assert!(changed_since(&other, &header, 200, &pages, 1024).is_none());
        let (header7, pages7) = built(&frames, 6);
        let past = WalPosition {
            max_frame: 7,
            ..header7.position()
        };
        assert!(changed_since(&past, &header7, 200, &pages7, 1024).is_none());
        for salt in [[0; 8], [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x89]] {
            let s = WalPosition { salt, ..since };
            assert!(changed_since(&s, &header, 200, &pages, 1024).is_none());
        }
        let be = WalPosition {
            big_endian: true,
            ..since
        };
        assert!(changed_since(&be, &header, 200, &pages, 1024).is_none());
        // Built remembering another frame than the position's.
        let (header2, pages2) = built(&frames, 2);
        assert!(changed_since(&since, &header2, 200, &pages2, 1024).is_none());
    }

    #[test]
    fn pages_past_the_least_size_a_commit_left_are_read() {
        // make_wal's commits leave 10 pages: every block past the first 10
        // pages is read, changed or not.
        let frames = [(3, 1), (5, 2)];
        let built = |frames: &[(u32, u8)], since: u32| {
            let (wal, index) = make_wal(1024, frames, false);
            let header = IndexState::parse(&index).unwrap().header;
            let read = |at: u64, buf: &mut [u8]| -> Result<(), ()> {
                buf.copy_from_slice(&wal[at as usize..at as usize + buf.len()]);
                Ok(())
            };
            let pages = WalPages::build(&header, 1024, 4, Some(since), read);
            (header, pages.unwrap().unwrap())
        };
        let (_, then) = make_wal(1024, &frames[..1], false);
        let since = IndexState::parse(&then).unwrap().header.position();
        let (header, pages) = built(&frames, 1);
        let g = changed_since(&since, &header, 300, &pages, 1024).unwrap();
        assert_eq!(g.kept, 10);
        assert!((0..5).all(|b| !g.untouched(b, 65536)));
        // Pages of 64 KiB, a block each: page 2 (block 1) is untouched.
        let g = Guide {
            changed: vec![5],
            kept: 10,
            page_size: 65536,
        };
        let untouched: Vec<u64> = (0..12).filter(|&b| g.untouched(b, 65536)).collect();
        assert_eq!(untouched, [1, 2, 3, 5, 6, 7, 8, 9]);
    }
}

//! Direct capture: the pinned snapshot read straight from the database file and
//! its WAL, a block at a time, instead of page by page through the backup API.
//!
//! Why it is the same image (docs/DESIGN.md, "Capture"):
//! - Rollback journal: the read transaction holds a SHARED lock, so no writer
//!   can change the file until it ends; the image is the file's first
//!   `page_count` pages.
//! - WAL: the snapshot is the database file overlaid with the newest frame of
//!   each page among the first `mxFrame` frames. While the transaction lasts, a
//!   checkpoint never writes a frame past the snapshot into the file, and the
//!   WAL is not restarted under it. Which `mxFrame` the snapshot has is learned
//!   by reading the wal-index header, starting the transaction, and reading it
//!   again: if no byte changed, no commit came between, so the snapshot is that
//!   header. The frames are then checked against it (salts, the checksum chain
//!   ending in the header's checksum) before one byte is used.
//!
//! Anything not proven (another VFS, a caller's own transaction, a read-only
//! wal-index, a header that kept changing, a frame that does not check) falls
//! back to the backup API, which is always right and only slower.

use super::guide::{self, Guide};
use super::source_files::{Reads, SourceFiles, WalFile};
use super::wal::{IndexHeader, IndexState, WalPages, WalPosition, FRAME_HEADER};
use rusqlite::Connection;
use std::io;
use std::ops::Range;

/// Times the read transaction is restarted to pin a WAL snapshot before the
/// capture falls back (each try fails only if a commit lands within its
/// microseconds).
const PIN_TRIES: usize = 8;
/// Frames read at once while checking the WAL.
const WAL_READ_FRAMES: u32 = 64;
/// SQLite never stores data in the page holding this byte offset (its locks
/// live there); the backup API skips that page, so it is captured as zeros.
const PENDING_BYTE: u64 = 0x4000_0000;

/// A snapshot pinned for a direct read.
pub(crate) struct Plan {
    pub page_size: u32,
    pub pages: u64,
    /// Pages whose snapshot version lies in the WAL, and where.
    wal: WalPages,
    /// Where in the WAL the snapshot ends (a WAL database).
    pub position: Option<WalPosition>,
    /// The pages that changed since the parent's position, when the WAL
    /// proves it (guide.rs): the other blocks need not be read.
    pub guide: Option<Guide>,
}

#[cfg(test)]
impl Plan {
    /// Pages read from the WAL rather than the database file.
    pub(crate) fn wal_pages(&self) -> usize {
        self.wal.len()
    }
}

/// Why the capture goes through the backup API instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fallback(pub String);

/// Pins `src`'s snapshot for a direct read, or says why it cannot be.
///
/// `src` must be inside a read transaction this capture started and may end:
/// in WAL mode `restart` is called to end it and start it again (including
/// its first read), and returns the page size and page count the new
/// transaction sees. `(page_size, pages)` are what the current transaction says.
/// `since`: the parent snapshot's WAL position, to learn which pages changed
/// since it (guide.rs).
pub(crate) fn pin(
    src: &Connection,
    (page_size, pages): (u32, u64),
    since: Option<WalPosition>,
    mut restart: impl FnMut() -> rusqlite::Result<(u32, u64)>,
) -> rusqlite::Result<Result<Plan, Fallback>> {
    let no = |why: &str| Ok(Err(Fallback(why.to_owned())));
    let Some(files) = SourceFiles::of(src) else {
        return no("the database is not on SQLite's default unix VFS");
    };
    let mode: String = src.query_row("PRAGMA main.journal_mode", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        if pages == 0 {
            return no("the database is empty (the backup API gives it a first page)");
        }
        return Ok(Ok(Plan {
            page_size,
            pages,
            wal: WalPages::default(),
            position: None,
            guide: None,
        }));
    }
    // Why the last try failed: a header that changed, or one that did not
    // decode (two copies that differ, mid-update, or a header not of SQLite's).
    let mut last = "the WAL kept changing while the snapshot was pinned";
    for _ in 0..PIN_TRIES {
        let Some(before) = files.wal().and_then(|w| w.index_header()) else {
            return no("the WAL's index is not shared memory SQLite's readers trust");
        };
        let Some(before) = IndexState::parse(&before) else {
            last = "the wal-index header did not decode";
            continue;
        };
        let (size, pages) = restart()?;
        let Some(wal) = files.wal() else {
            return no("the WAL is not open after the transaction restarted");
        };
        let Some(after) = wal.index_header().as_ref().and_then(IndexState::parse) else {
            last = "the wal-index header did not decode";
            continue;
        };
        if !before.header.same(&after.header) {
            last = "the WAL kept changing while the snapshot was pinned";
            continue;
        }
        let header = after.header;
        if size != page_size && header.max_frame > 0 {
            return no("the page size changed between two transactions");
        }
        if header.pages != 0 && header.pages as u64 != pages {
            return no("the wal-index and the snapshot disagree on the page count");
        }
        if pages == 0 {
            return no("the database is empty (the backup API gives it a first page)");
        }
        // A parent's position in another WAL (other salts), or past this
        // one's end, cannot guide: not worth remembering, nor reading a WAL
        // the file already holds for.
        let since = since.filter(|s| guide::may_have_grown_from(s, &header));
        let remember = since.map(|s| s.max_frame);
        // Every frame already copied into the file: the file is the snapshot
        // (the WAL may even be restarted under a reader of this kind: its
        // frames are read only to learn which pages changed, and a WAL that
        // no longer checks only means no guide). A WAL longer than the
        // database costs more to read than the database itself.
        if after.backfilled >= header.max_frame {
            let wal_bytes = header.max_frame as u64 * (FRAME_HEADER + size as u64);
            let since = since.filter(|_| wal_bytes <= pages * size as u64);
            let guide = since.and_then(|s| {
                let map = build(&header, size, remember, &wal).ok()?.ok()?;
                guide::changed_since(&s, &header, pages, &map, size)
            });
            return Ok(Ok(Plan {
                page_size: size,
                pages,
                wal: WalPages::default(),
                position: Some(header.position()),
                guide,
            }));
        }
        return match build(&header, size, remember, &wal) {
            Ok(Ok(map)) => Ok(Ok(Plan {
                page_size: size,
                pages,
                position: Some(header.position()),
                guide: since.and_then(|s| guide::changed_since(&s, &header, pages, &map, size)),
                wal: map,
            })),
            Ok(Err(mismatch)) => no(&format!("the WAL does not check: {mismatch}")),
            Err(e) => no(&format!("the WAL could not be read: {e}")),
        };
    }
    no(last)
}

/// The WAL's pages as `header` sees them, remembering the chain's value
/// after frame `remember` (guide.rs).
fn build(
    header: &IndexHeader,
    page_size: u32,
    remember: Option<u32>,
    wal: &WalFile<'_>,
) -> io::Result<Result<WalPages, super::wal::WalMismatch>> {
    WalPages::build(header, page_size, WAL_READ_FRAMES, remember, |at, buf| {
        wal.read(at, buf)
    })
}

/// Where the blocks of a direct read go.
pub(crate) trait BlockSink {
    /// A buffer of `len` bytes to read a block into (its contents are overwritten).
    fn buffer(&mut self, len: usize) -> Vec<u8>;
    /// The block at byte `offset` of the image, `buf` its bytes.
    fn put(&mut self, offset: u64, buf: Vec<u8>) -> crate::Result<()>;
    /// The whole blocks `blocks`, each to be read with `read(b, buf)` (`buf`
    /// a block long) by whichever thread processes it. A read that fails
    /// comes back as `Ok(Err(..))`, or as the sink's own error for it.
    /// A block for which `untouched(b)` holds is the parent's block (the WAL
    /// proves it: guide.rs) and may be taken from the parent without a read.
    fn read_blocks(
        &mut self,
        blocks: Range<u64>,
        read: &ReadBlock<'_>,
        untouched: &Untouched<'_>,
    ) -> crate::Result<Result<(), ReadFailed>>;
    /// Called between batches of blocks: an error stops the read (abandoned,
    /// progress).
    fn between(&mut self, done: u64, total: u64) -> crate::Result<()>;
}

/// How a sink reads one whole block: `read(b, buf)`.
pub(crate) type ReadBlock<'a> = dyn Fn(u64, &mut [u8]) -> Result<(), ReadFailed> + Sync + 'a;

/// Whether block `b` is the parent's, proven by the WAL (guide.rs).
pub(crate) type Untouched<'a> = dyn Fn(u64) -> bool + Sync + 'a;

/// Bytes of whole blocks handed to the sink at once. Its threads wait for
/// each other at the end of a batch, and a changed block takes ~10 times as
/// long as an unchanged one: 8 MiB batches were 5% faster than 2 MiB ones
/// (docs/PERFORMANCE.md), for ~8 MiB more of compressed slots.
const BATCH_BYTES: u64 = 8 << 20;

/// A source file that could not be read during a direct capture.
#[derive(Debug)]
pub(crate) struct ReadFailed {
    /// Whether the WAL (not the database file) failed.
    pub wal: bool,
    pub error: io::Error,
}

/// Reads `plan`'s image from `src`'s files, `block_len` bytes at a time, into
/// `sink`: the whole blocks in batches, which the sink's threads read and
/// process side by side, then the last, shorter block, if any.
pub(crate) fn copy(
    src: &Connection,
    plan: &Plan,
    block_len: u64,
    sink: &mut dyn BlockSink,
) -> crate::Result<Result<(), ReadFailed>> {
    let files = SourceFiles::of(src)
        .ok_or_else(|| crate::Error::Internal("the pinned source lost its file".into()))?;
    let wal = match plan.wal.len() {
        0 => None,
        _ => Some(
            files
                .wal()
                .ok_or_else(|| crate::Error::Internal("the pinned source lost its WAL".into()))?,
        ),
    };
    let reader = Reader {
        files: files.reads(wal.as_ref()),
        plan,
        #[cfg(feature = "testing")]
        fault: fault::from_env(),
    };
    let total = plan.pages * plan.page_size as u64;
    let whole = total / block_len;
    let read = |b: u64, buf: &mut [u8]| reader.read(b * block_len, buf);
    let untouched = |b: u64| {
        plan.guide
            .as_ref()
            .is_some_and(|g| g.untouched(b, block_len))
    };
    let mut b = 0;
    while b < whole {
        sink.between(b * block_len, total)?;
        let n = (whole - b).min((BATCH_BYTES / block_len).max(1));
        if let Err(failed) = sink.read_blocks(b..b + n, &read, &untouched)? {
            return Ok(Err(failed));
        }
        b += n;
    }
    let offset = whole * block_len;
    if offset < total {
        sink.between(offset, total)?;
        let mut buf = sink.buffer((total - offset) as usize);
        if let Err(failed) = reader.read(offset, &mut buf) {
            return Ok(Err(failed));
        }
        sink.put(offset, buf)?;
    }
    sink.between(total, total)?;
    Ok(Ok(()))
}

/// Reads the pinned snapshot's bytes; shared by the threads that read blocks.
struct Reader<'r> {
    files: Reads<'r>,
    plan: &'r Plan,
    /// Which reads fail on purpose (tests of the binary).
    #[cfg(feature = "testing")]
    fault: Option<fault::Fault>,
}

/// Read errors on purpose, for tests of the binary (the `testing` feature):
/// `PAGESNAP_FAULT_DIRECT_READ=db` fails every read of the database file past
/// its first 64 KiB, `=wal` every read of a WAL frame, as an I/O error would.
#[cfg(feature = "testing")]
mod fault {
    #[derive(Clone, Copy, PartialEq, Eq)]
    pub(super) enum Fault {
        Db,
        Wal,
    }

    pub(super) fn from_env() -> Option<Fault> {
        match std::env::var("PAGESNAP_FAULT_DIRECT_READ").as_deref() {
            Ok("db") => Some(Fault::Db),
            Ok("wal") => Some(Fault::Wal),
            _ => None,
        }
    }

    pub(super) fn error() -> std::io::Error {
        std::io::Error::from_raw_os_error(5)
    }
}

impl Reader<'_> {
    /// Fills `buf` with the snapshot's bytes at `offset` (a page boundary):
    /// the database file's, each page the snapshot has in the WAL read from
    /// its frame, the pending-byte page zeroed, and page 1 stamped as the
    /// backup API's destination has it.
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), ReadFailed> {
        let page = self.plan.page_size as u64;
        let len = buf.len() as u64;
        #[cfg(feature = "testing")]
        if self.fault == Some(fault::Fault::Db) && offset >= 65536 {
            let error = fault::error();
            return Err(ReadFailed { wal: false, error });
        }
        if let Err(error) = self.files.main(offset, buf) {
            return Err(ReadFailed { wal: false, error });
        }
        let first = (offset / page + 1) as u32;
        let last = ((offset + len) / page) as u32;
        for &(p, at) in self.plan.wal.in_range(first, last) {
            let slot = ((p as u64 - 1) * page - offset) as usize;
            #[cfg(feature = "testing")]
            if self.fault == Some(fault::Fault::Wal) {
                let error = fault::error();
                return Err(ReadFailed { wal: true, error });
            }
            if let Err(error) = self.files.wal(at, &mut buf[slot..slot + page as usize]) {
                return Err(ReadFailed { wal: true, error });
            }
        }
        if offset <= PENDING_BYTE && PENDING_BYTE < offset + len && PENDING_BYTE >= page {
            let slot = ((PENDING_BYTE / page * page) - offset) as usize;
            buf[slot..slot + page as usize].fill(0);
        }
        if offset == 0 {
            stamp_like_the_backup_api(buf, self.plan.pages);
        }
        Ok(())
    }
}

/// Writes into page 1 (`header`, at least its first 100 bytes) the fields
/// SQLite's backup API writes when its fresh destination commits, so that a
/// direct image is byte for byte the image the backup API gives (and
/// `sqlite3 .backup` writes): the page count (offset 28); the destination's
/// schema cookie, 0 + 1 (offset 40); its file change counter, 0 + 1, and the
/// same as "version valid for" (offsets 24 and 92); the SQLite version
/// (offset 96). A test compares the two images whole, so a SQLite that
/// stamps otherwise is caught.
fn stamp_like_the_backup_api(header: &mut [u8], pages: u64) {
    if header.len() < 100 {
        return;
    }
    let mut put = |at: usize, v: u32| header[at..at + 4].copy_from_slice(&v.to_be_bytes());
    put(24, 1);
    put(28, u32::try_from(pages).unwrap_or(u32::MAX));
    put(40, 1);
    put(92, 1);
    put(96, rusqlite::version_number() as u32);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::backup::Backup;
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    /// The block length of the tests' copies.
    const TEST_BLOCK: u64 = 65536;

    struct VecSink(Vec<u8>);

    impl BlockSink for VecSink {
        fn buffer(&mut self, len: usize) -> Vec<u8> {
            // Stale bytes, as a recycled buffer holds: the read must overwrite them.
            vec![0xA5; len]
        }
        fn read_blocks(
            &mut self,
            blocks: Range<u64>,
            read: &ReadBlock<'_>,
            _untouched: &Untouched<'_>,
        ) -> crate::Result<Result<(), ReadFailed>> {
            // From the last block down, as threads may finish them.
            let mut read_back: Vec<(u64, Vec<u8>)> = Vec::new();
            for b in blocks.rev() {
                let mut buf = self.buffer(TEST_BLOCK as usize);
                if let Err(f) = read(b, &mut buf) {
                    return Ok(Err(f));
                }
                read_back.push((b, buf));
            }
            for (b, buf) in read_back.into_iter().rev() {
                self.put(b * TEST_BLOCK, buf)?;
            }
            Ok(Ok(()))
        }
        fn put(&mut self, offset: u64, buf: Vec<u8>) -> crate::Result<()> {
            assert_eq!(offset, self.0.len() as u64, "blocks arrive in order");
            self.0.extend_from_slice(&buf);
            Ok(())
        }
        fn between(&mut self, _: u64, _: u64) -> crate::Result<()> {
            Ok(())
        }
    }

    fn first_read(c: &Connection) -> rusqlite::Result<(u32, u64)> {
        c.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))?;
        let size = c.query_row("PRAGMA main.page_size", [], |r| r.get(0))?;
        let pages: i64 = c.query_row("PRAGMA main.page_count", [], |r| r.get(0))?;
        Ok((size, pages as u64))
    }

    /// A direct read of `src`'s snapshot, and the backup API's copy of the
    /// same snapshot (same transaction), or `None` if the direct read fell back.
    fn both(src: &Connection, dir: &Path) -> Option<(Vec<u8>, Vec<u8>, usize)> {
        src.execute_batch("BEGIN DEFERRED").unwrap();
        let read = first_read(src).unwrap();
        let restart = || {
            src.execute_batch("ROLLBACK; BEGIN DEFERRED")?;
            first_read(src)
        };
        let plan = match pin(src, read, None, restart).unwrap() {
            Ok(plan) => plan,
            Err(_) => {
                src.execute_batch("ROLLBACK").unwrap();
                return None;
            }
        };
        let mut sink = VecSink(Vec::new());
        copy(src, &plan, TEST_BLOCK, &mut sink).unwrap().unwrap();
        let copy_path = dir.join("api.db");
        let _ = std::fs::remove_file(&copy_path);
        {
            let mut dest = Connection::open(&copy_path).unwrap();
            let b = Backup::new(src, &mut dest).unwrap();
            b.run_to_completion(100_000, Duration::ZERO, None).unwrap();
        }
        src.execute_batch("ROLLBACK").unwrap();
        Some((sink.0, std::fs::read(&copy_path).unwrap(), plan.wal_pages()))
    }

    /// The same image, and if not, where the first difference is.
    fn same(direct: &[u8], api: &[u8]) -> Result<(), String> {
        if direct.len() != api.len() {
            return Err(format!(
                "{} bytes, the backup API {}",
                direct.len(),
                api.len()
            ));
        }
        match direct.iter().zip(api).position(|(a, b)| a != b) {
            None => Ok(()),
            Some(i) => Err(format!("byte {i} differs: {} vs {}", direct[i], api[i])),
        }
    }

    #[test]
    fn a_direct_read_is_the_backup_apis_image_in_both_journal_modes() {
        for mode in ["DELETE", "WAL", "TRUNCATE"] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("a.db");
            let w = Connection::open(&path).unwrap();
            w.execute_batch(&format!(
                "PRAGMA page_size=1024; PRAGMA journal_mode={mode}; PRAGMA wal_autocheckpoint=0;
                 CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB);
                 WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300)
                 INSERT INTO t SELECT x, randomblob(700) FROM c;
                 PRAGMA wal_checkpoint(TRUNCATE);
                 UPDATE t SET b = randomblob(650) WHERE id % 7 = 0;
                 DELETE FROM t WHERE id > 250;"
            ))
            .unwrap();
            let src = super::super::open_source(&path).unwrap();
            let (direct, api, wal_pages) = both(&src, dir.path()).expect("pinned");
            same(&direct, &api).unwrap_or_else(|e| panic!("{mode}: {e}"));
            assert_eq!(wal_pages > 0, mode == "WAL", "{mode}: pages from the WAL");
        }
    }

    #[test]
    fn a_direct_read_under_writers_and_checkpoints_is_the_backup_apis_image() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("busy.db");
        let setup = Connection::open(&path).unwrap();
        setup
            .execute_batch(
                "PRAGMA page_size=1024; PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=50;
                 CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB);
                 WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 400)
                 INSERT INTO t SELECT x, randomblob(300) FROM c;",
            )
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (stop, path) = (stop.clone(), path.clone());
            std::thread::spawn(move || {
                let w = Connection::open(&path).unwrap();
                w.busy_timeout(Duration::from_secs(5)).unwrap();
                w.execute_batch("PRAGMA wal_autocheckpoint=50").unwrap();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    w.execute(
                        "UPDATE t SET b = randomblob(200 + abs(random()) % 300) WHERE id % 37 = ?1",
                        [(i % 37) as i64],
                    )
                    .unwrap();
                    if i % 11 == 0 {
                        w.execute("INSERT INTO t(b) VALUES (randomblob(900))", [])
                            .unwrap();
                    }
                    if i % 17 == 0 {
                        w.execute("DELETE FROM t WHERE id IN (SELECT id FROM t ORDER BY random() LIMIT 3)", [])
                            .unwrap();
                    }
                }
                i
            })
        };
        let checkpointer = {
            let (stop, path) = (stop.clone(), path.clone());
            std::thread::spawn(move || {
                let c = Connection::open(&path).unwrap();
                let modes = ["PASSIVE", "RESTART", "TRUNCATE", "FULL"];
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    // Busy is fine: a checkpoint blocked by the capture's reader.
                    let _ = c.query_row(
                        &format!("PRAGMA wal_checkpoint({})", modes[n % 4]),
                        [],
                        |_| Ok(()),
                    );
                    n += 1;
                    std::thread::sleep(Duration::from_millis(3));
                }
            })
        };
        let src = super::super::open_source(&path).unwrap();
        let (mut pinned, mut with_wal) = (0, 0);
        for round in 0..60 {
            if let Some((direct, api, wal_pages)) = both(&src, dir.path()) {
                same(&direct, &api).unwrap_or_else(|e| panic!("round {round}: {e}"));
                pinned += 1;
                with_wal += (wal_pages > 0) as usize;
            }
        }
        stop.store(true, Ordering::Relaxed);
        let commits = writer.join().unwrap();
        checkpointer.join().unwrap();
        assert!(commits > 60, "the writer kept writing ({commits} commits)");
        assert!(pinned >= 50, "pinned {pinned} of 60");
        assert!(
            with_wal >= 10,
            "{with_wal} captures read pages from the WAL"
        );
    }
}

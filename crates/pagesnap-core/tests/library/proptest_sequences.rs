//! Property: for any sequence of writes to a database (inserts of text and of blobs
//! large enough to overflow, updates, range deletes, VACUUM, create/drop of an
//! indexed table, WAL checkpoints), a pagesnap backup taken after every step
//! restores to exactly the bytes SQLite's own backup API copies at that step, and
//! to a database that passes `PRAGMA integrity_check`. Checked for WAL and rollback
//! journals and for stores of 1 and 4 pages per chunk.
//!
//! `PAGESNAP_PROPTEST_CASES` overrides the number of cases per configuration.

use crate::common::Rng;
use crate::common::*;
use pagesnap_core::{BackupReport, InitOptions, Store};
use proptest::prelude::*;
use rusqlite::{params, Connection};

#[derive(Clone, Debug)]
enum Op {
    /// `rows` rows of text `len` characters long (can overflow at small page sizes).
    InsertText {
        rows: u16,
        len: u16,
    },
    /// `rows` blobs of `len` bytes; up to several pages, so many overflow.
    InsertBlob {
        rows: u8,
        len: u32,
        compressible: bool,
    },
    /// Rewrites every `every`-th row (offset `phase`) with a value of `len` bytes.
    Update {
        every: u8,
        phase: u8,
        len: u32,
    },
    /// Deletes ids in [start, start + len), start as a fraction (/256) of the max id.
    DeleteRange {
        start: u8,
        len: u16,
    },
    Vacuum,
    CreateIndexedTable {
        rows: u16,
    },
    DropIndexedTable,
    Checkpoint,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u16..200, 0u16..2000).prop_map(|(rows, len)| Op::InsertText { rows, len }),
        3 => (1u8..40, 0u32..20_000, any::<bool>())
            .prop_map(|(rows, len, compressible)| Op::InsertBlob { rows, len, compressible }),
        2 => (1u8..10, 0u8..10, 0u32..9000).prop_map(|(every, phase, len)| Op::Update { every, phase, len }),
        2 => (any::<u8>(), 1u16..400).prop_map(|(start, len)| Op::DeleteRange { start, len }),
        1 => Just(Op::Vacuum),
        1 => (0u16..300).prop_map(|rows| Op::CreateIndexedTable { rows }),
        1 => Just(Op::DropIndexedTable),
        1 => Just(Op::Checkpoint),
    ]
}

struct Db {
    conn: Connection,
    rng: Rng,
    /// Extra indexed tables that exist, oldest first, and the next table number.
    tables: Vec<u32>,
    next_table: u32,
}

impl Db {
    fn apply(&mut self, op: &Op) {
        let tx = self.conn.unchecked_transaction().unwrap();
        match *op {
            Op::InsertText { rows, len } => {
                let mut ins = tx
                    .prepare("INSERT INTO t(kind, body) VALUES ('text', ?1)")
                    .unwrap();
                for _ in 0..rows {
                    ins.execute(params![self.rng.text(len as usize)]).unwrap();
                }
            }
            Op::InsertBlob {
                rows,
                len,
                compressible,
            } => {
                let mut ins = tx
                    .prepare("INSERT INTO t(kind, body) VALUES ('blob', ?1)")
                    .unwrap();
                for _ in 0..rows {
                    ins.execute(params![self.rng.bytes(len as usize, compressible)])
                        .unwrap();
                }
            }
            Op::Update { every, phase, len } => {
                let ids: Vec<i64> = {
                    let mut q = tx
                        .prepare("SELECT id FROM t WHERE id % ?1 = ?2 % ?1")
                        .unwrap();
                    q.query_map(params![every, phase], |r| r.get(0))
                        .unwrap()
                        .collect::<Result<_, _>>()
                        .unwrap()
                };
                let mut upd = tx
                    .prepare("UPDATE t SET kind = 'updated', body = ?2 WHERE id = ?1")
                    .unwrap();
                for id in ids {
                    let body = self.rng.bytes(len as usize, id % 2 == 0);
                    upd.execute(params![id, body]).unwrap();
                }
            }
            Op::DeleteRange { start, len } => {
                let max: i64 = tx
                    .query_row("SELECT coalesce(max(id), 0) FROM t", [], |r| r.get(0))
                    .unwrap();
                let from = max * start as i64 / 256;
                tx.execute(
                    "DELETE FROM t WHERE id >= ?1 AND id < ?2",
                    params![from, from + len as i64],
                )
                .unwrap();
            }
            Op::CreateIndexedTable { rows } => {
                let n = self.next_table;
                self.next_table += 1;
                tx.execute_batch(&format!(
                    "CREATE TABLE x{n}(a TEXT, b BLOB); CREATE INDEX x{n}_a ON x{n}(a, b);"
                ))
                .unwrap();
                let mut ins = tx
                    .prepare(&format!("INSERT INTO x{n} VALUES (?1, ?2)"))
                    .unwrap();
                for _ in 0..rows {
                    let (a_len, b_len) = (self.rng.below(80) as usize, self.rng.below(600));
                    let a = self.rng.text(a_len);
                    let b = self.rng.bytes(b_len as usize, true);
                    ins.execute(params![a, b]).unwrap();
                }
                self.tables.push(n);
            }
            Op::DropIndexedTable => {
                if !self.tables.is_empty() {
                    let n = self.tables.remove(0);
                    tx.execute_batch(&format!("DROP TABLE x{n};")).unwrap();
                }
            }
            Op::Vacuum | Op::Checkpoint => {}
        }
        tx.commit().unwrap();
        match op {
            Op::Vacuum => self.conn.execute_batch("VACUUM").unwrap(),
            Op::Checkpoint => {
                // A no-op in rollback mode; in WAL mode moves every page into the file.
                self.conn
                    .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                    .unwrap();
            }
            _ => {}
        }
    }
}

/// Runs `ops` with a backup and a reference copy after every step (and before the
/// first), then restores every snapshot and compares it with its step's copy.
fn check_sequence(journal: Journal, chunk_pages: u32, page_size: u32, seed: u64, ops: &[Op]) {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("app.db");
    let conn = create_db(&db_path, journal, page_size);
    conn.execute_batch(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, kind TEXT NOT NULL, body);
         CREATE INDEX t_kind ON t(kind);",
    )
    .unwrap();
    let mut db = Db {
        conn,
        rng: Rng(seed),
        tables: Vec::new(),
        next_table: 0,
    };
    let store = Store::init(
        dir.path().join("store"),
        &InitOptions {
            chunk_pages,
            ..InitOptions::default()
        },
    )
    .unwrap();

    let mut taken: Vec<(BackupReport, Hash, i64)> = Vec::new();
    let mut step = |db: &Db, what: &str| {
        let report = backup(&store, &db_path);
        let reference = reference_hash(&db_path, dir.path());
        assert_eq!(
            hex(&report.image_hash),
            hex(&reference),
            "backup after {what}: image hash vs reference copy"
        );
        let rows = count(&db.conn, "SELECT count(*) FROM t");
        taken.push((report, reference, rows));
    };
    step(&db, "creation");
    for op in ops {
        db.apply(op);
        step(&db, &format!("{op:?}"));
    }

    assert_eq!(store.snapshots().unwrap().len(), ops.len() + 1);
    for (i, (report, reference, rows)) in taken.iter().enumerate() {
        let snap = snapshot_of(&store, report);
        let restored = restore_and_check(&store, &snap, reference, dir.path());
        let r = open_ro(&restored);
        assert_eq!(count(&r, "SELECT count(*) FROM t"), *rows, "step {i}");
        drop(r);
        std::fs::remove_file(restored).unwrap();
    }
}

fn cases(default: u32) -> u32 {
    std::env::var("PAGESNAP_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(10),
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    }
}

fn page_size() -> impl Strategy<Value = u32> {
    prop_oneof![Just(512u32), Just(1024), Just(4096)]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn wal_chunk_pages_1(seed in any::<u64>(), page_size in page_size(), ops in proptest::collection::vec(op(), 1..=12)) {
        check_sequence(Journal::Wal, 1, page_size, seed, &ops);
    }

    #[test]
    fn wal_chunk_pages_4(seed in any::<u64>(), page_size in page_size(), ops in proptest::collection::vec(op(), 1..=12)) {
        check_sequence(Journal::Wal, 4, page_size, seed, &ops);
    }

    #[test]
    fn rollback_chunk_pages_1(seed in any::<u64>(), page_size in page_size(), ops in proptest::collection::vec(op(), 1..=12)) {
        check_sequence(Journal::Rollback, 1, page_size, seed, &ops);
    }

    #[test]
    fn rollback_chunk_pages_4(seed in any::<u64>(), page_size in page_size(), ops in proptest::collection::vec(op(), 1..=12)) {
        check_sequence(Journal::Rollback, 4, page_size, seed, &ops);
    }
}

/// A fixed sequence touching every operation, so each runs at least once whatever
/// the random cases draw.
#[test]
fn every_operation_once() {
    let ops = [
        Op::InsertText {
            rows: 150,
            len: 700,
        },
        Op::InsertBlob {
            rows: 20,
            len: 15_000,
            compressible: false,
        },
        Op::CreateIndexedTable { rows: 250 },
        Op::InsertBlob {
            rows: 30,
            len: 5000,
            compressible: true,
        },
        Op::Update {
            every: 3,
            phase: 1,
            len: 6000,
        },
        Op::Checkpoint,
        Op::DeleteRange {
            start: 40,
            len: 120,
        },
        Op::DropIndexedTable,
        Op::Vacuum,
        Op::InsertText { rows: 10, len: 3 },
    ];
    for journal in [Journal::Wal, Journal::Rollback] {
        for chunk_pages in [1, 4] {
            check_sequence(journal, chunk_pages, 1024, 7, &ops);
        }
    }
}

//! Snapshots opened in place (`Store::open_snapshot`): every query answers as it
//! does on the restored image, writes are refused, a damaged chunk is named.

use crate::common::{assert_integrity_ok, Rng};
use pagesnap_core::query::{self, QueryError, QueryOptions};
use pagesnap_core::rusqlite::{types::Value, Connection};
use pagesnap_core::{BackupOptions, InitOptions, Snapshot, Store};
use proptest::prelude::*;
use std::path::Path;

/// Every row `sql` gives on `conn`, as values.
fn rows(conn: &Connection, sql: &str) -> Result<Vec<Vec<Value>>, QueryError> {
    let run = || -> pagesnap_core::rusqlite::Result<Vec<Vec<Value>>> {
        let mut stmt = conn.prepare(sql)?;
        let n = stmt.column_count();
        let rows = stmt.query_map([], |r| (0..n).map(|i| r.get::<_, Value>(i)).collect())?;
        rows.collect()
    };
    run().map_err(|e| query::explain(conn, e))
}

/// The queries compared: scans in both orders, through each index, lookups by
/// key, aggregates, a sort too large for memory (temporary files), the schema
/// and SQLite's own check of every page.
fn queries(rng: &mut Rng) -> Vec<String> {
    let mut q = vec![
        "SELECT * FROM t ORDER BY k".to_string(),
        "SELECT k, length(v), hex(substr(v, 1, 16)) FROM t ORDER BY k DESC".into(),
        "SELECT tag, count(*), sum(length(v)) FROM t GROUP BY tag ORDER BY tag".into(),
        "SELECT tag, k FROM t INDEXED BY t_tag ORDER BY tag, k".into(),
        "SELECT * FROM w ORDER BY a".into(),
        "SELECT count(*) FROM t".into(),
        "SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY name".into(),
        "SELECT * FROM t ORDER BY v, k".into(),
        "PRAGMA integrity_check".into(),
    ];
    for _ in 0..5 {
        q.push(format!("SELECT * FROM t WHERE k = {}", rng.below(400)));
        q.push(format!("SELECT * FROM w WHERE a = 'key{}'", rng.below(200)));
    }
    q
}

/// One random change to the database.
fn change(conn: &Connection, rng: &mut Rng) {
    let n = 1 + rng.below(60);
    let sql = match rng.below(6) {
        0 | 1 => format!(
            "INSERT INTO t(tag, v) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n})
             SELECT abs(random()) % 7, randomblob({}) FROM n",
            1 + rng.below(6000)
        ),
        2 => format!(
            "UPDATE t SET v = randomblob({}) WHERE k % {} = {}",
            1 + rng.below(3000),
            2 + rng.below(9),
            rng.below(2)
        ),
        3 => format!("DELETE FROM t WHERE k % {} = 0", 3 + rng.below(7)),
        4 => format!(
            "INSERT OR REPLACE INTO w(a, b) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n})
             SELECT 'key' || (abs(random()) % 200), randomblob(abs(random()) % 2000) FROM n"
        ),
        _ => "VACUUM".into(),
    };
    conn.execute_batch(&sql).unwrap();
}

fn new_db(path: &Path, page_size: u32) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(&format!(
        "PRAGMA page_size={page_size}; PRAGMA journal_mode=WAL;
         CREATE TABLE t(k INTEGER PRIMARY KEY, tag INTEGER, v BLOB);
         CREATE INDEX t_tag ON t(tag);
         CREATE TABLE w(a TEXT PRIMARY KEY, b BLOB) WITHOUT ROWID;"
    ))
    .unwrap();
    conn
}

/// Each snapshot in place answers `queries` exactly as its restored image does
/// (which is sound: integrity_check).
fn compare_all(store: &Store, dir: &Path, rng: &mut Rng, opts: &QueryOptions) {
    for snap in store.snapshots().unwrap() {
        let restored = dir.join(format!("r-{}.db", snap.id.short()));
        store.restore_to_path(&snap, &restored, true).unwrap();
        assert_integrity_ok(&restored);
        let file = crate::common::open_ro(&restored);
        let conn = store.open_snapshot_with(&snap, opts).unwrap();
        for sql in queries(rng) {
            let want = rows(&file, &sql).unwrap();
            let got = rows(&conn, &sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
            assert!(
                got == want,
                "{sql}: {} rows in place, {} restored",
                got.len(),
                want.len()
            );
        }
        let stats = query::read_stats(&conn);
        assert!(stats.chunks > 0 && stats.reads > 0, "{stats:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, ..ProptestConfig::default() })]

    /// Random snapshots of random workloads, in stores of every kind (chunks of
    /// 1 or 4 pages, dictionaries, deltas, page sizes), with a cache of a few
    /// chunks or the default: queries in place equal those on the restored image.
    #[test]
    fn queries_in_place_equal_queries_on_the_restored_image(
        seed in any::<u64>(),
        chunk_pages in prop::sample::select(vec![1u32, 4]),
        dictionary in any::<bool>(),
        deltas in any::<bool>(),
        page_size in prop::sample::select(vec![1024u32, 4096]),
        small_cache in any::<bool>(),
        steps in 2usize..5,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        let options = InitOptions { chunk_pages, dictionary, deltas, ..InitOptions::default() };
        let store = Store::init(dir.path().join("store"), &options).unwrap();
        let conn = new_db(&db, page_size);
        let mut rng = Rng(seed | 1);
        for _ in 0..steps {
            for _ in 0..1 + rng.below(4) {
                change(&conn, &mut rng);
            }
            store.backup_path(&db, &BackupOptions::default()).unwrap();
        }
        let opts = QueryOptions { cache_bytes: if small_cache { 0 } else { QueryOptions::default().cache_bytes } };
        compare_all(&store, dir.path(), &mut rng, &opts);
    }
}

/// A store with one snapshot of a small database.
fn one_snapshot(dir: &Path) -> (Store, Snapshot) {
    let db = dir.join("app.db");
    let conn = new_db(&db, 4096);
    let mut rng = Rng(3);
    for _ in 0..4 {
        change(&conn, &mut rng);
    }
    conn.execute_batch("INSERT INTO t(tag, v) VALUES (1, 'hello')")
        .unwrap();
    let store = Store::init(dir.join("store"), &InitOptions::default()).unwrap();
    store.backup_path(&db, &BackupOptions::default()).unwrap();
    let snap = store.snapshots().unwrap().pop().unwrap();
    (store, snap)
}

/// Writes of every kind are refused with SQLite's message, and the image is
/// unchanged afterwards; the store holds no new object.
#[test]
fn writes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, snap) = one_snapshot(dir.path());
    let before = crate::common::objects_under(&dir.path().join("store"), "");
    let conn = store.open_snapshot(&snap).unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    for sql in [
        "INSERT INTO t(tag, v) VALUES (1, 'x')",
        "DELETE FROM t",
        "CREATE TABLE x(a)",
        "PRAGMA user_version=5",
        "VACUUM",
        "PRAGMA query_only=0; INSERT INTO t(tag) VALUES (2)",
    ] {
        let err = conn.execute_batch(sql);
        assert!(err.is_err(), "{sql} was allowed");
    }
    let after: i64 = conn
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, after);
    drop(conn);
    assert_eq!(
        crate::common::objects_under(&dir.path().join("store"), ""),
        before
    );
}

/// A bit flipped in a pack: the query that reads that chunk fails with an
/// error naming the chunk and the snapshot (never rows), and a query that
/// does not read it still answers.
#[test]
fn a_damaged_chunk_fails_the_query_and_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (store, snap) = one_snapshot(dir.path());
    // Damage every pack's middle: some page of `t` is in one of them.
    let packs = dir.path().join("store/packs");
    let mut damaged = 0;
    for sub in std::fs::read_dir(&packs).unwrap() {
        for f in std::fs::read_dir(sub.unwrap().path()).unwrap() {
            let path = f.unwrap().path();
            let mut bytes = std::fs::read(&path).unwrap();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x40;
            std::fs::write(&path, bytes).unwrap();
            damaged += 1;
        }
    }
    assert!(damaged > 0);
    let conn = store.open_snapshot(&snap).unwrap();
    let err = rows(&conn, "SELECT * FROM t ORDER BY k").unwrap_err();
    assert!(err.is_damage(), "{err}");
    let text = err.to_string();
    assert!(text.contains(&snap.id.short()), "{text}");
    assert!(text.contains("chunk"), "{text}");
}

/// Two snapshots attached side by side answer as their restored images do
/// (one query joining both), and a real file attached is read as usual.
#[test]
fn attached_snapshots_join() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = new_db(&db, 4096);
    let store = Store::init(dir.path().join("store"), &InitOptions::default()).unwrap();
    let mut rng = Rng(9);
    for _ in 0..2 {
        change(&conn, &mut rng);
        change(&conn, &mut rng);
        store.backup_path(&db, &BackupOptions::default()).unwrap();
    }
    let snaps = store.snapshots().unwrap();
    let a = store.open_snapshot(&snaps[0]).unwrap();
    store
        .attach_snapshot(&a, &snaps[1], "b", &QueryOptions::default())
        .unwrap();
    let sql = "SELECT count(*) FROM main.t AS x JOIN b.t AS y USING (k) WHERE x.v IS NOT y.v";
    let got = rows(&a, sql).unwrap();
    let (ra, rb) = (dir.path().join("a.db"), dir.path().join("b.db"));
    store.restore_to_path(&snaps[0], &ra, false).unwrap();
    store.restore_to_path(&snaps[1], &rb, false).unwrap();
    let file = crate::common::open_ro(&ra);
    file.execute("ATTACH ?1 AS b", [rb.to_str().unwrap()])
        .unwrap();
    assert_eq!(got, rows(&file, sql).unwrap());
    // A real database attached to a snapshot: read-only, read as usual.
    a.execute("ATTACH ?1 AS live", [db.to_str().unwrap()])
        .unwrap();
    let live: i64 = a
        .query_row("SELECT count(*) FROM live.t", [], |r| r.get(0))
        .unwrap();
    let want: i64 = conn
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(live, want);
    assert!(a.execute_batch("DELETE FROM live.t").is_err());
}

/// `snapshot_tables` lists what `dbstat` says of the restored image: every
/// table and index with its exact row count, pages and bytes; the free pages.
#[test]
fn tables_are_listed_with_rows_pages_and_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (store, snap) = one_snapshot(dir.path());
    let list = store.snapshot_tables(&snap).unwrap();
    let restored = dir.path().join("r.db");
    store.restore_to_path(&snap, &restored, false).unwrap();
    let file = crate::common::open_ro(&restored);
    let count =
        |sql: &str| -> u64 { file.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap() as u64 };
    let by = |name: &str| {
        list.iter()
            .find(|u| u.name == name)
            .unwrap_or_else(|| panic!("{name} in {list:?}"))
    };
    assert_eq!(by("t").rows, count("SELECT count(*) FROM t"));
    assert_eq!(by("t").kind, "table");
    assert_eq!(by("t_tag").rows, count("SELECT count(*) FROM t"));
    assert_eq!(
        (by("t_tag").kind.as_str(), by("t_tag").table.as_str()),
        ("index", "t")
    );
    assert_eq!(by("w").rows, count("SELECT count(*) FROM w"));
    assert_eq!(by("sqlite_schema").kind, "schema");
    let pages: u64 = list.iter().map(|u| u.pages).sum();
    // Every page is a b-tree's or free, but for overflow pages dbstat counts
    // under their table, and pointer maps (none here).
    assert_eq!(pages, count("PRAGMA page_count"), "{list:?}");
    for u in &list {
        assert_eq!(u.bytes, u.pages * 4096, "{u:?}");
        assert_eq!(
            u.pages,
            count(&format!(
                "SELECT count(*) FROM dbstat WHERE name = '{}'",
                u.name
            ))
            .max(if u.kind == "free" { u.pages } else { 0 }),
            "{u:?}"
        );
    }
    assert!(list
        .windows(2)
        .all(|w| w[0].bytes >= w[1].bytes || w[1].kind == "free"));
}

/// Every row of `table` in the database at `path`, by key (rowid, or the
/// text key of `w`), with its values.
fn rows_by_key(path: &Path, table: &str) -> std::collections::BTreeMap<String, Vec<Value>> {
    let conn = crate::common::open_ro(path);
    let sql = match table {
        "w" => "SELECT a, a, b FROM w",
        _ => "SELECT rowid, tag, v FROM t",
    };
    let mut stmt = conn.prepare(sql).unwrap();
    let rows = stmt
        .query_map([], |r| {
            let key: Value = r.get(0)?;
            Ok((format!("{key:?}"), vec![r.get(1)?, r.get(2)?]))
        })
        .unwrap();
    rows.map(|r| r.unwrap()).collect()
}

/// `diff_rows` between random snapshots equals the difference computed in
/// Rust on their restored copies: the same keys removed, added and changed,
/// and for a changed row the columns that differ.
#[test]
fn row_diffs_equal_the_reference_on_restored_copies() {
    use pagesnap_core::query::RowChangeKind;
    let mut seen = [0usize; 3];
    for seed in [5u64, 17, 31] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        let conn = new_db(&db, 4096);
        let store = Store::init(dir.path().join("store"), &InitOptions::default()).unwrap();
        let mut rng = Rng(seed);
        for _ in 0..3 {
            for _ in 0..3 {
                change(&conn, &mut rng);
            }
            store.backup_path(&db, &BackupOptions::default()).unwrap();
        }
        let snaps = store.snapshots().unwrap();
        for (i, j) in [(0, 1), (1, 2), (0, 2), (2, 0)] {
            let (a, b) = (&snaps[i], &snaps[j]);
            let (ra, rb) = (
                dir.path().join(format!("a{i}.db")),
                dir.path().join(format!("b{j}.db")),
            );
            store.restore_to_path(a, &ra, true).unwrap();
            store.restore_to_path(b, &rb, true).unwrap();
            for (table, cols) in [("t", ["tag", "v"]), ("w", ["a", "b"])] {
                let (before, after) = (rows_by_key(&ra, table), rows_by_key(&rb, table));
                let mut want: Vec<(RowChangeKind, String, Vec<String>)> = Vec::new();
                for k in before.keys().filter(|k| !after.contains_key(*k)) {
                    want.push((RowChangeKind::Removed, k.clone(), vec![]));
                }
                for k in after.keys().filter(|k| !before.contains_key(*k)) {
                    want.push((RowChangeKind::Added, k.clone(), vec![]));
                }
                for (k, v) in &after {
                    if let Some(old) = before.get(k) {
                        let differ: Vec<String> = (0..2)
                            .filter(|&c| old[c] != v[c])
                            .map(|c| cols[c].to_string())
                            .filter(|c| !(table == "w" && c == "a"))
                            .collect();
                        if !differ.is_empty() {
                            want.push((RowChangeKind::Changed, k.clone(), differ));
                        }
                    }
                }
                let got = store.diff_rows(a, b, table).unwrap();
                let mut got: Vec<(RowChangeKind, String, Vec<String>)> = got
                    .changes
                    .into_iter()
                    .map(|c| (c.kind, format!("{:?}", c.key[0]), c.columns))
                    .collect();
                let order = |v: &mut Vec<(RowChangeKind, String, Vec<String>)>| {
                    v.sort_by(|x, y| (x.0 as u8, &x.1).cmp(&(y.0 as u8, &y.1)))
                };
                order(&mut got);
                order(&mut want);
                for c in &want {
                    seen[c.0 as usize] += 1;
                }
                assert_eq!(got, want, "seed {seed}, {table}, snapshots {i} -> {j}");
            }
        }
        // A table only one side has, and a view, are refused by name.
        let err = store.diff_rows(&snaps[0], &snaps[1], "nosuch").unwrap_err();
        assert!(err.to_string().contains("nosuch"), "{err}");
    }
    assert!(
        seen.iter().all(|&n| n > 0),
        "removed, added, changed: {seen:?}"
    );
}

/// Every snapshot of every fixture store (each format version, the encrypted
/// one unlocked with its passphrase) opens in place, and every table answers a
/// full scan and `integrity_check` as its restored image does.
#[test]
fn fixture_stores_of_every_format_open_in_place() {
    use pagesnap_core::Passphrase;
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
    let mut opened = 0;
    for version in ["v1", "v1-image-check", "v2", "v3-encrypted"] {
        let dir = root.join(version).join("store");
        let store = match version {
            "v3-encrypted" => {
                let backend = std::sync::Arc::new(pagesnap_core::backend::LocalBackend::new(&dir));
                Store::open_backend_unlocking(backend, &|| {
                    Ok(Passphrase::new("pagesnap fixture v3".into()))
                })
                .unwrap()
            }
            _ => Store::open(&dir).unwrap(),
        };
        let tmp = tempfile::tempdir().unwrap();
        for snap in store.snapshots().unwrap() {
            let restored = tmp.path().join(format!("{}.db", snap.id.short()));
            store.restore_to_path(&snap, &restored, false).unwrap();
            let file = crate::common::open_ro(&restored);
            let conn = store.open_snapshot(&snap).unwrap();
            let tables = rows(
                &file,
                "SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name",
            )
            .unwrap();
            assert!(!tables.is_empty(), "{version}");
            for t in tables {
                let Value::Text(t) = &t[0] else {
                    panic!("{t:?}")
                };
                let sql = format!("SELECT * FROM \"{t}\"");
                assert_eq!(
                    rows(&conn, &sql).unwrap(),
                    rows(&file, &sql).unwrap(),
                    "{version} {t}"
                );
            }
            assert_eq!(
                rows(&conn, "PRAGMA integrity_check").unwrap(),
                vec![vec![Value::Text("ok".into())]]
            );
            opened += 1;
        }
    }
    assert!(opened >= 14, "{opened} snapshots opened");
}

/// Per page of the database at `path` (index = page − 1): its owner by
/// `dbstat` (overflow pages under their table), `(free pages)` for the free
/// list, and whether it is an overflow page.
fn oracle_owners(path: &Path) -> Vec<(String, bool)> {
    let conn = crate::common::open_ro(path);
    let n: i64 = conn
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap();
    let mut out = vec![("(unknown)".to_string(), false); n as usize];
    let mut stmt = conn
        .prepare("SELECT name, pageno, pagetype FROM dbstat")
        .unwrap();
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .unwrap();
    for r in rows {
        let (name, page, kind) = r.unwrap();
        out[(page - 1) as usize] = (name, kind == "overflow");
    }
    // The free list, from the header: trunks and their leaves.
    let bytes = std::fs::read(path).unwrap();
    let ps = u32::from_be_bytes(
        bytes[16..18]
            .try_into()
            .map(|b: [u8; 2]| [0, 0, b[0], b[1]])
            .unwrap(),
    ) as usize;
    let ps = if ps == 1 { 65536 } else { ps };
    let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    let mut trunk = be(32);
    while trunk != 0 {
        out[trunk - 1] = ("(free pages)".into(), false);
        let base = (trunk - 1) * ps;
        for k in 0..be(base + 4) {
            out[be(base + 8 + 4 * k) - 1] = ("(free pages)".into(), false);
        }
        trunk = be(base);
    }
    out
}

/// `diff_snapshots` against a reference computed on the restored copies with
/// `dbstat` and byte comparison: for random workloads (inserts, updates,
/// deletes, a dropped table, a new index, vacuums) in stores of 1- and 4-page
/// chunks, every table's changed, added and freed pages are the reference's.
/// Overflow pages whose row's leaf did not change may be left untraced (kind
/// `unknown`); nothing else is.
#[test]
fn page_diffs_equal_the_reference_on_restored_copies() {
    for (seed, chunk_pages) in [(3u64, 1u32), (8, 4), (21, 1), (34, 4)] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        let conn = new_db(&db, 4096);
        conn.execute_batch(
            "CREATE TABLE extra(x); INSERT INTO extra VALUES (randomblob(3000)), (1);",
        )
        .unwrap();
        let options = InitOptions {
            chunk_pages,
            ..InitOptions::default()
        };
        let store = Store::init(dir.path().join("store"), &options).unwrap();
        let mut rng = Rng(seed);
        store.backup_path(&db, &BackupOptions::default()).unwrap();
        for step in 0..4 {
            for _ in 0..3 {
                change(&conn, &mut rng);
            }
            match step {
                1 => conn.execute_batch("DROP TABLE extra").unwrap(),
                2 => conn
                    .execute_batch("CREATE INDEX t_v ON t(length(v), tag)")
                    .unwrap(),
                _ => {}
            }
            store.backup_path(&db, &BackupOptions::default()).unwrap();
        }
        let snaps = store.snapshots().unwrap();
        let mut untraced = 0;
        for (i, j) in [(0, 1), (1, 2), (2, 3), (3, 4), (0, 4), (4, 1)] {
            let (a, b) = (&snaps[i], &snaps[j]);
            let (ra, rb) = (
                dir.path().join(format!("{i}.db")),
                dir.path().join(format!("{j}.db")),
            );
            store.restore_to_path(a, &ra, true).unwrap();
            store.restore_to_path(b, &rb, true).unwrap();
            let (oa, ob) = (oracle_owners(&ra), oracle_owners(&rb));
            let (ia, ib) = (std::fs::read(&ra).unwrap(), std::fs::read(&rb).unwrap());
            let mut want: std::collections::BTreeMap<String, [u64; 3]> = Default::default();
            let mut overflow_changed = 0;
            for p in 0..oa.len().max(ob.len()) {
                let page = |img: &[u8]| img.get(p * 4096..(p + 1) * 4096).map(|x| x.to_vec());
                let differs = page(&ia) != page(&ib);
                let (x, y) = (oa.get(p), ob.get(p));
                match (x, y) {
                    (Some(x), Some(y)) if x.0 == y.0 => {
                        if differs {
                            want.entry(y.0.clone()).or_default()[0] += 1;
                            overflow_changed += (x.1 || y.1) as u64;
                        }
                    }
                    _ => {
                        if let Some(x) = x {
                            want.entry(x.0.clone()).or_default()[2] += 1;
                            overflow_changed += x.1 as u64;
                        }
                        if let Some(y) = y {
                            want.entry(y.0.clone()).or_default()[1] += 1;
                            overflow_changed += y.1 as u64;
                        }
                    }
                }
            }
            let d = store.diff_snapshots(a, b).unwrap();
            let got: std::collections::BTreeMap<String, [u64; 3]> = d
                .objects
                .iter()
                .filter(|o| o.kind != "unknown")
                .map(|o| (o.name.clone(), [o.changed, o.added, o.freed]))
                .filter(|(_, v)| v.iter().sum::<u64>() > 0)
                .collect();
            let lost: u64 = d
                .objects
                .iter()
                .filter(|o| o.kind == "unknown")
                .map(|o| o.changed + o.added + o.freed)
                .sum();
            untraced += lost;
            assert!(
                lost <= 2 * overflow_changed,
                "seed {seed}: {lost} untraced, {overflow_changed} overflow pages changed"
            );
            if lost == 0 {
                assert_eq!(
                    got, want,
                    "seed {seed}, chunk pages {chunk_pages}, {i} -> {j}"
                );
            } else {
                // Untraced pages are overflow pages: every other count stands,
                // and no object has more than the reference says.
                for (name, g) in &got {
                    let w = want.get(name).copied().unwrap_or_default();
                    assert!(
                        g.iter().zip(w).all(|(g, w)| *g <= w),
                        "seed {seed}, {name}: {g:?} > {w:?}"
                    );
                }
            }
            // Each stored byte of B's new chunks is shared out exactly once.
            let shared: u64 = d.objects.iter().map(|o| o.stored_bytes).sum();
            assert_eq!(shared, d.stored_bytes);
            if i == j {
                assert!(d.objects.is_empty());
            }
        }
        // These workloads' overflow pages all hang off changed pages.
        assert_eq!(untraced, 0, "seed {seed}");
    }
}

/// A write-only key opens the store but cannot read pages: opening a snapshot
/// in place says so (the store's error, not SQLite's "disk I/O error").
#[test]
fn a_write_only_key_cannot_open_a_snapshot_in_place() {
    use pagesnap_core::Passphrase;
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let copy = std::process::Command::new("cp")
        .arg("-r")
        .arg(root.join("v3-encrypted").join("store"))
        .arg(&dir)
        .status()
        .unwrap();
    assert!(copy.success());
    let backend = std::sync::Arc::new(pagesnap_core::backend::LocalBackend::new(&dir));
    let store = Store::open_backend_unlocking(backend, &|| {
        Ok(Passphrase::new("pagesnap fixture v3 (write-only)".into()))
    })
    .unwrap();
    let snap = store.snapshots().unwrap().pop().unwrap();
    let err = store.open_snapshot(&snap).unwrap_err();
    assert!(matches!(err, QueryError::Store(_)), "{err:?}");
    assert!(err.to_string().contains("write-only"), "{err}");
}

/// With a cache larger than the image, reading every page reads each chunk
/// once, and the reported reads say so (not more: an image is counted once).
#[test]
fn read_stats_count_each_chunk_once() {
    let dir = tempfile::tempdir().unwrap();
    let (store, snap) = one_snapshot(dir.path());
    let opts = QueryOptions {
        cache_bytes: 64 << 20,
    };
    let conn = store.open_snapshot_with(&snap, &opts).unwrap();
    rows(&conn, "SELECT * FROM t ORDER BY k").unwrap();
    rows(&conn, "PRAGMA integrity_check").unwrap();
    let stats = query::read_stats(&conn);
    let n = snap.manifest.chunk_count;
    assert!(
        stats.chunks <= n && stats.chunks >= n / 2,
        "{stats:?}, {n} chunks"
    );
    assert!(stats.reads < stats.chunks, "read-ahead: {stats:?}");
}

//! `pagesnap sql`, `ls` and `diff`: snapshots queried in place, from the command line.

use crate::util::*;
use serde_json::Value;

/// A store with two snapshots of a database, `mutate`d in between; the
/// database's connection, and the snapshots' ids (older first).
fn two_snapshots() -> (Fx, std::path::PathBuf, [String; 2]) {
    let fx = Fx::new();
    let db = fx.path("app.db");
    let conn = create_db(&db, Journal::Wal, 800, 7);
    let a = fx.backup(&db, &["--time", "2026-01-01T00:00:00Z"]);
    mutate(&conn, 1);
    let b = fx.backup(&db, &["--time", "2026-01-01T00:10:00Z"]);
    let id = |v: &Value| v["id"].as_str().unwrap().to_string();
    (fx, db, [id(&a), id(&b)])
}

fn stdout_of(cmd: &mut assert_cmd::Command) -> String {
    String::from_utf8(ok(cmd)).unwrap()
}

/// The rows of `sql` on a file, as JSON objects (the reference for `sql --json`).
fn reference_rows(db: &std::path::Path, sql: &str) -> Vec<Value> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn.prepare(sql).unwrap();
    let names: Vec<String> = stmt.column_names().map(|s| s.to_string()).collect();
    let rows = stmt
        .query_map([], |r| {
            let mut obj = serde_json::Map::new();
            for (i, n) in names.iter().enumerate() {
                let v = match r.get_ref(i)? {
                    rusqlite::types::ValueRef::Null => Value::Null,
                    rusqlite::types::ValueRef::Integer(x) => x.into(),
                    rusqlite::types::ValueRef::Real(x) => x.into(),
                    rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into(),
                    rusqlite::types::ValueRef::Blob(b) => b
                        .iter()
                        .map(|x| format!("{x:02x}"))
                        .collect::<String>()
                        .into(),
                };
                obj.insert(n.clone(), v);
            }
            Ok(Value::Object(obj))
        })
        .unwrap();
    rows.map(|r| r.unwrap()).collect()
}

/// `sql --json` gives the rows of the restored snapshot, one object per row
/// keyed by column, in column order; `--at` picks the older snapshot and
/// stderr names the snapshot used.
#[test]
fn sql_answers_as_the_restored_snapshot() {
    let (fx, _db, [a, b]) = two_snapshots();
    let sql = "SELECT id, name, n, data FROM items WHERE id % 50 = 3 ORDER BY id";
    for (pick, id) in [
        (vec!["latest"], &b),
        (vec!["latest", "--at", "2026-01-01 00:05:00"], &a),
    ] {
        let (stdout, stderr) = ok_output(fx.cmd().args(["--json", "sql"]).args(&pick).arg(sql));
        let got: Value = serde_json::from_slice(&stdout).unwrap();
        let restored = fx.path(&format!("r-{id}.db"));
        fx.restore(&[id], &restored);
        assert_eq!(got, Value::Array(reference_rows(&restored, sql)));
        assert!(!got.as_array().unwrap().is_empty());
        // Members in the columns' order.
        let text = String::from_utf8_lossy(&stdout);
        let first = text.lines().nth(1).unwrap();
        let order: Vec<usize> = ["\"id\"", "\"name\"", "\"n\"", "\"data\""]
            .iter()
            .map(|k| first.find(k).unwrap())
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{first}");
        assert_has(&stderr, &[&id[..8], "taken 2026-01-01"]);
    }
}

/// Table and CSV output, SQL from stdin, several statements.
#[test]
fn sql_prints_tables_and_csv_and_reads_stdin() {
    let (fx, _db, _) = two_snapshots();
    let table = stdout_of(fx.cmd().args([
        "sql",
        "latest",
        "SELECT 1 AS one, 'a,b' AS two, NULL AS three",
    ]));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["one", "two", "three"]
    );
    assert_eq!(
        lines[2].split_whitespace().collect::<Vec<_>>(),
        ["1", "a,b", "NULL"]
    );
    assert_eq!(lines[3], "(1 row)");
    let csv = stdout_of(fx.cmd().args([
        "sql",
        "latest",
        "--csv",
        "SELECT 1 AS one, 'a,\"b' AS two, NULL AS three, x'00ff' AS four",
    ]));
    assert_eq!(csv, "one,two,three,four\n1,\"a,\"\"b\",,00ff\n");
    let text = stdout_of(
        fx.cmd()
            .args(["sql", "latest", "--csv"])
            .write_stdin("SELECT count(*) AS n FROM items; SELECT count(*) AS m FROM tags;"),
    );
    let restored = fx.path("r.db");
    fx.restore(&["latest"], &restored);
    assert_eq!(
        text,
        format!("n\n{}\n\nm\n{}\n", row_count(&restored), {
            let c = rusqlite::Connection::open(&restored).unwrap();
            c.query_row("SELECT count(*) FROM tags", [], |r| r.get::<_, i64>(0))
                .unwrap()
        })
    );
}

/// SQLite's errors are its message, exit 1, nothing on stdout; writes are
/// refused and change nothing in the store; an empty SQL is a usage error.
#[test]
fn sql_errors_are_sqlites_and_writes_are_refused() {
    let (fx, _db, _) = two_snapshots();
    let before = fx.state();
    let err = fails(fx.cmd().args(["sql", "latest", "SELECT nosuch FROM items"]));
    assert_has(&err, &["no such column: nosuch"]);
    let err = fails(fx.cmd().args(["sql", "latest", "DELETE FROM items"]));
    assert_has(&err, &["readonly"]);
    // The rows of the statements before the failing one are printed, as the
    // sqlite3 shell does; then the error, exit 1.
    let out = fx
        .cmd()
        .args(["sql", "latest", "SELECT 7 AS n; CREATE TABLE x(a)"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "n\n-\n7\n(1 row)\n");
    assert_has(
        &String::from_utf8_lossy(&out.stderr),
        &["pagesnap: error: ", "readonly"],
    );
    fails_usage(fx.cmd().args(["sql", "latest", "  "]));
    fails_usage(
        fx.cmd()
            .args(["sql", "latest", "SELECT 1", "--cache", "lots"]),
    );
    let err = fails(fx.cmd().args(["sql", "deadbeef", "SELECT 1"]));
    assert_has(&err, &["deadbeef"]);
    fx.assert_unchanged(&before);
}

/// A damaged pack: the query that reads it fails, naming the chunk and the
/// snapshot; no rows are printed.
#[test]
fn sql_on_a_damaged_chunk_names_it() {
    let (fx, _db, [_, b]) = two_snapshots();
    for entry in files_under(&fx.store.join("packs")) {
        let mut bytes = std::fs::read(&entry).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x20;
        std::fs::write(&entry, bytes).unwrap();
    }
    let err = fails(
        fx.cmd()
            .args(["sql", "latest", "SELECT sum(length(body)) FROM items"]),
    );
    assert_has(&err, &["chunk", &b[..8]]);
}

/// `ls --json` lists every table and index with exact rows, and pages that add
/// up to the file's.
#[test]
fn ls_lists_tables_and_indexes() {
    let (fx, _db, _) = two_snapshots();
    let v = ok_json(fx.cmd().args(["--json", "ls", "latest"]));
    let restored = fx.path("r.db");
    fx.restore(&["latest"], &restored);
    let objects = v["objects"].as_array().unwrap();
    let by = |n: &str| {
        objects
            .iter()
            .find(|o| o["name"] == n)
            .unwrap_or_else(|| panic!("{n}: {v}"))
    };
    assert_eq!(by("items")["rows"], row_count(&restored));
    assert_eq!(by("items_name")["kind"], "index");
    assert_eq!(by("items_name")["table"], "items");
    assert_eq!(by("items_name")["rows"], row_count(&restored));
    assert_eq!(by("tags")["kind"], "table");
    let pages: u64 = objects.iter().map(|o| o["pages"].as_u64().unwrap()).sum();
    let c = rusqlite::Connection::open(&restored).unwrap();
    let want: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
    assert_eq!(pages as i64, want);
    assert_keys(
        &objects[0],
        &["name", "kind", "table", "rows", "pages", "bytes", "payload"],
    );
    let text = stdout_of(fx.cmd().args(["ls", "latest"]));
    assert_has(&text, &["NAME", "ROWS", "items_name", "tags"]);
}

/// `diff` names the tables and indexes whose pages changed, with what B's new
/// chunks cost; `--rows` lists the rows added, removed and changed.
#[test]
fn diff_names_what_changed() {
    let (fx, _db, [a, b]) = two_snapshots();
    let v = ok_json(fx.cmd().args(["--json", "diff", &a, &b]));
    let objects = v["objects"].as_array().unwrap();
    let items = objects
        .iter()
        .find(|o| o["name"] == "items")
        .expect("items changed");
    let touched = |o: &Value| {
        ["changed", "added", "freed"]
            .iter()
            .map(|k| o[k].as_u64().unwrap())
            .sum::<u64>()
    };
    assert!(touched(items) > 0, "{v}");
    let known = [
        "items",
        "items_name",
        "items_n",
        "tags",
        "sqlite_schema",
        "(free pages)",
    ];
    assert!(
        objects
            .iter()
            .all(|o| known.contains(&o["name"].as_str().unwrap())),
        "{v}"
    );
    let stored: u64 = objects
        .iter()
        .map(|o| o["stored_bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(stored, v["stored_bytes"].as_u64().unwrap());
    assert!(stored > 0);
    // The same snapshot twice: nothing changed.
    let same = ok_json(fx.cmd().args(["--json", "diff", &b, &b]));
    assert_eq!(same["objects"], Value::Array(vec![]), "{same}");
    assert_eq!(same["stored_bytes"], 0);
    let rows = ok_json(fx.cmd().args(["--json", "diff", &a, &b, "--rows", "items"]));
    assert_eq!(rows["key"], serde_json::json!(["rowid"]));
    for k in ["removed", "added", "changed"] {
        assert!(!rows[k].as_array().unwrap().is_empty(), "{k}: {rows}");
    }
    let text = stdout_of(fx.cmd().args(["diff", &a, &b, "--rows", "items"]));
    assert_has(&text, &["items:", "removed", "added", "changed"]);
    let err = fails(fx.cmd().args(["diff", &a, &b, "--rows", "nosuch"]));
    assert_has(&err, &["nosuch"]);
}

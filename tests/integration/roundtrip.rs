//! End to end: init, backups of a changing database, listing, byte-exact restores.

use crate::util::*;
use serde_json::Value;

/// One backup and what the database looked like when it was taken.
struct State {
    backup: Value,
    reference: String,
    rows: i64,
}

/// Backs up `db` and takes a reference copy of the same, unchanged state.
fn snap(fx: &Fx, db: &std::path::Path, i: usize, args: &[&str]) -> State {
    let backup = fx.backup(db, args);
    let reference = reference_copy(db, &fx.path(&format!("ref{i}.db")));
    assert_eq!(
        backup["image_hash"],
        Value::String(reference.clone()),
        "backup {i}: recorded image hash differs from a backup-API copy"
    );
    State {
        backup,
        reference,
        rows: row_count(db),
    }
}

#[test]
fn changing_database_round_trips_byte_exactly_through_wal_and_rollback_modes() {
    let fx = Fx::new();
    let db = fx.path("app.db");
    let conn = create_db(&db, Journal::Rollback, 2500, 1);
    let mut states = Vec::new();

    // 0, 1: rollback-journal source.
    states.push(snap(&fx, &db, 0, &["--time", &t(0)]));
    mutate(&conn, 1);
    states.push(snap(&fx, &db, 1, &["--time", &t(10)]));

    // 2, 3: the same database in WAL mode, with committed changes only in the
    // -wal file (no checkpoint) while the writer stays connected.
    set_journal(&conn, Journal::Wal);
    conn.execute_batch("PRAGMA wal_autocheckpoint=0;").unwrap();
    mutate(&conn, 2);
    let wal = fx.path("app.db-wal");
    assert!(
        std::fs::metadata(&wal).unwrap().len() > 0,
        "changes are in the WAL"
    );
    states.push(snap(&fx, &db, 2, &["--time", &t(20)]));
    mutate(&conn, 3);
    states.push(snap(&fx, &db, 3, &["--time", &t(30)]));

    // 4: WAL database with no connection open (the writer checkpointed and left).
    mutate(&conn, 4);
    drop(conn);
    assert!(!wal.exists(), "the last connection removed the WAL");
    states.push(snap(&fx, &db, 4, &["--time", &t(40)]));

    // Every state differs from the one before.
    for w in states.windows(2) {
        assert_ne!(w[0].reference, w[1].reference);
    }
    let list = fx.snapshots();
    assert_eq!(list.len(), states.len());
    for (i, s) in states.iter().enumerate() {
        // Listed oldest first with the backup's id, size and hash.
        assert_eq!(list[i]["id"], s.backup["id"]);
        assert_eq!(list[i]["image_hash"], s.backup["image_hash"]);
        assert_eq!(list[i]["pages"], s.backup["pages"]);
        // Every backup records an image check: 16 bytes in hex.
        let check = list[i]["image_check"].as_str().unwrap_or_default();
        assert_eq!(check.len(), 32, "{}", list[i]);
        assert!(check.bytes().all(|b| b.is_ascii_hexdigit()), "{check}");

        let out = fx.path(&format!("restored{i}.db"));
        let id = s.backup["id"].as_str().unwrap();
        let r = fx.restore(&[id], &out);
        assert_eq!(r["id"], s.backup["id"]);
        assert_eq!(r["image_hash"], s.backup["image_hash"]);
        assert_eq!(r["bytes"], s.backup["image_size"]);
        assert_eq!(r["checked_against"], "image_check");
        assert_restored(&out, &s.backup["image_hash"], &s.reference);
        assert_eq!(row_count(&out), s.rows, "snapshot {i} row count");
        assert_no_restore_temps(fx.dir.path());
    }
    // Later snapshots of a slightly changed database reuse most chunks.
    for s in &states[1..] {
        let reused = s.backup["reused_chunks"].as_u64().unwrap();
        let new = s.backup["new_chunks"].as_u64().unwrap();
        assert!(reused > new, "little dedup: {}", s.backup);
    }
    assert_no_store_temps(&fx.store);
}

#[test]
fn json_outputs_carry_the_documented_fields() {
    let fx = Fx::uninit();
    let init = ok_json(fx.cmd().args(["--json", "init", "--chunk-pages", "2"]));
    // The field lists are the README's.
    assert_keys(
        &init,
        &[
            "store",
            "store_id",
            "format_version",
            "chunk_pages",
            "compression_level",
            "pack_target_size",
            "dictionary",
            "deltas",
            "encrypted",
        ],
    );
    assert_eq!(init["encrypted"], false);
    assert_eq!(init["store"], Value::String(fx.store.display().to_string()));
    assert_eq!(init["store_id"].as_str().unwrap().len(), 64);
    assert_eq!(init["format_version"], 1);
    assert_eq!(init["chunk_pages"], 2);
    assert_eq!(init["compression_level"], 3);
    assert_eq!(init["pack_target_size"], 16 << 20);
    assert_eq!(init["dictionary"], true);
    assert_eq!(init["deltas"], false);

    let db = fx.path("app.db");
    drop(create_db(&db, Journal::Wal, 2000, 2));
    let b = fx.backup(&db, &["--time", "2026-01-01 00:10:00"]);
    assert_keys(
        &b,
        &[
            "id",
            "short_id",
            "name",
            "time",
            "pages",
            "page_size",
            "image_size",
            "image_hash",
            "chunks",
            "new_chunks",
            "reused_chunks",
            "zero_chunks",
            "new_raw_bytes",
            "bytes_added",
            "metadata_bytes",
            "packs_written",
            "new_base",
            "delta_entries",
            "dict_bytes",
            "delta_chunks",
            "delta_chunk_bytes",
            "delta_whole_bytes",
            "index_chunks",
            "index_load_secs",
            "index_cached",
            "parent_prints",
            "store_listed",
            "read_directly",
            "capture_fallback",
            "wal_guided",
            "unread_bytes",
            "duration_secs",
        ],
    );
    // A first backup has no parent to follow the WAL from.
    assert_eq!(b["wal_guided"], false);
    assert_eq!(b["unread_bytes"], 0);
    // The first backup loads an empty index, the whole of it (nothing is cached).
    assert_eq!(b["index_chunks"], 0);
    assert_eq!(b["index_cached"], false);
    assert!(b["index_load_secs"].as_f64().unwrap() >= 0.0);
    // A local store is listed by every backup (only stores that pay per
    // request keep a record of the listing).
    assert_eq!(b["store_listed"], true);
    let id = b["id"].as_str().unwrap();
    assert_eq!(id.len(), 64);
    assert!(id.bytes().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(b["short_id"], Value::String(id[..8].to_string()));
    assert_eq!(b["name"], "app");
    assert_eq!(b["time"], "2026-01-01T00:10:00Z");
    let image_size = std::fs::metadata(&db).unwrap().len();
    assert_eq!(b["image_size"], image_size);
    assert_eq!(b["page_size"], 4096);
    assert_eq!(b["pages"], image_size / 4096);
    assert_eq!(b["chunks"], (image_size / 4096).div_ceil(2));
    assert!(b["new_chunks"].as_u64().unwrap() > 0);
    assert!(b["bytes_added"].as_u64().unwrap() > 0);
    assert!(b["packs_written"].as_u64().unwrap() >= 1);
    assert_eq!(b["new_base"], true);
    assert!(b["duration_secs"].as_f64().unwrap() >= 0.0);
    for k in [
        "reused_chunks",
        "zero_chunks",
        "new_raw_bytes",
        "metadata_bytes",
    ] {
        assert!(b[k].is_u64(), "{k} in {b}");
    }

    let list = fx.snapshots();
    assert_eq!(list.len(), 1);
    let s = &list[0];
    assert_keys(
        s,
        &[
            "id",
            "short_id",
            "time",
            "name",
            "host",
            "source",
            "pages",
            "page_size",
            "image_size",
            "image_hash",
            "image_check",
            "tags",
        ],
    );
    for k in [
        "id",
        "short_id",
        "time",
        "name",
        "pages",
        "page_size",
        "image_size",
        "image_hash",
    ] {
        assert_eq!(s[k], b[k], "{k}");
    }
    assert_eq!(s["source"], Value::String(db.display().to_string()));
    assert!(s["host"].is_string());
    assert_eq!(s["tags"], serde_json::json!([]));

    let out = fx.path("out.db");
    let r = fx.restore(&["latest"], &out);
    assert_keys(
        &r,
        &[
            "id",
            "short_id",
            "name",
            "output",
            "bytes",
            "image_hash",
            "checked_against",
            "duration_secs",
        ],
    );
    assert_eq!(r["id"], b["id"]);
    assert_eq!(r["short_id"], b["short_id"]);
    assert_eq!(r["name"], "app");
    assert_eq!(r["output"], Value::String(out.display().to_string()));
    assert_eq!(r["bytes"], image_size);
    assert_eq!(r["image_hash"], b["image_hash"]);
    assert!(r["duration_secs"].as_f64().unwrap() >= 0.0);
    let reference = reference_copy(&db, &fx.path("ref.db"));
    assert_restored(&out, &b["image_hash"], &reference);
}

#[test]
fn unchanged_database_adds_no_chunks_and_no_packs() {
    let fx = Fx::new();
    let db = fx.path("app.db");
    drop(create_db(&db, Journal::Rollback, 2000, 3));
    let first = fx.backup(&db, &["--time", &t(0)]);
    assert!(first["new_chunks"].as_u64().unwrap() > 0);
    let packs = pack_files(&fx.store);
    let second = fx.backup(&db, &["--time", &t(1)]);
    assert_eq!(second["new_chunks"], 0, "{second}");
    assert_eq!(second["packs_written"], 0, "{second}");
    assert_eq!(second["image_hash"], first["image_hash"]);
    assert_eq!(second["reused_chunks"], first["new_chunks"]);
    assert_eq!(
        second["index_chunks"], first["new_chunks"],
        "the index holds every chunk"
    );
    assert_ne!(second["id"], first["id"]);
    assert!(
        second["bytes_added"].as_u64().unwrap() < 4096,
        "an unchanged backup only adds a small manifest: {second}"
    );
    assert_eq!(pack_files(&fx.store), packs, "no pack was written");
    assert_eq!(fx.snapshots().len(), 2);
}

#[test]
fn tags_and_names_are_listed_in_json_and_text() {
    let fx = Fx::new();
    let db = small_db(&fx, "app.db", 4);
    let b = fx.backup(
        &db,
        &[
            "--tag",
            "nightly",
            "--tag",
            "pre-upgrade",
            "--time",
            "2026-03-04 05:06:07",
        ],
    );
    fx.backup(&db, &["--name", "renamed", "--time", &t(0)]);
    let list = fx.snapshots();
    assert_eq!(list.len(), 2);
    let s = list.iter().find(|s| s["id"] == b["id"]).unwrap();
    assert_eq!(s["tags"], serde_json::json!(["nightly", "pre-upgrade"]));
    assert_eq!(s["name"], "app");
    assert_eq!(s["time"], "2026-03-04T05:06:07Z");
    assert_eq!(s["short_id"], b["short_id"]);
    assert_eq!(s["pages"], b["pages"]);
    assert_eq!(s["image_size"], b["image_size"]);
    assert_eq!(s["image_hash"], b["image_hash"]);
    let other = list.iter().find(|s| s["id"] != b["id"]).unwrap();
    assert_eq!(other["name"], "renamed");
    assert_eq!(other["tags"], serde_json::json!([]));

    let text = String::from_utf8(ok(fx.cmd().arg("snapshots"))).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with(b["short_id"].as_str().unwrap()))
        .unwrap_or_else(|| panic!("no line for the snapshot in:\n{text}"));
    assert_has(
        line,
        &["2026-03-04 05:06:07 UTC", "app", "nightly,pre-upgrade"],
    );
    assert_has(&text, &["ID", "TIME", "2 snapshot(s)", "renamed"]);

    // --name filters the listing.
    let only = ok_json(fx.cmd().args(["--json", "snapshots", "--name", "renamed"]));
    assert_eq!(only.as_array().unwrap().len(), 1);
    assert_eq!(only[0]["name"], "renamed");
}

#[test]
fn restore_to_stdout_writes_the_exact_image() {
    let fx = Fx::new();
    let db = fx.path("app.db");
    drop(create_db(&db, Journal::Wal, 2000, 5));
    let b = fx.backup(&db, &[]);
    let reference = fx.path("ref.db");
    let ref_hash = reference_copy(&db, &reference);
    let out = fx
        .cmd()
        .args(["restore", "latest", "-o", "-"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, std::fs::read(&reference).unwrap());
    assert_eq!(Value::String(hash_bytes(&out.stdout)), b["image_hash"]);
    assert_eq!(hash_bytes(&out.stdout), ref_hash);
    let stdout_copy = fx.path("stdout.db");
    std::fs::write(&stdout_copy, &out.stdout).unwrap();
    assert_eq!(integrity(&stdout_copy), "ok");
    assert_has(
        &String::from_utf8_lossy(&out.stderr),
        &["to stdout", b["short_id"].as_str().unwrap()],
    );
    // No file named "-" appears.
    assert!(!fx.path("-").exists());

    // --json would mix with the image on stdout: refused.
    // With --json the error is a JSON object on stderr; a usage error: exit 2.
    let out = fx
        .cmd()
        .args(["--json", "restore", "latest", "-o", "-"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(err["code"], 2);
    assert_has(
        err["message"].as_str().unwrap(),
        &["--json cannot be combined with -o -"],
    );
}

#[test]
fn store_can_come_from_the_environment() {
    let fx = Fx::uninit();
    let db = small_db(&fx, "app.db", 6);
    ok(bin().env("PAGESNAP_STORE", &fx.store).arg("init"));
    assert!(fx.store.join("config").is_file());
    let out = ok(bin()
        .env("PAGESNAP_STORE", &fx.store)
        .args(["--json", "backup"])
        .arg(&db));
    let b: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(fx.snapshots()[0]["id"], b["id"]);
    // --store wins over the environment.
    let other = fx.path("other");
    ok(ps(&other).env("PAGESNAP_STORE", &fx.store).arg("init"));
    ok(ps(&other)
        .env("PAGESNAP_STORE", &fx.store)
        .arg("backup")
        .arg(&db));
    assert_eq!(fx.snapshots().len(), 1);
    let o = ok_json(ps(&other).args(["--json", "snapshots"]));
    assert_eq!(o.as_array().unwrap().len(), 1);
}

#[test]
fn default_store_follows_xdg_data_home_then_home() {
    let fx = Fx::uninit();
    let db = small_db(&fx, "app.db", 7);
    let xdg = fx.path("xdg");
    let home = fx.path("home");
    let with_env = |c: &mut assert_cmd::Command, xdg_value: &std::path::Path| {
        c.env("XDG_DATA_HOME", xdg_value).env("HOME", &home);
    };
    let mut c = bin();
    with_env(&mut c, &xdg);
    ok(c.arg("init"));
    assert!(xdg.join("pagesnap/store/config").is_file());
    let mut c = bin();
    with_env(&mut c, &xdg);
    ok(c.arg("backup").arg(&db));
    // An empty XDG_DATA_HOME falls back to ~/.local/share.
    let mut c = bin();
    with_env(&mut c, std::path::Path::new(""));
    ok(c.arg("init"));
    assert!(home.join(".local/share/pagesnap/store/config").is_file());
    let a = ok_json(ps(&xdg.join("pagesnap/store")).args(["--json", "snapshots"]));
    let b = ok_json(ps(&home.join(".local/share/pagesnap/store")).args(["--json", "snapshots"]));
    assert_eq!(
        (a.as_array().unwrap().len(), b.as_array().unwrap().len()),
        (1, 0)
    );
}

#[test]
fn command_line_syntax_errors_exit_with_2() {
    let fx = Fx::new();
    let err = fails(fx.cmd().arg("restore"));
    assert_has(&err, &["--output"]);
    let err = fails(fx.cmd().args(["backup"]));
    assert_has(&err, &["<DATABASE>"]);
    let err = fails(fx.cmd().args(["frobnicate"]));
    assert_has(&err, &["frobnicate"]);
    let err = fails(fx.cmd().args(["init", "--chunk-pages", "two"]));
    assert_has(&err, &["two"]);
    assert!(fx.snapshots().is_empty());
}

#[test]
fn every_help_has_examples() {
    for sub in ["init", "backup", "snapshots", "restore"] {
        let out = ok(bin().args([sub, "--help"]));
        let text = String::from_utf8(out).unwrap();
        let examples = text
            .split_once("Examples:")
            .unwrap_or_else(|| panic!("no Examples in `{sub} --help`:\n{text}"))
            .1;
        assert!(
            examples.contains(&format!(" {sub}")),
            "examples of {sub} do not use it:\n{text}"
        );
    }
    let top = String::from_utf8(ok(bin().arg("--help"))).unwrap();
    assert_has(&top, &["Examples", "PAGESNAP_STORE"]);
}

/// Backups use this machine's local index cache and fingerprints from the
/// second on, and `--no-cache` makes one read every index object and hash every
/// page instead, as `--paranoid` does for the pages; either way the snapshots
/// restore byte for byte, and the cache lives in `PAGESNAP_CACHE_DIR`.
#[test]
fn backups_use_the_local_index_cache_unless_no_cache() {
    let fx = Fx::new();
    let cache = fx.path("cache");
    let db = fx.path("app.db");
    let conn = create_db(&db, Journal::Wal, 1500, 7);
    let backup = |args: &[&str]| {
        ok_json(
            fx.cmd()
                .env("PAGESNAP_CACHE_DIR", &cache)
                .args(args)
                .arg("--json")
                .arg("backup")
                .arg(&db),
        )
    };
    let first = backup(&[]);
    assert_eq!(first["index_cached"], false);
    assert_eq!(first["parent_prints"], false);
    mutate(&conn, 1);
    let second = backup(&[]);
    assert_eq!(second["index_cached"], true);
    assert_eq!(second["parent_prints"], true);
    mutate(&conn, 2);
    let third = backup(&["--no-cache"]);
    assert_eq!(third["index_cached"], false);
    assert_eq!(third["parent_prints"], false);
    // That backup left the cache alone, so this machine has no resolved map of
    // the next one's parent, nor its prints: it takes the long way once, hashes
    // every page, and writes them.
    mutate(&conn, 3);
    let fourth = backup(&[]);
    assert_eq!(fourth["index_cached"], false);
    assert_eq!(fourth["parent_prints"], false);
    mutate(&conn, 4);
    let fifth = backup(&[]);
    assert_eq!(fifth["index_cached"], true);
    assert_eq!(fifth["parent_prints"], true);
    let reference = reference_copy(&db, &fx.path("ref.db"));
    let out = fx.path("out.db");
    fx.restore(&["latest"], &out);
    assert_restored(&out, &fifth["image_hash"], &reference);
    // --paranoid hashes every page: the same snapshot content, not compared.
    mutate(&conn, 5);
    let paranoid = ok_json(
        fx.cmd()
            .env("PAGESNAP_CACHE_DIR", &cache)
            .args(["--json", "backup", "--paranoid"])
            .arg(&db),
    );
    assert_eq!(paranoid["parent_prints"], false);
    let reference = reference_copy(&db, &fx.path("ref2.db"));
    let out = fx.path("out2.db");
    fx.restore(&["latest"], &out);
    assert_restored(&out, &paranoid["image_hash"], &reference);
    // The cache is where the variable says, under the store's id (the one
    // folder there: 64 hex digits).
    let stores: Vec<std::path::PathBuf> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(stores.len(), 1, "{stores:?}");
    let name = stores[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        name.len() == 64 && name.bytes().all(|c| c.is_ascii_hexdigit()),
        "{name}"
    );
    let chunks = stores[0].join("index").join("chunks");
    assert!(chunks.is_file(), "{} missing", chunks.display());
}

/// The fixture stores of the format (one whose manifests predate the image check,
/// one whose manifests carry it) restore through the CLI byte for byte, and the
/// JSON says what the bytes were checked against.
#[test]
fn fixture_stores_restore_through_the_cli() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let dir = tempfile::tempdir().unwrap();
    for (fixture, checked) in [("v1", "image_hash"), ("v1-image-check", "image_check")] {
        let expected = std::fs::read_to_string(root.join(fixture).join("expected.txt")).unwrap();
        let newest = expected
            .lines()
            .rfind(|l| !l.starts_with('#') && !l.trim().is_empty())
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>();
        let out = dir.path().join(format!("{fixture}.db"));
        let r = ok_json(
            ps(&root.join(fixture).join("store"))
                .env("PAGESNAP_CACHE_DIR", dir.path())
                .args(["--json", "restore", "latest", "-o", out.to_str().unwrap()]),
        );
        assert_eq!(r["id"], newest[0], "{fixture}");
        assert_eq!(r["checked_against"], checked, "{fixture}");
        assert_eq!(hash_file(&out), newest[2], "{fixture}");
        assert_eq!(integrity(&out), "ok");
    }
}

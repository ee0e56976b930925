//! `pagesnap tag` (a new manifest replaces the old one) and the filters of
//! `pagesnap snapshots` (`--tag`, `--host`, `--latest`).

use crate::util::*;
use serde_json::Value;

/// `snapshots --json ARGS...`: the short ids, oldest first.
fn listed(fx: &Fx, args: &[&str]) -> Vec<String> {
    match ok_json(fx.cmd().args(["--json", "snapshots"]).args(args)) {
        Value::Array(a) => a
            .iter()
            .map(|s| s["short_id"].as_str().unwrap().to_string())
            .collect(),
        v => panic!("not an array: {v}"),
    }
}

fn tag_json(fx: &Fx, args: &[&str]) -> Value {
    ok_json(fx.cmd().args(["--json", "tag"]).args(args))
}

#[test]
fn retagging_replaces_the_manifest_and_restores_the_same_bytes() {
    let fx = Fx::new();
    let db = small_db(&fx, "app.db", 1);
    let b1 = fx.backup(
        &db,
        &["--tag", "nightly", "--tag", "hourly", "--time", &t(0)],
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    mutate(&conn, 1);
    drop(conn);
    let b2 = fx.backup(&db, &["--time", &t(10)]);
    let old = b1["id"].as_str().unwrap().to_string();
    let before = fx.path("before.db");
    fx.restore(&[&old], &before);
    let v = tag_json(&fx, &[&old[..8], "--add", "keep", "--remove", "nightly"]);
    assert_eq!(v["changed"], 1, "{v}");
    let r = &v["snapshots"][0];
    assert_eq!(r["old_id"], old.as_str());
    assert_eq!(r["old_tags"], serde_json::json!(["nightly", "hourly"]));
    assert_eq!(r["tags"], serde_json::json!(["hourly", "keep"]));
    assert_eq!(r["name"], "app");
    assert_eq!(r["changed"], true);
    let new = r["new_id"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    // The old id is gone, the new one is there with the new tags and the same time and image.
    let snaps = fx.snapshots();
    assert_eq!(snaps.len(), 2);
    assert!(snaps.iter().all(|s| s["id"] != old.as_str()));
    let s = snaps.iter().find(|s| s["id"] == new.as_str()).unwrap();
    assert_eq!(s["tags"], serde_json::json!(["hourly", "keep"]));
    assert_eq!(s["time"], b1["time"]);
    assert_eq!(s["image_hash"], b1["image_hash"]);
    let e = fails(fx.cmd().args(["restore", &old, "-o"]).arg(fx.path("x.db")));
    assert_has(&e, &["no snapshot matches"]);
    // Byte-identical restore, and the later snapshot (whose parent was the old id) too.
    let after = fx.path("after.db");
    fx.restore(&[&new], &after);
    assert_eq!(hash_file(&after), hash_file(&before));
    assert_eq!(Value::String(hash_file(&after)), b1["image_hash"]);
    let later = fx.path("later.db");
    fx.restore(&[b2["id"].as_str().unwrap()], &later);
    assert_eq!(Value::String(hash_file(&later)), b2["image_hash"]);
    let v = ok_json(fx.cmd().args(["--json", "verify", "--read-data"]));
    assert_eq!(v["healthy"], true, "{v}");
    // A next backup (its parent found by name) still works.
    let conn = rusqlite::Connection::open(&db).unwrap();
    mutate(&conn, 2);
    drop(conn);
    fx.backup(&db, &["--time", &t(20)]);
    // Tags that do not change keep the manifest and the id.
    let v = tag_json(&fx, &[&new, "--add", "keep"]);
    assert_eq!(v["changed"], 0);
    assert_eq!(v["snapshots"][0]["new_id"], new.as_str());
    // Text output: old -> new.
    let out = String::from_utf8(ok(fx.cmd().args(["tag", &new, "--set", ""]))).unwrap();
    assert!(out.starts_with(&format!("{} -> ", &new[..8])), "{out}");
    assert!(out.contains("no tags"), "{out}");
}

#[test]
fn retention_by_tag_sees_the_new_tags() {
    let fx = Fx::new();
    let db = small_db(&fx, "app.db", 2);
    let first = fx.backup(&db, &["--time", &t(0)]);
    for i in 1..=3u32 {
        let conn = rusqlite::Connection::open(&db).unwrap();
        mutate(&conn, i as u64);
        drop(conn);
        fx.backup(&db, &["--time", &t(10 * i)]);
    }
    let v = tag_json(&fx, &[first["id"].as_str().unwrap(), "--add", "release"]);
    let new = v["snapshots"][0]["new_id"].as_str().unwrap().to_string();
    let v = ok_json(fx.cmd().args([
        "--json",
        "forget",
        "--keep-last",
        "1",
        "--keep-tag",
        "release",
    ]));
    assert_eq!(v["removed"], 2, "{v}");
    let ids: Vec<Value> = fx.snapshots().iter().map(|s| s["id"].clone()).collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(
        ids[0],
        new.as_str(),
        "the retagged snapshot was kept by its tag"
    );
}

#[test]
fn snapshots_filter_by_tag_host_and_latest() {
    let fx = Fx::new();
    let a = small_db(&fx, "a.db", 3);
    let b = small_db(&fx, "b.db", 4);
    let id = |v: Value| v["short_id"].as_str().unwrap().to_string();
    let a1 = id(fx.backup(&a, &["--tag", "x", "--time", &t(0)]));
    let b1 = id(fx.backup(&b, &["--tag", "x", "--tag", "y", "--time", &t(1)]));
    let conn = rusqlite::Connection::open(&a).unwrap();
    mutate(&conn, 1);
    drop(conn);
    let a2 = id(fx.backup(&a, &["--tag", "y", "--time", &t(2)]));
    let conn = rusqlite::Connection::open(&a).unwrap();
    mutate(&conn, 2);
    drop(conn);
    let a3 = id(fx.backup(&a, &["--time", &t(3)]));
    // `--tag x,y`: both; repeated: either; `--tag ''`: no tags.
    assert_eq!(listed(&fx, &["--tag", "x,y"]), vec![b1.clone()]);
    assert_eq!(
        listed(&fx, &["--tag", "x", "--tag", "y"]),
        [a1.clone(), b1.clone(), a2.clone()]
    );
    assert_eq!(listed(&fx, &["--tag", ""]), vec![a3.clone()]);
    assert_eq!(listed(&fx, &["--tag", "nope"]), Vec::<String>::new());
    // `--latest N`: the newest N of each database, after the other filters.
    assert_eq!(listed(&fx, &["--latest", "1"]), [b1.clone(), a3.clone()]);
    assert_eq!(
        listed(&fx, &["--latest", "2", "--name", "a"]),
        [a2.clone(), a3.clone()]
    );
    assert_eq!(
        listed(&fx, &["--latest", "1", "--tag", "x"]),
        [a1.clone(), b1.clone()]
    );
    // `--host`: this machine's snapshots, or none of another's.
    let host = fx.snapshots()[0]["host"].as_str().unwrap().to_string();
    assert_eq!(listed(&fx, &["--host", &host]).len(), 4);
    assert!(listed(&fx, &["--host", "elsewhere"]).is_empty());
    assert_eq!(
        listed(&fx, &["--host", "elsewhere", "--host", &host]).len(),
        4
    );
    // The text table has a HOST column.
    let text = String::from_utf8(ok(fx.cmd().args(["snapshots", "--tag", "x,y"]))).unwrap();
    let mut lines = text.lines();
    let head = lines.next().unwrap();
    assert!(head.contains("  HOST  "), "{head}");
    let row = lines.next().unwrap();
    assert!(row.contains(&format!("  {host}")), "{row}");
    assert!(text.ends_with("1 snapshot(s)\n"), "{text}");
    // A bad N is a syntax error.
    fails_usage_clap(fx.cmd().args(["snapshots", "--latest", "many"]));
}

/// clap's own usage errors: exit 2, `error: …`, nothing on stdout.
fn fails_usage_clap(cmd: &mut assert_cmd::Command) -> String {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(out.stdout.is_empty());
    stderr
}

#[test]
fn bad_flags_and_unknown_snapshots_change_nothing() {
    let fx = Fx::new();
    let db = small_db(&fx, "app.db", 5);
    let b = fx.backup(&db, &["--tag", "x"]);
    let id = b["id"].as_str().unwrap();
    let before = fx.state();
    let e = fails_usage_clap(fx.cmd().args(["tag", id, "--set", "a", "--add", "b"]));
    assert!(e.contains("--set"), "{e}");
    let e = fails_usage_clap(fx.cmd().args(["tag", id]));
    assert!(e.contains("required"), "{e}");
    fails_usage_clap(fx.cmd().args(["tag", "--add", "b"]));
    // An unknown id: exit 1, named; the known one given with it is not retagged either.
    let e = fails(fx.cmd().args(["tag", id, "deadbeef", "--add", "b"]));
    assert_has(&e, &["no snapshot matches \"deadbeef\""]);
    let e = fails(fx.cmd().args(["tag", id, "--add", "a/b"]));
    assert_has(&e, &["invalid tag", "\"a/b\""]);
    fx.assert_unchanged(&before);
}

#[test]
fn a_crash_between_publishing_and_deleting_converges_on_a_rerun() {
    let fx = Fx::new();
    let db = small_db(&fx, "app.db", 6);
    let b = fx.backup(&db, &["--tag", "x"]);
    let old = b["id"].as_str().unwrap().to_string();
    // Writes: the lock, the new manifest; the third (deleting the old one) aborts.
    let out = fx
        .cmd()
        .env("PAGESNAP_FAULT_AFTER", "2")
        .args(["tag", &old, "--add", "y"])
        .output()
        .unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&out.status),
        Some(6),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Both are there: the same snapshot under its old tags and its new ones.
    let snaps = fx.snapshots();
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    assert!(snaps.iter().all(|s| s["image_hash"] == b["image_hash"]));
    ok(fx.cmd().arg("unlock"));
    // The same command again finishes the job.
    let v = tag_json(&fx, &[&old, "--add", "y"]);
    let new = v["snapshots"][0]["new_id"].as_str().unwrap();
    let snaps = fx.snapshots();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert_eq!(snaps[0]["id"], new);
    assert_eq!(snaps[0]["tags"], serde_json::json!(["x", "y"]));
    let out = fx.path("out.db");
    fx.restore(&[new], &out);
    assert_eq!(Value::String(hash_file(&out)), b["image_hash"]);
}

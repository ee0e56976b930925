//! Choosing the snapshot to restore: full id, unique prefix, `latest`, `--at`,
//! `--name`, and the errors when the choice is impossible or ambiguous.

use crate::util::*;
use serde_json::Value;

/// A store with three snapshots of `app` at 00:00, 01:00 and 02:00 (the database
/// changes between them) and their reference hashes.
fn three_snapshots() -> (Fx, Vec<(Value, String)>) {
    let fx = Fx::new();
    let db = fx.path("app.db");
    let conn = create_db(&db, Journal::Wal, 1500, 10);
    let mut snaps = Vec::new();
    for i in 0..3u32 {
        if i > 0 {
            mutate(&conn, i as u64);
        }
        let b = fx.backup(&db, &["--time", &t(60 * i)]);
        let r = reference_copy(&db, &fx.path(&format!("ref{i}.db")));
        assert_eq!(b["image_hash"], Value::String(r.clone()));
        snaps.push((b, r));
    }
    (fx, snaps)
}

/// Restores with `args` to a new file and returns which snapshot (index) it was,
/// checking the file byte for byte.
fn restored_index(fx: &Fx, snaps: &[(Value, String)], args: &[&str]) -> usize {
    let out = fx.path("out.db");
    let _ = std::fs::remove_file(&out);
    let r = fx.restore(args, &out);
    let i = snaps
        .iter()
        .position(|(b, _)| b["id"] == r["id"])
        .unwrap_or_else(|| panic!("restored an unknown snapshot: {r}"));
    assert_restored(&out, &snaps[i].0["image_hash"], &snaps[i].1);
    i
}

fn id(v: &Value) -> &str {
    v["id"].as_str().unwrap()
}

#[test]
fn by_full_id_unique_prefix_latest_and_at() {
    let (fx, snaps) = three_snapshots();
    for (i, (b, _)) in snaps.iter().enumerate() {
        assert_eq!(restored_index(&fx, &snaps, &[id(b)]), i);
        // The shortest prefix no other snapshot shares, and its upper-case form.
        let full = id(b);
        let len = (1..=64)
            .find(|&n| {
                snaps
                    .iter()
                    .filter(|(o, _)| id(o).starts_with(&full[..n]))
                    .count()
                    == 1
            })
            .unwrap();
        assert_eq!(restored_index(&fx, &snaps, &[&full[..len]]), i);
        let upper = full[..len.max(4)].to_ascii_uppercase();
        assert_eq!(restored_index(&fx, &snaps, &[&upper]), i);
        assert_eq!(
            restored_index(&fx, &snaps, &[b["short_id"].as_str().unwrap()]),
            i
        );
    }
    assert_eq!(restored_index(&fx, &snaps, &["latest"]), 2);
    assert_eq!(restored_index(&fx, &snaps, &[]), 2, "latest is the default");

    // --at is inclusive and picks the newest at or before, in every accepted form.
    let at = |a: &str| restored_index(&fx, &snaps, &["--at", a]);
    assert_eq!(at("2026-01-01T00:00:00Z"), 0);
    assert_eq!(at("2026-01-01T00:59:59Z"), 0);
    assert_eq!(at("2026-01-01T01:00:00Z"), 1, "at is inclusive");
    assert_eq!(at("2026-01-01 01:00:00"), 1);
    assert_eq!(at("2026-01-01 01:59:59"), 1);
    assert_eq!(at("2026-01-01T03:30:00+02:00"), 1, "offsets are honoured");
    assert_eq!(at("2026-01-01 02:00:00"), 2);
    assert_eq!(at("2030-06-01T00:00:00Z"), 2);
    assert_eq!(restored_index(&fx, &snaps, &["latest", "--at", &t(61)]), 1);
}

#[test]
fn name_chooses_among_databases_and_latest_is_ambiguous_without_it() {
    let fx = Fx::new();
    let app = small_db(&fx, "app.db", 20);
    let other = small_db(&fx, "other.db", 21);
    let a0 = fx.backup(&app, &["--time", &t(0)]);
    let o0 = fx.backup(&other, &["--time", &t(5)]);
    let a1 = fx.backup(&app, &["--time", &t(10), "--tag", "second"]);
    assert_ne!(a0["image_hash"], o0["image_hash"]);
    let before = fx.state();

    let out = fx.path("out.db");
    let err = fails(fx.cmd().args(["restore", "latest", "-o"]).arg(&out));
    assert_has(&err, &["several databases", "app, other", "--name"]);
    assert_no_output(&out);
    let err = fails(fx.cmd().args(["restore", "--at", &t(7), "-o"]).arg(&out));
    assert_has(&err, &["several databases", "--name"]);
    assert_no_output(&out);
    fx.assert_unchanged(&before);

    let check = |args: &[&str], want: &Value| {
        let _ = std::fs::remove_file(&out);
        let r = fx.restore(args, &out);
        assert_eq!(r["id"], want["id"]);
        assert_eq!(Value::String(hash_file(&out)), want["image_hash"]);
        assert_eq!(integrity(&out), "ok");
    };
    check(&["latest", "--name", "other"], &o0);
    check(&["--name", "app"], &a1);
    check(&["--name", "app", "--at", &t(9)], &a0);
    check(&["--name", "other", "--at", &t(100)], &o0);
    let reference = reference_copy(&app, &fx.path("ref.db"));
    let _ = std::fs::remove_file(&out);
    fx.restore(&["--name", "app"], &out);
    assert_restored(&out, &a1["image_hash"], &reference);

    // A name with no snapshots.
    let _ = std::fs::remove_file(&out);
    let err = fails(fx.cmd().args(["restore", "--name", "nope", "-o"]).arg(&out));
    assert_has(&err, &["no snapshots of \"nope\""]);
    assert_no_output(&out);
}

#[test]
fn ambiguous_prefix_lists_the_candidates() {
    let fx = Fx::new();
    let db = small_db(&fx, "app.db", 30);
    // 17 snapshots: two must share their first hex digit.
    for i in 0..17 {
        fx.backup(&db, &["--time", &t(i)]);
    }
    let list = fx.snapshots();
    assert_eq!(list.len(), 17);
    let first = |s: &Value| s["id"].as_str().unwrap()[..1].to_string();
    let prefix = (0..16u32)
        .map(|d| format!("{d:x}"))
        .find(|p| list.iter().filter(|s| first(s) == *p).count() >= 2)
        .expect("pigeonhole");
    let before = fx.state();
    let out = fx.path("out.db");
    let err = fails(fx.cmd().args(["restore", &prefix, "-o"]).arg(&out));
    assert_has(&err, &[&format!("{prefix:?} is ambiguous")]);
    for s in &list {
        let short = s["short_id"].as_str().unwrap();
        assert_eq!(
            err.contains(short),
            first(s) == prefix,
            "candidate {short} listed wrongly in: {err}"
        );
    }
    assert_no_output(&out);
    fx.assert_unchanged(&before);
}

#[test]
fn unknown_or_malformed_id_is_refused() {
    let fx = Fx::new();
    let db = small_db(&fx, "app.db", 40);
    let b = fx.backup(&db, &[]);
    let before = fx.state();
    let id = b["id"].as_str().unwrap();
    // Same length, first digit changed: matches nothing.
    let first = if id.starts_with('0') { "1" } else { "0" };
    let unknown = format!("{first}{}", &id[1..]);
    let out = fx.path("out.db");
    let err = fails(fx.cmd().args(["restore", &unknown, "-o"]).arg(&out));
    assert_has(&err, &["no snapshot matches", &unknown]);
    assert_no_output(&out);
    let err = fails_usage(fx.cmd().args(["restore", "xyz!", "-o"]).arg(&out));
    assert_has(&err, &["\"xyz!\" is not a hexadecimal snapshot id"]);
    assert_no_output(&out);
    let long = format!("{id}0");
    let err = fails_usage(fx.cmd().args(["restore", &long, "-o"]).arg(&out));
    assert_has(&err, &["not a hexadecimal snapshot id"]);
    assert_no_output(&out);
    fx.assert_unchanged(&before);
}

#[test]
fn at_before_every_snapshot_names_the_earliest() {
    let fx = Fx::new();
    let db = small_db(&fx, "app.db", 50);
    fx.backup(&db, &["--time", "2026-01-01 00:10:00"]);
    fx.backup(&db, &["--time", "2026-01-02 00:00:00"]);
    let before = fx.state();
    let out = fx.path("out.db");
    let err = fails(
        fx.cmd()
            .args(["restore", "--at", "2026-01-01 00:09:59", "-o"])
            .arg(&out),
    );
    assert_has(
        &err,
        &[
            "no snapshot at or before",
            "earliest is from 2026-01-01T00:10:00Z",
        ],
    );
    assert_no_output(&out);
    fx.assert_unchanged(&before);
}

#[test]
fn a_leap_second_is_refused_with_exit_2_before_anything_is_written() {
    let fx = Fx::new();
    let db = small_db(&fx, "app.db", 61);
    fx.backup(&db, &["--time", &t(0)]);
    let before = fx.state();
    for bad in [
        "2026-01-01T00:00:60Z",
        "2026-12-31T23:59:60.5Z",
        "2026-12-31 23:59:60",
    ] {
        let err = fails_usage(fx.cmd().args(["backup", "--time", bad]).arg(&db));
        assert_has(&err, &["invalid time", bad, "leap second"]);
        fx.assert_unchanged(&before);
    }
    // The store is whole: every command still works on it.
    ok(fx.cmd().arg("verify"));
    ok(fx.cmd().args(["prune", "--dry-run"]));
}

#[test]
fn invalid_time_syntax_is_refused_before_anything_is_written() {
    let fx = Fx::new();
    let db = small_db(&fx, "app.db", 60);
    fx.backup(&db, &["--time", &t(0)]);
    let before = fx.state();
    for bad in [
        "yesterday",
        "2026-13-01 00:00:00",
        "2026-01-01 25:00:00",
        "",
    ] {
        let err = fails_usage(fx.cmd().args(["backup", "--time", bad]).arg(&db));
        assert_has(&err, &["invalid time", "RFC 3339"]);
        let out = fx.path("out.db");
        let err = fails_usage(fx.cmd().args(["restore", "--at", bad, "-o"]).arg(&out));
        assert_has(&err, &["invalid time", &format!("{bad:?}")]);
        assert_no_output(&out);
    }
    let err = fails_usage(
        fx.cmd()
            .args(["backup", "--busy-timeout", "5 parsecs"])
            .arg(&db),
    );
    assert_has(&err, &["invalid duration", "5 parsecs"]);
    // --at with an explicit id is contradictory.
    let id = before.snapshots[0]["id"].as_str().unwrap().to_string();
    let out = fx.path("out.db");
    let err = fails_usage(
        fx.cmd()
            .args(["restore", &id, "--at", &t(5), "-o"])
            .arg(&out),
    );
    assert_has(&err, &["--at picks the snapshot by time"]);
    assert_no_output(&out);
    fx.assert_unchanged(&before);
}

//! Retention and garbage collection: `forget` (by policy and by id), `policy`,
//! `prune`, `gc`, `unlock`, `snapshots --unique-bytes`, and their refusals.

use crate::util::*;
use rusqlite::Connection;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

/// `2026-01-DDTHH:MM:00Z` (day 1-based).
pub fn at(day: u32, hour: u32, minute: u32) -> String {
    format!("2026-01-{day:02}T{hour:02}:{minute:02}:00Z")
}

/// Ids of `snapshots --json` (optionally of one database).
pub fn ids(fx: &Fx, name: Option<&str>) -> BTreeSet<String> {
    fx.snapshots()
        .into_iter()
        .filter(|s| name.is_none_or(|n| s["name"] == n))
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// Restores every snapshot of the store and asserts each is byte-exact (its blake3
/// is the recorded `image_hash`) and passes `PRAGMA integrity_check`.
#[track_caller]
pub fn assert_all_restore(fx: &Fx) -> usize {
    let snaps = fx.snapshots();
    for s in &snaps {
        let out = fx.path("check-restore.db");
        let _ = std::fs::remove_file(&out);
        fx.restore(&[s["id"].as_str().unwrap()], &out);
        assert_eq!(
            Value::String(hash_file(&out)),
            s["image_hash"],
            "snapshot {} restored differently",
            s["id"]
        );
        assert_eq!(integrity(&out), "ok", "snapshot {}", s["id"]);
        std::fs::remove_file(&out).unwrap();
    }
    snaps.len()
}

/// Total bytes of the files under `dir`, except temporary files (`.tmp-*`, which a
/// process killed while writing leaves behind).
pub fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else if !e.file_name().to_string_lossy().starts_with(".tmp-") {
                total += m.len();
            }
        }
    }
    total
}

/// Number of lock objects under `locks/` (not counting temporary files).
pub fn lock_count(store: &Path) -> usize {
    std::fs::read_dir(store.join("locks"))
        .map(|rd| {
            rd.filter(|e| {
                !e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".tmp-")
            })
            .count()
        })
        .unwrap_or(0)
}

/// A store with `n` snapshots of one changing database `app`, one per hour from
/// 2026-01-01 00:00. Returns the open connection to the database.
pub fn history(fx: &Fx, n: u32, rows: usize) -> Connection {
    let db = fx.path("app.db");
    let conn = create_db(&db, Journal::Rollback, rows, 7);
    for i in 0..n {
        if i > 0 {
            mutate(&conn, i as u64);
        }
        fx.backup(&db, &["--time", &at(1 + i / 24, i % 24, 0)]);
    }
    conn
}

fn forget_json(fx: &Fx, args: &[&str]) -> Value {
    ok_json(fx.cmd().args(["--json", "forget"]).args(args))
}

fn prune_json(fx: &Fx, args: &[&str]) -> Value {
    ok_json(fx.cmd().args(["--json", "prune"]).args(args))
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

#[test]
fn forget_by_policy_dry_run_lists_then_the_real_run_removes_exactly_those() {
    let fx = Fx::new();
    let app = small_db(&fx, "app.db", 1);
    let other = small_db(&fx, "other.db", 2);
    let conn = Connection::open(&app).unwrap();
    // Every 2 hours for 3 days: 36 snapshots of app.
    let mut times = Vec::new();
    for day in 1..=3 {
        for hour in (0..24).step_by(2) {
            mutate(&conn, (day * 100 + hour) as u64);
            let time = at(day, hour, 0);
            let v = fx.backup(&app, &["--time", &time]);
            times.push((time, v["id"].as_str().unwrap().to_string()));
        }
    }
    for (i, day) in [1, 2, 3].iter().enumerate() {
        fx.backup(
            &other,
            &["--time", &at(*day, 5, 0), "--tag", &format!("o{i}")],
        );
    }
    let other_before = ids(&fx, Some("other"));
    assert_eq!(other_before.len(), 3);
    let before = fx.state();

    let plan = forget_json(
        &fx,
        &[
            "--name",
            "app",
            "--keep-last",
            "2",
            "--keep-daily",
            "2",
            "--dry-run",
        ],
    );
    fx.assert_unchanged(&before);
    assert_eq!(plan["dry_run"], true, "{plan}");
    // Forgetting 33 of 36 snapshots frees the chunks only they held.
    assert!(plan["prune_would_free"].as_u64().unwrap() > 0, "{plan}");
    let decisions = plan["snapshots"].as_array().unwrap();
    assert_eq!(decisions.len(), 36, "only app's snapshots are judged");
    assert!(decisions.iter().all(|d| d["name"] == "app"));
    let keep: BTreeSet<String> = decisions
        .iter()
        .filter(|d| d["keep"] == true)
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    let remove: BTreeSet<String> = decisions
        .iter()
        .filter(|d| d["keep"] == false)
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    // Last 2: day 3 22:00 and 20:00; daily 2: day 3 22:00 and day 2 22:00.
    let id_at = |time: &str| times.iter().find(|(t, _)| t == time).unwrap().1.clone();
    let want: BTreeSet<String> = [at(3, 22, 0), at(3, 20, 0), at(2, 22, 0)]
        .iter()
        .map(|t| id_at(t))
        .collect();
    assert_eq!(keep, want, "{plan}");
    assert_eq!(u(&plan["kept"]), 3);
    assert_eq!(u(&plan["removed"]), 33);
    let reasons = |id: &str| -> Vec<String> {
        decisions.iter().find(|d| d["id"] == id).unwrap()["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_string())
            .collect()
    };
    let newest = reasons(&id_at(&at(3, 22, 0)));
    for r in ["newest of app", "last 1/2", "daily 1/2"] {
        assert!(newest.contains(&r.to_string()), "{r} in {newest:?}");
    }
    assert_eq!(reasons(&id_at(&at(3, 20, 0))), ["last 2/2"]);
    assert_eq!(reasons(&id_at(&at(2, 22, 0))), ["daily 2/2"]);
    for id in &remove {
        assert!(reasons(id).is_empty(), "a removed snapshot has no reason");
    }
    assert_eq!(plan["policy"]["keep_last"], 2, "policy is shown: {plan}");

    // The human dry run says so and removes nothing either.
    let text = String::from_utf8(ok(fx.cmd().args([
        "forget",
        "--name",
        "app",
        "--keep-last",
        "2",
        "--keep-daily",
        "2",
        "--dry-run",
    ])))
    .unwrap();
    assert_has(&text, &["3 kept, 33 would be removed", "dry run"]);
    fx.assert_unchanged(&before);

    // The real run removes exactly the listed ones; other's snapshots are untouched.
    let done = forget_json(
        &fx,
        &["--name", "app", "--keep-last", "2", "--keep-daily", "2"],
    );
    assert_eq!(done["dry_run"], false);
    assert_eq!(done["snapshots"], plan["snapshots"], "same decisions");
    assert_eq!(ids(&fx, Some("app")), keep);
    assert_eq!(ids(&fx, Some("other")), other_before);

    // A policy keeping nothing by its rules still keeps each database's newest.
    let v = forget_json(&fx, &["--keep-tag", "no-such-tag", "--dry-run"]);
    let kept: Vec<(String, Vec<Value>)> = v["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["keep"] == true)
        .map(|d| {
            (
                d["name"].as_str().unwrap().to_string(),
                d["reasons"].as_array().unwrap().clone(),
            )
        })
        .collect();
    let mut kept = kept;
    kept.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        kept,
        vec![
            ("app".to_string(), vec![Value::from("newest of app")]),
            ("other".to_string(), vec![Value::from("newest of other")]),
        ],
        "{v}"
    );
    forget_json(&fx, &["--keep-tag", "no-such-tag"]);
    let left = fx.snapshots();
    assert_eq!(left.len(), 2);
    assert!(left
        .iter()
        .any(|s| s["name"] == "app" && s["id"] == id_at(&at(3, 22, 0)).as_str()));
    assert!(left
        .iter()
        .any(|s| s["name"] == "other" && s["tags"][0] == "o2"));
    // --name of a database without snapshots is an error.
    let e = fails(
        fx.cmd()
            .args(["forget", "--name", "nope", "--keep-last", "1"]),
    );
    assert_has(&e, &["no snapshots of \"nope\""]);
    prune_json(&fx, &[]);
    assert_eq!(assert_all_restore(&fx), 2);
}

#[test]
fn policy_set_show_clear_and_gc_uses_the_saved_policy() {
    let fx = Fx::new();
    drop(history(&fx, 8, 300));
    let before = fx.state();

    // No policy: forget and gc without rules refuse and delete nothing.
    let v = ok_json(fx.cmd().args(["--json", "policy", "show"]));
    assert_eq!(v["policy"], Value::Null);
    for cmd in [
        &["forget"][..],
        &["gc"],
        &["gc", "--dry-run"],
        &["forget", "--dry-run"],
    ] {
        let e = fails(fx.cmd().args(cmd));
        assert_has(
            &e,
            &["no retention policy", "policy set", "nothing was deleted"],
        );
        fx.assert_unchanged(&before);
    }
    let e = fails_usage(fx.cmd().args(["policy", "set"]));
    assert_has(&e, &["at least one --keep-* rule"]);
    fx.assert_unchanged(&before);

    let v = ok_json(fx.cmd().args([
        "--json",
        "policy",
        "set",
        "--keep-last",
        "3",
        "--keep-tag",
        "x",
        "--keep-within-yearly",
        "6mo",
    ]));
    assert_eq!(v["saved"], true);
    // The policy in JSON is an object, spans written with `mo` for months.
    let saved = v["policy"].clone();
    assert_eq!(
        saved,
        serde_json::json!({ "keep_last": 3, "keep_within_yearly": "6mo", "keep_tag": ["x"], "local_time": false })
    );
    let v = ok_json(fx.cmd().args(["--json", "policy", "show"]));
    assert_eq!(v["policy"], saved);
    let text = String::from_utf8(ok(fx.cmd().args(["policy", "show"]))).unwrap();
    assert_eq!(
        text,
        "--keep-last 3 --keep-within-yearly 6mo --keep-tag x\n"
    );

    // gc --dry-run plans with it and changes nothing.
    let files_before = tree(&fx.store);
    let v = ok_json(fx.cmd().args(["--json", "gc", "--dry-run"]));
    assert_eq!(v["forget"]["policy"], saved);
    assert_eq!(u(&v["forget"]["kept"]), 3);
    assert_eq!(u(&v["forget"]["removed"]), 5);
    assert_eq!(v["prune"]["dry_run"], true);
    assert_eq!(u(&v["prune"]["snapshots"]), 3, "prune plans without the 5");
    let planned_free = u(&v["prune"]["bytes_freed"]);
    assert!(planned_free > 0, "{v}");
    assert_eq!(tree(&fx.store), files_before);

    // gc with no flags applies it.
    let all = fx.snapshots();
    let v = ok_json(fx.cmd().args(["--json", "gc"]));
    assert_eq!(v["forget"]["policy"], saved);
    assert_eq!(u(&v["forget"]["removed"]), 5);
    let freed = u(&v["prune"]["bytes_freed"]);
    assert!(freed > 0, "{v}");
    let left: Vec<Value> = fx.snapshots();
    assert_eq!(left, all[5..].to_vec(), "the 3 newest remain");
    assert_eq!(assert_all_restore(&fx), 3);

    // Flags override the saved policy; forget without flags uses it too.
    let v = forget_json(&fx, &["--keep-last", "1", "--dry-run"]);
    assert_eq!(u(&v["removed"]), 2);
    let v = forget_json(&fx, &["--dry-run"]);
    assert_eq!(v["policy"], saved);
    assert_eq!(u(&v["removed"]), 0);

    // Clear: gone, and forget/gc without flags refuse again.
    let v = ok_json(fx.cmd().args(["--json", "policy", "clear"]));
    assert_eq!(v["policy"], Value::Null);
    let v = ok_json(fx.cmd().args(["--json", "policy", "show"]));
    assert_eq!(v["policy"], Value::Null);
    let before = fx.state();
    for cmd in [&["forget"][..], &["gc"]] {
        let e = fails(fx.cmd().args(cmd));
        assert_has(&e, &["no retention policy"]);
    }
    fx.assert_unchanged(&before);
    // Clearing twice is fine.
    ok(fx.cmd().args(["policy", "clear"]));
}

#[test]
fn forget_by_id_and_the_last_snapshot_needs_allow_empty() {
    let fx = Fx::new();
    let app = small_db(&fx, "app.db", 3);
    let solo = small_db(&fx, "solo.db", 4);
    let conn = Connection::open(&app).unwrap();
    let a1 = fx.backup(&app, &["--time", &t(0)])["id"].clone();
    mutate(&conn, 1);
    let a2 = fx.backup(&app, &["--time", &t(10)])["id"].clone();
    let s1 = fx.backup(&solo, &["--time", &t(5)])["id"].clone();
    let a1 = a1.as_str().unwrap();
    let a2 = a2.as_str().unwrap();
    let s1 = s1.as_str().unwrap();

    // A dry run by id removes nothing.
    let before = fx.state();
    let v = forget_json(&fx, &[&a1[..8], "--dry-run"]);
    assert_eq!(v["snapshots"][0]["id"], a1);
    assert_eq!(v["snapshots"][0]["keep"], false);
    fx.assert_unchanged(&before);

    // By (prefix of an) id: that one goes, the rest stay.
    let v = forget_json(&fx, &[&a1[..8]]);
    assert_eq!(u(&v["removed"]), 1);
    assert_eq!(
        ids(&fx, None),
        [a2.to_string(), s1.to_string()].into_iter().collect()
    );

    // The last snapshot of a database: refused without --allow-empty.
    let before = fx.state();
    for args in [&[s1][..], &[a2], &[a2, s1]] {
        let e = fails(fx.cmd().arg("forget").args(args));
        assert_has(&e, &["every snapshot of", "--allow-empty"]);
        fx.assert_unchanged(&before);
    }
    // --allow-empty only goes with ids.
    let e = fails_usage(
        fx.cmd()
            .args(["forget", "--keep-last", "1", "--allow-empty"]),
    );
    assert_has(&e, &["--allow-empty"]);
    fx.assert_unchanged(&before);
    // An unknown id.
    let e = fails(fx.cmd().args(["forget", "0000000000"]));
    assert!(e.contains("0000000000"), "{e}");
    fx.assert_unchanged(&before);

    let v = forget_json(&fx, &[s1, "--allow-empty"]);
    assert_eq!(u(&v["removed"]), 1);
    assert_eq!(ids(&fx, None), [a2.to_string()].into_iter().collect());
    prune_json(&fx, &[]);
    assert_eq!(assert_all_restore(&fx), 1);
    forget_json(&fx, &[a2, "--allow-empty"]);
    assert!(fx.snapshots().is_empty());
    let v = prune_json(&fx, &["--max-unused", "0"]);
    assert!(u(&v["bytes_freed"]) > 0, "{v}");
    assert!(
        pack_files(&fx.store).is_empty(),
        "an empty store keeps no packs"
    );
}

#[test]
fn prune_frees_space_and_every_remaining_snapshot_restores() {
    let fx = Fx::new();
    drop(history(&fx, 10, 2000));
    let all = fx.snapshots();
    assert_eq!(all.len(), 10);
    // A second database, forgotten entirely below: its packs hold nothing live.
    let tmp = small_db(&fx, "tmp.db", 9);
    let tmp_ids: Vec<String> = (0..2)
        .map(|i| {
            mutate(&Connection::open(&tmp).unwrap(), 500 + i);
            fx.backup(&tmp, &["--time", &at(2, 12, i as u32)])["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();

    // unique bytes: one per snapshot, all present.
    let uniq = ok_json(fx.cmd().args(["--json", "snapshots", "--unique-bytes"]));
    let uniq = uniq.as_array().unwrap();
    assert_eq!(uniq.len(), 12);
    assert!(uniq.iter().all(|s| s["unique_bytes"].is_u64()), "{uniq:?}");
    let text = String::from_utf8(ok(fx.cmd().args(["snapshots", "--unique-bytes"]))).unwrap();
    assert_has(&text, &["UNIQUE"]);

    // Prune with nothing forgotten deletes nothing.
    let v = prune_json(&fx, &[]);
    assert_eq!(u(&v["packs_deleted"]), 0, "{v}");
    assert_eq!(u(&v["packs_rewritten"]), 0, "{v}");

    // Forget the odd snapshots 1, 3, 5, 7 (and the oldest, 0: its pack is partly live).
    let gone: Vec<&str> = [0usize, 1, 3, 5, 7]
        .iter()
        .map(|&i| all[i]["id"].as_str().unwrap())
        .collect();
    let uniq = ok_json(fx.cmd().args(["--json", "snapshots", "--unique-bytes"]));
    let uniq = uniq.as_array().unwrap();
    let mut gone: Vec<&str> = gone;
    gone.extend(tmp_ids.iter().map(String::as_str));
    let sum_unique_gone: u64 = uniq
        .iter()
        .filter(|s| gone.contains(&s["id"].as_str().unwrap()))
        .map(|s| u(&s["unique_bytes"]))
        .sum();
    assert!(sum_unique_gone > 0);
    let mut cmd = fx.cmd();
    cmd.args(["forget", "--allow-empty"]).args(&gone);
    ok(&mut cmd);
    assert_eq!(fx.snapshots().len(), 5);

    // A dry run changes no file and predicts what the real run does.
    let before = fx.state();
    let plan = prune_json(&fx, &["--dry-run", "--max-unused", "100%"]);
    fx.assert_unchanged(&before);
    assert_eq!(plan["dry_run"], true);
    assert!(u(&plan["packs_deleted"]) > 0, "{plan}");
    let text = String::from_utf8(ok(fx.cmd().args(["prune", "--dry-run"]))).unwrap();
    assert_has(&text, &["dry run: nothing deleted"]);
    fx.assert_unchanged(&before);

    // 100%: only packs with nothing live go; none is rewritten.
    let size0 = dir_size(&fx.store);
    let v = prune_json(&fx, &["--max-unused", "100%"]);
    assert_eq!(v["dry_run"], false);
    assert_eq!(v["packs_deleted"], plan["packs_deleted"], "{v} vs {plan}");
    assert_eq!(u(&v["packs_rewritten"]), 0, "{v}");
    assert_eq!(u(&v["missing_chunks"]), 0, "{v}");
    let freed1 = u(&v["bytes_freed"]);
    assert!(freed1 > 0, "{v}");
    let size1 = dir_size(&fx.store);
    assert_eq!(size0 - size1, freed1, "bytes_freed is what left the disk");
    assert_eq!(assert_all_restore(&fx), 5);

    // 0%: packs with any dead bytes are rewritten (the oldest pack holds pages
    // later snapshots changed).
    let v = prune_json(&fx, &["--max-unused", "0"]);
    assert!(u(&v["packs_rewritten"]) > 0, "{v}");
    assert!(u(&v["packs_written"]) > 0, "{v}");
    assert!(u(&v["bytes_repacked"]) > 0, "{v}");
    let freed2 = u(&v["bytes_freed"]);
    assert!(freed2 > 0, "{v}");
    assert_eq!(size1 - dir_size(&fx.store), freed2);
    assert_eq!(assert_all_restore(&fx), 5);
    // The forgotten snapshots' unique bytes were (about) what both prunes freed.
    assert!(
        sum_unique_gone <= freed1 + freed2 + 64 * 1024,
        "unique {sum_unique_gone} vs freed {freed1}+{freed2}"
    );

    // A second prune finds nothing to do.
    for max in ["0", "10%"] {
        let v = prune_json(&fx, &["--max-unused", max]);
        assert_eq!(u(&v["packs_deleted"]), 0, "{v}");
        assert_eq!(u(&v["packs_rewritten"]), 0, "{v}");
        assert_eq!(u(&v["maps_deleted"]), 0, "{v}");
        assert_eq!(u(&v["index_deleted"]), 0, "{v}");
        assert!(u(&v["bytes_freed"]) < 1024, "{v}");
    }

    // One snapshot: its unique bytes are freed by forget + prune.
    let uniq = ok_json(fx.cmd().args(["--json", "snapshots", "--unique-bytes"]));
    let victim = &uniq.as_array().unwrap()[2];
    let unique = u(&victim["unique_bytes"]);
    assert!(unique > 0, "{victim}");
    ok(fx.cmd().args(["forget", victim["id"].as_str().unwrap()]));
    let v = prune_json(&fx, &["--max-unused", "0"]);
    let freed = u(&v["bytes_freed"]);
    assert!(
        unique <= freed + 16 * 1024,
        "unique_bytes {unique} > freed {freed}: {v}"
    );
    assert!(
        freed <= unique * 2 + 64 * 1024,
        "freed {freed} vs unique {unique}"
    );
    assert_eq!(assert_all_restore(&fx), 4);
    assert_no_store_temps(&fx.store);
    assert_eq!(lock_count(&fx.store), 0);
}

#[test]
fn bad_retention_input_is_refused_and_changes_nothing() {
    let fx = Fx::new();
    drop(history(&fx, 3, 300));
    let before = fx.state();
    let id = fx.snapshots()[0]["id"].as_str().unwrap().to_string();
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec!["forget", "--keep-within", "5x"], vec!["5x"]),
        (vec!["gc", "--keep-within", "5x"], vec!["5x"]),
        (vec!["forget", "--keep-within-daily", "d7"], vec!["d7"]),
        (vec!["forget", "--keep-last", "0"], vec!["0", "at least 1"]),
        (vec!["gc", "--keep-daily", "0"], vec!["at least 1"]),
        (vec!["forget", "--keep-last=-2"], vec!["-2", "negative"]),
        (vec!["forget", "--keep-last", "many"], vec!["many"]),
        (vec!["forget", "--keep-last", "3x"], vec!["3x"]),
        (
            vec!["policy", "set", "--keep-hourly", "0"],
            vec!["at least 1"],
        ),
        (vec!["policy", "set", "--keep-within", "5x"], vec!["5x"]),
        (
            vec!["forget", &id, "--keep-last", "2"],
            vec!["snapshot ids or --keep-* rules, not both"],
        ),
        (
            vec!["prune", "--max-unused", "150%"],
            vec!["150%", "0 to 100"],
        ),
        (vec!["prune", "--max-unused=-5%"], vec!["0 to 100"]),
        (vec!["prune", "--max-unused", "lots"], vec!["lots"]),
        (
            vec!["gc", "--keep-last", "1", "--max-unused", "150%"],
            vec!["150%"],
        ),
        (vec!["forget", "--local-time"], vec!["--local-time"]),
        // `m` is minutes to some, months to others (restic): refused, with both.
        (
            vec!["forget", "--keep-within", "30m"],
            vec!["\"30m\" is ambiguous: write 30min for minutes or 30mo for months"],
        ),
        (
            vec!["gc", "--keep-within-daily", "1y6m"],
            vec!["\"1y6m\" is ambiguous: write 1y6min for minutes or 1y6mo for months"],
        ),
        (
            vec!["policy", "set", "--keep-within-hourly", "2m"],
            vec!["write 2min for minutes or 2mo for months"],
        ),
    ];
    for (args, needles) in cases {
        // Values the command line cannot use: exit status 2, as clap's errors.
        let e = fails_usage(fx.cmd().args(&args));
        assert!(e.contains(needles[0]) || needles.len() > 1, "{args:?}: {e}");
        assert_has(&e, &needles);
        fx.assert_unchanged(&before);
    }
    // `-1` means unlimited and is accepted.
    let v = forget_json(&fx, &["--keep-last=-1", "--dry-run"]);
    assert_eq!(u(&v["removed"]), 0);
}

#[test]
fn a_stale_lock_blocks_until_unlock_removes_it() {
    let fx = Fx::new();
    let conn = history(&fx, 3, 300);
    let db = fx.path("app.db");
    let snaps = fx.snapshots();
    // A prune killed right after it wrote its lock.
    let out = fx
        .cmd()
        .env("PAGESNAP_FAULT_AFTER", "1")
        .arg("prune")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the fault aborts prune");
    assert_eq!(lock_count(&fx.store), 1, "its lock remains");
    assert_eq!(fx.snapshots(), snaps);

    let before = fx.state();
    let e = fails(fx.cmd().arg("prune"));
    assert_has(
        &e,
        &[
            "locked by stale",
            "exclusive lock of `prune`",
            "pagesnap unlock",
        ],
    );
    mutate(&conn, 50);
    let started = std::time::Instant::now();
    let e = fails(fx.cmd().args(["backup", "--lock-wait", "1s"]).arg(&db));
    assert_has(&e, &["stale", "pagesnap unlock"]);
    assert!(started.elapsed() < Duration::from_secs(30));
    let e = fails(fx.cmd().args(["forget", "--keep-last", "1"]));
    assert_has(&e, &["stale", "pagesnap unlock"]);
    let e = fails(fx.cmd().args(["gc", "--keep-last", "1"]));
    assert_has(&e, &["stale", "pagesnap unlock"]);
    fx.assert_unchanged(&before);

    let v = ok_json(fx.cmd().args(["--json", "unlock"]));
    assert_eq!(v["removed"].as_array().unwrap().len(), 1, "{v}");
    assert_has(
        v["removed"][0]["holder"].as_str().unwrap(),
        &["exclusive lock of `prune`"],
    );
    assert_eq!(u(&v["remaining"]), 0);
    assert_eq!(lock_count(&fx.store), 0);
    let v = ok_json(fx.cmd().args(["--json", "unlock"]));
    assert!(v["removed"].as_array().unwrap().is_empty());

    // Everything works again.
    fx.backup(&db, &["--lock-wait", "1s"]);
    ok(fx.cmd().args(["gc", "--keep-last", "2"]));
    assert_eq!(assert_all_restore(&fx), 2);
}

#[test]
fn a_live_lock_blocks_prune_and_unlock_leaves_it() {
    let fx = Fx::new();
    drop(history(&fx, 3, 300));
    let snaps = fx.snapshots();
    ok(fx.cmd().args(["forget", snaps[0]["id"].as_str().unwrap()]));
    let store = pagesnap_core::Store::open(&fx.store).unwrap();
    let before = fx.state();

    // A shared lock (a backup running in this, live, process).
    let shared = store.lock(false, "backup", Duration::ZERO).unwrap();
    let e = fails(fx.cmd().arg("prune"));
    assert_has(
        &e,
        &[
            "locked by a shared lock of `backup`",
            &std::process::id().to_string(),
        ],
    );
    assert!(!e.contains("stale"), "{e}");
    // gc cannot prune, so it forgets nothing either.
    let e = fails(fx.cmd().args(["gc", "--keep-last", "1"]));
    assert_has(&e, &["shared lock of `backup`"]);
    assert_eq!(
        fx.snapshots(),
        before.snapshots,
        "a failed gc forgot snapshots"
    );
    // Dry runs and reads share the store with it.
    prune_json(&fx, &["--dry-run"]);
    let v = ok_json(fx.cmd().args(["--json", "unlock"]));
    assert!(v["removed"].as_array().unwrap().is_empty(), "{v}");
    assert_eq!(u(&v["remaining"]), 1);
    assert_eq!(lock_count(&fx.store), 1);
    drop(shared);
    fx.assert_unchanged(&before);

    // An exclusive lock (a prune in this process): prune and backup both fail.
    let excl = store.lock(true, "prune", Duration::ZERO).unwrap();
    let e = fails(fx.cmd().arg("prune"));
    assert_has(
        &e,
        &[
            "locked by an exclusive lock of `prune`",
            "wait until it ends",
        ],
    );
    let e = fails(
        fx.cmd()
            .args(["backup", "--lock-wait", "300ms"])
            .arg(fx.path("app.db")),
    );
    assert_has(&e, &["exclusive lock of `prune`", "gave up"]);
    let e = fails(fx.cmd().args(["gc", "--keep-last", "1"]));
    assert_has(&e, &["exclusive lock of `prune`"]);
    ok(fx.cmd().arg("unlock"));
    assert_eq!(
        lock_count(&fx.store),
        1,
        "a plain unlock leaves a live lock"
    );
    drop(excl);
    assert_eq!(lock_count(&fx.store), 0);
    fx.assert_unchanged(&before);

    // --all removes live locks too.
    let held = store.lock(false, "restore", Duration::ZERO).unwrap();
    let v = ok_json(fx.cmd().args(["--json", "unlock", "--all"]));
    assert_eq!(v["removed"].as_array().unwrap().len(), 1);
    assert_eq!(lock_count(&fx.store), 0);
    drop(held);

    let v = prune_json(&fx, &[]);
    assert!(u(&v["bytes_freed"]) > 0, "{v}");
    assert_eq!(assert_all_restore(&fx), 2);
}

//! `pagesnap status`: `--max-age` on fabricated status files, and what it shows
//! after a real watcher was stopped.

use crate::util::*;
use crate::watch_util::*;
use chrono::{TimeDelta, Utc};
use serde_json::{json, Value};
use std::fs::File;
use std::path::PathBuf;
use std::time::Duration;

/// A status file of a running watcher (this test holds its lock) started 3
/// hours ago, with four databases: snapshotted 5 minutes ago; snapshotted 3
/// hours ago but found unchanged a minute ago; snapshotted 3 hours ago and
/// nothing since (its watcher is stuck on it); never snapshotted.
fn fabricate(fx: &Fx) -> (PathBuf, File) {
    let st_path = fx.path("status.json");
    let lock = File::create(fx.path("status.json.lock")).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
    let now = Utc::now();
    let at = |s: i64| (now + TimeDelta::seconds(s)).to_rfc3339();
    let db = |name: &str, snap: Option<i64>, skip: Option<i64>| {
        json!({
            "name": name, "every_secs": 600.0, "next_run": at(300),
            "last_result": if skip.is_some() { "skipped" } else { "snapshot" },
            "last_snapshot": snap.map(|s| json!({ "id": "ab", "short_id": "ab", "time": at(s) })),
            "last_skip": skip.map(|s| json!({ "time": at(s), "reason": "unchanged" })),
        })
    };
    let st = json!({
        "version": 1, "state": "running", "pid": std::process::id(),
        "started": at(-3 * 3600 - 60),
        "databases": [
            db("fresh", Some(-300), None),
            db("quiet", Some(-3 * 3600), Some(-60)),
            db("stuck", Some(-3 * 3600), None),
        ]
    });
    std::fs::write(&st_path, st.to_string()).unwrap();
    (st_path, lock)
}

#[test]
fn max_age_flags_a_database_not_current_for_longer() {
    let fx = Fx::new();
    let (st_path, _lock) = fabricate(&fx);
    // Without --max-age nothing is wrong: every last attempt succeeded, none is late.
    let (code, text) = status_cmd(&fx, &st_path, &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(!text.contains("STALE"), "{text}");
    // 2 hours: only `stuck`; `quiet` was found unchanged a minute ago.
    let (code, text) = status_cmd(&fx, &st_path, &["--max-age", "2h"]);
    assert_eq!(code, Some(4), "{text}");
    assert_eq!(text.matches("STALE:").count(), 1, "{text}");
    let stuck_block = text.split("\nstuck").nth(1).unwrap_or_default();
    assert!(
        stuck_block.contains("STALE:          last snapshot or unchanged check"),
        "{text}"
    );
    assert!(stuck_block.contains("(3h ago)"), "{text}");
    // The same in JSON: the stale list names the database, when it was current, how long ago.
    let (code, out) = status_cmd(&fx, &st_path, &["--json", "--max-age", "2h"]);
    assert_eq!(code, Some(4));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["max_age_secs"], 7200.0, "{v}");
    let stale = v["stale"].as_array().unwrap();
    assert_eq!(stale.len(), 1, "{v}");
    assert_eq!(stale[0]["name"], "stuck");
    let age = stale[0]["age_secs"].as_u64().unwrap();
    assert!((10_790..10_900).contains(&age), "{age}");
    assert!(stale[0]["current_at"].is_string());
    // 4 hours: nothing is stale; 4 minutes: `fresh` is too (5 minutes old).
    let (code, out) = status_cmd(&fx, &st_path, &["--json", "--max-age", "4h"]);
    assert_eq!(code, Some(0));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["stale"], json!([]));
    let (_, out) = status_cmd(&fx, &st_path, &["--json", "--max-age", "4min"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = v["stale"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["fresh", "stuck"], "{v}");
}

#[test]
fn max_age_measures_a_database_never_snapshotted_from_the_watchers_start() {
    let fx = Fx::new();
    let st_path = fx.path("status.json");
    let lock = File::create(fx.path("status.json.lock")).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
    let write = |started_ago: i64| {
        let st = json!({
            "version": 1, "state": "running", "pid": std::process::id(),
            "started": (Utc::now() - TimeDelta::seconds(started_ago)).to_rfc3339(),
            "databases": [{ "name": "new", "every_secs": 600.0,
                            "next_run": (Utc::now() + TimeDelta::seconds(60)).to_rfc3339() }]
        });
        std::fs::write(&st_path, st.to_string()).unwrap();
    };
    write(600);
    let (code, _) = status_cmd(&fx, &st_path, &["--max-age", "30min"]);
    assert_eq!(code, Some(0), "started 10 minutes ago: not yet");
    write(3600);
    let (code, text) = status_cmd(&fx, &st_path, &["--max-age", "30min"]);
    assert_eq!(code, Some(4));
    assert_has(
        &text,
        &["STALE:          no snapshot since the watcher started (1h"],
    );
}

#[test]
fn a_bad_max_age_is_a_usage_error() {
    let fx = Fx::new();
    let (st_path, _lock) = fabricate(&fx);
    let e = fails_usage(
        fx.cmd()
            .args(["status", "--max-age", "soon", "--status-file"])
            .arg(&st_path),
    );
    assert_has(&e, &["invalid duration \"soon\""]);
}

#[test]
fn a_stopped_watcher_shows_no_next_run() {
    let fx = Fx::new();
    small_db(&fx, "app.db", 3);
    let st_path = fx.path("st.json");
    let mut w = Watch::start(
        &fx,
        &[
            "app.db",
            "--every",
            "1s",
            "--prune",
            "hourly",
            "--status-file",
            "st.json",
        ],
        &[],
    );
    wait_for(Duration::from_secs(30), "a snapshot in the status", || {
        let (_, out) = status_cmd(&fx, &st_path, &["--json"]);
        serde_json::from_str::<Value>(&out)
            .is_ok_and(|v| v["databases"][0]["snapshots"].as_u64() >= Some(1))
    });
    let (code, text) = status_cmd(&fx, &st_path, &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("next run:       20"), "{text}");
    assert_eq!(w.terminate(Duration::from_secs(30)).code(), Some(0));
    // The file keeps its last schedule, but `status` shows none.
    let raw: Value = serde_json::from_slice(&std::fs::read(&st_path).unwrap()).unwrap();
    assert_eq!(raw["state"], "stopped");
    let (code, text) = status_cmd(&fx, &st_path, &[]);
    assert_eq!(code, Some(4), "{text}");
    assert_has(
        &text,
        &[
            "watcher:  stopped",
            "next run:       none (the watcher is not running)",
        ],
    );
    assert!(!text.contains("next run:       20"), "{text}");
    assert!(!text.contains(", next after"), "{text}");
    let (code, json) = status_cmd(&fx, &st_path, &["--json"]);
    assert_eq!(code, Some(4));
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["watcher"], "stopped");
    assert_eq!(v["databases"][0]["next_run"], Value::Null, "{v}");
    assert_eq!(v["prune"]["next_due"], Value::Null, "{v}");
    assert!(v["databases"][0]["last_snapshot"]["time"].is_string());
}

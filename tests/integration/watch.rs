//! `pagesnap watch` and `pagesnap status`: the daemon runs as a child process
//! with 1-second intervals while the tests change, lock and remove databases,
//! then stops on SIGTERM (or SIGHUP reloads it).

use crate::util::*;
use crate::watch_util::*;
use chrono::{DateTime, Utc};
use rusqlite::Connection;
use rustix::process::Signal;
use serde_json::Value;
use std::fs::File;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

/// The status file, once it exists.
fn status(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap()
}

fn db_status<'a>(st: &'a Value, name: &str) -> &'a Value {
    st["databases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("no database {name} in {st}"))
}

fn snapshot_count(st: &Value, name: &str) -> u64 {
    db_status(st, name)["snapshots"].as_u64().unwrap_or(0)
}

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}")))
        .unwrap()
        .with_timezone(&Utc)
}

/// The store is sound: `verify` healthy, no temporary files, no locks left.
#[track_caller]
fn assert_store_clean(fx: &Fx) {
    let v = ok_json(fx.cmd().args(["--json", "verify"]));
    assert_eq!(v["healthy"], true, "{v}");
    assert_no_store_temps(&fx.store);
    let locks: Vec<_> = tree(&fx.store.join("locks")).into_keys().collect();
    assert!(locks.is_empty(), "locks left behind: {locks:?}");
}

#[test]
fn snapshots_on_schedule_skip_unchanged_apply_retention_and_survive_failures() {
    let fx = Fx::new();
    let busy = fx.path("busy.db");
    let writer = create_db(&busy, Journal::Rollback, 300, 1);
    let locked = small_db(&fx, "locked.db", 2);
    let hook_log = fx.path("hook.log");
    std::fs::write(
        fx.path("watch.toml"),
        r#"
status_file = "status.json"
every = "1s"
prune = "daily"
on_failure = "printf '%s|%s|%s|%s\n' \"$PAGESNAP_DB_NAME\" \"$PAGESNAP_EVENT\" \"$PAGESNAP_FAILURES\" \"$PAGESNAP_ERROR\" >> hook.log"

[[database]]
path = "busy.db"
keep_last = 3

[[database]]
path = "locked.db"
busy_timeout = "200ms"

[[database]]
path = "gone.db"
"#,
    )
    .unwrap();
    let notify_path = fx.path("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut w = Watch::start(
        &fx,
        &["--config", "watch.toml"],
        &[("NOTIFY_SOCKET", &notify_path)],
    );
    // systemd readiness (Type=notify) once the config is loaded.
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("READY=1 on NOTIFY_SOCKET");
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(ready.starts_with("READY=1"), "{ready}");
    let st_path = fx.path("status.json");
    assert!(st_path.exists(), "the status file exists once ready");

    // ~5 s of changes to busy.db; locked.db held under an exclusive lock for a
    // while after its first snapshot, then changed; then ~4 s of quiet.
    let started = Instant::now();
    let lock_conn = Connection::open(&locked).unwrap();
    let mut lock_state = 0; // 0 before, 1 held, 2 released
    let mut round = 0;
    while started.elapsed() < Duration::from_secs(5) {
        mutate(&writer, round);
        round += 1;
        if lock_state == 0 && snapshot_count(&status(&st_path), "locked") >= 1 {
            lock_conn
                .execute_batch("BEGIN EXCLUSIVE; UPDATE items SET n = n + 1 WHERE id < 50;")
                .unwrap();
            lock_state = 1;
        } else if lock_state == 1
            && db_status(&status(&st_path), "locked")["failures"]
                .as_u64()
                .unwrap_or(0)
                >= 2
        {
            lock_conn.execute_batch("COMMIT").unwrap();
            lock_state = 2;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(lock_state, 2, "locked.db was locked and released");
    drop(writer);
    std::thread::sleep(Duration::from_millis(4000));
    let code = w.terminate(Duration::from_secs(30));
    assert_eq!(code.code(), Some(0), "log:\n{}", w.log_text());

    let events = w.events();
    let of = |db: &str, ev: &str| -> Vec<&Value> {
        events
            .iter()
            .filter(|e| e["db"] == db && e["event"] == ev)
            .collect()
    };
    // Snapshots at the interval, aligned to whole seconds, taken promptly.
    let snaps = of("busy", "snapshot");
    assert!(snaps.len() >= 4, "busy snapshots: {snaps:?}");
    let mut runs: Vec<DateTime<Utc>> = of("busy", "snapshot")
        .into_iter()
        .chain(of("busy", "skip"))
        .map(|e| time(&e["scheduled"]))
        .collect();
    runs.sort();
    for r in &runs {
        assert_eq!(r.timestamp_subsec_millis(), 0, "run not on a second: {r}");
    }
    for pair in runs.windows(2) {
        let gap = (pair[1] - pair[0]).num_milliseconds();
        assert!(gap >= 1000 && gap % 1000 == 0, "runs {pair:?}");
    }
    let span = (runs[runs.len() - 1] - runs[0]).num_seconds();
    assert!(
        runs.len() as i64 >= span - 1,
        "at most one run missed: {} runs over {span} s",
        runs.len()
    );
    for e in &snaps {
        let lag = time(&e["timestamp"]) - time(&e["scheduled"]);
        assert!(
            lag < chrono::TimeDelta::seconds(3),
            "snapshot logged {lag} after its slot: {e}"
        );
    }
    // Unchanged periods are skipped: in the log and the status file.
    let skips = of("busy", "skip");
    assert!(skips.len() >= 2, "busy skips: {skips:?}");
    let last_snap = snaps.iter().map(|e| time(&e["scheduled"])).max().unwrap();
    assert!(
        skips.iter().any(|e| time(&e["scheduled"]) > last_snap),
        "the quiet period ends in skips"
    );
    let st = status(&st_path);
    assert_eq!(st["state"], "stopped");
    assert_eq!(st["in_progress"], Value::Null);
    let b = db_status(&st, "busy");
    assert_eq!(b["snapshots"].as_u64().unwrap(), snaps.len() as u64);
    assert_eq!(b["skips"].as_u64().unwrap(), skips.len() as u64);
    assert_eq!(b["last_result"], "skipped");
    assert!(b["last_skip"]["reason"]
        .as_str()
        .unwrap()
        .contains("unchanged"));
    assert_eq!(b["failures"], 0);
    // Retention (keep_last = 3) after every snapshot.
    let in_store: Vec<Value> = fx
        .snapshots()
        .into_iter()
        .filter(|s| s["name"] == "busy")
        .collect();
    assert_eq!(in_store.len(), 3, "keep_last = 3");
    assert_eq!(
        in_store[2]["id"], b["last_snapshot"]["id"],
        "the newest snapshot is kept"
    );
    assert!(b["last_retention"]["removed"].as_u64().is_some());
    assert!(b["retention"].as_str().unwrap().contains("--keep-last 3"));
    assert!(!of("busy", "retention").is_empty());
    // `status --json` gives the policy as an object, and where it comes from.
    let (_, json) = status_cmd(&fx, &st_path, &["--json"]);
    let v: Value = serde_json::from_str(&json).unwrap();
    let r = &db_status(&v, "busy")["retention"];
    assert_eq!(r["from"], "config", "{r}");
    assert_eq!(r["policy"]["keep_last"], 3, "{r}");

    // The missing database fails every run; the others went on.
    let g = db_status(&st, "gone");
    assert_eq!(g["last_result"], "failed");
    assert!(g["failures"].as_u64().unwrap() >= 3, "{g}");
    assert_eq!(g["snapshots"], 0);
    assert_has(
        g["last_error"]["message"].as_str().unwrap(),
        &["gone.db", "no such database file"],
    );
    assert!(of("gone", "failure").len() >= 3);

    // The locked database failed while locked, and its change after the lock
    // was released was snapshotted although the previous attempts had failed.
    let l = db_status(&st, "locked");
    assert!(l["failures"].as_u64().unwrap() >= 2, "{l}");
    assert_eq!(l["consecutive_failures"], 0, "{l}");
    assert!(l["snapshots"].as_u64().unwrap() >= 2, "{l}");
    let lock_failure = of("locked", "failure");
    assert!(lock_failure
        .iter()
        .all(|e| e["message"].as_str().unwrap().contains("locked")));
    let first_failure = time(&lock_failure[0]["timestamp"]);
    let after: Vec<_> = of("locked", "snapshot")
        .into_iter()
        .filter(|e| time(&e["timestamp"]) > first_failure)
        .collect();
    assert!(!after.is_empty(), "a snapshot after the failures");
    assert_eq!(after[0]["reason"], "committed changes");

    // The hook ran for every failure with the database and error in its environment.
    let hooks = std::fs::read_to_string(&hook_log).unwrap();
    assert!(
        hooks
            .lines()
            .any(|l| l.starts_with("gone|backup|") && l.contains("no such database file")),
        "{hooks}"
    );
    assert!(
        hooks
            .lines()
            .any(|l| l.starts_with("locked|backup|1|") && l.contains("locked")),
        "{hooks}"
    );

    // Prune ran ("daily": once, after the first snapshot) and the store is sound.
    assert!(st["prune"]["last"]["time"].is_string(), "{}", st["prune"]);
    assert_eq!(
        events
            .iter()
            .filter(|e| e["event"] == "prune" && e["bytes_freed"].is_u64())
            .count(),
        1
    );
    assert_store_clean(&fx);
}

/// A database big enough that its first snapshot takes a while (~30 MiB).
fn big_db(path: &Path) {
    let c = Connection::open(path).unwrap();
    c.execute_batch(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB);
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 8000)
         INSERT INTO t SELECT x, randomblob(3000) FROM c;",
    )
    .unwrap();
}

#[test]
fn sigterm_during_a_snapshot_finishes_it_and_leaves_the_store_valid() {
    let fx = Fx::new();
    let db = fx.path("big.db");
    big_db(&db);
    let st_path = fx.path("status.json");
    let args = ["big.db", "--every", "1s", "--status-file", "status.json"];

    // One SIGTERM while the snapshot is being taken: it is finished, exit 0.
    let mut w = Watch::start(&fx, &args, &[]);
    wait_for(Duration::from_secs(20), "the snapshot to start", || {
        st_path.exists() && status(&st_path)["in_progress"]["name"] == "big"
    });
    let code = w.terminate(Duration::from_secs(60));
    assert_eq!(code.code(), Some(0), "log:\n{}", w.log_text());
    assert!(
        w.log_text()
            .contains("stop requested during the run of big: its snapshot was finished first"),
        "{}",
        w.log_text()
    );
    let snaps = fx.snapshots();
    assert_eq!(snaps.len(), 1, "the snapshot in progress was finished");
    let st = status(&st_path);
    assert_eq!(st["state"], "stopped");
    assert_eq!(db_status(&st, "big")["last_snapshot"]["id"], snaps[0]["id"]);
    assert_store_clean(&fx);
    let out = fx.path("restored.db");
    let r = fx.restore(&["latest"], &out);
    assert_eq!(r["id"], snaps[0]["id"]);
    assert_eq!(integrity(&out), "ok");

    // Two signals: the second exits at once (status 1) and the snapshot in
    // progress is never published; the store stays valid.
    Connection::open(&db)
        .unwrap()
        .execute_batch("UPDATE t SET b = randomblob(3000)")
        .unwrap();
    let mut w = Watch::start(&fx, &args, &[]);
    wait_for(Duration::from_secs(20), "the snapshot to start", || {
        status(&st_path)["in_progress"]["name"] == "big"
    });
    std::thread::sleep(Duration::from_millis(100));
    w.signal(Signal::TERM);
    std::thread::sleep(Duration::from_millis(50));
    let code = w.terminate(Duration::from_secs(10));
    assert_eq!(code.code(), Some(1), "log:\n{}", w.log_text());
    assert_eq!(fx.snapshots().len(), 1, "no partial snapshot was published");
    let v = ok_json(fx.cmd().args(["--json", "verify"]));
    assert_eq!(v["healthy"], true, "{v}");
    // What the killed backup left (its lock, temporary files, a pack) goes with
    // `unlock` and `prune`.
    ok(fx.cmd().arg("unlock"));
    ok(fx.cmd().arg("prune"));
    assert_store_clean(&fx);
}

#[test]
fn config_errors_are_reported_with_their_line_before_anything_starts() {
    let fx = Fx::new();
    small_db(&fx, "app.db", 1);
    let before = fx.state();
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "unknown.toml",
            "every = \"1s\"\n\n[[database]]\npath = \"app.db\"\nkeep_lats = 3\n",
            &["unknown.toml:5: unknown field `keep_lats`", "keep_last"],
        ),
        (
            "duration.toml",
            "status_file = \"s.json\"\n[[database]]\npath = \"app.db\"\nevery = \"ten minutes\"\n",
            &["duration.toml:4: every: invalid duration \"ten minutes\""],
        ),
        (
            "global.toml",
            "jitter = \"1x\"\n[[database]]\npath = \"app.db\"\n",
            &["global.toml:1: jitter: invalid duration \"1x\""],
        ),
        (
            // Months to restic, minutes to `every`: refused, naming the key.
            "ambiguous.toml",
            "every = \"5m\"\n[[database]]\npath = \"app.db\"\nkeep_within = \"30m\"\n",
            &["ambiguous.toml:4: keep_within: \"30m\" is ambiguous: write 30min for minutes or 30mo for months"],
        ),
        (
            "count.toml",
            "[[database]]\npath = \"app.db\"\n\nkeep_daily = 0\n",
            &["count.toml:4: ", "at least 1"],
        ),
        (
            "check.toml",
            "[[database]]\npath = \"app.db\"\nintegrity_check = \"sometimes\"\n",
            &["check.toml:3: ", "quick"],
        ),
        (
            "jitter.toml",
            "every = \"1s\"\n[[database]]\npath = \"app.db\"\njitter = \"2s\"\n",
            &["jitter.toml:2: database \"app\": jitter 2s must be shorter than the interval 1s"],
        ),
        (
            "twice.toml",
            "[[database]]\npath = \"app.db\"\n[[database]]\npath = \"./app.db\"\n",
            &["twice.toml:3: database name \"app\" is used twice (also at line 1)"],
        ),
        (
            "syntax.toml",
            "[[database]]\npath = \"app.db\nevery = \"1s\"\n",
            &["syntax.toml:2: "],
        ),
        (
            "empty.toml",
            "every = \"1s\"\n",
            &["empty.toml: no databases to watch"],
        ),
    ];
    for (file, text, want) in cases {
        std::fs::write(fx.path(file), text).unwrap();
        let e = fails(fx.cmd().current_dir(fx.dir.path()).args([
            "watch",
            "--config",
            file,
            "--status-file",
            "st.json",
        ]));
        assert_has(&e, want);
        assert_eq!(e.lines().count(), 1, "one line: {e}");
    }
    let e = fails(fx.cmd().current_dir(fx.dir.path()).args([
        "watch",
        "--config",
        "missing.toml",
        "--status-file",
        "st.json",
    ]));
    assert_has(
        &e,
        &["missing.toml: cannot read the config file", "No such file"],
    );
    let e = fails_usage(fx.cmd().current_dir(fx.dir.path()).args([
        "watch",
        "app.db",
        "--every",
        "10 parsecs",
        "--status-file",
        "st.json",
    ]));
    assert_has(&e, &["invalid duration \"10 parsecs\""]);
    // Nothing started: no snapshot, no status file.
    fx.assert_unchanged(&before);
    assert!(!fx.path("st.json").exists());
    assert!(!fx.path("s.json").exists());
}

#[test]
fn command_line_mode_status_command_and_one_watcher_per_status_file() {
    let fx = Fx::new();
    let db = small_db(&fx, "app.db", 3);
    let state = fx.path("state");
    let mut w = Watch::start(
        &fx,
        &[
            "app.db",
            "--every",
            "1s",
            "--tag",
            "watched",
            "--integrity-check",
            "quick",
            "--prune",
            "never",
            "--capture-timeout",
            "90s",
        ],
        &[("XDG_STATE_HOME", &state)],
    );
    // The default status file is per store, under $XDG_STATE_HOME/pagesnap.
    let status_cmd = || {
        let mut c = fx.cmd();
        c.env("XDG_STATE_HOME", &state).arg("status");
        c
    };
    wait_for(Duration::from_secs(20), "a snapshot in the status", || {
        let out = status_cmd().arg("--json").output().unwrap();
        serde_json::from_slice::<Value>(&out.stdout)
            .is_ok_and(|v| v["databases"][0]["snapshots"].as_u64() >= Some(1))
    });
    let v = ok_json(status_cmd().arg("--json"));
    assert_eq!(v["watcher"], "running");
    assert_eq!(v["state"], "running");
    let app = db_status(&v, "app");
    assert_eq!(app["every_secs"], 1.0);
    assert_eq!(app["capture_timeout_secs"], 90.0);
    assert!(app["next_run"].is_string());
    assert_eq!(app["last_check"]["ok"], true, "{app}");
    assert_eq!(app["last_check"]["mode"], "quick");
    let text = String::from_utf8(ok(&mut status_cmd())).unwrap();
    assert_has(
        &text,
        &[
            "watcher:  running",
            &format!("app  {}  every 1s", db.display()),
            "last snapshot:",
            "next run:",
        ],
    );
    // A second watcher with the same status file is refused.
    let e = fails(
        fx.cmd()
            .env("XDG_STATE_HOME", &state)
            .current_dir(fx.dir.path())
            .args(["watch", "app.db", "--every", "1s"]),
    );
    assert_has(
        &e,
        &["another pagesnap watch (pid ", "uses this status file"],
    );
    // SIGHUP without a config file changes nothing.
    w.signal(Signal::HUP);
    std::thread::sleep(Duration::from_millis(300));
    w.signal(Signal::INT);
    assert_eq!(w.wait(Duration::from_secs(30)).code(), Some(0));
    assert!(w.log_text().contains("nothing to reload"));
    let snaps = fx.snapshots();
    assert_eq!(snaps.len(), 1, "unchanged after the first snapshot");
    assert_eq!(snaps[0]["tags"], serde_json::json!(["watched"]));
    assert_eq!(
        snaps[0]["source"],
        db.canonicalize().unwrap().display().to_string()
    );
    // Stopped: `status` says so and exits 4.
    let out = status_cmd().output().unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert_has(
        &String::from_utf8_lossy(&out.stdout),
        &["watcher:  stopped"],
    );
    assert_store_clean(&fx);
}

#[test]
fn sighup_reloads_the_config_and_keeps_it_when_the_new_one_is_bad() {
    let fx = Fx::new();
    let a = small_db(&fx, "a.db", 4);
    small_db(&fx, "b.db", 5);
    let cfg = fx.path("watch.toml");
    std::fs::write(
        &cfg,
        "status_file = \"st.json\"\nevery = \"1s\"\nprune = \"never\"\n[[database]]\npath = \"a.db\"\n",
    )
    .unwrap();
    let st_path = fx.path("st.json");
    let mut w = Watch::start(&fx, &["--config", "watch.toml"], &[]);
    wait_for(Duration::from_secs(20), "a's first snapshot", || {
        st_path.exists() && snapshot_count(&status(&st_path), "a") >= 1
    });
    std::fs::write(
        &cfg,
        "status_file = \"st.json\"\nevery = \"1s\"\nprune = \"never\"\n\
         [[database]]\npath = \"a.db\"\nkeep_last = 1\n\
         [[database]]\npath = \"b.db\"\nintegrity_check = \"full\"\n",
    )
    .unwrap();
    w.signal(Signal::HUP);
    wait_for(Duration::from_secs(20), "b's first snapshot", || {
        let st = status(&st_path);
        st["databases"].as_array().unwrap().len() == 2 && snapshot_count(&st, "b") >= 1
    });
    // a kept its connection and what it last saw: unchanged, it was skipped in
    // the round that took b's first snapshot, not snapshotted again.
    assert_eq!(snapshot_count(&status(&st_path), "a"), 1);
    assert!(db_status(&status(&st_path), "a")["skips"].as_u64().unwrap() >= 1);
    mutate(&Connection::open(&a).unwrap(), 1);
    wait_for(Duration::from_secs(20), "a's second snapshot", || {
        snapshot_count(&status(&st_path), "a") >= 2
    });
    // A broken config is refused; the running one goes on.
    std::fs::write(&cfg, "every = \"soon\"\n").unwrap();
    w.signal(Signal::HUP);
    wait_for(Duration::from_secs(10), "the reload error", || {
        w.log_text().contains("the running configuration is kept")
    });
    let skips = db_status(&status(&st_path), "b")["skips"].as_u64().unwrap();
    wait_for(Duration::from_secs(20), "b to keep running", || {
        db_status(&status(&st_path), "b")["skips"].as_u64().unwrap() > skips
    });
    assert_eq!(w.terminate(Duration::from_secs(30)).code(), Some(0));
    let log = w.log_text();
    assert_has(
        &log,
        &[
            "watch.toml: 2 databases, added b",
            "watch.toml:1: every: invalid duration \\\"soon\\\"",
        ],
    );
    let st = status(&st_path);
    assert_eq!(db_status(&st, "b")["last_check"]["mode"], "full");
    assert_eq!(db_status(&st, "b")["last_check"]["ok"], true);
    // keep_last = 1 from the reloaded config applied to a.
    let a_snaps = fx
        .snapshots()
        .into_iter()
        .filter(|s| s["name"] == "a")
        .count();
    assert_eq!(a_snaps, 1);
    assert_store_clean(&fx);
}

#[test]
fn help_has_examples() {
    for sub in ["watch", "status"] {
        let text = String::from_utf8(ok(bin().args([sub, "--help"]))).unwrap();
        let examples = text
            .split_once("Examples:")
            .unwrap_or_else(|| panic!("no Examples in `{sub} --help`:\n{text}"))
            .1;
        assert!(examples.contains(&format!("pagesnap {sub}")), "{text}");
        assert!(examples.contains("Exit status"), "{text}");
    }
}

/// stuck.db under an exclusive lock of this test, which the watcher waits on
/// for its `busy_timeout` of an hour: a run that does not return, as on a hung
/// mount. Returns the connection holding the lock.
fn lock_exclusively(db: &Path) -> Connection {
    let c = Connection::open(db).unwrap();
    c.execute_batch("BEGIN EXCLUSIVE; UPDATE items SET n = n + 1 WHERE id < 50;")
        .unwrap();
    c
}

#[test]
fn a_stuck_database_is_abandoned_at_its_deadline_and_stalls_nothing_else() {
    let fx = Fx::new();
    let ok_db = fx.path("ok.db");
    let writer = create_db(&ok_db, Journal::Rollback, 300, 31);
    let stuck_db = small_db(&fx, "stuck.db", 32);
    let holder = lock_exclusively(&stuck_db);
    std::fs::write(
        fx.path("watch.toml"),
        r#"
status_file = "status.json"
every = "1s"
prune = "never"

[[database]]
path = "ok.db"

[[database]]
path = "stuck.db"
busy_timeout = "1h"
capture_timeout = "2s"
"#,
    )
    .unwrap();
    let st_path = fx.path("status.json");
    let mut w = Watch::start(&fx, &["--config", "watch.toml"], &[]);

    // While stuck's first run hangs, `status` shows it under way with its deadline.
    wait_for(Duration::from_secs(20), "stuck's run to start", || {
        st_path.exists() && db_status(&status(&st_path), "stuck")["running_since"].is_string()
    });
    let s = db_status(&status(&st_path), "stuck").clone();
    let deadline = time(&s["deadline"]) - time(&s["running_since"]);
    assert_eq!(deadline.num_milliseconds(), 2000, "{s}");

    // ok.db changes four times a second for 6 s: it is snapshotted on schedule
    // all along, although stuck.db's runs never end.
    let started = Instant::now();
    let mut round = 0;
    while started.elapsed() < Duration::from_secs(6) {
        mutate(&writer, round);
        round += 1;
        std::thread::sleep(Duration::from_millis(250));
    }
    let st = status(&st_path);
    let s = db_status(&st, "stuck");
    assert_eq!(s["last_result"], "failed", "{s}");
    assert_eq!(s["snapshots"], 0, "{s}");
    assert_has(
        s["last_error"]["message"].as_str().unwrap(),
        &["stuck.db", "capture_timeout"],
    );
    assert!(s["stuck_since"].is_string(), "{s}");
    // One blocked thread for stuck.db: its later slots fail without a new run.
    let failures: Vec<Value> = w
        .events()
        .into_iter()
        .filter(|e| e["db"] == "stuck" && e["event"] == "failure")
        .collect();
    assert!(failures.len() >= 3, "{failures:?}");
    assert_has(
        failures[0]["message"].as_str().unwrap(),
        &[
            "did not finish within its capture_timeout of 2s",
            "checking the database for changes",
            "abandoned, no snapshot was published",
        ],
    );
    assert!(failures[1..]
        .iter()
        .all(|e| e["message"].as_str().unwrap().contains("still blocked")));
    let ok_snaps: Vec<Value> = w
        .events()
        .into_iter()
        .filter(|e| e["db"] == "ok" && e["event"] == "snapshot")
        .collect();
    assert!(ok_snaps.len() >= 4, "ok snapshots: {ok_snaps:?}");
    for e in &ok_snaps {
        let lag = time(&e["timestamp"]) - time(&e["scheduled"]);
        assert!(
            lag < chrono::TimeDelta::milliseconds(1500),
            "ok's snapshot came {lag} after its slot: {e}"
        );
    }

    // `status` says so: exit 4, the stuck database named.
    let (code, text) = status_cmd(&fx, &st_path, &[]);
    assert_eq!(code, Some(4), "{text}");
    assert_has(
        &text,
        &["stuck  ", "OVERDUE:        stuck: the run started at"],
    );
    let (code, json) = status_cmd(&fx, &st_path, &["--json"]);
    assert_eq!(code, Some(4));
    let v: Value = serde_json::from_str(&json).unwrap();
    let overdue = v["overdue"].as_array().unwrap();
    assert_eq!(overdue.len(), 1, "{v}");
    assert_eq!(overdue[0]["name"], "stuck");

    // The lock goes: the abandoned run wakes up, publishes nothing, and the next
    // run takes stuck.db's snapshot.
    holder.execute_batch("ROLLBACK").unwrap();
    wait_for(Duration::from_secs(20), "stuck's first snapshot", || {
        snapshot_count(&status(&st_path), "stuck") >= 1
    });
    assert!(w
        .log_text()
        .contains("returned at last (it published nothing)"));
    let s = db_status(&status(&st_path), "stuck").clone();
    assert_eq!(s["stuck_since"], Value::Null);
    let in_store = fx
        .snapshots()
        .into_iter()
        .filter(|x| x["name"] == "stuck")
        .count() as u64;
    assert_eq!(in_store, s["snapshots"].as_u64().unwrap(), "{s}");
    wait_for(Duration::from_secs(10), "status to exit 0", || {
        status_cmd(&fx, &st_path, &[]).0 == Some(0)
    });

    assert_eq!(w.terminate(Duration::from_secs(30)).code(), Some(0));
    assert_store_clean(&fx);
}

#[test]
fn sigterm_ends_the_watcher_in_bounded_time_while_a_capture_is_stuck() {
    let fx = Fx::new();
    small_db(&fx, "ok.db", 33);
    let stuck_db = small_db(&fx, "stuck.db", 34);
    let holder = lock_exclusively(&stuck_db);
    std::fs::write(
        fx.path("watch.toml"),
        r#"
status_file = "status.json"
every = "1s"
stop_timeout = "1s"
busy_timeout = "1h"

[[database]]
path = "ok.db"

[[database]]
path = "stuck.db"
"#,
    )
    .unwrap();
    let st_path = fx.path("status.json");
    let mut w = Watch::start(&fx, &["--config", "watch.toml"], &[]);
    wait_for(
        Duration::from_secs(20),
        "stuck's run and ok's snapshot",
        || {
            st_path.exists() && {
                let st = status(&st_path);
                db_status(&st, "stuck")["running_since"].is_string()
                    && snapshot_count(&st, "ok") >= 1
            }
        },
    );
    // The run's deadline (the default capture_timeout) is an hour away.
    let s = db_status(&status(&st_path), "stuck").clone();
    assert_eq!(s["capture_timeout_secs"], 3600.0, "{s}");
    let (code, _) = status_cmd(&fx, &st_path, &[]);
    assert_eq!(code, Some(0), "a run under way before its deadline is fine");

    let stopped = Instant::now();
    let code = w.terminate(Duration::from_secs(20));
    let took = stopped.elapsed();
    assert_eq!(code.code(), Some(0), "log:\n{}", w.log_text());
    assert!(
        took < Duration::from_secs(4),
        "stop took {took:?} with stop_timeout = 1s"
    );
    let st = status(&st_path);
    assert_eq!(st["state"], "stopped");
    assert_eq!(st["in_progress"], Value::Null);
    let s = db_status(&st, "stuck");
    assert_eq!(s["last_result"], "failed");
    assert_has(
        s["last_error"]["message"].as_str().unwrap(),
        &["stopping: the run was still checking the database for changes after stop_timeout (1s)"],
    );
    assert_eq!(s["running_since"], Value::Null);
    drop(holder);
    assert_store_clean(&fx);
}

#[test]
fn status_reports_a_database_whose_run_is_overdue() {
    // A watcher that holds its status lock but has stopped scheduling (stalled
    // in a prune, a bug): its status file no longer moves.
    let fx = Fx::new();
    let st_path = fx.path("status.json");
    let lock = File::create(fx.path("status.json.lock")).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
    let now = Utc::now();
    let at = |s: i64| (now + chrono::TimeDelta::seconds(s)).to_rfc3339();
    let write = |next_run: String| {
        let st = serde_json::json!({
            "version": 1, "state": "running", "pid": std::process::id(),
            "databases": [
                { "name": "fresh", "every_secs": 600.0, "next_run": at(300), "last_result": "snapshot" },
                { "name": "late", "every_secs": 600.0, "next_run": next_run, "last_result": "snapshot" }
            ]
        });
        std::fs::write(&st_path, st.to_string()).unwrap();
    };
    write(at(-300));
    let (code, text) = status_cmd(&fx, &st_path, &[]);
    assert_eq!(
        code,
        Some(0),
        "5 minutes late, every 10 minutes: not overdue yet\n{text}"
    );
    write(at(-700));
    let (code, text) = status_cmd(&fx, &st_path, &[]);
    assert_eq!(code, Some(4), "{text}");
    assert_has(
        &text,
        &[
            "OVERDUE:        the run due at",
            " UTC has not started (11min",
        ],
    );
    assert!(!text.contains("fresh: OVERDUE"));
    let (code, json) = status_cmd(&fx, &st_path, &["--json"]);
    assert_eq!(code, Some(4));
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["overdue"][0]["name"], "late", "{v}");
    assert_eq!(v["overdue"].as_array().unwrap().len(), 1, "{v}");
    // Its times are written as every JSON time is (docs/JSON.md#times).
    assert_eq!(crate::json_shapes::check_times(&v, "status"), 2, "{v}");
}

#[test]
fn a_hot_journal_is_explained_in_the_status() {
    let fx = Fx::new();
    hot_journal_copy(&fx, "hot.db");
    let mut w = Watch::start(
        &fx,
        &["hot.db", "--every", "1s", "--status-file", "st.json"],
        &[],
    );
    let st_path = fx.path("st.json");
    wait_for(Duration::from_secs(20), "hot's failure", || {
        st_path.exists() && db_status(&status(&st_path), "hot")["failures"].as_u64() >= Some(1)
    });
    assert_eq!(w.terminate(Duration::from_secs(30)).code(), Some(0));
    let h = db_status(&status(&st_path), "hot").clone();
    assert_has(
        h["last_error"]["message"].as_str().unwrap(),
        &["hot.db: has a hot journal (hot.db-journal)", "write access"],
    );
    assert!(fx.snapshots().is_empty());
}

/// `pagesnap watch ARGS` in the fixture's folder, its output once it exits.
fn watch_cmd(fx: &Fx, args: &[&str]) -> std::process::Output {
    fx.cmd()
        .current_dir(fx.dir.path())
        .env_remove("NOTIFY_SOCKET")
        .arg("watch")
        .args(args)
        .output()
        .expect("run pagesnap watch")
}

/// [`watch_cmd`] that must exit 0 (its stderr shown if not): stdout and stderr.
#[track_caller]
fn watch_ok(fx: &Fx, args: &[&str]) -> (String, String) {
    let out = watch_cmd(fx, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

/// `KEY=value` lines (as `env` prints them) of a file a hook wrote.
fn env_file(path: &Path) -> std::collections::BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn on_success_runs_after_a_snapshot_and_on_failure_after_a_failure_with_the_same_variables() {
    let fx = Fx::new();
    small_db(&fx, "good.db", 1);
    std::fs::write(fx.path("bad.db"), vec![7u8; 4096]).unwrap();
    let hook = |kind: &str| {
        format!(
            "env | grep '^PAGESNAP_' > \\\"{}/$PAGESNAP_DB_NAME.{kind}\\\"",
            fx.dir.path().display()
        )
    };
    std::fs::write(
        fx.path("watch.toml"),
        format!(
            "status_file = \"st.json\"\nprune = \"never\"\non_success = \"{}\"\non_failure = \"{}\"\n\
             [[database]]\npath = \"good.db\"\n[[database]]\npath = \"bad.db\"\n",
            hook("success"),
            hook("failure")
        ),
    )
    .unwrap();
    let out = watch_cmd(&fx, &["--config", "watch.toml", "--once"]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "bad.db failed: {log}");
    // Hooks are waited for before the watcher exits.
    let good = env_file(&fx.path("good.success"));
    let snaps = fx.snapshots();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert_eq!(good["PAGESNAP_EVENT"], "snapshot");
    assert_eq!(good["PAGESNAP_DB_NAME"], "good");
    // As the config gives it (relative to the config's folder).
    assert_eq!(good["PAGESNAP_DB_PATH"], "good.db");
    assert_eq!(good["PAGESNAP_ERROR"], "");
    assert_eq!(good["PAGESNAP_FAILURES"], "0");
    assert_eq!(good["PAGESNAP_SNAPSHOT"], snaps[0]["id"].as_str().unwrap());
    assert!(good["PAGESNAP_BYTES_ADDED"].parse::<u64>().unwrap() > 0);
    assert_eq!(good["PAGESNAP_STORE"], fx.store.display().to_string());
    assert!(
        !fx.path("good.failure").exists(),
        "no on_failure after a success"
    );

    let bad = env_file(&fx.path("bad.failure"));
    assert_eq!(bad["PAGESNAP_EVENT"], "backup");
    assert_eq!(bad["PAGESNAP_DB_NAME"], "bad");
    assert!(
        bad["PAGESNAP_ERROR"].contains("not an SQLite database"),
        "{bad:?}"
    );
    assert_eq!(bad["PAGESNAP_FAILURES"], "1");
    assert_eq!(bad["PAGESNAP_SNAPSHOT"], "");
    // The same variables for both hooks.
    assert_eq!(
        good.keys().collect::<Vec<_>>(),
        bad.keys().collect::<Vec<_>>()
    );
    assert!(
        !fx.path("bad.success").exists(),
        "no on_success after a failure"
    );
    assert!(log.contains("on_success command"), "{log}");
}

#[test]
fn once_runs_every_database_once_then_exits_with_their_result() {
    let fx = Fx::new();
    let a = small_db(&fx, "a.db", 1);
    small_db(&fx, "b.db", 2);
    std::fs::write(
        fx.path("watch.toml"),
        "status_file = \"st.json\"\nevery = \"1h\"\nprune = \"never\"\n\
         [[database]]\npath = \"a.db\"\n[[database]]\npath = \"b.db\"\n",
    )
    .unwrap();
    let started = Instant::now();
    watch_ok(&fx, &["--config", "watch.toml", "--once"]);
    // Not an hour: the round runs at once and the watcher exits after it.
    assert!(started.elapsed() < Duration::from_secs(60));
    let st = status(&fx.path("st.json"));
    assert_eq!(st["state"], "stopped");
    assert_eq!(snapshot_count(&st, "a"), 1);
    assert_eq!(snapshot_count(&st, "b"), 1);
    assert_eq!(fx.snapshots().len(), 2);
    // A second round takes a snapshot of each again (a new watcher's first run
    // always does), and only of the changed one in the same process.
    mutate(&Connection::open(&a).unwrap(), 1);
    watch_ok(&fx, &["--config", "watch.toml", "--once"]);
    assert_eq!(snapshot_count(&status(&fx.path("st.json")), "a"), 2);
    // With the databases on the command line, too; a missing one fails the round.
    let out = watch_cmd(
        &fx,
        &["--status-file", "st2.json", "--once", "a.db", "missing.db"],
    );
    assert_eq!(out.status.code(), Some(1));
    let st = status(&fx.path("st2.json"));
    assert_eq!(db_status(&st, "missing")["last_result"], "failed");
    assert_eq!(db_status(&st, "a")["last_result"], "snapshot");
    assert_store_clean(&fx);
}

#[test]
fn dry_run_says_what_a_round_would_do_and_changes_nothing() {
    let fx = Fx::new();
    let a = small_db(&fx, "a.db", 1);
    for i in 0..3 {
        mutate(&Connection::open(&a).unwrap(), i);
        fx.backup(&a, &["--name", "a"]);
    }
    std::fs::write(
        fx.path("watch.toml"),
        "status_file = \"st.json\"\nprune = \"daily\"\n\
         [[database]]\npath = \"a.db\"\nkeep_last = 1\n",
    )
    .unwrap();
    let before = fx.state();
    let (stdout, _) = watch_ok(&fx, &["--config", "watch.toml", "--dry-run"]);
    assert_has(
        &stdout,
        &[
            "dry run: nothing is snapshotted, forgotten or pruned",
            "a: would snapshot a.db",
            "a: retention --keep-last 1 (config): of its 3 snapshots now, would forget 2",
            "prune: every 1day: due, runs after the first snapshot; on the first round: would free",
        ],
    );
    fx.assert_unchanged(&before);
    assert_eq!(fx.snapshots().len(), 3);
    assert!(!fx.path("st.json").exists(), "no status file written");
    // A database that cannot be read is said to fail.
    std::fs::remove_file(&a).unwrap();
    let (stdout, _) = watch_ok(&fx, &["--config", "watch.toml", "--dry-run"]);
    assert!(stdout.contains("a: would fail: "), "{stdout}");
    fx.assert_unchanged(&before);
}

#[test]
fn check_config_validates_the_config_and_its_paths_and_prints_a_summary() {
    let fx = Fx::new();
    small_db(&fx, "a.db", 1);
    let cfg = fx.path("watch.toml");
    std::fs::write(
        &cfg,
        "status_file = \"st.json\"\nprune = \"weekly\"\n\
         [[database]]\npath = \"a.db\"\nkeep_daily = 7\non_success = \"true\"\n",
    )
    .unwrap();
    let (stdout, _) = watch_ok(&fx, &["--config", "watch.toml", "--check-config"]);
    assert_has(
        &stdout,
        &[
            "watch.toml: ok",
            "prune: every 7days",
            "a: a.db, every 10min, retention --keep-daily 7 (config), capture_timeout 1h, hooks: on_success",
        ],
    );
    assert!(!fx.path("st.json").exists(), "nothing written");
    assert!(fx.snapshots().is_empty());

    // A database that is not there: the file, the database and the key.
    std::fs::write(&cfg, "[[database]]\npath = \"gone.db\"\n").unwrap();
    let err = fails_usage(fx.cmd().current_dir(fx.dir.path()).args([
        "watch",
        "--config",
        "watch.toml",
        "--check-config",
    ]));
    assert!(
        err.contains("watch.toml: database \"gone\": path gone.db: no such file"),
        "{err}"
    );
    // A key that does not exist: the file and its line.
    std::fs::write(&cfg, "[[database]]\npath = \"a.db\"\nevry = \"1m\"\n").unwrap();
    let err = fails_usage(fx.cmd().current_dir(fx.dir.path()).args([
        "watch",
        "--config",
        "watch.toml",
        "--check-config",
    ]));
    assert!(err.contains("watch.toml:3: unknown field `evry`"), "{err}");
    // A store that is not one.
    std::fs::write(&cfg, "store = \"nostore\"\n[[database]]\npath = \"a.db\"\n").unwrap();
    let err = fails_usage(bin().current_dir(fx.dir.path()).args([
        "watch",
        "--config",
        "watch.toml",
        "--check-config",
    ]));
    assert!(err.contains("watch.toml: store: "), "{err}");
}

#[test]
fn start_logs_per_database_the_retention_it_will_apply_and_the_prune_schedule() {
    let fx = Fx::new();
    small_db(&fx, "a.db", 1);
    small_db(&fx, "b.db", 2);
    small_db(&fx, "c.db", 3);
    std::fs::write(
        fx.path("watch.toml"),
        "status_file = \"st.json\"\nprune = \"daily\"\n\
         [[database]]\npath = \"a.db\"\nkeep_last = 3\n[[database]]\npath = \"b.db\"\n",
    )
    .unwrap();
    // b has no policy of its own: the store's saved one applies.
    ok(fx.cmd().args(["policy", "set", "--keep-hourly", "5"]));
    let (_, stderr) = watch_ok(
        &fx,
        &["--config", "watch.toml", "--once", "--log-format", "json"],
    );
    let events: Vec<Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let plan: Vec<&Value> = events.iter().filter(|e| e["event"] == "plan").collect();
    assert_eq!(plan.len(), 3, "{plan:?}");
    assert_eq!(plan[0]["db"], "a");
    assert_eq!(plan[0]["retention"], "--keep-last 3");
    assert_eq!(plan[0]["retention_source"], "config");
    assert_eq!(plan[1]["db"], "b");
    assert_eq!(plan[1]["retention"], "--keep-hourly 5");
    assert_eq!(plan[1]["retention_source"], "store");
    assert_eq!(plan[2]["prune"], "every 1day");
    // Logged before the first run.
    let first_plan = events.iter().position(|e| e["event"] == "plan").unwrap();
    let first_snap = events
        .iter()
        .position(|e| e["event"] == "snapshot")
        .unwrap();
    assert!(first_plan < first_snap);

    // The human format, one line each; a database without any policy says so.
    ok(fx.cmd().args(["policy", "clear"]));
    let out = watch_cmd(
        &fx,
        &[
            "--status-file",
            "st2.json",
            "--once",
            "--prune",
            "never",
            "--log-format",
            "human",
            "c.db",
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    let log = String::from_utf8_lossy(&out.stderr);
    assert_has(
        &log,
        &[
            "c: no retention policy (none in the config, none saved in the store): every snapshot is kept",
            "prune: never on a schedule",
        ],
    );
}

#[test]
fn a_reload_logs_the_retention_and_prune_schedule_it_will_apply() {
    let fx = Fx::new();
    small_db(&fx, "a.db", 1);
    let cfg = fx.path("watch.toml");
    std::fs::write(
        &cfg,
        "status_file = \"st.json\"\nevery = \"1h\"\nprune = \"never\"\n[[database]]\npath = \"a.db\"\n",
    )
    .unwrap();
    let mut w = Watch::start(&fx, &["--config", "watch.toml"], &[]);
    let plans = |w: &Watch| -> Vec<Value> {
        w.events()
            .into_iter()
            .filter(|e| e["event"] == "plan")
            .collect()
    };
    wait_for(Duration::from_secs(20), "the plan at start", || {
        plans(&w).len() >= 2
    });
    let start = plans(&w);
    assert_eq!(start[0]["db"], "a");
    assert_eq!(start[0]["retention_source"], "none");
    assert_eq!(start[1]["prune"], "never");
    std::fs::write(
        &cfg,
        "status_file = \"st.json\"\nevery = \"1h\"\nprune = \"weekly\"\n\
         [[database]]\npath = \"a.db\"\nkeep_last = 2\n",
    )
    .unwrap();
    w.signal(Signal::HUP);
    wait_for(Duration::from_secs(20), "the plan after the reload", || {
        plans(&w).len() >= 4
    });
    let after = plans(&w);
    assert_eq!(after[2]["db"], "a");
    assert_eq!(after[2]["retention"], "--keep-last 2");
    assert_eq!(after[2]["retention_source"], "config");
    assert_eq!(after[3]["prune"], "every 7days");
    assert_eq!(w.terminate(Duration::from_secs(30)).code(), Some(0));
}

//! Crash safety of prune, forget and backup (fault injection at every object
//! write/delete, and SIGKILL at random moments), prune racing backups, and (ignored)
//! a measurement of gc on a large store.

use crate::retention::{assert_all_restore, dir_size, lock_count};
use crate::util::*;
use rusqlite::Connection;
use serde_json::Value;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A fixture whose store is a fresh copy of `template`.
fn copy_of(template: &Path) -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    copy_dir(template, &store);
    Fx { dir, store }
}

/// Runs `pagesnap ARGS` on `fx` with `PAGESNAP_FAULT_AFTER=n`; true when it ran to
/// the end (the budget was not spent), false when it aborted.
fn run_with_fault(fx: &Fx, n: u64, args: &[&str]) -> bool {
    let out = fx
        .cmd()
        .env("PAGESNAP_FAULT_AFTER", n.to_string())
        .args(args)
        .output()
        .unwrap();
    if out.status.success() {
        return true;
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&out.status),
        Some(6),
        "expected an abort at fault {n} of {args:?}: {stderr}"
    );
    false
}

/// After an interruption: remove the stale lock, check every snapshot restores,
/// finish the job with `finish`, prune, and check nothing unreferenced is left and
/// the store has the size of an uninterrupted run (`want_size`).
fn recover_and_check(fx: &Fx, finish: &[&[&str]], prune_args: &[&str], want_size: u64, what: &str) {
    let v = ok_json(fx.cmd().args(["--json", "unlock"]));
    assert!(v["removed"].as_array().unwrap().len() <= 1, "{what}: {v}");
    assert_eq!(lock_count(&fx.store), 0, "{what}");
    assert_all_restore(fx);
    for args in finish {
        ok(fx.cmd().args(*args));
    }
    ok(fx.cmd().arg("prune").args(prune_args));
    assert_clean(fx, prune_args, what);
    let size = dir_size(&fx.store);
    let tolerance = want_size / 50 + 4096;
    assert!(
        size.abs_diff(want_size) <= tolerance,
        "{what}: store is {size} bytes after recovery, {want_size} after an uninterrupted run"
    );
    assert_all_restore(fx);
}

/// A further prune would do nothing.
#[track_caller]
fn assert_clean(fx: &Fx, prune_args: &[&str], what: &str) {
    let v: Value = ok_json(
        fx.cmd()
            .args(["--json", "prune", "--dry-run"])
            .args(prune_args),
    );
    for k in [
        "packs_deleted",
        "packs_rewritten",
        "index_deleted",
        "maps_deleted",
        "dicts_deleted",
        "missing_chunks",
    ] {
        assert_eq!(v[k], 0, "{what}: {k} in {v}");
    }
    assert!(v["bytes_freed"].as_u64().unwrap() < 1024, "{what}: {v}");
}

/// A store with `n` snapshots of `app` (changing between them) and 2 of `tmp`.
fn base_store(fx: &Fx, n: u32, rows: usize) -> Connection {
    let db = fx.path("app.db");
    let conn = create_db(&db, Journal::Rollback, rows, 11);
    for i in 0..n {
        if i > 0 {
            mutate(&conn, i as u64);
        }
        fx.backup(&db, &["--time", &t(i * 10)]);
    }
    let tmp = small_db(fx, "tmp.db", 12);
    fx.backup(&tmp, &["--time", &t(5)]);
    mutate(&Connection::open(&tmp).unwrap(), 99);
    fx.backup(&tmp, &["--time", &t(15)]);
    conn
}

/// Forgets every other snapshot of `app` and all of `tmp`.
fn forget_half(fx: &Fx) {
    let snaps = fx.snapshots();
    let mut cmd = fx.cmd();
    cmd.args(["forget", "--allow-empty"]);
    let mut app_seen = 0;
    for s in &snaps {
        if s["name"] == "tmp" {
            cmd.arg(s["id"].as_str().unwrap());
        } else {
            if app_seen % 2 == 0 {
                cmd.arg(s["id"].as_str().unwrap());
            }
            app_seen += 1;
        }
    }
    ok(&mut cmd);
}

#[test]
fn prune_killed_after_every_write_or_delete_recovers() {
    prune_crash_loop(Fx::new(), false);
}

/// The same in a store with deltas (`init --deltas`): prune keeps the bases of
/// live deltas and moves delta blobs as they are, and no kill loses any.
#[test]
fn prune_killed_after_every_write_or_delete_recovers_with_deltas() {
    prune_crash_loop(deltas_store(), true);
}

/// Whether the store holds an index object of version 2 (one with deltas).
fn has_deltas(fx: &Fx) -> bool {
    tree(&fx.store.join("index")).keys().any(|k| {
        let bytes = std::fs::read(fx.store.join("index").join(k)).unwrap();
        u16::from_le_bytes([bytes[8], bytes[9]]) == 2
    })
}

/// A directory with a store made with `init --deltas`.
fn deltas_store() -> Fx {
    let fx = Fx::uninit();
    let v = ok_json(fx.cmd().args(["--json", "init", "--deltas"]));
    assert_eq!(v["deltas"], true, "{v}");
    fx
}

fn prune_crash_loop(fx: Fx, deltas: bool) {
    drop(base_store(&fx, 12, 600));
    assert_eq!(has_deltas(&fx), deltas);
    forget_half(&fx);
    assert_eq!(fx.snapshots().len(), 6);
    // Rewrite partly dead packs too, so that prune writes as well as deletes.
    let args = ["--max-unused", "0"];
    let reference = copy_of(&fx.store);
    ok(reference.cmd().arg("prune").args(args));
    let want = dir_size(&reference.store);

    let mut k = 0;
    for n in 1..500 {
        let cp = copy_of(&fx.store);
        if run_with_fault(&cp, n, &[&["prune"][..], &args].concat()) {
            k = n;
            assert_clean(&cp, &args, "uninterrupted");
            break;
        }
        assert_eq!(lock_count(&cp.store), 1, "prune {n}: its lock remains");
        recover_and_check(&cp, &[], &args, want, &format!("prune killed at op {n}"));
        assert_no_store_temps(&cp.store);
    }
    assert!(k >= 8, "a full prune does {k} writes and deletes");
    eprintln!("prune: {k} writes/deletes, all interruptions recovered");
}

#[test]
fn forget_killed_after_every_delete_recovers() {
    let fx = Fx::new();
    drop(base_store(&fx, 10, 400));
    let forget: &[&str] = &["forget", "--name", "app", "--keep-last", "4"];
    let reference = copy_of(&fx.store);
    ok(reference.cmd().args(forget));
    ok(reference.cmd().arg("prune"));
    let want = dir_size(&reference.store);
    let want_snaps = reference.snapshots();

    let mut k = 0;
    for n in 1..100 {
        let cp = copy_of(&fx.store);
        if run_with_fault(&cp, n, forget) {
            k = n;
            break;
        }
        let left = cp.snapshots().len();
        assert!(
            (want_snaps.len()..=12).contains(&left),
            "forget {n}: {left}"
        );
        recover_and_check(
            &cp,
            &[forget],
            &[],
            want,
            &format!("forget killed at op {n}"),
        );
        assert_no_store_temps(&cp.store);
        assert_eq!(cp.snapshots(), want_snaps);
    }
    // A lock, 6 manifests, the lock's removal.
    assert_eq!(k, 8, "writes and deletes of a forget of 6 snapshots");
}

#[test]
fn backup_killed_after_every_write_recovers() {
    backup_crash_loop(Fx::new(), false);
}

/// The same in a store with deltas: a killed backup leaves no delta whose base
/// or base-table row is missing.
#[test]
fn backup_killed_after_every_write_recovers_with_deltas() {
    backup_crash_loop(deltas_store(), true);
}

fn backup_crash_loop(fx: Fx, deltas: bool) {
    let conn = base_store(&fx, 4, 400);
    assert_eq!(has_deltas(&fx), deltas);
    // The next version of the database (a bigger change than `mutate`).
    for r in 0..4 {
        mutate(&conn, 1000 + r);
    }
    drop(conn);
    let db = fx.path("app.db");
    let next = |f: &Fx| {
        ok(f.cmd().arg("backup").arg(&db).args(["--time", &t(200)]));
    };
    let reference = copy_of(&fx.store);
    next(&reference);
    ok(reference.cmd().arg("prune"));
    let want = dir_size(&reference.store);
    let before = fx.snapshots();

    let mut k = 0;
    for n in 1..200 {
        let cp = copy_of(&fx.store);
        let done = run_with_fault(&cp, n, &["backup", db.to_str().unwrap(), "--time", &t(200)]);
        if done {
            k = n;
            break;
        }
        let after = cp.snapshots();
        assert!(
            after == before || after.len() == before.len() + 1,
            "backup {n}: the snapshot list is the old one, or has the new snapshot"
        );
        // Every published snapshot restores; the next backup works and restores too.
        let published = after.len() > before.len();
        let finish: &[&[&str]] = &[];
        let v = ok_json(cp.cmd().args(["--json", "unlock"]));
        assert!(v["removed"].as_array().unwrap().len() <= 1);
        assert_all_restore(&cp);
        if !published {
            next(&cp);
        }
        recover_and_check(&cp, finish, &[], want, &format!("backup killed at op {n}"));
        assert_no_store_temps(&cp.store);
        assert_eq!(cp.snapshots().len(), before.len() + 1);
    }
    assert!(k >= 3, "a backup does {k} writes");
}

#[test]
fn gc_killed_at_random_moments_recovers() {
    gc_crash_loop(Fx::new(), false);
}

/// The same in a store with deltas: a killed gc (forget, then prune keeping
/// the bases of live deltas) loses nothing a kept snapshot needs.
#[test]
fn gc_killed_at_random_moments_recovers_with_deltas() {
    gc_crash_loop(deltas_store(), true);
}

fn gc_crash_loop(fx: Fx, deltas: bool) {
    drop(base_store(&fx, 16, 3000));
    assert_eq!(has_deltas(&fx), deltas);
    let gc_args: &[&str] = &["gc", "--keep-last", "5", "--max-unused", "0"];
    let reference = copy_of(&fx.store);
    ok(reference.cmd().args(gc_args));
    let want = dir_size(&reference.store);
    let want_snaps = reference.snapshots();

    let mut rng = Rng(42);
    let mut interrupted = 0;
    let mut left_temps = 0;
    for i in 0..20 {
        let cp = copy_of(&fx.store);
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pagesnap"))
            .env_remove("PAGESNAP_STORE")
            .arg("--store")
            .arg(&cp.store)
            .args(gc_args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(rng.below(30_000)));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        if !status.success() {
            interrupted += 1;
        }
        recover_and_check(
            &cp,
            &[&gc_args[..3]],
            &["--max-unused", "0"],
            want,
            &format!("gc killed, iteration {i}"),
        );
        assert_eq!(cp.snapshots(), want_snaps, "iteration {i}");
        let temps = tree(&cp.store)
            .into_keys()
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(".tmp-")
            })
            .count();
        if temps > 0 {
            left_temps += 1;
        }
    }
    eprintln!(
        "gc killed {interrupted} of 20 times; {left_temps} kills left temporary files that nothing removes"
    );
    assert!(
        interrupted >= 10,
        "only {interrupted} of 20 runs were killed"
    );
}

#[test]
fn prune_and_forget_race_backups() {
    let fx = Fx::new();
    let db = fx.path("app.db");
    drop(create_db(&db, Journal::Wal, 800, 21));
    fx.backup(&db, &[]);
    let stop = AtomicBool::new(false);
    let (mut backups, mut prunes, mut refused) = (0, 0, 0);
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let conn = Connection::open(&db).unwrap();
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                mutate(&conn, 3000 + n);
                ok(fx.cmd().arg("backup").arg(&db));
                n += 1;
            }
            n
        });
        // Stops the writer however the main thread leaves (a failed assertion too).
        struct Stop<'a>(&'a AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let guard = Stop(&stop);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            ok(fx.cmd().args(["forget", "--keep-last", "3"]));
            let out = fx.cmd().arg("prune").output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            if out.status.success() {
                prunes += 1;
            } else {
                assert_has(&stderr, &["locked by a shared lock of `backup`"]);
                refused += 1;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(guard);
        backups = writer.join().unwrap();
    });
    eprintln!("{backups} backups, {prunes} prunes, {refused} refused while a backup ran");
    ok(fx.cmd().args(["forget", "--keep-last", "3"]));
    assert!(
        backups >= 5 && prunes >= 2,
        "{backups} backups, {prunes} prunes"
    );
    assert_eq!(lock_count(&fx.store), 0);
    let n = assert_all_restore(&fx);
    assert_eq!(n, 3, "snapshots after forget --keep-last 3");
    ok(fx.cmd().args(["prune", "--max-unused", "0"]));
    assert_clean(&fx, &["--max-unused", "0"], "after the race");
    assert_all_restore(&fx);
    // The last snapshot is the database as it is now.
    let out = fx.path("latest.db");
    fx.restore(&["latest"], &out);
    let reference = reference_copy(&db, &fx.path("ref.db"));
    assert_eq!(hash_file(&out), reference);
}

#[test]
#[ignore = "measurement: run with --ignored"]
fn scale_gc_of_5000_snapshots() {
    use chrono::TimeZone;
    let fx = Fx::new();
    let db = fx.path("big.db");
    let conn = Connection::open(&db).unwrap();
    conn.execute_batch(
        "PRAGMA page_size=4096; CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);
         WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i < 3900)
         INSERT INTO t(v) SELECT randomblob(4000) FROM c;",
    )
    .unwrap();
    let size = std::fs::metadata(&db).unwrap().len();
    eprintln!("database: {} MiB", size >> 20);
    let store = pagesnap_core::Store::open(&fx.store).unwrap();
    let base = chrono::Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
    let count: i64 = std::env::var("SCALE_SNAPSHOTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let started = Instant::now();
    let mut rng = Rng(5);
    for i in 0..count {
        for _ in 0..4 {
            conn.execute(
                "UPDATE t SET v = randomblob(4000) WHERE id = ?1",
                [1 + rng.below(3900) as i64],
            )
            .unwrap();
        }
        store
            .backup_path(
                &db,
                &pagesnap_core::BackupOptions {
                    time: Some(base + chrono::Duration::hours(i)),
                    ..Default::default()
                },
            )
            .unwrap();
        if i % 500 == 499 {
            eprintln!("{} snapshots in {:.1?}", i + 1, started.elapsed());
        }
    }
    let created = started.elapsed();
    let before = dir_size(&fx.store);
    let started = Instant::now();
    let v = ok_json(
        fx.cmd()
            .args(["--json", "gc", "--keep-daily", "30", "--keep-monthly", "12"]),
    );
    let gc = started.elapsed();
    let started = Instant::now();
    let v2 = ok_json(fx.cmd().args(["--json", "prune", "--dry-run"]));
    let dry = started.elapsed();
    let left = fx.snapshots().len();
    eprintln!(
        "SCALE: {count} snapshots of a {} MiB database created in {created:.1?} ({:.1} ms each); \
         store {} MiB; gc --keep-daily 30 --keep-monthly 12 in {gc:.1?}: removed {}, kept {left}, \
         freed {} MiB, packs {} deleted / {} rewritten; store now {} MiB; a further prune --dry-run in {dry:.1?}",
        size >> 20,
        created.as_secs_f64() * 1000.0 / count as f64,
        before >> 20,
        v["forget"]["removed"],
        v["prune"]["bytes_freed"].as_u64().unwrap() >> 20,
        v["prune"]["packs_deleted"],
        v["prune"]["packs_rewritten"],
        dir_size(&fx.store) >> 20,
    );
    assert_eq!(v2["packs_deleted"], 0);
    let out = fx.path("latest.db");
    fx.restore(&["latest"], &out);
    assert_eq!(integrity(&out), "ok");
}

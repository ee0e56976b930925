//! Where a restore writes: never over an existing file unless told to.

use crate::util::*;
use serde_json::Value;

#[test]
fn existing_output_is_kept_without_force_and_replaced_with_it() {
    let fx = Fx::new();
    let db = fx.path("app.db");
    drop(create_db(&db, Journal::Rollback, 1500, 70));
    let b = fx.backup(&db, &[]);
    let reference = reference_copy(&db, &fx.path("ref.db"));
    let before = fx.state();

    let out = fx.path("precious.db");
    std::fs::write(&out, b"precious data, not a snapshot").unwrap();
    let err = fails(fx.cmd().args(["restore", "latest", "-o"]).arg(&out));
    assert_has(
        &err,
        &[&out.display().to_string(), "already exists", "--force"],
    );
    assert_eq!(
        std::fs::read(&out).unwrap(),
        b"precious data, not a snapshot"
    );
    assert_no_restore_temps(fx.dir.path());
    fx.assert_unchanged(&before);

    // A directory is never replaced, even with --force.
    let dir = fx.path("adir");
    std::fs::create_dir(&dir).unwrap();
    let err = fails(
        fx.cmd()
            .args(["restore", "latest", "--force", "-o"])
            .arg(&dir),
    );
    assert_has(&err, &[&dir.display().to_string(), "is a directory"]);
    assert!(dir.is_dir());
    assert_no_restore_temps(fx.dir.path());

    // With --force the file is replaced by the exact image.
    let r = fx.restore(&["latest", "--force"], &out);
    assert_eq!(r["id"], b["id"]);
    assert_restored(&out, &b["image_hash"], &reference);
    assert_no_restore_temps(fx.dir.path());
}

#[test]
fn output_in_a_missing_directory_is_refused() {
    let fx = Fx::new();
    let db = small_db(&fx, "app.db", 71);
    fx.backup(&db, &[]);
    let out = fx.path("no/such/dir/out.db");
    let err = fails(fx.cmd().args(["restore", "-o"]).arg(&out));
    assert_has(&err, &[&fx.path("no/such/dir").display().to_string()]);
    assert!(!fx.path("no").exists());
}

/// Progress bars never reach stdout: with `--progress` the JSON documents and a
/// restored image on stdout stay exactly what they are without it, and without a
/// terminal nothing is drawn on stderr either.
#[test]
fn progress_bars_stay_off_stdout_and_off_pipes() {
    let fx = Fx::new();
    let db = fx.path("app.db");
    drop(create_db(&db, Journal::Wal, 1500, 71));
    let b = ok_json(fx.cmd().args(["--json", "--progress", "backup"]).arg(&db));
    assert_eq!(b["name"], "app");
    let o = fx
        .cmd()
        .args(["--progress", "restore", "latest", "-o", "-"])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_eq!(Value::String(hash_bytes(&o.stdout)), b["image_hash"]);
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains('\u{1b}'),
        "terminal escapes on a pipe: {:?}",
        String::from_utf8_lossy(&o.stderr)
    );
    let p = ok_json(fx.cmd().args(["--json", "--progress", "prune"]));
    assert_eq!(p["dry_run"], false);
}

/// Packs and durable restores are written past the page cache (`O_DIRECT`) where
/// the file system allows it, and the ordinary way with `--no-fsync`, with
/// `PAGESNAP_NO_DIRECT_IO=1`, or on a file system that refuses it (tmpfs): every
/// way gives the exact image, and a store written either way verifies.
#[test]
fn direct_and_ordinary_writes_give_the_same_image() {
    let fx = Fx::new();
    let db = fx.path("big.db");
    drop(create_db(&db, Journal::Wal, 8000, 73));
    let b = fx.backup(&db, &[]);
    let reference = reference_copy(&db, &fx.path("ref.db"));
    // Large enough that a pack goes through the direct writer (over 1 MiB).
    assert!(
        pack_files(&fx.store)
            .iter()
            .any(|p| p.metadata().unwrap().len() > 1 << 20),
        "no pack over 1 MiB: the test database is too small"
    );
    let ways: [(&str, &[&str], Option<&str>); 3] = [
        ("direct.db", &[], None),
        ("nofsync.db", &["--no-fsync"], None),
        ("off.db", &[], Some("1")),
    ];
    for (name, extra, env) in ways {
        let out = fx.path(name);
        let mut cmd = fx.cmd();
        cmd.args(["restore", "latest", "-o"]).arg(&out).args(extra);
        if let Some(v) = env {
            cmd.env("PAGESNAP_NO_DIRECT_IO", v);
        }
        ok(&mut cmd);
        assert_restored(&out, &b["image_hash"], &reference);
    }
    assert_no_restore_temps(fx.dir.path());

    // A second store written with direct writes off holds the same image.
    let other = fx.path("store-plain");
    ok(ps(&other).arg("init"));
    ok(ps(&other)
        .env("PAGESNAP_NO_DIRECT_IO", "1")
        .arg("backup")
        .arg(&db));
    let out = fx.path("plain.db");
    ok(ps(&other).args(["restore", "latest", "-o"]).arg(&out));
    assert_restored(&out, &b["image_hash"], &reference);
    for store in [&fx.store, &other] {
        ok(ps(store).args(["verify", "--read-data"]));
        assert_no_store_temps(store);
    }

    // tmpfs refuses O_DIRECT: the writer falls back, nothing is lost.
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        let dir = tempfile::tempdir_in(shm).unwrap();
        let store = dir.path().join("store");
        ok(ps(&store).arg("init"));
        ok(ps(&store).arg("backup").arg(&db));
        let out = dir.path().join("out.db");
        ok(ps(&store).args(["restore", "latest", "-o"]).arg(&out));
        assert_restored(&out, &b["image_hash"], &reference);
        ok(ps(&store).args(["verify", "--read-data"]));
    }
}

/// Restore temporary files in `dir`.
fn restore_temps(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".pagesnap-restore-"))
        })
        .collect();
    v.sort();
    v
}

/// Waits (up to a minute) until `dir` holds a restore temporary file not in
/// `known`, and returns it.
fn new_temp(dir: &std::path::Path, known: &[std::path::PathBuf]) -> std::path::PathBuf {
    let started = std::time::Instant::now();
    loop {
        if let Some(p) = restore_temps(dir).into_iter().find(|p| !known.contains(p)) {
            return p;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "no temporary file appeared in {}",
            dir.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// A restore killed (SIGKILL) after it made its temporary file, a full-size one
/// (its blocks are reserved up front), leaves it behind; the next restore into
/// that folder removes it and says so, but leaves the file of a restore that is
/// still running. Restores are held at the start of their work by an exclusive
/// store lock this test takes (they wait for it, their temporary file made).
#[test]
fn a_killed_restores_temporary_file_is_removed_by_the_next_restore() {
    let fx = Fx::new();
    let db = fx.path("app.db");
    drop(create_db(&db, Journal::Rollback, 1500, 71));
    let b = fx.backup(&db, &[]);
    let reference = reference_copy(&db, &fx.path("ref.db"));
    let out_dir = fx.path("out");
    std::fs::create_dir(&out_dir).unwrap();

    let store = pagesnap_core::Store::open(&fx.store).unwrap();
    let lock = store.lock(true, "test", std::time::Duration::ZERO).unwrap();
    let spawn = |name: &str| {
        std::process::Command::new(assert_cmd::cargo::cargo_bin("pagesnap"))
            .env_remove("PAGESNAP_STORE")
            .arg("--store")
            .arg(&fx.store)
            .args(["restore", "latest", "-o"])
            .arg(out_dir.join(name))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };

    let mut killed = spawn("a.db");
    let stale = new_temp(&out_dir, &[]);
    let name = stale.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with(&format!(".pagesnap-restore-{}-", killed.id())),
        "the name carries the pid: {name}"
    );
    // The file is made, then its blocks reserved: kill once both are done
    // (the restore then waits for the lock), not in between.
    let full = std::fs::metadata(&db).unwrap().len();
    let made = std::time::Instant::now();
    while std::fs::metadata(&stale).map_or(0, |m| m.len()) != full {
        assert!(
            made.elapsed() < std::time::Duration::from_secs(60),
            "the temporary file never reached full size: its blocks were not reserved"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    killed.kill().unwrap(); // SIGKILL
    killed.wait().unwrap();
    assert!(stale.exists(), "a killed restore leaves its file");
    assert_eq!(
        std::fs::metadata(&stale).unwrap().len(),
        full,
        "full size: its blocks were reserved"
    );

    // A second restore removes it before it makes its own.
    let second = spawn("b.db");
    let live = new_temp(&out_dir, std::slice::from_ref(&stale));
    assert!(!stale.exists(), "the stale file is removed");
    // A third one leaves the second's alone: its process is alive.
    let third = spawn("c.db");
    let third_temp = new_temp(&out_dir, &[stale.clone(), live.clone()]);
    assert!(live.exists(), "a live restore's file is kept");
    assert!(third_temp.exists());

    drop(lock);
    let second = second.wait_with_output().unwrap();
    let third = third.wait_with_output().unwrap();
    assert!(second.status.success(), "{second:?}");
    assert!(third.status.success(), "{third:?}");
    assert_has(
        &String::from_utf8_lossy(&second.stderr),
        &[&format!("removed {}", stale.display()), "killed"],
    );
    assert!(!String::from_utf8_lossy(&third.stderr).contains("removed"));
    for name in ["b.db", "c.db"] {
        assert_restored(&out_dir.join(name), &b["image_hash"], &reference);
    }
    assert!(!out_dir.join("a.db").exists());
    assert_no_restore_temps(&out_dir);
}

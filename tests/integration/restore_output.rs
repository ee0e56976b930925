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

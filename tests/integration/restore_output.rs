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

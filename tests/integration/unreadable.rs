//! Objects that cannot be read are not damage: `verify` says "could not check"
//! (exit 1), `repair` keeps them and everything that depends on them, and once
//! they can be read again every snapshot restores. Damage that is really there
//! (a missing dictionary) is seen by plain `verify`, once per object.
//!
//! "Cannot be read" is made real with file permissions: as root (CI) the binary
//! runs as `nobody`, who owns the store but not the one object made mode 000.

use crate::util::*;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A store with three snapshots of one database (each a page-map chain on the
/// first one's map), their restores' reference hashes, and the database.
fn three_snapshots(fx: &Fx) -> (Vec<Value>, Vec<String>) {
    let db = fx.path("app.db");
    let conn = create_db(&db, Journal::Rollback, 1500, 41);
    let mut snaps = Vec::new();
    let mut refs = Vec::new();
    for round in 0..3 {
        if round > 0 {
            mutate(&conn, round);
        }
        snaps.push(fx.backup(&db, &[]));
        refs.push(reference_copy(&db, &fx.path(&format!("ref{round}.db"))));
    }
    (snaps, refs)
}

/// The one file directly under `store/DIR` written by the first backup (the
/// oldest: its objects are what later snapshots build on).
fn oldest_in(store: &Path, dir: &str) -> PathBuf {
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = files_under(&store.join(dir))
        .into_iter()
        .map(|p| (std::fs::metadata(&p).unwrap().modified().unwrap(), p))
        .collect();
    files.sort();
    files.into_iter().next().expect("an object").1
}

/// Makes `object` unreadable to the user `as_user` runs pagesnap as.
struct Unreadable {
    object: PathBuf,
    as_root: bool,
}

impl Unreadable {
    fn make(fx: &Fx, object: &Path) -> Unreadable {
        let as_root = euid() == 0;
        if as_root {
            // nobody must reach the store: the temp dir is root's 0700.
            std::fs::set_permissions(fx.dir.path(), std::fs::Permissions::from_mode(0o755))
                .unwrap();
            chown_tree(&fx.store, NOBODY);
        }
        std::fs::set_permissions(object, std::fs::Permissions::from_mode(0o000)).unwrap();
        Unreadable {
            object: object.to_path_buf(),
            as_root,
        }
    }

    fn cmd(&self, fx: &Fx) -> assert_cmd::Command {
        unprivileged(&fx.store, self.as_root)
    }

    /// A restore of the newest snapshot, as the unprivileged user, says the
    /// object could not be read (exit 1, no output file) and never calls
    /// anything damaged.
    fn restore_fails_unread(&self, fx: &Fx) {
        let out_db = fx.path("work.db");
        let (code, _, err) = run(self.cmd(fx).args(["restore", "latest", "-o"]).arg(&out_db));
        assert_eq!(code, 1, "{err}");
        assert_has(&err, &["Permission denied"]);
        assert!(!err.contains("damaged"), "{err}");
        assert!(!out_db.exists(), "{err}");
    }

    fn restore(self) {
        std::fs::set_permissions(&self.object, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

/// Runs `cmd`, returns (exit code, stdout, stderr).
fn run(cmd: &mut assert_cmd::Command) -> (i32, String, String) {
    let o = cmd.output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let code = o.status.code().unwrap_or(-1);
    (code, text(&o.stdout), text(&o.stderr))
}

fn assert_all_restore(fx: &Fx, snaps: &[Value], refs: &[String]) {
    for (i, (s, r)) in snaps.iter().zip(refs).enumerate() {
        let out = fx.path(&format!("out{i}.db"));
        fx.restore(&[s["id"].as_str().unwrap()], &out);
        assert_restored(&out, &s["image_hash"], r);
    }
}

#[test]
fn an_unreadable_page_map_is_never_taken_for_damage() {
    let fx = Fx::new();
    let (snaps, refs) = three_snapshots(&fx);
    let map = oldest_in(&fx.store, "maps");
    let before = tree(&fx.store);
    let u = Unreadable::make(&fx, &map);
    let key = map.file_name().unwrap().to_string_lossy().into_owned();

    let (code, out, err) = run(u.cmd(&fx).arg("verify"));
    assert_eq!(code, 1, "verify: {out}{err}");
    assert_has(&out, &["could not check", &key, "Permission denied"]);
    assert!(!out.contains("damaged:"), "{out}");

    // The data-loss case: repair must forget nothing it could not read.
    for args in [
        vec!["repair", "snapshots", "--forget-broken"],
        vec!["repair", "snapshots", "--read-data", "--forget-broken"],
    ] {
        let (code, out, err) = run(u.cmd(&fx).args(&args));
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert_has(&out, &["no broken snapshots", "could not check", &key]);
        let v = ok_json(u.cmd(&fx).args(["--json", "snapshots"]));
        assert_eq!(v.as_array().unwrap().len(), 3, "{args:?} forgot snapshots");
    }
    let v: Value = serde_json::from_str(
        &run(u
            .cmd(&fx)
            .args(["--json", "repair", "snapshots", "--forget-broken"]))
        .1,
    )
    .unwrap();
    assert_eq!(v["broken"], Value::Array(vec![]), "{v}");
    assert_eq!(v["could_not_check"].as_array().unwrap().len(), 1, "{v}");

    // Nothing was deleted or moved: with the map readable again, all restore.
    u.restore();
    assert!(!fx.store.join("damaged").exists());
    let now = tree(&fx.store);
    for (path, hash) in &before {
        assert_eq!(now.get(path), Some(hash), "{} changed", path.display());
    }
    ok(fx.cmd().args(["verify", "--read-data"]));
    assert_all_restore(&fx, &snaps, &refs);
}

#[test]
fn an_unreadable_index_object_is_kept_by_repair_index() {
    let fx = Fx::new();
    let (snaps, refs) = three_snapshots(&fx);
    let index = oldest_in(&fx.store, "index");
    let before = tree(&fx.store);
    let u = Unreadable::make(&fx, &index);
    let key = index.file_name().unwrap().to_string_lossy().into_owned();

    let (code, out, err) = run(u.cmd(&fx).arg("verify"));
    assert_eq!(code, 1, "verify: {out}{err}");
    assert_has(&out, &["could not check", &key]);
    assert!(!out.contains("damaged:"), "{out}");
    assert!(!out.contains("cannot be restored"), "{out}");

    // repair index cannot tell what the object locates: it changes nothing.
    let (code, out, err) = run(u.cmd(&fx).args(["repair", "index"]));
    assert_eq!(code, 1, "repair index: {out}{err}");
    assert_has(&err, &[&key, "Permission denied"]);
    let (code, out, err) = run(u.cmd(&fx).args(["repair", "snapshots", "--forget-broken"]));
    assert_eq!(code, 1, "repair snapshots: {out}{err}");

    u.restore();
    assert!(!fx.store.join("damaged").exists());
    let now = tree(&fx.store);
    for (path, hash) in &before {
        assert_eq!(now.get(path), Some(hash), "{} changed", path.display());
    }
    assert_all_restore(&fx, &snaps, &refs);
}

#[test]
fn an_unreadable_pack_is_not_checked_and_not_damage() {
    let fx = Fx::new();
    let (snaps, refs) = three_snapshots(&fx);
    let pack = oldest_in(&fx.store, "packs");
    let u = Unreadable::make(&fx, &pack);
    let key = pack.file_name().unwrap().to_string_lossy().into_owned();

    // Plain verify reads pack trailers; --read-data reads the packs whole.
    for args in [vec!["verify"], vec!["verify", "--read-data"]] {
        let (code, out, err) = run(u.cmd(&fx).args(&args));
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert_has(&out, &["could not check", &key]);
        assert!(!out.contains("damaged:"), "{args:?}: {out}");
    }
    let (code, out, err) =
        run(u
            .cmd(&fx)
            .args(["repair", "snapshots", "--read-data", "--forget-broken"]));
    assert_eq!(code, 1, "{out}{err}");
    assert_has(&out, &["no broken snapshots"]);
    let (code, out, err) = run(u.cmd(&fx).args(["repair", "index"]));
    assert_eq!(code, 1, "repair index: {out}{err}");
    assert_has(&out, &["could not check", &key]);
    // With --read-data it is one read error, said once.
    let v = ok_json_code(
        u.cmd(&fx)
            .args(["--json", "repair", "index", "--read-data"]),
        1,
    );
    let named = |list: &str| {
        v[list]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["object"].as_str().unwrap().contains(&key))
            .count()
    };
    assert_eq!((named("read_errors"), named("unchecked")), (1, 0), "{v:#}");
    assert_eq!(v["damaged_packs"], Value::Array(vec![]), "{v:#}");
    u.restore_fails_unread(&fx);

    u.restore();
    assert!(!fx.store.join("damaged").exists());
    ok(fx.cmd().args(["verify", "--read-data"]));
    assert_all_restore(&fx, &snaps, &refs);
}

/// A database whose first backup trains a zstd dictionary (many similar rows).
fn dict_db(fx: &Fx) -> PathBuf {
    let db = fx.path("users.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch("CREATE TABLE u(id INTEGER PRIMARY KEY, name TEXT, email TEXT, n INT);")
        .unwrap();
    let mut rng = Rng(7);
    let tx = conn.unchecked_transaction().unwrap();
    for _ in 0..40_000 {
        let (a, b, n) = (
            rng.below(1_000_000),
            rng.below(1_000_000),
            rng.below(1000) as i64,
        );
        tx.execute(
            "INSERT INTO u(name, email, n) VALUES (?1, ?2, ?3)",
            rusqlite::params![format!("user {a}"), format!("user{b}@example.com"), n],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    db
}

#[test]
fn missing_dictionaries_are_damage_seen_by_plain_verify_once_each() {
    let fx = Fx::new();
    let db = dict_db(&fx);
    let b = fx.backup(&db, &[]);
    assert!(b["dict_bytes"].as_u64().unwrap() > 0, "no dictionary: {b}");
    let dicts = files_under(&fx.store.join("dicts"));
    assert_eq!(dicts.len(), 1, "{dicts:?}");
    let key = dicts[0].file_name().unwrap().to_string_lossy().into_owned();
    std::fs::remove_file(&dicts[0]).unwrap();

    let (code, out, err) = run(fx.cmd().arg("verify"));
    assert_eq!(code, 3, "verify: {out}{err}");
    assert_has(&out, &["damaged: dicts/", &key, "missing from the store"]);
    assert_has(&out, &["1 snapshot(s) cannot be restored"]);

    // One problem per missing object, not one per chunk.
    let v = ok_json_code(fx.cmd().args(["--json", "verify", "--read-data"]), 3);
    let problems = v["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{v:#}");
    assert_eq!(problems[0]["kind"], "damage");
    assert!(
        problems[0]["object"].as_str().unwrap().contains(&key),
        "{v}"
    );
    assert_eq!(v["broken_snapshots"].as_array().unwrap().len(), 1);
    let (_, out, _) = run(fx.cmd().args(["verify", "--read-data"]));
    assert!(out.lines().count() < 10, "{out}");
}

/// Runs `cmd`, asserts it exited with `code` and printed JSON on stdout.
fn ok_json_code(cmd: &mut assert_cmd::Command, code: i32) -> Value {
    let (got, out, err) = run(cmd);
    assert_eq!(got, code, "{out}{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// A store with deltas whose chains' roots (the first backup's pack) cannot be
/// read: the deltas in the readable packs made against them are "could not
/// check", never damage; repair forgets and moves nothing, restore says it
/// could not read, and once the pack is readable everything restores.
#[test]
fn an_unreadable_base_is_not_damage_for_the_deltas_made_against_it() {
    let fx = Fx::uninit();
    ok(fx.cmd().args(["init", "--deltas"]));
    let db = fx.path("app.db");
    let conn = create_db(&db, Journal::Rollback, 1500, 41);
    let mut snaps = Vec::new();
    let mut refs = Vec::new();
    let mut deltas = 0;
    for round in 0..4 {
        if round > 0 {
            mutate(&conn, round);
        }
        let s = fx.backup(&db, &[]);
        deltas += s["delta_chunks"].as_u64().unwrap();
        snaps.push(s);
        refs.push(reference_copy(&db, &fx.path(&format!("ref{round}.db"))));
    }
    assert!(deltas > 0, "later backups store deltas");
    let pack = oldest_in(&fx.store, "packs");
    let before = tree(&fx.store);
    let u = Unreadable::make(&fx, &pack);

    let (code, out, err) = run(u.cmd(&fx).args(["verify", "--read-data"]));
    assert_eq!(code, 1, "{out}{err}");
    // The deltas in readable packs: each says its base could not be read.
    assert_has(
        &out,
        &["could not check", "its base chunk", "could not be read"],
    );
    assert!(!out.contains("damaged:"), "{out}");
    let (code, out, err) =
        run(u
            .cmd(&fx)
            .args(["repair", "snapshots", "--read-data", "--forget-broken"]));
    assert_eq!(code, 1, "{out}{err}");
    assert_has(&out, &["no broken snapshots"]);
    let v = ok_json_code(
        u.cmd(&fx)
            .args(["--json", "repair", "index", "--read-data"]),
        1,
    );
    assert_eq!(v["damaged_packs"], Value::Array(vec![]), "{v:#}");
    u.restore_fails_unread(&fx);

    u.restore();
    assert!(!fx.store.join("damaged").exists());
    let now = tree(&fx.store);
    for (path, hash) in &before {
        assert_eq!(now.get(path), Some(hash), "{} changed", path.display());
    }
    ok(fx.cmd().args(["verify", "--read-data"]));
    assert_all_restore(&fx, &snaps, &refs);
}

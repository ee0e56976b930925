//! Stores that cannot be used: missing, not initialised, from a newer format,
//! read-only, or initialised twice.

use crate::util::*;
use std::os::unix::fs::PermissionsExt;

#[test]
fn store_path_missing() {
    let fx = Fx::uninit();
    let db = small_db(&fx, "app.db", 90);
    let out = fx.path("out.db");
    let cmds: [&[&str]; 3] = [&["backup"], &["snapshots"], &["restore", "-o"]];
    for args in cmds {
        let mut c = fx.cmd();
        c.args(args);
        match args[0] {
            "backup" => c.arg(&db),
            "restore" => c.arg(&out),
            _ => &mut c,
        };
        let err = fails(&mut c);
        assert_has(
            &err,
            &[
                &fx.store.display().to_string(),
                "store directory does not exist",
            ],
        );
        assert!(!fx.store.exists(), "{args:?} created the store");
        assert_no_output(&out);
    }
}

#[test]
fn store_path_naming_a_file_says_so() {
    let fx = Fx::uninit();
    let db = small_db(&fx, "app.db", 95);
    std::fs::write(&fx.store, b"not a store").unwrap();
    let out = fx.path("out.db");
    for args in [
        vec!["backup", db.to_str().unwrap()],
        vec!["snapshots"],
        vec!["verify"],
        vec!["restore", "-o", out.to_str().unwrap()],
    ] {
        let err = fails(fx.cmd().args(&args));
        assert_has(
            &err,
            &[&fx.store.display().to_string(), "is a file, not a store"],
        );
        assert!(!err.contains("does not exist"), "{err}");
        assert_eq!(std::fs::read(&fx.store).unwrap(), b"not a store");
        assert_no_output(&out);
    }
}

#[test]
fn store_directory_not_initialised() {
    let fx = Fx::uninit();
    std::fs::create_dir(&fx.store).unwrap();
    let db = small_db(&fx, "app.db", 91);
    let out = fx.path("out.db");
    for args in [
        vec!["backup", db.to_str().unwrap()],
        vec!["snapshots"],
        vec!["restore", "-o", out.to_str().unwrap()],
    ] {
        let err = fails(fx.cmd().args(&args));
        assert_has(
            &err,
            &[
                &fx.store.display().to_string(),
                "not a pagesnap store",
                "pagesnap init",
            ],
        );
        assert!(
            tree(&fx.store).is_empty(),
            "{args:?} wrote into the directory"
        );
        assert_eq!(std::fs::read_dir(&fx.store).unwrap().count(), 0);
        assert_no_output(&out);
    }
}

#[test]
fn config_from_a_newer_format_version_asks_for_an_upgrade() {
    let fx = Fx::new();
    let db = small_db(&fx, "app.db", 92);
    fx.backup(&db, &[]);
    let cfg = fx.store.join("config");
    let mut bytes = std::fs::read(&cfg).unwrap();
    assert_eq!(&bytes[0..8], b"PSNPCONF");
    bytes[8..10].copy_from_slice(&99u16.to_le_bytes());
    let h = blake3::hash(&bytes[..28]);
    bytes[28..32].copy_from_slice(&h.as_bytes()[..4]);
    std::fs::write(&cfg, &bytes).unwrap();
    let files = tree(&fx.store);

    let out = fx.path("out.db");
    for args in [
        vec!["backup", db.to_str().unwrap()],
        vec!["snapshots"],
        vec!["restore", "-o", out.to_str().unwrap()],
        // It could not run: not damage (exit 1, not 3).
        vec!["verify"],
        vec!["verify", "--read-data"],
        vec!["repair", "snapshots", "--forget-broken"],
    ] {
        let err = fails(fx.cmd().args(&args));
        assert_has(
            &err,
            &[
                &cfg.display().to_string(),
                "store format version 99 is newer than this pagesnap supports",
                "upgrade",
            ],
        );
        assert_eq!(tree(&fx.store), files, "{args:?} changed the store");
        assert_no_output(&out);
    }
    // init does not overwrite it either.
    let err = fails(fx.cmd().arg("init"));
    assert_has(&err, &["already exists"]);
    assert_eq!(tree(&fx.store), files);
}

#[test]
fn init_twice_is_refused_and_keeps_the_config() {
    let fx = Fx::new();
    let db = small_db(&fx, "app.db", 93);
    fx.backup(&db, &[]);
    let before = fx.state();
    let config = std::fs::read(fx.store.join("config")).unwrap();
    for args in [vec!["init"], vec!["init", "--chunk-pages", "4"]] {
        let err = fails(fx.cmd().args(&args));
        assert_has(
            &err,
            &[
                &fx.store.display().to_string(),
                "a pagesnap store already exists",
            ],
        );
        assert_eq!(std::fs::read(fx.store.join("config")).unwrap(), config);
        fx.assert_unchanged(&before);
    }
}

#[test]
fn invalid_init_parameters_create_nothing() {
    let fx = Fx::uninit();
    for (args, why) in [
        (
            vec!["init", "--chunk-pages", "3"],
            "chunk_pages 3 is not a power of two",
        ),
        (vec!["init", "--chunk-pages", "512"], "chunk_pages 512"),
        (vec!["init", "--compression-level", "40"], "zstd level 40"),
        (vec!["init", "--pack-size", "0"], "pack target size 0"),
    ] {
        let err = fails_usage(fx.cmd().args(&args));
        assert_has(&err, &["invalid store parameters", why]);
        // Only the parameter at fault is mentioned.
        if args[1] != "--chunk-pages" {
            assert!(!err.contains("chunk pages"), "misleading hint: {err}");
        }
        assert!(!fx.store.exists(), "{args:?} created the store");
    }
}

#[test]
fn read_only_store_refuses_backups_but_still_restores() {
    let fx = Fx::new();
    let db = fx.path("app.db");
    let conn = create_db(&db, Journal::Rollback, 1000, 94);
    let first = fx.backup(&db, &[]);
    let reference = reference_copy(&db, &fx.path("ref.db"));
    mutate(&conn, 1);
    drop(conn);
    let before = fx.state();

    let as_root = euid() == 0;
    let work = fx.path("work");
    std::fs::create_dir(&work).unwrap();
    let copy = work.join("app.db");
    std::fs::copy(&db, &copy).unwrap();
    if as_root {
        // nobody must reach the files: the temp dir is root's 0700.
        std::fs::set_permissions(fx.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        chown_tree(&fx.store, NOBODY);
        chown_tree(&work, NOBODY);
    }
    // Owner may read and list, nobody may write.
    chmod_dirs(&fx.store, 0o500);

    // Reads work for this user...
    let listed = ok(unprivileged(&fx.store, as_root).args(["--json", "snapshots"]));
    let listed: serde_json::Value = serde_json::from_slice(&listed).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    // ...writes do not.
    let err = fails(unprivileged(&fx.store, as_root).arg("backup").arg(&copy));
    assert_has(
        &err,
        &[&fx.store.display().to_string(), "Permission denied"],
    );
    // Restoring from a read-only store works.
    let out = work.join("restored.db");
    ok(unprivileged(&fx.store, as_root)
        .args(["restore", first["id"].as_str().unwrap(), "-o"])
        .arg(&out));
    assert_restored(&out, &first["image_hash"], &reference);

    chmod_dirs(&fx.store, 0o700);
    fx.assert_unchanged(&before);
}

#[test]
fn store_paths_with_parent_components_or_newlines_are_refused() {
    let fx = Fx::new();
    let db = small_db(&fx, "app.db", 91);
    // The same store reached through `..`, and paths with a newline.
    let dotted = fx.path("sub").join("..").join("store");
    std::fs::create_dir(fx.path("sub")).unwrap();
    let newline = fx.path("store\nx");
    for (store, why) in [(&dotted, "`..`"), (&newline, "newline")] {
        for args in [&["snapshots"][..], &["verify"], &["init"]] {
            let err = fails_usage(ps(store).args(args));
            assert_has(&err, &["invalid store path", why]);
        }
        let err = fails_usage(ps(store).arg("backup").arg(&db));
        assert_has(&err, &["invalid store path"]);
        // The environment variable is checked the same way.
        let err = fails_usage(bin().env("PAGESNAP_STORE", store).arg("snapshots"));
        assert_has(&err, &["invalid store path", why]);
    }
    assert!(!newline.exists());
    assert!(fx.snapshots().is_empty(), "nothing was backed up");
}

#[test]
fn snapshot_selectors_with_paths_or_control_characters_are_refused() {
    let fx = Fx::new();
    let db = small_db(&fx, "app.db", 92);
    fx.backup(&db, &[]);
    let out = fx.path("out.db");
    for sel in ["../snapshots", "..", "ab\ncd", "a/b"] {
        let err = fails_usage(fx.cmd().args(["restore", sel, "-o"]).arg(&out));
        assert_has(
            &err,
            &["invalid snapshot id", "not a hexadecimal snapshot id"],
        );
        assert_no_output(&out);
        let err = fails_usage(fx.cmd().args(["verify", sel]));
        assert_has(&err, &["invalid snapshot id"]);
    }
}

//! `pagesnap cache`: listing this machine's cache folders, and `--cleanup`
//! removing those of stores that are gone while keeping those of live stores.

use crate::util::*;
use serde_json::Value;
use std::path::Path;

/// The binary with its cache in `cache` (never the user's).
fn with_cache(cache: &Path) -> assert_cmd::Command {
    let mut c = bin();
    c.env("PAGESNAP_CACHE_DIR", cache);
    c
}

fn folders(v: &Value) -> &Vec<Value> {
    v["folders"].as_array().expect("folders is an array")
}

#[test]
fn cleanup_removes_the_cache_of_a_deleted_store_and_keeps_a_live_ones() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (gone, live) = (dir.path().join("gone"), dir.path().join("live"));
    let db = dir.path().join("app.db");
    drop(create_db(&db, Journal::Rollback, 200, 1));
    for store in [&gone, &live] {
        ok(with_cache(&cache).arg("--store").arg(store).arg("init"));
        ok(with_cache(&cache)
            .arg("--store")
            .arg(store)
            .arg("backup")
            .arg(&db));
    }

    // A backup leaves a folder per store, recording the store's location.
    let v = ok_json(with_cache(&cache).args(["cache", "--json"]));
    assert_keys(&v, &["cache_dir", "folders", "total_bytes"]);
    let list = folders(&v);
    assert_eq!(list.len(), 2, "{v}");
    for f in list {
        assert_keys(
            f,
            &[
                "path",
                "kind",
                "store",
                "store_state",
                "bytes",
                "last_used",
                "removable",
            ],
        );
        assert_eq!(f["kind"], "store");
        assert_eq!(f["store_state"], "present");
        assert!(f["bytes"].as_u64().unwrap() > 0);
        assert!(f["last_used"].is_string());
        assert!(f["removable"].is_null());
    }
    let path_of = |store: &Path| -> String {
        list.iter()
            .find(|f| f["store"] == store.display().to_string())
            .unwrap_or_else(|| panic!("no folder for {}: {v}", store.display()))["path"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (gone_cache, live_cache) = (path_of(&gone), path_of(&live));
    assert!(Path::new(&gone_cache).is_dir() && Path::new(&live_cache).is_dir());
    let text = String::from_utf8(ok(with_cache(&cache).arg("cache"))).unwrap();
    assert_has(
        &text,
        &[&gone.display().to_string(), "2 folders", "last used"],
    );

    std::fs::remove_dir_all(&gone).unwrap();
    // A dry run names the folder and removes nothing.
    let v = ok_json(with_cache(&cache).args(["cache", "--cleanup", "--dry-run", "--json"]));
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["removed"][0]["path"], gone_cache.as_str(), "{v}");
    assert_eq!(v["removed"][0]["reason"], "store_missing");
    assert!(Path::new(&gone_cache).is_dir());

    let out = String::from_utf8(ok(with_cache(&cache).args(["cache", "--cleanup"]))).unwrap();
    assert_has(&out, &["removed", &gone_cache, "store is gone", "kept 1"]);
    assert!(
        !Path::new(&gone_cache).exists(),
        "the dead store's cache is left"
    );
    assert!(
        Path::new(&live_cache).is_dir(),
        "the live store's cache was removed"
    );

    // The live store still backs up (and its cache is still listed).
    ok(with_cache(&cache)
        .arg("--store")
        .arg(&live)
        .arg("backup")
        .arg(&db));
    let v = ok_json(with_cache(&cache).args(["cache", "--json"]));
    assert_eq!(folders(&v).len(), 1, "{v}");
    assert_eq!(folders(&v)[0]["path"], live_cache.as_str());
}

#[test]
fn cleanup_removes_the_cache_of_a_store_replaced_by_another() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let store = dir.path().join("store");
    let db = dir.path().join("app.db");
    drop(create_db(&db, Journal::Rollback, 100, 2));
    let backup = || {
        ok(with_cache(&cache).arg("--store").arg(&store).arg("init"));
        ok(with_cache(&cache)
            .arg("--store")
            .arg(&store)
            .arg("backup")
            .arg(&db));
    };
    backup();
    std::fs::remove_dir_all(&store).unwrap();
    // Same directory, a new store (a new store id).
    backup();
    let v = ok_json(with_cache(&cache).args(["cache", "--cleanup", "--json"]));
    assert_eq!(v["removed"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["removed"][0]["reason"], "store_replaced");
    assert_eq!(v["kept"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["kept"][0]["store_state"], "present");
}

#[test]
fn an_empty_or_missing_cache_lists_nothing_and_other_files_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let v = ok_json(with_cache(&cache).args(["cache", "--json"]));
    assert_eq!(folders(&v).len(), 0);
    assert_eq!(v["total_bytes"], 0);
    std::fs::create_dir_all(cache.join("not-a-cache-folder")).unwrap();
    let v = ok_json(with_cache(&cache).args(["cache", "--cleanup", "--json"]));
    assert_eq!(v["removed"].as_array().unwrap().len(), 0, "{v}");
    assert!(cache.join("not-a-cache-folder").is_dir());
    // --dry-run belongs to --cleanup.
    fails(with_cache(&cache).args(["cache", "--dry-run"]));
}

/// A store given by a relative path is recorded by its absolute one, so that a
/// cleanup run from another directory still finds it.
#[test]
fn a_relative_store_path_is_recorded_absolute() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let db = dir.path().join("app.db");
    drop(create_db(&db, Journal::Rollback, 100, 3));
    for args in [
        &["--store", "rel", "init"][..],
        &["--store", "rel", "backup", "app.db"],
    ] {
        ok(with_cache(&cache).current_dir(dir.path()).args(args));
    }
    let v = ok_json(with_cache(&cache).args(["cache", "--cleanup", "--json"]));
    assert_eq!(v["removed"].as_array().unwrap().len(), 0, "{v}");
    let kept = &v["kept"][0];
    assert_eq!(kept["store"], dir.path().join("rel").display().to_string());
    assert_eq!(kept["store_state"], "present");
}

/// Folders that do not say whose they are (made by an older pagesnap) are
/// removed once unused for 30 days, and kept before.
#[test]
fn unrecorded_folders_are_removed_after_30_days_unused() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let make = |hex: String, age_days: u64| {
        let folder = cache.join(hex);
        std::fs::create_dir_all(folder.join("heads")).unwrap();
        std::fs::write(folder.join("heads/x"), b"hint").unwrap();
        let t = std::time::SystemTime::now() - std::time::Duration::from_secs(age_days * 86_400);
        for p in [folder.join("heads/x"), folder.join("heads"), folder.clone()] {
            std::fs::File::open(&p).unwrap().set_modified(t).unwrap();
        }
        folder
    };
    let old = make("a".repeat(64), 40);
    let recent = make("b".repeat(64), 3);
    let remote_old = make(format!("stores/{}", "c".repeat(32)), 31);
    let v = ok_json(with_cache(&cache).args(["cache", "--json"]));
    assert_eq!(folders(&v).len(), 3, "{v}");
    // Oldest use first.
    assert_eq!(folders(&v)[0]["path"], old.display().to_string());
    assert_eq!(folders(&v)[0]["store_state"], "unrecorded");
    assert_eq!(folders(&v)[0]["removable"], "unused");
    let v = ok_json(with_cache(&cache).args(["cache", "--cleanup", "--json"]));
    assert_eq!(v["removed"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["freed_bytes"], 8);
    assert!(!old.exists() && !remote_old.exists());
    assert!(recent.is_dir());
}

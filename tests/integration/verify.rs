//! `verify` and `repair`: every kind of damage is found, named with the snapshots
//! it affects, makes restore fail loudly, and can be repaired without losing more.

use crate::util::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Exit status of `verify` and `repair` when they find damage.
const DAMAGE: i32 = 3;

/// `--json verify ARGS`: its exit status and report.
fn verify(fx: &Fx, args: &[&str]) -> (i32, Value) {
    let o = fx
        .cmd()
        .args(["--json", "verify"])
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "verify printed no JSON ({e}): {}\n{stderr}",
            String::from_utf8_lossy(&o.stdout)
        )
    });
    let code = o.status.code().expect("exit code");
    assert_eq!(v["healthy"] == Value::Bool(true), code == 0, "{v}");
    (code, v)
}

#[track_caller]
fn assert_healthy(fx: &Fx, args: &[&str]) -> Value {
    let (code, v) = verify(fx, args);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["problems"], Value::Array(vec![]), "{v}");
    v
}

/// The problems of a damaged report: (object, problem, affected snapshot ids).
fn problems(v: &Value) -> Vec<(String, String, Vec<String>)> {
    v["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| {
            (
                p["object"].as_str().unwrap().to_string(),
                p["problem"].as_str().unwrap().to_string(),
                p["snapshots"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect()
}

struct Snap {
    id: String,
    hash: Value,
    reference: String,
}

/// A store with three snapshots of a changing database (several packs per
/// snapshot: a small pack size) and a second database.
fn store_with_history() -> (Fx, Vec<Snap>) {
    let fx = Fx::uninit();
    ok(fx
        .cmd()
        .args(["init", "--pack-size", "1"])
        .env_remove("PAGESNAP_STORE"));
    let db = fx.path("app.db");
    let conn = create_db(&db, Journal::Wal, 1200, 7);
    let mut snaps = Vec::new();
    for i in 0..3u32 {
        if i > 0 {
            mutate(&conn, i as u64);
        }
        let b = fx.backup(&db, &["--time", &t(10 * i)]);
        let reference = reference_copy(&db, &fx.path(&format!("ref{i}.db")));
        snaps.push(Snap {
            id: b["id"].as_str().unwrap().to_string(),
            hash: b["image_hash"].clone(),
            reference,
        });
    }
    drop(conn);
    let other = small_db(&fx, "other.db", 3);
    fx.backup(&other, &["--time", &t(5)]);
    (fx, snaps)
}

fn flip(path: &Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    b[at] ^= 0x20;
    std::fs::write(path, b).unwrap();
}

fn index_files(store: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(store.join("index"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    v.sort();
    v
}

#[track_caller]
fn assert_restores(fx: &Fx, s: &Snap) {
    let out = fx.path(&format!("check-{}.db", &s.id[..8]));
    let _ = std::fs::remove_file(&out);
    fx.restore(&[&s.id], &out);
    assert_restored(&out, &s.hash, &s.reference);
}

/// `verify` names `object` as affecting only the newest app snapshot, whose
/// restore fails naming it, while the two older ones restore.
#[track_caller]
fn only_newest_breaks(fx: &Fx, snaps: &[Snap], object: &str) {
    let (code, v) = verify(fx, &[]);
    assert_eq!(code, DAMAGE, "{v}");
    let ps = problems(&v);
    let p = ps.iter().find(|p| p.0 == object).expect("object named");
    assert_eq!(p.2, vec![snaps[2].id.clone()], "{v}");
    let out = fx.path("o.db");
    let err = fails(fx.cmd().args(["restore", &snaps[2].id, "-o"]).arg(&out));
    assert_has(&err, &[object, "damaged"]);
    assert_no_output(&out);
    assert_restores(fx, &snaps[0]);
    assert_restores(fx, &snaps[1]);
}

#[test]
fn a_healthy_store_passes_every_level_of_check() {
    let (fx, snaps) = store_with_history();
    let v = assert_healthy(&fx, &[]);
    assert_eq!(v["snapshots_checked"], 4);
    assert_eq!(v["packs_read"], 0, "no data read without --read-data");
    let v = assert_healthy(&fx, &["--read-data"]);
    assert_eq!(v["images_checked"], 4, "every image hash checked: {v}");
    assert_eq!(v["packs_read"], v["packs"], "{v}");
    assert!(v["chunks_read"].as_u64().unwrap() >= v["chunks_referenced"].as_u64().unwrap());
    let v = assert_healthy(&fx, &["--restore-check"]);
    assert_eq!(v["restores_checked"], 2, "the newest of each database: {v}");
    let v = assert_healthy(&fx, &[&snaps[0].id[..8], "--restore-check"]);
    assert_eq!(v["snapshots_checked"], 1);
    assert_eq!(v["restores_checked"], 1);
    let v = assert_healthy(&fx, &["--name", "other"]);
    assert_eq!(v["snapshots_checked"], 1);

    // Two halves read every pack once; together they check every image.
    let (_, a) = verify(&fx, &["--read-data-subset", "1/2"]);
    let (_, b) = verify(&fx, &["--read-data-subset", "2/2"]);
    let total = a["packs_read"].as_u64().unwrap() + b["packs_read"].as_u64().unwrap();
    assert_eq!(Value::from(total), a["packs"], "{a} {b}");
    let v = assert_healthy(&fx, &["--read-data-subset", "100%"]);
    assert_eq!(v["packs_read"], v["packs"]);

    // Text output: a summary and the verdict; verify writes nothing to the store.
    let before = tree(&fx.store);
    let text = String::from_utf8(ok(fx.cmd().args(["verify", "--read-data"]))).unwrap();
    assert_has(&text, &["checked 4 of 4 snapshot(s)", "no problems found"]);
    assert_eq!(tree(&fx.store), before);
}

#[test]
fn bad_arguments_are_refused_before_reading_anything() {
    let (fx, _) = store_with_history();
    for bad in ["0%", "150%", "abc", "3/2", "0/4", "1/0"] {
        let err = fails_usage(fx.cmd().args(["verify", "--read-data-subset", bad]));
        assert_has(&err, &["data subset", bad]);
    }
    let err = fails(fx.cmd().args(["verify", "deadbeef"]));
    assert_has(&err, &["deadbeef"]);
    let missing = fx.path("nowhere");
    let err = fails(ps(&missing).arg("verify"));
    assert_has(&err, &[&missing.display().to_string(), "does not exist"]);
}

#[test]
fn a_bit_flip_in_a_pack_is_found_by_read_data_and_fails_restore() {
    let (fx, snaps) = store_with_history();
    // A chunk of the first snapshot's image, in the middle of its pack.
    let image = std::fs::read(fx.path("ref0.db")).unwrap();
    let used = page_chunk_ids(&image, 4096);
    let (pack, e) = pack_files(&fx.store)
        .into_iter()
        .find_map(|p| {
            let entries = pack_entries(&std::fs::read(&p).unwrap());
            let e = entries
                .into_iter()
                .find(|e| used.contains(&e.id) && e.stored_len >= 16)?;
            Some((p, e))
        })
        .expect("a pack holding a chunk of snapshot 0");
    flip(&pack, e.offset + e.stored_len / 2);

    let (code, v) = verify(&fx, &["--read-data"]);
    assert_eq!(code, DAMAGE, "{v}");
    let ps = problems(&v);
    let chunk = ps
        .iter()
        .find(|(o, _, _)| o.contains(&e.id))
        .unwrap_or_else(|| panic!("chunk {} not named: {v}", e.id));
    assert!(chunk.0.starts_with("packs/"), "{chunk:?}");
    assert!(chunk.2.contains(&snaps[0].id), "{chunk:?}");
    let broken: Vec<&str> = v["broken_snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(broken.contains(&snaps[0].id.as_str()), "{v}");
    for s in &snaps {
        if !chunk.2.contains(&s.id) {
            assert_restores(&fx, s);
        }
    }

    let out = fx.path("out.db");
    let err = fails(fx.cmd().args(["restore", &snaps[0].id, "-o"]).arg(&out));
    assert_has(&err, &[&e.id, "damaged"]);
    assert_no_output(&out);

    // Text output names the object and the snapshots.
    let o = fx.cmd().args(["verify", "--read-data"]).output().unwrap();
    assert_eq!(o.status.code(), Some(DAMAGE));
    let text = String::from_utf8_lossy(&o.stdout);
    assert_has(
        &text,
        &["damaged:", &e.id, &snaps[0].id[..8], "cannot be restored"],
    );
}

#[test]
fn a_bit_flip_in_a_manifest_is_found_and_repair_forgets_it_on_request() {
    let (fx, snaps) = store_with_history();
    let manifest = fx.store.join("snapshots").join(&snaps[1].id);
    let len = std::fs::metadata(&manifest).unwrap().len() as usize;
    flip(&manifest, len / 2);

    let (code, v) = verify(&fx, &[]);
    assert_eq!(code, DAMAGE);
    let ps = problems(&v);
    assert_eq!(ps.len(), 1, "{v}");
    assert_eq!(ps[0].0, format!("snapshots/{}", snaps[1].id));
    assert_eq!(ps[0].2, vec![snaps[1].id.clone()]);
    let err = fails(
        fx.cmd()
            .args(["restore", &snaps[1].id, "-o"])
            .arg(fx.path("o.db")),
    );
    assert_has(&err, &[&snaps[1].id, "damaged"]);

    // repair snapshots lists it, changes nothing, and exits 3; --forget-broken removes it.
    let before = tree(&fx.store);
    let o = fx
        .cmd()
        .args(["--json", "repair", "snapshots"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(DAMAGE));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["broken"][0]["id"], snaps[1].id.as_str(), "{r}");
    assert_eq!(
        tree(&fx.store),
        before,
        "repair without --forget-broken changed the store"
    );
    ok(fx.cmd().args(["repair", "snapshots", "--forget-broken"]));
    assert!(!manifest.exists());
    assert!(fx
        .store
        .join("damaged/snapshots")
        .join(&snaps[1].id)
        .exists());
    assert_healthy(&fx, &["--read-data"]);
    for i in [0, 2] {
        assert_restores(&fx, &snaps[i]);
    }
}

#[test]
fn a_bit_flip_in_the_config_is_damage() {
    let (fx, _) = store_with_history();
    let config = fx.store.join("config");
    flip(&config, 20);
    let (code, v) = verify(&fx, &[]);
    assert_eq!(code, DAMAGE, "{v}");
    assert_eq!(problems(&v)[0].0, "config");
    let err = fails(
        fx.cmd()
            .args(["restore", "latest", "--name", "app", "-o"])
            .arg(fx.path("o.db")),
    );
    assert_has(&err, &["config", "damaged"]);
    assert_no_output(&fx.path("o.db"));
}

#[test]
fn a_damaged_index_object_is_found_rebuilt_and_its_snapshots_listed() {
    let (fx, snaps) = store_with_history();
    // The last backup's index object: only the newest snapshot names chunks through it.
    let newest_index = index_files(&fx.store)
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .unwrap();
    let key = format!(
        "index/{}",
        newest_index.file_name().unwrap().to_string_lossy()
    );
    // The `other` database was backed up last; damage the one before it (app, snapshot 2).
    let app_index = index_files(&fx.store)
        .into_iter()
        .filter(|p| *p != newest_index)
        .max_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .unwrap();
    let app_key = format!("index/{}", app_index.file_name().unwrap().to_string_lossy());
    let len = std::fs::metadata(&app_index).unwrap().len() as usize;
    flip(&app_index, len / 2);
    assert_ne!(key, app_key);

    // Only the newest snapshot breaks; the rest of the store keeps working.
    only_newest_breaks(&fx, &snaps, &app_key);

    // repair index: dry run changes nothing; the real one re-indexes the chunks
    // from the packs and copies the damaged bytes aside. That backup wrote one
    // pack, whose trailer rebuilds its index object byte for byte: the object
    // is whole again under its own name (it used to be deleted as the damaged
    // one, leaving snapshot 2 broken).
    let sound_len = len;
    let before = tree(&fx.store);
    let r = ok_json(fx.cmd().args(["--json", "repair", "index", "--dry-run"]));
    assert_eq!(r["quarantined"][0], app_key.as_str());
    assert!(r["chunks_reindexed"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(tree(&fx.store), before);
    let r = ok_json(fx.cmd().args(["--json", "repair", "index"]));
    assert_eq!(r["quarantined"][0], app_key.as_str());
    assert_eq!(
        format!("index/{}", r["new_index"].as_str().unwrap()),
        app_key,
        "{r}"
    );
    assert!(fx.store.join("damaged").join(&app_key).exists());
    assert_eq!(
        std::fs::metadata(&app_index).unwrap().len() as usize,
        sound_len
    );

    // Nothing is broken any more: `repair snapshots --forget-broken` forgets
    // nothing, and every snapshot restores.
    let r = ok_json(
        fx.cmd()
            .args(["--json", "repair", "snapshots", "--forget-broken"]),
    );
    assert_eq!(r["broken"].as_array().unwrap().len(), 0, "{r}");
    assert_healthy(&fx, &["--read-data"]);
    ok(fx.cmd().arg("prune"));
    assert_healthy(&fx, &["--read-data"]);
    for s in &snaps {
        assert_restores(&fx, s);
    }
    // A new backup of the database works and restores.
    let db = fx.path("app.db");
    let b = fx.backup(&db, &[]);
    let reference = reference_copy(&db, &fx.path("ref-new.db"));
    assert_restores(
        &fx,
        &Snap {
            id: b["id"].as_str().unwrap().into(),
            hash: b["image_hash"].clone(),
            reference,
        },
    );
}

#[test]
fn missing_and_truncated_packs_are_found_without_reading_data() {
    let (fx, snaps) = store_with_history();
    let packs = pack_files(&fx.store);
    assert!(packs.len() >= 3, "{packs:?}");
    let gone = &packs[0];
    let short = &packs[1];
    std::fs::remove_file(gone).unwrap();
    let b = std::fs::read(short).unwrap();
    std::fs::write(short, &b[..b.len() - 100]).unwrap();
    let key = |p: &Path| {
        p.strip_prefix(&fx.store)
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };

    let (code, v) = verify(&fx, &[]);
    assert_eq!(code, DAMAGE, "{v}");
    let ps = problems(&v);
    let missing = ps.iter().find(|p| p.0 == key(gone)).expect("missing pack");
    assert_has(&missing.1, &["missing"]);
    let truncated = ps.iter().find(|p| p.0 == key(short)).expect("short pack");
    assert_has(&truncated.1, &["bytes"]);
    assert!(!missing.2.is_empty() || !truncated.2.is_empty(), "{v}");
    // Every broken snapshot fails to restore; every other one restores.
    let broken: Vec<String> = v["broken_snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    assert!(!broken.is_empty());
    for s in &snaps {
        if broken.contains(&s.id) {
            let out = fx.path("o.db");
            let err = fails(fx.cmd().args(["restore", &s.id, "-o"]).arg(&out));
            assert_has(&err, &["missing from the store"]);
            assert_no_output(&out);
        } else {
            assert_restores(&fx, s);
        }
    }
}

#[test]
fn a_map_naming_a_missing_index_object_is_found() {
    let (fx, snaps) = store_with_history();
    // The first backup's index object names the chunks of every later snapshot.
    let oldest = index_files(&fx.store)
        .into_iter()
        .min_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .unwrap();
    std::fs::remove_file(&oldest).unwrap();
    let (code, v) = verify(&fx, &[]);
    assert_eq!(code, DAMAGE, "{v}");
    let broken = v["broken_snapshots"].as_array().unwrap();
    for s in &snaps {
        assert!(broken.contains(&Value::String(s.id.clone())), "{v}");
    }
    let name = oldest.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        problems(&v).iter().any(|p| p.1.contains(&name)),
        "the missing index object is named: {v}"
    );
}

#[test]
fn a_bit_flip_in_a_page_map_is_found_and_only_its_snapshots_break() {
    let (fx, snaps) = store_with_history();
    // Snapshot 2's own map (a delta no other snapshot builds on).
    let snap: Value = fx
        .snapshots()
        .into_iter()
        .find(|s| s["id"] == snaps[2].id.as_str())
        .unwrap();
    assert_eq!(snap["id"], snaps[2].id.as_str());
    let maps: Vec<PathBuf> = std::fs::read_dir(fx.store.join("maps"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    // The newest map of the app database is the one its last backup wrote; the
    // `other` database's map came after it.
    let mut by_time = maps.clone();
    by_time.sort_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap());
    let map = &by_time[by_time.len() - 2];
    let len = std::fs::metadata(map).unwrap().len() as usize;
    flip(map, len / 2);
    let key = format!("maps/{}", map.file_name().unwrap().to_string_lossy());

    only_newest_breaks(&fx, &snaps, &key);
    // The next backup of the database cannot build on the damaged map: it warns
    // and records a full one, and restores.
    let db = fx.path("app.db");
    let o = fx
        .cmd()
        .args(["--json", "backup"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    assert_has(
        &String::from_utf8_lossy(&o.stderr),
        &["warning", &snaps[2].id[..8]],
    );
    let b: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(b["new_base"], true, "{b}");
    let reference = reference_copy(&db, &fx.path("ref-new.db"));
    assert_restores(
        &fx,
        &Snap {
            id: b["id"].as_str().unwrap().into(),
            hash: b["image_hash"].clone(),
            reference,
        },
    );
}

//! A damaged store at restore time: restores fail naming what is wrong, leave no
//! output or temporary file, and the rest of the store stays usable.

use crate::util::*;
use serde_json::Value;
use std::path::Path;

/// A store with one snapshot of a ~1 MB database; returns it, the backup report
/// and the reference copy's bytes.
fn one_snapshot() -> (Fx, Value, Vec<u8>) {
    let fx = Fx::new();
    let db = fx.path("app.db");
    drop(create_db(&db, Journal::Rollback, 1500, 100));
    let b = fx.backup(&db, &[]);
    let reference = fx.path("ref.db");
    let h = reference_copy(&db, &reference);
    assert_eq!(b["image_hash"], Value::String(h));
    (fx, b, std::fs::read(&reference).unwrap())
}

fn the_pack(store: &Path) -> std::path::PathBuf {
    let packs = pack_files(store);
    assert_eq!(packs.len(), 1, "{packs:?}");
    packs.into_iter().next().unwrap()
}

/// `ab/abcd…` for `store/packs/ab/abcd…`.
fn pack_key(store: &Path, pack: &Path) -> String {
    pack.strip_prefix(store.join("packs"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn damaged_pack_names_the_chunk_and_the_snapshot() {
    let (fx, b, image) = one_snapshot();
    let used = page_chunk_ids(&image, 4096);
    let pack = the_pack(&fx.store);
    let mut bytes = std::fs::read(&pack).unwrap();
    let entries = pack_entries(&bytes);
    // A chunk of this snapshot, in the middle of the pack.
    let e = entries
        .iter()
        .filter(|e| used.contains(&e.id) && e.stored_len >= 16)
        .nth(entries.len() / 2)
        .expect("a chunk to damage");
    bytes[e.offset + e.stored_len / 2] ^= 0x55;
    std::fs::write(&pack, &bytes).unwrap();
    let before = fx.state();

    let short = b["short_id"].as_str().unwrap();
    let out = fx.path("out.db");
    let err = fails(fx.cmd().args(["restore", "latest", "-o"]).arg(&out));
    assert_has(
        &err,
        &[
            &format!("snapshot {short}"),
            &format!("chunk {}", e.id),
            &format!("packs/{}", pack_key(&fx.store, &pack)),
            "is damaged",
        ],
    );
    assert_no_output(&out);
    fx.assert_unchanged(&before);

    // On stdout the image cannot be taken back, but the exit status says it failed.
    let o = fx
        .cmd()
        .args(["restore", "latest", "-o", "-"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert_has(&String::from_utf8_lossy(&o.stderr), &[&e.id]);
    assert_ne!(o.stdout, image);
}

#[test]
fn missing_pack_names_a_missing_chunk() {
    let (fx, b, image) = one_snapshot();
    let used = page_chunk_ids(&image, 4096);
    let pack = the_pack(&fx.store);
    let entries = pack_entries(&std::fs::read(&pack).unwrap());
    std::fs::remove_file(&pack).unwrap();
    let before = fx.state();

    let out = fx.path("out.db");
    let err = fails(fx.cmd().args(["restore", "-o"]).arg(&out));
    let short = b["short_id"].as_str().unwrap();
    assert_has(
        &err,
        &[
            &format!("snapshot {short}"),
            &format!("packs/{}", pack_key(&fx.store, &pack)),
            "missing from the store",
        ],
    );
    let named: Vec<_> = entries
        .iter()
        .filter(|e| err.contains(&format!("chunk {}", e.id)))
        .collect();
    assert_eq!(named.len(), 1, "exactly one chunk named in: {err}");
    assert!(used.contains(&named[0].id));
    assert_no_output(&out);
    fx.assert_unchanged(&before);
}

#[test]
fn damaged_manifest_fails_its_restore_and_is_skipped_in_listings() {
    let fx = Fx::new();
    let db = fx.path("app.db");
    let conn = create_db(&db, Journal::Wal, 1000, 101);
    let mut snaps = Vec::new();
    for i in 0..3u32 {
        if i > 0 {
            mutate(&conn, i as u64);
        }
        let b = fx.backup(&db, &["--time", &t(10 * i)]);
        let r = reference_copy(&db, &fx.path(&format!("ref{i}.db")));
        snaps.push((b, r));
    }
    drop(conn);
    let bad = snaps[1].0["id"].as_str().unwrap().to_string();
    let manifest = fx.store.join("snapshots").join(&bad);
    let mut bytes = std::fs::read(&manifest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&manifest, &bytes).unwrap();
    let files = tree(&fx.store);

    // Restoring it, by full id or by prefix, names the snapshot and the damage.
    let out = fx.path("out.db");
    for sel in [bad.as_str(), &bad[..8]] {
        let err = fails(fx.cmd().args(["restore", sel, "-o"]).arg(&out));
        assert_has(&err, &[&format!("snapshots/{bad}"), "damaged"]);
        assert_no_output(&out);
    }

    // The listing shows the other two and warns about this one.
    let o = fx.cmd().args(["--json", "snapshots"]).output().unwrap();
    assert!(o.status.success(), "{o:?}");
    let list: Value = serde_json::from_slice(&o.stdout).unwrap();
    let ids: Vec<_> = list.as_array().unwrap().iter().map(|s| &s["id"]).collect();
    assert_eq!(ids, vec![&snaps[0].0["id"], &snaps[2].0["id"]]);
    assert_has(
        &String::from_utf8_lossy(&o.stderr),
        &["warning", "unreadable snapshot", &bad],
    );
    let text = fx.cmd().arg("snapshots").output().unwrap();
    assert!(text.status.success());
    assert_has(&String::from_utf8_lossy(&text.stdout), &["2 snapshot(s)"]);
    assert_has(&String::from_utf8_lossy(&text.stderr), &[&bad]);

    // The others still restore byte for byte.
    for i in [0, 2] {
        let out = fx.path(&format!("ok{i}.db"));
        fx.restore(&[snaps[i].0["id"].as_str().unwrap()], &out);
        assert_restored(&out, &snaps[i].0["image_hash"], &snaps[i].1);
    }
    assert_eq!(tree(&fx.store), files, "restores wrote into the store");
    assert_no_store_temps(&fx.store);
}

/// `restore latest` when the newest manifest is damaged restores the one before
/// it with exit status 0 and not a word on stderr: the user asked for the newest
/// state and silently gets an older one. Either refusing or warning (as
/// `snapshots` does) would be acceptable; today it does neither.
#[test]
fn latest_with_a_damaged_newest_manifest_is_not_silent() {
    let fx = Fx::new();
    let db = fx.path("app.db");
    let conn = create_db(&db, Journal::Rollback, 300, 102);
    let old = fx.backup(&db, &["--time", &t(0)]);
    mutate(&conn, 1);
    let new = fx.backup(&db, &["--time", &t(10)]);
    let bad = new["id"].as_str().unwrap();
    let manifest = fx.store.join("snapshots").join(bad);
    let mut bytes = std::fs::read(&manifest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&manifest, &bytes).unwrap();

    let out = fx.path("out.db");
    let o = fx
        .cmd()
        .args(["restore", "latest", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    if o.status.success() {
        assert_eq!(Value::String(hash_file(&out)), old["image_hash"]);
        assert_has(&stderr, &["warning", bad]);
    } else {
        assert_has(&stderr, &[bad]);
        assert_no_output(&out);
    }
}

#[test]
fn backup_after_a_lost_pack_stores_its_chunks_again() {
    let (fx, first, image) = one_snapshot();
    let pack = the_pack(&fx.store);
    std::fs::remove_file(&pack).unwrap();

    // The index still lists the lost chunks; the backup must not trust it.
    let db = fx.path("app.db");
    let second = fx.backup(&db, &[]);
    assert_eq!(second["image_hash"], first["image_hash"]);
    assert_eq!(
        second["new_chunks"], first["new_chunks"],
        "every chunk stored again: {second}"
    );
    let out = fx.path("out.db");
    fx.restore(&[second["id"].as_str().unwrap()], &out);
    assert_eq!(std::fs::read(&out).unwrap(), image);

    // The first snapshot's maps still name the lost pack's entries: its restore
    // finds the chunks by id in the second backup's pack (the whole index, not the
    // short way through the entries its maps name).
    let again = fx.path("again.db");
    fx.restore(&[first["id"].as_str().unwrap()], &again);
    assert_eq!(std::fs::read(&again).unwrap(), image);
}

/// What SQLite's `dbstat` says page `page` of the database file `db` belongs to:
/// (kind, name) as `restore --salvage --json` reports owners.
fn dbstat_owner(db: &Path, page: u64) -> (String, String) {
    let c = rusqlite::Connection::open(db).unwrap();
    let name: String = c
        .query_row(
            "SELECT name FROM dbstat WHERE pageno = ?1",
            [page as i64],
            |r| r.get(0),
        )
        .unwrap();
    let kind: String = c
        .query_row(
            "SELECT type FROM sqlite_schema WHERE name = ?1",
            [&name],
            |r| r.get(0),
        )
        .unwrap();
    (kind, name)
}

/// A chunk of `image` (4 KiB pages, one page per chunk) in `pack`, used by
/// exactly one page of the image, that `dbstat` puts in `table`'s own b-tree:
/// the entry and its page number.
fn chunk_of_table<'a>(
    image: &[u8],
    reference: &Path,
    entries: &'a [PackEntry],
    table: &str,
) -> (&'a PackEntry, u64) {
    let ids: Vec<String> = image.chunks(4096).map(chunk_id).collect();
    entries
        .iter()
        .filter(|e| e.stored_len >= 16)
        .filter_map(|e| {
            let mut at = ids.iter().enumerate().filter(|(_, id)| **id == e.id);
            match (at.next(), at.next()) {
                (Some((i, _)), None) if i > 0 => Some((e, i as u64 + 1)),
                _ => None,
            }
        })
        .find(|(_, page)| dbstat_owner(reference, *page) == ("table".into(), table.into()))
        .expect("a chunk of the table used by one page")
}

/// One flipped byte in a chunk: a plain restore fails and leaves nothing;
/// `restore --salvage` writes the file with zeros for that page only, exits 3,
/// and names the page and the table it belonged to (text and JSON).
#[test]
fn salvage_restores_around_a_damaged_chunk_and_names_its_table() {
    let (fx, _, image) = one_snapshot();
    let pack = the_pack(&fx.store);
    let mut bytes = std::fs::read(&pack).unwrap();
    let entries = pack_entries(&bytes);
    let (e, page) = chunk_of_table(&image, &fx.path("ref.db"), &entries, "items");
    bytes[e.offset + e.stored_len / 2] ^= 0x55;
    std::fs::write(&pack, &bytes).unwrap();
    let before = fx.state();

    // Without --salvage: as before, it fails and leaves no file.
    let plain = fx.path("plain.db");
    let err = fails(fx.cmd().args(["restore", "latest", "-o"]).arg(&plain));
    assert_has(&err, &[&format!("chunk {}", e.id), "is damaged"]);
    assert_no_output(&plain);

    let check = |out: &Path| {
        let got = std::fs::read(out).unwrap();
        assert_eq!(got.len(), image.len());
        for (i, (a, b)) in got.chunks(4096).zip(image.chunks(4096)).enumerate() {
            if i as u64 + 1 == page {
                assert!(a.iter().all(|&x| x == 0), "the lost page is zeros");
            } else {
                assert!(a == b, "page {} differs from the original", i + 1);
            }
        }
        assert_no_restore_temps(out.parent().unwrap());
    };

    let out = fx.path("salvaged.db");
    let o = fx
        .cmd()
        .args(["--json", "restore", "latest", "--salvage", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["salvaged"], true, "{v}");
    assert_eq!(v["image_matches"], false, "{v}");
    let lost = v["lost_chunks"].as_array().unwrap();
    assert_eq!(lost.len(), 1, "{v}");
    assert_eq!(lost[0]["chunk"], Value::String(e.id.clone()));
    assert_eq!(lost[0]["first_page"], page);
    assert_eq!(lost[0]["last_page"], page);
    assert_eq!(
        lost[0]["object"],
        Value::String(format!("packs/{}", pack_key(&fx.store, &pack)))
    );
    let pages = v["lost_pages"].as_array().unwrap();
    assert_eq!(pages.len(), 1, "{v}");
    assert_eq!(pages[0]["page"], page);
    assert_eq!(pages[0]["owner"]["kind"], "table", "{v}");
    assert_eq!(pages[0]["owner"]["name"], "items", "{v}");
    check(&out);

    // The text report says the same, and the file is kept.
    let text_out = fx.path("salvaged-text.db");
    let o = fx
        .cmd()
        .args(["restore", "latest", "--salvage", "-o"])
        .arg(&text_out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_has(
        &stdout,
        &[
            "1 chunk(s) could not be read",
            &format!("page {page}: chunk {}", e.id),
            &format!("page {page}: table items"),
        ],
    );
    check(&text_out);
    fx.assert_unchanged(&before);
}

/// A sound snapshot restores with `--salvage` as without: byte-exact, exit 0.
#[test]
fn salvage_of_a_sound_snapshot_is_an_ordinary_restore() {
    let (fx, b, image) = one_snapshot();
    let out = fx.path("out.db");
    let v = ok_json(
        fx.cmd()
            .args(["--json", "restore", "latest", "--salvage", "-o"])
            .arg(&out),
    );
    assert_eq!(v["salvaged"], false, "{v}");
    assert_eq!(v["lost_pages"], Value::Array(vec![]));
    assert_restored(&out, &b["image_hash"], &hash_bytes(&image));
}

/// One flipped byte in a chunk two snapshots share: both fail to restore.
/// `repair index --read-data` finds it, keeps the pack whole under `damaged/`,
/// copies its sound chunks into a new pack and takes the damaged one out of use
/// (exit 3: it is lost until stored again). The next backup of the database,
/// which still holds that page, stores it again, through this machine's index
/// cache (the short way), which must not answer "stored" from before the
/// repair; then both old snapshots restore byte-exactly and `verify --read-data`
/// finds nothing wrong.
#[test]
fn repair_index_read_data_lets_a_backup_heal_a_damaged_chunk() {
    let fx = Fx::new();
    let cache = fx.path("cache");
    let cmd = || {
        let mut c = fx.cmd();
        c.env("PAGESNAP_CACHE_DIR", &cache);
        c
    };
    let backup = |db: &Path, args: &[&str]| -> Value {
        ok_json(cmd().arg("--json").arg("backup").arg(db).args(args))
    };
    let db = fx.path("app.db");
    let conn = create_db(&db, Journal::Wal, 1500, 103);
    let first = backup(&db, &["--time", &t(0)]);
    let ref1 = fx.path("ref1.db");
    let h1 = reference_copy(&db, &ref1);
    mutate(&conn, 1);
    let second = backup(&db, &["--time", &t(10)]);
    assert_eq!(second["index_cached"], true, "{second}");
    let ref2 = fx.path("ref2.db");
    let h2 = reference_copy(&db, &ref2);
    let (image1, image2) = (std::fs::read(&ref1).unwrap(), std::fs::read(&ref2).unwrap());

    // A chunk of table `items` both images hold, in the first backup's pack.
    let packs = pack_files(&fx.store);
    let pack = packs
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap()
        .clone();
    let mut bytes = std::fs::read(&pack).unwrap();
    let entries = pack_entries(&bytes);
    let in_second = page_chunk_ids(&image2, 4096);
    let shared: Vec<PackEntry> = entries
        .into_iter()
        .filter(|e| in_second.contains(&e.id))
        .collect();
    let (e, page) = chunk_of_table(&image1, &ref1, &shared, "items");
    bytes[e.offset + e.stored_len / 2] ^= 0x55;
    std::fs::write(&pack, &bytes).unwrap();
    let damaged_pack = bytes;
    for (s, name) in [(&first, "f1.db"), (&second, "f2.db")] {
        let out = fx.path(name);
        let err = fails(
            cmd()
                .args(["restore", s["id"].as_str().unwrap(), "-o"])
                .arg(&out),
        );
        assert_has(&err, &[&e.id]);
    }

    // A dry run says what it would do and changes nothing.
    let before = fx.state();
    let o = cmd()
        .args(["--json", "repair", "index", "--read-data", "--dry-run"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        r["damaged_packs"][0]["dropped"][0]["chunk"],
        e.id.as_str(),
        "{r}"
    );
    fx.assert_unchanged(&before);

    let o = cmd()
        .args(["--json", "repair", "index", "--read-data"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    let key = format!("packs/{}", pack_key(&fx.store, &pack));
    let damaged = r["damaged_packs"].as_array().unwrap();
    assert_eq!(damaged.len(), 1, "{r}");
    assert_eq!(damaged[0]["object"], key.as_str());
    assert_eq!(damaged[0]["moved_to"], format!("damaged/{key}").as_str());
    let dropped = damaged[0]["dropped"].as_array().unwrap();
    assert_eq!(dropped.len(), 1, "{r}");
    assert_eq!(dropped[0]["chunk"], e.id.as_str());
    assert_eq!(dropped[0]["copy_kept"], false);
    assert_eq!(r["chunks_lost"], 1);
    assert!(r["new_index"].is_string(), "{r}");
    // The damaged pack is kept whole under damaged/, and out of use.
    assert_eq!(
        std::fs::read(fx.store.join("damaged").join(&key)).unwrap(),
        damaged_pack
    );
    assert!(!pack.exists());
    // Until a backup stores the chunk again, both snapshots lack it.
    let out = fx.path("lacking.db");
    let err = fails(
        cmd()
            .args(["restore", first["id"].as_str().unwrap(), "-o"])
            .arg(&out),
    );
    assert_has(&err, &[&e.id]);
    // ...and a salvage restore loses exactly that page.
    let o = cmd()
        .args([
            "--json",
            "restore",
            first["id"].as_str().unwrap(),
            "--salvage",
            "-o",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["lost_pages"][0]["page"], page, "{v}");
    assert_eq!(v["lost_pages"].as_array().unwrap().len(), 1, "{v}");

    // The database still holds that page: the next backup stores it again.
    let third = backup(&db, &["--time", &t(20)]);
    assert_eq!(third["index_cached"], true, "the short way: {third}");
    // That chunk only: the sound ones are found where the repair copied them.
    assert_eq!(third["new_chunks"], 1, "{third}");

    for (s, h, name) in [(&first, &h1, "r1.db"), (&second, &h2, "r2.db")] {
        let out = fx.path(name);
        fx.restore(&[s["id"].as_str().unwrap()], &out);
        assert_restored(&out, &s["image_hash"], h);
    }
    let o = cmd()
        .args(["--json", "verify", "--read-data"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(o.status.code(), Some(0), "{v}");
    assert_eq!(v["healthy"], true, "{v}");
    // And a second repair finds nothing more to do.
    let r = ok_json(cmd().args(["--json", "repair", "index", "--read-data"]));
    assert_eq!(r["damaged_packs"], Value::Array(vec![]), "{r}");
    drop(conn);
}

/// A backup that wrote one pack has an index object that its pack's trailer
/// rebuilds byte for byte, hence under the same name. `repair index` must keep
/// the rebuilt object (it used to write it over the damaged bytes, then delete
/// it as the damaged object, leaving the snapshot unrestorable).
#[test]
fn repair_index_keeps_an_index_object_rebuilt_under_its_own_name() {
    let (fx, b, image) = one_snapshot();
    let index_dir = fx.store.join("index");
    let files: Vec<_> = std::fs::read_dir(&index_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let path = &files[0];
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let sound = std::fs::read(path).unwrap();
    let mut bytes = sound.clone();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(path, &bytes).unwrap();

    let out = String::from_utf8(ok(fx.cmd().args(["repair", "index"]))).unwrap();
    assert_has(
        &out,
        &[&format!("copied it to damaged/index/{name}"), "whole again"],
    );
    assert!(!out.contains("cannot be restored"), "{out}");
    // The damaged bytes are kept whole; the sound object is back under its name.
    assert_eq!(
        std::fs::read(fx.store.join("damaged/index").join(&name)).unwrap(),
        bytes
    );
    assert_eq!(std::fs::read(path).unwrap(), sound);
    let restored = fx.path("r.db");
    fx.restore(&[b["id"].as_str().unwrap()], &restored);
    assert_eq!(std::fs::read(&restored).unwrap(), image);
    assert_eq!(integrity(&restored), "ok");
    ok(fx.cmd().args(["verify", "--read-data"]));
}

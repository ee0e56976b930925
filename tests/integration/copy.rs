//! `pagesnap copy`: snapshots copied between local stores restore byte-exactly,
//! only missing chunks are stored, an interrupted copy resumes, bad input is
//! refused without touching the destination, damage in the source is not spread.

use crate::util::*;
use serde_json::Value;
use std::path::Path;

/// `--store FROM copy --to TO --json ARGS...`: exit success and the report.
fn copy_json(from: &Fx, to: &Fx, args: &[&str]) -> Value {
    ok_json(
        from.cmd()
            .args(["--json", "copy", "--to"])
            .arg(&to.store)
            .args(args),
    )
}

/// The fields of `snapshots --json` a copy keeps (everything but the ids).
fn metadata(snaps: &[Value]) -> Vec<Value> {
    snaps
        .iter()
        .map(|s| {
            let mut s = s.clone();
            let o = s.as_object_mut().unwrap();
            o.remove("id");
            o.remove("short_id");
            s
        })
        .collect()
}

/// `verify --read-data` on `fx`'s store: healthy (exit 0); returns the report.
#[track_caller]
fn assert_verifies(fx: &Fx) -> Value {
    let v = ok_json(fx.cmd().args(["--json", "verify", "--read-data"]));
    assert_eq!(v["healthy"], true, "{v}");
    v
}

/// Restores every snapshot of `to` and the same snapshot (by time and name) of
/// `from`; both must be byte-identical, equal to the recorded image hash, and pass
/// `PRAGMA integrity_check`.
fn assert_same_images(from: &Fx, to: &Fx) {
    let src = from.snapshots();
    let dst = to.snapshots();
    let out = tempfile::tempdir().unwrap();
    for d in &dst {
        let s = src
            .iter()
            .find(|s| s["time"] == d["time"] && s["name"] == d["name"])
            .unwrap_or_else(|| panic!("no source snapshot for {d}"));
        let id = d["id"].as_str().unwrap();
        let (a, b) = (
            out.path().join(format!("dst-{id}.db")),
            out.path().join(format!("src-{id}.db")),
        );
        to.restore(&[id], &a);
        from.restore(&[s["id"].as_str().unwrap()], &b);
        let h = hash_file(&a);
        assert_eq!(h, hash_file(&b), "{d}");
        assert_eq!(Value::String(h), d["image_hash"]);
        assert_eq!(integrity(&a), "ok");
    }
}

/// A source store with snapshots of two databases: `app` (three, changing) and `jobs` (two).
fn source_with_history() -> Fx {
    history_in(Fx::new())
}

/// A directory with a store made with `init --deltas`.
fn with_deltas() -> Fx {
    let fx = Fx::uninit();
    ok(fx.cmd().args(["init", "--deltas"]));
    fx
}

/// Five snapshots of two databases that change between them, backed up into `src`.
fn history_in(src: Fx) -> Fx {
    let app = src.path("app.db");
    let conn = create_db(&app, Journal::Wal, 1500, 1);
    let jobs = src.path("jobs.db");
    let jconn = create_db(&jobs, Journal::Rollback, 400, 2);
    src.backup(&app, &["--time", &t(0), "--tag", "first"]);
    src.backup(&jobs, &["--time", &t(5)]);
    mutate(&conn, 1);
    src.backup(&app, &["--time", &t(10)]);
    mutate(&jconn, 2);
    src.backup(&jobs, &["--time", &t(15)]);
    mutate(&conn, 3);
    src.backup(&app, &["--time", &t(20), "--tag", "last"]);
    src
}

#[test]
fn copy_local_to_local_restores_every_snapshot() {
    let src = source_with_history();
    let dst = Fx::new();
    // One database first (--name), then the rest.
    let r = copy_json(&src, &dst, &["--name", "jobs"]);
    assert_eq!(
        (r["copied"].as_u64(), r["skipped"].as_u64()),
        (Some(2), Some(0)),
        "{r}"
    );
    assert!(dst.snapshots().iter().all(|s| s["name"] == "jobs"));
    let r = copy_json(&src, &dst, &[]);
    assert_eq!(
        (r["copied"].as_u64(), r["skipped"].as_u64()),
        (Some(3), Some(2)),
        "{r}"
    );
    assert_eq!(r["failed"], 0);
    assert_keys(
        &r,
        &[
            "from",
            "to",
            "copied",
            "skipped",
            "failed",
            "chunks_uploaded",
            "bytes_uploaded",
            "unreadable",
            "duration_secs",
            "snapshots",
        ],
    );
    let snaps = r["snapshots"].as_array().unwrap();
    assert_eq!(snaps.len(), 5);
    // Oldest first, each with its status.
    let times: Vec<&str> = snaps.iter().map(|s| s["time"].as_str().unwrap()).collect();
    let mut sorted = times.clone();
    sorted.sort_unstable();
    assert_eq!(times, sorted);
    for s in snaps {
        let want = if s["name"] == "jobs" {
            "skipped"
        } else {
            "copied"
        };
        assert_eq!(s["status"], want, "{s}");
        if want == "copied" {
            assert!(s["bytes_uploaded"].as_u64().unwrap() > 0, "{s}");
        } else {
            assert_eq!(s["bytes_uploaded"], 0, "{s}");
        }
    }
    assert_eq!(
        r["bytes_uploaded"].as_u64().unwrap(),
        snaps
            .iter()
            .map(|s| s["bytes_uploaded"].as_u64().unwrap())
            .sum::<u64>()
    );
    // Same metadata (times, names, hosts, sources, sizes, hashes, tags) on both sides.
    assert_eq!(metadata(&dst.snapshots()), metadata(&src.snapshots()));
    assert_same_images(&src, &dst);
    assert_verifies(&src);
    let v = assert_verifies(&dst);
    assert_eq!(v["snapshots_checked"], 5);
    assert_eq!(v["images_checked"], 5);
    assert_eq!(v["unindexed_packs"], 0);
    // Backups continue in the destination from the copied history.
    let b = dst.backup(&src.path("app.db"), &["--time", &t(30)]);
    assert_eq!(b["new_chunks"], 0, "{b}");
}

#[test]
fn copy_stores_only_what_the_destination_lacks() {
    let src = Fx::new();
    let dst = Fx::new();
    let db = src.path("big.db");
    let conn = create_db(&db, Journal::Wal, 6000, 3);
    src.backup(&db, &["--time", &t(0)]);
    let first = copy_json(&src, &dst, &[]);
    assert_eq!(first["copied"], 1, "{first}");
    let first_bytes = first["bytes_uploaded"].as_u64().unwrap();
    let pages = src.snapshots()[0]["pages"].as_u64().unwrap();
    assert!(
        first["chunks_uploaded"].as_u64().unwrap() > pages / 2,
        "{first}"
    );

    // Nothing new: everything skipped, nothing written.
    let before = dst.state();
    let again = copy_json(&src, &dst, &[]);
    assert_eq!(
        (again["copied"].as_u64(), again["skipped"].as_u64()),
        (Some(0), Some(1))
    );
    assert_eq!(again["bytes_uploaded"], 0, "{again}");
    assert_eq!(again["chunks_uploaded"], 0, "{again}");
    dst.assert_unchanged(&before);

    // About 1% of the pages change: the copy stores about that much.
    conn.execute_batch("UPDATE items SET n = n + 1 WHERE id % 1000 = 0")
        .unwrap();
    src.backup(&db, &["--time", &t(10)]);
    let third = copy_json(&src, &dst, &[]);
    assert_eq!(
        (third["copied"].as_u64(), third["skipped"].as_u64()),
        (Some(1), Some(1))
    );
    let third_bytes = third["bytes_uploaded"].as_u64().unwrap();
    assert!(
        third_bytes * 10 < first_bytes,
        "a 1% change uploaded {third_bytes} bytes, the first copy {first_bytes}"
    );
    assert!(
        third["chunks_uploaded"].as_u64().unwrap() * 20 < pages,
        "{third}"
    );
    assert_same_images(&src, &dst);
    assert_verifies(&dst);
}

#[test]
fn copy_to_the_store_and_from_the_store_default_to_store() {
    let src = source_with_history();
    let dst = Fx::new();
    // --from alone: the destination is --store.
    let r = ok_json(
        dst.cmd()
            .args(["--json", "copy", "latest", "--name", "app", "--from"])
            .arg(&src.store),
    );
    assert_eq!(r["copied"], 1, "{r}");
    assert_eq!(r["to"], dst.store.to_str().unwrap());
    let snaps = dst.snapshots();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["time"], "2026-01-01T00:20:00Z");
    // Text output: one line per snapshot and a total.
    let out = String::from_utf8(ok(src.cmd().arg("copy").arg("--to").arg(&dst.store))).unwrap();
    assert_eq!(
        out.lines().filter(|l| l.starts_with("copied  ")).count(),
        4,
        "{out}"
    );
    assert_eq!(
        out.lines().filter(|l| l.starts_with("skipped ")).count(),
        1,
        "{out}"
    );
    assert_has(&out, &["4 copied, 1 skipped, 0 failed"]);
}

#[test]
fn interrupted_copy_resumes() {
    interrupted_copy_resumes_from(source_with_history(), Fx::new());
}

/// The same between stores with deltas: the copy carries deltas, and a copy
/// killed at any write never leaves one whose base or base-table row is
/// missing (every published snapshot verifies reading every chain).
#[test]
fn interrupted_copy_resumes_with_deltas() {
    let src = history_in(with_deltas());
    let stats = ok_json(src.cmd().args(["--json", "stats"]));
    assert!(stats["deltas"]["chunks"].as_u64().unwrap() > 0, "{stats}");
    let template = with_deltas();
    interrupted_copy_resumes_from(src, template);
}

fn interrupted_copy_resumes_from(src: Fx, template: Fx) {
    // Every object write of the copy is a place it can be killed (the fault
    // injection aborts the process like SIGKILL, on the destination only).
    let mut n = 1;
    loop {
        let dst = Fx::uninit();
        copy_dir(&template.store, &dst.store);
        let out = src
            .cmd()
            .env("PAGESNAP_FAULT_AFTER", n.to_string())
            .args(["copy", "--to"])
            .arg(&dst.store)
            .output()
            .unwrap();
        let finished = out.status.success();
        if !finished {
            assert_eq!(
                std::os::unix::process::ExitStatusExt::signal(&out.status),
                Some(6),
                "expected an abort at write {n}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            // What was published restores; the rest is copied by running again.
            let partial = dst.snapshots();
            // (The last write is the lock's removal: then all five are published.)
            assert!(partial.len() <= 5);
            let r = copy_json(&src, &dst, &[]);
            assert_eq!(r["skipped"].as_u64().unwrap(), partial.len() as u64, "{r}");
            assert_eq!(
                r["copied"].as_u64().unwrap(),
                5 - partial.len() as u64,
                "{r}"
            );
        }
        let snaps = dst.snapshots();
        assert_eq!(
            metadata(&snaps),
            metadata(&src.snapshots()),
            "no duplicates, none lost"
        );
        assert_verifies(&dst);
        assert_verifies(&src);
        if n % 4 == 1 || finished {
            assert_same_images(&src, &dst);
        }
        // Packs of the interrupted snapshot are garbage prune removes (after
        // `unlock` removes the killed copy's stale lock, which keeps prune out).
        ok(dst.cmd().arg("unlock"));
        ok(dst.cmd().args(["prune", "--max-unused", "0"]));
        let v = assert_verifies(&dst);
        assert_eq!(v["unindexed_packs"], 0, "at write {n}: {v}");
        if finished {
            assert!(n > 5, "a copy of 5 snapshots writes more than 5 objects");
            // As many deltas as in the source: they were copied as deltas.
            let deltas =
                |fx: &Fx| ok_json(fx.cmd().args(["--json", "stats"]))["deltas"]["chunks"].clone();
            assert_eq!(deltas(&dst), deltas(&src));
            break;
        }
        n += 1;
    }
}

#[test]
fn copy_refuses_bad_input_and_leaves_the_destination_alone() {
    let src = source_with_history();
    let dst = Fx::new();
    let before = dst.state();

    // A source store that does not exist.
    let missing = src.path("no-such-store");
    let err = fails(dst.cmd().arg("copy").arg("--from").arg(&missing));
    assert_has(
        &err,
        &["source store", missing.to_str().unwrap(), "does not exist"],
    );
    dst.assert_unchanged(&before);

    // A destination that is not a store (a directory without config, or no directory).
    let empty = src.path("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = fails(src.cmd().arg("copy").arg("--to").arg(&empty));
    assert_has(
        &err,
        &[
            "destination store",
            empty.to_str().unwrap(),
            "not a pagesnap store",
        ],
    );
    assert_eq!(tree(&empty).len(), 0, "nothing written into a non-store");
    let nowhere = src.path("nowhere");
    let err = fails(src.cmd().arg("copy").arg("--to").arg(&nowhere));
    assert_has(&err, &["destination store", nowhere.to_str().unwrap()]);
    assert!(!nowhere.exists());

    // Stores of different chunk sizes.
    let four = Fx::uninit();
    ok(four.cmd().args(["init", "--chunk-pages", "4"]));
    let four_before = four.state();
    let err = fails(src.cmd().arg("copy").arg("--to").arg(&four.store));
    assert_has(
        &err,
        &[
            src.store.to_str().unwrap(),
            four.store.to_str().unwrap(),
            "chunk",
            "--chunk-pages 1",
        ],
    );
    four.assert_unchanged(&four_before);

    // Unknown or ambiguous snapshots, and a name with no snapshots.
    for (args, says) in [
        (&["deadbeef"][..], "no snapshot matches"),
        (&["latest"][..], "several databases"),
        (&["--name", "nope"][..], "no snapshots of \"nope\""),
        (&["xyz"][..], "not a hexadecimal"),
    ] {
        let err = fails(src.cmd().arg("copy").arg("--to").arg(&dst.store).args(args));
        assert_has(&err, &[src.store.to_str().unwrap(), says]);
        dst.assert_unchanged(&before);
    }

    // The same store on both sides, and neither side given.
    let err = fails(src.cmd().arg("copy").arg("--to").arg(&src.store));
    assert_has(&err, &["same store"]);
    let err = fails(src.cmd().arg("copy"));
    assert_has(&err, &["--from", "--to"]);
    dst.assert_unchanged(&before);
}

/// Flips a byte in the middle of the first blob of `pack`.
fn damage_pack(pack: &Path) {
    let mut bytes = std::fs::read(pack).unwrap();
    let e = &pack_entries(&bytes)[0];
    bytes[e.offset + e.stored_len / 2] ^= 0x55;
    std::fs::write(pack, bytes).unwrap();
}

#[test]
fn damaged_source_chunks_are_not_copied() {
    let src = Fx::new();
    let dst = Fx::new();
    let good = small_db(&src, "good.db", 11);
    src.backup(&good, &["--time", &t(0)]);
    let packs_before = pack_files(&src.store);
    let bad = small_db(&src, "bad.db", 12);
    src.backup(&bad, &["--time", &t(10)]);
    let bad_packs: Vec<_> = pack_files(&src.store)
        .into_iter()
        .filter(|p| !packs_before.contains(p))
        .collect();
    assert!(!bad_packs.is_empty());
    damage_pack(&bad_packs[0]);

    let out = src
        .cmd()
        .args(["--json", "copy", "--to"])
        .arg(&dst.store)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed snapshot fails the command"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let pack_name = bad_packs[0].file_name().unwrap().to_str().unwrap();
    assert_has(
        &stderr,
        &["pagesnap: error: snapshot", "bad", pack_name, "not copied"],
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (r["copied"].as_u64(), r["failed"].as_u64()),
        (Some(1), Some(1)),
        "{r}"
    );
    let failed = &r["snapshots"][1];
    assert_eq!(failed["name"], "bad");
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["id"], Value::Null);
    assert!(
        failed["error"].as_str().unwrap().contains(pack_name),
        "{failed}"
    );
    // Only the good snapshot reached the destination, and it is sound.
    let snaps = dst.snapshots();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["name"], "good");
    assert_same_images(&src, &dst);
    assert_verifies(&dst);
}

/// An incompressible page with a byte changed decodes fine, so only the check
/// against its id can catch it: the copy refuses it.
#[test]
fn a_raw_chunk_that_does_not_match_its_id_is_not_copied() {
    let src = Fx::new();
    let dst = Fx::new();
    let db = src.path("random.db");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "CREATE TABLE t(b BLOB);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40)
             INSERT INTO t SELECT randomblob(3500) FROM n;",
        )
        .unwrap();
    }
    src.backup(&db, &["--time", &t(0)]);
    // The largest blob: a page of random bytes, whose bytes are stored as they
    // are (raw, or as zstd literals), so a changed byte still decodes.
    let (pack, raw) = pack_files(&src.store)
        .iter()
        .flat_map(|p| {
            let bytes = std::fs::read(p).unwrap();
            pack_entries(&bytes)
                .into_iter()
                .map(move |e| (p.clone(), e))
        })
        .max_by_key(|(_, e)| e.stored_len)
        .unwrap();
    assert!(raw.stored_len > 3500, "{}", raw.stored_len);
    let mut bytes = std::fs::read(&pack).unwrap();
    bytes[raw.offset + raw.stored_len / 2] ^= 0x01;
    std::fs::write(&pack, bytes).unwrap();

    let out = src
        .cmd()
        .arg("copy")
        .arg("--to")
        .arg(&dst.store)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_has(
        &stderr,
        &[&raw.id[..8], "content does not match its id", "not copied"],
    );
    assert!(
        dst.snapshots().is_empty(),
        "nothing of the snapshot is published"
    );
}

//! `init --deltas`: a store that stores changed pages as deltas against their
//! previous version (docs/DELTAS.md). Snapshots restore byte for byte, before and
//! after forget + prune, `verify --read-data` decodes every chain, `copy` into
//! a store without deltas stores whole chunks (into one with deltas it carries
//! them: tests/library/deltas.rs, and on S3 tests/integration/s3.rs); `repair index --read-data` checks every chain, changes nothing
//! in a sound store, and drops a damaged base with the deltas made against it,
//! naming them.

use crate::util::*;

/// Restores each (snapshot id, reference hash) of `copies` to `<what>-<id>.db`:
/// byte for byte the reference, and `PRAGMA integrity_check` ok.
fn restore_each(fx: &Fx, copies: &[(String, String)], what: &str) {
    for (id, reference) in copies {
        let out = fx.path(&format!("{what}-{id}.db"));
        fx.restore(&[id.as_str()], &out);
        assert_eq!(&hash_file(&out), reference);
        assert_eq!(integrity(&out), "ok");
    }
}

#[test]
fn a_store_with_deltas_restores_every_snapshot_before_and_after_prune() {
    let fx = Fx::uninit();
    let init = ok_json(fx.cmd().args(["--json", "init", "--deltas"]));
    assert_eq!(init["deltas"], true, "{init}");
    assert_eq!(init["format_version"], 2, "{init}");

    let db = fx.path("app.db");
    let conn = create_db(&db, Journal::Wal, 3000, 5);
    let mut copies = Vec::new();
    for round in 0..4u64 {
        if round > 0 {
            mutate(&conn, round);
        }
        let b = fx.backup(&db, &[]);
        // Later backups store changed pages as deltas, and say so.
        assert_eq!(b["delta_chunks"].as_u64().unwrap() > 0, round > 0, "{b}");
        assert_eq!(
            b["delta_chunk_bytes"].as_u64().unwrap() > 0,
            round > 0,
            "{b}"
        );
        let reference = reference_copy(&db, &fx.path(&format!("ref{round}.db")));
        assert_eq!(b["image_hash"], reference.as_str(), "{b}");
        copies.push((b["id"].as_str().unwrap().to_string(), reference));
    }
    restore_each(&fx, &copies, "restored");

    // Forget the first two (the roots of the chains) and prune: the others
    // still restore, their bases kept.
    ok(fx
        .cmd()
        .args(["forget", copies[0].0.as_str(), copies[1].0.as_str()]));
    ok(fx.cmd().args(["prune", "--max-unused", "0%"]));
    restore_each(&fx, &copies[2..], "after-prune");

    // verify --read-data decodes every chain.
    ok(fx.cmd().args(["verify", "--read-data"]));

    // copy stores whole chunks; the copies restore in a store without deltas.
    let dst = fx.path("dst");
    ok(ps(&dst).arg("init"));
    ok(fx.cmd().arg("copy").arg("--to").arg(&dst));
    let out = fx.path("from-copy.db");
    ok(ps(&dst).arg("restore").arg("latest").arg("-o").arg(&out));
    assert_eq!(&hash_file(&out), &copies.last().unwrap().1);

    // repair index, reading data or not, finds nothing to do in a sound store.
    ok(fx.cmd().args(["repair", "index"]));
    let before = fx.state();
    ok(fx.cmd().args(["repair", "index", "--read-data"]));
    fx.assert_unchanged(&before);

    // A damaged first pack (the roots of the chains): its damaged chunks and
    // every delta made against them are dropped, each delta naming its base;
    // damage remains (exit 3) until a backup stores those pages again.
    let mut packs: Vec<_> = files_under(&fx.store.join("packs"))
        .into_iter()
        .map(|p| (std::fs::metadata(&p).unwrap().modified().unwrap(), p))
        .collect();
    packs.sort();
    let first = packs[0].1.clone();
    let mut bytes = std::fs::read(&first).unwrap();
    for at in (200..bytes.len() / 2).step_by(997) {
        bytes[at] ^= 0x21;
    }
    std::fs::write(&first, bytes).unwrap();
    let o = fx
        .cmd()
        .args(["repair", "index", "--read-data"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(3), "{out}");
    assert_has(
        &out,
        &["its base chunk", "is missing or damaged", "damaged/packs/"],
    );
    ok(fx.cmd().arg("backup").arg(&db));
    let out = fx.path("healed.db");
    ok(fx.cmd().arg("restore").arg("latest").arg("-o").arg(&out));
    assert_eq!(&hash_file(&out), &copies.last().unwrap().1);
}

#[test]
fn init_without_deltas_makes_a_version_1_store() {
    let fx = Fx::uninit();
    let init = ok_json(fx.cmd().args(["--json", "init"]));
    assert_eq!(init["deltas"], false, "{init}");
    assert_eq!(init["format_version"], 1, "{init}");
    let config = std::fs::read(fx.store.join("config")).unwrap();
    assert_eq!(u16::from_le_bytes([config[8], config[9]]), 1);
}

/// `upgrade --deltas` turns deltas on in a store made without them: the next
/// backups store deltas, every snapshot from before and after restores, and
/// running it again changes nothing. Without `--deltas` it is a usage error.
#[test]
fn upgrade_turns_deltas_on_in_an_existing_store() {
    let fx = Fx::new();
    let db = fx.path("app.db");
    let conn = create_db(&db, Journal::Wal, 3000, 9);
    let mut copies = Vec::new();
    let first = fx.backup(&db, &[]);
    copies.push((
        first["id"].as_str().unwrap().to_string(),
        reference_copy(&db, &fx.path("ref0.db")),
    ));
    let err = fails(fx.cmd().arg("upgrade"));
    assert_has(&err, &["--deltas"]);
    let v = ok_json(fx.cmd().args(["--json", "upgrade", "--deltas"]));
    assert_eq!(
        v,
        serde_json::json!({"deltas": true, "changed": true, "format_version": 2})
    );
    let text = String::from_utf8(ok(fx.cmd().args(["upgrade", "--deltas"]))).unwrap();
    assert_has(&text, &["already on", "nothing changed"]);
    for round in 1..3u64 {
        mutate(&conn, round);
        let b = fx.backup(&db, &[]);
        assert!(b["delta_chunks"].as_u64().unwrap() > 0, "{b}");
        let reference = reference_copy(&db, &fx.path(&format!("ref{round}.db")));
        copies.push((b["id"].as_str().unwrap().to_string(), reference));
    }
    restore_each(&fx, &copies, "restored");
    ok(fx.cmd().args(["verify", "--read-data"]));
}

/// `stats` counts the deltas the snapshots hold and what they saved: the sums of
/// what each backup reported (the whole sizes of small deltas estimated), with
/// saved = whole − stored; a store without deltas shows none.
#[test]
fn stats_show_the_deltas_and_what_they_saved() {
    let fx = Fx::uninit();
    ok(fx.cmd().args(["init", "--deltas"]));
    let db = fx.path("app.db");
    let conn = create_db(&db, Journal::Wal, 3000, 5);
    let (mut chunks, mut stored, mut whole) = (0, 0, 0);
    for round in 0..4u64 {
        if round > 0 {
            mutate(&conn, round);
        }
        let b = fx.backup(&db, &[]);
        let n = |k: &str| b[k].as_u64().unwrap_or_else(|| panic!("no {k} in {b}"));
        chunks += n("delta_chunks");
        stored += n("delta_chunk_bytes");
        whole += n("delta_whole_bytes");
        assert!(n("delta_whole_bytes") >= n("delta_chunk_bytes"), "{b}");
    }
    assert!(chunks > 0 && whole > stored, "{chunks} {stored} {whole}");
    let st = ok_json(fx.cmd().args(["--json", "stats"]));
    let d = &st["deltas"];
    let n = |k: &str| {
        d[k].as_u64()
            .unwrap_or_else(|| panic!("no deltas.{k} in {st}"))
    };
    assert_eq!((n("chunks"), n("stored_bytes")), (chunks, stored), "{st}");
    assert_eq!(n("saved_bytes"), n("whole_bytes") - stored, "{st}");
    // Most deltas are small, their whole sizes estimated from the measured
    // sample: over the whole store, as each backup did over its own deltas,
    // so the two come out near, not equal.
    assert!(n("unmeasured_chunks") > 0, "{st}");
    assert_eq!(d["estimated"], true, "{st}");
    let ratio = n("whole_bytes") as f64 / whole as f64;
    assert!((0.8..1.25).contains(&ratio), "{ratio}: {st}");
    assert!(n("stored_bytes") <= st["unique_compressed_bytes"].as_u64().unwrap());
    let text = String::from_utf8(ok(fx.cmd().arg("stats"))).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("delta chunks:"))
        .unwrap_or_else(|| panic!("no delta line in:\n{text}"));
    assert!(
        line.contains(&format!("delta chunks:       {chunks} (")),
        "{line}"
    );
    assert!(line.contains("saved") && line.contains('%'), "{line}");

    // A store without deltas: zeros, and no line.
    let plain = Fx::uninit();
    ok(plain.cmd().arg("init"));
    plain.backup(&db, &[]);
    let st = ok_json(plain.cmd().args(["--json", "stats"]));
    assert_eq!(st["deltas"]["chunks"], 0, "{st}");
    let text = String::from_utf8(ok(plain.cmd().arg("stats"))).unwrap();
    assert!(!text.contains("delta chunks"), "{text}");
}

/// `backup --base-cache` takes a size; anything else is refused before the
/// store is touched, naming the flag.
#[test]
fn backup_refuses_a_base_cache_that_is_not_a_size() {
    let fx = Fx::uninit();
    ok(fx.cmd().args(["init", "--deltas"]));
    let db = fx.path("app.db");
    let _conn = create_db(&db, Journal::Wal, 300, 5);
    let before = fx.state();
    let err = fails(
        fx.cmd()
            .arg("backup")
            .arg(&db)
            .args(["--base-cache", "lots"]),
    );
    assert_has(&err, &["--base-cache", "lots"]);
    fx.assert_unchanged(&before);
    let b = fx.backup(&db, &["--base-cache", "1MiB"]);
    assert!(b["new_chunks"].as_u64().unwrap() > 0, "{b}");
}

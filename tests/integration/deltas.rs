//! `init --deltas`: a store that stores changed pages as deltas against their
//! previous version (docs/DELTAS.md). Snapshots restore byte for byte, before and
//! after forget + prune, `verify --read-data` decodes every chain, `copy` stores
//! whole chunks; `repair index --read-data`, which does not follow chains yet,
//! refuses the store and changes nothing.

use crate::util::*;

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
    for (id, reference) in &copies {
        let out = fx.path(&format!("restored-{id}.db"));
        fx.restore(&[id.as_str()], &out);
        assert_eq!(&hash_file(&out), reference);
        assert_eq!(integrity(&out), "ok");
    }

    // Forget the first two (the roots of the chains) and prune: the others
    // still restore, their bases kept.
    ok(fx
        .cmd()
        .args(["forget", copies[0].0.as_str(), copies[1].0.as_str()]));
    ok(fx.cmd().args(["prune", "--max-unused", "0%"]));
    for (id, reference) in &copies[2..] {
        let out = fx.path(&format!("after-prune-{id}.db"));
        fx.restore(&[id.as_str()], &out);
        assert_eq!(&hash_file(&out), reference);
        assert_eq!(integrity(&out), "ok");
    }

    // verify --read-data decodes every chain.
    ok(fx.cmd().args(["verify", "--read-data"]));

    // copy stores whole chunks; the copies restore in a store without deltas.
    let dst = fx.path("dst");
    ok(ps(&dst).arg("init"));
    ok(fx.cmd().arg("copy").arg("--to").arg(&dst));
    let out = fx.path("from-copy.db");
    ok(ps(&dst).arg("restore").arg("latest").arg("-o").arg(&out));
    assert_eq!(&hash_file(&out), &copies.last().unwrap().1);

    // repair index works (nothing to do here); reading data while rebuilding
    // checks chunks alone, so it is refused and the store left unchanged.
    ok(fx.cmd().args(["repair", "index"]));
    let before = fx.state();
    let err = fails(fx.cmd().args(["repair", "index", "--read-data"]));
    assert_has(
        &err,
        &["checking chunk data while rebuilding the index does not follow delta chains yet"],
    );
    fx.assert_unchanged(&before);
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

/// `stats` counts the deltas the snapshots hold and what they saved: the sums of
/// what each backup reported, with saved = whole − stored; a store without
/// deltas shows none.
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
    assert_eq!(
        (n("chunks"), n("stored_bytes"), n("whole_bytes")),
        (chunks, stored, whole),
        "{st}"
    );
    assert_eq!(n("saved_bytes"), whole - stored, "{st}");
    assert_eq!(n("unmeasured_chunks"), 0, "{st}");
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

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

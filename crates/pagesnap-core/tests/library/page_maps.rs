//! Skip-delta page maps: chain shape, metadata per changed page, chunks named
//! across backups, and snapshots that stay restorable when the manifests of the
//! snapshots whose maps they build on are deleted.

use crate::common::*;
use pagesnap_core::format::pagemap::reference_seq;
use pagesnap_core::{layout, InitOptions, Store};

#[test]
fn skip_delta_chains_stay_short_and_metadata_follows_the_changes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = one_row_per_page(&db, 600);
    let store = Store::init(dir.path().join("store"), &InitOptions::default()).unwrap();
    let mut taken = Vec::new();
    let first = backup(&store, &db);
    assert!(first.new_base);
    taken.push((first, reference_hash(&db, dir.path())));

    let mut rng = Rng(99);
    for step in 1..=20u64 {
        // Five scattered rows: about five changed pages.
        let ids: Vec<i64> = (0..5).map(|_| 1 + rng.below(600) as i64).collect();
        set_rows(&conn, 1000 + step, ids.into_iter());
        let r = backup(&store, &db);
        assert!(
            !r.new_base,
            "step {step}: small changes never need a full map"
        );
        // The compact-manifest target: ≤ 64 bytes per changed page + 4 KiB.
        let budget = 64 * r.stats.new_chunks + 4096;
        assert!(
            r.metadata_bytes <= budget,
            "step {step}: {} bytes of metadata for {} new chunks",
            r.metadata_bytes,
            r.stats.new_chunks
        );
        let snap = snapshot_of(&store, &r);
        let chain = store.map_chain(&snap.manifest.map).unwrap();
        assert_eq!(chain[0].1.seq, step, "map number since the full map");
        assert_eq!(
            chain.len() as u32,
            step.count_ones() + 1,
            "chain of step {step}"
        );
        for w in chain.windows(2) {
            assert_eq!(w[1].1.seq, reference_seq(w[0].1.seq));
        }
        assert_eq!(chain.last().unwrap().1.seq, 0);
        taken.push((r, reference_hash(&db, dir.path())));
    }
    for (r, expected) in &taken {
        restore_and_check(&store, &snapshot_of(&store, r), expected, dir.path());
    }

    // Delete the manifests of the snapshot that wrote the full map and of map 4
    // (the reference of maps 5, 6 and 7): their maps stay, and so does every
    // later snapshot.
    for gone in [0usize, 4] {
        let key = layout::snapshot(&taken[gone].0.snapshot);
        std::fs::remove_file(dir.path().join("store").join(key)).unwrap();
    }
    assert_eq!(store.snapshots().unwrap().len(), taken.len() - 2);
    for (i, (r, expected)) in taken.iter().enumerate() {
        if i != 0 && i != 4 {
            restore_and_check(&store, &snapshot_of(&store, r), expected, dir.path());
        }
    }
}

#[test]
fn pages_returning_to_earlier_contents_reuse_their_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = one_row_per_page(&db, 300);
    let store = Store::init(dir.path().join("store"), &InitOptions::default()).unwrap();
    let a = backup(&store, &db);
    let a_hash = reference_hash(&db, dir.path());
    set_rows(&conn, 7, 10..=40);
    let b = backup(&store, &db);
    assert!(b.stats.new_chunks >= 31);
    // Put the original rows back: the pages are the first snapshot's again, stored
    // by an earlier backup, so the map names them in that backup's index object.
    set_rows(&conn, 1, 1..=40);
    let c = backup(&store, &db);
    let c_hash = reference_hash(&db, dir.path());
    assert_eq!(c_hash, a_hash, "same rows, same pages");
    assert_eq!(c.image_hash, a.image_hash);
    assert!(
        c.stats.new_chunks < 5,
        "{} chunks stored again",
        c.stats.new_chunks
    );
    for (r, h) in [(&a, &a_hash), (&c, &c_hash)] {
        restore_and_check(&store, &snapshot_of(&store, r), h, dir.path());
    }
}

#[test]
fn growing_and_shrinking_images_resolve_through_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = one_row_per_page(&db, 200);
    let store = Store::init(dir.path().join("store"), &InitOptions::default()).unwrap();
    let mut taken = vec![(backup(&store, &db), reference_hash(&db, dir.path()))];
    for step in 0..7i64 {
        if step % 3 == 2 {
            conn.execute_batch(&format!(
                "DELETE FROM pages WHERE id > {}; VACUUM;",
                150 - step * 5
            ))
            .unwrap();
        } else {
            set_rows(
                &conn,
                50 + step as u64,
                (200 + step * 20)..(220 + step * 20),
            );
        }
        taken.push((backup(&store, &db), reference_hash(&db, dir.path())));
    }
    let sizes: Vec<u64> = taken.iter().map(|(r, _)| r.chunks).collect();
    assert!(sizes.windows(2).any(|w| w[1] < w[0]), "{sizes:?}");
    assert!(sizes.windows(2).any(|w| w[1] > w[0]), "{sizes:?}");
    for (r, h) in &taken {
        restore_and_check(&store, &snapshot_of(&store, r), h, dir.path());
    }
}

//! `Store::verify`: image hashes and image checks are checked on every shape of
//! store (page sizes, chunk sizes with a partial last chunk, one-chunk images),
//! and a snapshot whose chunks do not make its recorded image is caught even
//! though every chunk and every object is sound on its own.

use crate::common::*;
use pagesnap_core::backend::PutMode;
use pagesnap_core::format::manifest::Manifest;
use pagesnap_core::{layout, DataSubset, Id, InitOptions, Snapshot, Store, VerifyOptions};

fn read_data() -> VerifyOptions {
    VerifyOptions {
        read_data: Some(DataSubset::All),
        ..Default::default()
    }
}

/// A store holding one snapshot of a 300-row database (in `journal` mode).
fn one_snapshot(journal: Journal, seed: u64) -> (tempfile::TempDir, Store, Snapshot) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = create_db(&db, journal, 4096);
    populate(&conn, &mut Rng(seed), 4096, 300);
    let store = Store::init(dir.path().join("store"), &InitOptions::default()).unwrap();
    let snap = snapshot_of(&store, &backup(&store, &db));
    (dir, store, snap)
}

/// Publishes `forged` as a snapshot of its own (a valid envelope, named by its
/// own hash) and returns its id.
fn publish(store: &Store, forged: &Manifest) -> Id {
    let bytes = forged.encode();
    let id = Id::of_object(&bytes);
    store
        .backend()
        .put(&layout::snapshot(&id), &bytes, PutMode::Create)
        .unwrap();
    id
}

#[test]
fn image_hashes_are_checked_for_every_page_and_chunk_size() {
    // (page size, pages per chunk, rows): 512-byte chunks are below blake3's 1 KiB
    // chunk and take the reassembling path; 4 pages per chunk leave a partial last
    // chunk in most databases; one tiny database is a single chunk.
    for (page_size, chunk_pages, rows) in [
        (512, 1, 200),
        (4096, 4, 300),
        (65536, 1, 40),
        (4096, 256, 10),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        let conn = create_db(&db, Journal::Wal, page_size);
        let mut rng = Rng(page_size as u64 + chunk_pages as u64);
        populate(&conn, &mut rng, page_size, rows);
        let store = Store::init(
            dir.path().join("store"),
            &InitOptions {
                chunk_pages,
                ..Default::default()
            },
        )
        .unwrap();
        backup(&store, &db);
        insert_rows(&conn, &mut rng, page_size, rows / 4 + 1);
        backup(&store, &db);
        let r = store.verify(&read_data()).unwrap();
        assert!(
            r.healthy(),
            "page {page_size} x {chunk_pages}: {:?}",
            r.problems
        );
        assert_eq!(r.images_checked, 2, "page {page_size} x {chunk_pages}");
        assert_eq!(r.chunks_read, r.chunks_referenced);
    }
}

#[test]
fn a_manifest_whose_chunks_do_not_make_its_image_is_caught() {
    let (dir, store, good) = one_snapshot(Journal::Rollback, 5);
    let db = dir.path().join("app.db");

    // A well-formed manifest (valid envelope, named by its own hash) that records
    // another image: only reassembling the image can tell.
    assert!(
        good.manifest.image_check.is_some(),
        "backups record an image check"
    );
    let mut forged = good.manifest.clone();
    forged.image_hash[0] ^= 1;
    if let Some(c) = &mut forged.image_check {
        c[0] ^= 1;
    }
    forged.time_unix += 60;
    let id = publish(&store, &forged);

    let structural = store.verify(&VerifyOptions::default()).unwrap();
    assert!(
        structural.healthy(),
        "without --read-data the forgery is undetectable: {:?}",
        structural.problems
    );
    let r = store.verify(&read_data()).unwrap();
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert_eq!(r.problems[0].object, layout::snapshot(&id));
    assert!(
        r.problems[0].detail.contains("blake3 hash"),
        "{:?}",
        r.problems
    );
    assert_eq!(r.broken.iter().copied().collect::<Vec<_>>(), vec![id]);

    // Restore refuses it too, and the genuine snapshot still restores.
    let forged_snap = store
        .select(&pagesnap_core::SnapshotSelector::Id(id.to_hex()))
        .unwrap();
    let out = dir.path().join("out.db");
    let err = store
        .restore_to_path(&forged_snap, &out, false)
        .unwrap_err();
    assert!(err.to_string().contains("image check"), "{err}");
    assert!(err.to_string().contains("does not match"), "{err}");
    assert!(!out.exists());
    restore_and_check(&store, &good, &reference_hash(&db, dir.path()), dir.path());
}

/// A manifest whose two records of its image disagree (a right image check, a
/// wrong blake3 hash, or the other way round): `verify --read-data` checks both
/// and names the one that is wrong. A restore checks the image check alone, so it
/// refuses the second and gives back the captured bytes for the first. A manifest
/// without an image check (written before it existed) is restored against its
/// blake3 hash.
#[test]
fn verify_checks_both_the_blake3_hash_and_the_image_check() {
    let (dir, store, good) = one_snapshot(Journal::Wal, 6);
    let want = reference_hash(&dir.path().join("app.db"), dir.path());
    for (k, which) in ["blake3 hash", "image check", "no check"]
        .into_iter()
        .enumerate()
    {
        let mut forged = good.manifest.clone();
        forged.time_unix += 60 * (k as i64 + 1);
        match which {
            "blake3 hash" => forged.image_hash[31] ^= 0x80,
            "image check" => forged.image_check.as_mut().unwrap()[15] ^= 0x80,
            _ => {
                forged.image_check = None;
                forged.image_hash[0] ^= 0x01;
            }
        }
        // What verify and a restore name.
        let named = if which == "no check" {
            "blake3 hash"
        } else {
            which
        };
        let id = publish(&store, &forged);
        let r = store
            .verify(&VerifyOptions {
                snapshots: vec![id.to_hex()],
                ..read_data()
            })
            .unwrap();
        assert_eq!(r.problems.len(), 1, "{which}: {:?}", r.problems);
        assert_eq!(r.problems[0].object, layout::snapshot(&id));
        assert!(r.problems[0].detail.contains(named), "{:?}", r.problems);
        assert_eq!(r.broken.iter().copied().collect::<Vec<_>>(), vec![id]);

        let snap = store
            .select(&pagesnap_core::SnapshotSelector::Id(id.to_hex()))
            .unwrap();
        let out = dir.path().join(format!("out{k}.db"));
        let restored = store.restore_to_path(&snap, &out, false);
        if which != "blake3 hash" {
            let err = restored.unwrap_err().to_string();
            assert!(
                err.contains(named) && err.contains("does not match"),
                "{err}"
            );
            assert!(!out.exists());
        } else {
            restored.unwrap();
            assert_eq!(
                *blake3::hash(&std::fs::read(&out).unwrap()).as_bytes(),
                want
            );
        }
    }
}

#[test]
fn subsets_partition_the_packs() {
    let parts = [1u32, 2, 3].map(|n| DataSubset::Part { n, of: 3 });
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = create_db(&db, Journal::Wal, 4096);
    let mut rng = Rng(11);
    populate(&conn, &mut rng, 4096, 200);
    let store = Store::init(
        dir.path().join("store"),
        &InitOptions {
            pack_target_size: 1 << 20,
            ..Default::default()
        },
    )
    .unwrap();
    for _ in 0..4 {
        insert_rows(&conn, &mut rng, 4096, 150);
        backup(&store, &db);
    }
    let all = store.verify(&read_data()).unwrap();
    assert!(all.packs >= 3, "{all:?}");
    let mut read = 0;
    for p in parts {
        let r = store
            .verify(&VerifyOptions {
                read_data: Some(p),
                ..Default::default()
            })
            .unwrap();
        assert!(r.healthy());
        read += r.packs_read;
    }
    assert_eq!(read, all.packs_read, "the three parts read each pack once");
    for bad in ["0%", "101%", "x%", "2/1", "0/3", "1/0", "half"] {
        assert!(DataSubset::parse(bad).is_err(), "{bad}");
    }
    assert_eq!(DataSubset::parse("25%").unwrap(), DataSubset::Percent(25.0));
    assert_eq!(
        DataSubset::parse("2/7").unwrap(),
        DataSubset::Part { n: 2, of: 7 }
    );
}

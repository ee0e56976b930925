//! Copying snapshots between stores through the library: metadata kept, page maps
//! rebuilt against the destination's own history, only missing chunks stored.

use crate::common::*;
use chrono::{TimeZone, Utc};
use pagesnap_core::copy::{copy, same_snapshot, CopyOptions, CopyOutcome};
use pagesnap_core::{
    BackupOptions, ChunkRef, DataSubset, InitOptions, Snapshot, Store, VerifyOptions,
};
use std::collections::HashSet;
use std::path::Path;

fn backup_at(store: &Store, db: &Path, minutes: i64) -> Snapshot {
    let opts = BackupOptions {
        name: Some("app".into()),
        time: Some(Utc.timestamp_opt(1_767_225_600 + minutes * 60, 0).unwrap()),
        ..BackupOptions::default()
    };
    let r = store.backup_path(db, &opts).unwrap();
    snapshot_of(store, &r)
}

fn stored(list: &[ChunkRef]) -> HashSet<pagesnap_core::ChunkId> {
    list.iter()
        .filter_map(|c| match c {
            ChunkRef::Stored(id) => Some(*id),
            ChunkRef::Zero => None,
        })
        .collect()
}

#[test]
fn copy_keeps_metadata_and_stores_only_chunks_the_destination_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let src = Store::init(dir.path().join("src"), &InitOptions::default()).unwrap();
    // Another layout: small packs, no dictionaries of its own.
    let dst = Store::init(
        dir.path().join("dst"),
        &InitOptions {
            pack_target_size: 64 << 10,
            dictionary: false,
            ..InitOptions::default()
        },
    )
    .unwrap();
    let db = dir.path().join("app.db");
    let conn = create_db(&db, Journal::Wal, 4096);
    let mut rng = Rng(5);
    populate(&conn, &mut rng, 4096, 1500);
    // The destination backs the database up itself first; the source a minute later.
    let own = backup_at(&dst, &db, 0);
    let a = backup_at(&src, &db, 1);
    insert_rows(&conn, &mut rng, 4096, 40);
    let b = backup_at(&src, &db, 2);
    assert!(a.manifest.dict.is_some(), "the source trained a dictionary");

    let r = copy(&src, &dst, &CopyOptions::default()).unwrap();
    assert!(r.complete());
    assert_eq!((r.copied(), r.skipped()), (2, 0));
    let list_a = src.chunk_list(&a).unwrap();
    let list_b = src.chunk_list(&b).unwrap();
    // `a` is the image the destination already holds: nothing of it is stored again.
    assert_eq!(r.snapshots[0].chunks_uploaded, 0);
    // `b` stores exactly its chunks that `a` does not have.
    let new_in_b = stored(&list_b).difference(&stored(&list_a)).count() as u64;
    assert!(new_in_b > 0);
    assert_eq!(r.snapshots[1].chunks_uploaded, new_in_b);

    let copied: Vec<Snapshot> = r
        .snapshots
        .iter()
        .map(|s| match &s.outcome {
            CopyOutcome::Copied(id) => dst.load_snapshot(id).unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    for (from, to) in [(&a, &copied[0]), (&b, &copied[1])] {
        assert!(same_snapshot(&from.manifest, &to.manifest));
        // Everything but the destination's own map and parent is the source's.
        let mut m = to.manifest.clone();
        m.map = from.manifest.map;
        m.parent = from.manifest.parent;
        assert_eq!(m, from.manifest);
        assert_eq!(dst.chunk_list(to).unwrap(), src.chunk_list(from).unwrap());
        assert_eq!(restore_hash_via_writer(&dst, to), from.manifest.image_hash);
    }
    // The page maps continue the destination's history of the database.
    assert_eq!(copied[0].manifest.parent, Some(own.id));
    assert_eq!(copied[1].manifest.parent, Some(copied[0].id));
    assert_ne!(copied[0].id, a.id, "named through the destination's index");

    let v = dst
        .verify(&VerifyOptions {
            read_data: Some(DataSubset::All),
            ..VerifyOptions::default()
        })
        .unwrap();
    assert!(v.healthy(), "{:?}", v.problems);
    assert_eq!(v.images_checked, 3);

    // Copying again changes nothing.
    let again = copy(&src, &dst, &CopyOptions::default()).unwrap();
    assert_eq!((again.copied(), again.skipped()), (0, 2));
    assert_eq!(again.bytes_uploaded(), 0);
    assert_eq!(dst.snapshots().unwrap().len(), 3);
}

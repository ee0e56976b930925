//! `Store::retag`: a new manifest replaces the old one; the next backup of the
//! database continues from it; a bad id or tag changes nothing.

use crate::common::*;
use pagesnap_core::{Error, InitOptions, SnapshotId, Store, TagEdit};

#[test]
fn a_retagged_snapshot_is_the_parent_of_the_next_backup_and_restores_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = create_db(&db, Journal::Wal, 4096);
    populate(&conn, &mut Rng(7), 4096, 300);
    let store = Store::init(dir.path().join("store"), &InitOptions::default()).unwrap();
    let first = snapshot_of(&store, &backup(&store, &db));
    let expected = reference_copy(&db, &dir.path().join("ref.db"));
    let edit = TagEdit {
        add: vec!["keep".into()],
        ..TagEdit::default()
    };
    let done = store.retag(&[first.id, first.id], &edit).unwrap();
    assert_eq!(done.len(), 1, "each snapshot once");
    let r = &done[0];
    assert!(r.changed());
    assert_eq!(r.tags, ["keep"]);
    let snaps = store.snapshots().unwrap();
    assert_eq!(snaps.len(), 1);
    let new = &snaps[0];
    assert_eq!(new.id, r.new);
    assert_eq!(new.manifest.map, first.manifest.map);
    restore_and_check(&store, new, &expected, dir.path());
    // The next backup finds the retagged snapshot as its parent.
    insert_rows(&conn, &mut Rng(8), 4096, 50);
    let next = snapshot_of(&store, &backup(&store, &db));
    assert_eq!(next.manifest.parent, Some(r.new));
    // An unknown id or a bad tag: nothing changes.
    let before: Vec<SnapshotId> = store.snapshots().unwrap().iter().map(|s| s.id).collect();
    let e = store.retag(&[next.id, SnapshotId::of_object(b"none")], &edit);
    assert!(matches!(e, Err(Error::UnknownSnapshot(_))), "{e:?}");
    let bad = TagEdit {
        set: Some(vec!["a/b".into()]),
        ..TagEdit::default()
    };
    assert!(matches!(
        store.retag(&[next.id], &bad),
        Err(Error::Invalid { what: "tag", .. })
    ));
    let after: Vec<SnapshotId> = store.snapshots().unwrap().iter().map(|s| s.id).collect();
    assert_eq!(before, after);
}

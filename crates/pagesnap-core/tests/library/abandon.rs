//! A backup abandoned while its capture is stalled (`pagesnap watch`'s capture
//! deadline): it holds no store lock from then on, publishes nothing when it
//! wakes up, and leaves only what prune removes.

use pagesnap_core::capture::CaptureError;
use pagesnap_core::{
    Abandon, BackupOptions, Error, InitOptions, Progress, PruneOptions, Store, VerifyOptions,
};
use rusqlite::Connection;
use std::path::Path;
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Duration;

fn locks(store: &Path) -> usize {
    std::fs::read_dir(store.join("locks")).unwrap().count()
}

/// Files under `dir`, recursively.
fn files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() {
                    files(&e.path())
                } else {
                    1
                }
            })
            .sum()
        })
        .unwrap_or(0)
}

#[test]
fn an_abandoned_backup_releases_its_lock_and_never_publishes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let c = Connection::open(&db).unwrap();
    // ~3,000 pages: the copy takes several steps of 1,024 pages.
    c.execute_batch(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB);
         WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 3000)
         INSERT INTO t SELECT x, randomblob(3000) FROM n;",
    )
    .unwrap();
    let root = dir.path().join("store");
    Store::init(&root, &InitOptions::default()).unwrap();
    // The progress callback after the first step stands for a read of the
    // source that does not return (a hung mount) until the test says so.
    let (stalled_tx, stalled) = mpsc::channel::<()>();
    let (go, go_rx) = mpsc::channel::<()>();
    let (stalled_tx, go_rx) = (Mutex::new(stalled_tx), Mutex::new(go_rx));
    let store = Store::open(&root)
        .unwrap()
        .with_progress(Progress::new(move |_, _| {
            if stalled_tx.lock().unwrap().send(()).is_ok() {
                let _ = go_rx.lock().unwrap().recv();
            }
        }));
    let plain = Store::open(&root).unwrap();
    let abandon = Abandon::new();
    std::thread::scope(|s| {
        let backup = s.spawn(|| {
            let src = pagesnap_core::capture::open_source(&db).unwrap();
            store.backup_connection_abandonable(&src, &db, &BackupOptions::default(), &abandon)
        });
        stalled.recv_timeout(Duration::from_secs(60)).unwrap();
        assert_eq!(locks(&root), 1, "the stalled backup holds its lock");
        assert!(abandon.abandon());
        assert_eq!(locks(&root), 0, "abandoning released it");
        // So prune (an exclusive lock, never waiting) runs while it is stalled.
        plain.prune(&PruneOptions::default()).unwrap();
        drop(stalled);
        go.send(()).unwrap();
        match backup.join().unwrap() {
            Err(Error::Capture(CaptureError::Abandoned(p))) => assert_eq!(p, db),
            Err(e) => panic!("expected Abandoned, got {e}"),
            Ok(r) => panic!("an abandoned backup published {}", r.snapshot.short()),
        }
    });
    assert!(plain.snapshots().unwrap().is_empty());
    assert_eq!(locks(&root), 0);
    // What it wrote before it noticed goes with the next prune; the store is sound.
    plain.prune(&PruneOptions::default()).unwrap();
    assert_eq!(files(&root.join("packs")), 0, "no pack left");
    let r = plain.backup_path(&db, &BackupOptions::default()).unwrap();
    assert!(plain.verify(&VerifyOptions::default()).unwrap().healthy());
    assert_eq!(plain.snapshots().unwrap()[0].id, r.snapshot);
}

//! Deltas (issue #27, docs/DELTAS.md): a store made with `deltas` stores a changed
//! chunk as a delta against the chunk at its position in the parent snapshot when
//! that is smallest. Every snapshot restores byte for byte (restore, salvage),
//! chains stay within `MAX_DELTA_DEPTH`, an update-heavy sequence costs far less
//! than in a store without deltas, and what does not follow chains yet refuses
//! such a store cleanly.

use crate::common::Rng;
use crate::common::*;
use pagesnap_core::format::index::{IndexBody, MAX_DELTA_DEPTH};
use pagesnap_core::format::pack::Codec;
use pagesnap_core::{
    BackupReport, CopyOptions, DataSubset, InitOptions, PruneOptions, Store, VerifyOptions,
};
use proptest::prelude::*;
use rusqlite::{params, Connection};
use std::path::Path;

pub(crate) fn store(dir: &Path, name: &str, deltas: bool) -> Store {
    Store::init(
        dir.join(name),
        &InitOptions {
            deltas,
            ..InitOptions::default()
        },
    )
    .unwrap()
}

/// A table of small rows, many to a page: an update rewrites a few bytes of a page.
pub(crate) fn accounts(db: &Path, rows: i64) -> Connection {
    let conn = create_db(db, Journal::Wal, 4096);
    conn.execute_batch(
        "CREATE TABLE acct(id INTEGER PRIMARY KEY, owner TEXT NOT NULL, balance INTEGER NOT NULL);",
    )
    .unwrap();
    let mut rng = Rng(7);
    let tx = conn.unchecked_transaction().unwrap();
    for id in 1..=rows {
        tx.execute(
            "INSERT INTO acct VALUES (?1, ?2, ?3)",
            params![id, rng.text(60), rng.below(1_000_000) as i64],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    conn
}

/// Changes the balance of `n` rows picked by `rng`, and always row 1 (so one page
/// changes at every step and its chain reaches the depth bound).
pub(crate) fn update_some(conn: &Connection, rng: &mut Rng, rows: i64, n: usize) {
    let tx = conn.unchecked_transaction().unwrap();
    tx.execute("UPDATE acct SET balance = balance + 1 WHERE id = 1", [])
        .unwrap();
    for _ in 0..n {
        let id = 1 + rng.below(rows as u64) as i64;
        tx.execute(
            "UPDATE acct SET balance = ?2 WHERE id = ?1",
            params![id, rng.below(1_000_000) as i64],
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

/// Every index object of the store at `dir`, decoded.
fn index_objects(dir: &Path) -> Vec<IndexBody> {
    std::fs::read_dir(dir.join("index"))
        .unwrap()
        .map(|e| IndexBody::decode(&std::fs::read(e.unwrap().path()).unwrap()).unwrap())
        .collect()
}

/// (delta entries, deepest chain) over every index object.
pub(crate) fn delta_census(dir: &Path) -> (usize, u8) {
    let mut n = 0;
    let mut deepest = 0;
    for body in index_objects(dir) {
        let deltas = body
            .entries
            .iter()
            .filter(|e| e.entry.codec == Codec::ZstdDelta)
            .count();
        assert_eq!(deltas, body.deltas.len(), "one base-table row per delta");
        n += deltas;
        deepest = body.deltas.iter().map(|d| d.depth).fold(deepest, u8::max);
    }
    (n, deepest)
}

#[test]
fn update_heavy_sequence_restores_exactly_in_far_fewer_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bank.db");
    let rows = 20_000;
    let conn = accounts(&db, rows);
    let with = store(dir.path(), "with", true);
    let without = store(dir.path(), "without", false);
    assert!(with.config().deltas && !without.config().deltas);

    let mut rng = Rng(99);
    let mut taken: Vec<(BackupReport, Hash)> = Vec::new();
    let (mut later_with, mut later_without) = (0u64, 0u64);
    for step in 0..20 {
        if step > 0 {
            update_some(&conn, &mut rng, rows, 40);
        }
        let a = backup(&with, &db);
        let b = backup(&without, &db);
        assert_eq!(a.image_hash, b.image_hash);
        if step > 1 {
            // Bases located through this machine's index cache (the short way)
            // as well as through the whole index (the first backups).
            assert!(a.index_cached, "step {step} took the long way");
        }
        if step > 0 {
            later_with += a.stats.pack_bytes;
            later_without += b.stats.pack_bytes;
            assert!(a.stats.delta_chunks > 0, "step {step} stored no delta");
        }
        assert_eq!(b.stats.delta_chunks, 0);
        taken.push((a, reference_hash(&db, dir.path())));
    }
    let ratio = later_with as f64 / later_without as f64;
    eprintln!("deltas: {later_with} bytes, without: {later_without} bytes, ratio {ratio:.3}");
    assert!(
        ratio < 0.5,
        "deltas stored {later_with} bytes, plain {later_without} (ratio {ratio:.3})"
    );

    // Chains are recorded and bounded: the pages changed at every step are
    // skip-delta chains (DELTAS.md), version 15's four links the deepest.
    let (n, deepest) = delta_census(&dir.path().join("with"));
    assert!(n > 0);
    assert_eq!(deepest, 4);
    assert_eq!(delta_census(&dir.path().join("without")), (0, 0));

    // A store without deltas is a version-1 store: every pack and index object.
    for folder in ["index", "packs"] {
        for p in walk(&dir.path().join("without").join(folder)) {
            let bytes = std::fs::read(&p).unwrap();
            assert_eq!(
                u16::from_le_bytes([bytes[8], bytes[9]]),
                1,
                "{}",
                p.display()
            );
        }
    }

    // Every snapshot restores byte for byte, by path, by writer and by salvage,
    // after the backups' processes are gone (a fresh open).
    let with = Store::open(dir.path().join("with")).unwrap();
    for (report, reference) in &taken {
        let snap = snapshot_of(&with, report);
        restore_and_check(&with, &snap, reference, dir.path());
        assert_eq!(hex(&restore_hash_via_writer(&with, &snap)), hex(reference));
        let out = dir.path().join(format!("salvaged-{}.db", unique()));
        let s = with.salvage_to_path(&snap, &out, false, false).unwrap();
        assert!(
            s.lost.is_empty() && s.image_matches,
            "salvage lost {:?}",
            s.lost
        );
        assert_eq!(hex(&hash_file(&out)), hex(reference));
    }
}

/// A page changed at every backup gets skip-delta bases (backup/skip.rs):
/// version v (the v-th backup since a whole copy) is a delta against version
/// v with its lowest set bit cleared, so its chain is popcount(v) deltas deep,
/// never over 5, and version 32 is not made against the chain. Every snapshot
/// restores exactly.
#[test]
fn a_page_changed_at_every_backup_gets_skip_delta_bases() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bank.db");
    let conn = accounts(&db, 2_000);
    let with = store(dir.path(), "with", true);
    let at = dir.path().join("with");
    let names = |d: &Path| -> std::collections::BTreeSet<std::path::PathBuf> {
        let index = d.join("index");
        match index.is_dir() {
            true => walk(&index).into_iter().collect(),
            false => Default::default(),
        }
    };
    let mut taken = Vec::new();
    for step in 0..33u32 {
        if step > 0 {
            conn.execute("UPDATE acct SET balance = balance + 1 WHERE id = 1", [])
                .unwrap();
        }
        let before = names(&at);
        let report = backup(&with, &db);
        let depths: Vec<u8> = names(&at)
            .difference(&before)
            .flat_map(|p| {
                IndexBody::decode(&std::fs::read(p).unwrap())
                    .unwrap()
                    .deltas
            })
            .map(|d| d.depth)
            .collect();
        // The chunks that change (the row's page, page 1's change counter)
        // are all at the version's depth.
        match step {
            0 => assert!(depths.is_empty()),
            1..=31 => assert!(
                !depths.is_empty() && depths.iter().all(|&d| d as u32 == step.count_ones()),
                "step {step}: version {step} at depths {depths:?}"
            ),
            // Version 32 is not made against its chain: stored whole, or
            // against a content-found base (another position's chunk) below
            // the bound, which starts the next cycle.
            _ => assert!(depths.iter().all(|&d| d <= 5), "step {step}: {depths:?}"),
        }
        taken.push((report, reference_hash(&db, dir.path())));
    }
    let with = Store::open(&at).unwrap();
    for (report, reference) in &taken {
        restore_and_check(&with, &snapshot_of(&with, report), reference, dir.path());
    }
}

fn walk(p: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// `repair index` on a store with deltas: a damaged index object is
/// quarantined and its chunks re-indexed from the packs, each delta with its
/// base-table row rebuilt (base from the blob, depth from its chain); the other
/// snapshots restore, and later backups make deltas against the re-indexed
/// chunks.
#[test]
fn repair_index_rebuilds_the_base_tables_of_deltas() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bank.db");
    let conn = accounts(&db, 3000);
    let with = store(dir.path(), "with", true);
    let mut rng = Rng(6);
    let mut taken = Vec::new();
    for step in 0..5 {
        if step > 0 {
            update_some(&conn, &mut rng, 3000, 20);
        }
        taken.push((backup(&with, &db), reference_hash(&db, dir.path())));
        // Index objects of one backup apart in time (found newest below).
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // What the deltas saved, as `stats` adds it up from the base tables.
    let saved = with.stats(None).unwrap().deltas;
    assert!(saved.chunks > 0 && saved.saved_bytes > 0, "{saved:?}");
    assert_eq!(saved.saved_bytes, saved.whole_bytes - saved.stored_bytes);
    // Small deltas outside the measured sample have no whole length: the
    // rebuilt rows below must say 0 for the same ones.
    assert!(saved.unmeasured_chunks > 0 && saved.estimated, "{saved:?}");

    // Damage the newest index object (the last backup's, with its deltas).
    let newest = walk(&dir.path().join("with/index"))
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .unwrap();
    let mut bytes = std::fs::read(&newest).unwrap();
    assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), 2);
    let n = bytes.len();
    bytes[n / 2] ^= 0x40;
    std::fs::write(&newest, bytes).unwrap();

    let report = with.repair_index(false, std::time::Duration::ZERO).unwrap();
    assert_eq!(report.quarantined.len(), 1, "{report:?}");
    // The damaged bytes are kept whole under damaged/.
    assert!(dir
        .path()
        .join("with/damaged")
        .join(&report.quarantined[0])
        .is_file());
    assert!(report.chunks_reindexed > 0, "{report:?}");
    assert!(report.unchecked.is_empty(), "{report:?}");
    let rebuilt = report.new_index.expect("a new index object");
    let bytes = std::fs::read(
        dir.path()
            .join("with")
            .join(pagesnap_core::layout::index(&rebuilt)),
    )
    .unwrap();
    assert_eq!(
        u16::from_le_bytes([bytes[8], bytes[9]]),
        2,
        "deltas re-indexed with rows"
    );
    let body = IndexBody::decode(&bytes).unwrap();
    assert!(!body.deltas.is_empty());
    delta_census(&dir.path().join("with"));

    // The rebuilt rows measure the whole lengths again (whole_len.rs): the
    // same as the backup's, so the same object under the same name.
    let with = Store::open(dir.path().join("with")).unwrap();
    assert_eq!(with.stats(None).unwrap().deltas, saved);
    assert_eq!(
        report.quarantined[0],
        pagesnap_core::layout::index(&rebuilt)
    );
    // The snapshots that do not name the damaged object restore.
    for (r, reference) in &taken[..taken.len() - 1] {
        let snap = snapshot_of(&with, r);
        restore_and_check(&with, &snap, reference, dir.path());
    }
    // A later backup makes deltas against what was re-indexed, and restores.
    update_some(&conn, &mut rng, 3000, 20);
    let after = backup(&with, &db);
    assert!(after.stats.delta_chunks > 0);
    let snap = snapshot_of(&with, &after);
    restore_and_check(&with, &snap, &reference_hash(&db, dir.path()), dir.path());
    let read_data = VerifyOptions {
        read_data: Some(DataSubset::All),
        ..VerifyOptions::default()
    };
    // Only the snapshot that named the damaged object is broken.
    let report = with.verify(&read_data).unwrap();
    let broken: std::collections::BTreeSet<_> = report
        .problems
        .iter()
        .flat_map(|p| p.snapshots.iter().copied())
        .collect();
    assert!(
        broken
            .iter()
            .all(|s| *s == taken.last().unwrap().0.snapshot),
        "{:#?}",
        report.problems
    );
}

/// `repair index --read-data` on a store with deltas: a damaged delta that is
/// the base of later deltas is found, and so are its dependants (each named
/// with its base): every pack holding one is kept whole under `damaged/` and
/// rewritten with its sound chunks (deltas with their base-table rows). The
/// lost chunks are then located nowhere, so the next backup stores the pages
/// again and the newest snapshot before the repair restores byte for byte.
#[test]
fn repair_index_reading_data_drops_a_damaged_base_and_its_dependants() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bank.db");
    let conn = accounts(&db, 3000);
    let path = dir.path().join("with");
    let with = store(dir.path(), "with", true);
    let mut rng = Rng(8);
    let mut taken = Vec::new();
    for step in 0..6 {
        if step > 0 {
            update_some(&conn, &mut rng, 3000, 20);
        }
        taken.push((backup(&with, &db), reference_hash(&db, dir.path())));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The index objects in the order the backups wrote them.
    let mut objects = walk(&path.join("index"));
    objects.sort_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap());
    let bodies: Vec<IndexBody> = objects
        .iter()
        .map(|p| IndexBody::decode(&std::fs::read(p).unwrap()).unwrap())
        .collect();
    // A delta of the third backup that the fourth one's deltas are made
    // against (skip-delta bases: version 3 against version 2).
    let later_bases: std::collections::HashSet<_> =
        bodies[3].deltas.iter().map(|d| d.base).collect();
    let victim = bodies[2]
        .entries
        .iter()
        .find(|e| e.entry.codec == Codec::ZstdDelta && later_bases.contains(&e.entry.id))
        .expect("a delta that is a base");
    let pack = bodies[2].packs[victim.pack as usize].id;
    let pack_path = path.join(pagesnap_core::layout::pack(&pack));
    let mut bytes = std::fs::read(&pack_path).unwrap();
    let last = (victim.entry.offset + victim.entry.stored_len - 2) as usize;
    bytes[last] ^= 0x5a;
    std::fs::write(&pack_path, bytes).unwrap();

    let report = with
        .repair_index_with(
            &pagesnap_core::repair::RepairIndexOptions {
                dry_run: false,
                read_data: true,
            },
            std::time::Duration::ZERO,
        )
        .unwrap();
    assert!(
        report.read_errors.is_empty() && report.unchecked_packs.is_empty(),
        "{report:#?}"
    );
    let dropped: Vec<_> = report
        .damaged_packs
        .iter()
        .flat_map(|p| &p.dropped)
        .collect();
    assert!(
        dropped.iter().any(|d| d.chunk == victim.entry.id),
        "{report:#?}"
    );
    // Its dependants are dropped too, each naming the damaged base.
    let short = victim.entry.id.short();
    let dependants: Vec<_> = dropped
        .iter()
        .filter(|d| d.problem.contains(&format!("base chunk {short}")))
        .collect();
    assert!(!dependants.is_empty(), "{report:#?}");
    assert!(
        report.damaged_packs.len() >= 2,
        "the dependants' packs too: {report:#?}"
    );
    for p in &report.damaged_packs {
        assert!(
            path.join(&p.moved_to).is_file(),
            "{} kept whole",
            p.moved_to
        );
        assert!(!path.join(&p.key).exists() || p.whole_again);
    }
    // Every delta the new index object locates has its row, within bounds.
    let (_, deepest) = delta_census(&path);
    assert!(deepest <= MAX_DELTA_DEPTH);

    // The next backup stores the lost pages again: the newest snapshot before
    // the repair (same database) restores, and so does the new one.
    let with = Store::open(&path).unwrap();
    let again = backup(&with, &db);
    let (last_report, last_ref) = taken.last().unwrap();
    for (r, reference) in [(last_report, last_ref), (&again, last_ref)] {
        let snap = snapshot_of(&with, r);
        restore_and_check(&with, &snap, reference, dir.path());
    }
    // What stays broken is only what the database no longer holds, and
    // verify reading data names it as damage, nothing unreadable.
    let report = with
        .verify(&VerifyOptions {
            read_data: Some(DataSubset::All),
            ..VerifyOptions::default()
        })
        .unwrap();
    assert!(!report.broken.contains(&last_report.snapshot));
    assert!(!report.broken.contains(&again.snapshot));
    assert!(
        report.unreadable().next().is_none(),
        "{:#?}",
        report.problems
    );
}

/// An index object replaced by one of the same entries under another name (as
/// `repair index` does when its rebuilt object is not byte for byte the damaged
/// one): the last snapshot's map names an object that is gone. The next backup
/// must not build its map on that parent through this machine's index cache
/// (the short way): it takes the long way, records a full page map, and
/// restores; the one after it has deltas again.
#[test]
fn a_backup_after_its_parents_index_object_is_gone_restores() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bank.db");
    let conn = accounts(&db, 3000);
    let with = store(dir.path(), "with", true);
    let mut rng = Rng(8);
    for step in 0..4 {
        if step > 0 {
            update_some(&conn, &mut rng, 3000, 20);
        }
        let r = backup(&with, &db);
        if step > 1 {
            assert!(r.index_cached, "step {step} took the long way");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The newest index object (with deltas), under another name: a row's
    // whole length changed, the entries the same.
    let newest = walk(&dir.path().join("with/index"))
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .unwrap();
    let mut body = IndexBody::decode(&std::fs::read(&newest).unwrap()).unwrap();
    assert!(!body.deltas.is_empty());
    body.deltas[0].whole_len = 0;
    let bytes = body.encode_as(2).unwrap();
    let renamed = pagesnap_core::Id::of_object(&bytes);
    std::fs::write(
        dir.path()
            .join("with")
            .join(pagesnap_core::layout::index(&renamed)),
        &bytes,
    )
    .unwrap();
    std::fs::remove_file(&newest).unwrap();

    update_some(&conn, &mut rng, 3000, 20);
    let r = backup(&with, &db);
    assert!(!r.index_cached, "the short way built on a broken parent");
    assert!(
        r.warnings.iter().any(|w| w.contains("full page map")),
        "{:?}",
        r.warnings
    );
    let snap = snapshot_of(&with, &r);
    restore_and_check(&with, &snap, &reference_hash(&db, dir.path()), dir.path());
    update_some(&conn, &mut rng, 3000, 20);
    let r = backup(&with, &db);
    assert!(r.stats.delta_chunks > 0);
    let snap = snapshot_of(&with, &r);
    restore_and_check(&with, &snap, &reference_hash(&db, dir.path()), dir.path());
}

/// `verify --read-data` of `store`, which must find no problem.
fn reads_clean(store: &Store) -> pagesnap_core::VerifyReport {
    let report = store
        .verify(&VerifyOptions {
            read_data: Some(DataSubset::All),
            ..VerifyOptions::default()
        })
        .unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    report
}

/// Bytes in the packs of the store at `dir`.
fn pack_bytes(dir: &Path) -> u64 {
    walk(&dir.join("packs"))
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

/// Snapshots of the accounts table after `steps` rounds of updates, in a
/// store with deltas at `dir/with`, each with the reference hash of its image.
fn updated_store(dir: &Path, steps: usize) -> (Store, Vec<(BackupReport, Hash)>) {
    let db = dir.join("bank.db");
    let conn = accounts(&db, 3000);
    let with = store(dir, "with", true);
    let mut rng = Rng(8);
    let mut taken = Vec::new();
    for step in 0..steps {
        if step > 0 {
            update_some(&conn, &mut rng, 3000, 20);
        }
        taken.push((backup(&with, &db), reference_hash(&db, dir)));
    }
    assert!(taken.iter().any(|(r, _)| r.stats.delta_chunks > 0));
    (with, taken)
}

/// Every snapshot of `dst` restores to the image of the backup it copies.
fn restores_as_taken(dst: &Store, taken: &[(BackupReport, Hash)], dir: &Path) {
    for s in dst.snapshots().unwrap() {
        let (_, reference) = taken
            .iter()
            .find(|(r, _)| r.image_hash == s.manifest.image_hash)
            .unwrap();
        restore_and_check(dst, &s, reference, dir);
    }
}

/// `copy` into a store without deltas decodes each delta through its chain
/// and stores it whole: the copies restore byte for byte, and the store stays
/// a version-1 store.
#[test]
fn copy_into_a_store_without_deltas_stores_whole_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let (with, taken) = updated_store(dir.path(), 5);
    let dst = store(dir.path(), "plain", false);
    let report = pagesnap_core::copy::copy(&with, &dst, &CopyOptions::default()).unwrap();
    assert_eq!(report.copied(), taken.len());
    assert_eq!(delta_census(&dir.path().join("plain")).0, 0);
    restores_as_taken(&dst, &taken, dir.path());
    for p in walk(&dir.path().join("plain/packs")) {
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(
            u16::from_le_bytes([bytes[8], bytes[9]]),
            1,
            "{}",
            p.display()
        );
    }
}

/// `copy` into a store with deltas copies a delta as it is when its base is
/// there: copying every snapshot keeps the source's saving (as many deltas,
/// about as many pack bytes), the copies restore byte for byte and verify
/// reading every chain, and `prune` there keeps the bases of the deltas its
/// kept snapshots need. A delta whose base the destination lacks (only the
/// newest snapshot copied) is stored whole.
#[test]
fn copy_into_a_store_with_deltas_carries_deltas_whose_base_is_there() {
    let dir = tempfile::tempdir().unwrap();
    let (with, taken) = updated_store(dir.path(), 8);
    let (src_deltas, src_deepest) = delta_census(&dir.path().join("with"));

    let dst = store(dir.path(), "other", true);
    let report = pagesnap_core::copy::copy(&with, &dst, &CopyOptions::default()).unwrap();
    assert_eq!(report.copied(), taken.len());
    let (deltas, deepest) = delta_census(&dir.path().join("other"));
    assert_eq!(deltas, src_deltas, "every delta is copied as one");
    assert!(deepest <= src_deepest);
    let (src_bytes, dst_bytes) = (
        pack_bytes(&dir.path().join("with")),
        pack_bytes(&dir.path().join("other")),
    );
    assert!(
        dst_bytes * 100 <= src_bytes * 102,
        "{dst_bytes} against {src_bytes}"
    );
    restores_as_taken(&dst, &taken, dir.path());
    reads_clean(&dst);

    // Forgetting the older half and pruning keeps what the newer half needs.
    let snaps = dst.snapshots().unwrap();
    let mut by_time = snaps.clone();
    by_time.sort_by_key(|s| s.time());
    let old: Vec<_> = by_time[..4].iter().map(|s| s.id).collect();
    dst.forget_snapshots(&old, false).unwrap();
    let pruned = dst
        .prune(&PruneOptions {
            max_unused: 0.0,
            ..PruneOptions::default()
        })
        .unwrap();
    assert!(pruned.packs_written > 0, "{pruned:?}");
    restores_as_taken(&dst, &taken, dir.path());
    reads_clean(&dst);

    // Only the newest, into a fresh store: its deltas' bases are not there.
    let fresh = store(dir.path(), "fresh", true);
    let latest = CopyOptions {
        snapshots: vec!["latest".into()],
        ..CopyOptions::default()
    };
    let report = pagesnap_core::copy::copy(&with, &fresh, &latest).unwrap();
    assert_eq!(report.copied(), 1);
    assert_eq!(delta_census(&dir.path().join("fresh")).0, 0);
    restores_as_taken(&fresh, &taken, dir.path());
}

/// A chunk stored twice, once as a delta and once whole (two machines
/// writing to one store, one of them without the base in its base cache):
/// readers and `prune` take the whole copy, never the delta, whatever order
/// the index objects load in, so a chain is never deeper than the one its
/// writer recorded. Made here by putting a second store's packs and index
/// object (one backup of the newest image: every chunk whole) into the store
/// with deltas, as a concurrent writer would have.
#[test]
fn of_a_chunk_stored_twice_the_whole_copy_is_the_one_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (with, taken) = updated_store(dir.path(), 6);
    let second = store(dir.path(), "second", true);
    backup(&second, &dir.path().join("bank.db"));
    let whole: std::collections::HashSet<_> = index_objects(&dir.path().join("second"))
        .iter()
        .flat_map(|b| b.entries.iter().map(|e| e.entry.id))
        .collect();
    let doubled: Vec<_> = index_objects(&dir.path().join("with"))
        .iter()
        .flat_map(|b| b.entries.clone())
        .filter(|e| e.entry.codec == Codec::ZstdDelta && whole.contains(&e.entry.id))
        .map(|e| e.entry.id)
        .collect();
    assert!(doubled.len() > 20, "{}", doubled.len());
    let deltas_before = with.stats(None).unwrap().deltas.chunks;
    for folder in ["packs", "index"] {
        for f in walk(&dir.path().join("second").join(folder)) {
            let rel = f.strip_prefix(dir.path().join("second")).unwrap();
            let to = dir.path().join("with").join(rel);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(&f, &to).unwrap();
        }
    }
    // The index keeps the whole copies: those chunks no longer count as deltas.
    let deltas_after = with.stats(None).unwrap().deltas.chunks;
    assert_eq!(deltas_after, deltas_before - doubled.len() as u64);
    restores_as_taken(&with, &taken, dir.path());

    // Prune keeps one copy of each: the whole one.
    with.prune(&PruneOptions {
        max_unused: 0.0,
        ..PruneOptions::default()
    })
    .unwrap();
    // Index objects still name the dropped copies (page maps name chunks
    // through them); only the copies in packs that exist count.
    let with_dir = dir.path().join("with");
    let left: Vec<_> = index_objects(&with_dir)
        .iter()
        .flat_map(|b| {
            b.entries
                .iter()
                .filter(|e| {
                    with_dir
                        .join(pagesnap_core::layout::pack(&b.packs[e.pack as usize].id))
                        .exists()
                })
                .copied()
                .collect::<Vec<_>>()
        })
        .filter(|e| doubled.contains(&e.entry.id))
        .collect();
    assert!(!left.is_empty());
    assert!(
        left.iter().all(|e| e.entry.codec != Codec::ZstdDelta),
        "a delta copy was kept: {:?}",
        left.iter().find(|e| e.entry.codec == Codec::ZstdDelta)
    );
    assert_eq!(with.stats(None).unwrap().deltas.chunks, deltas_after);
    restores_as_taken(&with, &taken, dir.path());
    reads_clean(&with);
}

/// `verify --read-data` decodes every delta through its chain: a sound store
/// has no problem; damage to the chunks the first backup stored (the roots of
/// the chains) is reported, and the deltas made against them name their base
/// (in verify's problems and in a salvage restore's lost chunks).
#[test]
fn verify_reading_data_follows_chains_and_names_a_damaged_base() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bank.db");
    let conn = accounts(&db, 3000);
    let with = store(dir.path(), "with", true);
    let mut rng = Rng(3);
    for step in 0..6 {
        if step > 0 {
            update_some(&conn, &mut rng, 3000, 40);
        }
        backup(&with, &db);
    }
    let report = reads_clean(&with);
    assert!(report.chunks_read > 0);

    // The first backup's pack is the one of version 1 (later ones hold deltas):
    // flip a byte every 1,000 in its blobs (not its trailer).
    let mut damaged = 0;
    for p in walk(&dir.path().join("with/packs")) {
        let mut bytes = std::fs::read(&p).unwrap();
        if u16::from_le_bytes([bytes[8], bytes[9]]) != 1 {
            continue;
        }
        let count = u32::from_le_bytes(
            bytes[bytes.len() - 32..bytes.len() - 28]
                .try_into()
                .unwrap(),
        );
        let blobs_end = bytes.len() - 32 - 48 * count as usize;
        for at in (100..blobs_end).step_by(1000) {
            bytes[at] ^= 0x55;
        }
        std::fs::write(&p, bytes).unwrap();
        damaged += 1;
    }
    assert_eq!(damaged, 1);
    let read_data = VerifyOptions {
        read_data: Some(DataSubset::All),
        ..VerifyOptions::default()
    };
    let report = with.verify(&read_data).unwrap();
    assert!(!report.problems.is_empty());
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.detail.contains("base chunk")),
        "{:#?}",
        report.problems
    );
    // A salvage restore of the newest snapshot writes zeros where a chunk or
    // its base is damaged, and names the base for the deltas.
    let newest = with
        .snapshots()
        .unwrap()
        .into_iter()
        .max_by_key(|s| s.time())
        .unwrap();
    let out = dir.path().join("salvaged.db");
    let s = with.salvage_to_path(&newest, &out, false, false).unwrap();
    assert!(!s.lost.is_empty() && !s.image_matches);
    assert!(
        s.lost
            .iter()
            .any(|l| format!("{l:?}").contains("base chunk")),
        "{:#?}",
        s.lost
    );
}

/// Forgetting snapshots and pruning (every pack with a dead byte rewritten)
/// keeps every base a remaining delta needs: all remaining snapshots restore
/// byte for byte, and later backups go on making deltas against them.
#[test]
fn forget_and_prune_keep_the_bases_remaining_snapshots_need() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bank.db");
    let rows = 4000;
    let conn = accounts(&db, rows);
    // Small packs, so that prune has packs to delete, rewrite and keep.
    let with = Store::init(
        dir.path().join("with"),
        &InitOptions {
            deltas: true,
            pack_target_size: 64 << 10,
            ..InitOptions::default()
        },
    )
    .unwrap();
    let mut rng = Rng(5);
    let mut taken = Vec::new();
    for step in 0..14 {
        if step > 0 {
            update_some(&conn, &mut rng, rows, 30);
        }
        let r = backup(&with, &db);
        taken.push((r, reference_hash(&db, dir.path())));
    }
    // Forget most snapshots, the first (whose chunks are the roots of the
    // chains) among them; keep a few, the newest too.
    let keep = [4usize, 9, 13];
    let forget: Vec<_> = (0..taken.len())
        .filter(|i| !keep.contains(i))
        .map(|i| taken[i].0.snapshot)
        .collect();
    with.forget_snapshots(&forget, false).unwrap();
    let report = with
        .prune(&PruneOptions {
            max_unused: 0.0,
            ..PruneOptions::default()
        })
        .unwrap();
    assert!(
        report.packs_deleted + report.packs_rewritten > 0,
        "{report:?}"
    );
    let with = Store::open(dir.path().join("with")).unwrap();
    for &i in &keep {
        let snap = snapshot_of(&with, &taken[i].0);
        restore_and_check(&with, &snap, &taken[i].1, dir.path());
    }
    // Index objects still account for every delta with its row.
    delta_census(&dir.path().join("with"));
    // Later backups make deltas against what prune kept, and restore.
    update_some(&conn, &mut rng, rows, 30);
    let after = backup(&with, &db);
    assert!(after.stats.delta_chunks > 0);
    let snap = snapshot_of(&with, &after);
    restore_and_check(&with, &snap, &reference_hash(&db, dir.path()), dir.path());
    // A second prune (nothing forgotten) changes nothing that matters.
    with.prune(&PruneOptions {
        max_unused: 0.0,
        ..PruneOptions::default()
    })
    .unwrap();
    for &i in &keep {
        let snap = snapshot_of(&with, &taken[i].0);
        restore_and_check(&with, &snap, &taken[i].1, dir.path());
    }
}

/// What forgetting a snapshot would free (`forget --dry-run`) counts the bases
/// other snapshots' deltas need as needed, not as free: after one step whose
/// changed pages all became deltas against the first snapshot's chunks,
/// forgetting the first frees nothing (without deltas, its old pages).
#[test]
fn exclusive_bytes_count_bases_as_needed() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bank.db");
    let conn = accounts(&db, 3000);
    let with = store(dir.path(), "with", true);
    let without = store(dir.path(), "without", false);
    let first = (backup(&with, &db), backup(&without, &db));
    let mut rng = Rng(4);
    update_some(&conn, &mut rng, 3000, 20);
    let second = backup(&with, &db);
    backup(&without, &db);
    assert_eq!(
        second.stats.delta_chunks, second.stats.new_chunks,
        "{:?}",
        second.stats
    );
    assert_eq!(with.exclusive_bytes().unwrap()[&first.0.snapshot], 0);
    assert!(without.exclusive_bytes().unwrap()[&first.1.snapshot] > 0);
}

/// `enable_deltas` on a store made without them (the mixed store): its config
/// becomes version 2, the chunks already stored stay as they are, later
/// backups make deltas against them, and every snapshot, old and new,
/// restores byte for byte; a second call changes nothing.
#[test]
fn a_store_upgraded_to_deltas_restores_old_and_new_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bank.db");
    let conn = accounts(&db, 3000);
    let old = store(dir.path(), "s", false);
    let mut rng = Rng(11);
    let mut taken = Vec::new();
    for step in 0..3 {
        if step > 0 {
            update_some(&conn, &mut rng, 3000, 20);
        }
        let r = backup(&old, &db);
        assert_eq!(r.stats.delta_chunks, 0);
        taken.push((r, reference_hash(&db, dir.path())));
    }
    let packs_before = walk(&dir.path().join("s/packs"));
    let r = old.enable_deltas(std::time::Duration::ZERO).unwrap();
    assert!(r.changed && r.format_version == 2, "{r:?}");
    let config = std::fs::read(dir.path().join("s/config")).unwrap();
    assert_eq!(u16::from_le_bytes([config[8], config[9]]), 2);
    let upgraded = Store::open(dir.path().join("s")).unwrap();
    assert!(upgraded.config().deltas);
    assert_eq!(upgraded.config().store_id, old.config().store_id);
    // Old chunks untouched.
    for p in &packs_before {
        assert!(p.is_file(), "{} still there", p.display());
    }
    for _ in 0..3 {
        update_some(&conn, &mut rng, 3000, 20);
        let r = backup(&upgraded, &db);
        assert!(r.stats.delta_chunks > 0, "{:?}", r.stats);
        taken.push((r, reference_hash(&db, dir.path())));
    }
    restore_each(&upgraded, &taken, dir.path());
    reads_clean(&upgraded);
    let again = upgraded.enable_deltas(std::time::Duration::ZERO).unwrap();
    assert!(!again.changed && again.format_version == 2, "{again:?}");
    assert_eq!(std::fs::read(dir.path().join("s/config")).unwrap(), config);
}

/// A store made without deltas keeps its version-1 config; one made with them
/// reopens with the flag.
#[test]
fn the_flag_is_kept_in_the_config() {
    let dir = tempfile::tempdir().unwrap();
    store(dir.path(), "with", true);
    store(dir.path(), "without", false);
    assert!(
        Store::open(dir.path().join("with"))
            .unwrap()
            .config()
            .deltas
    );
    assert!(
        !Store::open(dir.path().join("without"))
            .unwrap()
            .config()
            .deltas
    );
    let config = std::fs::read(dir.path().join("without/config")).unwrap();
    assert_eq!(u16::from_le_bytes([config[8], config[9]]), 1);
    let config = std::fs::read(dir.path().join("with/config")).unwrap();
    assert_eq!(u16::from_le_bytes([config[8], config[9]]), 2);
}

#[derive(Clone, Debug)]
enum Op {
    Update { n: u8 },
    Insert { n: u8 },
    Delete { n: u8 },
    Vacuum,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u8..60).prop_map(|n| Op::Update { n }),
        2 => (1u8..60).prop_map(|n| Op::Insert { n }),
        1 => (1u8..60).prop_map(|n| Op::Delete { n }),
        1 => Just(Op::Vacuum),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PAGESNAP_PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(4)
    ))]

    /// Random sequences of changes, a backup after each: every snapshot of a
    /// store with deltas (chunks of 1 or 4 pages) restores byte for byte, and
    /// chains stay in bounds. The snapshots from a random one on, copied into
    /// another store with deltas (deltas whose base went along carried, the
    /// others stored whole), restore byte for byte there too.
    #[test]
    fn random_change_sequences_restore_exactly(
        seed in any::<u64>(),
        chunk_pages in prop_oneof![Just(1u32), Just(4u32)],
        ops in proptest::collection::vec(op(), 1..14),
        copy_from in any::<prop::sample::Index>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("bank.db");
        let conn = accounts(&db, 2000);
        let init = |name: &str| {
            let opts = InitOptions {
                deltas: true,
                chunk_pages,
                ..InitOptions::default()
            };
            Store::init(dir.path().join(name), &opts).unwrap()
        };
        let with = init("with");
        let mut rng = Rng(seed);
        let mut taken = vec![(backup(&with, &db), reference_hash(&db, dir.path()))];
        for op in &ops {
            match *op {
                Op::Update { n } => update_some(&conn, &mut rng, 2000, n as usize),
                Op::Insert { n } => {
                    for _ in 0..n {
                        conn.execute(
                            "INSERT INTO acct(owner, balance) VALUES (?1, 0)",
                            params![rng.text(80)],
                        )
                        .unwrap();
                    }
                }
                Op::Delete { n } => {
                    let from = rng.below(2000) as i64;
                    conn.execute(
                        "DELETE FROM acct WHERE id >= ?1 AND id < ?2",
                        params![from, from + n as i64],
                    )
                    .unwrap();
                }
                Op::Vacuum => conn.execute_batch("VACUUM").unwrap(),
            }
            taken.push((backup(&with, &db), reference_hash(&db, dir.path())));
        }
        let (_, deepest) = delta_census(&dir.path().join("with"));
        prop_assert!(deepest <= MAX_DELTA_DEPTH);
        restore_each(&with, &taken, dir.path());

        let copied = &taken[copy_from.index(taken.len())..];
        let other = init("other");
        let opts = CopyOptions {
            snapshots: copied.iter().map(|(r, _)| r.snapshot.to_string()).collect(),
            ..CopyOptions::default()
        };
        let report = pagesnap_core::copy::copy(&with, &other, &opts).unwrap();
        prop_assert_eq!(report.copied(), copied.len());
        let (_, deepest) = delta_census(&dir.path().join("other"));
        prop_assert!(deepest <= MAX_DELTA_DEPTH);
        restores_as_taken(&other, copied, dir.path());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PAGESNAP_PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(4)
    ))]

    /// Backups of random updates, with forgets of random subsets of the
    /// snapshots (the newest and the roots of chains among them) each followed
    /// by a prune that rewrites every pack with a dead byte: no chain a kept
    /// snapshot needs is ever broken. Every kept snapshot restores byte for byte
    /// after every prune, and later backups go on making deltas.
    #[test]
    fn random_forgets_and_prunes_never_break_a_chain(
        seed in any::<u64>(),
        events in proptest::collection::vec((1u8..40, any::<bool>(), any::<u32>()), 3..12),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("bank.db");
        let rows = 3000;
        let conn = accounts(&db, rows);
        let path = dir.path().join("with");
        Store::init(
            &path,
            &InitOptions {
                deltas: true,
                pack_target_size: 64 << 10,
                ..InitOptions::default()
            },
        )
        .unwrap();
        let mut rng = Rng(seed);
        // The kept snapshots: (report, reference hash of the image).
        let mut kept = Vec::new();
        let mut deltas_made = 0;
        for (k, &(n, forget, mask)) in events.iter().enumerate() {
            let with = Store::open(&path).unwrap();
            if k > 0 {
                update_some(&conn, &mut rng, rows, n as usize);
            }
            let r = backup(&with, &db);
            deltas_made += r.stats.delta_chunks;
            kept.push((r, reference_hash(&db, dir.path())));
            if !forget {
                continue;
            }
            // Forget the snapshots whose bit is set (at least one is kept).
            let (gone, stay): (Vec<_>, Vec<_>) = kept
                .drain(..)
                .enumerate()
                .partition(|(i, _)| mask >> (i % 32) & 1 == 1);
            let mut stay: Vec<_> = stay.into_iter().map(|(_, t)| t).collect();
            let mut gone: Vec<_> = gone.into_iter().map(|(_, t)| t).collect();
            if stay.is_empty() {
                stay.push(gone.remove(0));
            }
            let ids: Vec<_> = gone.iter().map(|(r, _)| r.snapshot).collect();
            if !ids.is_empty() {
                with.forget_snapshots(&ids, false).unwrap();
            }
            with.prune(&PruneOptions {
                max_unused: 0.0,
                ..PruneOptions::default()
            })
            .unwrap();
            kept = stay;
            let with = Store::open(&path).unwrap();
            for (report, reference) in &kept {
                let snap = snapshot_of(&with, report);
                restore_and_check(&with, &snap, reference, dir.path());
            }
        }
        prop_assert!(deltas_made > 0, "no backup made a delta");
        let (_, deepest) = delta_census(&path);
        prop_assert!(deepest <= MAX_DELTA_DEPTH);
        let with = Store::open(&path).unwrap();
        let read_data = VerifyOptions {
            read_data: Some(DataSubset::All),
            ..VerifyOptions::default()
        };
        let report = with.verify(&read_data).unwrap();
        prop_assert!(report.problems.is_empty(), "{:?}", report.problems);
        for (report, reference) in &kept {
            let snap = snapshot_of(&with, report);
            restore_and_check(&with, &snap, reference, dir.path());
        }
    }
}

/// On a store that pays per request (S3) with the base cache turned off
/// (`base_cache: Some(0)`), backups store changed chunks whole: a base from
/// the store would cost a request (the cache: tests/library/base_cache.rs). Later
/// local backups of the same store make deltas against those chunks.
#[test]
fn a_store_that_pays_per_request_without_a_base_cache_stores_chunks_whole() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bank.db");
    let conn = accounts(&db, 3000);
    store(dir.path(), "remote", true);
    let (backend, _) = crate::base_cache::Counting::new(dir.path().join("remote"));
    let remote = Store::open_backend(std::sync::Arc::new(backend)).unwrap();
    assert!(remote.config().deltas);
    let opts = pagesnap_core::BackupOptions {
        base_cache: Some(0),
        ..Default::default()
    };
    let mut rng = Rng(4);
    let mut taken = Vec::new();
    for step in 0..4 {
        if step > 0 {
            update_some(&conn, &mut rng, 3000, 20);
        }
        let r = remote.backup_path(&db, &opts).unwrap();
        assert_eq!(r.stats.delta_chunks, 0);
        taken.push((r, reference_hash(&db, dir.path())));
    }
    assert_eq!(delta_census(&dir.path().join("remote")).0, 0);
    restore_each(&remote, &taken, dir.path());
    // The same store opened locally goes on with deltas against the chunks
    // stored whole: a mixed store, every snapshot of which restores.
    let local = Store::open(dir.path().join("remote")).unwrap();
    for _ in 0..3 {
        update_some(&conn, &mut rng, 3000, 20);
        let r = backup(&local, &db);
        assert!(r.stats.delta_chunks > 0);
        taken.push((r, reference_hash(&db, dir.path())));
    }
    restore_each(&local, &taken, dir.path());
}

//! criterion benches of the hot paths, each beside the reference it must beat,
//! measured in the same process:
//!
//! * `chunk_hash`: chunk ids (keyed blake3 of a 4 KiB page) and plain blake3;
//! * `pack`: building a pack of compressed pages, and decoding one back;
//! * `capture_100MiB`: a first backup, an unchanged backup and a 1% backup of a
//!   100 MiB database, against SQLite's backup API copying it to a file (what
//!   `sqlite3 DB ".backup copy.db"` does);
//! * `restore_100MiB`: restoring the snapshot to a file, against zstd decompressing
//!   a `zstd -3` copy of the database to a file.
//!
//! `cargo bench --bench pipeline`; the 1 GiB table of the README comes from
//! `benches/compare.sh`.

#![forbid(unsafe_code)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use pagesnap_core::format::pack::{decode_blob, decode_pack, Codec, PackBuilder};
use pagesnap_core::{BackupOptions, Id, InitOptions, SnapshotSelector, Store};
use rusqlite::{Connection, MAIN_DB};
use std::path::Path;
use std::time::Duration;

/// Pages like the benchmark databases': half random bytes, half zeros.
fn pages(n: usize) -> Vec<Vec<u8>> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..n)
        .map(|_| {
            (0..4096)
                .map(|i| {
                    if i % 1024 < 512 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    } else {
                        0
                    }
                })
                .collect()
        })
        .collect()
}

fn chunk_hash(c: &mut Criterion) {
    let p = pages(256);
    let mut g = c.benchmark_group("chunk_hash");
    g.throughput(Throughput::Bytes((p.len() * 4096) as u64));
    g.bench_function("chunk_id_4KiB", |b| {
        b.iter(|| {
            p.iter()
                .map(|x| Id::of_chunk(x).0[0])
                .fold(0u8, |a, v| a ^ v)
        })
    });
    g.bench_function("blake3_4KiB_reference", |b| {
        b.iter(|| {
            p.iter()
                .map(|x| blake3::hash(x).as_bytes()[0])
                .fold(0u8, |a, v| a ^ v)
        })
    });
    g.finish();
}

fn pack(c: &mut Criterion) {
    let p = pages(1024);
    let compressed: Vec<Vec<u8>> = p
        .iter()
        .map(|x| zstd::bulk::compress(x, 3).expect("zstd"))
        .collect();
    let build = || {
        let mut b = PackBuilder::new();
        for (raw, z) in p.iter().zip(&compressed) {
            b.push(Id::of_chunk(raw), z, raw.len() as u32, Codec::Zstd);
        }
        b.finish()
    };
    let (_, bytes, _) = build();
    let mut g = c.benchmark_group("pack");
    g.throughput(Throughput::Bytes((p.len() * 4096) as u64));
    g.bench_function("compress_and_build_4MiB", |b| {
        b.iter(|| {
            let mut pb = PackBuilder::new();
            for raw in &p {
                let z = zstd::bulk::compress(raw, 3).expect("zstd");
                pb.push(Id::of_chunk(raw), &z, raw.len() as u32, Codec::Zstd);
            }
            pb.finish().1.len()
        })
    });
    g.bench_function("decode_and_check_4MiB", |b| {
        b.iter(|| {
            let entries = decode_pack(&bytes).expect("pack");
            entries
                .iter()
                .map(|e| {
                    let s = &bytes[e.offset as usize..(e.offset + e.stored_len) as usize];
                    let raw = decode_blob(e, s).expect("blob");
                    assert_eq!(Id::of_chunk(&raw), e.id);
                    raw.len()
                })
                .sum::<usize>()
        })
    });
    g.finish();
}

/// A WAL database of about `mib` MiB (rows of 500 random and 500 zero bytes).
fn make_db(path: &Path, mib: u64) -> Connection {
    let conn = Connection::open(path).expect("open");
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER, v BLOB);
         CREATE INDEX tk ON t(k);",
    )
    .expect("schema");
    let rows = mib * 1024 * 1024 / 1050;
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < ?1)
         INSERT INTO t(k, v) SELECT abs(random()) % 1000000, randomblob(500) || zeroblob(500) FROM n",
        [rows as i64],
    )
    .expect("rows");
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .expect("checkpoint");
    conn
}

/// Updates about `pct`% of the rows' payloads.
fn change(conn: &Connection, pct: u64) {
    conn.execute(
        "UPDATE t SET v = randomblob(500) || zeroblob(500) WHERE abs(random()) % 100 < ?1",
        [pct as i64],
    )
    .expect("update");
}

fn capture_and_restore(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("bench.db");
    let conn = make_db(&db, 100);
    let size = std::fs::metadata(&db).expect("db").len();
    let store_dir = dir.path().join("store");
    let store = Store::init(&store_dir, &InitOptions::default()).expect("init");
    let opts = BackupOptions::default();

    let mut g = c.benchmark_group("capture_100MiB");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(20))
        .throughput(Throughput::Bytes(size));
    g.bench_function("reference_sqlite_backup_to_file", |b| {
        let copy = dir.path().join("copy.db");
        b.iter(|| {
            let _ = std::fs::remove_file(&copy);
            conn.backup(MAIN_DB, &copy, None::<fn(rusqlite::backup::Progress)>)
                .expect("backup");
        })
    });
    g.bench_function("first_backup", |b| {
        b.iter_batched(
            || {
                let d = tempfile::tempdir_in(dir.path()).expect("tempdir");
                let s = Store::init(d.path().join("s"), &InitOptions::default()).expect("init");
                (d, s)
            },
            |(_d, s)| s.backup_path(&db, &opts).expect("backup"),
            BatchSize::PerIteration,
        )
    });
    store.backup_path(&db, &opts).expect("backup");
    g.bench_function("unchanged_backup", |b| {
        b.iter(|| store.backup_path(&db, &opts).expect("backup"))
    });
    g.bench_function("backup_after_1pct_change", |b| {
        b.iter_batched(
            || change(&conn, 1),
            |()| store.backup_path(&db, &opts).expect("backup"),
            BatchSize::PerIteration,
        )
    });
    g.finish();

    let snap = store
        .select(&SnapshotSelector::Latest {
            name: None,
            at: None,
        })
        .expect("snapshot");
    let image = std::fs::read(&db).expect("db");
    let zst = zstd::bulk::compress(&image, 3).expect("zstd");
    let mut g = c.benchmark_group("restore_100MiB");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(15))
        .throughput(Throughput::Bytes(size));
    let out = dir.path().join("out.db");
    g.bench_function("reference_zstd_decompress_to_file", |b| {
        b.iter(|| {
            let raw = zstd::bulk::decompress(&zst, image.len()).expect("unzstd");
            std::fs::write(&out, raw).expect("write");
        })
    });
    g.bench_function("restore_to_file", |b| {
        b.iter(|| {
            let _ = std::fs::remove_file(&out);
            store.restore_to_path(&snap, &out, true).expect("restore")
        })
    });
    g.finish();
}

criterion_group!(benches, chunk_hash, pack, capture_and_restore);
criterion_main!(benches);

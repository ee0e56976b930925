//! What the chunk index costs a backup as a store grows to millions of chunks
//! (ignored by default: it writes ~40 bytes of index per chunk and takes a while).
//!
//! ```sh
//! PAGESNAP_SCALE_CHUNKS=10000000 cargo test --release -p pagesnap-core --lib \
//!     index_at_scale -- --ignored --nocapture
//! ```
//!
//! The store is synthetic: index objects of 100,000 random chunk ids each, as a
//! backup of ~400 MiB would write, pointing into sparse pack files of the recorded
//! length (the index load only checks that each pack exists with that length).
//! Then a 16 MiB database is backed up twice into it, the second time after a 1%
//! change. The first backup after chunks are added reads their index objects as
//! the delta of the local index cache and merges them into its sorted file; the
//! second is the steady state of a backup every 10 minutes.

use crate::format::index::{IndexBody, IndexEntry, PackRef};
use crate::format::pack::{Codec, PackEntry, ENTRY_LEN, FOOTER_LEN, HEADER_LEN};
use crate::store::put_index;
use crate::types::Id;
use crate::{layout, Store};
use crate::{BackupOptions, InitOptions};

const PER_OBJECT: usize = 100_000;
const PER_PACK: usize = 8_000;
const STORED: u32 = 2_000;

fn peak_rss_mb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field("VmHWM:") / 1024
}

/// Resets the process's peak RSS (VmHWM) to its current RSS.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Adds `n` synthetic chunks to `store`, `PER_OBJECT` per index object.
fn add_chunks(store: &Store, dir: &std::path::Path, n: usize, seed: &mut u64) {
    // xorshift64*: uniform ids, like blake3's, at a fraction of the cost.
    let mut random_id = || {
        let mut id = [0u8; 32];
        for c in id.chunks_mut(8) {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            c.copy_from_slice(&seed.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        Id(id)
    };
    let mut left = n;
    while left > 0 {
        let count = left.min(PER_OBJECT);
        left -= count;
        let mut body = IndexBody::default();
        for i in 0..count {
            let in_pack = i % PER_PACK;
            if in_pack == 0 {
                let id = random_id();
                let chunks = PER_PACK.min(count - i);
                let len = (HEADER_LEN + FOOTER_LEN) as u64
                    + chunks as u64 * (STORED as u64 + ENTRY_LEN as u64);
                let path = dir.join(layout::pack(&id));
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::File::create(&path).unwrap().set_len(len).unwrap();
                body.packs.push(PackRef {
                    id,
                    len,
                    dict: None,
                });
            }
            body.entries.push(IndexEntry {
                pack: body.packs.len() as u32 - 1,
                entry: PackEntry {
                    id: random_id(),
                    offset: HEADER_LEN as u32 + in_pack as u32 * STORED,
                    stored_len: STORED,
                    raw_len: 4096,
                    codec: Codec::Zstd,
                },
            });
        }
        put_index(store.backend().as_ref(), &body).unwrap();
    }
}

#[test]
#[ignore]
fn index_at_scale() {
    let total: usize = std::env::var("PAGESNAP_SCALE_CHUNKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let dir =
        tempfile::tempdir_in(std::env::var("PAGESNAP_SCALE_DIR").unwrap_or("/var/tmp".into()))
            .unwrap();
    std::env::set_var("PAGESNAP_CACHE_DIR", dir.path().join("cache"));
    let store_dir = dir.path().join("store");
    let store = Store::init(&store_dir, &InitOptions::default()).unwrap();
    let db = dir.path().join("app.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 4000)
         INSERT INTO t SELECT i, randomblob(4000) FROM n;",
    )
    .unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut added = 0;
    println!(
        "chunks in store | after adding: backup (loads and merges them), peak RSS | \
         next backup (1% changed): index load, backup, peak RSS, cached"
    );
    for step in [total / 10, total / 2, total] {
        let t = std::time::Instant::now();
        add_chunks(&store, &store_dir, step - added, &mut seed);
        added = step;
        let made = t.elapsed();
        // The first backup after the synthetic objects appear reads them as a
        // delta and merges them into the local sorted chunk file.
        reset_peak_rss();
        let first = store.backup_path(&db, &BackupOptions::default()).unwrap();
        let first_rss = peak_rss_mb();
        conn.execute_batch("UPDATE t SET v = randomblob(4000) WHERE k % 100 = 0;")
            .unwrap();
        reset_peak_rss();
        let r = store.backup_path(&db, &BackupOptions::default()).unwrap();
        // Every synthetic chunk was loaded (none taken for a lost pack's), so the
        // figures are those of an index of this size.
        assert!(
            r.index_chunks >= step as u64,
            "the backup's index held {} chunks, the store {step} synthetic ones",
            r.index_chunks
        );
        assert!(r.index_cached, "the second backup took the long way");
        let steady = (r.index_load, r.duration, peak_rss_mb());
        println!(
            "{:>12} | {:>7.3} s, {:>5} MB | {:>7.3} s, {:>7.3} s, {:>4} MB, {} (made in {:.1} s)",
            r.index_chunks,
            first.duration.as_secs_f64(),
            first_rss,
            steady.0.as_secs_f64(),
            steady.1.as_secs_f64(),
            steady.2,
            r.index_cached,
            made.as_secs_f64()
        );
        // A prune deleting one index object (and nothing else here): the next
        // backup rewrites the sorted file without it, streaming the old one.
        let victim = std::fs::read_dir(store_dir.join("index"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .max_by_key(|p| std::fs::metadata(p).unwrap().len())
            .unwrap();
        std::fs::remove_file(&victim).unwrap();
        conn.execute_batch("UPDATE t SET v = randomblob(4000) WHERE k % 100 = 1;")
            .unwrap();
        reset_peak_rss();
        let pruned = store.backup_path(&db, &BackupOptions::default()).unwrap();
        assert!(pruned.index_cached);
        println!(
            "{:>12} | after a prune deleted one index object: index load (its entries \
             skipped) {:.3} s, backup {:.3} s, {} MB",
            pruned.index_chunks,
            pruned.index_load.as_secs_f64(),
            pruned.duration.as_secs_f64(),
            peak_rss_mb()
        );
        added -= PER_OBJECT;
    }
    // What a merge costs at this size (done after a backup publishes, when the
    // delta reaches 1/16 of the file or 1/8 of it is skipped): the whole file
    // streamed, checked and written again.
    let cache = crate::index::cache::IndexCache::for_store(&store.config().store_id).unwrap();
    let base = cache.open_base().unwrap().unwrap();
    let mut empty = crate::index::chunk_index::ChunkIndex::default();
    empty.seal();
    let sizes: crate::types::IdMap<u64> = store
        .backend()
        .list(layout::INDEX)
        .unwrap()
        .into_iter()
        .filter_map(|o| Some((layout::id_of(&o.key)?, o.size)))
        .collect();
    let present = store.pack_sizes().unwrap();
    let t = std::time::Instant::now();
    let n = cache.write_merged(&base, &empty, &sizes, &present).unwrap();
    println!(
        "rewriting the sorted chunk file ({n} entries, {} MB): {:.2} s",
        std::fs::metadata(cache.base_path()).unwrap().len() >> 20,
        t.elapsed().as_secs_f64()
    );
}

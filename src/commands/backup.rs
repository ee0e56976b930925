use super::{open_store, print_json};
use crate::cli::{BackupArgs, Global};
use crate::output;
use crate::timearg::{parse_duration, parse_time};
use anyhow::Result;
use pagesnap_core::types::to_hex;
use pagesnap_core::BackupOptions;
use serde_json::json;
use std::path::Path;
use std::process::ExitCode;

pub fn run(g: &Global, a: &BackupArgs) -> Result<ExitCode> {
    // Parse every argument before touching the store.
    let time = a.time.as_deref().map(parse_time).transpose()?;
    let busy_timeout = parse_duration(&a.busy_timeout)?;
    let lock_wait = parse_duration(&a.lock_wait)?;
    let base_cache = match &a.base_cache {
        Some(s) => Some(pagesnap_core::base_cache::parse_size(s).ok_or_else(|| {
            anyhow::anyhow!("--base-cache {s:?}: not a size (e.g. 64MiB, 512KiB, 0)")
        })?),
        None => None,
    };
    let (store, bar) = crate::progress::attach(open_store(g)?, g, "backup");
    let opts = BackupOptions {
        name: a.name.clone(),
        tags: a.tags.clone(),
        time,
        busy_timeout,
        lock_wait,
        base_cache,
        paranoid: a.paranoid,
        full_read: a.full_read,
    };
    let r = store
        .backup_path(&a.database, &opts)
        .map_err(|e| store_full(e, &store.location(), &a.database))?;
    bar.finish();
    for w in &r.warnings {
        eprintln!("pagesnap: warning: {w}");
    }
    if g.json {
        print_json(&json!({
            "id": r.snapshot.to_hex(),
            "short_id": r.snapshot.short(),
            "name": r.name,
            "time": output::time_json(&r.time),
            "pages": r.page_count,
            "page_size": r.page_size,
            "image_size": r.image_len,
            "image_hash": to_hex(&r.image_hash),
            "chunks": r.chunks,
            "new_chunks": r.stats.new_chunks,
            "reused_chunks": r.stats.reused_chunks,
            "zero_chunks": r.stats.zero_chunks,
            "new_raw_bytes": r.stats.new_raw_bytes,
            "bytes_added": r.bytes_added,
            "metadata_bytes": r.metadata_bytes,
            "packs_written": r.stats.packs_written,
            "new_base": r.new_base,
            "delta_entries": r.delta_len,
            "dict_bytes": r.stats.dict_bytes,
            "delta_chunks": r.stats.delta_chunks,
            "delta_chunk_bytes": r.stats.delta_stored_bytes,
            "delta_whole_bytes": r.stats.delta_whole_bytes,
            "index_chunks": r.index_chunks,
            "index_load_secs": r.index_load.as_secs_f64(),
            "index_cached": r.index_cached,
            "parent_prints": r.parent_prints,
            "store_listed": r.store_listed,
            "read_directly": r.capture_fallback.is_none(),
            "capture_fallback": r.capture_fallback,
            "wal_guided": r.unread_bytes.is_some(),
            "unread_bytes": r.unread_bytes.unwrap_or(0),
            "duration_secs": r.duration.as_secs_f64(),
        }))?;
    } else {
        println!(
            "snapshot {} of {} saved at {}: {} pages ({}), {} new chunks, {} added in {:.2}s",
            r.snapshot.short(),
            r.name,
            output::time(&r.time),
            r.page_count,
            output::bytes(r.image_len),
            r.stats.new_chunks,
            output::bytes(r.bytes_added),
            r.duration.as_secs_f64()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A full disk under the store is said as such, naming the store and what the
/// failure left (the I/O error alone names an object key or a temporary file).
fn store_full(e: pagesnap_core::Error, store: &str, db: &Path) -> anyhow::Error {
    let full = matches!(&e, pagesnap_core::Error::Backend(b) if b.is_storage_full());
    let e = anyhow::Error::new(e);
    if !full {
        return e;
    }
    e.context(format!(
        "{store}: the disk holding the store is full (no space left on device): no snapshot \
         of {} was saved and the earlier snapshots are intact; free space there and run the \
         backup again",
        db.display()
    ))
}

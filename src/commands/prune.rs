//! `pagesnap prune`: delete what no remaining snapshot needs.

use super::{open_store, print_json};
use crate::cli::{Global, PruneArgs};
use crate::output;
use anyhow::Result;
use pagesnap_core::{PruneOptions, PruneReport};
use serde_json::{json, Value};
use std::process::ExitCode;

pub fn run(g: &Global, a: &PruneArgs) -> Result<ExitCode> {
    let opts = PruneOptions {
        max_unused: parse_percent(&a.max_unused)?,
        dry_run: a.dry_run,
        assume_forgotten: Vec::new(),
    };
    let (store, bar) = crate::progress::attach(open_store(g)?, g, "prune");
    let r = store.prune(&opts)?;
    bar.finish();
    if g.json {
        print_json(&to_json(&r))?;
    } else {
        print_human(&r);
    }
    Ok(ExitCode::SUCCESS)
}

/// `10%`, `10` or `0.5%` → a fraction of 1.
pub fn parse_percent(s: &str) -> Result<f64> {
    let t = s.trim().trim_end_matches('%');
    match t.parse::<f64>() {
        Ok(v) if (0.0..=100.0).contains(&v) => Ok(v / 100.0),
        _ => Err(usage!(
            "invalid --max-unused {s:?}: give a percentage from 0 to 100, e.g. 10%"
        )),
    }
}

pub fn to_json(r: &PruneReport) -> Value {
    json!({
        "dry_run": r.dry_run,
        "snapshots": r.snapshots,
        "live_chunks": r.live_chunks,
        "missing_chunks": r.missing_chunks,
        "packs_before": r.packs_before,
        "packs_deleted": r.packs_deleted,
        "packs_rewritten": r.packs_rewritten,
        "packs_written": r.packs_written,
        "index_deleted": r.index_deleted,
        "maps_deleted": r.maps_deleted,
        "dicts_deleted": r.dicts_deleted,
        "bytes_repacked": r.bytes_repacked,
        "bytes_before": r.bytes_before,
        "bytes_freed": r.bytes_freed,
        "temp_files_removed": r.temp_files_removed,
        "duration_secs": r.duration.as_secs_f64(),
    })
}

pub fn print_human(r: &PruneReport) {
    let verb = if r.dry_run { "would be " } else { "" };
    println!(
        "{} snapshots, {} live chunks; packs: {} {verb}deleted, {} {verb}rewritten ({} of live chunks copied into {} new)",
        r.snapshots,
        r.live_chunks,
        r.packs_deleted,
        r.packs_rewritten,
        output::bytes(r.bytes_repacked),
        r.packs_written
    );
    println!(
        "{verb}deleted: {} index objects, {} page maps, {} dictionaries",
        r.index_deleted, r.maps_deleted, r.dicts_deleted
    );
    if r.missing_chunks > 0 {
        println!(
            "warning: {} chunks that snapshots need are in no pack (damaged store: run `pagesnap verify`)",
            r.missing_chunks
        );
    }
    println!(
        "{}freed {} of {} in {:.2}s{}",
        if r.dry_run { "would have " } else { "" },
        output::bytes(r.bytes_freed),
        output::bytes(r.bytes_before),
        r.duration.as_secs_f64(),
        if r.dry_run {
            " (dry run: nothing deleted)"
        } else {
            ""
        }
    );
}

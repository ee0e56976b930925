//! `pagesnap cache`: this machine's cache folders (one per store: head hints, the
//! derived index, a remote store's metadata), listed with their size, store and
//! last use; `--cleanup` removes those of stores that are gone and those unused
//! for a long time. The core's `cache_dirs` decides; this prints.

use super::print_json;
use crate::cli::{CacheArgs, Global};
use crate::output;
use anyhow::{anyhow, Result};
use chrono::{DateTime, Utc};
use pagesnap_core::cache_dirs::{self, CacheFolder};
use serde_json::{json, Value};
use std::process::ExitCode;
use std::time::SystemTime;

pub fn run(g: &Global, a: &CacheArgs) -> Result<ExitCode> {
    let root = pagesnap_core::cache_root().ok_or_else(|| {
        anyhow!("no cache directory: set PAGESNAP_CACHE_DIR, XDG_CACHE_HOME or HOME")
    })?;
    let now = SystemTime::now();
    if !a.cleanup {
        let list = cache_dirs::list_caches(&root)?;
        let total: u64 = list.iter().map(|f| f.bytes).sum();
        if g.json {
            print_json(&json!({
                "cache_dir": root,
                "folders": list.iter().map(|f| folder_json(f, now)).collect::<Vec<_>>(),
                "total_bytes": total,
            }))?;
        } else if list.is_empty() {
            println!("no cache folders in {}", root.display());
        } else {
            println!("cache folders in {}:", root.display());
            for f in &list {
                println!("{}", folder_line(f));
            }
            println!("{}, {}", folders(list.len()), output::bytes(total));
        }
        return Ok(ExitCode::SUCCESS);
    }

    let report = cache_dirs::cleanup_caches(&root, now, a.dry_run)?;
    if g.json {
        let removed: Vec<Value> = report
            .removed
            .iter()
            .map(|(f, why)| {
                let mut v = folder_json(f, now);
                v["reason"] = why.as_str().into();
                v
            })
            .collect();
        let failed: Vec<Value> = report
            .failed
            .iter()
            .map(|(f, e)| {
                let mut v = folder_json(f, now);
                v["error"] = e.to_string().into();
                v
            })
            .collect();
        print_json(&json!({
            "cache_dir": root,
            "dry_run": a.dry_run,
            "removed": removed,
            "kept": report.kept.iter().map(|f| folder_json(f, now)).collect::<Vec<_>>(),
            "failed": failed,
            "freed_bytes": report.freed_bytes(),
        }))?;
    } else {
        let verb = if a.dry_run { "would remove" } else { "removed" };
        for (f, why) in &report.removed {
            let why = match why {
                cache_dirs::RemoveReason::StoreMissing => "store is gone".to_string(),
                cache_dirs::RemoveReason::StoreReplaced => {
                    "its directory holds another store now".to_string()
                }
                cache_dirs::RemoveReason::Unused => {
                    format!("unused for {} days or more", cache_dirs::UNUSED_DAYS)
                }
            };
            println!("{verb} {} ({why})", folder_line(f).trim_start());
        }
        for (_, e) in &report.failed {
            eprintln!("pagesnap: {e}");
        }
        println!(
            "{verb} {} ({}), kept {}",
            folders(report.removed.len()),
            output::bytes(report.freed_bytes()),
            report.kept.len()
        );
    }
    Ok(if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn folders(n: usize) -> String {
    format!("{n} folder{}", if n == 1 { "" } else { "s" })
}

fn store_text(f: &CacheFolder) -> String {
    match &f.store {
        Some(s) => format!("{s} [{}]", f.state.as_str()),
        None => "(store not recorded)".to_string(),
    }
}

fn folder_line(f: &CacheFolder) -> String {
    let used = f
        .last_used
        .map(|t| output::time(&DateTime::<Utc>::from(t)))
        .unwrap_or_else(|| "-".into());
    format!(
        "  {}  {:>10}  last used {used}  {}",
        f.path.display(),
        output::bytes(f.bytes),
        store_text(f)
    )
}

fn folder_json(f: &CacheFolder, now: SystemTime) -> Value {
    json!({
        "path": f.path,
        "kind": f.kind.as_str(),
        "store": f.store,
        "store_state": f.state.as_str(),
        "bytes": f.bytes,
        "last_used": f.last_used.map(|t| output::time_json(&DateTime::<Utc>::from(t))),
        "removable": f.removable(now).map(|r| r.as_str()),
    })
}

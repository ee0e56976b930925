use super::{open_store, print_json};
use crate::cli::{Global, SnapshotsArgs};
use crate::output;
use anyhow::Result;
use pagesnap_core::types::to_hex;
use serde_json::json;
use std::process::ExitCode;

pub fn run(g: &Global, a: &SnapshotsArgs) -> Result<ExitCode> {
    let store = open_store(g)?;
    let (snaps, damaged) = store.snapshots_with_damage()?;
    let snaps: Vec<_> = snaps
        .into_iter()
        .filter(|s| a.name.as_ref().is_none_or(|n| &s.manifest.name == n))
        .collect();
    for d in &damaged {
        eprintln!(
            "pagesnap: warning: skipping unreadable snapshot: {}",
            d.error
        );
    }
    if g.json {
        let list: Vec<_> = snaps
            .iter()
            .map(|s| {
                let m = &s.manifest;
                json!({
                    "id": s.id.to_hex(),
                    "short_id": s.id.short(),
                    "time": output::time_json(&s.time()),
                    "name": m.name,
                    "host": m.host,
                    "source": m.source_path,
                    "pages": m.page_count,
                    "page_size": m.page_size,
                    "image_size": m.image_len,
                    "image_hash": to_hex(&m.image_hash),
                    "tags": m.tags,
                })
            })
            .collect();
        print_json(&serde_json::Value::Array(list))?;
    } else {
        println!(
            "{:<8}  {:<19}  {:<16}  {:>10}  {:>10}  TAGS",
            "ID", "TIME (UTC)", "NAME", "PAGES", "SIZE"
        );
        for s in &snaps {
            let m = &s.manifest;
            println!(
                "{:<8}  {:<19}  {:<16}  {:>10}  {:>10}  {}",
                s.id.short(),
                output::time(&s.time()),
                m.name,
                m.page_count,
                output::bytes(m.image_len),
                m.tags.join(",")
            );
        }
        println!("{} snapshot(s)", snaps.len());
    }
    Ok(ExitCode::SUCCESS)
}

use super::{open_store, print_json};
use crate::cli::{Global, SnapshotsArgs};
use crate::output;
use anyhow::Result;
use pagesnap_core::types::to_hex;
use pagesnap_core::Snapshot;
use serde_json::json;
use std::collections::HashMap;
use std::process::ExitCode;

pub fn run(g: &Global, a: &SnapshotsArgs) -> Result<ExitCode> {
    let store = open_store(g)?;
    let (snaps, damaged) = store.snapshots_with_damage()?;
    let snaps = filter(snaps, a);
    for d in &damaged {
        eprintln!(
            "pagesnap: warning: skipping unreadable snapshot: {}",
            d.error
        );
    }
    let unique = if a.unique_bytes {
        Some(store.exclusive_bytes()?)
    } else {
        None
    };
    let unique_of = |id| unique.as_ref().map(|u| u.get(id).copied().unwrap_or(0));
    if g.json {
        let list: Vec<_> = snaps
            .iter()
            .map(|s| {
                let m = &s.manifest;
                let mut v = json!({
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
                    "image_check": m.image_check.as_ref().map(|c| to_hex(c)),
                    "tags": m.tags,
                });
                if let Some(b) = unique_of(&s.id) {
                    v["unique_bytes"] = json!(b);
                }
                v
            })
            .collect();
        print_json(&serde_json::Value::Array(list))?;
    } else {
        let unique_head = if unique.is_some() {
            format!("{:>10}  ", "UNIQUE")
        } else {
            String::new()
        };
        println!(
            "{:<8}  {:<23}  {:<16}  {:<12}  {:>10}  {:>10}  {unique_head}TAGS",
            "ID", "TIME", "NAME", "HOST", "PAGES", "SIZE"
        );
        for s in &snaps {
            let m = &s.manifest;
            let unique_col = unique_of(&s.id)
                .map(|b| format!("{:>10}  ", output::bytes(b)))
                .unwrap_or_default();
            println!(
                "{:<8}  {:<23}  {:<16}  {:<12}  {:>10}  {:>10}  {unique_col}{}",
                s.id.short(),
                output::time(&s.time()),
                m.name,
                m.host,
                m.page_count,
                output::bytes(m.image_len),
                m.tags.join(",")
            );
        }
        println!("{} snapshot(s)", snaps.len());
    }
    Ok(ExitCode::SUCCESS)
}

/// The snapshots `--name`, `--host`, `--tag` and `--latest` select, oldest first.
///
/// Tags as restic has them: within one `--tag` the comma-separated tags must
/// all be there; of several `--tag`s any one may match; `--tag ''` matches the
/// snapshots without tags. `--latest N` keeps the newest N of each database
/// among those the other filters kept.
fn filter(snaps: Vec<Snapshot>, a: &SnapshotsArgs) -> Vec<Snapshot> {
    let groups: Vec<Vec<&str>> = a
        .tags
        .iter()
        .map(|g| g.split(',').filter(|t| !t.is_empty()).collect())
        .collect();
    let tagged = |s: &Snapshot| {
        let have = &s.manifest.tags;
        groups.is_empty()
            || groups.iter().any(|g| {
                if g.is_empty() {
                    have.is_empty()
                } else {
                    g.iter().all(|t| have.iter().any(|h| h == t))
                }
            })
    };
    let mut kept: Vec<Snapshot> = snaps
        .into_iter()
        .filter(|s| a.name.as_ref().is_none_or(|n| &s.manifest.name == n))
        .filter(|s| a.hosts.is_empty() || a.hosts.contains(&s.manifest.host))
        .filter(|s| tagged(s))
        .collect();
    if let Some(n) = a.latest {
        // Newest first, count per database, then back to oldest first.
        let mut per_db: HashMap<String, usize> = HashMap::new();
        kept.reverse();
        kept.retain(|s| {
            let c = per_db.entry(s.manifest.name.clone()).or_default();
            *c += 1;
            *c <= n
        });
        kept.reverse();
    }
    kept
}

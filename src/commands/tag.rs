//! `pagesnap tag`: change the tags of snapshots (`Store::retag`).

use super::{open_store, print_json};
use crate::cli::{Global, TagArgs};
use anyhow::Result;
use pagesnap_core::{select, TagEdit};
use serde_json::json;
use std::process::ExitCode;

pub fn run(g: &Global, a: &TagArgs) -> Result<ExitCode> {
    let store = open_store(g)?;
    let snaps = store.snapshots()?;
    let chosen = select::select_many(&snaps, a.name.as_deref(), &a.snapshots, |_| false)?;
    let ids: Vec<_> = chosen.iter().map(|s| s.id).collect();
    let edit = TagEdit {
        // `--set ''` clears: an empty tag is no tag.
        set: (!a.set.is_empty()).then(|| a.set.iter().filter(|t| !t.is_empty()).cloned().collect()),
        add: a.add.clone(),
        remove: a.remove.clone(),
    };
    let done = store.retag(&ids, &edit)?;
    let time_of = |id| {
        chosen
            .iter()
            .find(|s| s.id == id)
            .map(|s| crate::output::time_json(&s.time()))
    };
    if g.json {
        let list: Vec<_> = done
            .iter()
            .map(|r| {
                json!({
                    "old_id": r.old.to_hex(),
                    "new_id": r.new.to_hex(),
                    "short_id": r.new.short(),
                    "name": r.name,
                    "time": time_of(r.old),
                    "old_tags": r.old_tags,
                    "tags": r.tags,
                    "changed": r.changed(),
                })
            })
            .collect();
        print_json(&json!({
            "changed": done.iter().filter(|r| r.changed()).count(),
            "snapshots": list,
        }))?;
    } else {
        for r in &done {
            let tags = if r.tags.is_empty() {
                "no tags".to_string()
            } else {
                format!("tags {}", r.tags.join(","))
            };
            if r.changed() {
                println!("{} -> {}  {}  {tags}", r.old.short(), r.new.short(), r.name);
            } else {
                println!("{}  {}  unchanged ({tags})", r.old.short(), r.name);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

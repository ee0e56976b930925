//! `pagesnap repair index|snapshots`.

use super::{open_store_uncached, print_json, EXIT_DAMAGE};
use crate::cli::{Global, RepairCommand, RepairIndexArgs, RepairSnapshotsArgs};
use crate::output;
use crate::timearg::parse_duration;
use anyhow::Result;
use serde_json::json;
use std::process::ExitCode;

pub fn run(g: &Global, c: &RepairCommand) -> Result<ExitCode> {
    match c {
        RepairCommand::Index(a) => index(g, a),
        RepairCommand::Snapshots(a) => snapshots(g, a),
    }
}

fn index(g: &Global, a: &RepairIndexArgs) -> Result<ExitCode> {
    let wait = parse_duration(&a.lock_wait)?;
    let store = open_store_uncached(g)?;
    let r = store.repair_index(a.dry_run, wait)?;
    if g.json {
        print_json(&json!({
            "dry_run": r.dry_run,
            "packs": r.packs,
            "chunks_reindexed": r.chunks_reindexed,
            "new_index": r.new_index.map(|i| i.to_hex()),
            "quarantined": r.quarantined,
            "unreadable_packs": r.unreadable_packs.iter()
                .map(|(k, e)| json!({"object": k, "problem": e})).collect::<Vec<_>>(),
        }))?;
    } else {
        let verb = if r.dry_run { "would" } else { "did" };
        println!(
            "{} pack(s) read; {verb} index {} chunk(s) no readable index object located{}",
            r.packs,
            r.chunks_reindexed,
            r.new_index
                .map(|i| format!(" (index/{})", i.short()))
                .unwrap_or_default()
        );
        for k in &r.quarantined {
            let to = if r.dry_run { "would move" } else { "moved" };
            println!("damaged index object {k}: {to} it to damaged/{k}");
        }
        for (k, e) in &r.unreadable_packs {
            println!("damaged: {k}: {e} (its chunks cannot be indexed)");
        }
        if !r.quarantined.is_empty() {
            println!("snapshots whose page maps named them cannot be restored: see `pagesnap repair snapshots`");
        }
    }
    Ok(if r.unreadable_packs.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_DAMAGE)
    })
}

fn snapshots(g: &Global, a: &RepairSnapshotsArgs) -> Result<ExitCode> {
    let store = open_store_uncached(g)?;
    let broken = store.repair_snapshots(a.forget_broken, a.read_data)?;
    if g.json {
        print_json(&json!({
            "forgotten": a.forget_broken,
            "broken": broken.iter().map(|b| json!({
                "id": b.id.to_hex(),
                "name": b.name,
                "time": b.time.as_ref().map(output::time_json),
                "reasons": b.reasons,
            })).collect::<Vec<_>>(),
        }))?;
    } else {
        for b in &broken {
            let what = match (&b.name, &b.time) {
                (Some(n), Some(t)) => format!("{} of {n} at {}", b.id.short(), output::time(t)),
                _ => format!("{} (manifest unreadable)", b.id.short()),
            };
            println!("broken: {what}");
            for r in &b.reasons {
                println!("  {r}");
            }
        }
        match (broken.len(), a.forget_broken) {
            (0, _) => println!("no broken snapshots"),
            (n, true) => println!(
                "forgot {n} broken snapshot(s); `pagesnap prune` frees what only they used"
            ),
            (n, false) => println!("{n} broken snapshot(s); pass --forget-broken to forget them"),
        }
    }
    Ok(if broken.is_empty() || a.forget_broken {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_DAMAGE)
    })
}

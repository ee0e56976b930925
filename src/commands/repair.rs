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
            "unchecked": r.unchecked.iter()
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
        for (k, e) in &r.unchecked {
            println!("could not check {k}: {e} (not damage: nothing done about it)");
        }
        if !r.quarantined.is_empty() {
            println!("snapshots whose page maps named them cannot be restored: see `pagesnap repair snapshots`");
        }
    }
    Ok(if !r.unreadable_packs.is_empty() {
        ExitCode::from(EXIT_DAMAGE)
    } else if !r.unchecked.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn snapshots(g: &Global, a: &RepairSnapshotsArgs) -> Result<ExitCode> {
    let store = open_store_uncached(g)?;
    let r = store.repair_snapshots(a.forget_broken, a.read_data)?;
    let broken = &r.broken;
    if g.json {
        print_json(&json!({
            "forgotten": a.forget_broken,
            "broken": broken.iter().map(|b| json!({
                "id": b.id.to_hex(),
                "name": b.name,
                "time": b.time.as_ref().map(output::time_json),
                "reasons": b.reasons,
            })).collect::<Vec<_>>(),
            "could_not_check": r.unchecked.iter().map(|p| json!({
                "object": p.object,
                "problem": p.detail,
                "snapshots": p.snapshots.iter().map(|s| s.to_hex()).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "kept": r.kept.iter().map(|(k, e)| json!({"object": k, "problem": e}))
                .collect::<Vec<_>>(),
        }))?;
    } else {
        for b in broken {
            let what = match (&b.name, &b.time) {
                (Some(n), Some(t)) => format!("{} of {n} at {}", b.id.short(), output::time(t)),
                _ => format!("{} (manifest unreadable)", b.id.short()),
            };
            println!("broken: {what}");
            for r in &b.reasons {
                println!("  {r}");
            }
        }
        let forgotten = broken.len() - r.kept.len();
        match (broken.len(), a.forget_broken) {
            (0, _) => println!("no broken snapshots"),
            (_, true) => println!(
                "forgot {forgotten} broken snapshot(s), their manifests kept in damaged/; `pagesnap prune` frees what only they used"
            ),
            (n, false) => println!("{n} broken snapshot(s); pass --forget-broken to forget them"),
        }
        for (k, e) in &r.kept {
            println!("kept {k}: it could not be copied to damaged/ first ({e})");
        }
        for p in &r.unchecked {
            let ids: Vec<String> = p.snapshots.iter().map(|s| s.short()).collect();
            println!(
                "could not check: {}: {} (not damage; {} snapshot(s) not judged and kept: {})",
                p.object,
                p.detail,
                ids.len(),
                ids.join(" ")
            );
        }
    }
    // Damage left in the store is 3; only what could not be read is 1.
    Ok(
        if !r.kept.is_empty() || (!broken.is_empty() && !a.forget_broken) {
            ExitCode::from(EXIT_DAMAGE)
        } else if !r.unchecked.is_empty() {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        },
    )
}

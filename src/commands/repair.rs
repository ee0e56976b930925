//! `pagesnap repair index|snapshots`.

use super::{open_store_uncached, print_json, EXIT_DAMAGE};
use crate::cli::{Global, RepairCommand, RepairIndexArgs, RepairSnapshotsArgs};
use crate::output;
use crate::timearg::parse_duration;
use anyhow::Result;
use pagesnap_core::repair::RepairIndexOptions;
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
    let opts = RepairIndexOptions {
        dry_run: a.dry_run,
        read_data: a.read_data,
    };
    let r = store.repair_index_with(&opts, wait)?;
    for (k, e) in &r.read_errors {
        eprintln!("pagesnap: error: {k} cannot be read: {e} (not damage: it was left as it is)");
    }
    if g.json {
        let mut v = json!({
            "dry_run": r.dry_run,
            "packs": r.packs,
            "chunks_reindexed": r.chunks_reindexed,
            "new_index": r.new_index.map(|i| i.to_hex()),
            "quarantined": r.quarantined,
            "unreadable_packs": r.unreadable_packs.iter()
                .map(|(k, e)| json!({"object": k, "problem": e})).collect::<Vec<_>>(),
            "unchecked": problems(&r.unchecked),
        });
        if r.read_data {
            if let Some(o) = v.as_object_mut() {
                o.insert("packs_read".into(), r.packs_read.into());
                o.insert("chunks_checked".into(), r.chunks_checked.into());
                o.insert("bytes_read".into(), r.bytes_read.into());
                o.insert("packs_written".into(), r.packs_written.into());
                o.insert("chunks_lost".into(), r.chunks_lost().into());
                o.insert(
                    "damaged_packs".into(),
                    r.damaged_packs
                        .iter()
                        .map(|p| {
                            json!({
                                "object": p.key,
                                "moved_to": p.moved_to,
                                "name_matches": p.name_matches,
                                "chunks_kept": p.chunks_kept,
                                "whole_again": p.whole_again,
                                "dropped": p.dropped.iter().map(|d| json!({
                                    "chunk": d.chunk.to_hex(),
                                    "problem": d.problem,
                                    "copy_kept": d.copy_kept,
                                })).collect::<Vec<_>>(),
                            })
                        })
                        .collect::<Vec<_>>()
                        .into(),
                );
                o.insert("unchecked_packs".into(), problems(&r.unchecked_packs));
                o.insert("read_errors".into(), problems(&r.read_errors));
            }
        }
        print_json(&v)?;
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
        if r.read_data {
            println!(
                "read {} pack(s) whole ({}): {} chunk(s) checked against their ids",
                r.packs_read,
                output::bytes(r.bytes_read),
                r.chunks_checked
            );
        }
        for p in &r.damaged_packs {
            let (moved, copied) = if r.dry_run {
                ("would move", "would be copied")
            } else {
                ("moved", "copied")
            };
            let pack = if p.name_matches || !p.dropped.is_empty() {
                String::new()
            } else {
                " (damaged outside its chunks: its bytes do not match its name)".to_string()
            };
            println!(
                "damaged pack {}{pack}: {} sound chunk(s) {copied} into a new pack or kept in another, {} damaged; {moved} it to {}",
                p.key,
                p.chunks_kept,
                p.dropped.len(),
                p.moved_to
            );
            if p.whole_again {
                println!(
                    "  its sound chunks made it again byte for byte: {} is whole again",
                    p.key
                );
            }
            for d in &p.dropped {
                let fate = if d.copy_kept {
                    "another pack holds a sound copy"
                } else {
                    "taken out of use"
                };
                println!("  chunk {}: {}; {fate}", d.chunk.to_hex(), d.problem);
            }
        }
        // Rebuilt from its packs, a damaged index object can come back whole
        // under its own name.
        let rebuilt = r.new_index.as_ref().map(pagesnap_core::layout::index);
        let whole_again = |k: &String| rebuilt.as_ref() == Some(k);
        for k in &r.quarantined {
            if whole_again(k) {
                println!("damaged index object {k}: copied it to damaged/{k}; rebuilt from its packs, it is whole again");
                continue;
            }
            let to = if r.dry_run { "would move" } else { "moved" };
            println!("damaged index object {k}: {to} it to damaged/{k}");
        }
        for (k, e) in &r.unreadable_packs {
            println!("damaged: {k}: {e} (its chunks cannot be indexed)");
        }
        for (k, e) in &r.unchecked {
            println!("could not check {k}: {e} (not damage: nothing done about it)");
        }
        for (k, e) in &r.unchecked_packs {
            println!("not checked: {k}: {e}");
        }
        if r.quarantined.iter().any(|k| !whole_again(k)) {
            println!("snapshots whose page maps named them cannot be restored: see `pagesnap repair snapshots`");
        }
        if r.chunks_lost() > 0 {
            println!(
                "{} chunk(s) no pack holds any more: the snapshots that need them cannot be restored \
                 (`pagesnap verify` names them; `pagesnap restore --salvage` restores the rest) until a \
                 backup of a database that still holds those pages stores them again",
                r.chunks_lost()
            );
        }
    }
    // Damage found is 3; only what could not be read or checked is 1.
    let damage = !r.unreadable_packs.is_empty() || r.chunks_lost() > 0;
    let unchecked =
        !r.read_errors.is_empty() || !r.unchecked.is_empty() || !r.unchecked_packs.is_empty();
    Ok(if damage {
        ExitCode::from(EXIT_DAMAGE)
    } else if unchecked {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn problems(list: &[(String, String)]) -> serde_json::Value {
    list.iter()
        .map(|(k, e)| json!({"object": k, "problem": e}))
        .collect::<Vec<_>>()
        .into()
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

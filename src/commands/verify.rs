//! `pagesnap verify`: check the store; exit 3 when damage is found, 1 when some
//! object could not be read (what depends on it was not checked).

use super::{open_store_uncached, print_json, EXIT_DAMAGE};
use crate::cli::{Global, VerifyArgs};
use crate::output;
use anyhow::Result;
use pagesnap_core::{DataSubset, Problem, ProblemKind, VerifyOptions, VerifyReport};
use serde_json::json;
use std::process::ExitCode;

pub fn run(g: &Global, a: &VerifyArgs) -> Result<ExitCode> {
    let read_data = match (&a.read_data_subset, a.read_data) {
        // A value the command line cannot use: exit status 2.
        (Some(s), _) => {
            Some(DataSubset::parse(s).map_err(|e| usage!("--read-data-subset: {}", e))?)
        }
        (None, true) => Some(DataSubset::All),
        (None, false) => None,
    };
    let store = match open_store_uncached(g) {
        Ok(s) => s,
        // A config that cannot be decoded is damage, not a failure to run.
        Err(e) => match e.downcast_ref::<pagesnap_core::Error>() {
            Some(pagesnap_core::Error::Format { object, source }) => {
                let p = Problem {
                    object: "config".into(),
                    detail: format!("{object}: {source}"),
                    kind: ProblemKind::Damage,
                    snapshots: Default::default(),
                };
                print_problems(
                    g,
                    &VerifyReport {
                        problems: vec![p],
                        ..Default::default()
                    },
                    false,
                )?;
                return Ok(ExitCode::from(EXIT_DAMAGE));
            }
            _ => return Err(e),
        },
    };
    let opts = VerifyOptions {
        read_data,
        restore_check: a.restore_check,
        restore_dir: a.restore_dir.clone(),
        name: a.name.clone(),
        snapshots: a.snapshots.clone(),
    };
    let r = store.verify(&opts)?;
    print_problems(g, &r, true)?;
    Ok(if r.healthy() {
        ExitCode::SUCCESS
    } else if r.damaged() {
        ExitCode::from(EXIT_DAMAGE)
    } else {
        // Nothing found wrong, but not everything could be checked.
        ExitCode::from(1)
    })
}

fn print_problems(g: &Global, r: &VerifyReport, opened: bool) -> Result<()> {
    if g.json {
        return print_json(&json!({
            "healthy": r.healthy(),
            "snapshots": r.snapshots,
            "snapshots_checked": r.snapshots_checked,
            "index_objects": r.index_objects,
            "packs": r.packs,
            "dicts": r.dicts,
            "page_maps": r.maps,
            "chunks_referenced": r.chunks_referenced,
            "packs_read": r.packs_read,
            "chunks_read": r.chunks_read,
            "bytes_read": r.bytes_read,
            "images_checked": r.images_checked,
            "restores_checked": r.restores_checked,
            "unindexed_packs": r.unindexed_packs,
            "broken_snapshots": r.broken.iter().map(|s| s.to_hex()).collect::<Vec<_>>(),
            "problems": r.problems.iter().map(|p| json!({
                "object": p.object,
                "problem": p.detail,
                "kind": match p.kind {
                    ProblemKind::Damage => "damage",
                    ProblemKind::Unreadable => "could not check",
                },
                "snapshots": p.snapshots.iter().map(|s| s.to_hex()).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "duration_secs": r.duration.as_secs_f64(),
        }));
    }
    if opened {
        println!(
            "checked {} of {} snapshot(s): {} page map(s), {} index object(s), {} pack(s), {} dictionary object(s), {} distinct chunk(s) referenced",
            r.snapshots_checked, r.snapshots, r.maps, r.index_objects, r.packs, r.dicts, r.chunks_referenced
        );
        if r.packs_read > 0 {
            println!(
                "read {} pack(s) ({}): {} chunk(s) decoded and hashed, {} image hash(es) checked",
                r.packs_read,
                output::bytes(r.bytes_read),
                r.chunks_read,
                r.images_checked
            );
        }
        if r.restores_checked > 0 {
            println!(
                "restored {} snapshot(s) and ran PRAGMA integrity_check",
                r.restores_checked
            );
        }
        if r.unindexed_packs > 0 {
            println!(
                "{} pack(s) are in no index (left by interrupted backups; `pagesnap prune` removes them)",
                r.unindexed_packs
            );
        }
    }
    if r.healthy() {
        println!("no problems found");
        return Ok(());
    }
    for p in &r.problems {
        let ids: Vec<String> = p.snapshots.iter().map(|s| s.short()).collect();
        let (label, affects) = match p.kind {
            ProblemKind::Damage => ("damaged", "affects"),
            ProblemKind::Unreadable => ("could not check", "not checked"),
        };
        let affects = match ids.is_empty() {
            true => String::new(),
            false => format!("\n  {affects} {} snapshot(s): {}", ids.len(), ids.join(" ")),
        };
        println!("{label}: {}: {}{affects}", p.object, p.detail);
    }
    let damage = r.problems.iter().filter(|p| p.is_damage()).count();
    let unreadable = r.problems.len() - damage;
    if damage > 0 {
        println!(
            "{damage} problem(s); {} snapshot(s) cannot be restored{}",
            r.broken.len(),
            if r.broken.is_empty() {
                ""
            } else {
                " (`pagesnap repair snapshots` lists them)"
            }
        );
    }
    if unreadable > 0 {
        println!(
            "could not check {unreadable} object(s): they could not be read (not damage: fix access or the network and run verify again)"
        );
    }
    Ok(())
}

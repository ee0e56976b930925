//! `pagesnap copy`: copy snapshots to another store (e.g. local → S3), storing only
//! the chunks the destination lacks. Exit 1 when some snapshot could not be copied.

use super::{open_store_at, open_store_for, print_json};
use crate::cli::{CopyArgs, Global};
use crate::output;
use crate::timearg::parse_duration;
use anyhow::{Context, Result};
use pagesnap_core::copy::{copy, CopiedSnapshot};
use pagesnap_core::{CopyOptions, CopyOutcome, CopyReport};
use serde_json::json;
use std::process::ExitCode;

pub fn run(g: &Global, a: &CopyArgs) -> Result<ExitCode> {
    let lock_wait = parse_duration(&a.lock_wait)?;
    // Each side defaults to the store (--store / $PAGESNAP_STORE / the default):
    // `--to` alone copies the store elsewhere, `--from` alone copies into it.
    let from_spec = a.from.as_deref().or(g.store.as_deref());
    let to_spec = a.to.as_deref().or(g.store.as_deref());
    // Only the destination honours fault injection (crash tests of the copy).
    let from = open_store_for(
        from_spec,
        false,
        !g.no_cache,
        crate::passphrase::Which::From,
    )
    .context("cannot copy from the source store")?;
    let to = open_store_at(to_spec, true, !g.no_cache)
        .context("cannot copy to the destination store")?;
    let (to, bar) = crate::progress::attach(to, g, "copy");
    let opts = CopyOptions {
        name: a.name.clone(),
        snapshots: a.snapshots.clone(),
        lock_wait,
    };
    let r = copy(&from, &to, &opts)?;
    bar.finish();
    for s in &r.snapshots {
        for w in &s.warnings {
            eprintln!("pagesnap: warning: {w}");
        }
        if let CopyOutcome::Failed(e) = &s.outcome {
            eprintln!(
                "pagesnap: error: snapshot {} of {} was not copied: {e}",
                s.source.short(),
                s.name
            );
        }
    }
    for u in &r.unreadable {
        eprintln!("pagesnap: error: a source snapshot cannot be read and was not copied: {u}");
    }
    if g.json {
        print_json(&report_json(&r))?;
    } else {
        print_text(&r);
    }
    Ok(if r.complete() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn status(s: &CopiedSnapshot) -> (&'static str, Option<String>, Option<&str>) {
    match &s.outcome {
        CopyOutcome::Copied(id) => ("copied", Some(id.to_hex()), None),
        CopyOutcome::Skipped(id) => ("skipped", Some(id.to_hex()), None),
        CopyOutcome::Failed(e) => ("failed", None, Some(e.as_str())),
    }
}

fn report_json(r: &CopyReport) -> serde_json::Value {
    json!({
        "from": r.from,
        "to": r.to,
        "copied": r.copied(),
        "skipped": r.skipped(),
        "failed": r.failed(),
        "chunks_uploaded": r.chunks_uploaded(),
        "bytes_uploaded": r.bytes_uploaded(),
        "unreadable": r.unreadable,
        "duration_secs": r.duration.as_secs_f64(),
        "snapshots": r.snapshots.iter().map(|s| {
            let (status, id, error) = status(s);
            json!({
                "source_id": s.source.to_hex(),
                "id": id,
                "name": s.name,
                "time": output::time_json(&s.time),
                "image_size": s.image_len,
                "status": status,
                "error": error,
                "chunks_uploaded": s.chunks_uploaded,
                "bytes_uploaded": s.bytes_uploaded,
            })
        }).collect::<Vec<_>>(),
    })
}

fn print_text(r: &CopyReport) {
    for s in &r.snapshots {
        let what = format!(
            "{} of {} at {}",
            s.source.short(),
            s.name,
            output::time(&s.time)
        );
        match &s.outcome {
            CopyOutcome::Copied(id) => println!(
                "copied  {what} as {}: {} chunk(s), {} uploaded",
                id.short(),
                s.chunks_uploaded,
                output::bytes(s.bytes_uploaded)
            ),
            CopyOutcome::Skipped(id) => println!(
                "skipped {what}: already in the destination as {}",
                id.short()
            ),
            CopyOutcome::Failed(_) => println!(
                "failed  {what}: not copied ({} uploaded, left for `prune`)",
                output::bytes(s.bytes_uploaded)
            ),
        }
    }
    println!(
        "{} copied, {} skipped, {} failed, from {} to {}: {} chunk(s), {} uploaded in {:.2}s",
        r.copied(),
        r.skipped(),
        r.failed(),
        r.from,
        r.to,
        r.chunks_uploaded(),
        output::bytes(r.bytes_uploaded()),
        r.duration.as_secs_f64()
    );
}

//! An application that backs itself up with the library's watcher: a small CMS
//! with an SQLite database starts a pagesnap watcher (a snapshot every 10
//! minutes when the database changed), writes some rows, and stops the watcher
//! cleanly on exit. For snapshots the application takes itself, see
//! `embed_snapshot`.
//!
//! ```sh
//! cargo run -p pagesnap-core --example embed_watcher -- /tmp/cms       # every 10 minutes
//! cargo run -p pagesnap-core --example embed_watcher -- /tmp/cms 2s 5  # every 2 s, 5 rounds
//! ```
//!
//! docs/EMBEDDING.md explains each step.

#![forbid(unsafe_code)]

mod common;

use pagesnap_core::retention::Policy;
use pagesnap_core::watch::{DatabaseOptions, RunOutcome, WatchEvent, Watcher, WatcherOptions};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = PathBuf::from(args.first().map(String::as_str).unwrap_or("cms-demo"));
    let every = match args.get(1) {
        Some(s) => humantime::parse_duration(s)?,
        None => Duration::from_secs(600),
    };
    let rounds: u32 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(3);
    std::fs::create_dir_all(&dir)?;

    // The application's own database.
    let db = dir.join("cms.db");
    let conn = common::app_database(
        &db,
        "CREATE TABLE IF NOT EXISTS pages(id INTEGER PRIMARY KEY, title TEXT, body TEXT);",
    )?;
    // The store: created on first use, opened afterwards.
    let store = common::open_or_init_store(&dir.join("backups"))?;

    // One database, snapshotted every `every` when it changed; the last 24
    // snapshots kept. Events are logged here; an application could count them
    // for its metrics or alert on a failure instead.
    let opts = WatcherOptions::default()
        .database(DatabaseOptions::new(&db).every(every).policy(Policy {
            keep_last: Some(24),
            ..Policy::default()
        }))
        .on_event(|e| match e {
            WatchEvent::RunFinished(f) => match &f.outcome {
                RunOutcome::Snapshot(s) => eprintln!(
                    "backup: {} snapshot {} ({}, {} bytes added)",
                    f.name,
                    s.id.short(),
                    s.reason,
                    s.bytes_added
                ),
                RunOutcome::Unchanged => eprintln!("backup: {} unchanged", f.name),
                other if other.failed() => eprintln!("backup: {} FAILED: {other:?}", f.name),
                _ => {}
            },
            WatchEvent::PruneFinished { bytes_freed, .. } => {
                eprintln!("backup: pruned, {bytes_freed} bytes freed")
            }
            _ => {}
        });
    let watcher = Watcher::start(Arc::new(store), opts)?;
    // A first snapshot now rather than at the next multiple of the interval.
    watcher.run_now("cms")?;

    // The application at work.
    for round in 0..rounds {
        std::thread::sleep(every.min(Duration::from_secs(5)));
        conn.execute(
            "INSERT INTO pages(title, body) VALUES (?1, ?2)",
            (format!("page {round}"), "lorem ipsum ".repeat(200)),
        )?;
        for s in watcher.status() {
            eprintln!(
                "app: wrote page {round}; {}: {} snapshots, next run at {}",
                s.name, s.snapshots, s.next_run
            );
        }
    }

    // On shutdown: the run under way gets 30 s to finish, then is abandoned
    // (it publishes nothing partial).
    let report = watcher.stop(Duration::from_secs(30));
    eprintln!(
        "stopped{}",
        if report.abandoned.is_empty() {
            String::new()
        } else {
            format!(", abandoned: {}", report.abandoned.join(", "))
        }
    );
    Ok(())
}

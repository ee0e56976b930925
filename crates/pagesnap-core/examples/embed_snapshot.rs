//! An application that embeds pagesnap's one-shot API: it keeps writing to its
//! database and snapshots it in-process every few seconds through its own
//! connection (`Store::backup_connection`), then restores the newest snapshot.
//! For snapshots on a schedule without writing the loop, see `embed_watcher`.
//!
//! ```sh
//! cargo run -p pagesnap-core --example embed_snapshot -- /tmp/embed-demo 4
//! ```
//! Arguments: a working directory (database and store go there) and how many
//! snapshots to take (default 3). It restores the newest snapshot at the end and
//! checks it.

mod common;

use pagesnap_core::rusqlite::Connection;
use pagesnap_core::{BackupOptions, SnapshotSelector};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().unwrap_or_else(|| "pagesnap-embed-demo".into()));
    let rounds: u32 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(3);
    std::fs::create_dir_all(&dir)?;
    let db_path = dir.join("app.db");
    let store_path = dir.join("store");

    // The application's own connection (in WAL mode: snapshots never block it).
    let app = common::app_database(
        &db_path,
        "CREATE TABLE IF NOT EXISTS events(id INTEGER PRIMARY KEY, at TEXT, payload TEXT);",
    )?;
    let store = common::open_or_init_store(&store_path)?;

    let every = Duration::from_secs(2);
    for round in 0..rounds {
        // Work for a while...
        let until = Instant::now() + every;
        while Instant::now() < until {
            app.execute(
                "INSERT INTO events(at, payload) VALUES (datetime('now'), ?1)",
                [format!("round {round}: {}", "x".repeat(200))],
            )?;
            std::thread::sleep(Duration::from_millis(5));
        }
        // ...then snapshot through the same connection: a consistent image of the
        // committed state, taken without a second file handle or a temporary copy.
        let opts = BackupOptions {
            name: Some("app".into()),
            ..BackupOptions::default()
        };
        let r = store.backup_connection(&app, &db_path, &opts)?;
        println!(
            "snapshot {}: {} pages, {} new chunks, {} bytes added",
            r.snapshot.short(),
            r.page_count,
            r.stats.new_chunks,
            r.bytes_added
        );
    }

    let latest = store.select(&SnapshotSelector::Latest {
        name: Some("app".into()),
        at: None,
    })?;
    let out = dir.join("restored.db");
    let report = store.restore_to_path(&latest, &out, true)?;
    let check: String =
        Connection::open(&out)?.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    println!(
        "restored {} ({} bytes) to {}: integrity_check {check}",
        latest.id.short(),
        report.image_len,
        out.display()
    );
    Ok(())
}

//! Writes the format fixture store of this version (`tests/fixtures/v<N>/`).
//!
//! ```sh
//! cargo run -p pagesnap-core --example make_fixture -- tests/fixtures/v1
//! cargo run -p pagesnap-core --example make_fixture -- tests/fixtures/v2 --deltas
//! cargo run -p pagesnap-core --example make_fixture -- tests/fixtures/v3-encrypted --encrypt
//! ```
//! With `--deltas` the store is made with deltas (format version 2) and three
//! more backups change the same rows again, so that chains of deltas are stored.
//! With `--encrypt` the store is encrypted (format version 3) with deltas, its
//! passphrase [`FIXTURE_PASSPHRASE`] and the cheapest Argon2id parameters (the
//! tests open it often), and a second, write-only key.
//! Run once per released format version; a committed fixture is never rewritten.
//! Prints the lines of `expected.txt`.

use pagesnap_core::backend::LocalBackend;
use pagesnap_core::{BackupOptions, InitOptions, Store};
use rusqlite::Connection;
use std::path::PathBuf;

/// The encrypted fixture's passphrase (its write-only key's: the same with
/// " (write-only)" after it).
const FIXTURE_PASSPHRASE: &str = "pagesnap fixture v3";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let usage = "usage: make_fixture DIR [--deltas|--encrypt]";
    let dir = PathBuf::from(std::env::args().nth(1).ok_or(usage)?);
    let (deltas, encrypt) = match std::env::args().nth(2).as_deref() {
        None => (false, false),
        Some("--deltas") => (true, false),
        Some("--encrypt") => (true, true),
        Some(_) => return Err(usage.into()),
    };
    let work = tempfile::tempdir()?;
    let db = work.path().join("notes.db");
    let opts = InitOptions {
        pack_target_size: 1 << 20,
        deltas,
        ..InitOptions::default()
    };
    let store = match encrypt {
        false => Store::init(dir.join("store"), &opts)?,
        true => {
            let backend = std::sync::Arc::new(LocalBackend::new(dir.join("store")));
            let params = pagesnap_core::crypto::KdfParams::INSECURE_FOR_TESTS;
            let s = Store::init_encrypted_backend(
                backend,
                &opts,
                FIXTURE_PASSPHRASE.as_bytes(),
                params,
            )?;
            let wo = format!("{FIXTURE_PASSPHRASE} (write-only)");
            s.add_key(wo.as_bytes(), params, true)?;
            s
        }
    };
    let conn = Connection::open(&db)?;
    conn.execute_batch(
        "PRAGMA page_size=1024;
         CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT);
         CREATE INDEX nb ON notes(body);",
    )?;
    // ~700 KiB of text: enough new data for the first backup to train a dictionary.
    let words = [
        "alpha", "beta", "gamma", "delta", "sqlite", "page", "snapshot", "store",
    ];
    for i in 0..2000usize {
        let body: Vec<&str> = (0..40)
            .map(|k| words[(i * 7 + k * k) % words.len()])
            .collect();
        conn.execute(
            "INSERT INTO notes(body) VALUES (?1)",
            [format!("note {i} {}", body.join(" "))],
        )?;
    }
    let mut steps = vec![
        ("2026-01-01T00:00:00Z", ""),
        (
            "2026-01-01T00:10:00Z",
            "UPDATE notes SET body = body || ' edited' WHERE id % 17 = 0; DELETE FROM notes WHERE id > 1800;",
        ),
        ("2026-01-01T00:20:00Z", "UPDATE notes SET body = 'third' WHERE id = 3;"),
    ];
    if deltas {
        steps.extend([
            (
                "2026-01-01T00:30:00Z",
                "UPDATE notes SET body = body || ' again' WHERE id % 17 = 0;",
            ),
            (
                "2026-01-01T00:40:00Z",
                "UPDATE notes SET body = 'fifth' WHERE id % 50 = 3;",
            ),
            (
                "2026-01-01T00:50:00Z",
                "UPDATE notes SET body = body || ' sixth' WHERE id % 17 = 0;",
            ),
        ]);
    }
    println!("# snapshot id                                                    time                  blake3 of the restored image");
    for (time, sql) in steps {
        conn.execute_batch(sql)?;
        let opts = BackupOptions {
            time: Some(time.parse()?),
            tags: vec!["fixture".into()],
            ..BackupOptions::default()
        };
        let r = store.backup_path(&db, &opts)?;
        println!(
            "{} {time} {}",
            r.snapshot,
            blake3::Hash::from(r.image_hash).to_hex()
        );
    }
    Ok(())
}

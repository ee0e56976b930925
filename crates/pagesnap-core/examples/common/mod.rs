//! The setup both embedding examples share: the application's own database
//! and the store beside it. (A directory with `mod.rs`, so that cargo does not
//! take it for an example of its own.)

use pagesnap_core::rusqlite::{self, Connection};
use pagesnap_core::{Error, InitOptions, Store};
use std::path::Path;

/// Opens (or creates) the application's database at `path` in WAL mode, so
/// that snapshots never block its writers, with its `schema` applied.
pub fn app_database(path: &Path, schema: &str) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.execute_batch(&format!("PRAGMA journal_mode=WAL; {schema}"))?;
    Ok(conn)
}

/// The store at `dir`: created on first use, opened afterwards.
pub fn open_or_init_store(dir: &Path) -> Result<Store, Error> {
    match Store::open(dir) {
        Err(Error::StoreMissing(_)) | Err(Error::NotAStore(_)) => {
            Store::init(dir, &InitOptions::default())
        }
        r => r,
    }
}

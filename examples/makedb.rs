//! Builds a test database of a given size for measurements.
//!
//! ```sh
//! cargo run --release --example makedb -- big.db 1100      # ~1.1 GiB (the pending-byte page is inside)
//! cargo run --release --example makedb -- big.db change 1  # update ~1% of the pages
//! ```
//! Rows hold 500 random bytes and 500 zero bytes, with an index on a random key,
//! so pages compress about 2:1 like typical application data.

#![forbid(unsafe_code)]

use rusqlite::Connection;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [path, mib] => create(path, mib.parse()?),
        [path, cmd, pct] if cmd == "change" => change(path, pct.parse()?),
        _ => anyhow::bail!("usage: makedb DB SIZE_MIB | makedb DB change PERCENT"),
    }
}

fn create(path: &str, mib: u64) -> anyhow::Result<()> {
    let conn = Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL;
         CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER, v BLOB);
         CREATE INDEX tk ON t(k);
         BEGIN;",
    )?;
    // ~1.03 KiB per row including the index entry.
    let rows = mib * 1024 * 1024 / 1050;
    let mut done = 0;
    while done < rows {
        let n = (rows - done).min(10_000);
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < ?1)
             INSERT INTO t(k, v) SELECT abs(random()) % 1000000, randomblob(500) || zeroblob(500) FROM n",
            [n as i64],
        )?;
        done += n;
    }
    conn.execute_batch("COMMIT; PRAGMA wal_checkpoint(TRUNCATE);")?;
    println!(
        "{path}: {rows} rows, {} bytes",
        std::fs::metadata(path)?.len()
    );
    Ok(())
}

fn change(path: &str, pct: f64) -> anyhow::Result<()> {
    let conn = Connection::open(path)?;
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let rows: i64 = conn.query_row("SELECT max(id) FROM t", [], |r| r.get(0))?;
    let n = (pages as f64 * pct / 100.0) as i64;
    conn.execute(
        "UPDATE t SET v = randomblob(500) || zeroblob(500)
         WHERE id IN (SELECT abs(random()) % ?1 + 1 FROM t LIMIT ?2)",
        [rows, n],
    )?;
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
    println!("{path}: updated ~{n} rows");
    Ok(())
}

//! Makes and changes a sample database for the demo (`scripts/demo.sh`).
//!
//! ```sh
//! cargo run --example sampledb -- change app.db   # creates it on first use, then changes ~1% of it
//! cargo run --example sampledb -- check app.db    # prints integrity_check and row counts
//! ```

#![forbid(unsafe_code)]

use rusqlite::Connection;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, path) = match args.as_slice() {
        [c, p] => (c.as_str(), p.as_str()),
        _ => anyhow::bail!("usage: sampledb change|check DB"),
    };
    let conn = Connection::open(path)?;
    match cmd {
        "change" => change(&conn),
        "check" => check(&conn),
        other => anyhow::bail!("unknown command {other:?}: use change or check"),
    }
}

fn change(conn: &Connection) -> anyhow::Result<()> {
    conn.execute_batch(
        "PRAGMA journal_mode=WAL;
         CREATE TABLE IF NOT EXISTS customers(id INTEGER PRIMARY KEY, name TEXT, email TEXT UNIQUE);
         CREATE TABLE IF NOT EXISTS orders(id INTEGER PRIMARY KEY, customer INTEGER, total REAL, note TEXT);
         CREATE INDEX IF NOT EXISTS orders_customer ON orders(customer);",
    )?;
    let customers: i64 = conn.query_row("SELECT count(*) FROM customers", [], |r| r.get(0))?;
    conn.execute_batch("BEGIN")?;
    if customers == 0 {
        // First run: about 20 MB of customers and orders.
        conn.execute_batch(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 20000)
             INSERT INTO customers(name, email) SELECT 'customer ' || i, 'c' || i || '@example.com' FROM n;
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 100000)
             INSERT INTO orders(customer, total, note)
               SELECT abs(random()) % 20000 + 1, abs(random()) % 100000 / 100.0, hex(randomblob(80)) FROM n;",
        )?;
    } else {
        // Later runs: a day of business — new orders and some updated ones.
        conn.execute_batch(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 500)
             INSERT INTO orders(customer, total, note)
               SELECT abs(random()) % 20000 + 1, abs(random()) % 100000 / 100.0, hex(randomblob(80)) FROM n;
             UPDATE orders SET total = total + 1 WHERE id IN (SELECT abs(random()) % 100000 + 1 FROM orders LIMIT 300);",
        )?;
    }
    conn.execute_batch("COMMIT")?;
    let orders: i64 = conn.query_row("SELECT count(*) FROM orders", [], |r| r.get(0))?;
    println!("sample database now has {orders} orders");
    Ok(())
}

fn check(conn: &Connection) -> anyhow::Result<()> {
    let ok: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    let orders: i64 = conn.query_row("SELECT count(*) FROM orders", [], |r| r.get(0))?;
    println!("integrity_check: {ok}; {orders} orders");
    anyhow::ensure!(ok == "ok", "integrity check failed");
    Ok(())
}

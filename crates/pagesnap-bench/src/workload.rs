//! Workloads: each builds its database (WAL mode, 4 KiB pages, about `--size`
//! bytes), then applies one 10-minute slice of work per step.
//!
//! Every value comes from the seeded `Rng` and every time from a synthetic clock,
//! so a seed gives the same databases page for page on every run. Per-step amounts
//! are set for a 256 MiB database to change roughly 0.5–2% of its pages per step,
//! and scale with `--size` so small test databases see proportionate work.

use super::Rng;
use anyhow::{anyhow, bail, Context, Result};
use rusqlite::{params, Connection, OpenFlags};
use std::path::{Path, PathBuf};

pub const PAGE_SIZE: u32 = 4096;
/// The database size the per-step amounts below are written for.
const REFERENCE_SIZE: f64 = (256u64 << 20) as f64;
/// Synthetic clock: 2026-01-01T00:00:00Z, then 600 s per step.
const T0: i64 = 1_767_225_600;
const STEP_SECS: i64 = 600;

pub trait Workload {
    /// `oltp`, `append`, `kv`, `vacuum` or `replay`.
    fn name(&self) -> &'static str;
    /// What one step does, for the report.
    fn describe(&self) -> String;
    /// Applies step `step` (1-based); leaves no transaction open.
    fn step(&mut self, conn: &Connection, step: u32) -> Result<()>;
}

/// The built-in workloads, as `pagesnap bench --workload` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Orders and their items; updates skewed to a hot set.
    Oltp,
    /// A time-ordered log, trimmed at its oldest end.
    Append,
    /// Blobs overwritten at random keys.
    Kv,
    /// `Oltp` with a VACUUM every 24 steps.
    Vacuum,
    /// Every revision of text documents kept.
    Cms,
}

/// A database being worked on, with the workload that changes it.
pub struct Opened {
    pub conn: Connection,
    pub workload: Box<dyn Workload>,
}

/// Builds the database of a built-in workload at `path`.
pub fn build(kind: Kind, path: &Path, size: u64, seed: u64) -> Result<Opened> {
    let conn = create(path)?;
    let mut rng = Rng::new(seed);
    let scale = size as f64 / REFERENCE_SIZE;
    let workload: Box<dyn Workload> = match kind {
        Kind::Oltp => Box::new(Oltp::build(&conn, size, scale, rng, None)?),
        Kind::Vacuum => Box::new(Oltp::build(&conn, size, scale, rng, Some(24))?),
        Kind::Append => Box::new(Append::build(&conn, size, &mut rng)?.with_rng(rng)),
        Kind::Kv => Box::new(Kv::build(&conn, size, &mut rng)?.with_rng(rng)),
        Kind::Cms => Box::new(Cms::build(&conn, size, &mut rng)?.with_rng(rng)),
    };
    // Applications run busy databases in WAL mode; the build itself ran unjournaled.
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if mode != "wal" {
        bail!("{}: could not switch to WAL mode", path.display());
    }
    conn.execute_batch("PRAGMA synchronous=NORMAL; PRAGMA cache_size=-2000;")?;
    Ok(Opened { conn, workload })
}

/// Copies the user's database `db` to `path` through the backup API (a consistent
/// copy even if `db` is live; `db` itself is only read) and replays `sql` per step.
pub fn replay(db: &Path, sql_path: &Path, sql: String, path: &Path) -> Result<Opened> {
    let src = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("{}: cannot open the database", db.display()))?;
    src.backup(
        rusqlite::MAIN_DB,
        path,
        None::<fn(rusqlite::backup::Progress)>,
    )
    .with_context(|| format!("{}: cannot copy the database", db.display()))?;
    drop(src);
    let conn = Connection::open(path)?;
    Ok(Opened {
        conn,
        workload: Box::new(Replay {
            sql_path: sql_path.to_path_buf(),
            sql,
        }),
    })
}

/// A new database tuned for a fast bulk build: no journal, no fsync, a large cache.
fn create(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)
        .with_context(|| format!("{}: cannot create the database", path.display()))?;
    conn.execute_batch(&format!(
        "PRAGMA page_size={PAGE_SIZE}; PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;
         PRAGMA cache_size=-65536;"
    ))?;
    Ok(conn)
}

/// Database size in bytes as this connection sees it (uncommitted pages included).
fn db_bytes(conn: &Connection) -> Result<u64> {
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    Ok(pages as u64 * PAGE_SIZE as u64)
}

/// Calls `batch` until the database reaches `size`, committing every few batches.
fn fill_to(
    conn: &Connection,
    size: u64,
    mut batch: impl FnMut(&Connection) -> Result<()>,
) -> Result<()> {
    loop {
        conn.execute_batch("BEGIN")?;
        let mut full = false;
        for _ in 0..20 {
            batch(conn)?;
            if db_bytes(conn)? >= size {
                full = true;
                break;
            }
        }
        conn.execute_batch("COMMIT")?;
        if full {
            return Ok(());
        }
    }
}

/// `base × scale`, at least `min`: per-step amounts proportionate to the database.
fn scaled(base: f64, scale: f64, min: u64) -> u64 {
    ((base * scale).round() as u64).max(min)
}

fn now(step: u32, i: u64) -> i64 {
    T0 + step as i64 * STEP_SECS + i as i64
}

const FIRST: &[&str] = &[
    "ada", "ben", "chloe", "dev", "emma", "finn", "grace", "hugo", "iris", "jon", "kate", "liam",
    "mia", "noah", "olga", "paul", "rosa", "sam", "tara", "uma", "vic", "will", "yara", "zoe",
];
const LAST: &[&str] = &[
    "smith", "jones", "garcia", "muller", "rossi", "dubois", "silva", "kim", "novak", "berg",
    "costa", "walsh", "young", "khan", "ito", "larsen",
];
const CITIES: &[&str] = &[
    "lisbon", "berlin", "paris", "madrid", "rome", "vienna", "oslo", "dublin", "prague", "warsaw",
    "athens", "zurich", "lyon", "porto", "milan", "munich",
];
const STATUS_NEXT: &str = "CASE status WHEN 'new' THEN 'paid' WHEN 'paid' THEN 'packed'
    WHEN 'packed' THEN 'shipped' WHEN 'shipped' THEN 'delivered' ELSE status END";

/// `oltp` (and `vacuum`): a shop. Customers and products are picked with a skew
/// (a hot set of ~1% draws about a third of the activity, through a shuffled id
/// order so the hot rows are spread over the table as in real data); status
/// updates concentrate on the newest orders.
struct Oltp {
    rng: Rng,
    /// Customer ids, hottest first.
    customers: Vec<i64>,
    /// Product prices in cents, product id = index + 1.
    prices: Vec<i64>,
    max_order: i64,
    new_orders: u64,
    status_updates: u64,
    cancels: u64,
    profile_edits: u64,
    vacuum_every: Option<u32>,
}

impl Oltp {
    fn build(
        conn: &Connection,
        size: u64,
        scale: f64,
        mut rng: Rng,
        vacuum_every: Option<u32>,
    ) -> Result<Oltp> {
        conn.execute_batch(
            "CREATE TABLE customers(id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL,
                 city TEXT NOT NULL, balance INTEGER NOT NULL, orders INTEGER NOT NULL,
                 updated_at INTEGER NOT NULL);
             CREATE UNIQUE INDEX customers_email ON customers(email);
             CREATE INDEX customers_city ON customers(city, name);
             CREATE TABLE products(id INTEGER PRIMARY KEY, name TEXT NOT NULL,
                 description TEXT NOT NULL, price INTEGER NOT NULL, stock INTEGER NOT NULL);
             CREATE TABLE orders(id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL,
                 status TEXT NOT NULL, total INTEGER NOT NULL, created_at INTEGER NOT NULL,
                 updated_at INTEGER NOT NULL, note TEXT);
             CREATE INDEX orders_customer ON orders(customer_id, created_at);
             CREATE INDEX orders_status ON orders(status, updated_at);
             CREATE TABLE order_items(order_id INTEGER NOT NULL, line INTEGER NOT NULL,
                 product_id INTEGER NOT NULL, qty INTEGER NOT NULL, price INTEGER NOT NULL,
                 PRIMARY KEY(order_id, line)) WITHOUT ROWID;
             CREATE INDEX order_items_product ON order_items(product_id);",
        )?;
        let n_customers = scaled(150_000.0, scale, 200);
        let n_products = scaled(5_000.0, scale, 50);
        conn.execute_batch("BEGIN")?;
        {
            let mut ins = conn.prepare(
                "INSERT INTO customers(id, name, email, city, balance, orders, updated_at)
                 VALUES (?1, ?2, ?3, ?4, 0, 0, ?5)",
            )?;
            for id in 1..=n_customers as i64 {
                let (first, last) = (rng.pick(FIRST), rng.pick(LAST));
                ins.execute(params![
                    id,
                    format!("{first} {last}"),
                    format!("{first}.{last}.{id}@example.com"),
                    rng.pick(CITIES),
                    T0 - 86_400 * 365
                ])?;
            }
            let mut ins = conn.prepare(
                "INSERT INTO products(id, name, description, price, stock) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for id in 1..=n_products as i64 {
                let words = rng.range(8, 30) as usize;
                ins.execute(params![
                    id,
                    rng.text(3),
                    rng.text(words),
                    rng.range(99, 20_000) as i64,
                    rng.range(0, 5_000) as i64
                ])?;
            }
        }
        conn.execute_batch("COMMIT")?;
        let prices = {
            let mut st = conn.prepare("SELECT price FROM products ORDER BY id")?;
            let v = st
                .query_map([], |r| r.get::<_, i64>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            v
        };
        // Fisher–Yates: hotness order independent of id order.
        let mut customers: Vec<i64> = (1..=n_customers as i64).collect();
        for i in (1..customers.len()).rev() {
            customers.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let mut w = Oltp {
            rng,
            customers,
            prices,
            max_order: 0,
            // ~1.2% of the pages per step at 256 MiB (measured: most of it is index
            // leaves and customer rows touched once each).
            new_orders: scaled(120.0, scale, 4),
            status_updates: scaled(180.0, scale, 6),
            cancels: scaled(8.0, scale, 1),
            profile_edits: scaled(15.0, scale, 1),
            vacuum_every,
        };
        // History: one order a minute up to the start, all delivered but the newest.
        let mut t = T0 - 60 * 10_000_000;
        fill_to(conn, size, |c| {
            for _ in 0..200 {
                t += 60;
                w.insert_order(c, t, "delivered")?;
            }
            Ok(())
        })?;
        let recent = w.recent_window() as i64;
        conn.execute(
            "UPDATE orders SET status = CASE abs(id) % 4 WHEN 0 THEN 'new' WHEN 1 THEN 'paid'
                 WHEN 2 THEN 'packed' ELSE 'shipped' END WHERE id > ?1",
            [w.max_order - recent],
        )?;
        Ok(w)
    }

    /// Orders still moving through their statuses: the last 12 hours' worth.
    fn recent_window(&self) -> u64 {
        self.new_orders * 72
    }

    /// Inserts one order with 1–5 items.
    fn insert_order(&mut self, conn: &Connection, t: i64, status: &str) -> Result<NewOrder> {
        let rng = &mut self.rng;
        let customer = self.customers[rng.skewed(self.customers.len() as u64, 4) as usize];
        let lines: Vec<(i64, i64)> = (0..rng.range(1, 5))
            .map(|_| {
                let product = rng.skewed(self.prices.len() as u64, 3) as i64 + 1;
                (product, rng.range(1, 4) as i64)
            })
            .collect();
        let total: i64 = lines
            .iter()
            .map(|&(p, q)| self.prices[p as usize - 1] * q)
            .sum();
        let note = if rng.chance(0.3) {
            let words = rng.range(3, 12) as usize;
            Some(rng.text(words))
        } else {
            None
        };
        conn.prepare_cached(
            "INSERT INTO orders(customer_id, status, total, created_at, updated_at, note)
             VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
        )?
        .execute(params![customer, status, total, t, note])?;
        let id = conn.last_insert_rowid();
        self.max_order = id;
        let mut ins = conn.prepare_cached(
            "INSERT INTO order_items(order_id, line, product_id, qty, price) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for (line, &(p, q)) in lines.iter().enumerate() {
            ins.execute(params![
                id,
                line as i64 + 1,
                p,
                q,
                self.prices[p as usize - 1]
            ])?;
        }
        Ok(NewOrder {
            customer,
            total,
            lines,
        })
    }
}

struct NewOrder {
    customer: i64,
    total: i64,
    /// (product id, quantity)
    lines: Vec<(i64, i64)>,
}

impl Workload for Oltp {
    fn name(&self) -> &'static str {
        if self.vacuum_every.is_some() {
            "vacuum"
        } else {
            "oltp"
        }
    }

    fn describe(&self) -> String {
        let vacuum = match self.vacuum_every {
            Some(k) => format!("; VACUUM every {k} steps"),
            None => String::new(),
        };
        format!(
            "shop: customers, products, orders, order items, 5 secondary indexes; per step {} new \
             orders (skewed customers and products), {} status updates of recent orders, {} \
             cancelled orders deleted, {} customer profile edits{vacuum}",
            self.new_orders, self.status_updates, self.cancels, self.profile_edits
        )
    }

    fn step(&mut self, conn: &Connection, step: u32) -> Result<()> {
        conn.execute_batch("BEGIN")?;
        for i in 0..self.new_orders {
            let t = now(step, i);
            let NewOrder {
                customer,
                total,
                lines,
            } = self.insert_order(conn, t, "new")?;
            conn.prepare_cached(
                "UPDATE customers SET orders = orders + 1, balance = balance + ?2, updated_at = ?3
                 WHERE id = ?1",
            )?
            .execute(params![customer, total, t])?;
            let mut stock =
                conn.prepare_cached("UPDATE products SET stock = stock - ?2 WHERE id = ?1")?;
            for (p, q) in lines {
                stock.execute(params![p, q])?;
            }
        }
        let window = self.recent_window().min(self.max_order as u64).max(1);
        for i in 0..self.status_updates {
            let id = self.max_order - self.rng.skewed(window, 2) as i64;
            conn.prepare_cached(&format!(
                "UPDATE orders SET status = {STATUS_NEXT}, updated_at = ?2 WHERE id = ?1"
            ))?
            .execute(params![id, now(step, i)])?;
        }
        for _ in 0..self.cancels {
            let id = 1 + self.rng.below(self.max_order as u64) as i64;
            conn.prepare_cached("DELETE FROM order_items WHERE order_id = ?1")?
                .execute([id])?;
            conn.prepare_cached("DELETE FROM orders WHERE id = ?1")?
                .execute([id])?;
        }
        for i in 0..self.profile_edits {
            let id = self.customers[self.rng.below(self.customers.len() as u64) as usize];
            let (first, last) = (self.rng.pick(FIRST), self.rng.pick(LAST));
            conn.prepare_cached(
                "UPDATE customers SET email = ?2, city = ?3, updated_at = ?4 WHERE id = ?1",
            )?
            .execute(params![
                id,
                format!("{first}.{last}.{id}.{step}@example.org"),
                self.rng.pick(CITIES),
                now(step, i)
            ])?;
        }
        conn.execute_batch("COMMIT")?;
        if self.vacuum_every.is_some_and(|k| step % k == 0) {
            conn.execute_batch("VACUUM")?;
        }
        Ok(())
    }
}

const SOURCES: &[&str] = &[
    "api-1", "api-2", "api-3", "api-4", "web-1", "web-2", "worker-1", "worker-2", "worker-3",
    "cron", "auth", "billing", "search", "mailer", "gateway", "cache",
];
const PATHS: &[&str] = &[
    "/v1/orders",
    "/v1/orders/{id}",
    "/v1/users/{id}",
    "/v1/search",
    "/v1/cart",
    "/login",
    "/health",
    "/v1/payments",
    "/v1/items/{id}",
    "/static/app.js",
];

/// `append`: a time-ordered log with an index on time and one on (source, time);
/// every `delete_every` steps the oldest rows (as many as were added since the last
/// deletion) are deleted, so the database stays the same size and new rows reuse
/// freed pages, as with a retention policy.
struct Append {
    rng: Rng,
    per_step: u64,
    delete_every: u32,
    ts: i64,
}

impl Append {
    fn build(conn: &Connection, size: u64, rng: &mut Rng) -> Result<Append> {
        conn.execute_batch(
            "CREATE TABLE log(id INTEGER PRIMARY KEY, ts INTEGER NOT NULL, level TEXT NOT NULL,
                 source TEXT NOT NULL, request_id TEXT NOT NULL, message TEXT NOT NULL);
             CREATE INDEX log_ts ON log(ts);
             CREATE INDEX log_source_ts ON log(source, ts);",
        )?;
        let mut w = Append {
            rng: Rng::new(0),
            per_step: 0,
            delete_every: 6,
            ts: T0 * 1000 - 86_400_000 * 30,
        };
        fill_to(conn, size, |c| {
            for _ in 0..500 {
                w.ts += rng.range(1, 400) as i64;
                w.insert(c, rng)?;
            }
            Ok(())
        })?;
        let rows: i64 = conn.query_row("SELECT count(*) FROM log", [], |r| r.get(0))?;
        // 0.4% of the rows per step: ~0.5% of the pages with the index entries.
        w.per_step = (rows as u64 / 250).max(10);
        Ok(w)
    }

    fn with_rng(mut self, rng: Rng) -> Append {
        self.rng = rng;
        self
    }

    fn insert(&mut self, conn: &Connection, rng: &mut Rng) -> Result<()> {
        let level = match rng.below(100) {
            0..=79 => "INFO",
            80..=89 => "DEBUG",
            90..=96 => "WARN",
            _ => "ERROR",
        };
        let source = SOURCES[rng.skewed(SOURCES.len() as u64, 2) as usize];
        let words = rng.range(2, 10) as usize;
        let message = format!(
            "{} {} status={} duration_ms={} user={} {}",
            ["GET", "POST", "PUT", "DELETE"][rng.skewed(4, 2) as usize],
            rng.pick(PATHS)
                .replace("{id}", &rng.range(1, 99_999).to_string()),
            [200, 200, 200, 201, 204, 304, 400, 404, 500][rng.below(9) as usize],
            rng.skewed(5_000, 3),
            rng.range(1, 50_000),
            rng.text(words)
        );
        conn.prepare_cached(
            "INSERT INTO log(ts, level, source, request_id, message) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![self.ts, level, source, rng.hex(16), message])?;
        Ok(())
    }
}

impl Workload for Append {
    fn name(&self) -> &'static str {
        "append"
    }

    fn describe(&self) -> String {
        format!(
            "time-ordered log, indexes on time and (source, time); per step {} new rows; every {} \
             steps the oldest {} rows are deleted",
            self.per_step,
            self.delete_every,
            self.per_step * self.delete_every as u64
        )
    }

    fn step(&mut self, conn: &Connection, step: u32) -> Result<()> {
        conn.execute_batch("BEGIN")?;
        // Rows spread evenly over the step's 10 minutes.
        let start = now(step, 0) * 1000;
        let gap = (STEP_SECS * 1000) / self.per_step as i64;
        let mut rng = Rng::new(self.rng.next());
        for i in 0..self.per_step as i64 {
            self.ts = self.ts.max(start + i * gap);
            self.insert(conn, &mut rng)?;
        }
        if step % self.delete_every == 0 {
            conn.execute(
                "DELETE FROM log WHERE id < (SELECT min(id) FROM log) + ?1",
                [(self.per_step * self.delete_every as u64) as i64],
            )?;
        }
        conn.execute_batch("COMMIT")?;
        Ok(())
    }
}

/// `kv`: a key/value table of blobs of 200–1800 bytes (part text, part random
/// bytes: they compress about 1.5:1), overwritten at uniformly random keys with a
/// new value of a new length.
struct Kv {
    rng: Rng,
    keys: u64,
    per_step: u64,
}

impl Kv {
    fn build(conn: &Connection, size: u64, rng: &mut Rng) -> Result<Kv> {
        conn.execute_batch(
            "CREATE TABLE kv(id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, value BLOB NOT NULL,
                 version INTEGER NOT NULL, updated_at INTEGER NOT NULL);",
        )?;
        let mut keys = 0u64;
        fill_to(conn, size, |c| {
            for _ in 0..200 {
                keys += 1;
                c.prepare_cached(
                    "INSERT INTO kv(id, key, value, version, updated_at) VALUES (?1, ?2, ?3, 1, ?4)",
                )?
                .execute(params![keys as i64, key(keys), value(rng), T0 - 86_400])?;
            }
            Ok(())
        })?;
        Ok(Kv {
            rng: Rng::new(0),
            keys,
            // ~0.25% of the keys: about 1% of the pages (a page holds ~4 values).
            per_step: (keys / 400).max(3),
        })
    }

    fn with_rng(mut self, rng: Rng) -> Kv {
        self.rng = rng;
        self
    }
}

fn key(n: u64) -> String {
    format!("user:{n:09}:profile")
}

fn value(rng: &mut Rng) -> Vec<u8> {
    let len = rng.range(200, 1800) as usize;
    let random = len * 2 / 5;
    let words = (len - random) / 6 + 1;
    let mut v = rng.text(words).into_bytes();
    v.truncate(len - random);
    v.extend_from_slice(&rng.bytes(random));
    v
}

impl Workload for Kv {
    fn name(&self) -> &'static str {
        "kv"
    }

    fn describe(&self) -> String {
        format!(
            "key/value table of {} blobs of 200-1800 bytes; per step {} overwrites at random keys",
            self.keys, self.per_step
        )
    }

    fn step(&mut self, conn: &Connection, step: u32) -> Result<()> {
        conn.execute_batch("BEGIN")?;
        for i in 0..self.per_step {
            let k = 1 + self.rng.below(self.keys);
            let v = value(&mut self.rng);
            conn.prepare_cached(
                "UPDATE kv SET value = ?2, version = version + 1, updated_at = ?3 WHERE key = ?1",
            )?
            .execute(params![key(k), v, now(step, i)])?;
        }
        conn.execute_batch("COMMIT")?;
        Ok(())
    }
}

/// `cms`: a content store keeping every revision of its documents (text of
/// 2–6 KiB). Each step saves new revisions of a few documents: the previous text
/// with a few words changed. New pages then resemble older pages closely, which
/// page-level dedup cannot exploit (the pages differ) and per-page compression
/// only partly does: the hard case for pagesnap's storage cost.
struct Cms {
    rng: Rng,
    docs: u64,
    per_step: u64,
}

impl Cms {
    fn build(conn: &Connection, size: u64, rng: &mut Rng) -> Result<Cms> {
        conn.execute_batch(
            "CREATE TABLE revisions(id INTEGER PRIMARY KEY, doc INTEGER NOT NULL, rev INTEGER NOT NULL,
                 saved_at INTEGER NOT NULL, body TEXT NOT NULL);
             CREATE UNIQUE INDEX revisions_doc ON revisions(doc, rev);",
        )?;
        let mut docs = 0u64;
        fill_to(conn, size, |c| {
            for _ in 0..50 {
                docs += 1;
                let words = rng.range(350, 1000);
                c.prepare_cached(
                    "INSERT INTO revisions(doc, rev, saved_at, body) VALUES (?1, 1, ?2, ?3)",
                )?
                .execute(params![
                    docs as i64,
                    T0 - 86_400,
                    rng.text(words as usize)
                ])?;
            }
            Ok(())
        })?;
        Ok(Cms {
            rng: Rng::new(0),
            docs,
            // ~0.4% of the documents get a new revision per step: ~1% of the pages.
            per_step: (docs / 250).max(2),
        })
    }

    fn with_rng(mut self, rng: Rng) -> Cms {
        self.rng = rng;
        self
    }
}

impl Workload for Cms {
    fn name(&self) -> &'static str {
        "cms"
    }

    fn describe(&self) -> String {
        format!(
            "{} documents of 2-6 KiB text, every revision kept; per step {} new revisions, each the previous text with a few words changed",
            self.docs, self.per_step
        )
    }

    fn step(&mut self, conn: &Connection, step: u32) -> Result<()> {
        conn.execute_batch("BEGIN")?;
        for i in 0..self.per_step {
            let doc = 1 + self.rng.below(self.docs) as i64;
            let (rev, body): (i64, String) = conn
                .prepare_cached(
                    "SELECT rev, body FROM revisions WHERE doc = ?1 ORDER BY rev DESC LIMIT 1",
                )?
                .query_row([doc], |r| Ok((r.get(0)?, r.get(1)?)))?;
            let mut words: Vec<String> = body.split(' ').map(String::from).collect();
            for _ in 0..3 {
                let at = self.rng.below(words.len() as u64) as usize;
                words[at] = self.rng.text(1);
            }
            conn.prepare_cached(
                "INSERT INTO revisions(doc, rev, saved_at, body) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![doc, rev + 1, now(step, i), words.join(" ")])?;
        }
        conn.execute_batch("COMMIT")?;
        Ok(())
    }
}

/// `--db FILE --sql FILE`: the user's script, once per step.
struct Replay {
    sql_path: PathBuf,
    sql: String,
}

impl Workload for Replay {
    fn name(&self) -> &'static str {
        "replay"
    }

    fn describe(&self) -> String {
        format!("replay of {} once per step", self.sql_path.display())
    }

    fn step(&mut self, conn: &Connection, step: u32) -> Result<()> {
        let file = self.sql_path.display();
        conn.execute_batch(&self.sql)
            .map_err(|e| anyhow!("{file}: step {step}: {e}"))?;
        if !conn.is_autocommit() {
            // Snapshots see committed data only: an open transaction would make the
            // step's work invisible and then fail at the next step's BEGIN.
            bail!("{file}: leaves a transaction open (end it with COMMIT)");
        }
        Ok(())
    }
}

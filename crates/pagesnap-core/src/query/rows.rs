//! `pagesnap diff --rows TABLE`: the rows of one table added, removed and changed
//! between two snapshots, by rowid (or the primary key of a `WITHOUT ROWID`
//! table), with both snapshots attached in place: nothing is restored.
//!
//! The comparison is SQLite's own (joins on the key through each side's
//! b-tree, `IS NOT` per column, so NULLs and collations compare as SQLite
//! compares them), not a merge in Rust that would have to copy SQLite's
//! ordering of every type and collation.

use super::{explain, QueryError, QueryOptions, Result};
use crate::store::{Snapshot, Store};
use rusqlite::types::Value;
use rusqlite::Connection;

/// How a row differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowChangeKind {
    /// In B, not in A.
    Added,
    /// In A, not in B.
    Removed,
    /// In both, with some column different.
    Changed,
}

/// One row that differs, named by its key.
#[derive(Clone, Debug, PartialEq)]
pub struct RowChange {
    pub kind: RowChangeKind,
    /// The key's values, in [`RowDiff::key`]'s order.
    pub key: Vec<Value>,
    /// For a changed row: the columns whose values differ.
    pub columns: Vec<String>,
}

/// The rows of one table that differ between two snapshots.
#[derive(Clone, Debug, PartialEq)]
pub struct RowDiff {
    pub table: String,
    /// The key's columns (`rowid` for a rowid table).
    pub key: Vec<String>,
    /// The columns compared: those both snapshots' table has.
    pub columns: Vec<String>,
    /// Columns only one snapshot's table has (not compared).
    pub columns_only_in_a: Vec<String>,
    pub columns_only_in_b: Vec<String>,
    /// Removed rows, then added, then changed; each by key, ascending.
    pub changes: Vec<RowChange>,
}

impl Store {
    /// The rows of `table` added, removed and changed from `a` to `b`.
    pub fn diff_rows(&self, a: &Snapshot, b: &Snapshot, table: &str) -> Result<RowDiff> {
        let conn = self.open_snapshot(a)?;
        self.attach_snapshot(&conn, b, "b", &QueryOptions::default())?;
        diff_rows(&conn, table)
    }
}

/// A table's shape in one schema: its key and its columns.
struct Shape {
    key: Vec<String>,
    columns: Vec<String>,
}

fn shape(conn: &Connection, schema: &str, table: &str) -> Result<Option<Shape>> {
    let run = || -> rusqlite::Result<Option<Shape>> {
        let kind: Option<(String, i64)> = conn
            .query_row(
                "SELECT type, wr FROM pragma_table_list WHERE schema = ?1 AND name = ?2",
                [schema, table],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })?;
        let Some((kind, without_rowid)) = kind else {
            return Ok(None);
        };
        if kind != "table" {
            return Ok(None);
        }
        let mut stmt =
            conn.prepare("SELECT name, pk FROM pragma_table_info(?2, ?1) ORDER BY cid")?;
        let cols: Vec<(String, i64)> = stmt
            .query_map([schema, table], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let key = match without_rowid != 0 {
            true => {
                let mut pk: Vec<&(String, i64)> = cols.iter().filter(|c| c.1 > 0).collect();
                pk.sort_by_key(|c| c.1);
                pk.into_iter().map(|c| c.0.clone()).collect()
            }
            false => vec!["rowid".to_string()],
        };
        Ok(Some(Shape {
            key,
            columns: cols.into_iter().map(|c| c.0).collect(),
        }))
    };
    run().map_err(|e| explain(conn, e))
}

/// The rows of `table` that differ between `main` and `b` on `conn`.
pub(crate) fn diff_rows(conn: &Connection, table: &str) -> Result<RowDiff> {
    let missing = |which: &str| {
        QueryError::Table(format!(
            "no table {table:?} in snapshot {which} (views and virtual tables cannot be compared)"
        ))
    };
    let a = shape(conn, "main", table)?.ok_or_else(|| missing("A"))?;
    let b = shape(conn, "b", table)?.ok_or_else(|| missing("B"))?;
    if a.key != b.key {
        return Err(QueryError::Table(format!(
            "table {table:?} has key ({}) in A and ({}) in B: rows cannot be matched",
            a.key.join(", "),
            b.key.join(", ")
        )));
    }
    let columns: Vec<String> = b
        .columns
        .iter()
        .filter(|c| a.columns.contains(c) && !a.key.contains(c))
        .cloned()
        .collect();
    let only = |x: &Shape, y: &Shape| -> Vec<String> {
        x.columns
            .iter()
            .filter(|c| !y.columns.contains(c))
            .cloned()
            .collect()
    };
    let t = quote(table);
    let keys = |alias: &str| {
        a.key
            .iter()
            .map(|k| format!("{alias}.{}", quote(k)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let on = a
        .key
        .iter()
        .map(|k| format!("y.{0} = x.{0}", quote(k)))
        .collect::<Vec<_>>()
        .join(" AND ");
    let mut changes = Vec::new();
    // Removed (in A only), then added (in B only).
    for (kind, from, other) in [
        (RowChangeKind::Removed, "main", "b"),
        (RowChangeKind::Added, "b", "main"),
    ] {
        let sql = format!(
            "SELECT {} FROM {from}.{t} AS x WHERE NOT EXISTS (SELECT 1 FROM {other}.{t} AS y WHERE {on}) ORDER BY {}",
            keys("x"),
            keys("x")
        );
        for key in query_keys(conn, &sql, a.key.len(), 0)? {
            changes.push(RowChange {
                kind,
                key: key.0,
                columns: Vec::new(),
            });
        }
    }
    if !columns.is_empty() {
        let differs: Vec<String> = columns
            .iter()
            .map(|c| format!("x.{0} IS NOT y.{0}", quote(c)))
            .collect();
        let sql = format!(
            "SELECT {}, {} FROM main.{t} AS x JOIN b.{t} AS y ON {on} WHERE {} ORDER BY {}",
            keys("x"),
            differs.join(", "),
            differs.join(" OR "),
            keys("x")
        );
        for (key, flags) in query_keys(conn, &sql, a.key.len(), columns.len())? {
            let changed = columns
                .iter()
                .zip(flags)
                .filter(|(_, f)| *f)
                .map(|(c, _)| c.clone())
                .collect();
            changes.push(RowChange {
                kind: RowChangeKind::Changed,
                key,
                columns: changed,
            });
        }
    }
    Ok(RowDiff {
        table: table.to_string(),
        columns_only_in_a: only(&a, &b),
        columns_only_in_b: only(&b, &a),
        key: a.key,
        columns,
        changes,
    })
}

/// The rows of `sql`: `n_keys` key values, then `n_flags` booleans.
fn query_keys(
    conn: &Connection,
    sql: &str,
    n_keys: usize,
    n_flags: usize,
) -> Result<Vec<(Vec<Value>, Vec<bool>)>> {
    let run = || -> rusqlite::Result<Vec<(Vec<Value>, Vec<bool>)>> {
        let mut stmt = conn.prepare(sql)?;
        let rows = stmt.query_map([], |r| {
            let key = (0..n_keys)
                .map(|i| r.get(i))
                .collect::<rusqlite::Result<_>>()?;
            let flags = (0..n_flags)
                .map(|i| r.get::<_, bool>(n_keys + i))
                .collect::<rusqlite::Result<_>>()?;
            Ok((key, flags))
        })?;
        rows.collect()
    };
    run().map_err(|e| explain(conn, e))
}

/// `name` as an SQL identifier: in double quotes, its quotes doubled.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

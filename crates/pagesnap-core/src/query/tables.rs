//! `pagesnap ls`: every table and index of a snapshot, with its rows, pages and
//! bytes, from SQLite's `dbstat` run on the snapshot in place.
//!
//! `dbstat` walks every b-tree page, so this reads the whole image once (as a
//! restore would, without writing it): the counts are exact, not estimates.

use super::{explain, Result};
use crate::store::{Snapshot, Store};
use rusqlite::Connection;
use serde::Serialize;
use std::collections::BTreeMap;

/// One b-tree of a snapshot (a table, an index, the schema), or its free pages.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TableUsage {
    pub name: String,
    /// `table`, `index`, `schema` (`sqlite_schema`), or `free` (the free
    /// list: pages no b-tree uses).
    pub kind: String,
    /// The table an index belongs to (the table's own name for a table).
    pub table: String,
    /// Rows of a table, entries of an index (exact: its cells).
    pub rows: u64,
    pub pages: u64,
    /// Bytes of the file those pages take (pages × page size).
    pub bytes: u64,
    /// Bytes of row or entry data in them (the rest is headers and free space).
    pub payload: u64,
}

impl Store {
    /// The tables and indexes of `snap`, largest first, then the free pages.
    pub fn snapshot_tables(&self, snap: &Snapshot) -> Result<Vec<TableUsage>> {
        let conn = self.open_snapshot(snap)?;
        tables(&conn).map_err(|e| explain(&conn, e))
    }
}

/// The b-trees of `conn`'s main database, with their usage.
pub(crate) fn tables(conn: &Connection) -> rusqlite::Result<Vec<TableUsage>> {
    // What each b-tree is: sqlite_schema's type and table, and whether a table
    // is WITHOUT ROWID (its rows are then the cells of an index b-tree).
    let mut kinds: BTreeMap<String, (String, String, bool)> = BTreeMap::new();
    let mut stmt = conn.prepare(
        "SELECT s.name, s.type, s.tbl_name, coalesce(l.wr, 0)
         FROM sqlite_schema AS s LEFT JOIN pragma_table_list AS l
           ON l.schema = 'main' AND l.name = s.name
         WHERE s.rootpage > 0",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            (r.get(1)?, r.get(2)?, r.get::<_, i64>(3)? != 0),
        ))
    })?;
    for row in rows {
        let (name, kind) = row?;
        kinds.insert(name, kind);
    }
    let mut out: BTreeMap<String, TableUsage> = BTreeMap::new();
    let mut stmt = conn.prepare(
        "SELECT name, pagetype, count(*), sum(ncell), sum(pgsize), sum(payload)
         FROM dbstat('main') GROUP BY name, pagetype",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let name: String = r.get(0)?;
        let pagetype: String = r.get(1)?;
        let (pages, cells, bytes, payload): (i64, i64, i64, i64) =
            (r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?);
        let (kind, table, without_rowid) = match kinds.get(&name) {
            Some((k, t, wr)) => (k.clone(), t.clone(), *wr),
            None => ("schema".to_string(), name.clone(), false),
        };
        let is_index = kind == "index" || without_rowid;
        let u = out.entry(name.clone()).or_insert_with(|| TableUsage {
            name: name.clone(),
            kind: kind.clone(),
            table: table.clone(),
            ..TableUsage::default()
        });
        // A table's rows are its leaf cells; an index keeps entries in its
        // interior cells too.
        if pagetype == "leaf" || (is_index && pagetype == "internal") {
            u.rows += cells.max(0) as u64;
        }
        u.pages += pages.max(0) as u64;
        u.bytes += bytes.max(0) as u64;
        u.payload += payload.max(0) as u64;
    }
    let mut list: Vec<TableUsage> = out.into_values().collect();
    list.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.name.cmp(&b.name)));
    let (free, page_size): (i64, i64) = conn.query_row(
        "SELECT (SELECT freelist_count FROM pragma_freelist_count), (SELECT page_size FROM pragma_page_size)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    if free > 0 {
        list.push(TableUsage {
            name: "(free pages)".into(),
            kind: "free".into(),
            pages: free as u64,
            bytes: (free * page_size) as u64,
            ..TableUsage::default()
        });
    }
    Ok(list)
}

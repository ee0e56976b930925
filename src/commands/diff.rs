//! `pagesnap diff`: what changed between two snapshots, per table and index;
//! `--rows TABLE`: the rows of one table added, removed and changed.

use super::{open_store, pick_snapshot, print_json, query_error};
use crate::cli::{DiffArgs, Global};
use crate::output;
use anyhow::Result;
use pagesnap_core::query::{RowChangeKind, RowDiff, SnapshotDiff};
use pagesnap_core::rusqlite::types::Value;
use pagesnap_core::types::to_hex;
use pagesnap_core::Snapshot;
use serde_json::json;
use std::process::ExitCode;

pub fn run(g: &Global, a: &DiffArgs) -> Result<ExitCode> {
    let store = open_store(g)?;
    let sa = pick_snapshot(&store, &a.a, &a.pick)?;
    let sb = pick_snapshot(&store, &a.b, &a.pick)?;
    if let Some(table) = &a.rows {
        let d = store.diff_rows(&sa, &sb, table).map_err(query_error)?;
        match g.json {
            true => print_json(&rows_json(&sa, &sb, &d))?,
            false => print_rows(&d),
        }
        said(g, &sa, &sb);
        return Ok(ExitCode::SUCCESS);
    }
    let d = store.diff_snapshots(&sa, &sb).map_err(query_error)?;
    match g.json {
        true => {
            let mut v = serde_json::to_value(&d)?;
            v["a"] = json!(sa.id.to_hex());
            v["b"] = json!(sb.id.to_hex());
            print_json(&v)?
        }
        false => print_pages(&d),
    }
    said(g, &sa, &sb);
    Ok(ExitCode::SUCCESS)
}

/// Which snapshots were compared, on stderr (after the output: an error comes first).
fn said(g: &Global, sa: &Snapshot, sb: &Snapshot) {
    if g.json {
        return;
    }
    for (which, s) in [("A", sa), ("B", sb)] {
        eprintln!("pagesnap: {which}: {}", output::snapshot_used(s));
    }
}

fn print_pages(d: &SnapshotDiff) {
    if d.page_size_a != d.page_size_b {
        println!(
            "page size changed ({} to {} bytes): every page counts as freed and added",
            d.page_size_a, d.page_size_b
        );
    }
    let width = d
        .objects
        .iter()
        .map(|o| o.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let twidth = d
        .objects
        .iter()
        .map(|o| o.table.len())
        .max()
        .unwrap_or(5)
        .max(5);
    println!(
        "{:<width$}  {:<11}  {:<twidth$}  {:>9}  {:>9}  {:>9}  {:>10}",
        "NAME", "KIND", "TABLE", "CHANGED", "ADDED", "FREED", "STORED"
    );
    for o in &d.objects {
        println!(
            "{:<width$}  {:<11}  {:<twidth$}  {:>9}  {:>9}  {:>9}  {:>10}",
            o.name,
            o.kind,
            o.table,
            o.changed,
            o.added,
            o.freed,
            output::bytes(o.stored_bytes)
        );
    }
    let sum =
        |f: fn(&pagesnap_core::query::ObjectDiff) -> u64| d.objects.iter().map(f).sum::<u64>();
    println!(
        "{} pages changed, {} added, {} freed ({} pages to {}); B's new chunks take {}",
        sum(|o| o.changed),
        sum(|o| o.added),
        sum(|o| o.freed),
        d.pages_a,
        d.pages_b,
        output::bytes(d.stored_bytes)
    );
    eprintln!(
        "pagesnap: read {} page(s) to find their owners",
        d.pages_read
    );
}

/// A key as text: `12`, `'abc'`, `x'00ff'`, several joined by `, `.
fn key_text(key: &[Value]) -> String {
    key.iter()
        .map(|v| match v {
            Value::Null => "NULL".to_string(),
            Value::Integer(i) => i.to_string(),
            Value::Real(f) => format!("{f:?}"),
            Value::Text(t) => format!("'{}'", t.replace('\'', "''")),
            Value::Blob(b) => format!("x'{}'", to_hex(b)),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn key_json(key: &[Value]) -> serde_json::Value {
    key.iter()
        .map(|v| match v {
            Value::Null => serde_json::Value::Null,
            Value::Integer(i) => json!(i),
            Value::Real(f) => json!(f),
            Value::Text(t) => json!(t),
            Value::Blob(b) => json!(to_hex(b)),
        })
        .collect()
}

fn print_rows(d: &RowDiff) {
    let key = d.key.join(", ");
    for c in &d.changes {
        match c.kind {
            RowChangeKind::Removed => println!("- {key} = {}", key_text(&c.key)),
            RowChangeKind::Added => println!("+ {key} = {}", key_text(&c.key)),
            RowChangeKind::Changed => {
                println!("~ {key} = {}  ({})", key_text(&c.key), c.columns.join(", "))
            }
        }
    }
    let n = |k| d.changes.iter().filter(|c| c.kind == k).count();
    println!(
        "{}: {} row(s) removed, {} added, {} changed",
        d.table,
        n(RowChangeKind::Removed),
        n(RowChangeKind::Added),
        n(RowChangeKind::Changed)
    );
    if !d.columns_only_in_a.is_empty() || !d.columns_only_in_b.is_empty() {
        println!(
            "not compared: columns only in A ({}), only in B ({})",
            d.columns_only_in_a.join(", "),
            d.columns_only_in_b.join(", ")
        );
    }
}

fn rows_json(a: &Snapshot, b: &Snapshot, d: &RowDiff) -> serde_json::Value {
    let keys = |k| -> Vec<serde_json::Value> {
        d.changes
            .iter()
            .filter(|c| c.kind == k)
            .map(|c| key_json(&c.key))
            .collect()
    };
    let changed: Vec<_> = d
        .changes
        .iter()
        .filter(|c| c.kind == RowChangeKind::Changed)
        .map(|c| json!({"key": key_json(&c.key), "columns": c.columns}))
        .collect();
    json!({
        "a": a.id.to_hex(),
        "b": b.id.to_hex(),
        "table": d.table,
        "key": d.key,
        "columns": d.columns,
        "columns_only_in_a": d.columns_only_in_a,
        "columns_only_in_b": d.columns_only_in_b,
        "removed": keys(RowChangeKind::Removed),
        "added": keys(RowChangeKind::Added),
        "changed": changed,
    })
}

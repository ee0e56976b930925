//! `pagesnap sql`: SQL on a snapshot opened in place; rows as a table, CSV or JSON.

use super::{open_store, pick_snapshot, query_error};
use crate::cli::{Global, SqlArgs};
use crate::output;
use anyhow::{anyhow, Result};
use pagesnap_core::query::{self, QueryOptions};
use pagesnap_core::rusqlite::fallible_iterator::FallibleIterator as _;
use pagesnap_core::rusqlite::types::ValueRef;
use pagesnap_core::rusqlite::{Batch, Connection};
use pagesnap_core::types::to_hex;
use serde_json::Value;
use std::io::{Read, Write};
use std::process::ExitCode;

/// How rows are printed.
#[derive(Clone, Copy)]
enum Format {
    Table,
    Csv,
    Json,
}

pub fn run(g: &Global, a: &SqlArgs) -> Result<ExitCode> {
    let cache_bytes = pagesnap_core::base_cache::parse_size(&a.cache)
        .ok_or_else(|| usage!("--cache {}: not a size (e.g. 8MiB, 512KiB)", a.cache))?;
    let sql = match &a.sql {
        Some(s) => s.clone(),
        None => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| anyhow!("cannot read SQL from stdin: {e}"))?;
            s
        }
    };
    if sql.trim().is_empty() {
        return Err(usage!("no SQL given: pass it as an argument or on stdin"));
    }
    let store = open_store(g)?;
    let snap = pick_snapshot(&store, &a.snapshot, &a.pick)?;
    let conn = store
        .open_snapshot_with(&snap, &QueryOptions { cache_bytes })
        .map_err(query_error)?;
    let format = match (a.csv, g.json) {
        (true, _) => Format::Csv,
        (_, true) => Format::Json,
        _ => Format::Table,
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    run_all(&conn, &sql, format, &mut out).map_err(|e| match e {
        Failure::Sql(e) => query_error(query::explain(&conn, e)),
        Failure::Io(e) => anyhow!("cannot write the rows: {e}"),
    })?;
    out.flush()?;
    // After the rows: stderr then starts with the error, when there is one.
    let s = query::read_stats(&conn);
    eprintln!(
        "pagesnap: {}; read {} chunk(s), {}, from the store in {} read(s)",
        output::snapshot_used(&snap),
        s.chunks,
        output::bytes(s.bytes),
        s.reads
    );
    Ok(ExitCode::SUCCESS)
}

enum Failure {
    Sql(pagesnap_core::rusqlite::Error),
    Io(std::io::Error),
}

impl From<pagesnap_core::rusqlite::Error> for Failure {
    fn from(e: pagesnap_core::rusqlite::Error) -> Self {
        Failure::Sql(e)
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Io(e)
    }
}

/// Runs every statement of `sql`, printing the rows of those that give any.
fn run_all(
    conn: &Connection,
    sql: &str,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let mut batch = Batch::new(conn, sql);
    let mut first = true;
    while let Some(mut stmt) = batch.next()? {
        let names: Vec<String> = stmt.column_names().map(|s| s.to_string()).collect();
        let mut rows = stmt.query([])?;
        if names.is_empty() {
            // A statement without columns (a PRAGMA that sets): run it through.
            while rows.next()?.is_some() {}
            continue;
        }
        if !first && !matches!(format, Format::Json) {
            writeln!(out)?;
        }
        first = false;
        match format {
            Format::Table => {
                let mut cells = Vec::new();
                while let Some(r) = rows.next()? {
                    let row: Vec<String> = (0..names.len())
                        .map(|i| r.get_ref(i).map(table_cell))
                        .collect::<Result<_, _>>()?;
                    cells.push(row);
                }
                write_table(out, &names, &cells)?;
            }
            Format::Csv => {
                writeln!(out, "{}", csv_line(names.iter().map(String::as_str)))?;
                while let Some(r) = rows.next()? {
                    let row: Vec<String> = (0..names.len())
                        .map(|i| r.get_ref(i).map(csv_cell))
                        .collect::<Result<_, _>>()?;
                    writeln!(out, "{}", csv_line(row.iter().map(String::as_str)))?;
                }
            }
            Format::Json => {
                // One array per statement, streamed: a row is printed as it comes.
                write!(out, "[")?;
                let mut n = 0;
                while let Some(r) = rows.next()? {
                    // Members in column order (a serde_json map would sort them).
                    let mut members = Vec::with_capacity(names.len());
                    for (i, name) in names.iter().enumerate() {
                        members.push(format!(
                            "{}:{}",
                            Value::from(name.as_str()),
                            json_value(r.get_ref(i)?)
                        ));
                    }
                    let sep = if n == 0 { "" } else { "," };
                    write!(out, "{sep}\n  {{{}}}", members.join(","))?;
                    n += 1;
                }
                writeln!(out, "{}]", if n == 0 { "" } else { "\n" })?;
            }
        }
    }
    Ok(())
}

/// A value as the table shows it: NULL, numbers and text as SQLite prints
/// them, a blob as `x'…'` (its first 32 bytes).
fn table_cell(v: ValueRef<'_>) -> String {
    match v {
        ValueRef::Null => "NULL".into(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(f) => format!("{f:?}"),
        ValueRef::Text(t) => String::from_utf8_lossy(t).replace(['\n', '\r', '\t'], " "),
        ValueRef::Blob(b) if b.len() > 32 => {
            format!("x'{}…' ({} bytes)", to_hex(&b[..32]), b.len())
        }
        ValueRef::Blob(b) => format!("x'{}'", to_hex(b)),
    }
}

/// A value in CSV: NULL as an empty field, a blob as hex.
fn csv_cell(v: ValueRef<'_>) -> String {
    match v {
        ValueRef::Null => String::new(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(f) => format!("{f:?}"),
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
        ValueRef::Blob(b) => to_hex(b),
    }
}

/// One CSV record (RFC 4180): a field with a comma, a quote or a line break is
/// quoted, its quotes doubled.
fn csv_line<'a>(fields: impl Iterator<Item = &'a str>) -> String {
    fields
        .map(|f| match f.contains([',', '"', '\n', '\r']) {
            true => format!("\"{}\"", f.replace('"', "\"\"")),
            false => f.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A value in JSON: numbers as numbers, text as a string, a blob as a hex string.
fn json_value(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => i.into(),
        ValueRef::Real(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned().into(),
        ValueRef::Blob(b) => to_hex(b).into(),
    }
}

/// Rows under their column names, columns as wide as their widest cell.
fn write_table(out: &mut dyn Write, names: &[String], rows: &[Vec<String>]) -> std::io::Result<()> {
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .chain([names[i].chars().count()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..names.len()).map(width).collect();
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    writeln!(out, "{}", line(names))?;
    writeln!(
        out,
        "{}",
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("  ")
    )?;
    for r in rows {
        writeln!(out, "{}", line(r))?;
    }
    writeln!(
        out,
        "({} row{})",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    )
}

#[cfg(test)]
mod tests {
    use super::csv_line;

    #[test]
    fn csv_quotes_what_needs_it() {
        let got = csv_line(["a", "b,c", "say \"hi\"", "two\nlines", ""].into_iter());
        assert_eq!(got, "a,\"b,c\",\"say \"\"hi\"\"\",\"two\nlines\",");
    }
}

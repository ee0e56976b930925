//! `pagesnap ls`: the tables and indexes of a snapshot, with rows, pages and bytes.

use super::{open_store, pick_snapshot, print_json, query_error};
use crate::cli::{Global, LsArgs};
use crate::output;
use anyhow::Result;
use std::process::ExitCode;

pub fn run(g: &Global, a: &LsArgs) -> Result<ExitCode> {
    let store = open_store(g)?;
    let snap = pick_snapshot(&store, &a.snapshot, &a.pick)?;
    let list = store.snapshot_tables(&snap).map_err(query_error)?;
    if g.json {
        print_json(&serde_json::json!({
            "snapshot": snap.id.to_hex(),
            "short_id": snap.id.short(),
            "time": output::time_json(&snap.time()),
            "name": snap.manifest.name,
            "objects": list,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    let width = list.iter().map(|u| u.name.len()).max().unwrap_or(4).max(4);
    let twidth = list.iter().map(|u| u.table.len()).max().unwrap_or(5).max(5);
    println!(
        "{:<width$}  {:<6}  {:<twidth$}  {:>12}  {:>10}  {:>10}",
        "NAME", "KIND", "TABLE", "ROWS", "PAGES", "SIZE"
    );
    for u in &list {
        println!(
            "{:<width$}  {:<6}  {:<twidth$}  {:>12}  {:>10}  {:>10}",
            u.name,
            u.kind,
            u.table,
            if u.kind == "free" {
                String::new()
            } else {
                u.rows.to_string()
            },
            u.pages,
            output::bytes(u.bytes)
        );
    }
    let pages: u64 = list.iter().map(|u| u.pages).sum();
    println!(
        "{} object(s), {pages} pages, {}",
        list.iter().filter(|u| u.kind != "free").count(),
        output::bytes(snap.manifest.image_len)
    );
    eprintln!("pagesnap: {}", output::snapshot_used(&snap));
    Ok(ExitCode::SUCCESS)
}

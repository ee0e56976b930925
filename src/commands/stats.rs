use super::{open_store, print_json};
use crate::cli::{Global, StatsArgs};
use crate::output;
use crate::svg_chart::{Chart, Series};
use anyhow::{Context, Result};
use chrono::{TimeZone, Utc};
use pagesnap_core::stats::StoreStats;
use serde_json::json;
use std::process::ExitCode;

pub fn run(g: &Global, a: &StatsArgs) -> Result<ExitCode> {
    let store = open_store(g)?;
    let st = store.stats(a.name.as_deref())?;
    if let Some(path) = &a.plot {
        write_plot(&st, path)?;
    }
    if g.json {
        print_json(&to_json(&st))?;
    } else {
        print_human(&st);
        if let Some(path) = &a.plot {
            println!("plot written to {}", path.display());
        }
        // On a remote store: what this report cost (here, not on stderr).
        for line in super::requests_text() {
            println!("requests to {line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn to_json(st: &StoreStats) -> serde_json::Value {
    let s = &st.stored;
    json!({
        "snapshots": st.snapshots,
        "databases": st.databases,
        "logical_bytes": st.logical_bytes,
        "unique_chunks": st.unique_chunks,
        "unique_raw_bytes": st.unique_raw_bytes,
        "unique_compressed_bytes": st.unique_stored_bytes,
        "zero_chunk_refs": st.zero_chunk_refs,
        "stored_bytes": {
            "total": s.total(), "packs": s.packs, "index": s.index,
            "manifests": s.manifests, "maps": s.maps, "other": s.other,
        },
        "dedup_ratio": st.dedup_ratio,
        "compression_ratio": st.compression_ratio,
        "added_per_snapshot": {
            "mean": st.added_per_snapshot.mean,
            "median": st.added_per_snapshot.median,
            "max": st.added_per_snapshot.max,
        },
        "per_day": st.per_day.iter().map(|d| json!({
            "day": d.day.to_string(), "snapshots": d.snapshots, "added_bytes": d.added_bytes,
        })).collect::<Vec<_>>(),
        "per_snapshot": st.per_snapshot.iter().map(|c| json!({
            "id": c.id.to_hex(), "name": c.name, "time": output::time_json(&c.time),
            "image_size": c.image_len, "new_chunks": c.new_chunks,
            "new_chunk_bytes": c.new_chunk_bytes, "metadata_bytes": c.metadata_bytes,
            "added_bytes": c.added_bytes, "cumulative_stored": c.cumulative_stored,
            "cumulative_logical": c.cumulative_logical,
        })).collect::<Vec<_>>(),
    })
}

fn print_human(st: &StoreStats) {
    let s = &st.stored;
    let b = output::bytes;
    println!(
        "snapshots:          {} ({})",
        st.snapshots,
        st.databases.join(", ")
    );
    println!(
        "logical bytes:      {} (sum of snapshot images)",
        b(st.logical_bytes)
    );
    println!(
        "unique chunks:      {} ({} raw, {} compressed)",
        st.unique_chunks,
        b(st.unique_raw_bytes),
        b(st.unique_stored_bytes)
    );
    println!(
        "stored bytes:       {} = packs {} + index {} + manifests {} + page maps {} + other {}",
        b(s.total()),
        b(s.packs),
        b(s.index),
        b(s.manifests),
        b(s.maps),
        b(s.other)
    );
    println!(
        "dedup ratio:        {:.2}× (logical ÷ unique raw)",
        st.dedup_ratio
    );
    println!(
        "compression ratio:  {:.2}× (unique raw ÷ compressed)",
        st.compression_ratio
    );
    let a = &st.added_per_snapshot;
    println!(
        "added per snapshot: mean {}, median {}, max {}",
        b(a.mean as u64),
        b(a.median as u64),
        b(a.max)
    );
    if !st.per_day.is_empty() {
        let total: u64 = st.per_day.iter().map(|d| d.added_bytes).sum();
        println!(
            "added per day:      mean {} over {} day(s)",
            b(total / st.per_day.len() as u64),
            st.per_day.len()
        );
    }
}

fn write_plot(st: &StoreStats, path: &std::path::Path) -> Result<()> {
    let t = |c: &pagesnap_core::stats::SnapshotCost| c.time.timestamp() as f64;
    let series = vec![
        Series {
            name: "logical (sum of images)".into(),
            points: st
                .per_snapshot
                .iter()
                .map(|c| (t(c), c.cumulative_logical as f64))
                .collect(),
        },
        Series {
            name: "stored (cumulative)".into(),
            points: st
                .per_snapshot
                .iter()
                .map(|c| (t(c), c.cumulative_stored as f64))
                .collect(),
        },
    ];
    let x_fmt = |x: f64| {
        Utc.timestamp_opt(x as i64, 0)
            .single()
            .map(|d| d.format("%m-%d %H:%M").to_string())
            .unwrap_or_default()
    };
    let y_fmt = |y: f64| output::bytes(y as u64);
    let chart = Chart {
        title: "pagesnap store: logical vs stored bytes",
        x_label: "snapshot time (UTC)",
        y_label: "bytes",
        series,
        x_fmt: &x_fmt,
        y_fmt: &y_fmt,
    };
    write_atomically(path, chart.render().as_bytes())
}

/// Writes a whole file or nothing (temporary file beside it, then rename).
pub fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("{}: cannot create", path.display()))?;
    tmp.write_all(bytes)
        .with_context(|| format!("{}: cannot write", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("{}: cannot write", path.display()))?;
    Ok(())
}

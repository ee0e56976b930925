use super::{open_store, print_json};
use crate::cli::{Global, StatsArgs};
use crate::output;
use anyhow::{anyhow, Context, Result};
use chrono::{TimeZone, Utc};
use pagesnap_core::stats::{SnapshotCost, StoreStats};
use plotters::prelude::*;
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
        "deltas": {
            "chunks": st.deltas.chunks,
            "stored_bytes": st.deltas.stored_bytes,
            "whole_bytes": st.deltas.whole_bytes,
            "saved_bytes": st.deltas.saved_bytes,
            "unmeasured_chunks": st.deltas.unmeasured_chunks,
            "estimated": st.deltas.estimated,
        },
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
    let d = &st.deltas;
    if d.chunks > 0 {
        // What deltas saved, against the same chunks stored alone.
        let unmeasured = match (d.unmeasured_chunks, d.estimated) {
            (0, _) => String::new(),
            (n, true) => {
                format!("; whole sizes of {n} small deltas estimated from a measured sample")
            }
            (n, false) => format!("; {n} not measured, counted as saving nothing"),
        };
        println!(
            "delta chunks:       {} ({} stored, {} whole: {} saved, {:.0}%{unmeasured})",
            d.chunks,
            b(d.stored_bytes),
            b(d.whole_bytes),
            b(d.saved_bytes),
            100.0 * d.saved_bytes as f64 / d.whole_bytes.max(1) as f64
        );
    }
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
    let svg = chart(st).map_err(|e| anyhow!("drawing the plot: {e}"))?;
    write_atomically(path, svg.as_bytes())
}

/// `--plot`: cumulative logical and stored bytes over snapshot time, one line each,
/// on linear axes from the first to the last snapshot and from 0 to the largest
/// value, each with six evenly spaced ticks.
fn chart(st: &StoreStats) -> Result<String, Box<dyn std::error::Error>> {
    type Amount = fn(&SnapshotCost) -> u64;
    let series: [(&str, RGBColor, Amount); 2] = [
        ("logical (sum of images)", RGBColor(0x1f, 0x77, 0xb4), |c| {
            c.cumulative_logical
        }),
        ("stored (cumulative)", RGBColor(0xd6, 0x27, 0x28), |c| {
            c.cumulative_stored
        }),
    ];
    let t = |c: &SnapshotCost| c.time.timestamp();
    let x0 = st.per_snapshot.iter().map(t).min().unwrap_or(0);
    let x1 = st.per_snapshot.iter().map(t).max().unwrap_or(0).max(x0 + 1);
    let y1 = st
        .per_snapshot
        .iter()
        .flat_map(|c| series.iter().map(move |(_, _, amount)| amount(c)))
        .max()
        .unwrap_or(0)
        .max(1);
    // Six evenly spaced ticks from the low end to the high end of each axis (fewer
    // on a span of a few seconds or bytes, rather than one drawn over another).
    let mut x_ticks: Vec<i64> = (0..=5).map(|i| x0 + (x1 - x0) * i / 5).collect();
    let mut y_ticks: Vec<u64> = (0..=5).map(|i| (y1 as u128 * i / 5) as u64).collect();
    x_ticks.dedup();
    y_ticks.dedup();
    let x_fmt = |x: &i64| {
        Utc.timestamp_opt(*x, 0)
            .single()
            .map(|d| d.format("%m-%d %H:%M").to_string())
            .unwrap_or_default()
    };
    let y_fmt = |y: &u64| output::bytes(*y);

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "pagesnap store: logical vs stored bytes",
                ("sans-serif", 20),
            )
            .margin(12)
            // Room for half of the last time label, centred on the right edge.
            .margin_right(40)
            .x_label_area_size(50)
            .y_label_area_size(80)
            .build_cartesian_2d(
                (x0..x1).with_key_points(x_ticks),
                (0..y1).with_key_points(y_ticks),
            )?;
        chart
            .configure_mesh()
            .x_desc("snapshot time (UTC)")
            .y_desc("bytes")
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 15))
            // No axis lines or tick marks (the SVG's only polylines are the two
            // series): the frame below and the grid show the scale.
            .axis_style(TRANSPARENT)
            .draw()?;
        chart.draw_series([Rectangle::new([(x0, y1), (x1, 0)], BLACK)])?;
        for (name, color, amount) in series {
            let points = st.per_snapshot.iter().map(|c| (t(c), amount(c)));
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))?
                .label(name)
                // A filled bar, not a line: the SVG's only polylines are the series.
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 2), (x + 12, y + 2)], color.filled())
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font(("sans-serif", 15))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
    }
    Ok(svg)
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

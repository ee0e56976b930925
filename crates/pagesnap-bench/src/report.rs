//! What a run measured, as a table for people and as one JSON document.

use super::baseline::Observation;
use super::delta::{chain_key, CHAINS};
use super::stores::{step_time, Config, Record, Stored};
use crate::format;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::fmt::Write;
use std::path::PathBuf;
use std::time::Duration;

/// The bound is defined without a dictionary and at level 3, so it bounds only the
/// configurations that compress the same way; the report must not suggest more.
pub const BOUND_NOTE: &str = "the ideal bound compresses each page alone at zstd -3 without a \
     dictionary: configurations with a dictionary or a higher level can store less";

/// Everything a run collected.
pub struct Results {
    pub workload: String,
    pub description: String,
    pub seed: u64,
    /// `--size` in bytes (None when replaying a user's database).
    pub size: Option<u64>,
    pub db: Option<PathBuf>,
    pub sql: Option<PathBuf>,
    pub steps: u32,
    pub t0: DateTime<Utc>,
    /// One per snapshot: index 0 is the initial database, then one per step.
    pub observations: Vec<Observation>,
    pub configs: Vec<ConfigResult>,
    pub verified: Option<usize>,
    /// Building (or copying) the database.
    pub build: Duration,
    /// Wall time of each snapshot's step: work, baselines and every backup.
    pub step_wall: Vec<Duration>,
    pub elapsed: Duration,
}

pub struct ConfigResult {
    pub config: Config,
    pub stored: Stored,
    pub records: Vec<Record>,
}

/// The records that measure the incremental cost: every snapshot after the first
/// (which stores the whole database), or the first if it is the only one.
fn incremental<T>(v: &[T]) -> &[T] {
    if v.len() > 1 {
        &v[1..]
    } else {
        v
    }
}

fn mean(v: impl ExactSizeIterator<Item = u64>) -> f64 {
    let n = v.len().max(1) as f64;
    v.sum::<u64>() as f64 / n
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    match v.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2,
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        f64::NAN
    } else {
        a as f64 / b as f64
    }
}

impl Results {
    pub fn full_total(&self) -> u64 {
        self.observations.iter().map(|o| o.full_bytes).sum()
    }

    pub fn ideal_total(&self) -> u64 {
        self.observations.iter().map(|o| o.ideal_bytes).sum()
    }

    /// The delta bound under the chain bound `CHAINS[k]`.
    pub fn delta_total(&self, k: usize) -> u64 {
        self.observations.iter().map(|o| o.delta.bytes[k]).sum()
    }

    /// The delta bound with content-found bases, under `CHAINS[k]`.
    pub fn found_total(&self, k: usize) -> u64 {
        self.observations
            .iter()
            .map(|o| o.delta.found_bytes[k])
            .sum()
    }

    fn found_per_snapshot(&self, k: usize) -> f64 {
        mean(
            incremental(&self.observations)
                .iter()
                .map(|o| o.delta.found_bytes[k]),
        )
    }

    fn delta_per_snapshot(&self, k: usize) -> f64 {
        mean(
            incremental(&self.observations)
                .iter()
                .map(|o| o.delta.bytes[k]),
        )
    }

    fn ideal_per_snapshot(&self) -> f64 {
        mean(
            incremental(&self.observations)
                .iter()
                .map(|o| o.ideal_bytes),
        )
    }

    /// Pages changed per step (steps only: snapshot 0 has no predecessor).
    fn changed(&self) -> impl ExactSizeIterator<Item = u64> + '_ {
        self.observations.iter().skip(1).map(|o| o.pages_changed)
    }

    fn changed_fraction_mean(&self) -> f64 {
        let steps = &self.observations[1.min(self.observations.len())..];
        let sum: f64 = steps
            .iter()
            .map(|o| o.pages_changed as f64 / o.pages.max(1) as f64)
            .sum();
        sum / steps.len().max(1) as f64
    }

    /// Running sums of a per-snapshot amount.
    pub fn cumulative(&self, f: impl Fn(&Observation) -> u64) -> Vec<u64> {
        self.observations
            .iter()
            .scan(0u64, |acc, o| {
                *acc += f(o);
                Some(*acc)
            })
            .collect()
    }
}

impl ConfigResult {
    fn bytes_per_snapshot(&self) -> f64 {
        mean(incremental(&self.records).iter().map(|r| r.bytes_added))
    }
    fn metadata_per_snapshot(&self) -> f64 {
        mean(incremental(&self.records).iter().map(|r| r.metadata_bytes))
    }
    fn median_backup(&self) -> Duration {
        median(self.records.iter().map(|r| r.duration).collect())
    }
}

/// The human report.
pub fn table(r: &Results) -> String {
    let mut s = String::new();
    let first = &r.observations[0];
    let last = r.observations.last().expect("at least one snapshot");
    let (full, ideal) = (r.full_total(), r.ideal_total());
    let _ = writeln!(s, "workload {}: {}", r.workload, r.description);
    let _ = writeln!(
        s,
        "database: {} initial ({} pages of {} B), {} final; {} steps of 10 minutes, {} snapshots; seed {}",
        format::bytes(first.image_len),
        first.pages,
        first.page_size,
        format::bytes(last.image_len),
        r.steps,
        r.observations.len(),
        r.seed
    );
    let _ = writeln!(
        s,
        "pages changed per step: mean {:.0} ({:.2}% of the database), max {}",
        mean(r.changed()),
        100.0 * r.changed_fraction_mean(),
        r.changed().max().unwrap_or(0)
    );
    let _ = writeln!(s);
    let header = [
        "config",
        "stored",
        "× full",
        "× ideal",
        "bytes/snapshot",
        "× ideal/snap",
        "metadata/snapshot",
        "median backup",
    ];
    // Per snapshot after the first: what a store adds every 10 minutes, against
    // the ideal bound's; deltas (`1:deltas`) are meant to go far below 1.
    let ideal_snap = r.ideal_per_snapshot();
    let mut rows: Vec<[String; 8]> = Vec::new();
    for c in &r.configs {
        let stored = c.stored.total();
        rows.push([
            c.config.label(),
            format::bytes(stored),
            format!("{:.4}", ratio(stored, full)),
            format!("{:.3}", ratio(stored, ideal)),
            format::bytes(c.bytes_per_snapshot() as u64),
            format!("{:.3}", c.bytes_per_snapshot() / ideal_snap),
            format::bytes(c.metadata_per_snapshot() as u64),
            format!("{:.0} ms", c.median_backup().as_secs_f64() * 1000.0),
        ]);
    }
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            let pad = w - cell.chars().count();
            if i == 0 {
                l.push_str(cell);
                l.push_str(&" ".repeat(pad));
            } else {
                l.push_str("  ");
                l.push_str(&" ".repeat(pad));
                l.push_str(cell);
            }
        }
        l
    };
    let _ = writeln!(s, "{}", line(&header.map(String::from)));
    for row in &rows {
        let _ = writeln!(s, "{}", line(row));
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "full copies (backup API + zstd -3 every snapshot): {} ({} per snapshot)",
        format::bytes(full),
        format::bytes(mean(r.observations.iter().map(|o| o.full_bytes)) as u64)
    );
    let _ = writeln!(
        s,
        "ideal page-level bound (zstd -3 of each page never seen before): {} ({} per snapshot)",
        format::bytes(ideal),
        format::bytes(r.ideal_per_snapshot() as u64)
    );
    // The two delta bounds, each per chain bound K: same-position bases, and
    // the best of that and a content-found base.
    type Total = fn(&Results, usize) -> u64;
    type PerSnapshot = fn(&Results, usize) -> f64;
    let bounds: [(&str, Total, PerSnapshot); 2] = [
        (
            "delta bound (each new page zstd -3 alone or against its previous version at its \
             position, at most K deltas to decode; × ideal, whole run and per snapshot):",
            Results::delta_total,
            Results::delta_per_snapshot,
        ),
        (
            "delta bound with content-found bases (the best of the position's previous \
             version and the previous image's page sharing most resemblance features):",
            Results::found_total,
            Results::found_per_snapshot,
        ),
    ];
    for (title, total_of, per_snapshot_of) in bounds {
        let _ = writeln!(s, "{title}");
        for (k, chain) in CHAINS.iter().enumerate() {
            let total = total_of(r, k);
            let per_snapshot = per_snapshot_of(r, k);
            let _ = writeln!(
                s,
                "  {:<13} {} ({:.3}× ideal), {} per snapshot ({:.3}× ideal)",
                match chain {
                    Some(n) => format!("K = {n}:"),
                    None => "unbounded:".into(),
                },
                format::bytes(total),
                ratio(total, ideal),
                format::bytes(per_snapshot as u64),
                per_snapshot / r.ideal_per_snapshot()
            );
        }
    }
    let _ = writeln!(
        s,
        "bytes/snapshot and metadata/snapshot: means over the snapshots after the first; \
         median backup: over all snapshots"
    );
    let _ = writeln!(s, "{BOUND_NOTE}");
    if let Some(n) = r.verified {
        let _ = writeln!(s, "verified {n} snapshots");
    }
    let _ = writeln!(
        s,
        "run time: {:.1} s (building the database {:.1} s, median step {:.1} s)",
        r.elapsed.as_secs_f64(),
        r.build.as_secs_f64(),
        median(r.step_wall.clone()).as_secs_f64()
    );
    s
}

/// The JSON document of `--json`.
pub fn json(r: &Results) -> Value {
    let (full, ideal) = (r.full_total(), r.ideal_total());
    let first = &r.observations[0];
    let last = r.observations.last().expect("at least one snapshot");
    let (full_cum, ideal_cum) = (
        r.cumulative(|o| o.full_bytes),
        r.cumulative(|o| o.ideal_bytes),
    );
    let steps: Vec<Value> = r
        .observations
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let configs: serde_json::Map<String, Value> = r
                .configs
                .iter()
                .map(|c| {
                    let rec = &c.records[i];
                    (
                        c.config.key(),
                        json!({
                            "bytes_added": rec.bytes_added,
                            "metadata_bytes": rec.metadata_bytes,
                            "new_chunks": rec.new_chunks,
                            "new_base": rec.new_base,
                            "backup_secs": rec.duration.as_secs_f64(),
                            "stored_bytes": rec.stored,
                        }),
                    )
                })
                .collect();
            json!({
                "step": i,
                "time": format::time_json(&step_time(r.t0, i as u32)),
                "image_size": o.image_len,
                "pages": o.pages,
                "pages_changed": o.pages_changed,
                "new_pages": o.new_pages,
                "full_bytes": o.full_bytes,
                "ideal_bytes": o.ideal_bytes,
                "full_cumulative": full_cum[i],
                "ideal_cumulative": ideal_cum[i],
                "delta_bytes": CHAINS.iter().enumerate()
                    .map(|(k, &c)| (chain_key(c), json!(o.delta.bytes[k])))
                    .collect::<serde_json::Map<String, Value>>(),
                "content_found_delta_bytes": CHAINS.iter().enumerate()
                    .map(|(k, &c)| (chain_key(c), json!(o.delta.found_bytes[k])))
                    .collect::<serde_json::Map<String, Value>>(),
                "wall_secs": r.step_wall[i].as_secs_f64(),
                "configs": configs,
            })
        })
        .collect();
    json!({
        "workload": {
            "name": r.workload,
            "description": r.description,
            "page_size": first.page_size,
            "initial_size": first.image_len,
            "initial_pages": first.pages,
            "final_size": last.image_len,
            "snapshots": r.observations.len(),
            "pages_changed_mean": mean(r.changed()),
            "pages_changed_fraction_mean": r.changed_fraction_mean(),
            "pages_changed_max": r.changed().max().unwrap_or(0),
            "build_secs": r.build.as_secs_f64(),
        },
        "parameters": {
            "size": r.size,
            "steps": r.steps,
            "seed": r.seed,
            "time": format::time_json(&r.t0),
            "db": r.db,
            "sql": r.sql,
            "configs": r.configs.iter().map(|c| c.config.key()).collect::<Vec<_>>(),
        },
        "configs": r.configs.iter().map(|c| {
            let st = &c.stored;
            json!({
                "name": c.config.key(),
                "chunk_pages": c.config.chunk_pages,
                "zstd_level": c.config.zstd_level,
                "dictionary": c.config.dictionary,
                "deltas": c.config.deltas,
                "stored_bytes": st.total(),
                "stored": {
                    "packs": st.packs, "index": st.index, "maps": st.maps,
                    "snapshots": st.snapshots, "dicts": st.dicts, "other": st.other,
                },
                "ratio_to_full": ratio(st.total(), full),
                "ratio_to_ideal": ratio(st.total(), ideal),
                "bytes_per_snapshot": c.bytes_per_snapshot(),
                "ratio_to_ideal_per_snapshot": c.bytes_per_snapshot() / r.ideal_per_snapshot(),
                "metadata_per_snapshot": c.metadata_per_snapshot(),
                "median_backup_secs": c.median_backup().as_secs_f64(),
                "new_bases": c.records.iter().filter(|x| x.new_base).count(),
            })
        }).collect::<Vec<_>>(),
        "baselines": {
            "full": {
                "description": "backup-API copy + zstd -3 of the whole image, every snapshot",
                "stored_bytes": full,
                "bytes_per_snapshot": mean(r.observations.iter().map(|o| o.full_bytes)),
            },
            "ideal": {
                "description": "sum of zstd -3 sizes of each page never seen before, compressed alone",
                "stored_bytes": ideal,
                "bytes_per_snapshot": r.ideal_per_snapshot(),
            },
            "delta": {
                "description": "each new page zstd -3 alone or with its previous version at \
                    its position as prefix, whichever is smaller; a keyframe (alone) when \
                    the base is already max_chain deltas deep",
                "chunk_pages": 1,
                "chains": CHAINS.iter().enumerate().map(|(k, &c)| {
                    let total = r.delta_total(k);
                    (chain_key(c), json!({
                        "max_chain": c,
                        "stored_bytes": total,
                        "ratio_to_ideal": ratio(total, ideal),
                        "bytes_per_snapshot": r.delta_per_snapshot(k),
                        "ratio_to_ideal_per_snapshot":
                            r.delta_per_snapshot(k) / r.ideal_per_snapshot(),
                        "keyframes": r.observations.iter()
                            .map(|o| o.delta.keyframes[k]).sum::<u64>(),
                        "content_found": {
                            "stored_bytes": r.found_total(k),
                            "ratio_to_ideal": ratio(r.found_total(k), ideal),
                            "bytes_per_snapshot": r.found_per_snapshot(k),
                            "ratio_to_ideal_per_snapshot":
                                r.found_per_snapshot(k) / r.ideal_per_snapshot(),
                        },
                    }))
                }).collect::<serde_json::Map<String, Value>>(),
            },
        },
        "notes": [BOUND_NOTE],
        "verified_snapshots": r.verified,
        "duration_secs": r.elapsed.as_secs_f64(),
        "steps": steps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_incremental_means() {
        let ms = Duration::from_millis;
        assert_eq!(median(vec![ms(3), ms(1), ms(2)]), ms(2));
        assert_eq!(
            median(vec![ms(4), ms(1), ms(2), ms(3)]),
            Duration::from_micros(2500)
        );
        assert_eq!(incremental(&[9, 1, 2]), &[1, 2]);
        assert_eq!(incremental(&[9]), &[9]);
        assert_eq!(mean([1u64, 2].into_iter()), 1.5);
    }
}

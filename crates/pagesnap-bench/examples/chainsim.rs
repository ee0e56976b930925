//! Simulates delta base policies on a workload of `pagesnap bench` (docs/DELTAS.md,
//! "Skip-delta bases"): after the build and each step, every changed page is
//! compressed alone (`zstd -3`, the ideal page-level bound's charge) and, per
//! policy, as a delta against the base the policy names among the versions of
//! that position (`zstd -3` with the base as raw-content dictionary, as the
//! store's encoder makes them), kept only when smaller than alone. Prints, per
//! policy, the bytes stored over the steps × the ideal bound's, and the delta
//! links a restore of the last image decodes (the sum of its pages' chain depths).
//!
//! ```sh
//! cargo run --release -p pagesnap-bench --example chainsim -- 64 144 oltp
//! ```
//! (size in MiB, steps, workload: oltp, kv, append or vacuum).

#![forbid(unsafe_code)]

use anyhow::{anyhow, bail, Context, Result};
use pagesnap_bench::workload::{self, Kind};
use std::collections::HashMap;
use std::path::Path;
use zstd::zstd_safe::CCtx;

const PAGE: usize = 4096;

#[derive(Clone, Copy)]
enum Policy {
    /// Each version against the one before; whole when the chain is K deep.
    Linear(u32),
    /// Version v (counted from the last whole one) against v with its lowest
    /// set bit cleared; whole at 2^K.
    Skip(u32),
    /// As `Skip`, but v = (step + position) mod 2^K: no state per position,
    /// the base the link of the parent's chain at depth popcount(v) - 1.
    Global(u32),
    /// Every version against the last whole one; whole after K deltas.
    Star(u32),
}

/// One version of a position in the current chain: its version number and bytes.
struct Link {
    version: u32,
    content: Vec<u8>,
}

struct Sim {
    name: &'static str,
    policy: Policy,
    /// Each changed position's chain, bottom (a whole version) first.
    chains: HashMap<usize, Vec<Link>>,
    bytes: u64,
}

fn delta(ctx: &mut CCtx<'static>, base: &[u8], page: &[u8]) -> Result<usize> {
    let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(page.len()));
    ctx.compress_using_dict(&mut out, page, base, 3)
        .map_err(|c| anyhow!("zstd: {}", zstd::zstd_safe::get_error_name(c)))?;
    Ok(out.len())
}

impl Sim {
    /// Stores a new version `page` at `pos` (alone it takes `alone` bytes).
    fn observe(
        &mut self,
        ctx: &mut CCtx<'static>,
        step: u32,
        pos: usize,
        page: &[u8],
        alone: usize,
    ) -> Result<()> {
        let whole = |v: u32| Link {
            version: v,
            content: page.to_vec(),
        };
        let mut chain = self.chains.remove(&pos).unwrap_or_default();
        // (the depth of the base in the chain, the new version), or none: whole.
        let plan = match (self.policy, chain.last()) {
            (_, None) => None,
            (Policy::Linear(k), Some(_)) => {
                let depth = chain.len() as u32 - 1;
                (depth < k).then_some((depth, depth + 1))
            }
            (Policy::Skip(k), Some(top)) => {
                let v = top.version + 1;
                (v < 1 << k).then(|| {
                    (
                        chain
                            .iter()
                            .position(|l| l.version == v & (v - 1))
                            .unwrap_or(0) as u32,
                        v,
                    )
                })
            }
            (Policy::Global(k), Some(_)) => {
                let v = (step + pos as u32) % (1 << k);
                (v != 0).then(|| ((v.count_ones() - 1).min(chain.len() as u32 - 1), v))
            }
            (Policy::Star(k), Some(top)) => (top.version < k).then_some((0, top.version + 1)),
        };
        let kept = match plan {
            Some((depth, v)) => {
                let len = delta(ctx, &chain[depth as usize].content, page)?;
                (len < alone).then_some((depth, v, len))
            }
            None => None,
        };
        match kept {
            Some((depth, v, len)) => {
                chain.truncate(depth as usize + 1);
                chain.push(whole(v));
                self.bytes += len as u64;
            }
            None => {
                chain = vec![whole(0)];
                self.bytes += alone as u64;
            }
        }
        self.chains.insert(pos, chain);
        Ok(())
    }
}

/// The database image after a checkpoint.
fn image(conn: &rusqlite::Connection, path: &Path) -> Result<Vec<u8>> {
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mib, steps, kind] = args.as_slice() else {
        bail!("usage: chainsim SIZE_MIB STEPS oltp|kv|append|vacuum");
    };
    let kind = match kind.as_str() {
        "oltp" => Kind::Oltp,
        "kv" => Kind::Kv,
        "append" => Kind::Append,
        "vacuum" => Kind::Vacuum,
        other => bail!("unknown workload {other}"),
    };
    let mib: u64 = mib.parse().context("SIZE_MIB")?;
    let steps: u32 = steps.parse().context("STEPS")?;
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("db.db");
    let mut opened = workload::build(kind, &db, mib << 20, 1)?;
    let mut sims: Vec<Sim> = [
        ("one link a version, chains <= 8", Policy::Linear(8)),
        ("one link a version, chains <= 4", Policy::Linear(4)),
        ("skip-delta, cycles of 16", Policy::Skip(4)),
        ("skip-delta, cycles of 32", Policy::Skip(5)),
        (
            "skip-delta by a global counter, cycles of 32",
            Policy::Global(5),
        ),
        ("every version against the whole one, <= 8", Policy::Star(8)),
    ]
    .into_iter()
    .map(|(name, policy)| Sim {
        name,
        policy,
        chains: HashMap::new(),
        bytes: 0,
    })
    .collect();
    let mut alone = zstd::bulk::Compressor::new(3)?;
    let mut ctx = CCtx::create();
    let mut previous = image(&opened.conn, &db)?;
    let mut ideal = 0u64;
    for step in 1..=steps {
        opened.workload.step(&opened.conn, step)?;
        let now = image(&opened.conn, &db)?;
        for (pos, page) in now.chunks(PAGE).enumerate() {
            if previous.get(pos * PAGE..(pos + 1) * PAGE) == Some(page) {
                continue;
            }
            let whole = alone.compress(page)?.len().min(page.len());
            ideal += whole as u64;
            for sim in sims.iter_mut() {
                sim.observe(&mut ctx, step, pos, page, whole)?;
            }
        }
        previous = now;
    }
    println!("| policy | bytes × ideal | links below the last image's pages |");
    println!("|---|--:|--:|");
    for sim in &sims {
        let links: usize = sim.chains.values().map(|c| c.len() - 1).sum();
        println!(
            "| {} | {:.3} | {} |",
            sim.name,
            sim.bytes as f64 / ideal.max(1) as f64,
            links
        );
    }
    Ok(())
}

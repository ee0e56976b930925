//! Builds the `oltp` workload's database of `pagesnap bench` and applies its
//! 10-minute steps one at a time, running a command after the build and after
//! each step (what `benches/deltas.sh` backs up and times).
//!
//! ```sh
//! cargo run --release -p pagesnap-bench --example oltpsteps -- db.db 1024 144 sh hook.sh
//! ```
//! The command gets the step in `STEP` (0 after the build). The workload keeps
//! its state (its random generator, the hot customers) in memory, so the steps
//! run in this one process; the connection stays open between steps, as an
//! application's would (WAL mode, no transaction open while the command runs).

#![forbid(unsafe_code)]

use anyhow::{bail, Context, Result};
use pagesnap_bench::workload::{self, Kind};
use std::path::Path;
use std::process::Command;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [db, mib, steps, cmd @ ..] = args.as_slice() else {
        bail!("usage: oltpsteps DB SIZE_MIB STEPS COMMAND [ARGS...]");
    };
    if cmd.is_empty() {
        bail!("usage: oltpsteps DB SIZE_MIB STEPS COMMAND [ARGS...]");
    }
    let mib: u64 = mib.parse().context("SIZE_MIB")?;
    let steps: u32 = steps.parse().context("STEPS")?;
    let mut opened = workload::build(Kind::Oltp, Path::new(db), mib << 20, 1)?;
    for step in 0..=steps {
        if step > 0 {
            opened.workload.step(&opened.conn, step)?;
        }
        let status = Command::new(&cmd[0])
            .args(&cmd[1..])
            .env("STEP", step.to_string())
            .status()
            .with_context(|| format!("cannot run {}", cmd[0]))?;
        if !status.success() {
            bail!("step {step}: {} failed ({status})", cmd[0]);
        }
    }
    Ok(())
}

//! `pagesnap gc`: forget by policy, then prune.

use super::{forget, open_store, print_json, prune};
use crate::cli::{GcArgs, Global};
use anyhow::Result;
use pagesnap_core::PruneOptions;
use serde_json::json;
use std::process::ExitCode;
use std::time::Duration;

pub fn run(g: &Global, a: &GcArgs) -> Result<ExitCode> {
    let max_unused = prune::parse_percent(&a.max_unused)?;
    // Checked before the store is opened (exit 2 whatever state it is in).
    super::policy::from_args(&a.policy)?;
    let (store, bar) = crate::progress::attach(open_store(g)?, g, "gc");
    // One exclusive lock across forget and prune: a gc that cannot prune (the
    // store is in use) fails before it forgets anything.
    let lock = if a.dry_run {
        None
    } else {
        Some(store.lock(true, "gc", Duration::ZERO)?)
    };
    let f = forget::by_policy_locked(
        &store,
        &a.policy,
        a.name.as_deref(),
        a.dry_run,
        lock.as_ref(),
    )?;
    // A dry run plans prune as if the snapshots forget would remove were gone.
    let assume_forgotten = if a.dry_run {
        f.decisions
            .iter()
            .filter(|d| !d.keep)
            .map(|d| d.id)
            .collect()
    } else {
        Vec::new()
    };
    let opts = PruneOptions {
        max_unused,
        dry_run: a.dry_run,
        assume_forgotten,
    };
    let p = match &lock {
        Some(l) => store.prune_locked(&opts, l)?,
        None => store.prune(&opts)?,
    };
    drop(lock);
    bar.finish();
    if g.json {
        print_json(&json!({ "forget": f.json(), "prune": prune::to_json(&p) }))?;
    } else {
        forget::report(g, &f)?;
        prune::print_human(&p);
    }
    Ok(ExitCode::SUCCESS)
}

//! `pagesnap gc`: forget by policy, then prune.

use super::{forget, open_store, print_json, prune};
use crate::cli::{GcArgs, Global};
use anyhow::Result;
use pagesnap_core::PruneOptions;
use serde_json::json;
use std::process::ExitCode;

pub fn run(g: &Global, a: &GcArgs) -> Result<ExitCode> {
    let max_unused = prune::parse_percent(&a.max_unused)?;
    let store = open_store(g)?;
    let f = forget::by_policy(&store, &a.policy, a.name.as_deref(), a.dry_run)?;
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
    let p = store.prune(&PruneOptions {
        max_unused,
        dry_run: a.dry_run,
        assume_forgotten,
    })?;
    if g.json {
        print_json(&json!({ "forget": f.json(), "prune": prune::to_json(&p) }))?;
    } else {
        forget::report(g, &f)?;
        prune::print_human(&p);
    }
    Ok(ExitCode::SUCCESS)
}

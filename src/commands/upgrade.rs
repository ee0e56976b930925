//! `pagesnap upgrade --deltas`: turn deltas on in an existing store.

use super::{open_store_uncached, print_json};
use crate::cli::{Global, UpgradeArgs};
use crate::timearg::parse_duration;
use anyhow::Result;
use serde_json::json;
use std::process::ExitCode;

pub fn run(g: &Global, a: &UpgradeArgs) -> Result<ExitCode> {
    let wait = parse_duration(&a.lock_wait)?;
    let store = open_store_uncached(g)?;
    // `--deltas` is required by the parser: it is the one upgrade there is.
    debug_assert!(a.deltas);
    let r = store.enable_deltas(wait)?;
    if g.json {
        print_json(&json!({
            "deltas": true,
            "changed": r.changed,
            "format_version": r.format_version,
        }))?;
    } else if r.changed {
        println!(
            "deltas on: from the next backup, changed pages are stored as deltas \
             against their previous version (store format version {}; chunks already \
             stored stay as they are; pagesnap builds without deltas no longer open this store)",
            r.format_version
        );
    } else {
        println!("deltas were already on; nothing changed");
    }
    Ok(ExitCode::SUCCESS)
}

//! `pagesnap unlock`: remove stale locks.

use super::{open_store, print_json};
use crate::cli::{Global, UnlockArgs};
use anyhow::Result;
use pagesnap_core::lock;
use serde_json::json;
use std::process::ExitCode;

pub fn run(g: &Global, a: &UnlockArgs) -> Result<ExitCode> {
    let store = open_store(g)?;
    let removed = lock::unlock(store.backend().as_ref(), a.all)?;
    let left = lock::list(store.backend().as_ref())?;
    if g.json {
        print_json(&json!({
            "removed": removed.iter().map(|(k, i)| json!({
                "key": k,
                "holder": i.as_ref().map(|i| i.describe()),
            })).collect::<Vec<_>>(),
            "remaining": left.len(),
        }))?;
    } else {
        for (k, i) in &removed {
            match i {
                Some(i) => println!("removed {}", i.describe()),
                None => println!("removed unreadable lock {k}"),
            }
        }
        println!(
            "{} lock(s) removed, {} in use remain",
            removed.len(),
            left.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

//! `pagesnap policy set|show|clear`, and turning policy flags into a [`Policy`].

use super::{open_store, print_json};
use crate::cli::{Global, PolicyArgs, PolicyCommand};
use crate::output;
use anyhow::{bail, Result};
use pagesnap_core::retention::{parse_count, parse_span, Policy};
use pagesnap_core::Store;
use serde_json::json;
use std::process::ExitCode;

/// The policy the flags describe (empty when no flag is given).
pub fn from_args(a: &PolicyArgs) -> Result<Policy> {
    let count = |v: &Option<String>| v.as_deref().map(parse_count).transpose();
    let span = |v: &Option<String>| v.as_deref().map(parse_span).transpose();
    let p = Policy {
        keep_last: count(&a.keep_last)?,
        keep_within: span(&a.keep_within)?,
        keep_minutely: count(&a.keep_minutely)?,
        keep_hourly: count(&a.keep_hourly)?,
        keep_daily: count(&a.keep_daily)?,
        keep_weekly: count(&a.keep_weekly)?,
        keep_monthly: count(&a.keep_monthly)?,
        keep_yearly: count(&a.keep_yearly)?,
        keep_within_minutely: span(&a.keep_within_minutely)?,
        keep_within_hourly: span(&a.keep_within_hourly)?,
        keep_within_daily: span(&a.keep_within_daily)?,
        keep_within_weekly: span(&a.keep_within_weekly)?,
        keep_within_monthly: span(&a.keep_within_monthly)?,
        keep_within_yearly: span(&a.keep_within_yearly)?,
        keep_tags: a.keep_tags.clone(),
        local_time: a.local_time,
    };
    p.validate()?;
    if p.is_empty() && a.local_time {
        return Err(usage!("--local-time needs at least one --keep-* rule"));
    }
    Ok(p)
}

/// The flags' policy, else the saved one; refuses when there is neither, so that
/// nothing is ever deleted without a rule saying so.
pub fn effective(store: &Store, a: &PolicyArgs) -> Result<Policy> {
    let p = from_args(a)?;
    if !p.is_empty() {
        return Ok(p);
    }
    match store.saved_policy()? {
        Some(saved) if !saved.is_empty() => Ok(saved),
        _ => bail!(
            "{}: no retention policy: give --keep-* rules or save one with `pagesnap policy set` (nothing was deleted)",
            store.location()
        ),
    }
}

pub fn run(g: &Global, c: &PolicyCommand) -> Result<ExitCode> {
    // The flags are checked before the store is opened (exit 2 whatever state
    // the store is in).
    if let PolicyCommand::Set(a) = c {
        from_args(a)?;
    }
    let store = open_store(g)?;
    match c {
        PolicyCommand::Set(a) => {
            let p = from_args(a)?;
            if p.is_empty() {
                return Err(usage!("policy set needs at least one --keep-* rule (use `policy clear` to remove the policy)"));
            }
            store.save_policy(&p)?;
            if g.json {
                print_json(&json!({ "policy": output::policy_json(&p), "saved": true }))?;
            } else {
                println!("saved retention policy: {p}");
            }
        }
        PolicyCommand::Show => {
            let p = store.saved_policy()?;
            if g.json {
                print_json(&json!({ "policy": p.as_ref().map(output::policy_json) }))?;
            } else {
                match p {
                    Some(p) => println!("{p}"),
                    None => {
                        println!("no retention policy saved (see `pagesnap policy set --help`)")
                    }
                }
            }
        }
        PolicyCommand::Clear => {
            store.save_policy(&Policy::default())?;
            if g.json {
                print_json(&json!({ "policy": null }))?;
            } else {
                println!("retention policy removed");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

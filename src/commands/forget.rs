//! `pagesnap forget`: remove snapshots a retention policy does not keep, or the
//! snapshots named.

use super::{open_store, policy, print_json};
use crate::cli::{ForgetArgs, Global, PolicyArgs};
use crate::output;
use anyhow::{bail, Result};
use chrono::Utc;
use pagesnap_core::lock::LockGuard;
use pagesnap_core::retention::{self, Decision, Policy};
use pagesnap_core::{SnapshotSelector, Store};
use serde_json::{json, Value};
use std::process::ExitCode;

pub fn run(g: &Global, a: &ForgetArgs) -> Result<ExitCode> {
    // The flags are checked before the store is opened: a bad value is a usage
    // error (exit 2) whatever state the store is in.
    let flags = policy::from_args(&a.policy)?;
    let store = open_store(g)?;
    let out = if a.snapshots.is_empty() {
        if a.allow_empty {
            return Err(usage!(
                "--allow-empty goes with snapshot ids: a policy always keeps the newest snapshot"
            ));
        }
        by_policy(&store, &a.policy, a.name.as_deref(), a.dry_run)?
    } else {
        if !flags.is_empty() {
            return Err(usage!("give snapshot ids or --keep-* rules, not both"));
        }
        by_id(&store, &a.snapshots, a.dry_run, a.allow_empty)?
    };
    if out.dry_run && out.removed() > 0 {
        // What the removals would let prune free, planned as if they were gone.
        let p = store.prune(&pagesnap_core::PruneOptions {
            dry_run: true,
            assume_forgotten: out
                .decisions
                .iter()
                .filter(|d| !d.keep)
                .map(|d| d.id)
                .collect(),
            ..Default::default()
        })?;
        if g.json {
            let mut v = out.json();
            v["prune_would_free"] = serde_json::json!(p.bytes_freed);
            return print_json(&v).map(|_| ExitCode::SUCCESS);
        }
        report(g, &out)?;
        println!(
            "a prune after this forget would free {}",
            output::bytes(p.bytes_freed)
        );
        return Ok(ExitCode::SUCCESS);
    }
    report(g, &out)?;
    Ok(ExitCode::SUCCESS)
}

/// What a forget decided and did.
pub struct Outcome {
    pub policy: Option<Policy>,
    pub decisions: Vec<Decision>,
    pub dry_run: bool,
}

impl Outcome {
    pub fn removed(&self) -> usize {
        self.decisions.iter().filter(|d| !d.keep).count()
    }

    pub fn json(&self) -> Value {
        json!({
            "dry_run": self.dry_run,
            "policy": self.policy.as_ref().map(output::policy_json),
            "kept": self.decisions.len() - self.removed(),
            "removed": self.removed(),
            "snapshots": self.decisions.iter().map(|d| json!({
                "id": d.id.to_hex(),
                "short_id": d.id.short(),
                "name": d.name,
                "time": output::time_json(&d.time),
                "keep": d.keep,
                "reasons": d.reasons.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })
    }
}

/// Applies the flags' (or the saved) policy to the snapshots of `name` (or all).
pub fn by_policy(
    store: &Store,
    a: &PolicyArgs,
    name: Option<&str>,
    dry_run: bool,
) -> Result<Outcome> {
    by_policy_locked(store, a, name, dry_run, None)
}

/// [`by_policy`] under a lock the caller holds (`gc`), or taking its own.
pub fn by_policy_locked(
    store: &Store,
    a: &PolicyArgs,
    name: Option<&str>,
    dry_run: bool,
    lock: Option<&LockGuard>,
) -> Result<Outcome> {
    let p = policy::effective(store, a)?;
    apply_policy(store, &p, name, dry_run, lock)
}

/// Applies policy `p` to the snapshots of `name` (or all), under `lock` if the
/// caller holds one (`gc`, `watch`), else taking its own. Shared by `forget`,
/// `gc` and `watch`.
pub fn apply_policy(
    store: &Store,
    p: &Policy,
    name: Option<&str>,
    dry_run: bool,
    lock: Option<&LockGuard>,
) -> Result<Outcome> {
    let snaps: Vec<_> = store
        .snapshots()?
        .into_iter()
        .filter(|s| name.is_none_or(|n| s.manifest.name == n))
        .collect();
    if let (Some(n), true) = (name, snaps.is_empty()) {
        bail!("{}: no snapshots of {n:?}", store.location());
    }
    let decisions = retention::apply(p, &snaps, Utc::now());
    if !dry_run {
        let gone: Vec<_> = decisions.iter().filter(|d| !d.keep).map(|d| d.id).collect();
        // A policy always keeps each database's newest snapshot.
        match lock {
            Some(l) => store.forget_snapshots_locked(&gone, false, l)?,
            None => store.forget_snapshots(&gone, false)?,
        }
    }
    Ok(Outcome {
        policy: Some(p.clone()),
        decisions,
        dry_run,
    })
}

fn by_id(store: &Store, ids: &[String], dry_run: bool, allow_empty: bool) -> Result<Outcome> {
    let mut chosen = Vec::new();
    for id in ids {
        chosen.push(store.select(&SnapshotSelector::Id(id.clone()))?);
    }
    chosen.sort_by_key(|s| s.id);
    chosen.dedup_by_key(|s| s.id);
    if !dry_run {
        let gone: Vec<_> = chosen.iter().map(|s| s.id).collect();
        store.forget_snapshots(&gone, allow_empty)?;
    }
    let decisions = chosen
        .iter()
        .map(|s| Decision {
            id: s.id,
            name: s.manifest.name.clone(),
            time: s.time(),
            keep: false,
            reasons: vec![],
        })
        .collect();
    Ok(Outcome {
        policy: None,
        decisions,
        dry_run,
    })
}

pub fn report(g: &Global, o: &Outcome) -> Result<()> {
    if g.json {
        return print_json(&o.json());
    }
    if let Some(p) = &o.policy {
        println!("policy: {p}");
    }
    for d in &o.decisions {
        let why: Vec<String> = d.reasons.iter().map(|r| r.to_string()).collect();
        println!(
            "{:<6}  {}  {}  {:<16}  {}",
            if d.keep { "keep" } else { "remove" },
            d.id.short(),
            output::time(&d.time),
            d.name,
            if why.is_empty() {
                "-".into()
            } else {
                why.join(", ")
            }
        );
    }
    println!(
        "{} kept, {} {}",
        o.decisions.len() - o.removed(),
        o.removed(),
        if o.dry_run {
            "would be removed (dry run: nothing removed)"
        } else {
            "removed"
        }
    );
    Ok(())
}

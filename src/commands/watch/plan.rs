//! What the watcher will do, said before it does it: the retention and prune
//! lines logged at start and on reload, `watch --dry-run` (one round, said and
//! not done) and `watch --check-config`.

use super::config::{prune_text, PruneSchedule, WatchConfig};
use super::status::{self, Status};
use super::{resolve_store, Watcher};
use crate::cli::{Global, WatchArgs};
use crate::commands::open_store;
use crate::{hints, message, UsageError};
use anyhow::Result;
use chrono::{DateTime, Utc};
use pagesnap_core::retention::{self, Policy};
use pagesnap_core::watch::{PruneOutcome, Source};
use pagesnap_core::Store;
use std::path::Path;
use std::process::ExitCode;
use tracing::{info, warn};

/// The retention a database's runs apply: its config's policy, else the
/// store's saved one (read now; a run reads it again each time).
fn retention_of(
    policy: Option<&Policy>,
    store: &Store,
) -> std::result::Result<Option<(Policy, &'static str)>, String> {
    match policy {
        Some(p) => Ok(Some((p.clone(), "config"))),
        None => store
            .saved_policy()
            .map(|p| p.filter(|p| !p.is_empty()).map(|p| (p, "store")))
            .map_err(|e| hints::render(&e)),
    }
}

/// When the schedule next lets prune run after one at `last`, said for people.
fn prune_when(cfg: &WatchConfig, last: Option<DateTime<Utc>>) -> String {
    let schedule = prune_text(cfg.prune.schedule);
    let mut s = match cfg.prune.schedule {
        PruneSchedule::Never => "never on a schedule".to_string(),
        PruneSchedule::Every(_) => match cfg.prune.next_due(last) {
            Some(t) if t > Utc::now() => format!(
                "{schedule}: next after the first snapshot from {}",
                crate::output::time(&t)
            ),
            _ => format!("{schedule}: due, runs after the first snapshot"),
        },
    };
    if let Some(f) = cfg.prune.when_unused {
        s.push_str(&format!(
            "; also when over {:.1}% of the store is unused",
            f * 100.0
        ));
    }
    s
}

impl Watcher {
    /// Logs, per database, the retention its runs will apply, and the prune
    /// schedule (at start and after a reload).
    pub(super) fn log_plan(&self) {
        for d in &self.dbs {
            let name = &d.cfg.opts.name;
            match retention_of(d.cfg.opts.policy.as_ref(), &self.store) {
                Ok(Some((p, from))) => info!(
                    event = "plan",
                    db = %name,
                    retention = %p,
                    retention_source = from,
                    "{name}: after each snapshot, retention {p} ({})",
                    if from == "config" {
                        "from the config"
                    } else {
                        "the store's saved policy"
                    }
                ),
                Ok(None) => info!(
                    event = "plan",
                    db = %name,
                    retention_source = "none",
                    "{name}: no retention policy (none in the config, none saved in the store): every snapshot is kept"
                ),
                Err(e) => warn!(
                    event = "plan",
                    db = %name,
                    "{name}: cannot read the store's retention policy: {e}"
                ),
            }
        }
        let last = self.status.prune.last.as_ref().and_then(|l| l.time);
        info!(
            event = "plan",
            prune = %prune_text(self.cfg.prune.schedule),
            prune_when_unused_percent = self.cfg.prune.when_unused.map(|f| f * 100.0),
            "prune: {}",
            prune_when(&self.cfg, last)
        );
    }
}

/// `watch --dry-run`: what one round would do, on stdout. It takes no lock,
/// writes no status file, runs no hook and changes nothing in the store.
pub fn dry_run(cfg: &WatchConfig, store: &Store, status_path: &Path) -> Result<ExitCode> {
    let snaps = store.snapshots()?;
    let mut out = String::new();
    out.push_str(&format!(
        "dry run: nothing is snapshotted, forgotten or pruned, and {} is not written\n",
        status_path.display()
    ));
    for d in &cfg.databases {
        let name = &d.opts.name;
        let mut src = Source::new(&d.opts.path);
        match src.check(d.opts.busy_timeout) {
            Ok(_) => out.push_str(&format!(
                "{name}: would snapshot {} (a watcher's first run of a database always takes one), then every {}\n",
                d.opts.path.display(),
                crate::timearg::format_duration(d.opts.every)
            )),
            Err(e) => out.push_str(&format!(
                "{name}: would fail: {}\n",
                super::run::render(&e)
            )),
        }
        let mine: Vec<_> = snaps
            .iter()
            .filter(|s| s.manifest.name == d.opts.name)
            .cloned()
            .collect();
        match retention_of(d.opts.policy.as_ref(), store) {
            Ok(Some((p, from))) => {
                let decisions = retention::apply(&p, &mine, Utc::now());
                let gone: Vec<String> = decisions
                    .iter()
                    .filter(|x| !x.keep)
                    .map(|x| x.id.short())
                    .collect();
                out.push_str(&format!(
                    "{name}: retention {p} ({from}): of its {} snapshots now, would forget {}{}\n",
                    mine.len(),
                    gone.len(),
                    if gone.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", gone.join(", "))
                    }
                ));
            }
            Ok(None) => out.push_str(&format!(
                "{name}: no retention policy: its {} snapshots are kept\n",
                mine.len()
            )),
            Err(e) => out.push_str(&format!(
                "{name}: cannot read the store's retention policy: {e}\n"
            )),
        }
    }
    // The last prune, from the status file of an earlier watcher (read only).
    let last = Status::load(status_path)
        .ok()
        .flatten()
        .and_then(|s| s.prune.last.and_then(|l| l.time));
    let settings = &cfg.prune;
    let due = match settings.schedule {
        PruneSchedule::Never => false,
        PruneSchedule::Every(d) => {
            last.is_none_or(|l| (Utc::now() - l).to_std().unwrap_or_default() >= d)
        }
    };
    let what = match settings.prune(store, true) {
        PruneOutcome::Pruned(r) => format!(
            "would free {} ({} packs deleted, {} rewritten)",
            crate::output::bytes(r.bytes_freed),
            r.packs_deleted,
            r.packs_rewritten
        ),
        PruneOutcome::Postponed { holder } => {
            format!("cannot tell: the store is in use by {holder}")
        }
        PruneOutcome::Failed(e) => format!("cannot tell: {}", super::run::render(&e)),
    };
    out.push_str(&format!(
        "prune: {}; {}: {what}\n",
        prune_when(cfg, last),
        if due {
            "on the first round"
        } else {
            "if it ran now"
        }
    ));
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// `watch --check-config`: the config parsed and checked, its store and
/// databases found; a summary on stdout. A bad config is a usage error (exit 2).
pub fn check_config(g: &Global, a: &WatchArgs) -> Result<ExitCode> {
    let bad = |m: String| anyhow::Error::new(UsageError(m));
    let cfg = match &a.config {
        Some(f) => super::config::load(f),
        None => super::config::from_args(a),
    }
    .map_err(|e| bad(message(&e)))?;
    let origin = cfg
        .file
        .as_ref()
        .map(|f| f.display().to_string())
        .unwrap_or_else(|| "the command line".into());
    let store_dir = resolve_store(g, cfg.store.as_deref()).map_err(|e| bad(message(&e)))?;
    let store = open_store(&Global {
        store: Some(store_dir.clone()),
        json: g.json,
        progress: false,
        no_cache: g.no_cache,
    })
    .map_err(|e| bad(format!("{origin}: store: {}", message(&e))))?;
    let mut problems = Vec::new();
    for d in &cfg.databases {
        match std::fs::metadata(&d.opts.path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => problems.push(format!(
                "{origin}: database {:?}: path {}: not a file",
                d.opts.name,
                d.opts.path.display()
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => problems.push(format!(
                "{origin}: database {:?}: path {}: no such file",
                d.opts.name,
                d.opts.path.display()
            )),
            Err(e) => problems.push(format!(
                "{origin}: database {:?}: path {}: {e}",
                d.opts.name,
                d.opts.path.display()
            )),
        }
    }
    if let Some(dir) = &cfg.check_dir {
        if !dir.is_dir() {
            problems.push(format!(
                "{origin}: check_dir {}: not a folder",
                dir.display()
            ));
        }
    }
    let status_path = match a.status_file.clone().or(cfg.status_file.clone()) {
        Some(p) => p,
        None => status::default_path(&store)?,
    };
    if let Some(parent) = status_path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() && cfg.status_file.is_some() && a.status_file.is_none() {
            problems.push(format!(
                "{origin}: status_file {}: its folder does not exist",
                status_path.display()
            ));
        }
    }
    if !problems.is_empty() {
        return Err(bad(problems.join("\n")));
    }
    let mut out = format!(
        "{origin}: ok\nstore: {}\nstatus file: {}\nprune: {}\n",
        store_dir.display(),
        status_path.display(),
        prune_text(cfg.prune.schedule)
    );
    for d in &cfg.databases {
        let retention = match retention_of(d.opts.policy.as_ref(), &store) {
            Ok(Some((p, from))) => format!("retention {p} ({from})"),
            Ok(None) => "no retention policy".into(),
            Err(e) => format!("retention unknown ({e})"),
        };
        let hooks: Vec<&str> = [
            d.on_failure.as_ref().map(|_| "on_failure"),
            d.on_success.as_ref().map(|_| "on_success"),
        ]
        .into_iter()
        .flatten()
        .collect();
        out.push_str(&format!(
            "{}: {}, every {}, {retention}, capture_timeout {}{}\n",
            d.opts.name,
            d.opts.path.display(),
            crate::timearg::format_duration(d.opts.every),
            crate::timearg::format_duration(d.opts.capture_timeout),
            if hooks.is_empty() {
                String::new()
            } else {
                format!(", hooks: {}", hooks.join(", "))
            }
        ));
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

//! The watcher's prune: on its schedule (or when the unused share says so), on the
//! main thread while no run is under way, so it never overlaps this watcher's backups.

use super::config::PruneSchedule;
use super::status::{ErrorRecord, PruneRecord};
use super::{hook, Watcher};
use crate::hints;
use chrono::Utc;
use pagesnap_core::{LockConflict, PruneOptions};
use std::time::Duration;
use tracing::{error, info, warn};

impl Watcher {
    /// Runs prune when its schedule (or the unused share) says so.
    pub(super) fn maybe_prune(&mut self) {
        let now = Utc::now();
        let last = self.status.prune.last.as_ref().and_then(|l| l.time);
        let by_time = match self.cfg.prune {
            PruneSchedule::Never => false,
            PruneSchedule::Every(d) => {
                last.is_none_or(|l| (now - l).to_std().unwrap_or(Duration::ZERO) >= d)
            }
        };
        let mut why = String::from("scheduled");
        let mut due = by_time;
        if !due && self.removed_since_look {
            if let Some(threshold) = self.cfg.prune_when_unused {
                self.removed_since_look = false;
                let plan = self.store.prune(&PruneOptions {
                    max_unused: self.cfg.prune_max_unused,
                    dry_run: true,
                    assume_forgotten: Vec::new(),
                });
                match plan {
                    Ok(r) => {
                        let share = r.bytes_freed as f64 / r.bytes_before.max(1) as f64;
                        if share >= threshold {
                            due = true;
                            why = format!(
                                "{:.1}% of the store is unused (threshold {:.1}%)",
                                share * 100.0,
                                threshold * 100.0
                            );
                        }
                    }
                    Err(e) => warn!(
                        event = "prune",
                        "could not measure unused space: {}",
                        hints::render(&e)
                    ),
                }
            }
        }
        if !due {
            return;
        }
        info!(event = "prune", reason = %why, "pruning ({why})");
        let r = self.store.prune(&PruneOptions {
            max_unused: self.cfg.prune_max_unused,
            dry_run: false,
            assume_forgotten: Vec::new(),
        });
        match r {
            Ok(r) => {
                info!(
                    event = "prune",
                    bytes_freed = r.bytes_freed,
                    packs_deleted = r.packs_deleted,
                    packs_rewritten = r.packs_rewritten,
                    duration_secs = r.duration.as_secs_f64(),
                    "pruned: freed {} ({} packs deleted, {} rewritten) in {:.2}s",
                    crate::output::bytes(r.bytes_freed),
                    r.packs_deleted,
                    r.packs_rewritten,
                    r.duration.as_secs_f64()
                );
                self.status.prune.last = Some(PruneRecord {
                    time: Some(Utc::now()),
                    bytes_freed: r.bytes_freed,
                    packs_deleted: r.packs_deleted,
                    packs_rewritten: r.packs_rewritten,
                    duration_secs: r.duration.as_secs_f64(),
                });
                self.status.prune.last_error = None;
                self.removed_since_look = false;
                if let Some(m) = &self.metrics {
                    m.record_prune(Some(r.bytes_freed), Utc::now());
                }
            }
            // Another process uses the store (a backup from cron, a restore):
            // not a failure; the prune is retried after the next snapshot.
            Err(pagesnap_core::Error::Locked {
                holder, conflict, ..
            }) if conflict != LockConflict::Stale => {
                info!(
                    event = "prune",
                    "prune postponed: the store is in use by {holder}"
                );
            }
            Err(e) => {
                let msg = hints::render(&e);
                error!(event = "failure", what = "prune", "prune failed: {msg}");
                if let Some(m) = &self.metrics {
                    m.record_prune(None, Utc::now());
                }
                self.status.prune.last_error = Some(ErrorRecord {
                    time: Some(Utc::now()),
                    event: "prune".into(),
                    message: msg.clone(),
                });
                if let Some(cmd) = self.cfg.on_failure.clone() {
                    let env = vec![
                        ("PAGESNAP_DB_NAME", String::new()),
                        ("PAGESNAP_DB_PATH", String::new()),
                        ("PAGESNAP_ERROR", msg),
                        ("PAGESNAP_EVENT", "prune".to_string()),
                        ("PAGESNAP_FAILURES", "1".to_string()),
                        ("PAGESNAP_STORE", self.store_dir.display().to_string()),
                    ];
                    if let Some(h) = hook::spawn(&cmd, self.cfg.on_failure_timeout, env) {
                        self.hooks.push(h);
                    }
                }
            }
        }
        self.refresh_prune_status();
    }

    pub(super) fn refresh_prune_status(&mut self) {
        let p = &mut self.status.prune;
        p.schedule = self.cfg.prune.to_string();
        p.when_unused_percent = self.cfg.prune_when_unused.map(|f| f * 100.0);
        p.next_due = match self.cfg.prune {
            PruneSchedule::Never => None,
            PruneSchedule::Every(d) => p
                .last
                .as_ref()
                .and_then(|l| l.time)
                .and_then(|t| chrono::TimeDelta::from_std(d).ok().map(|d| t + d)),
        };
    }
}

//! The watcher's prune: on its schedule (or when the unused share says so),
//! while no run is under way, so it never overlaps this watcher's backups.
//! The library's watcher decides and runs it ([`PruneSettings`]); its log
//! lines, the status file's record and the `on_failure` hook are here.

use super::config::prune_text;
use super::status::{ErrorRecord, PruneRecord};
use super::{hook, run, Watcher};
use chrono::Utc;
use pagesnap_core::watch::WatchEvent;
use tracing::{error, info, warn};

impl Watcher {
    /// Logs and records what the library's watcher says of prune.
    pub(super) fn prune_event(&mut self, e: WatchEvent) {
        match e {
            WatchEvent::PruneStarted { reason } => {
                info!(event = "prune", reason = %reason, "pruning ({reason})");
                return;
            }
            WatchEvent::PruneFinished {
                bytes_freed,
                packs_deleted,
                packs_rewritten,
                duration,
            } => {
                info!(
                    event = "prune",
                    bytes_freed,
                    packs_deleted,
                    packs_rewritten,
                    duration_secs = duration.as_secs_f64(),
                    "pruned: freed {} ({packs_deleted} packs deleted, {packs_rewritten} rewritten) in {:.2}s",
                    crate::output::bytes(bytes_freed),
                    duration.as_secs_f64()
                );
                self.status.prune.last = Some(PruneRecord {
                    time: Some(Utc::now()),
                    bytes_freed,
                    packs_deleted,
                    packs_rewritten,
                    duration_secs: duration.as_secs_f64(),
                });
                self.status.prune.last_error = None;
                if let Some(m) = &self.metrics {
                    m.record_prune(Some(bytes_freed), Utc::now());
                }
            }
            // Another process uses the store (a backup from cron, a restore):
            // not a failure; the prune is retried after the next snapshot.
            WatchEvent::PrunePostponed { holder } => {
                info!(
                    event = "prune",
                    "prune postponed: the store is in use by {holder}"
                );
                return;
            }
            WatchEvent::PruneFailed {
                error: e,
                measuring: true,
            } => {
                warn!(
                    event = "prune",
                    "could not measure unused space: {}",
                    run::render(&e)
                );
                return;
            }
            WatchEvent::PruneFailed {
                error: e,
                measuring: false,
            } => {
                let msg = run::render(&e);
                self.any_failed = true;
                if let Some(m) = &self.metrics {
                    m.record_prune(None, Utc::now());
                }
                error!(event = "failure", what = "prune", "prune failed: {msg}");
                self.status.prune.last_error = Some(ErrorRecord {
                    time: Some(Utc::now()),
                    event: "prune".into(),
                    message: msg.clone(),
                });
                if let Some(cmd) = self.cfg.on_failure.clone() {
                    let env = hook::HookEnv {
                        name: "",
                        path: "",
                        event: "prune",
                        error: &msg,
                        failures: 1,
                        store: &self.store_dir.display().to_string(),
                        snapshot: None,
                    }
                    .vars();
                    if let Some(h) =
                        hook::spawn("on_failure", &cmd, self.cfg.on_failure_timeout, env)
                    {
                        self.hooks.push(h);
                    }
                }
            }
            _ => return,
        }
        self.refresh_prune_status();
        self.write_status();
    }

    pub(super) fn refresh_prune_status(&mut self) {
        let settings = &self.cfg.prune;
        let p = &mut self.status.prune;
        p.schedule = prune_text(settings.schedule);
        p.when_unused_percent = settings.when_unused.map(|f| f * 100.0);
        p.next_due = settings.next_due(p.last.as_ref().and_then(|l| l.time));
    }
}

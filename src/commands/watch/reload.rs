//! SIGHUP: the watcher re-reads its config file, keeping what did not change.

use super::{abs, config, hook, resolve_store, Watched, Watcher};
use crate::cli::Global;
use crate::commands::open_store;
use crate::message;
use anyhow::Result;
use chrono::Utc;
use std::path::Path;
use std::sync::Arc;
use tracing::{error, info, warn};

impl Watcher {
    /// SIGHUP: re-reads the config file. A config with errors is logged and the
    /// running one kept. Databases that keep their name and path keep their
    /// connection and their "last seen" state.
    pub(super) fn reload(&mut self) {
        let Some(file) = self.cfg.file.clone() else {
            warn!(
                event = "reload",
                "SIGHUP: nothing to reload (the databases were given on the command line)"
            );
            return;
        };
        hook::notify(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}",
            hook::monotonic_usec()
        ));
        match self.try_reload(&file) {
            Ok(msg) => {
                info!(event = "reload", "reloaded {}: {msg}", file.display());
                self.log_plan();
            }
            Err(e) => error!(
                event = "reload",
                "reloading {} failed, the running configuration is kept: {}",
                file.display(),
                message(&e)
            ),
        }
        self.write_status();
        hook::notify("READY=1");
    }

    pub(super) fn try_reload(&mut self, file: &Path) -> Result<String> {
        let new = config::load(file)?;
        let cli = Global {
            store: self.cli_store.clone(),
            json: self.json,
            progress: false,
            no_cache: false,
        };
        let store_dir = resolve_store(&cli, new.store.as_deref())?;
        let store = if store_dir != self.store_dir {
            Some(open_store(&Global {
                store: Some(store_dir.clone()),
                json: self.json,
                progress: false,
                no_cache: false,
            })?)
        } else {
            None
        };
        if !self.status_from_cli && new.status_file != self.cfg.status_file {
            warn!(
                event = "reload",
                "status_file changes take effect when the watcher restarts"
            );
        }
        if new.log_format != self.cfg.log_format {
            warn!(
                event = "reload",
                "log_format changes take effect when the watcher restarts"
            );
        }
        if let Some(s) = store {
            info!(event = "reload", "store changed to {}", store_dir.display());
            self.store = Arc::new(s);
            self.store_dir = store_dir;
            self.status.store = abs(&self.store_dir);
            // A new store: the watcher's connections know nothing of its snapshots
            // (those of runs under way are reset when they return).
            self.generation += 1;
            for d in &mut self.dbs {
                if let Some(s) = &mut d.source {
                    s.reset();
                }
            }
        }
        let now = Utc::now();
        let mut old: Vec<Watched> = std::mem::take(&mut self.dbs);
        let mut added = Vec::new();
        for c in &new.databases {
            match old.iter().position(|o| o.cfg.name == c.name) {
                Some(i) => {
                    let mut o = old.swap_remove(i);
                    let mut fresh = Watched::new(c.clone(), Some(o.st.clone()), now);
                    if o.cfg.path == c.path {
                        // None while a run has it: the run brings it back.
                        fresh.source = o.source.take();
                        fresh.since_check = o.since_check;
                    }
                    // Unchanged timing keeps the run already scheduled (as
                    // does a run under way).
                    if (o.cfg.every == c.every && o.cfg.jitter == c.jitter)
                        || self.runs.iter().any(|r| r.name == c.name)
                    {
                        fresh.next_run = o.next_run;
                        fresh.st.next_run = Some(o.next_run);
                    }
                    self.dbs.push(fresh);
                }
                None => {
                    added.push(c.name.clone());
                    self.dbs.push(Watched::new(c.clone(), None, now));
                }
            }
        }
        let removed: Vec<String> = old.iter().map(|o| o.cfg.name.clone()).collect();
        let status_file = self.cfg.status_file.clone();
        let log_format = self.cfg.log_format;
        self.cfg = new;
        self.cfg.status_file = status_file;
        self.cfg.log_format = log_format;
        self.refresh_prune_status();
        Ok(format!(
            "{} databases{}{}",
            self.dbs.len(),
            if added.is_empty() {
                String::new()
            } else {
                format!(", added {}", added.join(", "))
            },
            if removed.is_empty() {
                String::new()
            } else {
                format!(", removed {}", removed.join(", "))
            }
        ))
    }
}

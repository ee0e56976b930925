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
        let store_changed = store.is_some();
        if let Some(s) = store {
            info!(event = "reload", "store changed to {}", store_dir.display());
            self.store = Arc::new(s);
            self.store_dir = store_dir;
            self.status.store = abs(&self.store_dir);
            // A new store: a new library watcher, whose connections know
            // nothing of the old store's snapshots. The old one's runs under
            // way finish on their own (their results still come here).
            self.generation += 1;
            if let Some(old) = self.handle.take() {
                let grace = self.cfg.stop_timeout;
                std::thread::spawn(move || old.stop_with(grace, grace));
            }
        }
        let now = Utc::now();
        let mut old: Vec<Watched> = std::mem::take(&mut self.dbs);
        let mut added = Vec::new();
        for c in &new.databases {
            match old.iter().position(|o| o.cfg.opts.name == c.opts.name) {
                Some(i) => {
                    let o = old.swap_remove(i);
                    let mut fresh = Watched::new(c.clone(), Some(o.st.clone()), now);
                    // The library keeps the run already scheduled when the
                    // timing is unchanged (or a run is under way).
                    fresh.st.next_run = o.st.next_run;
                    self.dbs.push(fresh);
                }
                None => {
                    added.push(c.opts.name.clone());
                    self.dbs.push(Watched::new(c.clone(), None, now));
                }
            }
        }
        let removed: Vec<String> = old.iter().map(|o| o.cfg.opts.name.clone()).collect();
        let status_file = self.cfg.status_file.clone();
        let log_format = self.cfg.log_format;
        self.cfg = new;
        self.cfg.status_file = status_file;
        self.cfg.log_format = log_format;
        self.refresh_prune_status();
        if store_changed || self.handle.is_none() {
            self.start()?;
        } else if let Some(h) = &self.handle {
            // Databases that keep their name and path keep their connection
            // and what they last saw (no extra snapshot).
            h.set_options(&self.lib_options());
            for name in &removed {
                h.remove(name)?;
            }
            for c in &self.cfg.databases {
                h.configure(c.opts.clone())?;
            }
        }
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

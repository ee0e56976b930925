//! `pagesnap watch`: a daemon that snapshots databases on a schedule.
//!
//! Built on the library's watcher ([`pagesnap_core::watch::Watcher`]), which
//! keeps the schedule, runs each database on a thread of its own (change
//! check, snapshot, retention, image check), abandons a run that has not
//! committed its snapshot by its `capture_timeout` (it publishes nothing and
//! holds no store lock; no new run of that database starts until its thread
//! returns), and prunes while none of its runs is under way. Runs of different
//! databases may overlap: at most one per database, and at most as many as the
//! machine has cores (at least two) at once.
//!
//! What is the command line's is here: the config, signals, SIGHUP reload, the
//! log lines, the hooks and the status file. The main thread turns the
//! library's events into those; only it writes the status file (when a run
//! starts and when it ends).
//!
//! SIGINT/SIGTERM: the runs in progress are waited for up to `stop_timeout` (a
//! snapshot is published by its manifest, written last, so none is ever
//! partial); those still running then are abandoned, except one already
//! publishing its snapshot, which gets up to `stop_timeout` more. The status
//! file says `stopped`, locks are released, exit 0. A second signal exits at
//! once (status 1), abandoning the snapshot in progress unpublished. SIGHUP
//! re-reads the config.
//!
//! Files by job: this one the events' bookkeeping; [`run`] a run's log lines
//! and records; [`prune`] prune's; [`reload`] SIGHUP; [`signals`] the signals;
//! [`plan`] what it will do (`--dry-run`, `--check-config`); [`config`],
//! [`hook`], [`status`].

pub mod config;
mod hook;
pub mod metrics;
mod plan;
mod prune;
mod reload;
mod run;
mod signals;
pub mod status;

use self::config::{DbConfig, WatchConfig};
use self::signals::Signals;
use self::status::{DbStatus, ErrorRecord, InProgress, Status, StatusLock};
use super::open_store;
use crate::cli::{Global, LogFormat, WatchArgs};
use crate::message;
use anyhow::{anyhow, Result};
use chrono::{DateTime, Utc};
use pagesnap_core::watch::{self as lib, schedule, ImageCheck};
use pagesnap_core::Store;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use tracing::{error, info, warn};

pub fn run(g: &Global, a: &WatchArgs) -> Result<ExitCode> {
    if a.check_config {
        return plan::check_config(g, a);
    }
    // Everything is checked before anything starts: a config error exits 1 with
    // nothing snapshotted and no status file written.
    let cfg = match &a.config {
        Some(f) => config::load(f)?,
        None => config::from_args(a)?,
    };
    let store_dir = resolve_store(g, cfg.store.as_deref())?;
    let store = open_store(&Global {
        store: Some(store_dir.clone()),
        json: g.json,
        progress: false,
        no_cache: g.no_cache,
    })?;
    let status_path = match a.status_file.clone().or(cfg.status_file.clone()) {
        Some(p) => p,
        None => status::default_path(&store)?,
    };
    if a.dry_run {
        return plan::dry_run(&cfg, &store, &status_path);
    }
    let status_lock = StatusLock::acquire(&status_path)?;
    // Listening is checked before anything starts, like the config.
    let metrics = metrics::Metrics::new();
    let metrics_server = match &a.metrics_listen {
        Some(addr) => Some(metrics.serve(addr)?),
        None => None,
    };
    // A previous run's status carries over (last snapshots, errors, last prune);
    // an unreadable one is replaced.
    let previous = Status::load(&status_path).ok().flatten();
    let format = a.log_format.or(cfg.log_format).unwrap_or(if g.json {
        LogFormat::Json
    } else {
        LogFormat::Human
    });
    init_logging(format)?;
    let signals = Signals::install()?;
    let mut w = Watcher::new(
        store,
        store_dir,
        g.store.clone(),
        g.json,
        status_path,
        cfg,
        previous,
        signals,
        a.status_file.is_some(),
    );
    if let Some(s) = &metrics_server {
        for d in &w.dbs {
            metrics.register(&d.cfg.opts.name);
        }
        w.metrics = Some(metrics);
        info!(event = "metrics", address = %s.addr(), "metrics on http://{}/metrics", s.addr());
    }
    // The status file must be writable before the watcher says it is ready.
    w.status.save(&w.status_path)?;
    info!(
        event = "start",
        store = %w.store_dir.display(),
        status_file = %w.status_path.display(),
        databases = w.dbs.len(),
        "watching {}",
        w.dbs
            .iter()
            .map(|d| format!(
                "{} ({}, every {})",
                d.cfg.opts.name,
                d.cfg.opts.path.display(),
                crate::timearg::format_duration(d.cfg.opts.every)
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    w.log_plan();
    w.start()?;
    if a.once {
        // One round: every database is due now; the loop ends when each has run.
        w.once = true;
        if let Some(h) = &w.handle {
            for d in &w.dbs {
                h.run_now(&d.cfg.opts.name)?;
            }
        }
    }
    hook::notify(&format!(
        "READY=1\nSTATUS=watching {} databases",
        w.dbs.len()
    ));
    w.run();
    let failed = w.once && w.any_failed;
    w.shutdown();
    drop(metrics_server);
    drop(status_lock);
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The store of a watcher: `--store`, else the config's `store`, else
/// `$PAGESNAP_STORE`, else the default store.
pub(crate) fn resolve_store(g: &Global, from_config: Option<&Path>) -> Result<PathBuf> {
    let env = std::env::var_os("PAGESNAP_STORE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    // clap fills `g.store` from the flag or the environment: it is the flag's
    // only when it differs from the environment's value.
    let flag = g.store.clone().filter(|s| env.as_ref() != Some(s));
    let chosen = flag.or_else(|| from_config.map(Path::to_path_buf)).or(env);
    super::store_path(&Global {
        store: chosen,
        json: g.json,
        progress: false,
        no_cache: g.no_cache,
    })
}

fn init_logging(format: LogFormat) -> Result<()> {
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_timer(crate::output::LogTime)
        .with_max_level(tracing::Level::INFO);
    let r = match format {
        LogFormat::Human => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
    r.map_err(|e| anyhow!("cannot set up logging: {e}"))
}

/// One watched database: its config and its status.
struct Watched {
    cfg: DbConfig,
    st: DbStatus,
}

impl Watched {
    fn new(cfg: DbConfig, previous: Option<DbStatus>, now: DateTime<Utc>) -> Watched {
        let o = &cfg.opts;
        let offset = schedule::jitter_offset(&o.name, o.jitter);
        let next_run = schedule::next_run(now, o.every, offset);
        let mut st = previous.unwrap_or_default();
        st.name = o.name.clone();
        st.path = abs(&o.path);
        st.every_secs = o.every.as_secs_f64();
        st.jitter_offset_secs = offset.as_secs_f64();
        st.capture_timeout_secs = o.capture_timeout.as_secs_f64();
        st.next_run = Some(next_run);
        st.running_since = None;
        st.deadline = None;
        st.stuck_since = None;
        st.integrity_check = match o.image_check {
            ImageCheck::Off => "off".into(),
            mode => format!(
                "{}, {}",
                mode.as_str(),
                match o.image_check_every {
                    1 => "every snapshot".to_string(),
                    n => format!("every {n} snapshots"),
                }
            ),
        };
        st.retention = o.policy.as_ref().map(|p| format!("{p} (config)"));
        Watched { cfg, st }
    }
}

/// `pagesnap watch`: the library's watcher ([`lib::Watcher`]) does the runs
/// and prune on its threads; this main thread turns its events into logs, the
/// status file and hooks, and handles signals and reloads.
struct Watcher {
    store: Arc<Store>,
    store_dir: PathBuf,
    /// `--store` or `$PAGESNAP_STORE` as clap saw them (a reload resolves again).
    cli_store: Option<PathBuf>,
    json: bool,
    status_path: PathBuf,
    /// The status file came from `--status-file` (a reload does not change it).
    status_from_cli: bool,
    cfg: WatchConfig,
    dbs: Vec<Watched>,
    status: Status,
    signals: Signals,
    hooks: Vec<JoinHandle<()>>,
    /// The last status write failed (logged once until it works again).
    status_failing: bool,
    /// The library's watcher (`None` before start and after stop).
    handle: Option<lib::WatcherHandle>,
    /// Its events, tagged with the store generation they come from.
    events_tx: Sender<(u64, lib::WatchEvent)>,
    events_rx: Receiver<(u64, lib::WatchEvent)>,
    /// Bumped when a reload changes the store (a new library watcher).
    generation: u64,
    /// `--once`: one run of every database, then stop.
    once: bool,
    /// The databases that have had their run (with `once`).
    ran: std::collections::HashSet<String>,
    /// A run or a prune failed (the exit status of `--once`).
    any_failed: bool,
    /// `--metrics-listen`: where runs and prunes are counted.
    metrics: Option<Arc<metrics::Metrics>>,
}

/// This machine's name (as `hostname` says it, on Linux).
fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

impl Watcher {
    #[allow(clippy::too_many_arguments)]
    fn new(
        store: Store,
        store_dir: PathBuf,
        cli_store: Option<PathBuf>,
        json: bool,
        status_path: PathBuf,
        cfg: WatchConfig,
        previous: Option<Status>,
        signals: Signals,
        status_from_cli: bool,
    ) -> Watcher {
        let now = Utc::now();
        let mut previous = previous.unwrap_or_default();
        let dbs: Vec<Watched> = cfg
            .databases
            .iter()
            .map(|d| {
                let prev = previous
                    .databases
                    .iter()
                    .position(|p| p.name == d.opts.name)
                    .map(|i| previous.databases.swap_remove(i));
                Watched::new(d.clone(), prev, now)
            })
            .collect();
        let mut status = Status {
            version: status::VERSION,
            state: "running".into(),
            pid: std::process::id(),
            host: host(),
            started: Some(now),
            updated: Some(now),
            store: abs(&store_dir),
            config: cfg.file.as_deref().map(abs),
            in_progress: None,
            prune: previous.prune,
            databases: Vec::new(),
        };
        status.prune.last_error = None;
        let (events_tx, events_rx) = std::sync::mpsc::channel();
        let mut w = Watcher {
            store: Arc::new(store),
            store_dir,
            cli_store,
            json,
            status_path,
            status_from_cli,
            cfg,
            dbs,
            status,
            signals,
            hooks: Vec::new(),
            status_failing: false,
            handle: None,
            events_tx,
            events_rx,
            generation: 0,
            once: false,
            ran: std::collections::HashSet::new(),
            any_failed: false,
            metrics: None,
        };
        w.refresh_prune_status();
        w.sync_status();
        w
    }

    /// The library's options of this config (its databases included).
    fn lib_options(&self) -> lib::WatcherOptions {
        lib::WatcherOptions {
            databases: self.cfg.databases.iter().map(|d| d.opts.clone()).collect(),
            lock_wait: self.cfg.lock_wait,
            check_dir: self.cfg.check_dir.clone(),
            base_cache: self.cfg.base_cache,
            paranoid: self.cfg.paranoid,
            prune: self.cfg.prune.clone(),
            max_parallel: 0,
            observers: Vec::new(),
            prune_last: self.status.prune.last.as_ref().and_then(|l| l.time),
        }
    }

    /// Starts the library's watcher on the current store; its events come to
    /// this thread through the channel, and wake it.
    fn start(&mut self) -> Result<()> {
        let tx = self.events_tx.clone();
        let generation = self.generation;
        let waker = self.signals.waker();
        let opts = self.lib_options().on_event(move |e| {
            let _ = tx.send((generation, e.clone()));
            // Only wakes the main thread: a full socket buffer means it is awake.
            if let Some(w) = &waker {
                let _ = (&*w).write(&[1]);
            }
        });
        self.handle = Some(lib::Watcher::start(Arc::clone(&self.store), opts)?);
        Ok(())
    }

    fn run(&mut self) {
        loop {
            if self.signals.stopping() {
                return;
            }
            if self.signals.reload.swap(false, Ordering::SeqCst) {
                self.reload();
                continue;
            }
            self.hooks.retain(|h| !h.is_finished());
            self.drain();
            let mut wake = None;
            if self.once && self.dbs.iter().all(|d| self.ran.contains(&d.cfg.opts.name)) {
                if self.handle.as_ref().is_none_or(|h| h.is_idle()) {
                    self.drain();
                    return;
                }
                // A prune may follow the last run: look again shortly.
                wake = Some(Utc::now() + chrono::TimeDelta::milliseconds(50));
            }
            // Events and signals wake it before.
            self.signals.sleep_until(wake);
        }
    }

    /// Handles the events that have come.
    fn drain(&mut self) {
        while let Ok((generation, e)) = self.events_rx.try_recv() {
            self.event(generation, e);
        }
    }

    fn event(&mut self, generation: u64, e: lib::WatchEvent) {
        use lib::WatchEvent as E;
        match e {
            // A run of a watcher replaced by a reload started before it stopped.
            E::RunStarted { .. } if generation != self.generation => {}
            E::RunStarted { .. } => self.write_status(),
            E::RunFinished(f) => self.record(*f),
            E::RunLate { name } => warn!(
                event = "late",
                db = %name,
                "{name}: the run reached its deadline while publishing its snapshot: waiting for it"
            ),
            E::StuckReturned { name } => {
                info!(
                    event = "stuck",
                    db = %name,
                    "{name}: the run abandoned at its deadline returned at last (it published nothing); the next run starts as scheduled"
                );
                self.write_status();
            }
            other => self.prune_event(other),
        }
    }

    /// Records what a run did, logs it, runs its hook and writes the status.
    fn record(&mut self, f: lib::RunFinished) {
        let stop_during = self.signals.stopping();
        let Some(i) = self.dbs.iter().position(|d| d.cfg.opts.name == f.name) else {
            // Its database was removed by a reload meanwhile.
            if let Some(e) = f.outcome.error() {
                error!(event = "failure", db = %f.name, what = "backup", "{}", run::render(e));
            }
            self.write_status();
            return;
        };
        self.ran.insert(f.name.clone());
        let d = &self.dbs[i];
        // Abandoned runs are said as the command line's config names things.
        let abandoned = match &f.outcome {
            lib::RunOutcome::Abandoned { why, phase, .. } => Some(match why {
                lib::AbandonReason::Deadline => format!(
                    "{}: the run did not finish within its capture_timeout of {} (it was {phase}): abandoned, no snapshot was published",
                    d.cfg.opts.path.display(),
                    crate::timearg::format_duration(d.cfg.opts.capture_timeout),
                ),
                lib::AbandonReason::Stop => format!(
                    "{}: stopping: the run was still {phase} after stop_timeout ({}): abandoned, no snapshot was published",
                    d.cfg.opts.path.display(),
                    crate::timearg::format_duration(self.cfg.stop_timeout)
                ),
            }),
            _ => None,
        };
        // No hook for a run abandoned because the watcher stops.
        let hook = !matches!(
            f.outcome,
            lib::RunOutcome::Abandoned {
                why: lib::AbandonReason::Stop,
                ..
            }
        );
        let mut out = run::outcome(&f);
        if let Some(msg) = abandoned {
            out.failure = Some(("backup", msg));
        }
        if out.failure.is_some() {
            self.any_failed = true;
        }
        let d = &mut self.dbs[i];
        if let Some(m) = self.metrics.as_ref().filter(|_| !out.interrupted) {
            m.record_run(
                &d.cfg.opts.name,
                &metrics::RunRecord {
                    bytes_added: out.last_snapshot.as_ref().map(|s| s.bytes_added),
                    unchanged: out.skip.is_some(),
                    failed: out.failure.is_some(),
                    duration: f.duration,
                    at: f.ended,
                },
            );
        }
        if out.interrupted {
            info!(event = "stop", db = %d.cfg.opts.name, "stop requested while waiting for the store: no snapshot of {} taken", d.cfg.opts.name);
        } else {
            if let Some(s) = out.skip {
                d.st.skips += 1;
                d.st.last_skip = Some(s);
            }
            if let Some(s) = &out.last_snapshot {
                d.st.snapshots += 1;
                d.st.last_snapshot = Some(s.clone());
            }
            if let Some(r) = out.retention {
                d.st.retention = r;
            }
            if let Some(r) = out.last_retention {
                d.st.last_retention = Some(r);
            }
            if let Some(c) = out.last_check {
                d.st.last_check = Some(c);
            }
            d.st.last_attempt = Some(f.started);
            match &out.failure {
                Some((what, message)) => {
                    d.st.last_result = Some("failed".into());
                    d.st.failures += 1;
                    d.st.consecutive_failures += 1;
                    d.st.last_error = Some(ErrorRecord {
                        time: Some(Utc::now()),
                        event: what.to_string(),
                        message: message.clone(),
                    });
                    error!(
                        event = "failure",
                        db = %d.cfg.opts.name,
                        what = *what,
                        consecutive_failures = d.st.consecutive_failures,
                        "{} failed ({what}): {message}",
                        d.cfg.opts.name
                    );
                    if let Some(cmd) = d.cfg.on_failure.clone().filter(|_| hook) {
                        let env = hook_env(
                            d,
                            &self.store_dir,
                            what,
                            message,
                            out.last_snapshot.as_ref(),
                        );
                        if let Some(h) =
                            hook::spawn("on_failure", &cmd, self.cfg.on_failure_timeout, env)
                        {
                            self.hooks.push(h);
                        }
                    }
                }
                None if out.snapshot => {
                    d.st.last_result = Some("snapshot".into());
                    d.st.consecutive_failures = 0;
                    if let Some(cmd) = d.cfg.on_success.clone().filter(|_| hook) {
                        let env = hook_env(
                            d,
                            &self.store_dir,
                            "snapshot",
                            "",
                            out.last_snapshot.as_ref(),
                        );
                        if let Some(h) =
                            hook::spawn("on_success", &cmd, self.cfg.on_failure_timeout, env)
                        {
                            self.hooks.push(h);
                        }
                    }
                }
                None => {
                    d.st.last_result = Some("skipped".into());
                    d.st.consecutive_failures = 0;
                }
            }
            if stop_during && out.snapshot {
                info!(event = "stop", db = %d.cfg.opts.name, "stop requested during the run of {}: its snapshot was finished first", d.cfg.opts.name);
            }
        }
        let missed = schedule::missed(f.scheduled, f.next_run, d.cfg.opts.every);
        if missed > 0 {
            warn!(
                event = "late",
                db = %d.cfg.opts.name,
                missed,
                "the run of {} scheduled at {} ended at {}: {missed} scheduled run(s) skipped",
                d.cfg.opts.name,
                f.scheduled.format("%H:%M:%S%.3f"),
                f.ended.format("%H:%M:%S%.3f")
            );
        }
        d.st.next_run = Some(f.next_run);
        self.write_status();
    }

    fn sync_status(&mut self) {
        self.status.updated = Some(Utc::now());
        let live = self.handle.as_ref().map(|h| h.status()).unwrap_or_default();
        self.status.databases = self
            .dbs
            .iter()
            .map(|d| {
                let mut st = d.st.clone();
                if let Some(l) = live.iter().find(|l| l.name == d.cfg.opts.name) {
                    st.next_run = Some(l.next_run);
                    st.running_since = l.running_since;
                    st.deadline = l.running_since.map(|t| {
                        chrono::TimeDelta::from_std(d.cfg.opts.capture_timeout)
                            .ok()
                            .and_then(|c| t.checked_add_signed(c))
                            .unwrap_or(DateTime::<Utc>::MAX_UTC)
                    });
                    st.stuck_since = l.stuck_since;
                }
                st
            })
            .collect();
        self.status.in_progress = self
            .status
            .databases
            .iter()
            .filter_map(|d| d.running_since.map(|t| (t, d.name.clone())))
            .min()
            .map(|(since, name)| InProgress {
                name,
                since: Some(since),
            });
    }

    fn write_status(&mut self) {
        self.sync_status();
        match self.status.save(&self.status_path) {
            Ok(()) => self.status_failing = false,
            Err(e) => {
                if !self.status_failing {
                    error!(event = "status", "{}", message(&e));
                }
                self.status_failing = true;
            }
        }
    }

    fn shutdown(mut self) {
        hook::notify("STOPPING=1");
        info!(event = "stop", "stopping");
        // The runs under way get stop_timeout to end; those still capturing
        // then are abandoned (the process exit ends their threads), one
        // committing its snapshot gets stop_timeout more.
        let grace = self.cfg.stop_timeout;
        let report = self.handle.take().map(|h| h.stop_with(grace, grace));
        self.drain();
        for name in report.map(|r| r.publishing).unwrap_or_default() {
            warn!(
                event = "stop",
                db = %name,
                "{name}: still publishing its snapshot after twice stop_timeout: exiting anyway; the snapshot may or may not be published, and its store lock stays behind (`pagesnap unlock` removes it)"
            );
        }
        self.status.state = "stopped".into();
        self.write_status();
        // Hooks end by themselves (each has its timeout).
        for h in std::mem::take(&mut self.hooks) {
            let _ = h.join();
        }
        info!(event = "stop", "stopped");
    }
}

/// The environment of a database's `on_failure` and `on_success` hooks.
fn hook_env(
    d: &Watched,
    store_dir: &Path,
    event: &str,
    error: &str,
    snapshot: Option<&status::SnapshotRecord>,
) -> Vec<(&'static str, String)> {
    hook::HookEnv {
        name: &d.cfg.opts.name,
        path: &d.cfg.opts.path.display().to_string(),
        event,
        error,
        failures: d.st.consecutive_failures,
        store: &store_dir.display().to_string(),
        snapshot: snapshot.map(|s| (s.id.as_str(), s.bytes_added)),
    }
    .vars()
}

/// `p` made absolute (for the status file, read from anywhere).
fn abs(p: &Path) -> String {
    std::path::absolute(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

//! `pagesnap watch`: a daemon that snapshots databases on a schedule.
//!
//! The main thread keeps the schedule ([`schedule`]), the status file
//! ([`status`]) and prune. Each run of a database (change check, snapshot,
//! retention, image check: [`run`]) happens on a thread of its own, so that a
//! database whose file does not answer (a hung network mount, a lock held for
//! hours) stalls nothing else. A run has a deadline, the database's
//! `capture_timeout`: a run that has not committed its snapshot by then is
//! abandoned and reported as failed. It can publish nothing afterwards and holds
//! no store lock ([`pagesnap_core::Abandon`]); its thread may stay blocked in a
//! system call, and no new run of that database starts until it returns. Runs of
//! different databases may overlap: at most one per database, and at most as
//! many as the machine has cores (at least two) at once.
//!
//! Prune runs on the main thread while no run is under way, so a prune never
//! overlaps with this watcher's backups (the store's locks keep other processes
//! out). Only the main thread writes the status file: when a run starts and
//! when it ends.
//!
//! SIGINT/SIGTERM: the runs in progress are waited for up to `stop_timeout` (a
//! snapshot is published by its manifest, written last, so none is ever
//! partial); those still running then are abandoned, except one already
//! publishing its snapshot, which gets up to `stop_timeout` more. The status
//! file says `stopped`, locks are released, exit 0. A second signal exits at
//! once (status 1), abandoning the snapshot in progress unpublished. SIGHUP
//! re-reads the config.
//!
//! Files by job: this one the schedule loop and the runs' bookkeeping;
//! [`run`] one run; [`prune`] prune; [`reload`] SIGHUP; [`signals`] the signals;
//! [`config`], [`schedule`], [`source`] (change detection), [`hook`], [`status`].

pub mod config;
mod hook;
mod prune;
mod reload;
mod run;
mod schedule;
mod signals;
mod source;
pub mod status;

use self::config::{DbConfig, WatchConfig};
use self::run::{Finished, Job, Phase, RunOutcome};
use self::signals::Signals;
use self::source::Source;
use self::status::{DbStatus, ErrorRecord, InProgress, Status, StatusLock};
use super::open_store;
use crate::cli::{Global, IntegrityCheck, LogFormat, WatchArgs};
use crate::message;
use anyhow::{anyhow, Result};
use chrono::{DateTime, Utc};
use pagesnap_core::{Abandon, Store};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

pub fn run(g: &Global, a: &WatchArgs) -> Result<ExitCode> {
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
    let status_lock = StatusLock::acquire(&status_path)?;
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
                d.cfg.name,
                d.cfg.path.display(),
                crate::timearg::format_duration(d.cfg.every)
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    hook::notify(&format!(
        "READY=1\nSTATUS=watching {} databases",
        w.dbs.len()
    ));
    w.run();
    w.shutdown();
    drop(status_lock);
    Ok(ExitCode::SUCCESS)
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

/// One watched database: its config, its source and its status.
struct Watched {
    cfg: DbConfig,
    /// `None` while a run has it.
    source: Option<Source>,
    offset: Duration,
    /// The next run; while a run is under way, that run's scheduled time.
    next_run: DateTime<Utc>,
    /// Snapshots since the last integrity check.
    since_check: u32,
    st: DbStatus,
}

impl Watched {
    fn new(cfg: DbConfig, previous: Option<DbStatus>, now: DateTime<Utc>) -> Watched {
        let offset = schedule::jitter_offset(&cfg.name, cfg.jitter);
        let next_run = schedule::next_run(now, cfg.every, offset);
        let mut st = previous.unwrap_or_default();
        st.name = cfg.name.clone();
        st.path = abs(&cfg.path);
        st.every_secs = cfg.every.as_secs_f64();
        st.jitter_offset_secs = offset.as_secs_f64();
        st.capture_timeout_secs = cfg.capture_timeout.as_secs_f64();
        st.next_run = Some(next_run);
        st.integrity_check = match cfg.integrity_check {
            IntegrityCheck::Off => "off".into(),
            mode => format!(
                "{}, {}",
                if mode == IntegrityCheck::Full {
                    "full"
                } else {
                    "quick"
                },
                match cfg.integrity_check_every {
                    1 => "every snapshot".to_string(),
                    n => format!("every {n} snapshots"),
                }
            ),
        };
        st.retention = cfg.policy.as_ref().map(|p| format!("{p} (config)"));
        Watched {
            source: Some(Source::new(&cfg.path)),
            cfg,
            offset,
            next_run,
            since_check: 0,
            st,
        }
    }
}

/// A run under way on its thread.
struct Running {
    id: u64,
    /// The database's name (indexes into `dbs` change on reload).
    name: String,
    path: PathBuf,
    scheduled: DateTime<Utc>,
    started: DateTime<Utc>,
    timeout: Duration,
    deadline: Instant,
    deadline_at: DateTime<Utc>,
    abandon: Arc<Abandon>,
    phase: Arc<Phase>,
    /// It reached its deadline while committing its snapshot: waited for.
    committed: bool,
}

/// A run abandoned at its deadline whose thread has not returned.
struct Stuck {
    id: u64,
    name: String,
    started: DateTime<Utc>,
}

/// Why a run is abandoned.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Abandoned {
    Deadline,
    Stop,
}

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
    /// A forget removed snapshots since `prune_when_unused` last looked.
    removed_since_look: bool,
    /// The last status write failed (logged once until it works again).
    status_failing: bool,
    runs: Vec<Running>,
    stuck: Vec<Stuck>,
    /// Runs send their [`Finished`] here.
    done_tx: Sender<Finished>,
    done_rx: Receiver<Finished>,
    next_id: u64,
    /// Bumped when a reload changes the store.
    generation: u64,
    /// A snapshot was taken since prune last had its chance.
    prune_pending: bool,
    /// How many runs may be under way at once.
    lanes: usize,
}

/// This machine's name (as `hostname` says it, on Linux).
fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// `now + d`, or far in the future if that overflows.
fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
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
                    .position(|p| p.name == d.name)
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
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let lanes = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .max(2);
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
            removed_since_look: false,
            status_failing: false,
            runs: Vec::new(),
            stuck: Vec::new(),
            done_tx,
            done_rx,
            next_id: 0,
            generation: 0,
            prune_pending: false,
            lanes,
        };
        w.refresh_prune_status();
        w.sync_status();
        w
    }

    fn running(&self, name: &str) -> bool {
        self.runs.iter().any(|r| r.name == name)
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
            while let Ok(f) = self.done_rx.try_recv() {
                self.finished(f);
            }
            self.enforce_deadlines();
            let now = Utc::now();
            // The clock was set back: reschedule from the new time rather than
            // wait for the old one to come round again.
            for d in &mut self.dbs {
                let every =
                    chrono::TimeDelta::from_std(d.cfg.every).unwrap_or(chrono::TimeDelta::MAX);
                if d.next_run - now > every {
                    d.next_run = schedule::next_run(now, d.cfg.every, d.offset);
                    d.st.next_run = Some(d.next_run);
                }
            }
            self.start_due(now);
            if self.prune_pending && self.runs.is_empty() && !self.signals.stopping() {
                self.prune_pending = false;
                self.maybe_prune();
                self.write_status();
                continue;
            }
            // Until the next run is due or a run's deadline comes (a run that
            // ends, or a signal, wakes the watcher before).
            let idle = self
                .dbs
                .iter()
                .filter(|d| d.next_run > now && !self.running(&d.cfg.name))
                .map(|d| d.next_run);
            let deadlines = self
                .runs
                .iter()
                .filter(|r| !r.committed)
                .map(|r| r.deadline_at);
            self.signals.sleep_until(idle.chain(deadlines).min());
        }
    }

    /// Starts the runs that are due, in order, as far as lanes are free.
    fn start_due(&mut self, now: DateTime<Utc>) {
        let mut due: Vec<usize> = (0..self.dbs.len())
            .filter(|&i| self.dbs[i].next_run <= now && !self.running(&self.dbs[i].cfg.name))
            .collect();
        due.sort_by_key(|&i| (self.dbs[i].next_run, i));
        for i in due {
            if self.signals.stopping() {
                return;
            }
            let scheduled = self.dbs[i].next_run;
            let stuck = self.stuck.iter().find(|s| s.name == self.dbs[i].cfg.name);
            if let Some(s) = stuck {
                // One blocked thread per database at most: a hung mount must
                // not collect a thread every interval.
                let msg = format!(
                    "{}: the run started at {} was abandoned at its capture_timeout and is still blocked reading the database; no new run starts until it returns",
                    self.dbs[i].cfg.path.display(),
                    crate::output::time(&s.started)
                );
                let out = RunOutcome {
                    failure: Some(("backup", msg)),
                    since_check: self.dbs[i].since_check,
                    ..RunOutcome::default()
                };
                self.record(i, scheduled, Utc::now(), out, true);
                continue;
            }
            if self.runs.len() < self.lanes {
                self.start(i, scheduled);
            }
        }
    }

    /// Starts the run of database `i` scheduled at `scheduled` on its thread.
    fn start(&mut self, i: usize, scheduled: DateTime<Utc>) {
        let id = self.next_id;
        self.next_id += 1;
        let started = Utc::now();
        let d = &mut self.dbs[i];
        let source = d.source.take().unwrap_or_else(|| Source::new(&d.cfg.path));
        let abandon = Arc::new(Abandon::new());
        let phase = Arc::new(Phase::default());
        let timeout = d.cfg.capture_timeout;
        let job = Job {
            id,
            generation: self.generation,
            cfg: d.cfg.clone(),
            store: Arc::clone(&self.store),
            lock_wait: self.cfg.lock_wait,
            check_dir: self.cfg.check_dir.clone(),
            stop: Arc::clone(&self.signals.stop),
            abandon: Arc::clone(&abandon),
            phase: Arc::clone(&phase),
            since_check: d.since_check,
            scheduled,
        };
        match run::spawn(job, source, self.done_tx.clone(), self.signals.waker()) {
            Ok(()) => {
                self.runs.push(Running {
                    id,
                    name: d.cfg.name.clone(),
                    path: d.cfg.path.clone(),
                    scheduled,
                    started,
                    timeout,
                    deadline: after(Instant::now(), timeout),
                    deadline_at: chrono::TimeDelta::from_std(timeout)
                        .ok()
                        .and_then(|t| started.checked_add_signed(t))
                        .unwrap_or(DateTime::<Utc>::MAX_UTC),
                    abandon,
                    phase,
                    committed: false,
                });
                self.write_status();
            }
            Err(e) => {
                d.source = Some(Source::new(&d.cfg.path));
                let out = RunOutcome {
                    failure: Some(("backup", format!("cannot start a thread for the run: {e}"))),
                    since_check: d.since_check,
                    ..RunOutcome::default()
                };
                self.record(i, scheduled, started, out, true);
            }
        }
    }

    /// A run's thread returned.
    fn finished(&mut self, f: Finished) {
        if let Some(k) = self.stuck.iter().position(|s| s.id == f.id) {
            let s = self.stuck.remove(k);
            info!(
                event = "stuck",
                db = %s.name,
                "{}: the run abandoned at its deadline returned at last (it published nothing); the next run starts as scheduled",
                s.name
            );
            self.write_status();
            return;
        }
        let Some(k) = self.runs.iter().position(|r| r.id == f.id) else {
            return;
        };
        let r = self.runs.remove(k);
        // Its database was removed by a reload meanwhile.
        let Some(i) = self.dbs.iter().position(|d| d.cfg.name == r.name) else {
            self.write_status();
            return;
        };
        let d = &mut self.dbs[i];
        let mut source = f.source;
        if source.path() != d.cfg.path {
            source = Source::new(&d.cfg.path);
        } else if f.generation != self.generation {
            // The store changed: what the connection saw was snapshotted elsewhere.
            source.reset();
        }
        d.source = Some(source);
        self.record(i, r.scheduled, r.started, f.out, true);
    }

    /// Abandons the runs past their deadline.
    fn enforce_deadlines(&mut self) {
        let now = Instant::now();
        let late: Vec<u64> = self
            .runs
            .iter()
            .filter(|r| !r.committed && r.deadline <= now)
            .map(|r| r.id)
            .collect();
        for id in late {
            self.abandon_run(id, Abandoned::Deadline);
        }
    }

    /// Abandons run `id` (reported as a failed run) unless it is committing its
    /// snapshot, which is then waited for.
    fn abandon_run(&mut self, id: u64, why: Abandoned) {
        let Some(k) = self.runs.iter().position(|r| r.id == id) else {
            return;
        };
        if !self.runs[k].abandon.abandon() {
            let r = &mut self.runs[k];
            if !r.committed {
                r.committed = true;
                warn!(
                    event = "late",
                    db = %r.name,
                    "{}: the run reached its deadline while publishing its snapshot: waiting for it",
                    r.name
                );
            }
            return;
        }
        let r = self.runs.remove(k);
        self.stuck.push(Stuck {
            id: r.id,
            name: r.name.clone(),
            started: r.started,
        });
        let msg = match why {
            Abandoned::Deadline => format!(
                "{}: the run did not finish within its capture_timeout of {} (it was {}): abandoned, no snapshot was published",
                r.path.display(),
                crate::timearg::format_duration(r.timeout),
                r.phase.describe()
            ),
            Abandoned::Stop => format!(
                "{}: stopping: the run was still {} after stop_timeout ({}): abandoned, no snapshot was published",
                r.path.display(),
                r.phase.describe(),
                crate::timearg::format_duration(self.cfg.stop_timeout)
            ),
        };
        if let Some(i) = self.dbs.iter().position(|d| d.cfg.name == r.name) {
            let d = &mut self.dbs[i];
            d.source = Some(Source::new(&d.cfg.path));
            let out = RunOutcome {
                failure: Some(("backup", msg)),
                since_check: d.since_check,
                ..RunOutcome::default()
            };
            self.record(i, r.scheduled, r.started, out, why == Abandoned::Deadline);
        } else {
            error!(event = "failure", db = %r.name, what = "backup", "{msg}");
        }
    }

    /// Records what the run of database `i` scheduled at `scheduled` did,
    /// schedules its next run and writes the status. `hook`: run `on_failure`
    /// if it failed.
    fn record(
        &mut self,
        i: usize,
        scheduled: DateTime<Utc>,
        started: DateTime<Utc>,
        out: RunOutcome,
        hook: bool,
    ) {
        let stop_during = self.signals.stopping();
        if out.snapshot {
            self.prune_pending = true;
        }
        if out.removed > 0 {
            self.removed_since_look = true;
        }
        let d = &mut self.dbs[i];
        if out.interrupted {
            info!(event = "stop", db = %d.cfg.name, "stop requested while waiting for the store: no snapshot of {} taken", d.cfg.name);
        } else {
            d.since_check = out.since_check;
            if let Some(s) = out.skip {
                d.st.skips += 1;
                d.st.last_skip = Some(s);
            }
            if let Some(s) = out.last_snapshot {
                d.st.snapshots += 1;
                d.st.last_snapshot = Some(s);
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
            d.st.last_attempt = Some(started);
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
                        db = %d.cfg.name,
                        what = *what,
                        consecutive_failures = d.st.consecutive_failures,
                        "{} failed ({what}): {message}",
                        d.cfg.name
                    );
                    if let Some(cmd) = d.cfg.on_failure.clone().filter(|_| hook) {
                        let env = vec![
                            ("PAGESNAP_DB_NAME", d.cfg.name.clone()),
                            ("PAGESNAP_DB_PATH", d.cfg.path.display().to_string()),
                            ("PAGESNAP_ERROR", message.clone()),
                            ("PAGESNAP_EVENT", what.to_string()),
                            ("PAGESNAP_FAILURES", d.st.consecutive_failures.to_string()),
                            ("PAGESNAP_STORE", self.store_dir.display().to_string()),
                        ];
                        if let Some(h) = hook::spawn(&cmd, self.cfg.on_failure_timeout, env) {
                            self.hooks.push(h);
                        }
                    }
                }
                None if out.snapshot => {
                    d.st.last_result = Some("snapshot".into());
                    d.st.consecutive_failures = 0;
                }
                None => {
                    d.st.last_result = Some("skipped".into());
                    d.st.consecutive_failures = 0;
                }
            }
            if stop_during && out.snapshot {
                info!(event = "stop", db = %d.cfg.name, "stop requested during the run of {}: its snapshot was finished first", d.cfg.name);
            }
        }
        let now = Utc::now();
        let next = schedule::next_run(now.max(scheduled), d.cfg.every, d.offset);
        let missed = schedule::missed(scheduled, next, d.cfg.every);
        if missed > 0 {
            warn!(
                event = "late",
                db = %d.cfg.name,
                missed,
                "the run of {} scheduled at {} ended at {}: {missed} scheduled run(s) skipped",
                d.cfg.name,
                scheduled.format("%H:%M:%S%.3f"),
                now.format("%H:%M:%S%.3f")
            );
        }
        d.next_run = next;
        d.st.next_run = Some(next);
        self.write_status();
    }

    /// Waits for the runs under way to end, until `until`.
    fn wait_runs(&mut self, until: Instant) {
        while !self.runs.is_empty() {
            let left = until.saturating_duration_since(Instant::now());
            match self.done_rx.recv_timeout(left) {
                Ok(f) => self.finished(f),
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn sync_status(&mut self) {
        self.status.updated = Some(Utc::now());
        let (runs, stuck) = (&self.runs, &self.stuck);
        self.status.databases = self
            .dbs
            .iter()
            .map(|d| {
                let mut st = d.st.clone();
                let run = runs.iter().find(|r| r.name == d.cfg.name);
                st.running_since = run.map(|r| r.started);
                st.deadline = run.map(|r| r.deadline_at);
                st.stuck_since = stuck
                    .iter()
                    .find(|s| s.name == d.cfg.name)
                    .map(|s| s.started);
                st
            })
            .collect();
        self.status.in_progress = runs.iter().min_by_key(|r| r.started).map(|r| InProgress {
            name: r.name.clone(),
            since: Some(r.started),
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
        self.wait_runs(after(Instant::now(), grace));
        let ids: Vec<u64> = self.runs.iter().map(|r| r.id).collect();
        for id in ids {
            self.abandon_run(id, Abandoned::Stop);
        }
        self.wait_runs(after(Instant::now(), grace));
        for r in &self.runs {
            warn!(
                event = "stop",
                db = %r.name,
                "{}: still publishing its snapshot after twice stop_timeout: exiting anyway; the snapshot may or may not be published, and its store lock stays behind (`pagesnap unlock` removes it)",
                r.name
            );
        }
        // Their threads end with the process.
        self.runs.clear();
        self.stuck.clear();
        self.status.state = "stopped".into();
        self.write_status();
        // Hooks end by themselves (each has its timeout).
        for h in std::mem::take(&mut self.hooks) {
            let _ = h.join();
        }
        info!(event = "stop", "stopped");
    }
}

/// `p` made absolute (for the status file, read from anywhere).
fn abs(p: &Path) -> String {
    std::path::absolute(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

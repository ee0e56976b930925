//! `pagesnap watch`: a daemon that snapshots databases on a schedule.
//!
//! One thread runs everything, in order: at each database's scheduled time (see
//! [`schedule`]) it checks whether the database changed ([`source`]), takes a
//! snapshot through its open connection if it did, applies the retention policy,
//! checks the captured image when due, and after the snapshots of a round runs
//! prune when its schedule says. One thread means two prunes (or a prune and a
//! backup of this watcher) never overlap; the store's locks keep other processes
//! out. Every run ends by rewriting the status file ([`status`]).
//!
//! SIGINT/SIGTERM: the snapshot in progress is finished (a snapshot is published
//! by its manifest, written last, so none is ever partial), the status file says
//! `stopped`, locks are released, exit 0. A second signal exits at once (status
//! 1), abandoning the snapshot in progress unpublished. SIGHUP re-reads the config.

pub mod config;
mod hook;
mod schedule;
mod source;
pub mod status;

use self::config::{DbConfig, PruneSchedule, WatchConfig};
use self::source::{Change, Source};
use self::status::{
    CheckRecord, DbStatus, ErrorRecord, InProgress, PruneRecord, RetentionRecord, SkipRecord,
    SnapshotRecord, Status, StatusLock,
};
use super::{forget, open_store};
use crate::cli::{Global, IntegrityCheck, LogFormat, WatchArgs};
use crate::message;
use anyhow::{anyhow, Result};
use chrono::{DateTime, Utc};
use pagesnap_core::lock::LockGuard;
use pagesnap_core::{BackupOptions, PruneOptions, Store};
use std::io::{IsTerminal, Read};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
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
                humantime::format_duration(d.cfg.every)
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

/// SIGINT/SIGTERM set `stop`, SIGHUP sets `reload`; every signal also writes to
/// a socket pair so that a sleeping watcher wakes at once.
struct Signals {
    stop: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
    wake: UnixStream,
}

impl Signals {
    fn install() -> Result<Signals> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let stop = Arc::new(AtomicBool::new(false));
        let reload = Arc::new(AtomicBool::new(false));
        for sig in [SIGTERM, SIGINT] {
            // A second signal while stopping exits at once (status 1).
            signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(&stop))?;
            signal_hook::flag::register(sig, Arc::clone(&stop))?;
        }
        signal_hook::flag::register(SIGHUP, Arc::clone(&reload))?;
        let (wake, waker) = UnixStream::pair()?;
        for sig in [SIGTERM, SIGINT, SIGHUP] {
            signal_hook::low_level::pipe::register(sig, waker.try_clone()?)?;
        }
        Ok(Signals { stop, reload, wake })
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Sleeps until `until`, a signal, or a minute (to follow changes of the
    /// wall clock), whichever comes first.
    fn sleep_until(&self, until: Option<DateTime<Utc>>) {
        if self.stopping() || self.reload.load(Ordering::SeqCst) {
            return;
        }
        let minute = Duration::from_secs(60);
        let wait = until
            .map(|t| (t - Utc::now()).to_std().unwrap_or(Duration::ZERO))
            .unwrap_or(minute)
            .min(minute);
        if wait < Duration::from_millis(1) {
            return;
        }
        if self.wake.set_read_timeout(Some(wait)).is_ok() {
            let mut buf = [0u8; 64];
            let _ = (&self.wake).read(&mut buf);
        } else {
            std::thread::sleep(wait);
        }
    }
}

/// One watched database: its config, its source and its status.
struct Watched {
    cfg: DbConfig,
    source: Source,
    offset: Duration,
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
            source: Source::new(&cfg.path),
            cfg,
            offset,
            next_run,
            since_check: 0,
            st,
        }
    }
}

/// What one run did.
#[derive(Default)]
struct RunOutcome {
    snapshot: bool,
    removed: usize,
    /// What failed (`backup`, `retention`, `check`) and why.
    failure: Option<(&'static str, String)>,
    interrupted: bool,
}

struct Watcher {
    store: Store,
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
        let mut w = Watcher {
            store,
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
        };
        w.refresh_prune_status();
        w.sync_status();
        w
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
            let mut due: Vec<usize> = (0..self.dbs.len())
                .filter(|&i| self.dbs[i].next_run <= now)
                .collect();
            if due.is_empty() {
                let next = self.dbs.iter().map(|d| d.next_run).min();
                self.signals.sleep_until(next);
                continue;
            }
            due.sort_by_key(|&i| (self.dbs[i].next_run, i));
            let mut snapshots = 0;
            for i in due {
                if self.signals.stopping() {
                    break;
                }
                let scheduled = self.dbs[i].next_run;
                let out = self.run_one(i, scheduled);
                if out.snapshot {
                    snapshots += 1;
                }
                if out.removed > 0 {
                    self.removed_since_look = true;
                }
                let d = &mut self.dbs[i];
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
            if snapshots > 0 && !self.signals.stopping() {
                self.maybe_prune();
                self.write_status();
            }
        }
    }

    /// One scheduled run of database `i`: check, snapshot, retention, check image.
    fn run_one(&mut self, i: usize, scheduled: DateTime<Utc>) -> RunOutcome {
        let started = Utc::now();
        self.status.in_progress = Some(InProgress {
            name: self.dbs[i].cfg.name.clone(),
            since: Some(started),
        });
        self.write_status();
        let out = self.attempt(i, scheduled);
        self.status.in_progress = None;
        let stop_during = self.signals.stopping();
        let d = &mut self.dbs[i];
        if out.interrupted {
            info!(event = "stop", db = %d.cfg.name, "stop requested while waiting for the store: no snapshot of {} taken", d.cfg.name);
            return out;
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
                if let Some(cmd) = d.cfg.on_failure.clone() {
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
        out
    }

    fn attempt(&mut self, i: usize, scheduled: DateTime<Utc>) -> RunOutcome {
        let mut out = RunOutcome::default();
        let lock_wait = self.cfg.lock_wait;
        let d = &mut self.dbs[i];
        let name = d.cfg.name.clone();
        let change = match d.source.check(d.cfg.busy_timeout) {
            Ok(c) => c,
            Err(e) => {
                if !source::is_busy(&e) {
                    d.source.reset();
                }
                out.failure = Some(("backup", message(&e)));
                return out;
            }
        };
        let reason = match change {
            Change::Unchanged => {
                d.st.skips += 1;
                d.st.last_skip = Some(SkipRecord {
                    time: Some(Utc::now()),
                    reason: "unchanged since the last snapshot".into(),
                });
                info!(
                    event = "skip",
                    db = %name,
                    scheduled = %scheduled.to_rfc3339(),
                    "{name}: unchanged since the last snapshot, skipped"
                );
                return out;
            }
            Change::Changed(why) => why,
        };
        // A shared lock for the backup and the retention after it; waiting for
        // a prune of another process ends early when a stop is requested.
        let lock = match lock_store(&self.store, lock_wait, &self.signals.stop) {
            Ok(l) => l,
            Err(_) if self.signals.stopping() => {
                out.interrupted = true;
                return out;
            }
            Err(e) => {
                out.failure = Some(("backup", e.to_string()));
                return out;
            }
        };
        let opts = BackupOptions {
            name: Some(name.clone()),
            tags: d.cfg.tags.clone(),
            time: None,
            busy_timeout: d.cfg.busy_timeout,
            lock_wait,
        };
        let report = match d.source.snapshot(&self.store, &opts) {
            Ok(r) => r,
            Err(e) => {
                if !source::is_busy(&e) {
                    d.source.reset();
                }
                out.failure = Some(("backup", message(&e)));
                return out;
            }
        };
        out.snapshot = true;
        for w in &report.warnings {
            warn!(event = "snapshot", db = %name, "{name}: {w}");
        }
        d.st.snapshots += 1;
        d.st.last_snapshot = Some(SnapshotRecord {
            id: report.snapshot.to_hex(),
            short_id: report.snapshot.short(),
            time: Some(report.time),
            pages: report.page_count,
            image_size: report.image_len,
            bytes_added: report.bytes_added,
            duration_secs: report.duration.as_secs_f64(),
        });
        info!(
            event = "snapshot",
            db = %name,
            id = %report.snapshot.short(),
            scheduled = %scheduled.to_rfc3339(),
            reason,
            pages = report.page_count,
            bytes_added = report.bytes_added,
            duration_secs = report.duration.as_secs_f64(),
            "{name}: snapshot {} ({reason}): {} pages, {} added in {:.2}s",
            report.snapshot.short(),
            report.page_count,
            crate::output::bytes(report.bytes_added),
            report.duration.as_secs_f64()
        );

        // Retention: the config's policy, else the store's saved one (read each
        // time, so that `pagesnap policy set` applies without a reload).
        let policy = match &d.cfg.policy {
            Some(p) => Ok(Some((p.clone(), "config"))),
            None => self
                .store
                .saved_policy()
                .map(|p| p.filter(|p| !p.is_empty()).map(|p| (p, "store"))),
        };
        match policy {
            Ok(Some((p, from))) => {
                d.st.retention = Some(format!("{p} ({from})"));
                match forget::apply_policy(&self.store, &p, Some(&name), false, Some(&lock)) {
                    Ok(f) => {
                        out.removed = f.removed();
                        let kept = f.decisions.len() - f.removed();
                        d.st.last_retention = Some(RetentionRecord {
                            time: Some(Utc::now()),
                            kept: kept as u64,
                            removed: out.removed as u64,
                        });
                        info!(
                            event = "retention",
                            db = %name,
                            kept,
                            removed = out.removed,
                            "{name}: retention {p}: {kept} kept, {} removed",
                            out.removed
                        );
                    }
                    Err(e) => out.failure = Some(("retention", message(&e))),
                }
            }
            Ok(None) => d.st.retention = None,
            Err(e) => {
                out.failure = Some((
                    "retention",
                    format!("cannot read the store's retention policy: {e}"),
                ))
            }
        }
        drop(lock);

        // The integrity check of the captured image (skipped when stopping: it
        // is then due on the next snapshot).
        if d.cfg.integrity_check != IntegrityCheck::Off && !self.signals.stopping() {
            d.since_check += 1;
            if d.since_check >= d.cfg.integrity_check_every {
                d.since_check = 0;
                let mode = match d.cfg.integrity_check {
                    IntegrityCheck::Full => "full",
                    _ => "quick",
                };
                let started = Instant::now();
                let r = source::check_image(
                    &self.store,
                    &report.snapshot,
                    d.cfg.integrity_check,
                    self.cfg.check_dir.as_deref(),
                );
                let (ok, detail) = match r {
                    Ok(None) => (true, String::new()),
                    Ok(Some(damage)) => (
                        false,
                        format!(
                            "snapshot {} fails the {mode} integrity check: {damage} (the database itself was damaged when it was captured)",
                            report.snapshot.short()
                        ),
                    ),
                    Err(e) => (
                        false,
                        format!(
                            "could not check snapshot {}: {}",
                            report.snapshot.short(),
                            message(&e)
                        ),
                    ),
                };
                d.st.last_check = Some(CheckRecord {
                    time: Some(Utc::now()),
                    snapshot: report.snapshot.short(),
                    mode: mode.into(),
                    ok,
                    detail: detail.clone(),
                });
                if ok {
                    info!(
                        event = "check",
                        db = %name,
                        id = %report.snapshot.short(),
                        mode,
                        duration_secs = started.elapsed().as_secs_f64(),
                        "{name}: snapshot {} passes the {mode} integrity check",
                        report.snapshot.short()
                    );
                } else if out.failure.is_none() {
                    out.failure = Some(("check", detail));
                }
            }
        }
        out
    }

    /// Runs prune when its schedule (or the unused share) says so.
    fn maybe_prune(&mut self) {
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
                    Err(e) => warn!(event = "prune", "could not measure unused space: {e}"),
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
            }
            // Another process uses the store (a backup from cron, a restore):
            // not a failure; the prune is retried after the next snapshot.
            Err(pagesnap_core::Error::Locked { holder, .. }) if !holder.starts_with("stale") => {
                info!(
                    event = "prune",
                    "prune postponed: the store is in use by {holder}"
                );
            }
            Err(e) => {
                let msg = e.to_string();
                error!(event = "failure", what = "prune", "prune failed: {msg}");
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

    fn refresh_prune_status(&mut self) {
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

    /// SIGHUP: re-reads the config file. A config with errors is logged and the
    /// running one kept. Databases that keep their name and path keep their
    /// connection and their "last seen" state.
    fn reload(&mut self) {
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
            Ok(msg) => info!(event = "reload", "reloaded {}: {msg}", file.display()),
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

    fn try_reload(&mut self, file: &Path) -> Result<String> {
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
            self.store = s;
            self.store_dir = store_dir;
            self.status.store = abs(&self.store_dir);
            // A new store: the watcher's connections know nothing of its snapshots.
            for d in &mut self.dbs {
                d.source.reset();
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
                        fresh.source = std::mem::replace(&mut o.source, Source::new(&c.path));
                        fresh.since_check = o.since_check;
                    }
                    // Unchanged timing keeps the run already scheduled.
                    if o.cfg.every == c.every && o.cfg.jitter == c.jitter {
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

    fn sync_status(&mut self) {
        self.status.updated = Some(Utc::now());
        self.status.databases = self.dbs.iter().map(|d| d.st.clone()).collect();
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
        self.status.state = "stopped".into();
        self.status.in_progress = None;
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

/// A shared store lock, waiting up to `wait` for another process's prune (an
/// exclusive lock) to end, and giving up early when `stop` is set.
fn lock_store(store: &Store, wait: Duration, stop: &AtomicBool) -> Result<LockGuard> {
    let started = Instant::now();
    loop {
        match store.lock(false, "watch", Duration::ZERO) {
            Ok(l) => return Ok(l),
            Err(pagesnap_core::Error::Locked { holder, .. })
                if !holder.starts_with("stale")
                    && !holder.starts_with("an unreadable")
                    && started.elapsed() < wait
                    && !stop.load(Ordering::SeqCst) =>
            {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

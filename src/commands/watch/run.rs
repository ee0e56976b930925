//! One run of one database on a thread of its own: the change check, the
//! snapshot, the retention and the integrity check.
//!
//! Everything that touches the database file runs here, so a read that never
//! returns (a hung network mount, a lock held for hours under a long
//! `busy_timeout`) blocks this thread only. The watcher abandons a run that has
//! not committed its snapshot by its deadline ([`Abandon`]): from then on the
//! run can publish nothing and holds no store lock, whenever its system call
//! returns. What the run did goes back to the watcher in a [`Finished`]; only
//! the watcher writes the status file.

use super::config::DbConfig;
use super::source::{self, Change, Source};
use super::status::{CheckRecord, RetentionRecord, SkipRecord, SnapshotRecord};
use crate::cli::IntegrityCheck;
use crate::commands::forget;
use crate::{hints, message};
use anyhow::Result;
use chrono::{DateTime, Utc};
use pagesnap_core::lock::LockGuard;
use pagesnap_core::{Abandon, BackupOptions, Store};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// What a run is doing, for the message when it is abandoned.
#[derive(Debug, Default)]
pub struct Phase(AtomicU8);

impl Phase {
    const CHECKING: u8 = 0;
    const LOCKING: u8 = 1;
    const CAPTURING: u8 = 2;
    const AFTER: u8 = 3;

    fn set(&self, p: u8) {
        self.0.store(p, Ordering::SeqCst);
    }

    pub fn describe(&self) -> &'static str {
        match self.0.load(Ordering::SeqCst) {
            Phase::CHECKING => "checking the database for changes",
            Phase::LOCKING => "waiting for the store's lock",
            Phase::CAPTURING => "capturing the database",
            _ => "applying retention or checking the snapshot",
        }
    }
}

/// Everything a run needs, moved to its thread.
pub struct Job {
    pub id: u64,
    /// The watcher's store generation when the run started (a reload may change
    /// the store; the returned source then forgets what it saw).
    pub generation: u64,
    pub cfg: DbConfig,
    pub store: Arc<Store>,
    pub lock_wait: Duration,
    pub check_dir: Option<PathBuf>,
    pub stop: Arc<AtomicBool>,
    pub abandon: Arc<Abandon>,
    pub phase: Arc<Phase>,
    pub since_check: u32,
    pub scheduled: DateTime<Utc>,
}

/// A run's result, sent back to the watcher.
pub struct Finished {
    pub id: u64,
    pub generation: u64,
    pub source: Source,
    pub out: RunOutcome,
}

/// What one run did; the watcher records it in the status.
#[derive(Default)]
pub struct RunOutcome {
    pub snapshot: bool,
    pub removed: usize,
    /// What failed (`backup`, `retention`, `check`) and why.
    pub failure: Option<(&'static str, String)>,
    /// A stop came while waiting for the store: nothing was done.
    pub interrupted: bool,
    pub skip: Option<SkipRecord>,
    pub last_snapshot: Option<SnapshotRecord>,
    /// The retention policy in force (`Some(None)`: none).
    pub retention: Option<Option<String>>,
    pub last_retention: Option<RetentionRecord>,
    pub last_check: Option<CheckRecord>,
    /// Snapshots since the last integrity check, after this run.
    pub since_check: u32,
}

/// Starts `job` on a new thread with `source`; its [`Finished`] goes to `done`
/// and a byte to `wake` (the watcher's sleep ends at once).
pub fn spawn(
    job: Job,
    mut source: Source,
    done: Sender<Finished>,
    wake: Option<UnixStream>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(format!("run-{}", job.cfg.name))
        .spawn(move || {
            let out = attempt(&job, &mut source);
            let _ = done.send(Finished {
                id: job.id,
                generation: job.generation,
                source,
                out,
            });
            // Only wakes the watcher: a full socket buffer means it is awake already.
            if let Some(w) = &wake {
                let _ = (&*w).write(&[1]);
            }
        })
        .map(drop)
}

/// Releases the run's store lock on every way out.
struct Release<'a>(&'a Abandon);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// One scheduled run of a database: check, snapshot, retention, check image.
fn attempt(job: &Job, source: &mut Source) -> RunOutcome {
    let mut out = RunOutcome {
        since_check: job.since_check,
        ..RunOutcome::default()
    };
    let d = &job.cfg;
    let name = d.name.clone();
    let store = &*job.store;
    let change = match source.check(d.busy_timeout) {
        Ok(c) => c,
        Err(e) => {
            if !source::is_busy(&e) {
                source.reset();
            }
            out.failure = Some(("backup", message(&e)));
            return out;
        }
    };
    // Abandoned while the check was stuck: the watcher has reported it.
    if job.abandon.is_abandoned() {
        return out;
    }
    let reason = match change {
        Change::Unchanged => {
            out.skip = Some(SkipRecord {
                time: Some(Utc::now()),
                reason: "unchanged since the last snapshot".into(),
            });
            info!(
                event = "skip",
                db = %name,
                scheduled = %crate::output::time_json(&job.scheduled),
                "{name}: unchanged since the last snapshot, skipped"
            );
            return out;
        }
        Change::Changed(why) => why,
    };
    // A shared lock for the backup and the retention after it; waiting for
    // a prune of another process ends early when a stop is requested.
    job.phase.set(Phase::LOCKING);
    let lock = match lock_store(store, job.lock_wait, &job.stop) {
        Ok(l) => l,
        Err(_) if job.stop.load(Ordering::SeqCst) => {
            out.interrupted = true;
            return out;
        }
        Err(e) => {
            out.failure = Some(("backup", hints::render_any(&e)));
            return out;
        }
    };
    // Held by `abandon`, which releases it if the run is abandoned.
    if !job.abandon.hold(lock) {
        return out;
    }
    let _release = Release(&job.abandon);
    job.phase.set(Phase::CAPTURING);
    let opts = BackupOptions {
        name: Some(name.clone()),
        tags: d.tags.clone(),
        time: None,
        busy_timeout: d.busy_timeout,
        lock_wait: job.lock_wait,
    };
    let report = match source.snapshot(store, &opts, &job.abandon) {
        Ok(r) => r,
        Err(e) => {
            if !source::is_busy(&e) {
                source.reset();
            }
            out.failure = Some(("backup", message(&e)));
            return out;
        }
    };
    job.phase.set(Phase::AFTER);
    out.snapshot = true;
    for w in &report.warnings {
        warn!(event = "snapshot", db = %name, "{name}: {w}");
    }
    out.last_snapshot = Some(SnapshotRecord {
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
        scheduled = %crate::output::time_json(&job.scheduled),
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
    let policy = match &d.policy {
        Some(p) => Ok(Some((p.clone(), "config"))),
        None => store
            .saved_policy()
            .map(|p| p.filter(|p| !p.is_empty()).map(|p| (p, "store"))),
    };
    match policy {
        Ok(Some((p, from))) => {
            out.retention = Some(Some(format!("{p} ({from})")));
            let applied = job
                .abandon
                .with_lock(|lock| forget::apply_policy(store, &p, Some(&name), false, lock));
            match applied {
                Ok(f) => {
                    out.removed = f.removed();
                    let kept = f.decisions.len() - f.removed();
                    out.last_retention = Some(RetentionRecord {
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
        Ok(None) => out.retention = Some(None),
        Err(e) => {
            out.failure = Some((
                "retention",
                format!(
                    "cannot read the store's retention policy: {}",
                    hints::render(&e)
                ),
            ))
        }
    }
    drop(_release);

    // The integrity check of the captured image (skipped when stopping: it
    // is then due on the next snapshot).
    if d.integrity_check != IntegrityCheck::Off && !job.stop.load(Ordering::SeqCst) {
        out.since_check += 1;
        if out.since_check >= d.integrity_check_every {
            out.since_check = 0;
            let mode = match d.integrity_check {
                IntegrityCheck::Full => "full",
                _ => "quick",
            };
            let started = Instant::now();
            let r = source::check_image(
                store,
                &report.snapshot,
                d.integrity_check,
                job.check_dir.as_deref(),
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
            out.last_check = Some(CheckRecord {
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

/// A shared store lock, waiting up to `wait` for another process's prune (an
/// exclusive lock) to end, and giving up early when `stop` is set.
fn lock_store(store: &Store, wait: Duration, stop: &AtomicBool) -> Result<LockGuard> {
    let started = Instant::now();
    loop {
        match store.lock(false, "watch", Duration::ZERO) {
            Ok(l) => return Ok(l),
            Err(pagesnap_core::Error::Locked { conflict, .. })
                if !conflict.is_stale()
                    && started.elapsed() < wait
                    && !stop.load(Ordering::SeqCst) =>
            {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

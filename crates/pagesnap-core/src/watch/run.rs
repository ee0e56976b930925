//! One run of one database: the change check, the snapshot, the retention and
//! the image check. Meant for a thread of its own (see [`super::Watcher`]): a
//! read that never returns (a hung network mount, a lock held for hours) blocks
//! that thread only, and the run can be abandoned through its [`Abandon`].

use super::error::WatchError;
use super::source::{check_image, Change, ImageCheck, Source};
use crate::lock::LockGuard;
use crate::retention::Policy;
use crate::{Abandon, BackupOptions, BackupReport, Store};
use chrono::{DateTime, Utc};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

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

/// The settings of one run.
#[derive(Clone, Debug)]
pub struct RunSpec<'a> {
    pub name: &'a str,
    pub tags: &'a [String],
    pub busy_timeout: Duration,
    /// How long to wait for another process's exclusive lock (a prune).
    pub lock_wait: Duration,
    /// The retention policy; `None`: the store's saved one, if any (read each
    /// run, so that a newly saved policy applies at once).
    pub policy: Option<&'a Policy>,
    pub image_check: ImageCheck,
    /// Check every n-th snapshot.
    pub image_check_every: u32,
    /// Where the image check restores its temporary copy (default: `$TMPDIR`).
    pub check_dir: Option<&'a Path>,
    /// Snapshots since the last image check, before this run.
    pub since_check: u32,
    /// The base cache's bound (`BackupOptions::base_cache`).
    pub base_cache: Option<u64>,
    /// `BackupOptions::paranoid`.
    pub paranoid: bool,
}

/// How a run is controlled from outside its thread.
#[derive(Clone, Copy)]
pub struct RunControl<'a> {
    pub abandon: &'a Abandon,
    pub phase: &'a Phase,
    /// A stop was requested: waiting for the store ends, the image check is skipped.
    pub stop: &'a AtomicBool,
}

/// Which step of a run failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The change check or the snapshot.
    Backup,
    Retention,
    /// The image check.
    Check,
}

impl Stage {
    pub fn as_str(&self) -> &'static str {
        match self {
            Stage::Backup => "backup",
            Stage::Retention => "retention",
            Stage::Check => "check",
        }
    }
}

/// Where the retention policy of a run came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicySource {
    /// The database's own settings.
    Config,
    /// The store's saved policy.
    Store,
}

impl PolicySource {
    pub fn as_str(&self) -> &'static str {
        match self {
            PolicySource::Config => "config",
            PolicySource::Store => "store",
        }
    }
}

/// The retention a run applied.
#[derive(Clone, Debug)]
pub struct RetentionApplied {
    pub policy: String,
    pub from: PolicySource,
    pub time: DateTime<Utc>,
    pub kept: usize,
    pub removed: usize,
}

/// The image check a run did.
#[derive(Clone, Debug)]
pub struct CheckDone {
    pub time: DateTime<Utc>,
    pub snapshot: String,
    pub mode: &'static str,
    pub ok: bool,
    /// Why it failed (empty when it passed).
    pub detail: String,
    pub duration: Duration,
}

/// What one run did.
#[derive(Debug, Default)]
pub struct RunReport {
    /// What the change check found (`None`: it failed).
    pub change: Option<Change>,
    pub snapshot: Option<BackupReport>,
    /// The policy in force, if one was read (`Some(None)`: none).
    pub policy: Option<Option<(String, PolicySource)>>,
    pub retention: Option<RetentionApplied>,
    pub check: Option<CheckDone>,
    /// The step that failed and why.
    pub failure: Option<(Stage, WatchError)>,
    /// A stop came while waiting for the store: nothing was done.
    pub interrupted: bool,
    /// Snapshots since the last image check, after this run.
    pub since_check: u32,
}

/// Releases the run's store lock on every way out.
struct Release<'a>(&'a Abandon);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// One run of the database `source`: check, snapshot, retention, image check.
/// A run that was abandoned returns what it had done (the abandoner reports it).
pub fn run_once(
    store: &Store,
    source: &mut Source,
    spec: &RunSpec<'_>,
    ctl: RunControl<'_>,
) -> RunReport {
    let mut out = RunReport {
        since_check: spec.since_check,
        ..RunReport::default()
    };
    let change = match source.check(spec.busy_timeout) {
        Ok(c) => c,
        Err(e) => {
            if !e.is_busy() {
                source.reset();
            }
            out.failure = Some((Stage::Backup, e));
            return out;
        }
    };
    out.change = Some(change.clone());
    // Abandoned while the check was stuck: the abandoner has reported it.
    if ctl.abandon.is_abandoned() || change == Change::Unchanged {
        return out;
    }
    // A shared lock for the backup and the retention after it; waiting for
    // a prune of another process ends early when a stop is requested.
    ctl.phase.set(Phase::LOCKING);
    let lock = match lock_store(store, spec.lock_wait, ctl.stop) {
        Ok(l) => l,
        Err(_) if ctl.stop.load(Ordering::SeqCst) => {
            out.interrupted = true;
            return out;
        }
        Err(e) => {
            out.failure = Some((Stage::Backup, e.into()));
            return out;
        }
    };
    // Held by `abandon`, which releases it if the run is abandoned.
    if !ctl.abandon.hold(lock) {
        return out;
    }
    let release = Release(ctl.abandon);
    ctl.phase.set(Phase::CAPTURING);
    let opts = BackupOptions {
        name: Some(spec.name.to_string()),
        tags: spec.tags.to_vec(),
        time: None,
        busy_timeout: spec.busy_timeout,
        lock_wait: spec.lock_wait,
        base_cache: spec.base_cache,
        paranoid: spec.paranoid,
        // Guided by the WAL where it proves what changed (capture/guide.rs).
        full_read: false,
    };
    let report = match source.snapshot(store, &opts, ctl.abandon) {
        Ok(r) => r,
        Err(e) => {
            if !e.is_busy() {
                source.reset();
            }
            out.failure = Some((Stage::Backup, e));
            return out;
        }
    };
    ctl.phase.set(Phase::AFTER);
    let id = report.snapshot;

    let policy = match spec.policy {
        Some(p) => Ok(Some((p.clone(), PolicySource::Config))),
        None => store.saved_policy().map(|p| {
            p.filter(|p| !p.is_empty())
                .map(|p| (p, PolicySource::Store))
        }),
    };
    match policy {
        Ok(Some((p, from))) => {
            out.policy = Some(Some((p.to_string(), from)));
            let applied = ctl
                .abandon
                .with_lock(|lock| apply_policy(store, &p, spec.name, lock));
            match applied {
                Ok((kept, removed)) => {
                    out.retention = Some(RetentionApplied {
                        policy: p.to_string(),
                        from,
                        time: Utc::now(),
                        kept,
                        removed,
                    })
                }
                Err(e) => out.failure = Some((Stage::Retention, e.into())),
            }
        }
        Ok(None) => out.policy = Some(None),
        Err(e) => out.failure = Some((Stage::Retention, WatchError::ReadPolicy(e))),
    }
    drop(release);
    out.snapshot = Some(report);

    // The image check (skipped when stopping: it is then due on the next snapshot).
    if spec.image_check != ImageCheck::Off && !ctl.stop.load(Ordering::SeqCst) {
        out.since_check += 1;
        if out.since_check >= spec.image_check_every.max(1) {
            out.since_check = 0;
            let mode = match spec.image_check {
                ImageCheck::Full => "full",
                _ => "quick",
            };
            let started = Instant::now();
            let (ok, detail) = match check_image(store, &id, spec.image_check, spec.check_dir) {
                Ok(None) => (true, String::new()),
                Ok(Some(damage)) => (
                    false,
                    format!(
                        "snapshot {} fails the {mode} integrity check: {damage} (the database itself was damaged when it was captured)",
                        id.short()
                    ),
                ),
                Err(e) => (
                    false,
                    format!("could not check snapshot {}: {e}", id.short()),
                ),
            };
            if !ok && out.failure.is_none() {
                out.failure = Some((Stage::Check, WatchError::ImageCheck(detail.clone())));
            }
            out.check = Some(CheckDone {
                time: Utc::now(),
                snapshot: id.short(),
                mode,
                ok,
                detail,
                duration: started.elapsed(),
            });
        }
    }
    out
}

/// Applies `p` to the snapshots of `name` under the run's lock: (kept, removed).
/// The policy always keeps the newest snapshot, so a database never loses all.
fn apply_policy(
    store: &Store,
    p: &Policy,
    name: &str,
    lock: Option<&LockGuard>,
) -> crate::Result<(usize, usize)> {
    let snaps: Vec<_> = store
        .snapshots()?
        .into_iter()
        .filter(|s| s.manifest.name == name)
        .collect();
    let decisions = crate::retention::apply(p, &snaps, Utc::now());
    let gone: Vec<_> = decisions.iter().filter(|d| !d.keep).map(|d| d.id).collect();
    match lock {
        Some(l) => store.forget_snapshots_locked(&gone, false, l)?,
        None => store.forget_snapshots(&gone, false)?,
    }
    Ok((decisions.len() - gone.len(), gone.len()))
}

/// A shared store lock, waiting up to `wait` for another process's prune (an
/// exclusive lock) to end, and giving up early when `stop` is set.
fn lock_store(store: &Store, wait: Duration, stop: &AtomicBool) -> crate::Result<LockGuard> {
    let started = Instant::now();
    loop {
        match store.lock(false, "watch", Duration::ZERO) {
            Ok(l) => return Ok(l),
            Err(crate::Error::Locked { conflict, .. })
                if !conflict.is_stale()
                    && started.elapsed() < wait
                    && !stop.load(Ordering::SeqCst) =>
            {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(e),
        }
    }
}

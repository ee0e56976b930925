//! One run of one database on a thread of its own: the change check, the
//! snapshot, the retention and the integrity check (the library's
//! [`run_once`]), logged and recorded for the status file.
//!
//! Everything that touches the database file runs here, so a read that never
//! returns (a hung network mount, a lock held for hours under a long
//! `busy_timeout`) blocks this thread only. The watcher abandons a run that has
//! not committed its snapshot by its deadline ([`Abandon`]): from then on the
//! run can publish nothing and holds no store lock, whenever its system call
//! returns. What the run did goes back to the watcher in a [`Finished`]; only
//! the watcher writes the status file.

use super::config::DbConfig;
use super::status::{CheckRecord, RetentionRecord, SkipRecord, SnapshotRecord};
use crate::cli::IntegrityCheck;
use crate::hints;
use chrono::{DateTime, Utc};
use pagesnap_core::watch::{
    run_once, Change, ImageCheck, Phase, RunControl, RunSpec, Source, WatchError,
};
use pagesnap_core::{Abandon, Store};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

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

/// The text of a run's error, with the command line's remedies.
pub fn render(e: &WatchError) -> String {
    match e {
        WatchError::Store(e) => hints::render(e),
        // The config key that raises it, inside the library's parenthesis.
        WatchError::Busy { .. } => {
            let msg = e.to_string();
            match msg.strip_suffix(')') {
                Some(head) => format!("{head}; raise busy_timeout)"),
                None => msg,
            }
        }
        WatchError::ReadPolicy(inner) => format!(
            "cannot read the store's retention policy: {}",
            hints::render(inner)
        ),
        _ => {
            let mut msg = e.to_string();
            let mut cause = std::error::Error::source(e);
            while let Some(c) = cause {
                let c_msg = hints::render_dyn(c);
                if !msg.contains(&c_msg) {
                    msg.push_str(": ");
                    msg.push_str(&c_msg);
                }
                cause = c.source();
            }
            msg
        }
    }
}

/// One scheduled run of a database (the library's [`run_once`]), logged and
/// turned into the status file's records.
fn attempt(job: &Job, source: &mut Source) -> RunOutcome {
    let d = &job.cfg;
    let name = d.name.clone();
    let store = &*job.store;
    let spec = RunSpec {
        name: &d.name,
        tags: &d.tags,
        busy_timeout: d.busy_timeout,
        lock_wait: job.lock_wait,
        policy: d.policy.as_ref(),
        image_check: image_check(d.integrity_check),
        image_check_every: d.integrity_check_every,
        check_dir: job.check_dir.as_deref(),
        since_check: job.since_check,
    };
    let ctl = RunControl {
        abandon: &job.abandon,
        phase: &job.phase,
        stop: &job.stop,
    };
    let r = run_once(store, source, &spec, ctl);
    let mut out = RunOutcome {
        since_check: r.since_check,
        interrupted: r.interrupted,
        failure: r
            .failure
            .as_ref()
            .map(|(stage, e)| (stage.as_str(), render(e))),
        ..RunOutcome::default()
    };
    if r.change == Some(Change::Unchanged) {
        out.skip = Some(SkipRecord {
            time: Some(Utc::now()),
            reason: "unchanged since the last snapshot".into(),
        });
        info!(
            event = "skip",
            db = %name,
            scheduled = %job.scheduled.to_rfc3339(),
            "{name}: unchanged since the last snapshot, skipped"
        );
        return out;
    }
    let Some(report) = &r.snapshot else {
        return out;
    };
    let reason = match &r.change {
        Some(Change::Changed(why)) => *why,
        _ => "",
    };
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
        scheduled = %job.scheduled.to_rfc3339(),
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
    out.retention = r.policy.as_ref().map(|p| {
        p.as_ref()
            .map(|(p, from)| format!("{p} ({})", from.as_str()))
    });
    if let Some(ret) = &r.retention {
        out.removed = ret.removed;
        out.last_retention = Some(RetentionRecord {
            time: Some(ret.time),
            kept: ret.kept as u64,
            removed: ret.removed as u64,
        });
        info!(
            event = "retention",
            db = %name,
            kept = ret.kept,
            removed = ret.removed,
            "{name}: retention {}: {} kept, {} removed",
            ret.policy,
            ret.kept,
            ret.removed
        );
    }
    if let Some(c) = &r.check {
        out.last_check = Some(CheckRecord {
            time: Some(c.time),
            snapshot: c.snapshot.clone(),
            mode: c.mode.into(),
            ok: c.ok,
            detail: c.detail.clone(),
        });
        if c.ok {
            info!(
                event = "check",
                db = %name,
                id = %c.snapshot,
                mode = c.mode,
                duration_secs = c.duration.as_secs_f64(),
                "{name}: snapshot {} passes the {} integrity check",
                c.snapshot,
                c.mode
            );
        }
    }
    out
}

/// The library's name for an integrity check mode.
pub fn image_check(c: IntegrityCheck) -> ImageCheck {
    match c {
        IntegrityCheck::Off => ImageCheck::Off,
        IntegrityCheck::Quick => ImageCheck::Quick,
        IntegrityCheck::Full => ImageCheck::Full,
    }
}

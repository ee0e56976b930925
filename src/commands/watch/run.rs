//! A run of one database, as `pagesnap watch` reports it: the library's
//! watcher did the run (change check, snapshot, retention, image check, on a
//! thread of its own, with a deadline); here its [`RunFinished`] becomes the
//! log lines and the status file's records.

use super::status::{CheckRecord, RetentionRecord, SkipRecord, SnapshotRecord};
use crate::cli::IntegrityCheck;
use crate::hints;
use pagesnap_core::watch::{ImageCheck, RunFinished, RunOutcome as LibOutcome, WatchError};
use tracing::{info, warn};

/// What one run did; the watcher records it in the status.
#[derive(Default)]
pub struct RunOutcome {
    pub snapshot: bool,
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

/// A run the library's watcher finished, logged as `pagesnap watch` logs it
/// and turned into the status file's records. An abandoned run's failure is
/// said by the caller (in the config's terms).
pub fn outcome(f: &RunFinished) -> RunOutcome {
    let name = &f.name;
    let mut out = RunOutcome::default();
    let snapshot = match &f.outcome {
        LibOutcome::Interrupted => {
            out.interrupted = true;
            return out;
        }
        LibOutcome::Unchanged => {
            out.skip = Some(SkipRecord {
                time: Some(f.ended),
                reason: "unchanged since the last snapshot".into(),
            });
            info!(
                event = "skip",
                db = %name,
                scheduled = %crate::output::time_json(&f.scheduled),
                "{name}: unchanged since the last snapshot, skipped"
            );
            return out;
        }
        LibOutcome::Abandoned { .. } => return out,
        LibOutcome::Snapshot(s) => Some(s),
        LibOutcome::Failed {
            stage,
            error,
            snapshot,
        } => {
            out.failure = Some((stage.as_str(), render(error)));
            snapshot.as_ref()
        }
    };
    let Some(s) = snapshot else {
        return out;
    };
    out.snapshot = true;
    for w in &f.warnings {
        warn!(event = "snapshot", db = %name, "{name}: {w}");
    }
    out.last_snapshot = Some(SnapshotRecord {
        id: s.id.to_hex(),
        short_id: s.id.short(),
        time: Some(s.time),
        pages: s.pages,
        image_size: s.image_len,
        bytes_added: s.bytes_added,
        duration_secs: s.duration.as_secs_f64(),
    });
    let reason = s.reason;
    info!(
        event = "snapshot",
        db = %name,
        id = %s.id.short(),
        scheduled = %crate::output::time_json(&f.scheduled),
        reason,
        pages = s.pages,
        bytes_added = s.bytes_added,
        duration_secs = s.duration.as_secs_f64(),
        "{name}: snapshot {} ({reason}): {} pages, {} added in {:.2}s",
        s.id.short(),
        s.pages,
        crate::output::bytes(s.bytes_added),
        s.duration.as_secs_f64()
    );
    out.retention = f.policy.clone();
    if let Some(ret) = &f.retention {
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
    if let Some(c) = &f.check {
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

/// The command line's and config's integrity check (a clap/serde enum with
/// `--help` text) is the library's image check.
impl From<IntegrityCheck> for ImageCheck {
    fn from(c: IntegrityCheck) -> ImageCheck {
        match c {
            IntegrityCheck::Off => ImageCheck::Off,
            IntegrityCheck::Quick => ImageCheck::Quick,
            IntegrityCheck::Full => ImageCheck::Full,
        }
    }
}

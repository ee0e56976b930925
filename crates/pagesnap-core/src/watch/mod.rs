//! Watching databases: change detection, runs on their own threads with a
//! deadline, retention, prune on a schedule, status and events ([`Watcher`]).
//!
//! Uses `backup/` (capture, [`crate::Abandon`]), `maintenance/` (retention,
//! prune) and `store/`; nothing below uses it. `pagesnap watch` is built on it
//! and adds its config file, signals, status file, hooks and logs.

mod error;
mod prune;
pub mod run;
pub mod schedule;
mod source;
mod watcher;

pub use error::WatchError;
pub use prune::{PruneOutcome, PruneSchedule, PruneSettings};
pub use run::{
    run_once, CheckDone, Phase, PolicySource, RetentionApplied, RunControl, RunReport, RunSpec,
    Stage,
};
pub use source::{check_image, Change, ImageCheck, Source};
pub use watcher::{
    AbandonReason, DatabaseOptions, DatabaseStatus, LastResult, Observer, PruneStatus, RunFinished,
    RunOutcome, SnapshotInfo, StopReport, WatchEvent, Watcher, WatcherHandle, WatcherOptions,
};

use std::time::Duration;

/// A duration as people write it, minutes as `min` (never the ambiguous `m`): `1h 30min`, `5s`, `250ms`.
pub fn fmt_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    let ms = d.subsec_millis();
    if secs == 0 && ms == 0 {
        return if d.is_zero() {
            "0s".into()
        } else {
            format!("{}us", d.as_micros())
        };
    }
    let mut parts = Vec::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("min", 60), ("s", 1)] {
        if secs >= size {
            parts.push(format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    if ms > 0 {
        parts.push(format!("{ms}ms"));
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_read_as_written() {
        use std::time::Duration;
        assert_eq!(super::fmt_duration(Duration::from_secs(5400)), "1h 30min");
        assert_eq!(super::fmt_duration(Duration::from_secs(5)), "5s");
        assert_eq!(super::fmt_duration(Duration::from_millis(1250)), "1s 250ms");
        assert_eq!(super::fmt_duration(Duration::ZERO), "0s");
        assert_eq!(super::fmt_duration(Duration::from_secs(86_400)), "1d");
    }
}

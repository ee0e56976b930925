//! A watcher's prune: when its schedule says so, or when a forget left a large
//! enough share of the store unused. The caller runs it while none of its own
//! runs is under way (the store's locks keep other processes out).

use super::error::WatchError;
use crate::{Error, LockConflict, PruneOptions, PruneReport, Store};
use chrono::{DateTime, Utc};
use std::fmt;
use std::time::Duration;

/// When prune runs (besides [`PruneSettings::when_unused`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PruneSchedule {
    Never,
    /// At most once per interval, after a successful snapshot.
    Every(Duration),
}

impl fmt::Display for PruneSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PruneSchedule::Never => f.write_str("never"),
            PruneSchedule::Every(d) => write!(f, "every {}", super::fmt_duration(*d)),
        }
    }
}

/// How a watcher prunes.
#[derive(Clone, Debug, PartialEq)]
pub struct PruneSettings {
    pub schedule: PruneSchedule,
    /// Prune's unused-space limit per pack (a fraction of 1).
    pub max_unused: f64,
    /// Also prune when a dry run says prune would free at least this share
    /// of the store (looked at after a run forgot snapshots).
    pub when_unused: Option<f64>,
}

impl Default for PruneSettings {
    fn default() -> PruneSettings {
        PruneSettings {
            schedule: PruneSchedule::Every(Duration::from_secs(86_400)),
            max_unused: 0.10,
            when_unused: None,
        }
    }
}

impl PruneSettings {
    /// When the next scheduled prune is due after one at `last`.
    pub fn next_due(&self, last: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
        match self.schedule {
            PruneSchedule::Never => None,
            PruneSchedule::Every(d) => {
                last.and_then(|t| chrono::TimeDelta::from_std(d).ok().map(|d| t + d))
            }
        }
    }

    /// Whether prune is due at `now`, and why (`None`: not due). `last`: the last
    /// prune; `removed_since_look`: a forget removed snapshots since this last
    /// measured the unused share (reset when it measures). A failed measurement
    /// is returned as the error beside "not due".
    pub fn due(
        &self,
        store: &Store,
        now: DateTime<Utc>,
        last: Option<DateTime<Utc>>,
        removed_since_look: &mut bool,
    ) -> (Option<String>, Option<WatchError>) {
        let by_time = match self.schedule {
            PruneSchedule::Never => false,
            PruneSchedule::Every(d) => {
                last.is_none_or(|l| (now - l).to_std().unwrap_or(Duration::ZERO) >= d)
            }
        };
        if by_time {
            return (Some("scheduled".into()), None);
        }
        let (true, Some(threshold)) = (*removed_since_look, self.when_unused) else {
            return (None, None);
        };
        *removed_since_look = false;
        let plan = store.prune(&PruneOptions {
            max_unused: self.max_unused,
            dry_run: true,
            assume_forgotten: Vec::new(),
        });
        match plan {
            Ok(r) => {
                let share = r.bytes_freed as f64 / r.bytes_before.max(1) as f64;
                if share >= threshold {
                    (
                        Some(format!(
                            "{:.1}% of the store is unused (threshold {:.1}%)",
                            share * 100.0,
                            threshold * 100.0
                        )),
                        None,
                    )
                } else {
                    (None, None)
                }
            }
            Err(e) => (None, Some(e.into())),
        }
    }

    /// Prunes now (`dry_run`: only says what it would free).
    pub fn prune(&self, store: &Store, dry_run: bool) -> PruneOutcome {
        match store.prune(&PruneOptions {
            max_unused: self.max_unused,
            dry_run,
            assume_forgotten: Vec::new(),
        }) {
            Ok(r) => PruneOutcome::Pruned(r),
            // Another process uses the store (a backup from cron, a restore):
            // not a failure; the prune is retried after the next snapshot.
            Err(Error::Locked {
                holder, conflict, ..
            }) if conflict != LockConflict::Stale => PruneOutcome::Postponed { holder },
            Err(e) => PruneOutcome::Failed(e.into()),
        }
    }
}

/// What a prune did.
#[derive(Debug)]
pub enum PruneOutcome {
    Pruned(PruneReport),
    /// The store was in use by `holder`; it is tried again later.
    Postponed {
        holder: String,
    },
    Failed(WatchError),
}

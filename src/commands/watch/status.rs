//! The status file of `pagesnap watch` (JSON, replaced atomically after every
//! run) and `pagesnap status`, which reads it.
//!
//! A watcher holds an advisory lock (`flock`) on `<status file>.lock` while it
//! runs: a second watcher with the same status file refuses to start, and
//! `pagesnap status` tells a running watcher from one that stopped or died.

use crate::cli::{Global, StatusArgs};
use crate::commands::{open_store, print_json};
use crate::output;
use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, Utc};
use pagesnap_core::Store;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Format version of the status file.
pub const VERSION: u32 = 1;

/// Exit status of `pagesnap status` when something needs attention: the watcher
/// is not running, a database's last attempt failed, or a database is overdue
/// (its run is late by more than [`overdue_margin`], or stuck).
pub const EXIT_ATTENTION: u8 = 4;

/// The whole status file.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Status {
    pub version: u32,
    /// `running` while the watcher runs, `stopped` after a clean stop.
    pub state: String,
    pub pid: u32,
    pub host: String,
    pub started: Option<DateTime<Utc>>,
    pub updated: Option<DateTime<Utc>>,
    pub store: String,
    pub config: Option<String>,
    /// The database being snapshotted right now, if any (the one that started
    /// first when runs of several databases overlap).
    pub in_progress: Option<InProgress>,
    pub prune: PruneStatus,
    pub databases: Vec<DbStatus>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct InProgress {
    pub name: String,
    pub since: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PruneStatus {
    /// `never`, or `every 1day` …
    pub schedule: String,
    pub when_unused_percent: Option<f64>,
    pub last: Option<PruneRecord>,
    pub last_error: Option<ErrorRecord>,
    /// When the schedule next allows a prune (it runs after the first snapshot
    /// from then on); none: after the next snapshot.
    pub next_due: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PruneRecord {
    pub time: Option<DateTime<Utc>>,
    pub bytes_freed: u64,
    pub packs_deleted: u64,
    pub packs_rewritten: u64,
    pub duration_secs: f64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ErrorRecord {
    pub time: Option<DateTime<Utc>>,
    /// What failed: `backup`, `retention`, `check` or `prune`.
    pub event: String,
    pub message: String,
}

/// One database.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DbStatus {
    pub name: String,
    pub path: String,
    pub every_secs: f64,
    pub jitter_offset_secs: f64,
    /// A run is abandoned when it has not committed its snapshot after this.
    pub capture_timeout_secs: f64,
    /// The next scheduled run (while a run is under way: the one under way).
    pub next_run: Option<DateTime<Utc>>,
    /// A run of this database is under way since then.
    pub running_since: Option<DateTime<Utc>>,
    /// When the run under way is abandoned unless it committed its snapshot.
    pub deadline: Option<DateTime<Utc>>,
    /// A run was abandoned at its deadline but its thread has not returned
    /// (blocked in a system call, e.g. on a hung mount); it had started then.
    /// No new run of the database starts until it returns.
    pub stuck_since: Option<DateTime<Utc>>,
    /// The retention policy applied after each snapshot, and where it comes from.
    pub retention: Option<String>,
    pub integrity_check: String,
    pub last_attempt: Option<DateTime<Utc>>,
    /// `snapshot`, `skipped` or `failed`.
    pub last_result: Option<String>,
    pub last_snapshot: Option<SnapshotRecord>,
    pub last_skip: Option<SkipRecord>,
    pub last_error: Option<ErrorRecord>,
    pub last_retention: Option<RetentionRecord>,
    pub last_check: Option<CheckRecord>,
    pub consecutive_failures: u64,
    /// Counts since the status file was created.
    pub snapshots: u64,
    pub skips: u64,
    pub failures: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SnapshotRecord {
    pub id: String,
    pub short_id: String,
    pub time: Option<DateTime<Utc>>,
    pub pages: u64,
    pub image_size: u64,
    pub bytes_added: u64,
    pub duration_secs: f64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SkipRecord {
    pub time: Option<DateTime<Utc>>,
    pub reason: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RetentionRecord {
    pub time: Option<DateTime<Utc>>,
    pub kept: u64,
    pub removed: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CheckRecord {
    pub time: Option<DateTime<Utc>>,
    pub snapshot: String,
    /// `quick` or `full`.
    pub mode: String,
    pub ok: bool,
    pub detail: String,
}

impl Status {
    /// The status file at `path`, if there is one (`Ok(None)` when missing).
    pub fn load(path: &Path) -> Result<Option<Status>> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(anyhow!("{}: cannot read: {e}", path.display())),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| anyhow!("{}: not a pagesnap watch status file: {e}", path.display()))
    }

    /// Writes the status to `path`: a temporary file beside it, fsynced, renamed
    /// over it (readers see the old or the new file, never a torn one).
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self)?;
        write_atomic(path, &bytes)
            .with_context(|| format!("{}: cannot write the status file", path.display()))
    }
}

/// Replaces `path` with `bytes` atomically (temp + fsync + rename + fsync of the directory).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = parent(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "status".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // The rename is durable once the directory is; failing that is not fatal.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn parent(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// The lock file beside a status file.
fn lock_path(status: &Path) -> PathBuf {
    let mut s = status.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

/// The running watcher's hold on its status file; released when dropped (or
/// when the process dies, however it dies).
pub struct StatusLock {
    _file: File,
}

impl StatusLock {
    /// Creates the status file's directory if needed and locks the status file
    /// for this watcher; fails when another watcher holds it.
    pub fn acquire(status: &Path) -> Result<StatusLock> {
        let dir = parent(status);
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create the status directory", dir.display()))?;
        let path = lock_path(status);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("{}: cannot open the status lock file", path.display()))?;
        if !try_lock(&file, Lock::Exclusive)? {
            let who = Status::load(status)
                .ok()
                .flatten()
                .map(|s| format!(" (pid {} on {})", s.pid, s.host))
                .unwrap_or_default();
            bail!(
                "{}: another pagesnap watch{who} uses this status file; stop it first, or give this one its own status_file",
                status.display()
            );
        }
        Ok(StatusLock { _file: file })
    }
}

/// Whether a watcher holds the status file's lock now.
pub fn watcher_running(status: &Path) -> bool {
    match File::open(lock_path(status)) {
        Ok(f) => !try_lock(&f, Lock::Shared).unwrap_or(true),
        Err(_) => false,
    }
}

enum Lock {
    Exclusive,
    Shared,
}

/// `flock(2)` without waiting: true when taken, false when another process
/// holds it.
fn try_lock(f: &File, how: Lock) -> Result<bool> {
    use rustix::fs::FlockOperation;
    let op = match how {
        Lock::Exclusive => FlockOperation::NonBlockingLockExclusive,
        Lock::Shared => FlockOperation::NonBlockingLockShared,
    };
    match rustix::fs::flock(f, op) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(anyhow!("flock: {e}")),
    }
}

/// Where the status of a watcher of `store` goes when no `status_file` is given:
/// `$XDG_STATE_HOME/pagesnap/watch-<store id>.json`, else
/// `~/.local/state/pagesnap/watch-<store id>.json`.
pub fn default_path(store: &Store) -> Result<PathBuf> {
    let base = match std::env::var_os("XDG_STATE_HOME").filter(|x| !x.is_empty()) {
        Some(x) => PathBuf::from(x),
        None => std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|h| PathBuf::from(h).join(".local/state"))
            .ok_or_else(|| {
                anyhow!("no status file given and neither XDG_STATE_HOME nor HOME is set: pass --status-file")
            })?,
    };
    let id = store.config().store_id.to_hex();
    Ok(base
        .join("pagesnap")
        .join(format!("watch-{}.json", &id[..16.min(id.len())])))
}

/// `pagesnap status`.
pub fn run(g: &Global, a: &StatusArgs) -> Result<ExitCode> {
    let path = match (&a.status_file, &a.config) {
        (Some(p), _) => p.clone(),
        (None, Some(c)) => {
            let cfg = super::config::load(c)?;
            match cfg.status_file {
                Some(p) => p,
                None => default_path(&open_store(&Global {
                    store: Some(super::resolve_store(g, cfg.store.as_deref())?),
                    json: g.json,
                    progress: false,
                    no_cache: g.no_cache,
                })?)?,
            }
        }
        (None, None) => default_path(&open_store(g)?)?,
    };
    let max_age = a
        .max_age
        .as_deref()
        .map(crate::timearg::parse_duration)
        .transpose()?;
    let Some(mut st) = Status::load(&path)? else {
        bail!(
            "{}: no status file: no `pagesnap watch` has run with this store and status file (give --status-file or --config)",
            path.display()
        );
    };
    let watcher = if watcher_running(&path) {
        "running"
    } else if st.state == "running" {
        "dead"
    } else {
        "stopped"
    };
    // Only a running watcher's schedule means anything: a stopped one runs
    // nothing next (the file keeps the times it had when it stopped).
    if watcher != "running" {
        st.prune.next_due = None;
        for d in &mut st.databases {
            d.next_run = None;
        }
    }
    let failing = st
        .databases
        .iter()
        .any(|d| d.last_result.as_deref() == Some("failed"));
    let now = Utc::now();
    let late: Vec<(&str, String)> = st
        .databases
        .iter()
        .filter(|_| watcher == "running")
        .filter_map(|d| overdue(d, now).map(|why| (d.name.as_str(), why)))
        .collect();
    let stale: Vec<Stale> = match max_age {
        Some(max) => st
            .databases
            .iter()
            .filter_map(|d| stale(d, st.started, max, now))
            .collect(),
        None => Vec::new(),
    };
    if g.json {
        let mut v = serde_json::to_value(&st)?;
        // One time format in every JSON document (the status file's serde writes its own).
        output::normalize_times(&mut v);
        // A policy in JSON is an object (the status file keeps the flags' text).
        if let Some(dbs) = v["databases"].as_array_mut() {
            for d in dbs {
                if let Some(r) = d["retention"].as_str().map(output::retention_json) {
                    d["retention"] = r;
                }
            }
        }
        v["watcher"] = serde_json::json!(watcher);
        v["status_file"] = serde_json::json!(path.display().to_string());
        v["overdue"] = late
            .iter()
            .map(|(name, why)| serde_json::json!({ "name": name, "reason": why }))
            .collect();
        v["max_age_secs"] = serde_json::json!(max_age.map(|m| m.as_secs_f64()));
        v["stale"] = stale
            .iter()
            .map(|s| {
                serde_json::json!({
                    "name": s.name,
                    "current_at": s.current_at,
                    "age_secs": s.age.as_secs(),
                })
            })
            .collect();
        print_json(&v)?;
    } else {
        print_human(&st, watcher, &path, &late, &stale);
    }
    Ok(
        if watcher == "running" && !failing && late.is_empty() && stale.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(EXIT_ATTENTION)
        },
    )
}

/// A database not current for longer than `status --max-age`.
pub struct Stale {
    pub name: String,
    /// When it was last known current (none: never since the watcher started).
    pub current_at: Option<DateTime<Utc>>,
    pub age: Duration,
}

/// When the store last held database `d`'s content as it was then: its last
/// snapshot, or a later run that found it unchanged since that snapshot (a
/// quiet database is current, not stale).
pub fn current_at(d: &DbStatus) -> Option<DateTime<Utc>> {
    let snap = d.last_snapshot.as_ref().and_then(|s| s.time);
    let skip = d.last_skip.as_ref().and_then(|s| s.time);
    snap.max(skip)
}

/// Whether `d` is stale at `now` under `max_age`: not current for longer than
/// that. A database never current is measured from the watcher's start
/// (`started`), so a new watcher gets `max_age` for its first snapshot. Only the
/// status file is read, not the store: it is what the watcher did (a stuck
/// watcher leaves it unchanged), it knows about unchanged runs, and it costs
/// no request on a remote store.
pub fn stale(
    d: &DbStatus,
    started: Option<DateTime<Utc>>,
    max_age: Duration,
    now: DateTime<Utc>,
) -> Option<Stale> {
    let current = current_at(d);
    let age = match current.or(started) {
        Some(t) => (now - t).to_std().unwrap_or_default(),
        None => Duration::MAX,
    };
    (age > max_age).then(|| Stale {
        name: d.name.clone(),
        current_at: current,
        age,
    })
}

/// How late a run may be before `status` calls it overdue: the database's
/// interval, at least a minute and at most an hour (a prune or a busy moment
/// of the watcher delays runs a little; a missed run is news).
pub fn overdue_margin(every: Duration) -> Duration {
    every.clamp(Duration::from_secs(60), Duration::from_secs(3600))
}

/// Why database `d` needs attention at `now` while its watcher runs: an
/// abandoned run that is stuck, a run under way past its deadline, or a run
/// that has not started long after it was due (the watcher itself is stalled).
pub fn overdue(d: &DbStatus, now: DateTime<Utc>) -> Option<String> {
    let margin = overdue_margin(Duration::from_secs_f64(d.every_secs.max(0.0)));
    let late = |t: &DateTime<Utc>| {
        (now - *t)
            .to_std()
            .ok()
            .filter(|l| *l > margin)
            .map(|l| crate::timearg::format_duration(Duration::from_secs(l.as_secs())))
    };
    if let Some(t) = &d.stuck_since {
        return Some(format!(
            "stuck: the run started at {} was abandoned at its capture_timeout and has not returned (blocked reading the database); no new run starts until it does",
            output::time(t)
        ));
    }
    match (&d.running_since, &d.deadline) {
        (Some(_), Some(dl)) => late(dl).map(|l| {
            format!(
                "the run under way should have been abandoned at {} ({l} ago)",
                output::time(dl)
            )
        }),
        (Some(_), None) => None,
        (None, _) => d.next_run.as_ref().and_then(|n| {
            late(n).map(|l| {
                format!(
                    "the run due at {} has not started ({l} late)",
                    output::time(n)
                )
            })
        }),
    }
}

fn when(t: &Option<DateTime<Utc>>) -> String {
    t.as_ref().map(output::time).unwrap_or_else(|| "-".into())
}

fn print_human(st: &Status, watcher: &str, path: &Path, late: &[(&str, String)], stale: &[Stale]) {
    let state = match watcher {
        "running" => format!("running (pid {} on {})", st.pid, st.host),
        "dead" => format!(
            "NOT RUNNING: pid {} on {} ended without stopping cleanly",
            st.pid, st.host
        ),
        _ => "stopped".to_string(),
    };
    println!(
        "watcher:  {state}, started {}, status updated {}",
        when(&st.started),
        when(&st.updated)
    );
    println!("status:   {}", path.display());
    println!("store:    {}", st.store);
    if let Some(c) = &st.config {
        println!("config:   {c}");
    }
    let last = match &st.prune.last {
        Some(p) => format!(
            "last {} (freed {})",
            when(&p.time),
            output::bytes(p.bytes_freed)
        ),
        None => "never ran".to_string(),
    };
    let next = match (&st.prune.schedule[..], &st.prune.next_due) {
        ("never", _) => String::new(),
        _ if watcher != "running" => String::new(),
        (_, Some(t)) => format!(", next after {}", output::time(t)),
        (_, None) => ", next after the next snapshot".to_string(),
    };
    println!("prune:    {}; {last}{next}", st.prune.schedule);
    if let Some(e) = &st.prune.last_error {
        println!("          last error {}: {}", when(&e.time), e.message);
    }
    if let Some(p) = &st.in_progress {
        println!("running:  {} since {}", p.name, when(&p.since));
    }
    for d in &st.databases {
        println!();
        println!(
            "{}  {}  every {}",
            d.name,
            d.path,
            crate::timearg::format_duration(std::time::Duration::from_secs_f64(
                d.every_secs.max(0.0)
            ))
        );
        match &d.last_snapshot {
            Some(s) => println!(
                "  last snapshot:  {} at {} ({} pages, {} added)",
                s.short_id,
                when(&s.time),
                s.pages,
                output::bytes(s.bytes_added)
            ),
            None => println!("  last snapshot:  none yet"),
        }
        let result = match d.last_result.as_deref() {
            Some("skipped") => format!(
                "skipped ({})",
                d.last_skip
                    .as_ref()
                    .map(|s| s.reason.as_str())
                    .unwrap_or("")
            ),
            Some("failed") => "FAILED".to_string(),
            Some(r) => r.to_string(),
            None => "-".to_string(),
        };
        println!("  last run:       {} {result}", when(&d.last_attempt));
        if let Some(e) = &d.last_error {
            println!(
                "  last error:     {} ({}): {}",
                when(&e.time),
                e.event,
                e.message
            );
        }
        if let Some(c) = &d.last_check {
            println!(
                "  last check:     {} {} of {}: {}",
                when(&c.time),
                c.mode,
                c.snapshot,
                if c.ok { "ok" } else { c.detail.as_str() }
            );
        }
        println!(
            "  retention:      {}",
            d.retention
                .as_deref()
                .unwrap_or("none (all snapshots kept)")
        );
        if let Some(t) = &d.running_since {
            println!(
                "  running:        since {}, abandoned at {} unless done",
                output::time(t),
                when(&d.deadline)
            );
        } else if watcher == "running" {
            println!("  next run:       {}", when(&d.next_run));
        } else {
            println!("  next run:       none (the watcher is not running)");
        }
        for (_, why) in late.iter().filter(|(n, _)| *n == d.name) {
            println!("  OVERDUE:        {why}");
        }
        for s in stale.iter().filter(|s| s.name == d.name) {
            let age = crate::timearg::format_duration(Duration::from_secs(s.age.as_secs()));
            match &s.current_at {
                Some(t) => println!(
                    "  STALE:          last snapshot or unchanged check {} ({age} ago): older than --max-age",
                    output::time(t)
                ),
                None if s.age < Duration::MAX => println!(
                    "  STALE:          no snapshot since the watcher started ({age} ago): longer than --max-age"
                ),
                None => println!("  STALE:          never snapshotted"),
            }
        }
        println!(
            "  counts:         {} snapshots, {} skipped, {} failed ({} in a row)",
            d.snapshots, d.skips, d.failures, d.consecutive_failures
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_status_reads_back_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("st.json");
        let s = Status {
            version: VERSION,
            state: "running".into(),
            databases: vec![DbStatus {
                name: "app".into(),
                snapshots: 3,
                ..Default::default()
            }],
            ..Default::default()
        };
        s.save(&p).unwrap();
        s.save(&p).unwrap();
        let back = Status::load(&p).unwrap().unwrap();
        assert_eq!(back.databases[0].snapshots, 3);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("st.json")]);
        assert!(Status::load(&dir.path().join("none.json"))
            .unwrap()
            .is_none());
    }

    #[test]
    fn late_stuck_and_overrunning_databases_are_overdue() {
        let now = Utc::now();
        let secs = |s: i64| chrono::TimeDelta::seconds(s);
        let db = |every: f64| DbStatus {
            name: "app".into(),
            every_secs: every,
            next_run: Some(now + secs(5)),
            ..Default::default()
        };
        assert_eq!(overdue(&db(600.0), now), None);
        // Due, not started: overdue once later than the interval (a minute at least).
        let mut d = db(600.0);
        d.next_run = Some(now - secs(599));
        assert_eq!(overdue(&d, now), None);
        d.next_run = Some(now - secs(601));
        assert!(overdue(&d, now)
            .unwrap()
            .contains("has not started (10min 1s late)"));
        let mut d = db(1.0);
        d.next_run = Some(now - secs(59));
        assert_eq!(overdue(&d, now), None);
        d.next_run = Some(now - secs(61));
        assert!(overdue(&d, now).is_some());
        // A run under way: judged by its deadline, not by when it was due.
        let mut d = db(60.0);
        d.next_run = Some(now - secs(3000));
        d.running_since = Some(now - secs(3000));
        d.deadline = Some(now + secs(600));
        assert_eq!(overdue(&d, now), None);
        d.deadline = Some(now - secs(61));
        assert!(overdue(&d, now)
            .unwrap()
            .contains("should have been abandoned"));
        // A stuck abandoned run: at once.
        let mut d = db(600.0);
        d.stuck_since = Some(now - secs(1));
        assert!(overdue(&d, now).unwrap().starts_with("stuck: "));
    }

    #[test]
    fn one_watcher_per_status_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/st.json");
        assert!(!watcher_running(&p));
        let l = StatusLock::acquire(&p).unwrap();
        assert!(watcher_running(&p));
        // flock locks belong to the open file description: a second open conflicts.
        let e = StatusLock::acquire(&p).err().unwrap().to_string();
        assert!(e.contains("another pagesnap watch"), "{e}");
        drop(l);
        assert!(!watcher_running(&p));
    }
}

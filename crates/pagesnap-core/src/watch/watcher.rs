//! The embeddable watcher: a thread that keeps the schedule of its databases,
//! starts each run on a thread of its own with a deadline, prunes on its
//! schedule, keeps a status and tells observers what happened.
//!
//! One mutex guards the state; the watcher's thread sleeps on a condition
//! variable that a finished run, the handle's `run_now`/`stop`, and the next
//! due time wake. Observers are called on the watcher's thread with the mutex
//! released, so an observer may call the handle (its `status`, say).

use super::error::WatchError;
use super::prune::{PruneOutcome, PruneSettings};
use super::run::{
    run_once, CheckDone, Phase, RetentionApplied, RunControl, RunReport, RunSpec, Stage,
};
use super::schedule;
use super::source::{Change, ImageCheck, Source};
use crate::retention::Policy;
use crate::{Abandon, SnapshotId, Store};
use chrono::{DateTime, Utc};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

type Result<T> = std::result::Result<T, WatchError>;

/// One watched database.
#[derive(Clone, Debug, PartialEq)]
pub struct DatabaseOptions {
    /// The snapshots' name (unique among the watcher's databases).
    pub name: String,
    pub path: PathBuf,
    /// Runs fall on wall-clock multiples of it since the Unix epoch (UTC).
    pub every: Duration,
    /// Delays every run by a fixed offset in `0..jitter` chosen from the name.
    pub jitter: Duration,
    pub tags: Vec<String>,
    /// How long SQLite waits for another connection's lock.
    pub busy_timeout: Duration,
    /// A run that has not committed its snapshot by then is abandoned.
    pub capture_timeout: Duration,
    /// Retention after each snapshot; `None`: the store's saved policy, if any.
    pub policy: Option<Policy>,
    pub image_check: ImageCheck,
    pub image_check_every: u32,
}

impl DatabaseOptions {
    /// The database at `path`, named after its file stem, every 10 minutes, a
    /// 5 s busy timeout and a 1 h capture timeout.
    pub fn new(path: impl Into<PathBuf>) -> DatabaseOptions {
        let path = path.into();
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        DatabaseOptions {
            name,
            path,
            every: Duration::from_secs(600),
            jitter: Duration::ZERO,
            tags: Vec::new(),
            busy_timeout: Duration::from_secs(5),
            capture_timeout: Duration::from_secs(3600),
            policy: None,
            image_check: ImageCheck::Off,
            image_check_every: 1,
        }
    }

    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    pub fn every(mut self, every: Duration) -> Self {
        self.every = every;
        self
    }

    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = Some(policy);
        self
    }

    pub fn capture_timeout(mut self, t: Duration) -> Self {
        self.capture_timeout = t;
        self
    }

    pub fn busy_timeout(mut self, t: Duration) -> Self {
        self.busy_timeout = t;
        self
    }

    pub fn image_check(mut self, check: ImageCheck, every: u32) -> Self {
        self.image_check = check;
        self.image_check_every = every;
        self
    }

    fn validate(&self) -> Result<()> {
        crate::check_label("database name", &self.name)?;
        for t in &self.tags {
            crate::check_label("tag", t)?;
        }
        let bad = |what: &str| {
            Err(WatchError::Invalid(format!(
                "database {:?}: {what}",
                self.name
            )))
        };
        if self.every < Duration::from_millis(1) {
            return bad("the interval must be at least 1ms");
        }
        if self.jitter >= self.every {
            return bad("the jitter must be shorter than the interval");
        }
        if self.capture_timeout.is_zero() {
            return bad("the capture timeout must be longer than 0s");
        }
        if let Some(p) = &self.policy {
            p.validate().map_err(crate::Error::from)?;
        }
        Ok(())
    }
}

/// A callback that sees every [`WatchEvent`].
pub type Observer = Arc<dyn Fn(&WatchEvent) + Send + Sync>;

/// How a watcher works, and what it watches.
#[derive(Clone)]
pub struct WatcherOptions {
    pub databases: Vec<DatabaseOptions>,
    /// How long a run waits for another process's exclusive store lock.
    pub lock_wait: Duration,
    /// Where image checks restore their temporary copies (default: `$TMPDIR`).
    pub check_dir: Option<PathBuf>,
    /// The bound of a store's base cache in bytes (store/base_cache.rs; a
    /// store with deltas on S3); `None`: `$PAGESNAP_BASE_CACHE`, else 64 MiB.
    pub base_cache: Option<u64>,
    /// Hash every page with blake3, and list an S3 store in full
    /// (`BackupOptions::paranoid`).
    pub paranoid: bool,
    pub prune: PruneSettings,
    /// Runs under way at once, at most (0: the machine's cores, at least 2).
    pub max_parallel: usize,
    pub observers: Vec<Observer>,
    /// When the store was last pruned (by an earlier watcher): the prune
    /// schedule counts from it. `None`: prune is due after the first snapshot.
    pub prune_last: Option<DateTime<Utc>>,
}

impl Default for WatcherOptions {
    fn default() -> WatcherOptions {
        WatcherOptions {
            databases: Vec::new(),
            lock_wait: Duration::from_secs(600),
            check_dir: None,
            base_cache: None,
            paranoid: false,
            prune: PruneSettings::default(),
            max_parallel: 0,
            observers: Vec::new(),
            prune_last: None,
        }
    }
}

impl WatcherOptions {
    pub fn database(mut self, db: DatabaseOptions) -> Self {
        self.databases.push(db);
        self
    }

    pub fn prune(mut self, prune: PruneSettings) -> Self {
        self.prune = prune;
        self
    }

    /// Adds an observer, called on the watcher's thread for every event.
    pub fn on_event(mut self, f: impl Fn(&WatchEvent) + Send + Sync + 'static) -> Self {
        self.observers.push(Arc::new(f));
        self
    }
}

impl std::fmt::Debug for WatcherOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatcherOptions")
            .field("databases", &self.databases)
            .field("lock_wait", &self.lock_wait)
            .field("check_dir", &self.check_dir)
            .field("base_cache", &self.base_cache)
            .field("paranoid", &self.paranoid)
            .field("prune", &self.prune)
            .field("max_parallel", &self.max_parallel)
            .field("observers", &self.observers.len())
            .finish()
    }
}

/// A snapshot a run took.
#[derive(Clone, Debug)]
pub struct SnapshotInfo {
    pub id: SnapshotId,
    pub time: DateTime<Utc>,
    pub pages: u64,
    pub image_len: u64,
    pub bytes_added: u64,
    pub duration: Duration,
    /// Why it was taken ("first run", "committed changes", …).
    pub reason: &'static str,
}

/// Why a run was abandoned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbandonReason {
    /// It reached its capture timeout.
    Deadline,
    /// The watcher stopped.
    Stop,
}

/// How a run ended.
#[derive(Clone, Debug)]
pub enum RunOutcome {
    Snapshot(SnapshotInfo),
    /// Nothing changed since the last snapshot: none taken.
    Unchanged,
    /// A step failed; `snapshot` is the one taken before a later step failed.
    Failed {
        stage: Stage,
        error: Arc<WatchError>,
        snapshot: Option<SnapshotInfo>,
    },
    /// Abandoned before it committed a snapshot: it published nothing.
    /// `phase`: what it was doing ("capturing the database" …).
    Abandoned {
        why: AbandonReason,
        phase: &'static str,
        error: Arc<WatchError>,
    },
    /// A stop came while it waited for the store: it did nothing.
    Interrupted,
}

impl RunOutcome {
    pub fn failed(&self) -> bool {
        matches!(
            self,
            RunOutcome::Failed { .. } | RunOutcome::Abandoned { .. }
        )
    }

    /// Why it failed, if it did.
    pub fn error(&self) -> Option<&WatchError> {
        match self {
            RunOutcome::Failed { error, .. } | RunOutcome::Abandoned { error, .. } => Some(error),
            _ => None,
        }
    }

    /// The snapshot the run took, if any.
    pub fn snapshot(&self) -> Option<&SnapshotInfo> {
        match self {
            RunOutcome::Snapshot(s) => Some(s),
            RunOutcome::Failed { snapshot, .. } => snapshot.as_ref(),
            _ => None,
        }
    }
}

/// A run that ended.
#[derive(Clone, Debug)]
pub struct RunFinished {
    pub name: String,
    pub path: PathBuf,
    pub scheduled: DateTime<Utc>,
    pub started: DateTime<Utc>,
    pub ended: DateTime<Utc>,
    pub duration: Duration,
    pub outcome: RunOutcome,
    /// The retention policy in force, if the run read it (`Some(None)`: none),
    /// said as `"POLICY (config)"` or `"POLICY (store)"`.
    pub policy: Option<Option<String>>,
    pub retention: Option<RetentionApplied>,
    pub check: Option<CheckDone>,
    /// Damage the snapshot worked around (it still succeeded).
    pub warnings: Vec<String>,
    /// Failed runs in a row, this one included (0 after a success).
    pub consecutive_failures: u32,
    pub next_run: DateTime<Utc>,
}

/// What a watcher tells its observers.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum WatchEvent {
    RunStarted {
        name: String,
        path: PathBuf,
        scheduled: DateTime<Utc>,
        started: DateTime<Utc>,
    },
    /// Boxed: by far the largest event.
    RunFinished(Box<RunFinished>),
    /// A run reached its deadline while publishing its snapshot: it is waited for.
    RunLate {
        name: String,
    },
    /// The thread of a run abandoned at its deadline returned at last (it
    /// published nothing): the database's runs start again as scheduled.
    StuckReturned {
        name: String,
    },
    PruneStarted {
        reason: String,
    },
    PruneFinished {
        bytes_freed: u64,
        packs_deleted: u64,
        packs_rewritten: u64,
        duration: Duration,
    },
    /// The store was in use by another process: prune is tried after the next snapshot.
    PrunePostponed {
        holder: String,
    },
    /// `measuring`: only measuring the unused share failed (no prune was due).
    PruneFailed {
        error: Arc<WatchError>,
        measuring: bool,
    },
    /// The watcher's thread ended.
    Stopped,
}

/// The last result of a database's runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LastResult {
    Snapshot,
    Unchanged,
    Failed,
}

/// One database as the watcher sees it.
#[derive(Clone, Debug)]
pub struct DatabaseStatus {
    pub name: String,
    pub path: PathBuf,
    pub every: Duration,
    pub next_run: DateTime<Utc>,
    pub running_since: Option<DateTime<Utc>>,
    /// A run abandoned at its deadline whose thread has not returned.
    pub stuck_since: Option<DateTime<Utc>>,
    pub last_attempt: Option<DateTime<Utc>>,
    pub last_result: Option<LastResult>,
    pub last_snapshot: Option<SnapshotInfo>,
    /// When a run last ended without failing.
    pub last_success: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// The retention policy in force, and where it came from.
    pub retention: Option<String>,
    pub snapshots: u64,
    pub unchanged: u64,
    pub failures: u64,
    pub consecutive_failures: u32,
}

/// The watcher's prune as it stands.
#[derive(Clone, Debug, Default)]
pub struct PruneStatus {
    pub schedule: String,
    pub last: Option<DateTime<Utc>>,
    pub last_bytes_freed: u64,
    pub next_due: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub runs: u64,
}

/// What `stop` found.
#[derive(Clone, Debug, Default)]
pub struct StopReport {
    /// The watcher's thread ended in time.
    pub finished: bool,
    /// Runs abandoned because they had not ended in time.
    pub abandoned: Vec<String>,
    /// Runs still publishing their snapshot when `stop` returned.
    pub publishing: Vec<String>,
}

struct Running {
    id: u64,
    scheduled: DateTime<Utc>,
    started: DateTime<Utc>,
    started_at: Instant,
    deadline: Instant,
    abandon: Arc<Abandon>,
    phase: Arc<Phase>,
    /// It reached its deadline while publishing: waited for.
    committed: bool,
}

struct Db {
    opts: DatabaseOptions,
    /// `None` while a run has it.
    source: Option<Source>,
    offset: Duration,
    next_run: DateTime<Utc>,
    since_check: u32,
    run: Option<Running>,
    /// The id and start of a run abandoned at its deadline, still blocked.
    stuck: Option<(u64, DateTime<Utc>)>,
    st: DatabaseStatus,
}

struct Done {
    id: u64,
    name: String,
    source: Source,
    report: RunReport,
}

struct State {
    dbs: Vec<Db>,
    done: Vec<Done>,
    stopping: bool,
    stop_at: Option<Instant>,
    abandoned_at_stop: Vec<String>,
    /// How long runs publishing their snapshot are waited for after `stop_at`.
    publish_grace: Duration,
    ended: bool,
    /// A prune is under way (the watcher's thread is in it).
    pruning: bool,
    next_id: u64,
    prune_pending: bool,
    removed_since_look: bool,
    prune: PruneStatus,
    common: Common,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    stop: Arc<AtomicBool>,
    store: Arc<Store>,
    observers: Vec<Observer>,
}

/// The settings that apply to every database (changed by `set_options`).
#[derive(Clone)]
struct Common {
    lock_wait: Duration,
    check_dir: Option<PathBuf>,
    base_cache: Option<u64>,
    paranoid: bool,
    prune: PruneSettings,
    lanes: usize,
}

fn lanes(max_parallel: usize) -> usize {
    match max_parallel {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .max(2),
        n => n,
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic in the watcher left consistent bookkeeping (no invariant
        // spans an unwinding point): keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn emit(&self, events: Vec<WatchEvent>) {
        for e in &events {
            for o in &self.observers {
                // An observer that panics loses that event, not the watcher
                // (the panic message still goes to stderr).
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| o(e)));
            }
        }
    }
}

/// Starts watchers: see [`Watcher::start`].
pub struct Watcher;

impl Watcher {
    /// Starts watching `opts.databases` in `store` on a thread of its own.
    /// Checks the options first: a bad one starts nothing.
    pub fn start(store: Arc<Store>, opts: WatcherOptions) -> Result<WatcherHandle> {
        let mut names = std::collections::HashSet::new();
        for d in &opts.databases {
            d.validate()?;
            if !names.insert(d.name.clone()) {
                return Err(WatchError::DuplicateDatabase(d.name.clone()));
            }
        }
        let now = Utc::now();
        let prune = PruneStatus {
            schedule: opts.prune.schedule.to_string(),
            last: opts.prune_last,
            next_due: opts.prune.next_due(opts.prune_last),
            ..PruneStatus::default()
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                dbs: opts.databases.into_iter().map(|d| new_db(d, now)).collect(),
                done: Vec::new(),
                stopping: false,
                stop_at: None,
                abandoned_at_stop: Vec::new(),
                publish_grace: Duration::ZERO,
                ended: false,
                pruning: false,
                next_id: 0,
                prune_pending: false,
                removed_since_look: false,
                prune,
                common: Common {
                    lock_wait: opts.lock_wait,
                    check_dir: opts.check_dir,
                    base_cache: opts.base_cache,
                    paranoid: opts.paranoid,
                    prune: opts.prune,
                    lanes: lanes(opts.max_parallel),
                },
            }),
            wake: Condvar::new(),
            stop: Arc::new(AtomicBool::new(false)),
            store,
            observers: opts.observers,
        });
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("pagesnap-watcher".into())
            .spawn(move || main_loop(&s))
            .map_err(|e| WatchError::Thread {
                what: "the watcher".into(),
                source: e,
            })?;
        Ok(WatcherHandle {
            shared,
            thread: Some(thread),
        })
    }
}

fn new_db(opts: DatabaseOptions, now: DateTime<Utc>) -> Db {
    let offset = schedule::jitter_offset(&opts.name, opts.jitter);
    let next_run = schedule::next_run(now, opts.every, offset);
    let st = DatabaseStatus {
        name: opts.name.clone(),
        path: opts.path.clone(),
        every: opts.every,
        next_run,
        running_since: None,
        stuck_since: None,
        last_attempt: None,
        last_result: None,
        last_snapshot: None,
        last_success: None,
        last_error: None,
        retention: opts.policy.as_ref().map(|p| format!("{p} (config)")),
        snapshots: 0,
        unchanged: 0,
        failures: 0,
        consecutive_failures: 0,
    };
    Db {
        source: Some(Source::new(&opts.path)),
        opts,
        offset,
        next_run,
        since_check: 0,
        run: None,
        stuck: None,
        st,
    }
}

/// A running watcher. Dropping it stops the watcher without waiting (runs
/// under way finish on their own threads); call [`WatcherHandle::stop`] to wait.
pub struct WatcherHandle {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WatcherHandle {
    /// Every database's status, in the order they were given.
    pub fn status(&self) -> Vec<DatabaseStatus> {
        let st = self.shared.lock();
        st.dbs
            .iter()
            .map(|d| {
                let mut s = d.st.clone();
                s.next_run = d.next_run;
                s.running_since = d.run.as_ref().map(|r| r.started);
                s.stuck_since = d.stuck.map(|(_, t)| t);
                s
            })
            .collect()
    }

    pub fn prune_status(&self) -> PruneStatus {
        self.shared.lock().prune.clone()
    }

    /// Applies `opts`' lock wait, check folder, base cache bound, prune settings and parallelism
    /// from the next run (or prune) on; its databases and observers are ignored
    /// (see [`WatcherHandle::configure`]).
    pub fn set_options(&self, opts: &WatcherOptions) {
        let mut st = self.shared.lock();
        st.common = Common {
            lock_wait: opts.lock_wait,
            check_dir: opts.check_dir.clone(),
            base_cache: opts.base_cache,
            paranoid: opts.paranoid,
            prune: opts.prune.clone(),
            lanes: lanes(opts.max_parallel),
        };
        st.prune.schedule = opts.prune.schedule.to_string();
        st.prune.next_due = opts.prune.next_due(st.prune.last);
        self.shared.wake.notify_all();
    }

    /// No run is under way and no prune is due or running: what a caller that
    /// runs one round (`run_now` for each database) waits for before it stops.
    pub fn is_idle(&self) -> bool {
        let st = self.shared.lock();
        !st.prune_pending && !st.pruning && st.dbs.iter().all(|d| d.run.is_none())
    }

    /// Makes the database `name` due now (a run under way is not doubled:
    /// the next one starts when it ends).
    pub fn run_now(&self, name: &str) -> Result<()> {
        let mut st = self.shared.lock();
        if st.stopping {
            return Err(WatchError::Stopped);
        }
        let d = st
            .dbs
            .iter_mut()
            .find(|d| d.opts.name == name)
            .ok_or_else(|| WatchError::UnknownDatabase(name.to_string()))?;
        d.next_run = Utc::now();
        d.st.next_run = d.next_run;
        self.shared.wake.notify_all();
        Ok(())
    }

    /// Adds a database, or replaces the settings of the one of that name (its
    /// connection is kept when its path is unchanged).
    pub fn configure(&self, opts: DatabaseOptions) -> Result<()> {
        opts.validate()?;
        let mut st = self.shared.lock();
        if st.stopping {
            return Err(WatchError::Stopped);
        }
        let now = Utc::now();
        match st.dbs.iter_mut().find(|d| d.opts.name == opts.name) {
            Some(d) => {
                let timing = d.opts.every != opts.every || d.opts.jitter != opts.jitter;
                if d.opts.path != opts.path {
                    d.source = d.run.is_none().then(|| Source::new(&opts.path));
                    d.st.path = opts.path.clone();
                }
                d.opts = opts;
                d.st.every = d.opts.every;
                d.st.retention = d.opts.policy.as_ref().map(|p| format!("{p} (config)"));
                if timing && d.run.is_none() {
                    d.offset = schedule::jitter_offset(&d.opts.name, d.opts.jitter);
                    d.next_run = schedule::next_run(now, d.opts.every, d.offset);
                }
            }
            None => st.dbs.push(new_db(opts, now)),
        }
        self.shared.wake.notify_all();
        Ok(())
    }

    /// Stops watching the database `name` (a run under way finishes unreported).
    pub fn remove(&self, name: &str) -> Result<()> {
        let mut st = self.shared.lock();
        let i = st
            .dbs
            .iter()
            .position(|d| d.opts.name == name)
            .ok_or_else(|| WatchError::UnknownDatabase(name.to_string()))?;
        st.dbs.remove(i);
        Ok(())
    }

    /// Stops the watcher: no new run starts; the runs under way get `timeout`
    /// to end, and those still capturing then are abandoned (they publish
    /// nothing). Returns within `timeout` (plus a few milliseconds) unless an
    /// observer or a prune keeps the watcher's thread busy longer; a run
    /// already publishing its snapshot finishes on its own thread.
    pub fn stop(self, timeout: Duration) -> StopReport {
        self.stop_with(timeout, Duration::ZERO)
    }

    /// [`WatcherHandle::stop`], and then waits up to `publish_grace` more for
    /// runs that were publishing their snapshot at `timeout` (a process about
    /// to exit wants them published, not cut off).
    pub fn stop_with(mut self, timeout: Duration, publish_grace: Duration) -> StopReport {
        self.request_stop(timeout);
        self.shared.lock().publish_grace = publish_grace;
        let until = after(Instant::now(), timeout.saturating_add(publish_grace))
            + Duration::from_millis(50);
        let mut st = self.shared.lock();
        while !st.ended {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            st = self
                .shared
                .wake
                .wait_timeout(st, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        let report = StopReport {
            finished: st.ended,
            abandoned: st.abandoned_at_stop.clone(),
            publishing: st
                .dbs
                .iter()
                .filter(|d| d.run.is_some())
                .map(|d| d.opts.name.clone())
                .collect(),
        };
        drop(st);
        if report.finished {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
        report
    }

    fn request_stop(&self, timeout: Duration) {
        let mut st = self.shared.lock();
        if !st.stopping {
            st.stopping = true;
            st.stop_at = Some(after(Instant::now(), timeout));
            self.shared.stop.store(true, Ordering::SeqCst);
        }
        self.shared.wake.notify_all();
    }
}

impl Drop for WatcherHandle {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.request_stop(Duration::ZERO);
        }
    }
}

/// `now + d`, or far in the future if that overflows.
fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
}

fn main_loop(sh: &Arc<Shared>) {
    let mut st = sh.lock();
    loop {
        let mut events = Vec::new();
        for f in std::mem::take(&mut st.done) {
            finished(&mut st, f, &mut events);
        }
        enforce_deadlines(&mut st, &mut events);
        let now = Instant::now();
        if st.stopping {
            let stop_at = st.stop_at.unwrap_or(now);
            if now >= stop_at {
                abandon_all(&mut st, &mut events);
            }
            let running = st.dbs.iter().any(|d| d.run.is_some());
            if !running || now >= after(stop_at, st.publish_grace) {
                drop(st);
                sh.emit(events);
                sh.emit(vec![WatchEvent::Stopped]);
                let mut st = sh.lock();
                st.ended = true;
                sh.wake.notify_all();
                return;
            }
        } else {
            start_due(sh, &mut st, &mut events);
            let idle = st.dbs.iter().all(|d| d.run.is_none());
            if st.prune_pending && idle {
                st.prune_pending = false;
                st.pruning = true;
                drop(st);
                sh.emit(std::mem::take(&mut events));
                maybe_prune(sh);
                st = sh.lock();
                st.pruning = false;
                continue;
            }
        }
        if !events.is_empty() {
            drop(st);
            sh.emit(events);
            st = sh.lock();
            continue;
        }
        if !st.done.is_empty() {
            continue;
        }
        // Until the next run or deadline is due (a finished run, run_now and
        // stop wake it before).
        let wall = Utc::now();
        let mono = Instant::now();
        let mut wake: Option<Instant> =
            st.stop_at
                .filter(|_| st.stopping)
                .map(|t| match Instant::now() >= t {
                    true => after(t, st.publish_grace),
                    false => t,
                });
        let mut earlier = |t: Instant| wake = Some(wake.map_or(t, |w| w.min(t)));
        for d in &st.dbs {
            match &d.run {
                Some(r) if !r.committed => earlier(r.deadline),
                Some(_) => {}
                // A database due but not started waits for a lane: the end
                // of a run wakes the watcher.
                None if !st.stopping && d.next_run > wall => {
                    let wait = (d.next_run - wall).to_std().unwrap_or(Duration::ZERO);
                    earlier(after(mono, wait));
                }
                None => {}
            }
        }
        let wait = wake
            .map(|w| w.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(3600))
            // The wall clock may be set: look again at least every minute.
            .min(Duration::from_secs(60));
        if wait.is_zero() {
            continue;
        }
        st = sh
            .wake
            .wait_timeout(st, wait)
            .map(|(g, _)| g)
            .unwrap_or_else(|p| p.into_inner().0);
    }
}

fn start_due(sh: &Arc<Shared>, st: &mut State, events: &mut Vec<WatchEvent>) {
    let now = Utc::now();
    // The clock was set back: reschedule from the new time rather than wait
    // for the old one to come round again.
    for d in &mut st.dbs {
        let every = chrono::TimeDelta::from_std(d.opts.every).unwrap_or(chrono::TimeDelta::MAX);
        if d.run.is_none() && d.next_run - now > every {
            d.next_run = schedule::next_run(now, d.opts.every, d.offset);
        }
    }
    let mut due: Vec<usize> = (0..st.dbs.len())
        .filter(|&i| st.dbs[i].next_run <= now && st.dbs[i].run.is_none())
        .collect();
    due.sort_by_key(|&i| (st.dbs[i].next_run, i));
    for i in due {
        let running = st.dbs.iter().filter(|d| d.run.is_some()).count();
        let scheduled = st.dbs[i].next_run;
        if let Some((_, since)) = st.dbs[i].stuck {
            // One blocked thread per database at most: a hung mount must not
            // collect a thread every interval.
            let msg = format!(
                "{}: the run started at {} was abandoned at its capture_timeout and is still blocked reading the database; no new run starts until it returns",
                st.dbs[i].opts.path.display(),
                since.format("%Y-%m-%d %H:%M:%S")
            );
            let outcome = RunOutcome::Failed {
                stage: Stage::Backup,
                error: Arc::new(WatchError::Abandoned(msg)),
                snapshot: None,
            };
            let ev = record(st, i, scheduled, Utc::now(), outcome, None);
            events.push(WatchEvent::RunFinished(Box::new(ev)));
            continue;
        }
        if running >= st.common.lanes {
            return;
        }
        let id = st.next_id;
        st.next_id += 1;
        let d = &mut st.dbs[i];
        let started = Utc::now();
        let mut source = d.source.take().unwrap_or_else(|| Source::new(&d.opts.path));
        let abandon = Arc::new(Abandon::new());
        let phase = Arc::new(Phase::default());
        let opts = d.opts.clone();
        let since_check = d.since_check;
        let (lock_wait, check_dir) = (st.common.lock_wait, st.common.check_dir.clone());
        let (base_cache, paranoid) = (st.common.base_cache, st.common.paranoid);
        let d = &mut st.dbs[i];
        let (sh2, ab, ph) = (Arc::clone(sh), Arc::clone(&abandon), Arc::clone(&phase));
        let spawned = std::thread::Builder::new()
            .name(format!("run-{}", opts.name))
            .spawn(move || {
                let spec = RunSpec {
                    name: &opts.name,
                    tags: &opts.tags,
                    busy_timeout: opts.busy_timeout,
                    lock_wait,
                    policy: opts.policy.as_ref(),
                    image_check: opts.image_check,
                    image_check_every: opts.image_check_every,
                    check_dir: check_dir.as_deref(),
                    since_check,
                    base_cache,
                    paranoid,
                };
                let ctl = RunControl {
                    abandon: &ab,
                    phase: &ph,
                    stop: &sh2.stop,
                };
                let report = run_once(&sh2.store, &mut source, &spec, ctl);
                let mut st = sh2.lock();
                st.done.push(Done {
                    id,
                    name: opts.name.clone(),
                    source,
                    report,
                });
                sh2.wake.notify_all();
            });
        match spawned {
            Ok(_) => {
                d.run = Some(Running {
                    id,
                    scheduled,
                    started,
                    started_at: Instant::now(),
                    deadline: after(Instant::now(), d.opts.capture_timeout),
                    abandon,
                    phase,
                    committed: false,
                });
                events.push(WatchEvent::RunStarted {
                    name: d.opts.name.clone(),
                    path: d.opts.path.clone(),
                    scheduled,
                    started,
                });
            }
            Err(e) => {
                d.source = Some(Source::new(&d.opts.path));
                let outcome = RunOutcome::Failed {
                    stage: Stage::Backup,
                    error: Arc::new(WatchError::Thread {
                        what: "the run".into(),
                        source: e,
                    }),
                    snapshot: None,
                };
                let ev = record(st, i, scheduled, started, outcome, None);
                events.push(WatchEvent::RunFinished(Box::new(ev)));
            }
        }
    }
}

/// A run's thread returned.
fn finished(st: &mut State, f: Done, events: &mut Vec<WatchEvent>) {
    let Some(i) = st.dbs.iter().position(|d| d.opts.name == f.name) else {
        return;
    };
    let d = &mut st.dbs[i];
    if d.stuck.is_some_and(|(id, _)| id == f.id) {
        // The abandoned run returned at last (it published nothing).
        d.stuck = None;
        events.push(WatchEvent::StuckReturned {
            name: f.name.clone(),
        });
        return;
    }
    let Some(run) = d.run.take_if(|r| r.id == f.id) else {
        return;
    };
    let mut source = f.source;
    if source.path() != d.opts.path {
        source = Source::new(&d.opts.path);
    }
    d.source = Some(source);
    let mut report = f.report;
    if report.snapshot.is_some() {
        st.prune_pending = true;
    }
    if report.retention.as_ref().is_some_and(|r| r.removed > 0) {
        st.removed_since_look = true;
    }
    let d = &mut st.dbs[i];
    d.since_check = report.since_check;
    if let Some(p) = &report.policy {
        d.st.retention = p
            .as_ref()
            .map(|(p, from)| format!("{p} ({})", from.as_str()));
    }
    let snap = report.snapshot.as_ref().map(|r| SnapshotInfo {
        id: r.snapshot,
        time: r.time,
        pages: r.page_count,
        image_len: r.image_len,
        bytes_added: r.bytes_added,
        duration: r.duration,
        reason: match &report.change {
            Some(Change::Changed(why)) => why,
            _ => "",
        },
    });
    let outcome = match (report.failure.take(), snap) {
        (Some((stage, e)), snapshot) => RunOutcome::Failed {
            stage,
            error: Arc::new(e),
            snapshot,
        },
        (None, Some(s)) => RunOutcome::Snapshot(s),
        (None, None) if report.interrupted => RunOutcome::Interrupted,
        (None, None) => RunOutcome::Unchanged,
    };
    let mut ev = record(st, i, run.scheduled, run.started, outcome, Some(&report));
    ev.duration = run.started_at.elapsed();
    events.push(WatchEvent::RunFinished(Box::new(ev)));
}

/// Records a run's outcome in database `i`'s status and schedules its next run.
fn record(
    st: &mut State,
    i: usize,
    scheduled: DateTime<Utc>,
    started: DateTime<Utc>,
    outcome: RunOutcome,
    report: Option<&RunReport>,
) -> RunFinished {
    let now = Utc::now();
    let d = &mut st.dbs[i];
    if !matches!(outcome, RunOutcome::Interrupted) {
        d.st.last_attempt = Some(started);
    }
    if let Some(s) = outcome.snapshot() {
        d.st.snapshots += 1;
        d.st.last_snapshot = Some(s.clone());
    }
    match &outcome {
        RunOutcome::Failed { error, .. } | RunOutcome::Abandoned { error, .. } => {
            d.st.last_result = Some(LastResult::Failed);
            d.st.failures += 1;
            d.st.consecutive_failures += 1;
            d.st.last_error = Some(error.to_string());
        }
        RunOutcome::Snapshot(_) => {
            d.st.last_result = Some(LastResult::Snapshot);
            d.st.consecutive_failures = 0;
            d.st.last_success = Some(now);
        }
        RunOutcome::Unchanged => {
            d.st.last_result = Some(LastResult::Unchanged);
            d.st.unchanged += 1;
            d.st.consecutive_failures = 0;
            d.st.last_success = Some(now);
        }
        RunOutcome::Interrupted => {}
    }
    d.next_run = schedule::next_run(now.max(scheduled), d.opts.every, d.offset);
    d.st.next_run = d.next_run;
    RunFinished {
        name: d.opts.name.clone(),
        path: d.opts.path.clone(),
        scheduled,
        started,
        ended: now,
        duration: (now - started).to_std().unwrap_or_default(),
        outcome,
        policy: report.and_then(|r| {
            r.policy.as_ref().map(|p| {
                p.as_ref()
                    .map(|(p, from)| format!("{p} ({})", from.as_str()))
            })
        }),
        retention: report.and_then(|r| r.retention.clone()),
        check: report.and_then(|r| r.check.clone()),
        warnings: report
            .and_then(|r| r.snapshot.as_ref())
            .map(|s| s.warnings.clone())
            .unwrap_or_default(),
        consecutive_failures: d.st.consecutive_failures,
        next_run: d.next_run,
    }
}

fn enforce_deadlines(st: &mut State, events: &mut Vec<WatchEvent>) {
    let now = Instant::now();
    let late: Vec<usize> = (0..st.dbs.len())
        .filter(|&i| {
            st.dbs[i]
                .run
                .as_ref()
                .is_some_and(|r| !r.committed && r.deadline <= now)
        })
        .collect();
    for i in late {
        if let Some(ev) = abandon(st, i, AbandonReason::Deadline, events) {
            events.push(WatchEvent::RunFinished(Box::new(ev)));
        }
    }
}

fn abandon_all(st: &mut State, events: &mut Vec<WatchEvent>) {
    for i in 0..st.dbs.len() {
        if st.dbs[i].run.is_some() {
            let name = st.dbs[i].opts.name.clone();
            if let Some(ev) = abandon(st, i, AbandonReason::Stop, events) {
                st.abandoned_at_stop.push(name);
                events.push(WatchEvent::RunFinished(Box::new(ev)));
            }
        }
    }
}

/// Abandons the run of database `i` unless it is publishing its snapshot
/// (then it is waited for: `None`).
fn abandon(
    st: &mut State,
    i: usize,
    why: AbandonReason,
    late: &mut Vec<WatchEvent>,
) -> Option<RunFinished> {
    let d = &mut st.dbs[i];
    let r = d.run.as_mut()?;
    if !r.abandon.abandon() {
        if !r.committed {
            r.committed = true;
            late.push(WatchEvent::RunLate {
                name: d.opts.name.clone(),
            });
        }
        return None;
    }
    let r = d.run.take()?;
    d.stuck = Some((r.id, r.started));
    d.source = Some(Source::new(&d.opts.path));
    let msg = match why {
        AbandonReason::Deadline => format!(
            "{}: the run did not finish within its capture_timeout of {} (it was {}): abandoned, no snapshot was published",
            d.opts.path.display(),
            super::fmt_duration(d.opts.capture_timeout),
            r.phase.describe()
        ),
        AbandonReason::Stop => format!(
            "{}: stopping: the run was still {} at the stop's timeout: abandoned, no snapshot was published",
            d.opts.path.display(),
            r.phase.describe()
        ),
    };
    let outcome = RunOutcome::Abandoned {
        why,
        phase: r.phase.describe(),
        error: Arc::new(WatchError::Abandoned(msg)),
    };
    let mut ev = record(st, i, r.scheduled, r.started, outcome, None);
    ev.duration = r.started_at.elapsed();
    Some(ev)
}

fn maybe_prune(sh: &Arc<Shared>) {
    let (last, mut removed, settings) = {
        let st = sh.lock();
        (
            st.prune.last,
            st.removed_since_look,
            st.common.prune.clone(),
        )
    };
    let (why, err) = settings.due(&sh.store, Utc::now(), last, &mut removed);
    let mut events = Vec::new();
    if let Some(e) = err {
        events.push(WatchEvent::PruneFailed {
            error: Arc::new(e),
            measuring: true,
        });
    }
    {
        let mut st = sh.lock();
        st.removed_since_look = removed;
    }
    let Some(why) = why else {
        sh.emit(events);
        return;
    };
    events.push(WatchEvent::PruneStarted { reason: why });
    sh.emit(std::mem::take(&mut events));
    let outcome = settings.prune(&sh.store, false);
    let mut st = sh.lock();
    match outcome {
        PruneOutcome::Pruned(r) => {
            st.prune.last = Some(Utc::now());
            st.prune.last_bytes_freed = r.bytes_freed;
            st.prune.last_error = None;
            st.prune.runs += 1;
            st.removed_since_look = false;
            events.push(WatchEvent::PruneFinished {
                bytes_freed: r.bytes_freed,
                packs_deleted: r.packs_deleted,
                packs_rewritten: r.packs_rewritten,
                duration: r.duration,
            });
        }
        PruneOutcome::Postponed { holder } => events.push(WatchEvent::PrunePostponed { holder }),
        PruneOutcome::Failed(e) => {
            st.prune.last_error = Some(e.to_string());
            events.push(WatchEvent::PruneFailed {
                error: Arc::new(e),
                measuring: false,
            });
        }
    }
    st.prune.next_due = settings.next_due(st.prune.last);
    drop(st);
    sh.emit(events);
}

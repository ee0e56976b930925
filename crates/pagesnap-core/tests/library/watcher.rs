//! The embeddable watcher (`pagesnap_core::watch`) run in-process: a snapshot
//! when the database changed, none when it did not, retention after each
//! snapshot, a run stuck past its deadline abandoned, and `stop` returning
//! within its timeout; the observer sees every run.

use pagesnap_core::retention::Policy;
use pagesnap_core::watch::{
    AbandonReason, DatabaseOptions, LastResult, PruneSchedule, PruneSettings, RunFinished,
    RunOutcome, WatchEvent, Watcher, WatcherHandle, WatcherOptions,
};
use pagesnap_core::{InitOptions, Store};
use rusqlite::Connection;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Events = Arc<Mutex<Vec<WatchEvent>>>;

fn finished(events: &Events) -> Vec<RunFinished> {
    events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            WatchEvent::RunFinished(f) => Some((**f).clone()),
            _ => None,
        })
        .collect()
}

/// Waits until the observer has seen `n` finished runs, and returns the last.
fn nth_run(events: &Events, n: usize) -> RunFinished {
    let started = Instant::now();
    loop {
        let f = finished(events);
        if f.len() >= n {
            return f[n - 1].clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "run {n} never finished; events: {:#?}",
            events.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn run(h: &WatcherHandle, events: &Events, name: &str) -> RunFinished {
    let n = finished(events).len() + 1;
    h.run_now(name).unwrap();
    nth_run(events, n)
}

fn setup() -> (tempfile::TempDir, Arc<Store>, std::path::PathBuf, Events) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let c = Connection::open(&db).unwrap();
    c.execute_batch(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES ('a');",
    )
    .unwrap();
    let store = Arc::new(Store::init(dir.path().join("store"), &InitOptions::default()).unwrap());
    (dir, store, db, Arc::new(Mutex::new(Vec::new())))
}

#[test]
fn a_watcher_snapshots_changes_skips_unchanged_applies_retention_and_stops_in_time() {
    let (_dir, store, db, events) = setup();
    let seen = Arc::clone(&events);
    let policy = Policy {
        keep_last: Some(2),
        ..Policy::default()
    };
    let opts = WatcherOptions::default()
        // An hour: only run_now starts runs in this test.
        .database(
            DatabaseOptions::new(&db)
                .every(Duration::from_secs(3600))
                .policy(policy),
        )
        .prune(PruneSettings {
            schedule: PruneSchedule::Never,
            ..PruneSettings::default()
        })
        .on_event(move |e| seen.lock().unwrap().push(e.clone()));
    let h = Watcher::start(Arc::clone(&store), opts).unwrap();
    let status = h.status();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].name, "app");
    assert!(status[0].next_run > chrono::Utc::now(), "scheduled ahead");
    assert!(status[0].last_result.is_none());

    let first = run(&h, &events, "app");
    let RunOutcome::Snapshot(s) = &first.outcome else {
        panic!("first run: {:?}", first.outcome)
    };
    assert_eq!(s.reason, "first run");
    assert!(s.bytes_added > 0);
    assert_eq!(store.snapshots().unwrap().len(), 1);

    let second = run(&h, &events, "app");
    assert!(
        matches!(second.outcome, RunOutcome::Unchanged),
        "nothing changed: {:?}",
        second.outcome
    );
    assert_eq!(
        store.snapshots().unwrap().len(),
        1,
        "no snapshot when unchanged"
    );

    let c = Connection::open(&db).unwrap();
    for (i, v) in ["b", "c"].iter().enumerate() {
        c.execute("INSERT INTO t(v) VALUES (?1)", [v]).unwrap();
        let r = run(&h, &events, "app");
        let RunOutcome::Snapshot(s) = &r.outcome else {
            panic!("after a change: {:?}", r.outcome)
        };
        assert_eq!(s.reason, "committed changes");
        let ret = r.retention.as_ref().expect("retention applied");
        assert_eq!(ret.kept, 2);
        assert_eq!(
            ret.removed, i,
            "keep_last 2 forgets the oldest from the third"
        );
    }
    assert_eq!(store.snapshots().unwrap().len(), 2, "retention kept 2");

    let st = &h.status()[0];
    assert_eq!(st.snapshots, 3);
    assert_eq!(st.unchanged, 1);
    assert_eq!(st.failures, 0);
    assert_eq!(st.last_result, Some(LastResult::Snapshot));
    assert_eq!(st.retention.as_deref(), Some("--keep-last 2 (config)"));
    assert!(st.last_success.is_some() && st.running_since.is_none());
    assert!(
        h.run_now("nope").is_err(),
        "an unknown database is an error"
    );

    let started = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, WatchEvent::RunStarted { .. }))
        .count();
    assert_eq!(started, 4, "every run was announced");

    let t = Instant::now();
    let report = h.stop(Duration::from_secs(5));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(report.finished && report.abandoned.is_empty());
    assert!(matches!(
        events.lock().unwrap().last(),
        Some(WatchEvent::Stopped)
    ));
}

#[test]
fn a_stuck_run_is_abandoned_at_its_deadline_and_stop_returns_within_its_timeout() {
    let (_dir, store, db, events) = setup();
    let seen = Arc::clone(&events);
    let opts = WatcherOptions::default()
        .database(
            DatabaseOptions::new(&db)
                .every(Duration::from_secs(3600))
                // SQLite waits that long for the writer below: the run is stuck.
                .busy_timeout(Duration::from_secs(30))
                .capture_timeout(Duration::from_millis(500)),
        )
        .on_event(move |e| seen.lock().unwrap().push(e.clone()));
    let h = Watcher::start(Arc::clone(&store), opts).unwrap();
    // A rollback-journal writer's exclusive lock keeps every reader out.
    let w = Connection::open(&db).unwrap();
    w.execute_batch("BEGIN EXCLUSIVE; INSERT INTO t(v) VALUES ('x');")
        .unwrap();

    let r = run(&h, &events, "app");
    match &r.outcome {
        RunOutcome::Abandoned { why, phase, error } => {
            assert_eq!(*why, AbandonReason::Deadline);
            assert_eq!(*phase, "checking the database for changes");
            let msg = error.to_string();
            assert!(msg.contains("capture_timeout of 500ms"), "{msg}");
            assert!(msg.contains("checking the database for changes"), "{msg}");
        }
        other => panic!("expected abandoned: {other:?}"),
    }
    assert!(r.outcome.failed());
    let st = &h.status()[0];
    assert_eq!(st.failures, 1);
    assert_eq!(st.consecutive_failures, 1);
    assert!(st.stuck_since.is_some(), "its thread is still blocked");
    assert!(store.snapshots().unwrap().is_empty());

    // Another database's run is stuck when the watcher stops: stop abandons it
    // at its timeout instead of waiting for the run's own (long) deadline.
    let other = db.with_file_name("other.db");
    let o = Connection::open(&other).unwrap();
    o.execute_batch("CREATE TABLE t(v); BEGIN EXCLUSIVE; INSERT INTO t VALUES (1);")
        .unwrap();
    h.configure(
        DatabaseOptions::new(&other)
            .every(Duration::from_secs(3600))
            .busy_timeout(Duration::from_secs(30))
            .capture_timeout(Duration::from_secs(600)),
    )
    .unwrap();
    h.run_now("other").unwrap();
    let t = Instant::now();
    while h.status()[1].running_since.is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the run never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let t = Instant::now();
    let report = h.stop(Duration::from_millis(300));
    let took = t.elapsed();
    assert!(took < Duration::from_secs(2), "stop took {took:?}");
    assert!(
        took >= Duration::from_millis(300),
        "stop waited for the run: {took:?}"
    );
    assert!(report.finished, "{report:?}");
    assert_eq!(report.abandoned, ["other"]);
    let last = nth_run(&events, 2);
    assert!(
        matches!(
            last.outcome,
            RunOutcome::Abandoned {
                why: AbandonReason::Stop,
                ..
            }
        ),
        "{:?}",
        last.outcome
    );
    w.execute_batch("COMMIT").unwrap();
    o.execute_batch("COMMIT").unwrap();
}

#[test]
fn bad_options_start_nothing() {
    let (_dir, store, db, _events) = setup();
    let twice = WatcherOptions::default()
        .database(DatabaseOptions::new(&db))
        .database(DatabaseOptions::new(&db));
    let e = Watcher::start(Arc::clone(&store), twice).err().unwrap();
    assert!(e.to_string().contains("\"app\" is already watched"), "{e}");
    let zero = WatcherOptions::default().database(DatabaseOptions::new(&db).every(Duration::ZERO));
    let e = Watcher::start(store, zero).err().unwrap();
    assert!(e.to_string().contains("interval"), "{e}");
}

#[test]
fn a_database_due_while_every_lane_is_busy_runs_when_one_frees() {
    let (_dir, store, db, events) = setup();
    let seen = Arc::clone(&events);
    let other = db.with_file_name("other.db");
    Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE t(v); INSERT INTO t VALUES (1);")
        .unwrap();
    let mut opts = WatcherOptions::default()
        .database(
            DatabaseOptions::new(&db)
                .every(Duration::from_secs(3600))
                .busy_timeout(Duration::from_secs(30))
                .capture_timeout(Duration::from_millis(300)),
        )
        .database(DatabaseOptions::new(&other).every(Duration::from_secs(3600)))
        .on_event(move |e| seen.lock().unwrap().push(e.clone()));
    // One run at a time: `other` waits for `app`'s lane.
    opts.max_parallel = 1;
    let h = Watcher::start(Arc::clone(&store), opts).unwrap();
    let w = Connection::open(&db).unwrap();
    w.execute_batch("BEGIN EXCLUSIVE; INSERT INTO t(v) VALUES ('x');")
        .unwrap();
    h.run_now("app").unwrap();
    h.run_now("other").unwrap();
    let first = nth_run(&events, 1);
    assert_eq!(first.name, "app");
    assert!(matches!(first.outcome, RunOutcome::Abandoned { .. }));
    let second = nth_run(&events, 2);
    assert_eq!(second.name, "other");
    assert!(
        matches!(second.outcome, RunOutcome::Snapshot(_)),
        "{:?}",
        second.outcome
    );
    // The abandoned run's thread returns once the writer lets go.
    w.execute_batch("COMMIT").unwrap();
    let t = Instant::now();
    while !events
        .lock()
        .unwrap()
        .iter()
        .any(|e| matches!(e, WatchEvent::StuckReturned { name } if name == "app"))
    {
        assert!(t.elapsed() < Duration::from_secs(60), "never returned");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(h.status()[0].stuck_since.is_none());
    assert!(h.stop(Duration::from_secs(5)).finished);
}

/// The handle can be shared between threads (an `Arc`), and the events sent
/// to another thread (a channel), as docs/EMBEDDING.md says.
#[test]
fn the_handle_and_the_events_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<WatcherHandle>();
    send_sync::<WatchEvent>();
    send_sync::<pagesnap_core::watch::DatabaseStatus>();
}

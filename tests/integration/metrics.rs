//! `pagesnap watch --metrics-listen`: scraped over HTTP and parsed as the
//! Prometheus text format, as a Prometheus server would.

use crate::util::*;
use crate::watch_util::*;
use chrono::Utc;
use prometheus_parse::{Scrape, Value as PValue};
use serde_json::Value;
use std::time::Duration;

/// The address the watcher logged it listens on (it was given port 0).
fn metrics_addr(w: &Watch) -> Option<String> {
    w.log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["event"] == "metrics")
        .and_then(|e| e["address"].as_str().map(str::to_string))
}

fn scrape(addr: &str) -> Scrape {
    let body = ureq::get(&format!("http://{addr}/metrics"))
        .call()
        .unwrap_or_else(|e| panic!("GET http://{addr}/metrics: {e}"))
        .body_mut()
        .read_to_string()
        .unwrap();
    Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text format")
}

/// The value of `name{database="db"}` (or of `name` without labels).
fn sample(s: &Scrape, name: &str, db: Option<&str>) -> Option<f64> {
    s.samples
        .iter()
        .find(|x| x.metric == name && x.labels.get("database") == db)
        .map(|x| match x.value {
            PValue::Counter(v) | PValue::Gauge(v) | PValue::Untyped(v) => v,
            _ => f64::NAN,
        })
}

#[test]
fn watch_serves_prometheus_metrics_of_its_runs() {
    let fx = Fx::new();
    small_db(&fx, "app.db", 5);
    let before = Utc::now().timestamp() as f64;
    let mut w = Watch::start(
        &fx,
        &[
            "app.db",
            "--every",
            "1s",
            "--prune",
            "1s",
            "--status-file",
            "st.json",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    let mut addr = None;
    wait_for(
        Duration::from_secs(20),
        "the metrics address in the log",
        || {
            addr = metrics_addr(&w);
            addr.is_some()
        },
    );
    let addr = addr.unwrap();
    // Wait for the first snapshot, the prune after it, and a run that found
    // the database unchanged.
    wait_for(
        Duration::from_secs(30),
        "a snapshot and an unchanged run",
        || {
            let s = scrape(&addr);
            sample(&s, "pagesnap_watch_unchanged_total", Some("app")).unwrap_or(0.0) >= 1.0
                && sample(&s, "pagesnap_watch_prunes_total", None).unwrap_or(0.0) >= 1.0
        },
    );
    let s = scrape(&addr);
    assert_eq!(sample(&s, "pagesnap_up", None), Some(1.0));
    assert_eq!(
        sample(&s, "pagesnap_watch_snapshots_total", Some("app")),
        Some(1.0)
    );
    assert_eq!(
        sample(&s, "pagesnap_watch_failures_total", Some("app")),
        Some(0.0)
    );
    let last = sample(
        &s,
        "pagesnap_watch_last_success_timestamp_seconds",
        Some("app"),
    )
    .unwrap();
    let now = Utc::now().timestamp() as f64;
    assert!(
        last >= before - 1.0 && last <= now + 1.0,
        "{before} <= {last} <= {now}"
    );
    let added = sample(&s, "pagesnap_watch_added_bytes_total", Some("app")).unwrap();
    let snaps = fx.snapshots();
    assert_eq!(snaps.len(), 1);
    assert!(added > 0.0);
    assert_eq!(
        sample(&s, "pagesnap_watch_last_snapshot_added_bytes", Some("app")),
        Some(added)
    );
    assert!(sample(&s, "pagesnap_watch_last_run_duration_seconds", Some("app")).unwrap() >= 0.0);
    // The prune after the first snapshot (the store had nothing to free).
    assert_eq!(
        sample(&s, "pagesnap_watch_prune_freed_bytes_total", None),
        Some(0.0)
    );
    assert_eq!(
        sample(&s, "pagesnap_watch_prune_failures_total", None),
        Some(0.0)
    );
    assert!(
        sample(&s, "pagesnap_watch_last_prune_timestamp_seconds", None).unwrap() >= before - 1.0
    );
    // Types are declared, as Prometheus expects.
    let doc = |name: &str| s.docs.get(name).cloned().unwrap_or_default();
    assert!(doc("pagesnap_watch_snapshots_total").contains("Snapshots"));
    let body = ureq::get(&format!("http://{addr}/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(body.contains("# TYPE pagesnap_watch_snapshots_total counter"));
    assert!(body.contains("# TYPE pagesnap_watch_last_success_timestamp_seconds gauge"));
    // Any other path: 404.
    match ureq::get(&format!("http://{addr}/")).call() {
        Err(ureq::Error::StatusCode(404)) => {}
        other => panic!("GET /: {other:?}"),
    }
    assert_eq!(w.terminate(Duration::from_secs(30)).code(), Some(0));
}

#[test]
fn a_metrics_address_in_use_stops_the_watcher_before_it_starts() {
    let fx = Fx::new();
    small_db(&fx, "app.db", 5);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let e = fails(
        fx.cmd()
            .current_dir(fx.dir.path())
            .args([
                "watch",
                "app.db",
                "--status-file",
                "st.json",
                "--metrics-listen",
            ])
            .arg(&addr),
    );
    assert_has(&e, &[&format!("metrics address {addr}: cannot listen")]);
    // Nothing started: no snapshot, no status file.
    assert!(fx.snapshots().is_empty());
    assert!(!fx.path("st.json").exists());
}

//! `pagesnap watch --metrics-listen ADDR`: the watcher's counters in the
//! Prometheus text exposition format (version 0.0.4) on `GET /metrics`.
//!
//! The watcher reports into a [`Metrics`] registry at two places only, when a
//! run's result is recorded ([`Metrics::record_run`]) and when a prune ends
//! ([`Metrics::record_prune`]); everything about metric names, types and the
//! exposition lives here. Counters count since this watcher started, as
//! Prometheus counters do (its `rate()` handles the reset at a restart).
//! The HTTP server is `tiny_http` on a thread of its own: a slow scraper
//! stalls no run, and the registry's lock is held only to copy the numbers.

use anyhow::{anyhow, Result};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What one run of a database did, as the metrics count it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunRecord {
    /// A snapshot was published; it added this many bytes to the store.
    pub bytes_added: Option<u64>,
    /// The database had not changed since its last snapshot: nothing to do.
    pub unchanged: bool,
    /// The run failed (backup, retention or check) or was abandoned; a
    /// snapshot may still have been published (retention or check failed after it).
    pub failed: bool,
    pub duration: Duration,
    /// When the run ended.
    pub at: DateTime<Utc>,
}

#[derive(Clone, Debug, Default)]
struct DbMetrics {
    last_success: Option<DateTime<Utc>>,
    last_snapshot: Option<DateTime<Utc>>,
    last_run_duration: Option<Duration>,
    last_bytes_added: Option<u64>,
    bytes_added: u64,
    snapshots: u64,
    unchanged: u64,
    failures: u64,
}

#[derive(Clone, Debug, Default)]
struct Inner {
    dbs: BTreeMap<String, DbMetrics>,
    prunes: u64,
    prune_failures: u64,
    bytes_freed: u64,
    last_prune: Option<DateTime<Utc>>,
}

/// The watcher's metrics; shared (`Arc`) between the watcher, which records,
/// and the HTTP server's thread, which renders.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics::default())
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        // A panic while holding the lock leaves numbers, not broken invariants.
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// Makes `database`'s series exist (at zero) before its first run, so a
    /// dashboard sees every watched database from the start.
    pub fn register(&self, database: &str) {
        self.with(|m| {
            m.dbs.entry(database.to_string()).or_default();
        });
    }

    /// Records one run of `database`.
    pub fn record_run(&self, database: &str, run: &RunRecord) {
        self.with(|m| {
            let d = m.dbs.entry(database.to_string()).or_default();
            d.last_run_duration = Some(run.duration);
            if let Some(b) = run.bytes_added {
                d.snapshots += 1;
                d.bytes_added += b;
                d.last_bytes_added = Some(b);
                d.last_snapshot = Some(run.at);
            }
            if run.unchanged {
                d.unchanged += 1;
            }
            if run.failed {
                d.failures += 1;
            } else {
                d.last_success = Some(run.at);
            }
        });
    }

    /// Records a prune that ended at `at`: `Some(bytes freed)`, or `None` when it failed.
    pub fn record_prune(&self, bytes_freed: Option<u64>, at: DateTime<Utc>) {
        self.with(|m| match bytes_freed {
            Some(b) => {
                m.prunes += 1;
                m.bytes_freed += b;
                m.last_prune = Some(at);
            }
            None => m.prune_failures += 1,
        });
    }

    /// The exposition document (text format 0.0.4).
    pub fn render(&self) -> String {
        let m = self.with(|m| m.clone());
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, String)>| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        family(
            "pagesnap_up",
            "gauge",
            "1 while the pagesnap watcher runs.",
            vec![(String::new(), "1".into())],
        );
        family(
            "pagesnap_build_info",
            "gauge",
            "The pagesnap version serving these metrics (always 1).",
            vec![(
                format!("{{version=\"{}\"}}", escape(env!("CARGO_PKG_VERSION"))),
                "1".into(),
            )],
        );
        let per_db = |f: &dyn Fn(&DbMetrics) -> Option<String>| -> Vec<(String, String)> {
            m.dbs
                .iter()
                .filter_map(|(name, d)| {
                    f(d).map(|v| (format!("{{database=\"{}\"}}", escape(name)), v))
                })
                .collect()
        };
        let secs = |t: &DateTime<Utc>| format!("{:.3}", t.timestamp_millis() as f64 / 1000.0);
        family(
            "pagesnap_watch_last_success_timestamp_seconds",
            "gauge",
            "When the last run of the database that did not fail ended (a snapshot, or found unchanged), Unix time.",
            per_db(&|d| d.last_success.as_ref().map(secs)),
        );
        family(
            "pagesnap_watch_last_snapshot_timestamp_seconds",
            "gauge",
            "When the last snapshot of the database was published, Unix time.",
            per_db(&|d| d.last_snapshot.as_ref().map(secs)),
        );
        family(
            "pagesnap_watch_last_run_duration_seconds",
            "gauge",
            "How long the last run of the database took.",
            per_db(&|d| {
                d.last_run_duration
                    .map(|x| format!("{:.6}", x.as_secs_f64()))
            }),
        );
        family(
            "pagesnap_watch_last_snapshot_added_bytes",
            "gauge",
            "Bytes the last snapshot of the database added to the store.",
            per_db(&|d| d.last_bytes_added.map(|b| b.to_string())),
        );
        family(
            "pagesnap_watch_added_bytes_total",
            "counter",
            "Bytes the database's snapshots added to the store.",
            per_db(&|d| Some(d.bytes_added.to_string())),
        );
        family(
            "pagesnap_watch_snapshots_total",
            "counter",
            "Snapshots of the database taken.",
            per_db(&|d| Some(d.snapshots.to_string())),
        );
        family(
            "pagesnap_watch_unchanged_total",
            "counter",
            "Runs that found the database unchanged since its last snapshot (skipped).",
            per_db(&|d| Some(d.unchanged.to_string())),
        );
        family(
            "pagesnap_watch_failures_total",
            "counter",
            "Runs of the database that failed or were abandoned.",
            per_db(&|d| Some(d.failures.to_string())),
        );
        family(
            "pagesnap_watch_prunes_total",
            "counter",
            "Prunes that completed.",
            vec![(String::new(), m.prunes.to_string())],
        );
        family(
            "pagesnap_watch_prune_failures_total",
            "counter",
            "Prunes that failed (not those postponed because the store was in use).",
            vec![(String::new(), m.prune_failures.to_string())],
        );
        family(
            "pagesnap_watch_prune_freed_bytes_total",
            "counter",
            "Bytes prunes freed.",
            vec![(String::new(), m.bytes_freed.to_string())],
        );
        family(
            "pagesnap_watch_last_prune_timestamp_seconds",
            "gauge",
            "When the last completed prune ended, Unix time.",
            m.last_prune
                .as_ref()
                .map(|t| (String::new(), secs(t)))
                .into_iter()
                .collect(),
        );
        out
    }

    /// Serves `GET /metrics` on `addr` (`HOST:PORT`; port 0 picks a free port:
    /// [`MetricsServer::addr`] says which) until the returned handle is dropped.
    pub fn serve(self: &Arc<Self>, addr: &str) -> Result<MetricsServer> {
        let sock: SocketAddr = addr
            .to_socket_addrs()
            .map_err(|e| anyhow!("metrics address {addr:?}: not HOST:PORT: {e}"))?
            .next()
            .ok_or_else(|| anyhow!("metrics address {addr:?}: resolves to no address"))?;
        let server = tiny_http::Server::http(sock)
            .map_err(|e| anyhow!("metrics address {addr}: cannot listen: {e}"))?;
        let bound = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| anyhow!("metrics address {addr}: not an IP socket"))?;
        let server = Arc::new(server);
        let (srv, metrics) = (server.clone(), self.clone());
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                for req in srv.incoming_requests() {
                    let _ = respond(&metrics, req);
                }
            })
            .map_err(|e| anyhow!("cannot start the metrics thread: {e}"))?;
        Ok(MetricsServer {
            addr: bound,
            server,
            thread: Some(thread),
        })
    }
}

fn respond(metrics: &Metrics, req: tiny_http::Request) -> std::io::Result<()> {
    use tiny_http::{Header, Method, Response};
    let path = req.url().split('?').next().unwrap_or("");
    let text =
        |s: &str| Header::from_bytes(&b"Content-Type"[..], s.as_bytes()).expect("a valid header");
    match (req.method(), path) {
        (Method::Get | Method::Head, "/metrics") => req.respond(
            Response::from_string(metrics.render())
                .with_header(text("text/plain; version=0.0.4; charset=utf-8")),
        ),
        (Method::Get | Method::Head, _) => req.respond(
            Response::from_string("pagesnap watch: metrics are at /metrics\n")
                .with_status_code(404)
                .with_header(text("text/plain; charset=utf-8")),
        ),
        _ => req.respond(Response::empty(405)),
    }
}

/// The running metrics server; stops when dropped.
pub struct MetricsServer {
    addr: SocketAddr,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// The address it listens on (the chosen port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A label value in the exposition format: `\`, `"` and newlines escaped.
fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_and_prunes_are_counted_and_label_values_escaped() {
        let m = Metrics::new();
        m.register("quiet");
        let t = DateTime::from_timestamp(1_767_225_600, 500_000_000).unwrap();
        let name = "a \"b\"\\c\nd";
        let run = |bytes_added, unchanged, failed, ms| RunRecord {
            bytes_added,
            unchanged,
            failed,
            duration: Duration::from_millis(ms),
            at: t,
        };
        m.record_run(name, &run(Some(100), false, false, 250));
        m.record_run(name, &run(Some(20), false, false, 5));
        m.record_run(name, &run(None, true, false, 1));
        m.record_run(name, &run(None, false, true, 2000));
        m.record_prune(Some(4096), t);
        m.record_prune(None, t);
        let text = m.render();
        let l = r#"{database="a \"b\"\\c\nd"}"#;
        for line in [
            format!("pagesnap_watch_snapshots_total{l} 2"),
            format!("pagesnap_watch_added_bytes_total{l} 120"),
            format!("pagesnap_watch_last_snapshot_added_bytes{l} 20"),
            format!("pagesnap_watch_unchanged_total{l} 1"),
            format!("pagesnap_watch_failures_total{l} 1"),
            format!("pagesnap_watch_last_run_duration_seconds{l} 2.000000"),
            format!("pagesnap_watch_last_success_timestamp_seconds{l} 1767225600.500"),
            "pagesnap_watch_snapshots_total{database=\"quiet\"} 0".to_string(),
            "pagesnap_watch_prunes_total 1".to_string(),
            "pagesnap_watch_prune_failures_total 1".to_string(),
            "pagesnap_watch_prune_freed_bytes_total 4096".to_string(),
            "# TYPE pagesnap_watch_snapshots_total counter".to_string(),
            "pagesnap_up 1".to_string(),
        ] {
            assert!(text.lines().any(|x| x == line), "no {line:?} in\n{text}");
        }
        // A database never successful has no last-success sample (not a 0 that looks like 1970).
        assert!(!text.contains("pagesnap_watch_last_success_timestamp_seconds{database=\"quiet\"}"));
    }

    #[test]
    fn a_busy_address_is_refused_naming_it() {
        let m = Metrics::new();
        let s = m.serve("127.0.0.1:0").unwrap();
        let addr = s.addr().to_string();
        let e = m.serve(&addr).err().unwrap().to_string();
        assert!(e.contains(&addr) && e.contains("cannot listen"), "{e}");
        let e = m.serve("nonsense").err().unwrap().to_string();
        assert!(e.contains("\"nonsense\""), "{e}");
    }
}

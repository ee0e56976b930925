//! The harness of the tests that run `pagesnap watch` as a daemon (watch,
//! status, metrics): the child process, waiting on it, and `pagesnap status`.

use crate::util::*;
use rustix::process::Signal;
use serde_json::Value;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running `pagesnap watch`, its stderr (JSON logs) in a file. Killed when dropped.
pub struct Watch {
    pub child: Child,
    pub log: PathBuf,
}

impl Watch {
    /// `pagesnap --store STORE watch --log-format json ARGS...` in the
    /// fixture's folder, with `envs` set.
    pub fn start(fx: &Fx, args: &[&str], envs: &[(&str, &Path)]) -> Watch {
        let log = fx.path("watch.log");
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_pagesnap"));
        c.env_remove("PAGESNAP_STORE")
            .env_remove("NOTIFY_SOCKET")
            .current_dir(fx.dir.path())
            .arg("--store")
            .arg(&fx.store)
            .arg("watch")
            .args(["--log-format", "json"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap());
        for (k, v) in envs {
            c.env(k, v);
        }
        Watch {
            child: c.spawn().expect("start pagesnap watch"),
            log,
        }
    }

    pub fn signal(&self, sig: Signal) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, sig).unwrap_or_else(|e| panic!("kill {sig:?}: {e}"));
    }

    /// Waits for the watcher to exit (at most `limit`).
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                started.elapsed() < limit,
                "pagesnap watch did not exit within {limit:?}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then waits for the exit (at most `limit`).
    pub fn terminate(&mut self, limit: Duration) -> ExitStatus {
        self.signal(Signal::TERM);
        self.wait(limit)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The JSON log events (one object per line).
    pub fn events(&self) -> Vec<Value> {
        self.log_text()
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("log line {l:?}: {e}")))
            .collect()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `cond` every 10 ms until it holds (panics after `limit`).
pub fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `pagesnap status ARGS... --status-file FILE`: exit code and stdout.
pub fn status_cmd(fx: &Fx, st_path: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = fx
        .cmd()
        .arg("status")
        .args(args)
        .arg("--status-file")
        .arg(st_path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

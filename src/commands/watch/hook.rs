//! The `on_failure` and `on_success` command hooks and systemd's readiness
//! notification.

use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// What a hook is told: the variables of `on_failure` and `on_success`, one
/// list for both (and for prune's `on_failure`); docs/WATCH.md lists them.
pub struct HookEnv<'a> {
    /// The database's name and path; empty for prune.
    pub name: &'a str,
    pub path: &'a str,
    pub event: &'a str,
    /// The message, as logged; empty after a success.
    pub error: &'a str,
    /// Failed runs in a row (0 after a success).
    pub failures: u64,
    pub store: &'a str,
    /// The snapshot taken (id, bytes added), if any.
    pub snapshot: Option<(&'a str, u64)>,
}

impl HookEnv<'_> {
    pub fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("PAGESNAP_DB_NAME", self.name.to_string()),
            ("PAGESNAP_DB_PATH", self.path.to_string()),
            ("PAGESNAP_ERROR", self.error.to_string()),
            ("PAGESNAP_EVENT", self.event.to_string()),
            ("PAGESNAP_FAILURES", self.failures.to_string()),
            ("PAGESNAP_STORE", self.store.to_string()),
            (
                "PAGESNAP_SNAPSHOT",
                self.snapshot
                    .map(|(id, _)| id.to_string())
                    .unwrap_or_default(),
            ),
            (
                "PAGESNAP_BYTES_ADDED",
                self.snapshot
                    .map(|(_, b)| b.to_string())
                    .unwrap_or_default(),
            ),
        ]
    }
}

/// Runs `sh -c cmd` with `env` added, in its own process group, in a thread:
/// the watcher does not wait for it. After `timeout` the whole group is killed.
/// Its output goes to the watcher's stderr; its failure is logged, never fatal.
/// `which` names the hook in the log (`on_failure`, `on_success`).
pub fn spawn(
    which: &'static str,
    cmd: &str,
    timeout: Duration,
    env: Vec<(&'static str, String)>,
) -> Option<JoinHandle<()>> {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(cmd)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::io::stderr()))
        .stderr(Stdio::from(std::io::stderr()))
        .process_group(0);
    let mut child = match c.spawn() {
        Ok(ch) => ch,
        Err(e) => {
            warn!(event = "hook", "{which} command could not be started: {e}");
            return None;
        }
    };
    let cmd = cmd.to_string();
    let handle = std::thread::spawn(move || {
        let started = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => {
                    info!(event = "hook", "{which} command {cmd:?} ran");
                    return;
                }
                Ok(Some(status)) => {
                    warn!(event = "hook", "{which} command {cmd:?} failed: {status}");
                    return;
                }
                Ok(None) if started.elapsed() >= timeout => {
                    // The whole group: `sh -c` may have started children.
                    let group = rustix::process::Pid::from_child(&child);
                    let _ =
                        rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
                    let _ = child.wait();
                    warn!(
                        event = "hook",
                        "{which} command {cmd:?} killed after {}",
                        crate::timearg::format_duration(timeout)
                    );
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => {
                    warn!(event = "hook", "{which} command {cmd:?}: {e}");
                    return;
                }
            }
        }
    });
    Some(handle)
}

/// Sends `state` (`READY=1`, `STOPPING=1` …) to systemd when it asked for
/// notifications (`Type=notify` sets `NOTIFY_SOCKET`); otherwise does nothing.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|sock| {
        let bytes = path.as_encoded_bytes();
        match bytes.strip_prefix(b"@") {
            // An abstract socket (Linux): `@name`.
            Some(name) => abstract_send(&sock, name, state.as_bytes()),
            None => sock.send_to(state.as_bytes(), &path),
        }
    });
    if let Err(e) = sent {
        warn!(
            event = "notify",
            "NOTIFY_SOCKET {}: {e}",
            path.to_string_lossy()
        );
    }
}

#[cfg(target_os = "linux")]
fn abstract_send(sock: &UnixDatagram, name: &[u8], msg: &[u8]) -> std::io::Result<usize> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    sock.send_to_addr(msg, &addr)
}

#[cfg(not(target_os = "linux"))]
fn abstract_send(_: &UnixDatagram, _: &[u8], _: &[u8]) -> std::io::Result<usize> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "abstract sockets exist only on Linux",
    ))
}

/// `CLOCK_MONOTONIC` in microseconds (for `RELOADING=1`'s `MONOTONIC_USEC`).
pub fn monotonic_usec() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process that exists and has not exited (a zombie has exited).
    fn alive(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // The state follows the command name in parentheses.
            Ok(stat) => stat
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
            Err(_) => false,
        }
    }

    #[test]
    fn a_hook_past_its_timeout_is_killed_with_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("child.pid");
        // The hook starts a child of its own, then waits: both must die.
        let cmd = format!("sleep 60 & echo $! > '{}'; wait", pidfile.display());
        let started = Instant::now();
        let handle = spawn("on_failure", &cmd, Duration::from_millis(300), Vec::new()).unwrap();
        handle.join().unwrap();
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(300),
            "returned before its timeout: {took:?}"
        );
        assert!(took < Duration::from_secs(30), "not killed: {took:?}");
        let child: u32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(child) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            !alive(child),
            "the hook's own child {child} outlived the kill"
        );
    }

    #[test]
    fn a_hook_that_ends_in_time_is_not_waited_for_longer() {
        let started = Instant::now();
        let handle = spawn("on_failure", "exit 3", Duration::from_secs(60), Vec::new()).unwrap();
        handle.join().unwrap();
        assert!(started.elapsed() < Duration::from_secs(30));
    }

    #[test]
    fn monotonic_microseconds_follow_the_monotonic_clock() {
        let a = monotonic_usec();
        let t = Instant::now();
        std::thread::sleep(Duration::from_millis(30));
        let b = monotonic_usec();
        let elapsed = t.elapsed().as_micros() as u64;
        assert!(b >= a + 30_000, "{a} -> {b}");
        // Both read CLOCK_MONOTONIC: they agree to within the calls' own time.
        assert!(
            b - a <= elapsed + 50_000,
            "{a} -> {b}, Instant saw {elapsed} us"
        );
    }
}

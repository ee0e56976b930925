//! The `on_failure` command hook and systemd's readiness notification.

use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Runs `sh -c cmd` with `env` added, in its own process group, in a thread:
/// the watcher does not wait for it. After `timeout` the whole group is killed.
/// Its output goes to the watcher's stderr; its failure is logged, never fatal.
pub fn spawn(
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
            warn!(
                event = "hook",
                "on_failure command could not be started: {e}"
            );
            return None;
        }
    };
    let cmd = cmd.to_string();
    let handle = std::thread::spawn(move || {
        let started = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => {
                    info!(event = "hook", "on_failure command {cmd:?} ran");
                    return;
                }
                Ok(Some(status)) => {
                    warn!(
                        event = "hook",
                        "on_failure command {cmd:?} failed: {status}"
                    );
                    return;
                }
                Ok(None) if started.elapsed() >= timeout => {
                    // The whole group: `sh -c` may have started children.
                    // SAFETY: kill(2) with a negated process-group id; no memory involved.
                    unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
                    let _ = child.wait();
                    warn!(
                        event = "hook",
                        "on_failure command {cmd:?} killed after {}",
                        humantime::format_duration(timeout)
                    );
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => {
                    warn!(event = "hook", "on_failure command {cmd:?}: {e}");
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
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

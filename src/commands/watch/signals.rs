//! The watcher's signals: SIGINT/SIGTERM stop it, SIGHUP reloads its config, and
//! every signal (and every run that ends) wakes the main thread at once.

use anyhow::Result;
use chrono::{DateTime, Utc};
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// SIGINT/SIGTERM set `stop`, SIGHUP sets `reload`; every signal also writes to
/// a socket pair so that a sleeping watcher wakes at once (as does every run
/// that ends, through `waker`).
pub(super) struct Signals {
    pub(super) stop: Arc<AtomicBool>,
    pub(super) reload: Arc<AtomicBool>,
    wake: UnixStream,
    waker: UnixStream,
}

impl Signals {
    pub(super) fn install() -> Result<Signals> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let stop = Arc::new(AtomicBool::new(false));
        let reload = Arc::new(AtomicBool::new(false));
        for sig in [SIGTERM, SIGINT] {
            // A second signal while stopping exits at once (status 1).
            signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(&stop))?;
            signal_hook::flag::register(sig, Arc::clone(&stop))?;
        }
        signal_hook::flag::register(SIGHUP, Arc::clone(&reload))?;
        let (wake, waker) = UnixStream::pair()?;
        for sig in [SIGTERM, SIGINT, SIGHUP] {
            signal_hook::low_level::pipe::register(sig, waker.try_clone()?)?;
        }
        // A run's thread must never wait to say it ended.
        waker.set_nonblocking(true)?;
        Ok(Signals {
            stop,
            reload,
            wake,
            waker,
        })
    }

    /// The write end for a run's thread (`None` if it cannot be had: the
    /// watcher then notices the run's end within a minute).
    pub(super) fn waker(&self) -> Option<UnixStream> {
        self.waker.try_clone().ok()
    }

    pub(super) fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Sleeps until `until`, a signal, or a minute (to follow changes of the
    /// wall clock), whichever comes first.
    pub(super) fn sleep_until(&self, until: Option<DateTime<Utc>>) {
        if self.stopping() || self.reload.load(Ordering::SeqCst) {
            return;
        }
        let minute = Duration::from_secs(60);
        let wait = until
            .map(|t| (t - Utc::now()).to_std().unwrap_or(Duration::ZERO))
            .unwrap_or(minute)
            .min(minute);
        if wait < Duration::from_millis(1) {
            return;
        }
        if self.wake.set_read_timeout(Some(wait)).is_ok() {
            let mut buf = [0u8; 64];
            let _ = (&self.wake).read(&mut buf);
        } else {
            std::thread::sleep(wait);
        }
    }
}

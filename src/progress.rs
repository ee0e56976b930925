//! Progress bars for backup, restore and prune: drawn on stderr, only for work
//! that lasts over a second, only on a terminal (stdout and stderr) unless
//! `--progress` asks, and never mixed into `--json` output (which is on stdout).

use crate::cli::Global;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pagesnap_core::{Progress, Store};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Work shorter than this gets no bar: it would only flicker.
const SHOW_AFTER: Duration = Duration::from_secs(1);

/// A bar that appears once its operation has run for [`SHOW_AFTER`].
pub struct Bar(Option<ProgressBar>);

impl Bar {
    pub fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Whether this invocation shows bars.
fn wanted(g: &Global) -> bool {
    g.progress || (!g.json && std::io::stdout().is_terminal() && std::io::stderr().is_terminal())
}

/// Attaches a bar labelled `what` to the store's long operations.
pub fn attach(store: Store, g: &Global, what: &str) -> (Store, Bar) {
    if !wanted(g) {
        return (store, Bar(None));
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>8} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    let started = Instant::now();
    let shown = Arc::new(AtomicBool::new(false));
    let b = bar.clone();
    let store = store.with_progress(Progress::new(move |done, total| {
        if !shown.load(Ordering::Relaxed) {
            if started.elapsed() < SHOW_AFTER {
                return;
            }
            shown.store(true, Ordering::Relaxed);
            b.set_draw_target(ProgressDrawTarget::stderr());
        }
        b.set_length(total.max(done));
        b.set_position(done);
    }));
    (store, Bar(Some(bar)))
}

//! Progress of long operations (capture, restore, prune), reported to whoever
//! displays it. The library only calls; drawing bars is the command line's job.

use std::sync::Arc;

/// Called with (bytes done, bytes in all) as an operation advances; both may be
/// estimates (a database can grow during its capture). Cheap to clone.
#[derive(Clone)]
pub struct Progress(Arc<dyn Fn(u64, u64) + Send + Sync>);

impl Progress {
    pub fn new(report: impl Fn(u64, u64) + Send + Sync + 'static) -> Self {
        Progress(Arc::new(report))
    }

    pub(crate) fn report(&self, done: u64, total: u64) {
        (self.0)(done, total)
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress")
    }
}

/// Reports to `p`, if there is one.
pub(crate) fn report(p: Option<&Progress>, done: u64, total: u64) {
    if let Some(p) = p {
        p.report(done, total);
    }
}

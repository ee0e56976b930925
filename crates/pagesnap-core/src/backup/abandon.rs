//! Abandoning a backup from another thread (`pagesnap watch` gives each capture
//! a deadline; a capture stuck on its source, e.g. a hung network mount, may
//! never return from a system call).
//!
//! A backup run with [`crate::Store::backup_connection_abandonable`] *commits*
//! before it writes the first object that can make its chunks reachable (its
//! index, then its page map and manifest). [`Abandon::abandon`] and that commit
//! race on one atomic: exactly one wins. Once abandoned, the backup never
//! publishes, and its store lock is released at once: what it may still write
//! when its system call returns is what a killed backup leaves, packs that no
//! index names, which prune deletes. So a stuck backup keeps no prune waiting.

use crate::store::lock::LockGuard;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard};

const RUNNING: u8 = 0;
const COMMITTED: u8 = 1;
const ABANDONED: u8 = 2;

/// The handle shared by a backup and the thread that may abandon it.
#[derive(Debug, Default)]
pub struct Abandon {
    state: AtomicU8,
    /// The backup's shared store lock, so that abandoning can release it.
    lock: Mutex<Option<LockGuard>>,
}

impl Abandon {
    pub fn new() -> Abandon {
        Abandon::default()
    }

    fn slot(&self) -> MutexGuard<'_, Option<LockGuard>> {
        // A panic while holding it left an `Option`: nothing to repair.
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Abandons the backup unless it has already committed to publishing.
    /// Returns true when it is abandoned (by this call or an earlier one): it will
    /// never publish a snapshot, and its store lock is released now. False: it
    /// is publishing (or has published) and must be waited for.
    pub fn abandon(&self) -> bool {
        match self
            .state
            .compare_exchange(RUNNING, ABANDONED, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) | Err(ABANDONED) => {
                drop(self.slot().take());
                true
            }
            Err(_) => false,
        }
    }

    pub fn is_abandoned(&self) -> bool {
        self.state.load(Ordering::SeqCst) == ABANDONED
    }

    /// The backup's side of the race: true when it may publish (it can then no
    /// longer be abandoned), false when it was abandoned.
    pub(crate) fn commit(&self) -> bool {
        self.state
            .compare_exchange(RUNNING, COMMITTED, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// Makes `lock` the backup's store lock, held here until [`Abandon::release`]
    /// or [`Abandon::abandon`]. Returns false, releasing it, when the backup was
    /// already abandoned.
    pub fn hold(&self, lock: LockGuard) -> bool {
        let mut slot = self.slot();
        // Checked under the slot's mutex, which `abandon` takes after setting
        // the state: either it finds this lock in the slot or this sees the state.
        if self.is_abandoned() {
            drop(lock);
            return false;
        }
        *slot = Some(lock);
        true
    }

    pub fn holds_lock(&self) -> bool {
        self.slot().is_some()
    }

    /// Runs `f` with the held lock (`None` when none is held). For work after the
    /// backup published (retention): the mutex is held while `f` runs.
    pub fn with_lock<R>(&self, f: impl FnOnce(Option<&LockGuard>) -> R) -> R {
        f(self.slot().as_ref())
    }

    /// Releases the held lock.
    pub fn release(&self) {
        drop(self.slot().take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abandon_and_commit_exclude_each_other() {
        let a = Abandon::new();
        assert!(a.commit());
        assert!(!a.abandon(), "a committed backup cannot be abandoned");
        assert!(!a.is_abandoned());

        let b = Abandon::new();
        assert!(b.abandon());
        assert!(b.abandon(), "abandoning twice says so twice");
        assert!(b.is_abandoned());
        assert!(!b.commit(), "an abandoned backup never publishes");
    }

    #[test]
    fn abandoning_releases_the_store_lock() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::init(dir.path(), &crate::InitOptions::default()).unwrap();
        let locks = || std::fs::read_dir(dir.path().join("locks")).unwrap().count();
        let a = Abandon::new();
        assert!(a.hold(
            store
                .lock(false, "test", std::time::Duration::ZERO)
                .unwrap()
        ));
        assert!(a.holds_lock());
        assert_eq!(locks(), 1);
        assert!(a.abandon());
        assert_eq!(locks(), 0, "released by abandon");
        // A lock taken after the abandonment is released at once.
        assert!(!a.hold(
            store
                .lock(false, "test", std::time::Duration::ZERO)
                .unwrap()
        ));
        assert_eq!(locks(), 0);
        // Once committed, abandon leaves the lock alone; release drops it.
        let c = Abandon::new();
        assert!(c.hold(
            store
                .lock(false, "test", std::time::Duration::ZERO)
                .unwrap()
        ));
        assert!(c.commit());
        assert!(!c.abandon());
        assert_eq!(locks(), 1);
        c.with_lock(|l| assert!(l.is_some()));
        c.release();
        assert_eq!(locks(), 0);
    }
}

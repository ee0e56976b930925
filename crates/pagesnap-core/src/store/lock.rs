//! Store locks: which processes are using the store, so that `prune` never deletes
//! a chunk a running backup is about to reuse.
//!
//! A lock is an object `locks/<id>` naming its owner (host, pid, command, time).
//! Backups, restores and forgets take *shared* locks; prune takes an *exclusive*
//! one. Taking a lock writes it first and then lists the others: of two processes
//! racing, at least one sees the other and backs off, on a local disk as on object
//! storage (which has read-after-write consistency). A shared lock waits (up to a
//! limit) for an exclusive one to go; an exclusive lock never waits.
//!
//! A held lock is *refreshed* every [`REFRESH_EVERY`] by a thread of its holder
//! (as restic does): a new lock object with the refresh time is written, then the
//! old one is removed, so a first backup to S3 or a `verify --read-data` that runs
//! for a day keeps a fresh lock throughout.
//!
//! A lock is *stale* when its process is gone (same host, no such pid) or when it
//! was last refreshed more than [`STALE_AFTER`] ago. A lock written by a pagesnap
//! that did not refresh (it carries no refresh time) is judged by its age against
//! [`STALE_AFTER_UNREFRESHED`]. Stale locks are never removed silently: `pagesnap
//! unlock` removes them.

use crate::backend::{Backend, PutMode};
use crate::format::envelope::{self, Kind};
use crate::types::Id;
use crate::{Error, LockConflict, Result};
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

pub const LOCKS: &str = "locks/";
/// How often a held lock is refreshed.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);
/// A lock not refreshed for this long is stale whatever its owner: six missed
/// refreshes (a suspended laptop, a network outage) before another machine may
/// remove it.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);
/// A lock without a refresh time (written by a pagesnap that did not refresh)
/// older than this is stale whatever its owner.
pub const STALE_AFTER_UNREFRESHED: Duration = Duration::from_secs(6 * 3600);

/// Who holds a lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub exclusive: bool,
    pub host: String,
    pub pid: u32,
    pub command: String,
    pub time_unix: i64,
    /// Makes every lock object distinct.
    pub nonce: u64,
    /// When the holder last refreshed the lock (Unix seconds); stored as an
    /// extension after the fields above, so pagesnap before refreshes reads such
    /// locks unchanged (postcard ignores bytes after a value). `None` in locks of
    /// those versions.
    #[serde(skip)]
    pub refreshed_unix: Option<i64>,
}

impl LockInfo {
    pub fn time(&self) -> DateTime<Utc> {
        Utc.timestamp_opt(self.time_unix, 0)
            .single()
            .unwrap_or_default()
    }

    /// Whether the owner is certainly gone: a dead pid on this host, or a lock
    /// not refreshed for [`STALE_AFTER`] (unrefreshed locks: older than
    /// [`STALE_AFTER_UNREFRESHED`]).
    pub fn is_stale(&self, now: DateTime<Utc>) -> bool {
        let (since, limit) = match self.refreshed_unix {
            Some(r) => (r, STALE_AFTER),
            None => (self.time_unix, STALE_AFTER_UNREFRESHED),
        };
        if now.timestamp() - since > limit.as_secs() as i64 {
            return true;
        }
        self.host == host() && !pid_alive(self.pid)
    }

    /// The lock object: the fields, then the refresh time (i64 LE) when there is one.
    pub fn encode(&self) -> Vec<u8> {
        match self.refreshed_unix {
            Some(r) => envelope::encode(Kind::Lock, &(self, r)),
            None => envelope::encode(Kind::Lock, self),
        }
    }

    /// Decodes a lock object of any version.
    pub fn decode(bytes: &[u8]) -> crate::format::Result<LockInfo> {
        let raw = envelope::open(Kind::Lock, bytes)?;
        let (mut info, rest): (LockInfo, &[u8]) = postcard::take_from_bytes(&raw)?;
        if !rest.is_empty() {
            let (r, _): (i64, &[u8]) = postcard::take_from_bytes(rest)?;
            info.refreshed_unix = Some(r);
        }
        Ok(info)
    }

    pub fn describe(&self) -> String {
        format!(
            "{} lock of `{}` (pid {} on {}, since {})",
            if self.exclusive {
                "an exclusive"
            } else {
                "a shared"
            },
            self.command,
            self.pid,
            self.host,
            self.time().format("%Y-%m-%d %H:%M:%S UTC")
        )
    }
}

fn host() -> String {
    hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Whether a process with this pid exists on this machine. Linux exposes it as
/// /proc/<pid>; elsewhere nothing is known and the age rule alone applies.
fn pid_alive(pid: u32) -> bool {
    if !std::path::Path::new("/proc/self").exists() {
        return true;
    }
    std::path::Path::new("/proc").join(pid.to_string()).exists()
}

/// A lock this process holds, refreshed while it is held; removed when dropped.
pub struct LockGuard {
    backend: Arc<dyn Backend>,
    /// The current lock object's key (a refresh replaces it).
    key: Arc<Mutex<String>>,
    pub info: LockInfo,
    refresher: Option<Refresher>,
}

/// The thread that refreshes a held lock, and the channel that stops it.
struct Refresher {
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LockGuard({})", self.key())
    }
}

impl LockGuard {
    /// The key of the lock object that stands for this lock now.
    pub fn key(&self) -> String {
        self.key.lock().map(|k| k.clone()).unwrap_or_default()
    }

    /// Starts refreshing the lock every `every`: a new object, then the old one
    /// removed (never the other way round: the lock is never absent). A refresh
    /// that fails is tried again at the next turn; the old object stays meanwhile.
    fn refresh_every(&mut self, every: Duration) {
        let (stop, stopped) = mpsc::channel::<()>();
        let (backend, key, mut info) = (self.backend.clone(), self.key.clone(), self.info.clone());
        let thread = std::thread::spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                info.refreshed_unix = Some(Utc::now().timestamp());
                let bytes = info.encode();
                let new_key = format!("{LOCKS}{}", Id::of_object(&bytes).to_hex());
                // Refreshed within the same second: the same object, nothing to do
                // (and deleting the "old" key would remove the lock itself).
                if key.lock().map_or(true, |k| *k == new_key) {
                    continue;
                }
                if backend.put(&new_key, &bytes, PutMode::Overwrite).is_err() {
                    continue;
                }
                let Ok(mut k) = key.lock() else { return };
                let old = std::mem::replace(&mut *k, new_key);
                drop(k);
                let _ = backend.delete(&old);
            }
        });
        self.refresher = Some(Refresher { stop, thread });
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        // Stop the refresher first, so that no refresh writes a lock after this.
        if let Some(r) = self.refresher.take() {
            drop(r.stop);
            let _ = r.thread.join();
        }
        // If this fails the lock stays behind as stale and `pagesnap unlock` removes it.
        let _ = self.backend.delete(&self.key());
    }
}

/// Every readable lock in the store, with its key. Unreadable lock objects are
/// reported as stale locks of an unknown owner.
pub fn list(backend: &dyn Backend) -> Result<Vec<(String, Option<LockInfo>)>> {
    list_except(backend, None)
}

/// Like [`list`], without reading the lock `own` (the caller's: one request less
/// per command on object storage).
fn list_except(
    backend: &dyn Backend,
    own: Option<&str>,
) -> Result<Vec<(String, Option<LockInfo>)>> {
    let mut out = Vec::new();
    for o in backend.list(LOCKS)? {
        if Some(o.key.as_str()) == own {
            continue;
        }
        let info = match backend.get(&o.key) {
            Ok(bytes) => LockInfo::decode(&bytes).ok(),
            // Removed between the listing and the read: its owner released it.
            Err(crate::backend::BackendError::NotFound { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        out.push((o.key, info));
    }
    Ok(out)
}

/// Takes a lock, refreshed every [`REFRESH_EVERY`] while held. A shared lock
/// waits up to `wait` for exclusive locks of live processes to go; a conflict
/// with a stale lock fails at once (run `unlock`).
pub fn acquire(
    backend: &Arc<dyn Backend>,
    exclusive: bool,
    command: &str,
    wait: Duration,
) -> Result<LockGuard> {
    acquire_refreshing(backend, exclusive, command, wait, REFRESH_EVERY)
}

fn acquire_refreshing(
    backend: &Arc<dyn Backend>,
    exclusive: bool,
    command: &str,
    wait: Duration,
    refresh: Duration,
) -> Result<LockGuard> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(50);
    loop {
        let info = LockInfo {
            exclusive,
            host: host(),
            pid: std::process::id(),
            command: command.to_string(),
            time_unix: Utc::now().timestamp(),
            nonce: Utc::now().timestamp_subsec_nanos() as u64 ^ ((std::process::id() as u64) << 32),
            refreshed_unix: Some(Utc::now().timestamp()),
        };
        let bytes = info.encode();
        let key = format!("{LOCKS}{}", Id::of_object(&bytes).to_hex());
        // The key is the hash of content that holds a nonce, the pid and the time:
        // no other lock can have it, so a plain put (no existence check) will do.
        backend.put(&key, &bytes, PutMode::Overwrite)?;
        let mut guard = LockGuard {
            backend: backend.clone(),
            key: Arc::new(Mutex::new(key.clone())),
            info,
            refresher: None,
        };
        let now = Utc::now();
        let conflict = list_except(backend.as_ref(), Some(&key))?
            .into_iter()
            .find(|(_, other)| match other {
                Some(o) => exclusive || o.exclusive,
                None => true,
            });
        let Some((other_key, other)) = conflict else {
            guard.refresh_every(refresh);
            return Ok(guard);
        };
        drop(guard);
        let location = backend.location();
        match other {
            None => {
                return Err(Error::Locked {
                    location,
                    holder: format!("an unreadable lock object {other_key}"),
                    conflict: LockConflict::Unreadable,
                })
            }
            Some(o) if o.is_stale(now) => {
                // Its owner may have released it and exited between our reading
                // it and checking its pid: only a lock that outlives its process
                // is stale.
                if backend.size(&other_key)?.is_none() {
                    continue;
                }
                return Err(Error::Locked {
                    location,
                    holder: format!(
                        "stale {}",
                        o.describe()
                            .trim_start_matches("a ")
                            .trim_start_matches("an ")
                    ),
                    conflict: LockConflict::Stale,
                });
            }
            Some(o) => {
                if exclusive || started.elapsed() >= wait {
                    return Err(Error::Locked {
                        location,
                        holder: o.describe(),
                        conflict: if exclusive {
                            LockConflict::Exclusive
                        } else {
                            LockConflict::Waited(wait)
                        },
                    });
                }
                std::thread::sleep(pause.min(wait.saturating_sub(started.elapsed())));
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Removes stale locks (all locks with `all`); returns what it removed.
pub fn unlock(backend: &dyn Backend, all: bool) -> Result<Vec<(String, Option<LockInfo>)>> {
    let now = Utc::now();
    let mut removed = Vec::new();
    for (key, info) in list(backend)? {
        let stale = info.as_ref().is_none_or(|i| i.is_stale(now));
        if all || stale {
            backend.delete(&key)?;
            removed.push((key, info));
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::LocalBackend;

    fn backend() -> (tempfile::TempDir, Arc<dyn Backend>) {
        let dir = tempfile::tempdir().unwrap();
        let b: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path()));
        (dir, b)
    }

    #[test]
    fn shared_locks_coexist_and_exclusive_excludes() {
        let (_d, b) = backend();
        let s1 = acquire(&b, false, "backup", Duration::ZERO).unwrap();
        let s2 = acquire(&b, false, "backup", Duration::ZERO).unwrap();
        let err = acquire(&b, true, "prune", Duration::ZERO)
            .unwrap_err()
            .to_string();
        assert!(err.contains("shared lock of `backup`"), "{err}");
        drop((s1, s2));
        let x = acquire(&b, true, "prune", Duration::ZERO).unwrap();
        let err = acquire(&b, false, "backup", Duration::from_millis(200))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("exclusive lock of `prune`") && err.contains("gave up"),
            "{err}"
        );
        drop(x);
        assert!(
            list(b.as_ref()).unwrap().is_empty(),
            "released locks are removed"
        );
    }

    #[test]
    fn a_shared_lock_waits_for_an_exclusive_one_to_go() {
        let (_d, b) = backend();
        let x = acquire(&b, true, "prune", Duration::ZERO).unwrap();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(x);
        });
        let started = Instant::now();
        let s = acquire(&b, false, "backup", Duration::from_secs(10)).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(250));
        assert!(!s.info.exclusive);
        t.join().unwrap();
    }

    #[test]
    fn stale_locks_block_until_unlocked() {
        let (_d, b) = backend();
        let dead = LockInfo {
            exclusive: true,
            host: host(),
            pid: u32::MAX - 7, // no such process
            command: "prune".into(),
            time_unix: Utc::now().timestamp(),
            nonce: 1,
            refreshed_unix: None,
        };
        assert!(dead.is_stale(Utc::now()));
        b.put("locks/dead", &dead.encode(), PutMode::Create)
            .unwrap();
        let err = acquire(&b, false, "backup", Duration::from_secs(5)).unwrap_err();
        assert!(
            matches!(
                &err,
                Error::Locked { holder, conflict: LockConflict::Stale, .. } if holder.starts_with("stale")
            ),
            "{err}"
        );
        assert!(err.to_string().ends_with("; its process is gone"), "{err}");
        // A live lock is not removed by a plain unlock.
        let live = acquire(&b, false, "restore", Duration::ZERO);
        assert!(live.is_err(), "still blocked by the stale exclusive lock");
        let removed = unlock(b.as_ref(), false).unwrap();
        assert_eq!(removed.len(), 1);
        let live = acquire(&b, false, "restore", Duration::ZERO).unwrap();
        assert!(
            unlock(b.as_ref(), false).unwrap().is_empty(),
            "a live lock is not stale"
        );
        assert_eq!(list(b.as_ref()).unwrap().len(), 1);
        drop(live);
    }

    #[test]
    fn old_locks_are_stale_whoever_holds_them() {
        let old = LockInfo {
            exclusive: false,
            host: "elsewhere".into(),
            pid: 1,
            command: "backup".into(),
            time_unix: Utc::now().timestamp() - STALE_AFTER_UNREFRESHED.as_secs() as i64 - 1,
            nonce: 0,
            refreshed_unix: None,
        };
        assert!(old.is_stale(Utc::now()));
        let fresh = LockInfo {
            time_unix: Utc::now().timestamp(),
            ..old
        };
        assert!(
            !fresh.is_stale(Utc::now()),
            "another host's recent lock is not ours to judge"
        );
    }

    #[test]
    fn staleness_is_judged_by_the_last_refresh() {
        let now = Utc::now().timestamp();
        let long = LockInfo {
            exclusive: false,
            host: "elsewhere".into(),
            pid: 1,
            command: "verify".into(),
            // Started a day ago: a long `verify --read-data` or a first upload.
            time_unix: now - 24 * 3600,
            nonce: 0,
            refreshed_unix: Some(now - 60),
        };
        assert!(!long.is_stale(Utc::now()), "refreshed a minute ago");
        let missed = LockInfo {
            refreshed_unix: Some(now - STALE_AFTER.as_secs() as i64 - 1),
            ..long.clone()
        };
        assert!(missed.is_stale(Utc::now()), "missed six refreshes");
        // The refresh time survives encoding; a lock without one reads as before.
        assert_eq!(LockInfo::decode(&long.encode()).unwrap(), long);
        let old = LockInfo {
            refreshed_unix: None,
            ..long.clone()
        };
        assert_eq!(LockInfo::decode(&old.encode()).unwrap(), old);
        // pagesnap before refreshes decoded locks with envelope::decode: it still can.
        let as_before: LockInfo = envelope::decode(Kind::Lock, &long.encode()).unwrap();
        assert_eq!(as_before, old);
    }

    #[test]
    fn a_held_lock_is_refreshed_and_unlock_leaves_it() {
        let (_d, b) = backend();
        let g = acquire_refreshing(
            &b,
            false,
            "verify",
            Duration::ZERO,
            Duration::from_millis(50),
        )
        .unwrap();
        let first = g.key();
        // Refresh times are in seconds: past the next second, the object changed.
        std::thread::sleep(Duration::from_millis(1300));
        let locks = list(b.as_ref()).unwrap();
        assert_eq!(locks.len(), 1, "the old object is removed: {locks:?}");
        let (key, info) = &locks[0];
        assert_ne!(*key, first, "a refresh writes a new object");
        assert_eq!(*key, g.key());
        let info = info.clone().unwrap();
        assert_eq!(
            (info.time_unix, info.nonce),
            (g.info.time_unix, g.info.nonce)
        );
        assert!(info.refreshed_unix.unwrap() >= g.info.time_unix);
        assert!(unlock(b.as_ref(), false).unwrap().is_empty());
        drop(g);
        assert!(
            list(b.as_ref()).unwrap().is_empty(),
            "released: no lock left"
        );
    }
}

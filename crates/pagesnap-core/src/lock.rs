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
//! A lock is *stale* when its process is gone (same host, no such pid) or when it
//! is older than [`STALE_AFTER`] (a lock is refreshed by nothing, so long-running
//! commands are expected to take less). Stale locks are never removed silently:
//! `pagesnap unlock` removes them.

use crate::backend::{Backend, PutMode};
use crate::format::envelope::{self, Kind};
use crate::types::Id;
use crate::{Error, Result};
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const LOCKS: &str = "locks/";
/// A lock older than this is stale whatever its owner.
pub const STALE_AFTER: Duration = Duration::from_secs(6 * 3600);

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
}

impl LockInfo {
    pub fn time(&self) -> DateTime<Utc> {
        Utc.timestamp_opt(self.time_unix, 0)
            .single()
            .unwrap_or_default()
    }

    /// Whether the owner is certainly gone: a dead pid on this host, or too old.
    pub fn is_stale(&self, now: DateTime<Utc>) -> bool {
        let age = now.timestamp() - self.time_unix;
        if age > STALE_AFTER.as_secs() as i64 {
            return true;
        }
        self.host == host() && !pid_alive(self.pid)
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

/// A lock this process holds; removed when dropped.
pub struct LockGuard {
    backend: Arc<dyn Backend>,
    key: String,
    pub info: LockInfo,
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LockGuard({})", self.key)
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        // If this fails the lock stays behind as stale and `pagesnap unlock` removes it.
        let _ = self.backend.delete(&self.key);
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
            Ok(bytes) => envelope::decode::<LockInfo>(Kind::Lock, &bytes).ok(),
            // Removed between the listing and the read: its owner released it.
            Err(crate::backend::BackendError::NotFound { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        out.push((o.key, info));
    }
    Ok(out)
}

/// Takes a lock. A shared lock waits up to `wait` for exclusive locks of live
/// processes to go; a conflict with a stale lock fails at once (run `unlock`).
pub fn acquire(
    backend: &Arc<dyn Backend>,
    exclusive: bool,
    command: &str,
    wait: Duration,
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
        };
        let bytes = envelope::encode(Kind::Lock, &info);
        let key = format!("{LOCKS}{}", Id::of_object(&bytes).to_hex());
        // The key is the hash of content that holds a nonce, the pid and the time:
        // no other lock can have it, so a plain put (no existence check) will do.
        backend.put(&key, &bytes, PutMode::Overwrite)?;
        let guard = LockGuard {
            backend: backend.clone(),
            key: key.clone(),
            info,
        };
        let now = Utc::now();
        let conflict = list_except(backend.as_ref(), Some(&key))?
            .into_iter()
            .find(|(_, other)| match other {
                Some(o) => exclusive || o.exclusive,
                None => true,
            });
        let Some((other_key, other)) = conflict else {
            return Ok(guard);
        };
        drop(guard);
        let location = backend.location();
        match other {
            None => {
                return Err(Error::Locked {
                    location,
                    holder: format!("an unreadable lock object {other_key}"),
                    hint: "run `pagesnap unlock` to remove stale locks".into(),
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
                    hint: "its process is gone: run `pagesnap unlock` to remove it".into(),
                });
            }
            Some(o) => {
                if exclusive || started.elapsed() >= wait {
                    return Err(Error::Locked {
                        location,
                        holder: o.describe(),
                        hint: if exclusive {
                            "wait until it ends, then try again".into()
                        } else {
                            format!("gave up after waiting {:?}", wait)
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
        };
        assert!(dead.is_stale(Utc::now()));
        b.put(
            "locks/dead",
            &envelope::encode(Kind::Lock, &dead),
            PutMode::Create,
        )
        .unwrap();
        let err = acquire(&b, false, "backup", Duration::from_secs(5))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("stale") && err.contains("pagesnap unlock"),
            "{err}"
        );
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
            time_unix: Utc::now().timestamp() - STALE_AFTER.as_secs() as i64 - 1,
            nonce: 0,
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
}

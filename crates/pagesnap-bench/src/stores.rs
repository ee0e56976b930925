//! Store configurations under test, each in its own temporary store.

use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use pagesnap_core::{BackupOptions, InitOptions, Store};
use std::path::Path;
use std::time::Duration;

/// One configuration: the store parameters that decide what a snapshot costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    pub chunk_pages: u32,
    pub zstd_level: i32,
    pub dictionary: bool,
    /// A store made with deltas (`init --deltas`).
    pub deltas: bool,
    /// An encrypted store (`init --encrypt`; its key's Argon2id parameters are
    /// the cheapest: the bench measures snapshots, not unlocking).
    pub encrypted: bool,
}

impl Config {
    /// Short name, also the store's directory: `c1-z3`, `c1-z3-nodict`,
    /// `c1-z3-deltas`, `c1-z3-deltas-nodict`, `c1-z3-enc`.
    pub fn key(&self) -> String {
        let dict = if self.dictionary { "" } else { "-nodict" };
        let deltas = if self.deltas { "-deltas" } else { "" };
        let enc = if self.encrypted { "-enc" } else { "" };
        format!(
            "c{}-z{}{deltas}{dict}{enc}",
            self.chunk_pages, self.zstd_level
        )
    }

    pub fn label(&self) -> String {
        let dict = if self.dictionary { "" } else { " no dict" };
        let deltas = if self.deltas { " deltas" } else { "" };
        let enc = if self.encrypted { " encrypted" } else { "" };
        format!(
            "chunk {} zstd {}{deltas}{dict}{enc}",
            self.chunk_pages, self.zstd_level
        )
    }
}

/// Parses `--configs`: entries `CHUNK_PAGES[:ZSTD_LEVEL][:nodict][:deltas][:enc]`
/// (level 3, dictionaries on, deltas and encryption off, the store's defaults,
/// unless given).
pub fn parse_configs(items: &[String]) -> Result<Vec<Config>> {
    let mut out: Vec<Config> = Vec::new();
    for item in items {
        let bad = |why: &str| anyhow!("invalid --configs entry {item:?}: {why}");
        let mut parts: Vec<&str> = item.trim().split(':').map(str::trim).collect();
        let encrypted = parts.last() == Some(&"enc");
        if encrypted {
            parts.pop();
        }
        let deltas = parts.last() == Some(&"deltas");
        if deltas {
            parts.pop();
        }
        let dictionary = match parts.last() {
            Some(&"nodict") => {
                parts.pop();
                false
            }
            Some(&"dict") => {
                parts.pop();
                true
            }
            _ => true,
        };
        let (pages, level) = match parts[..] {
            [p] => (p, "3"),
            [p, l] => (p, l),
            _ => {
                return Err(bad(
                    "use CHUNK_PAGES[:ZSTD_LEVEL][:nodict][:deltas], such as 4, 1:9, 1:3:nodict or 1:deltas",
                ))
            }
        };
        let chunk_pages: u32 = pages.parse().map_err(|_| {
            bad("use CHUNK_PAGES[:ZSTD_LEVEL][:nodict][:deltas], such as 4, 1:9, 1:3:nodict or 1:deltas")
        })?;
        if !chunk_pages.is_power_of_two() || chunk_pages > 256 {
            return Err(bad("chunk pages must be a power of two from 1 to 256"));
        }
        let zstd_level: i32 = level
            .parse()
            .map_err(|_| bad("the zstd level must be a number from 1 to 22"))?;
        if !(1..=22).contains(&zstd_level) {
            return Err(bad("the zstd level must be a number from 1 to 22"));
        }
        let c = Config {
            chunk_pages,
            zstd_level,
            dictionary,
            deltas,
            encrypted,
        };
        if !out.contains(&c) {
            out.push(c);
        }
    }
    if out.is_empty() {
        bail!("--configs is empty: give at least one configuration, such as 1");
    }
    Ok(out)
}

/// What one backup into one store did.
#[derive(Clone, Debug)]
pub struct Record {
    pub bytes_added: u64,
    pub metadata_bytes: u64,
    pub new_chunks: u64,
    pub new_base: bool,
    pub duration: Duration,
    /// Every object of the store after this backup.
    pub stored: u64,
    pub image_hash: [u8; 32],
}

/// Bytes of a store by object kind.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stored {
    pub packs: u64,
    pub index: u64,
    pub maps: u64,
    pub snapshots: u64,
    /// Trained zstd dictionaries.
    pub dicts: u64,
    /// `config` and anything unexpected.
    pub other: u64,
}

impl Stored {
    pub fn total(&self) -> u64 {
        self.packs + self.index + self.maps + self.snapshots + self.dicts + self.other
    }
}

pub struct BenchStore {
    pub config: Config,
    pub store: Store,
    pub records: Vec<Record>,
}

/// Snapshot time of step `step`: the history spans `steps × 10` minutes from `t0`.
pub fn step_time(t0: DateTime<Utc>, step: u32) -> DateTime<Utc> {
    t0 + ChronoDuration::minutes(10 * step as i64)
}

impl BenchStore {
    pub fn create(dir: &Path, config: Config) -> Result<BenchStore> {
        let opts = InitOptions {
            chunk_pages: config.chunk_pages,
            zstd_level: config.zstd_level,
            dictionary: config.dictionary,
            deltas: config.deltas,
            ..InitOptions::default()
        };
        let store = match config.encrypted {
            false => Store::init(dir, &opts)?,
            true => Store::init_encrypted_backend(
                std::sync::Arc::new(pagesnap_core::backend::LocalBackend::new(dir)),
                &opts,
                b"pagesnap bench",
                pagesnap_core::crypto::KdfParams::INSECURE_FOR_TESTS,
            )?,
        };
        Ok(BenchStore {
            config,
            store,
            records: Vec::new(),
        })
    }

    /// Snapshots `db` at `time` and records what it cost.
    pub fn backup(&mut self, db: &Path, time: DateTime<Utc>) -> Result<&Record> {
        // An encrypted store's report counts plaintext bytes: its records take
        // what the backup added to the store as stored (sealed) instead.
        let before = match self.config.encrypted {
            true => Some(self.stored()?),
            false => None,
        };
        let r = self
            .store
            .backup_path(
                db,
                &BackupOptions {
                    name: Some("bench".into()),
                    time: Some(time),
                    ..BackupOptions::default()
                },
            )
            .with_context(|| format!("configuration {}", self.config.key()))?;
        let after = self.stored()?;
        let stored = after.total();
        let (bytes_added, metadata_bytes) = match before {
            Some(b) => {
                let meta = |s: &Stored| s.index + s.maps + s.snapshots + s.other;
                // As a backup reports them: everything added, and the
                // metadata's share of it.
                (
                    after.total().saturating_sub(b.total()),
                    meta(&after).saturating_sub(meta(&b)),
                )
            }
            None => (r.bytes_added, r.metadata_bytes),
        };
        self.records.push(Record {
            bytes_added,
            metadata_bytes,
            new_chunks: r.stats.new_chunks,
            new_base: r.new_base,
            duration: r.duration,
            stored,
            image_hash: r.image_hash,
        });
        Ok(self.records.last().expect("just pushed"))
    }

    /// The store's size: the sum of the sizes of all its objects as stored
    /// (sealed, for an encrypted store).
    pub fn stored(&self) -> Result<Stored> {
        let mut s = Stored::default();
        for o in self.store.stored_backend().list("")? {
            let slot = match o.key.split('/').next() {
                Some("packs") => &mut s.packs,
                Some("index") => &mut s.index,
                Some("maps") => &mut s.maps,
                Some("snapshots") => &mut s.snapshots,
                Some("dicts") => &mut s.dicts,
                _ => &mut s.other,
            };
            *slot += o.size;
        }
        Ok(s)
    }

    /// Restores every snapshot into a hasher and checks it against `hashes[step]`,
    /// the hash of that step's backup-API copy. Returns the number checked.
    pub fn verify(&self, t0: DateTime<Utc>, hashes: &[[u8; 32]]) -> Result<usize> {
        let key = self.config.key();
        let snaps = self.store.snapshots()?;
        if snaps.len() != hashes.len() {
            bail!(
                "configuration {key}: {} snapshots in the store, expected {}",
                snaps.len(),
                hashes.len()
            );
        }
        for snap in &snaps {
            let minutes = (snap.time() - t0).num_minutes();
            let step = usize::try_from(minutes / 10)
                .ok()
                .filter(|&s| s < hashes.len() && minutes % 10 == 0)
                .ok_or_else(|| {
                    anyhow!(
                        "configuration {key}: snapshot {} has an unexpected time",
                        snap.id.short()
                    )
                })?;
            let mut h = blake3::Hasher::new();
            self.store
                .restore_to_writer(snap, &mut h)
                .with_context(|| format!("configuration {key}: restore of step {step}"))?;
            if *h.finalize().as_bytes() != hashes[step] {
                bail!(
                    "configuration {key}: the restore of step {step} (snapshot {}) differs from \
                     that step's backup-API copy",
                    snap.id.short()
                );
            }
        }
        Ok(snaps.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_parse_with_default_level_and_dedup() {
        let v: Vec<String> = [
            "1",
            "4",
            "1:9",
            " 16 ",
            "4:3",
            "1:3:nodict",
            "1:nodict",
            "2:dict",
            "1:deltas",
            "1:3:nodict:deltas",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let keys: Vec<String> = parse_configs(&v).unwrap().iter().map(Config::key).collect();
        assert_eq!(
            keys,
            [
                "c1-z3",
                "c4-z3",
                "c1-z9",
                "c16-z3",
                "c1-z3-nodict",
                "c2-z3",
                "c1-z3-deltas",
                "c1-z3-deltas-nodict"
            ]
        );
        for bad in [
            "3",
            "0",
            "512",
            "x",
            "1:0",
            "1:23",
            "1:x",
            "",
            "1:3:4",
            "1:dict:3",
            "nodict",
            "deltas",
            "1:deltas:nodict",
        ] {
            assert!(parse_configs(&[bad.to_string()]).is_err(), "{bad}");
        }
    }
}

//! `repair`: put a damaged store back into a state every command can work with.
//!
//! * `repair index` rebuilds what the index says from the packs themselves (every
//!   pack's trailer lists its chunks): chunks in packs no readable index object
//!   locates are written into a new index object, so restores find them and
//!   backups deduplicate against them. Damaged index objects are moved to
//!   `damaged/index/<id>` (copied, then removed): their bytes are kept for
//!   inspection, and `prune` works again. Page maps name chunks through the index
//!   object that first stored them, so snapshots whose maps name a damaged index
//!   object stay broken; `repair snapshots` lists them.
//! * `repair snapshots` lists the snapshots that cannot be restored (and the
//!   manifests that cannot be decoded); with `forget` it removes them, so that
//!   `prune` and retention see a consistent store. Nothing is removed without it.
//!
//! Repair acts only on damage: bytes it read and found wrong. An object it could
//! not read (permission, I/O or network error) says nothing about its bytes: it
//! is reported as "could not check" and never removed, nor is anything that
//! depends on it. Nothing is removed before it is copied whole into `damaged/`.

use crate::backend::PutMode;
use crate::format::index::{IndexBody, IndexEntry, PackRef};
use crate::format::pack::{self, PackEntry};
use crate::types::{Id, SnapshotId};
use crate::verify::{DataSubset, VerifyOptions};
use crate::{layout, Result, Store};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// Prefix under which repair keeps the objects it takes out of use.
pub const DAMAGED: &str = "damaged/";

/// What `repair index` did (or, with `dry_run`, would do).
#[derive(Clone, Debug, Default)]
pub struct RepairIndexReport {
    pub dry_run: bool,
    pub packs: u64,
    /// Packs whose trailer is damaged: their chunks cannot be indexed.
    pub unreadable_packs: Vec<(String, String)>,
    /// Packs (and index objects) that could not be read at all (permission, I/O or
    /// network error): not judged, nothing done about them.
    pub unchecked: Vec<(String, String)>,
    /// Chunks found in packs that no readable index object located.
    pub chunks_reindexed: u64,
    /// The index object written, if any.
    pub new_index: Option<Id>,
    /// Damaged index objects moved to `damaged/index/`.
    pub quarantined: Vec<String>,
}

/// A snapshot `repair snapshots` found broken.
#[derive(Clone, Debug)]
pub struct BrokenSnapshot {
    /// The manifest key.
    pub key: String,
    pub id: SnapshotId,
    /// Name and time, when the manifest could be read.
    pub name: Option<String>,
    pub time: Option<chrono::DateTime<chrono::Utc>>,
    /// The problems that break it.
    pub reasons: Vec<String>,
}

/// What `repair snapshots` found (and, with `forget`, did).
#[derive(Clone, Debug, Default)]
pub struct RepairSnapshotsReport {
    /// Snapshots that cannot be restored: damage was read in what they need.
    pub broken: Vec<BrokenSnapshot>,
    /// Objects that could not be read: the snapshots they affect were not judged
    /// and are never forgotten on their account.
    pub unchecked: Vec<crate::Problem>,
    /// Broken snapshots kept although `forget` was asked: their manifest could not
    /// be copied into `damaged/` first (object key, why).
    pub kept: Vec<(String, String)>,
}

impl Store {
    /// Rebuilds the index from the packs; see the module documentation. Holds the
    /// exclusive lock: no backup may write packs or index objects meanwhile.
    pub fn repair_index(&self, dry_run: bool, lock_wait: Duration) -> Result<RepairIndexReport> {
        let _lock = self.lock(true, "repair index", lock_wait)?;
        let backend = self.backend();
        let mut report = RepairIndexReport {
            dry_run,
            ..Default::default()
        };
        let sizes = self.pack_sizes()?;
        report.packs = sizes.len() as u64;

        // What the readable index objects locate (in packs present with their length).
        // One that cannot be read stops the repair before it writes anything: what
        // it locates is unknown, and only damage read is ever quarantined.
        let mut located: HashSet<Id> = HashSet::new();
        let mut damaged: Vec<(String, Vec<u8>)> = Vec::new();
        for obj in backend.list(layout::INDEX)? {
            let Some(id) = layout::id_of(&obj.key) else {
                continue;
            };
            let bytes = match backend.get(&obj.key) {
                Ok(b) => b,
                Err(crate::backend::BackendError::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            let body = match Id::of_object(&bytes) == id {
                true => IndexBody::decode(&bytes).map_err(|e| e.to_string()),
                false => Err("content does not match its name".to_string()),
            };
            match body {
                Ok(body) => {
                    for e in &body.entries {
                        let p = &body.packs[e.pack as usize];
                        if sizes.get(&p.id) == Some(&p.len) {
                            located.insert(e.entry.id);
                        }
                    }
                }
                Err(_) => damaged.push((obj.key, bytes)),
            }
        }

        // Dictionaries by the 16-byte prefix pack headers record.
        let mut dicts: HashMap<[u8; 16], Id> = HashMap::new();
        for o in backend.list(layout::DICTS)? {
            if let Some(id) = layout::id_of(&o.key) {
                let mut p = [0u8; 16];
                p.copy_from_slice(&id.0[..16]);
                dicts.insert(p, id);
            }
        }

        let mut body = IndexBody::default();
        let mut ids: Vec<(&Id, &u64)> = sizes.iter().collect();
        ids.sort();
        for (pack_id, &len) in ids {
            let key = layout::pack(pack_id);
            let (dict_prefix, entries) = match read_trailer(self, &key, len) {
                Ok(x) => x,
                Err(e) if e.damage => {
                    report.unreadable_packs.push((key, e.detail));
                    continue;
                }
                Err(e) => {
                    report.unchecked.push((key, e.detail));
                    continue;
                }
            };
            let dict = match dict_prefix {
                None => None,
                Some(p) => match dicts.get(&p) {
                    Some(d) => Some(*d),
                    None => {
                        report
                            .unreadable_packs
                            .push((key, "its dictionary is missing from the store".to_string()));
                        continue;
                    }
                },
            };
            let new: Vec<PackEntry> = entries
                .into_iter()
                .filter(|e| !located.contains(&e.id))
                .collect();
            if new.is_empty() {
                continue;
            }
            let pos = body.packs.len() as u32;
            body.packs.push(PackRef {
                id: *pack_id,
                len,
                dict,
            });
            for e in new {
                located.insert(e.id);
                body.entries.push(IndexEntry {
                    pack: pos,
                    entry: e,
                });
            }
        }
        report.chunks_reindexed = body.entries.len() as u64;
        report.quarantined = damaged.iter().map(|(k, _)| k.clone()).collect();
        if dry_run {
            return Ok(report);
        }
        if !body.entries.is_empty() {
            let (id, _) = crate::store::put_index(backend.as_ref(), &body)?;
            report.new_index = Some(id);
        }
        // Only after the replacement is durable: keep a whole copy of the bytes
        // found wrong, then take the object out of use.
        for (key, bytes) in &damaged {
            backend.put(&format!("{DAMAGED}{key}"), bytes, PutMode::Overwrite)?;
            backend.delete(key)?;
        }
        Ok(report)
    }

    /// The snapshots that cannot be restored, and (with `forget`) removes them,
    /// each manifest first copied whole into `damaged/`. With `read_data`, chunk
    /// data is checked too (see [`Store::verify`]). Snapshots that depend on an
    /// object that could not be read are not judged: see the report's `unchecked`.
    pub fn repair_snapshots(&self, forget: bool, read_data: bool) -> Result<RepairSnapshotsReport> {
        let report = self.verify(&VerifyOptions {
            read_data: read_data.then_some(DataSubset::All),
            ..Default::default()
        })?;
        let snaps: HashMap<SnapshotId, crate::Snapshot> =
            self.snapshots()?.into_iter().map(|s| (s.id, s)).collect();
        let mut out = Vec::new();
        for id in &report.broken {
            let reasons = report
                .problems
                .iter()
                .filter(|p| p.snapshots.contains(id))
                .map(|p| format!("{}: {}", p.object, p.detail))
                .collect();
            let s = snaps.get(id);
            out.push(BrokenSnapshot {
                key: layout::snapshot(id),
                id: *id,
                name: s.map(|s| s.manifest.name.clone()),
                time: s.map(|s| s.time()),
                reasons,
            });
        }
        out.sort_by_key(|b| (b.time, b.id));
        let mut kept = Vec::new();
        if forget && !out.is_empty() {
            let _lock = self.lock(false, "repair snapshots", Duration::from_secs(600))?;
            let backend = self.backend();
            for b in &out {
                // Never removed unless its bytes are safe in `damaged/` first.
                let bytes = match backend.get(&b.key) {
                    Ok(bytes) => bytes,
                    Err(crate::backend::BackendError::NotFound { .. }) => continue,
                    Err(e) => {
                        kept.push((b.key.clone(), e.to_string()));
                        continue;
                    }
                };
                backend.put(&format!("{DAMAGED}{}", b.key), &bytes, PutMode::Overwrite)?;
                backend.delete(&b.key)?;
            }
        }
        Ok(RepairSnapshotsReport {
            broken: out,
            unchecked: report.unreadable().cloned().collect(),
            kept,
        })
    }
}

/// Why a pack's trailer could not be had: its bytes were read and found wrong
/// (`damage`), or they could not be read at all.
#[derive(Clone, Debug)]
pub(crate) struct TrailerError {
    pub detail: String,
    pub damage: bool,
}

impl TrailerError {
    fn damaged(detail: String) -> Self {
        TrailerError {
            detail,
            damage: true,
        }
    }

    pub(crate) fn kind(&self) -> crate::verify::ProblemKind {
        match self.damage {
            true => crate::verify::ProblemKind::Damage,
            false => crate::verify::ProblemKind::Unreadable,
        }
    }
}

/// The header's dictionary prefix and the trailer's entries of one pack (three
/// small reads: header, footer, trailer).
pub(crate) fn read_trailer(
    store: &Store,
    key: &str,
    len: u64,
) -> std::result::Result<(Option<[u8; 16]>, Vec<PackEntry>), TrailerError> {
    let b = store.backend();
    let min = (pack::HEADER_LEN + pack::FOOTER_LEN) as u64;
    if len < min {
        return Err(TrailerError::damaged(format!(
            "truncated: {len} bytes, a pack has at least {min}"
        )));
    }
    let read = |r: std::ops::Range<u64>| {
        b.get_range(key, r).map_err(|e| TrailerError {
            detail: e.to_string(),
            damage: e.is_damage(),
        })
    };
    let header = read(0..pack::HEADER_LEN as u64)?;
    let dict =
        pack::check_header(&header).map_err(|e| TrailerError::damaged(format!("header: {e}")))?;
    let footer_bytes = read(len - pack::FOOTER_LEN as u64..len)?;
    let footer = pack::decode_footer(&footer_bytes, len)
        .map_err(|e| TrailerError::damaged(format!("footer: {e}")))?;
    let t_end = len - pack::FOOTER_LEN as u64;
    let trailer = read(t_end - footer.trailer_len as u64..t_end)?;
    let entries = pack::decode_trailer(&trailer, &footer, len)
        .map_err(|e| TrailerError::damaged(format!("trailer: {e}")))?;
    Ok((dict, entries))
}

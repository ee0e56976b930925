//! restore: giving a snapshot's image back, checked, and `Store::restore_*`. It reads
//! through store/ and index/ and must not reach into backup/ or maintenance/ (verify
//! and copy use its rebuilding and its parallel reads, never the other way round).
//!
//! * `mod.rs`: the entry points (`restore_to_writer`, `restore_to_path(_with)`, the
//!   salvage restore's reading) and `RestoreReport`.
//! * `plan.rs`: what a restore reads, found the short way through the index objects
//!   the snapshot's maps name (with deltas, every index object: links' bases).
//! * `reader.rs`: the snapshot reader, one of the two seams (DESIGN.md, "Modules"):
//!   `resolve`, the one way a snapshot's positions are resolved (the plan, else the
//!   whole index), which restore and salvage use; and `SnapshotReader`, pages
//!   a..b of a snapshot at random, each chunk checked against its id.
//! * `position_cache.rs`: this machine's resolved positions of a snapshot the
//!   reader opens again (checksummed, never the truth), so queries skip resolving.
//! * `rebuild.rs`: rebuilding the image window by window from its chunks, checking it.
//! * `output.rs`: writing it to a stream or into a file at positions; the temporary
//!   file renamed into place.
//! * `salvage.rs`: `restore --salvage` and which tables the lost pages belonged to.

mod links;
mod output;
mod plan;
pub(crate) mod position_cache;
mod reader;
mod rebuild;
pub mod salvage;

pub(crate) use output::Sink;
pub(crate) use reader::SnapshotReader;
pub(crate) use rebuild::{fetch_parallel, write_image, Position};

use crate::store::{Snapshot, Store};
use crate::types::{ChunkRef, SnapshotId};
use crate::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What a restore wrote.
#[derive(Clone, Debug)]
pub struct RestoreReport {
    pub snapshot: SnapshotId,
    pub image_len: u64,
    pub image_hash: [u8; 32],
    pub duration: Duration,
    /// Temporary files of killed restores removed from the output's folder.
    pub removed_temporaries: Vec<PathBuf>,
}

impl Store {
    /// Writes the snapshot's image to `out`, checking it against the manifest's image
    /// check (or, for snapshots from before the check, its blake3 hash).
    /// On a mismatch the bytes already written are wrong: callers writing to a
    /// file should use [`Store::restore_to_path`], which never leaves such a file.
    pub fn restore_to_writer(&self, snap: &Snapshot, out: &mut dyn Write) -> Result<RestoreReport> {
        self.restore_to_sink(snap, output::Sink::Stream(out))
    }

    fn restore_to_sink(&self, snap: &Snapshot, out: output::Sink<'_>) -> Result<RestoreReport> {
        let started = Instant::now();
        let _lock = self.read_lock("restore")?;
        let backend = self.backend().as_ref();
        let resolved = reader::resolve(self, snap)?;
        // The long way (a chunk to look for by id, or a problem to name): a chunk
        // nothing locates fails the restore before anything is written.
        if let reader::Resolved::Whole(w) = &resolved {
            w.check_located(snap)?;
        }
        let chains = resolved.chains(self)?;
        let image_hash = rebuild::write_located(
            backend,
            resolved.packs(),
            snap,
            resolved.positions(),
            out,
            self.progress(),
            false,
            chains.as_ref(),
            &self.chunk_ids(),
        )?;
        Ok(RestoreReport {
            snapshot: snap.id,
            image_len: snap.manifest.image_len,
            image_hash,
            duration: started.elapsed(),
            removed_temporaries: Vec::new(),
        })
    }

    /// The salvage restore of `snap` into `file` (see [`Store::salvage_to_path`]).
    pub(crate) fn salvage_into(
        &self,
        snap: &Snapshot,
        file: &std::fs::File,
        durable: bool,
    ) -> Result<rebuild::Salvaged> {
        let _lock = self.read_lock("restore")?;
        let backend = self.backend().as_ref();
        let w = match reader::resolve(self, snap)? {
            reader::Resolved::Plan(plan) => {
                return rebuild::write_salvaged(
                    backend,
                    &plan.packs,
                    snap,
                    &plan,
                    file,
                    durable,
                    self.progress(),
                    rebuild::SalvageLog::default(),
                    plan.chains(self)?.as_ref(),
                    &self.chunk_ids(),
                )
            }
            reader::Resolved::Whole(w) => w,
            // `resolve` reads no position file (the snapshot reader's own).
            reader::Resolved::Cached(_) => {
                return Err(crate::Error::Internal(
                    "a salvage resolved from a position file".into(),
                ))
            }
        };
        // Something is not located by the names the maps use: the whole index
        // finds what it can, and says why the rest is lost.
        let (index, chunks, locs) = (&w.index, &w.chunks, &w.locs);
        let log = rebuild::SalvageLog::default();
        for (pos, (c, loc)) in chunks.iter().zip(locs).enumerate() {
            if let (ChunkRef::Stored(id), None) = (c, loc) {
                let (object, detail) = match index.unlocated(snap.id, id) {
                    Error::PackMissing { pack, .. } => {
                        (Some(pack), "its pack is missing from the store".to_string())
                    }
                    _ => (
                        None,
                        "no index object locates it (missing from the store)".to_string(),
                    ),
                };
                log.record(pos, *id, object, detail);
            }
        }
        rebuild::write_salvaged(
            backend,
            index.packs(),
            snap,
            &w,
            file,
            durable,
            self.progress(),
            log,
            w.chains(self)?.as_ref(),
            &self.chunk_ids(),
        )
    }

    /// Restores to the file `out`: written to a temporary file beside it, checked,
    /// fsynced and renamed into place. An existing file is replaced only with `force`.
    pub fn restore_to_path(
        &self,
        snap: &Snapshot,
        out: &Path,
        force: bool,
    ) -> Result<RestoreReport> {
        self.restore_to_path_with(snap, out, force, true)
    }

    /// [`Store::restore_to_path`], choosing whether the file is flushed to disk
    /// before it is renamed into place. Without `fsync` a restore does not wait for
    /// the disk, but a crash just after it may leave the file incomplete.
    pub fn restore_to_path_with(
        &self,
        snap: &Snapshot,
        out: &Path,
        force: bool,
        fsync: bool,
    ) -> Result<RestoreReport> {
        let (mut report, removed) =
            output::to_path(out, snap.manifest.image_len, force, fsync, |sink| {
                self.restore_to_sink(snap, sink)
            })?;
        report.removed_temporaries = removed;
        Ok(report)
    }
}

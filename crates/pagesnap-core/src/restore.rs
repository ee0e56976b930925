//! Reassembling a snapshot's image from its chunks. Nothing read from the store is
//! trusted: every chunk is checked against its id and the whole image against the
//! manifest's hash.

use crate::backend::{Backend, BackendError};
use crate::chunk_index::{ChunkIndex, Location};
use crate::codec::Decoders;
use crate::store::Snapshot;
use crate::types::{ChunkId, ChunkRef, Id};
use crate::{layout, Error, Result};
use std::io::{BufWriter, Write};
use std::path::Path;

/// Largest single read: runs of adjacent chunks in one pack are fetched together up to this size.
const MAX_RUN: u64 = 8 << 20;

/// A run of chunks stored back to back in one pack.
struct Run {
    pack: u32,
    start: u64,
    end: u64,
    /// (position in the image, chunk id, location)
    items: Vec<(usize, ChunkId, Location)>,
}

/// Writes the image of `snap` to `out`; returns its blake3 hash after checking it.
pub(crate) fn write_image(
    backend: &dyn Backend,
    index: &ChunkIndex,
    snap: &Snapshot,
    chunks: &[ChunkRef],
    out: &mut dyn Write,
) -> Result<[u8; 32]> {
    let m = &snap.manifest;
    let chunk_len = m.chunk_len();
    let len_of = |i: usize| (m.image_len - i as u64 * chunk_len).min(chunk_len) as usize;
    let io_err = |e: std::io::Error| Error::Io {
        path: "restore output".into(),
        source: e,
    };
    let mut hasher = blake3::Hasher::new();
    let mut decoders = Decoders::new()?;
    let zeros = vec![0u8; chunk_len as usize];
    let mut emit = |data: &[u8], hasher: &mut blake3::Hasher| -> Result<()> {
        hasher.update(data);
        out.write_all(data).map_err(io_err)
    };

    let mut i = 0usize;
    while i < chunks.len() {
        match chunks[i] {
            ChunkRef::Zero => {
                emit(&zeros[..len_of(i)], &mut hasher)?;
                i += 1;
            }
            ChunkRef::Stored(_) => {
                let run = plan_run(index, snap, chunks, i)?;
                let key = layout::pack(&index.pack_id(run.pack));
                let dict = index.pack_dict(run.pack);
                if let Some(d) = &dict {
                    decoders
                        .ensure_dict(backend, d)
                        .map_err(|e| Error::ChunkDamaged {
                            snapshot: Some(snap.id),
                            chunk: run.items[0].1,
                            object: layout::dict(d),
                            detail: format!("its pack's dictionary cannot be read: {e}"),
                        })?;
                }
                let bytes = backend
                    .get_range(&key, run.start..run.end)
                    .map_err(|e| match e {
                        BackendError::NotFound { .. } => Error::PackMissing {
                            snapshot: snap.id,
                            chunk: run.items[0].1,
                            pack: key.clone(),
                        },
                        other => Error::ChunkDamaged {
                            snapshot: Some(snap.id),
                            chunk: run.items[0].1,
                            object: key.clone(),
                            detail: other.to_string(),
                        },
                    })?;
                for (pos, id, loc) in &run.items {
                    let damaged = |detail: String| Error::ChunkDamaged {
                        snapshot: Some(snap.id),
                        chunk: *id,
                        object: key.clone(),
                        detail,
                    };
                    // The backend returns the range asked for; a short read is damage, not a panic.
                    let off = (loc.entry.offset as u64 - run.start) as usize;
                    let stored = off
                        .checked_add(loc.entry.stored_len as usize)
                        .and_then(|end| bytes.get(off..end))
                        .ok_or_else(|| damaged("the pack ends before the chunk".into()))?;
                    let raw = decoders
                        .decode(&loc.pack_entry(*id), stored, dict.as_ref())
                        .map_err(|e| damaged(e.to_string()))?;
                    if raw.len() != len_of(*pos) {
                        return Err(damaged(format!(
                            "{} bytes where position {pos} needs {}",
                            raw.len(),
                            len_of(*pos)
                        )));
                    }
                    if Id::of_chunk(&raw) != *id {
                        return Err(damaged("content does not match its id".into()));
                    }
                    emit(&raw, &mut hasher)?;
                }
                i += run.items.len();
            }
        }
    }
    let got = *hasher.finalize().as_bytes();
    if got != m.image_hash {
        return Err(Error::ImageMismatch {
            snapshot: snap.id,
            expected: crate::types::to_hex(&m.image_hash),
            actual: crate::types::to_hex(&got),
        });
    }
    Ok(got)
}

/// The longest run of stored chunks from position `i` that lie back to back in one pack.
fn plan_run(index: &ChunkIndex, snap: &Snapshot, chunks: &[ChunkRef], i: usize) -> Result<Run> {
    let locate = |id: &ChunkId| {
        index
            .get(id)
            .copied()
            .ok_or_else(|| match index.lost_pack(id) {
                Some(pack) => Error::PackMissing {
                    snapshot: snap.id,
                    chunk: *id,
                    pack: layout::pack(&pack),
                },
                None => Error::ChunkMissing {
                    snapshot: snap.id,
                    chunk: *id,
                },
            })
    };
    let ChunkRef::Stored(first) = chunks[i] else {
        return Err(Error::Internal("run must start at a stored chunk".into()));
    };
    let loc = locate(&first)?;
    let start = loc.entry.offset as u64;
    let mut run = Run {
        pack: loc.pack,
        start,
        end: start + loc.entry.stored_len as u64,
        items: vec![(i, first, loc)],
    };
    for (j, c) in chunks.iter().enumerate().skip(i + 1) {
        let ChunkRef::Stored(id) = c else { break };
        let Some(next) = index.get(id) else { break };
        if next.pack != run.pack
            || next.entry.offset as u64 != run.end
            || run.end - run.start >= MAX_RUN
        {
            break;
        }
        run.end += next.entry.stored_len as u64;
        run.items.push((j, *id, *next));
    }
    Ok(run)
}

/// Runs `write` into a temporary file beside `out`, then fsyncs and renames it into
/// place. On any error the temporary file is removed and `out` is untouched.
pub(crate) fn to_path<T>(
    out: &Path,
    force: bool,
    write: impl FnOnce(&mut dyn Write) -> Result<T>,
) -> Result<T> {
    let io = |path: &Path, source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    if out.is_dir() {
        return Err(io(out, std::io::Error::other("is a directory")));
    }
    if !force && out.symlink_metadata().is_ok() {
        return Err(Error::OutputExists(out.to_path_buf()));
    }
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".pagesnap-restore-")
        .tempfile_in(&dir)
        .map_err(|e| io(&dir, e))?;
    let mut w = BufWriter::with_capacity(1 << 20, tmp);
    let result = write(&mut w)?;
    let tmp = w.into_inner().map_err(|e| io(out, e.into_error()))?;
    // A replaced file keeps its permissions; a new one stays owner-only (0600), as
    // the temporary file was created: a database is private until its owner says otherwise.
    if let Ok(meta) = std::fs::metadata(out) {
        tmp.as_file()
            .set_permissions(meta.permissions())
            .map_err(|e| io(out, e))?;
    }
    tmp.as_file().sync_all().map_err(|e| io(out, e))?;
    if force {
        tmp.persist(out).map_err(|e| io(out, e.error))?;
    } else {
        tmp.persist_noclobber(out).map_err(|e| {
            if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                Error::OutputExists(out.to_path_buf())
            } else {
                io(out, e.error)
            }
        })?;
    }
    if let Ok(d) = std::fs::File::open(&dir) {
        // Make the rename durable; a failure here does not make the file wrong.
        let _ = d.sync_all();
    }
    Ok(result)
}

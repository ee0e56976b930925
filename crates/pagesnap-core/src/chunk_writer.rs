//! Stores the chunks of one backup: names each by its hash, skips zero chunks and
//! chunks the store already holds, compresses the rest into packs, and writes each
//! pack as one object when it reaches the target size.

use crate::backend::{Backend, PutMode};
use crate::chunk_index::ChunkIndex;
use crate::format::config::StoreConfig;
use crate::format::index::{IndexEntry, PackRef};
use crate::format::pack::{decode_blob, Codec, PackBuilder, PackEntry};
use crate::types::{is_all_zero, ChunkId, ChunkRef, Id};
use crate::{layout, Error, Result};
use std::collections::HashMap;
use std::sync::Arc;

/// What a backup added to the store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteStats {
    pub new_chunks: u64,
    pub new_raw_bytes: u64,
    pub new_stored_bytes: u64,
    pub reused_chunks: u64,
    pub zero_chunks: u64,
    pub packs_written: u64,
    pub pack_bytes: u64,
}

/// Where a chunk written by this backup is until the backup ends.
#[derive(Clone, Copy)]
enum Pending {
    /// In the pack being built, at this entry.
    Current(usize),
    /// In a pack already written: position in `written`, entry.
    Written(usize, usize),
}

/// Room for a full pack plus its trailer and one oversized last chunk.
fn pack_capacity(target: u32) -> usize {
    target as usize + target as usize / 16 + (1 << 20)
}

pub(crate) struct ChunkWriter {
    backend: Arc<dyn Backend>,
    index: ChunkIndex,
    compressor: zstd::bulk::Compressor<'static>,
    pack_target: usize,
    current: PackBuilder,
    pending: HashMap<ChunkId, Pending>,
    written: Vec<WrittenPack>,
    stats: WriteStats,
}

/// A pack this backup wrote, and the chunks in it.
pub(crate) struct WrittenPack {
    pub pack: PackRef,
    pub entries: Vec<PackEntry>,
}

/// The chunks a backup stored: the packs, and each chunk's pack (by position) and entry.
pub(crate) struct NewChunks {
    pub packs: Vec<PackRef>,
    /// In the order they were stored.
    pub entries: Vec<IndexEntry>,
}

impl ChunkWriter {
    pub(crate) fn new(
        backend: Arc<dyn Backend>,
        index: ChunkIndex,
        config: &StoreConfig,
    ) -> Result<Self> {
        let compressor = zstd::bulk::Compressor::new(config.zstd_level)
            .map_err(|e| Error::Internal(format!("zstd: {e}")))?;
        Ok(ChunkWriter {
            backend,
            index,
            compressor,
            pack_target: config.pack_target_size as usize,
            current: PackBuilder::with_capacity(pack_capacity(config.pack_target_size)),
            pending: HashMap::new(),
            written: Vec::new(),
            stats: WriteStats::default(),
        })
    }

    /// Records one chunk; stores it unless it is all zeros or already stored.
    pub(crate) fn add(&mut self, data: &[u8]) -> Result<ChunkRef> {
        if is_all_zero(data) {
            self.stats.zero_chunks += 1;
            return Ok(ChunkRef::Zero);
        }
        let id = Id::of_chunk(data);
        if self.index.contains(&id) || self.pending.contains_key(&id) {
            self.stats.reused_chunks += 1;
            return Ok(ChunkRef::Stored(id));
        }
        let compressed = self
            .compressor
            .compress(data)
            .map_err(|e| Error::Internal(format!("zstd: {e}")))?;
        let (stored, codec) = if compressed.len() < data.len() {
            (&compressed[..], Codec::Zstd)
        } else {
            (data, Codec::Raw)
        };
        if !self.current.is_empty() && self.current.len() + stored.len() > self.pack_target {
            self.flush()?;
        }
        self.current.push(id, stored, data.len() as u32, codec);
        self.pending
            .insert(id, Pending::Current(self.current.entries().len() - 1));
        self.stats.new_chunks += 1;
        self.stats.new_raw_bytes += data.len() as u64;
        self.stats.new_stored_bytes += stored.len() as u64;
        Ok(ChunkRef::Stored(id))
    }

    /// Reads back a chunk of this backup or of the store (needed only when SQLite
    /// rewrites or reads a page it already handed over).
    pub(crate) fn read(&self, id: &ChunkId) -> Result<Vec<u8>> {
        let (pack_id, entry): (Id, PackEntry) = match self.pending.get(id) {
            Some(Pending::Current(i)) => {
                let e = self.current.entries()[*i];
                return decode_blob(&e, self.current.blob(&e)).map_err(|source| Error::Format {
                    object: format!("chunk {} (being written)", id.short()),
                    source,
                });
            }
            Some(Pending::Written(p, i)) => {
                (self.written[*p].pack.id, self.written[*p].entries[*i])
            }
            None => match self.index.get(id) {
                Some(loc) => (self.index.pack_id(loc.pack), loc.pack_entry(*id)),
                None => {
                    return Err(Error::Internal(format!(
                        "chunk {} read back but never stored",
                        id.short()
                    )))
                }
            },
        };
        let key = layout::pack(&pack_id);
        let start = entry.offset as u64;
        let stored = self
            .backend
            .get_range(&key, start..start + entry.stored_len as u64)?;
        let raw = decode_blob(&entry, &stored).map_err(|source| Error::Format {
            object: key.clone(),
            source,
        })?;
        if Id::of_chunk(&raw) != *id {
            return Err(Error::ChunkDamaged {
                snapshot: None,
                chunk: *id,
                object: key,
                detail: "content does not match its id".into(),
            });
        }
        Ok(raw)
    }

    fn flush(&mut self) -> Result<()> {
        if self.current.is_empty() {
            return Ok(());
        }
        let fresh = PackBuilder::with_capacity(pack_capacity(self.pack_target as u32));
        let builder = std::mem::replace(&mut self.current, fresh);
        let (id, bytes, entries) = builder.finish();
        self.backend
            .put(&layout::pack(&id), &bytes, PutMode::Overwrite)?;
        let p = self.written.len();
        for (i, e) in entries.iter().enumerate() {
            self.pending.insert(e.id, Pending::Written(p, i));
        }
        self.stats.packs_written += 1;
        self.stats.pack_bytes += bytes.len() as u64;
        self.written.push(WrittenPack {
            pack: PackRef {
                id,
                len: bytes.len() as u64,
            },
            entries,
        });
        Ok(())
    }

    /// Writes the last pack; returns the chunks this backup stored and its statistics.
    pub(crate) fn finish(mut self) -> Result<(NewChunks, WriteStats, ChunkIndex)> {
        self.flush()?;
        let mut entries = Vec::new();
        let mut packs = Vec::with_capacity(self.written.len());
        for (p, w) in self.written.into_iter().enumerate() {
            packs.push(w.pack);
            entries.extend(w.entries.into_iter().map(|entry| IndexEntry {
                pack: p as u32,
                entry,
            }));
        }
        Ok((NewChunks { packs, entries }, self.stats, self.index))
    }
}

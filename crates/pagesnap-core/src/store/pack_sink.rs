//! Packs built from chunks that are already compressed (copy between stores,
//! prune's rewriting of half-empty packs): blobs go in as they are, without
//! recompression. A pack holds chunks of one dictionary at most, so one pack is
//! open per dictionary; each is written whole (on the upload thread) when it
//! reaches the target size.

use crate::backend::Backend;
use crate::format::index::{IndexEntry, PackRef};
use crate::format::pack::{Codec, PackBuilder};
use crate::store::pack_upload::Uploader;
use crate::types::{ChunkId, Id};
use crate::{layout, Result};
use std::sync::Arc;

pub(crate) struct PackSink {
    uploads: Uploader,
    target: usize,
    /// The open pack of each dictionary (`None`: chunks without one).
    open: Vec<(Option<Id>, PackBuilder)>,
    packs: Vec<PackRef>,
    entries: Vec<IndexEntry>,
    bytes_written: u64,
}

/// The packs a sink wrote and their chunks (entries name packs by position).
pub(crate) struct SinkOutput {
    pub packs: Vec<PackRef>,
    pub entries: Vec<IndexEntry>,
    pub bytes_written: u64,
}

impl PackSink {
    pub(crate) fn new(backend: Arc<dyn Backend>, target: usize) -> Self {
        PackSink {
            uploads: Uploader::new(backend),
            target,
            open: Vec::new(),
            packs: Vec::new(),
            entries: Vec::new(),
            bytes_written: 0,
        }
    }

    fn builder(&self, dict: Option<Id>) -> PackBuilder {
        // Room for a full pack and one oversized last blob: the buffer never grows.
        PackBuilder::with_capacity(self.target + self.target / 16 + (1 << 20), dict)
    }

    /// Appends one stored blob (compressed with `dict`, if `codec` says so) to the
    /// open pack of `dict`, writing that pack first when the blob would overfill it.
    pub(crate) fn push(
        &mut self,
        dict: Option<Id>,
        id: ChunkId,
        stored: &[u8],
        raw_len: u32,
        codec: Codec,
    ) -> Result<()> {
        let pos = match self.open.iter().position(|(d, _)| *d == dict) {
            Some(p) => p,
            None => {
                let b = self.builder(dict);
                self.open.push((dict, b));
                self.open.len() - 1
            }
        };
        let b = &self.open[pos].1;
        if !b.is_empty() && b.len() + stored.len() > self.target {
            self.write(pos)?;
        }
        if codec == Codec::ZstdDelta {
            // A delta blob copied as it is: its pack becomes version 2, and the
            // blob passes the decoder's checks before it is written.
            let b = &mut self.open[pos].1;
            b.allow_deltas();
            b.try_push(id, stored, raw_len, codec).map_err(|e| {
                crate::Error::Internal(format!("delta blob of {}: {e}", id.short()))
            })?;
        } else {
            self.open[pos].1.push(id, stored, raw_len, codec);
        }
        Ok(())
    }

    /// Writes the open pack at `pos` (if it holds anything) and opens a fresh one.
    fn write(&mut self, pos: usize) -> Result<()> {
        let dict = self.open[pos].0;
        if self.open[pos].1.is_empty() {
            return Ok(());
        }
        let fresh = self.builder(dict);
        let full = std::mem::replace(&mut self.open[pos].1, fresh);
        let (id, bytes, entries) = full.finish();
        let len = bytes.len() as u64;
        self.uploads.put(layout::pack(&id), bytes)?;
        let p = self.packs.len() as u32;
        self.packs.push(PackRef { id, len, dict });
        self.entries.extend(
            entries
                .into_iter()
                .map(|entry| IndexEntry { pack: p, entry }),
        );
        self.bytes_written += len;
        Ok(())
    }

    /// Writes every open pack (a caller done with a dictionary frees its buffer).
    pub(crate) fn flush(&mut self) -> Result<()> {
        for pos in 0..self.open.len() {
            self.write(pos)?;
        }
        self.open.clear();
        Ok(())
    }

    /// Writes what is left and waits until every pack is stored.
    pub(crate) fn finish(mut self) -> Result<SinkOutput> {
        self.flush()?;
        self.uploads.wait()?;
        Ok(SinkOutput {
            packs: std::mem::take(&mut self.packs),
            entries: std::mem::take(&mut self.entries),
            bytes_written: self.bytes_written,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::LocalBackend;
    use crate::format::pack::decode_pack;

    #[test]
    fn one_dictionary_per_pack_and_packs_near_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path()));
        let mut sink = PackSink::new(backend.clone(), 1000);
        let d = Some(Id([7; 32]));
        for i in 0u32..30 {
            let blob = vec![i as u8; 100];
            let (dict, codec) = if i % 3 == 0 {
                (d, Codec::ZstdDict)
            } else {
                (None, Codec::Raw)
            };
            sink.push(dict, Id::of_chunk(&blob), &blob, 100, codec)
                .unwrap();
        }
        let out = sink.finish().unwrap();
        assert_eq!(out.entries.len(), 30);
        // 20 plain blobs of 100 bytes in packs of ≤ 1000 blob bytes (header included): 3 packs;
        // 10 dictionary blobs: 2 packs.
        let plain = out.packs.iter().filter(|p| p.dict.is_none()).count();
        let with_dict = out.packs.iter().filter(|p| p.dict == d).count();
        assert_eq!((plain, with_dict), (3, 2));
        let mut total = 0;
        for (i, p) in out.packs.iter().enumerate() {
            let bytes = backend.get(&layout::pack(&p.id)).unwrap();
            assert_eq!(Id::of_object(&bytes), p.id);
            assert_eq!(bytes.len() as u64, p.len);
            total += p.len;
            let entries = decode_pack(&bytes).unwrap();
            let indexed: Vec<_> = out
                .entries
                .iter()
                .filter(|e| e.pack == i as u32)
                .map(|e| e.entry)
                .collect();
            assert_eq!(entries, indexed);
            for e in &entries {
                assert_eq!(e.codec == Codec::ZstdDict, p.dict.is_some());
                let blob = &bytes[e.offset as usize..(e.offset + e.stored_len) as usize];
                assert_eq!(Id::of_chunk(blob), e.id, "blobs are stored as given");
            }
        }
        assert_eq!(total, out.bytes_written);
    }
}

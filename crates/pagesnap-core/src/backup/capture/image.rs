//! Assembles the pages SQLite writes into aligned blocks, and hands each complete
//! block to the capture pipeline (image hash, chunk ids, compression, packs), so
//! no copy of the whole image is ever held.
//!
//! Pages arrive nearly in order; a block stays in memory only until all of its
//! pages have arrived (the block of page 1 waits until the end). The code does not
//! rely on that order: a write to a block already handed over reopens it from its
//! stored chunks (last write wins), a truncate drops or reopens blocks, and pages
//! that never arrive (the pending-byte page of databases over 1 GiB) read as zeros.

use super::pipeline::{BlockRead, Pipeline};
use super::vfs::CaptureTarget;
use crate::backup::chunk_writer::ChunkWriter;
use crate::backup::prints::file::Pending;
use crate::backup::prints::Printing;
use crate::digest::tree_hash::root_from_blocks;
use crate::types::{ChunkId, ChunkRef};
use crate::{Error, Result};
use std::collections::{HashMap, HashSet};
use std::ops::Range;

/// Writes are tracked in sectors of the smallest SQLite page size.
const SECTOR: u64 = 512;
/// Blocks are at least this long, so a block is a whole blake3 subtree and the
/// per-block bookkeeping stays small.
const MIN_BLOCK: u64 = 64 * 1024;

struct Partial {
    data: Vec<u8>,
    filled: Vec<bool>,
    filled_count: usize,
    /// Sectors whose bytes mean something (written, or zeroed). Buffers are
    /// recycled without zeroing (zeroing 64 KiB per block cost a fifth of the
    /// capture thread); a sector is zeroed only when it would be read unwritten.
    clean: Vec<bool>,
}

impl Partial {
    /// Zeroes sector `s` unless it already holds meaningful bytes.
    fn clean_sector(&mut self, s: usize) {
        if !self.clean[s] {
            let start = s * SECTOR as usize;
            self.data[start..start + SECTOR as usize].fill(0);
            self.clean[s] = true;
        }
    }

    /// Zeroes every sector never written: unwritten bytes read as zeros.
    fn scrub(&mut self) {
        for s in 0..self.clean.len() {
            self.clean_sector(s);
        }
    }
}

pub(crate) struct CaptureImage {
    pipeline: Pipeline,
    chunk_len: u64,
    block_len: u64,
    size: u64,
    partial: HashMap<u64, Partial>,
    /// Blocks handed to the pipeline (and not reopened since).
    sent: HashSet<u64>,
    /// The first store error, kept so the caller can report it rather than
    /// SQLite's generic I/O error.
    error: Option<Error>,
}

/// The captured image, described by its chunks.
pub(crate) struct Captured {
    pub chunks: Vec<ChunkRef>,
    pub image_hash: [u8; 32],
    /// The image check (see `image_check`).
    pub image_check: [u8; 16],
    pub image_len: u64,
    pub writer: ChunkWriter,
    /// The record of the image's prints, when printing (backup/prints/), to
    /// end with the snapshot id once published.
    pub prints: Option<Pending>,
    /// Blocks taken from the parent without being read (guide.rs).
    pub unread: u64,
}

/// The capture's blocks are this long for chunks of `chunk_len` bytes.
pub(crate) fn block_len(chunk_len: u64) -> u64 {
    chunk_len.max(MIN_BLOCK)
}

impl CaptureImage {
    /// A capture of about `expect_chunks` chunks of `chunk_len` bytes;
    /// `direct`: a direct read, whose whole blocks the pipeline's workers
    /// read themselves ([`CaptureImage::read_blocks`]).
    pub(crate) fn new(
        writer: ChunkWriter,
        chunk_len: u64,
        printing: Option<Printing>,
        expect_chunks: usize,
        direct: bool,
    ) -> Result<Self> {
        let block_len = block_len(chunk_len);
        let sizes = (block_len, chunk_len);
        Ok(CaptureImage {
            pipeline: Pipeline::new(writer, sizes, printing, expect_chunks, direct)?,
            chunk_len,
            block_len,
            size: 0,
            partial: HashMap::new(),
            sent: HashSet::new(),
            error: None,
        })
    }

    pub(crate) fn take_error(&mut self) -> Option<Error> {
        self.error.take()
    }

    fn sectors(&self) -> usize {
        (self.block_len / SECTOR) as usize
    }

    /// Rebuilds a handed-over block's bytes from its chunks (the rare path:
    /// SQLite rewrote or re-read a page it had already written).
    fn read_back(&mut self, b: u64, remove: bool) -> Result<Vec<u8>> {
        self.pipeline.sync()?;
        let chunks = {
            let mut done = self.pipeline.done()?;
            let d = if remove { done.remove(b) } else { done.get(b) };
            d.ok_or_else(|| Error::Internal(format!("captured block {b} was not recorded")))?
                .chunks
        };
        if remove {
            self.sent.remove(&b);
        }
        let ids: Vec<ChunkId> = chunks
            .iter()
            .filter_map(|c| match c {
                ChunkRef::Stored(id) => Some(*id),
                ChunkRef::Zero => None,
            })
            .collect();
        let mut stored = self.pipeline.read(ids)?.into_iter();
        let mut data = Vec::with_capacity(self.block_len as usize);
        for c in &chunks {
            match c {
                ChunkRef::Zero => data.resize(data.len() + self.chunk_len as usize, 0),
                ChunkRef::Stored(_) => match stored.next() {
                    Some(bytes) => data.extend_from_slice(&bytes),
                    None => return Err(Error::Internal("chunk read-back came up short".into())),
                },
            }
        }
        data.resize(self.block_len as usize, 0);
        Ok(data)
    }

    /// The partial block `b`, created empty or reopened from its chunks.
    fn partial_mut(&mut self, b: u64) -> Result<&mut Partial> {
        if !self.partial.contains_key(&b) {
            let sectors = self.sectors();
            let p = match self.sent.contains(&b) {
                true => {
                    let data = self.read_back(b, true)?;
                    Partial {
                        data,
                        filled: vec![true; sectors],
                        filled_count: sectors,
                        clean: vec![true; sectors],
                    }
                }
                false => {
                    let (data, clean) = match self.pipeline.recycled(self.block_len as usize) {
                        Some(buf) => (buf, false),
                        None => (vec![0; self.block_len as usize], true),
                    };
                    Partial {
                        data,
                        filled: vec![false; sectors],
                        filled_count: 0,
                        clean: vec![clean; sectors],
                    }
                }
            };
            self.partial.insert(b, p);
        }
        Ok(self.partial.get_mut(&b).expect("inserted above"))
    }

    /// Hands a block's bytes to the pipeline (image hash, chunks).
    fn complete(&mut self, b: u64, data: Vec<u8>) -> Result<()> {
        self.sent.insert(b);
        self.pipeline.submit(b, data)
    }

    /// A buffer for `len` bytes of a direct read (a recycled one for a whole
    /// block; its old bytes are to be overwritten).
    pub(crate) fn buffer(&mut self, len: usize) -> Vec<u8> {
        match len as u64 == self.block_len {
            true => self.pipeline.recycled(len).unwrap_or_else(|| vec![0; len]),
            false => vec![0; len],
        }
    }

    /// The whole blocks `blocks` of a direct read, none seen before, each read
    /// with `read` by the worker that processes it (see
    /// [`Pipeline::read_blocks`]).
    pub(crate) fn read_blocks(
        &mut self,
        blocks: Range<u64>,
        read: &BlockRead<'_>,
        untouched: &super::direct::Untouched<'_>,
    ) -> Result<()> {
        if blocks
            .clone()
            .any(|b| self.partial.contains_key(&b) || self.sent.contains(&b))
        {
            return Err(Error::Internal("a direct read came back to a block".into()));
        }
        self.size = self.size.max(blocks.end * self.block_len);
        self.sent.extend(blocks.clone());
        self.pipeline.read_blocks(blocks, read, untouched)
    }

    /// Bytes of the image at `offset` from a direct read: a whole block not
    /// seen before goes to the pipeline as it is, anything else is written.
    pub(crate) fn put(&mut self, offset: u64, data: Vec<u8>) -> Result<()> {
        let b = offset / self.block_len;
        let whole = offset % self.block_len == 0 && data.len() as u64 == self.block_len;
        if whole && !self.partial.contains_key(&b) && !self.sent.contains(&b) {
            self.size = self.size.max(offset + data.len() as u64);
            return self.complete(b, data);
        }
        self.write(offset, &data)
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        let block_len = self.block_len;
        let mut pos = 0usize;
        while pos < data.len() {
            let abs = offset + pos as u64;
            let b = abs / block_len;
            let in_block = (abs % block_len) as usize;
            let n = (data.len() - pos).min(block_len as usize - in_block);
            let p = self.partial_mut(b)?;
            // A sector the write covers only partly keeps its other bytes: zero
            // them first if they are stale bytes of a recycled buffer. (A whole
            // page covers its sectors: zeroing them too cost a quarter of the
            // bytes written, in memset.)
            let first_touched = in_block / SECTOR as usize;
            let last_touched = (in_block + n - 1) / SECTOR as usize;
            if in_block % SECTOR as usize != 0 {
                p.clean_sector(first_touched);
            }
            if (in_block + n) % SECTOR as usize != 0 {
                p.clean_sector(last_touched);
            }
            p.data[in_block..in_block + n].copy_from_slice(&data[pos..pos + n]);
            for s in first_touched..=last_touched {
                p.clean[s] = true;
            }
            // Mark only sectors the write covers whole; a sector partly written stays
            // "missing" and is completed (zero-filled) at the end.
            let first = (in_block as u64).div_ceil(SECTOR) as usize;
            let last = ((in_block + n) as u64 / SECTOR) as usize;
            for s in first..last {
                if !p.filled[s] {
                    p.filled[s] = true;
                    p.filled_count += 1;
                }
            }
            if p.filled_count == p.filled.len() {
                let p = self.partial.remove(&b).expect("present");
                self.complete(b, p.data)?;
            }
            pos += n;
        }
        self.size = self.size.max(offset + data.len() as u64);
        Ok(())
    }

    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        buf.fill(0);
        let block_len = self.block_len;
        let mut pos = 0usize;
        while pos < buf.len() {
            let abs = offset + pos as u64;
            let b = abs / block_len;
            let in_block = (abs % block_len) as usize;
            let n = (buf.len() - pos).min(block_len as usize - in_block);
            if let Some(p) = self.partial.get_mut(&b) {
                p.scrub();
                buf[pos..pos + n].copy_from_slice(&p.data[in_block..in_block + n]);
            } else if self.sent.contains(&b) {
                let data = self.read_back(b, false)?;
                buf[pos..pos + n].copy_from_slice(&data[in_block..in_block + n]);
            }
            pos += n;
        }
        Ok(self.size.saturating_sub(offset).min(buf.len() as u64) as usize)
    }

    fn truncate(&mut self, size: u64) -> Result<()> {
        let block_len = self.block_len;
        self.partial.retain(|&b, _| b * block_len < size);
        if self.sent.iter().any(|&b| b * block_len >= size) {
            self.pipeline.sync()?;
            self.pipeline.done()?.keep_first(size.div_ceil(block_len));
            self.sent.retain(|&b| b * block_len < size);
        }
        if size % block_len != 0 {
            let b = size / block_len;
            let cut = (size % block_len) as usize;
            if self.partial.contains_key(&b) || self.sent.contains(&b) {
                let p = self.partial_mut(b)?;
                p.scrub();
                p.data[cut..].fill(0);
                let first_gone = (cut as u64).div_ceil(SECTOR) as usize;
                for s in first_gone..p.filled.len() {
                    if p.filled[s] {
                        p.filled[s] = false;
                        p.filled_count -= 1;
                    }
                }
            }
        }
        self.size = size;
        Ok(())
    }

    /// Completes every block (missing pages are zeros) and computes the image hash.
    pub(crate) fn finish(mut self) -> Result<Captured> {
        let size = self.size;
        let block_len = self.block_len;
        let blocks = size.div_ceil(block_len);
        // A single-block image has no blake3 tree to assemble: hash its bytes directly.
        let mut single: Option<Vec<u8>> = None;
        for b in 0..blocks {
            let len = (size - b * block_len).min(block_len) as usize;
            let full_and_sent = len as u64 == block_len && self.sent.contains(&b);
            if full_and_sent && blocks > 1 {
                continue;
            }
            let mut data = match self.partial.remove(&b) {
                Some(mut p) => {
                    p.scrub();
                    p.data
                }
                None if self.sent.contains(&b) => self.read_back(b, true)?,
                None => vec![0; block_len as usize],
            };
            data.truncate(len);
            if blocks == 1 {
                single = Some(data.clone());
            }
            self.complete(b, data)?;
        }
        let unread = self.pipeline.unread();
        let (mut writer, done, recorder) = self.pipeline.finish()?;
        // The last pack is written and the pack buffers freed before the chunk list
        // is taken: at the end of a first backup they were its peak of memory.
        writer.close_packs()?;
        let unprocessed = || Error::Internal("a captured block was not processed".into());
        let cvs = done.cvs(blocks).ok_or_else(unprocessed)?;
        let image_hash = match single {
            Some(bytes) => blake3::hash(&bytes),
            None if size == 0 => blake3::hash(&[]),
            None => root_from_blocks(&cvs, block_len, size),
        };
        let checks = done.checks(blocks).ok_or_else(unprocessed)?;
        let image_check = crate::digest::image_check::image_check(size, self.chunk_len, &checks);
        let chunks = done.into_chunks(blocks).ok_or_else(unprocessed)?;
        let prints = recorder.and_then(|r| r.seal(size));
        Ok(Captured {
            chunks,
            image_hash: *image_hash.as_bytes(),
            image_check,
            image_len: size,
            writer,
            prints,
            unread,
        })
    }

    fn record<T>(&mut self, r: Result<T>) -> std::io::Result<T> {
        r.map_err(|e| {
            let io = match &e {
                Error::Backend(b) if b.is_storage_full() => std::io::Error::from_raw_os_error(28),
                other => std::io::Error::other(other.to_string()),
            };
            if self.error.is_none() {
                self.error = Some(e);
            }
            io
        })
    }
}

impl CaptureTarget for CaptureImage {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let r = self.write(offset, data);
        self.record(r)
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        let r = self.read(offset, buf);
        self.record(r)
    }

    fn truncate(&mut self, size: u64) -> std::io::Result<()> {
        let r = CaptureImage::truncate(self, size);
        self.record(r)
    }

    fn size(&self) -> u64 {
        self.size
    }
}

//! The capture pipeline: blocks are hashed and compressed in batches on every
//! core (rayon), then their chunks are recorded in order through the one chunk
//! writer. Two ways in:
//!
//! ```text
//! backup API:  SQLite thread ──batches (bounded channel)──▶ processing thread
//!                VFS writes,                                 par: as below
//!                block assembly                              seq: dedup, packs, writes
//!
//! direct read: capture thread ── block numbers ──▶ par: each worker reads its
//!                                                  block (pread, WAL frames) and
//!                                                  processes it
//!                                                  seq: dedup, packs, writes
//!
//! par: prints and check; for a changed block CV, chunk ids, index lookup,
//!      zstd (new chunks only)
//! ```
//!
//! The backup API's pages arrive on SQLite's thread; the channel holds at most
//! [`IN_FLIGHT`] batches of about [`BATCH_BYTES`], so memory stays bounded
//! whatever the database size: when the store is slower than SQLite, SQLite
//! waits. The rare read-back of a block already handed over (SQLite rewriting
//! or re-reading a page) first waits for the pipeline to drain.
//!
//! A direct read needs no such thread: the workers read the blocks they
//! process ([`Pipeline::read_blocks`]), so reading runs on every core and a
//! block stays in its core's cache from the read to the last hash.

use super::direct::Untouched;
use crate::backup::chunk_writer::{slot_len, ChunkWriter, Encoded};
use crate::backup::prints::file::Recorder;
use crate::backup::prints::{Compared, Print, Printing};
use crate::digest::image_check::{self, Digest};
use crate::digest::tree_hash::block_cv;
use crate::types::{ChunkId, ChunkRef};
use crate::{Error, Result};
use blake3::hazmat::ChainingValue;
use rayon::prelude::*;
use std::ops::Range;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Bytes of blocks sent to the processing thread at once.
const BATCH_BYTES: usize = 2 << 20;
/// Batches queued between the threads (beyond the one being processed).
const IN_FLIGHT: usize = 2;

/// A block after processing: its blake3 chaining value, its image-check digest
/// and its chunks.
pub(crate) struct BlockDone {
    pub cv: ChainingValue,
    pub check: Digest,
    pub chunks: Vec<ChunkRef>,
}

/// The processed blocks, by number, in two flat vectors: each block's chaining
/// value, image-check digest and chunk count, and every block's chunks at
/// `b * per_block`. (A map of per-block vectors cost ~650 bytes per 64 KiB block,
/// and the capture's final chunk list was a second copy of it; here the chunk
/// vector is that list.)
#[derive(Default)]
pub(crate) struct DoneBlocks {
    per_block: usize,
    blocks: Vec<Option<(ChainingValue, Digest, u16)>>,
    chunks: Vec<ChunkRef>,
}

impl DoneBlocks {
    /// Sized for `chunks` chunks (the source's size when the capture began): a
    /// table grown by doubling held twice what it needed at its last step.
    fn new(per_block: usize, chunks: usize) -> Self {
        let blocks = chunks.div_ceil(per_block.max(1));
        let mut d = DoneBlocks {
            per_block,
            ..Default::default()
        };
        d.blocks.reserve_exact(blocks);
        d.chunks.reserve_exact(blocks * per_block);
        d
    }

    fn insert(&mut self, b: u64, d: BlockDone) -> Result<()> {
        let b = b as usize;
        if d.chunks.len() > self.per_block {
            return Err(Error::Internal("a block with too many chunks".into()));
        }
        if self.blocks.len() <= b {
            self.blocks.resize(b + 1, None);
            self.chunks.resize((b + 1) * self.per_block, ChunkRef::Zero);
        }
        let at = b * self.per_block;
        self.chunks[at..at + d.chunks.len()].copy_from_slice(&d.chunks);
        self.blocks[b] = Some((d.cv, d.check, d.chunks.len() as u16));
        Ok(())
    }

    /// Block `b`, if processed.
    pub(crate) fn get(&self, b: u64) -> Option<BlockDone> {
        let (cv, check, n) = (*self.blocks.get(b as usize)?)?;
        let at = b as usize * self.per_block;
        Some(BlockDone {
            cv,
            check,
            chunks: self.chunks[at..at + n as usize].to_vec(),
        })
    }

    /// Block `b`, if processed, forgetting it.
    pub(crate) fn remove(&mut self, b: u64) -> Option<BlockDone> {
        let d = self.get(b)?;
        self.blocks[b as usize] = None;
        Some(d)
    }

    /// Forgets the blocks from `n` on (the image was cut).
    pub(crate) fn keep_first(&mut self, n: u64) {
        let n = n as usize;
        if n < self.blocks.len() {
            self.blocks.truncate(n);
            self.chunks.truncate(n * self.per_block);
        }
    }

    /// The chaining values of blocks `0..n`, if all were processed.
    pub(crate) fn cvs(&self, n: u64) -> Option<Vec<ChainingValue>> {
        (0..n as usize)
            .map(|b| self.blocks.get(b).copied().flatten().map(|(cv, _, _)| cv))
            .collect()
    }

    /// The image-check digests of blocks `0..n`, if all were processed.
    pub(crate) fn checks(&self, n: u64) -> Option<Vec<Digest>> {
        (0..n as usize)
            .map(|b| self.blocks.get(b).copied().flatten().map(|(_, d, _)| d))
            .collect()
    }

    /// The chunks of blocks `0..n` in order, if all were processed and all but the
    /// last are full.
    pub(crate) fn into_chunks(mut self, n: u64) -> Option<Vec<ChunkRef>> {
        let n = n as usize;
        let mut total = 0;
        for b in 0..n {
            let (_, _, count) = self.blocks.get(b).copied().flatten()?;
            if b + 1 < n && count as usize != self.per_block {
                return None;
            }
            total = b * self.per_block + count as usize;
        }
        self.chunks.truncate(total);
        Some(self.chunks)
    }
}

type DoneMap = Arc<Mutex<DoneBlocks>>;
/// What the processing thread ends with: the writer, and the record of the
/// image's prints (when printing, and it could be written).
type Processed = (ChunkWriter, Option<Recorder>);
/// Block buffers handed back after processing, for reuse (not zeroed).
type Pool = Arc<Mutex<Vec<Vec<u8>>>>;
/// Buffers kept for reuse at most.
const POOL_MAX: usize = 64;
type ReadReply = SyncSender<Result<Vec<Vec<u8>>>>;

enum Msg {
    /// Blocks (number, bytes) to process.
    Blocks(Vec<(u64, Vec<u8>)>),
    /// Read these chunks back, after everything sent before (an empty list is a barrier).
    Read(Vec<ChunkId>, ReadReply),
}

pub(crate) struct Pipeline {
    mode: Mode,
    done: DoneMap,
    pool: Pool,
    batch: Vec<(u64, Vec<u8>)>,
    batch_bytes: usize,
}

/// Where blocks are processed: on the processing thread, fed through the
/// channel (the backup API's capture, whose pages come from SQLite's thread),
/// or on the caller's thread (a direct capture, whose blocks the workers read
/// themselves: [`Pipeline::read_blocks`]).
enum Mode {
    Thread {
        tx: Option<SyncSender<Msg>>,
        thread: Option<JoinHandle<Result<Processed>>>,
    },
    Inline(Option<Box<Processor>>),
}

impl Pipeline {
    /// A pipeline for blocks of `block_len` bytes in chunks of `chunk_len`;
    /// `inline`: processed on the caller's thread (see [`Mode`]).
    pub(crate) fn new(
        writer: ChunkWriter,
        (block_len, chunk_len): (u64, u64),
        printing: Option<Printing>,
        expect_chunks: usize,
        inline: bool,
    ) -> Result<Self> {
        let per_block = (block_len / chunk_len).max(1) as usize;
        let done = DoneBlocks::new(per_block, expect_chunks);
        let done: DoneMap = Arc::new(Mutex::new(done));
        let pool: Pool = Arc::default();
        let processor = Processor {
            writer,
            printing,
            done: done.clone(),
            pool: pool.clone(),
            sizes: (block_len, chunk_len),
            outs: Vec::new(),
            unread: 0,
        };
        let mode = match inline {
            true => Mode::Inline(Some(Box::new(processor))),
            false => {
                let (tx, rx) = sync_channel(IN_FLIGHT);
                let thread = std::thread::Builder::new()
                    .name("pagesnap-chunks".into())
                    .spawn(move || process(processor, rx))
                    .map_err(|e| Error::Internal(format!("cannot start the chunk thread: {e}")))?;
                Mode::Thread {
                    tx: Some(tx),
                    thread: Some(thread),
                }
            }
        };
        Ok(Pipeline {
            mode,
            done,
            pool,
            batch: Vec::new(),
            batch_bytes: 0,
        })
    }

    /// A used block buffer of `len` bytes (its content is stale), if one is free.
    pub(crate) fn recycled(&self, len: usize) -> Option<Vec<u8>> {
        let buf = self.pool.lock().ok()?.pop()?;
        (buf.len() == len).then_some(buf)
    }

    /// Queues a complete block.
    pub(crate) fn submit(&mut self, b: u64, data: Vec<u8>) -> Result<()> {
        self.batch_bytes += data.len();
        self.batch.push((b, data));
        if self.batch_bytes >= BATCH_BYTES {
            self.send_batch()?;
        }
        Ok(())
    }

    fn send_batch(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        match &mut self.mode {
            Mode::Inline(p) => inline(p)?.blocks(batch),
            Mode::Thread { .. } => self.send(Msg::Blocks(batch)),
        }
    }

    fn send(&mut self, msg: Msg) -> Result<()> {
        let sent = match &self.mode {
            Mode::Thread { tx: Some(tx), .. } => tx.send(msg).is_ok(),
            _ => false,
        };
        if sent {
            Ok(())
        } else {
            Err(self.failure())
        }
    }

    /// The processing thread stopped early: its error.
    fn failure(&mut self) -> Error {
        let Mode::Thread { tx, thread } = &mut self.mode else {
            return Error::Internal("the chunk pipeline is closed".into());
        };
        *tx = None;
        match thread.take().map(JoinHandle::join) {
            Some(Ok(Err(e))) => e,
            Some(Err(_)) => Error::Internal("the chunk thread panicked".into()),
            _ => Error::Internal("the chunk thread stopped".into()),
        }
    }

    /// Processes the whole blocks `blocks` (an inline pipeline only), each
    /// read by the worker that processes it: `read(b, buf)` fills `buf` with
    /// block `b`. The block stays in that core's cache from the read to the
    /// last hash, and reading runs on every core. A block for which
    /// `untouched(b)` holds is taken from the parent's record without a read,
    /// where it has one.
    pub(crate) fn read_blocks(
        &mut self,
        blocks: Range<u64>,
        read: &BlockRead<'_>,
        untouched: &Untouched<'_>,
    ) -> Result<()> {
        self.send_batch()?;
        match &mut self.mode {
            Mode::Inline(p) => inline(p)?.read_blocks(blocks, read, untouched),
            Mode::Thread { .. } => Err(Error::Internal(
                "blocks read by the workers need an inline pipeline".into(),
            )),
        }
    }

    /// Reads chunks back once everything queued before is processed.
    pub(crate) fn read(&mut self, ids: Vec<ChunkId>) -> Result<Vec<Vec<u8>>> {
        self.send_batch()?;
        if let Mode::Inline(p) = &mut self.mode {
            return inline(p)?.read_back(&ids);
        }
        let (reply, answer) = sync_channel(1);
        self.send(Msg::Read(ids, reply))?;
        match answer.recv() {
            Ok(r) => r,
            Err(_) => Err(self.failure()),
        }
    }

    /// Waits until every block submitted so far is processed.
    pub(crate) fn sync(&mut self) -> Result<()> {
        self.read(Vec::new()).map(|_| ())
    }

    /// The processed blocks (call [`Pipeline::sync`] first for an up-to-date view).
    pub(crate) fn done(&self) -> Result<std::sync::MutexGuard<'_, DoneBlocks>> {
        self.done
            .lock()
            .map_err(|_| Error::Internal("capture block table poisoned".into()))
    }

    /// Blocks taken from the parent without being read (the WAL proved them
    /// untouched: guide.rs).
    pub(crate) fn unread(&self) -> u64 {
        match &self.mode {
            Mode::Inline(Some(p)) => p.unread,
            _ => 0,
        }
    }

    /// Processes what is queued, stops the thread; returns the writer, every
    /// block, and the record of their prints (if printing, and it could be written).
    pub(crate) fn finish(mut self) -> Result<(ChunkWriter, DoneBlocks, Option<Recorder>)> {
        self.send_batch()?;
        let (writer, recorder) = match &mut self.mode {
            Mode::Inline(p) => p
                .take()
                .ok_or_else(|| Error::Internal("the chunk pipeline is finished".into()))?
                .finish(),
            Mode::Thread { tx, thread } => {
                *tx = None;
                match thread.take().map(JoinHandle::join) {
                    Some(Ok(r)) => r?,
                    _ => return Err(Error::Internal("the chunk thread panicked".into())),
                }
            }
        };
        let done = std::mem::take(&mut *self.done()?);
        Ok((writer, done, recorder))
    }
}

/// The inline pipeline's processor, unless it was taken (finished).
fn inline(p: &mut Option<Box<Processor>>) -> Result<&mut Processor> {
    p.as_deref_mut()
        .ok_or_else(|| Error::Internal("the chunk pipeline is finished".into()))
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        // Close the channel and let the thread end (on an error path, its result
        // was already taken or no longer matters).
        if let Mode::Thread { tx, thread } = &mut self.mode {
            *tx = None;
            if let Some(t) = thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// What the parallel half made of one block: number, chaining value, image-check
/// digest, chunks and prints.
type BlockOut = (u64, ChainingValue, Digest, Vec<Encoded>, Vec<Print>);

/// The parallel half for block `b`: its prints and image-check digest; then,
/// unless the parent's block was the same, its chaining value and chunks (named,
/// looked up and compressed into `out`).
fn process_block(
    w: &ChunkWriter,
    printing: Option<&Printing>,
    (block_len, chunk_len): (u64, u64),
    b: u64,
    data: &[u8],
    out: &mut Vec<u8>,
) -> Result<BlockOut> {
    let prints: Vec<Print> = match printing {
        Some(p) => data
            .chunks(chunk_len as usize)
            .map(|c| p.printer.print(c))
            .collect(),
        None => Vec::new(),
    };
    let check = image_check::block_digest(data, chunk_len as usize);
    let parent = printing.and_then(|p| p.parent.as_ref());
    let first = b * block_len / chunk_len;
    let compared = parent.and_then(|p| p.compare(b, data.len(), &prints, &check));
    // A changed block's chunks whose prints did not change keep their ids.
    let same = match compared {
        Some(Compared::Same(cv)) => match w.known(first, prints.len()) {
            Some(chunks) => return Ok((b, cv, check, chunks, prints)),
            // Some position lacks the parent's chunk: each chunk on its own.
            None => Some(vec![true; prints.len()]),
        },
        Some(Compared::Changed(same)) => Some(same),
        None => None,
    };
    let cv = block_cv(b * block_len, data);
    let chunks = w.encode_block(data, chunk_len as usize, first, same.as_deref(), out)?;
    Ok((b, cv, check, chunks, prints))
}

/// Block `b` as the parent had it, taken without reading it (the WAL proves
/// it untouched since: guide.rs): the parent's record of it (chaining value,
/// image-check digest, prints) and its chunks, if the parent has both and
/// the block was whole there.
fn from_parent(
    w: &ChunkWriter,
    printing: Option<&Printing>,
    (block_len, chunk_len): (u64, u64),
    b: u64,
) -> Option<BlockOut> {
    let was = printing?.parent.as_ref()?.whole_block(b)?;
    let per_block = (block_len / chunk_len) as usize;
    let chunks = w.known(b * block_len / chunk_len, per_block)?;
    Some((b, was.cv, was.check, chunks, was.prints))
}

/// How a worker reads a block: `read(b, buf)` fills `buf` (the block's
/// length) with block `b` of the image.
pub(crate) type BlockRead<'a> = dyn Fn(u64, &mut [u8]) -> Result<()> + Sync + 'a;

/// What processes blocks: each batch in parallel (rayon), then its chunks in
/// order through the one chunk writer.
struct Processor {
    writer: ChunkWriter,
    printing: Option<Printing>,
    done: DoneMap,
    pool: Pool,
    sizes: (u64, u64),
    /// Each block's compressed chunks, in slots of one buffer per block (see
    /// `ChunkWriter::encode_block`), reused from batch to batch.
    outs: Vec<Vec<u8>>,
    /// Blocks taken from the parent without being read.
    unread: u64,
}

impl Processor {
    /// A batch of blocks already read (number, bytes).
    fn blocks(&mut self, blocks: Vec<(u64, Vec<u8>)>) -> Result<()> {
        if self.outs.len() < blocks.len() {
            self.outs.resize_with(blocks.len(), Vec::new);
        }
        let (w, p, sizes) = (&self.writer, self.printing.as_ref(), self.sizes);
        let encoded: Vec<BlockOut> = blocks
            .par_iter()
            .zip(self.outs.par_iter_mut())
            .map(|((b, data), out)| process_block(w, p, sizes, *b, data, out))
            .collect::<Result<_>>()?;
        if let Ok(mut p) = self.pool.lock() {
            let room = POOL_MAX.saturating_sub(p.len());
            p.extend(blocks.into_iter().map(|(_, d)| d).take(room));
        }
        self.record(encoded)
    }

    /// A batch of whole blocks, each read by the worker that processes it
    /// into that thread's own buffer, or taken from the parent if `untouched`.
    fn read_blocks(
        &mut self,
        blocks: Range<u64>,
        read: &BlockRead<'_>,
        untouched: &Untouched<'_>,
    ) -> Result<()> {
        thread_local! {
            static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let n = (blocks.end - blocks.start) as usize;
        if self.outs.len() < n {
            self.outs.resize_with(n, Vec::new);
        }
        let (w, p, sizes) = (&self.writer, self.printing.as_ref(), self.sizes);
        let block_len = sizes.0 as usize;
        let first = blocks.start;
        let unread = std::sync::atomic::AtomicU64::new(0);
        let encoded: Vec<BlockOut> = (0..n)
            .into_par_iter()
            .zip(self.outs.par_iter_mut())
            .map(|(i, out)| {
                let b = first + i as u64;
                if untouched(b) {
                    if let Some(done) = from_parent(w, p, sizes, b) {
                        unread.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        return Ok(done);
                    }
                }
                // Taken out of the thread's slot for the block's time, not
                // borrowed: processing a block runs parallel loops of its own,
                // and while this thread waits on one it may take up another
                // block (of this batch, or of another backup in the process),
                // which then finds the slot empty and uses a buffer of its own.
                let mut buf = BUFFER.with(|slot| slot.take());
                buf.resize(block_len, 0);
                let r = read(b, &mut buf).and_then(|()| process_block(w, p, sizes, b, &buf, out));
                BUFFER.with(|slot| slot.replace(buf));
                r
            })
            .collect::<Result<_>>()?;
        self.unread += unread.into_inner();
        self.record(encoded)
    }

    /// Records a processed batch's chunks, in order.
    fn record(&mut self, encoded: Vec<BlockOut>) -> Result<()> {
        let slot = slot_len(self.sizes.1 as usize);
        for ((b, cv, check, chunks, prints), out) in encoded.into_iter().zip(&self.outs) {
            // Each chunk's own slot; an unchanged block's chunks have
            // none (nothing was encoded: `out` is another block's).
            let chunks = chunks
                .into_iter()
                .enumerate()
                .map(|(i, e)| {
                    let s = out.get(i * slot..(i + 1) * slot).unwrap_or(&[]);
                    self.writer.accept(e, s)
                })
                .collect::<Result<Vec<_>>>()?;
            if let Some(p) = &mut self.printing {
                p.record(b, &cv, &check, &prints);
            }
            let d = BlockDone { cv, check, chunks };
            self.done
                .lock()
                .map_err(|_| Error::Internal("capture block table poisoned".into()))?
                .insert(b, d)?;
        }
        Ok(())
    }

    /// The stored chunks `ids`, read back (after everything processed so far).
    fn read_back(&mut self, ids: &[ChunkId]) -> Result<Vec<Vec<u8>>> {
        ids.iter().map(|id| self.writer.read(id)).collect()
    }

    fn finish(mut self) -> Processed {
        let recorder = self.printing.as_mut().and_then(|p| p.take_recorder());
        (self.writer, recorder)
    }
}

/// The processing thread: each batch as it comes.
fn process(mut p: Processor, rx: Receiver<Msg>) -> Result<Processed> {
    for msg in rx {
        match msg {
            Msg::Blocks(blocks) => p.blocks(blocks)?,
            Msg::Read(ids, reply) => {
                let r = p.read_back(&ids);
                // The capture thread may have given up waiting; nothing to do then.
                let _ = reply.send(r);
            }
        }
    }
    Ok(p.finish())
}

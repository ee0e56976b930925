//! The image SQLite reads: a snapshot's chunks through the snapshot reader, with
//! a bounded cache and read-ahead.
//!
//! SQLite keeps its own page cache (2 MB by default), so this one holds what it
//! would read again soon: the rest of a multi-page chunk, and what read-ahead
//! fetched. A lookup reads a few scattered pages, one ranged read each; a scan
//! reads pages in order, so each miss that follows the last one doubles the
//! next read (up to [`MAX_WINDOW`] bytes, and a quarter of the cache), which
//! turns a table scan into few large reads: on S3 that is the request count.

use super::vfs::Image;
use crate::restore::SnapshotReader;
use crate::store::lock::LockGuard;
use crate::Result;
use hashlink::LruCache;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

/// The longest read-ahead: 1 MiB, a few thousand rows of a table.
const MAX_WINDOW: u64 = 1 << 20;
/// What the first read of the image's start takes: page 1 (the header and the
/// schema's root), and the root pages of the tables and indexes created with
/// the database, which are the next pages. On S3 one request instead of one
/// per b-tree a query starts from.
const START_WINDOW: u64 = 64 << 10;

/// What reading a snapshot in place has cost so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Reads of the store (each one or more chunks, in one ranged read per
    /// pack run).
    pub reads: u64,
    /// Chunks decoded from the store (zero chunks included).
    pub chunks: u64,
    /// Bytes of image those chunks hold.
    pub bytes: u64,
    /// Chunk lookups answered by the cache.
    pub cache_hits: u64,
}

/// A snapshot's image, read through a bounded cache of chunks.
pub(crate) struct CachedImage {
    reader: SnapshotReader,
    len: u64,
    chunk_len: u64,
    chunk_count: usize,
    budget: u64,
    state: Mutex<CacheState>,
    stats: Stats,
    /// The store's read lock, held while the image can be read: nothing a
    /// query reads is pruned under it.
    _lock: Option<LockGuard>,
}

struct CacheState {
    chunks: LruCache<usize, Arc<Vec<u8>>>,
    bytes: u64,
    /// Where the last read from the store ended, and how long it was: a miss
    /// right there continues a scan.
    next: usize,
    window: u64,
}

#[derive(Default)]
struct Stats {
    reads: AtomicU64,
    chunks: AtomicU64,
    bytes: AtomicU64,
    cache_hits: AtomicU64,
}

impl CachedImage {
    /// The image of `reader`'s snapshot, caching up to `cache_bytes` of chunks
    /// (at least two chunks' worth).
    pub(crate) fn new(reader: SnapshotReader, cache_bytes: u64, lock: Option<LockGuard>) -> Self {
        let m = &reader.snapshot().manifest;
        let (len, chunk_len) = (m.image_len, m.chunk_len());
        let chunk_count = reader.chunk_count();
        CachedImage {
            reader,
            len,
            chunk_len,
            chunk_count,
            budget: cache_bytes.max(2 * chunk_len),
            state: Mutex::new(CacheState {
                chunks: LruCache::new_unbounded(),
                bytes: 0,
                next: usize::MAX,
                window: 0,
            }),
            stats: Stats::default(),
            _lock: lock,
        }
    }

    /// The reader under the cache (chunk positions, and what they hold).
    pub(crate) fn reader(&self) -> &SnapshotReader {
        &self.reader
    }

    /// Page `n` (numbered from 1, as SQLite does), through the cache.
    pub(crate) fn page(&self, n: u64) -> Result<Vec<u8>> {
        let ps = self.reader.snapshot().manifest.page_size as u64;
        let mut buf = vec![0u8; ps as usize];
        match n
            .checked_sub(1)
            .map(|i| i * ps)
            .filter(|&at| at + ps <= self.len)
        {
            Some(at) => self.read_at(at, &mut buf)?,
            None => {
                return Err(crate::Error::Invalid {
                    what: "page number",
                    detail: format!("page {n} is not in the snapshot's {} bytes", self.len),
                })
            }
        }
        Ok(buf)
    }

    /// Chunk `pos`, from the cache or read (with what follows it, in a scan).
    fn chunk(&self, pos: usize) -> Result<Arc<Vec<u8>>> {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = st.chunks.get(&pos) {
            self.stats.cache_hits.fetch_add(1, Relaxed);
            return Ok(c.clone());
        }
        // A miss where the last read ended continues a scan: read twice as far.
        st.window = match (st.next == pos, pos) {
            (true, _) => (st.window * 2).clamp(self.chunk_len, self.max_window()),
            (false, 0) => START_WINDOW.clamp(self.chunk_len, self.max_window()),
            (false, _) => self.chunk_len,
        };
        let wanted = (st.window / self.chunk_len).max(1) as usize;
        let mut end = pos + 1;
        while end < self.chunk_count && end - pos < wanted && !st.chunks.contains_key(&end) {
            end += 1;
        }
        let bytes = self.reader.read_positions(pos..end)?;
        self.stats.reads.fetch_add(1, Relaxed);
        self.stats.chunks.fetch_add((end - pos) as u64, Relaxed);
        self.stats.bytes.fetch_add(bytes.len() as u64, Relaxed);
        st.next = end;
        let mut first = None;
        for (i, piece) in bytes.chunks(self.chunk_len as usize).enumerate() {
            let chunk = Arc::new(piece.to_vec());
            first.get_or_insert_with(|| chunk.clone());
            st.bytes += chunk.len() as u64;
            st.chunks.insert(pos + i, chunk);
        }
        while st.bytes > self.budget {
            match st.chunks.remove_lru() {
                Some((_, c)) => st.bytes -= c.len() as u64,
                None => break,
            }
        }
        first.ok_or_else(|| crate::Error::Internal(format!("chunk {pos} read as nothing")))
    }

    fn max_window(&self) -> u64 {
        (self.budget / 4).clamp(self.chunk_len, MAX_WINDOW.max(self.chunk_len))
    }
}

impl Image for CachedImage {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let at = offset + done as u64;
            let pos = (at / self.chunk_len) as usize;
            let chunk = self.chunk(pos)?;
            let from = (at - pos as u64 * self.chunk_len) as usize;
            let piece = chunk.get(from..).unwrap_or_default();
            let n = piece.len().min(buf.len() - done);
            if n == 0 {
                return Err(crate::Error::Internal(format!(
                    "image byte {at} lies past chunk {pos}"
                )));
            }
            buf[done..done + n].copy_from_slice(&piece[..n]);
            done += n;
        }
        Ok(())
    }

    fn stats(&self) -> ReadStats {
        ReadStats {
            reads: self.stats.reads.load(Relaxed),
            chunks: self.stats.chunks.load(Relaxed),
            bytes: self.stats.bytes.load(Relaxed),
            cache_hits: self.stats.cache_hits.load(Relaxed),
        }
    }
}

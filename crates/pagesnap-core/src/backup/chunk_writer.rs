//! Stores the chunks of one backup: names each by its hash, skips zero chunks and
//! chunks the store already holds, compresses the rest into packs, and writes each
//! pack as one object when it reaches the target size.
//!
//! With dictionaries on, a backup either compresses with the dictionary its
//! database used before, or (first backup, or the old dictionary stopped fitting)
//! first collects up to [`SAMPLE_TARGET`] bytes of new chunks, trains a dictionary
//! on them, writes it, and then compresses everything with it.
//!
//! The work is split for the capture pipeline: [`ChunkWriter::encode_block`] (hash,
//! index lookup, compression) takes `&self` and runs on many threads at once, each
//! with its own zstd contexts; [`ChunkWriter::accept`] (dedup within the backup,
//! pack assembly, writes) takes `&mut self` and runs on one.

use super::base_choice::{self, Base};
use super::sketch::file::Sketch;
use super::sketch::Sketcher;
use super::skip;
use crate::backend::{Backend, PutMode};
use crate::codec::{whole, Attempt, Decoder, Encoder};
use crate::format::config::StoreConfig;
use crate::format::dict::DictBody;
use crate::format::index::{IndexEntry, PackRef};
use crate::format::pack::{Codec, PackBuilder, PackEntry};
use crate::index::cache::ChunkLookup;
use crate::index::id_table::IdTable;
use crate::store::base_cache::BaseCache;
use crate::store::bases::Bases;
use crate::store::pack_upload::Uploader;
use crate::store::NewChunks;
use crate::types::{is_all_zero, ChunkId, ChunkIds, ChunkRef, Id, IdMap};
use crate::{layout, Error, Result};
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

pub(crate) use crate::codec::slot_len;

/// Bytes of new chunks a dictionary is trained on (zstd suggests ~100× the
/// dictionary size).
pub(crate) const SAMPLE_TARGET: usize = 8 << 20;
/// Below this many sample bytes no dictionary is trained: it would cost more than it saves.
pub(crate) const MIN_SAMPLES: usize = 512 << 10;
/// Dictionary size: zstd's default, or a tenth of the samples when they are few.
const DICT_SIZE: usize = 110 << 10;

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
    /// Bytes of the dictionary this backup trained and wrote (0 if none).
    pub dict_bytes: u64,
    /// New chunks stored as deltas against their parent's chunk, and their bytes.
    pub delta_chunks: u64,
    pub delta_stored_bytes: u64,
    /// What those chunks would have taken stored alone: the delta saved
    /// `delta_whole_bytes - delta_stored_bytes`. Measured for most, estimated
    /// for the small deltas outside the measured sample (codec/whole.rs).
    pub delta_whole_bytes: u64,
}

/// How a backup compresses its new chunks.
pub(crate) enum DictPlan {
    /// No dictionary.
    None,
    /// The dictionary `id` (with its bytes).
    Use(Id, Vec<u8>),
    /// Train one on this backup's first new chunks.
    Train,
}

/// Room for a full pack plus its trailer and one oversized last chunk.
fn pack_capacity(target: usize) -> usize {
    target + target / 16 + (1 << 20)
}

/// A chunk after the parallel half of the work. The bytes of a new chunk are in
/// its slot of the block's buffer (see [`ChunkWriter::encode_block`]).
pub(crate) enum Encoded {
    Zero,
    /// Already in the store (found in the index).
    Known(ChunkId),
    /// New: its first `stored_len` slot bytes are stored as `codec` says
    /// (compressed, or kept raw when compression does not help).
    New {
        id: ChunkId,
        raw_len: u32,
        stored_len: u32,
        codec: Codec,
        /// A delta's base, depth and whole length (`DeltaBase::whole_len`).
        delta: Option<(ChunkId, u8, u32)>,
    },
    /// New, not compressed yet: a training sample (no dictionary chosen yet),
    /// its `len` raw bytes in the slot.
    Raw {
        id: ChunkId,
        len: u32,
    },
}

pub(crate) struct ChunkWriter {
    /// How the store names chunks (keyed in an encrypted store).
    ids: ChunkIds,
    backend: Arc<dyn Backend>,
    index: ChunkLookup,
    level: i32,
    /// The dictionary new packs use, once chosen, and its bytes.
    dict: Option<Id>,
    dict_bytes: Option<Arc<Vec<u8>>>,
    /// Compression contexts, one per worker thread (rayon's thread index; the
    /// last slot for any other thread), built on first use.
    ctxs: Vec<Mutex<Option<Encoder>>>,
    /// How often compressing without the dictionary beat it (see [`PlainTrial`]).
    trial: PlainTrial,
    /// Writes finished packs while compression goes on.
    uploads: Uploader,
    /// Samples waiting for training (`Some` while the plan is to train).
    samples: Option<Vec<(ChunkId, Vec<u8>)>>,
    sample_bytes: usize,
    decoders: Decoder,
    pack_target: usize,
    current: PackBuilder,
    /// Training samples held uncompressed: their positions in `samples`.
    sample_pos: IdMap<u32>,
    /// Every chunk this backup stored, in order, each once: its pack is a position
    /// in `packs`, or `packs.len()` while that pack is still being built.
    new: Vec<IndexEntry>,
    /// Positions in `new` by id (dedup within the backup, and reading back). One
    /// table of 4-byte slots instead of a map that repeated each id: see index/id_table.rs.
    table: IdTable,
    /// The packs this backup wrote.
    packs: Vec<PackRef>,
    stats: WriteStats,
    /// Deltas (a store with deltas and a parent): the parent's chunk at each
    /// position is a new chunk's base candidate, read through `bases`.
    parent: Option<Vec<ChunkRef>>,
    bases: Option<Bases>,
    /// The base, depth and whole length of every delta this backup stored.
    delta_rows: IdMap<(ChunkId, u8, u32)>,
    /// Those deltas and their whole lengths, added up (the report's).
    wholes: whole::WholeTally,
    /// A store that pays per request: bases come from this machine's base
    /// cache only, and new chunks are offered to it (store/base_cache.rs).
    base_cache: Option<Arc<BaseCache>>,
    /// Content-found bases and the new snapshot's sketch (a store with
    /// deltas: backup/sketch/; on S3 the bases it finds come from the base
    /// cache, as every base there does).
    sketch: Option<Sketcher>,
}

impl ChunkWriter {
    pub(crate) fn new(
        backend: Arc<dyn Backend>,
        index: ChunkLookup,
        config: &StoreConfig,
        plan: DictPlan,
        ids: ChunkIds,
    ) -> Result<Self> {
        let mut decoders = Decoder::new(ids.clone())?;
        let (dict, dict_bytes, samples) = match plan {
            DictPlan::None => (None, None, None),
            DictPlan::Use(id, bytes) => {
                decoders.add_dict(id, &bytes)?;
                (Some(id), Some(Arc::new(bytes)), None)
            }
            DictPlan::Train => (None, None, Some(Vec::new())),
        };
        let pack_target = config.pack_target_size as usize;
        let threads = rayon::current_num_threads() + 1;
        Ok(ChunkWriter {
            ids,
            uploads: Uploader::new(backend.clone()),
            backend,
            index,
            level: config.zstd_level,
            dict,
            dict_bytes,
            ctxs: (0..threads).map(|_| Mutex::new(None)).collect(),
            trial: PlainTrial::default(),
            samples,
            sample_bytes: 0,
            decoders,
            pack_target,
            current: PackBuilder::with_capacity(pack_capacity(pack_target), dict),
            sample_pos: IdMap::default(),
            new: Vec::new(),
            table: IdTable::default(),
            packs: Vec::new(),
            stats: WriteStats::default(),
            parent: None,
            bases: None,
            delta_rows: IdMap::default(),
            wholes: whole::WholeTally::default(),
            base_cache: None,
            sketch: None,
        })
    }

    /// Encodes new chunks as deltas against `parent`'s chunk at the same
    /// position where that is smallest (a store with deltas). Bases are read
    /// from the store and kept decoded in an LRU of at most `cache_bytes`.
    pub(crate) fn use_deltas(&mut self, parent: Vec<ChunkRef>, cache_bytes: usize) -> Result<()> {
        // A backup holds the shared lock, which keeps prune and repair out:
        // the packs its bases' chains are read from stay open for it.
        let bases = Bases::new(self.backend.clone(), cache_bytes, self.ids.clone())?;
        self.bases = Some(bases.holding_open().checking_only_the_top());
        self.parent = Some(parent);
        Ok(())
    }

    /// [`ChunkWriter::use_deltas`] for a store that pays per request: base
    /// candidates are looked up in `cache` only (a miss stores the chunk
    /// plain, never a request), and every new chunk is offered to it, a first
    /// backup's (no `parent`) too. (`bases` still serves the rare read-back of
    /// a delta this backup stored.)
    pub(crate) fn use_cached_deltas(
        &mut self,
        parent: Option<Vec<ChunkRef>>,
        cache: Arc<BaseCache>,
    ) -> Result<()> {
        if let Some(parent) = parent {
            self.use_deltas(parent, crate::store::bases::BACKUP_CACHE_BYTES)?;
        }
        self.base_cache = Some(cache);
        Ok(())
    }

    /// Finds bases by content too (from the parent's sketch, if `sketcher`
    /// has a sound one) and keeps the features that the new snapshot's sketch
    /// needs.
    pub(crate) fn use_sketch(&mut self, sketcher: Sketcher) {
        self.sketch = Some(sketcher);
    }

    /// The new snapshot's sketch (with sketches on), given its chunks.
    pub(crate) fn take_sketch(&mut self, chunks: &[ChunkRef]) -> Option<Sketch> {
        let sketch = self.sketch.take()?;
        Some(sketch.finish(chunks, self.parent.as_deref()))
    }

    /// Prepares for about `n` new chunks (the database's size in chunks) when
    /// the store holds none yet: every chunk of a first backup is new. Sized
    /// once, the list and table of new chunks do not grow by doubling, whose
    /// last step held the old and the new copy at once.
    pub(crate) fn expect_new(&mut self, n: usize) {
        if self.index.entries() != 0 {
            return;
        }
        let n = n.min(1 << 28);
        self.new.reserve(n);
        if self.table.len() == 0 {
            self.table = IdTable::with_capacity(n);
        }
    }

    /// Whether this backup stored (or holds as a sample) the chunk `id` already.
    fn has(&self, id: &ChunkId) -> bool {
        self.sample_pos.contains_key(id) || self.find(id).is_some()
    }

    /// The entry of a chunk this backup stored.
    fn find(&self, id: &ChunkId) -> Option<&IndexEntry> {
        let new = &self.new;
        let p = self.table.get(id, |p| new[p as usize].entry.id)?;
        new.get(p as usize)
    }

    /// The `n` chunks from position `first` of a block the capture found
    /// unchanged since the parent (backup/prints/): the parent's chunks there,
    /// if the index knows each (a zero chunk, or a stored one whose pack is
    /// present). `None` (hash the block as any other) when one is not, on the
    /// long way (which keeps no list of the parent's), or while a sketch is
    /// made afresh, which needs every chunk's features.
    pub(crate) fn known(&self, first: u64, n: usize) -> Option<Vec<Encoded>> {
        (first..first + n as u64)
            .map(|pos| self.known_at(pos))
            .collect()
    }

    /// [`ChunkWriter::known`] for the one chunk at position `pos`.
    fn known_at(&self, pos: u64) -> Option<Encoded> {
        if self.sketch.as_ref().is_some_and(|s| !s.has_parent()) {
            return None;
        }
        match self.index.parent_at(pos)? {
            ChunkRef::Zero => Some(Encoded::Zero),
            ChunkRef::Stored(id) => Some(Encoded::Known(id)),
        }
    }

    /// The parallel half, for one block of `chunk_len`-byte chunks: names each
    /// chunk and, if the store does not hold it yet, compresses it into its slot of
    /// `out` ([`slot_len`] bytes per chunk, in order). May run on many threads at once.
    ///
    /// Why slots in one buffer per block, reused: a `Vec` per compressed chunk
    /// (each of zstd's worst-case capacity for the chunk) was allocated on a
    /// worker thread and freed on the accepting one, two allocations per new
    /// chunk of a first backup; slots cost a little less time and memory.
    /// `first` is the position (in chunks) of the block's first chunk in the image.
    /// The chunks marked in `unchanged` (their prints equal the parent's at the
    /// same position) take the parent's chunk without being hashed, where the
    /// index has it ([`ChunkWriter::known`]).
    pub(crate) fn encode_block(
        &self,
        data: &[u8],
        chunk_len: usize,
        first: u64,
        unchanged: Option<&[bool]>,
        out: &mut Vec<u8>,
    ) -> Result<Vec<Encoded>> {
        let slot = slot_len(chunk_len);
        // A reused buffer of the same length is not cleared: every slot's bytes
        // that are read later are written first.
        out.resize(data.len().div_ceil(chunk_len) * slot, 0);
        out.par_chunks_mut(slot)
            .zip(data.par_chunks(chunk_len))
            .enumerate()
            .map(|(i, (slot, chunk))| {
                let pos = first + i as u64;
                let kept = unchanged
                    .is_some_and(|u| u.get(i) == Some(&true))
                    .then(|| self.known_at(pos))
                    .flatten();
                match kept {
                    Some(k) => Ok(k),
                    None => self.encode_into(chunk, slot, pos),
                }
            })
            .collect()
    }

    /// One chunk of [`ChunkWriter::encode_block`], at position `pos`.
    fn encode_into(&self, data: &[u8], slot: &mut [u8], pos: u64) -> Result<Encoded> {
        if is_all_zero(data) {
            return Ok(Encoded::Zero);
        }
        let id = self.ids.of(data);
        let parent = self.parent.as_deref();
        let sketch = self
            .sketch
            .as_ref()
            .filter(|s| s.wants(parent.and_then(|p| p.get(pos as usize)), &id));
        // A changed chunk's features are what its content-found base is looked
        // up by, and what the next backup's sketch holds. With the parent's
        // sketch and a base to try, they are computed only when that lookup is
        // made (the same-position delta is poor); else now (every chunk of a
        // sketch made afresh).
        let lazy = sketch.filter(|s| s.has_parent() && parent.is_some() && self.bases.is_some());
        let eager = sketch
            .filter(|_| lazy.is_none())
            .map(|s| s.compute(pos, &id, data));
        if self.index.contains(&id) {
            if let Some(s) = lazy {
                s.compute(pos, &id, data);
            }
            return Ok(Encoded::Known(id));
        }
        if let Some(cache) = &self.base_cache {
            cache.offer(&id, data);
        }
        // With the parent's sketch on a local store, skip-delta bases: the
        // link of the parent's chain this version is planned against
        // (skip.rs); without it (no sketch on this machine yet), and on S3
        // (bases from the base cache, which holds chunks, not chains), the
        // parent's chunk itself.
        let plan = match &self.base_cache {
            Some(_) => None,
            None => self.sketch.as_ref().and_then(|s| s.plan(pos)),
        };
        let (same_base, planned) = match plan {
            None => (base_choice::Same::Chunk, None),
            Some(skip::Next::Whole) => (base_choice::Same::Not, None),
            Some(skip::Next::Link { depth, planned }) => (base_choice::Same::Link(depth), planned),
        };
        // A chunk with a base is encoded now even while samples are collected
        // (a delta beats the dictionary frame: DELTAS.md); the others wait.
        let choice = match (parent, &self.bases) {
            (Some(parent), Some(bases)) => Some(base_choice::Choice {
                parent,
                bases,
                index: &self.index,
                cache: self.base_cache.as_deref(),
                sketch: self.sketch.as_ref(),
                same_base,
                pos,
                id: &id,
            }),
            _ => None,
        };
        let features = std::cell::Cell::new(eager);
        let found_by = |c: &base_choice::Choice| {
            let f = match (features.get(), lazy) {
                (Some(f), _) => f,
                (None, Some(s)) => {
                    let f = s.compute(pos, &id, data);
                    features.set(Some(f));
                    f
                }
                (None, None) => return None,
            };
            c.found(&f)
        };
        let same = choice.as_ref().and_then(|c| c.same());
        // The content-found base is looked up only when needed (base_choice.rs).
        let mut found = None;
        if self.samples.is_some() && same.is_none() {
            found = choice.as_ref().and_then(found_by);
            if found.is_none() {
                // A sample is stored whole (once the dictionary is chosen).
                if let Some(s) = &self.sketch {
                    s.record_state(pos, &id, 0);
                }
                slot[..data.len()].copy_from_slice(data);
                return Ok(Encoded::Raw {
                    id,
                    len: data.len() as u32,
                });
            }
        }
        let mut more = || found.take().or_else(|| choice.as_ref().and_then(found_by));
        let (stored_len, codec, delta) = self.with_ctx(|ctx| {
            compress_among(ctx, data, slot, &self.trial, &id, same.as_ref(), &mut more)
        })?;
        if let Some(s) = &self.sketch {
            let same_id = same.as_ref().map(|b| b.0);
            let kept = delta.map(|(base, depth, _)| (depth, Some(base) == same_id));
            s.record_state(pos, &id, skip::recorded(planned, kept));
        }
        // Never looked up: the delta against the same position was small, so
        // the chunk holds mostly its base's content, and the next sketch takes
        // the base's features for it (Sketcher::inherit says how far that goes).
        if features.get().is_none() {
            if let Some(s) = lazy {
                s.inherit(pos, &id);
            }
        }
        Ok(Encoded::New {
            id,
            raw_len: data.len() as u32,
            stored_len: stored_len as u32,
            codec,
            delta,
        })
    }

    /// Compresses one chunk into a new buffer (samples, and chunks that were
    /// samples when encoded).
    fn compress(&self, data: &[u8]) -> Result<(Vec<u8>, Codec)> {
        self.compress_with(data, &self.trial)
    }

    /// [`ChunkWriter::compress`], recording what it tried in `trial`.
    fn compress_with(&self, data: &[u8], trial: &PlainTrial) -> Result<(Vec<u8>, Codec)> {
        let mut out = vec![0; slot_len(data.len())];
        // Without bases the chunk's id is not used: not hashed again.
        let no_id = Id([0; 32]);
        let (len, codec, _) = self.with_ctx(|ctx| {
            compress_among(ctx, data, &mut out, trial, &no_id, None, &mut || None)
        })?;
        out.truncate(len);
        Ok((out, codec))
    }

    /// Runs `f` with this thread's contexts (built on first use, and again when
    /// the dictionary changed).
    fn with_ctx<T>(&self, f: impl FnOnce(&mut Encoder) -> Result<T>) -> Result<T> {
        let mut guard = self.ctxs[crate::thread_slot(self.ctxs.len())]
            .lock()
            .map_err(|_| Error::Internal("compression context poisoned".into()))?;
        if guard.as_ref().is_none_or(|c| c.dict() != self.dict) {
            *guard = Some(self.new_ctx()?);
        }
        let ctx = guard
            .as_mut()
            .ok_or_else(|| Error::Internal("compression context missing".into()))?;
        f(ctx)
    }

    fn new_ctx(&self) -> Result<Encoder> {
        let dict = match (self.dict, &self.dict_bytes) {
            (Some(id), Some(bytes)) => Some((id, bytes.as_slice())),
            _ => None,
        };
        Encoder::new(self.level, dict)
    }

    /// The sequential half: records an encoded chunk (`slot`: its slot of the
    /// block's buffer), skipping one this backup stored already, collecting
    /// training samples, appending to the pack.
    pub(crate) fn accept(&mut self, e: Encoded, slot: &[u8]) -> Result<ChunkRef> {
        let (id, data) = match e {
            Encoded::Zero => {
                self.stats.zero_chunks += 1;
                return Ok(ChunkRef::Zero);
            }
            Encoded::Known(id) => {
                self.stats.reused_chunks += 1;
                return Ok(ChunkRef::Stored(id));
            }
            Encoded::New { id, .. } | Encoded::Raw { id, .. } if self.has(&id) => {
                self.stats.reused_chunks += 1;
                return Ok(ChunkRef::Stored(id));
            }
            Encoded::New {
                id,
                raw_len,
                stored_len,
                codec,
                delta,
            } => {
                let stored = slot
                    .get(..stored_len as usize)
                    .ok_or_else(|| Error::Internal("encoded chunk longer than its slot".into()))?;
                self.push(id, stored, raw_len, codec)?;
                if let Some(row) = delta {
                    self.delta_rows.insert(id, row);
                    self.wholes
                        .add(stored_len as u64, raw_len as u64, row.2 as u64);
                }
                return Ok(ChunkRef::Stored(id));
            }
            Encoded::Raw { id, len } => {
                let data = slot
                    .get(..len as usize)
                    .ok_or_else(|| Error::Internal("sample longer than its slot".into()))?;
                (id, data.to_vec())
            }
        };
        if let Some(samples) = &mut self.samples {
            self.sample_pos.insert(id, samples.len() as u32);
            self.sample_bytes += data.len();
            samples.push((id, data));
            if self.sample_bytes >= SAMPLE_TARGET {
                self.train()?;
            }
            return Ok(ChunkRef::Stored(id));
        }
        // Encoded while samples were still being collected; compressed here.
        self.store(id, &data)?;
        Ok(ChunkRef::Stored(id))
    }

    /// Compresses one new chunk into the current pack.
    fn store(&mut self, id: ChunkId, data: &[u8]) -> Result<()> {
        let (stored, codec) = self.compress(data)?;
        self.push(id, &stored, data.len() as u32, codec)
    }

    /// Appends one stored blob to the current pack (writing the pack when full).
    fn push(&mut self, id: ChunkId, stored: &[u8], raw_len: u32, codec: Codec) -> Result<()> {
        if !self.current.is_empty() && self.current.len() + stored.len() > self.pack_target {
            self.flush()?;
        }
        let data_len = raw_len as usize;
        let entry = if codec == Codec::ZstdDelta {
            // The pack becomes version 2 at its first delta (plain blobs are
            // the same in both versions).
            self.current.allow_deltas();
            self.current
                .try_push(id, stored, raw_len, codec)
                .map_err(|e| Error::Internal(format!("delta blob of {}: {e}", id.short())))?
        } else {
            self.current.push(id, stored, raw_len, codec)
        };
        let pos = self.new.len() as u32;
        let new = &self.new;
        if self
            .table
            .insert(&id, pos, |p| new[p as usize].entry.id)
            .is_some()
        {
            return Err(Error::Internal(format!(
                "chunk {} stored twice in one backup",
                id.short()
            )));
        }
        self.new.push(IndexEntry {
            pack: self.packs.len() as u32,
            entry,
        });
        self.stats.new_chunks += 1;
        self.stats.new_raw_bytes += data_len as u64;
        self.stats.new_stored_bytes += stored.len() as u64;
        Ok(())
    }

    /// Trains a dictionary on the samples (if there are enough), writes it, and
    /// stores the samples with it. Training that fails (too uniform data) just
    /// means no dictionary.
    fn train(&mut self) -> Result<()> {
        let Some(samples) = self.samples.take() else {
            return Ok(());
        };
        // Chunks stored while samples were collected (deltas) go in a pack of
        // their own, written before the dictionary is chosen: it has none.
        if !self.current.is_empty() {
            self.flush()?;
        }
        // The dictionary's bytes, if training gave one: until its object is named
        // (its body records how well the samples compressed with it), contexts are
        // keyed by the hash of its bytes.
        let trained = if self.sample_bytes >= MIN_SAMPLES {
            let refs: Vec<&[u8]> = samples.iter().map(|(_, d)| &d[..]).collect();
            let size = DICT_SIZE.min(self.sample_bytes / 10);
            zstd::dict::from_samples(&refs, size).ok()
        } else {
            None
        };
        if let Some(dict) = &trained {
            self.dict = Some(Id::of_object(dict));
            self.dict_bytes = Some(Arc::new(dict.clone()));
        }
        // Compressed on every core: a first backup trains on 8 MiB of samples. (The
        // samples are compressed once: their sizes also give the trained ratio.)
        // Each both ways, outside the backup's trial: a dictionary fits the pages
        // it was trained on better than any other, so they would overstate what
        // it saves on the rest.
        let this = &*self;
        let stored: Vec<(Vec<u8>, Codec)> = samples
            .par_iter()
            .map(|(_, data)| this.compress_with(data, &PlainTrial::default()))
            .collect::<Result<_>>()?;
        if let Some(dict) = trained {
            let stored_bytes: usize = stored.iter().map(|(b, _)| b.len()).sum();
            let body = DictBody {
                dict,
                trained_ratio: self.sample_bytes as f32 / stored_bytes.max(1) as f32,
                sample_bytes: self.sample_bytes as u64,
            };
            let bytes = body.encode();
            let id = Id::of_object(&bytes);
            // Written before any pack that needs it.
            self.backend
                .put(&layout::dict(&id), &bytes, PutMode::Overwrite)?;
            self.stats.dict_bytes = bytes.len() as u64;
            self.decoders.add_dict(id, &body.dict)?;
            self.dict = Some(id);
            self.dict_bytes = Some(Arc::new(body.dict));
            self.current = PackBuilder::with_capacity(pack_capacity(self.pack_target), self.dict);
        }
        for ((id, data), (blob, codec)) in samples.iter().zip(stored) {
            self.push(*id, &blob, data.len() as u32, codec)?;
        }
        self.sample_pos = IdMap::default();
        Ok(())
    }

    /// Reads back a chunk of this backup or of the store (needed only when SQLite
    /// rewrites or reads a page it already handed over).
    pub(crate) fn read(&mut self, id: &ChunkId) -> Result<Vec<u8>> {
        let damaged = |object: String, detail: String| Error::ChunkDamaged {
            snapshot: None,
            chunk: *id,
            object,
            detail,
        };
        if let Some(&i) = self.sample_pos.get(id) {
            return match &self.samples {
                Some(s) => Ok(s[i as usize].1.clone()),
                None => Err(Error::Internal(
                    "training sample read after training".into(),
                )),
            };
        }
        let (pack_id, dict, entry): (Id, Option<Id>, PackEntry) = match self.find(id).copied() {
            Some(e) if e.pack as usize == self.packs.len() => {
                let dict = self.dict;
                let stored = self.current.blob(&e.entry);
                let base = self.base_of(&e.entry, stored);
                return base
                    .and_then(|base| {
                        self.decoders.decode_checked_with_base(
                            &e.entry,
                            stored,
                            dict.as_ref(),
                            base.as_deref().map(|b| b.as_slice()),
                        )
                    })
                    .map_err(|source| {
                        source.or_damaged(|detail| damaged("the pack being written".into(), detail))
                    });
            }
            Some(e) => {
                // It may still be on its way to the store.
                self.uploads.wait()?;
                let pack = self
                    .packs
                    .get(e.pack as usize)
                    .ok_or_else(|| Error::Internal("new chunk in an unknown pack".into()))?;
                (pack.id, pack.dict, e.entry)
            }
            None => match self.index.locate(id) {
                Some(placed) => placed,
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
        if let Some(d) = &dict {
            self.decoders.ensure_dict(self.backend.as_ref(), d)?;
        }
        // Checked against the id asked for (the entry's is that id).
        let entry = PackEntry { id: *id, ..entry };
        let base = self.base_of(&entry, &stored);
        base.and_then(|base| {
            self.decoders.decode_checked_with_base(
                &entry,
                &stored,
                dict.as_ref(),
                base.as_deref().map(|b| b.as_slice()),
            )
        })
        .map_err(|source| source.or_damaged(|detail| damaged(key, detail)))
    }

    /// The base bytes a stored chunk needs to be read back (a delta's; `None`
    /// for any other chunk).
    fn base_of(
        &self,
        e: &PackEntry,
        stored: &[u8],
    ) -> std::result::Result<Option<Arc<Vec<u8>>>, crate::codec::ChunkError> {
        match &self.bases {
            Some(b) if e.codec == Codec::ZstdDelta => b.base_for(e, stored, &self.index),
            // A delta without a base reader fails as the decoder says (Base).
            _ => Ok(None),
        }
    }

    /// Writes the current pack and starts the next.
    fn flush(&mut self) -> Result<()> {
        if self.current.is_empty() {
            return Ok(());
        }
        // A buffer the pack writer is done with, if any: a fresh 17 MiB allocation
        // per pack costs page faults, and two in flight cost memory.
        let fresh = match self.uploads.recycled() {
            Some(buf) => PackBuilder::with_buffer(buf, self.dict),
            None => PackBuilder::with_capacity(pack_capacity(self.pack_target), self.dict),
        };
        let builder = std::mem::replace(&mut self.current, fresh);
        self.write_pack(builder)
    }

    /// Stores what is left (training first if still collecting), waits for the
    /// pack writer and frees both pack buffers: no chunk may come after this. The
    /// capture calls it before it takes its chunk list, so that the buffers and
    /// the list are not alive at once.
    pub(crate) fn close_packs(&mut self) -> Result<()> {
        self.train()?;
        // The current buffer is freed whether or not it holds a last pack.
        let last = std::mem::replace(&mut self.current, PackBuilder::with_capacity(0, self.dict));
        if !last.is_empty() {
            self.write_pack(last)?;
        }
        // Every pack is stored before the index and manifest that name them.
        self.uploads.wait()?;
        drop(self.uploads.recycled());
        Ok(())
    }

    fn write_pack(&mut self, builder: PackBuilder) -> Result<()> {
        // Its entries are in `new` already (with this pack's position).
        let (id, bytes, _entries) = builder.finish();
        let len = bytes.len() as u64;
        self.uploads.put(layout::pack(&id), bytes)?;
        self.stats.packs_written += 1;
        self.stats.pack_bytes += len;
        self.packs.push(PackRef {
            id,
            len,
            dict: self.dict,
        });
        Ok(())
    }

    /// Trains on what it collected (if still collecting), writes the last pack;
    /// returns the chunks this backup stored, its statistics and the index it was given.
    pub(crate) fn finish(mut self) -> Result<(NewChunks, WriteStats, ChunkLookup)> {
        self.close_packs()?;
        // The table is done with: freed before the caller builds its own.
        self.table = IdTable::default();
        Ok((
            NewChunks {
                packs: self.packs,
                entries: self.new,
                dict: self.dict,
                bases: self.delta_rows,
            },
            WriteStats {
                delta_chunks: self.wholes.chunks,
                delta_stored_bytes: self.wholes.stored_bytes,
                delta_whole_bytes: self.wholes.whole_bytes(),
                ..self.stats
            },
            self.index,
        ))
    }
}

/// Compresses one chunk into `out` (at least [`slot_len`] bytes) with the
/// encoder's dictionary (if any), keeping whichever is smallest of the dictionary
/// frame, the plain frame and the raw bytes ([`Encoder::encode`]); which frames
/// are made is the backup's `trial`, which records how they compared. Returns the
/// stored length and codec.
///
/// With `same` (the same-position base; `id` the chunk's), a delta against it
/// is made first and kept when smallest ([`Encoder::encode_delta_first`]: a
/// small one without making the other frames, codec/whole.rs); unless that
/// delta is small, `more` is asked for a second base
/// (the content-found one, read only then) and its delta kept if smaller still;
/// a kept delta still over 1/[`LARGE_DELTA`] of the chunk is made again at
/// [`LARGE_DELTA_LEVEL`] (one over 1/[`LARGE_SAME_DELTA`] against the same
/// position at [`LARGE_SAME_DELTA_LEVEL`]). The third value is the kept
/// delta's base and depth.
fn compress_among(
    enc: &mut Encoder,
    data: &[u8],
    out: &mut [u8],
    trial: &PlainTrial,
    id: &ChunkId,
    same: Option<&Base>,
    more: &mut dyn FnMut() -> Option<Base>,
) -> Result<(usize, Codec, Option<DeltaRow>)> {
    // A dictionary trained on some pages can make others compress worse (its
    // entropy tables replace ones fitted to the page): keep whichever is smaller,
    // as long as trying pays (compressing twice doubles the cost of a backup).
    let attempt = if !trial.dict_pays() {
        Attempt::Plain
    } else if trial.worth_trying() {
        Attempt::Both
    } else {
        Attempt::Dict
    };
    let (mut stored, won) = match same {
        Some((b, raw, _)) => enc.encode_delta_first(data, id, out, attempt, b, raw)?,
        None => (enc.encode(data, out, attempt)?, false),
    };
    if let Some((d, p)) = stored.both {
        trial.record(d, p);
    }
    let mut base: Option<Base> = same.filter(|_| won).cloned();
    // A small delta is kept without looking for a second base: reading and
    // trying one would cost more than it could save.
    if base.is_none() || !whole::is_small(stored.len, data.len()) {
        if let Some(found) = more() {
            if enc.improve_with_delta(data, id, out, &mut stored, &found.0, &found.1)? {
                base = Some(found);
            }
        }
    }
    // A delta still over 1/LARGE_DELTA of its chunk (1/LARGE_SAME_DELTA
    // against the same position) is made again against the same base at a
    // level that looks harder for matches: only these chunks pay for it (a
    // VACUUM's refilled pages, mostly), and the decoder reads the frame as any
    // other. Skip-delta bases span several versions, so many same-position
    // deltas are over 1/16: making those again took a fifth of a 1 GiB `oltp`
    // backup's CPU for 0.3 % of `vacuum`'s bytes (PERFORMANCE.md), so
    // those over 1/8 are made again at a lower level than the others.
    let same_base = base.as_ref().map(|b| b.0) == same.map(|b| b.0);
    let (large, level) = match same_base {
        true => (LARGE_SAME_DELTA, LARGE_SAME_DELTA_LEVEL),
        false => (LARGE_DELTA, LARGE_DELTA_LEVEL),
    };
    if let Some((b, raw, _)) = base.as_ref().filter(|_| stored.len * large > data.len()) {
        enc.improve_with_delta_at(data, id, out, &mut stored, b, raw, level)?;
    }
    // The whole length only where measured by rule (codec/whole.rs), even
    // if this chunk's was: `repair index` rebuilds the row the same.
    let whole_len = match whole::measured(id, stored.len, data.len()) {
        true => stored.whole as u32,
        false => 0,
    };
    Ok((
        stored.len,
        stored.codec,
        base.map(|(b, _, depth)| (b, depth + 1, whole_len)),
    ))
}

/// A delta over 1/this of its chunk is made again at [`LARGE_DELTA_LEVEL`]
/// ([`compress_among`]).
const LARGE_DELTA: usize = 16;

/// [`LARGE_DELTA`] for a delta against the same-position base.
const LARGE_SAME_DELTA: usize = 8;

/// The zstd level a large delta against a content-found base is made again
/// at. These are a VACUUM's refilled pages, where looking harder pays:
/// `vacuum` stores 0.3498× the ideal bound per snapshot instead of 0.367×
/// made at the first level (level 19 stored as much for 10× the time).
/// Other workloads make few such deltas, so this level costs them little
/// (docs/PERFORMANCE.md has the levels and thresholds measured).
const LARGE_DELTA_LEVEL: i32 = 15;

/// The zstd level a large delta against the same-position base is made
/// again at. These are most of a large `oltp` backup's large deltas (a
/// skip-delta base spans several versions), and at level 13 making them again
/// took 7 % of its CPU. Level 6 keeps most of their saving: with content-found
/// ones at 15, `vacuum` stores as much as with both at 13.
const LARGE_SAME_DELTA_LEVEL: i32 = 6;

/// A delta's base, depth and whole length (what it would take stored alone).
type DeltaRow = (ChunkId, u8, u32);

/// [`compress_among`] with at most one base, as the tests call it.
#[cfg(test)]
fn compress(
    enc: &mut Encoder,
    data: &[u8],
    out: &mut [u8],
    trial: &PlainTrial,
    delta: Option<(&ChunkId, &ChunkId, &[u8])>,
) -> Result<(usize, Codec)> {
    let no_id = Id([0; 32]);
    let (id, same) = match delta {
        Some((id, base_id, base)) => (id, Some((*base_id, Arc::new(base.to_vec()), 0))),
        None => (&no_id, None),
    };
    let (len, codec, _) = compress_among(enc, data, out, trial, id, same.as_ref(), &mut || None)?;
    Ok((len, codec))
}

/// How the dictionary and the plain frame compare in this backup. The first
/// [`PlainTrial::SAMPLE`] chunks are compressed both ways (keeping the smaller);
/// pages of one database are alike, so a few hundred tell. After them:
///
/// * the plain frame is still tried only if it won at least one time in
///   [`PlainTrial::MIN_WIN_RATE`]: where the dictionary fits (the usual case) this
///   halves the compression work of a backup;
/// * the dictionary is still used only if it saved at least
///   [`PlainTrial::MIN_DICT_GAIN`] of the bytes the plain frames took. Compressing
///   a small page with a dictionary costs more CPU than without, which a
///   dictionary that saves next to nothing does not repay: pages of incompressible
///   data, or data the dictionary was not trained on (docs/PERFORMANCE.md).
#[derive(Default)]
struct PlainTrial {
    tried: std::sync::atomic::AtomicU64,
    won: std::sync::atomic::AtomicU64,
    /// Bytes of the tried chunks' dictionary frames and plain frames.
    dict_bytes: std::sync::atomic::AtomicU64,
    plain_bytes: std::sync::atomic::AtomicU64,
}

impl PlainTrial {
    const SAMPLE: u64 = 512;
    const MIN_WIN_RATE: u64 = 20;
    /// The least share of the plain frames' bytes a dictionary must save, in
    /// hundredths.
    const MIN_DICT_GAIN: u64 = 2;

    fn worth_trying(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let tried = self.tried.load(Relaxed);
        tried < Self::SAMPLE || self.won.load(Relaxed) * Self::MIN_WIN_RATE >= tried
    }

    fn dict_pays(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        if self.tried.load(Relaxed) < Self::SAMPLE {
            return true;
        }
        let (d, p) = (
            self.dict_bytes.load(Relaxed),
            self.plain_bytes.load(Relaxed),
        );
        d * 100 <= p * (100 - Self::MIN_DICT_GAIN)
    }

    /// Records one chunk compressed both ways: `dict` and `plain` bytes.
    fn record(&self, dict: usize, plain: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        self.dict_bytes.fetch_add(dict as u64, Relaxed);
        self.plain_bytes.fetch_add(plain as u64, Relaxed);
        self.tried.fetch_add(1, Relaxed);
        if plain < dict {
            self.won.fetch_add(1, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Contexts whose dictionary is `dict` (raw content), at the levels given.
    fn ctx(dict: Option<&[u8]>, dict_level: i32, plain_level: i32) -> Encoder {
        let dict = dict.map(|d| (Id::of_object(d), d));
        Encoder::with_levels(dict_level, plain_level, dict).expect("contexts")
    }

    /// What `compress` left in the slot, decoded as its codec says.
    fn decoded(slot: &[u8], len: usize, codec: Codec, dict: &[u8], raw_len: usize) -> Vec<u8> {
        let stored = &slot[..len];
        match codec {
            Codec::Raw => stored.to_vec(),
            Codec::Zstd => zstd::bulk::decompress(stored, raw_len).expect("plain frame"),
            Codec::ZstdDict => zstd::bulk::Decompressor::with_dictionary(dict)
                .and_then(|mut d| d.decompress(stored, raw_len))
                .expect("dictionary frame"),
            Codec::ZstdDelta => panic!("the chunk writer makes no deltas"),
        }
    }

    fn page(seed: u8) -> Vec<u8> {
        (0..4096u32)
            .map(|i| if i % 7 < 3 { seed } else { (i / 13) as u8 })
            .collect()
    }

    /// A small delta against the same position is kept without making the
    /// whole frames (the trial records nothing; the row's whole length is 0),
    /// unless the chunk's id is in the measured sample: then, as for a delta
    /// over 1/8 of its chunk, the frames are made and the row holds what the
    /// best of them takes.
    #[test]
    fn a_small_delta_is_kept_without_the_whole_frames_outside_the_sample() {
        use crate::codec::whole;
        let base = page(7);
        let mut small = base.clone();
        small[100..140].fill(0xAB);
        let mut large = base.clone();
        for (i, b) in large[1000..2000].iter_mut().enumerate() {
            *b = blake3::hash(&(i as u32).to_le_bytes()).as_bytes()[0];
        }
        let (outside, inside) = (Id([1; 32]), Id([16; 32]));
        assert!(!whole::in_sample(&outside) && whole::in_sample(&inside));
        let same: Base = (Id([2; 32]), Arc::new(base.clone()), 0);
        // With a dictionary: the trial compares both frames when they are made.
        let dict = page(9);
        let whole_of = |data: &[u8]| {
            let mut slot = vec![0; slot_len(data.len())];
            ctx(Some(&dict), 3, 3)
                .encode(data, &mut slot, Attempt::Both)
                .expect("compresses")
                .len as u32
        };
        let run = |data: &[u8], id: &ChunkId| {
            let trial = PlainTrial::default();
            let mut slot = vec![0; slot_len(data.len())];
            let (len, codec, row) = compress_among(
                &mut ctx(Some(&dict), 3, 3),
                data,
                &mut slot,
                &trial,
                id,
                Some(&same),
                &mut || None,
            )
            .expect("compresses");
            assert_eq!(codec, Codec::ZstdDelta);
            let (b, depth, whole_len) = row.expect("a delta row");
            assert_eq!((b, depth), (same.0, 1));
            (
                len,
                whole_len,
                trial.tried.load(std::sync::atomic::Ordering::Relaxed),
            )
        };
        let (len, whole_len, tried) = run(&small, &outside);
        assert!(whole::is_small(len, small.len()), "{len}");
        assert_eq!((whole_len, tried), (0, 0), "no whole frame made");
        let (len_in, whole_len, tried) = run(&small, &inside);
        assert_eq!(len_in, len, "the same delta");
        assert_eq!((whole_len, tried), (whole_of(&small), 1), "measured");
        let (len, whole_len, tried) = run(&large, &outside);
        assert!(!whole::is_small(len, large.len()), "{len}");
        assert_eq!((whole_len, tried), (whole_of(&large), 1), "measured");
    }

    /// Each of the three outcomes, with the bytes in the slot decoding to the chunk.
    #[test]
    fn compress_keeps_the_smallest_of_dictionary_plain_and_raw() {
        let dict = page(9);
        let trial = PlainTrial::default();
        // A chunk like the dictionary: its frame wins.
        let data = page(9);
        let mut slot = vec![0xAA; slot_len(data.len())];
        let (len, codec) = compress(&mut ctx(Some(&dict), 3, 3), &data, &mut slot, &trial, None)
            .expect("compresses");
        assert_eq!(codec, Codec::ZstdDict);
        assert_eq!(decoded(&slot, len, codec, &dict, data.len()), data);
        // Unlike the dictionary and compressed much better without it (a far
        // higher plain level): the plain frame, copied over the dictionary's.
        let data: Vec<u8> = b"pagesnap ".iter().cycle().take(4096).copied().collect();
        let mut slot = vec![0xAA; slot_len(data.len())];
        let (len, codec) = compress(
            &mut ctx(Some(&dict), -50, 19),
            &data,
            &mut slot,
            &trial,
            None,
        )
        .expect("compresses");
        assert_eq!(codec, Codec::Zstd);
        assert_eq!(decoded(&slot, len, codec, &dict, data.len()), data);
        // Incompressible: the raw bytes.
        let mut data = vec![0u8; 4096];
        blake3::Hasher::new().finalize_xof().fill(&mut data);
        let mut slot = vec![0xAA; slot_len(data.len())];
        let (len, codec) =
            compress(&mut ctx(None, 3, 3), &data, &mut slot, &trial, None).expect("compresses");
        assert_eq!((len, codec), (data.len(), Codec::Raw));
        assert_eq!(&slot[..len], &data[..]);
    }

    /// Until the trial's end the dictionary is used whatever it saved; after it,
    /// only if it saved at least `MIN_DICT_GAIN` (2 %) of the plain frames' bytes.
    #[test]
    fn a_dictionary_that_saves_too_little_is_dropped_after_the_trial() {
        // (dictionary frame, plain frame) bytes of every tried chunk, and whether
        // the dictionary is still used after the trial.
        let cases = [
            (1000, 1000, false),
            (1100, 1000, false),
            (991, 1000, false),
            (981, 1000, false),
            (980, 1000, true),
            (700, 1000, true),
        ];
        for (d, p, pays) in cases {
            let trial = PlainTrial::default();
            for _ in 1..PlainTrial::SAMPLE {
                trial.record(d, p);
            }
            assert!(trial.dict_pays(), "{d} against {p}: still in the trial");
            trial.record(d, p);
            assert_eq!(trial.dict_pays(), pays, "{d} against {p} after the trial");
        }
    }

    /// Pages the dictionary does not help (half random bytes, unlike it): after
    /// the trial they are compressed without it, and still decode.
    #[test]
    fn compress_stops_using_a_dictionary_that_does_not_pay() {
        let dict = page(9);
        let mut c = ctx(Some(&dict), 3, 3);
        let trial = PlainTrial::default();
        let mut codecs = Vec::new();
        for n in 0..PlainTrial::SAMPLE + 8 {
            let mut data = vec![0u8; 4096];
            let mut h = blake3::Hasher::new();
            h.update(&n.to_le_bytes());
            h.finalize_xof().fill(&mut data[..2048]);
            let mut slot = vec![0xAA; slot_len(data.len())];
            let (len, codec) =
                compress(&mut c, &data, &mut slot, &trial, None).expect("compresses");
            assert_eq!(
                decoded(&slot, len, codec, &dict, data.len()),
                data,
                "chunk {n}"
            );
            codecs.push(codec);
        }
        assert!(!trial.dict_pays());
        assert!(
            codecs[PlainTrial::SAMPLE as usize..]
                .iter()
                .all(|c| *c == Codec::Zstd),
            "after the trial: {:?}",
            &codecs[PlainTrial::SAMPLE as usize..]
        );
        // A dictionary that fits its pages is kept.
        let trial = PlainTrial::default();
        let mut c = ctx(Some(&dict), 3, 3);
        for _ in 0..PlainTrial::SAMPLE + 8 {
            let data = page(9);
            let mut slot = vec![0xAA; slot_len(data.len())];
            let (_, codec) = compress(&mut c, &data, &mut slot, &trial, None).expect("compresses");
            assert_eq!(codec, Codec::ZstdDict);
        }
        assert!(trial.dict_pays());
    }

    /// The training samples are compressed outside the backup's trial (the
    /// dictionary fits them best, so they would overstate what it saves), and the
    /// trial then judges the chunks that follow: here, words the dictionary holds,
    /// which it keeps compressing with it.
    #[test]
    fn training_samples_do_not_count_in_the_trial() -> anyhow::Result<()> {
        use crate::backend::LocalBackend;
        use crate::index::chunk_index::ChunkIndex;
        use std::sync::atomic::Ordering::Relaxed;
        let dir = tempfile::tempdir()?;
        let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path()));
        let config = StoreConfig {
            store_id: Id([7; 32]),
            chunk_pages: 1,
            zstd_level: 3,
            pack_target_size: 1 << 20,
            created_unix: 1_700_000_000,
            dictionary: true,
            deltas: false,
            encrypted: false,
        };
        let index = ChunkLookup::Whole(Box::<ChunkIndex>::default());
        let mut w = ChunkWriter::new(
            backend,
            index,
            &config,
            DictPlan::Train,
            ChunkIds::default(),
        )?;
        // Pages of words from one vocabulary of 2,000, few repeated within a
        // page: what a dictionary is for.
        let word = |i: u32| -> Vec<u8> {
            let h = blake3::hash(&i.to_le_bytes());
            h.as_bytes()[..10]
                .iter()
                .map(|b| b'a' + b % 26)
                .chain([b' '])
                .collect()
        };
        let chunk = |n: u32| -> Vec<u8> {
            (0u32..)
                .flat_map(|i| {
                    let h = blake3::hash(&[n.to_le_bytes(), i.to_le_bytes()].concat());
                    word(u32::from_le_bytes([h.as_bytes()[0], h.as_bytes()[1], 0, 0]) % 2000)
                })
                .take(4096)
                .collect()
        };
        let samples = (SAMPLE_TARGET / 4096) as u32;
        let mut codecs = Vec::new();
        for b in 0..(samples + 1024) / 16 {
            let data: Vec<u8> = (b * 16..b * 16 + 16).flat_map(chunk).collect();
            let mut out = Vec::new();
            let encoded = w.encode_block(&data, 4096, 0, None, &mut out)?;
            for (e, slot) in encoded.into_iter().zip(out.chunks(slot_len(4096))) {
                if let Encoded::New { codec, .. } = &e {
                    codecs.push(*codec);
                }
                w.accept(e, slot)?;
            }
            if b + 1 == samples / 16 {
                assert!(w.samples.is_none(), "trained");
                assert_eq!(
                    w.trial.tried.load(Relaxed),
                    0,
                    "samples are not in the trial"
                );
            }
        }
        assert_eq!(codecs.len(), 1024);
        assert_eq!(w.trial.tried.load(Relaxed), PlainTrial::SAMPLE);
        assert!(w.trial.dict_pays());
        let with_dict = codecs.iter().filter(|c| **c == Codec::ZstdDict).count();
        assert!(with_dict > 900, "{with_dict} of 1024 with the dictionary");
        let (new, _, _) = w.finish()?;
        assert!(new.dict.is_some());
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever the chunk and the contexts, the slot holds at most the chunk's
        /// length, and it decodes back to the chunk.
        #[test]
        fn compress_round_trips_in_the_slot(
            data in proptest::collection::vec(prop_oneof![Just(0u8), Just(7u8), any::<u8>()], 1..6000),
            with_dict in any::<bool>(),
            levels in (1i32..6, 1i32..6),
        ) {
            let dict = page(7);
            let mut ctx = ctx(with_dict.then_some(&dict[..]), levels.0, levels.1);
            let mut slot = vec![0x55; slot_len(data.len())];
            let (len, codec) = compress(&mut ctx, &data, &mut slot, &PlainTrial::default(), None)
                .expect("compresses");
            prop_assert!(len <= data.len());
            prop_assert!(with_dict || codec != Codec::ZstdDict);
            prop_assert_eq!(decoded(&slot, len, codec, &dict, data.len()), data);
        }
    }
}

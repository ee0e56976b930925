//! Raw bytes of stored chunks by id, following delta chains (format version 2):
//! what a backup encodes a delta against, and what restore decodes one with.
//!
//! A chunk is located with the caller's index (a [`Locate`]: the backup's
//! `ChunkLookup`, restore's plan or whole `ChunkIndex`), its blob read with one ranged
//! read of its pack, and, for a delta, its base fetched the same way first
//! (the blob names it by the first 8 bytes of its id, resolved among the
//! located chunks; several sharing them are each tried), down to a chunk that
//! is not a delta. Every link is
//! decoded checked against its id, so a wrong or damaged base is an error, never
//! wrong bytes. Decoded chunks are kept in a small LRU by id (bounded in bytes):
//! the positions a database changes again and again share their chain's links.
//!
//! (A restore's first pass reads a window's chains itself, grouped by pack,
//! without this cache: restore/links.rs.)
//!
//! The LRU is locked only to look up and insert; reads and decodes run on the
//! caller's thread with a decoder of its own, so chains of different positions
//! are followed in parallel (two threads may decode the same base at once: the
//! second insert is dropped).

use crate::backend::{Backend, OpenObjects};
use crate::codec::{base_of, BaseFault, ChunkError, Decoder};
use crate::format::index::MAX_DELTA_DEPTH;
use crate::format::pack::{BasePrefix, PackEntry};
use crate::index::cache::{ChunkLookup, Placed};
use crate::index::chunk_index::{ChunkIndex, Location, PackTable};
use crate::layout;
use crate::types::{ChunkId, ChunkIds, Id, IdMap};
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

/// Default bound of the decoded chunks kept (restore, verify, copy, prune): a
/// chain of 9 4 KiB pages is 36 KiB, so this holds the chains of ~450
/// positions. The links of one position's chain are rarely another's, so more
/// would cost memory for few hits.
pub(crate) const DEFAULT_CACHE_BYTES: usize = 16 << 20;

/// A backup's bound: it reads each changed position's base once.
pub(crate) const BACKUP_CACHE_BYTES: usize = 8 << 20;

/// A decoded chunk and its depth (0 for a chunk that is not a delta).
pub(crate) type Raw = (Arc<Vec<u8>>, u8);

struct Inner {
    /// id → (bytes, depth, last use).
    cached: IdMap<(Raw, u64)>,
    /// last use → id (the oldest first).
    order: BTreeMap<u64, ChunkId>,
    bytes: usize,
    tick: u64,
}

/// See the module comment.
pub(crate) struct Bases {
    backend: Arc<dyn Backend>,
    limit: usize,
    /// The decoded chunks; locked only to look up and insert, never across a
    /// read or a decode, so that threads decoding chains do not wait on each other.
    inner: Mutex<Inner>,
    /// One decoder per worker thread (rayon's index; the last slot for any
    /// other thread), built on first use, with the dictionaries it met.
    decoders: Vec<Mutex<Option<Decoder>>>,
    /// How the store names chunks (each link is checked against its id).
    ids: ChunkIds,
    /// Packs held open across links ([`Bases::holding_open`]), or none:
    /// each link's read opens its pack.
    open: Option<OpenObjects>,
    /// Only the link asked for is checked against its id, the links below it
    /// decoded unchecked and not kept ([`Bases::checking_only_the_top`]).
    top_only: bool,
}

impl Bases {
    pub(crate) fn new(
        backend: Arc<dyn Backend>,
        limit: usize,
        ids: ChunkIds,
    ) -> crate::Result<Bases> {
        let slots = rayon::current_num_threads() + 1;
        Ok(Bases {
            backend,
            ids,
            limit,
            inner: Mutex::new(Inner {
                cached: IdMap::default(),
                order: BTreeMap::new(),
                bytes: 0,
                tick: 0,
            }),
            decoders: (0..slots).map(|_| Mutex::new(None)).collect(),
            open: None,
            top_only: false,
        })
    }

    /// These bases checking only the link each read asks for: its id covers
    /// the bytes it is used for, whatever the links below it decoded to (a
    /// wrong link below either fails that check or did not reach those
    /// bytes). For a backup, which takes a base only to make a delta against
    /// and leaves out a base it cannot have: which link of a chain is
    /// damaged is verify's to name. The links below are not kept (unchecked).
    pub(crate) fn checking_only_the_top(mut self) -> Self {
        self.top_only = true;
        self
    }

    /// These bases with every pack they read held open until they are dropped
    /// ([`OpenObjects`]): for an owner under a lock that keeps prune and
    /// repair out for as long (a backup), never a long-lived reader.
    pub(crate) fn holding_open(mut self) -> Self {
        self.open = Some(OpenObjects::default());
        self
    }

    fn cached(&self, id: &ChunkId) -> Option<Raw> {
        self.inner.lock().ok()?.get(id)
    }

    fn keep(&self, id: ChunkId, raw: Raw) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.put(id, raw, self.limit);
        }
    }

    /// Runs `f` with this thread's decoder.
    pub(crate) fn with_decoder<T>(
        &self,
        id: &ChunkId,
        f: impl FnOnce(&mut Decoder) -> Result<T, ChunkError>,
    ) -> Result<T, ChunkError> {
        let missing = || ChunkError::Base {
            base: BasePrefix::of(id),
            fault: BaseFault::Missing,
        };
        let mut slot = self.decoders[crate::thread_slot(self.decoders.len())]
            .lock()
            .map_err(|_| missing())?;
        let d = match &mut *slot {
            Some(d) => d,
            empty => empty.insert(Decoder::new(self.ids.clone()).map_err(|_| missing())?),
        };
        f(d)
    }

    /// The raw bytes of chunk `id` and its depth; `locate` finds a chunk's pack,
    /// that pack's dictionary and its entry, and the chunks a delta's base
    /// prefix may name. Fails with the error of the first link that cannot be
    /// read or decoded (a missing link is [`ChunkError::Base`] naming it), or
    /// when the chain is deeper than [`MAX_DELTA_DEPTH`] (damage: no writer
    /// makes one).
    pub(crate) fn raw(&self, id: &ChunkId, locate: &dyn Locate) -> Result<Raw, ChunkError> {
        self.raw_within(id, locate, MAX_DELTA_DEPTH as usize + 1)
    }

    /// The link of chunk `id`'s chain at depth `want` (`id` itself when its
    /// chain is not that deep), its raw bytes and depth: a skip-delta base
    /// (backup/skip.rs). Reads the chain as [`Bases::raw`] does (down to its
    /// bottom, or to a cached link no deeper than `want`). A walk that stops
    /// above `want` (at a base prefix shared by several chunks, resolved by
    /// decoding) returns the link it stopped at: deeper than asked, as sound.
    pub(crate) fn raw_toward(
        &self,
        id: &ChunkId,
        locate: &dyn Locate,
        want: u8,
    ) -> Result<(ChunkId, Raw), ChunkError> {
        self.toward(id, locate, MAX_DELTA_DEPTH as usize + 1, want)
    }

    /// [`Bases::raw`] reading at most `budget` blobs down the chain (links of a
    /// chain resumed below a prefix shared by several chunks count against
    /// the same bound, so no store makes a reader follow more).
    fn raw_within(
        &self,
        id: &ChunkId,
        locate: &dyn Locate,
        budget: usize,
    ) -> Result<Raw, ChunkError> {
        self.toward(id, locate, budget, u8::MAX).map(|(_, raw)| raw)
    }

    /// [`Bases::raw_toward`] within `budget` blobs.
    fn toward(
        &self,
        id: &ChunkId,
        locate: &dyn Locate,
        budget: usize,
        want: u8,
    ) -> Result<(ChunkId, Raw), ChunkError> {
        // Down the chain to a cached link (no deeper than `want`) or one that
        // is not a delta.
        let mut links: Vec<(PackEntry, Vec<u8>, Option<Id>)> = Vec::new();
        let mut below: Option<(ChunkId, Raw)> = None;
        let mut cur = *id;
        loop {
            if let Some(hit) = self.cached(&cur).filter(|(_, depth)| *depth <= want) {
                below = Some((cur, hit));
                break;
            }
            if links.len() >= budget {
                return Err(ChunkError::Decode(crate::format::FormatError::Invalid(
                    format!(
                        "chunk {} has a chain of deltas deeper than {MAX_DELTA_DEPTH}",
                        id.short()
                    ),
                )));
            }
            let missing = ChunkError::Base {
                base: BasePrefix::of(&cur),
                fault: BaseFault::Missing,
            };
            let Some((pack, dict, entry)) = locate.locate(&cur) else {
                return Err(missing);
            };
            let start = entry.offset as u64;
            let (key, range) = (layout::pack(&pack), start..start + entry.stored_len as u64);
            let got = match &self.open {
                Some(open) => open.get_range(self.backend.as_ref(), &key, range),
                None => self.backend.get_range(&key, range),
            };
            let stored = match got {
                Ok(stored) => stored,
                // Gone or shorter than its entry says: damage (the link is lost).
                Err(e) if e.is_damage() => return Err(missing),
                // Could not be read: not damage, said as it is.
                Err(source) => {
                    return Err(ChunkError::Unreadable {
                        base: BasePrefix::of(&cur),
                        source,
                    })
                }
            };
            let entry = PackEntry { id: cur, ..entry };
            let next = base_of(&entry, &stored)?;
            links.push((entry, stored, dict));
            let Some(h) = next else {
                break;
            };
            match locate.sharing(&h.base).as_slice() {
                [] => {
                    return Err(ChunkError::Base {
                        base: h.base,
                        fault: BaseFault::Missing,
                    })
                }
                [one] => cur = *one,
                several => {
                    let (e, stored, _) = &links[links.len() - 1];
                    let rest = budget - links.len();
                    below = Some(self.first_base(e, stored, several, locate, rest)?);
                    break;
                }
            }
        }
        // Up again, each link decoded against the one below it; the first at
        // or above `want` is the one asked for.
        let mut chosen = below.clone().filter(|(_, (_, depth))| *depth >= want);
        let mut out = below;
        while let Some((entry, stored, dict)) = links.pop().filter(|_| chosen.is_none()) {
            let base = out.as_ref().map(|(_, (b, _))| b.as_slice());
            let depth = match &out {
                Some((_, (_, d))) if entry.codec == crate::format::pack::Codec::ZstdDelta => d + 1,
                _ => 0,
            };
            // The link returned: the one at or above `want`, or the top.
            let last = depth >= want || links.is_empty();
            let checked = last || !self.top_only;
            let raw = self.with_decoder(&entry.id, |d| {
                if let Some(dict) = &dict {
                    d.ensure_dict(self.backend.as_ref(), dict)
                        .map_err(|e| match e {
                            crate::Error::Backend(source) if !source.is_damage() => {
                                ChunkError::Unreadable {
                                    base: BasePrefix::of(&entry.id),
                                    source,
                                }
                            }
                            _ => ChunkError::Base {
                                base: BasePrefix::of(&entry.id),
                                fault: BaseFault::Missing,
                            },
                        })?;
                }
                match checked {
                    true => d.decode_checked_with_base(&entry, &stored, dict.as_ref(), base),
                    false => d.decode_with_base(&entry, &stored, dict.as_ref(), base),
                }
            })?;
            if depth > MAX_DELTA_DEPTH {
                return Err(ChunkError::Decode(crate::format::FormatError::Invalid(
                    format!(
                        "chunk {} is at depth {depth}, beyond {MAX_DELTA_DEPTH}",
                        entry.id.short()
                    ),
                )));
            }
            let r: Raw = (Arc::new(raw), depth);
            if checked {
                self.keep(entry.id, r.clone());
            }
            if depth >= want {
                // The links above it are not needed: not decoded.
                chosen = Some((entry.id, r));
                break;
            }
            out = Some((entry.id, r));
        }
        // None at or above `want`: the chain is shallower, `id` itself.
        chosen.or(out).ok_or(ChunkError::Base {
            base: BasePrefix::of(id),
            fault: BaseFault::Missing,
        })
    }

    /// Of the chunks `candidates` that share the base prefix of delta `e`
    /// (stored as `stored`), the first the delta decodes against to its own id
    /// (blake3-checked), with its raw bytes: only the true base can. A read
    /// error wins over damage, so that nothing is decided on its account.
    fn first_base(
        &self,
        e: &PackEntry,
        stored: &[u8],
        candidates: &[ChunkId],
        locate: &dyn Locate,
        budget: usize,
    ) -> Result<(ChunkId, Raw), ChunkError> {
        let mut failed: Option<ChunkError> = None;
        for c in candidates {
            let tried = self.raw_within(c, locate, budget).and_then(|raw| {
                self.with_decoder(&e.id, |d| {
                    d.decode_checked_with_base(e, stored, None, Some(&raw.0))
                })
                .map(|_| raw)
            });
            match tried {
                Ok(raw) => return Ok((*c, raw)),
                Err(err) => {
                    if !matches!(failed, Some(ChunkError::Unreadable { .. })) {
                        failed = Some(err);
                    }
                }
            }
        }
        Err(failed.unwrap_or(ChunkError::Base {
            base: BasePrefix::of(&e.id),
            fault: BaseFault::Missing,
        }))
    }

    /// The base delta `e` (whose blob is `stored`) is made against: its full id,
    /// resolved from the blob's prefix among the chunks `locate` knows, and its
    /// raw bytes and depth; `None` for a chunk that is not a delta. With one
    /// chunk of that prefix (all but always) it is the base, and the caller's
    /// checked decode of `e` proves it; with several, the one `e` decodes
    /// against, checked. Fails with the [`ChunkError::Base`] naming the base
    /// when it cannot be had (a read error stays one).
    pub(crate) fn base_chunk(
        &self,
        e: &PackEntry,
        stored: &[u8],
        locate: &dyn Locate,
    ) -> Result<Option<(ChunkId, Raw)>, ChunkError> {
        let Some(h) = base_of(e, stored)? else {
            return Ok(None);
        };
        let budget = MAX_DELTA_DEPTH as usize;
        let found = match locate.sharing(&h.base).as_slice() {
            [] => Err(ChunkError::Base {
                base: h.base,
                fault: BaseFault::Missing,
            }),
            [one] => self.raw_within(one, locate, budget).map(|r| (*one, r)),
            several => self.first_base(e, stored, several, locate, budget),
        };
        found.map(Some).map_err(|e| match e {
            // A link that could not be read stays a read error.
            e @ ChunkError::Unreadable { .. } => e,
            _ => ChunkError::Base {
                base: h.base,
                fault: BaseFault::Missing,
            },
        })
    }

    /// The base bytes delta `e` (whose blob is `stored`) needs, or the
    /// [`ChunkError::Base`] naming that base when they cannot be had.
    pub(crate) fn base_for(
        &self,
        e: &PackEntry,
        stored: &[u8],
        locate: &dyn Locate,
    ) -> Result<Option<Arc<Vec<u8>>>, ChunkError> {
        Ok(self.base_chunk(e, stored, locate)?.map(|(_, (b, _))| b))
    }
}

/// How a [`Bases`] reader finds chunks: by id, and by the 8-byte prefix a
/// delta blob names its base with (FORMAT.md, "Format version 2: deltas").
pub(crate) trait Locate {
    /// Where chunk `id` is, if located.
    fn locate(&self, id: &ChunkId) -> Option<Placed>;
    /// The located chunks whose id begins with `prefix`: one but by a 2^-64
    /// accident (or a hostile store), which costs a retry, never wrong bytes.
    fn sharing(&self, prefix: &BasePrefix) -> Vec<ChunkId>;
}

impl Locate for ChunkIndex {
    fn locate(&self, id: &ChunkId) -> Option<Placed> {
        locate_in(self, id)
    }
    fn sharing(&self, prefix: &BasePrefix) -> Vec<ChunkId> {
        ChunkIndex::sharing(self, prefix.key())
    }
}

impl Locate for ChunkLookup {
    fn locate(&self, id: &ChunkId) -> Option<Placed> {
        ChunkLookup::locate(self, id)
    }
    fn sharing(&self, prefix: &BasePrefix) -> Vec<ChunkId> {
        ChunkLookup::sharing(self, prefix.key())
    }
}

/// A [`Locate`] over a map of placements (repair's, prune's): the ids sorted
/// once, so that a prefix is a binary search, not a scan.
pub(crate) struct InMap<'a, S> {
    map: &'a HashMap<ChunkId, Placed, S>,
    sorted: Vec<ChunkId>,
}

impl<'a, S: BuildHasher> InMap<'a, S> {
    pub(crate) fn new(map: &'a HashMap<ChunkId, Placed, S>) -> Self {
        let mut sorted: Vec<ChunkId> = map.keys().copied().collect();
        sorted.sort_unstable();
        InMap { map, sorted }
    }
}

impl<S: BuildHasher> Locate for InMap<'_, S> {
    fn locate(&self, id: &ChunkId) -> Option<Placed> {
        self.map.get(id).copied()
    }
    fn sharing(&self, prefix: &BasePrefix) -> Vec<ChunkId> {
        let first = self.sorted.partition_point(|c| c.0[..8] < prefix.0[..]);
        self.sorted[first..]
            .iter()
            .take_while(|c| prefix.matches(c))
            .copied()
            .collect()
    }
}

impl Inner {
    fn get(&mut self, id: &ChunkId) -> Option<Raw> {
        self.tick += 1;
        let tick = self.tick;
        let (raw, used) = self.cached.get_mut(id)?;
        self.order.remove(used);
        *used = tick;
        self.order.insert(tick, *id);
        Some(raw.clone())
    }

    fn put(&mut self, id: ChunkId, raw: Raw, limit: usize) {
        if self.cached.contains_key(&id) {
            return;
        }
        self.tick += 1;
        self.bytes += raw.0.len();
        self.order.insert(self.tick, id);
        self.cached.insert(id, (raw, self.tick));
        while self.bytes > limit {
            let Some((_, old)) = self.order.pop_first() else {
                break;
            };
            if let Some(((b, _), _)) = self.cached.remove(&old) {
                self.bytes -= b.len();
            }
        }
    }
}

/// Where the whole index has chunk `id`, as a [`Bases`] reader wants it.
pub(crate) fn locate_in(index: &ChunkIndex, id: &ChunkId) -> Option<Placed> {
    index.get(id).map(|loc| {
        (
            index.pack_id(loc.pack),
            index.pack_dict(loc.pack),
            loc.pack_entry(*id),
        )
    })
}

/// Where a restore finds the links of its chains: every located chunk of the
/// store, by id and by prefix. The whole [`ChunkIndex`] (verify, and a restore
/// the long way), or a restore's plan, which sorts the prefixes of the index
/// objects' entries without building the whole index (restore/plan.rs).
pub(crate) trait BaseIndex: Locate + Sync {
    /// Of each of `keys` (a base prefix as a big-endian number), the one
    /// located chunk that has it and where it is; `None` when there is none
    /// or several. Searched together ([`ChunkIndex::unique_many`]).
    fn unique_many(&self, keys: &[u64]) -> Vec<Option<(ChunkId, Location)>>;
    /// The packs the locations number.
    fn packs(&self) -> &PackTable;
}

impl BaseIndex for ChunkIndex {
    fn unique_many(&self, keys: &[u64]) -> Vec<Option<(ChunkId, Location)>> {
        ChunkIndex::unique_many(self, keys)
    }
    fn packs(&self) -> &PackTable {
        ChunkIndex::packs(self)
    }
}

/// A [`Bases`] reader over every located chunk of the store (a
/// [`BaseIndex`]): what restore, salvage and verify decode deltas with.
pub(crate) struct Chains<'a> {
    bases: Bases,
    index: &'a dyn BaseIndex,
}

impl<'a> Chains<'a> {
    pub(crate) fn new(
        backend: Arc<dyn Backend>,
        index: &'a dyn BaseIndex,
        ids: ChunkIds,
    ) -> crate::Result<Self> {
        Ok(Chains {
            bases: Bases::new(backend, DEFAULT_CACHE_BYTES, ids)?,
            index,
        })
    }

    /// Where chains are located.
    pub(crate) fn index(&self) -> &'a dyn BaseIndex {
        self.index
    }

    /// The store chains are read from.
    pub(crate) fn backend(&self) -> &dyn Backend {
        self.bases.backend.as_ref()
    }

    /// Runs `f` with this thread's decoder, dictionary `dict` loaded into it
    /// (a failure to load it is said as [`Bases::raw`] says it, of `id`).
    pub(crate) fn with_decoder<T>(
        &self,
        id: &ChunkId,
        dict: Option<&Id>,
        f: impl FnOnce(&mut Decoder) -> Result<T, ChunkError>,
    ) -> Result<T, ChunkError> {
        self.bases.with_decoder(id, |d| {
            if let Some(dict) = dict {
                d.ensure_dict(self.backend(), dict).map_err(|e| match e {
                    crate::Error::Backend(source) if !source.is_damage() => {
                        ChunkError::Unreadable {
                            base: BasePrefix::of(id),
                            source,
                        }
                    }
                    _ => ChunkError::Base {
                        base: BasePrefix::of(id),
                        fault: BaseFault::Missing,
                    },
                })?;
            }
            f(d)
        })
    }

    /// See [`Bases::base_for`].
    pub(crate) fn base_for(
        &self,
        e: &PackEntry,
        stored: &[u8],
    ) -> Result<Option<Arc<Vec<u8>>>, ChunkError> {
        self.bases.base_for(e, stored, self.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Located chunks in one stored pack, with `sharing` made to answer a
    /// base prefix with `decoys` too, as if they shared it (a collision no
    /// one can make on purpose with real blake3 ids).
    struct Colliding {
        placed: IdMap<Placed>,
        decoys: Vec<ChunkId>,
    }

    impl Locate for Colliding {
        fn locate(&self, id: &ChunkId) -> Option<Placed> {
            self.placed.get(id).copied()
        }
        fn sharing(&self, prefix: &BasePrefix) -> Vec<ChunkId> {
            let mut ids = self.decoys.clone();
            ids.extend(self.placed.keys().filter(|c| prefix.matches(c)));
            ids
        }
    }

    /// A pack stored in a fresh local store.
    struct Stored {
        /// The store's folder, kept while the test runs.
        _dir: tempfile::TempDir,
        backend: Arc<dyn Backend>,
        bytes: Vec<u8>,
        entries: Vec<PackEntry>,
        /// Where each chunk is.
        placed: IdMap<Placed>,
    }

    /// `pack` finished and stored in a fresh local store.
    fn stored(pack: crate::format::pack::PackBuilder) -> Stored {
        use crate::backend::{LocalBackend, PutMode};
        let (pack_id, bytes, entries) = pack.finish();
        let dir = tempfile::tempdir().unwrap();
        let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path()));
        backend
            .put(&layout::pack(&pack_id), &bytes, PutMode::Overwrite)
            .unwrap();
        let placed = entries
            .iter()
            .map(|e| (e.id, (pack_id, None, *e)))
            .collect();
        Stored {
            _dir: dir,
            backend,
            bytes,
            entries,
            placed,
        }
    }

    /// A delta whose base prefix several located chunks answer to decodes
    /// against the one it was made with (tried after the others, which fail
    /// its id check), and `base_chunk` names that one in full; when no
    /// candidate is the base, it fails, never giving other bytes.
    #[test]
    fn a_shared_base_prefix_costs_a_retry_never_wrong_bytes() {
        use crate::codec::{slot_len, Attempt, Encoder};
        use crate::format::pack::{Codec, PackBuilder};
        let page = |seed: u8| -> Vec<u8> {
            (0..4096u32)
                .map(|i| if i % 5 == 0 { seed } else { (i / 9) as u8 })
                .collect()
        };
        let (base, decoy) = (page(1), page(2));
        let mut next = base.clone();
        next[77] ^= 0x40;
        let ids = [&base, &decoy, &next].map(|b| Id::of_chunk(b));
        let mut enc = Encoder::new(3, None).unwrap();
        let mut pack = PackBuilder::with_version(Vec::new(), None, 2).unwrap();
        let mut slot = vec![0; slot_len(4096)];
        for (id, raw) in [(ids[0], &base), (ids[1], &decoy)] {
            let s = enc.encode(raw, &mut slot, Attempt::Plain).unwrap();
            pack.try_push(id, &slot[..s.len], 4096, s.codec).unwrap();
        }
        let d = enc
            .encode_delta(&next, &ids[2], &ids[0], &base, &mut slot)
            .unwrap()
            .unwrap();
        assert_eq!(d.codec, Codec::ZstdDelta);
        pack.try_push(ids[2], &slot[..d.len], 4096, d.codec)
            .unwrap();
        let Stored {
            _dir,
            backend,
            bytes,
            entries,
            placed,
        } = stored(pack);
        let delta = entries[2];
        let stored = &bytes[delta.offset as usize..][..delta.stored_len as usize];

        // The decoy first: tried, refused by the id check, then the base.
        let colliding = Colliding {
            placed: placed.clone(),
            decoys: vec![ids[1]],
        };
        let bases = Bases::new(backend.clone(), DEFAULT_CACHE_BYTES, ChunkIds::default()).unwrap();
        let (raw, depth) = bases.raw(&ids[2], &colliding).unwrap();
        assert!(raw.as_slice() == next.as_slice());
        assert_eq!(depth, 1);
        let fresh = Bases::new(backend.clone(), DEFAULT_CACHE_BYTES, ChunkIds::default()).unwrap();
        let (named, (b, _)) = fresh
            .base_chunk(&delta, stored, &colliding)
            .unwrap()
            .unwrap();
        assert_eq!(named, ids[0]);
        assert!(b.as_slice() == base.as_slice());

        // Only decoys answer the prefix: an error, never the decoy's bytes.
        let mut without = placed.clone();
        without.remove(&ids[0]);
        let decoys_only = Colliding {
            placed: without,
            decoys: vec![ids[1], ids[1]],
        };
        let fresh = Bases::new(backend, DEFAULT_CACHE_BYTES, ChunkIds::default()).unwrap();
        assert!(fresh.raw(&ids[2], &decoys_only).is_err());
        assert!(matches!(
            fresh.base_chunk(&delta, stored, &decoys_only),
            Err(ChunkError::Base { base, .. }) if base == BasePrefix::of(&ids[0])
        ));
    }

    /// Four versions of a page stored in one pack: v0 whole, each next a
    /// delta against the one before (a chain of depth 3), and their ids.
    fn chain_of_four() -> (Vec<Vec<u8>>, Vec<ChunkId>, Stored) {
        use crate::codec::{slot_len, Attempt, Encoder};
        use crate::format::pack::PackBuilder;
        let mut versions = vec![(0..4096u32).map(|i| (i / 7) as u8).collect::<Vec<u8>>()];
        for k in 1..4 {
            let mut v = versions[k - 1].clone();
            v[100 * k] ^= 0x5a;
            versions.push(v);
        }
        let ids: Vec<ChunkId> = versions.iter().map(|v| Id::of_chunk(v)).collect();
        let mut enc = Encoder::new(3, None).unwrap();
        let mut pack = PackBuilder::with_version(Vec::new(), None, 2).unwrap();
        let mut slot = vec![0; slot_len(4096)];
        let s = enc.encode(&versions[0], &mut slot, Attempt::Plain).unwrap();
        pack.try_push(ids[0], &slot[..s.len], 4096, s.codec)
            .unwrap();
        for k in 1..4 {
            let d = enc
                .encode_delta(
                    &versions[k],
                    &ids[k],
                    &ids[k - 1],
                    &versions[k - 1],
                    &mut slot,
                )
                .unwrap()
                .unwrap();
            pack.try_push(ids[k], &slot[..d.len], 4096, d.codec)
                .unwrap();
        }
        (versions, ids, stored(pack))
    }

    /// Checking only the link returned (a backup's bases) answers as
    /// checking every link, keeps only that link, and a damaged link below
    /// it fails the read: never other bytes.
    #[test]
    fn checking_only_the_top_answers_the_same_and_never_wrong_bytes() {
        use crate::backend::PutMode;
        let (versions, ids, stored) = chain_of_four();
        let locate = Colliding {
            placed: stored.placed.clone(),
            decoys: Vec::new(),
        };
        let top = || {
            Bases::new(
                stored.backend.clone(),
                DEFAULT_CACHE_BYTES,
                ChunkIds::default(),
            )
            .unwrap()
            .checking_only_the_top()
        };
        for (want, depth) in [(0, 0), (1, 1), (2, 2), (3, 3), (u8::MAX, 3)] {
            let bases = top();
            let (id, (raw, d)) = bases.raw_toward(&ids[3], &locate, want).unwrap();
            assert_eq!((id, d), (ids[depth as usize], depth), "want {want}");
            assert!(raw.as_slice() == versions[depth as usize].as_slice());
            // Only the link returned was checked, so only it is kept.
            for (k, link) in ids.iter().enumerate() {
                assert_eq!(bases.cached(link).is_some(), k == depth as usize, "{k}");
            }
        }
        // Link 1 damaged in the middle of its frame: the read of the top fails.
        let e = stored.entries[1];
        let mut bytes = stored.bytes.clone();
        bytes[(e.offset + e.stored_len / 2) as usize] ^= 0x10;
        let (pack, _, _) = stored.placed[&ids[1]];
        stored
            .backend
            .put(&layout::pack(&pack), &bytes, PutMode::Overwrite)
            .unwrap();
        // It decodes unchecked to other bytes, and so does the top: refused
        // by the top's id check.
        let r = top().raw(&ids[3], &locate);
        assert!(
            matches!(r, Err(ChunkError::Mismatch { .. })),
            "{:?}",
            r.err()
        );
    }

    /// `raw_toward` names the link of a chain at the depth asked, with its
    /// bytes (the chunk itself when the chain is shallower), from a fresh
    /// reader and from one whose cache holds every link (a cached link
    /// deeper than asked does not end the walk).
    #[test]
    fn raw_toward_names_the_link_at_the_depth_asked() {
        let (versions, ids, stored) = chain_of_four();
        let Stored {
            _dir,
            backend,
            placed,
            ..
        } = stored;
        let locate = Colliding {
            placed,
            decoys: Vec::new(),
        };
        let check = |bases: &Bases, want: u8, depth: u8| {
            let (id, (raw, d)) = bases.raw_toward(&ids[3], &locate, want).unwrap();
            assert_eq!((id, d), (ids[depth as usize], depth), "want {want}");
            assert!(raw.as_slice() == versions[depth as usize].as_slice());
        };
        for (want, depth) in [(0, 0), (1, 1), (2, 2), (3, 3), (5, 3), (u8::MAX, 3)] {
            let fresh =
                Bases::new(backend.clone(), DEFAULT_CACHE_BYTES, ChunkIds::default()).unwrap();
            check(&fresh, want, depth);
        }
        let warm = Bases::new(backend, DEFAULT_CACHE_BYTES, ChunkIds::default()).unwrap();
        assert_eq!(warm.raw(&ids[3], &locate).unwrap().1, 3);
        for (want, depth) in [(1, 1), (0, 0), (3, 3)] {
            check(&warm, want, depth);
        }
        // Holding packs open (a backup's bases): the chain's four links are
        // read through one open of their pack, and decode the same.
        for hold in [false, true] {
            use std::sync::atomic::Ordering::Relaxed;
            let counting = Arc::new(crate::backend::TestReads::counting(_dir.path(), true));
            let mut bases =
                Bases::new(counting.clone(), DEFAULT_CACHE_BYTES, ChunkIds::default()).unwrap();
            if hold {
                bases = bases.holding_open();
            }
            let (raw, depth) = bases.raw(&ids[3], &locate).unwrap();
            assert!((raw.as_slice(), depth) == (versions[3].as_slice(), 3));
            assert_eq!(counting.ranges.load(Relaxed), 4);
            assert_eq!(counting.opens.load(Relaxed), usize::from(hold));
        }
    }

    /// The LRU keeps at most its bound in bytes, evicting the least recently
    /// used first (a lookup counts as a use).
    #[test]
    fn the_cache_is_bounded_and_evicts_the_least_recently_used() {
        let mut inner = Inner {
            cached: IdMap::default(),
            order: BTreeMap::new(),
            bytes: 0,
            tick: 0,
        };
        let id = |n: u8| Id([n; 32]);
        let raw = |n: u8| -> Raw { (Arc::new(vec![n; 100]), 0) };
        for n in 0..3 {
            inner.put(id(n), raw(n), 300);
        }
        assert!(inner.get(&id(0)).is_some()); // 0 is now the most recent
        inner.put(id(3), raw(3), 300);
        assert!(inner.bytes <= 300);
        assert!(
            inner.get(&id(1)).is_none(),
            "the least recently used goes first"
        );
        for n in [0, 2, 3] {
            assert_eq!(inner.get(&id(n)).map(|r| r.0[0]), Some(n));
        }
        // A chunk larger than the bound is not kept, and keeps nothing else out
        // for long: the cache stays within its bound.
        inner.put(id(9), (Arc::new(vec![9; 1000]), 0), 300);
        assert!(inner.bytes <= 300);
    }
}

//! Content-found delta bases (DELTAS.md, "Content-found bases"): each chunk's
//! resemblance features (`features.rs`), the lookup of a new chunk's likely
//! bases among the parent snapshot's chunks (`lookup.rs`), and the local file
//! that carries the parent's features from one backup to the next (`file.rs`).
//!
//! [`Sketcher`] is one backup's part: it answers "which parent chunk looks like
//! this new one" from the parent's sketch, and collects the features of the
//! chunks that changed so the new snapshot's sketch can be written without
//! computing features for the unchanged ones. It also carries each position's
//! skip-delta state (`backup/skip.rs`) from the parent's sketch to the new one.

pub mod features;
pub(crate) mod file;
pub mod lookup;

use super::skip;
use crate::types::{ChunkId, ChunkRef};
use features::Features;
use file::Sketch;
use lookup::FeatureIndex;
use std::sync::{Arc, Mutex, OnceLock};

pub(crate) struct Sketcher {
    /// The parent's features per position (from a sound sketch file); `None`:
    /// no usable sketch, so this backup computes every chunk's features to write
    /// a whole one.
    parent: Option<Arc<Vec<Features>>>,
    /// The parent's skip-delta states per position (empty without a sketch).
    parent_states: Vec<u8>,
    /// States of the chunks this backup stored: position, chunk, state.
    states: Mutex<Vec<(u64, ChunkId, u8)>>,
    /// Built from `parent` on a thread of its own from the start (`pending`),
    /// taken on first use.
    index: OnceLock<FeatureIndex>,
    /// The build under way: a backup's first lookups come after it has read
    /// its index and begun its capture, mostly on one core, so the table
    /// (~30 ms at 1 GiB, one thread) is built on the other meanwhile instead
    /// of on first use while the other workers wait for it.
    pending: Mutex<Option<std::thread::JoinHandle<FeatureIndex>>>,
    /// Features computed in this backup: position, the chunk they are of.
    computed: Mutex<Vec<(u64, ChunkId, Features)>>,
}

/// A [`Sketcher`] whose parent sketch is being read on a thread of its own
/// ([`Sketcher::loading`]).
pub(crate) enum Loading {
    Reading(std::thread::JoinHandle<Sketcher>),
    Read(Sketcher),
}

impl Loading {
    /// The sketcher, once its sketch is read (a read that panicked: none).
    pub(crate) fn take(self) -> Sketcher {
        match self {
            Loading::Read(s) => s,
            Loading::Reading(h) => h.join().unwrap_or_else(|_| Sketcher::new(None)),
        }
    }
}

impl Sketcher {
    /// The sketcher of a backup of database `name` in store `store`, the
    /// sketch of `parent` (snapshot, chunk count) read from this machine's
    /// file on a thread of its own: the backup loads its index meanwhile.
    pub(crate) fn loading(
        store: crate::types::Id,
        name: String,
        parent: Option<(crate::types::SnapshotId, usize)>,
    ) -> Loading {
        let read = move |name: &str| {
            Sketcher::new(parent.and_then(|(id, chunks)| file::read(&store, name, &id, chunks)))
        };
        let on_thread = name.clone();
        match std::thread::Builder::new()
            .name("sketch-read".into())
            .spawn(move || read(&on_thread))
        {
            Ok(h) => Loading::Reading(h),
            // A thread that cannot be started: read here.
            Err(_) => Loading::Read(read(&name)),
        }
    }

    pub(crate) fn new(parent: Option<Sketch>) -> Sketcher {
        let (parent, parent_states) = match parent {
            Some(s) => (Some(Arc::new(s.features)), s.states),
            None => (None, Vec::new()),
        };
        // A thread that cannot be started: built on first use instead.
        let pending = parent.clone().and_then(|p| {
            std::thread::Builder::new()
                .name("sketch-lookup".into())
                .spawn(move || FeatureIndex::new(p))
                .ok()
        });
        Sketcher {
            parent,
            parent_states,
            states: Mutex::new(Vec::new()),
            index: OnceLock::new(),
            pending: Mutex::new(pending),
            computed: Mutex::new(Vec::new()),
        }
    }

    /// Which link of the parent's chain at `pos` the new version there is made
    /// against ([`skip::next`] of the parent's state there); `None` without
    /// the parent's sketch: the parent's chunk itself, chains up to the
    /// format's bound, as a store without sketches does.
    pub(crate) fn plan(&self, pos: u64) -> Option<skip::Next> {
        self.parent.as_ref()?;
        Some(skip::next(
            self.parent_states
                .get(pos as usize)
                .copied()
                .unwrap_or(skip::UNKNOWN),
        ))
    }

    /// Records the skip-delta state of new chunk `id` at `pos`.
    pub(crate) fn record_state(&self, pos: u64, id: &ChunkId, state: u8) {
        if let Ok(mut v) = self.states.lock() {
            v.push((pos, *id, state));
        }
    }

    /// Whether the chunk `id` at `pos` needs its features computed: it is not
    /// the parent's chunk there (`parent_chunk`), or there is no parent sketch.
    pub(crate) fn wants(&self, parent_chunk: Option<&ChunkRef>, id: &ChunkId) -> bool {
        self.parent.is_none() || parent_chunk != Some(&ChunkRef::Stored(*id))
    }

    /// Whether the parent's sketch is at hand (else every chunk's features are
    /// computed, for a whole new sketch).
    pub(crate) fn has_parent(&self) -> bool {
        self.parent.is_some()
    }

    /// Records for chunk `id` at `pos` the features of the parent's chunk there,
    /// without computing its own: the backup calls it for a chunk stored as a
    /// small delta (under 1/8 of it) against that chunk, whose content it
    /// mostly holds, so it shares most of its features. How far this drifts: a
    /// position's features stay those of the last version whose own were
    /// computed, at most 8 versions back (each inheriting version is a delta
    /// one deeper than the one before; a chain ends at depth 8, and the next
    /// version, with no same-position base, has its own computed), each a
    /// small delta of the one before. A feature gone stale only picks a poorer base
    /// (every decode is checked against the chunk id), never wrong bytes.
    /// (With skip-delta bases a position's versions are at most 32 apart from
    /// one not made against its chain, which computes its own.)
    pub(crate) fn inherit(&self, pos: u64, id: &ChunkId) {
        let Some(f) = self.parent.as_ref().and_then(|p| p.get(pos as usize)) else {
            return;
        };
        if let Ok(mut c) = self.computed.lock() {
            c.push((pos, *id, *f));
        }
    }

    /// Computes and records the features of chunk `id` at `pos`.
    pub(crate) fn compute(&self, pos: u64, id: &ChunkId, data: &[u8]) -> Features {
        let f = features::features(data);
        if let Ok(mut c) = self.computed.lock() {
            c.push((pos, *id, f));
        }
        f
    }

    /// The parent position (other than `pos`) whose chunk shares the most
    /// features with `f`, if any.
    pub(crate) fn found(&self, f: &Features, pos: u64) -> Option<u64> {
        let parent = self.parent.as_ref()?;
        let index = self.index.get_or_init(|| {
            let pending = self.pending.lock().ok().and_then(|mut p| p.take());
            pending
                .and_then(|h| h.join().ok())
                .unwrap_or_else(|| FeatureIndex::new(parent.clone()))
        });
        let [best] = index.best::<1>(f, pos);
        best.map(u64::from)
    }

    /// The new snapshot's sketch, given its chunks: features computed in this
    /// backup where they are of the chunk the snapshot holds there, the
    /// parent's where its chunk is unchanged, else none (zeros, or a chunk
    /// whose features are unknown).
    pub(crate) fn finish(self, chunks: &[ChunkRef], parent_chunks: Option<&[ChunkRef]>) -> Sketch {
        // The parent's rows are rewritten in place where they can be (most
        // positions keep theirs): a second table of ~8 MB at 1 GiB, fresh
        // memory, cost the backup its page faults. The lookup table holds
        // the rows (and its build, until it ends).
        drop(self.index);
        if let Some(h) = self.pending.lock().ok().and_then(|mut p| p.take()) {
            let _ = h.join();
        }
        let parent = self
            .parent
            .map(|p| Arc::try_unwrap(p).unwrap_or_else(|p| (*p).clone()));
        let unchanged = |pos: usize, c: &ChunkRef| {
            matches!(c, ChunkRef::Stored(_)) && parent_chunks.and_then(|p| p.get(pos)) == Some(c)
        };
        let mut out = match parent {
            Some(mut rows) => {
                rows.resize(chunks.len(), [0; features::FEATURES]);
                for (pos, (row, c)) in rows.iter_mut().zip(chunks).enumerate() {
                    if !unchanged(pos, c) {
                        *row = [0; features::FEATURES];
                    }
                }
                rows
            }
            None => vec![[0; features::FEATURES]; chunks.len()],
        };
        // A chunk neither unchanged nor stored by this backup (found by
        // dedup) has a history this backup does not know.
        let mut states = vec![skip::UNKNOWN; chunks.len()];
        if !self.parent_states.is_empty() {
            for (pos, (state, c)) in states.iter_mut().zip(chunks).enumerate() {
                if unchanged(pos, c) {
                    *state = self
                        .parent_states
                        .get(pos)
                        .copied()
                        .unwrap_or(skip::UNKNOWN);
                }
            }
        }
        let recorded = match self.states.into_inner() {
            Ok(v) => v,
            Err(p) => p.into_inner(),
        };
        for (pos, id, v) in recorded {
            if chunks.get(pos as usize) == Some(&ChunkRef::Stored(id)) {
                states[pos as usize] = v;
            }
        }
        let computed = match self.computed.into_inner() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        for (pos, id, f) in computed {
            if chunks.get(pos as usize) == Some(&ChunkRef::Stored(id)) {
                out[pos as usize] = f;
            }
        }
        Sketch {
            features: out,
            states,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Id;

    fn id(n: u8) -> ChunkId {
        Id([n; 32])
    }

    /// A page with features (a constant one has none).
    fn page(seed: u32) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9e37_79b9) | 1;
        (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    /// The new sketch keeps the parent's row and state only where the chunk
    /// is unchanged, takes the rows and states this backup recorded where
    /// they are of the chunk kept, and has none elsewhere: rewriting the
    /// parent's rows in place must answer as a fresh table did, the image
    /// grown or shrunk.
    #[test]
    fn the_new_sketch_keeps_only_what_is_of_its_chunks() {
        let parent_chunks: Vec<ChunkRef> = (1..=5).map(|n| ChunkRef::Stored(id(n))).collect();
        let parent = Sketch {
            features: (1..=5u32).map(|n| [n; features::FEATURES]).collect(),
            states: vec![1, 2, 3, 4, 5],
        };
        let grown = |extra: &[ChunkRef]| {
            let mut c = vec![
                ChunkRef::Stored(id(1)),  // unchanged
                ChunkRef::Stored(id(20)), // stored now, features computed
                ChunkRef::Stored(id(30)), // found by dedup: unknown
                ChunkRef::Zero,
                ChunkRef::Stored(id(2)), // moved: not the parent's here
            ];
            c.extend_from_slice(extra);
            c
        };
        let cases: Vec<(Vec<ChunkRef>, Vec<u32>, Vec<u8>)> = vec![
            (
                grown(&[ChunkRef::Stored(id(60))]),
                vec![1, 20, 0, 0, 0, 60],
                vec![1, 7, skip::UNKNOWN, skip::UNKNOWN, skip::UNKNOWN, 9],
            ),
            (grown(&[]), vec![1, 20, 0, 0, 0], vec![1, 7, 255, 255, 255]),
            (
                vec![ChunkRef::Stored(id(1)), ChunkRef::Stored(id(20))],
                vec![1, 20],
                vec![1, 7],
            ),
        ];
        for (chunks, want_rows, want_states) in cases {
            let s = Sketcher::new(Some(parent.clone()));
            // The lookup table is built (it holds the rows while it is).
            assert_eq!(s.found(&[20; features::FEATURES], 0), None);
            s.compute(1, &id(20), &page(20));
            s.record_state(1, &id(20), 7);
            // Recorded for a chunk the snapshot does not keep: ignored.
            s.record_state(2, &id(99), 8);
            s.record_state(5, &id(60), 9);
            let computed = features::features(&page(20));
            let f60 = features::features(&page(60));
            s.compute(5, &id(60), &page(60));
            assert_ne!(computed, [0; features::FEATURES]);
            let got = s.finish(&chunks, Some(&parent_chunks));
            let want: Vec<Features> = want_rows
                .iter()
                .map(|&n| match n {
                    20 => computed,
                    60 => f60,
                    n => [n; features::FEATURES],
                })
                .collect();
            assert_eq!(got.features, want, "{chunks:?}");
            assert_eq!(got.states, want_states, "{chunks:?}");
        }
        // Without the parent's list nothing is known unchanged.
        let s = Sketcher::new(Some(parent.clone()));
        let got = s.finish(&parent_chunks, None);
        assert_eq!(got.features, vec![[0; features::FEATURES]; 5]);
        assert_eq!(got.states, vec![skip::UNKNOWN; 5]);
    }
}

//! Index objects (`index/`): read, checked and decoded into the in-memory chunk
//! index, and written.

use super::Store;
use crate::backend::{Backend, BackendError, ObjectInfo, PutMode};
use crate::format::index::{DeltaBase, IndexBody};
use crate::index::chunk_index::{ChunkIndex, DecodedObject};
use crate::types::{ChunkId, Id, IdMap};
use crate::{layout, Error, Result};
use rayon::prelude::*;

impl Store {
    /// The in-memory chunk index built from every `index/` object. Locations are
    /// kept only in packs that exist with their recorded length: a lost pack's
    /// chunks are then unknown, so a backup stores them again rather than
    /// publishing a snapshot that references them, and a restore names them missing.
    pub(crate) fn load_index(&self) -> Result<ChunkIndex> {
        let present = self.pack_sizes()?;
        let objects = self.backend.list(layout::INDEX)?;
        let mut index = self.index_of(&objects, &present);
        index.seal();
        Ok(index)
    }

    /// [`Store::load_index`], and what the base tables say of each delta: its
    /// deepest recorded depth and largest whole length (a chunk stored twice
    /// has a row per copy; the deepest is what a reader may meet). Empty for a
    /// store without deltas.
    pub(crate) fn load_index_with_rows(&self) -> Result<(ChunkIndex, IdMap<DeltaFacts>)> {
        let present = self.pack_sizes()?;
        let objects = self.backend.list(layout::INDEX)?;
        let mut rows: IdMap<DeltaFacts> = IdMap::default();
        let mut index = self.index_with(&objects, &present, |id, b| {
            let f = rows.entry(*id).or_default();
            f.depth = f.depth.max(b.depth);
            f.whole_len = f.whole_len.max(b.whole_len);
        });
        index.seal();
        Ok((index, rows))
    }

    /// The index objects `objects` read into an index (not sealed), locations only
    /// in the packs of `present` (by id, with their length).
    pub(crate) fn index_of(&self, objects: &[ObjectInfo], present: &IdMap<u64>) -> ChunkIndex {
        self.index_with(objects, present, |_, _| {})
    }

    /// [`Store::index_of`] handing each delta's base-table row to `row`.
    fn index_with(
        &self,
        objects: &[ObjectInfo],
        present: &IdMap<u64>,
        mut row: impl FnMut(&ChunkId, &DeltaBase) + Send,
    ) -> ChunkIndex {
        let mut index = ChunkIndex::default();
        // Sized once from the objects' sizes (an entry takes about 38 bytes): growing
        // by doubling left the table up to half empty, the largest part of a backup's memory.
        index.reserve((objects.iter().map(|o| o.size).sum::<u64>() / 38) as usize);
        let objects: Vec<(Id, &str, u64)> = objects
            .iter()
            .filter_map(|o| Some((layout::id_of(&o.key)?, o.key.as_str(), o.size)))
            .collect();
        // Objects are read, checked against their names and decoded on every
        // core, a batch at a time (memory stays bounded), and added to the index
        // in order, each batch while the next one is decoded. Read and decoded
        // one after another on one core, they were most of the 0.2 s a restore
        // with deltas spent before its first write (1 GiB after 144 steps).
        let batches: Vec<&[(Id, &str, u64)]> = batches(&objects).collect();
        let decode = |batch: &[(Id, &str, u64)]| -> Vec<Result<Fetched>> {
            batch
                .par_iter()
                .map(|&(id, key, size)| {
                    let bytes = self.get_verified(key, &id)?;
                    Ok(match size > STREAMED {
                        true => Fetched::Bytes(bytes),
                        false => Fetched::Decoded(DecodedObject::decode(&bytes)),
                    })
                })
                .collect()
        };
        let mut add = |index: &mut ChunkIndex, batch: &[(Id, &str, u64)], fetched| {
            for ((id, key, _), f) in batch.iter().zip::<Vec<Result<Fetched>>>(fetched) {
                // A damaged index object costs its chunks (stored again by the next
                // backup) and the snapshots whose maps name them, never the whole store.
                let present = |pack: &Id, len| present.get(pack) == Some(&len);
                let added = f.and_then(|f| {
                    match f {
                        Fetched::Decoded(d) => index.add_decoded(*id, d, present, &mut row),
                        Fetched::Bytes(b) => {
                            index.add_encoded_with_bases(*id, &b, present, &mut row)
                        }
                    }
                    .map_err(self.format_err(key))
                });
                match added {
                    Ok(()) => {}
                    // Deleted by a prune since the listing: not damage.
                    Err(Error::Backend(BackendError::NotFound { .. })) => {}
                    Err(e) => index.mark_damaged(*id, e.to_string()),
                }
            }
        };
        let mut next = batches.first().map(|b| decode(b));
        for (i, batch) in batches.iter().enumerate() {
            let Some(decoded) = next.take() else {
                break;
            };
            let index = &mut index;
            next = rayon::join(
                || add(index, batch, decoded),
                || batches.get(i + 1).map(|b| decode(b)),
            )
            .1;
        }
        index
    }
}

/// Index objects decoded at once when the index is loaded: at most this many,
/// and of at most [`BATCH_BYTES`] together unless one alone is larger. Decoded,
/// an object takes about 1.5 times its bytes until it is added, and two
/// batches are held (one added while the next is decoded): ~25 MB, where
/// before a batch of 64 objects was read whole at once, whatever their size.
const BATCH_OBJECTS: usize = 64;
const BATCH_BYTES: u64 = 8 << 20;

/// An index object larger than this is decoded entry by entry as it is added
/// ([`ChunkIndex::add_encoded_with_bases`]), not decoded whole first: a store's
/// first index object has an entry per chunk of the database, and decoded whole
/// it would take ~1.5 times its bytes beside the index being built.
const STREAMED: u64 = 64 << 20;

/// An index object read (and checked against its name) for the index.
enum Fetched {
    /// Decoded whole ([`DecodedObject::decode`]), to be added.
    Decoded(DecodedObject),
    /// Its bytes, decoded as it is added (larger than [`STREAMED`]).
    Bytes(Vec<u8>),
}

/// `objects` (id, key, size) cut into the batches [`Store::index_with`] loads.
fn batches<T>(objects: &[(Id, T, u64)]) -> impl Iterator<Item = &[(Id, T, u64)]> {
    let mut rest = objects;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (mut n, mut bytes) = (0, 0u64);
        while n < rest.len() && n < BATCH_OBJECTS && (n == 0 || bytes + rest[n].2 <= BATCH_BYTES) {
            bytes += rest[n].2;
            n += 1;
        }
        let (batch, after) = rest.split_at(n);
        rest = after;
        Some(batch)
    })
}

/// What a store's base tables say of one delta chunk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct DeltaFacts {
    /// Its depth (the deepest, when it is stored more than once).
    pub depth: u8,
    /// The bytes it would take stored alone (`DeltaBase::whole_len`; 0: unknown).
    pub whole_len: u32,
}

/// Stores an index object; returns its id and length. Streamed (see
/// [`crate::format::envelope::Streamed`]): into a local store it is written as it
/// is encoded, never held whole in memory.
pub(crate) fn put_index(backend: &dyn Backend, body: &IndexBody) -> Result<(Id, u64)> {
    // Version 1 unless the body holds a delta (a store without deltas stays
    // byte for byte a version-1 store); a delta without its base-table row is
    // refused by the version-2 checks.
    let plan = body
        .plan_streamed_as(body.needed_version())
        .map_err(|source| Error::Format {
            object: format!("{}/{}", backend.location(), layout::INDEX),
            source,
        })?;
    let id = Id(plan.hash);
    backend.put_streamed(
        &layout::index(&id),
        plan.len,
        PutMode::Overwrite,
        &mut |w| body.write_streamed(&plan, w),
    )?;
    Ok((id, plan.len))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Batches keep the objects' order and cut at 64 objects or 8 MB, an
    /// object larger than that alone in its batch.
    #[test]
    fn batches_are_bounded_by_count_and_bytes() {
        let objects = |sizes: &[u64]| -> Vec<(Id, (), u64)> {
            sizes.iter().map(|&s| (Id([0; 32]), (), s)).collect()
        };
        let cut = |o: &[(Id, (), u64)]| -> Vec<Vec<u64>> {
            batches(o)
                .map(|b| b.iter().map(|x| x.2).collect())
                .collect()
        };
        const M: u64 = 1 << 20;
        assert_eq!(cut(&objects(&[])), Vec::<Vec<u64>>::new());
        assert_eq!(cut(&objects(&[1, 2, 3])), vec![vec![1, 2, 3]]);
        assert_eq!(
            cut(&objects(&[3 * M, 5 * M, M, 100 * M, 2 * M])),
            vec![vec![3 * M, 5 * M], vec![M], vec![100 * M], vec![2 * M]]
        );
        let many = cut(&objects(&[10; 130]));
        assert_eq!(
            many.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![64, 64, 2]
        );
    }
}

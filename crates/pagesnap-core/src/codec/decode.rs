//! Decoding stored chunks: zstd decompression contexts, one per dictionary, with
//! dictionaries loaded from the store on first use and checked against their ids;
//! the per-thread decoders that decode on every core (restore's pool, copy's
//! thread-local ones).

use super::{BaseFault, ChunkError};
use crate::backend::Backend;
use crate::format::dict::DictBody;
use crate::format::pack::{self, Codec, DeltaHeader, PackEntry, MAX_CHUNK_LEN, ZSTD_DICT_MAGIC};
use crate::format::FormatError;
use crate::types::{ChunkIds, Id, IdMap};
use crate::{layout, Error, Result};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Mutex;
use zstd::bulk::Decompressor;
use zstd::zstd_safe;

thread_local! {
    /// This thread's own [`Decoder`] (see [`decode_checked_on_thread`]).
    static LOCAL: RefCell<Option<Decoder>> = const { RefCell::new(None) };
}

/// [`Decoder::decode_checked`] on this thread's own contexts, so that every core
/// can decode (`copy`) without sharing a [`Decoder`]. `dict` is the pack's
/// dictionary (id and bytes), if it has one; a thread keeps the context of the
/// last dictionary it used. `ids`: how the store names its chunks.
pub(crate) fn decode_checked_on_thread(
    e: &PackEntry,
    stored: &[u8],
    dict: Option<(&Id, &[u8])>,
    ids: &ChunkIds,
) -> Result<Vec<u8>, ChunkError> {
    let context = |e: Error| {
        ChunkError::Decode(FormatError::Decompress(std::io::Error::other(
            e.to_string(),
        )))
    };
    LOCAL.with(|cell| {
        let mut slot = cell.borrow_mut();
        let d = match &mut *slot {
            Some(d) => d,
            empty => empty.insert(Decoder::new(ids.clone()).map_err(context)?),
        };
        d.ids = ids.clone();
        if let Some((id, bytes)) = dict {
            if !d.with_dict.contains_key(id) {
                d.with_dict.clear();
                d.add_dict(*id, bytes).map_err(context)?;
            }
        }
        d.decode_checked(e, stored, dict.map(|(id, _)| id))
    })
}

/// Reads a dictionary object and checks it against its name.
pub(crate) fn load_dict(backend: &dyn Backend, id: &Id) -> Result<DictBody> {
    let key = layout::dict(id);
    let bytes = backend.get(&key)?;
    let format = |source| Error::Format {
        object: format!("{}/{key}", backend.location()),
        source,
    };
    if Id::of_object(&bytes) != *id {
        return Err(format(FormatError::Invalid(
            "content does not match its name (object is damaged)".into(),
        )));
    }
    DictBody::decode(&bytes).map_err(format)
}

/// The base a stored chunk needs (a delta's header, after the format's checks of
/// its blob), or `None` for a chunk that needs none: what a reader looks up
/// before it can decode a delta.
pub(crate) fn base_of(e: &PackEntry, stored: &[u8]) -> Result<Option<DeltaHeader>, ChunkError> {
    match e.codec {
        Codec::ZstdDelta => pack::split_delta(e, stored)
            .map(|(h, _)| Some(h))
            .map_err(ChunkError::Decode),
        _ => Ok(None),
    }
}

/// Decompression contexts: one without a dictionary, one per dictionary loaded,
/// one for deltas (whose base is given per call).
pub(crate) struct Decoder {
    plain: Decompressor<'static>,
    with_dict: HashMap<Id, Decompressor<'static>>,
    /// Deltas: `ZSTD_decompress_usingDict` with the base as raw content (the
    /// base never starts with the dictionary magic), borrowed for one call, so
    /// one context serves every base.
    delta: zstd_safe::DCtx<'static>,
    /// How the store names chunks: what a checked decode compares with.
    ids: ChunkIds,
}

impl Decoder {
    /// A decoder of a store naming its chunks by `ids`.
    pub(crate) fn new(ids: ChunkIds) -> Result<Self> {
        Ok(Decoder {
            ids,
            plain: Decompressor::new().map_err(|e| Error::Internal(format!("zstd: {e}")))?,
            with_dict: HashMap::new(),
            delta: zstd_safe::DCtx::try_create()
                .ok_or_else(|| Error::Internal("zstd: cannot create a context".into()))?,
        })
    }

    /// Decodes delta `e` into `out` (its raw length) against `base`, the base's
    /// raw bytes; returns the bytes written.
    fn decode_delta_into<C: zstd_safe::WriteBuf + ?Sized>(
        &mut self,
        e: &PackEntry,
        stored: &[u8],
        base: Option<&[u8]>,
        out: &mut C,
    ) -> Result<usize, ChunkError> {
        let (h, frame) = pack::split_delta(e, stored).map_err(ChunkError::Decode)?;
        let fault = |fault| ChunkError::Base {
            base: h.base,
            fault,
        };
        // The caller found the base by the blob's prefix (or the index's full
        // id); a base of the right length but the wrong content decodes to
        // bytes the id check refuses, so the prefix is never trusted alone.
        let base = base.ok_or(fault(BaseFault::Missing))?;
        if base.len() != h.base_len as usize {
            return Err(fault(BaseFault::Length {
                expected: h.base_len,
                found: base.len(),
            }));
        }
        if base.starts_with(&ZSTD_DICT_MAGIC) {
            // zstd would read it as a trained dictionary: no encoder makes such a delta.
            return Err(ChunkError::Decode(FormatError::Invalid(format!(
                "chunk {} is a delta against {}, which begins with zstd's dictionary magic",
                e.id.short(),
                h.base.short()
            ))));
        }
        self.delta
            .decompress_using_dict(out, frame, base)
            .map_err(|code| {
                ChunkError::Decode(FormatError::Decompress(std::io::Error::other(
                    zstd_safe::get_error_name(code),
                )))
            })
    }

    /// Makes dictionary `id` (whose bytes are `dict`) available without a store read.
    pub(crate) fn add_dict(&mut self, id: Id, dict: &[u8]) -> Result<()> {
        let d = Decompressor::with_dictionary(dict)
            .map_err(|e| Error::Internal(format!("zstd dictionary: {e}")))?;
        self.with_dict.insert(id, d);
        Ok(())
    }

    /// Loads dictionary `id` from the store unless it is loaded already.
    pub(crate) fn ensure_dict(&mut self, backend: &dyn Backend, id: &Id) -> Result<()> {
        if !self.with_dict.contains_key(id) {
            let body = load_dict(backend, id)?;
            self.add_dict(*id, &body.dict)?;
        }
        Ok(())
    }

    /// The context for a chunk stored as `codec` in a pack whose dictionary is
    /// `dict` (already loaded); `None` for a chunk stored raw. The one place that
    /// says how each codec decodes.
    fn context(
        &mut self,
        codec: Codec,
        dict: Option<&Id>,
    ) -> Result<Option<&mut Decompressor<'static>>, FormatError> {
        match codec {
            Codec::Raw => Ok(None),
            Codec::Zstd => Ok(Some(&mut self.plain)),
            Codec::ZstdDict => match dict.and_then(|d| self.with_dict.get_mut(d)) {
                Some(d) => Ok(Some(d)),
                None => Err(FormatError::Decompress(std::io::Error::other(
                    "the chunk needs a dictionary its pack does not name",
                ))),
            },
            // Decoded with its base (`decode_delta_into`), never through a context.
            Codec::ZstdDelta => Err(FormatError::Decompress(std::io::Error::other(
                "the chunk needs its base chunk",
            ))),
        }
    }

    /// Decodes one blob of a pack whose dictionary is `dict` (already ensured) and
    /// checks the chunk against the id its entry names.
    ///
    /// A delta fails with [`ChunkError::Base`]: it needs
    /// [`Decoder::decode_checked_with_base`].
    pub(crate) fn decode_checked(
        &mut self,
        e: &PackEntry,
        stored: &[u8],
        dict: Option<&Id>,
    ) -> Result<Vec<u8>, ChunkError> {
        self.decode_checked_with_base(e, stored, dict, None)
    }

    /// [`Decoder::decode_checked`] for any codec: `base` is the raw bytes of the
    /// base chunk a delta names ([`base_of`]; ignored for other codecs). The
    /// caller vouches that they are that chunk's (decoded checked, or held since
    /// they were); a wrong base of the right length decodes to bytes that fail
    /// the id check, or not at all, so a wrong chunk is never returned.
    pub(crate) fn decode_checked_with_base(
        &mut self,
        e: &PackEntry,
        stored: &[u8],
        dict: Option<&Id>,
        base: Option<&[u8]>,
    ) -> Result<Vec<u8>, ChunkError> {
        let raw = self.decode_with_base(e, stored, dict, base)?;
        check_id(&self.ids, e, &raw)?;
        Ok(raw)
    }

    /// [`Decoder::decode_into_with_base`] into a buffer of its own, which zstd
    /// fills without its being zeroed first (not checked against its id: the
    /// restore's links, which the image check covers). A zeroed buffer per
    /// link was ~1 % of a restore's CPU samples (1 GiB after 144 steps).
    pub(crate) fn decode_with_base(
        &mut self,
        e: &PackEntry,
        stored: &[u8],
        dict: Option<&Id>,
        base: Option<&[u8]>,
    ) -> Result<Vec<u8>, ChunkError> {
        if e.codec != Codec::ZstdDelta {
            return self.decode(e, stored, dict).map_err(ChunkError::Decode);
        }
        pack::check_blob(e, stored).map_err(ChunkError::Decode)?;
        let mut raw = Vec::with_capacity(e.raw_len as usize);
        self.decode_delta_into(e, stored, base, &mut raw)?;
        pack::check_decoded(e, &raw).map_err(ChunkError::Decode)?;
        Ok(raw)
    }

    /// Decodes one blob, bounded by the entry's raw length (not checked against its
    /// id): the format's checks ([`pack::decode_blob_with`]) with this decoder's
    /// contexts.
    fn decode(
        &mut self,
        e: &PackEntry,
        stored: &[u8],
        dict: Option<&Id>,
    ) -> Result<Vec<u8>, FormatError> {
        pack::decode_blob_with(e, stored, |codec, s, cap| {
            // Only a missing dictionary fails here, as a decompression error.
            let z = self.context(codec, dict).map_err(|e| match e {
                FormatError::Decompress(io) => io,
                other => std::io::Error::other(other.to_string()),
            })?;
            let Some(z) = z else {
                return Ok(s.to_vec()); // stored raw (decode_blob_with copies those itself)
            };
            let mut raw = Vec::with_capacity(cap);
            z.decompress_to_buffer(s, &mut raw)?;
            Ok(raw)
        })
    }

    /// Decodes one blob straight into `out`, which must be exactly the entry's raw
    /// length (the caller's slot in the image), with the same checks as
    /// [`Decoder::decode_checked`] but the id's: restore's hot path, which checks
    /// the whole image instead. `base` as in [`Decoder::decode_checked_with_base`]
    /// (ignored for codecs other than deltas).
    pub(crate) fn decode_into_with_base(
        &mut self,
        e: &PackEntry,
        stored: &[u8],
        dict: Option<&Id>,
        base: Option<&[u8]>,
        out: &mut [u8],
    ) -> Result<(), ChunkError> {
        if stored.len() != e.stored_len as usize {
            return Err(ChunkError::Decode(FormatError::Truncated {
                needed: e.stored_len as u64,
                have: stored.len() as u64,
            }));
        }
        if e.raw_len > MAX_CHUNK_LEN || out.len() != e.raw_len as usize {
            return Err(ChunkError::Decode(FormatError::Invalid(format!(
                "chunk of {} bytes does not fit its {}-byte place",
                e.raw_len,
                out.len()
            ))));
        }
        if e.codec == Codec::ZstdDelta {
            let n = self.decode_delta_into(e, stored, base, out)?;
            return match n == out.len() {
                true => Ok(()),
                false => Err(ChunkError::Decode(FormatError::Invalid(format!(
                    "chunk decoded to {n} bytes, expected {}",
                    out.len()
                )))),
            };
        }
        let n = match self.context(e.codec, dict).map_err(ChunkError::Decode)? {
            None if stored.len() == out.len() => {
                out.copy_from_slice(stored);
                stored.len()
            }
            None => stored.len(),
            Some(z) => z
                .decompress_to_buffer(stored, out)
                .map_err(|e| ChunkError::Decode(FormatError::Decompress(e)))?,
        };
        if n != out.len() {
            return Err(ChunkError::Decode(FormatError::Invalid(format!(
                "chunk decoded to {n} bytes, expected {}",
                out.len()
            ))));
        }
        Ok(())
    }

    /// [`Decoder::decode_into_with_base`] without a base, then the chunk checked
    /// against its id.
    #[cfg(test)]
    pub(crate) fn decode_into_checked(
        &mut self,
        e: &PackEntry,
        stored: &[u8],
        dict: Option<&Id>,
        out: &mut [u8],
    ) -> Result<(), ChunkError> {
        self.decode_into_checked_with_base(e, stored, dict, None, out)
    }

    /// [`Decoder::decode_into_with_base`], then the chunk checked against its id.
    pub(crate) fn decode_into_checked_with_base(
        &mut self,
        e: &PackEntry,
        stored: &[u8],
        dict: Option<&Id>,
        base: Option<&[u8]>,
        out: &mut [u8],
    ) -> Result<(), ChunkError> {
        self.decode_into_with_base(e, stored, dict, base, out)?;
        check_id(&self.ids, e, out)
    }
}

/// Whether `raw` is the chunk `e` names.
fn check_id(ids: &ChunkIds, e: &PackEntry, raw: &[u8]) -> Result<(), ChunkError> {
    let actual = ids.of(raw);
    if actual != e.id {
        return Err(ChunkError::Mismatch { actual });
    }
    Ok(())
}

/// One [`Decoder`] per thread (rayon's thread index; the last slot for any other
/// thread), each with every dictionary in `dicts`, built on first use: restore
/// decodes on every core with it. A slot's lock is only ever taken by its own
/// thread, so it is never waited on.
pub(crate) struct DecoderPool {
    dicts: IdMap<Vec<u8>>,
    slots: Vec<Mutex<Option<Decoder>>>,
    ids: ChunkIds,
}

impl DecoderPool {
    pub(crate) fn new(dicts: IdMap<Vec<u8>>, ids: ChunkIds) -> Self {
        DecoderPool {
            dicts,
            ids,
            slots: (0..rayon::current_num_threads() + 1)
                .map(|_| Mutex::new(None))
                .collect(),
        }
    }

    /// Runs `f` with this thread's decoder.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut Decoder) -> Result<T>) -> Result<T> {
        let mut guard = self.slots[crate::thread_slot(self.slots.len())]
            .lock()
            .map_err(|_| Error::Internal("decoder pool poisoned".into()))?;
        if guard.is_none() {
            let mut d = Decoder::new(self.ids.clone())?;
            for (id, bytes) in &self.dicts {
                d.add_dict(*id, bytes)?;
            }
            *guard = Some(d);
        }
        match guard.as_mut() {
            Some(d) => f(d),
            None => Err(Error::Internal("decoder missing".into())),
        }
    }
}

//! Encoding chunks: compressing one chunk plain or with a dictionary into the
//! caller's buffer, keeping the smallest of the forms tried (or the raw bytes);
//! or as a delta against a base chunk the caller picked (format version 2).
//!
//! Which forms to try is the caller's: the chunk writer's `PlainTrial` decides
//! from how the forms compared on the backup's earlier chunks, and its training
//! decides which dictionary a backup uses. Those are a backup's policy, shared by
//! its threads; this file is what one chunk's stored form is.

use super::whole;
use crate::format::pack::{BasePrefix, Codec, DeltaHeader, MAX_CHUNK_LEN, ZSTD_DICT_MAGIC};
use crate::types::{ChunkId, Id};
use crate::{Error, Result};
use zstd::zstd_safe;

/// Bytes of a buffer that holds any chunk of `chunk_len` bytes encoded: zstd's
/// worst case for the chunk, which also holds the raw bytes.
pub(crate) fn slot_len(chunk_len: usize) -> usize {
    zstd::compress_bound(chunk_len)
}

/// Which zstd frames [`Encoder::encode`] makes (without a dictionary, only the
/// plain one whatever this says).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// The plain frame only.
    Plain,
    /// The dictionary's frame only.
    Dict,
    /// Both, keeping the smaller.
    Both,
}

/// One chunk encoded: the first `len` bytes of the buffer, stored as `codec`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stored {
    pub len: usize,
    pub codec: Codec,
    /// With both frames made: their lengths (dictionary, plain).
    pub both: Option<(usize, usize)>,
    /// What the chunk takes stored alone, not as a delta: `len`, unless a delta
    /// won in [`Encoder::encode_smallest`] (then the form it beat: what the delta
    /// saved is `whole - len`). For [`Encoder::encode_delta`] alone, the raw
    /// length (no other form was made); 0 for a small delta that
    /// [`Encoder::encode_delta_first`] kept without making the other forms.
    pub whole: usize,
}

/// One thread's zstd contexts, for the dictionary `dict` (if any).
pub(crate) struct Encoder {
    dict: Option<Id>,
    with_dict: Option<zstd::bulk::Compressor<'static>>,
    plain: zstd::bulk::Compressor<'static>,
    /// The plain frame, while it is compared with the dictionary's.
    scratch: Vec<u8>,
    /// Deltas: `ZSTD_compress_usingDict` with the base as raw content, borrowed
    /// for one call (so one context serves every base), at `level`.
    delta: zstd_safe::CCtx<'static>,
    level: i32,
    /// A delta's frame, then (in [`Encoder::encode_smallest`]) its whole blob,
    /// while it is compared with the other forms.
    delta_frame: Vec<u8>,
    delta_blob: Vec<u8>,
}

fn zstd_err(e: std::io::Error) -> Error {
    Error::Internal(format!("zstd: {e}"))
}

impl Encoder {
    /// Contexts at zstd `level`, with dictionary `dict` (its id and bytes) if any.
    pub(crate) fn new(level: i32, dict: Option<(Id, &[u8])>) -> Result<Self> {
        Self::with_levels(level, level, dict)
    }

    /// [`Encoder::new`] with a level per frame (tests make one form win).
    pub(crate) fn with_levels(
        dict_level: i32,
        plain_level: i32,
        dict: Option<(Id, &[u8])>,
    ) -> Result<Self> {
        let with_dict = match dict {
            Some((_, b)) => {
                Some(zstd::bulk::Compressor::with_dictionary(dict_level, b).map_err(zstd_err)?)
            }
            None => None,
        };
        Ok(Encoder {
            dict: dict.map(|(id, _)| id),
            with_dict,
            plain: zstd::bulk::Compressor::new(plain_level).map_err(zstd_err)?,
            scratch: Vec::new(),
            delta: zstd_safe::CCtx::try_create()
                .ok_or_else(|| Error::Internal("zstd: cannot create a context".into()))?,
            level: plain_level,
            delta_frame: Vec::new(),
            delta_blob: Vec::new(),
        })
    }

    /// The dictionary these contexts compress with.
    pub(crate) fn dict(&self) -> Option<Id> {
        self.dict
    }

    /// Compresses one chunk into `out` (at least [`slot_len`] bytes), making the
    /// frames `attempt` asks for, and keeps whichever is smallest of them and the
    /// raw bytes.
    pub(crate) fn encode(
        &mut self,
        data: &[u8],
        out: &mut [u8],
        attempt: Attempt,
    ) -> Result<Stored> {
        let with_dict = match &mut self.with_dict {
            Some(c) if attempt != Attempt::Plain => {
                Some(c.compress_to_buffer(data, out).map_err(zstd_err)?)
            }
            _ => None,
        };
        let plain = match with_dict {
            None => Some(self.plain.compress_to_buffer(data, out).map_err(zstd_err)?),
            Some(_) if attempt == Attempt::Dict => None,
            Some(_) => {
                // Beside the dictionary frame, which is in `out` already.
                self.scratch.clear();
                self.scratch.reserve(slot_len(data.len()));
                Some(
                    self.plain
                        .compress_to_buffer(data, &mut self.scratch)
                        .map_err(zstd_err)?,
                )
            }
        };
        let both = with_dict.zip(plain);
        let (len, codec) = match (with_dict, plain) {
            (Some(d), Some(p)) if p < d && p < data.len() => {
                out[..p].copy_from_slice(&self.scratch[..p]);
                (p, Codec::Zstd)
            }
            (Some(d), _) if d < data.len() => (d, Codec::ZstdDict),
            (None, Some(p)) if p < data.len() => (p, Codec::Zstd),
            _ => {
                out[..data.len()].copy_from_slice(data);
                (data.len(), Codec::Raw)
            }
        };
        Ok(Stored {
            len,
            codec,
            both,
            whole: len,
        })
    }

    /// Encodes chunk `data` (whose id is `id`) as a delta against the chunk
    /// `base_id`, whose raw bytes are `base`, into `out` (at least [`slot_len`]
    /// bytes): the [`DeltaHeader`], then a zstd frame made with `base` as prefix.
    ///
    /// `None` when no delta is to be had: the base is the chunk itself (the
    /// decoder refuses that), longer than a chunk, or begins with zstd's
    /// dictionary magic (zstd would read it as a trained dictionary), or the
    /// delta is no smaller than the raw chunk. Whether it beats the plain and
    /// dictionary frames is [`Encoder::encode_smallest`]'s question; the chain
    /// depth is the caller's (the index records it).
    #[cfg(test)]
    pub(crate) fn encode_delta(
        &mut self,
        data: &[u8],
        id: &ChunkId,
        base_id: &ChunkId,
        base: &[u8],
        out: &mut [u8],
    ) -> Result<Option<Stored>> {
        self.encode_delta_at(data, id, base_id, base, out, self.level)
    }

    /// [`Encoder::encode_delta`] at zstd `level` (any level makes a frame the
    /// decoder reads as it reads the others: only how hard the encoder looks
    /// for matches changes).
    fn encode_delta_at(
        &mut self,
        data: &[u8],
        id: &ChunkId,
        base_id: &ChunkId,
        base: &[u8],
        out: &mut [u8],
        level: i32,
    ) -> Result<Option<Stored>> {
        // A base sharing the chunk's own prefix reads as a delta against
        // itself (the decoder refuses it): a 2^-64 accident, stored plain.
        if BasePrefix::of(base_id) == BasePrefix::of(id)
            || base.len() > MAX_CHUNK_LEN as usize
            || base.starts_with(&ZSTD_DICT_MAGIC)
        {
            return Ok(None);
        }
        self.delta_frame.clear();
        self.delta_frame.reserve(slot_len(data.len()));
        self.delta
            .compress_using_dict(&mut self.delta_frame, data, base, level)
            .map_err(|code| {
                Error::Internal(format!("zstd delta: {}", zstd_safe::get_error_name(code)))
            })?;
        let header = DeltaHeader {
            base: BasePrefix::of(base_id),
            base_len: base.len() as u32,
        }
        .encode();
        let len = header.len() + self.delta_frame.len();
        if len >= data.len() {
            return Ok(None);
        }
        out[..header.len()].copy_from_slice(&header);
        out[header.len()..len].copy_from_slice(&self.delta_frame);
        Ok(Some(Stored {
            len,
            codec: Codec::ZstdDelta,
            both: None,
            whole: data.len(),
        }))
    }

    /// [`Encoder::encode`], then, with a base (`delta`: its id and raw bytes),
    /// [`Encoder::encode_delta`]; keeps whichever is smallest, so a delta is stored
    /// only where it saves bytes. `both` is the plain and dictionary frames'
    /// comparison whichever wins (what a backup's trial learns from).
    #[cfg(test)]
    pub(crate) fn encode_smallest(
        &mut self,
        data: &[u8],
        id: &ChunkId,
        out: &mut [u8],
        attempt: Attempt,
        delta: Option<(&ChunkId, &[u8])>,
    ) -> Result<Stored> {
        let mut best = self.encode(data, out, attempt)?;
        if let Some((base_id, base)) = delta {
            self.improve_with_delta(data, id, out, &mut best, base_id, base)?;
        }
        Ok(best)
    }

    /// Makes a delta of `data` against `base` and keeps it in `out` (and `best`)
    /// if it is smaller than `best`, the form `out` holds now. Whether it did.
    pub(crate) fn improve_with_delta(
        &mut self,
        data: &[u8],
        id: &ChunkId,
        out: &mut [u8],
        best: &mut Stored,
        base_id: &ChunkId,
        base: &[u8],
    ) -> Result<bool> {
        self.improve_with_delta_at(data, id, out, best, base_id, base, self.level)
    }

    /// [`Encoder::improve_with_delta`] with the delta made at zstd `level`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn improve_with_delta_at(
        &mut self,
        data: &[u8],
        id: &ChunkId,
        out: &mut [u8],
        best: &mut Stored,
        base_id: &ChunkId,
        base: &[u8],
        level: i32,
    ) -> Result<bool> {
        let delta = self.delta_aside(data, id, base_id, base, level)?;
        Ok(self.keep_aside(delta, out, best))
    }

    /// The chunk against one base, the delta made first: a small delta
    /// ([`whole::is_small`]) is kept as it is, without making the whole forms
    /// (it beats them by far: codec/whole.rs), unless the chunk is in the
    /// sample whose whole length is measured ([`whole::in_sample`]); then, and
    /// for a larger delta, as [`Encoder::encode_smallest`]. `whole` is 0 when
    /// not measured. Whether the delta was kept.
    pub(crate) fn encode_delta_first(
        &mut self,
        data: &[u8],
        id: &ChunkId,
        out: &mut [u8],
        attempt: Attempt,
        base_id: &ChunkId,
        base: &[u8],
    ) -> Result<(Stored, bool)> {
        let delta = self.delta_aside(data, id, base_id, base, self.level)?;
        if let Some(d) = delta.filter(|d| !whole::measured(id, d.len, data.len())) {
            out[..d.len].copy_from_slice(&self.delta_blob[..d.len]);
            return Ok((Stored { whole: 0, ..d }, true));
        }
        let mut best = self.encode(data, out, attempt)?;
        let won = self.keep_aside(delta, out, &mut best);
        Ok((best, won))
    }

    /// A delta at zstd `level`, made into `delta_blob` (not kept yet).
    fn delta_aside(
        &mut self,
        data: &[u8],
        id: &ChunkId,
        base_id: &ChunkId,
        base: &[u8],
        level: i32,
    ) -> Result<Option<Stored>> {
        let mut blob = std::mem::take(&mut self.delta_blob);
        blob.resize(slot_len(data.len()), 0);
        let made = self.encode_delta_at(data, id, base_id, base, &mut blob, level);
        self.delta_blob = blob;
        made
    }

    /// Keeps the delta [`Encoder::delta_aside`] made in `out` (and `best`) if
    /// it is smaller than `best`, the form `out` holds now. Whether it did.
    fn keep_aside(&mut self, delta: Option<Stored>, out: &mut [u8], best: &mut Stored) -> bool {
        match delta {
            Some(d) if d.len < best.len => {
                out[..d.len].copy_from_slice(&self.delta_blob[..d.len]);
                // What it takes whole is the best non-delta form's, even when
                // an earlier delta (another base) was the best so far.
                *best = Stored {
                    both: best.both,
                    whole: best.whole,
                    ..d
                };
                true
            }
            _ => false,
        }
    }
}

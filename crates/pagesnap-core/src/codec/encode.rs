//! Encoding chunks: compressing one chunk plain or with a dictionary into the
//! caller's buffer, keeping the smallest of the forms tried (or the raw bytes).
//!
//! Which forms to try is the caller's: the chunk writer's `PlainTrial` decides
//! from how the forms compared on the backup's earlier chunks, and its training
//! decides which dictionary a backup uses. Those are a backup's policy, shared by
//! its threads; this file is what one chunk's stored form is.

use crate::format::pack::Codec;
use crate::types::Id;
use crate::{Error, Result};

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
}

/// One thread's zstd contexts, for the dictionary `dict` (if any).
pub(crate) struct Encoder {
    dict: Option<Id>,
    with_dict: Option<zstd::bulk::Compressor<'static>>,
    plain: zstd::bulk::Compressor<'static>,
    /// The plain frame, while it is compared with the dictionary's.
    scratch: Vec<u8>,
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
        Ok(Stored { len, codec, both })
    }
}

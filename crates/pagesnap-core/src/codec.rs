//! codec: decoding stored chunks: zstd decompression contexts, one per dictionary, with
//! dictionaries loaded from the store on first use and checked against their ids.
//! Below every wing that reads chunks; it knows backend/ and format/, nothing above.

use crate::backend::Backend;
use crate::format::dict::DictBody;
use crate::format::pack::{decode_blob_with, Codec, PackEntry, MAX_CHUNK_LEN};
use crate::format::FormatError;
use crate::types::Id;
use crate::{layout, Error, Result};
use std::cell::RefCell;
use std::collections::HashMap;
use zstd::bulk::Decompressor;

thread_local! {
    /// This thread's own [`Decoders`] (see [`decode_on_thread`]).
    static LOCAL: RefCell<Option<Decoders>> = const { RefCell::new(None) };
}

/// [`Decoders::decode`] on this thread's own contexts, so that every core can
/// decode (`copy`) without sharing a [`Decoders`]. `dict` is the pack's
/// dictionary (id and bytes), if it has one; a thread keeps the context of the
/// last dictionary it used.
pub(crate) fn decode_on_thread(
    e: &PackEntry,
    stored: &[u8],
    dict: Option<(&Id, &[u8])>,
) -> Result<Vec<u8>, FormatError> {
    let context = |e: Error| FormatError::Decompress(std::io::Error::other(e.to_string()));
    LOCAL.with(|cell| {
        let mut slot = cell.borrow_mut();
        let d = match &mut *slot {
            Some(d) => d,
            empty => empty.insert(Decoders::new().map_err(context)?),
        };
        if let Some((id, bytes)) = dict {
            if !d.with_dict.contains_key(id) {
                d.with_dict.clear();
                d.add_dict(*id, bytes).map_err(context)?;
            }
        }
        d.decode(e, stored, dict.map(|(id, _)| id))
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

pub(crate) struct Decoders {
    plain: Decompressor<'static>,
    with_dict: HashMap<Id, Decompressor<'static>>,
}

impl Decoders {
    pub(crate) fn new() -> Result<Self> {
        Ok(Decoders {
            plain: Decompressor::new().map_err(|e| Error::Internal(format!("zstd: {e}")))?,
            with_dict: HashMap::new(),
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

    /// Decodes one blob of a pack whose dictionary is `dict` (already ensured).
    pub(crate) fn decode(
        &mut self,
        e: &PackEntry,
        stored: &[u8],
        dict: Option<&Id>,
    ) -> Result<Vec<u8>, FormatError> {
        let plain = &mut self.plain;
        let with_dict = &mut self.with_dict;
        decode_blob_with(e, stored, |codec, s, cap| match codec {
            Codec::Zstd => plain.decompress(s, cap),
            Codec::ZstdDict => match dict.and_then(|d| with_dict.get_mut(d)) {
                Some(d) => d.decompress(s, cap),
                None => Err(std::io::Error::other(
                    "the chunk needs a dictionary its pack does not name",
                )),
            },
            Codec::Raw => Ok(s.to_vec()),
        })
    }

    /// Decodes one blob straight into `out`, which must be exactly the entry's raw
    /// length (the caller's slot in the image), with the same checks as `decode`.
    pub(crate) fn decode_into(
        &mut self,
        e: &PackEntry,
        stored: &[u8],
        dict: Option<&Id>,
        out: &mut [u8],
    ) -> Result<(), FormatError> {
        if stored.len() != e.stored_len as usize {
            return Err(FormatError::Truncated {
                needed: e.stored_len as u64,
                have: stored.len() as u64,
            });
        }
        if e.raw_len > MAX_CHUNK_LEN || out.len() != e.raw_len as usize {
            return Err(FormatError::Invalid(format!(
                "chunk of {} bytes does not fit its {}-byte place",
                e.raw_len,
                out.len()
            )));
        }
        let n = match e.codec {
            Codec::Raw => {
                out.copy_from_slice(stored);
                stored.len()
            }
            Codec::Zstd => self
                .plain
                .decompress_to_buffer(stored, out)
                .map_err(FormatError::Decompress)?,
            Codec::ZstdDict => match dict.and_then(|d| self.with_dict.get_mut(d)) {
                Some(d) => d
                    .decompress_to_buffer(stored, out)
                    .map_err(FormatError::Decompress)?,
                None => {
                    return Err(FormatError::Decompress(std::io::Error::other(
                        "the chunk needs a dictionary its pack does not name",
                    )))
                }
            },
        };
        if n != out.len() {
            return Err(FormatError::Invalid(format!(
                "chunk decoded to {n} bytes, expected {}",
                out.len()
            )));
        }
        Ok(())
    }
}

//! Decoding stored chunks: zstd decompression contexts, one per dictionary, with
//! dictionaries loaded from the store on first use and checked against their ids.

use crate::backend::Backend;
use crate::format::dict::DictBody;
use crate::format::pack::{decode_blob_with, Codec, PackEntry, MAX_CHUNK_LEN};
use crate::format::FormatError;
use crate::types::Id;
use crate::{layout, Error, Result};
use std::cell::RefCell;
use std::collections::HashMap;
use zstd::bulk::Decompressor;

/// A thread's own decompression contexts (see [`decode_on_thread`]).
struct ThreadDecoders {
    plain: Option<Decompressor<'static>>,
    /// The context of the dictionary this thread used last.
    dict: Option<(Id, Decompressor<'static>)>,
}

thread_local! {
    static LOCAL: RefCell<ThreadDecoders> = const {
        RefCell::new(ThreadDecoders {
            plain: None,
            dict: None,
        })
    };
}

/// Decodes one blob with the same checks as [`Decoders::decode`], on this
/// thread's own contexts, so that every core can decode (`copy`) without sharing
/// a [`Decoders`]. `dict` is the pack's dictionary (id and bytes), if it has one.
pub(crate) fn decode_on_thread(
    e: &PackEntry,
    stored: &[u8],
    dict: Option<(&Id, &[u8])>,
) -> Result<Vec<u8>, FormatError> {
    LOCAL.with(|cell| {
        let mut guard = cell.borrow_mut();
        let t = &mut *guard;
        decode_blob_with(e, stored, |codec, s, cap| match codec {
            Codec::Zstd => {
                let d = match &mut t.plain {
                    Some(d) => d,
                    slot => slot.insert(Decompressor::new()?),
                };
                d.decompress(s, cap)
            }
            _ => {
                let Some((id, bytes)) = dict else {
                    return Err(std::io::Error::other(
                        "the chunk needs a dictionary its pack does not name",
                    ));
                };
                if !matches!(&t.dict, Some((have, _)) if have == id) {
                    t.dict = Some((*id, Decompressor::with_dictionary(bytes)?));
                }
                match &mut t.dict {
                    Some((_, d)) => d.decompress(s, cap),
                    None => Err(std::io::Error::other("no dictionary context")),
                }
            }
        })
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

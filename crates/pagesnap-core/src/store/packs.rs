//! Packs as objects: which are present, and with what length, and a pack's own
//! list of its chunks (its header and trailer), read without its data.

use super::Store;
use crate::format::pack::{self, PackEntry};
use crate::types::IdMap;
use crate::{layout, Result};

impl Store {
    /// Every pack in the store, by id, with its length: a pack counts as present
    /// only with the length its index objects recorded.
    pub(crate) fn pack_sizes(&self) -> Result<IdMap<u64>> {
        Ok(self
            .backend
            .list(layout::PACKS)?
            .into_iter()
            .filter_map(|o| Some((layout::id_of(&o.key)?, o.size)))
            .collect())
    }
}

/// Why a pack's trailer could not be had: its bytes were read and found wrong
/// (`damage`), or they could not be read at all.
#[derive(Clone, Debug)]
pub(crate) struct TrailerError {
    pub detail: String,
    pub damage: bool,
}

impl TrailerError {
    fn damaged(detail: String) -> Self {
        TrailerError {
            detail,
            damage: true,
        }
    }
}

/// The header's dictionary prefix and the trailer's entries of one pack (three
/// small reads: header, footer, trailer).
pub(crate) fn read_trailer(
    store: &Store,
    key: &str,
    len: u64,
) -> std::result::Result<(Option<[u8; 16]>, Vec<PackEntry>), TrailerError> {
    let b = store.backend();
    let min = (pack::HEADER_LEN + pack::FOOTER_LEN) as u64;
    if len < min {
        return Err(TrailerError::damaged(format!(
            "truncated: {len} bytes, a pack has at least {min}"
        )));
    }
    let read = |r: std::ops::Range<u64>| {
        b.get_range(key, r).map_err(|e| TrailerError {
            detail: e.to_string(),
            damage: e.is_damage(),
        })
    };
    let header = read(0..pack::HEADER_LEN as u64)?;
    let dict =
        pack::check_header(&header).map_err(|e| TrailerError::damaged(format!("header: {e}")))?;
    let footer_bytes = read(len - pack::FOOTER_LEN as u64..len)?;
    let footer = pack::decode_footer(&footer_bytes, len)
        .map_err(|e| TrailerError::damaged(format!("footer: {e}")))?;
    let t_end = len - pack::FOOTER_LEN as u64;
    let trailer = read(t_end - footer.trailer_len as u64..t_end)?;
    let entries = pack::decode_trailer(&trailer, &footer, len)
        .map_err(|e| TrailerError::damaged(format!("trailer: {e}")))?;
    Ok((dict, entries))
}

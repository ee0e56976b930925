//! Index objects: which chunks each pack holds, so backups and restores need not
//! read pack trailers. Each backup that writes packs writes one index object
//! listing them; an index is always rebuildable from the packs' own trailers.

use super::envelope::{self, Kind};
use super::pack::{check_entry, PackEntry, FOOTER_LEN, MAX_PACK_LEN};
use super::{FormatError, Result};
use crate::types::Id;
use serde::{Deserialize, Serialize};

/// One pack and the chunks in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexPack {
    pub pack: Id,
    /// Total length of the pack object in bytes.
    pub pack_len: u64,
    pub entries: Vec<PackEntry>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexBody {
    pub packs: Vec<IndexPack>,
}

impl IndexBody {
    pub fn encode(&self) -> Vec<u8> {
        envelope::encode(Kind::Index, self)
    }

    /// Decodes and bounds every entry against its pack's length.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let body: IndexBody = envelope::decode(Kind::Index, bytes)?;
        for p in &body.packs {
            if p.pack_len > MAX_PACK_LEN {
                return Err(FormatError::TooLarge {
                    what: "pack length",
                    value: p.pack_len,
                    limit: MAX_PACK_LEN,
                });
            }
            let trailer = (p.entries.len() * super::pack::ENTRY_LEN + FOOTER_LEN) as u64;
            let blobs_end = p.pack_len.checked_sub(trailer).ok_or_else(|| {
                FormatError::Invalid(format!(
                    "pack {} is too short for its entries",
                    p.pack.short()
                ))
            })?;
            for e in &p.entries {
                check_entry(e, blobs_end)?;
            }
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pack::{Codec, PackBuilder};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trips(sizes in proptest::collection::vec(1usize..500, 0..30)) {
            let mut b = PackBuilder::new();
            for (i, s) in sizes.iter().enumerate() {
                let data = vec![i as u8; *s];
                b.push(Id::of_chunk(&data), &data, *s as u32, Codec::Raw);
            }
            let (id, bytes, entries) = b.finish();
            let body = IndexBody { packs: vec![IndexPack { pack: id, pack_len: bytes.len() as u64, entries }] };
            prop_assert_eq!(IndexBody::decode(&body.encode()).unwrap(), body);
        }
    }

    #[test]
    fn entries_outside_their_pack_are_rejected() {
        let mut b = PackBuilder::new();
        b.push(Id([1; 32]), &[1, 2, 3], 3, Codec::Raw);
        let (id, bytes, mut entries) = b.finish();
        entries[0].offset = bytes.len() as u32;
        let body = IndexBody {
            packs: vec![IndexPack {
                pack: id,
                pack_len: bytes.len() as u64,
                entries,
            }],
        };
        assert!(IndexBody::decode(&body.encode()).is_err());
    }
}

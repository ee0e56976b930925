//! zstd dictionaries (`dicts/<id>`), trained on a database's own pages.
//!
//! Compressing 4 KiB pages one by one loses the context that compressing a whole
//! file has (a page's patterns are like its neighbours'). A dictionary trained on
//! the database's pages gives each page that context back, so per-page compression
//! comes close to whole-file compression. Chunks compressed with a dictionary are
//! stored with codec 2 in packs whose header (and index entry) names it.

use super::envelope::{self, Kind};
use super::{FormatError, Result};
use serde::{Deserialize, Serialize};

/// Largest dictionary accepted (zstd's own default is 110 KiB).
pub const MAX_DICT_LEN: usize = 1 << 20;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DictBody {
    /// The zstd dictionary.
    pub dict: Vec<u8>,
    /// Raw ÷ compressed size of the training samples with this dictionary: a backup
    /// whose new chunks compress much worse asks for a new dictionary.
    pub trained_ratio: f32,
    /// Bytes of samples it was trained on.
    pub sample_bytes: u64,
}

impl DictBody {
    pub fn encode(&self) -> Vec<u8> {
        envelope::encode(Kind::Dict, self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let d: DictBody = envelope::decode(Kind::Dict, bytes)?;
        if d.dict.is_empty() || d.dict.len() > MAX_DICT_LEN {
            return Err(FormatError::Invalid(format!(
                "dictionary of {} bytes",
                d.dict.len()
            )));
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any dictionary bytes and any ratio bits (NaN included) survive; the ratio
        /// is compared bit for bit.
        #[test]
        fn dictionaries_round_trip(
            dict in proptest::collection::vec(any::<u8>(), 1..3000),
            ratio_bits in any::<u32>(),
            sample_bytes in any::<u64>(),
        ) {
            let d = DictBody { dict, trained_ratio: f32::from_bits(ratio_bits), sample_bytes };
            let back = DictBody::decode(&d.encode()).unwrap();
            prop_assert_eq!(&back.dict, &d.dict);
            prop_assert_eq!(back.trained_ratio.to_bits(), ratio_bits);
            prop_assert_eq!(back.sample_bytes, sample_bytes);
        }
    }

    #[test]
    fn round_trips_and_rejects_empty() {
        let d = DictBody {
            dict: vec![1, 2, 3],
            trained_ratio: 3.5,
            sample_bytes: 99,
        };
        assert_eq!(DictBody::decode(&d.encode()).unwrap(), d);
        let empty = DictBody { dict: vec![], ..d };
        assert!(DictBody::decode(&empty.encode()).is_err());
    }
}

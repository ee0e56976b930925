//! The store's `config` object: the parameters fixed at `init`.

use super::envelope::{self, Kind};
use super::{FormatError, Result};
use crate::types::Id;
use serde::{Deserialize, Serialize};

/// Largest chunk, in pages, a store may be initialised with.
pub const MAX_CHUNK_PAGES: u32 = 256;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreConfig {
    /// Random identity of the store, so two stores are never confused.
    pub store_id: Id,
    /// Pages per chunk: a power of two from 1 to [`MAX_CHUNK_PAGES`].
    pub chunk_pages: u32,
    /// zstd level used for chunks (1..=22).
    pub zstd_level: i32,
    /// Packs are closed once they hold this many stored bytes.
    pub pack_target_size: u32,
    /// When the store was created (Unix seconds, UTC).
    pub created_unix: i64,
    /// Compress chunks with zstd dictionaries trained on each database's pages.
    pub dictionary: bool,
}

impl StoreConfig {
    pub fn validate(&self) -> Result<()> {
        if !self.chunk_pages.is_power_of_two() || self.chunk_pages > MAX_CHUNK_PAGES {
            return Err(FormatError::Invalid(format!(
                "chunk_pages {} is not a power of two from 1 to {MAX_CHUNK_PAGES}",
                self.chunk_pages
            )));
        }
        if !(1..=22).contains(&self.zstd_level) {
            return Err(FormatError::Invalid(format!(
                "zstd level {} is outside 1..=22",
                self.zstd_level
            )));
        }
        if !(64 * 1024..=1 << 30).contains(&self.pack_target_size) {
            return Err(FormatError::Invalid(format!(
                "pack target size {} is outside 64 KiB..1 GiB",
                self.pack_target_size
            )));
        }
        Ok(())
    }

    pub fn encode(&self) -> Vec<u8> {
        envelope::encode(Kind::Config, self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let c: StoreConfig = envelope::decode(Kind::Config, bytes)?;
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn valid_configs_round_trip(
            id in proptest::array::uniform32(any::<u8>()),
            shift in 0u32..=8,
            zstd_level in 1i32..=22,
            pack_target_size in (64u32 * 1024)..=(1 << 30),
            created_unix in any::<i64>(),
            dictionary in any::<bool>(),
        ) {
            let c = StoreConfig {
                store_id: Id(id),
                chunk_pages: 1 << shift,
                zstd_level,
                pack_target_size,
                created_unix,
                dictionary,
            };
            prop_assert_eq!(StoreConfig::decode(&c.encode()).unwrap(), c);
        }
    }

    fn sample() -> StoreConfig {
        StoreConfig {
            store_id: Id([7; 32]),
            chunk_pages: 4,
            zstd_level: 3,
            pack_target_size: 16 << 20,
            created_unix: 1_700_000_000,
            dictionary: true,
        }
    }

    #[test]
    fn round_trips() {
        assert_eq!(StoreConfig::decode(&sample().encode()).unwrap(), sample());
    }

    #[test]
    fn rejects_bad_parameters() {
        let mut c = sample();
        c.chunk_pages = 3;
        assert!(StoreConfig::decode(&c.encode()).is_err());
        let mut c = sample();
        c.zstd_level = 40;
        assert!(StoreConfig::decode(&c.encode()).is_err());
    }
}

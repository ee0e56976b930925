//! The store's `config` object: the parameters fixed at `init`.

use super::envelope::{self, Kind};
use super::{FormatError, Result, DELTA_FORMAT_VERSION, ENCRYPTED_FORMAT_VERSION, FORMAT_VERSION};
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
    /// Store changed chunks as deltas against their previous version (format
    /// version 2). Not in a version-1 config body: false when read from one.
    pub deltas: bool,
    /// Every object but `config` and the key files is sealed (format version 3:
    /// the store's `config` holds this config sealed, as a version-1 or -2
    /// object, behind its clear store id).
    pub encrypted: bool,
}

/// What a `config` object holds: a plain store's parameters, or an encrypted
/// store's id and its sealed parameters (which need a key to read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigObject {
    Plain(StoreConfig),
    Sealed { store_id: Id, sealed: Vec<u8> },
}

/// The version-3 body: only what finding a key needs is in the clear.
#[derive(Serialize, Deserialize)]
struct ConfigV3 {
    store_id: Id,
    sealed: Vec<u8>,
}

impl ConfigObject {
    pub fn decode(bytes: &[u8]) -> Result<ConfigObject> {
        let (version, raw) = envelope::open_versioned(Kind::Config, bytes)?;
        if version == ENCRYPTED_FORMAT_VERSION {
            let v3: ConfigV3 = postcard::from_bytes(&raw)?;
            return Ok(ConfigObject::Sealed {
                store_id: v3.store_id,
                sealed: v3.sealed,
            });
        }
        StoreConfig::decode(bytes).map(ConfigObject::Plain)
    }

    /// The version-3 `config` of store `store_id` whose config, sealed, is `sealed`.
    pub fn encode_sealed(store_id: &Id, sealed: Vec<u8>) -> Vec<u8> {
        let body = ConfigV3 {
            store_id: *store_id,
            sealed,
        };
        envelope::encode_as(Kind::Config, ENCRYPTED_FORMAT_VERSION, &body)
    }
}

/// The version-1 body: the fields every config has. A store without deltas keeps
/// writing exactly this, so older builds still open it.
#[derive(Serialize, Deserialize)]
struct ConfigV1 {
    store_id: Id,
    chunk_pages: u32,
    zstd_level: i32,
    pack_target_size: u32,
    created_unix: i64,
    dictionary: bool,
}

/// The version-2 body: version 1's fields, then `deltas`. A new version rather
/// than a trailing field older builds would ignore: a build without deltas must
/// refuse the whole store up front instead of failing at its first delta.
#[derive(Serialize, Deserialize)]
struct ConfigV2 {
    v1: ConfigV1,
    deltas: bool,
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

    fn v1(&self) -> ConfigV1 {
        ConfigV1 {
            store_id: self.store_id,
            chunk_pages: self.chunk_pages,
            zstd_level: self.zstd_level,
            pack_target_size: self.pack_target_size,
            created_unix: self.created_unix,
            dictionary: self.dictionary,
        }
    }

    /// The store's format version: 3 when encrypted, else the version its
    /// encoding carries (1 unless the store has deltas).
    pub fn version(&self) -> u16 {
        match (self.encrypted, self.deltas) {
            (true, _) => ENCRYPTED_FORMAT_VERSION,
            (false, true) => DELTA_FORMAT_VERSION,
            (false, false) => FORMAT_VERSION,
        }
    }

    /// Version 1 (byte for byte as before deltas) unless the store has deltas
    /// (`encrypted` is not in it: an encrypted store's `config` holds this
    /// sealed, [`ConfigObject::encode_sealed`]).
    pub fn encode(&self) -> Vec<u8> {
        if self.deltas {
            let body = ConfigV2 {
                v1: self.v1(),
                deltas: true,
            };
            envelope::encode_as(Kind::Config, DELTA_FORMAT_VERSION, &body)
        } else {
            envelope::encode(Kind::Config, &self.v1())
        }
    }

    /// A plain store's config (or an encrypted one's, once opened: `encrypted`
    /// is then for the caller to set).
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let (version, raw) = envelope::open_versioned(Kind::Config, bytes)?;
        if version == ENCRYPTED_FORMAT_VERSION {
            return Err(FormatError::Invalid(
                "an encrypted store's config where a plain one was expected".into(),
            ));
        }
        let (v1, deltas) = if version == FORMAT_VERSION {
            (postcard::from_bytes::<ConfigV1>(&raw)?, false)
        } else {
            let v2: ConfigV2 = postcard::from_bytes(&raw)?;
            (v2.v1, v2.deltas)
        };
        let c = StoreConfig {
            store_id: v1.store_id,
            chunk_pages: v1.chunk_pages,
            zstd_level: v1.zstd_level,
            pack_target_size: v1.pack_target_size,
            created_unix: v1.created_unix,
            dictionary: v1.dictionary,
            deltas,
            encrypted: false,
        };
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
            deltas in any::<bool>(),
        ) {
            let c = StoreConfig {
                store_id: Id(id),
                chunk_pages: 1 << shift,
                zstd_level,
                pack_target_size,
                created_unix,
                dictionary,
                deltas,
                encrypted: false,
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
            deltas: false,
            encrypted: false,
        }
    }

    #[test]
    fn round_trips() {
        assert_eq!(StoreConfig::decode(&sample().encode()).unwrap(), sample());
    }

    #[test]
    fn a_store_without_deltas_writes_version_1_and_one_with_deltas_version_2() {
        let plain = sample().encode();
        assert_eq!(u16::from_le_bytes([plain[8], plain[9]]), 1);
        // The version-1 body is exactly the pre-deltas struct: older builds read it.
        let old: ConfigV1 = envelope::decode(Kind::Config, &plain).unwrap();
        assert_eq!(old.chunk_pages, 4);
        let mut d = sample();
        d.deltas = true;
        let bytes = d.encode();
        assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), 2);
        // A version-1 reader refuses it with "upgrade pagesnap".
        assert!(matches!(
            envelope::decode::<ConfigV1>(Kind::Config, &bytes),
            Err(FormatError::UnsupportedVersion { .. })
        ));
        assert_eq!(StoreConfig::decode(&bytes).unwrap(), d);
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

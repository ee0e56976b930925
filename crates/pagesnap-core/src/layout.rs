//! Object keys of a store. Every object but `config` is named by the blake3 of its
//! bytes, so any object can be checked against its own name.
//!
//! ```text
//! config                      store parameters (format version, chunk size, ...)
//! snapshots/<id>              one manifest per snapshot; <id> is the snapshot id
//! maps/<id>                   base page maps shared by manifests
//! index/<id>                  which chunks each pack holds
//! packs/<id[0..2]>/<id>       packs of compressed chunks (fan-out keeps folders small)
//! dicts/<id>                  zstd dictionaries chunks are compressed with
//! keys/<id>                   an encrypted store's key files (crypto/key_file.rs)
//! damaged/<key>               whole copies of objects found damaged (repair)
//! marker                      changed with every change of packs/ and index/ (store/listing.rs)
//! ```

use crate::types::Id;

pub const CONFIG: &str = "config";
pub const SNAPSHOTS: &str = "snapshots/";
pub const MAPS: &str = "maps/";
pub const INDEX: &str = "index/";
pub const PACKS: &str = "packs/";
pub const DICTS: &str = "dicts/";
pub const KEYS: &str = "keys/";
pub const DAMAGED: &str = "damaged/";
pub const MARKER: &str = "marker";

pub fn key_file(id: &Id) -> String {
    format!("{KEYS}{}", id.to_hex())
}

pub fn snapshot(id: &Id) -> String {
    format!("{SNAPSHOTS}{}", id.to_hex())
}

pub fn map(id: &Id) -> String {
    format!("{MAPS}{}", id.to_hex())
}

pub fn dict(id: &Id) -> String {
    format!("{DICTS}{}", id.to_hex())
}

pub fn index(id: &Id) -> String {
    format!("{INDEX}{}", id.to_hex())
}

pub fn pack(id: &Id) -> String {
    let hex = id.to_hex();
    format!("{PACKS}{}/{hex}", &hex[..2])
}

/// The id at the end of a key listed under `prefix`, if the name is a valid id.
pub fn id_of(key: &str) -> Option<Id> {
    Id::from_hex(key.rsplit('/').next()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_to_ids() {
        let id = Id([0xab; 32]);
        assert!(pack(&id).starts_with("packs/ab/abab"));
        assert_eq!(id_of(&pack(&id)), Some(id));
        assert_eq!(id_of(&snapshot(&id)), Some(id));
        assert_eq!(id_of("snapshots/not-hex"), None);
    }
}

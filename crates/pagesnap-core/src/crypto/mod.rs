//! crypto: what an encrypted store's keys are and how its objects are sealed
//! (docs/ENCRYPTION.md). Below store/, which opens an encrypted store through it.
//!
//! * `secrets.rs`: the master secret (id, metadata and data keys).
//! * `key_file.rs`: key files, the master secret wrapped by a passphrase.
//! * `seal.rs`: the sealed form of an object (pure).
//! * `sealed_backend.rs`: a backend sealing and opening every object.
//! * `fuzz.rs`: the fuzz entry points of the decoders above (feature `fuzzing`).

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod fuzz;
pub mod key_file;
pub mod seal;
pub mod sealed_backend;
pub mod secrets;

pub use key_file::{KdfParams, KeyFile};
pub use sealed_backend::SealedBackend;
pub use secrets::MasterKey;

/// Why an object could not be sealed or opened. Never carries key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    #[error("does not authenticate (tampered, moved from another name, or another store's)")]
    Authentication,
    #[error("truncated or of a length no sealed object has")]
    Truncated,
    #[error("{0}")]
    Malformed(&'static str),
    #[error("sealed format version {0} is not one this pagesnap reads (1)")]
    Version(u16),
    #[error("claims {0} bytes, above the limit")]
    TooLarge(u64),
    #[error("range outside the object")]
    Range,
    #[error("a write-only key cannot read page contents")]
    WriteOnly,
    #[error("wrong passphrase")]
    WrongPassphrase,
    #[error("no random numbers from the operating system: {0}")]
    Random(String),
}

impl CryptoError {
    /// True when the bytes were read and found wrong (damage); false when they
    /// could not be judged (a write-only key, a newer format, no randomness).
    pub fn is_damage(&self) -> bool {
        !matches!(
            self,
            CryptoError::WriteOnly | CryptoError::Version(_) | CryptoError::Random(_)
        )
    }
}

//! Key files `keys/<id>`: the store's master secret wrapped by one passphrase
//! (as restic does it). Pure: bytes in and out, no I/O (docs/FORMAT.md, "Key
//! files").
//!
//! ```text
//! offset size field
//!  0      4   magic "PSNP"
//!  4      4   tag "KEYF"
//!  8      2   version (1)
//! 10      1   flags: bit 0 = write-only; other bits must be 0
//! 11      1   reserved (0)
//! 12      4   Argon2id memory in KiB (u32 LE), 8·lanes ..= 4 GiB
//! 16      4   Argon2id passes (u32 LE), 1 ..= 64
//! 20      4   Argon2id lanes (u32 LE), 1 ..= 16
//! 24      8   created, Unix seconds (i64 LE)
//! 32     32   salt
//! 64     24   XChaCha20-Poly1305 nonce
//! 88      2   label length (u16 LE), at most 256: "user@host", shown by `key list`
//! 90      2   wrapped length (u16 LE), at most 256
//! 92      …   label (UTF-8), then the wrapped master secret (ciphertext, tag)
//! ```
//!
//! The wrapping key is Argon2id(passphrase, salt) with the stored parameters;
//! the associated data is the store id and every header byte before the
//! wrapped secret, so a key file cannot be moved to another store or have its
//! parameters, label or write-only flag changed. The key file's name is the
//! blake3 of its bytes, as for every other object.

use super::secrets::MasterKey;
use super::CryptoError;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

pub const MAGIC: [u8; 4] = *b"PSNP";
pub const TAG: [u8; 4] = *b"KEYF";
pub const VERSION: u16 = 1;
const FIXED: usize = 92;
const FLAG_WRITE_ONLY: u8 = 1;
pub const MAX_LABEL: usize = 256;
const MAX_WRAPPED: usize = 256;
/// Argon2id bounds a key file may carry: a hostile file must not make the
/// reader allocate more than 4 GiB or run for hours.
pub const MAX_MEMORY_KIB: u32 = 4 << 20;
pub const MAX_PASSES: u32 = 64;
pub const MAX_LANES: u32 = 16;

/// Argon2id's cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    pub memory_kib: u32,
    pub passes: u32,
    pub lanes: u32,
}

impl KdfParams {
    /// The floor of tuned parameters: 64 MiB, one lane (OWASP's guidance for
    /// Argon2id is at least 19 MiB; more memory is what a GPU pays for).
    pub const DEFAULT: KdfParams = KdfParams {
        memory_kib: 64 << 10,
        passes: 3,
        lanes: 1,
    };

    /// Parameters so cheap that only tests may use them (a key test unlocks
    /// stores hundreds of times).
    pub const INSECURE_FOR_TESTS: KdfParams = KdfParams {
        memory_kib: 64,
        passes: 1,
        lanes: 1,
    };

    fn check(&self) -> Result<(), CryptoError> {
        let ok = (1..=MAX_LANES).contains(&self.lanes)
            && (1..=MAX_PASSES).contains(&self.passes)
            && (8 * self.lanes..=MAX_MEMORY_KIB).contains(&self.memory_kib);
        match ok {
            true => Ok(()),
            false => Err(CryptoError::Malformed("Argon2id parameters out of bounds")),
        }
    }

    /// The parameters of a new key: tuned to take about half a second here.
    /// A test build (feature `testing`) with `PAGESNAP_TEST_CHEAP_KDF=1` takes
    /// [`KdfParams::INSECURE_FOR_TESTS`] instead (a release build never reads it).
    pub fn for_new_key() -> Result<KdfParams, CryptoError> {
        #[cfg(feature = "testing")]
        if std::env::var_os("PAGESNAP_TEST_CHEAP_KDF").is_some_and(|v| v == "1") {
            return Ok(KdfParams::INSECURE_FOR_TESTS);
        }
        KdfParams::tuned(Duration::from_millis(500))
    }

    /// Parameters that take about `target` on this machine: 64 MiB, as many
    /// passes as fit (at least 3, at most [`MAX_PASSES`]), timed on four
    /// passes. Timing one counted the fixed cost of taking 64 MiB of fresh
    /// memory as a pass (keys took 0.3 s instead of 0.5); the difference of
    /// two timings was lost in the noise of a loaded machine (64 passes, 3.5 s).
    pub fn tuned(target: Duration) -> Result<KdfParams, CryptoError> {
        const TIMED: u32 = 4;
        let timed = KdfParams {
            passes: TIMED,
            ..KdfParams::DEFAULT
        };
        let start = Instant::now();
        derive(b"tuning", &[0; 32], &timed)?;
        let per_pass = (start.elapsed().as_secs_f64() / f64::from(TIMED)).max(0.001);
        let passes = (target.as_secs_f64() / per_pass).round() as u32;
        Ok(KdfParams {
            passes: passes.clamp(KdfParams::DEFAULT.passes, MAX_PASSES),
            ..KdfParams::DEFAULT
        })
    }
}

/// Argon2id of `passphrase` with `salt` and `params`: the wrapping key.
fn derive(
    passphrase: &[u8],
    salt: &[u8; 32],
    params: &KdfParams,
) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    params.check()?;
    let p = argon2::Params::new(params.memory_kib, params.passes, params.lanes, Some(32))
        .map_err(|_| CryptoError::Malformed("Argon2id parameters out of bounds"))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, p);
    let mut out = Zeroizing::new([0u8; 32]);
    a.hash_password_into(passphrase, salt, out.as_mut())
        .map_err(|_| CryptoError::Malformed("Argon2id failed"))?;
    Ok(out)
}

/// A decoded key file, its secret still wrapped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyFile {
    pub write_only: bool,
    pub params: KdfParams,
    pub created_unix: i64,
    pub label: String,
    salt: [u8; 32],
    nonce: [u8; 24],
    wrapped: Vec<u8>,
}

impl KeyFile {
    /// Wraps `master` with `passphrase`: a key file of store `store_id`
    /// (write-only when `master` has no data secret).
    pub fn wrap(
        master: &MasterKey,
        passphrase: &[u8],
        params: KdfParams,
        store_id: &[u8; 32],
        label: &str,
        created_unix: i64,
    ) -> Result<KeyFile, CryptoError> {
        let mut label = label.to_string();
        while label.len() > MAX_LABEL {
            label.pop();
        }
        let mut k = KeyFile {
            write_only: master.is_write_only(),
            params,
            created_unix,
            label,
            salt: *super::seal::random::<32>()?,
            nonce: *super::seal::random::<24>()?,
            wrapped: Vec::new(),
        };
        k.wrap_secret(&master.to_bytes(), passphrase, store_id)?;
        Ok(k)
    }

    /// Wraps `secret` into this file (its header already made), replacing
    /// whatever it wrapped.
    pub(super) fn wrap_secret(
        &mut self,
        secret: &[u8],
        passphrase: &[u8],
        store_id: &[u8; 32],
    ) -> Result<(), CryptoError> {
        let kek = derive(passphrase, &self.salt, &self.params)?;
        self.wrapped = XChaCha20Poly1305::new(kek.as_ref().into())
            .encrypt(
                XNonce::from_slice(&self.nonce),
                Payload {
                    msg: secret,
                    aad: &self.aad(store_id),
                },
            )
            .map_err(|_| CryptoError::Malformed("cannot wrap the key"))?;
        Ok(())
    }

    /// A key file wrapping nothing yet, its salt and nonce given: only for
    /// the fuzz seeds, which must come out the same at every run, and for
    /// hostile files whose secret disagrees with the header
    /// ([`KeyFile::wrap_secret`] then wraps any bytes).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(super) fn unwrapped(
        write_only: bool,
        params: KdfParams,
        label: &str,
        salt: [u8; 32],
        nonce: [u8; 24],
    ) -> KeyFile {
        KeyFile {
            write_only,
            params,
            created_unix: 1_700_000_000,
            label: label.to_string(),
            salt,
            nonce,
            wrapped: Vec::new(),
        }
    }

    /// The master secret, if `passphrase` is this key's; `Err(WrongPassphrase)`
    /// otherwise (or when the file was changed: the two cannot be told apart).
    pub fn unwrap_with(
        &self,
        passphrase: &[u8],
        store_id: &[u8; 32],
    ) -> Result<MasterKey, CryptoError> {
        let kek = derive(passphrase, &self.salt, &self.params)?;
        let secret = Zeroizing::new(
            XChaCha20Poly1305::new(kek.as_ref().into())
                .decrypt(
                    XNonce::from_slice(&self.nonce),
                    Payload {
                        msg: &self.wrapped,
                        aad: &self.aad(store_id),
                    },
                )
                .map_err(|_| CryptoError::WrongPassphrase)?,
        );
        let m = MasterKey::from_bytes(&secret)?;
        if m.is_write_only() != self.write_only {
            return Err(CryptoError::Malformed(
                "the key's write-only flag disagrees with its secret",
            ));
        }
        Ok(m)
    }

    fn header(&self) -> Vec<u8> {
        let mut h = Vec::with_capacity(FIXED + self.label.len());
        h.extend_from_slice(&MAGIC);
        h.extend_from_slice(&TAG);
        h.extend_from_slice(&VERSION.to_le_bytes());
        h.push(if self.write_only { FLAG_WRITE_ONLY } else { 0 });
        h.push(0);
        h.extend_from_slice(&self.params.memory_kib.to_le_bytes());
        h.extend_from_slice(&self.params.passes.to_le_bytes());
        h.extend_from_slice(&self.params.lanes.to_le_bytes());
        h.extend_from_slice(&self.created_unix.to_le_bytes());
        h.extend_from_slice(&self.salt);
        h.extend_from_slice(&self.nonce);
        h.extend_from_slice(&(self.label.len() as u16).to_le_bytes());
        h.extend_from_slice(&(self.wrapped.len() as u16).to_le_bytes());
        h.extend_from_slice(self.label.as_bytes());
        h
    }

    fn aad(&self, store_id: &[u8; 32]) -> Vec<u8> {
        let mut a = store_id.to_vec();
        // The wrapped length is not known while wrapping: bound everything else.
        let mut h = self.header();
        h[90..92].copy_from_slice(&[0, 0]);
        a.extend_from_slice(&h);
        a
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.header();
        out.extend_from_slice(&self.wrapped);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<KeyFile, CryptoError> {
        if bytes.len() < FIXED {
            return Err(CryptoError::Truncated);
        }
        if bytes[..4] != MAGIC || bytes[4..8] != TAG {
            return Err(CryptoError::Malformed(
                "not a pagesnap key file (bad magic bytes)",
            ));
        }
        let u32_at =
            |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
        let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
        let version = u16_at(8) as u16;
        if version != VERSION {
            return Err(CryptoError::Version(version));
        }
        if bytes[10] & !FLAG_WRITE_ONLY != 0 || bytes[11] != 0 {
            return Err(CryptoError::Malformed("unknown key file flags"));
        }
        let params = KdfParams {
            memory_kib: u32_at(12),
            passes: u32_at(16),
            lanes: u32_at(20),
        };
        params.check()?;
        let mut created = [0u8; 8];
        created.copy_from_slice(&bytes[24..32]);
        let (label_len, wrapped_len) = (u16_at(88), u16_at(90));
        if label_len > MAX_LABEL || wrapped_len > MAX_WRAPPED {
            return Err(CryptoError::Malformed("key file field too long"));
        }
        if bytes.len() != FIXED + label_len + wrapped_len {
            return Err(CryptoError::Truncated);
        }
        let label = std::str::from_utf8(&bytes[FIXED..FIXED + label_len])
            .map_err(|_| CryptoError::Malformed("key file label is not UTF-8"))?
            .to_string();
        let mut salt = [0u8; 32];
        salt.copy_from_slice(&bytes[32..64]);
        let mut nonce = [0u8; 24];
        nonce.copy_from_slice(&bytes[64..88]);
        Ok(KeyFile {
            write_only: bytes[10] & FLAG_WRITE_ONLY != 0,
            params,
            created_unix: i64::from_le_bytes(created),
            label,
            salt,
            nonce,
            wrapped: bytes[FIXED + label_len..].to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STORE: [u8; 32] = [5; 32];

    fn file(master: &MasterKey) -> KeyFile {
        KeyFile::wrap(
            master,
            b"correct horse",
            KdfParams::INSECURE_FOR_TESTS,
            &STORE,
            "me@here",
            1_700_000_000,
        )
        .unwrap()
    }

    #[test]
    fn a_key_file_round_trips_and_unwraps_only_with_its_passphrase_and_store() {
        let m = MasterKey::generate().unwrap();
        let k = file(&m);
        let bytes = k.encode();
        let back = KeyFile::decode(&bytes).unwrap();
        assert_eq!(back, k);
        assert_eq!(
            back.unwrap_with(b"correct horse", &STORE)
                .unwrap()
                .to_bytes(),
            m.to_bytes()
        );
        assert!(matches!(
            back.unwrap_with(b"wrong", &STORE),
            Err(CryptoError::WrongPassphrase)
        ));
        assert!(back.unwrap_with(b"correct horse", &[6; 32]).is_err());
        let wo = file(&m.write_only());
        assert!(wo.write_only);
        let got = KeyFile::decode(&wo.encode())
            .unwrap()
            .unwrap_with(b"correct horse", &STORE)
            .unwrap();
        assert!(got.is_write_only());
    }

    /// Every flipped byte is refused or fails to unwrap; every cut is refused.
    #[test]
    fn every_changed_or_cut_byte_is_caught() {
        let bytes = file(&MasterKey::generate().unwrap()).encode();
        for i in 0..bytes.len() {
            let mut t = bytes.clone();
            t[i] ^= 0x01;
            let opened = KeyFile::decode(&t).and_then(|k| k.unwrap_with(b"correct horse", &STORE));
            assert!(opened.is_err(), "byte {i}");
        }
        for cut in 0..bytes.len() {
            assert!(KeyFile::decode(&bytes[..cut]).is_err());
        }
    }

    /// Tuning keeps 64 MiB and one lane, and gives passes within the bounds a
    /// decoder accepts (the time itself is measured in benches/encryption.sh).
    #[test]
    fn tuned_parameters_are_within_the_bounds() {
        let p = KdfParams::tuned(Duration::from_millis(100)).unwrap();
        assert_eq!((p.memory_kib, p.lanes), (64 << 10, 1));
        assert!(
            (KdfParams::DEFAULT.passes..=MAX_PASSES).contains(&p.passes),
            "{p:?}"
        );
        assert!(p.check().is_ok());
    }

    #[test]
    fn hostile_parameters_are_refused_before_any_work() {
        let mut bytes = file(&MasterKey::generate().unwrap()).encode();
        bytes[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(KeyFile::decode(&bytes).is_err());
    }
}

//! The master secret of an encrypted store: made once at `init --encrypt`,
//! kept only wrapped in key files, zeroized when dropped.
//!
//! ```text
//! serialized (inside a key file's wrapping, 129 or 97 bytes):
//!  0  1  version (1)
//!  1 32  id key        keyed blake3 of chunk contents (ids dedup only inside the store)
//! 33 32  metadata key  derives the keys of manifests, page maps, index objects …
//! 65 32  data public   X25519: packs' and dictionaries' keys are sealed to it
//! 97 32  data secret   its private half; absent in a write-only key
//! ```

use super::seal::SealKeys;
use super::CryptoError;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

const VERSION: u8 = 1;

/// See the module comment. Cloning copies secrets into memory that is zeroized
/// on drop as well.
#[derive(Clone)]
pub struct MasterKey {
    id_key: Zeroizing<[u8; 32]>,
    metadata: Zeroizing<[u8; 32]>,
    data_public: [u8; 32],
    data_secret: Option<Zeroizing<[u8; 32]>>,
}

impl std::fmt::Debug for MasterKey {
    // Never the key material, whatever prints it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey")
            .field("write_only", &self.is_write_only())
            .finish_non_exhaustive()
    }
}

impl MasterKey {
    /// A new random master secret.
    pub fn generate() -> Result<MasterKey, CryptoError> {
        let secret = super::seal::random::<32>()?;
        let public = PublicKey::from(&StaticSecret::from(*secret));
        Ok(MasterKey {
            id_key: super::seal::random::<32>()?,
            metadata: super::seal::random::<32>()?,
            data_public: *public.as_bytes(),
            data_secret: Some(secret),
        })
    }

    /// The same secret without the data secret: takes snapshots, cannot read
    /// their pages.
    pub fn write_only(&self) -> MasterKey {
        MasterKey {
            data_secret: None,
            ..self.clone()
        }
    }

    pub fn is_write_only(&self) -> bool {
        self.data_secret.is_none()
    }

    /// The key of chunk ids (keyed blake3).
    pub fn id_key(&self) -> &[u8; 32] {
        &self.id_key
    }

    /// The keys objects are sealed with.
    pub fn seal_keys(&self) -> SealKeys {
        SealKeys {
            metadata: self.metadata.clone(),
            data_public: self.data_public,
            data_secret: self.data_secret.clone(),
        }
    }

    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut b = Zeroizing::new(Vec::with_capacity(129));
        b.push(VERSION);
        b.extend_from_slice(self.id_key.as_ref());
        b.extend_from_slice(self.metadata.as_ref());
        b.extend_from_slice(&self.data_public);
        if let Some(s) = &self.data_secret {
            b.extend_from_slice(s.as_ref());
        }
        b
    }

    pub fn from_bytes(b: &[u8]) -> Result<MasterKey, CryptoError> {
        if b.first() != Some(&VERSION) || !(b.len() == 97 || b.len() == 129) {
            return Err(CryptoError::Malformed("not a master secret"));
        }
        let arr = |o: usize| {
            let mut a = Zeroizing::new([0u8; 32]);
            a.copy_from_slice(&b[o..o + 32]);
            a
        };
        let data_public = *arr(65);
        let data_secret = (b.len() == 129).then(|| arr(97));
        if let Some(s) = &data_secret {
            // A secret that is not the public key's half would seal packs no
            // key can open.
            if PublicKey::from(&StaticSecret::from(**s)).as_bytes() != &data_public {
                return Err(CryptoError::Malformed("the data key pair does not match"));
            }
        }
        Ok(MasterKey {
            id_key: arr(1),
            metadata: arr(33),
            data_public,
            data_secret,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_round_trip_and_debug_shows_none_of_them() {
        let m = MasterKey::generate().unwrap();
        let back = MasterKey::from_bytes(&m.to_bytes()).unwrap();
        assert_eq!(back.to_bytes(), m.to_bytes());
        let wo = m.write_only();
        assert_eq!(wo.to_bytes().len(), 97);
        assert!(MasterKey::from_bytes(&wo.to_bytes())
            .unwrap()
            .is_write_only());
        let shown = format!("{m:?}");
        assert!(!shown.contains(&format!("{:?}", m.id_key[0..4].to_vec())));
        assert!(shown.len() < 60, "{shown}");
        let mut bad = m.to_bytes().to_vec();
        bad[100] ^= 1;
        assert!(MasterKey::from_bytes(&bad).is_err());
    }
}

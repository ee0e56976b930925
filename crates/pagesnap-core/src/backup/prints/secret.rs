//! The secret under which this machine prints chunks: 192 random bytes (XXH3's
//! default secret length) in `<cache dir>/<store id>/prints/secret`, made on
//! first use, owner-only like the rest of the cache.
//!
//! Why a secret of this machine's and not of the store: prints never leave the
//! machine (the next backup here is their only reader), so nobody else needs
//! it, and a secret that is not in the store cannot be read by whoever can read
//! the store. Losing it only makes the next backup hash every page.

use super::Print;
use crate::types::Id;
use std::io::Write;
use std::path::{Path, PathBuf};
use xxhash_rust::xxh3::xxh3_128_with_secret;
use zeroize::Zeroizing;

const SECRET_LEN: usize = 192;

/// Prints chunks under this machine's secret for one store.
pub(crate) struct Printer {
    secret: Zeroizing<Vec<u8>>,
    id: [u8; 16],
}

impl std::fmt::Debug for Printer {
    // Never the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Printer").field("id", &self.id).finish()
    }
}

impl Printer {
    fn from_secret(secret: Zeroizing<Vec<u8>>) -> Option<Printer> {
        if secret.len() != SECRET_LEN {
            return None;
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&blake3::derive_key("pagesnap 2026-12 prints secret id", &secret)[..16]);
        Some(Printer { secret, id })
    }

    /// The printer of store `store` on this machine: its secret read, or made
    /// and recorded; `None` without a cache directory or when neither works
    /// (the backup then hashes every page, as without prints).
    pub(crate) fn for_store(store: &Id) -> Option<Printer> {
        Printer::in_dir(&dir(store)?)
    }

    fn in_dir(dir: &Path) -> Option<Printer> {
        let path = dir.join("secret");
        let damaged = match std::fs::read(&path) {
            Ok(bytes) => match Printer::from_secret(Zeroizing::new(bytes)) {
                Some(p) => return Some(p),
                None => true,
            },
            Err(_) => false,
        };
        crate::create_private_dirs(dir).ok()?;
        let mut secret = Zeroizing::new(vec![0u8; SECRET_LEN]);
        getrandom::getrandom(&mut secret).ok()?;
        // Temporary file (owner-only), fsync, then a link that never replaces
        // one another backup made meanwhile: both then use the one recorded.
        // A damaged secret is replaced (the prints it made are useless anyway).
        let mut tmp = tempfile::NamedTempFile::new_in(dir).ok()?;
        tmp.write_all(&secret).ok()?;
        tmp.as_file().sync_all().ok()?;
        if damaged {
            tmp.persist(&path).ok()?;
            return Printer::from_secret(secret);
        }
        match tmp.persist_noclobber(&path) {
            Ok(_) => Printer::from_secret(secret),
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
                Printer::from_secret(Zeroizing::new(std::fs::read(&path).ok()?))
            }
            Err(_) => None,
        }
    }

    /// Which secret this is (not the secret: a keyed hash of it).
    pub(crate) fn id(&self) -> [u8; 16] {
        self.id
    }

    /// The print of one chunk's bytes.
    pub(crate) fn print(&self, chunk: &[u8]) -> Print {
        xxh3_128_with_secret(chunk, &self.secret).to_le_bytes()
    }
}

/// The folder of a store's prints on this machine.
pub(crate) fn dir(store: &Id) -> Option<PathBuf> {
    Some(crate::cache_root()?.join(store.to_hex()).join("prints"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_made_once_and_kept() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("prints");
        let a = Printer::in_dir(&dir).unwrap();
        let b = Printer::in_dir(&dir).unwrap();
        assert_eq!(a.id(), b.id());
        assert_eq!(a.print(b"page"), b.print(b"page"));
        assert_ne!(a.print(b"page"), a.print(b"pagf"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("secret"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "owner-only");
        // Another machine (another folder) has another secret.
        let other = Printer::in_dir(&d.path().join("elsewhere")).unwrap();
        assert_ne!(a.id(), other.id());
        assert_ne!(a.print(b"page"), other.print(b"page"));
    }

    #[test]
    fn a_damaged_secret_is_replaced() {
        let d = tempfile::tempdir().unwrap();
        let a = Printer::in_dir(d.path()).unwrap();
        std::fs::write(d.path().join("secret"), b"short").unwrap();
        let b = Printer::in_dir(d.path()).unwrap();
        assert_ne!(a.id(), b.id());
        assert_eq!(
            std::fs::read(d.path().join("secret")).unwrap().len(),
            SECRET_LEN
        );
    }
}

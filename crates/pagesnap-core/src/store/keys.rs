//! An encrypted store's keys: made at `init --encrypt`, found when the store
//! is opened, and listed, added, removed and re-wrapped (`key` commands).
//!
//! Each key file `keys/<id>` wraps the one master secret with one passphrase
//! (crypto/key_file.rs). Opening tries every key file with the passphrase (an
//! Argon2id run each: stores have a few). The store's `config` is written
//! last at `init`, so a store exists only once its first key does.

use super::Store;
use crate::backend::{Backend, BackendError, PutMode};
use crate::crypto::seal::{self, KeyKind};
use crate::crypto::{CryptoError, KdfParams, KeyFile, MasterKey, SealedBackend};
use crate::format::config::{ConfigObject, StoreConfig};
use crate::types::Id;
use crate::{layout, Error, Result};
use std::sync::Arc;
use zeroize::Zeroizing;

/// A passphrase, zeroized when dropped.
pub type Passphrase = Zeroizing<Vec<u8>>;

/// Asks for an encrypted store's passphrase (called only for an encrypted
/// store, once); the error says why it could not be had.
pub type AskPassphrase<'a> = dyn Fn() -> std::result::Result<Passphrase, String> + 'a;

/// The master secret of an open encrypted store, and the key file that gave it.
#[derive(Clone)]
pub(crate) struct Unlocked {
    master: Arc<MasterKey>,
    key_file: Id,
}

impl Unlocked {
    /// Chunk ids keyed with this store's id key.
    pub(crate) fn chunk_ids(&self) -> crate::types::ChunkIds {
        crate::types::ChunkIds::keyed(self.master.id_key())
    }

    /// `backend` sealing and opening every object with this secret (below
    /// its metadata cache, if it has one: see [`Backend::wrap_below_cache`]).
    pub(crate) fn sealed(&self, backend: Arc<dyn Backend>) -> Arc<dyn Backend> {
        let seal = |b: Arc<dyn Backend>| -> Arc<dyn Backend> {
            Arc::new(SealedBackend::new(b, self.master.seal_keys()))
        };
        backend
            .wrap_below_cache(&seal)
            .unwrap_or_else(|| seal(backend))
    }
}

/// One key file, as `key list` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    pub id: Id,
    /// "user@host" of whoever made it.
    pub label: String,
    pub created_unix: i64,
    pub write_only: bool,
    pub params: KdfParams,
    /// The key this store was opened with.
    pub current: bool,
}

/// "user@host" of this process, for a new key's label.
fn label() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into());
    format!("{user}@{host}")
}

fn crypto_err(backend: &dyn Backend, key: &str) -> impl Fn(CryptoError) -> Error {
    let location = backend.location();
    let key = key.to_string();
    move |source| {
        Error::Backend(BackendError::Sealed {
            location: location.clone(),
            key: key.clone(),
            source,
        })
    }
}

/// Writes key file `file` of `master`; its id.
fn put_key(backend: &dyn Backend, file: &KeyFile) -> Result<Id> {
    let bytes = file.encode();
    // Validate before writing: what is put decodes to what was meant.
    if KeyFile::decode(&bytes).ok().as_ref() != Some(file) {
        return Err(Error::Internal(
            "a new key file does not decode to itself".into(),
        ));
    }
    let id = Id::of_object(&bytes);
    backend.put(&layout::key_file(&id), &bytes, PutMode::Overwrite)?;
    Ok(id)
}

/// Makes a new store's master secret and first key, then its `config`.
pub(super) fn create(
    backend: &Arc<dyn Backend>,
    config: &StoreConfig,
    passphrase: &[u8],
    params: KdfParams,
) -> Result<Unlocked> {
    match backend.get(layout::CONFIG) {
        Ok(_) => return Err(Error::AlreadyExists(backend.location())),
        Err(BackendError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let master = MasterKey::generate().map_err(crypto_err(backend.as_ref(), layout::CONFIG))?;
    let now = chrono::Utc::now().timestamp();
    let file = KeyFile::wrap(
        &master,
        passphrase,
        params,
        &config.store_id.0,
        &label(),
        now,
    )
    .map_err(crypto_err(backend.as_ref(), layout::KEYS))?;
    let key_file = put_key(backend.as_ref(), &file)?;
    let sealed = seal::seal(
        &master.seal_keys(),
        KeyKind::Metadata,
        layout::CONFIG,
        &config.encode(),
    )
    .map_err(crypto_err(backend.as_ref(), layout::CONFIG))?;
    let bytes = ConfigObject::encode_sealed(&config.store_id, sealed);
    match backend.put(layout::CONFIG, &bytes, PutMode::Create) {
        Ok(()) => {}
        Err(e) => {
            // Another init won the race: its store keeps only its own keys.
            let _ = backend.delete(&layout::key_file(&key_file));
            return Err(match e {
                BackendError::AlreadyExists { location, .. } => Error::AlreadyExists(location),
                e => e.into(),
            });
        }
    }
    Ok(Unlocked {
        master: Arc::new(master),
        key_file,
    })
}

/// The key files of a store: id and decoded file, or why it could not be read.
fn key_files(backend: &dyn Backend) -> Result<Vec<(Id, std::result::Result<KeyFile, Error>)>> {
    let mut out = Vec::new();
    for o in backend.list(layout::KEYS)? {
        let Some(id) = layout::id_of(&o.key) else {
            continue;
        };
        let file = match backend.get(&o.key) {
            Ok(bytes) if Id::of_object(&bytes) != id => Err(crypto_err(backend, &o.key)(
                CryptoError::Malformed("content does not match its name (object is damaged)"),
            )),
            Ok(bytes) => KeyFile::decode(&bytes).map_err(crypto_err(backend, &o.key)),
            Err(e) => Err(e.into()),
        };
        out.push((id, file));
    }
    Ok(out)
}

/// This machine's note of the key file that last opened store `store_id`
/// (`<cache dir>/<store id>/key`): tried first, with one GET, instead of
/// listing `keys/` (a request on S3, where a backup's budget is 10). Not a
/// secret: a key file's name. A note that is wrong or gone costs the listing.
fn hint_path(store_id: &Id) -> Option<std::path::PathBuf> {
    Some(crate::cache_root()?.join(store_id.to_hex()).join("key"))
}

fn read_hint(store_id: &Id) -> Option<Id> {
    let text = std::fs::read_to_string(hint_path(store_id)?).ok()?;
    Id::from_hex(text.trim())
}

fn write_hint(store_id: &Id, key_file: &Id) {
    let Some(path) = hint_path(store_id) else {
        return;
    };
    if read_hint(store_id) == Some(*key_file) {
        return;
    }
    // Best effort, written whole then renamed: a torn note is only a miss.
    if let Some(dir) = path.parent() {
        if crate::create_private_dirs(dir).is_ok() {
            if let Ok(mut tmp) = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir) {
                use std::io::Write;
                if tmp.write_all(key_file.to_hex().as_bytes()).is_ok() {
                    let _ = tmp.persist(&path);
                }
            }
        }
    }
}

/// The master secret from key file `id`, if it is there, sound, and opens
/// with `passphrase` (the hint's fast path: any failure means "list them all").
fn try_key(backend: &dyn Backend, store_id: &Id, id: &Id, passphrase: &[u8]) -> Option<MasterKey> {
    let bytes = backend.get(&layout::key_file(id)).ok()?;
    if Id::of_object(&bytes) != *id {
        return None;
    }
    KeyFile::decode(&bytes)
        .ok()?
        .unwrap_with(passphrase, &store_id.0)
        .ok()
}

/// The master secret of the first key file `passphrase` opens, listing
/// `keys/`; a key file that cannot be read is said rather than "wrong
/// passphrase" when none opens (it may be the one).
fn first_opening_key(
    backend: &dyn Backend,
    store_id: &Id,
    passphrase: &[u8],
) -> Result<(Id, MasterKey)> {
    let mut unreadable: Option<Error> = None;
    for (id, file) in key_files(backend)? {
        match file {
            Ok(f) => match f.unwrap_with(passphrase, &store_id.0) {
                Ok(m) => return Ok((id, m)),
                Err(CryptoError::WrongPassphrase) => {}
                Err(e) => unreadable = Some(crypto_err(backend, &layout::key_file(&id))(e)),
            },
            Err(e) => unreadable = unreadable.or(Some(e)),
        }
    }
    Err(unreadable.unwrap_or_else(|| Error::WrongPassphrase(backend.location())))
}

/// The config sealed in store `store_id`'s `config` object (`sealed`),
/// opened with `master`, refused when it is another store's.
fn open_sealed_config(
    backend: &dyn Backend,
    master: &MasterKey,
    store_id: &Id,
    sealed: &[u8],
) -> Result<StoreConfig> {
    let plain = seal::open(
        &master.seal_keys(),
        KeyKind::Metadata,
        layout::CONFIG,
        sealed,
    )
    .map_err(crypto_err(backend, layout::CONFIG))?;
    let object = format!("{}/{}", backend.location(), layout::CONFIG);
    let fmt = |source| Error::Format {
        object: object.clone(),
        source,
    };
    let mut config = StoreConfig::decode(&plain).map_err(fmt)?;
    if config.store_id != *store_id {
        return Err(fmt(crate::format::FormatError::Invalid(
            "the sealed config is another store's".into(),
        )));
    }
    config.encrypted = true;
    Ok(config)
}

/// The master secret and config of the encrypted store `store_id` (its
/// sealed config `sealed`), from the key file this machine used last if it
/// still opens, else the first key file `passphrase` opens.
pub(super) fn unlock(
    backend: &Arc<dyn Backend>,
    store_id: &Id,
    sealed: &[u8],
    passphrase: &[u8],
) -> Result<(Unlocked, StoreConfig)> {
    let hinted = read_hint(store_id)
        .and_then(|id| try_key(backend.as_ref(), store_id, &id, passphrase).map(|m| (id, m)));
    let (key_file, master) = match hinted {
        Some(found) => found,
        None => first_opening_key(backend.as_ref(), store_id, passphrase)?,
    };
    let config = open_sealed_config(backend.as_ref(), &master, store_id, sealed)?;
    write_hint(store_id, &key_file);
    Ok((
        Unlocked {
            master: Arc::new(master),
            key_file,
        },
        config,
    ))
}

impl Store {
    /// The store's config as its `config` object holds it now (another
    /// process may have changed it since this handle opened the store).
    pub(crate) fn config_now(&self) -> Result<StoreConfig> {
        let backend = self.backend.as_ref();
        let object = format!("{}/{}", backend.location(), layout::CONFIG);
        let fmt = |source| Error::Format {
            object: object.clone(),
            source,
        };
        match ConfigObject::decode(&backend.get(layout::CONFIG)?).map_err(fmt)? {
            ConfigObject::Plain(c) => Ok(c),
            ConfigObject::Sealed { store_id, sealed } => {
                open_sealed_config(backend, &self.unlocked()?.master, &store_id, &sealed)
            }
        }
    }

    /// The bytes of a `config` object holding `config`: sealed behind its
    /// clear store id for an encrypted store.
    pub(crate) fn config_bytes(&self, config: &StoreConfig) -> Result<Vec<u8>> {
        if !config.encrypted {
            return Ok(config.encode());
        }
        let k = self.unlocked()?;
        let sealed = seal::seal(
            &k.master.seal_keys(),
            KeyKind::Metadata,
            layout::CONFIG,
            &config.encode(),
        )
        .map_err(crypto_err(self.backend.as_ref(), layout::CONFIG))?;
        Ok(ConfigObject::encode_sealed(&config.store_id, sealed))
    }

    fn unlocked(&self) -> Result<&Unlocked> {
        self.key.as_ref().ok_or_else(|| Error::KeyRefused {
            location: self.location(),
            detail: "the store is not encrypted: it has no keys".into(),
        })
    }

    /// A write-only key neither makes nor removes keys (removing is deleting).
    fn read_key(&self) -> Result<&Unlocked> {
        let k = self.unlocked()?;
        if k.master.is_write_only() {
            return Err(Error::KeyRefused {
                location: self.location(),
                detail: "a write-only key cannot add, remove or change keys".into(),
            });
        }
        Ok(k)
    }

    /// Object `key` as `repair` reads it to salvage what it can: whole, or for
    /// an encrypted store's object that does not authenticate, opened segment
    /// by segment with zeros where a segment fails (their chunks then fail
    /// their checks as damaged bytes would).
    pub(crate) fn read_salvaging(&self, key: &str) -> Result<Vec<u8>> {
        match self.backend.get(key) {
            Err(e @ BackendError::Sealed { .. }) if e.is_damage() => {
                let raw = self.stored.get(key)?;
                self.open_salvaging(key, &raw)
                    .map_err(|_| Error::Backend(e))
            }
            r => Ok(r?),
        }
    }

    /// `copy`, the stored bytes of an object of this store read elsewhere
    /// (its whole copy under `damaged/`), opened as [`Store::read_salvaging`]
    /// opens object `key`; a plain store's bytes are the object itself.
    pub(crate) fn open_salvaging(&self, key: &str, copy: &[u8]) -> Result<Vec<u8>> {
        let (Some(k), Some(kind)) = (&self.key, crate::crypto::sealed_backend::kind_of(key)) else {
            return Ok(copy.to_vec());
        };
        seal::open_lossy(&k.master.seal_keys(), kind, key, copy)
            .map(|(plain, _)| plain)
            .map_err(crypto_err(self.backend.as_ref(), key))
    }

    /// Fails unless keys can be added, removed and changed with the key in
    /// use (an encrypted store opened with a read key): for a caller to check
    /// before it asks for a new passphrase.
    pub fn can_manage_keys(&self) -> Result<()> {
        self.read_key().map(drop)
    }

    /// Fails when the store was opened with a write-only key, which must not
    /// delete or rewrite anything: forget, prune, retag, repair, upgrade,
    /// policy changes (docs/ENCRYPTION.md). Bucket credentials that allow
    /// deleting still do: that is for the bucket's policy to refuse.
    pub(crate) fn check_may_delete(&self, what: &str) -> Result<()> {
        match self.is_write_only() {
            true => Err(Error::KeyRefused {
                location: self.location(),
                detail: format!("a write-only key cannot {what}: open the store with a read key"),
            }),
            false => Ok(()),
        }
    }

    /// Whether the store was opened with a write-only key.
    pub fn is_write_only(&self) -> bool {
        self.key.as_ref().is_some_and(|k| k.master.is_write_only())
    }

    /// The id of the key file the store was opened with (an encrypted store).
    pub fn current_key(&self) -> Option<Id> {
        self.key.as_ref().map(|k| k.key_file)
    }

    /// The store's key files (an unreadable one fails the listing).
    pub fn keys(&self) -> Result<Vec<KeyInfo>> {
        let current = self.unlocked()?.key_file;
        key_files(self.backend.as_ref())?
            .into_iter()
            .map(|(id, f)| {
                let f = f?;
                Ok(KeyInfo {
                    id,
                    label: f.label,
                    created_unix: f.created_unix,
                    write_only: f.write_only,
                    params: f.params,
                    current: id == current,
                })
            })
            .collect()
    }

    /// Adds a key that opens the store with `passphrase`: a read key, or a
    /// write-only one (takes snapshots, cannot read their pages or delete).
    pub fn add_key(&self, passphrase: &[u8], params: KdfParams, write_only: bool) -> Result<Id> {
        let k = self.read_key()?;
        let master = match write_only {
            true => k.master.write_only(),
            false => (*k.master).clone(),
        };
        let now = chrono::Utc::now().timestamp();
        let file = KeyFile::wrap(
            &master,
            passphrase,
            params,
            &self.config.store_id.0,
            &label(),
            now,
        )
        .map_err(crypto_err(self.backend.as_ref(), layout::KEYS))?;
        put_key(self.backend.as_ref(), &file)
    }

    /// Removes key `id`: never the one in use (`key passwd` replaces it), and
    /// never the last read key.
    pub fn remove_key(&self, id: &Id) -> Result<()> {
        let k = self.read_key()?;
        let refuse = |detail: String| Error::KeyRefused {
            location: self.location(),
            detail,
        };
        if *id == k.key_file {
            return Err(refuse(format!(
                "key {} is the one in use: open the store with another key to remove it",
                id.short()
            )));
        }
        let keys = self.keys()?;
        let Some(target) = keys.iter().find(|i| i.id == *id) else {
            return Err(refuse(format!("no key {}", id.short())));
        };
        if !target.write_only && keys.iter().filter(|i| !i.write_only).count() < 2 {
            return Err(refuse("it is the last key that can read the store".into()));
        }
        self.backend.delete(&layout::key_file(id))?;
        Ok(())
    }

    /// Replaces the key in use by one with `passphrase`: the new key file is
    /// written first, then the old one removed. Returns the new key's id.
    pub fn change_passphrase(&mut self, passphrase: &[u8], params: KdfParams) -> Result<Id> {
        let old = self.read_key()?.key_file;
        let new = self.add_key(passphrase, params, false)?;
        self.backend.delete(&layout::key_file(&old))?;
        if let Some(k) = &mut self.key {
            k.key_file = new;
        }
        Ok(new)
    }
}

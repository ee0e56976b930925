//! Fuzz entry points for the decoders of an encrypted store (key files, sealed
//! objects, a version-3 config's sealed part), called through
//! [`crate::format::fuzz::Target`] like the store's other decoders, and their
//! seeds and hostile inputs (made repeatably: fixed keys, salts and nonces).
//!
//! Unlike a checksum, an authentication tag cannot be recomputed for a mutated
//! input without sealing it again, so these targets take inputs as given. What
//! decides the shape of the work behind the tags (the plaintext length, the
//! segment count, the key block, the Argon2id parameters and field lengths) is
//! read before any tag is checked, and mutated seeds sealed under the fixed
//! keys reach every check; the ciphers themselves are RustCrypto's.

use super::key_file::{KdfParams, KeyFile};
use super::seal::{self, KeyKind, ObjectKey, SealKeys, SEGMENT};
use super::secrets::MasterKey;
use super::CryptoError;
use crate::format::config::{ConfigObject, StoreConfig};
use crate::format::{FormatError, Result};
use crate::layout;
use crate::types::Id;
use std::ops::Range;
use x25519_dalek::{PublicKey, StaticSecret};

/// The passphrase and store id the `key-file` target unwraps with.
const PASSPHRASE: &[u8] = b"fuzz passphrase";
const STORE_ID: [u8; 32] = [0x5e; 32];
/// The names the `sealed` target opens its input under, one per kind.
const METADATA_NAME: &str = "snapshots/5eed";
const DATA_NAME: &str = "packs/5e/5eed";
/// Key files are unwrapped only with parameters this cheap (at most a few ms
/// of Argon2id), so that fuzzing stays fast; the seeds' are cheaper still.
const MAX_FUZZ_MEMORY_KIB: u32 = 1024;
const MAX_FUZZ_PASSES: u32 = 2;

const KINDS: [KeyKind; 2] = [KeyKind::Metadata, KeyKind::Data];

fn invalid(e: CryptoError) -> FormatError {
    FormatError::Invalid(e.to_string())
}

fn name_of(kind: KeyKind) -> &'static str {
    match kind {
        KeyKind::Metadata => METADATA_NAME,
        KeyKind::Data => DATA_NAME,
    }
}

/// The header's key kind byte of `kind`.
fn kind_byte(kind: KeyKind) -> u8 {
    match kind {
        KeyKind::Metadata => 1,
        KeyKind::Data => 2,
    }
}

/// The fixed master secret every target and seed uses.
fn master() -> MasterKey {
    let secret = [0x5d; 32];
    let public = PublicKey::from(&StaticSecret::from(secret));
    let mut bytes = vec![1u8];
    bytes.extend_from_slice(&[0x1d; 32]);
    bytes.extend_from_slice(&[0x4d; 32]);
    bytes.extend_from_slice(public.as_bytes());
    bytes.extend_from_slice(&secret);
    match MasterKey::from_bytes(&bytes) {
        Ok(m) => m,
        Err(e) => panic!("the fuzz master secret does not decode: {e}"),
    }
}

fn keys() -> SealKeys {
    master().seal_keys()
}

/// [`KeyFile::decode`], then the round trip (byte for byte: a decoded file
/// encodes to its input); a file of cheap parameters is unwrapped with the
/// fuzz passphrase and store id. Returns the unwrap's verdict (the decode's
/// for files too costly to unwrap).
pub(crate) fn key_file(data: &[u8]) -> Result<()> {
    let k = KeyFile::decode(data).map_err(invalid)?;
    assert_eq!(k.encode(), data, "key file round trip");
    if k.params.memory_kib > MAX_FUZZ_MEMORY_KIB || k.params.passes > MAX_FUZZ_PASSES {
        return Ok(());
    }
    let m = k.unwrap_with(PASSPHRASE, &STORE_ID).map_err(invalid)?;
    assert_eq!(m.is_write_only(), k.write_only, "write-only flag");
    let again = MasterKey::from_bytes(&m.to_bytes()).map(|a| a.to_bytes());
    assert_eq!(again.ok(), Some(m.to_bytes()), "master secret round trip");
    let other = k.unwrap_with(b"another passphrase", &STORE_ID);
    assert!(other.is_err(), "unwrapped with another passphrase");
    Ok(())
}

/// A version-3 config's sealed part opened with the fuzz keys and decoded as a
/// plain config, as opening the store does with its key.
pub(crate) fn sealed_config(sealed: &[u8]) -> Result<StoreConfig> {
    let plain = seal::open(&keys(), KeyKind::Metadata, layout::CONFIG, sealed).map_err(invalid)?;
    StoreConfig::decode(&plain)
}

/// For each key kind: [`seal::open`] of `data` under the fuzz keys (an object
/// that opens is sealed again and must open to the same bytes, never under
/// another name, and never with a write-only key if it is data), then
/// [`seal::object_key`] and [`ObjectKey::open_range`] for ranges at the edges,
/// inside and outside the object (which must agree with the whole object when
/// it opened); and [`seal::plain_len`] of arbitrary lengths. `Ok` when either
/// kind opens it; otherwise the error of the kind its header names.
pub(crate) fn sealed(data: &[u8]) -> Result<()> {
    lengths(data);
    let keys = keys();
    let mut verdict = None;
    for kind in KINDS {
        let name = name_of(kind);
        let whole = seal::open(&keys, kind, name, data);
        if let Ok(plain) = &whole {
            opened(&keys, kind, data, plain);
        }
        if let Ok(k) = seal::object_key(&keys, kind, name, data) {
            ranges(&k, kind, data, whole.as_deref().ok());
        }
        verdict = match (verdict, whole) {
            (Some(Ok(())), _) | (_, Ok(_)) => Some(Ok(())),
            (None, Err(e)) => Some(Err(e)),
            (Some(Err(_)), Err(e)) if data.get(10) == Some(&kind_byte(kind)) => Some(Err(e)),
            (v, Err(_)) => v,
        };
    }
    verdict
        .unwrap_or(Err(CryptoError::Truncated))
        .map_err(invalid)
}

/// [`seal::plain_len`] and [`seal::sealed_len`] invert each other, for the
/// input's length and for the length its first 8 bytes say.
fn lengths(data: &[u8]) {
    let mut first = [0u8; 8];
    if let Some(b) = data.get(..8) {
        first.copy_from_slice(b);
    }
    let first = u64::from_le_bytes(first);
    for kind in KINDS {
        for sealed in [data.len() as u64, first] {
            if let Some(p) = seal::plain_len(kind, sealed) {
                assert_eq!(seal::sealed_len(kind, p), sealed, "plain_len({sealed})");
            }
        }
        let p = first % (seal::MAX_PLAIN + 1);
        let sealed = seal::sealed_len(kind, p);
        assert_eq!(seal::plain_len(kind, sealed), Some(p), "sealed_len({p})");
    }
}

fn opened(keys: &SealKeys, kind: KeyKind, data: &[u8], plain: &[u8]) {
    let len = seal::plain_len(kind, data.len() as u64);
    assert_eq!(len, Some(plain.len() as u64), "opened length");
    let name = name_of(kind);
    let again = seal::seal(keys, kind, name, plain)
        .unwrap_or_else(|e| panic!("an opened object does not seal again: {e}"));
    let back = seal::open(keys, kind, name, &again);
    assert_eq!(back.ok().as_deref(), Some(plain), "seal round trip");
    let moved = seal::open(keys, kind, "snapshots/elsewhere", data);
    assert!(moved.is_err(), "opened under another name");
    if kind == KeyKind::Data {
        let write_only = master().write_only().seal_keys();
        let got = seal::open(&write_only, kind, name, data);
        assert!(
            matches!(got, Err(CryptoError::WriteOnly)),
            "a write-only key opened data: {got:?}"
        );
    }
}

/// The two u64 of the input's last 16 bytes (a fuzzer mutates them with the
/// rest), or its length and 0.
fn tail_numbers(data: &[u8]) -> (u64, u64) {
    let Some(start) = data.len().checked_sub(16) else {
        return (data.len() as u64, 0);
    };
    let mut a = [0u8; 8];
    let mut b = [0u8; 8];
    a.copy_from_slice(&data[start..start + 8]);
    b.copy_from_slice(&data[start + 8..]);
    (u64::from_le_bytes(a), u64::from_le_bytes(b))
}

/// Ranges read from the object of key `k` (its header authenticated, its
/// length said by the header: up to [`seal::MAX_PLAIN`] for a hostile one).
fn ranges(k: &ObjectKey, kind: KeyKind, data: &[u8], plain: Option<&[u8]>) {
    let p = k.plain_len;
    assert!(p <= seal::MAX_PLAIN, "plaintext length above the limit");
    let (a, b) = tail_numbers(data);
    let (x, y) = (a % (p + 1), b % (p + 1));
    let candidates: [Range<u64>; 9] = [
        0..0,
        0..p,
        p..p,
        p / 2..p,
        SEGMENT.min(p).saturating_sub(1)..(SEGMENT + 1).min(p),
        x.min(y)..x.max(y),
        x.max(y)..x.min(y),
        x..p + 1,
        a..b,
    ];
    let segments = p.div_ceil(SEGMENT).max(1);
    for r in candidates {
        let inside = r.start <= r.end && r.end <= p;
        let Ok(segs) = k.segments_of(&r) else {
            assert!(!inside, "range {r:?} of {p} bytes refused");
            assert!(k.open_range(&r, data).is_err(), "range {r:?} read");
            continue;
        };
        assert!(inside, "range {r:?} of {p} bytes accepted");
        assert!(
            segs.start < segs.end && segs.end <= segments,
            "segments {segs:?}"
        );
        let s = k.sealed_range(segs);
        assert!(
            s.start >= k.header_len as u64,
            "sealed range {s:?} in the header"
        );
        assert!(
            s.end <= seal::sealed_len(kind, p),
            "sealed range {s:?} past the end"
        );
        // Bytes of another length: refused, never read past.
        let _ = k.open_range(&r, data.get(k.header_len..).unwrap_or_default());
        let Some(sealed) = data.get(s.start as usize..s.end as usize) else {
            continue;
        };
        match k.open_range(&r, sealed) {
            Ok(got) => {
                assert_eq!(got.len() as u64, r.end - r.start, "range {r:?} length");
                if let Some(plain) = plain {
                    assert_eq!(got, plain[r.start as usize..r.end as usize], "range {r:?}");
                }
            }
            Err(e) => assert!(plain.is_none(), "range {r:?} of an object that opens: {e}"),
        }
    }
}

/// A seed or hostile input: (target, file name, bytes).
pub(crate) type Named = (&'static str, &'static str, Vec<u8>);

/// `plain` sealed as `name` under `kind` with the fuzz keys; `n` picks the
/// salt, key and ephemeral secret (different objects, different ones).
fn sealed_as(kind: KeyKind, name: &str, plain: &[u8], n: u8) -> Result<Vec<u8>> {
    let random = ([0x70 ^ n; 32], [0x90 ^ n; 32]);
    seal::seal_repeatably(&keys(), kind, name, plain, (&random.0, &random.1)).map_err(invalid)
}

/// A key file of the fuzz passphrase and store wrapping `secret`, its header
/// saying `write_only`; `n` picks the salt and nonce.
fn key_file_of(secret: &[u8], write_only: bool, store: &[u8; 32], n: u8) -> Result<Vec<u8>> {
    let params = KdfParams::INSECURE_FOR_TESTS;
    let mut k = KeyFile::unwrapped(write_only, params, "fuzz@seed", [n; 32], [n ^ 0xff; 24]);
    k.wrap_secret(secret, PASSPHRASE, store).map_err(invalid)?;
    Ok(k.encode())
}

/// A store config sealed as an encrypted store's `config` holds it.
fn config_v3(inner: &[u8], kind: KeyKind) -> Result<Vec<u8>> {
    let sealed = sealed_as(kind, layout::CONFIG, inner, 0x33)?;
    Ok(ConfigObject::encode_sealed(&Id(STORE_ID), sealed))
}

fn store_config(deltas: bool) -> StoreConfig {
    StoreConfig {
        store_id: Id(STORE_ID),
        chunk_pages: 1,
        zstd_level: 3,
        pack_target_size: 16 << 20,
        created_unix: 1_700_000_000,
        dictionary: true,
        deltas,
        encrypted: false,
    }
}

/// Bytes 0..n repeating, as a plaintext.
fn plaintext(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// Valid inputs: key files (read and write-only), sealed objects of each kind
/// (empty, one segment, exactly one, several) and version-3 configs.
pub(crate) fn seeds() -> Result<Vec<Named>> {
    let m = master();
    let mut out: Vec<Named> = vec![
        (
            "key-file",
            "synthetic-read",
            key_file_of(&m.to_bytes(), false, &STORE_ID, 1)?,
        ),
        (
            "key-file",
            "synthetic-write-only",
            key_file_of(&m.write_only().to_bytes(), true, &STORE_ID, 2)?,
        ),
    ];
    let sizes: [(&'static str, &'static str, usize); 4] = [
        ("synthetic-metadata-empty", "synthetic-data-empty", 0),
        ("synthetic-metadata-small", "synthetic-data-small", 200),
        ("synthetic-metadata-4096", "synthetic-data-4096", 4096),
        ("synthetic-metadata-9000", "synthetic-data-9000", 9000),
    ];
    for (i, (meta, data, n)) in sizes.into_iter().enumerate() {
        let plain = plaintext(n);
        let m = sealed_as(KeyKind::Metadata, METADATA_NAME, &plain, i as u8)?;
        out.push(("sealed", meta, m));
        let d = sealed_as(KeyKind::Data, DATA_NAME, &plain, 0x10 + i as u8)?;
        out.push(("sealed", data, d));
    }
    for (name, deltas) in [("synthetic-v3", false), ("synthetic-v3-deltas", true)] {
        out.push((
            "config",
            name,
            config_v3(&store_config(deltas).encode(), KeyKind::Metadata)?,
        ));
    }
    let v3 = config_v3(&store_config(false).encode(), KeyKind::Metadata)?;
    out.push(("envelope", "synthetic-v3-config", v3));
    Ok(out)
}

/// `bytes` with `field` written at `at`.
fn patched(bytes: &[u8], at: usize, field: &[u8]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at..at + field.len()].copy_from_slice(field);
    b
}

/// Inputs each refused for one reason: key files past a decode limit or whose
/// secret disagrees with them, sealed objects cut, lengthened, moved,
/// re-kinded or with a key block not theirs, and version-3 configs whose
/// sealed part is not a plain config.
pub(crate) fn hostile() -> Result<Vec<Named>> {
    let mut out = hostile_key_files()?;
    out.extend(hostile_sealed()?);
    // The encoder writes what it is given; the decoder refuses it.
    let mut bad_pages = store_config(false);
    bad_pages.chunk_pages = 3;
    let nested = config_v3(&store_config(false).encode(), KeyKind::Metadata)?;
    out.extend([
        (
            "config",
            "hostile-v3-sealed-chunk-pages-3",
            config_v3(&bad_pages.encode(), KeyKind::Metadata)?,
        ),
        (
            "config",
            "hostile-v3-sealed-v3",
            config_v3(&nested, KeyKind::Metadata)?,
        ),
        (
            "config",
            "hostile-v3-sealed-under-data-key",
            config_v3(&store_config(false).encode(), KeyKind::Data)?,
        ),
    ]);
    Ok(out)
}

fn hostile_key_files() -> Result<Vec<Named>> {
    let m = master();
    let good = key_file_of(&m.to_bytes(), false, &STORE_ID, 1)?;
    let mut long_label = good[..88].to_vec();
    long_label.extend_from_slice(&300u16.to_le_bytes());
    long_label.extend_from_slice(&good[90..92]);
    long_label.extend_from_slice(&[b'a'; 300]);
    long_label.extend_from_slice(&good[92 + "fuzz@seed".len()..]);
    let not_utf8 = patched(&good, 92, &[0xff]);
    // A full secret whose public key is not its secret's.
    let mut mismatched = m.to_bytes().to_vec();
    mismatched[70] ^= 1;
    Ok(vec![
        (
            "key-file",
            "hostile-argon2-memory-4-gib-plus",
            patched(&good, 12, &u32::MAX.to_le_bytes()),
        ),
        (
            "key-file",
            "hostile-argon2-passes-0",
            patched(&good, 16, &0u32.to_le_bytes()),
        ),
        (
            "key-file",
            "hostile-argon2-lanes-17",
            patched(&good, 20, &17u32.to_le_bytes()),
        ),
        ("key-file", "hostile-unknown-flag", patched(&good, 10, &[2])),
        ("key-file", "hostile-label-300-bytes", long_label),
        ("key-file", "hostile-label-not-utf8", not_utf8),
        (
            "key-file",
            "hostile-wrapped-cut",
            good[..good.len() - 1].to_vec(),
        ),
        (
            "key-file",
            "hostile-another-store",
            key_file_of(&m.to_bytes(), false, &[0x11; 32], 3)?,
        ),
        (
            "key-file",
            "hostile-write-only-flag-on-read-key",
            key_file_of(&m.to_bytes(), true, &STORE_ID, 4)?,
        ),
        (
            "key-file",
            "hostile-read-flag-on-write-only-key",
            key_file_of(&m.write_only().to_bytes(), false, &STORE_ID, 5)?,
        ),
        (
            "key-file",
            "hostile-secret-96-bytes",
            key_file_of(&m.to_bytes()[..96], false, &STORE_ID, 6)?,
        ),
        (
            "key-file",
            "hostile-data-key-pair-mismatch",
            key_file_of(&mismatched, false, &STORE_ID, 7)?,
        ),
    ])
}

fn hostile_sealed() -> Result<Vec<Named>> {
    let plain = plaintext(9000);
    let meta = sealed_as(KeyKind::Metadata, METADATA_NAME, &plain, 0x20)?;
    let data = sealed_as(KeyKind::Data, DATA_NAME, &plain, 0x21)?;
    let other = sealed_as(KeyKind::Data, DATA_NAME, &plain, 0x22)?;
    let header = KeyKind::Data.header_len();
    let mut swapped = data.clone();
    swapped[20..header].copy_from_slice(&other[20..header]);
    let mut longer = meta.clone();
    longer.push(0);
    let mut flipped = data.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    // Without its last segment (808 bytes and a tag): what a cut at a segment
    // boundary leaves.
    let cut = meta[..meta.len() - (9000 - 2 * 4096) - 16].to_vec();
    Ok(vec![
        (
            "sealed",
            "hostile-plain-length-above-limit",
            patched(&meta, 12, &(seal::MAX_PLAIN + 1).to_le_bytes()),
        ),
        ("sealed", "hostile-version-2", patched(&meta, 8, &[2, 0])),
        (
            "sealed",
            "hostile-segment-64-kib",
            patched(&meta, 11, &[16]),
        ),
        (
            "sealed",
            "hostile-kind-data-as-metadata",
            patched(&data, 10, &[1]),
        ),
        ("sealed", "hostile-cut-at-segment", cut),
        ("sealed", "hostile-extra-byte", longer),
        (
            "sealed",
            "hostile-moved",
            sealed_as(KeyKind::Metadata, "snapshots/elsewhere", &plain, 0x23)?,
        ),
        (
            "sealed",
            "hostile-ephemeral-low-order",
            patched(&data, 20, &[0; 32]),
        ),
        ("sealed", "hostile-key-block-swapped", swapped),
        ("sealed", "hostile-last-tag-flipped", flipped),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seeds open (every range agreeing) and each hostile input is refused,
    /// also from the crate's own tests (the library test replays the files).
    #[test]
    fn seeds_decode_and_hostile_inputs_are_refused() {
        let run = |target: &str, bytes: &[u8]| match target {
            "key-file" => key_file(bytes),
            "sealed" => sealed(bytes),
            _ => crate::format::fuzz::config(bytes),
        };
        for (target, name, bytes) in seeds().unwrap() {
            if target != "envelope" {
                assert!(run(target, &bytes).is_ok(), "{target}/{name}");
            }
        }
        let hostile = hostile().unwrap();
        assert_eq!(hostile.len(), REASONS.len());
        for ((target, name, bytes), (want_name, reason)) in hostile.into_iter().zip(REASONS) {
            assert_eq!(name, want_name);
            let got = run(target, &bytes);
            let e = got.expect_err(&format!("{target}/{name} accepted"));
            assert!(e.to_string().contains(reason), "{target}/{name}: {e}");
        }
    }

    /// What each hostile input, in order, is refused for.
    const REASONS: [(&str, &str); 25] = [
        (
            "hostile-argon2-memory-4-gib-plus",
            "Argon2id parameters out of bounds",
        ),
        (
            "hostile-argon2-passes-0",
            "Argon2id parameters out of bounds",
        ),
        (
            "hostile-argon2-lanes-17",
            "Argon2id parameters out of bounds",
        ),
        ("hostile-unknown-flag", "unknown key file flags"),
        ("hostile-label-300-bytes", "key file field too long"),
        ("hostile-label-not-utf8", "label is not UTF-8"),
        ("hostile-wrapped-cut", "truncated"),
        ("hostile-another-store", "wrong passphrase"),
        (
            "hostile-write-only-flag-on-read-key",
            "write-only flag disagrees",
        ),
        (
            "hostile-read-flag-on-write-only-key",
            "write-only flag disagrees",
        ),
        ("hostile-secret-96-bytes", "not a master secret"),
        (
            "hostile-data-key-pair-mismatch",
            "data key pair does not match",
        ),
        ("hostile-plain-length-above-limit", "above the limit"),
        ("hostile-version-2", "sealed format version 2"),
        ("hostile-segment-64-kib", "unknown segment size"),
        // Read as metadata (its kind byte's): no metadata object is that long.
        ("hostile-kind-data-as-metadata", "truncated"),
        ("hostile-cut-at-segment", "truncated"),
        ("hostile-extra-byte", "truncated"),
        ("hostile-moved", "does not authenticate"),
        ("hostile-ephemeral-low-order", "does not authenticate"),
        ("hostile-key-block-swapped", "does not authenticate"),
        ("hostile-last-tag-flipped", "does not authenticate"),
        ("hostile-v3-sealed-chunk-pages-3", "chunk_pages 3"),
        ("hostile-v3-sealed-v3", "an encrypted store's config"),
        ("hostile-v3-sealed-under-data-key", "wrong kind of key"),
    ];

    /// The seeds come out the same at every run (the example rewrites them).
    #[test]
    fn seeds_are_repeatable() {
        assert_eq!(seeds().unwrap(), seeds().unwrap());
        assert_eq!(hostile().unwrap(), hostile().unwrap());
    }
}

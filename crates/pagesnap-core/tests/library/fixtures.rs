//! Stores written by every released format version must always restore.

use pagesnap_core::{DataSubset, SnapshotSelector, Store, VerifyOptions};
use std::path::PathBuf;

fn fixture(version: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(version)
}

#[test]
fn format_v1_store_restores_byte_exactly() -> anyhow::Result<()> {
    // Manifests from before the image check: restores check the blake3 hash.
    restores_byte_exactly("v1", false)
}

#[test]
fn format_v1_store_with_image_checks_restores_byte_exactly() -> anyhow::Result<()> {
    restores_byte_exactly("v1-image-check", true)
}

/// The first store with deltas: every snapshot restores through its chains.
#[test]
fn format_v2_store_with_deltas_restores_byte_exactly() -> anyhow::Result<()> {
    use pagesnap_core::format::index::IndexBody;
    use pagesnap_core::format::pack::Codec;
    restores_byte_exactly_n("v2", true, 6)?;
    let store = fixture("v2").join("store");
    assert!(Store::open(&store)?.config().deltas);
    // It holds deltas, in version-2 index objects with their rows, chained.
    let (mut deltas, mut deepest) = (0, 0);
    for file in std::fs::read_dir(store.join("index"))? {
        let bytes = std::fs::read(file?.path())?;
        let body = IndexBody::decode(&bytes)?;
        let n = body
            .entries
            .iter()
            .filter(|e| e.entry.codec == Codec::ZstdDelta)
            .count();
        assert_eq!(n, body.deltas.len());
        assert_eq!(
            u16::from_le_bytes([bytes[8], bytes[9]]),
            body.needed_version()
        );
        deltas += n;
        deepest = body.deltas.iter().map(|d| d.depth).fold(deepest, u8::max);
    }
    assert!(
        deltas > 0 && deepest >= 3,
        "{deltas} deltas, deepest {deepest}"
    );
    Ok(())
}

fn restores_byte_exactly(version: &str, image_checks: bool) -> anyhow::Result<()> {
    restores_byte_exactly_n(version, image_checks, 3)
}

fn restores_byte_exactly_n(version: &str, image_checks: bool, n: usize) -> anyhow::Result<()> {
    let store = Store::open(fixture(version).join("store"))?;
    restores_byte_exactly_from(&store, version, image_checks, n)
}

/// The first encrypted store: opened with its passphrase, every snapshot
/// restores (the same images as the v2 fixture's), every object authenticates,
/// no stored byte holds the database's text, and its write-only key opens it
/// but reads no page.
#[test]
fn format_v3_encrypted_store_restores_byte_exactly() -> anyhow::Result<()> {
    use pagesnap_core::Passphrase;
    let dir = fixture("v3-encrypted").join("store");
    let open = |pass: &'static str| {
        let backend = std::sync::Arc::new(pagesnap_core::backend::LocalBackend::new(&dir));
        Store::open_backend_unlocking(backend, &move || Ok(Passphrase::new(pass.into())))
    };
    assert!(matches!(
        Store::open(&dir),
        Err(pagesnap_core::Error::Encrypted(_))
    ));
    let store = open("pagesnap fixture v3")?;
    assert!(store.config().encrypted && store.config().deltas);
    assert_eq!(store.config().version(), 3);
    restores_byte_exactly_from(&store, "v3-encrypted", true, 6)?;
    // The v2 fixture's images, byte for byte.
    let hashes = |v: &str| -> anyhow::Result<Vec<String>> {
        Ok(std::fs::read_to_string(fixture(v).join("expected.txt"))?
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_whitespace().nth(2).map(String::from))
            .collect())
    };
    assert_eq!(hashes("v3-encrypted")?, hashes("v2")?);
    let mut files = vec![dir.clone()];
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(
                std::fs::read_dir(&p)?
                    .map(|e| e.map(|e| e.path()))
                    .collect::<Result<Vec<_>, _>>()?,
            );
        } else {
            let bytes = std::fs::read(&p)?;
            for needle in [&b"snapshot"[..], b"sqlite", b"SQLite format 3", b"fixture"] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle),
                    "{}",
                    p.display()
                );
            }
        }
    }
    let writer = open("pagesnap fixture v3 (write-only)")?;
    assert!(writer.is_write_only());
    let snap = writer.snapshots()?.pop().expect("snapshots");
    let tmp = tempfile::tempdir()?;
    assert!(writer
        .restore_to_path(&snap, &tmp.path().join("x.db"), false)
        .is_err());
    Ok(())
}

fn restores_byte_exactly_from(
    store: &Store,
    version: &str,
    image_checks: bool,
    n: usize,
) -> anyhow::Result<()> {
    let dir = fixture(version);
    let expected = std::fs::read_to_string(dir.join("expected.txt"))?;
    let rows: Vec<Vec<&str>> = expected
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), n);
    assert_eq!(store.snapshots()?.len(), rows.len());
    // The fixture covers dictionary-compressed chunks.
    assert_eq!(std::fs::read_dir(dir.join("store/dicts"))?.count(), 1);
    let tmp = tempfile::tempdir()?;
    for row in rows {
        let [id, time, hash] = row.as_slice() else {
            anyhow::bail!("bad line in expected.txt: {row:?}");
        };
        let snap = store.select(&SnapshotSelector::Id(id.to_string()))?;
        assert_eq!(snap.manifest.image_check.is_some(), image_checks, "{id}");
        assert_eq!(
            snap.time()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            *time
        );
        let out = tmp.path().join(format!("{id}.db"));
        let report = store.restore_to_path(&snap, &out, false)?;
        let bytes = std::fs::read(&out)?;
        assert_eq!(blake3::hash(&bytes).to_hex().as_str(), *hash);
        if let Some(check) = snap.manifest.image_check {
            let chunk_len = snap.manifest.chunk_len();
            assert_eq!(
                pagesnap_core::image_check::of_image(&bytes, chunk_len),
                check
            );
        }
        assert_eq!(report.image_len, bytes.len() as u64);
        let conn = rusqlite::Connection::open(&out)?;
        let ok: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        assert_eq!(ok, "ok");
    }
    // Every chunk, the blake3 hashes and (where recorded) the image checks.
    let report = store.verify(&VerifyOptions {
        read_data: Some(DataSubset::All),
        ..Default::default()
    })?;
    assert!(report.healthy(), "{:?}", report.problems);
    assert_eq!(report.images_checked, n as u64);
    Ok(())
}

/// Format version 2 (deltas) leaves version 1 as it was: every pack and index
/// object of the version-1 fixtures decodes as version 1 and is written again,
/// by this build's version-1 writers, byte for byte.
#[test]
fn format_v1_objects_are_written_again_byte_for_byte() -> anyhow::Result<()> {
    use pagesnap_core::format::index::IndexBody;
    use pagesnap_core::format::pack::{self, PackBuilder};
    let (mut packs, mut indexes) = (0, 0);
    for version in ["v1", "v1-image-check"] {
        let store = fixture(version).join("store");
        for dir in std::fs::read_dir(store.join("packs"))? {
            for file in std::fs::read_dir(dir?.path())? {
                let bytes = std::fs::read(file?.path())?;
                let (v, dict) = pack::check_header_version(&bytes)?;
                assert_eq!(v, 1);
                let mut b = PackBuilder::with_buffer(
                    Vec::new(),
                    dict.map(|d| {
                        let mut id = [0u8; 32];
                        id[..16].copy_from_slice(&d);
                        pagesnap_core::Id(id)
                    }),
                );
                for e in pack::decode_pack(&bytes)? {
                    let blob = &bytes[e.offset as usize..(e.offset + e.stored_len) as usize];
                    b.try_push(e.id, blob, e.raw_len, e.codec)?;
                }
                assert!(
                    b.finish().1 == bytes,
                    "a {version} pack written again differs"
                );
                packs += 1;
            }
        }
        for file in std::fs::read_dir(store.join("index"))? {
            let bytes = std::fs::read(file?.path())?;
            let body = IndexBody::decode(&bytes)?;
            assert!(body.deltas.is_empty());
            assert_eq!(body.needed_version(), 1);
            assert!(
                body.encode() == bytes,
                "a {version} index object written again differs"
            );
            assert!(body.encode_as(1)? == bytes);
            indexes += 1;
        }
    }
    assert!(
        packs >= 2 && indexes >= 2,
        "{packs} packs, {indexes} index objects"
    );
    Ok(())
}

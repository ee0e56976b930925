//! Writes the fuzzing seeds (`fuzz/seeds/<target>/`) and the hand-made hostile
//! inputs (`tests/fixtures/fuzz-regressions/<target>/hostile-*`).
//!
//! ```sh
//! cargo run -p pagesnap-core --example fuzz_seeds
//! ```
//! Seeds are valid objects: copies of the format fixture stores `tests/fixtures/v1`
//! and `tests/fixtures/v1-image-check` (read only; objects over 64 KiB are left out, the fuzzers cut inputs there) and
//! a few small synthetic ones (the local cache's files and an encrypted store's
//! key files and sealed objects are all synthetic; the `btree` target's are SQLite
//! images made with rusqlite). A fuzzer mutating real objects reaches the deep
//! paths of each decoder much sooner than one starting from nothing. The hostile
//! inputs carry right checksums, so they reach the check they target; the
//! regression test asserts each one is rejected. Output is deterministic: rerunning
//! rewrites the same files.

use pagesnap_core::format::envelope::{self, Kind};
use pagesnap_core::format::fuzz::{
    btree_hostile, btree_seeds, cache_hostile, cache_seeds, crypto_hostile, crypto_seeds,
    seal_envelope, seal_pack,
};
use pagesnap_core::format::index::{DeltaBase, IndexBody, IndexEntry, PackRef};
use pagesnap_core::format::manifest::Manifest;
use pagesnap_core::format::pack::{
    BasePrefix, Codec, DeltaHeader, PackBuilder, PackEntry, FOOTER_LEN, HEADER_LEN,
};
use pagesnap_core::format::pagemap::{Change, MapRef, PageMap};
use pagesnap_core::Id;
use std::fs;
use std::path::{Path, PathBuf};

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// Fixture objects larger than this are not seeds (the fuzzers' `-max_len`).
const MAX_SEED: u64 = 64 << 10;

fn main() -> Res {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let seeds = root.join("fuzz/seeds");
    let hostile = root.join("tests/fixtures/fuzz-regressions");
    // Manifests with the image-check extension (its config is overwritten by v1's).
    copy_fixture(&root.join("tests/fixtures/v1-image-check/store"), &seeds)?;
    copy_fixture(&root.join("tests/fixtures/v1/store"), &seeds)?;
    synthetic(&seeds)?;
    hostile_inputs(&hostile)?;
    // The local cache's files: synthetic, made by the library's own writers.
    for (target, name, bytes) in cache_seeds()? {
        write(&seeds, target, name, &bytes)?;
    }
    for (target, name, bytes) in cache_hostile()? {
        write(&hostile, target, name, &bytes)?;
    }
    // An encrypted store's objects (key files, sealed objects, version-3
    // configs): synthetic, sealed under the fuzz targets' fixed keys.
    for (target, name, bytes) in crypto_seeds()? {
        write(&seeds, target, name, &bytes)?;
    }
    for (target, name, bytes) in crypto_hostile()? {
        write(&hostile, target, name, &bytes)?;
    }
    // SQLite images for the b-tree walker of `diff` (not a store object):
    // made with rusqlite, damaged by hand for the hostile ones.
    for (target, name, bytes) in btree_seeds()? {
        write(&seeds, target, name, &bytes)?;
    }
    for (target, name, bytes) in btree_hostile()? {
        write(&hostile, target, name, &bytes)?;
    }
    Ok(())
}

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) -> Res {
    let d = dir.join(target);
    fs::create_dir_all(&d)?;
    fs::write(d.join(name), bytes)?;
    Ok(())
}

/// Every fixture object of at most [`MAX_SEED`] bytes, as a seed of its decoder's
/// target and (envelopes) of the envelope target.
fn copy_fixture(store: &Path, seeds: &Path) -> Res {
    let mut objects: Vec<(PathBuf, &str)> = vec![(store.join("config"), "config")];
    for (dir, target) in [
        ("snapshots", "manifest"),
        ("maps", "pagemap"),
        ("index", "index"),
        ("dicts", "dict"),
    ] {
        for e in fs::read_dir(store.join(dir))? {
            objects.push((e?.path(), target));
        }
    }
    for fan in fs::read_dir(store.join("packs"))? {
        for e in fs::read_dir(fan?.path())? {
            objects.push((e?.path(), "pack"));
        }
    }
    for (path, target) in objects {
        if fs::metadata(&path)?.len() > MAX_SEED {
            continue;
        }
        let bytes = fs::read(&path)?;
        let stem = path.file_name().and_then(|n| n.to_str()).unwrap_or("x");
        let name = format!("fixture-{}", &stem[..stem.len().min(12)]);
        write(seeds, target, &name, &bytes)?;
        if target != "pack" {
            write(seeds, "envelope", &format!("{name}-{target}"), &bytes)?;
        }
    }
    Ok(())
}

/// A small pack of one chunk of each codec (the dictionary one is never
/// decompressed: `decode_blob` has no dictionary), its index and a delta page map
/// using every kind of reference.
fn synthetic(seeds: &Path) -> Res {
    let dict = Id([0xd1; 32]);
    let mut b = PackBuilder::with_capacity(4096, Some(dict));
    let raw = b"raw chunk bytes".to_vec();
    b.push(Id::of_chunk(&raw), &raw, raw.len() as u32, Codec::Raw);
    let plain = vec![7u8; 1024];
    let z = zstd::bulk::compress(&plain, 3)?;
    b.push(Id::of_chunk(&plain), &z, plain.len() as u32, Codec::Zstd);
    b.push(Id([0xee; 32]), &z, plain.len() as u32, Codec::ZstdDict);
    let (id, bytes, entries) = b.finish();
    write(seeds, "pack", "synthetic-three-codecs", &bytes)?;
    let (_, empty, _) = PackBuilder::with_capacity(64, None).finish();
    write(seeds, "pack", "synthetic-empty", &empty)?;

    let pack = PackRef {
        id,
        len: bytes.len() as u64,
        dict: Some(dict),
    };
    let index = IndexBody::of_one_pack(pack, entries);
    write(seeds, "index", "synthetic-three-codecs", &index.encode())?;
    synthetic_delta(seeds)?;
    // A pack of one byte: its length is a one-byte varint a single mutation can
    // shrink below a trailer's worth (how the 64..80-byte underflow is reached).
    let mut b = PackBuilder::with_capacity(128, None);
    let entry = b.push(Id::of_chunk(b"x"), b"x", 1, Codec::Raw);
    let (id, bytes, _) = b.finish();
    let tiny = IndexBody {
        packs: vec![PackRef {
            id,
            len: bytes.len() as u64,
            dict: None,
        }],
        entries: vec![IndexEntry { pack: 0, entry }],
        deltas: Vec::new(),
    };
    write(seeds, "index", "synthetic-one-byte", &tiny.encode())?;

    let change = |skip, chunk| Change { skip, chunk };
    let map = PageMap {
        chunk_count: 6,
        seq: 3,
        reference: Some(Id([2; 32])),
        new_list: Some(Id([3; 32])),
        lists: vec![Id([4; 32])],
        changes: vec![
            change(0, MapRef::New),
            change(1, MapRef::Zero),
            change(
                1,
                MapRef::At {
                    list: 0,
                    ordinal: 9,
                },
            ),
        ],
    };
    write(seeds, "pagemap", "synthetic-delta", &map.encode())?;
    write(seeds, "envelope", "synthetic-delta-pagemap", &map.encode())?;
    Ok(())
}

/// A format-version-2 pack holding a page and a delta of a changed copy of it
/// against the page (a zstd frame with the page as raw-content dictionary, as
/// the codec makes it), and its version-2 index object with the base table.
fn delta_pack() -> Res<(Vec<u8>, IndexBody)> {
    let page: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    let mut changed = page.clone();
    changed[100] ^= 1;
    let (page_id, changed_id) = (Id::of_chunk(&page), Id::of_chunk(&changed));
    let mut b = PackBuilder::with_version(Vec::new(), None, 2)?;
    let z = zstd::bulk::compress(&page, 3)?;
    b.try_push(page_id, &z, page.len() as u32, Codec::Zstd)?;
    let frame = zstd::bulk::Compressor::with_dictionary(3, &page)?.compress(&changed)?;
    let mut blob = DeltaHeader {
        base: BasePrefix::of(&page_id),
        base_len: page.len() as u32,
    }
    .encode();
    blob.extend_from_slice(&frame);
    b.try_push(changed_id, &blob, changed.len() as u32, Codec::ZstdDelta)?;
    // What the changed page would take stored alone (the base table's whole length).
    let entries_whole_len = zstd::bulk::compress(&changed, 3)?.len() as u32;
    let (id, bytes, entries) = b.finish();
    let pack = PackRef {
        id,
        len: bytes.len() as u64,
        dict: None,
    };
    let index = IndexBody {
        deltas: vec![DeltaBase {
            ordinal: 1,
            base: page_id,
            depth: 1,
            whole_len: entries_whole_len,
        }],
        ..IndexBody::of_one_pack(pack, entries)
    };
    Ok((bytes, index))
}

fn synthetic_delta(seeds: &Path) -> Res {
    let (pack, index) = delta_pack()?;
    write(seeds, "pack", "synthetic-v2-delta", &pack)?;
    write(seeds, "index", "synthetic-v2-delta", &index.encode_as(2)?)?;
    Ok(())
}

/// Format version 2 objects that must be refused though their checksums are
/// right: a delta in a version-1 pack, a base table row of depth 9 (above
/// `MAX_DELTA_DEPTH`), a version-2 index object read as version 1, and delta
/// blobs with a bad base length or naming their own prefix.
fn hostile_deltas(dir: &Path) -> Res {
    let (pack, index) = delta_pack()?;
    let mut v1 = pack.clone();
    let f = v1.len() - FOOTER_LEN;
    v1[8..10].copy_from_slice(&1u16.to_le_bytes());
    v1[f + 16..f + 18].copy_from_slice(&1u16.to_le_bytes());
    write(dir, "pack", "hostile-delta-in-version-1", &seal_pack(&v1))?;
    let bytes = index.encode_as(2)?;
    // The depth follows the base id in the one base-table row, then the whole
    // length (a varint): find the row by its id.
    let base = index.deltas[0].base.0;
    let at = bytes
        .windows(32)
        .position(|w| w == base)
        .ok_or("no base row")?
        + 32;
    let mut deep = bytes.clone();
    deep[at] = 9;
    write(dir, "index", "hostile-delta-depth-9", &seal_envelope(&deep))?;
    // A whole length above the chunk's raw length (4096): 16383, the largest
    // two-byte varint, in place of the real one (two bytes too).
    if bytes[at + 1] & 0x80 == 0 || bytes[at + 2] & 0x80 != 0 {
        return Err("the whole length is not a two-byte varint".into());
    }
    let mut long = bytes.clone();
    long[at + 1..at + 3].copy_from_slice(&[0xff, 0x7f]);
    write(
        dir,
        "index",
        "hostile-delta-whole-too-long",
        &seal_envelope(&long),
    )?;
    write(
        dir,
        "index",
        "hostile-delta-index-as-version-1",
        &patch(&bytes, 8, &1u16.to_le_bytes()),
    )?;
    // Delta blobs the format refuses though the pack is sound around them: a
    // base length that is not a minimal varint, one longer than 4 bytes, and a
    // base prefix that is the chunk's own.
    let id = Id::of_chunk(b"hostile delta");
    let other = BasePrefix::of(&Id::of_chunk(b"its base")).0;
    let cases: [(&str, Vec<u8>); 3] = [
        (
            "hostile-delta-base-len-not-minimal",
            [&other[..], &[0x80, 0x80, 0x00], b"frame"].concat(),
        ),
        (
            "hostile-delta-base-len-5-bytes",
            [&other[..], &[0xff, 0xff, 0xff, 0xff, 0x0f], b"frame"].concat(),
        ),
        (
            "hostile-delta-against-own-prefix",
            [&BasePrefix::of(&id).0[..], &[0x10], b"frame"].concat(),
        ),
    ];
    for (name, blob) in cases {
        let mut b = PackBuilder::with_version(Vec::new(), None, 2)?;
        b.push(id, &blob, 16, Codec::ZstdDelta);
        write(dir, "pack", name, &b.finish().1)?;
    }
    Ok(())
}

/// Rewrites the header field at `at` of an envelope and seals it again.
fn patch(bytes: &[u8], at: usize, field: &[u8]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at..at + field.len()].copy_from_slice(field);
    seal_envelope(&b)
}

/// One or more inputs per target that each decoder must reject.
fn hostile_inputs(dir: &Path) -> Res {
    // Envelopes whose raw length (header offset 16) is beyond every kind's limit,
    // and whose stored length (offset 12) runs past the end.
    let small = envelope::encode(Kind::PageMap, &vec![1u8; 40]);
    let huge_raw = patch(&small, 16, &u32::MAX.to_le_bytes());
    write(dir, "envelope", "hostile-huge-raw-length", &huge_raw)?;
    let long_stored = patch(&small, 12, &(1u32 << 30).to_le_bytes());
    write(
        dir,
        "envelope",
        "hostile-stored-length-past-end",
        &long_stored,
    )?;
    let dict_huge = envelope::encode(Kind::Dict, &vec![1u8; 40]);
    write(
        dir,
        "dict",
        "hostile-huge-raw-length",
        &patch(&dict_huge, 16, &(3u32 << 20).to_le_bytes()),
    )?;
    #[derive(serde::Serialize)]
    struct Dict(Vec<u8>, f32, u64);
    let empty = envelope::encode(Kind::Dict, &Dict(vec![], 1.0, 0));
    write(dir, "dict", "hostile-empty-dictionary", &empty)?;

    #[derive(serde::Serialize)]
    struct Config([u8; 32], u32, i32, u32, i64, bool);
    let bad_pages = envelope::encode(Kind::Config, &Config([0; 32], 3, 3, 1 << 20, 0, true));
    write(dir, "config", "hostile-chunk-pages-3", &bad_pages)?;

    let m = manifest_with_overflowing_image();
    write(dir, "manifest", "hostile-page-count-overflow", &m.encode())?;

    // A full map of 2³² positions and no changes: resolving it used to reserve
    // 140 GB; and a change beyond the chunk count.
    let empty_map = PageMap {
        chunk_count: 1 << 32,
        seq: 0,
        reference: None,
        new_list: None,
        lists: vec![],
        changes: vec![],
    };
    write(dir, "pagemap", "hostile-huge-count", &empty_map.encode())?;
    let beyond = PageMap {
        chunk_count: 4,
        changes: vec![Change {
            skip: 9,
            chunk: MapRef::Zero,
        }],
        ..empty_map
    };
    write(
        dir,
        "pagemap",
        "hostile-position-beyond-count",
        &beyond.encode(),
    )?;

    // An entry in a pack of 70 bytes: too short for a trailer (underflowed).
    let entry = PackEntry {
        id: Id([5; 32]),
        offset: HEADER_LEN as u32,
        stored_len: 3,
        raw_len: 3,
        codec: Codec::Raw,
    };
    let index = IndexBody {
        packs: vec![PackRef {
            id: Id([6; 32]),
            len: 70,
            dict: None,
        }],
        entries: vec![IndexEntry { pack: 0, entry }],
        deltas: Vec::new(),
    };
    write(dir, "index", "hostile-pack-too-short", &index.encode())?;
    hostile_deltas(dir)?;

    // A footer whose count × 48 overflows u32 to the real trailer length, and an
    // entry whose blob runs into the trailer.
    let mut b = PackBuilder::with_capacity(4096, None);
    b.push(Id([8; 32]), b"abc", 3, Codec::Raw);
    let (_, pack, _) = b.finish();
    let f = pack.len() - FOOTER_LEN;
    let mut overflow = pack.clone();
    // 48 × count = 3·2³² + 48: in 32 bits, exactly the real trailer's length.
    let count = (1u32 << 28) + 1;
    overflow[f..f + 4].copy_from_slice(&count.to_le_bytes());
    write(dir, "pack", "hostile-count-overflow", &seal_pack(&overflow))?;
    let mut outside = pack;
    let t = f - 48;
    outside[t + 36..t + 40].copy_from_slice(&1000u32.to_le_bytes());
    outside[t + 40..t + 44].copy_from_slice(&1000u32.to_le_bytes());
    write(dir, "pack", "hostile-entry-outside", &seal_pack(&outside))?;
    Ok(())
}

/// A manifest whose page count times page size overflows u64.
fn manifest_with_overflowing_image() -> Manifest {
    Manifest {
        time_unix: 0,
        time_nanos: 0,
        name: "x".into(),
        source_path: "/x.db".into(),
        host: "h".into(),
        tags: vec![],
        page_size: 4096,
        page_count: u64::MAX / 2,
        image_len: 0,
        image_hash: [0; 32],
        sqlite_version: String::new(),
        pagesnap_version: String::new(),
        chunk_pages: 1,
        chunk_count: 0,
        map: Id([1; 32]),
        parent: None,
        dict: None,
        retrain_dict: false,
        image_check: None,
    }
}

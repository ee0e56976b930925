use super::{print_json, store_path};
use crate::cli::{Global, InitArgs};
use anyhow::Result;
use pagesnap_core::{InitOptions, Store};
use serde_json::json;
use std::path::Path;
use std::process::ExitCode;

pub fn run(g: &Global, a: &InitArgs) -> Result<ExitCode> {
    #[cfg(feature = "s3")]
    if let Some(b) = super::s3_backend(g)? {
        // A new store: say plainly when the bucket is missing or the key refused.
        b.check_bucket()?;
        super::remember(b.clone());
        let path = std::path::PathBuf::from(b.url().to_string());
        let store = Store::init_backend(b, &options(a)?)?;
        return report(g, &path, &store);
    }
    // (Built without S3, `store_path` refuses an `s3://` store.)
    let path = store_path(g)?;
    let store = Store::init(&path, &options(a)?)?;
    report(g, &path, &store)
}

fn options(a: &InitArgs) -> Result<InitOptions> {
    let pack_target_size = a
        .pack_size
        .checked_mul(1 << 20)
        .ok_or_else(|| usage!("--pack-size {} MiB is too large", a.pack_size))?;
    Ok(InitOptions {
        chunk_pages: a.chunk_pages,
        zstd_level: a.compression_level,
        pack_target_size,
        dictionary: !a.no_dictionary,
        deltas: a.deltas,
    })
}

fn report(g: &Global, path: &Path, store: &Store) -> Result<ExitCode> {
    let c = store.config();
    if g.json {
        print_json(&json!({
            "store": path,
            "store_id": c.store_id.to_hex(),
            "format_version": if c.deltas {
                pagesnap_core::format::DELTA_FORMAT_VERSION
            } else {
                pagesnap_core::format::FORMAT_VERSION
            },
            "chunk_pages": c.chunk_pages,
            "compression_level": c.zstd_level,
            "pack_target_size": c.pack_target_size,
            "dictionary": c.dictionary,
            "deltas": c.deltas,
        }))?;
    } else {
        println!(
            "created pagesnap store {} at {} ({} page(s) per chunk, zstd level {})",
            c.store_id.short(),
            path.display(),
            c.chunk_pages,
            c.zstd_level
        );
    }
    Ok(ExitCode::SUCCESS)
}

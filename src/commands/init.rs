use super::{print_json, store_path};
use crate::cli::{Global, InitArgs};
use anyhow::Result;
use pagesnap_core::backend::{Backend, LocalBackend};
use pagesnap_core::crypto::KdfParams;
use pagesnap_core::{InitOptions, Store};
use serde_json::json;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

pub fn run(g: &Global, a: &InitArgs) -> Result<ExitCode> {
    #[cfg(feature = "s3")]
    if let Some(b) = super::s3_backend(g)? {
        // A new store: say plainly when the bucket is missing or the key refused.
        b.check_bucket()?;
        super::remember(b.clone());
        let path = std::path::PathBuf::from(b.url().to_string());
        let store = create(b, a)?;
        return report(g, &path, &store);
    }
    // (Built without S3, `store_path` refuses an `s3://` store.)
    let path = store_path(g)?;
    let store = match a.encrypt {
        true => create(Arc::new(LocalBackend::new(&path)), a)?,
        false => Store::init(&path, &options(a)?)?,
    };
    report(g, &path, &store)
}

/// The store on `backend`, encrypted if asked (the passphrase read, and the
/// key's Argon2id parameters tuned, before anything is written).
fn create(backend: Arc<dyn Backend>, a: &InitArgs) -> Result<Store> {
    let opts = options(a)?;
    if !a.encrypt {
        return Ok(Store::init_backend(backend, &opts)?);
    }
    let pass = crate::passphrase::new(None, true).map_err(pagesnap_core::Error::Passphrase)?;
    let params = KdfParams::for_new_key()?;
    Ok(Store::init_encrypted_backend(
        backend, &opts, &pass, params,
    )?)
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
            "format_version": c.version(),
            "chunk_pages": c.chunk_pages,
            "compression_level": c.zstd_level,
            "pack_target_size": c.pack_target_size,
            "dictionary": c.dictionary,
            "deltas": c.deltas,
            "encrypted": c.encrypted,
        }))?;
    } else {
        println!(
            "created {}pagesnap store {} at {} ({} page(s) per chunk, zstd level {})",
            if c.encrypted { "encrypted " } else { "" },
            c.store_id.short(),
            path.display(),
            c.chunk_pages,
            c.zstd_level
        );
        if c.encrypted {
            println!("keep the passphrase safe: without it the store cannot be read");
        }
    }
    Ok(ExitCode::SUCCESS)
}

//! One module per subcommand; each returns the process exit code.

mod backup;
mod bench;
mod copy;
mod forget;
mod gc;
mod init;
mod policy;
mod prune;
mod repair;
mod restore;
mod snapshots;
mod stats;
mod unlock;
mod verify;
mod watch;

use crate::cli::{Cli, Command, Global};
use anyhow::{anyhow, Result};
use pagesnap_core::backend::{Backend, Fault, FaultyBackend, LocalBackend, S3Backend, S3Url};
use pagesnap_core::{default_store_path, Store};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

pub fn run(cli: Cli) -> Result<ExitCode> {
    match &cli.command {
        Command::Init(a) => init::run(&cli.global, a),
        Command::Backup(a) => backup::run(&cli.global, a),
        Command::Snapshots(a) => snapshots::run(&cli.global, a),
        Command::Restore(a) => restore::run(&cli.global, a),
        Command::Stats(a) => stats::run(&cli.global, a),
        Command::Bench(a) => bench::run(&cli.global, a),
        Command::Forget(a) => forget::run(&cli.global, a),
        Command::Prune(a) => prune::run(&cli.global, a),
        Command::Gc(a) => gc::run(&cli.global, a),
        Command::Copy(a) => copy::run(&cli.global, a),
        Command::Policy(c) => policy::run(&cli.global, c),
        Command::Verify(a) => verify::run(&cli.global, a),
        Command::Repair(c) => repair::run(&cli.global, c),
        Command::Unlock(a) => unlock::run(&cli.global, a),
        Command::Watch(a) => watch::run(&cli.global, a),
        Command::Status(a) => watch::status::run(&cli.global, a),
    }
}

/// The store directory: `--store`, `$PAGESNAP_STORE` (both via clap), or the default.
pub fn store_path(g: &Global) -> Result<PathBuf> {
    store_path_at(g.store.as_deref())
}

/// A store directory given on the command line (`--store`, `copy --from/--to`),
/// checked; `None`: the default store.
fn store_path_at(spec: Option<&Path>) -> Result<PathBuf> {
    let p = match spec {
        Some(p) => p.to_path_buf(),
        None => default_store_path()
            .ok_or_else(|| anyhow!("no store given: pass --store DIR or set PAGESNAP_STORE"))?,
    };
    let s = p.to_string_lossy();
    if s.contains('\0') || s.contains('\n') || s.contains('\r') {
        return Err(anyhow!(
            "invalid store path {s:?}: contains a NUL or newline"
        ));
    }
    // A store path is often assembled by scripts (`/backups/$APP`); a `..` in it
    // is how such a path escapes where it was meant to be. Refuse rather than guess.
    if p.components().any(|c| c == std::path::Component::ParentDir) {
        return Err(anyhow!(
            "invalid store path {s:?}: contains a `..` component; give the path without `..` (an absolute path, say)"
        ));
    }
    Ok(p)
}

/// The S3 store named by `--store s3://BUCKET/PREFIX` (or `$PAGESNAP_STORE`), if
/// that is what was given: the backend, with the bucket and credentials checked
/// by one LIST request, so that a missing bucket or a refused key is said as such.
pub fn s3_backend(g: &Global) -> Result<Option<Arc<S3Backend>>> {
    s3_backend_at(g.store.as_deref())
}

fn s3_backend_at(spec: Option<&Path>) -> Result<Option<Arc<S3Backend>>> {
    let Some(s) = spec.and_then(|p| p.to_str()) else {
        return Ok(None);
    };
    if !S3Url::is_s3(s) {
        return Ok(None);
    }
    let backend = S3Backend::from_url(s)?;
    backend.check_bucket()?;
    Ok(Some(Arc::new(backend)))
}

/// Opens the store of `--store` / `$PAGESNAP_STORE` / the default.
pub fn open_store(g: &Global) -> Result<Store> {
    open_store_at(g.store.as_deref(), true)
}

/// Opens the store `spec` names: a directory or an `s3://BUCKET/PREFIX` URL
/// (`None`: the default store). With `faults`, a local store honours the crash
/// tests' `PAGESNAP_FAULT_AFTER` (copy passes it for its destination only).
pub fn open_store_at(spec: Option<&Path>, faults: bool) -> Result<Store> {
    if let Some(b) = s3_backend_at(spec)? {
        return Ok(Store::open_backend(b)?);
    }
    let path = store_path_at(spec)?;
    // Crash tests: abort (or fail like a full disk) after N object writes/deletes.
    if let Some(n) = std::env::var("PAGESNAP_FAULT_AFTER")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|_| faults)
    {
        if !path.is_dir() {
            return Ok(Store::open(&path)?);
        }
        let fault = match std::env::var("PAGESNAP_FAULT_KIND").as_deref() {
            Ok("enospc") => Fault::NoSpace,
            _ => Fault::Abort,
        };
        let inner: Arc<dyn Backend> = Arc::new(LocalBackend::new(&path));
        return Ok(Store::open_backend(Arc::new(FaultyBackend::new(
            inner, n, fault,
        )))?);
    }
    Ok(Store::open(path)?)
}

/// Exit status of `verify` and `repair` when they find damage (1 means the
/// command itself failed; clap uses 2 for usage errors).
pub const EXIT_DAMAGE: u8 = 3;

/// Prints a JSON document on stdout.
pub fn print_json(v: &serde_json::Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

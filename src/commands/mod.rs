//! One module per subcommand; each returns the process exit code.

mod backup;
mod bench;
mod cache;
mod completions;
mod copy;
mod diff;
mod forget;
mod gc;
mod init;
mod key;
mod ls;
mod man;
mod policy;
mod prune;
mod repair;
mod restore;
mod snapshots;
mod sql;
mod stats;
mod tag;
mod unlock;
mod upgrade;
mod verify;
mod watch;

use crate::cli::{Cli, Command, Global};
use anyhow::{anyhow, Result};
use pagesnap_core::backend::{Backend, LocalBackend};
#[cfg(feature = "s3")]
use pagesnap_core::backend::{CachedBackend, S3Backend, S3Url};
use pagesnap_core::{default_store_path, Store};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

pub fn run(cli: Cli) -> Result<ExitCode> {
    match &cli.command {
        Command::Init(a) => init::run(&cli.global, a),
        Command::Backup(a) => backup::run(&cli.global, a),
        Command::Snapshots(a) => snapshots::run(&cli.global, a),
        Command::Restore(a) => restore::run(&cli.global, a),
        Command::Sql(a) => sql::run(&cli.global, a),
        Command::Ls(a) => ls::run(&cli.global, a),
        Command::Diff(a) => diff::run(&cli.global, a),
        Command::Stats(a) => stats::run(&cli.global, a),
        Command::Bench(a) => bench::run(&cli.global, a),
        Command::Forget(a) => forget::run(&cli.global, a),
        Command::Prune(a) => prune::run(&cli.global, a),
        Command::Gc(a) => gc::run(&cli.global, a),
        Command::Copy(a) => copy::run(&cli.global, a),
        Command::Policy(c) => policy::run(&cli.global, c),
        Command::Key(c) => key::run(&cli.global, c),
        Command::Verify(a) => verify::run(&cli.global, a),
        Command::Repair(c) => repair::run(&cli.global, c),
        Command::Unlock(a) => unlock::run(&cli.global, a),
        Command::Upgrade(a) => upgrade::run(&cli.global, a),
        Command::Watch(a) => watch::run(&cli.global, a),
        Command::Status(a) => watch::status::run(&cli.global, a),
        Command::Tag(a) => tag::run(&cli.global, a),
        Command::Completions(a) => completions::run(a),
        Command::Man(a) => man::run(a),
        Command::Cache(a) => cache::run(&cli.global, a),
    }
}

/// The snapshot `snapshot` names (`None`: latest) with `--name` and `--at`: `--at`
/// picks by time, so it goes with `latest` only.
pub fn selector(
    snapshot: Option<&str>,
    name: Option<&str>,
    at: Option<&str>,
) -> Result<pagesnap_core::SnapshotSelector> {
    use pagesnap_core::SnapshotSelector;
    let at = at.map(crate::timearg::parse_time).transpose()?;
    Ok(match snapshot {
        None | Some("latest") => SnapshotSelector::Latest {
            name: name.map(str::to_string),
            at,
        },
        Some(id) => {
            if at.is_some() {
                return Err(usage!(
                    "--at picks the snapshot by time: give `latest` or no snapshot id with it"
                ));
            }
            SnapshotSelector::Id(id.to_string())
        }
    })
}

/// The snapshot `snapshot` (an id or `latest`) and `pick` name in `store`, warning
/// of unreadable snapshots skipped on the way.
pub fn pick_snapshot(
    store: &Store,
    snapshot: &str,
    pick: &crate::cli::SnapshotPick,
) -> Result<pagesnap_core::Snapshot> {
    let sel = selector(Some(snapshot), pick.name.as_deref(), pick.at.as_deref())?;
    Ok(store.select_reporting(&sel, |d| {
        eprintln!(
            "pagesnap: warning: skipping unreadable snapshot: {}",
            d.error
        );
    })?)
}

/// A query error as the CLI reports it: the store's errors as themselves (so
/// their hints and exit codes apply), SQLite's as its message.
pub fn query_error(e: pagesnap_core::query::QueryError) -> anyhow::Error {
    match e {
        pagesnap_core::query::QueryError::Store(e) => e.into(),
        e => e.into(),
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
            .ok_or_else(|| usage!("no store given: pass --store DIR or set PAGESNAP_STORE"))?,
    };
    let s = p.to_string_lossy();
    // Built without S3 an `s3://` URL would be taken for a folder named `s3:`.
    if !cfg!(feature = "s3") && s.starts_with("s3://") {
        return Err(anyhow!(
            "{s}: this pagesnap was built without S3 support; rebuild with --features s3"
        ));
    }
    if s.contains('\0') || s.contains('\n') || s.contains('\r') {
        return Err(usage!(
            "invalid store path {s:?}: contains a NUL or newline"
        ));
    }
    // A store path is often assembled by scripts (`/backups/$APP`); a `..` in it
    // is how such a path escapes where it was meant to be. Refuse rather than guess.
    if p.components().any(|c| c == std::path::Component::ParentDir) {
        return Err(usage!(
            "invalid store path {s:?}: contains a `..` component; give the path without `..` (an absolute path, say)"
        ));
    }
    Ok(p)
}

/// The S3 store named by `--store s3://BUCKET/PREFIX` (or `$PAGESNAP_STORE`), if
/// that is what was given. Sends no request.
#[cfg(feature = "s3")]
pub fn s3_backend(g: &Global) -> Result<Option<Arc<S3Backend>>> {
    s3_backend_at(g.store.as_deref())
}

#[cfg(feature = "s3")]
fn s3_backend_at(spec: Option<&Path>) -> Result<Option<Arc<S3Backend>>> {
    let Some(s) = spec.and_then(|p| p.to_str()) else {
        return Ok(None);
    };
    if !S3Url::is_s3(s) {
        return Ok(None);
    }
    let backend = Arc::new(S3Backend::from_url(s)?);
    Ok(Some(backend))
}

/// Opens the store of `--store`, with the local metadata cache for remote stores
/// and the local index cache for backups (unless `--no-cache`).
pub fn open_store(g: &Global) -> Result<Store> {
    let store = open_store_at(g.store.as_deref(), true, !g.no_cache)?;
    Ok(if g.no_cache {
        store.without_index_cache()
    } else {
        store
    })
}

/// Opens the store without the local cache: for commands that judge the store
/// itself (`verify`, `repair`), which must read what the store holds.
pub fn open_store_uncached(g: &Global) -> Result<Store> {
    open_store_at(g.store.as_deref(), true, false)
}

/// Opens the store `spec` names: a directory or an `s3://BUCKET/PREFIX` URL
/// (`None`: the default store). With `faults`, a local store goes through
/// [`pagesnap_core::backend::wrap_for_tests`], where a test build honours the crash
/// tests' `PAGESNAP_FAULT_AFTER` (copy passes it for its destination only); with
/// `cache`, a remote store's metadata goes through the local cache.
pub fn open_store_at(spec: Option<&Path>, faults: bool, cache: bool) -> Result<Store> {
    open_store_for(spec, faults, cache, crate::passphrase::Which::Main)
}

/// [`open_store_at`], an encrypted store unlocked with `which` store's
/// passphrase (`copy`'s source has its own variables).
pub fn open_store_for(
    spec: Option<&Path>,
    faults: bool,
    cache: bool,
    which: crate::passphrase::Which,
) -> Result<Store> {
    // Only remote stores have a metadata cache.
    #[cfg(not(feature = "s3"))]
    let _ = cache;
    #[cfg(feature = "s3")]
    if let Some(s3) = s3_backend_at(spec)? {
        let backend: Arc<dyn Backend> = match cache_dir(&s3) {
            Some(dir) if cache => Arc::new(CachedBackend::new(s3.clone(), dir)),
            _ => s3.clone(),
        };
        remember(backend.clone());
        let location = backend.location();
        return match Store::open_backend_unlocking(backend, &|| {
            crate::passphrase::current_for(which, &location)
        }) {
            Ok(store) => Ok(store),
            // No request is spent on checking the bucket up front (a backup's
            // requests are counted): only when opening fails is the bucket
            // checked, to tell a missing bucket or a refused key from a missing store.
            Err(e) => {
                s3.check_bucket()?;
                Err(e.into())
            }
        };
    }
    let path = store_path_at(spec)?;
    // Crash tests: abort (or fail like a full disk) after N object writes/deletes.
    // (A path that is no directory is left to `Store::open`, which says what it is.)
    if faults && path.is_dir() {
        let local: Arc<dyn Backend> = Arc::new(LocalBackend::new(&path));
        let location = local.location();
        return Ok(Store::open_backend_unlocking(
            pagesnap_core::backend::wrap_for_tests(local),
            &|| crate::passphrase::current_for(which, &location),
        )?);
    }
    let location = path.display().to_string();
    Ok(Store::open_unlocking(path, &|| {
        crate::passphrase::current_for(which, &location)
    })?)
}

/// The cache folder of an S3 store: per bucket, prefix and endpoint.
#[cfg(feature = "s3")]
fn cache_dir(s3: &S3Backend) -> Option<PathBuf> {
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .or_else(|_| std::env::var("AWS_ENDPOINT"))
        .unwrap_or_default();
    CachedBackend::default_dir(&format!("{} {endpoint}", s3.url()))
}

/// Remote backends this process opened, for the request report (the last few
/// only: `watch` opens stores for years).
static REMOTES: Mutex<Vec<Arc<dyn Backend>>> = Mutex::new(Vec::new());

/// Counts `b`'s requests for the report at the end of the command.
#[cfg(feature = "s3")]
pub fn remember(b: Arc<dyn Backend>) {
    if let Ok(mut v) = REMOTES.lock() {
        if v.len() >= 4 {
            v.remove(0);
        }
        v.push(b);
    }
}

/// Requests sent to each remote store so far, for `--json` output:
/// `[{"store": URL, "get": …, "put": …, "pack_put": …, …, "total": …}]`.
pub fn requests_json() -> Option<serde_json::Value> {
    let v = REMOTES.lock().ok()?;
    if v.is_empty() {
        return None;
    }
    let list = v
        .iter()
        .map(|b| {
            let r = b.requests().unwrap_or_default();
            let mut o = serde_json::to_value(r).unwrap_or_default();
            if let Some(m) = o.as_object_mut() {
                m.insert("store".into(), b.location().into());
                m.insert("total".into(), r.total().into());
            }
            o
        })
        .collect();
    Some(serde_json::Value::Array(list))
}

/// One line per remote store: the requests this command sent (said once: the
/// stores are forgotten).
pub fn requests_text() -> Vec<String> {
    let Ok(mut v) = REMOTES.lock() else {
        return Vec::new();
    };
    std::mem::take(&mut *v)
        .iter()
        .map(|b| {
            let r = b.requests().unwrap_or_default();
            format!(
                "{}: {} requests (get {}, put {}, list {}, head {}, delete {}) + {} for pack uploads; {} reads from the local cache",
                b.location(),
                r.metadata(),
                r.get,
                r.put,
                r.list,
                r.head,
                r.delete,
                r.pack_put,
                r.cached
            )
        })
        .collect()
}

/// Exit status of `verify` and `repair` when they find damage (1 means the
/// command itself failed; clap uses 2 for usage errors).
pub const EXIT_DAMAGE: u8 = 3;

/// Prints a JSON document on stdout. An object gets a `requests` member when the
/// command talked to a remote store.
pub fn print_json(v: &serde_json::Value) -> Result<()> {
    let mut v = v.clone();
    if let (Some(o), Some(r)) = (v.as_object_mut(), requests_json()) {
        o.insert("requests".into(), r);
    }
    // Not println!: a reader that went away (`| head`) is an error, not a panic.
    use std::io::Write;
    writeln!(
        std::io::stdout().lock(),
        "{}",
        serde_json::to_string_pretty(&v)?
    )
    .map_err(|e| anyhow!("cannot write to standard output: {e}"))?;
    Ok(())
}

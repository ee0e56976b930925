//! One module per subcommand; each returns the process exit code.

mod backup;
mod bench;
mod init;
mod restore;
mod snapshots;
mod stats;

use crate::cli::{Cli, Command, Global};
use anyhow::{anyhow, Result};
use pagesnap_core::{default_store_path, Store};
use std::path::PathBuf;
use std::process::ExitCode;

pub fn run(cli: Cli) -> Result<ExitCode> {
    match &cli.command {
        Command::Init(a) => init::run(&cli.global, a),
        Command::Backup(a) => backup::run(&cli.global, a),
        Command::Snapshots(a) => snapshots::run(&cli.global, a),
        Command::Restore(a) => restore::run(&cli.global, a),
        Command::Stats(a) => stats::run(&cli.global, a),
        Command::Bench(a) => bench::run(&cli.global, a),
    }
}

/// The store directory: `--store`, `$PAGESNAP_STORE` (both via clap), or the default.
pub fn store_path(g: &Global) -> Result<PathBuf> {
    let p = match &g.store {
        Some(p) => p.clone(),
        None => default_store_path()
            .ok_or_else(|| anyhow!("no store given: pass --store DIR or set PAGESNAP_STORE"))?,
    };
    let s = p.to_string_lossy();
    if s.contains('\0') || s.contains('\n') {
        return Err(anyhow!(
            "invalid store path {s:?}: contains a NUL or newline"
        ));
    }
    Ok(p)
}

pub fn open_store(g: &Global) -> Result<Store> {
    Ok(Store::open(store_path(g)?)?)
}

/// Prints a JSON document on stdout.
pub fn print_json(v: &serde_json::Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

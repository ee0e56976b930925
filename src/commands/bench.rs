//! `pagesnap bench`: runs a workload for `--steps` steps, snapshots it after each
//! into one temporary store per configuration, and reports what each stored
//! against the full-copy and ideal page-level baselines. This command checks the
//! arguments and prints; the `pagesnap-bench` crate does the run.

use super::print_json;
use crate::cli::{BenchArgs, BenchWorkload, Global};
use crate::output;
use crate::timearg::parse_time;
use anyhow::{anyhow, bail, Context, Result};
use pagesnap_bench::stores::parse_configs;
use pagesnap_bench::workload::Kind;
use pagesnap_bench::{parse_size, plot, report, Plan, Source};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Below this a database is a handful of pages and the workloads mean nothing.
const MIN_SIZE: u64 = 256 << 10;

/// Defaults (size, steps, configurations): quick ones that finish in about a
/// minute on 2 cores, and `--full`'s, the day of docs/BENCHMARKS.md (15 to 20
/// minutes there). The help texts in cli.rs name the same values.
const QUICK: (&str, u32, &str) = ("32MiB", 36, "1,4,1:3:nodict,1:deltas");
const FULL: (&str, u32, &str) = ("256MiB", 144, "1,2,4,16,1:1,1:9,1:3:nodict,1:deltas");

pub fn run(g: &Global, a: &BenchArgs) -> Result<ExitCode> {
    let defaults = if a.full { FULL } else { QUICK };
    let size_arg = a.size.as_deref().unwrap_or(defaults.0);
    let steps = a.steps.unwrap_or(defaults.1);
    let config_list: Vec<String> = match &a.configs {
        Some(c) => c.clone(),
        None => defaults.2.split(',').map(str::to_string).collect(),
    };
    // Every argument and input file is checked before any work starts.
    let configs = parse_configs(&config_list).map_err(|e| usage!("{e:#}"))?;
    let t0 = parse_time(&a.time)?;
    if steps == 0 {
        return Err(usage!("--steps must be at least 1"));
    }
    let source = match (&a.db, &a.sql) {
        (Some(db), Some(sql)) => {
            if !db.is_file() {
                bail!("{}: no such database file", db.display());
            }
            let script = std::fs::read_to_string(sql)
                .with_context(|| format!("{}: cannot read the SQL script", sql.display()))?;
            Source::Replay {
                db: db.clone(),
                sql: sql.clone(),
                script,
            }
        }
        _ => {
            let size = parse_size(size_arg).map_err(|e| usage!("{e:#}"))?;
            if size < MIN_SIZE {
                return Err(usage!(
                    "--size {}: too small, use at least {}",
                    size_arg,
                    output::bytes(MIN_SIZE)
                ));
            }
            Source::Workload {
                kind: kind(a.workload),
                size,
            }
        }
    };
    if let Some(p) = &a.plot {
        check_parent(p, "--plot")?;
    }
    if let Some(k) = &a.keep {
        check_keep(k)?;
    }

    // All work happens in a temporary directory, removed on every error; --keep
    // moves it into place at the end (so it is made beside the --keep directory).
    let work = match &a.keep {
        Some(k) => tempfile::Builder::new()
            .prefix(".pagesnap-bench-")
            .tempdir_in(parent(k)),
        None => tempfile::Builder::new().prefix("pagesnap-bench-").tempdir(),
    }
    .context("cannot create a temporary directory")?;
    let plan = Plan {
        source,
        seed: a.seed,
        configs,
        t0,
        steps,
        verify: a.verify,
    };
    // Progress lines on stderr, only for a person watching a terminal.
    let terminal = std::io::stderr().is_terminal();
    let results = pagesnap_bench::run(&plan, work.path(), &|msg| {
        if terminal {
            eprintln!("{msg}");
        }
    })?;
    if let Some(p) = &a.plot {
        plot::write_svg(&results, p)?;
    }
    if let Some(k) = &a.keep {
        let tmp = work.keep();
        if let Err(e) = std::fs::rename(&tmp, k) {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(anyhow!(
                "{}: cannot keep the stores there: {e}",
                k.display()
            ));
        }
    }

    if g.json {
        let mut v = report::json(&results);
        v["parameters"]["keep"] = serde_json::json!(a.keep);
        v["parameters"]["plot"] = serde_json::json!(a.plot);
        print_json(&v)?;
    } else {
        print!("{}", report::table(&results));
        if let Some(p) = &a.plot {
            println!("plot written to {}", p.display());
        }
        if let Some(k) = &a.keep {
            println!("database and stores kept in {}", k.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `--workload`: the clap enum (its help text) names the crate's workload.
fn kind(w: BenchWorkload) -> Kind {
    match w {
        BenchWorkload::Oltp => Kind::Oltp,
        BenchWorkload::Append => Kind::Append,
        BenchWorkload::Kv => Kind::Kv,
        BenchWorkload::Vacuum => Kind::Vacuum,
        BenchWorkload::Cms => Kind::Cms,
    }
}

fn parent(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn check_parent(p: &Path, what: &str) -> Result<()> {
    let d = parent(p);
    if !d.is_dir() {
        bail!(
            "{what} {}: directory {} does not exist",
            p.display(),
            d.display()
        );
    }
    Ok(())
}

/// `--keep DIR` must be new (or an empty directory) in an existing directory, so
/// that nothing of the user's is mixed with or replaced by the stores.
fn check_keep(k: &Path) -> Result<()> {
    match std::fs::read_dir(k) {
        Ok(mut rd) => {
            if rd.next().is_some() {
                bail!("--keep {}: already exists and is not empty", k.display());
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => check_parent(k, "--keep"),
        Err(e) => Err(anyhow!("--keep {}: {e}", k.display())),
    }
}

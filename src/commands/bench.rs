//! `pagesnap bench`: runs a workload for `--steps` steps, snapshots it after each
//! into one temporary store per configuration, and reports what each stored
//! against the full-copy and ideal page-level baselines (see `crate::bench`).

use super::print_json;
use crate::bench::baseline::Baselines;
use crate::bench::report::{self, ConfigResult, Results};
use crate::bench::stores::{parse_configs, step_time, BenchStore};
use crate::bench::{parse_size, plot, workload};
use crate::cli::{BenchArgs, Global};
use crate::output;
use crate::timearg::parse_time;
use anyhow::{anyhow, bail, Context, Result};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// Below this a database is a handful of pages and the workloads mean nothing.
const MIN_SIZE: u64 = 256 << 10;

pub fn run(g: &Global, a: &BenchArgs) -> Result<ExitCode> {
    let started = Instant::now();
    // Every argument and input file is checked before any work starts.
    let configs = parse_configs(&a.configs)?;
    let t0 = parse_time(&a.time)?;
    if a.steps == 0 {
        bail!("--steps must be at least 1");
    }
    let size = match &a.db {
        Some(_) => None,
        None => Some(parse_size(&a.size)?),
    };
    if size.is_some_and(|s| s < MIN_SIZE) {
        bail!(
            "--size {}: too small, use at least {}",
            a.size,
            output::bytes(MIN_SIZE)
        );
    }
    let replay = match (&a.db, &a.sql) {
        (Some(db), Some(sql)) => {
            if !db.is_file() {
                bail!("{}: no such database file", db.display());
            }
            let text = std::fs::read_to_string(sql)
                .with_context(|| format!("{}: cannot read the SQL script", sql.display()))?;
            Some((db.as_path(), sql.as_path(), text))
        }
        _ => None,
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
    let db_path = work.path().join("bench.db");
    let progress = Progress(std::io::stderr().is_terminal());

    let build_started = Instant::now();
    let mut opened = match &replay {
        Some((db, sql, text)) => workload::replay(db, sql, text.clone(), &db_path)?,
        None => {
            let size = size.expect("checked above");
            progress.say(format_args!(
                "building the {:?} database ({})...",
                a.workload,
                output::bytes(size)
            ));
            workload::build(a.workload, &db_path, size, a.seed)?
        }
    };
    let build = build_started.elapsed();
    let mut stores = configs
        .iter()
        .map(|c| BenchStore::create(&work.path().join("stores").join(c.key()), *c))
        .collect::<Result<Vec<_>>>()?;
    let mut baselines = Baselines::new(work.path().join("copy.db"))?;

    let mut observations = Vec::with_capacity(a.steps as usize + 1);
    let mut step_wall = Vec::with_capacity(a.steps as usize + 1);
    for step in 0..=a.steps {
        let t = Instant::now();
        if step > 0 {
            opened.workload.step(&opened.conn, step)?;
        }
        let work_secs = t.elapsed().as_secs_f64();
        let obs = baselines.observe(&db_path)?;
        let mut backup_secs = 0.0;
        for s in &mut stores {
            let rec = s.backup(&db_path, step_time(t0, step))?;
            backup_secs += rec.duration.as_secs_f64();
            if rec.image_hash != obs.image_hash {
                bail!(
                    "configuration {}: step {step}: the captured image differs from the \
                     backup-API copy",
                    s.config.key()
                );
            }
        }
        progress.say(format_args!(
            "step {step}/{}: {} pages changed, work {work_secs:.1} s, backups {backup_secs:.1} s, \
             {:.0} s so far",
            a.steps,
            obs.pages_changed,
            started.elapsed().as_secs_f64()
        ));
        observations.push(obs);
        step_wall.push(t.elapsed());
    }
    let hashes: Vec<[u8; 32]> = observations.iter().map(|o| o.image_hash).collect();
    let verified = if a.verify {
        progress.say(format_args!("verifying every snapshot..."));
        let mut n = 0;
        for s in &stores {
            n += s.verify(t0, &hashes)?;
        }
        Some(n)
    } else {
        None
    };

    let (name, description) = (opened.workload.name(), opened.workload.describe());
    // Closing the database checkpoints and removes its WAL before the directory
    // is kept or deleted.
    drop(opened);
    let configs = stores
        .into_iter()
        .map(|s| {
            Ok(ConfigResult {
                stored: s.stored()?,
                config: s.config,
                records: s.records,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let results = Results {
        workload: name.to_string(),
        description,
        seed: a.seed,
        size,
        db: a.db.clone(),
        sql: a.sql.clone(),
        steps: a.steps,
        t0,
        observations,
        configs,
        verified,
        build,
        step_wall,
        elapsed: started.elapsed(),
    };
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

/// Progress lines on stderr, only for a person watching a terminal.
struct Progress(bool);

impl Progress {
    fn say(&self, msg: std::fmt::Arguments) {
        if self.0 {
            eprintln!("{msg}");
        }
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

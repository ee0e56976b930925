//! One run: the database worked on for `steps` steps, snapshotted after each into one
//! store per configuration, every image checked against the backup-API copy.

use crate::baseline::Baselines;
use crate::format;
use crate::report::{ConfigResult, Results};
use crate::stores::{step_time, BenchStore, Config};
use crate::workload::{self, Kind};
use anyhow::{bail, Result};
use chrono::{DateTime, Utc};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What a run does, its arguments already checked.
pub struct Plan {
    /// The database worked on.
    pub source: Source,
    /// Seed of the workload's pseudo-random data (reported for replays too).
    pub seed: u64,
    /// The store configurations, one store each.
    pub configs: Vec<Config>,
    /// Time of the first snapshot; step `n` is `n × 10` minutes later.
    pub t0: DateTime<Utc>,
    /// Steps after the initial snapshot (at least 1).
    pub steps: u32,
    /// At the end, restore every snapshot of every configuration and check its hash.
    pub verify: bool,
}

/// Where the database comes from.
pub enum Source {
    /// A built-in workload's database of about `size` bytes.
    Workload { kind: Kind, size: u64 },
    /// A copy of the user's database `db` (never modified), `script` (the text of the
    /// file `sql`) executed once per step.
    Replay {
        db: PathBuf,
        sql: PathBuf,
        script: String,
    },
}

/// Runs `plan` in the directory `work` (the database as `bench.db`, the stores under
/// `stores/`, the baselines' scratch copy), saying how it goes through `progress`.
pub fn run(plan: &Plan, work: &Path, progress: &dyn Fn(std::fmt::Arguments)) -> Result<Results> {
    let started = Instant::now();
    let db_path = work.join("bench.db");
    let build_started = Instant::now();
    let mut opened = match &plan.source {
        Source::Replay { db, sql, script } => workload::replay(db, sql, script.clone(), &db_path)?,
        Source::Workload { kind, size } => {
            progress(format_args!(
                "building the {kind:?} database ({})...",
                format::bytes(*size)
            ));
            workload::build(*kind, &db_path, *size, plan.seed)?
        }
    };
    let build = build_started.elapsed();
    let mut stores = plan
        .configs
        .iter()
        .map(|c| BenchStore::create(&work.join("stores").join(c.key()), *c))
        .collect::<Result<Vec<_>>>()?;
    // The stores are throwaway: their cache folders (head hints, derived index)
    // go with them, however the run ends.
    let _caches = DropCaches(stores.iter().map(|s| s.store.config().store_id).collect());
    let mut baselines = Baselines::new(work.join("copy.db"))?;

    let steps = plan.steps;
    let mut observations = Vec::with_capacity(steps as usize + 1);
    let mut step_wall = Vec::with_capacity(steps as usize + 1);
    for step in 0..=steps {
        let t = Instant::now();
        if step > 0 {
            opened.workload.step(&opened.conn, step)?;
        }
        let work_secs = t.elapsed().as_secs_f64();
        let obs = baselines.observe(&db_path)?;
        let mut backup_secs = 0.0;
        for s in &mut stores {
            let rec = s.backup(&db_path, step_time(plan.t0, step))?;
            backup_secs += rec.duration.as_secs_f64();
            if rec.image_hash != obs.image_hash {
                bail!(
                    "configuration {}: step {step}: the captured image differs from the \
                     backup-API copy",
                    s.config.key()
                );
            }
        }
        progress(format_args!(
            "step {step}/{steps}: {} pages changed, work {work_secs:.1} s, backups {backup_secs:.1} s, \
             {:.0} s so far",
            obs.pages_changed,
            started.elapsed().as_secs_f64()
        ));
        observations.push(obs);
        step_wall.push(t.elapsed());
    }
    let hashes: Vec<[u8; 32]> = observations.iter().map(|o| o.image_hash).collect();
    let verified = if plan.verify {
        progress(format_args!("verifying every snapshot..."));
        let mut n = 0;
        for s in &stores {
            n += s.verify(plan.t0, &hashes)?;
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
    let (size, db, sql) = match &plan.source {
        Source::Workload { size, .. } => (Some(*size), None, None),
        Source::Replay { db, sql, .. } => (None, Some(db.clone()), Some(sql.clone())),
    };
    Ok(Results {
        workload: name.to_string(),
        description,
        seed: plan.seed,
        size,
        db,
        sql,
        steps,
        t0: plan.t0,
        observations,
        configs,
        verified,
        build,
        step_wall,
        elapsed: started.elapsed(),
    })
}

/// Removes the machine's cache folders of the run's stores when dropped (best
/// effort: a folder left behind is removed by the cache cleanup once its store is
/// gone).
struct DropCaches(Vec<pagesnap_core::Id>);

impl Drop for DropCaches {
    fn drop(&mut self) {
        let Some(root) = pagesnap_core::cache_root() else {
            return;
        };
        for id in &self.0 {
            let _ = pagesnap_core::cache_dirs::remove_store_cache(&root, id);
        }
    }
}

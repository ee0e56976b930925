//! Command-line syntax (clap derive).

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "pagesnap",
    version,
    about = "Deduplicating, page-level snapshots of live SQLite databases",
    long_about = "pagesnap takes consistent snapshots of live SQLite databases through SQLite's online \
backup API, stores each changed page once (blake3-addressed, zstd-compressed), and restores any \
snapshot byte-exactly.",
    after_help = "Examples:
  pagesnap --store /var/backups/ps init
  pagesnap --store /var/backups/ps backup /srv/app.db --tag hourly
  pagesnap --store /var/backups/ps snapshots
  pagesnap --store /var/backups/ps restore latest -o /tmp/app.db
  pagesnap --store /var/backups/ps restore --at '2026-01-01 00:10:00' -o /tmp/app.db

The store is --store, else $PAGESNAP_STORE, else $XDG_DATA_HOME/pagesnap/store
(~/.local/share/pagesnap/store)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug)]
pub struct Global {
    /// Store directory.
    #[arg(long, global = true, env = "PAGESNAP_STORE", value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// Print one JSON document on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a new store.
    #[command(after_help = "Examples:
  pagesnap --store /var/backups/ps init
  pagesnap --store /var/backups/ps init --chunk-pages 4 --compression-level 6")]
    Init(InitArgs),
    /// Take a snapshot of a database.
    #[command(after_help = "Examples:
  pagesnap backup /srv/app.db
  pagesnap backup /srv/app.db --name app --tag nightly --tag pre-upgrade
  pagesnap backup import.db --time '2026-01-01T00:10:00Z'")]
    Backup(BackupArgs),
    /// List snapshots.
    #[command(after_help = "Examples:
  pagesnap snapshots
  pagesnap snapshots --name app --json")]
    Snapshots(SnapshotsArgs),
    /// Restore a snapshot to a file (or stdout), byte-exactly.
    #[command(after_help = "Examples:
  pagesnap restore latest -o app.db
  pagesnap restore 1a2b3c4d -o app.db --force
  pagesnap restore --name app --at '2026-01-01 00:10:00' -o app.db
  pagesnap restore latest -o - | sqlite3 /dev/stdin .tables")]
    Restore(RestoreArgs),
    /// Show what the store holds and what snapshots cost.
    #[command(after_help = "Examples:
  pagesnap stats
  pagesnap stats --name app --json
  pagesnap stats --plot growth.svg")]
    Stats(StatsArgs),
    /// Simulate a workload and report what its snapshots cost in several store configurations.
    #[command(after_help = "Examples:
  pagesnap bench --workload oltp --size 64MiB --steps 144
  pagesnap bench --workload kv --size 16MiB --steps 24 --configs 1,4,1:3:nodict --json
  pagesnap bench --db app.db --sql changes.sql --steps 48 --plot cost.svg --verify

Every step is 10 minutes of work followed by one snapshot in every configuration.
Configurations are CHUNK_PAGES[:ZSTD_LEVEL][:nodict] (zstd level 3 and dictionaries
on, the store's defaults, unless given).
Nothing is written outside a temporary directory unless --keep or --plot is given.")]
    Bench(BenchArgs),
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Pages per chunk (a power of two up to 256). 1 stores scattered changes most compactly.
    #[arg(long, default_value_t = 1)]
    pub chunk_pages: u32,
    /// zstd compression level for chunks (1-22).
    #[arg(long, default_value_t = 3)]
    pub compression_level: i32,
    /// Target pack size in MiB.
    #[arg(long, default_value_t = 16, value_name = "MIB")]
    pub pack_size: u32,
    /// Do not train zstd dictionaries on the databases' pages (they make per-page
    /// compression nearly as good as compressing the whole file).
    #[arg(long)]
    pub no_dictionary: bool,
}

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// The SQLite database file to snapshot.
    pub database: PathBuf,
    /// Database name recorded in the snapshot (default: the file name without extension).
    #[arg(long)]
    pub name: Option<String>,
    /// Tag to record (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Time to record instead of now: RFC 3339 or "YYYY-MM-DD HH:MM:SS" (UTC).
    #[arg(long, value_name = "TIME")]
    pub time: Option<String>,
    /// How long to wait for a lock held by another process (e.g. 5s, 500ms, 1m).
    #[arg(long, default_value = "5s", value_name = "DURATION")]
    pub busy_timeout: String,
}

#[derive(Args, Debug)]
pub struct SnapshotsArgs {
    /// Only snapshots of this database.
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Snapshot id (or unique prefix), or `latest` (the default).
    pub snapshot: Option<String>,
    /// Database name, to choose among several databases in one store.
    #[arg(long)]
    pub name: Option<String>,
    /// Restore the newest snapshot at or before this time (RFC 3339 or "YYYY-MM-DD HH:MM:SS", UTC).
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Output file, or `-` for stdout.
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    pub output: PathBuf,
    /// Replace an existing output file.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Only snapshots of this database (stored bytes are always the whole store's).
    #[arg(long)]
    pub name: Option<String>,
    /// Also draw cumulative stored and logical bytes per snapshot into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<std::path::PathBuf>,
}

/// Built-in synthetic workloads of `pagesnap bench`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchWorkload {
    /// Orders and order items with secondary indexes, updates skewed to a hot set.
    Oltp,
    /// A time-ordered log; the oldest rows are deleted every hour.
    Append,
    /// Random overwrites of blobs in a key/value table.
    Kv,
    /// oltp with a VACUUM every 24 steps (4 hours).
    Vacuum,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Built-in workload to simulate.
    #[arg(long, value_enum, default_value_t = BenchWorkload::Oltp)]
    pub workload: BenchWorkload,
    /// Size of the initial database: bytes, or with a unit (4MiB, 256MiB, 1GiB, 500MB).
    #[arg(long, default_value = "256MiB")]
    pub size: String,
    /// Number of steps; each is 10 minutes of work and then one snapshot (144 = a day).
    #[arg(long, default_value_t = 144)]
    pub steps: u32,
    /// Seed of the workload's pseudo-random data (same seed, same databases).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Replay instead: work on a copy of this database (it is never modified)...
    #[arg(long, value_name = "FILE", requires = "sql", conflicts_with_all = ["workload", "size"])]
    pub db: Option<std::path::PathBuf>,
    /// ...executing this SQL script once per step.
    #[arg(long, value_name = "FILE", requires = "db")]
    pub sql: Option<std::path::PathBuf>,
    /// Store configurations, comma-separated: CHUNK_PAGES[:ZSTD_LEVEL][:nodict].
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,2,4,16,1:1,1:9,1:3:nodict",
        value_name = "LIST"
    )]
    pub configs: Vec<String>,
    /// Time of the first snapshot (RFC 3339 or "YYYY-MM-DD HH:MM:SS", UTC).
    #[arg(long, default_value = "2026-01-01T00:00:00Z", value_name = "TIME")]
    pub time: String,
    /// Also draw cumulative stored bytes per step into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<std::path::PathBuf>,
    /// At the end, restore every snapshot of every configuration and check its hash.
    #[arg(long)]
    pub verify: bool,
    /// Keep the database and the stores in this new directory instead of deleting them.
    #[arg(long, value_name = "DIR")]
    pub keep: Option<std::path::PathBuf>,
}

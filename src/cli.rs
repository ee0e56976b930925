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
(~/.local/share/pagesnap/store).

Exit status: 0 done, 1 failed, 2 usage (syntax, or a value that cannot be used),
3 damage (verify, repair, restore --salvage), 4 status: the watcher needs attention,
10 the store does not exist, 11 the store is locked. With --json an error is one
JSON line on stderr: {\"message_type\":\"exit_error\",\"code\":N,\"message\":\"…\"}."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug)]
pub struct Global {
    /// Store directory, or an S3 bucket and prefix: s3://BUCKET/PREFIX (credentials,
    /// region and endpoint from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION,
    /// AWS_ENDPOINT_URL).
    #[arg(long, global = true, env = "PAGESNAP_STORE", value_name = "DIR|URL")]
    pub store: Option<PathBuf>,
    /// Print one JSON document on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Show progress bars (on stderr) even when stdout is not a terminal or with --json.
    #[arg(long, global = true)]
    pub progress: bool,
    /// Do not use the local cache of a remote store's metadata (manifests, page
    /// maps, index): read everything from the store.
    #[arg(long, global = true, env = "PAGESNAP_NO_CACHE")]
    pub no_cache: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a new store.
    #[command(after_help = "Examples:
  pagesnap --store /var/backups/ps init
  pagesnap --store /var/backups/ps init --chunk-pages 4 --compression-level 6
  PAGESNAP_PASSWORD_FILE=/etc/pagesnap/pass pagesnap --store s3://bucket/ps init --encrypt")]
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
  pagesnap restore latest -o - | sqlite3 /dev/stdin .tables
  pagesnap restore 1a2b3c4d --salvage -o damaged.db   # zeros for what cannot be read

Exit status: 0 restored; 3 (--salvage only) restored with lost pages, listed;
1 failed (no output file is left).")]
    Restore(RestoreArgs),
    /// Run SQL on a snapshot in place, without restoring it.
    #[command(after_help = "Examples:
  pagesnap sql latest 'SELECT count(*) FROM orders'
  pagesnap sql --name app --at '2026-01-01 00:10:00' latest 'SELECT * FROM users WHERE id = 42'
  pagesnap sql 1a2b3c4d --csv < report.sql > report.csv
  pagesnap --json sql latest 'SELECT id, email FROM users LIMIT 10'

The snapshot is opened read-only through pagesnap's SQLite VFS: pages are read from
the store as SQLite asks for them (each checked against its id), so a lookup reads a
few pages of a database of any size, on a local store as on S3. The snapshot used is
named on stderr. SQL comes from the argument, else stdin; each statement's rows are
printed. SQLite's errors are printed as it gives them (exit 1); a damaged chunk fails
the query with an error naming it (never rows read from it).")]
    Sql(SqlArgs),
    /// List the tables and indexes of a snapshot: rows, pages and bytes.
    #[command(after_help = "Examples:
  pagesnap ls latest
  pagesnap ls --name app --at '2026-01-01 00:10:00' latest --json

Counts are exact (SQLite's dbstat, run on the snapshot in place): listing reads every
page of the snapshot once, as a restore would, but writes nothing.")]
    Ls(LsArgs),
    /// What changed between two snapshots, per table and index; `--rows` lists the rows.
    #[command(after_help = "Examples:
  pagesnap diff 1a2b3c4d latest
  pagesnap diff --name app 1a2b3c4d 5e6f7a8b --json
  pagesnap diff 1a2b3c4d latest --rows orders

Pages are compared through the snapshots' page maps (no page is read for that); which
table or index owns a page is found from the b-trees' interior pages. CHANGED pages
kept their owner and changed; ADDED pages are the object's in B and were not in A
(new, or reused from the free list or another object); FREED pages were the object's
in A and are not in B. STORED is what B's new chunks cost the store. --rows TABLE
compares one table row by row (by rowid, or primary key of a WITHOUT ROWID table)
with both snapshots attached in place.")]
    Diff(DiffArgs),
    /// Show what the store holds and what snapshots cost.
    #[command(after_help = "Examples:
  pagesnap stats
  pagesnap stats --name app --json
  pagesnap stats --plot growth.svg")]
    Stats(StatsArgs),
    /// Simulate a workload and report what its snapshots cost in several store configurations.
    #[command(after_help = "Examples:
  pagesnap bench                                   # quick: about a minute
  pagesnap bench --full                            # docs/BENCHMARKS.md: 15-20 minutes
  pagesnap bench --workload oltp --size 64MiB --steps 144
  pagesnap bench --workload kv --size 16MiB --steps 24 --configs 1,4,1:3:nodict --json
  pagesnap bench --db app.db --sql changes.sql --steps 48 --plot cost.svg --verify

Every step is 10 minutes of work followed by one snapshot in every configuration.
Configurations are CHUNK_PAGES[:ZSTD_LEVEL][:nodict] (zstd level 3 and dictionaries
on, the store's defaults, unless given).
Nothing is written outside a temporary directory unless --keep or --plot is given.")]
    Bench(BenchArgs),
    /// Remove snapshots: those a retention policy does not keep, or the ones named.
    #[command(after_help = "Examples:
  pagesnap forget --keep-last 6 --keep-hourly 24 --keep-daily 7 --dry-run
  pagesnap forget --keep-within 36h --keep-daily 30 --keep-monthly 12
  pagesnap forget                      # apply the policy saved with `policy set`
  pagesnap forget 1a2b3c4d             # one snapshot by id
Forget removes snapshots; `prune` then frees the space only they used.")]
    Forget(ForgetArgs),
    /// Delete the data no remaining snapshot needs.
    #[command(after_help = "Examples:
  pagesnap prune --dry-run
  pagesnap prune --max-unused 5%")]
    Prune(PruneArgs),
    /// forget + prune in one go, with the given or the saved policy.
    #[command(after_help = "Examples:
  pagesnap gc                          # saved policy
  pagesnap gc --keep-last 144 --keep-daily 30 --dry-run")]
    Gc(GcArgs),
    /// Copy snapshots to another store, storing only the chunks it lacks.
    #[command(after_help = "Examples:
  pagesnap --store /var/backups/ps copy --to s3://bucket/ps     # everything not copied yet
  pagesnap copy --from /var/backups/ps --to s3://bucket/ps --name app
  pagesnap --store s3://bucket/ps copy --from /var/backups/ps latest

--from and --to each default to the store (--store, $PAGESNAP_STORE, or the default
store); give at least one of them. A snapshot the destination already holds (same
database name, time and image hash) is skipped, so an interrupted copy is resumed
by running it again. Both stores must have the same --chunk-pages.
Exit status: 0 every selected snapshot is in the destination, 1 otherwise.")]
    Copy(CopyArgs),
    /// Save or show the store's retention policy.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Manage an encrypted store's keys: list, add (read or write-only), remove, passwd.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Check that the store is sound and its snapshots restore (exit 3 if damage is found).
    #[command(after_help = "Examples:
  pagesnap verify                          # structure: every object decodes, every chunk is located
  pagesnap verify --read-data              # also decode every chunk and check every image hash
  pagesnap verify --read-data-subset 2/7   # read one seventh of the packs (a different part each day)
  pagesnap verify --read-data-subset 10%   # read a random tenth of the packs
  pagesnap verify latest --restore-check   # restore the newest snapshot and run PRAGMA integrity_check

Exit status: 0 the store is healthy, 3 damage was found (each problem names the
object and the snapshots it affects), 1 the check could not run.")]
    Verify(VerifyArgs),
    /// Repair a damaged store: rebuild the index from the packs, forget broken snapshots.
    #[command(subcommand)]
    Repair(RepairCommand),
    /// Upgrade a store: turn on deltas (changed pages stored against their previous version).
    #[command(after_help = "Examples:
  pagesnap upgrade --deltas    # from the next backup on; chunks already stored stay as they are

The store's config is rewritten (format version 2) under the exclusive lock: pagesnap builds
without deltas no longer open the store afterwards, so upgrade every machine that uses it
(a watcher, a restore host) first. Running it again changes nothing.")]
    Upgrade(UpgradeArgs),
    /// Remove stale locks (left by killed processes).
    #[command(after_help = "Examples:
  pagesnap unlock          # stale locks only
  pagesnap unlock --all    # every lock: only when no pagesnap uses the store")]
    Unlock(UnlockArgs),
    /// Run as a daemon: snapshot databases on a schedule, apply retention, prune.
    #[command(after_help = "Examples:
  pagesnap watch --config /etc/pagesnap/watch.toml
  pagesnap watch /srv/app.db /srv/jobs.db --every 10min --jitter 30s
  pagesnap watch /srv/app.db --every 1min --on-failure 'mail -s \"pagesnap: $PAGESNAP_DB_NAME\" ops'
  pagesnap watch --config /etc/pagesnap/watch.toml --check-config   # validate, print a summary
  pagesnap watch --config /etc/pagesnap/watch.toml --dry-run        # say what one round would do
  pagesnap watch --config /etc/pagesnap/watch.toml --once           # one round, for cron

Runs until SIGINT or SIGTERM (a snapshot in progress gets stop_timeout, 60s by
default, to finish; exit 0). A run not done after --capture-timeout is abandoned.
SIGHUP reloads the config file. Logs go to stderr; `pagesnap status` shows the
state. Exit status: 0 after a signal, 1 when the config or the store cannot be
used (nothing is started), 2 for command-line syntax errors and refused values,
10 when the store does not exist. With --once: 0 when every run succeeded, 1 when
one failed. With --check-config: 0 good, 2 bad.")]
    Watch(WatchArgs),
    /// Show what `pagesnap watch` did: per database the last snapshot, last error, next run.
    #[command(after_help = "Examples:
  pagesnap status
  pagesnap status --config /etc/pagesnap/watch.toml
  pagesnap status --status-file /var/lib/pagesnap/status.json --json

  pagesnap status --max-age 2h     # also exit 4 when a database is not current for 2 hours

Exit status: 0 the watcher runs and every database's last attempt succeeded,
4 the watcher is not running, some database's last attempt failed, a run is
overdue (late by its interval, 1 min to 1 h) or stuck, or (--max-age) a
database's last snapshot or unchanged check is older than the limit, 1 no
status could be read.")]
    Status(StatusArgs),
    /// Change the tags of snapshots (each gets a new id: its manifest is replaced).
    #[command(after_help = "Examples:
  pagesnap tag 1a2b3c4d --add keep --add pre-upgrade
  pagesnap tag 1a2b3c4d 5e6f7a8b --remove hourly
  pagesnap tag latest --name app --set release-1.4
  pagesnap tag 1a2b3c4d --set ''        # remove every tag

A snapshot's id is the hash of its manifest, so a snapshot whose tags change
gets a new id (printed); its contents, time and restores are unchanged.
Exit status: 0 done, 1 failed (an unknown snapshot: nothing was changed),
2 for command-line syntax errors (e.g. --set with --add).")]
    Tag(TagArgs),
    /// Print a shell completion script on stdout.
    #[command(after_help = "Examples:
  pagesnap completions bash > ~/.local/share/bash-completion/completions/pagesnap
  pagesnap completions zsh > ~/.zfunc/_pagesnap      # a folder on $fpath
  pagesnap completions fish > ~/.config/fish/completions/pagesnap.fish")]
    Completions(CompletionsArgs),
    /// Write man pages (pagesnap.1 and one per subcommand) into a directory.
    #[command(after_help = "Examples:
  pagesnap man /usr/local/share/man/man1
  pagesnap man ./man && man ./man/pagesnap-backup.1")]
    Man(ManArgs),
    /// List this machine's cache folders, or remove those of stores that are gone.
    #[command(after_help = "Examples:
  pagesnap cache                 # each folder: size, store, last use
  pagesnap cache --cleanup       # remove the caches of deleted stores
  pagesnap cache --cleanup --dry-run --json

The cache is $PAGESNAP_CACHE_DIR, else $XDG_CACHE_HOME/pagesnap, else ~/.cache/pagesnap.
--cleanup removes the cache of a local store whose directory (or config) is gone or
now holds another store, and any cache not used for 30 days (S3 stores' caches are
only removed that way: telling whether a bucket still holds the store would need the
network).")]
    Cache(CacheArgs),
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("change").args(["set", "add", "remove"]).multiple(true).required(true)))]
pub struct TagArgs {
    /// Snapshots to retag (ids, unique prefixes or `latest`).
    #[arg(value_name = "SNAPSHOT", required = true)]
    pub snapshots: Vec<String>,
    /// Only snapshots of this database (`latest`: its newest).
    #[arg(long)]
    pub name: Option<String>,
    /// Replace the tags with these (repeatable; `--set ''` removes them all).
    #[arg(long, value_name = "TAG", conflicts_with_all = ["add", "remove"])]
    pub set: Vec<String>,
    /// Add this tag (repeatable).
    #[arg(long, value_name = "TAG")]
    pub add: Vec<String>,
    /// Remove this tag (repeatable).
    #[arg(long, value_name = "TAG")]
    pub remove: Vec<String>,
}

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Directory to write the pages into (must exist).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct CacheArgs {
    /// Remove the caches of stores that no longer exist and caches unused for 30 days.
    #[arg(long)]
    pub cleanup: bool,
    /// With --cleanup: say what would be removed, remove nothing.
    #[arg(long, requires = "cleanup")]
    pub dry_run: bool,
}

/// Log output of `pagesnap watch`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per line (for log collectors).
    Json,
}

/// What `pagesnap watch` checks on the captured image of a database.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntegrityCheck {
    /// No check.
    #[default]
    Off,
    /// PRAGMA quick_check (no index cross-checks: faster).
    Quick,
    /// PRAGMA integrity_check.
    Full,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Databases to watch (or give them in --config).
    #[arg(value_name = "DB", required_unless_present = "config")]
    pub databases: Vec<PathBuf>,
    /// TOML config file naming the databases and their schedules and policies.
    #[arg(long, value_name = "FILE", conflicts_with = "databases")]
    pub config: Option<PathBuf>,
    /// Interval between snapshots, aligned to wall-clock multiples (e.g. 10min, 1h, 30s).
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "10min",
        conflicts_with = "config"
    )]
    pub every: String,
    /// Delay each database's runs by a fixed offset in 0..DURATION chosen from its name.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "0s",
        conflicts_with = "config"
    )]
    pub jitter: String,
    /// Tag to record on every snapshot (repeatable).
    #[arg(long = "tag", value_name = "TAG", conflicts_with = "config")]
    pub tags: Vec<String>,
    /// Command run by `sh -c` when a database's run fails (env: PAGESNAP_DB_NAME,
    /// PAGESNAP_DB_PATH, PAGESNAP_ERROR, PAGESNAP_EVENT, PAGESNAP_FAILURES).
    #[arg(long, value_name = "CMD", conflicts_with = "config")]
    pub on_failure: Option<String>,
    /// When to prune: daily, hourly, weekly, never, or an interval (e.g. 12h).
    #[arg(
        long,
        value_name = "SCHEDULE",
        default_value = "daily",
        conflicts_with = "config"
    )]
    pub prune: String,
    /// Check the captured image of every snapshot.
    #[arg(long, value_enum, default_value_t = IntegrityCheck::Off, conflicts_with = "config")]
    pub integrity_check: IntegrityCheck,
    /// Abandon a run (reported as failed) that has not committed its snapshot
    /// after DURATION: a capture stuck on a hung mount stalls nothing else.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "1h",
        conflicts_with = "config"
    )]
    pub capture_timeout: String,
    /// Status file (JSON) to keep up to date (default: in $XDG_STATE_HOME/pagesnap).
    #[arg(long, value_name = "FILE")]
    pub status_file: Option<PathBuf>,
    /// Log format on stderr (default: human, or json with --json).
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Serve Prometheus metrics on http://ADDR/metrics (e.g. 127.0.0.1:9478;
    /// port 0: a free port, logged at start).
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_listen: Option<String>,
    /// Command run by `sh -c` after a run that took a snapshot without failing
    /// (the same environment as --on-failure).
    #[arg(long, value_name = "CMD", conflicts_with = "config")]
    pub on_success: Option<String>,
    /// Say what one round would do (snapshot, retention, prune) and change nothing.
    #[arg(long, conflicts_with_all = ["once", "check_config"])]
    pub dry_run: bool,
    /// Run every database once (and prune if due), then exit: 0 if all succeeded, 1 if not.
    #[arg(long, conflicts_with = "check_config")]
    pub once: bool,
    /// Check the configuration (and that its store and databases exist), print a
    /// summary and exit: 0 when it is good, 2 when not.
    #[arg(long)]
    pub check_config: bool,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The status file `pagesnap watch` writes.
    #[arg(long, value_name = "FILE")]
    pub status_file: Option<PathBuf>,
    /// Find the status file (and store) through this `pagesnap watch` config file.
    #[arg(long, value_name = "FILE", conflicts_with = "status_file")]
    pub config: Option<PathBuf>,
    /// Also exit 4 when a database has not been snapshotted (or found unchanged)
    /// for longer than DURATION (e.g. 30min, 2h, 1d), whatever its last result.
    #[arg(long, value_name = "DURATION")]
    pub max_age: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Save a retention policy in the store (used by `gc` and `forget` without flags).
    #[command(after_help = "Examples:
  pagesnap policy set --keep-last 6 --keep-hourly 24 --keep-daily 7 --keep-monthly 12")]
    Set(Box<PolicyArgs>),
    /// Show the saved retention policy.
    Show,
    /// Remove the saved retention policy.
    Clear,
}

/// Retention rules (restic semantics; see the README for the exact meaning).
#[derive(Args, Debug, Default, Clone)]
pub struct PolicyArgs {
    /// Keep the N newest snapshots (N or `unlimited`).
    #[arg(long, value_name = "N")]
    pub keep_last: Option<String>,
    /// Keep every snapshot taken within DURATION before the newest (e.g. 36h, 7d, 1y6mo;
    /// `mo` is months, `min` minutes, a bare `m` is refused as ambiguous).
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<String>,
    /// Keep the newest snapshot of each of the last N minutes that have snapshots.
    #[arg(long, value_name = "N")]
    pub keep_minutely: Option<String>,
    /// ... of each of the last N hours.
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<String>,
    /// ... of each of the last N days.
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<String>,
    /// ... of each of the last N ISO weeks.
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<String>,
    /// ... of each of the last N months.
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<String>,
    /// ... of each of the last N years.
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<String>,
    /// Keep the newest snapshot of every minute within DURATION before the newest.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_minutely: Option<String>,
    /// ... of every hour within DURATION.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_hourly: Option<String>,
    /// ... of every day within DURATION.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_daily: Option<String>,
    /// ... of every week within DURATION.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_weekly: Option<String>,
    /// ... of every month within DURATION.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_monthly: Option<String>,
    /// ... of every year within DURATION.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_yearly: Option<String>,
    /// Keep every snapshot with this tag (repeatable).
    #[arg(long = "keep-tag", value_name = "TAG")]
    pub keep_tags: Vec<String>,
    /// Cut hours, days, weeks... in the local time zone instead of UTC.
    #[arg(long)]
    pub local_time: bool,
}

#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// Snapshots to forget (ids or unique prefixes); without them the policy decides.
    pub snapshots: Vec<String>,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Only snapshots of this database.
    #[arg(long)]
    pub name: Option<String>,
    /// Show what would be removed and why; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Allow removing the last snapshot of a database (only with snapshot ids).
    #[arg(long)]
    pub allow_empty: bool,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("stores").args(["from", "to"]).multiple(true).required(true)))]
pub struct CopyArgs {
    /// Snapshots to copy (ids, unique prefixes or `latest`); default: all (of --name).
    #[arg(value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
    /// Store to copy from: a directory or s3://BUCKET/PREFIX (default: the store).
    #[arg(long, value_name = "DIR|URL")]
    pub from: Option<PathBuf>,
    /// Store to copy to: a directory or s3://BUCKET/PREFIX (default: the store).
    #[arg(long, value_name = "DIR|URL")]
    pub to: Option<PathBuf>,
    /// Only snapshots of this database.
    #[arg(long)]
    pub name: Option<String>,
    /// How long to wait for a running `prune` or `gc` (which locks a store) to finish.
    #[arg(long, default_value = "10min", value_name = "DURATION")]
    pub lock_wait: String,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Show what would be deleted and freed; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Rewrite packs in which more than this share of bytes is unused (e.g. 10%, 0, 100%).
    #[arg(long, default_value = "10%", value_name = "PERCENT")]
    pub max_unused: String,
}

#[derive(Args, Debug)]
pub struct GcArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Only snapshots of this database.
    #[arg(long)]
    pub name: Option<String>,
    /// Show what would happen; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Rewrite packs in which more than this share of bytes is unused.
    #[arg(long, default_value = "10%", value_name = "PERCENT")]
    pub max_unused: String,
}

#[derive(Args, Debug)]
pub struct UpgradeArgs {
    /// Store changed pages as deltas against their previous version from the next backup on.
    #[arg(long, required = true)]
    pub deltas: bool,
    /// How long to wait for other commands to release the store.
    #[arg(long, default_value = "10min", value_name = "DURATION")]
    pub lock_wait: String,
}

#[derive(Args, Debug)]
pub struct UnlockArgs {
    /// Remove every lock, not only stale ones (only when nothing uses the store).
    #[arg(long)]
    pub all: bool,
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
    /// Store changed pages as deltas against their previous version (much smaller
    /// snapshots of update-heavy databases; needs a pagesnap with deltas to read).
    #[arg(long)]
    pub deltas: bool,
    /// Encrypt every object of the store (AES-256-GCM; docs/ENCRYPTION.md). The
    /// passphrase comes from PAGESNAP_PASSWORD_FILE, PAGESNAP_PASSWORD_COMMAND,
    /// PAGESNAP_PASSWORD or the terminal; losing it loses the store.
    #[arg(long)]
    pub encrypt: bool,
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// List the store's keys.
    List,
    /// Add a key (a new passphrase that opens the store).
    #[command(after_help = "Examples:
  pagesnap key add                                   # asks for the new passphrase twice
  pagesnap key add --new-password-file /etc/pagesnap/backup-host.pass --write-only

A write-only key takes snapshots (backup, watch) but cannot read their pages
(restore, verify --read-data) nor delete anything (forget, prune, key remove).")]
    Add(KeyAddArgs),
    /// Remove a key (never the one in use, never the last that can read).
    Remove(KeyRemoveArgs),
    /// Change the passphrase of the key in use (a new key replaces it).
    Passwd(KeyPasswdArgs),
}

#[derive(Args, Debug)]
pub struct KeyAddArgs {
    /// Read the new passphrase from this file (its first line) instead of the terminal.
    #[arg(long, value_name = "FILE")]
    pub new_password_file: Option<PathBuf>,
    /// The new key can back up but not read snapshots' pages or delete anything.
    #[arg(long)]
    pub write_only: bool,
}

#[derive(Args, Debug)]
pub struct KeyRemoveArgs {
    /// The key's id (or a unique prefix), as `pagesnap key list` shows it.
    pub id: String,
}

#[derive(Args, Debug)]
pub struct KeyPasswdArgs {
    /// Read the new passphrase from this file (its first line) instead of the terminal.
    #[arg(long, value_name = "FILE")]
    pub new_password_file: Option<PathBuf>,
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
    /// How long to wait for a lock held by another process (e.g. 5s, 500ms, 1min).
    #[arg(long, default_value = "5s", value_name = "DURATION")]
    pub busy_timeout: String,
    /// How long to wait for a running `prune` or `gc` (which locks the store) to finish.
    #[arg(long, default_value = "10min", value_name = "DURATION")]
    pub lock_wait: String,
    /// Bound of this machine's base cache (S3 stores with deltas: the bases of
    /// deltas come from it, never from the store), e.g. 64MiB; 0 turns it off.
    /// Default: $PAGESNAP_BASE_CACHE, else 64MiB.
    #[arg(long, value_name = "SIZE")]
    pub base_cache: Option<String>,
    /// Hash every page with blake3 instead of taking the pages whose
    /// fingerprints match the previous snapshot's as unchanged (slower; see
    /// docs/SECURITY.md, "Fingerprints").
    #[arg(long)]
    pub paranoid: bool,
    /// Read every page of a WAL database, even where its WAL proves which
    /// pages changed since the previous snapshot (see docs/DESIGN.md,
    /// "WAL-guided capture"). A full read happens at least daily anyway.
    #[arg(long)]
    pub full_read: bool,
}

#[derive(Args, Debug)]
pub struct SnapshotsArgs {
    /// Only snapshots of this database.
    #[arg(long)]
    pub name: Option<String>,
    /// Only snapshots with these tags: `--tag a,b` those with both a and b;
    /// repeated, those matching any one `--tag`.
    #[arg(long = "tag", value_name = "TAG[,TAG...]")]
    pub tags: Vec<String>,
    /// Only snapshots taken on this host (repeatable: any of them).
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Only the newest N snapshots of each database (after the other filters).
    #[arg(long, value_name = "N")]
    pub latest: Option<usize>,
    /// Also show, per snapshot, the stored bytes only it holds (what forgetting it would free).
    #[arg(long)]
    pub unique_bytes: bool,
}

/// Which snapshot: an id, or `latest` with `--name` and `--at` (as `restore` has them).
#[derive(Args, Debug)]
pub struct SnapshotPick {
    /// Database name, to choose among several databases in one store.
    #[arg(long)]
    pub name: Option<String>,
    /// With `latest`: the newest snapshot at or before this time (RFC 3339 or
    /// "YYYY-MM-DD HH:MM:SS", UTC).
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
}

#[derive(Args, Debug)]
pub struct SqlArgs {
    /// Snapshot id (or unique prefix), or `latest`.
    pub snapshot: String,
    /// The SQL to run (one or more statements); read from stdin when absent.
    pub sql: Option<String>,
    #[command(flatten)]
    pub pick: SnapshotPick,
    /// Rows as CSV (RFC 4180, a header line first; blobs as hex).
    #[arg(long, conflicts_with = "json")]
    pub csv: bool,
    /// Memory for pages read from the store, besides SQLite's own page cache (e.g. 64MiB).
    #[arg(long, value_name = "SIZE", default_value = "8MiB")]
    pub cache: String,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Snapshot id (or unique prefix), or `latest`.
    pub snapshot: String,
    #[command(flatten)]
    pub pick: SnapshotPick,
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The older snapshot: id (or unique prefix), or `latest`.
    pub a: String,
    /// The newer snapshot: id (or unique prefix), or `latest`.
    pub b: String,
    #[command(flatten)]
    pub pick: SnapshotPick,
    /// List the rows of this table added, removed and changed (by rowid, or
    /// primary key of a WITHOUT ROWID table).
    #[arg(long, value_name = "TABLE")]
    pub rows: Option<String>,
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
    /// Do not wait for the restored file to reach the disk before renaming it into
    /// place (faster; a crash just after the restore may leave it incomplete).
    #[arg(long)]
    pub no_fsync: bool,
    /// Restore despite damaged or missing chunks: write them as zeros, keep the
    /// file, list the lost pages and the tables and indexes they belonged to, and
    /// exit with status 3 (0 when nothing was lost).
    #[arg(long)]
    pub salvage: bool,
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
    /// A content store keeping every revision of text documents (the hard case).
    Cms,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Built-in workload to simulate.
    #[arg(long, value_enum, default_value_t = BenchWorkload::Oltp)]
    pub workload: BenchWorkload,
    /// Size of the initial database: bytes, or with a unit (4MiB, 256MiB, 1GiB, 500MB)
    /// [default: 32MiB; 256MiB with --full].
    #[arg(long)]
    pub size: Option<String>,
    /// Number of steps; each is 10 minutes of work and then one snapshot (144 = a day)
    /// [default: 36; 144 with --full].
    #[arg(long)]
    pub steps: Option<u32>,
    /// The full benchmark of docs/BENCHMARKS.md (a day of a 256 MiB database in 7
    /// configurations: 15 to 20 minutes on 2 cores) instead of the quick defaults
    /// (about a minute); --size, --steps and --configs still override it.
    #[arg(long)]
    pub full: bool,
    /// Seed of the workload's pseudo-random data (same seed, same databases).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Replay instead: work on a copy of this database (it is never modified)...
    #[arg(long, value_name = "FILE", requires = "sql", conflicts_with_all = ["workload", "size"])]
    pub db: Option<std::path::PathBuf>,
    /// ...executing this SQL script once per step.
    #[arg(long, value_name = "FILE", requires = "db")]
    pub sql: Option<std::path::PathBuf>,
    /// Store configurations, comma-separated: CHUNK_PAGES[:ZSTD_LEVEL][:nodict]
    /// [default: 1,4,1:3:nodict,1:deltas; 1,2,4,16,1:1,1:9,1:3:nodict,1:deltas with --full].
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub configs: Option<Vec<String>>,
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

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Snapshots to check (ids, unique prefixes or `latest`); default: all.
    #[arg(value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
    /// Only snapshots of this database.
    #[arg(long)]
    pub name: Option<String>,
    /// Also read the packs: decode every referenced chunk, check its blake3 and every image hash.
    #[arg(long)]
    pub read_data: bool,
    /// Like --read-data, for a subset of the packs: PERCENT% (random) or N/M (part N of M).
    #[arg(long, value_name = "PERCENT%|N/M", conflicts_with = "read_data")]
    pub read_data_subset: Option<String>,
    /// Also restore snapshots (those named, else the newest of each database) into a
    /// temporary directory and run PRAGMA integrity_check on them.
    #[arg(long)]
    pub restore_check: bool,
    /// Where --restore-check writes its temporary copies (default: $TMPDIR).
    #[arg(long, value_name = "DIR", requires = "restore_check")]
    pub restore_dir: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum RepairCommand {
    /// Rebuild the index from the packs' own trailers; move damaged index objects to damaged/.
    #[command(after_help = "Examples:
  pagesnap repair index --dry-run
  pagesnap repair index
  pagesnap repair index --read-data     # also take damaged chunks out of use

With --read-data every pack is read and every chunk checked against its id. A
damaged pack is copied whole to damaged/, its sound chunks into a new pack, and
it is deleted; its damaged chunks are then stored again by the next backup of a
database that still holds those pages, and the older snapshots that need them
restore again.
Exit status: 0 nothing is lost, 3 damage remains (chunks no pack holds any more,
packs whose trailer cannot be read), 1 a pack could not be read (nothing was done
to it).")]
    Index(RepairIndexArgs),
    /// List the snapshots that cannot be restored; with --forget-broken, forget them.
    #[command(after_help = "Examples:
  pagesnap repair snapshots
  pagesnap repair snapshots --read-data --forget-broken
Exit status: 3 when broken snapshots were found and left in place.")]
    Snapshots(RepairSnapshotsArgs),
}

#[derive(Args, Debug)]
pub struct RepairIndexArgs {
    /// Show what would be re-indexed and moved, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also read every pack and check every chunk; rewrite damaged packs without
    /// their damaged chunks (which a later backup then stores again).
    #[arg(long)]
    pub read_data: bool,
    /// How long to wait for other commands to release the store.
    #[arg(long, value_name = "DURATION", default_value = "10min")]
    pub lock_wait: String,
}

#[derive(Args, Debug)]
pub struct RepairSnapshotsArgs {
    /// Forget (remove) the broken snapshots; without it nothing is changed.
    #[arg(long)]
    pub forget_broken: bool,
    /// Also check chunk data (as `verify --read-data`) to find broken snapshots.
    #[arg(long)]
    pub read_data: bool,
}

//! The `pagesnap watch` configuration: a TOML file (or the command line), checked
//! completely before anything starts. Errors name the file and line:
//! `watch.toml:7: unknown field `evry`, expected one of ...`.

use crate::cli::{IntegrityCheck, LogFormat, WatchArgs};
use crate::timearg::parse_duration;
use anyhow::{anyhow, bail, Context, Result};
use pagesnap_core::retention::{parse_count, parse_span, Policy, Span};
use pagesnap_core::watch::DatabaseOptions;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// Default interval between snapshots.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(600);
/// The shortest interval accepted.
pub const MIN_EVERY: Duration = Duration::from_secs(1);
/// Default time a run may take until its snapshot is committed, after which it
/// is abandoned: generous, so that only a capture that is stuck (a hung network
/// mount, a lock held for hours) reaches it, not a large database.
pub const DEFAULT_CAPTURE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Default time a stop waits for the runs in progress.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(60);

pub use pagesnap_core::watch::{PruneSchedule, PruneSettings};

/// A prune schedule said for people (`every 1day`, `never`): the status file,
/// the plan and `--check-config` print it with the CLI's duration format
/// rather than the library's `Display` (`every 1d`), as they always have.
pub fn prune_text(p: PruneSchedule) -> String {
    match p {
        PruneSchedule::Never => "never".into(),
        PruneSchedule::Every(d) => format!("every {}", crate::timearg::format_duration(d)),
    }
}

/// Parses `daily`, `hourly`, `weekly`, `never` or a duration (`12h`).
pub fn parse_prune(s: &str) -> Result<PruneSchedule> {
    Ok(match s.trim() {
        "never" => PruneSchedule::Never,
        "hourly" => PruneSchedule::Every(Duration::from_secs(3600)),
        "daily" => PruneSchedule::Every(Duration::from_secs(86_400)),
        "weekly" => PruneSchedule::Every(Duration::from_secs(7 * 86_400)),
        other => match parse_duration(other) {
            Ok(d) if !d.is_zero() => PruneSchedule::Every(d),
            _ => bail!(
                "invalid prune schedule {s:?}: use daily, hourly, weekly, never or an interval such as 12h"
            ),
        },
    })
}

/// Everything `pagesnap watch` runs with.
#[derive(Clone, Debug)]
pub struct WatchConfig {
    /// The config file, if there is one (SIGHUP re-reads it).
    pub file: Option<PathBuf>,
    pub store: Option<PathBuf>,
    pub status_file: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
    pub lock_wait: Duration,
    pub on_failure_timeout: Duration,
    /// How long SIGINT/SIGTERM waits for the runs in progress before abandoning them.
    pub stop_timeout: Duration,
    /// When and how the watcher prunes (`prune`, `prune_max_unused`, `prune_when_unused`).
    pub prune: PruneSettings,
    /// Where integrity checks restore their temporary copies (default: $TMPDIR).
    pub check_dir: Option<PathBuf>,
    /// The hook for failures that concern no one database (prune).
    pub on_failure: Option<String>,
    /// The bound of the store's base cache (`base_cache`); `None`:
    /// `$PAGESNAP_BASE_CACHE`, else 64 MiB.
    pub base_cache: Option<u64>,
    /// Hash every page with blake3 (`paranoid`; `BackupOptions::paranoid`).
    pub paranoid: bool,
    pub databases: Vec<DbConfig>,
}

/// One watched database: the library's options (file, name, schedule, tags,
/// timeouts, retention, image check), so that a per-database setting is
/// declared once, and the hooks, which only the command runs.
#[derive(Clone, Debug, PartialEq)]
pub struct DbConfig {
    pub opts: DatabaseOptions,
    /// Command run on failure (`sh -c`); `None` or empty: none.
    pub on_failure: Option<String>,
    /// Command run after a run that took a snapshot and did not fail.
    pub on_success: Option<String>,
}

// ---- TOML form ---------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    store: Option<PathBuf>,
    status_file: Option<PathBuf>,
    log_format: Option<LogFormat>,
    every: Option<Dur>,
    jitter: Option<Dur>,
    busy_timeout: Option<Dur>,
    capture_timeout: Option<Dur>,
    stop_timeout: Option<Dur>,
    lock_wait: Option<Dur>,
    tags: Option<Vec<String>>,
    on_failure: Option<String>,
    on_success: Option<String>,
    on_failure_timeout: Option<Dur>,
    prune: Option<Prune>,
    prune_max_unused: Option<Percent>,
    prune_when_unused: Option<Percent>,
    integrity_check: Option<IntegrityCheck>,
    integrity_check_every: Option<u32>,
    check_dir: Option<PathBuf>,
    base_cache: Option<ByteSize>,
    #[serde(default)]
    paranoid: bool,
    #[serde(default)]
    database: Vec<Spanned<RawDatabase>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    path: PathBuf,
    name: Option<String>,
    every: Option<Dur>,
    jitter: Option<Dur>,
    tags: Option<Vec<String>>,
    busy_timeout: Option<Dur>,
    capture_timeout: Option<Dur>,
    on_failure: Option<String>,
    on_success: Option<String>,
    integrity_check: Option<IntegrityCheck>,
    integrity_check_every: Option<u32>,
    keep_last: Option<Count>,
    keep_within: Option<SpanValue>,
    keep_minutely: Option<Count>,
    keep_hourly: Option<Count>,
    keep_daily: Option<Count>,
    keep_weekly: Option<Count>,
    keep_monthly: Option<Count>,
    keep_yearly: Option<Count>,
    keep_within_minutely: Option<SpanValue>,
    keep_within_hourly: Option<SpanValue>,
    keep_within_daily: Option<SpanValue>,
    keep_within_weekly: Option<SpanValue>,
    keep_within_monthly: Option<SpanValue>,
    keep_within_yearly: Option<SpanValue>,
    keep_tags: Option<Vec<String>>,
    local_time: Option<bool>,
}

/// A humantime duration written as a string (`"10min"`, `"1h 30min"`, `"500ms"`;
/// a bare `m` is minutes, months are refused: see [`parse_duration`]).
struct Dur(Duration);
/// A retention count: a positive integer, `"unlimited"` or -1.
struct Count(u32);
/// A retention span (`"36h"`, `"7d"`, `"1y6mo"`; `mo` months, `min` minutes, a
/// bare `m` refused as ambiguous).
struct SpanValue(Span);
/// A percentage: `"10%"`, `10` or `2.5`.
struct Percent(f64);
struct Prune(PruneSchedule);
/// A size in bytes, in a string: `"64MiB"`, `"512k"`, `"0"` (as
/// `backup --base-cache` takes it).
struct ByteSize(u64);

/// A string-valued setting parsed by `parse`, whose error becomes the TOML error
/// (and so gets the value's line).
fn from_str_value<'de, D, T>(
    d: D,
    expecting: &'static str,
    parse: impl Fn(&str) -> std::result::Result<T, String>,
) -> std::result::Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct V<F>(&'static str, F);
    impl<'de, T, F: Fn(&str) -> std::result::Result<T, String>> Visitor<'de> for V<F> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<T, E> {
            (self.1)(v).map_err(E::custom)
        }
    }
    d.deserialize_str(V(expecting, parse))
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        from_str_value(
            d,
            "a duration in a string, such as \"10min\" or \"30s\"",
            |s| parse_duration(s).map(Dur).map_err(|e| e.to_string()),
        )
    }
}

impl<'de> Deserialize<'de> for SpanValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        from_str_value(
            d,
            "a retention span in a string, such as \"36h\", \"7d\" or \"1y6mo\"",
            |s| parse_span(s).map(SpanValue).map_err(|e| e.to_string()),
        )
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        from_str_value(d, "a size in a string, such as \"64MiB\" or \"0\"", |s| {
            pagesnap_core::base_cache::parse_size(s)
                .map(ByteSize)
                .ok_or_else(|| format!("{s:?} is not a size (e.g. \"64MiB\", \"512KiB\", \"0\")"))
        })
    }
}

impl<'de> Deserialize<'de> for Prune {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        from_str_value(
            d,
            "\"daily\", \"hourly\", \"weekly\", \"never\" or an interval such as \"12h\"",
            |s| parse_prune(s).map(Prune).map_err(|e| e.to_string()),
        )
    }
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a count: a positive integer or \"unlimited\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<Count, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Count, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Count, E> {
                parse_count(v).map(Count).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

fn parse_percent(s: &str) -> std::result::Result<f64, String> {
    let t = s.trim().trim_end_matches('%').trim();
    match t.parse::<f64>() {
        Ok(v) if (0.0..=100.0).contains(&v) => Ok(v / 100.0),
        _ => Err(format!(
            "invalid percentage {s:?}: give a number from 0 to 100, e.g. \"10%\""
        )),
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Percent;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a percentage such as \"10%\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<Percent, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Percent, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<Percent, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Percent, E> {
                parse_percent(v).map(Percent).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

// ---- loading -------------------------------------------------------------------

/// 1-based line of byte offset `at` in `text`.
/// The key of the `key = value` line holding byte `at` (`keep_within` in
/// `keep_within = "30m"`), so that a refused value is named by its key; `None`
/// when the line is not one (a table header).
fn key_of_line(text: &str, at: usize) -> Option<&str> {
    let start = text.get(..at)?.rfind('\n').map_or(0, |i| i + 1);
    let line = text.get(start..)?.lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    let bare = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    (!key.is_empty() && key.chars().all(bare)).then_some(key)
}

fn line_of(text: &str, at: usize) -> usize {
    let at = at.min(text.len());
    text.as_bytes()[..at]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Reads and checks a config file.
pub fn load(file: &Path) -> Result<WatchConfig> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("{}: cannot read the config file", file.display()))?;
    parse(file, &text)
}

/// Checks the config `text` of `file` (relative paths in it are relative to the
/// file's directory).
pub fn parse(file: &Path, text: &str) -> Result<WatchConfig> {
    let at = |span: Option<std::ops::Range<usize>>| match span {
        Some(r) => format!("{}:{}", file.display(), line_of(text, r.start)),
        None => file.display().to_string(),
    };
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        // The message alone: toml's Display repeats the line with a caret drawing.
        let msg = e.message().trim_end();
        // toml names an unknown key itself (`unknown field `evry``).
        let key = match e.span().and_then(|r| key_of_line(text, r.start)) {
            Some(k) if !msg.contains(&format!("`{k}`")) => format!("{k}: "),
            _ => String::new(),
        };
        anyhow!("{}: {key}{msg}", at(e.span()))
    })?;
    // A config file given as a bare name is in the current directory: its
    // relative paths stay as they are.
    let dir = file.parent().unwrap_or(Path::new(""));
    let rel = |p: PathBuf| if p.is_relative() { dir.join(p) } else { p };
    let every = raw.every.map(|d| d.0).unwrap_or(DEFAULT_EVERY);
    let jitter = raw.jitter.map(|d| d.0).unwrap_or_default();
    let busy_timeout = raw
        .busy_timeout
        .map(|d| d.0)
        .unwrap_or(Duration::from_secs(5));
    let on_failure_timeout = raw
        .on_failure_timeout
        .map(|d| d.0)
        .unwrap_or(Duration::from_secs(30));
    let capture_timeout = raw
        .capture_timeout
        .map(|d| d.0)
        .unwrap_or(DEFAULT_CAPTURE_TIMEOUT);
    let stop_timeout = raw
        .stop_timeout
        .map(|d| d.0)
        .unwrap_or(DEFAULT_STOP_TIMEOUT);
    for (key, d) in [
        ("capture_timeout", capture_timeout),
        ("stop_timeout", stop_timeout),
    ] {
        check_timeout(key, d).map_err(|e| anyhow!("{}: {e}", file.display()))?;
    }
    let mut cfg = WatchConfig {
        file: Some(file.to_path_buf()),
        store: raw.store.map(rel),
        status_file: raw.status_file.map(rel),
        log_format: raw.log_format,
        lock_wait: raw
            .lock_wait
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(600)),
        on_failure_timeout,
        stop_timeout,
        prune: PruneSettings {
            schedule: raw
                .prune
                .map(|p| p.0)
                .unwrap_or(PruneSchedule::Every(Duration::from_secs(86_400))),
            max_unused: raw.prune_max_unused.map(|p| p.0).unwrap_or(0.10),
            when_unused: raw.prune_when_unused.map(|p| p.0),
        },
        check_dir: raw.check_dir.map(rel),
        on_failure: raw.on_failure.clone().filter(|c| !c.trim().is_empty()),
        base_cache: raw.base_cache.map(|b| b.0),
        paranoid: raw.paranoid,
        databases: Vec::new(),
    };
    let global_every = (every, jitter);
    if let Err(e) = check_timing(every, jitter) {
        bail!("{}: {e}", file.display());
    }
    if raw.database.is_empty() {
        bail!(
            "{}: no databases to watch: add a [[database]] table with a `path` for each",
            file.display()
        );
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    for spanned in raw.database {
        let line = line_of(text, spanned.span().start);
        let here = format!("{}:{line}", file.display());
        let d = spanned.into_inner();
        let path = rel(d.path);
        let name = match d.name {
            Some(n) => n,
            None => default_name(&path).map_err(|e| anyhow!("{here}: {e}"))?,
        };
        check_name(&name).map_err(|e| anyhow!("{here}: {e}"))?;
        if let Some(first) = seen.insert(name.clone(), line) {
            bail!(
                "{here}: database name {name:?} is used twice (also at line {first}): give each [[database]] its own `name`"
            );
        }
        let every = d.every.map(|x| x.0).unwrap_or(global_every.0);
        let jitter = d.jitter.map(|x| x.0).unwrap_or(global_every.1);
        check_timing(every, jitter).map_err(|e| anyhow!("{here}: database {name:?}: {e}"))?;
        let policy = Policy {
            keep_last: d.keep_last.map(|c| c.0),
            keep_within: d.keep_within.map(|s| s.0),
            keep_minutely: d.keep_minutely.map(|c| c.0),
            keep_hourly: d.keep_hourly.map(|c| c.0),
            keep_daily: d.keep_daily.map(|c| c.0),
            keep_weekly: d.keep_weekly.map(|c| c.0),
            keep_monthly: d.keep_monthly.map(|c| c.0),
            keep_yearly: d.keep_yearly.map(|c| c.0),
            keep_within_minutely: d.keep_within_minutely.map(|s| s.0),
            keep_within_hourly: d.keep_within_hourly.map(|s| s.0),
            keep_within_daily: d.keep_within_daily.map(|s| s.0),
            keep_within_weekly: d.keep_within_weekly.map(|s| s.0),
            keep_within_monthly: d.keep_within_monthly.map(|s| s.0),
            keep_within_yearly: d.keep_within_yearly.map(|s| s.0),
            keep_tags: d.keep_tags.unwrap_or_default(),
            local_time: d.local_time.unwrap_or(false),
        };
        policy
            .validate()
            .map_err(|e| anyhow!("{here}: database {name:?}: {e}"))?;
        if policy.is_empty() && policy.local_time {
            bail!("{here}: database {name:?}: local_time needs at least one keep_* rule");
        }
        let capture_timeout = d.capture_timeout.map(|x| x.0).unwrap_or(capture_timeout);
        check_timeout("capture_timeout", capture_timeout)
            .map_err(|e| anyhow!("{here}: database {name:?}: {e}"))?;
        let tags = d.tags.or_else(|| raw.tags.clone()).unwrap_or_default();
        for t in &tags {
            check_label("tag", t).map_err(|e| anyhow!("{here}: database {name:?}: {e}"))?;
        }
        let integrity_check_every = d
            .integrity_check_every
            .or(raw.integrity_check_every)
            .unwrap_or(1);
        if integrity_check_every == 0 {
            bail!("{here}: database {name:?}: integrity_check_every must be at least 1");
        }
        cfg.databases.push(DbConfig {
            opts: DatabaseOptions {
                name,
                path,
                every,
                jitter,
                tags,
                busy_timeout: d.busy_timeout.map(|x| x.0).unwrap_or(busy_timeout),
                capture_timeout,
                policy: (!policy.is_empty()).then_some(policy),
                image_check: d
                    .integrity_check
                    .or(raw.integrity_check)
                    .unwrap_or_default()
                    .into(),
                image_check_every: integrity_check_every,
            },
            on_failure: d
                .on_failure
                .or_else(|| raw.on_failure.clone())
                .filter(|c| !c.trim().is_empty()),
            on_success: d
                .on_success
                .or_else(|| raw.on_success.clone())
                .filter(|c| !c.trim().is_empty()),
        });
    }
    Ok(cfg)
}

/// The configuration `pagesnap watch DB... --every D` describes.
pub fn from_args(a: &WatchArgs) -> Result<WatchConfig> {
    let every = parse_duration(&a.every)?;
    let jitter = parse_duration(&a.jitter)?;
    check_timing(every, jitter).map_err(|e| anyhow!("--every/--jitter: {e}"))?;
    let prune = parse_prune(&a.prune)?;
    let capture_timeout = parse_duration(&a.capture_timeout)?;
    check_timeout("--capture-timeout", capture_timeout)?;
    for t in &a.tags {
        check_label("tag", t)?;
    }
    let mut databases: Vec<DbConfig> = Vec::new();
    for path in &a.databases {
        let name = default_name(path)?;
        check_name(&name)?;
        if let Some(other) = databases.iter().find(|d| d.opts.name == name) {
            bail!(
                "{} and {} would both be named {name:?}: use a config file (--config) to name them",
                other.opts.path.display(),
                path.display()
            );
        }
        databases.push(DbConfig {
            // The library's defaults: a 5 s busy timeout, no retention of
            // its own, an image check (if any) after every snapshot.
            opts: DatabaseOptions {
                name,
                every,
                jitter,
                tags: a.tags.clone(),
                capture_timeout,
                image_check: a.integrity_check.into(),
                ..DatabaseOptions::new(path.clone())
            },
            on_failure: a.on_failure.clone().filter(|c| !c.trim().is_empty()),
            on_success: a.on_success.clone().filter(|c| !c.trim().is_empty()),
        });
    }
    Ok(WatchConfig {
        file: None,
        store: None,
        status_file: None,
        log_format: None,
        lock_wait: Duration::from_secs(600),
        on_failure_timeout: Duration::from_secs(30),
        stop_timeout: DEFAULT_STOP_TIMEOUT,
        prune: PruneSettings {
            schedule: prune,
            max_unused: 0.10,
            when_unused: None,
        },
        check_dir: None,
        on_failure: a.on_failure.clone().filter(|c| !c.trim().is_empty()),
        base_cache: None,
        paranoid: false,
        databases,
    })
}

fn check_timing(every: Duration, jitter: Duration) -> std::result::Result<(), String> {
    if every < MIN_EVERY {
        return Err(format!(
            "interval {} is too short: the shortest is 1s",
            crate::timearg::format_duration(every)
        ));
    }
    if jitter >= every {
        return Err(format!(
            "jitter {} must be shorter than the interval {}",
            crate::timearg::format_duration(jitter),
            crate::timearg::format_duration(every)
        ));
    }
    Ok(())
}

fn check_timeout(key: &str, d: Duration) -> Result<()> {
    if d.is_zero() {
        bail!("{key} must be longer than 0s");
    }
    Ok(())
}

/// The name a backup of `path` gets by default: its file stem.
fn default_name(path: &Path) -> Result<String> {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            anyhow!(
                "{}: cannot name a database after this path: give it a `name`",
                path.display()
            )
        })
}

fn check_name(name: &str) -> Result<()> {
    check_label("database name", name)
}

/// The store's rule for names and tags (`pagesnap_core::check_label`, the one a
/// backup enforces), checked here so that a bad name is a config error at start,
/// not a failure of every run.
fn check_label(what: &'static str, s: &str) -> Result<()> {
    Ok(pagesnap_core::check_label(what, s)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pagesnap_core::watch::ImageCheck;

    fn err(text: &str) -> String {
        parse(Path::new("/etc/w.toml"), text)
            .map(|_| ())
            .unwrap_err()
            .to_string()
    }

    /// Names and tags follow the store's rule in its words (`pagesnap_core::check_label`),
    /// after the file and line of their [[database]] table.
    #[test]
    fn bad_names_and_tags_are_refused_in_the_stores_words() {
        let core = |what, s| pagesnap_core::check_label(what, s).unwrap_err().to_string();
        let e = err("[[database]]\npath = \"a.db\"\nname = \"a/b\"\n");
        assert_eq!(
            e,
            format!("/etc/w.toml:1: {}", core("database name", "a/b"))
        );
        let e = err("\n[[database]]\npath = \"a.db\"\ntags = [\"night\\nly\"]\n");
        assert_eq!(
            e,
            format!(
                "/etc/w.toml:2: database \"a\": {}",
                core("tag", "night\nly")
            )
        );
        assert!(e.contains("control character (newline, NUL, ...)"), "{e}");
    }

    #[test]
    fn a_full_config_parses_with_defaults_and_overrides() {
        let c = parse(
            Path::new("/etc/pagesnap/w.toml"),
            r#"
store = "store"
every = "10m"
jitter = "30s"
on_failure = "alert"
prune = "weekly"
prune_max_unused = "5%"
prune_when_unused = 20
base_cache = "16MiB"
paranoid = true

[[database]]
path = "/srv/app.db"
keep_last = 6
keep_daily = "unlimited"
keep_within = "2d"
integrity_check = "quick"
integrity_check_every = 6

[[database]]
path = "jobs.db"
name = "jobs"
every = "1h"
jitter = "0s"
on_failure = ""
capture_timeout = "90s"
"#,
        )
        .unwrap();
        assert_eq!(c.store, Some(PathBuf::from("/etc/pagesnap/store")));
        assert_eq!(
            c.prune.schedule,
            PruneSchedule::Every(Duration::from_secs(7 * 86_400))
        );
        assert!((c.prune.max_unused - 0.05).abs() < 1e-9);
        assert_eq!(c.prune.when_unused, Some(0.2));
        assert_eq!(c.base_cache, Some(16 << 20));
        assert!(c.paranoid);
        let app = &c.databases[0];
        assert_eq!(app.opts.name, "app");
        assert_eq!(app.opts.every, Duration::from_secs(600));
        assert_eq!(app.opts.jitter, Duration::from_secs(30));
        assert_eq!(app.on_failure.as_deref(), Some("alert"));
        assert_eq!(app.opts.image_check, ImageCheck::Quick);
        assert_eq!(app.opts.image_check_every, 6);
        assert_eq!(app.opts.capture_timeout, DEFAULT_CAPTURE_TIMEOUT);
        assert_eq!(c.stop_timeout, DEFAULT_STOP_TIMEOUT);
        let p = app.opts.policy.as_ref().unwrap();
        assert_eq!(p.keep_last, Some(6));
        assert_eq!(p.keep_daily, Some(pagesnap_core::retention::UNLIMITED));
        let jobs = &c.databases[1];
        assert_eq!(jobs.opts.path, PathBuf::from("/etc/pagesnap/jobs.db"));
        assert_eq!(jobs.opts.every, Duration::from_secs(3600));
        assert_eq!(jobs.opts.capture_timeout, Duration::from_secs(90));
        assert_eq!(
            jobs.on_failure, None,
            "an empty hook disables the global one"
        );
        assert_eq!(jobs.opts.policy, None);
        assert_eq!(jobs.opts.image_check, ImageCheck::Off);
    }

    #[test]
    fn errors_name_the_line() {
        let e = err("every = \"10m\"\n\n[[database]]\npath = \"a.db\"\nevry = \"1m\"\n");
        assert!(e.starts_with("/etc/w.toml:5: unknown field `evry`"), "{e}");
        let e = err("[[database]]\npath = \"a.db\"\nevery = \"10 parsecs\"\n");
        assert!(
            e.starts_with("/etc/w.toml:3: every: invalid duration"),
            "{e}"
        );
        let e = err("base_cache = \"lots\"\n[[database]]\npath = \"a.db\"\n");
        assert!(
            e.starts_with("/etc/w.toml:1: base_cache: \"lots\" is not a size"),
            "{e}"
        );
        let e = err("bogus = 1\n");
        assert!(e.starts_with("/etc/w.toml:1: unknown field `bogus`"), "{e}");
        let e = err("[[database]]\npath = \"a.db\"\nkeep_last = 0\n");
        assert!(e.starts_with("/etc/w.toml:3: "), "{e}");
        let e = err("[[database]]\npath = \"a.db\"\nintegrity_check = \"thorough\"\n");
        assert!(
            e.starts_with("/etc/w.toml:3: ") && e.contains("quick"),
            "{e}"
        );
        let e = err("prune = \"sometimes\"\n[[database]]\npath = \"a.db\"\n");
        assert!(
            e.starts_with("/etc/w.toml:1: prune: invalid prune schedule"),
            "{e}"
        );
        let e = err("[[database]]\npath = \"a.db\"\n\n[[database]]\npath = \"b/a.db\"\n");
        assert!(
            e.starts_with("/etc/w.toml:4: database name \"a\" is used twice"),
            "{e}"
        );
        let e = err("[[database]]\npath = \"a.db\"\njitter = \"10m\"\n");
        assert!(
            e.starts_with("/etc/w.toml:1: database \"a\": jitter 10min"),
            "{e}"
        );
        let e = err("[[database]]\nname = \"x\"\n");
        assert!(e.contains("missing field `path`"), "{e}");
        let e = err("every = \"10m\"\n");
        assert!(e.contains("no databases to watch"), "{e}");
        let e = err("[[database]]\npath = \"a.db\"\nevery = \"500ms\"\n");
        assert!(e.contains("too short"), "{e}");
        let e = err("[[database]]\npath = \"a.db\"\ncapture_timeout = \"0s\"\n");
        assert!(
            e.starts_with("/etc/w.toml:1: database \"a\": capture_timeout must be longer"),
            "{e}"
        );
        let e = err("[[database\n");
        assert!(e.starts_with("/etc/w.toml:1: "), "{e}");
    }

    /// `m` in a retention span is refused (months to restic, minutes to the
    /// durations beside it), naming the file, line and key; `mo` and `min` are
    /// read as written.
    #[test]
    fn a_bare_m_in_keep_within_is_refused() {
        let e = err("every = \"5m\"\n[[database]]\npath = \"a.db\"\nkeep_within = \"30m\"\n");
        assert_eq!(
            e,
            "/etc/w.toml:4: keep_within: \"30m\" is ambiguous: write 30min for minutes or 30mo for months"
        );
        let e = err("[[database]]\npath = \"a.db\"\nkeep_within_daily = \"1y6m\"\n");
        assert!(
            e.starts_with("/etc/w.toml:3: keep_within_daily: \"1y6m\" is ambiguous"),
            "{e}"
        );
        let c = parse(
            Path::new("/etc/w.toml"),
            "every = \"5min\"\n[[database]]\npath = \"a.db\"\nkeep_within = \"30mo\"\nkeep_within_hourly = \"30min\"\n",
        )
        .unwrap();
        let p = c.databases[0].opts.policy.as_ref().unwrap();
        assert_eq!(p.keep_within.unwrap().months, 30);
        assert_eq!(p.keep_within_hourly.unwrap().minutes, 30);
        assert_eq!(c.databases[0].opts.every, Duration::from_secs(300));
    }

    /// The README's example config (three databases) is valid.
    #[test]
    fn the_readme_example_parses() {
        let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));
        let (_, rest) = readme
            .split_once("Three databases with different intervals and policies:")
            .unwrap();
        let start = rest.find("```toml\n").unwrap() + "```toml\n".len();
        let text = &rest[start..start + rest[start..].find("```").unwrap()];
        let c = parse(Path::new("/etc/pagesnap/watch.toml"), text).unwrap();
        let names: Vec<_> = c.databases.iter().map(|d| d.opts.name.as_str()).collect();
        assert_eq!(names, ["shop", "jobs", "events"]);
        let every: Vec<_> = c.databases.iter().map(|d| d.opts.every.as_secs()).collect();
        assert_eq!(every, [600, 60, 3600]);
        assert!(c.databases[0].opts.policy.is_some() && c.databases[2].opts.policy.is_none());
        assert_eq!(c.databases[2].on_failure, None);
        assert_eq!(c.prune.when_unused, Some(0.25));
    }

    #[test]
    fn prune_schedules() {
        assert_eq!(parse_prune("never").unwrap(), PruneSchedule::Never);
        assert_eq!(
            parse_prune("daily").unwrap(),
            PruneSchedule::Every(Duration::from_secs(86_400))
        );
        assert_eq!(
            parse_prune("90min").unwrap(),
            PruneSchedule::Every(Duration::from_secs(5400))
        );
        assert!(parse_prune("0s").is_err());
        assert!(parse_prune("often").is_err());
    }

    /// contrib/watch.toml, the example installed beside the systemd units, is
    /// read by the real parser: a key or unit it gets wrong fails here.
    #[test]
    fn the_contrib_example_parses() {
        let text = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/watch.toml"));
        let c = parse(Path::new("/etc/pagesnap/watch.toml"), text).unwrap();
        assert_eq!(c.store, Some(PathBuf::from("/var/backups/pagesnap")));
        assert_eq!(
            c.status_file,
            Some(PathBuf::from("/var/lib/pagesnap/watch-status.json"))
        );
        assert_eq!(c.log_format, Some(LogFormat::Json));
        assert_eq!(
            c.prune.schedule,
            PruneSchedule::Every(Duration::from_secs(86_400))
        );
        assert_eq!(c.prune.when_unused, Some(0.25));
        assert_eq!(c.on_failure_timeout, Duration::from_secs(30));
        assert!(c
            .on_failure
            .as_deref()
            .is_some_and(|h| h.contains("logger")));
        let names: Vec<_> = c.databases.iter().map(|d| d.opts.name.as_str()).collect();
        assert_eq!(names, ["app", "jobs"]);
        let (app, jobs) = (&c.databases[0], &c.databases[1]);
        assert_eq!(app.opts.path, PathBuf::from("/srv/app/app.db"));
        // "10min" and "1min": minutes, not months.
        assert_eq!(app.opts.every, Duration::from_secs(600));
        assert_eq!(jobs.opts.every, Duration::from_secs(60));
        assert_eq!(app.opts.jitter, Duration::from_secs(30));
        assert_eq!(jobs.opts.jitter, Duration::from_secs(10));
        assert_eq!(app.opts.busy_timeout, Duration::from_secs(5));
        assert_eq!(jobs.opts.busy_timeout, Duration::from_secs(20));
        assert_eq!(app.opts.capture_timeout, Duration::from_secs(3600));
        assert_eq!(app.opts.tags, ["watch"]);
        assert_eq!(app.opts.image_check, ImageCheck::Quick);
        assert_eq!(app.opts.image_check_every, 6);
        assert_eq!(jobs.opts.image_check, ImageCheck::Off);
        let days = |d: u32| Span {
            days: d,
            ..Span::default()
        };
        let p = app.opts.policy.as_ref().unwrap();
        assert_eq!(p.keep_within, Some(days(1)));
        assert_eq!(p.keep_within_hourly, Some(days(2)));
        assert_eq!(p.keep_within_daily, Some(days(30)));
        assert_eq!(
            p.keep_within_weekly,
            Some(Span {
                years: 1,
                ..Span::default()
            })
        );
        let p = jobs.opts.policy.as_ref().unwrap();
        assert_eq!(
            (p.keep_last, p.keep_hourly, p.keep_daily),
            (Some(60), Some(48), Some(14))
        );
        assert_eq!(p.keep_within, None);
    }
}

//! Retention policy: which snapshots `pagesnap forget` keeps.
//!
//! [`apply`] is a pure function of the snapshot list, a [`Policy`] and the
//! current time; it reads nothing and deletes nothing. The rules follow restic's
//! `forget` (the `ApplyPolicy` algorithm of restic 0.17), with the differences
//! marked *pagesnap* below.
//!
//! # Rules
//!
//! Snapshots are grouped by database name and each group is judged on its own.
//! Inside a group, snapshots are ordered newest first by time; two snapshots taken
//! at the same instant are ordered by snapshot id, the larger id counting as the
//! newer. A snapshot is kept when at least one rule keeps it, and every rule that
//! keeps it is listed as a reason.
//!
//! | option | keeps | reason shown |
//! |---|---|---|
//! | (always) | the newest snapshot of each database | `newest of app` |
//! | (always) | every snapshot whose time is after now (clock skew) | `in the future` |
//! | `--keep-last N` | the N newest snapshots | `last 3/6` |
//! | `--keep-within SPAN` | every snapshot taken less than SPAN before the newest one | `within 36h` |
//! | `--keep-hourly N` (and `-minutely`, `-daily`, `-weekly`, `-monthly`, `-yearly`) | the newest snapshot of each of the N most recent hours that have snapshots | `hourly 5/24` |
//! | `--keep-within-daily SPAN` (and `-minutely`, `-hourly`, `-weekly`, `-monthly`, `-yearly`) | the newest snapshot of every day, among the snapshots taken less than SPAN before the newest one | `within daily 7d` |
//! | `--keep-tag TAG` (repeatable) | every snapshot carrying TAG (any of the tags given) | `tag nightly` |
//!
//! **Buckets.** A minute is `YYYY-MM-DD HH:MM`, an hour `YYYY-MM-DD HH`, a day
//! `YYYY-MM-DD`, a month `YYYY-MM`, a year `YYYY`. A week is an ISO 8601 week
//! (Monday to Sunday) named by its ISO week-year: 2020-12-31 and 2021-01-03 are
//! both in week 2020-W53, 2019-12-30 is in 2020-W01, and a Sunday 23:59:59 and
//! the following Monday 00:00:00 are in different weeks. Buckets are computed in
//! UTC, or in the local time zone of the machine running `forget` with
//! `--local-time`.
//!
//! **Bucket counts.** `--keep-daily N` walks the snapshots from newest to oldest
//! and keeps a snapshot when its day differs from the day of the previous
//! snapshot that rule kept, until N days have been used. Days without snapshots
//! use nothing: `--keep-daily 7` keeps the 7 most recent days *that have
//! snapshots*, which may reach back more than a week. As in restic, if the walk
//! reaches the oldest snapshot of the database with fewer than N used, the oldest
//! snapshot is kept too, even when its day already has a kept snapshot (reason
//! `daily 4/7 (oldest)`), so that history reaches back as far as the counts
//! allow. This applies to the count options only, not to `--keep-within-*`.
//!
//! **Within.** Spans are measured back from the *newest snapshot of the
//! database*, not from now, so that when backups stop (a broken cron job, a
//! full disk), running `forget` does not erode the last good history day after
//! day. The boundary is exclusive, as in restic: with `--keep-within 36h` and the
//! newest snapshot at 2024-03-03 12:00:00, a snapshot at 2024-03-02 00:00:00 is
//! not kept by that rule, one at 00:00:01 is. Years and months are calendar
//! months, clamped to the end of the month (31 March minus `1mo` is 29 February
//! 2024; restic's Go arithmetic would overflow into 2 March, keeping less);
//! days are calendar days (with `--local-time`, a day across a daylight-saving
//! change is 23 or 25 hours); hours and minutes are exact.
//!
//! **The future** (*pagesnap*). A snapshot whose time is after now (a backup
//! host with a clock ahead) is always kept and set aside: it takes no slot of
//! `--keep-last` or of any bucket count, and the within spans are measured from
//! the newest snapshot that is not in the future (restic does the latter too,
//! but counts future snapshots in its buckets). A snapshot whose time is
//! exactly now is not in the future. The overall newest snapshot is kept as the
//! newest even when it is in the future.
//!
//! **Counts** are at least 1, or `unlimited` (also written `-1`) to keep every
//! bucket. A count of 0 is refused by [`Policy::validate`] rather than silently
//! meaning "not set". **An empty policy** keeps everything (reason `no policy`);
//! the command line refuses to forget with one.
//!
//! **Durations** ([`parse_span`]) are one or more numbers with units, each unit at
//! most once: `y` years, `mo` months, `w` weeks (7 days), `d` days, `h` hours,
//! `min` minutes; e.g. `36h`, `7d`, `2w`, `1y6mo`, `1d12h`, `90min`. A bare `m`
//! is refused ([`PolicyError::AmbiguousUnit`]): restic reads it as months, most
//! duration syntaxes as minutes, and a policy is the wrong place to guess.
//!
//! # Example
//!
//! Database `app` is backed up every 10 minutes for three days, from 2024-03-01
//! 00:00 to 2024-03-03 23:50 UTC: 432 snapshots. `pagesnap forget --keep-last 6
//! --keep-hourly 24 --keep-daily 7` keeps 32 of them and forgets 400:
//!
//! | kept snapshots (UTC) | reasons |
//! |---|---|
//! | 03-03 23:50 | newest of app, last 1/6, hourly 1/24, daily 1/7 |
//! | 03-03 23:40, 23:30, 23:20, 23:10, 23:00 | last 2/6 … last 6/6 |
//! | 03-03 22:50, 21:50, 20:50, …, 00:50 (23 snapshots) | hourly 2/24 … hourly 24/24 |
//! | 03-02 23:50 | daily 2/7 |
//! | 03-01 23:50 | daily 3/7 |
//! | 03-01 00:00 | daily 4/7 (oldest) |
//!
//! `--keep-hourly 24` keeps the last snapshot of each of the 24 hours of March 3
//! (23:50 is also the newest, so it counts as hour 1). `--keep-daily 7` finds
//! only three days, keeps the last snapshot of each, and, with counts left, the
//! very first snapshot as well. Every other snapshot of March 1 and 2, and the
//! snapshots at :00 to :40 past each hour of March 3 before 23:00, are
//! forgotten. Once
//! seven days have snapshots, the daily rule stops at the seventh day and the
//! first snapshot goes too.

use crate::store::Snapshot;
use crate::types::SnapshotId;
use chrono::{
    DateTime, Datelike, Days, Local, LocalResult, Months, Offset, TimeDelta, TimeZone, Timelike,
    Utc,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

#[cfg(test)]
mod tests;

/// The count meaning "every bucket" (`unlimited`, or `-1` as in restic).
pub const UNLIMITED: u32 = u32::MAX;

/// A calendar-aware duration, as written `1y2mo3d4h5min` (see [`parse_span`]).
/// Weeks are stored as 7 days. A saved policy holds these numbers, not the
/// text, so policies saved when `m` was accepted for months keep their meaning.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Span {
    pub years: u32,
    pub months: u32,
    pub days: u32,
    pub hours: u32,
    pub minutes: u32,
}

impl Span {
    pub fn is_zero(&self) -> bool {
        *self == Span::default()
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("0h");
        }
        for (n, unit) in [
            (self.years, "y"),
            (self.months, "mo"),
            (self.days, "d"),
            (self.hours, "h"),
            (self.minutes, "min"),
        ] {
            if n > 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

impl FromStr for Span {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Span, PolicyError> {
        parse_span(s)
    }
}

/// The calendar units buckets are made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum BucketKind {
    Minutely,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl BucketKind {
    pub const ALL: [BucketKind; 6] = [
        BucketKind::Minutely,
        BucketKind::Hourly,
        BucketKind::Daily,
        BucketKind::Weekly,
        BucketKind::Monthly,
        BucketKind::Yearly,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BucketKind::Minutely => "minutely",
            BucketKind::Hourly => "hourly",
            BucketKind::Daily => "daily",
            BucketKind::Weekly => "weekly",
            BucketKind::Monthly => "monthly",
            BucketKind::Yearly => "yearly",
        }
    }

    /// The command-line flag of the count rule, e.g. `--keep-daily`.
    pub fn count_flag(self) -> &'static str {
        match self {
            BucketKind::Minutely => "--keep-minutely",
            BucketKind::Hourly => "--keep-hourly",
            BucketKind::Daily => "--keep-daily",
            BucketKind::Weekly => "--keep-weekly",
            BucketKind::Monthly => "--keep-monthly",
            BucketKind::Yearly => "--keep-yearly",
        }
    }

    /// The command-line flag of the within rule, e.g. `--keep-within-daily`.
    pub fn within_flag(self) -> &'static str {
        match self {
            BucketKind::Minutely => "--keep-within-minutely",
            BucketKind::Hourly => "--keep-within-hourly",
            BucketKind::Daily => "--keep-within-daily",
            BucketKind::Weekly => "--keep-within-weekly",
            BucketKind::Monthly => "--keep-within-monthly",
            BucketKind::Yearly => "--keep-within-yearly",
        }
    }

    /// An integer naming the bucket of `t` in zone `tz` (like restic's `ymdh`).
    fn key<Tz: TimeZone>(self, t: &DateTime<Utc>, tz: &Tz) -> i64 {
        let l = t.with_timezone(tz);
        let (y, mo, d) = (l.year() as i64, l.month() as i64, l.day() as i64);
        let (h, mi) = (l.hour() as i64, l.minute() as i64);
        match self {
            BucketKind::Minutely => (((y * 100 + mo) * 100 + d) * 100 + h) * 100 + mi,
            BucketKind::Hourly => ((y * 100 + mo) * 100 + d) * 100 + h,
            BucketKind::Daily => (y * 100 + mo) * 100 + d,
            BucketKind::Weekly => {
                let w = l.iso_week();
                w.year() as i64 * 100 + w.week() as i64
            }
            BucketKind::Monthly => y * 100 + mo,
            BucketKind::Yearly => y,
        }
    }
}

impl fmt::Display for BucketKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which snapshots to keep; see the [module documentation](self) for the exact
/// semantics. Stored in the store (postcard), so only plain types. Counts are
/// `Some(n)` with `n >= 1`, [`UNLIMITED`] for all; spans are non-zero.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub keep_last: Option<u32>,
    pub keep_within: Option<Span>,
    pub keep_minutely: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    pub keep_within_minutely: Option<Span>,
    pub keep_within_hourly: Option<Span>,
    pub keep_within_daily: Option<Span>,
    pub keep_within_weekly: Option<Span>,
    pub keep_within_monthly: Option<Span>,
    pub keep_within_yearly: Option<Span>,
    pub keep_tags: Vec<String>,
    /// Compute buckets and calendar spans in the machine's local time zone.
    pub local_time: bool,
}

impl Policy {
    fn count(&self, kind: BucketKind) -> Option<u32> {
        match kind {
            BucketKind::Minutely => self.keep_minutely,
            BucketKind::Hourly => self.keep_hourly,
            BucketKind::Daily => self.keep_daily,
            BucketKind::Weekly => self.keep_weekly,
            BucketKind::Monthly => self.keep_monthly,
            BucketKind::Yearly => self.keep_yearly,
        }
    }

    fn within_bucket(&self, kind: BucketKind) -> Option<Span> {
        match kind {
            BucketKind::Minutely => self.keep_within_minutely,
            BucketKind::Hourly => self.keep_within_hourly,
            BucketKind::Daily => self.keep_within_daily,
            BucketKind::Weekly => self.keep_within_weekly,
            BucketKind::Monthly => self.keep_within_monthly,
            BucketKind::Yearly => self.keep_within_yearly,
        }
    }

    /// True when no rule would keep anything: no option set, or only counts of
    /// 0, zero spans and empty tags (which [`Policy::validate`] refuses).
    /// `local_time` alone is not a rule.
    pub fn is_empty(&self) -> bool {
        let count = |c: Option<u32>| c.is_some_and(|n| n > 0);
        let span = |s: Option<Span>| s.is_some_and(|s| !s.is_zero());
        !(count(self.keep_last)
            || span(self.keep_within)
            || BucketKind::ALL
                .iter()
                .any(|&k| count(self.count(k)) || span(self.within_bucket(k)))
            || self.keep_tags.iter().any(|t| !t.is_empty()))
    }

    /// Refuses counts of 0, zero spans and empty (or blank) tags.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let counts = std::iter::once(("--keep-last", self.keep_last)).chain(
            BucketKind::ALL
                .iter()
                .map(|&k| (k.count_flag(), self.count(k))),
        );
        for (flag, c) in counts {
            if c == Some(0) {
                return Err(PolicyError::ZeroCount { flag });
            }
        }
        let spans = std::iter::once(("--keep-within", self.keep_within)).chain(
            BucketKind::ALL
                .iter()
                .map(|&k| (k.within_flag(), self.within_bucket(k))),
        );
        for (flag, s) in spans {
            if s.is_some_and(|s| s.is_zero()) {
                return Err(PolicyError::ZeroSpan { flag });
            }
        }
        if self.keep_tags.iter().any(|t| t.trim().is_empty()) {
            return Err(PolicyError::EmptyTag);
        }
        Ok(())
    }
}

/// The policy as command-line flags, e.g. `--keep-last 3 --keep-daily 7`
/// (empty for an empty policy). Order: last, within, counts (minutely to
/// yearly), within-buckets, tags, `--local-time`.
impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut flags: Vec<String> = Vec::new();
        let count = |c: u32| {
            if c == UNLIMITED {
                "unlimited".to_string()
            } else {
                c.to_string()
            }
        };
        if let Some(c) = self.keep_last {
            flags.push(format!("--keep-last {}", count(c)));
        }
        if let Some(s) = self.keep_within {
            flags.push(format!("--keep-within {s}"));
        }
        for k in BucketKind::ALL {
            if let Some(c) = self.count(k) {
                flags.push(format!("{} {}", k.count_flag(), count(c)));
            }
        }
        for k in BucketKind::ALL {
            if let Some(s) = self.within_bucket(k) {
                flags.push(format!("{} {s}", k.within_flag()));
            }
        }
        for t in &self.keep_tags {
            flags.push(format!("--keep-tag {}", shell_word(t)));
        }
        if self.local_time {
            flags.push("--local-time".to_string());
        }
        f.write_str(&flags.join(" "))
    }
}

/// `s` as one shell word: unchanged when plain, else single-quoted.
fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-+=:,@%/".contains(&b));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Why a policy or one of its values is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("invalid duration {input:?}: {detail} (a duration is numbers with units: y = years, mo = months, w = weeks, d = days, h = hours, min = minutes; e.g. 36h, 7d, 2w, 1y6mo, 90min)")]
    Span { input: String, detail: String },
    /// A bare `m`, which some tools read as minutes and others (restic) as
    /// months; the two fields are the input with `min` and with `mo` instead.
    #[error("{input:?} is ambiguous: write {minutes} for minutes or {months} for months")]
    AmbiguousUnit {
        input: String,
        minutes: String,
        months: String,
    },
    #[error("invalid count {input:?}: {detail}")]
    Count { input: String, detail: String },
    #[error("{flag} 0 would keep nothing: give a count of at least 1 (or `unlimited`), or leave the option out")]
    ZeroCount { flag: &'static str },
    #[error("{flag} needs a duration longer than zero (or leave the option out)")]
    ZeroSpan { flag: &'static str },
    #[error("--keep-tag needs a tag name: an empty tag matches no snapshot")]
    EmptyTag,
}

/// Parses a duration such as `36h`, `7d`, `2w`, `1y6mo` or `1d12h30min`: one or
/// more numbers, each followed by a unit — `y` years, `mo` months, `w` weeks,
/// `d` days, `h` hours, `min` minutes — each unit at most once, in any order.
/// Refuses empty, negative, zero, unknown units, bare numbers, values that do
/// not fit in 32 bits, and a bare `m` ([`PolicyError::AmbiguousUnit`]).
pub fn parse_span(s: &str) -> Result<Span, PolicyError> {
    let err = |detail: String| PolicyError::Span {
        input: s.to_string(),
        detail,
    };
    if s.is_empty() {
        return Err(err("it is empty".into()));
    }
    if s.starts_with('-') {
        return Err(err("a duration cannot be negative".into()));
    }
    let mut values: [Option<u32>; 6] = [None; 6]; // y mo w d h min
    let mut rest = s;
    // Where a bare `m` unit ends, to spell the two readings in the refusal.
    let mut bare_m: Option<usize> = None;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (num, after) = rest.split_at(digits);
        let letters = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, after) = after.split_at(letters);
        let unexpected = |at: &str| {
            let c = at.chars().next().unwrap_or(' ');
            err(format!("unexpected character {c:?}"))
        };
        if num.is_empty() {
            if unit.is_empty() {
                return Err(unexpected(after));
            }
            return Err(err(format!("the unit {unit:?} needs a number before it")));
        }
        if unit.is_empty() {
            if after.is_empty() {
                return Err(err(format!("the number {num} has no unit")));
            }
            return Err(unexpected(after));
        }
        let slot = match unit {
            "y" => 0,
            "mo" => 1,
            "m" => {
                bare_m = Some(s.len() - after.len());
                1
            }
            "w" => 2,
            "d" => 3,
            "h" => 4,
            "min" => 5,
            "s" | "sec" => {
                return Err(err(
                    "seconds are not supported; the smallest unit is min".into()
                ))
            }
            _ => return Err(err(format!("unknown unit {unit:?}"))),
        };
        if values[slot].is_some() {
            return Err(err(format!("the unit {unit} is given twice")));
        }
        let n: u32 = num
            .parse()
            .map_err(|_| err(format!("{num}{unit} is too large")))?;
        values[slot] = Some(n);
        rest = after;
    }
    // Only a duration that is otherwise valid gets here, so the suggested
    // spellings are themselves valid.
    if let Some(end) = bare_m {
        let (head, tail) = s.split_at(end);
        return Err(PolicyError::AmbiguousUnit {
            input: s.to_string(),
            minutes: format!("{head}in{tail}"),
            months: format!("{head}o{tail}"),
        });
    }
    let v = |i: usize| values[i].unwrap_or(0);
    let days = v(2)
        .checked_mul(7)
        .and_then(|d| d.checked_add(v(3)))
        .ok_or_else(|| err("too many days".into()))?;
    let span = Span {
        years: v(0),
        months: v(1),
        days,
        hours: v(4),
        minutes: v(5),
    };
    if span.is_zero() {
        return Err(err("a duration of zero keeps nothing".into()));
    }
    Ok(span)
}

/// Parses a count: a whole number of at least 1, or `unlimited` / `-1` for
/// [`UNLIMITED`].
pub fn parse_count(s: &str) -> Result<u32, PolicyError> {
    let err = |detail: &str| PolicyError::Count {
        input: s.to_string(),
        detail: detail.to_string(),
    };
    if s == "unlimited" || s == "-1" {
        return Ok(UNLIMITED);
    }
    if s.starts_with('-') {
        return Err(err(
            "a count cannot be negative (`unlimited` or -1 keeps all)",
        ));
    }
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err("expected a whole number, or `unlimited`"));
    }
    match s.parse::<u32>() {
        Ok(0) => Err(err(
            "a count of 0 keeps nothing: give at least 1, or `unlimited`",
        )),
        Ok(n) => Ok(n),
        Err(_) => Err(err("too large (`unlimited` keeps all)")),
    }
}

/// Why a snapshot is kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reason {
    /// The policy is empty: everything is kept. `no policy`
    NoPolicy,
    /// The newest snapshot of its database. `newest of app`
    Newest { name: String },
    /// Its time is after now. `in the future`
    Future,
    /// The `nth` newest, under `--keep-last count`. `last 3/6` (`last 3` when unlimited)
    Last { nth: u32, count: u32 },
    /// Under `--keep-within`. `within 36h`
    Within(Span),
    /// The `nth` bucket of `kind`; `oldest` when kept only as the oldest snapshot
    /// while counts were left. `hourly 5/24`, `daily 4/7 (oldest)`
    Bucket {
        kind: BucketKind,
        nth: u32,
        count: u32,
        oldest: bool,
    },
    /// Under `--keep-within-<kind>`. `within daily 7d`
    WithinBucket { kind: BucketKind, span: Span },
    /// Carries a tag of `--keep-tag`. `tag nightly`
    Tag(String),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let of = |f: &mut fmt::Formatter<'_>, count: u32| {
            if count == UNLIMITED {
                Ok(())
            } else {
                write!(f, "/{count}")
            }
        };
        match self {
            Reason::NoPolicy => f.write_str("no policy"),
            Reason::Newest { name } => write!(f, "newest of {name}"),
            Reason::Future => f.write_str("in the future"),
            Reason::Last { nth, count } => {
                write!(f, "last {nth}")?;
                of(f, *count)
            }
            Reason::Within(span) => write!(f, "within {span}"),
            Reason::Bucket {
                kind,
                nth,
                count,
                oldest,
            } => {
                write!(f, "{kind} {nth}")?;
                of(f, *count)?;
                if *oldest {
                    f.write_str(" (oldest)")?;
                }
                Ok(())
            }
            Reason::WithinBucket { kind, span } => write!(f, "within {kind} {span}"),
            Reason::Tag(tag) => write!(f, "tag {tag}"),
        }
    }
}

/// The verdict on one snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub id: SnapshotId,
    pub name: String,
    pub time: DateTime<Utc>,
    /// Kept when at least one reason applies.
    pub keep: bool,
    /// Every rule that keeps the snapshot, in a fixed order: future, newest,
    /// last, within, buckets (minutely to yearly), within-buckets, tags.
    pub reasons: Vec<Reason>,
}

/// Decides which snapshots `policy` keeps, measured against `now`. Returns one
/// decision per snapshot, in the order of `snapshots`. See the
/// [module documentation](self) for the rules. An empty policy keeps everything;
/// a policy that fails [`Policy::validate`] is applied as written (a count of 0
/// or a zero span keeps nothing by itself).
pub fn apply(policy: &Policy, snapshots: &[Snapshot], now: DateTime<Utc>) -> Vec<Decision> {
    if policy.local_time {
        apply_in(policy, snapshots, now, &Local)
    } else {
        apply_in(policy, snapshots, now, &Utc)
    }
}

/// [`apply`] with buckets and calendar spans in zone `tz`.
fn apply_in<Tz: TimeZone>(
    policy: &Policy,
    snapshots: &[Snapshot],
    now: DateTime<Utc>,
    tz: &Tz,
) -> Vec<Decision> {
    let mut decisions: Vec<Decision> = snapshots
        .iter()
        .map(|s| Decision {
            id: s.id,
            name: s.manifest.name.clone(),
            time: s.time(),
            keep: false,
            reasons: Vec::new(),
        })
        .collect();
    if policy.is_empty() {
        for d in &mut decisions {
            d.reasons.push(Reason::NoPolicy);
        }
    } else {
        let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, s) in snapshots.iter().enumerate() {
            groups.entry(s.manifest.name.as_str()).or_default().push(i);
        }
        for (name, mut group) in groups {
            // Newest first; the larger id is the newer at the same instant.
            group.sort_by(|&a, &b| {
                let (a, b) = (&decisions[a], &decisions[b]);
                (b.time, b.id).cmp(&(a.time, a.id))
            });
            apply_group(policy, name, snapshots, &group, &mut decisions, now, tz);
        }
    }
    for d in &mut decisions {
        d.keep = !d.reasons.is_empty();
    }
    decisions
}

/// One database's snapshots, `group` holding their indices newest first.
fn apply_group<Tz: TimeZone>(
    policy: &Policy,
    name: &str,
    snapshots: &[Snapshot],
    group: &[usize],
    decisions: &mut [Decision],
    now: DateTime<Utc>,
    tz: &Tz,
) {
    let Some(&newest) = group.first() else {
        return;
    };
    let split = group
        .iter()
        .position(|&i| decisions[i].time <= now)
        .unwrap_or(group.len());
    let (future, list) = group.split_at(split);
    for &i in future {
        decisions[i].reasons.push(Reason::Future);
    }
    decisions[newest].reasons.push(Reason::Newest {
        name: name.to_string(),
    });

    if let Some(&reference) = list.first() {
        let reference = decisions[reference].time;
        let len = list.len();

        if let Some(count) = policy.keep_last.filter(|&c| c > 0) {
            for (nr, &i) in list.iter().take(count as usize).enumerate() {
                decisions[i].reasons.push(Reason::Last {
                    nth: nr as u32 + 1,
                    count,
                });
            }
        }

        if let Some(span) = policy.keep_within.filter(|s| !s.is_zero()) {
            let cut = cutoff(reference, &span, tz);
            for &i in list {
                if decisions[i].time <= cut {
                    break;
                }
                decisions[i].reasons.push(Reason::Within(span));
            }
        }

        for kind in BucketKind::ALL {
            let Some(count) = policy.count(kind).filter(|&c| c > 0) else {
                continue;
            };
            let mut last: Option<i64> = None;
            let mut used: u32 = 0;
            for (nr, &i) in list.iter().enumerate() {
                if used >= count {
                    break;
                }
                let key = kind.key(&decisions[i].time, tz);
                let new_bucket = last != Some(key);
                // restic: also keep the oldest snapshot while counts are left.
                if new_bucket || nr == len - 1 {
                    last = Some(key);
                    used += 1;
                    decisions[i].reasons.push(Reason::Bucket {
                        kind,
                        nth: used,
                        count,
                        oldest: !new_bucket,
                    });
                }
            }
        }

        for kind in BucketKind::ALL {
            let Some(span) = policy.within_bucket(kind).filter(|s| !s.is_zero()) else {
                continue;
            };
            let cut = cutoff(reference, &span, tz);
            let mut last: Option<i64> = None;
            for &i in list {
                if decisions[i].time <= cut {
                    break;
                }
                let key = kind.key(&decisions[i].time, tz);
                if last != Some(key) {
                    last = Some(key);
                    decisions[i]
                        .reasons
                        .push(Reason::WithinBucket { kind, span });
                }
            }
        }
    }

    for (n, tag) in policy.keep_tags.iter().enumerate() {
        if tag.is_empty() || policy.keep_tags[..n].contains(tag) {
            continue;
        }
        for &i in group {
            if snapshots[i].manifest.tags.contains(tag) {
                decisions[i].reasons.push(Reason::Tag(tag.clone()));
            }
        }
    }
}

/// `reference` minus `span`: years, months and days on the calendar of `tz`
/// (months clamped to the month's end), then hours and minutes as exact
/// durations. Saturates at the earliest representable time.
fn cutoff<Tz: TimeZone>(reference: DateTime<Utc>, span: &Span, tz: &Tz) -> DateTime<Utc> {
    let compute = || -> Option<DateTime<Utc>> {
        let local = reference.with_timezone(tz);
        let months = span.years.checked_mul(12)?.checked_add(span.months)?;
        let naive = local
            .naive_local()
            .checked_sub_months(Months::new(months))?
            .checked_sub_days(Days::new(span.days as u64))?;
        let back = match tz.from_local_datetime(&naive) {
            LocalResult::Single(t) => t.with_timezone(&Utc),
            // A repeated local time: the earlier instant (keeps more).
            LocalResult::Ambiguous(a, b) => a.with_timezone(&Utc).min(b.with_timezone(&Utc)),
            // A skipped local time: read it with the reference's offset.
            LocalResult::None => {
                let offset = TimeDelta::seconds(local.offset().fix().local_minus_utc() as i64);
                Utc.from_utc_datetime(&naive.checked_sub_signed(offset)?)
            }
        };
        back.checked_sub_signed(TimeDelta::hours(span.hours as i64))?
            .checked_sub_signed(TimeDelta::minutes(span.minutes as i64))
    };
    compute().unwrap_or(DateTime::<Utc>::MIN_UTC)
}

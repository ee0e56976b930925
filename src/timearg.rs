//! Parsing of times and durations given on the command line.

use crate::UsageError;
use anyhow::Result;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Timelike, Utc};
use std::time::Duration;

/// Accepts RFC 3339 (`2026-01-01T00:10:00Z`, `2026-01-01T02:10:00+02:00`) and
/// `2026-01-01 00:10:00` / `2026-01-01T00:10:00` / `2026-01-01` taken as UTC.
/// A leap second (`23:59:60`) is refused: a snapshot's time is Unix seconds and
/// nanoseconds, which have no 61st second (chrono keeps it as nanoseconds ≥ 1e9).
pub fn parse_time(s: &str) -> Result<DateTime<Utc>> {
    let t = parse_any_time(s)?;
    if t.nanosecond() >= 1_000_000_000 {
        return Err(UsageError(format!(
            "invalid time {s:?}: a leap second (:60) cannot be stored; give :59 or the next minute's :00"
        ))
        .into());
    }
    Ok(t)
}

fn parse_any_time(s: &str) -> Result<DateTime<Utc>> {
    let t = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Ok(dt.with_timezone(&Utc));
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(t, fmt) {
            return Ok(n.and_utc());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        if let Some(n) = d.and_hms_opt(0, 0, 0) {
            return Ok(n.and_utc());
        }
    }
    Err(UsageError(format!(
        "invalid time {s:?}: use RFC 3339 (2026-01-01T00:10:00Z) or \"2026-01-01 00:10:00\" (UTC)"
    ))
    .into())
}

/// Accepts durations of timeouts and intervals such as `5s`, `500ms`, `10min`,
/// `1h 30min` (humantime's syntax). A bare `m` stays minutes, as it always was
/// here: every watch config and script has `every = "10m"`, and a timeout has no
/// reading in months. Months are refused in any spelling (`mo`, humantime's `M`
/// and `month`): they have no fixed length, and `5M` next to `5m` is the
/// ambiguity retention spans refuse `m` for.
pub fn parse_duration(s: &str) -> Result<Duration> {
    if let Some(unit) = units(s).find(|u| is_month(u)) {
        return Err(UsageError(format!(
            "invalid duration {s:?}: {unit:?} is months, which have no fixed length here; give days (30d) or hours"
        ))
        .into());
    }
    humantime::parse_duration(s.trim()).map_err(|e| {
        UsageError(format!(
            "invalid duration {s:?}: {e} (examples: 5s, 500ms, 10min, 1h 30min)"
        ))
        .into()
    })
}

/// The unit words of a duration (`1h 30min` → `h`, `min`).
fn units(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| !c.is_ascii_alphabetic())
        .filter(|u| !u.is_empty())
}

fn is_month(u: &str) -> bool {
    matches!(u, "M" | "mo" | "month" | "months")
}

/// A duration as it is shown (logs, `status`, messages): humantime's words, with
/// minutes as `min` so that no `m` is left to read as months (`1h 30min`,
/// `10min`, `500ms`). [`parse_duration`] reads it back.
pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(d)
        .to_string()
        .split(' ')
        .map(|w| match w.strip_suffix('m') {
            Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => format!("{n}min"),
            _ => w.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_forms_agree() {
        let a = parse_time("2026-01-01T00:10:00Z").unwrap();
        assert_eq!(parse_time("2026-01-01 00:10:00").unwrap(), a);
        assert_eq!(parse_time("2026-01-01T00:10:00").unwrap(), a);
        assert_eq!(parse_time("2026-01-01T02:10:00+02:00").unwrap(), a);
        assert_eq!(parse_time("2026-01-01 00:10").unwrap(), a);
        assert_eq!(
            parse_time("2026-01-01").unwrap().timestamp() + 600,
            a.timestamp()
        );
    }

    #[test]
    fn leap_seconds_are_refused_in_every_form() {
        for s in [
            "2026-01-01T00:00:60Z",
            "2026-12-31T23:59:60.5Z",
            "2026-12-31 23:59:60",
            "2026-12-31T23:59:60",
        ] {
            let e = parse_time(s).unwrap_err();
            assert!(e.downcast_ref::<UsageError>().is_some(), "{s}: {e}");
            assert!(e.to_string().contains("leap second"), "{s}: {e}");
        }
        // The second before is a valid time.
        assert!(parse_time("2026-12-31T23:59:59.999Z").is_ok());
    }

    #[test]
    fn garbage_is_rejected_with_the_accepted_forms() {
        let e = parse_time("yesterday").unwrap_err().to_string();
        assert!(e.contains("RFC 3339"), "{e}");
        assert!(parse_time("2026-13-01 00:00:00").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert_eq!(
            parse_duration("1500ms").unwrap(),
            Duration::from_millis(1500)
        );
    }

    #[test]
    fn minutes_are_min_or_m_and_months_are_refused() {
        let m = |n: u64| Duration::from_secs(60 * n);
        assert_eq!(parse_duration("10min").unwrap(), m(10));
        // Compatibility: a bare `m` has always been minutes here.
        assert_eq!(parse_duration("10m").unwrap(), m(10));
        assert_eq!(parse_duration("1h 30min").unwrap(), m(90));
        for s in ["1mo", "1M", "2months", "1month", "1d 1mo"] {
            let e = parse_duration(s).unwrap_err();
            assert!(e.downcast_ref::<UsageError>().is_some(), "{s}");
            assert!(e.to_string().contains("is months"), "{s}: {e}");
        }
    }

    #[test]
    fn durations_are_shown_with_min_and_read_back() {
        for (secs, shown) in [
            (600, "10min"),
            (5400, "1h 30min"),
            (30, "30s"),
            (86_400 + 60, "1day 1min"),
        ] {
            let d = Duration::from_secs(secs);
            assert_eq!(format_duration(d), shown);
            assert_eq!(parse_duration(shown).unwrap(), d);
        }
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
    }
}

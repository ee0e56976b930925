//! Human-readable formatting of sizes and times, and the JSON forms shared by
//! several commands.

use chrono::{DateTime, Utc};
use pagesnap_core::retention::{Policy, UNLIMITED};
use serde_json::{json, Map, Value};

/// Sizes (`1536` → `1.5 KiB`) and JSON times (RFC 3339 in UTC with `Z`): the
/// bench crate's, so that `pagesnap bench` reports them as every other command does.
pub use pagesnap_bench::format::{bytes, time_json};

/// Times are shown in UTC, to the second, and say so: `2026-12-05 20:01:03 UTC`.
pub fn time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// The time of a log line (`watch`), written as every JSON time is.
pub struct LogTime;

impl tracing_subscriber::fmt::time::FormatTime for LogTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        w.write_str(&time_json(&Utc::now()))
    }
}

/// A retention policy in JSON: one member per rule that is set, named as the
/// flag is (`keep_last`, `keep_within_daily`, `keep_tag`), counts as numbers
/// (-1 for `unlimited`, as restic writes it), spans as their text (`30d`,
/// `6mo`), and `local_time`. Empty policy: `{"local_time": false}`.
pub fn policy_json(p: &Policy) -> Value {
    let mut o = Map::new();
    let count = |c: u32| {
        if c == UNLIMITED {
            json!(-1)
        } else {
            json!(c)
        }
    };
    let put_count = |o: &mut Map<String, Value>, k: &str, c: Option<u32>| {
        if let Some(c) = c {
            o.insert(k.into(), count(c));
        }
    };
    put_count(&mut o, "keep_last", p.keep_last);
    put_count(&mut o, "keep_minutely", p.keep_minutely);
    put_count(&mut o, "keep_hourly", p.keep_hourly);
    put_count(&mut o, "keep_daily", p.keep_daily);
    put_count(&mut o, "keep_weekly", p.keep_weekly);
    put_count(&mut o, "keep_monthly", p.keep_monthly);
    put_count(&mut o, "keep_yearly", p.keep_yearly);
    for (k, s) in [
        ("keep_within", p.keep_within),
        ("keep_within_minutely", p.keep_within_minutely),
        ("keep_within_hourly", p.keep_within_hourly),
        ("keep_within_daily", p.keep_within_daily),
        ("keep_within_weekly", p.keep_within_weekly),
        ("keep_within_monthly", p.keep_within_monthly),
        ("keep_within_yearly", p.keep_within_yearly),
    ] {
        if let Some(s) = s {
            o.insert(k.into(), json!(s.to_string()));
        }
    }
    if !p.keep_tags.is_empty() {
        o.insert("keep_tag".into(), json!(p.keep_tags));
    }
    o.insert("local_time".into(), json!(p.local_time));
    Value::Object(o)
}

/// The members of `status --json` that hold times, as the status file's serde
/// writes them, rewritten as [`time_json`] writes times.
const STATUS_TIME_KEYS: &[&str] = &[
    "started",
    "updated",
    "since",
    "next_due",
    "time",
    "next_run",
    "running_since",
    "deadline",
    "stuck_since",
    "last_attempt",
];

/// Rewrites every time member (by [`STATUS_TIME_KEYS`]) of a JSON document made
/// by serde from `DateTime` fields into the one JSON time format.
pub fn normalize_times(v: &mut Value) {
    match v {
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                if let (true, Value::String(s)) = (STATUS_TIME_KEYS.contains(&k.as_str()), &*x) {
                    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
                        *x = json!(time_json(&t.with_timezone(&Utc)));
                        continue;
                    }
                }
                normalize_times(x);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(normalize_times),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pagesnap_core::retention::{parse_span, Policy};

    #[test]
    fn times_say_utc() {
        let t = DateTime::parse_from_rfc3339("2026-12-05T22:01:03.5+02:00")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(time(&t), "2026-12-05 20:01:03 UTC");
        assert_eq!(time_json(&t), "2026-12-05T20:01:03.500000000Z");
        let whole = DateTime::parse_from_rfc3339("2026-12-05T20:01:03Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(time_json(&whole), "2026-12-05T20:01:03Z");
    }

    #[test]
    fn policies_are_objects() {
        assert_eq!(
            policy_json(&Policy::default()),
            json!({ "local_time": false })
        );
        let p = Policy {
            keep_last: Some(7),
            keep_daily: Some(14),
            keep_yearly: Some(UNLIMITED),
            keep_within: parse_span("30d").ok(),
            keep_within_monthly: parse_span("2y6mo").ok(),
            keep_tags: vec!["x".into()],
            local_time: true,
            ..Policy::default()
        };
        assert_eq!(
            policy_json(&p),
            json!({
                "keep_last": 7, "keep_daily": 14, "keep_yearly": -1,
                "keep_within": "30d", "keep_within_monthly": "2y6mo",
                "keep_tag": ["x"], "local_time": true,
            })
        );
    }

    #[test]
    fn status_times_are_normalized() {
        let mut v = json!({
            "started": "2026-12-05T20:01:03.123456789+00:00",
            "databases": [{ "name": "2026-01-01T00:00:00+00:00",
                            "last_snapshot": { "time": "2026-12-05T20:01:03.000Z" } }],
        });
        normalize_times(&mut v);
        assert_eq!(v["started"], "2026-12-05T20:01:03.123456789Z");
        assert_eq!(
            v["databases"][0]["last_snapshot"]["time"],
            "2026-12-05T20:01:03Z"
        );
        // Not a time member: left as it is.
        assert_eq!(v["databases"][0]["name"], "2026-01-01T00:00:00+00:00");
    }
}

//! Human-readable formatting of sizes and times, and the JSON forms shared by
//! several commands.

use chrono::{DateTime, Utc};
use pagesnap_core::retention::{parse_count, parse_span, Policy, PolicyError, Span, UNLIMITED};
use serde_json::{json, Map, Value};

/// Sizes (`1536` → `1.5 KiB`) and JSON times (RFC 3339 in UTC with `Z`): the
/// bench crate's, so that `pagesnap bench` reports them as every other command does.
pub use pagesnap_bench::format::{bytes, time_json};

/// Times are shown in UTC, to the second, and say so: `2026-12-05 20:01:03 UTC`.
pub fn time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// Which snapshot a command used, for stderr: `snapshot 1a2b3c4d of app, taken …`.
pub fn snapshot_used(s: &pagesnap_core::Snapshot) -> String {
    format!(
        "snapshot {} of {}, taken {}",
        s.id.short(),
        s.manifest.name,
        time(&s.time())
    )
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

/// The policy a text of flags gives (as [`Policy`]'s `Display` writes it, e.g.
/// `--keep-last 3 --keep-tag 'a b'`); `None` for anything else. Spans written
/// before `mo` existed (`6m`, months) are read with that meaning.
pub fn policy_from_flags(s: &str) -> Option<Policy> {
    let span = |v: &str| match parse_span(v) {
        Ok(s) => Some(s),
        Err(PolicyError::AmbiguousUnit { months, .. }) => parse_span(&months).ok(),
        Err(_) => None,
    };
    let count = |v: &str| parse_count(v).ok();
    let mut p = Policy::default();
    let mut words = shell_words(s)?.into_iter();
    while let Some(flag) = words.next() {
        if flag == "--local-time" {
            p.local_time = true;
            continue;
        }
        let v = words.next()?;
        let (c, w): (Option<&mut Option<u32>>, Option<&mut Option<Span>>) = match flag.as_str() {
            "--keep-last" => (Some(&mut p.keep_last), None),
            "--keep-minutely" => (Some(&mut p.keep_minutely), None),
            "--keep-hourly" => (Some(&mut p.keep_hourly), None),
            "--keep-daily" => (Some(&mut p.keep_daily), None),
            "--keep-weekly" => (Some(&mut p.keep_weekly), None),
            "--keep-monthly" => (Some(&mut p.keep_monthly), None),
            "--keep-yearly" => (Some(&mut p.keep_yearly), None),
            "--keep-within" => (None, Some(&mut p.keep_within)),
            "--keep-within-minutely" => (None, Some(&mut p.keep_within_minutely)),
            "--keep-within-hourly" => (None, Some(&mut p.keep_within_hourly)),
            "--keep-within-daily" => (None, Some(&mut p.keep_within_daily)),
            "--keep-within-weekly" => (None, Some(&mut p.keep_within_weekly)),
            "--keep-within-monthly" => (None, Some(&mut p.keep_within_monthly)),
            "--keep-within-yearly" => (None, Some(&mut p.keep_within_yearly)),
            "--keep-tag" => {
                p.keep_tags.push(v);
                continue;
            }
            _ => return None,
        };
        match (c, w) {
            (Some(c), _) => *c = Some(count(&v)?),
            (_, Some(w)) => *w = Some(span(&v)?),
            _ => return None,
        }
    }
    Some(p)
}

/// Words as a POSIX shell splits them, for the quoting [`Policy`]'s `Display`
/// uses (`'…'`, and `\'` between quoted parts); `None` on an open quote.
fn shell_words(s: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' => words.extend(word.take()),
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next()? {
                        '\'' => break,
                        q => w.push(q),
                    }
                }
            }
            '\\' => word.get_or_insert_with(String::new).push(chars.next()?),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Some(words)
}

/// A watch status's `retention` text (`--keep-daily 7 (config)`: the policy
/// and where it comes from) as `{"policy": {…}, "from": "config"}`; the text
/// as it is when it is not one.
pub fn retention_json(text: &str) -> Value {
    let parsed = text
        .strip_suffix(')')
        .and_then(|t| t.rsplit_once(" ("))
        .and_then(|(flags, from)| Some((policy_from_flags(flags)?, from)));
    match parsed {
        Some((p, from)) => json!({ "policy": policy_json(&p), "from": from }),
        None => json!(text),
    }
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
    fn policies_read_back_from_their_flags() {
        for p in [
            Policy::default(),
            Policy {
                keep_last: Some(3),
                keep_yearly: Some(UNLIMITED),
                keep_within: parse_span("1y6mo").ok(),
                keep_within_hourly: parse_span("90min").ok(),
                keep_tags: vec!["a b".into(), "it's".into(), "x".into()],
                local_time: true,
                ..Policy::default()
            },
        ] {
            assert_eq!(policy_from_flags(&p.to_string()), Some(p.clone()), "{p}");
        }
        // Written by an earlier pagesnap, where `m` was months.
        let old = policy_from_flags("--keep-within 6m --keep-daily 7").unwrap();
        assert_eq!(old.keep_within.unwrap().months, 6);
        assert_eq!(old.keep_daily, Some(7));
        for bad in [
            "--keep-bogus 1",
            "--keep-last",
            "--keep-last x",
            "--keep-tag 'open",
        ] {
            assert_eq!(policy_from_flags(bad), None, "{bad}");
        }
        assert_eq!(
            retention_json("--keep-daily 7 --keep-within 6m (config)"),
            json!({ "policy": { "keep_daily": 7, "keep_within": "6mo", "local_time": false }, "from": "config" })
        );
        assert_eq!(retention_json("something else"), json!("something else"));
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

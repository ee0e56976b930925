//! One format for every time and every policy the commands print: JSON times
//! are RFC 3339 in UTC with `Z` (whole seconds, or 9 digits of fraction), text
//! times end in `UTC`, text sizes are human, and a policy in JSON is an object.

use crate::util::*;
use serde_json::{json, Value};

/// Whether `s` is a JSON time as docs/JSON.md gives it.
pub fn canonical_time(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let base = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    base && (&s[19..] == "Z" || (s.len() == 30 && b[19] == b'.' && digits(20..29) && b[29] == b'Z'))
}

/// Every string in `v` that reads as a time is in the one format; returns how
/// many there were.
pub fn check_times(v: &Value, at: &str) -> usize {
    match v {
        Value::String(s) if chrono::DateTime::parse_from_rfc3339(s).is_ok() => {
            assert!(canonical_time(s), "{at}: {s:?} is not RFC 3339 UTC with Z");
            1
        }
        Value::Object(o) => o
            .iter()
            .map(|(k, x)| check_times(x, &format!("{at}.{k}")))
            .sum(),
        Value::Array(a) => a.iter().map(|x| check_times(x, at)).sum(),
        _ => 0,
    }
}

#[test]
fn the_time_format_is_checked_as_documented() {
    assert!(canonical_time("2026-12-05T20:01:03Z"));
    assert!(canonical_time("2026-12-05T20:01:03.123456789Z"));
    assert!(!canonical_time("2026-12-05T20:01:03+00:00"));
    assert!(!canonical_time("2026-12-05T20:01:03.123Z"));
    assert!(!canonical_time("2026-12-05 20:01:03"));
}

#[test]
fn every_json_time_has_one_format_and_text_times_say_utc() {
    let fx = Fx::new();
    let db = fx.path("app.db");
    let conn = create_db(&db, Journal::Wal, 300, 3);
    // A snapshot at now (a fraction of a second) and two at whole seconds.
    let now = fx.backup(&db, &[]);
    let frac = now["time"].as_str().unwrap();
    assert!(canonical_time(frac), "{frac}");
    mutate(&conn, 1);
    fx.backup(&db, &["--time", "2026-01-01T02:10:00+02:00"]);
    mutate(&conn, 2);
    let b = fx.backup(&db, &["--time", "2026-01-02 00:10:00.5"]);
    assert_eq!(b["time"], "2026-01-02T00:10:00.500000000Z");
    let docs = [
        ok_json(fx.cmd().args(["--json", "snapshots"])),
        ok_json(
            fx.cmd()
                .args(["--json", "forget", "--keep-last", "1", "--dry-run"]),
        ),
        ok_json(
            fx.cmd()
                .args(["--json", "gc", "--keep-last", "2", "--dry-run"]),
        ),
        ok_json(fx.cmd().args(["--json", "stats"])),
    ];
    for d in &docs {
        assert!(check_times(d, "") >= 3, "{d}");
    }
    // A JSON time read back selects exactly that snapshot.
    let out = fx.path("back.db");
    let r = fx.restore(&["latest", "--at", "2026-01-02T00:10:00.500000000Z"], &out);
    assert_eq!(r["id"], b["id"]);

    let text = String::from_utf8(ok(fx.cmd().arg("snapshots"))).unwrap();
    assert_has(
        &text,
        &["2026-01-01 00:10:00 UTC", "2026-01-02 00:10:00 UTC"],
    );
    let text = String::from_utf8(ok(fx.cmd().args([
        "forget",
        "--keep-last",
        "1",
        "--dry-run",
    ])))
    .unwrap();
    assert_has(&text, &["2026-01-01 00:10:00 UTC  app"]);
}

#[test]
fn restore_reports_a_human_size() {
    let fx = Fx::new();
    let db = small_db(&fx, "app.db", 5);
    fx.backup(&db, &[]);
    let size = std::fs::metadata(&db).unwrap().len();
    let out = fx.path("out.db");
    let text = String::from_utf8(ok(fx.cmd().args(["restore", "-o"]).arg(&out))).unwrap();
    assert!(!text.contains(&format!("{size} bytes")), "{text}");
    assert_has(&text, &["KiB, blake3"]);
    let out = fx.cmd().args(["restore", "-o", "-"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_has(&err, &["KiB) to stdout"]);
}

#[test]
fn a_policy_in_json_is_an_object() {
    let fx = Fx::new();
    let db = small_db(&fx, "app.db", 6);
    fx.backup(&db, &["--time", "2026-01-01 00:00:00"]);
    let want = json!({
        "keep_last": 7,
        "keep_daily": 14,
        "keep_yearly": -1,
        "keep_within": "30d",
        "keep_within_monthly": "1y6mo",
        "keep_within_hourly": "90min",
        "keep_tag": ["x", "y z"],
        "local_time": false,
    });
    let set = ok_json(fx.cmd().args([
        "--json",
        "policy",
        "set",
        "--keep-last",
        "7",
        "--keep-daily",
        "14",
        "--keep-yearly",
        "unlimited",
        "--keep-within",
        "30d",
        "--keep-within-monthly",
        "1y6mo",
        "--keep-within-hourly",
        "90min",
        "--keep-tag",
        "x",
        "--keep-tag",
        "y z",
    ]));
    assert_keys(&set, &["policy", "saved"]);
    assert_eq!(set["policy"], want);
    let show = ok_json(fx.cmd().args(["--json", "policy", "show"]));
    assert_keys(&show, &["policy"]);
    assert_eq!(show["policy"], want);
    let text = String::from_utf8(ok(fx.cmd().args(["policy", "show"]))).unwrap();
    assert_eq!(
        text.trim_end(),
        "--keep-last 7 --keep-within 30d --keep-daily 14 --keep-yearly unlimited \
         --keep-within-hourly 90min --keep-within-monthly 1y6mo --keep-tag x --keep-tag 'y z'"
    );
    let f = ok_json(fx.cmd().args(["--json", "forget", "--dry-run"]));
    assert_eq!(f["policy"], want);
    let g = ok_json(fx.cmd().args(["--json", "gc", "--dry-run"]));
    assert_eq!(g["forget"]["policy"], want);
    let f = ok_json(fx.cmd().args([
        "--json",
        "forget",
        "--keep-within",
        "2mo",
        "--local-time",
        "--dry-run",
    ]));
    assert_eq!(
        f["policy"],
        json!({ "keep_within": "2mo", "local_time": true })
    );
    // Forgetting by id has no policy.
    let id = fx.snapshots()[0]["id"].as_str().unwrap().to_string();
    let f = ok_json(fx.cmd().args(["--json", "forget", "--dry-run", &id]));
    assert_eq!(f["policy"], Value::Null);
}

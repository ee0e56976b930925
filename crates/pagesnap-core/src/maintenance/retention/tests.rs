use super::*;
use crate::format::manifest::Manifest;
use crate::types::Id;
use chrono::{FixedOffset, NaiveDateTime};
use proptest::prelude::*;
use std::collections::{BTreeSet, HashMap};

const NOW: &str = "2025-06-15 12:00:00";

fn t(s: &str) -> DateTime<Utc> {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
        .unwrap_or_else(|e| panic!("bad test time {s:?}: {e}"))
        .and_utc()
}

fn id(n: u16) -> Id {
    let mut b = [0u8; 32];
    b[..2].copy_from_slice(&n.to_be_bytes());
    b[31] = 1;
    Id(b)
}

fn snap(id: Id, name: &str, time: DateTime<Utc>, tags: &[&str]) -> Snapshot {
    Snapshot {
        id,
        manifest: Manifest {
            time_unix: time.timestamp(),
            time_nanos: time.timestamp_subsec_nanos(),
            name: name.into(),
            tags: tags.iter().map(|s| s.to_string()).collect(),
            ..Manifest::sample()
        },
    }
}

fn count_mut(p: &mut Policy, k: BucketKind) -> &mut Option<u32> {
    match k {
        BucketKind::Minutely => &mut p.keep_minutely,
        BucketKind::Hourly => &mut p.keep_hourly,
        BucketKind::Daily => &mut p.keep_daily,
        BucketKind::Weekly => &mut p.keep_weekly,
        BucketKind::Monthly => &mut p.keep_monthly,
        BucketKind::Yearly => &mut p.keep_yearly,
    }
}

fn within_mut(p: &mut Policy, k: BucketKind) -> &mut Option<Span> {
    match k {
        BucketKind::Minutely => &mut p.keep_within_minutely,
        BucketKind::Hourly => &mut p.keep_within_hourly,
        BucketKind::Daily => &mut p.keep_within_daily,
        BucketKind::Weekly => &mut p.keep_within_weekly,
        BucketKind::Monthly => &mut p.keep_within_monthly,
        BucketKind::Yearly => &mut p.keep_within_yearly,
    }
}

/// Reads the flags `Display for Policy` writes (unquoted tags only).
fn policy(flags: &str) -> Policy {
    let mut p = Policy::default();
    let mut it = flags.split_whitespace();
    while let Some(flag) = it.next() {
        if flag == "--local-time" {
            p.local_time = true;
            continue;
        }
        let v = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag {
            "--keep-last" => p.keep_last = Some(parse_count(v).unwrap()),
            "--keep-within" => p.keep_within = Some(parse_span(v).unwrap()),
            "--keep-tag" => p.keep_tags.push(v.to_string()),
            _ => {
                if let Some(&k) = BucketKind::ALL.iter().find(|k| k.count_flag() == flag) {
                    *count_mut(&mut p, k) = Some(parse_count(v).unwrap());
                } else if let Some(&k) = BucketKind::ALL.iter().find(|k| k.within_flag() == flag) {
                    *within_mut(&mut p, k) = Some(parse_span(v).unwrap());
                } else {
                    panic!("unknown flag {flag}");
                }
            }
        }
    }
    p
}

type S = (&'static str, &'static str, &'static [&'static str]);

struct Case {
    what: &'static str,
    /// (database name, UTC time, tags); ids are index + 1 unless `ids` is set.
    snaps: &'static [S],
    ids: &'static [u16],
    policy: &'static str,
    /// Indices of the snapshots kept.
    kept: &'static [usize],
    /// The full reason list of some snapshots.
    reasons: &'static [(usize, &'static [&'static str])],
}

const fn case(
    what: &'static str,
    snaps: &'static [S],
    policy: &'static str,
    kept: &'static [usize],
    reasons: &'static [(usize, &'static [&'static str])],
) -> Case {
    Case {
        what,
        snaps,
        ids: &[],
        policy,
        kept,
        reasons,
    }
}

const CASES: &[Case] = &[
    case("empty list", &[], "--keep-last 3", &[], &[]),
    case(
        "empty policy keeps everything",
        &[
            ("app", "2024-01-01 00:00:00", &[]),
            ("app", "2024-01-02 00:00:00", &[]),
        ],
        "",
        &[0, 1],
        &[(0, &["no policy"]), (1, &["no policy"])],
    ),
    case(
        "single snapshot",
        &[("app", "2024-05-01 10:00:00", &[])],
        "--keep-daily 7",
        &[0],
        &[(0, &["newest of app", "daily 1/7"])],
    ),
    case(
        "single snapshot matching no rule is kept as the newest",
        &[("app", "2024-05-01 10:00:00", &["manual"])],
        "--keep-tag nightly",
        &[0],
        &[(0, &["newest of app"])],
    ),
    case(
        "keep-last larger than the list",
        &[
            ("app", "2024-05-02 00:00:00", &[]),
            ("app", "2024-05-01 00:00:00", &[]),
            ("app", "2024-05-03 00:00:00", &[]),
        ],
        "--keep-last 10",
        &[0, 1, 2],
        &[
            (2, &["newest of app", "last 1/10"]),
            (0, &["last 2/10"]),
            (1, &["last 3/10"]),
        ],
    ),
    case(
        "keep-last 2 of 4",
        &[
            ("app", "2024-05-01 00:00:00", &[]),
            ("app", "2024-05-02 00:00:00", &[]),
            ("app", "2024-05-03 00:00:00", &[]),
            ("app", "2024-05-04 00:00:00", &[]),
        ],
        "--keep-last 2",
        &[2, 3],
        &[(2, &["last 2/2"]), (0, &[])],
    ),
    case(
        "day boundary 23:59:59 / 00:00:00",
        &[
            ("app", "2024-03-01 12:00:00", &[]),
            ("app", "2024-03-01 23:59:59", &[]),
            ("app", "2024-03-02 00:00:00", &[]),
        ],
        "--keep-daily 2",
        &[1, 2],
        &[(2, &["newest of app", "daily 1/2"]), (1, &["daily 2/2"])],
    ),
    case(
        "the oldest is kept while counts are left (restic)",
        &[
            ("app", "2024-03-01 12:00:00", &[]),
            ("app", "2024-03-01 23:59:59", &[]),
            ("app", "2024-03-02 00:00:00", &[]),
        ],
        "--keep-daily 3",
        &[0, 1, 2],
        &[(0, &["daily 3/3 (oldest)"])],
    ),
    case(
        "month boundary",
        &[
            ("app", "2024-01-15 00:00:00", &[]),
            ("app", "2024-01-31 23:59:59", &[]),
            ("app", "2024-02-01 00:00:00", &[]),
        ],
        "--keep-monthly 2",
        &[1, 2],
        &[(1, &["monthly 2/2"])],
    ),
    case(
        "year boundary",
        &[
            ("app", "2023-06-01 00:00:00", &[]),
            ("app", "2023-12-31 23:59:59", &[]),
            ("app", "2024-01-01 00:00:00", &[]),
        ],
        "--keep-yearly 2",
        &[1, 2],
        &[(1, &["yearly 2/2"])],
    ),
    case(
        "hour boundary",
        &[
            ("app", "2024-03-01 10:30:00", &[]),
            ("app", "2024-03-01 10:59:59", &[]),
            ("app", "2024-03-01 11:00:00", &[]),
        ],
        "--keep-hourly 2",
        &[1, 2],
        &[(1, &["hourly 2/2"])],
    ),
    case(
        "minute boundary",
        &[
            ("app", "2024-03-01 10:00:00", &[]),
            ("app", "2024-03-01 10:00:59", &[]),
            ("app", "2024-03-01 10:01:00", &[]),
        ],
        "--keep-minutely 2",
        &[1, 2],
        &[(1, &["minutely 2/2"])],
    ),
    case(
        "ISO week: Sunday 23:59:59 and Monday 00:00:00 are different weeks",
        &[
            ("app", "2024-03-09 12:00:00", &[]), // Saturday, W10
            ("app", "2024-03-10 23:59:59", &[]), // Sunday, W10
            ("app", "2024-03-11 00:00:00", &[]), // Monday, W11
        ],
        "--keep-weekly 2",
        &[1, 2],
        &[(1, &["weekly 2/2"])],
    ),
    case(
        "ISO week 53 spans the year end",
        &[
            ("app", "2020-12-27 12:00:00", &[]), // Sunday, 2020-W52
            ("app", "2020-12-31 12:00:00", &[]), // 2020-W53
            ("app", "2021-01-03 23:59:59", &[]), // Sunday, 2020-W53
            ("app", "2021-01-04 00:00:00", &[]), // Monday, 2021-W01
        ],
        "--keep-weekly 3",
        &[0, 2, 3],
        &[(2, &["weekly 2/3"]), (0, &["weekly 3/3"])],
    ),
    case(
        "ISO week 1 starts in December",
        &[
            ("app", "2019-12-29 12:00:00", &[]), // Sunday, 2019-W52
            ("app", "2019-12-30 12:00:00", &[]), // Monday, 2020-W01
            ("app", "2020-01-05 12:00:00", &[]), // Sunday, 2020-W01
        ],
        "--keep-weekly 2",
        &[0, 2],
        &[(0, &["weekly 2/2"])],
    ),
    case(
        "years are calendar years, not ISO week-years",
        &[
            ("app", "2019-12-29 12:00:00", &[]),
            ("app", "2019-12-30 12:00:00", &[]),
            ("app", "2020-01-05 12:00:00", &[]),
        ],
        "--keep-yearly 2",
        &[1, 2],
        &[(1, &["yearly 2/2"])],
    ),
    case(
        "monthly across a leap February",
        &[
            ("app", "2024-01-31 12:00:00", &[]),
            ("app", "2024-02-29 23:59:59", &[]),
            ("app", "2024-03-01 00:00:00", &[]),
            ("app", "2024-02-01 00:00:00", &[]),
        ],
        "--keep-monthly 3",
        &[0, 1, 2],
        &[(0, &["monthly 3/3"]), (3, &[])],
    ),
    case(
        "ties in one second: the larger id is the newer",
        &[
            ("app", "2024-05-01 10:00:00", &[]),
            ("app", "2024-05-01 10:00:00", &[]),
            ("app", "2024-04-01 00:00:00", &[]),
        ],
        "--keep-last 1",
        &[1],
        &[(1, &["newest of app", "last 1/1"])],
    ),
    Case {
        what: "ties in one second, larger id listed first",
        snaps: &[
            ("app", "2024-05-01 10:00:00", &[]),
            ("app", "2024-05-01 10:00:00", &[]),
            ("app", "2024-05-01 10:00:00", &[]),
        ],
        ids: &[9, 3, 5],
        policy: "--keep-last 2",
        kept: &[0, 2],
        reasons: &[(0, &["newest of app", "last 1/2"]), (2, &["last 2/2"])],
    },
    case(
        "several databases: rules apply per name",
        &[
            ("app", "2024-05-01 00:00:00", &[]),
            ("logs", "2024-05-02 00:00:00", &[]),
            ("app", "2024-05-03 00:00:00", &[]),
            ("logs", "2024-04-01 00:00:00", &[]),
            ("app", "2024-04-01 00:00:00", &[]),
        ],
        "--keep-last 1",
        &[1, 2],
        &[
            (1, &["newest of logs", "last 1/1"]),
            (2, &["newest of app", "last 1/1"]),
        ],
    ),
    case(
        "several databases: each newest is kept without a matching rule",
        &[
            ("app", "2024-05-01 00:00:00", &["nightly"]),
            ("app", "2024-05-02 00:00:00", &[]),
            ("app", "2024-04-02 00:00:00", &[]),
            ("logs", "2024-01-01 00:00:00", &[]),
        ],
        "--keep-tag nightly",
        &[0, 1, 3],
        &[
            (0, &["tag nightly"]),
            (1, &["newest of app"]),
            (3, &["newest of logs"]),
        ],
    ),
    case(
        "keep-within: the boundary is exclusive",
        &[
            ("app", "2024-03-03 12:00:00", &[]),
            ("app", "2024-03-02 00:00:01", &[]),
            ("app", "2024-03-02 00:00:00", &[]), // exactly 36h before the newest
            ("app", "2024-03-01 00:00:00", &[]),
        ],
        "--keep-within 36h",
        &[0, 1],
        &[(0, &["newest of app", "within 36h"]), (1, &["within 36h"])],
    ),
    case(
        "keep-within is measured from the newest snapshot, not now",
        &[
            ("app", "2023-01-10 00:00:00", &[]),
            ("app", "2023-01-08 00:00:01", &[]),
            ("app", "2023-01-07 23:59:59", &[]),
        ],
        "--keep-within 2d",
        &[0, 1],
        &[(1, &["within 2d"])],
    ),
    case(
        "keep-within months are calendar months, clamped to the month end",
        &[
            ("app", "2024-03-31 12:00:00", &[]),
            ("app", "2024-02-29 12:00:01", &[]),
            ("app", "2024-02-29 12:00:00", &[]),
        ],
        "--keep-within 1mo",
        &[0, 1],
        &[(1, &["within 1mo"])],
    ),
    case(
        "keep-within weeks are 7 days",
        &[
            ("app", "2024-03-10 00:00:00", &[]),
            ("app", "2024-03-03 00:00:01", &[]),
            ("app", "2024-03-03 00:00:00", &[]),
        ],
        "--keep-within 1w",
        &[0, 1],
        &[(1, &["within 7d"])],
    ),
    case(
        "keep-within-daily",
        &[
            ("app", "2024-03-05 18:00:00", &[]),
            ("app", "2024-03-05 06:00:00", &[]),
            ("app", "2024-03-04 20:00:00", &[]),
            ("app", "2024-03-04 08:00:00", &[]),
            ("app", "2024-03-03 10:00:00", &[]),
            ("app", "2024-03-02 20:00:00", &[]),
            ("app", "2024-03-02 10:00:00", &[]), // before the cutoff 03-02 18:00
            ("app", "2024-03-01 12:00:00", &[]), // the oldest: not kept by within rules
        ],
        "--keep-within-daily 3d",
        &[0, 2, 4, 5],
        &[
            (0, &["newest of app", "within daily 3d"]),
            (5, &["within daily 3d"]),
            (7, &[]),
        ],
    ),
    case(
        "keep-within-hourly",
        &[
            ("app", "2024-03-01 12:30:00", &[]),
            ("app", "2024-03-01 12:10:00", &[]),
            ("app", "2024-03-01 11:50:00", &[]),
            ("app", "2024-03-01 11:20:00", &[]),
            ("app", "2024-03-01 10:40:00", &[]),
            ("app", "2024-03-01 10:20:00", &[]),
        ],
        "--keep-within-hourly 2h",
        &[0, 2, 4],
        &[(4, &["within hourly 2h"])],
    ),
    case(
        "keep-tag: any of several tags",
        &[
            ("app", "2024-03-01 00:00:00", &["nightly"]),
            ("app", "2024-03-02 00:00:00", &["manual", "pre-upgrade"]),
            ("app", "2024-03-03 00:00:00", &[]),
            ("app", "2024-03-04 00:00:00", &[]),
        ],
        "--keep-tag pre-upgrade --keep-tag nightly",
        &[0, 1, 3],
        &[
            (0, &["tag nightly"]),
            (1, &["tag pre-upgrade"]),
            (3, &["newest of app"]),
        ],
    ),
    case(
        "rules combine and reasons accumulate",
        &[
            ("app", "2024-03-01 09:00:00", &["release"]),
            ("app", "2024-03-01 18:00:00", &[]),
            ("app", "2024-03-02 09:00:00", &[]),
            ("app", "2024-03-02 18:00:00", &[]),
            ("app", "2024-03-03 09:00:00", &[]),
            ("app", "2024-03-03 18:00:00", &["release"]),
        ],
        "--keep-last 2 --keep-within 1d --keep-daily 2 --keep-tag release",
        &[0, 3, 4, 5],
        &[
            (
                5,
                &[
                    "newest of app",
                    "last 1/2",
                    "within 1d",
                    "daily 1/2",
                    "tag release",
                ],
            ),
            (4, &["last 2/2", "within 1d"]),
            (3, &["daily 2/2"]),
            (0, &["tag release"]),
        ],
    ),
    case(
        "a snapshot in the future is kept and takes no slot",
        &[
            ("app", "2024-05-01 10:00:00", &[]),
            ("app", "2024-05-02 10:00:00", &[]),
            ("app", "2025-06-15 13:00:00", &[]),
        ],
        "--keep-last 1",
        &[1, 2],
        &[(2, &["in the future", "newest of app"]), (1, &["last 1/1"])],
    ),
    case(
        "keep-within is measured from the newest snapshot not in the future",
        &[
            ("app", "2024-05-02 10:00:00", &[]),
            ("app", "2024-05-01 12:00:00", &[]),
            ("app", "2024-04-30 10:00:00", &[]),
            ("app", "2030-01-01 00:00:00", &[]),
        ],
        "--keep-within 1d",
        &[0, 1, 3],
        &[
            (3, &["in the future", "newest of app"]),
            (0, &["within 1d"]),
            (1, &["within 1d"]),
        ],
    ),
    case(
        "a snapshot taken exactly now is not in the future",
        &[
            ("app", "2025-06-15 12:00:00", &[]),
            ("app", "2025-06-14 12:00:00", &[]),
        ],
        "--keep-last 1",
        &[0],
        &[(0, &["newest of app", "last 1/1"])],
    ),
    case(
        "unlimited bucket count, oldest kept",
        &[
            ("app", "2024-03-01 10:10:00", &[]),
            ("app", "2024-03-01 10:50:00", &[]),
            ("app", "2024-03-01 11:20:00", &[]),
            ("app", "2024-03-01 12:05:00", &[]),
            ("app", "2024-03-01 12:45:00", &[]),
        ],
        "--keep-hourly unlimited",
        &[0, 1, 2, 4],
        &[
            (4, &["newest of app", "hourly 1"]),
            (1, &["hourly 3"]),
            (0, &["hourly 4 (oldest)"]),
        ],
    ),
    case(
        "keep-last -1 keeps all",
        &[
            ("app", "2024-03-01 10:00:00", &[]),
            ("app", "2024-03-01 10:00:01", &[]),
        ],
        "--keep-last -1",
        &[0, 1],
        &[(0, &["last 2"])],
    ),
    case(
        "without --local-time, days are UTC days",
        &[
            ("app", "2024-03-01 22:30:00", &[]),
            ("app", "2024-03-01 23:30:00", &[]),
            ("app", "2024-03-02 00:30:00", &[]),
        ],
        "--keep-daily 2",
        &[1, 2],
        &[(0, &[])],
    ),
    case(
        "keep-within-yearly keeps the newest of the year within the span only",
        &[
            ("app", "2024-03-01 00:00:00", &[]),
            ("app", "2024-02-01 00:00:00", &[]),
        ],
        "--keep-within-yearly 1h",
        &[0],
        &[(0, &["newest of app", "within yearly 1h"])],
    ),
];

fn build(c: &Case) -> Vec<Snapshot> {
    c.snaps
        .iter()
        .enumerate()
        .map(|(i, &(name, time, tags))| {
            let n = c.ids.get(i).copied().unwrap_or(i as u16 + 1);
            snap(id(n), name, t(time), tags)
        })
        .collect()
}

fn reason_strings(d: &Decision) -> Vec<String> {
    d.reasons.iter().map(|r| r.to_string()).collect()
}

#[test]
fn table() {
    assert!(CASES.len() >= 25);
    let mut failures = Vec::new();
    for c in CASES {
        let snaps = build(c);
        let p = policy(c.policy);
        let got = apply(&p, &snaps, t(NOW));
        assert_eq!(got.len(), snaps.len(), "{}", c.what);
        for (d, s) in got.iter().zip(&snaps) {
            assert_eq!(d.id, s.id, "{}: decisions follow the input order", c.what);
            assert_eq!(d.keep, !d.reasons.is_empty(), "{}", c.what);
        }
        let kept: Vec<usize> = (0..got.len()).filter(|&i| got[i].keep).collect();
        if kept != c.kept {
            let all: Vec<String> = got
                .iter()
                .map(|d| format!("{} {:?}", d.time, reason_strings(d)))
                .collect();
            failures.push(format!(
                "{}: kept {kept:?}, expected {:?}\n  {}",
                c.what,
                c.kept,
                all.join("\n  ")
            ));
        }
        for &(i, want) in c.reasons {
            let have = reason_strings(&got[i]);
            if have != want {
                failures.push(format!(
                    "{}: snapshot {i} has reasons {have:?}, expected {want:?}",
                    c.what
                ));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// The example of the module documentation.
#[test]
fn documented_example_schedule() {
    let start = t("2024-03-01 00:00:00");
    let snaps: Vec<Snapshot> = (0..432u16)
        .map(|i| {
            snap(
                id(i + 1),
                "app",
                start + TimeDelta::minutes(10 * i as i64),
                &[],
            )
        })
        .collect();
    let p = policy("--keep-last 6 --keep-hourly 24 --keep-daily 7");
    let got = apply(&p, &snaps, t("2024-03-04 00:00:00"));
    let kept: BTreeMap<String, Vec<String>> = got
        .iter()
        .filter(|d| d.keep)
        .map(|d| (d.time.format("%m-%d %H:%M").to_string(), reason_strings(d)))
        .collect();
    assert_eq!(kept.len(), 32);
    assert_eq!(got.iter().filter(|d| !d.keep).count(), 400);
    let r = |k: &str| kept.get(k).cloned().unwrap_or_default();
    assert_eq!(
        r("03-03 23:50"),
        ["newest of app", "last 1/6", "hourly 1/24", "daily 1/7"]
    );
    for (i, m) in ["23:40", "23:30", "23:20", "23:10", "23:00"]
        .iter()
        .enumerate()
    {
        assert_eq!(r(&format!("03-03 {m}")), [format!("last {}/6", i + 2)]);
    }
    for h in 0..23 {
        assert_eq!(
            r(&format!("03-03 {h:02}:50")),
            [format!("hourly {}/24", 24 - h)]
        );
    }
    assert_eq!(r("03-02 23:50"), ["daily 2/7"]);
    assert_eq!(r("03-01 23:50"), ["daily 3/7"]);
    assert_eq!(r("03-01 00:00"), ["daily 4/7 (oldest)"]);
}

#[test]
fn buckets_follow_the_zone() {
    let c = CASES
        .iter()
        .find(|c| c.what == "without --local-time, days are UTC days")
        .unwrap();
    let snaps = build(c);
    let p = policy("--keep-daily 2");
    let kept =
        |ds: Vec<Decision>| -> Vec<usize> { (0..ds.len()).filter(|&i| ds[i].keep).collect() };
    assert_eq!(kept(apply_in(&p, &snaps, t(NOW), &Utc)), [1, 2]);
    // At UTC+2 all three are on 2 March: the newest, and the oldest while
    // counts are left.
    let plus2 = FixedOffset::east_opt(2 * 3600).unwrap();
    let got = apply_in(&p, &snaps, t(NOW), &plus2);
    assert_eq!(reason_strings(&got[0]), ["daily 2/2 (oldest)"]);
    assert_eq!(kept(got), [0, 2]);
    // local_time only switches the zone; whatever the machine's zone, the
    // newest is kept and decisions stay consistent.
    let local = Policy {
        local_time: true,
        ..p
    };
    let got = apply(&local, &snaps, t(NOW));
    assert!(got[2].keep);
    for d in &got {
        assert_eq!(d.keep, !d.reasons.is_empty());
    }
}

#[test]
fn within_days_are_calendar_days_in_the_zone() {
    let reference = t("2024-03-31 22:00:00"); // 1 April 01:00 at UTC+3
    let span = parse_span("1mo1d").unwrap();
    assert_eq!(cutoff(reference, &span, &Utc), t("2024-02-28 22:00:00"));
    let plus3 = FixedOffset::east_opt(3 * 3600).unwrap();
    // 1 April 01:00 - 1 month = 1 March 01:00, - 1 day = 29 February 01:00 (+3).
    assert_eq!(cutoff(reference, &span, &plus3), t("2024-02-28 22:00:00"));
    let span = parse_span("1mo").unwrap();
    assert_eq!(cutoff(reference, &span, &plus3), t("2024-02-29 22:00:00"));
    assert_eq!(cutoff(reference, &span, &Utc), t("2024-02-29 22:00:00"));
    // Month ends differ by zone: 30 March 22:00 UTC is 31 March 01:00 at +3.
    let reference2 = t("2024-03-30 22:00:00");
    let span = parse_span("1mo").unwrap();
    assert_eq!(cutoff(reference2, &span, &Utc), t("2024-02-29 22:00:00"));
    assert_eq!(cutoff(reference2, &span, &plus3), t("2024-02-28 22:00:00"));
    let span = parse_span("1d2h30min").unwrap();
    assert_eq!(cutoff(reference, &span, &Utc), t("2024-03-30 19:30:00"));
    let huge = Span {
        years: u32::MAX,
        ..Span::default()
    };
    assert_eq!(cutoff(reference, &huge, &Utc), DateTime::<Utc>::MIN_UTC);
}

#[test]
fn spans_parse() {
    let span = |y, m, d, h, min| Span {
        years: y,
        months: m,
        days: d,
        hours: h,
        minutes: min,
    };
    for (s, want) in [
        ("36h", span(0, 0, 0, 36, 0)),
        ("7d", span(0, 0, 7, 0, 0)),
        ("2w", span(0, 0, 14, 0, 0)),
        ("1w2d", span(0, 0, 9, 0, 0)),
        ("1y6mo", span(1, 6, 0, 0, 0)),
        ("90mo", span(0, 90, 0, 0, 0)),
        ("90min", span(0, 0, 0, 0, 90)),
        ("12h1d", span(0, 0, 1, 12, 0)),
        ("1y2mo3d4h5min", span(1, 2, 3, 4, 5)),
        ("5min1mo", span(0, 1, 0, 0, 5)),
        ("007d", span(0, 0, 7, 0, 0)),
    ] {
        assert_eq!(parse_span(s), Ok(want), "{s}");
        assert_eq!(s.parse::<Span>(), Ok(want), "{s}");
    }
    assert_eq!(span(1, 2, 3, 4, 5).to_string(), "1y2mo3d4h5min");
    assert_eq!(span(0, 30, 0, 0, 0).to_string(), "30mo");
    assert_eq!(parse_span("2w").unwrap().to_string(), "14d");
    assert_eq!(Span::default().to_string(), "0h");
}

#[test]
fn span_errors() {
    for (s, detail) in [
        ("", "it is empty"),
        ("-5d", "a duration cannot be negative"),
        ("5", "the number 5 has no unit"),
        ("d", "the unit \"d\" needs a number before it"),
        ("5x", "unknown unit \"x\""),
        ("5M", "unknown unit \"M\""),
        ("3days", "unknown unit \"days\""),
        ("30s", "seconds are not supported; the smallest unit is min"),
        ("1d2d", "the unit d is given twice"),
        ("1w1w", "the unit w is given twice"),
        ("5 d", "unexpected character ' '"),
        ("+5d", "unexpected character '+'"),
        ("1.5h", "unexpected character '.'"),
        ("99999999999d", "99999999999d is too large"),
        ("613566757w", "too many days"),
        ("0d", "a duration of zero keeps nothing"),
        ("0y0h", "a duration of zero keeps nothing"),
        ("1mo1mo", "the unit mo is given twice"),
        ("1mo1m", "the unit m is given twice"),
        ("5mon", "unknown unit \"mon\""),
        ("5months", "unknown unit \"months\""),
        // An invalid duration is reported as such before `m` is questioned.
        ("5m1x", "unknown unit \"x\""),
    ] {
        let e = parse_span(s).expect_err(s);
        assert_eq!(
            e,
            PolicyError::Span {
                input: s.into(),
                detail: detail.into()
            },
            "{s}"
        );
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!("invalid duration {s:?}: {detail} (")),
            "{msg}"
        );
        assert!(
            msg.contains("y = years, mo = months, w = weeks, d = days, h = hours, min = minutes"),
            "{msg}"
        );
    }
}

/// A bare `m` is minutes to most tools and months to restic: it is refused,
/// and the message spells out both readings of the input.
#[test]
fn a_bare_m_is_refused_with_both_spellings() {
    for (s, minutes, months) in [
        ("30m", "30min", "30mo"),
        ("1m", "1min", "1mo"),
        ("1y6m", "1y6min", "1y6mo"),
        ("6m1y", "6min1y", "6mo1y"),
        ("1d12h30m", "1d12h30min", "1d12h30mo"),
        ("0m", "0min", "0mo"),
    ] {
        let e = parse_span(s).expect_err(s);
        assert_eq!(
            e,
            PolicyError::AmbiguousUnit {
                input: s.into(),
                minutes: minutes.into(),
                months: months.into(),
            },
            "{s}"
        );
        assert_eq!(
            e.to_string(),
            format!("{s:?} is ambiguous: write {minutes} for minutes or {months} for months")
        );
        // Both suggestions mean what they say (zero is refused as zero).
        if s != "0m" {
            assert!(parse_span(minutes).unwrap().minutes > 0, "{minutes}");
            assert!(parse_span(months).unwrap().months > 0, "{months}");
        }
    }
}

/// Policies are saved as numbers (postcard), never as text: a policy saved with
/// `--keep-within 6m` when `m` meant months still decodes as six months, and
/// is shown as `6mo`.
#[test]
fn saved_spans_keep_their_meaning() {
    let old = Policy {
        keep_within: Some(Span {
            months: 6,
            ..Span::default()
        }),
        ..Policy::default()
    };
    // The body `policy set --keep-within 6m` saved before `mo` existed.
    let saved: [u8; 21] = [
        0, 1, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    assert_eq!(postcard::to_stdvec(&old).unwrap(), saved);
    let back: Policy = postcard::from_bytes(&saved).unwrap();
    assert_eq!(back, old);
    assert_eq!(back.to_string(), "--keep-within 6mo");
}

#[test]
fn counts_parse() {
    assert_eq!(parse_count("3"), Ok(3));
    assert_eq!(parse_count("unlimited"), Ok(UNLIMITED));
    assert_eq!(parse_count("-1"), Ok(UNLIMITED));
    for (s, needle) in [
        ("0", "a count of 0 keeps nothing"),
        ("-2", "cannot be negative"),
        ("", "expected a whole number"),
        ("3d", "expected a whole number"),
        ("99999999999", "too large"),
    ] {
        let msg = parse_count(s).expect_err(s).to_string();
        assert!(msg.starts_with(&format!("invalid count {s:?}: ")), "{msg}");
        assert!(msg.contains(needle), "{s}: {msg}");
    }
}

#[test]
fn validation() {
    assert_eq!(policy("--keep-last 3 --keep-within 2d").validate(), Ok(()));
    let zero_daily = Policy {
        keep_daily: Some(0),
        ..Policy::default()
    };
    let e = zero_daily.validate().unwrap_err();
    assert_eq!(
        e.to_string(),
        "--keep-daily 0 would keep nothing: give a count of at least 1 (or `unlimited`), or leave the option out"
    );
    assert!(zero_daily.is_empty(), "a count of 0 is no rule");
    let zero_last = Policy {
        keep_last: Some(0),
        keep_daily: Some(3),
        ..Policy::default()
    };
    assert_eq!(
        zero_last.validate(),
        Err(PolicyError::ZeroCount {
            flag: "--keep-last"
        })
    );
    let zero_span = Policy {
        keep_within_weekly: Some(Span::default()),
        ..Policy::default()
    };
    assert_eq!(
        zero_span.validate().unwrap_err().to_string(),
        "--keep-within-weekly needs a duration longer than zero (or leave the option out)"
    );
    for tag in ["", "  "] {
        let p = Policy {
            keep_tags: vec!["ok".into(), tag.into()],
            ..Policy::default()
        };
        assert_eq!(p.validate(), Err(PolicyError::EmptyTag));
    }
    let err: crate::Error = PolicyError::EmptyTag.into();
    assert_eq!(
        err.to_string(),
        "invalid retention policy: --keep-tag needs a tag name: an empty tag matches no snapshot"
    );
}

#[test]
fn emptiness() {
    assert!(Policy::default().is_empty());
    assert!(Policy {
        local_time: true,
        ..Policy::default()
    }
    .is_empty());
    assert!(Policy {
        keep_tags: vec![String::new()],
        ..Policy::default()
    }
    .is_empty());
    for flags in [
        "--keep-last 1",
        "--keep-within 1h",
        "--keep-minutely 1",
        "--keep-yearly unlimited",
        "--keep-within-monthly 1y",
        "--keep-tag x",
    ] {
        assert!(!policy(flags).is_empty(), "{flags}");
    }
}

#[test]
fn display_gives_the_flags_back() {
    assert_eq!(Policy::default().to_string(), "");
    assert_eq!(
        policy("--keep-daily 7 --keep-last 3").to_string(),
        "--keep-last 3 --keep-daily 7"
    );
    let all = "--keep-last unlimited --keep-within 1y6mo --keep-minutely 60 --keep-hourly 24 \
               --keep-daily 7 --keep-weekly 4 --keep-monthly 12 --keep-yearly unlimited \
               --keep-within-minutely 1h --keep-within-hourly 2d --keep-within-daily 14d \
               --keep-within-weekly 3mo --keep-within-monthly 2y --keep-within-yearly 10y \
               --keep-tag nightly --keep-tag pre-upgrade --local-time";
    let p = policy(all);
    assert_eq!(
        p.to_string(),
        all.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    assert_eq!(policy(&p.to_string()), p);
    let quoted = Policy {
        keep_tags: vec!["before upgrade".into(), "it's".into()],
        ..Policy::default()
    };
    assert_eq!(
        quoted.to_string(),
        r"--keep-tag 'before upgrade' --keep-tag 'it'\''s'"
    );
}

#[test]
fn reasons_display() {
    let d7 = parse_span("7d").unwrap();
    for (r, s) in [
        (Reason::NoPolicy, "no policy"),
        (Reason::Newest { name: "app".into() }, "newest of app"),
        (Reason::Future, "in the future"),
        (Reason::Last { nth: 3, count: 6 }, "last 3/6"),
        (
            Reason::Last {
                nth: 3,
                count: UNLIMITED,
            },
            "last 3",
        ),
        (Reason::Within(parse_span("36h").unwrap()), "within 36h"),
        (
            Reason::Bucket {
                kind: BucketKind::Hourly,
                nth: 5,
                count: 24,
                oldest: false,
            },
            "hourly 5/24",
        ),
        (
            Reason::Bucket {
                kind: BucketKind::Weekly,
                nth: 2,
                count: 4,
                oldest: true,
            },
            "weekly 2/4 (oldest)",
        ),
        (
            Reason::WithinBucket {
                kind: BucketKind::Daily,
                span: d7,
            },
            "within daily 7d",
        ),
        (Reason::Tag("nightly".into()), "tag nightly"),
    ] {
        assert_eq!(r.to_string(), s);
    }
}

#[test]
fn policy_round_trips_through_postcard() {
    let p = policy(
        "--keep-last 3 --keep-within 1y2mo3d4h5min --keep-weekly unlimited --keep-within-daily 2w --keep-tag a --local-time",
    );
    let bytes = postcard::to_stdvec(&p).unwrap();
    assert_eq!(postcard::from_bytes::<Policy>(&bytes).unwrap(), p);
}

#[test]
fn duplicate_tags_give_one_reason() {
    let snaps = [snap(id(1), "app", t("2024-01-01 00:00:00"), &["a"])];
    let got = apply(&policy("--keep-tag a --keep-tag a"), &snaps, t(NOW));
    assert_eq!(reason_strings(&got[0]), ["newest of app", "tag a"]);
}

// ---- properties ----

const NAMES: [&str; 3] = ["app", "logs", "cache"];
const TAGS: [&str; 3] = ["a", "b", "c"];

/// Snapshots on a 10-minute grid over ~140 days before NOW (so ties and shared
/// buckets happen), some in the future when `future` allows.
fn arb_snaps(future: bool) -> impl Strategy<Value = Vec<Snapshot>> {
    let one = (
        0..NAMES.len(),
        0i64..20_000,
        prop::bool::weighted(if future { 0.1 } else { 0.0 }),
        0u8..8,
    );
    prop::collection::vec(one, 0..40).prop_map(|v| {
        let now = t(NOW);
        v.into_iter()
            .enumerate()
            .map(|(i, (name, steps, fut, tag_bits))| {
                let time = if fut {
                    now + TimeDelta::minutes(steps % 500 + 1)
                } else {
                    now - TimeDelta::minutes(10 * steps)
                };
                let tags: Vec<&str> = (0..3)
                    .filter(|b| tag_bits & (1 << b) != 0)
                    .map(|b| TAGS[b])
                    .collect();
                snap(id(i as u16 + 1), NAMES[name], time, &tags)
            })
            .collect()
    })
}

fn arb_count() -> impl Strategy<Value = Option<u32>> {
    prop_oneof![
        4 => Just(None),
        2 => (1u32..6).prop_map(Some),
        1 => Just(Some(UNLIMITED)),
    ]
}

fn arb_span() -> impl Strategy<Value = Option<Span>> {
    prop_oneof![
        4 => Just(None),
        1 => (0u32..2, 0u32..3, 0u32..20, 0u32..72, 0u32..120).prop_filter_map(
            "zero span",
            |(years, months, days, hours, minutes)| {
                let s = Span { years, months, days, hours, minutes };
                (!s.is_zero()).then_some(Some(s))
            }
        ),
    ]
}

fn arb_policy() -> impl Strategy<Value = Policy> {
    (
        (arb_count(), arb_span()),
        prop::collection::vec(arb_count(), 6),
        prop::collection::vec(arb_span(), 6),
        prop::collection::vec(prop::sample::select(TAGS.to_vec()), 0..2),
    )
        .prop_map(|((last, within), counts, spans, tags)| {
            let mut p = Policy {
                keep_last: last,
                keep_within: within,
                keep_tags: tags.into_iter().map(String::from).collect(),
                ..Policy::default()
            };
            for (i, k) in BucketKind::ALL.into_iter().enumerate() {
                *count_mut(&mut p, k) = counts[i];
                *within_mut(&mut p, k) = spans[i];
            }
            p
        })
}

/// `p` with every rule of `extra` added (a rule `p` already has stays as it is).
fn with_rules(p: &Policy, extra: &Policy) -> Policy {
    let mut out = p.clone();
    out.keep_last = p.keep_last.or(extra.keep_last);
    out.keep_within = p.keep_within.or(extra.keep_within);
    for k in BucketKind::ALL {
        *count_mut(&mut out, k) = p.count(k).or(extra.count(k));
        *within_mut(&mut out, k) = p.within_bucket(k).or(extra.within_bucket(k));
    }
    out.keep_tags.extend(extra.keep_tags.iter().cloned());
    out
}

fn kept_ids(ds: &[Decision]) -> BTreeSet<Id> {
    ds.iter().filter(|d| d.keep).map(|d| d.id).collect()
}

proptest! {
    #[test]
    fn newest_of_each_name_is_kept(snaps in arb_snaps(true), p in arb_policy()) {
        let got = apply(&p, &snaps, t(NOW));
        prop_assert_eq!(got.len(), snaps.len());
        let mut newest: HashMap<&str, &Snapshot> = HashMap::new();
        for s in &snaps {
            let e = newest.entry(s.manifest.name.as_str()).or_insert(s);
            if (s.time(), s.id) > (e.time(), e.id) {
                *e = s;
            }
        }
        for (d, s) in got.iter().zip(&snaps) {
            prop_assert_eq!(d.id, s.id);
            prop_assert_eq!(d.keep, !d.reasons.is_empty());
            if d.time > t(NOW) {
                prop_assert!(d.keep);
            }
        }
        for s in newest.values() {
            let d = got.iter().find(|d| d.id == s.id).unwrap();
            prop_assert!(d.keep);
            let newest_reason = p.is_empty() || d.reasons.contains(&Reason::Newest { name: s.manifest.name.clone() });
            prop_assert!(newest_reason);
        }
    }

    #[test]
    fn adding_a_rule_never_removes_a_kept_snapshot(
        snaps in arb_snaps(true),
        p in arb_policy(),
        extra in arb_policy(),
    ) {
        prop_assume!(!p.is_empty());
        let before = kept_ids(&apply(&p, &snaps, t(NOW)));
        let after = kept_ids(&apply(&with_rules(&p, &extra), &snaps, t(NOW)));
        prop_assert!(before.is_subset(&after), "lost {:?}", before.difference(&after).collect::<Vec<_>>());
    }

    #[test]
    fn keep_last_alone_keeps_exactly_n_per_name(snaps in arb_snaps(false), n in 1u32..12) {
        let p = Policy { keep_last: Some(n), ..Policy::default() };
        let got = apply(&p, &snaps, t(NOW));
        let mut total: HashMap<&str, usize> = HashMap::new();
        let mut kept: HashMap<&str, usize> = HashMap::new();
        for d in &got {
            *total.entry(d.name.as_str()).or_default() += 1;
            if d.keep {
                *kept.entry(d.name.as_str()).or_default() += 1;
            }
        }
        for (name, len) in total {
            prop_assert_eq!(kept.get(name).copied().unwrap_or(0), len.min(n as usize), "{}", name);
        }
    }

    #[test]
    fn spans_print_and_parse_back(s in arb_span()) {
        if let Some(s) = s {
            prop_assert_eq!(parse_span(&s.to_string()), Ok(s));
        }
    }

    #[test]
    fn policies_print_and_parse_back(p in arb_policy()) {
        prop_assert_eq!(policy(&p.to_string()), p);
    }
}

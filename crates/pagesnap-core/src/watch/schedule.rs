//! When a watched database's runs happen: pure functions of the time, the
//! interval, and an offset that spreads databases over the interval.
//!
//! Runs are aligned to wall-clock multiples of the interval counted from the Unix
//! epoch (UTC): every `10m` runs at :00, :10, :20 …; every `1h` on the hour; every
//! `1d` at 00:00 UTC. A jitter of `J` delays all runs of a database by the same
//! offset in `0..J`, chosen from its name, so that many databases with the same
//! interval do not all start at once, and the offset survives restarts.

use chrono::{DateTime, TimeZone, Utc};
use std::time::Duration;

/// The fixed offset in `0..jitter` of the database `name` (millisecond steps).
pub fn jitter_offset(name: &str, jitter: Duration) -> Duration {
    let span = jitter.as_millis() as u64;
    if span == 0 {
        return Duration::ZERO;
    }
    let h = blake3::hash(name.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&h.as_bytes()[..8]);
    Duration::from_millis(u64::from_le_bytes(first) % span)
}

/// The first run strictly after `after`: the smallest `k * every + offset` (since
/// the Unix epoch) later than it.
pub fn next_run(after: DateTime<Utc>, every: Duration, offset: Duration) -> DateTime<Utc> {
    let every_ms = (every.as_millis() as i128).max(1);
    let offset_ms = offset.as_millis() as i128 % every_ms;
    let t = after.timestamp_millis() as i128;
    let k = (t - offset_ms).div_euclid(every_ms) + 1;
    let next = k * every_ms + offset_ms;
    let next = i64::try_from(next).unwrap_or(i64::MAX);
    Utc.timestamp_millis_opt(next)
        .single()
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// How many runs were missed between the one scheduled at `scheduled` and the
/// next one after `now` (a run that took longer than the interval, a suspend).
pub fn missed(scheduled: DateTime<Utc>, next: DateTime<Utc>, every: Duration) -> u64 {
    let gap = (next - scheduled).num_milliseconds().max(0) as u128;
    let every = every.as_millis().max(1);
    (gap / every).saturating_sub(1) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    const TEN_MIN: Duration = Duration::from_secs(600);

    #[test]
    fn runs_fall_on_multiples_of_the_interval_shifted_by_the_offset() {
        // (now, interval in s, offset in s, the next run)
        let cases = [
            ("2026-03-01T12:03:27Z", 600, 0, "2026-03-01T12:10:00Z"),
            // Exactly on a slot: the next one (a run at 12:10 schedules 12:20).
            ("2026-03-01T12:10:00Z", 600, 0, "2026-03-01T12:20:00Z"),
            ("2026-03-01T12:09:59.999Z", 600, 0, "2026-03-01T12:10:00Z"),
            ("2026-03-01T23:55:00Z", 600, 0, "2026-03-02T00:00:00Z"),
            ("2026-03-01T12:03:27Z", 3600, 0, "2026-03-01T13:00:00Z"),
            ("2026-03-01T12:03:27Z", 86_400, 0, "2026-03-02T00:00:00Z"),
            ("2026-03-01T12:03:27.250Z", 1, 0, "2026-03-01T12:03:28Z"),
            // An offset shifts every run.
            ("2026-03-01T12:03:27Z", 600, 30, "2026-03-01T12:10:30Z"),
            ("2026-03-01T12:10:10Z", 600, 30, "2026-03-01T12:10:30Z"),
            ("2026-03-01T12:10:30Z", 600, 30, "2026-03-01T12:20:30Z"),
            ("2026-03-01T12:00:29Z", 600, 30, "2026-03-01T12:00:30Z"),
        ];
        for (now, every, offset, want) in cases {
            assert_eq!(
                next_run(
                    t(now),
                    Duration::from_secs(every),
                    Duration::from_secs(offset)
                ),
                t(want),
                "from {now}, every {every}s, offset {offset}s"
            );
        }
        // 7 minutes does not divide an hour: multiples since the epoch.
        let seven = Duration::from_secs(420);
        let n = next_run(t("2026-03-01T12:00:00Z"), seven, Duration::ZERO);
        assert_eq!(n.timestamp() % 420, 0);
        assert!(n > t("2026-03-01T12:00:00Z") && n <= t("2026-03-01T12:07:00Z"));
    }

    #[test]
    fn jitter_is_fixed_per_name_and_within_range() {
        let j = Duration::from_secs(60);
        let a = jitter_offset("app", j);
        assert_eq!(a, jitter_offset("app", j), "same name, same offset");
        assert!(a < j);
        let offsets: std::collections::BTreeSet<_> = (0..50)
            .map(|i| jitter_offset(&format!("db{i}"), j))
            .collect();
        assert!(offsets.len() > 40, "names spread over the jitter");
        assert!(offsets.iter().all(|o| *o < j));
        assert_eq!(jitter_offset("app", Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn missed_runs_are_counted() {
        let s = t("2026-03-01T12:10:00Z");
        assert_eq!(missed(s, t("2026-03-01T12:20:00Z"), TEN_MIN), 0);
        assert_eq!(missed(s, t("2026-03-01T12:40:00Z"), TEN_MIN), 2);
    }
}

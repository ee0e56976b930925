//! Sizes and times as the `pagesnap` command line writes them: the bench report uses
//! them, and the binary's `output` module re-exports them, so both write them alike.

use chrono::{DateTime, Utc};

/// `1536` → `1.5 KiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// RFC 3339 in UTC with `Z` for JSON: whole seconds (`2026-12-05T20:01:03Z`),
/// or nanoseconds (9 digits) when the time has a fraction, so that a time read
/// back (`restore --at`) selects exactly what it named.
pub fn time_json(t: &DateTime<Utc>) -> String {
    use chrono::Timelike;
    let digits = if t.nanosecond() == 0 {
        chrono::SecondsFormat::Secs
    } else {
        chrono::SecondsFormat::Nanos
    };
    t.to_rfc3339_opts(digits, true)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::bytes(0), "0 B");
        assert_eq!(super::bytes(1536), "1.5 KiB");
        assert_eq!(super::bytes(3 << 30), "3.0 GiB");
    }
}

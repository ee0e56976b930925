//! Human-readable formatting of sizes and times.

use chrono::{DateTime, Utc};

/// Sizes (`1536` → `1.5 KiB`) and JSON times (RFC 3339, UTC): the bench crate's, so
/// that `pagesnap bench` reports them as every other command does.
pub use pagesnap_bench::format::{bytes, time_json};

/// Times are shown in UTC, to the second.
pub fn time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

//! Timestamps as Sendense stores and prints them: RFC 3339 in UTC, second precision
//! (`2026-11-25T21:10:06Z`). They sort as text, which the catalog relies on.
//!
//! The wall clock is [`now`]. Tests of what depends on when backups were taken (retention)
//! set `SENDENSE_TEST_NOW=<RFC 3339>` in a process's environment: that process's clock then
//! stands at that instant, so backups get the times the test chose without anyone sleeping.

use std::sync::OnceLock;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The environment variable that stops the clock of a process (tests only).
pub const TEST_NOW_ENV: &str = "SENDENSE_TEST_NOW";

/// The current time (UTC), or the instant `SENDENSE_TEST_NOW` sets.
pub fn now() -> OffsetDateTime {
    static FIXED: OnceLock<Option<OffsetDateTime>> = OnceLock::new();
    FIXED
        .get_or_init(|| {
            std::env::var(TEST_NOW_ENV)
                .ok()
                .and_then(|v| parse_rfc3339(&v))
        })
        .unwrap_or_else(OffsetDateTime::now_utc)
}

/// [`now`] as a jiff timestamp (schedules and retention compute in jiff), second precision.
pub fn now_timestamp() -> crate::error::Result<jiff::Timestamp> {
    jiff::Timestamp::from_second(now().unix_timestamp())
        .map_err(|e| crate::error::Error::internal(format!("the clock: {e}")))
}

/// The current time as an RFC 3339 UTC string with second precision.
pub fn now_rfc3339() -> String {
    format_rfc3339(now())
}

/// Formats a time as RFC 3339 UTC with second precision.
pub fn format_rfc3339(t: OffsetDateTime) -> String {
    let t = t
        .to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .unwrap_or(t);
    t.format(&Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// `secs` since the epoch as RFC 3339 (UTC); empty when out of range.
pub fn format_unix(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .map(format_rfc3339)
        .unwrap_or_default()
}

/// Parses an RFC 3339 timestamp.
pub fn parse_rfc3339(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// Seconds elapsed since an RFC 3339 timestamp (0 when it cannot be parsed or lies ahead).
pub fn age_seconds(s: &str) -> u64 {
    parse_rfc3339(s)
        .map(|t| (OffsetDateTime::now_utc() - t).whole_seconds().max(0) as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_without_fraction() {
        let s = now_rfc3339();
        assert!(s.ends_with('Z'), "{s}");
        assert!(!s.contains('.'), "{s}");
        assert!(parse_rfc3339(&s).is_some());
    }
}

//! The one clock every function reads. In production it is the system clock. Debug builds (the
//! test suite, the demo) honour `NBAOPS_TEST_NOW=<RFC 3339>`: the clock reads that instant when the
//! process starts and runs on from there, so a test can put the whole stack at a month end, a DST
//! change or Feb 29. Release builds — what is deployed and benchmarked — ignore the variable.

use std::sync::OnceLock;
use std::time::Instant;

use chrono::{DateTime, Utc};

pub const TEST_NOW_VAR: &str = "NBAOPS_TEST_NOW";

/// The current instant: the system clock, or in a debug build the test clock when one is set.
pub fn now() -> DateTime<Utc> {
    match test_origin() {
        Some((at, started)) => {
            at + chrono::Duration::from_std(started.elapsed()).unwrap_or_default()
        }
        None => Utc::now(),
    }
}

/// Whether this process runs on the test clock.
pub fn is_test_clock() -> bool {
    test_origin().is_some()
}

fn test_origin() -> Option<(DateTime<Utc>, Instant)> {
    static ORIGIN: OnceLock<Option<(DateTime<Utc>, Instant)>> = OnceLock::new();
    *ORIGIN.get_or_init(|| {
        if !cfg!(debug_assertions) {
            return None;
        }
        let raw = std::env::var(TEST_NOW_VAR).ok()?;
        match parse(&raw) {
            Some(at) => Some((at, Instant::now())),
            None => {
                // Loud: a test matrix silently running on today's date would prove nothing.
                eprintln!(
                    "{TEST_NOW_VAR}='{raw}' is not an RFC 3339 instant; using the system clock"
                );
                None
            }
        }
    })
}

pub fn parse(raw: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(raw.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_offsets_to_utc_and_refuses_dates_without_time() {
        assert_eq!(
            parse("2028-02-29T23:30:00-05:00").map(|t| t.to_rfc3339()),
            Some("2028-03-01T04:30:00+00:00".to_string())
        );
        assert_eq!(parse("2028-02-29"), None);
        assert_eq!(parse(""), None);
    }
}

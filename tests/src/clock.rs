//! The test clock. Tests never read today's date: the harness, the function processes it starts
//! (through `NBAOPS_TEST_NOW`, honoured by debug builds of `nbaops_shared::clock`) and moto (started
//! under freezegun) all run on one clock that starts at `NBAOPS_TEST_NOW` — or at [`DEFAULT_NOW`]
//! when the variable is unset — and ticks on from there. `make test-dates` runs the date-sensitive
//! suites at month end, year end, both DST changes and Feb 29 (`TEST_DATES` in the Makefile).

use std::sync::OnceLock;
use std::time::Instant;

use chrono::{DateTime, Utc};

pub use nbaops_shared::clock::TEST_NOW_VAR;

/// A Wednesday afternoon in mid-June: no month or year edge, no DST change, outside the change
/// window (Tue/Thu 20:00–23:00 UTC).
pub const DEFAULT_NOW: &str = "2026-06-17T14:00:00Z";

fn origin() -> (DateTime<Utc>, Instant) {
    static ORIGIN: OnceLock<(DateTime<Utc>, Instant)> = OnceLock::new();
    *ORIGIN.get_or_init(|| {
        let raw = std::env::var(TEST_NOW_VAR).unwrap_or_else(|_| DEFAULT_NOW.to_string());
        let at = nbaops_shared::clock::parse(&raw).unwrap_or_else(|| {
            // A matrix run silently on the default date would prove nothing: refuse loudly.
            panic!("{TEST_NOW_VAR}='{raw}' is not an RFC 3339 instant")
        });
        (at, Instant::now())
    })
}

/// Now, on the test clock.
pub fn now() -> DateTime<Utc> {
    let (at, started) = origin();
    at + chrono::Duration::from_std(started.elapsed()).unwrap_or_default()
}

/// `NBAOPS_TEST_NOW` for a process started now, so its clock continues the harness's.
pub fn env() -> (String, String) {
    (
        TEST_NOW_VAR.to_string(),
        now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    )
}

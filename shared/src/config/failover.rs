//! The `failover` section: what failover-notify expects of an RDS failover (SPEC 2.2: Multi-AZ
//! failover completes in 60–120 s), when a failover counts as stuck, and how the new primary is
//! verified.
//!
//! The verification target of a database is `failover.verify.urls[<db id>]` when set (a proxy,
//! a test server), else `postgres://<verify.user>@<RDS endpoint>:<port>/<verify.database>`.
//! Passwords never live here: the SecureString `/nbaops/<env>/secrets/failover/<db id>` is read
//! at connect time and registered with the log redaction.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{positive, Settings};
use crate::alerts::Severity;
use crate::error::{NbaopsError, Result};

pub const KEYS: &[(&str, &str, &str)] = &[
    ("failover.expected_min_seconds", "60", "a Multi-AZ instance failover normally takes at least this long (SPEC 60 s)"),
    ("failover.expected_max_seconds", "120", "... and at most this long (SPEC 120 s); slower is reported, still P2"),
    ("failover.cluster_expected_max_seconds", "35", "a Multi-AZ DB cluster failover normally completes within this (AWS: under 35 s)"),
    ("failover.limit_seconds", "300", "a failover not completed within this is P1 (the sweep raises it; a later completion says it too)"),
    ("failover.correlation_seconds", "900", "events of one database this close in time belong to one failover incident"),
    ("failover.incident_ttl_days", "400", "incident timelines kept for the post-incident review (SPEC: one year)"),
    ("failover.notify_min_severity", "P3", "events less severe than this are reported and logged, not published"),
    ("failover.verify.urls", "{}", "JSON: DB instance/cluster id -> postgres:// URL without password (overrides the RDS endpoint)"),
    ("failover.verify.user", "nbaops_failover", "user of the verification session on the RDS endpoint"),
    ("failover.verify.database", "postgres", "database of the verification session on the RDS endpoint"),
    ("failover.verify.write", "true", "write one heartbeat row to prove the new primary accepts writes"),
    ("failover.verify.heartbeat_table", "nbaops_heartbeat", "the heartbeat table (public schema; created if missing, one row per function)"),
    ("failover.verify.attempts", "3", "verification attempts before failing (DNS may still point at the old primary)"),
    ("failover.verify.retry_seconds", "10", "pause between two verification attempts"),
    ("failover.verify.connect_timeout_seconds", "5", "TCP + auth timeout of the verification session"),
    ("failover.verify.statement_timeout_ms", "5000", "statement_timeout and lock_timeout bound of the verification session"),
    ("failover.verify.expected_replicas", "{}", "JSON: DB id -> read replicas that must be streaming from the new primary"),
    ("failover.reverify_hours", "24", "the sweep re-verifies a failed verification for this long, then leaves it to people"),
];

#[derive(Debug, Clone, Serialize)]
pub struct VerifyConfig {
    #[serde(skip)]
    pub urls: BTreeMap<String, String>,
    pub user: String,
    pub database: String,
    pub write: bool,
    pub heartbeat_table: String,
    pub attempts: u32,
    pub retry_seconds: u64,
    pub connect_timeout_seconds: u64,
    pub statement_timeout_ms: u64,
    pub expected_replicas: BTreeMap<String, u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailoverConfig {
    pub expected_min_seconds: i64,
    pub expected_max_seconds: i64,
    pub cluster_expected_max_seconds: i64,
    pub limit_seconds: i64,
    pub correlation_seconds: i64,
    pub incident_ttl_days: i64,
    pub notify_min_severity: Severity,
    pub verify: VerifyConfig,
    pub reverify_hours: i64,
}

fn check_url(s: &Settings, key: &str, db: &str, url: &str) -> Result<()> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(s.bad(key, &format!("a postgres:// URL for '{db}'")));
    }
    if super::pg::url_carries_password(url) {
        return Err(NbaopsError::config(format!(
            "{key} (from {}): the URL of '{db}' carries a password; put it in SSM SecureString /nbaops/<env>/secrets/failover/{db}",
            s.origin(key)
        )));
    }
    Ok(())
}

pub fn from_settings(s: &Settings) -> Result<FailoverConfig> {
    let expected_min_seconds: i64 =
        positive(s, "failover.expected_min_seconds", "whole seconds >= 1")?;
    let expected_max_seconds: i64 =
        positive(s, "failover.expected_max_seconds", "whole seconds >= 1")?;
    if expected_max_seconds < expected_min_seconds {
        return Err(s.bad(
            "failover.expected_max_seconds",
            "at least failover.expected_min_seconds",
        ));
    }
    let limit_seconds: i64 = positive(s, "failover.limit_seconds", "whole seconds >= 1")?;
    if limit_seconds < expected_max_seconds {
        return Err(s.bad(
            "failover.limit_seconds",
            "at least failover.expected_max_seconds",
        ));
    }
    let correlation_seconds: i64 =
        positive(s, "failover.correlation_seconds", "whole seconds >= 1")?;
    let urls: BTreeMap<String, String> = s.json(
        "failover.verify.urls",
        "a JSON object of DB id -> postgres:// URL",
    )?;
    for (db, url) in &urls {
        check_url(s, "failover.verify.urls", db, url)?;
    }
    let table = s.string("failover.verify.heartbeat_table");
    let valid_table = !table.is_empty()
        && table.len() <= 63
        && table
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !table.starts_with(|c: char| c.is_ascii_digit());
    if !valid_table {
        return Err(s.bad(
            "failover.verify.heartbeat_table",
            "a lowercase SQL identifier (a-z, 0-9, _)",
        ));
    }
    let user = s.string("failover.verify.user");
    if user.is_empty() {
        return Err(s.bad("failover.verify.user", "a role name"));
    }
    let database = s.string("failover.verify.database");
    if database.is_empty() {
        return Err(s.bad("failover.verify.database", "a database name"));
    }
    let notify_min_severity = s
        .string("failover.notify_min_severity")
        .parse::<Severity>()
        .map_err(|_| s.bad("failover.notify_min_severity", "P1, P2, P3 or P4"))?;
    Ok(FailoverConfig {
        expected_min_seconds,
        expected_max_seconds,
        cluster_expected_max_seconds: positive(
            s,
            "failover.cluster_expected_max_seconds",
            "whole seconds >= 1",
        )?,
        limit_seconds,
        correlation_seconds,
        incident_ttl_days: positive(s, "failover.incident_ttl_days", "whole days >= 1")?,
        notify_min_severity,
        verify: VerifyConfig {
            urls,
            user,
            database,
            write: s.boolean("failover.verify.write")?,
            heartbeat_table: table,
            attempts: positive(s, "failover.verify.attempts", "a whole number >= 1")?,
            retry_seconds: s.number("failover.verify.retry_seconds", "whole seconds")?,
            connect_timeout_seconds: positive(
                s,
                "failover.verify.connect_timeout_seconds",
                "whole seconds >= 1",
            )?,
            statement_timeout_ms: positive(
                s,
                "failover.verify.statement_timeout_ms",
                "milliseconds >= 1",
            )?,
            expected_replicas: s.json(
                "failover.verify.expected_replicas",
                "a JSON object of DB id -> replica count",
            )?,
        },
        reverify_hours: s.number("failover.reverify_hours", "whole hours")?,
    })
}

impl FailoverConfig {
    /// The SecureString holding the verification user's password for `db`.
    pub fn secret_name(env: &str, db: &str) -> String {
        format!("/nbaops/{env}/secrets/failover/{db}")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::config::{layer, Env};

    fn load(pairs: &[(&str, &str)]) -> Result<FailoverConfig> {
        let vars = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        from_settings(&layer(Env::Dev, &vars, &BTreeMap::new())?)
    }

    #[test]
    fn spec_defaults() {
        let c = load(&[]).unwrap();
        assert_eq!((c.expected_min_seconds, c.expected_max_seconds), (60, 120));
        assert_eq!(c.limit_seconds, 300);
        assert_eq!(c.cluster_expected_max_seconds, 35);
        assert_eq!(c.notify_min_severity, Severity::P3);
        assert!(c.verify.write && c.verify.urls.is_empty());
        assert_eq!(c.verify.heartbeat_table, "nbaops_heartbeat");
        assert_eq!(c.verify.attempts, 3);
    }

    #[test]
    fn overrides_and_bad_values_name_the_key() {
        let c = load(&[
            (
                "NBAOPS_FAILOVER__VERIFY__URLS",
                r#"{"nbaops-dev-db":"postgres://u@127.0.0.1:5432/postgres"}"#,
            ),
            (
                "NBAOPS_FAILOVER__VERIFY__EXPECTED_REPLICAS",
                r#"{"nbaops-dev-db":1}"#,
            ),
        ])
        .unwrap();
        assert_eq!(c.verify.urls.len(), 1);
        assert_eq!(c.verify.expected_replicas.get("nbaops-dev-db"), Some(&1));
        for (k, v, needle) in [
            (
                "NBAOPS_FAILOVER__LIMIT_SECONDS",
                "60",
                "failover.limit_seconds",
            ),
            (
                "NBAOPS_FAILOVER__EXPECTED_MAX_SECONDS",
                "30",
                "failover.expected_max_seconds",
            ),
            (
                "NBAOPS_FAILOVER__VERIFY__URLS",
                r#"{"db":"mysql://x"}"#,
                "failover.verify.urls",
            ),
            (
                "NBAOPS_FAILOVER__VERIFY__URLS",
                r#"{"db":"postgres://u:pw@h/d"}"#,
                "secrets/failover/db",
            ),
            (
                "NBAOPS_FAILOVER__VERIFY__HEARTBEAT_TABLE",
                "x; drop table y",
                "heartbeat_table",
            ),
            (
                "NBAOPS_FAILOVER__NOTIFY_MIN_SEVERITY",
                "P9",
                "notify_min_severity",
            ),
            (
                "NBAOPS_FAILOVER__VERIFY__ATTEMPTS",
                "0",
                "failover.verify.attempts",
            ),
        ] {
            let e = load(&[(k, v)]).unwrap_err().to_string();
            assert!(e.contains(needle), "{k}={v}: {e}");
        }
    }
}

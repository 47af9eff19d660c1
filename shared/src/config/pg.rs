//! The `pg` section: which PostgreSQL databases pg-health watches and vacuum-trigger maintains,
//! every SPEC 3.2.2 threshold, and the limits of automated maintenance (SPEC 5.5.1).
//!
//! Passwords never live here: a URL without a password gets the SecureString parameter
//! `/nbaops/<env>/secrets/pg/<name>/<role>` (role = `monitor` for pg-health, `maintenance` for
//! vacuum-trigger), read at connect time and registered with the log redaction.

use serde::Serialize;

use super::{positive, Settings};
use crate::error::{NbaopsError, Result};

pub const KEYS: &[(&str, &str, &str)] = &[
    ("pg.databases", "", "comma list of name=postgres://user@host:port/db (or bare URLs; the name is then the database)"),
    ("pg.monitor_user", "", "user pg-health connects as when set (read-only pg_monitor role); else the URL's user"),
    ("pg.maintenance_user", "", "user vacuum-trigger connects as when set (table/database owner role); else the URL's user"),
    ("pg.ca_bundle_path", "", "PEM CA bundle to verify servers against instead of the RDS roots compiled in (shared/certs)"),
    ("pg.plaintext_loopback", "false", "true allows plaintext to a loopback host (127.0.0.1, ::1, localhost); never to any other host"),
    ("pg.connect_timeout_seconds", "5", "TCP + auth timeout per database"),
    ("pg.statement_timeout_ms", "5000", "statement_timeout of every monitoring query"),
    ("pg.lock_timeout_ms", "1000", "lock_timeout of every session: never queue behind the application"),
    ("pg.connections.warn_percent", "75", "connections above this percent of usable slots: warning (SPEC 75 %)"),
    ("pg.connections.crit_percent", "90", "... critical (SPEC 90 %); a 'too many clients' refusal is critical too"),
    ("pg.cache_hit.warn_percent", "95", "buffer cache hit ratio below this (from counter deltas): warning"),
    ("pg.cache_hit.crit_percent", "90", "... critical"),
    ("pg.cache_hit.min_blocks", "10000", "fewer block reads+hits than this between two runs: ratio not judged"),
    ("pg.replication_lag.warn_seconds", "30", "replication lag above this: warning"),
    ("pg.replication_lag.crit_seconds", "300", "... critical (SPEC 5 min)"),
    ("pg.xid.warn_age", "500000000", "transaction/multixact ID age: warning (AWS low-severity alarm)"),
    ("pg.xid.crit_age", "1000000000", "... critical (AWS 'take action')"),
    ("pg.xid.emergency_age", "", "... emergency; empty = the server's vacuum_failsafe_age"),
    ("pg.bloat.warn_percent", "20", "table bloat (wasted fraction) above this: warning"),
    ("pg.bloat.crit_percent", "40", "... critical"),
    ("pg.bloat.min_bytes", "1048576", "tables smaller than this are never judged (the estimate is noise)"),
    ("pg.bloat.measure_per_run", "10", "pg-health measures at most this many bloat candidates per database and run with pgstattuple_approx (never measured first, then the oldest figure); the others keep their figure of the last day"),
    ("pg.bloat.stale_fraction", "0.2", "rows modified since the last ANALYZE above this fraction = stale statistics"),
    ("pg.bloat.stale_hours", "168", "... or no ANALYZE for this long while rows changed"),
    ("pg.long_tx.warn_seconds", "300", "transaction open longer than this: warning (SPEC 5 min)"),
    ("pg.long_tx.crit_seconds", "900", "... critical (SPEC 15 min); vacuum-trigger may end it"),
    ("pg.idle_in_tx.warn_seconds", "300", "idle in transaction longer than this: warning"),
    ("pg.deadlocks.warn_per_hour", "1", "deadlocks per hour (counter deltas) above this: warning"),
    ("pg.deadlocks.crit_per_hour", "10", "... critical"),
    ("pg.lock_wait.warn_seconds", "60", "a session waiting on a lock longer than this: warning"),
    ("pg.vacuum_failure.repeat", "3", "this many failed vacuums of one table in a day = repeated failures (critical)"),
    ("pg.vacuum_failure.stale_hours", "24", "dead tuples growing between runs while the last vacuum is older than this: warning"),
    ("pg.vacuum_progress.warn_seconds", "3600", "a VACUUM (pg_stat_progress_vacuum) running longer than this: warning"),
    ("pg.unused_index.min_stats_age_days", "7", "unused indexes (idx_scan = 0) are reported only once statistics are this old"),
    ("pg.unused_index.min_bytes", "1048576", "... and only indexes at least this large"),
    ("pg.slow_query.mean_ms", "1000", "pg_stat_statements entries with a mean execution time above this: warning"),
    ("pg.slow_query.min_calls", "5", "... and at least this many calls"),
    ("pg.index.reindex_percent", "40", "REINDEX CONCURRENTLY (change window only) a btree index over this bloat percent"),
    ("pg.index.min_bytes", "1048576", "indexes smaller than this are never rebuilt (the estimate is noise)"),
    ("pg.index.max_per_run", "1", "vacuum-trigger rebuilds at most this many indexes per database and run"),
    ("pg.vacuum.max_tables_per_run", "3", "vacuum-trigger acts on at most this many tables per database and run"),
    ("pg.vacuum.statement_timeout_seconds", "600", "statement_timeout of one maintenance statement"),
    ("pg.vacuum.lock_timeout_ms", "2000", "lock_timeout of maintenance statements"),
    ("pg.vacuum.time_budget_seconds", "720", "no new table is started after this long in one run (Lambda max 900 s)"),
    ("pg.vacuum.deadline_margin_seconds", "30", "no new table is started with less than this left before the Lambda deadline; statement_timeout is capped to the time left minus this"),
    ("pg.vacuum.cooldown_seconds", "3600", "minimum time between two maintenance actions on one table"),
    ("pg.vacuum.min_dead_tuples", "1000", "VACUUM (ANALYZE) a table with at least this many dead tuples ..."),
    ("pg.vacuum.dead_percent", "20", "... and at least this percent of its tuples dead (or bloat over pg.bloat.warn_percent)"),
    ("pg.vacuum.freeze_age", "", "VACUUM (FREEZE) tables older than this XID age; empty = pg.xid.warn_age"),
    ("pg.vacuum.analyze_min_changes", "1000", "ANALYZE stale tables only with at least this many changed rows"),
    ("pg.vacuum.cost_delay_ms", "2", "vacuum_cost_delay of our session (throttling)"),
    ("pg.vacuum.cost_limit", "2000", "vacuum_cost_limit of our session"),
    ("pg.vacuum.full_allowed", "false", "VACUUM FULL of critically bloated tables, in the change window only"),
    ("pg.terminate.enabled", "false", "vacuum-trigger may cancel then terminate transactions past pg.long_tx.crit_seconds"),
    ("pg.terminate.allow_roles", "", "comma list: only sessions of these roles may be ended ..."),
    ("pg.terminate.allow_applications", "", "... or of these application_name values"),
    ("pg.terminate.protected_roles", "rdsadmin,rdsrepladmin,rds_superuser", "sessions of these roles are never ended"),
    // PostgreSQL signals of issue #22 (pg-health): index bloat and the WAL generation rate.
    ("pg.index_bloat.warn_percent", "30", "pg-health: a valid btree index (at least pg.index.min_bytes) over this bloat percent (pgstatindex, else the pg_stats estimate): warning"),
    ("pg.index_bloat.crit_percent", "50", "... critical (P3); vacuum-trigger rebuilds over pg.index.reindex_percent in the change window"),
    ("pg.wal.warn_bytes_per_second", "16777216", "WAL generated per second between two pg-health runs (pg_current_wal_lsn deltas, primaries only) above this: warning"),
    ("pg.wal.crit_bytes_per_second", "67108864", "... critical (P3)"),
    ("pg.emergency_freeze.group", "default", "EventBridge Scheduler group of pg-health's one-time emergency freezes (a P1 wraparound finding runs vacuum-trigger's freeze at once)"),
    ("pg.emergency_freeze.target_arn", "", "the vacuum-trigger (alias) ARN an emergency freeze invokes; empty: none is scheduled (the P1 alert still goes out)"),
    ("pg.emergency_freeze.role_arn", "", "the role EventBridge Scheduler assumes to invoke it (lambda:InvokeFunction on vacuum-trigger only)"),
    ("pg.vacuum_delay.sleep_percent", "50", "a running VACUUM seen sleeping in its cost-based delay (wait_event VacuumDelay; PG 18+ with track_cost_delay_timing: delay_time) more than this percent of the time ..."),
    ("pg.vacuum_delay.min_runs", "3", "... over at least this many consecutive pg-health runs: warning (P4)"),
    ("pg.vacuum_delay.samples_per_run", "5", "pg_stat_activity samples of the running vacuums per run (only while one runs)"),
    ("pg.vacuum_delay.sample_interval_ms", "100", "time between two samples of one run"),
];

/// One watched database.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PgTarget {
    /// Short name used in resources (`pg:<name>/...`), dedup keys and the secret's path.
    pub name: String,
    #[serde(skip)]
    pub url: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Levels {
    pub warn: f64,
    pub crit: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PgConfig {
    pub databases: Vec<PgTarget>,
    pub monitor_user: Option<String>,
    pub maintenance_user: Option<String>,
    pub ca_bundle_path: Option<String>,
    pub connect_timeout_seconds: u64,
    pub statement_timeout_ms: u64,
    pub lock_timeout_ms: u64,
    /// Percent of usable slots (max_connections minus reserved).
    pub connections: Levels,
    /// Percent; below is bad.
    pub cache_hit: Levels,
    pub cache_hit_min_blocks: i64,
    pub replication_lag_seconds: Levels,
    pub xid_age: Levels,
    pub xid_emergency_age: Option<i64>,
    pub bloat_percent: Levels,
    pub bloat_min_bytes: i64,
    pub bloat_measure_per_run: usize,
    pub stale_fraction: f64,
    pub stale_hours: i64,
    pub long_tx_seconds: Levels,
    pub idle_in_tx_warn_seconds: f64,
    pub deadlocks_per_hour: Levels,
    pub lock_wait_warn_seconds: f64,
    pub vacuum_failure_repeat: usize,
    pub vacuum_stale_hours: i64,
    pub vacuum_progress_warn_seconds: f64,
    pub unused_index_min_stats_age_days: i64,
    pub unused_index_min_bytes: i64,
    pub slow_query_mean_ms: f64,
    pub slow_query_min_calls: i64,
    pub index: IndexLimits,
    pub vacuum: VacuumLimits,
    pub terminate: TerminatePolicy,
    /// Index bloat alert levels (percent), pg-health.
    pub index_bloat_percent: Levels,
    /// WAL generation rate alert levels (bytes per second), pg-health.
    pub wal_bytes_per_second: Levels,
    /// Where a P1 wraparound finding's one-time schedule goes (vacuum-trigger's freeze at once).
    pub emergency_freeze: crate::config::scale::FollowUps,
    /// Vacuums throttled by their cost-based delay (pg-health's vacuum-delay signal).
    pub vacuum_delay: VacuumDelay,
}

#[derive(Debug, Clone, Serialize)]
pub struct VacuumDelay {
    pub sleep_percent: f64,
    pub min_runs: u32,
    pub samples_per_run: u32,
    pub sample_interval_ms: u64,
}

/// `pg.emergency_freeze.*`: a valid group, ARNs, both or neither.
fn emergency_freeze(s: &Settings) -> Result<crate::config::scale::FollowUps> {
    let f = crate::config::scale::FollowUps {
        group: s.string("pg.emergency_freeze.group"),
        target_arn: s.string("pg.emergency_freeze.target_arn"),
        role_arn: s.string("pg.emergency_freeze.role_arn"),
    };
    let name_ok = !f.group.is_empty()
        && f.group.len() <= 64
        && f.group
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !name_ok {
        return Err(s.bad(
            "pg.emergency_freeze.group",
            "a schedule group name: 1-64 of [0-9a-zA-Z-_.]",
        ));
    }
    for (key, v) in [
        ("pg.emergency_freeze.target_arn", &f.target_arn),
        ("pg.emergency_freeze.role_arn", &f.role_arn),
    ] {
        if !v.is_empty() && !v.starts_with("arn:") {
            return Err(s.bad(key, "an ARN"));
        }
    }
    if f.target_arn.is_empty() != f.role_arn.is_empty() {
        return Err(NbaopsError::config(format!(
            "pg.emergency_freeze.target_arn and pg.emergency_freeze.role_arn go together (from {} and {}): set both or neither",
            s.origin("pg.emergency_freeze.target_arn"),
            s.origin("pg.emergency_freeze.role_arn")
        )));
    }
    Ok(f)
}

#[derive(Debug, Clone, Serialize)]
pub struct IndexLimits {
    pub reindex_percent: f64,
    pub min_bytes: i64,
    pub max_per_run: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct VacuumLimits {
    pub max_tables_per_run: usize,
    pub statement_timeout_seconds: u64,
    pub lock_timeout_ms: u64,
    pub time_budget_seconds: u64,
    pub deadline_margin_seconds: u64,
    pub cooldown_seconds: i64,
    pub min_dead_tuples: i64,
    pub dead_percent: f64,
    pub freeze_age: i64,
    pub analyze_min_changes: i64,
    pub cost_delay_ms: u64,
    pub cost_limit: u64,
    pub full_allowed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct TerminatePolicy {
    pub enabled: bool,
    pub allow_roles: Vec<String>,
    pub allow_applications: Vec<String>,
    pub protected_roles: Vec<String>,
}

fn levels(s: &Settings, warn: &str, crit: &str, higher_is_worse: bool) -> Result<Levels> {
    let w: f64 = s.number(warn, "a number")?;
    let c: f64 = s.number(crit, "a number")?;
    if !w.is_finite() || w < 0.0 {
        return Err(s.bad(warn, "a number >= 0"));
    }
    if !c.is_finite() || c < 0.0 {
        return Err(s.bad(crit, "a number >= 0"));
    }
    let ordered = if higher_is_worse { c >= w } else { c <= w };
    if !ordered {
        return Err(NbaopsError::config(format!(
            "{crit} ({c}, from {}) must be {} {warn} ({w})",
            s.origin(crit),
            if higher_is_worse {
                "at least"
            } else {
                "at most"
            }
        )));
    }
    Ok(Levels { warn: w, crit: c })
}

fn percent_levels(s: &Settings, warn: &str, crit: &str, higher_is_worse: bool) -> Result<Levels> {
    let l = levels(s, warn, crit, higher_is_worse)?;
    for (k, v) in [(warn, l.warn), (crit, l.crit)] {
        if v > 100.0 {
            return Err(s.bad(k, "a percent in [0, 100]"));
        }
    }
    Ok(l)
}

fn optional(s: &Settings, key: &str) -> Option<String> {
    Some(s.string(key)).filter(|v| !v.is_empty())
}

/// `name=url` or a bare URL (named after its database).
fn parse_databases(s: &Settings) -> Result<Vec<PgTarget>> {
    let key = "pg.databases";
    let mut out: Vec<PgTarget> = Vec::new();
    for item in s.list(key) {
        let (name, url) = match item.split_once('=') {
            Some((n, u)) if !n.contains("://") && !n.contains('/') => {
                (n.trim().to_string(), u.trim().to_string())
            }
            _ => {
                let db = item
                    .rsplit_once('/')
                    .map(|(_, d)| d.split('?').next().unwrap_or("").to_string())
                    .unwrap_or_default();
                (db, item.clone())
            }
        };
        let valid_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid_name || !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(s.bad(
                key,
                "a comma list of name=postgres://user@host:port/db (name: letters, digits, - and _)",
            ));
        }
        if url_carries_password(&url) {
            return Err(NbaopsError::config(format!(
                "{key} (from {}): the URL of '{name}' carries a password; put it in SSM SecureString /nbaops/<env>/secrets/pg/{name}/<monitor|maintenance>",
                s.origin(key)
            )));
        }
        if out.iter().any(|t| t.name == name) {
            return Err(s.bad(key, "unique database names"));
        }
        out.push(PgTarget { name, url });
    }
    Ok(out)
}

pub fn from_settings(s: &Settings) -> Result<PgConfig> {
    let xid_age = levels(s, "pg.xid.warn_age", "pg.xid.crit_age", true)?;
    let xid_emergency_age = match optional(s, "pg.xid.emergency_age") {
        Some(_) => Some(positive::<i64>(
            s,
            "pg.xid.emergency_age",
            "an XID age > 0",
        )?),
        None => None,
    };
    let bloat_percent = percent_levels(s, "pg.bloat.warn_percent", "pg.bloat.crit_percent", true)?;
    let stale_fraction: f64 = s.number("pg.bloat.stale_fraction", "a fraction in (0, 1]")?;
    if !(stale_fraction > 0.0 && stale_fraction <= 1.0) {
        return Err(s.bad("pg.bloat.stale_fraction", "a fraction in (0, 1]"));
    }
    let dead_percent: f64 = s.number("pg.vacuum.dead_percent", "a percent in (0, 100]")?;
    if !(dead_percent > 0.0 && dead_percent <= 100.0) {
        return Err(s.bad("pg.vacuum.dead_percent", "a percent in (0, 100]"));
    }
    let freeze_age = match optional(s, "pg.vacuum.freeze_age") {
        Some(_) => positive(s, "pg.vacuum.freeze_age", "an XID age > 0")?,
        None => xid_age.warn as i64,
    };
    let vacuum = VacuumLimits {
        max_tables_per_run: positive(s, "pg.vacuum.max_tables_per_run", "a whole number >= 1")?,
        statement_timeout_seconds: positive(
            s,
            "pg.vacuum.statement_timeout_seconds",
            "whole seconds >= 1",
        )?,
        lock_timeout_ms: positive(s, "pg.vacuum.lock_timeout_ms", "milliseconds >= 1")?,
        time_budget_seconds: positive(s, "pg.vacuum.time_budget_seconds", "whole seconds >= 1")?,
        deadline_margin_seconds: s.number("pg.vacuum.deadline_margin_seconds", "whole seconds")?,
        cooldown_seconds: s.number("pg.vacuum.cooldown_seconds", "whole seconds")?,
        min_dead_tuples: s.number("pg.vacuum.min_dead_tuples", "a whole number")?,
        dead_percent,
        freeze_age,
        analyze_min_changes: s.number("pg.vacuum.analyze_min_changes", "a whole number")?,
        cost_delay_ms: s.number("pg.vacuum.cost_delay_ms", "milliseconds")?,
        cost_limit: positive(s, "pg.vacuum.cost_limit", "a whole number >= 1")?,
        full_allowed: s.boolean("pg.vacuum.full_allowed")?,
    };
    let reindex_percent: f64 = s.number("pg.index.reindex_percent", "a percent in (0, 100]")?;
    if !(reindex_percent > 0.0 && reindex_percent <= 100.0) {
        return Err(s.bad("pg.index.reindex_percent", "a percent in (0, 100]"));
    }
    let index = IndexLimits {
        reindex_percent,
        min_bytes: s.number("pg.index.min_bytes", "bytes")?,
        max_per_run: s.number("pg.index.max_per_run", "a whole number")?,
    };
    let terminate = TerminatePolicy {
        enabled: s.boolean("pg.terminate.enabled")?,
        allow_roles: s.list("pg.terminate.allow_roles"),
        allow_applications: s.list("pg.terminate.allow_applications"),
        protected_roles: s.list("pg.terminate.protected_roles"),
    };
    Ok(PgConfig {
        databases: parse_databases(s)?,
        monitor_user: optional(s, "pg.monitor_user"),
        maintenance_user: optional(s, "pg.maintenance_user"),
        ca_bundle_path: optional(s, "pg.ca_bundle_path"),
        connect_timeout_seconds: positive(s, "pg.connect_timeout_seconds", "whole seconds >= 1")?,
        statement_timeout_ms: positive(s, "pg.statement_timeout_ms", "milliseconds >= 1")?,
        lock_timeout_ms: positive(s, "pg.lock_timeout_ms", "milliseconds >= 1")?,
        connections: percent_levels(
            s,
            "pg.connections.warn_percent",
            "pg.connections.crit_percent",
            true,
        )?,
        cache_hit: percent_levels(
            s,
            "pg.cache_hit.warn_percent",
            "pg.cache_hit.crit_percent",
            false,
        )?,
        cache_hit_min_blocks: s.number("pg.cache_hit.min_blocks", "a whole number")?,
        replication_lag_seconds: levels(
            s,
            "pg.replication_lag.warn_seconds",
            "pg.replication_lag.crit_seconds",
            true,
        )?,
        xid_age,
        xid_emergency_age,
        bloat_percent,
        bloat_min_bytes: s.number("pg.bloat.min_bytes", "bytes")?,
        bloat_measure_per_run: positive(s, "pg.bloat.measure_per_run", "a whole number >= 1")?,
        stale_fraction,
        stale_hours: positive(s, "pg.bloat.stale_hours", "whole hours >= 1")?,
        long_tx_seconds: levels(
            s,
            "pg.long_tx.warn_seconds",
            "pg.long_tx.crit_seconds",
            true,
        )?,
        idle_in_tx_warn_seconds: s.number("pg.idle_in_tx.warn_seconds", "seconds")?,
        deadlocks_per_hour: levels(
            s,
            "pg.deadlocks.warn_per_hour",
            "pg.deadlocks.crit_per_hour",
            true,
        )?,
        lock_wait_warn_seconds: s.number("pg.lock_wait.warn_seconds", "seconds")?,
        vacuum_failure_repeat: positive(s, "pg.vacuum_failure.repeat", "a whole number >= 1")?,
        vacuum_stale_hours: positive(s, "pg.vacuum_failure.stale_hours", "whole hours >= 1")?,
        vacuum_progress_warn_seconds: positive(
            s,
            "pg.vacuum_progress.warn_seconds",
            "seconds > 0",
        )?,
        unused_index_min_stats_age_days: s
            .number("pg.unused_index.min_stats_age_days", "whole days")?,
        unused_index_min_bytes: s.number("pg.unused_index.min_bytes", "bytes")?,
        slow_query_mean_ms: positive(s, "pg.slow_query.mean_ms", "milliseconds > 0")?,
        slow_query_min_calls: s.number("pg.slow_query.min_calls", "a whole number")?,
        index,
        vacuum,
        terminate,
        index_bloat_percent: percent_levels(
            s,
            "pg.index_bloat.warn_percent",
            "pg.index_bloat.crit_percent",
            true,
        )?,
        wal_bytes_per_second: levels(
            s,
            "pg.wal.warn_bytes_per_second",
            "pg.wal.crit_bytes_per_second",
            true,
        )?,
        emergency_freeze: emergency_freeze(s)?,
        vacuum_delay: VacuumDelay {
            sleep_percent: {
                let p: f64 = s.number("pg.vacuum_delay.sleep_percent", "a percent in [0, 100)")?;
                if !(0.0..100.0).contains(&p) {
                    return Err(s.bad("pg.vacuum_delay.sleep_percent", "a percent in [0, 100)"));
                }
                p
            },
            min_runs: positive(s, "pg.vacuum_delay.min_runs", "a whole number >= 1")?,
            samples_per_run: positive(s, "pg.vacuum_delay.samples_per_run", "a whole number >= 1")?,
            sample_interval_ms: s.number("pg.vacuum_delay.sample_interval_ms", "milliseconds")?,
        },
    })
}

/// Whether a PostgreSQL URL carries a password, in its user info (`user:pw@host`) or as a
/// `password` parameter. Passwords come from SSM SecureString only: every PostgreSQL URL nbaops
/// reads (its config, `failover.verify.urls`) and every one it connects with is checked here.
pub fn url_carries_password(url: &str) -> bool {
    let userinfo = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|authority| authority.rsplit_once('@'))
        .map(|(userinfo, _)| userinfo);
    userinfo.is_some_and(|u| u.contains(':'))
        || url
            .parse::<tokio_postgres::Config>()
            .is_ok_and(|c| c.get_password().is_some())
}

impl PgConfig {
    /// The URL to connect with for `role` ("monitor" or "maintenance"): the role's user swapped
    /// in when configured, a connect timeout. The password goes to the connector apart.
    pub fn connect_url(&self, target: &PgTarget, role: &str) -> String {
        let user = match role {
            "maintenance" => self.maintenance_user.as_deref(),
            _ => self.monitor_user.as_deref(),
        };
        let (scheme, rest) = target
            .url
            .split_once("://")
            .unwrap_or(("postgres", &target.url));
        let (url_user, hostpart) = match rest.split_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let auth = match user {
            Some(u) => format!("{}@", encode_userinfo(u)),
            None => url_user.map(|u| format!("{u}@")).unwrap_or_default(),
        };
        crate::sql::with_connect_timeout(
            &format!("{scheme}://{auth}{hostpart}"),
            self.connect_timeout_seconds,
        )
    }

    /// The SecureString holding `role`'s password for `target`.
    pub fn secret_name(env: &str, target: &PgTarget, role: &str) -> String {
        format!("/nbaops/{env}/secrets/pg/{}/{role}", target.name)
    }
}

/// Percent-encodes the characters that would break a URL's userinfo.
pub fn encode_userinfo(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '-' | '_' | '.' | '~' => c.to_string(),
            other => {
                let mut buf = [0u8; 4];
                other
                    .encode_utf8(&mut buf)
                    .bytes()
                    .map(|b| format!("%{b:02X}"))
                    .collect()
            }
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::{layer, Env};
    use std::collections::BTreeMap;

    fn load(pairs: &[(&str, &str)]) -> Result<PgConfig> {
        let vars: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        from_settings(&layer(Env::Dev, &vars, &BTreeMap::new())?)
    }

    #[test]
    fn spec_defaults() {
        let c = load(&[]).unwrap();
        assert_eq!(
            c.connections,
            Levels {
                warn: 75.0,
                crit: 90.0
            }
        );
        assert_eq!(
            c.cache_hit,
            Levels {
                warn: 95.0,
                crit: 90.0
            }
        );
        assert_eq!(c.replication_lag_seconds.crit, 300.0);
        assert_eq!(
            c.xid_age,
            Levels {
                warn: 5e8,
                crit: 1e9
            }
        );
        assert_eq!(
            c.bloat_percent,
            Levels {
                warn: 20.0,
                crit: 40.0
            }
        );
        assert_eq!(
            c.long_tx_seconds,
            Levels {
                warn: 300.0,
                crit: 900.0
            }
        );
        assert_eq!(
            c.deadlocks_per_hour,
            Levels {
                warn: 1.0,
                crit: 10.0
            }
        );
        assert_eq!(c.vacuum.freeze_age, 500_000_000);
        assert_eq!(c.vacuum.deadline_margin_seconds, 30);
        assert_eq!((c.index.reindex_percent, c.index.max_per_run), (40.0, 1));
        assert_eq!(c.unused_index_min_stats_age_days, 7);
        assert!(!c.terminate.enabled && !c.vacuum.full_allowed);
        assert!(c.databases.is_empty());
    }

    #[test]
    fn databases_named_or_bare_and_no_password_in_urls() {
        let c = load(&[(
            "NBAOPS_PG__DATABASES",
            "app=postgres://mon@db:5432/app, postgres://mon@db:5432/reports?sslmode=verify-full",
        )])
        .unwrap();
        assert_eq!(c.databases[0].name, "app");
        assert_eq!(c.databases[1].name, "reports");
        let e = load(&[("NBAOPS_PG__DATABASES", "app=postgres://mon:hunter2@db/app")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("password") && e.contains("secrets/pg/app"),
            "{e}"
        );
        // As a parameter too: the same check as the connector's (one function).
        let e = load(&[(
            "NBAOPS_PG__DATABASES",
            "app=postgres://mon@db/app?password=x",
        )])
        .unwrap_err()
        .to_string();
        assert!(e.contains("carries a password"), "{e}");
        assert!(!url_carries_password(
            "postgres://mon@db:5432/app?sslmode=require"
        ));
        assert!(load(&[("NBAOPS_PG__DATABASES", "app=mysql://x@db/app")]).is_err());
        assert!(load(&[(
            "NBAOPS_PG__DATABASES",
            "a=postgres://x@db/a,a=postgres://x@db/b"
        )])
        .is_err());
    }

    #[test]
    fn connect_url_swaps_user_and_adds_a_timeout_never_a_password() {
        let c = load(&[
            (
                "NBAOPS_PG__DATABASES",
                "app=postgres://mon@db:5432/app?sslmode=require",
            ),
            ("NBAOPS_PG__MAINTENANCE_USER", "maint"),
        ])
        .unwrap();
        let t = &c.databases[0];
        assert_eq!(
            c.connect_url(t, "maintenance"),
            "postgres://maint@db:5432/app?sslmode=require&connect_timeout=5"
        );
        assert_eq!(
            c.connect_url(t, "monitor"),
            "postgres://mon@db:5432/app?sslmode=require&connect_timeout=5"
        );
        assert_eq!(
            PgConfig::secret_name("dev", t, "monitor"),
            "/nbaops/dev/secrets/pg/app/monitor"
        );
    }

    #[test]
    fn wrong_order_and_ranges_name_the_key() {
        let e = load(&[("NBAOPS_PG__BLOAT__CRIT_PERCENT", "10")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("pg.bloat.crit_percent"), "{e}");
        let e = load(&[("NBAOPS_PG__CACHE_HIT__CRIT_PERCENT", "99")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("pg.cache_hit.crit_percent"), "{e}");
        let e = load(&[("NBAOPS_PG__XID__WARN_AGE", "soon")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("pg.xid.warn_age") && e.contains("soon"), "{e}");
    }
}

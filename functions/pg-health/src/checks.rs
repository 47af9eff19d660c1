//! The SPEC 3.2.2 checks as pure functions: observed rows + previous counters + config -> findings.
//! Warning findings are one severity below the SPEC's (critical) severity; wraparound past
//! `vacuum_failsafe_age` is an emergency (P1).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use nbaops_shared::alerts::Severity;
use nbaops_shared::config::pg::{Levels, PgConfig};
use nbaops_shared::sql::{
    bloat_estimate, bool_of, f64_of, i64_of, str_of, time_of, BloatEstimate, Connections,
    IndexStats, Row, Session, TableStats,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Warning,
    Critical,
    Emergency,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// "connections", "cache-hit", "bloat"...: the first part of the dedup key.
    pub signal: &'static str,
    pub level: Level,
    pub severity: Severity,
    /// `pg:<db>`, `pg:<db>/<schema>.<table>`, `pg:<db>/pid:<n>`, `pg:<db>/standby:<name>`.
    pub resource: String,
    pub summary: String,
    pub details: Value,
}

impl Finding {
    /// Stable across runs: one bloated table is one incident, however many runs see it.
    pub fn dedup_key(&self) -> String {
        format!("pg-{}#{}", self.signal, self.resource)
    }
}

/// The signal a dedup key belongs to (`pg-bloat#pg:app/public.t` -> `bloat`).
pub fn signal_of(key: &str) -> &str {
    key.strip_prefix("pg-")
        .and_then(|k| k.split('#').next())
        .unwrap_or("")
}

fn severity(spec: Severity, level: Level) -> Severity {
    match level {
        Level::Emergency => Severity::P1,
        Level::Critical => spec,
        Level::Warning => match spec {
            Severity::P1 => Severity::P2,
            Severity::P2 => Severity::P3,
            _ => Severity::P4,
        },
    }
}

fn finding(
    signal: &'static str,
    spec: Severity,
    level: Level,
    resource: String,
    summary: String,
    details: Value,
) -> Finding {
    Finding {
        signal,
        level,
        severity: severity(spec, level),
        resource,
        summary,
        details,
    }
}

/// Higher is worse.
fn level_above(v: f64, l: &Levels) -> Option<Level> {
    if v > l.crit {
        Some(Level::Critical)
    } else if v > l.warn {
        Some(Level::Warning)
    } else {
        None
    }
}

pub fn db_resource(db: &str) -> String {
    format!("pg:{db}")
}

// ---- connections ----

pub fn connections(db: &str, c: &Connections, cfg: &PgConfig) -> Option<Finding> {
    let pct = c.percent();
    let level = level_above(pct, &cfg.connections)?;
    Some(finding(
        "connections",
        Severity::P2,
        level,
        db_resource(db),
        format!(
            "{db}: {} of {} usable connections in use ({pct:.0} %; {} idle, {} idle in transaction)",
            c.used,
            c.usable(),
            c.idle,
            c.idle_in_tx
        ),
        json!({"used": c.used, "usable": c.usable(), "max_connections": c.max_connections, "reserved": c.reserved, "percent": pct, "idle": c.idle, "active": c.active, "idle_in_transaction": c.idle_in_tx}),
    ))
}

/// A failed connection: "too many clients" / reserved slots is the connections signal at its
/// critical level; anything else means the database is unreachable (P1).
pub fn refused(db: &str, error: &str) -> Finding {
    let lower = error.to_ascii_lowercase();
    if lower.contains("statement timeout") || lower.contains("57014") {
        // The server answered: it is reachable, our checks are too slow for it.
        return check_failed(db, &[(vec!["session"], error.to_string())])
            .unwrap_or_else(|| unreachable_finding(db, error));
    }
    if lower.contains("too many clients") || lower.contains("connection slots are reserved") {
        finding(
            "connections",
            Severity::P2,
            Level::Critical,
            db_resource(db),
            format!("{db}: connection refused, no slot left: {error}"),
            json!({"error": error}),
        )
    } else {
        unreachable_finding(db, error)
    }
}

fn unreachable_finding(db: &str, error: &str) -> Finding {
    finding(
        "unreachable",
        Severity::P1,
        Level::Critical,
        db_resource(db),
        format!("{db}: cannot connect: {error}"),
        json!({"error": error}),
    )
}

/// Checks that could not run (a statement timeout, a missing privilege): one finding per
/// database, so a blind spot is announced once and resolves when every check runs again.
pub fn check_failed(db: &str, failures: &[(Vec<&str>, String)]) -> Option<Finding> {
    if failures.is_empty() {
        return None;
    }
    let timeout = failures
        .iter()
        .any(|(_, e)| e.to_ascii_lowercase().contains("statement timeout"));
    let what: Vec<String> = failures
        .iter()
        .map(|(signals, e)| format!("{}: {e}", signals.join("/")))
        .collect();
    Some(finding(
        "check-failed",
        Severity::P3,
        Level::Critical,
        db_resource(db),
        format!(
            "{db}: {} check(s) could not run{}: {}",
            failures.len(),
            if timeout {
                " (statement timeout: raise pg.statement_timeout_ms or find what slows the catalog)"
            } else {
                ""
            },
            what.join("; ")
        ),
        json!({"failures": what}),
    ))
}

// ---- cumulative counters between runs ----

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    pub at: DateTime<Utc>,
    pub stats_reset: Option<String>,
    pub postmaster_start: Option<String>,
    pub blks_hit: i64,
    pub blks_read: i64,
    pub deadlocks: i64,
    /// Who answered: a standby, or the primary's WAL timeline. Absent from baselines written
    /// before they were recorded (read as unknown, never as a change).
    #[serde(default)]
    pub in_recovery: Option<bool>,
    #[serde(default)]
    pub timeline: Option<i64>,
}

impl Counters {
    pub fn from_row(r: &Row, now: DateTime<Utc>) -> Counters {
        Counters {
            at: time_of(r, "at").unwrap_or(now),
            stats_reset: str_of(r, "stats_reset"),
            postmaster_start: str_of(r, "postmaster_start"),
            blks_hit: i64_of(r, "blks_hit").unwrap_or(0),
            blks_read: i64_of(r, "blks_read").unwrap_or(0),
            deadlocks: i64_of(r, "deadlocks").unwrap_or(0),
            in_recovery: r.get("in_recovery").map(|_| bool_of(r, "in_recovery")),
            timeline: i64_of(r, "timeline"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Delta {
    /// No earlier run: this one is the baseline.
    First,
    /// Counters restarted (statistics reset, server restart or failover): no delta this run.
    Reset(String),
    Since {
        seconds: f64,
        blks_hit: i64,
        blks_read: i64,
        deadlocks: i64,
    },
}

pub fn delta(prev: Option<&Counters>, cur: &Counters) -> Delta {
    let Some(p) = prev else {
        return Delta::First;
    };
    // Checked first: after a failover the postmaster start differs too, and "restarted"
    // would hide that another server now answers.
    match (p.in_recovery, cur.in_recovery) {
        (Some(true), Some(false)) => {
            return Delta::Reset(format!(
                "promoted: a primary now (timeline {}), a standby at the last run",
                cur.timeline.map_or("?".into(), |t| t.to_string())
            ))
        }
        (Some(false), Some(true)) => {
            return Delta::Reset("a standby now, a primary at the last run (failover)".into())
        }
        _ => {}
    }
    if let (Some(was), Some(now)) = (p.timeline, cur.timeline) {
        if was != now {
            return Delta::Reset(format!(
                "failover: another primary answers (timeline {was} -> {now})"
            ));
        }
    }
    if p.stats_reset != cur.stats_reset {
        return Delta::Reset(format!(
            "statistics reset at {}",
            cur.stats_reset.as_deref().unwrap_or("?")
        ));
    }
    if p.postmaster_start != cur.postmaster_start {
        return Delta::Reset(format!(
            "server restarted at {}",
            cur.postmaster_start.as_deref().unwrap_or("?")
        ));
    }
    if cur.blks_hit < p.blks_hit || cur.blks_read < p.blks_read || cur.deadlocks < p.deadlocks {
        return Delta::Reset("a counter went down (failover or crash recovery)".into());
    }
    let seconds = (cur.at - p.at).num_milliseconds() as f64 / 1000.0;
    if seconds <= 0.0 {
        return Delta::Reset("clock went backwards between runs".into());
    }
    Delta::Since {
        seconds,
        blks_hit: cur.blks_hit - p.blks_hit,
        blks_read: cur.blks_read - p.blks_read,
        deadlocks: cur.deadlocks - p.deadlocks,
    }
}

/// Hit ratio of the blocks read since the last run; not judged below the volume floor.
pub fn cache_hit(db: &str, d: &Delta, cfg: &PgConfig) -> (Option<f64>, Option<Finding>) {
    let Delta::Since {
        blks_hit,
        blks_read,
        ..
    } = d
    else {
        return (None, None);
    };
    let total = blks_hit + blks_read;
    if total <= 0 || total < cfg.cache_hit_min_blocks {
        return (None, None);
    }
    let ratio = 100.0 * *blks_hit as f64 / total as f64;
    let level = if ratio < cfg.cache_hit.crit {
        Some(Level::Critical)
    } else if ratio < cfg.cache_hit.warn {
        Some(Level::Warning)
    } else {
        None
    };
    let f = level.map(|level| {
        finding(
            "cache-hit",
            Severity::P3,
            level,
            db_resource(db),
            format!("{db}: buffer cache hit ratio {ratio:.1} % over the last {total} block reads"),
            json!({"ratio_percent": ratio, "blks_hit": blks_hit, "blks_read": blks_read}),
        )
    });
    (Some(ratio), f)
}

/// Deadlocks per hour: the delta divided by the elapsed hours, but never by less than one hour
/// (3 deadlocks in 5 minutes are 3 "in the last hour", not 36 per hour).
pub fn deadlocks(db: &str, d: &Delta, cfg: &PgConfig) -> (Option<f64>, Option<Finding>) {
    let Delta::Since {
        seconds, deadlocks, ..
    } = d
    else {
        return (None, None);
    };
    let per_hour = *deadlocks as f64 / (seconds / 3600.0).max(1.0);
    let f = level_above(per_hour, &cfg.deadlocks_per_hour).map(|level| {
        finding(
            "deadlocks",
            Severity::P2,
            level,
            db_resource(db),
            format!(
                "{db}: {deadlocks} deadlock(s) in the last {:.0} min ({per_hour:.1} per hour)",
                seconds / 60.0
            ),
            json!({"deadlocks": deadlocks, "seconds": seconds, "per_hour": per_hour}),
        )
    });
    (Some(per_hour), f)
}

// ---- wraparound ----

pub fn wraparound(db: &str, r: &Row, cfg: &PgConfig) -> (i64, Option<Finding>) {
    let xid = i64_of(r, "xid_age").unwrap_or(0);
    let mxid = i64_of(r, "mxid_age").unwrap_or(0);
    let emergency = cfg
        .xid_emergency_age
        .or_else(|| i64_of(r, "failsafe_age"))
        .unwrap_or(1_600_000_000);
    let (age, kind) = if mxid > xid {
        (mxid, "multixact")
    } else {
        (xid, "transaction")
    };
    let level = if age >= emergency {
        Some(Level::Emergency)
    } else {
        level_above(age as f64, &cfg.xid_age)
    };
    let f = level.map(|level| {
        finding(
            "wraparound",
            Severity::P1,
            level,
            db_resource(db),
            format!("{db}: {kind} ID age {age} ({:?}; emergency at {emergency}, hard limit ~2.1 B)", level),
            json!({"xid_age": xid, "mxid_age": mxid, "emergency_age": emergency, "warn_age": cfg.xid_age.warn, "crit_age": cfg.xid_age.crit}),
        )
    });
    (age, f)
}

// ---- replication ----

/// Primary side: zero when the standby replayed everything sent (an idle primary leaves
/// `replay_lag` NULL or stale), else `replay_lag`.
pub fn replication_primary(db: &str, rows: &[Row], cfg: &PgConfig) -> (f64, Vec<Finding>) {
    let mut max = 0.0f64;
    let mut out = vec![];
    for r in rows {
        let name = str_of(r, "standby").unwrap_or_else(|| "standby".into());
        let lag = if bool_of(r, "caught_up") {
            0.0
        } else {
            f64_of(r, "replay_lag_seconds").unwrap_or(0.0)
        };
        max = max.max(lag);
        if let Some(level) = level_above(lag, &cfg.replication_lag_seconds) {
            out.push(finding(
                "replication-lag",
                Severity::P2,
                level,
                format!("pg:{db}/standby:{name}"),
                format!("{db}: standby {name} replays {lag:.0} s behind"),
                json!({"lag_seconds": lag, "replay_gap_bytes": f64_of(r, "replay_gap_bytes"), "state": str_of(r, "state")}),
            ));
        }
    }
    (max, out)
}

/// Standby side: zero when everything received is replayed, else the age of the last replayed
/// transaction; a standby whose WAL receiver is not streaming is a warning on its own.
pub fn replication_standby(db: &str, r: &Row, cfg: &PgConfig) -> (f64, Option<Finding>) {
    let lag = if bool_of(r, "caught_up") {
        0.0
    } else {
        f64_of(r, "since_last_replay").unwrap_or(0.0)
    };
    let streaming = bool_of(r, "streaming");
    let level = match level_above(lag, &cfg.replication_lag_seconds) {
        Some(l) => Some(l),
        None if !streaming => Some(Level::Warning),
        None => None,
    };
    let f = level.map(|level| {
        finding(
            "replication-lag",
            Severity::P2,
            level,
            db_resource(db),
            if streaming {
                format!("{db} (standby): replay {lag:.0} s behind")
            } else {
                format!("{db} (standby): WAL receiver not streaming; replay {lag:.0} s behind")
            },
            json!({"lag_seconds": lag, "streaming": streaming, "replay_gap_bytes": f64_of(r, "replay_gap_bytes")}),
        )
    });
    (lag, f)
}

// ---- bloat ----

/// Table bloat from the measured figure (pgstattuple_approx) when there is one, else from a
/// reliable estimate; an unreliable estimate is a note, never a number.
pub fn bloat(
    db: &str,
    tables: &[TableStats],
    measured: &BTreeMap<i64, Measurement>,
    cfg: &PgConfig,
    now: DateTime<Utc>,
) -> (Vec<Finding>, Vec<String>) {
    let mut findings = vec![];
    let mut notes = vec![];
    for t in tables.iter().filter(|t| t.bytes >= cfg.bloat_min_bytes) {
        let estimate = bloat_estimate(t, cfg, now);
        let (pct, source) = match (measured.get(&t.oid), &estimate) {
            (Some(m), _) if m.fresh => (m.percent, "measured (pgstattuple_approx)".to_string()),
            (Some(m), _) => (
                m.percent,
                format!(
                    "measured (pgstattuple_approx) at {}, re-measured in turn",
                    m.at.to_rfc3339()
                ),
            ),
            (None, BloatEstimate::Percent { percent, .. }) => {
                (*percent, "estimated from statistics".to_string())
            }
            (None, BloatEstimate::Unreliable { reason }) => {
                if t.dead_percent() > cfg.bloat_percent.warn {
                    notes.push(format!(
                        "{}: {} dead tuples ({:.0} %) but no trustworthy bloat figure: {reason}",
                        t.name(),
                        t.n_dead_tup,
                        t.dead_percent()
                    ));
                }
                continue;
            }
        };
        if let Some(level) = level_above(pct, &cfg.bloat_percent) {
            findings.push(finding(
                "bloat",
                Severity::P3,
                level,
                format!("pg:{db}/{}", t.name()),
                format!("{db}: table {} is {pct:.0} % bloat ({source}, {} MB)", t.name(), t.bytes / 1_048_576),
                json!({"percent": pct, "source": source, "bytes": t.bytes, "n_dead_tup": t.n_dead_tup, "n_live_tup": t.n_live_tup, "estimate": estimate, "last_vacuum": t.last_vacuum, "autovacuum_enabled": t.autovacuum_enabled}),
            ));
        }
    }
    (findings, notes)
}

/// A pgstattuple_approx figure, kept between runs (ledger `pgbase#<db>` / `measured`, keyed by
/// oid) so the candidates not measured this run keep their last figure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// Dead + free percent.
    pub percent: f64,
    /// When it was measured (this run's `now` for a fresh figure).
    pub at: DateTime<Utc>,
    /// The table's size then: a figure of a table that changed size since is measured again first.
    pub bytes: i64,
    /// Measured by this run (not stored: a remembered figure is never fresh).
    #[serde(skip)]
    pub fresh: bool,
    /// When this table's figure was last handed off to vacuum-trigger (`pgmaint#<db>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handed_off: Option<DateTime<Utc>>,
    /// The figure the previous measurement gave (not stored).
    #[serde(skip)]
    pub previous: Option<f64>,
}

/// A hand-off item lives a day; an unchanged figure is handed off again only after half of it,
/// so a steady state costs no ledger write per measured table and run.
pub const HAND_OFF_REFRESH_HOURS: i64 = 12;

/// Whether a fresh figure goes to vacuum-trigger: over the warning threshold and new — never
/// handed off, handed off more than [`HAND_OFF_REFRESH_HOURS`] ago, or 1 point or more away from
/// the previous measurement. (After vacuum-trigger acted on a figure it deletes the item; the
/// same figure is not handed off again before the refresh.)
pub fn needs_hand_off(m: &Measurement, warn_percent: f64, now: DateTime<Utc>) -> bool {
    m.fresh
        && m.percent > warn_percent
        && (m
            .handed_off
            .is_none_or(|h| now - h >= chrono::Duration::hours(HAND_OFF_REFRESH_HOURS))
            || m.previous.is_none_or(|p| (p - m.percent).abs() >= 1.0))
}

/// A remembered figure is used for at most this long (and only while the table keeps its size).
pub const MEASUREMENT_VALID_HOURS: i64 = 24;

/// The bound on pgstattuple_approx per run: which candidates are measured now, which keep an
/// earlier figure, which have none yet.
#[derive(Debug, Default)]
pub struct MeasurePlan<'a> {
    pub measure: Vec<&'a TableStats>,
    /// Candidates not measured this run whose remembered figure is still valid.
    pub reuse: BTreeMap<i64, Measurement>,
    /// Candidates neither measured this run nor with a valid figure: no number this run.
    pub unconfirmed: Vec<&'a TableStats>,
}

/// At most `at_most` candidates are measured per run, so the scan does not grow with the number
/// of bloated tables: first those without a valid figure (never measured, older than
/// [`MEASUREMENT_VALID_HOURS`], or resized since), largest first; then those with the oldest
/// figure. Over ceil(candidates / at_most) runs every candidate is measured again.
pub fn plan_measurements<'a>(
    candidates: &[&'a TableStats],
    memory: &BTreeMap<String, Measurement>,
    at_most: usize,
    now: DateTime<Utc>,
) -> MeasurePlan<'a> {
    let valid = |t: &TableStats| {
        memory.get(&t.oid.to_string()).filter(|m| {
            m.bytes == t.bytes
                && m.at <= now
                && now - m.at < chrono::Duration::hours(MEASUREMENT_VALID_HOURS)
        })
    };
    let mut order: Vec<(Option<DateTime<Utc>>, &TableStats)> = candidates
        .iter()
        .map(|t| (valid(t).map(|m| m.at), *t))
        .collect();
    // None (no valid figure) sorts before any time; the candidates come largest first and the
    // sort is stable, so ties keep that order.
    order.sort_by_key(|(at, _)| *at);
    let mut plan = MeasurePlan::default();
    for (i, (_, t)) in order.into_iter().enumerate() {
        if i < at_most {
            plan.measure.push(t);
        } else if let Some(m) = valid(t) {
            plan.reuse.insert(t.oid, m.clone());
        } else {
            plan.unconfirmed.push(t);
        }
    }
    plan
}

/// At most this many figures are remembered, the newest: the ledger item holding them must stay
/// under DynamoDB's 400 KB item size (names and values; 1 KB = 1,024 bytes) —
/// https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Constraints.html#limits-items
/// (checked by `the_remembered_figures_fit_one_dynamodb_item`). Keyed by oid, without table
/// names (a quoted identifier of control characters would be 6 JSON bytes per byte).
pub const MEASUREMENTS_KEPT: usize = 1000;

/// What the next run remembers: this run's figures and the reused ones, newest first, bounded.
pub fn measurement_memory(
    fresh: &BTreeMap<i64, Measurement>,
    reused: &BTreeMap<i64, Measurement>,
) -> BTreeMap<String, Measurement> {
    let mut all: Vec<(&i64, &Measurement)> = fresh.iter().chain(reused.iter()).collect();
    all.sort_by_key(|(_, m)| std::cmp::Reverse(m.at));
    all.into_iter()
        .take(MEASUREMENTS_KEPT)
        .map(|(oid, m)| (oid.to_string(), m.clone()))
        .collect()
}

/// Tables worth measuring with pgstattuple_approx: over the warning threshold by estimate, or
/// with many dead tuples while the estimate cannot be trusted. Largest first, at most `limit`.
/// Dedup keys of bloat findings this run cannot confirm nor clear: tables large enough to judge
/// with neither a measurement nor a trustworthy estimate (after a failover the statistics are
/// the new server's and start empty; a table never analyzed). Their open finding stays open.
pub fn bloat_unjudged<V>(
    db: &str,
    tables: &[TableStats],
    measured: &BTreeMap<i64, V>,
    cfg: &PgConfig,
    now: DateTime<Utc>,
) -> Vec<String> {
    tables
        .iter()
        .filter(|t| t.bytes >= cfg.bloat_min_bytes && !measured.contains_key(&t.oid))
        .filter(|t| {
            matches!(
                bloat_estimate(t, cfg, now),
                BloatEstimate::Unreliable { .. }
            )
        })
        .map(|t| format!("pg-bloat#pg:{db}/{}", t.name()))
        .collect()
}

pub fn worth_measuring<'a>(
    tables: &'a [TableStats],
    cfg: &PgConfig,
    now: DateTime<Utc>,
    limit: usize,
) -> Vec<&'a TableStats> {
    tables
        .iter()
        .filter(|t| t.bytes >= cfg.bloat_min_bytes && !t.exclusively_locked)
        .filter(|t| match bloat_estimate(t, cfg, now) {
            BloatEstimate::Percent { percent, .. } => percent > cfg.bloat_percent.warn,
            BloatEstimate::Unreliable { .. } => t.dead_percent() > cfg.bloat_percent.warn,
        })
        .take(limit)
        .collect()
}

// ---- sessions ----

/// Long transactions, idle-in-transaction sessions and lock waits, client sessions only
/// (never autovacuum, walsenders or our own session).
pub fn sessions(db: &str, all: &[Session], cfg: &PgConfig) -> (f64, Vec<Finding>) {
    let clients: Vec<&Session> = all.iter().filter(|s| s.is_client()).collect();
    let longest = clients
        .iter()
        .map(|s| s.xact_seconds)
        .fold(0.0f64, f64::max);
    let mut out = vec![];
    for s in &clients {
        let details = json!({"pid": s.pid, "role": s.role, "application": s.application, "state": s.state, "xact_seconds": s.xact_seconds, "state_seconds": s.state_seconds, "xact_start": s.xact_start, "query": s.query});
        if let Some(level) = level_above(s.xact_seconds, &cfg.long_tx_seconds) {
            out.push(finding(
                "long-tx",
                Severity::P2,
                level,
                format!("pg:{db}/pid:{}", s.pid),
                format!(
                    "{db}: transaction of pid {} ({}, {}) open for {:.0} min, {}",
                    s.pid,
                    s.role,
                    if s.application.is_empty() {
                        "-"
                    } else {
                        &s.application
                    },
                    s.xact_seconds / 60.0,
                    s.state
                ),
                details,
            ));
        } else if s.state.starts_with("idle in transaction")
            && s.state_seconds > cfg.idle_in_tx_warn_seconds
        {
            out.push(finding(
                "idle-in-tx",
                Severity::P2,
                Level::Warning,
                format!("pg:{db}/pid:{}", s.pid),
                format!(
                    "{db}: pid {} ({}) idle in transaction for {:.0} min",
                    s.pid,
                    s.role,
                    s.state_seconds / 60.0
                ),
                details,
            ));
        }
    }
    let waiting: Vec<&&Session> = clients
        .iter()
        .filter(|s| {
            s.lock_wait_seconds
                .is_some_and(|w| w > cfg.lock_wait_warn_seconds)
        })
        .collect();
    if !waiting.is_empty() {
        let longest_wait = waiting
            .iter()
            .filter_map(|s| s.lock_wait_seconds)
            .fold(0.0f64, f64::max);
        out.push(finding(
            "lock-wait",
            Severity::P3,
            Level::Critical,
            db_resource(db),
            format!(
                "{db}: {} session(s) waiting on locks, longest {longest_wait:.0} s",
                waiting.len()
            ),
            json!({"pids": waiting.iter().map(|s| s.pid).collect::<Vec<_>>(), "longest_seconds": longest_wait}),
        ));
    }
    (longest, out)
}

// ---- VACUUM failures, as far as they are observable ----

/// Prepared transactions and inactive replication slots holding the xmin horizon: no VACUUM
/// (ours or autovacuum's) can remove the dead tuples behind them.
pub fn xmin_holders(db: &str, rows: &[Row], cfg: &PgConfig) -> Vec<Finding> {
    rows.iter()
        .filter_map(|r| {
            let kind = str_of(r, "kind").unwrap_or_default();
            let name = str_of(r, "name").unwrap_or_default();
            let age_s = f64_of(r, "age_seconds");
            let xid_age = i64_of(r, "xid_age").unwrap_or(0);
            let level = match age_s {
                Some(s) => level_above(s, &cfg.long_tx_seconds)?,
                None if xid_age as f64 > cfg.xid_age.warn => Level::Critical,
                None => Level::Warning,
            };
            Some(finding(
                "vacuum-failure",
                Severity::P2,
                level,
                format!("pg:{db}/{}:{name}", kind.replace(' ', "-")),
                format!("{db}: {kind} '{name}' holds the xmin horizon back (XID age {xid_age}): VACUUM cannot remove dead tuples"),
                json!({"kind": kind, "name": name, "age_seconds": age_s, "xid_age": xid_age}),
            ))
        })
        .collect()
}

/// Our own failed or skipped maintenance statements (recorded by vacuum-trigger), per table.
pub fn own_vacuum_failures(
    db: &str,
    failures: &[(String, String)],
    cfg: &PgConfig,
) -> Vec<Finding> {
    let mut per_table: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (table, error) in failures {
        per_table.entry(table).or_default().push(error);
    }
    per_table
        .into_iter()
        .map(|(table, errors)| {
            let level = if errors.len() >= cfg.vacuum_failure_repeat {
                Level::Critical
            } else {
                Level::Warning
            };
            finding(
                "vacuum-failure",
                Severity::P2,
                level,
                format!("pg:{db}/{table}"),
                format!(
                    "{db}: {} failed maintenance run(s) on {table} in the last day: {}",
                    errors.len(),
                    errors.last().copied().unwrap_or("")
                ),
                json!({"failures": errors.len(), "errors": errors}),
            )
        })
        .collect()
}

/// Per-table dead tuples and last vacuum, kept between runs (only tables worth watching).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableSnap {
    pub name: String,
    pub dead: i64,
    pub last_vacuum: Option<DateTime<Utc>>,
}

/// What the next run compares against: tables with at least `pg.vacuum.min_dead_tuples` dead
/// tuples (a bounded item even with 10,000 tables), keyed by oid.
pub fn table_snapshot(tables: &[TableStats], cfg: &PgConfig) -> BTreeMap<String, TableSnap> {
    tables
        .iter()
        .filter(|t| t.n_dead_tup >= cfg.vacuum.min_dead_tuples)
        .map(|t| {
            (
                t.oid.to_string(),
                TableSnap {
                    name: t.name(),
                    dead: t.n_dead_tup,
                    last_vacuum: t.last_vacuum,
                },
            )
        })
        .collect()
}

/// VACUUM is not keeping up with a table: its dead tuples grew since the last run, no vacuum
/// ran in between, the last one is older than `pg.vacuum_failure.stale_hours` (or never), and
/// the dead fraction is past the point where autovacuum should have come. A counter reset
/// (crash, failover) lowers the dead count and so never fires this.
pub fn stalled_vacuums(
    db: &str,
    prev: &BTreeMap<String, TableSnap>,
    tables: &[TableStats],
    cfg: &PgConfig,
    now: DateTime<Utc>,
) -> Vec<Finding> {
    tables
        .iter()
        .filter_map(|t| {
            let p = prev.get(&t.oid.to_string())?;
            let grew = t.n_dead_tup > p.dead;
            let no_vacuum_since = t.last_vacuum == p.last_vacuum;
            let stale = t
                .last_vacuum
                .is_none_or(|v| now - v > chrono::Duration::hours(cfg.vacuum_stale_hours));
            let many = t.n_dead_tup >= cfg.vacuum.min_dead_tuples
                && t.dead_percent() >= cfg.vacuum.dead_percent;
            if !(grew && no_vacuum_since && stale && many) {
                return None;
            }
            let age = t
                .last_vacuum
                .map(|v| format!("{:.0} h ago", (now - v).num_minutes() as f64 / 60.0))
                .unwrap_or_else(|| "never".into());
            Some(finding(
                "vacuum-failure",
                Severity::P2,
                Level::Warning,
                format!("pg:{db}/{}", t.name()),
                format!(
                    "{db}: {} dead tuples grow ({} -> {}, {:.0} %) and the last vacuum was {age}{}",
                    t.name(),
                    p.dead,
                    t.n_dead_tup,
                    t.dead_percent(),
                    if t.autovacuum_enabled { "" } else { " (autovacuum disabled on it)" }
                ),
                json!({"dead_before": p.dead, "dead_now": t.n_dead_tup, "last_vacuum": t.last_vacuum, "autovacuum_enabled": t.autovacuum_enabled}),
            ))
        })
        .collect()
}

/// VACUUMs running now: a count, a note each, and a warning for one running past
/// `pg.vacuum_progress.warn_seconds`.
pub fn vacuum_progress(db: &str, rows: &[Row], cfg: &PgConfig) -> (Vec<Finding>, Vec<String>) {
    let mut findings = vec![];
    let mut notes = vec![];
    for r in rows {
        let table = str_of(r, "table_name").unwrap_or_default();
        let phase = str_of(r, "phase").unwrap_or_default();
        let total = i64_of(r, "heap_blks_total").unwrap_or(0);
        let scanned = i64_of(r, "heap_blks_scanned").unwrap_or(0);
        let secs = f64_of(r, "running_seconds").unwrap_or(0.0);
        let who = str_of(r, "backend_type").unwrap_or_default();
        let pct = if total > 0 {
            100.0 * scanned as f64 / total as f64
        } else {
            0.0
        };
        notes.push(format!(
            "vacuum of {table} running {secs:.0} s ({who}): {phase}, {pct:.0} % of heap scanned"
        ));
        if secs > cfg.vacuum_progress_warn_seconds {
            findings.push(finding(
                "vacuum-progress",
                Severity::P3,
                Level::Warning,
                format!("pg:{db}/{table}"),
                format!("{db}: vacuum of {table} running for {:.0} min ({phase}, {pct:.0} % scanned)", secs / 60.0),
                json!({"pid": i64_of(r, "pid"), "phase": phase, "running_seconds": secs, "heap_blks_total": total, "heap_blks_scanned": scanned, "backend_type": who}),
            ));
        }
    }
    (findings, notes)
}

// ---- indexes and queries: report only ----

/// Unused indexes (see `sql::unused_indexes` for when an index counts), largest 25.
pub fn unused_indexes(
    db: &str,
    indexes: &[IndexStats],
    cfg: &PgConfig,
    now: DateTime<Utc>,
) -> Vec<Finding> {
    let mut unused = nbaops_shared::sql::unused_indexes(indexes, cfg, now);
    unused.sort_by_key(|ix| std::cmp::Reverse(ix.bytes));
    unused
        .into_iter()
        .take(25)
        .map(|ix| {
            finding(
                "unused-index",
                Severity::P3,
                Level::Warning,
                format!("pg:{db}/index:{}", ix.name()),
                format!(
                    "{db}: index {} on {} never used since {} ({} MB): a candidate to drop (check the replicas first)",
                    ix.name(),
                    ix.table,
                    ix.stats_since.map(|t| t.to_rfc3339()).unwrap_or_default(),
                    ix.bytes / 1_048_576
                ),
                json!({"bytes": ix.bytes, "stats_since": ix.stats_since, "table": ix.table}),
            )
        })
        .collect()
}

/// pg_stat_statements entries above the mean-time threshold (the query already filters).
pub fn slow_queries(db: &str, rows: &[Row], cfg: &PgConfig) -> Vec<Finding> {
    rows.iter()
        .filter_map(|r| {
            let mean = f64_of(r, "mean_ms")?;
            let calls = i64_of(r, "calls").unwrap_or(0);
            if mean <= cfg.slow_query_mean_ms || calls < cfg.slow_query_min_calls {
                return None;
            }
            let id = str_of(r, "queryid").unwrap_or_default();
            Some(finding(
                "slow-query",
                Severity::P3,
                Level::Warning,
                format!("pg:{db}/query:{id}"),
                format!(
                    "{db}: query {id} averages {mean:.0} ms over {calls} calls: {}",
                    str_of(r, "query").unwrap_or_default()
                ),
                json!({"queryid": id, "mean_ms": mean, "calls": calls, "total_ms": f64_of(r, "total_ms"), "role": str_of(r, "role"), "query": str_of(r, "query")}),
            ))
        })
        .collect()
}

// ---- WAL archiving ----

pub fn archiver(db: &str, r: &Row) -> Option<Finding> {
    let mode = str_of(r, "archive_mode").unwrap_or_default();
    if mode == "off" {
        return None;
    }
    let failed = time_of(r, "last_failed_time")?;
    let ok = time_of(r, "last_archived_time");
    if ok.is_some_and(|ok| ok >= failed) {
        return None;
    }
    Some(finding(
        "archiver",
        Severity::P2,
        Level::Warning,
        db_resource(db),
        format!(
            "{db}: WAL archiving is failing (last failure {failed}, WAL {})",
            str_of(r, "last_failed_wal").unwrap_or_default()
        ),
        json!({"failed_count": i64_of(r, "failed_count"), "last_failed_time": failed, "last_archived_time": ok}),
    ))
}

// ---- open findings between runs ----

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenFinding {
    pub severity: Severity,
    pub resource: String,
    pub summary: String,
    pub since: DateTime<Utc>,
}

#[derive(Debug, Default, PartialEq)]
pub struct Transitions<'a> {
    /// New, or its severity changed: publish.
    pub publish: Vec<&'a Finding>,
    /// Still firing at the same severity: stay quiet.
    pub unchanged: Vec<&'a Finding>,
    /// Open before, gone now, and its signal was fully checked this run: publish "resolved".
    pub resolved: Vec<(String, OpenFinding)>,
}

/// Which findings to announce and which open ones cleared. A signal whose check could not run
/// (`unchecked`) resolves nothing: not seeing a problem is not the same as it being gone.
pub fn transitions<'a>(
    open: &[(String, OpenFinding)],
    current: &'a [Finding],
    unchecked: &[&str],
) -> Transitions<'a> {
    let mut t = Transitions::default();
    for f in current {
        match open.iter().find(|(k, _)| *k == f.dedup_key()) {
            Some((_, o)) if o.severity == f.severity => t.unchanged.push(f),
            _ => t.publish.push(f),
        }
    }
    for (key, o) in open {
        let still = current.iter().any(|f| &f.dedup_key() == key);
        if !still && !unchecked.contains(&signal_of(key)) {
            t.resolved.push((key.clone(), o.clone()));
        }
    }
    t
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};
    use nbaops_shared::config::{layer, Env};

    fn cfg(pairs: &[(&str, &str)]) -> PgConfig {
        let vars = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        nbaops_shared::config::pg::from_settings(
            &layer(Env::Dev, &vars, &Default::default()).unwrap(),
        )
        .unwrap()
    }
    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
    }
    fn row(v: Value) -> Row {
        v.as_object().unwrap().clone()
    }
    fn counters(at: DateTime<Utc>, hit: i64, read: i64, dl: i64) -> Counters {
        Counters {
            at,
            stats_reset: None,
            postmaster_start: Some("2026-11-01T00:00:00+00:00".into()),
            blks_hit: hit,
            blks_read: read,
            deadlocks: dl,
            in_recovery: Some(false),
            timeline: Some(1),
        }
    }

    #[test]
    fn connections_against_usable_slots() {
        let c = cfg(&[]);
        let conn = |used| Connections {
            max_connections: 100,
            reserved: 3,
            used,
            idle: 0,
            active: 0,
            idle_in_tx: 0,
        };
        assert!(connections("app", &conn(72), &c).is_none());
        // 73/97 = 75.3 %: warning, one below the SPEC's P2.
        let f = connections("app", &conn(73), &c).unwrap();
        assert_eq!((f.level, f.severity), (Level::Warning, Severity::P3));
        let f = connections("app", &conn(88), &c).unwrap();
        assert_eq!((f.level, f.severity), (Level::Critical, Severity::P2));
        assert_eq!(f.dedup_key(), "pg-connections#pg:app");
    }

    #[test]
    fn refusals_are_findings() {
        let f = refused(
            "app",
            "FATAL: sorry, too many clients already (SQLSTATE 53300)",
        );
        assert_eq!((f.signal, f.severity), ("connections", Severity::P2));
        let f = refused("app", "FATAL: remaining connection slots are reserved for non-replication superuser, rds_reserved, and rds_superuser connections");
        assert_eq!(f.signal, "connections");
        let f = refused(
            "app",
            "error connecting to server: Connection refused (os error 111)",
        );
        assert_eq!((f.signal, f.severity), ("unreachable", Severity::P1));
    }

    #[test]
    fn deltas_survive_resets() {
        let t0 = now();
        let t1 = t0 + Duration::minutes(5);
        let a = counters(t0, 1_000_000, 10_000, 5);
        assert_eq!(delta(None, &a), Delta::First);
        let b = counters(t1, 1_100_000, 11_000, 7);
        assert_eq!(
            delta(Some(&a), &b),
            Delta::Since {
                seconds: 300.0,
                blks_hit: 100_000,
                blks_read: 1_000,
                deadlocks: 2
            }
        );
        // Crash/failover: counters restart from zero with the same stats_reset.
        let crashed = counters(t1, 500, 20, 0);
        assert!(matches!(delta(Some(&a), &crashed), Delta::Reset(r) if r.contains("went down")));
        let mut reset = b.clone();
        reset.stats_reset = Some("2026-11-25T12:03:00+00:00".into());
        assert!(
            matches!(delta(Some(&a), &reset), Delta::Reset(r) if r.contains("statistics reset"))
        );
        let mut restarted = b.clone();
        restarted.postmaster_start = Some("2026-11-25T12:02:00+00:00".into());
        assert!(matches!(delta(Some(&a), &restarted), Delta::Reset(r) if r.contains("restarted")));
        // A failover: another server on a new timeline (its postmaster started elsewhere too).
        let mut promoted = restarted.clone();
        promoted.timeline = Some(2);
        assert!(
            matches!(delta(Some(&a), &promoted), Delta::Reset(r) if r.contains("timeline 1 -> 2"))
        );
        let mut standby = b.clone();
        standby.in_recovery = Some(true);
        standby.timeline = None;
        assert!(
            matches!(delta(Some(&standby), &promoted), Delta::Reset(r) if r.starts_with("promoted"))
        );
        assert!(
            matches!(delta(Some(&a), &standby), Delta::Reset(r) if r.contains("a standby now"))
        );
        // A baseline written before who-answered was recorded: no false failover.
        let mut old: serde_json::Value = serde_json::to_value(&a).unwrap();
        old.as_object_mut().unwrap().remove("timeline");
        old.as_object_mut().unwrap().remove("in_recovery");
        let old: Counters = serde_json::from_value(old).unwrap();
        assert!(matches!(delta(Some(&old), &b), Delta::Since { .. }));
        // A reset yields no ratio and no rate, never a negative one.
        let c = cfg(&[]);
        assert_eq!(
            cache_hit("app", &delta(Some(&a), &crashed), &c),
            (None, None)
        );
        assert_eq!(
            deadlocks("app", &delta(Some(&a), &crashed), &c),
            (None, None)
        );
    }

    #[test]
    fn cache_hit_from_deltas_with_a_volume_floor() {
        let c = cfg(&[]);
        let d = |hit, read| Delta::Since {
            seconds: 300.0,
            blks_hit: hit,
            blks_read: read,
            deadlocks: 0,
        };
        // 50 % but only 200 blocks: not judged.
        assert_eq!(cache_hit("app", &d(100, 100), &c), (None, None));
        let (r, f) = cache_hit("app", &d(99_000, 1_000), &c);
        assert!((r.unwrap() - 99.0).abs() < 1e-9 && f.is_none());
        let (_, f) = cache_hit("app", &d(93_000, 7_000), &c);
        assert_eq!(f.unwrap().severity, Severity::P4);
        let (_, f) = cache_hit("app", &d(85_000, 15_000), &c);
        assert_eq!(f.unwrap().severity, Severity::P3);
    }

    #[test]
    fn deadlocks_per_hour_never_extrapolate_short_intervals() {
        let c = cfg(&[]);
        let d = |s, n| Delta::Since {
            seconds: s,
            blks_hit: 0,
            blks_read: 0,
            deadlocks: n,
        };
        assert!(
            deadlocks("app", &d(300.0, 1), &c).1.is_none(),
            "1 is not > 1"
        );
        assert_eq!(
            deadlocks("app", &d(300.0, 2), &c).1.unwrap().level,
            Level::Warning
        );
        assert_eq!(
            deadlocks("app", &d(300.0, 11), &c).1.unwrap().level,
            Level::Critical
        );
        // 4 over two hours: 2 per hour.
        let (rate, _) = deadlocks("app", &d(7200.0, 4), &c);
        assert_eq!(rate, Some(2.0));
    }

    #[test]
    fn wraparound_levels_and_failsafe_emergency() {
        let c = cfg(&[]);
        let r = |xid: i64, mxid: i64| {
            row(json!({"xid_age": xid, "mxid_age": mxid, "failsafe_age": 1_600_000_000i64}))
        };
        assert!(wraparound("app", &r(200_000_000, 10), &c).1.is_none());
        assert_eq!(
            wraparound("app", &r(600_000_000, 10), &c)
                .1
                .unwrap()
                .severity,
            Severity::P2
        );
        assert_eq!(
            wraparound("app", &r(10, 1_100_000_000), &c)
                .1
                .unwrap()
                .level,
            Level::Critical
        );
        let f = wraparound("app", &r(1_700_000_000, 10), &c).1.unwrap();
        assert_eq!((f.level, f.severity), (Level::Emergency, Severity::P1));
    }

    #[test]
    fn replication_lag_is_zero_when_caught_up() {
        let c = cfg(&[]);
        // Idle primary: the last replayed transaction is 10 min old, but nothing is pending.
        let idle = row(json!({"caught_up": true, "since_last_replay": 600.0, "streaming": true}));
        assert_eq!(replication_standby("replica", &idle, &c), (0.0, None));
        let behind =
            row(json!({"caught_up": false, "since_last_replay": 400.0, "streaming": true}));
        assert_eq!(
            replication_standby("replica", &behind, &c).1.unwrap().level,
            Level::Critical
        );
        let broken = row(json!({"caught_up": true, "since_last_replay": 5.0, "streaming": false}));
        assert_eq!(
            replication_standby("replica", &broken, &c).1.unwrap().level,
            Level::Warning
        );
        let rows = vec![
            row(json!({"standby": "a", "caught_up": true, "replay_lag_seconds": 700.0})),
            row(json!({"standby": "b", "caught_up": false, "replay_lag_seconds": 45.0})),
        ];
        let (max, fs) = replication_primary("app", &rows, &c);
        assert_eq!(max, 45.0);
        assert_eq!(fs.len(), 1);
        assert_eq!(fs[0].resource, "pg:app/standby:b");
    }

    fn session(pid: i64, backend: &str, state: &str, xact: f64, ours: bool) -> Session {
        Session {
            pid,
            role: "app".into(),
            application: "web".into(),
            backend_type: backend.into(),
            state: state.into(),
            xact_start: Some("2026-11-25T11:00:00+00:00".into()),
            xact_seconds: xact,
            state_seconds: xact,
            query: "select 1".into(),
            ours,
            lock_wait_seconds: None,
        }
    }

    #[test]
    fn long_transactions_exclude_autovacuum_walsenders_and_us() {
        let c = cfg(&[]);
        let all = vec![
            session(1, "autovacuum worker", "active", 5000.0, false),
            session(2, "walsender", "active", 5000.0, false),
            session(3, "client backend", "active", 5000.0, true),
            session(4, "client backend", "active", 400.0, false),
            session(5, "client backend", "idle in transaction", 1000.0, false),
            session(6, "client backend", "idle in transaction", 200.0, false),
        ];
        let (longest, fs) = sessions("app", &all, &c);
        assert_eq!(longest, 1000.0);
        let got: Vec<(String, Level)> = fs.iter().map(|f| (f.resource.clone(), f.level)).collect();
        assert_eq!(
            got,
            vec![
                ("pg:app/pid:4".into(), Level::Warning),
                ("pg:app/pid:5".into(), Level::Critical),
            ]
        );
    }

    #[test]
    fn bloat_uses_measurement_then_reliable_estimate_and_notes_the_rest() {
        let c = cfg(&[]);
        let mut gutted = nbaops_shared::sql::TableStats::from_row(&row(json!({
            "oid": 1, "schema": "public", "table_name": "gutted", "reltuples": 11600.0, "relpages": 1000,
            "bytes": 8_192_000, "block_size": 8192, "ncols": 2, "nstats": 2, "data_width": 105.0,
            "n_live_tup": 11600, "n_dead_tup": 46400, "last_analyze": "2026-11-25T11:00:00+00:00"
        })));
        let (fs, notes) = bloat(
            "app",
            std::slice::from_ref(&gutted),
            &BTreeMap::new(),
            &c,
            now(),
        );
        assert_eq!(fs[0].level, Level::Critical);
        assert_eq!(fs[0].dedup_key(), "pg-bloat#pg:app/public.gutted");
        assert!(notes.is_empty());
        // Measured at 25 %: warning, whatever the estimate says.
        let measured = BTreeMap::from([(
            1,
            Measurement {
                percent: 25.0,
                at: now(),
                bytes: 8_192_000,
                fresh: true,
                handed_off: None,
                previous: None,
            },
        )]);
        let (fs, _) = bloat("app", std::slice::from_ref(&gutted), &measured, &c, now());
        assert_eq!(fs[0].level, Level::Warning);
        // Stale statistics, no measurement: no number, a note.
        gutted.n_mod_since_analyze = 40_000;
        let (fs, notes) = bloat(
            "app",
            std::slice::from_ref(&gutted),
            &BTreeMap::new(),
            &c,
            now(),
        );
        assert!(fs.is_empty());
        assert!(notes[0].contains("stale"), "{notes:?}");
    }

    #[test]
    fn measurements_rotate_through_every_candidate_and_say_what_they_skipped() {
        let mk = |oid: i64, pages: i64| {
            TableStats::from_row(&row(json!({
                "oid": oid, "schema": "public", "table_name": format!("t{oid}"),
                "relpages": pages, "bytes": pages * 8192,
            })))
        };
        // Five candidates, largest first (as worth_measuring returns them), two per run.
        let tables: Vec<TableStats> = (1..=5).map(|i| mk(i, 1000 - i)).collect();
        let cands: Vec<&TableStats> = tables.iter().collect();
        let mut memory = BTreeMap::new();
        let mut measured_per_run = vec![];
        for run in 0..4 {
            let at = now() + Duration::minutes(5 * run);
            let plan = plan_measurements(&cands, &memory, 2, at);
            assert!(plan.measure.len() <= 2);
            assert_eq!(
                plan.measure.len() + plan.reuse.len() + plan.unconfirmed.len(),
                5,
                "every candidate is measured, reused or reported"
            );
            let fresh: BTreeMap<i64, Measurement> = plan
                .measure
                .iter()
                .map(|t| {
                    let m = Measurement {
                        percent: 50.0,
                        at,
                        bytes: t.bytes,
                        fresh: true,
                        handed_off: None,
                        previous: None,
                    };
                    (t.oid, m)
                })
                .collect();
            measured_per_run.push(plan.measure.iter().map(|t| t.oid).collect::<Vec<_>>());
            if run == 0 {
                assert_eq!(plan.unconfirmed.len(), 3);
            }
            if run == 2 {
                assert!(plan.unconfirmed.is_empty(), "all measured within 3 runs");
                assert_eq!(plan.reuse.len(), 3);
            }
            memory = measurement_memory(&fresh, &plan.reuse);
        }
        // Unmeasured first, largest first; then the oldest figure.
        assert_eq!(
            measured_per_run,
            vec![vec![1, 2], vec![3, 4], vec![5, 1], vec![2, 3]]
        );
        // A resized table loses its figure and goes first; a figure older than a day is void.
        let mut grown = tables.clone();
        grown[4].bytes += 8192;
        let c2: Vec<&TableStats> = grown.iter().collect();
        let plan = plan_measurements(&c2, &memory, 1, now() + Duration::minutes(20));
        assert_eq!(plan.measure[0].oid, 5);
        let late = now() + Duration::hours(MEASUREMENT_VALID_HOURS + 1);
        let plan = plan_measurements(&cands, &memory, 1, late);
        assert_eq!((plan.reuse.len(), plan.unconfirmed.len()), (0, 4));
    }

    #[test]
    fn an_unchanged_figure_is_handed_off_once_per_refresh() {
        let m = |pct: f64, prev: Option<f64>, handed: Option<i64>| Measurement {
            percent: pct,
            at: now(),
            bytes: 1,
            fresh: true,
            handed_off: handed.map(|h| now() - Duration::hours(h)),
            previous: prev,
        };
        assert!(needs_hand_off(&m(60.0, None, None), 20.0, now()));
        assert!(!needs_hand_off(&m(60.0, Some(60.4), Some(1)), 20.0, now()));
        assert!(needs_hand_off(&m(60.0, Some(58.0), Some(1)), 20.0, now()));
        assert!(needs_hand_off(
            &m(60.0, Some(60.0), Some(HAND_OFF_REFRESH_HOURS)),
            20.0,
            now()
        ));
        assert!(!needs_hand_off(&m(15.0, None, None), 20.0, now()));
        let mut reused = m(60.0, None, None);
        reused.fresh = false;
        assert!(!needs_hand_off(&reused, 20.0, now()));
    }

    /// DynamoDB: "The maximum item size in DynamoDB is 400 KB, which includes both attribute
    /// name binary length (UTF-8 length) and attribute value lengths (again binary length)";
    /// 1 KB = 1,024 bytes. https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Constraints.html#limits-items
    /// The ledger stores an item as pk, sk (S), data (S: the JSON) and expires_at (N).
    #[test]
    fn the_remembered_figures_fit_one_dynamodb_item() {
        const DYNAMODB_MAX_ITEM_BYTES: usize = 400 * 1024;
        let at = chrono::DateTime::parse_from_rfc3339("2026-12-31T23:59:59.999999999+00:00")
            .unwrap()
            .with_timezone(&Utc);
        // Twice the bound, worst-case values: the largest oids, numbers with the most digits.
        let fresh: BTreeMap<i64, Measurement> = (0..2 * MEASUREMENTS_KEPT as i64)
            .map(|i| {
                let m = Measurement {
                    percent: -1.234_567_890_123_456_7e-300,
                    at: at - Duration::nanoseconds(i + 1),
                    bytes: i64::MAX,
                    fresh: true,
                    handed_off: Some(at),
                    previous: None,
                };
                (u32::MAX as i64 - i, m)
            })
            .collect();
        let kept = measurement_memory(&fresh, &BTreeMap::new());
        assert_eq!(kept.len(), MEASUREMENTS_KEPT);
        let data = serde_json::to_value(&kept).unwrap().to_string();
        let pk = format!("pgbase#{}", "d".repeat(255));
        let item = "pk".len()
            + pk.len()
            + "sk".len()
            + "measured".len()
            + "data".len()
            + data.len()
            + "expires_at".len()
            + 21;
        assert!(
            item < DYNAMODB_MAX_ITEM_BYTES,
            "{item} bytes >= {DYNAMODB_MAX_ITEM_BYTES}"
        );
    }

    #[test]
    fn open_findings_resolve_only_when_their_signal_was_checked() {
        let c = cfg(&[]);
        let f = refused("app", "Connection refused");
        let open = vec![
            (
                f.dedup_key(),
                OpenFinding {
                    severity: Severity::P1,
                    resource: "pg:app".into(),
                    summary: "x".into(),
                    since: now(),
                },
            ),
            (
                "pg-bloat#pg:app/public.t".to_string(),
                OpenFinding {
                    severity: Severity::P3,
                    resource: "pg:app/public.t".into(),
                    summary: "y".into(),
                    since: now(),
                },
            ),
        ];
        // Still down: the unreachable finding is unchanged, bloat cannot resolve (not checked).
        let current = vec![f.clone()];
        let t = transitions(&open, &current, &["bloat"]);
        assert!(t.publish.is_empty() && t.resolved.is_empty());
        assert_eq!(t.unchanged.len(), 1);
        // Back up and checked: both resolve.
        let t = transitions(&open, &[], &[]);
        assert_eq!(t.resolved.len(), 2);
        // Severity changed: published again under the same key.
        let worse = connections(
            "app",
            &Connections {
                max_connections: 100,
                reserved: 0,
                used: 95,
                idle: 0,
                active: 0,
                idle_in_tx: 0,
            },
            &c,
        )
        .unwrap();
        let open = vec![(
            worse.dedup_key(),
            OpenFinding {
                severity: Severity::P3,
                resource: "pg:app".into(),
                summary: "z".into(),
                since: now(),
            },
        )];
        let current = [worse];
        assert_eq!(transitions(&open, &current, &[]).publish.len(), 1);
    }

    fn stats(oid: i64, dead: i64, live: i64, last_vacuum: Option<DateTime<Utc>>) -> TableStats {
        let mut t = TableStats::from_row(&row(json!({
            "oid": oid, "schema": "public", "table_name": format!("t{oid}"), "reltuples": live as f64,
            "relpages": 1000, "bytes": 8_192_000, "n_live_tup": live, "n_dead_tup": dead,
        })));
        t.last_vacuum = last_vacuum;
        t
    }

    #[test]
    fn stalled_vacuum_needs_growth_no_vacuum_and_an_old_last_vacuum() {
        let c = cfg(&[]);
        let old = Some(now() - Duration::days(3));
        let prev = table_snapshot(
            &[
                stats(1, 5_000, 10_000, old),
                stats(2, 5_000, 10_000, old),
                stats(3, 5_000, 10_000, Some(now() - Duration::hours(2))),
                stats(4, 5_000, 10_000, old),
                stats(5, 10, 10_000, old),
            ],
            &c,
        );
        // Table 5 was too clean to be remembered.
        assert_eq!(prev.len(), 4);
        let cur = vec![
            // grew, not vacuumed since, last vacuum 3 days ago: stalled
            stats(1, 8_000, 10_000, old),
            // vacuumed in between (last_vacuum moved) even if dead grew again
            stats(2, 8_000, 10_000, Some(now() - Duration::minutes(1))),
            // last vacuum recent: autovacuum keeps up
            stats(3, 8_000, 10_000, Some(now() - Duration::hours(2))),
            // counters reset by a crash: dead went down, last_vacuum forgotten
            stats(4, 100, 10_000, None),
            stats(5, 50_000, 10_000, old),
        ];
        let fs = stalled_vacuums("app", &prev, &cur, &c, now());
        let got: Vec<&str> = fs.iter().map(|f| f.resource.as_str()).collect();
        assert_eq!(got, vec!["pg:app/public.t1"]);
        assert_eq!(fs[0].signal, "vacuum-failure");
        assert!(fs[0].summary.contains("5000 -> 8000"), "{}", fs[0].summary);
    }

    #[test]
    fn vacuum_progress_notes_and_warns_when_long() {
        let c = cfg(&[("NBAOPS_PG__VACUUM_PROGRESS__WARN_SECONDS", "600")]);
        let rows = vec![
            row(
                json!({"pid": 7, "table_name": "public.a", "phase": "scanning heap", "heap_blks_total": 1000, "heap_blks_scanned": 250, "running_seconds": 30.0, "backend_type": "autovacuum worker"}),
            ),
            row(
                json!({"pid": 8, "table_name": "public.b", "phase": "vacuuming indexes", "heap_blks_total": 10, "heap_blks_scanned": 10, "running_seconds": 900.0, "backend_type": "client backend"}),
            ),
        ];
        let (fs, notes) = vacuum_progress("app", &rows, &c);
        assert_eq!(notes.len(), 2);
        assert!(notes[0].contains("25 %"), "{notes:?}");
        assert_eq!(fs.len(), 1);
        assert_eq!(fs[0].resource, "pg:app/public.b");
        assert_eq!(fs[0].severity, Severity::P4);
    }

    #[test]
    fn slow_queries_over_threshold_and_min_calls() {
        let c = cfg(&[("NBAOPS_PG__SLOW_QUERY__MEAN_MS", "100")]);
        let rows = vec![
            row(
                json!({"queryid": "11", "calls": 10, "mean_ms": 250.0, "query": "select pg_sleep($1)"}),
            ),
            row(json!({"queryid": "12", "calls": 2, "mean_ms": 900.0, "query": "select 2"})),
            row(json!({"queryid": "13", "calls": 50, "mean_ms": 99.0, "query": "select 3"})),
        ];
        let fs = slow_queries("app", &rows, &c);
        assert_eq!(fs.len(), 1);
        assert_eq!(fs[0].dedup_key(), "pg-slow-query#pg:app/query:11");
    }

    #[test]
    fn a_timed_out_check_is_a_finding_not_an_outage() {
        let f = refused(
            "app",
            "ERROR: canceling statement due to statement timeout (SQLSTATE 57014)",
        );
        assert_eq!((f.signal, f.severity), ("check-failed", Severity::P3));
        let f = check_failed(
            "app",
            &[(
                vec!["bloat"],
                "canceling statement due to statement timeout".into(),
            )],
        )
        .unwrap();
        assert!(
            f.summary.contains("pg.statement_timeout_ms"),
            "{}",
            f.summary
        );
        assert!(check_failed("app", &[]).is_none());
    }

    #[test]
    fn holders_and_own_failures() {
        let c = cfg(&[]);
        let rows = vec![
            row(
                json!({"kind": "prepared transaction", "name": "tx1", "age_seconds": 1000.0, "xid_age": 50}),
            ),
            row(
                json!({"kind": "prepared transaction", "name": "tx2", "age_seconds": 10.0, "xid_age": 5}),
            ),
            row(
                json!({"kind": "replication slot", "name": "old_slot", "age_seconds": null, "xid_age": 600_000_000i64}),
            ),
        ];
        let fs = xmin_holders("app", &rows, &c);
        assert_eq!(fs.len(), 2);
        assert_eq!(fs[1].resource, "pg:app/replication-slot:old_slot");
        assert_eq!(fs[1].level, Level::Critical);
        let failures = vec![
            ("public.t".to_string(), "skipped".to_string()),
            ("public.t".to_string(), "lock timeout".to_string()),
            ("public.t".to_string(), "lock timeout".to_string()),
            ("public.u".to_string(), "permission".to_string()),
        ];
        let fs = own_vacuum_failures("app", &failures, &c);
        assert_eq!(
            (fs[0].level, fs[1].level),
            (Level::Critical, Level::Warning)
        );
    }
}

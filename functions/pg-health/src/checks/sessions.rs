//! Sessions and VACUUM: long and idle-in-transaction sessions, lock waits, what holds the xmin
//! horizon, vacuum-trigger's own failures, vacuums that stall or run long.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use nbaops_shared::alerts::Severity;
use nbaops_shared::config::pg::PgConfig;
use nbaops_shared::sql::{self, f64_of, i64_of, str_of, Row, Session, TableStats};
use nbaops_shared::Result;

use super::{db_resource, finding, level_above, Check, Finding, Judged, Level, Seen};

pub const SESSIONS: Check = Check {
    signals: &["long-tx", "idle-in-tx", "lock-wait"],
    primary_only: false,
    needs: None,
    sql: |server, _| sql::transactions(server.version),
    judge: |s: &Seen<'_>, rows: &[Row]| -> Result<Judged> {
        let all: Vec<Session> = rows.iter().map(Session::from_row).collect();
        let (longest, fs) = sessions(s.db, &all, s.cfg);
        Ok(Judged::findings(fs).metric("LongestTransactionSeconds", longest, "Seconds"))
    },
};

pub const VACUUM_PROGRESS: Check = Check {
    signals: &["vacuum-progress"],
    primary_only: false,
    needs: None,
    sql: |_, _| sql::VACUUM_PROGRESS.into(),
    judge: |s: &Seen<'_>, rows: &[Row]| -> Result<Judged> {
        let (findings, notes) = vacuum_progress(s.db, rows, s.cfg);
        Ok(Judged {
            findings,
            metrics: vec![("VacuumsRunning", rows.len() as f64, "Count")],
            notes,
        })
    },
};

pub const XMIN_HOLDERS: Check = Check {
    signals: &["vacuum-failure"],
    primary_only: false,
    needs: None,
    sql: |_, _| sql::XMIN_HOLDERS.into(),
    judge: |s: &Seen<'_>, rows: &[Row]| -> Result<Judged> {
        Ok(Judged::findings(xmin_holders(s.db, rows, s.cfg)))
    },
};

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

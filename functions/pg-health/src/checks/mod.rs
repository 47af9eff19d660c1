//! The SPEC 3.2.2 checks as pure functions: observed rows + previous counters + config -> findings.
//! Warning findings are one severity below the SPEC's (critical) severity; wraparound past
//! `vacuum_failsafe_age` is an emergency (P1).
//!
//! The scan is the table [`SCAN`]: each [`Check`] names its signals, its SQL and its judgement of
//! the rows (findings, metrics, notes); the steps that keep state between runs in the ledger
//! (counters, tables, vacuum-trigger's failures) are named in it and run by `scan`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use nbaops_shared::alerts::Severity;
use nbaops_shared::config::pg::{Levels, PgConfig};
use nbaops_shared::sql::{Row, Server};
use nbaops_shared::{NbaopsError, Result};

mod bloat;
mod counters;
mod delay;
mod server;
mod sessions;
mod usage;
pub use bloat::*;
pub use counters::*;
pub use delay::*;
pub use server::*;
pub use sessions::*;
pub use usage::*;

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

// ---- the scan, as a table ----

/// What a check makes of the server's answer.
#[derive(Debug, Default)]
pub struct Judged {
    pub findings: Vec<Finding>,
    /// EMF metrics (name, value, unit).
    pub metrics: Vec<(&'static str, f64, &'static str)>,
    pub notes: Vec<String>,
}

impl Judged {
    fn findings(findings: impl IntoIterator<Item = Finding>) -> Judged {
        Judged {
            findings: findings.into_iter().collect(),
            ..Default::default()
        }
    }

    fn metric(mut self, name: &'static str, value: f64, unit: &'static str) -> Judged {
        self.metrics.push((name, value, unit));
        self
    }
}

/// What a check judges with besides the rows: the database, the server, the config, and the
/// database's clock (its timestamps are compared with its own now).
pub struct Seen<'a> {
    pub db: &'a str,
    pub server: &'a Server,
    pub cfg: &'a PgConfig,
    pub now: DateTime<Utc>,
}

/// One check of the scan: one SQL round trip (two with `needs`), judged into findings.
pub struct Check {
    /// The signals it judges: not checked (nothing resolves) when it cannot run.
    pub signals: &'static [&'static str],
    /// Not run on a standby (its tables are the primary's, judged there): its signals are then
    /// not checked.
    pub primary_only: bool,
    /// An optional extension it needs: the query answering `present`, and the note when it is
    /// not installed (not an error: its signals are just not checked).
    pub needs: Option<(&'static str, &'static str)>,
    pub sql: fn(&Server, &PgConfig) -> String,
    /// The rows judged; an error (a row that should be there is not) makes the check failed.
    pub judge: fn(&Seen<'_>, &[Row]) -> Result<Judged>,
}

/// A step of the scan, in order.
pub enum Step {
    Check(Check),
    /// Buffer cache hit ratio and deadlocks, from counter deltas against the ledger's baseline.
    Counters,
    /// Bloat (measured, estimated, handed off to vacuum-trigger) and stalled vacuums, against the
    /// ledger's table snapshot.
    Tables,
    /// vacuum-trigger's own failed statements of the last day (ledger), and the stalled vacuums.
    OwnVacuumFailures,
    /// Btree index bloat: pgstatindex (bounded per run) else the pg_stats estimate.
    IndexBloat,
    /// WAL generated per second since the last run (ledger `pgbase#<db>` / `wal`).
    WalRate,
    /// Running vacuums sleeping in their cost-based delay, over runs (ledger `pgbase#<db>` /
    /// `vacdelay`).
    VacuumDelay,
}

/// What pg-health checks, in this order (after the server itself: `sql::SERVER`).
pub const SCAN: &[Step] = &[
    Step::Check(CONNECTIONS),
    Step::Counters,
    Step::Check(WRAPAROUND),
    Step::Check(REPLICATION),
    Step::Check(SESSIONS),
    Step::Tables,
    Step::IndexBloat,
    Step::Check(UNUSED_INDEXES),
    Step::Check(SLOW_QUERIES),
    Step::Check(VACUUM_PROGRESS),
    Step::VacuumDelay,
    Step::Check(XMIN_HOLDERS),
    Step::OwnVacuumFailures,
    Step::Check(ARCHIVER),
    Step::WalRate,
];

/// The one row a check expects.
fn one(rows: &[Row]) -> Result<&Row> {
    rows.first()
        .ok_or_else(|| NbaopsError::dependency("postgres", "query returned no row"))
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
mod tests;

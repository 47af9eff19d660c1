//! Vacuum delay (issue #22): how much of its time a running VACUUM spends sleeping in its
//! cost-based delay (`vacuum_cost_delay` / `autovacuum_vacuum_cost_delay`).
//!
//! What is measured, exactly: PostgreSQL 15's `pg_stat_progress_vacuum` has no delay column.
//! Each run samples the running vacuums of the database `pg.vacuum_delay.samples_per_run` times,
//! `pg.vacuum_delay.sample_interval_ms` apart (only while one runs): `pg_stat_progress_vacuum`
//! joined to `pg_stat_activity`, a sample is "sleeping" when the backend's `wait_event` is
//! `VacuumDelay`. The samples add up per table over consecutive runs in the ledger
//! (`pgbase#<db>` / `vacdelay`) while it is the same vacuum (same pid, same `query_start`). From
//! PostgreSQL 18 with `track_cost_delay_timing = on` the column `delay_time` (milliseconds slept
//! by this vacuum) against the time since `query_start` is used instead of the samples. A vacuum
//! seen over at least `pg.vacuum_delay.min_runs` runs sleeping more than
//! `pg.vacuum_delay.sleep_percent` of it is a warning (P4): it is throttled, not stuck.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use nbaops_shared::alerts::Severity;
use nbaops_shared::config::pg::PgConfig;
use nbaops_shared::sql::{bool_of, f64_of, i64_of, str_of, time_of, PgVersion, Row};

use super::{finding, Finding, Level};

/// `delay_time` of `pg_stat_progress_vacuum` exists from this major version.
pub const DELAY_TIME_SINCE: i64 = 18;

/// The running vacuums of this database, one sample.
pub fn vacuum_delay_sql(v: PgVersion) -> String {
    let delay = if v.major() >= DELAY_TIME_SINCE {
        "CASE WHEN current_setting('track_cost_delay_timing', true) = 'on' THEN p.delay_time::float8 END"
    } else {
        "NULL::float8"
    };
    format!(
        "SELECT p.pid::int8 AS pid, p.relid::int8 AS relid, \
           coalesce(n.nspname || '.' || c.relname, p.relid::text) AS table_name, \
           a.query_start AS started, (a.backend_type = 'autovacuum worker') AS autovacuum, \
           coalesce(a.wait_event = 'VacuumDelay', false) AS sleeping, p.phase::text AS phase, \
           {delay} AS delay_ms, \
           (extract(epoch FROM clock_timestamp() - a.query_start) * 1000)::float8 AS elapsed_ms \
         FROM pg_stat_progress_vacuum p JOIN pg_stat_activity a ON a.pid = p.pid \
           LEFT JOIN pg_class c ON c.oid = p.relid LEFT JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE p.datname = current_database()"
    )
}

/// One running vacuum in one sample.
#[derive(Debug, Clone, PartialEq)]
pub struct VacuumSample {
    pub pid: i64,
    pub relid: i64,
    pub table: String,
    pub started: Option<DateTime<Utc>>,
    pub autovacuum: bool,
    pub sleeping: bool,
    /// PG 18+ with track_cost_delay_timing: milliseconds slept so far.
    pub delay_ms: Option<f64>,
    pub elapsed_ms: Option<f64>,
}

impl VacuumSample {
    pub fn from_row(r: &Row) -> VacuumSample {
        VacuumSample {
            pid: i64_of(r, "pid").unwrap_or(0),
            relid: i64_of(r, "relid").unwrap_or(0),
            table: str_of(r, "table_name").unwrap_or_default(),
            started: time_of(r, "started"),
            autovacuum: bool_of(r, "autovacuum"),
            sleeping: bool_of(r, "sleeping"),
            delay_ms: f64_of(r, "delay_ms"),
            elapsed_ms: f64_of(r, "elapsed_ms"),
        }
    }
}

/// One vacuum followed across runs (ledger `pgbase#<db>` / `vacdelay`, by table oid).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DelayTrack {
    pub pid: i64,
    pub started: Option<DateTime<Utc>>,
    pub table: String,
    pub autovacuum: bool,
    /// Consecutive runs that saw it.
    pub runs: u32,
    pub samples: u32,
    pub sleeping: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed_ms: Option<f64>,
}

impl DelayTrack {
    /// The percent of its time it slept, and how that was measured.
    pub fn sleep_percent(&self) -> (f64, &'static str) {
        match (self.delay_ms, self.elapsed_ms) {
            (Some(d), Some(e)) if e > 0.0 => ((100.0 * d / e).min(100.0), "delay_time"),
            _ if self.samples > 0 => (
                100.0 * self.sleeping as f64 / self.samples as f64,
                "wait_event samples",
            ),
            _ => (0.0, "no sample"),
        }
    }
}

/// This run's samples (`rounds`, one list per sample) against the earlier runs' tracks: the
/// tracks to keep (the vacuums running now; a new pid or start is a new vacuum) and the findings.
pub fn vacuum_delay(
    db: &str,
    prev: &BTreeMap<String, DelayTrack>,
    rounds: &[Vec<VacuumSample>],
    cfg: &PgConfig,
) -> (BTreeMap<String, DelayTrack>, Vec<Finding>) {
    let mut next: BTreeMap<String, DelayTrack> = BTreeMap::new();
    for round in rounds {
        for v in round {
            let key = v.relid.to_string();
            let t = next.entry(key.clone()).or_insert_with(|| {
                match prev
                    .get(&key)
                    .filter(|p| p.pid == v.pid && p.started == v.started)
                {
                    Some(p) => DelayTrack {
                        runs: p.runs + 1,
                        ..p.clone()
                    },
                    None => DelayTrack {
                        pid: v.pid,
                        started: v.started,
                        table: v.table.clone(),
                        autovacuum: v.autovacuum,
                        runs: 1,
                        samples: 0,
                        sleeping: 0,
                        delay_ms: None,
                        elapsed_ms: None,
                    },
                }
            });
            if t.pid != v.pid {
                // Another vacuum of the same table within this run's samples: keep the first.
                continue;
            }
            t.samples += 1;
            t.sleeping += u32::from(v.sleeping);
            if v.delay_ms.is_some() {
                t.delay_ms = v.delay_ms;
                t.elapsed_ms = v.elapsed_ms;
            }
        }
    }
    let l = &cfg.vacuum_delay;
    let findings = next
        .values()
        .filter(|t| t.runs >= l.min_runs)
        .filter_map(|t| {
            let (pct, how) = t.sleep_percent();
            (pct > l.sleep_percent).then(|| {
                finding(
                    "vacuum-delay",
                    Severity::P3,
                    Level::Warning,
                    format!("pg:{db}/{}", t.table),
                    format!(
                        "{db}: {} of {} (pid {}) sleeps {pct:.0} % of its time in its cost-based delay ({how}: {} of {} samples over {} runs): throttled, not stuck",
                        if t.autovacuum { "autovacuum" } else { "VACUUM" },
                        t.table,
                        t.pid,
                        t.sleeping,
                        t.samples,
                        t.runs
                    ),
                    json!({"sleep_percent": pct, "measured_by": how, "pid": t.pid, "started": t.started, "runs": t.runs,
                           "samples": t.samples, "sleeping_samples": t.sleeping, "delay_ms": t.delay_ms, "elapsed_ms": t.elapsed_ms,
                           "autovacuum": t.autovacuum, "threshold_percent": l.sleep_percent, "min_runs": l.min_runs}),
                )
            })
        })
        .collect();
    (next, findings)
}

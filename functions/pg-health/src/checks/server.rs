//! The server as a whole: connections (and refused ones), checks that could not run, transaction
//! ID wraparound, replication, WAL archiving.

use serde_json::json;

use nbaops_shared::alerts::Severity;
use nbaops_shared::config::pg::PgConfig;
use nbaops_shared::sql::{self, bool_of, f64_of, i64_of, str_of, time_of, Connections, Row};
use nbaops_shared::Result;

use super::{db_resource, finding, level_above, one, Check, Finding, Judged, Level, Seen};

pub const CONNECTIONS: Check = Check {
    signals: &["connections"],
    primary_only: false,
    needs: None,
    sql: |_, _| sql::CONNECTIONS.into(),
    judge: |s: &Seen<'_>, rows: &[Row]| -> Result<Judged> {
        let c = Connections::from_row(one(rows)?);
        Ok(Judged::findings(connections(s.db, &c, s.cfg))
            .metric("ConnectionsPercent", c.percent(), "Percent")
            .metric("IdleConnections", c.idle as f64, "Count")
            .metric("ActiveQueries", c.active as f64, "Count"))
    },
};

pub const WRAPAROUND: Check = Check {
    signals: &["wraparound"],
    primary_only: false,
    needs: None,
    sql: |_, _| sql::WRAPAROUND.into(),
    judge: |s: &Seen<'_>, rows: &[Row]| -> Result<Judged> {
        let (age, f) = wraparound(s.db, one(rows)?, s.cfg);
        Ok(Judged::findings(f).metric("MaxXidAge", age as f64, "Count"))
    },
};

/// A standby judges its own replay; a primary its standbys (no lag metric without one).
pub const REPLICATION: Check = Check {
    signals: &["replication-lag"],
    primary_only: false,
    needs: None,
    sql: |server, _| {
        if server.in_recovery {
            sql::REPLICATION_STANDBY.into()
        } else {
            sql::REPLICATION_PRIMARY.into()
        }
    },
    judge: |s: &Seen<'_>, rows: &[Row]| -> Result<Judged> {
        if s.server.in_recovery {
            let (lag, f) = replication_standby(s.db, one(rows)?, s.cfg);
            return Ok(Judged::findings(f).metric("ReplicationLagSeconds", lag, "Seconds"));
        }
        let (lag, fs) = replication_primary(s.db, rows, s.cfg);
        let judged = Judged::findings(fs);
        Ok(if rows.is_empty() {
            judged
        } else {
            judged.metric("ReplicationLagSeconds", lag, "Seconds")
        })
    },
};

pub const ARCHIVER: Check = Check {
    signals: &["archiver"],
    primary_only: false,
    needs: None,
    sql: |_, _| sql::ARCHIVER.into(),
    judge: |s: &Seen<'_>, rows: &[Row]| -> Result<Judged> {
        Ok(Judged::findings(archiver(s.db, one(rows)?)))
    },
};

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

// ---- WAL generation rate (issue #22) ----

/// The primary's WAL position, in bytes, and its timeline (as [`sql::DATABASE_COUNTERS`] reads
/// it). Only run on a primary: `pg_current_wal_lsn()` fails during recovery.
pub const WAL_POSITION: &str = "SELECT pg_current_wal_lsn()::text AS lsn, \
    pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::int8 AS bytes, \
    ('x' || lpad(substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8), 16, '0'))::bit(64)::int8 AS timeline";

/// The WAL position a run saw, kept between runs (ledger `pgbase#<db>` / `wal`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WalMark {
    /// `pg_current_wal_lsn()` as PostgreSQL prints it (for people).
    pub lsn: String,
    /// The same position in bytes (`pg_wal_lsn_diff(lsn, '0/0')`).
    pub bytes: i64,
    /// When it was read (the injected clock).
    pub at: chrono::DateTime<chrono::Utc>,
    /// The server's timeline: a new one (failover, restore) is a new history.
    #[serde(default)]
    pub timeline: Option<i64>,
}

/// What two marks say.
#[derive(Debug, Clone, PartialEq)]
pub enum WalRate {
    /// No earlier mark: nothing to compare with yet.
    First,
    /// The position went backwards, the timeline changed or the clock did not advance
    /// (failover, restore, a clock set back): a new baseline, no rate.
    Reset(String),
    BytesPerSecond(f64),
}

pub fn wal_rate(prev: Option<&WalMark>, cur: &WalMark) -> WalRate {
    let Some(p) = prev else {
        return WalRate::First;
    };
    if p.timeline.is_some() && cur.timeline.is_some() && p.timeline != cur.timeline {
        return WalRate::Reset(format!(
            "timeline {} -> {}",
            p.timeline.unwrap_or_default(),
            cur.timeline.unwrap_or_default()
        ));
    }
    if cur.bytes < p.bytes {
        return WalRate::Reset(format!(
            "WAL position went back from {} to {}",
            p.lsn, cur.lsn
        ));
    }
    let seconds = (cur.at - p.at).num_milliseconds() as f64 / 1000.0;
    if seconds <= 0.0 {
        return WalRate::Reset(format!(
            "no time between the two readings ({} -> {})",
            p.at.to_rfc3339(),
            cur.at.to_rfc3339()
        ));
    }
    WalRate::BytesPerSecond((cur.bytes - p.bytes) as f64 / seconds)
}

pub fn judge_wal_rate(
    db: &str,
    rate: f64,
    prev: &WalMark,
    cur: &WalMark,
    cfg: &PgConfig,
) -> Option<Finding> {
    let level = level_above(rate, &cfg.wal_bytes_per_second)?;
    Some(finding(
        "wal-rate",
        Severity::P3,
        level,
        db_resource(db),
        format!(
            "{db}: WAL generated at {:.1} MB/s since {} ({} -> {}; warning above {:.1} MB/s)",
            rate / 1_048_576.0,
            prev.at.to_rfc3339(),
            prev.lsn,
            cur.lsn,
            cfg.wal_bytes_per_second.warn / 1_048_576.0
        ),
        json!({"bytes_per_second": rate, "from_lsn": prev.lsn, "to_lsn": cur.lsn, "bytes": cur.bytes - prev.bytes,
               "seconds": (cur.at - prev.at).num_milliseconds() as f64 / 1000.0,
               "warn_bytes_per_second": cfg.wal_bytes_per_second.warn, "crit_bytes_per_second": cfg.wal_bytes_per_second.crit}),
    ))
}

//! Cumulative counters between runs: the buffer cache hit ratio and deadlocks per hour from
//! deltas, with counter resets (statistics reset, restart, failover) detected.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use nbaops_shared::alerts::Severity;
use nbaops_shared::config::pg::PgConfig;
use nbaops_shared::sql::{bool_of, i64_of, str_of, time_of, Row};

use super::{db_resource, finding, level_above, Finding, Level};

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

//! Table bloat: measured with pgstattuple_approx (bounded per run, rotating), else estimated from
//! statistics when the estimate is reliable; the figures kept between runs and handed off to
//! vacuum-trigger.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use nbaops_shared::alerts::Severity;
use nbaops_shared::config::pg::PgConfig;
use nbaops_shared::sql::indexes::IndexStats;
use nbaops_shared::sql::{bloat_estimate, index_bloat_estimate, BloatEstimate, TableStats};

use super::{finding, level_above, Finding};

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

// ---- index bloat (issue #22) ----

/// The indexes whose bloat is judged: valid btree indexes of at least `pg.index.min_bytes`, not
/// being built. Others are never judged (the estimate and pgstatindex are btree-only; a tiny
/// index's figure is noise).
pub fn index_bloat_judged(ix: &IndexStats, cfg: &PgConfig) -> bool {
    ix.access_method == "btree" && ix.valid && !ix.being_built && ix.bytes >= cfg.index.min_bytes
}

/// The indexes worth measuring with pgstatindex, largest first, at most `at_most`: judged ones
/// whose estimate is over the warning level or cannot be made (the monitor role sees `pg_stats`
/// only for tables it may read, usually none, so the estimate is mostly "unreliable" on RDS).
pub fn index_bloat_candidates<'a>(
    indexes: &'a [IndexStats],
    cfg: &PgConfig,
    at_most: usize,
) -> Vec<&'a IndexStats> {
    let mut out: Vec<&IndexStats> = indexes
        .iter()
        .filter(|ix| index_bloat_judged(ix, cfg))
        .filter(|ix| match index_bloat_estimate(ix, cfg) {
            BloatEstimate::Percent { percent, .. } => percent > cfg.index_bloat_percent.warn,
            BloatEstimate::Unreliable { .. } => true,
        })
        .collect();
    out.sort_by_key(|ix| std::cmp::Reverse(ix.bytes));
    out.truncate(at_most);
    out
}

/// Index bloat findings, one per index (`pg-index-bloat#pg:<db>/index:<schema>.<index>`): the
/// pgstatindex figure when measured this run, else the `pg_stats` estimate when it can be made.
/// Returns the findings and the dedup keys of judged indexes with neither (not confirmed, not
/// cleared: an open finding stays open).
pub fn index_bloat(
    db: &str,
    indexes: &[IndexStats],
    measured: &BTreeMap<i64, f64>,
    cfg: &PgConfig,
) -> (Vec<Finding>, Vec<String>) {
    let mut findings = vec![];
    let mut unjudged = vec![];
    for ix in indexes.iter().filter(|ix| index_bloat_judged(ix, cfg)) {
        let resource = format!("pg:{db}/index:{}", ix.name());
        let (pct, source) = match (measured.get(&ix.oid), index_bloat_estimate(ix, cfg)) {
            (Some(p), _) => (*p, "measured (pgstatindex)"),
            (None, BloatEstimate::Percent { percent, .. }) => (percent, "estimated from pg_stats"),
            (None, BloatEstimate::Unreliable { .. }) => {
                unjudged.push(format!("pg-index-bloat#{resource}"));
                continue;
            }
        };
        if let Some(level) = level_above(pct, &cfg.index_bloat_percent) {
            findings.push(finding(
                "index-bloat",
                Severity::P3,
                level,
                resource,
                format!(
                    "{db}: index {} on {} is {pct:.0} % bloat ({source}, {} MB)",
                    ix.name(),
                    ix.table,
                    ix.bytes / 1_048_576
                ),
                json!({"percent": pct, "source": source, "bytes": ix.bytes, "table": ix.table, "fillfactor": ix.fillfactor,
                       "reindex_percent": cfg.index.reindex_percent}),
            ));
        }
    }
    (findings, unjudged)
}

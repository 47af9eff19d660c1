//! Indexes and queries, report only: unused indexes and slow statements (pg_stat_statements).

use chrono::{DateTime, Utc};
use serde_json::json;

use nbaops_shared::alerts::Severity;
use nbaops_shared::config::pg::PgConfig;
use nbaops_shared::sql::{self, f64_of, i64_of, str_of, IndexStats, Row};
use nbaops_shared::Result;

use super::{finding, Check, Finding, Judged, Level, Seen};

/// "Unused" is decided on the primary, where the drop would happen (usage is per instance).
pub const UNUSED_INDEXES: Check = Check {
    signals: &["unused-index"],
    primary_only: true,
    needs: None,
    sql: |_, cfg| sql::indexes::unused_index_candidates(cfg.unused_index_min_bytes),
    judge: |s: &Seen<'_>, rows: &[Row]| -> Result<Judged> {
        let indexes: Vec<IndexStats> = rows.iter().map(IndexStats::from_row).collect();
        let fs = unused_indexes(s.db, &indexes, s.cfg, s.now);
        let n = fs.len() as f64;
        Ok(Judged::findings(fs).metric("UnusedIndexes", n, "Count"))
    },
};

pub const SLOW_QUERIES: Check = Check {
    signals: &["slow-query"],
    primary_only: false,
    needs: Some((
        sql::PG_STAT_STATEMENTS_PRESENT,
        "slow queries not checked: pg_stat_statements is not installed",
    )),
    sql: |_, cfg| sql::slow_queries(cfg.slow_query_mean_ms, cfg.slow_query_min_calls),
    judge: |s: &Seen<'_>, rows: &[Row]| -> Result<Judged> {
        let fs = slow_queries(s.db, rows, s.cfg);
        let n = fs.len() as f64;
        Ok(Judged::findings(fs).metric("SlowQueries", n, "Count"))
    },
};

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

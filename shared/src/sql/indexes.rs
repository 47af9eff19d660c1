//! Per-index statistics and what they say: btree bloat (an estimate from `pg_stats`, confirmed by
//! `pgstatindex` when pgstattuple is installed), leftovers of a failed REINDEX CONCURRENTLY, and
//! unused indexes. Pure: pg-health reports from it, vacuum-trigger acts from it.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::{bool_of, f64_of, i64_of, str_of, time_of, BloatEstimate, PgVersion, Row};
use crate::config::pg::PgConfig;
use crate::guard::{Explanation, Observation};

/// Every index of a user table, with what bloat, rebuild and usage decisions need. A relation
/// someone holds in AccessExclusive is sized from `relpages` (no lock, like [`super::tables`]).
///
/// Whether we may REINDEX / DROP it: as ourselves when we hold the table owner's rights (owner,
/// inheriting member, superuser; PG17+ also the MAINTAIN privilege, which covers REINDEX but not
/// DROP INDEX) — the database owner may VACUUM a table it does not own but not REINDEX it. Below
/// 17 a member of the owner that does not inherit its rights (the maintenance role, see
/// infra/sql/02_maintenance_role.sql) may after SET ROLE: `set_role` names the owner then.
pub fn indexes(v: PgVersion) -> String {
    let maintain = if v.major() >= super::roles::MAINTAIN_PRIVILEGE_SINCE {
        " OR has_table_privilege(ct.oid, 'MAINTAIN')"
    } else {
        ""
    };
    let set_role =
        super::roles::set_role_column(v, "m.direct", "ct.relowner", "pg_get_userbyid(ct.relowner)");
    format!(
        "SELECT i.indexrelid::int8 AS oid, n.nspname::text AS schema, ci.relname::text AS index_name, \
           ct.relname::text AS table_name, i.indrelid::int8 AS table_oid, am.amname::text AS access_method, \
           i.indisvalid AS valid, i.indisunique AS is_unique, i.indisprimary AS is_primary, \
           (i.indisexclusion OR i.indisreplident) AS is_constraint, \
           ci.reltuples::float8 AS reltuples, ci.relpages::int8 AS relpages, \
           CASE WHEN EXISTS (SELECT 1 FROM pg_locks l WHERE l.relation IN (i.indexrelid, i.indrelid) AND l.mode = 'AccessExclusiveLock') \
             THEN ci.relpages * current_setting('block_size')::int8 ELSE pg_relation_size(ci.oid) END AS bytes, \
           current_setting('block_size')::int8 AS block_size, \
           coalesce((SELECT option_value FROM pg_options_to_table(ci.reloptions) WHERE option_name = 'fillfactor'), '90')::int8 AS fillfactor, \
           i.indnkeyatts::int8 AS ncols, \
           (SELECT count(*) FROM unnest(i.indkey::int2[]) k WHERE k = 0)::int8 AS nexpr, \
           (SELECT count(s.avg_width) FROM pg_attribute a JOIN pg_stats s ON s.schemaname = n.nspname AND s.tablename = ct.relname \
              AND s.attname = a.attname AND NOT s.inherited WHERE a.attrelid = i.indrelid AND a.attnum = ANY ((i.indkey::int2[])[0:i.indnkeyatts - 1]))::int8 AS nstats, \
           (SELECT coalesce(sum(s.avg_width), 0) FROM pg_attribute a JOIN pg_stats s ON s.schemaname = n.nspname AND s.tablename = ct.relname \
              AND s.attname = a.attname AND NOT s.inherited WHERE a.attrelid = i.indrelid AND a.attnum = ANY ((i.indkey::int2[])[0:i.indnkeyatts - 1]))::float8 AS key_width, \
           coalesce(st.idx_scan, 0)::int8 AS idx_scan, \
           pg_get_userbyid(ct.relowner)::text AS owner, \
           ({set_role}) AS set_role, (m.direct OR ({set_role}) IS NOT NULL) AS can_maintain, \
           EXISTS (SELECT 1 FROM pg_stat_progress_create_index p WHERE p.relid = i.indrelid) AS being_built, \
           coalesce((SELECT stats_reset FROM pg_stat_database WHERE datname = current_database()), pg_postmaster_start_time()) AS stats_since \
         FROM pg_index i JOIN pg_class ci ON ci.oid = i.indexrelid JOIN pg_class ct ON ct.oid = i.indrelid \
           JOIN pg_namespace n ON n.oid = ci.relnamespace JOIN pg_am am ON am.oid = ci.relam \
           CROSS JOIN LATERAL (SELECT (pg_has_role(ct.relowner, 'USAGE') \
             OR coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = current_user), false){maintain}) AS direct) m \
           LEFT JOIN pg_stat_user_indexes st ON st.indexrelid = i.indexrelid \
         WHERE ct.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
           AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' \
         ORDER BY ci.relpages DESC"
    )
}

/// What pg-health's unused-index check reads: only indexes that can be "unused" — valid, not
/// unique, primary, exclusion or replica identity, never scanned (`pg_stat_get_numscans` = 0)
/// — and large enough to matter (`relpages` reaching half of `min_bytes`, or unknown: 0), each
/// sized with `pg_relation_size` (from `relpages`, without a lock, when someone holds it or its
/// table in AccessExclusive). The same columns as [`indexes`] minus what only maintenance needs:
/// no `pg_stats` inputs (`nstats` 0, so an [`index_bloat_estimate`] of these rows is always
/// unreliable) and no maintenance rights. Set-based: the locks are read once, counters come
/// from the `pg_stat_get_*` functions; on 10,000 tables with a primary key each it reads ~0
/// rows where [`indexes`] reads 10,000 (measured: 10 ms against 850 ms).
pub fn unused_index_candidates(min_bytes: i64) -> String {
    let half = (min_bytes / 2).max(0);
    format!(
        "WITH locked AS ( \
           SELECT DISTINCT l.relation AS oid FROM pg_locks l \
           WHERE l.locktype = 'relation' AND l.mode = 'AccessExclusiveLock' \
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())), \
         cand AS MATERIALIZED ( \
           SELECT i.indexrelid, i.indrelid, i.indnkeyatts, ci.relname AS index_name, ci.reltuples, ci.relpages, \
             ci.relam, ct.relname AS table_name, ct.relowner, n.nspname \
           FROM pg_index i JOIN pg_class ci ON ci.oid = i.indexrelid JOIN pg_class ct ON ct.oid = i.indrelid \
             JOIN pg_namespace n ON n.oid = ci.relnamespace \
           WHERE ct.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
             AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' \
             AND i.indisvalid AND NOT i.indisunique AND NOT i.indisprimary \
             AND NOT i.indisexclusion AND NOT i.indisreplident \
             AND coalesce(pg_stat_get_numscans(i.indexrelid), 0) = 0 \
             AND (ci.relpages = 0 OR ci.relpages::int8 * current_setting('block_size')::int8 >= {half})) \
         SELECT c.indexrelid::int8 AS oid, c.nspname::text AS schema, c.index_name::text AS index_name, \
           c.table_name::text AS table_name, c.indrelid::int8 AS table_oid, am.amname::text AS access_method, \
           true AS valid, false AS is_unique, false AS is_primary, false AS is_constraint, \
           c.reltuples::float8 AS reltuples, c.relpages::int8 AS relpages, \
           CASE WHEN EXISTS (SELECT 1 FROM locked WHERE locked.oid IN (c.indexrelid, c.indrelid)) \
             THEN c.relpages::int8 * current_setting('block_size')::int8 ELSE pg_relation_size(c.indexrelid) END AS bytes, \
           current_setting('block_size')::int8 AS block_size, c.indnkeyatts::int8 AS ncols, \
           0::int8 AS nstats, 0::float8 AS key_width, \
           coalesce(pg_stat_get_numscans(c.indexrelid), 0)::int8 AS idx_scan, \
           pg_get_userbyid(c.relowner)::text AS owner, NULL::text AS set_role, false AS can_maintain, \
           EXISTS (SELECT 1 FROM pg_stat_progress_create_index p WHERE p.relid = c.indrelid) AS being_built, \
           coalesce((SELECT stats_reset FROM pg_stat_database WHERE datname = current_database()), pg_postmaster_start_time()) AS stats_since \
         FROM cand c JOIN pg_am am ON am.oid = c.relam \
         ORDER BY c.relpages DESC"
    )
}

/// Exact leaf density of one btree index (pgstattuple's `pgstatindex`): the confirmation of an estimate.
pub fn pgstatindex(oid: i64) -> String {
    format!(
        "SELECT avg_leaf_density::float8 AS avg_leaf_density, leaf_fragmentation::float8 AS leaf_fragmentation, \
         index_size::int8 AS bytes FROM pgstatindex({oid}::oid::regclass)"
    )
}

/// Size of an index by name, after a rebuild (REINDEX CONCURRENTLY gives the index a new oid).
pub fn index_size(schema: &str, index: &str) -> String {
    format!(
        "SELECT pg_relation_size(c.oid)::int8 AS bytes, i.indisvalid AS valid FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_index i ON i.indexrelid = c.oid \
         WHERE n.nspname = {} AND c.relname = {}",
        super::quote_literal(schema),
        super::quote_literal(index)
    )
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IndexStats {
    pub oid: i64,
    pub schema: String,
    pub index: String,
    pub table: String,
    pub table_oid: i64,
    pub access_method: String,
    pub valid: bool,
    pub is_unique: bool,
    pub is_primary: bool,
    /// Exclusion constraint or replica identity: never "unused".
    pub is_constraint: bool,
    pub reltuples: f64,
    pub relpages: i64,
    pub bytes: i64,
    pub block_size: i64,
    pub fillfactor: i64,
    pub ncols: i64,
    pub nexpr: i64,
    pub nstats: i64,
    pub key_width: f64,
    pub idx_scan: i64,
    /// The owner of the index (and its table).
    pub owner: String,
    /// We may REINDEX / DROP it: as ourselves, or as `set_role` after SET ROLE.
    pub can_maintain: bool,
    /// The role to SET ROLE to around a statement on this index (its owner; PG <= 16 only).
    pub set_role: Option<String>,
    pub being_built: bool,
    pub stats_since: Option<DateTime<Utc>>,
}

impl IndexStats {
    pub fn from_row(r: &Row) -> IndexStats {
        let i = |k| i64_of(r, k).unwrap_or(0);
        let set_role = str_of(r, "set_role");
        IndexStats {
            oid: i("oid"),
            schema: str_of(r, "schema").unwrap_or_default(),
            index: str_of(r, "index_name").unwrap_or_default(),
            table: str_of(r, "table_name").unwrap_or_default(),
            table_oid: i("table_oid"),
            access_method: str_of(r, "access_method").unwrap_or_default(),
            valid: bool_of(r, "valid"),
            is_unique: bool_of(r, "is_unique"),
            is_primary: bool_of(r, "is_primary"),
            is_constraint: bool_of(r, "is_constraint"),
            reltuples: f64_of(r, "reltuples").unwrap_or(-1.0),
            relpages: i("relpages"),
            bytes: i("bytes"),
            block_size: i64_of(r, "block_size").unwrap_or(8192),
            fillfactor: i64_of(r, "fillfactor").unwrap_or(90),
            ncols: i("ncols"),
            nexpr: i("nexpr"),
            nstats: i("nstats"),
            key_width: f64_of(r, "key_width").unwrap_or(0.0),
            idx_scan: i("idx_scan"),
            owner: str_of(r, "owner").unwrap_or_default(),
            can_maintain: bool_of(r, "can_maintain") || set_role.is_some(),
            set_role,
            being_built: bool_of(r, "being_built"),
            stats_since: time_of(r, "stats_since"),
        }
    }

    /// `schema.index` for people.
    pub fn name(&self) -> String {
        format!("{}.{}", self.schema, self.index)
    }

    /// An invalid index named like the transient copies of REINDEX CONCURRENTLY (`_ccnew`,
    /// `_ccold`, with a digit when the name was taken): what a failed or cancelled rebuild leaves.
    pub fn is_failed_rebuild_leftover(&self) -> bool {
        if self.valid {
            return false;
        }
        let base = self.index.trim_end_matches(|c: char| c.is_ascii_digit());
        base.ends_with("_ccnew") || base.ends_with("_ccold")
    }
}

fn maxalign(n: f64) -> f64 {
    (n / 8.0).ceil() * 8.0
}

/// Btree bloat as the wasted fraction of the index's pages: expected leaf pages from
/// `reltuples` x (8-byte index tuple header + key width from `pg_stats`, MAXALIGNed, + a 4-byte
/// line pointer) at the index's fillfactor, plus the metapage and inner pages. B-tree
/// deduplication (PG13+) makes real indexes smaller than this, so the estimate errs towards
/// "not bloated"; a rebuild is only decided on a figure above the threshold.
pub fn index_bloat_estimate(ix: &IndexStats, cfg: &PgConfig) -> BloatEstimate {
    let unreliable = |reason: String| BloatEstimate::Unreliable { reason };
    if ix.access_method != "btree" {
        return unreliable(format!(
            "{} index: only btree is estimated",
            ix.access_method
        ));
    }
    if !ix.valid {
        return unreliable("invalid index".into());
    }
    if ix.bytes < cfg.index.min_bytes {
        return unreliable(format!(
            "too small to judge ({} bytes < pg.index.min_bytes {})",
            ix.bytes, cfg.index.min_bytes
        ));
    }
    if ix.reltuples < 0.0 {
        return unreliable("never analyzed".into());
    }
    if ix.nexpr > 0 || ix.ncols == 0 || ix.nstats < ix.ncols {
        return unreliable(format!(
            "pg_stats covers {} of {} key columns ({} expression(s))",
            ix.nstats, ix.ncols, ix.nexpr
        ));
    }
    if ix.relpages <= 1 {
        return unreliable("no pages".into());
    }
    let tuple = maxalign(8.0 + ix.key_width) + 4.0;
    let usable =
        (ix.block_size as f64 - 24.0 - 16.0) * (ix.fillfactor.clamp(10, 100) as f64) / 100.0;
    let per_page = (usable / tuple).floor().max(2.0);
    let leaf = (ix.reltuples / per_page).ceil().max(1.0);
    let inner = (leaf / per_page).ceil();
    let expected_pages = (leaf + inner + 1.0) as i64;
    let percent = (100.0 * (ix.relpages - expected_pages) as f64 / ix.relpages as f64).max(0.0);
    BloatEstimate::Percent {
        percent,
        expected_pages,
    }
}

/// Bloat from pgstatindex's average leaf density, relative to the fillfactor a fresh build has.
pub fn index_bloat_measured(avg_leaf_density: f64, fillfactor: i64) -> Option<f64> {
    if !avg_leaf_density.is_finite() {
        return None;
    }
    let ff = fillfactor.clamp(10, 100) as f64;
    Some((100.0 * (1.0 - avg_leaf_density / ff)).clamp(0.0, 100.0))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IndexWork {
    /// DROP INDEX CONCURRENTLY of a failed rebuild's leftover: not disruptive.
    DropLeftover,
    /// REINDEX INDEX CONCURRENTLY: change window only.
    Reindex,
}

impl IndexWork {
    pub fn as_str(&self) -> &'static str {
        match self {
            IndexWork::DropLeftover => "drop-invalid-index",
            IndexWork::Reindex => "reindex",
        }
    }

    pub fn disruptive(&self) -> bool {
        matches!(self, IndexWork::Reindex)
    }

    /// Neither may run in a transaction block; both take only ShareUpdateExclusive on the table.
    pub fn statement(&self, schema: &str, index: &str) -> String {
        let ix = super::qualified(schema, index);
        match self {
            IndexWork::DropLeftover => format!("DROP INDEX CONCURRENTLY IF EXISTS {ix}"),
            IndexWork::Reindex => format!("REINDEX INDEX CONCURRENTLY {ix}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IndexNeed {
    pub work: IndexWork,
    pub reason: String,
    /// The rule and the numbers, for the guard's sentence.
    pub explanation: Explanation,
}

/// Leftovers first (they waste space and every write still maintains them), then the most
/// bloated btree indexes over `pg.index.reindex_percent`, largest first, one per table, never
/// while an index build runs on the table.
pub fn plan_indexes<'a>(
    indexes: &'a [IndexStats],
    cfg: &PgConfig,
    measured: &dyn Fn(&IndexStats) -> Option<f64>,
) -> Vec<(&'a IndexStats, IndexNeed)> {
    let mut out: Vec<(&IndexStats, IndexNeed)> = Vec::new();
    for ix in indexes.iter().filter(|ix| !ix.being_built) {
        if ix.is_failed_rebuild_leftover() {
            out.push((
                ix,
                IndexNeed {
                    work: IndexWork::DropLeftover,
                    reason: format!(
                        "invalid index {} left by a failed REINDEX CONCURRENTLY",
                        ix.name()
                    ),
                    explanation: Explanation::new(
                        "",
                        "",
                        "",
                        "SPEC 5.5.1 maintenance: an invalid leftover of a failed REINDEX CONCURRENTLY",
                    )
                    .observe(Observation::value("index size", ix.bytes as f64, "bytes")),
                },
            ));
        }
    }
    let mut rebuilds: Vec<(&IndexStats, f64, &'static str)> = indexes
        .iter()
        .filter(|ix| !ix.being_built && ix.valid && ix.bytes >= cfg.index.min_bytes)
        .filter_map(|ix| {
            let (pct, source) = match measured(ix) {
                Some(m) => (m, "measured (pgstatindex)"),
                None => (index_bloat_estimate(ix, cfg).percent()?, "estimated"),
            };
            (pct > cfg.index.reindex_percent).then_some((ix, pct, source))
        })
        .collect();
    rebuilds.sort_by_key(|r| std::cmp::Reverse(r.0.bytes));
    // One rebuild per table, and none on a table whose last rebuild left a leftover: a
    // REINDEX CONCURRENTLY that fails again (the same lock wait, the same kill) would leave
    // another `_ccnew1`, `_ccnew2`... The leftover is dropped first; the rebuild waits a run.
    let mut tables: std::collections::BTreeSet<i64> =
        out.iter().map(|(ix, _)| ix.table_oid).collect();
    for (ix, pct, source) in rebuilds {
        if tables.insert(ix.table_oid) {
            out.push((
                ix,
                IndexNeed {
                    work: IndexWork::Reindex,
                    reason: format!(
                        "index bloat {pct:.0} % ({source}) > pg.index.reindex_percent {}",
                        cfg.index.reindex_percent
                    ),
                    explanation: Explanation::new(
                        "",
                        "",
                        "",
                        format!("SPEC 5.5.1 maintenance: rebuild a bloated index ({source})"),
                    )
                    .observe(Observation::against(
                        "index bloat",
                        pct,
                        "%",
                        ">",
                        cfg.index.reindex_percent,
                    ))
                    .key("pg.index.reindex_percent"),
                },
            ));
        }
    }
    out
}

/// Unused: never scanned since statistics began, not backing a constraint, large enough to
/// matter, and statistics old enough to mean it (a restart after a crash, a failover or a
/// reset zeroes every count). Report only, never dropped.
pub fn unused_indexes<'a>(
    indexes: &'a [IndexStats],
    cfg: &PgConfig,
    now: DateTime<Utc>,
) -> Vec<&'a IndexStats> {
    indexes
        .iter()
        .filter(|ix| ix.valid && !ix.is_unique && !ix.is_primary && !ix.is_constraint)
        .filter(|ix| ix.idx_scan == 0 && ix.bytes >= cfg.unused_index_min_bytes)
        .filter(|ix| {
            ix.stats_since.is_some_and(|since| {
                now - since >= Duration::days(cfg.unused_index_min_stats_age_days)
            })
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::sql::tables::tests::{cfg, now};

    /// An int4 btree at fillfactor 90: 20-byte entries, 367 per leaf page.
    fn ix(name: &str, reltuples: f64, relpages: i64) -> IndexStats {
        IndexStats {
            oid: 1,
            schema: "public".into(),
            index: name.into(),
            table: "t".into(),
            table_oid: 10,
            access_method: "btree".into(),
            valid: true,
            is_unique: false,
            is_primary: false,
            is_constraint: false,
            reltuples,
            relpages,
            bytes: relpages * 8192,
            block_size: 8192,
            fillfactor: 90,
            ncols: 1,
            nexpr: 0,
            nstats: 1,
            key_width: 4.0,
            idx_scan: 5,
            owner: "app".into(),
            can_maintain: true,
            set_role: None,
            being_built: false,
            stats_since: Some(now() - Duration::days(30)),
        }
    }

    #[test]
    fn btree_estimate_tight_and_gutted() {
        let c = cfg(&[]);
        // 200,000 entries / 366 per page = 547 leaves + 2 inner + meta.
        let tight = ix("t_id", 200_000.0, 552);
        assert!(index_bloat_estimate(&tight, &c).percent().unwrap() < 2.0);
        // Same pages, a tenth of the entries left.
        let gutted = ix("t_id", 20_000.0, 552);
        let p = index_bloat_estimate(&gutted, &c).percent().unwrap();
        assert!((p - 89.5).abs() < 1.0, "{p}");
        let mut expr = gutted.clone();
        expr.nexpr = 1;
        assert!(index_bloat_estimate(&expr, &c).percent().is_none());
        let mut hash = gutted.clone();
        hash.access_method = "hash".into();
        assert!(index_bloat_estimate(&hash, &c).percent().is_none());
        assert_eq!(index_bloat_measured(90.0, 90), Some(0.0));
        assert_eq!(index_bloat_measured(9.0, 90), Some(90.0));
        assert_eq!(index_bloat_measured(f64::NAN, 90), None);
    }

    #[test]
    fn leftovers_are_invalid_ccnew_or_ccold_only() {
        let mut a = ix("t_id_ccnew", 0.0, 2);
        a.valid = false;
        assert!(a.is_failed_rebuild_leftover());
        let mut b = ix("t_id_ccold2", 0.0, 2);
        b.valid = false;
        assert!(b.is_failed_rebuild_leftover());
        // A valid index that merely has the suffix, or an invalid one of another name: left alone.
        assert!(!ix("t_id_ccnew", 0.0, 2).is_failed_rebuild_leftover());
        let mut c = ix("t_uniq", 0.0, 2);
        c.valid = false;
        assert!(!c.is_failed_rebuild_leftover());
    }

    #[test]
    fn plan_drops_leftovers_first_then_one_rebuild_per_table() {
        let c = cfg(&[]);
        let mut leftover = ix("t_id_ccnew", 0.0, 2);
        leftover.valid = false;
        // A leftover on a table of its own (see the next test for a leftover beside a rebuild).
        leftover.table_oid = 13;
        let mut big = ix("t_big", 20_000.0, 1000);
        big.oid = 2;
        let mut small = ix("t_small", 20_000.0, 552);
        small.oid = 3;
        let mut other = ix("u_id", 20_000.0, 552);
        other.oid = 4;
        other.table_oid = 11;
        other.table = "u".into();
        let mut building = other.clone();
        building.oid = 5;
        building.table_oid = 12;
        building.being_built = true;
        let fine = ix("t_fine", 200_000.0, 552);
        let all = vec![fine, small, leftover, big, other, building];
        let plan = plan_indexes(&all, &c, &|_| None);
        let got: Vec<(&str, IndexWork)> = plan
            .iter()
            .map(|(i, n)| (i.index.as_str(), n.work))
            .collect();
        assert_eq!(
            got,
            vec![
                ("t_id_ccnew", IndexWork::DropLeftover),
                ("t_big", IndexWork::Reindex),
                ("u_id", IndexWork::Reindex),
            ]
        );
        // A measurement overrides the estimate.
        let plan = plan_indexes(&all, &c, &|i| (i.oid == 2 || i.oid == 4).then_some(5.0));
        let got: Vec<&str> = plan.iter().map(|(i, _)| i.index.as_str()).collect();
        assert_eq!(got, vec!["t_id_ccnew", "t_small"]);
        assert_eq!(
            IndexWork::Reindex.statement("my s", "ix\"1"),
            "REINDEX INDEX CONCURRENTLY \"my s\".\"ix\"\"1\""
        );
    }

    #[test]
    fn no_rebuild_on_a_table_whose_leftover_is_still_there() {
        // A REINDEX CONCURRENTLY of t_big was killed (or hit lock_timeout) and left t_big_ccnew.
        // Rebuilding t_big again before the leftover is gone could fail the same way and leave
        // t_big_ccnew1: this run drops the leftover, the rebuild waits.
        let c = cfg(&[]);
        let mut leftover = ix("t_big_ccnew", 0.0, 2);
        leftover.valid = false;
        leftover.oid = 6;
        let mut big = ix("t_big", 20_000.0, 1000);
        big.oid = 2;
        let mut other = ix("u_id", 20_000.0, 552);
        other.oid = 4;
        other.table_oid = 11;
        let all = vec![big.clone(), leftover, other];
        let got: Vec<(&str, IndexWork)> = plan_indexes(&all, &c, &|_| None)
            .iter()
            .map(|(i, n)| (i.index.as_str(), n.work))
            .collect();
        assert_eq!(
            got,
            vec![
                ("t_big_ccnew", IndexWork::DropLeftover),
                ("u_id", IndexWork::Reindex),
            ]
        );
        // Once it is gone, the rebuild is planned again.
        let alone = [big];
        let got: Vec<&str> = plan_indexes(&alone, &c, &|_| None)
            .iter()
            .map(|(i, _)| i.index.as_str())
            .collect();
        assert_eq!(got, vec!["t_big"]);
    }

    #[test]
    fn who_may_rebuild_per_version() {
        let q15 = indexes(PgVersion(150004));
        // The database owner may VACUUM a table it does not own, never REINDEX it.
        assert!(!q15.contains("datdba"), "{q15}");
        assert!(q15.contains("pg_has_role(ct.relowner, 'MEMBER')"), "{q15}");
        assert!(!q15.contains("MAINTAIN"), "{q15}");
        let q16 = indexes(PgVersion(160002));
        assert!(q16.contains("pg_has_role(ct.relowner, 'SET')"), "{q16}");
        let q17 = indexes(PgVersion(170000));
        assert!(
            q17.contains("has_table_privilege(ct.oid, 'MAINTAIN')"),
            "{q17}"
        );
        assert!(q17.contains("(NULL::text) AS set_role"), "{q17}");

        use serde_json::json;
        let row = |v: serde_json::Value| v.as_object().unwrap().clone();
        let via = IndexStats::from_row(&row(
            json!({"owner": "app", "can_maintain": false, "set_role": "app"}),
        ));
        assert!(via.can_maintain);
        assert_eq!(
            (via.owner.as_str(), via.set_role.as_deref()),
            ("app", Some("app"))
        );
        let no = IndexStats::from_row(&row(json!({"owner": "app", "can_maintain": false})));
        assert!(!no.can_maintain && no.set_role.is_none());
    }

    #[test]
    fn unused_only_with_old_enough_statistics() {
        let c = cfg(&[]);
        let mut unused = ix("t_unused", 200_000.0, 552);
        unused.idx_scan = 0;
        let mut pk = unused.clone();
        pk.is_primary = true;
        let used = ix("t_used", 200_000.0, 552);
        let all = vec![unused.clone(), pk, used];
        let got: Vec<&str> = unused_indexes(&all, &c, now())
            .iter()
            .map(|i| i.index.as_str())
            .collect();
        assert_eq!(got, vec!["t_unused"]);
        // Statistics restarted yesterday: nothing is "unused" yet.
        let mut young = unused;
        young.stats_since = Some(now() - Duration::days(1));
        assert!(unused_indexes(&[young.clone()], &c, now()).is_empty());
        young.stats_since = None;
        assert!(unused_indexes(&[young], &c, now()).is_empty());
    }
}

//! Per-table statistics and what they say: the bloat estimate (with the reasons it cannot be
//! trusted), stale statistics, and which maintenance a table needs. Pure: pg-health reports
//! from it, vacuum-trigger acts from it, so both read a table the same way.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::{bool_of, f64_of, i64_of, str_of, time_of, Maintenance, PgVersion, Row};
use crate::config::pg::PgConfig;
use crate::guard::{Explanation, Observation};

/// [`super::tables`] as vacuum-trigger reads it: each row also names the role to `SET ROLE` to
/// before maintaining the table (`set_role`: its owner, when the session may reach the owner's
/// rights only that way, below PostgreSQL 17), and `can_maintain` counts that way in. The inner
/// `can_maintain` asks `pg_has_role(owner, 'USAGE')`, the rights the session holds as itself:
/// false for the maintenance role, which is the owner's member without inheriting its rights
/// (infra/sql/02_maintenance_role.sql).
pub fn tables_for_maintenance(v: PgVersion, min_bytes: i64) -> String {
    format!(
        "SELECT t.*, {} AS set_role FROM ({}) t ORDER BY t.relpages DESC",
        super::roles::set_role_column(v, "t.can_maintain", "t.owner::name", "t.owner"),
        super::tables(v, min_bytes)
    )
}

/// [`super::tables`] as pg-health reads it: only the rows a health check can use — tables of at
/// least `min_bytes` (bloat is judged, measured and handed off only there) or with at least
/// `min_dead_tuples` dead tuples (the stalled-VACUUM check) — so a database of 10,000 small tables
/// costs the monitor ~50 rows, not 10,000, on the wire and in the function. Wraparound is judged
/// per database ([`super::WRAPAROUND`]); vacuum-trigger, which freezes per table, reads them all.
pub fn tables_for_health(v: PgVersion, min_bytes: i64, min_dead_tuples: i64) -> String {
    format!(
        "SELECT t.* FROM ({}) t WHERE t.bytes >= {} OR t.n_dead_tup >= {} ORDER BY t.relpages DESC",
        super::tables_query(v, min_bytes, Some(min_dead_tuples)),
        min_bytes.max(0),
        min_dead_tuples.max(0)
    )
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TableStats {
    pub oid: i64,
    pub schema: String,
    pub table: String,
    /// -1 when never analyzed (PG14+), 0 before PG14.
    pub reltuples: f64,
    pub relpages: i64,
    pub bytes: i64,
    pub block_size: i64,
    pub xid_age: i64,
    pub mxid_age: i64,
    pub fillfactor: i64,
    pub autovacuum_enabled: bool,
    pub owner: String,
    /// We may VACUUM / ANALYZE it: as ourselves, or as `set_role` after SET ROLE.
    pub can_maintain: bool,
    /// The role to SET ROLE to around a maintenance statement (the owner; PG <= 16 only), when
    /// the row comes from [`tables_for_maintenance`].
    pub set_role: Option<String>,
    pub ncols: i64,
    /// Dropped columns: rows written before the drop still carry their data.
    pub ndropped: i64,
    pub nstats: i64,
    /// Per column in attnum order, `attalign:attlen:avg_width:null_frac` (from `pg_attribute` and
    /// `pg_stats`), comma separated: the tuple layout the estimate pads and aligns.
    pub layout: Option<String>,
    pub data_width: f64,
    pub max_null_frac: f64,
    pub n_live_tup: i64,
    pub n_dead_tup: i64,
    pub n_mod_since_analyze: i64,
    pub vacuums: i64,
    pub analyzes: i64,
    pub last_vacuum: Option<DateTime<Utc>>,
    pub last_analyze: Option<DateTime<Utc>>,
    pub exclusively_locked: bool,
    pub being_vacuumed: bool,
}

impl TableStats {
    pub fn from_row(r: &Row) -> TableStats {
        let i = |k| i64_of(r, k).unwrap_or(0);
        let set_role = str_of(r, "set_role");
        TableStats {
            oid: i("oid"),
            schema: str_of(r, "schema").unwrap_or_default(),
            table: str_of(r, "table_name").unwrap_or_default(),
            reltuples: f64_of(r, "reltuples").unwrap_or(-1.0),
            relpages: i("relpages"),
            bytes: i("bytes"),
            block_size: i64_of(r, "block_size").unwrap_or(8192),
            xid_age: i("xid_age"),
            mxid_age: i("mxid_age"),
            fillfactor: i64_of(r, "fillfactor").unwrap_or(100),
            autovacuum_enabled: r
                .get("autovacuum_enabled")
                .map(|_| bool_of(r, "autovacuum_enabled"))
                .unwrap_or(true),
            owner: str_of(r, "owner").unwrap_or_default(),
            can_maintain: bool_of(r, "can_maintain") || set_role.is_some(),
            set_role,
            ncols: i("ncols"),
            ndropped: i("ndropped"),
            nstats: i("nstats"),
            layout: str_of(r, "layout"),
            data_width: f64_of(r, "data_width").unwrap_or(0.0),
            max_null_frac: f64_of(r, "max_null_frac").unwrap_or(0.0),
            n_live_tup: i("n_live_tup"),
            n_dead_tup: i("n_dead_tup"),
            n_mod_since_analyze: i("n_mod_since_analyze"),
            vacuums: i("vacuums"),
            analyzes: i("analyzes"),
            last_vacuum: time_of(r, "last_vacuum"),
            last_analyze: time_of(r, "last_analyze"),
            exclusively_locked: bool_of(r, "exclusively_locked"),
            being_vacuumed: bool_of(r, "being_vacuumed"),
        }
    }

    /// `schema.table` for people (not for SQL: see [`super::qualified`]).
    pub fn name(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }

    pub fn dead_percent(&self) -> f64 {
        let total = self.n_live_tup + self.n_dead_tup;
        if total <= 0 {
            0.0
        } else {
            100.0 * self.n_dead_tup as f64 / total as f64
        }
    }

    /// Statistics too old to describe the table: many rows changed since the last ANALYZE,
    /// or never analyzed while it has rows.
    pub fn stats_stale(&self, cfg: &PgConfig, now: DateTime<Utc>) -> bool {
        if self.reltuples < 0.0 || self.last_analyze.is_none() {
            return self.n_live_tup + self.n_dead_tup + self.n_mod_since_analyze > 0;
        }
        let base = self.reltuples.max(1.0);
        let changed = self.n_mod_since_analyze as f64;
        let too_many = changed > cfg.stale_fraction * base;
        let too_old = self
            .last_analyze
            .map(|t| now - t > Duration::hours(cfg.stale_hours))
            .unwrap_or(true)
            && changed > 0.0;
        too_many || too_old
    }
}

/// Table bloat as the wasted fraction of its pages (ioguix's `bloat_pct`, not check_postgres's
/// ratio), or why no number can be given.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BloatEstimate {
    Percent { percent: f64, expected_pages: i64 },
    Unreliable { reason: String },
}

impl BloatEstimate {
    pub fn percent(&self) -> Option<f64> {
        match self {
            BloatEstimate::Percent { percent, .. } => Some(*percent),
            BloatEstimate::Unreliable { .. } => None,
        }
    }
}

fn maxalign(n: f64) -> f64 {
    (n / 8.0).ceil() * 8.0
}

/// Rows of varying width leave 0 to 1 row's worth of space unused at the end of each page; the
/// estimate assumes half. Below this many rows per page that half row alone could move the
/// figure by more than 3 percentage points (50 / 17 < 3), so no number is given.
pub const ROWS_PER_PAGE_MIN: f64 = 17.0;

/// One column of [`TableStats::layout`].
#[derive(Debug, Clone, Copy, PartialEq)]
struct Column {
    /// Alignment in bytes (`attalign` c/s/i/d = 1/2/4/8).
    align: f64,
    /// `attlen`: > 0 fixed width, -1 varlena, -2 cstring.
    len: i64,
    /// Average stored width of the non-null values (`pg_stats.avg_width`, truncated to an
    /// integer: a TOASTed value counts its 18-byte pointer, a compressed one its compressed size).
    width: f64,
    null_frac: f64,
}

fn parse_layout(layout: &str) -> Option<Vec<Column>> {
    layout
        .split(',')
        .map(|c| {
            let mut p = c.split(':');
            let align = match p.next()? {
                "c" => 1.0,
                "s" => 2.0,
                "i" => 4.0,
                "d" => 8.0,
                _ => return None,
            };
            let len = p.next()?.parse().ok()?;
            let width: f64 = p.next()?.parse().ok()?;
            let null_frac: f64 = p.next()?.parse().ok()?;
            (width.is_finite() && (0.0..=1.0).contains(&null_frac)).then_some(Column {
                align,
                len,
                width,
                null_frac,
            })
        })
        .collect()
}

/// Expected bytes a tuple occupies on its page once rewritten, line pointer included: the
/// 23-byte header plus, in the share of rows with any NULL, the null bitmap (one bit per
/// attribute, dropped ones too), MAXALIGNed; then each column in attnum order, present with probability 1 - null_frac,
/// at its alignment (a short varlena, under 127 bytes with its 1-byte header, is not aligned);
/// then the tuple MAXALIGNed on the page, and its 4-byte line pointer. Padding depends on where
/// the previous columns ended, so the offset is carried as its expected value and the
/// distribution of its residue mod 8: fixed-width columns move the residue exactly, a varlena
/// (whose width varies row to row) leaves it uniform. Returns the bytes and whether every row
/// has the same size (no NULLs, no varlena).
fn tuple_bytes(cols: &[Column], ncols: i64, ndropped: i64) -> (f64, bool) {
    // A dropped column is NULL in every row written since the drop and in every row a rewrite
    // (VACUUM FULL) writes: those rows all carry the bitmap.
    let p_null_row = if ndropped > 0 {
        1.0
    } else {
        1.0 - cols.iter().map(|c| 1.0 - c.null_frac).product::<f64>()
    };
    let bitmap = (((ncols + ndropped).max(1) as f64) / 8.0).ceil();
    let hoff = 24.0 + p_null_row * (maxalign(23.0 + bitmap) - 24.0);
    let mut off = 0.0f64;
    let mut residue = [0.0f64; 8];
    residue[0] = 1.0;
    for c in cols {
        let present = 1.0 - c.null_frac;
        if present <= 0.0 {
            continue;
        }
        let align = if c.len == -1 && c.width < 127.0 {
            1
        } else {
            c.align as usize
        };
        let mut pad = 0.0;
        let mut next = [0.0f64; 8];
        for (r, p) in residue.iter().enumerate() {
            let k = (align - r % align) % align;
            pad += p * k as f64;
            if c.len > 0 {
                next[(r + k + c.len as usize) % 8] += p;
            }
        }
        if c.len <= 0 {
            next = [0.125; 8];
        }
        // pg_stats.avg_width is the average truncated to an integer: a varlena's true average
        // is half a byte more, on average (a fixed-width column's is exact).
        let width = if c.len > 0 { c.width } else { c.width + 0.5 };
        off += present * (pad + width);
        for (r, n) in residue.iter_mut().zip(next) {
            *r = present * n + (1.0 - present) * *r;
        }
    }
    let tail: f64 = residue
        .iter()
        .enumerate()
        .map(|(r, p)| p * ((8 - r) % 8) as f64)
        .sum();
    let fixed = p_null_row == 0.0 && cols.iter().all(|c| c.len > 0);
    (hoff + off + tail + 4.0, fixed)
}

/// Expected pages from `reltuples` x the expected tuple size ([`tuple_bytes`] from the column
/// layout; without one, 23-byte header + null bitmap, MAXALIGNed, + the MAXALIGNed sum of average
/// widths + a 4-byte line pointer) at the table's fillfactor (a page takes tuples until less
/// than (100 - fillfactor) % of it would stay free; rows of varying width leave half a tuple
/// unused per page on average). Unreliable when: never analyzed, statistics stale, any column
/// without `pg_stats` (a role that cannot read them sees none: the estimate would be garbage),
/// rows so wide that fewer than [`ROWS_PER_PAGE_MIN`] fit a page, or the table is tiny. Rows written before a column was dropped still carry its data, which a
/// rewrite gives back: the estimate counts it as reclaimable, as VACUUM FULL does.
pub fn bloat_estimate(t: &TableStats, cfg: &PgConfig, now: DateTime<Utc>) -> BloatEstimate {
    let unreliable = |reason: String| BloatEstimate::Unreliable { reason };
    if t.bytes < cfg.bloat_min_bytes {
        return unreliable(format!(
            "too small to judge ({} bytes < pg.bloat.min_bytes {})",
            t.bytes, cfg.bloat_min_bytes
        ));
    }
    if t.reltuples < 0.0 || t.last_analyze.is_none() {
        return unreliable("never analyzed".into());
    }
    if t.stats_stale(cfg, now) {
        return unreliable(format!(
            "statistics are stale ({} rows changed since the last ANALYZE)",
            t.n_mod_since_analyze
        ));
    }
    if t.ncols == 0 || t.nstats < t.ncols {
        return unreliable(format!(
            "pg_stats covers {} of {} columns (the role cannot read them, or they were never gathered)",
            t.nstats, t.ncols
        ));
    }
    if t.relpages <= 0 {
        return unreliable("no pages".into());
    }
    let block = t.block_size as f64;
    let ff = t.fillfactor.clamp(10, 100) as f64;
    let usable = block - 24.0 - (block * (100.0 - ff) / 100.0).floor();
    let layout = t.layout.as_deref().and_then(parse_layout);
    let per_page = match layout.filter(|cols| cols.len() as i64 == t.ncols) {
        Some(cols) => {
            let (tuple, fixed) = tuple_bytes(&cols, t.ncols, t.ndropped);
            let fit = usable / tuple;
            if !fixed && fit < ROWS_PER_PAGE_MIN {
                return unreliable(format!(
                    "rows of ~{tuple:.0} bytes: {fit:.1} fit a page, and how well rows of varying width fill one can move the estimate by more than 3 points"
                ));
            }
            // MaxHeapTuplesPerPage: (8192 - 24) / (24 + 4) = 291 at 8 kB.
            let max = ((block - 24.0) / 28.0).floor();
            if fixed { fit.floor() } else { fit - 0.5 }.clamp(1.0, max)
        }
        None => {
            let bitmap = if t.max_null_frac > 0.0 {
                ((t.ncols as f64) / 8.0).ceil()
            } else {
                0.0
            };
            let tuple = maxalign(23.0 + bitmap) + maxalign(t.data_width) + 4.0;
            (usable / tuple).floor().max(1.0)
        }
    };
    let expected_pages = (t.reltuples / per_page).ceil().max(1.0) as i64;
    let percent = (100.0 * (t.relpages - expected_pages) as f64 / t.relpages as f64).max(0.0);
    BloatEstimate::Percent {
        percent,
        expected_pages,
    }
}

/// An explanation of maintenance: the rule only (the handler adds the verb and the table).
fn rule(words: &str) -> Explanation {
    Explanation::new("", "", "", words)
}

/// Why a table is a maintenance candidate, in priority order (most urgent first).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Need {
    pub kind: Maintenance,
    pub reason: String,
    /// The rule and the numbers (SPEC 5.5.1), for the guard's sentence.
    pub explanation: Explanation,
    /// Higher first within a kind (XID age, dead tuples, changed rows).
    pub weight: f64,
}

/// What one table needs, judged from statistics (plus a measured bloat figure when the caller
/// confirmed one with pgstattuple). `None` when nothing, or nothing we may do.
pub fn maintenance_need(
    t: &TableStats,
    cfg: &PgConfig,
    measured_bloat: Option<f64>,
    now: DateTime<Utc>,
) -> Option<Need> {
    let v = &cfg.vacuum;
    let age = t.xid_age.max(t.mxid_age);
    if age >= v.freeze_age {
        return Some(Need {
            kind: Maintenance::Freeze,
            reason: format!(
                "XID/multixact age {age} >= pg.vacuum.freeze_age {}",
                v.freeze_age
            ),
            explanation: rule("SPEC 5.5.1 wraparound: VACUUM (FREEZE)")
                .observe(Observation::against(
                    "XID/multixact age",
                    age as f64,
                    "",
                    ">=",
                    v.freeze_age as f64,
                ))
                .key("pg.vacuum.freeze_age"),
            weight: age as f64,
        });
    }
    let bloat = measured_bloat.or_else(|| bloat_estimate(t, cfg, now).percent());
    let dead = t.dead_percent();
    let bloated = bloat.is_some_and(|b| b > cfg.bloat_percent.warn);
    let many_dead = t.n_dead_tup >= v.min_dead_tuples && dead >= v.dead_percent;
    if bloat.is_some_and(|b| b > cfg.bloat_percent.crit) && v.full_allowed {
        return Some(Need {
            kind: Maintenance::VacuumFull,
            explanation: rule("SPEC 5.5.1 VACUUM FULL only for severe bloat, in a change window")
                .observe(Observation::against(
                    "bloat",
                    bloat.unwrap_or(0.0),
                    "%",
                    ">",
                    cfg.bloat_percent.crit,
                ))
                .key("pg.bloat.crit_percent")
                .key("pg.vacuum.full_allowed"),
            reason: format!(
                "bloat {:.0} % > {} % (critical)",
                bloat.unwrap_or(0.0),
                cfg.bloat_percent.crit
            ),
            weight: bloat.unwrap_or(0.0),
        });
    }
    if many_dead || (bloated && t.n_dead_tup > 0) {
        let rule_words = "SPEC 5.5.1 VACUUM (ANALYZE) of tables autovacuum leaves bloated";
        let mut explanation = if many_dead {
            rule(rule_words)
                .observe(Observation::against(
                    "dead tuples",
                    t.n_dead_tup as f64,
                    "",
                    ">=",
                    v.min_dead_tuples as f64,
                ))
                .observe(Observation::against(
                    "dead share",
                    dead,
                    "%",
                    ">=",
                    v.dead_percent,
                ))
                .key("pg.vacuum.min_dead_tuples")
                .key("pg.vacuum.dead_percent")
        } else {
            rule(rule_words).observe(Observation::value("dead tuples", t.n_dead_tup as f64, ""))
        };
        if let Some(b) = bloat {
            explanation = explanation.observe(if b > cfg.bloat_percent.warn {
                Observation::against("bloat", b, "%", ">", cfg.bloat_percent.warn)
            } else {
                Observation::value("bloat", b, "%")
            });
            if bloated {
                explanation = explanation.key("pg.bloat.warn_percent");
            }
        }
        return Some(Need {
            explanation,
            kind: Maintenance::VacuumAnalyze,
            reason: format!(
                "{} dead tuples ({dead:.0} %){}",
                t.n_dead_tup,
                bloat
                    .map(|b| format!(", bloat {b:.0} %"))
                    .unwrap_or_default()
            ),
            weight: t.n_dead_tup as f64,
        });
    }
    if t.stats_stale(cfg, now) && t.n_mod_since_analyze >= v.analyze_min_changes {
        return Some(Need {
            explanation: rule("SPEC 5.5.1 ANALYZE of stale statistics")
                .observe(Observation::against(
                    "rows changed since the last ANALYZE",
                    t.n_mod_since_analyze as f64,
                    "",
                    ">=",
                    v.analyze_min_changes as f64,
                ))
                .key("pg.vacuum.analyze_min_changes"),
            kind: Maintenance::Analyze,
            reason: format!(
                "stale statistics: {} rows changed since the last ANALYZE",
                t.n_mod_since_analyze
            ),
            weight: t.n_mod_since_analyze as f64,
        });
    }
    None
}

/// Candidates in the order they should be worked: freeze (oldest first), then vacuum, analyze,
/// rebuilds; tables someone holds exclusively or autovacuum is already on are left alone.
pub fn plan_maintenance<'a>(
    tables: &'a [TableStats],
    cfg: &PgConfig,
    measured: &dyn Fn(&TableStats) -> Option<f64>,
    now: DateTime<Utc>,
) -> Vec<(&'a TableStats, Need)> {
    let mut out: Vec<(&TableStats, Need)> = tables
        .iter()
        .filter(|t| !t.exclusively_locked && !t.being_vacuumed)
        .filter_map(|t| maintenance_need(t, cfg, measured(t), now).map(|n| (t, n)))
        .collect();
    out.sort_by(|a, b| {
        a.1.kind.cmp(&b.1.kind).then(
            b.1.weight
                .partial_cmp(&a.1.weight)
                .unwrap_or(std::cmp::Ordering::Equal),
        )
    });
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use crate::config::{layer, Env};
    use chrono::TimeZone;
    use std::collections::BTreeMap;

    pub fn cfg(pairs: &[(&str, &str)]) -> PgConfig {
        let vars: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        crate::config::pg::from_settings(&layer(Env::Dev, &vars, &BTreeMap::new()).unwrap())
            .unwrap()
    }

    pub fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
    }

    /// A 10-column-free table: (id int4, payload text ~100 bytes), freshly analyzed.
    pub fn table(reltuples: f64, relpages: i64, dead: i64) -> TableStats {
        TableStats {
            oid: 16384,
            schema: "public".into(),
            table: "events".into(),
            reltuples,
            relpages,
            bytes: relpages * 8192,
            block_size: 8192,
            xid_age: 1000,
            mxid_age: 1,
            fillfactor: 100,
            autovacuum_enabled: true,
            owner: "app".into(),
            can_maintain: true,
            set_role: None,
            ncols: 2,
            ndropped: 0,
            nstats: 2,
            layout: None,
            data_width: 105.0,
            max_null_frac: 0.0,
            n_live_tup: reltuples as i64,
            n_dead_tup: dead,
            n_mod_since_analyze: 0,
            vacuums: 1,
            analyzes: 1,
            last_vacuum: Some(now() - Duration::hours(1)),
            last_analyze: Some(now() - Duration::hours(1)),
            exclusively_locked: false,
            being_vacuumed: false,
        }
    }

    #[test]
    fn estimate_of_a_tight_table_is_near_zero_and_of_a_gutted_one_high() {
        let c = cfg(&[]);
        // 24 + 112 + 4 = 140 bytes -> 58 per page; 58,000 rows need 1,000 pages.
        let tight = table(58_000.0, 1_000, 0);
        let p = bloat_estimate(&tight, &c, now()).percent().unwrap();
        assert!(p < 1.0, "{p}");
        // Same pages, a fifth of the rows left: 80 % wasted.
        let gutted = table(11_600.0, 1_000, 46_400);
        let p = bloat_estimate(&gutted, &c, now()).percent().unwrap();
        assert!((p - 80.0).abs() < 0.5, "{p}");
    }

    #[test]
    fn unreliable_estimates_carry_a_reason_never_a_number() {
        let c = cfg(&[]);
        let mut t = table(11_600.0, 1_000, 46_400);
        t.nstats = 0;
        assert!(
            matches!(bloat_estimate(&t, &c, now()), BloatEstimate::Unreliable { reason } if reason.contains("pg_stats"))
        );
        let mut t = table(11_600.0, 1_000, 46_400);
        t.n_mod_since_analyze = 40_000;
        assert!(
            matches!(bloat_estimate(&t, &c, now()), BloatEstimate::Unreliable { reason } if reason.contains("stale"))
        );
        let mut t = table(-1.0, 1_000, 0);
        t.last_analyze = None;
        assert!(bloat_estimate(&t, &c, now()).percent().is_none());
        let tiny = table(10.0, 20, 0);
        assert!(
            matches!(bloat_estimate(&tiny, &c, now()), BloatEstimate::Unreliable { reason } if reason.contains("small"))
        );
        // Old but unchanged statistics are still good.
        let mut t = table(58_000.0, 1_000, 0);
        t.last_analyze = Some(now() - Duration::days(90));
        assert!(bloat_estimate(&t, &c, now()).percent().is_some());
    }

    #[test]
    fn needs_in_priority_order() {
        let c = cfg(&[]);
        let mut old = table(58_000.0, 1_000, 0);
        old.xid_age = 600_000_000;
        old.table = "old".into();
        let mut older = old.clone();
        older.xid_age = 900_000_000;
        older.table = "older".into();
        let mut dead = table(11_600.0, 1_000, 46_400);
        dead.table = "dead".into();
        let mut stale = table(58_000.0, 1_000, 0);
        stale.n_mod_since_analyze = 20_000;
        stale.table = "stale".into();
        let fine = table(58_000.0, 1_000, 10);
        let mut locked = dead.clone();
        locked.exclusively_locked = true;
        let all = vec![fine, dead, stale, old, older, locked];
        let plan = plan_maintenance(&all, &c, &|_| None, now());
        let got: Vec<(String, Maintenance)> = plan
            .iter()
            .map(|(t, n)| (t.table.clone(), n.kind))
            .collect();
        assert_eq!(
            got,
            vec![
                ("older".into(), Maintenance::Freeze),
                ("old".into(), Maintenance::Freeze),
                ("dead".into(), Maintenance::VacuumAnalyze),
                ("stale".into(), Maintenance::Analyze),
            ]
        );
    }

    #[test]
    fn maintenance_rows_name_the_role_to_switch_to_per_version() {
        let v15 = PgVersion(150004);
        let q15 = tables_for_maintenance(v15, 1 << 20);
        assert!(q15.contains(&crate::sql::tables(v15, 1 << 20)));
        assert!(
            q15.contains("pg_has_role(t.owner::name, 'MEMBER')"),
            "{q15}"
        );
        let q16 = tables_for_maintenance(PgVersion(160002), 1 << 20);
        assert!(q16.contains("pg_has_role(t.owner::name, 'SET')"), "{q16}");
        let q17 = tables_for_maintenance(PgVersion(170000), 1 << 20);
        assert!(q17.contains("NULL::text AS set_role"), "{q17}");
        assert!(q17.contains("'MAINTAIN'"), "{q17}");

        use serde_json::json;
        let row = |v: serde_json::Value| v.as_object().unwrap().clone();
        // Below 17, a member that does not inherit the owner's rights: maintainable after SET ROLE.
        let t = TableStats::from_row(&row(
            json!({"owner": "app", "can_maintain": false, "set_role": "app"}),
        ));
        assert!(t.can_maintain);
        assert_eq!(t.set_role.as_deref(), Some("app"));
        // Neither as ourselves nor through SET ROLE.
        let t = TableStats::from_row(&row(
            json!({"owner": "app", "can_maintain": false, "set_role": null}),
        ));
        assert!(!t.can_maintain);
        assert_eq!(t.set_role, None);
        // The owner's rights held as ourselves (or MAINTAIN on 17): no switch.
        let t = TableStats::from_row(&row(json!({"owner": "app", "can_maintain": true})));
        assert!(t.can_maintain);
        assert_eq!(t.set_role, None);
    }

    #[test]
    fn full_only_when_allowed() {
        let gutted = table(11_600.0, 1_000, 46_400);
        assert_eq!(
            maintenance_need(&gutted, &cfg(&[]), None, now())
                .unwrap()
                .kind,
            Maintenance::VacuumAnalyze
        );
        let allowed = cfg(&[("NBAOPS_PG__VACUUM__FULL_ALLOWED", "true")]);
        assert_eq!(
            maintenance_need(&gutted, &allowed, None, now())
                .unwrap()
                .kind,
            Maintenance::VacuumFull
        );
        // Space already vacuumed but not given back: only a rewrite helps, and only when allowed.
        let vacuumed = table(11_600.0, 1_000, 0);
        assert!(maintenance_need(&vacuumed, &cfg(&[]), None, now()).is_none());
        assert_eq!(
            maintenance_need(&vacuumed, &allowed, None, now())
                .unwrap()
                .kind,
            Maintenance::VacuumFull
        );
        // A measured figure overrides the estimate.
        assert!(maintenance_need(&vacuumed, &allowed, Some(3.0), now()).is_none());
    }
}

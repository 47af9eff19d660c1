//! Every PostgreSQL query nbaops runs, per server version where the catalogs differ (13–17), and
//! the typed rows they return. Queries are parameterless (the `Postgres` port takes plain SQL) and
//! return plain columns the port can read: numbers cast to int8/float8, names to text,
//! times as timestamptz. Nothing here takes a lock stronger than AccessShare; a table someone
//! holds in AccessExclusive is sized from `relpages` (no lock) rather than `pg_relation_size`,
//! and `lock_timeout` bounds any wait, so the application is never queued behind us.
//!
//! Statements that name a table (VACUUM, ANALYZE, REINDEX) are built with [`quote_ident`] on the
//! schema and the table separately: `"my schema"."odd ""name"""`, never `"schema.table"`.

pub mod backup;
pub mod indexes;
pub mod roles;
mod session;
pub mod tables;

pub use session::{open_session, session_setup, vacuum_cost, with_connect_timeout};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

pub use indexes::{
    index_bloat_estimate, index_bloat_measured, plan_indexes, unused_indexes, IndexNeed,
    IndexStats, IndexWork,
};
pub use tables::{
    bloat_estimate, maintenance_need, plan_maintenance, BloatEstimate, Need, TableStats,
};

/// A row as the port returns it.
pub type Row = Map<String, Value>;

/// `server_version_num` (150004 for 15.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PgVersion(pub i64);

impl PgVersion {
    pub fn major(&self) -> i64 {
        self.0 / 10_000
    }
}

/// `"a ""b"""`: an identifier quoted the way PostgreSQL's `quote_ident` does when it must.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'it''s'`: a string literal (standard_conforming_strings is on since 9.1; a backslash
/// makes it an E'' literal so the meaning never depends on that setting).
pub fn quote_literal(value: &str) -> String {
    let body = value.replace('\'', "''");
    if body.contains('\\') {
        format!("E'{}'", body.replace('\\', "\\\\"))
    } else {
        format!("'{body}'")
    }
}

/// `"schema"."table"`, each part quoted on its own.
pub fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}

// ---- row readers: tolerant of numbers that come back as text (numeric) or null ----

pub fn f64_of(row: &Row, key: &str) -> Option<f64> {
    match row.get(key)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        _ => None,
    }
}

pub fn i64_of(row: &Row, key: &str) -> Option<i64> {
    match row.get(key)? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

pub fn str_of(row: &Row, key: &str) -> Option<String> {
    match row.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

pub fn bool_of(row: &Row, key: &str) -> bool {
    match row.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => matches!(s.as_str(), "t" | "true" | "on"),
        _ => false,
    }
}

pub fn time_of(row: &Row, key: &str) -> Option<DateTime<Utc>> {
    let s = str_of(row, key)?;
    DateTime::parse_from_rfc3339(&s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

// ---- server ----

pub const SERVER: &str = "SELECT current_setting('server_version_num')::int8 AS version_num, \
    pg_is_in_recovery() AS in_recovery, pg_postmaster_start_time() AS postmaster_start, \
    current_database()::text AS database, current_user::text AS role, pg_backend_pid()::int8 AS own_pid, \
    now() AS now, \
    (pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') \
      OR coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = current_user), false)) AS sees_all_sessions";

#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    pub version: PgVersion,
    pub in_recovery: bool,
    pub postmaster_start: Option<DateTime<Utc>>,
    pub database: String,
    pub role: String,
    pub own_pid: i64,
    /// The server's clock: ages of what the database records (stats resets, vacuum times,
    /// archive times) are measured on it, not on the function's.
    pub now: Option<DateTime<Utc>>,
    /// pg_monitor's `pg_read_all_stats` (or superuser): without it other roles' sessions,
    /// statements and replication progress read as NULL — checks would be silently empty.
    pub sees_all_sessions: bool,
}

impl Server {
    pub fn from_row(r: &Row) -> Server {
        Server {
            version: PgVersion(i64_of(r, "version_num").unwrap_or(0)),
            in_recovery: bool_of(r, "in_recovery"),
            postmaster_start: time_of(r, "postmaster_start"),
            database: str_of(r, "database").unwrap_or_default(),
            role: str_of(r, "role").unwrap_or_default(),
            own_pid: i64_of(r, "own_pid").unwrap_or(0),
            now: time_of(r, "now"),
            sees_all_sessions: bool_of(r, "sees_all_sessions"),
        }
    }
}

// ---- connections ----

/// Slots a client may use: max_connections minus the superuser (and, PG16+, the
/// `reserved_connections`, RDS's `rds.rds_superuser_reserved_connections`) reserves.
/// `current_setting(name, true)` is NULL where a setting does not exist, so one text serves 13–17.
pub const CONNECTIONS: &str = "SELECT current_setting('max_connections')::int8 AS max_connections, \
    current_setting('superuser_reserved_connections')::int8 AS superuser_reserved, \
    coalesce(current_setting('reserved_connections', true)::int8, 0) AS reserved, \
    coalesce(current_setting('rds.rds_superuser_reserved_connections', true)::int8, 0) AS rds_reserved, \
    count(*) FILTER (WHERE backend_type = 'client backend')::int8 AS used, \
    count(*) FILTER (WHERE backend_type = 'client backend' AND state = 'idle')::int8 AS idle, \
    count(*) FILTER (WHERE backend_type = 'client backend' AND state = 'active')::int8 AS active, \
    count(*) FILTER (WHERE backend_type = 'client backend' AND state LIKE 'idle in transaction%')::int8 AS idle_in_tx \
    FROM pg_stat_activity";

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Connections {
    pub max_connections: i64,
    pub reserved: i64,
    pub used: i64,
    pub idle: i64,
    pub active: i64,
    pub idle_in_tx: i64,
}

impl Connections {
    pub fn from_row(r: &Row) -> Connections {
        let g = |k| i64_of(r, k).unwrap_or(0);
        Connections {
            max_connections: g("max_connections"),
            reserved: g("superuser_reserved") + g("reserved") + g("rds_reserved"),
            used: g("used"),
            idle: g("idle"),
            active: g("active"),
            idle_in_tx: g("idle_in_tx"),
        }
    }
    pub fn usable(&self) -> i64 {
        (self.max_connections - self.reserved).max(1)
    }
    pub fn percent(&self) -> f64 {
        100.0 * self.used as f64 / self.usable() as f64
    }
}

// ---- cumulative counters ----

/// With who answered: a standby, or a primary on which WAL timeline (the first 8 hex digits of
/// its current WAL file name; a promotion starts a new timeline). The same endpoint answering
/// from another timeline is a failover: the counters are another server's.
pub const DATABASE_COUNTERS: &str =
    "SELECT datname::text AS database, blks_hit::int8, blks_read::int8, \
    deadlocks::int8, xact_commit::int8, xact_rollback::int8, stats_reset, \
    pg_postmaster_start_time() AS postmaster_start, now() AS at, \
    pg_is_in_recovery() AS in_recovery, \
    CASE WHEN pg_is_in_recovery() THEN NULL \
      ELSE ('x' || lpad(substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8), 16, '0'))::bit(64)::int8 END AS timeline \
    FROM pg_stat_database WHERE datname = current_database()";

// ---- wraparound ----

/// This database's XID and multixact ages, with the server's thresholds (`vacuum_failsafe_age`
/// is PG14+; 1.6 B, its default, before).
pub const WRAPAROUND: &str = "SELECT datname::text AS database, age(datfrozenxid)::int8 AS xid_age, \
    mxid_age(datminmxid)::int8 AS mxid_age, \
    current_setting('autovacuum_freeze_max_age')::int8 AS freeze_max_age, \
    coalesce(current_setting('vacuum_failsafe_age', true)::int8, 1600000000) AS failsafe_age, \
    coalesce(current_setting('vacuum_multixact_failsafe_age', true)::int8, 1600000000) AS mxid_failsafe_age \
    FROM pg_database WHERE datname = current_database()";

// ---- tables ----

/// Every user table with what health and maintenance need: statistics, dead tuples, ages, the
/// inputs of the bloat estimate (ioguix-style, computed in Rust by [`bloat_estimate`]), whether
/// we may maintain it, and whether someone holds it exclusively or vacuums it right now.
/// PG17 adds the MAINTAIN privilege; before, only owners (or the database owner) may VACUUM.
///
/// Built to stay fast with 10,000 tables: locks and vacuum progress are read once and joined,
/// counters come from the `pg_stat_get_*` functions, and the expensive inputs (`pg_stats`, whose
/// view checks a column privilege per row; column counts; `pg_relation_size`, a file stat) are
/// read only where cheap statistics say size can matter: tables whose `relpages` reach half of
/// `min_bytes`, or whose `relpages` is unknown (never vacuumed or analyzed: `reltuples` < 0, or 0 pages).
/// Smaller tables are sized from `relpages` and are never judged for bloat anyway. `pg_stats`
/// is read only for tables the role may read a column of (`has_any_column_privilege`): the
/// view shows nothing else, and a `pg_monitor`-only role would otherwise pay ~0.05 ms per
/// table for empty answers (100 ms with 2,000 tables over the size threshold).
pub fn tables(v: PgVersion, min_bytes: i64) -> String {
    tables_query(v, min_bytes, None)
}

/// [`tables`], or with `health_min_dead` only the tables that may be large (as `big` decides) or
/// have at least that many dead tuples, filtered before anything per row is computed
/// ([`tables::tables_for_health`]).
pub(crate) fn tables_query(v: PgVersion, min_bytes: i64, health_min_dead: Option<i64>) -> String {
    let only = match health_min_dead {
        Some(dead) => format!(
            " AND (c.reltuples < 0 OR c.relpages = 0 \
               OR c.relpages::int8 * current_setting('block_size')::int8 >= {} \
               OR pg_stat_get_dead_tuples(c.oid) >= {})",
            (min_bytes / 2).max(0),
            dead.max(0)
        ),
        None => String::new(),
    };
    let maintain = if v.major() >= 17 {
        " OR has_table_privilege(rel.oid, 'MAINTAIN')"
    } else {
        ""
    };
    let half = (min_bytes / 2).max(0);
    format!(
        "WITH locked AS ( \
           SELECT DISTINCT l.relation AS oid FROM pg_locks l \
           WHERE l.locktype = 'relation' AND l.mode = 'AccessExclusiveLock' \
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())), \
         vac AS (SELECT DISTINCT p.relid AS oid FROM pg_stat_progress_vacuum p), \
         me AS (SELECT pg_has_role((SELECT datdba FROM pg_database WHERE datname = current_database()), 'USAGE') \
           OR coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = current_user), false) AS all_tables), \
         rel AS MATERIALIZED ( \
           SELECT c.oid, n.nspname::text AS schema, c.relname::text AS table_name, c.reltuples, c.relpages, \
             c.relfrozenxid, c.relminmxid, c.reloptions, c.relowner \
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
           WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
             AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'{only}), \
         big AS ( \
           SELECT r.oid, r.schema, r.table_name, r.reltuples FROM rel r \
           WHERE r.reltuples < 0 OR r.relpages = 0 OR r.relpages::int8 * current_setting('block_size')::int8 >= {half}), \
         cols AS ( \
           SELECT big.oid, (SELECT count(*) FROM pg_attribute a \
             WHERE a.attrelid = big.oid AND a.attnum > 0 AND NOT a.attisdropped)::int8 AS ncols, \
             (SELECT count(*) FROM pg_attribute a \
             WHERE a.attrelid = big.oid AND a.attnum > 0 AND a.attisdropped)::int8 AS ndropped FROM big WHERE big.reltuples >= 0), \
         st AS ( \
           SELECT big.oid, x.* FROM big CROSS JOIN LATERAL ( \
             SELECT count(*)::int8 AS nstats, coalesce(sum((1 - s.null_frac) * s.avg_width), 0)::float8 AS data_width, \
               coalesce(max(s.null_frac), 0)::float8 AS max_null_frac, \
               string_agg(a.attalign::text || ':' || a.attlen::text || ':' || s.avg_width::text || ':' || s.null_frac::text, ',' ORDER BY a.attnum) AS layout \
             FROM pg_stats s JOIN pg_attribute a ON a.attrelid = big.oid AND a.attname = s.attname \
             WHERE s.schemaname = big.schema AND s.tablename = big.table_name AND NOT s.inherited) x \
           WHERE big.reltuples >= 0 AND has_any_column_privilege(big.oid, 'SELECT')) \
         SELECT rel.oid::int8 AS oid, rel.schema, rel.table_name, rel.reltuples::float8 AS reltuples, \
           rel.relpages::int8 AS relpages, \
           CASE WHEN locked.oid IS NOT NULL OR big.oid IS NULL \
             THEN rel.relpages::int8 * current_setting('block_size')::int8 ELSE pg_relation_size(rel.oid) END AS bytes, \
           current_setting('block_size')::int8 AS block_size, \
           age(rel.relfrozenxid)::int8 AS xid_age, mxid_age(rel.relminmxid)::int8 AS mxid_age, \
           coalesce((SELECT option_value FROM pg_options_to_table(rel.reloptions) WHERE option_name = 'fillfactor'), '100')::int8 AS fillfactor, \
           coalesce((SELECT option_value FROM pg_options_to_table(rel.reloptions) WHERE option_name = 'autovacuum_enabled'), 'true')::bool AS autovacuum_enabled, \
           pg_get_userbyid(rel.relowner)::text AS owner, \
           (me.all_tables OR pg_has_role(rel.relowner, 'USAGE'){maintain}) AS can_maintain, \
           coalesce(cols.ncols, 0) AS ncols, coalesce(cols.ndropped, 0) AS ndropped, coalesce(st.nstats, 0) AS nstats, \
           st.layout, \
           coalesce(st.data_width, 0) AS data_width, coalesce(st.max_null_frac, 0) AS max_null_frac, \
           coalesce(pg_stat_get_live_tuples(rel.oid), 0)::int8 AS n_live_tup, \
           coalesce(pg_stat_get_dead_tuples(rel.oid), 0)::int8 AS n_dead_tup, \
           coalesce(pg_stat_get_mod_since_analyze(rel.oid), 0)::int8 AS n_mod_since_analyze, \
           coalesce(pg_stat_get_vacuum_count(rel.oid) + pg_stat_get_autovacuum_count(rel.oid), 0)::int8 AS vacuums, \
           coalesce(pg_stat_get_analyze_count(rel.oid) + pg_stat_get_autoanalyze_count(rel.oid), 0)::int8 AS analyzes, \
           greatest(pg_stat_get_last_vacuum_time(rel.oid), pg_stat_get_last_autovacuum_time(rel.oid)) AS last_vacuum, \
           greatest(pg_stat_get_last_analyze_time(rel.oid), pg_stat_get_last_autoanalyze_time(rel.oid)) AS last_analyze, \
           locked.oid IS NOT NULL AS exclusively_locked, vac.oid IS NOT NULL AS being_vacuumed \
         FROM rel CROSS JOIN me LEFT JOIN big ON big.oid = rel.oid LEFT JOIN cols ON cols.oid = rel.oid \
           LEFT JOIN st ON st.oid = rel.oid LEFT JOIN locked ON locked.oid = rel.oid \
           LEFT JOIN vac ON vac.oid = rel.oid \
         ORDER BY rel.relpages DESC"
    )
}

/// One table's counters, read before and after a maintenance statement to prove it happened
/// (a VACUUM we may not run "succeeds" with a WARNING; SKIP_LOCKED skips silently).
pub fn table_counters(oid: i64) -> String {
    format!(
        "SELECT coalesce(n_dead_tup, 0)::int8 AS n_dead_tup, coalesce(n_live_tup, 0)::int8 AS n_live_tup, \
         coalesce(vacuum_count + autovacuum_count, 0)::int8 AS vacuums, \
         coalesce(analyze_count + autoanalyze_count, 0)::int8 AS analyzes, \
         (SELECT age(relfrozenxid)::int8 FROM pg_class WHERE oid = {oid}) AS xid_age \
         FROM pg_stat_user_tables WHERE relid = {oid}"
    )
}

pub const PGSTATTUPLE_PRESENT: &str =
    "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pgstattuple') AS present";

/// Measured (visibility-map assisted) dead + free space of one table: the confirmation of an estimate.
pub fn pgstattuple_approx(oid: i64) -> String {
    format!(
        "SELECT (dead_tuple_percent + approx_free_percent)::float8 AS wasted_percent, \
         dead_tuple_percent::float8 AS dead_percent, approx_free_percent::float8 AS free_percent, \
         table_len::int8 AS bytes FROM pgstattuple_approx({oid}::oid::regclass)"
    )
}

/// The server's own word that a maintenance statement did nothing: VACUUM and ANALYZE report
/// success and only WARN when the role may not process the table ("skipping \"t\" --- only table
/// or database owner can vacuum it" up to PG15, "permission denied to vacuum \"t\", skipping it"
/// from PG16) or when SKIP_LOCKED skipped it ("skipping vacuum of \"t\" --- lock not available").
pub fn maintenance_refusal(notices: &[String]) -> Option<String> {
    notices
        .iter()
        .find(|n| {
            let l = n.to_ascii_lowercase();
            l.starts_with("warning")
                && (l.contains("skipping") || l.contains("permission denied to"))
        })
        .cloned()
}

// ---- statistics extensions and progress ----

pub const PG_STAT_STATEMENTS_PRESENT: &str =
    "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements') AS present";

/// Statements of this database whose mean execution time is above the threshold (PG13+ column
/// names), utility statements (ours included: VACUUM, ANALYZE, REINDEX) left out.
pub fn slow_queries(mean_ms: f64, min_calls: i64) -> String {
    format!(
        "SELECT queryid::text AS queryid, calls::int8 AS calls, mean_exec_time::float8 AS mean_ms, \
         total_exec_time::float8 AS total_ms, pg_get_userbyid(userid)::text AS role, \
         left(query, 200)::text AS query FROM pg_stat_statements \
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
           AND calls >= {min_calls} AND mean_exec_time > {mean_ms} \
           AND query !~* '^\\s*(set|show|begin|commit|rollback|vacuum|analyze|reindex|create|drop|alter)\\M' \
         ORDER BY total_exec_time DESC LIMIT 20"
    )
}

/// VACUUMs running now (autovacuum's and anyone's), with how long they have been at it.
pub const VACUUM_PROGRESS: &str =
    "SELECT p.pid::int8 AS pid, p.relid::regclass::text AS table_name, \
    p.phase::text AS phase, p.heap_blks_total::int8 AS heap_blks_total, \
    p.heap_blks_scanned::int8 AS heap_blks_scanned, \
    extract(epoch FROM now() - a.query_start)::float8 AS running_seconds, \
    a.backend_type::text AS backend_type \
    FROM pg_stat_progress_vacuum p LEFT JOIN pg_stat_activity a ON a.pid = p.pid \
    WHERE p.datname = current_database() ORDER BY a.query_start";

// ---- sessions ----

/// Sessions with an open transaction in this database. The lock-wait start is `pg_locks.waitstart`
/// from PG14; PG13 falls back to the state change of a session waiting on a lock.
pub fn transactions(v: PgVersion) -> String {
    let wait = if v.major() >= 14 {
        "(SELECT extract(epoch FROM now() - min(l.waitstart)) FROM pg_locks l WHERE l.pid = a.pid AND NOT l.granted)::float8"
    } else {
        "CASE WHEN a.wait_event_type = 'Lock' THEN extract(epoch FROM now() - a.state_change) END::float8"
    };
    format!(
        "SELECT a.pid::int8 AS pid, a.usename::text AS role, a.application_name::text AS application, \
         a.backend_type::text AS backend_type, a.state::text AS state, a.xact_start, \
         extract(epoch FROM now() - a.xact_start)::float8 AS xact_seconds, \
         extract(epoch FROM now() - a.state_change)::float8 AS state_seconds, \
         a.wait_event_type::text AS wait_event_type, left(a.query, 200)::text AS query, \
         (a.pid = pg_backend_pid()) AS ours, {wait} AS lock_wait_seconds, \
         age(a.backend_xmin)::int8 AS xmin_age \
         FROM pg_stat_activity a \
         WHERE a.xact_start IS NOT NULL AND a.datname = current_database() \
         ORDER BY a.xact_start"
    )
}

#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub pid: i64,
    pub role: String,
    pub application: String,
    pub backend_type: String,
    pub state: String,
    pub xact_start: Option<String>,
    pub xact_seconds: f64,
    pub state_seconds: f64,
    pub query: String,
    pub ours: bool,
    pub lock_wait_seconds: Option<f64>,
}

impl Session {
    pub fn from_row(r: &Row) -> Session {
        Session {
            pid: i64_of(r, "pid").unwrap_or(0),
            role: str_of(r, "role").unwrap_or_default(),
            application: str_of(r, "application").unwrap_or_default(),
            backend_type: str_of(r, "backend_type").unwrap_or_default(),
            state: str_of(r, "state").unwrap_or_default(),
            xact_start: str_of(r, "xact_start"),
            xact_seconds: f64_of(r, "xact_seconds").unwrap_or(0.0),
            state_seconds: f64_of(r, "state_seconds").unwrap_or(0.0),
            query: str_of(r, "query").unwrap_or_default(),
            ours: bool_of(r, "ours"),
            lock_wait_seconds: f64_of(r, "lock_wait_seconds"),
        }
    }

    /// Only application sessions count: autovacuum, walsenders and background workers never do.
    pub fn is_client(&self) -> bool {
        self.backend_type == "client backend" && !self.ours
    }
}

/// The same pid with the same transaction start, read just before signalling it.
pub fn session_xact_start(pid: i64) -> String {
    format!(
        "SELECT xact_start, backend_type::text AS backend_type FROM pg_stat_activity WHERE pid = {pid}"
    )
}

pub fn cancel_backend(pid: i64) -> String {
    format!("SELECT pg_cancel_backend({pid}) AS signalled")
}

pub fn terminate_backend(pid: i64) -> String {
    format!("SELECT pg_terminate_backend({pid}) AS signalled")
}

// ---- replication ----

/// On a primary: each standby's lag. `replay_lag` is NULL once a standby caught up on an idle
/// primary, so "sent = replay" is read as zero lag, not unknown.
pub const REPLICATION_PRIMARY: &str =
    "SELECT application_name::text AS standby, state::text AS state, \
    extract(epoch FROM replay_lag)::float8 AS replay_lag_seconds, \
    pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::float8 AS replay_gap_bytes, \
    (sent_lsn = replay_lsn) AS caught_up FROM pg_stat_replication";

/// On a standby: lag is zero when everything received is replayed (an idle primary makes
/// `now() - pg_last_xact_replay_timestamp()` grow without any lag).
pub const REPLICATION_STANDBY: &str = "SELECT \
    (pg_last_wal_receive_lsn() IS NOT NULL AND pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()) AS caught_up, \
    extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 AS since_last_replay, \
    pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::float8 AS replay_gap_bytes, \
    EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming') AS streaming";

// ---- what holds the xmin horizon (vacuum cannot remove dead tuples past it) ----

pub const XMIN_HOLDERS: &str = "SELECT 'prepared transaction' AS kind, gid::text AS name, \
    extract(epoch FROM now() - prepared)::float8 AS age_seconds, age(transaction)::int8 AS xid_age \
    FROM pg_prepared_xacts WHERE database = current_database() \
    UNION ALL \
    SELECT 'replication slot', slot_name::text, NULL::float8, \
    greatest(age(xmin), age(catalog_xmin))::int8 \
    FROM pg_replication_slots WHERE NOT active AND (xmin IS NOT NULL OR catalog_xmin IS NOT NULL)";

// ---- WAL archiving ----

/// `server_now`: archive times are on the database's clock, so their age is measured on it too.
pub const ARCHIVER: &str =
    "SELECT current_setting('archive_mode')::text AS archive_mode, now() AS server_now, \
    archived_count::int8, failed_count::int8, last_archived_time, last_failed_time, \
    last_failed_wal::text AS last_failed_wal FROM pg_stat_archiver";

// ---- maintenance statements ----

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Maintenance {
    /// Anti-wraparound first: it is the only one that can take the database down.
    Freeze,
    VacuumAnalyze,
    Analyze,
    /// Disruptive (ACCESS EXCLUSIVE for its duration): change window only, and only when allowed.
    VacuumFull,
}

impl Maintenance {
    pub fn as_str(&self) -> &'static str {
        match self {
            Maintenance::Freeze => "vacuum-freeze",
            Maintenance::VacuumAnalyze => "vacuum-analyze",
            Maintenance::Analyze => "analyze",
            Maintenance::VacuumFull => "vacuum-full",
        }
    }

    pub fn disruptive(&self) -> bool {
        matches!(self, Maintenance::VacuumFull)
    }

    /// The statement. SKIP_LOCKED never queues behind the application; TRUNCATE false avoids
    /// the ACCESS EXCLUSIVE truncation step (which also cancels standby queries).
    pub fn statement(&self, schema: &str, table: &str) -> String {
        let t = qualified(schema, table);
        match self {
            Maintenance::Freeze => {
                format!("VACUUM (FREEZE, ANALYZE, SKIP_LOCKED, TRUNCATE false) {t}")
            }
            Maintenance::VacuumAnalyze => {
                format!("VACUUM (ANALYZE, SKIP_LOCKED, TRUNCATE false) {t}")
            }
            Maintenance::Analyze => format!("ANALYZE (SKIP_LOCKED) {t}"),
            Maintenance::VacuumFull => format!("VACUUM (FULL, ANALYZE, SKIP_LOCKED) {t}"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::session::{named, url_user};
    use super::*;

    #[test]
    fn a_refused_connection_names_the_database_the_role_and_the_limit() {
        let e = named(
            crate::NbaopsError::dependency(
                "postgres",
                "FATAL: too many connections for role \"nbaops_monitor\" (SQLSTATE 53300)",
            ),
            "app",
            "monitor role (nbaops_monitor)",
        )
        .to_string();
        assert!(
            e.contains("database 'app' as the monitor role (nbaops_monitor)")
                && e.contains("CONNECTION LIMIT")
                && !e.contains("postgres failed: postgres failed"),
            "{e}"
        );
        let e = named(
            crate::NbaopsError::dependency("postgres", "FATAL: sorry, too many clients already"),
            "app",
            "maintenance role (nbaops_maintenance)",
        )
        .to_string();
        assert!(e.contains("max_connections"), "{e}");
        assert_eq!(
            url_user("postgres://nbaops_x@h:5432/app?sslmode=require"),
            "nbaops_x"
        );
        assert_eq!(url_user("postgres://h/app"), "the URL's default user");
    }

    #[test]
    fn every_session_pins_its_search_path_and_timeouts() {
        for read_only in [true, false] {
            let s = session_setup("nbaops-x", 1000, 500, read_only);
            assert!(s.contains(&"SET search_path = pg_catalog, public, pg_temp".to_string()));
            assert!(s.contains(&"SET statement_timeout = 1000".to_string()));
            assert_eq!(
                s.contains(&"SET default_transaction_read_only = on".to_string()),
                read_only
            );
        }
        assert_eq!(
            with_connect_timeout("postgres://u@h/db?sslmode=require", 5),
            "postgres://u@h/db?sslmode=require&connect_timeout=5"
        );
    }

    #[test]
    fn identifiers_are_quoted_part_by_part() {
        assert_eq!(quote_ident("plain"), "\"plain\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(
            qualified("my schema", "a.b \"c\" ü"),
            "\"my schema\".\"a.b \"\"c\"\" ü\""
        );
        assert_eq!(
            Maintenance::VacuumAnalyze.statement("public", "x\"; DROP TABLE y; --"),
            "VACUUM (ANALYZE, SKIP_LOCKED, TRUNCATE false) \"public\".\"x\"\"; DROP TABLE y; --\""
        );
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\b'"), "E'a\\\\b'''");
    }

    #[test]
    fn server_warnings_that_mean_nothing_was_done() {
        let n = |s: &str| vec!["NOTICE: something else".to_string(), s.to_string()];
        for refused in [
            "WARNING: skipping \"t\" --- only table or database owner can vacuum it",
            "WARNING: permission denied to vacuum \"t\", skipping it",
            "WARNING: skipping analyze of \"t\" --- lock not available",
        ] {
            assert_eq!(maintenance_refusal(&n(refused)).as_deref(), Some(refused));
        }
        assert_eq!(
            maintenance_refusal(&n("NOTICE: table \"t\" does not exist, skipping")),
            None
        );
        assert_eq!(maintenance_refusal(&[]), None);
    }

    #[test]
    fn version_switches() {
        let v13 = PgVersion(130011);
        let v15 = PgVersion(150004);
        let v17 = PgVersion(170000);
        assert_eq!(v15.major(), 15);
        assert!(transactions(v15).contains("waitstart"));
        assert!(!transactions(v13).contains("waitstart"));
        assert!(tables(v17, 1 << 20).contains("MAINTAIN"));
        assert!(!tables(v15, 1 << 20).contains("MAINTAIN"));
    }

    #[test]
    fn usable_connections_exclude_reserved_slots() {
        let mut r = Row::new();
        for (k, v) in [
            ("max_connections", 100),
            ("superuser_reserved", 3),
            ("reserved", 0),
            ("rds_reserved", 2),
            ("used", 76),
        ] {
            r.insert(k.into(), Value::from(v));
        }
        let c = Connections::from_row(&r);
        assert_eq!(c.usable(), 95);
        assert!((c.percent() - 80.0).abs() < 1e-9);
    }

    #[test]
    fn readers_tolerate_text_and_null() {
        let mut r = Row::new();
        r.insert("a".into(), Value::String("12.5".into()));
        r.insert("b".into(), Value::Null);
        r.insert(
            "t".into(),
            Value::String("2026-11-25T12:00:00+00:00".into()),
        );
        assert_eq!(f64_of(&r, "a"), Some(12.5));
        assert_eq!(i64_of(&r, "b"), None);
        assert!(time_of(&r, "t").is_some());
        assert!(!bool_of(&r, "missing"));
    }
}

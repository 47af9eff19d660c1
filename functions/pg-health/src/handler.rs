//! A schedule tick scans every configured database with the read-only monitor role, turns what it
//! sees into findings (`checks`), announces new or changed findings and resolves cleared ones
//! (open findings live in the ledger), keeps counter baselines between runs, emits EMF metrics,
//! and leaves pgstattuple-confirmed bloat figures in the ledger for vacuum-trigger.
//!
//! Ledger items: `pgbase#<db>/counters` (counter baseline), `pgbase#<db>/measured` (the last
//! pgstattuple_approx figure per bloat candidate), `pgopen#<db>/<dedup key>` (firing
//! findings), `pgmaint#<db>/<table oid>` (measured bloat for vacuum-trigger, 1 day),
//! read: `pgvacfail#<db>/*` (vacuum-trigger's failed statements, 1 day).

use std::collections::BTreeMap;
use std::time::Duration as StdDuration;

use chrono::Duration;
use serde_json::{json, Map, Value};

use nbaops_shared::alerts::{Alert, AlertStatus};
use nbaops_shared::config::pg::{PgConfig, PgTarget};
use nbaops_shared::deadline::{Budget, MARGIN};
use nbaops_shared::events::{classify, Inbound, ScheduledTick};
use nbaops_shared::guard::{decode_state, report_unreadable_state};
use nbaops_shared::ports::{PgConnector, Postgres};
use nbaops_shared::runtime::{Deps, Invocation, InvocationReport, RecordReport};
use nbaops_shared::sql::{self, Connections, IndexStats, Row, Server, Session, TableStats};
use nbaops_shared::{NbaopsError, Result};

use crate::checks::{self, Counters, Delta, Finding, OpenFinding};

pub const FUNCTION: &str = "pg-health";

/// Function-specific dependencies built once at init.
pub struct PgHealth {
    pub pg: PgConfig,
    pub connector: Box<dyn PgConnector>,
}

const SIGNALS: &[&str] = &[
    "unreachable",
    "connections",
    "cache-hit",
    "deadlocks",
    "replication-lag",
    "wraparound",
    "bloat",
    "long-tx",
    "idle-in-tx",
    "lock-wait",
    "vacuum-failure",
    "vacuum-progress",
    "unused-index",
    "slow-query",
    "archiver",
    "check-failed",
];

pub async fn handle(
    payload: Value,
    inv: Invocation,
    deps: &'static Deps,
    x: &'static PgHealth,
) -> Result<InvocationReport> {
    let mut report = InvocationReport {
        function: FUNCTION.into(),
        env: deps.cfg.env.to_string(),
        records: vec![],
    };
    for inbound in classify(&payload) {
        match inbound {
            Inbound::Schedule(tick) => on_tick(&tick, &inv, deps, x, &mut report).await?,
            Inbound::NotForMe(n) => report
                .records
                .push(RecordReport::not_for_me("", "unknown", n.reason)),
            other => report.records.push(RecordReport::not_for_me(
                other.event_id().unwrap_or(""),
                other.kind(),
                format!("{FUNCTION} runs on a schedule (EventBridge rule or Scheduler)"),
            )),
        }
    }
    Ok(report)
}

async fn on_tick(
    tick: &ScheduledTick,
    inv: &Invocation,
    deps: &Deps,
    x: &PgHealth,
    report: &mut InvocationReport,
) -> Result<()> {
    // `{"nbaops": {"database": "app"}}` narrows a run to one database.
    let only = tick.param("database");
    let targets: Vec<&PgTarget> =
        x.pg.databases
            .iter()
            .filter(|t| only.as_deref().is_none_or(|o| o == t.name))
            .collect();
    if targets.is_empty() {
        let mut rec = RecordReport {
            event_id: tick.event_id.clone(),
            kind: "schedule".into(),
            summary: "no database to scan".into(),
            ..Default::default()
        };
        rec.notes.push(match only {
            Some(o) => format!("'{o}' is not in pg.databases"),
            None => "pg.databases is empty".into(),
        });
        report.records.push(rec);
        return Ok(());
    }
    // A scan's longest part is a connection (connect timeout) and a statement (statement
    // timeout): a database that could not be scanned before the deadline is left, named.
    let needs = StdDuration::from_secs(x.pg.connect_timeout_seconds)
        + StdDuration::from_millis(x.pg.statement_timeout_ms);
    let mut budget = Budget::new(inv, MARGIN, needs);
    let mut left = RecordReport {
        event_id: tick.event_id.clone(),
        kind: "schedule".into(),
        ..Default::default()
    };
    for target in targets {
        if !budget.admit(format!("scan of pg:{}", target.name)) {
            continue;
        }
        let started = std::time::Instant::now();
        let scan = scan(target, inv, deps, x).await?;
        let mut rec = RecordReport {
            event_id: tick.event_id.clone(),
            kind: "schedule".into(),
            summary: format!(
                "pg:{}: {} finding(s){}",
                target.name,
                scan.findings.len(),
                if scan.unchecked.is_empty() {
                    String::new()
                } else {
                    format!(", not checked: {}", scan.unchecked.join(", "))
                }
            ),
            notes: scan.notes.clone(),
            ..Default::default()
        };
        announce(&target.name, &scan, inv, deps, &mut rec).await?;
        let mut metrics = scan.metrics.clone();
        metrics.push((
            "ScanMillis",
            started.elapsed().as_secs_f64() * 1000.0,
            "Milliseconds",
        ));
        metrics.push(("Findings", scan.findings.len() as f64, "Count"));
        println!(
            "{}",
            emf_line(&deps.cfg.env.to_string(), &target.name, &metrics)
        );
        report.records.push(rec);
    }
    if let Some(note) = budget.report() {
        // Their open findings are neither confirmed nor resolved: nothing was looked at.
        left.summary = format!("not scanned: {}", budget.left().join(", "));
        left.notes.push(note);
        report.records.push(left);
    }
    Ok(())
}

#[derive(Default)]
struct Scan {
    findings: Vec<Finding>,
    unchecked: Vec<&'static str>,
    /// Dedup keys of findings this run could neither confirm nor clear (kept open as they are).
    unjudged: Vec<String>,
    notes: Vec<String>,
    metrics: Vec<(&'static str, f64, &'static str)>,
    /// Checks that could not run, with the error: one check-failed finding at the end.
    failures: Vec<(Vec<&'static str>, String)>,
}

impl Scan {
    fn failed(&mut self, signals: &[&'static str], e: &NbaopsError) {
        self.unchecked.extend_from_slice(signals);
        self.notes
            .push(format!("{} not checked: {e}", signals.join("/")));
        self.failures.push((signals.to_vec(), e.to_string()));
    }
}

async fn first_row(pg: &dyn Postgres, sql: &str) -> Result<Row> {
    pg.query(sql)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| NbaopsError::dependency("postgres", "query returned no row"))
}

async fn scan(target: &PgTarget, inv: &Invocation, deps: &Deps, x: &PgHealth) -> Result<Scan> {
    let cfg = &x.pg;
    let db = target.name.as_str();
    let mut s = Scan::default();
    let setup = sql::session_setup(
        "nbaops-pg-health",
        cfg.statement_timeout_ms,
        cfg.lock_timeout_ms,
        true,
    );
    let env = deps.cfg.env.to_string();
    let opened = sql::open_session(
        cfg,
        &env,
        target,
        "monitor",
        deps.params.as_deref(),
        x.connector.as_ref(),
        &setup,
    )
    .await;
    let server = match opened {
        Ok(pg) => first_row(pg.as_ref(), sql::SERVER)
            .await
            .map(|r| (pg, Server::from_row(&r))),
        Err(e) => Err(e),
    };
    let (pg, server) = match server {
        Ok(v) => v,
        Err(e) => {
            // Connected but the first query failed (e.g. statement timeout): refused() tells.
            let f = checks::refused(db, &e.to_string());
            s.unchecked = SIGNALS
                .iter()
                .copied()
                .filter(|sig| *sig != f.signal)
                .collect();
            s.notes.push(format!("cannot connect: {e}"));
            s.findings.push(f);
            s.metrics.push(("Reachable", 0.0, "Count"));
            return Ok(s);
        }
    };
    let pg = pg.as_ref();
    // Database timestamps are compared on the database's clock (one clock per comparison).
    let now = server.now.unwrap_or(inv.now);
    if !server.sees_all_sessions {
        // Not silently empty: a role without pg_monitor sees other sessions as NULLs.
        s.failed(
            &["long-tx", "idle-in-tx", "lock-wait", "slow-query", "replication-lag"],
            &NbaopsError::dependency(
                "postgres",
                format!(
                    "no privilege: role {} is not a member of pg_monitor (pg_read_all_stats), so other roles' sessions, statements and replication progress are hidden",
                    server.role
                ),
            ),
        );
    }
    s.metrics.push(("Reachable", 1.0, "Count"));
    s.notes.push(format!(
        "PostgreSQL {} {} as {}",
        server.version.major(),
        if server.in_recovery {
            "standby"
        } else {
            "primary"
        },
        server.role
    ));

    match first_row(pg, sql::CONNECTIONS).await {
        Ok(r) => {
            let c = Connections::from_row(&r);
            s.metrics
                .push(("ConnectionsPercent", c.percent(), "Percent"));
            s.metrics.push(("IdleConnections", c.idle as f64, "Count"));
            s.metrics.push(("ActiveQueries", c.active as f64, "Count"));
            s.findings.extend(checks::connections(db, &c, cfg));
        }
        Err(e) => s.failed(&["connections"], &e),
    }

    // What earlier runs kept (counters, tables, measured): one ledger read.
    let pk = format!("pgbase#{db}");
    let base: BTreeMap<String, Value> = deps.ledger.query(&pk, "").await?.into_iter().collect();
    match first_row(pg, sql::DATABASE_COUNTERS).await {
        Ok(r) => {
            let cur = Counters::from_row(&r, now);
            let prev: Option<Counters> = match decode_state(base.get("counters").cloned()) {
                Ok(p) => p,
                // Loud, and taken as a first run: no rate this time, nothing acted on.
                Err(e) => {
                    let (note, _) = report_unreadable_state(
                        &deps.cfg,
                        deps.notifier.as_ref(),
                        &format!("pg:{db}"),
                        "counters baseline",
                        &e,
                        now,
                    )
                    .await?;
                    s.notes.push(note);
                    None
                }
            };
            let d = checks::delta(prev.as_ref(), &cur);
            // No rate this run: an open cache-hit/deadlocks finding is neither confirmed
            // nor resolved by it.
            match &d {
                Delta::First => {
                    s.unchecked.extend(["cache-hit", "deadlocks"]);
                    s.notes.push("first run: counter baseline taken".into())
                }
                Delta::Reset(why) => {
                    s.unchecked.extend(["cache-hit", "deadlocks"]);
                    s.notes.push(format!(
                        "counters restarted ({why}): baseline re-taken, no rates this run"
                    ))
                }
                Delta::Since { .. } => {}
            }
            let (ratio, f) = checks::cache_hit(db, &d, cfg);
            if let Some(r) = ratio {
                s.metrics.push(("CacheHitPercent", r, "Percent"));
            }
            s.findings.extend(f);
            let (rate, f) = checks::deadlocks(db, &d, cfg);
            if let Some(r) = rate {
                s.metrics.push(("DeadlocksPerHour", r, "Count"));
            }
            s.findings.extend(f);
            let data = serde_json::to_value(&cur)
                .map_err(|e| NbaopsError::InvalidEvent(format!("counters: {e}")))?;
            deps.ledger.put(&pk, "counters", &data, None).await?;
        }
        Err(e) => s.failed(&["cache-hit", "deadlocks"], &e),
    }

    match first_row(pg, sql::WRAPAROUND).await {
        Ok(r) => {
            let (age, f) = checks::wraparound(db, &r, cfg);
            s.metrics.push(("MaxXidAge", age as f64, "Count"));
            s.findings.extend(f);
        }
        Err(e) => s.failed(&["wraparound"], &e),
    }

    if server.in_recovery {
        match first_row(pg, sql::REPLICATION_STANDBY).await {
            Ok(r) => {
                let (lag, f) = checks::replication_standby(db, &r, cfg);
                s.metrics.push(("ReplicationLagSeconds", lag, "Seconds"));
                s.findings.extend(f);
            }
            Err(e) => s.failed(&["replication-lag"], &e),
        }
    } else {
        match pg.query(sql::REPLICATION_PRIMARY).await {
            Ok(rows) => {
                let (lag, fs) = checks::replication_primary(db, &rows, cfg);
                if !rows.is_empty() {
                    s.metrics.push(("ReplicationLagSeconds", lag, "Seconds"));
                }
                s.findings.extend(fs);
            }
            Err(e) => s.failed(&["replication-lag"], &e),
        }
    }

    match pg.query(&sql::transactions(server.version)).await {
        Ok(rows) => {
            let sessions: Vec<Session> = rows.iter().map(Session::from_row).collect();
            let (longest, fs) = checks::sessions(db, &sessions, cfg);
            s.metrics
                .push(("LongestTransactionSeconds", longest, "Seconds"));
            s.findings.extend(fs);
        }
        Err(e) => s.failed(&["long-tx", "idle-in-tx", "lock-wait"], &e),
    }

    let mut stalled: Vec<Finding> = vec![];
    if server.in_recovery {
        // A standby's tables are the primary's: judged (and vacuumed) there. Index usage is
        // per instance, but "unused" is decided on the primary, where the drop would happen.
        s.unchecked.push("bloat");
        s.unchecked.push("unused-index");
    } else {
        match pg
            .query(&sql::tables::tables_for_health(
                server.version,
                cfg.bloat_min_bytes,
                cfg.vacuum.min_dead_tuples,
            ))
            .await
        {
            Ok(rows) => {
                let tables: Vec<TableStats> = rows.iter().map(TableStats::from_row).collect();
                let memory = base
                    .get("measured")
                    .cloned()
                    .and_then(|v| serde_json::from_value(v).ok());
                let (mut measured, remember) = measure(pg, &tables, memory, cfg, inv, &mut s).await;
                let (fs, notes) = checks::bloat(db, &tables, &measured, cfg, now);
                s.unjudged
                    .extend(checks::bloat_unjudged(db, &tables, &measured, cfg, now));
                s.metrics.push(("BloatedTables", fs.len() as f64, "Count"));
                s.findings.extend(fs);
                s.notes.extend(notes);
                hand_off(db, &tables, &mut measured, cfg, inv, deps).await?;
                if remember {
                    let fresh = measured.iter().filter(|m| m.1.fresh);
                    let reused = measured.iter().filter(|m| !m.1.fresh);
                    let keep = checks::measurement_memory(
                        &fresh.map(|(k, v)| (*k, v.clone())).collect(),
                        &reused.map(|(k, v)| (*k, v.clone())).collect(),
                    );
                    let data = serde_json::to_value(&keep)
                        .map_err(|e| NbaopsError::InvalidEvent(format!("measured: {e}")))?;
                    deps.ledger.put(&pk, "measured", &data, None).await?;
                }
                let prev: BTreeMap<String, checks::TableSnap> =
                    match decode_state(base.get("tables").cloned()) {
                        Ok(p) => p.unwrap_or_default(),
                        // Loud, and taken as a first run: no stalled-vacuum verdict this time.
                        Err(e) => {
                            let (note, _) = report_unreadable_state(
                                &deps.cfg,
                                deps.notifier.as_ref(),
                                &format!("pg:{db}"),
                                "tables baseline",
                                &e,
                                now,
                            )
                            .await?;
                            s.notes.push(note);
                            BTreeMap::new()
                        }
                    };
                stalled = checks::stalled_vacuums(db, &prev, &tables, cfg, now);
                let snap = serde_json::to_value(checks::table_snapshot(&tables, cfg))
                    .map_err(|e| NbaopsError::InvalidEvent(format!("tables: {e}")))?;
                deps.ledger.put(&pk, "tables", &snap, None).await?;
            }
            Err(e) => s.failed(&["bloat", "vacuum-failure"], &e),
        }
        match pg
            .query(&sql::indexes::unused_index_candidates(
                cfg.unused_index_min_bytes,
            ))
            .await
        {
            Ok(rows) => {
                let indexes: Vec<IndexStats> = rows.iter().map(IndexStats::from_row).collect();
                let fs = checks::unused_indexes(db, &indexes, cfg, now);
                s.metrics.push(("UnusedIndexes", fs.len() as f64, "Count"));
                s.findings.extend(fs);
            }
            Err(e) => s.failed(&["unused-index"], &e),
        }
    }

    match first_row(pg, sql::PG_STAT_STATEMENTS_PRESENT).await {
        Ok(r) if sql::bool_of(&r, "present") => {
            match pg
                .query(&sql::slow_queries(
                    cfg.slow_query_mean_ms,
                    cfg.slow_query_min_calls,
                ))
                .await
            {
                Ok(rows) => {
                    let fs = checks::slow_queries(db, &rows, cfg);
                    s.metrics.push(("SlowQueries", fs.len() as f64, "Count"));
                    s.findings.extend(fs);
                }
                Err(e) => s.failed(&["slow-query"], &e),
            }
        }
        Ok(_) => {
            // Not an error: the extension is optional. Not checked, so nothing resolves.
            s.unchecked.push("slow-query");
            s.notes
                .push("slow queries not checked: pg_stat_statements is not installed".into());
        }
        Err(e) => s.failed(&["slow-query"], &e),
    }

    match pg.query(sql::VACUUM_PROGRESS).await {
        Ok(rows) => {
            s.metrics
                .push(("VacuumsRunning", rows.len() as f64, "Count"));
            let (fs, notes) = checks::vacuum_progress(db, &rows, cfg);
            s.findings.extend(fs);
            s.notes.extend(notes);
        }
        Err(e) => s.failed(&["vacuum-progress"], &e),
    }

    match pg.query(sql::XMIN_HOLDERS).await {
        Ok(rows) => s.findings.extend(checks::xmin_holders(db, &rows, cfg)),
        Err(e) => s.failed(&["vacuum-failure"], &e),
    }
    let since = inv.now - Duration::days(1);
    let failures: Vec<(String, String)> = deps
        .ledger
        .query(&format!("pgvacfail#{db}"), "")
        .await?
        .into_iter()
        .filter(|(_, v)| {
            v["at"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .is_some_and(|t| t >= since)
        })
        .map(|(_, v)| {
            (
                v["table"].as_str().unwrap_or("?").to_string(),
                v["error"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    s.findings
        .extend(checks::own_vacuum_failures(db, &failures, cfg));
    // One finding per table and signal: our own failures say more than the growth.
    for f in stalled {
        if !s.findings.iter().any(|g| g.dedup_key() == f.dedup_key()) {
            s.findings.push(f);
        }
    }

    match first_row(pg, sql::ARCHIVER).await {
        Ok(r) => s.findings.extend(checks::archiver(db, &r)),
        Err(e) => s.failed(&["archiver"], &e),
    }
    s.findings.extend(checks::check_failed(db, &s.failures));
    Ok(s)
}

/// Confirms bloat candidates with pgstattuple_approx when the extension is installed, at most
/// `pg.bloat.measure_per_run` per run (`checks::plan_measurements`: never measured first, then
/// the oldest figure); the others keep their figure of the last day (`memory`: ledger
/// `pgbase#<db>` / `measured`), and what had neither is said in a note. Returns the figures
/// (this run's and the kept ones) and whether they are to be remembered.
async fn measure(
    pg: &dyn Postgres,
    tables: &[TableStats],
    memory: Option<BTreeMap<String, checks::Measurement>>,
    cfg: &PgConfig,
    inv: &Invocation,
    s: &mut Scan,
) -> (BTreeMap<i64, checks::Measurement>, bool) {
    let mut out = BTreeMap::new();
    let candidates = checks::worth_measuring(tables, cfg, inv.now, usize::MAX);
    if candidates.is_empty() {
        return (out, false);
    }
    let present = first_row(pg, sql::PGSTATTUPLE_PRESENT)
        .await
        .map(|r| sql::bool_of(&r, "present"))
        .unwrap_or(false);
    if !present {
        s.notes.push(format!(
            "{} bloat candidate(s) not confirmed: pgstattuple is not installed",
            candidates.len()
        ));
        return (out, false);
    }
    let memory = memory.unwrap_or_default();
    let plan = checks::plan_measurements(&candidates, &memory, cfg.bloat_measure_per_run, inv.now);
    for t in &plan.measure {
        match first_row(pg, &sql::pgstattuple_approx(t.oid)).await {
            Ok(r) => {
                if let Some(p) = sql::f64_of(&r, "wasted_percent") {
                    let before = memory.get(&t.oid.to_string());
                    out.insert(
                        t.oid,
                        checks::Measurement {
                            percent: p,
                            at: inv.now,
                            bytes: t.bytes,
                            fresh: true,
                            handed_off: before.and_then(|m| m.handed_off),
                            previous: before.map(|m| m.percent),
                        },
                    );
                }
            }
            Err(e) => s
                .notes
                .push(format!("{}: pgstattuple_approx failed: {e}", t.name())),
        }
    }
    s.metrics.push((
        "BloatCandidatesUnmeasured",
        (plan.reuse.len() + plan.unconfirmed.len()) as f64,
        "Count",
    ));
    if !plan.reuse.is_empty() || !plan.unconfirmed.is_empty() {
        let names: Vec<String> = plan.unconfirmed.iter().take(20).map(|t| t.name()).collect();
        s.notes.push(format!(
            "bloat: {} candidate(s), {} measured this run (pg.bloat.measure_per_run = {}), {} kept an earlier figure, {} not measured yet{}{}",
            candidates.len(),
            plan.measure.len(),
            cfg.bloat_measure_per_run,
            plan.reuse.len(),
            plan.unconfirmed.len(),
            if names.is_empty() { String::new() } else { format!(": {}", names.join(", ")) },
            if plan.unconfirmed.len() > names.len() { ", ..." } else { "" }
        ));
    }
    out.extend(plan.reuse);
    (out, true)
}

/// Leaves measured bloat figures for vacuum-trigger, which still re-reads the table's
/// statistics itself before acting (a stale request can never cause a VACUUM on its own).
async fn hand_off(
    db: &str,
    tables: &[TableStats],
    measured: &mut BTreeMap<i64, checks::Measurement>,
    cfg: &PgConfig,
    inv: &Invocation,
    deps: &Deps,
) -> Result<()> {
    let expires = (inv.now + Duration::days(1)).timestamp();
    for t in tables {
        // This run's figures only, and only new ones (checks::needs_hand_off).
        let Some(m) = measured
            .get_mut(&t.oid)
            .filter(|m| checks::needs_hand_off(m, cfg.bloat_percent.warn, inv.now))
        else {
            continue;
        };
        let pct = m.percent;
        m.handed_off = Some(inv.now);
        deps.ledger
            .put(
                &format!("pgmaint#{db}"),
                &t.oid.to_string(),
                &json!({"schema": t.schema, "table": t.table, "measured_bloat": pct, "at": inv.now.to_rfc3339(), "by": FUNCTION}),
                Some(expires),
            )
            .await?;
    }
    Ok(())
}

fn runbook(signal: &str) -> &'static str {
    match signal {
        "unreachable" => "Check the instance status and security groups; RDS events tell whether a failover or reboot is under way.",
        "connections" => "Look for idle sessions and connection leaks (pg_stat_activity by application); consider a pooler before raising max_connections.",
        "cache-hit" => "Check for new sequential scans (pg_stat_statements) and the instance's memory; a class change waits for the window.",
        "deadlocks" => "Read the server log's deadlock reports; fix the lock order in the application.",
        "replication-lag" => "Check the standby's I/O and long queries on it; lag on an idle primary is 0 by this check, so this is real.",
        "wraparound" => "vacuum-trigger freezes the oldest tables first; check what blocks autovacuum (long transactions, slots, prepared transactions).",
        "bloat" => "vacuum-trigger runs VACUUM (ANALYZE); severe bloat needs VACUUM FULL or pg_repack in a change window.",
        "long-tx" | "idle-in-tx" => "Ask the owner of the session; past the critical threshold vacuum-trigger may end it if its role/application is allow-listed.",
        "lock-wait" => "Find the blocker with pg_blocking_pids() and the long transaction behind it.",
        "vacuum-failure" => "Something stops VACUUM: end the holder (prepared transaction, slot) or give the maintenance role ownership of the table.",
        "unused-index" => "Confirm on every replica (usage is per instance) and with the application owner; nbaops never drops indexes.",
        "slow-query" => "EXPLAIN (ANALYZE, BUFFERS) the statement; look for missing indexes and sequential scans.",
        "vacuum-progress" => "A long VACUUM is usually I/O-throttled or repeatedly scanning indexes; check maintenance_work_mem and cost settings.",
        "check-failed" => "A check timed out or was refused: raise pg.statement_timeout_ms or grant pg_monitor to the monitor role.",
        "archiver" => "Check archive_command / the S3 destination; WAL piles up until archiving succeeds.",
        _ => "",
    }
}

async fn announce(
    db: &str,
    scan: &Scan,
    inv: &Invocation,
    deps: &Deps,
    rec: &mut RecordReport,
) -> Result<()> {
    let pk = format!("pgopen#{db}");
    let mut open: Vec<(String, OpenFinding)> = Vec::new();
    for (k, v) in deps.ledger.query(&pk, "").await? {
        match serde_json::from_value(v) {
            Ok(o) => open.push((k, o)),
            // Not silently "not open": say so (P2), the report names the item.
            Err(e) => {
                let (note, alert) = report_unreadable_state(
                    &deps.cfg,
                    deps.notifier.as_ref(),
                    &format!("pg:{db}"),
                    &format!("open finding {k}"),
                    &e.to_string(),
                    inv.now,
                )
                .await?;
                rec.notes.push(note);
                rec.alerts.push(alert);
            }
        }
    }
    let mut t = checks::transitions(&open, &scan.findings, &scan.unchecked);
    t.resolved.retain(|(key, _)| {
        let keep = scan.unjudged.contains(key);
        if keep {
            rec.notes.push(format!(
                "{key}: not judged this run (no measurement, no trustworthy estimate): stays open"
            ));
        }
        !keep
    });
    let env = deps.cfg.env.to_string();
    for f in &t.publish {
        let alert = Alert::new(
            f.severity,
            &env,
            FUNCTION,
            &f.resource,
            f.dedup_key(),
            f.summary.clone(),
            inv.now,
        )
        .with_details(json!({"signal": f.signal, "level": f.level, "observed": f.details}))
        .with_runbook(runbook(f.signal));
        deps.alerts().publish(&alert).await?;
        let since = open
            .iter()
            .find(|(k, _)| *k == f.dedup_key())
            .map(|(_, o)| o.since)
            .unwrap_or(inv.now);
        let item = OpenFinding {
            severity: f.severity,
            resource: f.resource.clone(),
            summary: f.summary.clone(),
            since,
        };
        let data = serde_json::to_value(&item)
            .map_err(|e| NbaopsError::InvalidEvent(format!("finding: {e}")))?;
        deps.ledger.put(&pk, &f.dedup_key(), &data, None).await?;
        rec.alerts.push(alert);
    }
    for f in &t.unchanged {
        rec.notes.push(format!(
            "still {}: {} (already announced)",
            f.severity, f.summary
        ));
    }
    for (key, o) in &t.resolved {
        let mut alert = Alert::new(
            o.severity,
            &env,
            FUNCTION,
            &o.resource,
            key.clone(),
            format!("resolved: {}", o.summary),
            inv.now,
        )
        .with_details(json!({"since": o.since}));
        alert.status = AlertStatus::Resolved;
        deps.alerts().publish(&alert).await?;
        deps.ledger.delete(&pk, key).await?;
        rec.alerts.push(alert);
    }
    Ok(())
}

/// An EMF line with the database as a dimension (the shared one only has function and env).
fn emf_line(env: &str, db: &str, metrics: &[(&str, f64, &str)]) -> String {
    let mut root = Map::new();
    root.insert(
        "_aws".into(),
        json!({
            "Timestamp": nbaops_shared::clock::now().timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": "nbaops/postgres",
                "Dimensions": [["function", "env", "db"]],
                "Metrics": metrics.iter().map(|(n, _, u)| json!({"Name": n, "Unit": u})).collect::<Vec<_>>(),
            }]
        }),
    );
    root.insert("function".into(), json!(FUNCTION));
    root.insert("env".into(), json!(env));
    root.insert("db".into(), json!(db));
    for (n, v, _) in metrics {
        root.insert((*n).into(), json!(v));
    }
    Value::Object(root).to_string()
}

//! A schedule tick: for each configured database, with the maintenance role, ask the database
//! what needs doing (shared SQL + `sql::plan_maintenance`, with pg-health's pgstattuple figures
//! from the ledger), then VACUUM (FREEZE) / VACUUM (ANALYZE) / ANALYZE / VACUUM FULL one table at
//! a time, and end allow-listed runaway transactions. Every action passes the guard and is
//! audited with dead tuples before and after and its duration; a statement that returns without
//! having vacuumed (no privilege: PostgreSQL only WARNs; SKIP_LOCKED) counts as a failure.
//!
//! Below PostgreSQL 17 the maintenance role holds none of the tables' owner's rights
//! (infra/sql/02_maintenance_role.sql): a statement on a table it does not own runs between
//! `SET ROLE <owner>` and `RESET ROLE` ([`sql::roles`]), and the session never runs anything
//! else as the owner. From 17 the MAINTAIN privilege does without a role switch.
//!
//! Ledger: reads `pgmaint#<db>/<oid>` (pg-health's measured bloat), writes
//! `pgvacfail#<db>/<at>#<table>` (failures, 1 day: pg-health's VACUUM-failure signal).

use std::collections::BTreeMap;
use std::time::{Duration as StdDuration, Instant};

use chrono::Duration;
use serde_json::{json, Value};

use nbaops_shared::alerts::{Alert, AlertStatus, Severity};
use nbaops_shared::config::pg::{PgConfig, PgTarget};
use nbaops_shared::deadline::left_note;
use nbaops_shared::events::{classify, Inbound, ScheduledTick};
use nbaops_shared::guard::{in_change_window, AuditRecord, Guard, Outcome, ProposedAction};
use nbaops_shared::ports::{PgConnector, Postgres, Tags};
use nbaops_shared::runtime::{Deps, Invocation, InvocationReport, RecordReport};
use nbaops_shared::sql::roles::{as_owner, AsOwner};
use nbaops_shared::sql::{
    self, IndexNeed, IndexStats, IndexWork, Maintenance, Need, PgVersion, Row, Server, Session,
    TableStats,
};
use nbaops_shared::{NbaopsError, Result};

use crate::plan::{budget, runaway_transactions, Budget};

/// pgstatindex reads the whole index: only the few best rebuild candidates per run.
const MEASURE_INDEXES_AT_MOST: usize = 5;

pub const FUNCTION: &str = "vacuum-trigger";

pub struct VacuumTrigger {
    pub pg: PgConfig,
    pub connector: Box<dyn PgConnector>,
}

pub async fn handle(
    payload: Value,
    inv: Invocation,
    deps: &'static Deps,
    x: &'static VacuumTrigger,
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
    x: &VacuumTrigger,
    report: &mut InvocationReport,
) -> Result<()> {
    let only = tick.param("database");
    let started = Instant::now();
    for target in
        x.pg.databases
            .iter()
            .filter(|t| only.as_deref().is_none_or(|o| o == t.name))
    {
        let mut rec = RecordReport {
            event_id: tick.event_id.clone(),
            kind: "schedule".into(),
            summary: format!("maintenance of pg:{}", target.name),
            ..Default::default()
        };
        // One database down must not stop the others. A run that could not finish is alerted
        // once (the ledger remembers it is open) and resolved by the next complete run.
        let outcome = maintain(target, tick, inv, deps, x, started, &mut rec).await;
        if let Err(e) = &outcome {
            rec.notes.push(format!("not maintained: {e}"));
        }
        run_outcome(&target.name, outcome.err(), deps, inv, &mut rec).await?;
        report.records.push(rec);
    }
    if report.records.is_empty() {
        report.records.push(RecordReport {
            event_id: tick.event_id.clone(),
            kind: "schedule".into(),
            summary: "no database to maintain (pg.databases)".into(),
            ..Default::default()
        });
    }
    Ok(())
}

/// A maintenance run of `db` that ended early (connection refused, no slot left, the session
/// killed or lost): one P3 alert while it lasts, resolved by the first run that completes.
/// Ledger: `pgvacrun#<db>/open`.
async fn run_outcome(
    db: &str,
    error: Option<NbaopsError>,
    deps: &Deps,
    inv: &Invocation,
    rec: &mut RecordReport,
) -> Result<()> {
    let pk = format!("pgvacrun#{db}");
    let open = deps.ledger.get(&pk, "open").await?;
    let resource = format!("pg:{db}");
    let key = format!("pg-maintenance-run#{resource}");
    let env = deps.cfg.env.to_string();
    match (error, open) {
        (Some(e), None) => {
            let error = e.to_string();
            let text = error.strip_prefix("postgres failed: ").unwrap_or(&error);
            let summary = if text.contains(&format!("database '{db}'")) {
                format!("maintenance run stopped: {text}")
            } else {
                format!("maintenance run stopped: database '{db}' as the maintenance role: {text}")
            };
            deps.ledger
                .put(
                    &pk,
                    "open",
                    &json!({"at": inv.now.to_rfc3339(), "error": error}),
                    None,
                )
                .await?;
            let alert = Alert::new(Severity::P3, &env, FUNCTION, &resource, key, summary, inv.now)
                .with_details(json!({"error": error}))
                .with_runbook("pg-health reports whether the database is reachable; the next scheduled run retries what was left.");
            deps.alerts().publish(&alert).await?;
            rec.alerts.push(alert);
        }
        (Some(e), Some(_)) => rec.notes.push(format!(
            "maintenance run still failing (already alerted): {e}"
        )),
        (None, Some(was)) => {
            let mut alert = Alert::new(
                Severity::P3,
                &env,
                FUNCTION,
                &resource,
                key,
                format!("{db}: maintenance runs complete again"),
                inv.now,
            )
            .with_details(json!({"was": was}));
            alert.status = AlertStatus::Resolved;
            deps.alerts().publish(&alert).await?;
            rec.alerts.push(alert);
            deps.ledger.delete(&pk, "open").await?;
        }
        (None, None) => {}
    }
    Ok(())
}

async fn first_row(pg: &dyn Postgres, q: &str) -> Result<Row> {
    pg.query(q)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| NbaopsError::dependency("postgres", "query returned no row"))
}

async fn maintain(
    target: &PgTarget,
    tick: &ScheduledTick,
    inv: &Invocation,
    deps: &Deps,
    x: &VacuumTrigger,
    started: Instant,
    rec: &mut RecordReport,
) -> Result<()> {
    let cfg = &x.pg;
    let db = target.name.as_str();
    let mut setup = sql::session_setup(
        "nbaops-vacuum-trigger",
        cfg.vacuum.statement_timeout_seconds * 1000,
        cfg.vacuum.lock_timeout_ms,
        false,
    );
    setup.extend(sql::vacuum_cost(
        cfg.vacuum.cost_delay_ms,
        cfg.vacuum.cost_limit,
    ));
    let pg = sql::open_session(
        cfg,
        &deps.cfg.env.to_string(),
        target,
        "maintenance",
        deps.params.as_deref(),
        x.connector.as_ref(),
        &setup,
    )
    .await?;
    let pg = pg.as_ref();
    let server = Server::from_row(&first_row(pg, sql::SERVER).await?);
    if server.in_recovery {
        rec.notes
            .push("a standby: maintenance happens on the primary".into());
        return Ok(());
    }
    let tables: Vec<TableStats> = pg
        .query(&sql::tables::tables_for_maintenance(
            server.version,
            cfg.bloat_min_bytes,
        ))
        .await?
        .iter()
        .map(TableStats::from_row)
        .collect();
    let measured: BTreeMap<i64, f64> = deps
        .ledger
        .query(&format!("pgmaint#{db}"), "")
        .await?
        .into_iter()
        .filter_map(|(oid, v)| Some((oid.parse().ok()?, v["measured_bloat"].as_f64()?)))
        .collect();
    // Statistics ages (last analyze) are the database's timestamps: judged on its clock.
    let db_now = server.now.unwrap_or(inv.now);
    let plan = sql::plan_maintenance(&tables, cfg, &|t| measured.get(&t.oid).copied(), db_now);
    let runaway_rows = if cfg.terminate.enabled {
        pg.query(&sql::transactions(server.version)).await?
    } else {
        vec![]
    };
    let sessions: Vec<Session> = runaway_rows.iter().map(Session::from_row).collect();
    let runaway = runaway_transactions(&sessions, cfg);
    rec.summary = format!(
        "pg:{db}: {} table(s) need maintenance, {} runaway transaction(s)",
        plan.len(),
        runaway.len()
    );
    let indexes: Vec<IndexStats> = match pg.query(&sql::indexes::indexes(server.version)).await {
        Ok(rows) => rows.iter().map(IndexStats::from_row).collect(),
        Err(e) => {
            rec.notes.push(format!("indexes not examined: {e}"));
            vec![]
        }
    };
    let measured_ix = measure_indexes(pg, &indexes, cfg, deps, inv, rec).await;
    let index_plan = sql::plan_indexes(&indexes, cfg, &|ix| measured_ix.get(&ix.oid).copied());
    let (drops, rebuilds): (Vec<_>, Vec<_>) = index_plan
        .iter()
        .partition(|(_, n)| n.work == IndexWork::DropLeftover);
    let mut guard = deps
        .guard(&tick.event_id, inv)
        .with_fleet_size(tables.len() + sessions.len() + indexes.len());

    for s in runaway {
        end_transaction(db, s, pg, &mut guard, deps, inv, rec).await?;
    }
    let max_tables = cfg.vacuum.max_tables_per_run;
    let max_rebuilds = cfg.index.max_per_run;
    // What a run stopped at (drop, table, rebuild) would have done: named in the partial report.
    let left = |d: usize, t: usize, r: usize| -> Vec<String> {
        let index =
            |(ix, n): &&(&IndexStats, IndexNeed)| format!("{} {}", n.work.as_str(), ix.name());
        drops[d.min(drops.len())..]
            .iter()
            .map(index)
            .chain(
                plan.iter()
                    .take(max_tables)
                    .skip(t)
                    .map(|(t, n)| format!("{} {}", n.kind.as_str(), t.name())),
            )
            .chain(rebuilds.iter().take(max_rebuilds).skip(r).map(index))
            .collect()
    };
    let go = |rec: &mut RecordReport, at: (usize, usize, usize)| -> Option<u64> {
        let now = inv.now + Duration::from_std(started.elapsed()).unwrap_or_default();
        match budget(started.elapsed(), now, inv.deadline, &cfg.vacuum) {
            Budget::Go {
                statement_timeout_ms,
            } => Some(statement_timeout_ms),
            Budget::Stop(why) => {
                rec.notes.push(left_note(&why, &left(at.0, at.1, at.2)));
                None
            }
        }
    };
    // Leftovers of failed rebuilds first: every write still maintains them.
    for (i, (ix, need)) in drops.iter().enumerate() {
        let Some(ms) = go(rec, (i, 0, 0)) else {
            return Ok(());
        };
        pg.execute(&format!("SET statement_timeout = {ms}")).await?;
        maintain_index(
            db,
            ix,
            need,
            cfg,
            (pg, server.version),
            &mut guard,
            deps,
            inv,
            rec,
        )
        .await?;
    }
    for (i, (t, need)) in plan.iter().enumerate() {
        if i >= cfg.vacuum.max_tables_per_run {
            rec.notes.push(format!(
                "{} more table(s) left for the next run (pg.vacuum.max_tables_per_run {})",
                plan.len() - i,
                cfg.vacuum.max_tables_per_run
            ));
            break;
        }
        let Some(ms) = go(rec, (drops.len(), i, 0)) else {
            return Ok(());
        };
        pg.execute(&format!("SET statement_timeout = {ms}")).await?;
        maintain_table(
            db,
            t,
            need,
            cfg.vacuum.cooldown_seconds,
            (pg, server.version),
            &mut guard,
            deps,
            inv,
            rec,
        )
        .await?;
    }
    for (i, (ix, need)) in rebuilds.iter().enumerate() {
        if i >= cfg.index.max_per_run {
            rec.notes.push(format!(
                "{} more index rebuild(s) left for the next run (pg.index.max_per_run {})",
                rebuilds.len() - i,
                cfg.index.max_per_run
            ));
            break;
        }
        let Some(ms) = go(rec, (drops.len(), usize::MAX, i)) else {
            return Ok(());
        };
        pg.execute(&format!("SET statement_timeout = {ms}")).await?;
        maintain_index(
            db,
            ix,
            need,
            cfg,
            (pg, server.version),
            &mut guard,
            deps,
            inv,
            rec,
        )
        .await?;
    }
    Ok(())
}

/// Confirms rebuild candidates with pgstatindex when pgstattuple is installed, and only inside
/// the change window (outside it no rebuild can happen, so reading whole indexes is waste).
async fn measure_indexes(
    pg: &dyn Postgres,
    indexes: &[IndexStats],
    cfg: &PgConfig,
    deps: &Deps,
    inv: &Invocation,
    rec: &mut RecordReport,
) -> BTreeMap<i64, f64> {
    let mut out = BTreeMap::new();
    if !in_change_window(&deps.cfg.guard.window, inv.now) {
        return out;
    }
    let mut candidates: Vec<&IndexStats> = sql::plan_indexes(indexes, cfg, &|_| None)
        .into_iter()
        .filter(|(_, n)| n.work == IndexWork::Reindex)
        .map(|(ix, _)| ix)
        .take(MEASURE_INDEXES_AT_MOST)
        .collect();
    // An estimate this role cannot make (pg_stats shows a column only to a role that may read
    // the table, which the maintenance role may not): measure the largest such btree indexes
    // instead of never rebuilding them.
    let mut blind: Vec<&IndexStats> = indexes
        .iter()
        .filter(|ix| ix.access_method == "btree" && ix.valid && !ix.being_built)
        .filter(|ix| ix.bytes >= cfg.index.min_bytes)
        .filter(|ix| {
            matches!(sql::indexes::index_bloat_estimate(ix, cfg),
                sql::BloatEstimate::Unreliable { ref reason } if reason.starts_with("pg_stats covers"))
        })
        .filter(|ix| !candidates.iter().any(|c| c.oid == ix.oid))
        .collect();
    blind.sort_by_key(|ix| std::cmp::Reverse(ix.bytes));
    let room = MEASURE_INDEXES_AT_MOST.saturating_sub(candidates.len());
    candidates.extend(blind.into_iter().take(room));
    if candidates.is_empty() {
        return out;
    }
    let present = first_row(pg, sql::PGSTATTUPLE_PRESENT)
        .await
        .map(|r| sql::bool_of(&r, "present"))
        .unwrap_or(false);
    if !present {
        return out;
    }
    for ix in candidates {
        match first_row(pg, &sql::indexes::pgstatindex(ix.oid)).await {
            Ok(r) => {
                let density = sql::f64_of(&r, "avg_leaf_density").unwrap_or(f64::NAN);
                if let Some(p) = sql::index_bloat_measured(density, ix.fillfactor) {
                    out.insert(ix.oid, p);
                }
            }
            Err(e) => rec
                .notes
                .push(format!("{}: pgstatindex failed: {e}", ix.name())),
        }
    }
    out
}

async fn counters(pg: &dyn Postgres, oid: i64) -> Result<Row> {
    first_row(pg, &sql::table_counters(oid)).await
}

fn counter(r: &Row, k: &str) -> i64 {
    sql::i64_of(r, k).unwrap_or(0)
}

/// What a maintenance statement did: the inner result is the statement's. An outer `Err` means
/// the session could not be returned to our own role (RESET ROLE failed): it may still act as
/// the table's owner and must run nothing else.
type Ran<T> = Result<Result<T>>;

/// Runs one maintenance statement, as the relation's owner when `s` says so: SET ROLE, the
/// statement, then RESET ROLE whether the statement (or the SET ROLE) failed or not.
async fn execute_as(pg: &dyn Postgres, s: &AsOwner) -> Ran<u64> {
    let ran = match &s.set_role {
        Some(set_role) => match pg.execute(set_role).await {
            Ok(_) => pg.execute(&s.statement).await,
            Err(e) => Err(e),
        },
        None => pg.execute(&s.statement).await,
    };
    if let Some(reset) = s.reset_role {
        if let Err(e) = pg.execute(reset).await {
            // The statement's own error first: a killed backend's "terminating connection due
            // to administrator command" is the cause, the failed RESET ROLE its consequence.
            let first = match &ran {
                Ok(_) => "returned".to_string(),
                Err(se) => format!("failed: {}", message(se)),
            };
            return Err(NbaopsError::dependency(
                "postgres",
                format!(
                    "`{}` {first}; then {reset} failed, the session is given up (it may still act as the owner): {}",
                    s.statement,
                    message(&e)
                ),
            ));
        }
    }
    Ok(ran)
}

/// An error's words without the `postgres failed: ` its wrapping adds at each level.
fn message(e: &NbaopsError) -> String {
    match e {
        NbaopsError::Dependency { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// The statement as people read it (audit, alerts): with its role switch when there is one.
fn shown(s: &AsOwner) -> String {
    s.statements().join("; ")
}

/// Splits a [`Ran`] for the audit: the outcome to record, and the error that must end the run.
fn settle<T>(ran: Ran<T>) -> (Result<T>, Option<NbaopsError>) {
    match ran {
        Ok(outcome) => (outcome, None),
        Err(lost) => (
            Err(NbaopsError::dependency("postgres", message(&lost))),
            Some(lost),
        ),
    }
}

/// Runs the statement and proves it happened: the table's vacuum (or analyze) count must move.
/// PG13/14 report statistics through the collector, so one late re-read is allowed.
async fn run_maintenance(
    pg: &dyn Postgres,
    v: PgVersion,
    t: &TableStats,
    kind: Maintenance,
    before: &Row,
) -> Ran<Row> {
    let _ = pg.take_notices();
    let s = as_owner(
        v,
        t.set_role.as_deref(),
        kind.statement(&t.schema, &t.table),
    );
    if let Err(e) = execute_as(pg, &s).await? {
        return Ok(Err(e));
    }
    Ok(prove_maintenance(pg, t, kind, before).await)
}

async fn prove_maintenance(
    pg: &dyn Postgres,
    t: &TableStats,
    kind: Maintenance,
    before: &Row,
) -> Result<Row> {
    if let Some(warning) = sql::maintenance_refusal(&pg.take_notices()) {
        return Err(NbaopsError::dependency(
            "postgres",
            format!(
                "{} of {} did nothing, the server said: {warning} (owner {}, our role may maintain it: {}{})",
                kind.as_str(),
                t.name(),
                t.owner,
                t.can_maintain,
                t.set_role
                    .as_deref()
                    .map(|r| format!(", as {r} after SET ROLE"))
                    .unwrap_or_default()
            ),
        ));
    }
    let field = if kind == Maintenance::Analyze {
        "analyzes"
    } else {
        "vacuums"
    };
    let mut after = counters(pg, t.oid).await?;
    if counter(&after, field) <= counter(before, field) {
        tokio::time::sleep(StdDuration::from_millis(1000)).await;
        after = counters(pg, t.oid).await?;
    }
    if counter(&after, field) <= counter(before, field) {
        return Err(NbaopsError::dependency(
            "postgres",
            format!(
                "{} returned but did not run on {} (skipped: locked by another session, or not permitted)",
                kind.as_str(),
                t.name()
            ),
        ));
    }
    Ok(after)
}

#[allow(clippy::too_many_arguments)]
async fn maintain_table(
    db: &str,
    t: &TableStats,
    need: &Need,
    cooldown_seconds: i64,
    (pg, v): (&dyn Postgres, PgVersion),
    guard: &mut Guard<'_>,
    deps: &Deps,
    inv: &Invocation,
    rec: &mut RecordReport,
) -> Result<()> {
    let resource = format!("pg:{db}/{}", t.name());
    let before = counters(pg, t.oid).await?;
    let statement = shown(&as_owner(
        v,
        t.set_role.as_deref(),
        need.kind.statement(&t.schema, &t.table),
    ));
    let mut action = ProposedAction {
        action: format!("pg.{}", need.kind.as_str()),
        resource: resource.clone(),
        tags: Tags::new(),
        reason: need.reason.clone(),
        // VACUUM FULL outside the window only for a P1 (none of ours is): it waits.
        severity: if need.kind == Maintenance::Freeze {
            Severity::P2
        } else {
            Severity::P3
        },
        disruptive: need.kind.disruptive(),
        bounds: None,
        cooldown_key: "pg.maintenance".into(),
        cooldown_seconds,
        before: json!({"n_dead_tup": counter(&before, "n_dead_tup"), "n_live_tup": counter(&before, "n_live_tup"), "xid_age": counter(&before, "xid_age"), "statement": statement}),
        after: Value::Null,
    };
    let decision = guard.check(&action).await?;
    let mut lost = None;
    let result = if decision.proceed {
        let started = Instant::now();
        let (outcome, gone) = settle(run_maintenance(pg, v, t, need.kind, &before).await);
        lost = gone;
        let ms = started.elapsed().as_millis() as u64;
        match &outcome {
            Ok(after) => {
                action.after = json!({"n_dead_tup": counter(after, "n_dead_tup"), "n_live_tup": counter(after, "n_live_tup"), "xid_age": counter(after, "xid_age"), "duration_ms": ms})
            }
            Err(_) => action.after = json!({"duration_ms": ms}),
        }
        Some(outcome.map(|_| ()).map_err(|e| e.to_string()))
    } else {
        None
    };
    let audit = guard.finish(&action, &decision, result).await?;
    if audit.outcome == Outcome::Acted {
        deps.ledger
            .delete(&format!("pgmaint#{db}"), &t.oid.to_string())
            .await?;
    }
    let done = format!(
        "{}: {} done, dead tuples {} -> {}",
        t.name(),
        need.kind.as_str(),
        action.before["n_dead_tup"],
        action.after["n_dead_tup"]
    );
    let what = Done {
        resource: &resource,
        subject: t.name(),
        kind: need.kind.as_str(),
        reason: &need.reason,
        statement,
        done,
    };
    report(db, &what, &action, audit, deps, inv, rec).await?;
    lost.map_or(Ok(()), Err)
}

/// What one maintenance action was, for its note, alert and failure record.
struct Done<'a> {
    resource: &'a str,
    /// `schema.table` or `schema.index`: the failure record's key, as pg-health reports it.
    subject: String,
    kind: &'static str,
    reason: &'a str,
    statement: String,
    /// The success summary.
    done: String,
}

/// The note, the P4 "done" or P3 "failed" alert, and for failures the `pgvacfail` record
/// pg-health turns into its VACUUM-failure signal.
async fn report(
    db: &str,
    d: &Done<'_>,
    action: &ProposedAction,
    audit: AuditRecord,
    deps: &Deps,
    inv: &Invocation,
    rec: &mut RecordReport,
) -> Result<()> {
    let w = audit.outcome_words();
    rec.notes
        .push(format!("{}: {} ({}): {w}", d.resource, d.kind, d.reason));
    let env = deps.cfg.env.to_string();
    let key = format!("pg-maintenance#{}", d.resource);
    match audit.outcome {
        Outcome::Acted => {
            let alert = Alert::new(
                Severity::P4,
                &env,
                FUNCTION,
                d.resource,
                key,
                d.done.clone(),
                inv.now,
            )
            .with_action(format!("{}: {w}", d.statement))
            .with_details(json!({"before": action.before, "after": action.after}));
            deps.alerts().publish(&alert).await?;
            rec.alerts.push(alert);
        }
        Outcome::Failed => {
            let error = audit.error.clone().unwrap_or_default();
            deps.ledger
                .put(
                    &format!("pgvacfail#{db}"),
                    &format!("{}#{}", inv.now.to_rfc3339(), d.subject),
                    &json!({"table": d.subject, "action": d.kind, "error": error, "at": inv.now.to_rfc3339()}),
                    Some((inv.now + Duration::days(1)).timestamp()),
                )
                .await?;
            let alert = Alert::new(
                Severity::P3,
                &env,
                FUNCTION,
                d.resource,
                key,
                format!("{}: {} failed: {error}", d.subject, d.kind),
                inv.now,
            )
            .with_details(json!({"before": action.before, "after": action.after}))
            .with_runbook("Check the maintenance role may act as the table's owner (PG<=16: a member through infra/sql/02_maintenance_role.sql, used with SET ROLE) or has MAINTAIN (PG17+: pg_maintain), and what holds its locks.");
            deps.alerts().publish(&alert).await?;
            rec.alerts.push(alert);
        }
        _ => {}
    }
    rec.actions.push(audit);
    Ok(())
}

/// Runs an index statement and proves its effect: a dropped leftover is gone, a rebuilt index
/// exists, is valid, and its new size is recorded.
async fn run_index_work(
    pg: &dyn Postgres,
    v: PgVersion,
    ix: &IndexStats,
    work: IndexWork,
) -> Ran<Row> {
    let _ = pg.take_notices();
    let s = as_owner(
        v,
        ix.set_role.as_deref(),
        work.statement(&ix.schema, &ix.index),
    );
    if let Err(e) = execute_as(pg, &s).await? {
        return Ok(Err(e));
    }
    Ok(prove_index_work(pg, ix, work).await)
}

async fn prove_index_work(pg: &dyn Postgres, ix: &IndexStats, work: IndexWork) -> Result<Row> {
    if let Some(warning) = sql::maintenance_refusal(&pg.take_notices()) {
        return Err(NbaopsError::dependency(
            "postgres",
            format!(
                "{} of {} did nothing, the server said: {warning}",
                work.as_str(),
                ix.name()
            ),
        ));
    }
    let rows = pg
        .query(&sql::indexes::index_size(&ix.schema, &ix.index))
        .await?;
    match (work, rows.into_iter().next()) {
        (IndexWork::DropLeftover, None) => Ok(Row::new()),
        (IndexWork::DropLeftover, Some(_)) => Err(NbaopsError::dependency(
            "postgres",
            format!("{} still exists after DROP INDEX", ix.name()),
        )),
        (IndexWork::Reindex, Some(r)) if sql::bool_of(&r, "valid") => Ok(r),
        (IndexWork::Reindex, _) => Err(NbaopsError::dependency(
            "postgres",
            format!(
                "{} is missing or invalid after REINDEX CONCURRENTLY",
                ix.name()
            ),
        )),
    }
}

#[allow(clippy::too_many_arguments)]
async fn maintain_index(
    db: &str,
    ix: &IndexStats,
    need: &IndexNeed,
    cfg: &PgConfig,
    (pg, v): (&dyn Postgres, PgVersion),
    guard: &mut Guard<'_>,
    deps: &Deps,
    inv: &Invocation,
    rec: &mut RecordReport,
) -> Result<()> {
    let resource = format!("pg:{db}/index:{}", ix.name());
    let statement = shown(&as_owner(
        v,
        ix.set_role.as_deref(),
        need.work.statement(&ix.schema, &ix.index),
    ));
    let mut action = ProposedAction {
        action: format!("pg.{}", need.work.as_str()),
        resource: resource.clone(),
        tags: Tags::new(),
        reason: need.reason.clone(),
        severity: Severity::P3,
        // REINDEX CONCURRENTLY still rewrites the whole index and waits on every transaction:
        // change window only. Dropping an invalid leftover is cheap and safe at any time.
        disruptive: need.work.disruptive(),
        bounds: None,
        cooldown_key: "pg.index".into(),
        cooldown_seconds: cfg.vacuum.cooldown_seconds,
        before: json!({"bytes": ix.bytes, "valid": ix.valid, "table": format!("{}.{}", ix.schema, ix.table), "statement": statement}),
        after: Value::Null,
    };
    let decision = guard.check(&action).await?;
    let mut lost = None;
    let result = if decision.proceed {
        let started = Instant::now();
        let (outcome, gone) = settle(run_index_work(pg, v, ix, need.work).await);
        lost = gone;
        let ms = started.elapsed().as_millis() as u64;
        action.after = match &outcome {
            Ok(r) => json!({"bytes": sql::i64_of(r, "bytes").unwrap_or(0), "duration_ms": ms}),
            Err(_) => json!({"duration_ms": ms}),
        };
        Some(outcome.map(|_| ()).map_err(|e| e.to_string()))
    } else {
        None
    };
    let audit = guard.finish(&action, &decision, result).await?;
    let done = match need.work {
        IndexWork::DropLeftover => format!("{}: invalid leftover index dropped", ix.name()),
        IndexWork::Reindex => format!(
            "{}: rebuilt, {} -> {} bytes",
            ix.name(),
            ix.bytes,
            action.after["bytes"]
        ),
    };
    let what = Done {
        resource: &resource,
        subject: ix.name(),
        kind: need.work.as_str(),
        reason: &need.reason,
        statement,
        done,
    };
    report(db, &what, &action, audit, deps, inv, rec).await?;
    lost.map_or(Ok(()), Err)
}

/// Cancel, then terminate, re-checking before each signal that the pid still runs the same
/// transaction (a pid is reused; a transaction that ended on its own must not cost a session).
async fn signal_runaway(pg: &dyn Postgres, s: &Session) -> Result<&'static str> {
    let same = |rows: Vec<Row>| {
        rows.first().is_some_and(|r| {
            sql::str_of(r, "xact_start") == s.xact_start
                && sql::str_of(r, "backend_type").as_deref() == Some("client backend")
        })
    };
    if !same(pg.query(&sql::session_xact_start(s.pid)).await?) {
        return Ok("transaction already ended: nothing signalled");
    }
    pg.query(&sql::cancel_backend(s.pid)).await?;
    tokio::time::sleep(StdDuration::from_millis(1000)).await;
    if !same(pg.query(&sql::session_xact_start(s.pid)).await?) {
        return Ok("cancelled");
    }
    let r = first_row(pg, &sql::terminate_backend(s.pid)).await?;
    if sql::bool_of(&r, "signalled") {
        Ok("terminated")
    } else {
        Err(NbaopsError::dependency(
            "postgres",
            format!("pg_terminate_backend({}) returned false", s.pid),
        ))
    }
}

async fn end_transaction(
    db: &str,
    s: &Session,
    pg: &dyn Postgres,
    guard: &mut Guard<'_>,
    deps: &Deps,
    inv: &Invocation,
    rec: &mut RecordReport,
) -> Result<()> {
    let resource = format!("pg:{db}/pid:{}", s.pid);
    let mut action = ProposedAction {
        action: "pg.end_transaction".into(),
        resource: resource.clone(),
        tags: Tags::new(),
        reason: format!(
            "transaction open {:.0} s (> pg.long_tx.crit_seconds), role {}, application '{}'",
            s.xact_seconds, s.role, s.application
        ),
        severity: Severity::P2,
        disruptive: false,
        bounds: None,
        cooldown_key: "pg.end_transaction".into(),
        cooldown_seconds: 0,
        before: json!({"pid": s.pid, "role": s.role, "application": s.application, "state": s.state, "xact_start": s.xact_start, "xact_seconds": s.xact_seconds, "query": s.query}),
        after: Value::Null,
    };
    let decision = guard.check(&action).await?;
    let result = if decision.proceed {
        let r = signal_runaway(pg, s).await;
        if let Ok(how) = &r {
            action.after = json!({"result": how});
        }
        Some(r.map(|_| ()).map_err(|e| e.to_string()))
    } else {
        None
    };
    let audit = guard.finish(&action, &decision, result).await?;
    let w = audit.outcome_words();
    rec.notes.push(format!("{resource}: end transaction: {w}"));
    if matches!(audit.outcome, Outcome::Acted | Outcome::Failed) {
        let alert = Alert::new(
            if audit.outcome == Outcome::Failed {
                Severity::P2
            } else {
                Severity::P3
            },
            &deps.cfg.env.to_string(),
            FUNCTION,
            &resource,
            format!("pg-end-transaction#{resource}"),
            format!(
                "{db}: runaway transaction of pid {} ({}, '{}', {:.0} min): {}",
                s.pid,
                s.role,
                s.application,
                s.xact_seconds / 60.0,
                action.after["result"].as_str().unwrap_or(&w)
            ),
            inv.now,
        )
        .with_details(json!({"before": action.before, "after": action.after}));
        deps.alerts().publish(&alert).await?;
        rec.alerts.push(alert);
    }
    rec.actions.push(audit);
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records every statement; those starting with one of `fail` fail.
    #[derive(Default)]
    struct Recorder {
        executed: Mutex<Vec<String>>,
        fail: Vec<&'static str>,
    }

    #[async_trait::async_trait]
    impl Postgres for Recorder {
        async fn query(&self, _sql: &str) -> Result<Vec<Row>> {
            Ok(vec![])
        }
        async fn execute(&self, sql: &str) -> Result<u64> {
            self.executed.lock().unwrap().push(sql.to_string());
            if self.fail.iter().any(|f| sql.starts_with(f)) {
                return Err(NbaopsError::dependency(
                    "postgres",
                    format!("{sql}: refused"),
                ));
            }
            Ok(0)
        }
    }

    impl Recorder {
        fn failing(fail: &[&'static str]) -> Recorder {
            Recorder {
                fail: fail.to_vec(),
                ..Default::default()
            }
        }
        fn executed(&self) -> Vec<String> {
            self.executed.lock().unwrap().clone()
        }
    }

    const V15: PgVersion = PgVersion(150004);
    const V16: PgVersion = PgVersion(160002);
    const V17: PgVersion = PgVersion(170000);
    const VACUUM: &str = "VACUUM (ANALYZE, SKIP_LOCKED, TRUNCATE false) \"public\".\"games\"";

    fn vacuum(v: PgVersion, owner: Option<&str>) -> AsOwner {
        as_owner(
            v,
            owner,
            Maintenance::VacuumAnalyze.statement("public", "games"),
        )
    }

    #[tokio::test]
    async fn a_table_we_do_not_own_is_maintained_between_set_role_and_reset_role() {
        for v in [V15, V16] {
            let pg = Recorder::default();
            let ran = execute_as(&pg, &vacuum(v, Some("nbaops_app"))).await;
            assert!(matches!(ran, Ok(Ok(_))), "{ran:?}");
            assert_eq!(
                pg.executed(),
                vec!["SET ROLE \"nbaops_app\"", VACUUM, "RESET ROLE"]
            );
        }
        // 17+: MAINTAIN (pg_maintain), no role switch even if a row named one.
        let pg = Recorder::default();
        let ran = execute_as(&pg, &vacuum(V17, Some("nbaops_app"))).await;
        assert!(matches!(ran, Ok(Ok(_))));
        assert_eq!(pg.executed(), vec![VACUUM]);
        // Our own table (or the owner's rights held as ourselves): the statement alone.
        let pg = Recorder::default();
        execute_as(&pg, &vacuum(V15, None)).await.unwrap().unwrap();
        assert_eq!(pg.executed(), vec![VACUUM]);
    }

    #[tokio::test]
    async fn reset_role_runs_even_when_the_statement_or_the_switch_fails() {
        // The statement fails (statement_timeout, lock_timeout...): recorded as its failure, and
        // the session is back in our role before anything else runs.
        let pg = Recorder::failing(&["VACUUM"]);
        let ran = execute_as(&pg, &vacuum(V15, Some("nbaops_app"))).await;
        let inner = ran.unwrap();
        assert!(inner.unwrap_err().to_string().contains("refused"));
        assert_eq!(
            pg.executed(),
            vec!["SET ROLE \"nbaops_app\"", VACUUM, "RESET ROLE"]
        );
        // SET ROLE refused (membership revoked): the statement is not run as ourselves instead.
        let pg = Recorder::failing(&["SET ROLE"]);
        let ran = execute_as(&pg, &vacuum(V16, Some("nbaops_app"))).await;
        assert!(ran.unwrap().is_err());
        assert_eq!(pg.executed(), vec!["SET ROLE \"nbaops_app\"", "RESET ROLE"]);
    }

    #[tokio::test]
    async fn a_failed_reset_role_gives_the_session_up() {
        let pg = Recorder::failing(&["RESET ROLE"]);
        let ran = execute_as(&pg, &vacuum(V15, Some("nbaops_app"))).await;
        let lost = ran.unwrap_err().to_string();
        assert!(
            lost.contains("RESET ROLE") && lost.contains("given up"),
            "{lost}"
        );
        // The action is recorded as failed, and the error ends the run for this database.
        let (outcome, stop) = settle::<u64>(Err(NbaopsError::dependency("postgres", lost)));
        assert!(outcome.is_err() && stop.is_some());
        // Both failed (the backend was killed mid-statement): the statement's error is the
        // cause the audit shows, first, and the wrapping is not repeated.
        let pg = Recorder::failing(&["VACUUM", "RESET ROLE"]);
        let ran = execute_as(&pg, &vacuum(V15, Some("nbaops_app"))).await;
        let (outcome, _) = settle::<u64>(ran);
        let audit = outcome.unwrap_err().to_string();
        assert!(
            audit.starts_with(&format!(
                "postgres failed: `{VACUUM}` failed: {VACUUM}: refused; then RESET ROLE failed"
            )),
            "{audit}"
        );
        assert_eq!(audit.matches("postgres failed").count(), 1, "{audit}");
    }

    #[tokio::test]
    async fn run_maintenance_switches_only_for_the_statement() {
        // The proof (counters) is read back in our own role, after RESET ROLE.
        let pg = Recorder::default();
        let mut t = table("nbaops_app", Some("nbaops_app"));
        let ran = run_maintenance(&pg, V15, &t, Maintenance::VacuumAnalyze, &Row::new()).await;
        // The recorder returns no counter rows: the statement's outcome is a failure to prove it.
        assert!(ran.unwrap().is_err());
        assert_eq!(
            pg.executed(),
            vec!["SET ROLE \"nbaops_app\"", VACUUM, "RESET ROLE"]
        );
        t.set_role = None;
        let pg = Recorder::default();
        let _ = run_maintenance(&pg, V15, &t, Maintenance::VacuumAnalyze, &Row::new()).await;
        assert_eq!(pg.executed(), vec![VACUUM]);
        // The audit shows the switch.
        assert_eq!(
            shown(&vacuum(V15, Some("nbaops_app"))),
            format!("SET ROLE \"nbaops_app\"; {VACUUM}; RESET ROLE")
        );
    }

    fn table(owner: &str, set_role: Option<&str>) -> TableStats {
        let mut r = Row::new();
        r.insert("oid".into(), 16384.into());
        r.insert("schema".into(), "public".into());
        r.insert("table_name".into(), "games".into());
        r.insert("owner".into(), owner.into());
        r.insert("can_maintain".into(), false.into());
        if let Some(s) = set_role {
            r.insert("set_role".into(), s.into());
        }
        TableStats::from_row(&r)
    }
}

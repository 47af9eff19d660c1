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
use std::time::Instant;

use chrono::Duration;
use serde_json::{json, Value};

use nbaops_shared::adapters::{pg_access, AwsClients};
use nbaops_shared::alerts::{AlertStatus, Severity};
use nbaops_shared::config::approval::Policy;
use nbaops_shared::config::pg::{PgConfig, PgTarget};
use nbaops_shared::deadline::left_note;
use nbaops_shared::events::{Inbound, ScheduledTick};
use nbaops_shared::guard::{in_change_window, AuditRecord, Explanation, Outcome, ProposedAction};
use nbaops_shared::ports::{PgConnector, Postgres, Tags};
use nbaops_shared::runtime::{Ctx, Deps, Function, InvocationReport, Live, RecordReport, Work};
use nbaops_shared::sql::roles::as_owner;
use nbaops_shared::sql::{
    self, IndexNeed, IndexStats, IndexWork, Maintenance, Need, Row, Server, Session, TableStats,
};
use nbaops_shared::{NbaopsError, Result};

use crate::plan::{budget, runaway_transactions, unlisted_runaways, Budget};
use crate::runaway::{end_transaction, END_UNLISTED};
use crate::statement::{
    counter, counters, guarded, prove_index_work, prove_maintenance, shown, DbSession,
};

/// pgstatindex reads the whole index: only the few best rebuild candidates per run.
const MEASURE_INDEXES_AT_MOST: usize = 5;

pub const FUNCTION: &str = "vacuum-trigger";

/// The `pg` section and the connector, built once at init.
pub struct VacuumTrigger {
    pub pg: PgConfig,
    pub connector: Box<dyn PgConnector>,
}

impl Function for VacuumTrigger {
    const NAME: &'static str = FUNCTION;
    const TAKES: &'static str = "its own schedule ({\"nbaops\": {\"task\": \"vacuum-trigger\"}})";
    type Reply = InvocationReport;

    async fn init(deps: &Deps, _aws: &AwsClients) -> Result<Self> {
        let (pg, connector) = pg_access(&deps.cfg.settings)?;
        Ok(VacuumTrigger { pg, connector })
    }

    /// Its own tick becomes one record per database ([`Function::records`]); anything else is
    /// not for it.
    async fn on(&self, inbound: Inbound, ctx: &Ctx<'_>) -> Result<RecordReport> {
        Ok(ctx.not_mine(&inbound))
    }

    /// See [`crate::approved`]: VACUUM FULL, REINDEX and ending a runaway not on the allow-list.
    async fn live(&self, action: &ProposedAction, ctx: &Ctx<'_>) -> Result<Live> {
        crate::approved::live(self, action, ctx).await
    }

    async fn apply(&self, action: &ProposedAction, ctx: &Ctx<'_>) -> Result<()> {
        crate::approved::apply(self, action, ctx).await
    }

    async fn records(&self, inbound: Inbound, ctx: &Ctx<'_>) -> Result<Vec<RecordReport>> {
        match inbound {
            Inbound::Schedule(tick) if tick.task().as_deref() == Some(FUNCTION) => {
                self.on_tick(&tick, ctx).await
            }
            other => Ok(vec![self.on(other, ctx).await?]),
        }
    }
}

impl VacuumTrigger {
    async fn on_tick(&self, tick: &ScheduledTick, ctx: &Ctx<'_>) -> Result<Vec<RecordReport>> {
        if let Some(kind) = tick.param("emergency") {
            return self.on_emergency(tick, &kind, ctx).await;
        }
        let only = tick.param("database");
        let started = Instant::now();
        let mut records = vec![];
        for target in self
            .pg
            .databases
            .iter()
            .filter(|t| only.as_deref().is_none_or(|o| o == t.name))
        {
            let mut w = ctx.work(
                &tick.event_id,
                "schedule",
                format!("maintenance of pg:{}", target.name),
            );
            // One database down must not stop the others. A run that could not finish is
            // alerted once (the ledger remembers it is open) and resolved by the next complete run.
            let outcome = self.maintain(target, started, &mut w).await;
            if let Err(e) = &outcome {
                w.note(format!("not maintained: {e}"));
            }
            run_outcome(&target.name, outcome.err(), &mut w).await?;
            records.push(w.rec);
        }
        if records.is_empty() {
            let w = ctx.work(
                &tick.event_id,
                "schedule",
                "no database to maintain (pg.databases)",
            );
            records.push(w.rec);
        }
        Ok(records)
    }
}

/// A maintenance run of `db` that ended early (connection refused, no slot left, the session
/// killed or lost): one P3 alert while it lasts, resolved by the first run that completes.
/// Ledger: `pgvacrun#<db>/open`.
async fn run_outcome(db: &str, error: Option<NbaopsError>, w: &mut Work<'_>) -> Result<()> {
    let ctx = w.ctx;
    let ledger = &ctx.deps.ledger;
    let pk = format!("pgvacrun#{db}");
    let open = ledger.get(&pk, "open").await?;
    let resource = format!("pg:{db}");
    let key = format!("pg-maintenance-run#{resource}");
    match (error, open) {
        (Some(e), None) => {
            let error = e.to_string();
            let text = error.strip_prefix("postgres failed: ").unwrap_or(&error);
            let summary = if text.contains(&format!("database '{db}'")) {
                format!("maintenance run stopped: {text}")
            } else {
                format!("maintenance run stopped: database '{db}' as the maintenance role: {text}")
            };
            ledger
                .put(
                    &pk,
                    "open",
                    &json!({"at": ctx.now().to_rfc3339(), "error": error}),
                    None,
                )
                .await?;
            let alert = ctx
                .alert(Severity::P3, &resource, key, summary)
                .with_details(json!({"error": error}))
                .with_runbook("pg-health reports whether the database is reachable; the next scheduled run retries what was left.");
            w.raise(alert).await?;
        }
        (Some(e), Some(_)) => w.note(format!(
            "maintenance run still failing (already alerted): {e}"
        )),
        (None, Some(was)) => {
            let mut alert = ctx
                .alert(
                    Severity::P3,
                    &resource,
                    key,
                    format!("{db}: maintenance runs complete again"),
                )
                .with_details(json!({"was": was}));
            alert.status = AlertStatus::Resolved;
            w.raise(alert).await?;
            ledger.delete(&pk, "open").await?;
        }
        (None, None) => {}
    }
    Ok(())
}

pub async fn first_row(pg: &dyn Postgres, q: &str) -> Result<Row> {
    pg.query(q)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| NbaopsError::dependency("postgres", "query returned no row"))
}

impl VacuumTrigger {
    /// The maintenance session on `target` (application name, statement and lock timeouts, the
    /// vacuum cost limits) and what the server is: every statement of this function, the
    /// approved ones included, runs in such a session.
    pub(crate) async fn open(
        &self,
        target: &PgTarget,
        ctx: &Ctx<'_>,
    ) -> Result<(Box<dyn Postgres>, Server)> {
        let cfg = &self.pg;
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
            ctx,
            cfg,
            self.connector.as_ref(),
            target,
            "maintenance",
            &setup,
        )
        .await?;
        let server = Server::from_row(&first_row(pg.as_ref(), sql::SERVER).await?);
        Ok((pg, server))
    }

    /// The tables a plan is made of and pg-health's measured bloat of them (ledger
    /// `pgmaint#<db>`), by oid.
    pub(crate) async fn table_inputs(
        &self,
        pg: &dyn Postgres,
        server: &Server,
        db: &str,
        ctx: &Ctx<'_>,
    ) -> Result<(Vec<TableStats>, BTreeMap<i64, f64>)> {
        let tables: Vec<TableStats> = pg
            .query(&sql::tables::tables_for_maintenance(
                server.version,
                self.pg.bloat_min_bytes,
            ))
            .await?
            .iter()
            .map(TableStats::from_row)
            .collect();
        let measured: BTreeMap<i64, f64> = ctx
            .deps
            .ledger
            .query(&format!("pgmaint#{db}"), "")
            .await?
            .into_iter()
            .filter_map(|(oid, v)| Some((oid.parse().ok()?, v["measured_bloat"].as_f64()?)))
            .collect();
        Ok((tables, measured))
    }

    async fn maintain(&self, target: &PgTarget, started: Instant, w: &mut Work<'_>) -> Result<()> {
        let cfg = &self.pg;
        let ctx = w.ctx;
        let db = target.name.as_str();
        let (pg, server) = self.open(target, &ctx).await?;
        let pg = pg.as_ref();
        if server.in_recovery {
            w.note("a standby: maintenance happens on the primary");
            return Ok(());
        }
        let (tables, measured) = self.table_inputs(pg, &server, db, &ctx).await?;
        // Statistics ages (last analyze) are the database's timestamps: judged on its clock.
        let db_now = server.now.unwrap_or(ctx.now());
        let plan = sql::plan_maintenance(&tables, cfg, &|t| measured.get(&t.oid).copied(), db_now);
        let runaway_rows = if cfg.terminate.enabled {
            pg.query(&sql::transactions(server.version)).await?
        } else {
            vec![]
        };
        let sessions: Vec<Session> = runaway_rows.iter().map(Session::from_row).collect();
        let runaway = runaway_transactions(&sessions, cfg);
        // Not on the allow-list: reported by pg-health, ended only if a person approves each one.
        let unlisted = if ctx.cfg().approval.policy(END_UNLISTED) == Policy::Always {
            unlisted_runaways(&sessions, cfg)
        } else {
            vec![]
        };
        w.rec.summary = format!(
            "pg:{db}: {} table(s) need maintenance, {} runaway transaction(s)",
            plan.len(),
            runaway.len()
        );
        let indexes: Vec<IndexStats> = match pg.query(&sql::indexes::indexes(server.version)).await
        {
            Ok(rows) => rows.iter().map(IndexStats::from_row).collect(),
            Err(e) => {
                w.note(format!("indexes not examined: {e}"));
                vec![]
            }
        };
        let measured_ix = measure_indexes(pg, &indexes, cfg, w).await;
        let index_plan = sql::plan_indexes(&indexes, cfg, &|ix| measured_ix.get(&ix.oid).copied());
        let (drops, rebuilds): (Vec<_>, Vec<_>) = index_plan
            .iter()
            .partition(|(_, n)| n.work == IndexWork::DropLeftover);
        // The blast radius counts everything this run looked at (no action was checked yet).
        let fleet = tables.len() + sessions.len() + indexes.len();
        w.guard = ctx.guard(&w.rec.event_id).with_fleet_size(fleet);
        let s = DbSession {
            db,
            pg,
            version: server.version,
            emergency: None,
        };

        for runaway in runaway {
            end_transaction(&s, runaway, cfg.long_tx_seconds.crit, true, w).await?;
        }
        for runaway in unlisted {
            end_transaction(&s, runaway, cfg.long_tx_seconds.crit, false, w).await?;
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
        // The statement_timeout of the next item, or None (noted) when the run must stop.
        let go = |w: &mut Work<'_>, at: (usize, usize, usize)| -> Option<u64> {
            let now = ctx.now() + Duration::from_std(started.elapsed()).unwrap_or_default();
            match budget(started.elapsed(), now, ctx.inv.deadline, &cfg.vacuum) {
                Budget::Go {
                    statement_timeout_ms,
                } => Some(statement_timeout_ms),
                Budget::Stop(why) => {
                    w.note(left_note(&why, &left(at.0, at.1, at.2)));
                    None
                }
            }
        };
        // Leftovers of failed rebuilds first: every write still maintains them.
        for (i, (ix, need)) in drops.iter().enumerate() {
            let Some(ms) = go(w, (i, 0, 0)) else {
                return Ok(());
            };
            pg.execute(&format!("SET statement_timeout = {ms}")).await?;
            self.maintain_index(&s, ix, need, w).await?;
        }
        for (i, (t, need)) in plan.iter().enumerate() {
            if i >= max_tables {
                w.note(format!(
                    "{} more table(s) left for the next run (pg.vacuum.max_tables_per_run {max_tables})",
                    plan.len() - i,
                ));
                break;
            }
            let Some(ms) = go(w, (drops.len(), i, 0)) else {
                return Ok(());
            };
            pg.execute(&format!("SET statement_timeout = {ms}")).await?;
            self.maintain_table(&s, t, need, w).await?;
        }
        for (i, (ix, need)) in rebuilds.iter().enumerate() {
            if i >= max_rebuilds {
                w.note(format!(
                    "{} more index rebuild(s) left for the next run (pg.index.max_per_run {max_rebuilds})",
                    rebuilds.len() - i,
                ));
                break;
            }
            let Some(ms) = go(w, (drops.len(), usize::MAX, i)) else {
                return Ok(());
            };
            pg.execute(&format!("SET statement_timeout = {ms}")).await?;
            self.maintain_index(&s, ix, need, w).await?;
        }
        Ok(())
    }
}

/// Confirms rebuild candidates with pgstatindex when pgstattuple is installed, and only inside
/// the change window (outside it no rebuild can happen, so reading whole indexes is waste).
async fn measure_indexes(
    pg: &dyn Postgres,
    indexes: &[IndexStats],
    cfg: &PgConfig,
    w: &mut Work<'_>,
) -> BTreeMap<i64, f64> {
    let mut out = BTreeMap::new();
    if !in_change_window(&w.ctx.cfg().guard.window, w.ctx.now()) {
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
            Err(e) => w.note(format!("{}: pgstatindex failed: {e}", ix.name())),
        }
    }
    out
}

impl VacuumTrigger {
    pub(crate) async fn maintain_table(
        &self,
        s: &DbSession<'_>,
        t: &TableStats,
        need: &Need,
        w: &mut Work<'_>,
    ) -> Result<()> {
        let (db, pg) = (s.db, s.pg);
        let resource = format!("pg:{db}/{}", t.name());
        let before = counters(pg, t.oid).await?;
        let run = as_owner(
            s.version,
            t.set_role.as_deref(),
            need.kind.statement(&t.schema, &t.table),
        );
        let statement = shown(&run);
        let mut action = ProposedAction {
            action: format!("pg.{}", need.kind.as_str()),
            resource: resource.clone(),
            tags: Tags::new(),
            reason: match &s.emergency {
                Some(why) => format!("{why}: {}", need.reason),
                None => need.reason.clone(),
            },
            // VACUUM FULL outside the window only for a P1 (none of ours is): it waits. An
            // emergency freeze (crate::emergency) is P1 and passes the window as an emergency
            // change, recorded so in the audit.
            severity: match (need.kind, &s.emergency) {
                (Maintenance::Freeze, Some(_)) => Severity::P1,
                (Maintenance::Freeze, None) => Severity::P2,
                _ => Severity::P3,
            },
            disruptive: need.kind.disruptive()
                || (need.kind == Maintenance::Freeze && s.emergency.is_some()),
            bounds: None,
            cooldown_key: "pg.maintenance".into(),
            cooldown_seconds: self.pg.vacuum.cooldown_seconds,
            before: json!({"oid": t.oid, "work": need.kind.as_str(), "n_dead_tup": counter(&before, "n_dead_tup"), "n_live_tup": counter(&before, "n_live_tup"), "xid_age": counter(&before, "xid_age"), "statement": statement}),
            after: Value::Null,
            explanation: maintenance_words(&need.explanation, need.kind.as_str(), &resource)
                .key("pg.vacuum.cooldown_seconds"),
        };
        let prove = prove_maintenance(pg, t, need.kind, &before);
        let (audit, lost) = guarded(w, s, &mut action, (&run, prove), |outcome, ms| match outcome {
            Ok(after) => json!({"n_dead_tup": counter(after, "n_dead_tup"), "n_live_tup": counter(after, "n_live_tup"), "xid_age": counter(after, "xid_age"), "duration_ms": ms}),
            Err(_) => json!({"duration_ms": ms}),
        })
        .await?;
        if audit.outcome == Outcome::Acted {
            w.ctx
                .deps
                .ledger
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
        report(db, &what, &action, audit, w).await?;
        lost.map_or(Ok(()), Err)
    }

    async fn maintain_index(
        &self,
        s: &DbSession<'_>,
        ix: &IndexStats,
        need: &IndexNeed,
        w: &mut Work<'_>,
    ) -> Result<()> {
        let resource = format!("pg:{}/index:{}", s.db, ix.name());
        let run = as_owner(
            s.version,
            ix.set_role.as_deref(),
            need.work.statement(&ix.schema, &ix.index),
        );
        let statement = shown(&run);
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
            cooldown_seconds: self.pg.vacuum.cooldown_seconds,
            before: json!({"oid": ix.oid, "work": need.work.as_str(), "bytes": ix.bytes, "valid": ix.valid, "table": format!("{}.{}", ix.schema, ix.table), "statement": statement}),
            after: Value::Null,
            explanation: maintenance_words(&need.explanation, need.work.as_str(), &resource)
                .key("pg.vacuum.cooldown_seconds"),
        };
        let prove = prove_index_work(s.pg, ix, need.work);
        let (audit, lost) = guarded(
            w,
            s,
            &mut action,
            (&run, prove),
            |outcome, ms| match outcome {
                Ok(r) => json!({"bytes": sql::i64_of(r, "bytes").unwrap_or(0), "duration_ms": ms}),
                Err(_) => json!({"duration_ms": ms}),
            },
        )
        .await?;
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
        report(s.db, &what, &action, audit, w).await?;
        lost.map_or(Ok(()), Err)
    }
}

/// The plan's explanation with the work's verb: "Ran vacuum-analyze on pg:app/public.events".
fn maintenance_words(because: &Explanation, kind: &str, resource: &str) -> Explanation {
    because.doing(format!("run {kind} on"), format!("Ran {kind} on"), resource)
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
    w: &mut Work<'_>,
) -> Result<()> {
    let ctx = w.ctx;
    let words = audit.outcome_words();
    w.note(format!(
        "{}: {} ({}): {words}",
        d.resource, d.kind, d.reason
    ));
    let key = format!("pg-maintenance#{}", d.resource);
    match audit.outcome {
        Outcome::Acted => {
            let alert = ctx
                .alert(Severity::P4, d.resource, key, d.done.clone())
                .with_action(audit.sentence.clone())
                .with_details(json!({"statement": d.statement, "before": action.before, "after": action.after}));
            w.raise(alert).await?;
        }
        Outcome::Failed => {
            let error = audit.error.clone().unwrap_or_default();
            let now = ctx.now();
            ctx.deps
                .ledger
                .put(
                    &format!("pgvacfail#{db}"),
                    &format!("{}#{}", now.to_rfc3339(), d.subject),
                    &json!({"table": d.subject, "action": d.kind, "error": error, "at": now.to_rfc3339()}),
                    Some((now + Duration::days(1)).timestamp()),
                )
                .await?;
            let alert = ctx
                .alert(
                    Severity::P3,
                    d.resource,
                    key,
                    format!("{}: {} failed: {error}", d.subject, d.kind),
                )
                .with_action(audit.sentence.clone())
                .with_details(json!({"before": action.before, "after": action.after}))
                .with_runbook("Check the maintenance role may act as the table's owner (PG<=16: a member through infra/sql/02_maintenance_role.sql, used with SET ROLE) or has MAINTAIN (PG17+: pg_maintain), and what holds its locks.");
            w.raise(alert).await?;
        }
        _ => {}
    }
    w.rec.actions.push(audit);
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_its_own_schedule_is_taken() {
        use chrono::TimeZone;
        use nbaops_shared::fakes::{leak, test_deps, RefusingPg, Shared};
        use nbaops_shared::runtime::{dispatch, Invocation};
        let t = test_deps(
            FUNCTION,
            &[
                (
                    "NBAOPS_ALERTS_TOPIC_ARN",
                    "arn:aws:sns:us-east-1:123456789012:nbaops-dev-alerts",
                ),
                (
                    "NBAOPS_PG__DATABASES",
                    "app=postgres://nbaops_maintenance@db.nbaops.test:5432/app",
                ),
            ],
        )
        .unwrap();
        let pg = leak(RefusingPg::default());
        let f = VacuumTrigger {
            pg: nbaops_shared::config::pg::from_settings(&t.deps.cfg.settings).unwrap(),
            connector: Box::new(Shared(pg)),
        };
        let inv = Invocation::at(
            "req",
            chrono::Utc
                .with_ymd_and_hms(2026, 11, 26, 21, 0, 0)
                .unwrap(),
        );
        let ctx = Ctx::of::<VacuumTrigger>(t.deps, &inv);
        // Another function's tick, or a tick without a task: not for me, no session, nothing said.
        for other in [
            json!({"nbaops": {"task": "pg-health"}}),
            json!({"nbaops": {"id": "x"}}),
        ] {
            let r = dispatch(&f, other, &ctx).await.unwrap();
            assert_eq!(r.records.len(), 1, "{r:?}");
            let why = r.records[0].not_for_me.clone().unwrap_or_default();
            assert!(
                why.starts_with("vacuum-trigger takes its own schedule"),
                "{why}"
            );
            assert!(pg.urls().is_empty(), "a session for another task");
            assert!(t.notifier.published().is_empty());
        }
        // Its own tick opens a session on each database (refused here: the run reports it).
        let r = dispatch(&f, json!({"nbaops": {"task": "vacuum-trigger"}}), &ctx)
            .await
            .unwrap();
        assert_eq!(pg.urls().len(), 1);
        assert!(r.records[0].not_for_me.is_none(), "{r:?}");
        assert!(r.records[0].summary.contains("pg:app"), "{r:?}");
    }
}

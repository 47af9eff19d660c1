//! The approved requests vacuum-trigger carries out (issue #19; the shared
//! `nbaops_shared::runtime::approved` claims the request, compares [`live`] with the plan's
//! `before` key by key, re-runs the guard with the approval and calls [`apply`]):
//!
//! - `pg.vacuum-full` of `pg:<db>/<schema.table>` and `pg.reindex` of
//!   `pg:<db>/index:<schema.index>` (disruptive: outside the change window they wait, or a person
//!   lets one run now);
//! - `pg.end_transaction_unlisted` of `pg:<db>/pid:<pid>` (a runaway whose role and application
//!   are not allow-listed: a person approves each one).
//!
//! What `before` holds and what the comparison means: a plan's `before` carries counters that
//! move with every write or every second (dead and live tuples, XID age, index bytes, a
//! transaction's age, state and query). Compared as they are, no plan would ever still hold. The
//! plan rests on other facts, and [`live`] re-measures exactly those: the relation's identity
//! (`oid`: a table dropped and re-created is another table), the `work` the function's own plan
//! gives it now (re-planned with the same rules, thresholds and pg-health measurements as a run:
//! bloat fallen below `pg.bloat.crit_percent` reads e.g. `"vacuum-analyze: …"` or `"none: …"`),
//! the `statement` it would run (the owner's role switch included); for a transaction the same
//! `pid` running the same transaction (`xact_start`, `backend_type`, `role`, `application`). The
//! volatile counters are echoed from the plan (they are the audit's "as asked" figures, not a
//! condition), and [`apply`] records the counters before and after the statement it runs.

use std::time::Instant;

use serde_json::{json, Value};

use nbaops_shared::alerts::Severity;
use nbaops_shared::config::pg::PgTarget;
use nbaops_shared::guard::ProposedAction;
use nbaops_shared::ports::{Postgres, Tags};
use nbaops_shared::runtime::{Ctx, Live};
use nbaops_shared::sql::roles::{as_owner, AsOwner};
use nbaops_shared::sql::{self, IndexStats, IndexWork, Maintenance, Server, Session, TableStats};
use nbaops_shared::{NbaopsError, Result};

use crate::handler::VacuumTrigger;
use crate::plan::{budget, Budget};
use crate::runaway::{signal_runaway, END_UNLISTED};
use crate::statement::{
    counter, counters, prove_index_work, prove_maintenance, run_and_prove, settle, shown,
};

pub const VACUUM_FULL: &str = "pg.vacuum-full";
pub const REINDEX: &str = "pg.reindex";

/// What an approved plan is about, read from its action and resource.
#[derive(Debug, PartialEq)]
pub enum Subject<'a> {
    /// `pg:<db>/<schema.table>`
    Table { db: &'a str, name: &'a str },
    /// `pg:<db>/index:<schema.index>`
    Index { db: &'a str, name: &'a str },
    /// `pg:<db>/pid:<pid>`
    Pid { db: &'a str, pid: i64 },
}

impl Subject<'_> {
    fn db(&self) -> &str {
        match self {
            Subject::Table { db, .. } | Subject::Index { db, .. } | Subject::Pid { db, .. } => db,
        }
    }
}

/// The subject of an action this function carries out; `None` for any other action or a
/// resource not in its action's shape.
pub fn subject(a: &ProposedAction) -> Option<Subject<'_>> {
    let (db, rest) = a.resource.strip_prefix("pg:")?.split_once('/')?;
    if db.is_empty() || rest.is_empty() {
        return None;
    }
    match a.action.as_str() {
        VACUUM_FULL if !rest.starts_with("index:") && !rest.starts_with("pid:") => {
            Some(Subject::Table { db, name: rest })
        }
        REINDEX => {
            let name = rest.strip_prefix("index:").filter(|n| !n.is_empty())?;
            Some(Subject::Index { db, name })
        }
        END_UNLISTED => {
            let pid = rest.strip_prefix("pid:")?.parse().ok()?;
            Some(Subject::Pid { db, pid })
        }
        _ => None,
    }
}

/// The plan's values of `keys` copied into the live state (see the module documentation).
fn echo(state: &mut Value, before: &Value, keys: &[&str]) {
    if let Some(m) = state.as_object_mut() {
        for k in keys {
            m.insert((*k).into(), before.get(*k).cloned().unwrap_or(Value::Null));
        }
    }
}

const TABLE_ECHO: &[&str] = &["n_dead_tup", "n_live_tup", "xid_age"];
const INDEX_ECHO: &[&str] = &["bytes"];
const PID_ECHO: &[&str] = &["state", "xact_seconds", "query"];

fn target<'p>(f: &'p VacuumTrigger, db: &str) -> Option<&'p PgTarget> {
    f.pg.databases.iter().find(|t| t.name == db)
}

/// The table now and the work the function's plan gives it now ("vacuum-full", or another
/// kind with its reason, or "none: …").
async fn table_now(
    f: &VacuumTrigger,
    pg: &dyn Postgres,
    server: &Server,
    db: &str,
    name: &str,
    ctx: &Ctx<'_>,
) -> Result<Option<(TableStats, String)>> {
    let (tables, measured) = f.table_inputs(pg, server, db, ctx).await?;
    let Some(t) = tables.into_iter().find(|t| t.name() == name) else {
        return Ok(None);
    };
    let db_now = server.now.unwrap_or(ctx.now());
    let plan = sql::plan_maintenance(
        std::slice::from_ref(&t),
        &f.pg,
        &|t| measured.get(&t.oid).copied(),
        db_now,
    );
    let work = match plan.first() {
        Some((_, n)) if n.kind == Maintenance::VacuumFull => n.kind.as_str().to_string(),
        Some((_, n)) => format!("{}: {}", n.kind.as_str(), n.reason),
        None => "none: no maintenance needed".to_string(),
    };
    Ok(Some((t, work)))
}

/// The index now and the work the function's plan gives it now. Measurement with pgstatindex
/// happens in a run only inside the change window, where nothing is asked: the estimate the
/// request was made on is what is re-made here.
async fn index_now(
    f: &VacuumTrigger,
    pg: &dyn Postgres,
    server: &Server,
    name: &str,
) -> Result<Option<(IndexStats, String)>> {
    let indexes: Vec<IndexStats> = pg
        .query(&sql::indexes::indexes(server.version))
        .await?
        .iter()
        .map(IndexStats::from_row)
        .collect();
    let Some(ix) = indexes.into_iter().find(|ix| ix.name() == name) else {
        return Ok(None);
    };
    let plan = sql::plan_indexes(std::slice::from_ref(&ix), &f.pg, &|_| None);
    let work = match plan.first() {
        Some((_, n)) if n.work == IndexWork::Reindex => n.work.as_str().to_string(),
        Some((_, n)) => format!("{}: {}", n.work.as_str(), n.reason),
        None => "none: no rebuild needed".to_string(),
    };
    Ok(Some((ix, work)))
}

fn table_statement(server: &Server, t: &TableStats) -> AsOwner {
    as_owner(
        server.version,
        t.set_role.as_deref(),
        Maintenance::VacuumFull.statement(&t.schema, &t.table),
    )
}

fn index_statement(server: &Server, ix: &IndexStats) -> AsOwner {
    as_owner(
        server.version,
        ix.set_role.as_deref(),
        IndexWork::Reindex.statement(&ix.schema, &ix.index),
    )
}

/// The transaction `pid` runs now: the keys `before` identifies it by.
fn transaction_query(pid: i64) -> String {
    format!(
        "SELECT pid, xact_start, backend_type::text AS backend_type, usename::text AS role, \
         coalesce(application_name, '') AS application FROM pg_stat_activity WHERE pid = {pid}"
    )
}

/// The live state of an approved plan's subject, in the shape of its `before` (module
/// documentation). A database no longer configured, or a backend gone: [`Live::Gone`].
pub async fn live(f: &VacuumTrigger, a: &ProposedAction, ctx: &Ctx<'_>) -> Result<Live> {
    let Some(subject) = subject(a) else {
        return Ok(Live::NotCarriedOut);
    };
    let Some(target) = target(f, subject.db()) else {
        return Ok(Live::Gone);
    };
    let (pg, server) = f.open(target, ctx).await?;
    let pg = pg.as_ref();
    let standby = "none: the database is a standby now (maintenance happens on the primary)";
    let mut state = match subject {
        Subject::Table { db, name } => match table_now(f, pg, &server, db, name, ctx).await? {
            _ if server.in_recovery => json!({"work": standby}),
            None => {
                json!({"oid": null, "work": "none: not among the tables to maintain (dropped, or below pg.bloat.min_bytes)"})
            }
            Some((t, work)) => {
                json!({"oid": t.oid, "work": work, "statement": shown(&table_statement(&server, &t))})
            }
        },
        Subject::Index { name, .. } => match index_now(f, pg, &server, name).await? {
            _ if server.in_recovery => json!({"work": standby}),
            None => json!({"oid": null, "work": "none: the index is gone"}),
            Some((ix, work)) => json!({
                "oid": ix.oid, "work": work, "valid": ix.valid,
                "table": format!("{}.{}", ix.schema, ix.table),
                "statement": shown(&index_statement(&server, &ix)),
            }),
        },
        Subject::Pid { pid, .. } => {
            let rows = pg.query(&transaction_query(pid)).await?;
            let Some(r) = rows.into_iter().next() else {
                return Ok(Live::Gone);
            };
            json!({
                "pid": pid,
                "xact_start": sql::str_of(&r, "xact_start"),
                "backend_type": sql::str_of(&r, "backend_type"),
                "role": sql::str_of(&r, "role"),
                "application": sql::str_of(&r, "application"),
            })
        }
    };
    let keep = match a.action.as_str() {
        VACUUM_FULL => TABLE_ECHO,
        REINDEX => INDEX_ECHO,
        _ => PID_ECHO,
    };
    echo(&mut state, &a.before, keep);
    Ok(Live::Is {
        state,
        tags: Tags::new(),
    })
}

/// Carries out the approved plan the way a run does: in the function's maintenance session
/// (timeouts, cost limits), the statement as the relation's owner when needed (SET ROLE …
/// RESET ROLE), only if it is still exactly the plan's `statement`, under the run's time budget
/// (`pg.vacuum.*`, the Lambda deadline), proven to have done its work; the counters before and
/// after go in the P4 "done" alert. A runaway: the run's cancel-then-terminate.
pub async fn apply(f: &VacuumTrigger, a: &ProposedAction, ctx: &Ctx<'_>) -> Result<()> {
    let bad = || {
        NbaopsError::InvalidEvent(format!(
            "approved plan not understood: {} of {}",
            a.action, a.resource
        ))
    };
    let subject = subject(a).ok_or_else(bad)?;
    let db = subject.db().to_string();
    let target = target(f, &db).ok_or_else(|| {
        NbaopsError::InvalidEvent(format!("pg:{db} is not configured (pg.databases)"))
    })?;
    let (session, server) = f.open(target, ctx).await?;
    let pg = session.as_ref();
    match budget(
        std::time::Duration::ZERO,
        ctx.now(),
        ctx.inv.deadline,
        &f.pg.vacuum,
    ) {
        Budget::Go {
            statement_timeout_ms,
        } => {
            pg.execute(&format!("SET statement_timeout = {statement_timeout_ms}"))
                .await?;
        }
        Budget::Stop(why) => {
            return Err(NbaopsError::dependency(
                "lambda",
                format!("not started: {why}"),
            ))
        }
    }
    let same = |run: &AsOwner| -> Result<()> {
        let now = shown(run);
        match a.before.get("statement").and_then(Value::as_str) {
            Some(planned) if planned == now => Ok(()),
            planned => Err(NbaopsError::InvalidEvent(format!(
                "the statement is now `{now}`, the plan's was {planned:?}: not run"
            ))),
        }
    };
    let oid = a.before.get("oid").and_then(Value::as_i64);
    let started = Instant::now();
    let (summary, key, details) = match subject {
        Subject::Table { name, .. } => {
            let (t, _) = table_now(f, pg, &server, &db, name, ctx)
                .await?
                .filter(|(t, _)| Some(t.oid) == oid)
                .ok_or_else(|| gone(a))?;
            let run = table_statement(&server, &t);
            same(&run)?;
            let before = counters(pg, t.oid).await?;
            let kind = Maintenance::VacuumFull;
            let (outcome, _) =
                settle(run_and_prove(pg, &run, prove_maintenance(pg, &t, kind, &before)).await);
            let after = outcome?;
            ctx.deps
                .ledger
                .delete(&format!("pgmaint#{db}"), &t.oid.to_string())
                .await?;
            let (b, af) = (
                counter(&before, "n_dead_tup"),
                counter(&after, "n_dead_tup"),
            );
            (
                format!(
                    "{name}: {} done (approved), dead tuples {b} -> {af}",
                    kind.as_str()
                ),
                format!("pg-maintenance#{}", a.resource),
                json!({
                    "statement": shown(&run),
                    "before": {"n_dead_tup": b, "n_live_tup": counter(&before, "n_live_tup"), "xid_age": counter(&before, "xid_age")},
                    "after": {"n_dead_tup": af, "n_live_tup": counter(&after, "n_live_tup"), "xid_age": counter(&after, "xid_age"), "duration_ms": started.elapsed().as_millis() as u64},
                }),
            )
        }
        Subject::Index { name, .. } => {
            let (ix, _) = index_now(f, pg, &server, name)
                .await?
                .filter(|(ix, _)| Some(ix.oid) == oid)
                .ok_or_else(|| gone(a))?;
            let run = index_statement(&server, &ix);
            same(&run)?;
            let (outcome, _) = settle(
                run_and_prove(pg, &run, prove_index_work(pg, &ix, IndexWork::Reindex)).await,
            );
            let after = sql::i64_of(&outcome?, "bytes").unwrap_or(0);
            (
                format!("{name}: rebuilt (approved), {} -> {after} bytes", ix.bytes),
                format!("pg-maintenance#{}", a.resource),
                json!({
                    "statement": shown(&run),
                    "before": {"bytes": ix.bytes},
                    "after": {"bytes": after, "duration_ms": started.elapsed().as_millis() as u64},
                }),
            )
        }
        Subject::Pid { pid, .. } => {
            let mut row = a.before.as_object().cloned().unwrap_or_default();
            row.insert("pid".into(), pid.into());
            let sess = Session::from_row(&row);
            let how = signal_runaway(pg, &sess).await?;
            if how.starts_with("transaction already ended") {
                return Err(NbaopsError::dependency("postgres", how));
            }
            (
                format!(
                    "{db}: runaway transaction of pid {pid} ({}, '{}'), not on the allow-list: {how} (approved)",
                    sess.role, sess.application
                ),
                format!("pg-end-transaction#{}", a.resource),
                json!({"before": a.before, "after": {"result": how}}),
            )
        }
    };
    tracing::info!(resource = %a.resource, "{summary}");
    let severity = if a.action == END_UNLISTED {
        Severity::P3
    } else {
        Severity::P4
    };
    let alert = ctx
        .alert(severity, &a.resource, key, summary)
        .with_details(details);
    ctx.publish(&alert).await
}

fn gone(a: &ProposedAction) -> NbaopsError {
    NbaopsError::dependency(
        "postgres",
        format!(
            "{} is no longer the relation of the plan (oid {}): not run",
            a.resource, a.before["oid"]
        ),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use nbaops_shared::guard::Explanation;

    fn action(name: &str, resource: &str, before: Value) -> ProposedAction {
        ProposedAction {
            action: name.into(),
            resource: resource.into(),
            tags: Tags::new(),
            reason: "r".into(),
            severity: Severity::P3,
            disruptive: true,
            bounds: None,
            cooldown_key: "k".into(),
            cooldown_seconds: 0,
            before,
            after: Value::Null,
            explanation: Explanation::new("run", "Ran", "x", "rule"),
        }
    }

    #[test]
    fn subjects_are_read_from_the_action_and_its_resource() {
        let a = action(VACUUM_FULL, "pg:app/public.Bloated \"t\".ü", Value::Null);
        assert_eq!(
            subject(&a),
            Some(Subject::Table {
                db: "app",
                name: "public.Bloated \"t\".ü"
            })
        );
        let a = action(REINDEX, "pg:app/index:public.ix_t_id", Value::Null);
        assert_eq!(
            subject(&a),
            Some(Subject::Index {
                db: "app",
                name: "public.ix_t_id"
            })
        );
        let a = action(END_UNLISTED, "pg:app/pid:4242", Value::Null);
        assert_eq!(
            subject(&a),
            Some(Subject::Pid {
                db: "app",
                pid: 4242
            })
        );
        // Anything else, or a resource not in the action's shape: not carried out here.
        for (name, resource) in [
            ("pg.vacuum-analyze", "pg:app/public.t"),
            ("pg.end_transaction", "pg:app/pid:1"),
            (VACUUM_FULL, "pg:app/index:public.i"),
            (VACUUM_FULL, "pg:app/"),
            (VACUUM_FULL, "rds:app/public.t"),
            (REINDEX, "pg:app/public.t"),
            (REINDEX, "pg:app/index:"),
            (END_UNLISTED, "pg:app/pid:x"),
            (END_UNLISTED, "pg:/pid:1"),
        ] {
            assert_eq!(
                subject(&action(name, resource, Value::Null)),
                None,
                "{name} {resource}"
            );
        }
    }

    #[test]
    fn volatile_counters_are_echoed_and_the_decisive_facts_compared() {
        use nbaops_shared::runtime::differs;
        let before = json!({"oid": 16390, "work": "vacuum-full", "n_dead_tup": 40000, "n_live_tup": 10000, "xid_age": 12, "statement": "VACUUM (FULL, ANALYZE, SKIP_LOCKED) t"});
        // Dead tuples moved, the need did not: the plan holds.
        let mut now = json!({"oid": 16390, "work": "vacuum-full", "statement": "VACUUM (FULL, ANALYZE, SKIP_LOCKED) t"});
        echo(&mut now, &before, TABLE_ECHO);
        assert_eq!(differs(&before, &now), None);
        // Vacuumed meanwhile: the need is another one, and the comparison says so.
        let mut now = json!({"oid": 16390, "work": "none: no maintenance needed", "statement": "VACUUM (FULL, ANALYZE, SKIP_LOCKED) t"});
        echo(&mut now, &before, TABLE_ECHO);
        let why = differs(&before, &now).unwrap();
        assert!(
            why.contains("work was \"vacuum-full\", now \"none: no maintenance needed\""),
            "{why}"
        );
        // Re-created under the same name: another oid.
        let mut now = json!({"oid": 16500, "work": "vacuum-full", "statement": "VACUUM (FULL, ANALYZE, SKIP_LOCKED) t"});
        echo(&mut now, &before, TABLE_ECHO);
        assert!(differs(&before, &now)
            .unwrap()
            .starts_with("oid was 16390, now 16500"));
        // A transaction: the same pid running another transaction is not the plan's.
        let before = json!({"pid": 7, "role": "reporting", "application": "psql", "backend_type": "client backend", "state": "idle in transaction", "xact_start": "2026-11-25 11:00:00+00", "xact_seconds": 900.0, "query": "select 1"});
        let mut now = json!({"pid": 7, "role": "reporting", "application": "psql", "backend_type": "client backend", "xact_start": "2026-11-25 11:00:00+00"});
        echo(&mut now, &before, PID_ECHO);
        assert_eq!(differs(&before, &now), None);
        now["xact_start"] = json!("2026-11-25 11:30:00+00");
        assert!(differs(&before, &now)
            .unwrap()
            .starts_with("xact_start was"));
    }
}

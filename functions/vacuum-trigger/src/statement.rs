//! One maintenance statement: run as the relation's owner when the role needs it (below
//! PostgreSQL 17: `SET ROLE <owner>`, the statement, `RESET ROLE`), proven to have done its work
//! (a vacuum count moved, an index gone or valid), through the guard and audited.

use std::future::Future;
use std::time::{Duration as StdDuration, Instant};

use serde_json::Value;

use nbaops_shared::guard::{AuditRecord, ProposedAction};
use nbaops_shared::ports::Postgres;
use nbaops_shared::runtime::Work;
use nbaops_shared::sql::roles::AsOwner;
use nbaops_shared::sql::{self, IndexStats, IndexWork, Maintenance, PgVersion, Row, TableStats};
use nbaops_shared::{NbaopsError, Result};

use crate::handler::first_row;

/// The session one database is maintained in.
pub struct DbSession<'s> {
    pub db: &'s str,
    pub pg: &'s dyn Postgres,
    pub version: PgVersion,
    /// An emergency run (pg-health's immediate wraparound freeze, `crate::emergency`): its
    /// freezes are P1 actions through the change window as emergency changes. The why.
    pub emergency: Option<String>,
}

pub async fn counters(pg: &dyn Postgres, oid: i64) -> Result<Row> {
    first_row(pg, &sql::table_counters(oid)).await
}

pub fn counter(r: &Row, k: &str) -> i64 {
    sql::i64_of(r, k).unwrap_or(0)
}

/// What a maintenance statement did: the inner result is the statement's. An outer `Err` means
/// the session could not be returned to our own role (RESET ROLE failed): it may still act as
/// the table's owner and must run nothing else.
pub type Ran<T> = Result<Result<T>>;

/// Runs one maintenance statement, as the relation's owner when `s` says so: SET ROLE, the
/// statement, then RESET ROLE whether the statement (or the SET ROLE) failed or not.
pub async fn execute_as(pg: &dyn Postgres, s: &AsOwner) -> Ran<u64> {
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
pub fn message(e: &NbaopsError) -> String {
    match e {
        NbaopsError::Dependency { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// The statement as people read it (audit, alerts): with its role switch when there is one.
pub fn shown(s: &AsOwner) -> String {
    s.statements().join("; ")
}

/// Splits a [`Ran`] for the audit: the outcome to record, and the error that must end the run.
pub fn settle<T>(ran: Ran<T>) -> (Result<T>, Option<NbaopsError>) {
    match ran {
        Ok(outcome) => (outcome, None),
        Err(lost) => (
            Err(NbaopsError::dependency("postgres", message(&lost))),
            Some(lost),
        ),
    }
}

/// Runs a maintenance statement as the relation's owner when `s` says so (SET ROLE, the
/// statement, RESET ROLE: [`execute_as`]) after clearing earlier notices, then proves it did its
/// work (`prove`: a table's vacuum count moved, an index is gone or valid).
pub async fn run_and_prove<T, Fut>(pg: &dyn Postgres, s: &AsOwner, prove: Fut) -> Ran<T>
where
    Fut: Future<Output = Result<T>>,
{
    let _ = pg.take_notices();
    if let Err(e) = execute_as(pg, s).await? {
        return Ok(Err(e));
    }
    Ok(prove.await)
}

/// One maintenance statement through the guard: checked, run and proven ([`run_and_prove`]),
/// timed, audited. `after` turns the outcome and its milliseconds into the action's after-state.
/// Hands back the audit and the error that must end the run (the session was lost).
pub async fn guarded<T, Fut>(
    w: &mut Work<'_>,
    s: &DbSession<'_>,
    action: &mut ProposedAction,
    (statement, prove): (&AsOwner, Fut),
    after: impl FnOnce(&Result<T>, u64) -> Value,
) -> Result<(AuditRecord, Option<NbaopsError>)>
where
    Fut: Future<Output = Result<T>>,
{
    let decision = w.guard.check(action).await?;
    let mut lost = None;
    let result = if decision.proceed {
        let started = Instant::now();
        let (outcome, gone) = settle(run_and_prove(s.pg, statement, prove).await);
        lost = gone;
        action.after = after(&outcome, started.elapsed().as_millis() as u64);
        Some(outcome.map(|_| ()).map_err(|e| e.to_string()))
    } else {
        None
    };
    let audit = w.guard.finish(action, &decision, result).await?;
    // Asked a person (the approval policy, outside the change window): the alert with its id.
    w.ask(&audit).await?;
    Ok((audit, lost))
}

pub async fn prove_maintenance(
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
    // VACUUM FULL rewrites the table (as CLUSTER does) and PostgreSQL does not count it in
    // vacuum_count; its ANALYZE is counted in analyze_count.
    let field = if matches!(kind, Maintenance::Analyze | Maintenance::VacuumFull) {
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

pub async fn prove_index_work(pg: &dyn Postgres, ix: &IndexStats, work: IndexWork) -> Result<Row> {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use nbaops_shared::sql::roles::as_owner;
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

    /// A table's maintenance statement, run and proven as the handler runs it.
    async fn run_maintenance(
        pg: &Recorder,
        v: PgVersion,
        t: &TableStats,
        kind: Maintenance,
        before: &Row,
    ) -> Ran<Row> {
        let run = as_owner(
            v,
            t.set_role.as_deref(),
            kind.statement(&t.schema, &t.table),
        );
        run_and_prove(pg, &run, prove_maintenance(pg, t, kind, before)).await
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

//! PostgreSQL faults, end to end: the real vacuum-trigger and pg-health binaries over the Lambda
//! Runtime API, moto for the ledger/topics/SSM, and a real throwaway cluster served as RDS serves
//! one (TLS, the production roles). The test kills backends, holds locks, stops the server,
//! fills max_connections and promotes a standby; each run must end cleanly (a response, never a
//! crash), record what failed in the audit, alert, and the next run must recover.

use std::time::{Duration, Instant};

use nbaops_tests::demo::Stack;
use nbaops_tests::function::FunctionUnderTest;
use nbaops_tests::function_binary;
use nbaops_tests::platform;
use nbaops_tests::postgres::Postgres;
use nbaops_tests::runtime_api::Outcome;
use serde_json::{json, Value};

async fn start(stack: &Stack, name: &str, env: &[(&str, &str)]) -> FunctionUnderTest {
    FunctionUnderTest::start(
        &function_binary(name).unwrap(),
        name,
        &stack.function_env(env),
        1,
    )
    .await
    .unwrap()
}

async fn invoke(f: &FunctionUnderTest, id: &str) -> Value {
    let payload = json!({"nbaops": {"task": f.name(), "id": id}});
    match f
        .invoke(payload, Duration::from_secs(90))
        .await
        .unwrap()
        .outcome
    {
        Outcome::Response(v) => {
            nbaops_tests::explain::check_response(&v).unwrap();
            v
        }
        Outcome::Error {
            error_type,
            message,
        } => panic!("{error_type}: {message}\n{}", f.logs()),
    }
}

/// The one database's record (each test configures one database, `app`).
fn only(v: &Value) -> &Value {
    let records = v["records"].as_array().unwrap();
    assert_eq!(records.len(), 1, "{v}");
    &records[0]
}

fn alerts<'a>(rec: &'a Value, key_prefix: &str) -> Vec<&'a Value> {
    rec["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| {
            a["dedup_key"]
                .as_str()
                .unwrap_or("")
                .starts_with(key_prefix)
        })
        .collect()
}

fn actions<'a>(rec: &'a Value, action: &str) -> Vec<&'a Value> {
    rec["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == action)
        .collect()
}

fn owned(roles: &[(String, String)]) -> Vec<(&str, &str)> {
    roles
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

const TABLE: &str = "public.bloated";

fn dead_tuples(pg: &Postgres) -> i64 {
    pg.psql(
        "app",
        &format!("select n_dead_tup from pg_stat_user_tables where relid = '{TABLE}'::regclass"),
    )
    .unwrap()
    .parse()
    .unwrap()
}

/// A table of the application's role with 40,000 dead tuples, autovacuum off on it.
fn make_bloat(pg: &Postgres) {
    pg.psql_app(
        "app",
        &format!(
            "create table {TABLE} (id int, payload text) with (autovacuum_enabled = false); \
             insert into {TABLE} select g, repeat('x', 100) from generate_series(1, 50000) g; \
             delete from {TABLE} where id % 5 <> 0; analyze {TABLE}"
        ),
    )
    .unwrap();
}

/// The cluster's superuser over loopback (trust): the test's hand, never the functions'.
async fn superuser(pg: &Postgres, db: &str) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={} user=postgres dbname={db}", pg.port),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    c
}

/// Waits (up to 30 s) until vacuum-trigger's session runs a statement starting with `prefix`
/// (and, with `waiting`, waits on a lock), then terminates that backend. Returns what it killed.
async fn kill_when(admin: &tokio_postgres::Client, prefix: &str, waiting: bool) -> String {
    let sql = format!(
        "select pid, query from pg_stat_activity where application_name = 'nbaops-vacuum-trigger' \
         and state = 'active' and query like '{prefix}%' {}",
        if waiting {
            "and wait_event_type = 'Lock'"
        } else {
            ""
        }
    );
    let started = Instant::now();
    loop {
        let rows = admin.query(sql.as_str(), &[]).await.unwrap();
        if let Some(r) = rows.first() {
            let pid: i32 = r.get(0);
            let query: String = r.get(1);
            let ok: bool = admin
                .query_one("select pg_terminate_backend($1)", &[&pid])
                .await
                .unwrap()
                .get(0);
            assert!(ok, "pg_terminate_backend({pid})");
            return query;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "vacuum-trigger never ran `{prefix}…`"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Item: the backend killed mid-VACUUM → the action is audited `failed` with the server's words,
/// a P3 alert for the table and one for the interrupted run; the next run vacuums and resolves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_killed_mid_vacuum_then_the_next_run_vacuums() {
    let stack = Stack::start(false).await.unwrap();
    let pg = Postgres::start().unwrap();
    pg.as_rds("app").unwrap();
    make_bloat(&pg);
    let before = dead_tuples(&pg);
    assert!(before >= 39_000, "{before}");
    let roles = stack.put_pg_passwords(&pg, "app", "app").await.unwrap();
    let env = owned(&roles);
    // Throttled to a crawl (100 ms of sleep per page): still running when the test kills it.
    let slow = [
        env.as_slice(),
        &[
            ("NBAOPS_PG__VACUUM__COST_DELAY_MS", "100"),
            ("NBAOPS_PG__VACUUM__COST_LIMIT", "1"),
        ],
    ]
    .concat();
    let vt = start(&stack, "vacuum-trigger", &slow).await;
    let admin = superuser(&pg, "app").await;
    let (v, killed) = tokio::join!(invoke(&vt, "vt-killed"), kill_when(&admin, "VACUUM", false));
    assert!(killed.contains("bloated"), "{killed}");
    let rec = only(&v);
    let vacuum = actions(rec, "pg.vacuum-analyze");
    assert_eq!(vacuum.len(), 1, "{rec}");
    assert_eq!(vacuum[0]["outcome"], "failed", "{rec}");
    let error = vacuum[0]["error"].as_str().unwrap();
    assert!(error.contains("administrator command"), "{error}");
    let failed = alerts(rec, "pg-maintenance#");
    assert_eq!(failed.len(), 1, "{rec}");
    assert_eq!(failed[0]["severity"], "P3");
    // The session is gone (RESET ROLE cannot run): the run stops there, says so, and alerts.
    let run = alerts(rec, "pg-maintenance-run#");
    assert_eq!(run.len(), 1, "{rec}");
    let summary = run[0]["summary"].as_str().unwrap();
    assert!(
        summary.contains("database 'app' as the maintenance role"),
        "{summary}"
    );
    assert!(dead_tuples(&pg) > 30_000, "the VACUUM did not complete");
    let audits = platform::drain(&stack.clients, &stack.platform.actions_queue)
        .await
        .unwrap();
    assert!(
        audits
            .iter()
            .any(|a| a["action"] == "pg.vacuum-analyze" && a["outcome"] == "failed"),
        "{audits:?}"
    );
    // No panic: the same process answers the next invocation.
    assert!(vt.processes()[0].exit_status().is_none(), "{}", vt.logs());
    drop(vt);

    // The next run (normal speed) vacuums the table and resolves the run alert.
    let vt = start(&stack, "vacuum-trigger", &env).await;
    let v = invoke(&vt, "vt-after").await;
    let rec = only(&v);
    let vacuum = actions(rec, "pg.vacuum-analyze");
    assert_eq!(vacuum.len(), 1, "{rec}");
    assert_eq!(vacuum[0]["outcome"], "acted", "{rec}\n{}", vt.logs());
    assert!(dead_tuples(&pg) < 1_000);
    let run = alerts(rec, "pg-maintenance-run#");
    assert_eq!(run.len(), 1, "{rec}");
    assert_eq!(run[0]["status"], "resolved", "{rec}");
}

fn weekday() -> String {
    nbaops_tests::clock::now()
        .format("%a")
        .to_string()
        .to_lowercase()
}

fn leftovers(pg: &Postgres) -> Vec<String> {
    let out = pg
        .psql(
            "app",
            "select c.relname from pg_index i join pg_class c on c.oid = i.indexrelid \
             where not i.indisvalid order by 1",
        )
        .unwrap();
    out.lines().map(str::to_string).collect()
}

/// Items: the backend killed mid-REINDEX CONCURRENTLY leaves an invalid `_ccnew` index; the next
/// run's drop of it hits `lock_timeout` behind a transaction the test holds (a clean failure
/// with the reason, no hang, and no second rebuild piling up `_ccnew1`); once the lock is gone
/// the leftover is dropped (guarded, audited) and the index is rebuilt on the run after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_reindex_leftover_lock_timeout_then_cleaned() {
    let stack = Stack::start(false).await.unwrap();
    let pg = Postgres::start().unwrap();
    pg.as_rds("app").unwrap();
    pg.psql_app(
        "app",
        "create table ix_t (id int, v int) with (autovacuum_enabled = false); \
         insert into ix_t select g, g from generate_series(1, 200000) g; \
         create index ix_t_id on ix_t (id); \
         delete from ix_t where id % 10 <> 0",
    )
    .unwrap();
    pg.psql_app("app", "vacuum analyze ix_t").unwrap();
    let roles = stack.put_pg_passwords(&pg, "app", "app").await.unwrap();
    let today = weekday();
    let mut base = owned(&roles);
    base.extend([
        ("NBAOPS_GUARD__BLAST__MAX_PERCENT", "100"),
        ("NBAOPS_GUARD__WINDOW__START", "00:00"),
        ("NBAOPS_GUARD__WINDOW__END", "23:59"),
        ("NBAOPS_GUARD__WINDOW__TZ", "UTC"),
        ("NBAOPS_GUARD__WINDOW__DAYS", today.as_str()),
    ]);

    // An application transaction that wrote to the table and stays open: REINDEX CONCURRENTLY
    // creates ix_t_id_ccnew, then waits for it.
    let blocker = superuser(&pg, "app").await;
    blocker
        .batch_execute("begin; insert into ix_t values (0, 0)")
        .await
        .unwrap();
    let patient = [
        base.as_slice(),
        &[("NBAOPS_PG__VACUUM__LOCK_TIMEOUT_MS", "60000")],
    ]
    .concat();
    let vt = start(&stack, "vacuum-trigger", &patient).await;
    let admin = superuser(&pg, "app").await;
    let (v, killed) = tokio::join!(invoke(&vt, "ix-killed"), kill_when(&admin, "REINDEX", true));
    assert!(killed.contains("ix_t_id"), "{killed}");
    let rec = only(&v);
    let reindex = actions(rec, "pg.reindex");
    assert_eq!(reindex.len(), 1, "{rec}");
    assert_eq!(reindex[0]["outcome"], "failed", "{rec}");
    assert!(
        reindex[0]["error"]
            .as_str()
            .unwrap()
            .contains("administrator command"),
        "{rec}"
    );
    assert_eq!(leftovers(&pg), vec!["ix_t_id_ccnew"]);
    drop(vt);

    // Still blocked, lock_timeout 500 ms: the drop fails cleanly and fast, nothing piles up.
    let impatient = [
        base.as_slice(),
        &[("NBAOPS_PG__VACUUM__LOCK_TIMEOUT_MS", "500")],
    ]
    .concat();
    let vt = start(&stack, "vacuum-trigger", &impatient).await;
    let started = Instant::now();
    let v = invoke(&vt, "ix-locked").await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let rec = only(&v);
    let drop_action = actions(rec, "pg.drop-invalid-index");
    assert_eq!(drop_action.len(), 1, "{rec}");
    assert_eq!(drop_action[0]["outcome"], "failed", "{rec}");
    assert_eq!(
        drop_action[0]["resource"],
        "pg:app/index:public.ix_t_id_ccnew"
    );
    assert!(
        drop_action[0]["error"]
            .as_str()
            .unwrap()
            .contains("lock timeout"),
        "{rec}"
    );
    assert!(actions(rec, "pg.reindex").is_empty(), "{rec}");
    assert_eq!(leftovers(&pg), vec!["ix_t_id_ccnew"], "no second leftover");
    let failed = alerts(rec, "pg-maintenance#");
    assert!(
        failed
            .iter()
            .any(|a| a["resource"] == "pg:app/index:public.ix_t_id_ccnew"),
        "{rec}"
    );

    // The application commits: the leftover is dropped concurrently, guarded and audited...
    blocker.batch_execute("rollback").await.unwrap();
    let v = invoke(&vt, "ix-free").await;
    let rec = only(&v);
    let drop_action = actions(rec, "pg.drop-invalid-index");
    assert_eq!(drop_action.len(), 1, "{rec}");
    assert_eq!(drop_action[0]["outcome"], "acted", "{rec}");
    assert!(
        drop_action[0]["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["step"] == "idempotency"),
        "{rec}"
    );
    assert!(leftovers(&pg).is_empty());
    // ...and the rebuild it was left by happens on the next run.
    let v = invoke(&vt, "ix-rebuild").await;
    let rec = only(&v);
    let reindex = actions(rec, "pg.reindex");
    assert_eq!(reindex.len(), 1, "{rec}");
    assert_eq!(reindex[0]["outcome"], "acted", "{rec}\n{}", vt.logs());
    assert!(leftovers(&pg).is_empty());
    let audits = platform::drain(&stack.clients, &stack.platform.actions_queue)
        .await
        .unwrap();
    let outcomes: Vec<(String, String)> = audits
        .iter()
        .map(|a| {
            (
                a["action"].as_str().unwrap_or("").to_string(),
                a["outcome"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    for expected in [
        ("pg.reindex", "failed"),
        ("pg.drop-invalid-index", "failed"),
        ("pg.drop-invalid-index", "acted"),
        ("pg.reindex", "acted"),
    ] {
        assert!(
            outcomes
                .iter()
                .any(|(a, o)| a == expected.0 && o == expected.1),
            "{expected:?} not audited: {outcomes:?}"
        );
    }
}

/// Items: connection refused (server stopped) and `too many clients` (max_connections filled by
/// the test): a response naming the database and the role, an alert, no panic; the runs after
/// recover (maintenance done, alerts resolved).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_too_many_clients_then_recovered() {
    let stack = Stack::start(false).await.unwrap();
    let pg = Postgres::start().unwrap();
    pg.as_rds("app").unwrap();
    make_bloat(&pg);
    // 10 slots, 3 of them reserved for superusers: 7 for everyone else.
    pg.psql("postgres", "alter system set max_connections = 10")
        .unwrap();
    pg.restart().unwrap();
    let roles = stack.put_pg_passwords(&pg, "app", "app").await.unwrap();
    let env = owned(&roles);
    let vt = start(&stack, "vacuum-trigger", &env).await;
    let health = start(&stack, "pg-health", &env).await;

    pg.stop().unwrap();
    let v = invoke(&vt, "vt-refused").await;
    let rec = only(&v);
    assert!(rec["actions"].as_array().unwrap().is_empty(), "{rec}");
    let run = alerts(rec, "pg-maintenance-run#");
    assert_eq!(run.len(), 1, "{rec}");
    let summary = run[0]["summary"].as_str().unwrap();
    assert!(
        summary.contains("database 'app' as the maintenance role (nbaops_maintenance)")
            && summary.contains("Connection refused"),
        "{summary}"
    );
    let v = invoke(&health, "health-refused").await;
    let down = alerts(only(&v), "pg-unreachable#");
    assert_eq!(down.len(), 1, "{v}");
    assert_eq!(down[0]["severity"], "P1");
    assert!(
        down[0]["summary"]
            .as_str()
            .unwrap()
            .contains("database 'app' as the monitor role (nbaops_monitor): error connecting to server: Connection refused"),
        "{}",
        down[0]
    );

    // Back, but the application holds every slot a non-superuser may have.
    pg.start_again().unwrap();
    let mut held = Vec::new();
    let refusal = loop {
        match tokio_postgres::connect(
            &format!("host=127.0.0.1 port={} user=nbaops_app dbname=app", pg.port),
            tokio_postgres::NoTls,
        )
        .await
        {
            Ok((c, conn)) => {
                tokio::spawn(conn);
                held.push(c);
                assert!(held.len() <= 10, "max_connections not enforced");
            }
            Err(e) => {
                break e
                    .as_db_error()
                    .map_or_else(|| e.to_string(), |d| d.message().to_string())
            }
        }
    };
    assert!(refusal.contains("slots are reserved"), "{refusal}");
    let v = invoke(&vt, "vt-full").await;
    let rec = only(&v);
    assert!(rec["actions"].as_array().unwrap().is_empty(), "{rec}");
    let notes = rec["notes"].to_string();
    assert!(
        notes.contains("database 'app' as the maintenance role (nbaops_maintenance)")
            && notes.contains("max_connections"),
        "{rec}"
    );
    // Already alerted by the previous run: not announced again.
    assert!(alerts(rec, "pg-maintenance-run#").is_empty(), "{rec}");
    let v = invoke(&health, "health-full").await;
    let full = alerts(only(&v), "pg-connections#");
    assert_eq!(full.len(), 1, "{v}");
    assert!(
        full[0]["summary"]
            .as_str()
            .unwrap()
            .contains("no slot left"),
        "{}",
        full[0]
    );
    assert!(vt.processes()[0].exit_status().is_none(), "{}", vt.logs());
    assert!(
        health.processes()[0].exit_status().is_none(),
        "{}",
        health.logs()
    );

    // The application lets go: both recover.
    drop(held);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let v = invoke(&vt, "vt-back").await;
    let rec = only(&v);
    let vacuum = actions(rec, "pg.vacuum-analyze");
    assert_eq!(vacuum.len(), 1, "{rec}");
    assert_eq!(vacuum[0]["outcome"], "acted", "{rec}");
    let run = alerts(rec, "pg-maintenance-run#");
    assert_eq!(run.len(), 1, "{rec}");
    assert_eq!(run[0]["status"], "resolved");
    let v = invoke(&health, "health-back").await;
    let rec = only(&v);
    for key in ["pg-unreachable#", "pg-connections#"] {
        let a = alerts(rec, key);
        assert_eq!(a.len(), 1, "{key}: {rec}");
        assert_eq!(a[0]["status"], "resolved", "{key}: {rec}");
    }
}

/// Item: a promoted standby between two runs. While the endpoint reaches a standby, vacuum-trigger
/// acts on nothing (read-only) and says why; after the failover (the primary stopped, the
/// standby promoted), pg-health sees another primary on a new timeline — not a mere restart — and
/// re-takes its baseline instead of computing rates across two servers; vacuum-trigger runs on
/// the new primary without error, and no open finding is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promoted_standby_between_runs() {
    let stack = Stack::start(false).await.unwrap();
    let pg = Postgres::start().unwrap();
    pg.as_rds("app").unwrap();
    make_bloat(&pg);
    let replica = pg.start_replica().unwrap();
    let on_primary = stack.put_pg_passwords(&pg, "app", "app").await.unwrap();
    let on_replica = stack
        .put_pg_passwords(&replica, "app", "app")
        .await
        .unwrap();

    // pg-health on the primary: its counter baseline and an open bloat finding.
    let health = start(&stack, "pg-health", &owned(&on_primary)).await;
    let v = invoke(&health, "h-primary").await;
    let rec = only(&v);
    assert!(rec["notes"].to_string().contains("primary"), "{rec}");
    assert_eq!(alerts(rec, "pg-bloat#").len(), 1, "{rec}");
    drop(health);

    // The endpoint reaches the standby: read-only, nothing is attempted, nothing alerted.
    let vt = start(&stack, "vacuum-trigger", &owned(&on_replica)).await;
    let v = invoke(&vt, "vt-standby").await;
    let rec = only(&v);
    assert!(rec["actions"].as_array().unwrap().is_empty(), "{rec}");
    assert!(rec["alerts"].as_array().unwrap().is_empty(), "{rec}");
    assert!(rec["notes"].to_string().contains("a standby"), "{rec}");
    assert!(
        platform::drain(&stack.clients, &stack.platform.actions_queue)
            .await
            .unwrap()
            .is_empty()
    );

    // Failover: the primary goes, the standby is promoted, the endpoint now reaches it.
    pg.stop().unwrap();
    replica.promote().unwrap();
    let health = start(&stack, "pg-health", &owned(&on_replica)).await;
    let v = invoke(&health, "h-promoted").await;
    let rec = only(&v);
    let notes = rec["notes"].to_string();
    assert!(
        notes.contains("failover: another primary answers (timeline 1 -> 2)"),
        "{rec}"
    );
    assert!(alerts(rec, "pg-deadlocks#").is_empty() && alerts(rec, "pg-cache-hit#").is_empty());
    // The bloat finding opened on the old primary is still open (the table came along, its
    // statistics did not): not announced again, not resolved for want of a figure.
    assert!(alerts(rec, "pg-bloat#").is_empty(), "{rec}");
    assert!(
        notes.contains("pg-bloat#pg:app/public.bloated: not judged this run"),
        "{rec}"
    );

    let v = invoke(&vt, "vt-promoted").await;
    let rec = only(&v);
    assert!(
        rec["actions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["outcome"] == "acted"),
        "{rec}\n{}",
        vt.logs()
    );
    assert!(alerts(rec, "pg-maintenance-run#").is_empty(), "{rec}");
    assert!(!rec["notes"].to_string().contains("a standby"), "{rec}");
}

//! pg-health and vacuum-trigger end to end: the real binaries over the Lambda Runtime API, moto
//! for the ledger/topics/SSM, and a real throwaway PostgreSQL (plus a streaming replica).

use std::time::Duration;

use nbaops_tests::demo::Stack;
use nbaops_tests::function::FunctionUnderTest;
use nbaops_tests::function_binary;
use nbaops_tests::platform;
use nbaops_tests::postgres::Postgres;
use nbaops_tests::runtime_api::Outcome;
use serde_json::{json, Value};

/// A hostile name: quotes, a space, a dot and non-ASCII, to prove identifiers are quoted.
const TABLE: &str = "Bloated \"t\".ü";
const TABLE_SQL: &str = "public.\"Bloated \"\"t\"\".ü\"";

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
    let payload = json!({"nbaops": {"task": "pg", "id": id}});
    match f
        .invoke(payload, Duration::from_secs(60))
        .await
        .unwrap()
        .outcome
    {
        Outcome::Response(v) => v,
        Outcome::Error {
            error_type,
            message,
        } => panic!("{error_type}: {message}\n{}", f.logs()),
    }
}

fn record<'a>(v: &'a Value, db: &str) -> &'a Value {
    v["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| {
            r["summary"]
                .as_str()
                .unwrap_or("")
                .starts_with(&format!("pg:{db}"))
        })
        .unwrap_or_else(|| panic!("no record for {db}: {v}"))
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

fn dead_tuples(pg: &Postgres) -> i64 {
    pg.psql(
        "app",
        &format!(
            "select n_dead_tup from pg_stat_user_tables where relid = '{TABLE_SQL}'::regclass"
        ),
    )
    .unwrap()
    .parse()
    .unwrap()
}

fn make_bloat(pg: &Postgres) {
    pg.psql("postgres", "create database app").unwrap();
    pg.psql("app", "create extension pgstattuple").unwrap();
    pg.psql(
        "app",
        &format!(
            "create table {TABLE_SQL} (id int, payload text) with (autovacuum_enabled = false)"
        ),
    )
    .unwrap();
    pg.psql(
        "app",
        &format!(
            "insert into {TABLE_SQL} select g, repeat('x', 100) from generate_series(1, 50000) g"
        ),
    )
    .unwrap();
    pg.psql("app", &format!("delete from {TABLE_SQL} where id % 5 <> 0"))
        .unwrap();
    pg.psql("app", &format!("analyze {TABLE_SQL}")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bloat_is_reported_then_vacuumed_and_dry_run_changes_nothing() {
    let stack = Stack::start(false).await.unwrap();
    let pg = Postgres::start().unwrap();
    make_bloat(&pg);
    let before = dead_tuples(&pg);
    assert!(before >= 39_000, "{before}");
    let dbs = format!("app={}", pg.url("app"));
    let env = [("NBAOPS_PG__DATABASES", dbs.as_str())];

    let health = start(&stack, "pg-health", &env).await;
    let v = invoke(&health, "health-1").await;
    let rec = record(&v, "app");
    let bloat = alerts(rec, "pg-bloat#");
    assert_eq!(bloat.len(), 1, "{rec}");
    assert_eq!(bloat[0]["resource"], format!("pg:app/public.{TABLE}"));
    assert_eq!(bloat[0]["severity"], "P3", "critical bloat: {}", bloat[0]);
    assert_eq!(
        bloat[0]["details"]["observed"]["source"], "measured (pgstattuple_approx)",
        "{}",
        bloat[0]
    );
    // The same bloat on the next run is not announced again.
    let v = invoke(&health, "health-2").await;
    assert!(alerts(record(&v, "app"), "pg-bloat#").is_empty(), "{v}");
    let published = platform::drain(&stack.clients, &stack.platform.alerts_queue)
        .await
        .unwrap();
    assert_eq!(
        published
            .iter()
            .filter(|a| a["dedup_key"]
                .as_str()
                .unwrap_or("")
                .starts_with("pg-bloat#"))
            .count(),
        1
    );

    // Dry-run: decided and audited, the table untouched.
    let dry = start(
        &stack,
        "vacuum-trigger",
        &[env[0], ("NBAOPS_GUARD__DRY_RUN", "true")],
    )
    .await;
    let v = invoke(&dry, "vacuum-dry").await;
    let rec = record(&v, "app");
    let action = &rec["actions"][0];
    assert_eq!(action["action"], "pg.vacuum-analyze", "{rec}");
    assert_eq!(action["outcome"], "would-act", "{rec}");
    assert_eq!(dead_tuples(&pg), before, "dry-run changed the table");
    drop(dry);

    // Live: vacuumed, the audit carries dead tuples before and after.
    let live = start(&stack, "vacuum-trigger", &env).await;
    let v = invoke(&live, "vacuum-live").await;
    let rec = record(&v, "app");
    let action = &rec["actions"][0];
    assert_eq!(action["outcome"], "acted", "{rec}\n{}", live.logs());
    assert_eq!(action["resource"], format!("pg:app/public.{TABLE}"));
    assert!(
        action["before"]["n_dead_tup"].as_i64().unwrap() >= 39_000,
        "{action}"
    );
    assert!(
        action["after"]["n_dead_tup"].as_i64().unwrap() < 1_000,
        "{action}"
    );
    assert!(
        dead_tuples(&pg) < 1_000,
        "dead tuples still {}",
        dead_tuples(&pg)
    );
    let audits = platform::drain(&stack.clients, &stack.platform.actions_queue)
        .await
        .unwrap();
    assert!(audits
        .iter()
        .any(|a| a["outcome"] == "acted" && a["action"] == "pg.vacuum-analyze"));
    // Nothing left to do: the next run does not vacuum again.
    let v = invoke(&live, "vacuum-again").await;
    assert!(
        record(&v, "app")["actions"].as_array().unwrap().is_empty(),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_transaction_is_reported_ended_and_resolved() {
    let stack = Stack::start(false).await.unwrap();
    let pg = Postgres::start().unwrap();
    pg.psql("postgres", "create database app").unwrap();
    let (client, conn) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=postgres dbname=app application_name=e2e-runaway",
            pg.port
        ),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute("begin; select txid_current();")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;

    let dbs = format!("app={}", pg.url("app"));
    let thresholds = [
        ("NBAOPS_PG__DATABASES", dbs.as_str()),
        ("NBAOPS_PG__LONG_TX__WARN_SECONDS", "1"),
        ("NBAOPS_PG__LONG_TX__CRIT_SECONDS", "2"),
    ];
    let health = start(&stack, "pg-health", &thresholds).await;
    let v = invoke(&health, "health-1").await;
    let long = alerts(record(&v, "app"), "pg-long-tx#");
    assert_eq!(long.len(), 1, "{v}");
    assert_eq!(long[0]["severity"], "P2");
    assert_eq!(long[0]["details"]["observed"]["application"], "e2e-runaway");

    // Without an allow-list entry nothing is ended.
    let mut env = thresholds.to_vec();
    env.push(("NBAOPS_PG__TERMINATE__ENABLED", "true"));
    let vt = start(&stack, "vacuum-trigger", &env).await;
    let v = invoke(&vt, "vt-1").await;
    assert!(
        record(&v, "app")["actions"].as_array().unwrap().is_empty(),
        "{v}"
    );
    assert!(client.simple_query("select 1").await.is_ok());
    drop(vt);

    env.push(("NBAOPS_PG__TERMINATE__ALLOW_APPLICATIONS", "e2e-runaway"));
    let vt = start(&stack, "vacuum-trigger", &env).await;
    let v = invoke(&vt, "vt-2").await;
    let rec = record(&v, "app");
    let action = &rec["actions"][0];
    assert_eq!(action["action"], "pg.end_transaction", "{rec}");
    assert_eq!(action["outcome"], "acted", "{rec}\n{}", vt.logs());
    assert!(
        client.simple_query("select 1").await.is_err(),
        "session survived"
    );

    let v = invoke(&health, "health-2").await;
    let resolved = alerts(record(&v, "app"), "pg-long-tx#");
    assert_eq!(resolved.len(), 1, "{v}");
    assert_eq!(resolved[0]["status"], "resolved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_database_counter_reset_and_idle_replica() {
    let stack = Stack::start(false).await.unwrap();
    let pg = Postgres::start().unwrap();
    pg.psql("postgres", "create database app").unwrap();
    pg.psql(
        "app",
        "create table t (id int); insert into t select generate_series(1, 1000)",
    )
    .unwrap();
    let replica = pg.start_replica().unwrap();
    let closed = nbaops_tests::ports::free_port().unwrap();
    let dbs = format!(
        "app={},replica={},gone=postgres://postgres@127.0.0.1:{closed}/app",
        pg.url("app"),
        replica.url("app")
    );
    let health = start(
        &stack,
        "pg-health",
        &[("NBAOPS_PG__DATABASES", dbs.as_str())],
    )
    .await;
    let v = invoke(&health, "health-1").await;

    // A refused connection is a P1 finding, not a crash; the other databases are still scanned.
    let gone = alerts(record(&v, "gone"), "pg-unreachable#");
    assert_eq!(gone.len(), 1, "{v}");
    assert_eq!(gone[0]["severity"], "P1");
    // An idle primary: the replica is caught up, lag is 0, no cry of wolf.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let v = invoke(&health, "health-2").await;
    for db in ["app", "replica"] {
        assert!(
            alerts(record(&v, db), "pg-replication-lag#").is_empty(),
            "{db}: {v}"
        );
    }
    assert!(
        record(&v, "replica")["notes"]
            .to_string()
            .contains("standby"),
        "{v}"
    );

    // Counters reset between runs: a note, a new baseline, never a negative or absurd rate.
    pg.psql("app", "select pg_stat_reset()").unwrap();
    let v = invoke(&health, "health-3").await;
    let rec = record(&v, "app");
    assert!(
        rec["notes"].to_string().contains("counters restarted"),
        "{rec}"
    );
    assert!(alerts(rec, "pg-deadlocks#").is_empty() && alerts(rec, "pg-cache-hit#").is_empty());
    let v = invoke(&health, "health-4").await;
    assert!(
        !record(&v, "app")["notes"]
            .to_string()
            .contains("counters restarted"),
        "{v}"
    );
    for line in health
        .logs()
        .lines()
        .filter(|l| l.contains("DeadlocksPerHour"))
    {
        let m: Value = serde_json::from_str(line).unwrap();
        let rate = m["DeadlocksPerHour"].as_f64().unwrap();
        assert!((0.0..10.0).contains(&rate), "{line}");
    }
}

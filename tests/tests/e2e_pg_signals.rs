//! PostgreSQL signals of issue #22, end to end: pg-health's real binary over the Lambda Runtime
//! API, moto for the ledger/topics/SSM, and the harness's real TLS PostgreSQL (as on RDS: the
//! monitor role is `nbaops_monitor`, pg_monitor, no superuser, no table privilege) plus a
//! streaming replica.

use std::time::Duration;

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
        .invoke(payload, Duration::from_secs(60))
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

fn record<'a>(v: &'a Value, db: &str) -> &'a Value {
    v["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| {
            r["summary"]
                .as_str()
                .unwrap_or("")
                .starts_with(&format!("pg:{db}:"))
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

/// Item (issue #22): index bloat per btree index, measured with pgstatindex as the monitor role
/// (which cannot read the table's pg_stats), once, resolved after a rebuild; GIN and tiny
/// indexes never judged. WAL rate between runs: first run a baseline, a bulk load over the
/// threshold, quiet again resolved; a standby skipped with a reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_bloat_and_wal_rate_are_reported_once_and_resolve() {
    let stack = Stack::start(false).await.unwrap();
    let pg = Postgres::start().unwrap();
    pg.as_rds("app").unwrap();
    pg.psql_app(
        "app",
        "create table ix_t (id int, v int, tags int[]) with (autovacuum_enabled = false); \
         insert into ix_t select g, g, array[g % 7] from generate_series(1, 200000) g; \
         create index ix_t_id on ix_t (id); \
         create index ix_t_tags on ix_t using gin (tags); \
         create table small (id int); insert into small select generate_series(1, 1000); \
         create index small_id on small (id); \
         delete from ix_t where id % 10 <> 0; \
         create table bulk (id int, payload text) with (autovacuum_enabled = false)",
    )
    .unwrap();
    pg.psql_app("app", "vacuum analyze ix_t").unwrap();
    let replica = pg.start_replica().unwrap();
    let mut env = stack.put_pg_passwords(&pg, "app", "app").await.unwrap();
    stack
        .put_pg_passwords(&replica, "replica", "app")
        .await
        .unwrap();
    env[0].1 = format!(
        "app={},replica={}",
        pg.url_as("nbaops_monitor", "app"),
        replica.url_as("nbaops_monitor", "app")
    );
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    // 1 MiB/s between two runs a few seconds apart: a bulk load is over it, an idle server not.
    env.extend([
        ("NBAOPS_PG__WAL__WARN_BYTES_PER_SECOND", "1048576"),
        ("NBAOPS_PG__WAL__CRIT_BYTES_PER_SECOND", "1099511627776"),
    ]);
    let health = start(&stack, "pg-health", &env).await;

    let v = invoke(&health, "signals-1").await;
    let rec = record(&v, "app");
    let ix = alerts(rec, "pg-index-bloat#");
    assert_eq!(ix.len(), 1, "only the bloated btree index: {rec}");
    assert_eq!(ix[0]["resource"], "pg:app/index:public.ix_t_id", "{rec}");
    assert_eq!(ix[0]["severity"], "P3", "critical: {}", ix[0]);
    assert_eq!(
        ix[0]["details"]["observed"]["source"], "measured (pgstatindex)",
        "{}",
        ix[0]
    );
    assert!(
        ix[0]["details"]["observed"]["percent"].as_f64().unwrap() > 50.0,
        "{}",
        ix[0]
    );
    assert!(alerts(rec, "pg-wal-rate#").is_empty(), "{rec}");
    assert!(
        rec["notes"]
            .to_string()
            .contains("wal-rate: first run, baseline taken"),
        "{rec}"
    );
    let replica_rec = record(&v, "replica");
    assert!(
        replica_rec["notes"]
            .to_string()
            .contains("wal-rate: not measured on a standby"),
        "{replica_rec}"
    );
    assert!(
        alerts(replica_rec, "pg-index-bloat#").is_empty(),
        "a standby's indexes are judged on the primary: {replica_rec}"
    );

    // A bulk load between two runs: tens of MB of WAL in a few seconds.
    pg.psql_app(
        "app",
        "insert into bulk select g, repeat('x', 200) from generate_series(1, 300000) g",
    )
    .unwrap();
    let v = invoke(&health, "signals-2").await;
    let rec = record(&v, "app");
    let wal = alerts(rec, "pg-wal-rate#");
    assert_eq!(wal.len(), 1, "{rec}");
    assert_eq!(wal[0]["resource"], "pg:app");
    assert_eq!(wal[0]["severity"], "P4", "warning: {}", wal[0]);
    let observed = &wal[0]["details"]["observed"];
    assert!(
        observed["bytes"].as_i64().unwrap() > 50_000_000,
        "{observed}"
    );
    assert!(
        observed["bytes_per_second"].as_f64().unwrap() > 1_048_576.0,
        "{observed}"
    );
    // The bloated index is still bloated: not announced again.
    assert!(alerts(rec, "pg-index-bloat#").is_empty(), "{rec}");
    assert!(
        rec["notes"]
            .to_string()
            .contains("still P3: app: index public.ix_t_id"),
        "{rec}"
    );

    // Rebuilt by its owner; then two quiet runs: the index resolves, then the WAL rate.
    pg.psql_app("app", "reindex index ix_t_id").unwrap();
    let _ = invoke(&health, "signals-3").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let v = invoke(&health, "signals-4").await;
    assert!(
        alerts(record(&v, "app"), "pg-wal-rate#")
            .iter()
            .all(|a| a["status"] == "resolved"),
        "quiet: {v}"
    );
    let published = platform::drain(&stack.clients, &stack.platform.alerts_queue)
        .await
        .unwrap();
    let of = |prefix: &str| -> Vec<&Value> {
        published
            .iter()
            .filter(|a| a["dedup_key"].as_str().unwrap_or("").starts_with(prefix))
            .collect()
    };
    // Index bloat: announced once, resolved once (by run 3 or 4).
    let ix = of("pg-index-bloat#");
    assert_eq!(ix.len(), 2, "{ix:?}");
    assert_eq!(ix[1]["status"], "resolved", "{ix:?}");
    let wal = of("pg-wal-rate#");
    assert_eq!(wal.last().unwrap()["status"], "resolved", "{wal:?}");
    // The rate is a metric too.
    assert!(health.logs().contains("WalBytesPerSecond"));
}

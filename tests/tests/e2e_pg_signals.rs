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

fn table_xid_age(pg: &Postgres, table: &str) -> i64 {
    pg.psql(
        "app",
        &format!("select age(relfrozenxid) from pg_class where oid = '{table}'::regclass"),
    )
    .unwrap()
    .parse()
    .unwrap()
}

fn weekday(offset_days: i64) -> String {
    (nbaops_tests::clock::now() + chrono::Duration::days(offset_days))
        .format("%a")
        .to_string()
        .to_lowercase()
}

async fn invoke_payload(f: &FunctionUnderTest, payload: Value) -> Value {
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

/// Item (issue #22): a P1 wraparound finding makes pg-health create a one-time schedule that
/// invokes vacuum-trigger with "emergency freeze" for that database, once per database and day;
/// vacuum-trigger refuses anything else carrying `emergency`, and runs the freeze at once outside
/// the change window as a P1 emergency change through its guard (dry-run still only describes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wraparound_emergency_schedules_an_immediate_freeze_recorded_as_emergency_change() {
    let stack = Stack::start(false).await.unwrap();
    let pg = Postgres::start().unwrap();
    pg.as_rds("app").unwrap();
    pg.psql_app(
        "app",
        "create table frz (id int) with (autovacuum_enabled = false); \
         insert into frz select generate_series(1, 10000)",
    )
    .unwrap();
    // 300 transactions: the database's and the table's XID age pass the lowered limits.
    pg.psql_app(
        "app",
        "do $$ begin for i in 1..300 loop perform txid_current(); commit; end loop; end $$",
    )
    .unwrap();
    let before = table_xid_age(&pg, "frz");
    assert!(before >= 300, "{before}");

    let roles = stack.put_pg_passwords(&pg, "app", "app").await.unwrap();
    let mut env: Vec<(&str, &str)> = roles
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let target = "arn:aws:lambda:us-east-1:123456789012:function:nbaops-dev-vacuum-trigger:live";
    let role = "arn:aws:iam::123456789012:role/nbaops-dev-pg-emergency";
    env.extend([
        // The emergency level lowered to what a test cluster reaches (the failsafe is 1.6 B).
        ("NBAOPS_PG__XID__EMERGENCY_AGE", "100"),
        ("NBAOPS_PG__VACUUM__FREEZE_AGE", "100"),
        ("NBAOPS_PG__EMERGENCY_FREEZE__TARGET_ARN", target),
        ("NBAOPS_PG__EMERGENCY_FREEZE__ROLE_ARN", role),
    ]);
    let health = start(&stack, "pg-health", &env).await;
    let v = invoke(&health, "wrap-1").await;
    let rec = record(&v, "app");
    let wrap = alerts(rec, "pg-wraparound#");
    assert_eq!(wrap.len(), 1, "{rec}");
    assert_eq!(wrap[0]["severity"], "P1", "{}", wrap[0]);
    assert!(
        rec["notes"]
            .to_string()
            .contains("vacuum-trigger's freeze of app scheduled"),
        "{rec}"
    );
    let schedules = platform::follow_ups(&stack.clients, "default")
        .await
        .unwrap();
    assert_eq!(schedules.len(), 1, "{schedules:?}");
    let s = &schedules[0];
    assert!(s.name.starts_with("nbaops-dev-freeze-app-"), "{s:?}");
    assert_eq!((s.target_arn.as_str(), s.role_arn.as_str()), (target, role));
    assert_eq!(s.after_completion.as_deref(), Some("DELETE"), "{s:?}");
    let at = s.at.unwrap();
    let now = nbaops_tests::clock::now();
    assert!(
        at > now - chrono::Duration::seconds(30) && at <= now + chrono::Duration::minutes(2),
        "at once: {at} (now {now})"
    );
    assert_eq!(s.input["nbaops"]["emergency"], "freeze", "{}", s.input);
    assert_eq!(s.input["nbaops"]["database"], "app", "{}", s.input);
    assert_eq!(s.input["nbaops"]["task"], "vacuum-trigger", "{}", s.input);
    // Still an emergency on the next run: not scheduled again today.
    let v = invoke(&health, "wrap-2").await;
    assert!(
        record(&v, "app")["notes"]
            .to_string()
            .contains("already scheduled today"),
        "{v}"
    );
    assert_eq!(
        platform::follow_ups(&stack.clients, "default")
            .await
            .unwrap()
            .len(),
        1
    );

    // vacuum-trigger outside the change window (the window is tomorrow only).
    let tomorrow = weekday(1);
    let mut vt_env = env.clone();
    vt_env.extend([
        ("NBAOPS_GUARD__BLAST__MAX_PERCENT", "100"),
        ("NBAOPS_GUARD__WINDOW__START", "00:00"),
        ("NBAOPS_GUARD__WINDOW__END", "23:59"),
        ("NBAOPS_GUARD__WINDOW__TZ", "UTC"),
        ("NBAOPS_GUARD__WINDOW__DAYS", tomorrow.as_str()),
    ]);
    // Anything else carrying `emergency` is refused, said, nothing done.
    let dry_env = [vt_env.as_slice(), &[("NBAOPS_GUARD__DRY_RUN", "true")]].concat();
    let dry = start(&stack, "vacuum-trigger", &dry_env).await;
    for (bad, says) in [
        (
            json!({"nbaops": {"task": "vacuum-trigger", "emergency": "drop", "database": "app"}}),
            "emergency 'drop' refused",
        ),
        (
            json!({"nbaops": {"task": "vacuum-trigger", "emergency": "freeze", "database": "other"}}),
            "'other' is not in pg.databases",
        ),
        (
            json!({"nbaops": {"task": "vacuum-trigger", "emergency": "freeze"}}),
            "no database named",
        ),
    ] {
        let v = invoke_payload(&dry, bad).await;
        let rec = &v["records"][0];
        assert!(rec["summary"].as_str().unwrap().contains(says), "{v}");
        assert!(rec["failed"].as_str().is_some(), "{v}");
        assert!(rec["actions"].as_array().unwrap().is_empty(), "{v}");
    }
    // Dry-run: decided as an emergency change, the table untouched.
    let v = invoke_payload(&dry, s.input.clone()).await;
    let rec = &v["records"][0];
    let a = &rec["actions"][0];
    assert_eq!(a["action"], "pg.vacuum-freeze", "{rec}");
    assert_eq!(a["outcome"], "would-act", "{rec}");
    assert_eq!(a["emergency_change"], true, "{rec}");
    assert!(table_xid_age(&pg, "frz") >= before);
    drop(dry);

    // Live: frozen at once, P1, audited as an emergency change outside the window.
    let live = start(&stack, "vacuum-trigger", &vt_env).await;
    let v = invoke_payload(&live, s.input.clone()).await;
    let rec = &v["records"][0];
    assert!(
        rec["summary"]
            .as_str()
            .unwrap()
            .contains("emergency freeze"),
        "{rec}"
    );
    let a = &rec["actions"][0];
    assert_eq!(a["action"], "pg.vacuum-freeze", "{rec}");
    assert_eq!(a["outcome"], "acted", "{rec}\n{}", live.logs());
    assert_eq!(a["severity"], "P1", "{rec}");
    assert_eq!(a["emergency_change"], true, "{rec}");
    assert!(
        a["reason"]
            .as_str()
            .unwrap()
            .starts_with("emergency freeze for pg-wraparound#pg:app"),
        "{a}"
    );
    let after = table_xid_age(&pg, "frz");
    assert!(after < 100, "frozen: {before} -> {after}");
    let audits = platform::drain(&stack.clients, &stack.platform.actions_queue)
        .await
        .unwrap();
    assert!(
        audits.iter().any(|x| x["outcome"] == "acted"
            && x["action"] == "pg.vacuum-freeze"
            && x["emergency_change"] == true),
        "{audits:?}"
    );
    // Its regular tick is unchanged: only the emergency event narrows it to the freeze.
    let v = invoke(&live, "vt-tick").await;
    assert!(
        v["records"][0]["summary"]
            .as_str()
            .unwrap()
            .starts_with("pg:app:"),
        "{v}"
    );
}

/// Item (issue #22): a manual VACUUM throttled by its session's cost-based delay
/// (vacuum_cost_delay 100 ms, vacuum_cost_limit 1: a sleep after every page) on a table of
/// thousands of pages, sampled by pg-health as the monitor role: sleeping in most samples over
/// pg.vacuum_delay.min_runs runs is one P4, resolved once the vacuum is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_vacuum_is_reported_after_min_runs_and_resolves_when_it_ends() {
    let stack = Stack::start(false).await.unwrap();
    let pg = std::sync::Arc::new(Postgres::start().unwrap());
    pg.as_rds("app").unwrap();
    pg.psql_app(
        "app",
        "create table big (id int, payload text) with (autovacuum_enabled = false); \
         insert into big select g, repeat('x', 200) from generate_series(1, 100000) g; \
         delete from big where id % 2 = 0",
    )
    .unwrap();
    // The application role's sessions throttle their vacuums hard (set for its sessions).
    pg.psql(
        "postgres",
        "alter role nbaops_app set vacuum_cost_delay = 100; alter role nbaops_app set vacuum_cost_limit = 1",
    )
    .unwrap();
    let vacuum = {
        let pg = pg.clone();
        std::thread::spawn(move || pg.psql_app("app", "vacuum big"))
    };
    // Wait until it runs.
    let mut running = false;
    for _ in 0..50 {
        if pg
            .psql("app", "select count(*) from pg_stat_progress_vacuum")
            .unwrap()
            == "1"
        {
            running = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(running, "the VACUUM did not start");

    let roles = stack.put_pg_passwords(&pg, "app", "app").await.unwrap();
    let env: Vec<(&str, &str)> = roles
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let health = start(&stack, "pg-health", &env).await;
    for run in 1..=2 {
        let v = invoke(&health, &format!("delay-{run}")).await;
        let rec = record(&v, "app");
        assert!(
            alerts(rec, "pg-vacuum-delay#").is_empty(),
            "run {run}: {rec}"
        );
        assert!(
            rec["notes"]
                .to_string()
                .contains("vacuum-delay: public.big (pid"),
            "run {run}: {rec}"
        );
    }
    let v = invoke(&health, "delay-3").await;
    let rec = record(&v, "app");
    let d = alerts(rec, "pg-vacuum-delay#");
    assert_eq!(d.len(), 1, "{rec}");
    assert_eq!(d[0]["resource"], "pg:app/public.big");
    assert_eq!(d[0]["severity"], "P4");
    let observed = &d[0]["details"]["observed"];
    assert_eq!(observed["measured_by"], "wait_event samples", "{observed}");
    assert_eq!(observed["runs"], 3, "{observed}");
    assert!(observed["samples"].as_i64().unwrap() >= 12, "{observed}");
    assert!(
        observed["sleep_percent"].as_f64().unwrap() > 50.0,
        "{observed}"
    );
    assert_eq!(observed["autovacuum"], false, "{observed}");

    // The vacuum ends (cancelled here): the next run resolves the finding.
    pg.psql(
        "app",
        "select pg_cancel_backend(pid) from pg_stat_progress_vacuum",
    )
    .unwrap();
    assert!(vacuum.join().unwrap().is_err(), "the VACUUM was cancelled");
    let v = invoke(&health, "delay-4").await;
    let rec = record(&v, "app");
    let d = alerts(rec, "pg-vacuum-delay#");
    assert_eq!(d.len(), 1, "{rec}");
    assert_eq!(d[0]["status"], "resolved", "{rec}");
}

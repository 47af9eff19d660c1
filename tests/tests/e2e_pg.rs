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

/// A tick of the function's own schedule (the task is its name, as the template's schedules send).
async fn invoke(f: &FunctionUnderTest, id: &str) -> Value {
    invoke_task(f, f.name(), id).await
}

async fn invoke_task(f: &FunctionUnderTest, task: &str, id: &str) -> Value {
    let payload = json!({"nbaops": {"task": task, "id": id}});
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
                .starts_with(&format!("pg:{db}"))
        })
        .unwrap_or_else(|| panic!("no record for {db}: {v}"))
}

/// One record, "not for me", saying what the function takes; nothing done, nothing raised.
fn not_for_me(v: &Value, says: &str) {
    let records = v["records"].as_array().unwrap();
    assert_eq!(records.len(), 1, "{v}");
    let rec = &records[0];
    assert!(
        rec["not_for_me"].as_str().unwrap_or("").contains(says),
        "{v}"
    );
    assert!(rec["actions"].as_array().unwrap().is_empty(), "{v}");
    assert!(rec["alerts"].as_array().unwrap().is_empty(), "{v}");
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

/// The bloated table, owned by the application's role in a database set up as on RDS.
fn make_bloat(pg: &Postgres) {
    pg.as_rds("app").unwrap();
    pg.psql_app(
        "app",
        &format!(
            "create table {TABLE_SQL} (id int, payload text) with (autovacuum_enabled = false)"
        ),
    )
    .unwrap();
    pg.psql_app(
        "app",
        &format!(
            "insert into {TABLE_SQL} select g, repeat('x', 100) from generate_series(1, 50000) g"
        ),
    )
    .unwrap();
    pg.psql_app("app", &format!("delete from {TABLE_SQL} where id % 5 <> 0"))
        .unwrap();
    pg.psql_app("app", &format!("analyze {TABLE_SQL}")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bloat_is_reported_then_vacuumed_and_dry_run_changes_nothing() {
    let stack = Stack::start(false).await.unwrap();
    let pg = Postgres::start().unwrap();
    make_bloat(&pg);
    let before = dead_tuples(&pg);
    assert!(before >= 39_000, "{before}");
    // pg-health as nbaops_monitor, vacuum-trigger as nbaops_maintenance: over TLS, passwords
    // from SSM, the roles infra/sql makes (no superuser).
    let roles = stack.put_pg_passwords(&pg, "app", "app").await.unwrap();
    let env: Vec<(&str, &str)> = roles
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();

    let health = start(&stack, "pg-health", &env).await;
    // Another function's tick is not pg-health's: no scan, no alert, no state.
    let v = invoke_task(&health, "vacuum-trigger", "health-other-task").await;
    not_for_me(&v, "pg-health takes");
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
        &[env.as_slice(), &[("NBAOPS_GUARD__DRY_RUN", "true")]].concat(),
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
    // A tick with another function's task changes nothing: no VACUUM, no action, "not for me".
    for task in ["pg-health", "offhours"] {
        let v = invoke_task(&live, task, &format!("vacuum-{task}-task")).await;
        not_for_me(&v, "vacuum-trigger takes");
        assert_eq!(dead_tuples(&pg), before, "a {task} tick vacuumed the table");
    }
    assert!(
        platform::drain(&stack.clients, &stack.platform.actions_queue)
            .await
            .unwrap()
            .iter()
            .all(|a| a["outcome"] != "acted"),
        "another task's tick acted"
    );
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
    pg.as_rds("app").unwrap();
    // The runaway is the application's session (nbaops never ends a superuser's).
    let (client, conn) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=nbaops_app dbname=app application_name=e2e-runaway",
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

    let roles = stack.put_pg_passwords(&pg, "app", "app").await.unwrap();
    let mut thresholds: Vec<(&str, &str)> = roles
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    thresholds.extend([
        ("NBAOPS_PG__LONG_TX__WARN_SECONDS", "1"),
        ("NBAOPS_PG__LONG_TX__CRIT_SECONDS", "2"),
    ]);
    let health = start(&stack, "pg-health", &thresholds).await;
    let v = invoke(&health, "health-1").await;
    let long = alerts(record(&v, "app"), "pg-long-tx#");
    assert_eq!(long.len(), 1, "{v}");
    assert_eq!(long[0]["severity"], "P2");
    assert_eq!(long[0]["details"]["observed"]["application"], "e2e-runaway");

    // Without an allow-list entry nothing is ended: a person is asked
    // (approval.pg.end_transaction_unlisted = always; e2e_approval_vacuum carries it out).
    let mut env = thresholds.to_vec();
    env.push(("NBAOPS_PG__TERMINATE__ENABLED", "true"));
    let vt = start(&stack, "vacuum-trigger", &env).await;
    let v = invoke(&vt, "vt-1").await;
    let asked = record(&v, "app")["actions"].as_array().unwrap();
    assert!(
        asked
            .iter()
            .all(|a| a["action"] == "pg.end_transaction_unlisted"
                && a["outcome"] == "needs-approval"),
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
    pg.as_rds("app").unwrap();
    pg.psql_app(
        "app",
        "create table t (id int); insert into t select generate_series(1, 1000)",
    )
    .unwrap();
    // The standby is a copy: the same roles and passwords.
    let replica = pg.start_replica().unwrap();
    let closed = nbaops_tests::ports::free_port().unwrap();
    let mut env = stack.put_pg_passwords(&pg, "app", "app").await.unwrap();
    stack
        .put_pg_passwords(&replica, "replica", "app")
        .await
        .unwrap();
    stack.put_pg_passwords(&pg, "gone", "app").await.unwrap();
    let dbs = format!(
        "app={},replica={},gone=postgres://nbaops_monitor@127.0.0.1:{closed}/app",
        pg.url_as("nbaops_monitor", "app"),
        replica.url_as("nbaops_monitor", "app")
    );
    env[0].1 = dbs;
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let health = start(&stack, "pg-health", &env).await;
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

fn actions(rec: &Value) -> &Vec<Value> {
    rec["actions"].as_array().unwrap()
}

/// Item: the Lambda deadline bounds the run, and the server's "skipping" WARNING is a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_margin_and_non_owner_vacuum_warning() {
    let stack = Stack::start(false).await.unwrap();
    let pg = Postgres::start().unwrap();
    make_bloat(&pg);
    pg.psql("app", "create role maint login").unwrap();
    let before = dead_tuples(&pg);
    let roles = stack.put_pg_passwords(&pg, "app", "app").await.unwrap();
    let env: Vec<(&str, &str)> = roles
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();

    // The harness gives every invocation a 60 s deadline: a 120 s margin leaves no time to
    // start a table, whatever pg.vacuum.time_budget_seconds says.
    let vt = start(
        &stack,
        "vacuum-trigger",
        &[
            env.as_slice(),
            &[("NBAOPS_PG__VACUUM__DEADLINE_MARGIN_SECONDS", "120")],
        ]
        .concat(),
    )
    .await;
    let v = invoke(&vt, "vt-deadline").await;
    let rec = record(&v, "app");
    assert!(actions(rec).is_empty(), "{rec}");
    assert!(
        rec["notes"].to_string().contains("Lambda deadline"),
        "{rec}"
    );
    assert_eq!(dead_tuples(&pg), before);
    drop(vt);

    // A maintenance role that does not own the table (and is no member of its owner):
    // PostgreSQL answers VACUUM with success and a WARNING; the run must record a failure,
    // alert, and never claim it acted.
    let vt = start(
        &stack,
        "vacuum-trigger",
        &[env[0], ("NBAOPS_PG__MAINTENANCE_USER", "maint")],
    )
    .await;
    let v = invoke(&vt, "vt-non-owner").await;
    let rec = record(&v, "app");
    let a = &actions(rec)[0];
    assert_eq!(a["action"], "pg.vacuum-analyze", "{rec}");
    assert_eq!(a["outcome"], "failed", "{rec}");
    let error = a["error"].as_str().unwrap();
    // The server's own words (PG <= 15 "only table or database owner", PG16+ "permission denied").
    assert!(
        error.contains("the server said: WARNING")
            && (error.contains("owner can vacuum") || error.contains("permission denied")),
        "{error}"
    );
    assert!(
        actions(rec).iter().all(|a| a["outcome"] != "acted"),
        "{rec}"
    );
    let failed = alerts(rec, "pg-maintenance#");
    assert_eq!(failed.len(), 1, "{rec}");
    assert_eq!(failed[0]["severity"], "P3");
    assert_eq!(dead_tuples(&pg), before, "nothing was vacuumed");

    // pg-health turns the recorded failure into its VACUUM-failure signal.
    let health = start(&stack, "pg-health", &env).await;
    let v = invoke(&health, "health-after-failure").await;
    let vf = alerts(record(&v, "app"), "pg-vacuum-failure#");
    assert!(
        vf.iter()
            .any(|a| a["resource"] == format!("pg:app/public.{TABLE}")),
        "{v}"
    );
}

fn weekday(offset_days: i64) -> String {
    (nbaops_tests::clock::now() + chrono::Duration::days(offset_days))
        .format("%a")
        .to_string()
        .to_lowercase()
}

fn index_bytes(pg: &Postgres, name: &str) -> i64 {
    pg.psql("app", &format!("select pg_relation_size('{name}')"))
        .unwrap()
        .parse()
        .unwrap()
}

/// Item: leftovers of a failed REINDEX CONCURRENTLY are dropped at any time; a bloated index
/// is rebuilt (REINDEX CONCURRENTLY) only inside the change window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_leftover_dropped_and_bloated_index_rebuilt_in_window_only() {
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
    // What a failed REINDEX CONCURRENTLY leaves: an invalid index named *_ccnew.
    pg.psql_app(
        "app",
        "create table u (k int); insert into u values (1), (1)",
    )
    .unwrap();
    assert!(pg
        .psql_app(
            "app",
            "create unique index concurrently u_k_idx_ccnew on u (k)"
        )
        .is_err());
    assert_eq!(
        pg.psql(
            "app",
            "select indisvalid from pg_index where indexrelid = 'u_k_idx_ccnew'::regclass"
        )
        .unwrap(),
        "f"
    );
    let bloated = index_bytes(&pg, "ix_t_id");
    assert!(bloated > 4_000_000, "{bloated}");

    let roles = stack.put_pg_passwords(&pg, "app", "app").await.unwrap();
    let mut base: Vec<(&str, &str)> = roles
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    base.extend([
        ("NBAOPS_GUARD__BLAST__MAX_PERCENT", "100"),
        ("NBAOPS_GUARD__WINDOW__START", "00:00"),
        ("NBAOPS_GUARD__WINDOW__END", "23:59"),
        ("NBAOPS_GUARD__WINDOW__TZ", "UTC"),
    ]);
    // Window closed (tomorrow only): the leftover goes, the rebuild waits.
    let tomorrow = weekday(1);
    let mut env = base.to_vec();
    env.push(("NBAOPS_GUARD__WINDOW__DAYS", tomorrow.as_str()));
    let vt = start(&stack, "vacuum-trigger", &env).await;
    let v = invoke(&vt, "ix-closed").await;
    let rec = record(&v, "app");
    let drop_action = actions(rec)
        .iter()
        .find(|a| a["action"] == "pg.drop-invalid-index")
        .unwrap_or_else(|| panic!("{rec}"));
    assert_eq!(drop_action["outcome"], "acted", "{rec}");
    assert_eq!(drop_action["resource"], "pg:app/index:public.u_k_idx_ccnew");
    assert_eq!(
        pg.psql(
            "app",
            "select count(*) from pg_class where relname = 'u_k_idx_ccnew'"
        )
        .unwrap(),
        "0"
    );
    // The maintenance role cannot read the table's pg_stats (no SELECT on it), so the index's
    // bloat is known only by measuring it, which happens only in the window: outside it the
    // rebuild is either not planned or stopped by the window — never done.
    if let Some(reindex) = actions(rec).iter().find(|a| a["action"] == "pg.reindex") {
        assert_eq!(reindex["outcome"], "skipped", "{rec}");
        assert_eq!(reindex["stopped_by"], "change_window", "{rec}");
    }
    assert_eq!(index_bytes(&pg, "ix_t_id"), bloated);
    drop(vt);

    // Window open now: rebuilt online, the audit carries the sizes.
    let today = weekday(0);
    let mut env = base.to_vec();
    env.push(("NBAOPS_GUARD__WINDOW__DAYS", today.as_str()));
    let vt = start(&stack, "vacuum-trigger", &env).await;
    let v = invoke(&vt, "ix-open").await;
    let rec = record(&v, "app");
    let reindex = actions(rec)
        .iter()
        .find(|a| a["action"] == "pg.reindex")
        .unwrap_or_else(|| panic!("{rec}"));
    assert_eq!(reindex["outcome"], "acted", "{rec}\n{}", vt.logs());
    assert_eq!(reindex["resource"], "pg:app/index:public.ix_t_id");
    assert!(
        reindex["reason"].as_str().unwrap().contains("pgstatindex"),
        "confirmed by measurement: {reindex}"
    );
    let after = index_bytes(&pg, "ix_t_id");
    assert!(after * 4 < bloated, "{bloated} -> {after}");
    assert_eq!(reindex["after"]["bytes"].as_i64().unwrap(), after);
    assert_eq!(
        pg.psql("app", "select count(*) from pg_index where not indisvalid")
            .unwrap(),
        "0"
    );
}

/// Item: unused indexes only with old enough statistics, slow queries from pg_stat_statements,
/// dead tuples growing while nothing vacuums; and a statement timeout is a clean finding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_index_slow_query_stalled_vacuum_and_statement_timeout() {
    let stack = Stack::start(false).await.unwrap();
    let pg = Postgres::start().unwrap();
    pg.as_rds("app").unwrap();
    pg.psql_app(
        "app",
        "create table quiet (id int, v int) with (autovacuum_enabled = false); \
         insert into quiet select g, g from generate_series(1, 10000) g; \
         create index quiet_v on quiet (v); \
         delete from quiet where id <= 3000",
    )
    .unwrap();
    for _ in 0..3 {
        pg.psql_app("app", "select pg_sleep(0.15)").unwrap();
    }
    let roles = stack.put_pg_passwords(&pg, "app", "app").await.unwrap();
    let mut base: Vec<(&str, &str)> = roles
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    base.extend([
        ("NBAOPS_PG__SLOW_QUERY__MEAN_MS", "100"),
        ("NBAOPS_PG__SLOW_QUERY__MIN_CALLS", "2"),
        ("NBAOPS_PG__UNUSED_INDEX__MIN_BYTES", "0"),
    ]);
    // Statistics of a cluster started seconds ago are too young to call an index unused.
    let health = start(&stack, "pg-health", &base).await;
    let v = invoke(&health, "extras-1").await;
    let rec = record(&v, "app");
    assert!(alerts(rec, "pg-unused-index#").is_empty(), "{rec}");
    let slow = alerts(rec, "pg-slow-query#");
    assert_eq!(slow.len(), 1, "{rec}");
    assert!(
        slow[0]["summary"].as_str().unwrap().contains("pg_sleep"),
        "{}",
        slow[0]
    );
    assert!(alerts(rec, "pg-vacuum-failure#").is_empty(), "{rec}");
    drop(health);

    // More dead tuples, still no vacuum (autovacuum off on it): the second look sees VACUUM
    // not keeping up. With a zero statistics age the never-scanned index is reported.
    pg.psql_app("app", "delete from quiet where id <= 6000")
        .unwrap();
    let mut env = base.to_vec();
    env.push(("NBAOPS_PG__UNUSED_INDEX__MIN_STATS_AGE_DAYS", "0"));
    let health = start(&stack, "pg-health", &env).await;
    let v = invoke(&health, "extras-2").await;
    let rec = record(&v, "app");
    let unused = alerts(rec, "pg-unused-index#");
    assert_eq!(unused.len(), 1, "{rec}");
    assert_eq!(unused[0]["resource"], "pg:app/index:public.quiet_v");
    let stalled = alerts(rec, "pg-vacuum-failure#");
    assert_eq!(stalled.len(), 1, "{rec}");
    assert!(
        stalled[0]["summary"]
            .as_str()
            .unwrap()
            .contains("3000 -> 6000"),
        "{}",
        stalled[0]
    );
    drop(health);

    // A statement timeout nothing can meet: findings, not a crash, and not "unreachable".
    pg.psql_app(
        "app",
        "do $$ begin for i in 1..2000 loop execute format('create table many_%s (id int)', i); end loop; end $$",
    )
    .unwrap();
    let mut env = base.to_vec();
    env.push(("NBAOPS_PG__STATEMENT_TIMEOUT_MS", "1"));
    let health = start(&stack, "pg-health", &env).await;
    let v = invoke(&health, "timeout-1").await;
    let rec = record(&v, "app");
    assert!(alerts(rec, "pg-unreachable#").is_empty(), "{rec}");
    let failed = alerts(rec, "pg-check-failed#");
    assert_eq!(failed.len(), 1, "{rec}");
    assert!(
        failed[0]["summary"]
            .as_str()
            .unwrap()
            .contains("statement timeout"),
        "{}",
        failed[0]
    );
    drop(health);
    let health = start(&stack, "pg-health", &base).await;
    let v = invoke(&health, "timeout-2").await;
    let resolved = alerts(record(&v, "app"), "pg-check-failed#");
    assert_eq!(resolved.len(), 1, "{v}");
    assert_eq!(resolved[0]["status"], "resolved");
}

/// Item: a real deadlock shows in the next run's rate; a restart gives no absurd delta; a
/// stopped server is a P1 finding and the run after the restart recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlock_restart_and_stopped_server() {
    let stack = Stack::start(false).await.unwrap();
    let pg = Postgres::start().unwrap();
    pg.as_rds("app").unwrap();
    pg.psql_app(
        "app",
        "create table d (id int primary key); insert into d values (1), (2)",
    )
    .unwrap();
    let roles = stack.put_pg_passwords(&pg, "app", "app").await.unwrap();
    let mut env: Vec<(&str, &str)> = roles
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    env.push(("NBAOPS_PG__DEADLOCKS__WARN_PER_HOUR", "0"));
    let health = start(&stack, "pg-health", &env).await;
    let v = invoke(&health, "dl-1").await;
    assert!(alerts(record(&v, "app"), "pg-deadlocks#").is_empty(), "{v}");

    // Two sessions taking two rows in opposite order.
    let connect = || async {
        let (c, conn) = tokio_postgres::connect(
            &format!("host=127.0.0.1 port={} user=nbaops_app dbname=app", pg.port),
            tokio_postgres::NoTls,
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        c
    };
    let (a, b) = (connect().await, connect().await);
    a.batch_execute("begin; update d set id = id where id = 1")
        .await
        .unwrap();
    b.batch_execute("begin; update d set id = id where id = 2")
        .await
        .unwrap();
    let (ra, rb) = tokio::join!(
        a.batch_execute("update d set id = id where id = 2"),
        b.batch_execute("update d set id = id where id = 1")
    );
    let victims = [&ra, &rb]
        .iter()
        .filter(|r| {
            r.as_ref()
                .err()
                .and_then(|e| e.code())
                .is_some_and(|c| *c == tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED)
        })
        .count();
    assert_eq!(victims, 1, "{ra:?} {rb:?}");
    let _ = a.batch_execute("rollback").await;
    let _ = b.batch_execute("rollback").await;
    drop((a, b));
    let started = std::time::Instant::now();
    while pg
        .psql(
            "app",
            "select deadlocks from pg_stat_database where datname = 'app'",
        )
        .unwrap()
        != "1"
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "deadlock not counted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let v = invoke(&health, "dl-2").await;
    let dl = alerts(record(&v, "app"), "pg-deadlocks#");
    assert_eq!(dl.len(), 1, "{v}");
    assert_eq!(dl[0]["details"]["observed"]["deadlocks"], 1, "{}", dl[0]);

    // A clean restart: counters survive on PG15+ but the postmaster start moved; either way
    // the run re-takes its baseline, announces nothing and resolves nothing.
    pg.restart().unwrap();
    let v = invoke(&health, "dl-3").await;
    let rec = record(&v, "app");
    assert!(
        rec["notes"]
            .to_string()
            .contains("counters restarted (server restarted"),
        "{rec}"
    );
    assert!(alerts(rec, "pg-deadlocks#").is_empty(), "{rec}");
    // The next run has a clean delta: no new deadlock, the old finding resolves.
    let v = invoke(&health, "dl-4").await;
    let dl = alerts(record(&v, "app"), "pg-deadlocks#");
    assert_eq!(dl.len(), 1, "{v}");
    assert_eq!(dl[0]["status"], "resolved");
    for line in health
        .logs()
        .lines()
        .filter(|l| l.contains("DeadlocksPerHour"))
    {
        let m: Value = serde_json::from_str(line).unwrap();
        let rate = m["DeadlocksPerHour"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&rate), "{line}");
    }

    // Stopped between runs: a P1, not a crash. Back up: resolved.
    pg.stop().unwrap();
    let v = invoke(&health, "dl-5").await;
    let down = alerts(record(&v, "app"), "pg-unreachable#");
    assert_eq!(down.len(), 1, "{v}");
    assert_eq!(down[0]["severity"], "P1");
    pg.start_again().unwrap();
    let v = invoke(&health, "dl-6").await;
    let up = alerts(record(&v, "app"), "pg-unreachable#");
    assert_eq!(up.len(), 1, "{v}");
    assert_eq!(up[0]["status"], "resolved");
}

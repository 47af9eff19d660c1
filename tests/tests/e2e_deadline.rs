//! The Lambda deadline, end to end: the harness's Runtime API hands out a short
//! `Lambda-Runtime-Deadline-Ms` (as Lambda does from the function's timeout) and the real binary
//! must not start an action it cannot finish, and must say in its response what it left and why.

use std::time::{Duration, Instant};

use nbaops_tests::demo::Stack;
use nbaops_tests::function::FunctionUnderTest;
use nbaops_tests::function_binary;
use nbaops_tests::platform::{self, GroupView};
use nbaops_tests::platform::{create_test_env, OFFICE, TEST_DB, TEST_WEB};
use nbaops_tests::postgres::Postgres;
use nbaops_tests::runtime_api::DEFAULT_DEADLINE;
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

fn outcomes(rec: &Value) -> Vec<(String, String)> {
    rec["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                format!(
                    "{} {}",
                    a["action"].as_str().unwrap(),
                    a["resource"].as_str().unwrap()
                ),
                a["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn left_note(rec: &Value) -> String {
    rec["notes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .find(|n| n.contains("left for the next run"))
        .unwrap_or_else(|| panic!("no partial report: {rec}"))
        .to_string()
}

async fn db_status(stack: &Stack) -> String {
    let out = stack
        .clients
        .rds
        .describe_db_instances()
        .db_instance_identifier(TEST_DB)
        .send()
        .await
        .unwrap();
    out.db_instances()[0]
        .db_instance_status()
        .unwrap_or_default()
        .to_string()
}

/// Item: offhours with less time left than one AWS action needs (6 s < 2 s margin + 8 s, the SDK's operation timeout) starts
/// nothing and names both members it left; with Lambda's usual time the same tick stops both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offhours_with_no_time_left_starts_nothing_and_names_what_it_left() {
    let stack = Stack::start(false).await.unwrap();
    create_test_env(&stack).await;
    let f = start(
        &stack,
        "offhours",
        &[
            ("NBAOPS_OFFHOURS__SCHEDULES", OFFICE),
            ("NBAOPS_GUARD__BLAST__MAX_PERCENT", "100"),
        ],
    )
    .await;
    f.api().set_deadline(Duration::from_secs(6));
    // 19:00 in Paris: the group then the database are due to stop.
    let tick =
        |id: &str| json!({"nbaops": {"task": "offhours", "at": "2026-12-02T18:00:00Z", "id": id}});
    let v = f.invoke_ok(tick("short")).await.unwrap();
    let rec = &v["records"][0];
    assert!(outcomes(rec).is_empty(), "{rec}");
    let note = left_note(rec);
    assert!(note.starts_with("Lambda deadline: "), "{note}");
    assert!(
        note.ends_with(&format!(
            "2 item(s) left for the next run: asg:{TEST_WEB}, rds:{TEST_DB}"
        )),
        "{note}"
    );
    let web = platform::group_view(&stack.clients, TEST_WEB)
        .await
        .unwrap();
    assert_eq!(
        web,
        GroupView {
            desired: 2,
            min: 1,
            max: 4
        }
    );
    assert_eq!(db_status(&stack).await, "available");
    assert!(
        platform::drain(&stack.clients, &stack.platform.actions_queue)
            .await
            .unwrap()
            .is_empty()
    );

    f.api().set_deadline(DEFAULT_DEADLINE);
    let v = f.invoke_ok(tick("normal")).await.unwrap();
    let rec = &v["records"][0];
    assert_eq!(
        outcomes(rec),
        vec![
            (
                format!("asg.offhours_stop asg:{TEST_WEB}"),
                "acted".to_string()
            ),
            (
                format!("rds.offhours_stop rds:{TEST_DB}"),
                "acted".to_string()
            ),
        ],
        "{rec}"
    );
    assert!(!rec["notes"].to_string().contains("left for the next run"));
}

/// Item: vacuum-trigger with a 10 s deadline and a 3 s margin starts its first item (the drop of
/// a REINDEX leftover), which waits on a lock the test holds until lock_timeout (6 s) or the
/// statement_timeout capped to the time left cuts it; after it, less than a second of usable
/// time is left, so the two bloated tables are not started: the response names them, nothing
/// else was audited, and it came back before the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vacuum_trigger_stops_at_the_deadline_with_a_partial_report() {
    let stack = Stack::start(false).await.unwrap();
    let pg = Postgres::start().unwrap();
    pg.as_rds("app").unwrap();
    for t in ["first", "second"] {
        pg.psql_app(
            "app",
            &format!(
                "create table {t} (id int, payload text) with (autovacuum_enabled = false); \
                 insert into {t} select g, repeat('x', 100) from generate_series(1, 20000) g; \
                 delete from {t} where id % 5 <> 0; analyze {t}"
            ),
        )
        .unwrap();
    }
    // A failed CREATE UNIQUE INDEX CONCURRENTLY leaves an invalid index named like a
    // REINDEX CONCURRENTLY leftover; a transaction on its table holds the drop back.
    pg.psql_app(
        "app",
        "create table u (k int); insert into u values (1), (1)",
    )
    .unwrap();
    assert!(pg
        .psql_app("app", "create unique index concurrently u_k_ccnew on u (k)")
        .is_err());
    let (blocker, conn) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={} user=postgres dbname=app", pg.port),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    blocker
        .batch_execute("begin; insert into u values (2)")
        .await
        .unwrap();

    let roles = stack.put_pg_passwords(&pg, "app", "app").await.unwrap();
    let mut env: Vec<(&str, &str)> = roles
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    env.extend([
        ("NBAOPS_PG__VACUUM__DEADLINE_MARGIN_SECONDS", "3"),
        ("NBAOPS_PG__VACUUM__LOCK_TIMEOUT_MS", "6000"),
        ("NBAOPS_GUARD__BLAST__MAX_PERCENT", "100"),
    ]);
    let vt = start(&stack, "vacuum-trigger", &env).await;
    vt.api().set_deadline(Duration::from_secs(10));
    let started = Instant::now();
    let v = vt
        .invoke_ok(json!({"nbaops": {"task": vt.name(), "id": "vt-deadline"}}))
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered after the deadline: {:?}",
        started.elapsed()
    );
    let rec = &v["records"][0];
    assert_eq!(
        outcomes(rec),
        vec![(
            "pg.drop-invalid-index pg:app/index:public.u_k_ccnew".to_string(),
            "failed".to_string()
        )],
        "{rec}"
    );
    let note = left_note(rec);
    assert!(note.starts_with("Lambda deadline: "), "{note}");
    assert!(
        note.ends_with(
            "2 item(s) left for the next run: vacuum-analyze public.first, vacuum-analyze public.second"
        ) || note.ends_with(
            "2 item(s) left for the next run: vacuum-analyze public.second, vacuum-analyze public.first"
        ),
        "{note}"
    );
    let dead: i64 = pg
        .psql(
            "app",
            "select sum(n_dead_tup) from pg_stat_user_tables where relname in ('first', 'second')",
        )
        .unwrap()
        .parse()
        .unwrap();
    assert!(dead >= 30_000, "nothing was vacuumed: {dead}");
    let audits = platform::drain(&stack.clients, &stack.platform.actions_queue)
        .await
        .unwrap();
    assert_eq!(audits.len(), 1, "{audits:?}");
    blocker.batch_execute("rollback").await.unwrap();
}

//! pg-health's bound on pgstattuple_approx, end to end: the real binary as `nbaops_monitor` over
//! TLS against a real PostgreSQL. With more bloat candidates than `pg.bloat.measure_per_run`,
//! each run measures that many (never measured first, largest first; then the oldest figure),
//! the others keep their figure of the day, the run says what it did not measure, and every
//! candidate is found within ceil(candidates / N) runs — no finding flaps between runs.

use std::time::Duration;

use nbaops_tests::demo::Stack;
use nbaops_tests::function::FunctionUnderTest;
use nbaops_tests::function_binary;
use nbaops_tests::postgres::Postgres;
use nbaops_tests::runtime_api::Outcome;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bloat_measurements_rotate_and_report_what_they_skipped() {
    let stack = Stack::start(false).await.unwrap();
    let pg = Postgres::start().unwrap();
    pg.as_rds("app").unwrap();
    // Five bloated tables of distinct sizes (b5 largest), 60 % of their rows dead. The monitor
    // cannot read their pg_stats, so only a measurement gives a number.
    for i in 1..=5 {
        pg.psql_app(
            "app",
            &format!(
                "create table b{i} (id int, payload text) with (autovacuum_enabled = false); \
                 insert into b{i} select g, repeat('x', 100) from generate_series(1, {}) g; \
                 delete from b{i} where id % 5 < 3",
                2000 + 500 * i
            ),
        )
        .unwrap();
    }
    pg.psql_app("app", "analyze").unwrap();
    let roles = stack.put_pg_passwords(&pg, "app", "app").await.unwrap();
    let mut env: Vec<(&str, &str)> = roles
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    env.extend([
        ("NBAOPS_PG__BLOAT__MEASURE_PER_RUN", "2"),
        ("NBAOPS_PG__BLOAT__MIN_BYTES", "65536"),
    ]);
    let f = FunctionUnderTest::start(
        &function_binary("pg-health").unwrap(),
        "pg-health",
        &stack.function_env(&env),
        1,
    )
    .await
    .unwrap();

    let mut announced: Vec<Vec<String>> = vec![];
    let mut notes_per_run: Vec<String> = vec![];
    for run in 1..=4 {
        let payload = json!({"nbaops": {"task": f.name(), "id": format!("scale-{run}")}});
        let v = match f
            .invoke(payload, Duration::from_secs(60))
            .await
            .unwrap()
            .outcome
        {
            Outcome::Response(v) => v,
            other => panic!("{other:?}\n{}", f.logs()),
        };
        let rec = &v["records"][0];
        let mut bloat: Vec<String> = rec["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["dedup_key"].as_str().unwrap().starts_with("pg-bloat#"))
            .map(|a| {
                assert_ne!(a["status"], "resolved", "a finding flapped: {a}");
                assert_eq!(
                    a["details"]["observed"]["source"], "measured (pgstattuple_approx)",
                    "{a}"
                );
                a["resource"].as_str().unwrap().to_string()
            })
            .collect();
        bloat.sort();
        announced.push(bloat);
        notes_per_run.push(
            rec["notes"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .find(|n| n.starts_with("bloat:"))
                .unwrap_or("")
                .to_string(),
        );
    }
    let t = |i: i32| format!("pg:app/public.b{i}");
    // Two per run, unmeasured and largest first; then the oldest figure again.
    assert_eq!(
        announced,
        vec![vec![t(4), t(5)], vec![t(2), t(3)], vec![t(1)], vec![]],
        "{notes_per_run:#?}"
    );
    assert!(
        notes_per_run[0].contains("5 candidate(s), 2 measured this run")
            && notes_per_run[0].contains("0 kept an earlier figure, 3 not measured yet")
            && notes_per_run[0].contains("public.b1"),
        "{}",
        notes_per_run[0]
    );
    assert!(
        notes_per_run[1].contains("2 kept an earlier figure, 1 not measured yet: public.b1"),
        "{}",
        notes_per_run[1]
    );
    assert!(
        notes_per_run[2].contains("3 kept an earlier figure, 0 not measured yet"),
        "{}",
        notes_per_run[2]
    );
    // Steady state: every table keeps its open finding, two are re-measured per run.
    assert!(
        notes_per_run[3].contains("2 measured this run")
            && notes_per_run[3].contains("3 kept an earlier figure, 0 not measured yet"),
        "{}",
        notes_per_run[3]
    );
    // The unmeasured count is a metric too. The metrics line is written after the answer is
    // sent, so the last run's may still be on its way: wait for it (bounded).
    let metric = || -> Vec<f64> {
        f.logs()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|m| m["BloatCandidatesUnmeasured"].as_f64())
            .collect()
    };
    let mut unmeasured = metric();
    for _ in 0..50 {
        if unmeasured.len() >= 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        unmeasured = metric();
    }
    assert_eq!(unmeasured, vec![3.0, 3.0, 3.0, 3.0], "{}", f.logs());
}

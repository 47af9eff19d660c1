//! Issue #20, the fan-out: a pg-health sweep of 20 databases on the local PostgreSQL cluster (TLS,
//! the monitor role infra/sql makes, its password from SSM) dispatched through an SQS work queue
//! on moto and consumed by a local event source mapping at concurrency 4 (tests/src/esm.rs) that
//! hands each batch to the real pg-health binary through the Runtime API. A 21st database cannot
//! be reached: only its own message fails, is received again, and on the queue's last receive
//! raises one P2 and lands in the dead-letter queue; the 20 others are checked once each.
//!
//! What is counted comes from the systems themselves: the sessions from PostgreSQL's own log
//! (`log_connections`, `log_disconnections`), the receives from SQS's `ApproximateReceiveCount`,
//! the dead letters from the DLQ, the alerts from the alerts topic.

use std::collections::BTreeMap;
use std::time::Duration;

use nbaops_tests::demo::Stack;
use nbaops_tests::esm::{self, Mapping};
use nbaops_tests::function::FunctionUnderTest;
use nbaops_tests::postgres::{url_at, Postgres, ROLE_PASSWORD};
use nbaops_tests::{function_binary, platform};
use serde_json::{json, Value};

const DATABASES: usize = 20;
const CONCURRENCY: usize = 4;
const MAX_RECEIVE_COUNT: u32 = 3;

/// (timestamp, +1 / -1, database) of every session of `user`, from the server log
/// (log_line_prefix '%m [%p] ': "2026-12-01 07:50:01.123 UTC [1234] LOG:  connection authorized:
/// user=nbaops_monitor database=db01 ..." and "... disconnection: session time: ... user=...").
fn sessions(log: &str, user: &str) -> Vec<(String, i32, String)> {
    let field = |line: &str, key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .unwrap_or("")
            .to_string()
    };
    log.lines()
        .filter(|l| l.contains(&format!("user={user} ")))
        .filter_map(|l| {
            let at = l.get(..23)?.to_string();
            let delta = if l.contains("connection authorized:") {
                1
            } else if l.contains("disconnection:") {
                -1
            } else {
                return None;
            };
            Some((at, delta, field(l, "database=")))
        })
        .collect()
}

/// The most sessions open at once (a disconnection in the same millisecond counted first).
fn peak_sessions(mut events: Vec<(String, i32, String)>) -> i32 {
    events.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut open, mut peak) = (0, 0);
    for (_, d, _) in events {
        open += d;
        peak = peak.max(open);
    }
    peak
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_through_sqs_checks_each_database_once_at_most_4_at_a_time_and_dead_letters_only_the_unreachable_one(
) {
    let stack = Stack::start(false).await.unwrap();
    let pg = Postgres::start().unwrap();
    pg.psql("postgres", "ALTER SYSTEM SET log_disconnections = on")
        .unwrap();
    pg.psql("postgres", "SELECT pg_reload_conf()").unwrap();
    let names: Vec<String> = (1..=DATABASES).map(|i| format!("db{i:02}")).collect();
    let mut databases = Vec::new();
    for n in names.iter().map(String::as_str).chain(["gone"]) {
        stack
            .put_secret(
                &format!("/nbaops/{}/secrets/pg/{n}/monitor", platform::ENV),
                ROLE_PASSWORD,
            )
            .await
            .unwrap();
    }
    for n in &names {
        pg.as_rds(n).unwrap();
        databases.push(format!("{n}={}", pg.url_as("nbaops_monitor", n)));
    }
    // Nothing listens there: connection refused, every time.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    databases.push(format!("gone={}", url_at(closed, "nbaops_monitor", "gone")));

    let sqs = &stack.clients.sqs;
    let (queue_url, queue_arn, dlq_url) =
        esm::create_work_queue(sqs, "nbaops-dev-pg-health-work", MAX_RECEIVE_COUNT)
            .await
            .unwrap();
    let max_receive = MAX_RECEIVE_COUNT.to_string();
    let env = stack.function_env(&[
        ("NBAOPS_PG__DATABASES", &databases.join(",")),
        ("NBAOPS_PG__MONITOR_USER", "nbaops_monitor"),
        ("NBAOPS_FANOUT__QUEUE_URL", &queue_url),
        ("NBAOPS_FANOUT__TARGET_BUDGET_SECONDS", "14"),
        ("NBAOPS_FANOUT__MAX_RECEIVE_COUNT", &max_receive),
    ]);
    // More instances than the mapping's concurrency: the bound is the mapping's, as on Lambda.
    let health = FunctionUnderTest::start(
        &function_binary("pg-health").unwrap(),
        "pg-health",
        &env,
        CONCURRENCY + 2,
    )
    .await
    .unwrap();

    // The dispatch: one work item per database, nothing scanned yet.
    let v = health
        .invoke_ok(json!({"nbaops": {"task": "dispatch", "work": "pg-health", "id": "sweep-1"}}))
        .await
        .unwrap();
    let summary = v["records"][0]["summary"].as_str().unwrap_or("");
    assert!(
        summary.starts_with(&format!(
            "dispatched {} work item(s) of pg-health to {queue_url}",
            DATABASES + 1
        )),
        "{v}"
    );
    assert_eq!(
        esm::depth(sqs, &queue_url).await.unwrap(),
        (DATABASES as i64 + 1, 0)
    );
    assert!(
        sessions(&pg.server_log(), "nbaops_monitor").is_empty(),
        "the dispatch opened a session"
    );

    // The sweep.
    let mapping = Mapping {
        queue_url: queue_url.clone(),
        queue_arn,
        region: "us-east-1".into(),
        concurrency: CONCURRENCY,
        batch_size: 4,
        retry_after: Duration::ZERO,
        timeout: Duration::from_secs(300),
    };
    let sweep = esm::run(sqs, &health, &mapping).await.unwrap();
    for r in sweep.responses() {
        nbaops_tests::explain::check_response(r).unwrap();
    }
    assert!(
        sweep.peak_concurrency <= CONCURRENCY,
        "{} invocations at once",
        sweep.peak_concurrency
    );
    let left = esm::depth(sqs, &queue_url).await.unwrap();
    if left != (0, 0) {
        let r = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .send()
            .await
            .unwrap();
        let receives = sweep.receives_by_message();
        let failed: Vec<&String> = sweep.deliveries.iter().flat_map(|d| &d.failed).collect();
        panic!(
            "left {left:?}: {:?}\nreceives {receives:?}\nfailed {failed:?}\ndeleted {}",
            r.messages(),
            sweep.deleted
        );
    }

    // Each healthy database checked exactly once: one record in the answers, one session on
    // the server; never more than 4 sessions at once.
    let mut records: BTreeMap<String, usize> = BTreeMap::new();
    for r in sweep.responses() {
        for rec in r["records"].as_array().unwrap() {
            if let Some(db) = rec["summary"]
                .as_str()
                .and_then(|s| s.strip_prefix("pg:"))
                .and_then(|s| s.split(':').next())
            {
                *records.entry(db.to_string()).or_default() += 1;
            }
        }
    }
    let log = pg.server_log();
    let events = sessions(&log, "nbaops_monitor");
    let mut per_db: BTreeMap<String, usize> = BTreeMap::new();
    for (_, d, db) in &events {
        if *d == 1 {
            *per_db.entry(db.clone()).or_default() += 1;
        }
    }
    for n in &names {
        assert_eq!(
            records.get(n),
            Some(&1),
            "records of {n}: {records:?} {:?}",
            sweep.deliveries.first()
        );
        assert_eq!(per_db.get(n), Some(&1), "sessions of {n}: {per_db:?}");
    }
    assert_eq!(per_db.len(), DATABASES, "{per_db:?}");
    let peak = peak_sessions(events);
    assert!(
        (1..=CONCURRENCY as i32).contains(&peak),
        "{peak} monitor sessions at once"
    );

    // The unreachable one: received 3 times (recorded each time, failed each time), then in the
    // DLQ; no other message ever failed.
    assert_eq!(
        records.get("gone"),
        Some(&(MAX_RECEIVE_COUNT as usize)),
        "{records:?}"
    );
    let failed: Vec<&String> = sweep.deliveries.iter().flat_map(|d| &d.failed).collect();
    assert_eq!(failed.len(), MAX_RECEIVE_COUNT as usize, "{failed:?}");
    assert!(failed.iter().all(|id| *id == failed[0]), "{failed:?}");
    let receives = sweep.receives_by_message();
    assert_eq!(receives.len(), DATABASES + 1);
    assert_eq!(receives[failed[0]], MAX_RECEIVE_COUNT as usize);
    assert!(
        receives
            .iter()
            .filter(|(id, _)| *id != failed[0])
            .all(|(_, n)| *n == 1),
        "{receives:?}"
    );
    assert_eq!(sweep.deleted, DATABASES);
    let dead = esm::peek_bodies(sqs, &dlq_url).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["nbaops"]["target"], "gone");
    assert_eq!(dead[0]["nbaops"]["task"], "pg-health");

    // One P2 on the last receive; the database's own finding announced once (an open finding).
    let alerts = platform::drain(&stack.clients, &stack.platform.alerts_queue)
        .await
        .unwrap();
    let kind = |prefix: &str| -> Vec<&Value> {
        alerts
            .iter()
            .filter(|a| a["dedup_key"].as_str().unwrap_or("").starts_with(prefix))
            .collect()
    };
    let dlq = kind("work-dlq#");
    assert_eq!(dlq.len(), 1, "{alerts:?}");
    assert_eq!(dlq[0]["dedup_key"], "work-dlq#pg-health#gone");
    assert_eq!(dlq[0]["severity"], "P2");
    assert_eq!(
        dlq[0]["summary"],
        format!("target gone failed {MAX_RECEIVE_COUNT} times, moved to the DLQ")
    );
    assert_eq!(dlq[0]["details"]["receives"], MAX_RECEIVE_COUNT);
    assert_eq!(kind("pg-unreachable#pg:gone").len(), 1, "{alerts:?}");
    assert!(
        kind("pg-unreachable#").len() == 1,
        "a healthy database was reported unreachable: {alerts:?}"
    );
}

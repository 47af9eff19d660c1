//! failover-notify end to end: the real binary over the Lambda Runtime API, moto for the RDS
//! instance (nbaops-dev-db from platform.rs), the ledger, the topics and SSM, and a real
//! PostgreSQL primary with a streaming replica for the verification. moto's reboot-with-failover
//! changes nothing, so the failover is told by the events and, for PostgreSQL, by promoting the
//! real standby.

use nbaops_tests::demo::Stack;
use nbaops_tests::function::FunctionUnderTest;
use nbaops_tests::platform::{self, DB};
use nbaops_tests::postgres::Postgres;
use nbaops_tests::{function_binary, workspace_root};
use serde_json::{json, Value};

const FN: &str = "failover-notify";
const START: &str = "events/rds/eventbridge-failover-started.json";
const START_SNS: &str = "events/rds/sns-failover-started.json";
const DONE: &str = "events/rds/eventbridge-failover-completed.json";
const SWEEP: &str = "events/schedule/failover-sweep.json";

/// A fixture moved onto the test clock: its RDS events happened on 2026-11-25 shortly after
/// 20:00 UTC; every such timestamp is shifted by the same amount so that 20:05 that day is now.
/// (The sweep judges an incident's age on the function's clock: fixed dates would make the same
/// test pass or fail depending on the clock it runs at.)
fn fixture(path: &str) -> Value {
    let text = std::fs::read_to_string(workspace_root().join(path)).unwrap();
    // Whole seconds: every stamp keeps its own fraction, so durations between events stay exact.
    // One shift for the whole run: computed per fixture, a second boundary passing between the
    // started and the completed event moved them apart by a second (seen at 2026-11-30T23:40).
    static SHIFT: std::sync::OnceLock<chrono::Duration> = std::sync::OnceLock::new();
    let shift = *SHIFT.get_or_init(|| {
        let anchor = chrono::DateTime::parse_from_rfc3339("2026-11-25T20:05:00Z").unwrap();
        chrono::Duration::seconds(
            (nbaops_tests::clock::now() - anchor.with_timezone(&chrono::Utc)).num_seconds(),
        )
    });
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("2026-11-25") {
        out.push_str(&rest[..i]);
        let stamp = &rest[i..];
        // "2026-11-25T20:01:02" or "2026-11-25 20:01:02": date, separator, time (19 chars).
        let sep = stamp.as_bytes().get(10).copied().unwrap_or(b'T') as char;
        match chrono::NaiveDateTime::parse_from_str(
            &stamp[..19.min(stamp.len())],
            &format!("%Y-%m-%d{sep}%H:%M:%S"),
        ) {
            Ok(t) => {
                let moved = t + shift;
                out.push_str(&moved.format(&format!("%Y-%m-%d{sep}%H:%M:%S")).to_string());
                rest = &stamp[19..];
            }
            Err(_) => {
                out.push_str(&stamp[..10]);
                rest = &stamp[10..];
            }
        }
    }
    out.push_str(rest);
    serde_json::from_str(&out).unwrap()
}

/// The cluster as RDS gives it with infra/sql applied, and the failover role's password where a
/// deployment keeps it (`/nbaops/<env>/secrets/failover/<db>`). Before any replica is made (the
/// replica copies the roles and the heartbeat table).
async fn failover_role(stack: &Stack, pg: &Postgres) {
    pg.as_rds("app").unwrap();
    stack
        .put_secret(
            &format!("/nbaops/dev/secrets/failover/{DB}"),
            nbaops_tests::postgres::ROLE_PASSWORD,
        )
        .await
        .unwrap();
}

async fn start(stack: &Stack, target_url: &str, replicas: u32) -> FunctionUnderTest {
    let urls = json!({ DB: target_url }).to_string();
    let expected = json!({ DB: replicas }).to_string();
    let env = [
        ("NBAOPS_FAILOVER__VERIFY__URLS", urls.as_str()),
        (
            "NBAOPS_FAILOVER__VERIFY__EXPECTED_REPLICAS",
            expected.as_str(),
        ),
        ("NBAOPS_FAILOVER__VERIFY__ATTEMPTS", "2"),
        ("NBAOPS_FAILOVER__VERIFY__RETRY_SECONDS", "1"),
    ];
    FunctionUnderTest::start(
        &function_binary(FN).unwrap(),
        FN,
        &stack.function_env(&env),
        1,
    )
    .await
    .unwrap()
}

async fn invoke(f: &FunctionUnderTest, payload: Value) -> Value {
    f.invoke_ok(payload).await.unwrap()
}

async fn alerts(stack: &Stack) -> Vec<Value> {
    platform::drain(&stack.clients, &stack.platform.alerts_queue)
        .await
        .unwrap()
}

fn with_status<'a>(alerts: &'a [Value], status: &str) -> Vec<&'a Value> {
    alerts.iter().filter(|a| a["status"] == status).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_then_completed_is_p2_with_duration_and_a_passing_verification() {
    let stack = Stack::start(false).await.unwrap();
    let pg = Postgres::start().unwrap();
    failover_role(&stack, &pg).await;
    let _replica = pg.start_replica().unwrap();
    let f = start(&stack, &pg.url_as("nbaops_failover", "postgres"), 1).await;

    invoke(&f, fixture(START)).await;
    let v = invoke(&f, fixture(DONE)).await;
    let a = alerts(&stack).await;
    assert_eq!(a.len(), 2, "{a:#?}\n{v}");
    assert_eq!(
        a[0]["dedup_key"], a[1]["dedup_key"],
        "one failover, one thread"
    );
    let firing = with_status(&a, "firing");
    assert_eq!(firing.len(), 1, "{a:#?}");
    assert_eq!(firing[0]["severity"], "P2");
    assert!(firing[0]["summary"].as_str().unwrap().contains("started"));
    let done = with_status(&a, "resolved");
    assert_eq!(done.len(), 1, "{a:#?}");
    let done = done[0];
    assert_eq!(done["severity"], "P2", "{done:#}");
    assert_eq!(done["details"]["duration_seconds"], 92.333, "{done:#}");
    assert_eq!(done["details"]["verification"]["passed"], true, "{done:#}");
    let summary = done["summary"].as_str().unwrap();
    assert!(
        summary.contains("in 92 s (expected 60–120 s: as expected)"),
        "{summary}"
    );
    assert!(summary.contains("1/1 replica(s) streaming"), "{summary}");
    // The one harmless write: the heartbeat row, on the real primary (and streamed to the replica).
    assert_eq!(
        pg.psql("postgres", "select source from nbaops_heartbeat")
            .unwrap(),
        "failover-notify"
    );
    // Nothing changed on AWS: the instance is as platform.rs made it, no audit record.
    assert_eq!(
        platform::db_class(&stack.clients, DB).await.unwrap().0,
        "db.t3.micro"
    );
    let counts = platform::ledger_counts(&stack.clients).await.unwrap();
    assert_eq!(counts.get("failover"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("audit"), None, "{counts:?}");
    assert_eq!(counts.get("failover-open"), None, "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_still_in_recovery_is_p1_until_the_standby_is_promoted() {
    let stack = Stack::start(false).await.unwrap();
    let pg = Postgres::start().unwrap();
    failover_role(&stack, &pg).await;
    let standby = pg.start_replica().unwrap();
    let f = start(&stack, &standby.url_as("nbaops_failover", "postgres"), 0).await;

    invoke(&f, fixture(START)).await;
    invoke(&f, fixture(DONE)).await;
    let a = alerts(&stack).await;
    let p1: Vec<&Value> = a.iter().filter(|a| a["severity"] == "P1").collect();
    assert_eq!(p1.len(), 1, "{a:#?}");
    assert_eq!(p1[0]["status"], "firing");
    let summary = p1[0]["summary"].as_str().unwrap();
    assert!(summary.contains("pg_is_in_recovery() is true"), "{summary}");
    assert_eq!(p1[0]["details"]["verification"]["attempts"], 2);
    // No write was tried on the standby.
    assert_eq!(
        standby
            .psql("postgres", "select count(*) from nbaops_heartbeat")
            .unwrap(),
        "0"
    );

    // The failover really happens: the standby becomes the primary; the sweep verifies again.
    standby.promote().unwrap();
    let v = invoke(&f, fixture(SWEEP)).await;
    let a = alerts(&stack).await;
    assert_eq!(a.len(), 1, "{a:#?}\n{v}");
    assert_eq!(a[0]["status"], "resolved");
    assert_eq!(a[0]["severity"], "P1");
    assert_eq!(a[0]["dedup_key"], p1[0]["dedup_key"]);
    assert_eq!(
        standby
            .psql("postgres", "select count(*) from nbaops_heartbeat")
            .unwrap(),
        "1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_and_both_deliveries_make_one_incident() {
    let stack = Stack::start(false).await.unwrap();
    let pg = Postgres::start().unwrap();
    failover_role(&stack, &pg).await;
    let f = start(&stack, &pg.url_as("nbaops_failover", "postgres"), 0).await;
    for path in [START, START_SNS, START, DONE, DONE] {
        invoke(&f, fixture(path)).await;
    }
    let a = alerts(&stack).await;
    assert_eq!(a.len(), 2, "{a:#?}");
    let counts = platform::ledger_counts(&stack.clients).await.unwrap();
    assert_eq!(counts.get("failover"), Some(&1), "{counts:?}");
    // Reversed order on a fresh database id: completion first, then start, still one thread.
    let mut done = fixture(DONE);
    let mut started = fixture(START);
    for ev in [&mut done, &mut started] {
        ev["detail"]["SourceIdentifier"] = json!("nbaops-dev-db-2");
        ev["detail"]["SourceArn"] = json!("arn:aws:rds:us-east-1:123456789012:db:nbaops-dev-db-2");
        ev["id"] = json!(format!("{}-2", ev["id"].as_str().unwrap()));
    }
    invoke(&f, done).await;
    invoke(&f, started).await;
    let a = alerts(&stack).await;
    assert_eq!(a.len(), 2, "{a:#?}");
    assert_eq!(a[0]["dedup_key"], a[1]["dedup_key"]);
    let counts = platform::ledger_counts(&stack.clients).await.unwrap();
    assert_eq!(counts.get("failover"), Some(&2), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_raises_p1_for_a_failover_that_never_completed() {
    let stack = Stack::start(false).await.unwrap();
    let f = start(&stack, "postgres://nobody@127.0.0.1:9/postgres", 0).await;
    let mut ev = fixture(START);
    ev["id"] = json!("stuck-start");
    ev["detail"]["Date"] =
        json!((nbaops_tests::clock::now() - chrono::Duration::minutes(10)).to_rfc3339());
    invoke(&f, ev).await;
    let v = invoke(&f, fixture(SWEEP)).await;
    let a = alerts(&stack).await;
    let p1: Vec<&Value> = a.iter().filter(|a| a["severity"] == "P1").collect();
    assert_eq!(p1.len(), 1, "{a:#?}\n{v}");
    assert!(p1[0]["summary"]
        .as_str()
        .unwrap()
        .contains("has not completed"));
    assert_eq!(p1[0]["status"], "firing");
    // The next tick does not page again.
    invoke(&f, fixture(SWEEP)).await;
    assert!(alerts(&stack).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_without_an_id_or_with_an_unknown_one_are_classified_never_crash() {
    let stack = Stack::start(false).await.unwrap();
    let f = start(&stack, "postgres://nobody@127.0.0.1:9/postgres", 0).await;
    let v = invoke(&f, fixture("events/rds/eventbridge-no-event-id.json")).await;
    let summary = v["records"][0]["summary"].as_str().unwrap();
    assert!(
        summary.contains("no event ID") && summary.contains("category 'notification'"),
        "{v}"
    );
    let v = invoke(&f, fixture("events/rds/eventbridge-unknown-event-id.json")).await;
    assert!(
        v["records"][0]["summary"]
            .as_str()
            .unwrap()
            .contains("RDS-EVENT-0999"),
        "{v}"
    );
    let mut no_category = fixture("events/rds/eventbridge-no-event-id.json");
    no_category["detail"]["EventCategories"] = json!([]);
    let v = invoke(&f, no_category).await;
    assert!(
        v["records"][0]["summary"]
            .as_str()
            .unwrap()
            .contains("by unknown"),
        "{v}"
    );
    let v = invoke(&f, json!({"hello": "world"})).await;
    assert!(v["records"][0]["not_for_me"].is_string(), "{v}");
    let a = alerts(&stack).await;
    assert_eq!(
        a.len(),
        1,
        "only the unknown failover-category event is published: {a:#?}"
    );
    assert_eq!(a[0]["severity"], "P2");
}

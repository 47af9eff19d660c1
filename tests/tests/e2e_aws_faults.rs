//! AWS faults end to end: the real function binaries reach moto through the fault-injecting
//! proxy (`nbaops_tests::faultproxy`), which answers chosen operations with throttling, 5xx, a
//! slow response or a connection reset. What reached AWS is counted from moto's own request
//! recorder, never from the test's bookkeeping or the function's report.

use std::time::{Duration, Instant};

use nbaops_shared::adapters::{SDK_ATTEMPT_TIMEOUT, SDK_MAX_ATTEMPTS, SDK_OPERATION_TIMEOUT};
use nbaops_tests::demo::Stack;
use nbaops_tests::faultproxy::{Fault, FaultProxy, Times};
use nbaops_tests::function::FunctionUnderTest;
use nbaops_tests::platform::{self, WEB};
use nbaops_tests::platform::{create_test_env, OFFICE, TEST_DB};
use nbaops_tests::runtime_api::Outcome;
use nbaops_tests::{function_binary, workspace_root};
use serde_json::{json, Value};

const SCALE: &str = "scale-on-alarm";

fn fixture(path: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(workspace_root().join(path)).unwrap()).unwrap()
}

fn web_alarm() -> Value {
    fixture("events/cloudwatch-alarm/eventbridge-single-metric-alarm.json")
}

async fn start(stack: &Stack, name: &str, extra: &[(&str, &str)]) -> FunctionUnderTest {
    FunctionUnderTest::start(
        &function_binary(name).unwrap(),
        name,
        &stack.function_env(extra),
        1,
    )
    .await
    .unwrap()
}

fn proxy(stack: &Stack) -> &FaultProxy {
    stack.proxy.as_ref().unwrap()
}

async fn web_desired(stack: &Stack) -> i32 {
    platform::group_view(&stack.clients, WEB)
        .await
        .unwrap()
        .desired
}

/// The Lambda timeouts of the template (Globals and every function).
fn template_timeouts() -> Vec<u64> {
    let text = std::fs::read_to_string(workspace_root().join("infra/template.yaml")).unwrap();
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Timeout:"))
        .filter_map(|v| v.trim().parse().ok())
        .collect()
}

/// Lambda stops an invocation at the function's timeout
/// (<https://docs.aws.amazon.com/lambda/latest/dg/configuration-timeout.html>). One SDK call,
/// retries and backoff included, must end well before the shortest of them, so a function that
/// gives up still has time to write its audit record and raise its alert.
#[test]
fn one_sdk_call_ends_well_inside_the_shortest_lambda_timeout() {
    let timeouts = template_timeouts();
    assert!(timeouts.len() >= 9, "timeouts found: {timeouts:?}");
    let shortest = Duration::from_secs(*timeouts.iter().min().unwrap());
    assert!(
        SDK_OPERATION_TIMEOUT + Duration::from_secs(2) <= shortest,
        "SDK operation timeout {SDK_OPERATION_TIMEOUT:?} leaves no room in a {shortest:?} Lambda"
    );
    // Every attempt can run to its own timeout before the operation's runs out.
    assert!(SDK_ATTEMPT_TIMEOUT * 2 <= SDK_OPERATION_TIMEOUT);
    assert_eq!(
        SDK_MAX_ATTEMPTS, 3,
        "the standard mode's documented default"
    );
}

/// (a) Throttling, then a 503, on the one mutating call: the SDK retries, the action succeeds,
/// and exactly one SetDesiredCapacity reached AWS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_503_on_set_desired_capacity_are_retried_to_one_effect() {
    let stack = Stack::start_behind_proxy(false).await.unwrap();
    let f = start(&stack, SCALE, &[]).await;
    let p = proxy(&stack);
    p.inject(
        "autoscaling",
        "SetDesiredCapacity",
        Fault::Throttle,
        Times::First(1),
    );
    p.inject(
        "autoscaling",
        "SetDesiredCapacity",
        Fault::Status(503),
        Times::First(1),
    );
    let v = f.invoke_ok(web_alarm()).await.unwrap();
    let action = &v["records"][0]["actions"][0];
    assert_eq!(action["outcome"], "acted", "{v}");
    assert_eq!(p.faults("autoscaling", "SetDesiredCapacity"), 2);
    assert_eq!(
        stack
            .moto
            .count_calls(SCALE, "autoscaling", "SetDesiredCapacity"),
        1,
        "exactly one effect reached AWS"
    );
    assert_eq!(web_desired(&stack).await, 3);
    let audits = platform::drain(&stack.clients, &stack.platform.actions_queue)
        .await
        .unwrap();
    assert_eq!(audits.len(), 1, "{audits:?}");
    assert_eq!(audits[0]["outcome"], "acted");
}

/// (b) The throttling persists: the function gives up after the SDK's attempts, the audit
/// record says `failed` with the error, a P2 goes out, and the idempotency claim is released so
/// that a later delivery of the same event acts once the fault has cleared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_throttling_fails_audited_with_a_p2_and_a_redelivery_acts() {
    let stack = Stack::start_behind_proxy(false).await.unwrap();
    let f = start(&stack, SCALE, &[]).await;
    let p = proxy(&stack);
    p.inject(
        "autoscaling",
        "SetDesiredCapacity",
        Fault::Throttle,
        Times::Always,
    );
    let v = f.invoke_ok(web_alarm()).await.unwrap();
    let action = &v["records"][0]["actions"][0];
    assert_eq!(action["outcome"], "failed", "{v}");
    assert!(
        action["error"]
            .as_str()
            .unwrap_or("")
            .contains("ThrottlingException"),
        "{v}"
    );
    assert_eq!(
        p.faults("autoscaling", "SetDesiredCapacity"),
        SDK_MAX_ATTEMPTS as usize,
        "the standard retry mode's attempts, then it gives up"
    );
    assert_eq!(
        stack
            .moto
            .count_calls(SCALE, "autoscaling", "SetDesiredCapacity"),
        0
    );
    assert_eq!(web_desired(&stack).await, 2);
    let audits = platform::drain(&stack.clients, &stack.platform.actions_queue)
        .await
        .unwrap();
    assert_eq!(audits.len(), 1, "{audits:?}");
    assert_eq!(audits[0]["outcome"], "failed");
    assert!(audits[0]["error"]
        .as_str()
        .unwrap_or("")
        .contains("ThrottlingException"));
    let ledger = platform::ledger_counts(&stack.clients).await.unwrap();
    assert_eq!(ledger.get("audit"), Some(&1), "{ledger:?}");
    assert_eq!(
        ledger.get("idem"),
        None,
        "the claim is released: {ledger:?}"
    );
    let alerts = platform::drain(&stack.clients, &stack.platform.alerts_queue)
        .await
        .unwrap();
    assert!(
        alerts
            .iter()
            .any(|a| a["severity"] == "P2" && a["resource"] == "asg:nbaops-dev-web"),
        "{alerts:?}"
    );

    // The fault clears; Lambda delivers the same event again: it acts, once.
    p.clear();
    let v = f.invoke_ok(web_alarm()).await.unwrap();
    assert_eq!(v["records"][0]["actions"][0]["outcome"], "acted", "{v}");
    assert_eq!(
        stack
            .moto
            .count_calls(SCALE, "autoscaling", "SetDesiredCapacity"),
        1
    );
    assert_eq!(web_desired(&stack).await, 3);
}

/// A read that keeps failing (HTTP 500) stops the function before any action: the invocation
/// fails (Lambda retries it) and a P2 says the function gave up and on which service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_keeps_failing_gives_up_with_a_p2_and_no_action() {
    let stack = Stack::start_behind_proxy(false).await.unwrap();
    let f = start(&stack, SCALE, &[]).await;
    let p = proxy(&stack);
    p.inject(
        "autoscaling",
        "DescribeAutoScalingGroups",
        Fault::Status(500),
        Times::Always,
    );
    let inv = f
        .invoke(web_alarm(), Duration::from_secs(30))
        .await
        .unwrap();
    match &inv.outcome {
        Outcome::Error { message, .. } => {
            assert!(message.contains("autoscaling"), "{message}")
        }
        other => panic!("expected a function error, got {other:?}"),
    }
    assert_eq!(
        p.faults("autoscaling", "DescribeAutoScalingGroups"),
        SDK_MAX_ATTEMPTS as usize
    );
    assert_eq!(
        stack
            .moto
            .count_calls(SCALE, "autoscaling", "SetDesiredCapacity"),
        0
    );
    let alerts = platform::drain(&stack.clients, &stack.platform.alerts_queue)
        .await
        .unwrap();
    let gave_up: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["dedup_key"] == "gave-up#scale-on-alarm#autoscaling")
        .collect();
    assert_eq!(gave_up.len(), 1, "{alerts:?}");
    assert_eq!(gave_up[0]["severity"], "P2");
    assert_eq!(gave_up[0]["schema"], "nbaops.alert/v1");
    let ledger = platform::ledger_counts(&stack.clients).await.unwrap();
    assert_eq!(ledger.get("idem"), None, "nothing claimed: {ledger:?}");
}

/// (c) A stalled response and then a connection reset on the read before the action: the
/// stalled attempt is cut at the SDK's attempt timeout (never waited out, never forwarded), the
/// reset is retried, and the action happens once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_response_and_a_reset_on_a_read_are_retried_without_a_duplicate() {
    let stack = Stack::start_behind_proxy(false).await.unwrap();
    let f = start(&stack, SCALE, &[]).await;
    let p = proxy(&stack);
    let stall = Duration::from_secs(20);
    p.inject(
        "autoscaling",
        "DescribeAutoScalingGroups",
        Fault::Slow(stall),
        Times::First(1),
    );
    p.inject(
        "autoscaling",
        "DescribeAutoScalingGroups",
        Fault::Reset,
        Times::First(1),
    );
    let started = Instant::now();
    let inv = f
        .invoke(web_alarm(), Duration::from_secs(40))
        .await
        .unwrap();
    let took = started.elapsed();
    let Outcome::Response(v) = &inv.outcome else {
        panic!("function failed: {:?}\n{}", inv.outcome, f.logs());
    };
    assert_eq!(v["records"][0]["actions"][0]["outcome"], "acted", "{v}");
    assert!(
        took < stall - Duration::from_secs(5),
        "the stalled attempt was waited out: {took:?}"
    );
    let log: Vec<_> = p
        .log()
        .into_iter()
        .filter(|e| e.operation == "DescribeAutoScalingGroups")
        .collect();
    assert!(
        log.len() >= 3
            && log[0].fault == Some(Fault::Slow(stall))
            && !log[0].forwarded
            && log[1].fault == Some(Fault::Reset)
            && !log[1].forwarded
            && log[2].fault.is_none()
            && log[2].forwarded,
        "{log:?}"
    );
    assert_eq!(
        stack
            .moto
            .count_calls(SCALE, "autoscaling", "SetDesiredCapacity"),
        1
    );
    assert_eq!(web_desired(&stack).await, 3);
}

// offhours ----------------------------------------------------------------------------------

const OFFHOURS: &str = "offhours";

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

async fn tick(f: &FunctionUnderTest, at: &str) -> Value {
    let v = f
        .invoke_ok(json!({"nbaops": {"task": "offhours", "at": at, "id": format!("exec-{at}")}}))
        .await
        .unwrap();
    v["records"][0].clone()
}

fn outcome_of(rec: &Value, action: &str) -> Option<Value> {
    rec["actions"]
        .as_array()?
        .iter()
        .find(|a| a["action"] == action)
        .cloned()
}

/// (d) offhours: a throttled StopDBInstance is retried to one stop; a StartDBInstance that keeps
/// failing is audited `failed` with a P2, the instance is left stopped, and the next tick starts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offhours_stop_survives_throttling_and_a_failed_start_is_audited_and_retried() {
    let stack = Stack::start_behind_proxy(false).await.unwrap();
    create_test_env(&stack).await;
    let f = start(
        &stack,
        OFFHOURS,
        &[
            ("NBAOPS_OFFHOURS__SCHEDULES", OFFICE),
            ("NBAOPS_GUARD__BLAST__MAX_PERCENT", "100"),
        ],
    )
    .await;
    let p = proxy(&stack);

    p.inject("rds", "StopDBInstance", Fault::Throttle, Times::First(2));
    let rec = tick(&f, "2026-12-02T18:00:00Z").await;
    let stop = outcome_of(&rec, "rds.offhours_stop").unwrap_or_default();
    assert_eq!(stop["outcome"], "acted", "{rec}");
    assert_eq!(p.faults("rds", "StopDBInstance"), 2);
    assert_eq!(stack.moto.count_calls(OFFHOURS, "rds", "StopDBInstance"), 1);
    assert_eq!(db_status(&stack).await, "stopped");
    platform::drain(&stack.clients, &stack.platform.actions_queue)
        .await
        .unwrap();
    platform::drain(&stack.clients, &stack.platform.alerts_queue)
        .await
        .unwrap();

    // Thursday 08:00 Paris: the start keeps being throttled.
    p.inject("rds", "StartDBInstance", Fault::Throttle, Times::Always);
    let rec = tick(&f, "2026-12-03T07:00:00Z").await;
    let start_rds = outcome_of(&rec, "rds.offhours_start").unwrap_or_default();
    assert_eq!(start_rds["outcome"], "failed", "{rec}");
    assert!(
        start_rds["error"]
            .as_str()
            .unwrap_or("")
            .contains("ThrottlingException"),
        "{rec}"
    );
    assert_eq!(
        p.faults("rds", "StartDBInstance"),
        SDK_MAX_ATTEMPTS as usize
    );
    assert_eq!(
        stack.moto.count_calls(OFFHOURS, "rds", "StartDBInstance"),
        0
    );
    assert_eq!(db_status(&stack).await, "stopped");
    let audits = platform::drain(&stack.clients, &stack.platform.actions_queue)
        .await
        .unwrap();
    assert!(
        audits
            .iter()
            .any(|a| a["action"] == "rds.offhours_start" && a["outcome"] == "failed"),
        "{audits:?}"
    );
    let alerts = platform::drain(&stack.clients, &stack.platform.alerts_queue)
        .await
        .unwrap();
    assert!(
        alerts
            .iter()
            .any(|a| a["severity"] == "P2" && a["resource"] == "rds:nbaops-test-db"),
        "{alerts:?}"
    );

    // The fault clears: the next tick starts the instance, once.
    p.clear();
    let rec = tick(&f, "2026-12-03T07:05:00Z").await;
    let start_rds = outcome_of(&rec, "rds.offhours_start").unwrap_or_default();
    assert_eq!(start_rds["outcome"], "acted", "{rec}");
    assert_eq!(
        stack.moto.count_calls(OFFHOURS, "rds", "StartDBInstance"),
        1
    );
    assert_eq!(db_status(&stack).await, "available");
}

/// The action succeeds but the ledger will not take its audit record (every attempt of the
/// `TransactWriteItems` that stores it with the claim's fate is reset): the record still goes out on the actions topic and to the log, the
/// invocation fails with a P2 naming DynamoDB, and AWS saw the action exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_record_the_ledger_refuses_still_reaches_the_actions_topic() {
    let stack = Stack::start_behind_proxy(false).await.unwrap();
    let f = start(&stack, SCALE, &[]).await;
    let p = proxy(&stack);
    p.inject_where(
        "dynamodb",
        "TransactWriteItems",
        r#""S":"audit#"#,
        Fault::Reset,
        Times::Always,
    );
    let inv = f
        .invoke(web_alarm(), Duration::from_secs(30))
        .await
        .unwrap();
    assert!(
        matches!(&inv.outcome, Outcome::Error { message, .. } if message.contains("dynamodb")),
        "{:?}",
        inv.outcome
    );
    assert_eq!(
        p.faults("dynamodb", "TransactWriteItems"),
        SDK_MAX_ATTEMPTS as usize
    );
    assert_eq!(
        stack
            .moto
            .count_calls(SCALE, "autoscaling", "SetDesiredCapacity"),
        1
    );
    assert_eq!(web_desired(&stack).await, 3);
    let audits = platform::drain(&stack.clients, &stack.platform.actions_queue)
        .await
        .unwrap();
    assert_eq!(audits.len(), 1, "{audits:?}");
    assert_eq!(audits[0]["outcome"], "acted");
    assert_eq!(audits[0]["resource"], "asg:nbaops-dev-web");
    assert!(
        f.logs().contains("audit record not stored in the ledger"),
        "{}",
        f.logs()
    );
    let alerts = platform::drain(&stack.clients, &stack.platform.alerts_queue)
        .await
        .unwrap();
    assert!(
        alerts
            .iter()
            .any(|a| a["severity"] == "P2" && a["dedup_key"] == "gave-up#scale-on-alarm#dynamodb"),
        "{alerts:?}"
    );
}

/// The answer to StopDBInstance is lost after RDS acted: the SDK retries, and the retry finds the
/// instance no longer `available` (`InvalidDBInstanceState`). The instance did stop, so the audit
/// record must say `acted`, not `failed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offhours_stop_whose_answer_is_lost_is_audited_as_done() {
    let stack = Stack::start_behind_proxy(false).await.unwrap();
    create_test_env(&stack).await;
    let f = start(
        &stack,
        OFFHOURS,
        &[
            ("NBAOPS_OFFHOURS__SCHEDULES", OFFICE),
            ("NBAOPS_GUARD__BLAST__MAX_PERCENT", "100"),
        ],
    )
    .await;
    let p = proxy(&stack);
    p.inject("rds", "StopDBInstance", Fault::LoseAnswer, Times::First(1));
    let rec = tick(&f, "2026-12-02T18:00:00Z").await;
    assert_eq!(
        stack.moto.count_calls(OFFHOURS, "rds", "StopDBInstance"),
        2,
        "the stop that acted (answer lost) and the SDK's retry, refused: {rec}"
    );
    assert!(
        f.logs()
            .contains("refused as InvalidDBInstanceState, but the instance is already"),
        "{}",
        f.logs()
    );
    assert_eq!(db_status(&stack).await, "stopped");
    let stop = outcome_of(&rec, "rds.offhours_stop").unwrap_or_default();
    assert_eq!(stop["outcome"], "acted", "{rec}");
    let alerts = platform::drain(&stack.clients, &stack.platform.alerts_queue)
        .await
        .unwrap();
    assert!(
        !alerts.iter().any(|a| a["severity"] == "P2"),
        "a stop that happened is no failure: {alerts:?}"
    );
}

/// The answer to the idempotency claim (one conditional `TransactWriteItems`: claim + cooldown)
/// is lost after DynamoDB stored it: the SDK's retry is refused by the condition (moto keeps no
/// `ClientRequestToken` memory, so this is the worst case). The claim is this invocation's own, so the
/// action goes ahead, once; it is not mistaken for another delivery's claim and silently dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_answer_is_lost_is_recognised_as_our_own() {
    let stack = Stack::start_behind_proxy(false).await.unwrap();
    let f = start(&stack, SCALE, &[]).await;
    let p = proxy(&stack);
    p.inject_where(
        "dynamodb",
        "TransactWriteItems",
        r#""S":"idem#"#,
        Fault::LoseAnswer,
        Times::First(1),
    );
    let v = f.invoke_ok(web_alarm()).await.unwrap();
    assert_eq!(p.faults("dynamodb", "TransactWriteItems"), 1);
    assert_eq!(v["records"][0]["actions"][0]["outcome"], "acted", "{v}");
    assert_eq!(
        stack
            .moto
            .count_calls(SCALE, "autoscaling", "SetDesiredCapacity"),
        1
    );
    assert_eq!(web_desired(&stack).await, 3);
}

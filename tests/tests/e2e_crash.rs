//! A function killed between its idempotency claim and its effect: the real scale-on-alarm
//! binary, paused there by a debug-build-only hook (`NBAOPS_TEST_PAUSE_AFTER_CLAIM`) and killed.
//! Before the claim's deadline a retry is refused; after it the retry takes the claim over and
//! the effect happens exactly once — counted from moto's recording, not from our bookkeeping.

use std::time::Duration;

use nbaops_tests::demo::Stack;
use nbaops_tests::function::FunctionUnderTest;
use nbaops_tests::platform::{self, WEB};
use nbaops_tests::{clock, function_binary, workspace_root};
use serde_json::Value;

const FN: &str = "scale-on-alarm";

fn fixture(path: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(workspace_root().join(path)).unwrap()).unwrap()
}

async fn start(stack: &Stack, extra: &[(&str, &str)]) -> FunctionUnderTest {
    FunctionUnderTest::start(
        &function_binary(FN).unwrap(),
        FN,
        &stack.function_env(extra),
        1,
    )
    .await
    .unwrap()
}

fn set_desired_calls(stack: &Stack) -> usize {
    stack
        .moto
        .actions_of(FN)
        .iter()
        .filter(|c| *c == "autoscaling:SetDesiredCapacity")
        .count()
}

fn idem_step(v: &Value) -> String {
    v["records"][0]["actions"][0]["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["step"] == "idempotency"))
        .map(|s| s["note"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_claim_is_refused_until_the_deadline_then_finished_once() {
    let stack = Stack::start(false).await.unwrap();
    let alarm = fixture("events/cloudwatch-alarm/eventbridge-single-metric-alarm.json");

    // 1. The first delivery claims, then stops before its effect; the process is killed there.
    let paused = start(&stack, &[("NBAOPS_TEST_PAUSE_AFTER_CLAIM", "600")]).await;
    {
        let invocation = paused.invoke(alarm.clone(), Duration::from_secs(60));
        let reached = async {
            for _ in 0..600 {
                if paused.logs().contains("test pause after claim") {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            false
        };
        tokio::select! {
            r = invocation => panic!("the invocation finished instead of pausing: {r:?}"),
            ok = reached => assert!(ok, "never paused after the claim:\n{}", paused.logs()),
        }
    }
    let pid = paused.processes()[0].pid();
    drop(paused);
    for _ in 0..100 {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(set_desired_calls(&stack), 0, "killed before its effect");
    assert_eq!(
        platform::ledger_counts(&stack.clients)
            .await
            .unwrap()
            .get("idem"),
        Some(&1),
        "the claim outlived its process"
    );

    // 2. Lambda's retry before the claim's deadline (the Runtime API gave 60 s): refused.
    let retry = start(&stack, &[]).await;
    let v = retry.invoke_ok(alarm.clone()).await.unwrap();
    let action = &v["records"][0]["actions"][0];
    assert_eq!(action["outcome"], "skipped", "{v}");
    assert_eq!(action["stopped_by"], "idempotency", "{v}");
    assert!(
        idem_step(&v).contains("in progress by request") && idem_step(&v).contains("until"),
        "{v}"
    );
    assert_eq!(set_desired_calls(&stack), 0, "no effect while claimed");
    drop(retry);

    // 3. A retry after the deadline (its clock 90 s on): takes the claim over, re-reads the
    // group (still 2) and scales it once.
    let later = (clock::now() + chrono::Duration::seconds(90))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let late = start(&stack, &[(clock::TEST_NOW_VAR, later.as_str())]).await;
    let v = late.invoke_ok(alarm.clone()).await.unwrap();
    assert_eq!(v["records"][0]["actions"][0]["outcome"], "acted", "{v}");
    assert!(
        idem_step(&v).contains("took over the claim of request"),
        "{v}"
    );
    assert_eq!(set_desired_calls(&stack), 1);
    assert_eq!(
        platform::group_view(&stack.clients, WEB)
            .await
            .unwrap()
            .desired,
        3
    );
    // And once only: the same event again is done.
    let v = late.invoke_ok(alarm).await.unwrap();
    assert_eq!(
        v["records"][0]["actions"][0]["stopped_by"], "idempotency",
        "{v}"
    );
    assert!(idem_step(&v).contains("already done"), "{v}");
    assert_eq!(set_desired_calls(&stack), 1, "exactly one effect in all");

    // The audit trail says what happened: the refused retry, then the takeover that acted.
    let audits = platform::drain(&stack.clients, &stack.platform.actions_queue)
        .await
        .unwrap();
    let outcomes: Vec<&str> = audits
        .iter()
        .map(|a| a["outcome"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(outcomes, ["skipped", "acted", "skipped"], "{audits:?}");
    assert!(
        audits[1].to_string().contains("took over the claim"),
        "{audits:?}"
    );
}

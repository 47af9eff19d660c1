//! Sustained alarms keep stepping (scale-on-alarm's recheck.rs) end to end: the real binary, over
//! the Lambda Runtime API, against moto's Auto Scaling, CloudWatch (through the harness's CBOR
//! bridge) and EventBridge Scheduler.
//!
//! moto never fires a schedule: the test reads the schedule the function created (GetSchedule: its
//! `at(...)` time and its input) and delivers it — a new process of the binary whose clock starts
//! at the schedule's time (`NBAOPS_TEST_NOW`), invoked with the schedule's input. What fired is then
//! deleted from moto, as ActionAfterCompletion DELETE does in AWS.

use aws_sdk_cloudwatch::types::StateValue;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use nbaops_tests::clock;
use nbaops_tests::demo::Stack;
use nbaops_tests::function::FunctionUnderTest;
use nbaops_tests::platform::{self, WEB};
use nbaops_tests::{function_binary, workspace_root};
use serde_json::{json, Value};

const FN: &str = "scale-on-alarm";
const ALARM: &str = "nbaops-dev-web-cpu-high";
const GROUP: &str = "nbaops-dev-scale-followups";
const TARGET: &str =
    "arn:aws:lambda:us-east-1:123456789012:function:nbaops-dev-scale-on-alarm:live";
const ROLE: &str = "arn:aws:iam::123456789012:role/nbaops-dev-scale-followups";

fn env(stack: &Stack, now: Option<DateTime<Utc>>, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let at = now.map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true));
    let mut vars = vec![
        ("NBAOPS_SCALE__FOLLOWUP__GROUP", GROUP),
        ("NBAOPS_SCALE__FOLLOWUP__TARGET_ARN", TARGET),
        ("NBAOPS_SCALE__FOLLOWUP__ROLE_ARN", ROLE),
        // Several episodes of one alarm within an hour in this test: not flapping.
        ("NBAOPS_SCALE__FLAP__TRANSITIONS", "20"),
    ];
    if let Some(at) = at.as_deref() {
        vars.push((clock::TEST_NOW_VAR, at));
    }
    vars.extend_from_slice(extra);
    stack.function_env(&vars)
}

/// A process of the binary whose clock starts at `now` (the harness's clock when `None`).
async fn start_at(
    stack: &Stack,
    now: Option<DateTime<Utc>>,
    extra: &[(&str, &str)],
    n: usize,
) -> FunctionUnderTest {
    FunctionUnderTest::start(
        &function_binary(FN).unwrap(),
        FN,
        &env(stack, now, extra),
        n,
    )
    .await
    .unwrap()
}

/// The web CPU alarm's ALARM (or OK) state change at `at`, after a quiet `previous` state.
fn state_change(id: &str, state: &str, at: DateTime<Utc>) -> Value {
    let path = if state == "ALARM" {
        "events/cloudwatch-alarm/eventbridge-single-metric-alarm.json"
    } else {
        "events/cloudwatch-alarm/eventbridge-ok.json"
    };
    let mut v: Value =
        serde_json::from_str(&std::fs::read_to_string(workspace_root().join(path)).unwrap())
            .unwrap();
    v["id"] = json!(id);
    v["time"] = json!(at.to_rfc3339_opts(SecondsFormat::Secs, true));
    v["detail"]["state"]["timestamp"] = json!(at.to_rfc3339_opts(SecondsFormat::Millis, true));
    v["detail"]["previousState"]["timestamp"] =
        json!((at - Duration::hours(3)).to_rfc3339_opts(SecondsFormat::Millis, true));
    v
}

async fn set_alarm(stack: &Stack, state: StateValue) {
    stack
        .clients
        .cw
        .set_alarm_state()
        .alarm_name(ALARM)
        .state_value(state)
        .state_reason("e2e")
        .send()
        .await
        .unwrap();
}

async fn desired(stack: &Stack) -> i32 {
    platform::group_view(&stack.clients, WEB)
        .await
        .unwrap()
        .desired
}

async fn set_desired(stack: &Stack, n: i32) {
    stack
        .clients
        .asg
        .set_desired_capacity()
        .auto_scaling_group_name(WEB)
        .desired_capacity(n)
        .send()
        .await
        .unwrap();
}

/// One schedule as moto holds it: name, when, input.
#[derive(Debug, Clone)]
struct Pending {
    name: String,
    at: DateTime<Utc>,
    input: Value,
}

/// The follow-ups as scale-on-alarm must create them: one-time `at()` in UTC, deleted after they
/// ran, invoking the function's alias through the follow-up role.
async fn schedules(stack: &Stack) -> Vec<Pending> {
    platform::follow_ups(&stack.clients, GROUP)
        .await
        .unwrap()
        .into_iter()
        .map(|s| {
            assert_eq!(s.timezone.as_deref(), Some("UTC"), "{s:?}");
            assert_eq!(s.after_completion.as_deref(), Some("DELETE"), "{s:?}");
            assert_eq!((s.target_arn.as_str(), s.role_arn.as_str()), (TARGET, ROLE));
            let at =
                s.at.unwrap_or_else(|| panic!("not an at() expression: {}", s.expression));
            Pending {
                name: s.name,
                at,
                input: s.input,
            }
        })
        .collect()
}

async fn only_schedule(stack: &Stack) -> Pending {
    let all = schedules(stack).await;
    assert_eq!(all.len(), 1, "{all:#?}");
    all[0].clone()
}

/// What AWS does once a one-time schedule with ActionAfterCompletion DELETE has run.
async fn fired(stack: &Stack, p: &Pending) {
    stack
        .clients
        .scheduler
        .delete_schedule()
        .group_name(GROUP)
        .name(&p.name)
        .send()
        .await
        .unwrap();
}

/// The delivery: the binary, its clock at the schedule's time, invoked with the schedule's input.
async fn deliver(stack: &Stack, p: &Pending) -> Value {
    let f = start_at(stack, Some(p.at), &[], 1).await;
    f.invoke_ok(p.input.clone()).await.unwrap()
}

fn set_desired_calls(stack: &Stack) -> usize {
    stack
        .moto
        .count_calls(FN, "autoscaling", "SetDesiredCapacity")
}

/// IAM actions of this function's calls after `since` (Scheduler's REST calls named by their
/// method and path, as infra/tests/check_observed_calls.py reads them).
fn actions_since(stack: &Stack, since: usize) -> Vec<String> {
    stack
        .moto
        .calls_of(FN, since)
        .iter()
        .map(|c| c.iam_action())
        .collect()
}

fn p2_exhausted(alerts: &[Value]) -> usize {
    alerts
        .iter()
        .filter(|a| {
            a["severity"] == "P2" && a["dedup_key"] == "capacity-exhausted#asg:nbaops-dev-web"
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sustained_alarm_keeps_stepping_until_the_ceiling_and_stops_when_ok() {
    let stack = Stack::start(false).await.unwrap();
    stack
        .clients
        .scheduler
        .create_schedule_group()
        .name(GROUP)
        .send()
        .await
        .unwrap();
    platform::cpu_alarm_firing(&stack.clients, ALARM, WEB, 1, "e2e: the web tier is busy")
        .await
        .unwrap();
    assert_eq!(desired(&stack).await, 2);

    // 1. The ALARM state change: 2 -> 3, and a re-check at the end of the cooldown (300 s).
    // (The production switch TTL, so that the kill switch read at init serves this invocation.)
    let f = start_at(
        &stack,
        None,
        &[("NBAOPS_GUARD__SWITCH_TTL_SECONDS", "60")],
        1,
    )
    .await;
    let t0 = clock::now();
    let since = stack.moto.calls().len();
    let v = f
        .invoke_ok(state_change("episode-1", "ALARM", t0))
        .await
        .unwrap();
    let t1 = clock::now();
    drop(f);
    assert_eq!(v["records"][0]["actions"][0]["outcome"], "acted", "{v}");
    assert_eq!(desired(&stack).await, 3);
    // The scale-out's six calls (e2e_scale_on_alarm::one_scale_out_makes_at_most_six_aws_calls)
    // and, with follow-ups configured, two more, made at once: the schedule and its name kept
    // under the alarm.
    let mut calls = actions_since(&stack, since);
    assert_eq!(calls.len(), 8, "{calls:?}");
    let mut last_two = calls.split_off(6);
    last_two.sort();
    assert_eq!(
        calls,
        [
            "autoscaling:DescribeAutoScalingGroups",
            "dynamodb:TransactWriteItems",
            "autoscaling:SetDesiredCapacity",
            "dynamodb:TransactWriteItems",
            "sns:Publish",
            "sns:Publish",
        ]
    );
    assert_eq!(last_two, ["dynamodb:PutItem", "scheduler:CreateSchedule"]);
    let s1 = only_schedule(&stack).await;
    // The function's clock continues the harness's from the moment it was spawned, so it may lag
    // by the spawn time: up to a second earlier than t0 + cooldown is still "the end of the cooldown".
    assert!(
        s1.at >= t0 + Duration::seconds(299) && s1.at <= t1 + Duration::seconds(301),
        "{} not at the end of the cooldown after {t0}",
        s1.at
    );
    assert_eq!(s1.input["nbaops"]["task"], "scale-recheck");
    assert_eq!(s1.input["nbaops"]["alarm"], ALARM);
    assert_eq!(s1.input["nbaops"]["target"], "asg:nbaops-dev-web");
    assert_eq!(
        (
            s1.input["nbaops"]["n"].clone(),
            s1.input["nbaops"]["limit"].clone()
        ),
        (json!(1), json!(2))
    );

    // 2. Re-check 1, delivered twice at once (Scheduler delivers at least once): the alarm is
    // still ALARM in CloudWatch, one step 3 -> 4 with no new state change; the duplicate is
    // stopped by the guard's idempotency (the claimer pauses after its claim, so both deliveries
    // plan from 3). Then re-check 2 is scheduled.
    fired(&stack, &s1).await;
    let before = set_desired_calls(&stack);
    let twice = std::sync::Arc::new(
        start_at(
            &stack,
            Some(s1.at),
            &[("NBAOPS_TEST_PAUSE_AFTER_CLAIM", "2")],
            2,
        )
        .await,
    );
    let (a, b) = {
        let (x, y) = (twice.clone(), twice.clone());
        let (p, q) = (s1.input.clone(), s1.input.clone());
        tokio::join!(
            tokio::spawn(async move { x.invoke_ok(p).await.unwrap() }),
            tokio::spawn(async move { y.invoke_ok(q).await.unwrap() })
        )
    };
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut outcomes: Vec<String> = [&a, &b]
        .iter()
        .map(|v| {
            let act = &v["records"][0]["actions"][0];
            format!(
                "{} {}",
                act["outcome"].as_str().unwrap_or("?"),
                act["stopped_by"].as_str().unwrap_or("")
            )
        })
        .collect();
    outcomes.sort();
    assert_eq!(outcomes, ["acted ", "skipped idempotency"], "{a}\n{b}");
    assert_eq!(a["records"][0]["event_id"], b["records"][0]["event_id"]);
    assert_eq!(set_desired_calls(&stack) - before, 1, "one effect");
    assert_eq!(desired(&stack).await, 4);
    drop(twice);
    let s2 = only_schedule(&stack).await;
    assert_eq!(s2.input["nbaops"]["n"], 2);
    assert!(
        s2.at >= s1.at + Duration::seconds(300),
        "{} vs {}",
        s2.at,
        s1.at
    );
    platform::drain(&stack.clients, &stack.platform.alerts_queue)
        .await
        .unwrap();

    // 3. Re-check 2 at the ceiling, still ALARM: exactly one P2; no re-check 3; a redelivery of
    // re-check 2 raises no second P2.
    fired(&stack, &s2).await;
    let v = deliver(&stack, &s2).await;
    assert!(
        v["records"][0]["actions"].as_array().unwrap().is_empty(),
        "{v}"
    );
    let v2 = deliver(&stack, &s2).await;
    assert!(
        v2["records"][0]["alerts"].as_array().unwrap().is_empty(),
        "{v2}"
    );
    let alerts = platform::drain(&stack.clients, &stack.platform.alerts_queue)
        .await
        .unwrap();
    assert_eq!(p2_exhausted(&alerts), 1, "{alerts:#?}");
    assert!(
        schedules(&stack).await.is_empty(),
        "the chain ended at the ceiling"
    );
    assert_eq!(desired(&stack).await, 4);

    // 4. A new episode (the group back at 2 meanwhile): 2 -> 3; the alarm returns to OK in
    // CloudWatch before the re-check comes: no step.
    set_desired(&stack, 2).await;
    let t = s2.at + Duration::seconds(400);
    let f = start_at(&stack, Some(t), &[], 1).await;
    let v = f
        .invoke_ok(state_change("episode-2", "ALARM", t))
        .await
        .unwrap();
    drop(f);
    assert_eq!(v["records"][0]["actions"][0]["outcome"], "acted", "{v}");
    assert_eq!(desired(&stack).await, 3);
    let e2 = only_schedule(&stack).await;
    set_alarm(&stack, StateValue::Ok).await;
    fired(&stack, &e2).await;
    let before = set_desired_calls(&stack);
    let v = deliver(&stack, &e2).await;
    assert!(
        v["records"][0]["actions"].as_array().unwrap().is_empty(),
        "{v}"
    );
    assert!(
        v["records"][0]["notes"].to_string().contains("is OK now"),
        "{v}"
    );
    assert_eq!(set_desired_calls(&stack), before);
    assert_eq!(desired(&stack).await, 3);
    assert!(schedules(&stack).await.is_empty());

    // 5. Another episode, then its ALARM -> OK state change: the pending re-check is deleted.
    set_alarm(&stack, StateValue::Alarm).await;
    let t = e2.at + Duration::seconds(400);
    let f = start_at(&stack, Some(t), &[], 1).await;
    let v = f
        .invoke_ok(state_change("episode-3", "ALARM", t))
        .await
        .unwrap();
    assert_eq!(v["records"][0]["actions"][0]["outcome"], "acted", "{v}");
    assert_eq!(desired(&stack).await, 4);
    let e3 = only_schedule(&stack).await;
    let since = stack.moto.calls().len();
    let ok = f
        .invoke_ok(state_change(
            "episode-3-ok",
            "OK",
            t + Duration::seconds(120),
        ))
        .await
        .unwrap();
    assert!(
        ok["records"][0]["notes"].to_string().contains("deleted"),
        "{ok}"
    );
    assert!(actions_since(&stack, since).contains(&"scheduler:DeleteSchedule".to_string()));
    assert!(
        schedules(&stack).await.is_empty(),
        "{} still pending",
        e3.name
    );
    assert_eq!(desired(&stack).await, 4);
}

/// A re-check input that is not understood is refused, with no AWS mutation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_recheck_is_refused_without_acting() {
    let stack = Stack::start(false).await.unwrap();
    let f = start_at(&stack, None, &[], 1).await;
    let good = json!({"nbaops": {"task": "scale-recheck", "alarm": ALARM, "target": "asg:nbaops-dev-web",
                                 "episode": "20260617T140000.000Z", "n": 1, "limit": 2}});
    for (field, value) in [
        ("n", json!(3)),
        ("limit", json!(50)),
        ("target", json!("asg:someone-elses-group")),
        ("n", json!("1")),
        ("surprise", json!(true)),
    ] {
        let mut p = good.clone();
        p["nbaops"][field] = value;
        let v = f.invoke_ok(p).await.unwrap();
        assert!(v["records"][0]["not_for_me"].is_string(), "{field}: {v}");
    }
    let mutating: Vec<String> = stack
        .moto
        .calls_of(FN, 0)
        .iter()
        .filter(|c| c.is_mutating())
        .map(|c| c.iam_action())
        .collect();
    assert!(mutating.is_empty(), "{mutating:?}");
    assert_eq!(desired(&stack).await, 2);
}

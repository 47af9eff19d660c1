//! Off-peak back to baseline in one window (issue #17), end to end: the real scale-on-alarm binary
//! against moto — CPU datapoints put into moto's CloudWatch (through the harness's CBOR bridge),
//! alarms set in ALARM there, the follow-up read back from moto's EventBridge Scheduler
//! (GetSchedule) and delivered to the binary at its time on the test clock (moto never fires a
//! schedule: that delivery is the test's).

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use nbaops_tests::demo::Stack;
use nbaops_tests::function::FunctionUnderTest;
use nbaops_tests::platform::{self, WEB, WORKER};
use nbaops_tests::{clock, function_binary};
use serde_json::{json, Value};

const FN: &str = "scale-on-alarm";
const GROUP: &str = "nbaops-dev-followups";
const TARGET: &str =
    "arn:aws:lambda:us-east-1:123456789012:function:nbaops-dev-scale-on-alarm:live";
const ROLE: &str = "arn:aws:iam::123456789012:role/nbaops-dev-scale-followups";

/// scale-on-alarm with follow-ups on, its clock starting at `at`.
async fn start_at(stack: &Stack, at: DateTime<Utc>) -> FunctionUnderTest {
    let now = at.to_rfc3339_opts(SecondsFormat::Millis, true);
    let extra = [
        ("NBAOPS_SCALE__FOLLOWUP__GROUP", GROUP),
        ("NBAOPS_SCALE__FOLLOWUP__TARGET_ARN", TARGET),
        ("NBAOPS_SCALE__FOLLOWUP__ROLE_ARN", ROLE),
        (clock::TEST_NOW_VAR, now.as_str()),
    ];
    FunctionUnderTest::start(
        &function_binary(FN).unwrap(),
        FN,
        &stack.function_env(&extra),
        1,
    )
    .await
    .unwrap()
}

async fn stack_with(web: i32, worker: i32) -> Stack {
    let stack = Stack::start(false).await.unwrap();
    for (g, n) in [(WEB, web), (WORKER, worker)] {
        stack
            .clients
            .asg
            .set_desired_capacity()
            .auto_scaling_group_name(g)
            .desired_capacity(n)
            .send()
            .await
            .unwrap();
    }
    stack
        .clients
        .scheduler
        .create_schedule_group()
        .name(GROUP)
        .send()
        .await
        .unwrap();
    stack
}

/// One CPU datapoint a minute for the 14 minutes before `until`, as EC2 publishes per group.
async fn cpu(stack: &Stack, group: &str, until: DateTime<Utc>, percent: f64) {
    platform::put_cpu_until(&stack.clients, group, percent, 14, until)
        .await
        .unwrap();
}

async fn desired(stack: &Stack, group: &str) -> i32 {
    platform::group_view(&stack.clients, group)
        .await
        .unwrap()
        .desired
}

/// The schedules in the follow-up group, by name: (name, expression, input).
async fn schedules(stack: &Stack) -> Vec<(String, String, Value)> {
    platform::follow_ups(&stack.clients, GROUP)
        .await
        .unwrap()
        .into_iter()
        .map(|s| {
            assert_eq!((s.target_arn.as_str(), s.role_arn.as_str()), (TARGET, ROLE));
            (s.name, s.expression, s.input)
        })
        .collect()
}

fn at_expression(t: DateTime<Utc>) -> String {
    format!("at({})", t.format("%Y-%m-%dT%H:%M:%S"))
}

fn notes(v: &Value) -> String {
    v["records"][0]["notes"].to_string()
}

fn set_desired_calls(stack: &Stack) -> usize {
    stack
        .moto
        .count_calls(FN, "autoscaling", "SetDesiredCapacity")
}

/// CreateSchedule calls of the function (REST: `POST /schedules/<name>`, named by the recorder).
fn create_schedule_calls(stack: &Stack) -> usize {
    stack.moto.count_calls(FN, "scheduler", "CreateSchedule")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_to_two_in_one_window_with_the_follow_up_delivered_at_its_time() {
    let stack = stack_with(4, 2).await;
    let t0 = clock::now();
    cpu(&stack, WEB, t0, 12.0).await;
    // Busy minutes outside every lookback of this night (an hour before, an hour after): moto
    // answers GetMetricStatistics by the time range, so they must not count.
    cpu(&stack, WEB, t0 - Duration::minutes(60), 90.0).await;
    cpu(&stack, WEB, t0 + Duration::minutes(75), 95.0).await;
    let f = start_at(&stack, t0).await;
    let v = f
        .invoke_ok(json!({"nbaops": {"task": "off-peak-scale-in", "id": "exec-night-1"}}))
        .await
        .unwrap();
    assert_eq!(v["records"][0]["actions"][0]["outcome"], "acted", "{v}");
    assert_eq!(desired(&stack, WEB).await, 3);
    assert_eq!(desired(&stack, WORKER).await, 2, "at its baseline already");

    // The next step, as moto's Scheduler holds it: at now + 10 min, the window from the cron run.
    let all = schedules(&stack).await;
    assert_eq!(all.len(), 1, "{all:?} {}", notes(&v));
    let (_, expression, input) = &all[0];
    let window_end = DateTime::parse_from_rfc3339(input["nbaops"]["window_end"].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc);
    let opened = window_end - Duration::minutes(240);
    assert!(
        (opened - t0).num_seconds().abs() <= 5,
        "window opened at {opened}, run at {t0}"
    );
    let next_at = opened + Duration::minutes(10);
    assert_eq!(expression, &at_expression(next_at));
    assert_eq!(input["nbaops"]["task"], "off-peak-scale-in");
    assert_eq!(input["nbaops"]["step"], 1);

    // Delivered at that time: the CPU of the minutes before it is still low -> 2, and nothing
    // more is scheduled (both groups at their baseline).
    cpu(&stack, WEB, next_at, 18.0).await;
    let later = start_at(&stack, next_at).await;
    let v = later.invoke_ok(input.clone()).await.unwrap();
    assert_eq!(v["records"][0]["actions"][0]["outcome"], "acted", "{v}");
    assert_eq!(desired(&stack, WEB).await, 2);
    assert_eq!(schedules(&stack).await.len(), 1, "{}", notes(&v));
    assert!(notes(&v).contains("nothing more to schedule"), "{v}");
    assert_eq!(set_desired_calls(&stack), 2);
    assert_eq!(create_schedule_calls(&stack), 1);
    // The audit of both steps is in the ledger.
    let counts = platform::ledger_counts(&stack.clients).await.unwrap();
    assert_eq!(counts.get("audit"), Some(&2), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_or_high_cpu_holds_a_group_and_a_duplicate_follow_up_steps_once() {
    let stack = stack_with(4, 4).await;
    let t0 = clock::now();
    // The worker's CPU alarm is in ALARM: the worker is left alone whatever its CPU.
    platform::cpu_alarm_firing(
        &stack.clients,
        "nbaops-dev-worker-cpu-high",
        WORKER,
        2,
        "test",
    )
    .await
    .unwrap();
    cpu(&stack, WEB, t0, 10.0).await;
    cpu(&stack, WORKER, t0, 10.0).await;

    // A follow-up of a window opened 10 minutes ago, delivered twice.
    let window_end = (t0 + Duration::minutes(230)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let input =
        json!({"nbaops": {"task": "off-peak-scale-in", "window_end": window_end, "step": 1}});
    let f = start_at(&stack, t0).await;
    let v = f.invoke_ok(input.clone()).await.unwrap();
    assert_eq!(v["records"][0]["actions"][0]["outcome"], "acted", "{v}");
    assert_eq!(
        v["records"][0]["actions"][0]["resource"],
        format!("asg:{WEB}")
    );
    assert!(notes(&v).contains("nbaops-dev-worker-cpu-high"), "{v}");
    assert_eq!(desired(&stack, WEB).await, 3);
    assert_eq!(desired(&stack, WORKER).await, 4);
    assert_eq!(schedules(&stack).await.len(), 1);

    // The duplicate arrives a minute later (its own instance, its clock a minute on): the same
    // window and step, so the same work id and the same idempotency claim.
    let dup = start_at(&stack, t0 + Duration::minutes(1)).await;
    let v = dup.invoke_ok(input.clone()).await.unwrap();
    assert_eq!(
        v["records"][0]["actions"][0]["stopped_by"], "idempotency",
        "{v}"
    );
    assert_eq!(desired(&stack, WEB).await, 3, "one step, not two");
    assert_eq!(set_desired_calls(&stack), 1);
    let all = schedules(&stack).await;
    assert_eq!(all.len(), 1, "one schedule, not two: {all:?}");
    assert_eq!(
        create_schedule_calls(&stack),
        2,
        "asked twice, refused once"
    );
    assert!(notes(&v).contains("already scheduled"), "{v}");
    assert_eq!(all[0].2["nbaops"]["step"], 2);

    // Step 2 at its time: the web group's CPU rose to 85% -> no step; the worker still in ALARM.
    let next_at = at_time(&all[0].1);
    assert!(
        (next_at - (t0 + Duration::minutes(10))).num_seconds().abs() <= 5,
        "{} vs {t0}",
        all[0].1
    );
    cpu(&stack, WEB, next_at, 85.0).await;
    let later = start_at(&stack, next_at).await;
    let v = later.invoke_ok(all[0].2.clone()).await.unwrap();
    assert!(
        v["records"][0]["actions"].as_array().unwrap().is_empty(),
        "{v}"
    );
    assert!(notes(&v).contains("CPU 85.0%"), "{v}");
    assert_eq!(desired(&stack, WEB).await, 3);
    assert_eq!(desired(&stack, WORKER).await, 4);
    assert_eq!(set_desired_calls(&stack), 1);
    // Both still above baseline and the window open: step 3 is scheduled.
    assert_eq!(schedules(&stack).await.len(), 2);

    // A malformed follow-up: not for me, no call that changes anything.
    let v = later
        .invoke_ok(
            json!({"nbaops": {"task": "off-peak-scale-in", "window_end": "tonight", "step": 1}}),
        )
        .await
        .unwrap();
    assert!(
        v["records"][0]["not_for_me"]
            .as_str()
            .unwrap_or("")
            .contains("RFC 3339"),
        "{v}"
    );
    assert_eq!(set_desired_calls(&stack), 1);
    assert_eq!(schedules(&stack).await.len(), 2);
}

/// The time of an `at(yyyy-mm-ddThh:mm:ss)` expression (UTC).
fn at_time(expression: &str) -> DateTime<Utc> {
    let inner = expression
        .strip_prefix("at(")
        .and_then(|e| e.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not an at() expression: {expression}"));
    chrono::NaiveDateTime::parse_from_str(inner, "%Y-%m-%dT%H:%M:%S")
        .unwrap()
        .and_utc()
}

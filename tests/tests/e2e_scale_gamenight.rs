//! Game nights end to end: the calendar in moto's SSM, the real scale-on-alarm binary plans it into
//! one-time schedules in moto's EventBridge Scheduler, and each schedule is "delivered" by invoking
//! the binary with the schedule's input on a clock set to the schedule's minute (moto never fires
//! a schedule). The calendar is in America/New_York and its slates fall on both DST Sundays of 2027.
//! With the default blast radius (50 % of the two groups) a pre-scale changes one group per
//! delivery and leaves the other to a follow-up schedule, read back from moto and delivered at
//! its minute.

use nbaops_tests::demo::Stack;
use nbaops_tests::function::FunctionUnderTest;
use nbaops_tests::platform::{self, WEB, WORKER};
use nbaops_tests::{clock, function_binary};
use serde_json::{json, Value};

const FN: &str = "scale-on-alarm";
const GROUP: &str = "nbaops-dev-scale-followups";

fn env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("NBAOPS_SCALE__GAMENIGHT__TZ", "America/New_York"),
        ("NBAOPS_SCALE__FOLLOWUP__GROUP", GROUP),
        (
            "NBAOPS_SCALE__FOLLOWUP__TARGET_ARN",
            "arn:aws:lambda:us-east-1:123456789012:function:nbaops-dev-scale-on-alarm:live",
        ),
        (
            "NBAOPS_SCALE__FOLLOWUP__ROLE_ARN",
            "arn:aws:iam::123456789012:role/nbaops-dev-scale-followup",
        ),
    ]
}

/// The binary on a clock that reads `at` (RFC 3339) when it starts.
async fn at(stack: &Stack, at: &str) -> FunctionUnderTest {
    let mut extra = env();
    extra.push((clock::TEST_NOW_VAR, at));
    FunctionUnderTest::start(
        &function_binary(FN).unwrap(),
        FN,
        &stack.function_env(&extra),
        1,
    )
    .await
    .unwrap()
}

async fn stack_with_group() -> Stack {
    let stack = Stack::start(false).await.unwrap();
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

fn plan(id: &str) -> Value {
    json!({"nbaops": {"task": "game-night-plan", "id": id}})
}

/// (expression, input) of a schedule in moto.
async fn schedule(stack: &Stack, name: &str) -> (String, Value) {
    let got = stack
        .clients
        .scheduler
        .get_schedule()
        .group_name(GROUP)
        .name(name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("schedule {name}: {e:?}"));
    assert_eq!(got.schedule_expression_timezone(), Some("UTC"));
    let input = got.target().and_then(|t| t.input()).unwrap_or("null");
    (
        got.schedule_expression().unwrap_or("").to_string(),
        serde_json::from_str(input).unwrap(),
    )
}

async fn schedule_names(stack: &Stack) -> Vec<String> {
    platform::follow_ups(&stack.clients, GROUP)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect()
}

async fn calendar_alerts(stack: &Stack) -> Vec<Value> {
    platform::drain(&stack.clients, &stack.platform.alerts_queue)
        .await
        .unwrap()
        .into_iter()
        .filter(|a| {
            a["dedup_key"]
                .as_str()
                .unwrap_or("")
                .starts_with("game-night-calendar#")
        })
        .collect()
}

async fn desired(stack: &Stack, group: &str) -> i32 {
    platform::group_view(&stack.clients, group)
        .await
        .unwrap()
        .desired
}

/// A hand-made change of a group's desired capacity (not through the function).
async fn set_desired(stack: &Stack, group: &str, to: i32) {
    stack
        .clients
        .asg
        .set_desired_capacity()
        .auto_scaling_group_name(group)
        .desired_capacity(to)
        .send()
        .await
        .unwrap();
}

/// The instant of an `at(...)` expression, as the RFC 3339 a process clock starts at.
fn instant(expression: &str) -> String {
    let inner = expression
        .strip_prefix("at(")
        .and_then(|e| e.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not an at() expression: {expression}"));
    format!("{inner}Z")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calendar_becomes_schedules_that_raise_and_return_the_groups() {
    let stack = stack_with_group().await;
    // 2027-03-14 and 2027-11-07 are the Sundays DST starts and ends in New York; line 4 is bad.
    let calendar =
        "# e2e slate\n2027-03-14,19:30,high\n\n2027-03-15,19:30,ludicrous\n2027-11-07,19:30,high\n";
    platform::put_params(&stack.clients, &[("calendar/games", calendar)])
        .await
        .unwrap();

    // The daily plan, 06:00 EDT on the day DST starts: today's slate is planned, tomorrow's
    // malformed line reported (P3), nothing from it scheduled.
    let f = at(&stack, "2027-03-14T10:00:00Z").await;
    let v = f.invoke_ok(plan("plan-1")).await.unwrap();
    assert_eq!(
        schedule_names(&stack).await,
        vec![
            "game-night-prescale-2027-03-14",
            "game-night-return-2027-03-14"
        ],
        "{v}"
    );
    let (pre_at, pre_input) = schedule(&stack, "game-night-prescale-2027-03-14").await;
    let (back_at, back_input) = schedule(&stack, "game-night-return-2027-03-14").await;
    // 19:30 EDT (UTC-4) = 23:30 UTC; 60 min before, 240 min after.
    assert_eq!(pre_at, "at(2027-03-14T22:30:00)");
    assert_eq!(back_at, "at(2027-03-15T03:30:00)");
    let alerts = calendar_alerts(&stack).await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["severity"], "P3");
    let summary = alerts[0]["summary"].as_str().unwrap_or("");
    assert!(
        summary.contains("line 4") && summary.contains("unknown load 'ludicrous'"),
        "{summary}"
    );
    // Re-planning (same content) later that morning: nothing new, no second alert.
    let v = f.invoke_ok(plan("plan-2")).await.unwrap();
    assert_eq!(schedule_names(&stack).await.len(), 2, "{v}");
    assert!(calendar_alerts(&stack).await.is_empty());
    drop(f);

    // The pre-scale delivered at its minute. One guard over both groups, default blast radius
    // (50 % of 2: one change per delivery): web to high = 4 (ceiling 4, MaxSize 4), the worker
    // stopped by the blast radius and left for a follow-up a minute later.
    let worker_before = desired(&stack, WORKER).await;
    let f = at(&stack, &instant(&pre_at)).await;
    let v = f.invoke_ok(pre_input.clone()).await.unwrap();
    assert_eq!(desired(&stack, WEB).await, 4, "{v}");
    assert_eq!(desired(&stack, WORKER).await, worker_before, "{v}");
    assert_eq!(v["records"].as_array().map(Vec::len), Some(1), "{v}");
    let actions = &v["records"][0]["actions"];
    assert_eq!(actions[0]["action"], "asg.prescale", "{v}");
    assert_eq!(actions[0]["outcome"], "acted", "{v}");
    assert_eq!(actions[1]["resource"], format!("asg:{WORKER}"), "{v}");
    assert_eq!(actions[1]["stopped_by"], "blast_radius", "{v}");
    drop(f);
    let (step1_at, step1_input) = schedule(&stack, "game-night-prescale-2027-03-14-step-1").await;
    assert_eq!(step1_at, "at(2027-03-14T22:31:00)");
    assert_eq!(step1_input["nbaops"]["step"], 1);
    assert_eq!(step1_input["nbaops"]["date"], "2027-03-14");
    assert_eq!(step1_input["nbaops"]["load"], "high");

    // The follow-up delivered at its minute: the worker goes up, nothing more is scheduled.
    let f = at(&stack, &instant(&step1_at)).await;
    let v = f.invoke_ok(step1_input.clone()).await.unwrap();
    assert_eq!(desired(&stack, WEB).await, 4, "{v}");
    assert_eq!(desired(&stack, WORKER).await, 4, "{v}");
    let names = schedule_names(&stack).await;
    assert_eq!(
        names
            .iter()
            .filter(|n| n.contains("-step-"))
            .collect::<Vec<_>>(),
        vec!["game-night-prescale-2027-03-14-step-1"],
        "{v}"
    );
    // The worker is lowered by hand; the follow-up is delivered again under another delivery id:
    // the guard's idempotency (the work id is task + slate date) makes no second change, and
    // nothing new is scheduled.
    set_desired(&stack, WORKER, worker_before).await;
    let mut dup = step1_input.clone();
    dup["nbaops"]["id"] = json!("a-second-delivery");
    let v = f.invoke_ok(dup).await.unwrap();
    assert_eq!(desired(&stack, WORKER).await, worker_before, "{v}");
    let dup_action = &v["records"][0]["actions"][0];
    assert_eq!(dup_action["resource"], format!("asg:{WORKER}"), "{v}");
    assert_eq!(dup_action["stopped_by"], "idempotency", "{v}");
    assert_eq!(schedule_names(&stack).await, names, "{v}");
    set_desired(&stack, WORKER, 4).await;
    drop(f);

    // The worker's CPU alarm is in ALARM when the return comes: the worker stays, web goes back.
    platform::cpu_alarm_firing(
        &stack.clients,
        "nbaops-dev-worker-cpu-high",
        WORKER,
        1,
        "e2e: the worker is busy",
    )
    .await
    .unwrap();
    let f = at(&stack, &instant(&back_at)).await;
    let v = f.invoke_ok(back_input).await.unwrap();
    assert_eq!(desired(&stack, WEB).await, 2, "{v}");
    assert_eq!(desired(&stack, WORKER).await, 4, "{v}");
    assert_eq!(v["records"].as_array().map(Vec::len), Some(1), "{v}");
    let notes = v["records"][0]["notes"].to_string();
    assert!(
        notes.contains("left at 4") && notes.contains("nbaops-dev-worker-cpu-high"),
        "{v}"
    );
    // A group left for its alarm is not a group left for a follow-up.
    assert!(
        !schedule_names(&stack)
            .await
            .iter()
            .any(|n| n.starts_with("game-night-return-2027-03-14-step-")),
        "{v}"
    );
    drop(f);

    // The day DST ends: 19:30 EST (UTC-5) = 00:30 UTC the next day.
    let f = at(&stack, "2027-11-07T11:00:00Z").await;
    let v = f.invoke_ok(plan("plan-3")).await.unwrap();
    let (pre_at, _) = schedule(&stack, "game-night-prescale-2027-11-07").await;
    let (back_at, _) = schedule(&stack, "game-night-return-2027-11-07").await;
    assert_eq!(pre_at, "at(2027-11-07T23:30:00)", "{v}");
    assert_eq!(back_at, "at(2027-11-08T04:30:00)", "{v}");
    // The tip-off moves to 20:00 that afternoon: a re-plan replaces both schedules.
    let moved = calendar.replace("2027-11-07,19:30,high", "2027-11-07,20:00,high");
    platform::put_params(&stack.clients, &[("calendar/games", moved.as_str())])
        .await
        .unwrap();
    let v = f.invoke_ok(plan("plan-4")).await.unwrap();
    let (pre_at, _) = schedule(&stack, "game-night-prescale-2027-11-07").await;
    let (back_at, _) = schedule(&stack, "game-night-return-2027-11-07").await;
    assert_eq!(pre_at, "at(2027-11-08T00:00:00)", "{v}");
    assert_eq!(back_at, "at(2027-11-08T05:00:00)", "{v}");
    assert_eq!(
        schedule_names(&stack)
            .await
            .iter()
            .filter(|n| n.ends_with("2027-11-07"))
            .count(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_calendar_is_one_p4_and_no_schedule() {
    let stack = stack_with_group().await;
    let f = at(&stack, "2027-03-14T10:00:00Z").await;
    let v = f.invoke_ok(plan("plan-a")).await.unwrap();
    let alerts = calendar_alerts(&stack).await;
    assert_eq!(alerts.len(), 1, "{v}");
    assert_eq!(alerts[0]["severity"], "P4");
    assert_eq!(
        alerts[0]["dedup_key"],
        "game-night-calendar#missing:/nbaops/dev/calendar/games"
    );
    // The next day's run: still missing, no second P4.
    drop(f);
    let f = at(&stack, "2027-03-15T10:00:00Z").await;
    let v = f.invoke_ok(plan("plan-b")).await.unwrap();
    assert!(calendar_alerts(&stack).await.is_empty(), "{v}");
    assert!(
        v["records"][0]["notes"]
            .to_string()
            .contains("already reported"),
        "{v}"
    );
    assert!(schedule_names(&stack).await.is_empty());
    assert_eq!(desired(&stack, WEB).await, 2);
}

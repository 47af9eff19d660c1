//! offhours end to end: the real binary over the Lambda Runtime API against moto. A `test`
//! environment (its own Auto Scaling group and RDS instance, tagged with a schedule, created
//! here) is stopped and started by time-travelling Scheduler ticks (`nbaops.at`); the platform's
//! dev resources carry no schedule tag and must never move.

use aws_sdk_rds::types::Tag as RdsTag;
use nbaops_tests::demo::Stack;
use nbaops_tests::function::FunctionUnderTest;
use nbaops_tests::platform::{self, GroupView};
use nbaops_tests::platform::{create_test_env, OFFICE, TEST_DB, TEST_WEB};
use nbaops_tests::{function_binary, workspace_root};
use serde_json::{json, Value};

const FN: &str = "offhours";
const CONFIG: &[(&str, &str)] = &[
    ("NBAOPS_OFFHOURS__SCHEDULES", OFFICE),
    ("NBAOPS_GUARD__BLAST__MAX_PERCENT", "100"),
];

async fn start(stack: &Stack, extra: &[(&str, &str)]) -> FunctionUnderTest {
    let mut env = CONFIG.to_vec();
    env.extend_from_slice(extra);
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

/// A Scheduler tick at `at` (RFC 3339), with its own execution id.
async fn tick(f: &FunctionUnderTest, at: &str) -> Value {
    let v = invoke(
        f,
        json!({"nbaops": {"task": "offhours", "at": at, "id": format!("exec-{at}")}}),
    )
    .await;
    v["records"][0].clone()
}

fn actions(rec: &Value) -> Vec<(String, String)> {
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

fn pair(action: &str, outcome: &str) -> (String, String) {
    (action.to_string(), outcome.to_string())
}

async fn db(stack: &Stack) -> (String, String) {
    let out = stack
        .clients
        .rds
        .describe_db_instances()
        .db_instance_identifier(TEST_DB)
        .send()
        .await
        .unwrap();
    let i = &out.db_instances()[0];
    (
        i.db_instance_status().unwrap_or_default().to_string(),
        i.db_instance_arn().unwrap_or_default().to_string(),
    )
}

async fn group(stack: &Stack) -> GroupView {
    platform::group_view(&stack.clients, TEST_WEB)
        .await
        .unwrap()
}

const RUNNING: GroupView = GroupView {
    desired: 2,
    min: 1,
    max: 4,
};
const ZERO: GroupView = GroupView {
    desired: 0,
    min: 0,
    max: 0,
};

/// The platform's own (unscheduled) resources never move.
async fn dev_untouched(stack: &Stack) {
    let web = platform::group_view(&stack.clients, platform::WEB)
        .await
        .unwrap();
    assert_eq!((web.min, web.desired), (2, 2));
    let out = stack
        .clients
        .rds
        .describe_db_instances()
        .db_instance_identifier(platform::DB)
        .send()
        .await
        .unwrap();
    assert_eq!(
        out.db_instances()[0].db_instance_status(),
        Some("available")
    );
}

/// The 0154 fixture, about the test instance.
fn auto_start_event() -> Value {
    let text = std::fs::read_to_string(
        workspace_root().join("events/rds/eventbridge-auto-start-after-7-days.json"),
    )
    .unwrap()
    .replace("nbaops-dev-db", TEST_DB);
    serde_json::from_str(&text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stops_groups_then_rds_restops_an_auto_start_and_starts_rds_before_the_groups() {
    let stack = Stack::start(false).await.unwrap();
    create_test_env(&stack).await;
    let f = start(&stack, &[]).await;

    // 17:55 UTC is 18:55 in Paris: office hours, nothing to do.
    let rec = tick(&f, "2026-12-02T17:55:00Z").await;
    assert!(actions(&rec).is_empty(), "{rec}");

    // 19:00 Paris: the group first (size saved, then 0/0/0), then the database.
    let rec = tick(&f, "2026-12-02T18:00:00Z").await;
    assert_eq!(
        actions(&rec),
        vec![
            pair("asg.offhours_stop asg:nbaops-test-web", "acted"),
            pair("rds.offhours_stop rds:nbaops-test-db", "acted"),
        ],
        "{rec}"
    );
    assert_eq!(group(&stack).await, ZERO);
    assert_eq!(db(&stack).await.0, "stopped");
    assert_eq!(
        rec["actions"][0]["after"]["saved"],
        json!({"min": 1, "max": 4, "desired": 2})
    );
    // The outbound "nbaops action" events, in the order the actions happened.
    let audits = platform::drain(&stack.clients, &stack.platform.actions_queue)
        .await
        .unwrap();
    let order: Vec<&str> = audits
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(order, vec!["asg.offhours_stop", "rds.offhours_stop"]);

    // RDS starts the instance by itself (7 days stopped): RDS-EVENT-0154 -> stopped again.
    let arn = db(&stack).await.1;
    stack
        .clients
        .rds
        .start_db_instance()
        .db_instance_identifier(TEST_DB)
        .send()
        .await
        .unwrap();
    assert_eq!(db(&stack).await.0, "available");
    let v = invoke(&f, auto_start_event()).await;
    let rec = &v["records"][0];
    assert_eq!(
        actions(rec),
        vec![pair("rds.offhours_stop rds:nbaops-test-db", "acted")],
        "{v}"
    );
    assert_eq!(db(&stack).await.0, "stopped");
    assert!(!arn.is_empty());

    // Thursday 08:00 Paris: the database first; the group only once it is `available`
    // (moto makes it available at once, so the same tick or the next restores the group).
    let mut seen = Vec::new();
    let mut restore_before = Value::Null;
    for at in ["2026-12-03T07:00:00Z", "2026-12-03T07:05:00Z"] {
        let rec = tick(&f, at).await;
        for (i, a) in actions(&rec).into_iter().enumerate() {
            if a.0.starts_with("asg.offhours_start") {
                restore_before = rec["actions"][i]["before"].clone();
            }
            seen.push(a);
        }
    }
    assert_eq!(
        seen,
        vec![
            pair("rds.offhours_start rds:nbaops-test-db", "acted"),
            pair("asg.offhours_start asg:nbaops-test-web", "acted"),
        ]
    );
    // The audit of the resize records the database as `available` when the group was resized.
    assert_eq!(
        restore_before["databases"],
        json!([{"db": "rds:nbaops-test-db", "status": "available"}]),
        "{restore_before}"
    );
    assert_eq!(group(&stack).await, RUNNING);
    assert_eq!(db(&stack).await.0, "available");
    let audits = platform::drain(&stack.clients, &stack.platform.actions_queue)
        .await
        .unwrap();
    let order: Vec<&str> = audits
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        vec![
            "rds.offhours_stop",
            "rds.offhours_start",
            "asg.offhours_start"
        ]
    );
    // Nothing diverged: no alert.
    assert!(
        platform::drain(&stack.clients, &stack.platform.alerts_queue)
            .await
            .unwrap()
            .is_empty()
    );
    dev_untouched(&stack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_opt_out_and_protected_make_no_change_and_a_manual_start_is_respected() {
    let stack = Stack::start(false).await.unwrap();
    create_test_env(&stack).await;
    let c = &stack.clients;

    // Dry-run: the whole stop is previewed, nothing moves.
    let dry = start(&stack, &[("NBAOPS_GUARD__DRY_RUN", "true")]).await;
    let rec = tick(&dry, "2026-12-02T18:00:00Z").await;
    assert_eq!(
        actions(&rec),
        vec![
            pair("asg.offhours_stop asg:nbaops-test-web", "would-act"),
            pair("rds.offhours_stop rds:nbaops-test-db", "would-act"),
        ],
        "{rec}"
    );
    assert_eq!(group(&stack).await, RUNNING);
    assert_eq!(db(&stack).await.0, "available");
    drop(dry);

    // The group opted out, the database protected: no change either.
    let f = start(&stack, &[]).await;
    platform::tag_group(c, TEST_WEB, "nbaops:offhours-opt-out", "true")
        .await
        .unwrap();
    let arn = db(&stack).await.1;
    c.rds
        .add_tags_to_resource()
        .resource_name(&arn)
        .tags(
            RdsTag::builder()
                .key("nbaops:protect")
                .value("true")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let rec = tick(&f, "2026-12-02T18:05:00Z").await;
    assert_eq!(
        actions(&rec),
        vec![pair("rds.offhours_stop rds:nbaops-test-db", "skipped")],
        "{rec}"
    );
    assert_eq!(rec["actions"][0]["stopped_by"], "protected_tag");
    assert!(rec["notes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n.as_str().unwrap().contains("opted out")));
    assert_eq!(group(&stack).await, RUNNING);
    assert_eq!(db(&stack).await.0, "available");

    // Tags removed: the same (not yet acted) transition is acted on at the next tick.
    platform::untag_group(c, TEST_WEB, "nbaops:offhours-opt-out")
        .await
        .unwrap();
    c.rds
        .remove_tags_from_resource()
        .resource_name(&arn)
        .tag_keys("nbaops:protect")
        .send()
        .await
        .unwrap();
    let rec = tick(&f, "2026-12-02T18:10:00Z").await;
    assert_eq!(actions(&rec).len(), 2, "{rec}");
    assert_eq!(db(&stack).await.0, "stopped");

    // 22:00 UTC: someone starts the database by hand. Respected, reported once (P3).
    c.rds
        .start_db_instance()
        .db_instance_identifier(TEST_DB)
        .send()
        .await
        .unwrap();
    let _ = platform::drain(c, &stack.platform.alerts_queue)
        .await
        .unwrap();
    let rec = tick(&f, "2026-12-02T22:00:00Z").await;
    assert!(actions(&rec).is_empty(), "{rec}");
    assert_eq!(db(&stack).await.0, "available");
    let rec = tick(&f, "2026-12-02T22:05:00Z").await;
    assert!(actions(&rec).is_empty());
    let alerts = platform::drain(c, &stack.platform.alerts_queue)
        .await
        .unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["severity"], "P3");
    assert_eq!(alerts[0]["env"], "test");
    assert!(alerts[0]["summary"]
        .as_str()
        .unwrap()
        .contains("started by hand"));
    dev_untouched(&stack).await;
}

//! cost-anomaly end to end: the real binary over the Lambda Runtime API against moto. Cost
//! Explorer results are injected into moto; containment acts on a `test` environment (its own
//! Auto Scaling group and RDS instance, created here) and every guard path leaves it untouched.
//! By default containment asks a person first (approval policy `always`, carried out in
//! e2e_approval_cost); the immediate path runs with both policies set to `never`.

use aws_sdk_autoscaling::types::Tag as AsgTag;
use aws_sdk_rds::types::Tag as RdsTag;
use chrono::Duration as Days;
use nbaops_shared::guard::AuditRecord;
use nbaops_tests::demo::Stack;
use nbaops_tests::explain::check_sentence;
use nbaops_tests::function::FunctionUnderTest;
use nbaops_tests::http::http;
use nbaops_tests::platform::{self, GroupView};
use nbaops_tests::{function_binary, workspace_root};
use serde_json::{json, Value};

const FN: &str = "cost-anomaly";
const TEST_WEB: &str = "nbaops-test-web";
const TEST_DB: &str = "nbaops-test-db";
const CONTAIN: &[(&str, &str)] = &[
    ("NBAOPS_COST__CONTAIN__ENVS", "test"),
    (
        "NBAOPS_COST__CONTAIN__RESOURCES",
        r#"{"test":{"asgs":["nbaops-test-web"],"rds":["nbaops-test-db"]}}"#,
    ),
];

/// The immediate path: both approval policies set to `never` by the operator (the SPEC's
/// default, `always`, asks a person first: e2e_approval_cost).
const NO_APPROVAL: &[(&str, &str)] = &[
    ("NBAOPS_APPROVAL__ASG__CONTAIN_TO_ZERO", "never"),
    ("NBAOPS_APPROVAL__RDS__STOP", "never"),
];

fn fixture_text(path: &str) -> String {
    std::fs::read_to_string(workspace_root().join(path)).unwrap()
}

fn fixture(path: &str) -> Value {
    serde_json::from_str(&fixture_text(path)).unwrap()
}

/// The multi-root-cause anomaly as the nbaops-test account and monitor would send it.
fn test_env_anomaly(id: &str) -> Value {
    let text = fixture_text("events/cost/sns-anomaly-multiple-root-causes.json")
        .replace("nbaops-dev", "nbaops-test");
    let mut v: Value = serde_json::from_str(&text).unwrap();
    v["Records"][0]["Sns"]["MessageId"] = Value::String(id.into());
    v
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

async fn invoke(f: &FunctionUnderTest, payload: Value) -> Value {
    f.invoke_ok(payload).await.unwrap()
}

/// The `test` environment: one group 1..4 (desired 2) and one RDS instance, tagged env=test.
async fn create_test_env(stack: &Stack) {
    let c = &stack.clients;
    c.asg
        .create_launch_configuration()
        .launch_configuration_name("nbaops-test-lc")
        .image_id("ami-12c6146b")
        .instance_type("t3.micro")
        .send()
        .await
        .unwrap();
    c.asg
        .create_auto_scaling_group()
        .auto_scaling_group_name(TEST_WEB)
        .launch_configuration_name("nbaops-test-lc")
        .min_size(1)
        .max_size(4)
        .desired_capacity(2)
        .availability_zones("us-east-1a")
        .tags(
            AsgTag::builder()
                .key("env")
                .value("test")
                .resource_id(TEST_WEB)
                .resource_type("auto-scaling-group")
                .propagate_at_launch(true)
                .build(),
        )
        .send()
        .await
        .unwrap();
    c.rds
        .create_db_instance()
        .db_instance_identifier(TEST_DB)
        .db_instance_class("db.t3.micro")
        .engine("postgres")
        .engine_version("15.7")
        .allocated_storage(20)
        .master_username("nbaops")
        .master_user_password("not-a-real-password")
        .tags(RdsTag::builder().key("env").value("test").build())
        .send()
        .await
        .unwrap();
}

async fn db_status(stack: &Stack, id: &str) -> String {
    let out = stack
        .clients
        .rds
        .describe_db_instances()
        .db_instance_identifier(id)
        .send()
        .await
        .unwrap();
    out.db_instances()[0]
        .db_instance_status()
        .unwrap_or_default()
        .to_string()
}

async fn db_arn(stack: &Stack) -> String {
    let out = stack
        .clients
        .rds
        .describe_db_instances()
        .db_instance_identifier(TEST_DB)
        .send()
        .await
        .unwrap();
    out.db_instances()[0]
        .db_instance_arn()
        .unwrap_or_default()
        .to_string()
}

async fn untouched(stack: &Stack) {
    assert_eq!(
        platform::group_view(&stack.clients, TEST_WEB)
            .await
            .unwrap(),
        GroupView {
            desired: 2,
            min: 1,
            max: 4
        }
    );
    assert_eq!(db_status(stack, TEST_DB).await, "available");
}

/// Queues Cost Explorer results in moto: each distinct GetCostAndUsage request takes the next.
async fn inject_cost_results(stack: &Stack, results: Vec<Value>) {
    let body = json!({ "results": results }).to_string();
    let (status, text) = http(
        "POST",
        &format!(
            "{}/moto-api/static/ce/cost-and-usage-results",
            stack.moto.endpoint
        ),
        Some(body.as_bytes()),
        &[("Content-Type", "application/json")],
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&text));
}

fn daily(groups: &[(&str, Vec<f64>)], days: &[chrono::NaiveDate]) -> Value {
    let by_time: Vec<Value> = days
        .iter()
        .enumerate()
        .map(|(i, d)| {
            json!({
                "TimePeriod": {"Start": d.to_string(), "End": (*d + Days::days(1)).to_string()},
                "Total": {},
                "Groups": groups.iter().map(|(k, amounts)| json!({
                    "Keys": [k],
                    "Metrics": {"UnblendedCost": {"Amount": format!("{:.2}", amounts[i]), "Unit": "USD"}}
                })).collect::<Vec<_>>(),
                "Estimated": false
            })
        })
        .collect();
    json!({"ResultsByTime": by_time, "DimensionValueAttributes": [], "GroupDefinitions": []})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_check_reads_injected_cost_explorer_results_and_alerts_on_a_spike() {
    let stack = Stack::start(false).await.unwrap();
    let today = nbaops_tests::clock::now().date_naive();
    // Seven baseline days, then yesterday (the day judged).
    let days: Vec<_> = (1..=8).rev().map(|i| today - Days::days(i)).collect();
    let by_service = daily(
        &[
            ("Amazon Elastic Compute Cloud - Compute", vec![20.0; 8]),
            ("AWS Lambda", vec![5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 60.0]),
        ],
        &days,
    );
    let by_env = daily(
        &[
            (
                "env$dev",
                vec![25.0, 25.0, 25.0, 25.0, 25.0, 25.0, 25.0, 30.0],
            ),
            ("env$test", vec![0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 50.0]),
        ],
        &days,
    );
    inject_cost_results(&stack, vec![by_service, by_env]).await;
    let f = start(&stack, &[]).await;
    let v = invoke(&f, fixture("events/schedule/cost-daily-check.json")).await;
    let rec = &v["records"][0];
    let summaries: Vec<&str> = rec["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["summary"].as_str().unwrap())
        .collect();
    assert_eq!(summaries.len(), 2, "{v}");
    assert!(summaries[0].contains("AWS Lambda $60.00"), "{summaries:?}");
    assert!(summaries[1].contains("env=test $50.00"), "{summaries:?}");
    let alerts = platform::drain(&stack.clients, &stack.platform.alerts_queue)
        .await
        .unwrap();
    assert_eq!(alerts.len(), 2);
    assert_eq!(alerts[1]["env"], "test", "a tag spike is the tagged env's");
    assert_eq!(alerts[0]["severity"], "P2", "+55 $ = +1100 %");
    assert!(
        platform::drain(&stack.clients, &stack.platform.actions_queue)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anomaly_for_test_env_asks_by_default_and_contains_it_without_approval_when_set_never() {
    let stack = Stack::start(false).await.unwrap();
    create_test_env(&stack).await;
    let mut extra = CONTAIN.to_vec();
    extra.push(("NBAOPS_GUARD__BLAST__MAX_PERCENT", "100"));

    // By default (approval policy `always`) containment asks a person and changes nothing.
    let f = start(&stack, &extra).await;
    let v = invoke(&f, test_env_anomaly("contain-ask")).await;
    let outcomes: Vec<&str> = v["records"][0]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, vec!["needs-approval", "needs-approval"], "{v}");
    untouched(&stack).await;
    let asked = platform::drain(&stack.clients, &stack.platform.alerts_queue)
        .await
        .unwrap();
    assert_eq!(
        asked.len(),
        3,
        "two approval alerts and the anomaly's: {asked:?}"
    );
    platform::drain(&stack.clients, &stack.platform.actions_queue)
        .await
        .unwrap();
    drop(f);

    // The operator set both policies to never: the guard decides alone and contains.
    extra.extend_from_slice(NO_APPROVAL);
    let f = start(&stack, &extra).await;
    let v = invoke(&f, test_env_anomaly("contain-1")).await;
    let rec = &v["records"][0];
    let outcomes: Vec<&str> = rec["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, vec!["acted", "acted"], "{v}");
    assert_eq!(
        platform::group_view(&stack.clients, TEST_WEB)
            .await
            .unwrap(),
        GroupView {
            desired: 0,
            min: 0,
            max: 0
        }
    );
    assert_eq!(db_status(&stack, TEST_DB).await, "stopped");
    // The platform's own dev resources are not touched.
    assert_eq!(
        platform::group_view(&stack.clients, platform::WEB)
            .await
            .unwrap()
            .desired,
        2
    );
    let alerts = platform::drain(&stack.clients, &stack.platform.alerts_queue)
        .await
        .unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0]["severity"], "P2");
    assert_eq!(alerts[0]["env"], "test");
    let runbook = alerts[0]["runbook"].as_str().unwrap();
    assert!(
        runbook.contains("aws autoscaling update-auto-scaling-group --auto-scaling-group-name nbaops-test-web --min-size 1 --max-size 4 --desired-capacity 2"),
        "{runbook}"
    );
    assert!(runbook.contains("aws rds start-db-instance --db-instance-identifier nbaops-test-db"));
    let audits = platform::drain(&stack.clients, &stack.platform.actions_queue)
        .await
        .unwrap();
    assert_eq!(audits.len(), 2);
    assert!(audits.iter().all(|a| a["outcome"] == "acted"));
    // Each containment explained in one sentence (the anomaly's impact against its threshold,
    // the containment keys), and the alert carries exactly those sentences.
    let mut sentences = Vec::new();
    for a in &audits {
        let rec: AuditRecord = serde_json::from_value(a.clone()).unwrap();
        check_sentence(&rec).unwrap();
        assert!(
            rec.sentence.contains("cost.contain.envs"),
            "{}",
            rec.sentence
        );
        sentences.push(Value::String(rec.sentence));
    }
    let mut announced = alerts[0]["actions_taken"].as_array().cloned().unwrap();
    announced.sort_by_key(|v| v.to_string());
    sentences.sort_by_key(|v| v.to_string());
    assert_eq!(announced, sentences);
    let counts = platform::ledger_counts(&stack.clients).await.unwrap();
    assert_eq!(counts.get("contained"), Some(&2), "{counts:?}");

    // A second anomaly: already contained, nothing more to do.
    let v = invoke(&f, test_env_anomaly("contain-2")).await;
    assert!(
        v["records"][0]["actions"].as_array().unwrap().is_empty(),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_guard_path_leaves_the_test_env_untouched() {
    let stack = Stack::start(false).await.unwrap();
    create_test_env(&stack).await;
    let mut extra = CONTAIN.to_vec();
    extra.extend_from_slice(NO_APPROVAL);
    extra.push(("NBAOPS_GUARD__BLAST__MAX_PERCENT", "100"));
    let f = start(&stack, &extra).await;

    // Dry-run (the operator's SSM switch): would act on both, changes nothing, saves nothing.
    platform::put_params(&stack.clients, &[("guard/dry_run", "true")])
        .await
        .unwrap();
    let v = invoke(&f, test_env_anomaly("guard-dry")).await;
    let outcomes: Vec<&str> = v["records"][0]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, vec!["would-act", "would-act"], "{v}");
    platform::delete_param(&stack.clients, "guard/dry_run")
        .await
        .unwrap();
    untouched(&stack).await;

    // Protected tag on both resources.
    platform::tag_group(&stack.clients, TEST_WEB, "nbaops:protect", "true")
        .await
        .unwrap();
    let arn = db_arn(&stack).await;
    stack
        .clients
        .rds
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
    let v = invoke(&f, test_env_anomaly("guard-protect")).await;
    let stopped: Vec<&str> = v["records"][0]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["stopped_by"].as_str().unwrap_or("-"))
        .collect();
    assert_eq!(stopped, vec!["protected_tag", "protected_tag"], "{v}");
    platform::untag_group(&stack.clients, TEST_WEB, "nbaops:protect")
        .await
        .unwrap();
    stack
        .clients
        .rds
        .remove_tags_from_resource()
        .resource_name(&arn)
        .tag_keys("nbaops:protect")
        .send()
        .await
        .unwrap();
    untouched(&stack).await;

    // Production: never acted on, whatever says so.
    let prod = fixture_text("events/cost/sns-anomaly-multiple-root-causes.json")
        .replace("nbaops-dev", "nbaops-prod");
    let v = invoke(&f, serde_json::from_str(&prod).unwrap()).await;
    assert!(v["records"][0]["actions"].as_array().unwrap().is_empty());
    assert!(
        v.to_string().contains("production is never contained"),
        "{v}"
    );

    // Unattributable: a root cause with only a service, no mapping, no tagged cost.
    let v = invoke(&f, fixture("events/cost/sns-anomaly-service-only.json")).await;
    assert!(v["records"][0]["actions"].as_array().unwrap().is_empty());
    assert!(v.to_string().contains("never acting"), "{v}");
    untouched(&stack).await;
    assert_eq!(
        platform::ledger_counts(&stack.clients)
            .await
            .unwrap()
            .get("contained"),
        None,
        "nothing saved for undo: nothing was done"
    );
    drop(f);

    // Blast radius at the default 50 %: of the env's two resources only the first may change.
    let mut extra = CONTAIN.to_vec();
    extra.extend_from_slice(NO_APPROVAL);
    let f = start(&stack, &extra).await;
    let v = invoke(&f, test_env_anomaly("guard-blast")).await;
    assert_eq!(
        v["records"][0]["actions"][1]["stopped_by"], "blast_radius",
        "{v}"
    );
    assert_eq!(
        db_status(&stack, TEST_DB).await,
        "available",
        "the RDS stop was refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prod_in_contain_envs_fails_init_naming_the_key() {
    let stack = Stack::start(false).await.unwrap();
    platform::put_params(&stack.clients, &[("cost/contain/envs", "test,prod")])
        .await
        .unwrap();
    let err = FunctionUnderTest::start(
        &function_binary(FN).unwrap(),
        FN,
        &stack.function_env(&[]),
        1,
    )
    .await
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(
        err.contains("cost.contain.envs") && err.contains("prod"),
        "{err}"
    );
}

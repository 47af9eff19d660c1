//! Issue #19 for cost-anomaly: containment of a non-prod environment is approved by a person
//! every time (`approval.asg.contain_to_zero` / `approval.rds.stop`, SPEC default `always`). The
//! real cost-anomaly binary against moto: an anomaly attributed to `test` asks once per resource
//! (a pending request and an `approval` alert each, saying which environment and anomaly, nothing
//! changed); approved with `decide` (as alert-router's POST and `nbaops approve` do) and delivered
//! as `approved_input`, the group goes to 0/0/0 once, its sizes saved under `contained#test` as the
//! immediate path saves them (so `nbaops status` lists the environment as contained), the audit
//! record names the approver, a second delivery does nothing. Denied: nothing. A group resized or
//! an instance stopped since the request: nothing, audited as skipped, saying what moved. Dry-run
//! asks nobody.

use nbaops_shared::adapters::DynamoLedger;
use nbaops_shared::guard::{
    approved_input, decide, ApprovalDecision, ApprovalRequest, ApprovalState, AuditRecord, Decided,
    Verdict,
};
use nbaops_tests::approval;
use nbaops_tests::demo::Stack;
use nbaops_tests::explain::check_sentence;
use nbaops_tests::function::FunctionUnderTest;
use nbaops_tests::platform::{self, GroupView, LEDGER, TEST_DB, TEST_WEB};
use nbaops_tests::{clock, function_binary, workspace_root};
use serde_json::Value;

const FN: &str = "cost-anomaly";
const ANOMALY: &str = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d";
/// Containment on for `test`, its group and instance listed; no approval policy set: the
/// SPEC's default (`always`) applies.
const CONTAIN: &[(&str, &str)] = &[
    ("NBAOPS_COST__CONTAIN__ENVS", "test"),
    (
        "NBAOPS_COST__CONTAIN__RESOURCES",
        r#"{"test":{"asgs":["nbaops-test-web"],"rds":["nbaops-test-db"]}}"#,
    ),
];

/// The multi-root-cause anomaly as the nbaops-test account and monitor would send it.
fn test_env_anomaly(id: &str) -> Value {
    let text = std::fs::read_to_string(
        workspace_root().join("events/cost/sns-anomaly-multiple-root-causes.json"),
    )
    .unwrap()
    .replace("nbaops-dev", "nbaops-test");
    let mut v: Value = serde_json::from_str(&text).unwrap();
    v["Records"][0]["Sns"]["MessageId"] = Value::String(id.into());
    v
}

async fn start(stack: &Stack) -> FunctionUnderTest {
    FunctionUnderTest::start(
        &function_binary(FN).unwrap(),
        FN,
        &stack.function_env(CONTAIN),
        1,
    )
    .await
    .unwrap()
}

fn ledger(stack: &Stack) -> DynamoLedger {
    DynamoLedger {
        client: stack.clients.ddb.clone(),
        table: LEDGER.into(),
    }
}

fn who(by: &str) -> Decided {
    Decided {
        by: by.into(),
        from: "192.0.2.7".into(),
        at: clock::now(),
    }
}

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

async fn group(stack: &Stack) -> GroupView {
    platform::group_view(&stack.clients, TEST_WEB)
        .await
        .unwrap()
}

const UNTOUCHED: GroupView = GroupView {
    desired: 2,
    min: 1,
    max: 4,
};

/// The mutating calls cost-anomaly made at moto.
fn mutations(stack: &Stack) -> (usize, usize) {
    (
        stack
            .moto
            .count_calls(FN, "autoscaling", "UpdateAutoScalingGroup"),
        stack.moto.count_calls(FN, "rds", "StopDBInstance"),
    )
}

/// `nbaops --json status` on the functions' environment and the test clock.
async fn status(stack: &Stack) -> Value {
    let out = tokio::process::Command::new(function_binary("nbaops").unwrap())
        .env_clear()
        .envs(std::env::var_os("PATH").map(|p| ("PATH", p)))
        .envs(stack.function_env(&[]))
        .envs([clock::env()])
        .args(["--json", "status"])
        .current_dir(workspace_root())
        .output()
        .await
        .unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
}

/// Invokes with the anomaly: both resources asked, nothing changed. Returns the approval ids of
/// the group and of the instance.
async fn ask(stack: &Stack, f: &FunctionUnderTest, event: &str) -> (String, String) {
    let v = f.invoke_ok(test_env_anomaly(event)).await.unwrap();
    let actions = v["records"][0]["actions"].as_array().cloned().unwrap();
    assert_eq!(actions.len(), 2, "{v}");
    let mut ids = Vec::new();
    for a in &actions {
        assert_eq!(a["outcome"], "needs-approval", "{v}");
        assert_eq!(a["stopped_by"], "change_window", "{v}");
        let rec: AuditRecord = serde_json::from_value(a.clone()).unwrap();
        check_sentence(&rec).unwrap();
        ids.push(rec.approval_id.unwrap());
    }
    assert_eq!(actions[0]["resource"], format!("asg:{TEST_WEB}"));
    assert_eq!(actions[1]["resource"], format!("rds:{TEST_DB}"));
    assert_eq!(group(stack).await, UNTOUCHED);
    assert_eq!(db_status(stack).await, "available");
    (ids[0].clone(), ids[1].clone())
}

async fn approve(stack: &Stack, id: &str, by: &str, verdict: Verdict) -> ApprovalRequest {
    match decide(&ledger(stack), "dev", id, verdict, who(by))
        .await
        .unwrap()
    {
        ApprovalDecision::Decided(req) => req,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containment_asks_each_time_and_an_approved_plan_is_carried_out_once_and_saved_for_undo() {
    let stack = Stack::start(false).await.unwrap();
    platform::create_test_env(&stack).await;
    let f = start(&stack).await;
    let l = ledger(&stack);

    // 1. Asked: one pending request per resource with the exact plan, one approval alert each
    // saying which environment and anomaly it is for, the anomaly's own alert; nothing changed.
    let (web, db) = ask(&stack, &f, "approve-1").await;
    for (id, action, resource) in [
        (&web, "asg.contain_to_zero", format!("asg:{TEST_WEB}")),
        (&db, "rds.stop", format!("rds:{TEST_DB}")),
    ] {
        let req = ApprovalRequest::load(&l, "dev", id).await.unwrap().unwrap();
        assert_eq!(req.state, ApprovalState::Pending);
        assert_eq!(req.function, FN);
        assert_eq!(
            (req.action.action.as_str(), req.action.resource.as_str()),
            (action, resource.as_str())
        );
        assert_eq!(req.action.before["env"], "test", "{req:?}");
    }
    let alerts = platform::drain(&stack.clients, &stack.platform.alerts_queue)
        .await
        .unwrap();
    assert_eq!(alerts.len(), 3, "{alerts:?}");
    let asked: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["approval_id"].is_string())
        .collect();
    assert_eq!(asked.len(), 2, "{alerts:?}");
    for a in &asked {
        let s = a["summary"].as_str().unwrap_or_default();
        assert!(
            s.contains("(env test)") && s.contains(&format!("cost anomaly {ANOMALY}")),
            "{s}"
        );
        assert!(
            s.contains("approval.asg.contain_to_zero = always")
                || s.contains("approval.rds.stop = always"),
            "{s}"
        );
    }
    assert_eq!(mutations(&stack), (0, 0));
    assert_eq!(
        platform::ledger_counts(&stack.clients)
            .await
            .unwrap()
            .get("contained"),
        None
    );

    // 2. The group approved by bob and delivered: 0/0/0 once, its sizes saved as the immediate
    // path saves them, the approver named in the audit record; a second delivery does nothing.
    let req = approve(&stack, &web, "bob", Verdict::Approve).await;
    platform::drain(&stack.clients, &stack.platform.actions_queue)
        .await
        .unwrap();
    let v = f.invoke_ok(approved_input(&req)).await.unwrap();
    let a = &v["records"][0]["actions"][0];
    assert_eq!(a["outcome"], "acted", "{v}");
    assert_eq!(a["approval_id"], web.as_str(), "{v}");
    assert_eq!(
        group(&stack).await,
        GroupView {
            desired: 0,
            min: 0,
            max: 0
        }
    );
    assert_eq!(mutations(&stack), (1, 0));
    let audits = platform::drain(&stack.clients, &stack.platform.actions_queue)
        .await
        .unwrap();
    let done: Vec<&Value> = audits.iter().filter(|x| x["outcome"] == "acted").collect();
    assert_eq!(done.len(), 1, "{audits:?}");
    assert!(
        done[0]["steps"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["step"] == "change_window"
                && s["note"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("approved by bob at")))),
        "{audits:?}"
    );
    let saved = approval::audit(&stack, &format!("asg:{TEST_WEB}"))
        .await
        .unwrap();
    assert!(saved.iter().any(|r| r["outcome"] == "acted"), "{saved:?}");
    let s = status(&stack).await;
    let kept = &s["contained"]["test"][format!("asg:{TEST_WEB}")];
    assert_eq!(
        (&kept["kind"], &kept["min"], &kept["max"], &kept["desired"]),
        (
            &Value::from("asg"),
            &Value::from(1),
            &Value::from(4),
            &Value::from(2)
        ),
        "{s}"
    );
    let used = ApprovalRequest::load(&l, "dev", &web)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(used.state, ApprovalState::Used);
    let v = f.invoke_ok(approved_input(&req)).await.unwrap();
    assert!(
        v["records"][0]["actions"]
            .as_array()
            .is_some_and(|a| a.is_empty()),
        "{v}"
    );
    assert!(v.to_string().contains("already used"), "{v}");
    assert_eq!(mutations(&stack), (1, 0), "one approval, one change");

    // 3. The instance denied by alice: delivering the task anyway stops nothing.
    let req = approve(&stack, &db, "alice", Verdict::Deny).await;
    let v = f.invoke_ok(approved_input(&req)).await.unwrap();
    assert!(
        v["records"][0]["actions"]
            .as_array()
            .is_some_and(|a| a.is_empty()),
        "{v}"
    );
    assert!(v.to_string().contains("denied by alice"), "{v}");
    assert_eq!(db_status(&stack).await, "available");
    assert_eq!(mutations(&stack), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_the_resources_moved_away_from_is_not_carried_out_and_says_why() {
    let stack = Stack::start(false).await.unwrap();
    platform::create_test_env(&stack).await;
    let f = start(&stack).await;
    let (web, db) = ask(&stack, &f, "stale-1").await;

    // Meanwhile someone resizes the group and stops the instance by hand.
    stack
        .clients
        .asg
        .set_desired_capacity()
        .auto_scaling_group_name(TEST_WEB)
        .desired_capacity(3)
        .send()
        .await
        .unwrap();
    stack
        .clients
        .rds
        .stop_db_instance()
        .db_instance_identifier(TEST_DB)
        .send()
        .await
        .unwrap();
    platform::drain(&stack.clients, &stack.platform.alerts_queue)
        .await
        .unwrap();

    for (id, resource, moved) in [
        (&web, format!("asg:{TEST_WEB}"), "desired was 2, now 3"),
        (
            &db,
            format!("rds:{TEST_DB}"),
            r#"status was "available", now "stopped""#,
        ),
    ] {
        let req = approve(&stack, id, "bob", Verdict::Approve).await;
        let v = f.invoke_ok(approved_input(&req)).await.unwrap();
        let a = &v["records"][0]["actions"][0];
        assert_eq!(a["outcome"], "skipped", "{v}");
        let sentence = a["sentence"].as_str().unwrap_or_default();
        assert!(
            sentence.contains(&format!("no longer matches live state: {moved}")),
            "{sentence}"
        );
        let audits = approval::audit(&stack, &resource).await.unwrap();
        assert!(
            audits
                .iter()
                .any(|r| r["outcome"] == "skipped" && r["sentence"] == sentence),
            "{audits:?}"
        );
        let alerts = platform::drain(&stack.clients, &stack.platform.alerts_queue)
            .await
            .unwrap();
        assert!(
            alerts
                .iter()
                .any(|x| x["summary"].as_str() == Some(sentence)),
            "the alert says why: {alerts:?}"
        );
    }
    assert_eq!(mutations(&stack), (0, 0));
    assert_eq!(group(&stack).await.desired, 3);
    assert_eq!(
        platform::ledger_counts(&stack.clients)
            .await
            .unwrap()
            .get("contained"),
        None,
        "nothing saved: nothing was done"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_asks_nobody() {
    let stack = Stack::start(false).await.unwrap();
    platform::create_test_env(&stack).await;
    platform::put_params(&stack.clients, &[("guard/dry_run", "true")])
        .await
        .unwrap();
    let f = start(&stack).await;
    let v = f.invoke_ok(test_env_anomaly("dry-1")).await.unwrap();
    let actions = v["records"][0]["actions"].as_array().cloned().unwrap();
    assert_eq!(actions.len(), 2, "{v}");
    for a in &actions {
        assert_eq!(a["dry_run"], true, "{v}");
        assert!(
            a["sentence"]
                .as_str()
                .is_some_and(|s| s.starts_with("Would ask for approval to ")),
            "{v}"
        );
    }
    let counts = platform::ledger_counts(&stack.clients).await.unwrap();
    assert_eq!(counts.get("approval"), None, "{counts:?}");
    assert_eq!(counts.get("contained"), None, "{counts:?}");
    let alerts = platform::drain(&stack.clients, &stack.platform.alerts_queue)
        .await
        .unwrap();
    assert_eq!(alerts.len(), 1, "the anomaly's alert only: {alerts:?}");
    assert!(alerts[0]["approval_id"].is_null(), "{alerts:?}");
    assert_eq!(mutations(&stack), (0, 0));
    assert_eq!(group(&stack).await, UNTOUCHED);
    assert_eq!(db_status(&stack).await, "available");
}

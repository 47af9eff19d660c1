//! Issue #19 end to end, the owner's side: the real scale-on-alarm binary against moto. A P2 RDS
//! class change outside the change window asks a person (one pending request, one alert carrying
//! its id, no mutation); approved with `decide` (as alert-router's POST and `nbaops approve` do)
//! and delivered as `approved_input`, the class changes once (moto sees one ModifyDBInstance), and
//! a second delivery does nothing. Denied or expired requests change nothing. A group resize
//! approved after the group was resized by someone else does not act and says why.

use nbaops_shared::adapters::DynamoLedger;
use nbaops_shared::guard::{
    approved_input, decide, expire_due, ApprovalDecision, ApprovalRequest, ApprovalState, Decided,
    Verdict,
};
use nbaops_tests::approval;
use nbaops_tests::demo::Stack;
use nbaops_tests::function::FunctionUnderTest;
use nbaops_tests::platform::{self, DB, LEDGER, WEB};
use nbaops_tests::{clock, function_binary, workspace_root};
use serde_json::Value;

const FN: &str = "scale-on-alarm";
const P2_DB_MEMORY: &str = r#"{"nbaops-dev-db-memory-low":{"target":"rds:nbaops-dev-db","on_alarm":"up","severity":"P2"}}"#;

fn fixture(path: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(workspace_root().join(path)).unwrap()).unwrap()
}

async fn start(stack: &Stack, extra: &[(&str, &str)]) -> FunctionUnderTest {
    approval::scale_on_alarm(stack, extra).await.unwrap()
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

/// The alarm as event `id` (its own state timestamp): one decision, one approval id.
fn db_alarm(id: &str, minute: u32) -> Value {
    let mut a = fixture("events/cloudwatch-alarm/eventbridge-rds-memory-alarm.json");
    a["id"] = Value::String(id.into());
    a["detail"]["state"]["timestamp"] =
        Value::String(format!("2026-11-25T20:{minute:02}:00.000+0000"));
    a
}

/// Invokes with the alarm and returns the approval id its decision asked for.
async fn ask(f: &FunctionUnderTest, alarm: Value) -> String {
    let v = f.invoke_ok(alarm).await.unwrap();
    let a = &v["records"][0]["actions"][0];
    assert_eq!(a["outcome"], "needs-approval", "{v}");
    assert_eq!(a["stopped_by"], "change_window", "{v}");
    let id = a["approval_id"].as_str().unwrap_or_default().to_string();
    assert!(
        a["sentence"].as_str().is_some_and(
            |s| s.starts_with("Asked for approval to ") && s.contains(&format!("(id {id})"))
        ),
        "{v}"
    );
    id
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

fn modify_calls(stack: &Stack) -> usize {
    stack.moto.count_calls(FN, "rds", "ModifyDBInstance")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p2_class_change_outside_the_window_is_asked_and_done_once_when_approved() {
    let stack = Stack::start(false).await.unwrap();
    let l = ledger(&stack);
    let f = start(&stack, &[("NBAOPS_SCALE__ALARM_MAP", P2_DB_MEMORY)]).await;

    // Asked: a pending request with the exact plan, one alert carrying its id, no mutation.
    let denied = ask(&f, db_alarm("evt-deny", 1)).await;
    let req = ApprovalRequest::load(&l, "dev", &denied)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(req.state, ApprovalState::Pending);
    assert_eq!(req.action.action, "rds.modify_class");
    assert_eq!(req.action.after["class"], "db.t3.small");
    assert_eq!(req.action.after["apply_immediately"], true);
    let alerts = platform::drain(&stack.clients, &stack.platform.alerts_queue)
        .await
        .unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["approval_id"], denied.as_str(), "{alerts:?}");
    assert_eq!(alerts[0]["severity"], "P2");
    assert_eq!(modify_calls(&stack), 0);
    // `nbaops status` lists it, as stored.
    let s = status(&stack).await;
    assert_eq!(s["approvals"].as_array().map(Vec::len), Some(1), "{s}");
    let p = &s["approvals"][0];
    assert_eq!(
        (&p["id"], &p["action"], &p["resource"]),
        (
            &Value::from(denied.as_str()),
            &Value::from("rds.modify_class"),
            &Value::from("rds:nbaops-dev-db")
        ),
        "{s}"
    );
    assert_eq!(p["sentence"], Value::from(req.sentence.as_str()), "{s}");
    assert_eq!(
        p["expires_at"],
        Value::from(req.expires_at.to_rfc3339()),
        "{s}"
    );
    assert_eq!(p["approvers"], serde_json::json!([]), "{s}");

    // Denied: delivering the task anyway does nothing.
    let d = decide(&l, "dev", &denied, Verdict::Deny, who("alice"))
        .await
        .unwrap();
    assert!(matches!(d, ApprovalDecision::Decided(_)), "{d:?}");
    let v = f.invoke_ok(approved_input(&req)).await.unwrap();
    assert!(
        v["records"][0]["actions"]
            .as_array()
            .is_some_and(|a| a.is_empty()),
        "{v}"
    );
    assert!(
        v["records"][0]["notes"][0]
            .as_str()
            .is_some_and(|n| n.contains("denied by alice")),
        "{v}"
    );
    assert_eq!(modify_calls(&stack), 0);

    // Expired (on_timeout deny): nothing either.
    let expiring = ask(&f, db_alarm("evt-expire", 2)).await;
    let (moved, bad) = expire_due(&l, "dev", clock::now() + chrono::Duration::minutes(61))
        .await
        .unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(
        moved
            .iter()
            .map(|r| (r.id.clone(), r.state))
            .collect::<Vec<_>>(),
        vec![(expiring.clone(), ApprovalState::Expired)]
    );
    let v = f.invoke_ok(approved_input(&moved[0])).await.unwrap();
    assert!(
        v["records"][0]["actions"]
            .as_array()
            .is_some_and(|a| a.is_empty()),
        "{v}"
    );
    assert_eq!(modify_calls(&stack), 0);
    assert_eq!(
        platform::db_class(&stack.clients, DB).await.unwrap().0,
        "db.t3.micro"
    );

    // Approved: the class changes, once, however often the task is delivered.
    let approved = ask(&f, db_alarm("evt-approve", 3)).await;
    let d = decide(&l, "dev", &approved, Verdict::Approve, who("bob"))
        .await
        .unwrap();
    let ApprovalDecision::Decided(req) = d else {
        panic!("{d:?}")
    };
    let v = f.invoke_ok(approved_input(&req)).await.unwrap();
    let a = &v["records"][0]["actions"][0];
    assert_eq!(a["outcome"], "acted", "{v}");
    assert_eq!(a["approval_id"], approved.as_str(), "{v}");
    assert!(
        a["steps"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["step"] == "change_window"
                && s["note"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("approved by bob at")))),
        "{v}"
    );
    assert_eq!(modify_calls(&stack), 1);
    assert_eq!(
        platform::db_class(&stack.clients, DB).await.unwrap().0,
        "db.t3.small"
    );
    let used = ApprovalRequest::load(&l, "dev", &approved)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(used.state, ApprovalState::Used);
    assert_eq!(used.outcome.as_deref(), a["sentence"].as_str());
    let v = f.invoke_ok(approved_input(&req)).await.unwrap();
    assert!(
        v["records"][0]["actions"]
            .as_array()
            .is_some_and(|a| a.is_empty()),
        "{v}"
    );
    assert!(
        v["records"][0]["notes"][0]
            .as_str()
            .is_some_and(|n| n.contains("already used")),
        "{v}"
    );
    assert_eq!(modify_calls(&stack), 1, "one approval, one change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_resize_approved_after_the_group_was_resized_does_not_act_and_says_why() {
    let stack = Stack::start(false).await.unwrap();
    let l = ledger(&stack);
    let f = start(&stack, &[("NBAOPS_APPROVAL__ASG__SCALE_OUT", "always")]).await;
    let id = ask(
        &f,
        fixture("events/cloudwatch-alarm/eventbridge-single-metric-alarm.json"),
    )
    .await;
    assert_eq!(
        platform::group_view(&stack.clients, WEB)
            .await
            .unwrap()
            .desired,
        2
    );
    // Someone resizes the group by hand meanwhile.
    stack
        .clients
        .asg
        .set_desired_capacity()
        .auto_scaling_group_name(WEB)
        .desired_capacity(4)
        .send()
        .await
        .unwrap();
    platform::drain(&stack.clients, &stack.platform.alerts_queue)
        .await
        .unwrap();
    let d = decide(&l, "dev", &id, Verdict::Approve, who("alice"))
        .await
        .unwrap();
    let ApprovalDecision::Decided(req) = d else {
        panic!("{d:?}")
    };
    let v = f.invoke_ok(approved_input(&req)).await.unwrap();
    let a = &v["records"][0]["actions"][0];
    assert_eq!(a["outcome"], "skipped", "{v}");
    let sentence = a["sentence"].as_str().unwrap_or_default();
    assert!(
        sentence.contains("no longer matches live state: desired was 2, now 4"),
        "{v}"
    );
    assert_eq!(
        stack
            .moto
            .count_calls(FN, "autoscaling", "SetDesiredCapacity"),
        0
    );
    assert_eq!(
        platform::group_view(&stack.clients, WEB)
            .await
            .unwrap()
            .desired,
        4
    );
    let used = ApprovalRequest::load(&l, "dev", &id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(used.state, ApprovalState::Used);
    assert!(
        used.outcome
            .as_deref()
            .is_some_and(|o| o.contains("desired was 2, now 4")),
        "{used:?}"
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

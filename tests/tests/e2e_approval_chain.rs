//! Issue #19's proof in one run, with the real binaries on one moto: a P2 RDS memory alarm outside
//! the change window makes scale-on-alarm ask (no mutation, one pending request, one alert with its
//! id on the alerts topic); that very alert, handed to alert-router as its SNS subscription would,
//! puts the Approve link in Slack; POSTing the link to the acknowledgement URL approves the request
//! and creates the one schedule that carries the approved input to scale-on-alarm; delivering that
//! input (what EventBridge Scheduler does — moto never fires schedules, docs/local-stack.md)
//! changes the class once; the link and the input replayed change nothing more.

use nbaops_shared::adapters::DynamoLedger;
use nbaops_shared::guard::{approved_input, ApprovalRequest, ApprovalState};
use nbaops_tests::approval::{self, Router, ROLE, SOURCE_IP, TARGET};
use nbaops_tests::demo::Stack;
use nbaops_tests::platform::{self, DB, LEDGER};
use nbaops_tests::workspace_root;
use serde_json::{json, Value};

const FN: &str = "scale-on-alarm";
const P2_DB_MEMORY: &str = r#"{"nbaops-dev-db-memory-low":{"target":"rds:nbaops-dev-db","on_alarm":"up","severity":"P2"}}"#;

fn modify_calls(stack: &Stack) -> usize {
    stack.moto.count_calls(FN, "rds", "ModifyDBInstance")
}

async fn stored(stack: &Stack, id: &str) -> ApprovalRequest {
    let l = DynamoLedger {
        client: stack.clients.ddb.clone(),
        table: LEDGER.into(),
    };
    ApprovalRequest::load(&l, "dev", id).await.unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p2_alarm_is_asked_linked_approved_scheduled_and_done_once() {
    let stack = Stack::start(false).await.unwrap();
    let router = Router::start(&stack).await.unwrap();
    let f = approval::scale_on_alarm(
        &stack,
        &[
            ("NBAOPS_SCALE__ALARM_MAP", P2_DB_MEMORY),
            ("NBAOPS_APPROVAL__APPROVERS", "alice"),
        ],
    )
    .await
    .unwrap();

    // 1. The alarm: asked, not done.
    let alarm: Value = serde_json::from_str(
        &std::fs::read_to_string(
            workspace_root().join("events/cloudwatch-alarm/eventbridge-rds-memory-alarm.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let v = f.invoke_ok(alarm).await.unwrap();
    let a = &v["records"][0]["actions"][0];
    assert_eq!(
        (&a["outcome"], &a["stopped_by"]),
        (&json!("needs-approval"), &json!("change_window")),
        "{v}"
    );
    let id = a["approval_id"].as_str().unwrap().to_string();
    assert_eq!(modify_calls(&stack), 0);
    let req = stored(&stack, &id).await;
    assert_eq!(req.state, ApprovalState::Pending);
    assert_eq!(req.approvers, ["alice"]);
    let alerts = platform::drain(&stack.clients, &stack.platform.alerts_queue)
        .await
        .unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["approval_id"], id.as_str(), "{alerts:?}");
    assert_eq!(alerts[0]["severity"], "P2", "{alerts:?}");

    // 2. That alert, delivered to alert-router: Slack carries the Approve link.
    router
        .invoke(approval::sns_record(&stack, &alerts[0], "chain").unwrap())
        .await
        .unwrap();
    let links = router.slack_links();
    let labels: Vec<&str> = links.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(labels, ["Approve as alice", "Deny as alice"], "{links:?}");
    let approve = alert_router::link::query_of(&links[0].1);
    assert_eq!(
        (approve["approval"].as_str(), approve["verdict"].as_str()),
        (id.as_str(), "approve")
    );

    // 3. POST approve: approved by alice from the source address, one schedule for the owner.
    let (status, body) = router.http("POST", &approve).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let approved = stored(&stack, &id).await;
    assert_eq!(approved.state, ApprovalState::Approved);
    let d = approved.decided.clone().unwrap();
    assert_eq!((d.by.as_str(), d.from.as_str()), ("alice", SOURCE_IP));
    let s = approval::schedules(&stack).await.unwrap();
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(s[0].name, format!("approval-{id}"));
    assert_eq!(
        (s[0].target_arn.as_str(), s[0].role_arn.as_str()),
        (TARGET, ROLE)
    );
    assert_eq!(s[0].input, approved_input(&approved));
    assert_eq!(modify_calls(&stack), 0, "approving alone changes nothing");

    // 4. The schedule fires (its input delivered to scale-on-alarm): the class changes, once.
    let input = s[0].input.clone();
    let v = f.invoke_ok(input.clone()).await.unwrap();
    let a = &v["records"][0]["actions"][0];
    assert_eq!(a["outcome"], "acted", "{v}");
    assert_eq!(a["approval_id"], id.as_str(), "{v}");
    assert_eq!(modify_calls(&stack), 1);
    assert_eq!(
        platform::db_class(&stack.clients, DB).await.unwrap().0,
        "db.t3.small"
    );
    assert_eq!(stored(&stack, &id).await.state, ApprovalState::Used);
    let audit = approval::audit(&stack, "rds:nbaops-dev-db").await.unwrap();
    let answer = format!("alice from {SOURCE_IP} answered approve to approval {id}");
    assert!(
        audit.iter().any(|r| r["approval_id"] == id.as_str()
            && r["sentence"]
                .as_str()
                .is_some_and(|s| s.starts_with(&answer))),
        "{answer} not in {audit:#?}"
    );
    assert!(
        audit.iter().any(|r| r["function"] == FN
            && r["outcome"] == "acted"
            && r["approval_id"] == id.as_str()
            && r["steps"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["step"] == "change_window"
                    && s["note"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("approved by alice at"))))),
        "no acted record naming alice in {audit:#?}"
    );

    // 5. The link again: refused, still one schedule; the input again: still one change.
    let (status, body) = router.http("POST", &approve).await.unwrap();
    assert_eq!(status, 403, "{body}");
    assert_eq!(approval::schedules(&stack).await.unwrap().len(), 1);
    let v = f.invoke_ok(input).await.unwrap();
    assert!(
        v["records"][0]["actions"]
            .as_array()
            .is_some_and(|a| a.is_empty()),
        "{v}"
    );
    assert_eq!(modify_calls(&stack), 1, "one approval, one change");
    assert_eq!(stored(&stack, &id).await.state, ApprovalState::Used);
}

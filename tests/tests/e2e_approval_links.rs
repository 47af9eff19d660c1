//! Approval links end to end (issue #19): the real alert-router binary over the Lambda Runtime
//! API against moto (ledger, SSM secrets, the email topic with an SQS tap, EventBridge Scheduler)
//! and a Slack stand-in; the real `nbaops` binary for `nbaops approve`. Approval requests are
//! created directly in the ledger (`ApprovalRequest::create`), as the guard creates them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use nbaops_shared::adapters::DynamoLedger;
use nbaops_shared::guard::approval::{
    approval_id, approved_input, ApprovalRequest, ApprovalState, OnTimeout, Verdict,
};
use nbaops_shared::guard::ProposedAction;
use nbaops_tests::approval::{self, Router, ACK_BASE, ROLE, SIGNING_KEY, SOURCE_IP, TARGET};
use nbaops_tests::clock;
use nbaops_tests::demo::Stack;
use nbaops_tests::platform::{self, FollowUp};
use nbaops_tests::{function_binary, workspace_root};
use serde_json::{json, Value};

struct World {
    stack: Stack,
    router: Router,
    env: Vec<(String, String)>,
}

async fn world() -> World {
    let stack = Stack::start(false).await.unwrap();
    let router = Router::start(&stack).await.unwrap();
    let env = router.env.clone();
    World { stack, router, env }
}

fn ledger(w: &World) -> DynamoLedger {
    DynamoLedger {
        client: w.stack.clients.ddb.clone(),
        table: platform::LEDGER.into(),
    }
}

/// A pending request of scale-on-alarm to change the database's class, as the guard stores it.
async fn request(w: &World, event: &str, approvers: &[&str]) -> ApprovalRequest {
    let action: ProposedAction = serde_json::from_value(json!({
        "action": "rds.modify_class", "resource": "rds:nbaops-dev-db", "reason": "memory",
        "severity": "P1", "disruptive": true, "bounds": null, "cooldown_key": "class",
        "cooldown_seconds": 3600, "before": {"class": "db.t3.micro"},
        "after": {"class": "db.t3.small"},
        "explanation": nbaops_shared::guard::Explanation::default(),
    }))
    .unwrap();
    let now = clock::now();
    let r = ApprovalRequest {
        id: approval_id(event, &action.action, &action.resource),
        env: "dev".into(),
        function: "scale-on-alarm".into(),
        event_id: event.into(),
        action,
        sentence: format!("Would change nbaops-dev-db db.t3.micro → db.t3.small ({event})"),
        requested_at: now,
        expires_at: now + chrono::Duration::hours(1),
        on_timeout: OnTimeout::Deny,
        approvers: approvers.iter().map(|a| a.to_string()).collect(),
        state: ApprovalState::Pending,
        decided: None,
        outcome: None,
        origin: None,
    };
    assert!(r.create(&ledger(w)).await.unwrap());
    r
}

async fn stored(w: &World, id: &str) -> ApprovalRequest {
    ApprovalRequest::load(&ledger(w), "dev", id)
        .await
        .unwrap()
        .unwrap()
}

/// The alert asking for `r` (as the guard raises it) on the alerts topic's SNS record.
fn alert_for(r: &ApprovalRequest) -> Value {
    let mut a: Value = serde_json::from_str(
        &std::fs::read_to_string(workspace_root().join("events/alerts/sns/p1-db-down.json"))
            .unwrap(),
    )
    .unwrap();
    let mut msg: Value =
        serde_json::from_str(a["Records"][0]["Sns"]["Message"].as_str().unwrap()).unwrap();
    msg["dedup_key"] = json!(format!("approval#{}", r.id));
    msg["approval_id"] = json!(r.id);
    msg["at"] = json!(clock::now());
    a["Records"][0]["Sns"]["Message"] = json!(msg.to_string());
    a["Records"][0]["Sns"]["MessageId"] = json!(format!("approval-{}", r.id));
    a
}

async fn ok(w: &World, payload: Value) -> Value {
    w.router.invoke(payload).await.unwrap()
}

async fn http(w: &World, method: &str, query: &BTreeMap<String, String>) -> (u64, String) {
    w.router.http(method, query).await.unwrap()
}

fn slack_links(w: &World) -> Vec<(String, String)> {
    w.router.slack_links()
}

async fn emails(w: &World) -> Vec<String> {
    w.router.emails(&w.stack).await.unwrap()
}

async fn schedules(w: &World) -> Vec<FollowUp> {
    approval::schedules(&w.stack).await.unwrap()
}

async fn audit(w: &World) -> Vec<Value> {
    approval::audit(&w.stack, "rds:nbaops-dev-db")
        .await
        .unwrap()
}

fn q(url: &str) -> BTreeMap<String, String> {
    alert_router::link::query_of(url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_deny_refuse_expire_and_approve_from_the_cli() {
    let w = world().await;

    // 1. The alert asking for approval: Slack and email carry a pair of links per approver.
    let r = request(&w, "ev-approve", &["alice", "bob"]).await;
    ok(&w, alert_for(&r)).await;
    let links = slack_links(&w);
    let labels: Vec<&str> = links.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(
        labels,
        [
            "Approve as alice",
            "Deny as alice",
            "Approve as bob",
            "Deny as bob"
        ]
    );
    let mail = emails(&w).await.join("\n");
    assert!(
        mail.contains("Approve as alice: https://ack-e2e.lambda-url.us-east-1.on.aws/?approval=")
            && mail.contains(&r.sentence),
        "{mail}"
    );
    let approve = q(&links[0].1);
    assert_eq!(approve["as"], "alice");

    // 2. GET shows what will happen and changes nothing.
    let (status, page) = http(&w, "GET", &approve).await;
    assert_eq!(status, 200);
    assert!(
        page.contains(&r.sentence) && page.contains("db.t3.small") && page.contains("pending"),
        "{page}"
    );

    // 3. Forged, wrong-key and expired links: 403, nothing changed.
    let mut forged = approve.clone();
    forged.insert("as".into(), "mallory".into());
    let link_for = |key: &[u8], kid: &str, exp: DateTime<Utc>| {
        let signing = alert_router::link::SigningKey {
            kid: kid.into(),
            key: key.to_vec(),
        };
        let a = alert_router::link::ApprovalLink {
            verdict: Verdict::Approve,
            id: r.id.clone(),
            approver: Some("alice".into()),
        };
        q(&alert_router::link::approval_link(ACK_BASE, &signing, &a, exp).unwrap())
    };
    let wrong_key = link_for(b"not-the-signing-key-000000", "k1", r.expires_at);
    let unknown_kid = link_for(SIGNING_KEY.as_bytes(), "k9", r.expires_at);
    let expired = link_for(
        SIGNING_KEY.as_bytes(),
        "k1",
        clock::now() - chrono::Duration::minutes(1),
    );
    for (what, link) in [
        ("forged", &forged),
        ("wrong key", &wrong_key),
        ("unknown kid", &unknown_kid),
        ("expired", &expired),
    ] {
        let (status, body) = http(&w, "POST", link).await;
        assert_eq!(status, 403, "{what}: {body}");
    }
    assert_eq!(stored(&w, &r.id).await.state, ApprovalState::Pending);
    assert!(schedules(&w).await.is_empty());

    // 4. POST approve: approved by alice from the source address, one schedule for the owner.
    let (status, body) = http(&w, "POST", &approve).await;
    assert_eq!(status, 200, "{body}");
    let approved = stored(&w, &r.id).await;
    assert_eq!(approved.state, ApprovalState::Approved);
    let d = approved.decided.clone().unwrap();
    assert_eq!((d.by.as_str(), d.from.as_str()), ("alice", SOURCE_IP));
    let s = schedules(&w).await;
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(s[0].name, format!("approval-{}", r.id));
    assert_eq!(
        (s[0].target_arn.as_str(), s[0].role_arn.as_str()),
        (TARGET, ROLE)
    );
    assert_eq!(s[0].input, approved_input(&approved));
    assert_eq!(s[0].after_completion.as_deref(), Some("DELETE"));

    // 5. The same POST again (re-used), and bob's deny: 403, no change, no second schedule.
    let (status, body) = http(&w, "POST", &approve).await;
    assert_eq!(status, 403);
    assert!(body.contains("already approved by alice"), "{body}");
    assert_eq!(http(&w, "POST", &q(&links[3].1)).await.0, 403);
    assert_eq!(stored(&w, &r.id).await, approved);
    assert_eq!(schedules(&w).await.len(), 1);

    // 6. Deny on another request: denied, no schedule.
    let r2 = request(&w, "ev-deny", &["alice"]).await;
    ok(&w, alert_for(&r2)).await;
    let deny = q(&slack_links(&w)[1].1);
    assert_eq!(deny["verdict"], "deny");
    let (status, body) = http(&w, "POST", &deny).await;
    assert_eq!((status, body.as_str()), (200, "denied: nothing is done"));
    assert_eq!(stored(&w, &r2.id).await.state, ApprovalState::Denied);
    assert_eq!(schedules(&w).await.len(), 1);

    // 7. Expiry through the sweep: expired, one notice, however many sweeps.
    let r3 = request(&w, "ev-expire", &["alice"]).await;
    let tick = |minutes: i64| json!({"nbaops": {"task": "alert-escalation-sweep", "at": (clock::now() + chrono::Duration::minutes(minutes)).to_rfc3339()}});
    ok(&w, tick(61)).await;
    ok(&w, tick(66)).await;
    assert_eq!(stored(&w, &r3.id).await.state, ApprovalState::Expired);
    let notice = format!("approval {} expired: nothing was done", r3.id);
    let notices = w
        .router
        .slack
        .lock()
        .unwrap()
        .iter()
        .filter(|b| b["text"].as_str().unwrap_or("").contains(&notice))
        .count();
    assert_eq!(notices, 1);
    assert_eq!(schedules(&w).await.len(), 1);

    // 8. `nbaops approve` on a fourth request: approved from "cli", scheduled.
    let r4 = request(&w, "ev-cli", &["carol"]).await;
    let run = |args: Vec<String>| {
        let env = w.env.clone();
        async move {
            let mut cmd = tokio::process::Command::new(function_binary("nbaops").unwrap());
            cmd.env_clear();
            for key in ["PATH", "HOME"] {
                if let Some(v) = std::env::var_os(key) {
                    cmd.env(key, v);
                }
            }
            cmd.envs(env)
                .envs([clock::env()])
                .env("AWS_SDK_UA_APP_ID", "nbaops")
                .args(args)
                .current_dir(workspace_root());
            cmd.output().await.unwrap()
        }
    };
    let args = |who: &str| {
        ["--json", "approve", &r4.id, "--as", who]
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    };
    let out = run(args("mallory")).await;
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(stored(&w, &r4.id).await.state, ApprovalState::Pending);
    let out = run(args("carol")).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["decided"].as_bool(), v["state"].as_str()),
        (Some(true), Some("approved"))
    );
    let by_cli = stored(&w, &r4.id).await;
    let d = by_cli.decided.clone().unwrap();
    assert_eq!((d.by.as_str(), d.from.as_str()), ("carol", "cli"));
    let s = schedules(&w).await;
    assert_eq!(s.len(), 2, "{s:?}");
    let cli_schedule = s
        .iter()
        .find(|x| x.name == format!("approval-{}", r4.id))
        .unwrap();
    assert_eq!(cli_schedule.input, approved_input(&by_cli));

    // Every answer audited with who, from where and what it came to.
    let sentences: Vec<String> = audit(&w)
        .await
        .iter()
        .map(|a| a["sentence"].as_str().unwrap_or("").to_string())
        .collect();
    for expected in [
        format!(
            "alice from {SOURCE_IP} answered approve to approval {}",
            r.id
        ),
        format!("alice from {SOURCE_IP} answered deny to approval {}", r2.id),
        format!("timeout from timeout answered deny to approval {}", r3.id),
        format!("carol from cli answered approve to approval {}", r4.id),
        format!("mallory from cli answered approve to approval {}", r4.id),
        format!(
            "mallory from {SOURCE_IP} answered approve to approval {}",
            r.id
        ),
    ] {
        assert!(
            sentences.iter().any(|s| s.starts_with(&expected)),
            "{expected} not in {sentences:#?}"
        );
    }
}

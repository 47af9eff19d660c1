//! Approval links end to end (issue #19): the real alert-router binary over the Lambda Runtime
//! API against moto (ledger, SSM secrets, the email topic with an SQS tap, EventBridge Scheduler)
//! and a Slack stand-in; the real `nbaops` binary for `nbaops approve`. Approval requests are
//! created directly in the ledger (`ApprovalRequest::create`), as the guard creates them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use nbaops_shared::adapters::DynamoLedger;
use nbaops_shared::guard::approval::{
    approval_id, approved_input, ApprovalRequest, ApprovalState, OnTimeout, Verdict,
};
use nbaops_shared::guard::ProposedAction;
use nbaops_tests::clock;
use nbaops_tests::demo::Stack;
use nbaops_tests::function::FunctionUnderTest;
use nbaops_tests::http::{read_body, read_head, write_response};
use nbaops_tests::platform::{self, FollowUp};
use nbaops_tests::runtime_api::Outcome;
use nbaops_tests::{function_binary, workspace_root};
use serde_json::{json, Value};
use tokio::io::BufReader;
use tokio::net::TcpListener;

const FN: &str = "alert-router";
const SIGNING_KEY: &str = "e2e-link-signing-key-0123456789abcdef";
const ACK_BASE: &str = "https://ack-e2e.lambda-url.us-east-1.on.aws/";
const GROUP: &str = "nbaops-dev-approvals";
const ROLE: &str = "arn:aws:iam::123456789012:role/nbaops-dev-approvals";
const TARGET: &str =
    "arn:aws:lambda:us-east-1:123456789012:function:nbaops-dev-scale-on-alarm:live";
const SOURCE_IP: &str = "198.51.100.7";

/// The Slack stand-in: records every body, answers 200.
async fn slack() -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let me = got.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let me = me.clone();
            tokio::spawn(async move {
                let (rd, mut wr) = stream.into_split();
                let mut rd = BufReader::new(rd);
                while let Ok(Some(head)) = read_head(&mut rd).await {
                    let Ok(body) = read_body(&mut rd, &head, false).await else {
                        return;
                    };
                    me.lock()
                        .unwrap()
                        .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                    if write_response(&mut wr, 200, &[], b"ok", false)
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (
        format!("http://127.0.0.1:{port}/services/T0E2E/B0E2E/approvals"),
        got,
    )
}

struct World {
    stack: Stack,
    f: FunctionUnderTest,
    slack: Arc<Mutex<Vec<Value>>>,
    email_tap: String,
    env: Vec<(String, String)>,
}

fn approval_vars(topic: &str) -> Vec<(String, String)> {
    [
        ("NBAOPS_ALERTS__EMAIL_TOPIC_ARN", topic),
        ("NBAOPS_ALERTS__ACK__BASE_URL", ACK_BASE),
        ("NBAOPS_ALERTS__APPROVAL__GROUP", GROUP),
        ("NBAOPS_ALERTS__APPROVAL__ROLE_ARN", ROLE),
        (
            "NBAOPS_ALERTS__APPROVAL__TARGETS",
            &format!("scale-on-alarm={TARGET}"),
        ),
        ("NBAOPS_ALERTS__RETRY__BASE_MS", "20"),
        ("NBAOPS_ALERTS__RETRY__MAX_MS", "50"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

async fn world() -> World {
    let stack = Stack::start(false).await.unwrap();
    let c = &stack.clients;
    let (slack_url, slack) = slack().await;
    for (name, value) in [
        ("slack_webhook_url", slack_url.as_str()),
        ("link_signing_key", SIGNING_KEY),
    ] {
        stack
            .put_secret(&format!("/nbaops/dev/secrets/alerts/{name}"), value)
            .await
            .unwrap();
    }
    c.scheduler
        .create_schedule_group()
        .name(GROUP)
        .send()
        .await
        .unwrap();
    let topic = c
        .sns
        .create_topic()
        .name("nbaops-dev-email")
        .send()
        .await
        .unwrap()
        .topic_arn()
        .unwrap()
        .to_string();
    let tap = c
        .sqs
        .create_queue()
        .queue_name("nbaops-dev-email-tap")
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string();
    let tap_arn = c
        .sqs
        .get_queue_attributes()
        .queue_url(&tap)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes()
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    c.sns
        .subscribe()
        .topic_arn(&topic)
        .protocol("sqs")
        .endpoint(tap_arn)
        .attributes("RawMessageDelivery", "true")
        .send()
        .await
        .unwrap();
    let vars = approval_vars(&topic);
    let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let env = stack.function_env(&pairs);
    let f = FunctionUnderTest::start(&function_binary(FN).unwrap(), FN, &env, 1)
        .await
        .unwrap();
    World {
        stack,
        f,
        slack,
        email_tap: tap,
        env,
    }
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
    match w
        .f
        .invoke(payload, Duration::from_secs(30))
        .await
        .unwrap()
        .outcome
    {
        Outcome::Response(v) => v,
        Outcome::Error {
            error_type,
            message,
        } => panic!("{error_type}: {message}\n{}", w.f.logs()),
    }
}

fn url_request(method: &str, query: &BTreeMap<String, String>) -> Value {
    json!({
        "version": "2.0", "rawPath": "/", "rawQueryString": "",
        "headers": {"host": "ack-e2e.lambda-url.us-east-1.on.aws"},
        "queryStringParameters": query,
        "requestContext": {"http": {"method": method, "path": "/", "sourceIp": SOURCE_IP}},
        "isBase64Encoded": false
    })
}

async fn http(w: &World, method: &str, query: &BTreeMap<String, String>) -> (u64, String) {
    let v = ok(w, url_request(method, query)).await;
    (
        v["statusCode"].as_u64().unwrap(),
        v["body"].as_str().unwrap_or("").to_string(),
    )
}

/// The approval links (label, url) of the last Slack message.
fn slack_links(w: &World) -> Vec<(String, String)> {
    let all = w.slack.lock().unwrap().clone();
    let text = all.last().unwrap()["text"].as_str().unwrap().to_string();
    text.split('<')
        .skip(1)
        .filter_map(|p| p.split_once('|'))
        .filter(|(url, _)| url.contains("approval="))
        .map(|(url, rest)| (rest.split('>').next().unwrap().to_string(), url.to_string()))
        .collect()
}

async fn emails(w: &World) -> Vec<String> {
    let got = w
        .stack
        .clients
        .sqs
        .receive_message()
        .queue_url(&w.email_tap)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    got.messages()
        .iter()
        .filter_map(|m| m.body().map(String::from))
        .collect()
}

async fn schedules(w: &World) -> Vec<FollowUp> {
    platform::follow_ups(&w.stack.clients, GROUP).await.unwrap()
}

/// The audit records of the database, as stored.
async fn audit(w: &World) -> Vec<Value> {
    let out = w
        .stack
        .clients
        .ddb
        .query()
        .table_name(platform::LEDGER)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", AttributeValue::S("audit#rds:nbaops-dev-db".into()))
        .send()
        .await
        .unwrap();
    out.items()
        .iter()
        .filter_map(|i| i.get("data").and_then(|d| d.as_s().ok()))
        .filter_map(|s| serde_json::from_str(s).ok())
        .collect()
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

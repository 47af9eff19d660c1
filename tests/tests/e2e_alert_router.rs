//! alert-router end to end: the real binary over the Lambda Runtime API, against moto (ledger,
//! SSM secrets, the email topic with an SQS tap, the dead-letter queue) and two HTTP receivers
//! started here standing in for Slack and PagerDuty, which record what they get and can be told
//! to fail.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nbaops_tests::demo::Stack;
use nbaops_tests::function::FunctionUnderTest;
use nbaops_tests::http::{read_body, read_head, write_response};
use nbaops_tests::platform::{self, Clients};
use nbaops_tests::runtime_api::Outcome;
use nbaops_tests::{function_binary, workspace_root};
use serde_json::{json, Value};
use tokio::io::BufReader;
use tokio::net::TcpListener;

const FN: &str = "alert-router";
const SIGNING_KEY: &str = "e2e-link-signing-key-0123456789abcdef";
const PD_KEY: &str = "pd-routing-key-e2e-0000";
const ACK_BASE: &str = "https://ack-e2e.lambda-url.us-east-1.on.aws/";

/// A local HTTP endpoint that records every request body and answers 2xx, or `fail_status` for
/// the next `fail_next` requests.
#[derive(Clone)]
struct Receiver {
    port: u16,
    requests: Arc<Mutex<Vec<(String, Value)>>>,
    fail_next: Arc<AtomicUsize>,
    fail_status: Arc<AtomicUsize>,
}

impl Receiver {
    async fn start(ok_status: u16) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let r = Receiver {
            port: listener.local_addr().unwrap().port(),
            requests: Arc::default(),
            fail_next: Arc::default(),
            fail_status: Arc::new(AtomicUsize::new(500)),
        };
        let me = r.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let me = me.clone();
                tokio::spawn(async move {
                    let (rd, mut wr) = stream.into_split();
                    let mut rd = BufReader::new(rd);
                    // Keep-alive: the client pools connections.
                    while let Ok(Some(head)) = read_head(&mut rd).await {
                        let Ok(body) = read_body(&mut rd, &head, false).await else {
                            return;
                        };
                        let path = head
                            .start_line
                            .split_whitespace()
                            .nth(1)
                            .unwrap_or("")
                            .to_string();
                        let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        me.requests.lock().unwrap().push((path, json));
                        let failing = me
                            .fail_next
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_ok();
                        let status = if failing {
                            me.fail_status.load(Ordering::SeqCst) as u16
                        } else {
                            ok_status
                        };
                        let reply = if status < 300 {
                            r#"{"status":"success"}"#
                        } else {
                            "failure"
                        };
                        if write_response(&mut wr, status, &[], reply.as_bytes(), false)
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        r
    }

    fn fail(&self, status: u16, times: usize) {
        self.fail_status.store(status as usize, Ordering::SeqCst);
        self.fail_next.store(times, Ordering::SeqCst);
    }

    fn bodies(&self) -> Vec<Value> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| b.clone())
            .collect()
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

struct World {
    stack: Stack,
    f: FunctionUnderTest,
    slack: Receiver,
    pagerduty: Receiver,
    slack_secret_url: String,
    email_tap: String,
    dlq: String,
}

async fn queue(c: &Clients, name: &str) -> (String, String) {
    let url = c
        .sqs
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string();
    let attrs = c
        .sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap();
    let arn =
        attrs.attributes().unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn].clone();
    (url, arn)
}

async fn secure(c: &Clients, name: &str, value: &str) {
    c.ssm
        .put_parameter()
        .name(format!("/nbaops/dev/secrets/alerts/{name}"))
        .value(value)
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .overwrite(true)
        .send()
        .await
        .unwrap();
}

async fn world() -> World {
    world_with(&[]).await
}

/// The router's world with more environment variables for the function.
async fn world_with(extra: &[(&str, &str)]) -> World {
    let stack = Stack::start(false).await.unwrap();
    let c = &stack.clients;
    let slack = Receiver::start(200).await;
    let pagerduty = Receiver::start(202).await;
    // The webhook URL is the secret: its path must never reach a log line.
    let slack_secret_url = slack.url("/services/T0E2E/B0E2E/hooksecretXYZ123");
    secure(c, "slack_webhook_url", &slack_secret_url).await;
    secure(c, "pagerduty_routing_key", PD_KEY).await;
    secure(c, "link_signing_key", SIGNING_KEY).await;
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
    let (email_tap, tap_arn) = queue(c, "nbaops-dev-email-tap").await;
    c.sns
        .subscribe()
        .topic_arn(&topic)
        .protocol("sqs")
        .endpoint(tap_arn)
        .attributes("RawMessageDelivery", "true")
        .send()
        .await
        .unwrap();
    let (dlq, _) = queue(c, "nbaops-dev-alerts-dlq").await;
    let pd_url = pagerduty.url("/v2/enqueue");
    let mut pairs: Vec<(&str, &str)> = vec![
        ("NBAOPS_ALERTS__EMAIL_TOPIC_ARN", &topic),
        ("NBAOPS_ALERTS__DEAD_LETTER_QUEUE_URL", &dlq),
        ("NBAOPS_ALERTS__PAGERDUTY__EVENTS_URL", &pd_url),
        ("NBAOPS_ALERTS__ACK__BASE_URL", ACK_BASE),
        ("NBAOPS_ALERTS__RETRY__BASE_MS", "20"),
        ("NBAOPS_ALERTS__RETRY__MAX_MS", "50"),
        // Alerts flow even with every action stopped.
        ("NBAOPS_GUARD__KILL_SWITCH", "true"),
        ("RUST_LOG", "debug"),
    ];
    pairs.extend_from_slice(extra);
    let env = stack.function_env(&pairs);
    let f = FunctionUnderTest::start(&function_binary(FN).unwrap(), FN, &env, 1)
        .await
        .unwrap();
    World {
        stack,
        f,
        slack,
        pagerduty,
        slack_secret_url,
        email_tap,
        dlq,
    }
}

fn alert(severity: &str, key: &str, status: &str) -> Value {
    let mut a: Value = serde_json::from_str(
        &std::fs::read_to_string(workspace_root().join("events/alerts/sns/p1-db-down.json"))
            .unwrap(),
    )
    .unwrap();
    let mut msg: Value =
        serde_json::from_str(a["Records"][0]["Sns"]["Message"].as_str().unwrap()).unwrap();
    msg["severity"] = json!(severity);
    msg["dedup_key"] = json!(key);
    // One resource per key: two keys are two incidents unless a test groups them.
    msg["resource"] = json!(format!("res:{key}"));
    msg["status"] = json!(status);
    msg["at"] = json!(nbaops_tests::clock::now());
    a["Records"][0]["Sns"]["Message"] = json!(msg.to_string());
    a["Records"][0]["Sns"]["MessageId"] = json!(format!(
        "{key}-{status}-{}",
        nbaops_tests::clock::now()
            .timestamp_nanos_opt()
            .unwrap_or(0)
    ));
    a
}

async fn invoke(w: &World, payload: Value) -> Outcome {
    w.f.invoke(payload, Duration::from_secs(30))
        .await
        .unwrap()
        .outcome
}

async fn ok(w: &World, payload: Value) -> Value {
    match invoke(w, payload).await {
        Outcome::Response(v) => v,
        Outcome::Error {
            error_type,
            message,
        } => panic!("{error_type}: {message}\n{}", w.f.logs()),
    }
}

fn ack_request(method: &str, query: &std::collections::BTreeMap<String, String>) -> Value {
    json!({
        "version": "2.0",
        "rawPath": "/",
        "rawQueryString": "",
        "headers": {"host": "ack-e2e.lambda-url.us-east-1.on.aws"},
        "queryStringParameters": query,
        "requestContext": {"http": {"method": method, "path": "/", "sourceIp": "198.51.100.7"}},
        "isBase64Encoded": false
    })
}

fn ack_link_in(slack_body: &Value) -> String {
    let text = slack_body["text"].as_str().unwrap();
    text.rsplit('<')
        .next()
        .unwrap()
        .split('|')
        .next()
        .unwrap()
        .to_string()
}

async fn incident(w: &World, key: &str) -> Value {
    let out = w
        .stack
        .clients
        .ddb
        .get_item()
        .table_name(platform::LEDGER)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("alert#{key}")),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S("state".into()),
        )
        .send()
        .await
        .unwrap();
    out.item()
        .and_then(|i| i.get("data"))
        .and_then(|d| d.as_s().ok())
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Value::Null)
}

fn status_of(v: &Value) -> String {
    v.get("status")
        .and_then(Value::as_str)
        .map(String::from)
        .unwrap_or_else(|| v.to_string())
}

fn assert_no_secret_in_logs(w: &World) {
    let logs = w.f.logs();
    // The function logged at debug level (configuration is read by path without the secrets,
    // which are read one by one and registered with the redaction): a leak would show here.
    assert!(
        logs.contains("SSM parameters read") && logs.contains("\"level\":\"DEBUG\""),
        "{logs}"
    );
    for secret in [
        w.slack_secret_url.as_str(),
        "hooksecretXYZ123",
        PD_KEY,
        SIGNING_KEY,
    ] {
        assert!(
            !logs.contains(secret),
            "secret {secret} in the logs:\n{logs}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_severity_dedups_and_resolve_closes_pagerduty() {
    let w = world().await;
    let c = &w.stack.clients;

    let v = ok(&w, alert("P1", "db-down#nbaops-dev-db", "firing")).await;
    assert!(
        v["records"][0]["notes"]
            .to_string()
            .contains("pagerduty: sent"),
        "{v}"
    );
    assert_eq!(w.slack.bodies().len(), 1);
    assert!(w.slack.bodies()[0]["text"]
        .as_str()
        .unwrap()
        .contains("[P1][dev]"));
    assert!(w.slack.bodies()[0]["text"]
        .as_str()
        .unwrap()
        .contains(ACK_BASE));
    let pd = w.pagerduty.bodies();
    assert_eq!(pd.len(), 1);
    assert_eq!(pd[0]["event_action"], "trigger");
    assert_eq!(pd[0]["routing_key"], PD_KEY);
    assert_eq!(pd[0]["dedup_key"], "db-down#nbaops-dev-db");
    assert_eq!(pd[0]["payload"]["severity"], "critical");
    let email = platform::drain(c, &w.email_tap).await.unwrap();
    assert_eq!(email.len(), 1, "{email:?}");
    assert!(
        email[0].to_string().contains("Acknowledge: https://"),
        "{email:?}"
    );

    // P3: Slack only.
    ok(&w, alert("P3", "bloat#orders", "firing")).await;
    assert_eq!(w.slack.bodies().len(), 2);
    assert_eq!(w.pagerduty.bodies().len(), 1);
    assert!(platform::drain(c, &w.email_tap).await.unwrap().is_empty());

    // The same key again within the window: counted, nothing sent.
    let v = ok(&w, alert("P1", "db-down#nbaops-dev-db", "firing")).await;
    assert!(
        v["records"][0]["notes"][0]
            .as_str()
            .unwrap()
            .contains("duplicate"),
        "{v}"
    );
    assert_eq!((w.slack.bodies().len(), w.pagerduty.bodies().len()), (2, 1));
    assert!(platform::drain(c, &w.email_tap).await.unwrap().is_empty());
    assert_eq!(incident(&w, "db-down#nbaops-dev-db").await["count"], 2);

    // Resolve closes it everywhere, PagerDuty included.
    ok(&w, alert("P1", "db-down#nbaops-dev-db", "resolved")).await;
    let pd = w.pagerduty.bodies();
    assert_eq!(pd.len(), 2);
    assert_eq!(pd[1]["event_action"], "resolve");
    assert_eq!(pd[1]["dedup_key"], "db-down#nbaops-dev-db");
    assert!(w.slack.bodies()[2]["text"]
        .as_str()
        .unwrap()
        .contains("RESOLVED"));
    assert_eq!(platform::drain(c, &w.email_tap).await.unwrap().len(), 1);
    let inc = incident(&w, "db-down#nbaops-dev-db").await;
    assert_eq!(status_of(&inc), "resolved", "{inc}");
    assert!(inc["resolved_at"].is_string(), "{inc}");

    // Neither an alert nor a CloudWatch alarm: not for me, nothing sent.
    let other: Value = serde_json::from_str(
        &std::fs::read_to_string(
            workspace_root().join("events/not-for-me/sns-unknown-message.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let v = ok(&w, other).await;
    assert!(v["records"][0]["not_for_me"].is_string(), "{v}");
    assert_eq!(w.slack.bodies().len(), 3);
    assert_no_secret_in_logs(&w);
}

/// A function parses only its own configuration sections. A scale section that is broken (an
/// alarm map that is not JSON, a misspelt key) is scale-on-alarm's problem: alert-router starts,
/// warns about the key it ignores and routes, while scale-on-alarm, given the same environment,
/// reports an init error naming the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_scale_section_stops_scale_on_alarm_and_not_the_router() {
    let bad_map = ("NBAOPS_SCALE__ALARM_MAP", "not json");
    let typo = ("NBAOPS_SCALE__ASG__CEILNG", "5");
    let w = world_with(&[bad_map, typo]).await;
    let v = ok(&w, alert("P3", "bloat#orders", "firing")).await;
    assert_eq!(w.slack.bodies().len(), 1, "{v}");
    let logs = w.f.logs();
    assert!(
        logs.contains("\"level\":\"WARN\"")
            && logs.contains("unknown setting NBAOPS_SCALE__ASG__CEILNG")
            && logs.contains("ignored, alert-router does not read the scale section"),
        "{logs}"
    );

    for (env, expected) in [
        (
            bad_map,
            "scale.alarm_map (from env NBAOPS_SCALE__ALARM_MAP): expected a JSON object",
        ),
        (typo, "unknown setting NBAOPS_SCALE__ASG__CEILNG"),
    ] {
        let err = FunctionUnderTest::start(
            &function_binary("scale-on-alarm").unwrap(),
            "scale-on-alarm",
            &w.stack.function_env(&[env]),
            1,
        )
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            err.contains("init failed") && err.contains(expected),
            "{expected}: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_links_are_verified_and_the_sweep_escalates_the_unacknowledged() {
    let w = world().await;
    ok(&w, alert("P1", "acked#web", "firing")).await;
    ok(&w, alert("P1", "ignored#worker", "firing")).await;
    let link = ack_link_in(&w.slack.bodies()[0]);
    let query = alert_router::link::query_of(&link);
    assert_eq!(query["key"], "acked#web");

    // Forged: another key under the same signature.
    let mut forged = query.clone();
    forged.insert("key".into(), "ignored#worker".into());
    let v = ok(&w, ack_request("POST", &forged)).await;
    assert_eq!(v["statusCode"], 403, "{v}");
    // Expired: genuinely signed, but in the past.
    let exp = nbaops_tests::clock::now().timestamp() - 60;
    let mut expired = query.clone();
    expired.insert("exp".into(), exp.to_string());
    expired.insert(
        "sig".into(),
        alert_router::link::sign(SIGNING_KEY.as_bytes(), &query["kid"], "acked#web", exp),
    );
    let v = ok(&w, ack_request("POST", &expired)).await;
    assert_eq!(v["statusCode"], 403, "{v}");
    assert!(v["body"].as_str().unwrap().contains("expired"), "{v}");
    assert_eq!(status_of(&incident(&w, "acked#web").await), "open");
    assert_eq!(status_of(&incident(&w, "ignored#worker").await), "open");

    // Valid: a GET only shows the button, the POST acknowledges (PagerDuty told too).
    let v = ok(&w, ack_request("GET", &query)).await;
    assert_eq!(v["statusCode"], 200, "{v}");
    assert_eq!(status_of(&incident(&w, "acked#web").await), "open");
    let v = ok(&w, ack_request("POST", &query)).await;
    assert_eq!(v["statusCode"], 200, "{v}");
    let inc = incident(&w, "acked#web").await;
    assert_eq!(status_of(&inc), "acknowledged", "{inc}");
    assert!(w
        .pagerduty
        .bodies()
        .iter()
        .any(|b| b["event_action"] == "acknowledge" && b["dedup_key"] == "acked#web"));

    // The sweep, its clock 16 minutes ahead: only the unacknowledged P1 escalates, once.
    let slack_before = w.slack.bodies().len();
    let tick = |minutes: i64| json!({"nbaops": {"task": "alert-escalation-sweep", "at": (nbaops_tests::clock::now() + chrono::Duration::minutes(minutes)).to_rfc3339()}});
    let v = ok(&w, tick(5)).await;
    assert!(
        v["records"][0]["notes"]
            .to_string()
            .contains("next escalation due"),
        "{v}"
    );
    assert_eq!(w.slack.bodies().len(), slack_before);
    let v = ok(&w, tick(16)).await;
    assert!(
        v["records"][0]["notes"]
            .to_string()
            .contains("escalated to level 1 (team-lead)"),
        "{v}"
    );
    let slack = w.slack.bodies();
    assert_eq!(slack.len(), slack_before + 1);
    let text = slack.last().unwrap()["text"].as_str().unwrap();
    assert!(
        text.contains("ESCALATED to level 1")
            && text.contains("ignored#worker")
            && text.contains("@team-lead"),
        "{text}"
    );
    ok(&w, tick(17)).await;
    assert_eq!(w.slack.bodies().len(), slack_before + 1, "once per level");
    let inc = incident(&w, "ignored#worker").await;
    assert_eq!(
        (status_of(&inc).as_str(), inc["escalation_level"].as_u64()),
        ("escalated", Some(1)),
        "{inc}"
    );
    assert_eq!(status_of(&incident(&w, "acked#web").await), "acknowledged");
    assert_no_secret_in_logs(&w);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_channels_are_retried_then_dead_lettered_with_an_error() {
    let w = world().await;
    let c = &w.stack.clients;
    // Two 500s, then Slack takes it: retried, delivered, no dead letter.
    w.slack.fail(500, 2);
    ok(&w, alert("P3", "flaky#slack", "firing")).await;
    assert_eq!(w.slack.bodies().len(), 3);
    assert!(platform::drain(c, &w.dlq).await.unwrap().is_empty());

    // P1 with Slack answering 429 and PagerDuty 500 throughout, email topic still there: email
    // counts as delivered, so no dead letter.
    w.slack.fail(429, 100);
    w.pagerduty.fail(500, 100);
    ok(&w, alert("P1", "partial#outage", "firing")).await;
    assert!(platform::drain(c, &w.dlq).await.unwrap().is_empty());
    assert_eq!(platform::drain(c, &w.email_tap).await.unwrap().len(), 1);

    // P3 goes to Slack only: every channel failed -> dead-letter queue + error outcome.
    let before = w.slack.bodies().len();
    match invoke(&w, alert("P3", "lost#never", "firing")).await {
        Outcome::Error { message, .. } => {
            assert!(message.contains("every channel failed"), "{message}")
        }
        Outcome::Response(v) => panic!("expected an error outcome, got {v}"),
    }
    assert_eq!(
        w.slack.bodies().len(),
        before + 3,
        "bounded: max_attempts = 3"
    );
    let dead = platform::drain(c, &w.dlq).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["schema"], "nbaops.alert-undelivered/v1");
    assert_eq!(dead[0]["message"]["dedup_key"], "lost#never");
    assert!(
        dead[0]["failures"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("429"),
        "{}",
        dead[0]
    );
    assert!(
        w.f.logs().contains("\"HandlerErrors\":1.0"),
        "the error metric rises"
    );
    assert_no_secret_in_logs(&w);
}

/// A CloudWatch alarm notification as SNS delivers it to the alerts topic's subscriber: the
/// fixture, with a fresh message id and the state change stamped on the test clock.
fn alarm_notification(fixture: &str) -> Value {
    let mut n: Value = serde_json::from_str(
        &std::fs::read_to_string(
            workspace_root()
                .join("events/cloudwatch-alarm")
                .join(fixture),
        )
        .unwrap(),
    )
    .unwrap();
    let now = nbaops_tests::clock::now();
    let sns = &mut n["Records"][0]["Sns"];
    let mut msg: Value = serde_json::from_str(sns["Message"].as_str().unwrap()).unwrap();
    msg["StateChangeTime"] = json!(now.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string());
    sns["Message"] = json!(msg.to_string());
    sns["Timestamp"] = json!(now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    sns["MessageId"] = json!(format!(
        "{fixture}-{}",
        now.timestamp_nanos_opt().unwrap_or(0)
    ));
    n
}

/// The notification's message published to the alerts topic in the emulator and taken off a
/// subscriber queue as SNS delivered it (envelope and all), then handed to alert-router the way
/// Lambda's SNS trigger does. (moto's CloudWatch never publishes alarm actions itself.)
async fn through_the_alerts_topic(w: &World, notification: &Value) -> Value {
    use aws_sdk_sqs::types::QueueAttributeName;
    let c = &w.stack.clients;
    let q = c
        .sqs
        .create_queue()
        .queue_name("alerts-envelope-tap")
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string();
    let attrs = c
        .sqs
        .get_queue_attributes()
        .queue_url(&q)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap();
    let qarn = attrs.attributes().unwrap()[&QueueAttributeName::QueueArn].clone();
    let topic = &w.stack.platform.alerts_topic;
    let sub = c
        .sns
        .subscribe()
        .topic_arn(topic)
        .protocol("sqs")
        .endpoint(&qarn)
        .send()
        .await
        .unwrap()
        .subscription_arn()
        .unwrap()
        .to_string();
    let sns = &notification["Records"][0]["Sns"];
    c.sns
        .publish()
        .topic_arn(topic)
        .message(sns["Message"].as_str().unwrap())
        .subject(sns["Subject"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    let got = platform::drain(c, &q).await.unwrap();
    c.sns
        .unsubscribe()
        .subscription_arn(&sub)
        .send()
        .await
        .unwrap();
    assert_eq!(got.len(), 1, "{got:?}");
    let env = &got[0];
    assert_eq!(env["Type"], "Notification", "{env}");
    assert_eq!(env["TopicArn"].as_str(), Some(topic.as_str()), "{env}");
    json!({"Records": [{
        "EventSource": "aws:sns",
        "EventVersion": "1.0",
        "EventSubscriptionArn": sub,
        "Sns": {
            "Type": env["Type"],
            "MessageId": env["MessageId"],
            "TopicArn": env["TopicArn"],
            "Subject": env["Subject"],
            "Message": env["Message"],
            "Timestamp": env["Timestamp"],
            "SignatureVersion": env["SignatureVersion"],
            "Signature": env["Signature"],
            "SigningCertUrl": env["SigningCertURL"],
            "UnsubscribeUrl": env["UnsubscribeURL"],
            "MessageAttributes": env.get("MessageAttributes").cloned().unwrap_or(json!({})),
        }
    }]})
}

fn slack_text(b: &Value) -> String {
    b["text"].as_str().unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_nbaops_function_errors_alarm_is_a_p2_incident_and_its_ok_resolves_it() {
    let w = world().await;
    let c = &w.stack.clients;
    let arn = "arn:aws:cloudwatch:us-east-1:123456789012:alarm:nbaops-dev-pg-health-errors";

    // ALARM, published to the alerts topic: a P2 to Slack and email (not PagerDuty), one
    // incident keyed by the alarm ARN.
    let delivered = through_the_alerts_topic(
        &w,
        &alarm_notification("sns-nbaops-function-errors-alarm.json"),
    )
    .await;
    let v = ok(&w, delivered).await;
    assert!(v["records"][0]["not_for_me"].is_null(), "{v}");
    let slack = w.slack.bodies();
    assert_eq!(slack.len(), 1, "{v}");
    let text = slack_text(&slack[0]);
    assert!(
        text.contains("[P2][dev]")
            && text.contains("nbaops-dev-pg-health-errors")
            && text.contains(ACK_BASE),
        "{text}"
    );
    let email = platform::drain(c, &w.email_tap).await.unwrap();
    assert_eq!(email.len(), 1, "{email:?}");
    let body = email[0].to_string();
    assert!(
        body.contains("[P2][dev]") && body.contains("nbaops-dev-pg-health-errors"),
        "{body}"
    );
    assert!(w.pagerduty.bodies().is_empty(), "P2 does not page");
    let inc = incident(&w, arn).await;
    assert_eq!(
        (status_of(&inc).as_str(), inc["severity"].as_str()),
        ("open", Some("P2")),
        "{inc}"
    );

    // The same alarm notified again (CloudWatch repeats, SNS redelivers): a duplicate.
    let v = ok(
        &w,
        alarm_notification("sns-nbaops-function-errors-alarm.json"),
    )
    .await;
    assert!(
        v["records"][0]["notes"].to_string().contains("duplicate"),
        "{v}"
    );
    assert_eq!(w.slack.bodies().len(), 1);
    assert!(platform::drain(c, &w.email_tap).await.unwrap().is_empty());

    // OK: the same incident is resolved on the channels it was opened on.
    let delivered = through_the_alerts_topic(
        &w,
        &alarm_notification("sns-nbaops-function-errors-ok.json"),
    )
    .await;
    let v = ok(&w, delivered).await;
    assert!(
        v["records"][0]["notes"]
            .to_string()
            .contains("incident closed"),
        "{v}"
    );
    let slack = w.slack.bodies();
    assert_eq!(slack.len(), 2);
    let text = slack_text(&slack[1]);
    assert!(
        text.starts_with("*RESOLVED [P2][dev]") && text.contains("nbaops-dev-pg-health-errors"),
        "{text}"
    );
    let email = platform::drain(c, &w.email_tap).await.unwrap();
    assert_eq!(email.len(), 1, "{email:?}");
    assert!(
        email[0].to_string().contains("RESOLVED [P2][dev]"),
        "{email:?}"
    );
    let inc = incident(&w, arn).await;
    assert_eq!(status_of(&inc), "resolved", "{inc}");
    assert!(inc["resolved_at"].is_string(), "{inc}");
    assert!(w.pagerduty.bodies().is_empty());
    assert_no_secret_in_logs(&w);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_id_alarm_pages_pagerduty_as_p1() {
    let w = world().await;
    let c = &w.stack.clients;
    let arn =
        "arn:aws:cloudwatch:us-east-1:123456789012:alarm:nbaops-dev-db-transaction-ids-critical";
    let v = ok(&w, alarm_notification("sns-transaction-ids-alarm.json")).await;
    assert!(v["records"][0]["not_for_me"].is_null(), "{v}");
    let pd = w.pagerduty.bodies();
    assert_eq!(pd.len(), 1, "{v}");
    assert_eq!(pd[0]["event_action"], "trigger");
    assert_eq!(pd[0]["routing_key"], PD_KEY);
    assert_eq!(pd[0]["dedup_key"], arn);
    assert_eq!(pd[0]["payload"]["severity"], "critical");
    let summary = pd[0]["payload"]["summary"].as_str().unwrap_or("");
    assert!(
        summary.contains("[P1][dev]") && summary.contains("nbaops-dev-db-transaction-ids-critical"),
        "{summary}"
    );
    assert!(slack_text(&w.slack.bodies()[0]).contains("[P1][dev]"));
    assert_eq!(platform::drain(c, &w.email_tap).await.unwrap().len(), 1);
    let inc = incident(&w, arn).await;
    assert_eq!(inc["severity"], "P1", "{inc}");

    // Its acknowledgement link (the ARN is the key) acknowledges it, PagerDuty included.
    let query = alert_router::link::query_of(&ack_link_in(&w.slack.bodies()[0]));
    assert_eq!(query["key"], arn);
    let v = ok(&w, ack_request("POST", &query)).await;
    assert_eq!(v["statusCode"], 200, "{v}");
    assert_eq!(status_of(&incident(&w, arn).await), "acknowledged");
    assert!(w
        .pagerduty
        .bodies()
        .iter()
        .any(|b| b["event_action"] == "acknowledge" && b["dedup_key"] == arn));
    assert_no_secret_in_logs(&w);
}

/// `alert` on another resource.
fn alert_on(severity: &str, key: &str, status: &str, resource: &str) -> Value {
    let mut a = alert(severity, key, status);
    let mut msg: Value =
        serde_json::from_str(a["Records"][0]["Sns"]["Message"].as_str().unwrap()).unwrap();
    msg["resource"] = json!(resource);
    a["Records"][0]["Sns"]["Message"] = json!(msg.to_string());
    a
}

/// Issue #22 on the emulator: a failover and the replica lag and connection alerts it causes are
/// one thread (one message, then one RAISED when a P1 joins, one page under the group's key);
/// the incident is assigned to who is on call at its open time (the rota's weekday in New York,
/// on the harness's clock), escalation goes to the team lead naming the assignee, the resolution
/// SLA gives one reminder and `breached` in the record, and the group resolves with its last key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_and_its_effects_are_one_assigned_thread_with_a_resolution_sla() {
    let names = ["mona", "tim", "wes", "thea", "fred", "sam", "sue"];
    let rota = json!({
        "weekdays": {"mon": "mona", "tue": "tim", "wed": "wes", "thu": "thea", "fri": "fred", "sat": "sam", "sun": "sue"},
        "contacts": names.iter().map(|n| (n.to_string(), json!(format!("<@U{}>", n.to_uppercase())))).collect::<serde_json::Map<_, _>>(),
    })
    .to_string();
    let w = world_with(&[
        ("NBAOPS_ALERTS__ONCALL__ROTA", &rota),
        ("NBAOPS_ALERTS__ONCALL__TEAM_LEAD", "<@ULEAD>"),
        ("NBAOPS_ALERTS__BUSINESS__TZ", "America/New_York"),
    ])
    .await;
    let c = &w.stack.clients;
    let failover = "failover#rds:nbaops-dev-db#e2e";
    let lag = "pg-replication-lag#pg:nbaops-dev-db/standby:r1";
    let conn = "pg-connections#pg:nbaops-dev-db";

    ok(&w, alert_on("P2", failover, "firing", "rds:nbaops-dev-db")).await;
    let inc = incident(&w, failover).await;
    let opened: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(inc["opened_at"].clone()).unwrap();
    use chrono::Datelike;
    let day = opened
        .with_timezone(&chrono_tz::America::New_York)
        .weekday()
        .num_days_from_monday() as usize;
    let (name, mention) = (names[day], format!("<@U{}>", names[day].to_uppercase()));
    assert_eq!(inc["assignee"], name, "{inc}");
    let slack = w.slack.bodies();
    assert_eq!(slack.len(), 1);
    let text = slack[0]["text"].as_str().unwrap();
    assert!(
        text.contains(&format!("on call: {mention} ({name})")),
        "{text}"
    );
    assert_eq!(platform::drain(c, &w.email_tap).await.unwrap().len(), 1);

    // The lag it causes: joins, nothing sent.
    let v = ok(
        &w,
        alert_on("P3", lag, "firing", "pg:nbaops-dev-db/standby:r1"),
    )
    .await;
    assert!(
        v["records"][0]["notes"]
            .to_string()
            .contains("joined the thread of incident failover#"),
        "{v}"
    );
    assert_eq!((w.slack.bodies().len(), w.pagerduty.bodies().len()), (1, 0));
    // A P1 of the group: one RAISED message and one page, under the group's key.
    ok(&w, alert_on("P1", conn, "firing", "pg:nbaops-dev-db")).await;
    let slack = w.slack.bodies();
    assert_eq!(slack.len(), 2);
    assert!(
        slack[1]["text"]
            .as_str()
            .unwrap()
            .starts_with(&format!("*RAISED to P1 by {conn}")),
        "{}",
        slack[1]
    );
    let pd = w.pagerduty.bodies();
    assert_eq!(pd.len(), 1);
    assert_eq!(
        (pd[0]["event_action"].as_str(), pd[0]["dedup_key"].as_str()),
        (Some("trigger"), Some(failover))
    );
    let inc = incident(&w, failover).await;
    assert_eq!(inc["severity"], "P1");
    assert_eq!(inc["members"], json!([conn, lag]), "{inc}");
    assert_eq!(incident(&w, lag).await["grouped_into"], failover);
    // P1's resolution SLA: 4 h from opening.
    let resolve_by: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(inc["resolve_by"].clone()).unwrap();
    assert_eq!(resolve_by, opened + chrono::Duration::hours(4));

    // Escalation level 1 goes to the team lead and names the assignee.
    let at = |d: chrono::Duration| json!({"nbaops": {"task": "alert-escalation-sweep", "at": (opened + d).to_rfc3339()}});
    ok(&w, at(chrono::Duration::minutes(16))).await;
    let text = w.slack.bodies().last().unwrap()["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        text.contains("ESCALATED to level 1")
            && text.contains("<@ULEAD>: not acknowledged")
            && text.contains(&format!("assigned to {mention} ({name})")),
        "{text}"
    );

    // Past the resolution SLA: one reminder, `breached` in the record; never twice.
    let reminders = |w: &World| {
        w.slack
            .bodies()
            .iter()
            .filter(|b| {
                b["text"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("*RESOLUTION SLA BREACHED")
            })
            .count()
    };
    ok(
        &w,
        at(chrono::Duration::hours(4) - chrono::Duration::minutes(1)),
    )
    .await;
    assert_eq!(reminders(&w), 0);
    let v = ok(
        &w,
        at(chrono::Duration::hours(4) + chrono::Duration::minutes(1)),
    )
    .await;
    assert!(
        v["records"][0]["notes"]
            .to_string()
            .contains(&format!("reminder to {name}")),
        "{v}"
    );
    assert_eq!(reminders(&w), 1);
    let reminder = w
        .slack
        .bodies()
        .into_iter()
        .find(|b| b["text"].as_str().unwrap().starts_with("*RESOLUTION SLA"))
        .unwrap();
    assert!(
        reminder["text"].as_str().unwrap().contains(&format!(
            "{mention} ({name}): still open past its resolution time"
        )),
        "{reminder}"
    );
    ok(&w, at(chrono::Duration::hours(6))).await;
    assert_eq!(reminders(&w), 1, "exactly once");
    let inc = incident(&w, failover).await;
    assert_eq!(inc["breached"], true, "{inc}");
    assert!(inc["breached_at"].is_string(), "{inc}");
    assert_eq!(
        w.pagerduty.bodies().len(),
        1,
        "a reminder pages nobody (P1 escalation targets are Slack and email)"
    );

    // The group resolves with its last key: one RESOLVED, PagerDuty resolved under its key.
    let slack_before = w.slack.bodies().len();
    for key in [failover, lag] {
        ok(&w, alert_on("P3", key, "resolved", "x")).await;
        assert_eq!(status_of(&incident(&w, failover).await), "escalated");
    }
    assert_eq!(
        w.slack.bodies().len(),
        slack_before,
        "quiet until the last key"
    );
    ok(&w, alert_on("P1", conn, "resolved", "pg:nbaops-dev-db")).await;
    let slack = w.slack.bodies();
    assert_eq!(slack.len(), slack_before + 1);
    assert!(
        slack.last().unwrap()["text"]
            .as_str()
            .unwrap()
            .starts_with("*RESOLVED [P1]"),
        "{}",
        slack.last().unwrap()
    );
    let pd = w.pagerduty.bodies();
    assert_eq!(
        (pd[1]["event_action"].as_str(), pd[1]["dedup_key"].as_str()),
        (Some("resolve"), Some(failover))
    );
    let inc = incident(&w, failover).await;
    assert_eq!(
        (status_of(&inc), inc["breached"].clone()),
        ("resolved".into(), json!(true))
    );
    for key in [lag, conn] {
        assert_eq!(status_of(&incident(&w, key).await), "resolved", "{key}");
    }
    assert_no_secret_in_logs(&w);
}

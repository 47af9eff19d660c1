//! The unit tests' world: alert-router on fakes (HTTP, dead-letter queue, SNS, ledger) with the
//! three secrets set, and the payloads the tests send it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use nbaops_shared::alerts::{Alert, Severity};
use nbaops_shared::config::alerts;
use nbaops_shared::fakes::*;
use nbaops_shared::runtime::{Ctx, Deps, Function, Invocation, InvocationReport};
use nbaops_shared::Result;

use crate::plan::Incident;
use crate::router::{AlertRouter, Reply, FUNCTION};

pub const SLACK: &str = "https://hooks.slack.test/services/T000/B000/SECRETSECRET";
pub const PD: &str = "https://pd.test/v2/enqueue";
pub const EMAIL: &str = "arn:aws:sns:us-east-1:123456789012:nbaops-dev-email";
pub const DLQ: &str = "https://sqs.test/123456789012/nbaops-dev-alerts-dlq";
pub const SIGNING: &str = "unit-test-signing-key-0123456789";

pub struct World {
    pub deps: &'static Deps,
    pub router: AlertRouter,
    pub http: &'static FakeHttpPost,
    pub dlq: &'static FakeDeadLetter,
    pub sns: &'static FakeNotifier,
}

/// The world with these settings on top of the usual ones (email topic, DLQ, PagerDuty URL,
/// link base URL, a 1-2 ms retry).
pub async fn world(extra: &[(&str, &str)]) -> World {
    let mut vars = vec![
        ("NBAOPS_ALERTS__EMAIL_TOPIC_ARN", EMAIL),
        ("NBAOPS_ALERTS__DEAD_LETTER_QUEUE_URL", DLQ),
        ("NBAOPS_ALERTS__PAGERDUTY__EVENTS_URL", PD),
        ("NBAOPS_ALERTS__ACK__BASE_URL", "https://ack.test/"),
        ("NBAOPS_ALERTS__RETRY__BASE_MS", "1"),
        ("NBAOPS_ALERTS__RETRY__MAX_MS", "2"),
    ];
    vars.extend_from_slice(extra);
    let t = test_deps(FUNCTION, &vars).unwrap();
    let params = FakeParams::with(&[
        ("/nbaops/dev/secrets/alerts/slack_webhook_url", SLACK),
        (
            "/nbaops/dev/secrets/alerts/pagerduty_routing_key",
            "pd-routing-key-123",
        ),
        ("/nbaops/dev/secrets/alerts/link_signing_key", SIGNING),
    ]);
    let http = leak(FakeHttpPost::default());
    let dlq = leak(FakeDeadLetter::default());
    let router = AlertRouter::load(
        alerts::from_settings(&t.deps.cfg.settings).unwrap(),
        Box::new(Shared(http)),
        Box::new(Shared(dlq)),
        Some(&params),
    )
    .await
    .unwrap();
    World {
        deps: t.deps,
        router,
        http,
        dlq,
        sns: t.notifier,
    }
}

pub fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

pub fn inv(at: &str) -> Invocation {
    Invocation::at("req", t(at))
}

pub fn sns_alert(a: &Alert, id: &str) -> Value {
    json!({"Records": [{"EventSource": "aws:sns", "Sns": {
        "Type": "Notification", "MessageId": id,
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:nbaops-dev-alerts",
        "Message": serde_json::to_string(a).unwrap()}}]})
}

/// Its resource is the key's (`asg:<key>`): two keys are two incidents unless a test groups them.
pub fn alert(sev: Severity, key: &str) -> Alert {
    Alert::new(
        sev,
        "dev",
        "scale-on-alarm",
        &format!("asg:{key}"),
        key,
        "web down",
        t("2026-11-25T10:00:00Z"),
    )
}

/// An alert of this severity and key (see [`alert`]) from the alerts topic, through the world's
/// router at `at`.
pub async fn fire(w: &World, sev: Severity, key: &str, id: &str, at: &str) -> InvocationReport {
    report(run(w, sns_alert(&alert(sev, key), id), at).await)
}

/// The payload through the world's router at `at`.
pub async fn run(w: &World, payload: Value, at: &str) -> Result<Reply> {
    run_on(w, &w.router, payload, at).await
}

/// The payload through another router on the world's ports (a deploy with other config).
pub async fn run_on(w: &World, r: &AlertRouter, payload: Value, at: &str) -> Result<Reply> {
    let inv = inv(at);
    r.handle(payload, &Ctx::of::<AlertRouter>(w.deps, &inv))
        .await
}

pub fn report(r: Result<Reply>) -> InvocationReport {
    match r.unwrap() {
        Reply::Report(r) => r,
        other => panic!("{other:?}"),
    }
}

pub async fn load_incident(w: &World, key: &str) -> Result<Option<Incident>> {
    w.router
        .incidents(&Ctx::of::<AlertRouter>(
            w.deps,
            &inv("2026-11-25T00:00:00Z"),
        ))
        .load(key)
        .await
}

pub fn slack_texts(w: &World) -> Vec<String> {
    w.http
        .requests_to(SLACK)
        .iter()
        .map(|b| b["text"].as_str().unwrap_or("").to_string())
        .collect()
}

pub fn alarm_fixture(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../events/cloudwatch-alarm")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

pub const PG_ERRORS_ARN: &str =
    "arn:aws:cloudwatch:us-east-1:123456789012:alarm:nbaops-dev-pg-health-errors";

/// A function URL request (payload format 2.0) with this query.
pub fn url_request(method: &str, query: &BTreeMap<String, String>) -> Value {
    json!({"version": "2.0", "rawPath": "/", "rawQueryString": "",
           "requestContext": {"http": {"method": method, "path": "/", "sourceIp": "203.0.113.9"}},
           "queryStringParameters": query})
}

//! Inbound Lambda payloads, normalised.
//!
//! Every nbaops function receives *something* as its Lambda payload: an EventBridge
//! event, an SNS batch, the CloudWatch direct alarm action, or a bare EventBridge
//! Scheduler input. [`classify`] turns any of those into one normalised model per
//! source ([`AlarmChange`], [`RdsEvent`], [`ScheduledTick`], [`CostAnomaly`],
//! [`BudgetAlert`]) whatever the delivery, or into [`NotForMe`] with a reason that
//! names what was seen. It never panics: we never act on what we do not understand.
//!
//! Delivery detection, in order:
//! 1. not a JSON object → `NotForMe`;
//! 2. `Records[]` → one [`Inbound`] per record; SNS records are opened (their
//!    `Message` may be a CloudWatch alarm, an RDS event subscription message, a
//!    Cost Anomaly Detection alert, an AWS Budgets alert in JSON or plain text, or
//!    a whole EventBridge event forwarded by a rule to a topic); SQS records are
//!    opened the same way (a body holding an SNS notification or an EventBridge
//!    event, delivery `Sns` / `EventBridge`); other records (S3, DynamoDB…) are
//!    `NotForMe`;
//! 3. `detail-type` → EventBridge, dispatched on (`source`, `detail-type`);
//! 4. `alarmData` → CloudWatch direct Lambda alarm action;
//! 5. top-level `nbaops` → bare EventBridge Scheduler input ([`Delivery::Scheduler`]);
//! 6. a lone SNS notification body (`Type: "Notification"` + `Message`, as SQS
//!    delivers it) → treated like an SNS record;
//! 7. `awslogs` → a CloudWatch Logs subscription delivery ([`LogBatch`], `logs.rs`): base64 +
//!    gzip decoded, only `DATA_MESSAGE`s of RDS PostgreSQL log groups;
//! 8. anything else → `NotForMe`.
//!
//! The envelopes (SNS notification, SQS record, EventBridge event, the alarm action) are read
//! with the types of `aws_lambda_events` (`envelope.rs`) wherever the crate parses the payload.
//! The tolerant reader (`util.rs`) stays for what the crate refuses — a notification without
//! signature fields (hand-made, or relayed by tooling), an alarm state without `timestamp`, keys
//! in another case, numbers where it wants strings, a `Message` that is an object — and for the
//! bodies the crate does not model (alarm state changes, RDS events, schedules, cost). The tests
//! in `envelope_tests.rs` show the crate refusing each such shape, and a property test shows both
//! readers classify alike wherever the crate accepts.
//!
//! Event ids (idempotency keys): the EventBridge `id`; the SNS `MessageId` — except
//! for an EventBridge event forwarded through SNS, which keeps the inner EventBridge
//! `id` so the same event arriving by both paths dedupes; for the direct alarm action
//! `"{alarmArn or alarmName}/{state timestamp, RFC 3339 millis}"`; for a bare
//! scheduler input `nbaops.id` or `"scheduler/{task}/{minute}"`.

mod alarm;
#[cfg(any(test, feature = "proptest"))]
pub mod arbitrary;
mod cost;
mod envelope;
#[cfg(test)]
mod envelope_tests;
mod logs;
#[cfg(test)]
mod proptests;
mod rds;
pub mod rds_catalog;
mod schedule;
mod util;

use aws_lambda_events::{eventbridge::EventBridgeEvent, sns::SnsMessage, sqs::SqsMessage};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

pub use alarm::{AlarmChange, AlarmState, AlarmTrigger, MetricRef, SingleMetric};
pub use cost::{BudgetAlert, BudgetKind, CostAnomaly, RootCause};
#[cfg(any(test, feature = "fakes"))]
pub use logs::subscription_payload;
pub use logs::{decode_data, rds_postgresql_source, LogBatch, LogLine, MAX_DECODED_BYTES};
pub use rds::{normalise_event_code, RdsEvent, RdsSourceType};
pub use schedule::ScheduledTick;

use envelope::{clean, typed};
use util::{describe, get, str_field, time_field, truncate};

/// How a payload reached the function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Delivery {
    /// An EventBridge rule targeting the function directly. (An EventBridge event
    /// that a rule forwarded to an SNS topic arrives as `Sns`.)
    EventBridge,
    /// A record of an SNS batch (`Records[].Sns`).
    Sns,
    /// The CloudWatch alarm action invoking the function directly.
    AlarmAction,
    /// EventBridge Scheduler: the `aws.scheduler` envelope or a bare `{"nbaops": …}` input.
    Scheduler,
    /// A work item on an SQS work queue (issue #20): the body of the message is a bare
    /// `{"nbaops": {"task", "target", "account", "region", "dispatched_at"}}` input that a
    /// `dispatch` tick enqueued (`runtime::fanout`).
    Queue,
    /// A CloudWatch Logs subscription filter (issue #22): `{"awslogs": {"data": …}}`.
    Logs,
}

/// One classified payload (or one record of an SNS batch).
/// Serialised internally tagged as `{"inbound": "Alarm", ...fields}` (not `kind`,
/// which [`BudgetAlert`] uses for its own field).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "inbound")]
pub enum Inbound {
    Alarm(AlarmChange),
    Rds(RdsEvent),
    Schedule(ScheduledTick),
    CostAnomaly(CostAnomaly),
    Budget(BudgetAlert),
    Logs(LogBatch),
    NotForMe(NotForMe),
}

/// Why a payload was refused, e.g.
/// `unknown EventBridge detail-type 'EC2 Instance State-change Notification' from aws.ec2`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("not for nbaops: {reason}")]
pub struct NotForMe {
    pub reason: String,
}

/// Longest refusal reason, in characters: it goes to logs and reports, never a whole payload
/// (the property tests found API Gateway paths and key lists copied in whole).
pub const MAX_REASON_CHARS: usize = 500;

impl NotForMe {
    pub fn new(reason: impl Into<String>) -> Self {
        let reason = reason.into();
        let reason = if reason.chars().count() > MAX_REASON_CHARS {
            truncate(&reason, MAX_REASON_CHARS)
        } else {
            reason
        };
        Self { reason }
    }
}

impl Inbound {
    /// The idempotency key, `None` for [`Inbound::NotForMe`].
    pub fn event_id(&self) -> Option<&str> {
        match self {
            Inbound::Alarm(x) => Some(&x.event_id),
            Inbound::Rds(x) => Some(&x.event_id),
            Inbound::Schedule(x) => Some(&x.event_id),
            Inbound::CostAnomaly(x) => Some(&x.event_id),
            Inbound::Budget(x) => Some(&x.event_id),
            Inbound::Logs(x) => Some(&x.event_id),
            Inbound::NotForMe(_) => None,
        }
    }

    /// How it arrived, `None` for [`Inbound::NotForMe`].
    pub fn delivery(&self) -> Option<Delivery> {
        match self {
            Inbound::Alarm(x) => Some(x.delivery),
            Inbound::Rds(x) => Some(x.delivery),
            Inbound::Schedule(x) => Some(x.delivery),
            Inbound::CostAnomaly(x) => Some(x.delivery),
            Inbound::Budget(x) => Some(x.delivery),
            Inbound::Logs(x) => Some(x.delivery),
            Inbound::NotForMe(_) => None,
        }
    }

    pub fn is_not_for_me(&self) -> bool {
        matches!(self, Inbound::NotForMe(_))
    }

    /// Short name of the variant, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Inbound::Alarm(_) => "alarm",
            Inbound::Rds(_) => "rds",
            Inbound::Schedule(_) => "schedule",
            Inbound::CostAnomaly(_) => "cost_anomaly",
            Inbound::Budget(_) => "budget",
            Inbound::Logs(_) => "logs",
            Inbound::NotForMe(_) => "not_for_me",
        }
    }
}

/// Parse any Lambda payload. An SNS batch may hold several records: one [`Inbound`]
/// per record. Never panics; garbage => `vec![Inbound::NotForMe(..)]`.
pub fn classify(raw: &Value) -> Vec<Inbound> {
    match raw {
        Value::Object(m) if m.is_empty() => vec![not_for_me("empty JSON object")],
        Value::Object(_) => classify_object(raw),
        other => vec![not_for_me(format!(
            "expected a JSON object, got {}",
            describe(other)
        ))],
    }
}

/// Convenience: parse the text first; invalid JSON => `NotForMe` with the serde error text.
pub fn classify_str(raw: &str) -> Vec<Inbound> {
    match serde_json::from_str::<Value>(raw) {
        Ok(v) => classify(&v),
        Err(e) => vec![not_for_me(format!("invalid JSON: {e}"))],
    }
}

/// Same as [`classify_str`] for raw bytes.
pub fn classify_bytes(raw: &[u8]) -> Vec<Inbound> {
    match serde_json::from_slice::<Value>(raw) {
        Ok(v) => classify(&v),
        Err(e) => vec![not_for_me(format!("invalid JSON: {e}"))],
    }
}

pub(crate) fn not_for_me(reason: impl Into<String>) -> Inbound {
    Inbound::NotForMe(NotForMe::new(reason))
}

/// What the parsers know about the envelope a record came in.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub delivery: Delivery,
    /// EventBridge `id` or SNS `MessageId`.
    pub id: Option<String>,
    /// EventBridge `time`, SNS `Timestamp`, direct-action `time`.
    pub time: Option<DateTime<Utc>>,
    pub account: Option<String>,
    /// A region *code* (never the SNS alarm "US East (N. Virginia)" long name).
    pub region: Option<String>,
    pub resources: Vec<String>,
    pub subject: Option<String>,
    pub topic_arn: Option<String>,
}

impl Ctx {
    fn empty(delivery: Delivery) -> Self {
        Self {
            delivery,
            id: None,
            time: None,
            account: None,
            region: None,
            resources: Vec::new(),
            subject: None,
            topic_arn: None,
        }
    }

    /// An SNS notification's context; the region is the topic's.
    fn sns(
        id: Option<String>,
        time: Option<DateTime<Utc>>,
        subject: Option<String>,
        topic_arn: Option<String>,
    ) -> Self {
        let topic_arn = topic_arn.and_then(clean);
        Self {
            id: id.and_then(clean),
            time,
            subject: subject.and_then(clean),
            region: topic_arn.as_deref().and_then(util::arn_region),
            topic_arn,
            ..Self::empty(Delivery::Sns)
        }
    }

    /// The SNS topic's name, for refusal reasons.
    fn topic(&self) -> String {
        self.topic_arn
            .as_deref()
            .and_then(util::arn_tail)
            .unwrap_or_else(|| "?".to_string())
    }
}

/// An EventBridge event's `source`, `detail-type` and context.
fn eventbridge_envelope(ev: &Value, delivery: Delivery) -> (Option<String>, Option<String>, Ctx) {
    if let Some(t) = typed::<EventBridgeEvent>(ev) {
        let ctx = Ctx {
            delivery,
            id: t.id.and_then(clean),
            time: t.time,
            account: t.account.and_then(clean),
            region: t.region.and_then(clean),
            resources: t
                .resources
                .into_iter()
                .flatten()
                .filter_map(clean)
                .collect(),
            ..Ctx::empty(delivery)
        };
        return (clean(t.source), clean(t.detail_type), ctx);
    }
    let ctx = Ctx {
        delivery,
        id: str_field(ev, &["id"]),
        time: time_field(ev, &["time"]),
        account: str_field(ev, &["account"]),
        region: str_field(ev, &["region"]),
        resources: util::arr_field(ev, &["resources"])
            .iter()
            .filter_map(util::scalar_string)
            .collect(),
        ..Ctx::empty(delivery)
    };
    (
        str_field(ev, &["source"]),
        str_field(ev, &["detail-type"]),
        ctx,
    )
}

fn into_inbound<T>(r: Result<T, NotForMe>, wrap: fn(T) -> Inbound) -> Inbound {
    match r {
        Ok(x) => wrap(x),
        Err(n) => Inbound::NotForMe(n),
    }
}

fn classify_object(raw: &Value) -> Vec<Inbound> {
    if let Some(records) = get(raw, "Records") {
        return classify_records(records);
    }
    if get(raw, "detail-type").is_some() {
        return vec![classify_eventbridge(
            raw,
            eventbridge_envelope(raw, Delivery::EventBridge),
        )];
    }
    if get(raw, "alarmData").is_some() {
        return vec![into_inbound(alarm::from_direct_action(raw), Inbound::Alarm)];
    }
    if get(raw, "nbaops").is_some() {
        return vec![into_inbound(schedule::from_bare(raw), Inbound::Schedule)];
    }
    if str_field(raw, &["Type"]).as_deref() == Some("Notification") && get(raw, "Message").is_some()
    {
        return vec![classify_sns(raw)];
    }
    if get(raw, "awslogs").is_some() {
        return vec![into_inbound(logs::from_subscription(raw), Inbound::Logs)];
    }
    vec![not_for_me(describe_unknown(raw))]
}

fn describe_unknown(raw: &Value) -> String {
    if get(raw, "httpMethod").is_some()
        || get(raw, "routeKey").is_some()
        || get(raw, "requestContext").is_some()
    {
        let method = str_field(raw, &["httpMethod"])
            .or_else(|| {
                get(raw, "requestContext")
                    .and_then(|c| get(c, "http"))
                    .and_then(|h| str_field(h, &["method"]))
            })
            .unwrap_or_else(|| "?".to_string());
        let path = str_field(raw, &["path", "rawPath", "routeKey"]).unwrap_or_default();
        return format!(
            "API Gateway / function URL request ({} {}), not an nbaops event",
            truncate(&method, 20),
            truncate(&path, 100)
        );
    }
    if get(raw, "source").is_some() && get(raw, "alarmArn").is_some() {
        return "CloudWatch alarm action payload without alarmData".to_string();
    }
    format!("unrecognised payload: {}", describe(raw))
}

fn classify_records(records: &Value) -> Vec<Inbound> {
    let Some(list) = records.as_array() else {
        return vec![not_for_me(format!(
            "Records is not an array but {}",
            describe(records)
        ))];
    };
    if list.is_empty() {
        return vec![not_for_me("empty Records batch")];
    }
    list.iter()
        .enumerate()
        .map(|(i, record)| {
            if let Some(sns) = get(record, "Sns").filter(|s| s.is_object()) {
                return classify_sns(sns);
            }
            let source = str_field(record, &["EventSource", "eventSource"]);
            if source.as_deref() == Some("aws:sns") {
                return not_for_me(format!("SNS record {i} without an Sns object"));
            }
            if source.as_deref() == Some("aws:sqs") {
                return classify_sqs_body(i, record);
            }
            let name = str_field(record, &["eventName"]);
            match (source, name) {
                (Some(s), Some(n)) => not_for_me(format!(
                    "record {i} is from {s} ({n}), not an SNS notification"
                )),
                (Some(s), None) => {
                    not_for_me(format!("record {i} is from {s}, not an SNS notification"))
                }
                _ => not_for_me(format!(
                    "record {i} is not an SNS notification: {}",
                    describe(record)
                )),
            }
        })
        .collect()
}

fn classify_eventbridge(
    ev: &Value,
    (source, detail_type, ctx): (Option<String>, Option<String>, Ctx),
) -> Inbound {
    let (Some(dt), Some(src)) = (detail_type, source) else {
        return not_for_me(format!(
            "EventBridge-like event without detail-type or source: {}",
            describe(ev)
        ));
    };
    match (src.as_str(), dt.as_str()) {
        ("aws.cloudwatch", "CloudWatch Alarm State Change") => {
            into_inbound(alarm::from_eventbridge(ev, &ctx), Inbound::Alarm)
        }
        ("aws.rds", t) if rds::is_rds_detail_type(t) => {
            into_inbound(rds::from_eventbridge(ev, &ctx), Inbound::Rds)
        }
        ("aws.events" | "aws.scheduler", "Scheduled Event") => {
            let mut ctx = ctx;
            if src == "aws.scheduler" && ctx.delivery == Delivery::EventBridge {
                ctx.delivery = Delivery::Scheduler;
            }
            into_inbound(schedule::from_eventbridge(ev, &ctx), Inbound::Schedule)
        }
        ("aws.ce", "Anomaly Detected") => into_inbound(
            cost::anomaly_from_eventbridge(ev, &ctx),
            Inbound::CostAnomaly,
        ),
        _ => not_for_me(format!(
            "unknown EventBridge detail-type '{}' from {}",
            truncate(&dt, 100),
            truncate(&src, 100)
        )),
    }
}

/// One SQS record (`Records[].body`): a queue subscribed to an SNS topic (the notification
/// JSON, so the SNS `MessageId` stays the idempotency key and a message seen by both paths
/// dedupes), the target of an EventBridge rule (the event itself), or a work queue (issue #20:
/// a bare `{"nbaops": …}` work item, delivery [`Delivery::Queue`], whose event id is
/// `nbaops.id` or else `sqs/<messageId>`: a redelivery of the same message is the same event
/// for the guard's idempotency). Anything else in the body is not for nbaops.
fn classify_sqs_body(i: usize, record: &Value) -> Inbound {
    let (body, message_id) = match typed::<SqsMessage>(record) {
        Some(m) => (m.body, m.message_id),
        None => (
            get(record, "body")
                .and_then(Value::as_str)
                .map(str::to_string),
            str_field(record, &["messageId"]),
        ),
    };
    let Some(body) = body else {
        return not_for_me(format!("SQS record {i} without a string body"));
    };
    match serde_json::from_str::<Value>(body.trim()) {
        Ok(v) if str_field(&v, &["Type"]).as_deref() == Some("Notification") => classify_sns(&v),
        Ok(v) if get(&v, "detail-type").is_some() => {
            classify_eventbridge(&v, eventbridge_envelope(&v, Delivery::EventBridge))
        }
        Ok(v) if get(&v, "nbaops").is_some() => match schedule::from_bare(&v) {
            Ok(mut tick) => {
                tick.delivery = Delivery::Queue;
                let has_id = get(&tick.detail, "nbaops")
                    .and_then(|n| util::any(n, &["id", "execution_id", "executionId"]))
                    .is_some();
                if let (false, Some(m)) = (has_id, message_id.filter(|m| !m.is_empty())) {
                    tick.event_id = format!("sqs/{}", truncate(&m, 200));
                }
                Inbound::Schedule(tick)
            }
            Err(n) => Inbound::NotForMe(n),
        },
        Ok(v) => not_for_me(format!(
            "SQS record {i} carries {}, not an SNS notification, EventBridge event or work item",
            describe(&v)
        )),
        Err(_) => not_for_me(format!(
            "SQS record {i} body is not JSON: {:?}",
            truncate(body.trim(), 80)
        )),
    }
}

/// One SNS notification body (`Records[].Sns`).
fn classify_sns(sns: &Value) -> Inbound {
    if let Some(n) = typed::<SnsMessage>(sns) {
        let ctx = Ctx::sns(
            Some(n.message_id),
            Some(n.timestamp),
            n.subject,
            Some(n.topic_arn),
        );
        return classify_sns_message(&n.message, ctx);
    }
    let ctx = Ctx::sns(
        str_field(sns, &["MessageId"]),
        time_field(sns, &["Timestamp"]),
        str_field(sns, &["Subject"]),
        str_field(sns, &["TopicArn"]),
    );
    match get(sns, "Message") {
        None => not_for_me(format!(
            "SNS notification on topic '{}' without Message",
            ctx.topic()
        )),
        Some(Value::String(s)) => classify_sns_message(s, ctx),
        // Hand-made test events sometimes put the object itself in Message.
        Some(v @ Value::Object(_)) => {
            let topic = ctx.topic();
            classify_sns_json(v, ctx, &topic)
        }
        Some(other) => not_for_me(format!(
            "SNS Message on topic '{}' is {}, not a string",
            ctx.topic(),
            describe(other)
        )),
    }
}

/// An SNS `Message` string: JSON (an alarm, an RDS event, a cost alert, an EventBridge event) or
/// the plain text of an AWS Budgets alert.
fn classify_sns_message(message: &str, ctx: Ctx) -> Inbound {
    let topic = ctx.topic();
    match serde_json::from_str::<Value>(message.trim()) {
        Ok(v @ Value::Object(_)) => classify_sns_json(&v, ctx, &topic),
        Ok(other) => not_for_me(format!(
            "SNS message on topic '{topic}' is JSON {}, not an nbaops event",
            describe(&other)
        )),
        Err(_) if cost::looks_like_budget_text(message, ctx.subject.as_deref()) => {
            into_inbound(cost::budget_from_text(message, &ctx), Inbound::Budget)
        }
        Err(_) => not_for_me(format!(
            "SNS message on topic '{topic}' is plain text not recognised: {:?}",
            truncate(message.trim(), 80)
        )),
    }
}

fn classify_sns_json(msg: &Value, ctx: Ctx, topic: &str) -> Inbound {
    if get(msg, "detail-type").is_some() {
        // An EventBridge rule forwarding the event to an SNS topic.
        let (source, detail_type, mut inner) = eventbridge_envelope(msg, Delivery::Sns);
        inner.id = inner.id.or(ctx.id);
        inner.time = inner.time.or(ctx.time);
        inner.subject = ctx.subject;
        inner.topic_arn = ctx.topic_arn;
        return classify_eventbridge(msg, (source, detail_type, inner));
    }
    if util::any(msg, &["AlarmName", "NewStateValue"]).is_some() {
        return into_inbound(alarm::from_sns(msg, &ctx), Inbound::Alarm);
    }
    if util::any(
        msg,
        &["Event Source", "Event ID", "Source ID", "Event Message"],
    )
    .is_some()
    {
        return into_inbound(rds::from_sns(msg, &ctx), Inbound::Rds);
    }
    if get(msg, "anomalyId").is_some() {
        return into_inbound(cost::anomaly_from_json(msg, &ctx), Inbound::CostAnomaly);
    }
    if cost::looks_like_budget_json(msg) {
        return into_inbound(cost::budget_from_json(msg, &ctx), Inbound::Budget);
    }
    not_for_me(format!(
        "SNS message on topic '{topic}' is JSON {} — not an alarm, RDS event, cost anomaly or budget alert",
        describe(msg)
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;
    use std::path::{Path, PathBuf};

    /// Classify a fixture that must yield exactly one record.
    pub(crate) fn one(fixture: &str) -> Inbound {
        let mut out = classify_str(fixture);
        assert_eq!(out.len(), 1, "{out:#?}");
        out.remove(0)
    }

    pub(crate) fn reason(i: &Inbound) -> &str {
        match i {
            Inbound::NotForMe(n) => &n.reason,
            other => panic!("expected NotForMe, got {other:#?}"),
        }
    }

    /// `events/` at the repository root. In the workspace the manifest dir is
    /// `shared/`, so it is `../events`; a standalone crate whose manifest sits at the
    /// repository root (the scratch copy) finds it at `./events`.
    fn fixture_root() -> PathBuf {
        [
            concat!(env!("CARGO_MANIFEST_DIR"), "/../events"),
            concat!(env!("CARGO_MANIFEST_DIR"), "/events"),
        ]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.join("not-for-me").is_dir())
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../events")))
    }

    fn fixture_files() -> Vec<(String, PathBuf)> {
        let root = fixture_root();
        let mut out = Vec::new();
        let mut dirs: Vec<_> = std::fs::read_dir(&root)
            .unwrap_or_else(|e| panic!("read {}: {e}", root.display()))
            .map(|d| d.unwrap().path())
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        for dir in dirs {
            let source = dir.file_name().unwrap().to_string_lossy().to_string();
            let mut files: Vec<_> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|d| d.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
                .collect();
            files.sort();
            for f in files {
                out.push((source.clone(), f));
            }
        }
        out
    }

    #[test]
    fn every_fixture_is_classified_as_its_folder_says() {
        let files = fixture_files();
        assert!(files.len() >= 33, "only {} fixtures found", files.len());
        for (source, path) in files {
            let text = std::fs::read_to_string(&path).unwrap();
            let value: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()));
            let out = classify(&value);
            assert!(!out.is_empty(), "{}", path.display());
            let refused = out.iter().filter(|i| i.is_not_for_me()).count();
            if source == "not-for-me" {
                assert_eq!(refused, out.len(), "{}: {out:#?}", path.display());
                for i in &out {
                    assert!(reason(i).len() > 10, "{}: vague reason", path.display());
                }
            } else {
                assert_eq!(refused, 0, "{}: {out:#?}", path.display());
                let want = match source.as_str() {
                    "cloudwatch-alarm" => &["alarm"][..],
                    "rds" => &["rds"],
                    "schedule" => &["schedule"],
                    "cost" => &["cost_anomaly", "budget"],
                    "cloudwatch-logs" => &["logs"],
                    other => panic!("unknown fixture folder {other}"),
                };
                for i in &out {
                    assert!(want.contains(&i.kind()), "{}: {}", path.display(), i.kind());
                    assert!(!i.event_id().unwrap_or_default().is_empty());
                }
            }
            // Classification is deterministic: the same message gives the same ids
            // (schedules without an id use the current minute, so allow those).
            let again = classify(&value);
            for (a, b) in out.iter().zip(&again) {
                if !a.event_id().unwrap_or_default().starts_with("scheduler/") {
                    assert_eq!(a.event_id(), b.event_id(), "{}", path.display());
                }
            }
            // Every result serialises, without duplicate keys (a duplicate would be
            // dropped by the round trip through `Value`, shortening the text).
            for item in &out {
                let direct = serde_json::to_string(item).unwrap();
                let via_value =
                    serde_json::to_string(&serde_json::to_value(item).unwrap()).unwrap();
                assert_eq!(direct.len(), via_value.len(), "{direct}");
            }
        }
    }

    /// Every way of damaging a value one step: remove each key, null it, blank it,
    /// "None" it, make it the wrong type.
    fn mutations(v: &Value) -> Vec<Value> {
        let mut out = Vec::new();
        match v {
            Value::Object(m) => {
                for k in m.keys() {
                    let mut removed = m.clone();
                    removed.remove(k);
                    out.push(Value::Object(removed));
                    for replacement in [
                        Value::Null,
                        json!(""),
                        json!("None"),
                        json!(42),
                        json!([]),
                        json!({}),
                        json!("garbage"),
                    ] {
                        let mut changed = m.clone();
                        changed.insert(k.clone(), replacement);
                        out.push(Value::Object(changed));
                    }
                }
            }
            Value::Array(a) => {
                out.push(json!([]));
                for i in 0..a.len() {
                    let mut removed = a.clone();
                    removed.remove(i);
                    out.push(Value::Array(removed));
                    let mut nulled = a.clone();
                    nulled[i] = Value::Null;
                    out.push(Value::Array(nulled));
                }
            }
            _ => {}
        }
        out
    }

    /// Mutations at depth ≤ `depth`, re-embedded into the whole document; JSON
    /// strings (SNS `Message`, scheduler `detail`) are opened and mutated too.
    fn deep_mutations(v: &Value, depth: usize) -> Vec<Value> {
        let mut out = mutations(v);
        if depth == 0 {
            return out;
        }
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    for mutated in deep_mutations(child, depth - 1) {
                        let mut copy = m.clone();
                        copy.insert(k.clone(), mutated);
                        out.push(Value::Object(copy));
                    }
                }
            }
            Value::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    for mutated in deep_mutations(child, depth - 1) {
                        let mut copy = a.clone();
                        copy[i] = mutated;
                        out.push(Value::Array(copy));
                    }
                }
            }
            Value::String(s) => {
                if let Ok(inner @ (Value::Object(_) | Value::Array(_))) =
                    serde_json::from_str::<Value>(s)
                {
                    for mutated in deep_mutations(&inner, depth - 1) {
                        out.push(Value::String(mutated.to_string()));
                    }
                }
            }
            _ => {}
        }
        out
    }

    #[test]
    fn mutated_fixtures_never_panic() {
        let mut total = 0usize;
        for (_, path) in fixture_files() {
            let value: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            for mutated in deep_mutations(&value, 7) {
                let out = classify(&mutated);
                assert!(!out.is_empty(), "{}", path.display());
                for i in &out {
                    if let Inbound::NotForMe(n) = i {
                        assert!(!n.reason.is_empty());
                    }
                }
                total += 1;
            }
        }
        eprintln!("{total} mutated payloads classified");
        assert!(total > 1000, "only {total} mutations");
    }

    #[test]
    fn garbage_is_not_for_me() {
        for (raw, needle) in [
            ("null", "got null"),
            ("42", "number 42"),
            ("\"hello\"", "string"),
            ("[1,2]", "array of 2"),
            ("{}", "empty JSON object"),
            ("true", "boolean"),
            ("{\"Records\": []}", "empty Records"),
            ("{\"Records\": 3}", "not an array"),
            (
                "{\"foo\": 1}",
                "unrecognised payload: object with keys [foo]",
            ),
            ("{not json", "invalid JSON"),
            ("", "invalid JSON"),
        ] {
            let out = classify_str(raw);
            assert_eq!(out.len(), 1, "{raw}");
            assert!(
                reason(&out[0]).contains(needle),
                "{raw}: {}",
                reason(&out[0])
            );
        }
        let bytes = classify_bytes(b"\xff\xfe");
        assert!(reason(&bytes[0]).contains("invalid JSON"));
        let out = classify_str(r#"{"Records":[{"EventSource":"aws:sns","Sns":null}]}"#);
        assert!(reason(&out[0]).contains("without an Sns object"));
        assert_eq!(
            NotForMe::new("x").to_string(),
            "not for nbaops: x",
            "Display via thiserror"
        );
    }

    #[test]
    fn sns_batch_yields_one_inbound_per_record() {
        let alarm: Value = serde_json::from_str(include_str!(
            "../../../events/cloudwatch-alarm/sns-single-metric-alarm.json"
        ))
        .unwrap();
        let rds: Value = serde_json::from_str(include_str!(
            "../../../events/rds/sns-subscription-event-url.json"
        ))
        .unwrap();
        let s3: Value =
            serde_json::from_str(include_str!("../../../events/not-for-me/s3-put.json")).unwrap();
        let batch = json!({"Records": [
            alarm["Records"][0].clone(),
            rds["Records"][0].clone(),
            s3["Records"][0].clone(),
            {"EventSource": "aws:sns", "Sns": {"MessageId": "x", "Message": "hello there"}},
        ]});
        let out = classify(&batch);
        assert_eq!(out.len(), 4);
        assert_eq!(out[0].kind(), "alarm");
        assert_eq!(out[1].kind(), "rds");
        assert!(reason(&out[2]).contains("aws:s3"), "{}", reason(&out[2]));
        assert!(
            reason(&out[3]).contains("plain text"),
            "{}",
            reason(&out[3])
        );
    }

    #[test]
    fn eventbridge_event_forwarded_through_sns_keeps_its_id() {
        let eb = include_str!("../../../events/rds/eventbridge-failover-started.json");
        let direct = one(eb);
        let via_sns = json!({"Records": [{
            "EventSource": "aws:sns",
            "Sns": {
                "Type": "Notification",
                "MessageId": "11111111-2222-3333-4444-555555555555",
                "TopicArn": "arn:aws:sns:us-east-1:123456789012:nbaops-dev-events",
                "Message": eb,
                "Timestamp": "2026-11-25T20:01:03.000Z"
            }
        }]});
        let out = classify(&via_sns);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].delivery(), Some(Delivery::Sns));
        assert_eq!(out[0].event_id(), direct.event_id());
    }

    #[test]
    fn sqs_wrapped_sns_body_is_understood() {
        let v: Value = serde_json::from_str(include_str!(
            "../../../events/cloudwatch-alarm/sns-single-metric-alarm.json"
        ))
        .unwrap();
        let body = v["Records"][0]["Sns"].clone();
        let out = classify(&body);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].kind(), "alarm");
    }

    #[test]
    fn sqs_batch_of_sns_notifications_and_eventbridge_events_is_understood() {
        let sns: Value = serde_json::from_str(include_str!(
            "../../../events/cloudwatch-alarm/sns-single-metric-alarm.json"
        ))
        .unwrap();
        let eb: Value = serde_json::from_str(include_str!(
            "../../../events/cloudwatch-alarm/eventbridge-single-metric-alarm.json"
        ))
        .unwrap();
        let record =
            |body: String| json!({"messageId": "m", "eventSource": "aws:sqs", "body": body});
        let batch = json!({"Records": [
            record(sns["Records"][0]["Sns"].to_string()),
            record(eb.to_string()),
            record("{\"hello\": 1}".into()),
            record("not json".into()),
            {"eventSource": "aws:sqs", "body": 7},
        ]});
        let out = classify(&batch);
        assert_eq!(out.len(), 5);
        assert_eq!(out[0].delivery(), Some(Delivery::Sns));
        assert_eq!(out[0].event_id(), classify(&sns)[0].event_id());
        assert_eq!(out[1].delivery(), Some(Delivery::EventBridge));
        assert_eq!(out[1].event_id(), classify(&eb)[0].event_id());
        for (i, n) in out[2..].iter().enumerate() {
            assert!(n.is_not_for_me(), "record {}: {n:?}", i + 2);
        }
    }

    #[test]
    fn sqs_work_items_are_ticks_delivered_by_the_queue() {
        let item = |body: &str| json!({"Records": [{"messageId": "m-1", "eventSource": "aws:sqs", "body": body}]});
        let body = json!({"nbaops": {"task": "pg-health", "target": "app", "account": "123456789012",
            "region": "us-east-1", "dispatched_at": "2026-06-17T14:00:00Z"}});
        let out = classify(&item(&body.to_string()));
        let Inbound::Schedule(tick) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(tick.delivery, Delivery::Queue);
        assert_eq!(tick.task().as_deref(), Some("pg-health"));
        assert_eq!(tick.param("target").as_deref(), Some("app"));
        assert_eq!(tick.param("account").as_deref(), Some("123456789012"));
        // No id of its own: the message's, the same on every redelivery.
        assert_eq!(tick.event_id, "sqs/m-1");
        let with_id = json!({"nbaops": {"task": "pg-health", "id": "x-1"}});
        assert_eq!(
            classify(&item(&with_id.to_string()))[0].event_id(),
            Some("x-1")
        );
        // A block that is not an object is refused with the reason.
        assert!(classify(&item("{\"nbaops\": 7}"))[0].is_not_for_me());
    }

    #[test]
    fn fixture_dir_resolves() {
        assert!(Path::new(&fixture_root()).join("not-for-me").is_dir());
    }
}

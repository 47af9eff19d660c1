//! Translates what alert-router receives — an SNS record carrying an `nbaops.alert/v1` or a
//! CloudWatch alarm notification (nbaops' own alarms publish to the alerts topic), a function URL
//! request (an acknowledgement link), the escalation-sweep schedule — into sends, ledger writes
//! and a reply.
//!
//! A CloudWatch alarm is routed like any alert: its severity from `alerts.alarm_severity` by
//! alarm name, its dedup key the alarm ARN; ALARM fires, OK resolves, INSUFFICIENT_DATA is only
//! noted; a notification older than the last one seen for the same alarm changes nothing.
//!
//! Sends are notifications, not infrastructure changes: they do not pass the guard, and the kill
//! switch does not stop them (an operator who stops every action still needs to hear about it).

use chrono::{DateTime, Duration as Span, Utc};
use serde_json::{json, Value};

use nbaops_shared::adapters::{AwsClients, HyperHttpPost, SdkDeadLetter};
use nbaops_shared::alerts::{Alert, AlertStatus, Severity, ALERT_SCHEMA};
use nbaops_shared::config::alerts::{self, AlertsConfig, Channel, EscalationTarget};
use nbaops_shared::events::{
    classify, AlarmChange, AlarmState, AlarmTrigger, Inbound, ScheduledTick,
};
use nbaops_shared::ports::{DeadLetter, HttpPost, Params};
use nbaops_shared::runtime::{Deps, Invocation, InvocationReport, RecordReport};
use nbaops_shared::telemetry::register_secret;
use nbaops_shared::{NbaopsError, Result};

use crate::channels::{with_retry, Attempt, Kind, Message, Sent};
use crate::link;
use crate::plan::{
    decide_firing, escalation_due, next_escalation, window_bucket, Firing, Incident, IncidentStatus,
};

pub const FUNCTION: &str = "alert-router";
/// Scheduler input `{"nbaops": {"task": "alert-escalation-sweep"}}` (every few minutes).
pub const SWEEP_TASK: &str = "alert-escalation-sweep";
/// Ledger partition listing the keys of open incidents, for the sweep.
pub const OPEN_PK: &str = "alert-open";
const STATE_SK: &str = "state";
/// Sort key of the last alarm notification seen for a key (its state and state-change time).
const ALARM_SEEN_SK: &str = "alarm-seen";
/// `source_function` of an alert made from a CloudWatch alarm.
pub const ALARM_SOURCE: &str = "cloudwatch-alarm";

pub fn incident_pk(dedup_key: &str) -> String {
    format!("alert#{dedup_key}")
}

/// What alert-router needs besides the shared `Deps`, built once at init.
pub struct Router {
    pub cfg: AlertsConfig,
    pub http: Box<dyn HttpPost>,
    pub dead_letter: Box<dyn DeadLetter>,
    pub slack_webhook_url: Option<String>,
    pub pagerduty_routing_key: Option<String>,
    /// Acknowledgement-link keys: the current one signs, the previous one (during a rotation)
    /// still verifies.
    pub keys: link::Keyring,
}

async fn read_secret(params: Option<&dyn Params>, name: &str) -> Result<Option<String>> {
    let Some(p) = params else {
        return Ok(None);
    };
    let v = p.get(name).await?.map(|v| v.trim().to_string());
    let v = v.filter(|v| !v.is_empty());
    match &v {
        Some(v) => register_secret(v),
        None => tracing::warn!(
            parameter = name,
            "secret not set: the channel it serves is unavailable"
        ),
    }
    Ok(v)
}

/// One link-signing key from its SSM SecureString, at least 16 bytes.
async fn signing_key(
    params: Option<&dyn Params>,
    name: &str,
    kid: &str,
) -> Result<Option<link::SigningKey>> {
    let Some(key) = read_secret(params, name).await? else {
        return Ok(None);
    };
    if key.len() < 16 {
        return Err(NbaopsError::config(format!(
            "{name}: the link-signing key must be at least 16 bytes"
        )));
    }
    Ok(Some(link::SigningKey {
        kid: kid.to_string(),
        key: key.into_bytes(),
    }))
}

/// Production init: the section config, the HTTP client, SQS, and the three secrets.
pub async fn init(deps: &Deps, aws: &AwsClients) -> Result<Router> {
    let cfg = alerts::from_settings(&deps.cfg.settings)?;
    Router::load(
        cfg,
        Box::new(HyperHttpPost::new()?),
        Box::new(SdkDeadLetter(aws.sqs())),
        deps.params.as_deref(),
    )
    .await
}

impl Router {
    pub async fn load(
        cfg: AlertsConfig,
        http: Box<dyn HttpPost>,
        dead_letter: Box<dyn DeadLetter>,
        params: Option<&dyn Params>,
    ) -> Result<Router> {
        let slack_webhook_url = read_secret(params, &cfg.secrets.slack_webhook_url).await?;
        if slack_webhook_url
            .as_ref()
            .is_some_and(|u| !u.starts_with("https://") && !u.starts_with("http://"))
        {
            // Never echo the value: it is the secret.
            return Err(NbaopsError::config(format!(
                "{}: expected an https:// Slack incoming-webhook URL",
                cfg.secrets.slack_webhook_url
            )));
        }
        let pagerduty_routing_key = read_secret(params, &cfg.secrets.pagerduty_routing_key).await?;
        let current = signing_key(params, &cfg.secrets.link_signing_key, &cfg.ack_key_id).await?;
        let previous = match &cfg.ack_previous_key_id {
            Some(kid) => {
                let k = signing_key(params, &cfg.secrets.previous_link_signing_key, kid).await?;
                if k.is_none() {
                    tracing::warn!(
                        kid = %kid,
                        "alerts.ack.previous_key_id is set but its key is not: links signed with it are refused"
                    );
                }
                k
            }
            None => None,
        };
        Ok(Router {
            cfg,
            http,
            dead_letter,
            slack_webhook_url,
            pagerduty_routing_key,
            keys: link::Keyring { current, previous },
        })
    }

    fn ack_url(&self, dedup_key: &str, now: DateTime<Utc>) -> Option<String> {
        let base = self.cfg.ack_base_url.as_deref()?;
        let key = self.keys.current.as_ref()?;
        Some(link::ack_link(
            base,
            key,
            dedup_key,
            now + Span::hours(self.cfg.ack_ttl_hours),
        ))
    }

    fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.cfg.http_timeout_ms)
    }

    async fn slack(&self, msg: &Message) -> Sent {
        let Some(url) = &self.slack_webhook_url else {
            return Sent::skipped("slack", "Slack webhook secret not set");
        };
        let body = msg.slack();
        post("slack", self, url, &body).await
    }

    async fn pagerduty(&self, msg: &Message) -> Sent {
        let Some(key) = &self.pagerduty_routing_key else {
            return Sent::skipped("pagerduty", "PagerDuty routing key secret not set");
        };
        let body = msg.pagerduty(key);
        post("pagerduty", self, &self.cfg.pagerduty_events_url, &body).await
    }

    async fn topic(&self, deps: &Deps, channel: &str, topic: Option<&str>, msg: &Message) -> Sent {
        let Some(topic) = topic else {
            return Sent::skipped(channel, "alerts.email_topic_arn not set");
        };
        let (subject, body) = msg.email();
        let mut attrs = std::collections::BTreeMap::new();
        attrs.insert("severity".to_string(), msg.severity.to_string());
        attrs.insert("dedup_key".to_string(), msg.dedup_key.clone());
        with_retry(channel, &self.cfg.retry, || async {
            match deps.notifier.publish(topic, &subject, &body, &attrs).await {
                Ok(id) => Attempt::Sent(format!("message {id}")),
                Err(
                    e @ NbaopsError::Dependency {
                        retryable: true, ..
                    },
                ) => Attempt::Retry(e.to_string()),
                Err(e) => Attempt::GiveUp(e.to_string()),
            }
        })
        .await
    }

    async fn send(&self, deps: &Deps, channel: Channel, msg: &Message) -> Sent {
        match channel {
            Channel::Slack => self.slack(msg).await,
            Channel::Email => {
                self.topic(deps, "email", self.cfg.email_topic_arn.as_deref(), msg)
                    .await
            }
            Channel::Pagerduty => self.pagerduty(msg).await,
        }
    }
}

async fn post(channel: &str, r: &Router, url: &str, body: &Value) -> Sent {
    with_retry(channel, &r.cfg.retry, || async {
        match r.http.post_json(url, body, r.timeout()).await {
            Ok(reply) if reply.is_success() => Attempt::Sent(format!("HTTP {}", reply.status)),
            Ok(reply) if reply.is_retryable() => Attempt::Retry(format!("HTTP {}", reply.status)),
            Ok(reply) => Attempt::GiveUp(format!(
                "HTTP {} {}",
                reply.status,
                reply.body.chars().take(200).collect::<String>()
            )),
            Err(e) => Attempt::Retry(e.to_string()),
        }
    })
    .await
}

/// The handler's reply: the usual report, or an HTTP response for a function URL request.
#[derive(Debug, Clone)]
pub enum Reply {
    Report(InvocationReport),
    Http {
        status: u16,
        content_type: &'static str,
        body: String,
    },
}

impl Reply {
    fn http(status: u16, body: impl Into<String>) -> Reply {
        Reply::Http {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }

    pub fn to_value(&self) -> Value {
        match self {
            Reply::Report(r) => serde_json::to_value(r).unwrap_or(Value::Null),
            Reply::Http {
                status,
                content_type,
                body,
            } => json!({
                "statusCode": status,
                "headers": {"content-type": content_type, "cache-control": "no-store"},
                "body": body,
            }),
        }
    }

    pub fn messages_sent(&self) -> usize {
        match self {
            Reply::Report(r) => r
                .records
                .iter()
                .flat_map(|x| &x.notes)
                .filter(|n| n.contains(": sent ("))
                .count(),
            Reply::Http { .. } => 0,
        }
    }
}

impl nbaops_shared::runtime::Reply for Reply {
    fn into_json(self) -> std::result::Result<Value, serde_json::Error> {
        Ok(self.to_value())
    }
    fn metrics(&self) -> Vec<(&'static str, f64, &'static str)> {
        vec![("AlertMessagesSent", self.messages_sent() as f64, "Count")]
    }
}

pub async fn handle(
    payload: Value,
    inv: Invocation,
    deps: &Deps,
    router: &Router,
) -> Result<Reply> {
    if payload.pointer("/requestContext/http/method").is_some() {
        return on_ack_request(&payload, &inv, deps, router).await;
    }
    let mut report = InvocationReport {
        function: FUNCTION.into(),
        env: deps.cfg.env.to_string(),
        records: vec![],
    };
    let mut undelivered: Vec<String> = vec![];
    if let Some(records) = payload.get("Records").and_then(Value::as_array) {
        for record in records {
            let event_id = record
                .pointer("/Sns/MessageId")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            match incoming_of(record) {
                Ok(Incoming::Alert(alert)) => {
                    let (rec, delivered) = on_alert(&alert, &event_id, &inv, deps, router).await?;
                    if !delivered {
                        undelivered.push(alert.dedup_key.clone());
                    }
                    report.records.push(rec);
                }
                Ok(Incoming::Alarm(alarm)) => {
                    let (rec, delivered) = on_alarm(&alarm, &event_id, &inv, deps, router).await?;
                    if !delivered {
                        undelivered.push(alarm_dedup_key(&alarm));
                    }
                    report.records.push(rec);
                }
                Err(reason) => report
                    .records
                    .push(RecordReport::not_for_me(&event_id, "sns", reason)),
            }
        }
    } else {
        for inbound in classify(&payload) {
            let rec = match inbound {
                Inbound::Schedule(tick) if tick.task().as_deref() == Some(SWEEP_TASK) => {
                    let (rec, failed) = sweep(&tick, &inv, deps, router).await?;
                    undelivered.extend(failed);
                    rec
                }
                Inbound::NotForMe(n) => RecordReport::not_for_me("", "unknown", n.reason),
                other => RecordReport::not_for_me(
                    other.event_id().unwrap_or(""),
                    other.kind(),
                    format!("{FUNCTION} takes {ALERT_SCHEMA} messages and CloudWatch alarm notifications from SNS, acknowledgement links and the '{SWEEP_TASK}' schedule"),
                ),
            };
            report.records.push(rec);
        }
    }
    if !undelivered.is_empty() {
        // The error makes Lambda count a failed invocation (and SNS/async retry it); the report is
        // in the log for the operator.
        let body = serde_json::to_string(&report).unwrap_or_default();
        tracing::error!(report = %body, keys = ?undelivered, "alerts undelivered on every channel");
        return Err(NbaopsError::Dependency {
            service: "alert channels",
            message: format!(
                "every channel failed for {}; {}",
                undelivered.join(", "),
                if router.cfg.dead_letter_queue_url.is_some() {
                    "sent to the dead-letter queue"
                } else {
                    "no dead-letter queue configured: the alert is in this log"
                }
            ),
            retryable: true,
        });
    }
    Ok(Reply::Report(report))
}

/// What an SNS record on the alerts topic carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Alert(Alert),
    Alarm(AlarmChange),
}

/// An `nbaops.alert/v1`, a CloudWatch alarm notification, or why the record is neither.
pub fn incoming_of(record: &Value) -> std::result::Result<Incoming, String> {
    let why = match alert_of(record) {
        Ok(alert) => return Ok(Incoming::Alert(alert)),
        Err(why) => why,
    };
    let has_schema = match record.pointer("/Sns/Message") {
        Some(Value::String(s)) => serde_json::from_str::<Value>(s)
            .ok()
            .is_some_and(|m| m.get("schema").is_some()),
        Some(m) => m.get("schema").is_some(),
        None => false,
    };
    if has_schema {
        // It claims a schema: what is wrong with it is the news, not that it is no alarm.
        return Err(why);
    }
    let neither = format!("neither an {ALERT_SCHEMA} nor a CloudWatch alarm notification");
    match classify(&json!({ "Records": [record] })).into_iter().next() {
        Some(Inbound::Alarm(a)) => Ok(Incoming::Alarm(a)),
        Some(Inbound::NotForMe(n)) => Err(format!("{neither}: {}", n.reason)),
        Some(other) => Err(format!("{neither} but a {} event", other.kind())),
        None => Err(format!("{neither}: {why}")),
    }
}

/// The alert inside an SNS record, or why this record is not one.
pub fn alert_of(record: &Value) -> std::result::Result<Alert, String> {
    let Some(sns) = record.get("Sns") else {
        return Err("not an SNS record".into());
    };
    let message = match sns.get("Message") {
        Some(Value::String(s)) => {
            serde_json::from_str::<Value>(s).map_err(|_| "SNS message is not JSON".to_string())?
        }
        Some(v @ Value::Object(_)) => v.clone(),
        _ => return Err("SNS record without a Message".into()),
    };
    match message.get("schema").and_then(Value::as_str) {
        Some(ALERT_SCHEMA) => {}
        Some(other) => {
            return Err(format!(
                "SNS message of schema '{other}', not {ALERT_SCHEMA}"
            ))
        }
        None => return Err(format!("SNS message is not an {ALERT_SCHEMA}")),
    }
    let alert: Alert =
        serde_json::from_value(message).map_err(|e| format!("malformed {ALERT_SCHEMA}: {e}"))?;
    if alert.dedup_key.trim().is_empty() {
        return Err(format!("{ALERT_SCHEMA} without a dedup_key"));
    }
    Ok(alert)
}

fn message_for(alert: &Alert, kind: Kind, ack_url: Option<String>) -> Message {
    let reason = alert
        .details
        .pointer("/alarm/reason")
        .and_then(Value::as_str)
        .filter(|r| !r.trim().is_empty())
        .map(|r| r.chars().take(300).collect());
    Message {
        reason,
        kind,
        severity: alert.severity,
        env: alert.env.clone(),
        dedup_key: alert.dedup_key.clone(),
        summary: alert.summary.clone(),
        resource: alert.resource.clone(),
        source_function: alert.source_function.clone(),
        actions_taken: alert.actions_taken.clone(),
        runbook: alert.runbook.clone(),
        details: alert.details.clone(),
        ack_url,
    }
}

fn message_from_incident(
    inc: &Incident,
    env: &str,
    kind: Kind,
    ack_url: Option<String>,
) -> Message {
    Message {
        kind,
        severity: inc.severity,
        env: env.to_string(),
        dedup_key: inc.dedup_key.clone(),
        summary: inc.summary.clone(),
        resource: inc.resource.clone(),
        source_function: inc.source_function.clone(),
        actions_taken: vec![],
        runbook: None,
        details: Value::Null,
        reason: None,
        ack_url,
    }
}

async fn load_incident(deps: &Deps, dedup_key: &str) -> Result<Option<Incident>> {
    let Some(v) = deps.ledger.get(&incident_pk(dedup_key), STATE_SK).await? else {
        return Ok(None);
    };
    match serde_json::from_value::<Incident>(v) {
        Ok(i) => Ok(Some(i)),
        Err(e) => {
            // A record we cannot read must not block new alerts: start over, say so.
            tracing::warn!(dedup_key, error = %e, "unreadable incident record: treated as absent");
            Ok(None)
        }
    }
}

async fn save_incident(
    deps: &Deps,
    router: &Router,
    inc: &Incident,
    now: DateTime<Utc>,
) -> Result<()> {
    let expires = (now + Span::days(router.cfg.record_ttl_days)).timestamp();
    let data = serde_json::to_value(inc)
        .map_err(|e| NbaopsError::InvalidEvent(format!("incident not serialisable: {e}")))?;
    deps.ledger
        .put(&incident_pk(&inc.dedup_key), STATE_SK, &data, Some(expires))
        .await?;
    if inc.is_closed() {
        deps.ledger.delete(OPEN_PK, &inc.dedup_key).await
    } else {
        deps.ledger
            .put(
                OPEN_PK,
                &inc.dedup_key,
                &json!({"severity": inc.severity, "opened_at": inc.opened_at}),
                Some(expires),
            )
            .await
    }
}

/// Sends `msg` on every channel; returns the outcomes (never fails: a failure is an outcome).
async fn fan_out(router: &Router, deps: &Deps, channels: &[Channel], msg: &Message) -> Vec<Sent> {
    let mut out = Vec::new();
    for c in channels {
        let s = router.send(deps, *c, msg).await;
        if !s.ok {
            tracing::warn!(channel = %s.channel, dedup_key = %msg.dedup_key, detail = %s.detail, "channel failed");
        }
        out.push(s);
    }
    out
}

/// The last resort: the dead-letter queue, else the log (at error level, the whole message).
async fn dead_letter(
    router: &Router,
    what: &str,
    subject: Value,
    sends: &[Sent],
    now: DateTime<Utc>,
) -> String {
    let body = json!({
        "schema": "nbaops.alert-undelivered/v1",
        "what": what,
        "failures": sends,
        "message": subject,
        "at": now,
    })
    .to_string();
    match &router.cfg.dead_letter_queue_url {
        Some(q) => match router.dead_letter.send(q, &body).await {
            Ok(id) => format!("dead-lettered (message {id})"),
            Err(e) => {
                tracing::error!(undelivered = %body, error = %e, "dead-letter queue failed too: alert kept in the log");
                format!("dead-letter queue failed too ({e}): alert kept in the log")
            }
        },
        None => {
            tracing::error!(undelivered = %body, "no dead-letter queue configured: alert kept in the log");
            "no dead-letter queue configured: alert kept in the log".into()
        }
    }
}

fn record_sends(inc: &mut Incident, sends: &[Sent], now: DateTime<Utc>, what: &str) {
    for s in sends {
        inc.channels.insert(
            s.channel.clone(),
            if s.ok {
                "sent".into()
            } else {
                format!("failed: {}", s.detail)
            },
        );
    }
    let ok: Vec<&str> = sends
        .iter()
        .filter(|s| s.ok)
        .map(|s| s.channel.as_str())
        .collect();
    inc.note(
        now,
        format!(
            "{what} -> {}",
            if ok.is_empty() {
                "no channel".to_string()
            } else {
                ok.join(",")
            }
        ),
    );
}

async fn on_alert(
    alert: &Alert,
    event_id: &str,
    inv: &Invocation,
    deps: &Deps,
    router: &Router,
) -> Result<(RecordReport, bool)> {
    let now = inv.now;
    let mut rec = RecordReport {
        event_id: event_id.to_string(),
        kind: "alert".into(),
        summary: format!(
            "{} {:?} '{}' ({})",
            alert.severity, alert.status, alert.summary, alert.dedup_key
        ),
        ..Default::default()
    };
    let prev = load_incident(deps, &alert.dedup_key).await?;
    if alert.status == AlertStatus::Resolved {
        let delivered = on_resolve(alert, prev, &mut rec, now, deps, router).await?;
        return Ok((rec, delivered));
    }
    let pk = incident_pk(&alert.dedup_key);
    let window = Span::minutes(router.cfg.dedup_window_minutes);
    let mut decision = decide_firing(prev.as_ref(), alert, now, window);
    // The claim is named after the state this decision saw: of two concurrent deliveries that
    // saw the same state, exactly one sends.
    let claim = match &prev {
        None => "notify#first".to_string(),
        Some(p) if p.is_closed() => format!(
            "notify#reopen#{}",
            p.resolved_at.map(|t| t.timestamp()).unwrap_or(0)
        ),
        Some(p) => format!(
            "notify#{}#{}#{}",
            p.opened_at.timestamp(),
            p.last_notified_at
                .map(|t| window_bucket(t, window).to_string())
                .unwrap_or_else(|| "never".into()),
            alert.severity
        ),
    };
    let claim_expiry = (now + window + Span::days(1)).timestamp();
    if decision != Firing::Duplicate
        && !deps
            .ledger
            .put_if_absent(
                &pk,
                &claim,
                &json!({"event_id": event_id, "at": now}),
                claim_expiry,
            )
            .await?
    {
        decision = Firing::Duplicate;
    }
    let mut inc = match (decision, prev) {
        (Firing::Duplicate, None) => {
            rec.notes.push(
                "a concurrent delivery of this key is sending it: nothing new to send".into(),
            );
            return Ok((rec, true));
        }
        (Firing::Duplicate, Some(mut p)) => {
            p.count += 1;
            p.last_seen_at = now;
            save_incident(deps, router, &p, now).await?;
            rec.notes.push(format!(
                "duplicate within {} min: counted ({} so far), nothing sent",
                router.cfg.dedup_window_minutes, p.count
            ));
            return Ok((rec, true));
        }
        (Firing::New, _) => Incident::open(alert, now),
        (Firing::Repeat, Some(mut p)) => {
            p.count += 1;
            p.last_seen_at = now;
            p.severity = p.severity.min(alert.severity);
            p.summary = alert.summary.clone();
            p
        }
        (Firing::Repeat, None) => Incident::open(alert, now),
    };
    let kind = if decision == Firing::New {
        Kind::Firing
    } else {
        Kind::Repeat { count: inc.count }
    };
    let channels = router.cfg.channels(inc.severity).to_vec();
    let msg = message_for(alert, kind, router.ack_url(&alert.dedup_key, now));
    let sends = fan_out(router, deps, &channels, &msg).await;
    rec.notes.extend(sends.iter().map(Sent::line));
    record_sends(
        &mut inc,
        &sends,
        now,
        if decision == Firing::New {
            "notified"
        } else {
            "re-notified"
        },
    );
    let delivered = sends.iter().any(|s| s.ok);
    if delivered {
        inc.last_notified_at = Some(now);
    } else {
        let where_to = dead_letter(
            router,
            "alert",
            serde_json::to_value(alert).unwrap_or_default(),
            &sends,
            now,
        )
        .await;
        rec.notes.push(format!("every channel failed: {where_to}"));
        inc.note(now, format!("undelivered: {where_to}"));
        // A retry of this invocation must be able to try again.
        deps.ledger.delete(&pk, &claim).await?;
    }
    save_incident(deps, router, &inc, now).await?;
    Ok((rec, delivered))
}

/// The dedup key of an alarm: its ARN; without one (a notification with nulls) the ARN rebuilt
/// from account and region, else the name.
pub fn alarm_dedup_key(a: &AlarmChange) -> String {
    if let Some(arn) = a.alarm_arn.as_deref().filter(|x| !x.trim().is_empty()) {
        return arn.to_string();
    }
    match (&a.region, &a.account) {
        (Some(region), Some(account)) => {
            format!(
                "arn:aws:cloudwatch:{region}:{account}:alarm:{}",
                a.alarm_name
            )
        }
        _ => format!("cloudwatch-alarm:{}", a.alarm_name),
    }
}

fn comparison_symbol(op: &str) -> &str {
    match op {
        "GreaterThanThreshold" => ">",
        "GreaterThanOrEqualToThreshold" => ">=",
        "LessThanThreshold" => "<",
        "LessThanOrEqualToThreshold" => "<=",
        other => other,
    }
}

/// A few words on what the alarm watches, for the title.
fn alarm_gist(a: &AlarmChange) -> Option<String> {
    match &a.trigger {
        AlarmTrigger::SingleMetric(s) => {
            let metric = [
                s.metric.namespace.as_deref(),
                s.metric.metric_name.as_deref(),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
            match (s.comparison.as_deref(), s.threshold) {
                (Some(op), Some(t)) if !metric.is_empty() => {
                    Some(format!("{metric} {} {t}", comparison_symbol(op)))
                }
                _ => Some(metric).filter(|m| !m.is_empty()),
            }
        }
        AlarmTrigger::MetricMath { metrics } => Some(
            metrics
                .iter()
                .find_map(|m| m.expression.as_deref())
                .map(|e| format!("metric math {e}"))
                .unwrap_or_else(|| "metric math".into()),
        ),
        AlarmTrigger::AnomalyDetection { .. } => Some(match a.metric_name() {
            Some(m) => format!("anomaly band of {m}"),
            None => "anomaly band".into(),
        }),
        AlarmTrigger::Composite { .. } => Some("composite alarm".into()),
        AlarmTrigger::Unknown => None,
    }
}

/// What the alarm is about: its dimensions (`FunctionName=nbaops-dev-pg-health`), else the alarm.
fn alarm_resource(a: &AlarmChange) -> String {
    let dims: Vec<String> = a
        .trigger
        .metrics()
        .into_iter()
        .flat_map(|m| m.dimensions.iter())
        .map(|(k, v)| format!("{k}={v}"))
        .fold(Vec::new(), |mut acc, d| {
            if !acc.contains(&d) {
                acc.push(d);
            }
            acc
        });
    if dims.is_empty() {
        format!("alarm:{}", a.alarm_name)
    } else {
        dims.join(",")
    }
}

/// The alert a CloudWatch alarm notification stands for (the alarm itself in `details.alarm`).
pub fn alert_from_alarm(a: &AlarmChange, severity: Severity, env: &str) -> Alert {
    // What it watches is news while it fires; "is OK (Errors > 0)" would only confuse.
    let summary = match alarm_gist(a).filter(|_| a.state != AlarmState::Ok) {
        Some(g) => format!("CloudWatch alarm {} is {} ({g})", a.alarm_name, a.state),
        None => format!("CloudWatch alarm {} is {}", a.alarm_name, a.state),
    };
    let mut alert = Alert::new(
        severity,
        env,
        ALARM_SOURCE,
        &alarm_resource(a),
        alarm_dedup_key(a),
        summary,
        a.changed_at,
    )
    .with_details(json!({ "alarm": a }));
    if a.state == AlarmState::Ok {
        alert.status = AlertStatus::Resolved;
    }
    let function = a.dimension("FunctionName").filter(|_| {
        a.trigger
            .metrics()
            .iter()
            .any(|m| m.namespace.as_deref() == Some("AWS/Lambda"))
    });
    if let Some(f) = function {
        alert = alert.with_runbook(format!(
            "the function's log group /aws/lambda/{f}; failed asynchronous events wait in the failed-events queue"
        ));
    }
    alert
}

/// A CloudWatch alarm notification: ALARM fires, OK resolves, INSUFFICIENT_DATA is noted; one
/// older than the last seen for the same alarm (SNS does not keep order) changes nothing.
async fn on_alarm(
    alarm: &AlarmChange,
    event_id: &str,
    inv: &Invocation,
    deps: &Deps,
    router: &Router,
) -> Result<(RecordReport, bool)> {
    let now = inv.now;
    let (severity, pattern) = router.cfg.alarm_severity(&alarm.alarm_name);
    let key = alarm_dedup_key(alarm);
    let summary = format!(
        "{severity} {} CloudWatch alarm '{}' (severity {}) ({key})",
        alarm.state,
        alarm.alarm_name,
        match pattern {
            Some(p) => format!("from pattern '{p}'"),
            None => "by default: no alerts.alarm_severity pattern matched".into(),
        }
    );
    let mut rec = RecordReport {
        event_id: event_id.to_string(),
        kind: "alarm".into(),
        summary: summary.clone(),
        ..Default::default()
    };
    let pk = incident_pk(&key);
    let seen_at = deps
        .ledger
        .get(&pk, ALARM_SEEN_SK)
        .await?
        .and_then(|v| v.get("changed_at").cloned())
        .and_then(|v| serde_json::from_value::<DateTime<Utc>>(v).ok());
    if let Some(seen) = seen_at.filter(|seen| *seen > alarm.changed_at) {
        rec.notes.push(format!(
            "{} of {} is older than the last notification of this alarm ({}): nothing changes",
            alarm.state,
            alarm.changed_at.to_rfc3339(),
            seen.to_rfc3339()
        ));
        return Ok((rec, true));
    }
    deps.ledger
        .put(
            &pk,
            ALARM_SEEN_SK,
            &json!({"state": alarm.state, "changed_at": alarm.changed_at, "event_id": event_id}),
            Some((now + Span::days(router.cfg.record_ttl_days)).timestamp()),
        )
        .await?;
    if alarm.state == AlarmState::InsufficientData {
        let what = format!(
            "CloudWatch alarm {} is INSUFFICIENT_DATA{}",
            alarm.alarm_name,
            if alarm.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", alarm.reason.chars().take(300).collect::<String>())
            }
        );
        match load_incident(deps, &key).await?.filter(|i| !i.is_closed()) {
            Some(mut inc) => {
                inc.note(now, &what);
                save_incident(deps, router, &inc, now).await?;
                rec.notes.push(
                    "INSUFFICIENT_DATA: noted on the open incident, nothing sent (the alarm neither fires nor clears)"
                        .into(),
                );
            }
            None => rec
                .notes
                .push("INSUFFICIENT_DATA with no open incident: noted here, nothing sent".into()),
        }
        tracing::info!(dedup_key = %key, "{what}");
        return Ok((rec, true));
    }
    let alert = alert_from_alarm(alarm, severity, &deps.cfg.env.to_string());
    let (mut inner, delivered) = on_alert(&alert, event_id, inv, deps, router).await?;
    inner.kind = rec.kind;
    inner.summary = summary;
    Ok((inner, delivered))
}

async fn on_resolve(
    alert: &Alert,
    prev: Option<Incident>,
    rec: &mut RecordReport,
    now: DateTime<Utc>,
    deps: &Deps,
    router: &Router,
) -> Result<bool> {
    let Some(mut inc) = prev.filter(|p| !p.is_closed()) else {
        rec.notes
            .push("resolve of an alert with no open incident: nothing to close".into());
        return Ok(true);
    };
    let pk = incident_pk(&alert.dedup_key);
    let claim = format!("resolve#{}", inc.opened_at.timestamp());
    let expiry = (now + Span::days(router.cfg.record_ttl_days)).timestamp();
    if !deps
        .ledger
        .put_if_absent(&pk, &claim, &json!({"at": now}), expiry)
        .await?
    {
        rec.notes
            .push("already being resolved by a concurrent delivery".into());
        return Ok(true);
    }
    // Close it wherever it was opened: the channels of the incident's (highest) severity.
    let channels = router.cfg.channels(inc.severity).to_vec();
    let mut msg = message_for(alert, Kind::Resolved, None);
    msg.severity = inc.severity;
    let sends = fan_out(router, deps, &channels, &msg).await;
    rec.notes.extend(sends.iter().map(Sent::line));
    if !sends.iter().any(|s| s.ok) {
        let where_to = dead_letter(
            router,
            "resolve",
            serde_json::to_value(alert).unwrap_or_default(),
            &sends,
            now,
        )
        .await;
        rec.notes.push(format!("every channel failed: {where_to}"));
        deps.ledger.delete(&pk, &claim).await?;
        return Ok(false);
    }
    record_sends(&mut inc, &sends, now, "resolved");
    inc.status = IncidentStatus::Resolved;
    inc.resolved_at = Some(now);
    inc.last_seen_at = now;
    save_incident(deps, router, &inc, now).await?;
    rec.notes.push(format!(
        "incident closed (open {} min, {} deliveries, escalation level {})",
        (now - inc.opened_at).num_minutes(),
        inc.count,
        inc.escalation_level
    ));
    Ok(true)
}

async fn on_ack_request(
    payload: &Value,
    inv: &Invocation,
    deps: &Deps,
    router: &Router,
) -> Result<Reply> {
    let method = payload
        .pointer("/requestContext/http/method")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_ascii_uppercase();
    let query: std::collections::BTreeMap<String, String> = payload
        .get("queryStringParameters")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default();
    if router.keys.is_empty() {
        return Ok(Reply::http(403, "acknowledgement links are not configured"));
    }
    let key = match link::verify(&router.keys, &query, inv.now) {
        Ok(k) => k,
        Err(refusal) => {
            let source_ip = payload
                .pointer("/requestContext/http/sourceIp")
                .and_then(Value::as_str)
                .unwrap_or("");
            let kid = query.get("kid").map(String::as_str).unwrap_or("");
            tracing::warn!(?refusal, source_ip, kid, "acknowledgement link refused");
            let why = match refusal {
                link::Refusal::Missing => "this link is incomplete",
                link::Refusal::UnknownKey => {
                    "this link was signed with a key that is no longer accepted"
                }
                link::Refusal::Forged => "this link is not valid",
                link::Refusal::Expired => "this link has expired",
            };
            return Ok(Reply::http(403, why));
        }
    };
    match method.as_str() {
        // Chat apps and mail scanners fetch links: a GET only shows the button that POSTs.
        "GET" | "HEAD" => {
            let raw_query = payload
                .get("rawQueryString")
                .and_then(Value::as_str)
                .unwrap_or("");
            let path = payload
                .get("rawPath")
                .and_then(Value::as_str)
                .unwrap_or("/");
            let action = format!("{path}?{raw_query}")
                .replace('"', "%22")
                .replace('<', "%3C");
            let shown = key
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;");
            Ok(Reply::Http {
                status: 200,
                content_type: "text/html; charset=utf-8",
                body: format!("<!doctype html><title>Acknowledge alert</title><p>Alert <code>{shown}</code></p><form method=\"post\" action=\"{action}\"><button type=\"submit\">Acknowledge</button></form>"),
            })
        }
        "POST" => acknowledge(&key, payload, inv, deps, router).await,
        _ => Ok(Reply::http(405, "use GET or POST")),
    }
}

async fn acknowledge(
    key: &str,
    payload: &Value,
    inv: &Invocation,
    deps: &Deps,
    router: &Router,
) -> Result<Reply> {
    let now = inv.now;
    let Some(mut inc) = load_incident(deps, key).await? else {
        return Ok(Reply::http(404, "no such alert"));
    };
    match inc.status {
        IncidentStatus::Resolved => return Ok(Reply::http(200, "already resolved")),
        IncidentStatus::Acknowledged => {
            return Ok(Reply::http(
                200,
                format!(
                    "already acknowledged at {}",
                    inc.acknowledged_at
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_default()
                ),
            ))
        }
        IncidentStatus::Open | IncidentStatus::Escalated => {}
    }
    let by = format!(
        "link from {}",
        payload
            .pointer("/requestContext/http/sourceIp")
            .and_then(Value::as_str)
            .unwrap_or("?")
    );
    inc.status = IncidentStatus::Acknowledged;
    inc.acknowledged_at = Some(now);
    inc.acknowledged_by = Some(by.clone());
    inc.note(now, format!("acknowledged by {by}"));
    save_incident(deps, router, &inc, now).await?;
    // Tell the channels that page or thread (best effort: the acknowledgement itself is recorded).
    let env = deps.cfg.env.to_string();
    let msg = message_from_incident(&inc, &env, Kind::Acknowledged { by: "link".into() }, None);
    let mut told = vec![];
    for c in router.cfg.channels(inc.severity) {
        if matches!(c, Channel::Slack | Channel::Pagerduty) {
            let s = router.send(deps, *c, &msg).await;
            told.push(s.line());
        }
    }
    tracing::info!(dedup_key = key, channels = ?told, "alert acknowledged");
    Ok(Reply::http(200, format!("acknowledged: {key}")))
}

async fn sweep(
    tick: &ScheduledTick,
    inv: &Invocation,
    deps: &Deps,
    router: &Router,
) -> Result<(RecordReport, Vec<String>)> {
    // The tick's scheduled time, never earlier than now: a late tick still sees the present.
    let now = tick.at.max(inv.now);
    let mut rec = RecordReport {
        event_id: tick.event_id.clone(),
        kind: "schedule".into(),
        summary: format!("escalation sweep at {}", now.to_rfc3339()),
        ..Default::default()
    };
    let mut failed = vec![];
    let open = deps.ledger.query(OPEN_PK, "").await?;
    let env = deps.cfg.env.to_string();
    for (key, _) in open {
        let Some(mut inc) = load_incident(deps, &key).await? else {
            deps.ledger.delete(OPEN_PK, &key).await?;
            continue;
        };
        if inc.is_closed() {
            deps.ledger.delete(OPEN_PK, &key).await?;
            continue;
        }
        let Some(level) = next_escalation(&router.cfg, &inc, now) else {
            if matches!(inc.status, IncidentStatus::Open | IncidentStatus::Escalated)
                && inc.escalation_level < router.cfg.chain.len()
            {
                let due = escalation_due(
                    &router.cfg,
                    inc.severity,
                    inc.opened_at,
                    inc.escalation_level + 1,
                );
                rec.notes.push(format!(
                    "{key}: {:?}, next escalation due {}",
                    inc.status,
                    due.to_rfc3339()
                ));
            }
            continue;
        };
        let claim = format!("escalation#{}#{level}", inc.opened_at.timestamp());
        let expiry = (now + Span::days(router.cfg.record_ttl_days)).timestamp();
        if !deps
            .ledger
            .put_if_absent(&incident_pk(&key), &claim, &json!({"at": now}), expiry)
            .await?
        {
            rec.notes
                .push(format!("{key}: level {level} already escalated"));
            continue;
        }
        let Some(target) = router.cfg.chain.get(level - 1) else {
            continue;
        };
        let msg = message_from_incident(
            &inc,
            &env,
            Kind::Escalation {
                level,
                name: target.name.clone(),
                mention: target.mention.clone(),
            },
            router.ack_url(&key, now),
        );
        let mut sends = vec![];
        for t in &target.notify {
            sends.push(match t {
                EscalationTarget::Slack => router.slack(&msg).await,
                EscalationTarget::Email => {
                    router
                        .topic(deps, "email", router.cfg.email_topic_arn.as_deref(), &msg)
                        .await
                }
                EscalationTarget::Pagerduty => router.pagerduty(&msg).await,
                EscalationTarget::Topic(arn) => router.topic(deps, "sns", Some(arn), &msg).await,
            });
        }
        rec.notes.push(format!(
            "{key}: unacknowledged {} min after opening ({}): escalated to level {level} ({})",
            (now - inc.opened_at).num_minutes(),
            inc.severity,
            target.name
        ));
        rec.notes
            .extend(sends.iter().map(|s| format!("{key}: {}", s.line())));
        inc.escalation_level = level;
        inc.status = IncidentStatus::Escalated;
        inc.escalated_at = Some(now);
        record_sends(
            &mut inc,
            &sends,
            now,
            &format!("escalated to level {level} ({})", target.name),
        );
        if !sends.iter().any(|s| s.ok) {
            let where_to = dead_letter(
                router,
                "escalation",
                serde_json::to_value(&inc).unwrap_or_default(),
                &sends,
                now,
            )
            .await;
            rec.notes
                .push(format!("{key}: every channel failed: {where_to}"));
            failed.push(key.clone());
        }
        save_incident(deps, router, &inc, now).await?;
    }
    if rec.notes.is_empty() {
        rec.notes.push("no open alert".into());
    }
    Ok((rec, failed))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use nbaops_shared::alerts::Severity;
    use nbaops_shared::config::{layer, Config, Env};
    use nbaops_shared::fakes::*;
    use nbaops_shared::guard::Switches;

    const SLACK: &str = "https://hooks.slack.test/services/T000/B000/SECRETSECRET";
    const PD: &str = "https://pd.test/v2/enqueue";
    const EMAIL: &str = "arn:aws:sns:us-east-1:123456789012:nbaops-dev-email";
    const DLQ: &str = "https://sqs.test/123456789012/nbaops-dev-alerts-dlq";
    const SIGNING: &str = "unit-test-signing-key-0123456789";

    struct World {
        deps: Deps,
        router: Router,
        http: &'static FakeHttpPost,
        dlq: &'static FakeDeadLetter,
        sns: &'static FakeNotifier,
    }

    async fn world(extra: &[(&str, &str)]) -> World {
        let mut vars: BTreeMap<String, String> = [
            ("NBAOPS_ALERTS__EMAIL_TOPIC_ARN", EMAIL),
            ("NBAOPS_ALERTS__DEAD_LETTER_QUEUE_URL", DLQ),
            ("NBAOPS_ALERTS__PAGERDUTY__EVENTS_URL", PD),
            ("NBAOPS_ALERTS__ACK__BASE_URL", "https://ack.test/"),
            ("NBAOPS_ALERTS__RETRY__BASE_MS", "1"),
            ("NBAOPS_ALERTS__RETRY__MAX_MS", "2"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in extra {
            vars.insert(k.to_string(), v.to_string());
        }
        let settings = layer(Env::Dev, &vars, &BTreeMap::new()).unwrap();
        let cfg = Config::from_settings(Env::Dev, FUNCTION, settings).unwrap();
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
        let sns = leak(FakeNotifier::default());
        let router = Router::load(
            alerts::from_settings(&cfg.settings).unwrap(),
            Box::new(Shared(http)),
            Box::new(Shared(dlq)),
            Some(&params),
        )
        .await
        .unwrap();
        let deps = Deps {
            cfg,
            asg: Box::new(FakeAutoScaling::default()),
            rds: Box::new(FakeRds::default()),
            cache: Box::new(FakeElastiCache::default()),
            notifier: Box::new(Shared(sns)),
            params: Some(Box::new(params)),
            ledger: Box::new(FakeLedger::default()),
            switches: Switches::default(),
        };
        World {
            deps,
            router,
            http,
            dlq,
            sns,
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn inv(at: &str) -> Invocation {
        Invocation {
            request_id: "req".into(),
            now: t(at),
            deadline: None,
        }
    }

    fn sns_alert(a: &Alert, id: &str) -> Value {
        json!({"Records": [{"EventSource": "aws:sns", "Sns": {
            "Type": "Notification", "MessageId": id,
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:nbaops-dev-alerts",
            "Message": serde_json::to_string(a).unwrap()}}]})
    }

    fn alert(sev: Severity, key: &str) -> Alert {
        Alert::new(
            sev,
            "dev",
            "scale-on-alarm",
            "asg:nbaops-dev-web",
            key,
            "web down",
            t("2026-11-25T10:00:00Z"),
        )
    }

    async fn run(w: &World, payload: Value, at: &str) -> Result<Reply> {
        handle(payload, inv(at), &w.deps, &w.router).await
    }

    fn report(r: Result<Reply>) -> InvocationReport {
        match r.unwrap() {
            Reply::Report(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn routing_per_severity() {
        let w = world(&[]).await;
        report(
            run(
                &w,
                sns_alert(&alert(Severity::P1, "k1"), "m1"),
                "2026-11-25T10:00:00Z",
            )
            .await,
        );
        assert_eq!(w.http.requests_to(SLACK).len(), 1);
        assert_eq!(w.http.requests_to(PD).len(), 1);
        assert_eq!(w.http.requests_to(PD)[0]["event_action"], "trigger");
        assert_eq!(w.sns.published().len(), 1, "email for P1");
        assert_eq!(w.sns.published()[0].topic_arn, EMAIL);

        report(
            run(
                &w,
                sns_alert(&alert(Severity::P2, "k2"), "m2"),
                "2026-11-25T10:00:00Z",
            )
            .await,
        );
        assert_eq!(
            (
                w.http.requests_to(SLACK).len(),
                w.http.requests_to(PD).len(),
                w.sns.published().len()
            ),
            (2, 1, 2)
        );
        report(
            run(
                &w,
                sns_alert(&alert(Severity::P3, "k3"), "m3"),
                "2026-11-25T10:00:00Z",
            )
            .await,
        );
        report(
            run(
                &w,
                sns_alert(&alert(Severity::P4, "k4"), "m4"),
                "2026-11-25T10:00:00Z",
            )
            .await,
        );
        assert_eq!(
            (
                w.http.requests_to(SLACK).len(),
                w.http.requests_to(PD).len(),
                w.sns.published().len()
            ),
            (4, 1, 2)
        );
        // Every message carries a link that verifies.
        let text = w.http.requests_to(SLACK)[0]["text"]
            .as_str()
            .unwrap()
            .to_string();
        let url = text.split("<").last().unwrap().split('|').next().unwrap();
        assert_eq!(
            link::verify(
                &w.router.keys,
                &link::query_of(url),
                t("2026-11-25T10:00:00Z")
            ),
            Ok("k1".into())
        );
    }

    #[tokio::test]
    async fn duplicate_counts_then_resolve_closes_everywhere() {
        let w = world(&[]).await;
        let a = alert(Severity::P1, "db#down");
        report(run(&w, sns_alert(&a, "m1"), "2026-11-25T10:00:00Z").await);
        let r = report(run(&w, sns_alert(&a, "m2"), "2026-11-25T10:10:00Z").await);
        assert!(
            r.records[0].notes[0].contains("duplicate"),
            "{:?}",
            r.records[0]
        );
        assert_eq!(w.http.requests().len(), 2, "nothing new sent");
        let inc = load_incident(&w.deps, "db#down").await.unwrap().unwrap();
        assert_eq!((inc.count, inc.status), (2, IncidentStatus::Open));

        let mut resolved = a.clone();
        resolved.status = AlertStatus::Resolved;
        report(run(&w, sns_alert(&resolved, "m3"), "2026-11-25T10:20:00Z").await);
        let pd = w.http.requests_to(PD);
        assert_eq!(pd.last().unwrap()["event_action"], "resolve");
        assert_eq!(pd.last().unwrap()["dedup_key"], "db#down");
        assert!(w.http.requests_to(SLACK).last().unwrap()["text"]
            .as_str()
            .unwrap()
            .contains("RESOLVED"));
        let inc = load_incident(&w.deps, "db#down").await.unwrap().unwrap();
        assert_eq!(inc.status, IncidentStatus::Resolved);
        assert_eq!(inc.resolved_at, Some(t("2026-11-25T10:20:00Z")));
        assert!(w.deps.ledger.query(OPEN_PK, "").await.unwrap().is_empty());
        // A second resolve sends nothing; a new firing opens a new incident.
        let before = w.http.requests().len();
        report(run(&w, sns_alert(&resolved, "m4"), "2026-11-25T10:21:00Z").await);
        assert_eq!(w.http.requests().len(), before);
        report(run(&w, sns_alert(&a, "m5"), "2026-11-25T10:22:00Z").await);
        assert_eq!(w.http.requests().len(), before + 2);
        // After the window, a repeat re-notifies on the same incident.
        report(run(&w, sns_alert(&a, "m6"), "2026-11-25T11:30:00Z").await);
        let inc = load_incident(&w.deps, "db#down").await.unwrap().unwrap();
        assert_eq!((inc.count, inc.opened_at), (2, t("2026-11-25T10:22:00Z")));
        assert!(w.http.requests_to(SLACK).last().unwrap()["text"]
            .as_str()
            .unwrap()
            .contains("still firing"));
    }

    #[tokio::test]
    async fn retry_then_dead_letter_and_error() {
        let w = world(&[]).await;
        w.http.fail(SLACK, Scripted::Status(500), 2);
        report(
            run(
                &w,
                sns_alert(&alert(Severity::P3, "k"), "m1"),
                "2026-11-25T10:00:00Z",
            )
            .await,
        );
        assert_eq!(
            w.http.requests_to(SLACK).len(),
            3,
            "two failures then success"
        );
        assert!(w.dlq.sent().is_empty());

        w.http.fail(SLACK, Scripted::Status(429), 3);
        let err = run(
            &w,
            sns_alert(&alert(Severity::P3, "k2"), "m2"),
            "2026-11-25T10:00:00Z",
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("every channel failed"), "{err}");
        let dlq = w.dlq.sent();
        assert_eq!(dlq.len(), 1);
        assert_eq!(dlq[0].0, DLQ);
        assert!(dlq[0].1.contains("\"dedup_key\":\"k2\""), "{}", dlq[0].1);
        assert!(
            !dlq[0].1.contains("SECRETSECRET"),
            "no webhook URL in the dead letter"
        );
        // The retry of the invocation tries again (the claim was released) and succeeds.
        report(
            run(
                &w,
                sns_alert(&alert(Severity::P3, "k2"), "m2"),
                "2026-11-25T10:00:05Z",
            )
            .await,
        );
        assert_eq!(
            load_incident(&w.deps, "k2")
                .await
                .unwrap()
                .unwrap()
                .last_notified_at,
            Some(t("2026-11-25T10:00:05Z"))
        );

        // A 4xx is not retried.
        w.http.fail(SLACK, Scripted::Status(404), 1);
        let before = w.http.requests_to(SLACK).len();
        let _ = run(
            &w,
            sns_alert(&alert(Severity::P4, "k3"), "m3"),
            "2026-11-25T10:00:00Z",
        )
        .await;
        assert_eq!(w.http.requests_to(SLACK).len(), before + 1);
    }

    fn url_request(method: &str, query: &BTreeMap<String, String>) -> Value {
        json!({"version": "2.0", "rawPath": "/", "rawQueryString": "",
               "requestContext": {"http": {"method": method, "path": "/", "sourceIp": "203.0.113.9"}},
               "queryStringParameters": query})
    }

    fn status(r: Reply) -> u16 {
        match r {
            Reply::Http { status, .. } => status,
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn acknowledgement_link_valid_forged_expired_then_sweep_skips() {
        let w = world(&[]).await;
        report(
            run(
                &w,
                sns_alert(&alert(Severity::P1, "k"), "m1"),
                "2026-11-25T10:00:00Z",
            )
            .await,
        );
        let text = w.http.requests_to(SLACK)[0]["text"]
            .as_str()
            .unwrap()
            .to_string();
        let url = text
            .split('<')
            .next_back()
            .unwrap()
            .split('|')
            .next()
            .unwrap()
            .to_string();
        let q = link::query_of(&url);
        let mut forged = q.clone();
        forged.insert("key".into(), "other".into());
        assert_eq!(
            status(
                run(&w, url_request("POST", &forged), "2026-11-25T10:01:00Z")
                    .await
                    .unwrap()
            ),
            403
        );
        // Expired (the link lives 24 h).
        assert_eq!(
            status(
                run(&w, url_request("POST", &q), "2026-11-26T10:01:00Z")
                    .await
                    .unwrap()
            ),
            403
        );
        // A GET (a chat app unfurling the link) changes nothing.
        assert_eq!(
            status(
                run(&w, url_request("GET", &q), "2026-11-25T10:01:00Z")
                    .await
                    .unwrap()
            ),
            200
        );
        assert_eq!(
            load_incident(&w.deps, "k").await.unwrap().unwrap().status,
            IncidentStatus::Open
        );
        assert_eq!(
            status(
                run(&w, url_request("POST", &q), "2026-11-25T10:02:00Z")
                    .await
                    .unwrap()
            ),
            200
        );
        let inc = load_incident(&w.deps, "k").await.unwrap().unwrap();
        assert_eq!(inc.status, IncidentStatus::Acknowledged);
        assert_eq!(
            w.http.requests_to(PD).last().unwrap()["event_action"],
            "acknowledge"
        );
        // Acknowledged: the sweep does not escalate it.
        let tick = json!({"nbaops": {"task": SWEEP_TASK, "at": "2026-11-25T11:00:00Z"}});
        let before = w.http.requests().len();
        report(run(&w, tick, "2026-11-25T10:03:00Z").await);
        assert_eq!(w.http.requests().len(), before);
    }

    #[tokio::test]
    async fn sweep_escalates_once_per_level_even_with_kill_switch() {
        let w = world(&[("NBAOPS_GUARD__KILL_SWITCH", "true")]).await;
        report(
            run(
                &w,
                sns_alert(&alert(Severity::P1, "k"), "m1"),
                "2026-11-25T10:00:00Z",
            )
            .await,
        );
        assert_eq!(
            w.http.requests_to(SLACK).len(),
            1,
            "alerts flow with the kill switch on"
        );
        let tick = |at: &str| json!({"nbaops": {"task": SWEEP_TASK, "at": at}});
        let r = report(run(&w, tick("2026-11-25T10:14:00Z"), "2026-11-25T10:14:00Z").await);
        assert!(
            r.records[0].notes[0].contains("next escalation due"),
            "{:?}",
            r.records[0].notes
        );
        report(run(&w, tick("2026-11-25T10:16:00Z"), "2026-11-25T10:14:00Z").await);
        let slack = w.http.requests_to(SLACK);
        assert_eq!(slack.len(), 2);
        assert!(slack[1]["text"]
            .as_str()
            .unwrap()
            .contains("ESCALATED to level 1 (team-lead)"));
        assert!(slack[1]["text"].as_str().unwrap().contains("@team-lead"));
        // Same level twice: nothing.
        report(run(&w, tick("2026-11-25T10:20:00Z"), "2026-11-25T10:14:00Z").await);
        assert_eq!(w.http.requests_to(SLACK).len(), 2);
        // Level 2 after two response times, then the end of the chain.
        report(run(&w, tick("2026-11-25T10:31:00Z"), "2026-11-25T10:14:00Z").await);
        report(run(&w, tick("2026-11-25T12:00:00Z"), "2026-11-25T10:14:00Z").await);
        assert_eq!(w.http.requests_to(SLACK).len(), 3);
        let inc = load_incident(&w.deps, "k").await.unwrap().unwrap();
        assert_eq!(
            (inc.status, inc.escalation_level),
            (IncidentStatus::Escalated, 2)
        );
        assert_eq!(
            w.sns.published().len(),
            3,
            "email at open and at each level"
        );
    }

    fn alarm_fixture(name: &str) -> Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../events/cloudwatch-alarm")
            .join(name);
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    /// The fixture with another state, state-change time and SNS message id.
    fn alarm_as(name: &str, state: &str, changed: &str, id: &str) -> Value {
        let mut v = alarm_fixture(name);
        let sns = &mut v["Records"][0]["Sns"];
        let mut msg: Value = serde_json::from_str(sns["Message"].as_str().unwrap()).unwrap();
        msg["NewStateValue"] = json!(state);
        msg["StateChangeTime"] = json!(changed);
        sns["Message"] = json!(msg.to_string());
        sns["MessageId"] = json!(id);
        v
    }

    const PG_ERRORS_ARN: &str =
        "arn:aws:cloudwatch:us-east-1:123456789012:alarm:nbaops-dev-pg-health-errors";

    fn slack_texts(w: &World) -> Vec<String> {
        w.http
            .requests_to(SLACK)
            .iter()
            .map(|b| b["text"].as_str().unwrap_or("").to_string())
            .collect()
    }

    #[tokio::test]
    async fn every_cloudwatch_alarm_shape_on_the_alerts_topic_is_routed() {
        // (fixture, severity, dedup key, pages?)
        let cases = [
            ("sns-single-metric-alarm.json", "P3", "arn:aws:cloudwatch:us-east-1:123456789012:alarm:nbaops-dev-web-cpu-high", false),
            ("sns-metric-math.json", "P3", "arn:aws:cloudwatch:us-east-1:123456789012:alarm:nbaops-dev-web-5xx-rate", false),
            ("sns-anomaly-detection.json", "P3", "arn:aws:cloudwatch:us-east-1:123456789012:alarm:nbaops-dev-web-network-anomaly", false),
            ("sns-composite.json", "P3", "arn:aws:cloudwatch:us-east-1:123456789012:alarm:nbaops-dev-web-degraded", false),
            ("sns-memcached-memory-alarm.json", "P3", "arn:aws:cloudwatch:us-east-1:123456789012:alarm:nbaops-dev-cache-memory-low", false),
            // No ARN, account "None": keyed by the name.
            ("sns-nulls-and-none.json", "P3", "cloudwatch-alarm:nbaops-dev-db-cpu-high", false),
            ("sns-nbaops-function-errors-alarm.json", "P2", PG_ERRORS_ARN, false),
            ("sns-transaction-ids-alarm.json", "P1", "arn:aws:cloudwatch:us-east-1:123456789012:alarm:nbaops-dev-db-transaction-ids-critical", true),
        ];
        for (i, (fixture, sev, key, pages)) in cases.into_iter().enumerate() {
            let w = world(&[]).await;
            let r = report(run(&w, alarm_fixture(fixture), "2026-11-25T22:00:00Z").await);
            assert!(
                r.records[0].not_for_me.is_none(),
                "{fixture}: {:?}",
                r.records[0]
            );
            let slack = slack_texts(&w);
            assert_eq!(slack.len(), 1, "{fixture}");
            assert!(
                slack[0].contains(&format!("[{sev}][dev]")),
                "{fixture}: {}",
                slack[0]
            );
            assert!(slack[0].contains(key), "{fixture}: {}", slack[0]);
            let inc = load_incident(&w.deps, key).await.unwrap().unwrap();
            assert_eq!(
                (inc.severity.to_string(), inc.status),
                (sev.to_string(), IncidentStatus::Open),
                "{fixture}"
            );
            assert_eq!(
                w.http.requests_to(PD).len(),
                usize::from(pages),
                "{fixture}"
            );
            assert_eq!(
                w.sns.published().len(),
                usize::from(sev != "P3"),
                "{fixture}: email for P1/P2"
            );
            assert!(
                r.records[0].summary.contains(sev),
                "case {i}: {}",
                r.records[0].summary
            );
        }
    }

    #[tokio::test]
    async fn alarm_then_repeat_insufficient_data_ok_and_a_stale_alarm() {
        let w = world(&[]).await;
        let f = "sns-nbaops-function-errors-alarm.json";
        report(
            run(
                &w,
                alarm_as(f, "ALARM", "2026-11-25T20:41:05.412+0000", "m1"),
                "2026-11-25T20:41:06Z",
            )
            .await,
        );
        assert_eq!(slack_texts(&w).len(), 1);
        assert!(
            slack_texts(&w)[0].starts_with("*[P2][dev]"),
            "{:?}",
            slack_texts(&w)
        );
        assert!(w.http.requests_to(PD).is_empty());
        assert_eq!(w.sns.published().len(), 1);

        // The same ALARM again (a second notification, a redelivery): a duplicate.
        let r = report(
            run(
                &w,
                alarm_as(f, "ALARM", "2026-11-25T20:41:05.412+0000", "m2"),
                "2026-11-25T20:42:00Z",
            )
            .await,
        );
        assert!(
            r.records[0].notes.iter().any(|n| n.contains("duplicate")),
            "{:?}",
            r.records[0]
        );
        assert_eq!(slack_texts(&w).len(), 1);

        // INSUFFICIENT_DATA: noted on the incident, nothing sent, still open.
        let r = report(
            run(
                &w,
                alarm_as(f, "INSUFFICIENT_DATA", "2026-11-25T20:45:00.000+0000", "m3"),
                "2026-11-25T20:45:01Z",
            )
            .await,
        );
        assert!(r.records[0].not_for_me.is_none());
        assert!(
            r.records[0]
                .notes
                .iter()
                .any(|n| n.contains("INSUFFICIENT_DATA")),
            "{:?}",
            r.records[0]
        );
        assert_eq!((slack_texts(&w).len(), w.sns.published().len()), (1, 1));
        let inc = load_incident(&w.deps, PG_ERRORS_ARN)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(inc.status, IncidentStatus::Open);
        assert!(
            inc.history.iter().any(|h| h.contains("INSUFFICIENT_DATA")),
            "{:?}",
            inc.history
        );

        // OK resolves the same incident where it was opened (Slack and email).
        let ok = alarm_as(
            "sns-nbaops-function-errors-ok.json",
            "OK",
            "2026-11-25T20:52:05.090+0000",
            "m4",
        );
        report(run(&w, ok, "2026-11-25T20:52:06Z").await);
        let slack = slack_texts(&w);
        assert_eq!(slack.len(), 2);
        assert!(slack[1].starts_with("*RESOLVED [P2][dev]"), "{}", slack[1]);
        assert_eq!(w.sns.published().len(), 2);
        let inc = load_incident(&w.deps, PG_ERRORS_ARN)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(inc.status, IncidentStatus::Resolved);
        assert_eq!(inc.resolved_at, Some(t("2026-11-25T20:52:06Z")));

        // An ALARM older than that OK arriving late (SNS does not keep order) reopens nothing.
        let r = report(
            run(
                &w,
                alarm_as(f, "ALARM", "2026-11-25T20:50:00.000+0000", "m5"),
                "2026-11-25T20:53:00Z",
            )
            .await,
        );
        assert!(
            r.records[0].notes.iter().any(|n| n.contains("older than")),
            "{:?}",
            r.records[0]
        );
        assert_eq!(slack_texts(&w).len(), 2);
        // A newer ALARM opens a new incident.
        report(
            run(
                &w,
                alarm_as(f, "ALARM", "2026-11-25T21:30:00.000+0000", "m6"),
                "2026-11-25T21:30:01Z",
            )
            .await,
        );
        assert_eq!(slack_texts(&w).len(), 3);
        let inc = load_incident(&w.deps, PG_ERRORS_ARN)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (inc.status, inc.opened_at),
            (IncidentStatus::Open, t("2026-11-25T21:30:01Z"))
        );

        // OK of an alarm with no open incident, INSUFFICIENT_DATA with none: nothing sent.
        let w = world(&[]).await;
        report(
            run(
                &w,
                alarm_as(f, "OK", "2026-11-25T20:41:05.412+0000", "n1"),
                "2026-11-25T20:41:06Z",
            )
            .await,
        );
        let r = report(
            run(
                &w,
                alarm_as(f, "INSUFFICIENT_DATA", "2026-11-25T20:42:05.412+0000", "n2"),
                "2026-11-25T20:42:06Z",
            )
            .await,
        );
        assert!(r.records[0].not_for_me.is_none(), "{:?}", r.records[0]);
        assert!(w.http.requests().is_empty());
        assert!(w.sns.published().is_empty());
    }

    #[tokio::test]
    async fn alarm_severity_comes_from_config_and_an_unmatched_alarm_gets_the_default() {
        let w = world(&[
            ("NBAOPS_ALERTS__ALARM_SEVERITY", "nbaops-dev-web-*=P1"),
            ("NBAOPS_ALERTS__ALARM_SEVERITY_DEFAULT", "P4"),
        ])
        .await;
        report(
            run(
                &w,
                alarm_fixture("sns-single-metric-alarm.json"),
                "2026-11-25T22:00:00Z",
            )
            .await,
        );
        assert_eq!(w.http.requests_to(PD).len(), 1, "P1 by pattern pages");
        report(
            run(
                &w,
                alarm_fixture("sns-nbaops-function-errors-alarm.json"),
                "2026-11-25T22:00:00Z",
            )
            .await,
        );
        let slack = slack_texts(&w);
        assert!(
            slack[1].contains("[P4][dev]"),
            "the configured default: {}",
            slack[1]
        );
    }

    #[tokio::test]
    async fn sns_messages_that_are_neither_alerts_nor_alarms_are_not_for_me() {
        let w = world(&[]).await;
        let rds = json!({"Records": [{"EventSource": "aws:sns", "Sns": {
            "Type": "Notification", "MessageId": "r1", "Timestamp": "2026-11-25T20:00:00.000Z",
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:nbaops-dev-alerts",
            "Message": "{\"Event Source\":\"db-instance\",\"Event Time\":\"2026-11-25 20:00:00.000\",\"Identifier Link\":\"x\",\"Source ID\":\"nbaops-dev-db\",\"Source ARN\":\"arn:aws:rds:us-east-1:123456789012:db:nbaops-dev-db\",\"Event ID\":\"http://docs.amazonwebservices.com/AmazonRDS/latest/UserGuide/USER_Events.html#RDS-EVENT-0049\",\"Event Message\":\"Multi-AZ instance failover completed\"}"}}]});
        for payload in [
            rds,
            serde_json::from_str(include_str!(
                "../../../events/not-for-me/sns-unknown-message.json"
            ))
            .unwrap(),
            json!({"Records": [{"EventSource": "aws:sns", "Sns": {"MessageId": "x", "Message": "plain text"}}]}),
        ] {
            let r = report(run(&w, payload, "2026-11-25T20:00:00Z").await);
            let why = r.records[0]
                .not_for_me
                .as_deref()
                .unwrap_or_default()
                .to_string();
            assert!(
                why.contains("CloudWatch alarm") && why.contains(ALERT_SCHEMA),
                "{why}"
            );
        }
        assert!(w.http.requests().is_empty());
    }

    /// A router on the same deps with other config and link keys (a deploy of a rotation).
    async fn router_with(w: &World, vars: &[(&str, &str)], keys: &[(&str, &str)]) -> Router {
        let mut all: BTreeMap<String, String> = [
            ("NBAOPS_ALERTS__ACK__BASE_URL", "https://ack.test/"),
            ("NBAOPS_ALERTS__PAGERDUTY__EVENTS_URL", PD),
        ]
        .iter()
        .chain(vars)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        all.insert("NBAOPS_ALERTS__EMAIL_TOPIC_ARN".into(), EMAIL.into());
        let cfg = alerts::from_settings(&layer(Env::Dev, &all, &BTreeMap::new()).unwrap()).unwrap();
        let mut params = vec![("/nbaops/dev/secrets/alerts/slack_webhook_url", SLACK)];
        params.extend_from_slice(keys);
        Router::load(
            cfg,
            Box::new(Shared(w.http)),
            Box::new(Shared(w.dlq)),
            Some(&FakeParams::with(&params)),
        )
        .await
        .unwrap()
    }

    fn link_in(text: &str) -> BTreeMap<String, String> {
        link::query_of(text.rsplit('<').next().unwrap().split('|').next().unwrap())
    }

    async fn ack(w: &World, r: &Router, q: &BTreeMap<String, String>, at: &str) -> (u16, String) {
        match handle(url_request("POST", q), inv(at), &w.deps, r)
            .await
            .unwrap()
        {
            Reply::Http { status, body, .. } => (status, body),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn link_key_rotation_old_key_accepted_unknown_kid_and_forged_refused() {
        const CURRENT: &str = "/nbaops/dev/secrets/alerts/link_signing_key";
        const PREVIOUS: &str = "/nbaops/dev/secrets/alerts/previous_link_signing_key";
        const NEW: &str = "rotated-unit-test-key-abcdefghij";
        let w = world(&[]).await;
        report(
            run(
                &w,
                sns_alert(&alert(Severity::P1, "a"), "m1"),
                "2026-11-25T10:00:00Z",
            )
            .await,
        );
        report(
            run(
                &w,
                sns_alert(&alert(Severity::P1, "b"), "m2"),
                "2026-11-25T10:00:00Z",
            )
            .await,
        );
        let slack = slack_texts(&w);
        let (old_a, old_b) = (link_in(&slack[0]), link_in(&slack[1]));
        assert_eq!(old_a["kid"], "k1");

        // Rotated: k2 signs, k1 still verifies.
        let rotated = router_with(
            &w,
            &[
                ("NBAOPS_ALERTS__ACK__KEY_ID", "k2"),
                ("NBAOPS_ALERTS__ACK__PREVIOUS_KEY_ID", "k1"),
            ],
            &[(CURRENT, NEW), (PREVIOUS, SIGNING)],
        )
        .await;
        assert_eq!(
            ack(&w, &rotated, &old_a, "2026-11-25T10:05:00Z").await.0,
            200
        );
        assert_eq!(
            load_incident(&w.deps, "a").await.unwrap().unwrap().status,
            IncidentStatus::Acknowledged
        );
        handle(
            sns_alert(&alert(Severity::P1, "c"), "m3"),
            inv("2026-11-25T10:06:00Z"),
            &w.deps,
            &rotated,
        )
        .await
        .unwrap();
        let new_c = link_in(slack_texts(&w).last().unwrap());
        assert_eq!(new_c["kid"], "k2");

        // A made-up key id, and a k1 link relabelled k2: refused.
        let mut unknown = old_b.clone();
        unknown.insert("kid".into(), "k9".into());
        let (status, body) = ack(&w, &rotated, &unknown, "2026-11-25T10:07:00Z").await;
        assert_eq!(status, 403);
        assert!(body.contains("no longer accepted"), "{body}");
        let mut relabelled = old_b.clone();
        relabelled.insert("kid".into(), "k2".into());
        let (status, body) = ack(&w, &rotated, &relabelled, "2026-11-25T10:07:00Z").await;
        assert_eq!((status, body.as_str()), (403, "this link is not valid"));
        // Forged: a link for b signed with a guessed key under the current id.
        let guessed = link::SigningKey {
            kid: "k2".into(),
            key: b"guessed-key-000000000000".to_vec(),
        };
        let forged = link::query_of(&link::ack_link(
            "https://ack.test/",
            &guessed,
            "b",
            t("2026-11-26T10:00:00Z"),
        ));
        assert_eq!(
            ack(&w, &rotated, &forged, "2026-11-25T10:07:00Z").await.0,
            403
        );
        assert_eq!(
            load_incident(&w.deps, "b").await.unwrap().unwrap().status,
            IncidentStatus::Open
        );

        // The rotation done (previous key removed): the old link names an unknown key, the new
        // one still works.
        let done = router_with(
            &w,
            &[("NBAOPS_ALERTS__ACK__KEY_ID", "k2")],
            &[(CURRENT, NEW)],
        )
        .await;
        let (status, body) = ack(&w, &done, &old_b, "2026-11-25T10:08:00Z").await;
        assert_eq!(status, 403);
        assert!(body.contains("no longer accepted"), "{body}");
        assert_eq!(ack(&w, &done, &new_c, "2026-11-25T10:08:00Z").await.0, 200);

        // A previous key id whose secret is missing: init still works, its links are refused.
        let half = router_with(
            &w,
            &[
                ("NBAOPS_ALERTS__ACK__KEY_ID", "k2"),
                ("NBAOPS_ALERTS__ACK__PREVIOUS_KEY_ID", "k1"),
            ],
            &[(CURRENT, NEW)],
        )
        .await;
        assert!(half.keys.previous.is_none() && half.keys.current.is_some());
        assert_eq!(ack(&w, &half, &old_b, "2026-11-25T10:09:00Z").await.0, 403);
        // A short previous key fails init, like a short current key.
        let cfg = alerts::from_settings(
            &layer(
                Env::Dev,
                &[(
                    "NBAOPS_ALERTS__ACK__PREVIOUS_KEY_ID".to_string(),
                    "k0".to_string(),
                )]
                .into(),
                &BTreeMap::new(),
            )
            .unwrap(),
        )
        .unwrap();
        let short = FakeParams::with(&[(CURRENT, NEW), (PREVIOUS, "short")]);
        let err = Router::load(
            cfg,
            Box::new(FakeHttpPost::default()),
            Box::new(FakeDeadLetter::default()),
            Some(&short),
        )
        .await
        .err()
        .unwrap();
        assert!(
            err.to_string().contains("previous_link_signing_key"),
            "{err}"
        );
    }

    #[test]
    fn alert_from_alarm_words() {
        let Some(Inbound::Alarm(a)) =
            classify(&alarm_fixture("sns-nbaops-function-errors-alarm.json"))
                .into_iter()
                .next()
        else {
            panic!()
        };
        let alert = alert_from_alarm(&a, Severity::P2, "dev");
        assert_eq!(alert.dedup_key, PG_ERRORS_ARN);
        assert_eq!(
            alert.summary,
            "CloudWatch alarm nbaops-dev-pg-health-errors is ALARM (AWS/Lambda Errors > 0)"
        );
        assert_eq!(alert.resource, "FunctionName=nbaops-dev-pg-health");
        assert_eq!(alert.source_function, ALARM_SOURCE);
        assert_eq!(alert.status, AlertStatus::Firing);
        assert!(alert
            .runbook
            .as_deref()
            .unwrap()
            .contains("/aws/lambda/nbaops-dev-pg-health"));
        assert_eq!(
            alert.details["alarm"]["alarm_name"],
            "nbaops-dev-pg-health-errors"
        );
        let msg = message_for(&alert, Kind::Firing, None);
        assert!(msg.slack()["text"]
            .as_str()
            .unwrap()
            .contains("why: Threshold Crossed"));
        for (fixture, words) in [
            ("sns-metric-math.json", "(metric math 100 * m1 / (m1 + m2))"),
            ("sns-anomaly-detection.json", "(anomaly band of NetworkIn)"),
            ("sns-composite.json", "(composite alarm)"),
            (
                "sns-nulls-and-none.json",
                "is ALARM (AWS/RDS CPUUtilization)",
            ),
            (
                "sns-transaction-ids-alarm.json",
                "(AWS/RDS MaximumUsedTransactionIDs > 1000000000)",
            ),
        ] {
            let Some(Inbound::Alarm(a)) = classify(&alarm_fixture(fixture)).into_iter().next()
            else {
                panic!("{fixture}")
            };
            let alert = alert_from_alarm(&a, Severity::P3, "dev");
            assert!(
                alert.summary.ends_with(words),
                "{fixture}: {}",
                alert.summary
            );
            assert!(alert.runbook.is_none(), "{fixture}");
        }
        // OK resolves; no ARN and no account: the name is the key.
        let mut v = alarm_fixture("sns-nulls-and-none.json");
        let m = v["Records"][0]["Sns"]["Message"]
            .as_str()
            .unwrap()
            .replace("\"ALARM\"", "\"OK\"");
        v["Records"][0]["Sns"]["Message"] = json!(m);
        let Some(Inbound::Alarm(a)) = classify(&v).into_iter().next() else {
            panic!()
        };
        let alert = alert_from_alarm(&a, Severity::P3, "dev");
        assert_eq!(
            (alert.status, alert.dedup_key.as_str()),
            (
                AlertStatus::Resolved,
                "cloudwatch-alarm:nbaops-dev-db-cpu-high"
            )
        );
        assert_eq!(alert.resource, "DBInstanceIdentifier=nbaops-dev-db");
        assert_eq!(
            alert.summary,
            "CloudWatch alarm nbaops-dev-db-cpu-high is OK"
        );
    }

    #[test]
    fn alert_fixtures_parse() {
        for (text, status) in [
            (
                include_str!("../../../events/alerts/sns/p1-db-down.json"),
                AlertStatus::Firing,
            ),
            (
                include_str!("../../../events/alerts/sns/p1-resolved.json"),
                AlertStatus::Resolved,
            ),
            (
                include_str!("../../../events/alerts/sns/p3-table-bloat.json"),
                AlertStatus::Firing,
            ),
        ] {
            let v: Value = serde_json::from_str(text).unwrap();
            let a = alert_of(&v["Records"][0]).unwrap();
            assert_eq!(a.status, status);
        }
        let tick: Value = serde_json::from_str(include_str!(
            "../../../events/schedule/alert-escalation-sweep.json"
        ))
        .unwrap();
        match &classify(&tick)[0] {
            Inbound::Schedule(t) => assert_eq!(t.task().as_deref(), Some(SWEEP_TASK)),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn not_for_me_and_missing_secrets() {
        let w = world(&[]).await;
        let alarm: Value = serde_json::from_str(include_str!(
            "../../../events/not-for-me/sns-unknown-message.json"
        ))
        .unwrap();
        let r = report(run(&w, alarm, "2026-11-25T10:00:00Z").await);
        assert!(r.records[0].not_for_me.is_some());
        let r = report(
            run(
                &w,
                json!({"nbaops": {"task": "offhours"}}),
                "2026-11-25T10:00:00Z",
            )
            .await,
        );
        assert!(r.records[0].not_for_me.is_some());
        let mut wrong = alert(Severity::P1, "k");
        wrong.schema = "nbaops.action/v1".into();
        let r = report(run(&w, sns_alert(&wrong, "m"), "2026-11-25T10:00:00Z").await);
        assert!(r.records[0]
            .not_for_me
            .as_deref()
            .unwrap()
            .contains("schema"));
        assert!(w.http.requests().is_empty());

        // No secrets at all: links absent, URL requests refused, Slack counted as failed.
        let cfg = alerts::from_settings(&w.deps.cfg.settings).unwrap();
        let empty = FakeParams::default();
        let bare = Router::load(
            cfg,
            Box::new(FakeHttpPost::default()),
            Box::new(FakeDeadLetter::default()),
            Some(&empty),
        )
        .await
        .unwrap();
        assert!(bare.slack_webhook_url.is_none() && bare.keys.is_empty());
        assert!(bare
            .ack_url(
                "k",
                chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap()
            )
            .is_none());
        let short =
            FakeParams::with(&[("/nbaops/dev/secrets/alerts/link_signing_key", "short-key")]);
        let cfg = alerts::from_settings(&w.deps.cfg.settings).unwrap();
        assert!(Router::load(
            cfg,
            Box::new(FakeHttpPost::default()),
            Box::new(FakeDeadLetter::default()),
            Some(&short)
        )
        .await
        .is_err());
    }

    mod properties {
        use super::*;
        use nbaops_shared::events::arbitrary;
        use proptest::prelude::*;

        /// Something alert-router takes: an alert or alarm notification, a schedule, or a request
        /// on its function URL (answered, e.g. 403 for a forged link, but never a send).
        fn for_the_router(payload: &Value) -> bool {
            let records = payload
                .get("Records")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            arbitrary::understood(payload) || records.iter().any(|r| alert_of(r).is_ok())
        }

        proptest! {
            #![proptest_config(arbitrary::config(48))]

            /// Arbitrary JSON and damaged fixtures (alerts included): never a panic; what is
            /// neither an alert nor anything else it understands sends nothing anywhere.
            #[test]
            fn any_payload_is_answered_and_garbage_sends_nothing(payload in arbitrary::payload()) {
                let routed = for_the_router(&payload);
                let (w, res) = arbitrary::block_on(async {
                    let w = world(&[]).await;
                    let res = handle(payload, inv("2026-11-25T10:00:00Z"), &w.deps, &w.router).await;
                    (w, res)
                });
                if !routed {
                    prop_assert!(w.http.requests().is_empty(), "sent {:?}", w.http.requests());
                    prop_assert!(w.dlq.sent().is_empty());
                    prop_assert!(w.sns.published().is_empty());
                    let _ = res;
                }
            }
        }
    }
}

//! Translates the three things alert-router receives — an SNS record carrying an
//! `nbaops.alert/v1`, a function URL request (an acknowledgement link), the escalation-sweep
//! schedule — into sends, ledger writes and a reply.
//!
//! Sends are notifications, not infrastructure changes: they do not pass the guard, and the kill
//! switch does not stop them (an operator who stops every action still needs to hear about it).

use chrono::{DateTime, Duration as Span, Utc};
use serde_json::{json, Value};

use nbaops_shared::adapters::{AwsClients, HyperHttpPost, SdkDeadLetter};
use nbaops_shared::alerts::{Alert, AlertStatus, ALERT_SCHEMA};
use nbaops_shared::config::alerts::{self, AlertsConfig, Channel, EscalationTarget};
use nbaops_shared::events::{classify, Inbound, ScheduledTick};
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
    pub signing_key: Option<Vec<u8>>,
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

/// Production init: the section config, the HTTP client, SQS, and the three secrets.
pub async fn init(deps: &Deps, aws: &AwsClients) -> Result<Router> {
    let cfg = alerts::from_settings(&deps.cfg.settings)?;
    Router::load(
        cfg,
        Box::new(HyperHttpPost::new()?),
        Box::new(SdkDeadLetter(aws.sqs.clone())),
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
        let signing_key = read_secret(params, &cfg.secrets.link_signing_key)
            .await?
            .map(String::into_bytes);
        if signing_key.as_ref().is_some_and(|k| k.len() < 16) {
            return Err(NbaopsError::config(format!(
                "{}: the link-signing key must be at least 16 bytes",
                cfg.secrets.link_signing_key
            )));
        }
        Ok(Router {
            cfg,
            http,
            dead_letter,
            slack_webhook_url,
            pagerduty_routing_key,
            signing_key,
        })
    }

    fn ack_url(&self, dedup_key: &str, now: DateTime<Utc>) -> Option<String> {
        let base = self.cfg.ack_base_url.as_deref()?;
        let key = self.signing_key.as_deref()?;
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
            match alert_of(record) {
                Ok(alert) => {
                    let (rec, delivered) = on_alert(&alert, &event_id, &inv, deps, router).await?;
                    if !delivered {
                        undelivered.push(alert.dedup_key.clone());
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
                    format!("{FUNCTION} takes {ALERT_SCHEMA} messages from SNS, acknowledgement links and the '{SWEEP_TASK}' schedule"),
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
    Message {
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
    let Some(signing_key) = router.signing_key.as_deref() else {
        return Ok(Reply::http(403, "acknowledgement links are not configured"));
    };
    let key = match link::verify(signing_key, &query, inv.now) {
        Ok(k) => k,
        Err(refusal) => {
            let source_ip = payload
                .pointer("/requestContext/http/sourceIp")
                .and_then(Value::as_str)
                .unwrap_or("");
            tracing::warn!(?refusal, source_ip, "acknowledgement link refused");
            let why = match refusal {
                link::Refusal::Missing => "this link is incomplete",
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
                SIGNING.as_bytes(),
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
        assert!(bare.slack_webhook_url.is_none() && bare.signing_key.is_none());
        assert!(bare.ack_url("k", Utc::now()).is_none());
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
}

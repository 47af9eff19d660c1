//! The `alerts` section: how the alert-router turns an `nbaops.alert/v1` into Slack, email and
//! PagerDuty messages (SPEC "Severity and response"), de-duplicates, and escalates.
//!
//! Secrets never live here: the Slack incoming-webhook URL, the PagerDuty routing key and the
//! acknowledgement-link signing key are SSM SecureString parameters under `/nbaops/<env>/secrets/`
//! whose *names* are configured below; the function reads them once at init and registers them
//! with the log redaction.

use std::collections::BTreeMap;

use chrono::{NaiveTime, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::{parse_days, parse_time, positive, Settings};
use crate::alerts::Severity;
use crate::error::{NbaopsError, Result};

pub const KEYS: &[(&str, &str, &str)] = &[
    ("alerts.route.p1", "slack,email,pagerduty", "channels of a P1 alert (SPEC: Slack + email + PagerDuty)"),
    ("alerts.route.p2", "slack,email", "channels of a P2 alert (SPEC: Slack + email)"),
    ("alerts.route.p3", "slack", "channels of a P3 alert (SPEC: Slack)"),
    ("alerts.route.p4", "slack", "channels of a P4 alert (SPEC: Slack)"),
    ("alerts.response.p1", "15m", "P1 first-response time before escalation: Nm, Nh or next-business-day"),
    ("alerts.response.p2", "30m", "P2 first-response time"),
    ("alerts.response.p3", "4h", "P3 first-response time"),
    ("alerts.response.p4", "next-business-day", "P4 first-response time: the end of the next business day"),
    ("alerts.business.days", "mon,tue,wed,thu,fri", "business days (for next-business-day)"),
    ("alerts.business.start", "09:00", "business hours start, local time"),
    ("alerts.business.end", "18:00", "business hours end, local time"),
    ("alerts.business.tz", "UTC", "IANA time zone of the business hours"),
    (
        "alerts.escalation.chain",
        r#"[{"name":"team-lead","notify":["slack","email"],"mention":"@team-lead"},{"name":"head-of-engineering","notify":["slack","email"],"mention":"@head-of-engineering"}]"#,
        "JSON list of levels {name, notify: [slack|email|pagerduty|sns:<topic arn>], mention}; level k is due after k response times",
    ),
    ("alerts.dedup_window_minutes", "60", "a repeat of an open alert within this long after its last message only counts"),
    ("alerts.email_topic_arn", "", "SNS topic with the email subscriptions (P1/P2 email)"),
    ("alerts.dead_letter_queue_url", "", "SQS queue an alert lands in when every channel failed"),
    ("alerts.pagerduty.events_url", "https://events.pagerduty.com/v2/enqueue", "PagerDuty Events API v2 endpoint"),
    ("alerts.ack.base_url", "", "the function URL acknowledgement links point to (empty: no links)"),
    ("alerts.ack.ttl_hours", "24", "an acknowledgement link expires after this long"),
    ("alerts.retry.max_attempts", "3", "attempts per channel and message (timeout, 5xx and 429 are retried)"),
    ("alerts.retry.base_ms", "250", "first backoff delay; doubles per attempt"),
    ("alerts.retry.max_ms", "2000", "cap of one backoff delay"),
    ("alerts.retry.budget_ms", "10000", "total backoff per channel and message (keeps sends within the Lambda timeout)"),
    ("alerts.http_timeout_ms", "3000", "timeout of one Slack or PagerDuty request"),
    ("alerts.record_ttl_days", "400", "incident records kept for the post-incident review (SPEC: one year)"),
    ("alerts.secrets.slack_webhook_url", "/nbaops/{env}/secrets/alerts/slack_webhook_url", "SSM SecureString holding the Slack incoming-webhook URL"),
    ("alerts.secrets.pagerduty_routing_key", "/nbaops/{env}/secrets/alerts/pagerduty_routing_key", "SSM SecureString holding the PagerDuty Events v2 routing key"),
    ("alerts.secrets.link_signing_key", "/nbaops/{env}/secrets/alerts/link_signing_key", "SSM SecureString holding the acknowledgement-link HMAC key"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Slack,
    Email,
    Pagerduty,
}

impl Channel {
    pub fn as_str(&self) -> &'static str {
        match self {
            Channel::Slack => "slack",
            Channel::Email => "email",
            Channel::Pagerduty => "pagerduty",
        }
    }
}

/// How long the receiver has before the alert escalates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ResponseTime {
    Minutes(i64),
    /// The end of the next business day (business hours in the configured zone).
    NextBusinessDay,
}

#[derive(Debug, Clone, Serialize)]
pub struct BusinessHours {
    pub days: Vec<Weekday>,
    pub start: NaiveTime,
    pub end: NaiveTime,
    #[serde(serialize_with = "tz_name")]
    pub tz: Tz,
}

fn tz_name<S: serde::Serializer>(tz: &Tz, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(tz.name())
}

/// Where one escalation level notifies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum EscalationTarget {
    Slack,
    Email,
    Pagerduty,
    /// A topic of its own (e.g. the team lead's email or SMS subscription).
    Topic(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EscalationLevel {
    pub name: String,
    pub notify: Vec<EscalationTarget>,
    pub mention: Option<String>,
}

#[derive(Deserialize)]
struct RawLevel {
    name: String,
    notify: Vec<String>,
    #[serde(default)]
    mention: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_ms: u64,
    pub max_ms: u64,
    pub budget_ms: u64,
}

/// The secrets' SSM names (the values are read by the function at init).
#[derive(Debug, Clone, Serialize)]
pub struct AlertSecrets {
    pub slack_webhook_url: String,
    pub pagerduty_routing_key: String,
    pub link_signing_key: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AlertsConfig {
    pub routes: BTreeMap<Severity, Vec<Channel>>,
    pub response: BTreeMap<Severity, ResponseTime>,
    pub business: BusinessHours,
    pub chain: Vec<EscalationLevel>,
    pub dedup_window_minutes: i64,
    pub email_topic_arn: Option<String>,
    pub dead_letter_queue_url: Option<String>,
    pub pagerduty_events_url: String,
    pub ack_base_url: Option<String>,
    pub ack_ttl_hours: i64,
    pub retry: RetryPolicy,
    pub http_timeout_ms: u64,
    pub record_ttl_days: i64,
    pub secrets: AlertSecrets,
}

impl AlertsConfig {
    pub fn channels(&self, severity: Severity) -> &[Channel] {
        self.routes.get(&severity).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn response_time(&self, severity: Severity) -> ResponseTime {
        self.response
            .get(&severity)
            .copied()
            .unwrap_or(ResponseTime::NextBusinessDay)
    }
}

const SEVERITIES: [(Severity, &str); 4] = [
    (Severity::P1, "p1"),
    (Severity::P2, "p2"),
    (Severity::P3, "p3"),
    (Severity::P4, "p4"),
];

fn parse_channels(s: &Settings, key: &str) -> Result<Vec<Channel>> {
    let expected = "a comma list of slack, email, pagerduty";
    let mut out = Vec::new();
    for c in s.list(key) {
        let ch = match c.to_ascii_lowercase().as_str() {
            "slack" => Channel::Slack,
            "email" => Channel::Email,
            "pagerduty" => Channel::Pagerduty,
            _ => return Err(s.bad(key, expected)),
        };
        if !out.contains(&ch) {
            out.push(ch);
        }
    }
    if out.is_empty() {
        return Err(s.bad(key, expected));
    }
    Ok(out)
}

pub fn parse_response(raw: &str) -> Option<ResponseTime> {
    let raw = raw.trim().to_ascii_lowercase();
    if raw == "next-business-day" {
        return Some(ResponseTime::NextBusinessDay);
    }
    let (num, mult) = if let Some(m) = raw.strip_suffix('m') {
        (m, 1)
    } else if let Some(h) = raw.strip_suffix('h') {
        (h, 60)
    } else {
        return None;
    };
    let n: i64 = num.trim().parse().ok()?;
    (n > 0).then_some(ResponseTime::Minutes(n * mult))
}

fn parse_chain(s: &Settings) -> Result<Vec<EscalationLevel>> {
    let key = "alerts.escalation.chain";
    let raw: Vec<RawLevel> = s.json(key, "a JSON list of {name, notify, mention}")?;
    let mut chain = Vec::new();
    for (i, level) in raw.into_iter().enumerate() {
        let bad = |what: String| {
            NbaopsError::config(format!("{key}[{i}] (from {}): {what}", s.origin(key)))
        };
        if level.name.trim().is_empty() {
            return Err(bad("a level needs a name".into()));
        }
        let mut notify = Vec::new();
        for t in &level.notify {
            notify.push(match t.as_str() {
                "slack" => EscalationTarget::Slack,
                "email" => EscalationTarget::Email,
                "pagerduty" => EscalationTarget::Pagerduty,
                other => match other.strip_prefix("sns:") {
                    Some(arn) if arn.starts_with("arn:") => EscalationTarget::Topic(arn.into()),
                    _ => {
                        return Err(bad(format!(
                            "notify '{other}': expected slack, email, pagerduty or sns:<topic arn>"
                        )))
                    }
                },
            });
        }
        if notify.is_empty() {
            return Err(bad(format!("level '{}' notifies nobody", level.name)));
        }
        chain.push(EscalationLevel {
            name: level.name,
            notify,
            mention: level.mention.filter(|m| !m.trim().is_empty()),
        });
    }
    Ok(chain)
}

fn optional(s: &Settings, key: &str) -> Option<String> {
    Some(s.string(key)).filter(|v| !v.is_empty())
}

fn url(s: &Settings, key: &str) -> Result<Option<String>> {
    let v = optional(s, key);
    if let Some(u) = &v {
        if !(u.starts_with("https://") || u.starts_with("http://")) {
            return Err(s.bad(key, "an http(s) URL"));
        }
    }
    Ok(v)
}

fn secret_name(s: &Settings, key: &str) -> Result<String> {
    let v = s.string(key);
    if !v.starts_with("/nbaops/") || !v.contains("/secrets/") {
        return Err(s.bad(key, "an SSM name under /nbaops/<env>/secrets/"));
    }
    Ok(v)
}

pub fn from_settings(s: &Settings) -> Result<AlertsConfig> {
    let mut routes = BTreeMap::new();
    let mut response = BTreeMap::new();
    for (sev, name) in SEVERITIES {
        let route_key = format!("alerts.route.{name}");
        routes.insert(sev, parse_channels(s, &route_key)?);
        let resp_key = format!("alerts.response.{name}");
        let r = parse_response(&s.string(&resp_key))
            .ok_or_else(|| s.bad(&resp_key, "Nm, Nh or next-business-day"))?;
        response.insert(sev, r);
    }
    let tz: Tz = s.string("alerts.business.tz").parse().map_err(|_| {
        s.bad(
            "alerts.business.tz",
            "an IANA time zone such as Europe/Paris",
        )
    })?;
    let business = BusinessHours {
        days: parse_days(s, "alerts.business.days")?,
        start: parse_time(s, "alerts.business.start")?,
        end: parse_time(s, "alerts.business.end")?,
        tz,
    };
    if business.end <= business.start {
        return Err(s.bad("alerts.business.end", "a time after alerts.business.start"));
    }
    let email_topic_arn = optional(s, "alerts.email_topic_arn");
    if email_topic_arn
        .as_ref()
        .is_some_and(|a| !a.starts_with("arn:"))
    {
        return Err(s.bad("alerts.email_topic_arn", "an SNS topic ARN"));
    }
    let dead_letter_queue_url = url(s, "alerts.dead_letter_queue_url")?;
    let pagerduty_events_url = url(s, "alerts.pagerduty.events_url")?
        .ok_or_else(|| s.bad("alerts.pagerduty.events_url", "an http(s) URL"))?;
    let retry = RetryPolicy {
        max_attempts: positive(s, "alerts.retry.max_attempts", "a whole number >= 1")?,
        base_ms: positive(s, "alerts.retry.base_ms", "milliseconds >= 1")?,
        max_ms: positive(s, "alerts.retry.max_ms", "milliseconds >= 1")?,
        budget_ms: s.number("alerts.retry.budget_ms", "milliseconds")?,
    };
    if retry.max_attempts > 10 {
        return Err(s.bad("alerts.retry.max_attempts", "at most 10 attempts"));
    }
    let http_timeout_ms: u64 = positive(s, "alerts.http_timeout_ms", "milliseconds >= 1")?;
    if http_timeout_ms > 30_000 {
        return Err(s.bad("alerts.http_timeout_ms", "at most 30000 ms"));
    }
    Ok(AlertsConfig {
        routes,
        response,
        business,
        chain: parse_chain(s)?,
        dedup_window_minutes: positive(s, "alerts.dedup_window_minutes", "whole minutes >= 1")?,
        email_topic_arn,
        dead_letter_queue_url,
        pagerduty_events_url,
        ack_base_url: url(s, "alerts.ack.base_url")?,
        ack_ttl_hours: positive(s, "alerts.ack.ttl_hours", "whole hours >= 1")?,
        retry,
        http_timeout_ms,
        record_ttl_days: positive(s, "alerts.record_ttl_days", "whole days >= 1")?,
        secrets: AlertSecrets {
            slack_webhook_url: secret_name(s, "alerts.secrets.slack_webhook_url")?,
            pagerduty_routing_key: secret_name(s, "alerts.secrets.pagerduty_routing_key")?,
            link_signing_key: secret_name(s, "alerts.secrets.link_signing_key")?,
        },
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::{layer, Env};

    fn load(env_pairs: &[(&str, &str)]) -> Result<AlertsConfig> {
        let vars = env_pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        from_settings(&layer(Env::Dev, &vars, &BTreeMap::new())?)
    }

    #[test]
    fn spec_defaults() {
        let c = load(&[]).unwrap();
        use Channel::*;
        assert_eq!(c.channels(Severity::P1), &[Slack, Email, Pagerduty]);
        assert_eq!(c.channels(Severity::P2), &[Slack, Email]);
        assert_eq!(c.channels(Severity::P3), &[Slack]);
        assert_eq!(c.channels(Severity::P4), &[Slack]);
        assert_eq!(c.response_time(Severity::P1), ResponseTime::Minutes(15));
        assert_eq!(c.response_time(Severity::P2), ResponseTime::Minutes(30));
        assert_eq!(c.response_time(Severity::P3), ResponseTime::Minutes(240));
        assert_eq!(c.response_time(Severity::P4), ResponseTime::NextBusinessDay);
        assert_eq!(c.chain[0].name, "team-lead");
        assert_eq!(
            c.secrets.slack_webhook_url,
            "/nbaops/dev/secrets/alerts/slack_webhook_url"
        );
        assert_eq!(
            c.pagerduty_events_url,
            "https://events.pagerduty.com/v2/enqueue"
        );
    }

    #[test]
    fn wrong_values_name_the_key() {
        let e = load(&[("NBAOPS_ALERTS__ROUTE__P3", "slack,pigeon")]).unwrap_err();
        assert!(e.to_string().contains("alerts.route.p3"), "{e}");
        let e = load(&[("NBAOPS_ALERTS__RESPONSE__P1", "soon")]).unwrap_err();
        assert!(e.to_string().contains("alerts.response.p1"), "{e}");
        let e = load(&[(
            "NBAOPS_ALERTS__ESCALATION__CHAIN",
            r#"[{"name":"x","notify":["fax"]}]"#,
        )])
        .unwrap_err();
        assert!(e.to_string().contains("alerts.escalation.chain[0]"), "{e}");
        assert!(load(&[("NBAOPS_ALERTS__SECRETS__SLACK_WEBHOOK_URL", "/elsewhere/x")]).is_err());
        assert!(load(&[("NBAOPS_ALERTS__BUSINESS__TZ", "Mars/Olympus")]).is_err());
    }
}

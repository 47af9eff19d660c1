//! The `alerts` section: how the alert-router turns an `nbaops.alert/v1` into Slack, email and
//! PagerDuty messages (SPEC "Severity and response"), de-duplicates, and escalates.
//!
//! Secrets never live here: the Slack incoming-webhook URL, the PagerDuty routing key and the
//! acknowledgement-link signing key are SSM SecureString parameters under `/nbaops/<env>/secrets/`
//! whose *names* are configured below; the function reads them once at init and registers them
//! with the log redaction.
//!
//! CloudWatch alarms about nbaops itself reach the router as alarm notifications on the alerts
//! topic; `alerts.alarm_severity` gives each alarm name its severity (simple `*` globs, first match
//! wins, `alerts.alarm_severity_default` for the rest).

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
    ("alerts.ack.key_id", "k1", "id of the current link-signing key, carried in every link as kid (letters, digits, . _ -; at most 32)"),
    ("alerts.ack.previous_key_id", "", "id of the previous link-signing key during a rotation: its links are still accepted (empty: none)"),
    ("alerts.approval.group", "", "EventBridge Scheduler group the one-time schedules of approved actions go in (nbaops-<env>-approvals; empty: approvals are recorded but not dispatched)"),
    ("alerts.approval.role_arn", "", "role EventBridge Scheduler assumes to invoke the owning function of an approved action"),
    ("alerts.approval.targets", "", "comma list of function=ARN: the live alias an approved action of that function is sent to"),
    ("alerts.retry.max_attempts", "3", "attempts per channel and message (timeout, 5xx and 429 are retried)"),
    ("alerts.retry.base_ms", "250", "first backoff delay; doubles per attempt"),
    ("alerts.retry.max_ms", "2000", "cap of one backoff delay"),
    ("alerts.retry.budget_ms", "10000", "total backoff per channel and message (keeps sends within the Lambda timeout)"),
    ("alerts.http_timeout_ms", "3000", "timeout of one Slack or PagerDuty request"),
    ("alerts.record_ttl_days", "400", "incident records kept for the post-incident review (SPEC: one year)"),
    ("alerts.secrets.slack_webhook_url", "/nbaops/{env}/secrets/alerts/slack_webhook_url", "SSM SecureString holding the Slack incoming-webhook URL"),
    ("alerts.secrets.pagerduty_routing_key", "/nbaops/{env}/secrets/alerts/pagerduty_routing_key", "SSM SecureString holding the PagerDuty Events v2 routing key"),
    ("alerts.secrets.link_signing_key", "/nbaops/{env}/secrets/alerts/link_signing_key", "SSM SecureString holding the acknowledgement-link HMAC key"),
    ("alerts.secrets.previous_link_signing_key", "/nbaops/{env}/secrets/alerts/previous_link_signing_key", "SSM SecureString holding the previous link key (read only when alerts.ack.previous_key_id is set)"),
    (
        "alerts.alarm_severity",
        "nbaops-*-errors=P2,nbaops-*-throttles=P2,nbaops-*-dlq*=P2,nbaops-*failed-events*=P2,*transaction-ids*=P1,*replica-lag*=P2",
        "severity of a CloudWatch alarm notification by alarm name: comma list of pattern=P1..P4, * matches any run of characters, case-insensitive, first match wins",
    ),
    ("alerts.alarm_severity_default", "P3", "severity of a CloudWatch alarm whose name matches no alerts.alarm_severity pattern"),
    // Issue #22: grouping, resolution SLAs, the on-call rota (docs/alerting.md).
    ("alerts.group.window_minutes", "30", "an alert opening within this long after an open incident on the same resource (or one it is caused by, alerts.group.causes) joins that incident's thread instead of opening its own (0: no grouping)"),
    ("alerts.group.causes", "failover=pg-replication-lag|pg-connections|pg-unreachable", "root-cause rules: comma list of cause=effect|effect of alert kinds; an effect alert joins an open cause incident of the same scope (the resource's name between its first ':' and '/': rds:db1 and pg:db1/standby:r1 are both db1)"),
    ("alerts.resolution.p1", "4h", "P1 resolution SLA from opening: Nm, Nh, business-day (the end of the business day it opened in, or of the next one when it opened after hours or on a day off) or none"),
    ("alerts.resolution.p2", "business-day", "P2 resolution SLA"),
    ("alerts.resolution.p3", "48h", "P3 resolution SLA"),
    ("alerts.resolution.p4", "none", "P4 resolution SLA"),
    ("alerts.oncall.rota", "", r#"JSON on-call rota: {"weeks": {"2026-W49": "alice"}, "weekdays": {"sat": "carol"}, "contacts": {"alice": "<@U012AB3CD>"}}; an ISO week entry wins over a weekday entry, both read on the local date in alerts.business.tz (empty: nobody assigned)"#),
    ("alerts.oncall.team_lead", "", "mention of the team lead; when set, escalation level 1 (alerts.escalation.chain[0]) mentions them: escalation goes from the assignee to the team lead"),
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
    pub previous_link_signing_key: String,
}

/// One `pattern=Pn` entry of `alerts.alarm_severity`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlarmSeverity {
    pub pattern: String,
    pub severity: Severity,
}

/// A resolution SLA (issue #22): how long an incident may stay open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ResolutionSla {
    Minutes(i64),
    /// The end of the business day the incident opened in, or of the next business day when it
    /// opened after the end of business hours or on a day off.
    BusinessDay,
    None,
}

pub fn parse_resolution(raw: &str) -> Option<ResolutionSla> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "business-day" => Some(ResolutionSla::BusinessDay),
        "none" => Some(ResolutionSla::None),
        other => match parse_response(other)? {
            ResponseTime::Minutes(m) => Some(ResolutionSla::Minutes(m)),
            ResponseTime::NextBusinessDay => None,
        },
    }
}

/// One root-cause rule of `alerts.group.causes`: alerts of the `effects` kinds join an open
/// incident of the `cause` kind on the same scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CauseRule {
    pub cause: String,
    pub effects: Vec<String>,
}

/// Who is on call, and how a message mentions them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OnCallPerson {
    pub name: String,
    pub mention: String,
}

/// The on-call rota (`alerts.oncall.rota`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Rota {
    /// (ISO year, ISO week) -> name.
    pub weeks: BTreeMap<(i32, u32), String>,
    /// Monday = 0 .. Sunday = 6 -> name.
    pub weekdays: BTreeMap<u32, String>,
    pub contacts: BTreeMap<String, String>,
}

impl Rota {
    pub fn is_empty(&self) -> bool {
        self.weeks.is_empty() && self.weekdays.is_empty()
    }

    /// Who is on call at `at`, read on its local date in `tz`: the ISO week's entry, else the
    /// weekday's, else nobody.
    pub fn on_call(&self, at: chrono::DateTime<chrono::Utc>, tz: Tz) -> Option<OnCallPerson> {
        use chrono::Datelike;
        let day = at.with_timezone(&tz).date_naive();
        let week = day.iso_week();
        let name = self
            .weeks
            .get(&(week.year(), week.week()))
            .or_else(|| self.weekdays.get(&day.weekday().num_days_from_monday()))?;
        Some(OnCallPerson {
            name: name.clone(),
            mention: self
                .contacts
                .get(name)
                .cloned()
                .unwrap_or_else(|| format!("@{name}")),
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRota {
    #[serde(default)]
    weeks: BTreeMap<String, String>,
    #[serde(default)]
    weekdays: BTreeMap<String, String>,
    #[serde(default)]
    contacts: BTreeMap<String, String>,
}

fn parse_rota(s: &Settings) -> Result<Rota> {
    let key = "alerts.oncall.rota";
    if s.string(key).is_empty() {
        return Ok(Rota::default());
    }
    let raw: RawRota = s.json(
        key,
        r#"a JSON object {"weeks": {"YYYY-Www": name}, "weekdays": {"mon".."sun": name}, "contacts": {name: mention}}"#,
    )?;
    let bad = |what: String| NbaopsError::config(format!("{key} (from {}): {what}", s.origin(key)));
    let name_ok = |n: &str| !n.trim().is_empty();
    let mut rota = Rota::default();
    for (w, name) in raw.weeks {
        let parsed = w.split_once("-W").and_then(|(y, n)| {
            let (y, n) = (y.parse::<i32>().ok()?, n.parse::<u32>().ok()?);
            chrono::NaiveDate::from_isoywd_opt(y, n, Weekday::Mon).map(|_| (y, n))
        });
        let Some(yw) = parsed.filter(|_| w.len() == 8) else {
            return Err(bad(format!(
                "week '{w}': expected an ISO week such as 2026-W49"
            )));
        };
        if !name_ok(&name) {
            return Err(bad(format!("week '{w}': empty name")));
        }
        rota.weeks.insert(yw, name.trim().to_string());
    }
    for (d, name) in raw.weekdays {
        let Ok(day) = d.parse::<Weekday>() else {
            return Err(bad(format!("weekday '{d}': expected mon..sun")));
        };
        if !name_ok(&name) {
            return Err(bad(format!("weekday '{d}': empty name")));
        }
        rota.weekdays
            .insert(day.num_days_from_monday(), name.trim().to_string());
    }
    for (name, mention) in raw.contacts {
        if !name_ok(&name) || !name_ok(&mention) {
            return Err(bad(format!("contact '{name}': empty name or mention")));
        }
        rota.contacts.insert(name, mention.trim().to_string());
    }
    if rota.is_empty() {
        return Err(bad(
            "names nobody: give weeks or weekdays (or leave it empty)".into(),
        ));
    }
    Ok(rota)
}

fn parse_causes(s: &Settings) -> Result<Vec<CauseRule>> {
    let key = "alerts.group.causes";
    let kind_ok = |k: &str| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
    };
    let mut out = Vec::new();
    for entry in s.list(key) {
        let bad = || {
            NbaopsError::config(format!(
                "{key} (from {}): entry '{entry}': expected cause=effect|effect of alert kinds",
                s.origin(key)
            ))
        };
        let (cause, effects) = entry.split_once('=').ok_or_else(bad)?;
        let effects: Vec<String> = effects.split('|').map(|e| e.trim().to_string()).collect();
        if !kind_ok(cause.trim()) || !effects.iter().all(|e| kind_ok(e)) {
            return Err(bad());
        }
        out.push(CauseRule {
            cause: cause.trim().to_string(),
            effects,
        });
    }
    Ok(out)
}

/// Grouping, resolution SLAs and the rota (issue #22).
#[derive(Debug, Clone, Serialize)]
pub struct Incidents {
    /// 0: no grouping.
    pub group_window_minutes: i64,
    pub causes: Vec<CauseRule>,
    pub resolution: BTreeMap<Severity, ResolutionSla>,
    pub rota: Rota,
    pub team_lead: Option<String>,
}

fn parse_incidents(s: &Settings) -> Result<Incidents> {
    let mut resolution = BTreeMap::new();
    for (sev, name) in SEVERITIES {
        let key = format!("alerts.resolution.{name}");
        let r = parse_resolution(&s.string(&key))
            .ok_or_else(|| s.bad(&key, "Nm, Nh, business-day or none"))?;
        resolution.insert(sev, r);
    }
    let group_window_minutes: i64 =
        s.number("alerts.group.window_minutes", "whole minutes >= 0")?;
    if group_window_minutes < 0 {
        return Err(s.bad("alerts.group.window_minutes", "whole minutes >= 0"));
    }
    Ok(Incidents {
        group_window_minutes,
        causes: parse_causes(s)?,
        resolution,
        rota: parse_rota(s)?,
        team_lead: optional(s, "alerts.oncall.team_lead"),
    })
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
    /// The kid of links signed now.
    pub ack_key_id: String,
    /// The kid whose links are still accepted during a rotation.
    pub ack_previous_key_id: Option<String>,
    pub alarm_severities: Vec<AlarmSeverity>,
    /// Where approved actions are dispatched (issue #19).
    pub approval: ApprovalDispatch,
    pub alarm_severity_default: Severity,
    pub retry: RetryPolicy,
    pub http_timeout_ms: u64,
    pub record_ttl_days: i64,
    pub secrets: AlertSecrets,
    /// Grouping, resolution SLAs, the rota (issue #22).
    pub incidents: Incidents,
}

/// The one-time schedule an approved action is carried out by: its group, the role Scheduler
/// assumes, and each owning function's target (its live alias).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ApprovalDispatch {
    pub group: Option<String>,
    pub role_arn: Option<String>,
    pub targets: BTreeMap<String, String>,
}

impl ApprovalDispatch {
    /// The group, the role and the target of `function`'s approved actions, when all are set.
    pub fn for_function(&self, function: &str) -> Option<(&str, &str, &str)> {
        Some((
            self.group.as_deref()?,
            self.role_arn.as_deref()?,
            self.targets.get(function)?.as_str(),
        ))
    }
}

fn parse_approval(s: &Settings) -> Result<ApprovalDispatch> {
    let role_arn = optional(s, "alerts.approval.role_arn");
    if role_arn.as_ref().is_some_and(|a| !a.starts_with("arn:")) {
        return Err(s.bad("alerts.approval.role_arn", "an IAM role ARN"));
    }
    let key = "alerts.approval.targets";
    let mut targets = BTreeMap::new();
    for entry in s.list(key) {
        match entry.split_once('=') {
            Some((f, arn)) if !f.trim().is_empty() && arn.trim().starts_with("arn:") => {
                targets.insert(f.trim().to_string(), arn.trim().to_string());
            }
            _ => {
                return Err(NbaopsError::config(format!(
                    "{key} (from {}): entry '{entry}': expected function=arn:...",
                    s.origin(key)
                )))
            }
        }
    }
    Ok(ApprovalDispatch {
        group: key_id_like(s, "alerts.approval.group")?,
        role_arn,
        targets,
    })
}

/// A schedule group name: 1-64 of `[0-9a-zA-Z-_.]`, or empty.
fn key_id_like(s: &Settings, key: &str) -> Result<Option<String>> {
    let v = optional(s, key);
    if v.as_ref().is_some_and(|k| {
        k.len() > 64
            || !k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    }) {
        return Err(s.bad(key, "1-64 of letters, digits, . _ -"));
    }
    Ok(v)
}

impl AlertsConfig {
    pub fn channels(&self, severity: Severity) -> &[Channel] {
        self.routes.get(&severity).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn resolution_sla(&self, severity: Severity) -> ResolutionSla {
        self.incidents
            .resolution
            .get(&severity)
            .copied()
            .unwrap_or(ResolutionSla::None)
    }

    pub fn response_time(&self, severity: Severity) -> ResponseTime {
        self.response
            .get(&severity)
            .copied()
            .unwrap_or(ResponseTime::NextBusinessDay)
    }

    /// The severity of a CloudWatch alarm by its name, and the pattern that decided it (`None`:
    /// no pattern matched, the default applies).
    pub fn alarm_severity(&self, alarm_name: &str) -> (Severity, Option<&str>) {
        self.alarm_severities
            .iter()
            .find(|p| glob_match(&p.pattern, alarm_name))
            .map(|p| (p.severity, Some(p.pattern.as_str())))
            .unwrap_or((self.alarm_severity_default, None))
    }
}

/// `*` matches any run of characters (also none); everything else matches itself, ASCII case
/// ignored. No other wildcard: alarm names contain `?`, `[` and `.` literally.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().map(|c| c.to_ascii_lowercase()).collect();
    let t: Vec<char> = text.chars().map(|c| c.to_ascii_lowercase()).collect();
    // Iterative matching with backtracking to the last star: linear in practice, never exponential.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn parse_alarm_severity(s: &Settings) -> Result<Vec<AlarmSeverity>> {
    let key = "alerts.alarm_severity";
    let mut out = Vec::new();
    for entry in s.list(key) {
        let bad = |what: &str| {
            NbaopsError::config(format!(
                "{key} (from {}): entry '{entry}': {what}",
                s.origin(key)
            ))
        };
        let Some((pattern, sev)) = entry.rsplit_once('=') else {
            return Err(bad("expected pattern=P1..P4"));
        };
        let pattern = pattern.trim();
        if pattern.is_empty() || pattern.contains('=') {
            return Err(bad("expected a non-empty alarm-name pattern before '='"));
        }
        let severity: Severity = sev
            .parse()
            .map_err(|_| bad("expected a severity P1, P2, P3 or P4 after '='"))?;
        out.push(AlarmSeverity {
            pattern: pattern.to_string(),
            severity,
        });
    }
    Ok(out)
}

/// A key id goes into links and into the signed text: short, printable, no separators.
fn key_id(s: &Settings, key: &str) -> Result<Option<String>> {
    let v = optional(s, key);
    if v.as_ref().is_some_and(|k| {
        k.len() > 32
            || !k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    }) {
        return Err(s.bad(
            key,
            "a key id of at most 32 letters, digits, '.', '_' or '-'",
        ));
    }
    Ok(v)
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
    let ack_key_id = key_id(s, "alerts.ack.key_id")?
        .ok_or_else(|| s.bad("alerts.ack.key_id", "a key id (links must name their key)"))?;
    let ack_previous_key_id = key_id(s, "alerts.ack.previous_key_id")?;
    if ack_previous_key_id.as_deref() == Some(ack_key_id.as_str()) {
        return Err(s.bad(
            "alerts.ack.previous_key_id",
            "an id other than alerts.ack.key_id (a rotation needs a new id)",
        ));
    }
    let alarm_severity_default: Severity = s
        .string("alerts.alarm_severity_default")
        .parse()
        .map_err(|_| s.bad("alerts.alarm_severity_default", "P1, P2, P3 or P4"))?;
    let http_timeout_ms: u64 = positive(s, "alerts.http_timeout_ms", "milliseconds >= 1")?;
    if http_timeout_ms > 30_000 {
        return Err(s.bad("alerts.http_timeout_ms", "at most 30000 ms"));
    }
    let incidents = parse_incidents(s)?;
    let mut chain = parse_chain(s)?;
    // Escalation goes from the assignee to the team lead: level 1 mentions them.
    if let (Some(lead), Some(first)) = (&incidents.team_lead, chain.first_mut()) {
        first.mention = Some(lead.clone());
    }
    Ok(AlertsConfig {
        incidents,
        routes,
        response,
        business,
        chain,
        dedup_window_minutes: positive(s, "alerts.dedup_window_minutes", "whole minutes >= 1")?,
        email_topic_arn,
        dead_letter_queue_url,
        pagerduty_events_url,
        ack_base_url: url(s, "alerts.ack.base_url")?,
        ack_ttl_hours: positive(s, "alerts.ack.ttl_hours", "whole hours >= 1")?,
        ack_key_id,
        ack_previous_key_id,
        alarm_severities: parse_alarm_severity(s)?,
        approval: parse_approval(s)?,
        alarm_severity_default,
        retry,
        http_timeout_ms,
        record_ttl_days: positive(s, "alerts.record_ttl_days", "whole days >= 1")?,
        secrets: AlertSecrets {
            slack_webhook_url: secret_name(s, "alerts.secrets.slack_webhook_url")?,
            pagerduty_routing_key: secret_name(s, "alerts.secrets.pagerduty_routing_key")?,
            link_signing_key: secret_name(s, "alerts.secrets.link_signing_key")?,
            previous_link_signing_key: secret_name(s, "alerts.secrets.previous_link_signing_key")?,
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

    #[test]
    fn globs() {
        assert!(glob_match("nbaops-*-errors", "nbaops-dev-pg-health-errors"));
        assert!(glob_match("nbaops-*-errors", "NBAOPS-prod-x-ERRORS"));
        assert!(!glob_match(
            "nbaops-*-errors",
            "nbaops-dev-pg-health-errors-2"
        ));
        assert!(!glob_match("nbaops-*-errors", "other-dev-x-errors"));
        assert!(glob_match("*", ""));
        assert!(glob_match("*replica-lag*", "nbaops-prod-db-replica-lag"));
        assert!(glob_match("a*b*c", "abc") && glob_match("a*b*c", "a-b-b-c"));
        assert!(!glob_match("a*b*c", "a-c-b"));
        assert!(glob_match("exact", "exact") && !glob_match("exact", "exactly"));
        // Only '*' is special.
        assert!(!glob_match("a?c", "abc") && glob_match("a?c", "a?c"));
        assert!(glob_match("**x**", "x") && !glob_match("", "x"));
    }

    #[test]
    fn alarm_severity_defaults_first_match_and_default() {
        let c = load(&[]).unwrap();
        let sev = |n: &str| c.alarm_severity(n);
        assert_eq!(
            sev("nbaops-dev-pg-health-errors"),
            (Severity::P2, Some("nbaops-*-errors"))
        );
        assert_eq!(sev("nbaops-prod-scale-on-alarm-throttles").0, Severity::P2);
        assert_eq!(
            sev("nbaops-dev-alerts-dlq-not-empty"),
            (Severity::P2, Some("nbaops-*-dlq*"))
        );
        assert_eq!(
            sev("nbaops-dev-failed-events-visible"),
            (Severity::P2, Some("nbaops-*failed-events*"))
        );
        assert_eq!(
            sev("nbaops-dev-db-transaction-ids-critical"),
            (Severity::P1, Some("*transaction-ids*"))
        );
        assert_eq!(sev("nbaops-dev-db-transaction-ids-warning").0, Severity::P1);
        assert_eq!(sev("nbaops-dev-db-replica-lag").0, Severity::P2);
        assert_eq!(sev("nbaops-dev-web-cpu-high"), (Severity::P3, None));
        assert_eq!(sev(""), (Severity::P3, None));

        // Configured: first match wins, the default is configurable, an empty map is allowed.
        let c = load(&[
            (
                "NBAOPS_ALERTS__ALARM_SEVERITY",
                " nbaops-prod-* = p1 , nbaops-*=P4",
            ),
            ("NBAOPS_ALERTS__ALARM_SEVERITY_DEFAULT", "p2"),
        ])
        .unwrap();
        assert_eq!(
            c.alarm_severity("nbaops-prod-web-errors"),
            (Severity::P1, Some("nbaops-prod-*"))
        );
        assert_eq!(c.alarm_severity("nbaops-dev-web-errors").0, Severity::P4);
        assert_eq!(c.alarm_severity("billing"), (Severity::P2, None));
        let c = load(&[("NBAOPS_ALERTS__ALARM_SEVERITY", "")]).unwrap();
        assert_eq!(
            c.alarm_severity("nbaops-dev-web-errors"),
            (Severity::P3, None)
        );

        for bad in ["nbaops-*", "x=P5", "=P1", "a=b=P1"] {
            let e = load(&[("NBAOPS_ALERTS__ALARM_SEVERITY", bad)]).unwrap_err();
            assert!(
                e.to_string().contains("alerts.alarm_severity"),
                "{bad}: {e}"
            );
        }
        let e = load(&[("NBAOPS_ALERTS__ALARM_SEVERITY_DEFAULT", "high")]).unwrap_err();
        assert!(
            e.to_string().contains("alerts.alarm_severity_default"),
            "{e}"
        );
    }

    #[test]
    fn link_key_ids() {
        let c = load(&[]).unwrap();
        assert_eq!((c.ack_key_id.as_str(), c.ack_previous_key_id), ("k1", None));
        assert_eq!(
            c.secrets.previous_link_signing_key,
            "/nbaops/dev/secrets/alerts/previous_link_signing_key"
        );
        let c = load(&[
            ("NBAOPS_ALERTS__ACK__KEY_ID", "2026-06"),
            ("NBAOPS_ALERTS__ACK__PREVIOUS_KEY_ID", "k1"),
        ])
        .unwrap();
        assert_eq!(
            (c.ack_key_id.as_str(), c.ack_previous_key_id.as_deref()),
            ("2026-06", Some("k1"))
        );
        for (k, v) in [
            ("NBAOPS_ALERTS__ACK__KEY_ID", ""),
            ("NBAOPS_ALERTS__ACK__KEY_ID", "a b"),
            ("NBAOPS_ALERTS__ACK__KEY_ID", "k\n1"),
            ("NBAOPS_ALERTS__ACK__PREVIOUS_KEY_ID", "k1"),
            ("NBAOPS_ALERTS__ACK__PREVIOUS_KEY_ID", &"x".repeat(33)),
        ] {
            let e = load(&[(k, v)]).unwrap_err();
            assert!(e.to_string().contains("alerts.ack."), "{k}={v}: {e}");
        }
    }

    #[test]
    fn grouping_resolution_and_rota_keys() {
        let c = load(&[]).unwrap();
        let i = &c.incidents;
        assert_eq!(i.group_window_minutes, 30);
        assert_eq!(i.causes[0].cause, "failover");
        assert!(i.causes[0]
            .effects
            .contains(&"pg-replication-lag".to_string()));
        assert_eq!(c.resolution_sla(Severity::P2), ResolutionSla::BusinessDay);
        assert_eq!(
            c.resolution_sla(Severity::P3),
            ResolutionSla::Minutes(48 * 60)
        );
        assert_eq!(c.resolution_sla(Severity::P4), ResolutionSla::None);
        assert!(i.rota.is_empty() && i.team_lead.is_none());
        assert_eq!(c.chain[0].mention.as_deref(), Some("@team-lead"));

        let c = load(&[
            (
                "NBAOPS_ALERTS__ONCALL__ROTA",
                r#"{"weeks": {"2026-W49": "alice"}, "weekdays": {"mon": "bob", "sat": "carol", "sun": "carol"}, "contacts": {"alice": "<@UALICE>"}}"#,
            ),
            ("NBAOPS_ALERTS__ONCALL__TEAM_LEAD", "<@ULEAD>"),
            ("NBAOPS_ALERTS__BUSINESS__TZ", "Europe/Paris"),
        ])
        .unwrap();
        assert_eq!(
            c.chain[0].mention.as_deref(),
            Some("<@ULEAD>"),
            "level 1 is the team lead"
        );
        let tz = c.business.tz;
        let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc();
        let who = |s: &str| {
            c.incidents
                .rota
                .on_call(at(s), tz)
                .map(|p| (p.name, p.mention))
        };
        // Week 49 of 2026 is Mon 30 Nov .. Sun 6 Dec: the week entry wins over the weekday map.
        assert_eq!(
            who("2026-12-05T12:00:00Z"),
            Some(("alice".into(), "<@UALICE>".into()))
        );
        assert_eq!(
            who("2026-11-30T00:30:00Z"),
            Some(("alice".into(), "<@UALICE>".into())),
            "01:30 Monday in Paris"
        );
        // Sunday 29 Nov 23:30 UTC is Monday 00:30 in Paris: week 49 already.
        assert_eq!(who("2026-11-29T23:30:00Z").unwrap().0, "alice");
        assert_eq!(
            who("2026-11-29T22:30:00Z").unwrap().0,
            "carol",
            "still Sunday in Paris"
        );
        // Week 50: the weekday map; a name without a contact is mentioned as @name.
        assert_eq!(
            who("2026-12-07T10:00:00Z"),
            Some(("bob".into(), "@bob".into()))
        );
        assert_eq!(who("2026-12-08T10:00:00Z"), None, "nobody on Tuesdays");
        // The year's edge: 2026-W53 exists (Mon 28 Dec 2026); 1 Jan 2027 is in it.
        let c = load(&[(
            "NBAOPS_ALERTS__ONCALL__ROTA",
            r#"{"weeks": {"2026-W53": "dora", "2027-W01": "eve"}}"#,
        )])
        .unwrap();
        let who = |s: &str| {
            c.incidents
                .rota
                .on_call(at(s), chrono_tz::UTC)
                .map(|p| p.name)
        };
        assert_eq!(who("2027-01-01T09:00:00Z").as_deref(), Some("dora"));
        assert_eq!(who("2027-01-04T09:00:00Z").as_deref(), Some("eve"));

        for (k, v) in [
            ("NBAOPS_ALERTS__ONCALL__ROTA", "alice,bob"),
            (
                "NBAOPS_ALERTS__ONCALL__ROTA",
                r#"{"weeks": {"2026-49": "a"}}"#,
            ),
            (
                "NBAOPS_ALERTS__ONCALL__ROTA",
                r#"{"weeks": {"2027-W53": "a"}}"#,
            ),
            (
                "NBAOPS_ALERTS__ONCALL__ROTA",
                r#"{"weekdays": {"funday": "a"}}"#,
            ),
            (
                "NBAOPS_ALERTS__ONCALL__ROTA",
                r#"{"weekdays": {"mon": " "}}"#,
            ),
            (
                "NBAOPS_ALERTS__ONCALL__ROTA",
                r#"{"contacts": {"a": "@a"}}"#,
            ),
            (
                "NBAOPS_ALERTS__ONCALL__ROTA",
                r#"{"week": {"2026-W49": "a"}}"#,
            ),
            ("NBAOPS_ALERTS__GROUP__CAUSES", "failover"),
            ("NBAOPS_ALERTS__GROUP__CAUSES", "failover=pg lag"),
            ("NBAOPS_ALERTS__GROUP__WINDOW_MINUTES", "-1"),
            ("NBAOPS_ALERTS__RESOLUTION__P2", "next-business-day"),
            ("NBAOPS_ALERTS__RESOLUTION__P3", "2d"),
        ] {
            let e = load(&[(k, v)]).unwrap_err().to_string();
            let key = k
                .trim_start_matches("NBAOPS_")
                .replace("__", ".")
                .to_ascii_lowercase();
            assert!(e.contains(&key), "{k}={v}: {e}");
        }
        let c = load(&[
            ("NBAOPS_ALERTS__GROUP__WINDOW_MINUTES", "0"),
            ("NBAOPS_ALERTS__GROUP__CAUSES", ""),
            ("NBAOPS_ALERTS__RESOLUTION__P1", "none"),
        ])
        .unwrap();
        assert_eq!(c.incidents.group_window_minutes, 0);
        assert!(c.incidents.causes.is_empty());
        assert_eq!(c.resolution_sla(Severity::P1), ResolutionSla::None);
    }
}

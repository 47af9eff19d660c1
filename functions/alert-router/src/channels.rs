//! What each channel receives (Slack incoming-webhook JSON, an email through SNS, a PagerDuty
//! Events v2 event) and the bounded retry every send goes through.

use std::future::Future;

use serde::Serialize;
use serde_json::{json, Value};

use nbaops_shared::alerts::{Alert, Severity};
use nbaops_shared::config::alerts::RetryPolicy;

use crate::plan::{backoff_schedule, Incident};

/// Why this message goes out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Firing,
    /// Still firing after the dedup window (or a rise in severity): `count` deliveries so far.
    Repeat {
        count: u64,
    },
    Resolved,
    Acknowledged {
        by: String,
    },
    Escalation {
        level: usize,
        name: String,
        mention: Option<String>,
    },
    /// A notice that pages nobody (an approval that expired): Slack and email only.
    Notice,
    /// A member of the incident's group arrived with a higher severity (issue #22).
    Raised {
        by: String,
    },
    /// Still open past its resolution SLA: the one reminder to its owner (issue #22).
    Reminder {
        due: String,
    },
}

/// What an alert asking for an approval carries: the signed Approve/Deny links (Slack, email)
/// and a note (every channel; PagerDuty gets only the note).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalPart {
    pub id: String,
    /// (label, url): "Approve as alice", "Deny as alice", ...
    pub links: Vec<(String, String)>,
    pub note: String,
}

/// One message, whatever the channel.
#[derive(Debug, Clone)]
pub struct Message {
    pub kind: Kind,
    pub severity: Severity,
    pub env: String,
    pub dedup_key: String,
    pub summary: String,
    pub resource: String,
    pub source_function: String,
    pub actions_taken: Vec<String>,
    pub runbook: Option<String>,
    pub details: Value,
    /// Why it fired, in the words of its source (a CloudWatch alarm's state reason).
    pub reason: Option<String>,
    pub ack_url: Option<String>,
    pub approval: Option<ApprovalPart>,
    /// The incident's assignee and, for a group, the keys that joined its thread (issue #22).
    pub on_call: Option<String>,
    pub grouped: Vec<String>,
}

impl Message {
    /// The message about an alert (a CloudWatch alarm's state reason as its `reason`).
    pub fn of_alert(alert: &Alert, kind: Kind, ack_url: Option<String>) -> Message {
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
            approval: None,
            on_call: None,
            grouped: vec![],
        }
    }

    /// The message about an incident (an acknowledgement, an escalation).
    pub fn of_incident(inc: &Incident, env: &str, kind: Kind, ack_url: Option<String>) -> Message {
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
            approval: None,
            on_call: on_call_of(inc),
            grouped: inc.members.iter().cloned().collect(),
        }
    }

    pub fn title(&self) -> String {
        let head = format!("[{}][{}] {}", self.severity, self.env, self.summary);
        match &self.kind {
            Kind::Firing => head,
            Kind::Repeat { count } => format!("{head} (still firing, {count} times)"),
            Kind::Resolved => format!("RESOLVED {head}"),
            Kind::Acknowledged { by } => format!("ACKNOWLEDGED ({by}) {head}"),
            Kind::Escalation { level, name, .. } => {
                format!("ESCALATED to level {level} ({name}) {head}")
            }
            Kind::Notice => format!("NOTICE {head}"),
            Kind::Raised { by } => format!("RAISED to {} by {by} {head}", self.severity),
            Kind::Reminder { due } => format!("RESOLUTION SLA BREACHED (due {due}) {head}"),
        }
    }

    fn lines(&self) -> Vec<String> {
        let mut lines = vec![
            format!("resource: {}", self.resource),
            format!("from: {}", self.source_function),
            format!("key: {}", self.dedup_key),
        ];
        if let Some(r) = &self.reason {
            lines.push(format!("why: {r}"));
        }
        if let Kind::Escalation {
            mention: Some(m), ..
        } = &self.kind
        {
            lines.insert(0, format!("{m}: not acknowledged within the response time"));
        }
        if let Some(who) = &self.on_call {
            let line = match &self.kind {
                Kind::Reminder { .. } => format!("{who}: still open past its resolution time"),
                Kind::Escalation { .. } => {
                    format!("assigned to {who} (on call), who has not acknowledged")
                }
                _ => format!("on call: {who}"),
            };
            lines.insert(0, line);
        }
        if !self.grouped.is_empty() {
            lines.push(format!(
                "grouped in this incident: {}",
                self.grouped.join(", ")
            ));
        }
        for a in &self.actions_taken {
            lines.push(format!("nbaops: {a}"));
        }
        if let Some(r) = &self.runbook {
            lines.push(format!("runbook: {r}"));
        }
        if let Some(a) = &self.approval {
            lines.push(a.note.clone());
        }
        lines
    }

    /// Slack incoming webhook body (mrkdwn text; the link renders as a button-like label).
    pub fn slack(&self) -> Value {
        let mut text = format!("*{}*\n{}", self.title(), self.lines().join("\n"));
        if let Some(url) = self.ack_url.as_ref().filter(|_| self.wants_ack()) {
            text.push_str(&format!("\n<{url}|Acknowledge>"));
        }
        if let Some(a) = &self.approval {
            let buttons: Vec<String> = a
                .links
                .iter()
                .map(|(label, url)| format!("<{url}|{label}>"))
                .collect();
            if !buttons.is_empty() {
                text.push_str(&format!("\n{}", buttons.join("  ")));
            }
        }
        json!({ "text": text })
    }

    /// Subject (SNS: ASCII, at most 100 characters) and plain-text body.
    pub fn email(&self) -> (String, String) {
        let subject: String = self
            .title()
            .chars()
            .filter(|c| c.is_ascii() && !c.is_ascii_control())
            .take(100)
            .collect();
        let mut body = format!("{}\n\n{}\n", self.title(), self.lines().join("\n"));
        if let Some(url) = self.ack_url.as_ref().filter(|_| self.wants_ack()) {
            body.push_str(&format!("\nAcknowledge: {url}\n"));
        }
        if let Some(a) = &self.approval {
            for (label, url) in &a.links {
                body.push_str(&format!("\n{label}: {url}\n"));
            }
        }
        if !self.details.is_null() && self.details != json!({}) {
            body.push_str(&format!("\ndetails: {}\n", self.details));
        }
        (subject, body)
    }

    fn wants_ack(&self) -> bool {
        matches!(
            self.kind,
            Kind::Firing
                | Kind::Repeat { .. }
                | Kind::Escalation { .. }
                | Kind::Raised { .. }
                | Kind::Reminder { .. }
        )
    }

    /// PagerDuty Events API v2: trigger carries the payload, acknowledge/resolve only the key.
    pub fn pagerduty(&self, routing_key: &str) -> Value {
        let action = match self.kind {
            Kind::Resolved => "resolve",
            Kind::Acknowledged { .. } => "acknowledge",
            _ => "trigger",
        };
        if action != "trigger" {
            return json!({
                "routing_key": routing_key,
                "event_action": action,
                "dedup_key": self.dedup_key,
            });
        }
        let severity = match self.severity {
            Severity::P1 => "critical",
            Severity::P2 => "error",
            Severity::P3 => "warning",
            Severity::P4 => "info",
        };
        let summary: String = self.title().chars().take(1024).collect();
        let mut event = json!({
            "routing_key": routing_key,
            "event_action": "trigger",
            "dedup_key": self.dedup_key,
            "client": "nbaops",
            "payload": {
                "summary": summary,
                "source": if self.resource.is_empty() { &self.env } else { &self.resource },
                "severity": severity,
                "component": self.resource,
                "group": self.source_function,
                "custom_details": {
                    "approval": self.approval.as_ref().map(|a| &a.note),
                    "env": self.env,
                    "actions_taken": self.actions_taken,
                    "runbook": self.runbook,
                    "details": self.details,
                },
            },
        });
        if let Some(url) = &self.ack_url {
            event["links"] = json!([{ "href": url, "text": "Acknowledge in nbaops" }]);
        }
        event
    }
}

/// How a message names the incident's assignee: their mention and name.
pub fn on_call_of(inc: &Incident) -> Option<String> {
    inc.assignee
        .as_ref()
        .map(|name| match &inc.assignee_mention {
            Some(m) if m != name => format!("{m} ({name})"),
            _ => name.clone(),
        })
}

/// One attempt's outcome.
pub enum Attempt {
    Sent(String),
    /// Timeout, 5xx, 429, a retryable AWS error: try again after the backoff.
    Retry(String),
    /// Refused for good (4xx, not configured): no point retrying.
    GiveUp(String),
}

/// What a channel did with one message.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Sent {
    pub channel: String,
    pub ok: bool,
    pub attempts: u32,
    pub detail: String,
}

impl Sent {
    pub fn skipped(channel: &str, why: &str) -> Sent {
        Sent {
            channel: channel.into(),
            ok: false,
            attempts: 0,
            detail: why.into(),
        }
    }
    /// What `nbaops plan` reports instead of a delivery: counted as delivered (the plan goes on as
    /// if it were), with no attempt made.
    pub fn planned(channel: &str) -> Sent {
        Sent {
            channel: channel.into(),
            ok: true,
            attempts: 0,
            detail: format!("dry-run (nbaops plan): would send to {channel}, not sent"),
        }
    }
    pub fn line(&self) -> String {
        if self.ok && self.attempts == 0 {
            format!("{}: {}", self.channel, self.detail)
        } else if self.ok {
            format!(
                "{}: sent ({} attempt(s), {})",
                self.channel, self.attempts, self.detail
            )
        } else {
            format!(
                "{}: FAILED after {} attempt(s): {}",
                self.channel, self.attempts, self.detail
            )
        }
    }
}

/// Runs `attempt` until it is sent, refused, or the backoff schedule is spent.
pub async fn with_retry<F, Fut>(channel: &str, policy: &RetryPolicy, mut attempt: F) -> Sent
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Attempt>,
{
    let delays = backoff_schedule(policy);
    let mut n = 0u32;
    loop {
        n += 1;
        let (ok, detail, retry) = match attempt().await {
            Attempt::Sent(d) => (true, d, false),
            Attempt::GiveUp(d) => (false, d, false),
            Attempt::Retry(d) => (false, d, true),
        };
        if ok || !retry {
            return Sent {
                channel: channel.into(),
                ok,
                attempts: n,
                detail,
            };
        }
        match delays.get(n as usize - 1) {
            Some(d) => {
                tracing::warn!(channel, attempt = n, error = %detail, delay_ms = d.as_millis() as u64, "channel failed, retrying");
                tokio::time::sleep(*d).await;
            }
            None => {
                return Sent {
                    channel: channel.into(),
                    ok: false,
                    attempts: n,
                    detail,
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn msg(kind: Kind) -> Message {
        Message {
            kind,
            severity: Severity::P1,
            env: "dev".into(),
            dedup_key: "db-down#nbaops-dev-db".into(),
            summary: "database down".into(),
            resource: "rds:nbaops-dev-db".into(),
            source_function: "rds-events".into(),
            actions_taken: vec!["failover started".into()],
            runbook: Some("check the instance".into()),
            details: json!({}),
            reason: None,
            ack_url: Some("https://fn.example/?key=k&exp=1&sig=s".into()),
            approval: None,
            on_call: None,
            grouped: vec![],
        }
    }

    /// An alert announcing an action carries the audit record's sentence; every channel prints
    /// it word for word (issue #18: the same sentence in the alert as in the audit record).
    #[test]
    fn the_decision_sentence_reaches_every_channel_verbatim() {
        let sentence = "Scaled nbaops-dev-web 2 → 3: CPUUtilization 75.2 % > 70 % for 5 min \
                        (SPEC 2.5 capacity: alarm nbaops-dev-web-cpu-high ALARM; scale.asg.step); \
                        cooldown clear; inside bounds 2..4.";
        let mut m = msg(Kind::Firing);
        m.actions_taken = vec![sentence.into()];
        let slack = m.slack()["text"].as_str().unwrap().to_string();
        assert!(slack.contains(&format!("nbaops: {sentence}")), "{slack}");
        let (_, body) = m.email();
        assert!(body.contains(&format!("nbaops: {sentence}")), "{body}");
        let pd = m.pagerduty("rk");
        assert_eq!(
            pd["payload"]["custom_details"]["actions_taken"][0], sentence,
            "{pd}"
        );
    }

    #[test]
    fn pagerduty_actions_and_slack_link() {
        let t = msg(Kind::Firing).pagerduty("rk");
        assert_eq!(t["event_action"], "trigger");
        assert_eq!(t["payload"]["severity"], "critical");
        assert_eq!(t["dedup_key"], "db-down#nbaops-dev-db");
        assert_eq!(
            msg(Kind::Resolved).pagerduty("rk")["event_action"],
            "resolve"
        );
        let ack = msg(Kind::Acknowledged { by: "link".into() }).pagerduty("rk");
        assert_eq!(ack["event_action"], "acknowledge");
        assert!(ack.get("payload").is_none());
        let s = msg(Kind::Firing).slack()["text"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            s.contains("|Acknowledge>") && s.contains("[P1][dev]"),
            "{s}"
        );
        let r = msg(Kind::Resolved).slack()["text"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            r.starts_with("*RESOLVED") && !r.contains("Acknowledge"),
            "{r}"
        );
        let (subject, body) = msg(Kind::Escalation {
            level: 1,
            name: "team-lead".into(),
            mention: Some("@lead".into()),
        })
        .email();
        assert!(
            subject.starts_with("ESCALATED to level 1 (team-lead)"),
            "{subject}"
        );
        assert!(
            body.contains("@lead") && body.contains("Acknowledge: https://"),
            "{body}"
        );
    }

    fn fast(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            base_ms: 1,
            max_ms: 2,
            budget_ms: 100,
        }
    }

    #[tokio::test]
    async fn retries_retryable_failures_only_and_within_bounds() {
        let calls = AtomicU32::new(0);
        let s = with_retry("slack", &fast(3), || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                Attempt::Retry("HTTP 500".into())
            } else {
                Attempt::Sent("HTTP 200".into())
            }
        })
        .await;
        assert!(s.ok && s.attempts == 3, "{s:?}");

        let calls = AtomicU32::new(0);
        let s = with_retry("slack", &fast(3), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Attempt::Retry("HTTP 429".into())
        })
        .await;
        assert!(
            !s.ok && s.attempts == 3 && calls.load(Ordering::SeqCst) == 3,
            "{s:?}"
        );

        let s = with_retry("pagerduty", &fast(3), || async {
            Attempt::GiveUp("HTTP 400".into())
        })
        .await;
        assert!(!s.ok && s.attempts == 1, "{s:?}");
    }

    #[test]
    fn approval_links_in_slack_and_email_a_note_only_in_pagerduty() {
        let mut m = msg(Kind::Firing);
        m.approval = Some(ApprovalPart {
            id: "abc".into(),
            links: vec![
                (
                    "Approve as alice".into(),
                    "https://fn.example/?approval=abc&verdict=approve".into(),
                ),
                (
                    "Deny as alice".into(),
                    "https://fn.example/?approval=abc&verdict=deny".into(),
                ),
            ],
            note: "approval abc waits for an answer".into(),
        });
        let s = m.slack()["text"].as_str().unwrap().to_string();
        assert!(
            s.contains("<https://fn.example/?approval=abc&verdict=approve|Approve as alice>"),
            "{s}"
        );
        assert!(
            s.contains("|Deny as alice>") && s.contains("approval abc waits"),
            "{s}"
        );
        let (_, body) = m.email();
        assert!(
            body.contains("Approve as alice: https://fn.example/?approval=abc&verdict=approve"),
            "{body}"
        );
        let pd = m.pagerduty("rk");
        assert_eq!(
            pd["payload"]["custom_details"]["approval"],
            "approval abc waits for an answer"
        );
        assert!(!pd.to_string().contains("verdict="), "{pd}");
    }
}

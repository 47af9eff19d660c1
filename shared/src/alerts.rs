//! The alert message every nbaops function publishes to the alerts topic. Routing to Slack,
//! email and PagerDuty is the alert-router's job; this is only the contract and the publisher.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{NbaopsError, Result};
use crate::ports::Notifier;

/// SPEC 3.2.1: P1 critical .. P4 low. Ordered so that `P1 < P2` means "more severe".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Severity {
    P1,
    P2,
    P3,
    P4,
}

impl FromStr for Severity {
    type Err = NbaopsError;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_uppercase().as_str() {
            "P1" => Ok(Severity::P1),
            "P2" => Ok(Severity::P2),
            "P3" => Ok(Severity::P3),
            "P4" => Ok(Severity::P4),
            other => Err(NbaopsError::InvalidEvent(format!(
                "unknown severity '{other}'"
            ))),
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub schema: String,
    pub severity: Severity,
    pub status: AlertStatus,
    /// Same key = same incident: the router updates one thread instead of sending again.
    pub dedup_key: String,
    pub env: String,
    pub source_function: String,
    pub resource: String,
    pub summary: String,
    pub details: Value,
    /// What nbaops did about it (or why it did not).
    pub actions_taken: Vec<String>,
    pub runbook: Option<String>,
    /// The repository's page for this alert's kind (`docs/runbooks/<kind>.md`, see [`KINDS`]);
    /// an unknown kind points at the index, `docs/runbooks/README.md`.
    #[serde(default)]
    pub runbook_page: String,
    pub at: DateTime<Utc>,
    /// The approval request this alert asks for (issue #19): alert-router puts signed Approve and
    /// Deny links for it in the message. `None` for every other alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
}

pub const ALERT_SCHEMA: &str = "nbaops.alert/v1";

/// The kind of the alert that asks a person to approve an action (dedup key `approval#<id>`).
pub const APPROVAL_KIND: &str = "approval";

/// Every kind of alert nbaops raises, with what it means. An alert's kind is its dedup key's
/// prefix before the first `#`; a CloudWatch alarm routed by alert-router (dedup key: the
/// alarm's ARN) is `cloudwatch-alarm`. Each kind has its page `docs/runbooks/<kind>.md`.
#[rustfmt::skip]
pub const KINDS: &[(&str, &str)] = &[
    // any function, through the guard (issue #19)
    (APPROVAL_KIND, "an action waits for a person: approve or deny it with the links in the message"),
    // any function consuming an SQS work queue (issue #20, runtime::fanout)
    ("work-dlq", "a work item (one target) failed on every receive and moved to the dead-letter queue"),
    // scale-on-alarm
    ("scale_out", "a group was scaled out (or the attempt failed)"),
    ("scale_in", "a group was scaled in (or the attempt failed)"),
    ("capacity-exhausted", "a resource is at its ceiling and its alarm still fires"),
    ("rds-class", "the RDS instance class was raised one rung (or the change failed)"),
    ("cache-nodes", "a Memcached node was added (or the change failed)"),
    ("flapping", "an alarm changes state too often: nbaops stopped acting on it"),
    ("followup", "a re-check of a sustained alarm could not be scheduled: nbaops stops stepping"),
    ("game-night-calendar", "the game calendar is missing or has lines that are not planned"),
    ("game-night", "a game-night pre-scale or return of a group failed"),
    // pg-health: `pg-<signal>`
    ("pg-unreachable", "a database refused or failed the monitor's connection"),
    ("pg-connections", "connections used against usable slots, or too many clients"),
    ("pg-cache-hit", "buffer cache hit ratio below the threshold"),
    ("pg-deadlocks", "deadlocks per hour above the threshold"),
    ("pg-replication-lag", "a standby or replica is behind the primary"),
    ("pg-wraparound", "transaction ID or multixact age towards wraparound"),
    ("pg-bloat", "a table's bloat above the threshold"),
    ("pg-long-tx", "a transaction open longer than the threshold"),
    ("pg-idle-in-tx", "a session idle in transaction longer than the threshold"),
    ("pg-lock-wait", "sessions waiting on locks longer than the threshold"),
    ("pg-vacuum-failure", "VACUUM fails or cannot remove dead rows"),
    ("pg-vacuum-progress", "a VACUUM running for a long time"),
    ("pg-unused-index", "an index never scanned since statistics began"),
    ("pg-slow-query", "a statement's mean time above the threshold"),
    ("pg-archiver", "WAL archiving fails"),
    ("pg-check-failed", "a pg-health check could not run (timeout, privilege)"),
    ("pg-index-bloat", "a btree index's bloat above the threshold"),
    ("pg-wal-rate", "WAL generated per second between two runs above the threshold"),
    ("pg-vacuum-delay", "a running VACUUM sleeps most of its time in its cost-based delay"),
    // vacuum-trigger
    ("pg-maintenance", "a VACUUM / ANALYZE / REINDEX cleanup ran or failed on a table"),
    ("pg-maintenance-run", "a maintenance run could not reach or finish a database"),
    ("pg-end-transaction", "a runaway transaction was cancelled or terminated (or failed to be)"),
    // failover-notify
    ("failover", "an RDS failover: start, completion and verification, or a stuck one"),
    ("rds-event", "an RDS event other than a failover (reboot, storage, maintenance...)"),
    // cost-anomaly
    ("cost-anomaly", "a Cost Anomaly Detection alert, attributed and maybe contained"),
    ("cost-budget", "an AWS Budgets notification, attributed and maybe contained"),
    ("cost-spike", "the daily check found a service or environment costing above its baseline"),
    // offhours
    ("offhours", "a resource's state differs from its schedule, or a schedule action failed"),
    // backup-guard
    ("backup-rpo", "the recovery point objective is breached"),
    ("backup-monthly", "the monthly snapshot could not be taken"),
    ("backup-copy", "a snapshot copy to the DR region failed"),
    ("backup-dr", "no DR region is configured: monthly snapshots are not copied"),
    ("backup-drill", "a restore drill: started, impossible, or its result"),
    ("backup-s3", "a backup kept in S3 (logical, WAL, physical) is missing, late, in the wrong storage class, too few, kept too long, or unreadable"),
    // posture-check (issue #21)
    ("posture", "a P1/P2 posture finding: one resource fails one rule (public, unencrypted, no TLS...); resolved when fixed"),
    ("posture-summary", "the daily posture summary: findings per rule, what is unused and what it costs"),
    ("posture-fix", "an automatic posture fix (deletion protection on, missing tags filled) failed"),
    // alert-router
    ("cloudwatch-alarm", "a CloudWatch alarm about nbaops itself or the platform"),
    // every function (shared)
    ("gave-up", "an AWS service kept failing: the invocation gave up"),
    ("ledger-unreadable", "a ledger item cannot be read: no action on that resource"),
];

/// Where the runbook pages live, relative to the repository's root.
pub const RUNBOOK_DIR: &str = "docs/runbooks";

/// The kind of an alert: its dedup key's prefix before the first `#`; a CloudWatch alarm's key
/// (its ARN, or `cloudwatch-alarm:<name>` when the notification names no region) is
/// `cloudwatch-alarm`.
pub fn kind_of(dedup_key: &str) -> &str {
    let is_alarm_arn = dedup_key.starts_with("arn:") && dedup_key.contains(":cloudwatch:");
    if is_alarm_arn || dedup_key.starts_with("cloudwatch-alarm:") {
        return "cloudwatch-alarm";
    }
    dedup_key.split('#').next().unwrap_or_default()
}

/// `docs/runbooks/<kind>.md` for a kind in [`KINDS`], else the index `docs/runbooks/README.md`.
pub fn runbook_page(dedup_key: &str) -> String {
    let kind = kind_of(dedup_key);
    match KINDS.iter().find(|(k, _)| *k == kind) {
        Some((k, _)) => format!("{RUNBOOK_DIR}/{k}.md"),
        None => format!("{RUNBOOK_DIR}/README.md"),
    }
}

impl Alert {
    pub fn new(
        severity: Severity,
        env: &str,
        function: &str,
        resource: &str,
        dedup_key: impl Into<String>,
        summary: impl Into<String>,
        at: DateTime<Utc>,
    ) -> Alert {
        let dedup_key = dedup_key.into();
        Alert {
            schema: ALERT_SCHEMA.into(),
            severity,
            status: AlertStatus::Firing,
            runbook_page: runbook_page(&dedup_key),
            approval_id: None,
            dedup_key,
            env: env.into(),
            source_function: function.into(),
            resource: resource.into(),
            summary: summary.into(),
            details: Value::Object(Default::default()),
            actions_taken: vec![],
            runbook: None,
            at,
        }
    }

    /// The alert asks for approval request `id` (kind [`APPROVAL_KIND`]).
    pub fn asking(mut self, id: &str) -> Self {
        self.approval_id = Some(id.to_string());
        self
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    pub fn with_action(mut self, action: impl Into<String>) -> Self {
        self.actions_taken.push(action.into());
        self
    }

    pub fn with_runbook(mut self, hint: impl Into<String>) -> Self {
        self.runbook = Some(hint.into());
        self
    }

    pub fn subject(&self) -> String {
        // SNS subjects: ASCII, at most 100 characters.
        let s: String = format!("[{}][{}] {}", self.severity, self.env, self.summary)
            .chars()
            .filter(|c| c.is_ascii() && !c.is_ascii_control())
            .take(100)
            .collect();
        s
    }
}

/// Publishes alerts; with no topic configured it only logs (a dev convenience, visible in logs).
pub struct AlertPublisher<'a> {
    pub notifier: &'a dyn Notifier,
    pub topic_arn: &'a str,
}

impl AlertPublisher<'_> {
    pub async fn publish(&self, alert: &Alert) -> Result<Option<String>> {
        let body = serde_json::to_string(alert)
            .map_err(|e| NbaopsError::InvalidEvent(format!("alert not serialisable: {e}")))?;
        tracing::info!(target: "nbaops::alert", severity = %alert.severity, dedup_key = %alert.dedup_key, alert = %body, "alert");
        if self.topic_arn.is_empty() {
            tracing::warn!("alerts_topic_arn is not configured: alert logged only");
            return Ok(None);
        }
        let mut attrs = BTreeMap::new();
        attrs.insert("severity".to_string(), alert.severity.to_string());
        attrs.insert("env".to_string(), alert.env.clone());
        attrs.insert("dedup_key".to_string(), alert.dedup_key.clone());
        let id = self
            .notifier
            .publish(self.topic_arn, &alert.subject(), &body, &attrs)
            .await?;
        Ok(Some(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_order_and_parse() {
        assert!(Severity::P1 < Severity::P3);
        assert_eq!("p2".parse::<Severity>().unwrap(), Severity::P2);
        assert!("P5".parse::<Severity>().is_err());
    }

    #[test]
    fn subject_is_short_ascii() {
        let a = Alert::new(
            Severity::P3,
            "dev",
            "f",
            "r",
            "k",
            "é".repeat(10) + &"x".repeat(200),
            chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default(),
        );
        let s = a.subject();
        assert!(s.len() <= 100 && s.is_ascii() && s.starts_with("[P3][dev]"));
    }

    fn at() -> DateTime<Utc> {
        chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default()
    }

    #[test]
    fn kind_is_the_prefix_before_the_first_hash() {
        assert_eq!(kind_of("pg-bloat#pg:app/public.t"), "pg-bloat");
        assert_eq!(kind_of("cost-budget#monthly#ACTUAL"), "cost-budget");
        assert_eq!(kind_of("no-hash-at-all"), "no-hash-at-all");
        assert_eq!(kind_of(""), "");
        assert_eq!(
            kind_of("arn:aws:cloudwatch:eu-west-1:1:alarm:nbaops-dev-dlq#1"),
            "cloudwatch-alarm"
        );
    }

    #[test]
    fn every_alert_links_its_kinds_runbook_page() {
        for (kind, meaning) in KINDS {
            assert!(!meaning.is_empty(), "{kind}");
            let a = Alert::new(
                Severity::P2,
                "dev",
                "f",
                "r",
                format!("{kind}#r"),
                "s",
                at(),
            );
            assert_eq!(a.runbook_page, format!("docs/runbooks/{kind}.md"));
            // Serialized: the router and every subscriber see it.
            let v = serde_json::to_value(&a).unwrap_or_default();
            assert_eq!(v["runbook_page"], format!("docs/runbooks/{kind}.md"));
        }
    }

    #[test]
    fn an_unknown_kind_still_makes_an_alert_linking_the_index() {
        for key in [
            "k",
            "",
            "#",
            "not-a-kind#x",
            "pg-#x",
            "\u{0}#\u{ffff}",
            "Pg-Bloat#x",
        ] {
            let a = Alert::new(Severity::P4, "dev", "f", "r", key, "s", at())
                .with_runbook("a hint stays");
            assert_eq!(a.runbook_page, "docs/runbooks/README.md", "{key:?}");
            assert_eq!(a.dedup_key, key);
            assert_eq!(a.runbook.as_deref(), Some("a hint stays"));
        }
    }

    #[test]
    fn an_alert_without_runbook_page_still_reads() {
        // Messages of an older version on the topic: the field defaults to empty.
        let a = Alert::new(Severity::P3, "dev", "f", "r", "pg-bloat#x", "s", at());
        let mut v = serde_json::to_value(&a).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.remove("runbook_page");
        }
        let back: Alert = serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.runbook_page, "");
        assert_eq!(back.dedup_key, "pg-bloat#x");
    }
}

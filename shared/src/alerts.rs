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
    pub at: DateTime<Utc>,
}

pub const ALERT_SCHEMA: &str = "nbaops.alert/v1";

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
        Alert {
            schema: ALERT_SCHEMA.into(),
            severity,
            status: AlertStatus::Firing,
            dedup_key: dedup_key.into(),
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
}

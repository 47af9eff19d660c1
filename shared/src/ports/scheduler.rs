//! EventBridge Scheduler one-time schedules: "invoke this function with this input at that
//! minute, once, then delete the schedule".

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::error::Result;

/// A one-time schedule (`at(...)` expression, UTC, flexible window off, deleted after it ran).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OneTimeSchedule {
    /// The schedule group ("default" when none is configured).
    pub group: String,
    /// 1 to 64 characters of `[0-9a-zA-Z-_.]`; unique in its group: a second create of the same
    /// name is refused, which is what makes scheduling idempotent.
    pub name: String,
    /// Whole seconds; the scheduler fires within the minute.
    pub at: DateTime<Utc>,
    /// The Lambda function to invoke.
    pub target_arn: String,
    /// The role EventBridge Scheduler assumes to invoke it (`lambda:InvokeFunction`).
    pub role_arn: String,
    /// The event the function receives.
    pub input: Value,
}

impl OneTimeSchedule {
    /// The schedule expression AWS expects: `at(yyyy-mm-ddThh:mm:ss)`.
    pub fn expression(&self) -> String {
        format!("at({})", self.at.format("%Y-%m-%dT%H:%M:%S"))
    }

    /// What AWS refuses before anything else (the emulator does not check it): a name or group
    /// outside 1-64 of `[0-9a-zA-Z-_.]`
    /// (<https://docs.aws.amazon.com/scheduler/latest/APIReference/API_CreateSchedule.html>).
    pub fn check(&self) -> std::result::Result<(), String> {
        let ok = |n: &str| {
            !n.is_empty()
                && n.len() <= 64
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !ok(&self.name) {
            return Err(format!(
                "schedule name '{}' is not 1-64 of [0-9a-zA-Z-_.]",
                self.name
            ));
        }
        if !ok(&self.group) {
            return Err(format!(
                "schedule group '{}' is not 1-64 of [0-9a-zA-Z-_.]",
                self.group
            ));
        }
        Ok(())
    }

    /// A schedule name from free text: disallowed characters become '-', at most 64 characters
    /// (the tail, with a short hash of the whole, when longer), so two different texts never
    /// share a name.
    pub fn name_for(text: &str) -> String {
        let clean: String = text
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        if clean == text && clean.len() <= 64 {
            return clean;
        }
        use sha2::Digest;
        let digest = sha2::Sha256::digest(text.as_bytes());
        let hash: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
        let keep = 64 - hash.len() - 1;
        let head: String = clean.chars().take(keep).collect();
        format!("{head}-{hash}")
    }
}

#[async_trait]
pub trait Scheduler: Send + Sync {
    /// Creates the schedule; `Ok(false)` when one of that name already exists in the group
    /// (ConflictException): nothing was changed.
    async fn create_once(&self, s: &OneTimeSchedule) -> Result<bool>;
    /// Deletes the schedule; `Ok(false)` when there was none (ResourceNotFoundException).
    async fn delete(&self, group: &str, name: &str) -> Result<bool>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn names_are_what_aws_accepts_and_distinct() {
        assert_eq!(
            OneTimeSchedule::name_for("recheck-web-cpu"),
            "recheck-web-cpu"
        );
        let odd = OneTimeSchedule::name_for("recheck#asg:web/alarm name");
        assert!(odd.len() <= 64);
        assert!(odd
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')));
        // Same cleaned text, different input: different names.
        assert_ne!(odd, OneTimeSchedule::name_for("recheck#asg:web/alarm-name"));
        let long = "x".repeat(100);
        let n = OneTimeSchedule::name_for(&long);
        assert_eq!(n.len(), 64);
        assert_ne!(n, OneTimeSchedule::name_for(&"x".repeat(101)));
    }

    #[test]
    fn the_expression_is_an_at_expression_in_whole_seconds() {
        let s = OneTimeSchedule {
            group: "default".into(),
            name: "n".into(),
            at: Utc.with_ymd_and_hms(2026, 6, 17, 14, 5, 0).unwrap(),
            target_arn: "arn".into(),
            role_arn: "role".into(),
            input: serde_json::json!({}),
        };
        assert_eq!(s.expression(), "at(2026-06-17T14:05:00)");
    }
}

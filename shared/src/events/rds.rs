//! RDS events, from EventBridge (`RDS DB … Event`) or an RDS event subscription via SNS.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::util::{arn_tail, arr_field, obj_field, scalar_string, str_field, time_field, truncate};
use super::{Ctx, Delivery, NotForMe};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum RdsSourceType {
    Instance,
    Cluster,
    Snapshot,
    ClusterSnapshot,
    ParameterGroup,
    SecurityGroup,
    Proxy,
    /// As written by AWS (e.g. `BLUE_GREEN_DEPLOYMENT`).
    Other(String),
}

impl RdsSourceType {
    /// Accepts both the EventBridge spelling (`DB_INSTANCE`, `CLUSTER`, `SNAPSHOT`,
    /// `CLUSTER_SNAPSHOT`, `DB_PARAMETER_GROUP`, `SECURITY_GROUP`, `DB_PROXY`) and the
    /// SNS/API spelling (`db-instance`, `db-cluster`, `db-snapshot`, …).
    pub fn parse(s: &str) -> Self {
        let norm = s.trim().to_ascii_lowercase().replace(['_', ' '], "-");
        let norm = norm.strip_prefix("db-").unwrap_or(&norm);
        match norm {
            "instance" => Self::Instance,
            "cluster" => Self::Cluster,
            "snapshot" => Self::Snapshot,
            "cluster-snapshot" => Self::ClusterSnapshot,
            "parameter-group" | "cluster-parameter-group" => Self::ParameterGroup,
            "security-group" => Self::SecurityGroup,
            "proxy" => Self::Proxy,
            _ => Self::Other(s.trim().to_string()),
        }
    }

    /// From the EventBridge detail-type (`RDS DB Cluster Event` …).
    fn from_detail_type(dt: &str) -> Option<Self> {
        let inner = dt.strip_prefix("RDS DB ")?.strip_suffix(" Event")?;
        match Self::parse(inner) {
            Self::Other(_) => None,
            t => Some(t),
        }
    }

    /// From the resource type in an RDS ARN (`arn:aws:rds:…:db:name`).
    fn from_arn(arn: &str) -> Option<Self> {
        let parsed = super::util::parse_arn(arn)?;
        if parsed.service != "rds" {
            return None;
        }
        let resource = parsed.resource;
        let kind = resource.split(':').next()?;
        Some(match kind {
            "db" => Self::Instance,
            "cluster" => Self::Cluster,
            "snapshot" => Self::Snapshot,
            "cluster-snapshot" => Self::ClusterSnapshot,
            "pg" | "cluster-pg" => Self::ParameterGroup,
            "secgrp" => Self::SecurityGroup,
            "db-proxy" => Self::Proxy,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RdsEvent {
    pub source_type: RdsSourceType,
    /// DB instance / cluster / snapshot identifier (a leading `rds:` is stripped for
    /// instances and clusters; automated snapshot names keep it, it is part of the name).
    pub source_id: String,
    pub source_arn: Option<String>,
    /// Always `RDS-EVENT-NNNN`, even when AWS sent a documentation URL.
    pub event_code: Option<String>,
    /// Lowercase, as AWS writes them (`failover`, `notification`…); empty from SNS.
    pub categories: Vec<String>,
    pub message: String,
    pub at: DateTime<Utc>,
    pub delivery: Delivery,
    pub event_id: String,
    /// The account and region the event came from: the EventBridge envelope's (a member account
    /// forwards its RDS events to the hub's bus with them, issue #20), else the source ARN's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

impl RdsEvent {
    /// `event_code == Some(code)`, where `code` may be `"0049"`, `"49"` or `"RDS-EVENT-0049"`.
    pub fn is(&self, code: &str) -> bool {
        normalise_event_code(code).is_some_and(|c| self.event_code.as_deref() == Some(&c))
    }
}

pub(crate) fn is_rds_detail_type(dt: &str) -> bool {
    dt.starts_with("RDS DB ") && dt.ends_with(" Event")
}

/// `RDS-EVENT-0049` from `"RDS-EVENT-0049"`, `"rds-event-49"`, `"0049"`, or
/// `"http://docs.amazonwebservices.com/…/USER_Events.html#RDS-EVENT-0049"`.
pub fn normalise_event_code(raw: &str) -> Option<String> {
    let t = raw.trim();
    let upper = t.to_ascii_uppercase();
    let digits_from = match upper.rfind("RDS-EVENT-") {
        Some(pos) => t.get(pos + "RDS-EVENT-".len()..)?,
        None if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit()) => t,
        None => return None,
    };
    let digits: String = digits_from
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let n: u32 = digits.parse().ok()?;
    if digits.len() > 6 {
        return None;
    }
    Some(format!("RDS-EVENT-{n:04}"))
}

struct Draft {
    source_type: Option<RdsSourceType>,
    source_id: Option<String>,
    source_arn: Option<String>,
    event_code: Option<String>,
    categories: Vec<String>,
    message: Option<String>,
    at: Option<DateTime<Utc>>,
}

fn finish(d: Draft, ctx: &Ctx) -> Result<RdsEvent, NotForMe> {
    let source_type = d
        .source_type
        .or_else(|| d.source_arn.as_deref().and_then(RdsSourceType::from_arn))
        .unwrap_or_else(|| RdsSourceType::Other(String::new()));
    let source_id = d
        .source_id
        .or_else(|| d.source_arn.as_deref().and_then(arn_tail))
        .ok_or_else(|| NotForMe::new("RDS event without SourceIdentifier or SourceArn"))?;
    let source_id = match source_type {
        RdsSourceType::Instance | RdsSourceType::Cluster => source_id
            .strip_prefix("rds:")
            .map(str::to_string)
            .unwrap_or(source_id),
        _ => source_id,
    };
    let at = d.at.or(ctx.time).ok_or_else(|| {
        NotForMe::new(format!(
            "RDS event for '{}' without a parsable time",
            truncate(&source_id, 80)
        ))
    })?;
    let event_id = ctx.id.clone().unwrap_or_else(|| {
        format!(
            "rds/{}/{}/{}",
            source_id,
            d.event_code.as_deref().unwrap_or("unknown"),
            super::util::stamp(&at)
        )
    });
    let account = ctx
        .account
        .clone()
        .or_else(|| d.source_arn.as_deref().and_then(super::util::arn_account));
    let region = ctx
        .region
        .clone()
        .or_else(|| d.source_arn.as_deref().and_then(super::util::arn_region));
    Ok(RdsEvent {
        source_type,
        source_id,
        source_arn: d.source_arn,
        event_code: d.event_code,
        categories: d.categories,
        message: d.message.unwrap_or_default(),
        at,
        delivery: ctx.delivery,
        event_id,
        account,
        region,
    })
}

/// EventBridge `RDS DB Instance Event` / `Cluster` / `Snapshot` / `Cluster Snapshot` …
pub(crate) fn from_eventbridge(ev: &Value, ctx: &Ctx) -> Result<RdsEvent, NotForMe> {
    let detail = obj_field(ev, &["detail"])
        .ok_or_else(|| NotForMe::new("RDS EventBridge event without detail"))?;
    let detail_type = str_field(ev, &["detail-type"]).unwrap_or_default();
    let source_type = str_field(detail, &["SourceType"])
        .map(|s| RdsSourceType::parse(&s))
        .filter(|t| !matches!(t, RdsSourceType::Other(_)))
        .or_else(|| RdsSourceType::from_detail_type(&detail_type))
        .or_else(|| str_field(detail, &["SourceType"]).map(|s| RdsSourceType::parse(&s)));
    let source_arn = str_field(detail, &["SourceArn"])
        .or_else(|| ctx.resources.iter().find(|r| r.contains(":rds:")).cloned());
    let categories = arr_field(detail, &["EventCategories"])
        .iter()
        .filter_map(scalar_string)
        .collect();
    finish(
        Draft {
            source_type,
            source_id: str_field(detail, &["SourceIdentifier"]),
            source_arn,
            event_code: str_field(detail, &["EventID"]).and_then(|c| normalise_event_code(&c)),
            categories,
            message: str_field(detail, &["Message"]),
            at: time_field(detail, &["Date"]),
        },
        ctx,
    )
}

/// RDS event subscription message (`"Event Source"`, `"Event Time"`, …) in an SNS `Message`.
pub(crate) fn from_sns(msg: &Value, ctx: &Ctx) -> Result<RdsEvent, NotForMe> {
    finish(
        Draft {
            source_type: str_field(msg, &["Event Source"]).map(|s| RdsSourceType::parse(&s)),
            source_id: str_field(msg, &["Source ID"]),
            source_arn: str_field(msg, &["Source ARN"]),
            event_code: str_field(msg, &["Event ID"]).and_then(|c| normalise_event_code(&c)),
            categories: arr_field(msg, &["Event Categories"])
                .iter()
                .filter_map(scalar_string)
                .collect(),
            message: str_field(msg, &["Event Message"]),
            at: time_field(msg, &["Event Time"]),
        },
        ctx,
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::tests::{one, reason};
    use super::super::{classify, Inbound};
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn rds(fixture: &str) -> RdsEvent {
        match one(fixture) {
            Inbound::Rds(r) => r,
            other => panic!("expected rds, got {other:#?}"),
        }
    }

    #[test]
    fn failover_started() {
        let r = rds(include_str!(
            "../../../events/rds/eventbridge-failover-started.json"
        ));
        assert_eq!(r.source_type, RdsSourceType::Instance);
        assert_eq!(r.source_id, "nbaops-dev-db");
        assert_eq!(
            r.source_arn.as_deref(),
            Some("arn:aws:rds:us-east-1:123456789012:db:nbaops-dev-db")
        );
        assert_eq!(r.event_code.as_deref(), Some("RDS-EVENT-0013"));
        assert!(r.is("0013") && r.is("13") && r.is("RDS-EVENT-0013"));
        assert_eq!(r.categories, vec!["failover".to_string()]);
        assert_eq!(r.message, "Multi-AZ instance failover started.");
        assert_eq!(
            r.at,
            Utc.with_ymd_and_hms(2026, 11, 25, 20, 1, 2).unwrap()
                + chrono::Duration::milliseconds(123)
        );
        assert_eq!(r.delivery, Delivery::EventBridge);
        assert_eq!(r.event_id, "0b1c2d3e-4f50-6172-8394-a5b6c7d8e901");
    }

    #[test]
    fn no_event_id() {
        let r = rds(include_str!(
            "../../../events/rds/eventbridge-no-event-id.json"
        ));
        assert_eq!(r.event_code, None);
        assert_eq!(r.source_type, RdsSourceType::Instance);
        // "rds:" prefix on an instance identifier is stripped.
        assert_eq!(r.source_id, "nbaops-dev-db");
        assert_eq!(r.categories, vec!["notification".to_string()]);
        assert_eq!(r.message, "DB instance stopped");
    }

    #[test]
    fn sns_subscription_with_url_event_id() {
        let r = rds(include_str!(
            "../../../events/rds/sns-subscription-event-url.json"
        ));
        assert_eq!(r.delivery, Delivery::Sns);
        assert_eq!(r.event_id, "5a6b7c8d-9e0f-5a1b-8c2d-3e4f5a6b7c01");
        assert_eq!(r.source_type, RdsSourceType::Instance);
        assert_eq!(r.source_id, "nbaops-dev-db");
        assert_eq!(r.event_code.as_deref(), Some("RDS-EVENT-0049"));
        assert_eq!(r.message, "Multi-AZ instance failover completed.");
        assert!(r.categories.is_empty());
        // "Event Time" has no zone: UTC.
        assert_eq!(
            r.at,
            Utc.with_ymd_and_hms(2026, 11, 25, 20, 1, 2).unwrap()
                + chrono::Duration::milliseconds(123)
        );
    }

    #[test]
    fn cluster_event() {
        let r = rds(include_str!(
            "../../../events/rds/eventbridge-cluster-event.json"
        ));
        assert_eq!(r.source_type, RdsSourceType::Cluster);
        assert_eq!(r.source_id, "nbaops-dev-aurora");
        assert_eq!(r.event_code.as_deref(), Some("RDS-EVENT-0071"));
        assert_eq!(r.categories, vec!["failover".to_string()]);
    }

    #[test]
    fn snapshot_event() {
        let r = rds(include_str!(
            "../../../events/rds/eventbridge-snapshot-event.json"
        ));
        assert_eq!(r.source_type, RdsSourceType::Snapshot);
        // Automated snapshot names really start with "rds:".
        assert_eq!(r.source_id, "rds:nbaops-dev-db-2026-11-25-03-10");
        assert_eq!(r.event_code.as_deref(), Some("RDS-EVENT-0091"));
        assert_eq!(r.categories, vec!["creation".to_string()]);
    }

    #[test]
    fn auto_start_after_7_days() {
        let r = rds(include_str!(
            "../../../events/rds/eventbridge-auto-start-after-7-days.json"
        ));
        assert_eq!(r.event_code.as_deref(), Some("RDS-EVENT-0154"));
        assert_eq!(r.source_id, "nbaops-dev-db");
        assert_eq!(r.categories, vec!["notification".to_string()]);
        assert!(r.message.contains("maximum allowed time"));
    }

    #[test]
    fn event_code_normalisation() {
        for (raw, want) in [
            ("RDS-EVENT-0049", Some("RDS-EVENT-0049")),
            ("rds-event-49", Some("RDS-EVENT-0049")),
            ("0154", Some("RDS-EVENT-0154")),
            (
                "http://docs.amazonwebservices.com/AmazonRDS/latest/UserGuide/USER_Events.html#RDS-EVENT-0049",
                Some("RDS-EVENT-0049"),
            ),
            (
                "https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/USER_Events.Messages.html#RDS-EVENT-0013",
                Some("RDS-EVENT-0013"),
            ),
            ("RDS-EVENT-", None),
            ("http://example.com/", None),
            ("", None),
            ("RDS-EVENT-99999999", None),
        ] {
            assert_eq!(normalise_event_code(raw).as_deref(), want, "{raw}");
        }
    }

    #[test]
    fn source_type_parsing() {
        for (raw, want) in [
            ("DB_INSTANCE", RdsSourceType::Instance),
            ("db-instance", RdsSourceType::Instance),
            ("CLUSTER", RdsSourceType::Cluster),
            ("db-cluster", RdsSourceType::Cluster),
            ("SNAPSHOT", RdsSourceType::Snapshot),
            ("CLUSTER_SNAPSHOT", RdsSourceType::ClusterSnapshot),
            ("db-cluster-snapshot", RdsSourceType::ClusterSnapshot),
            ("DB_PARAMETER_GROUP", RdsSourceType::ParameterGroup),
            ("SECURITY_GROUP", RdsSourceType::SecurityGroup),
            ("DB_PROXY", RdsSourceType::Proxy),
            (
                "BLUE_GREEN_DEPLOYMENT",
                RdsSourceType::Other("BLUE_GREEN_DEPLOYMENT".into()),
            ),
        ] {
            assert_eq!(RdsSourceType::parse(raw), want, "{raw}");
        }
    }

    #[test]
    fn missing_identity_or_time_is_not_for_me() {
        let mut v: Value = serde_json::from_str(include_str!(
            "../../../events/rds/eventbridge-failover-started.json"
        ))
        .unwrap();
        v["detail"]["Date"] = json!("garbage");
        v["time"] = json!(null);
        assert!(reason(&classify(&v)[0]).contains("time"));
        v["time"] = json!("2026-11-25T20:01:03Z");
        v["detail"]["SourceIdentifier"] = json!("None");
        v["detail"]["SourceArn"] = json!("");
        v["resources"] = json!([]);
        assert!(reason(&classify(&v)[0]).contains("SourceIdentifier"));
    }

    #[test]
    fn unknown_rds_detail_type_is_not_for_me() {
        let v = json!({"id":"x","detail-type":"AWS API Call via CloudTrail","source":"aws.rds","time":"2026-11-25T20:01:02Z","detail":{}});
        assert!(reason(&classify(&v)[0]).contains("'AWS API Call via CloudTrail' from aws.rds"));
    }
}

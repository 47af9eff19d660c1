//! What an SNS record on the alerts topic carries: an `nbaops.alert/v1`, or a CloudWatch alarm
//! notification (nbaops' own alarms publish to the alerts topic) read as the alert it stands for:
//! its dedup key the alarm ARN, ALARM firing and OK resolving.
//!
//! The alarm itself is read by `nbaops_shared::events::classify`; the alert message is read here,
//! because the shared event model has no `nbaops.alert/v1` (alert-router is its only reader).

use serde_json::{json, Value};

use nbaops_shared::alerts::{Alert, AlertStatus, Severity, ALERT_SCHEMA};
use nbaops_shared::events::{classify, AlarmChange, AlarmState, AlarmTrigger, Inbound};

/// `source_function` of an alert made from a CloudWatch alarm.
pub const ALARM_SOURCE: &str = "cloudwatch-alarm";

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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    use crate::channels::{Kind, Message};
    use crate::router::SWEEP_TASK;
    use crate::test_world::*;

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
        let msg = Message::of_alert(&alert, Kind::Firing, None);
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
}

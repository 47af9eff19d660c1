//! The per-source parsers behind `classify`, each reached through its envelope with the fuzzer's
//! input as the part that parser reads: an EventBridge `detail` for each known source and
//! detail-type, an SNS `Message` (text or JSON: alarm, RDS subscription, cost anomaly, Budgets
//! JSON and plain text), the alarm action's `alarmData`, a Scheduler `nbaops` block.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nbaops_shared::events::{classify, rds_catalog::classify_rds_event, Inbound};
use serde_json::{json, Value};

const EVENTBRIDGE: &[(&str, &str)] = &[
    ("aws.cloudwatch", "CloudWatch Alarm State Change"),
    ("aws.rds", "RDS DB Instance Event"),
    ("aws.rds", "RDS DB Cluster Event"),
    ("aws.rds", "RDS DB Snapshot Event"),
    ("aws.events", "Scheduled Event"),
    ("aws.scheduler", "Scheduled Event"),
    ("aws.ce", "Anomaly Detected"),
];

fn check(payload: &Value) {
    for i in classify(payload) {
        match &i {
            Inbound::NotForMe(n) => assert!(!n.reason.trim().is_empty()),
            Inbound::Rds(ev) => {
                let _ = classify_rds_event(ev);
            }
            other => assert!(other.event_id().is_some_and(|id| !id.is_empty())),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data).to_string();
    let value: Value = serde_json::from_slice(data).unwrap_or_else(|_| Value::String(text.clone()));
    for (source, detail_type) in EVENTBRIDGE {
        check(&json!({
            "version": "0", "id": "fuzz", "detail-type": detail_type, "source": source,
            "account": "123456789012", "time": "2026-11-25T20:01:02Z", "region": "us-east-1",
            "resources": [], "detail": value,
        }));
    }
    check(&json!({"Records": [{"EventSource": "aws:sns", "Sns": {
        "Type": "Notification", "MessageId": "fuzz", "Subject": "AWS Budgets: fuzz",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:nbaops-dev-events",
        "Message": text, "Timestamp": "2026-11-25T20:01:02.000Z"}}]}));
    check(
        &json!({"Records": [{"EventSource": "aws:sns", "Sns": {"MessageId": "fuzz", "Message": value}}]}),
    );
    check(
        &json!({"source": "aws.cloudwatch", "alarmArn": "arn:aws:cloudwatch:us-east-1:123456789012:alarm:x",
        "accountId": "123456789012", "time": "2026-11-25T20:01:02.000+0000", "region": "us-east-1",
        "alarmData": value}),
    );
    check(&json!({"nbaops": value}));
});

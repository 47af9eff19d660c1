//! CloudWatch Logs subscription payloads: `{"awslogs": {"data": "<base64 of gzip of JSON>"}}`,
//! the shape a subscription filter delivers to a Lambda function
//! (https://docs.aws.amazon.com/AmazonCloudWatch/latest/logs/SubscriptionFilters.html#LambdaFunctionExample).
//! The decoded JSON is `aws_lambda_events::cloudwatch_logs::LogData`: `messageType`, `owner`,
//! `logGroup`, `logStream`, `subscriptionFilters`, `logEvents[{id, timestamp, message}]`.
//!
//! Only RDS PostgreSQL logs are for nbaops (issue #22: pg-health counts autovacuum failures):
//! `logGroup` `/aws/rds/instance/<id>/postgresql` or `/aws/rds/cluster/<id>/postgresql`
//! (https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/USER_LogAccess.Concepts.PostgreSQL.html).
//! Everything else is refused with the stage that failed: not base64, not gzip, larger than
//! [`MAX_DECODED_BYTES`], not the documented JSON, a `CONTROL_MESSAGE` (the check CloudWatch Logs
//! sends when a filter is created: no log events), another log group, an entry without id.
//!
//! The decoding is done here stage by stage: the crate's own `Deserialize` of `LogsEvent` says
//! only "invalid symbol" or "invalid gzip header", has no size limit, and cannot read the
//! `serde_json::Value` the runtime hands over (its visitor wants borrowed keys). The decoded JSON
//! is read with the crate's `LogData`, and a test shows the crate's `LogsEvent` reads the fixture
//! alike.

use std::io::Read;

use aws_lambda_events::cloudwatch_logs::LogData;
use base64::Engine;
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize as _, Serialize};
use serde_json::Value;

use super::util::{describe, truncate};
use super::{Delivery, NotForMe};

/// A decoded payload larger than this is refused (a gzip bomb never reaches memory whole).
/// CloudWatch Logs batches stay far below: an invocation payload is at most 6 MB compressed.
pub const MAX_DECODED_BYTES: u64 = 8 * 1024 * 1024;

/// One `DATA_MESSAGE` of an RDS PostgreSQL log group.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogBatch {
    /// `logs/<logGroup>/<logStream>/<id of the first log event>`: the same batch delivered again
    /// has the same id. Each log event keeps its own id too ([`LogLine::id`]).
    pub event_id: String,
    pub delivery: Delivery,
    /// The account of the log group (`owner`).
    pub owner: String,
    pub log_group: String,
    pub log_stream: String,
    pub subscription_filters: Vec<String>,
    /// The DB instance (or cluster) identifier named by the log group.
    pub source_id: String,
    /// `true` for `/aws/rds/cluster/<id>/postgresql` (Aurora, Multi-AZ DB clusters).
    pub cluster: bool,
    pub lines: Vec<LogLine>,
}

/// One log event of a batch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogLine {
    /// CloudWatch Logs' id of the event: unique, the idempotency key of what is counted from it.
    pub id: String,
    pub timestamp: DateTime<Utc>,
    pub message: String,
}

/// The instance (or cluster) id and whether it is a cluster, from an RDS PostgreSQL log group.
pub fn rds_postgresql_source(log_group: &str) -> Option<(String, bool)> {
    let rest = log_group.strip_prefix("/aws/rds/")?;
    let (cluster, rest) = if let Some(r) = rest.strip_prefix("instance/") {
        (false, r)
    } else {
        (true, rest.strip_prefix("cluster/")?)
    };
    let id = rest.strip_suffix("/postgresql")?;
    // DB identifiers: 1-63 letters, digits, hyphens.
    let valid = !id.is_empty()
        && id.len() <= 63
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    valid.then(|| (id.to_string(), cluster))
}

/// The JSON inside `awslogs.data`, or why it cannot be had.
pub fn decode_data(data: &str) -> Result<Vec<u8>, NotForMe> {
    let zipped = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| NotForMe::new(format!("CloudWatch Logs awslogs.data is not base64: {e}")))?;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&zipped[..])
        .take(MAX_DECODED_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            NotForMe::new(format!(
                "CloudWatch Logs awslogs.data is base64 but not gzip: {e}"
            ))
        })?;
    if out.len() as u64 > MAX_DECODED_BYTES {
        return Err(NotForMe::new(format!(
            "CloudWatch Logs awslogs.data decodes to more than {MAX_DECODED_BYTES} bytes"
        )));
    }
    Ok(out)
}

/// A subscription payload (the object holding `awslogs`) as an RDS PostgreSQL [`LogBatch`].
pub(crate) fn from_subscription(raw: &Value) -> Result<LogBatch, NotForMe> {
    let awslogs = raw
        .get("awslogs")
        .ok_or_else(|| NotForMe::new("CloudWatch Logs payload without awslogs"))?;
    let Some(data) = awslogs.get("data").and_then(Value::as_str) else {
        return Err(NotForMe::new(format!(
            "CloudWatch Logs payload whose awslogs.data is not a string: awslogs is {}",
            describe(awslogs)
        )));
    };
    let json = decode_data(data)?;
    let doc: Value = serde_json::from_slice(&json).map_err(|e| {
        NotForMe::new(format!(
            "CloudWatch Logs awslogs.data is gzip but not JSON: {e}"
        ))
    })?;
    match doc.get("messageType").and_then(Value::as_str) {
        Some("DATA_MESSAGE") => {}
        Some("CONTROL_MESSAGE") => {
            return Err(NotForMe::new(
                "CloudWatch Logs CONTROL_MESSAGE (the reachability check of a new subscription filter): no log events to read",
            ))
        }
        Some(other) => {
            return Err(NotForMe::new(format!(
                "CloudWatch Logs message of unknown messageType '{}'",
                truncate(other, 60)
            )))
        }
        None => {
            return Err(NotForMe::new(format!(
                "CloudWatch Logs awslogs.data holds {} without a string messageType",
                describe(&doc)
            )))
        }
    }
    let data = LogData::deserialize(&doc).map_err(|e| {
        NotForMe::new(format!(
            "CloudWatch Logs DATA_MESSAGE not as documented (owner, logGroup, logStream, subscriptionFilters, logEvents[id, timestamp, message]): {e}"
        ))
    })?;
    let Some((source_id, cluster)) = rds_postgresql_source(&data.log_group) else {
        return Err(NotForMe::new(format!(
            "CloudWatch Logs from '{}', not an RDS PostgreSQL log group (/aws/rds/instance/<id>/postgresql or /aws/rds/cluster/<id>/postgresql)",
            truncate(&data.log_group, 200)
        )));
    };
    if data.log_events.is_empty() {
        return Err(NotForMe::new(format!(
            "CloudWatch Logs DATA_MESSAGE of {} without log events",
            data.log_group
        )));
    }
    let mut lines = Vec::with_capacity(data.log_events.len());
    for (i, e) in data.log_events.into_iter().enumerate() {
        let id = e.id.trim().to_string();
        if id.is_empty() {
            return Err(NotForMe::new(format!(
                "CloudWatch Logs log event {i} of {} without an id: nothing to count it by",
                data.log_group
            )));
        }
        let Some(timestamp) = Utc.timestamp_millis_opt(e.timestamp).single() else {
            return Err(NotForMe::new(format!(
                "CloudWatch Logs log event {i} of {} with timestamp {} out of range",
                data.log_group, e.timestamp
            )));
        };
        lines.push(LogLine {
            id,
            timestamp,
            message: e.message,
        });
    }
    let event_id = format!(
        "logs/{}/{}/{}",
        data.log_group,
        truncate(&data.log_stream, 200),
        truncate(&lines[0].id, 100)
    );
    Ok(LogBatch {
        event_id,
        delivery: Delivery::Logs,
        owner: data.owner,
        log_group: data.log_group,
        log_stream: data.log_stream,
        subscription_filters: data.subscription_filters,
        source_id,
        cluster,
        lines,
    })
}

/// `{"awslogs": {"data": …}}` holding `doc` as CloudWatch Logs encodes it (gzip, then base64):
/// for tests and the simulated platform only.
#[cfg(any(test, feature = "fakes"))]
pub fn subscription_payload(doc: &Value) -> Value {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = gz.write_all(doc.to_string().as_bytes());
    let zipped = gz.finish().unwrap_or_default();
    serde_json::json!({"awslogs": {"data": base64::engine::general_purpose::STANDARD.encode(zipped)}})
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::{classify, classify_str, tests::reason, Inbound};
    use super::*;
    use serde_json::json;
    use std::io::Write;

    const FIXTURE: &str =
        include_str!("../../../events/cloudwatch-logs/rds-postgresql-autovacuum.json");
    const DECODED: &str =
        include_str!("../../../events/cloudwatch-logs/decoded/rds-postgresql-autovacuum.json");

    fn payload(doc: &Value) -> Value {
        subscription_payload(doc)
    }

    #[test]
    fn the_fixture_is_the_gzip_base64_of_the_decoded_json_beside_it() {
        let raw: Value = serde_json::from_str(FIXTURE).unwrap();
        let data = raw["awslogs"]["data"].as_str().unwrap();
        let ours: Value = serde_json::from_slice(&decode_data(data).unwrap()).unwrap();
        let beside: Value = serde_json::from_str(DECODED).unwrap();
        assert_eq!(ours, beside);
        // The crate's own reader of the shape agrees (from text: it cannot read an owned
        // `Value`, its visitor wants borrowed keys — one more reason the decoding is ours).
        let theirs: aws_lambda_events::cloudwatch_logs::LogsEvent =
            serde_json::from_str(FIXTURE).unwrap();
        assert!(
            serde_json::from_value::<aws_lambda_events::cloudwatch_logs::LogsEvent>(raw.clone())
                .is_err()
        );
        let theirs = serde_json::to_value(theirs.aws_logs.data).unwrap();
        assert_eq!(theirs, beside);
        let Inbound::Logs(b) = &classify(&raw)[0] else {
            panic!("{:?}", classify(&raw))
        };
        assert_eq!(b.source_id, "nbaops-dev-db");
        assert!(!b.cluster);
        assert_eq!(b.lines.len(), beside["logEvents"].as_array().unwrap().len());
        assert_eq!(
            b.lines[0].id,
            beside["logEvents"][0]["id"].as_str().unwrap()
        );
        assert_eq!(b.delivery, Delivery::Logs);
        assert!(b
            .event_id
            .starts_with("logs//aws/rds/instance/nbaops-dev-db/postgresql/"));
    }

    #[test]
    fn log_groups_name_the_instance_or_cluster() {
        assert_eq!(
            rds_postgresql_source("/aws/rds/instance/db-1/postgresql"),
            Some(("db-1".into(), false))
        );
        assert_eq!(
            rds_postgresql_source("/aws/rds/cluster/aurora-a/postgresql"),
            Some(("aurora-a".into(), true))
        );
        for refused in [
            "/aws/rds/instance/db-1/upgrade",
            "/aws/rds/instance//postgresql",
            "/aws/rds/instance/a/b/postgresql",
            "/aws/lambda/nbaops-dev-pg-health",
            "/aws/rds/proxy/p/postgresql",
            "",
        ] {
            assert_eq!(rds_postgresql_source(refused), None, "{refused}");
        }
    }

    #[test]
    fn control_and_malformed_payloads_are_refused_with_the_stage() {
        let beside: Value = serde_json::from_str(DECODED).unwrap();
        let mut control = beside.clone();
        control["messageType"] = json!("CONTROL_MESSAGE");
        let mut lambda_logs = beside.clone();
        lambda_logs["logGroup"] = json!("/aws/lambda/other");
        let mut no_events = beside.clone();
        no_events["logEvents"] = json!([]);
        let mut no_id = beside.clone();
        no_id["logEvents"][0]["id"] = json!("");
        let mut wrong = beside.clone();
        wrong["logEvents"] = json!("x");
        let mut unknown = beside.clone();
        unknown["messageType"] = json!("OTHER");
        let not_gzip = base64::engine::general_purpose::STANDARD.encode(b"{\"plain\": true}");
        let not_json = {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(b"not json").unwrap();
            base64::engine::general_purpose::STANDARD.encode(gz.finish().unwrap())
        };
        for (raw, needle) in [
            (payload(&control), "CONTROL_MESSAGE (the reachability check"),
            (payload(&lambda_logs), "not an RDS PostgreSQL log group"),
            (payload(&no_events), "without log events"),
            (payload(&no_id), "without an id"),
            (payload(&wrong), "not as documented"),
            (payload(&unknown), "unknown messageType"),
            (payload(&json!([1])), "without a string messageType"),
            (json!({"awslogs": {"data": "%%%not base64"}}), "not base64"),
            (json!({"awslogs": {"data": not_gzip}}), "not gzip"),
            (json!({"awslogs": {"data": not_json}}), "not JSON"),
            (json!({"awslogs": {"data": 7}}), "not a string"),
            (json!({"awslogs": "x"}), "not a string"),
        ] {
            let out = classify(&raw);
            assert_eq!(out.len(), 1);
            assert!(
                reason(&out[0]).contains(needle),
                "{needle}: {}",
                reason(&out[0])
            );
        }
        // A gzip bomb is cut at the limit, not read whole.
        let zeros = {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            let chunk = vec![b' '; 1 << 20];
            for _ in 0..(MAX_DECODED_BYTES / (1 << 20) + 1) {
                gz.write_all(&chunk).unwrap();
            }
            base64::engine::general_purpose::STANDARD.encode(gz.finish().unwrap())
        };
        let out = classify(&json!({"awslogs": {"data": zeros}}));
        assert!(reason(&out[0]).contains("more than"), "{}", reason(&out[0]));
        // Text: the same refusals.
        assert!(classify_str(r#"{"awslogs": {}}"#)[0].is_not_for_me());
    }
}

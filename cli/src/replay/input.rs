//! The recorded day as the AWS CLI prints it, read strictly, turned into the events the deployed
//! functions receive.
//!
//! - `aws cloudwatch describe-alarm-history --history-item-type StateUpdate`: `AlarmHistoryItems[]`,
//!   each with `AlarmName`, `Timestamp`, `HistoryItemType`, `HistorySummary` and `HistoryData`, a JSON
//!   *string* holding `oldState`/`newState` (`stateValue`, `stateReason`, `stateReasonData`)
//!   (<https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_AlarmHistoryItem.html>,
//!   <https://docs.aws.amazon.com/cli/latest/reference/cloudwatch/describe-alarm-history.html>).
//!   Each becomes the EventBridge "CloudWatch Alarm State Change" event
//!   (events/cloudwatch-alarm/eventbridge-single-metric-alarm.json); the alarm's metric and
//!   dimensions, which the history does not carry, come from the platform's alarm definitions.
//! - `aws rds describe-events`: `Events[]` of `SourceIdentifier`, `SourceType` (`db-instance`...),
//!   `Message`, `EventCategories`, `Date`, `SourceArn`
//!   (<https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_Event.html>). That output has
//!   no event ID: the replay recovers it from the documented message text ([`RDS_MESSAGES`]); an
//!   unknown message goes without one and the function classifies it by category, as it would a
//!   live event without an ID. Each becomes "RDS DB Instance Event" / "RDS DB Cluster Event"
//!   (events/rds/eventbridge-failover-started.json).
//! - `--metrics`: `aws cloudwatch get-metric-data` output (`MetricDataResults[]` of `Id`,
//!   `Timestamps`, `Values`) merged with the `MetricDataQueries` that asked for it (the results name
//!   no metric; the query of the same `Id` does)
//!   (<https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_GetMetricData.html>).
//!
//! A malformed item is an error naming the item; an item of a kind the replay does not take
//! (another history item type, a snapshot or parameter-group event) is counted as "not for me".

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::platform::AlarmDef;

/// The documented English messages of the RDS events nbaops acts on, with their IDs ("Amazon RDS
/// event categories and event messages",
/// <https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/USER_Events.Messages.html>).
pub const RDS_MESSAGES: &[(&str, &str)] = &[
    ("Multi-AZ instance failover started.", "RDS-EVENT-0013"),
    ("Multi-AZ instance failover completed.", "RDS-EVENT-0049"),
    (
        "Multi-AZ failover to standby complete - DNS propagation may take a few minutes.",
        "RDS-EVENT-0015",
    ),
    ("DB instance restarted.", "RDS-EVENT-0006"),
    ("DB instance stopped.", "RDS-EVENT-0087"),
    ("DB instance started.", "RDS-EVENT-0088"),
    (
        "DB instance is being started due to it exceeding the maximum allowed time being stopped.",
        "RDS-EVENT-0154",
    ),
    (
        "Allocated storage has been exhausted. Allocate additional storage to resolve the issue.",
        "RDS-EVENT-0007",
    ),
    (
        "DB instance has reached the storage-full threshold, and the database has been shut down. You can increase the allocated storage to address this scenario.",
        "RDS-EVENT-0221",
    ),
];

const ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";

/// A malformed input: which file, which item, what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {item}: {what}")]
pub struct InputError {
    pub file: String,
    pub item: String,
    pub what: String,
}

/// Where an event goes, as the template's EventBridge rules route it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Route {
    ScaleOnAlarm,
    FailoverNotify,
    Offhours,
}

/// One input item, converted.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub at: DateTime<Utc>,
    /// `alarm-history.json AlarmHistoryItems[3]`: how the timeline names it.
    pub origin: String,
    pub routes: Vec<Route>,
    pub payload: Value,
    /// Alarm items: the alarm's new state, for the CloudWatch fake.
    pub alarm_state: Option<(String, String)>,
}

/// What a file held: the items taken, and how many the replay does not take.
#[derive(Debug, Default)]
pub struct Parsed {
    pub items: Vec<Recorded>,
    pub not_for_me: Vec<String>,
}

fn bad(file: &str, item: &str, what: impl Into<String>) -> InputError {
    InputError {
        file: file.into(),
        item: item.into(),
        what: what.into(),
    }
}

fn str_at<'v>(v: &'v Value, key: &str, file: &str, item: &str) -> Result<&'v str, InputError> {
    v.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| bad(file, item, format!("{key} missing or not a string")))
}

fn time_at(v: &Value, key: &str, file: &str, item: &str) -> Result<DateTime<Utc>, InputError> {
    let s = str_at(v, key, file, item)?;
    parse_time(s).ok_or_else(|| bad(file, item, format!("{key} '{s}' is not an ISO 8601 time")))
}

/// The CLI prints `2026-11-25T20:01:02.123Z` or `2026-11-25T20:01:02.123000+00:00`.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .or_else(|| DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z").ok())
        .map(|t| t.with_timezone(&Utc))
}

fn array<'v>(doc: &'v Value, key: &str, file: &str) -> Result<&'v Vec<Value>, InputError> {
    doc.get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| bad(file, "document", format!("no {key} array at the top level")))
}

/// CloudWatch's time format inside alarm events (`2026-11-25T20:01:02.123+0000`).
fn cw_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
}

/// `describe-alarm-history` output.
pub fn alarm_history(
    doc: &Value,
    file: &str,
    alarms: &BTreeMap<String, AlarmDef>,
) -> Result<Parsed, InputError> {
    let mut out = Parsed::default();
    for (i, it) in array(doc, "AlarmHistoryItems", file)?.iter().enumerate() {
        let item = format!("AlarmHistoryItems[{i}]");
        let kind = str_at(it, "HistoryItemType", file, &item)?;
        let name = str_at(it, "AlarmName", file, &item)?;
        if kind != "StateUpdate" {
            out.not_for_me
                .push(format!("{item} ({name}): a {kind} item"));
            continue;
        }
        let at = time_at(it, "Timestamp", file, &item)?;
        let data_s = str_at(it, "HistoryData", file, &item)?;
        let data: Value = serde_json::from_str(data_s)
            .map_err(|e| bad(file, &item, format!("HistoryData is not JSON: {e}")))?;
        let state = |key: &str| -> Result<(String, String, Option<Value>), InputError> {
            let s = data
                .get(key)
                .ok_or_else(|| bad(file, &item, format!("HistoryData has no {key}")))?;
            let value = str_at(s, "stateValue", file, &format!("{item} HistoryData.{key}"))?;
            if !matches!(value, "OK" | "ALARM" | "INSUFFICIENT_DATA") {
                return Err(bad(
                    file,
                    &item,
                    format!("HistoryData.{key}.stateValue '{value}' is not OK, ALARM or INSUFFICIENT_DATA"),
                ));
            }
            let reason = s
                .get("stateReason")
                .and_then(Value::as_str)
                .unwrap_or_default();
            Ok((
                value.into(),
                reason.into(),
                s.get("stateReasonData").cloned(),
            ))
        };
        let (new_value, new_reason, reason_data) = state("newState")?;
        let (old_value, old_reason, _) = state("oldState")?;
        let Some(def) = alarms.get(name) else {
            out.not_for_me.push(format!(
                "{item} ({name}): not an alarm of the platform (add it to --platform's alarms)"
            ));
            continue;
        };
        let mut st = json!({"value": new_value, "reason": new_reason, "timestamp": cw_time(at)});
        if let Some(rd) = reason_data {
            st["reasonData"] = Value::String(rd.to_string());
        }
        let metrics = match (&def.namespace, &def.metric) {
            (Some(ns), Some(m)) => json!([{"id": "m1", "metricStat": {
                "metric": {"namespace": ns, "name": m, "dimensions": def.dimensions},
                "period": 300, "stat": "Average"}, "returnData": true}]),
            _ => json!([]),
        };
        let payload = json!({
            "version": "0",
            "id": format!("replay-alarm-{i}-{}", at.timestamp_millis()),
            "detail-type": "CloudWatch Alarm State Change",
            "source": "aws.cloudwatch",
            "account": ACCOUNT,
            "time": at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "region": REGION,
            "resources": [format!("arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{name}")],
            "detail": {
                "alarmName": name,
                "state": st,
                "previousState": {"value": old_value, "reason": old_reason},
                "configuration": {"description": def.description, "metrics": metrics},
            }
        });
        out.items.push(Recorded {
            at,
            origin: format!("{file} {item} {name} {old_value}->{new_value}"),
            routes: vec![Route::ScaleOnAlarm],
            payload,
            alarm_state: Some((name.to_string(), new_value)),
        });
    }
    Ok(out)
}

/// `describe-events` output.
pub fn rds_events(doc: &Value, file: &str) -> Result<Parsed, InputError> {
    let mut out = Parsed::default();
    for (i, ev) in array(doc, "Events", file)?.iter().enumerate() {
        let item = format!("Events[{i}]");
        let source = str_at(ev, "SourceIdentifier", file, &item)?;
        let kind = str_at(ev, "SourceType", file, &item)?;
        let message = str_at(ev, "Message", file, &item)?;
        let at = time_at(ev, "Date", file, &item)?;
        let categories = match ev.get("EventCategories") {
            None => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|c| {
                    c.as_str()
                        .map(String::from)
                        .ok_or_else(|| bad(file, &item, "EventCategories holds a non-string"))
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => return Err(bad(file, &item, "EventCategories is not an array")),
        };
        let (detail_type, eb_source_type, arn_kind) = match kind {
            "db-instance" => ("RDS DB Instance Event", "DB_INSTANCE", "db"),
            "db-cluster" => ("RDS DB Cluster Event", "CLUSTER", "cluster"),
            other => {
                out.not_for_me
                    .push(format!("{item} ({source}): a {other} event"));
                continue;
            }
        };
        let arn = ev
            .get("SourceArn")
            .and_then(Value::as_str)
            .map(String::from)
            .unwrap_or_else(|| format!("arn:aws:rds:{REGION}:{ACCOUNT}:{arn_kind}:{source}"));
        let code = RDS_MESSAGES
            .iter()
            .find(|(m, _)| *m == message.trim())
            .map(|(_, c)| *c);
        let mut detail = json!({
            "EventCategories": categories,
            "SourceType": eb_source_type,
            "SourceArn": arn,
            "Date": at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            "Message": message,
            "SourceIdentifier": source,
        });
        if let Some(c) = code {
            detail["EventID"] = Value::String(c.into());
        }
        let mut routes = vec![Route::FailoverNotify];
        // The template's offhours rule takes RDS-EVENT-0154 of instances only.
        if code == Some("RDS-EVENT-0154") && kind == "db-instance" {
            routes.push(Route::Offhours);
        }
        out.items.push(Recorded {
            at,
            origin: format!(
                "{file} {item} {source} {}",
                code.unwrap_or("(message not catalogued)")
            ),
            routes,
            payload: json!({
                "version": "0",
                "id": format!("replay-rds-{i}-{}", at.timestamp_millis()),
                "detail-type": detail_type,
                "source": "aws.rds",
                "account": ACCOUNT,
                "time": at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                "region": REGION,
                "resources": [arn],
                "detail": detail,
            }),
            alarm_state: None,
        });
    }
    Ok(out)
}

/// One metric's datapoints: (namespace, metric, dimensions, points).
pub type MetricSeries = (
    String,
    String,
    Vec<(String, String)>,
    Vec<(DateTime<Utc>, f64)>,
);

/// `get-metric-data` output merged with its `MetricDataQueries`.
pub fn metrics(doc: &Value, file: &str) -> Result<Vec<MetricSeries>, InputError> {
    let queries = array(doc, "MetricDataQueries", file)?;
    let mut out = Vec::new();
    for (i, r) in array(doc, "MetricDataResults", file)?.iter().enumerate() {
        let item = format!("MetricDataResults[{i}]");
        let id = str_at(r, "Id", file, &item)?;
        let q = queries
            .iter()
            .find(|q| q.get("Id").and_then(Value::as_str) == Some(id))
            .ok_or_else(|| {
                bad(
                    file,
                    &item,
                    format!("no MetricDataQueries entry with Id '{id}'"),
                )
            })?;
        let m = q.pointer("/MetricStat/Metric").ok_or_else(|| {
            bad(
                file,
                &item,
                format!("query '{id}' has no MetricStat.Metric (metric math is not replayed)"),
            )
        })?;
        let ns = str_at(m, "Namespace", file, &item)?;
        let name = str_at(m, "MetricName", file, &item)?;
        let mut dims = Vec::new();
        for d in m
            .get("Dimensions")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            dims.push((
                str_at(d, "Name", file, &item)?.to_string(),
                str_at(d, "Value", file, &item)?.to_string(),
            ));
        }
        let ts =
            array(r, "Timestamps", file).map_err(|_| bad(file, &item, "no Timestamps array"))?;
        let vs = array(r, "Values", file).map_err(|_| bad(file, &item, "no Values array"))?;
        if ts.len() != vs.len() {
            return Err(bad(
                file,
                &item,
                format!("{} Timestamps but {} Values", ts.len(), vs.len()),
            ));
        }
        let mut points = Vec::new();
        for (j, (t, v)) in ts.iter().zip(vs).enumerate() {
            let at = t.as_str().and_then(parse_time).ok_or_else(|| {
                bad(
                    file,
                    &item,
                    format!("Timestamps[{j}] is not an ISO 8601 time"),
                )
            })?;
            let v = v
                .as_f64()
                .ok_or_else(|| bad(file, &item, format!("Values[{j}] is not a number")))?;
            points.push((at, v));
        }
        out.push((ns.into(), name.into(), dims, points));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::platform::{PlatformSpec, DEFAULT_PLATFORM};

    fn alarms() -> BTreeMap<String, AlarmDef> {
        PlatformSpec::parse(DEFAULT_PLATFORM, "default")
            .unwrap()
            .alarms_by_name()
    }

    fn item(name: &str, kind: &str, data: &str) -> Value {
        json!({"AlarmName": name, "Timestamp": "2026-11-25T19:05:12.442Z",
               "HistoryItemType": kind, "HistorySummary": "s", "HistoryData": data})
    }

    const DATA: &str = r#"{"version":"1.0","oldState":{"stateValue":"OK","stateReason":"a"},"newState":{"stateValue":"ALARM","stateReason":"b","stateReasonData":{"threshold":70.0}}}"#;

    #[test]
    fn a_state_update_becomes_the_eventbridge_alarm_event_with_the_platforms_metric() {
        let doc =
            json!({"AlarmHistoryItems": [item("nbaops-dev-web-cpu-high", "StateUpdate", DATA)]});
        let p = alarm_history(&doc, "h.json", &alarms()).unwrap();
        assert!(p.not_for_me.is_empty());
        let ev = &p.items[0].payload;
        assert_eq!(ev["detail-type"], "CloudWatch Alarm State Change");
        assert_eq!(ev["detail"]["state"]["value"], "ALARM");
        assert_eq!(ev["detail"]["previousState"]["value"], "OK");
        assert_eq!(
            ev["detail"]["configuration"]["metrics"][0]["metricStat"]["metric"]["dimensions"]
                ["AutoScalingGroupName"],
            "nbaops-dev-web"
        );
        // reasonData travels as a JSON string, as in the live event.
        assert!(ev["detail"]["state"]["reasonData"].is_string());
        // The shared classifier reads it as the live event.
        let inbound = nbaops_shared::events::classify(ev);
        assert!(matches!(
            inbound.as_slice(),
            [nbaops_shared::events::Inbound::Alarm(_)]
        ));
    }

    #[test]
    fn other_item_types_and_unknown_alarms_are_not_for_me() {
        let doc = json!({"AlarmHistoryItems": [
            item("nbaops-dev-web-cpu-high", "Action", "{}"),
            item("someone-elses-alarm", "StateUpdate", DATA),
        ]});
        let p = alarm_history(&doc, "h.json", &alarms()).unwrap();
        assert!(p.items.is_empty());
        assert_eq!(p.not_for_me.len(), 2);
        assert!(p.not_for_me[0].contains("AlarmHistoryItems[0]"));
        assert!(p.not_for_me[1].contains("not an alarm of the platform"));
    }

    #[test]
    fn malformed_items_are_errors_naming_the_item() {
        for (doc, want) in [
            (json!({}), "document: no AlarmHistoryItems array"),
            (
                json!({"AlarmHistoryItems": [item("a", "StateUpdate", DATA), {"AlarmName": "b"}]}),
                "AlarmHistoryItems[1]: HistoryItemType missing",
            ),
            (
                json!({"AlarmHistoryItems": [item(
                    "a",
                    "StateUpdate",
                    r#"{"oldState":{},"newState":{"stateValue":"OK"}}"#,
                )]}),
                "AlarmHistoryItems[0] HistoryData.oldState: stateValue missing",
            ),
        ] {
            let e = alarm_history(&doc, "h.json", &alarms()).unwrap_err();
            assert!(e.to_string().contains(want), "{e}");
        }
    }

    /// Every ID the message table gives is one the functions' catalogue knows (a typo would send
    /// the event on without a usable ID).
    #[test]
    fn the_message_table_names_catalogued_events() {
        let known: Vec<&str> = nbaops_shared::events::rds_catalog::catalogued_codes().collect();
        for (message, id) in RDS_MESSAGES {
            assert!(
                known.contains(id),
                "{id} ({message}) is not in the RDS catalogue"
            );
            assert!(
                message.ends_with('.'),
                "AWS's messages end with a period: {message}"
            );
        }
    }

    #[test]
    fn rds_events_get_their_id_from_the_documented_message() {
        let doc = json!({"Events": [
            {"SourceIdentifier": "nbaops-dev-db", "SourceType": "db-instance",
             "Message": "Multi-AZ instance failover started.", "EventCategories": ["failover"],
             "Date": "2026-11-25T21:12:03.305000+00:00"},
            {"SourceIdentifier": "nbaops-dev-db", "SourceType": "db-instance",
             "Message": "Something new.", "EventCategories": ["notification"],
             "Date": "2026-11-25T21:13:00Z"},
            {"SourceIdentifier": "snap", "SourceType": "db-snapshot",
             "Message": "Automated snapshot created", "Date": "2026-11-25T03:00:00Z"},
            {"SourceIdentifier": "nbaops-test-db", "SourceType": "db-instance",
             "Message": "DB instance is being started due to it exceeding the maximum allowed time being stopped.",
             "Date": "2026-11-25T04:00:00Z"},
        ]});
        let p = rds_events(&doc, "e.json").unwrap();
        assert_eq!(p.items.len(), 3);
        assert_eq!(p.not_for_me.len(), 1);
        assert_eq!(p.items[0].payload["detail"]["EventID"], "RDS-EVENT-0013");
        assert_eq!(p.items[0].payload["detail"]["SourceType"], "DB_INSTANCE");
        assert!(p.items[1].payload["detail"].get("EventID").is_none());
        assert_eq!(p.items[0].routes, vec![Route::FailoverNotify]);
        assert_eq!(
            p.items[2].routes,
            vec![Route::FailoverNotify, Route::Offhours]
        );
        let e = rds_events(&json!({"Events": [{"SourceIdentifier": "x"}]}), "e.json").unwrap_err();
        assert_eq!(
            e.to_string(),
            "e.json: Events[0]: SourceType missing or not a string"
        );
    }

    #[test]
    fn metrics_need_their_query_and_as_many_values_as_timestamps() {
        let q = json!([{"Id": "c", "MetricStat": {"Metric": {"Namespace": "AWS/EC2",
            "MetricName": "CPUUtilization", "Dimensions": [{"Name": "AutoScalingGroupName", "Value": "w"}]}}}]);
        let ok = json!({"MetricDataQueries": q, "MetricDataResults": [
            {"Id": "c", "Timestamps": ["2026-11-25T22:00:00+00:00"], "Values": [12.5]}]});
        let m = metrics(&ok, "m.json").unwrap();
        assert_eq!(
            m[0].2,
            vec![("AutoScalingGroupName".to_string(), "w".to_string())]
        );
        assert_eq!(m[0].3[0].1, 12.5);
        let bad = json!({"MetricDataQueries": q, "MetricDataResults": [
            {"Id": "c", "Timestamps": ["2026-11-25T22:00:00+00:00"], "Values": []}]});
        assert!(metrics(&bad, "m.json")
            .unwrap_err()
            .to_string()
            .contains("MetricDataResults[0]: 1 Timestamps but 0 Values"));
        let orphan = json!({"MetricDataQueries": [], "MetricDataResults": [
            {"Id": "x", "Timestamps": [], "Values": []}]});
        assert!(metrics(&orphan, "m.json").is_err());
    }
}

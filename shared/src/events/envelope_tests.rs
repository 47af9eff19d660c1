//! The envelopes read with `aws_lambda_events` types, and why the tolerant reader stays: one test
//! per shape we must accept that the crate refuses (or reads otherwise), so the fallback cannot
//! outlive its reason. `proptests::typed_and_tolerant_envelopes_classify_alike` shows both readers
//! agree wherever the crate accepts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::Cell;

use aws_lambda_events::cloudwatch_alarms::CloudWatchAlarm;
use aws_lambda_events::eventbridge::EventBridgeEvent;
use aws_lambda_events::sns::SnsMessage;
use aws_lambda_events::sqs::SqsMessage;
use serde_json::{json, Value};

use super::arbitrary;
use super::envelope::typed;
use super::*;

thread_local! {
    /// Set by [`tolerant`]: [`typed`] refuses everything, as if the crate were not there.
    pub(crate) static TOLERANT_ONLY: Cell<bool> = const { Cell::new(false) };
}

/// `f` with every envelope read by the tolerant reader alone.
pub(crate) fn tolerant<T>(f: impl FnOnce() -> T) -> T {
    TOLERANT_ONLY.with(|t| t.set(true));
    let out = f();
    TOLERANT_ONLY.with(|t| t.set(false));
    out
}

/// A fixture under `events/`.
macro_rules! fixture {
    ($path:literal) => {
        serde_json::from_str::<Value>(include_str!(concat!("../../../events/", $path))).unwrap()
    };
}

/// The notification of a fixture's first SNS record.
macro_rules! sns_of {
    ($path:literal) => {
        fixture!($path)["Records"][0]["Sns"].clone()
    };
}

fn refused<T: serde::de::DeserializeOwned>(v: &Value) -> String {
    match serde_json::from_value::<T>(v.clone()) {
        Ok(_) => panic!("the crate accepts {v}"),
        Err(e) => e.to_string(),
    }
}

/// Both readers classify `v` alike.
fn alike(v: &Value) {
    let typed = classify(v);
    let tolerant = tolerant(|| classify(v));
    assert_eq!(typed.len(), tolerant.len(), "{v}");
    for (a, b) in typed.iter().zip(&tolerant) {
        assert!(super::proptests::same(a, b), "{a:?}\n{b:?}");
    }
}

/// The real payloads are read by the crate: every fixture's envelope but the one listed (an
/// INSUFFICIENT_DATA alarm action without `state.timestamp`, below), and each classifies as the
/// tolerant reader alone classifies it — the fixtures' results before and after the crate came in.
#[test]
fn the_crate_reads_every_fixture_envelope_but_the_refused_ones() {
    let mut refused = Vec::new();
    let mut read = 0;
    for (name, v) in arbitrary::fixtures() {
        alike(&v);
        let notifications: Vec<&Value> = v
            .get("Records")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|r| r.get("Sns"))
            .collect();
        let ok = if !notifications.is_empty() {
            notifications
                .into_iter()
                .all(|s| typed::<SnsMessage>(s).is_some())
        } else if v.get("detail-type").is_some() {
            typed::<EventBridgeEvent>(&v).is_some()
        } else if v.get("alarmData").is_some() {
            typed::<CloudWatchAlarm<Value, Value>>(&v).is_some()
        } else {
            continue; // not an envelope: a bare Scheduler input, S3, API Gateway, garbage
        };
        if ok {
            read += 1;
        } else {
            refused.push(name);
        }
    }
    assert_eq!(
        refused,
        ["cloudwatch-alarm/direct-action-insufficient-data.json"]
    );
    assert!(read >= 40, "only {read} envelopes read by the crate");
}

/// The alarm action of an INSUFFICIENT_DATA transition may carry no `state.timestamp`; the crate
/// requires one. We take the envelope's `time`.
#[test]
fn alarm_action_without_state_timestamp() {
    let v = fixture!("cloudwatch-alarm/direct-action-insufficient-data.json");
    let e = refused::<CloudWatchAlarm<Value, Value>>(&v);
    assert!(e.contains("timestamp"), "{e}");
    assert_eq!(super::tests::one(&v.to_string()).kind(), "alarm");
}

/// An SNS notification without the signature fields (`SignatureVersion`, `Signature`,
/// `SigningCertUrl`, `UnsubscribeUrl`): what tests, relays and hand-made events send (the storm
/// test's deliveries). The crate requires all four.
#[test]
fn sns_notification_without_signature_fields() {
    let mut sns = sns_of!("cloudwatch-alarm/sns-single-metric-alarm.json");
    for k in [
        "SignatureVersion",
        "Signature",
        "SigningCertUrl",
        "UnsubscribeUrl",
    ] {
        sns.as_object_mut().unwrap().remove(k);
    }
    let e = refused::<SnsMessage>(&sns);
    assert!(e.contains("missing field"), "{e}");
    let out = classify(&json!({"Records": [{"EventSource": "aws:sns", "Sns": sns}]}));
    assert_eq!(out[0].kind(), "alarm");
}

/// An SNS notification whose keys are in lower case (`sns`, `message`, `messageId`…); the crate
/// matches PascalCase keys only.
#[test]
fn sns_notification_in_lower_case() {
    let sns = sns_of!("rds/sns-failover-started.json");
    let lower: serde_json::Map<String, Value> = sns
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k[..1].to_ascii_lowercase() + &k[1..], v.clone()))
        .collect();
    let lower = Value::Object(lower);
    let e = refused::<SnsMessage>(&lower);
    assert!(e.contains("missing field"), "{e}");
    let out = classify(&json!({"Records": [{"eventSource": "aws:sns", "sns": lower}]}));
    assert_eq!(out[0].kind(), "rds");
    assert_eq!(
        out[0].event_id(),
        classify(&fixture!("rds/sns-failover-started.json"))[0].event_id()
    );
}

/// A `Message` that is the object itself rather than its JSON text (hand-made test events); the
/// crate wants a string.
#[test]
fn sns_message_as_an_object() {
    let mut sns = sns_of!("cloudwatch-alarm/sns-composite.json");
    let inner: Value = serde_json::from_str(sns["Message"].as_str().unwrap()).unwrap();
    sns["Message"] = inner;
    let e = refused::<SnsMessage>(&sns);
    assert!(e.contains("invalid type"), "{e}");
    assert_eq!(classify(&sns)[0].kind(), "alarm");
}

/// A `MessageId` given as a number; the crate wants a string, we render it.
#[test]
fn sns_message_id_as_a_number() {
    let mut sns = sns_of!("cost/sns-anomaly-service-only.json");
    sns["MessageId"] = json!(1234567);
    let e = refused::<SnsMessage>(&sns);
    assert!(e.contains("invalid type"), "{e}");
    assert_eq!(classify(&sns)[0].event_id(), Some("1234567"));
}

/// A scheduled EventBridge event without `detail` (an EventBridge rule's test event); the crate
/// requires `detail`, we take `{}`.
#[test]
fn eventbridge_event_without_detail() {
    let mut v = fixture!("schedule/eventbridge-rule.json");
    v.as_object_mut().unwrap().remove("detail");
    let e = refused::<EventBridgeEvent>(&v);
    assert!(e.contains("missing field `detail`"), "{e}");
    assert_eq!(super::tests::one(&v.to_string()).kind(), "schedule");
}

/// A key in another case (`ID`): the crate does not refuse it, it reads no id — the tolerant
/// reader finds it, so [`typed`] hands such a payload to the tolerant reader.
#[test]
fn eventbridge_key_in_another_case() {
    let mut v = fixture!("rds/eventbridge-failover-started.json");
    let id = v.as_object_mut().unwrap().remove("id").unwrap();
    v["ID"] = id.clone();
    let crate_reads = serde_json::from_value::<EventBridgeEvent>(v.clone()).unwrap();
    assert_eq!(crate_reads.id, None);
    assert!(typed::<EventBridgeEvent>(&v).is_none());
    assert_eq!(classify(&v)[0].event_id(), id.as_str());
    alike(&v);
}

/// A time chrono's relaxed RFC 3339 reads but ours does not (`…Z` spelled `UTC` with no space):
/// the crate accepts the event; we keep the tolerant reading (no envelope time).
#[test]
fn a_time_only_chrono_reads() {
    let mut v = fixture!("schedule/eventbridge-rule.json");
    v["time"] = json!("2026-11-26T07:00:00UTC");
    let crate_reads = serde_json::from_value::<EventBridgeEvent>(v.clone()).unwrap();
    assert!(crate_reads.time.is_some());
    assert_eq!(util::time_field(&v, &["time"]), None);
    alike(&v);
    let mut sns = sns_of!("cloudwatch-alarm/sns-single-metric-alarm.json");
    sns["Timestamp"] = json!("2026-11-25T20:01:02.180UTC");
    assert!(serde_json::from_value::<SnsMessage>(sns.clone()).is_ok());
    alike(&sns);
}

/// An SQS record whose `attributes` hold a number (the crate wants strings) still has its body
/// read.
#[test]
fn sqs_record_with_a_number_attribute() {
    let body = sns_of!("cloudwatch-alarm/sns-single-metric-alarm.json").to_string();
    let record = json!({"eventSource": "aws:sqs", "messageId": "m", "body": body,
                        "attributes": {"ApproximateReceiveCount": 1}});
    let e = refused::<SqsMessage>(&record);
    assert!(e.contains("invalid type"), "{e}");
    let out = classify(&json!({ "Records": [record] }));
    assert_eq!(out[0].kind(), "alarm");
}

/// The alarm action with `account` for `accountId`: the crate knows only `accountId`.
#[test]
fn alarm_action_with_account_alias() {
    let mut v = fixture!("cloudwatch-alarm/direct-action-alarm.json");
    let account = v.as_object_mut().unwrap().remove("accountId").unwrap();
    v.as_object_mut().unwrap().remove("alarmArn"); // no ARN to take the account from
    v["account"] = account;
    let crate_reads = serde_json::from_value::<CloudWatchAlarm<Value, Value>>(v.clone()).unwrap();
    assert_eq!(crate_reads.account_id, None);
    let Inbound::Alarm(a) = &classify(&v)[0] else {
        panic!()
    };
    assert_eq!(a.account.as_deref(), Some("123456789012"));
    alike(&v);
}

/// The crate keeps `"None"`, `""` and padding as they are; the typed reading cleans them as
/// `util::str_field` does.
#[test]
fn placeholders_and_padding_read_alike() {
    let mut v = fixture!("rds/eventbridge-failover-started.json");
    v["id"] = json!("None");
    v["source"] = json!(" aws.rds ");
    v["region"] = json!("");
    v["resources"] = json!([
        "null",
        " arn:aws:rds:us-east-1:123456789012:db:nbaops-dev-db "
    ]);
    assert!(typed::<EventBridgeEvent>(&v).is_some());
    assert_eq!(classify(&v)[0].kind(), "rds");
    alike(&v);
    let mut sns = sns_of!("cost/sns-anomaly-service-only.json");
    sns["MessageId"] = json!(" m-1 ");
    sns["Subject"] = json!("None");
    sns["TopicArn"] = json!(" arn:aws:sns:eu-west-1:123456789012:nbaops-dev-cost ");
    assert!(typed::<SnsMessage>(&sns).is_some());
    assert_eq!(classify(&sns)[0].event_id(), Some("m-1"));
    alike(&sns);
}

/// The alarm notification in an SNS `Message` stays ours (`alarm::from_sns`): the crate's
/// `CloudWatchAlarmPayload` refuses real ones — a null `AlarmDescription`, a composite alarm
/// without `Trigger`, an anomaly-detection alarm without `Threshold` (docs/local-stack.md).
#[test]
fn sns_alarm_messages_the_crate_refuses() {
    use aws_lambda_events::sns::CloudWatchAlarmPayload;
    for sns in [
        sns_of!("cloudwatch-alarm/sns-single-metric-alarm.json"),
        sns_of!("cloudwatch-alarm/sns-composite.json"),
        sns_of!("cloudwatch-alarm/sns-anomaly-detection.json"),
    ] {
        let message: Value = serde_json::from_str(sns["Message"].as_str().unwrap()).unwrap();
        refused::<CloudWatchAlarmPayload>(&message);
        assert_eq!(classify(&sns)[0].kind(), "alarm");
    }
}

//! Strategies for the property tests (`proptest`): arbitrary JSON biased towards the keys and
//! values the parsers look at, and every real fixture under `events/` damaged the ways payloads
//! get damaged — fields deleted, retyped, truncated, made huge, unicode, nested oddly, numbers out
//! of range, timestamps malformed — including inside JSON carried as a string (an SNS `Message`,
//! a Scheduler `detail`). Compiled for this crate's tests and, through the `proptest` feature, for
//! the functions' tests; never in a deployed binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{json, Map, Value};

/// Case count: `PROPTEST_CASES` when set (e.g. a long local run), else `default` — modest, so
/// `cargo test` stays fast. Failures are not persisted to files: a case found becomes a named
/// regression test.
pub fn config(default: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Keys the parsers and handlers read (any spelling they accept).
pub const KEYS: &[&str] = &[
    "Records",
    "Sns",
    "Message",
    "MessageId",
    "Subject",
    "TopicArn",
    "Timestamp",
    "Type",
    "EventSource",
    "eventSource",
    "eventName",
    "detail-type",
    "source",
    "detail",
    "id",
    "time",
    "account",
    "region",
    "resources",
    "alarmData",
    "alarmName",
    "alarmArn",
    "state",
    "value",
    "reason",
    "reasonData",
    "timestamp",
    "previousState",
    "configuration",
    "metrics",
    "metricStat",
    "metric",
    "namespace",
    "name",
    "dimensions",
    "expression",
    "AlarmName",
    "AlarmArn",
    "NewStateValue",
    "OldStateValue",
    "NewStateReason",
    "StateChangeTime",
    "Trigger",
    "MetricName",
    "Namespace",
    "Dimensions",
    "Metrics",
    "AWSAccountId",
    "Region",
    "nbaops",
    "task",
    "at",
    "env",
    "database",
    "Event Source",
    "Event ID",
    "Event Message",
    "Source ID",
    "Source ARN",
    "Event Time",
    "Identifier Link",
    "EventID",
    "SourceIdentifier",
    "SourceType",
    "SourceArn",
    "EventCategories",
    "Message",
    "Date",
    "anomalyId",
    "anomalyStartDate",
    "impact",
    "totalImpact",
    "maxImpact",
    "rootCauses",
    "service",
    "monitorName",
    "accountName",
    "budgetName",
    "budgetType",
    "threshold",
    "actualAmount",
    "forecastedAmount",
    "notificationType",
    "schema",
    "severity",
    "dedup_key",
    "status",
    "summary",
    "resource",
    "source_function",
    "details",
    "actions_taken",
    "runbook",
    "kid",
    "sig",
    "exp",
    "httpMethod",
    "requestContext",
    "queryStringParameters",
    "headers",
    "body",
];

/// Strings that have broken parsers before or are close to what they expect.
pub const ODD_STRINGS: &[&str] = &[
    "",
    " ",
    "None",
    "null",
    "undefined",
    "ALARM",
    "OK",
    "INSUFFICIENT_DATA",
    "alarm",
    "2026-13-45T25:61:61Z",
    "2026-02-30T00:00:00Z",
    "+275760-09-13T00:00:00Z",
    "-000001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999999+14:00",
    "1970-01-01T00:00:00-25:00",
    "2026-11-25T20:01:02.000+0000",
    "2026-11-25 20:01:02 UTC",
    "2026-11-25",
    "2026-11-25T20:01",
    "262143-12-31T23:59:59Z",
    "1e309",
    "-1",
    "NaN",
    "Infinity",
    "$1,085.12",
    "-$0.00",
    "80%",
    "18446744073709551616",
    "1.7976931348623157e308",
    "arn:aws:sns:us-east-1:123456789012:nbaops-dev-alerts",
    "arn:",
    "arn:aws",
    ":::::",
    "arn:aws:rds:us-east-1:123456789012:db:",
    "arn:aws:cloudwatch:us-east-1:123456789012:alarm:",
    "RDS-EVENT-0049",
    "RDS-EVENT-",
    "RDS-EVENT-99999999999999999999",
    "rds-event-0154",
    "{\"nbaops\":{\"task\":\"pg-health\"}}",
    "{",
    "[",
    "\"",
    "\\",
    "\u{0}",
    "\u{feff}é漢字🎉\u{202e}",
    "é",
    "🎉",
    "a\u{301}",
    "pg-health",
    "vacuum-trigger",
    "off-peak-scale-in",
    "offhours",
    "backup-rpo-check",
    "backup-s3-check",
    "backup-monthly",
    "backup-restore-drill",
    "cost-daily-check",
    "posture-check",
    "failover-sweep",
    "alert-escalation-sweep",
    "nbaops.alert/v1",
    "nbaops.action/v1",
    "P1",
    "P2",
    "P5",
    "firing",
    "resolved",
    "aws.cloudwatch",
    "CloudWatch Alarm State Change",
    "aws.rds",
    "RDS DB Instance Event",
    "RDS DB Cluster Event",
    "Scheduled Event",
    "aws.scheduler",
    "aws.events",
    "aws.ce",
    "Anomaly Detected",
    "Notification",
    "aws:sns",
    "nbaops-dev-web",
    "nbaops-dev-db",
    "AutoScalingGroupName",
    "DBInstanceIdentifier",
    "CacheClusterId",
    "db-instance",
    "failover",
    "prod",
    "dev",
    "GreaterThanThreshold",
    "Threshold Crossed: 1 datapoint [99.0 (25/11/26 20:00:00)]",
];

/// Numbers out of every range the parsers convert to.
pub fn odd_numbers() -> Vec<Value> {
    vec![
        json!(u64::MAX),
        json!(i64::MIN),
        json!(i64::MAX),
        json!(1e308),
        json!(-1e308),
        json!(5e-324),
        json!(-0.0),
        json!(0.5),
        json!(-1),
        json!(0),
        json!(4_294_967_296u64),
        json!(2_147_483_648u64),
        json!(9_007_199_254_740_993u64),
        json!(1e15),
        json!(1e11),
        json!(99_999_999_999_999_999.0),
        json!(8_640_000_000_000_000i64),
    ]
}

fn odd_string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => any::<String>(),
        4 => prop::sample::select(ODD_STRINGS).prop_map(String::from),
        2 => prop::sample::select(KEYS).prop_map(String::from),
        1 => (prop::sample::select(&[1_000usize, 70_000, 300_000][..]), prop::sample::select(&["é", "a", "🎉", "{"][..]))
            .prop_map(|(n, s)| s.repeat(n)),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(KEYS).prop_map(String::from),
        1 => prop::sample::select(KEYS).prop_map(|k| k.to_lowercase()),
        1 => any::<String>(),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => any::<i64>().prop_map(|n| json!(n)),
        1 => any::<u64>().prop_map(|n| json!(n)),
        1 => any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f).map(Value::Number)),
        1 => prop::sample::select(odd_numbers()),
        5 => odd_string().prop_map(Value::String),
    ]
}

/// Arbitrary JSON, biased towards the shapes the parsers look for; JSON is also nested inside
/// strings, as SNS carries it.
pub fn json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            2 => prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            4 => prop::collection::vec((key(), inner.clone()), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
            1 => inner.prop_map(|v| Value::String(v.to_string())),
        ]
    })
}

/// `events/` at the repository root.
pub fn fixture_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../events"))
}

/// Every fixture as (`folder/file`, parsed JSON), sorted.
pub fn fixtures() -> Vec<(String, Value)> {
    let root = fixture_root();
    let mut out = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "json") {
                let text = std::fs::read_to_string(&path).unwrap();
                let name = path
                    .strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .to_string();
                let value = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                out.push((name, value));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(
        out.len() >= 30,
        "only {} fixtures under {}",
        out.len(),
        root.display()
    );
    out
}

/// One way of damaging one node of a payload.
#[derive(Debug, Clone)]
pub enum Mutation {
    Delete,
    Replace(Value),
    /// Cut a string (at a character), an array or an object; JSON inside a string is cut as text.
    Truncate(usize),
    /// Text inserted into a string at a character position.
    Insert(usize, String),
    /// The value inside `depth` arrays or objects.
    Nest(usize, bool),
    /// The key renamed to another case (the parsers match keys case-insensitively).
    Recase,
    /// The key duplicated in another case with another value.
    Shadow(Value),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => Just(Mutation::Delete),
        4 => leaf().prop_map(Mutation::Replace),
        1 => json().prop_map(Mutation::Replace),
        2 => any::<usize>().prop_map(Mutation::Truncate),
        2 => (any::<usize>(), odd_string()).prop_map(|(i, s)| Mutation::Insert(i, s)),
        1 => (1usize..140, any::<bool>()).prop_map(|(d, a)| Mutation::Nest(d, a)),
        1 => Just(Mutation::Recase),
        1 => leaf().prop_map(Mutation::Shadow),
    ]
}

/// Marker key standing for "this object was JSON text inside a string".
const EMBEDDED: &str = "\u{0}embedded-json";

/// Strings holding a JSON object or array become `{EMBEDDED: value}` so mutations reach inside.
fn expand(v: Value) -> Value {
    match v {
        Value::String(s) => match serde_json::from_str::<Value>(s.trim()) {
            Ok(inner @ (Value::Object(_) | Value::Array(_))) => {
                let mut m = Map::new();
                m.insert(EMBEDDED.into(), expand(inner));
                Value::Object(m)
            }
            _ => Value::String(s),
        },
        Value::Array(a) => Value::Array(a.into_iter().map(expand).collect()),
        Value::Object(m) => Value::Object(m.into_iter().map(|(k, v)| (k, expand(v))).collect()),
        other => other,
    }
}

fn collapse(v: Value) -> Value {
    match v {
        Value::Object(m) if m.len() == 1 && m.contains_key(EMBEDDED) => {
            let inner = m.into_iter().next().map(|(_, v)| v).unwrap_or(Value::Null);
            Value::String(collapse(inner).to_string())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(collapse).collect()),
        Value::Object(m) => Value::Object(m.into_iter().map(|(k, v)| (k, collapse(v))).collect()),
        other => other,
    }
}

#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize),
}

fn paths(v: &Value, here: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    out.push(here.clone());
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                here.push(Step::Key(k.clone()));
                paths(child, here, out);
                here.pop();
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                here.push(Step::Index(i));
                paths(child, here, out);
                here.pop();
            }
        }
        _ => {}
    }
}

fn at<'a>(v: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    let mut cur = v;
    for step in path {
        cur = match step {
            Step::Key(k) => cur.as_object_mut()?.get_mut(k)?,
            Step::Index(i) => cur.as_array_mut()?.get_mut(*i)?,
        };
    }
    Some(cur)
}

fn cut_chars(s: &str, n: usize) -> String {
    let len = s.chars().count();
    s.chars()
        .take(if len == 0 { 0 } else { n % (len + 1) })
        .collect()
}

fn apply(doc: &mut Value, path: &[Step], m: &Mutation) {
    let (parent_path, last) = match path.split_last() {
        Some((last, parent)) => (parent, Some(last)),
        None => (path, None),
    };
    match m {
        Mutation::Delete | Mutation::Recase | Mutation::Shadow(_) => {
            let Some(last) = last else {
                *doc = Value::Null;
                return;
            };
            let Some(parent) = at(doc, parent_path) else {
                return;
            };
            match (parent, last) {
                (Value::Object(o), Step::Key(k)) => {
                    let alt = if k.to_lowercase() == *k {
                        k.to_uppercase()
                    } else {
                        k.to_lowercase()
                    };
                    match m {
                        Mutation::Delete => {
                            o.remove(k);
                        }
                        Mutation::Recase => {
                            if let Some(v) = o.remove(k) {
                                o.insert(alt, v);
                            }
                        }
                        Mutation::Shadow(v) => {
                            o.insert(alt, v.clone());
                        }
                        _ => {}
                    }
                }
                (Value::Array(a), Step::Index(i)) if *i < a.len() => {
                    a.remove(*i);
                }
                _ => {}
            }
        }
        Mutation::Replace(v) => {
            if let Some(node) = at(doc, path) {
                *node = v.clone();
            }
        }
        Mutation::Truncate(n) => {
            let Some(node) = at(doc, path) else {
                return;
            };
            match node {
                Value::String(s) => *s = cut_chars(s, *n),
                Value::Array(a) => a.truncate(n % (a.len() + 1)),
                Value::Object(o) if o.contains_key(EMBEDDED) => {
                    let text = collapse(node.clone());
                    if let Value::String(s) = text {
                        *node = Value::String(cut_chars(&s, *n));
                    }
                }
                Value::Object(o) => {
                    let keep = n % (o.len() + 1);
                    *o = std::mem::take(o).into_iter().take(keep).collect();
                }
                _ => {}
            }
        }
        Mutation::Insert(i, text) => {
            if let Some(Value::String(s)) = at(doc, path) {
                let pos = i % (s.chars().count() + 1);
                let mut out: String = s.chars().take(pos).collect();
                out.push_str(text);
                out.extend(s.chars().skip(pos));
                *s = out;
            }
        }
        Mutation::Nest(depth, arrays) => {
            if let Some(node) = at(doc, path) {
                let mut v = std::mem::take(node);
                for _ in 0..*depth {
                    v = if *arrays {
                        Value::Array(vec![v])
                    } else {
                        json!({ "value": v })
                    };
                }
                *node = v;
            }
        }
    }
}

/// A real payload damaged by `mutations` (each at a node picked by its seed). The name says
/// which fixture it came from.
pub fn damage(fixture: &Value, mutations: &[(usize, Mutation)]) -> Value {
    let mut doc = expand(fixture.clone());
    for (seed, m) in mutations {
        let mut all = Vec::new();
        paths(&doc, &mut Vec::new(), &mut all);
        let path = all[seed % all.len()].clone();
        apply(&mut doc, &path, m);
    }
    collapse(doc)
}

/// (fixture name, damaged fixture).
pub fn mutated_fixture() -> impl Strategy<Value = (String, Value)> {
    let all = fixtures();
    (
        0..all.len(),
        prop::collection::vec((any::<usize>(), mutation()), 1..5),
    )
        .prop_map(move |(i, ms)| (all[i].0.clone(), damage(&all[i].1, &ms)))
}

/// A fixture (unchanged).
pub fn fixture() -> impl Strategy<Value = (String, Value)> {
    prop::sample::select(fixtures())
}

/// Raw bytes of a fixture, cut short or with bytes overwritten (what a truncated or corrupted
/// delivery looks like before it is JSON).
pub fn damaged_bytes() -> impl Strategy<Value = Vec<u8>> {
    let all = fixtures();
    (
        0..all.len(),
        any::<usize>(),
        prop::collection::vec((any::<usize>(), any::<u8>()), 0..4),
    )
        .prop_map(move |(i, cut, flips)| {
            let mut bytes = serde_json::to_vec(&all[i].1).unwrap();
            for (at, b) in flips {
                let n = bytes.len();
                bytes[at % n] = b;
            }
            let keep = cut % (bytes.len() + 1);
            if cut % 3 == 0 {
                bytes.truncate(keep);
            }
            bytes
        })
}

/// Any payload a function may be handed: arbitrary JSON (half the time), else a damaged fixture.
pub fn payload() -> impl Strategy<Value = Value> {
    prop_oneof![
        1 => json(),
        2 => mutated_fixture().prop_map(|(_, v)| v),
        1 => damaged_bytes().prop_map(|b| serde_json::from_slice(&b).unwrap_or(Value::Null)),
    ]
}

/// Whether [`super::classify`] understands anything in `payload` (an alarm, an RDS event, a
/// schedule, a cost anomaly, a budget alert), whichever function it is for.
pub fn understood(payload: &Value) -> bool {
    super::classify(payload).iter().any(|i| !i.is_not_for_me())
}

/// Audit records with outcome `acted` in a function's report.
pub fn acted(report: &crate::runtime::InvocationReport) -> usize {
    report
        .records
        .iter()
        .flat_map(|r| &r.actions)
        .filter(|a| a.outcome == crate::guard::Outcome::Acted)
        .count()
}

/// Runs a handler's future to completion on a fresh current-thread runtime (inside a property).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

/// The properties every function's handler keeps for a payload nothing understands: answered
/// (no error), every record a "not for me", no `acted` audit record. The caller checks its fakes.
pub fn refused_cleanly(
    res: &crate::Result<crate::runtime::InvocationReport>,
) -> Result<(), TestCaseError> {
    let report = match res {
        Ok(r) => r,
        Err(e) => {
            return Err(TestCaseError::fail(format!(
                "refused payload gave an error: {e}"
            )))
        }
    };
    prop_assert!(!report.records.is_empty(), "no record in the report");
    for r in &report.records {
        prop_assert!(r.not_for_me.is_some(), "record not refused: {:?}", r);
        prop_assert!(
            r.actions.is_empty(),
            "actions for a refused payload: {:?}",
            r
        );
        prop_assert!(r.alerts.is_empty(), "alerts for a refused payload: {:?}", r);
    }
    prop_assert_eq!(acted(report), 0);
    Ok(())
}

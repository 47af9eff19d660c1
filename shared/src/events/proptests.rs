//! Property tests of every event parser: arbitrary JSON, every fixture damaged (see
//! [`super::arbitrary`]) and corrupted bytes. Properties: no panic; something for every input;
//! a refusal always says why (briefly); an understood event has an id and a delivery and
//! serialises; a payload means the same after a JSON round trip.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use serde_json::Value;

use super::arbitrary::{self, config};
use super::envelope_tests;
use super::*;

/// Longest acceptable refusal reason (characters; one more for the ellipsis).
const MAX_REASON: usize = MAX_REASON_CHARS + 1;

fn check(out: &[Inbound]) -> std::result::Result<(), TestCaseError> {
    prop_assert!(!out.is_empty(), "classify returned nothing");
    for i in out {
        match i {
            Inbound::NotForMe(n) => {
                prop_assert!(!n.reason.trim().is_empty(), "refusal without a reason");
                prop_assert!(
                    n.reason.chars().count() <= MAX_REASON,
                    "reason of {} chars: {}…",
                    n.reason.chars().count(),
                    n.reason.chars().take(200).collect::<String>()
                );
                prop_assert_eq!(i.event_id(), None);
            }
            other => {
                prop_assert!(
                    other.event_id().is_some_and(|id| !id.trim().is_empty()),
                    "understood without an event id: {:?}",
                    other
                );
                prop_assert!(other.delivery().is_some());
                let text = serde_json::to_string(other);
                prop_assert!(text.is_ok(), "does not serialise: {:?}", text.err());
            }
        }
    }
    Ok(())
}

/// Equal, except that a Scheduler input without `at` (and without an id) reads the clock.
pub(super) fn same(a: &Inbound, b: &Inbound) -> bool {
    match (a, b) {
        (Inbound::Schedule(x), Inbound::Schedule(y)) => {
            let clock_read = (x.at - y.at).num_seconds().abs() < 60;
            x.name == y.name
                && x.detail == y.detail
                && x.delivery == y.delivery
                && (x.at == y.at || clock_read)
                && (x.event_id == y.event_id
                    || (clock_read && x.event_id.starts_with("scheduler/")))
        }
        _ => a == b,
    }
}

/// The payload serialised and parsed again classifies the same (when it can be parsed again:
/// JSON nested deeper than serde_json's limit cannot).
fn round_trip(v: &Value, out: &[Inbound]) -> std::result::Result<(), TestCaseError> {
    let text = serde_json::to_string(v).unwrap();
    let Ok(again) = serde_json::from_str::<Value>(&text) else {
        return Ok(());
    };
    let out2 = classify(&again);
    prop_assert_eq!(out.len(), out2.len());
    for (a, b) in out.iter().zip(&out2) {
        prop_assert!(same(a, b), "round trip changed\n{:?}\ninto\n{:?}", a, b);
    }
    // And the bytes path agrees with the value path.
    let out3 = classify_bytes(text.as_bytes());
    for (a, b) in out.iter().zip(&out3) {
        prop_assert!(same(a, b), "bytes path differs\n{:?}\n{:?}", a, b);
    }
    Ok(())
}

fn ctx_strategy() -> impl Strategy<Value = Ctx> {
    (
        prop::sample::select(vec![
            Delivery::EventBridge,
            Delivery::Sns,
            Delivery::AlarmAction,
            Delivery::Scheduler,
        ]),
        prop::option::of(any::<String>()),
        prop::option::of(prop::sample::select(arbitrary::ODD_STRINGS)),
        prop::option::of(any::<String>()),
    )
        .prop_map(|(delivery, id, region, subject)| {
            let mut c = Ctx::empty(delivery);
            c.id = id;
            c.region = region.map(String::from);
            c.subject = subject;
            c.time = None;
            c
        })
}

fn refusal<T>(r: &std::result::Result<T, NotForMe>) -> std::result::Result<(), TestCaseError> {
    if let Err(n) = r {
        prop_assert!(!n.reason.trim().is_empty());
        prop_assert!(
            n.reason.chars().count() <= MAX_REASON,
            "reason of {} chars: {}",
            n.reason.chars().count(),
            n.reason
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn arbitrary_json_is_classified_or_refused(v in arbitrary::json()) {
        let out = classify(&v);
        check(&out)?;
        round_trip(&v, &out)?;
    }

    #[test]
    fn damaged_fixtures_are_classified_or_refused((name, v) in arbitrary::mutated_fixture()) {
        let out = classify(&v);
        check(&out).map_err(|e| TestCaseError::fail(format!("{name}: {e}")))?;
        round_trip(&v, &out).map_err(|e| TestCaseError::fail(format!("{name}: {e}")))?;
    }

    /// Wherever `aws_lambda_events` accepts an envelope, it is read as the tolerant reader reads
    /// it: the payload, its first SNS notification on its own, and that (or the payload) in an SQS
    /// record.
    #[test]
    fn typed_and_tolerant_envelopes_classify_alike(v in arbitrary::payload()) {
        let sns = v.pointer("/Records/0/Sns").cloned().unwrap_or(Value::Null);
        let body = if sns.is_null() { v.to_string() } else { sns.to_string() };
        let sqs = serde_json::json!({"Records": [{"eventSource": "aws:sqs", "body": body}]});
        for v in [&v, &sqs, &sns] {
            let typed = classify(v);
            let tolerant = envelope_tests::tolerant(|| classify(v));
            prop_assert_eq!(typed.len(), tolerant.len());
            for (a, b) in typed.iter().zip(&tolerant) {
                prop_assert!(same(a, b), "typed\n{:?}\ntolerant\n{:?}\nof {}", a, b, v);
            }
        }
    }

    #[test]
    fn corrupted_bytes_are_classified_or_refused(bytes in arbitrary::damaged_bytes()) {
        check(&classify_bytes(&bytes))?;
        if let Ok(s) = std::str::from_utf8(&bytes) {
            check(&classify_str(s))?;
        }
    }

    /// Every per-kind parser on its own, with any object and any envelope.
    #[test]
    fn each_parser_refuses_or_parses(v in arbitrary::json(), ctx in ctx_strategy(), text in any::<String>()) {
        refusal(&alarm::from_eventbridge(&v, &ctx))?;
        refusal(&alarm::from_direct_action(&v))?;
        refusal(&alarm::from_sns(&v, &ctx))?;
        if let Ok(ev) = rds::from_eventbridge(&v, &ctx) {
            let _ = rds_catalog::classify_rds_event(&ev);
        }
        if let Ok(ev) = rds::from_sns(&v, &ctx) {
            let _ = rds_catalog::classify_rds_event(&ev);
        }
        refusal(&rds::from_eventbridge(&v, &ctx))?;
        refusal(&rds::from_sns(&v, &ctx))?;
        refusal(&schedule::from_eventbridge(&v, &ctx))?;
        refusal(&schedule::from_bare(&v))?;
        refusal(&cost::anomaly_from_eventbridge(&v, &ctx))?;
        refusal(&cost::anomaly_from_json(&v, &ctx))?;
        refusal(&cost::budget_from_json(&v, &ctx))?;
        refusal(&cost::budget_from_text(&text, &ctx))?;
        if let Some(s) = v.as_str() {
            refusal(&cost::budget_from_text(s, &ctx))?;
        }
        let _ = cost::looks_like_budget_text(&text, Some(&text));
        let _ = rds::normalise_event_code(&text);
        let _ = util::parse_time(&text);
        let _ = util::parse_amount(&text);
        let _ = util::time_of(&v);
        let _ = util::number_of(&v);
        let _ = util::u32_field(&v, &["value", "Value"]);
        let _ = util::arn_tail(&text);
        let _ = util::arn_account(&text);
        let _ = util::truncate(&text, 7);
        let _ = AlarmState::parse(&text);
        let _ = RdsSourceType::parse(&text);
    }
}

/// The real fixtures themselves survive the round trip (and every one is understood or refused
/// as its folder says — `tests::every_fixture_is_classified_as_its_folder_says`).
#[test]
fn every_fixture_round_trips() {
    for (name, v) in arbitrary::fixtures() {
        let out = classify(&v);
        check(&out).unwrap_or_else(|e| panic!("{name}: {e}"));
        round_trip(&v, &out).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// Found by `arbitrary_json_is_classified_or_refused`: without serde_json's `float_roundtrip`
/// this number parsed back one unit in the last place away (…197e-195).
#[test]
fn a_float_reads_back_as_written() {
    for f in [
        6.981796556835196e-195,
        130.65331632653061,
        97.45365320034685,
    ] {
        let v = serde_json::json!({ "value": f });
        let back: Value = serde_json::from_str(&v.to_string()).unwrap();
        assert_eq!(back["value"].as_f64(), Some(f));
    }
}

/// Found by the property tests: a function URL request's path (and an object's key list) was
/// copied whole into the refusal reason.
#[test]
fn a_refusal_never_copies_a_huge_payload() {
    let path = "/".to_string() + &"é".repeat(5_000);
    let out = classify(&serde_json::json!({"httpMethod": "GET", "path": path}));
    let Inbound::NotForMe(n) = &out[0] else {
        panic!("{out:?}")
    };
    assert!(n.reason.starts_with("API Gateway"), "{}", n.reason);
    assert!(n.reason.chars().count() < 200, "{}", n.reason.len());
    let key = "k".repeat(3_000);
    let out = classify(&serde_json::json!({ key: 1 }));
    let Inbound::NotForMe(n) = &out[0] else {
        panic!("{out:?}")
    };
    assert!(n.reason.chars().count() < 200, "{}", n.reason.len());
}

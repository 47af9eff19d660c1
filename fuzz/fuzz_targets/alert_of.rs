//! alert-router's reading of an SNS record of the alerts topic: never a panic; an alert it
//! accepts has a dedup key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data).to_string();
    let value: Value = serde_json::from_slice(data).unwrap_or(Value::Null);
    for record in [
        json!({"EventSource": "aws:sns", "Sns": {"MessageId": "fuzz", "Message": text}}),
        json!({"EventSource": "aws:sns", "Sns": {"MessageId": "fuzz", "Message": value}}),
        value.clone(),
    ] {
        if let Ok(alert) = alert_router::alerts_topic::alert_of(&record) {
            assert!(!alert.dedup_key.trim().is_empty());
        }
    }
});

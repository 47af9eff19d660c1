//! Any bytes as a Lambda payload: `classify_bytes` never panics, answers something, refuses with
//! a reason, and an understood payload classifies the same after a JSON round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nbaops_shared::events::{classify, classify_bytes, Inbound};

fuzz_target!(|data: &[u8]| {
    let out = classify_bytes(data);
    assert!(!out.is_empty());
    for i in &out {
        match i {
            Inbound::NotForMe(n) => assert!(!n.reason.trim().is_empty()),
            other => {
                assert!(other.event_id().is_some_and(|id| !id.is_empty()));
                serde_json::to_string(other).expect("an understood event serialises");
            }
        }
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let text = v.to_string();
        if let Ok(again) = serde_json::from_str::<serde_json::Value>(&text) {
            let out2 = classify(&again);
            assert_eq!(out.len(), out2.len());
            for (a, b) in out.iter().zip(&out2) {
                assert_eq!(a.kind(), b.kind());
                assert_eq!(a.event_id(), b.event_id());
            }
        }
    }
});

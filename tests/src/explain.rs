//! What a decision's sentence must say (issue #18 "every decision explained"), checked against
//! the audit record's own fields: one sentence, opening with its outcome and change, naming its
//! rule (SPEC words) and every config key, carrying every observed number with its unit and every
//! threshold with its comparison, and for a stop the step and its note, for a failure the error.

use nbaops_shared::guard::explain::with_unit;
use nbaops_shared::guard::{AuditRecord, Outcome};

/// Every decision of a function's response (its records' `actions`) checked.
pub fn check_response(v: &serde_json::Value) -> Result<(), String> {
    for rec in v["records"].as_array().into_iter().flatten() {
        for a in rec["actions"].as_array().into_iter().flatten() {
            let audit: AuditRecord = serde_json::from_value(a.clone())
                .map_err(|e| format!("audit record unreadable: {e}: {a}"))?;
            check_sentence(&audit).map_err(|e| format!("decision not explained: {e}"))?;
        }
    }
    Ok(())
}

/// `Err` names the first thing the sentence lacks.
pub fn check_sentence(r: &AuditRecord) -> Result<(), String> {
    let s = &r.sentence;
    let e = &r.explanation;
    let fail = |what: String| Err(format!("{what} — {} {}: {s:?}", r.action, r.resource));
    if s.is_empty() || !s.ends_with('.') || s.contains('\n') {
        return fail("not one sentence".into());
    }
    if e.verb.is_empty() || e.change.is_empty() {
        return fail("no verb or change".into());
    }
    let opening = match r.outcome {
        Outcome::Acted => format!("{} {}", e.did, e.change),
        Outcome::WouldAct => format!("Would {} {}", e.verb, e.change),
        Outcome::Skipped => format!("Did not {} {}", e.verb, e.change),
        Outcome::Failed => format!("Tried to {} {}", e.verb, e.change),
        Outcome::NeedsApproval if r.dry_run => {
            format!("Would ask for approval to {} {}", e.verb, e.change)
        }
        Outcome::NeedsApproval => format!("Asked for approval to {} {}", e.verb, e.change),
    };
    if !s.starts_with(&opening) {
        return fail(format!("does not open with {opening:?}"));
    }
    if !e.rule.starts_with("SPEC ") || !s.contains(&e.rule) {
        return fail(format!("rule {:?} not named", e.rule));
    }
    if e.keys.is_empty() {
        return fail("no config key".into());
    }
    if let Some(k) = e.keys.iter().find(|k| !s.contains(k.as_str())) {
        return fail(format!("key {k} not named"));
    }
    if e.observed.is_empty() {
        return fail("no observed number".into());
    }
    for o in &e.observed {
        if !o.value.is_finite() {
            return fail(format!("{} is not a number", o.what));
        }
        if !s.contains(&format!("{} {}", o.what, with_unit(o.value, &o.unit))) {
            return fail(format!("observed {} {} missing", o.what, o.value));
        }
        if let (Some(c), Some(t)) = (&o.comparison, o.threshold) {
            if !s.contains(&format!("{c} {}", with_unit(t, &o.unit))) {
                return fail(format!("threshold {c} {t} missing"));
            }
        }
    }
    match (r.outcome, r.stopped_by) {
        (Outcome::Skipped, Some(step)) => {
            let Some(note) = r.steps.iter().find(|x| x.step == step).map(|x| &x.note) else {
                return fail(format!("step {step} not recorded"));
            };
            let name = step.to_string().replace('_', " ");
            if !s.contains(&format!("stopped by {name} ({note})")) {
                return fail(format!("stop by {name} not named"));
            }
        }
        (Outcome::Failed, _) => {
            let err = r.error.as_deref().unwrap_or("unknown error");
            if !s.contains(&format!("failed: {err}")) {
                return fail("error not named".into());
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(sentence: &str) -> AuditRecord {
        serde_json::from_value(json!({
            "schema": "nbaops.action/v1", "at": "2026-06-17T14:00:00Z", "env": "dev",
            "function": "scale-on-alarm", "request_id": "r", "event_id": "e",
            "action": "asg.scale_out", "resource": "asg:web", "reason": "cpu", "severity": "P3",
            "outcome": "skipped", "dry_run": false, "stopped_by": "cooldown",
            "emergency_change": false,
            "steps": [{"step": "cooldown", "passed": false, "note": "300 s left"}],
            "before": {}, "after": {}, "error": null,
            "explanation": {"verb": "scale", "did": "Scaled", "change": "web 2 → 3",
                "rule": "SPEC 2.5 capacity", "keys": ["scale.asg.step"],
                "observed": [{"what": "CPU", "value": 75.2, "unit": "%", "comparison": ">", "threshold": 70.0}]},
            "sentence": sentence,
        }))
        .unwrap()
    }

    #[test]
    fn a_sentence_missing_any_part_is_refused() {
        let good = "Did not scale web 2 → 3: CPU 75.2 % > 70 % (SPEC 2.5 capacity; scale.asg.step); stopped by cooldown (300 s left).";
        assert_eq!(check_sentence(&record(good)), Ok(()));
        for (bad, lacks) in [
            (good.replace("scale.asg.step", "x"), "key"),
            (good.replace("75.2", "75"), "observed"),
            (good.replace("> 70 %", "> 80 %"), "threshold"),
            (good.replace("SPEC 2.5 capacity", "capacity"), "rule"),
            (good.replace("Did not", "Would"), "open"),
            (good.replace("(300 s left)", ""), "stop"),
            (good.trim_end_matches('.').to_string(), "one sentence"),
        ] {
            let err = check_sentence(&record(&bad)).unwrap_err();
            assert!(err.contains(lacks), "{lacks}: {err}");
        }
    }
}

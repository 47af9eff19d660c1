//! Scheduled ticks: an EventBridge rule (`aws.events`), the EventBridge Scheduler
//! envelope (`aws.scheduler`, whose `detail` may be a JSON string), or a bare
//! Scheduler input `{"nbaops": {...}}` with no envelope at all.
//!
//! For the bare input, `detail` is the whole payload (so `detail.nbaops.task` reads
//! the same whichever way the tick came), `name` is `nbaops.name`/`nbaops.schedule`
//! or else `nbaops.task`, `at` is `nbaops.at`/`nbaops.time`/`nbaops.scheduled_time`
//! when it parses (Scheduler can inject `<aws.scheduler.scheduled-time>`) or else
//! now, and `event_id` is `nbaops.id` (e.g. `<aws.scheduler.execution-id>`) or else
//! `scheduler/{task}/{at, to the minute}`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::util::{any, arn_tail, as_object_or_json_string, describe, get, str_field, time_field};
use super::{Ctx, Delivery, NotForMe};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScheduledTick {
    /// Rule or schedule name: the tail of the first `resources[]` ARN, or from `detail`.
    pub name: Option<String>,
    pub at: DateTime<Utc>,
    /// Always an object (a JSON-string detail is decoded; absent ⇒ `{}`).
    pub detail: Value,
    pub delivery: Delivery,
    pub event_id: String,
}

impl ScheduledTick {
    /// `detail.nbaops.task`, else `detail.task`.
    pub fn task(&self) -> Option<String> {
        get(&self.detail, "nbaops")
            .and_then(|n| str_field(n, &["task"]))
            .or_else(|| str_field(&self.detail, &["task"]))
    }

    /// A string field of the `nbaops` block (`action`, `env`…), else of `detail` itself.
    pub fn param(&self, key: &str) -> Option<String> {
        get(&self.detail, "nbaops")
            .and_then(|n| str_field(n, &[key]))
            .or_else(|| str_field(&self.detail, &[key]))
    }
}

fn detail_object(v: Option<&Value>) -> Result<Value, NotForMe> {
    match v {
        None => Ok(Value::Object(Default::default())),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(Value::Object(Default::default())),
        Some(other) => as_object_or_json_string(other).ok_or_else(|| {
            NotForMe::new(format!(
                "Scheduled Event whose detail is not a JSON object: {}",
                describe(other)
            ))
        }),
    }
}

fn name_from_detail(detail: &Value) -> Option<String> {
    str_field(
        detail,
        &["name", "scheduleName", "ruleName", "schedule", "rule"],
    )
    .or_else(|| get(detail, "nbaops").and_then(|n| str_field(n, &["name", "schedule", "task"])))
}

/// `detail-type: "Scheduled Event"` from `aws.events` or `aws.scheduler`.
pub(crate) fn from_eventbridge(ev: &Value, ctx: &Ctx) -> Result<ScheduledTick, NotForMe> {
    let detail = detail_object(get(ev, "detail"))?;
    let name = ctx
        .resources
        .iter()
        .find_map(|r| arn_tail(r))
        .or_else(|| name_from_detail(&detail));
    let at = ctx.time.unwrap_or_else(crate::clock::now);
    let event_id = ctx.id.clone().unwrap_or_else(|| {
        format!(
            "schedule/{}/{}",
            name.as_deref().unwrap_or("unnamed"),
            at.format("%Y-%m-%dT%H:%MZ")
        )
    });
    Ok(ScheduledTick {
        name,
        at,
        detail,
        delivery: ctx.delivery,
        event_id,
    })
}

/// A bare `{"nbaops": {...}}` input (no envelope). `nbaops` may also be a JSON string.
pub(crate) fn from_bare(raw: &Value) -> Result<ScheduledTick, NotForMe> {
    let block = get(raw, "nbaops")
        .and_then(as_object_or_json_string)
        .ok_or_else(|| {
            NotForMe::new(format!(
                "bare nbaops input whose 'nbaops' is not an object: {}",
                get(raw, "nbaops")
                    .map(describe)
                    .unwrap_or_else(|| "null".into())
            ))
        })?;
    let mut detail = raw.clone();
    if let Some(obj) = detail.as_object_mut() {
        // Store the decoded block so `detail.nbaops` is always an object.
        obj.insert("nbaops".to_string(), block.clone());
    }
    let task = str_field(&block, &["task"]);
    let name = str_field(&block, &["name", "schedule"]).or_else(|| task.clone());
    let at = time_field(&block, &["at", "time", "scheduled_time", "scheduledTime"])
        .unwrap_or_else(crate::clock::now);
    let event_id = any(&block, &["id", "execution_id", "executionId"])
        .and_then(super::util::scalar_string)
        .unwrap_or_else(|| {
            format!(
                "scheduler/{}/{}",
                task.as_deref().unwrap_or("unknown"),
                at.format("%Y-%m-%dT%H:%MZ")
            )
        });
    Ok(ScheduledTick {
        name,
        at,
        detail,
        delivery: Delivery::Scheduler,
        event_id,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::tests::{one, reason};
    use super::super::{classify, classify_str, Inbound};
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn tick(fixture: &str) -> ScheduledTick {
        match one(fixture) {
            Inbound::Schedule(t) => t,
            other => panic!("expected schedule, got {other:#?}"),
        }
    }

    #[test]
    fn eventbridge_rule() {
        let t = tick(include_str!(
            "../../../events/schedule/eventbridge-rule.json"
        ));
        assert_eq!(t.name.as_deref(), Some("nbaops-dev-offhours-stop"));
        assert_eq!(t.delivery, Delivery::EventBridge);
        assert_eq!(t.at, Utc.with_ymd_and_hms(2026, 11, 25, 19, 0, 0).unwrap());
        assert_eq!(t.detail, json!({}));
        assert_eq!(t.event_id, "3c4d5e6f-7081-92a3-b4c5-d6e7f8091a01");
        assert_eq!(t.task(), None);
    }

    #[test]
    fn scheduler_string_detail() {
        let t = tick(include_str!(
            "../../../events/schedule/scheduler-string-detail.json"
        ));
        assert_eq!(t.delivery, Delivery::Scheduler);
        assert_eq!(t.name.as_deref(), Some("nbaops-dev-offhours-start"));
        assert_eq!(t.task().as_deref(), Some("offhours"));
        assert_eq!(t.param("action").as_deref(), Some("start"));
        assert_eq!(t.detail["nbaops"]["env"], json!("dev"));
        assert_eq!(t.at, Utc.with_ymd_and_hms(2026, 11, 26, 7, 0, 0).unwrap());
    }

    #[test]
    fn scheduler_object_detail() {
        let t = tick(include_str!(
            "../../../events/schedule/scheduler-object-detail.json"
        ));
        assert_eq!(t.delivery, Delivery::Scheduler);
        assert_eq!(t.name.as_deref(), Some("nbaops-dev-cost-report"));
        assert_eq!(t.task().as_deref(), Some("cost-report"));
        assert_eq!(t.event_id, "9d8c7b6a-5f4e-4d3c-2b1a-0f9e8d7c6b01");
    }

    #[test]
    fn bare_nbaops_input() {
        let before = crate::clock::now();
        let t = tick(include_str!(
            "../../../events/schedule/bare-nbaops-input.json"
        ));
        assert_eq!(t.delivery, Delivery::Scheduler);
        assert_eq!(t.task().as_deref(), Some("offhours"));
        assert_eq!(t.param("action").as_deref(), Some("stop"));
        assert_eq!(t.param("env").as_deref(), Some("dev"));
        assert_eq!(t.name.as_deref(), Some("offhours"));
        assert!(t.at >= before - chrono::Duration::seconds(1) && t.at <= crate::clock::now());
        assert!(
            t.event_id.starts_with("scheduler/offhours/"),
            "{}",
            t.event_id
        );
        assert_eq!(
            t.event_id,
            format!("scheduler/offhours/{}", t.at.format("%Y-%m-%dT%H:%MZ"))
        );
    }

    #[test]
    fn bare_input_with_id_and_time() {
        let out = classify_str(
            r#"{"nbaops":{"task":"offhours","id":"exec-42","at":"2026-11-25T19:00:00Z"}}"#,
        );
        let Inbound::Schedule(t) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(t.event_id, "exec-42");
        assert_eq!(t.at, Utc.with_ymd_and_hms(2026, 11, 25, 19, 0, 0).unwrap());
        // Same payload twice: same id.
        assert_eq!(
            classify_str(r#"{"nbaops":{"task":"x","id":"exec-42"}}"#)[0].event_id(),
            Some("exec-42")
        );
    }

    #[test]
    fn bare_input_with_string_block() {
        let out = classify(&json!({"nbaops": "{\"task\":\"offhours\"}"}));
        let Inbound::Schedule(t) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(t.task().as_deref(), Some("offhours"));
        assert!(reason(&classify(&json!({"nbaops": 7}))[0]).contains("not an object"));
    }

    #[test]
    fn unparsable_detail_is_not_for_me() {
        let mut v: Value = serde_json::from_str(include_str!(
            "../../../events/schedule/scheduler-string-detail.json"
        ))
        .unwrap();
        v["detail"] = json!("{not json");
        assert!(reason(&classify(&v)[0]).contains("detail is not a JSON object"));
        v["detail"] = json!("[1,2]");
        assert!(reason(&classify(&v)[0]).contains("detail is not a JSON object"));
        v["detail"] = json!(3);
        assert!(reason(&classify(&v)[0]).contains("detail is not a JSON object"));
    }

    #[test]
    fn unparsable_time_falls_back_to_now() {
        let mut v: Value = serde_json::from_str(include_str!(
            "../../../events/schedule/eventbridge-rule.json"
        ))
        .unwrap();
        v["time"] = json!("whenever");
        let before = crate::clock::now();
        let Inbound::Schedule(t) = &classify(&v)[0] else {
            panic!()
        };
        assert!(t.at >= before - chrono::Duration::seconds(1));
        assert_eq!(t.event_id, "3c4d5e6f-7081-92a3-b4c5-d6e7f8091a01");
    }
}

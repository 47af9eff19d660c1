//! Work fanned out on SQS (issue #20), for any function:
//!
//! - **Dispatch**: a tick `{"nbaops": {"task": "dispatch", "work": "<task>"}}` asks the function
//!   for its targets of `<task>` ([`Function::targets`]) and sends one work item per target to
//!   its queue (`fanout.queue_url`) with `SendMessageBatch`, ten per call, the calls concurrent.
//!   A work item is the body of one message:
//!   `{"nbaops": {"task", "target", "account", "region", "dispatched_at", "at"?}}`, the
//!   function's own tick with the target, the account and region it lives in (a member's, or the
//!   hub's: [`origins`], [`Target::in_origin`]), and the dispatch tick's `at` when it had one.
//! - **Consume**: an SQS batch (`Records[]` from `aws:sqs`, by the event source mapping) is
//!   handled message by message, each with its own time budget (`fanout.target_budget_seconds`,
//!   within the Lambda deadline). The answer names only the failed messages
//!   (`batchItemFailures`), which SQS makes visible again; the others are deleted. A message
//!   fails when its handler returns an error, runs out of its budget, or reports its target
//!   failed ([`RecordReport::failed`]: pg-health, a database it cannot reach). A body that is
//!   not a work item (nor any other event nbaops reads) is "not for me" and is NOT failed: it
//!   would only come back until the dead-letter queue; it is logged and reported. On the
//!   receive that will move it to the dead-letter queue (`ApproximateReceiveCount` >=
//!   `fanout.max_receive_count`, the queue's `maxReceiveCount`), a failing work item raises one
//!   P2 `work-dlq#<function>#<target>` before it is failed.
//!
//! AWS: <https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-errorhandling.html>
//! (`ReportBatchItemFailures`, the `batchItemFailures[].itemIdentifier` answer; an empty list
//! is a success),
//! <https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-dead-letter-queues.html>
//! (`maxReceiveCount`: past it the message moves to the dead-letter queue).

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};

use super::context::records_of;
use super::{BatchItemFailure, Ctx, Function, Invocation, InvocationReport, RecordReport};
use crate::alerts::Severity;
use crate::deadline::{room, Room, MARGIN};
use crate::error::{NbaopsError, Result};
use crate::events::{classify, Inbound, ScheduledTick};
use crate::fleet::Origin;
use crate::ports::MAX_BATCH;

/// The task of a dispatch tick.
pub const DISPATCH_TASK: &str = "dispatch";

/// The kind (dedup key prefix) of the P2 a work item raises on its way to the dead-letter queue.
pub const DLQ_KIND: &str = "work-dlq";

/// `SendMessageBatch` calls in flight at once while dispatching.
const SENDS_IN_FLIGHT: usize = 8;

/// One thing a function looks after, for one work item: a database (pg-health), a group...
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    pub name: String,
    /// The member account and region it lives in; `None`: the hub's own.
    pub account: Option<String>,
    pub region: Option<String>,
}

impl Target {
    /// A target in the hub's own account and region.
    pub fn local(name: impl Into<String>) -> Target {
        Target {
            name: name.into(),
            account: None,
            region: None,
        }
    }
}

impl Target {
    /// A target in `origin`: the hub's own is [`Target::local`], a member's carries its account
    /// and region, so its work item is routed to that member's clients
    /// ([`super::context::records_of`]).
    pub fn in_origin(name: impl Into<String>, origin: &Origin, hub: &Origin) -> Target {
        if origin == hub {
            return Target::local(name);
        }
        Target {
            name: name.into(),
            account: Some(origin.account.clone()),
            region: Some(origin.region.clone()),
        }
    }
}

/// The hub's own origin: the fleet's when one is configured, else as [`hub_origin`] reads it
/// (the work queue's URL, the alerts topic, `AWS_REGION`).
pub fn hub_of(ctx: &Ctx<'_>) -> Origin {
    match ctx.fleet {
        Some(f) => f.hub.clone(),
        None => {
            let (account, region) =
                hub_origin(&ctx.cfg().fanout.queue_url, &ctx.cfg().alerts_topic_arn);
            Origin::new(account, region)
        }
    }
}

/// The origins a fan-out over the fleet covers: the hub first, then every member account and
/// region it watches ([`crate::fleet::FleetConfig::member_origins`]). No fleet: the hub alone.
pub fn origins(ctx: &Ctx<'_>) -> Vec<Origin> {
    let hub = hub_of(ctx);
    let members = ctx
        .fleet
        .map(|f| f.config.member_origins(&hub))
        .unwrap_or_default();
    std::iter::once(hub).chain(members).collect()
}

pub fn is_dispatch(tick: &ScheduledTick) -> bool {
    tick.task().as_deref() == Some(DISPATCH_TASK)
}

/// The body of one work item.
pub fn work_item(
    task: &str,
    target: &str,
    account: &str,
    region: &str,
    at: DateTime<Utc>,
) -> Value {
    json!({"nbaops": {
        "task": task,
        "target": target,
        "account": account,
        "region": region,
        "dispatched_at": at.to_rfc3339_opts(SecondsFormat::Secs, true),
    }})
}

/// The hub's account and region: the account from the work queue's URL
/// (`https://sqs.<region>.amazonaws.com/<account>/<name>`), else from the alerts topic's ARN;
/// the region from `AWS_REGION` (Lambda sets it), else from the topic's ARN.
pub fn hub_origin(queue_url: &str, topic_arn: &str) -> (String, String) {
    let from_url = queue_url
        .split('/')
        .find(|p| p.len() == 12 && p.bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_string);
    let arn: Vec<&str> = topic_arn.split(':').collect();
    let account = from_url
        .or_else(|| arn.get(4).map(|a| a.to_string()))
        .unwrap_or_default();
    let region = std::env::var("AWS_REGION")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(|| arn.get(3).map(|r| r.to_string()))
        .unwrap_or_default();
    (account, region)
}

/// A dispatch tick: one work item per target of `work`, sent to `fanout.queue_url`.
pub async fn dispatch_work<F: Function>(
    f: &F,
    tick: &ScheduledTick,
    ctx: &Ctx<'_>,
) -> Result<RecordReport> {
    let Some(work) = tick.param("work") else {
        return Ok(RecordReport::not_for_me(
            &tick.event_id,
            "schedule",
            r#"a dispatch tick names its work: {"nbaops": {"task": "dispatch", "work": "<task>"}}"#,
        ));
    };
    let Some(targets) = f.targets(&work, ctx).await? else {
        return Ok(RecordReport::not_for_me(
            &tick.event_id,
            "schedule",
            format!("{} does not fan out '{work}'", ctx.function),
        ));
    };
    let mut w = ctx.work(&tick.event_id, "schedule", String::new());
    if targets.is_empty() {
        w.rec.summary = format!("dispatched 0 work items of {work}: no target");
        return w.done().await;
    }
    let cfg = &ctx.cfg().fanout;
    let Some(queue) = ctx.deps.work_queue.as_deref() else {
        return Err(NbaopsError::config(format!(
            "fanout.queue_url is not set: nowhere to send {} work item(s) of {work}",
            targets.len()
        )));
    };
    let (hub_account, hub_region) = hub_origin(&cfg.queue_url, &ctx.cfg().alerts_topic_arn);
    let at = tick.param("at");
    let entries: Vec<(String, String)> = targets
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut body = work_item(
                &work,
                &t.name,
                t.account.as_deref().unwrap_or(&hub_account),
                t.region.as_deref().unwrap_or(&hub_region),
                ctx.now(),
            );
            // A dispatch tick on another clock (an operator replaying a time, a test) hands it
            // on: each item runs on it, as the tick without fan-out would have.
            if let (Some(at), Some(b)) = (&at, body["nbaops"].as_object_mut()) {
                b.insert("at".into(), json!(at));
            }
            (format!("t{i}"), body.to_string())
        })
        .collect();
    let url = cfg.queue_url.as_str();
    let results: Vec<Result<Vec<(String, String)>>> =
        futures_util::stream::iter(entries.chunks(MAX_BATCH))
            .map(|chunk| queue.send_batch(url, chunk))
            .buffer_unordered(SENDS_IN_FLIGHT)
            .collect()
            .await;
    let mut refused = Vec::new();
    for r in results {
        refused.extend(r?);
    }
    if !refused.is_empty() {
        // Failing the tick retries the whole dispatch: a target enqueued twice is scanned twice
        // (harmless: findings are announced once), one never enqueued would not be looked at.
        return Err(NbaopsError::dependency(
            "sqs",
            format!(
                "{} of {} work item(s) of {work} refused by the queue: {}",
                refused.len(),
                entries.len(),
                refused
                    .iter()
                    .take(3)
                    .map(|(id, why)| format!("{id}: {why}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        ));
    }
    w.rec.summary = format!(
        "dispatched {} work item(s) of {work} to {url}",
        entries.len()
    );
    w.note(format!(
        "{} SendMessageBatch call(s) of at most {MAX_BATCH}",
        entries.len().div_ceil(MAX_BATCH)
    ));
    w.done().await
}

/// The records of an SQS batch (`Records[]`, every one from `aws:sqs`), or `None`.
pub fn sqs_records(payload: &Value) -> Option<&Vec<Value>> {
    let records = payload.get("Records")?.as_array()?;
    let from_sqs = |r: &Value| {
        r.get("eventSource")
            .or_else(|| r.get("EventSource"))
            .and_then(Value::as_str)
            == Some("aws:sqs")
    };
    (!records.is_empty() && records.iter().all(from_sqs)).then_some(records)
}

fn receive_count(record: &Value) -> u32 {
    record
        .get("attributes")
        .and_then(|a| a.get("ApproximateReceiveCount"))
        .and_then(|n| {
            n.as_str()
                .and_then(|s| s.trim().parse().ok())
                .or_else(|| n.as_u64().and_then(|n| u32::try_from(n).ok()))
        })
        .unwrap_or(1)
}

/// An SQS batch, message by message; the report names the failed ones.
pub async fn consume<F: Function>(
    f: &F,
    records: &[Value],
    ctx: &Ctx<'_>,
) -> Result<InvocationReport> {
    let mut report = ctx.report();
    let mut failures = Vec::new();
    let cfg = &ctx.cfg().fanout;
    let budget = Duration::from_secs(cfg.target_budget_seconds);
    for record in records {
        let message_id = record
            .get("messageId")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let receives = receive_count(record);
        let inbound = classify(&json!({ "Records": [record] }))
            .into_iter()
            .next()
            .unwrap_or_else(|| Inbound::NotForMe(crate::events::NotForMe::new("empty SQS record")));
        let tick = match &inbound {
            Inbound::NotForMe(n) => {
                // Not failed: it would only come back, receive after receive, to the DLQ.
                tracing::warn!(message_id = %message_id, reason = %n.reason, "SQS message not for me: deleted, not retried");
                report.records.push(RecordReport::not_for_me(
                    &message_id,
                    "unknown",
                    n.reason.clone(),
                ));
                continue;
            }
            Inbound::Schedule(t) => Some(t.clone()),
            _ => None,
        };
        let target = tick
            .as_ref()
            .and_then(|t| t.param("target"))
            .unwrap_or_else(|| message_id.clone());
        // The item's own deadline: its budget, never past the invocation's.
        let now = crate::clock::now();
        let item_deadline = Some(
            ctx.inv
                .deadline
                .map_or(now + budget, |d| d.min(now + budget)),
        );
        let outcome = match room(ctx.inv.deadline, now, MARGIN, Duration::ZERO) {
            Room::Stop(why) => Err(format!("not started: {why}")),
            _ => {
                let inv = Invocation {
                    request_id: ctx.inv.request_id.clone(),
                    now: ctx.inv.now,
                    deadline: item_deadline,
                };
                let item_ctx = ctx.with_inv(&inv);
                let limit = item_deadline
                    .map(|d| (d - now).to_std().unwrap_or(Duration::ZERO))
                    .unwrap_or(budget);
                match tokio::time::timeout(limit, records_of(f, inbound, &item_ctx)).await {
                    Err(_) => Err(format!(
                        "{target}: stopped after {:.1} s (fanout.target_budget_seconds {}, or the Lambda deadline)",
                        limit.as_secs_f64(),
                        cfg.target_budget_seconds
                    )),
                    Ok(Err(e)) => Err(format!("{target}: {e}")),
                    Ok(Ok(recs)) => {
                        let why: Vec<String> = recs.iter().filter_map(|r| r.failed.clone()).collect();
                        report.records.extend(recs);
                        if why.is_empty() {
                            Ok(())
                        } else {
                            Err(why.join("; "))
                        }
                    }
                }
            }
        };
        let Err(why) = outcome else {
            continue;
        };
        tracing::warn!(message_id = %message_id, target = %target, receives, error = %why, "work item failed: SQS will deliver it again");
        let mut rec = RecordReport {
            event_id: tick
                .as_ref()
                .map(|t| t.event_id.clone())
                .unwrap_or_else(|| message_id.clone()),
            kind: "work-item".into(),
            summary: format!("failed (receive {receives}): {why}"),
            failed: Some(why.clone()),
            ..Default::default()
        };
        if receives >= cfg.max_receive_count {
            let alert = dlq_alert(ctx, tick.as_ref(), &target, receives, &message_id, &why);
            match ctx.publish(&alert).await {
                Ok(()) => rec.alerts.push(alert),
                Err(e) => {
                    tracing::error!(error = %e, target = %target, "the dead-letter alert could not be published");
                    rec.notes
                        .push(format!("the dead-letter alert could not be published: {e}"));
                }
            }
        }
        report.records.push(rec);
        if message_id.is_empty() {
            // Nothing to name: the whole batch must come back rather than lose this one.
            return Err(NbaopsError::InvalidEvent(format!(
                "an SQS message without messageId failed: {why}"
            )));
        }
        failures.push(BatchItemFailure {
            item_identifier: message_id,
        });
    }
    report.batch_item_failures = Some(failures);
    Ok(report)
}

fn dlq_alert(
    ctx: &Ctx<'_>,
    tick: Option<&ScheduledTick>,
    target: &str,
    receives: u32,
    message_id: &str,
    why: &str,
) -> crate::alerts::Alert {
    let param = |k: &str| tick.and_then(|t| t.param(k));
    ctx.alert(
        Severity::P2,
        target,
        format!("work-dlq#{}#{target}", ctx.function),
        format!("target {target} failed {receives} times, moved to the DLQ"),
    )
    .with_details(json!({
        "task": param("task"), "target": target, "account": param("account"),
        "region": param("region"), "dispatched_at": param("dispatched_at"),
        "message_id": message_id, "receives": receives, "error": why,
    }))
    .with_action(
        "failed this work item on its last receive: SQS moves it to the queue's dead-letter queue; the next dispatch enqueues the target again",
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::fakes::{leak, test_deps, FakeWorkQueue, Shared};
    use crate::runtime::{dispatch, Deps, RecordReport};
    use chrono::TimeZone;

    /// A function with 23 targets of `check`; target `bad` fails, `slow` sleeps past any budget,
    /// `err` returns an error, `sick` reports its target failed.
    struct Fleet;

    impl Function for Fleet {
        const NAME: &'static str = "fleet-test";
        const TAKES: &'static str = "check work items";
        type Reply = InvocationReport;
        async fn init(_: &Deps, _: &crate::adapters::AwsClients) -> Result<Self> {
            Ok(Fleet)
        }
        async fn on(&self, inbound: Inbound, ctx: &Ctx<'_>) -> Result<RecordReport> {
            let Inbound::Schedule(t) = &inbound else {
                return Ok(ctx.not_mine(&inbound));
            };
            if t.task().as_deref() != Some("check") {
                return Ok(ctx.not_mine(&inbound));
            }
            let target = t.param("target").unwrap_or_default();
            let mut w = ctx.work(&t.event_id, "schedule", format!("checked {target}"));
            match target.as_str() {
                "slow" => tokio::time::sleep(Duration::from_secs(30)).await,
                "err" => return Err(NbaopsError::dependency("postgres", "refused")),
                "sick" => w.rec.failed = Some("sick: unreachable".into()),
                _ => {}
            }
            w.done().await
        }
        async fn targets(&self, work: &str, _: &Ctx<'_>) -> Result<Option<Vec<Target>>> {
            Ok((work == "check")
                .then(|| (0..23).map(|i| Target::local(format!("db{i}"))).collect()))
        }
    }

    struct World {
        deps: &'static Deps,
        notifier: &'static crate::fakes::FakeNotifier,
        queue: &'static FakeWorkQueue,
    }

    fn world() -> World {
        let vars = [
            (
                "NBAOPS_ALERTS_TOPIC_ARN",
                "arn:aws:sns:us-east-1:123456789012:nbaops-dev-alerts",
            ),
            (
                "NBAOPS_FANOUT__QUEUE_URL",
                "https://sqs.us-east-1.amazonaws.com/123456789012/nbaops-dev-fleet-test-work",
            ),
            ("NBAOPS_FANOUT__TARGET_BUDGET_SECONDS", "1"),
        ];
        let t = test_deps("fleet-test", &vars).unwrap();
        let notifier = leak(crate::fakes::FakeNotifier::default());
        let queue = leak(FakeWorkQueue::default());
        let deps = leak(Deps {
            cfg: t.deps.cfg.clone(),
            notifier: Box::new(Shared(notifier)),
            params: None,
            ledger: Box::new(Shared(leak(crate::fakes::FakeLedger::default()))),
            switches: crate::guard::Switches::default(),
            work_queue: Some(Box::new(Shared(queue))),
        });
        World {
            deps,
            notifier,
            queue,
        }
    }

    fn inv() -> Invocation {
        Invocation::at("req", Utc.with_ymd_and_hms(2026, 6, 17, 14, 0, 0).unwrap())
    }

    fn batch(items: &[(&str, &str, u32)]) -> Value {
        let records: Vec<Value> = items
            .iter()
            .map(|(id, body, receives)| {
                json!({"messageId": id, "eventSource": "aws:sqs", "body": body,
                       "attributes": {"ApproximateReceiveCount": receives.to_string()}})
            })
            .collect();
        json!({ "Records": records })
    }

    fn item(target: &str) -> String {
        work_item("check", target, "123456789012", "us-east-1", inv().now).to_string()
    }

    #[tokio::test]
    async fn a_dispatch_sends_one_work_item_per_target_ten_per_call() {
        let w = world();
        let inv = inv();
        let ctx = Ctx::of::<Fleet>(w.deps, &inv);
        let r = dispatch(
            &Fleet,
            json!({"nbaops": {"task": "dispatch", "work": "check"}}),
            &ctx,
        )
        .await
        .unwrap();
        assert!(
            r.records[0]
                .summary
                .starts_with("dispatched 23 work item(s) of check to https://sqs."),
            "{r:?}"
        );
        let mut sizes = w.queue.batch_sizes();
        sizes.sort_unstable();
        assert_eq!(sizes, vec![3, 10, 10]);
        let bodies: Vec<Value> = w
            .queue
            .bodies()
            .iter()
            .map(|b| serde_json::from_str(b).unwrap())
            .collect();
        let mut names: Vec<String> = bodies
            .iter()
            .map(|b| b["nbaops"]["target"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 23);
        assert_eq!(bodies[0]["nbaops"]["task"], "check");
        assert_eq!(bodies[0]["nbaops"]["account"], "123456789012");
        assert_eq!(bodies[0]["nbaops"]["dispatched_at"], "2026-06-17T14:00:00Z");
        // Each body is understood as the function's own tick, with its target.
        let b = batch(&[("m", &w.queue.bodies()[0], 1)]);
        let Inbound::Schedule(t) = &classify(&b)[0] else {
            panic!()
        };
        assert_eq!(t.task().as_deref(), Some("check"));
        // Work the function does not fan out, or no work named: not for me, nothing sent.
        for tick in [
            json!({"nbaops": {"task": "dispatch", "work": "other"}}),
            json!({"nbaops": {"task": "dispatch"}}),
        ] {
            let r = dispatch(&Fleet, tick, &ctx).await.unwrap();
            assert!(r.records[0].not_for_me.is_some(), "{r:?}");
        }
        assert_eq!(w.queue.bodies().len(), 23);
        // A refused entry fails the tick (so it is retried), naming it.
        w.queue.refuse.lock().unwrap().push("t4".into());
        let e = dispatch(
            &Fleet,
            json!({"nbaops": {"task": "dispatch", "work": "check"}}),
            &ctx,
        )
        .await
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("1 of 23 work item(s) of check refused"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn only_failed_messages_are_reported_and_the_last_receive_raises_one_p2() {
        let w = world();
        let inv = inv();
        let ctx = Ctx::of::<Fleet>(w.deps, &inv);
        let (ok, sick, err, slow) = (item("db1"), item("sick"), item("err"), item("slow"));
        let payload = batch(&[
            ("m-ok", &ok, 1),
            ("m-sick", &sick, 1),
            ("m-garbage", "{\"hello\": 1}", 1),
            ("m-err", &err, 3),
            ("m-slow", &slow, 2),
            ("m-ok2", &item("db2"), 1),
        ]);
        let started = std::time::Instant::now();
        let r = dispatch(&Fleet, payload, &ctx).await.unwrap();
        // The slow one was cut at its 1 s budget; the batch went on.
        assert!(started.elapsed() < Duration::from_secs(5));
        let failed: Vec<&str> = r
            .batch_item_failures
            .as_ref()
            .unwrap()
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        assert_eq!(failed, vec!["m-sick", "m-err", "m-slow"], "{r:#?}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json["batchItemFailures"][0],
            json!({"itemIdentifier": "m-sick"})
        );
        // The ones that worked are in the report; the garbage is not for me, not failed.
        let summaries: Vec<&str> = r.records.iter().map(|x| x.summary.as_str()).collect();
        assert!(
            summaries.contains(&"checked db1") && summaries.contains(&"checked db2"),
            "{summaries:?}"
        );
        assert!(r
            .records
            .iter()
            .any(|x| x.event_id == "m-garbage" && x.not_for_me.is_some()));
        // Receive 3 of maxReceiveCount 3: one P2 for `err`, none for the others.
        let published = w.notifier.published();
        let dlq: Vec<Value> = published
            .iter()
            .filter_map(|p| serde_json::from_str::<Value>(&p.message).ok())
            .filter(|a| {
                a["dedup_key"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("work-dlq#")
            })
            .collect();
        assert_eq!(dlq.len(), 1, "{published:?}");
        assert_eq!(dlq[0]["dedup_key"], format!("{DLQ_KIND}#fleet-test#err"));
        assert_eq!(dlq[0]["severity"], "P2");
        assert_eq!(
            dlq[0]["summary"],
            "target err failed 3 times, moved to the DLQ"
        );
        // A batch where everything worked: an empty list (a success for Lambda).
        let r = dispatch(&Fleet, batch(&[("a", &ok, 1)]), &ctx)
            .await
            .unwrap();
        assert_eq!(
            serde_json::to_value(&r).unwrap()["batchItemFailures"],
            json!([])
        );
        // Not an SQS batch: no batchItemFailures key at all.
        let r = dispatch(&Fleet, serde_json::from_str::<Value>(&ok).unwrap(), &ctx)
            .await
            .unwrap();
        assert!(serde_json::to_value(&r)
            .unwrap()
            .get("batchItemFailures")
            .is_none());
    }

    #[tokio::test]
    async fn a_dispatch_on_another_clock_hands_it_to_each_item_and_no_fleet_is_the_hub_alone() {
        let w = world();
        let inv = inv();
        let ctx = Ctx::of::<Fleet>(w.deps, &inv);
        dispatch(
            &Fleet,
            json!({"nbaops": {"task": "dispatch", "work": "check", "at": "2026-12-02T18:30:00Z"}}),
            &ctx,
        )
        .await
        .unwrap();
        let b: Value = serde_json::from_str(&w.queue.bodies()[0]).unwrap();
        let Inbound::Schedule(t) = &classify(&b)[0] else {
            panic!()
        };
        assert_eq!(t.at.to_rfc3339(), "2026-12-02T18:30:00+00:00");
        let hub = Origin::new("123456789012", "us-east-1");
        assert_eq!(origins(&ctx), vec![hub.clone()]);
        assert_eq!(Target::in_origin("x", &hub, &hub), Target::local("x"));
        let b = Origin::new("222222222222", "us-west-2");
        assert_eq!(
            Target::in_origin("x", &b, &hub).account.as_deref(),
            Some("222222222222")
        );
    }

    #[test]
    fn the_hub_is_read_from_the_queue_url_or_the_topic() {
        let (a, _) = hub_origin(
            "https://sqs.us-east-1.amazonaws.com/210987654321/q",
            "arn:aws:sns:us-east-1:123456789012:t",
        );
        assert_eq!(a, "210987654321");
        let (a, _) = hub_origin("", "arn:aws:sns:us-east-1:123456789012:t");
        assert_eq!(a, "123456789012");
        assert_eq!(
            receive_count(&json!({"attributes": {"ApproximateReceiveCount": "4"}})),
            4
        );
        assert_eq!(receive_count(&json!({})), 1);
    }
}

//! Sustained alarms keep stepping (issue #17): EC2-step-scaling-like re-evaluation of an alarm
//! that stays in ALARM after a scale-out.
//!
//! An alarm's ALARM transition is an *episode* (alarm name + the transition's state timestamp, the
//! same whichever delivery brought it). When a scale-out of a group acted on it, a one-time
//! EventBridge Scheduler schedule is created for the end of the cooldown (at least one minute
//! on), whose input is a `scale-recheck` task:
//!
//! `{"nbaops":{"task":"scale-recheck","alarm":"<name>","target":"asg:<group>","episode":"<id>","n":1,"limit":2,"id":"scale-recheck/<name>/<episode>/1"}}`
//!
//! The re-check reads the alarm (`CloudWatch::describe_alarm`): still ALARM (and still about that
//! group) -> one more step through the same guard, bounds and cooldown key, and the next re-check;
//! OK, INSUFFICIENT_DATA or no such alarm -> nothing, the episode ends. At the ceiling and still
//! ALARM: the "capacity exhausted" P2 once per episode (a ledger claim), not at every re-check.
//!
//! Bounded: `limit` is `ceiling - desired before the first step` (each step adds at least one, so
//! the last re-check is the one that finds the ceiling); a re-check with `n > limit`, or a limit
//! above the group's ceiling, is refused. Idempotent: the re-check's event id is derived from
//! alarm + episode + n, so a duplicate delivery meets the guard's idempotency claim. Cancelled: the
//! pending schedule's name is kept in the ledger under the alarm, and the alarm's next OK state
//! change deletes it.
//!
//! Groups only: an RDS class change (hours, often at the next maintenance window) or a Memcached
//! node is not re-stepped; their next step still needs a new ALARM transition.

use chrono::{DateTime, Duration, SubsecRound, Utc};
use serde_json::{json, Map, Value};

use nbaops_shared::alerts::Severity;
use nbaops_shared::config::ScaleConfig;
use nbaops_shared::events::{AlarmChange, ScheduledTick};
use nbaops_shared::guard::{AuditRecord, Explanation, GuardStep, Observation, Outcome};
use nbaops_shared::ports::{MetricAlarm, OneTimeSchedule};
use nbaops_shared::runtime::{Ctx, RecordReport, Work};
use nbaops_shared::Result;

use crate::handler::{ScaleOnAlarm, Why};
use crate::plan::Direction;

/// The Scheduler input's task: `{"nbaops": {"task": "scale-recheck", ...}}`.
pub const RECHECK_TASK: &str = "scale-recheck";
/// The earliest a re-check is scheduled after the step (a zero cooldown still waits this long).
pub const MIN_DELAY_SECONDS: i64 = 60;
/// How long the ledger keeps the pending schedule's name and the episode's P2 claim.
const KEEP_SECONDS: i64 = 7 * 86_400;

/// One ALARM transition of one alarm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Episode {
    pub alarm: String,
    /// The transition's state timestamp, `20261125T200102.123Z`.
    pub id: String,
}

impl Episode {
    pub fn of(alarm: &AlarmChange) -> Episode {
        Episode {
            alarm: alarm.alarm_name.clone(),
            id: alarm.changed_at.format("%Y%m%dT%H%M%S%.3fZ").to_string(),
        }
    }
    fn pk(&self) -> String {
        pending_pk(&self.alarm)
    }
}

fn pending_pk(alarm: &str) -> String {
    format!("recheck#{alarm}")
}

/// What a group scale-out came to, for the follow-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupStep {
    /// Stepped out from `from`; `cap` is the ceiling that applied.
    Acted { from: i32, cap: i32 },
    /// Not now, but not over: a scaling activity in progress, or the cooldown.
    Deferred,
    /// Nothing to follow up: at the ceiling, protected, dry-run, a duplicate, an error.
    Nothing,
}

impl GroupStep {
    pub fn of(audit: &AuditRecord, from: i32, cap: i32) -> GroupStep {
        match (audit.outcome, audit.stopped_by) {
            (Outcome::Acted, _) => GroupStep::Acted { from, cap },
            (Outcome::Skipped, Some(GuardStep::Cooldown)) => GroupStep::Deferred,
            _ => GroupStep::Nothing,
        }
    }
}

/// One re-check of one episode, as its Scheduler input carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recheck {
    pub episode: Episode,
    pub group: String,
    /// 1 for the first re-check.
    pub n: u64,
    /// At most this many re-checks in the episode.
    pub limit: u64,
}

/// `account` and `region`: the fleet member the re-check is about (issue #20), read by the
/// runtime's routing (`Inbound::origin`), absent for the hub's own groups.
const KEYS: &[&str] = &[
    "task", "alarm", "target", "episode", "n", "limit", "id", "account", "region",
];

impl Recheck {
    /// The first re-check after a step from `from` under the ceiling `cap`; `None` when no step
    /// can follow (the step reached nothing above `from`).
    pub fn first(episode: &Episode, group: &str, from: i32, cap: i32) -> Option<Recheck> {
        let limit = u64::try_from(cap.saturating_sub(from)).ok()?;
        (limit >= 1).then(|| Recheck {
            episode: episode.clone(),
            group: group.to_string(),
            n: 1,
            limit,
        })
    }

    /// The re-check after this one, within the limit.
    pub fn next(&self) -> Option<Recheck> {
        (self.n < self.limit).then(|| Recheck {
            n: self.n + 1,
            ..self.clone()
        })
    }

    /// The idempotency key: a duplicate delivery of this re-check is the same event.
    pub fn event_id(&self) -> String {
        format!(
            "{RECHECK_TASK}/{}/{}/{}",
            self.episode.alarm, self.episode.id, self.n
        )
    }

    /// The schedule's name: one per (alarm, episode, n), so scheduling it twice creates it once.
    pub fn schedule_name(&self) -> String {
        OneTimeSchedule::name_for(&format!(
            "recheck-{}-{}-{}",
            self.episode.alarm, self.episode.id, self.n
        ))
    }

    pub fn payload(&self) -> Value {
        json!({"nbaops": {
            "task": RECHECK_TASK,
            "alarm": self.episode.alarm,
            "target": format!("asg:{}", self.group),
            "episode": self.episode.id,
            "n": self.n,
            "limit": self.limit,
            "id": self.event_id(),
        }})
    }

    /// Reads a re-check input strictly: every field present and well-formed, no other field, a
    /// managed group, `1 <= n <= limit <= the group's ceiling`, and an `id` (when given) that is
    /// the one derived from the rest. Anything else is refused with the reason.
    pub fn parse(detail: &Value, cfg: &ScaleConfig) -> std::result::Result<Recheck, String> {
        let block = detail
            .get("nbaops")
            .and_then(Value::as_object)
            .ok_or("scale-recheck input without an 'nbaops' object")?;
        if let Some(k) = block.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(format!(
                "scale-recheck input with an unknown field '{k}' (known: {})",
                KEYS.join(", ")
            ));
        }
        let text = |b: &Map<String, Value>, k: &str| -> std::result::Result<String, String> {
            match b.get(k) {
                Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 255 => Ok(s.clone()),
                other => Err(format!(
                    "scale-recheck '{k}' must be a non-empty string, got {}",
                    other
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| "nothing".into())
                )),
            }
        };
        let count = |b: &Map<String, Value>, k: &str| -> std::result::Result<u64, String> {
            match b.get(k).and_then(Value::as_u64) {
                Some(n) if n >= 1 => Ok(n),
                _ => Err(format!(
                    "scale-recheck '{k}' must be a whole number >= 1, got {}",
                    b.get(k)
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| "nothing".into())
                )),
            }
        };
        if text(block, "task")? != RECHECK_TASK {
            return Err(format!("not a {RECHECK_TASK} input"));
        }
        let alarm = text(block, "alarm")?;
        let target = text(block, "target")?;
        let Some(group) = target.strip_prefix("asg:") else {
            return Err(format!(
                "scale-recheck target '{target}' is not an Auto Scaling group (asg:<name>): only groups are re-checked"
            ));
        };
        if !cfg.groups.iter().any(|g| g == group) {
            return Err(format!(
                "asg:{group} is not managed by nbaops here (not in scale.groups)"
            ));
        }
        let episode = text(block, "episode")?;
        if episode.len() > 64
            || !episode
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
        {
            return Err(format!(
                "scale-recheck episode '{episode}' is not an episode id"
            ));
        }
        let n = count(block, "n")?;
        let limit = count(block, "limit")?;
        let ceiling = cfg.plan_for(group).ceiling;
        if limit > u64::try_from(ceiling).unwrap_or(0) {
            return Err(format!(
                "scale-recheck limit {limit} is above asg:{group}'s ceiling {ceiling}: refused"
            ));
        }
        if n > limit {
            return Err(format!(
                "scale-recheck {n} is beyond the episode's limit of {limit} re-checks: refused"
            ));
        }
        let r = Recheck {
            episode: Episode { alarm, id: episode },
            group: group.to_string(),
            n,
            limit,
        };
        if let Some(id) = block.get("id") {
            if id.as_str() != Some(r.event_id().as_str()) {
                return Err(format!(
                    "scale-recheck id {id} is not the one its fields give ({})",
                    r.event_id()
                ));
            }
        }
        Ok(r)
    }
}

/// What the alarm, as CloudWatch has it now, says about the re-check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Still ALARM, and still about that group: one more step.
    StillAlarm,
    /// OK, INSUFFICIENT_DATA or gone: the episode is over.
    Settled(String),
    /// The alarm is no longer about that group (or no longer a scale-out): not ours to step.
    Mismatch(String),
}

/// Pure: the alarm's current state and mapping against the re-check.
pub fn verdict(alarm: Option<&MetricAlarm>, r: &Recheck, cfg: &ScaleConfig) -> Verdict {
    let name = &r.episode.alarm;
    let Some(a) = alarm else {
        return Verdict::Settled(format!(
            "alarm '{name}' no longer exists: no step, the episode ends"
        ));
    };
    if !a.in_alarm() {
        return Verdict::Settled(format!(
            "alarm '{name}' is {} now: no step, the episode ends",
            a.state
        ));
    }
    let route = cfg
        .alarm_map
        .get(name)
        .or_else(|| a.arn.as_ref().and_then(|arn| cfg.alarm_map.get(arn)));
    let wanted = format!("asg:{}", r.group);
    match route {
        Some(route) if route.target != wanted || route.on_alarm != "out" => {
            Verdict::Mismatch(format!(
                "alarm '{name}' is mapped to {} on_alarm '{}' now, not a scale-out of {wanted}",
                route.target, route.on_alarm
            ))
        }
        Some(_) => Verdict::StillAlarm,
        None => {
            let dim = a.dimensions.get("AutoScalingGroupName");
            let metric = a.metric.as_deref().unwrap_or("");
            if dim != Some(&r.group) || !cfg.signal_metrics.iter().any(|m| m == metric) {
                Verdict::Mismatch(format!(
                    "alarm '{name}' now watches {metric:?} of {:?}, not a scaling signal of {wanted}",
                    dim
                ))
            } else {
                Verdict::StillAlarm
            }
        }
    }
}

/// When a re-check scheduled `now` runs: at the end of the cooldown, at least a minute on, in
/// whole seconds rounded up (so the guard's cooldown has run out when it comes).
pub fn recheck_at(now: DateTime<Utc>, cooldown_seconds: i64) -> DateTime<Utc> {
    let at = now + Duration::seconds(cooldown_seconds.max(MIN_DELAY_SECONDS));
    let whole = at.trunc_subsecs(0);
    if whole < at {
        whole + Duration::seconds(1)
    } else {
        whole
    }
}

/// `true` when this is the first "capacity exhausted" of the episode (or there is no episode);
/// `false`, noted, when the episode already had its P2.
pub(crate) async fn first_exhausted(
    episode: Option<&Episode>,
    resource: &str,
    w: &mut Work<'_>,
) -> Result<bool> {
    let Some(ep) = episode else {
        return Ok(true);
    };
    let ctx = w.ctx;
    let first = ctx
        .deps
        .ledger
        .put_if_absent(
            &ep.pk(),
            &format!("exhausted#{}", ep.id),
            &json!({"at": ctx.now(), "resource": resource}),
            ctx.now().timestamp() + KEEP_SECONDS,
        )
        .await?;
    if !first {
        w.note(format!(
            "{resource}: at its ceiling and alarm '{}' still fires; capacity exhausted already alerted for this episode ({})",
            ep.alarm, ep.id
        ));
    }
    Ok(first)
}

impl ScaleOnAlarm {
    /// After a group scale-out on an ALARM transition: the first re-check when it acted.
    pub(crate) async fn follow_up(
        &self,
        group: &str,
        step: GroupStep,
        why: &Why<'_>,
        w: &mut Work<'_>,
    ) -> Result<()> {
        let (Some(episode), GroupStep::Acted { from, cap }) = (why.episode, step) else {
            return Ok(());
        };
        match Recheck::first(episode, group, from, cap) {
            Some(r) => self.schedule(&r, w).await,
            None => Ok(()),
        }
    }

    /// Creates the one-time schedule of `r` and keeps its name in the ledger under the alarm.
    /// A failure to schedule is noted and logged, not an error: the step it follows is done,
    /// and a retry of the whole event would not schedule it either (idempotency stops the step).
    async fn schedule(&self, r: &Recheck, w: &mut Work<'_>) -> Result<()> {
        let ctx = w.ctx;
        let scale = &ctx.cfg().scale;
        let f = &scale.followup;
        if !f.enabled() {
            w.note("no follow-up: scale.followup not configured");
            return Ok(());
        }
        let at = recheck_at(ctx.now(), scale.asg_cooldown_seconds);
        if ctx.dry_run().await {
            w.note(format!(
                "dry-run: would schedule re-check {}/{} of alarm '{}' for {}",
                r.n,
                r.limit,
                r.episode.alarm,
                at.to_rfc3339()
            ));
            return Ok(());
        }
        let s = OneTimeSchedule {
            group: f.group.clone(),
            name: r.schedule_name(),
            at,
            target_arn: f.target_arn.clone(),
            role_arn: f.role_arn.clone(),
            input: with_origin(r.payload(), ctx.origin),
        };
        // The schedule and its name under the alarm, at once (a name kept for a schedule that
        // failed to be created only costs the cancel a delete that finds nothing).
        let pending =
            json!({"group": s.group, "name": s.name, "episode": r.episode.id, "n": r.n, "at": at});
        let pk = r.episode.pk();
        let (created, kept) = tokio::join!(
            self.scheduler.create_once(&s),
            ctx.deps.ledger.put(
                &pk,
                "pending",
                &pending,
                Some(at.timestamp() + KEEP_SECONDS),
            )
        );
        kept?;
        let created = match created {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(schedule = %s.name, error = %e, "re-check not scheduled");
                w.note(format!(
                    "re-check {}/{} of alarm '{}' NOT scheduled: {e}",
                    r.n, r.limit, r.episode.alarm
                ));
                // The step stands; what stops is the automation after it: people must know.
                let alert = ctx
                    .alert(
                        Severity::P3,
                        &format!("asg:{}", r.group),
                        format!("followup#{}", r.episode.alarm),
                        format!(
                            "re-check {}/{} of alarm '{}' could not be scheduled ({e}): while the alarm stays in ALARM nbaops will not step {} again",
                            r.n, r.limit, r.episode.alarm, r.group
                        ),
                    )
                    .with_details(json!({"schedule": s.name, "group": s.group, "at": at}));
                w.raise(alert).await?;
                return Ok(());
            }
        };
        w.note(format!(
            "re-check {}/{} of alarm '{}' {} for {} ({}/{})",
            r.n,
            r.limit,
            r.episode.alarm,
            if created {
                "scheduled"
            } else {
                "already scheduled"
            },
            at.to_rfc3339(),
            s.group,
            s.name
        ));
        Ok(())
    }

    /// The alarm went back to OK: its pending re-check, if any, is deleted.
    pub(crate) async fn cancel_recheck(&self, alarm: &str, w: &mut Work<'_>) -> Result<()> {
        let ledger = &w.ctx.deps.ledger;
        let pk = pending_pk(alarm);
        let Some(p) = ledger.get(&pk, "pending").await? else {
            return Ok(());
        };
        let (Some(group), Some(name)) = (p["group"].as_str(), p["name"].as_str()) else {
            w.note(format!(
                "pending re-check record of alarm '{alarm}' not understood, left alone: {p}"
            ));
            return Ok(());
        };
        if w.ctx.dry_run().await {
            w.note(format!(
                "alarm '{alarm}' is OK: dry-run: would delete pending re-check {group}/{name}"
            ));
            return Ok(());
        }
        let gone = self.scheduler.delete(group, name).await?;
        ledger.delete(&pk, "pending").await?;
        w.note(if gone {
            format!("alarm '{alarm}' is OK: pending re-check {group}/{name} deleted")
        } else {
            format!("alarm '{alarm}' is OK: re-check {group}/{name} had already run or gone")
        });
        Ok(())
    }

    /// A `scale-recheck` schedule came.
    pub(crate) async fn on_recheck(
        &self,
        tick: &ScheduledTick,
        ctx: &Ctx<'_>,
    ) -> Result<RecordReport> {
        let scale = &ctx.cfg().scale;
        let r = match Recheck::parse(&tick.detail, scale) {
            Ok(r) => r,
            Err(why) => return Ok(RecordReport::not_for_me(&tick.event_id, "schedule", why)),
        };
        let mut w = ctx.work(
            &r.event_id(),
            "schedule",
            format!(
                "re-check {}/{} of alarm '{}' (episode {}) on asg:{}",
                r.n, r.limit, r.episode.alarm, r.episode.id, r.group
            ),
        );
        // The alarm and the group read at once: one round trip less on the path that steps (a
        // settled alarm costs a group read it did not need).
        let (alarm, group) = tokio::join!(
            self.cw.describe_alarm(&r.episode.alarm),
            self.asg.describe_group(&r.group)
        );
        let (alarm, group) = (alarm?, group?);
        match verdict(alarm.as_ref(), &r, scale) {
            Verdict::Settled(why) => {
                w.note(why);
                return w.done().await;
            }
            Verdict::Mismatch(why) => return Ok(w.not_for_me(why)),
            Verdict::StillAlarm => {}
        }
        let severity = scale
            .alarm_map
            .get(&r.episode.alarm)
            .and_then(|route| route.severity.as_deref())
            .and_then(|s| s.parse::<Severity>().ok())
            .unwrap_or(Severity::P3);
        let reason = format!(
            "alarm '{}' still in ALARM at re-check {}/{} of its episode {}",
            r.episode.alarm, r.n, r.limit, r.episode.id
        );
        let because = Explanation::new(
            "",
            "",
            "",
            format!(
                "SPEC 2.5 capacity: alarm {} still ALARM at re-check",
                r.episode.alarm
            ),
        )
        .observe(Observation::against(
            "re-check",
            r.n as f64,
            "",
            "<=",
            r.limit as f64,
        ))
        .key("scale.followup.group");
        let why = Why {
            reason: &reason,
            because: &because,
            severity,
            episode: Some(&r.episode),
        };
        let step = self
            .scale_described(&r.group, group, Direction::Out, &why, &mut w)
            .await?;
        match (step, r.next()) {
            (GroupStep::Acted { .. } | GroupStep::Deferred, Some(next)) => {
                self.schedule(&next, &mut w).await?
            }
            (GroupStep::Acted { .. } | GroupStep::Deferred, None) => w.note(format!(
                "last re-check of the episode ({} of {}): no further one",
                r.n, r.limit
            )),
            (GroupStep::Nothing, _) => {}
        }
        w.done().await
    }
}

/// A follow-up's input carries the fleet member its record came from (issue #20), so that the
/// runtime routes the re-check to that member's clients and never to the hub's group of the same
/// name.
fn with_origin(mut input: Value, origin: Option<&nbaops_shared::fleet::Origin>) -> Value {
    if let (Some(o), Some(block)) = (
        origin,
        input.get_mut("nbaops").and_then(Value::as_object_mut),
    ) {
        block.insert("account".into(), json!(o.account));
        block.insert("region".into(), json!(o.region));
    }
    input
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::handler::tests::{handle, inv, wednesday, World, WEB_ALARM, WEB_OK};
    use chrono::TimeZone;
    use nbaops_shared::guard::GuardStep;
    use nbaops_shared::ports::Scheduler;

    const TARGET: &str =
        "arn:aws:lambda:us-east-1:123456789012:function:nbaops-dev-scale-on-alarm:live";
    const ROLE: &str = "arn:aws:iam::123456789012:role/nbaops-dev-scale-followups";

    fn followups() -> Vec<(&'static str, &'static str)> {
        vec![
            (
                "NBAOPS_SCALE__FOLLOWUP__GROUP",
                "nbaops-dev-scale-followups",
            ),
            ("NBAOPS_SCALE__FOLLOWUP__TARGET_ARN", TARGET),
            ("NBAOPS_SCALE__FOLLOWUP__ROLE_ARN", ROLE),
        ]
    }

    /// The handler's test world with the web CPU alarm in ALARM in its CloudWatch.
    fn world(extra: &[(&str, &str)], web_desired: i32, protect: bool) -> World {
        let w = crate::handler::tests::world(extra, web_desired, protect);
        lock_set(&w, alarm("ALARM", "nbaops-dev-web"));
        w
    }

    fn cfg() -> ScaleConfig {
        world(&[], 2, false).deps.cfg.scale.clone()
    }

    fn sample() -> Recheck {
        Recheck {
            episode: Episode {
                alarm: "nbaops-dev-web-cpu-high".into(),
                id: "20261125T200102.123Z".into(),
            },
            group: "nbaops-dev-web".into(),
            n: 1,
            limit: 2,
        }
    }

    fn alarm(state: &str, group: &str) -> MetricAlarm {
        MetricAlarm {
            name: "nbaops-dev-web-cpu-high".into(),
            arn: None,
            state: state.into(),
            state_updated: None,
            namespace: Some("AWS/EC2".into()),
            metric: Some("CPUUtilization".into()),
            dimensions: [("AutoScalingGroupName".to_string(), group.to_string())].into(),
            threshold: Some(70.0),
            comparison: None,
        }
    }

    #[test]
    fn a_members_recheck_carries_its_origin_and_reads_back() {
        let cfg = cfg();
        let r = sample();
        let b = nbaops_shared::fleet::Origin::new("222222222222", "us-west-2");
        let input = with_origin(r.payload(), Some(&b));
        assert_eq!(Recheck::parse(&input, &cfg), Ok(r.clone()));
        let tick = nbaops_shared::events::classify(&input);
        assert_eq!(tick[0].origin(), Some(b));
        // The hub's own: no origin in the input, as before.
        assert_eq!(with_origin(r.payload(), None), r.payload());
    }

    #[test]
    fn the_payload_reads_back_and_only_it() {
        let cfg = cfg();
        let r = sample();
        assert_eq!(Recheck::parse(&r.payload(), &cfg), Ok(r.clone()));
        assert_eq!(
            r.event_id(),
            "scale-recheck/nbaops-dev-web-cpu-high/20261125T200102.123Z/1"
        );
        let bad = |edit: &dyn Fn(&mut Value), needle: &str| {
            let mut p = r.payload();
            edit(&mut p["nbaops"]);
            let err = Recheck::parse(&p, &cfg).expect_err(needle);
            assert!(err.contains(needle), "{needle}: {err}");
        };
        bad(&|b| b["extra"] = json!(1), "unknown field 'extra'");
        bad(
            &|b| {
                b.as_object_mut().unwrap().remove("alarm");
            },
            "'alarm' must be a non-empty string",
        );
        bad(&|b| b["alarm"] = json!(""), "'alarm' must be");
        bad(&|b| b["n"] = json!("1"), "'n' must be a whole number");
        bad(&|b| b["n"] = json!(0), "'n' must be a whole number");
        bad(&|b| b["n"] = json!(1.5), "'n' must be a whole number");
        bad(
            &|b| b["limit"] = json!(-1),
            "'limit' must be a whole number",
        );
        bad(
            &|b| {
                b["n"] = json!(3);
                b["id"] = json!("scale-recheck/nbaops-dev-web-cpu-high/20261125T200102.123Z/3");
            },
            "beyond the episode's limit of 2",
        );
        bad(
            &|b| b["limit"] = json!(5),
            "above asg:nbaops-dev-web's ceiling 4",
        );
        bad(&|b| b["target"] = json!("rds:nbaops-dev-db"), "only groups");
        bad(&|b| b["target"] = json!("asg:someone-else"), "not managed");
        bad(&|b| b["episode"] = json!("a b"), "not an episode id");
        bad(
            &|b| b["id"] = json!("forged"),
            "not the one its fields give",
        );
        bad(
            &|b| b["task"] = json!("off-peak-scale-in"),
            "not a scale-recheck",
        );
        assert!(Recheck::parse(&json!({"nbaops": "x"}), &cfg).is_err());
        assert!(Recheck::parse(&json!({}), &cfg).is_err());
    }

    #[test]
    fn the_chain_is_bounded_by_the_room_under_the_ceiling() {
        let ep = sample().episode;
        let r = Recheck::first(&ep, "nbaops-dev-web", 2, 4).unwrap();
        assert_eq!((r.n, r.limit), (1, 2));
        let r2 = r.next().unwrap();
        assert_eq!((r2.n, r2.limit), (2, 2));
        assert_eq!(r2.next(), None);
        assert_eq!(Recheck::first(&ep, "nbaops-dev-web", 4, 4), None);
        // Distinct names per n, within what AWS accepts.
        assert_ne!(r.schedule_name(), r2.schedule_name());
        let long = Episode {
            alarm: "a".repeat(200),
            id: ep.id.clone(),
        };
        let n = Recheck::first(&long, "g", 1, 3).unwrap().schedule_name();
        assert!(n.len() <= 64, "{n}");
    }

    #[test]
    fn a_recheck_comes_at_the_end_of_the_cooldown_in_whole_seconds() {
        let now =
            Utc.with_ymd_and_hms(2026, 11, 25, 20, 1, 2).unwrap() + Duration::milliseconds(123);
        assert_eq!(
            recheck_at(now, 300),
            Utc.with_ymd_and_hms(2026, 11, 25, 20, 6, 3).unwrap()
        );
        assert_eq!(
            recheck_at(now, 0),
            Utc.with_ymd_and_hms(2026, 11, 25, 20, 2, 3).unwrap()
        );
        let whole = Utc.with_ymd_and_hms(2026, 11, 25, 20, 1, 2).unwrap();
        assert_eq!(recheck_at(whole, 300), whole + Duration::seconds(300));
    }

    #[test]
    fn the_verdict_reads_the_alarm_as_it_is_now() {
        let cfg = cfg();
        let r = sample();
        assert_eq!(
            verdict(Some(&alarm("ALARM", "nbaops-dev-web")), &r, &cfg),
            Verdict::StillAlarm
        );
        for state in ["OK", "INSUFFICIENT_DATA"] {
            assert!(matches!(
                verdict(Some(&alarm(state, "nbaops-dev-web")), &r, &cfg),
                Verdict::Settled(w) if w.contains(state)
            ));
        }
        assert!(matches!(
            verdict(None, &r, &cfg),
            Verdict::Settled(w) if w.contains("no longer exists")
        ));
        assert!(matches!(
            verdict(Some(&alarm("ALARM", "nbaops-dev-worker")), &r, &cfg),
            Verdict::Mismatch(_)
        ));
        let mut storage = alarm("ALARM", "nbaops-dev-web");
        storage.metric = Some("StatusCheckFailed".into());
        assert!(matches!(
            verdict(Some(&storage), &r, &cfg),
            Verdict::Mismatch(_)
        ));
        // A mapped alarm: the map decides.
        let mut mapped = cfg.clone();
        mapped.alarm_map.insert(
            r.episode.alarm.clone(),
            serde_json::from_value(json!({"target": "asg:nbaops-dev-web"})).unwrap(),
        );
        let mut math = alarm("ALARM", "x");
        math.dimensions.clear();
        assert_eq!(verdict(Some(&math), &r, &mapped), Verdict::StillAlarm);
        mapped.alarm_map.insert(
            r.episode.alarm.clone(),
            serde_json::from_value(json!({"target": "asg:nbaops-dev-web", "on_alarm": "in"}))
                .unwrap(),
        );
        assert!(matches!(
            verdict(Some(&math), &r, &mapped),
            Verdict::Mismatch(_)
        ));
    }

    async fn alarm_event(w: &World) -> RecordReport {
        let r = handle(
            serde_json::from_str(WEB_ALARM).unwrap(),
            inv(wednesday()),
            w,
        )
        .await
        .unwrap();
        r.records.into_iter().next().unwrap()
    }

    async fn deliver(w: &World, s: &OneTimeSchedule) -> RecordReport {
        let r = handle(s.input.clone(), inv(s.at), w).await.unwrap();
        r.records.into_iter().next().unwrap()
    }

    fn only_schedule(w: &World) -> OneTimeSchedule {
        let all = w.scheduler.all();
        assert_eq!(all.len(), 1, "{all:#?}");
        all[0].clone()
    }

    fn p2s(w: &World) -> usize {
        w.notifier
            .published()
            .iter()
            .filter(|p| {
                p.message
                    .contains("\"capacity-exhausted#asg:nbaops-dev-web\"")
            })
            .count()
    }

    #[tokio::test]
    async fn a_sustained_alarm_steps_to_the_ceiling_then_alerts_once() {
        let w = world(&followups(), 2, false);
        let rec = alarm_event(&w).await;
        assert_eq!(rec.actions[0].outcome, Outcome::Acted);
        let s1 = only_schedule(&w);
        assert_eq!(s1.group, "nbaops-dev-scale-followups");
        assert_eq!(
            (s1.target_arn.as_str(), s1.role_arn.as_str()),
            (TARGET, ROLE)
        );
        // The default cooldown, 300 s, from the invocation's time.
        assert_eq!(s1.at, recheck_at(wednesday(), 300));
        assert_eq!(s1.input["nbaops"]["n"], 1);
        assert_eq!(s1.input["nbaops"]["limit"], 2);
        assert_eq!(s1.input["nbaops"]["target"], "asg:nbaops-dev-web");

        // Re-check 1 at its time: still ALARM, 3 -> 4, with no new state change; re-check 2 next.
        let rec = deliver(&w, &s1).await;
        assert_eq!(rec.actions[0].outcome, Outcome::Acted, "{rec:#?}");
        assert_eq!(
            w.asg.mutations(),
            vec![
                "set_desired_capacity nbaops-dev-web 3",
                "set_desired_capacity nbaops-dev-web 4"
            ]
        );
        // Fired one-time schedules delete themselves (ActionAfterCompletion DELETE).
        w.scheduler.delete(&s1.group, &s1.name).await.unwrap();
        let s2 = only_schedule(&w);
        assert_eq!(s2.input["nbaops"]["n"], 2);
        assert_eq!(s2.at, recheck_at(s1.at, 300));

        // Re-check 2 at the ceiling: one P2, no further re-check; its duplicate raises no second.
        assert_eq!(p2s(&w), 0);
        w.scheduler.delete(&s2.group, &s2.name).await.unwrap();
        let rec = deliver(&w, &s2).await;
        assert_eq!(rec.alerts[0].severity, Severity::P2, "{rec:#?}");
        assert_eq!(p2s(&w), 1);
        assert!(w.scheduler.all().is_empty());
        let rec = deliver(&w, &s2).await;
        assert!(rec.alerts.is_empty());
        assert!(
            rec.notes.iter().any(|n| n.contains("already alerted")),
            "{:?}",
            rec.notes
        );
        assert_eq!(p2s(&w), 1);
        // Beyond the limit: refused, however it came.
        let mut s3 = s2.clone();
        s3.input["nbaops"]["n"] = json!(3);
        s3.input["nbaops"].as_object_mut().unwrap().remove("id");
        let rec = deliver(&w, &s3).await;
        assert!(rec.not_for_me.unwrap().contains("beyond"));
        assert_eq!(w.asg.mutations().len(), 2);
    }

    /// A duplicate delivery of a re-check (Scheduler delivers at least once) makes one step: its
    /// event id is derived from the episode and n, so the guard's idempotency claim stops it.
    #[tokio::test]
    async fn a_duplicate_recheck_makes_one_step() {
        let mut vars = followups();
        vars.push(("NBAOPS_SCALE__ASG__CEILING", "6"));
        let w = world(&vars, 2, false);
        alarm_event(&w).await;
        let s1 = only_schedule(&w);
        assert_eq!(s1.input["nbaops"]["limit"], 4);
        w.scheduler.delete(&s1.group, &s1.name).await.unwrap();
        let first = deliver(&w, &s1).await;
        assert_eq!(first.actions[0].outcome, Outcome::Acted);
        let again = deliver(&w, &s1).await;
        assert_eq!(again.event_id, first.event_id);
        assert_eq!(again.actions[0].stopped_by, Some(GuardStep::Idempotency));
        assert_eq!(
            w.asg.mutations(),
            vec![
                "set_desired_capacity nbaops-dev-web 3",
                "set_desired_capacity nbaops-dev-web 4"
            ]
        );
        // And the duplicate scheduled nothing more: the one re-check 2 of the first delivery.
        let s2 = only_schedule(&w);
        assert_eq!(s2.input["nbaops"]["n"], 2);
        assert_eq!(
            w.scheduler.mutations().len(),
            3,
            "{:?}",
            w.scheduler.mutations()
        );
    }

    #[tokio::test]
    async fn an_alarm_back_to_ok_stops_the_chain() {
        // OK before the re-check: no step.
        let w = world(&followups(), 2, false);
        alarm_event(&w).await;
        let s1 = only_schedule(&w);
        w.cw.set_state("nbaops-dev-web-cpu-high", "OK");
        let rec = deliver(&w, &s1).await;
        assert!(rec.actions.is_empty());
        assert!(
            rec.notes.iter().any(|n| n.contains("is OK now")),
            "{rec:#?}"
        );
        assert_eq!(w.asg.mutations().len(), 1);

        // The ALARM -> OK state change deletes the pending schedule.
        let w = world(&followups(), 2, false);
        alarm_event(&w).await;
        let s1 = only_schedule(&w);
        let ok = handle(
            serde_json::from_str(WEB_OK).unwrap(),
            inv(wednesday() + Duration::minutes(2)),
            &w,
        )
        .await
        .unwrap();
        assert!(w.scheduler.all().is_empty());
        assert_eq!(
            w.scheduler.mutations().last().unwrap(),
            &format!("delete {}/{}", s1.group, s1.name)
        );
        assert!(
            ok.records[0].notes.iter().any(|n| n.contains("deleted")),
            "{:?}",
            ok.records[0].notes
        );
        // A second OK finds nothing pending.
        let before = w.scheduler.mutations().len();
        handle(
            serde_json::from_str(WEB_OK).unwrap(),
            inv(wednesday() + Duration::minutes(3)),
            &w,
        )
        .await
        .unwrap();
        assert_eq!(w.scheduler.mutations().len(), before);
    }

    #[tokio::test]
    async fn without_followups_it_acts_and_says_so() {
        let w = world(&[], 2, false);
        let rec = alarm_event(&w).await;
        assert_eq!(rec.actions[0].outcome, Outcome::Acted);
        assert!(w.scheduler.all().is_empty());
        assert!(rec
            .notes
            .iter()
            .any(|n| n == "no follow-up: scale.followup not configured"));
    }

    #[tokio::test]
    async fn a_recheck_that_cannot_be_scheduled_is_a_p3_and_the_step_stands() {
        let w = world(&followups(), 2, false);
        *w.scheduler.refuse_creates.lock().unwrap() =
            Some("AccessDeniedException: not authorized to perform iam:PassRole".into());
        let rec = alarm_event(&w).await;
        assert_eq!(rec.actions[0].outcome, Outcome::Acted);
        assert!(w.scheduler.all().is_empty());
        let followups: Vec<_> = w
            .notifier
            .published()
            .into_iter()
            .filter(|p| p.message.contains("\"followup#"))
            .collect();
        assert_eq!(followups.len(), 1, "{followups:#?}");
        assert!(
            followups[0].message.contains("\"P3\""),
            "{}",
            followups[0].message
        );
        assert!(followups[0].message.contains("iam:PassRole"));
        assert!(
            rec.notes.iter().any(|n| n.contains("NOT scheduled")),
            "{:?}",
            rec.notes
        );
    }

    #[tokio::test]
    async fn a_step_that_did_not_act_schedules_nothing() {
        // Protected group, dry-run, at the ceiling: no re-check.
        for (extra, desired, protect) in [
            (vec![], 2, true),
            (
                vec![("NBAOPS_GUARD__DRY_RUN_FUNCTIONS", "scale-on-alarm")],
                2,
                false,
            ),
            (vec![], 4, false),
        ] {
            let mut vars = followups();
            vars.extend(extra);
            let w = world(&vars, desired, protect);
            alarm_event(&w).await;
            assert!(w.scheduler.all().is_empty());
        }
    }

    #[tokio::test]
    async fn a_recheck_of_an_alarm_now_about_another_group_is_refused() {
        let w = world(&followups(), 2, false);
        alarm_event(&w).await;
        let s1 = only_schedule(&w);
        lock_set(&w, alarm("ALARM", "nbaops-dev-worker"));
        let rec = deliver(&w, &s1).await;
        assert!(rec.not_for_me.is_some(), "{rec:#?}");
        assert_eq!(w.asg.mutations().len(), 1);
    }

    fn lock_set(w: &World, a: MetricAlarm) {
        w.cw.alarms.lock().unwrap().insert(a.name.clone(), a);
    }
}

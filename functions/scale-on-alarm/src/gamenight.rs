//! Game nights are scaled for before they start (docs/game-nights.md). Three scheduler tasks:
//! - `game-night-plan` (daily): reads the calendar (SSM `scale.gamenight.calendar_parameter`),
//!   reports malformed lines once per calendar content, a missing calendar once a week, and for
//!   today's and tomorrow's slates creates two one-time schedules (EventBridge Scheduler, the
//!   `scale.followup` group, target and role), named from the slate's date;
//! - `game-night-prescale` (tip-off - lead): raises every managed group to the load's level
//!   (`asg.prescale`, capped by the ceiling and MaxSize, never lowering a group);
//! - `game-night-return` (tip-off + hold): brings every managed group back to its baseline unless
//!   one of the group's alarms is in ALARM (then it is left where it is, and the record says why).
//!
//! The two group tasks answer one record per group: each group's change is its own guarded
//! action (the blast radius counts per record), so a planned pre-scale reaches every group.

use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use nbaops_shared::alerts::Severity;
use nbaops_shared::events::ScheduledTick;
use nbaops_shared::guard::{Bounds, Outcome, ProposedAction};
use nbaops_shared::ports::{CloudWatch, OneTimeSchedule, Scheduler};
use nbaops_shared::runtime::{Ctx, RecordReport, Work};
use nbaops_shared::Result;

use crate::calendar::{
    parse, plan_slate, prescale_target, return_target, Calendar, Planned, SlatePlan, PLAN_TASK,
    PRESCALE_TASK, RETURN_TASK,
};
use crate::handler::ScaleOnAlarm;

/// The ports only game nights use, built once at init.
pub struct GameNightPorts {
    pub scheduler: Box<dyn Scheduler>,
    pub cloudwatch: Box<dyn CloudWatch>,
}

/// Ledger partition of the once-only notices (missing calendar, malformed content).
const NOTICE_PK: &str = "gamenight-notice";
/// Ledger partition of the planned slates (sort key: the date): what was scheduled, so a re-plan
/// after a schedule ran (and deleted itself) schedules nothing again.
const PLANNED_PK: &str = "gamenight-plan";
const NOTICE_DAYS: i64 = 7;

/// True for the three game-night tasks.
pub fn takes(tick: &ScheduledTick) -> bool {
    matches!(
        tick.task().as_deref(),
        Some(PLAN_TASK | PRESCALE_TASK | RETURN_TASK)
    )
}

/// What a pre-scale or return input says, read strictly.
struct SlateInput {
    date: String,
    tipoff: DateTime<Utc>,
    load: String,
}

fn slate_input(tick: &ScheduledTick) -> std::result::Result<SlateInput, String> {
    let date = tick
        .param("date")
        .filter(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_ok())
        .ok_or("no valid nbaops.date (YYYY-MM-DD)")?;
    let tipoff = tick
        .param("tipoff")
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc))
        .ok_or("no valid nbaops.tipoff (RFC 3339)")?;
    let load = tick
        .param("load")
        .filter(|l| !l.is_empty())
        .ok_or("no nbaops.load")?;
    Ok(SlateInput { date, tipoff, load })
}

impl ScaleOnAlarm {
    /// The records of a game-night task: one for the plan, one per managed group otherwise.
    pub(crate) async fn game_night(
        &self,
        tick: &ScheduledTick,
        ctx: &Ctx<'_>,
    ) -> Result<Vec<RecordReport>> {
        let task = tick.task().unwrap_or_default();
        if task == PLAN_TASK {
            return Ok(vec![self.plan_game_nights(tick, ctx).await?]);
        }
        let prescale = task == PRESCALE_TASK;
        let input = match slate_input(tick) {
            Ok(i) => i,
            Err(why) => {
                let w = ctx.work(&tick.event_id, "schedule", format!("{task}: input"));
                return Ok(vec![
                    w.not_for_me(format!("{task} input not understood: {why}"))
                ]);
            }
        };
        let gn = &ctx.cfg().scale.gamenight;
        let Some(&level) = gn.levels.get(&input.load) else {
            let w = ctx.work(&tick.event_id, "schedule", format!("{task} {}", input.date));
            return Ok(vec![w.not_for_me(format!(
                "load '{}' is not in scale.gamenight.levels: not acting on it",
                input.load
            ))]);
        };
        let over = input.tipoff + Duration::minutes(gn.hold_minutes);
        if prescale && ctx.now() >= over {
            let mut w = ctx.work(&tick.event_id, "schedule", format!("{task} {}", input.date));
            w.note(format!(
                "the game night of {} ended at {}: no pre-scale now",
                input.date,
                over.to_rfc3339()
            ));
            return Ok(vec![w.rec]);
        }
        let groups = &ctx.cfg().scale.groups;
        let mut records = Vec::with_capacity(groups.len());
        if prescale {
            for name in groups {
                records.push(self.prescale_group(name, level, &input, tick, ctx).await?);
            }
        } else {
            let alarms = self.gamenight.cloudwatch.alarms_in_state("ALARM").await?;
            for name in groups {
                let target = format!("asg:{name}");
                let firing: Vec<String> = alarms
                    .iter()
                    .filter(|a| {
                        a.dimensions.get("AutoScalingGroupName") == Some(name)
                            || ctx
                                .cfg()
                                .scale
                                .alarm_map
                                .get(&a.name)
                                .or_else(|| {
                                    a.arn
                                        .as_ref()
                                        .and_then(|arn| ctx.cfg().scale.alarm_map.get(arn))
                                })
                                .is_some_and(|r| r.target == target)
                    })
                    .map(|a| a.name.clone())
                    .collect();
                records.push(self.return_group(name, &firing, &input, tick, ctx).await?);
            }
        }
        if records.is_empty() {
            let mut w = ctx.work(&tick.event_id, "schedule", format!("{task} {}", input.date));
            w.note("scale.groups lists no group: nothing to do");
            records.push(w.rec);
        }
        Ok(records)
    }

    async fn prescale_group(
        &self,
        name: &str,
        level: i32,
        input: &SlateInput,
        tick: &ScheduledTick,
        ctx: &Ctx<'_>,
    ) -> Result<RecordReport> {
        let resource = format!("asg:{name}");
        let mut w = ctx.work(
            &tick.event_id,
            "schedule",
            format!(
                "game-night pre-scale of {resource} for {} ({}={level})",
                input.date, input.load
            ),
        );
        let Some(group) = self.asg.describe_group(name).await? else {
            w.note(format!("{resource} does not exist: no action"));
            return Ok(w.rec);
        };
        let plan = ctx.cfg().scale.plan_for(name);
        let Some(to) = prescale_target(level, plan.ceiling, group.max_size, group.desired) else {
            w.note(format!(
                "{resource}: already at {} (level {level}, ceiling {}, MaxSize {}): not lowering it",
                group.desired, plan.ceiling, group.max_size
            ));
            return Ok(w.rec);
        };
        if to < level {
            w.note(format!(
                "{resource}: level {level} capped at {to} (ceiling {}, MaxSize {})",
                plan.ceiling, group.max_size
            ));
        }
        let reason = format!(
            "game night {} ({}), tip-off {}",
            input.date,
            input.load,
            input.tipoff.to_rfc3339()
        );
        let action = ProposedAction {
            action: "asg.prescale".into(),
            resource: resource.clone(),
            tags: group.tags.clone(),
            reason,
            severity: Severity::P4,
            disruptive: false,
            bounds: Some(Bounds {
                proposed: to as f64,
                min: group.desired as f64,
                max: plan.ceiling.min(group.max_size) as f64,
            }),
            cooldown_key: "asg.gamenight".into(),
            cooldown_seconds: 0,
            before: json!({"desired": group.desired, "min": group.min_size, "max": group.max_size}),
            after: json!({"desired": to}),
        };
        self.act_on_group(&mut w, &action, name, group.desired, to)
            .await?;
        w.done().await
    }

    async fn return_group(
        &self,
        name: &str,
        firing: &[String],
        input: &SlateInput,
        tick: &ScheduledTick,
        ctx: &Ctx<'_>,
    ) -> Result<RecordReport> {
        let resource = format!("asg:{name}");
        let mut w = ctx.work(
            &tick.event_id,
            "schedule",
            format!("game-night return of {resource} after {}", input.date),
        );
        let Some(group) = self.asg.describe_group(name).await? else {
            w.note(format!("{resource} does not exist: no action"));
            return Ok(w.rec);
        };
        let plan = ctx.cfg().scale.plan_for(name);
        let Some(to) = return_target(plan.baseline, group.min_size, group.desired) else {
            w.note(format!(
                "{resource}: at {} (baseline {}): nothing to bring back",
                group.desired, plan.baseline
            ));
            return Ok(w.rec);
        };
        if !firing.is_empty() {
            w.note(format!(
                "{resource}: left at {} (not back to {to}): its alarm(s) {} in ALARM",
                group.desired,
                firing.join(", ")
            ));
            return Ok(w.rec);
        }
        let action = ProposedAction {
            action: "asg.gamenight_return".into(),
            resource: resource.clone(),
            tags: group.tags.clone(),
            reason: format!(
                "game night {} over (tip-off {} + {} min), no alarm of the group in ALARM",
                input.date,
                input.tipoff.to_rfc3339(),
                ctx.cfg().scale.gamenight.hold_minutes
            ),
            severity: Severity::P4,
            disruptive: false,
            bounds: Some(Bounds {
                proposed: to as f64,
                min: plan.baseline.max(group.min_size) as f64,
                max: group.desired as f64,
            }),
            cooldown_key: "asg.gamenight".into(),
            cooldown_seconds: 0,
            before: json!({"desired": group.desired, "min": group.min_size, "max": group.max_size}),
            after: json!({"desired": to}),
        };
        self.act_on_group(&mut w, &action, name, group.desired, to)
            .await?;
        w.done().await
    }

    /// The change through the guard; a failed one is a P2 (the game night goes on without it).
    async fn act_on_group(
        &self,
        w: &mut Work<'_>,
        action: &ProposedAction,
        name: &str,
        from: i32,
        to: i32,
    ) -> Result<()> {
        let audit = w
            .act(action, || self.asg.set_desired_capacity(name, to))
            .await?;
        let words = audit.outcome_words();
        w.note(format!(
            "{}: desired {from} -> {to} ({}): {words}",
            action.resource, action.action
        ));
        if audit.outcome == Outcome::Failed {
            let alert = w
                .ctx
                .alert(
                    Severity::P2,
                    &action.resource,
                    format!("game-night#{}", action.resource),
                    format!("{name}: {} to {to} failed ({words})", action.action),
                )
                .with_details(json!({"reason": action.reason, "error": audit.error}))
                .with_action(format!("set_desired_capacity {name} {to}: {words}"));
            w.raise(alert).await?;
        }
        Ok(())
    }

    /// The off-peak scale-in while a planned game night holds the groups (between its pre-scale
    /// and its return): not run, the record says which game night; its return brings the groups
    /// back. `None` otherwise (the off-peak task runs as usual).
    pub(crate) async fn off_peak_held(
        &self,
        tick: &ScheduledTick,
        ctx: &Ctx<'_>,
    ) -> Result<Option<RecordReport>> {
        let now = ctx.now();
        let planned = ctx.deps.ledger.query(PLANNED_PK, "").await?;
        let holding = planned.iter().find_map(|(date, v)| {
            let ats: Vec<DateTime<Utc>> = v["schedules"]
                .as_array()?
                .iter()
                .filter_map(|s| s["at"].as_str())
                .filter_map(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc))
                .collect();
            let (from, to) = (ats.iter().min()?, ats.iter().max()?);
            (*from <= now && now < *to).then(|| (date.clone(), *to))
        });
        let Some((date, until)) = holding else {
            return Ok(None);
        };
        let mut w = ctx.work(&tick.event_id, "schedule", "off-peak scale-in");
        w.note(format!(
            "not run: the game night of {date} holds the groups until its return at {}",
            until.to_rfc3339()
        ));
        Ok(Some(w.rec))
    }

    async fn plan_game_nights(&self, tick: &ScheduledTick, ctx: &Ctx<'_>) -> Result<RecordReport> {
        let scale = &ctx.cfg().scale;
        let gn = &scale.gamenight;
        let param = gn.calendar_parameter.as_str();
        let mut w = ctx.work(
            &tick.event_id,
            "schedule",
            format!("game-night planning from {param}"),
        );
        let text = match &ctx.deps.params {
            Some(p) => p.get(param).await?,
            None => None,
        };
        let Some(text) = text else {
            let why = if ctx.deps.params.is_none() {
                "SSM is not read (NBAOPS_SSM=off)"
            } else {
                "the parameter does not exist"
            };
            w.note(format!(
                "no game calendar at {param} ({why}): no pre-scaling"
            ));
            let summary =
                format!("no game calendar at {param}: game nights are not pre-scaled ({why})");
            self.notice_once(
                &mut w,
                &format!("missing:{param}"),
                Severity::P4,
                summary,
                json!({"parameter": param}),
            )
            .await?;
            return w.done().await;
        };
        // Found: a later disappearance is news again.
        ctx.deps
            .ledger
            .delete(NOTICE_PK, &format!("missing:{param}"))
            .await?;
        let cal: Calendar = parse(&text, gn.tz, &gn.levels);
        if !cal.errors.is_empty() {
            let lines: Vec<String> = cal
                .errors
                .iter()
                .map(|e| format!("line {}: {}", e.line, e.reason))
                .collect();
            for l in &lines {
                w.note(format!("not planned: {l}"));
            }
            use sha2::Digest;
            let digest = sha2::Sha256::digest(text.as_bytes());
            let hash: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
            let mut summary = format!(
                "game calendar {param}: {} line(s) not planned: {}",
                lines.len(),
                lines.join("; ")
            );
            if summary.chars().count() > 400 {
                summary = summary.chars().take(397).collect::<String>() + "...";
            }
            self.notice_once(
                &mut w,
                &format!("malformed:{hash}"),
                Severity::P3,
                summary,
                json!({"parameter": param, "content_sha256_prefix": hash, "lines": lines}),
            )
            .await?;
        }
        if !scale.followup.enabled() {
            w.note(format!(
                "{} slate(s) in the calendar, none scheduled: scale.followup.target_arn/role_arn are not configured",
                cal.slates.len()
            ));
            return w.done().await;
        }
        let (mut planned, mut later) = (0, 0);
        for slate in &cal.slates {
            match plan_slate(slate, ctx.now(), gn.tz, gn.lead_minutes, gn.hold_minutes) {
                SlatePlan::NotYet => later += 1,
                SlatePlan::Over => {}
                SlatePlan::Schedules {
                    prescale,
                    back,
                    late,
                } => {
                    planned += 1;
                    if late {
                        w.note(format!(
                            "{}: tip-off {} - {} min has passed: pre-scale at {} instead",
                            slate.date,
                            slate.tipoff.to_rfc3339(),
                            gn.lead_minutes,
                            prescale.at.to_rfc3339()
                        ));
                    }
                    self.schedule_slate(&mut w, slate, &[prescale, back])
                        .await?;
                }
            }
        }
        w.note(format!(
            "{} slate(s): {planned} today or tomorrow, {later} later",
            cal.slates.len()
        ));
        w.done().await
    }

    /// Creates the slate's schedules once. What was scheduled is kept in the ledger until the day
    /// after the return: a re-plan finds it and schedules nothing again (the schedules delete
    /// themselves after they run); a slate whose tip-off or load changed is re-scheduled.
    async fn schedule_slate(
        &self,
        w: &mut Work<'_>,
        slate: &crate::calendar::Slate,
        schedules: &[Planned],
    ) -> Result<()> {
        let ctx = w.ctx;
        let f = &ctx.cfg().scale.followup;
        let date = slate.date.format("%Y-%m-%d").to_string();
        let record = json!({
            "tipoff": slate.tipoff.to_rfc3339(),
            "load": slate.load,
            "schedules": schedules.iter().map(|p| json!({"name": p.name, "at": p.at.to_rfc3339()})).collect::<Vec<_>>(),
        });
        let before = ctx.deps.ledger.get(PLANNED_PK, &date).await?;
        let changed = match &before {
            Some(b) if b["tipoff"] == record["tipoff"] && b["load"] == record["load"] => {
                w.note(format!(
                    "{date}: already planned ({} {})",
                    slate.load,
                    slate.tipoff.to_rfc3339()
                ));
                return Ok(());
            }
            Some(_) => true,
            None => false,
        };
        for p in schedules {
            let s = OneTimeSchedule {
                group: f.group.clone(),
                name: p.name.clone(),
                at: p.at,
                target_arn: f.target_arn.clone(),
                role_arn: f.role_arn.clone(),
                input: p.input.clone(),
            };
            if changed {
                self.gamenight.scheduler.delete(&s.group, &s.name).await?;
            }
            let created = self.gamenight.scheduler.create_once(&s).await?;
            w.note(format!(
                "{date}: {} {} at {}",
                s.name,
                if created {
                    if changed {
                        "re-scheduled (calendar changed)"
                    } else {
                        "scheduled"
                    }
                } else {
                    "already scheduled"
                },
                s.expression()
            ));
        }
        let last = schedules.iter().map(|p| p.at).max().unwrap_or(slate.tipoff);
        ctx.deps
            .ledger
            .put(
                PLANNED_PK,
                &date,
                &record,
                Some((last + Duration::days(1)).timestamp()),
            )
            .await
    }

    /// One alert per `sk` per week: the first planning run that meets the problem raises it, the
    /// next ones only note it.
    async fn notice_once(
        &self,
        w: &mut Work<'_>,
        sk: &str,
        severity: Severity,
        summary: String,
        details: serde_json::Value,
    ) -> Result<()> {
        let ctx = w.ctx;
        let param = &ctx.cfg().scale.gamenight.calendar_parameter;
        let first = ctx
            .deps
            .ledger
            .put_if_absent(
                NOTICE_PK,
                sk,
                &json!({"at": ctx.now().to_rfc3339(), "summary": summary}),
                (ctx.now() + Duration::days(NOTICE_DAYS)).timestamp(),
            )
            .await?;
        if !first {
            w.note("already reported (one alert per week for the same calendar problem)");
            return Ok(());
        }
        let alert = ctx
            .alert(
                severity,
                &format!("ssm:{param}"),
                format!("game-night-calendar#{sk}"),
                summary,
            )
            .with_details(details)
            .with_runbook("Fix the calendar parameter (docs/game-nights.md); the next daily game-night-plan run reads it again.");
        w.raise(alert).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use async_trait::async_trait;
    use serde_json::Value;

    use super::*;
    use crate::handler::FUNCTION;
    use nbaops_shared::config::{layer, Config, Env};
    use nbaops_shared::fakes::*;
    use nbaops_shared::guard::GuardStep;
    use nbaops_shared::ports::{AutoScaling, GroupState, MetricAlarm, MetricQuery, Tags};
    use nbaops_shared::runtime::{dispatch, Deps, Invocation, InvocationReport};

    const CALENDAR: &str = "/nbaops/dev/calendar/games";

    /// Forwards to a leaked fake (the shared `Shared` does not cover these two ports).
    struct By<T: 'static>(&'static T);
    #[async_trait]
    impl Scheduler for By<FakeScheduler> {
        async fn create_once(&self, s: &OneTimeSchedule) -> Result<bool> {
            self.0.create_once(s).await
        }
        async fn delete(&self, g: &str, n: &str) -> Result<bool> {
            self.0.delete(g, n).await
        }
    }
    #[async_trait]
    impl CloudWatch for By<FakeCloudWatch> {
        async fn describe_alarm(&self, n: &str) -> Result<Option<MetricAlarm>> {
            self.0.describe_alarm(n).await
        }
        async fn alarms_in_state(&self, s: &str) -> Result<Vec<MetricAlarm>> {
            self.0.alarms_in_state(s).await
        }
        async fn alarms_for_metric(
            &self,
            ns: &str,
            m: &str,
            d: &BTreeMap<String, String>,
        ) -> Result<Vec<MetricAlarm>> {
            self.0.alarms_for_metric(ns, m, d).await
        }
        async fn set_alarm_threshold(&self, n: &str, t: f64) -> Result<()> {
            self.0.set_alarm_threshold(n, t).await
        }
        async fn statistics(&self, q: &MetricQuery) -> Result<Vec<(DateTime<Utc>, f64)>> {
            self.0.statistics(q).await
        }
    }

    struct World {
        deps: &'static Deps,
        f: &'static ScaleOnAlarm,
        asg: &'static FakeAutoScaling,
        params: &'static FakeParams,
        ledger: &'static FakeLedger,
        notifier: &'static FakeNotifier,
        scheduler: &'static FakeScheduler,
        cw: &'static FakeCloudWatch,
    }

    fn group(name: &str, min: i32, max: i32, desired: i32) -> GroupState {
        GroupState {
            name: name.into(),
            min_size: min,
            max_size: max,
            desired,
            in_service: desired,
            tags: Tags::new(),
            activity_in_progress: false,
        }
    }

    fn world(extra: &[(&str, &str)], calendar: Option<&str>) -> World {
        let mut vars: BTreeMap<String, String> = [
            ("NBAOPS_SCALE__GROUPS", "nbaops-dev-web,nbaops-dev-worker"),
            ("NBAOPS_SCALE__GAMENIGHT__TZ", "America/New_York"),
            (
                "NBAOPS_SCALE__FOLLOWUP__TARGET_ARN",
                "arn:aws:lambda:us-east-1:123456789012:function:nbaops-dev-scale-on-alarm:live",
            ),
            (
                "NBAOPS_SCALE__FOLLOWUP__ROLE_ARN",
                "arn:aws:iam::123456789012:role/nbaops-dev-scale-followup",
            ),
            (
                "NBAOPS_ALERTS_TOPIC_ARN",
                "arn:aws:sns:us-east-1:123456789012:nbaops-dev-alerts",
            ),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in extra {
            vars.insert(k.to_string(), v.to_string());
        }
        let cfg = Config::from_settings(
            Env::Dev,
            FUNCTION,
            layer(Env::Dev, &vars, &Default::default()).unwrap(),
        )
        .unwrap();
        let params = leak(FakeParams::default());
        if let Some(c) = calendar {
            params.set(CALENDAR, c);
        }
        let ledger = leak(FakeLedger::default());
        let notifier = leak(FakeNotifier::default());
        let deps = leak(Deps {
            cfg,
            notifier: Box::new(Shared(notifier)),
            params: Some(Box::new(Shared(params))),
            ledger: Box::new(Shared(ledger)),
            switches: nbaops_shared::guard::Switches::default(),
        });
        let asg = leak(FakeAutoScaling::with(vec![
            group("nbaops-dev-web", 2, 6, 2),
            group("nbaops-dev-worker", 1, 3, 2),
        ]));
        let scheduler = leak(FakeScheduler::default());
        let cw = leak(FakeCloudWatch::default());
        World {
            deps,
            f: leak(ScaleOnAlarm {
                asg: Box::new(Shared(asg)),
                rds: Box::new(FakeRds::default()),
                cache: Box::new(FakeElastiCache::default()),
                gamenight: GameNightPorts {
                    scheduler: Box::new(By(scheduler)),
                    cloudwatch: Box::new(By(cw)),
                },
            }),
            asg,
            params,
            ledger,
            notifier,
            scheduler,
            cw,
        }
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    async fn run(w: &World, payload: Value, now: DateTime<Utc>) -> InvocationReport {
        let inv = Invocation::at("req", now);
        dispatch(w.f, payload, &Ctx::of::<ScaleOnAlarm>(w.deps, &inv))
            .await
            .unwrap()
    }

    fn plan_input(day: &str) -> Value {
        json!({"nbaops": {"task": "game-night-plan", "id": format!("plan-{day}")}})
    }

    /// Christmas Eve, 06:00 in New York.
    fn christmas_eve_morning() -> DateTime<Utc> {
        utc("2026-12-24T11:00:00Z")
    }

    fn calendar_alerts(w: &World) -> Vec<String> {
        w.notifier
            .published()
            .iter()
            .filter(|p| p.message.contains("game-night-calendar#"))
            .map(|p| p.message.clone())
            .collect()
    }

    fn schedule(w: &World, name: &str) -> OneTimeSchedule {
        w.scheduler
            .all()
            .into_iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no schedule {name}: {:?}", w.scheduler.all()))
    }

    #[tokio::test]
    async fn plan_schedules_tomorrows_slate_once_and_replans_a_changed_one() {
        let w = world(
            &[],
            Some("# slate\n2026-12-25,12:00,high\n2027-01-10,19:30,medium\n"),
        );
        let r = run(&w, plan_input("1"), christmas_eve_morning()).await;
        assert_eq!(
            w.scheduler.mutations(),
            vec![
                "create_once default/game-night-prescale-2026-12-25 at(2026-12-25T16:00:00)",
                "create_once default/game-night-return-2026-12-25 at(2026-12-25T21:00:00)",
            ],
            "{:?}",
            r.records[0].notes
        );
        let s = schedule(&w, "game-night-prescale-2026-12-25");
        assert_eq!(s.input["nbaops"]["load"], "high");
        assert!(s.target_arn.ends_with(":live"));
        // A second run, and one after the schedules ran and deleted themselves: nothing new.
        run(
            &w,
            plan_input("2"),
            christmas_eve_morning() + Duration::hours(1),
        )
        .await;
        w.scheduler
            .delete("default", "game-night-prescale-2026-12-25")
            .await
            .unwrap();
        let r = run(&w, plan_input("3"), utc("2026-12-25T16:30:00Z")).await;
        assert_eq!(w.scheduler.mutations().len(), 3, "{:?}", r.records[0].notes);
        assert!(r.records[0]
            .notes
            .iter()
            .any(|n| n.contains("already planned")));
        // The tip-off moves: both schedules are replaced.
        w.params.set(CALENDAR, "2026-12-25,14:00,high\n");
        run(&w, plan_input("4"), christmas_eve_morning()).await;
        assert_eq!(
            w.scheduler.mutations()[3..],
            [
                // (the pre-scale schedule had already run and deleted itself)
                "create_once default/game-night-prescale-2026-12-25 at(2026-12-25T18:00:00)",
                "delete default/game-night-return-2026-12-25",
                "create_once default/game-night-return-2026-12-25 at(2026-12-25T23:00:00)",
            ]
        );
        assert!(w.asg.mutations().is_empty());
        assert!(calendar_alerts(&w).is_empty());
    }

    /// Tip-off 19:30 local on the Sunday the clocks spring forward (EDT, UTC-4) and the Sunday
    /// they fall back (EST, UTC-5): the schedules are at the right UTC minute.
    #[tokio::test]
    async fn dst_weeks_schedule_the_right_utc_minute() {
        let w = world(&[], Some("2027-03-14,19:30,high\n2027-11-07,19:30,high\n"));
        run(&w, plan_input("a"), utc("2027-03-13T11:00:00Z")).await;
        run(&w, plan_input("b"), utc("2027-11-06T10:00:00Z")).await;
        let at = |n: &str| schedule(&w, n).at;
        assert_eq!(
            at("game-night-prescale-2027-03-14"),
            utc("2027-03-14T22:30:00Z")
        );
        assert_eq!(
            at("game-night-return-2027-03-14"),
            utc("2027-03-15T03:30:00Z")
        );
        assert_eq!(
            at("game-night-prescale-2027-11-07"),
            utc("2027-11-07T23:30:00Z")
        );
        assert_eq!(
            at("game-night-return-2027-11-07"),
            utc("2027-11-08T04:30:00Z")
        );
    }

    #[tokio::test]
    async fn a_missing_calendar_is_reported_once_and_again_after_it_came_back() {
        let w = world(&[], None);
        let r = run(&w, plan_input("1"), christmas_eve_morning()).await;
        assert_eq!(r.records[0].alerts.len(), 1);
        assert_eq!(r.records[0].alerts[0].severity, Severity::P4);
        run(
            &w,
            plan_input("2"),
            christmas_eve_morning() + Duration::days(1),
        )
        .await;
        assert_eq!(calendar_alerts(&w).len(), 1);
        assert!(w.scheduler.mutations().is_empty());
        // It comes back, then goes again: news again.
        w.params.set(CALENDAR, "# nothing yet\n");
        run(
            &w,
            plan_input("3"),
            christmas_eve_morning() + Duration::days(2),
        )
        .await;
        w.params.values.lock().unwrap().remove(CALENDAR);
        run(
            &w,
            plan_input("4"),
            christmas_eve_morning() + Duration::days(3),
        )
        .await;
        assert_eq!(calendar_alerts(&w).len(), 2);
        // The notice item expires a week after it was raised: then the notice is due again.
        let expiry = w.ledger.expiry.lock().unwrap().clone();
        let key = (
            "gamenight-notice".to_string(),
            format!("missing:{CALENDAR}"),
        );
        assert_eq!(
            expiry.get(&key),
            Some(&(christmas_eve_morning() + Duration::days(3 + 7)).timestamp())
        );
    }

    #[tokio::test]
    async fn malformed_lines_are_reported_once_per_content_and_good_lines_still_planned() {
        let text = "2026-12-25,12:00,high\n2026-12-31,noon,high\n2027-03-14,02:30,high\n";
        let w = world(&[], Some(text));
        let r = run(&w, plan_input("1"), christmas_eve_morning()).await;
        let a = &r.records[0].alerts;
        assert_eq!(a.len(), 1, "{:?}", r.records[0].notes);
        assert_eq!(a[0].severity, Severity::P3);
        assert!(
            a[0].summary.contains("line 2") && a[0].summary.contains("line 3"),
            "{}",
            a[0].summary
        );
        assert!(a[0].summary.contains("does not exist"), "{}", a[0].summary);
        assert_eq!(w.scheduler.mutations().len(), 2);
        // Same content: no second alert; new content: one more.
        run(&w, plan_input("2"), christmas_eve_morning()).await;
        assert_eq!(calendar_alerts(&w).len(), 1);
        w.params
            .set(CALENDAR, &format!("{text}2027-01-01,25:00,high\n"));
        run(&w, plan_input("3"), christmas_eve_morning()).await;
        assert_eq!(calendar_alerts(&w).len(), 2);
        // Nothing from a bad line was scheduled.
        assert!(w
            .scheduler
            .all()
            .iter()
            .all(|s| s.name.ends_with("2026-12-25")));
    }

    #[tokio::test]
    async fn without_followup_target_nothing_is_scheduled_and_the_record_says_so() {
        let w = world(
            &[
                ("NBAOPS_SCALE__FOLLOWUP__TARGET_ARN", ""),
                ("NBAOPS_SCALE__FOLLOWUP__ROLE_ARN", ""),
            ],
            Some("2026-12-25,12:00,high\n"),
        );
        let r = run(&w, plan_input("1"), christmas_eve_morning()).await;
        assert!(w.scheduler.mutations().is_empty());
        assert!(
            r.records[0]
                .notes
                .iter()
                .any(|n| n.contains("scale.followup")),
            "{:?}",
            r.records[0].notes
        );
    }

    async fn planned(w: &World) -> (OneTimeSchedule, OneTimeSchedule) {
        run(w, plan_input("p"), christmas_eve_morning()).await;
        (
            schedule(w, "game-night-prescale-2026-12-25"),
            schedule(w, "game-night-return-2026-12-25"),
        )
    }

    async fn desired(w: &World, g: &str) -> i32 {
        w.asg.describe_group(g).await.unwrap().unwrap().desired
    }

    #[tokio::test]
    async fn prescale_raises_to_the_level_capped_and_once_then_return_brings_back() {
        let w = world(&[], Some("2026-12-25,12:00,high\n"));
        let (pre, back) = planned(&w).await;
        let r = run(&w, pre.input.clone(), pre.at).await;
        assert_eq!(r.records.len(), 2);
        assert_eq!(
            w.asg.mutations(),
            vec![
                "set_desired_capacity nbaops-dev-web 4",
                "set_desired_capacity nbaops-dev-worker 3",
            ],
            "{:?}",
            r.records
        );
        assert!(r.records[1].notes.iter().any(|n| n.contains("capped at 3")));
        assert!(r
            .records
            .iter()
            .all(|x| x.actions[0].action == "asg.prescale"));
        // The same delivery again, even after someone lowered web: the guard's idempotency.
        let r = run(&w, pre.input.clone(), pre.at + Duration::minutes(1)).await;
        assert_eq!(w.asg.mutations().len(), 2);
        assert!(r.records[0].notes[0].contains("not lowering"));
        w.asg
            .groups
            .lock()
            .unwrap()
            .get_mut("nbaops-dev-web")
            .unwrap()
            .desired = 3;
        let r = run(&w, pre.input.clone(), pre.at + Duration::minutes(2)).await;
        assert_eq!(w.asg.mutations().len(), 2);
        assert_eq!(
            r.records[0].actions[0].stopped_by,
            Some(GuardStep::Idempotency)
        );
        let r = run(&w, back.input.clone(), back.at).await;
        assert_eq!(
            w.asg.mutations()[2..],
            [
                "set_desired_capacity nbaops-dev-web 2",
                "set_desired_capacity nbaops-dev-worker 2",
            ],
            "{:?}",
            r.records
        );
        assert!(w
            .notifier
            .published()
            .iter()
            .all(|p| !p.message.contains("nbaops.alert/v1")));
    }

    #[tokio::test]
    async fn prescale_never_lowers_and_return_leaves_a_group_whose_alarm_fires() {
        let w = world(&[], Some("2026-12-25,12:00,medium\n"));
        w.asg
            .set_desired_capacity("nbaops-dev-web", 5)
            .await
            .unwrap();
        w.asg.mutations.lock().unwrap().clear();
        let (pre, back) = planned(&w).await;
        let r = run(&w, pre.input.clone(), pre.at).await;
        assert_eq!(
            w.asg.mutations(),
            vec!["set_desired_capacity nbaops-dev-worker 3"]
        );
        assert!(r.records[0]
            .notes
            .iter()
            .any(|n| n.contains("not lowering")));
        let alarm = |name: &str, group: &str, state: &str| MetricAlarm {
            name: name.into(),
            arn: None,
            state: state.into(),
            state_updated: None,
            namespace: Some("AWS/EC2".into()),
            metric: Some("CPUUtilization".into()),
            dimensions: BTreeMap::from([("AutoScalingGroupName".to_string(), group.to_string())]),
            threshold: Some(70.0),
            comparison: None,
        };
        w.cw.alarms.lock().unwrap().extend([
            (
                "web-cpu".to_string(),
                alarm("web-cpu", "nbaops-dev-web", "ALARM"),
            ),
            (
                "worker-cpu".to_string(),
                alarm("worker-cpu", "nbaops-dev-worker", "OK"),
            ),
        ]);
        let r = run(&w, back.input.clone(), back.at).await;
        assert_eq!(
            w.asg.mutations()[1..],
            ["set_desired_capacity nbaops-dev-worker 2"]
        );
        assert!(
            r.records[0]
                .notes
                .iter()
                .any(|n| n.contains("left at 5") && n.contains("web-cpu")),
            "{:?}",
            r.records[0].notes
        );
        assert_eq!(desired(&w, "nbaops-dev-web").await, 5);
    }

    /// The off-peak scale-in does not step the groups down while a game night holds them.
    #[tokio::test]
    async fn off_peak_waits_for_the_game_nights_return() {
        let w = world(&[], Some("2026-12-25,12:00,high\n"));
        let (pre, _) = planned(&w).await;
        run(&w, pre.input.clone(), pre.at).await;
        assert_eq!(w.asg.mutations().len(), 2);
        let off_peak = |id: &str| json!({"nbaops": {"task": "off-peak-scale-in", "id": id}});
        let r = run(&w, off_peak("op-1"), utc("2026-12-25T18:00:00Z")).await;
        assert_eq!(w.asg.mutations().len(), 2, "{:?}", r.records);
        assert!(
            r.records[0].notes[0].contains("game night of 2026-12-25"),
            "{:?}",
            r.records
        );
        // After the return time it runs as usual (one step down).
        let r = run(&w, off_peak("op-2"), utc("2026-12-25T21:00:00Z")).await;
        assert_eq!(
            w.asg.mutations()[2..],
            ["set_desired_capacity nbaops-dev-web 3"],
            "{:?}",
            r.records
        );
    }

    #[tokio::test]
    async fn bad_or_late_inputs_do_nothing() {
        let w = world(&[], Some("2026-12-25,12:00,high\n"));
        let (pre, _) = planned(&w).await;
        let mut no_tipoff = pre.input.clone();
        no_tipoff["nbaops"]["tipoff"] = json!("soon");
        let mut unknown_load = pre.input.clone();
        unknown_load["nbaops"]["load"] = json!("ludicrous");
        for bad in [no_tipoff, unknown_load] {
            let r = run(&w, bad, pre.at).await;
            assert!(r.records[0].not_for_me.is_some(), "{:?}", r.records[0]);
        }
        // Delivered after the game night ended: no pre-scale.
        let r = run(&w, pre.input.clone(), utc("2026-12-26T03:00:00Z")).await;
        assert!(r.records[0].notes[0].contains("ended"));
        assert!(w.asg.mutations().is_empty());
        // Dry-run: decided and audited, not done.
        let w = world(
            &[("NBAOPS_GUARD__DRY_RUN", "true")],
            Some("2026-12-25,12:00,high\n"),
        );
        let (pre, _) = planned(&w).await;
        let r = run(&w, pre.input.clone(), pre.at).await;
        assert!(w.asg.mutations().is_empty());
        assert_eq!(r.records[0].actions[0].outcome, Outcome::WouldAct);
    }
}

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
//! The two group tasks answer ONE record with one guard over every managed group
//! (`with_fleet_size(groups)`), as the off-peak walk does: the blast radius (`guard.blast.*`)
//! limits how many groups one delivery changes. A group the blast radius or a cooldown stopped, a
//! group busy with a scaling activity, or a failed change, is left for a follow-up delivery of the
//! same task one minute later (a one-time schedule in `scale.followup`, input = the slate plus
//! `"step": k+1`, named from task, date and step so a duplicate delivery schedules once), while
//! the game-night window lasts (pre-scale: before tip-off; return: before tip-off + hold +
//! [`RETURN_GRACE_MINUTES`]) and k < [`MAX_STEPS`]. The work id (the guard's idempotency key) is
//! `<task>-<date>`, whatever the delivery or step: each group's change happens once per slate.

use chrono::{DateTime, Duration, SubsecRound, Utc};
use serde_json::json;

use nbaops_shared::alerts::Severity;
use nbaops_shared::events::ScheduledTick;
use nbaops_shared::guard::{
    AuditRecord, Bounds, Explanation, GuardStep, Observation, Outcome, ProposedAction,
};
use nbaops_shared::ports::OneTimeSchedule;
use nbaops_shared::runtime::{Ctx, RecordReport, Work};
use nbaops_shared::Result;

use crate::calendar::{
    parse, plan_slate, prescale_target, return_target, Calendar, Planned, SlatePlan, PLAN_TASK,
    PRESCALE_TASK, RETURN_TASK,
};
use crate::handler::ScaleOnAlarm;

/// Ledger partition of the once-only notices (missing calendar, malformed content).
const NOTICE_PK: &str = "gamenight-notice";
/// Ledger partition of the planned slates (sort key: the date): what was scheduled, so a re-plan
/// after a schedule ran (and deleted itself) schedules nothing again.
const PLANNED_PK: &str = "gamenight-plan";
const NOTICE_DAYS: i64 = 7;
/// At most this many follow-up deliveries of one task for one slate.
pub const MAX_STEPS: u64 = 10;
/// A follow-up is delivered this many minutes after the run that left a group.
pub const FOLLOW_UP_MINUTES: i64 = 1;
/// Return follow-ups are scheduled until tip-off + hold + this many minutes.
pub const RETURN_GRACE_MINUTES: i64 = 60;

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
    /// 0 for the planned delivery, k for the k-th follow-up.
    step: u64,
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
    let step = match tick.detail.get("nbaops").and_then(|n| n.get("step")) {
        None => 0,
        Some(s) => s
            .as_u64()
            .filter(|k| (1..=MAX_STEPS).contains(k))
            .ok_or_else(|| format!("nbaops.step {s} is not a whole number in [1, {MAX_STEPS}]"))?,
    };
    Ok(SlateInput {
        date,
        tipoff,
        load,
        step,
    })
}

/// The work id of a task's deliveries for one slate: the same for every delivery and step, so the
/// guard's idempotency lets each group's change happen once per slate.
pub fn work_id(task: &str, date: &str) -> String {
    format!("{task}-{date}")
}

/// The name of the follow-up schedule of `step`: the same task, slate and step, the same name, so
/// a duplicate delivery's create is refused and schedules nothing more.
pub fn follow_up_name(task: &str, date: &str, step: u64) -> String {
    OneTimeSchedule::name_for(&format!("{task}-{date}-step-{step}"))
}

/// Whether a group's change left it for a follow-up: stopped by the blast radius or a cooldown,
/// or failed. Not when done, stopped for good (kill switch, protected tag, bounds, idempotency:
/// already done for this slate) or in dry-run (a follow-up would decide the same).
fn left_for_later(audit: &AuditRecord) -> bool {
    if audit.dry_run {
        return false;
    }
    match audit.outcome {
        Outcome::Failed => true,
        Outcome::Skipped => matches!(
            audit.stopped_by,
            Some(GuardStep::BlastRadius | GuardStep::Cooldown)
        ),
        // Waiting for a person: the approved task carries it out, not a follow-up.
        Outcome::Acted | Outcome::WouldAct | Outcome::NeedsApproval => false,
    }
}

impl ScaleOnAlarm {
    /// The record of a game-night task: the plan, or one pass over every managed group.
    pub(crate) async fn game_night(
        &self,
        tick: &ScheduledTick,
        ctx: &Ctx<'_>,
    ) -> Result<RecordReport> {
        let task = tick.task().unwrap_or_default();
        if task == PLAN_TASK {
            return self.plan_game_nights(tick, ctx).await;
        }
        let prescale = task == PRESCALE_TASK;
        let input = match slate_input(tick) {
            Ok(i) => i,
            Err(why) => {
                let w = ctx.work(&tick.event_id, "schedule", format!("{task}: input"));
                return Ok(w.not_for_me(format!("{task} input not understood: {why}")));
            }
        };
        let gn = &ctx.cfg().scale.gamenight;
        let Some(&level) = gn.levels.get(&input.load) else {
            let w = ctx.work(&tick.event_id, "schedule", format!("{task} {}", input.date));
            return Ok(w.not_for_me(format!(
                "load '{}' is not in scale.gamenight.levels: not acting on it",
                input.load
            )));
        };
        let groups = &ctx.cfg().scale.groups;
        let mut w = ctx
            .work(
                &work_id(&task, &input.date),
                "schedule",
                format!(
                    "game-night {} for {} ({}={level}), step {}: {} group(s)",
                    if prescale { "pre-scale" } else { "return" },
                    input.date,
                    input.load,
                    input.step,
                    groups.len()
                ),
            )
            .with_fleet_size(groups.len());
        let over = input.tipoff + Duration::minutes(gn.hold_minutes);
        if prescale && ctx.now() >= over {
            w.note(format!(
                "the game night of {} ended at {}: no pre-scale now",
                input.date,
                over.to_rfc3339()
            ));
            return w.done().await;
        }
        if groups.is_empty() {
            w.note("scale.groups lists no group: nothing to do");
            return w.done().await;
        }
        let alarms = if prescale {
            Vec::new()
        } else {
            self.cw.alarms_in_state("ALARM").await?
        };
        let mut pending = Vec::new();
        for name in groups {
            let left = if prescale {
                self.prescale_group(&mut w, name, level, &input).await?
            } else {
                let target = format!("asg:{name}");
                let map = &ctx.cfg().scale.alarm_map;
                let firing: Vec<String> = alarms
                    .iter()
                    .filter(|a| {
                        a.dimensions.get("AutoScalingGroupName") == Some(name)
                            || map
                                .get(&a.name)
                                .or_else(|| a.arn.as_ref().and_then(|arn| map.get(arn)))
                                .is_some_and(|r| r.target == target)
                    })
                    .map(|a| a.name.clone())
                    .collect();
                self.return_group(&mut w, name, &firing, &input).await?
            };
            if left {
                pending.push(name.as_str());
            }
        }
        if pending.is_empty() {
            w.note("no group left for a follow-up");
        } else {
            self.game_night_follow_up(&mut w, &task, &input, &pending)
                .await?;
        }
        w.done().await
    }

    /// Schedules the next delivery of the task for the groups left, or says why not.
    async fn game_night_follow_up(
        &self,
        w: &mut Work<'_>,
        task: &str,
        input: &SlateInput,
        pending: &[&str],
    ) -> Result<()> {
        let ctx = w.ctx;
        let scale = &ctx.cfg().scale;
        let left = pending.join(", ");
        let end = if task == PRESCALE_TASK {
            input.tipoff
        } else {
            input.tipoff + Duration::minutes(scale.gamenight.hold_minutes + RETURN_GRACE_MINUTES)
        };
        let at = ctx.now().trunc_subsecs(0) + Duration::minutes(FOLLOW_UP_MINUTES);
        let step = input.step + 1;
        if step > MAX_STEPS {
            w.note(format!(
                "{left} left as they are: this was follow-up {MAX_STEPS}, the last one for {task} of {}",
                input.date
            ));
            return Ok(());
        }
        if at >= end {
            w.note(format!(
                "{left} left as they are: a follow-up at {} would fall after the game night's {} window ({})",
                at.to_rfc3339(),
                if task == PRESCALE_TASK { "pre-scale" } else { "return" },
                end.to_rfc3339()
            ));
            return Ok(());
        }
        let f = &scale.followup;
        if !f.enabled() {
            w.note(format!(
                "{left} left as they are; scale.followup.target_arn/role_arn are not set, so no follow-up is scheduled"
            ));
            return Ok(());
        }
        let name = follow_up_name(task, &input.date, step);
        let s = OneTimeSchedule {
            group: f.group.clone(),
            name: name.clone(),
            at,
            target_arn: f.target_arn.clone(),
            role_arn: f.role_arn.clone(),
            input: json!({"nbaops": {
                "task": task,
                "id": name,
                "date": input.date,
                "tipoff": input.tipoff.to_rfc3339(),
                "load": input.load,
                "step": step,
            }}),
        };
        if ctx.dry_run().await {
            w.note(format!(
                "dry-run: would schedule follow-up {step} of {left} at {} ({}/{})",
                at.to_rfc3339(),
                s.group,
                s.name
            ));
            return Ok(());
        }
        let created = self.scheduler.create_once(&s).await?;
        w.note(if created {
            format!(
                "{left} left for follow-up {step} at {} ({}/{})",
                at.to_rfc3339(),
                s.group,
                s.name
            )
        } else {
            format!(
                "{left} left; follow-up {step} was already scheduled ({}/{}), nothing more",
                s.group, s.name
            )
        });
        Ok(())
    }

    /// One group's pre-scale through the guard. True when it is left for a follow-up.
    async fn prescale_group(
        &self,
        w: &mut Work<'_>,
        name: &str,
        level: i32,
        input: &SlateInput,
    ) -> Result<bool> {
        let ctx = w.ctx;
        let resource = format!("asg:{name}");
        let Some(group) = self.asg.describe_group(name).await? else {
            w.note(format!("{resource} does not exist: no action"));
            return Ok(false);
        };
        let plan = ctx.cfg().scale.plan_for(name);
        let Some(to) = prescale_target(level, plan.ceiling, group.max_size, group.desired) else {
            w.note(format!(
                "{resource}: already at {} (level {level}, ceiling {}, MaxSize {}): not lowering it",
                group.desired, plan.ceiling, group.max_size
            ));
            return Ok(false);
        };
        if group.activity_in_progress {
            w.note(format!(
                "{resource}: left at {} for now — a scaling activity is in progress",
                group.desired
            ));
            return Ok(true);
        }
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
            explanation: Explanation::new(
                "pre-scale",
                "Pre-scaled",
                format!("{name} {} → {to}", group.desired),
                format!(
                    "SPEC 2.5 game night {} ({} load), tip-off {}",
                    input.date,
                    input.load,
                    input.tipoff.to_rfc3339()
                ),
            )
            .observe(Observation::value("load level", level as f64, ""))
            .observe(Observation::value(
                "ceiling",
                plan.ceiling.min(group.max_size) as f64,
                "",
            ))
            .key("scale.gamenight.levels")
            .key("scale.gamenight.lead_minutes")
            .key("scale.asg.ceiling"),
        };
        self.act_on_group(w, &action, name, group.desired, to).await
    }

    /// One group's return through the guard. True when it is left for a follow-up.
    async fn return_group(
        &self,
        w: &mut Work<'_>,
        name: &str,
        firing: &[String],
        input: &SlateInput,
    ) -> Result<bool> {
        let ctx = w.ctx;
        let resource = format!("asg:{name}");
        let Some(group) = self.asg.describe_group(name).await? else {
            w.note(format!("{resource} does not exist: no action"));
            return Ok(false);
        };
        let plan = ctx.cfg().scale.plan_for(name);
        let Some(to) = return_target(plan.baseline, group.min_size, group.desired) else {
            w.note(format!(
                "{resource}: at {} (baseline {}): nothing to bring back",
                group.desired, plan.baseline
            ));
            return Ok(false);
        };
        if !firing.is_empty() {
            w.note(format!(
                "{resource}: left at {} (not back to {to}): its alarm(s) {} in ALARM",
                group.desired,
                firing.join(", ")
            ));
            return Ok(false);
        }
        if group.activity_in_progress {
            w.note(format!(
                "{resource}: left at {} for now — a scaling activity is in progress",
                group.desired
            ));
            return Ok(true);
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
            explanation: Explanation::new(
                "return",
                "Returned",
                format!("{name} {} → {to}", group.desired),
                format!(
                    "SPEC 2.5 game night {} over, no alarm of the group in ALARM",
                    input.date
                ),
            )
            .observe(Observation::value(
                "minutes after tip-off",
                ctx.cfg().scale.gamenight.hold_minutes as f64,
                "",
            ))
            .observe(Observation::value("baseline", plan.baseline as f64, ""))
            .key("scale.gamenight.hold_minutes")
            .key("scale.asg.baseline"),
        };
        self.act_on_group(w, &action, name, group.desired, to).await
    }

    /// The change through the guard; a failed one is a P2 (and left for a follow-up). True when
    /// the group is left for a follow-up.
    async fn act_on_group(
        &self,
        w: &mut Work<'_>,
        action: &ProposedAction,
        name: &str,
        from: i32,
        to: i32,
    ) -> Result<bool> {
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
                .with_action(audit.sentence.clone());
            w.raise(alert).await?;
        }
        Ok(left_for_later(&audit))
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
        if ctx.dry_run().await {
            // Neither the schedules nor the "planned" record: a live run later plans it for real.
            for p in schedules {
                w.note(format!(
                    "dry-run: would schedule {date}: {} at {}{}",
                    p.name,
                    p.at.to_rfc3339(),
                    if changed { " (calendar changed)" } else { "" }
                ));
            }
            return Ok(());
        }
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
                self.scheduler.delete(&s.group, &s.name).await?;
            }
            let created = self.scheduler.create_once(&s).await?;
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

    use nbaops_shared::ports::{CloudWatch, Scheduler};

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
            work_queue: None,
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
                cw: Box::new(By(cw)),
                scheduler: Box::new(By(scheduler)),
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

    /// Every scheduler mutation after the plan's two creates.
    fn follow_ups(w: &World) -> Vec<String> {
        w.scheduler.mutations()[2..].to_vec()
    }

    /// With the default blast radius (50 % of 2 groups: one change per delivery) the pre-scale
    /// raises one group and schedules a follow-up a minute later, which raises the other; a
    /// duplicate of the follow-up (another delivery id) changes and schedules nothing more. The
    /// return walks the same way.
    #[tokio::test]
    async fn prescale_raises_one_group_per_delivery_then_its_follow_up_the_other() {
        let w = world(&[], Some("2026-12-25,12:00,high\n"));
        let (pre, back) = planned(&w).await;
        let r = run(&w, pre.input.clone(), pre.at).await;
        assert_eq!(r.records.len(), 1);
        let rec = &r.records[0];
        assert_eq!(rec.event_id, "game-night-prescale-2026-12-25");
        assert_eq!(
            w.asg.mutations(),
            vec!["set_desired_capacity nbaops-dev-web 4"],
            "{:?}",
            rec.notes
        );
        assert_eq!(rec.actions[0].action, "asg.prescale");
        assert_eq!(rec.actions[1].stopped_by, Some(GuardStep::BlastRadius));
        assert_eq!(
            follow_ups(&w),
            vec![
                "create_once default/game-night-prescale-2026-12-25-step-1 at(2026-12-25T16:01:00)"
            ],
            "{:?}",
            rec.notes
        );
        let step1 = schedule(&w, "game-night-prescale-2026-12-25-step-1");
        assert_eq!(step1.input["nbaops"]["step"], 1);
        assert_eq!(step1.input["nbaops"]["task"], "game-night-prescale");
        assert_eq!(step1.input["nbaops"]["date"], "2026-12-25");
        assert_eq!(step1.input["nbaops"]["load"], "high");
        assert_eq!(
            step1.input["nbaops"]["tipoff"],
            pre.input["nbaops"]["tipoff"]
        );
        assert!(step1.target_arn.ends_with(":live"));

        // The follow-up at its minute: web is already there, the worker goes up (capped at 3).
        let r = run(&w, step1.input.clone(), step1.at).await;
        let rec = &r.records[0];
        assert_eq!(
            w.asg.mutations()[1..],
            ["set_desired_capacity nbaops-dev-worker 3"],
            "{:?}",
            rec.notes
        );
        assert!(rec.notes.iter().any(|n| n.contains("capped at 3")));
        assert!(rec.notes.iter().any(|n| n.contains("no group left")));
        assert_eq!(follow_ups(&w).len(), 1, "nothing left, nothing scheduled");

        // Someone lowers the worker; the follow-up is delivered again under another delivery id:
        // the guard's idempotency (work id from task + date) stops it, nothing is scheduled.
        w.asg
            .groups
            .lock()
            .unwrap()
            .get_mut("nbaops-dev-worker")
            .unwrap()
            .desired = 2;
        let mut dup = step1.input.clone();
        dup["nbaops"]["id"] = json!("another-delivery");
        let r = run(&w, dup, step1.at + Duration::seconds(20)).await;
        assert_eq!(w.asg.mutations().len(), 2, "{:?}", r.records);
        assert_eq!(
            r.records[0].actions[0].stopped_by,
            Some(GuardStep::Idempotency)
        );
        assert_eq!(follow_ups(&w).len(), 1);
        // And the first delivery again: nothing either.
        let r = run(&w, pre.input.clone(), pre.at + Duration::minutes(2)).await;
        assert_eq!(w.asg.mutations().len(), 2, "{:?}", r.records);
        assert_eq!(follow_ups(&w).len(), 1);
        w.asg
            .groups
            .lock()
            .unwrap()
            .get_mut("nbaops-dev-worker")
            .unwrap()
            .desired = 3;

        // The return: web back, the worker left for the return's follow-up, which brings it back.
        let r = run(&w, back.input.clone(), back.at).await;
        assert_eq!(
            w.asg.mutations()[2..],
            ["set_desired_capacity nbaops-dev-web 2"],
            "{:?}",
            r.records
        );
        assert_eq!(
            follow_ups(&w)[1..],
            ["create_once default/game-night-return-2026-12-25-step-1 at(2026-12-25T21:01:00)"]
        );
        let back1 = schedule(&w, "game-night-return-2026-12-25-step-1");
        let r = run(&w, back1.input.clone(), back1.at).await;
        assert_eq!(
            w.asg.mutations()[3..],
            ["set_desired_capacity nbaops-dev-worker 2"],
            "{:?}",
            r.records
        );
        assert_eq!(follow_ups(&w).len(), 2);
        assert!(w
            .notifier
            .published()
            .iter()
            .all(|p| !p.message.contains("nbaops.alert/v1")));
    }

    /// A blast radius of 100 %: both groups in the planned delivery, no follow-up.
    #[tokio::test]
    async fn with_the_whole_fleet_allowed_both_groups_go_in_one_run() {
        let w = world(
            &[("NBAOPS_GUARD__BLAST__MAX_PERCENT", "100")],
            Some("2026-12-25,12:00,high\n"),
        );
        let (pre, back) = planned(&w).await;
        let r = run(&w, pre.input.clone(), pre.at).await;
        assert_eq!(
            w.asg.mutations(),
            vec![
                "set_desired_capacity nbaops-dev-web 4",
                "set_desired_capacity nbaops-dev-worker 3",
            ],
            "{:?}",
            r.records
        );
        assert!(r.records[0]
            .actions
            .iter()
            .all(|a| a.outcome == Outcome::Acted));
        run(&w, back.input.clone(), back.at).await;
        assert_eq!(
            w.asg.mutations()[2..],
            [
                "set_desired_capacity nbaops-dev-web 2",
                "set_desired_capacity nbaops-dev-worker 2",
            ]
        );
        assert!(follow_ups(&w).is_empty(), "{:?}", w.scheduler.mutations());
    }

    /// Follow-ups stop at tip-off (pre-scale) and after MAX_STEPS; a busy group is left for one.
    #[tokio::test]
    async fn follow_ups_end_with_the_window_and_the_step_bound() {
        let w = world(&[], Some("2026-12-25,12:00,high\n"));
        let (pre, _) = planned(&w).await;
        // Delivered 30 s before tip-off: web goes up, the worker's follow-up would be after it.
        let tipoff = utc("2026-12-25T17:00:00Z");
        let r = run(&w, pre.input.clone(), tipoff - Duration::seconds(30)).await;
        assert_eq!(w.asg.mutations().len(), 1);
        assert!(follow_ups(&w).is_empty());
        assert!(
            r.records[0]
                .notes
                .iter()
                .any(|n| n.contains("nbaops-dev-worker left as they are") && n.contains("window")),
            "{:?}",
            r.records[0].notes
        );
        // The last follow-up schedules no other.
        let mut last = pre.input.clone();
        last["nbaops"]["step"] = json!(MAX_STEPS);
        w.asg
            .groups
            .lock()
            .unwrap()
            .get_mut("nbaops-dev-worker")
            .unwrap()
            .activity_in_progress = true;
        let r = run(&w, last, pre.at).await;
        assert_eq!(w.asg.mutations().len(), 1, "{:?}", r.records);
        assert!(follow_ups(&w).is_empty());
        let notes = r.records[0].notes.join(" | ");
        assert!(notes.contains("scaling activity is in progress"), "{notes}");
        assert!(notes.contains("the last one"), "{notes}");
        // A busy group before that is left for the next step.
        let mut nine = pre.input.clone();
        nine["nbaops"]["step"] = json!(MAX_STEPS - 1);
        run(&w, nine, pre.at).await;
        assert_eq!(
            follow_ups(&w),
            vec![format!(
                "create_once default/game-night-prescale-2026-12-25-step-{MAX_STEPS} at(2026-12-25T16:01:00)"
            )]
        );
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
        let step1 = schedule(&w, "game-night-prescale-2026-12-25-step-1");
        run(&w, step1.input.clone(), step1.at).await;
        assert_eq!(w.asg.mutations().len(), 2);
        let off_peak = |id: &str| json!({"nbaops": {"task": "off-peak-scale-in", "id": id}});
        let r = run(&w, off_peak("op-1"), utc("2026-12-25T18:00:00Z")).await;
        assert_eq!(w.asg.mutations().len(), 2, "{:?}", r.records);
        assert!(
            r.records[0].notes[0].contains("game night of 2026-12-25"),
            "{:?}",
            r.records
        );
        // After the return time it runs as usual (one checked step down: the CPU was low).
        for g in ["nbaops-dev-web", "nbaops-dev-worker"] {
            let quiet: Vec<_> = (1..=15)
                .map(|m| (utc("2026-12-25T20:44:00Z") + Duration::minutes(m), 10.0))
                .collect();
            w.cw.add_points(
                "AWS/EC2",
                "CPUUtilization",
                &[("AutoScalingGroupName", g)],
                &quiet,
            );
        }
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
        // Dry-run: the plan schedules nothing and records nothing as planned (a live run later
        // plans the slate for real); the pre-scale is decided and audited, not done.
        let w = world(
            &[("NBAOPS_GUARD__DRY_RUN", "true")],
            Some("2026-12-25,12:00,high\n"),
        );
        let r = run(&w, plan_input("dry"), christmas_eve_morning()).await;
        assert!(
            w.scheduler.mutations().is_empty(),
            "{:?}",
            r.records[0].notes
        );
        assert_eq!(w.ledger.len_with_prefix(PLANNED_PK), 0);
        let would: Vec<&String> = r.records[0]
            .notes
            .iter()
            .filter(|n| n.starts_with("dry-run: would schedule 2026-12-25: game-night-"))
            .collect();
        assert_eq!(would.len(), 2, "{:?}", r.records[0].notes);
        let r = run(&w, pre.input.clone(), pre.at).await;
        assert!(w.asg.mutations().is_empty());
        assert_eq!(r.records[0].actions[0].outcome, Outcome::WouldAct);
        // (the worker, stopped by the blast radius in dry-run, is not left for a follow-up)
        assert!(
            w.scheduler.mutations().is_empty(),
            "{:?}",
            r.records[0].notes
        );
    }

    #[tokio::test]
    async fn a_follow_up_with_a_bad_step_is_not_for_me() {
        let w = world(&[], Some("2026-12-25,12:00,high\n"));
        let (pre, _) = planned(&w).await;
        for step in [json!(0), json!(MAX_STEPS + 1), json!("1"), json!(-1)] {
            let mut bad = pre.input.clone();
            bad["nbaops"]["step"] = step.clone();
            let r = run(&w, bad, pre.at).await;
            assert!(
                r.records[0]
                    .not_for_me
                    .as_deref()
                    .is_some_and(|n| n.contains("nbaops.step")),
                "{step}: {:?}",
                r.records[0]
            );
        }
        assert!(w.asg.mutations().is_empty());
        assert!(follow_ups(&w).is_empty());
    }
}

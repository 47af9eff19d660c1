//! Running the sets at an instant. Within one set (same environment, same schedule): on a
//! stop, groups first (their size saved, then 0/0/0) and databases only once every group is
//! down; on a start, databases first and groups restored only once every database is
//! `available` (a later tick continues, never a sleep); the Lambda deadline is checked before
//! each resource. Each resource is brought to what its schedule says: its state loaded, its
//! step planned ([`plan_resource`]), the stop or start done through the guard, the state
//! remembered, and divergences and failures alerted (once per transition).

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

use nbaops_shared::alerts::{Alert, Severity};
use nbaops_shared::deadline::{Budget, MARGIN, ONE_AWS_ACTION};
use nbaops_shared::guard::{
    AuditRecord, Bounds, Explanation, Observation, Outcome, ProposedAction,
};
use nbaops_shared::runtime::Work;
use nbaops_shared::Result;

use crate::handler::{Offhours, FUNCTION};
use crate::inventory::{ScheduledResource, SetKey};
use crate::plan::{plan_resource, Policy, ResourcePlan, ResourceState, SetContext, Step};
use crate::schedule::{last_transition, next_transition, Power, Transition};
use crate::state;

/// What a schedule says at the instant a run evaluates it.
struct ScheduleVerdict<'a> {
    /// The schedule's last transition at `at`.
    pub transition: Transition,
    /// The instant evaluated (the tick's, or the RDS event's).
    pub at: DateTime<Utc>,
    pub policy: Policy,
    /// The schedule's name.
    pub schedule: &'a str,
}

/// Where one resource stands after its run, for the ordering of its set.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Progress {
    /// In the state the schedule says (already, or acted).
    Reached,
    /// Dry-run: would have acted (the preview goes on as if it had).
    Previewed,
    NotYet,
}

/// Nothing in the set stops the resource: every group down, every database ready.
const UNCONSTRAINED: SetContext = SetContext {
    groups_down: true,
    dbs_ready: true,
};

impl Offhours {
    /// Every set of `sets` at `at`, within the Lambda deadline; what the deadline leaves is
    /// noted last.
    pub(crate) async fn run_sets<'s>(
        &self,
        sets: impl IntoIterator<Item = (&'s SetKey, &'s Vec<ScheduledResource>)>,
        at: DateTime<Utc>,
        w: &mut Work<'_>,
    ) -> Result<()> {
        let mut budget = Budget::new(w.ctx.inv, MARGIN, ONE_AWS_ACTION);
        for (set, members) in sets {
            self.run_set(set, members, at, &mut budget, w).await?;
        }
        w.rec.notes.extend(budget.report());
        Ok(())
    }

    /// One set at `at`: the schedule's last transition, then groups before databases on a stop,
    /// databases before groups on a start. A member the Lambda deadline leaves is named in the
    /// budget's report, and so is every member after it.
    async fn run_set(
        &self,
        (env, name): &SetKey,
        members: &[ScheduledResource],
        at: DateTime<Utc>,
        budget: &mut Budget,
        w: &mut Work<'_>,
    ) -> Result<()> {
        let Some(schedule) = self.cfg.schedules.get(name) else {
            return Ok(());
        };
        let Some(t) = last_transition(schedule, at) else {
            w.note(format!(
                "schedule '{}' ({env}): no transition in the last three weeks: nothing to do",
                schedule.name
            ));
            return Ok(());
        };
        let next = next_transition(schedule, at)
            .map(|n| {
                format!(
                    ", next {} at {}",
                    n.power.state_name(),
                    n.at.format("%Y-%m-%d %H:%M UTC")
                )
            })
            .unwrap_or_default();
        w.note(format!(
            "schedule '{}' ({env}, {}): {} since {}{next}",
            schedule.name,
            schedule.tz.name(),
            t.power.state_name(),
            t.at.format("%Y-%m-%d %H:%M UTC")
        ));
        let verdict = ScheduleVerdict {
            transition: t,
            at,
            policy: Policy {
                enforce: self.cfg.enforce,
                two_sided: schedule.two_sided(),
                start_grace: Duration::minutes(self.cfg.start_grace_minutes),
            },
            schedule: &schedule.name,
        };
        let (groups, dbs): (Vec<&ScheduledResource>, Vec<&ScheduledResource>) =
            members.iter().partition(|m| !m.is_db());
        match t.power {
            Power::Off => {
                let mut all_down = true;
                for m in groups {
                    if !budget.admit(&m.resource) {
                        all_down = false;
                        continue;
                    }
                    let progress = self
                        .bring_to_schedule(m, UNCONSTRAINED, &[], &verdict, w)
                        .await?;
                    all_down &= progress != Progress::NotYet;
                }
                let set = SetContext {
                    groups_down: all_down,
                    dbs_ready: true,
                };
                for m in dbs {
                    if budget.admit(&m.resource) {
                        self.bring_to_schedule(m, set, &[], &verdict, w).await?;
                    }
                }
            }
            Power::On => {
                let mut dbs_seen = Vec::new();
                let mut all_ready = true;
                for m in dbs {
                    if !budget.admit(&m.resource) {
                        all_ready = false;
                        continue;
                    }
                    let progress = self
                        .bring_to_schedule(m, UNCONSTRAINED, &[], &verdict, w)
                        .await?;
                    // Described again after a start: the groups wait for `available`, not for the call.
                    let status = match self.rds.describe_instance(&m.name).await? {
                        Some(d) => d.status,
                        None => "missing".into(),
                    };
                    let is_ready = status == "available" || progress == Progress::Previewed;
                    if !is_ready {
                        w.note(format!("{}: '{status}': its groups wait", m.resource));
                    }
                    all_ready &= is_ready;
                    dbs_seen.push(json!({"db": m.resource, "status": status}));
                }
                let set = SetContext {
                    groups_down: true,
                    dbs_ready: all_ready,
                };
                for m in groups {
                    if budget.admit(&m.resource) {
                        self.bring_to_schedule(m, set, &dbs_seen, &verdict, w)
                            .await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Plans one resource, acts through the guard, remembers the outcome. `dbs_seen`: the
    /// databases of its set as described before a group is restored (the audit's `before`).
    async fn bring_to_schedule(
        &self,
        m: &ScheduledResource,
        set: SetContext,
        dbs_seen: &[Value],
        verdict: &ScheduleVerdict<'_>,
        w: &mut Work<'_>,
    ) -> Result<Progress> {
        let t = verdict.transition;
        let first_action = w.rec.actions.len();
        let Some(mut state) = state::load(w, &m.resource, verdict.at).await? else {
            return Ok(Progress::NotYet);
        };
        let fresh = state.acted.is_none_or(|a| a.at < t.at);
        let ResourcePlan { step, alert } =
            plan_resource(t, &state, &m.observed, set, verdict.policy, verdict.at);
        if let Some(summary) = alert {
            self.raise(m, &summary, self.cfg.alert_severity, verdict, None, w)
                .await?;
            state.alerted = Some(t.at);
        }
        let reason = format!(
            "schedule '{}' says {} since {}",
            verdict.schedule,
            t.power.state_name(),
            t.at.format("%Y-%m-%d %H:%M UTC")
        );
        // SPEC 6: non-production stopped when unused, by its schedule (tag).
        let because = Explanation::new(
            "",
            "",
            "",
            format!(
                "SPEC 6 cost: schedule '{}' says {} since {}",
                verdict.schedule,
                t.power.state_name(),
                t.at.format("%Y-%m-%d %H:%M UTC")
            ),
        )
        .observe(Observation::value(
            "minutes since the transition",
            (verdict.at - t.at).num_minutes() as f64,
            "",
        ))
        .key("offhours.schedules")
        .key("offhours.schedule_tag")
        .key("offhours.envs");
        let ledger = w.ctx.deps.ledger.as_ref();
        let origin = w.ctx.origin;
        let progress = match step {
            Step::Hold(why) => {
                w.note(format!("{}: {why}", m.resource));
                state.waiting = Some(why);
                Progress::NotYet
            }
            Step::Satisfied(why) => {
                if fresh {
                    state.acted = Some(t);
                    if t.power == Power::On {
                        // Running when the schedule starts: any size saved earlier is stale.
                        state.saved = None;
                    }
                }
                state.waiting = None;
                w.note(format!("{}: {why}", m.resource));
                Progress::Reached
            }
            Step::StopGroup { save } => {
                let action = self.proposed(
                    m,
                    "asg.offhours_stop",
                    (
                        &reason,
                        because.doing(
                            "stop",
                            "Stopped",
                            format!("{} {} → 0", m.name, save.desired),
                        ),
                    ),
                    Some(Bounds {
                        proposed: 0.0,
                        min: 0.0,
                        max: save.desired as f64,
                    }),
                    json!({"min": save.min, "max": save.max, "desired": save.desired}),
                    json!({"min": 0, "max": 0, "desired": 0, "saved": save, "transition": t}),
                );
                let mut with_size = state.clone();
                with_size.saved = Some(save);
                let audit = w
                    .act(&action, || async {
                        // Saved before the change: the size it had when it stopped is what comes back.
                        state::save(ledger, origin, &m.resource, &with_size).await?;
                        self.asg.update_group_size(&m.name, 0, 0, 0).await
                    })
                    .await?;
                settle(&audit, &mut state, t, w, |s| s.saved = Some(save))
            }
            Step::RestoreGroup { to } => {
                let action = self.proposed(
                    m,
                    "asg.offhours_start",
                    (
                        &reason,
                        because.doing("start", "Started", format!("{} 0 → {}", m.name, to.desired)),
                    ),
                    Some(Bounds {
                        proposed: to.desired as f64,
                        min: to.min as f64,
                        max: to.max as f64,
                    }),
                    json!({"min": 0, "max": 0, "desired": 0, "databases": dbs_seen}),
                    json!({"min": to.min, "max": to.max, "desired": to.desired, "transition": t}),
                );
                let audit = w
                    .act(&action, || {
                        self.asg
                            .update_group_size(&m.name, to.min, to.max, to.desired)
                    })
                    .await?;
                settle(&audit, &mut state, t, w, |s| s.saved = None)
            }
            Step::StopDb => {
                let action = self.proposed(
                    m,
                    "rds.offhours_stop",
                    (&reason, because.doing("stop", "Stopped", m.name.clone())),
                    None,
                    json!({"status": "available", "auto_started_at": state.auto_started_at}),
                    json!({"status": "stopped", "transition": t}),
                );
                let audit = w.act(&action, || self.power.stop_instance(&m.name)).await?;
                settle(&audit, &mut state, t, w, |s| {
                    s.auto_started_at = None;
                    s.started_at = None;
                })
            }
            Step::StartDb => {
                let action = self.proposed(
                    m,
                    "rds.offhours_start",
                    (&reason, because.doing("start", "Started", m.name.clone())),
                    None,
                    json!({"status": "stopped"}),
                    json!({"status": "available", "transition": t}),
                );
                let audit = w
                    .act(&action, || self.power.start_instance(&m.name))
                    .await?;
                let at = verdict.at;
                settle(&audit, &mut state, t, w, |s| s.started_at = Some(at))
            }
        };
        let failed = w.rec.actions[first_action..]
            .iter()
            .find(|a| a.outcome == Outcome::Failed)
            .cloned();
        if let Some(failed) = failed {
            if state.alerted != Some(t.at) {
                let summary = format!(
                    "{} failed: {}",
                    failed.action,
                    failed.error.as_deref().unwrap_or("?")
                );
                // An action that failed after the SDK's retries is a P2 (or the configured
                // severity, if that is higher): the resource is left in neither state.
                let severity = self.cfg.alert_severity.min(Severity::P2);
                self.raise(m, &summary, severity, verdict, Some(&failed.sentence), w)
                    .await?;
                state.alerted = Some(t.at);
            }
        }
        state::save(ledger, origin, &m.resource, &state).await?;
        Ok(progress)
    }

    fn proposed(
        &self,
        m: &ScheduledResource,
        action: &str,
        (reason, explanation): (&str, Explanation),
        bounds: Option<Bounds>,
        before: Value,
        after: Value,
    ) -> ProposedAction {
        ProposedAction {
            action: action.into(),
            resource: m.resource.clone(),
            tags: m.tags.clone(),
            reason: reason.into(),
            severity: Severity::P4,
            // Opted in by its schedule tag, in a non-production environment.
            disruptive: false,
            bounds,
            cooldown_key: "offhours".into(),
            cooldown_seconds: self.cfg.cooldown_seconds,
            before,
            after,
            explanation,
        }
    }

    /// An alert about one resource: in the resource's own environment (its tag), at the instant
    /// evaluated, keyed by the transition (one incident per resource and transition). `sentence`:
    /// the audit record's sentence of the action it is about, as its action line.
    async fn raise(
        &self,
        m: &ScheduledResource,
        summary: &str,
        severity: Severity,
        verdict: &ScheduleVerdict<'_>,
        sentence: Option<&str>,
        w: &mut Work<'_>,
    ) -> Result<()> {
        let t = verdict.transition;
        let alert = Alert::new(
            severity,
            &m.env.to_string(),
            FUNCTION,
            &m.resource,
            format!("offhours#{}#{}", m.resource, t.at.to_rfc3339()),
            format!("{} ({}): {summary}", m.resource, m.env),
            verdict.at,
        )
        .with_details(json!({
            "schedule": verdict.schedule,
            "schedule_says": t.power.state_name(),
            "since": t.at,
            "enforce": self.cfg.enforce,
        }))
        .with_runbook(format!(
            "Bring {} to the state you want by hand, or tag it {}=true to take it off its schedule.",
            m.resource, self.cfg.opt_out_tag
        ));
        let alert = match sentence {
            Some(s) => alert.with_action(s),
            None => alert,
        };
        w.raise(alert).await
    }
}

/// Notes the audit (already recorded by the guard); an acted (or dry-run) change counts as
/// reaching the schedule's state, and only an acted one is remembered as done.
fn settle(
    audit: &AuditRecord,
    state: &mut ResourceState,
    t: Transition,
    w: &mut Work<'_>,
    on_acted: impl FnOnce(&mut ResourceState),
) -> Progress {
    w.note(format!(
        "{}: {}: {}",
        audit.resource,
        audit.action,
        audit.outcome_words()
    ));
    match audit.outcome {
        Outcome::Acted => {
            state.acted = Some(t);
            state.waiting = None;
            on_acted(state);
            Progress::Reached
        }
        Outcome::WouldAct => Progress::Previewed,
        _ => Progress::NotYet,
    }
}

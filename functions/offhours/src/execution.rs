//! One resource brought to what its schedule says: its state loaded, its step planned
//! ([`plan_resource`]), the stop or start done through the guard, the state remembered, and
//! divergences and failures alerted (once per transition).

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use nbaops_shared::alerts::{Alert, Severity};
use nbaops_shared::guard::{AuditRecord, Bounds, Outcome, ProposedAction};
use nbaops_shared::runtime::Work;
use nbaops_shared::Result;

use crate::handler::{Offhours, FUNCTION};
use crate::inventory::ScheduledResource;
use crate::plan::{plan_resource, Policy, ResourcePlan, ResourceState, SetContext, Step};
use crate::schedule::{Power, Transition};
use crate::state;

/// What a schedule says at the instant a run evaluates it.
pub struct ScheduleVerdict<'a> {
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
pub enum Progress {
    /// In the state the schedule says (already, or acted).
    Reached,
    /// Dry-run: would have acted (the preview goes on as if it had).
    Previewed,
    NotYet,
}

impl Offhours {
    /// Plans one resource, acts through the guard, remembers the outcome. `dbs_seen`: the
    /// databases of its set as described before a group is restored (the audit's `before`).
    pub(crate) async fn bring_to_schedule(
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
            self.raise(m, &summary, self.cfg.alert_severity, verdict, w)
                .await?;
            state.alerted = Some(t.at);
        }
        let reason = format!(
            "schedule '{}' says {} since {}",
            verdict.schedule,
            t.power.state_name(),
            t.at.format("%Y-%m-%d %H:%M UTC")
        );
        let ledger = w.ctx.deps.ledger.as_ref();
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
                    &reason,
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
                        state::save(ledger, &m.resource, &with_size).await?;
                        self.asg.update_group_size(&m.name, 0, 0, 0).await
                    })
                    .await?;
                settle(&audit, &mut state, t, w, |s| s.saved = Some(save))
            }
            Step::RestoreGroup { to } => {
                let action = self.proposed(
                    m,
                    "asg.offhours_start",
                    &reason,
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
                    &reason,
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
                    &reason,
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
                self.raise(m, &summary, severity, verdict, w).await?;
                state.alerted = Some(t.at);
            }
        }
        state::save(ledger, &m.resource, &state).await?;
        Ok(progress)
    }

    fn proposed(
        &self,
        m: &ScheduledResource,
        action: &str,
        reason: &str,
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
        }
    }

    /// An alert about one resource: in the resource's own environment (its tag), at the instant
    /// evaluated, keyed by the transition (one incident per resource and transition).
    async fn raise(
        &self,
        m: &ScheduledResource,
        summary: &str,
        severity: Severity,
        verdict: &ScheduleVerdict<'_>,
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

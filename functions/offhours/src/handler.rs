//! Translates the `offhours` Scheduler tick and RDS-EVENT-0154 (RDS started an instance by
//! itself after 7 days stopped) into guarded stops and starts of the tagged resources.
//!
//! Resources are found by tag (`offhours.schedule_tag`), grouped into sets (same environment,
//! same schedule) and ordered within a set: on a stop, groups first (their size saved, then
//! 0/0/0) and databases only once every group is down; on a start, databases first and groups
//! restored only once every database is `available` (a later tick continues, never a sleep).

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

use nbaops_shared::adapters::{AwsClients, SdkInventory, SdkRdsPower};
use nbaops_shared::alerts::{Alert, Severity};
use nbaops_shared::config::offhours::{self, OffhoursConfig, Schedule};
use nbaops_shared::config::Env;
use nbaops_shared::deadline::{Budget, MARGIN, ONE_AWS_ACTION};
use nbaops_shared::events::rds_catalog::{classify_rds_event, RdsEventKind};
use nbaops_shared::events::{classify, Inbound, RdsEvent, RdsSourceType, ScheduledTick};
use nbaops_shared::guard::{
    decode_state, report_unreadable_state, AuditRecord, Bounds, Guard, Outcome, ProposedAction,
};
use nbaops_shared::ports::{Inventory, RdsPower, Tags};
use nbaops_shared::runtime::{Deps, Invocation, InvocationReport, RecordReport};
use nbaops_shared::Result;

use crate::plan::{
    plan_resource, GroupSize, Observed, Policy, ResourcePlan, ResourceState, SetContext, Step,
};
use crate::schedule::{last_transition, next_transition, Power, Transition};

pub const FUNCTION: &str = "offhours";
/// Scheduler input `{"nbaops": {"task": "offhours", "at"?: "...", "env"?: "test"}}`.
pub const TASK: &str = "offhours";

pub struct OffhoursDeps {
    pub cfg: OffhoursConfig,
    pub inventory: Box<dyn Inventory>,
    pub power: Box<dyn RdsPower>,
}

/// Init: the `offhours` section validated (prod refused unless allowed), the tag inventory and
/// the RDS stop/start adapters.
pub fn build(deps: &Deps, aws: &AwsClients) -> Result<OffhoursDeps> {
    Ok(OffhoursDeps {
        cfg: offhours::from_settings(&deps.cfg.settings)?,
        inventory: Box::new(SdkInventory {
            asg: aws.autoscaling(),
            rds: aws.rds(),
        }),
        power: Box::new(SdkRdsPower(aws.rds())),
    })
}

pub async fn handle(
    payload: Value,
    inv: Invocation,
    deps: &'static Deps,
    x: &'static OffhoursDeps,
) -> Result<InvocationReport> {
    let mut report = InvocationReport {
        function: FUNCTION.into(),
        env: deps.cfg.env.to_string(),
        records: vec![],
    };
    for inbound in classify(&payload) {
        let rec = match inbound {
            Inbound::Schedule(t) if t.task().as_deref() == Some(TASK) => {
                on_tick(&t, &inv, deps, x).await?
            }
            Inbound::Rds(ev)
                if classify_rds_event(&ev).kind == RdsEventKind::AutoStartAfter7Days
                    && ev.source_type == RdsSourceType::Instance =>
            {
                on_auto_start(&ev, &inv, deps, x).await?
            }
            Inbound::NotForMe(n) => RecordReport::not_for_me("", "unknown", n.reason),
            other => RecordReport::not_for_me(
                other.event_id().unwrap_or(""),
                other.kind(),
                format!("{FUNCTION} takes the '{TASK}' schedule and RDS-EVENT-0154 (DB instance started after 7 days stopped)"),
            ),
        };
        report.records.push(rec);
    }
    Ok(report)
}

/// One scheduled resource as seen now.
#[derive(Debug, Clone)]
struct Member {
    /// `asg:<name>` or `rds:<id>`.
    resource: String,
    name: String,
    env: Env,
    tags: Tags,
    observed: Observed,
}

impl Member {
    fn is_db(&self) -> bool {
        matches!(self.observed, Observed::Db(_))
    }
}

/// Resources sharing an environment and a schedule, keyed by (env, schedule name).
type Sets = BTreeMap<(String, String), Vec<Member>>;

fn state_pk(resource: &str) -> String {
    format!("offhours#{resource}")
}

/// The resource's state as stored (default when there is none). An item this version cannot
/// read is a P2 and `None`: the caller does not act on that resource.
async fn load_state(
    deps: &Deps,
    resource: &str,
    now: chrono::DateTime<chrono::Utc>,
    rec: &mut RecordReport,
) -> Result<Option<ResourceState>> {
    match decode_state(deps.ledger.get(&state_pk(resource), "state").await?) {
        Ok(s) => Ok(Some(s.unwrap_or_default())),
        Err(e) => {
            let (note, alert) = report_unreadable_state(
                &deps.cfg,
                deps.notifier.as_ref(),
                resource,
                "offhours state",
                &e,
                now,
            )
            .await?;
            rec.notes.push(note);
            rec.alerts.push(alert);
            Ok(None)
        }
    }
}

async fn save_state(deps: &Deps, resource: &str, s: &ResourceState) -> Result<()> {
    let v = serde_json::to_value(s).unwrap_or(Value::Null);
    deps.ledger
        .put(&state_pk(resource), "state", &v, None)
        .await
}

/// Which set a tagged resource belongs to, or why it is left alone.
fn admit(
    x: &OffhoursDeps,
    resource: &str,
    tags: &Tags,
    only_env: Option<Env>,
) -> std::result::Result<(Env, String), Option<String>> {
    let cfg = &x.cfg;
    let schedule = tags
        .get(&cfg.schedule_tag)
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    if cfg.opted_out(tags) {
        return Err(Some(format!("{resource}: opted out ({})", cfg.opt_out_tag)));
    }
    let Some(env) = tags.get(&cfg.env_tag).and_then(|e| Env::from_str(e).ok()) else {
        return Err(Some(format!(
            "{resource}: no valid '{}' tag (dev, test or prod): refused, never scheduled blind",
            cfg.env_tag
        )));
    };
    if only_env.is_some_and(|o| o != env) {
        return Err(None);
    }
    if !cfg.may_schedule(env) {
        return Err(Some(format!(
            "{resource}: environment {env} is not in offhours.envs{}: left alone",
            if env == Env::Prod {
                " (prod needs offhours.allow_prod)"
            } else {
                ""
            }
        )));
    }
    if !cfg.schedules.contains_key(&schedule) {
        return Err(Some(format!(
            "{resource}: schedule '{schedule}' is not defined in offhours.schedules: left alone"
        )));
    }
    Ok((env, schedule))
}

async fn discover(
    x: &OffhoursDeps,
    only_env: Option<Env>,
    notes: &mut Vec<String>,
) -> Result<Sets> {
    let mut sets = Sets::new();
    let tag = &x.cfg.schedule_tag;
    let mut push = |resource: String, name: String, tags: Tags, observed: Observed| match admit(
        x, &resource, &tags, only_env,
    ) {
        Ok((env, schedule)) => sets
            .entry((env.to_string(), schedule))
            .or_default()
            .push(Member {
                resource,
                name,
                env,
                tags,
                observed,
            }),
        Err(Some(why)) => notes.push(why),
        Err(None) => {}
    };
    for g in x.inventory.list_groups_with_tag(tag).await? {
        let size = GroupSize {
            min: g.min_size,
            max: g.max_size,
            desired: g.desired,
        };
        push(
            format!("asg:{}", g.name),
            g.name,
            g.tags,
            Observed::Group(size),
        );
    }
    for d in x.inventory.list_db_instances_with_tag(tag).await? {
        push(
            format!("rds:{}", d.id),
            d.id,
            d.tags,
            Observed::Db(d.status),
        );
    }
    Ok(sets)
}

async fn on_tick(
    t: &ScheduledTick,
    inv: &Invocation,
    deps: &Deps,
    x: &OffhoursDeps,
) -> Result<RecordReport> {
    let mut rec = RecordReport {
        event_id: t.event_id.clone(),
        kind: "schedule".into(),
        ..Default::default()
    };
    let only_env = match t.param("env") {
        Some(e) => match Env::from_str(&e) {
            Ok(env) => Some(env),
            Err(_) => {
                return Ok(RecordReport::not_for_me(
                    &t.event_id,
                    "schedule",
                    format!("offhours tick for unknown environment '{e}'"),
                ))
            }
        },
        None => None,
    };
    if let Some(a) = t.param("action") {
        rec.notes.push(format!(
            "tick action '{a}' ignored: the schedules decide what each resource should be"
        ));
    }
    let sets = discover(x, only_env, &mut rec.notes).await?;
    let in_view: usize = sets.values().map(Vec::len).sum();
    let mut guard = deps.guard(&t.event_id, inv).with_fleet_size(in_view);
    let mut budget = Budget::new(inv, MARGIN, ONE_AWS_ACTION);
    for ((env, name), members) in &sets {
        if let Some(schedule) = x.cfg.schedules.get(name) {
            let run = (t.at, &mut guard, &mut budget);
            run_set(env, schedule, members, run, deps, x, &mut rec).await?;
        }
    }
    rec.notes.extend(budget.report());
    rec.summary = summary(&rec, in_view, t.at);
    Ok(rec)
}

fn summary(rec: &RecordReport, in_view: usize, at: DateTime<Utc>) -> String {
    let acted = rec
        .actions
        .iter()
        .filter(|a| a.outcome == Outcome::Acted)
        .count();
    format!(
        "offhours at {}: {in_view} scheduled resource(s) in view, {acted} action(s) taken, {} alert(s)",
        at.format("%Y-%m-%d %H:%M UTC"),
        rec.alerts.len()
    )
}

/// RDS started a stopped instance by itself: remember it, then bring its set back to its
/// schedule (a database the schedule says is off is stopped again once available).
async fn on_auto_start(
    ev: &RdsEvent,
    inv: &Invocation,
    deps: &Deps,
    x: &OffhoursDeps,
) -> Result<RecordReport> {
    let mut rec = RecordReport {
        event_id: ev.event_id.clone(),
        kind: "rds".into(),
        ..Default::default()
    };
    let resource = format!("rds:{}", ev.source_id);
    let mut notes = Vec::new();
    let sets = discover(x, None, &mut notes).await?;
    let found = sets
        .iter()
        .find(|(_, ms)| ms.iter().any(|m| m.resource == resource));
    let Some(((env, name), members)) = found else {
        rec.notes
            .extend(notes.into_iter().filter(|n| n.starts_with(&resource)));
        rec.summary = format!(
            "{resource} started after 7 days stopped, but it is not scheduled by offhours: left running"
        );
        return Ok(rec);
    };
    let Some(mut state) = load_state(deps, &resource, ev.at, &mut rec).await? else {
        return Ok(rec);
    };
    state.auto_started_at = Some(ev.at);
    save_state(deps, &resource, &state).await?;
    rec.notes.push(format!(
        "{resource}: RDS started it after 7 days stopped (RDS-EVENT-0154 at {})",
        ev.at.to_rfc3339()
    ));
    let mut guard = deps.guard(&ev.event_id, inv).with_fleet_size(members.len());
    let mut budget = Budget::new(inv, MARGIN, ONE_AWS_ACTION);
    if let Some(schedule) = x.cfg.schedules.get(name) {
        let run = (ev.at, &mut guard, &mut budget);
        run_set(env, schedule, members, run, deps, x, &mut rec).await?;
    }
    rec.notes.extend(budget.report());
    rec.summary = format!(
        "{resource} auto-started after 7 days stopped; {}",
        summary(&rec, members.len(), ev.at)
    );
    Ok(rec)
}

/// What happened to one resource, for the ordering of its set.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Done {
    /// In the state the schedule says (already, or acted).
    Reached,
    /// Dry-run: would have acted (the preview goes on as if it had).
    Would,
    NotYet,
}

/// One set at `at`: the schedule's last transition, then groups before databases on a stop,
/// databases before groups on a start. A member the Lambda deadline leaves is named in the
/// budget's report, and so is every member that waits for it (a database whose groups were not
/// all stopped, groups whose database was not started).
#[allow(clippy::too_many_arguments)]
async fn run_set(
    env: &str,
    schedule: &Schedule,
    members: &[Member],
    (at, guard, budget): (DateTime<Utc>, &mut Guard<'_>, &mut Budget),
    deps: &Deps,
    x: &OffhoursDeps,
    rec: &mut RecordReport,
) -> Result<()> {
    let Some(t) = last_transition(schedule, at) else {
        rec.notes.push(format!(
            "schedule '{}' ({env}): no transition in the last three weeks: nothing to do",
            schedule.name
        ));
        return Ok(());
    };
    let next = next_transition(schedule, at)
        .map(|n| {
            format!(
                ", next {} at {}",
                words(n.power),
                n.at.format("%Y-%m-%d %H:%M UTC")
            )
        })
        .unwrap_or_default();
    rec.notes.push(format!(
        "schedule '{}' ({env}, {}): {} since {}{next}",
        schedule.name,
        schedule.tz.name(),
        words(t.power),
        t.at.format("%Y-%m-%d %H:%M UTC")
    ));
    let policy = Policy {
        enforce: x.cfg.enforce,
        two_sided: schedule.two_sided(),
        start_grace: Duration::minutes(x.cfg.start_grace_minutes),
    };
    let (groups, dbs): (Vec<&Member>, Vec<&Member>) = members.iter().partition(|m| !m.is_db());
    let ctx = Ctx {
        t,
        at,
        policy,
        schedule: &schedule.name,
    };
    match t.power {
        Power::Off => {
            let mut all_down = true;
            for m in &groups {
                if !budget.admit(&m.resource) {
                    all_down = false;
                    continue;
                }
                let set = SetContext {
                    groups_down: true,
                    dbs_ready: true,
                };
                let done = one(m, set, &[], &ctx, guard, deps, x, rec).await?;
                all_down &= done != Done::NotYet;
            }
            for m in &dbs {
                if !budget.admit(&m.resource) {
                    continue;
                }
                let set = SetContext {
                    groups_down: all_down,
                    dbs_ready: true,
                };
                one(m, set, &[], &ctx, guard, deps, x, rec).await?;
            }
        }
        Power::On => {
            let mut ready = Vec::new();
            let mut all_ready = true;
            for m in &dbs {
                if !budget.admit(&m.resource) {
                    all_ready = false;
                    continue;
                }
                let set = SetContext {
                    groups_down: true,
                    dbs_ready: true,
                };
                let done = one(m, set, &[], &ctx, guard, deps, x, rec).await?;
                // Described again after a start: the groups wait for `available`, not for the call.
                let status = match deps.rds.describe_instance(&m.name).await? {
                    Some(d) => d.status,
                    None => "missing".into(),
                };
                let is_ready = status == "available" || done == Done::Would;
                if !is_ready {
                    rec.notes
                        .push(format!("{}: '{status}': its groups wait", m.resource));
                }
                all_ready &= is_ready;
                ready.push(json!({"db": m.resource, "status": status}));
            }
            for m in &groups {
                if !budget.admit(&m.resource) {
                    continue;
                }
                let set = SetContext {
                    groups_down: true,
                    dbs_ready: all_ready,
                };
                one(m, set, &ready, &ctx, guard, deps, x, rec).await?;
            }
        }
    }
    Ok(())
}

fn words(p: Power) -> &'static str {
    match p {
        Power::On => "running",
        Power::Off => "stopped",
    }
}

struct Ctx<'a> {
    t: Transition,
    at: DateTime<Utc>,
    policy: Policy,
    schedule: &'a str,
}

/// Plans one resource, acts through the guard, remembers the outcome.
#[allow(clippy::too_many_arguments)]
async fn one(
    m: &Member,
    set: SetContext,
    dbs_seen: &[Value],
    ctx: &Ctx<'_>,
    guard: &mut Guard<'_>,
    deps: &Deps,
    x: &OffhoursDeps,
    rec: &mut RecordReport,
) -> Result<Done> {
    let t = ctx.t;
    let first_action = rec.actions.len();
    let Some(mut state) = load_state(deps, &m.resource, ctx.at, rec).await? else {
        return Ok(Done::NotYet);
    };
    let fresh = state.acted.is_none_or(|a| a.at < t.at);
    let ResourcePlan { step, alert } =
        plan_resource(t, &state, &m.observed, set, ctx.policy, ctx.at);
    if let Some(summary) = alert {
        raise(m, &summary, x.cfg.alert_severity, ctx, deps, x, rec).await?;
        state.alerted = Some(t.at);
    }
    let reason = format!(
        "schedule '{}' says {} since {}",
        ctx.schedule,
        words(t.power),
        t.at.format("%Y-%m-%d %H:%M UTC")
    );
    let done = match step {
        Step::Hold(why) => {
            rec.notes.push(format!("{}: {why}", m.resource));
            state.waiting = Some(why);
            Done::NotYet
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
            rec.notes.push(format!("{}: {why}", m.resource));
            Done::Reached
        }
        Step::StopGroup { save } => {
            let action = proposed(
                m,
                "asg.offhours_stop",
                &reason,
                x,
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
            let audit = guard
                .run(&action, || async {
                    // Saved before the change: the size it had when it stopped is what comes back.
                    save_state(deps, &m.resource, &with_size).await?;
                    deps.asg.update_group_size(&m.name, 0, 0, 0).await
                })
                .await?;
            settle(audit, &mut state, t, rec, |s| {
                s.saved = Some(save);
            })
        }
        Step::RestoreGroup { to } => {
            let action = proposed(
                m,
                "asg.offhours_start",
                &reason,
                x,
                Some(Bounds {
                    proposed: to.desired as f64,
                    min: to.min as f64,
                    max: to.max as f64,
                }),
                json!({"min": 0, "max": 0, "desired": 0, "databases": dbs_seen}),
                json!({"min": to.min, "max": to.max, "desired": to.desired, "transition": t}),
            );
            let audit = guard
                .run(&action, || {
                    deps.asg
                        .update_group_size(&m.name, to.min, to.max, to.desired)
                })
                .await?;
            settle(audit, &mut state, t, rec, |s| s.saved = None)
        }
        Step::StopDb => {
            let action = proposed(
                m,
                "rds.offhours_stop",
                &reason,
                x,
                None,
                json!({"status": "available", "auto_started_at": state.auto_started_at}),
                json!({"status": "stopped", "transition": t}),
            );
            let audit = guard
                .run(&action, || x.power.stop_instance(&m.name))
                .await?;
            settle(audit, &mut state, t, rec, |s| {
                s.auto_started_at = None;
                s.started_at = None;
            })
        }
        Step::StartDb => {
            let action = proposed(
                m,
                "rds.offhours_start",
                &reason,
                x,
                None,
                json!({"status": "stopped"}),
                json!({"status": "available", "transition": t}),
            );
            let audit = guard
                .run(&action, || x.power.start_instance(&m.name))
                .await?;
            let at = ctx.at;
            settle(audit, &mut state, t, rec, |s| s.started_at = Some(at))
        }
    };
    if let Some(failed) = rec.actions[first_action..]
        .iter()
        .find(|a| a.outcome == Outcome::Failed)
        .cloned()
    {
        if state.alerted != Some(t.at) {
            let summary = format!(
                "{} failed: {}",
                failed.action,
                failed.error.as_deref().unwrap_or("?")
            );
            // An action that failed after the SDK's retries is a P2 (or the configured
            // severity, if that is higher): the resource is left in neither state.
            let severity = x.cfg.alert_severity.min(Severity::P2);
            raise(m, &summary, severity, ctx, deps, x, rec).await?;
            state.alerted = Some(t.at);
        }
    }
    save_state(deps, &m.resource, &state).await?;
    Ok(done)
}

/// Records the audit; an acted (or dry-run) change counts as reaching the schedule's state,
/// and only an acted one is remembered as done.
fn settle(
    audit: AuditRecord,
    state: &mut ResourceState,
    t: Transition,
    rec: &mut RecordReport,
    on_acted: impl FnOnce(&mut ResourceState),
) -> Done {
    let words = audit.outcome_words();
    rec.notes
        .push(format!("{}: {}: {words}", audit.resource, audit.action));
    let done = match audit.outcome {
        Outcome::Acted => {
            state.acted = Some(t);
            state.waiting = None;
            on_acted(state);
            Done::Reached
        }
        Outcome::WouldAct => Done::Would,
        _ => Done::NotYet,
    };
    rec.actions.push(audit);
    done
}

fn proposed(
    m: &Member,
    action: &str,
    reason: &str,
    x: &OffhoursDeps,
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
        cooldown_seconds: x.cfg.cooldown_seconds,
        before,
        after,
    }
}

async fn raise(
    m: &Member,
    summary: &str,
    severity: Severity,
    ctx: &Ctx<'_>,
    deps: &Deps,
    x: &OffhoursDeps,
    rec: &mut RecordReport,
) -> Result<()> {
    let text = format!("{} ({}): {summary}", m.resource, m.env);
    let alert = Alert::new(
        severity,
        &m.env.to_string(),
        FUNCTION,
        &m.resource,
        format!("offhours#{}#{}", m.resource, ctx.t.at.to_rfc3339()),
        text,
        ctx.at,
    )
    .with_details(json!({
        "schedule": ctx.schedule,
        "schedule_says": words(ctx.t.power),
        "since": ctx.t.at,
        "enforce": x.cfg.enforce,
    }))
    .with_runbook(format!(
        "Bring {} to the state you want by hand, or tag it {}=true to take it off its schedule.",
        m.resource, x.cfg.opt_out_tag
    ));
    deps.alerts().publish(&alert).await?;
    rec.alerts.push(alert);
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use nbaops_shared::config::{layer, Config};
    use nbaops_shared::fakes::*;
    use nbaops_shared::guard::Switches;
    use nbaops_shared::ports::*;

    const AUTO_START: &str =
        include_str!("../../../events/rds/eventbridge-auto-start-after-7-days.json");
    const ALARM: &str =
        include_str!("../../../events/cloudwatch-alarm/eventbridge-single-metric-alarm.json");
    const OFFICE: &str = r#"{"office":{"tz":"Europe/Paris","periods":[{"days":["mon","tue","wed","thu","fri"],"start":"08:00","stop":"19:00"}],"holidays":["2026-12-04"]}}"#;
    const WEB: &str = "nbaops-dev-web";
    const DB: &str = "nbaops-dev-db";

    /// Stops and starts the instances of the `FakeRds` the inventory lists, so what the next
    /// describe sees follows; a start lands on `starting` until the test makes it available.
    struct Power {
        rds: &'static FakeRds,
        log: std::sync::Mutex<Vec<String>>,
        start_lands_on: &'static str,
    }
    #[async_trait::async_trait]
    impl RdsPower for Power {
        async fn stop_instance(&self, id: &str) -> Result<()> {
            set_status(self.rds, id, "stopped");
            self.log.lock().unwrap().push(format!("stop {id}"));
            Ok(())
        }
        async fn start_instance(&self, id: &str) -> Result<()> {
            set_status(self.rds, id, self.start_lands_on);
            self.log.lock().unwrap().push(format!("start {id}"));
            Ok(())
        }
    }

    fn set_status(rds: &FakeRds, id: &str, status: &str) {
        rds.instances.lock().unwrap().get_mut(id).unwrap().status = status.into();
    }

    struct World {
        deps: &'static Deps,
        x: &'static OffhoursDeps,
        asg: &'static FakeAutoScaling,
        rds: &'static FakeRds,
        power: &'static Power,
        notifier: &'static FakeNotifier,
        ledger: &'static FakeLedger,
    }

    impl World {
        /// Every AWS mutation, in order: group resizes and database stops/starts.
        fn mutations(&self) -> Vec<String> {
            let mut m = self.asg.mutations();
            m.extend(self.power.log.lock().unwrap().clone());
            m
        }
        fn size(&self) -> (i32, i32, i32) {
            let g = self.asg.groups.lock().unwrap()[WEB].clone();
            (g.min_size, g.max_size, g.desired)
        }
        fn set_size(&self, min: i32, max: i32, desired: i32) {
            let mut all = self.asg.groups.lock().unwrap();
            let g = all.get_mut(WEB).unwrap();
            (g.min_size, g.max_size, g.desired) = (min, max, desired);
        }
        fn db(&self) -> String {
            self.rds.instances.lock().unwrap()[DB].status.clone()
        }
        fn alerts(&self) -> usize {
            self.notifier
                .published()
                .iter()
                .filter(|p| p.topic_arn.ends_with("alerts"))
                .count()
        }
    }

    fn tags(extra: &[(&str, &str)]) -> Tags {
        let mut t = Tags::new();
        t.insert("env".into(), "dev".into());
        t.insert("nbaops:schedule".into(), "office".into());
        for (k, v) in extra {
            t.insert(k.to_string(), v.to_string());
        }
        t
    }

    fn world_with(
        extra: &[(&str, &str)],
        group_tags: &[(&str, &str)],
        db_tags: &[(&str, &str)],
        start_lands_on: &'static str,
    ) -> World {
        let mut pairs = vec![
            (
                "NBAOPS_ALERTS_TOPIC_ARN",
                "arn:aws:sns:us-east-1:123456789012:nbaops-dev-alerts",
            ),
            ("NBAOPS_OFFHOURS__SCHEDULES", OFFICE),
            ("NBAOPS_OFFHOURS__COOLDOWN_SECONDS", "0"),
            ("NBAOPS_GUARD__BLAST__MAX_PERCENT", "100"),
        ];
        pairs.extend_from_slice(extra);
        let vars = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let settings = layer(Env::Dev, &vars, &Default::default()).unwrap();
        let off_cfg = offhours::from_settings(&settings).unwrap();
        let cfg = Config::from_settings(Env::Dev, FUNCTION, settings).unwrap();
        let asg = leak(FakeAutoScaling::with(vec![GroupState {
            name: WEB.into(),
            min_size: 1,
            max_size: 4,
            desired: 2,
            in_service: 2,
            tags: tags(group_tags),
            activity_in_progress: false,
        }]));
        let rds = leak(FakeRds::with(vec![DbInstanceState {
            id: DB.into(),
            arn: None,
            class: "db.t3.micro".into(),
            status: "available".into(),
            engine: "postgres".into(),
            multi_az: false,
            endpoint: None,
            pending_class: None,
            tags: tags(db_tags),
        }]));
        let power = leak(Power {
            rds,
            log: Default::default(),
            start_lands_on,
        });
        let notifier = leak(FakeNotifier::default());
        let ledger = leak(FakeLedger::default());
        let deps = leak(Deps {
            cfg,
            asg: Box::new(Shared(asg)),
            rds: Box::new(Shared(rds)),
            cache: Box::new(FakeElastiCache::default()),
            notifier: Box::new(Shared(notifier)),
            params: None,
            ledger: Box::new(Shared(ledger)),
            switches: Switches::default(),
        });
        let x = leak(OffhoursDeps {
            cfg: off_cfg,
            inventory: Box::new(FakeInventory { asg, rds }),
            power: Box::new(PowerRef(power)),
        });
        World {
            deps,
            x,
            asg,
            rds,
            power,
            notifier,
            ledger,
        }
    }

    struct PowerRef(&'static Power);
    #[async_trait::async_trait]
    impl RdsPower for PowerRef {
        async fn stop_instance(&self, id: &str) -> Result<()> {
            self.0.stop_instance(id).await
        }
        async fn start_instance(&self, id: &str) -> Result<()> {
            self.0.start_instance(id).await
        }
    }

    fn world(extra: &[(&str, &str)]) -> World {
        world_with(extra, &[], &[], "available")
    }

    fn utc(d: u32, h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, d, h, m, 0).unwrap()
    }

    async fn run(w: &World, payload: Value, now: DateTime<Utc>) -> RecordReport {
        let inv = Invocation {
            request_id: "req".into(),
            now,
            deadline: None,
        };
        let mut r = handle(payload, inv, w.deps, w.x).await.unwrap();
        r.records.remove(0)
    }

    /// A Scheduler tick at `at` (December 2026, UTC).
    async fn tick(w: &World, d: u32, h: u32, m: u32) -> RecordReport {
        let at = utc(d, h, m);
        let payload = json!({"nbaops": {"task": "offhours", "at": at.to_rfc3339(), "id": format!("tick-{}", at.to_rfc3339())}});
        run(w, payload, at).await
    }

    fn actions(r: &RecordReport) -> Vec<(String, Outcome)> {
        r.actions
            .iter()
            .map(|a| (format!("{} {}", a.action, a.resource), a.outcome))
            .collect()
    }

    // Wednesday 2 December 2026: 19:00 Paris is 18:00 UTC; Thursday 08:00 Paris is 07:00 UTC;
    // Friday 4 December is a holiday in the schedule.

    #[tokio::test]
    async fn stop_groups_then_db_start_db_then_groups_with_the_size_it_had() {
        let w = world(&[]);
        let r = tick(&w, 2, 17, 55).await;
        assert!(r.actions.is_empty(), "office hours: nothing to do {r:?}");
        assert!(w.mutations().is_empty());
        let r = tick(&w, 2, 18, 0).await;
        assert_eq!(
            actions(&r),
            vec![
                (
                    "asg.offhours_stop asg:nbaops-dev-web".into(),
                    Outcome::Acted
                ),
                ("rds.offhours_stop rds:nbaops-dev-db".into(), Outcome::Acted),
            ]
        );
        assert_eq!(
            w.mutations(),
            vec![
                "update_group_size nbaops-dev-web 0 0 0",
                "stop nbaops-dev-db"
            ]
        );
        // Later ticks of the same night change nothing.
        assert!(tick(&w, 2, 23, 0).await.actions.is_empty());
        // Thursday 07:00 UTC: the database first, and (available at once) the group after it.
        let r = tick(&w, 3, 7, 0).await;
        assert_eq!(
            actions(&r),
            vec![
                (
                    "rds.offhours_start rds:nbaops-dev-db".into(),
                    Outcome::Acted
                ),
                (
                    "asg.offhours_start asg:nbaops-dev-web".into(),
                    Outcome::Acted
                ),
            ]
        );
        assert_eq!(r.actions[1].before["databases"][0]["status"], "available");
        assert_eq!(w.size(), (1, 4, 2));
        // Resized while running: that is the size saved at the next stop and restored after.
        w.set_size(2, 6, 3);
        tick(&w, 3, 18, 0).await;
        assert_eq!(w.size(), (0, 0, 0));
        // Friday is a holiday: no start.
        assert!(tick(&w, 4, 7, 0).await.actions.is_empty());
        assert_eq!(w.db(), "stopped");
        // Monday 7 December.
        let r = tick(&w, 7, 7, 0).await;
        assert_eq!(r.actions.len(), 2, "{r:?}");
        assert_eq!(w.size(), (2, 6, 3));
        assert_eq!(w.alerts(), 0);
    }

    #[tokio::test]
    async fn groups_wait_for_the_database_to_be_available() {
        let w = world_with(&[], &[], &[], "starting");
        tick(&w, 2, 18, 0).await;
        let r = tick(&w, 3, 7, 0).await;
        assert_eq!(
            actions(&r),
            vec![(
                "rds.offhours_start rds:nbaops-dev-db".into(),
                Outcome::Acted
            )]
        );
        assert!(
            r.notes
                .iter()
                .any(|n| n.contains("waiting for the databases")),
            "{:?}",
            r.notes
        );
        assert_eq!(w.size(), (0, 0, 0));
        // Still starting five minutes later: still waiting, no second start.
        assert!(tick(&w, 3, 7, 5).await.actions.is_empty());
        set_status(w.rds, DB, "available");
        let r = tick(&w, 3, 7, 10).await;
        assert_eq!(
            actions(&r),
            vec![(
                "asg.offhours_start asg:nbaops-dev-web".into(),
                Outcome::Acted
            )]
        );
        assert_eq!(w.size(), (1, 4, 2));
    }

    #[tokio::test]
    async fn a_start_that_never_completes_is_alerted_once() {
        let w = world_with(&[], &[], &[], "starting");
        tick(&w, 2, 18, 0).await;
        tick(&w, 3, 7, 0).await;
        assert_eq!(w.alerts(), 0);
        let r = tick(&w, 3, 7, 45).await;
        assert_eq!(r.alerts.len(), 1);
        assert!(
            r.alerts[0].summary.contains("failed start"),
            "{:?}",
            r.alerts
        );
        assert_eq!(r.alerts[0].severity, Severity::P3);
        assert!(tick(&w, 3, 7, 50).await.alerts.is_empty());
    }

    #[tokio::test]
    async fn manual_start_at_22h_is_respected_and_reported_unless_enforced() {
        let w = world(&[]);
        tick(&w, 2, 18, 0).await;
        let before = w.mutations().len();
        // Someone starts the database by hand at 22:00 (Paris 23:00).
        set_status(w.rds, DB, "available");
        let r = tick(&w, 2, 22, 0).await;
        assert!(r.actions.is_empty());
        assert_eq!(r.alerts.len(), 1);
        assert!(r.alerts[0].summary.contains("started by hand"));
        assert_eq!(w.db(), "available");
        assert!(tick(&w, 2, 22, 5).await.alerts.is_empty(), "reported once");
        assert_eq!(w.mutations().len(), before);

        let w = world(&[("NBAOPS_OFFHOURS__ENFORCE", "true")]);
        tick(&w, 2, 18, 0).await;
        set_status(w.rds, DB, "available");
        let r = tick(&w, 2, 22, 0).await;
        assert_eq!(
            actions(&r),
            vec![("rds.offhours_stop rds:nbaops-dev-db".into(), Outcome::Acted)]
        );
        assert_eq!(w.db(), "stopped");
    }

    #[tokio::test]
    async fn rds_auto_start_after_seven_days_is_stopped_again() {
        let w = world(&[]);
        tick(&w, 2, 18, 0).await;
        // RDS restarts it (the fixture: 2 December 19:05 UTC, schedule says stopped).
        set_status(w.rds, DB, "available");
        let r = run(&w, serde_json::from_str(AUTO_START).unwrap(), utc(2, 19, 6)).await;
        assert_eq!(
            actions(&r),
            vec![("rds.offhours_stop rds:nbaops-dev-db".into(), Outcome::Acted)]
        );
        assert_eq!(w.db(), "stopped");
        assert_eq!(w.alerts(), 0, "not a manual start: no alert");
        // Still `starting` when the event arrives: the next tick stops it once available.
        let w = world(&[]);
        tick(&w, 2, 18, 0).await;
        set_status(w.rds, DB, "starting");
        let r = run(&w, serde_json::from_str(AUTO_START).unwrap(), utc(2, 19, 6)).await;
        assert!(r.actions.is_empty());
        set_status(w.rds, DB, "available");
        let r = tick(&w, 2, 19, 15).await;
        assert_eq!(
            actions(&r),
            vec![("rds.offhours_stop rds:nbaops-dev-db".into(), Outcome::Acted)]
        );
    }

    #[tokio::test]
    async fn auto_start_through_the_rds_event_subscription_sns_is_understood_too() {
        let w = world(&[]);
        tick(&w, 2, 18, 0).await;
        set_status(w.rds, DB, "available");
        let sns = include_str!("../../../events/rds/sns-subscription-event-url.json")
            .replace("RDS-EVENT-0049", "RDS-EVENT-0154")
            .replace("2026-11-25 20:01:02.123", "2026-12-02 19:05:40.000");
        let r = run(&w, serde_json::from_str(&sns).unwrap(), utc(2, 19, 6)).await;
        assert_eq!(
            actions(&r),
            vec![("rds.offhours_stop rds:nbaops-dev-db".into(), Outcome::Acted)]
        );
        // Any other RDS event is not for offhours.
        let failover = include_str!("../../../events/rds/sns-subscription-event-url.json");
        let r = run(&w, serde_json::from_str(failover).unwrap(), utc(2, 19, 7)).await;
        assert!(r.not_for_me.is_some());
    }

    #[tokio::test]
    async fn opt_out_protect_prod_and_dry_run_make_no_mutation() {
        for (label, extra, gtags, dtags) in [
            (
                "opt-out",
                vec![],
                vec![("nbaops:offhours-opt-out", "true")],
                vec![("nbaops:offhours-opt-out", "true")],
            ),
            (
                "protected",
                vec![],
                vec![("nbaops:protect", "true")],
                vec![("nbaops:protect", "true")],
            ),
            ("prod", vec![], vec![("env", "prod")], vec![("env", "prod")]),
            (
                "dry-run",
                vec![("NBAOPS_GUARD__DRY_RUN", "true")],
                vec![],
                vec![],
            ),
        ] {
            let w = world_with(&extra, &gtags, &dtags, "available");
            let r = tick(&w, 2, 18, 0).await;
            assert!(w.mutations().is_empty(), "{label}: {:?}", w.mutations());
            assert_eq!(w.size(), (1, 4, 2), "{label}");
            match label {
                "protected" => assert!(r
                    .actions
                    .iter()
                    .all(|a| a.stopped_by == Some(nbaops_shared::guard::GuardStep::ProtectedTag))),
                "dry-run" => assert_eq!(
                    r.actions.iter().map(|a| a.outcome).collect::<Vec<_>>(),
                    vec![Outcome::WouldAct, Outcome::WouldAct],
                    "the preview shows the whole stop, group then database"
                ),
                _ => assert!(r.actions.is_empty(), "{label}: {r:?}"),
            }
        }
        // A protected group keeps its database running: the database stops after the groups.
        let w = world_with(&[], &[("nbaops:protect", "true")], &[], "available");
        let r = tick(&w, 2, 18, 0).await;
        assert_eq!(w.db(), "available");
        assert!(r
            .notes
            .iter()
            .any(|n| n.contains("groups of its schedule to stop first")));
    }

    #[tokio::test]
    async fn default_blast_radius_staggers_the_stop_over_ticks_in_order() {
        let w = world(&[("NBAOPS_GUARD__BLAST__MAX_PERCENT", "50")]);
        let r = tick(&w, 2, 18, 0).await;
        assert_eq!(r.actions[0].outcome, Outcome::Acted);
        assert_eq!(w.db(), "available");
        tick(&w, 2, 18, 5).await;
        assert_eq!(w.db(), "stopped");
        assert_eq!(
            w.mutations(),
            vec![
                "update_group_size nbaops-dev-web 0 0 0",
                "stop nbaops-dev-db"
            ]
        );
        let _ = w.ledger;
    }

    #[tokio::test]
    async fn other_events_are_not_for_me() {
        let w = world(&[]);
        let r = run(&w, serde_json::from_str(ALARM).unwrap(), utc(2, 12, 0)).await;
        assert!(r.not_for_me.is_some());
        let r = run(
            &w,
            json!({"nbaops": {"task": "cost-daily-check"}}),
            utc(2, 12, 0),
        )
        .await;
        assert!(r.not_for_me.is_some());
        let r = run(
            &w,
            json!({"nbaops": {"task": "offhours", "env": "staging"}}),
            utc(2, 12, 0),
        )
        .await;
        assert!(r.not_for_me.is_some());
        assert!(w.mutations().is_empty());
    }

    mod properties {
        use super::*;
        use nbaops_shared::events::arbitrary;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(arbitrary::config(48))]

            /// Arbitrary JSON and damaged fixtures: never a panic; what nothing understands is
            /// refused with no stop or start, no state, no audit, no alert.
            #[test]
            fn any_payload_is_answered_and_only_an_understood_event_acts(payload in arbitrary::payload()) {
                let w = world(&[]);
                let understood = arbitrary::understood(&payload);
                let inv = Invocation { request_id: "prop".into(), now: utc(2, 19, 0), deadline: None };
                let res = arbitrary::block_on(handle(payload, inv, w.deps, w.x));
                if !understood {
                    arbitrary::refused_cleanly(&res)?;
                    prop_assert!(w.mutations().is_empty());
                    prop_assert!(w.notifier.published().is_empty());
                    prop_assert_eq!(w.ledger.len_with_prefix(""), 0);
                }
            }
        }
    }
}

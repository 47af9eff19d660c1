//! Translates alarm state changes (three deliveries) and the off-peak schedule into guarded
//! scaling of Auto Scaling groups, the RDS class ladder and Memcached nodes.

use chrono::Duration;
use serde_json::{json, Value};

use nbaops_shared::adapters::{
    AwsClients, SdkAutoScaling, SdkCloudWatch, SdkElastiCache, SdkRds, SdkScheduler,
};
use nbaops_shared::alerts::Severity;
use nbaops_shared::config::ApprovalPolicy;
use nbaops_shared::error::NbaopsError;
use nbaops_shared::events::{AlarmChange, AlarmState, AlarmTrigger, Inbound, SingleMetric};
use nbaops_shared::guard::explain::num;
use nbaops_shared::guard::{
    in_change_window, AuditRecord, Bounds, Explanation, Observation, Outcome, ProposedAction,
};
use nbaops_shared::ports::{AutoScaling, CloudWatch, ElastiCache, LedgerWrite, Rds, Scheduler};
use nbaops_shared::runtime::{Ctx, Deps, Function, InvocationReport, Live, RecordReport, Work};
use nbaops_shared::Result;

use crate::plan::{
    intent_for, plan_cache, plan_db, plan_group, CacheChange, DbChange, Direction, GroupChange,
    Intent, Target,
};
use crate::recheck::{GroupStep, RECHECK_TASK};

pub const FUNCTION: &str = "scale-on-alarm";
/// Scheduler input `{"nbaops": {"task": "off-peak-scale-in"}}`: every group back to its baseline
/// within the night's window, one checked step per run (offpeak.rs).
pub const OFF_PEAK_TASK: &str = "off-peak-scale-in";

/// The ports scale-on-alarm calls, built once at init.
pub struct ScaleOnAlarm {
    pub asg: Box<dyn AutoScaling>,
    pub rds: Box<dyn Rds>,
    pub cache: Box<dyn ElastiCache>,
    /// Alarm thresholds after a class change, Memcached BytesUsedForCacheItems (thresholds.rs,
    /// cache_memory.rs), the off-peak checks (offpeak.rs), the alarm's state at a re-check
    /// (recheck.rs).
    pub cw: Box<dyn CloudWatch>,
    /// One-time follow-ups: the next off-peak step (offpeak.rs), re-checks of a sustained alarm
    /// (recheck.rs).
    pub scheduler: Box<dyn Scheduler>,
}

impl Function for ScaleOnAlarm {
    const NAME: &'static str = FUNCTION;
    const TAKES: &'static str =
        "CloudWatch alarm state changes, the 'off-peak-scale-in', 'alarm-drift' and 'game-night-*' schedules and its own 'scale-recheck' follow-ups";
    type Reply = InvocationReport;

    async fn init(_deps: &Deps, aws: &AwsClients) -> Result<Self> {
        Ok(ScaleOnAlarm {
            asg: Box::new(SdkAutoScaling(aws.autoscaling())),
            rds: Box::new(SdkRds(aws.rds())),
            cache: Box::new(SdkElastiCache(aws.elasticache())),
            cw: Box::new(SdkCloudWatch(aws.cloudwatch())),
            scheduler: Box::new(SdkScheduler(aws.scheduler())),
        })
    }

    /// The off-peak scale-in waits while a game night holds the groups (crate::gamenight).
    async fn records(&self, inbound: Inbound, ctx: &Ctx<'_>) -> Result<Vec<RecordReport>> {
        match inbound {
            Inbound::Schedule(tick) if tick.task().as_deref() == Some(OFF_PEAK_TASK) => {
                match self.off_peak_held(&tick, ctx).await? {
                    Some(held) => Ok(vec![held]),
                    None => Ok(vec![self.on(Inbound::Schedule(tick), ctx).await?]),
                }
            }
            other => Ok(vec![self.on(other, ctx).await?]),
        }
    }

    async fn on(&self, inbound: Inbound, ctx: &Ctx<'_>) -> Result<RecordReport> {
        match inbound {
            Inbound::Alarm(alarm) => self.on_alarm(&alarm, ctx).await,
            Inbound::Schedule(tick) if tick.task().as_deref() == Some(OFF_PEAK_TASK) => {
                self.on_off_peak(&tick, ctx).await
            }
            Inbound::Schedule(tick)
                if tick.task().as_deref() == Some(crate::thresholds::ALARM_DRIFT_TASK) =>
            {
                self.on_alarm_drift(&tick, ctx).await
            }
            Inbound::Schedule(tick) if crate::gamenight::takes(&tick) => {
                self.game_night(&tick, ctx).await
            }
            Inbound::Schedule(tick) if tick.task().as_deref() == Some(RECHECK_TASK) => {
                self.on_recheck(&tick, ctx).await
            }
            other => Ok(ctx.not_mine(&other)),
        }
    }

    /// An approved class change or group resize (issue #19): the instance's class and status, the
    /// group's desired / min / max, as the plan's `before` holds them.
    async fn live(&self, a: &ProposedAction, _ctx: &Ctx<'_>) -> Result<Live> {
        match (a.action.as_str(), approved_target(a)) {
            ("rds.modify_class", Some(id)) => Ok(match self.rds.describe_instance(id).await? {
                None => Live::Gone,
                Some(db) => Live::Is {
                    state: json!({"class": db.class, "status": db.status}),
                    tags: db.tags,
                },
            }),
            ("asg.scale_out" | "asg.scale_in", Some(name)) => {
                Ok(match self.asg.describe_group(name).await? {
                    None => Live::Gone,
                    Some(g) => Live::Is {
                        state: json!({"desired": g.desired, "min": g.min_size, "max": g.max_size}),
                        tags: g.tags,
                    },
                })
            }
            _ => Ok(Live::NotCarriedOut),
        }
    }

    /// The plan's `after`, exactly: the class (now or at the maintenance window, as planned), or
    /// the desired capacity.
    async fn apply(&self, a: &ProposedAction, _ctx: &Ctx<'_>) -> Result<()> {
        let bad = || NbaopsError::InvalidEvent(format!("approved plan not understood: {a:?}"));
        match (a.action.as_str(), approved_target(a)) {
            ("rds.modify_class", Some(id)) => {
                let class = a
                    .after
                    .get("class")
                    .and_then(Value::as_str)
                    .ok_or_else(bad)?;
                let now = a
                    .after
                    .get("apply_immediately")
                    .and_then(Value::as_bool)
                    .ok_or_else(bad)?;
                self.rds.modify_instance_class(id, class, now).await
            }
            ("asg.scale_out" | "asg.scale_in", Some(name)) => {
                let desired = a
                    .after
                    .get("desired")
                    .and_then(Value::as_i64)
                    .and_then(|d| i32::try_from(d).ok())
                    .ok_or_else(bad)?;
                self.asg.set_desired_capacity(name, desired).await
            }
            _ => Err(bad()),
        }
    }
}

/// The instance id or group name of an approved plan's resource (`rds:<id>`, `asg:<name>`).
fn approved_target(a: &ProposedAction) -> Option<&str> {
    let (kind, name) = a.resource.split_once(':')?;
    let want = if a.action.starts_with("rds.") {
        "rds"
    } else {
        "asg"
    };
    (kind == want && !name.is_empty()).then_some(name)
}

/// Counts this alarm's transitions in the flap window, this one included, and hands back the
/// record of this transition (keyed by its state timestamp, so duplicate deliveries count once)
/// for the caller to write — with the action's claim when there is one. When the delivery says the
/// previous transition is older than the window, this one is alone in it and nothing is read
/// (a late delivery of an old transition does not see the transitions after it).
async fn flap_count(alarm: &AlarmChange, ctx: &Ctx<'_>) -> Result<(usize, LedgerWrite)> {
    let cfg = &ctx.cfg().scale;
    let pk = format!("flap#{}", alarm.alarm_name);
    let sk = format!("{}#{}", alarm.changed_at.to_rfc3339(), alarm.state.as_str());
    let window = Duration::minutes(cfg.flap_window_minutes);
    let expires = (alarm.changed_at + window + Duration::days(1)).timestamp();
    let record = LedgerWrite::put(
        &pk,
        &sk,
        json!({"state": alarm.state.as_str()}),
        Some(expires),
    );
    if alarm
        .previous_changed_at
        .is_some_and(|p| p < alarm.changed_at - window)
    {
        return Ok((1, record));
    }
    let since = ctx.now().min(alarm.changed_at) - window;
    let mut seen: std::collections::BTreeSet<String> = ctx
        .deps
        .ledger
        .query(&pk, "")
        .await?
        .into_iter()
        .map(|(sk, _)| sk)
        .filter(|sk| {
            sk.split('#')
                .next()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t >= since)
                .unwrap_or(false)
        })
        .collect();
    seen.insert(sk);
    Ok((seen.len(), record))
}

/// What one scaling is about: the alarm or schedule behind it, and how urgent it is.
pub(crate) struct Why<'r> {
    pub(crate) reason: &'r str,
    /// The rule and the numbers behind it (no verb, no change yet: each action adds its own).
    pub(crate) because: &'r Explanation,
    pub(crate) severity: Severity,
    /// The alarm episode (recheck.rs) a scale-out belongs to: its "capacity exhausted" P2 is
    /// raised once per episode, and an acted step schedules the next re-check.
    pub(crate) episode: Option<&'r crate::recheck::Episode>,
}

/// What the alarm says, as an explanation: its latest datapoint against its threshold, for as
/// long as the datapoints it names cover (SPEC 2.5: scale on the alarm's transition).
pub(crate) fn alarm_because(alarm: &AlarmChange) -> Explanation {
    let mut e = Explanation::new(
        "",
        "",
        "",
        format!(
            "SPEC 2.5 capacity: alarm {} {}",
            alarm.alarm_name,
            alarm.state.as_str()
        ),
    );
    let points = alarm.datapoints();
    // A single metric's value has the metric's unit; a metric-math or anomaly alarm's value is
    // its expression's, which the event does not name.
    let (what, unit) = match &alarm.trigger {
        AlarmTrigger::SingleMetric(m) => {
            let name = m.metric.metric_name.as_deref().unwrap_or("metric");
            let unit = if name.contains("Utilization") || name.contains("Percent") {
                "%"
            } else if name.contains("Memory") || name.contains("Bytes") {
                "bytes"
            } else {
                ""
            };
            (name, unit)
        }
        _ => ("the alarm's expression", ""),
    };
    if let Some(&latest) = points.first() {
        e = e.observe(match (alarm.comparison_symbol(), alarm.threshold()) {
            (Some(c), Some(t)) => Observation::against(what, latest, unit, c, t),
            _ => Observation::value(what, latest, unit),
        });
    } else if let Some(t) = alarm.threshold() {
        e = e.observe(Observation::value("threshold", t, unit));
    }
    if let AlarmTrigger::SingleMetric(SingleMetric {
        period_seconds: Some(p),
        ..
    }) = &alarm.trigger
    {
        if !points.is_empty() {
            let secs = f64::from(*p) * points.len() as f64;
            e = e.lasting(if secs >= 60.0 {
                format!("{} min", num(secs / 60.0))
            } else {
                format!("{} s", num(secs))
            });
        }
    }
    e
}

/// The P3 (P2 when it failed or was an emergency change) telling people what was done: its
/// action line is the audit record's own sentence.
async fn announce(
    w: &mut Work<'_>,
    audit: &AuditRecord,
    resource: &str,
    key: String,
    summary: String,
    details: Value,
) -> Result<()> {
    if !matches!(audit.outcome, Outcome::Acted | Outcome::Failed) {
        return Ok(());
    }
    let sev = if audit.outcome == Outcome::Failed || audit.emergency_change {
        Severity::P2
    } else {
        Severity::P3
    };
    let alert = w
        .ctx
        .alert(sev, resource, key, summary)
        .with_details(details)
        .with_action(audit.sentence.clone());
    w.raise(alert).await
}

impl ScaleOnAlarm {
    async fn on_alarm(&self, alarm: &AlarmChange, ctx: &Ctx<'_>) -> Result<RecordReport> {
        let summary = format!(
            "alarm '{}' {} -> {} ({:?})",
            alarm.alarm_name,
            alarm.previous_state.map(|s| s.as_str()).unwrap_or("?"),
            alarm.state.as_str(),
            alarm.delivery
        );
        let mut w = ctx.work(&alarm.event_id, "alarm", summary);
        let scale = &ctx.cfg().scale;
        let intent = intent_for(alarm, scale);
        if alarm.state == AlarmState::Ok && !matches!(intent, Intent::NotForMe(_)) {
            self.cancel_recheck(&alarm.alarm_name, &mut w).await?;
        }
        let (target, direction, route) = match intent {
            Intent::NotForMe(reason) => return Ok(w.not_for_me(reason)),
            Intent::Nothing(why) => {
                w.note(why);
                return Ok(w.rec);
            }
            Intent::Scale {
                target,
                direction,
                route,
            } => (target, direction, route),
        };
        if alarm.state != AlarmState::InsufficientData {
            let (transitions, record) = flap_count(alarm, ctx).await?;
            w.guard.ride_along(record);
            if transitions >= scale.flap_transitions {
                return self.on_flapping(alarm, &target, transitions, w).await;
            }
        }
        let severity = route
            .as_ref()
            .and_then(|r| r.severity.as_deref())
            .and_then(|s| s.parse::<Severity>().ok())
            .unwrap_or(Severity::P3);
        let reason = format!(
            "alarm '{}' in {}: {}",
            alarm.alarm_name,
            alarm.state.as_str(),
            alarm.reason
        );
        let episode = crate::recheck::Episode::of(alarm);
        let because = alarm_because(alarm);
        let why = Why {
            reason: &reason,
            because: &because,
            severity,
            episode: (direction == Direction::Out).then_some(&episode),
        };
        match target {
            Target::Group(name) => {
                let step = self.scale_group(&name, direction, &why, &mut w).await?;
                self.follow_up(&name, step, &why, &mut w).await?;
            }
            Target::Db(id) => {
                self.scale_db(&id, &why, &mut w).await?;
                self.align_db_alarms_noted(&id, &mut w).await?;
            }
            Target::Cache(id) => self.scale_cache(&id, &why, &mut w).await?,
        }
        // No action was checked (nothing to do, busy, at the ceiling): the transition still counts.
        w.done().await
    }

    /// One alert per alarm per flap window, however many deliveries a storm brings: the first
    /// delivery that sees the flapping claims the window; the others only note it.
    async fn on_flapping(
        &self,
        alarm: &AlarmChange,
        target: &Target,
        transitions: usize,
        mut w: Work<'_>,
    ) -> Result<RecordReport> {
        let ctx = w.ctx;
        let scale = &ctx.cfg().scale;
        w.guard.flush().await?;
        let window_secs = scale.flap_window_minutes.max(1) * 60;
        let bucket = alarm.changed_at.timestamp().div_euclid(window_secs);
        let expires = alarm.changed_at.timestamp() + 2 * window_secs + 86_400;
        let first = ctx
            .deps
            .ledger
            .put_if_absent(
                &format!("flap#{}", alarm.alarm_name),
                &format!("alerted#{bucket}"),
                &json!({"event_id": alarm.event_id, "at": ctx.now()}),
                expires,
            )
            .await?;
        if !first {
            w.note(format!(
                "flapping ({transitions} transitions): no action, already alerted for this window"
            ));
            return Ok(w.rec);
        }
        let alert = ctx
            .alert(
                Severity::P3,
                &target.resource(),
                format!("flapping#{}", alarm.alarm_name),
                format!(
                    "alarm '{}' is flapping: {} transitions in {} min; nbaops stopped acting on it",
                    alarm.alarm_name, transitions, scale.flap_window_minutes
                ),
            )
            .with_runbook(
                "Review the alarm's threshold and evaluation periods; nbaops resumes when it settles.",
            );
        w.note(format!("flapping ({transitions} transitions): no action"));
        w.raise(alert).await?;
        Ok(w.rec)
    }

    pub(crate) async fn scale_group(
        &self,
        name: &str,
        dir: Direction,
        why: &Why<'_>,
        w: &mut Work<'_>,
    ) -> Result<GroupStep> {
        let group = self.asg.describe_group(name).await?;
        self.scale_described(name, group, dir, why, w).await
    }

    /// [`Self::scale_group`] on the group as just described (a re-check reads it alongside the alarm).
    pub(crate) async fn scale_described(
        &self,
        name: &str,
        group: Option<nbaops_shared::ports::GroupState>,
        dir: Direction,
        why: &Why<'_>,
        w: &mut Work<'_>,
    ) -> Result<GroupStep> {
        let ctx = w.ctx;
        let scale = &ctx.cfg().scale;
        let resource = format!("asg:{name}");
        let Some(group) = group else {
            w.note(format!("{resource} does not exist: no action"));
            return Ok(GroupStep::Nothing);
        };
        let mut step = GroupStep::Nothing;
        match plan_group(&group, scale.plan_for(name), dir) {
            GroupChange::Busy => {
                w.note(format!(
                    "{resource}: a scaling activity is in progress, not stacking another"
                ));
                step = GroupStep::Deferred;
            }
            GroupChange::AtBaseline { desired, floor } => w.note(format!(
                "{resource}: already at {desired} (floor {floor}), nothing to scale in"
            )),
            GroupChange::AtCeiling { desired, ceiling } => {
                if !crate::recheck::first_exhausted(why.episode, &resource, w).await? {
                    return Ok(GroupStep::Nothing);
                }
                let alert = ctx
                    .alert(
                        Severity::P2,
                        &resource,
                        format!("capacity-exhausted#{resource}"),
                        format!("{name} is at its ceiling ({desired}/{ceiling}) and the alarm still fires: capacity exhausted"),
                    )
                    .with_details(json!({"reason": why.reason, "desired": desired, "ceiling": ceiling, "max_size": group.max_size}))
                    .with_runbook("Raise scale.asg.ceiling (or the group's MaxSize) after checking cost, or find what is loading the tier.");
                w.note(format!("{resource}: at ceiling {ceiling}, P2 raised"));
                w.raise(alert).await?;
            }
            GroupChange::To { from, to, min, max } => {
                let verb = if dir == Direction::Out {
                    "scale_out"
                } else {
                    "scale_in"
                };
                let action = ProposedAction {
                    action: format!("asg.{verb}"),
                    resource: resource.clone(),
                    tags: group.tags.clone(),
                    reason: why.reason.to_string(),
                    severity: why.severity,
                    disruptive: false,
                    bounds: Some(Bounds {
                        proposed: to as f64,
                        min: min as f64,
                        max: max as f64,
                    }),
                    cooldown_key: "asg.scale".into(),
                    cooldown_seconds: scale.asg_cooldown_seconds,
                    before: json!({"desired": from, "min": group.min_size, "max": group.max_size}),
                    after: json!({"desired": to}),
                    explanation: why
                        .because
                        .doing("scale", "Scaled", format!("{name} {from} → {to}"))
                        .key("scale.asg.step")
                        .key(if dir == Direction::Out {
                            "scale.asg.ceiling"
                        } else {
                            "scale.asg.baseline"
                        })
                        .key("scale.asg.cooldown_seconds"),
                };
                let audit = w
                    .act(&action, || self.asg.set_desired_capacity(name, to))
                    .await?;
                let words = audit.outcome_words();
                w.note(format!("{resource}: desired {from} -> {to}: {words}"));
                step = GroupStep::of(&audit, from, max);
                announce(
                    w,
                    &audit,
                    &resource,
                    format!("{verb}#{resource}"),
                    format!("{name}: desired {from} -> {to} ({words})"),
                    json!({"reason": why.reason, "before": action.before, "after": action.after}),
                )
                .await?;
            }
        }
        Ok(step)
    }

    async fn scale_db(&self, id: &str, why: &Why<'_>, w: &mut Work<'_>) -> Result<()> {
        let ctx = w.ctx;
        let scale = &ctx.cfg().scale;
        let resource = format!("rds:{id}");
        let Some(db) = self.rds.describe_instance(id).await? else {
            w.note(format!("{resource} does not exist: no action"));
            return Ok(());
        };
        let ladder = &scale.rds_ladder;
        match plan_db(&db, ladder) {
            DbChange::NotAvailable { status } => w.note(format!(
                "{resource} is '{status}', not 'available': no change now"
            )),
            DbChange::AlreadyPending { class } => {
                w.note(format!("{resource}: change to {class} already pending"))
            }
            DbChange::NotOnLadder { class } => w.note(format!(
                "{resource}: class {class} is not on scale.rds.ladder; not touching it"
            )),
            DbChange::AtTop { class } => {
                let alert = ctx
                    .alert(
                        Severity::P2,
                        &resource,
                        format!("capacity-exhausted#{resource}"),
                        format!("{id} is already {class}, the top of the class ladder, and the alarm still fires"),
                    )
                    .with_details(json!({"reason": why.reason, "ladder": ladder}))
                    .with_runbook("Look for the query or connection storm first; a bigger class needs a capacity review.");
                w.note(format!("{resource}: top rung {class}, P2 raised"));
                w.raise(alert).await?;
            }
            DbChange::Up {
                from,
                to,
                rung,
                top,
            } => {
                // Inside the change window, or for a P1, the change is applied now; outside it,
                // for a P2, a person is asked to let it happen now when approval.rds.modify_class
                // says so (issue #19); otherwise RDS applies it in the instance's maintenance
                // window, which infra aligns with ours.
                let immediate = why.severity == Severity::P1
                    || in_change_window(&ctx.cfg().guard.window, ctx.now())
                    || (why.severity == Severity::P2
                        && ctx.cfg().approval.policy("rds.modify_class") != ApprovalPolicy::Never);
                let action = ProposedAction {
                    action: "rds.modify_class".into(),
                    resource: resource.clone(),
                    tags: db.tags.clone(),
                    reason: why.reason.to_string(),
                    severity: why.severity,
                    disruptive: immediate,
                    bounds: Some(Bounds {
                        proposed: rung as f64,
                        min: 0.0,
                        max: top as f64,
                    }),
                    cooldown_key: "rds.class".into(),
                    cooldown_seconds: scale.rds_cooldown_seconds,
                    before: json!({"class": from, "status": db.status}),
                    after: json!({"class": to, "apply_immediately": immediate}),
                    explanation: why
                        .because
                        .doing(
                            "move",
                            "Moved",
                            format!(
                                "{id} {from} → {to} ({})",
                                if immediate {
                                    "now"
                                } else {
                                    "at the maintenance window"
                                }
                            ),
                        )
                        .key("scale.rds.ladder")
                        .key("scale.rds.cooldown_seconds"),
                };
                let audit = w
                    .act(&action, || {
                        self.rds.modify_instance_class(id, &to, immediate)
                    })
                    .await?;
                let words = audit.outcome_words();
                let when = if immediate {
                    "now"
                } else {
                    "at the next maintenance window"
                };
                w.note(format!("{resource}: {from} -> {to} {when}: {words}"));
                announce(
                    w,
                    &audit,
                    &resource,
                    format!("rds-class#{resource}"),
                    format!("{id}: {from} -> {to} {when} ({words})"),
                    json!({"reason": why.reason, "before": action.before, "after": action.after, "emergency_change": audit.emergency_change}),
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn scale_cache(&self, id: &str, why: &Why<'_>, w: &mut Work<'_>) -> Result<()> {
        let ctx = w.ctx;
        let scale = &ctx.cfg().scale;
        let resource = format!("cache:{id}");
        let Some(c) = self.cache.describe_cluster(id).await? else {
            w.note(format!("{resource} does not exist: no action"));
            return Ok(());
        };
        match plan_cache(&c, scale.cache_max_nodes) {
            CacheChange::NotMemcached { engine } => w.note(format!(
                "{resource} runs {engine}, not memcached: not touching it"
            )),
            CacheChange::NotAvailable { status } => {
                w.note(format!("{resource} is '{status}': no change now"))
            }
            CacheChange::AtCap { nodes, cap } => {
                let alert = ctx
                    .alert(
                        Severity::P2,
                        &resource,
                        format!("capacity-exhausted#{resource}"),
                        format!(
                            "{id} has {nodes} nodes, the cap of {cap}, and memory is still high"
                        ),
                    )
                    .with_details(json!({"reason": why.reason}));
                w.note(format!("{resource}: at node cap {cap}, P2 raised"));
                w.raise(alert).await?;
            }
            CacheChange::AddNode { .. } if !self.cache_node_is_full(&c, w).await => {}
            CacheChange::AddNode { from, to, cap } => {
                let action = ProposedAction {
                    action: "cache.add_node".into(),
                    resource: resource.clone(),
                    tags: c.tags.clone(),
                    reason: why.reason.to_string(),
                    severity: Severity::P3,
                    disruptive: false,
                    bounds: Some(Bounds {
                        proposed: to as f64,
                        min: 1.0,
                        max: cap as f64,
                    }),
                    cooldown_key: "cache.nodes".into(),
                    cooldown_seconds: scale.cache_cooldown_seconds,
                    before: json!({"nodes": from}),
                    after: json!({"nodes": to}),
                    explanation: why
                        .because
                        .doing(
                            "add a node to",
                            "Added a node to",
                            format!("{id} {from} → {to}"),
                        )
                        .observe(Observation::against(
                            "nodes after",
                            to as f64,
                            "",
                            "<=",
                            cap as f64,
                        ))
                        .key("scale.cache.max_nodes")
                        .key("scale.cache.cooldown_seconds"),
                };
                let audit = w.act(&action, || self.cache.set_node_count(id, to)).await?;
                let words = audit.outcome_words();
                w.note(format!("{resource}: nodes {from} -> {to}: {words}"));
                announce(
                    w,
                    &audit,
                    &resource,
                    format!("cache-nodes#{resource}"),
                    format!("{id}: nodes {from} -> {to} ({words})"),
                    json!({}),
                )
                .await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use nbaops_shared::fakes::*;
    use nbaops_shared::guard::GuardStep;
    use nbaops_shared::ports::*;
    use nbaops_shared::runtime::{dispatch, Invocation};

    pub(crate) const WEB_ALARM: &str =
        include_str!("../../../events/cloudwatch-alarm/eventbridge-single-metric-alarm.json");
    pub(crate) const WEB_OK: &str =
        include_str!("../../../events/cloudwatch-alarm/eventbridge-ok.json");
    const DB_ALARM: &str =
        include_str!("../../../events/cloudwatch-alarm/eventbridge-rds-memory-alarm.json");
    const CACHE_ALARM: &str =
        include_str!("../../../events/cloudwatch-alarm/sns-memcached-memory-alarm.json");
    const INSUFFICIENT: &str =
        include_str!("../../../events/cloudwatch-alarm/direct-action-insufficient-data.json");
    const S3: &str = include_str!("../../../events/not-for-me/s3-put.json");

    pub(crate) struct World {
        pub(crate) deps: &'static Deps,
        pub(crate) f: &'static ScaleOnAlarm,
        pub(crate) asg: &'static FakeAutoScaling,
        pub(crate) rds: &'static FakeRds,
        pub(crate) cache: &'static FakeElastiCache,
        pub(crate) notifier: &'static FakeNotifier,
        pub(crate) cw: &'static FakeCloudWatch,
        pub(crate) scheduler: &'static FakeScheduler,
    }

    pub(crate) fn world(extra: &[(&str, &str)], web_desired: i32, protect: bool) -> World {
        let mut vars = vec![
            ("NBAOPS_SCALE__GROUPS", "nbaops-dev-web,nbaops-dev-worker"),
            ("NBAOPS_SCALE__RDS__INSTANCES", "nbaops-dev-db"),
            ("NBAOPS_SCALE__CACHE__CLUSTERS", "nbaops-dev-cache"),
            (
                "NBAOPS_ALERTS_TOPIC_ARN",
                "arn:aws:sns:us-east-1:123456789012:nbaops-dev-alerts",
            ),
        ];
        vars.extend_from_slice(extra);
        let t = test_deps(FUNCTION, &vars).unwrap();
        let mut tags = Tags::new();
        if protect {
            tags.insert("nbaops:protect".into(), "true".into());
        }
        let asg = leak(FakeAutoScaling::with(vec![
            GroupState {
                name: "nbaops-dev-web".into(),
                min_size: 2,
                max_size: 6,
                desired: web_desired,
                in_service: web_desired,
                tags: tags.clone(),
                activity_in_progress: false,
            },
            GroupState {
                name: "nbaops-dev-worker".into(),
                min_size: 1,
                max_size: 4,
                desired: 3,
                in_service: 3,
                tags: Tags::new(),
                activity_in_progress: false,
            },
        ]));
        let rds = leak(FakeRds::with(vec![DbInstanceState {
            id: "nbaops-dev-db".into(),
            arn: None,
            class: "db.t3.micro".into(),
            status: "available".into(),
            engine: "postgres".into(),
            multi_az: true,
            endpoint: None,
            pending_class: None,
            tags: Tags::new(),
        }]));
        let cache = leak(FakeElastiCache::with(vec![CacheClusterState {
            id: "nbaops-dev-cache".into(),
            arn: None,
            engine: "memcached".into(),
            node_type: "cache.t3.micro".into(),
            num_nodes: 1,
            status: "available".into(),
            tags: Tags::new(),
        }]));
        let cw = leak(FakeCloudWatch::default());
        let scheduler = leak(FakeScheduler::default());
        World {
            deps: t.deps,
            f: leak(ScaleOnAlarm {
                asg: Box::new(Shared(asg)),
                rds: Box::new(Shared(rds)),
                cache: Box::new(Shared(cache)),
                cw: Box::new(Shared(cw)),
                scheduler: Box::new(Shared(scheduler)),
            }),
            asg,
            rds,
            cache,
            notifier: t.notifier,
            cw,
            scheduler,
        }
    }

    pub(crate) async fn handle(
        payload: Value,
        inv: Invocation,
        w: &World,
    ) -> Result<InvocationReport> {
        dispatch(w.f, payload, &Ctx::of::<ScaleOnAlarm>(w.deps, &inv)).await
    }

    pub(crate) fn inv(now: chrono::DateTime<Utc>) -> Invocation {
        Invocation::at("req", now)
    }
    pub(crate) fn wednesday() -> chrono::DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
    }

    async fn run(w: &World, fixture: &str, now: chrono::DateTime<Utc>) -> InvocationReport {
        handle(serde_json::from_str(fixture).unwrap(), inv(now), w)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn cpu_alarm_scales_web_out_by_one_and_alerts_p3() {
        // Cooldown off, so the duplicate below meets the idempotency guard rather than the cooldown.
        let w = world(&[("NBAOPS_SCALE__ASG__COOLDOWN_SECONDS", "0")], 2, false);
        let r = run(&w, WEB_ALARM, wednesday()).await;
        assert_eq!(
            w.asg.mutations(),
            vec!["set_desired_capacity nbaops-dev-web 3"]
        );
        assert_eq!(r.records[0].actions[0].outcome, Outcome::Acted);
        assert_eq!(r.records[0].alerts[0].severity, Severity::P3);
        assert!(w
            .notifier
            .published()
            .iter()
            .any(|p| p.message.contains("nbaops.alert/v1")));
        // The same event again: idempotency, no second step.
        let r = run(&w, WEB_ALARM, wednesday()).await;
        assert_eq!(w.asg.mutations().len(), 1);
        assert_eq!(
            r.records[0].actions[0].stopped_by,
            Some(GuardStep::Idempotency)
        );
    }

    #[tokio::test]
    async fn ceiling_reached_raises_p2_without_acting() {
        let w = world(&[], 4, false);
        let r = run(&w, WEB_ALARM, wednesday()).await;
        assert!(w.asg.mutations().is_empty());
        assert_eq!(r.records[0].alerts[0].severity, Severity::P2);
    }

    #[tokio::test]
    async fn protected_group_and_dry_run_change_nothing() {
        let w = world(&[], 2, true);
        let r = run(&w, WEB_ALARM, wednesday()).await;
        assert!(w.asg.mutations().is_empty());
        assert_eq!(
            r.records[0].actions[0].stopped_by,
            Some(GuardStep::ProtectedTag)
        );
        let w = world(&[("NBAOPS_GUARD__DRY_RUN_FUNCTIONS", FUNCTION)], 2, false);
        let r = run(&w, WEB_ALARM, wednesday()).await;
        assert!(w.asg.mutations().is_empty());
        assert_eq!(r.records[0].actions[0].outcome, Outcome::WouldAct);
    }

    #[tokio::test]
    async fn ok_and_insufficient_data_and_strangers_do_nothing() {
        let w = world(&[], 3, false);
        for f in [WEB_OK, INSUFFICIENT, S3] {
            let r = run(&w, f, wednesday()).await;
            assert!(r.records.iter().all(|x| x.actions.is_empty()), "{f}");
        }
        assert!(run(&w, S3, wednesday()).await.records[0]
            .not_for_me
            .is_some());
        assert!(w.asg.mutations().is_empty());
    }

    #[tokio::test]
    async fn metric_math_and_anomaly_alarms_need_a_mapping() {
        let w = world(&[], 2, false);
        for f in [
            include_str!("../../../events/cloudwatch-alarm/sns-metric-math.json"),
            include_str!("../../../events/cloudwatch-alarm/sns-anomaly-detection.json"),
            include_str!("../../../events/cloudwatch-alarm/sns-composite.json"),
        ] {
            let r = run(&w, f, wednesday()).await;
            assert!(
                r.records[0]
                    .not_for_me
                    .as_deref()
                    .unwrap_or("")
                    .contains("alarm_map"),
                "{:?}",
                r.records[0]
            );
        }
        assert!(w.asg.mutations().is_empty());
        let map = r#"{"nbaops-dev-web-degraded":{"target":"asg:nbaops-dev-web"}}"#;
        let w = world(&[("NBAOPS_SCALE__ALARM_MAP", map)], 2, false);
        run(
            &w,
            include_str!("../../../events/cloudwatch-alarm/sns-composite.json"),
            wednesday(),
        )
        .await;
        assert_eq!(
            w.asg.mutations(),
            vec!["set_desired_capacity nbaops-dev-web 3"]
        );
    }

    #[tokio::test]
    async fn an_alarm_on_another_metric_of_a_managed_db_buys_nothing() {
        let w = world(&[], 2, false);
        let mut ev: Value = serde_json::from_str(DB_ALARM).unwrap();
        // Same instance, but a transaction-ID alarm: no bigger class for that.
        ev["detail"]["configuration"]["metrics"][0]["metricStat"]["metric"]["name"] =
            json!("MaximumUsedTransactionIDs");
        let r = handle(ev, inv(wednesday()), &w).await.unwrap();
        assert!(w.rds.mutations().is_empty());
        assert!(
            r.records[0]
                .not_for_me
                .as_deref()
                .unwrap_or("")
                .contains("scale.signal_metrics"),
            "{:?}",
            r.records[0]
        );
    }

    #[tokio::test]
    async fn ok_maps_to_scale_in_when_configured() {
        let map = r#"{"nbaops-dev-web-cpu-high":{"target":"asg:nbaops-dev-web","on_ok":"in"}}"#;
        let w = world(&[("NBAOPS_SCALE__ALARM_MAP", map)], 3, false);
        let r = run(&w, WEB_OK, wednesday()).await;
        assert_eq!(
            w.asg.mutations(),
            vec!["set_desired_capacity nbaops-dev-web 2"],
            "{:?}",
            r.records[0].notes
        );
    }

    #[tokio::test]
    async fn rds_class_waits_for_window_unless_p1() {
        let w = world(&[], 2, false);
        run(&w, DB_ALARM, wednesday()).await;
        assert_eq!(
            w.rds.mutations(),
            vec!["modify_instance_class nbaops-dev-db db.t3.small immediate=false"]
        );
        let map = r#"{"nbaops-dev-db-memory-low":{"target":"rds:nbaops-dev-db","on_alarm":"up","severity":"P1"}}"#;
        let w = world(&[("NBAOPS_SCALE__ALARM_MAP", map)], 2, false);
        let r = run(&w, DB_ALARM, wednesday()).await;
        assert_eq!(
            w.rds.mutations(),
            vec!["modify_instance_class nbaops-dev-db db.t3.small immediate=true"],
            "{:?}",
            r.records[0].notes
        );
        assert!(r.records[0].actions[0].emergency_change);
    }

    /// Issue #19 with the fakes: a P2 outside the window asks; approved, the class changes once.
    #[tokio::test]
    async fn a_p2_class_change_outside_the_window_is_asked_then_carried_out_once() {
        use nbaops_shared::guard::{approved_input, decide, ApprovalRequest, Decided, Verdict};
        let map = r#"{"nbaops-dev-db-memory-low":{"target":"rds:nbaops-dev-db","on_alarm":"up","severity":"P2"}}"#;
        let w = world(&[("NBAOPS_SCALE__ALARM_MAP", map)], 2, false);
        let r = run(&w, DB_ALARM, wednesday()).await;
        let a = &r.records[0].actions[0];
        assert_eq!(a.outcome, Outcome::NeedsApproval, "{}", a.sentence);
        assert!(w.rds.mutations().is_empty());
        let id = a.approval_id.clone().unwrap_or_default();
        let asked: Vec<_> = r.records[0]
            .alerts
            .iter()
            .filter(|x| x.approval_id.as_deref() == Some(id.as_str()))
            .collect();
        assert_eq!(asked.len(), 1, "{:?}", r.records[0].alerts);
        assert_eq!(r.records[0].alerts.len(), 1, "one alert");
        let who = Decided {
            by: "alice".into(),
            from: "cli".into(),
            at: wednesday(),
        };
        let ledger = w.deps.ledger.as_ref();
        decide(ledger, "dev", &id, Verdict::Approve, who)
            .await
            .unwrap();
        let req = ApprovalRequest::load(ledger, "dev", &id)
            .await
            .unwrap()
            .unwrap();
        let later = wednesday() + Duration::minutes(5);
        let r = handle(approved_input(&req), inv(later), &w).await.unwrap();
        assert_eq!(
            w.rds.mutations(),
            vec!["modify_instance_class nbaops-dev-db db.t3.small immediate=true"],
            "{:?}",
            r.records[0]
        );
        assert_eq!(r.records[0].actions[0].outcome, Outcome::Acted);
        let r = handle(approved_input(&req), inv(later), &w).await.unwrap();
        assert_eq!(w.rds.mutations().len(), 1, "used once: {:?}", r.records[0]);
        assert!(
            r.records[0].notes[0].contains("already used"),
            "{:?}",
            r.records[0]
        );
    }

    #[tokio::test]
    async fn in_dry_run_it_would_ask_and_asks_nobody() {
        let map = r#"{"nbaops-dev-db-memory-low":{"target":"rds:nbaops-dev-db","on_alarm":"up","severity":"P2"}}"#;
        let w = world(
            &[
                ("NBAOPS_SCALE__ALARM_MAP", map),
                ("NBAOPS_GUARD__DRY_RUN", "true"),
            ],
            2,
            false,
        );
        let r = run(&w, DB_ALARM, wednesday()).await;
        let a = &r.records[0].actions[0];
        assert_eq!((a.outcome, a.dry_run), (Outcome::NeedsApproval, true));
        assert!(
            a.sentence.starts_with("Would ask for approval to move"),
            "{}",
            a.sentence
        );
        assert!(r.records[0].alerts.is_empty(), "{:?}", r.records[0].alerts);
        let stored = nbaops_shared::guard::ApprovalRequest::all(w.deps.ledger.as_ref(), "dev")
            .await
            .unwrap();
        assert!(stored.is_empty());
        assert!(w.rds.mutations().is_empty());
    }

    #[tokio::test]
    async fn memcached_gets_one_node() {
        let w = world(&[], 2, false);
        run(&w, CACHE_ALARM, wednesday()).await;
        assert_eq!(
            w.cache.mutations(),
            vec!["set_node_count nbaops-dev-cache 2"]
        );
    }

    /// The template's Memcached alarm: metric math over each node's BytesUsedForCacheItems (what
    /// Memcached publishes), mapped to its cluster by the template's NBAOPS_SCALE__ALARM_MAP.
    #[tokio::test]
    async fn memcached_metric_math_alarm_of_the_template_adds_a_node() {
        const CACHE_MATH: &str = include_str!(
            "../../../events/cloudwatch-alarm/eventbridge-memcached-memory-metric-math.json"
        );
        let w = world(&[], 2, false);
        let r = run(&w, CACHE_MATH, wednesday()).await;
        assert!(w.cache.mutations().is_empty());
        assert!(
            r.records[0]
                .not_for_me
                .as_deref()
                .unwrap_or("")
                .contains("alarm_map"),
            "{:?}",
            r.records[0]
        );
        let map = r#"{"nbaops-dev-cache-memory-high":{"target":"cache:nbaops-dev-cache","on_alarm":"out"}}"#;
        let w = world(&[("NBAOPS_SCALE__ALARM_MAP", map)], 2, false);
        let r = run(&w, CACHE_MATH, wednesday()).await;
        assert_eq!(
            w.cache.mutations(),
            vec!["set_node_count nbaops-dev-cache 2"],
            "{:?}",
            r.records[0]
        );
    }

    #[tokio::test]
    async fn flapping_alarm_stops_acting() {
        let w = world(&[("NBAOPS_SCALE__ASG__COOLDOWN_SECONDS", "0")], 2, false);
        let base: Value = serde_json::from_str(WEB_ALARM).unwrap();
        let mut last = None;
        for i in 0..5 {
            let mut ev = base.clone();
            let t = wednesday() + Duration::minutes(i * 2);
            ev["id"] = json!(format!("evt-{i}"));
            ev["detail"]["state"]["timestamp"] = json!(t.to_rfc3339());
            last = Some(handle(ev, inv(t), &w).await.unwrap());
        }
        let r = last.unwrap();
        assert!(
            r.records[0].notes.iter().any(|n| n.contains("flapping")),
            "{:?}",
            r.records[0].notes
        );
        // The alert was raised once, by the delivery that found it flapping.
        let flapping_alerts = w
            .notifier
            .published()
            .iter()
            .filter(|p| p.message.contains("\"flapping#"))
            .count();
        assert_eq!(flapping_alerts, 1);
        assert!(w.asg.mutations().len() < 5);
    }

    /// A storm of deliveries of a flapping alarm raises its flapping alert once per flap window,
    /// not once per delivery (found by e2e_storm: 17 alerts per flapping alarm in one minute).
    #[tokio::test]
    async fn a_flapping_alarm_is_alerted_once_per_window() {
        let w = world(
            &[
                ("NBAOPS_SCALE__ASG__COOLDOWN_SECONDS", "0"),
                ("NBAOPS_SCALE__FLAP__WINDOW_MINUTES", "1"),
            ],
            2,
            false,
        );
        let base: Value = serde_json::from_str(WEB_ALARM).unwrap();
        let mut flapping = 0;
        for i in 0..30 {
            let mut ev = base.clone();
            let t = wednesday() + Duration::seconds(i);
            ev["id"] = json!(format!("storm-{i}"));
            ev["detail"]["state"]["timestamp"] = json!(t.to_rfc3339());
            let r = handle(ev, inv(t), &w).await.unwrap();
            if r.records[0].notes.iter().any(|n| n.contains("flapping")) {
                flapping += 1;
            }
        }
        assert!(flapping >= 25, "{flapping}");
        let alerts: Vec<String> = w
            .notifier
            .published()
            .iter()
            .filter(|p| p.message.contains("\"flapping#"))
            .map(|p| p.message.clone())
            .collect();
        assert_eq!(alerts.len(), 1, "{alerts:#?}");
        // The next window alerts again (a reminder while it keeps flapping).
        let mut ev = base.clone();
        let t = wednesday() + Duration::seconds(65);
        ev["id"] = json!("storm-later");
        ev["detail"]["state"]["timestamp"] = json!(t.to_rfc3339());
        handle(ev, inv(t), &w).await.unwrap();
        let n = w
            .notifier
            .published()
            .iter()
            .filter(|p| p.message.contains("\"flapping#"))
            .count();
        assert_eq!(n, 2);
    }

    mod properties {
        use super::*;
        use nbaops_shared::events::arbitrary;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(arbitrary::config(48))]

            /// Arbitrary JSON and damaged fixtures: never a panic; what nothing understands is
            /// refused with no AWS mutation, no audit record and no alert.
            #[test]
            fn any_payload_is_answered_and_only_an_understood_event_acts(payload in arbitrary::payload()) {
                let w = world(&[], 2, false);
                let understood = arbitrary::understood(&payload);
                let res = arbitrary::block_on(handle(payload, inv(wednesday()), &w));
                if !understood {
                    arbitrary::refused_cleanly(&res)?;
                    prop_assert!(w.asg.mutations().is_empty());
                    prop_assert!(w.rds.mutations().is_empty());
                    prop_assert!(w.cache.mutations().is_empty());
                    prop_assert!(w.notifier.published().is_empty());
                }
            }
        }
    }
}

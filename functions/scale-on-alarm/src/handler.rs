//! Translates alarm state changes (three deliveries) and the off-peak schedule into guarded
//! scaling of Auto Scaling groups, the RDS class ladder and Memcached nodes.

use chrono::Duration;
use serde_json::{json, Value};

use nbaops_shared::alerts::{Alert, Severity};
use nbaops_shared::events::{classify, AlarmChange, AlarmState, Inbound, ScheduledTick};
use nbaops_shared::guard::{in_change_window, Bounds, Guard, Outcome, ProposedAction};
use nbaops_shared::ports::LedgerWrite;
use nbaops_shared::runtime::{Deps, Invocation, InvocationReport, RecordReport};
use nbaops_shared::Result;

use crate::plan::{
    intent_for, plan_cache, plan_db, plan_group, CacheChange, DbChange, Direction, GroupChange,
    Intent, Target,
};

pub const FUNCTION: &str = "scale-on-alarm";
/// Scheduler input `{"nbaops": {"task": "off-peak-scale-in"}}` scales every group in one step.
pub const OFF_PEAK_TASK: &str = "off-peak-scale-in";

pub async fn handle(
    payload: Value,
    inv: Invocation,
    deps: &'static Deps,
) -> Result<InvocationReport> {
    let mut report = InvocationReport {
        function: FUNCTION.into(),
        env: deps.cfg.env.to_string(),
        records: vec![],
    };
    for inbound in classify(&payload) {
        let rec = match inbound {
            Inbound::Alarm(alarm) => on_alarm(&alarm, &inv, deps).await?,
            Inbound::Schedule(tick) if tick.task().as_deref() == Some(OFF_PEAK_TASK) => on_off_peak(&tick, &inv, deps).await?,
            Inbound::NotForMe(n) => RecordReport::not_for_me("", "unknown", n.reason),
            other => RecordReport::not_for_me(
                other.event_id().unwrap_or(""),
                other.kind(),
                format!("{FUNCTION} takes CloudWatch alarm state changes and the '{OFF_PEAK_TASK}' schedule"),
            ),
        };
        report.records.push(rec);
    }
    Ok(report)
}

/// Counts this alarm's transitions in the flap window, this one included, and hands back the
/// record of this transition (keyed by its state timestamp, so duplicate deliveries count once)
/// for the caller to write — with the action's claim when there is one. When the delivery says the
/// previous transition is older than the window, this one is alone in it and nothing is read
/// (a late delivery of an old transition does not see the transitions after it).
async fn flap_count(
    alarm: &AlarmChange,
    inv: &Invocation,
    deps: &Deps,
) -> Result<(usize, LedgerWrite)> {
    let cfg = &deps.cfg.scale;
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
    let since = inv.now.min(alarm.changed_at) - window;
    let mut seen: std::collections::BTreeSet<String> = deps
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

fn base_record(alarm: &AlarmChange) -> RecordReport {
    RecordReport {
        event_id: alarm.event_id.clone(),
        kind: "alarm".into(),
        summary: format!(
            "alarm '{}' {} -> {} ({:?})",
            alarm.alarm_name,
            alarm.previous_state.map(|s| s.as_str()).unwrap_or("?"),
            alarm.state.as_str(),
            alarm.delivery
        ),
        ..Default::default()
    }
}

async fn on_alarm(alarm: &AlarmChange, inv: &Invocation, deps: &Deps) -> Result<RecordReport> {
    let mut rec = base_record(alarm);
    let intent = intent_for(alarm, &deps.cfg.scale);
    let (target, direction, route) = match intent {
        Intent::NotForMe(reason) => {
            rec.not_for_me = Some(reason.clone());
            rec.notes.push(format!("not for me: {reason}"));
            return Ok(rec);
        }
        Intent::Nothing(why) => {
            rec.notes.push(why);
            return Ok(rec);
        }
        Intent::Scale {
            target,
            direction,
            route,
        } => (target, direction, route),
    };
    let mut guard = deps.guard(&alarm.event_id, inv);
    if alarm.state != AlarmState::InsufficientData {
        let (transitions, record) = flap_count(alarm, inv, deps).await?;
        if transitions >= deps.cfg.scale.flap_transitions {
            guard.ride_along(record);
            guard.flush().await?;
            // One alert per alarm per flap window, however many deliveries a storm brings: the
            // first delivery that sees the flapping claims the window; the others only note it.
            let window_secs = deps.cfg.scale.flap_window_minutes.max(1) * 60;
            let bucket = alarm.changed_at.timestamp().div_euclid(window_secs);
            let expires = alarm.changed_at.timestamp() + 2 * window_secs + 86_400;
            let first = deps
                .ledger
                .put_if_absent(
                    &format!("flap#{}", alarm.alarm_name),
                    &format!("alerted#{bucket}"),
                    &json!({"event_id": alarm.event_id, "at": inv.now}),
                    expires,
                )
                .await?;
            if !first {
                rec.notes.push(format!(
                    "flapping ({transitions} transitions): no action, already alerted for this window"
                ));
                return Ok(rec);
            }
            let alert = Alert::new(
                Severity::P3,
                &deps.cfg.env.to_string(),
                FUNCTION,
                &target.resource(),
                format!("flapping#{}", alarm.alarm_name),
                format!("alarm '{}' is flapping: {} transitions in {} min; nbaops stopped acting on it", alarm.alarm_name, transitions, deps.cfg.scale.flap_window_minutes),
                inv.now,
            )
            .with_runbook("Review the alarm's threshold and evaluation periods; nbaops resumes when it settles.");
            deps.alerts().publish(&alert).await?;
            rec.notes
                .push(format!("flapping ({transitions} transitions): no action"));
            rec.alerts.push(alert);
            return Ok(rec);
        }
        guard.ride_along(record);
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
    match target {
        Target::Group(name) => {
            scale_group(
                &name, direction, severity, &reason, &mut guard, deps, inv, &mut rec,
            )
            .await?
        }
        Target::Db(id) => scale_db(&id, severity, &reason, &mut guard, deps, inv, &mut rec).await?,
        Target::Cache(id) => scale_cache(&id, &reason, &mut guard, deps, inv, &mut rec).await?,
    }
    // No action was checked (nothing to do, busy, at the ceiling): the transition still counts.
    guard.flush().await?;
    Ok(rec)
}

async fn on_off_peak(tick: &ScheduledTick, inv: &Invocation, deps: &Deps) -> Result<RecordReport> {
    let mut rec = RecordReport {
        event_id: tick.event_id.clone(),
        kind: "schedule".into(),
        summary: format!(
            "off-peak scale-in of {} group(s)",
            deps.cfg.scale.groups.len()
        ),
        ..Default::default()
    };
    let mut guard = deps
        .guard(&tick.event_id, inv)
        .with_fleet_size(deps.cfg.scale.groups.len());
    for name in &deps.cfg.scale.groups {
        let reason = format!(
            "off-peak schedule '{}'",
            tick.name.as_deref().unwrap_or(OFF_PEAK_TASK)
        );
        scale_group(
            name,
            Direction::In,
            Severity::P4,
            &reason,
            &mut guard,
            deps,
            inv,
            &mut rec,
        )
        .await?;
    }
    Ok(rec)
}

fn alert_for(
    deps: &Deps,
    sev: Severity,
    resource: &str,
    key: String,
    summary: String,
    inv: &Invocation,
) -> Alert {
    Alert::new(
        sev,
        &deps.cfg.env.to_string(),
        FUNCTION,
        resource,
        key,
        summary,
        inv.now,
    )
}

#[allow(clippy::too_many_arguments)]
async fn scale_group(
    name: &str,
    dir: Direction,
    severity: Severity,
    reason: &str,
    guard: &mut Guard<'_>,
    deps: &Deps,
    inv: &Invocation,
    rec: &mut RecordReport,
) -> Result<()> {
    let resource = format!("asg:{name}");
    let Some(group) = deps.asg.describe_group(name).await? else {
        rec.notes
            .push(format!("{resource} does not exist: no action"));
        return Ok(());
    };
    let plan = deps.cfg.scale.plan_for(name);
    match plan_group(&group, plan, dir) {
        GroupChange::Busy => rec.notes.push(format!(
            "{resource}: a scaling activity is in progress, not stacking another"
        )),
        GroupChange::AtBaseline { desired, floor } => rec.notes.push(format!(
            "{resource}: already at {desired} (floor {floor}), nothing to scale in"
        )),
        GroupChange::AtCeiling { desired, ceiling } => {
            let alert = alert_for(
                deps,
                Severity::P2,
                &resource,
                format!("capacity-exhausted#{resource}"),
                format!("{name} is at its ceiling ({desired}/{ceiling}) and the alarm still fires: capacity exhausted"),
                inv,
            )
            .with_details(json!({"reason": reason, "desired": desired, "ceiling": ceiling, "max_size": group.max_size}))
            .with_runbook("Raise scale.asg.ceiling (or the group's MaxSize) after checking cost, or find what is loading the tier.");
            deps.alerts().publish(&alert).await?;
            rec.notes
                .push(format!("{resource}: at ceiling {ceiling}, P2 raised"));
            rec.alerts.push(alert);
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
                reason: reason.to_string(),
                severity,
                disruptive: false,
                bounds: Some(Bounds {
                    proposed: to as f64,
                    min: min as f64,
                    max: max as f64,
                }),
                cooldown_key: "asg.scale".into(),
                cooldown_seconds: deps.cfg.scale.asg_cooldown_seconds,
                before: json!({"desired": from, "min": group.min_size, "max": group.max_size}),
                after: json!({"desired": to}),
            };
            let audit = guard
                .run(&action, || deps.asg.set_desired_capacity(name, to))
                .await?;
            let words = audit.outcome_words();
            rec.notes
                .push(format!("{resource}: desired {from} -> {to}: {words}"));
            if matches!(audit.outcome, Outcome::Acted | Outcome::Failed) {
                let sev = if audit.outcome == Outcome::Failed {
                    Severity::P2
                } else {
                    Severity::P3
                };
                let alert = alert_for(
                    deps,
                    sev,
                    &resource,
                    format!("{verb}#{resource}"),
                    format!("{name}: desired {from} -> {to} ({words})"),
                    inv,
                )
                .with_details(
                    json!({"reason": reason, "before": action.before, "after": action.after}),
                )
                .with_action(format!("set_desired_capacity {name} {to}: {words}"));
                deps.alerts().publish(&alert).await?;
                rec.alerts.push(alert);
            }
            rec.actions.push(audit);
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn scale_db(
    id: &str,
    severity: Severity,
    reason: &str,
    guard: &mut Guard<'_>,
    deps: &Deps,
    inv: &Invocation,
    rec: &mut RecordReport,
) -> Result<()> {
    let resource = format!("rds:{id}");
    let Some(db) = deps.rds.describe_instance(id).await? else {
        rec.notes
            .push(format!("{resource} does not exist: no action"));
        return Ok(());
    };
    let ladder = &deps.cfg.scale.rds_ladder;
    match plan_db(&db, ladder) {
        DbChange::NotAvailable { status } => rec.notes.push(format!(
            "{resource} is '{status}', not 'available': no change now"
        )),
        DbChange::AlreadyPending { class } => rec
            .notes
            .push(format!("{resource}: change to {class} already pending")),
        DbChange::NotOnLadder { class } => {
            rec.notes.push(format!(
                "{resource}: class {class} is not on scale.rds.ladder; not touching it"
            ));
        }
        DbChange::AtTop { class } => {
            let alert = alert_for(
                deps,
                Severity::P2,
                &resource,
                format!("capacity-exhausted#{resource}"),
                format!("{id} is already {class}, the top of the class ladder, and the alarm still fires"),
                inv,
            )
            .with_details(json!({"reason": reason, "ladder": ladder}))
            .with_runbook("Look for the query or connection storm first; a bigger class needs a capacity review.");
            deps.alerts().publish(&alert).await?;
            rec.notes
                .push(format!("{resource}: top rung {class}, P2 raised"));
            rec.alerts.push(alert);
        }
        DbChange::Up {
            from,
            to,
            rung,
            top,
        } => {
            // Inside the change window, or for a P1, the change is applied now; otherwise RDS
            // applies it in the instance's maintenance window, which infra aligns with ours.
            let immediate =
                severity == Severity::P1 || in_change_window(&deps.cfg.guard.window, inv.now);
            let action = ProposedAction {
                action: "rds.modify_class".into(),
                resource: resource.clone(),
                tags: db.tags.clone(),
                reason: reason.to_string(),
                severity,
                disruptive: immediate,
                bounds: Some(Bounds {
                    proposed: rung as f64,
                    min: 0.0,
                    max: top as f64,
                }),
                cooldown_key: "rds.class".into(),
                cooldown_seconds: deps.cfg.scale.rds_cooldown_seconds,
                before: json!({"class": from, "status": db.status}),
                after: json!({"class": to, "apply_immediately": immediate}),
            };
            let audit = guard
                .run(&action, || {
                    deps.rds.modify_instance_class(id, &to, immediate)
                })
                .await?;
            let words = audit.outcome_words();
            let when = if immediate {
                "now"
            } else {
                "at the next maintenance window"
            };
            rec.notes
                .push(format!("{resource}: {from} -> {to} {when}: {words}"));
            if matches!(audit.outcome, Outcome::Acted | Outcome::Failed) {
                let sev = if audit.outcome == Outcome::Failed || audit.emergency_change {
                    Severity::P2
                } else {
                    Severity::P3
                };
                let alert = alert_for(deps, sev, &resource, format!("rds-class#{resource}"), format!("{id}: {from} -> {to} {when} ({words})"), inv)
                    .with_details(json!({"reason": reason, "before": action.before, "after": action.after, "emergency_change": audit.emergency_change}))
                    .with_action(format!("modify_db_instance {id} class {to} apply_immediately={immediate}: {words}"));
                deps.alerts().publish(&alert).await?;
                rec.alerts.push(alert);
            }
            rec.actions.push(audit);
        }
    }
    Ok(())
}

async fn scale_cache(
    id: &str,
    reason: &str,
    guard: &mut Guard<'_>,
    deps: &Deps,
    inv: &Invocation,
    rec: &mut RecordReport,
) -> Result<()> {
    let resource = format!("cache:{id}");
    let Some(c) = deps.cache.describe_cluster(id).await? else {
        rec.notes
            .push(format!("{resource} does not exist: no action"));
        return Ok(());
    };
    match plan_cache(&c, deps.cfg.scale.cache_max_nodes) {
        CacheChange::NotMemcached { engine } => rec.notes.push(format!(
            "{resource} runs {engine}, not memcached: not touching it"
        )),
        CacheChange::NotAvailable { status } => rec
            .notes
            .push(format!("{resource} is '{status}': no change now")),
        CacheChange::AtCap { nodes, cap } => {
            let alert = alert_for(
                deps,
                Severity::P2,
                &resource,
                format!("capacity-exhausted#{resource}"),
                format!("{id} has {nodes} nodes, the cap of {cap}, and memory is still high"),
                inv,
            )
            .with_details(json!({"reason": reason}));
            deps.alerts().publish(&alert).await?;
            rec.notes
                .push(format!("{resource}: at node cap {cap}, P2 raised"));
            rec.alerts.push(alert);
        }
        CacheChange::AddNode { from, to, cap } => {
            let action = ProposedAction {
                action: "cache.add_node".into(),
                resource: resource.clone(),
                tags: c.tags.clone(),
                reason: reason.to_string(),
                severity: Severity::P3,
                disruptive: false,
                bounds: Some(Bounds {
                    proposed: to as f64,
                    min: 1.0,
                    max: cap as f64,
                }),
                cooldown_key: "cache.nodes".into(),
                cooldown_seconds: deps.cfg.scale.cache_cooldown_seconds,
                before: json!({"nodes": from}),
                after: json!({"nodes": to}),
            };
            let audit = guard
                .run(&action, || deps.cache.set_node_count(id, to))
                .await?;
            let words = audit.outcome_words();
            rec.notes
                .push(format!("{resource}: nodes {from} -> {to}: {words}"));
            if matches!(audit.outcome, Outcome::Acted | Outcome::Failed) {
                let sev = if audit.outcome == Outcome::Failed {
                    Severity::P2
                } else {
                    Severity::P3
                };
                let alert = alert_for(
                    deps,
                    sev,
                    &resource,
                    format!("cache-nodes#{resource}"),
                    format!("{id}: nodes {from} -> {to} ({words})"),
                    inv,
                )
                .with_action(format!("modify_cache_cluster {id} nodes {to}: {words}"));
                deps.alerts().publish(&alert).await?;
                rec.alerts.push(alert);
            }
            rec.actions.push(audit);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use nbaops_shared::config::{layer, Config, Env};
    use nbaops_shared::fakes::*;
    use nbaops_shared::guard::{GuardStep, Switches};
    use nbaops_shared::ports::*;

    const WEB_ALARM: &str =
        include_str!("../../../events/cloudwatch-alarm/eventbridge-single-metric-alarm.json");
    const WEB_OK: &str = include_str!("../../../events/cloudwatch-alarm/eventbridge-ok.json");
    const DB_ALARM: &str =
        include_str!("../../../events/cloudwatch-alarm/eventbridge-rds-memory-alarm.json");
    const CACHE_ALARM: &str =
        include_str!("../../../events/cloudwatch-alarm/sns-memcached-memory-alarm.json");
    const INSUFFICIENT: &str =
        include_str!("../../../events/cloudwatch-alarm/direct-action-insufficient-data.json");
    const S3: &str = include_str!("../../../events/not-for-me/s3-put.json");

    struct World {
        deps: &'static Deps,
        asg: &'static FakeAutoScaling,
        rds: &'static FakeRds,
        cache: &'static FakeElastiCache,
        notifier: &'static FakeNotifier,
    }

    fn world(extra: &[(&str, &str)], web_desired: i32, protect: bool) -> World {
        let mut pairs = vec![
            ("NBAOPS_SCALE__GROUPS", "nbaops-dev-web,nbaops-dev-worker"),
            ("NBAOPS_SCALE__RDS__INSTANCES", "nbaops-dev-db"),
            ("NBAOPS_SCALE__CACHE__CLUSTERS", "nbaops-dev-cache"),
            (
                "NBAOPS_ALERTS_TOPIC_ARN",
                "arn:aws:sns:us-east-1:123456789012:nbaops-dev-alerts",
            ),
        ];
        pairs.extend_from_slice(extra);
        let vars = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let cfg = Config::from_settings(
            Env::Dev,
            FUNCTION,
            layer(Env::Dev, &vars, &Default::default()).unwrap(),
        )
        .unwrap();
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
        let notifier = leak(FakeNotifier::default());
        let deps = leak(Deps {
            cfg,
            asg: Box::new(Shared(asg)),
            rds: Box::new(Shared(rds)),
            cache: Box::new(Shared(cache)),
            notifier: Box::new(Shared(notifier)),
            params: None,
            ledger: Box::new(FakeLedger::default()),
            switches: Switches::default(),
        });
        World {
            deps,
            asg,
            rds,
            cache,
            notifier,
        }
    }

    fn inv(now: chrono::DateTime<Utc>) -> Invocation {
        Invocation {
            request_id: "req".into(),
            now,
            deadline: None,
        }
    }
    fn wednesday() -> chrono::DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
    }

    async fn run(w: &World, fixture: &str, now: chrono::DateTime<Utc>) -> InvocationReport {
        handle(serde_json::from_str(fixture).unwrap(), inv(now), w.deps)
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
        let r = handle(ev, inv(wednesday()), w.deps).await.unwrap();
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
            last = Some(handle(ev, inv(t), w.deps).await.unwrap());
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
            let r = handle(ev, inv(t), w.deps).await.unwrap();
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
        handle(ev, inv(t), w.deps).await.unwrap();
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
                let res = arbitrary::block_on(handle(payload, inv(wednesday()), w.deps));
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

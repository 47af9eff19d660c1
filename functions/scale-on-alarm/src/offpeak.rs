//! Off-peak back to baseline in one window (issue #17). The cron run (`OffPeakScaleInCron`) opens
//! a window of `scale.offpeak.window_minutes`; each run moves every managed group above its
//! baseline one step in, after three checks — its CPU of the last minutes is low, no alarm about
//! it is in ALARM, no scaling activity is in progress — and, while a group is still above its
//! baseline and the window is not over, schedules the next run as a one-time EventBridge
//! Scheduler schedule `scale.offpeak.step_minutes` later. Never below max(baseline, MinSize).
//!
//! A follow-up carries `{"nbaops":{"task":"off-peak-scale-in","window_end":"<rfc3339>","step":k}}`;
//! its work id (the guard's idempotency key) and the next schedule's name derive from the window
//! and the step, so a duplicate delivery steps once and schedules once.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, SubsecRound, Utc};
use serde_json::{json, Value};

use nbaops_shared::alerts::Severity;
use nbaops_shared::config::{AlarmRoute, FollowUps, OffPeak, ScaleConfig};
use nbaops_shared::events::ScheduledTick;
use nbaops_shared::guard::{AuditRecord, Explanation, GuardStep, Observation, Outcome};
use nbaops_shared::ports::{MetricAlarm, MetricQuery, OneTimeSchedule};
use nbaops_shared::runtime::{Ctx, RecordReport, Work};
use nbaops_shared::Result;

use crate::handler::{ScaleOnAlarm, Why, OFF_PEAK_TASK};
use crate::plan::{plan_group, Direction, GroupChange};

/// The metric the CPU check reads: EC2 publishes CPUUtilization per Auto Scaling group under the
/// `AutoScalingGroupName` dimension
/// (<https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/viewing_metrics_with_cloudwatch.html>;
/// infra/tests/check_template.py checks it against infra/tests/published_metrics.json).
pub const CPU_NAMESPACE: &str = "AWS/EC2";
pub const CPU_METRIC: &str = "CPUUtilization";
pub const CPU_DIMENSION: &str = "AutoScalingGroupName";
/// One datapoint a minute: for regular-resolution metrics a period is a multiple of 60 seconds,
/// and one call returns at most 1,440 datapoints, hence `scale.offpeak.lookback_minutes` <= 1440
/// (<https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_GetMetricStatistics.html>).
pub const CPU_PERIOD_SECONDS: i32 = 60;
/// DescribeAlarms `StateValue`: one of OK | ALARM | INSUFFICIENT_DATA
/// (<https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_DescribeAlarms.html>).
pub const ALARM_STATE: &str = "ALARM";

/// Which run of the night this is.
#[derive(Debug, Clone, PartialEq)]
pub struct OffPeakRun {
    /// The work id: the cron run's event id, or `off-peak/<window_end>/step-<k>` for a follow-up.
    pub id: String,
    pub window_end: DateTime<Utc>,
    /// 0 for the cron run, k for the k-th follow-up.
    pub step: u64,
}

impl OffPeakRun {
    pub fn is_follow_up(&self) -> bool {
        self.step > 0
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn follow_up_id(window_end: DateTime<Utc>, step: u64) -> String {
    format!("off-peak/{}/step-{step}", rfc3339(window_end))
}

/// Reads the run from the tick: no `window_end` and no `step` is the cron run (the window starts
/// now); both is a follow-up. Anything else is an error in words, and nothing is done.
pub fn run_of(
    tick: &ScheduledTick,
    now: DateTime<Utc>,
    cfg: &OffPeak,
) -> std::result::Result<OffPeakRun, String> {
    let block = tick.detail.get("nbaops").unwrap_or(&Value::Null);
    let end = block.get("window_end");
    let step = block.get("step");
    match (end, step) {
        (None, None) => Ok(OffPeakRun {
            id: tick.event_id.clone(),
            window_end: now.trunc_subsecs(0) + Duration::minutes(cfg.window_minutes),
            step: 0,
        }),
        (Some(end), Some(step)) => {
            let window_end = end
                .as_str()
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.with_timezone(&Utc))
                .ok_or_else(|| {
                    format!("off-peak follow-up whose window_end {end} is not an RFC 3339 time")
                })?;
            let step = step.as_u64().filter(|k| *k >= 1).ok_or_else(|| {
                format!("off-peak follow-up whose step {step} is not a whole number >= 1")
            })?;
            if window_end - now > Duration::minutes(cfg.window_minutes) {
                return Err(format!(
                    "off-peak follow-up whose window ends at {}, more than scale.offpeak.window_minutes ({}) from now: not a window an off-peak run opened",
                    rfc3339(window_end),
                    cfg.window_minutes
                ));
            }
            Ok(OffPeakRun {
                id: follow_up_id(window_end, step),
                window_end: window_end.trunc_subsecs(0),
                step,
            })
        }
        _ => Err(
            "off-peak follow-up with only one of window_end and step: both or neither".to_string(),
        ),
    }
}

/// The CPU query of one group: the average of each of the last `lookback_minutes` minutes.
pub fn cpu_query(group: &str, now: DateTime<Utc>, cfg: &OffPeak) -> MetricQuery {
    let to = now.trunc_subsecs(0);
    MetricQuery {
        namespace: CPU_NAMESPACE.into(),
        metric: CPU_METRIC.into(),
        dimensions: [(CPU_DIMENSION.to_string(), group.to_string())].into(),
        statistic: "Average".into(),
        from: to - Duration::minutes(cfg.lookback_minutes),
        to,
        period_seconds: CPU_PERIOD_SECONDS,
    }
}

/// Check (a): every minute's average below the threshold. No datapoint is no evidence.
#[derive(Debug, Clone, PartialEq)]
pub enum Cpu {
    Low { highest: f64, points: usize },
    High { highest: f64 },
    NoData,
}

pub fn cpu_check(points: &[(DateTime<Utc>, f64)], below: f64) -> Cpu {
    let Some(highest) =
        points
            .iter()
            .map(|(_, v)| *v)
            .reduce(|a, b| if b > a || b.is_nan() { b } else { a })
    else {
        return Cpu::NoData;
    };
    // NaN compares false: not below, so not low.
    if highest < below {
        Cpu::Low {
            highest,
            points: points.len(),
        }
    } else {
        Cpu::High { highest }
    }
}

/// Check (b): the alarms in ALARM that are about this group — by their AutoScalingGroupName
/// dimension or by their `scale.alarm_map` target — except those mapped to scale it *in*
/// (a low-load alarm in ALARM is a reason to step in, not against it).
pub fn alarms_on_group(
    group: &str,
    alarms: &[MetricAlarm],
    map: &BTreeMap<String, AlarmRoute>,
) -> Vec<String> {
    let target = format!("asg:{group}");
    alarms
        .iter()
        .filter(|a| a.in_alarm())
        .filter(|a| {
            let route = map
                .get(&a.name)
                .or_else(|| a.arn.as_ref().and_then(|arn| map.get(arn)));
            if route.is_some_and(|r| r.on_alarm == "in") {
                return false;
            }
            a.dimensions.get(CPU_DIMENSION).map(String::as_str) == Some(group)
                || route.is_some_and(|r| r.target == target)
        })
        .map(|a| a.name.clone())
        .collect()
}

/// What a group's step leaves for the next run: still above its floor after this run, and not
/// held by something the night will not change (protected tag, kill switch, dry-run, bounds).
pub fn still_pending(audit: &AuditRecord, floor: i32) -> bool {
    match audit.outcome {
        Outcome::Acted => audit
            .after
            .get("desired")
            .and_then(Value::as_i64)
            .is_some_and(|d| d > i64::from(floor)),
        // Waiting for a person: the approved task carries it out, not the next step.
        Outcome::WouldAct | Outcome::NeedsApproval => false,
        Outcome::Failed => true,
        Outcome::Skipped => !matches!(
            audit.stopped_by,
            Some(GuardStep::ProtectedTag | GuardStep::KillSwitch | GuardStep::Bounds)
        ),
    }
}

/// The name of the schedule of step `step` of the window: the same window and step, the same
/// name, so a second create is refused and a duplicate delivery schedules nothing more.
pub fn schedule_name(window_end: DateTime<Utc>, step: u64) -> String {
    OneTimeSchedule::name_for(&format!(
        "off-peak-{}-step-{step}",
        window_end.format("%Y%m%dT%H%M%SZ")
    ))
}

/// The follow-up after this run, or why there is none.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    Schedule(OneTimeSchedule),
    WindowOver { at: DateTime<Utc> },
    NotConfigured,
}

pub fn next_step(run: &OffPeakRun, now: DateTime<Utc>, cfg: &OffPeak, f: &FollowUps) -> Next {
    let at = now.trunc_subsecs(0) + Duration::minutes(cfg.step_minutes);
    if at > run.window_end {
        return Next::WindowOver { at };
    }
    if !f.enabled() {
        return Next::NotConfigured;
    }
    let step = run.step + 1;
    Next::Schedule(OneTimeSchedule {
        group: f.group.clone(),
        name: schedule_name(run.window_end, step),
        at,
        target_arn: f.target_arn.clone(),
        role_arn: f.role_arn.clone(),
        input: json!({"nbaops": {
            "task": OFF_PEAK_TASK,
            "window_end": rfc3339(run.window_end),
            "step": step,
        }}),
    })
}

/// Why a group was left as it is this run, in words; `None` when every check passed.
async fn checks(
    f: &ScaleOnAlarm,
    group: &str,
    alarms: &mut Option<std::result::Result<Vec<MetricAlarm>, String>>,
    ctx: &Ctx<'_>,
) -> (Option<String>, String, Option<f64>) {
    let scale: &ScaleConfig = &ctx.cfg().scale;
    let cfg = &scale.offpeak;
    let mut failed = Vec::new();
    let mut passed = String::new();
    let mut low = None;
    match f.cw.statistics(&cpu_query(group, ctx.now(), cfg)).await {
        Err(e) => failed.push(format!("CPU unreadable ({e})")),
        Ok(points) => match cpu_check(&points, cfg.cpu_below) {
            Cpu::NoData => failed.push(format!(
                "no CPU datapoint in the last {} min: no evidence the load is low",
                cfg.lookback_minutes
            )),
            Cpu::High { highest } => failed.push(format!(
                "CPU {highest:.1}% in the last {} min, not below {}%",
                cfg.lookback_minutes, cfg.cpu_below
            )),
            Cpu::Low { highest, points } => {
                low = Some(highest);
                passed = format!(
                "CPU at most {highest:.1}% over {points} datapoint(s) of the last {} min (< {}%)",
                cfg.lookback_minutes, cfg.cpu_below
            )
            }
        },
    }
    if alarms.is_none() {
        *alarms = Some(
            f.cw.alarms_in_state(ALARM_STATE)
                .await
                .map_err(|e| e.to_string()),
        );
    }
    match alarms.as_ref() {
        Some(Ok(all)) => {
            let on = alarms_on_group(group, all, &scale.alarm_map);
            if !on.is_empty() {
                failed.push(format!("alarm(s) in ALARM: {}", on.join(", ")));
            }
        }
        Some(Err(e)) => failed.push(format!("alarms unreadable ({e})")),
        None => {}
    }
    if failed.is_empty() {
        (None, passed, low)
    } else {
        (Some(failed.join("; ")), passed, low)
    }
}

impl ScaleOnAlarm {
    pub(crate) async fn on_off_peak(
        &self,
        tick: &ScheduledTick,
        ctx: &Ctx<'_>,
    ) -> Result<RecordReport> {
        let scale = &ctx.cfg().scale;
        let now = ctx.now();
        let run = match run_of(tick, now, &scale.offpeak) {
            Ok(run) => run,
            Err(reason) => {
                return Ok(ctx
                    .work(&tick.event_id, "schedule", "off-peak scale-in")
                    .not_for_me(reason))
            }
        };
        let groups = &scale.groups;
        let mut w = ctx
            .work(
                &run.id,
                "schedule",
                format!(
                    "off-peak scale-in, step {} of the window ending {}: {} group(s)",
                    run.step,
                    rfc3339(run.window_end),
                    groups.len()
                ),
            )
            .with_fleet_size(groups.len());
        if now > run.window_end {
            w.note(format!(
                "the off-peak window ended at {}: no step, nothing scheduled",
                rfc3339(run.window_end)
            ));
            return w.done().await;
        }
        let mut alarms = None;
        let mut pending = Vec::new();
        for name in groups {
            if self.off_peak_group(name, &run, &mut alarms, &mut w).await? {
                pending.push(name.as_str());
            }
        }
        // The quiet hours are also when the alarms catch up with the class (thresholds.rs) and,
        // where configured, Memcached gives back a node (cache_memory.rs).
        for id in &scale.rds_instances {
            self.align_db_alarms_noted(id, &mut w).await?;
        }
        if scale.capacity.cache_scale_in {
            for id in &scale.cache_clusters {
                self.cache_scale_in(id, &mut w).await;
            }
        }
        if pending.is_empty() {
            w.note("no group left above its baseline: nothing more to schedule tonight");
            return w.done().await;
        }
        let left = pending.join(", ");
        match next_step(&run, now, &scale.offpeak, &scale.followup) {
            Next::WindowOver { at } => w.note(format!(
                "{left} still above baseline, but the next step ({}) would fall after the window end ({}): left for the next night",
                rfc3339(at),
                rfc3339(run.window_end)
            )),
            Next::NotConfigured => w.note(format!(
                "{left} still above baseline; scale.followup.target_arn/role_arn are not set, so no next step is scheduled: one step per cron run"
            )),
            Next::Schedule(s) if ctx.dry_run().await => w.note(format!(
                "{left} still above baseline: dry-run: would schedule step {} at {} ({}/{})",
                run.step + 1,
                rfc3339(s.at),
                s.group,
                s.name
            )),
            Next::Schedule(s) => {
                let created = self.scheduler.create_once(&s).await?;
                w.note(if created {
                    format!(
                        "{left} still above baseline: step {} scheduled at {} ({}/{})",
                        run.step + 1,
                        rfc3339(s.at),
                        s.group,
                        s.name
                    )
                } else {
                    format!(
                        "{left} still above baseline: step {} was already scheduled ({}/{}), nothing more",
                        run.step + 1,
                        s.group,
                        s.name
                    )
                });
            }
        }
        w.done().await
    }

    /// One group: its checks, then at most one step in. True when it is left above its baseline
    /// for the next run.
    async fn off_peak_group(
        &self,
        name: &str,
        run: &OffPeakRun,
        alarms: &mut Option<std::result::Result<Vec<MetricAlarm>, String>>,
        w: &mut Work<'_>,
    ) -> Result<bool> {
        let ctx = w.ctx;
        let scale = &ctx.cfg().scale;
        let resource = format!("asg:{name}");
        let Some(group) = self.asg.describe_group(name).await? else {
            w.note(format!("{resource} does not exist: no action"));
            return Ok(false);
        };
        let plan = scale.plan_for(name);
        let floor = plan.baseline.max(group.min_size);
        match plan_group(&group, plan, Direction::In) {
            GroupChange::AtBaseline { desired, floor } => {
                w.note(format!(
                    "{resource}: at {desired} (floor {floor}), nothing to scale in"
                ));
                return Ok(false);
            }
            GroupChange::Busy => {
                w.note(format!(
                    "{resource}: left at {} — a scaling activity is in progress",
                    group.desired
                ));
                return Ok(true);
            }
            _ => {}
        }
        let (failed, passed, highest) = checks(self, name, alarms, &ctx).await;
        if let Some(why) = failed {
            w.note(format!("{resource}: left at {} — {why}", group.desired));
            return Ok(true);
        }
        let reason = format!(
            "off-peak step {} (window ends {}): {passed}; no alarm in ALARM; no scaling activity",
            run.step,
            rfc3339(run.window_end)
        );
        let cfg = &ctx.cfg().scale.offpeak;
        let mut because = Explanation::new(
            "",
            "",
            "",
            format!("SPEC 2.5 off-peak scale-in, step {}", run.step),
        )
        .key("scale.offpeak.cpu_below")
        .key("scale.offpeak.lookback_minutes")
        .lasting(format!("{} min", cfg.lookback_minutes));
        if let Some(h) = highest {
            because = because.observe(Observation::against(
                "highest CPU",
                h,
                "%",
                "<",
                cfg.cpu_below,
            ));
        }
        let why = Why {
            reason: &reason,
            because: &because,
            severity: Severity::P4,
            episode: None,
        };
        let before = w.rec.actions.len();
        self.scale_group(name, Direction::In, &why, w).await?;
        Ok(match w.rec.actions.get(before) {
            Some(audit) => {
                let pending = still_pending(audit, floor);
                if audit.outcome == Outcome::WouldAct {
                    w.note(format!(
                        "{resource}: dry-run, the next steps are not scheduled"
                    ));
                }
                pending
            }
            None => false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use nbaops_shared::events::{classify, Inbound};

    fn cfg() -> OffPeak {
        OffPeak {
            cpu_below: 40.0,
            lookback_minutes: 15,
            step_minutes: 10,
            window_minutes: 240,
        }
    }
    fn night() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 23, 0, 0).unwrap()
    }
    fn tick(v: Value) -> ScheduledTick {
        match classify(&v).remove(0) {
            Inbound::Schedule(t) => t,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_cron_run_opens_the_window_and_a_follow_up_carries_it() {
        let t = tick(json!({"nbaops": {"task": OFF_PEAK_TASK, "id": "exec-1"}}));
        let run = run_of(&t, night(), &cfg()).unwrap();
        assert_eq!(run.id, "exec-1");
        assert_eq!(run.step, 0);
        assert_eq!(run.window_end, night() + Duration::minutes(240));

        let f = FollowUps {
            group: "nbaops-dev-followups".into(),
            target_arn: "arn:aws:lambda:us-east-1:123456789012:function:f:live".into(),
            role_arn: "arn:aws:iam::123456789012:role/r".into(),
        };
        let Next::Schedule(s) = next_step(&run, night(), &cfg(), &f) else {
            panic!()
        };
        assert_eq!(s.at, night() + Duration::minutes(10));
        assert_eq!(s.name, "off-peak-20261126T030000Z-step-1");
        assert_eq!(
            s.input,
            json!({"nbaops": {"task": OFF_PEAK_TASK, "window_end": "2026-11-26T03:00:00Z", "step": 1}})
        );
        assert!(s.check().is_ok());

        // The follow-up, delivered by the scheduler with that input, is step 1 of that window.
        let later = night() + Duration::minutes(10);
        let run1 = run_of(&tick(s.input.clone()), later, &cfg()).unwrap();
        assert_eq!(run1.step, 1);
        assert_eq!(run1.window_end, run.window_end);
        assert_eq!(run1.id, "off-peak/2026-11-26T03:00:00Z/step-1");
        // A duplicate delivery, a minute later, is the same work (the same idempotency key).
        let again = run_of(&tick(s.input.clone()), later + Duration::minutes(1), &cfg()).unwrap();
        assert_eq!(again.id, run1.id);
        let Next::Schedule(s2) = next_step(&run1, later, &cfg(), &f) else {
            panic!()
        };
        assert_eq!(s2.name, "off-peak-20261126T030000Z-step-2");
        assert_ne!(s2.name, s.name);

        // Near the end: the next step would fall after the window.
        let late = run.window_end - Duration::minutes(5);
        assert_eq!(
            next_step(&run1, late, &cfg(), &f),
            Next::WindowOver {
                at: late + Duration::minutes(10)
            }
        );
        // Without a target and a role: none.
        assert_eq!(
            next_step(&run, night(), &cfg(), &FollowUps::default()),
            Next::NotConfigured
        );
    }

    #[test]
    fn malformed_follow_ups_are_refused_in_words() {
        let now = night();
        for (v, words) in [
            (json!({"window_end": "yesterday", "step": 1}), "RFC 3339"),
            (json!({"window_end": 7, "step": 1}), "RFC 3339"),
            (
                json!({"window_end": "2026-11-26T01:00:00Z", "step": "1"}),
                "whole number",
            ),
            (
                json!({"window_end": "2026-11-26T01:00:00Z", "step": 0}),
                "whole number",
            ),
            (
                json!({"window_end": "2026-11-26T01:00:00Z", "step": -2}),
                "whole number",
            ),
            (
                json!({"window_end": "2026-11-26T01:00:00Z", "step": 1.5}),
                "whole number",
            ),
            (
                json!({"window_end": "2026-11-26T01:00:00Z"}),
                "both or neither",
            ),
            (json!({"step": 3}), "both or neither"),
            // Further ahead than any window this function opens.
            (
                json!({"window_end": "2026-11-27T01:00:00Z", "step": 1}),
                "not a window",
            ),
        ] {
            let mut block = v.clone();
            block["task"] = json!(OFF_PEAK_TASK);
            let e = run_of(&tick(json!({ "nbaops": block })), now, &cfg()).unwrap_err();
            assert!(e.contains(words), "{v}: {e}");
        }
    }

    #[test]
    fn the_cpu_query_is_one_average_a_minute_over_the_lookback() {
        let q = cpu_query("web", night(), &cfg());
        assert_eq!(
            (q.namespace.as_str(), q.metric.as_str()),
            (CPU_NAMESPACE, CPU_METRIC)
        );
        assert_eq!(
            q.dimensions.get("AutoScalingGroupName").map(String::as_str),
            Some("web")
        );
        assert_eq!(q.statistic, "Average");
        assert_eq!(q.to - q.from, Duration::minutes(15));
        // GetMetricStatistics: a regular-resolution period is a multiple of 60 and one call
        // returns at most 1,440 datapoints (the config caps the lookback at 1440 minutes).
        assert_eq!(q.period_seconds % 60, 0);
        let max = OffPeak {
            lookback_minutes: 1440,
            ..cfg()
        };
        let q = cpu_query("web", night(), &max);
        assert!((q.to - q.from).num_seconds() / i64::from(q.period_seconds) <= 1440);
        // DescribeAlarms' StateValue is one of OK | ALARM | INSUFFICIENT_DATA.
        assert!(["OK", "ALARM", "INSUFFICIENT_DATA"].contains(&ALARM_STATE));
    }

    #[test]
    fn cpu_is_low_only_when_every_minute_was_and_there_was_data() {
        let t = night();
        assert_eq!(cpu_check(&[], 40.0), Cpu::NoData);
        assert_eq!(
            cpu_check(&[(t, 12.0), (t, 39.9)], 40.0),
            Cpu::Low {
                highest: 39.9,
                points: 2
            }
        );
        assert_eq!(
            cpu_check(&[(t, 12.0), (t, 40.0), (t, 5.0)], 40.0),
            Cpu::High { highest: 40.0 }
        );
        assert!(matches!(
            cpu_check(&[(t, 1.0), (t, f64::NAN)], 40.0),
            Cpu::High { .. }
        ));
    }

    fn alarm(name: &str, state: &str, group: Option<&str>) -> MetricAlarm {
        MetricAlarm {
            name: name.into(),
            arn: None,
            state: state.into(),
            state_updated: None,
            namespace: Some("AWS/EC2".into()),
            metric: Some("CPUUtilization".into()),
            dimensions: group
                .map(|g| [(CPU_DIMENSION.to_string(), g.to_string())].into())
                .unwrap_or_default(),
            threshold: Some(70.0),
            comparison: Some("GreaterThanThreshold".into()),
        }
    }

    #[test]
    fn an_alarm_in_alarm_about_the_group_holds_it() {
        let route = |target: &str, on_alarm: &str| AlarmRoute {
            target: target.into(),
            on_alarm: on_alarm.into(),
            on_ok: "none".into(),
            severity: None,
        };
        let map: BTreeMap<String, AlarmRoute> = [
            ("web-degraded".to_string(), route("asg:web", "out")),
            ("web-cpu-low".to_string(), route("asg:web", "in")),
        ]
        .into();
        let alarms = vec![
            alarm("web-cpu-high", "ALARM", Some("web")),
            alarm("worker-cpu-high", "ALARM", Some("worker")),
            alarm("web-net", "OK", Some("web")),
            alarm("web-degraded", "ALARM", None),
            alarm("web-cpu-low", "ALARM", Some("web")),
        ];
        assert_eq!(
            alarms_on_group("web", &alarms, &map),
            vec!["web-cpu-high", "web-degraded"]
        );
        assert_eq!(
            alarms_on_group("worker", &alarms, &map),
            vec!["worker-cpu-high"]
        );
        assert!(alarms_on_group("other", &alarms, &map).is_empty());
    }

    /// The off-peak run through the handler, on the fakes.
    mod runs {
        use super::*;
        use crate::handler::tests::{handle, inv, world, World};
        use nbaops_shared::runtime::InvocationReport;

        const FOLLOWUPS: [(&str, &str); 3] = [
            (
                "NBAOPS_SCALE__FOLLOWUP__TARGET_ARN",
                "arn:aws:lambda:us-east-1:123456789012:function:nbaops-dev-scale-on-alarm:live",
            ),
            (
                "NBAOPS_SCALE__FOLLOWUP__ROLE_ARN",
                "arn:aws:iam::123456789012:role/nbaops-dev-scale-followups",
            ),
            ("NBAOPS_SCALE__FOLLOWUP__GROUP", "nbaops-dev-followups"),
        ];

        /// The web group at `desired` (baseline 2, MinSize 2); the worker at 3 (baseline 2,
        /// MinSize 1) is held by an alarm unless `worker_free`.
        fn night_world(extra: &[(&str, &str)], desired: i32) -> World {
            let mut vars = FOLLOWUPS.to_vec();
            vars.extend_from_slice(extra);
            let w = world(&vars, desired, false);
            w.cw.alarms.lock().unwrap().insert(
                "worker-cpu-high".into(),
                alarm("worker-cpu-high", "ALARM", Some("nbaops-dev-worker")),
            );
            w
        }

        fn low_cpu(w: &World, group: &str, until: DateTime<Utc>, value: f64) {
            let points: Vec<_> = (1..=15)
                .map(|m| (until - Duration::minutes(m), value))
                .collect();
            w.cw.add_points(
                CPU_NAMESPACE,
                CPU_METRIC,
                &[(CPU_DIMENSION, group)],
                &points,
            );
        }

        async fn deliver(w: &World, input: Value, at: DateTime<Utc>) -> InvocationReport {
            handle(input, inv(at), w).await.unwrap()
        }

        fn web_desired(w: &World) -> i32 {
            w.asg
                .mutations()
                .iter()
                .filter_map(|m| m.strip_prefix("set_desired_capacity nbaops-dev-web "))
                .filter_map(|d| d.parse().ok())
                .next_back()
                .unwrap_or(-1)
        }

        #[tokio::test]
        async fn four_to_two_in_one_night_with_a_check_between_steps() {
            let w = night_world(&[], 4);
            let t0 = night();
            low_cpu(&w, "nbaops-dev-web", t0, 12.0);
            let cron = json!({"nbaops": {"task": OFF_PEAK_TASK, "id": "exec-1"}});
            let r = deliver(&w, cron, t0).await;
            let rec = &r.records[0];
            assert_eq!(web_desired(&w), 3, "{:?}", rec.notes);
            // The worker is held by its alarm, and says so.
            assert!(
                rec.notes
                    .iter()
                    .any(|n| n.contains("asg:nbaops-dev-worker: left at 3")
                        && n.contains("worker-cpu-high")),
                "{:?}",
                rec.notes
            );
            assert_eq!(w.asg.mutations().len(), 1);
            let all = w.scheduler.all();
            assert_eq!(all.len(), 1, "{:?}", rec.notes);
            let s = &all[0];
            assert_eq!(s.at, t0 + Duration::minutes(10));
            assert_eq!(s.group, "nbaops-dev-followups");
            assert_eq!(s.input["nbaops"]["step"], 1);

            // Step 1, ten minutes later: the load rose after the first step (a minute at 70%)
            // -> the check holds the group.
            let t1 = s.at;
            w.cw.add_points(
                CPU_NAMESPACE,
                CPU_METRIC,
                &[(CPU_DIMENSION, "nbaops-dev-web")],
                &[(t0 + Duration::minutes(2), 70.0)],
            );
            let r = deliver(&w, s.input.clone(), t1).await;
            assert_eq!(web_desired(&w), 3);
            assert!(
                r.records[0].notes.iter().any(|n| n.contains("CPU 70.0%")),
                "{:?}",
                r.records[0].notes
            );
            // It is still above baseline: step 2 is scheduled.
            assert_eq!(w.scheduler.all().len(), 2);

            // With the load low in the last minutes, step 2 moves it to the baseline and the
            // chain ends for the web group; the worker is still held, so a step 3 is scheduled.
            let s2 = w
                .scheduler
                .all()
                .into_iter()
                .find(|s| s.input["nbaops"]["step"] == 2)
                .unwrap();
            low_cpu(&w, "nbaops-dev-web", s2.at, 20.0);
            let r = deliver(&w, s2.input.clone(), s2.at).await;
            assert_eq!(web_desired(&w), 2, "{:?}", r.records[0].notes);
            assert_eq!(r.records[0].actions[0].outcome, Outcome::Acted);
            assert_eq!(
                r.records[0].event_id,
                format!(
                    "off-peak/{}/step-2",
                    s2.input["nbaops"]["window_end"].as_str().unwrap()
                )
            );

            // The worker's alarm clears; now only the worker is above baseline.
            w.cw.set_state("worker-cpu-high", "OK");
            let s3 = w
                .scheduler
                .all()
                .into_iter()
                .find(|s| s.input["nbaops"]["step"] == 3)
                .unwrap();
            low_cpu(&w, "nbaops-dev-worker", s3.at, 5.0);
            let r = deliver(&w, s3.input.clone(), s3.at).await;
            assert!(
                w.asg
                    .mutations()
                    .contains(&"set_desired_capacity nbaops-dev-worker 2".to_string()),
                "{:?}",
                r.records[0].notes
            );
            // Both at baseline: no further schedule.
            assert!(!w
                .scheduler
                .all()
                .iter()
                .any(|s| s.input["nbaops"]["step"] == 4));
            assert!(
                r.records[0]
                    .notes
                    .iter()
                    .any(|n| n.contains("nothing more to schedule")),
                "{:?}",
                r.records[0].notes
            );
            // Never below baseline / MinSize: another run changes nothing.
            let n = w.asg.mutations().len();
            deliver(
                &w,
                json!({"nbaops": {"task": OFF_PEAK_TASK, "id": "exec-2"}}),
                s3.at + Duration::minutes(30),
            )
            .await;
            assert_eq!(w.asg.mutations().len(), n);
        }

        #[tokio::test]
        async fn a_duplicate_follow_up_steps_once_and_schedules_once() {
            // The worker stays held by its alarm: this is about the web group's step.
            let w = night_world(&[("NBAOPS_SCALE__ASG__COOLDOWN_SECONDS", "0")], 4);
            let t0 = night();
            let end = t0 + Duration::minutes(240);
            let input =
                json!({"nbaops": {"task": OFF_PEAK_TASK, "window_end": rfc3339(end), "step": 3}});
            low_cpu(&w, "nbaops-dev-web", t0, 10.0);
            let r = deliver(&w, input.clone(), t0).await;
            assert_eq!(
                r.records[0].actions[0].outcome,
                Outcome::Acted,
                "{:?}",
                r.records[0].notes
            );
            let mutations = w.asg.mutations();
            let scheduled = w.scheduler.mutations();
            assert_eq!(scheduled.len(), 1);
            // The same follow-up again, a minute later, even under another delivery id (a
            // redelivery or a second execution): the work id is the window's and the step's.
            let mut again = input;
            again["nbaops"]["id"] = json!("another-execution");
            let r = deliver(&w, again, t0 + Duration::minutes(1)).await;
            assert_eq!(w.asg.mutations(), mutations, "one step, not two");
            assert_eq!(
                r.records[0].actions[0].stopped_by,
                Some(GuardStep::Idempotency),
                "{:?}",
                r.records[0]
            );
            assert_eq!(w.scheduler.mutations(), scheduled, "one schedule, not two");
            assert!(
                r.records[0]
                    .notes
                    .iter()
                    .any(|n| n.contains("already scheduled")),
                "{:?}",
                r.records[0].notes
            );
        }

        #[tokio::test]
        async fn high_cpu_or_no_followup_config_or_a_late_follow_up() {
            // High CPU: no step; still scheduled (the load may fall later in the window).
            let w = night_world(&[], 4);
            low_cpu(&w, "nbaops-dev-web", night(), 65.0);
            let r = deliver(&w, json!({"nbaops": {"task": OFF_PEAK_TASK}}), night()).await;
            assert!(w.asg.mutations().is_empty());
            assert!(
                r.records[0].notes.iter().any(|n| n.contains("CPU 65.0%")),
                "{:?}",
                r.records[0].notes
            );
            assert_eq!(w.scheduler.all().len(), 1);

            // No follow-up target: one step, and it says why there is no next one.
            let w = world(&[], 4, false);
            low_cpu(&w, "nbaops-dev-web", night(), 10.0);
            low_cpu(&w, "nbaops-dev-worker", night(), 10.0);
            let r = deliver(&w, json!({"nbaops": {"task": OFF_PEAK_TASK}}), night()).await;
            assert_eq!(w.asg.mutations().len(), 1);
            assert!(w.scheduler.mutations().is_empty());
            assert!(
                r.records[0]
                    .notes
                    .iter()
                    .any(|n| n.contains("scale.followup")),
                "{:?}",
                r.records[0].notes
            );

            // A follow-up delivered after its window: nothing, in words.
            let w = night_world(&[], 4);
            low_cpu(&w, "nbaops-dev-web", night(), 10.0);
            let input = json!({"nbaops": {"task": OFF_PEAK_TASK, "window_end": rfc3339(night() - Duration::minutes(1)), "step": 5}});
            let r = deliver(&w, input, night()).await;
            assert!(w.asg.mutations().is_empty());
            assert!(w.scheduler.mutations().is_empty());
            assert!(
                r.records[0]
                    .notes
                    .iter()
                    .any(|n| n.contains("window ended")),
                "{:?}",
                r.records[0].notes
            );

            // A malformed follow-up: not for me, no call at all.
            let input = json!({"nbaops": {"task": OFF_PEAK_TASK, "window_end": "soon", "step": 1}});
            let r = deliver(&w, input, night()).await;
            assert!(r.records[0]
                .not_for_me
                .as_deref()
                .unwrap_or("")
                .contains("RFC 3339"));
            assert!(w.asg.mutations().is_empty());
            assert!(w.scheduler.mutations().is_empty());
        }

        #[tokio::test]
        async fn busy_and_protected_and_dry_run_groups() {
            // Dry-run: would act, and the chain is not continued for it.
            let w = night_world(&[("NBAOPS_GUARD__DRY_RUN_FUNCTIONS", "scale-on-alarm")], 4);
            w.cw.set_state("worker-cpu-high", "OK");
            low_cpu(&w, "nbaops-dev-web", night(), 10.0);
            let r = deliver(&w, json!({"nbaops": {"task": OFF_PEAK_TASK}}), night()).await;
            assert!(w.asg.mutations().is_empty());
            assert_eq!(r.records[0].actions[0].outcome, Outcome::WouldAct);
            // The worker had no CPU data: it keeps the chain going, the web group does not.
            assert!(
                r.records[0]
                    .notes
                    .iter()
                    .any(|n| n.contains("nbaops-dev-worker still above baseline")),
                "{:?}",
                r.records[0].notes
            );
            // ... in words only: a dry-run creates no schedule.
            assert!(w.scheduler.mutations().is_empty());
            assert!(
                r.records[0]
                    .notes
                    .iter()
                    .any(|n| n.contains("dry-run: would schedule step 1 at")),
                "{:?}",
                r.records[0].notes
            );
            assert!(
                !r.records[0]
                    .notes
                    .iter()
                    .any(|n| n.contains("nbaops-dev-web, ")),
                "{:?}",
                r.records[0].notes
            );

            // Protected: stopped by the guard, not rescheduled for it.
            let w = world(&FOLLOWUPS, 4, true);
            low_cpu(&w, "nbaops-dev-web", night(), 10.0);
            low_cpu(&w, "nbaops-dev-worker", night(), 10.0);
            let r = deliver(&w, json!({"nbaops": {"task": OFF_PEAK_TASK}}), night()).await;
            assert_eq!(
                r.records[0].actions[0].stopped_by,
                Some(GuardStep::ProtectedTag)
            );
            // The worker stepped 3 -> 2 and the web group is protected: nothing left to schedule.
            assert_eq!(
                w.asg.mutations(),
                vec!["set_desired_capacity nbaops-dev-worker 2"]
            );
            assert!(
                w.scheduler.mutations().is_empty(),
                "{:?}",
                r.records[0].notes
            );

            // Busy: a scaling activity in progress holds the group (and no CloudWatch call).
            let w = night_world(&[], 4);
            w.asg
                .groups
                .lock()
                .unwrap()
                .get_mut("nbaops-dev-web")
                .unwrap()
                .activity_in_progress = true;
            let r = deliver(&w, json!({"nbaops": {"task": OFF_PEAK_TASK}}), night()).await;
            assert!(w.asg.mutations().is_empty());
            assert!(
                r.records[0]
                    .notes
                    .iter()
                    .any(|n| n.contains("scaling activity is in progress")),
                "{:?}",
                r.records[0].notes
            );
        }
    }
}

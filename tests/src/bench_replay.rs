//! `make bench`, the replay row: a generated day of 10,000 recorded events (alarm state changes of
//! the platform's alarms, 204 with 200 more service groups, and RDS failovers, in the AWS CLI's
//! output shapes) parsed and replayed in-process through `nbaops replay`'s engine on the default platform, with the day's
//! schedule ticks and follow-ups. Prints the time and the number of decisions made; a replay that
//! decided nothing is no measurement and fails the bench. Target: under a second.

use std::time::Instant;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{json, Value};

use nbaops_cli::replay::engine::{self, ReplayResult};
use nbaops_cli::replay::{input, platform};

use crate::HarnessError;

pub const EVENTS: usize = 10_000;
const RUNS: usize = 5;
/// Services beside the demo's web and worker groups: a day of 10,000 alarm transitions comes
/// from many alarms, not from four flapping thousands of times.
const SERVICES: usize = 200;
/// A Multi-AZ failover (started, completed 90 s later) every this many minutes.
const FAILOVER_EVERY_MINUTES: i64 = 20;

/// The default platform with [`SERVICES`] more groups (2..4, desired 2), each with its CPU alarm.
pub fn bench_platform() -> Result<platform::PlatformSpec, HarnessError> {
    let mut spec = platform::PlatformSpec::parse(platform::DEFAULT_PLATFORM, "default")
        .map_err(HarnessError::Setup)?;
    let mut groups = spec
        .config
        .get("NBAOPS_SCALE__GROUPS")
        .cloned()
        .unwrap_or_default();
    for n in 0..SERVICES {
        let name = format!("nbaops-dev-svc{n:02}");
        spec.groups.push(platform::GroupDef {
            name: name.clone(),
            min: 2,
            max: 4,
            desired: 2,
            tags: [("env".to_string(), "dev".to_string())]
                .into_iter()
                .collect(),
        });
        spec.alarms.push(platform::AlarmDef {
            name: format!("{name}-cpu-high"),
            namespace: Some("AWS/EC2".into()),
            metric: Some("CPUUtilization".into()),
            dimensions: [("AutoScalingGroupName".to_string(), name.clone())]
                .into_iter()
                .collect(),
            threshold: Some(70.0),
            comparison: Some("GreaterThanThreshold".into()),
            description: String::new(),
        });
        groups.push(',');
        groups.push_str(&name);
    }
    spec.config.insert("NBAOPS_SCALE__GROUPS".into(), groups);
    Ok(spec)
}

/// The day, in the AWS CLI's shapes: a failover of nbaops-dev-db every
/// [`FAILOVER_EVERY_MINUTES`] (started, then completed 90 s later), and the rest of the
/// [`EVENTS`] alarm transitions spread evenly over the day, round-robin over every alarm of the
/// platform, each alarm alternating OK -> ALARM -> OK.
pub fn generated_day(spec: &platform::PlatformSpec) -> (Value, Value) {
    let day = Utc
        .with_ymd_and_hms(2026, 11, 25, 0, 0, 0)
        .single()
        .unwrap_or_default();
    let mut events = Vec::new();
    let mut t = day;
    while t < day + Duration::days(1) && events.len() + 2 <= EVENTS {
        for (at, message) in [
            (t, "Multi-AZ instance failover started."),
            (
                t + Duration::seconds(90),
                "Multi-AZ instance failover completed.",
            ),
        ] {
            events.push(json!({
                "SourceIdentifier": "nbaops-dev-db", "SourceType": "db-instance",
                "Message": message, "EventCategories": ["failover"],
                "Date": at.to_rfc3339(),
                "SourceArn": "arn:aws:rds:us-east-1:123456789012:db:nbaops-dev-db"}));
        }
        t += Duration::minutes(FAILOVER_EVERY_MINUTES);
    }
    let transitions = EVENTS - events.len();
    let step = Duration::milliseconds(86_400_000 / transitions as i64);
    let mut in_alarm = vec![false; spec.alarms.len()];
    let mut history = Vec::new();
    for i in 0..transitions {
        let at: DateTime<Utc> = day + step * i as i32;
        let a = i % spec.alarms.len();
        let (old, new) = if in_alarm[a] {
            ("ALARM", "OK")
        } else {
            ("OK", "ALARM")
        };
        in_alarm[a] = !in_alarm[a];
        let data = json!({"version": "1.0",
            "oldState": {"stateValue": old, "stateReason": "generated"},
            "newState": {"stateValue": new, "stateReason": "generated",
                "stateReasonData": {"version": "1.0", "statistic": "Average", "period": 300,
                    "recentDatapoints": [80.0], "threshold": 70.0}}});
        history.push(json!({
            "AlarmName": spec.alarms[a].name, "AlarmType": "MetricAlarm",
            "Timestamp": at.to_rfc3339(), "HistoryItemType": "StateUpdate",
            "HistorySummary": format!("Alarm updated from {old} to {new}"),
            "HistoryData": data.to_string()}));
    }
    (
        json!({"AlarmHistoryItems": history}),
        json!({"Events": events}),
    )
}

/// One replay of the generated day: parse and run, as `nbaops replay` does.
pub async fn replay_once(
    spec: &platform::PlatformSpec,
    history: &Value,
    events: &Value,
) -> Result<ReplayResult, HarnessError> {
    let setup = |e: input::InputError| HarnessError::Setup(e.to_string());
    let mut parsed =
        input::alarm_history(history, "generated", &spec.alarms_by_name()).map_err(setup)?;
    let rds = input::rds_events(events, "generated").map_err(setup)?;
    parsed.items.extend(rds.items);
    let window = engine::default_window(&parsed.items)
        .ok_or_else(|| HarnessError::Setup("generated day is empty".into()))?;
    engine::replay(
        spec,
        parsed.items,
        parsed.not_for_me,
        &[],
        window,
        &|_, _| {},
    )
    .await
    .map_err(HarnessError::Setup)
}

pub async fn run_replay_bench() -> Result<(), HarnessError> {
    let spec = bench_platform()?;
    let (history, events) = generated_day(&spec);
    let mut ms = Vec::new();
    let mut last = None;
    for _ in 0..RUNS {
        let t = Instant::now();
        let r = replay_once(&spec, &history, &events).await?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        last = Some(r);
    }
    let r = last.ok_or_else(|| HarnessError::Setup("no replay ran".into()))?;
    let t = &r.totals;
    if t.decisions == 0 || t.events_in != EVENTS {
        return Err(HarnessError::Setup(format!(
            "bench: the replay took {} of {EVENTS} events and made {} decisions: no measurement",
            t.events_in, t.decisions
        )));
    }
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let invocations: usize = t.invocations.values().sum();
    println!(
        "{:<48} {:>10.1} {:>10}  < 1000 ms; {} invocations ({} events, {} ticks, {} follow-ups), {} decisions ({} acted, {} skipped), {} alerts",
        format!("replay of a generated day, {EVENTS} events"),
        ms[ms.len() / 2],
        "ms",
        invocations,
        t.events_in,
        t.schedule_ticks,
        t.follow_ups,
        t.decisions,
        t.acted,
        t.skipped,
        t.alerts.values().sum::<usize>()
    );
    println!();
    Ok(())
}

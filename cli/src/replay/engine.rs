//! The replay itself: every recorded event, schedule tick and follow-up in time order through the
//! real functions (`functions::handle`, the runtime's own entry) on the simulated platform, each
//! invocation at its own instant (`Invocation::at`): the guard, its cooldowns, change windows
//! and idempotency, and the ledger are the real ones, on the simulated clock. Nothing here reads
//! the wall clock: the result depends on the inputs only.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use serde_json::Value;

use failover_notify::handler::FailoverNotify;
use nbaops_shared::fakes::{leak, Shared};
use nbaops_shared::guard::{AuditRecord, Outcome};
use nbaops_shared::runtime::{Deps, Invocation};
use offhours::handler::Offhours;
use scale_on_alarm::handler::ScaleOnAlarm;

use super::input::{MetricSeries, Recorded, Route};
use super::platform::{HealthyPrimary, PlatformSpec, SimulatedPower, World};
use super::schedule::{self, SCHEDULES};
use crate::functions;
use crate::output::decision_line;

/// A class change (`ApplyImmediately`) leaves the instance `modifying`; the replay makes it
/// `available` again this long after (RDS takes minutes; the recording does not say how many).
const MODIFY_MINUTES: i64 = 10;

/// Functions the replay does not run, and why.
pub const NOT_REPLAYED: &[(&str, &str)] = &[
    (
        "pg-health",
        "needs PostgreSQL, which the replay does not simulate",
    ),
    (
        "vacuum-trigger",
        "needs PostgreSQL, which the replay does not simulate",
    ),
    (
        "backup-guard",
        "needs PostgreSQL and snapshots, which a recorded day does not hold",
    ),
    (
        "alert-router",
        "delivers alerts to people: the replay lists the alerts raised instead",
    ),
    (
        "cost-anomaly",
        "takes Cost Anomaly Detection and Budgets events, not in these recordings",
    ),
];

pub fn route_name(r: Route) -> &'static str {
    match r {
        Route::ScaleOnAlarm => "scale-on-alarm",
        Route::FailoverNotify => "failover-notify",
        Route::Offhours => "offhours",
    }
}

/// One line of the timeline: an action (acted, would act, skipped by a guard step, failed), an
/// alert raised, or an invocation that failed.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub at: DateTime<Utc>,
    pub function: String,
    pub origin: String,
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    pub line: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    /// Recorded items taken (alarm state changes, RDS events).
    pub events_in: usize,
    /// Recorded items the replay does not take.
    pub not_for_me: usize,
    /// Recorded items outside --from/--to.
    pub outside_window: usize,
    pub schedule_ticks: usize,
    pub follow_ups: usize,
    /// Follow-ups scheduled for after the window's end.
    pub follow_ups_pending: usize,
    pub invocations: BTreeMap<String, usize>,
    /// Records a function answered "not for me".
    pub not_for_me_records: BTreeMap<String, usize>,
    pub decisions: usize,
    pub acted: usize,
    pub would_act: usize,
    pub skipped: usize,
    pub skipped_by: BTreeMap<String, usize>,
    pub failed: usize,
    pub alerts: BTreeMap<String, usize>,
    pub errors: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct NotReplayed {
    pub function: &'static str,
    pub why: &'static str,
}

/// Everything a replay found.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayResult {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub env: String,
    pub replayed: Vec<&'static str>,
    pub not_replayed: Vec<NotReplayed>,
    pub not_for_me: Vec<String>,
    pub timeline: Vec<Decision>,
    pub totals: Totals,
    /// Per resource ("group nbaops-dev-web", "db nbaops-dev-db"): its value from the window's
    /// start and at every change.
    pub series: BTreeMap<String, Vec<(DateTime<Utc>, Value)>>,
}

struct Queued {
    route: Route,
    payload: Value,
    origin: String,
    alarm_state: Option<(String, String)>,
    /// The one-time schedule this follow-up is (deleted once delivered, as AWS does).
    schedule: Option<(String, String)>,
}

struct Functions {
    soa: &'static ScaleOnAlarm,
    soa_deps: &'static Deps,
    fo: &'static FailoverNotify,
    fo_deps: &'static Deps,
    oh: &'static Offhours,
    oh_deps: &'static Deps,
}

fn build(world: &World) -> Result<Functions, String> {
    let e = |f: &str, err: nbaops_shared::error::NbaopsError| format!("{f}: configuration: {err}");
    let soa_deps = world
        .deps("scale-on-alarm")
        .map_err(|x| e("scale-on-alarm", x))?;
    let fo_deps = world
        .deps("failover-notify")
        .map_err(|x| e("failover-notify", x))?;
    let oh_deps = world.deps("offhours").map_err(|x| e("offhours", x))?;
    Ok(Functions {
        soa: leak(ScaleOnAlarm {
            asg: Box::new(Shared(world.asg)),
            rds: Box::new(Shared(world.rds)),
            cache: Box::new(Shared(world.cache)),
            cw: Box::new(Shared(world.cw)),
            scheduler: Box::new(Shared(world.scheduler)),
        }),
        soa_deps,
        fo: leak(FailoverNotify {
            cfg: nbaops_shared::config::failover::from_settings(&fo_deps.cfg.settings)
                .map_err(|x| e("failover-notify", x))?,
            rds: Box::new(Shared(world.rds)),
            connector: Box::new(HealthyPrimary),
        }),
        fo_deps,
        oh: leak(Offhours {
            cfg: nbaops_shared::config::offhours::from_settings(&oh_deps.cfg.settings)
                .map_err(|x| e("offhours", x))?,
            inventory: Box::new(Shared(world.inventory)),
            power: Box::new(SimulatedPower(world.rds)),
            asg: Box::new(Shared(world.asg)),
            rds: Box::new(Shared(world.rds)),
        }),
        oh_deps,
    })
}

/// The window a replay covers by default: the whole UTC days of its items.
pub fn default_window(items: &[Recorded]) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let first = items.iter().map(|i| i.at).min()?;
    let last = items.iter().map(|i| i.at).max()?;
    let from = first.date_naive().and_hms_opt(0, 0, 0)?.and_utc();
    let to = last
        .date_naive()
        .succ_opt()?
        .and_hms_opt(0, 0, 0)?
        .and_utc();
    Some((from, to))
}

/// How many invocations a window holds before any follow-up (the progress bar's first length).
pub fn planned(items: &[Recorded], (from, to): (DateTime<Utc>, DateTime<Utc>)) -> u64 {
    let events: usize = items
        .iter()
        .filter(|i| i.at >= from && i.at < to)
        .map(|i| i.routes.len())
        .sum();
    let ticks: usize = SCHEDULES
        .iter()
        .filter_map(|(_, _, e)| schedule::parse(e).ok())
        .map(|e| schedule::times(e, from, to).len())
        .sum();
    (events + ticks) as u64
}

/// Replays `items` (and the schedules' ticks) in [from, to) on the platform `spec`.
/// `progress(done, total)` is called as the work goes.
pub async fn replay(
    spec: &PlatformSpec,
    items: Vec<Recorded>,
    not_for_me: Vec<String>,
    metrics: &[MetricSeries],
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    progress: &dyn Fn(u64, u64),
) -> Result<ReplayResult, String> {
    if to <= from {
        return Err(format!(
            "the window is empty: --from {from} is not before --to {to}"
        ));
    }
    let world = World::new(spec)?;
    for (ns, metric, dims, points) in metrics {
        let d: Vec<(&str, &str)> = dims.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        world.cw.add_points(ns, metric, &d, points);
    }
    let f = build(&world)?;
    let mut totals = Totals {
        not_for_me: not_for_me.len(),
        ..Default::default()
    };
    let mut queue: BTreeMap<(DateTime<Utc>, u64), Queued> = BTreeMap::new();
    let mut seq = 0u64;
    for it in items {
        if it.at < from || it.at >= to {
            totals.outside_window += 1;
            continue;
        }
        totals.events_in += 1;
        for r in &it.routes {
            queue.insert(
                (it.at, seq),
                Queued {
                    route: *r,
                    payload: it.payload.clone(),
                    origin: it.origin.clone(),
                    alarm_state: it.alarm_state.clone(),
                    schedule: None,
                },
            );
            seq += 1;
        }
    }
    for (route, task, expr) in SCHEDULES {
        for at in schedule::times(schedule::parse(expr)?, from, to) {
            totals.schedule_ticks += 1;
            queue.insert(
                (at, seq),
                Queued {
                    route: *route,
                    payload: schedule::tick_payload(task, at),
                    origin: format!("schedule {task} ({expr})"),
                    alarm_state: None,
                    schedule: None,
                },
            );
            seq += 1;
        }
    }

    let mut timeline = Vec::new();
    let mut series: BTreeMap<String, Vec<(DateTime<Utc>, Value)>> = world
        .snapshot()
        .into_iter()
        .map(|(k, v)| (k, vec![(from, v)]))
        .collect();
    let mut seen_schedules: BTreeSet<(String, String)> = BTreeSet::new();
    let mut modifying: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    let mut mutations = world.mutation_count();
    let mut done = 0u64;
    let mut total = queue.len() as u64;
    while let Some(((at, n), q)) = queue.pop_first() {
        settle(&world, &mut modifying, at);
        if let Some((name, state)) = &q.alarm_state {
            world.set_alarm(name, state, at);
        }
        if let Some(key) = &q.schedule {
            world
                .scheduler
                .schedules
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(key);
        }
        let function = route_name(q.route);
        *totals.invocations.entry(function.into()).or_default() += 1;
        let inv = Invocation::at(&format!("replay-{n}"), at);
        let reply = match q.route {
            Route::ScaleOnAlarm => {
                functions::handle(f.soa, f.soa_deps, None, q.payload, &inv).await
            }
            Route::FailoverNotify => {
                functions::handle(f.fo, f.fo_deps, None, q.payload, &inv).await
            }
            Route::Offhours => functions::handle(f.oh, f.oh_deps, None, q.payload, &inv).await,
        };
        match reply {
            Ok(v) => record(&v, at, function, &q.origin, &mut totals, &mut timeline),
            Err(e) => {
                totals.errors += 1;
                timeline.push(Decision {
                    at,
                    function: function.into(),
                    origin: q.origin.clone(),
                    kind: "error".into(),
                    outcome: None,
                    stopped_by: None,
                    severity: None,
                    line: format!("{} {function} failed: {e}", at.format("%Y-%m-%d %H:%M:%SZ")),
                });
            }
        }
        // Follow-ups the invocation scheduled (re-checks, off-peak steps, game-night slates).
        let pending: Vec<_> = world
            .scheduler
            .all()
            .into_iter()
            .filter(|s| !seen_schedules.contains(&(s.group.clone(), s.name.clone())))
            .collect();
        for s in pending {
            let key = (s.group.clone(), s.name.clone());
            seen_schedules.insert(key.clone());
            if s.at >= to {
                totals.follow_ups_pending += 1;
                continue;
            }
            totals.follow_ups += 1;
            total += 1;
            queue.insert(
                (s.at.max(at), seq),
                Queued {
                    route: Route::ScaleOnAlarm,
                    payload: s.input.clone(),
                    origin: format!("follow-up {}/{} ({})", s.group, s.name, s.expression()),
                    alarm_state: None,
                    schedule: Some(key),
                },
            );
            seq += 1;
        }
        // The platform changes only through the fakes' mutations: look again only after one.
        let now_mutations = world.mutation_count();
        if now_mutations != mutations {
            mutations = now_mutations;
            for (k, v) in world.snapshot() {
                let line = series.entry(k).or_default();
                if line.last().map(|(_, last)| last != &v).unwrap_or(true) {
                    line.push((at, v));
                }
            }
        }
        done += 1;
        progress(done, total);
    }
    Ok(ReplayResult {
        from,
        to,
        env: spec.env.clone(),
        replayed: vec!["scale-on-alarm", "failover-notify", "offhours"],
        not_replayed: NOT_REPLAYED
            .iter()
            .map(|(function, why)| NotReplayed { function, why })
            .collect(),
        not_for_me,
        timeline,
        totals,
        series,
    })
}

/// Time passes on the platform: launched instances are in service, a class change done
/// [`MODIFY_MINUTES`] after it started.
fn settle(world: &World, modifying: &mut BTreeMap<String, DateTime<Utc>>, now: DateTime<Utc>) {
    for g in world
        .asg
        .groups
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values_mut()
    {
        g.in_service = g.desired;
    }
    for i in world
        .rds
        .instances
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values_mut()
    {
        if i.status != "modifying" {
            modifying.remove(&i.id);
            continue;
        }
        let since = *modifying.entry(i.id.clone()).or_insert(now);
        if now - since >= Duration::minutes(MODIFY_MINUTES) {
            i.status = "available".into();
            modifying.remove(&i.id);
        }
    }
}

fn record(
    reply: &Value,
    at: DateTime<Utc>,
    function: &str,
    origin: &str,
    totals: &mut Totals,
    timeline: &mut Vec<Decision>,
) {
    let records = reply
        .get("records")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for r in records {
        if r.get("not_for_me").is_some_and(|n| !n.is_null()) {
            *totals
                .not_for_me_records
                .entry(function.into())
                .or_default() += 1;
        }
        for a in r
            .get("actions")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let Ok(rec) = serde_json::from_value::<AuditRecord>(a.clone()) else {
                totals.errors += 1;
                continue;
            };
            totals.decisions += 1;
            let stopped_by = rec.stopped_by.map(|s| s.to_string());
            match rec.outcome {
                Outcome::Acted => totals.acted += 1,
                Outcome::WouldAct => totals.would_act += 1,
                Outcome::Failed => totals.failed += 1,
                // Waiting for a person is not done: counted with the skipped, by its step.
                Outcome::Skipped | Outcome::NeedsApproval => {
                    totals.skipped += 1;
                    *totals
                        .skipped_by
                        .entry(stopped_by.clone().unwrap_or_else(|| "none".into()))
                        .or_default() += 1;
                }
            }
            timeline.push(Decision {
                at,
                function: function.into(),
                origin: origin.into(),
                kind: "action".into(),
                outcome: serde_json::to_value(rec.outcome)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from)),
                stopped_by,
                severity: None,
                line: decision_line(&rec),
            });
        }
        for al in r
            .get("alerts")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let sev = al
                .get("severity")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string();
            let text = |k: &str| al.get(k).and_then(Value::as_str).unwrap_or_default();
            *totals.alerts.entry(sev.clone()).or_default() += 1;
            timeline.push(Decision {
                at,
                function: function.into(),
                origin: origin.into(),
                kind: "alert".into(),
                outcome: None,
                stopped_by: None,
                line: format!(
                    "{} alert {sev} {}: {}",
                    at.format("%Y-%m-%d %H:%M:%SZ"),
                    text("resource"),
                    text("summary")
                ),
                severity: Some(sev),
            });
        }
    }
}

//! Alarms that stay right after a class change (issue #17). The template's RDS alarms hold absolute
//! numbers (FreeableMemory below N bytes, DatabaseConnections above N) sized for one class; after
//! scale-on-alarm moves the instance up the ladder they would keep firing (memory) or never fire
//! (connections). This module sets them to the SPEC percentages of the instance's CURRENT class:
//!
//! - memory: the alarm fires above `scale.rds.memory_alarm_used_percent` (80 %) used, i.e.
//!   FreeableMemory < (100 - 80) % of the class memory (`scale.rds.class_memory`);
//! - connections: above `scale.rds.connections_alarm_percent` (80 %) of the default
//!   `max_connections` of RDS for PostgreSQL, `LEAST({DBInstanceClassMemory/9531392}, 5000)`
//!   (https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/CHAP_Limits.html#RDS_Limits.MaxConnections),
//!   where DBInstanceClassMemory is the class memory less what RDS reserves for the OS and its own
//!   processes, "always somewhat lower than the memory figures shown in the instance class tables"
//!   (https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/USER_ParamValuesRef.html#USER_FormulaVariables).
//!   AWS does not publish the reserve; `scale.rds.reserved_memory` (233 MiB) reproduces
//!   db.t3.micro's observed default of 87 connections (1 GiB / 9531392 would say 112).
//!
//! When: on the `alarm-drift` daily task, on the off-peak task and after an alarm on a managed DB
//! (never on the plain Auto Scaling path). Aligning one instance is ONE action under the guard of
//! the run (`cloudwatch.set_thresholds` on `rds:<id>`, with the instance's tags): it counts in the
//! run's blast radius like any other action, and the instance's protected tag covers its alarms.
//! `before`/`after` hold `{alarm: threshold}` of only the alarms that change.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use nbaops_shared::alerts::Severity;
use nbaops_shared::config::capacity::Capacity;
use nbaops_shared::events::ScheduledTick;
use nbaops_shared::guard::{Explanation, Observation, ProposedAction};
use nbaops_shared::ports::{CloudWatch, MetricAlarm};
use nbaops_shared::runtime::{Ctx, RecordReport, Work};
use nbaops_shared::{NbaopsError, Result};

use crate::handler::ScaleOnAlarm;

/// Scheduler input `{"nbaops": {"task": "alarm-drift"}}`: the daily drift check of the alarms.
pub const ALARM_DRIFT_TASK: &str = "alarm-drift";

/// The one action that aligns an instance's alarms: `rds:<id>`, before/after `{alarm: threshold}`.
pub const SET_THRESHOLDS: &str = "cloudwatch.set_thresholds";

/// The divisor and the cap of RDS for PostgreSQL's default max_connections.
pub const MAX_CONNECTIONS_DIVISOR: u64 = 9_531_392;
pub const MAX_CONNECTIONS_CAP: u64 = 5000;

/// DBInstanceClassMemory: the class memory less what RDS keeps for itself.
pub fn db_instance_class_memory(class_memory: u64, reserved: u64) -> u64 {
    class_memory.saturating_sub(reserved)
}

/// `LEAST({DBInstanceClassMemory/9531392}, 5000)`; the division truncates, as RDS's formula
/// operators do.
pub fn default_max_connections(db_instance_class_memory: u64) -> u64 {
    (db_instance_class_memory / MAX_CONNECTIONS_DIVISOR).min(MAX_CONNECTIONS_CAP)
}

/// The two thresholds of one class.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DbThresholds {
    pub class_memory: u64,
    pub max_connections: u64,
    /// FreeableMemory below this many bytes = memory use above the SPEC percent.
    pub freeable_memory: f64,
    /// DatabaseConnections above this = above the SPEC percent of max_connections.
    pub connections: f64,
}

/// The thresholds for `class`, `None` when the class has no memory in the table.
pub fn db_thresholds(class: &str, cap: &Capacity) -> Option<DbThresholds> {
    let class_memory = *cap.rds_class_memory.get(class)?;
    let max_connections = default_max_connections(db_instance_class_memory(
        class_memory,
        cap.rds_reserved_memory,
    ));
    Some(DbThresholds {
        class_memory,
        max_connections,
        freeable_memory: (class_memory as f64 * (100.0 - cap.rds_memory_used_percent) / 100.0)
            .floor(),
        connections: (max_connections as f64 * cap.rds_connections_percent / 100.0).round(),
    })
}

/// The two metrics whose alarms follow the class, and the comparison that makes them "high" alarms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watched {
    FreeableMemory,
    DatabaseConnections,
}

impl Watched {
    pub const ALL: [Watched; 2] = [Watched::FreeableMemory, Watched::DatabaseConnections];

    pub fn metric(self) -> &'static str {
        match self {
            Watched::FreeableMemory => "FreeableMemory",
            Watched::DatabaseConnections => "DatabaseConnections",
        }
    }
    /// Memory is high when FreeableMemory is LOW; connections when they are high.
    fn comparison_prefix(self) -> &'static str {
        match self {
            Watched::FreeableMemory => "LessThan",
            Watched::DatabaseConnections => "GreaterThan",
        }
    }
    pub fn threshold(self, t: &DbThresholds) -> f64 {
        match self {
            Watched::FreeableMemory => t.freeable_memory,
            Watched::DatabaseConnections => t.connections,
        }
    }
}

/// What to do with one alarm found on the metric.
#[derive(Debug, Clone, PartialEq)]
pub enum Drift {
    /// Already at the class's threshold (within rounding: less than one byte / one connection).
    Right(f64),
    Change {
        from: Option<f64>,
        to: f64,
    },
    /// Not an alarm of this deployment, or not a "high" alarm: left as it is.
    NotOurs(String),
}

/// Only this deployment's alarms (`nbaops-<env>-...`) with the comparison of a "high" alarm are
/// rewritten; anyone else's alarm on the same metric is somebody else's decision.
pub fn drift(alarm: &MetricAlarm, watched: Watched, want: f64, name_prefix: &str) -> Drift {
    if !alarm.name.starts_with(name_prefix) {
        return Drift::NotOurs(format!("not named {name_prefix}*"));
    }
    let cmp = alarm.comparison.as_deref().unwrap_or("");
    if !cmp.starts_with(watched.comparison_prefix()) {
        return Drift::NotOurs(format!(
            "compares {cmp:?}, not {}* (not a high-{} alarm)",
            watched.comparison_prefix(),
            watched.metric()
        ));
    }
    match alarm.threshold {
        Some(t) if (t - want).abs() < 1.0 => Drift::Right(t),
        from => Drift::Change { from, to: want },
    }
}

impl ScaleOnAlarm {
    /// The daily task: every managed instance's alarms against its current class.
    pub(crate) async fn on_alarm_drift(
        &self,
        tick: &ScheduledTick,
        ctx: &Ctx<'_>,
    ) -> Result<RecordReport> {
        let instances = &ctx.cfg().scale.rds_instances;
        let mut w = ctx
            .work(
                &tick.event_id,
                "schedule",
                format!("alarm drift check of {} RDS instance(s)", instances.len()),
            )
            .with_fleet_size(instances.len());
        for id in instances {
            self.align_db_alarms(id, &mut w).await?;
        }
        w.done().await
    }

    /// On the alarm and off-peak paths the drift check rides along: a failure to READ (RDS,
    /// CloudWatch) is noted and does not undo what the run did (the daily task reports it as an
    /// error); a failure of the guard or of its audit write is the run's error.
    pub(crate) async fn align_db_alarms_noted(&self, id: &str, w: &mut Work<'_>) -> Result<()> {
        match self.db_alarm_changes(id, w).await {
            Ok(Some(planned)) => self.set_db_thresholds(planned, w).await,
            Ok(None) => Ok(()),
            Err(e) => {
                w.note(format!(
                    "rds:{id}: alarm thresholds not checked ({e}); the '{ALARM_DRIFT_TASK}' task retries daily"
                ));
                Ok(())
            }
        }
    }

    /// Sets the instance's FreeableMemory and DatabaseConnections alarms to the SPEC percentages
    /// of its current class, once a class change has taken effect: one action for the instance.
    pub(crate) async fn align_db_alarms(&self, id: &str, w: &mut Work<'_>) -> Result<()> {
        match self.db_alarm_changes(id, w).await? {
            Some(planned) => self.set_db_thresholds(planned, w).await,
            None => Ok(()),
        }
    }

    /// Reads the instance and its alarms; `None` (with the reason noted) when nothing is to change.
    async fn db_alarm_changes(&self, id: &str, w: &mut Work<'_>) -> Result<Option<Planned>> {
        let ctx = w.ctx;
        let cap = &ctx.cfg().scale.capacity;
        let resource = format!("rds:{id}");
        let Some(db) = self.rds.describe_instance(id).await? else {
            w.note(format!("{resource} does not exist: no alarm to align"));
            return Ok(None);
        };
        if db.status != "available" || db.pending_class.is_some() {
            w.note(format!(
                "{resource} is '{}'{}: alarm thresholds follow once the class change has taken effect",
                db.status,
                db.pending_class
                    .as_deref()
                    .map(|c| format!(", change to {c} pending"))
                    .unwrap_or_default()
            ));
            return Ok(None);
        }
        let Some(want) = db_thresholds(&db.class, cap) else {
            w.note(format!(
                "{resource}: class {} has no memory in scale.rds.class_memory: alarm thresholds not touched",
                db.class
            ));
            return Ok(None);
        };
        let dims: BTreeMap<String, String> =
            [("DBInstanceIdentifier".to_string(), id.to_string())].into();
        let prefix = format!("nbaops-{}-", ctx.env());
        let mut changes: Vec<(String, Option<f64>, f64)> = Vec::new();
        for watched in Watched::ALL {
            let to = watched.threshold(&want);
            let alarms = self
                .cw
                .alarms_for_metric("AWS/RDS", watched.metric(), &dims)
                .await?;
            if alarms.is_empty() {
                w.note(format!("{resource}: no alarm on {}", watched.metric()));
            }
            for alarm in alarms {
                let name = alarm.name.clone();
                match drift(&alarm, watched, to, &prefix) {
                    Drift::NotOurs(why) => w.note(format!("alarm:{name}: {why}: left as it is")),
                    Drift::Right(t) => w.note(format!(
                        "alarm:{name}: threshold {t} already right for {} (within rounding): no change",
                        db.class
                    )),
                    Drift::Change { from, to } => changes.push((name, from, to)),
                }
            }
        }
        if changes.is_empty() {
            return Ok(None);
        }
        let mut explanation = Explanation::new(
            "set the alarm thresholds of",
            "Set the alarm thresholds of",
            format!("{id} ({})", db.class),
            format!(
                "SPEC 2.5 alarms follow the class: memory {} B, default max_connections {}",
                want.class_memory, want.max_connections
            ),
        )
        .key("scale.rds.class_memory")
        .key("scale.rds.reserved_memory")
        .key("scale.rds.memory_alarm_used_percent")
        .key("scale.rds.connections_alarm_percent");
        for (name, from, to) in &changes {
            explanation = explanation.observe(match from {
                Some(f) => Observation::against(format!("{name} threshold"), *f, "", "→", *to),
                None => Observation::value(format!("{name} new threshold"), *to, ""),
            });
        }
        let action = ProposedAction {
            explanation,
            action: SET_THRESHOLDS.into(),
            resource: resource.clone(),
            // The instance's tags: a protected instance's alarms are left as they are too.
            tags: db.tags.clone(),
            reason: format!(
                "{id} is {}: its alarms at the SPEC percents of the class ({} bytes memory, default max_connections {})",
                db.class, want.class_memory, want.max_connections
            ),
            severity: Severity::P4,
            disruptive: false,
            bounds: None,
            cooldown_key: "cloudwatch.thresholds".into(),
            cooldown_seconds: 0,
            before: Value::Object(
                changes
                    .iter()
                    .map(|(name, from, _)| (name.clone(), json!(from)))
                    .collect(),
            ),
            after: Value::Object(
                changes
                    .iter()
                    .map(|(name, _, to)| (name.clone(), json!(to)))
                    .collect(),
            ),
        };
        Ok(Some(Planned {
            action,
            class: db.class,
            changes,
        }))
    }

    /// The one guarded action of the instance; its effect sets each alarm in turn.
    async fn set_db_thresholds(&self, planned: Planned, w: &mut Work<'_>) -> Result<()> {
        let Planned {
            action,
            class,
            changes,
        } = planned;
        let audit = w
            .act(&action, || set_each(self.cw.as_ref(), &changes))
            .await?;
        let listed: Vec<String> = changes
            .iter()
            .map(|(name, from, to)| {
                format!(
                    "alarm:{name} {} -> {to}",
                    from.map(|f| f.to_string()).unwrap_or_else(|| "none".into())
                )
            })
            .collect();
        w.note(format!(
            "{}: thresholds for {class}: {}: {}",
            action.resource,
            listed.join(", "),
            audit.outcome_words()
        ));
        Ok(())
    }
}

/// What aligning one instance would change: (alarm, threshold now, threshold of the class).
struct Planned {
    action: ProposedAction,
    class: String,
    changes: Vec<(String, Option<f64>, f64)>,
}

/// The effect of one `cloudwatch.set_thresholds`: each alarm in turn. A failure names what was
/// already set (and what was not), so the audit record tells the partial state.
async fn set_each(cw: &dyn CloudWatch, changes: &[(String, Option<f64>, f64)]) -> Result<()> {
    let mut set: Vec<&str> = Vec::new();
    for (i, (name, _, to)) in changes.iter().enumerate() {
        if let Err(e) = cw.set_alarm_threshold(name, *to).await {
            let not_tried: Vec<&str> = changes[i + 1..].iter().map(|c| c.0.as_str()).collect();
            return Err(NbaopsError::dependency(
                "cloudwatch",
                format!(
                    "{name} not set ({e}); already set: [{}]; not tried: [{}]",
                    set.join(", "),
                    not_tried.join(", ")
                ),
            ));
        }
        set.push(name);
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use nbaops_shared::config::{layer, scale, Env};
    use nbaops_shared::fakes::*;
    use nbaops_shared::guard::{GuardStep, Outcome};
    use nbaops_shared::ports::*;
    use nbaops_shared::runtime::{dispatch, Deps, Invocation, InvocationReport};
    use serde_json::Value;

    fn defaults() -> Capacity {
        scale::from_settings(&layer(Env::Dev, &BTreeMap::new(), &BTreeMap::new()).unwrap())
            .unwrap()
            .capacity
    }

    /// The derivation, spelled out: 1 GiB less 233 MiB reserved, / 9531392 = 87 (not the 112 of
    /// the nominal 1 GiB); 80 % of 87 = 69.6 -> 70; 20 % of 1 GiB = 214748364 bytes.
    #[test]
    fn micro_and_small_thresholds() {
        let cap = defaults();
        assert_eq!(default_max_connections(1 << 30), 112);
        let micro = db_thresholds("db.t3.micro", &cap).unwrap();
        assert_eq!(
            db_instance_class_memory(1 << 30, cap.rds_reserved_memory),
            829_423_616
        );
        assert_eq!(micro.max_connections, 87);
        assert_eq!(micro.connections, 70.0);
        assert_eq!(micro.freeable_memory, 214_748_364.0);
        let small = db_thresholds("db.t3.small", &cap).unwrap();
        assert_eq!(small.max_connections, 199);
        assert_eq!(small.connections, 159.0);
        assert_eq!(small.freeable_memory, 429_496_729.0);
        assert!(db_thresholds("db.x9.huge", &cap).is_none());
        // The cap: a class with 64 GiB would exceed 5000.
        assert_eq!(default_max_connections(64 << 30), 5000);
    }

    /// The template's defaults are db.t3.micro's entries of the tables (the template is what
    /// deploys first; scale-on-alarm takes over after the first class change).
    #[test]
    fn template_defaults_agree_with_the_micro_entries() {
        let template = include_str!("../../../infra/template.yaml");
        let default_of = |param: &str| -> f64 {
            let block = template
                .split(&format!("\n  {param}:\n"))
                .nth(1)
                .unwrap_or_else(|| panic!("{param} missing"));
            let line = block
                .lines()
                .take_while(|l| l.starts_with("    ") || l.trim().is_empty())
                .find(|l| l.trim_start().starts_with("Default:"))
                .unwrap_or_else(|| panic!("{param} has no Default"));
            line.trim_start()
                .trim_start_matches("Default:")
                .trim()
                .parse()
                .unwrap()
        };
        let cap = defaults();
        let micro = db_thresholds("db.t3.micro", &cap).unwrap();
        assert_eq!(
            default_of("DbFreeableMemoryLowBytes"),
            micro.freeable_memory
        );
        assert_eq!(default_of("DbConnectionsThreshold"), micro.connections);
        // max_cache_memory of cache.t3.micro, 512 MB:
        // https://docs.aws.amazon.com/AmazonElastiCache/latest/mem-ug/ParameterGroups.Memcached.html#ParameterGroups.Memcached.NodeSpecific
        assert_eq!(
            default_of("CacheNodeMemoryBytes"),
            cap.cache_node_memory["cache.t3.micro"] as f64
        );
    }

    fn alarm(name: &str, metric: &str, cmp: &str, threshold: f64) -> MetricAlarm {
        MetricAlarm {
            name: name.into(),
            arn: None,
            state: "OK".into(),
            state_updated: None,
            namespace: Some("AWS/RDS".into()),
            metric: Some(metric.into()),
            dimensions: [("DBInstanceIdentifier".into(), "nbaops-dev-db".into())].into(),
            threshold: Some(threshold),
            comparison: Some(cmp.into()),
        }
    }

    #[test]
    fn drift_decision() {
        let p = "nbaops-dev-";
        let a = alarm(
            "nbaops-dev-db-connections-high",
            "DatabaseConnections",
            "GreaterThanThreshold",
            70.0,
        );
        assert_eq!(
            drift(&a, Watched::DatabaseConnections, 70.4, p),
            Drift::Right(70.0)
        );
        assert_eq!(
            drift(&a, Watched::DatabaseConnections, 159.0, p),
            Drift::Change {
                from: Some(70.0),
                to: 159.0
            }
        );
        let theirs = MetricAlarm {
            name: "team-db-conn".into(),
            ..a.clone()
        };
        assert!(matches!(
            drift(&theirs, Watched::DatabaseConnections, 159.0, p),
            Drift::NotOurs(_)
        ));
        let low = MetricAlarm {
            comparison: Some("LessThanThreshold".into()),
            ..a
        };
        assert!(matches!(
            drift(&low, Watched::DatabaseConnections, 159.0, p),
            Drift::NotOurs(_)
        ));
    }

    struct World {
        deps: &'static Deps,
        f: &'static ScaleOnAlarm,
        rds: &'static FakeRds,
        cw: &'static FakeCloudWatch,
        ledger: &'static FakeLedger,
    }

    const MEMORY: &str = "nbaops-dev-db-memory-high";
    const CONNECTIONS: &str = "nbaops-dev-db-connections-high";

    fn world(extra: &[(&str, &str)], class: &str, pending: Option<&str>) -> World {
        world_with(extra, class, pending, Tags::new(), 70.0, None)
    }

    /// `connections`: the threshold the connections alarm starts at (the memory alarm starts at
    /// db.t3.micro's); `fail_on`: an alarm whose rewrite fails.
    fn world_with(
        extra: &[(&str, &str)],
        class: &str,
        pending: Option<&str>,
        tags: Tags,
        connections: f64,
        fail_on: Option<&'static str>,
    ) -> World {
        let mut vars = vec![("NBAOPS_SCALE__RDS__INSTANCES", "nbaops-dev-db")];
        vars.extend_from_slice(extra);
        let t = test_deps(crate::handler::FUNCTION, &vars).unwrap();
        let rds = leak(FakeRds::with(vec![DbInstanceState {
            id: "nbaops-dev-db".into(),
            arn: None,
            class: class.into(),
            status: "available".into(),
            engine: "postgres".into(),
            multi_az: true,
            endpoint: None,
            pending_class: pending.map(String::from),
            tags,
        }]));
        let cw = leak(FakeCloudWatch::with(vec![
            alarm(MEMORY, "FreeableMemory", "LessThanThreshold", 214_748_364.0),
            alarm(
                CONNECTIONS,
                "DatabaseConnections",
                "GreaterThanThreshold",
                connections,
            ),
            alarm(
                "someone-elses-db-connections",
                "DatabaseConnections",
                "GreaterThanThreshold",
                70.0,
            ),
        ]));
        let port: Box<dyn CloudWatch> = match fail_on {
            Some(name) => Box::new(FailOn { inner: cw, name }),
            None => Box::new(Shared(cw)),
        };
        World {
            deps: t.deps,
            f: leak(ScaleOnAlarm {
                asg: Box::new(FakeAutoScaling::with(vec![])),
                rds: Box::new(Shared(rds)),
                cache: Box::new(FakeElastiCache::with(vec![])),
                cw: port,
                scheduler: Box::new(nbaops_shared::fakes::FakeScheduler::default()),
            }),
            rds,
            cw,
            ledger: t.ledger,
        }
    }

    /// The fake, except that rewriting `name` fails.
    struct FailOn {
        inner: &'static FakeCloudWatch,
        name: &'static str,
    }

    #[async_trait::async_trait]
    impl CloudWatch for FailOn {
        async fn describe_alarm(&self, name: &str) -> nbaops_shared::Result<Option<MetricAlarm>> {
            self.inner.describe_alarm(name).await
        }
        async fn alarms_in_state(&self, state: &str) -> nbaops_shared::Result<Vec<MetricAlarm>> {
            self.inner.alarms_in_state(state).await
        }
        async fn alarms_for_metric(
            &self,
            namespace: &str,
            metric: &str,
            dimensions: &BTreeMap<String, String>,
        ) -> nbaops_shared::Result<Vec<MetricAlarm>> {
            self.inner
                .alarms_for_metric(namespace, metric, dimensions)
                .await
        }
        async fn set_alarm_threshold(
            &self,
            name: &str,
            threshold: f64,
        ) -> nbaops_shared::Result<()> {
            if name == self.name {
                return Err(NbaopsError::dependency("cloudwatch", "throttled"));
            }
            self.inner.set_alarm_threshold(name, threshold).await
        }
        async fn statistics(
            &self,
            q: &MetricQuery,
        ) -> nbaops_shared::Result<Vec<(chrono::DateTime<Utc>, f64)>> {
            self.inner.statistics(q).await
        }
    }

    async fn drift_task(w: &World, id: &str) -> InvocationReport {
        let payload: Value = json!({"nbaops": {"task": ALARM_DRIFT_TASK, "id": id}});
        let inv = Invocation::at("req", Utc.with_ymd_and_hms(2026, 11, 25, 6, 30, 0).unwrap());
        dispatch(w.f, payload, &Ctx::of::<ScaleOnAlarm>(w.deps, &inv))
            .await
            .unwrap()
    }

    fn threshold(w: &World, name: &str) -> f64 {
        w.cw.alarms.lock().unwrap()[name].threshold.unwrap()
    }

    fn audits(w: &World) -> usize {
        w.ledger.len_with_prefix("audit#rds:nbaops-dev-db")
    }

    #[tokio::test]
    async fn after_a_change_to_small_both_alarms_follow_in_one_action() {
        let w = world(&[], "db.t3.small", None);
        let r = drift_task(&w, "drift-1").await;
        assert_eq!(
            w.cw.mutations(),
            vec![
                "set_alarm_threshold nbaops-dev-db-memory-high 429496729",
                "set_alarm_threshold nbaops-dev-db-connections-high 159",
            ],
            "{:?}",
            r.records[0].notes
        );
        let acts = &r.records[0].actions;
        assert_eq!(acts.len(), 1, "{acts:?}");
        let a = &acts[0];
        assert_eq!(a.outcome, Outcome::Acted);
        assert_eq!(a.action, SET_THRESHOLDS);
        assert_eq!(a.resource, "rds:nbaops-dev-db");
        assert_eq!(a.before, json!({MEMORY: 214_748_364.0, CONNECTIONS: 70.0}));
        assert_eq!(a.after, json!({MEMORY: 429_496_729.0, CONNECTIONS: 159.0}));
        // One audit record, written through the invocation's guard.
        assert_eq!(audits(&w), 1);
        // Someone else's alarm on the same metric is not touched.
        assert_eq!(threshold(&w, "someone-elses-db-connections"), 70.0);
        // The next day: nothing to change, no action, and the report says so.
        let r = drift_task(&w, "drift-2").await;
        assert_eq!(w.cw.mutations().len(), 2);
        assert!(r.records[0].actions.is_empty());
        assert_eq!(audits(&w), 1);
        assert_eq!(
            r.records[0]
                .notes
                .iter()
                .filter(|n| n.contains("already right"))
                .count(),
            2,
            "{:?}",
            r.records[0].notes
        );
        assert!(w.rds.mutations().is_empty());
    }

    /// One of the two alarms already at the class's threshold: the action holds only the other.
    #[tokio::test]
    async fn one_alarm_already_right_the_action_holds_the_other() {
        let w = world_with(&[], "db.t3.small", None, Tags::new(), 159.0, None);
        let r = drift_task(&w, "d").await;
        assert_eq!(
            w.cw.mutations(),
            vec!["set_alarm_threshold nbaops-dev-db-memory-high 429496729"]
        );
        let acts = &r.records[0].actions;
        assert_eq!(acts.len(), 1, "{acts:?}");
        assert_eq!(acts[0].before, json!({MEMORY: 214_748_364.0}));
        assert_eq!(acts[0].after, json!({MEMORY: 429_496_729.0}));
        assert!(r.records[0]
            .notes
            .iter()
            .any(|n| n.contains(CONNECTIONS) && n.contains("already right")));
    }

    #[tokio::test]
    async fn micro_is_already_right_and_a_pending_change_waits() {
        let w = world(&[], "db.t3.micro", None);
        let r = drift_task(&w, "d").await;
        assert!(w.cw.mutations().is_empty(), "{:?}", r.records[0].notes);
        assert!(r.records[0].actions.is_empty());
        assert_eq!(audits(&w), 0);
        let w = world(&[], "db.t3.micro", Some("db.t3.small"));
        let r = drift_task(&w, "d").await;
        assert!(w.cw.mutations().is_empty());
        assert!(
            r.records[0].notes.iter().any(|n| n.contains("pending")),
            "{:?}",
            r.records[0].notes
        );
    }

    #[tokio::test]
    async fn dry_run_reports_both_would_be_changes_and_changes_nothing() {
        let w = world(
            &[("NBAOPS_GUARD__DRY_RUN_FUNCTIONS", crate::handler::FUNCTION)],
            "db.t3.small",
            None,
        );
        let r = drift_task(&w, "d").await;
        assert!(w.cw.mutations().is_empty());
        assert_eq!(threshold(&w, CONNECTIONS), 70.0);
        assert_eq!(threshold(&w, MEMORY), 214_748_364.0);
        let acts = &r.records[0].actions;
        assert_eq!(acts.len(), 1, "{acts:?}");
        assert_eq!(acts[0].outcome, Outcome::WouldAct);
        assert_eq!(acts[0].after[CONNECTIONS], 159.0);
        assert_eq!(acts[0].before[CONNECTIONS], 70.0);
        assert_eq!(acts[0].after[MEMORY], 429_496_729.0);
        assert_eq!(acts[0].before[MEMORY], 214_748_364.0);
    }

    /// The instance's protected tag covers its alarms: stopped by the guard, nothing set.
    #[tokio::test]
    async fn a_protected_instance_keeps_its_alarms() {
        let tags: Tags = [("nbaops:protect".to_string(), "true".to_string())].into();
        let w = world_with(&[], "db.t3.small", None, tags, 70.0, None);
        let r = drift_task(&w, "d").await;
        assert!(w.cw.mutations().is_empty());
        let acts = &r.records[0].actions;
        assert_eq!(acts.len(), 1, "{acts:?}");
        assert_eq!(acts[0].outcome, Outcome::Skipped);
        assert_eq!(acts[0].stopped_by, Some(GuardStep::ProtectedTag));
        assert_eq!(threshold(&w, CONNECTIONS), 70.0);
    }

    /// The run's blast radius counts the action: two managed instances are a fleet of 2, 50 % of
    /// it is one action, so the second instance's alarms wait for the next run.
    #[tokio::test]
    async fn the_blast_radius_of_the_run_counts_each_instance_once() {
        let w = world(
            &[(
                "NBAOPS_SCALE__RDS__INSTANCES",
                "nbaops-dev-db,nbaops-dev-db2",
            )],
            "db.t3.small",
            None,
        );
        let mut second = w.rds.instances.lock().unwrap()["nbaops-dev-db"].clone();
        second.id = "nbaops-dev-db2".into();
        w.rds
            .instances
            .lock()
            .unwrap()
            .insert(second.id.clone(), second);
        for name in ["memory-high", "connections-high"] {
            let mut a = w.cw.alarms.lock().unwrap()[&format!("nbaops-dev-db-{name}")].clone();
            a.name = format!("nbaops-dev-db2-{name}");
            a.dimensions = [("DBInstanceIdentifier".into(), "nbaops-dev-db2".into())].into();
            w.cw.alarms.lock().unwrap().insert(a.name.clone(), a);
        }
        let r = drift_task(&w, "d").await;
        let acts = &r.records[0].actions;
        assert_eq!(acts.len(), 2, "{acts:?}");
        assert_eq!(acts[0].outcome, Outcome::Acted);
        assert_eq!(acts[1].outcome, Outcome::Skipped);
        assert_eq!(acts[1].stopped_by, Some(GuardStep::BlastRadius));
        assert_eq!(
            w.cw.mutations().len(),
            2,
            "only the first instance's two alarms"
        );
    }

    /// A rewrite that fails after another succeeded: the audit names what was set and what not.
    #[tokio::test]
    async fn a_partial_failure_names_what_was_set() {
        let w = world_with(
            &[],
            "db.t3.small",
            None,
            Tags::new(),
            70.0,
            Some(CONNECTIONS),
        );
        let r = drift_task(&w, "d").await;
        assert_eq!(
            w.cw.mutations(),
            vec!["set_alarm_threshold nbaops-dev-db-memory-high 429496729"]
        );
        let acts = &r.records[0].actions;
        assert_eq!(acts.len(), 1, "{acts:?}");
        assert_eq!(acts[0].outcome, Outcome::Failed);
        let error = acts[0].error.as_deref().unwrap();
        assert!(
            error.contains(&format!("{CONNECTIONS} not set"))
                && error.contains(&format!("already set: [{MEMORY}]")),
            "{error}"
        );
        assert_eq!(audits(&w), 1);
    }

    /// On the alarm path: an alarm on the managed DB aligns its alarms once the class is in
    /// effect (here db.t3.small, the top rung: no class change, the thresholds follow); a class
    /// change still in progress leaves them for later.
    #[tokio::test]
    async fn a_db_alarm_aligns_the_alarms_of_the_current_class() {
        const DB_ALARM: &str =
            include_str!("../../../events/cloudwatch-alarm/eventbridge-rds-memory-alarm.json");
        let topic = (
            "NBAOPS_ALERTS_TOPIC_ARN",
            "arn:aws:sns:us-east-1:123456789012:nbaops-dev-alerts",
        );
        let inv = Invocation::at("req", Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap());
        let w = world(&[topic], "db.t3.small", None);
        let r = dispatch(
            w.f,
            serde_json::from_str(DB_ALARM).unwrap(),
            &Ctx::of::<ScaleOnAlarm>(w.deps, &inv),
        )
        .await
        .unwrap();
        assert!(w.rds.mutations().is_empty());
        assert_eq!(w.cw.mutations().len(), 2, "{:?}", r.records[0].notes);
        assert_eq!(threshold(&w, CONNECTIONS), 159.0);
        let acts = &r.records[0].actions;
        assert_eq!(acts.len(), 1, "{acts:?}");
        assert_eq!(acts[0].action, SET_THRESHOLDS);
        assert_eq!(acts[0].outcome, Outcome::Acted);

        let w = world(&[topic], "db.t3.micro", None);
        let r = dispatch(
            w.f,
            serde_json::from_str(DB_ALARM).unwrap(),
            &Ctx::of::<ScaleOnAlarm>(w.deps, &inv),
        )
        .await
        .unwrap();
        assert_eq!(w.rds.mutations().len(), 1);
        assert!(w.cw.mutations().is_empty());
        assert!(
            r.records[0]
                .notes
                .iter()
                .any(|n| n.contains("follow once the class change has taken effect")),
            "{:?}",
            r.records[0].notes
        );
    }
}

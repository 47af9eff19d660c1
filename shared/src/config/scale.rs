//! The `scale` section: what scale-on-alarm may scale and how far (SPEC 2.5 capacity plan, 6.1):
//! Auto Scaling groups between a baseline of 2 and a ceiling of 4, RDS one rung up a class ladder,
//! Memcached one node more up to a cap, each with its cooldown, and when an alarm flaps.
//!
//! Only scale-on-alarm parses this section (see [`super::config_sections`]): a mistake here stops
//! scale-on-alarm's init and no other function's.

use std::collections::BTreeMap;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::capacity::{self, Capacity};
use super::{positive, Dynamic, Settings};
use crate::error::{NbaopsError, Result};

pub const KEYS: &[(&str, &str, &str)] = &[
    ("scale.groups", "", "comma list of Auto Scaling groups nbaops may scale"),
    ("scale.asg.step", "1", "scale step: a count (1) or a percent of desired (25%)"),
    ("scale.asg.ceiling", "4", "never scale a group above this (SPEC: 4 x t3.micro)"),
    ("scale.asg.baseline", "2", "scale-in stops here (SPEC: 2 x t3.micro)"),
    ("scale.asg.cooldown_seconds", "300", "minimum time between two scalings of one group"),
    ("scale.rds.instances", "", "comma list of RDS instances nbaops may resize"),
    ("scale.rds.ladder", "db.t3.micro,db.t3.small", "instance classes, smallest first"),
    ("scale.rds.cooldown_seconds", "3600", "minimum time between two class changes"),
    ("scale.cache.clusters", "", "comma list of Memcached clusters nbaops may grow"),
    ("scale.cache.max_nodes", "4", "node cap per Memcached cluster"),
    ("scale.cache.cooldown_seconds", "900", "minimum time between two node additions (SPEC: 15 minutes)"),
    ("scale.flap.transitions", "4", "this many state changes of one alarm ..."),
    ("scale.flap.window_minutes", "60", "... within this window = flapping: stop acting, alert P3"),
    ("scale.alarm_map", "{}", "JSON: alarm name or ARN -> {target, on_alarm, on_ok, severity}"),
    ("scale.followup.group", "default", "EventBridge Scheduler group of scale-on-alarm's one-time follow-ups (re-checks, next off-peak step)"),
    ("scale.followup.target_arn", "", "the function (alias) ARN a follow-up invokes; empty: no follow-ups are scheduled"),
    ("scale.followup.role_arn", "", "the role EventBridge Scheduler assumes to invoke it (lambda:InvokeFunction only)"),
    ("scale.offpeak.cpu_below", "40", "off-peak: a group steps in only while its average CPU (AWS/EC2 CPUUtilization by AutoScalingGroupName) stayed below this percent ..."),
    ("scale.offpeak.lookback_minutes", "15", "... in every minute of this many last minutes (1-1440: GetMetricStatistics returns at most 1,440 datapoints)"),
    ("scale.offpeak.step_minutes", "10", "off-peak: minutes between two steps of one night (a one-time follow-up schedule per step)"),
    ("scale.offpeak.window_minutes", "240", "off-peak: the night's window from the cron run; no step is scheduled or taken after it"),
    // Issue #17: the alarms follow the class / node type (config/capacity.rs, scale-on-alarm's thresholds.rs).
    // Class memory: https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/Concepts.DBInstanceClass.Summary.html
    ("scale.rds.class_memory", "db.t3.micro=1GiB,db.t3.small=2GiB,db.t3.medium=4GiB,db.t3.large=8GiB,db.t3.xlarge=16GiB,db.t3.2xlarge=32GiB,db.t4g.micro=1GiB,db.t4g.small=2GiB,db.t4g.medium=4GiB,db.t4g.large=8GiB,db.m5.large=8GiB,db.m6g.large=8GiB,db.r5.large=16GiB,db.r6g.large=16GiB", "memory of each RDS instance class (every class of scale.rds.ladder must be listed)"),
    // DBInstanceClassMemory is the class memory less what RDS reserves (USER_ParamValuesRef.html#USER_FormulaVariables);
    // AWS does not publish the amount: 233 MiB gives db.t3.micro's observed default max_connections of 87.
    ("scale.rds.reserved_memory", "233MiB", "memory RDS keeps for the OS and its processes: DBInstanceClassMemory = class memory - this (sets the default max_connections)"),
    ("scale.rds.memory_alarm_used_percent", "80", "the RDS memory alarm fires above this percent used: FreeableMemory below (100 - this) % of the class memory (SPEC 2.5)"),
    ("scale.rds.connections_alarm_percent", "80", "the RDS connections alarm fires above this percent of the default max_connections LEAST(DBInstanceClassMemory/9531392, 5000) (SPEC 2.5)"),
    // max_cache_memory per node type: https://docs.aws.amazon.com/AmazonElastiCache/latest/mem-ug/ParameterGroups.Memcached.html#ParameterGroups.Memcached.NodeSpecific
    ("scale.cache.node_memory", "cache.t3.micro=512MiB,cache.t3.small=1402MiB,cache.t3.medium=3364MiB,cache.t4g.micro=512MiB,cache.t4g.small=1402MiB,cache.t4g.medium=3164MiB,cache.m5.large=6537MiB,cache.m5.xlarge=13248MiB,cache.m6g.large=6537MiB,cache.r5.large=13387MiB,cache.r6g.large=13387MiB", "cache memory (max_cache_memory) of each Memcached node type"),
    ("scale.cache.scale_in", "false", "true: the off-peak task removes one Memcached node when the data of the cluster would fit in one node less below scale.cache.scale_in_below_percent"),
    ("scale.cache.min_nodes", "1", "scale-in never goes below this many Memcached nodes"),
    ("scale.cache.scale_in_below_percent", "50", "remove a node only if the cluster's BytesUsedForCacheItems, spread over one node less, stays at or below this percent of their cache memory"),
    ("scale.cache.memory_high_percent", "75", "a node is full above this percent of its node type's cache memory: the cache alarm adds a node only when BytesUsedForCacheItems confirms it (SPEC 2.5)"),
    ("scale.signal_metrics", "CPUUtilization,FreeableMemory,DatabaseConnections,IOWait,BytesUsedForCacheItems", "metrics whose single-metric alarms scale by their dimension (SPEC 2.5; Memcached publishes BytesUsedForCacheItems, not the Redis-only DatabaseMemoryUsagePercentage); any other alarm needs scale.alarm_map"),
];

const GROUP: &str = "scale.group.";

/// Per-group overrides of the `scale.asg.*` plan.
pub const DYNAMIC: &[Dynamic] = &[Dynamic {
    prefix: GROUP,
    pattern: "scale.group.<name>.step|ceiling|baseline",
    default: "scale.asg.*",
    meaning: "one group's own step, ceiling or baseline (e.g. a worker group's ceiling)",
}];

/// A scale step: a fixed count, or a percent of the current desired capacity (rounded up).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Step {
    Count(i32),
    Percent(f64),
}

impl Default for Step {
    fn default() -> Step {
        Step::Count(1)
    }
}

impl Step {
    pub fn of(&self, desired: i32) -> i32 {
        match *self {
            Step::Count(n) => n,
            Step::Percent(p) => ((desired as f64) * p / 100.0).ceil().max(1.0) as i32,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct GroupPlan {
    pub step: Step,
    pub ceiling: i32,
    pub baseline: i32,
}

/// What an alarm means when its dimensions do not say it (metric math, composite alarms),
/// or when it is a low-load alarm meant to scale in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmRoute {
    /// "asg:<group>", "rds:<instance>" or "cache:<cluster>"
    pub target: String,
    /// "out" (default) or "in" for ASG; "up" for RDS; "out" for cache; "none" to ignore.
    #[serde(default = "default_on_alarm")]
    pub on_alarm: String,
    /// What ALARM -> OK means: "none" (default) or "in".
    #[serde(default = "default_on_ok")]
    pub on_ok: String,
    /// P1..P4; P1 lets an RDS class change skip the change window (recorded as emergency).
    #[serde(default)]
    pub severity: Option<String>,
}

fn default_on_alarm() -> String {
    "out".into()
}
fn default_on_ok() -> String {
    "none".into()
}

/// The default value (no groups, instances or clusters listed) is what a function that does not
/// read the scale section holds: nothing it may scale.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScaleConfig {
    pub groups: Vec<String>,
    pub group_default: GroupPlan,
    pub group_overrides: BTreeMap<String, GroupPlan>,
    pub asg_cooldown_seconds: i64,
    pub rds_instances: Vec<String>,
    pub rds_ladder: Vec<String>,
    pub rds_cooldown_seconds: i64,
    pub cache_clusters: Vec<String>,
    pub cache_max_nodes: i32,
    pub cache_cooldown_seconds: i64,
    pub flap_transitions: usize,
    pub flap_window_minutes: i64,
    pub alarm_map: BTreeMap<String, AlarmRoute>,
    pub signal_metrics: Vec<String>,
    pub followup: FollowUps,
    /// Memory per class / node type and the alarm percentages (issue #17).
    pub capacity: Capacity,
    pub offpeak: OffPeak,
}

/// The off-peak return to baseline: one step per group per run, each after its checks, the next
/// run a one-time follow-up `step_minutes` later, until the window from the cron run ends.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OffPeak {
    pub cpu_below: f64,
    pub lookback_minutes: i64,
    pub step_minutes: i64,
    pub window_minutes: i64,
}

/// Where scale-on-alarm's one-time follow-ups go (EventBridge Scheduler). Without a target and a
/// role there are none: the function acts on each event alone and says so.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FollowUps {
    pub group: String,
    pub target_arn: String,
    pub role_arn: String,
}

impl FollowUps {
    pub fn enabled(&self) -> bool {
        !self.target_arn.is_empty() && !self.role_arn.is_empty()
    }
}

impl ScaleConfig {
    pub fn plan_for(&self, group: &str) -> &GroupPlan {
        self.group_overrides
            .get(group)
            .unwrap_or(&self.group_default)
    }
}

fn parse_step(s: &Settings, key: &str, raw: &str) -> Result<Step> {
    let raw = raw.trim();
    let bad = || {
        NbaopsError::config(format!(
            "{key} (from {}): expected a positive count (1) or percent (25%), got '{raw}'",
            s.origin(key)
        ))
    };
    if let Some(p) = raw.strip_suffix('%') {
        let p: f64 = p.trim().parse().map_err(|_| bad())?;
        if p <= 0.0 || p > 100.0 {
            return Err(bad());
        }
        Ok(Step::Percent(p))
    } else {
        let n: i32 = raw.parse().map_err(|_| bad())?;
        if n < 1 {
            return Err(bad());
        }
        Ok(Step::Count(n))
    }
}

fn group_overrides(s: &Settings, default: &GroupPlan) -> Result<BTreeMap<String, GroupPlan>> {
    let mut overrides: BTreeMap<String, GroupPlan> = BTreeMap::new();
    for (rest, value) in s.under(GROUP) {
        let key = format!("{GROUP}{rest}");
        let Some((group, field)) = rest.rsplit_once('.') else {
            return Err(s.bad(&key, "scale.group.<name>.step|ceiling|baseline"));
        };
        let plan = overrides
            .entry(group.to_string())
            .or_insert_with(|| default.clone());
        match field {
            "step" => plan.step = parse_step(s, &key, &value)?,
            "ceiling" => plan.ceiling = positive(s, &key, "a whole number >= 1")?,
            "baseline" => plan.baseline = positive(s, &key, "a whole number >= 1")?,
            _ => return Err(s.bad(&key, "scale.group.<name>.step|ceiling|baseline")),
        }
    }
    for (group, plan) in &overrides {
        if plan.baseline > plan.ceiling {
            return Err(NbaopsError::config(format!(
                "scale.group.{group}: baseline {} is above ceiling {}",
                plan.baseline, plan.ceiling
            )));
        }
    }
    Ok(overrides)
}

fn alarm_map(s: &Settings) -> Result<BTreeMap<String, AlarmRoute>> {
    let map: BTreeMap<String, AlarmRoute> = s.json(
        "scale.alarm_map",
        "a JSON object {alarm: {target, on_alarm, on_ok, severity}}",
    )?;
    for (alarm, route) in &map {
        let kind = route.target.split(':').next().unwrap_or("");
        if !matches!(kind, "asg" | "rds" | "cache") || route.target.split(':').count() != 2 {
            return Err(NbaopsError::config(format!(
                "scale.alarm_map[{alarm}].target: expected asg:<group>, rds:<instance> or cache:<cluster>, got '{}'",
                route.target
            )));
        }
        if !matches!(route.on_alarm.as_str(), "out" | "in" | "up" | "none")
            || !matches!(route.on_ok.as_str(), "in" | "none")
        {
            return Err(NbaopsError::config(format!(
                "scale.alarm_map[{alarm}]: on_alarm must be out|in|up|none and on_ok in|none"
            )));
        }
        if let Some(sev) = &route.severity {
            if crate::alerts::Severity::from_str(sev).is_err() {
                return Err(NbaopsError::config(format!(
                    "scale.alarm_map[{alarm}].severity: expected P1..P4, got '{sev}'"
                )));
            }
        }
    }
    Ok(map)
}

fn followups(s: &Settings) -> Result<FollowUps> {
    let f = FollowUps {
        group: s.string("scale.followup.group"),
        target_arn: s.string("scale.followup.target_arn"),
        role_arn: s.string("scale.followup.role_arn"),
    };
    let name_ok = !f.group.is_empty()
        && f.group.len() <= 64
        && f.group
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !name_ok {
        return Err(s.bad(
            "scale.followup.group",
            "a schedule group name: 1-64 of [0-9a-zA-Z-_.]",
        ));
    }
    if !f.target_arn.is_empty() && !f.target_arn.starts_with("arn:") {
        return Err(s.bad(
            "scale.followup.target_arn",
            "a Lambda function or alias ARN",
        ));
    }
    if !f.role_arn.is_empty() && !f.role_arn.starts_with("arn:") {
        return Err(s.bad("scale.followup.role_arn", "an IAM role ARN"));
    }
    if f.target_arn.is_empty() != f.role_arn.is_empty() {
        return Err(NbaopsError::config(format!(
            "scale.followup.target_arn and scale.followup.role_arn go together (from {} and {}): set both or neither",
            s.origin("scale.followup.target_arn"),
            s.origin("scale.followup.role_arn")
        )));
    }
    Ok(f)
}

fn offpeak(s: &Settings) -> Result<OffPeak> {
    let cpu_below: f64 = s.number(
        "scale.offpeak.cpu_below",
        "a percent above 0 and at most 100",
    )?;
    if !(cpu_below > 0.0 && cpu_below <= 100.0) {
        return Err(s.bad(
            "scale.offpeak.cpu_below",
            "a percent above 0 and at most 100",
        ));
    }
    let lookback_minutes: i64 =
        positive(s, "scale.offpeak.lookback_minutes", "whole minutes 1-1440")?;
    if lookback_minutes > 1440 {
        return Err(s.bad("scale.offpeak.lookback_minutes", "whole minutes 1-1440"));
    }
    let step_minutes: i64 = positive(s, "scale.offpeak.step_minutes", "whole minutes >= 1")?;
    let window_minutes: i64 = positive(s, "scale.offpeak.window_minutes", "whole minutes >= 1")?;
    if window_minutes > 1440 {
        return Err(s.bad(
            "scale.offpeak.window_minutes",
            "whole minutes 1-1440 (one night)",
        ));
    }
    Ok(OffPeak {
        cpu_below,
        lookback_minutes,
        step_minutes,
        window_minutes,
    })
}

pub fn from_settings(s: &Settings) -> Result<ScaleConfig> {
    let group_default = GroupPlan {
        step: parse_step(s, "scale.asg.step", &s.string("scale.asg.step"))?,
        ceiling: positive(s, "scale.asg.ceiling", "a whole number >= 1")?,
        baseline: positive(s, "scale.asg.baseline", "a whole number >= 1")?,
    };
    if group_default.baseline > group_default.ceiling {
        return Err(s.bad(
            "scale.asg.baseline",
            "a baseline not above scale.asg.ceiling",
        ));
    }
    let group_overrides = group_overrides(s, &group_default)?;
    let rds_ladder = s.list("scale.rds.ladder");
    if rds_ladder.is_empty() || rds_ladder.iter().any(|c| !c.starts_with("db.")) {
        return Err(s.bad(
            "scale.rds.ladder",
            "a comma list of db.* classes, smallest first",
        ));
    }
    let alarm_map = alarm_map(s)?;
    let cache_max_nodes = positive(s, "scale.cache.max_nodes", "a whole number >= 1")?;
    let capacity = capacity::from_settings(s, &rds_ladder, cache_max_nodes)?;
    Ok(ScaleConfig {
        groups: s.list("scale.groups"),
        group_default,
        group_overrides,
        asg_cooldown_seconds: s.number("scale.asg.cooldown_seconds", "whole seconds")?,
        rds_instances: s.list("scale.rds.instances"),
        rds_ladder,
        rds_cooldown_seconds: s.number("scale.rds.cooldown_seconds", "whole seconds")?,
        cache_clusters: s.list("scale.cache.clusters"),
        cache_max_nodes,
        cache_cooldown_seconds: s.number("scale.cache.cooldown_seconds", "whole seconds")?,
        flap_transitions: positive(s, "scale.flap.transitions", "a whole number >= 2")?,
        flap_window_minutes: positive(s, "scale.flap.window_minutes", "whole minutes >= 1")?,
        alarm_map,
        signal_metrics: s.list("scale.signal_metrics"),
        followup: followups(s)?,
        offpeak: offpeak(s)?,
        capacity,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::{layer, Env};

    fn load(env_pairs: &[(&str, &str)], ssm_pairs: &[(&str, &str)]) -> Result<ScaleConfig> {
        let pairs = |p: &[(&str, &str)]| -> BTreeMap<String, String> {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        from_settings(&layer(Env::Dev, &pairs(env_pairs), &pairs(ssm_pairs))?)
    }

    #[test]
    fn spec_defaults() {
        let c = load(&[], &[]).unwrap();
        assert_eq!(c.group_default.ceiling, 4);
        assert_eq!(c.group_default.baseline, 2);
        assert_eq!(c.group_default.step, Step::Count(1));
        assert_eq!(c.rds_ladder, vec!["db.t3.micro", "db.t3.small"]);
        assert_eq!(c.cache_cooldown_seconds, 900);
    }

    #[test]
    fn ssm_beats_env_beats_default() {
        let c = load(
            &[
                ("NBAOPS_SCALE__ASG__CEILING", "6"),
                ("NBAOPS_SCALE__ASG__BASELINE", "3"),
            ],
            &[
                ("/nbaops/dev/scale/asg/ceiling", "8"),
                ("/nbaops/prod/scale/asg/ceiling", "99"),
            ],
        )
        .unwrap();
        assert_eq!(c.group_default.ceiling, 8);
        assert_eq!(c.group_default.baseline, 3);
    }

    #[test]
    fn wrong_value_names_key_and_source() {
        let e = load(&[], &[("/nbaops/dev/scale/asg/ceiling", "lots")]).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("scale.asg.ceiling") && msg.contains("SSM") && msg.contains("lots"),
            "{msg}"
        );
    }

    #[test]
    fn steps_overrides_and_alarm_map() {
        let c = load(
            &[],
            &[
                ("/nbaops/dev/scale/group/nbaops-dev-worker/ceiling", "6"),
                ("/nbaops/dev/scale/group/nbaops-dev-worker/step", "50%"),
                (
                    "/nbaops/dev/scale/alarm_map",
                    r#"{"web-cpu-low":{"target":"asg:nbaops-dev-web","on_alarm":"in"}}"#,
                ),
            ],
        )
        .unwrap();
        let w = c.plan_for("nbaops-dev-worker");
        assert_eq!((w.ceiling, w.baseline), (6, 2));
        assert_eq!(w.step.of(3), 2);
        assert_eq!(c.plan_for("other").ceiling, 4);
        assert_eq!(c.alarm_map["web-cpu-low"].on_ok, "none");
        assert!(load(&[], &[("/nbaops/dev/scale/asg/step", "0")]).is_err());
        assert!(load(
            &[],
            &[("/nbaops/dev/scale/alarm_map", r#"{"a":{"target":"ec2:x"}}"#)]
        )
        .is_err());
        assert!(load(&[], &[("/nbaops/dev/scale/asg/baseline", "5")]).is_err());
        assert!(load(&[], &[("/nbaops/dev/scale/group/web/size", "5")]).is_err());
        assert!(load(&[], &[("/nbaops/dev/scale/group/web/baseline", "5")]).is_err());
    }

    #[test]
    fn offpeak_defaults_and_limits() {
        let c = load(&[], &[]).unwrap();
        assert_eq!(c.offpeak.cpu_below, 40.0);
        assert_eq!(
            (
                c.offpeak.lookback_minutes,
                c.offpeak.step_minutes,
                c.offpeak.window_minutes
            ),
            (15, 10, 240)
        );
        let c = load(&[("NBAOPS_SCALE__OFFPEAK__CPU_BELOW", "25.5")], &[]).unwrap();
        assert_eq!(c.offpeak.cpu_below, 25.5);
        for (k, v) in [
            ("NBAOPS_SCALE__OFFPEAK__CPU_BELOW", "0"),
            ("NBAOPS_SCALE__OFFPEAK__CPU_BELOW", "101"),
            ("NBAOPS_SCALE__OFFPEAK__CPU_BELOW", "low"),
            ("NBAOPS_SCALE__OFFPEAK__LOOKBACK_MINUTES", "0"),
            // GetMetricStatistics returns at most 1,440 datapoints (one a minute here).
            ("NBAOPS_SCALE__OFFPEAK__LOOKBACK_MINUTES", "1441"),
            ("NBAOPS_SCALE__OFFPEAK__STEP_MINUTES", "0"),
            ("NBAOPS_SCALE__OFFPEAK__WINDOW_MINUTES", "1441"),
        ] {
            let e = load(&[(k, v)], &[]).unwrap_err().to_string();
            assert!(e.contains("scale.offpeak."), "{k}={v}: {e}");
        }
    }

    #[test]
    fn capacity_tables_cover_the_ladder_and_name_the_key() {
        let c = load(&[], &[]).unwrap();
        for class in &c.rds_ladder {
            assert!(c.capacity.rds_class_memory.contains_key(class), "{class}");
        }
        assert_eq!(c.capacity.rds_class_memory["db.t3.micro"], 1 << 30);
        assert_eq!(c.capacity.cache_node_memory["cache.t3.micro"], 512 << 20);
        assert_eq!(c.capacity.cache_node_memory["cache.m5.large"], 6537 << 20);
        let e = load(
            &[(
                "NBAOPS_SCALE__RDS__LADDER",
                "db.t3.micro,db.t3.small,db.x9.huge",
            )],
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("scale.rds.class_memory") && e.contains("db.x9.huge"),
            "{e}"
        );
        for (k, v) in [
            ("/nbaops/dev/scale/rds/class_memory", "db.t3.micro=1GiB"),
            (
                "/nbaops/dev/scale/rds/class_memory",
                "db.t3.micro=1GB,db.t3.small=2GiB",
            ),
            ("/nbaops/dev/scale/rds/reserved_memory", "4GiB"),
            ("/nbaops/dev/scale/cache/node_memory", "t3.micro=512MiB"),
            ("/nbaops/dev/scale/cache/memory_high_percent", "100"),
            ("/nbaops/dev/scale/cache/scale_in_below_percent", "80"),
            ("/nbaops/dev/scale/cache/min_nodes", "5"),
            ("/nbaops/dev/scale/cache/scale_in", "maybe"),
        ] {
            let e = load(&[], &[(k, v)]).unwrap_err().to_string();
            let key = k.trim_start_matches("/nbaops/dev/").replace('/', ".");
            assert!(e.contains(&key), "{k}={v}: {e}");
        }
    }
}

//! Typed configuration. Every SPEC number is a default here; an environment variable
//! (`NBAOPS_GUARD__DRY_RUN` for `guard.dry_run`) overrides it, and SSM Parameter Store under
//! `/nbaops/<env>/` (`/nbaops/dev/guard/dry_run`) overrides both, because operators tune SSM
//! without a deploy. Everything is validated once at init; an error names the key and its source.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{NaiveTime, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::error::{NbaopsError, Result};
use crate::ports::Params;

pub mod alerts;
pub mod backup;
pub mod cost;
pub mod failover;
pub mod offhours;
pub mod pg;

/// Keys, defaults and what they mean. A key absent from this table is refused (typos must not
/// silently fall back to a default), except under the dynamic prefixes below.
pub const DEFAULTS: &[(&str, &str, &str)] = &[
    (
        "alerts_topic_arn",
        "",
        "SNS topic every alert is published to",
    ),
    (
        "actions_topic_arn",
        "",
        "SNS topic every audit record is published to",
    ),
    (
        "ledger_table",
        "nbaops-{env}-ledger",
        "DynamoDB table for idempotency, cooldowns, audit, state",
    ),
    (
        "guard.kill_switch",
        "false",
        "true stops every action of every function",
    ),
    (
        "guard.dry_run",
        "false",
        "true: decide and audit, never act",
    ),
    (
        "guard.dry_run_functions",
        "",
        "comma list of functions kept in dry-run",
    ),
    (
        "guard.protect_tag",
        "nbaops:protect",
        "a resource with this tag = true is never touched",
    ),
    (
        "guard.window.days",
        "tue,thu",
        "change window days (SPEC 5.2: Tuesday and Thursday evenings)",
    ),
    (
        "guard.window.start",
        "20:00",
        "change window start, local time",
    ),
    ("guard.window.end", "23:00", "change window end, local time"),
    (
        "guard.window.tz",
        "UTC",
        "IANA time zone of the change window",
    ),
    (
        "guard.blast.max_actions",
        "3",
        "at most this many actions per invocation",
    ),
    (
        "guard.blast.max_percent",
        "50",
        "at most this percent of the resources in view per invocation (never below one)",
    ),
    (
        "guard.idempotency_ttl_hours",
        "24",
        "how long an event id + action stays claimed",
    ),
    (
        "guard.switch_ttl_seconds",
        "30",
        "how long kill switch and dry-run values are cached: a switch flipped in SSM takes effect within this many seconds",
    ),
    (
        "guard.claim_seconds",
        "900",
        "when the Lambda deadline is unknown, how long an idempotency claim is held before a retry may take it over (the function's timeout; 900 is Lambda's maximum)",
    ),
    (
        "audit.ttl_days",
        "400",
        "audit records kept (SPEC: one year cold)",
    ),
    (
        "scale.groups",
        "",
        "comma list of Auto Scaling groups nbaops may scale",
    ),
    (
        "scale.asg.step",
        "1",
        "scale step: a count (1) or a percent of desired (25%)",
    ),
    (
        "scale.asg.ceiling",
        "4",
        "never scale a group above this (SPEC: 4 x t3.micro)",
    ),
    (
        "scale.asg.baseline",
        "2",
        "scale-in stops here (SPEC: 2 x t3.micro)",
    ),
    (
        "scale.asg.cooldown_seconds",
        "300",
        "minimum time between two scalings of one group",
    ),
    (
        "scale.rds.instances",
        "",
        "comma list of RDS instances nbaops may resize",
    ),
    (
        "scale.rds.ladder",
        "db.t3.micro,db.t3.small",
        "instance classes, smallest first",
    ),
    (
        "scale.rds.cooldown_seconds",
        "3600",
        "minimum time between two class changes",
    ),
    (
        "scale.cache.clusters",
        "",
        "comma list of Memcached clusters nbaops may grow",
    ),
    (
        "scale.cache.max_nodes",
        "4",
        "node cap per Memcached cluster",
    ),
    (
        "scale.cache.cooldown_seconds",
        "900",
        "minimum time between two node additions (SPEC: 15 minutes)",
    ),
    (
        "scale.flap.transitions",
        "4",
        "this many state changes of one alarm ...",
    ),
    (
        "scale.flap.window_minutes",
        "60",
        "... within this window = flapping: stop acting, alert P3",
    ),
    (
        "scale.alarm_map",
        "{}",
        "JSON: alarm name or ARN -> {target, on_alarm, on_ok, severity}",
    ),
    (
        "scale.signal_metrics",
        "CPUUtilization,FreeableMemory,DatabaseConnections,IOWait,BytesUsedForCacheItems",
        "metrics whose single-metric alarms scale by their dimension (SPEC 2.5; Memcached publishes BytesUsedForCacheItems, not the Redis-only DatabaseMemoryUsagePercentage); any other alarm needs scale.alarm_map",
    ),
];

/// The SSM sections (`/nbaops/<env>/<section>/`) a function reads its configuration from: the
/// guard and audit settings every function shares, and its own. Nothing else: a typo in another
/// function's section cannot stop this one, and its IAM role may read these paths only
/// (infra/template.yaml; checked by infra/tests). Secrets are never read by path.
pub fn config_sections(function: &str) -> &'static [&'static str] {
    match function {
        "scale-on-alarm" => &["guard", "audit", "scale"],
        "pg-health" | "vacuum-trigger" => &["guard", "audit", "pg"],
        "alert-router" => &["guard", "audit", "alerts"],
        "cost-anomaly" => &["guard", "audit", "cost"],
        "failover-notify" => &["guard", "audit", "failover"],
        "backup-guard" => &["guard", "audit", "backup", "pg"],
        "offhours" => &["guard", "audit", "offhours"],
        _ => &["guard", "audit"],
    }
}

/// The SSM paths [`Config::load`] reads for a function.
pub fn ssm_paths(env: Env, function: &str) -> Vec<String> {
    config_sections(function)
        .iter()
        .map(|section| format!("/nbaops/{env}/{section}/"))
        .collect()
}

/// Keys under these prefixes are per-resource overrides, checked by their section.
const DYNAMIC_PREFIXES: &[&str] = &["scale.group."];

/// Every function section's keys: a section lives in its own file (`config/<section>.rs`) with a
/// `KEYS` table and a `from_settings` parser its function calls at init. Register it here.
pub const SECTIONS: &[&[(&str, &str, &str)]] = &[
    DEFAULTS,
    pg::KEYS,
    alerts::KEYS,
    cost::KEYS,
    failover::KEYS,
    backup::KEYS,
    offhours::KEYS,
];

/// Dynamic prefixes of the sections (per-resource maps), registered like `SECTIONS`.
pub const SECTION_PREFIXES: &[&[&str]] = &[DYNAMIC_PREFIXES];

fn all_keys() -> impl Iterator<Item = &'static (&'static str, &'static str, &'static str)> {
    SECTIONS.iter().flat_map(|s| s.iter())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Env {
    Dev,
    Test,
    Prod,
}

impl FromStr for Env {
    type Err = NbaopsError;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "dev" => Ok(Env::Dev),
            "test" => Ok(Env::Test),
            "prod" => Ok(Env::Prod),
            other => Err(NbaopsError::config(format!(
                "NBAOPS_ENV: expected dev, test or prod, got '{other}'"
            ))),
        }
    }
}

impl fmt::Display for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Env::Dev => "dev",
            Env::Test => "test",
            Env::Prod => "prod",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Source {
    Default,
    Env,
    Ssm,
}

/// The raw layered key/value view, with where each value came from (for error messages).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    values: BTreeMap<String, (String, Source)>,
}

impl Settings {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(|(v, _)| v.as_str())
    }

    pub fn origin(&self, key: &str) -> String {
        match self.values.get(key).map(|(_, s)| *s) {
            Some(Source::Env) => format!("env {}", env_var_name(key)),
            Some(Source::Ssm) => format!("SSM {}", key.replace('.', "/")),
            _ => "default".to_string(),
        }
    }

    pub fn bad(&self, key: &str, expected: &str) -> NbaopsError {
        NbaopsError::config(format!(
            "{key} (from {}): expected {expected}, got '{}'",
            self.origin(key),
            self.get(key).unwrap_or("")
        ))
    }

    pub fn string(&self, key: &str) -> String {
        self.get(key).unwrap_or("").trim().to_string()
    }

    pub fn boolean(&self, key: &str) -> Result<bool> {
        match self.string(key).to_ascii_lowercase().as_str() {
            "true" | "on" | "yes" | "1" => Ok(true),
            "false" | "off" | "no" | "0" | "" => Ok(false),
            _ => Err(self.bad(key, "true or false")),
        }
    }

    pub fn number<T: FromStr>(&self, key: &str, expected: &str) -> Result<T> {
        self.string(key)
            .parse::<T>()
            .map_err(|_| self.bad(key, expected))
    }

    pub fn list(&self, key: &str) -> Vec<String> {
        self.string(key)
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// Keys (without the prefix) under a dynamic prefix.
    pub fn under(&self, prefix: &str) -> BTreeMap<String, String> {
        self.values
            .iter()
            .filter_map(|(k, (v, _))| {
                k.strip_prefix(prefix)
                    .map(|rest| (rest.to_string(), v.clone()))
            })
            .collect()
    }

    pub fn json<T: for<'de> Deserialize<'de>>(&self, key: &str, expected: &str) -> Result<T> {
        serde_json::from_str(&self.string(key)).map_err(|e| {
            NbaopsError::config(format!(
                "{key} (from {}): expected {expected}: {e}",
                self.origin(key)
            ))
        })
    }
}

pub fn env_var_name(key: &str) -> String {
    format!("NBAOPS_{}", key.replace('.', "__").to_ascii_uppercase())
}

fn known_key(key: &str) -> bool {
    all_keys().any(|(k, _, _)| *k == key)
        || SECTION_PREFIXES
            .iter()
            .flat_map(|p| p.iter())
            .any(|p| key.starts_with(p))
}

/// Layer defaults < environment variables < SSM parameters under `/nbaops/<env>/`.
/// Parameters under `/nbaops/<env>/secrets/` are not configuration and are skipped here.
pub fn layer(
    env: Env,
    vars: &BTreeMap<String, String>,
    ssm: &BTreeMap<String, String>,
) -> Result<Settings> {
    let mut values = BTreeMap::new();
    for (k, v, _) in all_keys() {
        values.insert(
            k.to_string(),
            (v.replace("{env}", &env.to_string()), Source::Default),
        );
    }
    for (name, v) in vars {
        let Some(rest) = name.strip_prefix("NBAOPS_") else {
            continue;
        };
        if matches!(
            rest,
            "ENV" | "SSM_PREFIX" | "SSM" | "TEST_NOW" | "TEST_PAUSE_AFTER_CLAIM"
        ) {
            continue;
        }
        let key = rest.to_ascii_lowercase().replace("__", ".");
        if !known_key(&key) {
            return Err(NbaopsError::config(format!(
                "unknown setting {name} (no key '{key}'; see shared/src/config/)"
            )));
        }
        values.insert(key, (v.clone(), Source::Env));
    }
    let prefix = format!("/nbaops/{env}/");
    for (name, v) in ssm {
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        if rest.starts_with("secrets/") {
            continue;
        }
        let key = rest.replace('/', ".");
        if !known_key(&key) {
            return Err(NbaopsError::config(format!(
                "unknown SSM parameter {name} (no key '{key}'; see shared/src/config/)"
            )));
        }
        values.insert(key, (v.clone(), Source::Ssm));
    }
    Ok(Settings { values })
}

#[derive(Debug, Clone, Serialize)]
pub struct ChangeWindow {
    pub days: Vec<Weekday>,
    pub start: NaiveTime,
    pub end: NaiveTime,
    #[serde(serialize_with = "tz_name")]
    pub tz: Tz,
}

fn tz_name<S: serde::Serializer>(tz: &Tz, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(tz.name())
}

#[derive(Debug, Clone, Serialize)]
pub struct GuardConfig {
    pub kill_switch: bool,
    pub dry_run: bool,
    pub dry_run_functions: Vec<String>,
    pub protect_tag: String,
    pub window: ChangeWindow,
    pub max_actions: usize,
    pub max_percent: f64,
    pub idempotency_ttl_hours: i64,
    pub switch_ttl_seconds: u64,
    pub claim_seconds: i64,
    pub audit_ttl_days: i64,
}

/// A scale step: a fixed count, or a percent of the current desired capacity (rounded up).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Step {
    Count(i32),
    Percent(f64),
}

impl Step {
    pub fn of(&self, desired: i32) -> i32 {
        match *self {
            Step::Count(n) => n,
            Step::Percent(p) => ((desired as f64) * p / 100.0).ceil().max(1.0) as i32,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
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

#[derive(Debug, Clone, Serialize)]
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
}

impl ScaleConfig {
    pub fn plan_for(&self, group: &str) -> &GroupPlan {
        self.group_overrides
            .get(group)
            .unwrap_or(&self.group_default)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub env: Env,
    pub function: String,
    pub alerts_topic_arn: String,
    pub actions_topic_arn: String,
    pub ledger_table: String,
    pub guard: GuardConfig,
    pub scale: ScaleConfig,
    #[serde(skip)]
    pub settings: Settings,
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

pub fn parse_time(s: &Settings, key: &str) -> Result<NaiveTime> {
    NaiveTime::parse_from_str(&s.string(key), "%H:%M").map_err(|_| s.bad(key, "HH:MM"))
}

pub fn parse_days(s: &Settings, key: &str) -> Result<Vec<Weekday>> {
    let days = s.list(key);
    let parsed: Vec<Weekday> = days
        .iter()
        .map(|d| d.parse::<Weekday>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| s.bad(key, "a comma list of weekdays (tue,thu)"))?;
    if parsed.is_empty() {
        return Err(s.bad(key, "at least one weekday"));
    }
    Ok(parsed)
}

pub fn positive<T: FromStr + PartialOrd + Default>(
    s: &Settings,
    key: &str,
    what: &str,
) -> Result<T> {
    let v: T = s.number(key, what)?;
    if v <= T::default() {
        return Err(s.bad(key, what));
    }
    Ok(v)
}

impl Config {
    /// Builds and validates the typed config from layered settings.
    pub fn from_settings(env: Env, function: &str, s: Settings) -> Result<Config> {
        let tz: Tz = s
            .string("guard.window.tz")
            .parse()
            .map_err(|_| s.bad("guard.window.tz", "an IANA time zone such as Europe/Paris"))?;
        let window = ChangeWindow {
            days: parse_days(&s, "guard.window.days")?,
            start: parse_time(&s, "guard.window.start")?,
            end: parse_time(&s, "guard.window.end")?,
            tz,
        };
        let max_percent: f64 = positive(&s, "guard.blast.max_percent", "a percent in (0, 100]")?;
        if max_percent > 100.0 {
            return Err(s.bad("guard.blast.max_percent", "a percent in (0, 100]"));
        }
        let guard = GuardConfig {
            kill_switch: s.boolean("guard.kill_switch")?,
            dry_run: s.boolean("guard.dry_run")?,
            dry_run_functions: s.list("guard.dry_run_functions"),
            protect_tag: s.string("guard.protect_tag"),
            window,
            max_actions: positive(&s, "guard.blast.max_actions", "a whole number >= 1")?,
            max_percent,
            idempotency_ttl_hours: positive(&s, "guard.idempotency_ttl_hours", "whole hours >= 1")?,
            switch_ttl_seconds: s.number("guard.switch_ttl_seconds", "whole seconds")?,
            claim_seconds: positive(&s, "guard.claim_seconds", "whole seconds >= 1")?,
            audit_ttl_days: positive(&s, "audit.ttl_days", "whole days >= 1")?,
        };
        if guard.protect_tag.is_empty() {
            return Err(s.bad("guard.protect_tag", "a tag key"));
        }

        let group_default = GroupPlan {
            step: parse_step(&s, "scale.asg.step", &s.string("scale.asg.step"))?,
            ceiling: positive(&s, "scale.asg.ceiling", "a whole number >= 1")?,
            baseline: positive(&s, "scale.asg.baseline", "a whole number >= 1")?,
        };
        if group_default.baseline > group_default.ceiling {
            return Err(s.bad(
                "scale.asg.baseline",
                "a baseline not above scale.asg.ceiling",
            ));
        }
        let mut group_overrides: BTreeMap<String, GroupPlan> = BTreeMap::new();
        for (rest, value) in s.under("scale.group.") {
            let key = format!("scale.group.{rest}");
            let Some((group, field)) = rest.rsplit_once('.') else {
                return Err(s.bad(&key, "scale.group.<name>.step|ceiling|baseline"));
            };
            let plan = group_overrides
                .entry(group.to_string())
                .or_insert_with(|| group_default.clone());
            match field {
                "step" => plan.step = parse_step(&s, &key, &value)?,
                "ceiling" => plan.ceiling = positive(&s, &key, "a whole number >= 1")?,
                "baseline" => plan.baseline = positive(&s, &key, "a whole number >= 1")?,
                _ => return Err(s.bad(&key, "scale.group.<name>.step|ceiling|baseline")),
            }
        }
        for (group, plan) in &group_overrides {
            if plan.baseline > plan.ceiling {
                return Err(NbaopsError::config(format!(
                    "scale.group.{group}: baseline {} is above ceiling {}",
                    plan.baseline, plan.ceiling
                )));
            }
        }
        let rds_ladder = s.list("scale.rds.ladder");
        if rds_ladder.is_empty() || rds_ladder.iter().any(|c| !c.starts_with("db.")) {
            return Err(s.bad(
                "scale.rds.ladder",
                "a comma list of db.* classes, smallest first",
            ));
        }
        let alarm_map: BTreeMap<String, AlarmRoute> = s.json(
            "scale.alarm_map",
            "a JSON object {alarm: {target, on_alarm, on_ok, severity}}",
        )?;
        for (alarm, route) in &alarm_map {
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
        let scale = ScaleConfig {
            groups: s.list("scale.groups"),
            group_default,
            group_overrides,
            asg_cooldown_seconds: s.number("scale.asg.cooldown_seconds", "whole seconds")?,
            rds_instances: s.list("scale.rds.instances"),
            rds_ladder,
            rds_cooldown_seconds: s.number("scale.rds.cooldown_seconds", "whole seconds")?,
            cache_clusters: s.list("scale.cache.clusters"),
            cache_max_nodes: positive(&s, "scale.cache.max_nodes", "a whole number >= 1")?,
            cache_cooldown_seconds: s.number("scale.cache.cooldown_seconds", "whole seconds")?,
            flap_transitions: positive(&s, "scale.flap.transitions", "a whole number >= 2")?,
            flap_window_minutes: positive(&s, "scale.flap.window_minutes", "whole minutes >= 1")?,
            alarm_map,
            signal_metrics: s.list("scale.signal_metrics"),
        };
        for key in ["alerts_topic_arn", "actions_topic_arn"] {
            let v = s.string(key);
            if !v.is_empty() && !v.starts_with("arn:") {
                return Err(s.bad(key, "an SNS topic ARN"));
            }
        }
        Ok(Config {
            env,
            function: function.to_string(),
            alerts_topic_arn: s.string("alerts_topic_arn"),
            actions_topic_arn: s.string("actions_topic_arn"),
            ledger_table: s.string("ledger_table"),
            guard,
            scale,
            settings: s,
        })
    }

    /// Init-time load: `NBAOPS_ENV` from the environment, then SSM by path: only the function's
    /// own paths (see [`config_sections`]), one paginated call each.
    pub async fn load(
        function: &str,
        vars: &BTreeMap<String, String>,
        params: Option<&dyn Params>,
    ) -> Result<Config> {
        let env: Env = vars
            .get("NBAOPS_ENV")
            .ok_or_else(|| NbaopsError::config("NBAOPS_ENV is not set (dev, test or prod)"))?
            .parse()?;
        let mut ssm = BTreeMap::new();
        if let Some(p) = params {
            // One request per section, all at once: the cold start waits for the slowest, not
            // for their sum.
            let paths = ssm_paths(env, function);
            let reads =
                futures_util::future::try_join_all(paths.iter().map(|path| p.get_by_path(path)))
                    .await?;
            for read in reads {
                ssm.extend(read);
            }
        }
        // Debug only, and through the redacting writer: SecureString values never reach the log.
        tracing::debug!(parameters = ?ssm, "SSM parameters read");
        let settings = layer(env, vars, &ssm)?;
        Config::from_settings(env, function, settings)
    }

    pub fn function_dry_run(&self) -> bool {
        self.guard.dry_run
            || self
                .guard
                .dry_run_functions
                .iter()
                .any(|f| f == &self.function)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn load(env_pairs: &[(&str, &str)], ssm_pairs: &[(&str, &str)]) -> Result<Config> {
        let s = layer(Env::Dev, &vars(env_pairs), &vars(ssm_pairs))?;
        Config::from_settings(Env::Dev, "scale-on-alarm", s)
    }

    #[test]
    fn spec_defaults() {
        let c = load(&[], &[]).unwrap();
        assert_eq!(c.scale.group_default.ceiling, 4);
        assert_eq!(c.scale.group_default.baseline, 2);
        assert_eq!(c.scale.group_default.step, Step::Count(1));
        assert_eq!(c.scale.rds_ladder, vec!["db.t3.micro", "db.t3.small"]);
        assert_eq!(c.scale.cache_cooldown_seconds, 900);
        assert_eq!(c.guard.window.days, vec![Weekday::Tue, Weekday::Thu]);
        assert_eq!(c.ledger_table, "nbaops-dev-ledger");
        assert!(!c.guard.dry_run && !c.guard.kill_switch);
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
        assert_eq!(c.scale.group_default.ceiling, 8);
        assert_eq!(c.scale.group_default.baseline, 3);
    }

    #[test]
    fn wrong_value_names_key_and_source() {
        let e = load(&[], &[("/nbaops/dev/scale/asg/ceiling", "lots")]).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("scale.asg.ceiling") && msg.contains("SSM") && msg.contains("lots"),
            "{msg}"
        );
        let e = load(&[("NBAOPS_GUARD__WINDOW__TZ", "Mars/Olympus")], &[]).unwrap_err();
        assert!(e.to_string().contains("NBAOPS_GUARD__WINDOW__TZ"), "{e}");
    }

    #[test]
    fn unknown_keys_are_refused_but_secrets_skipped() {
        assert!(load(&[], &[("/nbaops/dev/guard/dryrun", "true")]).is_err());
        assert!(load(&[("NBAOPS_GUARD__DRYRUN", "true")], &[]).is_err());
        assert!(load(&[], &[("/nbaops/dev/secrets/slack", "x")]).is_ok());
    }

    #[tokio::test]
    async fn each_function_reads_only_its_own_sections() {
        use crate::fakes::FakeParams;
        // A broken scale section (the scale function's business) and a secret nearby.
        let params = FakeParams::with(&[
            ("/nbaops/dev/scale/alarm_map", "{not json"),
            ("/nbaops/dev/guard/dry_run", "true"),
            ("/nbaops/dev/alerts/dedup_minutes", "not-a-number"),
            (
                "/nbaops/dev/secrets/alerts/slack_webhook_url",
                "https://hooks.example/x",
            ),
        ]);
        let env = vars(&[("NBAOPS_ENV", "dev")]);
        let c = Config::load("offhours", &env, Some(&params)).await.unwrap();
        assert!(c.guard.dry_run, "the shared guard section is read");
        assert!(c
            .settings
            .get("alerts.dedup_minutes")
            .is_none_or(|v| v != "not-a-number"));
        let e = Config::load("scale-on-alarm", &env, Some(&params))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("scale.alarm_map"), "{e}");
        assert_eq!(
            ssm_paths(Env::Prod, "backup-guard"),
            vec![
                "/nbaops/prod/guard/",
                "/nbaops/prod/audit/",
                "/nbaops/prod/backup/",
                "/nbaops/prod/pg/"
            ]
        );
        assert!(ssm_paths(Env::Dev, "alert-router")
            .iter()
            .all(|p| !p.contains("secrets")));
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
        let w = c.scale.plan_for("nbaops-dev-worker");
        assert_eq!((w.ceiling, w.baseline), (6, 2));
        assert_eq!(w.step.of(3), 2);
        assert_eq!(c.scale.plan_for("other").ceiling, 4);
        assert_eq!(c.scale.alarm_map["web-cpu-low"].on_ok, "none");
        assert!(load(&[], &[("/nbaops/dev/scale/asg/step", "0")]).is_err());
        assert!(load(
            &[],
            &[("/nbaops/dev/scale/alarm_map", r#"{"a":{"target":"ec2:x"}}"#)]
        )
        .is_err());
        assert!(load(&[], &[("/nbaops/dev/scale/asg/baseline", "5")]).is_err());
    }
}

//! Typed configuration. Every SPEC number is a default here; an environment variable
//! (`NBAOPS_GUARD__DRY_RUN` for `guard.dry_run`) overrides it, and SSM Parameter Store under
//! `/nbaops/<env>/` (`/nbaops/dev/guard/dry_run`) overrides both, because operators tune SSM
//! without a deploy. Everything is validated once at init; an error names the key and its source.
//!
//! This file is the engine (layering, [`Settings`], [`Config`]) and the core keys every function
//! reads (`guard.*`, `audit.*`, the deployment's topics and table). Each function's section lives
//! in its own file with its `KEYS` table and its parser, registered in [`SECTIONS`]; a function
//! parses only the sections [`config_sections`] gives it, so a mistake in another function's
//! section never stops it. `docs/operations-strategy.md` is generated from these tables
//! ([`strategy_markdown`]).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{NaiveTime, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::error::{NbaopsError, Result};
use crate::ports::Params;

pub mod alerts;
pub mod approval;
pub mod backup;
pub mod capacity;
pub mod cost;
pub mod failover;
pub mod offhours;
pub mod pg;
pub mod posture;
pub mod scale;
mod strategy;

pub use approval::{ApprovalConfig, Policy as ApprovalPolicy};
pub use scale::{AlarmRoute, FollowUps, GroupPlan, OffPeak, ScaleConfig, Step};
pub use strategy::strategy_markdown;

/// The core keys every function reads, their defaults and what they mean. A key absent from every
/// table is refused (typos must not silently fall back to a default), except under a section's
/// dynamic prefixes.
pub const CORE_KEYS: &[(&str, &str, &str)] = &[
    ("alerts_topic_arn", "", "SNS topic every alert is published to"),
    ("actions_topic_arn", "", "SNS topic every audit record is published to"),
    ("ledger_table", "nbaops-{env}-ledger", "DynamoDB table for idempotency, cooldowns, audit, state"),
    ("guard.kill_switch", "false", "true stops every action of every function"),
    ("guard.dry_run", "false", "true: decide and audit, never act"),
    ("guard.dry_run_functions", "", "comma list of functions kept in dry-run"),
    ("guard.protect_tag", "nbaops:protect", "a resource with this tag = true is never touched"),
    ("guard.window.days", "tue,thu", "change window days (SPEC 5.2: Tuesday and Thursday evenings)"),
    ("guard.window.start", "20:00", "change window start, local time"),
    ("guard.window.end", "23:00", "change window end, local time"),
    ("guard.window.tz", "UTC", "IANA time zone of the change window"),
    ("guard.blast.max_actions", "3", "at most this many actions per invocation"),
    ("guard.blast.max_percent", "50", "at most this percent of the resources in view per invocation (never below one)"),
    ("guard.idempotency_ttl_hours", "24", "how long an event id + action stays claimed"),
    ("guard.switch_ttl_seconds", "30", "how long kill switch and dry-run values are cached: a switch flipped in SSM takes effect within this many seconds"),
    ("guard.claim_seconds", "900", "when the Lambda deadline is unknown, how long an idempotency claim is held before a retry may take it over (the function's timeout; 900 is Lambda's maximum)"),
    ("audit.ttl_days", "400", "audit records kept (SPEC: one year cold)"),
    ("approval.timeout_minutes", "60", "how long an approval request waits for an answer"),
    ("approval.on_timeout", "deny", "what an unanswered request comes to: deny (nothing happens) or approve"),
    ("approval.approvers", "", "comma list of who may approve (names in the signed links); empty: anyone holding a valid link"),
    ("fanout.queue_url", "", "the SQS work queue a `dispatch` tick sends this function's work items to, one message per target (issue #20; the template sets it); empty: no fan-out"),
    ("fanout.target_budget_seconds", "50", "how long one work item (one target) of an SQS batch may take before it is failed for SQS to retry (within the Lambda deadline)"),
    ("fanout.max_receive_count", "3", "the work queue's RedrivePolicy maxReceiveCount: on that receive a failing work item raises a P2 before it moves to the dead-letter queue"),
    ("fleet.accounts", "", "member accounts watched from this deployment (issue #20): comma list of <account>=<role arn> (the role of infra/member-role.yaml); empty: the hub's account only"),
    ("fleet.regions", "", "regions watched: comma list of <region> (every account) or <account>:<region> (that account); an account without any: the hub's region"),
    ("fleet.external_id_secret", "/nbaops/{env}/secrets/fleet/external_id", "SSM SecureString holding the external id the member roles require (sts:ExternalId)"),
];

/// The section of the core keys; its SSM paths are `guard/`, `audit/`, `approval/` and `fleet/`.
pub const CORE: &str = "core";

/// Keys under `prefix` are per-resource overrides (`pattern`), checked by their section's parser.
pub struct Dynamic {
    pub prefix: &'static str,
    pub pattern: &'static str,
    pub default: &'static str,
    pub meaning: &'static str,
}

/// One section of the configuration: the first component of its keys, what it is for, its keys
/// (key, default, meaning) and its per-resource prefixes.
pub struct Section {
    pub name: &'static str,
    pub about: &'static str,
    pub keys: &'static [(&'static str, &'static str, &'static str)],
    pub dynamic: &'static [Dynamic],
}

/// Every section: a function's section lives in its own file (`config/<section>.rs`) with a
/// `KEYS` table and a `from_settings` parser its function calls at init. Register it here and in
/// [`FUNCTION_SECTIONS`].
pub const SECTIONS: &[Section] = &[
    Section { name: CORE, about: "The deployment's resources, the guard every action passes and the audit trail.", keys: CORE_KEYS, dynamic: approval::DYNAMIC },
    Section { name: "scale", about: "Capacity (SPEC 2.5, 6.1): what may be scaled, how far, how often.", keys: scale::KEYS, dynamic: scale::DYNAMIC },
    Section { name: "pg", about: "PostgreSQL (SPEC 3.2.2, 5.5.1): the databases, the alert thresholds, the limits of automated maintenance.", keys: pg::KEYS, dynamic: &[] },
    Section { name: "alerts", about: "Severities, channels, response times and escalation (SPEC 3.2.1, 3.2.3, 3.2.4).", keys: alerts::KEYS, dynamic: &[] },
    Section { name: "cost", about: "Cost anomalies and budgets (SPEC 6): severity, attribution, containment.", keys: cost::KEYS, dynamic: &[] },
    Section { name: "failover", about: "Multi-AZ failover (SPEC 2.2): expected duration, limit, verification of the new primary.", keys: failover::KEYS, dynamic: &[] },
    Section { name: "backup", about: "Backups, RPO and the restore drill (SPEC 2.4, 5.4).", keys: backup::KEYS, dynamic: &[] },
    Section { name: "offhours", about: "Non-production environments stopped and started on schedules (SPEC 6).", keys: offhours::KEYS, dynamic: &[] },
    Section { name: "posture", about: "The daily posture check (SPEC 2, 4, 6): encryption, TLS, exposure, Multi-AZ, backups, tags, unused resources.", keys: posture::KEYS, dynamic: &[] },
];

/// The sections each function reads besides the core (`guard/` and `audit/` in SSM). Nothing
/// else: a typo in another function's section cannot stop this one, and its IAM role may read
/// these paths only (infra/template.yaml; checked by infra/tests). Secrets are never read by path.
pub const FUNCTION_SECTIONS: &[(&str, &[&str])] = &[
    ("scale-on-alarm", &["scale"]),
    ("pg-health", &["pg"]),
    ("vacuum-trigger", &["pg"]),
    ("alert-router", &["alerts"]),
    ("cost-anomaly", &["cost"]),
    ("failover-notify", &["failover"]),
    ("backup-guard", &["backup", "pg"]),
    ("offhours", &["offhours"]),
    ("posture-check", &["posture"]),
];

/// The SSM sections (`/nbaops/<env>/<section>/`) a function reads its configuration from: the
/// guard and audit settings every function shares, and its own ([`FUNCTION_SECTIONS`]).
pub fn config_sections(function: &str) -> Vec<&'static str> {
    let own = FUNCTION_SECTIONS
        .iter()
        .find(|(f, _)| *f == function)
        .map_or(&[][..], |(_, sections)| *sections);
    ["guard", "audit", "approval", "fleet"]
        .into_iter()
        .chain(own.iter().copied())
        .collect()
}

/// The SSM paths [`Config::load`] reads for a function.
pub fn ssm_paths(env: Env, function: &str) -> Vec<String> {
    config_sections(function)
        .iter()
        .map(|section| format!("/nbaops/{env}/{section}/"))
        .collect()
}

/// Whether `function` reads `section` (every function reads the core).
pub fn reads_section(function: &str, section: &str) -> bool {
    section == CORE || config_sections(function).contains(&section)
}

/// The section a key falls in: its first component when a section bears that name, else the
/// core (top-level keys, `guard.*`, `audit.*`, and a first component no section has, such as a
/// misspelt section name: nobody else's business, so never silently ignored).
pub fn section_of(key: &str) -> &'static str {
    let first = key.split('.').next().unwrap_or(key);
    SECTIONS
        .iter()
        .find(|s| s.name == first)
        .map_or(CORE, |s| s.name)
}

fn all_keys() -> impl Iterator<Item = &'static (&'static str, &'static str, &'static str)> {
    SECTIONS.iter().flat_map(|s| s.keys.iter())
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
    warnings: Vec<String>,
}

impl Settings {
    /// Unknown keys in sections the function does not read: logged at init and ignored.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(|(v, _)| v.as_str())
    }

    /// Every key with its value and where it came from, in key order (`nbaops config show`).
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str, Source)> {
        self.values
            .iter()
            .map(|(k, (v, s))| (k.as_str(), v.as_str(), *s))
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
        || SECTIONS
            .iter()
            .flat_map(|s| s.dynamic.iter())
            .any(|d| key.starts_with(d.prefix))
}

/// Layer defaults < environment variables < SSM parameters under `/nbaops/<env>/`, every
/// section checked: an unknown key anywhere is an error.
/// Parameters under `/nbaops/<env>/secrets/` are not configuration and are skipped here.
pub fn layer(
    env: Env,
    vars: &BTreeMap<String, String>,
    ssm: &BTreeMap<String, String>,
) -> Result<Settings> {
    layer_checked(env, None, vars, ssm)
}

/// [`layer`] as `function` sees it: an unknown key is an error in the sections it reads
/// ([`reads_section`]), and elsewhere a warning, the key ignored: another function's
/// misconfiguration does not stop this one.
pub fn layer_for(
    env: Env,
    function: &str,
    vars: &BTreeMap<String, String>,
    ssm: &BTreeMap<String, String>,
) -> Result<Settings> {
    layer_checked(env, Some(function), vars, ssm)
}

fn layer_checked(
    env: Env,
    function: Option<&str>,
    vars: &BTreeMap<String, String>,
    ssm: &BTreeMap<String, String>,
) -> Result<Settings> {
    let mut settings = Settings::default();
    for (k, v, _) in all_keys() {
        settings.values.insert(
            k.to_string(),
            (v.replace("{env}", &env.to_string()), Source::Default),
        );
    }
    let env_keys = vars.iter().filter_map(|(name, v)| {
        let rest = name.strip_prefix("NBAOPS_")?;
        let internal = matches!(
            rest,
            "ENV" | "SSM_PREFIX" | "SSM" | "TEST_NOW" | "TEST_PAUSE_AFTER_CLAIM"
        );
        let key = rest.to_ascii_lowercase().replace("__", ".");
        (!internal).then(|| (format!("setting {name}"), key, v, Source::Env))
    });
    let prefix = format!("/nbaops/{env}/");
    let ssm_keys = ssm.iter().filter_map(|(name, v)| {
        let rest = name.strip_prefix(&prefix)?;
        let key = rest.replace('/', ".");
        (!rest.starts_with("secrets/"))
            .then(|| (format!("SSM parameter {name}"), key, v, Source::Ssm))
    });
    for (what, key, v, source) in env_keys.chain(ssm_keys) {
        if known_key(&key) {
            settings.values.insert(key, (v.clone(), source));
            continue;
        }
        let unknown = format!("unknown {what} (no key '{key}'; see shared/src/config/)");
        let section = section_of(&key);
        match function {
            Some(f) if !reads_section(f, section) => {
                let warning =
                    format!("{unknown}: ignored, {f} does not read the {section} section");
                tracing::warn!(key = %key, "{warning}");
                settings.warnings.push(warning);
            }
            _ => return Err(NbaopsError::config(unknown)),
        }
    }
    Ok(settings)
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

/// Work fanned out on SQS (issue #20): where a `dispatch` tick sends work items, how long one
/// may take, and on which receive a failing one goes to the dead-letter queue.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FanoutConfig {
    pub queue_url: String,
    pub target_budget_seconds: u64,
    pub max_receive_count: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub env: Env,
    pub function: String,
    pub alerts_topic_arn: String,
    pub actions_topic_arn: String,
    pub ledger_table: String,
    pub guard: GuardConfig,
    /// Parsed for the function that reads the scale section; for the others the default:
    /// nothing to scale.
    pub scale: ScaleConfig,
    /// When the guard asks a person (every function: the guard reads it).
    pub approval: ApprovalConfig,
    /// Work fanned out on SQS (issue #20, `runtime::fanout`): every function may dispatch and
    /// consume.
    pub fanout: FanoutConfig,
    /// The member accounts and regions this deployment watches (every function: the runtime
    /// routes each record to the clients of its origin, [`crate::fleet`]).
    pub fleet: crate::fleet::FleetConfig,
    #[serde(skip)]
    pub settings: Settings,
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

        // Only the function that reads the scale section parses it: a bad scale.alarm_map
        // must not stop alert-router.
        let scale = if reads_section(function, "scale") {
            scale::from_settings(&s)?
        } else {
            ScaleConfig::default()
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
            approval: approval::from_settings(&s)?,
            fanout: FanoutConfig {
                queue_url: s.string("fanout.queue_url"),
                target_budget_seconds: positive(
                    &s,
                    "fanout.target_budget_seconds",
                    "whole seconds >= 1",
                )?,
                max_receive_count: positive(
                    &s,
                    "fanout.max_receive_count",
                    "a whole number >= 1 (the queue's maxReceiveCount)",
                )?,
            },
            fleet: crate::fleet::from_settings(&s)?,
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
        let settings = layer_for(env, function, vars, &ssm)?;
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

/// Every error of `function`'s configuration on these settings: the core, then each of its own
/// sections parsed as the function parses it at init (one error per section at most: a parser
/// stops at its first). Empty when the function would start.
pub fn check_function(env: Env, function: &str, s: &Settings) -> Vec<NbaopsError> {
    let mut errors = Vec::new();
    if let Err(e) = Config::from_settings(env, function, s.clone()) {
        errors.push(e);
    }
    for section in config_sections(function) {
        let parsed = match section {
            "pg" => pg::from_settings(s).map(|_| ()),
            "alerts" => alerts::from_settings(s).map(|_| ()),
            "cost" => cost::from_settings(s).map(|_| ()),
            "failover" => failover::from_settings(s).map(|_| ()),
            "backup" => backup::from_settings(s).map(|_| ()),
            "offhours" => offhours::from_settings(s).map(|_| ()),
            "posture" => posture::from_settings(s).map(|_| ()),
            // scale: parsed by Config::from_settings; guard and audit: the core.
            _ => Ok(()),
        };
        if let Err(e) = parsed {
            errors.push(e);
        }
    }
    errors
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

    /// What a function's init does with its environment: NBAOPS_ENV=dev, no SSM.
    async fn init(function: &str, env_pairs: &[(&str, &str)]) -> Result<Config> {
        let mut env = vars(env_pairs);
        env.insert("NBAOPS_ENV".into(), "dev".into());
        Config::load(function, &env, None).await
    }

    #[test]
    fn spec_defaults() {
        let c = load(&[], &[]).unwrap();
        assert_eq!(c.scale.group_default.ceiling, 4);
        assert_eq!(c.guard.window.days, vec![Weekday::Tue, Weekday::Thu]);
        assert_eq!(c.ledger_table, "nbaops-dev-ledger");
        assert_eq!(c.guard.max_actions, 3);
        assert!(!c.guard.dry_run && !c.guard.kill_switch);
    }

    #[test]
    fn ssm_beats_env_beats_default() {
        let c = load(
            &[
                ("NBAOPS_GUARD__BLAST__MAX_ACTIONS", "6"),
                ("NBAOPS_GUARD__BLAST__MAX_PERCENT", "30"),
            ],
            &[
                ("/nbaops/dev/guard/blast/max_actions", "8"),
                ("/nbaops/prod/guard/blast/max_actions", "99"),
            ],
        )
        .unwrap();
        assert_eq!(c.guard.max_actions, 8);
        assert_eq!(c.guard.max_percent, 30.0);
    }

    #[test]
    fn wrong_value_names_key_and_source() {
        let e = load(&[], &[("/nbaops/dev/guard/blast/max_actions", "lots")]).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("guard.blast.max_actions") && msg.contains("SSM") && msg.contains("lots"),
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

    #[test]
    fn a_key_falls_in_the_section_of_its_first_component() {
        assert_eq!(section_of("alerts.route.p1"), "alerts");
        assert_eq!(section_of("scale.group.web.step"), "scale");
        assert_eq!(section_of("pg.bloat.warn_percent"), "pg");
        // Top-level keys, guard and audit, and a section nobody has are the core's.
        assert_eq!(section_of("alerts_topic_arn"), CORE);
        assert_eq!(section_of("guard.dry_run"), CORE);
        assert_eq!(section_of("audit.ttl_days"), CORE);
        assert_eq!(section_of("scalee.asg.ceiling"), CORE);
        assert!(reads_section("backup-guard", "pg") && reads_section("backup-guard", CORE));
        assert!(!reads_section("alert-router", "scale"));
    }

    #[tokio::test]
    async fn a_bad_scale_section_stops_scale_on_alarm_only() {
        let bad = [("NBAOPS_SCALE__ALARM_MAP", "not json")];
        let e = init("scale-on-alarm", &bad).await.unwrap_err().to_string();
        assert!(
            e.contains("scale.alarm_map") && e.contains("NBAOPS_SCALE__ALARM_MAP"),
            "{e}"
        );
        let e = init("scale-on-alarm", &[("NBAOPS_SCALE__ASG__STEP", "0")])
            .await
            .unwrap_err();
        assert!(e.to_string().contains("scale.asg.step"), "{e}");
        for (function, _) in FUNCTION_SECTIONS
            .iter()
            .filter(|(f, _)| *f != "scale-on-alarm")
        {
            let c = init(function, &bad)
                .await
                .unwrap_or_else(|e| panic!("{function}: {e}"));
            assert!(
                c.scale.groups.is_empty() && c.scale.alarm_map.is_empty(),
                "{function}"
            );
        }
        // And the functions' own sections still parse: alert-router routes, cost-anomaly counts.
        let c = init("alert-router", &bad).await.unwrap();
        assert!(alerts::from_settings(&c.settings).is_ok());
        let c = init("cost-anomaly", &bad).await.unwrap();
        assert!(cost::from_settings(&c.settings).is_ok());
    }

    #[tokio::test]
    async fn an_unknown_key_is_an_error_in_the_functions_sections_and_a_warning_elsewhere() {
        let typo = [("NBAOPS_SCALE__ASG__CEILNG", "5")];
        let c = init("alert-router", &typo).await.unwrap();
        assert_eq!(
            c.settings.warnings().len(),
            1,
            "{:?}",
            c.settings.warnings()
        );
        let w = &c.settings.warnings()[0];
        assert!(
            w.contains("unknown setting NBAOPS_SCALE__ASG__CEILNG")
                && w.contains("ignored, alert-router does not read the scale section"),
            "{w}"
        );
        assert_eq!(c.settings.get("scale.asg.ceilng"), None);
        let e = init("scale-on-alarm", &typo).await.unwrap_err().to_string();
        assert!(
            e.contains("unknown setting NBAOPS_SCALE__ASG__CEILNG (no key 'scale.asg.ceilng'; see shared/src/config/)"),
            "{e}"
        );
        // Its own section, the core keys and a section nobody has: errors for everyone.
        for (function, typo) in [
            ("alert-router", "NBAOPS_ALERTS__DEDUP_MINUTES"),
            ("backup-guard", "NBAOPS_PG__BLOAT__WARN_PERCNT"),
            ("offhours", "NBAOPS_GUARD__DRYRUN"),
            ("cost-anomaly", "NBAOPS_LEDGER"),
            ("cost-anomaly", "NBAOPS_AUDIT__TTL"),
            ("failover-notify", "NBAOPS_SCALEE__ASG__CEILING"),
        ] {
            let e = init(function, &[(typo, "1")])
                .await
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("unknown setting {typo}")),
                "{function}: {e}"
            );
        }
        // SSM parameters the same way.
        let ssm = vars(&[("/nbaops/dev/pg/bloat/warn_percnt", "5")]);
        let s = layer_for(Env::Dev, "offhours", &BTreeMap::new(), &ssm).unwrap();
        assert!(
            s.warnings()[0].contains("unknown SSM parameter /nbaops/dev/pg/bloat/warn_percnt"),
            "{:?}",
            s.warnings()
        );
        let e = layer_for(Env::Dev, "pg-health", &BTreeMap::new(), &ssm).unwrap_err();
        assert!(e.to_string().contains("unknown SSM parameter"), "{e}");
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
                "/nbaops/prod/approval/",
                "/nbaops/prod/fleet/",
                "/nbaops/prod/backup/",
                "/nbaops/prod/pg/"
            ]
        );
        assert!(ssm_paths(Env::Dev, "alert-router")
            .iter()
            .all(|p| !p.contains("secrets")));
    }
}

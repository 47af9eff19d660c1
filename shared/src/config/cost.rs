//! The `cost` section: what cost-anomaly calls a serious anomaly, how it finds the environment a
//! cost belongs to, what the daily Cost Explorer check calls a spike, and which non-production
//! environments it may contain (none by default; production can never be listed).
//!
//! Resources to contain are listed per environment in `cost.contain.resources` rather than
//! discovered by tag: a list is reviewable in one place, and a tag scan would need a new
//! discovery port and could sweep in whatever someone tags later. At containment time every
//! listed resource must still carry `<cost.env_tag>=<env>`, so a listing mistake (a production
//! group under `test`) is refused rather than acted on.

use std::collections::BTreeMap;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{positive, Env, Settings};
use crate::alerts::Severity;
use crate::error::{NbaopsError, Result};

pub const KEYS: &[(&str, &str, &str)] = &[
    ("cost.env_tag", "env", "cost allocation tag key naming the environment (Cost Explorer groups and resource tags)"),
    ("cost.metric", "UnblendedCost", "Cost Explorer metric of the daily check and the attribution"),
    ("cost.severity.high_usd", "100", "impact at or above this many dollars: P2 (else P3)"),
    ("cost.severity.high_percent", "200", "impact at or above this percent of the expected spend: P2 ..."),
    ("cost.severity.percent_min_usd", "20", "... when the impact is also at least this many dollars (a big percent of cents is noise)"),
    ("cost.account_envs", "{}", "JSON: linked account id -> dev|test|prod (attribution by account)"),
    ("cost.attribution.cost_explorer", "true", "ask Cost Explorer which env tag carries the root-cause services' cost over the anomaly"),
    ("cost.attribution.min_share_percent", "80", "a tag value holding at least this share of that cost names the environment"),
    ("cost.contain.envs", "", "comma list of non-production environments that may be contained (empty: alert only; prod refused)"),
    ("cost.contain.resources", "{}", r#"JSON: env -> {"asgs": [group names], "rds": [instance ids]} scaled to zero / stopped on containment"#),
    ("cost.contain.min_severity", "P2", "contain only for anomalies and actual-spend budget alerts of this severity or worse"),
    ("cost.contain.cooldown_seconds", "3600", "minimum time between two containments of one resource"),
    ("cost.daily.baseline_days", "7", "daily check: trailing days averaged as the baseline"),
    ("cost.daily.spike_factor", "2.0", "daily check: yesterday at or above baseline x this factor is a spike ..."),
    ("cost.daily.min_increase_usd", "10", "... when it is also at least this many dollars above the baseline"),
];

/// What one environment's containment touches.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvResources {
    #[serde(default)]
    pub asgs: Vec<String>,
    #[serde(default)]
    pub rds: Vec<String>,
}

impl EnvResources {
    pub fn count(&self) -> usize {
        self.asgs.len() + self.rds.len()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CostConfig {
    pub env_tag: String,
    pub metric: String,
    pub high_usd: f64,
    pub high_percent: f64,
    pub percent_min_usd: f64,
    pub account_envs: BTreeMap<String, Env>,
    pub attribution_cost_explorer: bool,
    pub min_share_percent: f64,
    pub contain_envs: Vec<Env>,
    /// Keyed by the environment's name (`test`).
    pub contain_resources: BTreeMap<String, EnvResources>,
    pub contain_min_severity: Severity,
    pub contain_cooldown_seconds: i64,
    pub baseline_days: i64,
    pub spike_factor: f64,
    pub min_increase_usd: f64,
}

impl CostConfig {
    /// Containment is allowed for `env` (never prod, whatever the lists say).
    pub fn may_contain(&self, env: Env) -> bool {
        env != Env::Prod && self.contain_envs.contains(&env)
    }

    pub fn resources(&self, env: Env) -> EnvResources {
        self.contain_resources
            .get(&env.to_string())
            .cloned()
            .unwrap_or_default()
    }
}

fn env_named(s: &Settings, key: &str, raw: &str) -> Result<Env> {
    Env::from_str(raw).map_err(|_| {
        NbaopsError::config(format!(
            "{key} (from {}): expected dev, test or prod, got '{raw}'",
            s.origin(key)
        ))
    })
}

fn non_negative(s: &Settings, key: &str, what: &str) -> Result<f64> {
    let v: f64 = s.number(key, what)?;
    if !v.is_finite() || v < 0.0 {
        return Err(s.bad(key, what));
    }
    Ok(v)
}

pub fn from_settings(s: &Settings) -> Result<CostConfig> {
    let env_tag = s.string("cost.env_tag");
    if env_tag.is_empty() || env_tag.contains('$') {
        return Err(s.bad("cost.env_tag", "a tag key"));
    }
    let metric = s.string("cost.metric");
    if !matches!(
        metric.as_str(),
        "UnblendedCost" | "BlendedCost" | "AmortizedCost" | "NetUnblendedCost" | "NetAmortizedCost"
    ) {
        return Err(s.bad(
            "cost.metric",
            "UnblendedCost, BlendedCost, AmortizedCost, NetUnblendedCost or NetAmortizedCost",
        ));
    }

    let raw_accounts: BTreeMap<String, String> = s.json(
        "cost.account_envs",
        r#"a JSON object {"123456789012": "dev"}"#,
    )?;
    let mut account_envs = BTreeMap::new();
    for (account, env) in raw_accounts {
        if account.len() != 12 || !account.chars().all(|c| c.is_ascii_digit()) {
            return Err(NbaopsError::config(format!(
                "cost.account_envs (from {}): '{account}' is not a 12-digit account id",
                s.origin("cost.account_envs")
            )));
        }
        account_envs.insert(account, env_named(s, "cost.account_envs", &env)?);
    }

    let mut contain_envs = Vec::new();
    for raw in s.list("cost.contain.envs") {
        let env = env_named(s, "cost.contain.envs", &raw)?;
        if env == Env::Prod {
            return Err(s.bad(
                "cost.contain.envs",
                "non-production environments only (prod is never contained)",
            ));
        }
        if !contain_envs.contains(&env) {
            contain_envs.push(env);
        }
    }
    let raw_resources: BTreeMap<String, EnvResources> = s.json(
        "cost.contain.resources",
        r#"a JSON object {"test": {"asgs": [...], "rds": [...]}}"#,
    )?;
    let mut contain_resources = BTreeMap::new();
    for (name, res) in raw_resources {
        let env = env_named(s, "cost.contain.resources", &name)?;
        if env == Env::Prod {
            return Err(s.bad(
                "cost.contain.resources",
                "no prod entry (prod is never contained)",
            ));
        }
        if res.asgs.iter().chain(&res.rds).any(|r| r.trim().is_empty()) {
            return Err(s.bad("cost.contain.resources", "non-empty resource names"));
        }
        contain_resources.insert(env.to_string(), res);
    }
    for env in &contain_envs {
        if contain_resources
            .get(&env.to_string())
            .is_none_or(|r| r.count() == 0)
        {
            return Err(NbaopsError::config(format!(
                "cost.contain.envs (from {}) lists {env} but cost.contain.resources names no resource for it",
                s.origin("cost.contain.envs")
            )));
        }
    }

    let contain_min_severity = Severity::from_str(&s.string("cost.contain.min_severity"))
        .map_err(|_| s.bad("cost.contain.min_severity", "P1, P2, P3 or P4"))?;
    let min_share_percent: f64 = positive(
        s,
        "cost.attribution.min_share_percent",
        "a percent in (50, 100]",
    )?;
    if !(50.0..=100.0).contains(&min_share_percent) || min_share_percent == 50.0 {
        return Err(s.bad(
            "cost.attribution.min_share_percent",
            "a percent in (50, 100]",
        ));
    }
    let spike_factor: f64 = s.number("cost.daily.spike_factor", "a factor above 1")?;
    if !spike_factor.is_finite() || spike_factor <= 1.0 {
        return Err(s.bad("cost.daily.spike_factor", "a factor above 1"));
    }
    let baseline_days: i64 = positive(s, "cost.daily.baseline_days", "whole days in 1..=60")?;
    if baseline_days > 60 {
        return Err(s.bad("cost.daily.baseline_days", "whole days in 1..=60"));
    }
    Ok(CostConfig {
        env_tag,
        metric,
        high_usd: non_negative(s, "cost.severity.high_usd", "dollars >= 0")?,
        high_percent: non_negative(s, "cost.severity.high_percent", "a percent >= 0")?,
        percent_min_usd: non_negative(s, "cost.severity.percent_min_usd", "dollars >= 0")?,
        account_envs,
        attribution_cost_explorer: s.boolean("cost.attribution.cost_explorer")?,
        min_share_percent,
        contain_envs,
        contain_resources,
        contain_min_severity,
        contain_cooldown_seconds: s.number("cost.contain.cooldown_seconds", "whole seconds")?,
        baseline_days,
        spike_factor,
        min_increase_usd: non_negative(s, "cost.daily.min_increase_usd", "dollars >= 0")?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::layer;

    fn load(pairs: &[(&str, &str)]) -> Result<CostConfig> {
        let vars = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        from_settings(&layer(Env::Dev, &vars, &BTreeMap::new())?)
    }

    #[test]
    fn defaults_alert_only() {
        let c = load(&[]).unwrap();
        assert_eq!(c.env_tag, "env");
        assert!(c.contain_envs.is_empty());
        assert!(!c.may_contain(Env::Test) && !c.may_contain(Env::Dev));
        assert_eq!(c.contain_min_severity, Severity::P2);
        assert_eq!((c.baseline_days, c.spike_factor), (7, 2.0));
        assert!(c.attribution_cost_explorer);
    }

    #[test]
    fn prod_is_refused_everywhere() {
        let e = load(&[("NBAOPS_COST__CONTAIN__ENVS", "test,prod")]).unwrap_err();
        assert!(
            e.to_string().contains("cost.contain.envs") && e.to_string().contains("prod"),
            "{e}"
        );
        let e = load(&[(
            "NBAOPS_COST__CONTAIN__RESOURCES",
            r#"{"prod":{"asgs":["nbaops-prod-web"]}}"#,
        )])
        .unwrap_err();
        assert!(e.to_string().contains("cost.contain.resources"), "{e}");
    }

    #[test]
    fn contained_env_needs_resources_and_valid_values() {
        assert!(load(&[("NBAOPS_COST__CONTAIN__ENVS", "test")]).is_err());
        let c = load(&[
            ("NBAOPS_COST__CONTAIN__ENVS", "test"),
            (
                "NBAOPS_COST__CONTAIN__RESOURCES",
                r#"{"test":{"asgs":["nbaops-test-web"],"rds":["nbaops-test-db"]}}"#,
            ),
        ])
        .unwrap();
        assert!(c.may_contain(Env::Test));
        assert_eq!(c.resources(Env::Test).count(), 2);
        for (k, v) in [
            ("NBAOPS_COST__CONTAIN__ENVS", "staging"),
            ("NBAOPS_COST__ACCOUNT_ENVS", r#"{"12345":"dev"}"#),
            ("NBAOPS_COST__DAILY__SPIKE_FACTOR", "1"),
            ("NBAOPS_COST__CONTAIN__MIN_SEVERITY", "urgent"),
            (
                "NBAOPS_COST__CONTAIN__RESOURCES",
                r#"{"test":{"asg":["x"]}}"#,
            ),
            ("NBAOPS_COST__METRIC", "Cheapest"),
        ] {
            let e = load(&[(k, v)]).unwrap_err();
            let key = k
                .trim_start_matches("NBAOPS_")
                .replace("__", ".")
                .to_ascii_lowercase();
            assert!(e.to_string().contains(&key), "{k}: {e}");
        }
    }
}

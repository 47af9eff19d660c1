//! The `posture` section (issue #21): what the daily posture check holds the platform to (SPEC 2,
//! 4, 6: encrypted, TLS-only, private, Multi-AZ, backed-up databases, cost allocation tags, unused
//! resources reviewed), the severity of each rule, the prices behind the unused-resource
//! estimates, and the two fixes it may make by itself (never in prod).

use std::collections::BTreeMap;
use std::str::FromStr;

use serde::Serialize;

use super::{positive, Env, Settings};
use crate::alerts::Severity;
use crate::error::Result;
use crate::ports::Tags;

pub const KEYS: &[(&str, &str, &str)] = &[
    ("posture.env_tag", "nbaops:env", "tag naming a resource's environment: a resource tagged for another environment is that deployment's to check"),
    ("posture.claim_untagged", "true", "true: resources without the environment tag are checked (and reported) by this deployment too"),
    ("posture.required_tags", "nbaops:env,team,cost-center", "comma list of the cost allocation tags every resource in scope must carry (SPEC 6)"),
    ("posture.tag_types", "rds:db,rds:snapshot,elasticache:cluster,elasticache:replicationgroup,ec2:instance,ec2:volume,elasticloadbalancing:loadbalancer", "Resource Groups Tagging API resource types whose tags are checked (besides what the describe calls find)"),
    ("posture.min_backup_retention_days", "7", "automated backup retention every database must keep, days (SPEC 2.4)"),
    ("posture.dr_region", "", "region automated backups must be replicated to (SPEC DR RPO); empty: not checked"),
    ("posture.prod_only_rules", "rds.deletion_protection,rds.multi_az,rds.dr_replication", "comma list of rules applied to production resources only"),
    ("posture.minor_version_upgrade", "on", "auto minor version upgrade policy: on, off or any"),
    ("posture.require_monitoring", "true", "true: every database needs Performance Insights or Enhanced Monitoring (the I/O-wait alarm reads them)"),
    ("posture.unused.volume_days", "7", "an unattached EBS volume older than this is unused"),
    ("posture.unused.stopped_days", "14", "an EC2 instance stopped longer than this is unused"),
    ("posture.unused.snapshot_days", "35", "a manual DB snapshot older than this (and not a monthly keeper, nbaops-monthly-*) is unused"),
    ("posture.unused.lb_days", "14", "a load balancer without traffic for this long is idle"),
    ("posture.prices", r#"{"ebs_gb_month":0.08,"snapshot_gb_month":0.095,"eip_month":3.6,"lb_month":16.43}"#, "JSON: USD prices behind the monthly cost of unused resources (us-east-1 list prices; set your region's)"),
    ("posture.severities", "{}", r#"JSON: rule -> P1..P4, overriding the defaults (rds.public P1, rds.encryption P2, ..., tags.missing P4)"#),
    ("posture.fix.envs", "", "comma list of environments where the safe fixes run by themselves (deletion protection on, missing tags filled); prod is refused"),
    ("posture.fix.default_tags", "{}", r#"JSON: tag -> value filled in on RDS resources missing it, e.g. {"team": "platform", "cost-center": "nba-fantasy"} (only in posture.fix.envs)"#),
    ("posture.fix.cooldown_seconds", "86400", "minimum time between two fixes of one resource"),
];

/// Every rule, its default severity and what it holds the resource to.
#[rustfmt::skip]
pub const RULES: &[(&str, Severity, &str)] = &[
    ("rds.public", Severity::P1, "a database is publicly accessible"),
    ("rds.encryption", Severity::P2, "a database's storage is not encrypted"),
    ("rds.force_ssl", Severity::P2, "a database accepts connections without TLS (rds.force_ssl is not 1)"),
    ("rds.deletion_protection", Severity::P3, "deletion protection is off"),
    ("rds.multi_az", Severity::P2, "a database is Single-AZ"),
    ("rds.backup_retention", Severity::P2, "automated backups kept for fewer days than the strategy asks"),
    ("rds.dr_replication", Severity::P2, "automated backups are not replicated to the DR region"),
    ("rds.minor_version_upgrade", Severity::P4, "auto minor version upgrade differs from the policy"),
    ("rds.monitoring", Severity::P3, "neither Performance Insights nor Enhanced Monitoring is on"),
    ("rds.snapshot_public", Severity::P1, "a DB snapshot may be restored by anyone"),
    ("cache.transit_encryption", Severity::P2, "a cache accepts unencrypted connections"),
    ("cache.at_rest_encryption", Severity::P2, "a cache's data is not encrypted at rest"),
    ("cache.open_security_group", Severity::P2, "a cache's security group admits the whole internet"),
    ("tags.missing", Severity::P4, "a resource lacks cost allocation tags"),
    ("unused.volume", Severity::P4, "an EBS volume attached to nothing"),
    ("unused.address", Severity::P4, "an Elastic IP associated with nothing"),
    ("unused.stopped_instance", Severity::P4, "an EC2 instance stopped for long (its volumes still billed)"),
    ("unused.snapshot", Severity::P4, "a manual DB snapshot past its retention"),
    ("unused.load_balancer", Severity::P4, "a load balancer without traffic"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MinorUpgradePolicy {
    On,
    Off,
    Any,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prices {
    pub ebs_gb_month: f64,
    pub snapshot_gb_month: f64,
    pub eip_month: f64,
    pub lb_month: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PostureConfig {
    pub env_tag: String,
    pub claim_untagged: bool,
    pub required_tags: Vec<String>,
    pub tag_types: Vec<String>,
    pub min_backup_retention_days: i32,
    pub dr_region: Option<String>,
    pub prod_only_rules: Vec<String>,
    pub minor_version_upgrade: MinorUpgradePolicy,
    pub require_monitoring: bool,
    pub volume_days: i64,
    pub stopped_days: i64,
    pub snapshot_days: i64,
    pub lb_days: i64,
    pub prices: Prices,
    /// Every rule of [`RULES`] with its severity (defaults overridden by `posture.severities`).
    pub severities: BTreeMap<String, Severity>,
    pub fix_envs: Vec<Env>,
    pub default_tags: Tags,
    pub fix_cooldown_seconds: i64,
}

impl PostureConfig {
    pub fn severity(&self, rule: &str) -> Severity {
        self.severities.get(rule).copied().unwrap_or(Severity::P4)
    }

    /// `rule` applies to a resource of `env` (`None`: no environment tag).
    pub fn applies(&self, rule: &str, env: Option<Env>) -> bool {
        !self.prod_only_rules.iter().any(|r| r == rule) || env == Some(Env::Prod)
    }

    /// The safe fixes may run by themselves on resources of `env`.
    pub fn may_fix(&self, env: Option<Env>) -> bool {
        env.is_some_and(|e| e != Env::Prod && self.fix_envs.contains(&e))
    }
}

pub fn from_settings(s: &Settings) -> Result<PostureConfig> {
    let env_tag = s.string("posture.env_tag");
    if env_tag.is_empty() {
        return Err(s.bad("posture.env_tag", "a tag key"));
    }
    let known = |r: &str| RULES.iter().any(|(k, _, _)| *k == r);
    let prod_only_rules = s.list("posture.prod_only_rules");
    if let Some(bad) = prod_only_rules.iter().find(|r| !known(r)) {
        return Err(s.bad(
            "posture.prod_only_rules",
            &format!("rules of the posture check ('{bad}' is not one)"),
        ));
    }
    let overrides: BTreeMap<String, String> = s.json(
        "posture.severities",
        r#"a JSON object {"rds.public": "P1", ...}"#,
    )?;
    let mut severities: BTreeMap<String, Severity> = RULES
        .iter()
        .map(|(r, sev, _)| (r.to_string(), *sev))
        .collect();
    for (rule, sev) in overrides {
        if !known(&rule) {
            return Err(s.bad(
                "posture.severities",
                &format!("rules of the posture check ('{rule}' is not one)"),
            ));
        }
        let sev = Severity::from_str(&sev)
            .map_err(|_| s.bad("posture.severities", "severities P1, P2, P3 or P4"))?;
        severities.insert(rule, sev);
    }
    let raw_prices: BTreeMap<String, f64> = s.json(
        "posture.prices",
        r#"a JSON object {"ebs_gb_month": 0.08, "snapshot_gb_month": 0.095, "eip_month": 3.6, "lb_month": 16.43}"#,
    )?;
    let price = |k: &str| -> Result<f64> {
        match raw_prices.get(k) {
            Some(p) if p.is_finite() && *p >= 0.0 => Ok(*p),
            _ => Err(s.bad(
                "posture.prices",
                &format!(
                    "a price >= 0 for '{k}' (ebs_gb_month, snapshot_gb_month, eip_month, lb_month)"
                ),
            )),
        }
    };
    let prices = Prices {
        ebs_gb_month: price("ebs_gb_month")?,
        snapshot_gb_month: price("snapshot_gb_month")?,
        eip_month: price("eip_month")?,
        lb_month: price("lb_month")?,
    };
    let mut fix_envs = Vec::new();
    for raw in s.list("posture.fix.envs") {
        let env = Env::from_str(&raw).map_err(|_| s.bad("posture.fix.envs", "dev or test"))?;
        if env == Env::Prod {
            return Err(s.bad(
                "posture.fix.envs",
                "non-production environments only (in prod every fix is a recommendation)",
            ));
        }
        if !fix_envs.contains(&env) {
            fix_envs.push(env);
        }
    }
    let default_tags: Tags = s.json(
        "posture.fix.default_tags",
        r#"a JSON object of tag -> value {"team": "platform"}"#,
    )?;
    if default_tags
        .keys()
        .any(|k| k.trim().is_empty() || k.starts_with("aws:"))
    {
        return Err(s.bad(
            "posture.fix.default_tags",
            "tag keys that are not empty and not aws: (reserved by AWS)",
        ));
    }
    let minor_version_upgrade = match s.string("posture.minor_version_upgrade").as_str() {
        "on" => MinorUpgradePolicy::On,
        "off" => MinorUpgradePolicy::Off,
        "any" => MinorUpgradePolicy::Any,
        _ => return Err(s.bad("posture.minor_version_upgrade", "on, off or any")),
    };
    let fix_cooldown_seconds: i64 =
        s.number("posture.fix.cooldown_seconds", "whole seconds >= 0")?;
    if fix_cooldown_seconds < 0 {
        return Err(s.bad("posture.fix.cooldown_seconds", "whole seconds >= 0"));
    }
    let dr_region = Some(s.string("posture.dr_region")).filter(|r| !r.is_empty());
    Ok(PostureConfig {
        env_tag,
        claim_untagged: s.boolean("posture.claim_untagged")?,
        required_tags: s.list("posture.required_tags"),
        tag_types: s.list("posture.tag_types"),
        min_backup_retention_days: positive(
            s,
            "posture.min_backup_retention_days",
            "whole days >= 1",
        )?,
        dr_region,
        prod_only_rules,
        minor_version_upgrade,
        require_monitoring: s.boolean("posture.require_monitoring")?,
        volume_days: positive(s, "posture.unused.volume_days", "whole days >= 1")?,
        stopped_days: positive(s, "posture.unused.stopped_days", "whole days >= 1")?,
        snapshot_days: positive(s, "posture.unused.snapshot_days", "whole days >= 1")?,
        lb_days: positive(s, "posture.unused.lb_days", "whole days >= 1")?,
        prices,
        severities,
        fix_envs,
        default_tags,
        fix_cooldown_seconds,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::layer;

    fn load(pairs: &[(&str, &str)]) -> Result<PostureConfig> {
        let vars = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        from_settings(&layer(Env::Dev, &vars, &BTreeMap::new())?)
    }

    #[test]
    fn defaults_hold_the_strategy() {
        let c = load(&[]).unwrap();
        assert_eq!(c.min_backup_retention_days, 7);
        assert_eq!(c.required_tags, ["nbaops:env", "team", "cost-center"]);
        assert_eq!(c.severity("rds.public"), Severity::P1);
        assert_eq!(c.severity("tags.missing"), Severity::P4);
        assert_eq!(c.severities.len(), RULES.len());
        assert!(c.fix_envs.is_empty() && c.default_tags.is_empty());
        assert!(!c.may_fix(Some(Env::Dev)));
        assert!(c.applies("rds.multi_az", Some(Env::Prod)));
        assert!(!c.applies("rds.multi_az", Some(Env::Dev)));
        assert!(!c.applies("rds.multi_az", None));
        assert!(c.applies("rds.public", None));
        assert_eq!(c.dr_region, None);
        assert!((c.prices.eip_month - 3.6).abs() < 1e-9);
    }

    #[test]
    fn overrides_and_refusals_name_the_key() {
        let c = load(&[
            ("NBAOPS_POSTURE__SEVERITIES", r#"{"tags.missing":"P3"}"#),
            ("NBAOPS_POSTURE__FIX__ENVS", "dev,test"),
        ])
        .unwrap();
        assert_eq!(c.severity("tags.missing"), Severity::P3);
        assert!(c.may_fix(Some(Env::Test)) && !c.may_fix(None));
        for (k, v, key) in [
            (
                "NBAOPS_POSTURE__SEVERITIES",
                r#"{"rds.nope":"P1"}"#,
                "posture.severities",
            ),
            (
                "NBAOPS_POSTURE__SEVERITIES",
                r#"{"rds.public":"P9"}"#,
                "posture.severities",
            ),
            ("NBAOPS_POSTURE__FIX__ENVS", "prod", "posture.fix.envs"),
            (
                "NBAOPS_POSTURE__PRICES",
                r#"{"ebs_gb_month":-1}"#,
                "posture.prices",
            ),
            (
                "NBAOPS_POSTURE__PROD_ONLY_RULES",
                "rds.whatever",
                "posture.prod_only_rules",
            ),
            (
                "NBAOPS_POSTURE__MINOR_VERSION_UPGRADE",
                "sometimes",
                "posture.minor_version_upgrade",
            ),
            (
                "NBAOPS_POSTURE__FIX__DEFAULT_TAGS",
                r#"{"aws:x":"y"}"#,
                "posture.fix.default_tags",
            ),
            (
                "NBAOPS_POSTURE__UNUSED__VOLUME_DAYS",
                "0",
                "posture.unused.volume_days",
            ),
        ] {
            let err = load(&[(k, v)]).unwrap_err().to_string();
            assert!(err.contains(key), "{k}={v}: {err}");
        }
    }
}

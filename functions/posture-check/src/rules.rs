//! The rules: facts (`nbaops_shared::ports::posture`) to findings. Pure.

use serde::Serialize;

use nbaops_shared::alerts::Severity;
use nbaops_shared::config::Env;
use nbaops_shared::ports::Tags;

/// What a finding's fix is.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fix {
    /// `ModifyDBInstance --deletion-protection` on this DB instance (safe: reversible, no restart).
    DeletionProtection { db_instance: String },
    /// `AddTagsToResource` with these tags on this RDS ARN.
    RdsTags { arn: String, tags: Tags },
    /// Nothing nbaops does: the exact command for a person.
    Command { command: String },
}

/// One resource failing one rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub rule: &'static str,
    /// "rds:<id>", "rds-snapshot:<id>", "cache:<id>", "ec2-volume:<id>", "eip:<allocation>", ...
    pub resource: String,
    pub env: Option<Env>,
    pub severity: Severity,
    /// What is wrong, in numbers where there are numbers.
    pub detail: String,
    pub fix: Fix,
    /// Unused resources: what they cost a month.
    pub monthly_usd: Option<f64>,
    #[serde(skip)]
    pub tags: Tags,
}

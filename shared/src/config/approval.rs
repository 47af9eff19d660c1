//! Human approval (issue #19): per action, whether the guard asks a person instead of stopping
//! at the change window (`outside_window`), before every run (`always`), or never. Core keys:
//! every function reads `/nbaops/<env>/approval/`, because the guard every function passes reads
//! them.
//!
//! The defaults follow the SPEC's change rules (disruptive changes go in the Tue/Thu window;
//! outside it only P1 emergencies): an RDS class change outside the window for a P2 is asked for,
//! and so is a restore drill start outside the window (a new instance: cost and capacity) and
//! VACUUM FULL / REINDEX outside the window (`pg.vacuum-full`, `pg.reindex`); containment of a
//! non-prod environment (asg.contain_to_zero, rds.stop) and ending a runaway transaction whose
//! role and application are not on the allow-list (`pg.end_transaction_unlisted`; vacuum-trigger
//! proposes it only under `always`) are asked for every time. A policy other than `never` is
//! refused for an action whose owner cannot carry out an approved request ([`CARRIED_OUT`]): a
//! request nobody can carry out would only ever expire.

use chrono::Duration;
use serde::Serialize;

use super::{positive, Dynamic, Settings};
use crate::error::Result;
use crate::guard::OnTimeout;

/// When the guard asks a person before an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// The guard decides alone (the change window stops a disruptive non-P1 action).
    #[default]
    Never,
    /// Where the change window would stop a disruptive non-P1 action, ask instead.
    OutsideWindow,
    /// Ask before every run of the action, in the window or not, whatever the severity.
    Always,
}

impl Policy {
    fn parse(s: &str) -> Option<Policy> {
        match s.trim() {
            "never" => Some(Policy::Never),
            "outside_window" => Some(Policy::OutsideWindow),
            "always" => Some(Policy::Always),
            _ => None,
        }
    }
}

pub const PREFIX: &str = "approval.";

/// Actions whose owning function carries out an approved request (re-reads the live state and
/// applies the stored plan), with that function: the template's ApprovalsRole may invoke exactly
/// these functions' live aliases and `alerts.approval.targets` names exactly them (checked by
/// `shared/tests/approval_owners.rs` and infra/tests/check_template.py).
#[rustfmt::skip]
pub const CARRIED_OUT: &[(&str, &str)] = &[
    ("rds.modify_class", "scale-on-alarm"),
    ("asg.scale_out", "scale-on-alarm"),
    ("asg.scale_in", "scale-on-alarm"),
    ("asg.contain_to_zero", "cost-anomaly"),
    ("rds.stop", "cost-anomaly"),
    ("rds.restore_drill", "backup-guard"),
    ("pg.vacuum-full", "vacuum-trigger"),
    ("pg.reindex", "vacuum-trigger"),
    ("pg.end_transaction_unlisted", "vacuum-trigger"),
];

/// Whether an approved request for `action` can be carried out (its owner implements it).
pub fn carried_out(action: &str) -> bool {
    CARRIED_OUT.iter().any(|(a, _)| *a == action)
}

/// The functions that carry out approvals, each once, in [`CARRIED_OUT`]'s order.
pub fn owners() -> Vec<&'static str> {
    let mut out: Vec<&str> = Vec::new();
    for (_, f) in CARRIED_OUT {
        if !out.contains(f) {
            out.push(f);
        }
    }
    out
}

/// The SPEC's defaults for actions whose owner carries out approvals; any other action: never.
#[rustfmt::skip]
pub const DEFAULTS: &[(&str, Policy)] = &[
    ("rds.modify_class", Policy::OutsideWindow),
    ("asg.contain_to_zero", Policy::Always),
    ("rds.stop", Policy::Always),
    ("rds.restore_drill", Policy::OutsideWindow),
    ("pg.vacuum-full", Policy::OutsideWindow),
    ("pg.reindex", Policy::OutsideWindow),
    ("pg.end_transaction_unlisted", Policy::Always),
];

const SETTINGS: &[&str] = &["timeout_minutes", "on_timeout", "approvers"];

/// Per-action policies under `approval.`.
pub const DYNAMIC: &[Dynamic] = &[Dynamic {
    prefix: PREFIX,
    pattern: "approval.<action>",
    default: "rds.modify_class, rds.restore_drill, pg.vacuum-full, pg.reindex: outside_window; pg.end_transaction_unlisted, asg.contain_to_zero, rds.stop: always; every other action: never",
    meaning: "never | outside_window | always: when the guard asks a person (signed Approve / Deny links in the alert) instead of deciding alone. Only actions whose owner carries approvals out may ask: rds.modify_class, asg.scale_out, asg.scale_in (scale-on-alarm), pg.vacuum-full, pg.reindex, pg.end_transaction_unlisted (vacuum-trigger; the last is proposed only under always, otherwise a runaway not on the allow-list is only reported), asg.contain_to_zero, rds.stop (cost-anomaly's containment of a non-prod environment) and rds.restore_drill (backup-guard)",
}];

#[derive(Debug, Clone, Serialize, Default)]
pub struct ApprovalConfig {
    /// Set policies (defaults included), by action.
    pub policies: std::collections::BTreeMap<String, Policy>,
    pub timeout_minutes: i64,
    pub on_timeout: OnTimeout,
    pub approvers: Vec<String>,
}

impl ApprovalConfig {
    pub fn policy(&self, action: &str) -> Policy {
        self.policies.get(action).copied().unwrap_or_default()
    }

    pub fn timeout(&self) -> Duration {
        Duration::minutes(self.timeout_minutes)
    }
}

pub fn from_settings(s: &Settings) -> Result<ApprovalConfig> {
    let mut policies: std::collections::BTreeMap<String, Policy> =
        DEFAULTS.iter().map(|(a, p)| (a.to_string(), *p)).collect();
    for (action, value) in s.under(PREFIX) {
        if SETTINGS.contains(&action.as_str()) {
            continue;
        }
        let key = format!("{PREFIX}{action}");
        let policy =
            Policy::parse(&value).ok_or_else(|| s.bad(&key, "never, outside_window or always"))?;
        if policy != Policy::Never && !carried_out(&action) {
            let can: Vec<&str> = CARRIED_OUT.iter().map(|(a, _)| *a).collect();
            return Err(s.bad(
                &key,
                &format!("never: only {} can carry out an approval", can.join(", ")),
            ));
        }
        policies.insert(action, policy);
    }
    let on_timeout = match s.string("approval.on_timeout").as_str() {
        "deny" => OnTimeout::Deny,
        "approve" => OnTimeout::Approve,
        _ => return Err(s.bad("approval.on_timeout", "deny or approve")),
    };
    Ok(ApprovalConfig {
        policies,
        timeout_minutes: positive(s, "approval.timeout_minutes", "whole minutes >= 1")?,
        on_timeout,
        approvers: s.list("approval.approvers"),
    })
}

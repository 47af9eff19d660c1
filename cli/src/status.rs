//! `nbaops status [--env]`: what an operator checks first. The switches (SSM, as the functions
//! read them), the open incidents and their escalation level (alert-router's items), the restore
//! drills (backup-guard's), the contained environments (cost-anomaly's), pending approvals, and
//! each function's last action (the audit trail's by-day index). Every item is read by its key or
//! its partition: no table scan.

use std::collections::BTreeMap;

use chrono::Duration;
use nbaops_shared::config::{Config, Env};
use nbaops_shared::guard::{ApprovalRequest, ApprovalState, AuditRecord};
use nbaops_shared::ports::Ledger;
use serde::Serialize;
use serde_json::Value;

use crate::account::{self, EnvArg};
use crate::functions::FUNCTIONS;
use crate::output::{decision_line, CliResult, Output};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub env: EnvArg,
    /// How many days back the last action of each function is looked for.
    #[arg(long, default_value_t = 7)]
    pub days: i64,
}

/// A request waiting for a person (issue #19), as `ApprovalRequest::all` reads it.
#[derive(Debug, Serialize)]
pub struct PendingApproval {
    pub id: String,
    pub action: String,
    pub resource: String,
    pub sentence: String,
    pub expires_at: String,
    /// Empty: anyone holding a valid link may approve.
    pub approvers: Vec<String>,
}

/// The pending requests of `env`, and the items that could not be read (shown, never guessed).
async fn pending_approvals(
    ledger: &dyn Ledger,
    env: &str,
) -> CliResult<(Vec<PendingApproval>, Vec<String>)> {
    let mut pending = Vec::new();
    let mut unreadable = Vec::new();
    for item in ApprovalRequest::all(ledger, env).await? {
        match item {
            Ok(r) if r.state == ApprovalState::Pending => pending.push(PendingApproval {
                id: r.id,
                action: r.action.action,
                resource: r.action.resource,
                sentence: r.sentence,
                expires_at: r.expires_at.to_rfc3339(),
                approvers: r.approvers,
            }),
            Ok(_) => {}
            Err(e) => unreadable.push(e),
        }
    }
    Ok((pending, unreadable))
}

#[derive(Debug, Serialize)]
pub struct Incident {
    pub dedup_key: String,
    pub severity: String,
    pub status: String,
    pub escalation_level: u64,
    pub opened_at: String,
    pub summary: String,
}

#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub env: String,
    pub kill_switch: bool,
    pub dry_run: bool,
    pub dry_run_functions: Vec<String>,
    pub incidents: Vec<Incident>,
    /// Per instance of `backup.instances`: the drill record, or none.
    pub drills: BTreeMap<String, Option<Value>>,
    /// Contained environment → resource → what was saved to undo the containment (cost-anomaly
    /// contains an environment from any deployment's ledger: every environment is looked at).
    pub contained: BTreeMap<String, BTreeMap<String, Value>>,
    pub approvals: Vec<PendingApproval>,
    /// Approval items the ledger holds but that could not be read.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub approvals_unreadable: Vec<String>,
    pub last_action: BTreeMap<String, Option<AuditRecord>>,
}

/// alert-router's open index, each key's incident as alert-router reads it.
async fn incidents(ledger: &dyn Ledger) -> CliResult<Vec<Incident>> {
    let store = alert_router::incidents::Incidents {
        ledger,
        record_ttl_days: 0,
    };
    let mut out = Vec::new();
    for key in store.open_keys().await? {
        let inc = store.load(&key).await?;
        out.push(match inc {
            Some(i) => Incident {
                dedup_key: key,
                severity: i.severity.to_string(),
                status: serde_json::to_value(i.status)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
                escalation_level: i.escalation_level as u64,
                opened_at: i.opened_at.to_rfc3339(),
                summary: i.summary,
            },
            None => Incident {
                dedup_key: key,
                severity: "?".into(),
                status: "record missing or unreadable".into(),
                escalation_level: 0,
                opened_at: String::new(),
                summary: String::new(),
            },
        });
    }
    Ok(out)
}

pub async fn run(args: Args, out: &Output) -> CliResult<i32> {
    let aws = account::clients().await;
    let cfg = account::core_config(&aws, &args.env).await?;
    let ledger = account::ledger(&aws, &cfg);
    let env = cfg.env.to_string();
    let backup = backup_instances(&aws, &args.env).await?;
    let mut drills = BTreeMap::new();
    for id in backup {
        let d = ledger.get(&format!("backupdrill#{id}"), "current").await?;
        drills.insert(id, d);
    }
    let mut contained = BTreeMap::new();
    for e in [Env::Dev, Env::Test, Env::Prod] {
        let items: BTreeMap<String, Value> = ledger
            .query(&cost_anomaly::handler::contained_pk(e), "")
            .await?
            .into_iter()
            .collect();
        if !items.is_empty() {
            contained.insert(e.to_string(), items);
        }
    }
    let (approvals, approvals_unreadable) = pending_approvals(&ledger, &env).await?;
    let now = nbaops_shared::clock::now();
    let (records, _) = crate::audit::read(
        &ledger,
        now - Duration::days(args.days.max(1)),
        now,
        None,
        None,
        None,
    )
    .await?;
    let last_action = FUNCTIONS
        .iter()
        .map(|f| {
            (
                f.to_string(),
                records.iter().find(|r| r.function == *f).cloned(),
            )
        })
        .collect();
    let report = StatusReport {
        env,
        kill_switch: cfg.guard.kill_switch,
        dry_run: cfg.guard.dry_run,
        dry_run_functions: cfg.guard.dry_run_functions.clone(),
        incidents: incidents(&ledger).await?,
        drills,
        contained,
        approvals,
        approvals_unreadable,
        last_action,
    };
    out.emit(&report, &render(&report, args.days))?;
    Ok(0)
}

/// backup-guard's instances, from its section as it loads it (its own error when the section is
/// wrong: `nbaops config check` names it).
async fn backup_instances(
    aws: &nbaops_shared::adapters::AwsClients,
    env: &EnvArg,
) -> CliResult<Vec<String>> {
    let (_, vars) = account::vars(env)?;
    let params = nbaops_shared::adapters::SdkParams(aws.ssm());
    let p: Option<&dyn nbaops_shared::ports::Params> = if account::use_ssm(&vars) {
        Some(&params)
    } else {
        None
    };
    let cfg = Config::load("backup-guard", &vars, p).await?;
    Ok(cfg.settings.list("backup.instances"))
}

fn on_off(b: bool) -> &'static str {
    if b {
        "ON"
    } else {
        "off"
    }
}

fn render(r: &StatusReport, days: i64) -> String {
    let mut s = format!("status of {}\n", r.env);
    s.push_str(&format!("kill switch: {}\n", on_off(r.kill_switch)));
    s.push_str(&format!(
        "dry-run: {}{}\n",
        on_off(r.dry_run),
        if r.dry_run_functions.is_empty() {
            String::new()
        } else {
            format!(" (and for: {})", r.dry_run_functions.join(", "))
        }
    ));
    if r.incidents.is_empty() {
        s.push_str("open incidents: none\n");
    } else {
        s.push_str(&format!("open incidents: {}\n", r.incidents.len()));
        for i in &r.incidents {
            s.push_str(&format!(
                "  {} {} ({}, escalation level {}, since {}): {}\n",
                i.severity, i.dedup_key, i.status, i.escalation_level, i.opened_at, i.summary
            ));
        }
    }
    if r.drills.is_empty() {
        s.push_str("restore drills: no instance in backup.instances\n");
    }
    for (id, d) in &r.drills {
        match d {
            None => s.push_str(&format!("restore drill {id}: none recorded\n")),
            Some(d) => s.push_str(&format!(
                "restore drill {id}: {} (started {}, drill instance {}{})\n",
                d["phase"].as_str().unwrap_or("?"),
                d["started_at"].as_str().unwrap_or("?"),
                d["drill_instance"].as_str().unwrap_or("?"),
                match d["passed"].as_bool() {
                    Some(true) => ", passed",
                    Some(false) => ", FAILED",
                    None => "",
                }
            )),
        }
    }
    if r.contained.is_empty() {
        s.push_str("contained: none\n");
    }
    for (env, items) in &r.contained {
        for (res, saved) in items {
            s.push_str(&format!("contained in {env}: {res} (saved {saved})\n"));
        }
    }
    if r.approvals.is_empty() {
        s.push_str("pending approvals: none\n");
    }
    for a in &r.approvals {
        let who = if a.approvers.is_empty() {
            "anyone with the link".to_string()
        } else {
            a.approvers.join(", ")
        };
        s.push_str(&format!(
            "pending approval {}: {} {} until {} (approvers: {who}): {}\n",
            a.id, a.action, a.resource, a.expires_at, a.sentence
        ));
    }
    for e in &r.approvals_unreadable {
        s.push_str(&format!("approval item unreadable: {e}\n"));
    }
    for (f, a) in &r.last_action {
        match a {
            Some(a) => s.push_str(&format!("last action {f}: {}\n", decision_line(a))),
            None => s.push_str(&format!("last action {f}: none in {days} days\n")),
        }
    }
    s
}

//! `nbaops plan FUNCTION EVENT.json`: the function's own decision path on the event, against the
//! real account, changing nothing. The function is built and called as the Lambda runtime builds
//! and calls it (config from the environment and SSM, `Function::init`, `Function::handle`), with
//! three differences, each a wall of its own:
//! - the guard is forced to dry-run (a re-read of SSM cannot turn it off);
//! - the ledger is an in-memory overlay over the real one (reads go through, writes stay here) and
//!   the topics are captured ("would publish");
//! - every SDK client refuses any operation not on the operator's read-only list, so a bug in a
//!   function that mutates outside the guard fails loudly instead of changing the account.
//!
//! What a function does outside the guard it describes instead in a plan: scale-on-alarm's
//! follow-up schedules (as in any dry-run), alert-router's Slack and PagerDuty posts and dead
//! letters (only in a plan: a dry-run deployment still alerts people).

use nbaops_shared::adapters::{AwsClients, DynamoLedger, SdkParams};
use nbaops_shared::config::Config;
use nbaops_shared::guard::{AuditRecord, Switches};
use nbaops_shared::ports::Params;
use nbaops_shared::runtime::{Deps, Fleet, Function, Invocation};
use serde::Serialize;
use serde_json::Value;

use crate::account::{self, EnvArg};
use crate::functions::{handle, FUNCTIONS};
use crate::output::{decision_line, CliError, CliResult, Output};
use crate::overlay::{OverlayLedger, WouldPublish};
use nbaops_shared::fakes::{leak, FakeNotifier, Shared};

#[derive(clap::Args)]
pub struct Args {
    /// The function (scale-on-alarm, pg-health, ...).
    pub function: String,
    /// The event, as the function would receive it (a file of JSON).
    pub event: std::path::PathBuf,
    #[command(flatten)]
    pub env: EnvArg,
}

/// What a plan found: every decision, what would have been published, the function's notes.
#[derive(Debug, Serialize)]
pub struct PlanReport {
    pub function: String,
    pub env: String,
    pub dry_run_forced: bool,
    pub decisions: Vec<AuditRecord>,
    pub alerts: Vec<WouldPublish>,
    pub notes: Vec<String>,
    /// The function's own answer, as the runtime would have returned it.
    pub reply: Value,
}

pub async fn run(args: Args, out: &Output) -> CliResult<i32> {
    let name = args.function.as_str();
    if !FUNCTIONS.contains(&name) {
        return Err(CliError::Usage(format!(
            "no function '{name}': one of {}",
            FUNCTIONS.join(", ")
        )));
    }
    let path = args.event.display().to_string();
    let text = std::fs::read_to_string(&args.event).map_err(|e| CliError::Io(path.clone(), e))?;
    let payload: Value = serde_json::from_str(&text).map_err(|e| CliError::Json(path, e))?;
    let report = plan(name, payload, &args.env).await?;
    out.emit(&report, &render(&report))?;
    Ok(0)
}

/// The plan of `function` on `payload` (see the module's documentation).
pub async fn plan(function: &str, payload: Value, env: &EnvArg) -> CliResult<PlanReport> {
    // Leaked like the notifier: a fleet's member clients are built from it on first use.
    let aws: &'static AwsClients = leak(account::clients().await);
    let (_, vars) = account::vars(env)?;
    let params = SdkParams(aws.ssm());
    let ssm = account::use_ssm(&vars);
    let p: Option<&dyn Params> = if ssm { Some(&params) } else { None };
    let mut cfg = Config::load(function, &vars, p).await?;
    cfg.guard.dry_run = true;
    let overlay = OverlayLedger::over(Box::new(DynamoLedger {
        client: aws.dynamodb(),
        table: cfg.ledger_table.clone(),
    }));
    let written = overlay.written();
    // Kept, never sent: the command runs once and exits, so the leaked notifier lives as long.
    let notifier = leak(FakeNotifier::default());
    let deps = Deps {
        notifier: Box::new(Shared(notifier)),
        ledger: Box::new(overlay),
        params: if ssm {
            Some(Box::new(SdkParams(aws.ssm())))
        } else {
            None
        },
        switches: Switches::forced_dry_run(&cfg),
        work_queue: None,
        cfg,
    };
    let inv = Invocation::at(
        &format!("nbaops-plan-{}", std::process::id()),
        nbaops_shared::clock::now(),
    );
    // A member's record is planned against that member, through its read-only clients (issue #20).
    let fleet = Fleet::new(&deps.cfg, aws)?;
    let reply = run_named(function, &deps, aws, fleet.as_ref(), payload, &inv).await?;
    let decisions: Vec<AuditRecord> = written
        .under("audit#")
        .into_iter()
        .filter_map(|(_, _, v)| serde_json::from_value(v).ok())
        .collect();
    let alerts: Vec<WouldPublish> = notifier
        .published()
        .into_iter()
        .filter(|p| {
            deps.cfg.actions_topic_arn.is_empty() || p.topic_arn != deps.cfg.actions_topic_arn
        })
        .map(WouldPublish::of)
        .collect();
    Ok(PlanReport {
        function: function.to_string(),
        env: deps.cfg.env.to_string(),
        dry_run_forced: true,
        decisions,
        alerts,
        notes: notes_of(&reply),
        reply,
    })
}

/// Every record's notes, and why a record was not for the function.
fn notes_of(reply: &Value) -> Vec<String> {
    let mut notes = Vec::new();
    for r in reply["records"].as_array().into_iter().flatten() {
        if let Some(why) = r["not_for_me"].as_str() {
            notes.push(format!(
                "not for {}: {why}",
                reply["function"].as_str().unwrap_or("it")
            ));
        }
        for n in r["notes"].as_array().into_iter().flatten() {
            if let Some(n) = n.as_str() {
                notes.push(n.to_string());
            }
        }
    }
    notes
}

/// The function by its name, built and called as the runtime builds and calls it.
async fn run_named(
    name: &str,
    deps: &Deps,
    aws: &AwsClients,
    fleet: Option<&Fleet>,
    payload: Value,
    inv: &Invocation,
) -> CliResult<Value> {
    async fn one<F: Function>(
        deps: &Deps,
        aws: &AwsClients,
        fleet: Option<&Fleet>,
        payload: Value,
        inv: &Invocation,
    ) -> CliResult<Value> {
        let f = F::init(deps, aws).await?;
        handle(&f, deps, fleet, payload, inv).await
    }
    match name {
        "scale-on-alarm" => {
            one::<scale_on_alarm::handler::ScaleOnAlarm>(deps, aws, fleet, payload, inv).await
        }
        "pg-health" => one::<pg_health::handler::PgHealth>(deps, aws, fleet, payload, inv).await,
        "vacuum-trigger" => {
            one::<vacuum_trigger::handler::VacuumTrigger>(deps, aws, fleet, payload, inv).await
        }
        "cost-anomaly" => {
            one::<cost_anomaly::handler::CostAnomaly>(deps, aws, fleet, payload, inv).await
        }
        "failover-notify" => {
            one::<failover_notify::handler::FailoverNotify>(deps, aws, fleet, payload, inv).await
        }
        "backup-guard" => {
            one::<backup_guard::handler::BackupGuard>(deps, aws, fleet, payload, inv).await
        }
        "offhours" => one::<offhours::handler::Offhours>(deps, aws, fleet, payload, inv).await,
        "posture-check" => {
            one::<posture_check::handler::PostureCheck>(deps, aws, fleet, payload, inv).await
        }
        "alert-router" => {
            one::<alert_router::router::AlertRouter>(deps, aws, fleet, payload, inv).await
        }
        other => Err(CliError::Usage(format!("{other} cannot be planned"))),
    }
}

fn render(r: &PlanReport) -> String {
    let mut s = format!(
        "plan of {} in {} (dry-run forced, nothing changed)\n",
        r.function, r.env
    );
    if r.decisions.is_empty() {
        s.push_str("decisions: none\n");
    }
    for d in &r.decisions {
        s.push_str(&format!("decision: {}\n", decision_line(d)));
    }
    for a in &r.alerts {
        let m = &a.message;
        let line = match (m["severity"].as_str(), m["summary"].as_str()) {
            (Some(sev), Some(summary)) => format!("{sev} {summary}"),
            _ => a.subject.clone(),
        };
        s.push_str(&format!("would publish: {line}\n"));
    }
    for n in &r.notes {
        s.push_str(&format!("note: {n}\n"));
    }
    s
}

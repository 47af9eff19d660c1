//! `nbaops approve ID --as NAME` / `nbaops deny ID --as NAME [--env E]`: the answer to an approval
//! request (issue #19) for an operator without the link, recorded as from "cli". The same
//! answering as alert-router's links (`nbaops_shared::guard::approval::Answering`): decided once,
//! by a named approver, before expiry; audited; an approval dispatched to its owning function as
//! the one-time schedule `approval-<id>`.
//!
//! The only writing command: its clients refuse everything but the read-only operations and the
//! few writes of [`APPROVE_AWS_OPERATIONS`], which the template's `OperatorApprovePolicy` grants
//! (attached beside the read-only policy).

use serde::Serialize;

use nbaops_shared::adapters::{ReadOnly, SdkNotifier, SdkParams, SdkScheduler};
use nbaops_shared::config::alerts;
use nbaops_shared::config::Config;
use nbaops_shared::guard::approval::{Answering, Decided, Verdict};
use nbaops_shared::ports::Params;

use crate::account::{self, EnvArg};
use crate::aws_operations::{APPROVE_AWS_OPERATIONS, OPERATOR_AWS_OPERATIONS};
use crate::output::{CliResult, Output};

#[derive(clap::Args)]
pub struct Args {
    /// The approval request's id (16 hex digits, as in the alert).
    pub id: String,
    /// The approver answering: one of the request's approvers (any name when it names none).
    #[arg(long = "as")]
    pub approver: String,
    #[command(flatten)]
    pub env: EnvArg,
}

#[derive(Debug, Serialize)]
pub struct AnswerReport {
    pub env: String,
    pub id: String,
    pub verdict: Verdict,
    pub by: String,
    pub decided: bool,
    pub state: Option<String>,
    pub what: String,
}

/// Answers request `args.id` with `verdict`. Exit code 0 when this answer decided it, 3 when it
/// was refused (nothing changed: already decided, expired, not an approver, unknown).
pub async fn run(args: Args, verdict: Verdict, out: &Output) -> CliResult<i32> {
    // The SDK operations it may call: the IAM actions of both lists, and TransactWriteItems, the
    // operation `decide` writes with, which IAM authorises item by item as the PutItem it holds
    // (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/transaction-apis-iam.html).
    let allowed: Vec<&'static str> = OPERATOR_AWS_OPERATIONS
        .iter()
        .chain(APPROVE_AWS_OPERATIONS)
        .chain(&["dynamodb:TransactWriteItems"])
        .copied()
        .collect();
    let aws = nbaops_shared::adapters::AwsClients::from_env_read_only(ReadOnly {
        allowed: allowed.leak(),
    })
    .await;
    let (_, vars) = account::vars(&args.env)?;
    let params = SdkParams(aws.ssm());
    let p: Option<&dyn Params> = if account::use_ssm(&vars) {
        Some(&params)
    } else {
        None
    };
    // alert-router's configuration: where approved actions are dispatched (alerts.approval.*).
    let cfg = Config::load("alert-router", &vars, p).await?;
    let alerts = alerts::from_settings(&cfg.settings)?;
    let ledger = account::ledger(&aws, &cfg);
    let notifier = SdkNotifier(aws.sns());
    let scheduler = SdkScheduler(aws.scheduler());
    let answering = Answering {
        cfg: &cfg,
        ledger: &ledger,
        notifier: &notifier,
        scheduler: Some(&scheduler),
        dispatch: &alerts.approval,
        function: "nbaops",
        request_id: "cli",
    };
    let who = Decided {
        by: args.approver.clone(),
        from: "cli".into(),
        at: nbaops_shared::clock::now(),
    };
    let a = answering.answer(&args.id, verdict, who).await?;
    let state = a.request.as_ref().and_then(|r| {
        serde_json::to_value(r.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
    });
    let report = AnswerReport {
        env: cfg.env.to_string(),
        id: args.id.clone(),
        verdict,
        by: args.approver,
        decided: a.decided,
        state,
        what: a.what.clone(),
    };
    let text = match &a.request {
        Some(r) => format!(
            "approval {} ({}): {}\n{}\n",
            r.id, r.sentence, a.what, r.function
        ),
        None => format!("approval {}: {}\n", args.id, a.what),
    };
    out.emit(&report, &text)?;
    Ok(if a.decided { 0 } else { 3 })
}

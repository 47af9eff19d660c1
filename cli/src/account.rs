//! The account every command reads: SDK clients that refuse anything but the operator's read-only
//! operations ([`crate::aws_operations::OPERATOR_AWS_OPERATIONS`]), the environment's settings as
//! a function would see them (`--env` in place of `NBAOPS_ENV`), the ledger.

use std::collections::BTreeMap;

use nbaops_shared::adapters::{AwsClients, DynamoLedger, ReadOnly, SdkParams};
use nbaops_shared::config::{Config, Env};
use nbaops_shared::ports::Params;

use crate::aws_operations::OPERATOR_AWS_OPERATIONS;
use crate::output::CliResult;

/// `--env`, shared by the commands that read an environment.
#[derive(clap::Args, Clone, Debug)]
pub struct EnvArg {
    /// dev, test or prod (default: NBAOPS_ENV, else dev).
    #[arg(long)]
    pub env: Option<String>,
}

/// The SDK clients of every command: read-only, whatever the code asks.
pub async fn clients() -> AwsClients {
    AwsClients::from_env_read_only(ReadOnly {
        allowed: OPERATOR_AWS_OPERATIONS,
    })
    .await
}

/// The process's environment as a function sees it, `--env` winning over `NBAOPS_ENV`.
pub fn vars(env: &EnvArg) -> CliResult<(Env, BTreeMap<String, String>)> {
    let mut vars: BTreeMap<String, String> = std::env::vars().collect();
    let name = env
        .env
        .clone()
        .or_else(|| vars.get("NBAOPS_ENV").cloned())
        .unwrap_or_else(|| "dev".into());
    let parsed: Env = name.parse()?;
    vars.insert("NBAOPS_ENV".into(), parsed.to_string());
    Ok((parsed, vars))
}

/// Whether SSM is read (`NBAOPS_SSM=off` turns it off, as for the functions).
pub fn use_ssm(vars: &BTreeMap<String, String>) -> bool {
    vars.get("NBAOPS_SSM").map(|v| v != "off").unwrap_or(true)
}

/// The deployment's core configuration (guard, audit, the ledger table, the topics) as every
/// function loads it.
pub async fn core_config(aws: &AwsClients, env: &EnvArg) -> CliResult<Config> {
    let (_, vars) = vars(env)?;
    let params = SdkParams(aws.ssm());
    let p: Option<&dyn Params> = if use_ssm(&vars) { Some(&params) } else { None };
    Ok(Config::load("nbaops", &vars, p).await?)
}

pub fn ledger(aws: &AwsClients, cfg: &Config) -> DynamoLedger {
    DynamoLedger {
        client: aws.dynamodb(),
        table: cfg.ledger_table.clone(),
    }
}

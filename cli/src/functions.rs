//! The functions the command runs in-process: by name, through the same `Function::handle` the
//! Lambda runtime calls, so a plan or a replay makes the decision the deployed function makes.

use nbaops_shared::runtime::{Ctx, Deps, Function, Invocation, Reply};
use serde_json::Value;

use crate::output::{CliError, CliResult};

/// Every function's name, as in the template and the audit records.
pub const FUNCTIONS: &[&str] = &[
    "scale-on-alarm",
    "pg-health",
    "vacuum-trigger",
    "alert-router",
    "cost-anomaly",
    "failover-notify",
    "backup-guard",
    "offhours",
];

/// One payload through `f`, as the runtime would hand it, answered as the runtime would answer.
pub async fn handle<F: Function>(
    f: &F,
    deps: &Deps,
    payload: Value,
    inv: &Invocation,
) -> CliResult<Value> {
    let ctx = Ctx::of::<F>(deps, inv);
    let reply = f.handle(payload, &ctx).await?;
    reply
        .into_json()
        .map_err(|e| CliError::Json(format!("{} reply", F::NAME), e))
}

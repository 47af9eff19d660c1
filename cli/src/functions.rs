//! The functions the command runs in-process: by name, through the same `Function::handle` the
//! Lambda runtime calls, so a plan or a replay makes the decision the deployed function makes.

use nbaops_shared::runtime::{Ctx, Deps, Fleet, Function, Invocation, Reply};
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
    "posture-check",
];

/// One payload through `f`, as the runtime would hand it, answered as the runtime would answer;
/// with a `fleet`, each record routed to its origin as the runtime routes it (issue #20).
pub async fn handle<F: Function>(
    f: &F,
    deps: &Deps,
    fleet: Option<&Fleet>,
    payload: Value,
    inv: &Invocation,
) -> CliResult<Value> {
    let ctx = Ctx::of::<F>(deps, inv).with_fleet(fleet);
    let reply = f.handle(payload, &ctx).await?;
    reply
        .into_json()
        .map_err(|e| CliError::Json(format!("{} reply", F::NAME), e))
}

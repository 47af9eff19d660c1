//! failover-notify: wiring only. The timeline lives in `incident`, the checks in `verify`, the
//! translation in `handler`.

use failover_notify::handler::{self, FailoverNotify};
use nbaops_shared::adapters::{AwsClients, TokioPgConnector};
use nbaops_shared::runtime::Deps;
use nbaops_shared::Result;

/// Synchronous: `serve_with`'s init future may not borrow the deps.
fn build(deps: &Deps) -> Result<FailoverNotify> {
    let cfg = nbaops_shared::config::failover::from_settings(&deps.cfg.settings)?;
    Ok(FailoverNotify {
        cfg,
        connector: Box::new(TokioPgConnector::from_settings(&deps.cfg.settings)?),
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    nbaops_shared::runtime::serve_with(
        handler::FUNCTION,
        |deps: &Deps, _aws: &AwsClients| {
            let built = build(deps);
            async move { built }
        },
        handler::handle,
    )
    .await
}

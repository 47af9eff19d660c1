//! pg-health: wiring only. The checks live in `checks`, the scan and announcements in `handler`.

mod aws_operations;
mod checks;
mod handler;
#[cfg(test)]
mod properties;

use nbaops_shared::adapters::{AwsClients, TokioPgConnector};
use nbaops_shared::runtime::Deps;
use nbaops_shared::Result;

/// Synchronous: `serve_with`'s init future may not borrow the deps.
fn build(deps: &Deps) -> Result<handler::PgHealth> {
    let pg = nbaops_shared::config::pg::from_settings(&deps.cfg.settings)?;
    Ok(handler::PgHealth {
        pg,
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

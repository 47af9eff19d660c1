//! backup-guard: wiring only. Decisions live in `plan`, effects in `handler`, `monthly`, `drill`.

use backup_guard::handler::{self, BackupGuard};
use nbaops_shared::adapters::{AwsClients, SdkRdsBackups, TokioPgConnector};
use nbaops_shared::runtime::Deps;
use nbaops_shared::Result;

/// Synchronous: `serve_with`'s init future may not borrow the deps.
fn build(deps: &Deps, aws: &AwsClients) -> Result<BackupGuard> {
    let backup = nbaops_shared::config::backup::from_settings(&deps.cfg.settings)?;
    let pg = nbaops_shared::config::pg::from_settings(&deps.cfg.settings)?;
    // The DR region gets its own client from the same SDK config (endpoint, credentials).
    let rds = SdkRdsBackups::new(aws.rds(), &backup.dr_region);
    Ok(BackupGuard {
        backup,
        pg,
        rds: Box::new(rds),
        connector: Box::new(TokioPgConnector::from_settings(&deps.cfg.settings)?),
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    nbaops_shared::runtime::serve_with(
        handler::FUNCTION,
        |deps: &Deps, aws: &AwsClients| {
            let built = build(deps, aws);
            async move { built }
        },
        handler::handle,
    )
    .await
}

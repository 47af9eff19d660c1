//! cost-anomaly: wiring only. Decisions live in `plan`, the translation and effects in `handler`.

use cost_anomaly::handler;
use nbaops_shared::adapters::AwsClients;
use nbaops_shared::runtime::Deps;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    nbaops_shared::runtime::serve_with(
        handler::FUNCTION,
        // Synchronous: serve_with's init future may not borrow the deps.
        |deps: &Deps, aws: &AwsClients| {
            let built = handler::build(deps, aws);
            async move { built }
        },
        handler::handle,
    )
    .await
}

//! offhours: wiring only. Schedule maths in `schedule`, decisions in `plan`, effects in `handler`.

use nbaops_shared::adapters::AwsClients;
use nbaops_shared::runtime::Deps;
use offhours::handler;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    nbaops_shared::runtime::serve_with(
        handler::FUNCTION,
        |deps: &Deps, aws: &AwsClients| {
            let built = handler::build(deps, aws);
            async move { built }
        },
        handler::handle,
    )
    .await
}

//! alert-router: wiring only. Routing, dedup, acknowledgement and escalation live in `handler`.

use alert_router::handler::{handle, init, FUNCTION};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    nbaops_shared::runtime::serve_with(FUNCTION, init, handle).await
}

//! alert-router: wiring only. Routing, dedup, acknowledgement and escalation live in the library.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    nbaops_shared::runtime::run::<alert_router::router::AlertRouter>().await
}

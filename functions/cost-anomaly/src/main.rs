//! cost-anomaly: wiring only. Decisions live in `plan`, the translation and effects in `handler`.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    nbaops_shared::runtime::run::<cost_anomaly::handler::CostAnomaly>().await
}

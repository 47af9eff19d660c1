//! posture-check: wiring only. The dispatcher is `handler`; the rules live in `rules`.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    nbaops_shared::runtime::run::<posture_check::handler::PostureCheck>().await
}

//! scale-on-alarm: wiring only. The decisions live in `plan`, the translation in `handler`.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    nbaops_shared::runtime::serve(
        scale_on_alarm::handler::FUNCTION,
        scale_on_alarm::handler::handle,
    )
    .await
}

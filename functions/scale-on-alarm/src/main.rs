//! scale-on-alarm: wiring only. The decisions live in `plan`, the translation in `handler`.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    nbaops_shared::runtime::run::<scale_on_alarm::handler::ScaleOnAlarm>().await
}

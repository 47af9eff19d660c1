//! scale-on-alarm: wiring only. The decisions live in `plan`, the translation in `handler`.

mod handler;
mod plan;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    nbaops_shared::runtime::serve(handler::FUNCTION, handler::handle).await
}

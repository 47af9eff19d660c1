//! vacuum-trigger: wiring only. Runaway-transaction choice in `plan`, guarded maintenance in `handler`.

mod aws_operations;
mod handler;
mod plan;
#[cfg(test)]
mod properties;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    nbaops_shared::runtime::run::<handler::VacuumTrigger>().await
}

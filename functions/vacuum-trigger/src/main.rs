//! vacuum-trigger: wiring only. Runaway-transaction choice in `plan`, guarded maintenance in
//! `handler`, one statement as the owner in `statement`, ending a runaway transaction in `runaway`.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    nbaops_shared::runtime::run::<vacuum_trigger::handler::VacuumTrigger>().await
}

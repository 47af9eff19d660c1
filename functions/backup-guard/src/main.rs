//! backup-guard: wiring only. The dispatcher is `handler`; decisions live in `plan`, the tasks in
//! `rpo`, `monthly` and `drill`.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    nbaops_shared::runtime::run::<backup_guard::handler::BackupGuard>().await
}

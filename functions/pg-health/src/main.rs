//! pg-health: wiring only. The checks live in `checks`, the scan in `scan`, the announcements in
//! `handler`.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    nbaops_shared::runtime::run::<pg_health::handler::PgHealth>().await
}

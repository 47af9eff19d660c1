//! pg-health: wiring only. The checks live in `checks`, the scan in `scan`, the announcements in
//! `handler`.

mod aws_operations;
mod checks;
mod handler;
#[cfg(test)]
mod properties;
mod scan;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    nbaops_shared::runtime::run::<handler::PgHealth>().await
}

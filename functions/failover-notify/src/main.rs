//! failover-notify: wiring only. The timeline lives in `incident`, the checks in `verify`, the
//! translation in `handler`.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    nbaops_shared::runtime::run::<failover_notify::handler::FailoverNotify>().await
}

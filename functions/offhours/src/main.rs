//! offhours: wiring only. The function is `handler::Offhours`; schedule maths in `schedule`,
//! decisions in `plan`.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    nbaops_shared::runtime::run::<offhours::handler::Offhours>().await
}

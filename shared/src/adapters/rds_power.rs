//! `RdsPower` on `aws-sdk-rds`.

use async_trait::async_trait;

use super::dependency;
use crate::error::Result;
use crate::ports::RdsPower;

pub struct SdkRdsPower(pub aws_sdk_rds::Client);

#[async_trait]
impl RdsPower for SdkRdsPower {
    async fn stop_instance(&self, id: &str) -> Result<()> {
        self.0
            .stop_db_instance()
            .db_instance_identifier(id)
            .send()
            .await
            .map_err(|e| dependency("rds", e))?;
        Ok(())
    }

    async fn start_instance(&self, id: &str) -> Result<()> {
        self.0
            .start_db_instance()
            .db_instance_identifier(id)
            .send()
            .await
            .map_err(|e| dependency("rds", e))?;
        Ok(())
    }
}

//! `RdsPower` on `aws-sdk-rds`.
//!
//! A stop or start whose answer was lost after RDS acted (a reset, a timeout) is retried by the
//! SDK, and the retry is refused with `InvalidDBInstanceState` because the instance is no longer
//! `available` / `stopped` (StopDBInstance and StartDBInstance list that error:
//! <https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_StopDBInstance.html>,
//! <https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_StartDBInstance.html>).
//! So on that refusal the instance is described: if it is already on its way to the state asked
//! for, the request did what it was meant to and is reported done; otherwise the refusal stands.

use async_trait::async_trait;

use super::dependency;
use crate::error::Result;
use crate::ports::RdsPower;

pub struct SdkRdsPower(pub aws_sdk_rds::Client);

/// Statuses that mean a stop (or a start) has been accepted.
const STOPPING: &[&str] = &["stopping", "stopped"];
const STARTING: &[&str] = &["starting", "available"];

impl SdkRdsPower {
    /// The instance's status, when it can be read.
    async fn status(&self, id: &str) -> Option<String> {
        let out = self
            .0
            .describe_db_instances()
            .db_instance_identifier(id)
            .send()
            .await
            .ok()?;
        out.db_instances()
            .first()
            .and_then(|i| i.db_instance_status())
            .map(String::from)
    }

    /// After an `InvalidDBInstanceState` refusal: done if the instance is already in `wanted`.
    async fn refused_but_done(&self, id: &str, verb: &str, wanted: &[&str]) -> bool {
        match self.status(id).await {
            Some(s) if wanted.contains(&s.as_str()) => {
                tracing::warn!(instance = id, status = %s, "{verb} refused as InvalidDBInstanceState, but the instance is already {s}: an earlier attempt (its answer lost) or another actor did it");
                true
            }
            _ => false,
        }
    }
}

#[async_trait]
impl RdsPower for SdkRdsPower {
    async fn stop_instance(&self, id: &str) -> Result<()> {
        match self
            .0
            .stop_db_instance()
            .db_instance_identifier(id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_invalid_db_instance_state_fault())
                    && self.refused_but_done(id, "StopDBInstance", STOPPING).await =>
            {
                Ok(())
            }
            Err(e) => Err(dependency("rds", e)),
        }
    }

    async fn start_instance(&self, id: &str) -> Result<()> {
        match self
            .0
            .start_db_instance()
            .db_instance_identifier(id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_invalid_db_instance_state_fault())
                    && self.refused_but_done(id, "StartDBInstance", STARTING).await =>
            {
                Ok(())
            }
            Err(e) => Err(dependency("rds", e)),
        }
    }
}

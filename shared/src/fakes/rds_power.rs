//! In-memory `RdsPower`: instance status and a log of start/stop calls.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::lock;
use crate::error::{NbaopsError, Result};
use crate::ports::RdsPower;

/// Instance id -> status ("available", "stopped"); stopping anything but an available instance
/// fails, as on AWS.
#[derive(Default)]
pub struct FakeRdsPower {
    pub status: Mutex<BTreeMap<String, String>>,
    pub mutations: Mutex<Vec<String>>,
}

impl FakeRdsPower {
    pub fn mutations(&self) -> Vec<String> {
        lock(&self.mutations).clone()
    }
}

#[async_trait]
impl RdsPower for FakeRdsPower {
    async fn stop_instance(&self, id: &str) -> Result<()> {
        let mut all = lock(&self.status);
        let s = all
            .entry(id.to_string())
            .or_insert_with(|| "available".into());
        if s != "available" {
            return Err(NbaopsError::Dependency {
                service: "rds",
                message: format!("InvalidDBInstanceState: {id} is {s}"),
                retryable: false,
            });
        }
        *s = "stopped".into();
        lock(&self.mutations).push(format!("stop_instance {id}"));
        Ok(())
    }
    async fn start_instance(&self, id: &str) -> Result<()> {
        lock(&self.status).insert(id.to_string(), "available".into());
        lock(&self.mutations).push(format!("start_instance {id}"));
        Ok(())
    }
}

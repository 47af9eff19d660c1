//! The full-system restore drill's smoke test (issue #22): an isolated Auto Scaling group made
//! from the application's launch template, watched until an instance is InService and Healthy,
//! then force-deleted. A port of its own: the scaler's `AutoScaling` port never creates or
//! deletes groups.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::Tags;
use crate::error::Result;

/// CreateAutoScalingGroup as the drill asks for it: min 0, max 1, desired 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillGroupRequest {
    pub name: String,
    pub launch_template: String,
    /// A version number, `$Default` or `$Latest`.
    pub launch_template_version: String,
    pub subnets: Vec<String>,
    /// Propagated to the instances at launch.
    pub tags: Tags,
}

/// What the drill reads of its group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillGroupState {
    pub name: String,
    /// `Delete in progress` while a delete runs, else None.
    pub status: Option<String>,
    pub instances: usize,
    /// Instances whose lifecycle state is InService and health status Healthy: the smoke test.
    pub healthy_in_service: usize,
    pub tags: Tags,
}

#[async_trait]
pub trait DrillGroups: Send + Sync {
    async fn create_group(&self, req: &DrillGroupRequest) -> Result<()>;
    /// None: no group of that name.
    async fn describe_group(&self, name: &str) -> Result<Option<DrillGroupState>>;
    /// DeleteAutoScalingGroup with ForceDelete: its instances are terminated with it.
    async fn force_delete_group(&self, name: &str) -> Result<()>;
}

//! In-memory [`DrillGroups`]: a new group starts with no instance; the test makes its instance
//! InService/Healthy (`set_healthy`) when it wants the smoke test to pass. Real AWS refuses a
//! second group of the same name (AlreadyExists); the fake does too.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::lock;
use crate::error::{NbaopsError, Result};
use crate::ports::{DrillGroupRequest, DrillGroupState, DrillGroups};

#[derive(Default)]
pub struct FakeDrillGroups {
    pub groups: Mutex<BTreeMap<String, DrillGroupState>>,
    pub created: Mutex<Vec<DrillGroupRequest>>,
    pub mutations: Mutex<Vec<String>>,
}

impl FakeDrillGroups {
    pub fn mutations(&self) -> Vec<String> {
        lock(&self.mutations).clone()
    }
    /// The group's instance launched and passed its health checks.
    pub fn set_healthy(&self, name: &str) {
        if let Some(g) = lock(&self.groups).get_mut(name) {
            g.instances = 1;
            g.healthy_in_service = 1;
        }
    }
}

#[async_trait]
impl DrillGroups for FakeDrillGroups {
    async fn create_group(&self, req: &DrillGroupRequest) -> Result<()> {
        let mut groups = lock(&self.groups);
        if groups.contains_key(&req.name) {
            return Err(NbaopsError::Dependency {
                service: "autoscaling",
                message: format!("AlreadyExists: {}", req.name),
                retryable: false,
            });
        }
        groups.insert(
            req.name.clone(),
            DrillGroupState {
                name: req.name.clone(),
                status: None,
                instances: 0,
                healthy_in_service: 0,
                tags: req.tags.clone(),
            },
        );
        lock(&self.created).push(req.clone());
        lock(&self.mutations).push(format!(
            "create_group {} from {}:{}",
            req.name, req.launch_template, req.launch_template_version
        ));
        Ok(())
    }
    async fn describe_group(&self, name: &str) -> Result<Option<DrillGroupState>> {
        Ok(lock(&self.groups).get(name).cloned())
    }
    async fn force_delete_group(&self, name: &str) -> Result<()> {
        lock(&self.groups)
            .remove(name)
            .ok_or_else(|| NbaopsError::NotFound(name.into()))?;
        lock(&self.mutations).push(format!("force_delete_group {name}"));
        Ok(())
    }
}

#[async_trait]
impl<T: DrillGroups> DrillGroups for super::Shared<T> {
    async fn create_group(&self, req: &DrillGroupRequest) -> Result<()> {
        self.0.create_group(req).await
    }
    async fn describe_group(&self, name: &str) -> Result<Option<DrillGroupState>> {
        self.0.describe_group(name).await
    }
    async fn force_delete_group(&self, name: &str) -> Result<()> {
        self.0.force_delete_group(name).await
    }
}

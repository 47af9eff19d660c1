//! In-memory `Inventory`: reads the groups and instances of the fakes it wraps, so a test's
//! changes through `FakeAutoScaling` / `FakeRds` are what the next listing sees.

use async_trait::async_trait;

use super::{lock, FakeAutoScaling, FakeRds};
use crate::error::Result;
use crate::ports::{DbInstanceState, GroupState, Inventory};

pub struct FakeInventory {
    pub asg: &'static FakeAutoScaling,
    pub rds: &'static FakeRds,
}

#[async_trait]
impl Inventory for FakeInventory {
    async fn list_groups_with_tag(&self, key: &str) -> Result<Vec<GroupState>> {
        Ok(lock(&self.asg.groups)
            .values()
            .filter(|g| g.tags.contains_key(key))
            .cloned()
            .collect())
    }
    async fn list_db_instances_with_tag(&self, key: &str) -> Result<Vec<DbInstanceState>> {
        Ok(lock(&self.rds.instances)
            .values()
            .filter(|i| i.tags.contains_key(key))
            .cloned()
            .collect())
    }
}

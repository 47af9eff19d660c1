//! Finding resources by tag (off-hours schedules, anything opted in by a tag): what the
//! describe calls return, filtered on the presence of a tag key. A port of its own so the
//! single-resource `AutoScaling` / `Rds` ports stay as they are.

use async_trait::async_trait;

use super::{DbInstanceState, GroupState};
use crate::error::Result;

#[async_trait]
pub trait Inventory: Send + Sync {
    /// Every Auto Scaling group carrying the tag key `key` (any value).
    async fn list_groups_with_tag(&self, key: &str) -> Result<Vec<GroupState>>;
    /// Every RDS DB instance carrying the tag key `key` (any value).
    async fn list_db_instances_with_tag(&self, key: &str) -> Result<Vec<DbInstanceState>>;
}

//! `Inventory` on `aws-sdk-autoscaling` (describe_auto_scaling_groups filtered by `tag-key`)
//! and `aws-sdk-rds` (describe_db_instances, whose TagList carries the tags), paginated.

use async_trait::async_trait;

use super::dependency;
use crate::error::Result;
use crate::ports::{DbInstanceState, GroupState, Inventory, Tags};

pub struct SdkInventory {
    pub asg: aws_sdk_autoscaling::Client,
    pub rds: aws_sdk_rds::Client,
}

#[async_trait]
impl Inventory for SdkInventory {
    async fn list_groups_with_tag(&self, key: &str) -> Result<Vec<GroupState>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .asg
                .describe_auto_scaling_groups()
                .filters(
                    aws_sdk_autoscaling::types::Filter::builder()
                        .name("tag-key")
                        .values(key)
                        .build(),
                )
                .set_next_token(token.clone())
                .send()
                .await
                .map_err(|e| dependency("autoscaling", e))?;
            for g in page.auto_scaling_groups() {
                let tags: Tags = g
                    .tags()
                    .iter()
                    .filter_map(|t| {
                        Some((t.key()?.to_string(), t.value().unwrap_or("").to_string()))
                    })
                    .collect();
                // The filter is the service's; checking again keeps a lenient emulator honest.
                if !tags.contains_key(key) {
                    continue;
                }
                let states: Vec<&str> = g
                    .instances()
                    .iter()
                    .map(|i| i.lifecycle_state().map(|s| s.as_str()).unwrap_or(""))
                    .collect();
                out.push(GroupState {
                    name: g.auto_scaling_group_name().unwrap_or("").to_string(),
                    min_size: g.min_size().unwrap_or(0),
                    max_size: g.max_size().unwrap_or(0),
                    desired: g.desired_capacity().unwrap_or(0),
                    in_service: states.iter().filter(|s| **s == "InService").count() as i32,
                    tags,
                    activity_in_progress: g.status().is_some()
                        || states
                            .iter()
                            .any(|s| s.starts_with("Pending") || s.starts_with("Terminating")),
                });
            }
            token = page.next_token().map(String::from);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    async fn list_db_instances_with_tag(&self, key: &str) -> Result<Vec<DbInstanceState>> {
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = self
                .rds
                .describe_db_instances()
                .set_marker(marker.clone())
                .send()
                .await
                .map_err(|e| dependency("rds", e))?;
            for i in page.db_instances() {
                let tags: Tags = i
                    .tag_list()
                    .iter()
                    .filter_map(|t| {
                        Some((t.key()?.to_string(), t.value().unwrap_or("").to_string()))
                    })
                    .collect();
                if !tags.contains_key(key) {
                    continue;
                }
                out.push(DbInstanceState {
                    id: i.db_instance_identifier().unwrap_or("").to_string(),
                    arn: i.db_instance_arn().map(String::from),
                    class: i.db_instance_class().unwrap_or("").to_string(),
                    status: i.db_instance_status().unwrap_or("").to_string(),
                    engine: i.engine().unwrap_or("").to_string(),
                    multi_az: i.multi_az().unwrap_or(false),
                    endpoint: i.endpoint().and_then(|e| {
                        Some((e.address()?.to_string(), e.port().unwrap_or(5432) as u16))
                    }),
                    pending_class: i
                        .pending_modified_values()
                        .and_then(|p| p.db_instance_class())
                        .map(String::from),
                    tags,
                });
            }
            marker = page.marker().map(String::from);
            if marker.is_none() {
                return Ok(out);
            }
        }
    }
}

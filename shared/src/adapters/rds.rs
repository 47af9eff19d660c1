use async_trait::async_trait;
use aws_sdk_rds::operation::describe_db_instances::DescribeDBInstancesError;

use super::{dependency, SdkRds};
use crate::error::Result;
use crate::ports::{DbInstanceState, Rds, Tags};

#[async_trait]
impl Rds for SdkRds {
    async fn describe_instance(&self, id: &str) -> Result<Option<DbInstanceState>> {
        let out = match self
            .0
            .describe_db_instances()
            .db_instance_identifier(id)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                if matches!(
                    e.as_service_error(),
                    Some(DescribeDBInstancesError::DbInstanceNotFoundFault(_))
                ) {
                    return Ok(None);
                }
                return Err(dependency("rds", e));
            }
        };
        let Some(i) = out.db_instances().first() else {
            return Ok(None);
        };
        let tags: Tags = i
            .tag_list()
            .iter()
            .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
            .collect();
        Ok(Some(DbInstanceState {
            id: i.db_instance_identifier().unwrap_or(id).to_string(),
            arn: i.db_instance_arn().map(String::from),
            class: i.db_instance_class().unwrap_or("").to_string(),
            status: i.db_instance_status().unwrap_or("").to_string(),
            engine: i.engine().unwrap_or("").to_string(),
            multi_az: i.multi_az().unwrap_or(false),
            endpoint: i
                .endpoint()
                .and_then(|e| Some((e.address()?.to_string(), e.port().unwrap_or(5432) as u16))),
            pending_class: i
                .pending_modified_values()
                .and_then(|p| p.db_instance_class())
                .map(String::from),
            tags,
        }))
    }

    async fn modify_instance_class(
        &self,
        id: &str,
        class: &str,
        apply_immediately: bool,
    ) -> Result<()> {
        self.0
            .modify_db_instance()
            .db_instance_identifier(id)
            .db_instance_class(class)
            .apply_immediately(apply_immediately)
            .send()
            .await
            .map_err(|e| dependency("rds", e))?;
        Ok(())
    }
}

use async_trait::async_trait;
use aws_sdk_elasticache::operation::describe_cache_clusters::DescribeCacheClustersError;

use super::{dependency, SdkElastiCache};
use crate::error::Result;
use crate::ports::{CacheClusterState, ElastiCache, Tags};

#[async_trait]
impl ElastiCache for SdkElastiCache {
    async fn describe_cluster(&self, id: &str) -> Result<Option<CacheClusterState>> {
        let out = match self
            .0
            .describe_cache_clusters()
            .cache_cluster_id(id)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                if matches!(
                    e.as_service_error(),
                    Some(DescribeCacheClustersError::CacheClusterNotFoundFault(_))
                ) {
                    return Ok(None);
                }
                return Err(dependency("elasticache", e));
            }
        };
        let Some(c) = out.cache_clusters().first() else {
            return Ok(None);
        };
        let arn = c.arn().map(String::from);
        // Without its tags we cannot tell whether the cluster is protected: that is an error.
        let tags: Tags = match &arn {
            Some(arn) => self
                .0
                .list_tags_for_resource()
                .resource_name(arn)
                .send()
                .await
                .map_err(|e| dependency("elasticache", e))?
                .tag_list()
                .iter()
                .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
                .collect(),
            None => Tags::new(),
        };
        Ok(Some(CacheClusterState {
            id: c.cache_cluster_id().unwrap_or(id).to_string(),
            arn,
            engine: c.engine().unwrap_or("").to_string(),
            node_type: c.cache_node_type().unwrap_or("").to_string(),
            num_nodes: c.num_cache_nodes().unwrap_or(0),
            status: c.cache_cluster_status().unwrap_or("").to_string(),
            tags,
        }))
    }

    async fn set_node_count(&self, id: &str, nodes: i32) -> Result<()> {
        self.0
            .modify_cache_cluster()
            .cache_cluster_id(id)
            .num_cache_nodes(nodes)
            .apply_immediately(true)
            .send()
            .await
            .map_err(|e| dependency("elasticache", e))?;
        Ok(())
    }

    async fn node_ids(&self, id: &str) -> Result<Vec<String>> {
        let out = match self
            .0
            .describe_cache_clusters()
            .cache_cluster_id(id)
            .show_cache_node_info(true)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                if matches!(
                    e.as_service_error(),
                    Some(DescribeCacheClustersError::CacheClusterNotFoundFault(_))
                ) {
                    return Ok(Vec::new());
                }
                return Err(dependency("elasticache", e));
            }
        };
        Ok(out
            .cache_clusters()
            .first()
            .map(|c| {
                c.cache_nodes()
                    .iter()
                    .filter_map(|n| n.cache_node_id().map(String::from))
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn remove_nodes(&self, id: &str, nodes: i32, remove: &[String]) -> Result<()> {
        self.0
            .modify_cache_cluster()
            .cache_cluster_id(id)
            .num_cache_nodes(nodes)
            .set_cache_node_ids_to_remove(Some(remove.to_vec()))
            .apply_immediately(true)
            .send()
            .await
            .map_err(|e| dependency("elasticache", e))?;
        Ok(())
    }
}

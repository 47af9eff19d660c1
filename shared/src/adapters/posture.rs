//! [`Posture`] over the SDK (issue #21): RDS, ElastiCache, EC2, Elastic Load Balancing v2,
//! CloudWatch and the Resource Groups Tagging API. STUB: filled in by the adapter work.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::AwsClients;
use crate::error::{NbaopsError, Result};
use crate::ports::{
    AddressFacts, CacheFacts, DbFacts, DbSnapshotFacts, InstanceFacts, LoadBalancerFacts, Posture,
    SecurityGroupFacts, TaggedResource, Tags, VolumeFacts,
};

pub struct SdkPosture {
    pub rds: aws_sdk_rds::Client,
    pub elasticache: aws_sdk_elasticache::Client,
    pub ec2: aws_sdk_ec2::Client,
    pub elbv2: aws_sdk_elasticloadbalancingv2::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    pub tagging: aws_sdk_resourcegroupstagging::Client,
    /// The SDK configuration, for the DR region's RDS client.
    pub conf: aws_config::SdkConfig,
}

impl SdkPosture {
    pub fn new(aws: &AwsClients) -> SdkPosture {
        SdkPosture {
            rds: aws.rds(),
            elasticache: aws.elasticache(),
            ec2: aws.ec2(),
            elbv2: aws.elbv2(),
            cloudwatch: aws.cloudwatch(),
            tagging: aws.tagging(),
            conf: aws.conf().clone(),
        }
    }
}

fn todo(op: &str) -> NbaopsError {
    NbaopsError::dependency("posture", format!("{op}: not implemented yet"))
}

#[async_trait]
impl Posture for SdkPosture {
    async fn db_instances(&self) -> Result<Vec<DbFacts>> {
        Err(todo("db_instances"))
    }
    async fn db_parameter(&self, _group: &str, _name: &str) -> Result<Option<String>> {
        Err(todo("db_parameter"))
    }
    async fn db_snapshots(&self) -> Result<Vec<DbSnapshotFacts>> {
        Err(todo("db_snapshots"))
    }
    async fn replicated_backups(&self, _region: &str) -> Result<Vec<String>> {
        Err(todo("replicated_backups"))
    }
    async fn caches(&self) -> Result<Vec<CacheFacts>> {
        Err(todo("caches"))
    }
    async fn security_groups(&self, _ids: &[String]) -> Result<Vec<SecurityGroupFacts>> {
        Err(todo("security_groups"))
    }
    async fn volumes(&self) -> Result<Vec<VolumeFacts>> {
        Err(todo("volumes"))
    }
    async fn addresses(&self) -> Result<Vec<AddressFacts>> {
        Err(todo("addresses"))
    }
    async fn instances(&self) -> Result<Vec<InstanceFacts>> {
        Err(todo("instances"))
    }
    async fn load_balancers(
        &self,
        _since: DateTime<Utc>,
        _until: DateTime<Utc>,
    ) -> Result<Vec<LoadBalancerFacts>> {
        Err(todo("load_balancers"))
    }
    async fn tagged_resources(&self, _types: &[String]) -> Result<Vec<TaggedResource>> {
        Err(todo("tagged_resources"))
    }
    async fn enable_deletion_protection(&self, _db_instance: &str) -> Result<()> {
        Err(todo("enable_deletion_protection"))
    }
    async fn add_rds_tags(&self, _arn: &str, _tags: &Tags) -> Result<()> {
        Err(todo("add_rds_tags"))
    }
}

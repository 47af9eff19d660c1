//! What posture-check reads of an account and region (issue #21), and the two fixes it may make.
//! One port over several services (RDS, ElastiCache, EC2, Elastic Load Balancing, CloudWatch, the
//! Resource Groups Tagging API): the rules (`functions/posture-check/src/rules.rs`) see plain facts,
//! never an SDK type, so each rule is unit-tested on facts and the adapter
//! (`adapters::posture::SdkPosture`) against the emulator.
//!
//! Every fact carries the resource's tags as the adapter found them (RDS `TagList`, EC2 `Tags`,
//! the Tagging API for ElastiCache and load balancers): the tag rule and the scope (the
//! environment tag) read them from here.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::Tags;
use crate::error::Result;

/// A DB instance as `DescribeDBInstances` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DbFacts {
    pub id: String,
    pub arn: String,
    pub engine: String,
    pub engine_version: String,
    pub status: String,
    pub storage_encrypted: bool,
    pub publicly_accessible: bool,
    pub deletion_protection: bool,
    pub multi_az: bool,
    pub backup_retention_days: i32,
    pub auto_minor_version_upgrade: bool,
    pub performance_insights: bool,
    /// Enhanced Monitoring interval (0: off).
    pub monitoring_interval_seconds: i32,
    /// The DB parameter groups applied (name).
    pub parameter_groups: Vec<String>,
    /// A member of an Aurora cluster (its cluster's settings decide encryption and backups).
    pub cluster: Option<String>,
    /// The instance this one replicates (a read replica has no backups of its own to judge).
    pub replica_of: Option<String>,
    pub tags: Tags,
}

/// A DB snapshot (`DescribeDBSnapshots`), with who may restore it (`DescribeDBSnapshotAttributes`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DbSnapshotFacts {
    pub id: String,
    pub arn: String,
    pub instance: String,
    /// "manual", "automated", "shared" or "public" as RDS types it.
    pub kind: String,
    pub created: Option<DateTime<Utc>>,
    pub allocated_gb: i32,
    /// The `restore` attribute holds `all`: anyone may copy or restore it.
    pub public: bool,
    pub tags: Tags,
}

/// An ElastiCache replication group or stand-alone cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CacheFacts {
    pub id: String,
    pub arn: String,
    pub engine: String,
    pub engine_version: String,
    /// `None`: the engine or version does not offer it (Memcached before 1.6.12 has no TLS, and
    /// no Memcached has encryption at rest).
    pub transit_encryption: Option<bool>,
    pub at_rest_encryption: Option<bool>,
    pub security_groups: Vec<String>,
    pub tags: Tags,
}

/// A VPC security group: the ingress rules open to the whole internet.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SecurityGroupFacts {
    pub id: String,
    pub name: String,
    /// "tcp 11211-11211" ("<protocol> <from>-<to>"), "all" (every protocol), ... for every ingress
    /// rule from 0.0.0.0/0 or ::/0.
    pub open_to_world: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct VolumeFacts {
    pub id: String,
    /// "available" (attached to nothing), "in-use", ...
    pub state: String,
    pub size_gb: i32,
    pub volume_type: String,
    pub created: Option<DateTime<Utc>>,
    pub tags: Tags,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AddressFacts {
    pub allocation_id: String,
    pub public_ip: String,
    /// Associated with an instance or a network interface.
    pub associated: bool,
    pub tags: Tags,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct InstanceFacts {
    pub id: String,
    pub state: String,
    pub instance_type: String,
    /// When it stopped (from `StateTransitionReason`, "User initiated (2026-11-02 10:00:00 GMT)").
    pub stopped_since: Option<DateTime<Utc>>,
    /// The EBS volumes still billed while it is stopped.
    pub volume_ids: Vec<String>,
    pub tags: Tags,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LoadBalancerFacts {
    pub arn: String,
    pub name: String,
    /// "application", "network", "gateway".
    pub kind: String,
    pub created: Option<DateTime<Utc>>,
    /// Requests (ALB `RequestCount`) or new flows (NLB `NewFlowCount`) over the look-back;
    /// `None`: CloudWatch has no datapoint at all.
    pub traffic: Option<f64>,
    pub tags: Tags,
}

/// A resource the Resource Groups Tagging API returns (it returns only resources that carry or
/// once carried a tag: resources never tagged come from the describe calls above).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TaggedResource {
    pub arn: String,
    pub tags: Tags,
}

#[async_trait]
pub trait Posture: Send + Sync {
    async fn db_instances(&self) -> Result<Vec<DbFacts>>;
    /// The value of `name` in DB parameter group `group` (`None`: not set in that group, the
    /// engine default applies).
    async fn db_parameter(&self, group: &str, name: &str) -> Result<Option<String>>;
    /// Manual snapshots, each with its restore attribute.
    async fn db_snapshots(&self) -> Result<Vec<DbSnapshotFacts>>;
    /// The ARNs of the source instances whose automated backups are replicated to `region`
    /// (`DescribeDBInstanceAutomatedBackups` there).
    async fn replicated_backups(&self, region: &str) -> Result<Vec<String>>;
    async fn caches(&self) -> Result<Vec<CacheFacts>>;
    async fn security_groups(&self, ids: &[String]) -> Result<Vec<SecurityGroupFacts>>;
    async fn volumes(&self) -> Result<Vec<VolumeFacts>>;
    async fn addresses(&self) -> Result<Vec<AddressFacts>>;
    async fn instances(&self) -> Result<Vec<InstanceFacts>>;
    /// Load balancers with their traffic since `since`.
    async fn load_balancers(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<LoadBalancerFacts>>;
    /// Everything the Tagging API returns for these resource type filters ("rds:db", "ec2:volume").
    async fn tagged_resources(&self, types: &[String]) -> Result<Vec<TaggedResource>>;

    /// The fix for `rds.deletion_protection`: `ModifyDBInstance --deletion-protection`.
    async fn enable_deletion_protection(&self, db_instance: &str) -> Result<()>;
    /// The fix for `tags.missing` on an RDS resource: `AddTagsToResource`.
    async fn add_rds_tags(&self, arn: &str, tags: &Tags) -> Result<()>;
}

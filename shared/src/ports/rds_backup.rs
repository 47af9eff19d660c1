//! RDS backups: the backup settings of an instance, DB snapshots in the primary and the DR
//! region, restores to a temporary instance. A port of its own (the `Rds` port stays as it is);
//! the adapter holds one client per region.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Tags;
use crate::error::Result;

/// Where a snapshot lives: the instance's own region or the disaster-recovery region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Site {
    Primary,
    Dr,
}

impl Site {
    pub fn as_str(&self) -> &'static str {
        match self {
            Site::Primary => "primary",
            Site::Dr => "dr",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotKind {
    Automated,
    Manual,
}

/// What the backup checks read of an instance (also used for the drill's temporary instance).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceBackup {
    pub id: String,
    pub arn: Option<String>,
    pub status: String,
    pub engine: String,
    /// 0 = automated backups disabled.
    pub backup_retention_days: i32,
    pub latest_restorable_time: Option<DateTime<Utc>>,
    pub endpoint: Option<(String, u16)>,
    pub tags: Tags,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DbSnapshot {
    pub id: String,
    pub arn: Option<String>,
    pub instance_id: String,
    pub kind: SnapshotKind,
    /// `creating`, `available`, `copying`, `pending`, `failed`...
    pub status: String,
    /// When the data was taken: `OriginalSnapshotCreateTime` for a copy, else `SnapshotCreateTime`.
    pub created: Option<DateTime<Utc>>,
    pub encrypted: bool,
    pub tags: Tags,
}

impl DbSnapshot {
    pub fn is_available(&self) -> bool {
        self.status == "available"
    }
    /// Still being made or copied: counts against the concurrent-copy limit in its region.
    pub fn in_flight(&self) -> bool {
        matches!(self.status.as_str(), "creating" | "copying" | "pending")
    }
}

/// Tags worth copying: AWS refuses (and reserves) keys starting with `aws:`.
pub fn copyable_tags(tags: &Tags) -> Tags {
    tags.iter()
        .filter(|(k, _)| !k.to_ascii_lowercase().starts_with("aws:"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoreRequest {
    pub snapshot_id: String,
    pub instance_id: String,
    pub instance_class: Option<String>,
    /// Where the temporary instance lives, so the function can reach it (empty: the defaults).
    pub subnet_group: Option<String>,
    pub security_groups: Vec<String>,
    pub tags: Tags,
}

#[async_trait]
pub trait RdsBackups: Send + Sync {
    /// The DR region's name (for audit records and alerts); empty when none is configured.
    fn dr_region(&self) -> &str;
    /// An instance in the primary region; `None` when it does not exist.
    async fn describe_instance(&self, id: &str) -> Result<Option<InstanceBackup>>;
    /// Snapshots of `instance` of one kind in one region, any status.
    async fn list_snapshots(
        &self,
        site: Site,
        instance: &str,
        kind: SnapshotKind,
    ) -> Result<Vec<DbSnapshot>>;
    /// A manual snapshot in the primary region.
    async fn create_snapshot(
        &self,
        instance: &str,
        snapshot_id: &str,
        tags: &Tags,
    ) -> Result<DbSnapshot>;
    /// Copies a primary-region snapshot (by ARN) into the DR region under `target_id`, with
    /// `tags` (never `aws:` ones) and, for encrypted snapshots, a KMS key of the DR region.
    async fn copy_to_dr(
        &self,
        source_arn: &str,
        target_id: &str,
        tags: &Tags,
        kms_key_id: Option<&str>,
    ) -> Result<DbSnapshot>;
    async fn delete_snapshot(&self, site: Site, snapshot_id: &str) -> Result<()>;
    /// Starts a restore of a primary-region snapshot into a new instance.
    async fn restore_instance(&self, req: &RestoreRequest) -> Result<()>;
    /// Deletes an instance without a final snapshot (the drill's temporary instance only).
    async fn delete_instance(&self, id: &str) -> Result<()>;
}

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

/// Where an instance's automated backups stand in the DR region, from the `Status` of its
/// replicated automated backup there (`DescribeDBInstanceAutomatedBackups` in the DR region:
/// `pending` until RDS holds the first automated snapshot, `replicating` after, `retained` once
/// replication is stopped or the source deleted;
/// https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_DescribeDBInstanceAutomatedBackups.html,
/// https://docs.aws.amazon.com/cli/latest/reference/rds/stop-db-instance-automated-backups-replication.html).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Replication {
    /// `replicating` (or `active`): snapshots and transaction logs arrive in the DR region.
    Replicating,
    /// `pending` (or `creating`): started, no automated snapshot there yet.
    Starting,
    /// `retained` or anything else: nothing new arrives; replication has to be started (again).
    Stopped,
}

/// The one definition of "replicated" (backup-guard's RPO check and posture-check's
/// `rds.dr_replication` both read it): replicating or starting counts, anything else does not.
pub fn replication_of(status: &str) -> Replication {
    match status.to_ascii_lowercase().as_str() {
        "replicating" | "active" => Replication::Replicating,
        "pending" | "creating" => Replication::Starting,
        _ => Replication::Stopped,
    }
}

/// One automated backup as the DR region lists it: `DBInstanceArn` is the source instance's ARN
/// (in the primary region), `RestoreWindow.LatestTime` the DR region's recovery point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicatedBackup {
    /// `DBInstanceArn`: the source instance (empty when the answer names none).
    pub source_arn: String,
    pub instance_id: String,
    pub status: String,
    /// `RestoreWindow.LatestTime`.
    pub latest_restorable_time: Option<DateTime<Utc>>,
    /// `DBInstanceAutomatedBackupsArn` (`arn:aws:rds:<dr>:<account>:auto-backup:ab-...`).
    pub arn: Option<String>,
}

impl ReplicatedBackup {
    pub fn replication(&self) -> Replication {
        replication_of(&self.status)
    }
    /// Replicating or starting: what both backup-guard and posture-check call "replicated".
    pub fn replicates(&self) -> bool {
        self.replication() != Replication::Stopped
    }
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
    /// The automated backups the DR region holds of the instance `source_arn`
    /// (`DescribeDBInstanceAutomatedBackups` in the DR region, every page, matched on
    /// `DBInstanceArn`), any status.
    async fn replicated_backups(&self, source_arn: &str) -> Result<Vec<ReplicatedBackup>>;
    /// Starts replicating the instance's automated backups into the DR region
    /// (`StartDBInstanceAutomatedBackupsReplication`, called in the DR region), kept
    /// `retention_days` there, encrypted with `kms_key_id` (a key of the DR region) when the
    /// source is encrypted.
    async fn start_replication(
        &self,
        source_arn: &str,
        retention_days: i32,
        kms_key_id: Option<&str>,
    ) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicated_means_replicating_or_starting() {
        assert_eq!(replication_of("replicating"), Replication::Replicating);
        assert_eq!(replication_of("Replicating"), Replication::Replicating);
        assert_eq!(replication_of("pending"), Replication::Starting);
        assert_eq!(replication_of("retained"), Replication::Stopped);
        assert_eq!(replication_of(""), Replication::Stopped);
        let b = |status: &str| ReplicatedBackup {
            source_arn: "arn:aws:rds:us-east-1:123456789012:db:db".into(),
            instance_id: "db".into(),
            status: status.into(),
            latest_restorable_time: None,
            arn: None,
        };
        assert!(b("replicating").replicates() && b("pending").replicates());
        assert!(!b("retained").replicates());
    }
}

//! In-memory [`RdsBackups`]: two regions, a mutation log, and knobs for what the emulator cannot
//! do (a copy that fails, copies that stay `copying`, a restore that stays `creating`).

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::lock;
use crate::error::{NbaopsError, Result};
use crate::ports::{
    copyable_tags, DbSnapshot, InstanceBackup, RdsBackups, ReplicatedBackup, RestoreRequest, Site,
    SnapshotKind, Tags,
};

pub struct FakeRdsBackups {
    pub dr_region: String,
    pub instances: Mutex<BTreeMap<String, InstanceBackup>>,
    pub snapshots: Mutex<BTreeMap<(Site, String), DbSnapshot>>,
    pub mutations: Mutex<Vec<String>>,
    /// The next this-many copies fail (then copies succeed again).
    pub fail_copies: Mutex<u32>,
    /// Status of a new copy in the DR region (`available`, or `copying` to hold a slot).
    pub copy_status: Mutex<String>,
    /// Status of a freshly restored instance.
    pub restore_status: Mutex<String>,
    /// The time new snapshots are stamped with.
    pub now: Mutex<DateTime<Utc>>,
    /// Instances whose describe fails (RDS answering an error), every time.
    pub fail_describe: Mutex<Vec<String>>,
    /// Every instance described, in order.
    pub described: Mutex<Vec<String>>,
    /// The DR region's automated backups (`DescribeDBInstanceAutomatedBackups` there).
    pub replicated: Mutex<Vec<ReplicatedBackup>>,
    /// The DR region's describe fails (unreadable), every time.
    pub fail_replicated: Mutex<bool>,
    /// The next this-many replication starts fail (then they succeed again).
    pub fail_starts: Mutex<u32>,
}

impl FakeRdsBackups {
    pub fn new(dr_region: &str, now: DateTime<Utc>) -> Self {
        FakeRdsBackups {
            dr_region: dr_region.into(),
            instances: Mutex::default(),
            snapshots: Mutex::default(),
            mutations: Mutex::default(),
            fail_copies: Mutex::new(0),
            copy_status: Mutex::new("available".into()),
            restore_status: Mutex::new("creating".into()),
            now: Mutex::new(now),
            fail_describe: Mutex::default(),
            described: Mutex::default(),
            replicated: Mutex::default(),
            fail_replicated: Mutex::new(false),
            fail_starts: Mutex::new(0),
        }
    }

    pub fn with_instance(self, i: InstanceBackup) -> Self {
        lock(&self.instances).insert(i.id.clone(), i);
        self
    }

    pub fn add_snapshot(&self, site: Site, s: DbSnapshot) {
        lock(&self.snapshots).insert((site, s.id.clone()), s);
    }

    pub fn snapshot(&self, site: Site, id: &str) -> Option<DbSnapshot> {
        lock(&self.snapshots).get(&(site, id.to_string())).cloned()
    }

    pub fn set_instance_status(&self, id: &str, status: &str) {
        if let Some(i) = lock(&self.instances).get_mut(id) {
            i.status = status.into();
        }
    }

    pub fn mutations(&self) -> Vec<String> {
        lock(&self.mutations).clone()
    }

    fn log(&self, m: String) {
        lock(&self.mutations).push(m);
    }
}

/// A snapshot as the fake's tests usually need one.
pub fn fake_snapshot(
    id: &str,
    instance: &str,
    kind: SnapshotKind,
    created: DateTime<Utc>,
) -> DbSnapshot {
    DbSnapshot {
        id: id.into(),
        arn: Some(format!("arn:aws:rds:us-east-1:123456789012:snapshot:{id}")),
        instance_id: instance.into(),
        kind,
        status: "available".into(),
        created: Some(created),
        encrypted: false,
        tags: Tags::new(),
    }
}

#[async_trait]
impl RdsBackups for FakeRdsBackups {
    fn dr_region(&self) -> &str {
        &self.dr_region
    }

    async fn describe_instance(&self, id: &str) -> Result<Option<InstanceBackup>> {
        lock(&self.described).push(id.to_string());
        if lock(&self.fail_describe).iter().any(|i| i == id) {
            return Err(NbaopsError::dependency(
                "rds",
                format!("DescribeDBInstances {id}: InternalFailure (fake)"),
            ));
        }
        Ok(lock(&self.instances).get(id).cloned())
    }

    async fn list_snapshots(
        &self,
        site: Site,
        instance: &str,
        kind: SnapshotKind,
    ) -> Result<Vec<DbSnapshot>> {
        Ok(lock(&self.snapshots)
            .iter()
            .filter(|((s, _), v)| *s == site && v.instance_id == instance && v.kind == kind)
            .map(|(_, v)| v.clone())
            .collect())
    }

    async fn create_snapshot(
        &self,
        instance: &str,
        snapshot_id: &str,
        tags: &Tags,
    ) -> Result<DbSnapshot> {
        if !lock(&self.instances).contains_key(instance) {
            return Err(NbaopsError::NotFound(instance.into()));
        }
        let key = (Site::Primary, snapshot_id.to_string());
        if lock(&self.snapshots).contains_key(&key) {
            return Err(NbaopsError::Dependency {
                service: "rds",
                message: format!("DBSnapshotAlreadyExists: {snapshot_id}"),
                retryable: false,
            });
        }
        let mut s = fake_snapshot(
            snapshot_id,
            instance,
            SnapshotKind::Manual,
            *lock(&self.now),
        );
        s.tags = tags.clone();
        lock(&self.snapshots).insert(key, s.clone());
        self.log(format!("create_snapshot {instance} {snapshot_id}"));
        Ok(s)
    }

    async fn copy_to_dr(
        &self,
        source_arn: &str,
        target_id: &str,
        tags: &Tags,
        kms_key_id: Option<&str>,
    ) -> Result<DbSnapshot> {
        {
            let mut fail = lock(&self.fail_copies);
            if *fail > 0 {
                *fail -= 1;
                return Err(NbaopsError::Dependency {
                    service: "rds",
                    message: "KMSKeyNotAccessibleFault: fake copy failure".into(),
                    retryable: false,
                });
            }
        }
        let source = lock(&self.snapshots)
            .values()
            .find(|s| s.arn.as_deref() == Some(source_arn))
            .cloned()
            .ok_or_else(|| NbaopsError::NotFound(source_arn.into()))?;
        let key = (Site::Dr, target_id.to_string());
        if lock(&self.snapshots).contains_key(&key) {
            return Err(NbaopsError::Dependency {
                service: "rds",
                message: format!("DBSnapshotAlreadyExists: {target_id}"),
                retryable: false,
            });
        }
        let copy = DbSnapshot {
            id: target_id.into(),
            arn: Some(format!(
                "arn:aws:rds:{}:123456789012:snapshot:{target_id}",
                self.dr_region
            )),
            status: lock(&self.copy_status).clone(),
            tags: copyable_tags(tags),
            ..source
        };
        lock(&self.snapshots).insert(key, copy.clone());
        self.log(format!(
            "copy_to_dr {target_id} kms={}",
            kms_key_id.unwrap_or("-")
        ));
        Ok(copy)
    }

    async fn delete_snapshot(&self, site: Site, snapshot_id: &str) -> Result<()> {
        lock(&self.snapshots).remove(&(site, snapshot_id.to_string()));
        self.log(format!("delete_snapshot {} {snapshot_id}", site.as_str()));
        Ok(())
    }

    async fn restore_instance(&self, req: &RestoreRequest) -> Result<()> {
        let known = lock(&self.snapshots).contains_key(&(Site::Primary, req.snapshot_id.clone()));
        if !known {
            return Err(NbaopsError::NotFound(req.snapshot_id.clone()));
        }
        let i = InstanceBackup {
            id: req.instance_id.clone(),
            arn: None,
            status: lock(&self.restore_status).clone(),
            engine: "postgres".into(),
            backup_retention_days: 0,
            latest_restorable_time: None,
            endpoint: Some((format!("{}.fake.rds", req.instance_id), 5432)),
            tags: req.tags.clone(),
        };
        lock(&self.instances).insert(i.id.clone(), i);
        self.log(format!(
            "restore_instance {} from {}",
            req.instance_id, req.snapshot_id
        ));
        Ok(())
    }

    async fn delete_instance(&self, id: &str) -> Result<()> {
        lock(&self.instances).remove(id);
        self.log(format!("delete_instance {id}"));
        Ok(())
    }

    async fn replicated_backups(&self, source_arn: &str) -> Result<Vec<ReplicatedBackup>> {
        if *lock(&self.fail_replicated) {
            return Err(NbaopsError::dependency(
                "rds",
                format!(
                    "DescribeDBInstanceAutomatedBackups in {}: AccessDenied (fake)",
                    self.dr_region
                ),
            ));
        }
        Ok(lock(&self.replicated)
            .iter()
            .filter(|b| b.source_arn == source_arn)
            .cloned()
            .collect())
    }

    async fn start_replication(
        &self,
        source_arn: &str,
        retention_days: i32,
        kms_key_id: Option<&str>,
    ) -> Result<()> {
        {
            let mut fail = lock(&self.fail_starts);
            if *fail > 0 {
                *fail -= 1;
                return Err(NbaopsError::Dependency {
                    service: "rds",
                    message: "KMSKeyNotAccessibleFault: fake replication start failure".into(),
                    retryable: false,
                });
            }
        }
        let instance_id = source_arn.rsplit(':').next().unwrap_or("").to_string();
        lock(&self.replicated).push(ReplicatedBackup {
            source_arn: source_arn.into(),
            instance_id,
            status: "pending".into(),
            latest_restorable_time: None,
            arn: Some(format!(
                "arn:aws:rds:{}:123456789012:auto-backup:ab-fake",
                self.dr_region
            )),
        });
        self.log(format!(
            "start_replication {source_arn} retention={retention_days} kms={}",
            kms_key_id.unwrap_or("-")
        ));
        Ok(())
    }
}

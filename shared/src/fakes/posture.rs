//! In-memory [`Posture`]: the facts a test sets, the sources it makes fail, and a log of the fixes
//! (which change the facts as AWS would, so the next run sees them fixed).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{lock, Shared};
use crate::error::{NbaopsError, Result};
use crate::ports::{
    AddressFacts, CacheFacts, DbFacts, DbSnapshotFacts, InstanceFacts, LoadBalancerFacts, Posture,
    SecurityGroupFacts, TaggedResource, Tags, VolumeFacts,
};

#[derive(Default)]
pub struct FakePosture {
    pub dbs: Mutex<Vec<DbFacts>>,
    /// (parameter group, parameter) -> value.
    pub params: Mutex<BTreeMap<(String, String), String>>,
    pub snapshots: Mutex<Vec<DbSnapshotFacts>>,
    /// DR region -> source instance ARNs replicated there.
    pub replicated: Mutex<BTreeMap<String, Vec<String>>>,
    pub caches: Mutex<Vec<CacheFacts>>,
    pub groups: Mutex<Vec<SecurityGroupFacts>>,
    pub volumes: Mutex<Vec<VolumeFacts>>,
    pub addresses: Mutex<Vec<AddressFacts>>,
    pub instances: Mutex<Vec<InstanceFacts>>,
    pub load_balancers: Mutex<Vec<LoadBalancerFacts>>,
    pub tagged: Mutex<Vec<TaggedResource>>,
    /// Methods that fail ("db_instances", "volumes", "enable_deletion_protection", ...).
    pub failing: Mutex<BTreeSet<String>>,
    /// The fixes made: "deletion_protection <id>", "tags <arn> k=v,...".
    pub log: Mutex<Vec<String>>,
    /// Every `db_parameter` call: (group, parameter).
    pub param_reads: Mutex<Vec<(String, String)>>,
}

impl FakePosture {
    fn check(&self, method: &str) -> Result<()> {
        if lock(&self.failing).contains(method) {
            return Err(NbaopsError::dependency(
                "posture",
                format!("{method}: injected failure"),
            ));
        }
        Ok(())
    }

    pub fn fail(&self, method: &str) {
        lock(&self.failing).insert(method.to_string());
    }

    pub fn heal(&self) {
        lock(&self.failing).clear();
    }
}

#[async_trait]
impl Posture for FakePosture {
    async fn db_instances(&self) -> Result<Vec<DbFacts>> {
        self.check("db_instances")?;
        Ok(lock(&self.dbs).clone())
    }
    async fn db_parameter(&self, group: &str, name: &str) -> Result<Option<String>> {
        self.check("db_parameter")?;
        lock(&self.param_reads).push((group.to_string(), name.to_string()));
        Ok(lock(&self.params)
            .get(&(group.to_string(), name.to_string()))
            .cloned())
    }
    async fn db_snapshots(&self) -> Result<Vec<DbSnapshotFacts>> {
        self.check("db_snapshots")?;
        Ok(lock(&self.snapshots).clone())
    }
    async fn replicated_backups(&self, region: &str) -> Result<Vec<String>> {
        self.check("replicated_backups")?;
        Ok(lock(&self.replicated)
            .get(region)
            .cloned()
            .unwrap_or_default())
    }
    async fn caches(&self) -> Result<Vec<CacheFacts>> {
        self.check("caches")?;
        Ok(lock(&self.caches).clone())
    }
    async fn security_groups(&self, ids: &[String]) -> Result<Vec<SecurityGroupFacts>> {
        self.check("security_groups")?;
        Ok(lock(&self.groups)
            .iter()
            .filter(|g| ids.contains(&g.id))
            .cloned()
            .collect())
    }
    async fn volumes(&self) -> Result<Vec<VolumeFacts>> {
        self.check("volumes")?;
        Ok(lock(&self.volumes).clone())
    }
    async fn addresses(&self) -> Result<Vec<AddressFacts>> {
        self.check("addresses")?;
        Ok(lock(&self.addresses).clone())
    }
    async fn instances(&self) -> Result<Vec<InstanceFacts>> {
        self.check("instances")?;
        Ok(lock(&self.instances).clone())
    }
    async fn load_balancers(
        &self,
        _since: DateTime<Utc>,
        _until: DateTime<Utc>,
    ) -> Result<Vec<LoadBalancerFacts>> {
        self.check("load_balancers")?;
        Ok(lock(&self.load_balancers).clone())
    }
    async fn tagged_resources(&self, _types: &[String]) -> Result<Vec<TaggedResource>> {
        self.check("tagged_resources")?;
        Ok(lock(&self.tagged).clone())
    }
    async fn enable_deletion_protection(&self, db_instance: &str) -> Result<()> {
        self.check("enable_deletion_protection")?;
        let mut dbs = lock(&self.dbs);
        let Some(db) = dbs.iter_mut().find(|d| d.id == db_instance) else {
            return Err(NbaopsError::NotFound(format!("DB instance {db_instance}")));
        };
        db.deletion_protection = true;
        lock(&self.log).push(format!("deletion_protection {db_instance}"));
        Ok(())
    }
    async fn add_rds_tags(&self, arn: &str, tags: &Tags) -> Result<()> {
        self.check("add_rds_tags")?;
        let mut dbs = lock(&self.dbs);
        if let Some(db) = dbs.iter_mut().find(|d| d.arn == arn) {
            db.tags.extend(tags.clone());
        } else {
            drop(dbs);
            let mut snaps = lock(&self.snapshots);
            let Some(s) = snaps.iter_mut().find(|s| s.arn == arn) else {
                return Err(NbaopsError::NotFound(format!("RDS resource {arn}")));
            };
            s.tags.extend(tags.clone());
        }
        let kv: Vec<String> = tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        lock(&self.log).push(format!("tags {arn} {}", kv.join(",")));
        Ok(())
    }
}

#[async_trait]
impl<T: Posture> Posture for Shared<T> {
    async fn db_instances(&self) -> Result<Vec<DbFacts>> {
        self.0.db_instances().await
    }
    async fn db_parameter(&self, g: &str, n: &str) -> Result<Option<String>> {
        self.0.db_parameter(g, n).await
    }
    async fn db_snapshots(&self) -> Result<Vec<DbSnapshotFacts>> {
        self.0.db_snapshots().await
    }
    async fn replicated_backups(&self, r: &str) -> Result<Vec<String>> {
        self.0.replicated_backups(r).await
    }
    async fn caches(&self) -> Result<Vec<CacheFacts>> {
        self.0.caches().await
    }
    async fn security_groups(&self, ids: &[String]) -> Result<Vec<SecurityGroupFacts>> {
        self.0.security_groups(ids).await
    }
    async fn volumes(&self) -> Result<Vec<VolumeFacts>> {
        self.0.volumes().await
    }
    async fn addresses(&self) -> Result<Vec<AddressFacts>> {
        self.0.addresses().await
    }
    async fn instances(&self) -> Result<Vec<InstanceFacts>> {
        self.0.instances().await
    }
    async fn load_balancers(
        &self,
        s: DateTime<Utc>,
        u: DateTime<Utc>,
    ) -> Result<Vec<LoadBalancerFacts>> {
        self.0.load_balancers(s, u).await
    }
    async fn tagged_resources(&self, t: &[String]) -> Result<Vec<TaggedResource>> {
        self.0.tagged_resources(t).await
    }
    async fn enable_deletion_protection(&self, id: &str) -> Result<()> {
        self.0.enable_deletion_protection(id).await
    }
    async fn add_rds_tags(&self, arn: &str, tags: &Tags) -> Result<()> {
        self.0.add_rds_tags(arn, tags).await
    }
}

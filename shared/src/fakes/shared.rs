//! `Shared(&fake)`: hands a leaked fake to `Deps` (which owns boxed ports) while the test keeps
//! a reference to inspect its mutation log. Every port forwards, so one wrapper serves all tests.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use crate::error::Result;
use crate::ports::*;

/// A `'static` reference to a fake, usable wherever a port is expected.
pub struct Shared<T: 'static>(pub &'static T);

/// Leaks a value for the life of the test process (what `serve` does with `Deps` too).
pub fn leak<T>(t: T) -> &'static T {
    Box::leak(Box::new(t))
}

#[async_trait]
impl<T: AutoScaling> AutoScaling for Shared<T> {
    async fn describe_group(&self, n: &str) -> Result<Option<GroupState>> {
        self.0.describe_group(n).await
    }
    async fn set_desired_capacity(&self, n: &str, d: i32) -> Result<()> {
        self.0.set_desired_capacity(n, d).await
    }
    async fn update_group_size(&self, n: &str, a: i32, b: i32, c: i32) -> Result<()> {
        self.0.update_group_size(n, a, b, c).await
    }
}

#[async_trait]
impl<T: Rds> Rds for Shared<T> {
    async fn describe_instance(&self, id: &str) -> Result<Option<DbInstanceState>> {
        self.0.describe_instance(id).await
    }
    async fn modify_instance_class(&self, id: &str, c: &str, i: bool) -> Result<()> {
        self.0.modify_instance_class(id, c, i).await
    }
}

#[async_trait]
impl<T: ElastiCache> ElastiCache for Shared<T> {
    async fn describe_cluster(&self, id: &str) -> Result<Option<CacheClusterState>> {
        self.0.describe_cluster(id).await
    }
    async fn set_node_count(&self, id: &str, n: i32) -> Result<()> {
        self.0.set_node_count(id, n).await
    }
    async fn node_ids(&self, id: &str) -> Result<Vec<String>> {
        self.0.node_ids(id).await
    }
    async fn remove_nodes(&self, id: &str, n: i32, remove: &[String]) -> Result<()> {
        self.0.remove_nodes(id, n, remove).await
    }
}

#[async_trait]
impl<T: Notifier> Notifier for Shared<T> {
    async fn publish(
        &self,
        t: &str,
        s: &str,
        m: &str,
        a: &BTreeMap<String, String>,
    ) -> Result<String> {
        self.0.publish(t, s, m, a).await
    }
}

#[async_trait]
impl<T: Params> Params for Shared<T> {
    async fn get_by_path(&self, prefix: &str) -> Result<BTreeMap<String, String>> {
        self.0.get_by_path(prefix).await
    }
    async fn get(&self, name: &str) -> Result<Option<String>> {
        self.0.get(name).await
    }
}

#[async_trait]
impl<T: Ledger> Ledger for Shared<T> {
    async fn put_if_absent(&self, pk: &str, sk: &str, d: &Value, e: i64) -> Result<bool> {
        self.0.put_if_absent(pk, sk, d, e).await
    }
    async fn put(&self, pk: &str, sk: &str, d: &Value, e: Option<i64>) -> Result<()> {
        self.0.put(pk, sk, d, e).await
    }
    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Value>> {
        self.0.get(pk, sk).await
    }
    async fn delete(&self, pk: &str, sk: &str) -> Result<()> {
        self.0.delete(pk, sk).await
    }
    async fn query(&self, pk: &str, p: &str) -> Result<Vec<(String, Value)>> {
        self.0.query(pk, p).await
    }
    async fn write_all(&self, w: &[LedgerWrite]) -> Result<Option<usize>> {
        self.0.write_all(w).await
    }
    async fn put_on_day(
        &self,
        pk: &str,
        sk: &str,
        d: &Value,
        e: Option<i64>,
        day: &str,
    ) -> Result<()> {
        self.0.put_on_day(pk, sk, d, e, day).await
    }
    async fn query_day(&self, day: &str) -> Result<Vec<DayItem>> {
        self.0.query_day(day).await
    }
}

#[async_trait]
impl<T: CostExplorer> CostExplorer for Shared<T> {
    async fn daily_cost(&self, q: &CostQuery) -> Result<Vec<DailyCost>> {
        self.0.daily_cost(q).await
    }
}

#[async_trait]
impl<T: DeadLetter> DeadLetter for Shared<T> {
    async fn send(&self, queue_url: &str, body: &str) -> Result<String> {
        self.0.send(queue_url, body).await
    }
}

#[async_trait]
impl<T: WorkQueue> WorkQueue for Shared<T> {
    async fn send_batch(
        &self,
        queue_url: &str,
        entries: &[(String, String)],
    ) -> Result<Vec<(String, String)>> {
        self.0.send_batch(queue_url, entries).await
    }
}

#[async_trait]
impl<T: HttpPost> HttpPost for Shared<T> {
    async fn post_json(&self, url: &str, body: &Value, timeout: Duration) -> Result<HttpReply> {
        self.0.post_json(url, body, timeout).await
    }
}

#[async_trait]
impl<T: PgConnector> PgConnector for Shared<T> {
    async fn connect(&self, url: &str, password: Option<&str>) -> Result<Box<dyn Postgres>> {
        self.0.connect(url, password).await
    }
}

#[async_trait]
impl<T: RdsPower> RdsPower for Shared<T> {
    async fn stop_instance(&self, id: &str) -> Result<()> {
        self.0.stop_instance(id).await
    }
    async fn start_instance(&self, id: &str) -> Result<()> {
        self.0.start_instance(id).await
    }
}

#[async_trait]
impl<T: RdsBackups> RdsBackups for Shared<T> {
    fn dr_region(&self) -> &str {
        self.0.dr_region()
    }
    async fn describe_instance(&self, id: &str) -> Result<Option<InstanceBackup>> {
        self.0.describe_instance(id).await
    }
    async fn list_snapshots(
        &self,
        site: Site,
        instance: &str,
        kind: SnapshotKind,
    ) -> Result<Vec<DbSnapshot>> {
        self.0.list_snapshots(site, instance, kind).await
    }
    async fn create_snapshot(
        &self,
        instance: &str,
        snapshot_id: &str,
        tags: &Tags,
    ) -> Result<DbSnapshot> {
        self.0.create_snapshot(instance, snapshot_id, tags).await
    }
    async fn copy_to_dr(
        &self,
        source_arn: &str,
        target_id: &str,
        tags: &Tags,
        kms_key_id: Option<&str>,
    ) -> Result<DbSnapshot> {
        self.0
            .copy_to_dr(source_arn, target_id, tags, kms_key_id)
            .await
    }
    async fn delete_snapshot(&self, site: Site, snapshot_id: &str) -> Result<()> {
        self.0.delete_snapshot(site, snapshot_id).await
    }
    async fn restore_instance(&self, req: &RestoreRequest) -> Result<()> {
        self.0.restore_instance(req).await
    }
    async fn delete_instance(&self, id: &str) -> Result<()> {
        self.0.delete_instance(id).await
    }
    async fn replicated_backups(&self, source_arn: &str) -> Result<Vec<ReplicatedBackup>> {
        self.0.replicated_backups(source_arn).await
    }
    async fn start_replication(
        &self,
        source_arn: &str,
        retention_days: i32,
        kms_key_id: Option<&str>,
    ) -> Result<()> {
        self.0
            .start_replication(source_arn, retention_days, kms_key_id)
            .await
    }
}

#[async_trait]
impl<T: Inventory> Inventory for Shared<T> {
    async fn list_groups_with_tag(&self, key: &str) -> Result<Vec<GroupState>> {
        self.0.list_groups_with_tag(key).await
    }
    async fn list_db_instances_with_tag(&self, key: &str) -> Result<Vec<DbInstanceState>> {
        self.0.list_db_instances_with_tag(key).await
    }
}

#[async_trait]
impl<T: CloudWatch> CloudWatch for Shared<T> {
    async fn describe_alarm(&self, name: &str) -> Result<Option<MetricAlarm>> {
        self.0.describe_alarm(name).await
    }
    async fn alarms_in_state(&self, state: &str) -> Result<Vec<MetricAlarm>> {
        self.0.alarms_in_state(state).await
    }
    async fn alarms_for_metric(
        &self,
        namespace: &str,
        metric: &str,
        dimensions: &BTreeMap<String, String>,
    ) -> Result<Vec<MetricAlarm>> {
        self.0
            .alarms_for_metric(namespace, metric, dimensions)
            .await
    }
    async fn set_alarm_threshold(&self, name: &str, threshold: f64) -> Result<()> {
        self.0.set_alarm_threshold(name, threshold).await
    }
    async fn statistics(
        &self,
        q: &MetricQuery,
    ) -> Result<Vec<(chrono::DateTime<chrono::Utc>, f64)>> {
        self.0.statistics(q).await
    }
}

#[async_trait]
impl<T: Scheduler> Scheduler for Shared<T> {
    async fn create_once(&self, s: &OneTimeSchedule) -> Result<bool> {
        self.0.create_once(s).await
    }
    async fn delete(&self, group: &str, name: &str) -> Result<bool> {
        self.0.delete(group, name).await
    }
}

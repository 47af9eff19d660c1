//! In-memory fakes of every port, for unit tests of the domain and of the functions. They keep a
//! log of mutations so a test can assert "zero mutations". The contract tests in `tests/` run the
//! same assertions against these fakes and against the emulator-backed adapters.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use serde_json::Value;

use crate::error::{NbaopsError, Result};
use crate::ports::*;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Default)]
pub struct FakeAutoScaling {
    pub groups: Mutex<BTreeMap<String, GroupState>>,
    pub mutations: Mutex<Vec<String>>,
}

impl FakeAutoScaling {
    pub fn with(groups: Vec<GroupState>) -> Self {
        let f = FakeAutoScaling::default();
        for g in groups {
            lock(&f.groups).insert(g.name.clone(), g);
        }
        f
    }
    pub fn mutations(&self) -> Vec<String> {
        lock(&self.mutations).clone()
    }
}

#[async_trait]
impl AutoScaling for FakeAutoScaling {
    async fn describe_group(&self, name: &str) -> Result<Option<GroupState>> {
        Ok(lock(&self.groups).get(name).cloned())
    }
    async fn set_desired_capacity(&self, name: &str, desired: i32) -> Result<()> {
        let mut groups = lock(&self.groups);
        let g = groups
            .get_mut(name)
            .ok_or_else(|| NbaopsError::NotFound(name.into()))?;
        // Real AWS refuses this; the fake does too, unlike the emulator.
        if desired > g.max_size || desired < g.min_size {
            return Err(NbaopsError::Dependency {
                service: "autoscaling",
                message: format!("desired {desired} outside [{}, {}]", g.min_size, g.max_size),
                retryable: false,
            });
        }
        g.desired = desired;
        lock(&self.mutations).push(format!("set_desired_capacity {name} {desired}"));
        Ok(())
    }
    async fn update_group_size(&self, name: &str, min: i32, max: i32, desired: i32) -> Result<()> {
        let mut groups = lock(&self.groups);
        let g = groups
            .get_mut(name)
            .ok_or_else(|| NbaopsError::NotFound(name.into()))?;
        g.min_size = min;
        g.max_size = max;
        g.desired = desired;
        lock(&self.mutations).push(format!("update_group_size {name} {min} {max} {desired}"));
        Ok(())
    }
}

#[derive(Default)]
pub struct FakeRds {
    pub instances: Mutex<BTreeMap<String, DbInstanceState>>,
    pub mutations: Mutex<Vec<String>>,
}

impl FakeRds {
    pub fn with(instances: Vec<DbInstanceState>) -> Self {
        let f = FakeRds::default();
        for i in instances {
            lock(&f.instances).insert(i.id.clone(), i);
        }
        f
    }
    pub fn mutations(&self) -> Vec<String> {
        lock(&self.mutations).clone()
    }
}

#[async_trait]
impl Rds for FakeRds {
    async fn describe_instance(&self, id: &str) -> Result<Option<DbInstanceState>> {
        Ok(lock(&self.instances).get(id).cloned())
    }
    async fn modify_instance_class(
        &self,
        id: &str,
        class: &str,
        apply_immediately: bool,
    ) -> Result<()> {
        let mut all = lock(&self.instances);
        let i = all
            .get_mut(id)
            .ok_or_else(|| NbaopsError::NotFound(id.into()))?;
        if apply_immediately {
            i.class = class.into();
            i.status = "modifying".into();
        } else {
            i.pending_class = Some(class.into());
        }
        lock(&self.mutations).push(format!(
            "modify_instance_class {id} {class} immediate={apply_immediately}"
        ));
        Ok(())
    }
}

#[derive(Default)]
pub struct FakeElastiCache {
    pub clusters: Mutex<BTreeMap<String, CacheClusterState>>,
    pub mutations: Mutex<Vec<String>>,
}

impl FakeElastiCache {
    pub fn with(clusters: Vec<CacheClusterState>) -> Self {
        let f = FakeElastiCache::default();
        for c in clusters {
            lock(&f.clusters).insert(c.id.clone(), c);
        }
        f
    }
    pub fn mutations(&self) -> Vec<String> {
        lock(&self.mutations).clone()
    }
}

#[async_trait]
impl ElastiCache for FakeElastiCache {
    async fn describe_cluster(&self, id: &str) -> Result<Option<CacheClusterState>> {
        Ok(lock(&self.clusters).get(id).cloned())
    }
    async fn set_node_count(&self, id: &str, nodes: i32) -> Result<()> {
        let mut all = lock(&self.clusters);
        let c = all
            .get_mut(id)
            .ok_or_else(|| NbaopsError::NotFound(id.into()))?;
        c.num_nodes = nodes;
        lock(&self.mutations).push(format!("set_node_count {id} {nodes}"));
        Ok(())
    }
    /// 0001..000n, as ElastiCache numbers a cluster's first nodes.
    async fn node_ids(&self, id: &str) -> Result<Vec<String>> {
        Ok(lock(&self.clusters)
            .get(id)
            .map(|c| (1..=c.num_nodes).map(|n| format!("{n:04}")).collect())
            .unwrap_or_default())
    }
    async fn remove_nodes(&self, id: &str, nodes: i32, remove: &[String]) -> Result<()> {
        let mut all = lock(&self.clusters);
        let c = all
            .get_mut(id)
            .ok_or_else(|| NbaopsError::NotFound(id.into()))?;
        if c.num_nodes - remove.len() as i32 != nodes {
            return Err(NbaopsError::Dependency {
                service: "elasticache",
                message: format!(
                    "InvalidParameterValue: {} nodes less {} removed is not {nodes}",
                    c.num_nodes,
                    remove.len()
                ),
                retryable: false,
            });
        }
        c.num_nodes = nodes;
        lock(&self.mutations).push(format!("remove_nodes {id} {nodes} {}", remove.join(",")));
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    pub topic_arn: String,
    pub subject: String,
    pub message: String,
    pub attributes: BTreeMap<String, String>,
}

#[derive(Default)]
pub struct FakeNotifier {
    pub published: Mutex<Vec<Published>>,
}

impl FakeNotifier {
    pub fn published(&self) -> Vec<Published> {
        lock(&self.published).clone()
    }
}

#[async_trait]
impl Notifier for FakeNotifier {
    async fn publish(
        &self,
        topic_arn: &str,
        subject: &str,
        message: &str,
        attributes: &BTreeMap<String, String>,
    ) -> Result<String> {
        let mut p = lock(&self.published);
        p.push(Published {
            topic_arn: topic_arn.into(),
            subject: subject.into(),
            message: message.into(),
            attributes: attributes.clone(),
        });
        Ok(format!("fake-{}", p.len()))
    }
}

#[derive(Default)]
pub struct FakeParams {
    pub values: Mutex<BTreeMap<String, String>>,
    pub fail: Mutex<bool>,
}

impl FakeParams {
    pub fn with(pairs: &[(&str, &str)]) -> Self {
        let f = FakeParams::default();
        for (k, v) in pairs {
            lock(&f.values).insert(k.to_string(), v.to_string());
        }
        f
    }
    pub fn set(&self, k: &str, v: &str) {
        lock(&self.values).insert(k.into(), v.into());
    }
}

#[async_trait]
impl Params for FakeParams {
    async fn get_by_path(&self, prefix: &str) -> Result<BTreeMap<String, String>> {
        if *lock(&self.fail) {
            return Err(NbaopsError::dependency("ssm", "fake outage"));
        }
        Ok(lock(&self.values)
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
    async fn get(&self, name: &str) -> Result<Option<String>> {
        if *lock(&self.fail) {
            return Err(NbaopsError::dependency("ssm", "fake outage"));
        }
        Ok(lock(&self.values).get(name).cloned())
    }
}

#[derive(Default)]
pub struct FakeLedger {
    pub items: Mutex<BTreeMap<(String, String), Value>>,
    /// `expires_at` of the items that have one.
    pub expiry: Mutex<BTreeMap<(String, String), i64>>,
    /// The by-day index: the `day` of the items that have one.
    pub days: Mutex<BTreeMap<(String, String), String>>,
}

impl FakeLedger {
    pub fn len_with_prefix(&self, pk_prefix: &str) -> usize {
        lock(&self.items)
            .keys()
            .filter(|(pk, _)| pk.starts_with(pk_prefix))
            .count()
    }
}

#[async_trait]
impl Ledger for FakeLedger {
    async fn put_if_absent(
        &self,
        pk: &str,
        sk: &str,
        data: &Value,
        expires_at: i64,
    ) -> Result<bool> {
        let mut items = lock(&self.items);
        let key = (pk.to_string(), sk.to_string());
        if items.contains_key(&key) {
            return Ok(false);
        }
        items.insert(key.clone(), data.clone());
        lock(&self.expiry).insert(key, expires_at);
        Ok(true)
    }
    async fn put(&self, pk: &str, sk: &str, data: &Value, expires_at: Option<i64>) -> Result<()> {
        let key = (pk.to_string(), sk.to_string());
        lock(&self.items).insert(key.clone(), data.clone());
        lock(&self.days).remove(&key);
        match expires_at {
            Some(t) => lock(&self.expiry).insert(key, t),
            None => lock(&self.expiry).remove(&key),
        };
        Ok(())
    }
    async fn put_on_day(
        &self,
        pk: &str,
        sk: &str,
        data: &Value,
        expires_at: Option<i64>,
        day: &str,
    ) -> Result<()> {
        self.put(pk, sk, data, expires_at).await?;
        lock(&self.days).insert((pk.to_string(), sk.to_string()), day.to_string());
        Ok(())
    }
    async fn query_day(&self, day: &str) -> Result<Vec<DayItem>> {
        let items = lock(&self.items);
        let mut out: Vec<DayItem> = lock(&self.days)
            .iter()
            .filter(|(_, d)| d.as_str() == day)
            .filter_map(|(k, _)| {
                items.get(k).map(|v| DayItem {
                    pk: k.0.clone(),
                    sk: k.1.clone(),
                    data: v.clone(),
                })
            })
            .collect();
        out.sort_by(|a, b| b.sk.cmp(&a.sk).then_with(|| b.pk.cmp(&a.pk)));
        Ok(out)
    }
    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Value>> {
        Ok(lock(&self.items)
            .get(&(pk.to_string(), sk.to_string()))
            .cloned())
    }
    async fn delete(&self, pk: &str, sk: &str) -> Result<()> {
        lock(&self.items).remove(&(pk.to_string(), sk.to_string()));
        lock(&self.expiry).remove(&(pk.to_string(), sk.to_string()));
        lock(&self.days).remove(&(pk.to_string(), sk.to_string()));
        Ok(())
    }
    async fn write_all(&self, writes: &[LedgerWrite]) -> Result<Option<usize>> {
        if writes.len() > 100 {
            return Err(NbaopsError::dependency(
                "dynamodb",
                "a transaction takes at most 100 items",
            ));
        }
        let mut items = lock(&self.items);
        let mut expiry = lock(&self.expiry);
        let mut days = lock(&self.days);
        let mut keys = std::collections::BTreeSet::new();
        for w in writes {
            if !keys.insert((w.pk.clone(), w.sk.clone())) {
                return Err(NbaopsError::dependency(
                    "dynamodb",
                    "a transaction cannot write one item twice",
                ));
            }
        }
        for (i, w) in writes.iter().enumerate() {
            let key = (w.pk.clone(), w.sk.clone());
            let held = items.get(&key);
            let ok = w.expect.is_empty()
                || w.expect.iter().any(|e| match e {
                    Expect::Absent => held.is_none(),
                    Expect::ExpiredBy(t) => {
                        held.is_some() && expiry.get(&key).is_some_and(|x| x <= t)
                    }
                    Expect::Holds(v) => held == Some(v),
                });
            if !ok {
                return Ok(Some(i));
            }
        }
        for w in writes {
            let key = (w.pk.clone(), w.sk.clone());
            match &w.data {
                Some(d) => {
                    items.insert(key.clone(), d.clone());
                    match &w.day {
                        Some(day) => days.insert(key.clone(), day.clone()),
                        None => days.remove(&key),
                    };
                    match w.expires_at {
                        Some(t) => expiry.insert(key, t),
                        None => expiry.remove(&key),
                    };
                }
                None => {
                    items.remove(&key);
                    expiry.remove(&key);
                    days.remove(&key);
                }
            }
        }
        Ok(None)
    }
    async fn query(&self, pk: &str, sk_prefix: &str) -> Result<Vec<(String, Value)>> {
        // The keys of one pk starting with the prefix are one contiguous range of the ordered
        // map: a replay of a day (`nbaops replay`) queries a ledger of tens of thousands of items.
        Ok(lock(&self.items)
            .range((pk.to_string(), sk_prefix.to_string())..)
            .take_while(|((p, s), _)| p == pk && s.starts_with(sk_prefix))
            .map(|((_, s), v)| (s.clone(), v.clone()))
            .collect())
    }
}
mod dead_letter;
mod http_post;
pub use dead_letter::*;
pub use http_post::*;
mod cost;
pub use cost::*;
mod rds_power;
pub use rds_power::*;
mod rds_backup;
pub use rds_backup::*;
mod inventory;
pub use inventory::*;
mod shared;
pub use shared::{leak, Shared};
mod pg;
pub use pg::*;

/// The shared ports of a unit test: config from `vars` (environment-variable pairs such as
/// `("NBAOPS_GUARD__DRY_RUN", "true")`) over the defaults in `dev`, an in-memory notifier and
/// ledger, no SSM. The handles let the test look at what was published and written.
pub struct TestDeps {
    pub deps: &'static crate::runtime::Deps,
    pub notifier: &'static FakeNotifier,
    pub ledger: &'static FakeLedger,
}

pub fn test_deps(function: &str, vars: &[(&str, &str)]) -> Result<TestDeps> {
    use crate::config::{layer, Config, Env};
    let vars = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let cfg = Config::from_settings(
        Env::Dev,
        function,
        layer(Env::Dev, &vars, &Default::default())?,
    )?;
    let notifier = leak(FakeNotifier::default());
    let ledger = leak(FakeLedger::default());
    let deps = leak(crate::runtime::Deps {
        cfg,
        notifier: Box::new(Shared(notifier)),
        params: None,
        ledger: Box::new(Shared(ledger)),
        switches: crate::guard::Switches::default(),
        work_queue: None,
    });
    Ok(TestDeps {
        deps,
        notifier,
        ledger,
    })
}
mod cloudwatch;
pub use cloudwatch::*;

/// The fleet of `cfg` (issue #20) for a unit test, its hub at the alerts topic's account and
/// us-east-1; `None` when `cfg` configures none. Member clients are never built unless a test
/// routes a record to a member.
pub async fn test_fleet(cfg: &crate::config::Config) -> Option<&'static crate::runtime::Fleet> {
    let hub = crate::fleet::Origin::new("123456789012", "us-east-1");
    let clients: &'static crate::adapters::AwsClients = leak(
        crate::adapters::AwsClients::for_member(
            &crate::adapters::AwsClients::from_env().await,
            &hub,
            None,
            None,
            "test",
        )
        .await,
    );
    crate::runtime::Fleet::new(cfg, clients)
        .ok()
        .flatten()
        .map(leak)
}
mod posture;
pub use posture::*;
mod drill_group;
pub use drill_group::*;
mod backup_store;
pub use backup_store::*;

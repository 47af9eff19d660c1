//! The simulated platform a replay starts from: Auto Scaling groups, RDS instances, Memcached
//! clusters, the CloudWatch alarms (the alarm history names an alarm; its metric and dimensions
//! come from here) and the configuration (environment variables, as the template sets them).
//! The default is the dev platform the demo seeds (tests/src/platform.rs) with its office-hours
//! test environment: `default-platform.json`, which also documents the shape of `--platform`.
//!
//! Everything lives in the in-memory fakes of `nbaops_shared::fakes`: the functions change them
//! as their plans say, through the real guard and ledger.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use nbaops_shared::config::{layer, Config, Env};
use nbaops_shared::error::{NbaopsError, Result};
use nbaops_shared::fakes::{
    leak, FakeAutoScaling, FakeCloudWatch, FakeElastiCache, FakeInventory, FakeLedger,
    FakeNotifier, FakeParams, FakeRds, FakeScheduler, Shared,
};
use nbaops_shared::guard::Switches;
use nbaops_shared::ports::{
    CacheClusterState, DbInstanceState, GroupState, MetricAlarm, PgConnector, Postgres, RdsPower,
    Tags,
};
use nbaops_shared::runtime::Deps;

pub const DEFAULT_PLATFORM: &str = include_str!("default-platform.json");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformSpec {
    #[serde(default = "dev")]
    pub env: String,
    #[serde(default)]
    pub groups: Vec<GroupDef>,
    #[serde(default)]
    pub db_instances: Vec<DbDef>,
    #[serde(default)]
    pub cache_clusters: Vec<CacheDef>,
    #[serde(default)]
    pub alarms: Vec<AlarmDef>,
    /// Environment variables of the functions (`NBAOPS_SCALE__GROUPS`...), as the template sets them.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// SSM parameters the functions read at run time, by name: the game calendar
    /// (`/nbaops/dev/calendar/games`). Empty: no SSM at all, as with `NBAOPS_SSM=off`.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
}

fn dev() -> String {
    "dev".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupDef {
    pub name: String,
    pub min: i32,
    pub max: i32,
    pub desired: i32,
    #[serde(default)]
    pub tags: Tags,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbDef {
    pub id: String,
    pub class: String,
    #[serde(default)]
    pub multi_az: bool,
    #[serde(default = "postgres")]
    pub engine: String,
    #[serde(default)]
    pub tags: Tags,
}

fn postgres() -> String {
    "postgres".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheDef {
    pub id: String,
    pub node_type: String,
    pub nodes: i32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmDef {
    pub name: String,
    /// None for metric math: scale-on-alarm routes it through `scale.alarm_map`.
    pub namespace: Option<String>,
    pub metric: Option<String>,
    #[serde(default)]
    pub dimensions: BTreeMap<String, String>,
    pub threshold: Option<f64>,
    pub comparison: Option<String>,
    #[serde(default)]
    pub description: String,
}

impl PlatformSpec {
    pub fn parse(text: &str, file: &str) -> std::result::Result<PlatformSpec, String> {
        serde_json::from_str(text).map_err(|e| format!("{file}: not a platform: {e}"))
    }

    pub fn alarms_by_name(&self) -> BTreeMap<String, AlarmDef> {
        self.alarms
            .iter()
            .map(|a| (a.name.clone(), a.clone()))
            .collect()
    }
}

/// PostgreSQL as the replay assumes it: a healthy primary. The recording holds no answers of
/// PostgreSQL, so failover-notify's verification of a new primary (pg_is_in_recovery(), the
/// heartbeat write, pg_stat_replication) is answered as a healthy primary with no replicas would
/// answer it: a replay's "verification passed" says nothing about the real database. pg-health
/// and vacuum-trigger, which are all about PostgreSQL's answers, are not replayed.
pub struct HealthyPrimary;

struct HealthySession;

#[async_trait]
impl Postgres for HealthySession {
    async fn query(&self, sql: &str) -> Result<Vec<serde_json::Map<String, Value>>> {
        if sql.contains("pg_is_in_recovery") {
            let mut row = serde_json::Map::new();
            row.insert("in_recovery".into(), Value::Bool(false));
            return Ok(vec![row]);
        }
        Ok(Vec::new())
    }
    async fn execute(&self, _sql: &str) -> Result<u64> {
        Ok(1)
    }
}

#[async_trait]
impl PgConnector for HealthyPrimary {
    async fn connect(&self, _url: &str, _password: Option<&str>) -> Result<Box<dyn Postgres>> {
        Ok(Box::new(HealthySession))
    }
}

/// Stops and starts on the RDS fake's own instances, so that what offhours stopped is what the
/// next inventory shows stopped.
pub struct SimulatedPower(pub &'static FakeRds);

#[async_trait]
impl RdsPower for SimulatedPower {
    async fn stop_instance(&self, id: &str) -> Result<()> {
        self.set(id, "available", "stopped")
    }
    async fn start_instance(&self, id: &str) -> Result<()> {
        self.set(id, "stopped", "available")
    }
}

impl SimulatedPower {
    fn set(&self, id: &str, from: &str, to: &str) -> Result<()> {
        let mut all = self.0.instances.lock().unwrap_or_else(|p| p.into_inner());
        let i = all
            .get_mut(id)
            .ok_or_else(|| NbaopsError::NotFound(id.into()))?;
        if i.status != from {
            return Err(NbaopsError::Dependency {
                service: "rds",
                message: format!("InvalidDBInstanceState: {id} is {}", i.status),
                retryable: false,
            });
        }
        i.status = to.into();
        drop(all);
        self.0
            .mutations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!("{to} {id}"));
        Ok(())
    }
}

/// The simulated platform: the fakes, shared by every replayed function.
pub struct World {
    pub env: Env,
    pub vars: BTreeMap<String, String>,
    pub asg: &'static FakeAutoScaling,
    pub rds: &'static FakeRds,
    pub cache: &'static FakeElastiCache,
    pub cw: &'static FakeCloudWatch,
    pub scheduler: &'static FakeScheduler,
    pub ledger: &'static FakeLedger,
    pub notifier: &'static FakeNotifier,
    pub inventory: &'static FakeInventory,
    pub params: Option<&'static FakeParams>,
}

impl World {
    pub fn new(spec: &PlatformSpec) -> std::result::Result<World, String> {
        let env: Env = spec
            .env
            .parse()
            .map_err(|e| format!("platform env '{}': {e}", spec.env))?;
        let asg = leak(FakeAutoScaling::with(
            spec.groups
                .iter()
                .map(|g| GroupState {
                    name: g.name.clone(),
                    min_size: g.min,
                    max_size: g.max,
                    desired: g.desired,
                    in_service: g.desired,
                    tags: g.tags.clone(),
                    activity_in_progress: false,
                })
                .collect(),
        ));
        let rds = leak(FakeRds::with(
            spec.db_instances
                .iter()
                .map(|d| DbInstanceState {
                    id: d.id.clone(),
                    arn: Some(format!("arn:aws:rds:us-east-1:123456789012:db:{}", d.id)),
                    class: d.class.clone(),
                    status: "available".into(),
                    engine: d.engine.clone(),
                    multi_az: d.multi_az,
                    endpoint: Some((format!("{}.replay.invalid", d.id), 5432)),
                    pending_class: None,
                    tags: d.tags.clone(),
                })
                .collect(),
        ));
        let cache = leak(FakeElastiCache::with(
            spec.cache_clusters
                .iter()
                .map(|c| CacheClusterState {
                    id: c.id.clone(),
                    arn: None,
                    engine: "memcached".into(),
                    node_type: c.node_type.clone(),
                    num_nodes: c.nodes,
                    status: "available".into(),
                    tags: Tags::new(),
                })
                .collect(),
        ));
        let cw = leak(FakeCloudWatch::with(
            spec.alarms
                .iter()
                .map(|a| MetricAlarm {
                    name: a.name.clone(),
                    arn: Some(format!(
                        "arn:aws:cloudwatch:us-east-1:123456789012:alarm:{}",
                        a.name
                    )),
                    state: "OK".into(),
                    state_updated: None,
                    namespace: a.namespace.clone(),
                    metric: a.metric.clone(),
                    dimensions: a.dimensions.clone(),
                    threshold: a.threshold,
                    comparison: a.comparison.clone(),
                })
                .collect(),
        ));
        Ok(World {
            env,
            vars: spec.config.clone(),
            asg,
            rds,
            cache,
            cw,
            scheduler: leak(FakeScheduler::default()),
            ledger: leak(FakeLedger::default()),
            notifier: leak(FakeNotifier::default()),
            inventory: leak(FakeInventory { asg, rds }),
            params: (!spec.params.is_empty()).then(|| {
                let p = FakeParams::default();
                for (k, v) in &spec.params {
                    p.set(k, v);
                }
                leak(p)
            }),
        })
    }

    /// The shared ports of one function: its configuration from the platform's variables, the
    /// one ledger and notifier of the platform, no SSM (the variables are the whole config).
    pub fn deps(&self, function: &str) -> Result<&'static Deps> {
        let cfg = Config::from_settings(
            self.env,
            function,
            layer(self.env, &self.vars, &Default::default())?,
        )?;
        Ok(leak(Deps {
            switches: Switches::seeded(&cfg),
            work_queue: None,
            cfg,
            notifier: Box::new(Shared(self.notifier)),
            params: self
                .params
                .map(|p| Box::new(Shared(p)) as Box<dyn nbaops_shared::ports::Params>),
            ledger: Box::new(Shared(self.ledger)),
        }))
    }

    /// Alarm `name` enters `state` at `at` (what a re-check reads).
    pub fn set_alarm(&self, name: &str, state: &str, at: DateTime<Utc>) {
        if let Some(a) = self
            .cw
            .alarms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(name)
        {
            a.state = state.into();
            a.state_updated = Some(at);
        }
    }

    /// How many changes the platform's fakes have made so far.
    pub fn mutation_count(&self) -> usize {
        let len = |m: &std::sync::Mutex<Vec<String>>| m.lock().map(|v| v.len()).unwrap_or(0);
        len(&self.asg.mutations) + len(&self.rds.mutations) + len(&self.cache.mutations)
    }

    /// Desired capacity per group, class (and status) per DB instance, nodes per cache cluster.
    pub fn snapshot(&self) -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        for g in self
            .asg
            .groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            out.insert(format!("group {}", g.name), Value::from(g.desired));
        }
        for i in self
            .rds
            .instances
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            out.insert(
                format!("db {}", i.id),
                Value::String(format!(
                    "{}{}",
                    i.pending_class.as_deref().unwrap_or(&i.class),
                    if i.status == "stopped" {
                        " (stopped)"
                    } else {
                        ""
                    }
                )),
            );
        }
        for c in self
            .cache
            .clusters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            out.insert(format!("cache {}", c.id), Value::from(c.num_nodes));
        }
        out
    }
}

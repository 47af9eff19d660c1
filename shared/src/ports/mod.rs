//! Ports: the small traits the domain talks to. Adapters (SDK, driver) and fakes implement them;
//! nothing outside `adapters` imports an `aws_sdk_*` crate.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;

use crate::error::Result;

pub type Tags = BTreeMap<String, String>;

/// What nbaops sees of an Auto Scaling group before deciding.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupState {
    pub name: String,
    pub min_size: i32,
    pub max_size: i32,
    pub desired: i32,
    pub in_service: i32,
    pub tags: Tags,
    /// A scaling activity not yet finished: never stack a second change on top of it.
    pub activity_in_progress: bool,
}

#[async_trait]
pub trait AutoScaling: Send + Sync {
    async fn describe_group(&self, name: &str) -> Result<Option<GroupState>>;
    async fn set_desired_capacity(&self, name: &str, desired: i32) -> Result<()>;
    async fn update_group_size(&self, name: &str, min: i32, max: i32, desired: i32) -> Result<()>;
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DbInstanceState {
    pub id: String,
    pub arn: Option<String>,
    pub class: String,
    pub status: String,
    pub engine: String,
    pub multi_az: bool,
    pub endpoint: Option<(String, u16)>,
    pub pending_class: Option<String>,
    pub tags: Tags,
}

#[async_trait]
pub trait Rds: Send + Sync {
    async fn describe_instance(&self, id: &str) -> Result<Option<DbInstanceState>>;
    async fn modify_instance_class(
        &self,
        id: &str,
        class: &str,
        apply_immediately: bool,
    ) -> Result<()>;
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CacheClusterState {
    pub id: String,
    pub arn: Option<String>,
    pub engine: String,
    pub node_type: String,
    pub num_nodes: i32,
    pub status: String,
    pub tags: Tags,
}

#[async_trait]
pub trait ElastiCache: Send + Sync {
    async fn describe_cluster(&self, id: &str) -> Result<Option<CacheClusterState>>;
    async fn set_node_count(&self, id: &str, nodes: i32) -> Result<()>;
    /// The cluster's node ids as ElastiCache lists them (DescribeCacheClusters with
    /// ShowCacheNodeInfo); empty when the cluster does not exist.
    async fn node_ids(&self, id: &str) -> Result<Vec<String>>;
    /// Shrinks a Memcached cluster to `nodes` by removing exactly `remove`
    /// (ModifyCacheCluster NumCacheNodes + CacheNodeIdsToRemove, applied immediately).
    async fn remove_nodes(&self, id: &str, nodes: i32, remove: &[String]) -> Result<()>;
}

/// Publishing to an SNS topic.
#[async_trait]
pub trait Notifier: Send + Sync {
    /// Returns the message id.
    async fn publish(
        &self,
        topic_arn: &str,
        subject: &str,
        message: &str,
        attributes: &BTreeMap<String, String>,
    ) -> Result<String>;
}

/// Parameter Store (SSM). Values of SecureString parameters come back decrypted.
#[async_trait]
pub trait Params: Send + Sync {
    /// Every configuration parameter under `prefix`, recursively, keyed by full name, read
    /// without decryption (a SecureString there is a configuration error).
    async fn get_by_path(&self, prefix: &str) -> Result<BTreeMap<String, String>>;
    async fn get(&self, name: &str) -> Result<Option<String>>;
}

/// What a [`LedgerWrite`] expects of the item stored under its key before it writes.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// No item under the key.
    Absent,
    /// The item's expiry (`expires_at`, epoch seconds) is at or before this instant.
    ExpiredBy(i64),
    /// The item holds exactly this data (as read by [`Ledger::get`]).
    Holds(Value),
}

/// One write of an all-or-nothing [`Ledger::write_all`].
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerWrite {
    pub pk: String,
    pub sk: String,
    /// `None` deletes the item.
    pub data: Option<Value>,
    pub expires_at: Option<i64>,
    /// At least one of these must hold of the stored item; empty: unconditional.
    pub expect: Vec<Expect>,
    /// The UTC day (YYYY-MM-DD) under which the by-day index holds the item (audit records);
    /// `None`: the item is not in that index.
    pub day: Option<String>,
}

impl LedgerWrite {
    pub fn put(pk: &str, sk: &str, data: Value, expires_at: Option<i64>) -> LedgerWrite {
        LedgerWrite {
            pk: pk.into(),
            sk: sk.into(),
            data: Some(data),
            expires_at,
            expect: Vec::new(),
            day: None,
        }
    }
    pub fn delete(pk: &str, sk: &str) -> LedgerWrite {
        LedgerWrite {
            pk: pk.into(),
            sk: sk.into(),
            data: None,
            expires_at: None,
            expect: Vec::new(),
            day: None,
        }
    }
    /// Puts the item in the by-day index under `day` (see [`Ledger::query_day`]).
    pub fn on_day(mut self, day: &str) -> LedgerWrite {
        self.day = Some(day.to_string());
        self
    }
    pub fn expecting(mut self, expect: Vec<Expect>) -> LedgerWrite {
        self.expect = expect;
        self
    }
}

/// A key-value ledger with conditional writes and expiry (DynamoDB in production).
/// Items are addressed by (pk, sk); `expires_at` is epoch seconds (DynamoDB TTL).
#[async_trait]
pub trait Ledger: Send + Sync {
    /// Writes only if no item exists under (pk, sk). `Ok(false)` when one already does.
    async fn put_if_absent(
        &self,
        pk: &str,
        sk: &str,
        data: &Value,
        expires_at: i64,
    ) -> Result<bool>;
    async fn put(&self, pk: &str, sk: &str, data: &Value, expires_at: Option<i64>) -> Result<()>;
    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Value>>;
    async fn delete(&self, pk: &str, sk: &str) -> Result<()>;
    /// Items under `pk` whose sort key starts with `sk_prefix`, in sort-key order.
    async fn query(&self, pk: &str, sk_prefix: &str) -> Result<Vec<(String, Value)>>;
    /// Writes every item or none, in one request (DynamoDB `TransactWriteItems`, at most 100
    /// items, each key once). `Ok(None)` when written; `Ok(Some(i))` when the expectation of
    /// write `i` did not hold (the first such write), and nothing was written.
    async fn write_all(&self, writes: &[LedgerWrite]) -> Result<Option<usize>>;
    /// [`Ledger::put`], the item also held by the by-day index under `day` (YYYY-MM-DD, UTC):
    /// the audit records, so the audit trail of a day is read without a table scan.
    async fn put_on_day(
        &self,
        pk: &str,
        sk: &str,
        data: &Value,
        expires_at: Option<i64>,
        day: &str,
    ) -> Result<()>;
    /// The items of one day of the by-day index, newest (highest sort key) first.
    async fn query_day(&self, day: &str) -> Result<Vec<DayItem>>;
}

/// One item of the ledger's by-day index.
#[derive(Debug, Clone, PartialEq)]
pub struct DayItem {
    pub pk: String,
    pub sk: String,
    pub data: Value,
}

/// A PostgreSQL session: rows come back as JSON objects so the domain never sees driver types.
#[async_trait]
pub trait Postgres: Send + Sync {
    async fn query(&self, sql: &str) -> Result<Vec<serde_json::Map<String, Value>>>;
    async fn execute(&self, sql: &str) -> Result<u64>;
    /// NOTICE/WARNING messages the server sent since the last call ("WARNING: skipping ...").
    fn take_notices(&self) -> Vec<String> {
        Vec::new()
    }
}

mod pg_connector;
pub use pg_connector::*;
mod dead_letter;
mod work_queue;
pub use work_queue::*;
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
mod cloudwatch;
pub use cloudwatch::*;
mod scheduler;
pub use scheduler::*;
mod posture;
pub use posture::*;
mod drill_group;
pub use drill_group::*;
mod backup_store;
pub use backup_store::*;

//! Cost Explorer: daily cost over a period, grouped by service or by a cost allocation tag.

use async_trait::async_trait;
use chrono::NaiveDate;
use serde::Serialize;

use crate::error::Result;

/// How the daily cost is split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum CostGrouping {
    /// By the `SERVICE` dimension ("Amazon Relational Database Service").
    Service,
    /// By a cost allocation tag key (`env`); the group key is the tag value, "" when untagged.
    Tag(String),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostQuery {
    /// First day, inclusive.
    pub start: NaiveDate,
    /// Last day, exclusive (as Cost Explorer counts).
    pub end: NaiveDate,
    pub grouping: CostGrouping,
    /// Only these services (empty: every service).
    pub services: Vec<String>,
    /// `UnblendedCost`, `AmortizedCost`...
    pub metric: String,
}

/// The cost of one group on one day.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DailyCost {
    pub day: NaiveDate,
    pub key: String,
    pub amount: f64,
    pub unit: String,
}

#[async_trait]
pub trait CostExplorer: Send + Sync {
    /// Daily cost per group over `[start, end)`, every page read.
    async fn daily_cost(&self, q: &CostQuery) -> Result<Vec<DailyCost>>;
}

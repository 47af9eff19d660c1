//! In-memory `CostExplorer`: scripted daily costs and a log of queries.

use std::sync::Mutex;

use async_trait::async_trait;

use super::lock;
use crate::error::{NbaopsError, Result};
use crate::ports::{CostExplorer, CostGrouping, CostQuery, DailyCost};

#[derive(Default)]
pub struct FakeCostExplorer {
    /// Daily costs per grouping; a query gets the points of its grouping inside its period.
    pub costs: Mutex<Vec<(CostGrouping, DailyCost)>>,
    pub queries: Mutex<Vec<CostQuery>>,
    pub fail: Mutex<bool>,
}

impl FakeCostExplorer {
    pub fn add(&self, grouping: CostGrouping, day: chrono::NaiveDate, key: &str, amount: f64) {
        lock(&self.costs).push((
            grouping,
            DailyCost {
                day,
                key: key.into(),
                amount,
                unit: "USD".into(),
            },
        ));
    }
    pub fn queries(&self) -> Vec<CostQuery> {
        lock(&self.queries).clone()
    }
}

#[async_trait]
impl CostExplorer for FakeCostExplorer {
    async fn daily_cost(&self, q: &CostQuery) -> Result<Vec<DailyCost>> {
        lock(&self.queries).push(q.clone());
        if *lock(&self.fail) {
            return Err(NbaopsError::dependency("costexplorer", "fake outage"));
        }
        Ok(lock(&self.costs)
            .iter()
            .filter(|(g, c)| *g == q.grouping && c.day >= q.start && c.day < q.end)
            .map(|(_, c)| c.clone())
            .collect())
    }
}

//! `CostExplorer` on `aws-sdk-costexplorer` (GetCostAndUsage, DAILY, one group-by, every page).

use async_trait::async_trait;
use aws_sdk_costexplorer::types::{
    DateInterval, Dimension, DimensionValues, Expression, Granularity, GroupDefinition,
    GroupDefinitionType,
};
use chrono::NaiveDate;

use super::dependency;
use crate::error::{NbaopsError, Result};
use crate::ports::{CostExplorer, CostGrouping, CostQuery, DailyCost};

pub struct SdkCostExplorer(pub aws_sdk_costexplorer::Client);

/// A safety stop: a daily query over a few weeks is one or two pages.
const MAX_PAGES: usize = 50;

#[async_trait]
impl CostExplorer for SdkCostExplorer {
    async fn daily_cost(&self, q: &CostQuery) -> Result<Vec<DailyCost>> {
        let period = DateInterval::builder()
            .start(q.start.format("%Y-%m-%d").to_string())
            .end(q.end.format("%Y-%m-%d").to_string())
            .build()
            .map_err(|e| NbaopsError::InvalidEvent(format!("cost period: {e}")))?;
        let group = match &q.grouping {
            CostGrouping::Service => GroupDefinition::builder()
                .r#type(GroupDefinitionType::Dimension)
                .key("SERVICE")
                .build(),
            CostGrouping::Tag(key) => GroupDefinition::builder()
                .r#type(GroupDefinitionType::Tag)
                .key(key)
                .build(),
        };
        let filter = (!q.services.is_empty()).then(|| {
            Expression::builder()
                .dimensions(
                    DimensionValues::builder()
                        .key(Dimension::Service)
                        .set_values(Some(q.services.clone()))
                        .build(),
                )
                .build()
        });
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let page = self
                .0
                .get_cost_and_usage()
                .time_period(period.clone())
                .granularity(Granularity::Daily)
                .metrics(&q.metric)
                .group_by(group.clone())
                .set_filter(filter.clone())
                .set_next_page_token(token.take())
                .send()
                .await
                .map_err(|e| dependency("costexplorer", e))?;
            for r in page.results_by_time() {
                let Some(day) = r
                    .time_period()
                    .and_then(|p| NaiveDate::parse_from_str(p.start(), "%Y-%m-%d").ok())
                else {
                    continue;
                };
                for g in r.groups() {
                    let Some(raw_key) = g.keys().first() else {
                        continue;
                    };
                    let Some(m) = g.metrics().and_then(|m| m.get(&q.metric)) else {
                        continue;
                    };
                    let amount = m
                        .amount()
                        .and_then(|a| a.parse::<f64>().ok())
                        .unwrap_or(0.0);
                    out.push(DailyCost {
                        day,
                        key: group_key(&q.grouping, raw_key),
                        amount,
                        unit: m.unit().unwrap_or("USD").to_string(),
                    });
                }
            }
            match page.next_page_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => return Ok(out),
            }
        }
        Ok(out)
    }
}

/// Tag groups come back as `env$test` (`env$` when untagged): keep the value.
fn group_key(grouping: &CostGrouping, raw: &str) -> String {
    match grouping {
        CostGrouping::Service => raw.to_string(),
        CostGrouping::Tag(key) => raw
            .strip_prefix(&format!("{key}$"))
            .unwrap_or(raw)
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_keys_lose_their_prefix() {
        let g = CostGrouping::Tag("env".into());
        assert_eq!(group_key(&g, "env$test"), "test");
        assert_eq!(group_key(&g, "env$"), "");
        assert_eq!(
            group_key(&CostGrouping::Service, "AWS Lambda"),
            "AWS Lambda"
        );
    }
}

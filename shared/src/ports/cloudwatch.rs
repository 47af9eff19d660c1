//! CloudWatch as nbaops reads it: alarms (their state and threshold) and metric statistics.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::Result;

/// A metric alarm as DescribeAlarms returns it, reduced to what the decisions read. The adapter
/// keeps every other field to itself: a rewrite ([`CloudWatch::set_alarm_threshold`]) sends them
/// back unchanged.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricAlarm {
    pub name: String,
    pub arn: Option<String>,
    /// "OK", "ALARM" or "INSUFFICIENT_DATA".
    pub state: String,
    pub state_updated: Option<DateTime<Utc>>,
    /// Single-metric alarms only; `None` for metric math.
    pub namespace: Option<String>,
    pub metric: Option<String>,
    pub dimensions: BTreeMap<String, String>,
    pub threshold: Option<f64>,
    pub comparison: Option<String>,
}

impl MetricAlarm {
    pub fn in_alarm(&self) -> bool {
        self.state == "ALARM"
    }
}

/// One statistic of one metric over a time range (GetMetricStatistics).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricQuery {
    pub namespace: String,
    pub metric: String,
    pub dimensions: BTreeMap<String, String>,
    /// "Average", "Maximum", "Minimum", "Sum" or "SampleCount".
    pub statistic: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Seconds per datapoint (60 or a multiple of 60).
    pub period_seconds: i32,
}

#[async_trait]
pub trait CloudWatch: Send + Sync {
    /// The metric alarm of that name; `None` when there is none.
    async fn describe_alarm(&self, name: &str) -> Result<Option<MetricAlarm>>;
    /// Every metric alarm in `state` ("ALARM", "OK", "INSUFFICIENT_DATA"), all pages.
    async fn alarms_in_state(&self, state: &str) -> Result<Vec<MetricAlarm>>;
    /// Every metric alarm watching this metric with exactly these dimensions
    /// (DescribeAlarmsForMetric).
    async fn alarms_for_metric(
        &self,
        namespace: &str,
        metric: &str,
        dimensions: &BTreeMap<String, String>,
    ) -> Result<Vec<MetricAlarm>>;
    /// Rewrites the alarm with this threshold and every other field as it is (PutMetricAlarm
    /// replaces the whole definition, so the adapter reads it first and sends it all back).
    async fn set_alarm_threshold(&self, name: &str, threshold: f64) -> Result<()>;
    /// The datapoints of the query, oldest first, as (timestamp, value).
    async fn statistics(&self, q: &MetricQuery) -> Result<Vec<(DateTime<Utc>, f64)>>;
}

//! In-memory `CloudWatch` and `Scheduler`: alarms by name, metric datapoints per (metric,
//! dimensions), one-time schedules per (group, name), and a log of every mutation.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::lock;
use crate::error::{NbaopsError, Result};
use crate::ports::{CloudWatch, MetricAlarm, MetricQuery, OneTimeSchedule, Scheduler};

/// (namespace/metric, dimensions): one metric's key.
pub type SeriesKey = (String, BTreeMap<String, String>);
/// Timestamped values, as the fake keeps them.
pub type Series = Vec<(DateTime<Utc>, f64)>;

#[derive(Default)]
pub struct FakeCloudWatch {
    pub alarms: Mutex<BTreeMap<String, MetricAlarm>>,
    /// (namespace/metric, dimensions) -> datapoints; a query answers the points in its range.
    pub points: Mutex<BTreeMap<SeriesKey, Series>>,
    pub mutations: Mutex<Vec<String>>,
}

impl FakeCloudWatch {
    pub fn with(alarms: Vec<MetricAlarm>) -> Self {
        let f = FakeCloudWatch::default();
        for a in alarms {
            lock(&f.alarms).insert(a.name.clone(), a);
        }
        f
    }
    pub fn set_state(&self, name: &str, state: &str) {
        if let Some(a) = lock(&self.alarms).get_mut(name) {
            a.state = state.into();
        }
    }
    pub fn add_points(
        &self,
        namespace: &str,
        metric: &str,
        dimensions: &[(&str, &str)],
        points: &[(DateTime<Utc>, f64)],
    ) {
        let dims = dimensions
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        lock(&self.points)
            .entry((format!("{namespace}/{metric}"), dims))
            .or_default()
            .extend_from_slice(points);
    }
    pub fn mutations(&self) -> Vec<String> {
        lock(&self.mutations).clone()
    }
}

#[async_trait]
impl CloudWatch for FakeCloudWatch {
    async fn describe_alarm(&self, name: &str) -> Result<Option<MetricAlarm>> {
        Ok(lock(&self.alarms).get(name).cloned())
    }
    async fn alarms_in_state(&self, state: &str) -> Result<Vec<MetricAlarm>> {
        Ok(lock(&self.alarms)
            .values()
            .filter(|a| a.state == state)
            .cloned()
            .collect())
    }
    async fn alarms_for_metric(
        &self,
        namespace: &str,
        metric: &str,
        dimensions: &BTreeMap<String, String>,
    ) -> Result<Vec<MetricAlarm>> {
        Ok(lock(&self.alarms)
            .values()
            .filter(|a| {
                a.namespace.as_deref() == Some(namespace)
                    && a.metric.as_deref() == Some(metric)
                    && &a.dimensions == dimensions
            })
            .cloned()
            .collect())
    }
    async fn set_alarm_threshold(&self, name: &str, threshold: f64) -> Result<()> {
        let mut all = lock(&self.alarms);
        let a = all
            .get_mut(name)
            .ok_or_else(|| NbaopsError::NotFound(format!("alarm {name}")))?;
        a.threshold = Some(threshold);
        lock(&self.mutations).push(format!("set_alarm_threshold {name} {threshold}"));
        Ok(())
    }
    async fn statistics(&self, q: &MetricQuery) -> Result<Vec<(DateTime<Utc>, f64)>> {
        let key = (
            format!("{}/{}", q.namespace, q.metric),
            q.dimensions.clone(),
        );
        let mut points: Vec<_> = lock(&self.points)
            .get(&key)
            .map(|p| {
                p.iter()
                    .filter(|(at, _)| *at >= q.from && *at < q.to)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        points.sort_by_key(|(at, _)| *at);
        Ok(points)
    }
}

#[derive(Default)]
pub struct FakeScheduler {
    pub schedules: Mutex<BTreeMap<(String, String), OneTimeSchedule>>,
    pub mutations: Mutex<Vec<String>>,
    /// When set, every create fails with this error message (as AWS refusing, e.g. AccessDenied).
    pub refuse_creates: Mutex<Option<String>>,
}

impl FakeScheduler {
    pub fn mutations(&self) -> Vec<String> {
        lock(&self.mutations).clone()
    }
    pub fn all(&self) -> Vec<OneTimeSchedule> {
        lock(&self.schedules).values().cloned().collect()
    }
}

#[async_trait]
impl Scheduler for FakeScheduler {
    async fn create_once(&self, s: &OneTimeSchedule) -> Result<bool> {
        if let Some(message) = lock(&self.refuse_creates).clone() {
            return Err(NbaopsError::Dependency {
                service: "scheduler",
                message,
                retryable: false,
            });
        }
        s.check().map_err(|m| NbaopsError::Dependency {
            service: "scheduler",
            message: format!("ValidationException: {m}"),
            retryable: false,
        })?;
        let key = (s.group.clone(), s.name.clone());
        let mut all = lock(&self.schedules);
        if all.contains_key(&key) {
            return Ok(false);
        }
        all.insert(key, s.clone());
        lock(&self.mutations).push(format!(
            "create_once {}/{} {}",
            s.group,
            s.name,
            s.expression()
        ));
        Ok(true)
    }
    async fn delete(&self, group: &str, name: &str) -> Result<bool> {
        let gone = lock(&self.schedules)
            .remove(&(group.to_string(), name.to_string()))
            .is_some();
        if gone {
            lock(&self.mutations).push(format!("delete {group}/{name}"));
        }
        Ok(gone)
    }
}

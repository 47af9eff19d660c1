use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_cloudwatch::types::{AlarmType, Dimension, StateValue, Statistic};
use chrono::{DateTime, TimeZone, Utc};

use super::dependency;
use crate::error::{NbaopsError, Result};
use crate::ports::{CloudWatch, MetricAlarm, MetricQuery};

pub struct SdkCloudWatch(pub aws_sdk_cloudwatch::Client);

fn to_utc(t: &aws_smithy_types::DateTime) -> Option<DateTime<Utc>> {
    Utc.timestamp_opt(t.secs(), t.subsec_nanos()).single()
}

fn to_smithy(t: DateTime<Utc>) -> aws_smithy_types::DateTime {
    aws_smithy_types::DateTime::from_secs(t.timestamp())
}

fn reduced(a: &aws_sdk_cloudwatch::types::MetricAlarm) -> MetricAlarm {
    MetricAlarm {
        name: a.alarm_name().unwrap_or("").to_string(),
        arn: a.alarm_arn().map(String::from),
        state: a
            .state_value()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
        state_updated: a.state_updated_timestamp().and_then(to_utc),
        namespace: a.namespace().map(String::from),
        metric: a.metric_name().map(String::from),
        dimensions: a
            .dimensions()
            .iter()
            .filter_map(|d| Some((d.name()?.to_string(), d.value()?.to_string())))
            .collect(),
        threshold: a.threshold(),
        comparison: a.comparison_operator().map(|c| c.as_str().to_string()),
    }
}

impl SdkCloudWatch {
    async fn raw_alarm(
        &self,
        name: &str,
    ) -> Result<Option<aws_sdk_cloudwatch::types::MetricAlarm>> {
        let out = self
            .0
            .describe_alarms()
            .alarm_names(name)
            .alarm_types(AlarmType::MetricAlarm)
            .send()
            .await
            .map_err(|e| dependency("cloudwatch", e))?;
        Ok(out
            .metric_alarms()
            .iter()
            .find(|a| a.alarm_name() == Some(name))
            .cloned())
    }
}

#[async_trait]
impl CloudWatch for SdkCloudWatch {
    async fn describe_alarm(&self, name: &str) -> Result<Option<MetricAlarm>> {
        Ok(self.raw_alarm(name).await?.as_ref().map(reduced))
    }

    async fn alarms_in_state(&self, state: &str) -> Result<Vec<MetricAlarm>> {
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .0
                .describe_alarms()
                .state_value(StateValue::from(state))
                .alarm_types(AlarmType::MetricAlarm)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| dependency("cloudwatch", e))?;
            all.extend(out.metric_alarms().iter().map(reduced));
            match out.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => return Ok(all),
            }
        }
    }

    async fn alarms_for_metric(
        &self,
        namespace: &str,
        metric: &str,
        dimensions: &BTreeMap<String, String>,
    ) -> Result<Vec<MetricAlarm>> {
        let dims = dimensions
            .iter()
            .map(|(k, v)| Dimension::builder().name(k).value(v).build())
            .collect::<Vec<_>>();
        let out = self
            .0
            .describe_alarms_for_metric()
            .namespace(namespace)
            .metric_name(metric)
            .set_dimensions(Some(dims))
            .send()
            .await
            .map_err(|e| dependency("cloudwatch", e))?;
        // AWS answers only the alarms with exactly these dimensions; moto 5.2.5 ignores the
        // dimensions, so they are checked here as well.
        Ok(out
            .metric_alarms()
            .iter()
            .map(reduced)
            .filter(|a| &a.dimensions == dimensions)
            .collect())
    }

    async fn set_alarm_threshold(&self, name: &str, threshold: f64) -> Result<()> {
        let Some(a) = self.raw_alarm(name).await? else {
            return Err(NbaopsError::NotFound(format!("alarm {name}")));
        };
        // PutMetricAlarm replaces the definition: every field DescribeAlarms returned goes back.
        // Tags are not part of the definition and stay as they are on an existing alarm.
        self.0
            .put_metric_alarm()
            .alarm_name(name)
            .set_alarm_description(a.alarm_description().map(String::from))
            .set_actions_enabled(a.actions_enabled())
            .set_ok_actions(Some(a.ok_actions().to_vec()))
            .set_alarm_actions(Some(a.alarm_actions().to_vec()))
            .set_insufficient_data_actions(Some(a.insufficient_data_actions().to_vec()))
            .set_metric_name(a.metric_name().map(String::from))
            .set_namespace(a.namespace().map(String::from))
            .set_statistic(a.statistic().cloned())
            .set_extended_statistic(a.extended_statistic().map(String::from))
            .set_dimensions(if a.dimensions().is_empty() {
                None
            } else {
                Some(a.dimensions().to_vec())
            })
            .set_period(a.period())
            .set_unit(a.unit().cloned())
            .set_evaluation_periods(a.evaluation_periods())
            .set_datapoints_to_alarm(a.datapoints_to_alarm())
            .threshold(threshold)
            .set_comparison_operator(a.comparison_operator().cloned())
            .set_treat_missing_data(a.treat_missing_data().map(String::from))
            .set_evaluate_low_sample_count_percentile(
                a.evaluate_low_sample_count_percentile().map(String::from),
            )
            .set_metrics(if a.metrics().is_empty() {
                None
            } else {
                Some(a.metrics().to_vec())
            })
            .set_threshold_metric_id(a.threshold_metric_id().map(String::from))
            .send()
            .await
            .map_err(|e| dependency("cloudwatch", e))?;
        Ok(())
    }

    async fn statistics(&self, q: &MetricQuery) -> Result<Vec<(DateTime<Utc>, f64)>> {
        let stat = Statistic::from(q.statistic.as_str());
        let dims = q
            .dimensions
            .iter()
            .map(|(k, v)| Dimension::builder().name(k).value(v).build())
            .collect::<Vec<_>>();
        let out = self
            .0
            .get_metric_statistics()
            .namespace(&q.namespace)
            .metric_name(&q.metric)
            .set_dimensions(Some(dims))
            .start_time(to_smithy(q.from))
            .end_time(to_smithy(q.to))
            .period(q.period_seconds)
            .statistics(stat.clone())
            .send()
            .await
            .map_err(|e| dependency("cloudwatch", e))?;
        let mut points: Vec<(DateTime<Utc>, f64)> = out
            .datapoints()
            .iter()
            .filter_map(|d| {
                let at = d.timestamp().and_then(to_utc)?;
                let v = match stat {
                    Statistic::Average => d.average(),
                    Statistic::Maximum => d.maximum(),
                    Statistic::Minimum => d.minimum(),
                    Statistic::Sum => d.sum(),
                    Statistic::SampleCount => d.sample_count(),
                    _ => None,
                }?;
                Some((at, v))
            })
            .collect();
        points.sort_by_key(|(at, _)| *at);
        Ok(points)
    }
}

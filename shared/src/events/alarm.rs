//! CloudWatch alarm state changes, from EventBridge, SNS or the direct alarm action.
//!
//! Trigger shape, whatever the delivery:
//! - [`AlarmTrigger::SingleMetric`]: one metric, no expression. SNS carries threshold,
//!   comparison, evaluation periods and period. EventBridge and the direct action do
//!   not carry the alarm's threshold/comparison in `configuration`; we take the
//!   threshold from `state.reasonData` (JSON string) and the comparison from the
//!   standard "was greater than the threshold" wording of `state.reason`, when present.
//! - [`AlarmTrigger::AnomalyDetection`]: a `ThresholdMetricId` is set, or any metric's
//!   expression is `ANOMALY_DETECTION_BAND(..)`.
//! - [`AlarmTrigger::MetricMath`]: any other list of metrics (several, or with expressions).
//! - [`AlarmTrigger::Composite`]: an `AlarmRule` / `alarmRule` is present.
//! - [`AlarmTrigger::Unknown`]: nothing usable.

use std::collections::BTreeMap;

use aws_lambda_events::cloudwatch_alarms::CloudWatchAlarm;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::envelope::{clean, typed};
use super::util::{
    arn_account, arn_region, arn_tail, arr_field, as_object_or_json_string, f64_field, get,
    obj_field, scalar_string, stamp, str_field, time_field, truncate, u32_field,
};
use super::{Ctx, Delivery, NotForMe};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AlarmState {
    Ok,
    Alarm,
    InsufficientData,
}

impl AlarmState {
    /// `"OK"`, `"ALARM"`, `"INSUFFICIENT_DATA"` (case-insensitive, surrounding blanks ignored).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_uppercase().replace(' ', "_").as_str() {
            "OK" => Some(Self::Ok),
            "ALARM" => Some(Self::Alarm),
            "INSUFFICIENT_DATA" => Some(Self::InsufficientData),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::Alarm => "ALARM",
            Self::InsufficientData => "INSUFFICIENT_DATA",
        }
    }
}

impl std::fmt::Display for AlarmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One metric (or expression) of an alarm.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MetricRef {
    /// Metric-math id (`m1`, `e1`, `ad1`, or a generated uuid).
    pub id: Option<String>,
    pub namespace: Option<String>,
    pub metric_name: Option<String>,
    pub dimensions: BTreeMap<String, String>,
    /// Metric-math expression, e.g. `ANOMALY_DETECTION_BAND(m1, 2)`.
    pub expression: Option<String>,
    /// Statistic as written by AWS (`Average`, `AVERAGE`, `p99`…).
    pub stat: Option<String>,
}

/// A single-metric alarm.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SingleMetric {
    pub metric: MetricRef,
    pub threshold: Option<f64>,
    /// `GreaterThanThreshold`, `LessThanThreshold`…
    pub comparison: Option<String>,
    pub evaluation_periods: Option<u32>,
    pub period_seconds: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AlarmTrigger {
    SingleMetric(SingleMetric),
    MetricMath {
        metrics: Vec<MetricRef>,
    },
    AnomalyDetection {
        metrics: Vec<MetricRef>,
        threshold_metric_id: Option<String>,
    },
    Composite {
        rule: Option<String>,
    },
    Unknown,
}

impl AlarmTrigger {
    /// Every metric the trigger references (none for composite/unknown).
    pub fn metrics(&self) -> Vec<&MetricRef> {
        match self {
            Self::SingleMetric(s) => vec![&s.metric],
            Self::MetricMath { metrics } | Self::AnomalyDetection { metrics, .. } => {
                metrics.iter().collect()
            }
            Self::Composite { .. } | Self::Unknown => Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlarmChange {
    pub alarm_name: String,
    pub alarm_arn: Option<String>,
    pub account: Option<String>,
    /// Region code (`us-east-1`), from the ARN or the envelope; never the SNS long name.
    pub region: Option<String>,
    pub state: AlarmState,
    pub previous_state: Option<AlarmState>,
    /// When the alarm entered its previous state, where the delivery says (EventBridge's
    /// `previousState.timestamp`; SNS deliveries do not carry it).
    pub previous_changed_at: Option<DateTime<Utc>>,
    pub reason: String,
    pub changed_at: DateTime<Utc>,
    pub trigger: AlarmTrigger,
    pub delivery: Delivery,
    pub event_id: String,
}

impl AlarmChange {
    /// Value of dimension `key` on any metric of the trigger (first match).
    pub fn dimension(&self, key: &str) -> Option<&str> {
        self.trigger
            .metrics()
            .into_iter()
            .find_map(|m| m.dimensions.get(key))
            .map(String::as_str)
    }

    /// The first metric name of the trigger, if any.
    pub fn metric_name(&self) -> Option<&str> {
        self.trigger
            .metrics()
            .into_iter()
            .find_map(|m| m.metric_name.as_deref())
    }

    pub fn is_alarm(&self) -> bool {
        self.state == AlarmState::Alarm
    }

    /// The datapoints CloudWatch names in its standard reason wording ("Threshold Crossed: 2
    /// out of the last 2 datapoints [91.7 (25/11/26 22:25:00), 88.2 (…)] were …"), newest first
    /// as CloudWatch writes them; empty when the reason does not list them.
    pub fn datapoints(&self) -> Vec<f64> {
        let r = &self.reason;
        let Some(open) = r.find("datapoints [").map(|i| i + "datapoints [".len()) else {
            return Vec::new();
        };
        let Some(len) = r[open..].find(']') else {
            return Vec::new();
        };
        r[open..open + len]
            .split(',')
            .filter_map(|p| p.split_whitespace().next()?.parse::<f64>().ok())
            .filter(|v| v.is_finite())
            .collect()
    }

    /// The alarm's threshold: the trigger's (SNS, `reasonData`), else the reason's
    /// "the threshold (70.0)".
    pub fn threshold(&self) -> Option<f64> {
        if let AlarmTrigger::SingleMetric(SingleMetric {
            threshold: Some(t), ..
        }) = &self.trigger
        {
            return Some(*t);
        }
        let r = &self.reason;
        let open = r.find("the threshold (")? + "the threshold (".len();
        let len = r[open..].find(')')?;
        r[open..open + len]
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
    }

    /// The comparison as a symbol (">", ">=", "<", "<="), from the trigger or the reason.
    pub fn comparison_symbol(&self) -> Option<&'static str> {
        let op = match &self.trigger {
            AlarmTrigger::SingleMetric(SingleMetric {
                comparison: Some(c),
                ..
            }) => Some(c.clone()),
            _ => None,
        }
        .or_else(|| comparison_from_reason(&self.reason))?;
        Some(match op.as_str() {
            "GreaterThanOrEqualToThreshold" => ">=",
            "GreaterThanThreshold" => ">",
            "LessThanOrEqualToThreshold" => "<=",
            "LessThanThreshold" => "<",
            _ => return None,
        })
    }
}

/// What every delivery yields before validation.
struct Draft {
    name: Option<String>,
    arn: Option<String>,
    account: Option<String>,
    region: Option<String>,
    state: Option<String>,
    previous: Option<String>,
    previous_time: Option<DateTime<Utc>>,
    reason: Option<String>,
    time: Option<DateTime<Utc>>,
    trigger: AlarmTrigger,
    id: Option<String>,
}

fn finish(
    d: Draft,
    delivery: Delivery,
    fallback_time: Option<DateTime<Utc>>,
) -> Result<AlarmChange, NotForMe> {
    let alarm_name = d
        .name
        .or_else(|| {
            d.arn
                .as_deref()
                .filter(|a| a.contains(":alarm:"))
                .and_then(arn_tail)
        })
        .ok_or_else(|| NotForMe::new("CloudWatch alarm without AlarmName or AlarmArn"))?;
    let state = match d.state {
        None => {
            return Err(NotForMe::new(format!(
                "CloudWatch alarm '{alarm_name}' without a new state value"
            )))
        }
        Some(s) => AlarmState::parse(&s).ok_or_else(|| {
            NotForMe::new(format!(
                "CloudWatch alarm '{alarm_name}' has unknown state '{}'",
                truncate(&s, 40)
            ))
        })?,
    };
    let changed_at = d.time.or(fallback_time).ok_or_else(|| {
        NotForMe::new(format!(
            "CloudWatch alarm '{alarm_name}' without a parsable state change time"
        ))
    })?;
    let account = d.account.or_else(|| d.arn.as_deref().and_then(arn_account));
    let region = d.arn.as_deref().and_then(arn_region).or(d.region);
    let event_id = d.id.unwrap_or_else(|| {
        format!(
            "{}/{}",
            d.arn.as_deref().unwrap_or(&alarm_name),
            stamp(&changed_at)
        )
    });
    Ok(AlarmChange {
        alarm_name,
        alarm_arn: d.arn,
        account,
        region,
        state,
        previous_state: d.previous.as_deref().and_then(AlarmState::parse),
        previous_changed_at: d.previous_time,
        reason: d.reason.unwrap_or_default(),
        changed_at,
        trigger: d.trigger,
        delivery,
        event_id,
    })
}

/// `detail-type: "CloudWatch Alarm State Change"`.
pub(crate) fn from_eventbridge(ev: &Value, ctx: &Ctx) -> Result<AlarmChange, NotForMe> {
    let detail = obj_field(ev, &["detail"])
        .ok_or_else(|| NotForMe::new("CloudWatch Alarm State Change event without detail"))?;
    let arn = str_field(detail, &["alarmArn"]).or_else(|| {
        ctx.resources
            .iter()
            .find(|r| r.contains(":alarm:"))
            .cloned()
    });
    let d = from_alarm_data(
        detail,
        arn,
        ctx.account.clone(),
        ctx.region.clone(),
        ctx.id.clone(),
    );
    finish(d, ctx.delivery, ctx.time)
}

/// The CloudWatch direct Lambda alarm action payload (`alarmData`). The envelope is read as
/// `aws_lambda_events`' `CloudWatchAlarm` where the crate accepts it (it wants `state.timestamp`,
/// absent from some INSUFFICIENT_DATA payloads, and knows no `account` alias); `alarmData` by ours.
pub(crate) fn from_direct_action(ev: &Value) -> Result<AlarmChange, NotForMe> {
    let (source, arn, account, region, time) = match typed::<CloudWatchAlarm<Value, Value>>(ev) {
        Some(t) => (
            t.source.and_then(clean),
            t.alarm_arn.and_then(clean),
            t.account_id.and_then(clean),
            t.region.and_then(clean),
            Some(t.time),
        ),
        None => (
            str_field(ev, &["source"]),
            str_field(ev, &["alarmArn"]),
            str_field(ev, &["accountId", "account"]),
            str_field(ev, &["region"]),
            time_field(ev, &["time"]),
        ),
    };
    if let Some(src) = source {
        if src != "aws.cloudwatch" {
            return Err(NotForMe::new(format!(
                "alarmData payload from unexpected source '{}'",
                truncate(&src, 60)
            )));
        }
    }
    let data = obj_field(ev, &["alarmData"]).ok_or_else(|| {
        NotForMe::new("CloudWatch alarm action with alarmData that is not an object")
    })?;
    // No id: `finish` composes it from the ARN (or name) and the state's time.
    let d = from_alarm_data(data, arn, account, region, None);
    finish(d, Delivery::AlarmAction, time)
}

/// EventBridge `detail` and direct-action `alarmData` share one shape.
fn from_alarm_data(
    data: &Value,
    arn: Option<String>,
    account: Option<String>,
    region: Option<String>,
    id: Option<String>,
) -> Draft {
    let state = obj_field(data, &["state"]);
    let previous = obj_field(data, &["previousState"]);
    let config = obj_field(data, &["configuration"]);
    Draft {
        name: str_field(data, &["alarmName"]),
        arn,
        account,
        region,
        state: state.and_then(|s| str_field(s, &["value"])),
        previous: previous.and_then(|s| str_field(s, &["value"])),
        previous_time: previous.and_then(|s| time_field(s, &["timestamp"])),
        reason: state.and_then(|s| str_field(s, &["reason"])),
        time: state.and_then(|s| time_field(s, &["timestamp"])),
        trigger: trigger_from_configuration(config, state),
        id,
    }
}

fn trigger_from_configuration(config: Option<&Value>, state: Option<&Value>) -> AlarmTrigger {
    let Some(config) = config else {
        return AlarmTrigger::Unknown;
    };
    if let Some(rule) = str_field(config, &["alarmRule"]) {
        return AlarmTrigger::Composite { rule: Some(rule) };
    }
    let raw_metrics = arr_field(config, &["metrics"]);
    let metrics: Vec<(MetricRef, Option<u32>)> = raw_metrics
        .iter()
        .filter(|m| m.is_object())
        .map(|m| {
            let stat = obj_field(m, &["metricStat"]);
            let metric = stat.and_then(|s| obj_field(s, &["metric"]));
            let r = MetricRef {
                id: str_field(m, &["id"]),
                namespace: metric.and_then(|x| str_field(x, &["namespace"])),
                metric_name: metric.and_then(|x| str_field(x, &["name", "metricName"])),
                dimensions: metric
                    .and_then(|x| get(x, "dimensions"))
                    .map(dimensions)
                    .unwrap_or_default(),
                expression: str_field(m, &["expression"]),
                stat: stat.and_then(|s| str_field(s, &["stat"])),
            };
            (r, stat.and_then(|s| u32_field(s, &["period"])))
        })
        .filter(|(r, _)| *r != MetricRef::default())
        .collect();
    let threshold_metric_id = str_field(config, &["thresholdMetricId"]);
    classify_metrics(metrics, threshold_metric_id, |metric, period| {
        let reason = state.and_then(|s| str_field(s, &["reason"]));
        let reason_data = state
            .and_then(|s| get(s, "reasonData"))
            .and_then(as_object_or_json_string);
        SingleMetric {
            metric,
            threshold: reason_data
                .as_ref()
                .and_then(|r| f64_field(r, &["threshold"])),
            comparison: reason.as_deref().and_then(comparison_from_reason),
            evaluation_periods: None,
            period_seconds: period,
        }
    })
}

/// Shared metric-list decision: anomaly band → single metric → metric math.
fn classify_metrics(
    metrics: Vec<(MetricRef, Option<u32>)>,
    threshold_metric_id: Option<String>,
    single: impl FnOnce(MetricRef, Option<u32>) -> SingleMetric,
) -> AlarmTrigger {
    let band_id = metrics.iter().find_map(|(m, _)| {
        m.expression
            .as_deref()
            .filter(|e| e.to_ascii_uppercase().contains("ANOMALY_DETECTION_BAND"))
            .map(|_| m.id.clone())
    });
    if threshold_metric_id.is_some() || band_id.is_some() {
        return AlarmTrigger::AnomalyDetection {
            threshold_metric_id: threshold_metric_id.or(band_id.flatten()),
            metrics: metrics.into_iter().map(|(m, _)| m).collect(),
        };
    }
    match <[_; 1]>::try_from(metrics) {
        Ok([(m, period)]) if m.expression.is_none() => {
            AlarmTrigger::SingleMetric(single(m, period))
        }
        Ok([(m, _)]) => AlarmTrigger::MetricMath { metrics: vec![m] },
        Err(metrics) if metrics.is_empty() => AlarmTrigger::Unknown,
        Err(metrics) => AlarmTrigger::MetricMath {
            metrics: metrics.into_iter().map(|(m, _)| m).collect(),
        },
    }
}

/// Map the standard reason wording back to the comparison operator.
fn comparison_from_reason(reason: &str) -> Option<String> {
    let r = reason.to_ascii_lowercase();
    let op = if r.contains("greater than or equal to the threshold") {
        "GreaterThanOrEqualToThreshold"
    } else if r.contains("greater than the threshold") {
        "GreaterThanThreshold"
    } else if r.contains("less than or equal to the threshold") {
        "LessThanOrEqualToThreshold"
    } else if r.contains("less than the threshold") {
        "LessThanThreshold"
    } else {
        return None;
    };
    Some(op.to_string())
}

/// `{"Name": "Value"}` or `[{"name": "Name", "value": "Value"}]` (any key case).
fn dimensions(v: &Value) -> BTreeMap<String, String> {
    match v {
        Value::Object(m) => m
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), scalar_string(v)?)))
            .collect(),
        Value::Array(a) => a
            .iter()
            .filter_map(|d| Some((str_field(d, &["name"])?, str_field(d, &["value"])?)))
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// The classic alarm notification JSON in an SNS `Message`.
pub(crate) fn from_sns(msg: &Value, ctx: &Ctx) -> Result<AlarmChange, NotForMe> {
    // `Region` is the long name ("US East (N. Virginia)"); only trust it if it is a code.
    let region_code = str_field(msg, &["Region"]).filter(|r| looks_like_region_code(r));
    let d = Draft {
        name: str_field(msg, &["AlarmName"]),
        arn: str_field(msg, &["AlarmArn"]),
        account: str_field(msg, &["AWSAccountId", "AccountId"]),
        region: region_code.or_else(|| ctx.region.clone()),
        state: str_field(msg, &["NewStateValue"]),
        previous: str_field(msg, &["OldStateValue"]),
        previous_time: None,
        reason: str_field(msg, &["NewStateReason"]),
        time: time_field(msg, &["StateChangeTime"]),
        trigger: trigger_from_sns(msg),
        id: ctx.id.clone(),
    };
    finish(d, ctx.delivery, ctx.time)
}

fn looks_like_region_code(r: &str) -> bool {
    r.contains('-')
        && r.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn trigger_from_sns(msg: &Value) -> AlarmTrigger {
    let rule = str_field(msg, &["AlarmRule"]);
    let Some(trigger) = obj_field(msg, &["Trigger"]) else {
        return match rule {
            Some(rule) => AlarmTrigger::Composite { rule: Some(rule) },
            None => AlarmTrigger::Unknown,
        };
    };
    let threshold = f64_field(trigger, &["Threshold"]);
    let comparison = str_field(trigger, &["ComparisonOperator"]);
    let evaluation_periods = u32_field(trigger, &["EvaluationPeriods"]);
    let period = u32_field(trigger, &["Period"]);
    let listed = arr_field(trigger, &["Metrics"]);
    let metrics: Vec<(MetricRef, Option<u32>)> = if listed.is_empty() {
        let m = MetricRef {
            id: None,
            namespace: str_field(trigger, &["Namespace"]),
            metric_name: str_field(trigger, &["MetricName"]),
            dimensions: get(trigger, "Dimensions")
                .map(dimensions)
                .unwrap_or_default(),
            expression: None,
            stat: str_field(trigger, &["Statistic", "ExtendedStatistic"]),
        };
        if m == MetricRef::default() {
            Vec::new()
        } else {
            vec![(m, period)]
        }
    } else {
        listed
            .iter()
            .filter(|m| m.is_object())
            .map(|m| {
                let stat = obj_field(m, &["MetricStat"]);
                let metric = stat.and_then(|s| obj_field(s, &["Metric"]));
                let r = MetricRef {
                    id: str_field(m, &["Id"]),
                    namespace: metric.and_then(|x| str_field(x, &["Namespace"])),
                    metric_name: metric.and_then(|x| str_field(x, &["MetricName", "Name"])),
                    dimensions: metric
                        .and_then(|x| get(x, "Dimensions"))
                        .map(dimensions)
                        .unwrap_or_default(),
                    expression: str_field(m, &["Expression"]),
                    stat: stat.and_then(|s| str_field(s, &["Stat"])),
                };
                (r, stat.and_then(|s| u32_field(s, &["Period"])).or(period))
            })
            .filter(|(r, _)| *r != MetricRef::default())
            .collect()
    };
    let threshold_metric_id = str_field(trigger, &["ThresholdMetricId"]);
    let out = classify_metrics(metrics, threshold_metric_id, |metric, p| SingleMetric {
        metric,
        threshold,
        comparison,
        evaluation_periods,
        period_seconds: p.or(period),
    });
    match (out, rule) {
        (AlarmTrigger::Unknown, Some(rule)) => AlarmTrigger::Composite { rule: Some(rule) },
        (out, _) => out,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::tests::{one, reason};
    use super::super::{classify, classify_str, Inbound};
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn alarm(fixture: &str) -> AlarmChange {
        match one(fixture) {
            Inbound::Alarm(a) => a,
            other => panic!("expected alarm, got {other:#?}"),
        }
    }

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32, ms: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap() + chrono::Duration::milliseconds(ms)
    }

    #[test]
    fn datapoints_threshold_and_comparison_from_the_reason() {
        let a = alarm(include_str!(
            "../../../events/cloudwatch-alarm/eventbridge-worker-cpu-alarm.json"
        ));
        assert_eq!(a.datapoints(), vec![91.7, 88.2]);
        assert_eq!(a.threshold(), Some(85.0));
        assert_eq!(a.comparison_symbol(), Some(">="));
        let a = alarm(include_str!(
            "../../../events/cloudwatch-alarm/eventbridge-rds-memory-alarm.json"
        ));
        assert_eq!(a.datapoints(), vec![1.1010048e8, 1.2010048e8, 1.3010048e8]);
        assert_eq!(a.comparison_symbol(), Some("<"));
        let a = alarm(include_str!(
            "../../../events/cloudwatch-alarm/eventbridge-memcached-memory-metric-math.json"
        ));
        assert_eq!((a.datapoints().len(), a.threshold()), (3, Some(75.0)));
        let mut a = a;
        a.reason = "Threshold Crossed".into();
        assert!(a.datapoints().is_empty());
        assert_eq!((a.threshold(), a.comparison_symbol()), (None, None));
        a.reason = "datapoints [x (1), 5 (2)] the threshold (oops)".into();
        assert_eq!((a.datapoints(), a.threshold()), (vec![5.0], None));
    }

    #[test]
    fn eventbridge_single_metric_alarm() {
        let a = alarm(include_str!(
            "../../../events/cloudwatch-alarm/eventbridge-single-metric-alarm.json"
        ));
        assert_eq!(a.alarm_name, "nbaops-dev-web-cpu-high");
        assert_eq!(
            a.alarm_arn.as_deref(),
            Some("arn:aws:cloudwatch:us-east-1:123456789012:alarm:nbaops-dev-web-cpu-high")
        );
        assert_eq!(a.account.as_deref(), Some("123456789012"));
        assert_eq!(a.region.as_deref(), Some("us-east-1"));
        assert_eq!(a.state, AlarmState::Alarm);
        assert_eq!(a.previous_state, Some(AlarmState::Ok));
        assert!(a.reason.starts_with("Threshold Crossed"));
        assert_eq!(a.changed_at, at(2026, 11, 25, 20, 1, 2, 123));
        assert_eq!(a.delivery, Delivery::EventBridge);
        assert_eq!(a.event_id, "7f2c1a9e-4b1d-4c55-9a3e-1d2b3c4d5e01");
        assert_eq!(a.dimension("AutoScalingGroupName"), Some("nbaops-dev-web"));
        assert_eq!(a.dimension("InstanceId"), None);
        assert_eq!(a.metric_name(), Some("CPUUtilization"));
        let AlarmTrigger::SingleMetric(s) = &a.trigger else {
            panic!("{:?}", a.trigger)
        };
        assert_eq!(s.metric.namespace.as_deref(), Some("AWS/EC2"));
        assert_eq!(s.metric.stat.as_deref(), Some("Average"));
        assert_eq!(s.threshold, Some(70.0));
        assert_eq!(s.comparison.as_deref(), Some("GreaterThanThreshold"));
        assert_eq!(s.period_seconds, Some(300));
        assert_eq!(s.evaluation_periods, None);
        assert!(a.is_alarm());
    }

    #[test]
    fn eventbridge_ok() {
        let a = alarm(include_str!(
            "../../../events/cloudwatch-alarm/eventbridge-ok.json"
        ));
        assert_eq!(a.state, AlarmState::Ok);
        assert_eq!(a.previous_state, Some(AlarmState::Alarm));
        assert_eq!(a.dimension("AutoScalingGroupName"), Some("nbaops-dev-web"));
        assert_eq!(a.changed_at, at(2026, 11, 25, 20, 16, 2, 456));
        let AlarmTrigger::SingleMetric(s) = &a.trigger else {
            panic!()
        };
        // "was not greater than the threshold" still names the alarm's operator.
        assert_eq!(s.comparison.as_deref(), Some("GreaterThanThreshold"));
        assert_eq!(s.threshold, Some(70.0));
    }

    #[test]
    fn eventbridge_rds_memory_alarm() {
        let a = alarm(include_str!(
            "../../../events/cloudwatch-alarm/eventbridge-rds-memory-alarm.json"
        ));
        assert_eq!(a.dimension("DBInstanceIdentifier"), Some("nbaops-dev-db"));
        assert_eq!(a.metric_name(), Some("FreeableMemory"));
        let AlarmTrigger::SingleMetric(s) = &a.trigger else {
            panic!()
        };
        assert_eq!(s.metric.namespace.as_deref(), Some("AWS/RDS"));
        assert_eq!(s.comparison.as_deref(), Some("LessThanThreshold"));
        assert_eq!(s.threshold, Some(134_217_728.0));
        assert_eq!(s.period_seconds, Some(60));
    }

    #[test]
    fn eventbridge_worker_cpu_alarm() {
        let a = alarm(include_str!(
            "../../../events/cloudwatch-alarm/eventbridge-worker-cpu-alarm.json"
        ));
        assert_eq!(a.alarm_name, "nbaops-dev-worker-cpu-high");
        assert_eq!(
            a.dimension("AutoScalingGroupName"),
            Some("nbaops-dev-worker")
        );
        assert_eq!(a.state, AlarmState::Alarm);
        assert_eq!(a.previous_state, Some(AlarmState::InsufficientData));
        // state.timestamp is absent: the envelope time is used.
        assert_eq!(a.changed_at, at(2026, 11, 25, 22, 30, 5, 0));
    }

    #[test]
    fn sns_single_metric_alarm() {
        let a = alarm(include_str!(
            "../../../events/cloudwatch-alarm/sns-single-metric-alarm.json"
        ));
        assert_eq!(a.alarm_name, "nbaops-dev-web-cpu-high");
        assert_eq!(a.delivery, Delivery::Sns);
        assert_eq!(a.event_id, "c2a1e0b4-6f0e-5b7c-9d1e-2f3a4b5c6d01");
        assert_eq!(a.region.as_deref(), Some("us-east-1"));
        assert_eq!(a.account.as_deref(), Some("123456789012"));
        assert_eq!(a.state, AlarmState::Alarm);
        assert_eq!(a.previous_state, Some(AlarmState::Ok));
        assert_eq!(a.changed_at, at(2026, 11, 25, 20, 1, 2, 123));
        assert_eq!(a.dimension("AutoScalingGroupName"), Some("nbaops-dev-web"));
        let AlarmTrigger::SingleMetric(s) = &a.trigger else {
            panic!("{:?}", a.trigger)
        };
        assert_eq!(s.metric.metric_name.as_deref(), Some("CPUUtilization"));
        assert_eq!(s.metric.stat.as_deref(), Some("AVERAGE"));
        assert_eq!(s.threshold, Some(70.0));
        assert_eq!(s.comparison.as_deref(), Some("GreaterThanThreshold"));
        assert_eq!(s.evaluation_periods, Some(2));
        assert_eq!(s.period_seconds, Some(300));
    }

    #[test]
    fn sns_metric_math() {
        let a = alarm(include_str!(
            "../../../events/cloudwatch-alarm/sns-metric-math.json"
        ));
        let AlarmTrigger::MetricMath { metrics } = &a.trigger else {
            panic!("{:?}", a.trigger)
        };
        assert_eq!(metrics.len(), 3);
        assert_eq!(metrics[0].id.as_deref(), Some("e1"));
        assert_eq!(
            metrics[0].expression.as_deref(),
            Some("100 * m1 / (m1 + m2)")
        );
        assert_eq!(
            metrics[1].metric_name.as_deref(),
            Some("HTTPCode_Target_5XX_Count")
        );
        assert_eq!(metrics[1].stat.as_deref(), Some("Sum"));
        assert_eq!(
            a.dimension("LoadBalancer"),
            Some("app/nbaops-dev-web/0123456789abcdef")
        );
        assert_eq!(a.dimension("AutoScalingGroupName"), None);
    }

    #[test]
    fn sns_anomaly_detection() {
        let a = alarm(include_str!(
            "../../../events/cloudwatch-alarm/sns-anomaly-detection.json"
        ));
        let AlarmTrigger::AnomalyDetection {
            metrics,
            threshold_metric_id,
        } = &a.trigger
        else {
            panic!("{:?}", a.trigger)
        };
        assert_eq!(threshold_metric_id.as_deref(), Some("ad1"));
        assert_eq!(metrics.len(), 2);
        assert_eq!(a.dimension("AutoScalingGroupName"), Some("nbaops-dev-web"));
        assert_eq!(a.metric_name(), Some("NetworkIn"));
    }

    #[test]
    fn sns_composite() {
        let a = alarm(include_str!(
            "../../../events/cloudwatch-alarm/sns-composite.json"
        ));
        assert_eq!(a.alarm_name, "nbaops-dev-web-degraded");
        let AlarmTrigger::Composite { rule } = &a.trigger else {
            panic!("{:?}", a.trigger)
        };
        assert_eq!(
            rule.as_deref(),
            Some("ALARM(\"nbaops-dev-web-cpu-high\") OR ALARM(\"nbaops-dev-web-5xx-rate\")")
        );
        assert_eq!(a.dimension("AutoScalingGroupName"), None);
        assert!(a.trigger.metrics().is_empty());
    }

    #[test]
    fn direct_action_alarm() {
        let a = alarm(include_str!(
            "../../../events/cloudwatch-alarm/direct-action-alarm.json"
        ));
        assert_eq!(a.delivery, Delivery::AlarmAction);
        assert_eq!(a.alarm_name, "nbaops-dev-web-cpu-high");
        assert_eq!(
            a.event_id,
            "arn:aws:cloudwatch:us-east-1:123456789012:alarm:nbaops-dev-web-cpu-high/2026-11-25T20:01:02.123Z"
        );
        assert_eq!(a.state, AlarmState::Alarm);
        assert_eq!(a.region.as_deref(), Some("us-east-1"));
        assert_eq!(a.dimension("AutoScalingGroupName"), Some("nbaops-dev-web"));
        let AlarmTrigger::SingleMetric(s) = &a.trigger else {
            panic!()
        };
        assert_eq!(s.period_seconds, Some(300));
        assert_eq!(s.threshold, Some(70.0));
    }

    #[test]
    fn direct_action_insufficient_data() {
        let a = alarm(include_str!(
            "../../../events/cloudwatch-alarm/direct-action-insufficient-data.json"
        ));
        assert_eq!(a.state, AlarmState::InsufficientData);
        assert_eq!(a.previous_state, Some(AlarmState::Ok));
        assert_eq!(a.alarm_arn, None);
        assert_eq!(a.account.as_deref(), Some("123456789012"));
        // No state timestamp: envelope time, and the id uses the alarm name.
        assert_eq!(a.changed_at, at(2026, 11, 26, 3, 0, 0, 250));
        assert_eq!(
            a.event_id,
            "nbaops-dev-worker-cpu-high/2026-11-26T03:00:00.250Z"
        );
        assert_eq!(
            a.dimension("AutoScalingGroupName"),
            Some("nbaops-dev-worker")
        );
    }

    #[test]
    fn sns_memcached_memory_alarm() {
        let a = alarm(include_str!(
            "../../../events/cloudwatch-alarm/sns-memcached-memory-alarm.json"
        ));
        assert_eq!(a.dimension("CacheClusterId"), Some("nbaops-dev-cache"));
        assert_eq!(a.metric_name(), Some("FreeableMemory"));
        let AlarmTrigger::SingleMetric(s) = &a.trigger else {
            panic!()
        };
        assert_eq!(s.metric.namespace.as_deref(), Some("AWS/ElastiCache"));
        assert_eq!(s.comparison.as_deref(), Some("LessThanOrEqualToThreshold"));
        assert_eq!(s.threshold, Some(52_428_800.0));
    }

    #[test]
    fn sns_nulls_and_none() {
        let a = alarm(include_str!(
            "../../../events/cloudwatch-alarm/sns-nulls-and-none.json"
        ));
        assert_eq!(a.alarm_name, "nbaops-dev-db-cpu-high");
        assert_eq!(a.alarm_arn, None);
        assert_eq!(a.account, None);
        // Region "None" is ignored; the topic's region is used.
        assert_eq!(a.region.as_deref(), Some("us-east-1"));
        assert_eq!(a.previous_state, None);
        assert_eq!(a.reason, "");
        // StateChangeTime is "None": the SNS Timestamp is used.
        assert_eq!(a.changed_at, at(2026, 11, 25, 21, 0, 1, 500));
        assert_eq!(a.dimension("DBInstanceIdentifier"), Some("nbaops-dev-db"));
        let AlarmTrigger::SingleMetric(s) = &a.trigger else {
            panic!("{:?}", a.trigger)
        };
        assert_eq!(s.metric.stat, None);
        assert_eq!(s.threshold, Some(90.0));
        assert_eq!(s.comparison, None);
        assert_eq!(s.evaluation_periods, None);
        assert_eq!(s.metric.dimensions.len(), 1, "{:?}", s.metric.dimensions);
    }

    #[test]
    fn bad_state_is_not_for_me() {
        let mut v: Value = serde_json::from_str(include_str!(
            "../../../events/cloudwatch-alarm/eventbridge-single-metric-alarm.json"
        ))
        .unwrap();
        v["detail"]["state"]["value"] = json!("PANIC");
        let out = classify(&v);
        assert!(reason(&out[0]).contains("unknown state 'PANIC'"), "{out:?}");
        v["detail"]["state"]["value"] = json!("None");
        assert!(reason(&classify(&v)[0]).contains("without a new state"));
    }

    #[test]
    fn unparsable_time_without_fallback_is_not_for_me() {
        let out = classify_str(
            r#"{"source":"aws.cloudwatch","alarmData":{"alarmName":"x","state":{"value":"ALARM","timestamp":"soon"}}}"#,
        );
        assert!(reason(&out[0]).contains("time"), "{out:?}");
        // With an envelope time it is accepted.
        let out = classify_str(
            r#"{"source":"aws.cloudwatch","time":"2026-11-25T20:01:02.123+0000","alarmData":{"alarmName":"x","state":{"value":"alarm","timestamp":"soon"}}}"#,
        );
        let Inbound::Alarm(a) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(a.state, AlarmState::Alarm);
        assert_eq!(a.trigger, AlarmTrigger::Unknown);
        assert_eq!(a.event_id, "x/2026-11-25T20:01:02.123Z");
    }

    #[test]
    fn same_alarm_twice_same_id() {
        let f = include_str!("../../../events/cloudwatch-alarm/direct-action-alarm.json");
        assert_eq!(alarm(f).event_id, alarm(f).event_id);
    }

    #[test]
    fn missing_name_is_not_for_me() {
        let out = classify_str(
            r#"{"source":"aws.cloudwatch","time":"2026-11-25T20:01:02Z","alarmData":{"state":{"value":"ALARM"}}}"#,
        );
        assert!(reason(&out[0]).contains("without AlarmName"));
    }

    #[test]
    fn state_parsing() {
        assert_eq!(AlarmState::parse(" ok "), Some(AlarmState::Ok));
        assert_eq!(
            AlarmState::parse("INSUFFICIENT_DATA"),
            Some(AlarmState::InsufficientData)
        );
        assert_eq!(
            AlarmState::parse("Insufficient data"),
            Some(AlarmState::InsufficientData)
        );
        assert_eq!(AlarmState::parse("WARN"), None);
        assert_eq!(AlarmState::Alarm.to_string(), "ALARM");
        assert_eq!(
            serde_json::to_value(AlarmState::InsufficientData).unwrap(),
            json!("INSUFFICIENT_DATA")
        );
    }
}

//! The CloudWatch and EventBridge Scheduler ports against the emulator, with the same assertions
//! on the in-memory fakes, so the fakes the functions' unit tests use cannot drift from the
//! adapters the binaries run.

use std::collections::BTreeMap;

use aws_sdk_cloudwatch::types::{
    ComparisonOperator, Dimension, MetricDatum, StandardUnit, Statistic,
};
use chrono::{Duration, TimeZone, Utc};
use nbaops_shared::adapters::{SdkCloudWatch, SdkScheduler};
use nbaops_shared::fakes::{FakeCloudWatch, FakeScheduler};
use nbaops_shared::ports::{CloudWatch, MetricAlarm, MetricQuery, OneTimeSchedule, Scheduler};
use nbaops_tests::demo::Stack;
use serde_json::json;

const ALARM: &str = "nbaops-test-db-memory-high";

fn dims() -> BTreeMap<String, String> {
    [("DBInstanceIdentifier".to_string(), "nbaops-db".to_string())].into()
}

async fn alarms_contract(cw: &dyn CloudWatch) {
    let a = cw.describe_alarm(ALARM).await.unwrap().expect("the alarm");
    assert_eq!(a.name, ALARM);
    assert_eq!(a.metric.as_deref(), Some("FreeableMemory"));
    assert_eq!(a.namespace.as_deref(), Some("AWS/RDS"));
    assert_eq!(a.dimensions, dims());
    assert_eq!(a.threshold, Some(214_748_364.0));
    assert_eq!(a.comparison.as_deref(), Some("LessThanThreshold"));
    assert!(cw.describe_alarm("no-such-alarm").await.unwrap().is_none());

    let found = cw
        .alarms_for_metric("AWS/RDS", "FreeableMemory", &dims())
        .await
        .unwrap();
    assert_eq!(
        found.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(),
        [ALARM]
    );
    let other: BTreeMap<String, String> =
        [("DBInstanceIdentifier".to_string(), "another-db".to_string())].into();
    assert!(cw
        .alarms_for_metric("AWS/RDS", "FreeableMemory", &other)
        .await
        .unwrap()
        .is_empty());

    cw.set_alarm_threshold(ALARM, 429_496_729.0).await.unwrap();
    let b = cw.describe_alarm(ALARM).await.unwrap().unwrap();
    assert_eq!(b.threshold, Some(429_496_729.0));
    // Everything else as it was.
    assert_eq!(
        (b.metric, b.namespace, b.dimensions, b.comparison),
        (a.metric, a.namespace, a.dimensions, a.comparison)
    );
    assert!(cw.set_alarm_threshold("no-such-alarm", 1.0).await.is_err());
}

async fn statistics_contract(cw: &dyn CloudWatch, t0: chrono::DateTime<Utc>) {
    let q = MetricQuery {
        namespace: "AWS/EC2".into(),
        metric: "CPUUtilization".into(),
        dimensions: [("AutoScalingGroupName".to_string(), "web".to_string())].into(),
        statistic: "Average".into(),
        from: t0,
        to: t0 + Duration::minutes(15),
        period_seconds: 300,
    };
    let points = cw.statistics(&q).await.unwrap();
    let values: Vec<f64> = points.iter().map(|(_, v)| *v).collect();
    assert_eq!(values, [20.0, 30.0, 40.0], "oldest first, one per period");
    let empty = MetricQuery {
        metric: "NetworkIn".into(),
        ..q
    };
    assert!(cw.statistics(&empty).await.unwrap().is_empty());
}

async fn scheduler_contract(s: &dyn Scheduler, group: &str) {
    let one = OneTimeSchedule {
        group: group.into(),
        name: OneTimeSchedule::name_for("recheck#web#nbaops-test-web-cpu-high"),
        at: Utc.with_ymd_and_hms(2026, 6, 17, 14, 5, 0).unwrap(),
        target_arn:
            "arn:aws:lambda:us-east-1:123456789012:function:nbaops-test-scale-on-alarm:live".into(),
        role_arn: "arn:aws:iam::123456789012:role/nbaops-test-scale-followups".into(),
        input: json!({"nbaops": {"task": "scale-recheck"}}),
    };
    assert!(s.create_once(&one).await.unwrap(), "created");
    assert!(
        !s.create_once(&one).await.unwrap(),
        "a second create of the same name changes nothing"
    );
    assert!(s.delete(group, &one.name).await.unwrap());
    assert!(!s.delete(group, &one.name).await.unwrap(), "already gone");
    let bad = OneTimeSchedule {
        name: "has spaces".into(),
        ..one
    };
    assert!(s.create_once(&bad).await.is_err(), "AWS refuses the name");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudwatch_fake_and_emulator_agree() {
    let stack = Stack::start(false).await.unwrap();
    let c = &stack.clients.cw;
    c.put_metric_alarm()
        .alarm_name(ALARM)
        .namespace("AWS/RDS")
        .metric_name("FreeableMemory")
        .dimensions(
            Dimension::builder()
                .name("DBInstanceIdentifier")
                .value("nbaops-db")
                .build(),
        )
        .statistic(Statistic::Average)
        .period(300)
        .evaluation_periods(1)
        .threshold(214_748_364.0)
        .comparison_operator(ComparisonOperator::LessThanThreshold)
        .alarm_actions("arn:aws:sns:us-east-1:123456789012:nbaops-test-alerts")
        .send()
        .await
        .unwrap();
    // Datapoints well in the past (moto keeps what it is given): three 5-minute periods.
    let t0 = Utc.with_ymd_and_hms(2026, 6, 17, 13, 0, 0).unwrap();
    for (i, v) in [20.0, 30.0, 40.0].iter().enumerate() {
        let at = t0 + Duration::minutes(5 * i as i64 + 1);
        c.put_metric_data()
            .namespace("AWS/EC2")
            .metric_data(
                MetricDatum::builder()
                    .metric_name("CPUUtilization")
                    .dimensions(
                        Dimension::builder()
                            .name("AutoScalingGroupName")
                            .value("web")
                            .build(),
                    )
                    .timestamp(aws_smithy_types::DateTime::from_secs(at.timestamp()))
                    .value(*v)
                    .unit(StandardUnit::Percent)
                    .build(),
            )
            .send()
            .await
            .unwrap();
    }
    let real = SdkCloudWatch(c.clone());
    alarms_contract(&real).await;
    // What the rewrite kept that the reduced view does not show: the actions.
    let raw = c.describe_alarms().alarm_names(ALARM).send().await.unwrap();
    assert_eq!(
        raw.metric_alarms()[0].alarm_actions(),
        ["arn:aws:sns:us-east-1:123456789012:nbaops-test-alerts"]
    );
    assert_eq!(raw.metric_alarms()[0].period(), Some(300));
    statistics_contract(&real, t0).await;
    let in_alarm = real.alarms_in_state("ALARM").await.unwrap();
    assert!(in_alarm.is_empty(), "{in_alarm:?}");
    c.set_alarm_state()
        .alarm_name(ALARM)
        .state_value(aws_sdk_cloudwatch::types::StateValue::Alarm)
        .state_reason("test")
        .send()
        .await
        .unwrap();
    let in_alarm = real.alarms_in_state("ALARM").await.unwrap();
    assert_eq!(in_alarm.len(), 1);
    assert!(in_alarm[0].in_alarm());

    let fake = FakeCloudWatch::with(vec![MetricAlarm {
        name: ALARM.into(),
        arn: None,
        state: "OK".into(),
        state_updated: None,
        namespace: Some("AWS/RDS".into()),
        metric: Some("FreeableMemory".into()),
        dimensions: dims(),
        threshold: Some(214_748_364.0),
        comparison: Some("LessThanThreshold".into()),
    }]);
    fake.add_points(
        "AWS/EC2",
        "CPUUtilization",
        &[("AutoScalingGroupName", "web")],
        &[
            (t0 + Duration::minutes(1), 20.0),
            (t0 + Duration::minutes(6), 30.0),
            (t0 + Duration::minutes(11), 40.0),
        ],
    );
    alarms_contract(&fake).await;
    statistics_contract(&fake, t0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_fake_and_emulator_agree() {
    let stack = Stack::start(false).await.unwrap();
    let c = &stack.clients.scheduler;
    c.create_schedule_group()
        .name("nbaops-test-scale-followups")
        .send()
        .await
        .unwrap();
    let real = SdkScheduler(c.clone());
    scheduler_contract(&real, "nbaops-test-scale-followups").await;
    // What AWS is asked for: a one-time at() expression in UTC, deleted after it ran.
    let probe = OneTimeSchedule {
        group: "nbaops-test-scale-followups".into(),
        name: "probe".into(),
        at: Utc.with_ymd_and_hms(2026, 6, 17, 14, 5, 0).unwrap(),
        target_arn: "arn:aws:lambda:us-east-1:123456789012:function:f".into(),
        role_arn: "arn:aws:iam::123456789012:role/r".into(),
        input: json!({"nbaops": {"task": "scale-recheck", "n": 1}}),
    };
    assert!(real.create_once(&probe).await.unwrap());
    let got = c
        .get_schedule()
        .group_name(&probe.group)
        .name("probe")
        .send()
        .await
        .unwrap();
    assert_eq!(got.schedule_expression(), Some("at(2026-06-17T14:05:00)"));
    assert_eq!(got.schedule_expression_timezone(), Some("UTC"));
    assert_eq!(
        got.action_after_completion().map(|a| a.as_str()),
        Some("DELETE")
    );
    let target = got.target().unwrap();
    assert_eq!(target.arn(), probe.target_arn);
    assert_eq!(target.role_arn(), probe.role_arn);
    let input: serde_json::Value = serde_json::from_str(target.input().unwrap()).unwrap();
    assert_eq!(input, probe.input);

    let fake = FakeScheduler::default();
    scheduler_contract(&fake, "nbaops-test-scale-followups").await;
}

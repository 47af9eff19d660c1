//! Issue #17 end to end: the RDS alarms follow the instance's class. The real scale-on-alarm
//! binary, over the Lambda Runtime API, against moto (CloudWatch through the harness's CBOR bridge).
//! The template's two alarms are created at db.t3.micro's thresholds; the instance moves to
//! db.t3.small in moto; the daily `alarm-drift` task sets the thresholds to the SPEC percentages of
//! db.t3.small (80 % memory used: FreeableMemory < 20 % of 2 GiB; 80 % of the default
//! max_connections 199) and leaves every other field of the alarms as it was, in ONE guarded,
//! audited action for the instance (`cloudwatch.set_thresholds` on `rds:<id>`).

use aws_sdk_cloudwatch::types::{ComparisonOperator, Dimension, MetricAlarm, Statistic};
use nbaops_tests::demo::Stack;
use nbaops_tests::function::FunctionUnderTest;
use nbaops_tests::function_binary;
use nbaops_tests::platform::{self, DB};
use serde_json::{json, Value};

const FN: &str = "scale-on-alarm";
/// Aligning one instance's alarms: one guarded action on `rds:<id>`.
const SET_THRESHOLDS: &str = "cloudwatch.set_thresholds";
const MEMORY: &str = "nbaops-dev-db-memory-high";
const CONNECTIONS: &str = "nbaops-dev-db-connections-high";
/// Someone else's alarm on the same metric and instance: not nbaops', never rewritten.
const THEIRS: &str = "team-dba-db-connections";

/// db.t3.micro's thresholds, the template's parameter defaults.
const MICRO_FREEABLE: f64 = 214_748_364.0;
const MICRO_CONNECTIONS: f64 = 70.0;
/// db.t3.small's: 20 % of 2 GiB (floored); 80 % of LEAST((2 GiB - 233 MiB) / 9531392, 5000) = 199.
const SMALL_FREEABLE: f64 = 429_496_729.0;
const SMALL_CONNECTIONS: f64 = 159.0;

async fn start(stack: &Stack, extra: &[(&str, &str)]) -> FunctionUnderTest {
    FunctionUnderTest::start(
        &function_binary(FN).unwrap(),
        FN,
        &stack.function_env(extra),
        1,
    )
    .await
    .unwrap()
}

async fn put_alarm(
    stack: &Stack,
    name: &str,
    metric: &str,
    cmp: ComparisonOperator,
    threshold: f64,
) {
    stack
        .clients
        .cw
        .put_metric_alarm()
        .alarm_name(name)
        .alarm_description(format!("{metric} of {DB}"))
        .namespace("AWS/RDS")
        .metric_name(metric)
        .dimensions(
            Dimension::builder()
                .name("DBInstanceIdentifier")
                .value(DB)
                .build(),
        )
        .statistic(Statistic::Average)
        .period(300)
        .evaluation_periods(1)
        .threshold(threshold)
        .comparison_operator(cmp)
        .alarm_actions(stack.platform.alerts_topic.clone())
        .ok_actions(stack.platform.alerts_topic.clone())
        .treat_missing_data("missing")
        .send()
        .await
        .unwrap();
}

async fn alarm(stack: &Stack, name: &str) -> MetricAlarm {
    let out = stack
        .clients
        .cw
        .describe_alarms()
        .alarm_names(name)
        .send()
        .await
        .unwrap();
    out.metric_alarms()
        .first()
        .cloned()
        .unwrap_or_else(|| panic!("{name} missing"))
}

/// Every field the rewrite must keep, threshold aside.
fn kept(a: &MetricAlarm) -> String {
    format!(
        "{:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?}",
        a.alarm_description(),
        a.namespace(),
        a.metric_name(),
        a.dimensions(),
        a.statistic(),
        a.period(),
        a.evaluation_periods(),
        a.comparison_operator(),
        a.alarm_actions(),
        a.ok_actions(),
        a.treat_missing_data(),
    )
}

fn drift_task(id: &str) -> Value {
    json!({"nbaops": {"task": "alarm-drift", "id": id}})
}

fn actions(v: &Value) -> Vec<Value> {
    v["records"][0]["actions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_class_change_the_alarms_follow_the_class_once() {
    let stack = Stack::start(false).await.unwrap();
    put_alarm(
        &stack,
        MEMORY,
        "FreeableMemory",
        ComparisonOperator::LessThanThreshold,
        MICRO_FREEABLE,
    )
    .await;
    put_alarm(
        &stack,
        CONNECTIONS,
        "DatabaseConnections",
        ComparisonOperator::GreaterThanThreshold,
        MICRO_CONNECTIONS,
    )
    .await;
    put_alarm(
        &stack,
        THEIRS,
        "DatabaseConnections",
        ComparisonOperator::GreaterThanThreshold,
        MICRO_CONNECTIONS,
    )
    .await;
    let before = [
        kept(&alarm(&stack, MEMORY).await),
        kept(&alarm(&stack, CONNECTIONS).await),
    ];

    // On db.t3.micro the thresholds are already right: nothing to do.
    let f = start(&stack, &[]).await;
    let v = f.invoke_ok(drift_task("drift-micro")).await.unwrap();
    assert!(actions(&v).is_empty(), "{v}");
    assert_eq!(
        alarm(&stack, MEMORY).await.threshold(),
        Some(MICRO_FREEABLE)
    );

    // The class change, applied immediately; moto reports the new class at once, nothing pending.
    stack
        .clients
        .rds
        .modify_db_instance()
        .db_instance_identifier(DB)
        .db_instance_class("db.t3.small")
        .apply_immediately(true)
        .send()
        .await
        .unwrap();
    assert_eq!(
        platform::db_class(&stack.clients, DB).await.unwrap(),
        ("db.t3.small".to_string(), None)
    );

    // Dry-run: the would-be changes are reported, nothing changes in CloudWatch.
    let dry = start(&stack, &[("NBAOPS_GUARD__DRY_RUN_FUNCTIONS", FN)]).await;
    let v = dry.invoke_ok(drift_task("drift-dry")).await.unwrap();
    let acts = actions(&v);
    assert_eq!(
        acts.len(),
        1,
        "one action for the instance's two alarms: {v}"
    );
    let act = &acts[0];
    assert_eq!(act["outcome"], "would-act", "{v}");
    assert_eq!(act["action"], SET_THRESHOLDS, "{v}");
    assert_eq!(act["resource"], format!("rds:{DB}"), "{v}");
    assert_eq!(
        act["before"],
        json!({MEMORY: MICRO_FREEABLE, CONNECTIONS: MICRO_CONNECTIONS}),
        "{act}"
    );
    assert_eq!(
        act["after"],
        json!({MEMORY: SMALL_FREEABLE, CONNECTIONS: SMALL_CONNECTIONS}),
        "{act}"
    );
    assert_eq!(
        alarm(&stack, MEMORY).await.threshold(),
        Some(MICRO_FREEABLE)
    );
    assert_eq!(
        alarm(&stack, CONNECTIONS).await.threshold(),
        Some(MICRO_CONNECTIONS)
    );

    // For real: both thresholds follow db.t3.small, every other field as it was.
    let v = f.invoke_ok(drift_task("drift-1")).await.unwrap();
    let acts = actions(&v);
    assert_eq!(acts.len(), 1, "{v}");
    assert_eq!(acts[0]["outcome"], "acted", "{v}");
    assert_eq!(acts[0]["action"], SET_THRESHOLDS, "{v}");
    let memory = alarm(&stack, MEMORY).await;
    let connections = alarm(&stack, CONNECTIONS).await;
    assert_eq!(memory.threshold(), Some(SMALL_FREEABLE));
    assert_eq!(connections.threshold(), Some(SMALL_CONNECTIONS));
    assert_eq!([kept(&memory), kept(&connections)], before);
    assert_eq!(
        alarm(&stack, THEIRS).await.threshold(),
        Some(MICRO_CONNECTIONS)
    );
    let audited: Vec<Value> = platform::drain(&stack.clients, &stack.platform.actions_queue)
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a["action"] == SET_THRESHOLDS && a["outcome"] == "acted")
        .collect();
    assert_eq!(
        audited.len(),
        1,
        "one audit record for the two alarms: {audited:?}"
    );
    assert_eq!(audited[0]["resource"], format!("rds:{DB}"));
    assert_eq!(
        audited[0]["after"],
        json!({MEMORY: SMALL_FREEABLE, CONNECTIONS: SMALL_CONNECTIONS})
    );

    // The next day: nothing changes, and the report says the thresholds are already right.
    let puts = stack.moto.count_calls(FN, "monitoring", "PutMetricAlarm");
    assert_eq!(puts, 2, "moto saw the two rewrites");
    let v = f.invoke_ok(drift_task("drift-2")).await.unwrap();
    assert!(actions(&v).is_empty(), "{v}");
    assert_eq!(
        stack.moto.count_calls(FN, "monitoring", "PutMetricAlarm"),
        puts
    );
    let notes = v["records"][0]["notes"].as_array().unwrap();
    assert_eq!(
        notes
            .iter()
            .filter(|n| n.as_str().unwrap_or("").contains("already right"))
            .count(),
        2,
        "{v}"
    );
}

/// Memcached grows on what it publishes: BytesUsedForCacheItems of node 0001 (cache.t3.micro,
/// 512 MiB of cache memory) put into moto; the template's metric-math alarm (mapped by
/// NBAOPS_SCALE__ALARM_MAP as the template maps it) adds a node only when a node is above 75 %.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memcached_adds_a_node_only_when_a_node_is_above_75_percent() {
    use aws_sdk_cloudwatch::primitives::DateTime as AwsTime;
    use aws_sdk_cloudwatch::types::{MetricDatum, StandardUnit};
    use nbaops_tests::platform::CACHE;

    let stack = Stack::start(false).await.unwrap();
    let map =
        r#"{"nbaops-dev-cache-memory-high":{"target":"cache:nbaops-dev-cache","on_alarm":"out"}}"#;
    let f = start(&stack, &[("NBAOPS_SCALE__ALARM_MAP", map)]).await;
    let used = |mib: f64, minutes_ago: i64| {
        let at = nbaops_tests::clock::now() - chrono::Duration::minutes(minutes_ago);
        MetricDatum::builder()
            .metric_name("BytesUsedForCacheItems")
            .dimensions(
                Dimension::builder()
                    .name("CacheClusterId")
                    .value(CACHE)
                    .build(),
            )
            .dimensions(
                Dimension::builder()
                    .name("CacheNodeId")
                    .value("0001")
                    .build(),
            )
            .timestamp(AwsTime::from_secs(at.timestamp()))
            .value(mib * 1024.0 * 1024.0)
            .unit(StandardUnit::Bytes)
            .build()
    };
    let put = |d: MetricDatum| {
        stack
            .clients
            .cw
            .put_metric_data()
            .namespace("AWS/ElastiCache")
            .metric_data(d)
            .send()
    };
    let mut alarm: Value = serde_json::from_str(
        &std::fs::read_to_string(
            nbaops_tests::workspace_root()
                .join("events/cloudwatch-alarm/eventbridge-memcached-memory-metric-math.json"),
        )
        .unwrap(),
    )
    .unwrap();

    // 380 MiB of 512 MiB = 74 %: the alarm is not confirmed, no node.
    put(used(380.0, 4)).await.unwrap();
    alarm["id"] = json!("cache-1");
    let v = f.invoke_ok(alarm.clone()).await.unwrap();
    assert!(actions(&v).is_empty(), "{v}");
    assert!(v.to_string().contains("no node added"), "{v}");
    assert_eq!(
        platform::cache_nodes(&stack.clients, CACHE).await.unwrap(),
        1
    );

    assert_eq!(
        stack
            .moto
            .count_calls(FN, "elasticache", "ModifyCacheCluster"),
        0
    );

    // 420 MiB = 82 %: confirmed, one node more. moto 5.2.5 answers ModifyCacheCluster with HTTP
    // 500 NotImplemented (docs/local-stack.md), so the step is proved by the call that reached it
    // (1 -> 2 nodes, audited) and its failure is reported as the emulator's, not by the node count.
    put(used(420.0, 1)).await.unwrap();
    alarm["id"] = json!("cache-2");
    let v = f.invoke_ok(alarm).await.unwrap();
    let acts = actions(&v);
    assert_eq!(acts.len(), 1, "{v}");
    assert_eq!(acts[0]["action"], "cache.add_node", "{v}");
    assert_eq!(acts[0]["before"]["nodes"], 1, "{v}");
    assert_eq!(acts[0]["after"]["nodes"], 2, "{v}");
    assert!(v.to_string().contains("confirmed"), "{v}");
    // (the SDK retries the 500: one step, up to three attempts)
    let tries = stack
        .moto
        .count_calls(FN, "elasticache", "ModifyCacheCluster");
    assert!((1..=3).contains(&tries), "{tries}");
}

//! The dashboard's metrics as the real binary writes them: after an invocation, the function's log
//! holds the EMF lines of `Actions` by outcome and `GuardStops` by step, in the namespace and with
//! the dimension sets of `nbaops_shared::telemetry::METRICS` (which infra/tests/check_template.py
//! holds the dashboard to).

use nbaops_shared::telemetry::{ACTIONS, GUARD_STOPS};
use nbaops_tests::demo::Stack;
use nbaops_tests::function::FunctionUnderTest;
use nbaops_tests::{function_binary, workspace_root};
use serde_json::Value;

const FN: &str = "scale-on-alarm";
const EVENT: &str = "events/cloudwatch-alarm/eventbridge-single-metric-alarm.json";

/// Every EMF line in the log that carries the metric `name`.
fn emf_lines(logs: &str, name: &str) -> Vec<Value> {
    logs.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            v["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["Name"] == name))
        })
        .collect()
}

fn sets(metric: nbaops_shared::telemetry::Metric) -> Value {
    serde_json::to_value(metric.dimension_sets).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invocation_logs_actions_by_outcome_and_guard_stops_by_step() {
    let stack = Stack::start(false).await.unwrap();
    let f = FunctionUnderTest::start(
        &function_binary(FN).unwrap(),
        FN,
        &stack.env_for(FN, &[]),
        1,
    )
    .await
    .unwrap();
    let event: Value =
        serde_json::from_str(&std::fs::read_to_string(workspace_root().join(EVENT)).unwrap())
            .unwrap();
    f.invoke_ok(event.clone()).await.unwrap();
    let actions = emf_lines(&f.logs(), "Actions");
    assert_eq!(actions.len(), 1, "{}", f.logs());
    let a = &actions[0];
    assert_eq!(
        a["_aws"]["CloudWatchMetrics"][0]["Namespace"],
        ACTIONS.namespace
    );
    assert_eq!(
        a["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
        sets(ACTIONS)
    );
    assert_eq!(
        (&a["function"], &a["env"], &a["outcome"], &a["Actions"]),
        (
            &Value::from(FN),
            &Value::from("dev"),
            &Value::from("acted"),
            &Value::from(1.0)
        )
    );
    assert!(
        emf_lines(&f.logs(), "GuardStops").is_empty(),
        "nothing was stopped"
    );

    // The same event again: the idempotency step stops it.
    f.invoke_ok(event).await.unwrap();
    let stops = emf_lines(&f.logs(), "GuardStops");
    assert_eq!(stops.len(), 1, "{}", f.logs());
    let s = &stops[0];
    assert_eq!(
        s["_aws"]["CloudWatchMetrics"][0]["Namespace"],
        GUARD_STOPS.namespace
    );
    assert_eq!(
        s["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
        sets(GUARD_STOPS)
    );
    assert_eq!(
        (&s["env"], &s["step"], &s["GuardStops"]),
        (
            &Value::from("dev"),
            &Value::from("idempotency"),
            &Value::from(1.0)
        )
    );
    let outcomes: Vec<Value> = emf_lines(&f.logs(), "Actions")
        .iter()
        .map(|v| v["outcome"].clone())
        .collect();
    assert_eq!(outcomes, [Value::from("acted"), Value::from("skipped")]);
}

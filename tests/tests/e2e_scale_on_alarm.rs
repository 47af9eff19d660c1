//! scale-on-alarm end to end: the real binary, over the Lambda Runtime API, against moto.

use nbaops_tests::demo::Stack;
use nbaops_tests::function::FunctionUnderTest;
use nbaops_tests::platform::{self, DB, WEB, WORKER};
use nbaops_tests::{function_binary, workspace_root};
use serde_json::Value;

const FN: &str = "scale-on-alarm";

fn fixture(path: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(workspace_root().join(path)).unwrap()).unwrap()
}

async fn start(stack: &Stack, extra: &[(&str, &str)], instances: usize) -> FunctionUnderTest {
    FunctionUnderTest::start(
        &function_binary(FN).unwrap(),
        FN,
        &stack.function_env(extra),
        instances,
    )
    .await
    .unwrap()
}

async fn invoke(f: &FunctionUnderTest, payload: Value) -> Value {
    f.invoke_ok(payload).await.unwrap()
}

fn first_action(v: &Value) -> &Value {
    &v["records"][0]["actions"][0]
}

/// The calls of this function that change infrastructure (Auto Scaling, RDS, ElastiCache; not
/// the ledger or the topics), as moto's recorder saw them arrive.
fn mutations(stack: &Stack) -> Vec<String> {
    stack
        .moto
        .recorded_calls()
        .into_iter()
        .filter(|c| {
            c.app.as_deref() == Some(FN)
                && matches!(c.service.as_str(), "autoscaling" | "rds" | "elasticache")
                && !["Describe", "List", "Get"]
                    .iter()
                    .any(|read| c.operation.starts_with(read))
        })
        .map(|c| format!("{}:{}", c.service, c.operation))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_alarm_scales_out_audits_and_alerts() {
    let stack = Stack::start(false).await.unwrap();
    let f = start(&stack, &[], 1).await;
    let v = invoke(
        &f,
        fixture("events/cloudwatch-alarm/eventbridge-single-metric-alarm.json"),
    )
    .await;
    assert_eq!(first_action(&v)["outcome"], "acted", "{v}");
    assert_eq!(
        platform::group_view(&stack.clients, WEB)
            .await
            .unwrap()
            .desired,
        3
    );
    let actions = platform::drain(&stack.clients, &stack.platform.actions_queue)
        .await
        .unwrap();
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0]["schema"], "nbaops.action/v1");
    assert_eq!(actions[0]["outcome"], "acted");
    let alerts = platform::drain(&stack.clients, &stack.platform.alerts_queue)
        .await
        .unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0]["severity"], "P3");
    let counts = platform::ledger_counts(&stack.clients).await.unwrap();
    assert_eq!(counts.get("audit"), Some(&1));
    // The logs are JSON lines with the request id, function, env and cold start.
    let first_line = f
        .logs()
        .lines()
        .find(|l| l.contains("\"audit\""))
        .map(String::from)
        .unwrap_or_default();
    let line: Value = serde_json::from_str(&first_line).unwrap_or(Value::Null);
    assert_eq!(line["span"]["function"], FN, "{first_line}");
    assert!(line["span"]["requestId"].is_string(), "{first_line}");
    assert_eq!(line["span"]["cold_start"], true, "{first_line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ceiling_then_rds_ladder_then_top_rung() {
    let stack = Stack::start(false).await.unwrap();
    let f = start(&stack, &[("NBAOPS_SCALE__ASG__COOLDOWN_SECONDS", "0")], 1).await;
    let mut alarm = fixture("events/cloudwatch-alarm/eventbridge-single-metric-alarm.json");
    for i in 0..3 {
        alarm["id"] = Value::String(format!("evt-{i}"));
        alarm["detail"]["state"]["timestamp"] =
            Value::String(format!("2026-11-25T20:0{i}:00.000+0000"));
        invoke(&f, alarm.clone()).await;
    }
    // 2 -> 3 -> 4, then the ceiling: P2, no third step.
    assert_eq!(
        platform::group_view(&stack.clients, WEB)
            .await
            .unwrap()
            .desired,
        4
    );
    let alerts = platform::drain(&stack.clients, &stack.platform.alerts_queue)
        .await
        .unwrap();
    assert!(
        alerts
            .iter()
            .any(|a| a["severity"] == "P2"
                && a["dedup_key"] == "capacity-exhausted#asg:nbaops-dev-web"),
        "{alerts:?}"
    );

    let db = fixture("events/cloudwatch-alarm/eventbridge-rds-memory-alarm.json");
    let v = invoke(&f, db.clone()).await;
    assert_eq!(first_action(&v)["outcome"], "acted", "{v}");
    assert_eq!(
        platform::db_class(&stack.clients, DB).await.unwrap().0,
        "db.t3.small"
    );
    let mut again = db;
    again["id"] = Value::String("db-evt-2".into());
    let v = invoke(&f, again).await;
    assert!(
        v["records"][0]["actions"].as_array().unwrap().is_empty(),
        "{v}"
    );
    assert!(
        v["records"][0]["notes"][0]
            .as_str()
            .unwrap()
            .contains("top rung"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guard_steps_stop_the_real_binary_with_zero_mutations() {
    let stack = Stack::start(false).await.unwrap();
    let f = start(&stack, &[], 1).await;
    let mut alarm = fixture("events/cloudwatch-alarm/eventbridge-worker-cpu-alarm.json");
    let mut n = 0;
    let mut next = |a: &mut Value| {
        n += 1;
        a["id"] = Value::String(format!("guard-{n}"));
        a.clone()
    };
    platform::put_params(&stack.clients, &[("guard/kill_switch", "true")])
        .await
        .unwrap();
    let v = invoke(&f, next(&mut alarm)).await;
    assert_eq!(first_action(&v)["stopped_by"], "kill_switch", "{v}");
    platform::delete_param(&stack.clients, "guard/kill_switch")
        .await
        .unwrap();

    platform::put_params(&stack.clients, &[("guard/dry_run", "true")])
        .await
        .unwrap();
    let v = invoke(&f, next(&mut alarm)).await;
    assert_eq!(first_action(&v)["outcome"], "would-act", "{v}");
    platform::delete_param(&stack.clients, "guard/dry_run")
        .await
        .unwrap();

    platform::tag_group(&stack.clients, WORKER, "nbaops:protect", "true")
        .await
        .unwrap();
    let v = invoke(&f, next(&mut alarm)).await;
    assert_eq!(first_action(&v)["stopped_by"], "protected_tag", "{v}");
    platform::untag_group(&stack.clients, WORKER, "nbaops:protect")
        .await
        .unwrap();

    assert_eq!(
        platform::group_view(&stack.clients, WORKER)
            .await
            .unwrap()
            .desired,
        2,
        "no mutation so far"
    );
    assert!(
        stack
            .moto
            .count_calls(FN, "autoscaling", "DescribeAutoScalingGroups")
            >= 3,
        "the recorder sees this function's calls"
    );
    assert_eq!(
        mutations(&stack),
        Vec::<String>::new(),
        "no mutating call reached AWS"
    );
    let audits = platform::drain(&stack.clients, &stack.platform.actions_queue)
        .await
        .unwrap();
    assert_eq!(audits.len(), 3, "every skipped action is audited");
    assert_eq!(
        platform::ledger_counts(&stack.clients)
            .await
            .unwrap()
            .get("idem"),
        None,
        "nothing claimed"
    );

    // Now live: acts once, then the cooldown stops a new event.
    let v = invoke(&f, next(&mut alarm)).await;
    assert_eq!(first_action(&v)["outcome"], "acted", "{v}");
    let v = invoke(&f, next(&mut alarm)).await;
    assert_eq!(first_action(&v)["stopped_by"], "cooldown", "{v}");
    assert_eq!(
        platform::group_view(&stack.clients, WORKER)
            .await
            .unwrap()
            .desired,
        3
    );
    assert_eq!(
        mutations(&stack),
        vec!["autoscaling:SetDesiredCapacity".to_string()],
        "the live action, and nothing for the cooldown-stopped one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_concurrent_duplicates_make_one_effect() {
    let stack = Stack::start(false).await.unwrap();
    // Three processes of the binary polling one queue; cooldown off so only idempotency protects.
    let f = std::sync::Arc::new(
        start(&stack, &[("NBAOPS_SCALE__ASG__COOLDOWN_SECONDS", "0")], 3).await,
    );
    let alarm = fixture("events/cloudwatch-alarm/eventbridge-single-metric-alarm.json");
    let mut handles = vec![];
    for _ in 0..10 {
        let f = f.clone();
        let a = alarm.clone();
        handles.push(tokio::spawn(async move { invoke(&f, a).await }));
    }
    let mut acted = 0;
    let mut stopped_by_idempotency = 0;
    for h in handles {
        let v = h.await.unwrap();
        let a = first_action(&v);
        if a["outcome"] == "acted" {
            acted += 1;
        } else if a["outcome"] == "skipped" && a["stopped_by"] == "idempotency" {
            stopped_by_idempotency += 1;
        } else {
            panic!("neither acted nor stopped by idempotency: {v}");
        }
    }
    assert_eq!((acted, stopped_by_idempotency), (1, 9));
    // What reached AWS, from moto's recorder: exactly one SetDesiredCapacity.
    assert_eq!(
        mutations(&stack),
        vec!["autoscaling:SetDesiredCapacity".to_string()]
    );
    // And the audit records say the same: one acted, nine skipped by the idempotency step.
    let audits = platform::drain(&stack.clients, &stack.platform.actions_queue)
        .await
        .unwrap();
    let outcomes: Vec<(String, String)> = audits
        .iter()
        .map(|a| {
            (
                a["outcome"].as_str().unwrap_or("").to_string(),
                a["stopped_by"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(audits.len(), 10, "{outcomes:?}");
    assert_eq!(
        outcomes.iter().filter(|(o, _)| o == "acted").count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|(o, by)| o == "skipped" && by == "idempotency")
            .count(),
        9,
        "{outcomes:?}"
    );
    assert_eq!(
        platform::group_view(&stack.clients, WEB)
            .await
            .unwrap()
            .desired,
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_from_ssm_and_a_wrong_value_fails_init() {
    let stack = Stack::start(false).await.unwrap();
    // From SSM: the web group's ceiling lowered to 2 makes the alarm a P2 "capacity exhausted".
    platform::put_params(
        &stack.clients,
        &[("scale/group/nbaops-dev-web/ceiling", "2")],
    )
    .await
    .unwrap();
    let f = start(&stack, &[], 1).await;
    let v = invoke(
        &f,
        fixture("events/cloudwatch-alarm/eventbridge-single-metric-alarm.json"),
    )
    .await;
    assert_eq!(v["records"][0]["alerts"][0]["severity"], "P2", "{v}");
    drop(f);

    platform::put_params(&stack.clients, &[("scale/asg/ceiling", "lots")])
        .await
        .unwrap();
    let err = FunctionUnderTest::start(
        &function_binary(FN).unwrap(),
        FN,
        &stack.function_env(&[]),
        1,
    )
    .await
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(
        err.contains("scale.asg.ceiling") && err.contains("lots"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_string_never_reaches_the_log() {
    let stack = Stack::start(false).await.unwrap();
    let planted = "planted-S3CR3T-9f2c1e";
    stack
        .clients
        .ssm
        .put_parameter()
        .name("/nbaops/dev/secrets/slack_webhook")
        .value(planted)
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .unwrap();
    // Debug logging prints every SSM parameter read at init. scale-on-alarm uses no secret, so it
    // reads none: its config paths are its own sections, never the environment's root (where
    // secrets/ lives). The log proves the read happened; moto's recording proves what was asked.
    let f = start(&stack, &[("RUST_LOG", "debug")], 1).await;
    invoke(
        &f,
        fixture("events/cloudwatch-alarm/eventbridge-single-metric-alarm.json"),
    )
    .await;
    let logs = f.logs();
    assert!(
        logs.contains("SSM parameters read"),
        "the config read is logged: {logs}"
    );
    assert!(!logs.contains(planted), "secret leaked:\n{logs}");
    let ours: Vec<String> = stack
        .moto
        .recording()
        .lines()
        .filter(|l| l.contains("app/scale-on-alarm") && l.contains("AmazonSSM."))
        .map(String::from)
        .collect();
    assert!(
        ours.iter().any(|l| l.contains("GetParametersByPath")),
        "no config read recorded"
    );
    for l in &ours {
        let v: Value = serde_json::from_str(l).unwrap();
        let raw = v["body"].as_str().unwrap_or("");
        let body = if v["body_encoded"] == true {
            String::from_utf8(aws_smithy_types::base64::decode(raw).unwrap()).unwrap()
        } else {
            raw.to_string()
        };
        assert!(
            body.contains("\"Path\":\"/nbaops/dev/")
                || body.contains("\"Name\":\"/nbaops/dev/guard/"),
            "{body}"
        );
        assert!(
            !body.contains("secrets") && !body.contains("\"Path\":\"/nbaops/dev\""),
            "scale-on-alarm asked SSM for more than its sections: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_is_answered_without_error() {
    let stack = Stack::start(false).await.unwrap();
    let f = start(&stack, &[("NBAOPS_GUARD__DRY_RUN", "true")], 1).await;
    let mut dirs = vec![workspace_root().join("events")];
    let mut seen = 0;
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let payload: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let v = invoke(&f, payload).await;
            assert!(
                v["records"].as_array().is_some_and(|r| !r.is_empty()),
                "{}: {v}",
                path.display()
            );
            seen += 1;
        }
    }
    assert!(seen >= 30);
    // Dry-run: nothing changed anywhere.
    assert_eq!(
        platform::group_view(&stack.clients, WEB)
            .await
            .unwrap()
            .desired,
        2
    );
    assert_eq!(
        platform::db_class(&stack.clients, DB).await.unwrap().0,
        "db.t3.micro"
    );
}

/// One scale-out, counted from moto's recording (not from the function's own bookkeeping): at
/// most 6 AWS calls, none of them to SSM (the configuration, kill switch and dry-run included, is
/// read once per container at init and refreshed after `guard.switch_ttl_seconds`). The flap
/// history is read only when the alarm's previous transition falls inside the flap window: then
/// it is 7 (the fixture as delivered: OK 30 min before, window 60 min). The stack configures no
/// `scale.followup` here; where it is configured (the template does), an acted group scale-out makes
/// two calls more: the re-check's `scheduler:CreateSchedule` and the ledger `PutItem` keeping its
/// name under the alarm (counted in e2e_scale_sustained).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_scale_out_makes_at_most_six_aws_calls() {
    let stack = Stack::start(false).await.unwrap();
    let f = start(
        &stack,
        &[
            ("NBAOPS_GUARD__SWITCH_TTL_SECONDS", "60"),
            ("NBAOPS_SCALE__ASG__COOLDOWN_SECONDS", "0"),
        ],
        1,
    )
    .await;
    let init = stack.moto.actions_of(FN);
    assert!(
        init.iter().all(|c| c == "ssm:GetParametersByPath"),
        "{init:?}"
    );
    let mut alarm = fixture("events/cloudwatch-alarm/eventbridge-single-metric-alarm.json");
    // A quiet alarm: its previous transition was 3 h before this one.
    alarm["detail"]["previousState"]["timestamp"] =
        Value::String("2026-11-25T17:01:02.001+0000".into());
    let v = invoke(&f, alarm.clone()).await;
    assert_eq!(first_action(&v)["outcome"], "acted", "{v}");
    let all = stack.moto.actions_of(FN);
    let invocation = &all[init.len()..];
    let scale_out = [
        "autoscaling:DescribeAutoScalingGroups", // the group as it is
        "dynamodb:TransactWriteItems",           // claim + cooldown + the alarm's transition
        "autoscaling:SetDesiredCapacity",        // the effect
        "dynamodb:TransactWriteItems",           // claim done + audit item
        "sns:Publish",                           // the audit record on the actions topic
        "sns:Publish",                           // the alert
    ];
    assert_eq!(invocation, scale_out, "{} calls", invocation.len());
    // What the one ledger write carried is all there.
    let counts = platform::ledger_counts(&stack.clients).await.unwrap();
    for kind in ["idem", "cooldown", "flap", "audit"] {
        assert_eq!(counts.get(kind), Some(&1), "{kind}: {counts:?}");
    }

    // The next transition, 30 min after the last: the flap history is read first.
    let done = all.len();
    alarm["id"] = Value::String("second".into());
    alarm["detail"]["previousState"]["timestamp"] =
        Value::String("2026-11-25T19:31:02.001+0000".into());
    let v = invoke(&f, alarm).await;
    assert_eq!(first_action(&v)["outcome"], "acted", "{v}");
    let all = stack.moto.actions_of(FN);
    let mut expected = vec!["dynamodb:Query"];
    expected.extend(scale_out);
    assert_eq!(&all[done..], expected);
}

/// The kill switch is cached for `guard.switch_ttl_seconds` (docs/spec.md, README): a flip in
/// SSM is honoured by a warm container once the TTL has passed, without a deploy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_switch_flipped_in_ssm_stops_actions_after_the_ttl() {
    let stack = Stack::start(false).await.unwrap();
    let f = start(
        &stack,
        &[
            ("NBAOPS_GUARD__SWITCH_TTL_SECONDS", "2"),
            ("NBAOPS_SCALE__ASG__COOLDOWN_SECONDS", "0"),
        ],
        1,
    )
    .await;
    let mut alarm = fixture("events/cloudwatch-alarm/eventbridge-single-metric-alarm.json");
    platform::put_params(&stack.clients, &[("guard/kill_switch", "true")])
        .await
        .unwrap();
    // Within the TTL the container still acts on what it read at init...
    alarm["id"] = Value::String("ttl-1".into());
    assert_eq!(
        first_action(&invoke(&f, alarm.clone()).await)["outcome"],
        "acted"
    );
    // ...and once the TTL has passed it reads the switch again and stops.
    tokio::time::sleep(std::time::Duration::from_millis(2_200)).await;
    alarm["id"] = Value::String("ttl-2".into());
    alarm["detail"]["state"]["timestamp"] = Value::String("2026-11-25T20:09:00.000+0000".into());
    let v = invoke(&f, alarm).await;
    assert_eq!(first_action(&v)["stopped_by"], "kill_switch", "{v}");
    assert_eq!(
        platform::group_view(&stack.clients, WEB)
            .await
            .unwrap()
            .desired,
        3,
        "one action, before the switch was read"
    );
}

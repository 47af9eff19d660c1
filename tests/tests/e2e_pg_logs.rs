//! pg-health's PostgreSQL log subscription end to end (issue #22): the real binary over the
//! Lambda Runtime API, the ledger and the alerts topic in moto, the payload exactly as CloudWatch
//! Logs delivers it (`events/cloudwatch-logs/`: base64 of gzip of the documented JSON). No
//! PostgreSQL: the log path opens no session.

use std::time::Duration;

use nbaops_shared::events::subscription_payload;
use nbaops_tests::demo::Stack;
use nbaops_tests::function::FunctionUnderTest;
use nbaops_tests::platform;
use nbaops_tests::runtime_api::Outcome;
use nbaops_tests::workspace_root;
use serde_json::{json, Value};

async fn invoke(f: &FunctionUnderTest, payload: Value) -> Value {
    match f
        .invoke(payload, Duration::from_secs(60))
        .await
        .unwrap()
        .outcome
    {
        Outcome::Response(v) => {
            nbaops_tests::explain::check_response(&v).unwrap();
            v
        }
        Outcome::Error {
            error_type,
            message,
        } => panic!("{error_type}: {message}\n{}", f.logs()),
    }
}

fn fixture(rel: &str) -> Value {
    let path = workspace_root().join("events").join(rel);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn raised(v: &Value) -> Vec<(String, String)> {
    v["records"][0]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["severity"].as_str().unwrap().to_string(),
                a["dedup_key"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Two more cancellations of `table` (one event each for the ERROR and its CONTEXT line).
fn cancellation(ids: &str, ms: i64, pid: u32, table: &str) -> Value {
    let prefix = format!("2026-11-30 05:00:00 UTC::@:[{pid}]:");
    subscription_payload(&json!({
        "messageType": "DATA_MESSAGE",
        "owner": "123456789012",
        "logGroup": "/aws/rds/instance/nbaops-dev-db/postgresql",
        "logStream": "nbaops-dev-db.0",
        "subscriptionFilters": ["nbaops-dev-pg-vacuum-failures"],
        "logEvents": [
            {"id": format!("{ids}1"), "timestamp": ms, "message": format!("{prefix}ERROR:  canceling autovacuum task")},
            {"id": format!("{ids}2"), "timestamp": ms, "message": format!("{prefix}CONTEXT:  automatic vacuum of table \"app.{table}\"")},
        ]
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autovacuum_failures_from_the_log_are_counted_once_and_escalated_when_repeated() {
    let stack = Stack::start(false).await.unwrap();
    let f = stack.start_function("pg-health", 1).await.unwrap();

    // The fixture: two cancellations of player_stats, a truncate error on lineups, a wraparound
    // warning, and autovacuum's own reports of finished runs (ignored).
    let v = invoke(
        &f,
        fixture("cloudwatch-logs/rds-postgresql-autovacuum.json"),
    )
    .await;
    let rec = &v["records"][0];
    assert_eq!(rec["kind"], "logs", "{v}");
    assert_eq!(
        raised(&v),
        vec![
            (
                "P2".into(),
                "pg-vacuum-failure#pg:app/public.lineups".into()
            ),
            (
                "P2".into(),
                "pg-vacuum-failure#pg:app/public.player_stats".into()
            ),
            ("P1".into(), "pg-vacuum-failure#pg:app/wraparound".into()),
        ],
        "{v}"
    );
    assert!(rec["actions"].as_array().unwrap().is_empty(), "{v}");
    let notes = rec["notes"].to_string();
    assert!(
        notes.contains("4 failure line(s) counted, 0 already counted"),
        "{notes}"
    );
    assert_eq!(
        rec["notes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n.as_str().unwrap_or("").starts_with("ignored "))
            .count(),
        2,
        "{notes}"
    );

    // Delivered again (an asynchronous retry): nothing counted twice, nothing raised again.
    let v = invoke(
        &f,
        fixture("cloudwatch-logs/rds-postgresql-autovacuum.json"),
    )
    .await;
    assert!(raised(&v).is_empty(), "{v}");
    assert!(
        v["records"][0]["notes"]
            .to_string()
            .contains("0 failure line(s) counted, 4 already counted"),
        "{v}"
    );
    let counts = platform::ledger_counts(&stack.clients).await.unwrap();
    assert_eq!(counts.get("pglog"), Some(&4), "{counts:?}");
    assert_eq!(counts.get("pglogalert"), Some(&3), "{counts:?}");

    // The third failure of player_stats that day: repeated (pg.vacuum_failure.repeat, 3) -> P1.
    let at = 1_796_014_800_000; // 2026-11-30T05:00:00Z
    let v = invoke(&f, cancellation("e2e-3-", at, 4101, "public.player_stats")).await;
    assert_eq!(
        raised(&v),
        vec![(
            "P1".into(),
            "pg-vacuum-failure#pg:app/public.player_stats".into()
        )],
        "{v}"
    );
    assert_eq!(
        v["records"][0]["alerts"][0]["details"]["count_today"], 3,
        "{v}"
    );
    // And not again that day.
    let v = invoke(
        &f,
        cancellation("e2e-4-", at + 60_000, 4102, "public.player_stats"),
    )
    .await;
    assert!(raised(&v).is_empty(), "{v}");

    // What reached the alerts topic: the four alerts above, each once.
    let published = platform::drain(&stack.clients, &stack.platform.alerts_queue)
        .await
        .unwrap();
    let keys: Vec<(String, String)> = published
        .iter()
        .filter(|a| {
            a["dedup_key"]
                .as_str()
                .unwrap_or("")
                .starts_with("pg-vacuum-failure#")
        })
        .map(|a| {
            (
                a["severity"].as_str().unwrap_or("").to_string(),
                a["dedup_key"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(keys.len(), 4, "{published:?}");
    assert_eq!(
        keys.iter()
            .filter(|(s, k)| s == "P1" && k.ends_with("player_stats"))
            .count(),
        1,
        "{keys:?}"
    );

    // The CONTROL_MESSAGE of a new filter and malformed payloads: not for me, with the stage.
    for (name, says) in [
        (
            "cloudwatch-logs-control-message",
            "CONTROL_MESSAGE (the reachability check",
        ),
        ("cloudwatch-logs-bad-base64", "not base64"),
        ("cloudwatch-logs-not-gzip", "not gzip"),
        ("cloudwatch-logs-wrong-json", "not as documented"),
        (
            "cloudwatch-logs-lambda-log-group",
            "not an RDS PostgreSQL log group",
        ),
    ] {
        let v = invoke(&f, fixture(&format!("not-for-me/{name}.json"))).await;
        let why = v["records"][0]["not_for_me"].as_str().unwrap_or("");
        assert!(why.contains(says), "{name}: {v}");
        assert!(raised(&v).is_empty(), "{name}: {v}");
    }
    let counts = platform::ledger_counts(&stack.clients).await.unwrap();
    assert_eq!(counts.get("pglog"), Some(&6), "{counts:?}");
}

//! backup-guard's DR recovery point (issue #22) end to end: the real binary over the Lambda
//! Runtime API against moto. moto 5.2.5 answers DescribeDBInstanceAutomatedBackups in the DR
//! region (the region's own instances only, never a replicated backup) and does not implement
//! StartDBInstanceAutomatedBackupsReplication: the binary must say so honestly (the start
//! audited as failed with RDS's answer, the P2 "not replicated" breach), never "fine". The
//! replicating / LatestTime-past-the-RPO path is proven on the fake
//! (functions/backup-guard/src/handler.rs, docs/backup-dr.md).

use chrono::{DateTime, Utc};
use nbaops_tests::demo::Stack;
use nbaops_tests::function::FunctionUnderTest;
use nbaops_tests::function_binary;
use nbaops_tests::platform::{self, DB};
use serde_json::{json, Value};

const DR: &str = "us-west-2";

async fn start(stack: &Stack, env: &[(&str, &str)]) -> FunctionUnderTest {
    let mut all: Vec<(&str, &str)> = vec![
        ("NBAOPS_BACKUP__INSTANCES", DB),
        ("NBAOPS_BACKUP__DR_REGION", DR),
        ("NBAOPS_BACKUP__DR_REPLICATION__ENABLED", "true"),
    ];
    all.extend_from_slice(env);
    FunctionUnderTest::start(
        &function_binary("backup-guard").unwrap(),
        "backup-guard",
        &stack.function_env(&all),
        1,
    )
    .await
    .unwrap()
}

async fn tick(f: &FunctionUnderTest, id: &str, at: DateTime<Utc>) -> Value {
    let v = f
        .invoke_ok(json!({"nbaops": {"task": "backup-rpo-check", "id": id, "at": at.to_rfc3339()}}))
        .await
        .unwrap();
    v["records"][0].clone()
}

async fn rds_client(stack: &Stack, region: &str) -> aws_sdk_rds::Client {
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&stack.moto.endpoint)
        .region(aws_config::Region::new(region.to_string()))
        .credentials_provider(aws_sdk_rds::config::Credentials::new(
            "testing", "testing", None, None, "e2e",
        ))
        .load()
        .await;
    aws_sdk_rds::Client::new(&conf)
}

fn dr_breach(rec: &Value) -> Vec<Value> {
    rec["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["dedup_key"] == format!("backup-rpo#{DB}"))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_emulator_the_missing_replication_is_reported_never_fine() {
    let stack = Stack::start(false).await.unwrap();
    // The emulator's own answers, the gap named: the DR region lists no backup of the source,
    // and the start is not implemented.
    let dr = rds_client(&stack, DR).await;
    let listed = dr
        .describe_db_instance_automated_backups()
        .send()
        .await
        .unwrap();
    let source = rds_client(&stack, "us-east-1")
        .await
        .describe_db_instances()
        .db_instance_identifier(DB)
        .send()
        .await
        .unwrap();
    let arn = source.db_instances()[0]
        .db_instance_arn()
        .unwrap()
        .to_string();
    assert!(
        !listed
            .db_instance_automated_backups()
            .iter()
            .any(|b| b.db_instance_arn() == Some(arn.as_str())),
        "moto now replicates: replace this test with the real path"
    );
    assert!(
        dr.start_db_instance_automated_backups_replication()
            .source_db_instance_arn(&arn)
            .send()
            .await
            .is_err(),
        "moto now implements StartDBInstanceAutomatedBackupsReplication: test the real start"
    );

    let f = start(&stack, &[]).await;
    let now = nbaops_tests::clock::now();
    let rec = tick(&f, "dr-1", now).await;
    // The start went through the guard and is audited as failed, with RDS's answer.
    let acts = rec["actions"].as_array().unwrap();
    assert_eq!(acts.len(), 1, "{rec}");
    assert_eq!(acts[0]["action"], "rds.backup.replicate", "{rec}");
    assert_eq!(acts[0]["outcome"], "failed", "{rec}");
    assert!(
        acts[0]["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{rec}"
    );
    // The breach says the backups are not replicated (P2), not "within the promises".
    let a = dr_breach(&rec);
    assert_eq!(a.len(), 1, "{rec}");
    assert_eq!(a[0]["severity"], "P2");
    assert!(
        a[0]["summary"]
            .as_str()
            .unwrap()
            .contains(&format!("not replicated to DR region {DR}")),
        "{}",
        a[0]
    );
    assert!(
        !rec["notes"].as_array().unwrap().iter().any(|n| n
            .as_str()
            .unwrap_or("")
            .contains("backups within the promises")),
        "{rec}"
    );
    // The next check says nothing new (the breach is open), and still does not call it fine.
    let rec = tick(&f, "dr-2", now + chrono::Duration::minutes(5)).await;
    assert!(dr_breach(&rec).is_empty(), "{rec}");
    let published = platform::drain(&stack.clients, &stack.platform.alerts_queue)
        .await
        .unwrap();
    assert_eq!(
        published
            .iter()
            .filter(|a| a["dedup_key"] == format!("backup-rpo#{DB}"))
            .count(),
        1,
        "{published:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_audits_the_start_and_changes_nothing() {
    let stack = Stack::start(false).await.unwrap();
    let f = start(&stack, &[("NBAOPS_GUARD__DRY_RUN", "true")]).await;
    let rec = tick(&f, "dr-dry", nbaops_tests::clock::now()).await;
    let acts = rec["actions"].as_array().unwrap();
    assert_eq!(acts.len(), 1, "{rec}");
    assert_eq!(
        (acts[0]["action"].as_str(), acts[0]["outcome"].as_str()),
        (Some("rds.backup.replicate"), Some("would-act")),
        "{rec}"
    );
    assert_eq!(dr_breach(&rec)[0]["severity"], "P2", "{rec}");
}

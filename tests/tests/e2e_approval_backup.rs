//! Issue #19 end to end for backup-guard: the restore drill's start (`rds.restore_drill`, a new
//! instance: disruptive) on a tick outside the change window (the test clock, with
//! [`approval::window_elsewhere`]) asks a person under the default `outside_window` policy: one
//! pending request, one `approval` alert, no restore in moto. Approved (`decide`, as alert-router's
//! POST and `nbaops approve` do) and delivered as `approved_input` to the real binary, the restore
//! happens once (moto), the drill record is the one a start in the window writes, so the next RDS
//! event validates the copy against a real PostgreSQL and deletes it; the audit record names the
//! approver and a second delivery does nothing. Denied, or with a drill instance of the planned
//! name already there, nothing is restored; dry-run asks nobody.

use std::time::Duration;

use chrono::{DateTime, Utc};
use nbaops_shared::adapters::DynamoLedger;
use nbaops_shared::guard::{
    approved_input, decide, ApprovalDecision, ApprovalRequest, ApprovalState, Decided, Verdict,
};
use nbaops_tests::approval;
use nbaops_tests::demo::Stack;
use nbaops_tests::function::FunctionUnderTest;
use nbaops_tests::platform::{self, DB, LEDGER};
use nbaops_tests::postgres::Postgres;
use nbaops_tests::{clock, function_binary};
use serde_json::{json, Value};

const FN: &str = "backup-guard";

async fn start(stack: &Stack, extra: &[(&str, &str)]) -> FunctionUnderTest {
    let window = approval::window_elsewhere();
    let mut env: Vec<(&str, &str)> = window.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.extend([
        ("NBAOPS_BACKUP__INSTANCES", DB),
        ("NBAOPS_BACKUP__DR_REGION", "us-west-2"),
    ]);
    env.extend_from_slice(extra);
    FunctionUnderTest::start(
        &function_binary(FN).unwrap(),
        FN,
        &stack.function_env(&env),
        1,
    )
    .await
    .unwrap()
}

fn ledger(stack: &Stack) -> DynamoLedger {
    DynamoLedger {
        client: stack.clients.ddb.clone(),
        table: LEDGER.into(),
    }
}

fn who(by: &str) -> Decided {
    Decided {
        by: by.into(),
        from: "192.0.2.7".into(),
        at: clock::now(),
    }
}

async fn drill_tick(f: &FunctionUnderTest, id: &str, at: DateTime<Utc>) -> Value {
    let v = f
        .invoke_ok(
            json!({"nbaops": {"task": "backup-restore-drill", "id": id, "at": at.to_rfc3339()}}),
        )
        .await
        .unwrap();
    v["records"][0].clone()
}

/// The drill tick outside the window: asked, nothing restored; the approval id.
async fn ask(stack: &Stack, f: &FunctionUnderTest, id: &str) -> (String, String) {
    let rec = drill_tick(f, id, clock::now()).await;
    let a = &rec["actions"][0];
    assert_eq!(a["action"], "rds.restore_drill", "{rec}");
    assert_eq!(a["outcome"], "needs-approval", "{rec}");
    assert_eq!(a["stopped_by"], "change_window", "{rec}");
    let approval_id = a["approval_id"].as_str().unwrap_or_default().to_string();
    assert!(
        a["sentence"]
            .as_str()
            .is_some_and(|s| s.starts_with("Asked for approval to ")
                && s.contains(&format!("(id {approval_id})"))),
        "{rec}"
    );
    let alerts = platform::drain(&stack.clients, &stack.platform.alerts_queue)
        .await
        .unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["approval_id"], approval_id.as_str(), "{alerts:?}");
    assert_eq!(restores(stack), 0, "asked, not restored");
    assert!(drill_record(stack).await.is_none());
    let temp = a["resource"]
        .as_str()
        .and_then(|r| r.strip_prefix("rds:"))
        .unwrap_or_default()
        .to_string();
    assert!(temp.starts_with("nbaops-drill-"), "{rec}");
    (approval_id, temp)
}

fn restores(stack: &Stack) -> usize {
    stack
        .moto
        .actions_of(FN)
        .iter()
        .filter(|c| c.starts_with("rds:RestoreDBInstance"))
        .count()
}

async fn rds(stack: &Stack) -> aws_sdk_rds::Client {
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&stack.moto.endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_rds::config::Credentials::new(
            "testing", "testing", None, None, "e2e",
        ))
        .load()
        .await;
    aws_sdk_rds::Client::new(&conf)
}

async fn instance_exists(c: &aws_sdk_rds::Client, id: &str) -> bool {
    c.describe_db_instances()
        .db_instance_identifier(id)
        .send()
        .await
        .is_ok_and(|o| !o.db_instances().is_empty())
}

async fn drill_record(stack: &Stack) -> Option<Value> {
    let out = stack
        .clients
        .ddb
        .get_item()
        .table_name(LEDGER)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("backupdrill#{DB}")),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S("current".into()),
        )
        .send()
        .await
        .unwrap();
    let data = out.item()?.get("data")?.as_s().ok()?;
    serde_json::from_str(data).ok()
}

async fn approve(stack: &Stack, id: &str, by: &str, verdict: Verdict) -> ApprovalRequest {
    let d = decide(&ledger(stack), "dev", id, verdict, who(by))
        .await
        .unwrap();
    let ApprovalDecision::Decided(req) = d else {
        panic!("{d:?}")
    };
    req
}

fn no_actions(v: &Value) -> bool {
    v["records"][0]["actions"]
        .as_array()
        .is_some_and(|a| a.is_empty())
}

/// The source database with the drill's role (infra/sql/04) and its password in SSM, as
/// e2e_backup sets it up; the drill validates against it.
async fn drill_db(stack: &Stack, pg: &Postgres) -> Vec<(String, String)> {
    pg.as_rds("app").unwrap();
    pg.psql_app(
        "app",
        "create table players (id int primary key, name text); \
         insert into players select g, 'p' || g from generate_series(1, 450) g",
    )
    .unwrap();
    let sql = nbaops_tests::workspace_root().join("infra/sql/04_drill_role.sql");
    pg.psql_file("rds_master", "app", &sql, &[("drill_tables", "players")])
        .unwrap();
    pg.psql_as(
        "rds_master",
        "postgres",
        &format!(
            "ALTER ROLE nbaops_drill PASSWORD '{}'",
            nbaops_tests::postgres::ROLE_PASSWORD
        ),
    )
    .unwrap();
    stack
        .put_secret(
            &format!("/nbaops/dev/secrets/backup/drill/{DB}"),
            nbaops_tests::postgres::ROLE_PASSWORD,
        )
        .await
        .unwrap();
    vec![
        ("NBAOPS_BACKUP__DRILL__KEY_TABLES".into(), "players".into()),
        // The emulator's restored instance has no server behind it: validate against ours.
        (
            "NBAOPS_BACKUP__DRILL__URL_OVERRIDES".into(),
            json!({ DB: pg.url_as("nbaops_drill", "app") }).to_string(),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_outside_the_window_is_asked_and_once_approved_restores_once_and_runs_on() {
    let stack = Stack::start(false).await.unwrap();
    let pg = Postgres::start().unwrap();
    let env = drill_db(&stack, &pg).await;
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let f = start(&stack, &env).await;
    let primary = rds(&stack).await;

    let (id, temp) = ask(&stack, &f, "drill-q1").await;
    let req = ApprovalRequest::load(&ledger(&stack), "dev", &id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(req.state, ApprovalState::Pending);
    assert_eq!(req.function, FN);
    assert_eq!(req.action.after["instance"], temp.as_str());
    assert!(!instance_exists(&primary, &temp).await);

    // Approved and delivered: the restore, once, and the drill record a start in the window writes.
    let req = approve(&stack, &id, "bob", Verdict::Approve).await;
    let v = f.invoke_ok(approved_input(&req)).await.unwrap();
    let a = &v["records"][0]["actions"][0];
    assert_eq!(a["outcome"], "acted", "{v}");
    assert_eq!(a["approval_id"], id.as_str(), "{v}");
    assert_eq!(restores(&stack), 1, "{v}");
    assert!(instance_exists(&primary, &temp).await);
    let d = drill_record(&stack).await.unwrap();
    assert_eq!(
        (d["phase"].as_str(), d["drill_instance"].as_str()),
        (Some("restoring"), Some(temp.as_str())),
        "{d}"
    );
    let started: DateTime<Utc> = serde_json::from_value(d["started_at"].clone()).unwrap();
    // The audit record names the approver.
    let audit = approval::audit(&stack, &format!("rds:{temp}"))
        .await
        .unwrap();
    let acted: Vec<&Value> = audit.iter().filter(|r| r["outcome"] == "acted").collect();
    assert_eq!(acted.len(), 1, "{audit:?}");
    assert!(
        acted[0]["steps"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["step"] == "change_window"
                && s["note"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("approved by bob at")))),
        "{:?}",
        acted[0]
    );
    assert_eq!(acted[0]["approval_id"], id.as_str());

    // A second delivery (a retried schedule) does nothing.
    let v = f.invoke_ok(approved_input(&req)).await.unwrap();
    assert!(no_actions(&v), "{v}");
    assert!(
        v["records"][0]["notes"][0]
            .as_str()
            .is_some_and(|n| n.contains("already used")),
        "{v}"
    );
    assert_eq!(restores(&stack), 1, "one approval, one restore");

    // The state machine goes on as for a drill started in the window: RDS-EVENT-0008 about the
    // temporary instance validates it (real PostgreSQL), records the RTO, deletes it.
    let mut ev: Value = serde_json::from_str(include_str!(
        "../../events/rds/eventbridge-drill-restored.json"
    ))
    .unwrap();
    let when = (started + chrono::Duration::minutes(9)).to_rfc3339();
    ev["id"] = json!("drill-event-1");
    ev["time"] = json!(when);
    ev["detail"]["Date"] = json!(when);
    ev["detail"]["SourceIdentifier"] = json!(temp);
    ev["detail"]["SourceArn"] = json!(format!("arn:aws:rds:us-east-1:123456789012:db:{temp}"));
    ev["resources"] = json!([]);
    let v = f.invoke_ok(ev).await.unwrap();
    let rec = &v["records"][0];
    let report: Vec<&Value> = rec["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| {
            a["dedup_key"]
                .as_str()
                .is_some_and(|k| k.starts_with("backup-drill#"))
        })
        .collect();
    assert_eq!(report.len(), 1, "{rec}");
    assert_eq!(report[0]["severity"], "P4", "{}", report[0]);
    assert_eq!(report[0]["details"]["rto_seconds"], 540, "{}", report[0]);
    assert!(
        report[0]["details"]["checks"]
            .to_string()
            .contains("450 row(s)"),
        "{}",
        report[0]
    );
    assert!(!instance_exists(&primary, &temp).await, "{rec}");
    assert_eq!(
        drill_record(&stack).await.unwrap()["phase"],
        "done",
        "{rec}"
    );
    assert_eq!(restores(&stack), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_or_no_longer_holding_restores_nothing_and_dry_run_asks_nobody() {
    let stack = Stack::start(false).await.unwrap();
    let f = start(&stack, &[]).await;
    let primary = rds(&stack).await;

    // Denied: delivering the task anyway restores nothing.
    let (id, temp) = ask(&stack, &f, "drill-denied").await;
    let req = approve(&stack, &id, "alice", Verdict::Deny).await;
    let v = f.invoke_ok(approved_input(&req)).await.unwrap();
    assert!(no_actions(&v), "{v}");
    assert!(
        v["records"][0]["notes"][0]
            .as_str()
            .is_some_and(|n| n.contains("denied by alice")),
        "{v}"
    );
    assert_eq!(restores(&stack), 0);
    assert!(!instance_exists(&primary, &temp).await);

    // The plan no longer holds: an instance of the planned name appeared meanwhile (a restore
    // on top would orphan it). Skipped, audited, the alert says why.
    let (id, temp) = ask(&stack, &f, "drill-stale").await;
    let req = approve(&stack, &id, "bob", Verdict::Approve).await;
    let snapshot = req.action.after["snapshot"].as_str().unwrap().to_string();
    primary
        .restore_db_instance_from_db_snapshot()
        .db_instance_identifier(&temp)
        .db_snapshot_identifier(&snapshot)
        .send()
        .await
        .unwrap();
    let v = f.invoke_ok(approved_input(&req)).await.unwrap();
    let a = &v["records"][0]["actions"][0];
    assert_eq!(a["outcome"], "skipped", "{v}");
    let sentence = a["sentence"].as_str().unwrap_or_default().to_string();
    assert!(
        sentence.contains("no longer matches live state: instance was null, now"),
        "{v}"
    );
    assert_eq!(restores(&stack), 0, "{v}");
    assert!(drill_record(&stack).await.is_none());
    let audit = approval::audit(&stack, &format!("rds:{temp}"))
        .await
        .unwrap();
    assert!(
        audit
            .iter()
            .any(|r| r["outcome"] == "skipped" && r["approval_id"] == id.as_str()),
        "{audit:?}"
    );
    let used = ApprovalRequest::load(&ledger(&stack), "dev", &id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(used.state, ApprovalState::Used);
    let alerts = platform::drain(&stack.clients, &stack.platform.alerts_queue)
        .await
        .unwrap();
    assert!(
        alerts
            .iter()
            .any(|x| x["summary"].as_str() == Some(sentence.as_str())),
        "the alert says why: {alerts:?}"
    );

    // Dry-run: would ask, asks nobody, stores nothing, restores nothing.
    drop(f);
    let f = start(&stack, &[("NBAOPS_GUARD__DRY_RUN", "true")]).await;
    let before = ApprovalRequest::all(&ledger(&stack), "dev")
        .await
        .unwrap()
        .len();
    let rec = drill_tick(&f, "drill-dry", clock::now()).await;
    let a = &rec["actions"][0];
    assert_eq!(
        (&a["outcome"], &a["dry_run"]),
        (&json!("needs-approval"), &json!(true)),
        "{rec}"
    );
    assert!(
        a["sentence"]
            .as_str()
            .is_some_and(|s| s.starts_with("Would ask for approval to ")),
        "{rec}"
    );
    assert!(
        rec["alerts"].as_array().is_some_and(|x| x.is_empty()),
        "{rec}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        platform::drain(&stack.clients, &stack.platform.alerts_queue)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        ApprovalRequest::all(&ledger(&stack), "dev")
            .await
            .unwrap()
            .len(),
        before
    );
    assert_eq!(restores(&stack), 0);
}

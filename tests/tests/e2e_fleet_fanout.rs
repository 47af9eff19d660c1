//! Issue #20, the fan-out of backup-guard's RPO check and offhours' tick over a fleet: the real
//! binaries, deployed in the hub (moto's account A = 123456789012, us-east-1), watch member
//! account B = 222222222222 (in the hub's region) through the role they assume there. A dispatch
//! enqueues work items on an SQS work queue on moto; the local event source mapping
//! (tests/src/esm.rs) hands them to the binary, which routes each to its account and region.
//!
//! - backup-guard: one work item per instance of `backup.instances` per origin; each checks its
//!   instance once, in its own account. `broken`'s RDS read fails (the fault proxy answers 500):
//!   only its two messages (one per origin) fail, come back, and land in the dead-letter queue,
//!   each with its own P2 (`work-dlq#backup-guard#broken` and `…#broken@<B>/us-east-1`).
//! - offhours: one work item per origin (never per resource); each runs the whole tick there: the
//!   same group name in A and B is stopped in each account, the audit record naming B's, each
//!   with its own remembered state (consumed one at a time, the second sees the first's ledger).
//!
//! One moto stack for both (they use separate queues and resources); the run takes well under a
//! minute.

use std::collections::BTreeMap;
use std::time::Duration;

use nbaops_tests::demo::Stack;
use nbaops_tests::esm::{self, Mapping};
use nbaops_tests::faultproxy::{Fault, Times};
use nbaops_tests::function::FunctionUnderTest;
use nbaops_tests::platform::{self, Clients, DB, ENV, OFFICE, TEST_WEB, WEB};
use nbaops_tests::{function_binary, runtime_api::Outcome};
use serde_json::{json, Value};

const B: &str = "222222222222";
const B_ROLE: &str = "arn:aws:iam::222222222222:role/nbaops-member-dev";
const EXTERNAL_ID: &str = "nbaops-dev-5f1c2e";
const MAX_RECEIVE_COUNT: u32 = 3;

fn mapping(queue_url: &str, queue_arn: &str, batch_size: i32, concurrency: usize) -> Mapping {
    Mapping {
        queue_url: queue_url.into(),
        queue_arn: queue_arn.into(),
        region: "us-east-1".into(),
        concurrency,
        batch_size,
        retry_after: Duration::ZERO,
        timeout: Duration::from_secs(60),
    }
}

/// Every record of every answer of the sweep.
fn records(sweep: &esm::Sweep) -> Vec<Value> {
    sweep
        .responses()
        .iter()
        .flat_map(|r| r["records"].as_array().cloned().unwrap_or_default())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rpo_check_and_the_offhours_tick_fan_out_per_origin_and_act_in_each_account() {
    let stack = Stack::start_behind_proxy(false).await.unwrap();
    let (endpoint, cw) = (&stack.moto.endpoint, &stack.moto.cloudwatch.endpoint);
    let b = Clients::assumed(endpoint, cw, "us-east-1", B_ROLE, EXTERNAL_ID).await;
    assert_eq!(b.account().await.unwrap(), B);
    stack
        .put_secret(
            &format!("/nbaops/{ENV}/secrets/fleet/external_id"),
            EXTERNAL_ID,
        )
        .await
        .unwrap();
    let accounts = format!("{B}={B_ROLE}");
    let fleet = [("NBAOPS_FLEET__ACCOUNTS", accounts.as_str())];
    let sqs = &stack.clients.sqs;
    let max_receive = MAX_RECEIVE_COUNT.to_string();

    // ---- backup-guard: the platform's instance in A, one of the same name in B.
    b.rds
        .create_db_instance()
        .db_instance_identifier(DB)
        .db_instance_class("db.t3.micro")
        .engine("postgres")
        .allocated_storage(20)
        .master_username("nbaops")
        .master_user_password("not-a-real-password")
        .backup_retention_period(7)
        .send()
        .await
        .unwrap();
    stack.proxy.as_ref().unwrap().inject_where(
        "rds",
        "DescribeDBInstances",
        "DBInstanceIdentifier=broken",
        Fault::Status(500),
        Times::Always,
    );
    let (queue_url, queue_arn, dlq_url) =
        esm::create_work_queue(sqs, "nbaops-dev-backup-rpo-work", MAX_RECEIVE_COUNT)
            .await
            .unwrap();
    let instances = format!("{DB},broken");
    let mut env = fleet.to_vec();
    env.extend([
        ("NBAOPS_BACKUP__INSTANCES", instances.as_str()),
        ("NBAOPS_BACKUP__DR_REGION", "us-west-2"),
        ("NBAOPS_FANOUT__QUEUE_URL", &queue_url),
        ("NBAOPS_FANOUT__TARGET_BUDGET_SECONDS", "20"),
        ("NBAOPS_FANOUT__MAX_RECEIVE_COUNT", &max_receive),
    ]);
    let guard = FunctionUnderTest::start(
        &function_binary("backup-guard").unwrap(),
        "backup-guard",
        &stack.function_env(&env),
        2,
    )
    .await
    .unwrap();
    let v = guard
        .invoke_ok(
            json!({"nbaops": {"task": "dispatch", "work": "backup-rpo-check", "id": "rpo-1"}}),
        )
        .await
        .unwrap();
    let summary = v["records"][0]["summary"].as_str().unwrap_or("");
    assert!(
        summary.starts_with(&format!(
            "dispatched 4 work item(s) of backup-rpo-check to {queue_url}"
        )),
        "{v}"
    );
    assert_eq!(esm::depth(sqs, &queue_url).await.unwrap(), (4, 0));
    let sweep = esm::run(sqs, &guard, &mapping(&queue_url, &queue_arn, 4, 2))
        .await
        .unwrap();
    assert_eq!(esm::depth(sqs, &queue_url).await.unwrap(), (0, 0));
    // Each watched instance checked once, in its own account (B's qualified with its origin).
    let mut checked: BTreeMap<String, usize> = BTreeMap::new();
    for rec in records(&sweep) {
        for n in rec["notes"].as_array().into_iter().flatten() {
            let n = n.as_str().unwrap_or("");
            if n.starts_with("rds:")
                && (n.contains(": backups within") || n.contains(" breach since "))
            {
                let resource = n.split(": ").next().unwrap_or("").to_string();
                *checked.entry(resource).or_default() += 1;
            }
        }
    }
    assert_eq!(
        checked,
        BTreeMap::from([
            (format!("rds:{DB}"), 1),
            (format!("rds:{DB}@{B}/us-east-1"), 1)
        ]),
        "{:?}",
        sweep.responses()
    );
    // A member's item moves no drill on (drill records are the hub's).
    let member_rec = records(&sweep)
        .into_iter()
        .find(|r| {
            r["notes"]
                .to_string()
                .contains(&format!("rds:{DB}@{B}/us-east-1"))
        })
        .unwrap();
    assert!(
        member_rec["notes"]
            .to_string()
            .contains("restore drills run in the hub only"),
        "{member_rec}"
    );
    // Only broken's two messages failed, each on every receive; then the dead-letter queue.
    let receives = sweep.receives_by_message();
    let failed: Vec<&String> = sweep.deliveries.iter().flat_map(|d| &d.failed).collect();
    assert_eq!(
        failed.len(),
        2 * MAX_RECEIVE_COUNT as usize,
        "{failed:?} {receives:?}"
    );
    assert_eq!(
        receives.values().filter(|n| **n == 1).count(),
        2,
        "{receives:?}"
    );
    assert_eq!(sweep.deleted, 2);
    let dead = esm::peek_bodies(sqs, &dlq_url).await.unwrap();
    let mut dead_targets: Vec<&str> = dead
        .iter()
        .map(|d| d["nbaops"]["target"].as_str().unwrap_or(""))
        .collect();
    dead_targets.sort_unstable();
    assert_eq!(
        dead_targets,
        vec!["broken", "broken@222222222222/us-east-1"],
        "{dead:?}"
    );
    assert!(
        stack
            .proxy
            .as_ref()
            .unwrap()
            .faults("rds", "DescribeDBInstances")
            >= 6
    );
    // One P2 per dead-lettered target, never shared between the two origins.
    let alerts = platform::drain(&stack.clients, &stack.platform.alerts_queue)
        .await
        .unwrap();
    let mut dlq_keys: Vec<&str> = alerts
        .iter()
        .filter_map(|a| a["dedup_key"].as_str())
        .filter(|k| k.starts_with("work-dlq#"))
        .collect();
    dlq_keys.sort_unstable();
    assert_eq!(
        dlq_keys,
        vec![
            "work-dlq#backup-guard#broken",
            "work-dlq#backup-guard#broken@222222222222/us-east-1"
        ],
        "{alerts:?}"
    );
    drop(guard);

    // ---- offhours: the same scheduled group in A and in B (and A's platform groups, untagged).
    platform::create_test_env(&stack).await;
    platform::group_in(
        &b,
        "us-east-1",
        TEST_WEB,
        1,
        4,
        2,
        &[("env", "test"), ("nbaops:schedule", "office")],
    )
    .await
    .unwrap();
    let (queue_url, queue_arn, dlq_url) =
        esm::create_work_queue(sqs, "nbaops-dev-offhours-work", MAX_RECEIVE_COUNT)
            .await
            .unwrap();
    let mut env = fleet.to_vec();
    env.extend([
        ("NBAOPS_OFFHOURS__SCHEDULES", OFFICE),
        ("NBAOPS_GUARD__BLAST__MAX_PERCENT", "100"),
        ("NBAOPS_FANOUT__QUEUE_URL", &queue_url),
        ("NBAOPS_FANOUT__TARGET_BUDGET_SECONDS", "30"),
        ("NBAOPS_FANOUT__MAX_RECEIVE_COUNT", &max_receive),
    ]);
    let offhours = FunctionUnderTest::start(
        &function_binary("offhours").unwrap(),
        "offhours",
        &stack.function_env(&env),
        2,
    )
    .await
    .unwrap();
    // Wednesday 2 December 2026 19:30 in Paris: after the office's hours, everything off.
    let v = offhours
        .invoke_ok(json!({"nbaops": {"task": "dispatch", "work": "offhours",
            "at": "2026-12-02T18:30:00Z", "id": "offhours-1"}}))
        .await
        .unwrap();
    let summary = v["records"][0]["summary"].as_str().unwrap_or("");
    assert!(
        summary.starts_with(&format!(
            "dispatched 2 work item(s) of offhours to {queue_url}"
        )),
        "one per origin, not per resource: {v}"
    );
    // One at a time: the second origin's run sees what the first one stored (its state of the
    // group of the same name must be its own).
    let sweep = esm::run(sqs, &offhours, &mapping(&queue_url, &queue_arn, 1, 1))
        .await
        .unwrap();
    assert_eq!(sweep.deliveries.len(), 2, "{:?}", sweep.deliveries);
    for d in &sweep.deliveries {
        assert!(d.failed.is_empty(), "{d:?}");
        assert!(matches!(d.outcome, Outcome::Response(_)), "{d:?}");
    }
    assert!(esm::peek_bodies(sqs, &dlq_url).await.unwrap().is_empty());
    let hub_group = platform::group_view(&stack.clients, TEST_WEB)
        .await
        .unwrap();
    let b_group = platform::group_view(&b, TEST_WEB).await.unwrap();
    assert_eq!(
        (hub_group.min, hub_group.max, hub_group.desired),
        (0, 0, 0),
        "A's group stopped: {:?}",
        sweep.responses()
    );
    assert_eq!(
        (b_group.min, b_group.max, b_group.desired),
        (0, 0, 0),
        "B's group stopped, in B: {:?}",
        sweep.responses()
    );
    assert_eq!(
        platform::group_view(&stack.clients, WEB)
            .await
            .unwrap()
            .desired,
        2,
        "A's unscheduled platform group never moves"
    );
    // The audit records name where each acted: B's with its origin, A's as before.
    let mut resources: Vec<String> = records(&sweep)
        .iter()
        .flat_map(|r| r["actions"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["outcome"] == "acted")
        .filter_map(|a| a["resource"].as_str().map(String::from))
        .filter(|r| r.starts_with("asg:"))
        .collect();
    resources.sort();
    assert_eq!(
        resources,
        vec![
            format!("asg:{TEST_WEB}"),
            format!("asg:{TEST_WEB}@{B}/us-east-1")
        ],
        "{:?}",
        sweep.responses()
    );
}

//! posture-check end to end (issue #21): the real binary over the Lambda Runtime API against moto.
//! The seed (`nbaops_tests::posture`) makes, for every rule moto can express, one compliant and
//! one non-compliant resource; a production deployment's daily run must find exactly the bad ones
//! (and none of the compliant), alert the P1/P2 ones once, remember them, and resolve a finding the
//! day after the resource is fixed. A development deployment with the safe fixes on turns deletion
//! protection on and fills missing tags through the guard: not in dry-run, not on `nbaops:protect`.
//!
//! Emulator gaps (docs/posture.md, "On the emulator"): moto replicates no automated backup to
//! another region (`rds.dr_replication`), and returns no security group of a cache
//! (`cache.open_security_group`): those two rules are proven on the fake only (the rules' and
//! the handler's unit tests). Here the open group's cache must NOT be found: moto shows no group.

use std::collections::BTreeSet;

use aws_sdk_rds::types::Tag as RdsTag;
use nbaops_tests::clock;
use nbaops_tests::demo::Stack;
use nbaops_tests::function::FunctionUnderTest;
use nbaops_tests::platform::Clients;
use nbaops_tests::posture::{seed, Seeded};
use nbaops_tests::{function_binary, platform};
use serde_json::{json, Value};

const FN: &str = "posture-check";

/// A production deployment judging only what is tagged for it (the platform's own dev resources
/// are another deployment's).
const PROD: &[(&str, &str)] = &[
    ("NBAOPS_ENV", "prod"),
    ("NBAOPS_POSTURE__CLAIM_UNTAGGED", "false"),
];

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

/// The daily run at `at`: its one record.
async fn run(f: &FunctionUnderTest, at: chrono::DateTime<chrono::Utc>) -> Value {
    let v = f
        .invoke_ok(
            json!({"nbaops": {"task": "posture-check", "at": at.to_rfc3339(),
                                     "id": format!("posture-{}", at.timestamp())}}),
        )
        .await
        .unwrap();
    let rec = v["records"][0].clone();
    assert!(
        rec["failed"].is_null() && rec["not_for_me"].is_null(),
        "{rec}"
    );
    rec
}

/// (rule, resource) of every finding the run's summary lists.
fn findings(rec: &Value) -> BTreeSet<(String, String)> {
    let summary = rec["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| {
            a["dedup_key"]
                .as_str()
                .unwrap()
                .starts_with("posture-summary#")
        })
        .unwrap_or_else(|| panic!("no summary alert: {rec}"));
    summary["details"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["rule"].as_str().unwrap().to_string(),
                f["resource"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The name a finding gives the resource `id` of `rule`'s pair.
fn resource(rule: &str, id: &str) -> String {
    let prefix = match rule {
        "rds.snapshot_public" | "unused.snapshot" => "rds-snapshot",
        r if r.starts_with("rds.") || r == "tags.missing" => "rds",
        r if r.starts_with("cache.") => "cache",
        "unused.volume" => "ec2-volume",
        "unused.address" => "eip",
        "unused.stopped_instance" => "ec2",
        "unused.load_balancer" => "elb",
        other => panic!("no resource naming for {other}"),
    };
    format!("{prefix}:{id}")
}

/// What the seed says the run must find: each rule's bad resource, but for the open security
/// group's (moto never returns a cache's security groups: nothing to find). And the two snapshots of `rds.snapshot_public` are manual snapshots as old as every other
/// seeded resource at `judge_at`, so `unused.snapshot` finds them too.
fn expected(s: &Seeded) -> BTreeSet<(String, String)> {
    let mut want: BTreeSet<(String, String)> = s
        .rules
        .iter()
        .filter(|(rule, _)| **rule != "cache.open_security_group")
        .map(|(rule, p)| (rule.to_string(), resource(rule, &p.bad)))
        .collect();
    let snaps = s.rules.get("rds.snapshot_public").unwrap();
    for id in [&snaps.ok, &snaps.bad] {
        want.insert(("unused.snapshot".into(), format!("rds-snapshot:{id}")));
    }
    want
}

/// Dedup keys and statuses of what the run published at P1/P2 (the individual alerts).
fn loud(rec: &Value) -> Vec<(String, String)> {
    rec["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| matches!(a["severity"].as_str(), Some("P1" | "P2")))
        .map(|a| {
            (
                a["dedup_key"].as_str().unwrap().to_string(),
                a["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rule_finds_its_bad_resource_and_nothing_else_then_resolves_when_fixed() {
    let stack = Stack::start(false).await.unwrap();
    let c = &stack.clients;
    let s = seed(c, clock::now()).await.unwrap();
    let f = start(&stack, PROD).await;

    let rec = run(&f, s.judge_at).await;
    let got = findings(&rec);
    let want = expected(&s);
    assert_eq!(
        got.difference(&want).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "found but not seeded bad: {rec}"
    );
    assert_eq!(
        want.difference(&got).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "seeded bad but not found: {rec}"
    );
    // No compliant resource of any rule is found by that rule.
    for (rule, p) in &s.rules {
        if *rule != "cache.open_security_group" {
            let ok = (rule.to_string(), resource(rule, &p.ok));
            assert!(!got.contains(&ok), "{ok:?} found: {rec}");
        }
    }
    assert!(
        rec["notes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| !n.as_str().unwrap().contains("could not read")),
        "{rec}"
    );
    // Every P1/P2 finding alerted once, on the topic as in the report.
    let p12: BTreeSet<String> = rec["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| matches!(a["severity"].as_str(), Some("P1" | "P2")))
        .map(|a| a["dedup_key"].as_str().unwrap().to_string())
        .collect();
    assert!(
        p12.contains("posture#rds.public#rds:posture-bad-public"),
        "{p12:?}"
    );
    assert!(p12.contains("posture#rds.snapshot_public#rds-snapshot:posture-bad-snapshot-public"));
    assert!(!p12
        .iter()
        .any(|k| k.contains("tags.missing") || k.contains("unused.")));
    let on_topic = platform::drain(c, &stack.platform.alerts_queue)
        .await
        .unwrap();
    let keys: Vec<String> = on_topic
        .iter()
        .filter_map(|m| m["dedup_key"].as_str().map(String::from))
        .collect();
    for k in &p12 {
        assert_eq!(keys.iter().filter(|x| *x == k).count(), 1, "{k}: {keys:?}");
    }

    // The next day, unchanged: nothing alerted again; then the public database made private.
    let day2 = s.judge_at + chrono::Duration::days(1);
    let rec2 = run(&f, day2).await;
    assert_eq!(findings(&rec2), got);
    assert!(loud(&rec2).is_empty(), "{rec2}");
    c.rds
        .modify_db_instance()
        .db_instance_identifier("posture-bad-public")
        .publicly_accessible(false)
        .apply_immediately(true)
        .send()
        .await
        .unwrap();
    let rec3 = run(&f, day2 + chrono::Duration::days(1)).await;
    let left = findings(&rec3);
    assert!(!left.contains(&(
        "rds.public".to_string(),
        "rds:posture-bad-public".to_string()
    )));
    assert_eq!(left.len(), got.len() - 1, "{rec3}");
    assert_eq!(
        loud(&rec3),
        [(
            "posture#rds.public#rds:posture-bad-public".to_string(),
            "resolved".to_string()
        )]
    );
    assert!(
        rec3["summary"].as_str().unwrap().contains("1 resolved"),
        "{rec3}"
    );
}

async fn dev_db(c: &Clients, id: &str, tags: &[(&str, &str)]) {
    c.rds
        .create_db_instance()
        .db_instance_identifier(id)
        .db_instance_class("db.t3.micro")
        .engine("postgres")
        .engine_version("16.3")
        .allocated_storage(20)
        .master_username("nbaops")
        .master_user_password("not-a-real-password-1")
        .storage_encrypted(true)
        .multi_az(true)
        .backup_retention_period(7)
        .enable_performance_insights(true)
        .deletion_protection(false)
        .set_tags(Some(
            tags.iter()
                .map(|(k, v)| RdsTag::builder().key(*k).value(*v).build())
                .collect(),
        ))
        .send()
        .await
        .unwrap();
}

async fn db_facts(c: &Clients, id: &str) -> (bool, Vec<(String, String)>) {
    let out = c
        .rds
        .describe_db_instances()
        .db_instance_identifier(id)
        .send()
        .await
        .unwrap();
    let db = &out.db_instances()[0];
    let mut tags: Vec<(String, String)> = db
        .tag_list()
        .iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().to_string(),
                t.value().unwrap_or_default().to_string(),
            )
        })
        .collect();
    tags.sort();
    (db.deletion_protection().unwrap_or(false), tags)
}

/// (action, resource, outcome) of the run's audit records.
fn outcomes(rec: &Value) -> BTreeSet<(String, String, String)> {
    rec["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["action"].as_str().unwrap().to_string(),
                a["resource"].as_str().unwrap().to_string(),
                a["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safe_fixes_pass_the_guard_dry_run_first_never_on_protected() {
    let stack = Stack::start(false).await.unwrap();
    let c = &stack.clients;
    let full = [
        ("nbaops:env", "dev"),
        ("team", "platform"),
        ("cost-center", "nba"),
    ];
    dev_db(c, "posture-dev-unprotected", &full).await;
    dev_db(
        c,
        "posture-dev-untagged",
        &[("nbaops:env", "dev"), ("team", "platform")],
    )
    .await;
    let mut protected = full.to_vec();
    protected.push(("nbaops:protect", "true"));
    dev_db(c, "posture-dev-protected", &protected).await;
    // Deletion protection everywhere (not only prod), fixes on in dev, a default cost centre.
    let fixes: &[(&str, &str)] = &[
        ("NBAOPS_POSTURE__CLAIM_UNTAGGED", "false"),
        // moto ignores Performance Insights (docs/posture.md): the monitoring rule is not this
        // test's subject.
        ("NBAOPS_POSTURE__REQUIRE_MONITORING", "false"),
        (
            "NBAOPS_POSTURE__PROD_ONLY_RULES",
            "rds.multi_az,rds.dr_replication",
        ),
        ("NBAOPS_POSTURE__FIX__ENVS", "dev"),
        (
            "NBAOPS_POSTURE__FIX__DEFAULT_TAGS",
            r#"{"cost-center":"nba"}"#,
        ),
        ("NBAOPS_GUARD__BLAST__MAX_PERCENT", "100"),
        ("NBAOPS_GUARD__BLAST__MAX_ACTIONS", "5"),
    ];
    let at = clock::now();

    // Dry-run: every fix decided and audited, nothing changed.
    let dry = start(
        &stack,
        &[fixes, &[("NBAOPS_GUARD__DRY_RUN", "true")]].concat(),
    )
    .await;
    let rec = run(&dry, at).await;
    let unprotected = "rds:posture-dev-unprotected".to_string();
    let untagged = "rds:posture-dev-untagged".to_string();
    let protected_r = "rds:posture-dev-protected".to_string();
    let dp = "rds.enable_deletion_protection".to_string();
    let tags = "rds.add_tags".to_string();
    let want_dry: BTreeSet<(String, String, String)> = [
        (dp.clone(), unprotected.clone(), "would-act".to_string()),
        (dp.clone(), untagged.clone(), "would-act".to_string()),
        (tags.clone(), untagged.clone(), "would-act".to_string()),
        (dp.clone(), protected_r.clone(), "skipped".to_string()),
    ]
    .into();
    assert_eq!(outcomes(&rec), want_dry, "{rec}");
    for id in [
        "posture-dev-unprotected",
        "posture-dev-untagged",
        "posture-dev-protected",
    ] {
        assert!(!db_facts(c, id).await.0, "{id} changed in dry-run");
    }
    assert_eq!(db_facts(c, "posture-dev-untagged").await.1.len(), 2);
    drop(dry);

    // Live: the fixes happen, but never on the protected database.
    let live = start(&stack, fixes).await;
    let rec = run(&live, at + chrono::Duration::minutes(5)).await;
    let want_live: BTreeSet<(String, String, String)> = [
        (dp.clone(), unprotected.clone(), "acted".to_string()),
        (dp.clone(), untagged.clone(), "acted".to_string()),
        (tags.clone(), untagged.clone(), "acted".to_string()),
        (dp.clone(), protected_r.clone(), "skipped".to_string()),
    ]
    .into();
    assert_eq!(outcomes(&rec), want_live, "{rec}");
    assert!(db_facts(c, "posture-dev-unprotected").await.0);
    assert!(!db_facts(c, "posture-dev-protected").await.0);
    let (dp_on, t) = db_facts(c, "posture-dev-untagged").await;
    assert!(dp_on);
    assert!(
        t.contains(&("cost-center".to_string(), "nba".to_string())),
        "{t:?}"
    );

    // The next day: the fixed findings are resolved, the protected one still open.
    let rec = run(&live, at + chrono::Duration::days(1)).await;
    let left = findings(&rec);
    assert_eq!(
        left,
        [("rds.deletion_protection".to_string(), protected_r.clone())].into(),
        "{rec}"
    );
    assert_eq!(
        outcomes(&rec),
        [(dp, protected_r, "skipped".to_string())].into()
    );
}

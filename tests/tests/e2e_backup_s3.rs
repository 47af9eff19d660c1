//! backup-guard's `backup-s3-check` end to end (issue #22): the real binary over the Lambda Runtime
//! API against moto's S3 (a bucket seeded per kind, storage classes set on put), the ledger and
//! the alerts topic. moto stamps LastModified with the real time and it cannot be backdated, so
//! "late", "wrong class after the lifecycle grace" and "kept past retention" are reached by
//! moving the tick's clock (`at`) forward, and their resolution by fixing the bucket or moving
//! the clock back.

use chrono::{DateTime, Duration, Utc};
use nbaops_tests::demo::Stack;
use nbaops_tests::function::FunctionUnderTest;
use nbaops_tests::function_binary;
use nbaops_tests::platform;
use serde_json::{json, Value};

const BUCKET: &str = "nbaops-dev-backups-123456789012-us-east-1";

async fn start(stack: &Stack, bucket: &str) -> FunctionUnderTest {
    FunctionUnderTest::start(
        &function_binary("backup-guard").unwrap(),
        "backup-guard",
        &stack.function_env(&[
            ("NBAOPS_BACKUP__S3__BUCKET", bucket),
            // Two weekly dumps promised (the SPEC's 12 would take 12 weeks to seed), one WAL
            // segment, one physical backup.
            ("NBAOPS_BACKUP__S3__LOGICAL__MIN_COUNT", "2"),
            ("NBAOPS_BACKUP__S3__PHYSICAL__MIN_COUNT", "1"),
        ]),
        1,
    )
    .await
    .unwrap()
}

async fn tick(f: &FunctionUnderTest, id: &str, at: DateTime<Utc>) -> Value {
    let v = f
        .invoke_ok(json!({"nbaops": {"task": "backup-s3-check", "id": id, "at": at.to_rfc3339()}}))
        .await
        .unwrap();
    v["records"][0].clone()
}

/// (dedup key, severity, status) of the record's backup-s3 alerts, sorted.
fn said(rec: &Value) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = rec["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| {
            a["dedup_key"]
                .as_str()
                .unwrap_or("")
                .starts_with("backup-s3#")
        })
        .map(|a| {
            (
                a["dedup_key"].as_str().unwrap().to_string(),
                a["severity"].as_str().unwrap().to_string(),
                a["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

fn firing(key: &str, sev: &str) -> (String, String, String) {
    (key.into(), sev.into(), "firing".into())
}

fn resolved(rec: &Value) -> Vec<String> {
    said(rec)
        .into_iter()
        .filter(|(_, _, s)| s == "resolved")
        .map(|(k, _, _)| k)
        .collect()
}

async fn s3(stack: &Stack) -> aws_sdk_s3::Client {
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&stack.moto.endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "testing", "testing", None, None, "e2e",
        ))
        .load()
        .await;
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&conf)
            .force_path_style(true)
            .build(),
    )
}

async fn put(c: &aws_sdk_s3::Client, key: &str, class: aws_sdk_s3::types::StorageClass) {
    c.put_object()
        .bucket(BUCKET)
        .key(key)
        .storage_class(class)
        .body(aws_sdk_s3::primitives::ByteStream::from_static(b"backup"))
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_kinds_missing_late_wrong_class_past_retention_unreadable_and_resolved() {
    use aws_sdk_s3::types::StorageClass;
    let stack = Stack::start(false).await.unwrap();
    let c = s3(&stack).await;
    c.create_bucket().bucket(BUCKET).send().await.unwrap();
    let now = nbaops_tests::clock::now();
    let day = |d: DateTime<Utc>| d.format("%Y-%m-%d").to_string();
    put(
        &c,
        &format!("logical/{}/app.dump", day(now)),
        StorageClass::Standard,
    )
    .await;
    put(&c, "wal/000000010000000000000001", StorageClass::Standard).await;
    let f = start(&stack, BUCKET).await;

    // Nothing physical: missing (P2); one weekly dump of the two promised: too few (P3).
    let rec = tick(&f, "s3-1", now).await;
    assert_eq!(
        said(&rec),
        vec![
            firing("backup-s3#logical/too-few", "P3"),
            firing("backup-s3#physical/missing", "P2"),
        ],
        "{rec}"
    );
    assert!(rec["actions"].as_array().unwrap().is_empty());
    // Once: the same findings a minute later say nothing.
    let rec = tick(&f, "s3-2", now + Duration::minutes(1)).await;
    assert!(said(&rec).is_empty(), "{rec}");

    // The monthly physical backup lands (its data in Glacier, its manifest still in STANDARD),
    // and a second dump: both findings resolve.
    put(
        &c,
        &format!("physical/{}/base.tar", now.format("%Y-%m")),
        StorageClass::Glacier,
    )
    .await;
    put(
        &c,
        &format!("physical/{}/manifest.json", now.format("%Y-%m")),
        StorageClass::Standard,
    )
    .await;
    put(
        &c,
        &format!("logical/{}/app.dump", day(now - Duration::days(7))),
        StorageClass::Standard,
    )
    .await;
    let rec = tick(&f, "s3-3", now + Duration::minutes(2)).await;
    assert_eq!(
        resolved(&rec),
        vec!["backup-s3#logical/too-few", "backup-s3#physical/missing"],
        "{rec}"
    );
    assert_eq!(said(&rec).len(), 2, "{rec}");

    // Four days on: no WAL since (1 h + 6 h grace): late (P2); the manifest is past the
    // lifecycle grace (72 h) and not in Glacier (P3).
    let rec = tick(&f, "s3-4", now + Duration::days(4)).await;
    assert_eq!(
        said(&rec),
        vec![
            firing("backup-s3#physical/storage-class", "P3"),
            firing("backup-s3#wal/late", "P2"),
        ],
        "{rec}"
    );
    assert!(rec["notes"].to_string().contains("physical/"), "{rec}");
    let details = rec["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["dedup_key"] == "backup-s3#physical/storage-class")
        .unwrap()["details"]
        .clone();
    assert!(details.to_string().contains("manifest.json"), "{details}");
    assert!(!details.to_string().contains("base.tar"), "{details}");

    // A bucket nbaops cannot read: each kind is unreadable (P2), never fine, and the open
    // findings are neither resolved nor repeated on a listing nobody saw.
    let blind = start(&stack, "nbaops-e2e-no-such-bucket").await;
    let rec = tick(
        &blind,
        "s3-5",
        now + Duration::days(4) + Duration::minutes(30),
    )
    .await;
    assert_eq!(
        said(&rec),
        vec![
            firing("backup-s3#logical/unreadable", "P2"),
            firing("backup-s3#physical/unreadable", "P2"),
            firing("backup-s3#wal/unreadable", "P2"),
        ],
        "{rec}"
    );
    assert!(!rec["notes"].to_string().contains("as promised"), "{rec}");
    assert!(rec["notes"].to_string().contains("NoSuchBucket"), "{rec}");

    // The manifest moved to Glacier by hand: its finding resolves, the unreadable ones too; the
    // WAL is still late (open, not repeated).
    c.copy_object()
        .bucket(BUCKET)
        .key(format!("physical/{}/manifest.json", now.format("%Y-%m")))
        .copy_source(format!(
            "{BUCKET}/physical/{}/manifest.json",
            now.format("%Y-%m")
        ))
        .storage_class(StorageClass::Glacier)
        .send()
        .await
        .unwrap();
    let rec = tick(&f, "s3-6", now + Duration::days(4) + Duration::hours(1)).await;
    assert_eq!(
        resolved(&rec),
        vec![
            "backup-s3#logical/unreadable",
            "backup-s3#physical/storage-class",
            "backup-s3#physical/unreadable",
            "backup-s3#wal/unreadable",
        ],
        "{rec}"
    );
    assert_eq!(said(&rec).len(), 4, "{rec}");

    // Ninety days on: the dumps are past the 84 days (+ 72 h) and still there: the lifecycle is
    // not expiring them (moto runs no lifecycle); the WAL is past its 7 days too.
    let rec = tick(&f, "s3-7", now + Duration::days(90)).await;
    let keys: Vec<String> = said(&rec).into_iter().map(|(k, _, _)| k).collect();
    for k in [
        "backup-s3#logical/late",
        "backup-s3#logical/past-retention",
        "backup-s3#wal/past-retention",
        "backup-s3#physical/late",
    ] {
        assert!(keys.contains(&k.to_string()), "{k}: {rec}");
    }
    assert!(
        !keys.contains(&"backup-s3#wal/late".to_string()),
        "still open, not repeated: {rec}"
    );

    // Back to today: every finding still open resolves.
    let rec = tick(&f, "s3-8", now + Duration::minutes(5)).await;
    assert!(said(&rec).iter().all(|(_, _, s)| s == "resolved"), "{rec}");
    let published = platform::drain(&stack.clients, &stack.platform.alerts_queue)
        .await
        .unwrap();
    let mut last = std::collections::BTreeMap::new();
    for a in &published {
        let key = a["dedup_key"].as_str().unwrap_or("");
        if key.starts_with("backup-s3#") {
            last.insert(key.to_string(), a["status"].as_str().unwrap().to_string());
        }
    }
    assert!(last.len() >= 9, "{last:?}");
    assert!(
        last.values().all(|s| s == "resolved"),
        "every finding published ends resolved: {last:?}"
    );
    assert!(published
        .iter()
        .filter(|a| a["dedup_key"]
            .as_str()
            .unwrap_or("")
            .starts_with("backup-s3#"))
        .all(|a| a["runbook_page"]
            .as_str()
            .unwrap_or("")
            .ends_with("backup-s3.md")));

    // Read-only: the function's only S3 calls were listings (authorised as s3:ListBucket).
    let calls: Vec<String> = stack
        .moto
        .calls()
        .iter()
        .filter(|c| c.app.as_deref() == Some("backup-guard") && c.service == "s3")
        .map(|c| c.iam_action())
        .collect();
    assert!(!calls.is_empty());
    assert!(calls.iter().all(|c| c == "s3:ListBucket"), "{calls:?}");
    // Nothing deleted: every object seeded is still there.
    let left = c
        .list_objects_v2()
        .bucket(BUCKET)
        .send()
        .await
        .unwrap()
        .key_count()
        .unwrap_or(0);
    assert_eq!(left, 5);
}

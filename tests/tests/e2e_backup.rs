//! backup-guard end to end: the real binary over the Lambda Runtime API, moto for RDS snapshots
//! (both regions), instance restores, the ledger, topics and SSM, and a real PostgreSQL for the
//! WAL archiver check and the drill's validation queries. Time travel: every tick carries `at`.

use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use nbaops_tests::demo::Stack;
use nbaops_tests::function::FunctionUnderTest;
use nbaops_tests::function_binary;
use nbaops_tests::platform::{self, DB, LEDGER};
use nbaops_tests::postgres::Postgres;
use serde_json::{json, Value};

const DR: &str = "us-west-2";

/// backup-guard in the change window (the drill's start is disruptive; outside the window it asks
/// a person: e2e_approval_backup).
async fn start(stack: &Stack, env: &[(&str, &str)]) -> FunctionUnderTest {
    let window = nbaops_tests::approval::window_around_now();
    let mut all: Vec<(&str, &str)> = window.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.extend([
        ("NBAOPS_BACKUP__INSTANCES", DB),
        ("NBAOPS_BACKUP__DR_REGION", DR),
    ]);
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

async fn invoke(f: &FunctionUnderTest, payload: Value) -> Value {
    f.invoke_ok(payload).await.unwrap()
}

async fn tick(f: &FunctionUnderTest, task: &str, id: &str, at: DateTime<Utc>) -> Value {
    let v = invoke(
        f,
        json!({"nbaops": {"task": task, "id": id, "at": at.to_rfc3339()}}),
    )
    .await;
    v["records"][0].clone()
}

fn alerts<'a>(rec: &'a Value, key_prefix: &str) -> Vec<&'a Value> {
    rec["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| {
            a["dedup_key"]
                .as_str()
                .unwrap_or("")
                .starts_with(key_prefix)
        })
        .collect()
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

/// (id, tags) of the manual snapshots of DB in a region.
async fn manual_snapshots(c: &aws_sdk_rds::Client) -> Vec<(String, Vec<(String, String)>)> {
    let out = c
        .describe_db_snapshots()
        .db_instance_identifier(DB)
        .snapshot_type("manual")
        .send()
        .await
        .unwrap();
    let mut v: Vec<_> = out
        .db_snapshots()
        .iter()
        .map(|s| {
            (
                s.db_snapshot_identifier().unwrap_or("").to_string(),
                s.tag_list()
                    .iter()
                    .map(|t| {
                        (
                            t.key().unwrap_or("").to_string(),
                            t.value().unwrap_or("").to_string(),
                        )
                    })
                    .collect(),
            )
        })
        .collect();
    v.sort();
    v
}

async fn instance_exists(c: &aws_sdk_rds::Client, id: &str) -> bool {
    c.describe_db_instances()
        .db_instance_identifier(id)
        .send()
        .await
        .is_ok_and(|o| !o.db_instances().is_empty())
}

async fn ledger_item(stack: &Stack, pk: &str, sk: &str) -> Option<Value> {
    let out = stack
        .clients
        .ddb
        .get_item()
        .table_name(LEDGER)
        .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(pk.into()))
        .key("sk", aws_sdk_dynamodb::types::AttributeValue::S(sk.into()))
        .send()
        .await
        .unwrap();
    let data = out.item()?.get("data")?.as_s().ok()?;
    serde_json::from_str(data).ok()
}

fn monthly_id(at: DateTime<Utc>) -> String {
    format!("nbaops-monthly-{DB}-{}", at.format("%Y-%m"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpo_check_passes_then_breaches_p2_then_p1_then_resolves() {
    let stack = Stack::start(false).await.unwrap();
    let f = start(&stack, &[]).await;
    let now = nbaops_tests::clock::now();
    let rec = tick(&f, "backup-rpo-check", "rpo-1", now).await;
    assert!(rec["alerts"].as_array().unwrap().is_empty(), "{rec}");
    assert!(rec["actions"].as_array().unwrap().is_empty());

    // The emulator's restore point is "now": 20 minutes later by the tick, it is 20 min behind.
    let rec = tick(
        &f,
        "backup-rpo-check",
        "rpo-2",
        now + chrono::Duration::minutes(20),
    )
    .await;
    let a = alerts(&rec, "backup-rpo#");
    assert_eq!(a.len(), 1, "{rec}");
    assert_eq!(a[0]["severity"], "P2");
    assert!(
        a[0]["summary"]
            .as_str()
            .unwrap()
            .contains("LatestRestorableTime"),
        "{}",
        a[0]
    );
    // The breach has lasted longer than the RPO: P1.
    let rec = tick(
        &f,
        "backup-rpo-check",
        "rpo-3",
        now + chrono::Duration::minutes(40),
    )
    .await;
    let a = alerts(&rec, "backup-rpo#");
    assert_eq!(a[0]["severity"], "P1", "{rec}");
    // Back to the real clock: healthy, resolved.
    let rec = tick(&f, "backup-rpo-check", "rpo-4", nbaops_tests::clock::now()).await;
    assert_eq!(
        alerts(&rec, "backup-rpo#")[0]["status"],
        "resolved",
        "{rec}"
    );
    let published = platform::drain(&stack.clients, &stack.platform.alerts_queue)
        .await
        .unwrap();
    let sevs: Vec<(&str, &str)> = published
        .iter()
        .filter(|a| a["dedup_key"] == format!("backup-rpo#{DB}"))
        .map(|a| {
            (
                a["severity"].as_str().unwrap(),
                a["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        sevs,
        vec![("P2", "firing"), ("P1", "firing"), ("P1", "resolved")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monthly_snapshot_once_copied_to_dr_and_expired_in_both_regions() {
    let stack = Stack::start(false).await.unwrap();
    let primary = rds_client(&stack, "us-east-1").await;
    let dr = rds_client(&stack, DR).await;
    // A snapshot a person took: never touched by retention.
    primary
        .create_db_snapshot()
        .db_instance_identifier(DB)
        .db_snapshot_identifier("before-upgrade")
        .send()
        .await
        .unwrap();
    primary
        .add_tags_to_resource()
        .resource_name(
            primary
                .describe_db_instances()
                .db_instance_identifier(DB)
                .send()
                .await
                .unwrap()
                .db_instances()[0]
                .db_instance_arn()
                .unwrap(),
        )
        .tags(
            aws_sdk_rds::types::Tag::builder()
                .key("team")
                .value("fantasy")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let f = start(&stack, &[]).await;
    let now = nbaops_tests::clock::now();
    let month = monthly_id(now);
    let r1 = tick(&f, "backup-monthly", "m-1", now).await;
    let r2 = tick(
        &f,
        "backup-monthly",
        "m-2",
        now + chrono::Duration::seconds(1),
    )
    .await;
    let mine: Vec<String> = manual_snapshots(&primary)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        mine,
        vec!["before-upgrade".to_string(), month.clone()],
        "{r1}\n{r2}"
    );
    assert!(
        r2["notes"]
            .to_string()
            .contains("this month's snapshot exists"),
        "{r2}"
    );
    // The DR region shows the copy, with the tags (instance tags + ours).
    let copies = manual_snapshots(&dr).await;
    assert_eq!(copies.len(), 1, "{copies:?}\n{r1}");
    assert_eq!(copies[0].0, month);
    assert!(
        copies[0]
            .1
            .contains(&("nbaops:backup".into(), "monthly".into())),
        "{copies:?}"
    );
    assert!(
        copies[0].1.contains(&("team".into(), "fantasy".into())),
        "{copies:?}"
    );
    let tracked = ledger_item(&stack, &format!("backupcopy#{DB}"), &month)
        .await
        .unwrap();
    assert_eq!(tracked["region"], DR, "{tracked}");
    let acted: Vec<&str> = r1["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(acted, vec!["acted", "acted"], "create + copy: {r1}");

    // 400 days on: this month's snapshot is past the year. The new month's snapshot is made;
    // the old one goes in the primary region, but in the DR region it is the only copy: kept.
    let later = now + chrono::Duration::days(400);
    let r3 = tick(&f, "backup-monthly", "m-3", later).await;
    let mine: Vec<String> = manual_snapshots(&primary)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        mine,
        vec!["before-upgrade".to_string(), monthly_id(later)],
        "{r3}"
    );
    let copies: Vec<String> = manual_snapshots(&dr)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(copies, vec![month.clone()], "{r3}");
    assert!(r3["notes"].to_string().contains("only recent copy"), "{r3}");
    let audits = platform::drain(&stack.clients, &stack.platform.actions_queue)
        .await
        .unwrap();
    assert!(audits.iter().any(|a| a["action"] == "rds.snapshot.delete"
        && a["resource"] == format!("rds-snapshot:{month}")
        && a["outcome"] == "acted"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_copy_is_retried_on_a_later_run() {
    let stack = Stack::start(false).await.unwrap();
    let dr = rds_client(&stack, DR).await;
    // A KMS key of the wrong region: the emulator refuses the copy as AWS would.
    let f = start(
        &stack,
        &[(
            "NBAOPS_BACKUP__DR_KMS_KEY_ID",
            "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        )],
    )
    .await;
    let now = nbaops_tests::clock::now();
    let month = monthly_id(now);
    let r1 = tick(&f, "backup-monthly", "c-1", now).await;
    let failed = &r1["actions"][1];
    assert_eq!(
        (failed["action"].as_str(), failed["outcome"].as_str()),
        (Some("rds.snapshot.copy"), Some("failed")),
        "{r1}"
    );
    assert_eq!(alerts(&r1, "backup-copy#")[0]["severity"], "P3", "{r1}");
    assert!(manual_snapshots(&dr).await.is_empty());
    let tracked = ledger_item(&stack, &format!("backupcopy#{DB}"), &month)
        .await
        .unwrap();
    assert_eq!(
        (tracked["state"].as_str(), tracked["attempts"].as_u64()),
        (Some("failed"), Some(1)),
        "{tracked}"
    );
    drop(f);

    // The key fixed (a new deployment); the next daily run copies it — even when that run falls
    // in the next month (the suite runs at a month end too) and one copy slot is free: the
    // retry goes before the new month's copy.
    let f = start(&stack, &[("NBAOPS_BACKUP__MAX_CONCURRENT_COPIES", "1")]).await;
    let r2 = tick(
        &f,
        "backup-monthly",
        "c-2",
        now + chrono::Duration::hours(24),
    )
    .await;
    let copies: Vec<&Value> = r2["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "rds.snapshot.copy")
        .collect();
    assert_eq!(copies.len(), 1, "{r2}");
    let copy = copies[0];
    assert_eq!(copy["resource"], format!("rds-snapshot:{month}"), "{r2}");
    assert_eq!(copy["outcome"], "acted", "{r2}");
    assert!(
        copy["reason"].as_str().unwrap().contains("attempt 2"),
        "{copy}"
    );
    assert!(manual_snapshots(&dr)
        .await
        .iter()
        .any(|(id, _)| *id == month));
    let tracked = ledger_item(&stack, &format!("backupcopy#{DB}"), &month)
        .await
        .unwrap();
    assert_eq!(tracked["attempts"].as_u64(), Some(2), "{tracked}");
}

fn pg_ctl_restart(pg: &Postgres) {
    let bin = std::fs::read_dir("/usr/lib/postgresql")
        .unwrap()
        .flatten()
        .map(|e| e.path().join("bin/pg_ctl"))
        .filter(|p| p.is_file())
        .max()
        .unwrap();
    let data = pg.data_dir.display().to_string();
    let log = pg.dir.join("postgres.log").display().to_string();
    let args = [
        "-D",
        data.as_str(),
        "-l",
        log.as_str(),
        "-w",
        "-t",
        "30",
        "restart",
    ];
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    let out = if root {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(&bin)
            .args(args)
            .current_dir(&pg.dir)
            .output()
    } else {
        Command::new(&bin).args(args).current_dir(&pg.dir).output()
    }
    .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        pg.log_tail()
    );
}

fn wait_for(pg: &Postgres, sql: &str) {
    let started = Instant::now();
    while pg.psql("app", sql).unwrap() != "t" {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{sql} never true\n{}",
            pg.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_archiver_healthy_then_failing_is_p2() {
    let stack = Stack::start(false).await.unwrap();
    let pg = Postgres::start().unwrap();
    pg.as_rds("app").unwrap();
    pg.psql("app", "alter system set archive_mode = on")
        .unwrap();
    pg.psql("app", "alter system set archive_command = 'true'")
        .unwrap();
    pg_ctl_restart(&pg);
    pg.psql_app("app", "create table t (id int); insert into t values (1)")
        .unwrap();
    pg.psql("app", "select pg_switch_wal()").unwrap();
    wait_for(&pg, "select archived_count > 0 from pg_stat_archiver");
    // The WAL check reads pg_stat_archiver as nbaops_monitor, its password from SSM.
    let roles = stack.put_pg_passwords(&pg, "app", "app").await.unwrap();
    let wal = format!("{DB}=app");
    let mut env: Vec<(&str, &str)> = roles
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    env.push(("NBAOPS_BACKUP__WAL__DATABASES", wal.as_str()));
    let f = start(&stack, &env).await;
    let rec = tick(&f, "backup-rpo-check", "wal-1", nbaops_tests::clock::now()).await;
    assert!(alerts(&rec, "backup-rpo#").is_empty(), "{rec}");
    assert!(
        rec["notes"].to_string().contains("archiving healthy"),
        "{rec}"
    );

    // archive_command now fails: the archiver keeps failing on the next segment.
    pg.psql("app", "alter system set archive_command = 'false'")
        .unwrap();
    pg.psql("app", "select pg_reload_conf()").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    pg.psql("app", "insert into t values (2); select pg_switch_wal()")
        .unwrap();
    wait_for(&pg, "select failed_count > 0 from pg_stat_archiver");
    let rec = tick(&f, "backup-rpo-check", "wal-2", nbaops_tests::clock::now()).await;
    let a = alerts(&rec, "backup-rpo#");
    assert_eq!(a.len(), 1, "{rec}");
    assert_eq!(a[0]["severity"], "P2");
    assert!(
        a[0]["summary"]
            .as_str()
            .unwrap()
            .contains("WAL archiving is failing"),
        "{}",
        a[0]
    );
}

/// The source database as RDS gives it, the application's tables owned by nbaops_app, and the
/// drill's own role (infra/sql/04, SELECT on the drill's tables only) with its password where a
/// deployment keeps it (`/nbaops/<env>/secrets/backup/drill/<db>`).
async fn drill_db(stack: &Stack, pg: &Postgres) {
    pg.as_rds("app").unwrap();
    pg.psql_app(
        "app",
        "create table players (id int primary key, name text); \
         insert into players select g, 'p' || g from generate_series(1, 450) g; \
         create schema ops; create table ops.backup_checksum (k text primary key, v text); \
         insert into ops.backup_checksum values ('season', '2026'), ('build', 'abc')",
    )
    .unwrap();
    let sql = nbaops_tests::workspace_root().join("infra/sql/04_drill_role.sql");
    pg.psql_file(
        "rds_master",
        "app",
        &sql,
        &[("drill_tables", "players,ops.backup_checksum")],
    )
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
}

fn drill_env(pg: &Postgres, key_tables: &str) -> Vec<(String, String)> {
    vec![
        ("NBAOPS_BACKUP__DRILL__KEY_TABLES".into(), key_tables.into()),
        (
            "NBAOPS_BACKUP__DRILL__CHECKSUM_TABLE".into(),
            "ops.backup_checksum".into(),
        ),
        // The emulator's restored instance has no server behind it: validate against ours.
        (
            "NBAOPS_BACKUP__DRILL__URL_OVERRIDES".into(),
            json!({ DB: pg.url_as("nbaops_drill", "app") }).to_string(),
        ),
    ]
}

fn drill_id(at: DateTime<Utc>) -> String {
    format!("nbaops-drill-{DB}-{}", at.format("%Y%m%d%H%M"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_drill_passes_records_rto_and_deletes_the_instance() {
    let stack = Stack::start(false).await.unwrap();
    let pg = Postgres::start().unwrap();
    drill_db(&stack, &pg).await;
    let env = drill_env(&pg, "players");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let f = start(&stack, &env).await;
    let primary = rds_client(&stack, "us-east-1").await;
    let at = nbaops_tests::clock::now();
    let temp = drill_id(at);
    let rec = tick(&f, "backup-restore-drill", "drill-1", at).await;
    assert_eq!(rec["actions"][0]["action"], "rds.restore_drill", "{rec}");
    assert_eq!(rec["actions"][0]["outcome"], "acted", "{rec}");
    assert!(instance_exists(&primary, &temp).await, "{rec}");
    // The invocation returned after starting the restore: nothing verified yet.
    assert!(alerts(&rec, "backup-drill#").is_empty(), "{rec}");

    // RDS-EVENT-0008 for the temporary instance, 7 minutes after the start, drives the next step.
    let mut ev: Value = serde_json::from_str(include_str!(
        "../../events/rds/eventbridge-drill-restored.json"
    ))
    .unwrap();
    let when = (at + chrono::Duration::minutes(7)).to_rfc3339();
    ev["id"] = json!("drill-event-1");
    ev["time"] = json!(when);
    ev["detail"]["Date"] = json!(when);
    ev["detail"]["SourceIdentifier"] = json!(temp);
    ev["detail"]["SourceArn"] = json!(format!("arn:aws:rds:us-east-1:123456789012:db:{temp}"));
    ev["resources"] = json!([]);
    let v = invoke(&f, ev).await;
    let rec = &v["records"][0];
    let report = alerts(rec, "backup-drill#");
    assert_eq!(report.len(), 1, "{rec}");
    assert_eq!(report[0]["severity"], "P4", "{}", report[0]);
    assert_eq!(report[0]["details"]["rto_seconds"], 420, "{}", report[0]);
    assert_eq!(report[0]["details"]["rto_met"], true);
    let checks = report[0]["details"]["checks"].to_string();
    assert!(
        checks.contains("450 row(s)") && checks.contains("over 2 row(s)"),
        "{checks}"
    );
    let delete = rec["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["action"] == "rds.delete_drill_instance")
        .unwrap_or_else(|| panic!("{rec}"));
    assert_eq!(delete["outcome"], "acted");
    assert!(
        !instance_exists(&primary, &temp).await,
        "temporary instance still there"
    );
    let record = ledger_item(
        &stack,
        &format!("backupdrill#{DB}"),
        &format!("done#{}", at.to_rfc3339()),
    )
    .await
    .unwrap();
    assert_eq!(
        (
            record["rto_seconds"].as_i64(),
            record["passed"].as_bool(),
            record["phase"].as_str()
        ),
        (Some(420), Some(true), Some("done")),
        "{record}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_drill_missing_key_table_is_p2_and_the_instance_still_goes() {
    let stack = Stack::start(false).await.unwrap();
    let pg = Postgres::start().unwrap();
    drill_db(&stack, &pg).await;
    let env = drill_env(&pg, "players,fantasy_scores");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let f = start(&stack, &env).await;
    let primary = rds_client(&stack, "us-east-1").await;
    let at = nbaops_tests::clock::now();
    let temp = drill_id(at);
    tick(&f, "backup-restore-drill", "drill-1", at).await;
    assert!(instance_exists(&primary, &temp).await);
    // No event this time: the 5-minute RPO tick finds the instance available.
    let rec = tick(
        &f,
        "backup-rpo-check",
        "rpo-1",
        at + chrono::Duration::minutes(5),
    )
    .await;
    let report = alerts(&rec, "backup-drill#");
    assert_eq!(report.len(), 1, "{rec}");
    assert_eq!(report[0]["severity"], "P2");
    assert!(
        report[0]["summary"]
            .as_str()
            .unwrap()
            .contains("fantasy_scores"),
        "{}",
        report[0]
    );
    assert!(
        !instance_exists(&primary, &temp).await,
        "temporary instance still there: {rec}"
    );
    let published = platform::drain(&stack.clients, &stack.platform.alerts_queue)
        .await
        .unwrap();
    assert!(published.iter().any(|a| a["severity"] == "P2"
        && a["dedup_key"]
            .as_str()
            .unwrap_or("")
            .starts_with("backup-drill#")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_shows_the_plan_and_changes_nothing() {
    let stack = Stack::start(false).await.unwrap();
    let primary = rds_client(&stack, "us-east-1").await;
    let dr = rds_client(&stack, DR).await;
    let f = start(&stack, &[("NBAOPS_GUARD__DRY_RUN", "true")]).await;
    let at = nbaops_tests::clock::now();
    let m = tick(&f, "backup-monthly", "dry-1", at).await;
    let d = tick(&f, "backup-restore-drill", "dry-2", at).await;
    for rec in [&m, &d] {
        let actions = rec["actions"].as_array().unwrap();
        assert!(!actions.is_empty(), "{rec}");
        assert!(
            actions
                .iter()
                .all(|a| a["outcome"] == "would-act" && a["dry_run"] == true),
            "{rec}"
        );
    }
    assert_eq!(
        m["actions"][0]["resource"],
        format!("rds-snapshot:{}", monthly_id(at))
    );
    assert!(manual_snapshots(&primary).await.is_empty());
    assert!(manual_snapshots(&dr).await.is_empty());
    assert!(!instance_exists(&primary, &drill_id(at)).await);
    let counts = platform::ledger_counts(&stack.clients).await.unwrap();
    assert!(
        !counts.contains_key("backupdrill") && !counts.contains_key("backupcopy"),
        "{counts:?}"
    );
}

async fn ledger_put(stack: &Stack, pk: &str, sk: &str, data: &str) {
    use aws_sdk_dynamodb::types::AttributeValue;
    stack
        .clients
        .ddb
        .put_item()
        .table_name(LEDGER)
        .item("pk", AttributeValue::S(pk.into()))
        .item("sk", AttributeValue::S(sk.into()))
        .item("data", AttributeValue::S(data.into()))
        .send()
        .await
        .unwrap();
}

fn restores(stack: &Stack) -> usize {
    stack
        .moto
        .actions_of("backup-guard")
        .iter()
        .filter(|c| c.starts_with("rds:RestoreDBInstance"))
        .count()
}

/// State written by one version and read by the next: a drill record with a field this version
/// does not know still decodes (the drill is moved on, not restarted), and a record it cannot
/// read is a P2 with no second restore — counted from moto's recording — never "no drill".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_drill_record_is_p2_and_never_a_second_restore() {
    let stack = Stack::start(false).await.unwrap();
    let f = start(&stack, &[]).await;
    let at = nbaops_tests::clock::now();
    let rec = tick(&f, "backup-restore-drill", "drill-1", at).await;
    assert_eq!(rec["actions"][0]["outcome"], "acted", "{rec}");
    assert_eq!(restores(&stack), 1);
    let pk = format!("backupdrill#{DB}");

    // A newer version added a field: still this drill, moved on, not restarted.
    let mut item = ledger_item(&stack, &pk, "current").await.unwrap();
    item["written_by"] = json!("nbaops v9");
    ledger_put(&stack, &pk, "current", &item.to_string()).await;
    let rec = tick(
        &f,
        "backup-restore-drill",
        "drill-2",
        at + chrono::Duration::minutes(1),
    )
    .await;
    assert!(
        rec["notes"].to_string().contains("in progress since"),
        "{rec}"
    );
    assert!(alerts(&rec, "ledger-unreadable#").is_empty(), "{rec}");
    assert_eq!(restores(&stack), 1, "moved on, not restarted: {rec}");

    // A record it cannot read (a phase it does not know): P2, no action, the report says why.
    item["phase"] = json!("verifying-in-a-way-v9-invented");
    ledger_put(&stack, &pk, "current", &item.to_string()).await;
    let rec = tick(
        &f,
        "backup-restore-drill",
        "drill-3",
        at + chrono::Duration::minutes(2),
    )
    .await;
    let p2 = alerts(&rec, "ledger-unreadable#");
    assert_eq!(p2.len(), 1, "{rec}");
    assert_eq!(p2[0]["severity"], "P2");
    assert!(
        rec["notes"]
            .to_string()
            .contains("restore drill record unreadable"),
        "{rec}"
    );
    assert!(rec["actions"].as_array().unwrap().is_empty(), "{rec}");
    assert_eq!(
        restores(&stack),
        1,
        "a second restore would orphan the first: {rec}"
    );
    let published = platform::drain(&stack.clients, &stack.platform.alerts_queue)
        .await
        .unwrap();
    assert!(
        published.iter().any(|a| a["dedup_key"]
            .as_str()
            .unwrap_or("")
            .starts_with("ledger-unreadable#")),
        "{published:?}"
    );
}

// ---- issue #22: the application RTO and the full-system drill ----

/// An isolated subnet and the application's launch template, as a deployment has them.
async fn app_launch_template(stack: &Stack) -> String {
    let ec2 = &stack.clients.ec2;
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.42.0.0/16")
        .send()
        .await
        .unwrap();
    let vpc_id = vpc.vpc().and_then(|v| v.vpc_id()).unwrap().to_string();
    let subnet = ec2
        .create_subnet()
        .vpc_id(&vpc_id)
        .cidr_block("10.42.1.0/24")
        .availability_zone("us-east-1a")
        .send()
        .await
        .unwrap();
    let subnet_id = subnet
        .subnet()
        .and_then(|s| s.subnet_id())
        .unwrap()
        .to_string();
    ec2.create_launch_template()
        .launch_template_name("nbaops-app")
        .launch_template_data(
            aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                .image_id("ami-12c6146b")
                .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
                .build(),
        )
        .send()
        .await
        .unwrap();
    subnet_id
}

async fn group_tags(stack: &Stack, name: &str) -> Option<Vec<(String, String)>> {
    let out = stack
        .clients
        .asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(name)
        .send()
        .await
        .unwrap();
    let g = out.auto_scaling_groups().first()?;
    let mut tags: Vec<(String, String)> = g
        .tags()
        .iter()
        .map(|t| {
            (
                t.key().unwrap_or("").to_string(),
                t.value().unwrap_or("").to_string(),
            )
        })
        .collect();
    tags.sort();
    Some(tags)
}

/// The application RTO on the real database: a health query that has no row yet is asked again
/// on the next tick (the drill role reads the restored copy, read-only), the time to the first
/// all-healthy answer is recorded beside the database RTO. In the drill's month the full-system
/// mode then launches the application's launch template in an isolated group in moto (moto's
/// instances are InService and Healthy at once), records the smoke test and force-deletes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_application_rto_then_full_system_smoke_test_in_an_isolated_group() {
    use chrono::Datelike;
    let stack = Stack::start(false).await.unwrap();
    let pg = Postgres::start().unwrap();
    drill_db(&stack, &pg).await;
    let subnet = app_launch_template(&stack).await;
    let at = nbaops_tests::clock::now();
    let months = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let month = months[at.month0() as usize];
    let mut env = drill_env(&pg, "players");
    env.extend([
        (
            "NBAOPS_BACKUP__DRILL__APP_HEALTH_QUERIES".to_string(),
            json!([
                "SELECT count(*) >= 450 AS players_ok FROM players",
                "SELECT v FROM ops.backup_checksum WHERE k = 'ready'"
            ])
            .to_string(),
        ),
        (
            "NBAOPS_BACKUP__DRILL__FULL_SYSTEM__ENABLED".into(),
            "true".into(),
        ),
        (
            "NBAOPS_BACKUP__DRILL__FULL_SYSTEM__MONTHS".into(),
            month.into(),
        ),
        (
            "NBAOPS_BACKUP__DRILL__FULL_SYSTEM__LAUNCH_TEMPLATE".into(),
            "nbaops-app".into(),
        ),
        ("NBAOPS_BACKUP__DRILL__FULL_SYSTEM__SUBNETS".into(), subnet),
    ]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let f = start(&stack, &env).await;
    let primary = rds_client(&stack, "us-east-1").await;
    let temp = drill_id(at);
    let min = |m: i64| at + chrono::Duration::minutes(m);
    tick(&f, "backup-restore-drill", "drill-1", at).await;

    // 5 min: the data verified (database RTO 5 min); the 'ready' row is not there: asked again.
    let rec = tick(&f, "backup-restore-drill", "drill-2", min(5)).await;
    assert!(alerts(&rec, "backup-drill#").is_empty(), "{rec}");
    assert!(
        rec["notes"]
            .to_string()
            .contains("application not healthy yet"),
        "{rec}"
    );
    assert!(group_tags(&stack, &temp).await.is_none());
    pg.psql_app(
        "app",
        "insert into ops.backup_checksum values ('ready', 'yes')",
    )
    .unwrap();

    // 20 min: all healthy (application RTO 20 min, met); the smoke-test group is created.
    let rec = tick(&f, "backup-restore-drill", "drill-3", min(20)).await;
    assert!(alerts(&rec, "backup-drill#").is_empty(), "{rec}");
    let create = rec["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["action"] == "autoscaling.create_drill_group")
        .unwrap_or_else(|| panic!("{rec}"));
    assert_eq!(create["outcome"], "acted", "{create}");
    let tags = group_tags(&stack, &temp).await.expect("group created");
    assert!(
        tags.contains(&("nbaops:drill".into(), "true".into()))
            && tags.contains(&("nbaops:source".into(), DB.into())),
        "{tags:?}"
    );

    // 26 min: moto's instance is InService and Healthy: passed, reported, group and instance gone.
    let rec = tick(&f, "backup-restore-drill", "drill-4", min(26)).await;
    let report = alerts(&rec, "backup-drill#");
    assert_eq!(report.len(), 1, "{rec}");
    let d = &report[0]["details"];
    assert_eq!(report[0]["severity"], "P4", "{}", report[0]);
    assert_eq!(
        (
            d["rto_seconds"].as_i64(),
            d["app_rto_seconds"].as_i64(),
            d["app_rto_met"].as_bool(),
            d["smoke"]["seconds"].as_i64(),
            d["smoke"]["passed"].as_bool()
        ),
        (Some(300), Some(1200), Some(true), Some(360), Some(true)),
        "{d}"
    );
    assert!(
        group_tags(&stack, &temp).await.is_none(),
        "group left behind"
    );
    assert!(!instance_exists(&primary, &temp).await, "{rec}");
    let record = ledger_item(
        &stack,
        &format!("backupdrill#{DB}"),
        &format!("done#{}", at.to_rfc3339()),
    )
    .await
    .unwrap();
    assert_eq!(
        (
            record["app_rto_seconds"].as_i64(),
            record["smoke"]["deleted"].as_bool(),
            record["phase"].as_str()
        ),
        (Some(1200), Some(true), Some("done")),
        "{record}"
    );
}

//! The operator's command, `nbaops`, end to end: the real binary against moto (what reached "AWS"
//! counted from moto's own recorder), beside the real function binaries.
//! - `plan` makes the decision the function makes on the same event, with zero mutating calls;
//! - `audit` reads the by-day index (no Scan), newest first, filtered;
//! - `status` shows switches, incidents, drills, containment, approvals, last actions;
//! - `config show` gives each value's source, secrets masked; `config check` names a bad value.

use std::process::Output;

use chrono::{DateTime, Duration, Utc};
use nbaops_shared::adapters::{DynamoLedger, SdkNotifier};
use nbaops_shared::alerts::Severity;
use nbaops_shared::config::{layer, Config, Env};
use nbaops_shared::guard::{write_audit, AuditRecord, Outcome, AUDIT_SCHEMA};
use nbaops_shared::ports::Ledger;
use nbaops_tests::demo::Stack;
use nbaops_tests::function::FunctionUnderTest;
use nbaops_tests::platform::{self, DB, LEDGER, WEB, WORKER};
use nbaops_tests::postgres::Postgres;
use nbaops_tests::{clock, function_binary, workspace_root};
use serde_json::{json, Value};

/// The command's name in moto's recording (`app/nbaops`), as infra/tests/check_observed_calls.py
/// holds it to cli/src/aws_operations.rs.
const APP: &str = "nbaops";
const ALARM: &str = "events/cloudwatch-alarm/eventbridge-single-metric-alarm.json";

/// `nbaops ARGS` with the functions' environment (the emulator, `dev`, the table and topics), on
/// the test clock, named [`APP`] in moto's recording.
async fn nbaops(stack: &Stack, extra: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(function_binary("nbaops").unwrap());
    cmd.env_clear();
    for key in ["PATH", "HOME"] {
        if let Some(v) = std::env::var_os(key) {
            cmd.env(key, v);
        }
    }
    cmd.envs(stack.function_env(extra))
        .envs([clock::env()])
        // As the function processes: the test clusters' certificates chain to the test CA.
        .env(
            "NBAOPS_PG__CA_BUNDLE_PATH",
            nbaops_tests::postgres::tls_dir().join("ca.pem"),
        )
        .env("AWS_SDK_UA_APP_ID", APP)
        .args(args)
        .current_dir(workspace_root());
    cmd.output().await.unwrap()
}

fn json_of(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn text_of(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The fields both sides must agree on.
fn decision(v: &Value) -> Value {
    json!({
        "action": v["action"],
        "resource": v["resource"],
        "outcome": v["outcome"],
        "stopped_by": v["stopped_by"],
        "dry_run": v["dry_run"],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_decides_as_the_function_does_and_mutates_nothing() {
    let stack = Stack::start(false).await.unwrap();
    let before = platform::group_view(&stack.clients, WEB).await.unwrap();
    let out = nbaops(&stack, &[], &["--json", "plan", "scale-on-alarm", ALARM]).await;
    assert!(out.status.success(), "{}", text_of(&out));
    let plan = json_of(&out);
    let planned = plan["decisions"].as_array().cloned().unwrap_or_default();
    assert_eq!(planned.len(), 1, "{plan}");
    assert_eq!(planned[0]["outcome"], "would-act", "{plan}");

    // Zero mutating calls reached the emulator from the plan, and it did read the account.
    let calls = stack.moto.calls_of(APP, 0);
    let reads: Vec<String> = calls.iter().map(|c| c.iam_action()).collect();
    assert!(
        reads.contains(&"autoscaling:DescribeAutoScalingGroups".to_string()),
        "{reads:?}"
    );
    let mutating: Vec<String> = calls
        .iter()
        .filter(|c| c.is_mutating())
        .map(|c| c.iam_action())
        .collect();
    assert!(mutating.is_empty(), "the plan mutated: {mutating:?}");
    assert_eq!(
        platform::group_view(&stack.clients, WEB).await.unwrap(),
        before
    );
    assert!(
        !platform::ledger_counts(&stack.clients)
            .await
            .unwrap()
            .contains_key("audit"),
        "the plan's audit record stays in its overlay"
    );

    // The function itself, dry-run, on the same event: the same decision.
    let f = FunctionUnderTest::start(
        &function_binary("scale-on-alarm").unwrap(),
        "scale-on-alarm",
        &stack.function_env(&[("NBAOPS_GUARD__DRY_RUN", "true")]),
        1,
    )
    .await
    .unwrap();
    let event: Value =
        serde_json::from_str(&std::fs::read_to_string(workspace_root().join(ALARM)).unwrap())
            .unwrap();
    let v = f.invoke_ok(event).await.unwrap();
    let acted = v["records"][0]["actions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(acted.len(), 1, "{v}");
    assert_eq!(
        decision(&planned[0]),
        decision(&acted[0]),
        "plan {plan}\nfunction {v}"
    );

    // The text form: the decision line and what would be published.
    let out = nbaops(&stack, &[], &["plan", "scale-on-alarm", ALARM]).await;
    let text = text_of(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("asg.scale_out asg:{WEB}")) || text.contains(&format!("asg:{WEB}")),
        "{text}"
    );
    assert!(text.contains("dry-run"), "{text}");
    assert!(
        stack.moto.calls_of(APP, 0).iter().all(|c| !c.is_mutating()),
        "second plan mutated"
    );

    // alert-router: the P1 routed as it would be, nothing posted (the webhook points at a port
    // nothing listens on: a post would fail the plan), nothing dead-lettered.
    stack
        .clients
        .ssm
        .put_parameter()
        .name("/nbaops/dev/secrets/alerts/slack_webhook_url")
        .value("http://127.0.0.1:9/hook")
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .unwrap();
    let out = nbaops(
        &stack,
        &[],
        &[
            "--json",
            "plan",
            "alert-router",
            "events/alerts/sns/p1-db-down.json",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text_of(&out));
    let routed = json_of(&out).to_string();
    assert!(routed.contains("would send to slack, not sent"), "{routed}");

    // An unknown function, a missing event: clear refusals.
    for args in [
        &["plan", "no-such-function", ALARM][..],
        &["plan", "scale-on-alarm", "events/none.json"][..],
    ] {
        let out = nbaops(&stack, &[], args).await;
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text_of(&out));
        assert!(text_of(&out).starts_with("nbaops: "), "{}", text_of(&out));
    }
    let mutating: Vec<String> = stack
        .moto
        .calls_of(APP, 0)
        .iter()
        .filter(|c| c.is_mutating())
        .map(|c| c.iam_action())
        .collect();
    assert!(mutating.is_empty(), "the plans mutated: {mutating:?}");
}

fn record(function: &str, resource: &str, at: DateTime<Utc>, outcome: Outcome) -> AuditRecord {
    AuditRecord {
        schema: AUDIT_SCHEMA.into(),
        at,
        env: "dev".into(),
        function: function.into(),
        request_id: "seeded".into(),
        event_id: format!("seeded-{}", at.timestamp()),
        action: "asg.scale_out".into(),
        resource: resource.into(),
        reason: "seeded by the test".into(),
        severity: Severity::P3,
        outcome,
        dry_run: outcome == Outcome::WouldAct,
        stopped_by: None,
        emergency_change: false,
        steps: Vec::new(),
        before: json!({"desired": 2}),
        after: json!({"desired": 3}),
        error: None,
        // Seeded as a record written before explanations: the command reads it in the old words.
        explanation: Default::default(),
        sentence: String::new(),
        approval_id: None,
    }
}

fn ats(v: &Value) -> Vec<String> {
    v["records"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            format!(
                "{} {}",
                r["function"].as_str().unwrap_or(""),
                r["at"].as_str().unwrap_or("")
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_by_day_and_status() {
    let stack = Stack::start(false).await.unwrap();
    // Audit records as the guard writes them, across at least two UTC days.
    let now = clock::now();
    let cfg = Config::from_settings(
        Env::Dev,
        "e2e-cli",
        layer(Env::Dev, &Default::default(), &Default::default()).unwrap(),
    )
    .unwrap();
    let ledger = DynamoLedger {
        client: stack.clients.ddb.clone(),
        table: LEDGER.into(),
    };
    let notifier = SdkNotifier(stack.clients.sns.clone());
    let web = format!("asg:{WEB}");
    let worker = format!("asg:{WORKER}");
    let r1 = record(
        "scale-on-alarm",
        &web,
        now - Duration::hours(1),
        Outcome::Acted,
    );
    let r2 = record(
        "offhours",
        &worker,
        now - Duration::hours(20),
        Outcome::WouldAct,
    );
    let r3 = record(
        "scale-on-alarm",
        &web,
        now - Duration::hours(30),
        Outcome::Acted,
    );
    for r in [&r2, &r3, &r1] {
        write_audit(&cfg, &ledger, &notifier, r).await.unwrap();
    }
    let key = |r: &AuditRecord| format!("{} {}", r.function, r.at.to_rfc3339());
    let norm = |v: Vec<String>| -> Vec<String> {
        v.into_iter()
            .map(|s| {
                let (f, at) = s.split_once(' ').unwrap_or_default();
                let at: DateTime<Utc> = at.parse().unwrap();
                format!("{f} {}", at.to_rfc3339())
            })
            .collect()
    };

    let out = nbaops(&stack, &[], &["--json", "audit", "--since", "24h"]).await;
    assert!(out.status.success(), "{}", text_of(&out));
    assert_eq!(
        norm(ats(&json_of(&out))),
        vec![key(&r1), key(&r2)],
        "newest first, 24 h"
    );
    let out = nbaops(
        &stack,
        &[],
        &["--json", "audit", "--since", "2d", "--resource", &web],
    )
    .await;
    assert_eq!(norm(ats(&json_of(&out))), vec![key(&r1), key(&r3)]);
    let out = nbaops(
        &stack,
        &[],
        &["--json", "audit", "--since", "2d", "--function", "offhours"],
    )
    .await;
    assert_eq!(norm(ats(&json_of(&out))), vec![key(&r2)]);
    let out = nbaops(&stack, &[], &["audit", "--since", "2d"]).await;
    let text = text_of(&out);
    assert!(text.contains("3 records, newest first"), "{text}");
    let out = nbaops(&stack, &[], &["audit", "--since", "soon"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text_of(&out));
    // Through the index, day by day: never a table scan.
    let ops: Vec<String> = stack
        .moto
        .calls_of(APP, 0)
        .iter()
        .map(|c| c.iam_action())
        .collect();
    assert!(ops.contains(&"dynamodb:Query".to_string()), "{ops:?}");
    assert!(!ops.iter().any(|o| o == "dynamodb:Scan"), "{ops:?}");

    // Status: a kill switch, an escalated incident, a drill, a contained group; no approvals.
    let before = stack.moto.calls().len();
    platform::put_params(
        &stack.clients,
        &[("guard/kill_switch", "true"), ("backup/instances", DB)],
    )
    .await
    .unwrap();
    ledger
        .put(
            "alert-open",
            "pg-down#demo",
            &json!({"severity": "P1"}),
            None,
        )
        .await
        .unwrap();
    ledger
        .put(
            "alert#pg-down#demo",
            "state",
            // An incident as alert-router stores it (functions/alert-router/src/plan.rs).
            &json!({"dedup_key": "pg-down#demo", "severity": "P1", "status": "escalated",
                    "summary": "demo is down", "resource": "pg:demo", "source_function": "pg-health",
                    "opened_at": now.to_rfc3339(), "last_seen_at": now.to_rfc3339(),
                    "count": 1, "escalation_level": 2, "channels": {}, "history": []}),
            None,
        )
        .await
        .unwrap();
    ledger
        .put(
            &format!("backupdrill#{DB}"),
            "current",
            &json!({"source": DB, "drill_instance": "drill-1", "phase": "restoring",
                    "started_at": now.to_rfc3339()}),
            None,
        )
        .await
        .unwrap();
    ledger
        .put(
            "contained#dev",
            &worker,
            &json!({"min": 1, "max": 4, "desired": 2}),
            None,
        )
        .await
        .unwrap();
    let out = nbaops(&stack, &[], &["--json", "status"]).await;
    assert!(out.status.success(), "{}", text_of(&out));
    let s = json_of(&out);
    assert_eq!(s["kill_switch"], true, "{s}");
    assert_eq!(s["dry_run"], false, "{s}");
    assert_eq!(s["incidents"][0]["dedup_key"], "pg-down#demo", "{s}");
    assert_eq!(s["incidents"][0]["escalation_level"], 2, "{s}");
    assert_eq!(s["incidents"][0]["status"], "escalated", "{s}");
    assert_eq!(s["drills"][DB]["phase"], "restoring", "{s}");
    assert!(s["contained"]["dev"][&worker].is_object(), "{s}");
    assert_eq!(s["approvals"], json!([]), "{s}");
    assert_eq!(
        s["last_action"]["scale-on-alarm"]["at"]
            .as_str()
            .map(|a| a.parse::<DateTime<Utc>>().unwrap()),
        Some(r1.at),
        "{s}"
    );
    assert_eq!(s["last_action"]["offhours"]["function"], "offhours", "{s}");
    assert!(s["last_action"]["pg-health"].is_null(), "{s}");
    let out = nbaops(&stack, &[], &["status"]).await;
    let text = text_of(&out);
    for want in [
        "kill switch: ON",
        "escalation level 2",
        "pending approvals: none",
        "restore drill nbaops-dev-db: restoring",
        "contained in dev: asg:nbaops-dev-worker",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }
    let status_calls = stack.moto.calls();
    assert!(
        status_calls[before..]
            .iter()
            .filter(|c| c.app.as_deref() == Some(APP))
            .all(|c| !c.is_mutating()),
        "status mutated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_show_sources_and_check_names_bad_values() {
    let stack = Stack::start(false).await.unwrap();
    let secret_url = "demo=postgres://nbaops_monitor:hunter2@db.internal:5432/app";
    let out = nbaops(
        &stack,
        &[("NBAOPS_PG__DATABASES", secret_url)],
        &["--json", "config", "show", "--function", "pg-health"],
    )
    .await;
    assert!(out.status.success(), "{}", text_of(&out));
    let entries = json_of(&out);
    let entry = |k: &str| {
        entries
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["key"] == k)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(entry("pg.databases")["source"], "Env", "{entries}");
    assert!(
        !entries.to_string().contains("hunter2"),
        "the password is masked: {entries}"
    );
    assert_eq!(entry("guard.dry_run")["source"], "Default");
    assert!(
        entry("scale.groups").is_null(),
        "pg-health does not read scale"
    );
    let out = nbaops(
        &stack,
        &[],
        &["--json", "config", "show", "--function", "scale-on-alarm"],
    )
    .await;
    let entries = json_of(&out);
    let groups = entries
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["key"] == "scale.groups")
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(groups["source"], "Ssm", "{entries}");
    assert_eq!(groups["origin"], "SSM scale/groups");

    let out = nbaops(&stack, &[], &["config", "check"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text_of(&out));
    platform::put_params(
        &stack.clients,
        &[
            ("guard/blast/max_percent", "150"),
            ("backup/rpo_minutes", "soon"),
        ],
    )
    .await
    .unwrap();
    let out = nbaops(&stack, &[], &["config", "check"]).await;
    let text = text_of(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("FAIL  scale-on-alarm: config: guard.blast.max_percent (from SSM guard/blast/max_percent)"),
        "{text}"
    );
    assert!(
        text.contains("FAIL  backup-guard")
            && text.contains("backup.rpo_minutes (from SSM backup/rpo_minutes)"),
        "{text}"
    );
    assert!(!text.contains("FAIL  offhours: config: backup"), "{text}");
    let report = json_of(&nbaops(&stack, &[], &["--json", "config", "check"]).await);
    assert_eq!(report["ok"], false);
    assert_eq!(
        report["functions"]["backup-guard"].as_array().map(Vec::len),
        Some(2),
        "{report}"
    );
    assert!(stack.moto.calls_of(APP, 0).iter().all(|c| !c.is_mutating()));
}

/// A plan on PostgreSQL: vacuum-trigger's decision on a bloated table, read-only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_of_a_vacuum_touches_neither_the_table_nor_the_account() {
    let stack = Stack::start(false).await.unwrap();
    let pg = Postgres::start().unwrap();
    pg.as_rds("app").unwrap();
    let table = "public.plan_bloat";
    pg.psql_app(
        "app",
        &format!("create table {table} (id int, payload text) with (autovacuum_enabled = false)"),
    )
    .unwrap();
    pg.psql_app(
        "app",
        &format!("insert into {table} select g, repeat('x', 100) from generate_series(1, 50000) g"),
    )
    .unwrap();
    pg.psql_app("app", &format!("delete from {table} where id % 5 <> 0"))
        .unwrap();
    pg.psql_app("app", &format!("analyze {table}")).unwrap();
    let dead = || -> i64 {
        pg.psql(
            "app",
            &format!(
                "select n_dead_tup from pg_stat_user_tables where relid = '{table}'::regclass"
            ),
        )
        .unwrap()
        .parse()
        .unwrap()
    };
    let before = dead();
    assert!(before >= 39_000, "{before}");
    let roles = stack.put_pg_passwords(&pg, "app", "app").await.unwrap();
    let env: Vec<(&str, &str)> = roles
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let out = nbaops(
        &stack,
        &env,
        &[
            "--json",
            "plan",
            "vacuum-trigger",
            "events/schedule/vacuum-trigger.json",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text_of(&out));
    let plan = json_of(&out);
    let vacuum = plan["decisions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["action"] == "pg.vacuum-analyze")
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(vacuum["outcome"], "would-act", "{plan}");
    assert!(
        vacuum["resource"]
            .as_str()
            .unwrap_or("")
            .contains("plan_bloat"),
        "{plan}"
    );
    assert_eq!(dead(), before, "the plan vacuumed");
    let mutating: Vec<String> = stack
        .moto
        .calls_of(APP, 0)
        .iter()
        .filter(|c| c.is_mutating())
        .map(|c| c.iam_action())
        .collect();
    assert!(mutating.is_empty(), "{mutating:?}");
}

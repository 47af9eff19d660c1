//! The log lines of the fixture and hand-made batches through the real handler on the fakes.

use super::*;
use chrono::TimeZone;
use nbaops_shared::events::{classify, subscription_payload, Inbound};
use nbaops_shared::fakes::{leak, test_deps, RefusingPg, Shared, TestDeps};
use nbaops_shared::runtime::{dispatch, Invocation};
use serde_json::Value;

use crate::handler::PgHealth;

const FIXTURE: &str =
    include_str!("../../../../events/cloudwatch-logs/rds-postgresql-autovacuum.json");
const DECODED: &str =
    include_str!("../../../../events/cloudwatch-logs/decoded/rds-postgresql-autovacuum.json");

fn line(id: &str, at: &str, message: &str) -> LogLine {
    LogLine {
        id: id.into(),
        timestamp: DateTime::parse_from_rfc3339(at).unwrap().to_utc(),
        message: message.into(),
    }
}

fn fixture_lines() -> Vec<LogLine> {
    let Inbound::Logs(b) = classify(&serde_json::from_str(FIXTURE).unwrap()).remove(0) else {
        panic!("fixture not a log batch")
    };
    b.lines
}

#[test]
fn the_prefix_is_split_where_rds_puts_it() {
    let p = split_prefix(
        "2026-11-30 03:14:02 UTC:10.0.1.23(51234):app_user@app:[22100]:WARNING:  database \"app\" must be vacuumed within 10985967 transactions",
    )
    .unwrap();
    assert_eq!(
        (p.user, p.db, p.pid, p.severity),
        ("app_user", "app", "22100", "WARNING")
    );
    assert!(p.text.starts_with("database \"app\""));
    let p = split_prefix("2026-11-30 03:12:45 UTC::@:[21877]:ERROR:  canceling autovacuum task")
        .unwrap();
    assert_eq!(
        (p.user, p.db, p.pid, p.severity),
        ("", "", "21877", "ERROR")
    );
    assert_eq!(p.text, "canceling autovacuum task");
    // An IPv6 client (colons in %r), a bracket before the pid.
    let p = split_prefix("2026-11-30 03:12:45 UTC:[::1](5432):u@d:[7]:LOG:  x").unwrap();
    assert_eq!(
        (p.user, p.db, p.pid, p.severity, p.text),
        ("u", "d", "7", "LOG", "x")
    );
    for not in [
        "canceling autovacuum task",
        "2026-11-30 03:12:45 UTC::@:[]:ERROR:  x",
        "2026-11-30 03:12:45 UTC::@:[12]:  no severity",
        "",
    ] {
        assert_eq!(split_prefix(not), None, "{not}");
    }
}

#[test]
fn the_fixture_reads_as_four_failures_and_two_ignored_lines() {
    let lines = fixture_lines();
    let read = classify_lines(&lines);
    let got: Vec<(Kind, Option<&str>, Option<&str>)> = read
        .failures
        .iter()
        .map(|f| (f.kind, f.db.as_deref(), f.table.as_deref()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                Kind::AutovacuumCanceled,
                Some("app"),
                Some("public.player_stats")
            ),
            (
                Kind::AutovacuumCanceled,
                Some("app"),
                Some("public.player_stats")
            ),
            (Kind::WraparoundWarning, Some("app"), None),
            (Kind::VacuumError, Some("app"), Some("public.lineups")),
        ]
    );
    // Each failure keeps the id of the line that says it (not its CONTEXT line's).
    assert_eq!(read.failures[0].id, lines[0].id);
    assert_eq!(read.failures[3].id, lines[7].id);
    // autovacuum's own reports of finished runs (one of them says "wraparound") are ignored.
    let ignored: Vec<&str> = read.ignored.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ignored, vec![lines[2].id.as_str(), lines[6].id.as_str()]);
    let decoded: Value = serde_json::from_str(DECODED).unwrap();
    assert_eq!(lines.len(), decoded["logEvents"].as_array().unwrap().len());
}

#[test]
fn context_pairs_by_process_and_lone_lines_are_ignored() {
    let t = "2026-11-30T03:00:00Z";
    let lines = [
        line("1", t, "2026-11-30 03:00:00 UTC::@:[10]:ERROR:  canceling autovacuum task"),
        line("2", t, "2026-11-30 03:00:00 UTC::@:[11]:ERROR:  canceling autovacuum task"),
        // pid 11's context first: pairs with pid 11, not with the last failure.
        line("3", t, "2026-11-30 03:00:00 UTC::@:[11]:CONTEXT:  automatic analyze of table \"stats.public.b\""),
        line("4", t, "2026-11-30 03:00:00 UTC::@:[12]:CONTEXT:  automatic vacuum of table \"app.public.c\""),
        line("5", t, "2026-11-30 03:00:00 UTC:10.0.0.1(5):u@app:[13]:WARNING:  oldest xmin is far in the past"),
        line("6", t, "2026-11-30 03:00:00 UTC:10.0.0.1(5):u@app:[14]:ERROR:  database is not accepting commands that assign new XIDs to avoid wraparound data loss in database \"big\""),
        line("7", t, "plain text without a prefix"),
        line("8", t, "2026-11-30 03:00:00 UTC::@:[15]:CONTEXT:  SQL statement \"select 1\""),
        line("9", t, "2026-11-30 03:00:00 UTC:10.0.0.1(5):u@app:[16]:ERROR:  relation \"x\" does not exist"),
    ];
    let read = classify_lines(&lines);
    let got: Vec<(&str, Kind, Option<&str>, Option<&str>)> = read
        .failures
        .iter()
        .map(|f| (f.id.as_str(), f.kind, f.db.as_deref(), f.table.as_deref()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("1", Kind::AutovacuumCanceled, None, None),
            (
                "2",
                Kind::AutovacuumCanceled,
                Some("stats"),
                Some("public.b")
            ),
            ("5", Kind::WraparoundWarning, Some("app"), None),
            ("6", Kind::WraparoundWarning, Some("big"), None),
        ]
    );
    let ignored: Vec<&str> = read.ignored.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ignored, vec!["4", "7", "8", "9"]);
    assert_eq!(resource(&read.failures[0], "db-1"), "rds:db-1");
    assert_eq!(resource(&read.failures[1], "db-1"), "pg:stats/public.b");
    assert_eq!(resource(&read.failures[3], "db-1"), "pg:big/wraparound");
}

fn handler(t: &TestDeps) -> PgHealth {
    PgHealth {
        pg: nbaops_shared::config::pg::from_settings(&t.deps.cfg.settings).unwrap(),
        connector: Box::new(Shared(leak(RefusingPg::default()))),
        scheduler: Box::new(nbaops_shared::fakes::FakeScheduler::default()),
    }
}

fn deps() -> TestDeps {
    test_deps(
        "pg-health",
        &[(
            "NBAOPS_ALERTS_TOPIC_ARN",
            "arn:aws:sns:us-east-1:123456789012:nbaops-dev-alerts",
        )],
    )
    .unwrap()
}

async fn run(f: &PgHealth, t: &TestDeps, payload: Value) -> Value {
    let inv = Invocation::at("req", Utc.with_ymd_and_hms(2026, 11, 30, 4, 0, 0).unwrap());
    let ctx = Ctx::of::<PgHealth>(t.deps, &inv);
    serde_json::to_value(dispatch(f, payload, &ctx).await.unwrap()).unwrap()
}

fn alerts(v: &Value) -> Vec<(String, String)> {
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

fn batch(lines: &[(&str, &str, &str)]) -> Value {
    let events: Vec<Value> = lines
        .iter()
        .map(|(id, at, m)| {
            let ms = DateTime::parse_from_rfc3339(at).unwrap().timestamp_millis();
            json!({"id": id, "timestamp": ms, "message": m})
        })
        .collect();
    subscription_payload(&json!({
        "messageType": "DATA_MESSAGE", "owner": "123456789012",
        "logGroup": "/aws/rds/instance/nbaops-dev-db/postgresql", "logStream": "nbaops-dev-db.0",
        "subscriptionFilters": ["f"], "logEvents": events}))
}

fn canceled(id: &str, at: &str, pid: u32, table: &str) -> Vec<(String, String, String)> {
    vec![
        (format!("{id}a"), at.into(), format!("2026-11-30 03:00:00 UTC::@:[{pid}]:ERROR:  canceling autovacuum task")),
        (format!("{id}b"), at.into(), format!("2026-11-30 03:00:00 UTC::@:[{pid}]:CONTEXT:  automatic vacuum of table \"app.{table}\"")),
    ]
}

fn as_refs(v: &[(String, String, String)]) -> Vec<(&str, &str, &str)> {
    v.iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
        .collect()
}

#[tokio::test]
async fn counted_once_per_log_event_p2_then_p1_at_the_repeat_threshold() {
    let t = deps();
    let f = handler(&t);
    let fixture: Value = serde_json::from_str(FIXTURE).unwrap();
    let v = run(&f, &t, fixture.clone()).await;
    assert_eq!(
        alerts(&v),
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
    assert_eq!(v["records"][0]["kind"], "logs", "{v}");
    assert!(v["records"][0]["actions"].as_array().unwrap().is_empty());
    assert_eq!(t.notifier.published().len(), 3);
    assert_eq!(
        t.ledger.len_with_prefix("pglog#nbaops-dev-db/2026-11-30"),
        4
    );

    // The same batch again (Lambda retries, CloudWatch Logs redelivers): nothing counted twice,
    // nothing raised again.
    let v = run(&f, &t, fixture).await;
    assert!(alerts(&v).is_empty(), "{v}");
    assert_eq!(t.notifier.published().len(), 3);
    assert_eq!(
        t.ledger.len_with_prefix("pglog#nbaops-dev-db/2026-11-30"),
        4
    );
    let notes = v["records"][0]["notes"].to_string();
    assert!(
        notes.contains("0 failure line(s) counted, 4 already counted"),
        "{notes}"
    );

    // A third cancellation of player_stats the same day: repeated (pg.vacuum_failure.repeat = 3),
    // escalated to P1, once.
    let third = canceled("c3", "2026-11-30T05:00:00Z", 30, "public.player_stats");
    let v = run(&f, &t, batch(&as_refs(&third))).await;
    assert_eq!(
        alerts(&v),
        vec![(
            "P1".into(),
            "pg-vacuum-failure#pg:app/public.player_stats".into()
        )],
        "{v}"
    );
    let a = &v["records"][0]["alerts"][0];
    assert_eq!(a["details"]["count_today"], 3, "{a}");
    let fourth = canceled("c4", "2026-11-30T06:00:00Z", 31, "public.player_stats");
    let v = run(&f, &t, batch(&as_refs(&fourth))).await;
    assert!(alerts(&v).is_empty(), "{v}");

    // The next day starts again at P2.
    let next = canceled("d1", "2026-12-01T00:10:00Z", 32, "public.player_stats");
    let v = run(&f, &t, batch(&as_refs(&next))).await;
    assert_eq!(
        alerts(&v),
        vec![(
            "P2".into(),
            "pg-vacuum-failure#pg:app/public.player_stats".into()
        )],
        "{v}"
    );
}

#[tokio::test]
async fn three_at_once_is_one_p1_and_no_p2_after_it() {
    let t = deps();
    let f = handler(&t);
    let mut lines = canceled("x1", "2026-11-30T03:00:00Z", 1, "public.t");
    lines.extend(canceled("x2", "2026-11-30T03:01:00Z", 2, "public.t"));
    lines.extend(canceled("x3", "2026-11-30T03:02:00Z", 3, "public.t"));
    let v = run(&f, &t, batch(&as_refs(&lines))).await;
    assert_eq!(
        alerts(&v),
        vec![("P1".into(), "pg-vacuum-failure#pg:app/public.t".into())],
        "{v}"
    );
    // A fourth later that day: already P1, no P2 below it.
    let v = run(
        &f,
        &t,
        batch(&as_refs(&canceled(
            "x4",
            "2026-11-30T09:00:00Z",
            4,
            "public.t",
        ))),
    )
    .await;
    assert!(alerts(&v).is_empty(), "{v}");
}

#[tokio::test]
async fn control_and_malformed_deliveries_are_not_for_me_and_raise_nothing() {
    let t = deps();
    let f = handler(&t);
    for name in [
        "cloudwatch-logs-control-message",
        "cloudwatch-logs-bad-base64",
        "cloudwatch-logs-not-gzip",
        "cloudwatch-logs-wrong-json",
        "cloudwatch-logs-lambda-log-group",
    ] {
        let path = format!(
            "{}/../../events/not-for-me/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let payload: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let v = run(&f, &t, payload).await;
        let why = v["records"][0]["not_for_me"].as_str().unwrap_or_default();
        assert!(why.contains("CloudWatch Logs"), "{name}: {v}");
    }
    assert!(t.notifier.published().is_empty());
    assert_eq!(t.ledger.len_with_prefix("pglog"), 0);
}

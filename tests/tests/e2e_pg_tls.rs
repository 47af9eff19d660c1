//! PostgreSQL reached as RDS serves it: the real pg-health binary against throwaway clusters that
//! serve TLS for `db.nbaops.test` (tests/support/tls), SCRAM passwords from SSM SecureStrings in
//! moto, and the nbaops roles admitted only over TLS. Every refusal is a P1 "cannot connect"
//! finding that says why — and never a plaintext session, never the password.

use std::time::Duration;

use nbaops_tests::demo::Stack;
use nbaops_tests::function::FunctionUnderTest;
use nbaops_tests::function_binary;
use nbaops_tests::postgres::{tls_dir, Postgres};
use nbaops_tests::runtime_api::Outcome;
use serde_json::{json, Value};

const PASSWORD: &str = "right-S3cret-pw-7c1e";

async fn scan(stack: &Stack, env: &[(&str, &str)]) -> (Value, String) {
    let f = FunctionUnderTest::start(
        &function_binary("pg-health").unwrap(),
        "pg-health",
        &stack.function_env(env),
        1,
    )
    .await
    .unwrap();
    let payload = json!({"nbaops": {"task": f.name(), "id": "tls-1"}});
    let v = match f
        .invoke(payload, Duration::from_secs(60))
        .await
        .unwrap()
        .outcome
    {
        Outcome::Response(v) => v,
        other => panic!("pg-health failed: {other:?}\n{}", f.logs()),
    };
    (v["records"][0].clone(), f.logs())
}

/// The one finding a refused connection gives: P1, signal "unreachable" — announced, or (on a
/// later scan of the same database) still open at P1.
fn refusal(rec: &Value) -> String {
    let alerts = rec["alerts"].as_array().unwrap();
    if let Some(a) = alerts.iter().find(|a| {
        a["dedup_key"]
            .as_str()
            .unwrap_or("")
            .starts_with("pg-unreachable#")
    }) {
        assert_eq!(a["severity"], "P1", "{a}");
        return a["summary"].as_str().unwrap().to_string();
    }
    rec["notes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .find(|n| n.starts_with("still P1") && n.contains("cannot connect"))
        .unwrap_or_else(|| panic!("no refusal: {rec}"))
        .to_string()
}

async fn monitor_role(stack: &Stack, pg: &Postgres, secret: &str) {
    pg.psql("postgres", "create database app").unwrap();
    pg.psql(
        "app",
        &format!("create role nbaops_monitor login password '{PASSWORD}'; grant pg_monitor to nbaops_monitor"),
    )
    .unwrap();
    stack
        .put_secret("/nbaops/dev/secrets/pg/app/monitor", secret)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_role_over_verified_tls_with_its_password_from_ssm() {
    let stack = Stack::start(false).await.unwrap();
    let pg = Postgres::start().unwrap();
    monitor_role(&stack, &pg, PASSWORD).await;
    let dbs = format!("app={}", pg.url_as("nbaops_monitor", "app"));
    let (rec, logs) = scan(
        &stack,
        &[("NBAOPS_PG__DATABASES", &dbs), ("RUST_LOG", "trace")],
    )
    .await;
    assert!(
        rec["notes"].to_string().contains("as nbaops_monitor"),
        "{rec}"
    );
    assert!(!rec.to_string().contains("pg-unreachable#"), "{rec}");
    // The session really is TLS: the server logged every connection of the role as such.
    let log = pg.server_log();
    let ours: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("connection authorized: user=nbaops_monitor"))
        .collect();
    assert!(
        !ours.is_empty(),
        "no nbaops_monitor connection logged:\n{log}"
    );
    assert!(ours.iter().all(|l| l.contains("SSL enabled")), "{ours:#?}");
    // Trace logging on: the SecureString's read is in the log (the SDK's own output of the
    // GetParameter response), the password itself in no line and not in the report.
    let read = logs
        .lines()
        .find(|l| {
            l.contains("GetParameterOutput") && l.contains("/nbaops/dev/secrets/pg/app/monitor")
        })
        .unwrap_or_else(|| panic!("the secret's read is not logged at trace level"));
    // That line carries the parameter's value field: without redaction the password would be there.
    assert!(
        read.contains("value: ") && read.contains("*** Sensitive Data Redacted ***"),
        "{read}"
    );
    assert!(
        !logs.contains(PASSWORD) && !rec.to_string().contains(PASSWORD),
        "password leaked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_p1_authentication_failed_naming_the_role_not_the_password() {
    let stack = Stack::start(false).await.unwrap();
    let pg = Postgres::start().unwrap();
    let wrong = "wrong-pw-4b9d";
    monitor_role(&stack, &pg, wrong).await;
    let dbs = format!("app={}", pg.url_as("nbaops_monitor", "app"));
    let (rec, logs) = scan(
        &stack,
        &[("NBAOPS_PG__DATABASES", &dbs), ("RUST_LOG", "debug")],
    )
    .await;
    let why = refusal(&rec);
    assert!(
        why.contains("authentication failed") && why.contains("nbaops_monitor"),
        "{why}"
    );
    assert!(
        !logs.contains(wrong) && !rec.to_string().contains(wrong),
        "password leaked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_tls_is_refused_not_downgraded() {
    let stack = Stack::start(false).await.unwrap();
    let pg = Postgres::start_without_tls().unwrap();
    monitor_role(&stack, &pg, PASSWORD).await;
    let dbs = format!("app={}", pg.url_as("nbaops_monitor", "app"));
    let (rec, _) = scan(&stack, &[("NBAOPS_PG__DATABASES", &dbs)]).await;
    let why = refusal(&rec);
    assert!(
        why.contains("offers no TLS") && why.contains("app"),
        "{why}"
    );
    // Not one session of ours was authorized (the server logs every connection): no plaintext
    // login happened, only the TCP connection that found no TLS.
    let log = pg.server_log();
    assert!(
        log.contains("database system is ready"),
        "server log read:\n{log}"
    );
    assert!(
        !log.contains("connection authorized: user=nbaops_monitor"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_or_for_another_name_is_refused() {
    let stack = Stack::start(false).await.unwrap();
    let pg = Postgres::start().unwrap();
    monitor_role(&stack, &pg, PASSWORD).await;
    let dbs = format!("app={}", pg.url_as("nbaops_monitor", "app"));
    let other_ca = tls_dir().join("other-ca.pem");
    let (rec, _) = scan(
        &stack,
        &[
            ("NBAOPS_PG__DATABASES", &dbs),
            ("NBAOPS_PG__CA_BUNDLE_PATH", other_ca.to_str().unwrap()),
        ],
    )
    .await;
    let why = refusal(&rec);
    assert!(why.contains("not signed by a trusted CA"), "{why}");

    let wrong_name = format!(
        "app=postgres://nbaops_monitor@wrong.nbaops.test:{}/app?hostaddr=127.0.0.1",
        pg.port
    );
    let (rec, _) = scan(&stack, &[("NBAOPS_PG__DATABASES", &wrong_name)]).await;
    let why = refusal(&rec);
    assert!(
        why.contains("not valid for the host name wrong.nbaops.test"),
        "{why}"
    );

    // 127.0.0.1 is loopback, but plaintext was not allowed: TLS it is, and the certificate
    // names db.nbaops.test, not 127.0.0.1.
    let loopback = format!("app=postgres://nbaops_monitor@127.0.0.1:{}/app", pg.port);
    let (rec, _) = scan(&stack, &[("NBAOPS_PG__DATABASES", &loopback)]).await;
    assert!(refusal(&rec).contains("TLS to 127.0.0.1"), "{rec}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_without_pg_monitor_says_no_privilege_instead_of_reporting_nothing() {
    let stack = Stack::start(false).await.unwrap();
    let pg = Postgres::start().unwrap();
    monitor_role(&stack, &pg, PASSWORD).await;
    pg.psql("app", "revoke pg_monitor from nbaops_monitor")
        .unwrap();
    let dbs = format!("app={}", pg.url_as("nbaops_monitor", "app"));
    let (rec, _) = scan(&stack, &[("NBAOPS_PG__DATABASES", &dbs)]).await;
    let blind = rec["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| {
            a["dedup_key"]
                .as_str()
                .unwrap_or("")
                .starts_with("pg-check-failed#")
        })
        .unwrap_or_else(|| panic!("no check-failed finding: {rec}"));
    let summary = blind["summary"].as_str().unwrap();
    assert!(
        summary.contains("no privilege")
            && summary.contains("nbaops_monitor")
            && summary.contains("long-tx"),
        "{summary}"
    );
}

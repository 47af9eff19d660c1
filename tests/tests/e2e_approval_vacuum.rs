//! Issue #19 in vacuum-trigger: the real binary against moto and a real PostgreSQL (RDS-like
//! roles, the maintenance role). A VACUUM FULL of a critically bloated table outside the change
//! window asks a person (one pending request, one alert carrying its id, the table untouched);
//! approved and delivered as `approved_input`, the table is rewritten once and the audit names the
//! approver; a second delivery does nothing. Denied: untouched. Vacuumed by hand meanwhile: not
//! run, audited as skipped, saying the work is no longer the plan's. Dry-run asks nobody. A
//! runaway transaction not on the allow-list is ended only once a person approves it, and an
//! approval whose transaction already ended does nothing.

use std::time::Duration;

use nbaops_shared::adapters::DynamoLedger;
use nbaops_shared::guard::{
    approved_input, decide, ApprovalDecision, ApprovalRequest, ApprovalState, Decided, Verdict,
};
use nbaops_shared::ports::Ledger;
use nbaops_tests::approval::{self, window_elsewhere};
use nbaops_tests::clock;
use nbaops_tests::demo::Stack;
use nbaops_tests::function::FunctionUnderTest;
use nbaops_tests::function_binary;
use nbaops_tests::platform::{self, LEDGER};
use nbaops_tests::postgres::Postgres;
use serde_json::{json, Value};

const FN: &str = "vacuum-trigger";
const TABLE: &str = "public.bloated";

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

async fn start(stack: &Stack, pg: &Postgres, extra: &[(&str, &str)]) -> FunctionUnderTest {
    let roles = stack.put_pg_passwords(pg, "app", "app").await.unwrap();
    let window = window_elsewhere();
    let mut env: Vec<(&str, &str)> = roles
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    env.extend(window.iter().map(|(k, v)| (*k, v.as_str())));
    env.push(("NBAOPS_GUARD__BLAST__MAX_PERCENT", "100"));
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

/// The critically bloated table (the application's), and pg-health's measurement of it in the
/// ledger (`pgmaint#app/<oid>`), as pg-health leaves it.
async fn bloated(stack: &Stack, pg: &Postgres) -> i64 {
    pg.as_rds("app").unwrap();
    pg.psql_app(
        "app",
        "create table bloated (id int, payload text) with (autovacuum_enabled = false); \
         insert into bloated select g, repeat('x', 100) from generate_series(1, 50000) g; \
         delete from bloated where id % 5 <> 0; analyze bloated",
    )
    .unwrap();
    let oid = table_oid(pg);
    measured(stack, oid, 80.0).await;
    oid
}

fn table_oid(pg: &Postgres) -> i64 {
    pg.psql("app", &format!("select '{TABLE}'::regclass::oid"))
        .unwrap()
        .parse()
        .unwrap()
}

async fn measured(stack: &Stack, oid: i64, percent: f64) {
    ledger(stack)
        .put(
            "pgmaint#app",
            &oid.to_string(),
            &json!({"measured_bloat": percent}),
            None,
        )
        .await
        .unwrap();
}

/// The table's file: VACUUM FULL writes a new one.
fn filenode(pg: &Postgres) -> String {
    pg.psql("app", &format!("select pg_relation_filenode('{TABLE}')"))
        .unwrap()
}

fn actions<'a>(v: &'a Value, action: &str) -> Vec<&'a Value> {
    v["records"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["actions"].as_array().unwrap().iter())
        .filter(|a| a["action"] == action)
        .collect()
}

/// A tick of vacuum-trigger's schedule whose `action` asked: its approval id.
async fn ask(f: &FunctionUnderTest, id: &str, action: &str) -> String {
    let v = f
        .invoke_ok(json!({"nbaops": {"task": FN, "id": id}}))
        .await
        .unwrap();
    let a = actions(&v, action);
    assert_eq!(a.len(), 1, "{v}\n{}", f.logs());
    assert_eq!(a[0]["outcome"], "needs-approval", "{v}");
    assert_eq!(a[0]["stopped_by"], "change_window", "{v}");
    a[0]["approval_id"].as_str().unwrap().to_string()
}

async fn approve(stack: &Stack, id: &str, by: &str) -> ApprovalRequest {
    match decide(&ledger(stack), "dev", id, Verdict::Approve, who(by))
        .await
        .unwrap()
    {
        ApprovalDecision::Decided(req) => req,
        d => panic!("{d:?}"),
    }
}

fn approval_alerts(alerts: &[Value], id: &str) -> usize {
    alerts
        .iter()
        .filter(|a| a["approval_id"].as_str() == Some(id))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vacuum_full_outside_the_window_is_asked_then_done_once_when_approved() {
    let stack = Stack::start(false).await.unwrap();
    let pg = Postgres::start().unwrap();
    let oid = bloated(&stack, &pg).await;
    let file = filenode(&pg);
    let f = start(&stack, &pg, &[("NBAOPS_PG__VACUUM__FULL_ALLOWED", "true")]).await;
    let l = ledger(&stack);

    // Dry-run: what would happen, nobody asked.
    let dry = start(
        &stack,
        &pg,
        &[
            ("NBAOPS_PG__VACUUM__FULL_ALLOWED", "true"),
            ("NBAOPS_GUARD__DRY_RUN", "true"),
        ],
    )
    .await;
    let v = dry
        .invoke_ok(json!({"nbaops": {"task": FN, "id": "dry"}}))
        .await
        .unwrap();
    let a = actions(&v, "pg.vacuum-full");
    assert_eq!(a.len(), 1, "{v}");
    assert_eq!(a[0]["dry_run"], true, "{v}");
    let alerts = platform::drain(&stack.clients, &stack.platform.alerts_queue)
        .await
        .unwrap();
    assert!(
        alerts.iter().all(|a| a["approval_id"].is_null()),
        "dry-run asked: {alerts:?}"
    );
    drop(dry);

    // Asked: one pending request with the plan, one alert with its id, the table untouched.
    let denied = ask(&f, "vt-deny", "pg.vacuum-full").await;
    let req = ApprovalRequest::load(&l, "dev", &denied)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(req.state, ApprovalState::Pending);
    assert_eq!(req.action.resource, format!("pg:app/{TABLE}"));
    assert_eq!(req.action.before["oid"], oid);
    assert_eq!(req.action.before["work"], "vacuum-full");
    let alerts = platform::drain(&stack.clients, &stack.platform.alerts_queue)
        .await
        .unwrap();
    assert_eq!(approval_alerts(&alerts, &denied), 1, "{alerts:?}");
    assert_eq!(filenode(&pg), file);

    // Denied: delivering the task anyway does nothing.
    decide(&l, "dev", &denied, Verdict::Deny, who("alice"))
        .await
        .unwrap();
    let v = f.invoke_ok(approved_input(&req)).await.unwrap();
    assert!(
        v["records"][0]["actions"].as_array().unwrap().is_empty(),
        "{v}"
    );
    assert_eq!(filenode(&pg), file);

    // Approved: rewritten once, the audit names the approver; a second delivery does nothing.
    let id = ask(&f, "vt-approve", "pg.vacuum-full").await;
    let req = approve(&stack, &id, "bob").await;
    let v = f.invoke_ok(approved_input(&req)).await.unwrap();
    let a = &v["records"][0]["actions"][0];
    assert_eq!(a["outcome"], "acted", "{v}\n{}", f.logs());
    assert_eq!(a["approval_id"], id.as_str());
    assert!(
        a["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["step"] == "change_window"
                && s["note"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("approved by bob at")),
        "{v}"
    );
    let rewritten = filenode(&pg);
    assert_ne!(rewritten, file, "VACUUM FULL writes a new file");
    let alerts = platform::drain(&stack.clients, &stack.platform.alerts_queue)
        .await
        .unwrap();
    assert!(
        alerts.iter().any(
            |x| x["summary"].as_str().unwrap_or("").starts_with(&format!(
                "{TABLE}: vacuum-full done (approved), dead tuples"
            )) && x["details"]["after"]["n_dead_tup"] == 0
        ),
        "{alerts:?}"
    );
    let v = f.invoke_ok(approved_input(&req)).await.unwrap();
    assert!(
        v["records"][0]["actions"].as_array().unwrap().is_empty(),
        "{v}"
    );
    assert!(
        v["records"][0]["notes"][0]
            .as_str()
            .is_some_and(|n| n.contains("already used")),
        "{v}"
    );
    assert_eq!(filenode(&pg), rewritten, "one approval, one rewrite");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vacuum_full_approved_after_the_table_was_vacuumed_by_hand_does_nothing_and_says_why() {
    let stack = Stack::start(false).await.unwrap();
    let pg = Postgres::start().unwrap();
    let oid = bloated(&stack, &pg).await;
    let f = start(&stack, &pg, &[("NBAOPS_PG__VACUUM__FULL_ALLOWED", "true")]).await;
    let id = ask(&f, "vt-stale", "pg.vacuum-full").await;
    // Someone rewrites it by hand; pg-health measures it again.
    pg.psql_app("app", "vacuum full analyze bloated").unwrap();
    measured(&stack, oid, 3.0).await;
    let file = filenode(&pg);
    let req = approve(&stack, &id, "carol").await;
    let v = f.invoke_ok(approved_input(&req)).await.unwrap();
    let a = &v["records"][0]["actions"][0];
    assert_eq!(a["outcome"], "skipped", "{v}\n{}", f.logs());
    let sentence = a["sentence"].as_str().unwrap_or_default();
    assert!(
        sentence.contains("no longer matches live state: work was \"vacuum-full\", now"),
        "{v}"
    );
    assert_eq!(filenode(&pg), file, "not rewritten again");
    let audit = approval::audit(&stack, &format!("pg:app/{TABLE}"))
        .await
        .unwrap();
    assert!(
        audit
            .iter()
            .any(|r| r["outcome"] == "skipped" && r["approval_id"] == id.as_str()),
        "{audit:?}"
    );
}

/// A session of the application's role (not allow-listed) holding a transaction open.
async fn runaway(pg: &Postgres) -> tokio_postgres::Client {
    pg.as_rds("app").unwrap();
    let (client, conn) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=nbaops_app dbname=app application_name=e2e-unlisted",
            pg.port
        ),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute("begin; select txid_current();")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    client
}

const LONG_TX: &[(&str, &str)] = &[
    ("NBAOPS_PG__LONG_TX__WARN_SECONDS", "1"),
    ("NBAOPS_PG__LONG_TX__CRIT_SECONDS", "2"),
    ("NBAOPS_PG__TERMINATE__ENABLED", "true"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_not_on_the_allow_list_is_ended_only_when_a_person_approves() {
    let stack = Stack::start(false).await.unwrap();
    let pg = Postgres::start().unwrap();
    let client = runaway(&pg).await;

    // Policy never: only reported, as before (no action at all).
    let mut never = LONG_TX.to_vec();
    never.push(("NBAOPS_APPROVAL__PG__END_TRANSACTION_UNLISTED", "never"));
    let f = start(&stack, &pg, &never).await;
    let v = f
        .invoke_ok(json!({"nbaops": {"task": FN, "id": "rt-never"}}))
        .await
        .unwrap();
    assert!(actions(&v, "pg.end_transaction_unlisted").is_empty(), "{v}");
    assert!(actions(&v, "pg.end_transaction").is_empty(), "{v}");
    drop(f);

    // The default (always): asked, nothing signalled.
    let f = start(&stack, &pg, LONG_TX).await;
    let id = ask(&f, "rt-ask", "pg.end_transaction_unlisted").await;
    let alerts = platform::drain(&stack.clients, &stack.platform.alerts_queue)
        .await
        .unwrap();
    assert_eq!(approval_alerts(&alerts, &id), 1, "{alerts:?}");
    assert!(
        client.simple_query("select 1").await.is_ok(),
        "ended unasked"
    );

    // Approved: ended, once.
    let req = approve(&stack, &id, "dave").await;
    let v = f.invoke_ok(approved_input(&req)).await.unwrap();
    let a = &v["records"][0]["actions"][0];
    assert_eq!(a["outcome"], "acted", "{v}\n{}", f.logs());
    assert!(
        a["steps"].as_array().unwrap().iter().any(|s| s["note"]
            .as_str()
            .unwrap_or("")
            .starts_with("approved by dave at")),
        "{v}"
    );
    assert!(
        client.simple_query("select 1").await.is_err(),
        "session survived"
    );
    let v = f.invoke_ok(approved_input(&req)).await.unwrap();
    assert!(
        v["records"][0]["actions"].as_array().unwrap().is_empty(),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_whose_transaction_already_ended_does_nothing() {
    let stack = Stack::start(false).await.unwrap();
    let pg = Postgres::start().unwrap();
    let client = runaway(&pg).await;
    let f = start(&stack, &pg, LONG_TX).await;
    let id = ask(&f, "rt-stale", "pg.end_transaction_unlisted").await;
    // The transaction ends on its own, the session stays: the pid now runs no transaction.
    client.batch_execute("commit").await.unwrap();
    let req = approve(&stack, &id, "erin").await;
    let v = f.invoke_ok(approved_input(&req)).await.unwrap();
    let a = &v["records"][0]["actions"][0];
    assert_eq!(a["outcome"], "skipped", "{v}\n{}", f.logs());
    assert!(
        a["sentence"]
            .as_str()
            .unwrap_or("")
            .contains("no longer matches live state: xact_start was"),
        "{v}"
    );
    assert!(
        client.simple_query("select 1").await.is_ok(),
        "ended anyway"
    );
}

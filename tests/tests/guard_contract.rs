//! The guard and the ledger against the emulator: the same assertions run on the in-memory fake
//! and on DynamoDB (moto), so the fake cannot drift from the real adapter.

use chrono::{TimeZone, Utc};
use nbaops_shared::adapters::{DynamoLedger, SdkAutoScaling, SdkNotifier};
use nbaops_shared::alerts::Severity;
use nbaops_shared::config::{layer, Config, Env};
use nbaops_shared::fakes::FakeLedger;
use nbaops_shared::guard::{
    audit_trail, Bounds, Guard, GuardPorts, GuardStep, Outcome, ProposedAction, Switches,
};
use nbaops_shared::ports::{AutoScaling, Expect, Ledger, LedgerWrite, Tags};
use nbaops_tests::demo::Stack;
use nbaops_tests::platform::{self, LEDGER, WEB};
use serde_json::json;

async fn ledger_contract(l: &dyn Ledger) {
    assert!(l
        .put_if_absent("p", "s", &json!({"n": 1}), 9_999_999_999)
        .await
        .unwrap());
    assert!(!l
        .put_if_absent("p", "s", &json!({"n": 2}), 9_999_999_999)
        .await
        .unwrap());
    assert_eq!(l.get("p", "s").await.unwrap(), Some(json!({"n": 1})));
    l.put("p", "t#1", &json!(1), None).await.unwrap();
    l.put("p", "t#2", &json!(2), Some(9_999_999_999))
        .await
        .unwrap();
    l.put("q", "t#3", &json!(3), None).await.unwrap();
    let t: Vec<_> = l
        .query("p", "t#")
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(t, vec!["t#1", "t#2"]);
    assert_eq!(l.query("p", "").await.unwrap().len(), 3);
    l.delete("p", "s").await.unwrap();
    assert_eq!(l.get("p", "s").await.unwrap(), None);
    assert!(l
        .put_if_absent("p", "s", &json!({"n": 3}), 9_999_999_999)
        .await
        .unwrap());
    write_all_contract(l).await;
    by_day_contract(l).await;
}

/// The by-day index: only the items written with a day, that day's only, newest (highest sort
/// key) first; an item rewritten without a day leaves the index, a deleted one too.
async fn by_day_contract(l: &dyn Ledger) {
    let d1 = "2026-02-28";
    let d2 = "2026-03-01";
    l.put_on_day("audit#a", "2026-02-28T10:00:00Z#x", &json!(1), None, d1)
        .await
        .unwrap();
    l.put_on_day("audit#b", "2026-02-28T23:00:00Z#x", &json!(2), None, d1)
        .await
        .unwrap();
    l.write_all(&[
        LedgerWrite::put("audit#a", "2026-03-01T00:30:00Z#x", json!(3), None).on_day(d2),
        LedgerWrite::put("audit#c", "2026-02-28T12:00:00Z#x", json!(4), None).on_day(d1),
        LedgerWrite::put("state#a", "2026-02-28T13:00:00Z#x", json!(5), None),
    ])
    .await
    .unwrap();
    let day = |items: Vec<nbaops_shared::ports::DayItem>| -> Vec<(String, serde_json::Value)> {
        items.into_iter().map(|i| (i.pk, i.data)).collect()
    };
    assert_eq!(
        day(l.query_day(d1).await.unwrap()),
        vec![
            ("audit#b".to_string(), json!(2)),
            ("audit#c".to_string(), json!(4)),
            ("audit#a".to_string(), json!(1)),
        ]
    );
    assert_eq!(
        day(l.query_day(d2).await.unwrap()),
        vec![("audit#a".to_string(), json!(3))]
    );
    l.put("audit#c", "2026-02-28T12:00:00Z#x", &json!(4), None)
        .await
        .unwrap();
    l.delete("audit#b", "2026-02-28T23:00:00Z#x").await.unwrap();
    assert_eq!(
        day(l.query_day(d1).await.unwrap()),
        vec![("audit#a".to_string(), json!(1))]
    );
    assert!(l.query_day("2026-03-02").await.unwrap().is_empty());
}

/// `write_all`: all or nothing, the index of the first refused expectation, and each kind of
/// expectation (absent, expired by a time, holding exactly some data).
async fn write_all_contract(l: &dyn Ledger) {
    let claim = |n: i64| {
        LedgerWrite::put("w", "claim", json!({"n": n, "s": "x"}), Some(1_000))
            .expecting(vec![Expect::Absent])
    };
    let mark = |exp: i64| {
        LedgerWrite::put("w", "mark", json!({"at": exp}), Some(exp))
            .expecting(vec![Expect::Absent, Expect::ExpiredBy(500)])
    };
    assert_eq!(l.write_all(&[claim(1), mark(600)]).await.unwrap(), None);
    assert_eq!(
        l.get("w", "claim").await.unwrap(),
        Some(json!({"n": 1, "s": "x"}))
    );
    // The claim exists: refused at 0, and the mark (whose own expectation fails too) unchanged.
    assert_eq!(l.write_all(&[claim(2), mark(700)]).await.unwrap(), Some(0));
    assert_eq!(l.get("w", "mark").await.unwrap(), Some(json!({"at": 600})));
    // Only the mark's expectation fails (expires 600, not by 500): nothing written, index 1.
    let fresh = LedgerWrite::put("w", "other", json!(1), None).expecting(vec![Expect::Absent]);
    assert_eq!(
        l.write_all(&[fresh.clone(), mark(700)]).await.unwrap(),
        Some(1)
    );
    assert_eq!(l.get("w", "other").await.unwrap(), None, "all or nothing");
    // Expired by a later time: taken.
    let later = LedgerWrite::put("w", "mark", json!({"at": 800}), Some(800))
        .expecting(vec![Expect::ExpiredBy(650)]);
    assert_eq!(l.write_all(&[fresh, later]).await.unwrap(), None);
    // Holds: only the exact stored data; a delete with no condition.
    let held = l.get("w", "claim").await.unwrap().unwrap();
    let take = |v: serde_json::Value| {
        LedgerWrite::put("w", "claim", json!({"n": 9}), None).expecting(vec![Expect::Holds(v)])
    };
    assert_eq!(
        l.write_all(&[take(json!({"n": 1}))]).await.unwrap(),
        Some(0)
    );
    assert_eq!(
        l.write_all(&[take(held), LedgerWrite::delete("w", "other")])
            .await
            .unwrap(),
        None
    );
    assert_eq!(l.get("w", "claim").await.unwrap(), Some(json!({"n": 9})));
    assert_eq!(l.get("w", "other").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_fake_and_dynamodb_agree() {
    ledger_contract(&FakeLedger::default()).await;
    let stack = Stack::start(false).await.unwrap();
    ledger_contract(&DynamoLedger {
        client: stack.clients.ddb.clone(),
        table: LEDGER.into(),
    })
    .await;
}

fn cfg(stack: &Stack, pairs: &[(&str, &str)]) -> Config {
    let mut vars: std::collections::BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    vars.insert(
        "NBAOPS_ACTIONS_TOPIC_ARN".into(),
        stack.platform.actions_topic.clone(),
    );
    Config::from_settings(
        Env::Dev,
        "guard-contract",
        layer(Env::Dev, &vars, &Default::default()).unwrap(),
    )
    .unwrap()
}

fn scale_web(to: i32, max: i32, disruptive: bool) -> ProposedAction {
    ProposedAction {
        action: "asg.scale_out".into(),
        resource: format!("asg:{WEB}"),
        tags: Tags::new(),
        reason: "contract test".into(),
        severity: Severity::P3,
        disruptive,
        bounds: Some(Bounds {
            proposed: to as f64,
            min: 2.0,
            max: max as f64,
        }),
        cooldown_key: "asg.scale".into(),
        cooldown_seconds: 0,
        before: json!({"desired": 2}),
        after: json!({"desired": to}),
        explanation: nbaops_shared::guard::Explanation::new(
            "scale",
            "Scaled",
            format!("{WEB} 2 → {to}"),
            "contract test",
        ),
    }
}

/// Runs one action through the guard with the SDK adapters on the emulator.
async fn attempt(
    stack: &Stack,
    c: &Config,
    a: &ProposedAction,
    event: &str,
    guard_runs: usize,
) -> Vec<Outcome> {
    let ledger = DynamoLedger {
        client: stack.clients.ddb.clone(),
        table: LEDGER.into(),
    };
    let notifier = SdkNotifier(stack.clients.sns.clone());
    let asg = SdkAutoScaling(stack.clients.asg.clone());
    let sw = Switches::default();
    // Wednesday noon UTC: outside the default Tue/Thu evening change window.
    let now = Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap();
    let mut g = Guard::new(
        GuardPorts {
            cfg: c,
            ledger: &ledger,
            notifier: &notifier,
            params: None,
            switches: &sw,
        },
        event,
        "req",
        now,
    )
    .with_fleet_size(4);
    let mut out = vec![];
    for _ in 0..guard_runs {
        let d = g.check(a).await.unwrap();
        let to = a.after["desired"].as_i64().unwrap_or(0) as i32;
        let r = if d.proceed {
            Some(
                asg.set_desired_capacity(WEB, to)
                    .await
                    .map_err(|e| e.to_string()),
            )
        } else {
            None
        };
        out.push(g.finish(a, &d, r).await.unwrap().outcome);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounds_window_and_blast_radius_stop_with_zero_mutations() {
    let stack = Stack::start(false).await.unwrap();
    // The emulator accepts a desired capacity above MaxSize (AWS does not): the guard must refuse it.
    let c = cfg(&stack, &[]);
    assert_eq!(
        attempt(&stack, &c, &scale_web(9, 4, false), "e-bounds", 1).await,
        vec![Outcome::Skipped]
    );
    assert_eq!(
        attempt(&stack, &c, &scale_web(3, 4, true), "e-window", 1).await,
        vec![Outcome::Skipped]
    );
    let c1 = cfg(&stack, &[("NBAOPS_GUARD__BLAST__MAX_ACTIONS", "1")]);
    let ledger = DynamoLedger {
        client: stack.clients.ddb.clone(),
        table: LEDGER.into(),
    };
    let trail = audit_trail(&ledger, &format!("asg:{WEB}")).await.unwrap();
    assert_eq!(
        trail.iter().map(|r| r.stopped_by).collect::<Vec<_>>(),
        vec![Some(GuardStep::Bounds), Some(GuardStep::ChangeWindow)]
    );
    assert_eq!(
        platform::group_view(&stack.clients, WEB)
            .await
            .unwrap()
            .desired,
        2,
        "nothing changed"
    );

    // Blast radius: one action allowed per run; the second in the same run is refused.
    let outcomes = attempt(&stack, &c1, &scale_web(3, 4, false), "e-blast", 2).await;
    assert_eq!(outcomes, vec![Outcome::Acted, Outcome::Skipped]);
    assert_eq!(
        platform::group_view(&stack.clients, WEB)
            .await
            .unwrap()
            .desired,
        3
    );
    let audits = platform::drain(&stack.clients, &stack.platform.actions_queue)
        .await
        .unwrap();
    assert_eq!(
        audits.len(),
        4,
        "every attempt, acted or not, reaches the actions topic"
    );
    assert_eq!(audits[3]["stopped_by"], "blast_radius");
}

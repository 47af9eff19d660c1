//! Issue #22 on fakes: grouping into one thread, resolution SLAs and the on-call rota, with the
//! injected clock (week boundaries, weekends, a DST change).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{json, Value};

use nbaops_shared::alerts::{Alert, AlertStatus, Severity};

use crate::incidents::OPEN_PK;
use crate::plan::IncidentStatus;
use crate::router::SWEEP_TASK;
use crate::test_world::*;

const FAILOVER: &str = "failover#rds:db1#20261125T100000Z";
const LAG: &str = "pg-replication-lag#pg:db1/standby:r1";
const CONN: &str = "pg-connections#pg:db1";

fn on(sev: Severity, key: &str, resource: &str) -> Alert {
    let mut a = alert(sev, key);
    a.resource = resource.into();
    a.summary = format!("{key} summary");
    a
}

fn resolved(mut a: Alert) -> Alert {
    a.status = AlertStatus::Resolved;
    a
}

async fn send(w: &World, a: &Alert, id: &str, at: &str) -> Vec<String> {
    let r = report(run(w, sns_alert(a, id), at).await);
    r.records[0].notes.clone()
}

fn tick(at: &str) -> Value {
    json!({"nbaops": {"task": SWEEP_TASK, "at": at}})
}

async fn sweep(w: &World, at: &str) -> Vec<String> {
    report(run(w, tick(at), at).await).records[0].notes.clone()
}

#[tokio::test]
async fn a_failover_and_the_alerts_it_causes_are_one_thread() {
    let w = world(&[]).await;
    send(
        &w,
        &on(Severity::P2, FAILOVER, "rds:db1"),
        "m1",
        "2026-11-25T10:00:00Z",
    )
    .await;
    assert_eq!((slack_texts(&w).len(), w.sns.published().len()), (1, 1));

    // Replica lag on the same database 5 minutes later: joins the thread, nothing sent.
    let notes = send(
        &w,
        &on(Severity::P3, LAG, "pg:db1/standby:r1"),
        "m2",
        "2026-11-25T10:05:00Z",
    )
    .await;
    assert!(
        notes
            .iter()
            .any(|n| n.contains("joined the thread of incident failover#")),
        "{notes:?}"
    );
    assert_eq!((slack_texts(&w).len(), w.sns.published().len()), (1, 1));
    let head = load_incident(&w, FAILOVER).await.unwrap().unwrap();
    assert!(head.members.contains(LAG) && head.count == 2, "{head:?}");
    assert!(
        head.history
            .iter()
            .any(|h| h.contains("caused by failover on db1")),
        "{:?}",
        head.history
    );
    let member = load_incident(&w, LAG).await.unwrap().unwrap();
    assert_eq!(member.grouped_into.as_deref(), Some(FAILOVER));
    let open: Vec<String> = w
        .deps
        .ledger
        .query(OPEN_PK, "")
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        open,
        vec![FAILOVER.to_string()],
        "one incident open, not two"
    );

    // The member again: counted on the group, nothing sent.
    send(
        &w,
        &on(Severity::P3, LAG, "pg:db1/standby:r1"),
        "m3",
        "2026-11-25T10:07:00Z",
    )
    .await;
    assert_eq!(slack_texts(&w).len(), 1);
    assert_eq!(load_incident(&w, FAILOVER).await.unwrap().unwrap().count, 3);

    // A P1 in the group raises the incident: one message on the P1 channels, a page under the
    // group's key; a second P1 of the group raises nothing more.
    send(
        &w,
        &on(Severity::P1, CONN, "pg:db1"),
        "m4",
        "2026-11-25T10:10:00Z",
    )
    .await;
    let slack = slack_texts(&w);
    assert_eq!(slack.len(), 2);
    assert!(
        slack[1].starts_with("*RAISED to P1 by pg-connections#pg:db1 [P1]"),
        "{}",
        slack[1]
    );
    assert!(
        slack[1].contains(&format!("grouped in this incident: {CONN}, {LAG}")),
        "{}",
        slack[1]
    );
    let pd = w.http.requests_to(PD);
    assert_eq!((pd.len(), pd[0]["dedup_key"].as_str()), (1, Some(FAILOVER)));
    assert_eq!(
        load_incident(&w, FAILOVER).await.unwrap().unwrap().severity,
        Severity::P1
    );
    send(
        &w,
        &on(Severity::P1, "pg-unreachable#pg:db1", "pg:db1"),
        "m5",
        "2026-11-25T10:11:00Z",
    )
    .await;
    assert_eq!(
        (slack_texts(&w).len(), w.http.requests_to(PD).len()),
        (2, 1)
    );

    // Same resource, another kind: joins. Another database, or after the window: its own.
    let notes = send(
        &w,
        &on(Severity::P3, "rds-event#rds:db1#E1", "rds:db1"),
        "m6",
        "2026-11-25T10:29:59Z",
    )
    .await;
    assert!(
        notes.iter().any(|n| n.contains("same resource rds:db1")),
        "{notes:?}"
    );
    send(
        &w,
        &on(
            Severity::P3,
            "pg-replication-lag#pg:db2/standby:r1",
            "pg:db2/standby:r1",
        ),
        "m7",
        "2026-11-25T10:12:00Z",
    )
    .await;
    send(
        &w,
        &on(Severity::P3, "pg-connections#pg:db1/late", "pg:db1/late"),
        "m8",
        "2026-11-25T10:30:00Z",
    )
    .await;
    assert_eq!(slack_texts(&w).len(), 4, "two incidents of their own");

    // The group resolves when every key of it has: the cause first, quietly; then the members.
    let members = [LAG, CONN, "pg-unreachable#pg:db1", "rds-event#rds:db1#E1"];
    let notes = send(
        &w,
        &resolved(on(Severity::P2, FAILOVER, "rds:db1")),
        "r0",
        "2026-11-25T10:40:00Z",
    )
    .await;
    assert!(
        notes.iter().any(|n| n.contains("stays open, still firing")),
        "{notes:?}"
    );
    for (i, key) in members.iter().enumerate() {
        send(
            &w,
            &resolved(on(Severity::P3, key, "x")),
            &format!("r{}", i + 1),
            "2026-11-25T10:45:00Z",
        )
        .await;
        let head = load_incident(&w, FAILOVER).await.unwrap().unwrap();
        let last = i == members.len() - 1;
        assert_eq!(head.is_closed(), last, "after {key}");
        assert!(load_incident(&w, key).await.unwrap().unwrap().is_closed());
    }
    let slack = slack_texts(&w);
    assert_eq!(slack.len(), 5);
    assert!(slack[4].starts_with("*RESOLVED [P1]"), "{}", slack[4]);
    let pd = w.http.requests_to(PD);
    assert_eq!(pd.last().unwrap()["event_action"], "resolve");
    assert_eq!(pd.last().unwrap()["dedup_key"], FAILOVER);
    // A new alert of a member's key after that: a new incident of its own.
    send(
        &w,
        &on(Severity::P3, LAG, "pg:db1/standby:r1"),
        "m9",
        "2026-11-25T11:00:00Z",
    )
    .await;
    assert_eq!(slack_texts(&w).len(), 6);
    assert!(load_incident(&w, LAG)
        .await
        .unwrap()
        .unwrap()
        .grouped_into
        .is_none());

    // A member whose group's record is gone (expired, unreadable) starts over on its own.
    let w = world(&[]).await;
    send(
        &w,
        &on(Severity::P2, FAILOVER, "rds:db1"),
        "m1",
        "2026-11-25T10:00:00Z",
    )
    .await;
    send(
        &w,
        &on(Severity::P3, LAG, "pg:db1/standby:r1"),
        "m2",
        "2026-11-25T10:05:00Z",
    )
    .await;
    assert_eq!(slack_texts(&w).len(), 1);
    w.deps
        .ledger
        .delete(&crate::incidents::incident_pk(FAILOVER), "state")
        .await
        .unwrap();
    w.deps.ledger.delete(OPEN_PK, FAILOVER).await.unwrap();
    send(
        &w,
        &on(Severity::P3, LAG, "pg:db1/standby:r1"),
        "m3",
        "2026-11-25T10:06:00Z",
    )
    .await;
    assert_eq!(slack_texts(&w).len(), 2, "{:?}", slack_texts(&w));
    let lag = load_incident(&w, LAG).await.unwrap().unwrap();
    assert!(lag.grouped_into.is_none() && !lag.is_closed(), "{lag:?}");

    // No grouping when the window is 0; approval requests are never grouped.
    let w = world(&[("NBAOPS_ALERTS__GROUP__WINDOW_MINUTES", "0")]).await;
    send(
        &w,
        &on(Severity::P2, FAILOVER, "rds:db1"),
        "m1",
        "2026-11-25T10:00:00Z",
    )
    .await;
    send(
        &w,
        &on(Severity::P3, LAG, "pg:db1/standby:r1"),
        "m2",
        "2026-11-25T10:05:00Z",
    )
    .await;
    send(
        &w,
        &on(Severity::P3, "rds-event#rds:db1#E", "rds:db1"),
        "m3",
        "2026-11-25T10:05:00Z",
    )
    .await;
    assert_eq!(slack_texts(&w).len(), 3);
    let w = world(&[]).await;
    send(
        &w,
        &on(Severity::P2, "approval#a1", "asg:web"),
        "m1",
        "2026-11-25T10:00:00Z",
    )
    .await;
    send(
        &w,
        &on(Severity::P2, "approval#a2", "asg:web"),
        "m2",
        "2026-11-25T10:01:00Z",
    )
    .await;
    send(
        &w,
        &on(Severity::P3, "scale_out#asg:web", "asg:web"),
        "m3",
        "2026-11-25T10:02:00Z",
    )
    .await;
    assert_eq!(slack_texts(&w).len(), 3);
}

#[tokio::test]
async fn past_its_resolution_sla_an_incident_gets_one_reminder_and_is_marked_breached() {
    let w = world(&[(
        "NBAOPS_ALERTS__ONCALL__ROTA",
        r#"{"weekdays": {"wed": "alice", "fri": "bob"}, "contacts": {"alice": "<@UALICE>"}}"#,
    )])
    .await;
    // P3: 48 h. Acknowledged (the response), it is still owed a resolution.
    send(
        &w,
        &on(Severity::P3, "pg-bloat#pg:db1/t", "pg:db1/t"),
        "m1",
        "2026-11-25T10:00:00Z",
    )
    .await;
    let invocation = inv("2026-11-25T10:01:00Z");
    let ctx = nbaops_shared::runtime::Ctx::of::<crate::router::AlertRouter>(w.deps, &invocation);
    let store = w.router.incidents(&ctx);
    let mut inc = load_incident(&w, "pg-bloat#pg:db1/t")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(inc.resolve_by, Some(t("2026-11-27T10:00:00Z")));
    inc.status = IncidentStatus::Acknowledged;
    store.save(&inc, t("2026-11-25T10:01:00Z")).await.unwrap();
    // Resolved in time: no reminder ever.
    send(
        &w,
        &on(Severity::P3, "pg-bloat#pg:db1/u", "pg:db1/u"),
        "m2",
        "2026-11-25T10:00:00Z",
    )
    .await;
    send(
        &w,
        &resolved(on(Severity::P3, "pg-bloat#pg:db1/u", "pg:db1/u")),
        "m3",
        "2026-11-26T10:00:00Z",
    )
    .await;
    let inc_u = load_incident(&w, "pg-bloat#pg:db1/u")
        .await
        .unwrap()
        .unwrap();
    assert!(
        !inc_u.breached
            && inc_u
                .history
                .last()
                .unwrap()
                .contains("within its resolution SLA"),
        "{inc_u:?}"
    );

    let before = slack_texts(&w).len();
    let notes = sweep(&w, "2026-11-27T09:59:00Z").await;
    assert_eq!(slack_texts(&w).len(), before, "{notes:?}");
    let notes = sweep(&w, "2026-11-27T10:00:00Z").await;
    assert!(
        notes.iter().any(|n| n.contains(
            "open past its resolution SLA (P3, due 2026-11-27T10:00:00+00:00): reminder to alice"
        )),
        "{notes:?}"
    );
    let slack = slack_texts(&w);
    assert_eq!(slack.len(), before + 1);
    assert!(
        slack[before].starts_with("*RESOLUTION SLA BREACHED (due 2026-11-27T10:00:00+00:00) [P3]"),
        "{}",
        slack[before]
    );
    assert!(
        slack[before].contains("<@UALICE> (alice): still open past its resolution time"),
        "{}",
        slack[before]
    );
    let inc = load_incident(&w, "pg-bloat#pg:db1/t")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (inc.breached, inc.breached_at),
        (true, Some(t("2026-11-27T10:00:00Z")))
    );
    // Exactly once, however many sweeps.
    sweep(&w, "2026-11-27T10:05:00Z").await;
    sweep(&w, "2026-11-29T10:05:00Z").await;
    assert_eq!(slack_texts(&w).len(), before + 1);
    // Resolution then: the post-incident record says it was past its SLA.
    let notes = send(
        &w,
        &resolved(on(Severity::P3, "pg-bloat#pg:db1/t", "pg:db1/t")),
        "m4",
        "2026-11-30T08:00:00Z",
    )
    .await;
    assert!(
        notes.iter().any(|n| n.contains("past its resolution SLA")),
        "{notes:?}"
    );
    let inc = load_incident(&w, "pg-bloat#pg:db1/t")
        .await
        .unwrap()
        .unwrap();
    assert!(inc.breached && inc.is_closed());

    // P2: within business hours. Friday 17:00 UTC is due that evening at 18:00; Friday 19:00
    // (after hours) on Monday 18:00. A P2 reminder never pages.
    let w = world(&[]).await;
    send(
        &w,
        &on(Severity::P2, "k#late", "r:late"),
        "m1",
        "2026-11-27T19:00:00Z",
    )
    .await;
    send(
        &w,
        &on(Severity::P2, "k#day", "r:day"),
        "m2",
        "2026-11-27T17:00:00Z",
    )
    .await;
    assert_eq!(
        load_incident(&w, "k#late")
            .await
            .unwrap()
            .unwrap()
            .resolve_by,
        Some(t("2026-11-30T18:00:00Z"))
    );
    assert_eq!(
        load_incident(&w, "k#day")
            .await
            .unwrap()
            .unwrap()
            .resolve_by,
        Some(t("2026-11-27T18:00:00Z"))
    );
    let notes = sweep(&w, "2026-11-29T12:00:00Z").await;
    let reminded: Vec<&String> = notes.iter().filter(|n| n.contains("reminder to")).collect();
    assert_eq!(reminded.len(), 1, "{notes:?}");
    assert!(
        reminded[0].starts_with("k#day:") && reminded[0].contains("reminder to nobody assigned"),
        "{notes:?}"
    );
    let notes = sweep(&w, "2026-11-30T18:00:00Z").await;
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("k#late: open past its resolution SLA")),
        "{notes:?}"
    );
    assert!(w.http.requests_to(PD).is_empty(), "a reminder pages nobody");
    // A P1 (4 h): paged when it opened, reminded on Slack and email only.
    send(
        &w,
        &on(Severity::P1, "k#p1", "r:p1"),
        "m3",
        "2026-11-30T19:00:00Z",
    )
    .await;
    assert_eq!(w.http.requests_to(PD).len(), 1);
    let notes = sweep(&w, "2026-11-30T23:00:00Z").await;
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("k#p1: open past its resolution SLA")),
        "{notes:?}"
    );
    assert!(
        notes.iter().any(|n| n.starts_with("k#p1: email: sent")),
        "{notes:?}"
    );
    assert_eq!(w.http.requests_to(PD).len(), 1, "a reminder pages nobody");
}

#[tokio::test]
async fn the_rota_assigns_each_incident_and_escalation_goes_to_the_team_lead() {
    let w = world(&[
        (
            "NBAOPS_ALERTS__ONCALL__ROTA",
            r#"{"weeks": {"2026-W49": "alice"}, "weekdays": {"mon": "bob", "tue": "bob", "wed": "bob", "thu": "bob", "fri": "bob", "sat": "carol", "sun": "carol"}, "contacts": {"alice": "<@UALICE>", "carol": "<@UCAROL>"}}"#,
        ),
        ("NBAOPS_ALERTS__ONCALL__TEAM_LEAD", "<@ULEAD>"),
        ("NBAOPS_ALERTS__BUSINESS__TZ", "Europe/Paris"),
    ])
    .await;
    // Sunday 29 Nov 22:30 UTC is still Sunday in Paris (carol); 23:30 UTC is Monday 00:30, week 49 (alice).
    send(
        &w,
        &on(Severity::P1, "k#sun", "r:sun"),
        "m1",
        "2026-11-29T22:30:00Z",
    )
    .await;
    send(
        &w,
        &on(Severity::P1, "k#mon", "r:mon"),
        "m2",
        "2026-11-29T23:30:00Z",
    )
    .await;
    // Week 50, a Tuesday: the weekday map (bob, no contact: @bob).
    send(
        &w,
        &on(Severity::P3, "k#tue", "r:tue"),
        "m3",
        "2026-12-08T10:00:00Z",
    )
    .await;
    for (k, name, mention) in [
        ("k#sun", "carol", "<@UCAROL>"),
        ("k#mon", "alice", "<@UALICE>"),
        ("k#tue", "bob", "@bob"),
    ] {
        let i = load_incident(&w, k).await.unwrap().unwrap();
        assert_eq!(
            (i.assignee.as_deref(), i.assignee_mention.as_deref()),
            (Some(name), Some(mention)),
            "{k}"
        );
    }
    let slack = slack_texts(&w);
    assert!(
        slack[0].contains("on call: <@UCAROL> (carol)"),
        "{}",
        slack[0]
    );
    assert!(
        slack[1].contains("on call: <@UALICE> (alice)"),
        "{}",
        slack[1]
    );
    assert!(slack[2].contains("on call: @bob"), "{}", slack[2]);

    // Escalation level 1: from the assignee to the team lead.
    let notes = sweep(&w, "2026-11-29T23:46:00Z").await;
    let text = slack_texts(&w)
        .into_iter()
        .find(|t| t.contains("ESCALATED to level 1") && t.contains("k#mon"))
        .expect("escalated");
    assert!(
        text.contains("<@ULEAD>: not acknowledged within the response time"),
        "{text}"
    );
    assert!(
        text.contains("assigned to <@UALICE> (alice) (on call), who has not acknowledged"),
        "{text}"
    );
    assert!(
        notes.iter().any(|n| n.contains("k#mon: unacknowledged")),
        "{notes:?}"
    );

    // No rota: nobody assigned, no on-call line.
    let w = world(&[]).await;
    send(
        &w,
        &on(Severity::P3, "k", "r"),
        "m1",
        "2026-11-29T22:30:00Z",
    )
    .await;
    assert!(load_incident(&w, "k")
        .await
        .unwrap()
        .unwrap()
        .assignee
        .is_none());
    assert!(!slack_texts(&w)[0].contains("on call"));
}

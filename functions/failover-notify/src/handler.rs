//! RDS events (EventBridge or an RDS event subscription over SNS) become failover incidents in
//! the ledger, a verification of the new primary, and alerts on one thread per failover; the
//! `failover-sweep` schedule raises failovers that never completed and re-verifies failed ones.
//!
//! failover-notify takes no action on AWS: it observes and notifies. Its only write anywhere is
//! the verification's heartbeat row (see `verify`).

use chrono::Duration;
use serde_json::{json, Value};

use nbaops_shared::adapters::{AwsClients, SdkRds, TokioPgConnector};
use nbaops_shared::alerts::{Alert, AlertStatus, Severity};
use nbaops_shared::config::failover::{self, FailoverConfig};
use nbaops_shared::events::rds_catalog::{classify_rds_event, IncidentRole, RdsEventInfo};
use nbaops_shared::events::{Inbound, RdsEvent, RdsSourceType, ScheduledTick};
use nbaops_shared::guard::{decode_state, report_unreadable_state};
use nbaops_shared::ports::{PgConnector, Rds};
use nbaops_shared::runtime::{Ctx, Deps, Function, InvocationReport, RecordReport, Work};
use nbaops_shared::Result;

use crate::incident::{apply, conclude, find_incident, sweep, Incident, Notice, Signal};
use crate::verify::{verify, Ports, Verification};

pub const FUNCTION: &str = "failover-notify";
/// Scheduler input `{"nbaops": {"task": "failover-sweep"}}`.
pub const SWEEP_TASK: &str = "failover-sweep";
/// Ledger key of the index of open incidents (sk = `<db>#<incident id>`).
pub const OPEN_INDEX: &str = "failover-open";

/// failover-notify's `failover` section and the ports it calls, built once at init.
pub struct FailoverNotify {
    pub cfg: FailoverConfig,
    pub rds: Box<dyn Rds>,
    pub connector: Box<dyn PgConnector>,
}

impl Function for FailoverNotify {
    const NAME: &'static str = FUNCTION;
    const TAKES: &'static str = "RDS events and the 'failover-sweep' schedule";
    type Reply = InvocationReport;

    async fn init(deps: &Deps, aws: &AwsClients) -> Result<Self> {
        Ok(FailoverNotify {
            cfg: failover::from_settings(&deps.cfg.settings)?,
            connector: Box::new(TokioPgConnector::from_settings(&deps.cfg.settings)?),
            rds: Box::new(SdkRds(aws.rds())),
        })
    }

    async fn on(&self, inbound: Inbound, ctx: &Ctx<'_>) -> Result<RecordReport> {
        match inbound {
            Inbound::Rds(ev) => self.on_rds(&ev, ctx).await,
            Inbound::Schedule(tick) if tick.task().as_deref() == Some(SWEEP_TASK) => {
                self.on_sweep(&tick, ctx).await
            }
            other => Ok(ctx.not_mine(&other)),
        }
    }
}

fn incident_pk(db: &str) -> String {
    format!("failover#{db}")
}

fn runbook(what: &str) -> &'static str {
    match what {
        "start" => "Nothing to do while it runs (60-120 s): the application reconnects through its pool. Watch for the completion on this thread.",
        "stuck" | "failed" => "Check the instance in the RDS console (status, recent events) and the application's error rate; consider a manual reboot with failover only after reading the events.",
        _ => "If verification failed: connect to the endpoint, check pg_is_in_recovery(), DNS (the endpoint may still resolve to the old primary) and the read replicas.",
    }
}

/// The alert of one notice, on the incident's thread.
fn alert_of(inc: &Incident, n: &Notice, ctx: &Ctx<'_>) -> Alert {
    let mut a = ctx
        .alert(
            n.severity,
            &format!("rds:{}", inc.db),
            inc.dedup_key(),
            n.summary.clone(),
        )
        .with_details(n.details.clone())
        .with_runbook(runbook(n.what))
        .with_action("none: failover-notify observes and notifies, it changes nothing on AWS");
    if let Some(v) = inc.verification.as_ref().filter(|v| v.wrote_heartbeat) {
        if n.what == "completion" || n.what == "resolution" {
            a = a.with_action(format!(
                "verification wrote one heartbeat row on {} (harmless)",
                v.target
            ));
        }
    }
    if n.resolved {
        a.status = AlertStatus::Resolved;
    }
    a
}

/// A stored incident this version cannot read: a P2, and nothing done with it.
async fn report_unreadable(db: &str, id: &str, err: &str, w: &mut Work<'_>) -> Result<()> {
    let ctx = w.ctx;
    let (note, alert) = report_unreadable_state(
        ctx.cfg(),
        ctx.deps.notifier.as_ref(),
        &format!("rds:{db}"),
        &format!("failover incident {id}"),
        err,
        ctx.now(),
    )
    .await?;
    w.note(note);
    w.rec.alerts.push(alert);
    Ok(())
}

/// The incidents of `db` in the ledger, oldest first; one it cannot read is reported and left out.
async fn load_incidents(db: &str, w: &mut Work<'_>) -> Result<Vec<Incident>> {
    let mut out = Vec::new();
    for (sk, v) in w.ctx.deps.ledger.query(&incident_pk(db), "inc#").await? {
        match decode_state::<Incident>(Some(v)) {
            Ok(i) => out.extend(i),
            Err(e) => report_unreadable(db, sk.trim_start_matches("inc#"), &e, w).await?,
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// Publishes the notices on the incident's thread.
async fn raise_notices(notices: Vec<Notice>, inc: &Incident, w: &mut Work<'_>) -> Result<()> {
    for n in notices {
        let alert = alert_of(inc, &n, &w.ctx);
        w.raise(alert).await?;
        w.note(format!(
            "{} {} ({}): {}",
            n.severity,
            n.what,
            if n.resolved { "resolved" } else { "firing" },
            inc.dedup_key()
        ));
    }
    Ok(())
}

impl FailoverNotify {
    /// The new primary of `db` checked now (`note` is the heartbeat row's text).
    async fn verify_db(&self, db: &str, cluster: bool, note: &str, ctx: &Ctx<'_>) -> Verification {
        let env = ctx.env();
        let ports = Ports {
            rds: self.rds.as_ref(),
            connector: self.connector.as_ref(),
            params: ctx.deps.params.as_deref(),
            env: &env,
        };
        verify(db, cluster, note, &self.cfg, &ports, ctx.now()).await
    }

    async fn verify_incident(&self, inc: &Incident, ctx: &Ctx<'_>) -> Verification {
        let note = format!("failover {} verified at {}", inc.id, ctx.now().to_rfc3339());
        self.verify_db(&inc.db, inc.cluster, &note, ctx).await
    }

    async fn save(&self, inc: &Incident, ctx: &Ctx<'_>) -> Result<()> {
        let ledger = &ctx.deps.ledger;
        let last = inc
            .events
            .last()
            .map(|e| e.at)
            .unwrap_or(ctx.now())
            .max(ctx.now());
        let expires = (last + Duration::days(self.cfg.incident_ttl_days)).timestamp();
        let data = serde_json::to_value(inc)
            .map_err(|e| nbaops_shared::NbaopsError::InvalidEvent(format!("incident: {e}")))?;
        ledger
            .put(
                &incident_pk(&inc.db),
                &format!("inc#{}", inc.id),
                &data,
                Some(expires),
            )
            .await?;
        let index_sk = format!("{}#{}", inc.db, inc.id);
        if inc.is_open() {
            ledger
                .put(
                    OPEN_INDEX,
                    &index_sk,
                    &json!({"db": inc.db, "id": inc.id}),
                    Some(expires),
                )
                .await
        } else {
            ledger.delete(OPEN_INDEX, &index_sk).await
        }
    }

    async fn on_rds(&self, ev: &RdsEvent, ctx: &Ctx<'_>) -> Result<RecordReport> {
        let cluster = match ev.source_type {
            RdsSourceType::Instance => false,
            RdsSourceType::Cluster => true,
            ref other => {
                return Ok(RecordReport::not_for_me(
                    &ev.event_id,
                    "rds",
                    format!(
                        "RDS {other:?} event ({}) for '{}': {FUNCTION} follows DB instances and clusters",
                        ev.event_code.as_deref().unwrap_or("no event ID"),
                        ev.source_id
                    ),
                ))
            }
        };
        let info = classify_rds_event(ev);
        let mut w = ctx.work(
            &ev.event_id,
            "rds",
            format!(
                "rds:{} {}: {} [{:?}, {}, by {}]",
                ev.source_id,
                info.code.as_deref().unwrap_or("no event ID"),
                info.title,
                info.kind,
                info.severity,
                info.classified_by
            ),
        );
        if !info.is_recognised() {
            w.note(format!(
                "unrecognised event: classified by {}; message was {:?}",
                info.classified_by, ev.message
            ));
        }
        let code = match (&info.code, info.role) {
            (
                Some(c),
                IncidentRole::Opens
                | IncidentRole::Closes
                | IncidentRole::Fails
                | IncidentRole::Phase,
            ) => c.clone(),
            _ => return self.standalone(ev, &info, cluster, w).await,
        };
        let signal = Signal {
            db: ev.source_id.clone(),
            cluster,
            code,
            role: info.role,
            at: ev.at,
            event_id: ev.event_id.clone(),
            title: info.title.clone(),
        };
        let incidents = load_incidents(&signal.db, &mut w).await?;
        let found = find_incident(&incidents, &signal, &self.cfg);
        if found.is_none() && info.role == IncidentRole::Phase {
            w.note("no failover incident near this event");
            return self.standalone(ev, &info, cluster, w).await;
        }
        let step = apply(found.map(|i| incidents[i].clone()), &signal, &self.cfg);
        w.rec.notes.extend(step.notes.iter().cloned());
        if step.duplicate {
            return Ok(w.rec);
        }
        let mut inc = step.incident;
        let mut notices = step.notices;
        if step.verify {
            let v = self.verify_incident(&inc, ctx).await;
            w.note(format!("{} (attempt {})", v.words(), v.attempts));
            let (i, n) = conclude(inc, v, &self.cfg);
            inc = i;
            notices.extend(n);
        }
        // Saved before publishing: a retry after a failed publish must not open a second incident.
        self.save(&inc, ctx).await?;
        raise_notices(notices, &inc, &mut w).await?;
        w.note(format!("incident {} is {:?}", inc.dedup_key(), inc.phase));
        Ok(w.rec)
    }

    /// An event outside any failover: one notice of its own, when severe enough.
    async fn standalone(
        &self,
        ev: &RdsEvent,
        info: &RdsEventInfo,
        cluster: bool,
        mut w: Work<'_>,
    ) -> Result<RecordReport> {
        let ctx = w.ctx;
        let mut severity = info.severity;
        let mut summary = format!("{}: {}", ev.source_id, info.title);
        let mut details = json!({
            "event_id": info.code, "kind": info.kind, "classified_by": info.classified_by,
            "categories": ev.categories, "message": ev.message, "at": ev.at,
        });
        if info.verify {
            let note = format!(
                "{} verified at {}",
                info.code.as_deref().unwrap_or("event"),
                ctx.now().to_rfc3339()
            );
            let v = self.verify_db(&ev.source_id, cluster, &note, &ctx).await;
            if !v.passed {
                severity = Severity::P1;
            }
            summary = format!("{summary}; {}", v.words());
            w.note(v.words());
            details["verification"] = serde_json::to_value(&v).unwrap_or(Value::Null);
        }
        if severity > self.cfg.notify_min_severity {
            w.note(format!(
                "{severity}: below failover.notify_min_severity ({}), reported here only",
                self.cfg.notify_min_severity
            ));
            return Ok(w.rec);
        }
        let topic = info
            .code
            .clone()
            .or_else(|| ev.categories.first().cloned())
            .unwrap_or_else(|| "unknown".into());
        let alert = ctx
            .alert(
                severity,
                &format!("rds:{}", ev.source_id),
                format!("rds-event#rds:{}#{topic}", ev.source_id),
                summary,
            )
            .with_details(details);
        w.raise(alert).await?;
        w.note(format!("{severity} published"));
        Ok(w.rec)
    }

    async fn on_sweep(&self, tick: &ScheduledTick, ctx: &Ctx<'_>) -> Result<RecordReport> {
        let ledger = &ctx.deps.ledger;
        let open = ledger.query(OPEN_INDEX, "").await?;
        let mut w = ctx.work(
            &tick.event_id,
            "schedule",
            format!("failover sweep: {} open incident(s)", open.len()),
        );
        for (sk, v) in open {
            let (Some(db), Some(id)) = (v["db"].as_str(), v["id"].as_str()) else {
                w.note(format!("index item {sk} unreadable: dropped"));
                ledger.delete(OPEN_INDEX, &sk).await?;
                continue;
            };
            let stored = ledger.get(&incident_pk(db), &format!("inc#{id}")).await?;
            let inc: Incident = match decode_state(stored) {
                Ok(Some(i)) => i,
                Ok(None) => {
                    w.note(format!("{sk}: incident gone (expired): dropped"));
                    ledger.delete(OPEN_INDEX, &sk).await?;
                    continue;
                }
                // Left in the index: reported again by the next sweep until someone fixes it.
                Err(e) => {
                    report_unreadable(db, id, &e, &mut w).await?;
                    continue;
                }
            };
            let step = sweep(inc, ctx.now(), &self.cfg);
            w.note(format!("{}: {}", step.incident.dedup_key(), step.note));
            let mut inc = step.incident;
            let mut notices: Vec<Notice> = step.notice.into_iter().collect();
            if step.reverify {
                let v = self.verify_incident(&inc, ctx).await;
                w.note(v.words());
                let (i, n) = conclude(inc, v, &self.cfg);
                inc = i;
                notices.extend(n);
            }
            self.save(&inc, ctx).await?;
            if step.close && inc.is_open() {
                ledger.delete(OPEN_INDEX, &sk).await?;
            }
            raise_notices(notices, &inc, &mut w).await?;
        }
        Ok(w.rec)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    use chrono::{DateTime, TimeZone, Utc};
    use nbaops_shared::fakes::*;
    use nbaops_shared::ports::*;
    use nbaops_shared::runtime::{dispatch, Invocation};

    const START: &str = include_str!("../../../events/rds/eventbridge-failover-started.json");
    const START_SNS: &str = include_str!("../../../events/rds/sns-failover-started.json");
    const DONE: &str = include_str!("../../../events/rds/eventbridge-failover-completed.json");
    const SWEEP: &str = include_str!("../../../events/schedule/failover-sweep.json");

    /// A scripted server: in recovery or not, replicas, refusing connections, recording writes.
    #[derive(Default)]
    struct Server {
        in_recovery: Mutex<bool>,
        refuse: Mutex<bool>,
        replicas: Mutex<Vec<(String, String)>>,
        statements: Mutex<Vec<String>>,
        connects: Mutex<Vec<String>>,
    }
    struct Session(&'static Server);
    #[async_trait::async_trait]
    impl Postgres for Session {
        async fn query(&self, sql: &str) -> Result<Vec<serde_json::Map<String, Value>>> {
            let rows = if sql.contains("pg_is_in_recovery") {
                vec![json!({"in_recovery": *self.0.in_recovery.lock().unwrap()})]
            } else if sql.contains("pg_stat_replication") {
                self.0
                    .replicas
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|(n, s)| json!({"name": n, "state": s}))
                    .collect()
            } else {
                vec![]
            };
            Ok(rows
                .into_iter()
                .map(|v| v.as_object().unwrap().clone())
                .collect())
        }
        async fn execute(&self, sql: &str) -> Result<u64> {
            if sql.starts_with("INSERT") && *self.0.in_recovery.lock().unwrap() {
                return Err(nbaops_shared::NbaopsError::dependency(
                    "postgres",
                    "ERROR: cannot execute INSERT in a read-only transaction (SQLSTATE 25006)",
                ));
            }
            self.0.statements.lock().unwrap().push(sql.to_string());
            Ok(1)
        }
    }
    struct Connector(&'static Server);
    #[async_trait::async_trait]
    impl PgConnector for Connector {
        async fn connect(&self, url: &str, _password: Option<&str>) -> Result<Box<dyn Postgres>> {
            self.0.connects.lock().unwrap().push(url.to_string());
            if *self.0.refuse.lock().unwrap() {
                return Err(nbaops_shared::NbaopsError::dependency(
                    "postgres",
                    "Connection refused",
                ));
            }
            Ok(Box::new(Session(self.0)))
        }
    }

    struct World {
        deps: &'static Deps,
        f: &'static FailoverNotify,
        rds: &'static FakeRds,
        notifier: &'static FakeNotifier,
        ledger: &'static FakeLedger,
        server: &'static Server,
    }

    fn world(extra: &[(&str, &str)]) -> World {
        let mut pairs = vec![
            (
                "NBAOPS_ALERTS_TOPIC_ARN",
                "arn:aws:sns:us-east-1:123456789012:nbaops-dev-alerts",
            ),
            ("NBAOPS_FAILOVER__VERIFY__RETRY_SECONDS", "0"),
            ("NBAOPS_FAILOVER__VERIFY__ATTEMPTS", "2"),
            (
                "NBAOPS_FAILOVER__VERIFY__EXPECTED_REPLICAS",
                r#"{"nbaops-dev-db":1}"#,
            ),
        ];
        pairs.extend_from_slice(extra);
        let t = test_deps(FUNCTION, &pairs).unwrap();
        let rds = leak(FakeRds::with(vec![DbInstanceState {
            id: "nbaops-dev-db".into(),
            arn: None,
            class: "db.t3.micro".into(),
            status: "available".into(),
            engine: "postgres".into(),
            multi_az: true,
            endpoint: Some(("nbaops-dev-db.abc.us-east-1.rds.amazonaws.com".into(), 5432)),
            pending_class: None,
            tags: Tags::new(),
        }]));
        let server = leak(Server::default());
        *server.replicas.lock().unwrap() = vec![("replica-1".into(), "streaming".into())];
        let f = leak(FailoverNotify {
            cfg: failover::from_settings(&t.deps.cfg.settings).unwrap(),
            rds: Box::new(Shared(rds)),
            connector: Box::new(Connector(server)),
        });
        World {
            deps: t.deps,
            f,
            rds,
            notifier: t.notifier,
            ledger: t.ledger,
            server,
        }
    }

    fn later() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 20, 2, 40).unwrap()
    }

    async fn handle(w: &World, payload: Value, inv: Invocation) -> Result<InvocationReport> {
        dispatch(w.f, payload, &Ctx::of::<FailoverNotify>(w.deps, &inv)).await
    }

    async fn run(w: &World, fixture: &str, now: DateTime<Utc>) -> InvocationReport {
        let payload = serde_json::from_str(fixture).unwrap();
        handle(w, payload, Invocation::at("req", now))
            .await
            .unwrap()
    }

    fn alerts(w: &World) -> Vec<Alert> {
        w.notifier
            .published()
            .iter()
            .map(|p| serde_json::from_str(&p.message).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn start_and_completion_make_one_p2_thread_verified_on_the_endpoint() {
        let w = world(&[]);
        run(&w, START, later()).await;
        let r = run(&w, DONE, later()).await;
        let a = alerts(&w);
        assert_eq!(a.len(), 2, "{a:#?}");
        assert_eq!(a[0].dedup_key, a[1].dedup_key);
        assert_eq!(
            a[0].dedup_key,
            "failover#rds:nbaops-dev-db#20261125T200102.123Z"
        );
        assert_eq!(
            (a[0].severity, a[0].status),
            (Severity::P2, AlertStatus::Firing)
        );
        assert_eq!(
            (a[1].severity, a[1].status),
            (Severity::P2, AlertStatus::Resolved)
        );
        assert!(a[1].summary.contains("in 92 s"), "{}", a[1].summary);
        assert!(
            a[1].summary.contains("verification passed"),
            "{}",
            a[1].summary
        );
        assert_eq!(a[1].details["verification"]["passed"], true);
        assert!(r.records[0].notes.iter().any(|n| n.contains("Verified")));
        // The endpoint came from DescribeDBInstances; the only write is the heartbeat.
        let url = w.server.connects.lock().unwrap()[0].clone();
        assert!(url.starts_with("postgres://nbaops_failover@nbaops-dev-db.abc.us-east-1.rds.amazonaws.com:5432/postgres?connect_timeout=5"), "{url}");
        let writes: Vec<String> = w
            .server
            .statements
            .lock()
            .unwrap()
            .iter()
            .filter(|s| !s.starts_with("SET"))
            .cloned()
            .collect();
        assert_eq!(writes.len(), 1, "{writes:?}");
        assert!(writes[0].starts_with("INSERT INTO public.\"nbaops_heartbeat\""));
        // No action on AWS, ever.
        assert!(w.rds.mutations().is_empty());
        assert_eq!(w.ledger.len_with_prefix("failover#"), 1);
        assert_eq!(w.ledger.len_with_prefix("failover-open"), 0);
    }

    #[tokio::test]
    async fn a_standby_still_in_recovery_fails_verification_p1_then_the_sweep_resolves() {
        let w = world(&[]);
        *w.server.in_recovery.lock().unwrap() = true;
        run(&w, START, later()).await;
        run(&w, DONE, later()).await;
        let a = alerts(&w);
        assert_eq!(
            (a[1].severity, a[1].status),
            (Severity::P1, AlertStatus::Firing)
        );
        assert!(
            a[1].summary.contains("pg_is_in_recovery() is true"),
            "{}",
            a[1].summary
        );
        // Two attempts, as configured.
        assert_eq!(w.server.connects.lock().unwrap().len(), 2);
        assert_eq!(w.ledger.len_with_prefix("failover-open"), 1);
        // The standby is promoted; the sweep verifies again and resolves the thread.
        *w.server.in_recovery.lock().unwrap() = false;
        run(&w, SWEEP, later() + chrono::Duration::minutes(5)).await;
        let a = alerts(&w);
        assert_eq!(a.len(), 3);
        assert_eq!(
            (a[2].severity, a[2].status),
            (Severity::P1, AlertStatus::Resolved)
        );
        assert_eq!(a[2].dedup_key, a[0].dedup_key);
        assert_eq!(w.ledger.len_with_prefix("failover-open"), 0);
    }

    #[tokio::test]
    async fn duplicates_over_both_deliveries_make_one_incident() {
        let w = world(&[]);
        for f in [START, START_SNS, START, DONE, DONE] {
            run(&w, f, later()).await;
        }
        let a = alerts(&w);
        assert_eq!(a.len(), 2, "{a:#?}");
        assert_eq!(w.ledger.len_with_prefix("failover#"), 1);
        // The SNS copy is remembered as seen, not as a second event.
        let stored = w
            .ledger
            .items
            .lock()
            .unwrap()
            .iter()
            .find(|((pk, _), _)| pk.starts_with("failover#"))
            .map(|(_, v)| v.clone())
            .unwrap();
        assert_eq!(stored["events"].as_array().unwrap().len(), 2, "{stored}");
    }

    #[tokio::test]
    async fn completion_first_then_start() {
        let w = world(&[]);
        run(&w, DONE, later()).await;
        run(&w, START, later()).await;
        let a = alerts(&w);
        assert_eq!(a.len(), 2, "{a:#?}");
        assert!(
            a[0].summary.contains("duration unknown"),
            "{}",
            a[0].summary
        );
        assert!(a[1].summary.contains("delivered late"), "{}", a[1].summary);
        assert_eq!(a[0].dedup_key, a[1].dedup_key);
        assert_eq!(w.ledger.len_with_prefix("failover#"), 1);
    }

    #[tokio::test]
    async fn sweep_raises_a_stuck_failover_once() {
        let w = world(&[]);
        run(&w, START, later()).await;
        let r = run(&w, SWEEP, later()).await;
        assert_eq!(alerts(&w).len(), 1, "{:?}", r.records[0].notes);
        let r = run(&w, SWEEP, later() + chrono::Duration::minutes(10)).await;
        let a = alerts(&w);
        assert_eq!(a.len(), 2, "{:?}", r.records[0].notes);
        assert_eq!(
            (a[1].severity, a[1].status),
            (Severity::P1, AlertStatus::Firing)
        );
        assert!(
            a[1].summary.contains("has not completed"),
            "{}",
            a[1].summary
        );
        run(&w, SWEEP, later() + chrono::Duration::minutes(20)).await;
        assert_eq!(alerts(&w).len(), 2);
    }

    #[tokio::test]
    async fn events_without_or_with_unknown_ids_are_classified_never_crash() {
        let w = world(&[]);
        let r = run(
            &w,
            include_str!("../../../events/rds/eventbridge-no-event-id.json"),
            later(),
        )
        .await;
        assert!(
            r.records[0].summary.contains("no event ID"),
            "{}",
            r.records[0].summary
        );
        assert!(r.records[0].summary.contains("by category 'notification'"));
        assert!(alerts(&w).is_empty(), "P4 is reported, not published");
        let r = run(
            &w,
            include_str!("../../../events/rds/eventbridge-unknown-event-id.json"),
            later(),
        )
        .await;
        assert!(r.records[0].summary.contains("RDS-EVENT-0999"));
        let a = alerts(&w);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].severity, Severity::P2);
        assert_eq!(a[0].dedup_key, "rds-event#rds:nbaops-dev-db#RDS-EVENT-0999");
        let r = run(
            &w,
            include_str!("../../../events/rds/eventbridge-snapshot-event.json"),
            later(),
        )
        .await;
        assert!(r.records[0].not_for_me.is_some());
        let r = run(
            &w,
            include_str!("../../../events/not-for-me/s3-put.json"),
            later(),
        )
        .await;
        assert!(r.records[0].not_for_me.is_some());
        assert!(w.rds.mutations().is_empty());
    }

    #[tokio::test]
    async fn other_availability_events_carry_their_severity() {
        let w = world(&[]);
        for (f, sev) in [
            (
                include_str!("../../../events/rds/eventbridge-storage-full.json"),
                Some(Severity::P1),
            ),
            (
                include_str!("../../../events/rds/sns-low-storage.json"),
                Some(Severity::P2),
            ),
            (
                include_str!("../../../events/rds/eventbridge-reboot.json"),
                Some(Severity::P3),
            ),
            (
                include_str!("../../../events/rds/eventbridge-failover-not-attempted.json"),
                Some(Severity::P3),
            ),
            (
                include_str!("../../../events/rds/eventbridge-auto-start-after-7-days.json"),
                Some(Severity::P3),
            ),
            (
                include_str!("../../../events/rds/eventbridge-maintenance-patching.json"),
                Some(Severity::P3),
            ),
        ] {
            let before = alerts(&w).len();
            run(&w, f, later()).await;
            let a = alerts(&w);
            assert_eq!(a.len(), before + sev.is_some() as usize);
            assert_eq!(a.last().map(|a| a.severity), sev);
        }
    }

    #[tokio::test]
    async fn cluster_failover_failed_is_p1_on_the_cluster_thread() {
        let w = world(&[]);
        run(
            &w,
            include_str!("../../../events/rds/eventbridge-cluster-failover-started.json"),
            later(),
        )
        .await;
        run(
            &w,
            include_str!("../../../events/rds/eventbridge-cluster-failover-failed.json"),
            later(),
        )
        .await;
        let a = alerts(&w);
        assert_eq!(a.len(), 2);
        assert_eq!(a[1].severity, Severity::P1);
        assert!(a[1].summary.contains("FAILED"));
        assert_eq!(a[0].dedup_key, a[1].dedup_key);
        assert!(a[0]
            .dedup_key
            .starts_with("failover#rds:nbaops-dev-aurora#"));
    }

    #[tokio::test]
    async fn unreachable_endpoint_is_p1() {
        let w = world(&[]);
        *w.server.refuse.lock().unwrap() = true;
        run(&w, START, later()).await;
        run(&w, DONE, later()).await;
        let a = alerts(&w);
        assert_eq!(a[1].severity, Severity::P1);
        assert!(
            a[1].summary.contains("Connection refused"),
            "{}",
            a[1].summary
        );
    }

    /// A stored incident this version cannot read (a newer format, a corrupt write) is a P2 per
    /// incident, on the event's path and on the sweep's; the failover itself is still followed.
    #[tokio::test]
    async fn an_unreadable_stored_incident_is_a_p2_and_left_alone() {
        let w = world(&[]);
        let corrupt = json!({"db": "nbaops-dev-db", "id": 7});
        let pk = "failover#nbaops-dev-db";
        let sk = "inc#20261125T190000.000Z";
        w.ledger.put(pk, sk, &corrupt, None).await.unwrap();
        let r = run(&w, START, later()).await;
        let key = "ledger-unreadable#rds:nbaops-dev-db#failover incident 20261125T190000.000Z";
        let a = alerts(&w);
        assert_eq!(a.len(), 2, "{a:#?}");
        assert_eq!(
            (a[0].severity, a[0].dedup_key.as_str()),
            (Severity::P2, key)
        );
        assert_eq!(
            a[1].dedup_key,
            "failover#rds:nbaops-dev-db#20261125T200102.123Z"
        );
        assert_eq!(r.records[0].alerts.len(), 2);
        assert!(
            r.records[0]
                .notes
                .iter()
                .any(|n| n.contains("unreadable") && n.contains("not acting")),
            "{:?}",
            r.records[0].notes
        );
        // The sweep meets it through the open index: a P2 again, the item kept for someone to fix.
        w.ledger
            .put(
                OPEN_INDEX,
                "nbaops-dev-db#20261125T190000.000Z",
                &json!({"db": "nbaops-dev-db", "id": "20261125T190000.000Z"}),
                None,
            )
            .await
            .unwrap();
        let r = run(&w, SWEEP, later()).await;
        assert_eq!(r.records[0].alerts.len(), 1, "{:?}", r.records[0].notes);
        assert_eq!(r.records[0].alerts[0].dedup_key, key);
        assert_eq!(w.ledger.get(pk, sk).await.unwrap(), Some(corrupt));
        assert!(w
            .ledger
            .get(OPEN_INDEX, "nbaops-dev-db#20261125T190000.000Z")
            .await
            .unwrap()
            .is_some());
        assert!(w.rds.mutations().is_empty());
    }

    mod properties {
        use super::*;
        use nbaops_shared::events::arbitrary;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(arbitrary::config(48))]

            /// Arbitrary JSON and damaged fixtures: never a panic; what nothing understands is
            /// refused with no incident written and nothing published.
            #[test]
            fn any_payload_is_answered_and_only_an_understood_event_acts(payload in arbitrary::payload()) {
                let w = world(&[]);
                let understood = arbitrary::understood(&payload);
                let now = chrono::DateTime::parse_from_rfc3339("2026-11-25T20:05:00Z").unwrap().with_timezone(&Utc);
                let res = arbitrary::block_on(handle(&w, payload, Invocation::at("prop", now)));
                if !understood {
                    arbitrary::refused_cleanly(&res)?;
                    prop_assert!(w.rds.mutations().is_empty());
                    prop_assert!(w.notifier.published().is_empty());
                    prop_assert_eq!(w.ledger.len_with_prefix(""), 0);
                }
            }
        }
    }
}

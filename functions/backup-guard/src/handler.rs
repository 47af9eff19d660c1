//! Translates Scheduler ticks and RDS events into the three backup-guard tasks:
//! `backup-rpo-check` (every 5 min), `backup-monthly` (daily: the month's snapshot once, DR
//! copies, retention) and `backup-restore-drill` (quarterly or on demand). `now` is the tick's
//! `at`, so a test (or an operator replaying a day) can move time.
//!
//! Ledger items: `backuprpo#<instance>/open` (a breach being tracked), `backupcopy#<instance>/
//! <snapshot>` (DR copies: state, attempts, last error), `backupdrill#<instance>/current` (the
//! drill in progress) and `backupdrill#<instance>/done#<start>` (the drill record: RTO, checks).

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

use nbaops_shared::alerts::{Alert, AlertStatus, Severity};
use nbaops_shared::config::backup::BackupConfig;
use nbaops_shared::config::pg::PgConfig;
use nbaops_shared::deadline::{Budget, MARGIN, ONE_AWS_ACTION};
use nbaops_shared::events::{classify, Inbound, RdsEvent, ScheduledTick};
use nbaops_shared::guard::{decode_state, report_unreadable_state, ProposedAction};
use nbaops_shared::ports::{PgConnector, RdsBackups, Site, SnapshotKind};
use nbaops_shared::runtime::{Deps, Invocation, InvocationReport, RecordReport};
use nbaops_shared::sql;
use nbaops_shared::Result;

use crate::plan::{self, Announce, BackupObservation, OpenBreach};

pub const FUNCTION: &str = "backup-guard";
pub const RPO_TASK: &str = "backup-rpo-check";
pub const MONTHLY_TASK: &str = "backup-monthly";
pub const DRILL_TASK: &str = "backup-restore-drill";

/// Function-specific dependencies built once at init.
pub struct BackupGuard {
    pub backup: BackupConfig,
    pub pg: PgConfig,
    pub rds: Box<dyn RdsBackups>,
    pub connector: Box<dyn PgConnector>,
}

pub async fn handle(
    payload: Value,
    inv: Invocation,
    deps: &'static Deps,
    x: &'static BackupGuard,
) -> Result<InvocationReport> {
    handle_ref(payload, &inv, deps, x).await
}

pub async fn handle_ref(
    payload: Value,
    inv: &Invocation,
    deps: &Deps,
    x: &BackupGuard,
) -> Result<InvocationReport> {
    let mut report = InvocationReport {
        function: FUNCTION.into(),
        env: deps.cfg.env.to_string(),
        records: vec![],
    };
    for inbound in classify(&payload) {
        let rec = match inbound {
            Inbound::Schedule(tick) => match tick.task().as_deref() {
                Some(RPO_TASK) => rpo_check(&tick, inv, deps, x).await?,
                Some(MONTHLY_TASK) => crate::monthly::run(&tick, inv, deps, x).await?,
                Some(DRILL_TASK) => crate::drill::on_tick(&tick, inv, deps, x).await?,
                other => RecordReport::not_for_me(
                    &tick.event_id,
                    "schedule",
                    format!(
                        "task {:?}: {FUNCTION} runs '{RPO_TASK}', '{MONTHLY_TASK}' and '{DRILL_TASK}'",
                        other.unwrap_or_default()
                    ),
                ),
            },
            Inbound::Rds(ev) if ev.source_id.starts_with(plan::DRILL_PREFIX) => {
                on_rds_event(&ev, inv, deps, x).await?
            }
            Inbound::NotForMe(n) => RecordReport::not_for_me("", "unknown", n.reason),
            other => RecordReport::not_for_me(
                other.event_id().unwrap_or(""),
                other.kind(),
                format!("{FUNCTION} takes its Scheduler tasks and RDS events of its drill instances"),
            ),
        };
        report.records.push(rec);
    }
    Ok(report)
}

async fn on_rds_event(
    ev: &RdsEvent,
    inv: &Invocation,
    deps: &Deps,
    x: &BackupGuard,
) -> Result<RecordReport> {
    // RDS-EVENT-0005 (created), 0008 (restored from snapshot), 0043 (restored): the instance
    // may be available now; anything else about it is only noted.
    let relevant = ["0005", "0008", "0043"].iter().any(|c| ev.is(c));
    if !relevant {
        return Ok(RecordReport::not_for_me(
            &ev.event_id,
            "rds",
            format!(
                "{} on {}: not a creation/restore event",
                ev.event_code.as_deref().unwrap_or("no event code"),
                ev.source_id
            ),
        ));
    }
    let now = inv.now.max(ev.at);
    crate::drill::advance_for_instance(&ev.source_id, &ev.event_id, now, inv, deps, x).await
}

/// The per-record view every task starts from.
pub fn record(tick: &ScheduledTick, summary: String) -> RecordReport {
    RecordReport {
        event_id: tick.event_id.clone(),
        kind: "schedule".into(),
        summary,
        ..Default::default()
    }
}

pub fn alert(
    deps: &Deps,
    severity: Severity,
    resource: &str,
    key: String,
    summary: String,
    now: DateTime<Utc>,
) -> Alert {
    Alert::new(
        severity,
        &deps.cfg.env.to_string(),
        FUNCTION,
        resource,
        key,
        summary,
        now,
    )
}

/// A non-disruptive backup action; cooldown 0 (the names make them idempotent).
pub fn action(
    name: &str,
    resource: String,
    tags: nbaops_shared::ports::Tags,
    reason: String,
    before: Value,
    after: Value,
) -> ProposedAction {
    ProposedAction {
        action: name.into(),
        cooldown_key: name.into(),
        resource,
        tags,
        reason,
        severity: Severity::P3,
        disruptive: false,
        bounds: None,
        cooldown_seconds: 0,
        before,
        after,
    }
}

// ---- RPO check ----

async fn rpo_check(
    tick: &ScheduledTick,
    inv: &Invocation,
    deps: &Deps,
    x: &BackupGuard,
) -> Result<RecordReport> {
    let now = tick.at;
    let cfg = &x.backup;
    let mut rec = record(
        tick,
        format!("RPO check of {} instance(s)", cfg.instances.len()),
    );
    if cfg.instances.is_empty() {
        rec.notes
            .push("backup.instances is empty: nothing to check".into());
    }
    let mut budget = Budget::new(inv, MARGIN, ONE_AWS_ACTION);
    for instance in &cfg.instances {
        if !budget.admit(format!("RPO check of rds:{instance}")) {
            continue;
        }
        let obs = observe(instance, now, deps, x, &mut rec).await?;
        let reasons = plan::rpo_breaches(&obs, cfg, now);
        let pk = format!("backuprpo#{instance}");
        let prev: Option<OpenBreach> = match decode_state(deps.ledger.get(&pk, "open").await?) {
            Ok(p) => p,
            Err(e) => {
                // Never "no open breach": that would re-announce or silently close it.
                let (note, alert) = report_unreadable_state(
                    &deps.cfg,
                    deps.notifier.as_ref(),
                    &format!("rds:{instance}"),
                    "open RPO breach record",
                    &e,
                    now,
                )
                .await?;
                rec.notes.push(note);
                rec.alerts.push(alert);
                continue;
            }
        };
        let (open, announce) =
            plan::breach_transition(prev.as_ref(), &reasons, now, cfg.rpo_minutes);
        let resource = format!("rds:{instance}");
        let key = format!("backup-rpo#{instance}");
        match &open {
            Some(o) => {
                deps.ledger
                    .put(
                        &pk,
                        "open",
                        &json!(o),
                        Some((now + Duration::days(30)).timestamp()),
                    )
                    .await?;
                rec.notes.push(format!(
                    "{resource}: {} breach since {} ({})",
                    o.severity,
                    o.since.to_rfc3339(),
                    o.reasons.join("; ")
                ));
            }
            None => {
                if prev.is_some() {
                    deps.ledger.delete(&pk, "open").await?;
                }
                rec.notes
                    .push(format!("{resource}: backups within the promises"));
            }
        }
        let published = match (announce, &open) {
            (Announce::Firing(sev), Some(o)) => Some(
                alert(
                    deps,
                    sev,
                    &resource,
                    key,
                    format!(
                        "{instance}: backup/RPO breach{}: {}",
                        if sev == Severity::P1 {
                            format!(" for over {} min", cfg.rpo_minutes)
                        } else {
                            String::new()
                        },
                        o.reasons.join("; ")
                    ),
                    now,
                )
                .with_details(json!({"since": o.since, "reasons": o.reasons, "rpo_minutes": cfg.rpo_minutes}))
                .with_runbook("Check automated backups (retention, backup window), the instance's WAL archiving (pg_stat_archiver) and RDS events; restore points older than the RPO mean data loss on failure."),
            ),
            (Announce::Resolved, _) => {
                let mut a = alert(
                    deps,
                    prev.as_ref().map(|p| p.severity).unwrap_or(Severity::P2),
                    &resource,
                    key,
                    format!("{instance}: backups back within the RPO"),
                    now,
                )
                .with_details(json!({"since": prev.as_ref().map(|p| p.since)}));
                a.status = AlertStatus::Resolved;
                Some(a)
            }
            _ => None,
        };
        if let Some(a) = published {
            deps.alerts().publish(&a).await?;
            rec.alerts.push(a);
        }
    }
    // The 5-minute tick also drives a restore drill in progress (no waiting inside one Lambda).
    for instance in &cfg.instances {
        if !budget.admit(format!("restore drill of rds:{instance}")) {
            continue;
        }
        crate::drill::advance_in_progress(instance, &tick.event_id, now, inv, deps, x, &mut rec)
            .await?;
    }
    rec.notes.extend(budget.report());
    Ok(rec)
}

async fn observe(
    instance: &str,
    now: DateTime<Utc>,
    deps: &Deps,
    x: &BackupGuard,
    rec: &mut RecordReport,
) -> Result<BackupObservation> {
    let described = x.rds.describe_instance(instance).await?;
    if described.is_none() {
        return Ok(BackupObservation {
            instance: None,
            latest_automated: None,
            wal_problem: None,
        });
    }
    let automated = x
        .rds
        .list_snapshots(Site::Primary, instance, SnapshotKind::Automated)
        .await?;
    let latest_automated = automated
        .iter()
        .filter(|s| s.is_available())
        .filter_map(|s| s.created)
        .max();
    let wal_problem = match x.backup.wal_databases.get(instance) {
        Some(name) => archiver(name, now, deps, x, rec).await,
        None => None,
    };
    Ok(BackupObservation {
        instance: described,
        latest_automated,
        wal_problem,
    })
}

/// pg_stat_archiver where the database is reachable; unreachable is noted, not a breach
/// (pg-health reports an unreachable database).
async fn archiver(
    name: &str,
    now: DateTime<Utc>,
    deps: &Deps,
    x: &BackupGuard,
    rec: &mut RecordReport,
) -> Option<String> {
    let Some(target) = x.pg.databases.iter().find(|t| t.name == name) else {
        rec.notes.push(format!(
            "WAL: '{name}' is not in pg.databases: archiving not checked"
        ));
        return None;
    };
    let setup = sql::session_setup(
        "nbaops-backup-guard",
        x.pg.statement_timeout_ms,
        x.pg.lock_timeout_ms,
        true,
    );
    let env = deps.cfg.env.to_string();
    let opened = sql::open_session(
        &x.pg,
        &env,
        target,
        "monitor",
        deps.params.as_deref(),
        x.connector.as_ref(),
        &setup,
    )
    .await;
    let rows = match opened {
        Ok(pg) => pg.query(sql::ARCHIVER).await,
        Err(e) => Err(e),
    };
    match rows.map(|r| r.into_iter().next()) {
        Ok(Some(row)) => {
            let problem = plan::archiver_problem(&row, now, x.backup.max_archive_age_minutes);
            rec.notes.push(format!(
                "WAL {name}: {}",
                problem.as_deref().unwrap_or("archiving healthy")
            ));
            problem
        }
        Ok(None) => {
            rec.notes
                .push(format!("WAL {name}: pg_stat_archiver returned no row"));
            None
        }
        Err(e) => {
            rec.notes.push(format!(
                "WAL {name}: not reachable, archiving not checked: {e}"
            ));
            None
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;
    pub use nbaops_shared::fakes::{leak, Shared};
    use std::collections::BTreeMap;

    use chrono::TimeZone;
    use nbaops_shared::config::{layer, Config, Env};
    use nbaops_shared::fakes::{fake_snapshot, FakeLedger, FakeNotifier, FakeRdsBackups};
    use nbaops_shared::guard::Switches;
    use nbaops_shared::ports::*;

    type Answers = Vec<(String, std::result::Result<Vec<Value>, String>)>;

    /// A connector whose sessions answer from a table of (SQL prefix -> rows or error).
    #[derive(Default)]
    pub struct FakePg {
        pub answers: std::sync::Mutex<Answers>,
        pub refuse: std::sync::Mutex<bool>,
        pub urls: std::sync::Mutex<Vec<String>>,
    }

    impl FakePg {
        pub fn answer(&self, prefix: &str, rows: std::result::Result<Vec<Value>, String>) {
            self.answers.lock().unwrap().push((prefix.into(), rows));
        }
    }

    struct FakeSession(Answers);

    #[async_trait::async_trait]
    impl Postgres for FakeSession {
        async fn query(&self, q: &str) -> Result<Vec<serde_json::Map<String, Value>>> {
            for (prefix, rows) in &self.0 {
                if q.starts_with(prefix.as_str()) {
                    return match rows {
                        Ok(r) => Ok(r.iter().filter_map(|v| v.as_object().cloned()).collect()),
                        Err(e) => Err(nbaops_shared::NbaopsError::dependency(
                            "postgres",
                            e.clone(),
                        )),
                    };
                }
            }
            Err(nbaops_shared::NbaopsError::dependency(
                "postgres",
                format!("unexpected query {q}"),
            ))
        }
        async fn execute(&self, _: &str) -> Result<u64> {
            Ok(0)
        }
    }

    #[async_trait::async_trait]
    impl PgConnector for FakePg {
        async fn connect(&self, url: &str, _password: Option<&str>) -> Result<Box<dyn Postgres>> {
            self.urls.lock().unwrap().push(url.to_string());
            if *self.refuse.lock().unwrap() {
                return Err(nbaops_shared::NbaopsError::dependency(
                    "postgres",
                    "connection refused",
                ));
            }
            Ok(Box::new(FakeSession(self.answers.lock().unwrap().clone())))
        }
    }

    pub struct World {
        pub deps: Deps,
        pub x: BackupGuard,
        pub rds: &'static FakeRdsBackups,
        pub notifier: &'static FakeNotifier,
        pub pg: &'static FakePg,
    }

    pub fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
    }

    pub fn world(extra: &[(&str, &str)]) -> World {
        let mut pairs = vec![
            ("NBAOPS_BACKUP__INSTANCES", "db"),
            ("NBAOPS_BACKUP__DR_REGION", "us-west-2"),
            (
                "NBAOPS_ALERTS_TOPIC_ARN",
                "arn:aws:sns:us-east-1:123456789012:alerts",
            ),
        ];
        pairs.extend_from_slice(extra);
        let vars: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let s = layer(Env::Dev, &vars, &BTreeMap::new()).unwrap();
        let backup = nbaops_shared::config::backup::from_settings(&s).unwrap();
        let pgc = nbaops_shared::config::pg::from_settings(&s).unwrap();
        let cfg = Config::from_settings(Env::Dev, FUNCTION, s).unwrap();
        let rds = leak(
            FakeRdsBackups::new("us-west-2", t0()).with_instance(InstanceBackup {
                id: "db".into(),
                arn: Some("arn:aws:rds:us-east-1:123456789012:db:db".into()),
                status: "available".into(),
                engine: "postgres".into(),
                backup_retention_days: 7,
                latest_restorable_time: Some(t0() - Duration::minutes(3)),
                endpoint: Some(("db.rds".into(), 5432)),
                tags: Tags::new(),
            }),
        );
        rds.add_snapshot(
            Site::Primary,
            fake_snapshot(
                "rds:db-auto",
                "db",
                SnapshotKind::Automated,
                t0() - Duration::hours(5),
            ),
        );
        let notifier = leak(FakeNotifier::default());
        let pg = leak(FakePg::default());
        World {
            deps: Deps {
                cfg,
                asg: Box::new(nbaops_shared::fakes::FakeAutoScaling::default()),
                rds: Box::new(nbaops_shared::fakes::FakeRds::default()),
                cache: Box::new(nbaops_shared::fakes::FakeElastiCache::default()),
                notifier: Box::new(Shared(notifier)),
                params: None,
                ledger: Box::new(FakeLedger::default()),
                switches: Switches::default(),
            },
            x: BackupGuard {
                backup,
                pg: pgc,
                rds: Box::new(Shared(rds)),
                connector: Box::new(Shared(pg)),
            },
            rds,
            notifier,
            pg,
        }
    }

    pub async fn tick(w: &World, task: &str, at: DateTime<Utc>, id: &str) -> InvocationReport {
        let inv = Invocation {
            request_id: format!("req-{id}"),
            now: at,
            deadline: None,
        };
        handle_ref(
            json!({"nbaops": {"task": task, "id": id, "at": at.to_rfc3339()}}),
            &inv,
            &w.deps,
            &w.x,
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn rpo_breach_p2_then_p1_then_resolved() {
        let w = world(&[]);
        let r = tick(&w, RPO_TASK, t0(), "a").await;
        assert!(r.records[0].alerts.is_empty(), "{:?}", r.records[0]);
        // 20 minutes later the restore point has not moved: P2.
        let r = tick(&w, RPO_TASK, t0() + Duration::minutes(20), "b").await;
        assert_eq!(r.records[0].alerts.len(), 1);
        assert_eq!(r.records[0].alerts[0].severity, Severity::P2);
        // Still breached 10 minutes on: nothing new.
        let r = tick(&w, RPO_TASK, t0() + Duration::minutes(30), "c").await;
        assert!(r.records[0].alerts.is_empty());
        // Over 15 minutes in breach: P1.
        let r = tick(&w, RPO_TASK, t0() + Duration::minutes(36), "d").await;
        assert_eq!(r.records[0].alerts[0].severity, Severity::P1);
        // The restore point catches up: resolved.
        w.rds
            .instances
            .lock()
            .unwrap()
            .get_mut("db")
            .unwrap()
            .latest_restorable_time = Some(t0() + Duration::minutes(40));
        let r = tick(&w, RPO_TASK, t0() + Duration::minutes(41), "e").await;
        assert_eq!(r.records[0].alerts[0].status, AlertStatus::Resolved);
        assert_eq!(w.notifier.published().len(), 3);
        assert!(
            w.rds.mutations().is_empty(),
            "the RPO check never changes anything"
        );
    }

    #[tokio::test]
    async fn archiver_failure_is_a_breach_and_unreachable_is_only_noted() {
        let w = world(&[
            ("NBAOPS_PG__DATABASES", "app=postgres://mon@db.rds:5432/app"),
            ("NBAOPS_BACKUP__WAL__DATABASES", "db=app"),
        ]);
        let t = |m: i64| (t0() - Duration::minutes(m)).to_rfc3339();
        w.pg.answer(
            "SELECT current_setting('archive_mode')",
            Ok(vec![json!({"archive_mode": "on", "failed_count": 4, "last_failed_time": t(1), "last_archived_time": t(9), "last_failed_wal": "000000010000000000000003"})]),
        );
        let r = tick(&w, RPO_TASK, t0(), "a").await;
        let a = &r.records[0].alerts[0];
        assert_eq!(a.severity, Severity::P2);
        assert!(
            a.summary.contains("WAL archiving is failing"),
            "{}",
            a.summary
        );

        let w = world(&[
            ("NBAOPS_PG__DATABASES", "app=postgres://mon@db.rds:5432/app"),
            ("NBAOPS_BACKUP__WAL__DATABASES", "db=app"),
        ]);
        *w.pg.refuse.lock().unwrap() = true;
        let r = tick(&w, RPO_TASK, t0(), "a").await;
        assert!(r.records[0].alerts.is_empty());
        assert!(
            r.records[0]
                .notes
                .iter()
                .any(|n| n.contains("not reachable")),
            "{:?}",
            r.records[0].notes
        );
    }

    #[tokio::test]
    async fn unknown_task_and_foreign_events_are_not_for_me() {
        let w = world(&[]);
        let r = tick(&w, "offhours", t0(), "a").await;
        assert!(r.records[0].not_for_me.is_some());
        let inv = Invocation {
            request_id: "r".into(),
            now: t0(),
            deadline: None,
        };
        let ev: Value = serde_json::from_str(include_str!(
            "../../../events/rds/eventbridge-failover-started.json"
        ))
        .unwrap();
        let r = handle_ref(ev, &inv, &w.deps, &w.x).await.unwrap();
        assert!(r.records[0].not_for_me.is_some());
        // A restore event about a drill instance nobody started: noted, nothing done.
        let ev: Value = serde_json::from_str(include_str!(
            "../../../events/rds/eventbridge-drill-restored.json"
        ))
        .unwrap();
        let r = handle_ref(ev, &inv, &w.deps, &w.x).await.unwrap();
        assert!(r.records[0]
            .not_for_me
            .as_deref()
            .is_some_and(|n| n.contains("no drill in progress")));
        assert!(w.rds.mutations().is_empty());
    }

    mod properties {
        use super::*;
        use nbaops_shared::events::arbitrary;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(arbitrary::config(48))]

            /// Arbitrary JSON and damaged fixtures: never a panic; what nothing understands is
            /// refused with no snapshot, copy, restore or delete, no session and no alert.
            #[test]
            fn any_payload_is_answered_and_only_an_understood_event_acts(payload in arbitrary::payload()) {
                let w = world(&[]);
                let understood = arbitrary::understood(&payload);
                let inv = Invocation { request_id: "prop".into(), now: t0(), deadline: None };
                let res = arbitrary::block_on(handle_ref(payload, &inv, &w.deps, &w.x));
                if !understood {
                    arbitrary::refused_cleanly(&res)?;
                    prop_assert!(w.rds.mutations().is_empty());
                    prop_assert!(w.pg.urls.lock().unwrap().is_empty());
                    prop_assert!(w.notifier.published().is_empty());
                }
            }
        }
    }
}

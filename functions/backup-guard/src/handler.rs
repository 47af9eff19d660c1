//! backup-guard's dispatcher: which inbound goes where. Scheduler ticks carry three tasks:
//! `backup-rpo-check` (every 5 min: [`crate::rpo`], and it moves a restore drill in progress on),
//! `backup-monthly` (daily: [`crate::monthly`], the month's snapshot once, DR copies, retention)
//! and `backup-restore-drill` (quarterly or on demand: [`crate::drill`]); RDS events about a
//! drill's temporary instance move that drill on. The drill's start is disruptive (a new
//! instance): outside the change window it asks a person (`approval.rds.restore_drill`), and the
//! `approved` task ([`nbaops_shared::runtime::approved`]) carries the approved start out through
//! [`Function::live`] / [`Function::apply`] (`crate::drill`). A task runs on the tick's `at` (its alerts,
//! audit records and cooldowns), so a test (or an operator replaying a day) can move time.
//!
//! Ledger items: `backuprpo#<instance>/open` (a breach being tracked), `backupcopy#<instance>/
//! <snapshot>` (DR copies: state, attempts, last error), `backupdrill#<instance>/current` (the
//! drill in progress) and `backupdrill#<instance>/done#<start>` (the drill record: RTO, checks).

use chrono::{DateTime, Utc};

use nbaops_shared::adapters::{
    AwsClients, SdkAutoScaling, SdkBackupStore, SdkRdsBackups, TokioPgConnector,
};
use nbaops_shared::config::backup::{BackupConfig, S3Backups};
use nbaops_shared::config::pg::PgConfig;
use nbaops_shared::deadline::{Budget, MARGIN, ONE_AWS_ACTION};
use nbaops_shared::events::{Inbound, RdsEvent, ScheduledTick};
use nbaops_shared::fleet::Origin;
use nbaops_shared::guard::ProposedAction;
use nbaops_shared::ports::{BackupStore, DrillGroups, PgConnector, RdsBackups};
use nbaops_shared::runtime::fanout::{self, Target};
use nbaops_shared::runtime::{
    Ctx, Deps, Function, Invocation, InvocationReport, Live, RecordReport, Work,
};
use nbaops_shared::Result;

use crate::plan::DRILL_PREFIX;
use crate::s3kinds::S3_TASK;

pub const FUNCTION: &str = "backup-guard";
pub const RPO_TASK: &str = "backup-rpo-check";
pub const MONTHLY_TASK: &str = "backup-monthly";
pub const DRILL_TASK: &str = "backup-restore-drill";

/// The function: its config sections and the ports it calls, built once at init.
pub struct BackupGuard {
    pub backup: BackupConfig,
    pub pg: PgConfig,
    pub rds: Box<dyn RdsBackups>,
    pub connector: Box<dyn PgConnector>,
    /// The full-system drill's smoke-test group (issue #22).
    pub groups: Box<dyn DrillGroups>,
    /// The S3 backup kinds (issue #22, `backup-s3-check`): `backup.s3.*` and the bucket.
    pub s3: S3Backups,
    pub store: Box<dyn BackupStore>,
}

impl Function for BackupGuard {
    const NAME: &'static str = FUNCTION;
    const TAKES: &'static str = "its Scheduler tasks and RDS events of its drill instances";
    type Reply = InvocationReport;

    async fn init(deps: &Deps, aws: &AwsClients) -> Result<Self> {
        let backup = nbaops_shared::config::backup::from_settings(&deps.cfg.settings)?;
        let pg = nbaops_shared::config::pg::from_settings(&deps.cfg.settings)?;
        // The DR region gets its own client from the same SDK config (endpoint, credentials).
        let rds = SdkRdsBackups::new(aws.rds(), &backup.dr_region);
        Ok(BackupGuard {
            backup,
            pg,
            rds: Box::new(rds),
            connector: Box::new(TokioPgConnector::from_settings(&deps.cfg.settings)?),
            groups: Box::new(SdkAutoScaling(aws.autoscaling())),
            s3: nbaops_shared::config::backup::s3_from_settings(&deps.cfg.settings)?,
            store: Box::new(SdkBackupStore(aws.s3())),
        })
    }

    async fn on(&self, inbound: Inbound, ctx: &Ctx<'_>) -> Result<RecordReport> {
        match inbound {
            Inbound::Schedule(tick) => {
                // The same context (fleet, origin) on the tick's clock.
                let inv = on_clock(ctx.inv, tick.at);
                let ctx = ctx.with_inv(&inv);
                match tick.task().as_deref() {
                    Some(RPO_TASK) => self.on_rpo_tick(&tick, &ctx).await,
                    Some(MONTHLY_TASK) => self.monthly(&tick, &ctx).await,
                    Some(DRILL_TASK) => self.drill(&tick, &ctx).await,
                    Some(S3_TASK) => self.s3_check(&tick, &ctx).await,
                    other => Ok(RecordReport::not_for_me(
                        &tick.event_id,
                        "schedule",
                        format!(
                            "task {:?}: {FUNCTION} runs '{RPO_TASK}', '{MONTHLY_TASK}', '{DRILL_TASK}' and '{S3_TASK}'",
                            other.unwrap_or_default()
                        ),
                    )),
                }
            }
            Inbound::Rds(ev) if ev.source_id.starts_with(DRILL_PREFIX) => {
                self.on_drill_event(&ev, ctx).await
            }
            other => Ok(ctx.not_mine(&other)),
        }
    }

    /// The RPO check fans out (issue #20): one work item per instance of `backup.instances` in
    /// every origin watched, the hub's and each fleet member's account and region. A member's
    /// target is named `<instance>@<account>/<region>` (as the guard qualifies a member's
    /// resources), so its work item, its dead-letter P2 (`work-dlq#backup-guard#<target>`) and
    /// the hub's instance of the same name are never one.
    async fn targets(&self, work: &str, ctx: &Ctx<'_>) -> Result<Option<Vec<Target>>> {
        if work != RPO_TASK {
            return Ok(None);
        }
        let hub = fanout::hub_of(ctx);
        Ok(Some(
            fanout::origins(ctx)
                .iter()
                .flat_map(|o| {
                    let hub = &hub;
                    self.backup.instances.iter().map(move |i| {
                        let name = if o == hub {
                            i.clone()
                        } else {
                            format!("{i}{}", at_origin(Some(o)))
                        };
                        Target::in_origin(name, o, hub)
                    })
                })
                .collect(),
        ))
    }

    /// An approved restore drill start (issue #19): see [`BackupGuard::restore_live`].
    async fn live(&self, a: &ProposedAction, ctx: &Ctx<'_>) -> Result<Live> {
        self.restore_live(a, ctx).await
    }

    /// The approved drill start: the restore and the drill record ([`BackupGuard::restore_apply`]).
    async fn apply(&self, a: &ProposedAction, ctx: &Ctx<'_>) -> Result<()> {
        self.restore_apply(a, ctx).await
    }
}

/// The invocation as a task sees it: on `now` (a tick's `at`, an event's time), same request
/// and deadline.
fn on_clock(inv: &Invocation, now: DateTime<Utc>) -> Invocation {
    Invocation { now, ..inv.clone() }
}

/// `@<account>/<region>` for a fleet member's origin (the guard's qualification of a member's
/// resources), empty for the hub's.
pub(crate) fn at_origin(origin: Option<&Origin>) -> String {
    origin
        .map(|o| format!("@{}/{}", o.account, o.region))
        .unwrap_or_default()
}

/// A fresh guard for one step of a task (a month's snapshot, its DR copies, the retention sweep,
/// a drill's restore or delete): each step counts its own blast radius over its own fleet.
pub(crate) fn guard_step(w: &mut Work<'_>, fleet_size: usize) {
    w.guard = w.ctx.guard(&w.rec.event_id).with_fleet_size(fleet_size);
}

impl BackupGuard {
    /// Every instance, or a work item's `target` only (its instance, the origin's qualification
    /// `@<account>/<region>` taken off). An RDS read that fails is the tick's error: a work item
    /// fails its message, for SQS to deliver it again (then the dead-letter queue and its P2).
    async fn on_rpo_tick(&self, tick: &ScheduledTick, ctx: &Ctx<'_>) -> Result<RecordReport> {
        let only = tick.param("target").map(|t| {
            let at = at_origin(ctx.origin);
            match t.strip_suffix(&at) {
                Some(i) if !at.is_empty() => i.to_string(),
                _ => t,
            }
        });
        let instances: Vec<String> = match &only {
            None => self.backup.instances.clone(),
            Some(i) => self
                .backup
                .instances
                .iter()
                .filter(|x| *x == i)
                .cloned()
                .collect(),
        };
        let mut w = ctx.work(
            &tick.event_id,
            "schedule",
            format!("RPO check of {} instance(s)", instances.len()),
        );
        if let (Some(i), true) = (&only, instances.is_empty()) {
            w.rec.summary = format!("RPO check of rds:{i}{}: not watched", at_origin(ctx.origin));
            w.note(format!(
                "'{i}' is not in backup.instances: nothing checked, nothing done"
            ));
            return Ok(w.rec);
        }
        let mut budget = Budget::new(ctx.inv, MARGIN, ONE_AWS_ACTION);
        self.check_rpo(&instances, &mut w, &mut budget).await?;
        // The 5-minute tick also drives a restore drill in progress (no waiting inside one Lambda).
        // Drills are the hub's only (their records are not qualified by origin): a member's item
        // never moves the hub's drill of an instance of the same name with the member's clients.
        if ctx.origin.is_none() {
            self.advance_drills(&instances, &mut w, &mut budget).await?;
        } else {
            w.note("restore drills run in the hub only: none advanced here");
        }
        w.rec.notes.extend(budget.report());
        Ok(w.rec)
    }

    async fn on_drill_event(&self, ev: &RdsEvent, ctx: &Ctx<'_>) -> Result<RecordReport> {
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
        let inv = on_clock(ctx.inv, ctx.now().max(ev.at));
        let ctx = ctx.with_inv(&inv);
        self.advance_drill_on(&ev.source_id, &ev.event_id, &ctx)
            .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;
    pub use nbaops_shared::fakes::{leak, Shared};

    use chrono::{Duration, TimeZone};
    use nbaops_shared::alerts::{AlertStatus, Severity};
    use nbaops_shared::fakes::{
        fake_snapshot, test_deps, FakeBackupStore, FakeNotifier, FakeRdsBackups,
    };
    use nbaops_shared::guard::Outcome;
    use nbaops_shared::ports::*;
    use nbaops_shared::runtime::dispatch;
    use serde_json::{json, Value};

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
        pub deps: &'static Deps,
        pub f: BackupGuard,
        pub rds: &'static FakeRdsBackups,
        pub notifier: &'static FakeNotifier,
        pub pg: &'static FakePg,
        pub groups: &'static nbaops_shared::fakes::FakeDrillGroups,
        pub store: &'static FakeBackupStore,
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
        let t = test_deps(FUNCTION, &pairs).unwrap();
        let settings = &t.deps.cfg.settings;
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
        let pg = leak(FakePg::default());
        let groups = leak(nbaops_shared::fakes::FakeDrillGroups::default());
        let store = leak(FakeBackupStore::default());
        World {
            deps: t.deps,
            f: BackupGuard {
                backup: nbaops_shared::config::backup::from_settings(settings).unwrap(),
                pg: nbaops_shared::config::pg::from_settings(settings).unwrap(),
                rds: Box::new(Shared(rds)),
                connector: Box::new(Shared(pg)),
                groups: Box::new(Shared(groups)),
                s3: nbaops_shared::config::backup::s3_from_settings(settings).unwrap(),
                store: Box::new(Shared(store)),
            },
            rds,
            notifier: t.notifier,
            pg,
            groups,
            store,
        }
    }

    /// The payload through the dispatcher, as the runtime hands it over.
    pub async fn handle(w: &World, payload: Value, inv: &Invocation) -> Result<InvocationReport> {
        dispatch(&w.f, payload, &Ctx::of::<BackupGuard>(w.deps, inv)).await
    }

    pub async fn tick(w: &World, task: &str, at: DateTime<Utc>, id: &str) -> InvocationReport {
        let inv = Invocation::at(&format!("req-{id}"), at);
        handle(
            w,
            json!({"nbaops": {"task": task, "id": id, "at": at.to_rfc3339()}}),
            &inv,
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

    const DR_ON: (&str, &str) = ("NBAOPS_BACKUP__DR_REPLICATION__ENABLED", "true");
    const DB_ARN: &str = "arn:aws:rds:us-east-1:123456789012:db:db";

    fn set_dr(w: &World, status: &str, latest: Option<DateTime<Utc>>) {
        *w.rds.replicated.lock().unwrap() = vec![ReplicatedBackup {
            source_arn: DB_ARN.into(),
            instance_id: "db".into(),
            status: status.into(),
            latest_restorable_time: latest,
            arn: None,
        }];
    }

    fn starts(w: &World) -> Vec<String> {
        w.rds
            .mutations()
            .into_iter()
            .filter(|m| m.starts_with("start_replication"))
            .collect()
    }

    /// Issue #22 on the fake (moto has no StartDBInstanceAutomatedBackupsReplication): not
    /// replicated -> started through the guard (audited, no breach); starting -> nothing; the
    /// DR region's LatestTime past the RPO -> P1 at once; caught up -> resolved.
    #[tokio::test]
    async fn dr_replication_is_started_then_its_recovery_point_held_to_the_rpo() {
        let w = world(&[
            DR_ON,
            (
                "NBAOPS_BACKUP__DR_REPLICATION__KMS_KEY_ID",
                "arn:aws:kms:us-west-2:123456789012:key/dr",
            ),
        ]);
        let r = tick(&w, RPO_TASK, t0(), "a").await;
        let rec = &r.records[0];
        assert_eq!(
            starts(&w),
            vec![format!("start_replication {DB_ARN} retention=7 kms=arn:aws:kms:us-west-2:123456789012:key/dr")]
        );
        let a = &rec.actions[0];
        assert_eq!(
            (a.action.as_str(), a.outcome),
            ("rds.backup.replicate", Outcome::Acted)
        );
        assert!(rec.alerts.is_empty(), "started: no breach {:?}", rec.alerts);
        // Pending: nothing to start again, nothing to hold to the RPO yet.
        let r = tick(&w, RPO_TASK, t0() + Duration::minutes(5), "b").await;
        assert!(r.records[0].actions.is_empty() && r.records[0].alerts.is_empty());
        assert!(
            r.records[0]
                .notes
                .iter()
                .any(|n| n.contains("replication is starting")),
            "{:?}",
            r.records[0].notes
        );
        assert_eq!(starts(&w).len(), 1);
        // Replicating, the DR point 2 min old: fine.
        set_dr(&w, "replicating", Some(t0() + Duration::minutes(8)));
        w.rds
            .instances
            .lock()
            .unwrap()
            .get_mut("db")
            .unwrap()
            .latest_restorable_time = Some(t0() + Duration::minutes(9));
        let r = tick(&w, RPO_TASK, t0() + Duration::minutes(10), "c").await;
        assert!(r.records[0].alerts.is_empty(), "{:?}", r.records[0].alerts);
        // 20 minutes on, the primary's point moved but the DR region's did not: P1 at once.
        w.rds
            .instances
            .lock()
            .unwrap()
            .get_mut("db")
            .unwrap()
            .latest_restorable_time = Some(t0() + Duration::minutes(28));
        let r = tick(&w, RPO_TASK, t0() + Duration::minutes(30), "d").await;
        let a = &r.records[0].alerts[0];
        assert_eq!(a.severity, Severity::P1, "{a:?}");
        assert!(
            a.summary.contains("DR region us-west-2: LatestTime")
                && a.summary.contains("22 min behind"),
            "{}",
            a.summary
        );
        // Still behind: said once.
        let r = tick(&w, RPO_TASK, t0() + Duration::minutes(31), "e").await;
        assert!(r.records[0].alerts.is_empty());
        // Caught up: resolved.
        set_dr(&w, "replicating", Some(t0() + Duration::minutes(33)));
        let r = tick(&w, RPO_TASK, t0() + Duration::minutes(35), "f").await;
        assert_eq!(r.records[0].alerts[0].status, AlertStatus::Resolved);
        assert_eq!(starts(&w).len(), 1, "replicating: never started again");
    }

    #[tokio::test]
    async fn dr_replication_not_started_is_a_p2_dry_run_protected_failed_or_stopped() {
        // Dry-run: audited as would-act, nothing started, the breach says it is missing.
        let w = world(&[DR_ON, ("NBAOPS_GUARD__DRY_RUN", "true")]);
        let r = tick(&w, RPO_TASK, t0(), "a").await;
        let rec = &r.records[0];
        assert_eq!(rec.actions[0].outcome, Outcome::WouldAct);
        assert!(starts(&w).is_empty());
        assert_eq!(rec.alerts[0].severity, Severity::P2);
        assert!(
            rec.alerts[0]
                .summary
                .contains("not replicated to DR region us-west-2"),
            "{}",
            rec.alerts[0].summary
        );

        // The protected tag: stopped by the guard, never started.
        let w = world(&[DR_ON]);
        w.rds
            .instances
            .lock()
            .unwrap()
            .get_mut("db")
            .unwrap()
            .tags
            .insert("nbaops:protect".into(), "true".into());
        let r = tick(&w, RPO_TASK, t0(), "a").await;
        assert_eq!(r.records[0].actions[0].outcome, Outcome::Skipped);
        assert!(starts(&w).is_empty());
        assert!(r.records[0].alerts[0].summary.contains("not replicated"));

        // RDS refuses the start: failed, audited, P2.
        let w = world(&[DR_ON]);
        *w.rds.fail_starts.lock().unwrap() = 1;
        let r = tick(&w, RPO_TASK, t0(), "a").await;
        let a = &r.records[0].actions[0];
        assert_eq!(a.outcome, Outcome::Failed);
        assert!(a
            .error
            .as_deref()
            .unwrap()
            .contains("KMSKeyNotAccessibleFault"));
        assert!(r.records[0].alerts[0].summary.contains("not replicated"));

        // Replication stopped (only a retained backup left): started again.
        let w = world(&[DR_ON]);
        set_dr(&w, "retained", Some(t0() - Duration::days(3)));
        tick(&w, RPO_TASK, t0(), "a").await;
        assert_eq!(starts(&w).len(), 1);

        // The key off (the default): the DR region is never read, nothing started.
        let w = world(&[]);
        let r = tick(&w, RPO_TASK, t0(), "a").await;
        assert!(r.records[0].actions.is_empty() && starts(&w).is_empty());
    }

    #[tokio::test]
    async fn an_unreadable_dr_region_is_named_and_never_resolves_a_breach() {
        let w = world(&[DR_ON]);
        set_dr(&w, "replicating", Some(t0() - Duration::minutes(40)));
        let r = tick(&w, RPO_TASK, t0(), "a").await;
        assert_eq!(r.records[0].alerts[0].severity, Severity::P1);
        // The DR region stops answering: the open breach stays open (no resolve), and says why.
        *w.rds.fail_replicated.lock().unwrap() = true;
        let r = tick(&w, RPO_TASK, t0() + Duration::minutes(5), "b").await;
        assert!(r.records[0].alerts.is_empty(), "{:?}", r.records[0].alerts);
        assert!(
            r.records[0].actions.is_empty(),
            "unreadable is never 'start it'"
        );
        assert!(
            r.records[0]
                .notes
                .iter()
                .any(|n| n.contains("unreadable") && n.contains("AccessDenied")),
            "{:?}",
            r.records[0].notes
        );
        let open = w
            .deps
            .ledger
            .get("backuprpo#db", "open")
            .await
            .unwrap()
            .unwrap();
        assert!(open.to_string().contains("unreadable"), "{open}");
        // Unreadable from the start: a P2 that names it.
        let w = world(&[DR_ON]);
        *w.rds.fail_replicated.lock().unwrap() = true;
        let r = tick(&w, RPO_TASK, t0(), "a").await;
        assert_eq!(r.records[0].alerts[0].severity, Severity::P2);
        assert!(r.records[0].alerts[0].summary.contains("unreadable"));
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
    async fn the_rpo_check_fans_out_one_item_per_instance_in_every_origin() {
        // The hub only: one target per instance, the hub's own; other tasks do not fan out.
        let w = world(&[("NBAOPS_BACKUP__INSTANCES", "db,db2")]);
        let inv = Invocation::at("r", t0());
        let ctx = Ctx::of::<BackupGuard>(w.deps, &inv);
        let t = w.f.targets(RPO_TASK, &ctx).await.unwrap().unwrap();
        assert_eq!(t, vec![Target::local("db"), Target::local("db2")]);
        assert!(w.f.targets(MONTHLY_TASK, &ctx).await.unwrap().is_none());
        assert!(w.f.targets(DRILL_TASK, &ctx).await.unwrap().is_none());

        // The hub and two members in two regions: every instance in every origin, a member's
        // named with its origin (as the guard qualifies a member's resources).
        let accounts = "222222222222=arn:aws:iam::222222222222:role/nbaops-member-dev,333333333333=arn:aws:iam::333333333333:role/nbaops-member-dev";
        let w = world(&[
            ("NBAOPS_BACKUP__INSTANCES", "db,db2"),
            ("NBAOPS_FLEET__ACCOUNTS", accounts),
            (
                "NBAOPS_FLEET__REGIONS",
                "222222222222:us-west-2,333333333333:us-west-2,333333333333:eu-west-1",
            ),
        ]);
        let fleet = nbaops_shared::fakes::test_fleet(&w.deps.cfg).await;
        assert!(fleet.is_some());
        let ctx = Ctx::of::<BackupGuard>(w.deps, &inv).with_fleet(fleet);
        let t = w.f.targets(RPO_TASK, &ctx).await.unwrap().unwrap();
        let named: Vec<(String, Option<String>, Option<String>)> = t
            .iter()
            .map(|t| (t.name.clone(), t.account.clone(), t.region.clone()))
            .collect();
        let member = |i: &str, a: &str, r: &str| {
            (
                format!("{i}@{a}/{r}"),
                Some(a.to_string()),
                Some(r.to_string()),
            )
        };
        assert_eq!(
            named,
            vec![
                ("db".into(), None, None),
                ("db2".into(), None, None),
                member("db", "222222222222", "us-west-2"),
                member("db2", "222222222222", "us-west-2"),
                member("db", "333333333333", "eu-west-1"),
                member("db2", "333333333333", "eu-west-1"),
                member("db", "333333333333", "us-west-2"),
                member("db2", "333333333333", "us-west-2"),
            ]
        );
    }

    #[tokio::test]
    async fn a_work_item_checks_its_instance_only_and_a_failed_read_fails_its_message() {
        let w = world(&[("NBAOPS_BACKUP__INSTANCES", "db,db2,broken")]);
        w.rds.fail_describe.lock().unwrap().push("broken".into());
        let item = |id: &str, target: &str| {
            json!({"messageId": id, "eventSource": "aws:sqs", "attributes": {"ApproximateReceiveCount": "1"},
                   "body": json!({"nbaops": {"task": RPO_TASK, "target": target, "account": "123456789012",
                                  "region": "us-east-1", "dispatched_at": t0().to_rfc3339(), "at": t0().to_rfc3339()}}).to_string()})
        };
        let batch = json!({"Records": [item("m-db", "db"), item("m-broken", "broken"), item("m-gone", "gone")]});
        let r = handle(&w, batch, &Invocation::at("r", t0())).await.unwrap();
        let v = serde_json::to_value(&r).unwrap();
        // Only the instance whose read failed is failed, for SQS to deliver again.
        assert_eq!(
            v["batchItemFailures"],
            json!([{"itemIdentifier": "m-broken"}]),
            "{v}"
        );
        // Each item described its own instance only (db2 by none of them).
        assert_eq!(
            *w.rds.described.lock().unwrap(),
            vec!["db".to_string(), "broken".to_string()]
        );
        let summaries: Vec<&str> = r.records.iter().map(|x| x.summary.as_str()).collect();
        assert!(
            summaries.contains(&"RPO check of 1 instance(s)"),
            "{summaries:?}"
        );
        // A target not in backup.instances: said so, nothing checked, not failed.
        let gone = r
            .records
            .iter()
            .find(|x| x.summary == "RPO check of rds:gone: not watched")
            .unwrap();
        assert!(gone.failed.is_none());
        assert!(
            gone.notes[0].contains("'gone' is not in backup.instances"),
            "{gone:?}"
        );
        // The tick without a target still checks every instance (and fails on the broken one).
        w.rds.fail_describe.lock().unwrap().clear();
        w.rds.described.lock().unwrap().clear();
        tick(&w, RPO_TASK, t0(), "all").await;
        assert_eq!(
            *w.rds.described.lock().unwrap(),
            vec!["db".to_string(), "db2".to_string(), "broken".to_string()]
        );
    }

    #[tokio::test]
    async fn unknown_task_and_foreign_events_are_not_for_me() {
        let w = world(&[]);
        let r = tick(&w, "offhours", t0(), "a").await;
        assert!(r.records[0].not_for_me.is_some());
        let inv = Invocation::at("r", t0());
        let ev: Value = serde_json::from_str(include_str!(
            "../../../events/rds/eventbridge-failover-started.json"
        ))
        .unwrap();
        let r = handle(&w, ev, &inv).await.unwrap();
        assert!(r.records[0].not_for_me.is_some());
        // A restore event about a drill instance nobody started: noted, nothing done.
        let ev: Value = serde_json::from_str(include_str!(
            "../../../events/rds/eventbridge-drill-restored.json"
        ))
        .unwrap();
        let r = handle(&w, ev, &inv).await.unwrap();
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
                let inv = Invocation::at("prop", t0());
                let res = arbitrary::block_on(handle(&w, payload, &inv));
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

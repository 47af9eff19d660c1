//! Translates the `offhours` Scheduler tick and RDS-EVENT-0154 (RDS started an instance by
//! itself after 7 days stopped) into guarded stops and starts of the tagged resources.
//!
//! Resources are found by tag and gathered into sets (`inventory`); each set is run in order
//! and each resource brought to what its schedule says (`execution`, deciding with `plan` on
//! `schedule`'s transitions); what offhours remembers between runs is in `state`.
//!
//! Fanned out (issue #20): the schedule's `{"nbaops": {"task": "dispatch", "work": "offhours"}}`
//! enqueues one work item per origin (the hub's account and region, then each fleet member's),
//! target `<account>/<region>` ([`Function::targets`]); each item is the whole tick in that
//! origin. The tick itself (`{"nbaops": {"task": "offhours"}}`) still runs the hub's.

use std::str::FromStr;

use chrono::{DateTime, Utc};

use nbaops_shared::adapters::{AwsClients, SdkAutoScaling, SdkInventory, SdkRds, SdkRdsPower};
use nbaops_shared::config::offhours::{self, OffhoursConfig};
use nbaops_shared::config::Env;
use nbaops_shared::events::rds_catalog::{classify_rds_event, RdsEventKind};
use nbaops_shared::events::{Inbound, RdsEvent, RdsSourceType, ScheduledTick};
use nbaops_shared::guard::Outcome;
use nbaops_shared::ports::{AutoScaling, Inventory, Rds, RdsPower};
use nbaops_shared::runtime::fanout::{self, Target};
use nbaops_shared::runtime::{Ctx, Deps, Function, InvocationReport, RecordReport};
use nbaops_shared::Result;

use crate::inventory::discover;
use crate::state;

pub const FUNCTION: &str = "offhours";
/// Scheduler input `{"nbaops": {"task": "offhours", "at"?: "...", "env"?: "test"}}`.
pub const TASK: &str = "offhours";

/// The `offhours` section and the ports offhours calls, built once at init.
pub struct Offhours {
    pub cfg: OffhoursConfig,
    /// The tagged groups and instances.
    pub inventory: Box<dyn Inventory>,
    /// Stops and starts of RDS instances.
    pub power: Box<dyn RdsPower>,
    /// Group resizes (0/0/0 and back).
    pub asg: Box<dyn AutoScaling>,
    /// A database described again after its start.
    pub rds: Box<dyn Rds>,
}

impl Function for Offhours {
    const NAME: &'static str = FUNCTION;
    const TAKES: &'static str =
        "the 'offhours' schedule and RDS-EVENT-0154 (DB instance started after 7 days stopped)";
    type Reply = InvocationReport;

    /// The `offhours` section validated (prod refused unless allowed), the tag inventory, the
    /// group and RDS adapters.
    async fn init(deps: &Deps, aws: &AwsClients) -> Result<Self> {
        Ok(Offhours {
            cfg: offhours::from_settings(&deps.cfg.settings)?,
            inventory: Box::new(SdkInventory {
                asg: aws.autoscaling(),
                rds: aws.rds(),
            }),
            power: Box::new(SdkRdsPower(aws.rds())),
            asg: Box::new(SdkAutoScaling(aws.autoscaling())),
            rds: Box::new(SdkRds(aws.rds())),
        })
    }

    async fn on(&self, inbound: Inbound, ctx: &Ctx<'_>) -> Result<RecordReport> {
        match inbound {
            Inbound::Schedule(tick) if tick.task().as_deref() == Some(TASK) => {
                self.on_tick(&tick, ctx).await
            }
            Inbound::Rds(ev)
                if classify_rds_event(&ev).kind == RdsEventKind::AutoStartAfter7Days
                    && ev.source_type == RdsSourceType::Instance =>
            {
                self.on_auto_start(&ev, ctx).await
            }
            other => Ok(ctx.not_mine(&other)),
        }
    }

    /// The tick fans out per origin (issue #20), never per resource: one work item per account
    /// and region watched (the hub, then each fleet member's), named `<account>/<region>`. Each
    /// runs the whole tick there (records_of routes it to that origin's clients): the sets, their
    /// order and the blast radius stay one account's and region's.
    async fn targets(&self, work: &str, ctx: &Ctx<'_>) -> Result<Option<Vec<Target>>> {
        if work != TASK {
            return Ok(None);
        }
        let hub = fanout::hub_of(ctx);
        Ok(Some(
            fanout::origins(ctx)
                .iter()
                .map(|o| Target::in_origin(format!("{}/{}", o.account, o.region), o, &hub))
                .collect(),
        ))
    }
}

impl Offhours {
    async fn on_tick(&self, tick: &ScheduledTick, ctx: &Ctx<'_>) -> Result<RecordReport> {
        let env = tick.param("env");
        let Ok(only_env) = env.as_deref().map(Env::from_str).transpose() else {
            let reason = format!(
                "offhours tick for unknown environment '{}'",
                env.unwrap_or_default()
            );
            return Ok(RecordReport::not_for_me(&tick.event_id, "schedule", reason));
        };
        let mut w = ctx.work(&tick.event_id, "schedule", "");
        if let Some(a) = tick.param("action") {
            w.note(format!(
                "tick action '{a}' ignored: the schedules decide what each resource should be"
            ));
        }
        let found = discover(self.inventory.as_ref(), &self.cfg, only_env).await?;
        w.rec.notes.extend(found.left_alone);
        let in_view = found.sets.values().map(Vec::len).sum();
        let mut w = w.with_fleet_size(in_view);
        self.run_sets(&found.sets, tick.at, &mut w).await?;
        w.rec.summary = summary(&w.rec, in_view, tick.at);
        Ok(w.rec)
    }

    /// RDS started a stopped instance by itself: remember it, then bring its set back to its
    /// schedule (a database the schedule says is off is stopped again once available).
    async fn on_auto_start(&self, ev: &RdsEvent, ctx: &Ctx<'_>) -> Result<RecordReport> {
        let mut w = ctx.work(&ev.event_id, "rds", "");
        let resource = format!("rds:{}", ev.source_id);
        let found = discover(self.inventory.as_ref(), &self.cfg, None).await?;
        let set = found
            .sets
            .iter()
            .find(|(_, ms)| ms.iter().any(|m| m.resource == resource));
        let Some((key, members)) = set else {
            let about_it = found.left_alone.iter().filter(|n| n.starts_with(&resource));
            w.rec.notes.extend(about_it.cloned());
            w.rec.summary = format!(
                "{resource} started after 7 days stopped, but it is not scheduled by offhours: left running"
            );
            return Ok(w.rec);
        };
        let Some(mut state) = state::load(&mut w, &resource, ev.at).await? else {
            return Ok(w.rec);
        };
        state.auto_started_at = Some(ev.at);
        state::save(ctx.deps.ledger.as_ref(), ctx.origin, &resource, &state).await?;
        w.note(format!(
            "{resource}: RDS started it after 7 days stopped (RDS-EVENT-0154 at {})",
            ev.at.to_rfc3339()
        ));
        let mut w = w.with_fleet_size(members.len());
        self.run_sets([(key, members)], ev.at, &mut w).await?;
        w.rec.summary = format!(
            "{resource} auto-started after 7 days stopped; {}",
            summary(&w.rec, members.len(), ev.at)
        );
        Ok(w.rec)
    }
}

fn summary(rec: &RecordReport, in_view: usize, at: DateTime<Utc>) -> String {
    let acted = rec
        .actions
        .iter()
        .filter(|a| a.outcome == Outcome::Acted)
        .count();
    format!(
        "offhours at {}: {in_view} scheduled resource(s) in view, {acted} action(s) taken, {} alert(s)",
        at.format("%Y-%m-%d %H:%M UTC"),
        rec.alerts.len()
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use nbaops_shared::alerts::Severity;
    use nbaops_shared::fakes::*;
    use nbaops_shared::ports::*;
    use nbaops_shared::runtime::{dispatch, Invocation};
    use serde_json::{json, Value};

    const AUTO_START: &str =
        include_str!("../../../events/rds/eventbridge-auto-start-after-7-days.json");
    const ALARM: &str =
        include_str!("../../../events/cloudwatch-alarm/eventbridge-single-metric-alarm.json");
    const OFFICE: &str = r#"{"office":{"tz":"Europe/Paris","periods":[{"days":["mon","tue","wed","thu","fri"],"start":"08:00","stop":"19:00"}],"holidays":["2026-12-04"]}}"#;
    const WEB: &str = "nbaops-dev-web";
    const DB: &str = "nbaops-dev-db";

    /// Stops and starts the instances of the `FakeRds` the inventory lists, so what the next
    /// describe sees follows; a start lands on `starting` until the test makes it available.
    struct Power {
        rds: &'static FakeRds,
        log: std::sync::Mutex<Vec<String>>,
        start_lands_on: &'static str,
    }
    #[async_trait::async_trait]
    impl RdsPower for Power {
        async fn stop_instance(&self, id: &str) -> Result<()> {
            set_status(self.rds, id, "stopped");
            self.log.lock().unwrap().push(format!("stop {id}"));
            Ok(())
        }
        async fn start_instance(&self, id: &str) -> Result<()> {
            set_status(self.rds, id, self.start_lands_on);
            self.log.lock().unwrap().push(format!("start {id}"));
            Ok(())
        }
    }

    fn set_status(rds: &FakeRds, id: &str, status: &str) {
        rds.instances.lock().unwrap().get_mut(id).unwrap().status = status.into();
    }

    struct World {
        deps: &'static Deps,
        f: &'static Offhours,
        asg: &'static FakeAutoScaling,
        rds: &'static FakeRds,
        power: &'static Power,
        notifier: &'static FakeNotifier,
        ledger: &'static FakeLedger,
    }

    impl World {
        /// Every AWS mutation, in order: group resizes and database stops/starts.
        fn mutations(&self) -> Vec<String> {
            let mut m = self.asg.mutations();
            m.extend(self.power.log.lock().unwrap().clone());
            m
        }
        fn size(&self) -> (i32, i32, i32) {
            let g = self.asg.groups.lock().unwrap()[WEB].clone();
            (g.min_size, g.max_size, g.desired)
        }
        fn set_size(&self, min: i32, max: i32, desired: i32) {
            let mut all = self.asg.groups.lock().unwrap();
            let g = all.get_mut(WEB).unwrap();
            (g.min_size, g.max_size, g.desired) = (min, max, desired);
        }
        fn db(&self) -> String {
            self.rds.instances.lock().unwrap()[DB].status.clone()
        }
        fn alerts(&self) -> usize {
            self.notifier
                .published()
                .iter()
                .filter(|p| p.topic_arn.ends_with("alerts"))
                .count()
        }
    }

    fn tags(extra: &[(&str, &str)]) -> Tags {
        let mut t = Tags::new();
        t.insert("env".into(), "dev".into());
        t.insert("nbaops:schedule".into(), "office".into());
        for (k, v) in extra {
            t.insert(k.to_string(), v.to_string());
        }
        t
    }

    fn world_with(
        extra: &[(&str, &str)],
        group_tags: &[(&str, &str)],
        db_tags: &[(&str, &str)],
        start_lands_on: &'static str,
    ) -> World {
        let mut pairs = vec![
            (
                "NBAOPS_ALERTS_TOPIC_ARN",
                "arn:aws:sns:us-east-1:123456789012:nbaops-dev-alerts",
            ),
            ("NBAOPS_OFFHOURS__SCHEDULES", OFFICE),
            ("NBAOPS_OFFHOURS__COOLDOWN_SECONDS", "0"),
            ("NBAOPS_GUARD__BLAST__MAX_PERCENT", "100"),
        ];
        pairs.extend_from_slice(extra);
        let t = test_deps(FUNCTION, &pairs).unwrap();
        let asg = leak(FakeAutoScaling::with(vec![GroupState {
            name: WEB.into(),
            min_size: 1,
            max_size: 4,
            desired: 2,
            in_service: 2,
            tags: tags(group_tags),
            activity_in_progress: false,
        }]));
        let rds = leak(FakeRds::with(vec![DbInstanceState {
            id: DB.into(),
            arn: None,
            class: "db.t3.micro".into(),
            status: "available".into(),
            engine: "postgres".into(),
            multi_az: false,
            endpoint: None,
            pending_class: None,
            tags: tags(db_tags),
        }]));
        let power = leak(Power {
            rds,
            log: Default::default(),
            start_lands_on,
        });
        let f = leak(Offhours {
            cfg: offhours::from_settings(&t.deps.cfg.settings).unwrap(),
            inventory: Box::new(FakeInventory { asg, rds }),
            power: Box::new(PowerRef(power)),
            asg: Box::new(Shared(asg)),
            rds: Box::new(Shared(rds)),
        });
        World {
            deps: t.deps,
            f,
            asg,
            rds,
            power,
            notifier: t.notifier,
            ledger: t.ledger,
        }
    }

    struct PowerRef(&'static Power);
    #[async_trait::async_trait]
    impl RdsPower for PowerRef {
        async fn stop_instance(&self, id: &str) -> Result<()> {
            self.0.stop_instance(id).await
        }
        async fn start_instance(&self, id: &str) -> Result<()> {
            self.0.start_instance(id).await
        }
    }

    fn world(extra: &[(&str, &str)]) -> World {
        world_with(extra, &[], &[], "available")
    }

    fn utc(d: u32, h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, d, h, m, 0).unwrap()
    }

    async fn handle(w: &World, payload: Value, inv: Invocation) -> Result<InvocationReport> {
        dispatch(w.f, payload, &Ctx::of::<Offhours>(w.deps, &inv)).await
    }

    async fn run(w: &World, payload: Value, now: DateTime<Utc>) -> RecordReport {
        let mut r = handle(w, payload, Invocation::at("req", now))
            .await
            .unwrap();
        r.records.remove(0)
    }

    /// A Scheduler tick at `at` (December 2026, UTC).
    async fn tick(w: &World, d: u32, h: u32, m: u32) -> RecordReport {
        let at = utc(d, h, m);
        let payload = json!({"nbaops": {"task": "offhours", "at": at.to_rfc3339(), "id": format!("tick-{}", at.to_rfc3339())}});
        run(w, payload, at).await
    }

    fn actions(r: &RecordReport) -> Vec<(String, Outcome)> {
        r.actions
            .iter()
            .map(|a| (format!("{} {}", a.action, a.resource), a.outcome))
            .collect()
    }

    // Wednesday 2 December 2026: 19:00 Paris is 18:00 UTC; Thursday 08:00 Paris is 07:00 UTC;
    // Friday 4 December is a holiday in the schedule.

    #[tokio::test]
    async fn the_tick_fans_out_one_item_per_origin_never_per_resource() {
        use nbaops_shared::runtime::fanout::Target;
        // No fleet: one target, the hub's own account and region.
        let w = world(&[]);
        let inv = Invocation::at("r", utc(2, 18, 30));
        let ctx = Ctx::of::<Offhours>(w.deps, &inv);
        let t = w.f.targets(TASK, &ctx).await.unwrap().unwrap();
        assert_eq!(t, vec![Target::local("123456789012/us-east-1")]);
        assert!(w
            .f
            .targets("backup-rpo-check", &ctx)
            .await
            .unwrap()
            .is_none());
        // The hub and two members in two regions: one per account and region, a member's
        // carrying its account and region (the work item is routed there).
        let accounts = "222222222222=arn:aws:iam::222222222222:role/nbaops-member-dev,333333333333=arn:aws:iam::333333333333:role/nbaops-member-dev";
        let w = world(&[
            ("NBAOPS_FLEET__ACCOUNTS", accounts),
            (
                "NBAOPS_FLEET__REGIONS",
                "222222222222:us-west-2,333333333333:us-west-2,333333333333:eu-west-1",
            ),
        ]);
        let fleet = nbaops_shared::fakes::test_fleet(&w.deps.cfg).await;
        let ctx = Ctx::of::<Offhours>(w.deps, &inv).with_fleet(fleet);
        let t = w.f.targets(TASK, &ctx).await.unwrap().unwrap();
        let named: Vec<(&str, Option<&str>, Option<&str>)> = t
            .iter()
            .map(|t| (t.name.as_str(), t.account.as_deref(), t.region.as_deref()))
            .collect();
        assert_eq!(
            named,
            vec![
                ("123456789012/us-east-1", None, None),
                (
                    "222222222222/us-west-2",
                    Some("222222222222"),
                    Some("us-west-2")
                ),
                (
                    "333333333333/eu-west-1",
                    Some("333333333333"),
                    Some("eu-west-1")
                ),
                (
                    "333333333333/us-west-2",
                    Some("333333333333"),
                    Some("us-west-2")
                ),
            ]
        );
        // The hub's own work item is the tick: it acts on the hub's resources.
        let item = json!({"Records": [{"messageId": "m-hub", "eventSource": "aws:sqs",
            "attributes": {"ApproximateReceiveCount": "1"},
            "body": json!({"nbaops": {"task": TASK, "target": "123456789012/us-east-1",
                "account": "123456789012", "region": "us-east-1",
                "dispatched_at": "2026-12-02T18:30:00Z", "at": "2026-12-02T18:30:00Z"}}).to_string()}]});
        let r = dispatch(w.f, item, &ctx.with_fleet(fleet)).await.unwrap();
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["batchItemFailures"], json!([]), "{v}");
        assert_eq!(w.size(), (0, 0, 0), "{v}");
    }

    #[tokio::test]
    async fn stop_groups_then_db_start_db_then_groups_with_the_size_it_had() {
        let w = world(&[]);
        let r = tick(&w, 2, 17, 55).await;
        assert!(r.actions.is_empty(), "office hours: nothing to do {r:?}");
        assert!(w.mutations().is_empty());
        let r = tick(&w, 2, 18, 0).await;
        assert_eq!(
            actions(&r),
            vec![
                (
                    "asg.offhours_stop asg:nbaops-dev-web".into(),
                    Outcome::Acted
                ),
                ("rds.offhours_stop rds:nbaops-dev-db".into(), Outcome::Acted),
            ]
        );
        assert_eq!(
            w.mutations(),
            vec![
                "update_group_size nbaops-dev-web 0 0 0",
                "stop nbaops-dev-db"
            ]
        );
        // Later ticks of the same night change nothing.
        assert!(tick(&w, 2, 23, 0).await.actions.is_empty());
        // Thursday 07:00 UTC: the database first, and (available at once) the group after it.
        let r = tick(&w, 3, 7, 0).await;
        assert_eq!(
            actions(&r),
            vec![
                (
                    "rds.offhours_start rds:nbaops-dev-db".into(),
                    Outcome::Acted
                ),
                (
                    "asg.offhours_start asg:nbaops-dev-web".into(),
                    Outcome::Acted
                ),
            ]
        );
        assert_eq!(r.actions[1].before["databases"][0]["status"], "available");
        assert_eq!(w.size(), (1, 4, 2));
        // Resized while running: that is the size saved at the next stop and restored after.
        w.set_size(2, 6, 3);
        tick(&w, 3, 18, 0).await;
        assert_eq!(w.size(), (0, 0, 0));
        // Friday is a holiday: no start.
        assert!(tick(&w, 4, 7, 0).await.actions.is_empty());
        assert_eq!(w.db(), "stopped");
        // Monday 7 December.
        let r = tick(&w, 7, 7, 0).await;
        assert_eq!(r.actions.len(), 2, "{r:?}");
        assert_eq!(w.size(), (2, 6, 3));
        assert_eq!(w.alerts(), 0);
    }

    #[tokio::test]
    async fn groups_wait_for_the_database_to_be_available() {
        let w = world_with(&[], &[], &[], "starting");
        tick(&w, 2, 18, 0).await;
        let r = tick(&w, 3, 7, 0).await;
        assert_eq!(
            actions(&r),
            vec![(
                "rds.offhours_start rds:nbaops-dev-db".into(),
                Outcome::Acted
            )]
        );
        assert!(
            r.notes
                .iter()
                .any(|n| n.contains("waiting for the databases")),
            "{:?}",
            r.notes
        );
        assert_eq!(w.size(), (0, 0, 0));
        // Still starting five minutes later: still waiting, no second start.
        assert!(tick(&w, 3, 7, 5).await.actions.is_empty());
        set_status(w.rds, DB, "available");
        let r = tick(&w, 3, 7, 10).await;
        assert_eq!(
            actions(&r),
            vec![(
                "asg.offhours_start asg:nbaops-dev-web".into(),
                Outcome::Acted
            )]
        );
        assert_eq!(w.size(), (1, 4, 2));
    }

    #[tokio::test]
    async fn a_start_that_never_completes_is_alerted_once() {
        let w = world_with(&[], &[], &[], "starting");
        tick(&w, 2, 18, 0).await;
        tick(&w, 3, 7, 0).await;
        assert_eq!(w.alerts(), 0);
        let r = tick(&w, 3, 7, 45).await;
        assert_eq!(r.alerts.len(), 1);
        assert!(
            r.alerts[0].summary.contains("failed start"),
            "{:?}",
            r.alerts
        );
        assert_eq!(r.alerts[0].severity, Severity::P3);
        assert!(tick(&w, 3, 7, 50).await.alerts.is_empty());
    }

    #[tokio::test]
    async fn manual_start_at_22h_is_respected_and_reported_unless_enforced() {
        let w = world(&[]);
        tick(&w, 2, 18, 0).await;
        let before = w.mutations().len();
        // Someone starts the database by hand at 22:00 (Paris 23:00).
        set_status(w.rds, DB, "available");
        let r = tick(&w, 2, 22, 0).await;
        assert!(r.actions.is_empty());
        assert_eq!(r.alerts.len(), 1);
        assert!(r.alerts[0].summary.contains("started by hand"));
        assert_eq!(w.db(), "available");
        assert!(tick(&w, 2, 22, 5).await.alerts.is_empty(), "reported once");
        assert_eq!(w.mutations().len(), before);

        let w = world(&[("NBAOPS_OFFHOURS__ENFORCE", "true")]);
        tick(&w, 2, 18, 0).await;
        set_status(w.rds, DB, "available");
        let r = tick(&w, 2, 22, 0).await;
        assert_eq!(
            actions(&r),
            vec![("rds.offhours_stop rds:nbaops-dev-db".into(), Outcome::Acted)]
        );
        assert_eq!(w.db(), "stopped");
    }

    #[tokio::test]
    async fn rds_auto_start_after_seven_days_is_stopped_again() {
        let w = world(&[]);
        tick(&w, 2, 18, 0).await;
        // RDS restarts it (the fixture: 2 December 19:05 UTC, schedule says stopped).
        set_status(w.rds, DB, "available");
        let r = run(&w, serde_json::from_str(AUTO_START).unwrap(), utc(2, 19, 6)).await;
        assert_eq!(
            actions(&r),
            vec![("rds.offhours_stop rds:nbaops-dev-db".into(), Outcome::Acted)]
        );
        assert_eq!(w.db(), "stopped");
        assert_eq!(w.alerts(), 0, "not a manual start: no alert");
        // Still `starting` when the event arrives: the next tick stops it once available.
        let w = world(&[]);
        tick(&w, 2, 18, 0).await;
        set_status(w.rds, DB, "starting");
        let r = run(&w, serde_json::from_str(AUTO_START).unwrap(), utc(2, 19, 6)).await;
        assert!(r.actions.is_empty());
        set_status(w.rds, DB, "available");
        let r = tick(&w, 2, 19, 15).await;
        assert_eq!(
            actions(&r),
            vec![("rds.offhours_stop rds:nbaops-dev-db".into(), Outcome::Acted)]
        );
    }

    #[tokio::test]
    async fn auto_start_through_the_rds_event_subscription_sns_is_understood_too() {
        let w = world(&[]);
        tick(&w, 2, 18, 0).await;
        set_status(w.rds, DB, "available");
        let sns = include_str!("../../../events/rds/sns-subscription-event-url.json")
            .replace("RDS-EVENT-0049", "RDS-EVENT-0154")
            .replace("2026-11-25 20:01:02.123", "2026-12-02 19:05:40.000");
        let r = run(&w, serde_json::from_str(&sns).unwrap(), utc(2, 19, 6)).await;
        assert_eq!(
            actions(&r),
            vec![("rds.offhours_stop rds:nbaops-dev-db".into(), Outcome::Acted)]
        );
        // Any other RDS event is not for offhours.
        let failover = include_str!("../../../events/rds/sns-subscription-event-url.json");
        let r = run(&w, serde_json::from_str(failover).unwrap(), utc(2, 19, 7)).await;
        assert!(r.not_for_me.is_some());
    }

    #[tokio::test]
    async fn opt_out_protect_prod_and_dry_run_make_no_mutation() {
        for (label, extra, gtags, dtags) in [
            (
                "opt-out",
                vec![],
                vec![("nbaops:offhours-opt-out", "true")],
                vec![("nbaops:offhours-opt-out", "true")],
            ),
            (
                "protected",
                vec![],
                vec![("nbaops:protect", "true")],
                vec![("nbaops:protect", "true")],
            ),
            ("prod", vec![], vec![("env", "prod")], vec![("env", "prod")]),
            (
                "dry-run",
                vec![("NBAOPS_GUARD__DRY_RUN", "true")],
                vec![],
                vec![],
            ),
        ] {
            let w = world_with(&extra, &gtags, &dtags, "available");
            let r = tick(&w, 2, 18, 0).await;
            assert!(w.mutations().is_empty(), "{label}: {:?}", w.mutations());
            assert_eq!(w.size(), (1, 4, 2), "{label}");
            match label {
                "protected" => assert!(r
                    .actions
                    .iter()
                    .all(|a| a.stopped_by == Some(nbaops_shared::guard::GuardStep::ProtectedTag))),
                "dry-run" => assert_eq!(
                    r.actions.iter().map(|a| a.outcome).collect::<Vec<_>>(),
                    vec![Outcome::WouldAct, Outcome::WouldAct],
                    "the preview shows the whole stop, group then database"
                ),
                _ => assert!(r.actions.is_empty(), "{label}: {r:?}"),
            }
        }
        // A protected group keeps its database running: the database stops after the groups.
        let w = world_with(&[], &[("nbaops:protect", "true")], &[], "available");
        let r = tick(&w, 2, 18, 0).await;
        assert_eq!(w.db(), "available");
        assert!(r
            .notes
            .iter()
            .any(|n| n.contains("groups of its schedule to stop first")));
    }

    #[tokio::test]
    async fn default_blast_radius_staggers_the_stop_over_ticks_in_order() {
        let w = world(&[("NBAOPS_GUARD__BLAST__MAX_PERCENT", "50")]);
        let r = tick(&w, 2, 18, 0).await;
        assert_eq!(r.actions[0].outcome, Outcome::Acted);
        assert_eq!(w.db(), "available");
        tick(&w, 2, 18, 5).await;
        assert_eq!(w.db(), "stopped");
        assert_eq!(
            w.mutations(),
            vec![
                "update_group_size nbaops-dev-web 0 0 0",
                "stop nbaops-dev-db"
            ]
        );
        let _ = w.ledger;
    }

    #[tokio::test]
    async fn other_events_are_not_for_me() {
        let w = world(&[]);
        let r = run(&w, serde_json::from_str(ALARM).unwrap(), utc(2, 12, 0)).await;
        assert!(r.not_for_me.is_some());
        let r = run(
            &w,
            json!({"nbaops": {"task": "cost-daily-check"}}),
            utc(2, 12, 0),
        )
        .await;
        assert!(r.not_for_me.is_some());
        let r = run(
            &w,
            json!({"nbaops": {"task": "offhours", "env": "staging"}}),
            utc(2, 12, 0),
        )
        .await;
        assert!(r.not_for_me.is_some());
        assert!(w.mutations().is_empty());
    }

    mod properties {
        use super::*;
        use nbaops_shared::events::arbitrary;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(arbitrary::config(48))]

            /// Arbitrary JSON and damaged fixtures: never a panic; what nothing understands is
            /// refused with no stop or start, no state, no audit, no alert.
            #[test]
            fn any_payload_is_answered_and_only_an_understood_event_acts(payload in arbitrary::payload()) {
                let w = world(&[]);
                let understood = arbitrary::understood(&payload);
                let inv = Invocation::at("prop", utc(2, 19, 0));
                let res = arbitrary::block_on(handle(&w, payload, inv));
                if !understood {
                    arbitrary::refused_cleanly(&res)?;
                    prop_assert!(w.mutations().is_empty());
                    prop_assert!(w.notifier.published().is_empty());
                    prop_assert_eq!(w.ledger.len_with_prefix(""), 0);
                }
            }
        }
    }
}

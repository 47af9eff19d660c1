//! `backup-restore-drill`: restore the latest snapshot of each watched instance to a temporary
//! `nbaops-drill-…` instance and return. Later invocations (the 5-minute RPO tick, a repeat of
//! the drill task, or RDS-EVENT-0005/0008/0043 about the temporary instance) move the drill on:
//! once it is `available`, connect, run the validation queries, record the measured RTO (start
//! to verified), report (P2 when the RTO was missed or validation failed), delete the instance.
//! Nothing ever sleeps waiting for RDS.

use chrono::Duration;
use serde_json::json;

use chrono::Datelike;
use nbaops_shared::alerts::Severity;
use nbaops_shared::deadline::Budget;
use nbaops_shared::events::ScheduledTick;
use nbaops_shared::guard::{Explanation, Observation, Outcome, ProposedAction};
use nbaops_shared::ports::{
    DbSnapshot, DrillGroupRequest, InstanceBackup, RestoreRequest, Site, SnapshotKind, Tags,
};
use nbaops_shared::runtime::{Ctx, Live, RecordReport, Work};
use nbaops_shared::sql::{self, i64_of, str_of};
use nbaops_shared::{NbaopsError, Result};

use crate::handler::{guard_step, BackupGuard};
use crate::observe::{stored, unreadable};
use crate::plan::{
    self, backup_action, CheckResult, Drill, DrillPhase, DrillStep, SmokeStep, SmokeTest,
};

/// The drill's start, the one backup action that may ask for an approval.
pub const RESTORE_DRILL: &str = "rds.restore_drill";
const CURRENT: &str = "current";
const WHAT: &str = "restore drill record";

fn pk(instance: &str) -> String {
    format!("backupdrill#{instance}")
}

/// The drill of `instance` as stored; `Err` (inside) when the item cannot be read: then a P2
/// and no action on that instance (a second restore would orphan the first).
async fn load(ctx: &Ctx<'_>, instance: &str) -> Result<std::result::Result<Option<Drill>, String>> {
    stored(ctx, &pk(instance), CURRENT).await
}

async fn save(ctx: &Ctx<'_>, d: &Drill) -> Result<()> {
    let ledger = ctx.deps.ledger.as_ref();
    let expires = (ctx.now() + Duration::days(ctx.cfg().guard.audit_ttl_days)).timestamp();
    ledger
        .put(&pk(&d.source), CURRENT, &json!(d), Some(expires))
        .await?;
    if d.verified_at.is_some() {
        // The drill record the quarterly review reads: RTO measured, met or not, checks.
        ledger
            .put(
                &pk(&d.source),
                &format!("done#{}", d.started_at.to_rfc3339()),
                &json!(d),
                Some(expires),
            )
            .await?;
    }
    Ok(())
}

/// The record of a drill whose restore `req` started at `now`: restoring.
fn started(source: &str, req: &RestoreRequest, now: chrono::DateTime<chrono::Utc>) -> Drill {
    Drill {
        source: source.into(),
        drill_instance: req.instance_id.clone(),
        snapshot_id: req.snapshot_id.clone(),
        started_at: now,
        phase: DrillPhase::Restoring,
        verified_at: None,
        rto_seconds: None,
        rto_met: None,
        checks: vec![],
        passed: None,
        overdue_alerted: false,
        connect_failures: 0,
        app_healthy_at: None,
        app_rto_seconds: None,
        app_rto_met: None,
        app_checks: vec![],
        smoke: None,
    }
}

/// (source instance, temporary instance, snapshot) of an approved drill start; `None` for any
/// other plan, or one whose temporary instance is not a drill instance.
fn approved_restore(a: &ProposedAction) -> Option<(&str, &str, &str)> {
    if a.action != RESTORE_DRILL {
        return None;
    }
    let s = |k: &str| a.after.get(k).and_then(serde_json::Value::as_str);
    let (source, temp, snap) = (s("source")?, s("instance")?, s("snapshot")?);
    let named = a.resource.strip_prefix("rds:") == Some(temp);
    (named && temp.starts_with(plan::DRILL_PREFIX) && !source.is_empty() && !snap.is_empty())
        .then_some((source, temp, snap))
}

/// The drill's outcome: P4 when it passed, P2 when the RTO was missed or a check failed.
async fn report(d: &Drill, app_rto_minutes: i64, w: &mut Work<'_>) -> Result<()> {
    let rto_min = d.rto_seconds.unwrap_or(0) as f64 / 60.0;
    let app_min = d.app_rto_seconds.map(|s| s as f64 / 60.0);
    let passed = plan::drill_passed(d);
    let failed: Vec<String> = d
        .checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| format!("{}: {}", c.check, c.detail))
        .collect();
    let mut extra = String::new();
    if let (Some(m), Some(_)) = (app_min, d.app_healthy_at) {
        extra.push_str(&format!(", application healthy in {m:.1} min"));
    }
    if let Some(t) = d.smoke.as_ref().filter(|t| t.passed == Some(true)) {
        extra.push_str(&format!(
            ", full-system smoke test InService in {:.1} min",
            t.seconds.unwrap_or(0) as f64 / 60.0
        ));
    }
    let summary = if passed {
        format!(
            "{}: restore drill passed: {} verified in {rto_min:.1} min{extra}",
            d.source, d.snapshot_id
        )
    } else {
        let mut why = failed.clone();
        if d.rto_met == Some(false) {
            why.insert(0, format!("RTO missed ({rto_min:.1} min)"));
        }
        if d.app_rto_met == Some(false) {
            why.push(match (d.app_healthy_at, app_min) {
                (Some(_), Some(m)) => {
                    format!("application RTO missed ({m:.1} min, target {app_rto_minutes} min)")
                }
                _ => format!(
                    "application never healthy: {}",
                    d.app_checks
                        .iter()
                        .filter(|c| !c.passed)
                        .map(|c| format!("{}: {}", c.check, c.detail))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            });
        }
        if let Some(t) = d.smoke.as_ref().filter(|t| t.passed != Some(true)) {
            why.push(format!("full-system smoke test failed: {}", t.detail));
        }
        format!("{}: restore drill failed: {}", d.source, why.join("; "))
    };
    let a = w
        .ctx
        .alert(
            if passed { Severity::P4 } else { Severity::P2 },
            &format!("rds:{}", d.source),
            format!("backup-drill#{}/{}", d.source, d.started_at.to_rfc3339()),
            summary,
        )
        .with_details(json!({
            "snapshot": d.snapshot_id,
            "drill_instance": d.drill_instance,
            "started_at": d.started_at,
            "verified_at": d.verified_at,
            "rto_seconds": d.rto_seconds,
            "rto_met": d.rto_met,
            "checks": d.checks,
            "app_healthy_at": d.app_healthy_at,
            "app_rto_seconds": d.app_rto_seconds,
            "app_rto_met": d.app_rto_met,
            "app_rto_minutes": app_rto_minutes,
            "app_checks": d.app_checks,
            "smoke": d.smoke,
        }))
        .with_action(match d.smoke.as_ref().filter(|t| !t.deleted) {
            Some(t) => format!(
                "smoke-test group {} and temporary instance {} are deleted next",
                t.group, d.drill_instance
            ),
            None => format!("temporary instance {} is deleted next", d.drill_instance),
        });
    w.note(format!(
        "drill {}: RTO {rto_min:.1} min ({}), validation {}, application RTO {}",
        d.drill_instance,
        if d.rto_met == Some(true) {
            "met"
        } else {
            "missed"
        },
        if d.passed == Some(true) {
            "passed"
        } else {
            "failed"
        },
        match (d.app_rto_met, app_min) {
            (None, _) => "not measured".to_string(),
            (Some(met), m) => format!(
                "{:.1} min ({})",
                m.unwrap_or(0.0),
                if met { "met" } else { "missed" }
            ),
        }
    ));
    w.raise(a).await
}

fn temp_tags(temp: &Option<InstanceBackup>) -> Tags {
    temp.as_ref().map(|t| t.tags.clone()).unwrap_or_default()
}

enum Validation {
    Checked(Vec<CheckResult>),
    Unreachable(String),
}

impl BackupGuard {
    /// The drill task: starts a drill of each watched instance (or of `instance` when the task
    /// names one), or moves on the one in progress.
    pub async fn drill(&self, tick: &ScheduledTick, ctx: &Ctx<'_>) -> Result<RecordReport> {
        // `{"nbaops": {"task": "backup-restore-drill", "instance": "…"}}` drills one instance.
        let only = tick.param("instance");
        let targets: Vec<&String> = self
            .backup
            .instances
            .iter()
            .filter(|i| only.as_deref().is_none_or(|o| o == i.as_str()))
            .collect();
        let mut w = ctx.work(
            &tick.event_id,
            "schedule",
            format!("restore drill of {} instance(s)", targets.len()),
        );
        if targets.is_empty() {
            w.note(match only {
                Some(o) => format!("'{o}' is not in backup.instances"),
                None => "backup.instances is empty: nothing to drill".into(),
            });
        }
        for instance in targets {
            match load(ctx, instance).await? {
                Err(e) => unreadable(&mut w, &format!("rds:{instance}"), WHAT, &e).await?,
                Ok(Some(d)) if d.phase != DrillPhase::Done => {
                    w.note(format!(
                        "{instance}: drill {} in progress since {}: moving it on",
                        d.drill_instance,
                        d.started_at.to_rfc3339()
                    ));
                    self.advance(d, &mut w).await?
                }
                _ => self.start(instance, &mut w).await?,
            }
        }
        Ok(w.rec)
    }

    /// Moves on the drill in progress of each watched instance the budget admits.
    pub async fn advance_drills(
        &self,
        instances: &[String],
        w: &mut Work<'_>,
        budget: &mut Budget,
    ) -> Result<()> {
        for instance in instances {
            if !budget.admit(format!("restore drill of rds:{instance}")) {
                continue;
            }
            match load(&w.ctx, instance).await? {
                Err(e) => unreadable(w, &format!("rds:{instance}"), WHAT, &e).await?,
                Ok(Some(d)) if d.phase != DrillPhase::Done => self.advance(d, w).await?,
                _ => {}
            }
        }
        Ok(())
    }

    /// An RDS event about a temporary instance: moves on the drill that uses it.
    pub async fn advance_drill_on(
        &self,
        drill_instance: &str,
        event_id: &str,
        ctx: &Ctx<'_>,
    ) -> Result<RecordReport> {
        // Drill records that cannot be read are reported (P2) and skipped, never taken as "none".
        let mut w = ctx.work(
            event_id,
            "rds",
            format!("event on {drill_instance}: drill record(s) unreadable"),
        );
        for instance in &self.backup.instances {
            let d = match load(ctx, instance).await? {
                Ok(d) => d,
                Err(e) => {
                    unreadable(&mut w, &format!("rds:{instance}"), WHAT, &e).await?;
                    continue;
                }
            };
            if let Some(d) = d {
                if d.drill_instance == drill_instance && d.phase != DrillPhase::Done {
                    w.rec.summary =
                        format!("restore drill of {instance}: event on {drill_instance}");
                    self.advance(d, &mut w).await?;
                    return Ok(w.rec);
                }
            }
        }
        if !w.rec.alerts.is_empty() {
            return Ok(w.rec);
        }
        Ok(RecordReport::not_for_me(
            event_id,
            "rds",
            format!("no drill in progress uses {drill_instance}"),
        ))
    }

    async fn start(&self, instance: &str, w: &mut Work<'_>) -> Result<()> {
        let ctx = w.ctx;
        let now = ctx.now();
        let Some(snap) = self.latest(instance).await? else {
            let a = ctx.alert(
                Severity::P2,
                &format!("rds:{instance}"),
                format!("backup-drill#{instance}/no-snapshot"),
                format!("{instance}: restore drill impossible: no available snapshot"),
            );
            return w.raise(a).await;
        };
        let drill_instance = plan::drill_instance_id(instance, now);
        let req = self.restore_request(instance, &drill_instance, &snap.id);
        let a = self.restore_action(instance, &req);
        guard_step(w, 1);
        let audit = w
            .act(&a, || async { self.rds.restore_instance(&req).await })
            .await?;
        w.note(format!(
            "restore {} from {}: {}",
            drill_instance,
            snap.id,
            audit.outcome_words()
        ));
        match audit.outcome {
            Outcome::Acted => {
                save(&ctx, &started(instance, &req, now)).await?;
                w.note("restoring: later ticks or RDS events take the next step");
            }
            Outcome::Failed => {
                let al = ctx
                    .alert(
                        Severity::P2,
                        &format!("rds:{instance}"),
                        format!("backup-drill#{instance}/start"),
                        format!(
                            "{instance}: restore drill could not start: {}",
                            audit.error.as_deref().unwrap_or("?")
                        ),
                    )
                    .with_action(audit.sentence.clone());
                w.raise(al).await?;
            }
            _ => {}
        }
        Ok(())
    }

    /// The newest available snapshot of `instance` (automated or manual): what a drill restores.
    async fn latest(&self, instance: &str) -> Result<Option<DbSnapshot>> {
        let mut snaps = self
            .rds
            .list_snapshots(Site::Primary, instance, SnapshotKind::Automated)
            .await?;
        snaps.extend(
            self.rds
                .list_snapshots(Site::Primary, instance, SnapshotKind::Manual)
                .await?,
        );
        Ok(plan::latest_snapshot(&snaps).cloned())
    }

    /// The restore of `snapshot` to the temporary `drill_instance`, tagged as `instance`'s drill.
    fn restore_request(
        &self,
        instance: &str,
        drill_instance: &str,
        snapshot: &str,
    ) -> RestoreRequest {
        let mut tags = Tags::new();
        tags.insert("nbaops:drill".into(), "true".into());
        tags.insert("nbaops:source".into(), instance.into());
        RestoreRequest {
            snapshot_id: snapshot.into(),
            instance_id: drill_instance.into(),
            instance_class: Some(self.backup.drill.instance_class.clone()),
            subnet_group: self.backup.drill.subnet_group.clone(),
            security_groups: self.backup.drill.security_groups.clone(),
            tags,
        }
    }

    /// The drill's start as the guard sees it: disruptive (a new instance: cost and capacity), so
    /// it runs in the change window; outside it, `approval.rds.restore_drill` (default
    /// `outside_window`) asks a person. `before` holds what the plan rests on (see
    /// [`BackupGuard::restore_live`]); `after` everything the approved path needs to do the same.
    fn restore_action(&self, instance: &str, req: &RestoreRequest) -> ProposedAction {
        let mut a = backup_action(
            RESTORE_DRILL,
            format!("rds:{}", req.instance_id),
            Tags::new(),
            format!(
                "quarterly restore drill of {instance} from {} (SPEC: restore test every quarter, RTO {} min)",
                req.snapshot_id, self.backup.rto_minutes
            ),
            Explanation::new(
                "restore",
                "Restored",
                format!("{} from {}", req.instance_id, req.snapshot_id),
                format!("SPEC 5.4 quarterly restore test of {instance}"),
            )
            .observe(Observation::value(
                "RTO",
                self.backup.rto_minutes as f64,
                "min",
            ))
            .key("backup.rto_minutes")
            .key("backup.drill.instance_class"),
            json!({"instance": null, "latest_snapshot": req.snapshot_id, "drill_in_progress": null}),
            json!({"instance": req.instance_id, "snapshot": req.snapshot_id, "class": req.instance_class, "source": instance}),
        );
        a.disruptive = true;
        a
    }

    /// The live state of an approved drill start, in the shape of its plan's `before`: the
    /// temporary instance of the planned name (`instance`: its status, null when absent), the
    /// source's newest available snapshot now (`latest_snapshot`) and the temporary instance of
    /// a drill of the source in progress (`drill_in_progress`). The plan holds when all three are
    /// as planned: nothing of that name exists, the snapshot it restores is still there and still
    /// the newest (a restore from anything else is not the drill that was approved), and no other
    /// drill runs (a second restore would orphan the first). No volatile counter is compared.
    pub(crate) async fn restore_live(&self, a: &ProposedAction, ctx: &Ctx<'_>) -> Result<Live> {
        let Some((source, drill_instance, _)) = approved_restore(a) else {
            return Ok(Live::NotCarriedOut);
        };
        let temp = self.rds.describe_instance(drill_instance).await?;
        let latest = self.latest(source).await?.map(|s| s.id);
        let in_progress = match load(ctx, source).await? {
            Ok(Some(d)) if d.phase != DrillPhase::Done => json!(d.drill_instance),
            Ok(_) => json!(null),
            Err(e) => json!(format!("unreadable drill record: {e}")),
        };
        let tags = temp.as_ref().map(|t| t.tags.clone()).unwrap_or_default();
        Ok(Live::Is {
            state: json!({
                "instance": temp.map(|t| t.status),
                "latest_snapshot": latest,
                "drill_in_progress": in_progress,
            }),
            tags,
        })
    }

    /// Carries out an approved drill start: the same restore and the same drill record as a
    /// start in the window, so later ticks and RDS events move it on the same way. The RTO is
    /// measured from now, when the restore starts.
    pub(crate) async fn restore_apply(&self, a: &ProposedAction, ctx: &Ctx<'_>) -> Result<()> {
        let Some((source, drill_instance, snapshot)) = approved_restore(a) else {
            return Err(NbaopsError::InvalidEvent(format!(
                "approved plan not understood: {a:?}"
            )));
        };
        let req = self.restore_request(source, drill_instance, snapshot);
        self.rds.restore_instance(&req).await?;
        save(ctx, &started(source, &req, ctx.now())).await
    }

    async fn advance(&self, mut d: Drill, w: &mut Work<'_>) -> Result<()> {
        let ctx = w.ctx;
        let now = ctx.now();
        let cfg = &self.backup;
        let temp = self.rds.describe_instance(&d.drill_instance).await?;
        let step = plan::next_drill_step(
            &d,
            temp.as_ref().map(|t| t.status.as_str()),
            now,
            cfg.rto_minutes,
            cfg.drill.give_up_hours,
        );
        let resource = format!("rds:{}", d.drill_instance);
        match step {
            DrillStep::Finished => return Ok(()),
            DrillStep::Wait(why) => {
                w.note(format!("drill {}: waiting, {why}", d.drill_instance));
                return Ok(());
            }
            DrillStep::Overdue(why) => {
                let a = ctx.alert(
                    Severity::P2,
                    &resource,
                    format!("backup-drill#{}/{}", d.source, d.started_at.to_rfc3339()),
                    format!("{}: {why}", d.source),
                );
                w.raise(a).await?;
                d.overdue_alerted = true;
                return save(&ctx, &d).await;
            }
            DrillStep::Validate => {
                let endpoint = temp.as_ref().and_then(|t| t.endpoint.clone());
                match self.validate(&d, endpoint.as_ref(), &ctx).await {
                    Validation::Checked(checks) => {
                        plan::conclude(&mut d, checks, now, cfg.rto_minutes);
                        return self.after_verified(d, endpoint, temp_tags(&temp), w).await;
                    }
                    Validation::Unreachable(e)
                        if now - d.started_at <= Duration::minutes(cfg.rto_minutes) =>
                    {
                        d.connect_failures += 1;
                        save(&ctx, &d).await?;
                        w.note(format!(
                            "drill {}: available but not reachable yet ({e}); retried on the next tick",
                            d.drill_instance
                        ));
                        return Ok(());
                    }
                    Validation::Unreachable(e) => {
                        let checks = vec![CheckResult {
                            check: "connect".into(),
                            passed: false,
                            detail: e,
                        }];
                        plan::conclude(&mut d, checks, now, cfg.rto_minutes);
                        return self.finish(d, temp_tags(&temp), w).await;
                    }
                }
            }
            DrillStep::AppHealth => {
                let endpoint = temp.as_ref().and_then(|t| t.endpoint.clone());
                return self.app_health(d, endpoint, temp_tags(&temp), w).await;
            }
            DrillStep::Smoke => return self.smoke(d, temp_tags(&temp), w).await,
            DrillStep::Fail(why) => {
                let checks = vec![CheckResult {
                    check: "restore".into(),
                    passed: false,
                    detail: why,
                }];
                plan::conclude(&mut d, checks, now, cfg.rto_minutes);
                report(&d, cfg.drill.app_rto_minutes, w).await?;
                if temp.is_none() {
                    d.phase = DrillPhase::Done;
                }
                save(&ctx, &d).await?;
                if temp.is_none() {
                    return Ok(());
                }
            }
            DrillStep::Delete => {}
        }
        self.delete_temporary(d, temp_tags(&temp), w).await
    }

    /// The data verified (or not) and the database RTO recorded: the application health queries
    /// next when configured and the data came back, else on.
    async fn after_verified(
        &self,
        mut d: Drill,
        endpoint: Option<(String, u16)>,
        tags: Tags,
        w: &mut Work<'_>,
    ) -> Result<()> {
        if d.passed == Some(true) && !self.backup.drill.app_health_queries.is_empty() {
            d.phase = DrillPhase::AppHealth;
            return self.app_health(d, endpoint, tags, w).await;
        }
        self.after_app(d, tags, w).await
    }

    /// Runs the application health queries: all healthy records the application RTO and moves
    /// on; not yet waits for a later tick (no sleeping) until give-up.
    async fn app_health(
        &self,
        mut d: Drill,
        endpoint: Option<(String, u16)>,
        tags: Tags,
        w: &mut Work<'_>,
    ) -> Result<()> {
        let ctx = w.ctx;
        let cfg = &self.backup;
        let checks = self.health_checks(&d, endpoint.as_ref(), &ctx).await;
        let done = plan::record_app_health(
            &mut d,
            checks,
            ctx.now(),
            cfg.drill.app_rto_minutes,
            cfg.drill.give_up_hours,
        );
        if !done {
            save(&ctx, &d).await?;
            let failing: Vec<String> = d
                .app_checks
                .iter()
                .filter(|c| !c.passed)
                .map(|c| format!("{}: {}", c.check, c.detail))
                .collect();
            w.note(format!(
                "drill {}: application not healthy yet ({}); asked again on the next tick",
                d.drill_instance,
                failing.join("; ")
            ));
            return Ok(());
        }
        w.note(format!(
            "drill {}: application {} {:.1} min after the start (target {} min)",
            d.drill_instance,
            if d.app_healthy_at.is_some() {
                "healthy"
            } else {
                "still not healthy, given up"
            },
            d.app_rto_seconds.unwrap_or(0) as f64 / 60.0,
            cfg.drill.app_rto_minutes
        ));
        self.after_app(d, tags, w).await
    }

    /// A full-system drill (enabled, the drill's month configured, the data verified) launches
    /// its smoke-test group; any other drill is reported and cleaned up.
    async fn after_app(&self, mut d: Drill, tags: Tags, w: &mut Work<'_>) -> Result<()> {
        let fs = &self.backup.drill.full_system;
        if d.passed != Some(true) || d.smoke.is_some() || !fs.applies(d.started_at.month()) {
            return self.finish(d, tags, w).await;
        }
        let ctx = w.ctx;
        let group = d.drill_instance.clone();
        let mut gtags = Tags::new();
        gtags.insert("nbaops:drill".into(), "true".into());
        gtags.insert("nbaops:source".into(), d.source.clone());
        let req = DrillGroupRequest {
            name: group.clone(),
            launch_template: fs.launch_template.clone(),
            launch_template_version: fs.launch_template_version.clone(),
            subnets: fs.subnets.clone(),
            tags: gtags,
        };
        let a = backup_action(
            "autoscaling.create_drill_group",
            format!("asg:{group}"),
            Tags::new(),
            format!(
                "full-system restore drill of {}: smoke test of {} in isolated subnets",
                d.source, fs.launch_template
            ),
            Explanation::new(
                "create",
                "Created",
                format!(
                    "the isolated Auto Scaling group {group} (desired 1) from {}:{}",
                    fs.launch_template, fs.launch_template_version
                ),
                format!("SPEC 5.4 twice-yearly full-system drill of {}", d.source),
            )
            .observe(Observation::value(
                "minutes since the drill started",
                (ctx.now() - d.started_at).num_minutes() as f64,
                "min",
            ))
            .key("backup.drill.full_system.enabled")
            .key("backup.drill.full_system.months")
            .key("backup.drill.full_system.launch_template")
            .key("backup.drill.full_system.subnets"),
            json!({"group": null}),
            json!({"group": group, "launch_template": fs.launch_template, "version": fs.launch_template_version, "subnets": fs.subnets, "desired": 1}),
        );
        guard_step(w, 1);
        let audit = w
            .act(&a, || async { self.groups.create_group(&req).await })
            .await?;
        w.note(format!(
            "create smoke-test group {group}: {}",
            audit.outcome_words()
        ));
        let mut smoke = SmokeTest {
            group,
            launch_template: format!("{}:{}", fs.launch_template, fs.launch_template_version),
            created_at: None,
            in_service_at: None,
            seconds: None,
            passed: None,
            detail: String::new(),
            deleted: false,
        };
        if audit.outcome == Outcome::Acted {
            smoke.created_at = Some(ctx.now());
            smoke.detail = "launching".into();
            d.smoke = Some(smoke);
            d.phase = DrillPhase::FullSystem;
            save(&ctx, &d).await?;
            w.note("smoke-test group launching: later ticks watch it");
            return Ok(());
        }
        // Not created (guard, or AWS refused): the smoke test failed; a group of that name that
        // exists anyway (a create that timed out after AWS took it) is still cleaned up.
        smoke.passed = Some(false);
        smoke.detail = format!("group not created: {}", audit.sentence);
        d.smoke = Some(smoke);
        self.finish(d, tags, w).await
    }

    /// Looks at the smoke-test group: an instance InService and Healthy passes the smoke test.
    async fn smoke(&self, mut d: Drill, tags: Tags, w: &mut Work<'_>) -> Result<()> {
        let ctx = w.ctx;
        let now = ctx.now();
        let Some(mut t) = d.smoke.clone() else {
            return self.finish(d, tags, w).await;
        };
        let g = self.groups.describe_group(&t.group).await?;
        match plan::smoke_step(
            &d,
            g.as_ref().map(|g| (g.instances, g.healthy_in_service)),
            now,
            self.backup.drill.give_up_hours,
        ) {
            SmokeStep::Wait(why) => {
                w.note(format!(
                    "drill {}: smoke test waiting, {why}",
                    d.drill_instance
                ));
                return Ok(());
            }
            SmokeStep::Passed => {
                t.in_service_at = Some(now);
                t.seconds = t.created_at.map(|c| (now - c).num_seconds());
                t.passed = Some(true);
                t.detail = format!(
                    "an instance InService and Healthy {:.1} min after the group was created ({:.1} min after the drill started)",
                    t.seconds.unwrap_or(0) as f64 / 60.0,
                    (now - d.started_at).num_seconds() as f64 / 60.0
                );
            }
            SmokeStep::Fail(why) => {
                t.passed = Some(false);
                t.detail = why;
                t.deleted = g.is_none();
            }
        }
        d.smoke = Some(t);
        self.finish(d, tags, w).await
    }

    /// Reports the drill (P4 passed, P2 not) and cleans up: group, then temporary instance.
    async fn finish(&self, mut d: Drill, tags: Tags, w: &mut Work<'_>) -> Result<()> {
        d.phase = DrillPhase::Deleting;
        report(&d, self.backup.drill.app_rto_minutes, w).await?;
        save(&w.ctx, &d).await?;
        self.delete_temporary(d, tags, w).await
    }

    /// Force-deletes the smoke-test group (its instance with it); true when it is gone.
    async fn delete_group(&self, d: &mut Drill, w: &mut Work<'_>) -> Result<bool> {
        let Some(t) = d.smoke.as_mut().filter(|t| !t.deleted) else {
            return Ok(true);
        };
        // Never anything but the group this drill named.
        if !t.group.starts_with(plan::DRILL_PREFIX) || t.group != d.drill_instance {
            w.note(format!(
                "refusing to delete group {}: not this drill's",
                t.group
            ));
            return Ok(false);
        }
        let Some(g) = self.groups.describe_group(&t.group).await? else {
            t.deleted = true;
            return Ok(true);
        };
        // Only a group the drill tagged (a create refused because the name was taken leaves
        // someone else's group there): anything else is left alone.
        if g.tags.get("nbaops:drill").map(String::as_str) != Some("true") {
            w.note(format!(
                "group {} is not tagged nbaops:drill=true: not the drill's, left alone",
                t.group
            ));
            t.deleted = true;
            return Ok(true);
        }
        if g.status.is_some() {
            w.note(format!(
                "smoke-test group {}: {}",
                t.group,
                g.status.unwrap_or_default()
            ));
            return Ok(false);
        }
        let a = backup_action(
            "autoscaling.delete_drill_group",
            format!("asg:{}", t.group),
            g.tags.clone(),
            format!("full-system restore drill of {} finished", d.source),
            Explanation::new(
                "delete",
                "Deleted",
                format!("the smoke-test group {} (force: its instance too)", t.group),
                format!("SPEC 5.4 full-system drill of {} finished", d.source),
            )
            .observe(Observation::value(
                "minutes since the drill started",
                (w.ctx.now() - d.started_at).num_minutes() as f64,
                "min",
            ))
            .key("backup.drill.give_up_hours"),
            json!({"group": t.group}),
            json!({"group": null}),
        );
        guard_step(w, 1);
        let group = t.group.clone();
        let audit = w
            .act(&a, || async {
                self.groups.force_delete_group(&group).await
            })
            .await?;
        w.note(format!(
            "delete smoke-test group {group}: {}",
            audit.outcome_words()
        ));
        let gone = audit.outcome == Outcome::Acted;
        if let Some(t) = d.smoke.as_mut() {
            t.deleted = gone;
        }
        Ok(gone)
    }

    async fn delete_temporary(&self, mut d: Drill, tags: Tags, w: &mut Work<'_>) -> Result<()> {
        // The smoke-test group first (a full-system drill): left behind, it is retried on every
        // later tick like the instance.
        if !self.delete_group(&mut d, w).await? {
            return save(&w.ctx, &d).await;
        }
        // Never anything but our own temporary instance.
        if !d.drill_instance.starts_with(plan::DRILL_PREFIX) {
            w.note(format!(
                "refusing to delete {}: not a drill instance",
                d.drill_instance
            ));
            return Ok(());
        }
        let a = backup_action(
            "rds.delete_drill_instance",
            format!("rds:{}", d.drill_instance),
            tags,
            format!("restore drill of {} finished", d.source),
            Explanation::new(
                "delete",
                "Deleted",
                format!("the drill instance {}", d.drill_instance),
                format!("SPEC 5.4 restore test of {} finished", d.source),
            )
            .observe(Observation::value(
                "minutes since the drill started",
                (w.ctx.now() - d.started_at).num_minutes() as f64,
                "min",
            ))
            .key("backup.drill.give_up_hours"),
            json!({"instance": d.drill_instance}),
            json!({"instance": null}),
        );
        guard_step(w, 1);
        let audit = w
            .act(&a, || async {
                self.rds.delete_instance(&d.drill_instance).await
            })
            .await?;
        w.note(format!(
            "delete temporary instance {}: {}",
            d.drill_instance,
            audit.outcome_words()
        ));
        if audit.outcome == Outcome::Acted {
            d.phase = DrillPhase::Done;
            save(&w.ctx, &d).await?;
        }
        Ok(())
    }

    /// Connects to the restored instance (its drill role, the password from SSM when set).
    async fn open(
        &self,
        d: &Drill,
        endpoint: Option<&(String, u16)>,
        ctx: &Ctx<'_>,
    ) -> std::result::Result<Box<dyn nbaops_shared::ports::Postgres>, String> {
        let Some(url) = plan::drill_url(&self.backup, d, endpoint) else {
            return Err("the temporary instance has no endpoint yet".into());
        };
        let secret = format!(
            "/nbaops/{}/secrets/backup/drill/{}",
            ctx.deps.cfg.env, d.source
        );
        let password = match ctx.deps.params.as_deref() {
            Some(p) => match p.get(&secret).await {
                Ok(v) => v,
                Err(e) => return Err(format!("reading {secret}: {e}")),
            },
            None => None,
        };
        if let Some(pw) = &password {
            nbaops_shared::telemetry::register_secret(pw);
        }
        let url = sql::with_connect_timeout(&url, self.pg.connect_timeout_seconds);
        self.connector
            .connect(&url, password.as_deref())
            .await
            .map_err(|e| e.to_string())
    }

    /// Runs `backup.drill.app_health_queries` read-only (same session setup and statement
    /// timeout as the validation): one check per query, passed when its answer is healthy
    /// ([`plan::healthy_answer`]). Not reachable = one failed `connect` check.
    async fn health_checks(
        &self,
        d: &Drill,
        endpoint: Option<&(String, u16)>,
        ctx: &Ctx<'_>,
    ) -> Vec<CheckResult> {
        let cfg = &self.backup.drill;
        let failed = |check: &str, detail: String| {
            vec![CheckResult {
                check: check.into(),
                passed: false,
                detail,
            }]
        };
        let session = match self.open(d, endpoint, ctx).await {
            Ok(s) => s,
            Err(e) => return failed("connect", e),
        };
        for stmt in sql::session_setup(
            "nbaops-backup-drill",
            cfg.statement_timeout_seconds * 1000,
            self.pg.lock_timeout_ms,
            true,
        ) {
            if let Err(e) = session.execute(&stmt).await {
                return failed("session", e.to_string());
            }
        }
        let mut checks = Vec::new();
        for (i, q) in cfg.app_health_queries.iter().enumerate() {
            let (passed, detail) = match session.query(q).await {
                Ok(rows) if plan::healthy_answer(&rows) => (true, "healthy".to_string()),
                Ok(rows) => (
                    false,
                    match rows.first() {
                        None => "no row".to_string(),
                        Some(r) => {
                            let mut t = serde_json::Value::Object(r.clone()).to_string();
                            t.truncate(200);
                            format!("first row not healthy: {t}")
                        }
                    },
                ),
                Err(e) => (false, e.to_string()),
            };
            checks.push(CheckResult {
                check: format!("health query {}", i + 1),
                passed,
                detail,
            });
        }
        checks
    }

    /// Connects to the restored instance and runs the checks that prove the data came back.
    async fn validate(
        &self,
        d: &Drill,
        endpoint: Option<&(String, u16)>,
        ctx: &Ctx<'_>,
    ) -> Validation {
        let cfg = &self.backup.drill;
        let session = match self.open(d, endpoint, ctx).await {
            Ok(s) => s,
            Err(e) => return Validation::Unreachable(e),
        };
        let mut checks = Vec::new();
        for stmt in sql::session_setup(
            "nbaops-backup-drill",
            cfg.statement_timeout_seconds * 1000,
            self.pg.lock_timeout_ms,
            true,
        ) {
            if let Err(e) = session.execute(&stmt).await {
                checks.push(CheckResult {
                    check: "session".into(),
                    passed: false,
                    detail: e.to_string(),
                });
                return Validation::Checked(checks);
            }
        }
        checks.push(CheckResult {
            check: "connect".into(),
            passed: true,
            detail: "connected to the restored instance".into(),
        });
        if cfg.key_tables.is_empty() && cfg.checksum_table.is_none() {
            checks.push(CheckResult {
                check: "config".into(),
                passed: false,
                detail:
                    "no backup.drill.key_tables nor checksum_table: nothing proves the data came back"
                        .into(),
            });
        }
        for t in &cfg.key_tables {
            let q = sql::backup::row_count(&t.schema, &t.table);
            let (passed, detail) = match session.query(&q).await {
                Ok(rows) => {
                    let n = rows.first().and_then(|r| i64_of(r, "n")).unwrap_or(-1);
                    (
                        n >= cfg.min_rows,
                        format!("{n} row(s) (at least {})", cfg.min_rows),
                    )
                }
                Err(e) => (false, e.to_string()),
            };
            checks.push(CheckResult {
                check: format!("rows {}", t.display()),
                passed,
                detail,
            });
        }
        if let Some(t) = &cfg.checksum_table {
            let q = sql::backup::table_checksum(&t.schema, &t.table);
            let (passed, detail) = match session.query(&q).await {
                Ok(rows) => {
                    let r = rows.first();
                    let n = r.and_then(|r| i64_of(r, "n")).unwrap_or(0);
                    let sum = r.and_then(|r| str_of(r, "checksum")).unwrap_or_default();
                    let matches = cfg
                        .checksum_expected
                        .as_deref()
                        .is_none_or(|want| want.eq_ignore_ascii_case(&sum));
                    (
                        n > 0 && matches,
                        format!(
                            "md5 {sum} over {n} row(s){}",
                            cfg.checksum_expected
                                .as_deref()
                                .map(|w| format!(", expected {w}"))
                                .unwrap_or_default()
                        ),
                    )
                }
                Err(e) => (false, e.to_string()),
            };
            checks.push(CheckResult {
                check: format!("checksum {}", t.display()),
                passed,
                detail,
            });
        }
        Validation::Checked(checks)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::handler;
    use crate::handler::tests::{handle, t0, tick, world};
    use crate::handler::{DRILL_TASK, RPO_TASK};
    use nbaops_shared::runtime::Invocation;
    use serde_json::json;

    /// A change window open every day all day: the drill's start is disruptive.
    const WINDOW_OPEN: [(&str, &str); 3] = [
        ("NBAOPS_GUARD__WINDOW__DAYS", "mon,tue,wed,thu,fri,sat,sun"),
        ("NBAOPS_GUARD__WINDOW__START", "00:00"),
        ("NBAOPS_GUARD__WINDOW__END", "23:59"),
    ];

    fn tables() -> Vec<(&'static str, &'static str)> {
        let mut v = WINDOW_OPEN.to_vec();
        v.extend([
            ("NBAOPS_BACKUP__DRILL__KEY_TABLES", "players,games"),
            ("NBAOPS_BACKUP__DRILL__CHECKSUM_TABLE", "ops.checksum"),
            (
                "NBAOPS_BACKUP__DRILL__URL_OVERRIDES",
                r#"{"db": "postgres://postgres@127.0.0.1:5999/app"}"#,
            ),
        ]);
        v
    }

    #[tokio::test]
    async fn drill_restores_returns_then_validates_records_rto_and_deletes() {
        let w = world(&tables());
        w.pg.answer(
            "SELECT count(*)::int8 AS n FROM \"public\".\"players\"",
            Ok(vec![json!({"n": 450})]),
        );
        w.pg.answer(
            "SELECT count(*)::int8 AS n FROM \"public\".\"games\"",
            Ok(vec![json!({"n": 1230})]),
        );
        w.pg.answer(
            "SELECT count(*)::int8 AS n, md5",
            Ok(vec![json!({"n": 3, "checksum": "abc"})]),
        );
        let r = tick(&w, DRILL_TASK, t0(), "d1").await;
        let temp = "nbaops-drill-db-202611251200";
        assert_eq!(
            w.rds.mutations(),
            vec![format!("restore_instance {temp} from rds:db-auto")]
        );
        assert_eq!(r.records[0].actions[0].outcome, Outcome::Acted);
        // Still creating 10 minutes on: the RPO tick only notes it.
        let r = tick(&w, RPO_TASK, t0() + Duration::minutes(10), "r1").await;
        assert!(
            r.records[0].notes.iter().any(|n| n.contains("waiting")),
            "{:?}",
            r.records[0].notes
        );
        w.rds.set_instance_status(temp, "available");
        let r = tick(&w, RPO_TASK, t0() + Duration::minutes(25), "r2").await;
        let rec = &r.records[0];
        let report = rec
            .alerts
            .iter()
            .find(|a| a.dedup_key.starts_with("backup-drill#"))
            .unwrap();
        assert_eq!(report.severity, Severity::P4, "{}", report.summary);
        assert_eq!(report.details["rto_seconds"], json!(25 * 60));
        assert_eq!(
            w.pg.urls.lock().unwrap()[0],
            "postgres://postgres@127.0.0.1:5999/app?connect_timeout=5"
        );
        assert!(w
            .rds
            .mutations()
            .contains(&format!("delete_instance {temp}")));
        let rec = w
            .deps
            .ledger
            .get("backupdrill#db", &format!("done#{}", t0().to_rfc3339()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                rec["rto_met"].as_bool(),
                rec["passed"].as_bool(),
                rec["phase"].as_str()
            ),
            (Some(true), Some(true), Some("done"))
        );
        // Done: the next drill tick starts a new drill.
        tick(&w, DRILL_TASK, t0() + Duration::days(91), "d2").await;
        assert_eq!(
            w.rds
                .mutations()
                .iter()
                .filter(|m| m.starts_with("restore_instance"))
                .count(),
            2
        );
    }

    #[tokio::test]
    async fn missing_key_table_or_late_verification_is_p2_and_the_instance_still_goes() {
        let w = world(&tables());
        w.pg.answer(
            "SELECT count(*)::int8 AS n FROM \"public\".\"players\"",
            Ok(vec![json!({"n": 450})]),
        );
        w.pg.answer(
            "SELECT count(*)::int8 AS n FROM \"public\".\"games\"",
            Err("relation \"public.games\" does not exist".into()),
        );
        w.pg.answer(
            "SELECT count(*)::int8 AS n, md5",
            Ok(vec![json!({"n": 3, "checksum": "abc"})]),
        );
        *w.rds.restore_status.lock().unwrap() = "available".into();
        tick(&w, DRILL_TASK, t0(), "d1").await;
        // Verified 70 minutes after the start: RTO missed too.
        let r = tick(&w, DRILL_TASK, t0() + Duration::minutes(70), "d2").await;
        let a = r.records[0]
            .alerts
            .iter()
            .find(|a| a.dedup_key.starts_with("backup-drill#"))
            .unwrap();
        assert_eq!(a.severity, Severity::P2);
        assert!(
            a.summary.contains("RTO missed") && a.summary.contains("games"),
            "{}",
            a.summary
        );
        assert!(w
            .rds
            .mutations()
            .iter()
            .any(|m| m.starts_with("delete_instance nbaops-drill-")));
    }

    #[tokio::test]
    async fn unreachable_is_retried_within_the_rto_and_dry_run_restores_nothing() {
        let w = world(&tables());
        *w.rds.restore_status.lock().unwrap() = "available".into();
        *w.pg.refuse.lock().unwrap() = true;
        tick(&w, DRILL_TASK, t0(), "d1").await;
        let r = tick(&w, RPO_TASK, t0() + Duration::minutes(5), "r1").await;
        assert!(r.records[0]
            .notes
            .iter()
            .any(|n| n.contains("not reachable yet")));
        assert!(!w
            .rds
            .mutations()
            .iter()
            .any(|m| m.starts_with("delete_instance")));
        let r = tick(&w, RPO_TASK, t0() + Duration::minutes(65), "r2").await;
        assert!(r.records[0]
            .alerts
            .iter()
            .any(|a| a.severity == Severity::P2 && a.summary.contains("connect")));
        assert!(w
            .rds
            .mutations()
            .iter()
            .any(|m| m.starts_with("delete_instance")));

        let mut env = WINDOW_OPEN.to_vec();
        env.push(("NBAOPS_GUARD__DRY_RUN", "true"));
        let w = world(&env);
        let r = tick(&w, DRILL_TASK, t0(), "d1").await;
        assert_eq!(r.records[0].actions[0].outcome, Outcome::WouldAct);
        assert!(w.rds.mutations().is_empty());
        assert!(w
            .deps
            .ledger
            .get("backupdrill#db", "current")
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn rds_event_drives_the_drill() {
        let w = world(&tables());
        w.pg.answer(
            "SELECT count(*)",
            Ok(vec![json!({"n": 5, "checksum": "x"})]),
        );
        *w.rds.restore_status.lock().unwrap() = "available".into();
        tick(&w, DRILL_TASK, t0(), "d1").await;
        let ev = json!({
            "version": "0", "id": "ev-1", "detail-type": "RDS DB Instance Event", "source": "aws.rds",
            "time": (t0() + Duration::minutes(12)).to_rfc3339(), "region": "us-east-1", "resources": [],
            "detail": {"SourceType": "DB_INSTANCE", "SourceIdentifier": "nbaops-drill-db-202611251200",
                       "Date": (t0() + Duration::minutes(12)).to_rfc3339(), "EventID": "RDS-EVENT-0008",
                       "Message": "DB instance restored from snapshot", "EventCategories": ["creation"]}
        });
        let inv = Invocation::at("r", t0() + Duration::minutes(12));
        let r = handle(&w, ev, &inv).await.unwrap();
        let a = &r.records[0].alerts[0];
        assert_eq!(a.details["rto_seconds"], json!(12 * 60), "{a:?}");
        assert!(w
            .rds
            .mutations()
            .iter()
            .any(|m| m.starts_with("delete_instance")));
    }
    // ---- issue #22: the application RTO and the full-system drill ----

    fn report_of(
        r: &nbaops_shared::runtime::InvocationReport,
    ) -> Option<nbaops_shared::alerts::Alert> {
        r.records[0]
            .alerts
            .iter()
            .find(|a| a.dedup_key.starts_with("backup-drill#"))
            .cloned()
    }

    /// The data checks of `tables()` answered, and the first health query answering `ready`.
    fn app_world(extra: &[(&'static str, &'static str)]) -> handler::tests::World {
        let mut env = tables();
        env.push((
            "NBAOPS_BACKUP__DRILL__APP_HEALTH_QUERIES",
            r#"["SELECT ready FROM app.health", "SELECT 1 AS ok"]"#,
        ));
        env.extend_from_slice(extra);
        let w = world(&env);
        w.pg.answer(
            "SELECT count(*)",
            Ok(vec![json!({"n": 5, "checksum": "x"})]),
        );
        w.pg.answer("SELECT 1 AS ok", Ok(vec![json!({"ok": 1})]));
        *w.rds.restore_status.lock().unwrap() = "available".into();
        w
    }

    fn health_answers(w: &handler::tests::World, ready: bool) {
        w.pg.answers.lock().unwrap().insert(
            0,
            ("SELECT ready".into(), Ok(vec![json!({ "ready": ready })])),
        );
    }

    #[tokio::test]
    async fn application_rto_waits_for_all_healthy_and_is_reported_beside_the_db_rto() {
        let w = app_world(&[]);
        health_answers(&w, false);
        tick(&w, DRILL_TASK, t0(), "d1").await;
        // Data verified at 10 min; the application is not healthy yet: no report, no delete.
        let r = tick(&w, RPO_TASK, t0() + Duration::minutes(10), "r1").await;
        assert!(report_of(&r).is_none(), "{:?}", r.records[0]);
        assert!(
            r.records[0]
                .notes
                .iter()
                .any(|n| n.contains("application not healthy yet") && n.contains("health query 1")),
            "{:?}",
            r.records[0].notes
        );
        assert!(!w
            .rds
            .mutations()
            .iter()
            .any(|m| m.starts_with("delete_instance")));
        let cur = load_current(&w).await.unwrap();
        assert_eq!(cur["phase"], "app-health", "{cur}");
        assert_eq!(cur["rto_seconds"], json!(600));
        // Healthy at 40 min: the application RTO (30 min) missed, the database RTO met: P2.
        health_answers(&w, true);
        let r = tick(&w, RPO_TASK, t0() + Duration::minutes(40), "r2").await;
        let a = report_of(&r).unwrap();
        assert_eq!(a.severity, Severity::P2, "{}", a.summary);
        assert!(
            a.summary.contains("application RTO missed (40.0 min"),
            "{}",
            a.summary
        );
        assert_eq!(
            (
                a.details["rto_seconds"].clone(),
                a.details["rto_met"].clone(),
                a.details["app_rto_seconds"].clone(),
                a.details["app_rto_met"].clone()
            ),
            (json!(600), json!(true), json!(2400), json!(false))
        );
        assert!(w
            .rds
            .mutations()
            .iter()
            .any(|m| m.starts_with("delete_instance")));
        let done = w
            .deps
            .ledger
            .get("backupdrill#db", &format!("done#{}", t0().to_rfc3339()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (done["app_rto_seconds"].as_i64(), done["phase"].as_str()),
            (Some(2400), Some("done"))
        );

        // Healthy on the first answer, 12 minutes in: met, P4, both RTOs in the summary.
        let w = app_world(&[]);
        health_answers(&w, true);
        tick(&w, DRILL_TASK, t0(), "d1").await;
        let r = tick(&w, RPO_TASK, t0() + Duration::minutes(12), "r1").await;
        let a = report_of(&r).unwrap();
        assert_eq!(a.severity, Severity::P4, "{}", a.summary);
        assert!(
            a.summary.contains("application healthy in 12.0 min"),
            "{}",
            a.summary
        );
        assert_eq!(a.details["app_rto_met"], json!(true));

        // Never healthy: asked on every tick until give-up (6 h), then P2 and cleaned up.
        let w = app_world(&[]);
        health_answers(&w, false);
        tick(&w, DRILL_TASK, t0(), "d1").await;
        for m in [10, 60, 300] {
            let r = tick(&w, RPO_TASK, t0() + Duration::minutes(m), &format!("r{m}")).await;
            assert!(report_of(&r).is_none());
        }
        let r = tick(&w, RPO_TASK, t0() + Duration::minutes(6 * 60 + 5), "r-last").await;
        let a = report_of(&r).unwrap();
        assert_eq!(a.severity, Severity::P2);
        assert!(
            a.summary
                .contains("application never healthy: health query 1"),
            "{}",
            a.summary
        );
        assert!(w
            .rds
            .mutations()
            .iter()
            .any(|m| m.starts_with("delete_instance")));
    }

    const FULL: [(&str, &str); 4] = [
        ("NBAOPS_BACKUP__DRILL__FULL_SYSTEM__ENABLED", "true"),
        ("NBAOPS_BACKUP__DRILL__FULL_SYSTEM__MONTHS", "may,nov"),
        (
            "NBAOPS_BACKUP__DRILL__FULL_SYSTEM__LAUNCH_TEMPLATE",
            "app-lt",
        ),
        (
            "NBAOPS_BACKUP__DRILL__FULL_SYSTEM__SUBNETS",
            "subnet-iso-a,subnet-iso-b",
        ),
    ];

    #[tokio::test]
    async fn full_system_drill_launches_an_isolated_group_until_in_service_then_deletes_it() {
        let w = app_world(&FULL);
        health_answers(&w, true);
        let temp = "nbaops-drill-db-202611251200";
        tick(&w, DRILL_TASK, t0(), "d1").await;
        // Verified and healthy at 10 min: the smoke-test group is created, nothing reported yet.
        let r = tick(&w, RPO_TASK, t0() + Duration::minutes(10), "r1").await;
        assert!(report_of(&r).is_none(), "{:?}", r.records[0]);
        let create = r.records[0]
            .actions
            .iter()
            .find(|a| a.action == "autoscaling.create_drill_group")
            .unwrap();
        assert_eq!(create.outcome, Outcome::Acted, "{}", create.sentence);
        assert_eq!(create.resource, format!("asg:{temp}"));
        assert_eq!(
            w.groups.mutations(),
            vec![format!("create_group {temp} from app-lt:$Default")]
        );
        let req = w.groups.created.lock().unwrap()[0].clone();
        assert_eq!(req.subnets, vec!["subnet-iso-a", "subnet-iso-b"]);
        assert_eq!(
            (
                req.tags.get("nbaops:drill").map(String::as_str),
                req.tags.get("nbaops:source").map(String::as_str)
            ),
            (Some("true"), Some("db"))
        );
        assert_eq!(load_current(&w).await.unwrap()["phase"], "full-system");
        // No instance InService yet at 15 min: waiting.
        let r = tick(&w, RPO_TASK, t0() + Duration::minutes(15), "r2").await;
        assert!(report_of(&r).is_none());
        assert!(r.records[0]
            .notes
            .iter()
            .any(|n| n.contains("smoke test waiting")));
        // InService and Healthy at 22 min: passed (12 min after the group), group then instance deleted.
        w.groups.set_healthy(temp);
        let r = tick(&w, RPO_TASK, t0() + Duration::minutes(22), "r3").await;
        let a = report_of(&r).unwrap();
        assert_eq!(a.severity, Severity::P4, "{}", a.summary);
        assert!(
            a.summary
                .contains("full-system smoke test InService in 12.0 min"),
            "{}",
            a.summary
        );
        assert_eq!(a.details["smoke"]["seconds"], json!(12 * 60));
        assert_eq!(
            w.groups.mutations().last().unwrap(),
            &format!("force_delete_group {temp}")
        );
        assert!(w
            .rds
            .mutations()
            .contains(&format!("delete_instance {temp}")));
        let done = load_current(&w).await.unwrap();
        assert_eq!(
            (done["phase"].as_str(), done["smoke"]["deleted"].as_bool()),
            (Some("done"), Some(true))
        );

        // Never InService: give-up fails the smoke test (P2) and the group still goes.
        let w = app_world(&FULL);
        health_answers(&w, true);
        tick(&w, DRILL_TASK, t0(), "d1").await;
        tick(&w, RPO_TASK, t0() + Duration::minutes(10), "r1").await;
        let r = tick(&w, RPO_TASK, t0() + Duration::minutes(6 * 60 + 5), "r2").await;
        let a = report_of(&r).unwrap();
        assert_eq!(a.severity, Severity::P2);
        assert!(
            a.summary
                .contains("full-system smoke test failed: no instance InService"),
            "{}",
            a.summary
        );
        assert!(
            w.groups.groups.lock().unwrap().is_empty(),
            "group left behind"
        );
        assert!(w
            .rds
            .mutations()
            .contains(&format!("delete_instance {temp}")));
    }

    #[tokio::test]
    async fn no_smoke_group_off_by_default_in_other_months_or_when_the_data_failed() {
        // Default: off.
        let w = app_world(&[]);
        health_answers(&w, true);
        tick(&w, DRILL_TASK, t0(), "d1").await;
        tick(&w, RPO_TASK, t0() + Duration::minutes(10), "r1").await;
        assert!(w.groups.mutations().is_empty());
        // Enabled, but November is not one of its months.
        let mut env = FULL.to_vec();
        env[1] = ("NBAOPS_BACKUP__DRILL__FULL_SYSTEM__MONTHS", "jan,jul");
        let w = app_world(&env);
        health_answers(&w, true);
        tick(&w, DRILL_TASK, t0(), "d1").await;
        let r = tick(&w, RPO_TASK, t0() + Duration::minutes(10), "r1").await;
        assert_eq!(report_of(&r).unwrap().severity, Severity::P4);
        assert!(w.groups.mutations().is_empty());
        // Enabled and its month, but the data did not verify: no group, no health query.
        let w = app_world(&FULL);
        w.pg.answers.lock().unwrap().insert(
            0,
            ("SELECT count(*)".into(), Err("relation missing".into())),
        );
        tick(&w, DRILL_TASK, t0(), "d1").await;
        let r = tick(&w, RPO_TASK, t0() + Duration::minutes(10), "r1").await;
        let a = report_of(&r).unwrap();
        assert_eq!(a.severity, Severity::P2);
        assert_eq!(a.details["app_rto_met"], json!(null));
        assert!(w.groups.mutations().is_empty());
    }

    #[tokio::test]
    async fn a_refused_group_create_fails_the_smoke_test_and_the_drill_still_cleans_up() {
        let w = app_world(&FULL);
        health_answers(&w, true);
        let temp = "nbaops-drill-db-202611251200";
        // A group of that name already exists: AWS refuses (AlreadyExists).
        w.groups.groups.lock().unwrap().insert(
            temp.into(),
            nbaops_shared::ports::DrillGroupState {
                name: temp.into(),
                status: None,
                instances: 0,
                healthy_in_service: 0,
                tags: Tags::new(),
            },
        );
        tick(&w, DRILL_TASK, t0(), "d1").await;
        let r = tick(&w, RPO_TASK, t0() + Duration::minutes(10), "r1").await;
        let a = report_of(&r).unwrap();
        assert_eq!(a.severity, Severity::P2);
        assert!(a.summary.contains("group not created"), "{}", a.summary);
        assert!(w
            .rds
            .mutations()
            .contains(&format!("delete_instance {temp}")));
        // The group that was there (not tagged by the drill) is left alone.
        assert!(w.groups.groups.lock().unwrap().contains_key(temp));
        assert!(w.groups.mutations().is_empty());
    }

    // ---- issue #19: the drill's start outside the change window (t0 is a Wednesday noon) ----

    use nbaops_shared::guard::{
        approved_input, decide, ApprovalRequest, ApprovalState, Decided, GuardStep, Verdict,
    };

    /// Outside the window with the default policy: the drill tick asks (no restore, no drill
    /// record) and hands back the stored request.
    async fn asked(w: &handler::tests::World, id: &str) -> ApprovalRequest {
        let r = tick(w, DRILL_TASK, t0(), id).await;
        let a = &r.records[0].actions[0];
        assert_eq!(
            (a.action.as_str(), a.outcome),
            ("rds.restore_drill", Outcome::NeedsApproval),
            "{}",
            a.sentence
        );
        assert_eq!(a.stopped_by, Some(GuardStep::ChangeWindow));
        assert!(w.rds.mutations().is_empty());
        assert_eq!(
            r.records[0]
                .alerts
                .iter()
                .filter(|x| x.approval_id == a.approval_id)
                .count(),
            1
        );
        assert!(load_current(w).await.is_none());
        let id = a.approval_id.clone().unwrap();
        ApprovalRequest::load(w.deps.ledger.as_ref(), "dev", &id)
            .await
            .unwrap()
            .unwrap()
    }

    async fn load_current(w: &handler::tests::World) -> Option<serde_json::Value> {
        w.deps
            .ledger
            .get("backupdrill#db", "current")
            .await
            .unwrap()
    }

    async fn answer(
        w: &handler::tests::World,
        req: &ApprovalRequest,
        v: Verdict,
    ) -> ApprovalRequest {
        let who = Decided {
            by: "carol".into(),
            from: "cli".into(),
            at: t0() + Duration::minutes(5),
        };
        let ledger = w.deps.ledger.as_ref();
        decide(ledger, "dev", &req.id, v, who).await.unwrap();
        ApprovalRequest::load(ledger, "dev", &req.id)
            .await
            .unwrap()
            .unwrap()
    }

    async fn deliver(
        w: &handler::tests::World,
        req: &ApprovalRequest,
        minutes: i64,
    ) -> RecordReport {
        let inv = Invocation::at("req-approved", t0() + Duration::minutes(minutes));
        let mut r = handle(w, approved_input(req), &inv).await.unwrap();
        r.records.remove(0)
    }

    #[tokio::test]
    async fn outside_the_window_the_drill_asks_and_once_approved_starts_and_runs_on() {
        let w = world(&tables()[WINDOW_OPEN.len()..]);
        w.pg.answer(
            "SELECT count(*)",
            Ok(vec![json!({"n": 5, "checksum": "x"})]),
        );
        let req = asked(&w, "d1").await;
        assert_eq!(req.action.after["instance"], "nbaops-drill-db-202611251200");
        let req = answer(&w, &req, Verdict::Approve).await;
        let rec = deliver(&w, &req, 10).await;
        let a = &rec.actions[0];
        assert_eq!(a.outcome, Outcome::Acted, "{}", a.sentence);
        assert_eq!(a.approval_id.as_deref(), Some(req.id.as_str()));
        assert_eq!(
            w.rds.mutations(),
            vec!["restore_instance nbaops-drill-db-202611251200 from rds:db-auto"]
        );
        // The same drill record as a start in the window, the RTO counted from the restore.
        let d = load_current(&w).await.unwrap();
        assert_eq!(
            (d["phase"].as_str(), d["drill_instance"].as_str()),
            (Some("restoring"), Some("nbaops-drill-db-202611251200"))
        );
        assert_eq!(d["started_at"], json!(t0() + Duration::minutes(10)), "{d}");
        // A second delivery does nothing.
        let again = deliver(&w, &req, 11).await;
        assert!(again.actions.is_empty(), "{again:?}");
        assert_eq!(w.rds.mutations().len(), 1);
        // The state machine goes on as for a drill started in the window: validate, delete.
        w.rds
            .set_instance_status("nbaops-drill-db-202611251200", "available");
        let r = tick(&w, RPO_TASK, t0() + Duration::minutes(30), "r1").await;
        let report = r.records[0]
            .alerts
            .iter()
            .find(|a| a.dedup_key.starts_with("backup-drill#"))
            .unwrap();
        assert_eq!(report.details["rto_seconds"], json!(20 * 60), "{report:?}");
        assert!(w
            .rds
            .mutations()
            .contains(&"delete_instance nbaops-drill-db-202611251200".to_string()));
    }

    #[tokio::test]
    async fn a_denied_or_stale_approval_restores_nothing_and_never_asks_alone() {
        // Denied.
        let w = world(&[]);
        let req = asked(&w, "d1").await;
        let req = answer(&w, &req, Verdict::Deny).await;
        let rec = deliver(&w, &req, 10).await;
        assert!(
            rec.actions.is_empty() && w.rds.mutations().is_empty(),
            "{rec:?}"
        );

        // A newer snapshot since the request: the plan restores the wrong one.
        let w = world(&[]);
        let req = answer(&w, &asked(&w, "d1").await, Verdict::Approve).await;
        w.rds.add_snapshot(
            Site::Primary,
            nbaops_shared::fakes::fake_snapshot(
                "rds:db-newer",
                "db",
                SnapshotKind::Automated,
                t0() + Duration::minutes(2),
            ),
        );
        let rec = deliver(&w, &req, 10).await;
        assert_eq!(rec.actions[0].outcome, Outcome::Skipped);
        assert!(
            rec.actions[0].sentence.contains("latest_snapshot was"),
            "{}",
            rec.actions[0].sentence
        );
        assert!(w.rds.mutations().is_empty());
        assert!(load_current(&w).await.is_none());
        let req = ApprovalRequest::load(w.deps.ledger.as_ref(), "dev", &req.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(req.state, ApprovalState::Used);

        // Policy never: the change window stops it, nobody is asked.
        let w = world(&[("NBAOPS_APPROVAL__RDS__RESTORE_DRILL", "never")]);
        let r = tick(&w, DRILL_TASK, t0(), "d1").await;
        let a = &r.records[0].actions[0];
        assert_eq!(
            (a.outcome, a.stopped_by),
            (Outcome::Skipped, Some(GuardStep::ChangeWindow))
        );
        assert!(r.records[0].alerts.is_empty() && w.rds.mutations().is_empty());
    }

    #[tokio::test]
    async fn live_state_names_what_moved() {
        let w = world(&[]);
        let req = asked(&w, "d1").await;
        let inv = Invocation::at("l", t0());
        let ctx = Ctx::of::<BackupGuard>(w.deps, &inv);
        let live = |state| Live::Is {
            state,
            tags: Tags::new(),
        };
        assert_eq!(
            w.f.restore_live(&req.action, &ctx).await.unwrap(),
            live(req.action.before.clone())
        );
        // A drill instance of that name exists (a second restore would orphan it).
        w.f.restore_apply(&req.action, &ctx).await.unwrap();
        let Live::Is { state, .. } = w.f.restore_live(&req.action, &ctx).await.unwrap() else {
            panic!()
        };
        assert_eq!(
            nbaops_shared::runtime::differs(&req.action.before, &state).as_deref(),
            Some("drill_in_progress was null, now \"nbaops-drill-db-202611251200\", instance was null, now \"creating\"")
        );
        // Another action, or a plan whose instance is not a drill instance: not carried out.
        let mut other = req.action.clone();
        other.after["instance"] = json!("db");
        other.resource = "rds:db".into();
        assert_eq!(
            w.f.restore_live(&other, &ctx).await.unwrap(),
            Live::NotCarriedOut
        );
        assert!(w.f.restore_apply(&other, &ctx).await.is_err());
    }
}

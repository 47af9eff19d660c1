//! `backup-restore-drill`: restore the latest snapshot of each watched instance to a temporary
//! `nbaops-drill-…` instance and return. Later invocations (the 5-minute RPO tick, a repeat of
//! the drill task, or RDS-EVENT-0005/0008/0043 about the temporary instance) move the drill on:
//! once it is `available`, connect, run the validation queries, record the measured RTO (start
//! to verified), report (P2 when the RTO was missed or validation failed), delete the instance.
//! Nothing ever sleeps waiting for RDS.

use chrono::Duration;
use serde_json::json;

use nbaops_shared::alerts::Severity;
use nbaops_shared::deadline::Budget;
use nbaops_shared::events::ScheduledTick;
use nbaops_shared::guard::{Explanation, Observation, Outcome, ProposedAction};
use nbaops_shared::ports::{DbSnapshot, RestoreRequest, Site, SnapshotKind, Tags};
use nbaops_shared::runtime::{Ctx, Live, RecordReport, Work};
use nbaops_shared::sql::{self, i64_of, str_of};
use nbaops_shared::{NbaopsError, Result};

use crate::handler::{guard_step, BackupGuard};
use crate::observe::{stored, unreadable};
use crate::plan::{self, backup_action, CheckResult, Drill, DrillPhase, DrillStep};

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
async fn report(d: &Drill, w: &mut Work<'_>) -> Result<()> {
    let rto_min = d.rto_seconds.unwrap_or(0) as f64 / 60.0;
    let passed = d.passed == Some(true) && d.rto_met == Some(true);
    let failed: Vec<String> = d
        .checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| format!("{}: {}", c.check, c.detail))
        .collect();
    let summary = if passed {
        format!(
            "{}: restore drill passed: {} verified in {rto_min:.1} min",
            d.source, d.snapshot_id
        )
    } else {
        let mut why = failed.clone();
        if d.rto_met == Some(false) {
            why.insert(0, format!("RTO missed ({rto_min:.1} min)"));
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
        }))
        .with_action(format!(
            "temporary instance {} is deleted next",
            d.drill_instance
        ));
    w.note(format!(
        "drill {}: RTO {rto_min:.1} min ({}), validation {}",
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
        }
    ));
    w.raise(a).await
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
                        report(&d, w).await?;
                        save(&ctx, &d).await?;
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
                        report(&d, w).await?;
                        save(&ctx, &d).await?;
                    }
                }
            }
            DrillStep::Fail(why) => {
                let checks = vec![CheckResult {
                    check: "restore".into(),
                    passed: false,
                    detail: why,
                }];
                plan::conclude(&mut d, checks, now, cfg.rto_minutes);
                report(&d, w).await?;
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
        let tags = temp.map(|t| t.tags).unwrap_or_default();
        self.delete_temporary(d, tags, w).await
    }

    async fn delete_temporary(&self, mut d: Drill, tags: Tags, w: &mut Work<'_>) -> Result<()> {
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

    /// Connects to the restored instance and runs the checks that prove the data came back.
    async fn validate(
        &self,
        d: &Drill,
        endpoint: Option<&(String, u16)>,
        ctx: &Ctx<'_>,
    ) -> Validation {
        let cfg = &self.backup.drill;
        let Some(url) = plan::drill_url(&self.backup, d, endpoint) else {
            return Validation::Unreachable("the temporary instance has no endpoint yet".into());
        };
        let secret = format!(
            "/nbaops/{}/secrets/backup/drill/{}",
            ctx.deps.cfg.env, d.source
        );
        let password = match ctx.deps.params.as_deref() {
            Some(p) => match p.get(&secret).await {
                Ok(v) => v,
                Err(e) => return Validation::Unreachable(format!("reading {secret}: {e}")),
            },
            None => None,
        };
        if let Some(pw) = &password {
            nbaops_shared::telemetry::register_secret(pw);
        }
        let url = sql::with_connect_timeout(&url, self.pg.connect_timeout_seconds);
        let session = match self.connector.connect(&url, password.as_deref()).await {
            Ok(s) => s,
            Err(e) => return Validation::Unreachable(e.to_string()),
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

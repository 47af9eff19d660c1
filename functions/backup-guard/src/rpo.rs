//! `backup-rpo-check` (every 5 minutes): per instance, the restore points RDS keeps and the WAL
//! archiving against the RPO (every instance, or a fanned-out work item's one). A breach is
//! tracked in the ledger (`backuprpo#<instance>/open`, `…#<instance>@<account>/<region>` in a
//! fleet member):
//! P2 when it opens, P1 once it lasts over the RPO, resolved when it clears.
//!
//! Issue #22 (`backup.dr_replication.enabled`, the hub's instances): the DR region's automated
//! backups of the instance are part of the same breach: not replicated (P2, and replication is
//! started through the guard: `rds.backup.replicate`), `RestoreWindow.LatestTime` there older
//! than the RPO (P1 at once), unreadable (P2, named). That start is the only change this task
//! makes; without the key it never changes anything.

use chrono::Duration;
use serde_json::json;

use nbaops_shared::alerts::{AlertStatus, Severity};
use nbaops_shared::deadline::Budget;
use nbaops_shared::guard::{Explanation, Observation, Outcome};
use nbaops_shared::ports::InstanceBackup;
use nbaops_shared::runtime::Work;
use nbaops_shared::Result;

use crate::handler::{at_origin, guard_step, BackupGuard};
use crate::observe::{stored, unreadable};
use crate::plan::{self, backup_action, Announce, OpenBreach};

impl BackupGuard {
    /// Each of `instances` the budget admits, checked against the backup promises. In a fleet
    /// member's origin the breach record, the resource and the alert's key are qualified
    /// `@<account>/<region>`: the hub's instance of the same name is another instance.
    pub async fn check_rpo(
        &self,
        instances: &[String],
        w: &mut Work<'_>,
        budget: &mut Budget,
    ) -> Result<()> {
        let ctx = w.ctx;
        let now = ctx.now();
        let cfg = &self.backup;
        let at = at_origin(ctx.origin);
        if instances.is_empty() {
            w.note("backup.instances is empty: nothing to check");
        }
        for instance in instances {
            if !budget.admit(format!("RPO check of rds:{instance}")) {
                continue;
            }
            let obs = self.observe(instance, w).await?;
            let mut reasons = plan::rpo_breaches(&obs, cfg, now);
            let dr_view = self
                .observe_dr(obs.instance.as_ref(), ctx.origin.is_none())
                .await;
            let region = self.rds.dr_region().to_string();
            let dr = plan::dr_findings(&dr_view, &region, cfg.rpo_minutes, now);
            if let Some(n) = &dr.note {
                w.note(format!("rds:{instance}: {n}"));
            }
            // Not replicated: started through the guard. Started now, it is no breach (the DR
            // region reads `pending` from the next check on); not started (dry-run, protected,
            // cooldown, refused, failed), the breach says the backups are not replicated.
            let started = match (&obs.instance, dr.needs_start) {
                (Some(db), true) => self.start_replication(db, &region, w).await?,
                _ => false,
            };
            if !started {
                reasons.extend(dr.reasons.iter().cloned());
            }
            let floor = if dr.p1 { Severity::P1 } else { Severity::P2 };
            let pk = format!("backuprpo#{instance}{at}");
            let resource = format!("rds:{instance}{at}");
            let prev: Option<OpenBreach> = match stored(&ctx, &pk, "open").await? {
                Ok(p) => p,
                Err(e) => {
                    // Never "no open breach": that would re-announce or silently close it.
                    unreadable(w, &resource, "open RPO breach record", &e).await?;
                    continue;
                }
            };
            let (open, announce) = plan::breach_transition_at_least(
                prev.as_ref(),
                &reasons,
                now,
                cfg.rpo_minutes,
                floor,
            );
            let key = format!("backup-rpo#{instance}{at}");
            match &open {
                Some(o) => {
                    ctx.deps
                        .ledger
                        .put(
                            &pk,
                            "open",
                            &json!(o),
                            Some((now + Duration::days(30)).timestamp()),
                        )
                        .await?;
                    w.note(format!(
                        "{resource}: {} breach since {} ({})",
                        o.severity,
                        o.since.to_rfc3339(),
                        o.reasons.join("; ")
                    ));
                }
                None => {
                    if prev.is_some() {
                        ctx.deps.ledger.delete(&pk, "open").await?;
                    }
                    w.note(format!("{resource}: backups within the promises"));
                }
            }
            let published = match (announce, &open) {
                (Announce::Firing(sev), Some(o)) => Some(
                    ctx.alert(
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
                    )
                    .with_details(json!({"since": o.since, "reasons": o.reasons, "rpo_minutes": cfg.rpo_minutes}))
                    .with_runbook("Check automated backups (retention, backup window), the instance's WAL archiving (pg_stat_archiver) and RDS events; restore points older than the RPO mean data loss on failure. A DR-region reason: `aws rds describe-db-instance-automated-backups --region <dr>` (Status, RestoreWindow.LatestTime) and docs/backup-dr-replication.md."),
                ),
                (Announce::Resolved, _) => {
                    let mut a = ctx
                        .alert(
                            prev.as_ref().map(|p| p.severity).unwrap_or(Severity::P2),
                            &resource,
                            key,
                            format!("{instance}: backups back within the RPO"),
                        )
                        .with_details(json!({"since": prev.as_ref().map(|p| p.since)}));
                    a.status = AlertStatus::Resolved;
                    Some(a)
                }
                _ => None,
            };
            if let Some(a) = published {
                w.raise(a).await?;
            }
        }
        Ok(())
    }

    /// `StartDBInstanceAutomatedBackupsReplication` of `db` into the DR region, through the guard
    /// (dry-run, kill switch, the instance's protected tag, cooldown, change window, blast
    /// radius), audited whatever it decided. `true` only when it was started; otherwise the
    /// breach says the backups are not replicated.
    async fn start_replication(
        &self,
        db: &InstanceBackup,
        region: &str,
        w: &mut Work<'_>,
    ) -> Result<bool> {
        let rep = &self.backup.dr_replication;
        let Some(arn) = db.arn.clone() else {
            w.note(format!("rds:{}: no ARN, replication not started", db.id));
            return Ok(false);
        };
        let mut a = backup_action(
            "rds.backup.replicate",
            format!("rds:{}", db.id),
            db.tags.clone(),
            format!(
                "automated backups of {} are not replicated to {region}: the DR recovery point would be the monthly snapshot (issue #22)",
                db.id
            ),
            Explanation::new(
                "start",
                "Started",
                format!("replication of {}'s automated backups to {region}", db.id),
                "SPEC DR: RPO < 15 min in the DR region too (automated backups replicated cross-region)",
            )
            .observe(Observation::value(
                "retention",
                rep.retention_days as f64,
                "days",
            ))
            .key("backup.dr_replication.enabled")
            .key("backup.dr_region")
            .key("backup.dr_replication.retention_days"),
            json!({"dr_region": region, "replication": null}),
            json!({"dr_region": region, "replication": "pending", "retention_days": rep.retention_days, "kms_key_id": rep.kms_key_id}),
        );
        a.cooldown_seconds = rep.cooldown_minutes * 60;
        guard_step(w, 1);
        let audit = w
            .act(&a, || async {
                self.rds
                    .start_replication(&arn, rep.retention_days, rep.kms_key_id.as_deref())
                    .await
            })
            .await?;
        w.note(format!(
            "rds:{}: start replication to {region}: {}",
            db.id,
            audit.outcome_words()
        ));
        Ok(audit.outcome == Outcome::Acted)
    }
}

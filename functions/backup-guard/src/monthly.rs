//! `backup-monthly` (run it daily): the month's manual snapshot once per instance (a
//! deterministic name makes a second run a no-op), copies to the DR region within the
//! concurrent-copy limit (a failed copy is simply a candidate again on the next run), and the
//! one-year retention in both regions. Every create/copy/delete goes through the guard.

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

use nbaops_shared::alerts::Severity;
use nbaops_shared::deadline::{Budget, MARGIN, ONE_AWS_ACTION};
use nbaops_shared::events::ScheduledTick;
use nbaops_shared::guard::{Explanation, Observation, Outcome};
use nbaops_shared::ports::{copyable_tags, DbSnapshot, Site, SnapshotKind, Tags};
use nbaops_shared::runtime::{Ctx, RecordReport, Work};
use nbaops_shared::Result;

use crate::handler::{guard_step, BackupGuard};
use crate::plan::{self, backup_action, OWNER_TAG};

/// The ledger's view of one DR copy.
fn copy_state(v: Option<&Value>) -> (u64, Option<String>) {
    let attempts = v
        .and_then(|v| v.get("attempts"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let state = v
        .and_then(|v| v.get("state"))
        .and_then(Value::as_str)
        .map(String::from);
    (attempts, state)
}

fn copy_expiry(now: DateTime<Utc>, retention_days: i64) -> i64 {
    (now + Duration::days(retention_days + 30)).timestamp()
}

impl BackupGuard {
    pub async fn monthly(&self, tick: &ScheduledTick, ctx: &Ctx<'_>) -> Result<RecordReport> {
        let now = ctx.now();
        let mut w = ctx.work(
            &tick.event_id,
            "schedule",
            format!(
                "monthly snapshots of {} instance(s) ({})",
                self.backup.instances.len(),
                now.format("%Y-%m")
            ),
        );
        if self.backup.instances.is_empty() {
            w.note("backup.instances is empty: nothing to snapshot");
        }
        // Per instance: the month's snapshot, its copy and the retention sweep.
        let mut budget = Budget::new(ctx.inv, MARGIN, ONE_AWS_ACTION * 3);
        for instance in &self.backup.instances {
            if !budget.admit(format!("monthly snapshot of rds:{instance}")) {
                continue;
            }
            self.snapshot_of_the_month(instance, &mut w).await?;
            if self.backup.dr_region.is_empty() {
                let a = ctx.alert(
                    Severity::P3,
                    &format!("rds:{instance}"),
                    format!("backup-dr#{instance}"),
                    format!("{instance}: backup.dr_region is empty: monthly snapshots are not copied to a DR region"),
                );
                w.raise(a).await?;
            } else {
                self.copies(instance, &mut w).await?;
            }
            self.retention(instance, &mut w).await?;
        }
        w.rec.notes.extend(budget.report());
        Ok(w.rec)
    }

    async fn ours(&self, site: Site, instance: &str) -> Result<Vec<DbSnapshot>> {
        Ok(self
            .rds
            .list_snapshots(site, instance, SnapshotKind::Manual)
            .await?
            .into_iter()
            .filter(plan::is_ours)
            .collect())
    }

    async fn snapshot_of_the_month(&self, instance: &str, w: &mut Work<'_>) -> Result<()> {
        let ctx = w.ctx;
        let now = ctx.now();
        let Some(db) = self.rds.describe_instance(instance).await? else {
            w.note(format!("rds:{instance} does not exist: no snapshot"));
            return Ok(());
        };
        let id = plan::monthly_snapshot_id(instance, now);
        let existing = self
            .rds
            .list_snapshots(Site::Primary, instance, SnapshotKind::Manual)
            .await?;
        if let Some(s) = existing.iter().find(|s| s.id == id) {
            w.note(format!("{id}: this month's snapshot exists ({})", s.status));
            return Ok(());
        }
        let mut tags: Tags = copyable_tags(&db.tags);
        tags.insert(OWNER_TAG.0.into(), OWNER_TAG.1.into());
        tags.insert("nbaops:month".into(), now.format("%Y-%m").to_string());
        let a = backup_action(
            "rds.snapshot.create",
            format!("rds-snapshot:{id}"),
            Tags::new(),
            format!(
                "monthly manual snapshot of {instance}, kept {} days (SPEC 5.4.1)",
                self.backup.monthly_retention_days
            ),
            Explanation::new(
                "create",
                "Created",
                format!("the monthly snapshot {id} of {instance}"),
                format!(
                    "SPEC 5.4.1 one manual snapshot a month, none yet for {}",
                    now.format("%Y-%m")
                ),
            )
            .observe(Observation::value(
                "retention",
                self.backup.monthly_retention_days as f64,
                "days",
            ))
            .key("backup.monthly.retention_days"),
            json!({"snapshot": null}),
            json!({"snapshot": id, "instance": instance}),
        );
        guard_step(w, 1);
        let audit = w
            .act(&a, || async {
                self.rds
                    .create_snapshot(instance, &id, &tags)
                    .await
                    .map(drop)
            })
            .await?;
        w.note(format!("create {id}: {}", audit.outcome_words()));
        if audit.outcome == Outcome::Failed {
            let al = ctx
                .alert(
                    Severity::P2,
                    &format!("rds:{instance}"),
                    format!("backup-monthly#{instance}/{}", now.format("%Y-%m")),
                    format!(
                        "{instance}: the monthly snapshot {id} could not be created: {}",
                        audit.error.as_deref().unwrap_or("?")
                    ),
                )
                .with_action(audit.sentence.clone());
            w.raise(al).await?;
        }
        Ok(())
    }

    async fn copies(&self, instance: &str, w: &mut Work<'_>) -> Result<()> {
        let ctx = w.ctx;
        let ledger = ctx.deps.ledger.as_ref();
        let now = ctx.now();
        let cfg = &self.backup;
        let region = self.rds.dr_region().to_string();
        let pk = format!("backupcopy#{instance}");
        let primary = self.ours(Site::Primary, instance).await?;
        let dr = self.ours(Site::Dr, instance).await?;
        let expires = copy_expiry(now, cfg.monthly_retention_days);
        // Track what the DR region shows, so the ledger says where every copy stands.
        for s in &dr {
            let prev = ledger.get(&pk, &s.id).await?;
            let (attempts, state) = copy_state(prev.as_ref());
            if state.as_deref() != Some(s.status.as_str()) {
                ledger
                    .put(
                        &pk,
                        &s.id,
                        &json!({"region": region, "state": s.status, "attempts": attempts.max(1), "updated_at": now}),
                        Some(expires),
                    )
                    .await?;
            }
        }
        let mut retries = Vec::new();
        for s in primary.iter().filter(|s| !dr.iter().any(|d| d.id == s.id)) {
            let prev = ledger.get(&pk, &s.id).await?;
            if copy_state(prev.as_ref()).1.as_deref() == Some("failed") {
                retries.push(s.id.clone());
            }
        }
        let p = plan::plan_copies(
            &primary,
            &dr,
            &retries,
            cfg.max_concurrent_copies,
            cfg.monthly_retention_days,
            now,
        );
        if p.copy.is_empty() && p.deferred.is_empty() {
            w.note(format!(
                "DR {region}: every monthly snapshot of {instance} has its copy ({} in flight)",
                p.in_flight
            ));
        }
        if !p.deferred.is_empty() {
            w.note(format!(
                "DR {region}: {} copy(ies) in flight of at most {}; later: {}",
                p.in_flight + p.copy.len(),
                cfg.max_concurrent_copies,
                p.deferred.join(", ")
            ));
        }
        guard_step(w, p.copy.len() * 2);
        for s in &p.copy {
            let Some(arn) = s.arn.clone() else {
                w.note(format!("{}: no ARN, cannot copy", s.id));
                continue;
            };
            let prev = ledger.get(&pk, &s.id).await?;
            let (attempts, _) = copy_state(prev.as_ref());
            let a = backup_action(
                "rds.snapshot.copy",
                format!("rds-snapshot:{}", s.id),
                Tags::new(),
                format!(
                    "cross-region copy to {region} (SPEC: monthly snapshot copied to the DR region){}",
                    if attempts > 0 {
                        format!(", attempt {}", attempts + 1)
                    } else {
                        String::new()
                    }
                ),
                Explanation::new(
                    "copy",
                    "Copied",
                    format!("{} to {region}", s.id),
                    "SPEC 5.4.1 monthly snapshot copied cross-region",
                )
                .observe(Observation::value("attempt", (attempts + 1) as f64, ""))
                .key("backup.dr_region")
                .key("backup.max_concurrent_copies"),
                json!({"region": region, "copy": null}),
                json!({"region": region, "copy": s.id, "kms_key_id": cfg.dr_kms_key_id}),
            );
            let audit = w
                .act(&a, || async {
                    self.rds
                        .copy_to_dr(&arn, &s.id, &s.tags, cfg.dr_kms_key_id.as_deref())
                        .await
                        .map(drop)
                })
                .await?;
            w.note(format!(
                "copy {} to {region}: {}",
                s.id,
                audit.outcome_words()
            ));
            match audit.outcome {
                Outcome::Acted => {
                    ledger
                        .put(
                            &pk,
                            &s.id,
                            &json!({"region": region, "state": "copying", "attempts": attempts + 1, "updated_at": now}),
                            Some(expires),
                        )
                        .await?
                }
                Outcome::Failed => {
                    let error = audit.error.clone().unwrap_or_default();
                    ledger
                        .put(
                            &pk,
                            &s.id,
                            &json!({"region": region, "state": "failed", "attempts": attempts + 1, "last_error": error, "updated_at": now}),
                            Some(expires),
                        )
                        .await?;
                    // Retried on every later run; repeated failures need a person.
                    let sev = if attempts + 1 >= 3 {
                        Severity::P2
                    } else {
                        Severity::P3
                    };
                    let al = ctx.alert(
                        sev,
                        &format!("rds-snapshot:{}", s.id),
                        format!("backup-copy#{}", s.id),
                        format!(
                            "copy of {} to {region} failed (attempt {}), retried on the next run: {error}",
                            s.id,
                            attempts + 1
                        ),
                    )
                    .with_action(audit.sentence.clone());
                    w.raise(al).await?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    async fn retention(&self, instance: &str, w: &mut Work<'_>) -> Result<()> {
        let now = w.ctx.now();
        let cfg = &self.backup;
        let primary = self.ours(Site::Primary, instance).await?;
        let dr = if cfg.dr_region.is_empty() {
            vec![]
        } else {
            self.ours(Site::Dr, instance).await?
        };
        let (deletions, kept) =
            plan::plan_retention(&primary, &dr, cfg.monthly_retention_days, now);
        w.rec.notes.extend(kept);
        let region = self.rds.dr_region().to_string();
        guard_step(w, primary.len() + dr.len());
        for d in deletions {
            let resource = match d.site {
                Site::Primary => format!("rds-snapshot:{}", d.snapshot.id),
                Site::Dr => format!("rds-snapshot:{region}/{}", d.snapshot.id),
            };
            let a = backup_action(
                "rds.snapshot.delete",
                resource.clone(),
                d.snapshot.tags.clone(),
                d.reason.clone(),
                Explanation::new(
                    "delete",
                    "Deleted",
                    format!("{} ({:?})", d.snapshot.id, d.site),
                    "SPEC 5.4.1 monthly snapshots kept one year, never the only recent copy",
                )
                .observe(match d.snapshot.created {
                    Some(c) => Observation::against(
                        "age",
                        (now - c).num_days() as f64,
                        "days",
                        ">",
                        cfg.monthly_retention_days as f64,
                    ),
                    None => {
                        Observation::value("retention", cfg.monthly_retention_days as f64, "days")
                    }
                })
                .key("backup.monthly.retention_days"),
                json!({"snapshot": d.snapshot.id, "site": d.site, "created": d.snapshot.created}),
                json!({"snapshot": null}),
            );
            let audit = w
                .act(&a, || async {
                    self.rds.delete_snapshot(d.site, &d.snapshot.id).await
                })
                .await?;
            w.note(format!("delete {resource}: {}", audit.outcome_words()));
            if audit.outcome == Outcome::Acted && d.site == Site::Dr {
                w.ctx
                    .deps
                    .ledger
                    .delete(&format!("backupcopy#{instance}"), &d.snapshot.id)
                    .await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::handler::tests::{t0, tick, world};
    use crate::handler::MONTHLY_TASK;
    use nbaops_shared::fakes::fake_snapshot;

    fn ours_at(id: &str, created: DateTime<Utc>) -> DbSnapshot {
        let mut s = fake_snapshot(id, "db", SnapshotKind::Manual, created);
        s.tags.insert(OWNER_TAG.0.into(), OWNER_TAG.1.into());
        s
    }

    #[tokio::test]
    async fn one_snapshot_a_month_copied_and_idempotent() {
        let w = world(&[]);
        tick(&w, MONTHLY_TASK, t0(), "m1").await;
        let r = tick(&w, MONTHLY_TASK, t0() + Duration::hours(24), "m2").await;
        assert_eq!(
            w.rds.mutations(),
            vec![
                "create_snapshot db nbaops-monthly-db-2026-11".to_string(),
                "copy_to_dr nbaops-monthly-db-2026-11 kms=-".to_string(),
            ],
            "{:?}",
            r.records[0].notes
        );
        let copy = w
            .rds
            .snapshot(Site::Dr, "nbaops-monthly-db-2026-11")
            .unwrap();
        assert_eq!(
            copy.tags.get("nbaops:backup").map(String::as_str),
            Some("monthly")
        );
    }

    #[tokio::test]
    async fn failed_copy_is_retried_on_the_next_run() {
        let w = world(&[]);
        *w.rds.fail_copies.lock().unwrap() = 1;
        let r = tick(&w, MONTHLY_TASK, t0(), "m1").await;
        assert_eq!(
            r.records[0].alerts[0].severity,
            Severity::P3,
            "{:?}",
            r.records[0]
        );
        assert!(w
            .rds
            .snapshot(Site::Dr, "nbaops-monthly-db-2026-11")
            .is_none());
        let state = w
            .deps
            .ledger
            .get("backupcopy#db", "nbaops-monthly-db-2026-11")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (state["state"].as_str(), state["attempts"].as_u64()),
            (Some("failed"), Some(1))
        );
        tick(&w, MONTHLY_TASK, t0() + Duration::hours(24), "m2").await;
        assert!(w
            .rds
            .snapshot(Site::Dr, "nbaops-monthly-db-2026-11")
            .is_some());
        let state = w
            .deps
            .ledger
            .get("backupcopy#db", "nbaops-monthly-db-2026-11")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(state["attempts"].as_u64(), Some(2), "{state}");
    }

    #[tokio::test]
    async fn copies_respect_the_concurrency_limit() {
        let w = world(&[("NBAOPS_BACKUP__MAX_CONCURRENT_COPIES", "2")]);
        *w.rds.copy_status.lock().unwrap() = "copying".into();
        for (i, days) in [10, 40, 70].iter().enumerate() {
            w.rds.add_snapshot(
                Site::Primary,
                ours_at(
                    &format!("nbaops-monthly-db-old{i}"),
                    t0() - Duration::days(*days),
                ),
            );
        }
        // This month's + three older ones = four candidates, two slots.
        let r = tick(&w, MONTHLY_TASK, t0(), "m1").await;
        let copies: Vec<String> = w
            .rds
            .mutations()
            .into_iter()
            .filter(|m| m.starts_with("copy_to_dr"))
            .collect();
        assert_eq!(copies.len(), 2, "{copies:?}");
        assert!(copies[0].contains("2026-11"), "newest first: {copies:?}");
        // Both slots still busy on the next run: no new copy.
        tick(&w, MONTHLY_TASK, t0() + Duration::hours(24), "m2").await;
        let copies2 = w
            .rds
            .mutations()
            .into_iter()
            .filter(|m| m.starts_with("copy_to_dr"))
            .count();
        assert_eq!(copies2, 2, "{:?}", r.records[0].notes);
    }

    #[tokio::test]
    async fn retention_in_both_regions_and_dry_run_changes_nothing() {
        let w = world(&[("NBAOPS_GUARD__DRY_RUN", "true")]);
        w.rds.add_snapshot(
            Site::Primary,
            ours_at("nbaops-monthly-db-2025-01", t0() - Duration::days(400)),
        );
        w.rds.add_snapshot(
            Site::Dr,
            ours_at("nbaops-monthly-db-2025-01", t0() - Duration::days(400)),
        );
        // Last month's snapshot, not yet copied: in dry-run nothing is created, so it is the newest.
        w.rds.add_snapshot(
            Site::Primary,
            ours_at("nbaops-monthly-db-2026-10", t0() - Duration::days(30)),
        );
        let r = tick(&w, MONTHLY_TASK, t0(), "m1").await;
        assert!(
            w.rds.mutations().is_empty(),
            "dry-run mutated: {:?}",
            w.rds.mutations()
        );
        let planned: Vec<(&str, &str)> = r.records[0]
            .actions
            .iter()
            .map(|a| (a.action.as_str(), a.resource.as_str()))
            .collect();
        assert_eq!(
            planned,
            vec![
                (
                    "rds.snapshot.create",
                    "rds-snapshot:nbaops-monthly-db-2026-11"
                ),
                (
                    "rds.snapshot.copy",
                    "rds-snapshot:nbaops-monthly-db-2026-10"
                ),
                (
                    "rds.snapshot.delete",
                    "rds-snapshot:nbaops-monthly-db-2025-01"
                ),
            ],
            "the old DR copy is the only one there: kept"
        );
        assert!(r.records[0]
            .actions
            .iter()
            .all(|a| a.outcome == Outcome::WouldAct));

        // Live: the expired primary goes; once the new month's copy exists the old DR copy goes too.
        let w = world(&[]);
        w.rds.add_snapshot(
            Site::Primary,
            ours_at("nbaops-monthly-db-2025-01", t0() - Duration::days(400)),
        );
        w.rds.add_snapshot(
            Site::Dr,
            ours_at("nbaops-monthly-db-2025-01", t0() - Duration::days(400)),
        );
        tick(&w, MONTHLY_TASK, t0(), "m1").await;
        assert!(w
            .rds
            .snapshot(Site::Primary, "nbaops-monthly-db-2025-01")
            .is_none());
        assert!(w
            .rds
            .snapshot(Site::Dr, "nbaops-monthly-db-2025-01")
            .is_none());
        assert!(w
            .rds
            .snapshot(Site::Dr, "nbaops-monthly-db-2026-11")
            .is_some());
        assert!(
            w.rds.snapshot(Site::Primary, "rds:db-auto").is_some(),
            "automated snapshots are RDS's own"
        );
    }
}

//! `backup-rpo-check` (every 5 minutes): per instance, the restore points RDS keeps and the WAL
//! archiving against the RPO (every instance, or a fanned-out work item's one). A breach is
//! tracked in the ledger (`backuprpo#<instance>/open`, `…#<instance>@<account>/<region>` in a
//! fleet member):
//! P2 when it opens, P1 once it lasts over the RPO, resolved when it clears. Never changes anything.

use chrono::Duration;
use serde_json::json;

use nbaops_shared::alerts::{AlertStatus, Severity};
use nbaops_shared::deadline::Budget;
use nbaops_shared::runtime::Work;
use nbaops_shared::Result;

use crate::handler::{at_origin, BackupGuard};
use crate::observe::{stored, unreadable};
use crate::plan::{self, Announce, OpenBreach};

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
            let reasons = plan::rpo_breaches(&obs, cfg, now);
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
            let (open, announce) =
                plan::breach_transition(prev.as_ref(), &reasons, now, cfg.rpo_minutes);
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
                    .with_runbook("Check automated backups (retention, backup window), the instance's WAL archiving (pg_stat_archiver) and RDS events; restore points older than the RPO mean data loss on failure."),
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
}

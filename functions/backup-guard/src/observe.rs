//! Reading backup state: what RDS and PostgreSQL (pg_stat_archiver) say about an instance's
//! restore points, and the ledger items the tasks keep. An item this version cannot read is
//! reported (a P2 and a note), never taken as "none".

use serde::de::DeserializeOwned;

use nbaops_shared::guard::{decode_state, report_unreadable_state};
use nbaops_shared::ports::{InstanceBackup, Site, SnapshotKind};
use nbaops_shared::runtime::{Ctx, Work};
use nbaops_shared::sql;
use nbaops_shared::Result;

use crate::handler::BackupGuard;
use crate::plan::{self, BackupObservation, DrView};

/// The ledger item `pk`/`sk` as stored; `Err` (inside) when it cannot be read.
pub async fn stored<T: DeserializeOwned>(
    ctx: &Ctx<'_>,
    pk: &str,
    sk: &str,
) -> Result<std::result::Result<Option<T>, String>> {
    Ok(decode_state(ctx.deps.ledger.get(pk, sk).await?))
}

/// A ledger item that cannot be read: P2, and the report says why. The caller takes no action
/// on `resource`.
pub async fn unreadable(w: &mut Work<'_>, resource: &str, what: &str, err: &str) -> Result<()> {
    let deps = w.ctx.deps;
    let (note, alert) = report_unreadable_state(
        &deps.cfg,
        deps.notifier.as_ref(),
        resource,
        what,
        err,
        w.ctx.now(),
    )
    .await?;
    w.note(note);
    w.rec.alerts.push(alert);
    Ok(())
}

impl BackupGuard {
    /// The instance, its latest automated snapshot and its WAL archiving, as the RPO check sees them.
    pub async fn observe(&self, instance: &str, w: &mut Work<'_>) -> Result<BackupObservation> {
        let described = self.rds.describe_instance(instance).await?;
        if described.is_none() {
            return Ok(BackupObservation {
                instance: None,
                latest_automated: None,
                wal_problem: None,
            });
        }
        let automated = self
            .rds
            .list_snapshots(Site::Primary, instance, SnapshotKind::Automated)
            .await?;
        let latest_automated = automated
            .iter()
            .filter(|s| s.is_available())
            .filter_map(|s| s.created)
            .max();
        let wal_problem = match self.backup.wal_databases.get(instance) {
            Some(name) => self.archiver(name, w).await,
            None => None,
        };
        Ok(BackupObservation {
            instance: described,
            latest_automated,
            wal_problem,
        })
    }

    /// The DR region's automated backups of `instance` (issue #22): not checked unless
    /// `backup.dr_replication.enabled` and the hub's origin (the DR client is the hub's); an
    /// instance without an ARN or a DR region that does not answer is `Unreadable`, never "none".
    pub async fn observe_dr(&self, instance: Option<&InstanceBackup>, hub: bool) -> DrView {
        if !self.backup.dr_replication.enabled || !hub {
            return DrView::NotChecked;
        }
        let Some(i) = instance else {
            // "instance not found" is already the breach.
            return DrView::NotChecked;
        };
        let Some(arn) = i.arn.as_deref() else {
            return DrView::Unreadable(format!("{} has no DBInstanceArn to match", i.id));
        };
        match self.rds.replicated_backups(arn).await {
            Ok(b) => DrView::Read(b),
            Err(e) => DrView::Unreadable(e.to_string()),
        }
    }

    /// pg_stat_archiver where the database is reachable; unreachable is noted, not a breach
    /// (pg-health reports an unreachable database).
    async fn archiver(&self, name: &str, w: &mut Work<'_>) -> Option<String> {
        let Some(target) = self.pg.databases.iter().find(|t| t.name == name) else {
            w.note(format!(
                "WAL: '{name}' is not in pg.databases: archiving not checked"
            ));
            return None;
        };
        let setup = sql::session_setup(
            "nbaops-backup-guard",
            self.pg.statement_timeout_ms,
            self.pg.lock_timeout_ms,
            true,
        );
        let opened = sql::open_session(
            &w.ctx,
            &self.pg,
            self.connector.as_ref(),
            target,
            "monitor",
            &setup,
        )
        .await;
        let rows = match opened {
            Ok(pg) => pg.query(sql::ARCHIVER).await,
            Err(e) => Err(e),
        };
        match rows.map(|r| r.into_iter().next()) {
            Ok(Some(row)) => {
                let problem =
                    plan::archiver_problem(&row, w.ctx.now(), self.backup.max_archive_age_minutes);
                w.note(format!(
                    "WAL {name}: {}",
                    problem.as_deref().unwrap_or("archiving healthy")
                ));
                problem
            }
            Ok(None) => {
                w.note(format!("WAL {name}: pg_stat_archiver returned no row"));
                None
            }
            Err(e) => {
                w.note(format!(
                    "WAL {name}: not reachable, archiving not checked: {e}"
                ));
                None
            }
        }
    }
}

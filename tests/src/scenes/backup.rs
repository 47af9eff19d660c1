//! backup-guard on the emulated nbaops-dev-db: the 5-minute RPO check (restore point, automated
//! backups, daily snapshot), then the monthly manual snapshot through the guard. The demo sets
//! no DR region, so the copy step says so with a P3 (the e2e tests cover the copy). Then the
//! backups kept in S3 (`backup-s3-check`, docs/backups-s3.md) in the demo bucket the last scene
//! seeds: one weekly dump of the 12 promised, this month's physical backup still in STANDARD,
//! and no WAL archive at all.

use super::{Before, Scene};

pub fn scenes() -> Vec<Scene> {
    vec![
        Scene {
            title: "backup-guard: RPO check of nbaops-dev-db (restore point within 15 min, 7-day retention, daily snapshot)",
            function: "backup-guard",
            fixture: "events/schedule/backup-rpo-check.json",
            before: Before::Param("backup/instances", "nbaops-dev-db"),
        },
        Scene {
            title: "backup-guard: the monthly manual snapshot, created once through the guard",
            function: "backup-guard",
            fixture: "events/schedule/backup-monthly.json",
            before: Before::Nothing,
        },
        Scene {
            title: "backup-guard: the backups in S3 — one weekly dump of 12, a physical backup in STANDARD (not Glacier), no WAL",
            function: "backup-guard",
            fixture: "events/schedule/backup-s3-check.json",
            before: Before::BackupObjects(&[
                ("logical/{date}/app.dump", "STANDARD"),
                ("physical/{month}/base.tar", "STANDARD"),
            ]),
        },
    ]
}

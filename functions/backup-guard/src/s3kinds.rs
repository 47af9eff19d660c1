//! `backup-s3-check` (daily, issue #22): the backups kept in S3 — the weekly logical backup
//! (pg_dump, kept 12 weeks), the WAL archive (7 days), the monthly physical backup (12 months in
//! Glacier) — exist where `backup.s3.*` says, as promised. Per kind (a prefix of
//! `backup.s3.bucket`) five findings are judged on a listing of the prefix:
//!
//! - `missing`: no object at all (P2);
//! - `late`: the newest object is older than `every_hours` + `backup.s3.grace_hours` (P2);
//! - `storage-class`: an object older than `backup.s3.lifecycle_grace_hours` is not in one of
//!   `storage_classes` (P3; the monthly physical backup must be in Glacier);
//! - `too-few`: fewer than `min_count` backups younger than `retention_days` (P3). A backup is
//!   the first path segment after the prefix: `physical/2026-11/base.tar` and
//!   `physical/2026-11/wal.tar` are one backup, `wal/000000010000000000000003` is one;
//! - `past-retention`: objects older than `retention_days` + the lifecycle grace are still there:
//!   the bucket's lifecycle rule is not expiring them (P3).
//!
//! A bucket or prefix that cannot be listed is the finding `unreadable` (P2): the kind's other
//! findings are neither raised nor resolved on a listing nobody saw. Each finding is alerted
//! once when it opens and resolved when it clears, remembered in the ledger
//! (`backups3#<kind>`, sort key `open/<finding>`). Never writes to nor deletes from the bucket.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use nbaops_shared::alerts::{AlertStatus, Severity};
use nbaops_shared::config::backup::{S3Backups, S3Kind};
use nbaops_shared::events::ScheduledTick;
use nbaops_shared::ports::StoredObject;
use nbaops_shared::runtime::{Ctx, RecordReport, Work};
use nbaops_shared::Result;

use crate::handler::BackupGuard;
use crate::observe::{stored, unreadable};

pub const S3_TASK: &str = "backup-s3-check";

/// The findings of a listed kind, in the order they are judged and reported.
pub const FINDINGS: &[&str] = &[
    "missing",
    "late",
    "storage-class",
    "too-few",
    "past-retention",
];
/// The finding of a kind whose prefix cannot be listed.
pub const UNREADABLE: &str = "unreadable";

/// A finding that holds now.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub name: &'static str,
    pub severity: Severity,
    pub summary: String,
    pub details: Value,
}

/// A finding open in the ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenFinding {
    pub since: DateTime<Utc>,
    pub severity: Severity,
    pub summary: String,
}

/// The backup an object belongs to: the first path segment of its key after the prefix.
pub fn backup_of<'a>(kind: &S3Kind, key: &'a str) -> &'a str {
    let rest = key.strip_prefix(kind.prefix.as_str()).unwrap_or(key);
    rest.split('/').next().unwrap_or(rest)
}

fn hours(d: Duration) -> String {
    let h = d.num_minutes() as f64 / 60.0;
    if h >= 48.0 {
        format!("{:.1} days", h / 24.0)
    } else {
        format!("{h:.1} h")
    }
}

/// What holds of one kind's listing at `now` (pure: the listing, the config, the clock).
pub fn judge(
    kind: &S3Kind,
    cfg: &S3Backups,
    objects: &[StoredObject],
    now: DateTime<Utc>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let place = format!("{}/{}", cfg.bucket.as_deref().unwrap_or(""), kind.prefix);
    let dated: Vec<(&StoredObject, DateTime<Utc>)> = objects
        .iter()
        .filter_map(|o| o.last_modified.map(|t| (o, t)))
        .collect();
    let Some(newest) = dated.iter().map(|(_, t)| *t).max() else {
        out.push(Finding {
            name: "missing",
            severity: Severity::P2,
            summary: format!(
                "{} backups: nothing under s3://{place} (expected one every {} h)",
                kind.name, kind.every_hours
            ),
            details: json!({"objects": objects.len()}),
        });
        return out;
    };
    let lifecycle_grace = Duration::hours(cfg.lifecycle_grace_hours);
    let late_after = Duration::hours(kind.every_hours + cfg.grace_hours);
    if now - newest > late_after {
        out.push(Finding {
            name: "late",
            severity: Severity::P2,
            summary: format!(
                "{} backups are late: the newest under s3://{place} is {} old (expected every {} h, + {} h grace)",
                kind.name,
                hours(now - newest),
                kind.every_hours,
                cfg.grace_hours
            ),
            details: json!({"newest": newest, "every_hours": kind.every_hours, "grace_hours": cfg.grace_hours}),
        });
    }
    if !kind.storage_classes.is_empty() {
        let wrong: Vec<&StoredObject> = dated
            .iter()
            .filter(|(o, t)| {
                now - *t > lifecycle_grace && !kind.storage_classes.contains(&o.storage_class)
            })
            .map(|(o, _)| *o)
            .collect();
        if !wrong.is_empty() {
            out.push(Finding {
                name: "storage-class",
                severity: Severity::P3,
                summary: format!(
                    "{} backups: {} object(s) under s3://{place} not in {} (e.g. {} in {})",
                    kind.name,
                    wrong.len(),
                    kind.storage_classes.join("/"),
                    wrong[0].key,
                    wrong[0].storage_class
                ),
                details: json!({
                    "expected": kind.storage_classes,
                    "objects": wrong.iter().take(20).map(|o| json!({"key": o.key, "storage_class": o.storage_class})).collect::<Vec<_>>(),
                    "count": wrong.len(),
                }),
            });
        }
    }
    let retention = Duration::days(kind.retention_days);
    if kind.min_count > 0 {
        let mut kept: Vec<&str> = dated
            .iter()
            .filter(|(_, t)| now - *t <= retention)
            .map(|(o, _)| backup_of(kind, &o.key))
            .collect();
        kept.sort_unstable();
        kept.dedup();
        if kept.len() < kind.min_count {
            out.push(Finding {
                name: "too-few",
                severity: Severity::P3,
                summary: format!(
                    "{} backups: {} kept within {} days under s3://{place}, {} promised",
                    kind.name,
                    kept.len(),
                    kind.retention_days,
                    kind.min_count
                ),
                details: json!({"kept": kept.len(), "min_count": kind.min_count, "retention_days": kind.retention_days}),
            });
        }
    }
    let stale: Vec<&StoredObject> = dated
        .iter()
        .filter(|(_, t)| now - *t > retention + lifecycle_grace)
        .map(|(o, _)| *o)
        .collect();
    if !stale.is_empty() {
        out.push(Finding {
            name: "past-retention",
            severity: Severity::P3,
            summary: format!(
                "{} backups: {} object(s) under s3://{place} older than {} days (+ {} h) are still there: the lifecycle rule is not expiring them (e.g. {})",
                kind.name,
                stale.len(),
                kind.retention_days,
                cfg.lifecycle_grace_hours,
                stale[0].key
            ),
            details: json!({
                "retention_days": kind.retention_days,
                "objects": stale.iter().take(20).map(|o| json!({"key": o.key, "last_modified": o.last_modified})).collect::<Vec<_>>(),
                "count": stale.len(),
            }),
        });
    }
    out
}

/// What to say about one finding, from what the ledger held and what holds now.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Nothing,
    Open,
    /// Still open; a different severity re-announces it.
    Keep {
        announce: bool,
    },
    Resolve,
}

pub fn step(prev: Option<&OpenFinding>, now: Option<&Finding>) -> Step {
    match (prev, now) {
        (None, None) => Step::Nothing,
        (None, Some(_)) => Step::Open,
        (Some(p), Some(n)) => Step::Keep {
            announce: p.severity != n.severity,
        },
        (Some(_), None) => Step::Resolve,
    }
}

impl BackupGuard {
    pub async fn s3_check(&self, tick: &ScheduledTick, ctx: &Ctx<'_>) -> Result<RecordReport> {
        let cfg = &self.s3;
        let mut w = ctx.work(
            &tick.event_id,
            "schedule",
            format!("S3 backups: {} kind(s)", cfg.kinds.len()),
        );
        let Some(bucket) = cfg.bucket.clone() else {
            w.note("backup.s3.bucket is empty: the S3 backup kinds are not checked");
            return Ok(w.rec);
        };
        if cfg.kinds.is_empty() {
            w.note("every backup.s3.<kind>.prefix is empty: nothing to check");
        }
        for kind in &cfg.kinds {
            let resource = format!("s3://{bucket}/{}", kind.prefix);
            match self.store.list(&bucket, &kind.prefix).await {
                Ok(objects) => {
                    let found = judge(kind, cfg, &objects, ctx.now());
                    w.note(format!(
                        "{resource}: {} object(s){}",
                        objects.len(),
                        if found.is_empty() {
                            ", as promised".to_string()
                        } else {
                            format!(
                                "; {}",
                                found.iter().map(|f| f.name).collect::<Vec<_>>().join(", ")
                            )
                        }
                    ));
                    for name in std::iter::once(UNREADABLE).chain(FINDINGS.iter().copied()) {
                        let now = found.iter().find(|f| f.name == name);
                        self.s3_finding(kind, name, now, &resource, &mut w).await?;
                    }
                }
                Err(e) => {
                    // Never "no backups" nor "fine": the listing is a finding of its own, and the
                    // kind's other findings stay as they were.
                    w.note(format!("{resource}: cannot be listed: {e}"));
                    let f = Finding {
                        name: UNREADABLE,
                        severity: Severity::P2,
                        summary: format!(
                            "{} backups: s3://{bucket}/{} cannot be listed, not verified: {e}",
                            kind.name, kind.prefix
                        ),
                        details: json!({"error": e.to_string()}),
                    };
                    self.s3_finding(kind, UNREADABLE, Some(&f), &resource, &mut w)
                        .await?;
                }
            }
        }
        Ok(w.rec)
    }

    async fn s3_finding(
        &self,
        kind: &S3Kind,
        name: &str,
        found: Option<&Finding>,
        resource: &str,
        w: &mut Work<'_>,
    ) -> Result<()> {
        let ctx = w.ctx;
        let now = ctx.now();
        let pk = format!("backups3#{}", kind.name);
        let sk = format!("open/{name}");
        let prev: Option<OpenFinding> = match stored(&ctx, &pk, &sk).await? {
            Ok(p) => p,
            Err(e) => {
                unreadable(w, resource, &format!("open finding {name}"), &e).await?;
                return Ok(());
            }
        };
        let key = format!("backup-s3#{}/{name}", kind.name);
        let announce = match step(prev.as_ref(), found) {
            Step::Nothing => None,
            Step::Open | Step::Keep { announce: true } => found.map(|f| (f, true)),
            Step::Keep { announce: false } => found.map(|f| (f, false)),
            Step::Resolve => {
                ctx.deps.ledger.delete(&pk, &sk).await?;
                let p = prev.as_ref();
                let mut a = ctx
                    .alert(
                        p.map(|p| p.severity).unwrap_or(Severity::P3),
                        resource,
                        key,
                        format!("{} backups: {name} cleared", kind.name),
                    )
                    .with_details(
                        json!({"since": p.map(|p| p.since), "was": p.map(|p| &p.summary)}),
                    );
                a.status = AlertStatus::Resolved;
                w.raise(a).await?;
                return Ok(());
            }
        };
        if let Some((f, publish)) = announce {
            let open = OpenFinding {
                since: prev.as_ref().map(|p| p.since).unwrap_or(now),
                severity: f.severity,
                summary: f.summary.clone(),
            };
            ctx.deps
                .ledger
                .put(
                    &pk,
                    &sk,
                    &json!(open),
                    Some((now + Duration::days(30)).timestamp()),
                )
                .await?;
            if publish {
                let a = ctx
                    .alert(f.severity, resource, key, f.summary.clone())
                    .with_details(json!({"kind": kind.name, "finding": name, "since": open.since, "facts": f.details}))
                    .with_runbook("See docs/runbooks/backup-s3.md: the producer (ECS task, its logs), the bucket's lifecycle rules, the backup.s3.* keys.");
                w.raise(a).await?;
            } else {
                w.note(format!(
                    "{resource}: {name} still open since {}",
                    open.since.to_rfc3339()
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::handler::tests::{t0, tick, world};
    use chrono::TimeZone;

    const B: &str = "nbaops-dev-backups";

    fn cfg() -> S3Backups {
        let w = world(&[("NBAOPS_BACKUP__S3__BUCKET", B)]);
        w.f.s3.clone()
    }

    fn obj(key: &str, at: DateTime<Utc>, class: &str) -> StoredObject {
        StoredObject {
            key: key.into(),
            size: 1,
            last_modified: Some(at),
            storage_class: class.into(),
        }
    }

    fn names(f: &[Finding]) -> Vec<&str> {
        f.iter().map(|f| f.name).collect()
    }

    fn kind<'a>(c: &'a S3Backups, name: &str) -> &'a S3Kind {
        c.kinds.iter().find(|k| k.name == name).unwrap()
    }

    #[test]
    fn spec_defaults_are_the_promises() {
        let c = cfg();
        let l = kind(&c, "logical");
        assert_eq!(
            (l.every_hours, l.retention_days, l.min_count),
            (168, 84, 12)
        );
        let w = kind(&c, "wal");
        assert_eq!(w.retention_days, 7);
        let p = kind(&c, "physical");
        assert_eq!(
            (p.every_hours, p.retention_days, p.min_count),
            (744, 365, 12)
        );
        assert!(p.storage_classes.contains(&"GLACIER".to_string()));
        assert!(!p.storage_classes.contains(&"STANDARD".to_string()));
    }

    #[test]
    fn each_finding_on_its_own() {
        let mut c = cfg();
        let now = t0();
        // Twelve weekly dumps, the newest a day old: as promised.
        let mut l = kind(&c, "logical").clone();
        let weekly: Vec<StoredObject> = (0..12)
            .map(|i| {
                let at = now - Duration::days(1 + 7 * i);
                obj(
                    &format!("logical/{}/app.dump", at.format("%Y-%m-%d")),
                    at,
                    "STANDARD",
                )
            })
            .collect();
        assert!(judge(&l, &c, &weekly, now).is_empty());
        assert_eq!(names(&judge(&l, &c, &[], now)), vec!["missing"]);
        // The newest 7 days + 6 h old exactly: not late; a minute more: late.
        let edge = now - Duration::hours(168 + 6);
        let one = |at| vec![obj("logical/x/app.dump", at, "STANDARD")];
        l.min_count = 0;
        assert!(judge(&l, &c, &one(edge), now).is_empty());
        assert_eq!(
            names(&judge(&l, &c, &one(edge - Duration::minutes(1)), now)),
            vec!["late"]
        );
        // Eleven backups kept: too few (two objects of one backup count once).
        l.min_count = 12;
        let mut eleven = weekly[..11].to_vec();
        eleven.push(obj(
            &weekly[0].key.replace("app", "other"),
            now - Duration::days(1),
            "STANDARD",
        ));
        assert_eq!(names(&judge(&l, &c, &eleven, now)), vec!["too-few"]);
        // An object 84 days + 72 h old is still fine, one more hour: past retention.
        let mut old = weekly.clone();
        old.push(obj(
            "logical/old/app.dump",
            now - Duration::days(84) - Duration::hours(72),
            "STANDARD",
        ));
        assert!(judge(&l, &c, &old, now).is_empty());
        old.push(obj(
            "logical/older/app.dump",
            now - Duration::days(84) - Duration::hours(73),
            "STANDARD",
        ));
        let f = judge(&l, &c, &old, now);
        assert_eq!(names(&f), vec!["past-retention"]);
        assert!(
            f[0].summary.contains("logical/older/app.dump"),
            "{}",
            f[0].summary
        );

        // Physical: STANDARD within the lifecycle grace is fine, after it the wrong class.
        c.grace_hours = 6;
        let mut p = kind(&c, "physical").clone();
        p.min_count = 1;
        let fresh = vec![obj(
            "physical/2026-11/base.tar",
            now - Duration::hours(71),
            "STANDARD",
        )];
        assert!(judge(&p, &c, &fresh, now).is_empty());
        let aged = vec![obj(
            "physical/2026-11/base.tar",
            now - Duration::hours(73),
            "STANDARD",
        )];
        let f = judge(&p, &c, &aged, now);
        assert_eq!(names(&f), vec!["storage-class"]);
        assert_eq!(f[0].severity, Severity::P3);
        for class in ["GLACIER", "DEEP_ARCHIVE", "GLACIER_IR"] {
            let ok = vec![obj(
                "physical/2026-11/base.tar",
                now - Duration::hours(73),
                class,
            )];
            assert!(judge(&p, &c, &ok, now).is_empty(), "{class}");
        }
    }

    #[test]
    fn a_backup_is_the_first_segment_after_the_prefix() {
        let c = cfg();
        let p = kind(&c, "physical");
        assert_eq!(backup_of(p, "physical/2026-11/base.tar"), "2026-11");
        assert_eq!(backup_of(p, "physical/2026-11.tar"), "2026-11.tar");
    }

    #[tokio::test]
    async fn findings_open_once_resolve_and_an_unreadable_bucket_is_never_fine() {
        let w = world(&[
            ("NBAOPS_BACKUP__S3__BUCKET", B),
            ("NBAOPS_BACKUP__S3__WAL__PREFIX", ""),
            ("NBAOPS_BACKUP__S3__LOGICAL__MIN_COUNT", "1"),
            ("NBAOPS_BACKUP__S3__PHYSICAL__MIN_COUNT", "1"),
        ]);
        let start = Utc.with_ymd_and_hms(2026, 11, 2, 4, 0, 0).unwrap();
        w.store
            .put(B, "logical/2026-11-01/app.dump", start, "STANDARD");
        // Nothing physical yet: missing (P2), once.
        let r = tick(&w, S3_TASK, start, "a").await;
        let a = &r.records[0].alerts;
        assert_eq!(a.len(), 1, "{:?}", r.records[0]);
        assert_eq!(a[0].dedup_key, "backup-s3#physical/missing");
        assert_eq!(a[0].severity, Severity::P2);
        let r = tick(&w, S3_TASK, start + Duration::hours(1), "b").await;
        assert!(r.records[0].alerts.is_empty(), "{:?}", r.records[0]);
        // The physical backup lands in STANDARD: missing resolved; 4 days on the wrong class.
        w.store.put(
            B,
            "physical/2026-11/base.tar",
            start + Duration::hours(2),
            "STANDARD",
        );
        let r = tick(&w, S3_TASK, start + Duration::hours(3), "c").await;
        let a = &r.records[0].alerts;
        assert_eq!(a.len(), 1);
        assert_eq!(
            (a[0].dedup_key.as_str(), a[0].status),
            ("backup-s3#physical/missing", AlertStatus::Resolved)
        );
        let r = tick(&w, S3_TASK, start + Duration::days(4), "d").await;
        let keys: Vec<&str> = r.records[0]
            .alerts
            .iter()
            .map(|a| a.dedup_key.as_str())
            .collect();
        assert_eq!(keys, vec!["backup-s3#physical/storage-class"]);
        // Nine days on, no new dump: the logical backups are late.
        let r = tick(&w, S3_TASK, start + Duration::days(9), "e").await;
        let keys: Vec<&str> = r.records[0]
            .alerts
            .iter()
            .map(|a| a.dedup_key.as_str())
            .collect();
        assert_eq!(keys, vec!["backup-s3#logical/late"]);
        // The bucket refuses: unreadable per kind, nothing resolved, nothing said fine.
        w.store.refuse.lock().unwrap().insert(B.into());
        let r = tick(
            &w,
            S3_TASK,
            start + Duration::days(9) + Duration::hours(1),
            "f",
        )
        .await;
        let a = &r.records[0].alerts;
        let keys: Vec<&str> = a.iter().map(|a| a.dedup_key.as_str()).collect();
        assert_eq!(
            keys,
            vec![
                "backup-s3#logical/unreadable",
                "backup-s3#physical/unreadable"
            ]
        );
        assert!(a
            .iter()
            .all(|a| a.status == AlertStatus::Firing && a.severity == Severity::P2));
        assert!(!r.records[0].notes.iter().any(|n| n.contains("as promised")));
        // Readable again, a fresh dump, the physical one in Glacier: everything resolves.
        w.store.refuse.lock().unwrap().clear();
        let later = start + Duration::days(9) + Duration::hours(2);
        w.store
            .put(B, "logical/2026-11-10/app.dump", later, "STANDARD");
        w.store.put(
            B,
            "physical/2026-11/base.tar",
            start + Duration::hours(2),
            "GLACIER",
        );
        let r = tick(&w, S3_TASK, later, "g").await;
        let mut resolved: Vec<&str> = r.records[0]
            .alerts
            .iter()
            .filter(|a| a.status == AlertStatus::Resolved)
            .map(|a| a.dedup_key.as_str())
            .collect();
        resolved.sort();
        assert_eq!(
            resolved,
            vec![
                "backup-s3#logical/late",
                "backup-s3#logical/unreadable",
                "backup-s3#physical/storage-class",
                "backup-s3#physical/unreadable"
            ]
        );
        assert_eq!(r.records[0].alerts.len(), 4);
        assert_eq!(
            *w.store.listed.lock().unwrap().last().unwrap(),
            (B.to_string(), "physical/".to_string())
        );
    }

    #[tokio::test]
    async fn no_bucket_is_said_and_nothing_listed() {
        let w = world(&[]);
        let r = tick(&w, S3_TASK, t0(), "a").await;
        assert!(r.records[0].alerts.is_empty());
        assert!(r.records[0].notes[0].contains("backup.s3.bucket is empty"));
        assert!(w.store.listed.lock().unwrap().is_empty());
    }
}

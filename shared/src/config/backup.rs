//! The `backup` section: what backup-guard enforces (SPEC "Backups" 5.4.1/5.4.3 and "High
//! availability and disaster recovery"): RPO < 15 min, automated backups kept >= 7 days and
//! taken daily, one manual snapshot a month kept a year and copied to the DR region, a quarterly
//! restore drill that must verify within the RTO (1 h).
//!
//! Passwords never live here: the drill reads `/nbaops/<env>/secrets/backup/drill/<instance>`
//! (SecureString) when its connection URL carries none.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{positive, Settings};
use crate::error::{NbaopsError, Result};

/// The name prefix of backup-guard's monthly snapshots (kept a year on purpose): backup-guard
/// names them so, and posture-check never counts them as unused.
pub const MONTHLY_PREFIX: &str = "nbaops-monthly-";

pub const KEYS: &[(&str, &str, &str)] = &[
    ("backup.instances", "", "comma list of RDS instances whose backups backup-guard watches"),
    ("backup.rpo_minutes", "15", "LatestRestorableTime older than this = RPO breach (SPEC: RPO < 15 min); a breach lasting longer is P1"),
    ("backup.retention_min_days", "7", "automated backups must be on with at least this retention (SPEC: 7 days)"),
    ("backup.automated_max_age_hours", "24", "the latest automated snapshot must be younger than this (SPEC: daily)"),
    ("backup.monthly.retention_days", "365", "monthly manual snapshots (and their DR copies) are deleted after this (SPEC: 1 year)"),
    ("backup.dr_region", "", "region the monthly snapshots are copied to (empty: no copy, a P3 says so)"),
    ("backup.dr_kms_key_id", "", "KMS key (ARN, in the DR region) for copies of encrypted snapshots"),
    ("backup.max_concurrent_copies", "5", "snapshot copies in flight into the DR region at once (AWS allows 20)"),
    ("backup.rto_minutes", "60", "restore drill: start to verified must be within this (SPEC: RTO < 1 h)"),
    ("backup.drill.instance_class", "db.t3.micro", "class of the drill's temporary instance"),
    ("backup.drill.subnet_group", "", "DB subnet group of the temporary instance (one the function can reach)"),
    ("backup.drill.security_groups", "", "comma list of VPC security groups of the temporary instance"),
    ("backup.drill.url_template", "postgres://nbaops_drill@{host}:{port}/postgres?sslmode=require", "how the drill connects to the restored instance: {host} {port} {instance} {source}"),
    ("backup.drill.url_overrides", "{}", "JSON: source or temporary instance id -> URL (same placeholders), e.g. to point the drill elsewhere"),
    ("backup.drill.key_tables", "", "comma list of [schema.]table whose row counts the drill checks"),
    ("backup.drill.min_rows", "1", "each key table must hold at least this many rows"),
    ("backup.drill.checksum_table", "", "[schema.]table whose md5 over all rows the drill computes and records"),
    ("backup.drill.checksum_expected", "", "when set, the checksum must equal it"),
    ("backup.drill.give_up_hours", "6", "a temporary instance not verified after this long is deleted and the drill failed"),
    ("backup.drill.statement_timeout_seconds", "300", "statement_timeout of the drill's validation queries (a restored instance reads cold)"),
    // Issue #22: the application RTO and the twice-yearly full-system drill.
    ("backup.drill.app_rto_minutes", "30", "restore drill: start to the first all-healthy answer of the application health queries must be within this (SPEC: application RTO < 30 min)"),
    ("backup.drill.app_health_queries", "[]", "JSON list of SQL queries run read-only on the restored instance after validation; healthy = at least one row and no value of the first row null, false, 0, '' or 'f'/'false'; all must be healthy at once (empty list: application RTO not measured)"),
    ("backup.drill.full_system.enabled", "false", "full-system drill: after the database is verified, launch the application in an isolated Auto Scaling group (smoke test), then delete it"),
    ("backup.drill.full_system.months", "jan,jul", "comma list of months (jan..dec) whose drills are full-system ones (twice a year)"),
    ("backup.drill.full_system.launch_template", "", "launch template name of the smoke-test group (required when enabled)"),
    ("backup.drill.full_system.launch_template_version", "$Default", "launch template version: a number, $Default or $Latest"),
    ("backup.drill.full_system.subnets", "", "comma list of isolated subnet ids of the smoke-test group (required when enabled)"),
    ("backup.wal.databases", "", "comma list of instance=name: pg.databases entry to read pg_stat_archiver from"),
    ("backup.wal.max_archive_age_minutes", "15", "last archived WAL older than this = archiving stalled (0: not judged)"),
    ("backup.dr_replication.enabled", "false", "issue #22: replicate each instance's automated backups to backup.dr_region (StartDBInstanceAutomatedBackupsReplication through the guard) and hold the DR region's LatestTime to backup.rpo_minutes"),
    ("backup.dr_replication.retention_days", "7", "BackupRetentionPeriod of the replicated automated backups in the DR region (1-35 days)"),
    ("backup.dr_replication.kms_key_id", "", "KMS key (ARN, in the DR region) for replicated backups of encrypted instances (empty: backup.dr_kms_key_id)"),
    ("backup.dr_replication.cooldown_minutes", "60", "after a replication start (done, refused or failed) the next attempt on that instance waits this long"),
    // The S3 backup kinds (issue #22, `backup-s3-check`): per kind a prefix of `backup.s3.bucket`;
    // an empty bucket or prefix is not checked.
    ("backup.s3.bucket", "", "S3 bucket holding the logical, WAL and physical backups (the template's BackupBucket); empty: the S3 kinds are not checked"),
    ("backup.s3.grace_hours", "6", "a kind is late when its newest object is older than its every_hours + this"),
    ("backup.s3.lifecycle_grace_hours", "72", "lifecycle rules act asynchronously (a transition at day 1 is queued at the next midnight UTC and may take a day or more): an object is judged on its storage class, and as kept past its retention, this long after it was written or was due"),
    ("backup.s3.logical.prefix", "logical/", "key prefix of the weekly pg_dump (the template's producer writes logical/<YYYY-MM-DD>/<db>.dump: one backup per date folder)"),
    ("backup.s3.logical.every_hours", "168", "a new logical backup at least this often (SPEC: weekly)"),
    ("backup.s3.logical.retention_days", "84", "logical backups are kept this long (SPEC: 12 weeks; the bucket's lifecycle expires them)"),
    ("backup.s3.logical.min_count", "12", "at least this many logical backups within the retention (SPEC: 12 weekly; 0: not judged)"),
    ("backup.s3.logical.storage_classes", "", "comma list of storage classes a logical backup may be in (empty: any)"),
    ("backup.s3.wal.prefix", "wal/", "key prefix of the WAL archive"),
    ("backup.s3.wal.every_hours", "1", "a new WAL segment at least this often (archive_timeout makes an idle database switch segments)"),
    ("backup.s3.wal.retention_days", "7", "WAL is kept this long (SPEC: 7 days)"),
    ("backup.s3.wal.min_count", "1", "at least this many WAL objects within the retention (0: not judged)"),
    ("backup.s3.wal.storage_classes", "", "comma list of storage classes a WAL object may be in (empty: any)"),
    ("backup.s3.physical.prefix", "physical/", "key prefix of the monthly physical backup (one folder per backup: physical/<YYYY-MM>/...)"),
    ("backup.s3.physical.every_hours", "744", "a new physical backup at least this often (SPEC: monthly; 31 days)"),
    ("backup.s3.physical.retention_days", "365", "physical backups are kept this long (SPEC: 12 months)"),
    ("backup.s3.physical.min_count", "12", "at least this many physical backups within the retention (SPEC: 12 monthly; 0: not judged)"),
    ("backup.s3.physical.storage_classes", "GLACIER,DEEP_ARCHIVE,GLACIER_IR", "comma list of storage classes a physical backup must be in once the lifecycle had time (SPEC: Glacier; S3's three Glacier classes)"),
];

/// A table named in config, schema defaulting to `public`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableName {
    pub schema: String,
    pub table: String,
}

impl TableName {
    pub fn parse(raw: &str) -> Option<TableName> {
        let raw = raw.trim();
        let (schema, table) = match raw.split_once('.') {
            Some((s, t)) => (s.trim(), t.trim()),
            None => ("public", raw),
        };
        (!schema.is_empty() && !table.is_empty()).then(|| TableName {
            schema: schema.to_string(),
            table: table.to_string(),
        })
    }
    pub fn display(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DrillConfig {
    pub instance_class: String,
    pub subnet_group: Option<String>,
    pub security_groups: Vec<String>,
    pub url_template: String,
    pub url_overrides: BTreeMap<String, String>,
    pub key_tables: Vec<TableName>,
    pub min_rows: i64,
    pub checksum_table: Option<TableName>,
    pub checksum_expected: Option<String>,
    pub give_up_hours: i64,
    pub statement_timeout_seconds: u64,
    pub app_rto_minutes: i64,
    pub app_health_queries: Vec<String>,
    pub full_system: FullSystemConfig,
}

/// The twice-yearly full-system drill (issue #22): an isolated Auto Scaling group from the
/// application's launch template, desired 1, until an instance is InService and Healthy.
#[derive(Debug, Clone, Serialize)]
pub struct FullSystemConfig {
    pub enabled: bool,
    /// 1..=12
    pub months: Vec<u32>,
    pub launch_template: String,
    pub launch_template_version: String,
    pub subnets: Vec<String>,
}

impl FullSystemConfig {
    /// Whether a drill started in `month` (1..=12) is a full-system one.
    pub fn applies(&self, month: u32) -> bool {
        self.enabled && self.months.contains(&month)
    }
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

fn full_system(s: &Settings) -> Result<FullSystemConfig> {
    let months_key = "backup.drill.full_system.months";
    let months = s
        .list(months_key)
        .iter()
        .map(|m| {
            MONTHS
                .iter()
                .position(|x| x.eq_ignore_ascii_case(m.trim()))
                .map(|i| i as u32 + 1)
                .ok_or_else(|| s.bad(months_key, "a comma list of months jan..dec"))
        })
        .collect::<Result<Vec<u32>>>()?;
    let c = FullSystemConfig {
        enabled: s.boolean("backup.drill.full_system.enabled")?,
        months,
        launch_template: s.string("backup.drill.full_system.launch_template"),
        launch_template_version: s.string("backup.drill.full_system.launch_template_version"),
        subnets: s.list("backup.drill.full_system.subnets"),
    };
    let v = &c.launch_template_version;
    if !(v == "$Default" || v == "$Latest" || v.parse::<u64>().is_ok_and(|n| n >= 1)) {
        return Err(s.bad(
            "backup.drill.full_system.launch_template_version",
            "a version number, $Default or $Latest",
        ));
    }
    if c.enabled {
        if c.launch_template.is_empty() {
            return Err(s.bad(
                "backup.drill.full_system.launch_template",
                "a launch template name (full_system.enabled is true)",
            ));
        }
        if c.subnets.is_empty() {
            return Err(s.bad(
                "backup.drill.full_system.subnets",
                "isolated subnet ids (full_system.enabled is true)",
            ));
        }
        if c.months.is_empty() {
            return Err(s.bad(
                months_key,
                "at least one month (full_system.enabled is true)",
            ));
        }
    }
    Ok(c)
}

#[derive(Debug, Clone, Serialize)]
pub struct BackupConfig {
    pub instances: Vec<String>,
    pub rpo_minutes: i64,
    pub retention_min_days: i32,
    pub automated_max_age_hours: i64,
    pub monthly_retention_days: i64,
    pub dr_region: String,
    pub dr_kms_key_id: Option<String>,
    pub max_concurrent_copies: usize,
    pub rto_minutes: i64,
    pub drill: DrillConfig,
    /// instance -> pg.databases name
    pub wal_databases: BTreeMap<String, String>,
    pub max_archive_age_minutes: i64,
    pub dr_replication: DrReplicationConfig,
}

/// Issue #22: cross-region replication of automated backups (the DR region's recovery point).
#[derive(Debug, Clone, Serialize)]
pub struct DrReplicationConfig {
    pub enabled: bool,
    pub retention_days: i32,
    /// `backup.dr_replication.kms_key_id`, else `backup.dr_kms_key_id`.
    pub kms_key_id: Option<String>,
    pub cooldown_minutes: i64,
}

fn optional(s: &Settings, key: &str) -> Option<String> {
    Some(s.string(key)).filter(|v| !v.is_empty())
}

fn tables(s: &Settings, key: &str) -> Result<Vec<TableName>> {
    s.list(key)
        .iter()
        .map(|t| TableName::parse(t).ok_or_else(|| s.bad(key, "a comma list of [schema.]table")))
        .collect()
}

fn health_queries(s: &Settings) -> Result<Vec<String>> {
    let key = "backup.drill.app_health_queries";
    let q: Vec<String> = s.json(key, "a JSON list of SQL queries")?;
    if q.iter().any(|x| x.trim().is_empty()) {
        return Err(s.bad(key, "a JSON list of non-empty SQL queries"));
    }
    Ok(q)
}

pub fn from_settings(s: &Settings) -> Result<BackupConfig> {
    let max_concurrent_copies: usize = positive(
        s,
        "backup.max_concurrent_copies",
        "a whole number in [1, 20]",
    )?;
    if max_concurrent_copies > 20 {
        return Err(s.bad(
            "backup.max_concurrent_copies",
            "a whole number in [1, 20] (the AWS limit per destination region)",
        ));
    }
    let template = s.string("backup.drill.url_template");
    if !(template.starts_with("postgres://") || template.starts_with("postgresql://")) {
        return Err(s.bad("backup.drill.url_template", "a postgres:// URL template"));
    }
    let url_overrides: BTreeMap<String, String> = s.json(
        "backup.drill.url_overrides",
        "a JSON object of instance id -> postgres:// URL",
    )?;
    if url_overrides
        .values()
        .any(|u| !(u.starts_with("postgres://") || u.starts_with("postgresql://")))
    {
        return Err(s.bad("backup.drill.url_overrides", "postgres:// URLs"));
    }
    let mut wal_databases = BTreeMap::new();
    for item in s.list("backup.wal.databases") {
        match item.split_once('=') {
            Some((i, n)) if !i.trim().is_empty() && !n.trim().is_empty() => {
                wal_databases.insert(i.trim().to_string(), n.trim().to_string());
            }
            _ => {
                return Err(s.bad(
                    "backup.wal.databases",
                    "a comma list of instance=pg database name",
                ))
            }
        }
    }
    let checksum_table = match optional(s, "backup.drill.checksum_table") {
        Some(t) => Some(
            TableName::parse(&t)
                .ok_or_else(|| s.bad("backup.drill.checksum_table", "[schema.]table"))?,
        ),
        None => None,
    };
    let max_archive_age_minutes: i64 =
        s.number("backup.wal.max_archive_age_minutes", "whole minutes >= 0")?;
    if max_archive_age_minutes < 0 {
        return Err(s.bad("backup.wal.max_archive_age_minutes", "whole minutes >= 0"));
    }
    let min_rows: i64 = s.number("backup.drill.min_rows", "a whole number >= 0")?;
    if min_rows < 0 {
        return Err(s.bad("backup.drill.min_rows", "a whole number >= 0"));
    }
    let dr_replication = DrReplicationConfig {
        enabled: s.boolean("backup.dr_replication.enabled")?,
        retention_days: positive(
            s,
            "backup.dr_replication.retention_days",
            "whole days in [1, 35]",
        )?,
        kms_key_id: optional(s, "backup.dr_replication.kms_key_id")
            .or_else(|| optional(s, "backup.dr_kms_key_id")),
        cooldown_minutes: positive(
            s,
            "backup.dr_replication.cooldown_minutes",
            "whole minutes >= 1",
        )?,
    };
    if dr_replication.retention_days > 35 {
        return Err(s.bad(
            "backup.dr_replication.retention_days",
            "whole days in [1, 35] (the AWS backup retention range)",
        ));
    }
    if dr_replication.enabled && s.string("backup.dr_region").is_empty() {
        return Err(NbaopsError::config(format!(
            "backup.dr_replication.enabled (from {}) needs backup.dr_region",
            s.origin("backup.dr_replication.enabled")
        )));
    }
    let cfg = BackupConfig {
        instances: s.list("backup.instances"),
        rpo_minutes: positive(s, "backup.rpo_minutes", "whole minutes >= 1")?,
        retention_min_days: positive(s, "backup.retention_min_days", "whole days >= 1")?,
        automated_max_age_hours: positive(s, "backup.automated_max_age_hours", "whole hours >= 1")?,
        monthly_retention_days: positive(s, "backup.monthly.retention_days", "whole days >= 1")?,
        dr_region: s.string("backup.dr_region"),
        dr_kms_key_id: optional(s, "backup.dr_kms_key_id"),
        max_concurrent_copies,
        rto_minutes: positive(s, "backup.rto_minutes", "whole minutes >= 1")?,
        drill: DrillConfig {
            instance_class: s.string("backup.drill.instance_class"),
            subnet_group: optional(s, "backup.drill.subnet_group"),
            security_groups: s.list("backup.drill.security_groups"),
            url_template: template,
            url_overrides,
            key_tables: tables(s, "backup.drill.key_tables")?,
            min_rows,
            checksum_table,
            checksum_expected: optional(s, "backup.drill.checksum_expected"),
            give_up_hours: positive(s, "backup.drill.give_up_hours", "whole hours >= 1")?,
            statement_timeout_seconds: positive(
                s,
                "backup.drill.statement_timeout_seconds",
                "whole seconds >= 1",
            )?,
            app_rto_minutes: positive(s, "backup.drill.app_rto_minutes", "whole minutes >= 1")?,
            app_health_queries: health_queries(s)?,
            full_system: full_system(s)?,
        },
        wal_databases,
        max_archive_age_minutes,
        dr_replication,
    };
    if let Some(i) = cfg
        .wal_databases
        .keys()
        .find(|i| !cfg.instances.contains(i))
    {
        return Err(NbaopsError::config(format!(
            "backup.wal.databases (from {}): '{i}' is not in backup.instances",
            s.origin("backup.wal.databases")
        )));
    }
    if cfg.drill.instance_class.is_empty() {
        return Err(s.bad("backup.drill.instance_class", "an instance class"));
    }
    Ok(cfg)
}

/// The kinds of backup kept in S3 (issue #22), in the order they are checked.
pub const S3_KINDS: &[&str] = &["logical", "wal", "physical"];

/// Storage class names as S3 reports them
/// (<https://docs.aws.amazon.com/AmazonS3/latest/API/API_Object.html>, `StorageClass`).
pub const S3_STORAGE_CLASSES: &[&str] = &[
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "GLACIER",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "DEEP_ARCHIVE",
    "OUTPOSTS",
    "GLACIER_IR",
    "SNOW",
    "EXPRESS_ONEZONE",
    "FSX_OPENZFS",
];

/// One S3 backup kind: where it is and what it promises.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct S3Kind {
    pub name: String,
    pub prefix: String,
    pub every_hours: i64,
    pub retention_days: i64,
    pub min_count: usize,
    /// Empty: any storage class.
    pub storage_classes: Vec<String>,
}

/// The `backup.s3.*` keys: the bucket and its kinds (those with a prefix).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct S3Backups {
    pub bucket: Option<String>,
    pub grace_hours: i64,
    pub lifecycle_grace_hours: i64,
    pub kinds: Vec<S3Kind>,
}

fn whole(s: &Settings, key: &str, what: &str) -> Result<i64> {
    let v: i64 = s.number(key, what)?;
    if v < 0 {
        return Err(s.bad(key, what));
    }
    Ok(v)
}

/// backup-guard's S3 kinds, validated at init.
pub fn s3_from_settings(s: &Settings) -> Result<S3Backups> {
    let mut kinds = Vec::new();
    for name in S3_KINDS {
        let key = |k: &str| format!("backup.s3.{name}.{k}");
        let prefix = s.string(&key("prefix"));
        let storage_classes: Vec<String> = s
            .list(&key("storage_classes"))
            .into_iter()
            .map(|c| c.to_ascii_uppercase())
            .collect();
        if let Some(c) = storage_classes
            .iter()
            .find(|c| !S3_STORAGE_CLASSES.contains(&c.as_str()))
        {
            return Err(s.bad(
                &key("storage_classes"),
                &format!(
                    "S3 storage classes ({}), not '{c}'",
                    S3_STORAGE_CLASSES.join(", ")
                ),
            ));
        }
        let kind = S3Kind {
            name: name.to_string(),
            every_hours: positive(s, &key("every_hours"), "whole hours >= 1")?,
            retention_days: positive(s, &key("retention_days"), "whole days >= 1")?,
            min_count: whole(s, &key("min_count"), "a whole number >= 0")? as usize,
            storage_classes,
            prefix,
        };
        if !kind.prefix.is_empty() {
            kinds.push(kind);
        }
    }
    Ok(S3Backups {
        bucket: optional(s, "backup.s3.bucket"),
        grace_hours: whole(s, "backup.s3.grace_hours", "whole hours >= 0")?,
        lifecycle_grace_hours: whole(s, "backup.s3.lifecycle_grace_hours", "whole hours >= 0")?,
        kinds,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod s3_tests {
    use super::*;
    use crate::config::{layer, Env};

    fn load(pairs: &[(&str, &str)]) -> Result<S3Backups> {
        let vars: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        s3_from_settings(&layer(Env::Dev, &vars, &BTreeMap::new())?)
    }

    #[test]
    fn s3_kinds_defaults_and_refusals() {
        let c = load(&[]).unwrap();
        assert_eq!(c.bucket, None);
        let names: Vec<&str> = c.kinds.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, S3_KINDS);
        // An empty prefix takes the kind out; a storage class S3 does not have is refused.
        let c = load(&[
            ("NBAOPS_BACKUP__S3__WAL__PREFIX", ""),
            ("NBAOPS_BACKUP__S3__LOGICAL__STORAGE_CLASSES", "standard"),
        ])
        .unwrap();
        assert_eq!(c.kinds.len(), 2);
        assert_eq!(c.kinds[0].storage_classes, vec!["STANDARD".to_string()]);
        let e = load(&[(
            "NBAOPS_BACKUP__S3__PHYSICAL__STORAGE_CLASSES",
            "GLACIER,COLD",
        )])
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("backup.s3.physical.storage_classes") && e.contains("'COLD'"),
            "{e}"
        );
        let e = load(&[("NBAOPS_BACKUP__S3__LOGICAL__EVERY_HOURS", "0")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("backup.s3.logical.every_hours"), "{e}");
        let e = load(&[("NBAOPS_BACKUP__S3__GRACE_HOURS", "-1")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("backup.s3.grace_hours"), "{e}");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::{layer, Env};

    fn load(pairs: &[(&str, &str)]) -> Result<BackupConfig> {
        let vars: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        from_settings(&layer(Env::Dev, &vars, &BTreeMap::new())?)
    }

    #[test]
    fn spec_defaults() {
        let c = load(&[]).unwrap();
        assert_eq!(c.rpo_minutes, 15);
        assert_eq!(c.retention_min_days, 7);
        assert_eq!(c.automated_max_age_hours, 24);
        assert_eq!(c.monthly_retention_days, 365);
        assert_eq!(c.rto_minutes, 60);
        assert!(c.max_concurrent_copies <= 20);
        assert!(c.instances.is_empty() && c.drill.key_tables.is_empty());
        assert_eq!(c.drill.app_rto_minutes, 30);
        assert!(c.drill.app_health_queries.is_empty());
        let f = &c.drill.full_system;
        assert!(!f.enabled && !f.applies(1));
        assert_eq!(f.months, vec![1, 7]);
    }

    #[test]
    fn full_system_and_health_queries() {
        let c = load(&[
            ("NBAOPS_BACKUP__DRILL__FULL_SYSTEM__ENABLED", "true"),
            ("NBAOPS_BACKUP__DRILL__FULL_SYSTEM__LAUNCH_TEMPLATE", "app"),
            (
                "NBAOPS_BACKUP__DRILL__FULL_SYSTEM__SUBNETS",
                "subnet-1, subnet-2",
            ),
            ("NBAOPS_BACKUP__DRILL__FULL_SYSTEM__MONTHS", "Apr,oct"),
            (
                "NBAOPS_BACKUP__DRILL__APP_HEALTH_QUERIES",
                r#"["select true"]"#,
            ),
        ])
        .unwrap();
        let f = &c.drill.full_system;
        assert!(f.applies(4) && f.applies(10) && !f.applies(1));
        assert_eq!(f.subnets, vec!["subnet-1", "subnet-2"]);
        assert_eq!(c.drill.app_health_queries, vec!["select true"]);
        for (k, v, named) in [
            (
                "NBAOPS_BACKUP__DRILL__FULL_SYSTEM__ENABLED",
                "true",
                "launch_template",
            ),
            (
                "NBAOPS_BACKUP__DRILL__FULL_SYSTEM__MONTHS",
                "january",
                "full_system.months",
            ),
            (
                "NBAOPS_BACKUP__DRILL__FULL_SYSTEM__LAUNCH_TEMPLATE_VERSION",
                "latest",
                "launch_template_version",
            ),
            (
                "NBAOPS_BACKUP__DRILL__APP_HEALTH_QUERIES",
                "select 1",
                "app_health_queries",
            ),
            (
                "NBAOPS_BACKUP__DRILL__APP_HEALTH_QUERIES",
                r#"[""]"#,
                "app_health_queries",
            ),
        ] {
            let e = load(&[(k, v)]).unwrap_err().to_string();
            assert!(e.contains(named), "{k}={v}: {e}");
        }
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = load(&[("NBAOPS_BACKUP__MAX_CONCURRENT_COPIES", "21")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("backup.max_concurrent_copies"), "{e}");
        let e = load(&[("NBAOPS_BACKUP__DRILL__URL_OVERRIDES", "[1]")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("backup.drill.url_overrides"), "{e}");
        let e = load(&[("NBAOPS_BACKUP__WAL__DATABASES", "db1=app")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("not in backup.instances"), "{e}");
        let c = load(&[("NBAOPS_BACKUP__DRILL__KEY_TABLES", "players, stats.games")]).unwrap();
        assert_eq!(c.drill.key_tables[0].display(), "public.players");
        assert_eq!(c.drill.key_tables[1].display(), "stats.games");
    }

    #[test]
    fn dr_replication_keys() {
        let c = load(&[]).unwrap();
        assert!(!c.dr_replication.enabled);
        assert_eq!(c.dr_replication.retention_days, 7);
        let e = load(&[("NBAOPS_BACKUP__DR_REPLICATION__ENABLED", "true")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs backup.dr_region"), "{e}");
        let e = load(&[("NBAOPS_BACKUP__DR_REPLICATION__RETENTION_DAYS", "36")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("backup.dr_replication.retention_days"), "{e}");
        let c = load(&[
            ("NBAOPS_BACKUP__DR_REPLICATION__ENABLED", "true"),
            ("NBAOPS_BACKUP__DR_REGION", "us-west-2"),
            (
                "NBAOPS_BACKUP__DR_KMS_KEY_ID",
                "arn:aws:kms:us-west-2:1:key/copy",
            ),
        ])
        .unwrap();
        assert!(c.dr_replication.enabled);
        assert_eq!(
            c.dr_replication.kms_key_id.as_deref(),
            Some("arn:aws:kms:us-west-2:1:key/copy")
        );
    }
}

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
    ("backup.wal.databases", "", "comma list of instance=name: pg.databases entry to read pg_stat_archiver from"),
    ("backup.wal.max_archive_age_minutes", "15", "last archived WAL older than this = archiving stalled (0: not judged)"),
    // The S3 backup kinds (issue #22, `backup-s3-check`): per kind a prefix of `backup.s3.bucket`;
    // an empty bucket or prefix is not checked.
    ("backup.s3.bucket", "", "S3 bucket holding the logical, WAL and physical backups (the template's BackupBucket); empty: the S3 kinds are not checked"),
    ("backup.s3.grace_hours", "6", "a kind is late when its newest object is older than its every_hours + this"),
    ("backup.s3.lifecycle_grace_hours", "72", "lifecycle rules act asynchronously (a transition at day 1 is queued at the next midnight UTC and may take a day or more): an object is judged on its storage class, and as kept past its retention, this long after it was written or was due"),
    ("backup.s3.logical.prefix", "logical/", "key prefix of the weekly pg_dump (the template's producer writes logical/<db>/<date>.dump)"),
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
        },
        wal_databases,
        max_archive_age_minutes,
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
}

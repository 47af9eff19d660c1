//! The rules: facts (`nbaops_shared::ports::posture`) to findings. Pure: no clock but `now`, no
//! I/O. Each rule of `nbaops_shared::config::posture::RULES` is one function over the resources
//! in scope; [`evaluate`] runs them all and counts what each looked at (a rule that looked at
//! nothing is not "passing").
//!
//! Scope: a resource is this deployment's when its environment tag (`posture.env_tag`) names this
//! environment, or when it has none (or one that is not an environment) and
//! `posture.claim_untagged` is on. A DB snapshot without the tag takes its instance's.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use nbaops_shared::alerts::Severity;
use nbaops_shared::config::posture::{MinorUpgradePolicy, PostureConfig};
use nbaops_shared::config::Env;
use nbaops_shared::ports::{
    AddressFacts, CacheFacts, DbFacts, DbSnapshotFacts, InstanceFacts, LoadBalancerFacts,
    SecurityGroupFacts, TaggedResource, Tags, VolumeFacts,
};

/// backup-guard's monthly snapshots (kept a year on purpose: never "unused").
pub use nbaops_shared::config::backup::MONTHLY_PREFIX;

/// What a finding's fix is.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fix {
    /// `ModifyDBInstance --deletion-protection` on this DB instance (safe: reversible, no restart).
    DeletionProtection { db_instance: String },
    /// `AddTagsToResource` with these tags on this RDS ARN.
    RdsTags { arn: String, tags: Tags },
    /// Nothing nbaops does: the exact command for a person.
    Command { command: String },
}

impl Fix {
    fn cmd(command: impl Into<String>) -> Fix {
        Fix::Command {
            command: command.into(),
        }
    }

    /// The command a person would run for it (the automatic fixes too: what nbaops runs).
    pub fn command(&self) -> String {
        match self {
            Fix::DeletionProtection { db_instance } => format!(
                "aws rds modify-db-instance --db-instance-identifier {db_instance} --deletion-protection --apply-immediately"
            ),
            Fix::RdsTags { arn, tags } => format!(
                "aws rds add-tags-to-resource --resource-name {arn} --tags {}",
                tags.iter()
                    .map(|(k, v)| format!("Key={k},Value={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            Fix::Command { command } => command.clone(),
        }
    }

    pub fn automatic(&self) -> bool {
        !matches!(self, Fix::Command { .. })
    }
}

/// One resource failing one rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub rule: &'static str,
    /// "rds:<id>", "rds-snapshot:<id>", "cache:<id>", "ec2-volume:<id>", "eip:<allocation>", ...
    pub resource: String,
    pub env: Option<Env>,
    pub severity: Severity,
    /// What is wrong, in numbers where there are numbers.
    pub detail: String,
    pub fix: Fix,
    /// Unused resources: what they cost a month (list prices of `posture.prices`).
    pub monthly_usd: Option<f64>,
    #[serde(skip)]
    pub tags: Tags,
}

/// Everything read of the account and region. A source that could not be read is `None`: its
/// rules look at nothing, and the handler resolves none of their findings.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub dbs: Option<Vec<DbFacts>>,
    /// Per DB instance: the TLS parameter's value in its parameter group(s) (`None` inside:
    /// not set, the engine's default applies). Missing key: not read.
    pub tls_params: BTreeMap<String, Option<String>>,
    pub snapshots: Option<Vec<DbSnapshotFacts>>,
    /// Source instance ARNs with automated backups in the DR region; `None`: not read.
    pub replicated: Option<BTreeSet<String>>,
    pub caches: Option<Vec<CacheFacts>>,
    pub security_groups: Option<Vec<SecurityGroupFacts>>,
    pub volumes: Option<Vec<VolumeFacts>>,
    pub addresses: Option<Vec<AddressFacts>>,
    pub instances: Option<Vec<InstanceFacts>>,
    pub load_balancers: Option<Vec<LoadBalancerFacts>>,
    pub tagged: Option<Vec<TaggedResource>>,
}

/// What each rule needs read: a finding of a rule whose sources were not all read is neither
/// raised anew nor resolved.
pub fn sources_of(rule: &str) -> &'static [&'static str] {
    match rule {
        "rds.force_ssl" => &["dbs", "tls_params"],
        "rds.dr_replication" => &["dbs", "replicated"],
        "rds.snapshot_public" | "unused.snapshot" => &["snapshots", "dbs"],
        "cache.transit_encryption" | "cache.at_rest_encryption" => &["caches"],
        "cache.open_security_group" => &["caches", "security_groups"],
        "tags.missing" => &[
            "dbs",
            "snapshots",
            "caches",
            "volumes",
            "addresses",
            "instances",
            "load_balancers",
            "tagged",
        ],
        "unused.volume" => &["volumes"],
        "unused.address" => &["addresses"],
        "unused.stopped_instance" => &["instances", "volumes"],
        "unused.load_balancer" => &["load_balancers"],
        _ => &["dbs"],
    }
}

impl Facts {
    /// The sources that could not be read.
    pub fn unread(&self) -> BTreeSet<&'static str> {
        let mut out = BTreeSet::new();
        let mut check = |name: &'static str, read: bool| {
            if !read {
                out.insert(name);
            }
        };
        check("dbs", self.dbs.is_some());
        check("snapshots", self.snapshots.is_some());
        check("replicated", self.replicated.is_some());
        check("caches", self.caches.is_some());
        check("security_groups", self.security_groups.is_some());
        check("volumes", self.volumes.is_some());
        check("addresses", self.addresses.is_some());
        check("instances", self.instances.is_some());
        check("load_balancers", self.load_balancers.is_some());
        check("tagged", self.tagged.is_some());
        let dbs_with_tls = self
            .dbs
            .iter()
            .flatten()
            .filter(|d| tls_parameter(&d.engine).is_some());
        check(
            "tls_params",
            dbs_with_tls
                .into_iter()
                .all(|d| self.tls_params.contains_key(&d.id)),
        );
        out
    }
}

/// The parameter that makes an engine refuse connections without TLS, and the value that does.
/// RDS for PostgreSQL: `rds.force_ssl` = 1; RDS for MySQL / MariaDB: `require_secure_transport` = 1
/// (https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/PostgreSQL.Concepts.General.SSL.html,
/// https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/mysql-ssl-connections.require-ssl.html).
pub fn tls_parameter(engine: &str) -> Option<&'static str> {
    match engine {
        "postgres" => Some("rds.force_ssl"),
        "mysql" | "mariadb" => Some("require_secure_transport"),
        _ => None,
    }
}

/// The TLS parameter's value when the parameter group does not set it: RDS for PostgreSQL 15 and
/// later default `rds.force_ssl` to 1, earlier versions to 0 (PostgreSQL.Concepts.General.SSL.html:
/// "The default value of the rds.force_ssl parameter is 1 (on) for RDS for PostgreSQL version 15
/// and later"); MySQL's `require_secure_transport` defaults to off.
pub fn tls_default_on(engine: &str, version: &str) -> bool {
    let major = version
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok())
        .unwrap_or(0);
    engine == "postgres" && major >= 15
}

/// Whether the value turns TLS enforcement on ("1", "ON", "true").
fn on(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "1" | "on" | "true"
    )
}

/// What the rules saw: the findings, and per rule how many resources it looked at.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Evaluation {
    pub findings: Vec<Finding>,
    pub checked: BTreeMap<&'static str, usize>,
    /// Resources this deployment checked.
    pub in_scope: usize,
    /// Resources tagged for another environment: another deployment's.
    pub other_envs: usize,
    /// The resources the tag rule looked at (by name), so the Tagging API's list adds only the rest.
    #[serde(skip)]
    tag_checked: BTreeSet<String>,
}

struct Judge<'a> {
    cfg: &'a PostureConfig,
    env: Env,
    now: DateTime<Utc>,
    region: &'a str,
    out: Evaluation,
}

/// The environment a tag set names (`None`: no tag, or not an environment).
pub fn env_of(cfg: &PostureConfig, tags: &Tags) -> Option<Env> {
    tags.get(&cfg.env_tag)
        .and_then(|v| Env::from_str(v.trim()).ok())
}

/// Runs every rule over the facts for the deployment of `env` at `now`.
pub fn evaluate(
    cfg: &PostureConfig,
    env: Env,
    region: &str,
    now: DateTime<Utc>,
    facts: &Facts,
) -> Evaluation {
    let mut j = Judge {
        cfg,
        env,
        now,
        region,
        out: Evaluation::default(),
    };
    let empty = Vec::new();
    let dbs = facts.dbs.as_ref().unwrap_or(&empty);
    let db_envs: BTreeMap<&str, Option<Env>> = dbs
        .iter()
        .map(|d| (d.id.as_str(), env_of(cfg, &d.tags)))
        .collect();
    for db in dbs {
        if let Some(env) = j.scope(&db.tags) {
            j.db(db, env, facts);
        }
    }
    for s in facts.snapshots.iter().flatten() {
        let inherited = db_envs.get(s.instance.as_str()).copied().flatten();
        let env = match env_of(cfg, &s.tags) {
            Some(e) => Some(e),
            None if s.tags.contains_key(&cfg.env_tag) => None,
            None => inherited,
        };
        if let Some(env) = j.scope_env(env, &s.tags) {
            j.snapshot(s, env);
        }
    }
    let groups: BTreeMap<&str, &SecurityGroupFacts> = facts
        .security_groups
        .iter()
        .flatten()
        .map(|g| (g.id.as_str(), g))
        .collect();
    for c in facts.caches.iter().flatten() {
        if let Some(env) = j.scope(&c.tags) {
            j.cache(c, env, &groups, facts.security_groups.is_some());
        }
    }
    let sizes: BTreeMap<&str, i32> = facts
        .volumes
        .iter()
        .flatten()
        .map(|v| (v.id.as_str(), v.size_gb))
        .collect();
    for v in facts.volumes.iter().flatten() {
        if let Some(env) = j.scope(&v.tags) {
            j.volume(v, env);
        }
    }
    for a in facts.addresses.iter().flatten() {
        if let Some(env) = j.scope(&a.tags) {
            j.address(a, env);
        }
    }
    for i in facts.instances.iter().flatten() {
        if let Some(env) = j.scope(&i.tags) {
            j.instance(i, env, &sizes);
        }
    }
    for lb in facts.load_balancers.iter().flatten() {
        if let Some(env) = j.scope(&lb.tags) {
            j.load_balancer(lb, env);
        }
    }
    // Whatever else the Tagging API knows (resources the describe calls above do not cover).
    let seen: BTreeSet<String> = j.out.tag_checked.clone();
    for t in facts.tagged.iter().flatten() {
        let resource = resource_of_arn(&t.arn);
        if seen.contains(&resource) {
            continue;
        }
        if let Some(env) = j.scope(&t.tags) {
            j.tags(&resource, Some(&t.arn), &t.tags, env);
        }
    }
    let mut out = j.out;
    out.findings
        .sort_by(|a, b| (a.rule, &a.resource).cmp(&(b.rule, &b.resource)));
    out.tag_checked.clear();
    out
}

/// "rds:<id>", "ec2-volume:<id>", ... for an ARN the Tagging API returns (the names the describe
/// facts get), the ARN itself for any other type.
pub fn resource_of_arn(arn: &str) -> String {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let (service, rest) = match parts.as_slice() {
        [_, _, service, _, _, rest] => (*service, *rest),
        _ => return arn.to_string(),
    };
    let (kind, id) = rest
        .split_once(':')
        .or_else(|| rest.split_once('/'))
        .unwrap_or((rest, ""));
    match (service, kind) {
        ("rds", "db") => format!("rds:{id}"),
        ("rds", "snapshot") => format!("rds-snapshot:{id}"),
        ("elasticache", "cluster" | "replicationgroup") => format!("cache:{id}"),
        ("ec2", "instance") => format!("ec2:{id}"),
        ("ec2", "volume") => format!("ec2-volume:{id}"),
        ("ec2", "elastic-ip") => format!("eip:{id}"),
        ("elasticloadbalancing", "loadbalancer") => {
            // app/<name>/<id>
            let name = id.split('/').nth(1).unwrap_or(id);
            format!("elb:{name}")
        }
        _ => arn.to_string(),
    }
}

impl Evaluation {
    /// Monthly cost of the unused resources found.
    pub fn unused_monthly_usd(&self) -> f64 {
        // A fold from +0.0: an empty f64 `sum()` is -0.0, "$-0.00" in the summary.
        self.findings
            .iter()
            .filter_map(|f| f.monthly_usd)
            .fold(0.0, |a, b| a + b)
    }
}

impl<'a> Judge<'a> {
    /// In scope: its environment (`Some(None)`: untagged, claimed), or `None`: another's.
    fn scope(&mut self, tags: &Tags) -> Option<Option<Env>> {
        let env = env_of(self.cfg, tags);
        self.scope_env(env, tags)
    }

    fn scope_env(&mut self, env: Option<Env>, _tags: &Tags) -> Option<Option<Env>> {
        let scoped = match env {
            Some(e) if e == self.env => Some(Some(e)),
            Some(_) => {
                self.out.other_envs += 1;
                None
            }
            None if self.cfg.claim_untagged => Some(None),
            None => None,
        };
        if scoped.is_some() {
            self.out.in_scope += 1;
        }
        scoped
    }

    /// Counts the resource as looked at by `rule` and tells whether the rule applies to it.
    fn looks(&mut self, rule: &'static str, env: Option<Env>) -> bool {
        if !self.cfg.applies(rule, env) {
            return false;
        }
        *self.out.checked.entry(rule).or_default() += 1;
        true
    }

    #[allow(clippy::too_many_arguments)]
    fn find(
        &mut self,
        rule: &'static str,
        resource: String,
        env: Option<Env>,
        tags: &Tags,
        detail: String,
        fix: Fix,
        monthly_usd: Option<f64>,
    ) {
        self.out.findings.push(Finding {
            rule,
            resource,
            env,
            severity: self.cfg.severity(rule),
            detail,
            fix,
            monthly_usd,
            tags: tags.clone(),
        });
    }

    fn db(&mut self, d: &DbFacts, env: Option<Env>, facts: &Facts) {
        let r = format!("rds:{}", d.id);
        let id = &d.id;
        let modify = |args: &str| {
            Fix::cmd(format!(
                "aws rds modify-db-instance --db-instance-identifier {id} {args} --apply-immediately"
            ))
        };
        // Cluster members take encryption, backups and Multi-AZ from their cluster; replicas
        // have no backups of their own.
        let standalone = d.cluster.is_none();
        let primary = standalone && d.replica_of.is_none();
        if self.looks("rds.public", env) && d.publicly_accessible {
            self.find("rds.public", r.clone(), env, &d.tags,
                format!("{id} is publicly accessible: its endpoint resolves to a public address (SPEC 4: databases in private subnets only)"),
                modify("--no-publicly-accessible"), None);
        }
        if standalone && self.looks("rds.encryption", env) && !d.storage_encrypted {
            self.find("rds.encryption", r.clone(), env, &d.tags,
                format!("{id}'s storage is not encrypted (SPEC 4: encryption at rest); it cannot be turned on in place"),
                Fix::cmd(format!("aws rds create-db-snapshot --db-instance-identifier {id} --db-snapshot-identifier {id}-to-encrypt && aws rds copy-db-snapshot --source-db-snapshot-identifier {id}-to-encrypt --target-db-snapshot-identifier {id}-encrypted --kms-key-id <kms-key> && aws rds restore-db-instance-from-db-snapshot --db-instance-identifier {id}-encrypted --db-snapshot-identifier {id}-encrypted (then move the endpoint)")),
                None);
        }
        if let Some(param) = tls_parameter(&d.engine) {
            if self.looks("rds.force_ssl", env) {
                if let Some(value) = facts.tls_params.get(&d.id) {
                    let enforced = match value {
                        Some(v) => on(v),
                        None => tls_default_on(&d.engine, &d.engine_version),
                    };
                    if !enforced {
                        let shown = value.clone().unwrap_or_else(|| {
                            format!("unset (default off for {} {})", d.engine, d.engine_version)
                        });
                        let group = d.parameter_groups.first().cloned().unwrap_or_default();
                        let fix = if group.starts_with("default.") {
                            format!("create a custom DB parameter group with {param}=1, then aws rds modify-db-instance --db-instance-identifier {id} --db-parameter-group-name <group> --apply-immediately (a default group cannot be modified)")
                        } else {
                            format!("aws rds modify-db-parameter-group --db-parameter-group-name {group} --parameters ParameterName={param},ParameterValue=1,ApplyMethod=immediate")
                        };
                        self.find("rds.force_ssl", r.clone(), env, &d.tags,
                            format!("{id} accepts connections without TLS: {param} = {shown} in {} (SPEC 4: TLS only)", if group.is_empty() { "its parameter group".to_string() } else { group.clone() }),
                            Fix::cmd(fix), None);
                    }
                }
            }
        }
        if self.looks("rds.deletion_protection", env) && !d.deletion_protection {
            let fix = if self.cfg.may_fix(env) {
                Fix::DeletionProtection {
                    db_instance: d.id.clone(),
                }
            } else {
                modify("--deletion-protection")
            };
            self.find(
                "rds.deletion_protection",
                r.clone(),
                env,
                &d.tags,
                format!("{id} can be deleted by one call: deletion protection is off"),
                fix,
                None,
            );
        }
        if primary && self.looks("rds.multi_az", env) && !d.multi_az {
            self.find("rds.multi_az", r.clone(), env, &d.tags,
                format!("{id} is Single-AZ (SPEC 2.2: Multi-AZ, failover within 60-120 s); converting adds a standby without downtime but with a performance dip"),
                modify("--multi-az"), None);
        }
        let min = self.cfg.min_backup_retention_days;
        if primary && self.looks("rds.backup_retention", env) && d.backup_retention_days < min {
            self.find(
                "rds.backup_retention",
                r.clone(),
                env,
                &d.tags,
                format!(
                    "{id} keeps automated backups {} day(s), the strategy asks {min} (SPEC 2.4)",
                    d.backup_retention_days
                ),
                modify(&format!("--backup-retention-period {min}")),
                None,
            );
        }
        if let (Some(dr), Some(replicated)) = (&self.cfg.dr_region, &facts.replicated) {
            if primary && self.looks("rds.dr_replication", env) && !replicated.contains(&d.arn) {
                let dr = dr.clone();
                self.find("rds.dr_replication", r.clone(), env, &d.tags,
                    format!("{id}'s automated backups are not replicated to {dr}: a region loss loses point-in-time recovery (SPEC DR RPO)"),
                    Fix::cmd(format!("aws rds start-db-instance-automated-backups-replication --region {dr} --source-db-instance-arn {} --backup-retention-period {min}", d.arn)),
                    None);
            }
        }
        let want = self.cfg.minor_version_upgrade;
        if want != MinorUpgradePolicy::Any && self.looks("rds.minor_version_upgrade", env) {
            let wanted = want == MinorUpgradePolicy::On;
            if d.auto_minor_version_upgrade != wanted {
                let flag = if wanted {
                    "--auto-minor-version-upgrade"
                } else {
                    "--no-auto-minor-version-upgrade"
                };
                self.find(
                    "rds.minor_version_upgrade",
                    r.clone(),
                    env,
                    &d.tags,
                    format!(
                        "{id}: auto minor version upgrade is {}, the policy says {}",
                        if d.auto_minor_version_upgrade {
                            "on"
                        } else {
                            "off"
                        },
                        if wanted { "on" } else { "off" }
                    ),
                    modify(flag),
                    None,
                );
            }
        }
        if self.cfg.require_monitoring
            && self.looks("rds.monitoring", env)
            && !d.performance_insights
            && d.monitoring_interval_seconds == 0
        {
            self.find("rds.monitoring", r.clone(), env, &d.tags,
                format!("{id} has neither Performance Insights nor Enhanced Monitoring: the I/O-wait and per-process signals are blind"),
                modify("--enable-performance-insights"), None);
        }
        self.tags(&r, Some(&d.arn), &d.tags, env);
    }

    fn snapshot(&mut self, s: &DbSnapshotFacts, env: Option<Env>) {
        let r = format!("rds-snapshot:{}", s.id);
        if self.looks("rds.snapshot_public", env) && s.public {
            self.find("rds.snapshot_public", r.clone(), env, &s.tags,
                format!("snapshot {} of {} may be restored by any AWS account (restore attribute: all)", s.id, s.instance),
                Fix::cmd(format!("aws rds modify-db-snapshot-attribute --db-snapshot-identifier {} --attribute-name restore --values-to-remove all", s.id)),
                None);
        }
        if s.kind == "manual" && self.looks("unused.snapshot", env) {
            let days = self.cfg.snapshot_days;
            let old = s
                .created
                .is_some_and(|c| self.now - c > Duration::days(days));
            if old && !s.id.starts_with(MONTHLY_PREFIX) {
                let age = s.created.map(|c| (self.now - c).num_days()).unwrap_or(0);
                let usd = f64::from(s.allocated_gb) * self.cfg.prices.snapshot_gb_month;
                self.find("unused.snapshot", r.clone(), env, &s.tags,
                    format!("manual snapshot {} of {} is {age} days old (review after {days}), not a monthly keeper; up to {} GB billed", s.id, s.instance, s.allocated_gb),
                    Fix::cmd(format!("aws rds delete-db-snapshot --db-snapshot-identifier {}", s.id)),
                    Some(usd));
            }
        }
        self.tags(&r, Some(&s.arn), &s.tags, env);
    }

    fn cache(
        &mut self,
        c: &CacheFacts,
        env: Option<Env>,
        groups: &BTreeMap<&str, &SecurityGroupFacts>,
        groups_read: bool,
    ) {
        let r = format!("cache:{}", c.id);
        let id = &c.id;
        if c.transit_encryption.is_some()
            && self.looks("cache.transit_encryption", env)
            && c.transit_encryption == Some(false)
        {
            let fix = if c.engine == "memcached" {
                "create a new cluster with aws elasticache create-cache-cluster --transit-encryption-enabled ... and move clients to it (Memcached cannot turn TLS on in place)".to_string()
            } else {
                format!("aws elasticache modify-replication-group --replication-group-id {id} --transit-encryption-enabled --transit-encryption-mode preferred --apply-immediately (then required once every client uses TLS)")
            };
            self.find(
                "cache.transit_encryption",
                r.clone(),
                env,
                &c.tags,
                format!(
                    "{id} ({} {}) accepts unencrypted connections",
                    c.engine, c.engine_version
                ),
                Fix::cmd(fix),
                None,
            );
        }
        if c.at_rest_encryption.is_some()
            && self.looks("cache.at_rest_encryption", env)
            && c.at_rest_encryption == Some(false)
        {
            self.find("cache.at_rest_encryption", r.clone(), env, &c.tags,
                format!("{id}'s data is not encrypted at rest; it cannot be turned on in place"),
                Fix::cmd(format!("aws elasticache create-snapshot --replication-group-id {id} --snapshot-name {id}-to-encrypt && aws elasticache create-replication-group --replication-group-id {id}-enc --snapshot-name {id}-to-encrypt --at-rest-encryption-enabled ... (then move clients)")),
                None);
        }
        if groups_read && self.looks("cache.open_security_group", env) {
            let open: Vec<String> = c
                .security_groups
                .iter()
                .filter_map(|g| groups.get(g.as_str()))
                .filter(|g| !g.open_to_world.is_empty())
                .map(|g| format!("{} ({}): {}", g.id, g.name, g.open_to_world.join(", ")))
                .collect();
            if !open.is_empty() {
                let first = c.security_groups.first().cloned().unwrap_or_default();
                self.find("cache.open_security_group", r.clone(), env, &c.tags,
                    format!("{id}'s security groups admit 0.0.0.0/0 or ::/0: {}", open.join("; ")),
                    Fix::cmd(format!("aws ec2 revoke-security-group-ingress --group-id {first} --ip-permissions '<the rule above, with IpRanges=[{{CidrIp=0.0.0.0/0}}]>' and allow the application tier's security group instead")),
                    None);
            }
        }
        self.tags(&r, Some(&c.arn), &c.tags, env);
    }

    fn volume(&mut self, v: &VolumeFacts, env: Option<Env>) {
        let r = format!("ec2-volume:{}", v.id);
        if self.looks("unused.volume", env) && v.state == "available" {
            let days = self.cfg.volume_days;
            if v.created
                .is_some_and(|c| self.now - c > Duration::days(days))
            {
                let usd = f64::from(v.size_gb) * self.cfg.prices.ebs_gb_month;
                self.find("unused.volume", r.clone(), env, &v.tags,
                    format!("volume {} ({} GB {}) is attached to nothing, created more than {days} days ago", v.id, v.size_gb, v.volume_type),
                    Fix::cmd(format!("aws ec2 create-snapshot --volume-id {} --description 'before delete' && aws ec2 delete-volume --volume-id {}", v.id, v.id)),
                    Some(usd));
            }
        }
        self.tags(&r, None, &v.tags, env);
    }

    fn address(&mut self, a: &AddressFacts, env: Option<Env>) {
        let r = format!("eip:{}", a.allocation_id);
        if self.looks("unused.address", env) && !a.associated {
            self.find(
                "unused.address",
                r.clone(),
                env,
                &a.tags,
                format!(
                    "Elastic IP {} ({}) is associated with nothing",
                    a.public_ip, a.allocation_id
                ),
                Fix::cmd(format!(
                    "aws ec2 release-address --allocation-id {}",
                    a.allocation_id
                )),
                Some(self.cfg.prices.eip_month),
            );
        }
        self.tags(&r, None, &a.tags, env);
    }

    fn instance(&mut self, i: &InstanceFacts, env: Option<Env>, sizes: &BTreeMap<&str, i32>) {
        let r = format!("ec2:{}", i.id);
        if self.looks("unused.stopped_instance", env) && i.state == "stopped" {
            let days = self.cfg.stopped_days;
            if let Some(since) = i.stopped_since {
                if self.now - since > Duration::days(days) {
                    let gb: i32 = i
                        .volume_ids
                        .iter()
                        .filter_map(|v| sizes.get(v.as_str()))
                        .sum();
                    let usd = f64::from(gb) * self.cfg.prices.ebs_gb_month;
                    self.find("unused.stopped_instance", r.clone(), env, &i.tags,
                        format!("instance {} ({}) stopped {} days ago (review after {days}); its {gb} GB of volumes are still billed", i.id, i.instance_type, (self.now - since).num_days()),
                        Fix::cmd(format!("aws ec2 create-image --instance-id {} --name {}-final && aws ec2 terminate-instances --instance-ids {}", i.id, i.id, i.id)),
                        Some(usd));
                }
            }
        }
        self.tags(&r, None, &i.tags, env);
    }

    fn load_balancer(&mut self, lb: &LoadBalancerFacts, env: Option<Env>) {
        let r = format!("elb:{}", lb.name);
        let days = self.cfg.lb_days;
        let old = lb
            .created
            .is_some_and(|c| self.now - c > Duration::days(days));
        // Gateway load balancers: no traffic metric read (None) and not judged.
        if lb.kind != "gateway" && self.looks("unused.load_balancer", env) && old {
            let idle = lb.traffic.is_none_or(|t| t <= 0.0);
            if idle {
                self.find(
                    "unused.load_balancer",
                    r.clone(),
                    env,
                    &lb.tags,
                    format!(
                        "{} load balancer {} had no traffic in the last {days} days",
                        lb.kind, lb.name
                    ),
                    Fix::cmd(format!(
                        "aws elbv2 delete-load-balancer --load-balancer-arn {}",
                        lb.arn
                    )),
                    Some(self.cfg.prices.lb_month),
                );
            }
        }
        self.tags(&r, Some(&lb.arn), &lb.tags, env);
    }

    /// `tags.missing` for one resource: the required tags it lacks. On an RDS resource in an
    /// environment where fixes run, the tags `posture.fix.default_tags` gives are filled in
    /// (never the environment tag: guessing a resource's environment is how prod gets stopped).
    fn tags(&mut self, resource: &str, arn: Option<&str>, tags: &Tags, env: Option<Env>) {
        self.out.tag_checked.insert(resource.to_string());
        if !self.looks("tags.missing", env) {
            return;
        }
        let missing: Vec<&String> = self
            .cfg
            .required_tags
            .iter()
            .filter(|k| tags.get(k.as_str()).is_none_or(|v| v.trim().is_empty()))
            .collect();
        if missing.is_empty() {
            return;
        }
        let fillable: Tags = missing
            .iter()
            .filter(|k| **k != &self.cfg.env_tag)
            .filter_map(|k| {
                self.cfg
                    .default_tags
                    .get(k.as_str())
                    .map(|v| (k.to_string(), v.clone()))
            })
            .collect();
        let rds_arn = arn.filter(|a| a.starts_with("arn:aws:rds:") || a.starts_with("arn:aws-"));
        let fix = match rds_arn {
            Some(a) if self.cfg.may_fix(env) && !fillable.is_empty() && a.contains(":rds:") => {
                Fix::RdsTags {
                    arn: a.to_string(),
                    tags: fillable,
                }
            }
            _ => {
                let target = arn.map(str::to_string).unwrap_or_else(|| {
                    format!(
                        "arn:aws:ec2:{}:<account>:{}",
                        self.region,
                        ec2_arn_tail(resource)
                    )
                });
                Fix::cmd(format!(
                    "aws resourcegroupstaggingapi tag-resources --resource-arn-list {target} --tags {}",
                    missing
                        .iter()
                        .map(|k| format!("{k}=<value>"))
                        .collect::<Vec<_>>()
                        .join(",")
                ))
            }
        };
        let names: Vec<&str> = missing.iter().map(|k| k.as_str()).collect();
        self.find(
            "tags.missing",
            resource.to_string(),
            env,
            tags,
            format!(
                "{resource} lacks the cost allocation tag(s) {} (SPEC 6)",
                names.join(", ")
            ),
            fix,
            None,
        );
    }
}

/// "volume/vol-1" for "ec2-volume:vol-1", "instance/i-1" for "ec2:i-1".
fn ec2_arn_tail(resource: &str) -> String {
    match resource.split_once(':') {
        Some(("ec2-volume", id)) => format!("volume/{id}"),
        Some(("ec2", id)) => format!("instance/{id}"),
        Some(("eip", id)) => format!("elastic-ip/{id}"),
        _ => resource.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use chrono::TimeZone;
    use nbaops_shared::config::{layer, posture::from_settings};

    fn cfg(pairs: &[(&str, &str)]) -> PostureConfig {
        let vars = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        from_settings(&layer(Env::Prod, &vars, &BTreeMap::new()).unwrap()).unwrap()
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 30, 6, 0, 0).unwrap()
    }

    /// The three cost allocation tags, for `env`.
    pub(crate) fn tags(env: &str) -> Tags {
        [
            ("nbaops:env", env),
            ("team", "platform"),
            ("cost-center", "nba"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// A database meeting every rule.
    pub(crate) fn good_db(id: &str) -> DbFacts {
        DbFacts {
            id: id.into(),
            arn: format!("arn:aws:rds:us-east-1:123456789012:db:{id}"),
            engine: "postgres".into(),
            engine_version: "15.4".into(),
            status: "available".into(),
            storage_encrypted: true,
            publicly_accessible: false,
            deletion_protection: true,
            multi_az: true,
            backup_retention_days: 7,
            auto_minor_version_upgrade: true,
            performance_insights: true,
            monitoring_interval_seconds: 0,
            parameter_groups: vec!["nbaops-pg15".into()],
            cluster: None,
            replica_of: None,
            tags: tags("prod"),
        }
    }

    fn facts_with_dbs(dbs: Vec<DbFacts>) -> Facts {
        let tls = dbs.iter().map(|d| (d.id.clone(), None)).collect();
        Facts {
            dbs: Some(dbs),
            tls_params: tls,
            replicated: Some(BTreeSet::new()),
            ..Default::default()
        }
    }

    fn rules_of(e: &Evaluation, resource: &str) -> Vec<&'static str> {
        e.findings
            .iter()
            .filter(|f| f.resource == resource)
            .map(|f| f.rule)
            .collect()
    }

    #[test]
    fn each_database_rule_finds_the_bad_one_and_not_the_good_one() {
        let c = cfg(&[("NBAOPS_POSTURE__DR_REGION", "us-west-2")]);
        type Break = fn(&mut DbFacts);
        let cases: &[(&str, Break)] = &[
            ("rds.public", |d| d.publicly_accessible = true),
            ("rds.encryption", |d| d.storage_encrypted = false),
            ("rds.deletion_protection", |d| d.deletion_protection = false),
            ("rds.multi_az", |d| d.multi_az = false),
            ("rds.backup_retention", |d| d.backup_retention_days = 6),
            ("rds.minor_version_upgrade", |d| {
                d.auto_minor_version_upgrade = false
            }),
            ("rds.monitoring", |d| d.performance_insights = false),
            // PostgreSQL 14: rds.force_ssl defaults to 0 there.
            ("rds.force_ssl", |d| d.engine_version = "14.9".into()),
        ];
        for (rule, breaks) in cases {
            let good = good_db("good");
            let mut bad = good_db("bad");
            breaks(&mut bad);
            let mut facts = facts_with_dbs(vec![good.clone(), bad.clone()]);
            facts.replicated = Some([good.arn.clone(), bad.arn.clone()].into());
            let e = evaluate(&c, Env::Prod, "us-east-1", now(), &facts);
            assert_eq!(rules_of(&e, "rds:bad"), vec![*rule], "{rule}");
            assert!(
                rules_of(&e, "rds:good").is_empty(),
                "{rule}: {:?}",
                e.findings
            );
            assert_eq!(e.checked[rule], 2, "{rule}");
            let f = &e.findings[0];
            assert_eq!(f.severity, c.severity(rule));
            assert!(f.detail.contains("bad"), "{rule}: {}", f.detail);
            // The TLS fix changes the parameter group, every other one the instance.
            let target = if *rule == "rds.force_ssl" {
                "nbaops-pg15"
            } else {
                "bad"
            };
            assert!(
                f.fix.command().contains(target),
                "{rule}: {}",
                f.fix.command()
            );
        }
        // DR replication: the good one replicated, the bad one not.
        let good = good_db("good");
        let bad = good_db("bad");
        let mut facts = facts_with_dbs(vec![good.clone(), bad]);
        facts.replicated = Some([good.arn.clone()].into());
        let e = evaluate(&c, Env::Prod, "us-east-1", now(), &facts);
        assert_eq!(rules_of(&e, "rds:bad"), vec!["rds.dr_replication"]);
        assert!(rules_of(&e, "rds:good").is_empty());
        assert!(e.findings[0].fix.command().contains("--region us-west-2"));
    }

    #[test]
    fn tls_parameter_values_and_defaults_per_engine_version() {
        let c = cfg(&[]);
        let mut facts = facts_with_dbs(vec![
            good_db("pg15-unset"),
            DbFacts {
                engine_version: "14.9".into(),
                ..good_db("pg14-set")
            },
            DbFacts {
                engine_version: "16.1".into(),
                ..good_db("pg16-off")
            },
            DbFacts {
                engine: "mysql".into(),
                engine_version: "8.0.35".into(),
                ..good_db("my-unset")
            },
            DbFacts {
                engine: "sqlserver-ex".into(),
                ..good_db("mssql")
            },
        ]);
        facts.tls_params.insert("pg14-set".into(), Some("1".into()));
        facts.tls_params.insert("pg16-off".into(), Some("0".into()));
        facts.tls_params.remove("mssql");
        let e = evaluate(&c, Env::Prod, "us-east-1", now(), &facts);
        let tls: Vec<&str> = e
            .findings
            .iter()
            .filter(|f| f.rule == "rds.force_ssl")
            .map(|f| f.resource.as_str())
            .collect();
        assert_eq!(tls, ["rds:my-unset", "rds:pg16-off"]);
        assert!(e
            .findings
            .iter()
            .any(|f| f.detail.contains("require_secure_transport")));
        assert_eq!(
            e.checked["rds.force_ssl"], 4,
            "sqlserver has no TLS parameter rule"
        );
        // Unread parameter: not judged (no finding, no count as passing).
        let mut facts = facts_with_dbs(vec![DbFacts {
            engine_version: "14.9".into(),
            ..good_db("x")
        }]);
        facts.tls_params.clear();
        let e = evaluate(&c, Env::Prod, "us-east-1", now(), &facts);
        assert!(e.findings.is_empty());
        assert!(facts.unread().contains("tls_params"));
    }

    #[test]
    fn prod_only_rules_skip_other_envs_and_scope_follows_the_env_tag() {
        let c = cfg(&[]);
        let mut dev = good_db("dev-db");
        dev.tags = tags("dev");
        dev.multi_az = false;
        dev.deletion_protection = false;
        let mut other = good_db("prod-db");
        other.publicly_accessible = true;
        let mut untagged = good_db("untagged");
        untagged.tags.clear();
        untagged.multi_az = false;
        let facts = facts_with_dbs(vec![dev, other, untagged]);
        // The dev deployment: the prod database is another's; the untagged one is claimed.
        let e = evaluate(&c, Env::Dev, "us-east-1", now(), &facts);
        assert!(rules_of(&e, "rds:dev-db").is_empty(), "{:?}", e.findings);
        assert!(rules_of(&e, "rds:prod-db").is_empty());
        assert_eq!(rules_of(&e, "rds:untagged"), vec!["tags.missing"]);
        assert_eq!((e.in_scope, e.other_envs), (2, 1));
        let c = cfg(&[("NBAOPS_POSTURE__CLAIM_UNTAGGED", "false")]);
        let e = evaluate(&c, Env::Dev, "us-east-1", now(), &facts);
        assert!(rules_of(&e, "rds:untagged").is_empty());
    }

    #[test]
    fn replicas_and_cluster_members_are_not_judged_on_what_they_do_not_own() {
        let c = cfg(&[("NBAOPS_POSTURE__DR_REGION", "us-west-2")]);
        let replica = DbFacts {
            replica_of: Some("good".into()),
            multi_az: false,
            backup_retention_days: 0,
            ..good_db("replica")
        };
        let member = DbFacts {
            cluster: Some("aurora".into()),
            storage_encrypted: false,
            multi_az: false,
            backup_retention_days: 1,
            ..good_db("member")
        };
        let facts = facts_with_dbs(vec![replica, member]);
        let e = evaluate(&c, Env::Prod, "us-east-1", now(), &facts);
        assert!(e.findings.is_empty(), "{:?}", e.findings);
    }

    #[test]
    fn snapshots_caches_and_unused_resources() {
        let c = cfg(&[]);
        let old = now() - Duration::days(60);
        let recent = now() - Duration::days(2);
        let snap = |id: &str, public: bool, created| DbSnapshotFacts {
            id: id.into(),
            arn: format!("arn:aws:rds:us-east-1:123456789012:snapshot:{id}"),
            instance: "good".into(),
            kind: "manual".into(),
            created: Some(created),
            allocated_gb: 100,
            public,
            tags: tags("prod"),
        };
        let cache = |id: &str, transit, rest, sg: &str| CacheFacts {
            id: id.into(),
            arn: format!("arn:aws:elasticache:us-east-1:123456789012:replicationgroup:{id}"),
            engine: "redis".into(),
            engine_version: "7.0".into(),
            transit_encryption: transit,
            at_rest_encryption: rest,
            security_groups: vec![sg.into()],
            tags: tags("prod"),
        };
        let facts = Facts {
            dbs: Some(vec![good_db("good")]),
            tls_params: [("good".to_string(), None)].into(),
            replicated: Some(BTreeSet::new()),
            snapshots: Some(vec![
                snap("shared-by-mistake", true, recent),
                snap("kept-too-long", false, old),
                snap("fresh", false, recent),
                snap(&format!("{MONTHLY_PREFIX}good-2026-01"), false, old),
            ]),
            caches: Some(vec![
                cache("cache-ok", Some(true), Some(true), "sg-private"),
                cache("cache-plain", Some(false), Some(false), "sg-open"),
                CacheFacts {
                    engine: "memcached".into(),
                    engine_version: "1.6.6".into(),
                    ..cache("memcached-old", None, None, "sg-private")
                },
            ]),
            security_groups: Some(vec![
                SecurityGroupFacts { id: "sg-private".into(), name: "app".into(), open_to_world: vec![] },
                SecurityGroupFacts { id: "sg-open".into(), name: "default".into(), open_to_world: vec!["tcp 6379-6379".into()] },
            ]),
            volumes: Some(vec![
                VolumeFacts { id: "vol-orphan".into(), state: "available".into(), size_gb: 100, volume_type: "gp3".into(), created: Some(old), tags: tags("prod") },
                VolumeFacts { id: "vol-new".into(), state: "available".into(), size_gb: 100, volume_type: "gp3".into(), created: Some(recent), tags: tags("prod") },
                VolumeFacts { id: "vol-used".into(), state: "in-use".into(), size_gb: 50, volume_type: "gp3".into(), created: Some(old), tags: tags("prod") },
            ]),
            addresses: Some(vec![
                AddressFacts { allocation_id: "eipalloc-free".into(), public_ip: "203.0.113.1".into(), associated: false, tags: tags("prod") },
                AddressFacts { allocation_id: "eipalloc-used".into(), public_ip: "203.0.113.2".into(), associated: true, tags: tags("prod") },
            ]),
            instances: Some(vec![
                InstanceFacts { id: "i-asleep".into(), state: "stopped".into(), instance_type: "m5.large".into(), stopped_since: Some(old), volume_ids: vec!["vol-used".into()], tags: tags("prod") },
                InstanceFacts { id: "i-napping".into(), state: "stopped".into(), instance_type: "m5.large".into(), stopped_since: Some(recent), volume_ids: vec![], tags: tags("prod") },
                InstanceFacts { id: "i-running".into(), state: "running".into(), instance_type: "m5.large".into(), stopped_since: None, volume_ids: vec![], tags: tags("prod") },
            ]),
            load_balancers: Some(vec![
                LoadBalancerFacts { arn: "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/idle/1".into(), name: "idle".into(), kind: "application".into(), created: Some(old), traffic: None, tags: tags("prod") },
                LoadBalancerFacts { arn: "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/busy/2".into(), name: "busy".into(), kind: "application".into(), created: Some(old), traffic: Some(1200.0), tags: tags("prod") },
                LoadBalancerFacts { arn: "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/new/3".into(), name: "new".into(), kind: "application".into(), created: Some(recent), traffic: Some(0.0), tags: tags("prod") },
            ]),
            tagged: Some(vec![]),
        };
        let e = evaluate(&c, Env::Prod, "us-east-1", now(), &facts);
        let got: Vec<(&str, &str)> = e
            .findings
            .iter()
            .map(|f| (f.rule, f.resource.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("cache.at_rest_encryption", "cache:cache-plain"),
                ("cache.open_security_group", "cache:cache-plain"),
                ("cache.transit_encryption", "cache:cache-plain"),
                ("rds.dr_replication", "rds:good"),
                ("rds.snapshot_public", "rds-snapshot:shared-by-mistake"),
                ("unused.address", "eip:eipalloc-free"),
                ("unused.load_balancer", "elb:idle"),
                ("unused.snapshot", "rds-snapshot:kept-too-long"),
                ("unused.stopped_instance", "ec2:i-asleep"),
                ("unused.volume", "ec2-volume:vol-orphan"),
            ]
            .iter()
            .filter(|(r, _)| *r != "rds.dr_replication" || c.dr_region.is_some())
            .copied()
            .collect::<Vec<_>>()
        );
        // Costs: 100 GB gp3 at 0.08, an EIP, 100 GB of snapshot at 0.095, 50 GB behind the
        // stopped instance, an ALB.
        let usd = e.unused_monthly_usd();
        let want = 100.0 * 0.08 + 3.6 + 100.0 * 0.095 + 50.0 * 0.08 + 16.43;
        assert!((usd - want).abs() < 1e-9, "{usd} vs {want}");
        assert!(e.findings.iter().all(|f| !f.fix.automatic()));
    }

    #[test]
    fn missing_tags_are_found_and_filled_only_where_fixes_run() {
        let mut bare = good_db("bare");
        bare.tags = [("nbaops:env".to_string(), "dev".to_string())].into();
        let facts = Facts {
            tagged: Some(vec![
                TaggedResource {
                    arn: "arn:aws:s3:::some-bucket".into(),
                    tags: [("nbaops:env".to_string(), "dev".to_string())].into(),
                },
                // Already covered by the describe facts: not judged twice.
                TaggedResource {
                    arn: bare.arn.clone(),
                    tags: bare.tags.clone(),
                },
            ]),
            ..facts_with_dbs(vec![bare])
        };
        let c = cfg(&[]);
        let e = evaluate(&c, Env::Dev, "us-east-1", now(), &facts);
        let tags_found: Vec<&str> = e
            .findings
            .iter()
            .filter(|f| f.rule == "tags.missing")
            .map(|f| f.resource.as_str())
            .collect();
        assert_eq!(tags_found, ["arn:aws:s3:::some-bucket", "rds:bare"]);
        assert!(e.findings.iter().all(|f| !f.fix.automatic()));
        let c = cfg(&[
            ("NBAOPS_POSTURE__FIX__ENVS", "dev"),
            (
                "NBAOPS_POSTURE__FIX__DEFAULT_TAGS",
                r#"{"team":"platform","nbaops:env":"dev"}"#,
            ),
        ]);
        let e = evaluate(&c, Env::Dev, "us-east-1", now(), &facts);
        let fix = &e
            .findings
            .iter()
            .find(|f| f.resource == "rds:bare")
            .unwrap()
            .fix;
        // team filled; cost-center has no default; the env tag is never guessed.
        assert_eq!(
            fix,
            &Fix::RdsTags {
                arn: "arn:aws:rds:us-east-1:123456789012:db:bare".into(),
                tags: [("team".to_string(), "platform".to_string())].into()
            }
        );
        // Deletion protection, applied everywhere and fixed in dev.
        let c = cfg(&[
            ("NBAOPS_POSTURE__FIX__ENVS", "dev"),
            ("NBAOPS_POSTURE__PROD_ONLY_RULES", "rds.multi_az"),
        ]);
        let mut d = good_db("dev-db");
        d.tags = tags("dev");
        d.deletion_protection = false;
        let e = evaluate(&c, Env::Dev, "us-east-1", now(), &facts_with_dbs(vec![d]));
        assert_eq!(e.findings.len(), 1, "{:?}", e.findings);
        assert_eq!(
            e.findings[0].fix,
            Fix::DeletionProtection {
                db_instance: "dev-db".into()
            }
        );
    }

    #[test]
    fn arns_name_resources_as_the_describe_facts_do() {
        for (arn, want) in [
            (
                "arn:aws:rds:us-east-1:1:db:nbaops-prod-db",
                "rds:nbaops-prod-db",
            ),
            ("arn:aws:rds:us-east-1:1:snapshot:s1", "rds-snapshot:s1"),
            ("arn:aws:elasticache:us-east-1:1:cluster:c1", "cache:c1"),
            (
                "arn:aws:elasticache:us-east-1:1:replicationgroup:rg1",
                "cache:rg1",
            ),
            ("arn:aws:ec2:us-east-1:1:instance/i-1", "ec2:i-1"),
            ("arn:aws:ec2:us-east-1:1:volume/vol-1", "ec2-volume:vol-1"),
            (
                "arn:aws:ec2:us-east-1:1:elastic-ip/eipalloc-1",
                "eip:eipalloc-1",
            ),
            (
                "arn:aws:elasticloadbalancing:us-east-1:1:loadbalancer/app/web/abc",
                "elb:web",
            ),
            ("arn:aws:s3:::bucket", "arn:aws:s3:::bucket"),
            ("not-an-arn", "not-an-arn"),
        ] {
            assert_eq!(resource_of_arn(arn), want, "{arn}");
        }
    }

    #[test]
    fn unread_sources_are_named() {
        let f = Facts::default();
        let u = f.unread();
        assert!(u.contains("dbs") && u.contains("volumes") && u.contains("tagged"));
        assert!(!u.contains("tls_params"), "no database: nothing to read");
    }
}

//! posture-check's world on the emulator (issue #21): for every rule moto can express, one
//! compliant resource (`posture-ok-…`) and one that breaks that rule and only that rule
//! (`posture-bad-…`), every one tagged `nbaops:env=prod`, `team=platform`, `cost-center=nba`
//! except the bad one of `tags.missing`.
//!
//! Ages. moto stamps creation times (volumes, snapshots, load balancers) and the stop time in
//! `StateTransitionReason` with its own clock, which is the test clock ([`crate::clock`], moto
//! runs under freezegun), and no API lets a caller backdate them. So nothing here is created
//! "old": the seed is made at `now` (the test clock when it runs) and the age rules are judged
//! later, at [`Seeded::judge_at`] = `now` + [`JUDGE_AFTER_DAYS`] days, past every age threshold
//! of the defaults (volume 7, stopped instance 14, load balancer 14, snapshot 35 days). That is
//! what happens on AWS too: a volume left unattached today is found unused a week later. What
//! separates an ok resource from a bad one is therefore never its age but its state: the ok
//! volume is attached, the ok address associated, the ok instance running, the ok snapshot a
//! monthly keeper (`nbaops-monthly-…`), the ok load balancer has traffic. That traffic is the one
//! thing the seed must invent: ELB publishes `RequestCount` itself and moto has no traffic, so the
//! seed puts one datapoint a day in `AWS/ApplicationELB` `RequestCount` for the ok load balancer
//! from `now` to `judge_at`, as ELB would have by then (a caller judging at `judge_at` reads
//! them; they are the seed's, not measurements).

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{
    IpPermission, IpRange, ResourceType, Tag as Ec2Tag, TagSpecification, VolumeType,
};
use chrono::{DateTime, Duration, Utc};
use nbaops_shared::adapters::SdkPosture;

use crate::platform::{dbg_err, Clients};
use crate::HarnessError;

/// Days between the seed and the instant its age rules are judged at (past the largest default
/// threshold, `posture.unused.snapshot_days` = 35).
pub const JUDGE_AFTER_DAYS: i64 = 40;
/// The environment every seeded resource is tagged with.
pub const ENV: &str = "prod";
const AMI: &str = "ami-12c6146b";

pub const OK_DB: &str = "posture-ok-db";
pub const OK_PARAMS: &str = "posture-ok-force-ssl";
pub const BAD_PARAMS: &str = "posture-bad-force-ssl";

/// The seeded pair of one rule: identifiers as the facts carry them (DB instance id, snapshot
/// id, cache id, security group id, volume id, allocation id, instance id, load balancer name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub ok: String,
    pub bad: String,
}

#[derive(Debug, Clone)]
pub struct Seeded {
    /// Rule -> its pair.
    pub rules: BTreeMap<&'static str, Pair>,
    /// Rules moto cannot express, and why.
    pub not_seeded: BTreeMap<&'static str, &'static str>,
    /// The instant the seed was made (the `now` given).
    pub at: DateTime<Utc>,
    /// When to judge the age rules: `at` + [`JUDGE_AFTER_DAYS`].
    pub judge_at: DateTime<Utc>,
}

impl Seeded {
    pub fn pair(&self, rule: &str) -> Result<&Pair, HarnessError> {
        self.rules
            .get(rule)
            .ok_or_else(|| HarnessError::Setup(format!("no seeded pair for {rule}")))
    }
}

/// The adapter under test, on the harness's clients (CloudWatch through the CBOR bridge).
pub fn adapter(c: &Clients) -> SdkPosture {
    SdkPosture {
        rds: c.rds.clone(),
        elasticache: c.cache.clone(),
        ec2: c.ec2.clone(),
        elbv2: c.elbv2.clone(),
        cloudwatch: c.cw.clone(),
        tagging: c.tagging.clone(),
        conf: c.conf.clone(),
    }
}

fn full_tags() -> Vec<(&'static str, &'static str)> {
    vec![
        ("nbaops:env", ENV),
        ("team", "platform"),
        ("cost-center", "nba"),
    ]
}

fn rds_tags(tags: &[(&str, &str)]) -> Vec<aws_sdk_rds::types::Tag> {
    tags.iter()
        .map(|(k, v)| aws_sdk_rds::types::Tag::builder().key(*k).value(*v).build())
        .collect()
}

fn cache_tags() -> Vec<aws_sdk_elasticache::types::Tag> {
    full_tags()
        .iter()
        .map(|(k, v)| {
            aws_sdk_elasticache::types::Tag::builder()
                .key(*k)
                .value(*v)
                .build()
        })
        .collect()
}

fn ec2_spec(kind: ResourceType, name: &str) -> TagSpecification {
    let mut spec = TagSpecification::builder().resource_type(kind);
    for (k, v) in full_tags() {
        spec = spec.tags(Ec2Tag::builder().key(k).value(v).build());
    }
    spec.tags(Ec2Tag::builder().key("Name").value(name).build())
        .build()
}

/// The settings of a database that breaks one rule at most: `ok` passes every rule.
#[derive(Clone)]
struct Db {
    id: &'static str,
    encrypted: bool,
    public: bool,
    deletion_protection: bool,
    multi_az: bool,
    retention: i32,
    minor_upgrade: bool,
    monitoring: i32,
    params: &'static str,
    tags: Vec<(&'static str, &'static str)>,
}

impl Db {
    fn ok(id: &'static str) -> Db {
        Db {
            id,
            encrypted: true,
            public: false,
            deletion_protection: true,
            multi_az: true,
            retention: 7,
            minor_upgrade: true,
            monitoring: 60,
            params: OK_PARAMS,
            tags: full_tags(),
        }
    }
}

async fn create_db(c: &Clients, d: &Db) -> Result<(), HarnessError> {
    let mut req = c
        .rds
        .create_db_instance()
        .db_instance_identifier(d.id)
        .db_instance_class("db.t3.micro")
        .engine("postgres")
        .engine_version("15.7")
        .allocated_storage(20)
        .master_username("nbaops")
        .master_user_password("not-a-real-password")
        .storage_encrypted(d.encrypted)
        .publicly_accessible(d.public)
        .deletion_protection(d.deletion_protection)
        .multi_az(d.multi_az)
        .backup_retention_period(d.retention)
        .auto_minor_version_upgrade(d.minor_upgrade)
        .db_parameter_group_name(d.params)
        .set_tags(Some(rds_tags(&d.tags)));
    if d.monitoring > 0 {
        req = req
            .monitoring_interval(d.monitoring)
            .monitoring_role_arn("arn:aws:iam::123456789012:role/rds-monitoring-role");
    }
    req.send()
        .await
        .map(drop)
        .map_err(|e| dbg_err(&format!("create_db_instance {}", d.id), e))
}

async fn param_group(c: &Clients, name: &str, force_ssl: &str) -> Result<(), HarnessError> {
    c.rds
        .create_db_parameter_group()
        .db_parameter_group_name(name)
        .db_parameter_group_family("postgres15")
        .description("posture-check seed")
        .send()
        .await
        .map_err(|e| dbg_err("create_db_parameter_group", e))?;
    c.rds
        .modify_db_parameter_group()
        .db_parameter_group_name(name)
        .parameters(
            aws_sdk_rds::types::Parameter::builder()
                .parameter_name("rds.force_ssl")
                .parameter_value(force_ssl)
                .apply_method(aws_sdk_rds::types::ApplyMethod::Immediate)
                .build(),
        )
        .send()
        .await
        .map(drop)
        .map_err(|e| dbg_err("modify_db_parameter_group", e))
}

async fn snapshot(c: &Clients, id: &str, public: bool) -> Result<(), HarnessError> {
    c.rds
        .create_db_snapshot()
        .db_snapshot_identifier(id)
        .db_instance_identifier(OK_DB)
        .set_tags(Some(rds_tags(&full_tags())))
        .send()
        .await
        .map_err(|e| dbg_err(&format!("create_db_snapshot {id}"), e))?;
    if public {
        c.rds
            .modify_db_snapshot_attribute()
            .db_snapshot_identifier(id)
            .attribute_name("restore")
            .values_to_add("all")
            .send()
            .await
            .map_err(|e| dbg_err("modify_db_snapshot_attribute", e))?;
    }
    Ok(())
}

async fn security_group(
    c: &Clients,
    vpc: &str,
    name: &str,
    cidr: &str,
) -> Result<String, HarnessError> {
    let id = c
        .ec2
        .create_security_group()
        .group_name(name)
        .description("posture-check seed")
        .vpc_id(vpc)
        .send()
        .await
        .map_err(|e| dbg_err("create_security_group", e))?
        .group_id()
        .unwrap_or_default()
        .to_string();
    c.ec2
        .authorize_security_group_ingress()
        .group_id(&id)
        .ip_permissions(
            IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(11211)
                .to_port(11211)
                .ip_ranges(IpRange::builder().cidr_ip(cidr).build())
                .build(),
        )
        .send()
        .await
        .map_err(|e| dbg_err("authorize_security_group_ingress", e))?;
    Ok(id)
}

async fn instance(c: &Clients, name: &str) -> Result<String, HarnessError> {
    let out = c
        .ec2
        .run_instances()
        .image_id(AMI)
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
        .min_count(1)
        .max_count(1)
        .tag_specifications(ec2_spec(ResourceType::Instance, name))
        .send()
        .await
        .map_err(|e| dbg_err("run_instances", e))?;
    Ok(out
        .instances()
        .first()
        .and_then(|i| i.instance_id())
        .unwrap_or_default()
        .to_string())
}

async fn volume(c: &Clients, name: &str) -> Result<String, HarnessError> {
    Ok(c.ec2
        .create_volume()
        .availability_zone("us-east-1a")
        .size(8)
        .volume_type(VolumeType::Gp3)
        .tag_specifications(ec2_spec(ResourceType::Volume, name))
        .send()
        .await
        .map_err(|e| dbg_err("create_volume", e))?
        .volume_id()
        .unwrap_or_default()
        .to_string())
}

async fn address(c: &Clients, name: &str) -> Result<String, HarnessError> {
    Ok(c.ec2
        .allocate_address()
        .domain(aws_sdk_ec2::types::DomainType::Vpc)
        .tag_specifications(ec2_spec(ResourceType::ElasticIp, name))
        .send()
        .await
        .map_err(|e| dbg_err("allocate_address", e))?
        .allocation_id()
        .unwrap_or_default()
        .to_string())
}

async fn load_balancer(
    c: &Clients,
    name: &str,
    subnets: &[String],
) -> Result<String, HarnessError> {
    let tags = full_tags()
        .iter()
        .map(|(k, v)| {
            aws_sdk_elasticloadbalancingv2::types::Tag::builder()
                .key(*k)
                .value(*v)
                .build()
        })
        .collect();
    let out = c
        .elbv2
        .create_load_balancer()
        .name(name)
        .set_subnets(Some(subnets.to_vec()))
        .r#type(aws_sdk_elasticloadbalancingv2::types::LoadBalancerTypeEnum::Application)
        .set_tags(Some(tags))
        .send()
        .await
        .map_err(|e| dbg_err("create_load_balancer", e))?;
    Ok(out
        .load_balancers()
        .first()
        .and_then(|l| l.load_balancer_arn())
        .unwrap_or_default()
        .to_string())
}

/// One `RequestCount` datapoint a day for the load balancer `arn` from `from` to `to`.
async fn put_requests(
    c: &Clients,
    arn: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<(), HarnessError> {
    use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
    let dim = arn
        .split_once(":loadbalancer/")
        .map(|(_, s)| s.to_string())
        .unwrap_or_default();
    let days = (to - from).num_days();
    let data: Vec<MetricDatum> = (0..days)
        .map(|d| {
            let at = from + Duration::days(d) + Duration::hours(1);
            MetricDatum::builder()
                .metric_name("RequestCount")
                .dimensions(
                    Dimension::builder()
                        .name("LoadBalancer")
                        .value(&dim)
                        .build(),
                )
                .timestamp(aws_smithy_types::DateTime::from_secs(at.timestamp()))
                .value(100.0)
                .unit(StandardUnit::Count)
                .build()
        })
        .collect();
    c.cw.put_metric_data()
        .namespace("AWS/ApplicationELB")
        .set_metric_data(Some(data))
        .send()
        .await
        .map(drop)
        .map_err(|e| HarnessError::Setup(format!("put_metric_data RequestCount: {e:?}")))
}

/// Seeds posture-check's world at `now` (the test clock, which is moto's). See the module doc for
/// what is seeded and how ages are handled.
pub async fn seed(c: &Clients, now: DateTime<Utc>) -> Result<Seeded, HarnessError> {
    let mut rules: BTreeMap<&'static str, Pair> = BTreeMap::new();
    let mut pair = |rule: &'static str, ok: &str, bad: &str| {
        rules.insert(
            rule,
            Pair {
                ok: ok.to_string(),
                bad: bad.to_string(),
            },
        );
    };

    // RDS: one compliant database, and per rule one that differs from it in that rule only.
    param_group(c, OK_PARAMS, "1").await?;
    param_group(c, BAD_PARAMS, "0").await?;
    create_db(c, &Db::ok(OK_DB)).await?;
    let bad: Vec<(&'static str, Db)> = vec![
        (
            "rds.public",
            Db {
                public: true,
                ..Db::ok("posture-bad-public")
            },
        ),
        (
            "rds.encryption",
            Db {
                encrypted: false,
                ..Db::ok("posture-bad-encryption")
            },
        ),
        (
            "rds.force_ssl",
            Db {
                params: BAD_PARAMS,
                ..Db::ok("posture-bad-force-ssl")
            },
        ),
        (
            "rds.deletion_protection",
            Db {
                deletion_protection: false,
                ..Db::ok("posture-bad-deletion-protection")
            },
        ),
        (
            "rds.multi_az",
            Db {
                multi_az: false,
                ..Db::ok("posture-bad-multi-az")
            },
        ),
        (
            "rds.backup_retention",
            Db {
                retention: 1,
                ..Db::ok("posture-bad-backup-retention")
            },
        ),
        (
            "rds.minor_version_upgrade",
            Db {
                minor_upgrade: false,
                ..Db::ok("posture-bad-minor-upgrade")
            },
        ),
        (
            "rds.monitoring",
            Db {
                monitoring: 0,
                ..Db::ok("posture-bad-monitoring")
            },
        ),
        (
            "tags.missing",
            Db {
                tags: vec![("nbaops:env", ENV)],
                ..Db::ok("posture-bad-tags")
            },
        ),
    ];
    for (rule, db) in &bad {
        create_db(c, db).await?;
        pair(rule, OK_DB, db.id);
    }

    // Snapshots of the compliant database. Every manual snapshot is "unused" once older than
    // `posture.unused.snapshot_days`, except a monthly keeper: the ok one of `unused.snapshot`.
    snapshot(c, "posture-ok-snapshot-public", false).await?;
    snapshot(c, "posture-bad-snapshot-public", true).await?;
    pair(
        "rds.snapshot_public",
        "posture-ok-snapshot-public",
        "posture-bad-snapshot-public",
    );
    snapshot(c, "nbaops-monthly-posture-ok", false).await?;
    snapshot(c, "posture-bad-unused-snapshot", false).await?;
    pair(
        "unused.snapshot",
        "nbaops-monthly-posture-ok",
        "posture-bad-unused-snapshot",
    );

    // Security groups (the default VPC's), for the caches.
    let vpc = c
        .ec2
        .describe_vpcs()
        .send()
        .await
        .map_err(|e| dbg_err("describe_vpcs", e))?
        .vpcs()
        .iter()
        .find(|v| v.is_default() == Some(true))
        .and_then(|v| v.vpc_id().map(String::from))
        .ok_or_else(|| HarnessError::Setup("no default VPC in the emulator".into()))?;
    let ok_sg = security_group(c, &vpc, "posture-ok-open-sg", "10.0.0.0/16").await?;
    let bad_sg = security_group(c, &vpc, "posture-bad-open-sg", "0.0.0.0/0").await?;

    // Caches: a Redis OSS replication group encrypted in transit and at rest (the ok one of
    // both encryption rules), one without encryption at rest, a Memcached cluster without TLS
    // on a version that offers it, and a Memcached cluster behind the open security group.
    let group = |id: &'static str, at_rest: bool| {
        c.cache
            .create_replication_group()
            .replication_group_id(id)
            .replication_group_description("posture-check seed")
            .engine("redis")
            .engine_version("7.1")
            .cache_node_type("cache.t3.micro")
            .num_cache_clusters(1)
            .transit_encryption_enabled(true)
            .at_rest_encryption_enabled(at_rest)
            .security_group_ids(ok_sg.clone())
            .set_tags(Some(cache_tags()))
            .send()
    };
    group("posture-ok-cache", true)
        .await
        .map_err(|e| dbg_err("create_replication_group", e))?;
    group("posture-bad-at-rest", false)
        .await
        .map_err(|e| dbg_err("create_replication_group", e))?;
    pair(
        "cache.transit_encryption",
        "posture-ok-cache",
        "posture-bad-transit",
    );
    pair(
        "cache.at_rest_encryption",
        "posture-ok-cache",
        "posture-bad-at-rest",
    );
    let memcached = |id: &'static str, tls: bool, sg: &str| {
        c.cache
            .create_cache_cluster()
            .cache_cluster_id(id)
            .engine("memcached")
            .engine_version("1.6.22")
            .cache_node_type("cache.t3.micro")
            .num_cache_nodes(1)
            .transit_encryption_enabled(tls)
            .security_group_ids(sg)
            .set_tags(Some(cache_tags()))
            .send()
    };
    memcached("posture-bad-transit", false, &ok_sg)
        .await
        .map_err(|e| dbg_err("create_cache_cluster", e))?;
    memcached("posture-bad-open-sg", true, &bad_sg)
        .await
        .map_err(|e| dbg_err("create_cache_cluster", e))?;
    pair("cache.open_security_group", &ok_sg, &bad_sg);

    // EC2: a running instance with an attached volume and an associated address (the ok ones),
    // a stopped instance, a volume attached to nothing, an address associated with nothing.
    let running = instance(c, "posture-ok-stopped-instance").await?;
    let stopped = instance(c, "posture-bad-stopped-instance").await?;
    c.ec2
        .stop_instances()
        .instance_ids(&stopped)
        .send()
        .await
        .map_err(|e| dbg_err("stop_instances", e))?;
    pair("unused.stopped_instance", &running, &stopped);
    let attached = volume(c, "posture-ok-unused-volume").await?;
    c.ec2
        .attach_volume()
        .volume_id(&attached)
        .instance_id(&running)
        .device("/dev/sdf")
        .send()
        .await
        .map_err(|e| dbg_err("attach_volume", e))?;
    let loose = volume(c, "posture-bad-unused-volume").await?;
    pair("unused.volume", &attached, &loose);
    let used_ip = address(c, "posture-ok-unused-address").await?;
    c.ec2
        .associate_address()
        .allocation_id(&used_ip)
        .instance_id(&running)
        .send()
        .await
        .map_err(|e| dbg_err("associate_address", e))?;
    let free_ip = address(c, "posture-bad-unused-address").await?;
    pair("unused.address", &used_ip, &free_ip);

    // Load balancers: both application, the ok one with daily traffic up to `judge_at`.
    let judge_at = now + Duration::days(JUDGE_AFTER_DAYS);
    let subnets: Vec<String> = c
        .ec2
        .describe_subnets()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("vpc-id")
                .values(&vpc)
                .build(),
        )
        .send()
        .await
        .map_err(|e| dbg_err("describe_subnets", e))?
        .subnets()
        .iter()
        .filter_map(|s| s.subnet_id().map(String::from))
        .take(2)
        .collect();
    let busy = load_balancer(c, "posture-ok-lb", &subnets).await?;
    load_balancer(c, "posture-bad-lb", &subnets).await?;
    put_requests(c, &busy, now, judge_at).await?;
    pair("unused.load_balancer", "posture-ok-lb", "posture-bad-lb");

    let mut not_seeded = BTreeMap::new();
    not_seeded.insert(
        "rds.dr_replication",
        "moto does not implement StartDBInstanceAutomatedBackupsReplication: no backup is ever \
         replicated to another region",
    );
    Ok(Seeded {
        rules,
        not_seeded,
        at: now,
        judge_at,
    })
}

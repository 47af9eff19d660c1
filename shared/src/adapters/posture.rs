//! [`Posture`] over the SDK (issue #21): RDS, ElastiCache, EC2, Elastic Load Balancing v2,
//! CloudWatch and the Resource Groups Tagging API. Every list call is paginated (RDS and
//! ElastiCache `Marker`, EC2 `NextToken`, ELBv2 `Marker`, Tagging `PaginationToken`); every SDK
//! error becomes a dependency error the way the other adapters map them.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};

use super::{dependency, AwsClients};
use crate::error::Result;
use crate::ports::{
    AddressFacts, CacheFacts, DbFacts, DbSnapshotFacts, InstanceFacts, LoadBalancerFacts, Posture,
    SecurityGroupFacts, TaggedResource, Tags, VolumeFacts,
};

pub struct SdkPosture {
    pub rds: aws_sdk_rds::Client,
    pub elasticache: aws_sdk_elasticache::Client,
    pub ec2: aws_sdk_ec2::Client,
    pub elbv2: aws_sdk_elasticloadbalancingv2::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    pub tagging: aws_sdk_resourcegroupstagging::Client,
    /// The SDK configuration, for the DR region's RDS client.
    pub conf: aws_config::SdkConfig,
}

impl SdkPosture {
    pub fn new(aws: &AwsClients) -> SdkPosture {
        SdkPosture {
            rds: aws.rds(),
            elasticache: aws.elasticache(),
            ec2: aws.ec2(),
            elbv2: aws.elbv2(),
            cloudwatch: aws.cloudwatch(),
            tagging: aws.tagging(),
            conf: aws.conf().clone(),
        }
    }

    /// An RDS client for `region`, from the primary client's configuration (credentials,
    /// endpoint, retries, timeouts) with only the region changed, as `SdkRdsBackups` builds its
    /// DR client.
    fn rds_in(&self, region: &str) -> aws_sdk_rds::Client {
        let conf = self
            .rds
            .config()
            .to_builder()
            .region(aws_sdk_rds::config::Region::new(region.to_string()))
            .build();
        aws_sdk_rds::Client::from_conf(conf)
    }

    /// The Tagging API's tags of `arns`, in calls of at most [`TAGGING_ARNS_PER_CALL`] ARNs.
    /// A call with `ResourceARNList` takes no pagination parameter (the API refuses both in one
    /// request), so each chunk is one call. An ARN the API does not return has no tags.
    async fn tags_of_arns(&self, arns: &[String]) -> Result<BTreeMap<String, Tags>> {
        let mut out = BTreeMap::new();
        for chunk in arns.chunks(TAGGING_ARNS_PER_CALL) {
            let page = self
                .tagging
                .get_resources()
                .set_resource_arn_list(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| dependency("tagging", e))?;
            for m in page.resource_tag_mapping_list() {
                if let Some(arn) = m.resource_arn() {
                    out.insert(arn.to_string(), tagging_tags(m.tags()));
                }
            }
        }
        Ok(out)
    }

    /// The sum of `metric` over [since, until] in daily periods; `None` when CloudWatch has no
    /// datapoint at all.
    async fn traffic(
        &self,
        namespace: &str,
        metric: &str,
        dimension: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<f64>> {
        use aws_sdk_cloudwatch::types::{Dimension, Statistic};
        let out = self
            .cloudwatch
            .get_metric_statistics()
            .namespace(namespace)
            .metric_name(metric)
            .dimensions(
                Dimension::builder()
                    .name("LoadBalancer")
                    .value(dimension)
                    .build(),
            )
            .start_time(smithy_time(since))
            .end_time(smithy_time(until))
            .period(86_400)
            .statistics(Statistic::Sum)
            .send()
            .await
            .map_err(|e| dependency("cloudwatch", e))?;
        let points = out.datapoints();
        if points.is_empty() {
            return Ok(None);
        }
        Ok(Some(points.iter().filter_map(|d| d.sum()).sum()))
    }
}

/// At most 100 ARNs in one `GetResources` `ResourceARNList`:
/// <https://docs.aws.amazon.com/resourcegroupstagging/latest/APIReference/API_GetResources.html>
/// ("ResourceARNList ... Array Members: Minimum number of 1 item. Maximum number of 100 items."),
/// announced with the parameter:
/// <https://aws.amazon.com/about-aws/whats-new/2021/01/resource-groups-tagging-api-launches-resourcearnlist-parameter-getresources-operation/>.
pub const TAGGING_ARNS_PER_CALL: usize = 100;

/// The first Memcached version that offers in-transit encryption (TLS) on ElastiCache:
/// <https://docs.aws.amazon.com/AmazonElastiCache/latest/dg/in-transit-encryption.html>
/// (in-transit encryption conditions, Memcached: 1.6.12 and later) and
/// <https://docs.aws.amazon.com/AmazonElastiCache/latest/mem-ug/supported-engine-versions-mc.html>
/// ("Memcached version 1.6.12 ... adds support for ... encryption in-transit").
/// No Memcached version has encryption at rest: it is offered on Valkey and Redis OSS
/// replication groups only,
/// <https://docs.aws.amazon.com/AmazonElastiCache/latest/dg/at-rest-encryption.html>
/// (at-rest encryption conditions).
pub const MEMCACHED_TLS_SINCE: (u32, u32, u32) = (1, 6, 12);

/// `(metric namespace, metric)` of a load balancer's traffic by its type, `None` for the types
/// not read (gateway). Application Load Balancers: `AWS/ApplicationELB` `RequestCount`,
/// <https://docs.aws.amazon.com/elasticloadbalancing/latest/application/load-balancer-cloudwatch-metrics.html>;
/// Network Load Balancers: `AWS/NetworkELB` `NewFlowCount`,
/// <https://docs.aws.amazon.com/elasticloadbalancing/latest/network/load-balancer-cloudwatch-metrics.html>.
/// Both take the dimension `LoadBalancer` = [`lb_dimension`].
pub fn traffic_metric(kind: &str) -> Option<(&'static str, &'static str)> {
    match kind {
        "application" => Some(("AWS/ApplicationELB", "RequestCount")),
        "network" => Some(("AWS/NetworkELB", "NewFlowCount")),
        _ => None,
    }
}

/// The `LoadBalancer` dimension value: the final portion of the load balancer's ARN, after
/// `loadbalancer/` (`app/my-load-balancer/50dc6c495c0c9188`, `net/...`), per the dimension
/// tables of the two pages cited at [`traffic_metric`].
pub fn lb_dimension(arn: &str) -> Option<&str> {
    arn.split_once(":loadbalancer/")
        .map(|(_, s)| s)
        .filter(|s| !s.is_empty())
}

/// `(transit, at rest)` as the port reports them for an ElastiCache engine: Memcached has no
/// encryption at rest, and no TLS before [`MEMCACHED_TLS_SINCE`].
pub fn cache_encryption(
    engine: &str,
    version: &str,
    transit: Option<bool>,
    at_rest: Option<bool>,
) -> (Option<bool>, Option<bool>) {
    if engine.eq_ignore_ascii_case("memcached") {
        let tls = version_at_least(version, MEMCACHED_TLS_SINCE);
        (tls.then(|| transit.unwrap_or(false)), None)
    } else {
        (
            Some(transit.unwrap_or(false)),
            Some(at_rest.unwrap_or(false)),
        )
    }
}

fn version_at_least(version: &str, min: (u32, u32, u32)) -> bool {
    let mut parts = version
        .split('.')
        .map(|p| p.trim().parse::<u32>().unwrap_or(0));
    let v = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    v >= min
}

/// When an instance stopped, from its `StateTransitionReason`
/// ("User initiated (2026-11-02 10:00:00 GMT)"); `None` when there is no such timestamp. The
/// field is free text in the API ("might be an empty string",
/// <https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_Instance.html>), so the parser
/// takes a final parenthesised "YYYY-MM-DD HH:MM:SS" in GMT or UTC (EC2's examples and moto
/// write both) and nothing else.
pub fn stopped_since(reason: &str) -> Option<DateTime<Utc>> {
    let open = reason.rfind('(')?;
    let inner = reason[open + 1..].strip_suffix(')')?.trim();
    let stamp = inner
        .strip_suffix("GMT")
        .or_else(|| inner.strip_suffix("UTC"))?
        .trim();
    NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d %H:%M:%S")
        .ok()
        .map(|t| t.and_utc())
}

/// An ingress rule as "<protocol> <from>-<to>", or "all" for every protocol (`-1`).
fn rule_label(p: &aws_sdk_ec2::types::IpPermission) -> String {
    let proto = p.ip_protocol().unwrap_or("-1");
    if proto == "-1" || proto.eq_ignore_ascii_case("all") {
        return "all".to_string();
    }
    match (p.from_port(), p.to_port()) {
        (Some(f), Some(t)) => format!("{proto} {f}-{t}"),
        _ => proto.to_string(),
    }
}

fn open_to_world(p: &aws_sdk_ec2::types::IpPermission) -> bool {
    p.ip_ranges()
        .iter()
        .any(|r| r.cidr_ip() == Some("0.0.0.0/0"))
        || p.ipv6_ranges()
            .iter()
            .any(|r| r.cidr_ipv6() == Some("::/0"))
}

fn time(t: Option<&aws_smithy_types::DateTime>) -> Option<DateTime<Utc>> {
    t.and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
}

fn smithy_time(t: DateTime<Utc>) -> aws_smithy_types::DateTime {
    aws_smithy_types::DateTime::from_secs(t.timestamp())
}

fn rds_tags(list: &[aws_sdk_rds::types::Tag]) -> Tags {
    list.iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
        .collect()
}

fn ec2_tags(list: &[aws_sdk_ec2::types::Tag]) -> Tags {
    list.iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
        .collect()
}

fn tagging_tags(list: &[aws_sdk_resourcegroupstagging::types::Tag]) -> Tags {
    list.iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect()
}

fn next(marker: Option<&str>) -> Option<String> {
    marker.filter(|m| !m.is_empty()).map(String::from)
}

fn db_facts(i: &aws_sdk_rds::types::DbInstance) -> DbFacts {
    DbFacts {
        id: i.db_instance_identifier().unwrap_or("").to_string(),
        arn: i.db_instance_arn().unwrap_or("").to_string(),
        engine: i.engine().unwrap_or("").to_string(),
        engine_version: i.engine_version().unwrap_or("").to_string(),
        status: i.db_instance_status().unwrap_or("").to_string(),
        storage_encrypted: i.storage_encrypted().unwrap_or(false),
        publicly_accessible: i.publicly_accessible().unwrap_or(false),
        deletion_protection: i.deletion_protection().unwrap_or(false),
        multi_az: i.multi_az().unwrap_or(false),
        backup_retention_days: i.backup_retention_period().unwrap_or(0),
        auto_minor_version_upgrade: i.auto_minor_version_upgrade().unwrap_or(false),
        performance_insights: i.performance_insights_enabled().unwrap_or(false),
        monitoring_interval_seconds: i.monitoring_interval().unwrap_or(0),
        parameter_groups: i
            .db_parameter_groups()
            .iter()
            .filter_map(|g| g.db_parameter_group_name().map(String::from))
            .collect(),
        cluster: i.db_cluster_identifier().map(String::from),
        replica_of: i
            .read_replica_source_db_instance_identifier()
            .map(String::from),
        tags: rds_tags(i.tag_list()),
    }
}

#[async_trait]
impl Posture for SdkPosture {
    async fn db_instances(&self) -> Result<Vec<DbFacts>> {
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = self
                .rds
                .describe_db_instances()
                .set_marker(marker.take())
                .send()
                .await
                .map_err(|e| dependency("rds", e))?;
            out.extend(page.db_instances().iter().map(db_facts));
            marker = next(page.marker());
            if marker.is_none() {
                return Ok(out);
            }
        }
    }

    async fn db_parameter(&self, group: &str, name: &str) -> Result<Option<String>> {
        let mut marker: Option<String> = None;
        loop {
            let page = self
                .rds
                .describe_db_parameters()
                .db_parameter_group_name(group)
                .filters(
                    aws_sdk_rds::types::Filter::builder()
                        .name("parameter-name")
                        .values(name)
                        .build(),
                )
                .set_marker(marker.take())
                .send()
                .await
                .map_err(|e| dependency("rds", e))?;
            // The filter is the service's; matching the name again keeps a lenient one honest.
            if let Some(p) = page
                .parameters()
                .iter()
                .find(|p| p.parameter_name() == Some(name))
            {
                return Ok(p.parameter_value().map(String::from));
            }
            marker = next(page.marker());
            if marker.is_none() {
                return Ok(None);
            }
        }
    }

    async fn db_snapshots(&self) -> Result<Vec<DbSnapshotFacts>> {
        let mut snaps = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = self
                .rds
                .describe_db_snapshots()
                .snapshot_type("manual")
                .set_marker(marker.take())
                .send()
                .await
                .map_err(|e| dependency("rds", e))?;
            snaps.extend(page.db_snapshots().iter().map(|s| DbSnapshotFacts {
                id: s.db_snapshot_identifier().unwrap_or("").to_string(),
                arn: s.db_snapshot_arn().unwrap_or("").to_string(),
                instance: s.db_instance_identifier().unwrap_or("").to_string(),
                kind: s.snapshot_type().unwrap_or("manual").to_string(),
                created: time(s.original_snapshot_create_time()).or(time(s.snapshot_create_time())),
                allocated_gb: s.allocated_storage().unwrap_or(0),
                public: false,
                tags: rds_tags(s.tag_list()),
            }));
            marker = next(page.marker());
            if marker.is_none() {
                break;
            }
        }
        for s in &mut snaps {
            let attrs = self
                .rds
                .describe_db_snapshot_attributes()
                .db_snapshot_identifier(&s.id)
                .send()
                .await
                .map_err(|e| dependency("rds", e))?;
            s.public = attrs
                .db_snapshot_attributes_result()
                .map(|r| {
                    r.db_snapshot_attributes().iter().any(|a| {
                        a.attribute_name() == Some("restore")
                            && a.attribute_values().iter().any(|v| v == "all")
                    })
                })
                .unwrap_or(false);
        }
        Ok(snaps)
    }

    async fn replicated_backups(&self, region: &str) -> Result<Vec<String>> {
        let client = self.rds_in(region);
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = client
                .describe_db_instance_automated_backups()
                .set_marker(marker.take())
                .send()
                .await
                .map_err(|e| dependency("rds", e))?;
            // "Replicated" as backup-guard reads it (replicating or starting, never retained):
            // one reading of the answer for both (ports::rds_backup::replication_of).
            out.extend(
                page.db_instance_automated_backups()
                    .iter()
                    .map(super::rds_backup::replicated_backup_of)
                    .filter(|b| b.replicates() && !b.source_arn.is_empty())
                    .map(|b| b.source_arn),
            );
            marker = next(page.marker());
            if marker.is_none() {
                out.sort();
                out.dedup();
                return Ok(out);
            }
        }
    }

    async fn caches(&self) -> Result<Vec<CacheFacts>> {
        // Clusters first: a replication group's engine version and security groups are its
        // member clusters'.
        let mut clusters = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = self
                .elasticache
                .describe_cache_clusters()
                .show_cache_node_info(true)
                .set_marker(marker.take())
                .send()
                .await
                .map_err(|e| dependency("elasticache", e))?;
            clusters.extend(page.cache_clusters().iter().cloned());
            marker = next(page.marker());
            if marker.is_none() {
                break;
            }
        }
        let mut groups = Vec::new();
        loop {
            let page = self
                .elasticache
                .describe_replication_groups()
                .set_marker(marker.take())
                .send()
                .await
                .map_err(|e| dependency("elasticache", e))?;
            groups.extend(page.replication_groups().iter().cloned());
            marker = next(page.marker());
            if marker.is_none() {
                break;
            }
        }
        let sgs_of = |c: &aws_sdk_elasticache::types::CacheCluster| -> Vec<String> {
            c.security_groups()
                .iter()
                .filter_map(|s| s.security_group_id().map(String::from))
                .collect()
        };
        let mut out = Vec::new();
        for g in &groups {
            let id = g.replication_group_id().unwrap_or("").to_string();
            let members: Vec<_> = clusters
                .iter()
                .filter(|c| c.replication_group_id() == Some(id.as_str()))
                .collect();
            let engine = g
                .engine()
                .or_else(|| members.first().and_then(|c| c.engine()))
                .unwrap_or("")
                .to_string();
            let version = members
                .first()
                .and_then(|c| c.engine_version())
                .unwrap_or("")
                .to_string();
            let mut sgs: Vec<String> = members.iter().flat_map(|c| sgs_of(c)).collect();
            sgs.sort();
            sgs.dedup();
            let (transit, at_rest) = cache_encryption(
                &engine,
                &version,
                g.transit_encryption_enabled(),
                g.at_rest_encryption_enabled(),
            );
            out.push(CacheFacts {
                id,
                arn: g.arn().unwrap_or("").to_string(),
                engine,
                engine_version: version,
                transit_encryption: transit,
                at_rest_encryption: at_rest,
                security_groups: sgs,
                tags: Tags::new(),
            });
        }
        for c in clusters
            .iter()
            .filter(|c| c.replication_group_id().is_none())
        {
            let engine = c.engine().unwrap_or("").to_string();
            let version = c.engine_version().unwrap_or("").to_string();
            let (transit, at_rest) = cache_encryption(
                &engine,
                &version,
                c.transit_encryption_enabled(),
                c.at_rest_encryption_enabled(),
            );
            out.push(CacheFacts {
                id: c.cache_cluster_id().unwrap_or("").to_string(),
                arn: c.arn().unwrap_or("").to_string(),
                engine,
                engine_version: version,
                transit_encryption: transit,
                at_rest_encryption: at_rest,
                security_groups: sgs_of(c),
                tags: Tags::new(),
            });
        }
        let arns: Vec<String> = out
            .iter()
            .filter(|c| !c.arn.is_empty())
            .map(|c| c.arn.clone())
            .collect();
        let mut tags = self.tags_of_arns(&arns).await?;
        for c in &mut out {
            c.tags = tags.remove(&c.arn).unwrap_or_default();
        }
        Ok(out)
    }

    async fn security_groups(&self, ids: &[String]) -> Result<Vec<SecurityGroupFacts>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .ec2
                .describe_security_groups()
                .set_group_ids(Some(ids.to_vec()))
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| dependency("ec2", e))?;
            out.extend(page.security_groups().iter().map(|g| {
                SecurityGroupFacts {
                    id: g.group_id().unwrap_or("").to_string(),
                    name: g.group_name().unwrap_or("").to_string(),
                    open_to_world: g
                        .ip_permissions()
                        .iter()
                        .filter(|p| open_to_world(p))
                        .map(rule_label)
                        .collect(),
                }
            }));
            token = next(page.next_token());
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    async fn volumes(&self) -> Result<Vec<VolumeFacts>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .ec2
                .describe_volumes()
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| dependency("ec2", e))?;
            out.extend(page.volumes().iter().map(|v| {
                VolumeFacts {
                    id: v.volume_id().unwrap_or("").to_string(),
                    state: v.state().map(|s| s.as_str()).unwrap_or("").to_string(),
                    size_gb: v.size().unwrap_or(0),
                    volume_type: v
                        .volume_type()
                        .map(|t| t.as_str())
                        .unwrap_or("")
                        .to_string(),
                    created: time(v.create_time()),
                    tags: ec2_tags(v.tags()),
                }
            }));
            token = next(page.next_token());
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    async fn addresses(&self) -> Result<Vec<AddressFacts>> {
        // DescribeAddresses is not paginated: one call returns every address.
        let page = self
            .ec2
            .describe_addresses()
            .send()
            .await
            .map_err(|e| dependency("ec2", e))?;
        Ok(page
            .addresses()
            .iter()
            .map(|a| AddressFacts {
                allocation_id: a.allocation_id().unwrap_or("").to_string(),
                public_ip: a.public_ip().unwrap_or("").to_string(),
                associated: [
                    a.association_id(),
                    a.instance_id(),
                    a.network_interface_id(),
                ]
                .iter()
                .any(|v| v.is_some_and(|v| !v.is_empty())),
                tags: ec2_tags(a.tags()),
            })
            .collect())
    }

    async fn instances(&self) -> Result<Vec<InstanceFacts>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .ec2
                .describe_instances()
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| dependency("ec2", e))?;
            for r in page.reservations() {
                out.extend(r.instances().iter().map(|i| {
                    let state = i
                        .state()
                        .and_then(|s| s.name())
                        .map(|n| n.as_str())
                        .unwrap_or("")
                        .to_string();
                    InstanceFacts {
                        id: i.instance_id().unwrap_or("").to_string(),
                        stopped_since: if state == "stopped" {
                            i.state_transition_reason().and_then(stopped_since)
                        } else {
                            None
                        },
                        state,
                        instance_type: i
                            .instance_type()
                            .map(|t| t.as_str())
                            .unwrap_or("")
                            .to_string(),
                        volume_ids: i
                            .block_device_mappings()
                            .iter()
                            .filter_map(|b| b.ebs().and_then(|e| e.volume_id()).map(String::from))
                            .collect(),
                        tags: ec2_tags(i.tags()),
                    }
                }));
            }
            token = next(page.next_token());
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    async fn load_balancers(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<LoadBalancerFacts>> {
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = self
                .elbv2
                .describe_load_balancers()
                .set_marker(marker.take())
                .send()
                .await
                .map_err(|e| dependency("elbv2", e))?;
            out.extend(page.load_balancers().iter().map(|l| LoadBalancerFacts {
                arn: l.load_balancer_arn().unwrap_or("").to_string(),
                name: l.load_balancer_name().unwrap_or("").to_string(),
                kind: l.r#type().map(|t| t.as_str()).unwrap_or("").to_string(),
                created: time(l.created_time()),
                traffic: None,
                tags: Tags::new(),
            }));
            marker = next(page.next_marker());
            if marker.is_none() {
                break;
            }
        }
        let arns: Vec<String> = out
            .iter()
            .filter(|l| !l.arn.is_empty())
            .map(|l| l.arn.clone())
            .collect();
        let mut tags = self.tags_of_arns(&arns).await?;
        for lb in &mut out {
            lb.tags = tags.remove(&lb.arn).unwrap_or_default();
            let (Some((ns, metric)), Some(dim)) = (traffic_metric(&lb.kind), lb_dimension(&lb.arn))
            else {
                continue;
            };
            lb.traffic = self.traffic(ns, metric, dim, since, until).await?;
        }
        Ok(out)
    }

    async fn tagged_resources(&self, types: &[String]) -> Result<Vec<TaggedResource>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .tagging
                .get_resources()
                .set_resource_type_filters(Some(types.to_vec()))
                .set_pagination_token(token.take())
                .send()
                .await
                .map_err(|e| dependency("tagging", e))?;
            out.extend(page.resource_tag_mapping_list().iter().filter_map(|m| {
                Some(TaggedResource {
                    arn: m.resource_arn()?.to_string(),
                    tags: tagging_tags(m.tags()),
                })
            }));
            token = next(page.pagination_token());
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    async fn enable_deletion_protection(&self, db_instance: &str) -> Result<()> {
        self.rds
            .modify_db_instance()
            .db_instance_identifier(db_instance)
            .deletion_protection(true)
            .apply_immediately(true)
            .send()
            .await
            .map_err(|e| dependency("rds", e))?;
        Ok(())
    }

    async fn add_rds_tags(&self, arn: &str, tags: &Tags) -> Result<()> {
        self.rds
            .add_tags_to_resource()
            .resource_name(arn)
            .set_tags(Some(
                tags.iter()
                    .map(|(k, v)| aws_sdk_rds::types::Tag::builder().key(k).value(v).build())
                    .collect(),
            ))
            .send()
            .await
            .map_err(|e| dependency("rds", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// posture-check's `rds.dr_replication` reads the DR region's answer as backup-guard does
    /// (the shared fixture): the replicating source counts, the retained one does not.
    #[tokio::test]
    async fn replicated_means_what_backup_guard_means() {
        use crate::adapters::rds_backup::tests::{canned_conf, DR_ANSWER};
        let conf = canned_conf(DR_ANSWER);
        let p = SdkPosture {
            rds: aws_sdk_rds::Client::new(&conf),
            elasticache: aws_sdk_elasticache::Client::new(&conf),
            ec2: aws_sdk_ec2::Client::new(&conf),
            elbv2: aws_sdk_elasticloadbalancingv2::Client::new(&conf),
            cloudwatch: aws_sdk_cloudwatch::Client::new(&conf),
            tagging: aws_sdk_resourcegroupstagging::Client::new(&conf),
            conf,
        };
        let got = p.replicated_backups("us-west-2").await.unwrap();
        assert!(
            got.contains(&"arn:aws:rds:us-east-1:123456789012:db:nbaops-prod-db".to_string()),
            "{got:?}"
        );
        assert!(
            !got.contains(&"arn:aws:rds:us-east-1:123456789012:db:old-db".to_string()),
            "a retained (stopped) replication is not replicated: {got:?}"
        );
    }

    #[test]
    fn stopped_since_reads_the_user_initiated_timestamp() {
        assert_eq!(
            stopped_since("User initiated (2026-11-02 10:00:00 GMT)"),
            Utc.with_ymd_and_hms(2026, 11, 2, 10, 0, 0).single()
        );
        assert_eq!(
            stopped_since("User initiated (2019-04-08 14:29:07 UTC)"),
            Utc.with_ymd_and_hms(2019, 4, 8, 14, 29, 7).single()
        );
        assert_eq!(stopped_since(""), None);
        assert_eq!(
            stopped_since("User initiated (2026-11-02 10:00:00 CET)"),
            None
        );
        assert_eq!(stopped_since("User initiated"), None);
        assert_eq!(stopped_since("User initiated (yesterday GMT)"), None);
        assert_eq!(
            stopped_since("User initiated (2026-11-02 10:00:00 GMT"),
            None
        );
        assert_eq!(
            stopped_since("User initiated (2026-13-02 10:00:00 GMT)"),
            None
        );
    }

    /// <https://docs.aws.amazon.com/AmazonElastiCache/latest/dg/in-transit-encryption.html>,
    /// <https://docs.aws.amazon.com/AmazonElastiCache/latest/mem-ug/supported-engine-versions-mc.html>:
    /// Memcached TLS from 1.6.12;
    /// <https://docs.aws.amazon.com/AmazonElastiCache/latest/dg/at-rest-encryption.html>:
    /// at-rest encryption is for Valkey and Redis OSS only.
    #[test]
    fn memcached_encryption_follows_the_elasticache_docs() {
        assert_eq!(MEMCACHED_TLS_SINCE, (1, 6, 12));
        assert_eq!(
            cache_encryption("memcached", "1.6.6", Some(false), None),
            (None, None)
        );
        assert_eq!(
            cache_encryption("memcached", "1.6.12", Some(true), Some(true)),
            (Some(true), None)
        );
        assert_eq!(
            cache_encryption("memcached", "1.6.22", None, None),
            (Some(false), None)
        );
        assert_eq!(
            cache_encryption("memcached", "1.5.16", Some(true), None),
            (None, None)
        );
        assert_eq!(
            cache_encryption("redis", "7.1", Some(true), None),
            (Some(true), Some(false))
        );
    }

    /// <https://docs.aws.amazon.com/resourcegroupstagging/latest/APIReference/API_GetResources.html>:
    /// ResourceARNList holds at most 100 ARNs.
    #[test]
    fn tagging_calls_carry_at_most_100_arns() {
        assert_eq!(TAGGING_ARNS_PER_CALL, 100);
    }

    /// <https://docs.aws.amazon.com/elasticloadbalancing/latest/application/load-balancer-cloudwatch-metrics.html>,
    /// <https://docs.aws.amazon.com/elasticloadbalancing/latest/network/load-balancer-cloudwatch-metrics.html>:
    /// RequestCount in AWS/ApplicationELB, NewFlowCount in AWS/NetworkELB, dimension
    /// LoadBalancer = the ARN's final portion after "loadbalancer/".
    #[test]
    fn load_balancer_traffic_metrics_follow_the_elb_docs() {
        assert_eq!(
            traffic_metric("application"),
            Some(("AWS/ApplicationELB", "RequestCount"))
        );
        assert_eq!(
            traffic_metric("network"),
            Some(("AWS/NetworkELB", "NewFlowCount"))
        );
        assert_eq!(traffic_metric("gateway"), None);
        assert_eq!(
            lb_dimension(
                "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/my-lb/50dc6c495c0c9188"
            ),
            Some("app/my-lb/50dc6c495c0c9188")
        );
        assert_eq!(
            lb_dimension(
                "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/net/my-nlb/73e2d6bc24d8a067"
            ),
            Some("net/my-nlb/73e2d6bc24d8a067")
        );
        assert_eq!(lb_dimension("arn:aws:ec2:us-east-1:1:volume/vol-1"), None);
    }

    #[test]
    fn ingress_rules_are_labelled_by_protocol_and_ports() {
        use aws_sdk_ec2::types::{IpPermission, IpRange, Ipv6Range};
        let tcp = IpPermission::builder()
            .ip_protocol("tcp")
            .from_port(11211)
            .to_port(11211)
            .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build())
            .build();
        assert!(open_to_world(&tcp));
        assert_eq!(rule_label(&tcp), "tcp 11211-11211");
        let all = IpPermission::builder()
            .ip_protocol("-1")
            .ipv6_ranges(Ipv6Range::builder().cidr_ipv6("::/0").build())
            .build();
        assert!(open_to_world(&all));
        assert_eq!(rule_label(&all), "all");
        let private = IpPermission::builder()
            .ip_protocol("tcp")
            .from_port(5432)
            .to_port(5432)
            .ip_ranges(IpRange::builder().cidr_ip("10.0.0.0/16").build())
            .build();
        assert!(!open_to_world(&private));
    }
}

//! The NBA Fantasy platform, recreated in the emulator: what the functions act on.

use std::collections::BTreeMap;

use aws_sdk_autoscaling::types::Tag as AsgTag;
use aws_sdk_rds::types::Tag as RdsTag;
use serde_json::Value;

use crate::HarnessError;

pub const ENV: &str = "dev";
pub const WEB: &str = "nbaops-dev-web";
pub const WORKER: &str = "nbaops-dev-worker";
pub const DB: &str = "nbaops-dev-db";
pub const CACHE: &str = "nbaops-dev-cache";
pub const LEDGER: &str = "nbaops-dev-ledger";
const AMI: &str = "ami-12c6146b";

fn err(what: &str, e: impl std::fmt::Display) -> HarnessError {
    HarnessError::Setup(format!("{what}: {e}"))
}

pub(crate) fn dbg_err<E: std::error::Error + 'static>(what: &str, e: E) -> HarnessError {
    err(
        what,
        aws_smithy_types::error::display::DisplayErrorContext(&e),
    )
}

/// SDK clients pointed at the emulator.
#[derive(Clone)]
pub struct Clients {
    pub asg: aws_sdk_autoscaling::Client,
    pub rds: aws_sdk_rds::Client,
    pub cache: aws_sdk_elasticache::Client,
    pub sns: aws_sdk_sns::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub ssm: aws_sdk_ssm::Client,
    pub ddb: aws_sdk_dynamodb::Client,
    pub cw: aws_sdk_cloudwatch::Client,
    pub scheduler: aws_sdk_scheduler::Client,
    pub sts: aws_sdk_sts::Client,
    pub ec2: aws_sdk_ec2::Client,
    pub elbv2: aws_sdk_elasticloadbalancingv2::Client,
    pub tagging: aws_sdk_resourcegroupstagging::Client,
    /// The SDK configuration these clients were built from (an adapter's other-region clients
    /// derive from it).
    pub conf: aws_config::SdkConfig,
}

impl Clients {
    /// Clients of `endpoint`; CloudWatch's at `cloudwatch` (the CBOR bridge in front of moto).
    pub async fn new(endpoint: &str, cloudwatch: &str) -> Clients {
        Clients::in_region(endpoint, cloudwatch, "us-east-1").await
    }

    /// [`Clients::new`] in another region of the harness's own account.
    pub async fn in_region(endpoint: &str, cloudwatch: &str, region: &str) -> Clients {
        let conf = Clients::conf(endpoint, region).await;
        Clients::of(&conf, cloudwatch)
    }

    async fn conf(endpoint: &str, region: &str) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(endpoint)
            .region(aws_config::Region::new(region.to_string()))
            .credentials_provider(aws_sdk_sns::config::Credentials::new(
                "testing",
                "testing",
                None,
                None,
                "nbaops-tests",
            ))
            .load()
            .await
    }

    /// Clients acting in another account, as a fleet's member (issue #20): `sts:AssumeRole` of
    /// `role_arn` with `external_id`, made by the harness's own credentials. moto keeps state per
    /// account and region and the assumed credentials select the role's account.
    pub async fn assumed(
        endpoint: &str,
        cloudwatch: &str,
        region: &str,
        role_arn: &str,
        external_id: &str,
    ) -> Clients {
        let base = Clients::conf(endpoint, region).await;
        let provider = aws_config::sts::AssumeRoleProvider::builder(role_arn)
            .session_name("nbaops-tests")
            .external_id(external_id)
            .configure(&base)
            .build()
            .await;
        let conf = base
            .into_builder()
            .credentials_provider(aws_sdk_sts::config::SharedCredentialsProvider::new(
                provider,
            ))
            .build();
        Clients::of(&conf, cloudwatch)
    }

    /// The account these clients act in (`sts:GetCallerIdentity`).
    pub async fn account(&self) -> Result<String, HarnessError> {
        self.sts
            .get_caller_identity()
            .send()
            .await
            .map(|o| o.account().unwrap_or_default().to_string())
            .map_err(|e| dbg_err("get_caller_identity", e))
    }

    fn of(conf: &aws_config::SdkConfig, cloudwatch: &str) -> Clients {
        Clients {
            sts: aws_sdk_sts::Client::new(conf),
            asg: aws_sdk_autoscaling::Client::new(conf),
            rds: aws_sdk_rds::Client::new(conf),
            cache: aws_sdk_elasticache::Client::new(conf),
            sns: aws_sdk_sns::Client::new(conf),
            sqs: aws_sdk_sqs::Client::new(conf),
            ssm: aws_sdk_ssm::Client::new(conf),
            ddb: aws_sdk_dynamodb::Client::new(conf),
            cw: aws_sdk_cloudwatch::Client::from_conf(
                aws_sdk_cloudwatch::config::Builder::from(conf)
                    .endpoint_url(cloudwatch)
                    .build(),
            ),
            scheduler: aws_sdk_scheduler::Client::new(conf),
            ec2: aws_sdk_ec2::Client::new(conf),
            elbv2: aws_sdk_elasticloadbalancingv2::Client::new(conf),
            tagging: aws_sdk_resourcegroupstagging::Client::new(conf),
            conf: conf.clone(),
        }
    }
}

/// What was created, for the functions' environment and the report.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Platform {
    pub alerts_topic: String,
    pub actions_topic: String,
    pub alerts_queue: String,
    pub actions_queue: String,
}

async fn topic_with_queue(c: &Clients, name: &str) -> Result<(String, String), HarnessError> {
    let topic = c
        .sns
        .create_topic()
        .name(name)
        .send()
        .await
        .map_err(|e| dbg_err("create_topic", e))?;
    let topic = topic.topic_arn().unwrap_or_default().to_string();
    let q = c
        .sqs
        .create_queue()
        .queue_name(format!("{name}-tap"))
        .send()
        .await
        .map_err(|e| dbg_err("create_queue", e))?;
    let url = q.queue_url().unwrap_or_default().to_string();
    let attrs = c
        .sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| dbg_err("get_queue_attributes", e))?;
    let arn = attrs
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
        .cloned()
        .unwrap_or_default();
    c.sns
        .subscribe()
        .topic_arn(&topic)
        .protocol("sqs")
        .endpoint(arn)
        .attributes("RawMessageDelivery", "true")
        .send()
        .await
        .map_err(|e| dbg_err("subscribe", e))?;
    Ok((topic, url))
}

async fn group(
    c: &Clients,
    name: &str,
    min: i32,
    max: i32,
    desired: i32,
    tags: &[(&str, &str)],
) -> Result<(), HarnessError> {
    group_in(c, "us-east-1", name, min, max, desired, tags).await
}

/// A group in `region` (the clients' region; its zones `a` and `b`), as [`create`] makes them.
pub async fn group_in(
    c: &Clients,
    region: &str,
    name: &str,
    min: i32,
    max: i32,
    desired: i32,
    tags: &[(&str, &str)],
) -> Result<(), HarnessError> {
    let lc = format!("{name}-lc");
    c.asg
        .create_launch_configuration()
        .launch_configuration_name(&lc)
        .image_id(AMI)
        .instance_type("t3.micro")
        .send()
        .await
        .map_err(|e| dbg_err("create_launch_configuration", e))?;
    let mut req = c
        .asg
        .create_auto_scaling_group()
        .auto_scaling_group_name(name)
        .launch_configuration_name(&lc)
        .min_size(min)
        .max_size(max)
        .desired_capacity(desired)
        .availability_zones(format!("{region}a"))
        .availability_zones(format!("{region}b"));
    for (k, v) in tags {
        req = req.tags(
            AsgTag::builder()
                .key(*k)
                .value(*v)
                .resource_id(name)
                .resource_type("auto-scaling-group")
                .propagate_at_launch(true)
                .build(),
        );
    }
    req.send()
        .await
        .map_err(|e| dbg_err("create_auto_scaling_group", e))?;
    Ok(())
}

/// Creates the platform: Web/API group 2..4 x t3.micro, worker group (1 per AZ, up to 4),
/// RDS PostgreSQL db.t3.micro Multi-AZ, a Memcached cluster, the alerts/actions topics (each
/// with an SQS tap so tests can read what was published) and the ledger table.
pub async fn create(c: &Clients) -> Result<Platform, HarnessError> {
    let (alerts_topic, alerts_queue) = topic_with_queue(c, "nbaops-dev-alerts").await?;
    let (actions_topic, actions_queue) = topic_with_queue(c, "nbaops-dev-actions").await?;
    nbaops_shared::adapters::create_ledger_table(&c.ddb, LEDGER)
        .await
        .map_err(|e| err("ledger table", e))?;
    group(c, WEB, 2, 4, 2, &[("env", ENV), ("tier", "web")]).await?;
    group(c, WORKER, 2, 4, 2, &[("env", ENV), ("tier", "worker")]).await?;
    c.rds
        .create_db_instance()
        .db_instance_identifier(DB)
        .db_instance_class("db.t3.micro")
        .engine("postgres")
        .engine_version("15.7")
        .allocated_storage(20)
        .master_username("nbaops")
        .master_user_password("not-a-real-password")
        .multi_az(true)
        .backup_retention_period(7)
        .tags(RdsTag::builder().key("env").value(ENV).build())
        .send()
        .await
        .map_err(|e| dbg_err("create_db_instance", e))?;
    c.cache
        .create_cache_cluster()
        .cache_cluster_id(CACHE)
        .engine("memcached")
        .cache_node_type("cache.t3.micro")
        .num_cache_nodes(1)
        .tags(
            aws_sdk_elasticache::types::Tag::builder()
                .key("env")
                .value(ENV)
                .build(),
        )
        .send()
        .await
        .map_err(|e| dbg_err("create_cache_cluster", e))?;
    Ok(Platform {
        alerts_topic,
        actions_topic,
        alerts_queue,
        actions_queue,
    })
}

/// Writes SSM parameters under /nbaops/dev/ (the functions read their config there).
pub async fn put_params(c: &Clients, params: &[(&str, &str)]) -> Result<(), HarnessError> {
    for (k, v) in params {
        c.ssm
            .put_parameter()
            .name(format!("/nbaops/{ENV}/{k}"))
            .value(*v)
            .r#type(aws_sdk_ssm::types::ParameterType::String)
            .overwrite(true)
            .send()
            .await
            .map_err(|e| dbg_err("put_parameter", e))?;
    }
    Ok(())
}

pub async fn delete_param(c: &Clients, key: &str) -> Result<(), HarnessError> {
    let _ = c
        .ssm
        .delete_parameter()
        .name(format!("/nbaops/{ENV}/{key}"))
        .send()
        .await;
    Ok(())
}

/// The configuration the demo and the tests run scale-on-alarm with.
pub fn scale_params() -> Vec<(&'static str, &'static str)> {
    vec![
        ("scale/groups", "nbaops-dev-web,nbaops-dev-worker"),
        ("scale/rds/instances", DB),
        ("scale/cache/clusters", CACHE),
    ]
}

/// Environment for a function process: the emulator, the env name, the topics and table.
pub fn function_env(
    endpoint_env: &[(String, String)],
    p: &Platform,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = endpoint_env.to_vec();
    env.push(("NBAOPS_ENV".into(), ENV.into()));
    env.push(("NBAOPS_ALERTS_TOPIC_ARN".into(), p.alerts_topic.clone()));
    env.push(("NBAOPS_ACTIONS_TOPIC_ARN".into(), p.actions_topic.clone()));
    env.push(("NBAOPS_LEDGER_TABLE".into(), LEDGER.into()));
    // The demo flips the kill switch and expects the next invocation to see it.
    env.push(("NBAOPS_GUARD__SWITCH_TTL_SECONDS".into(), "0".into()));
    for (k, v) in extra {
        env.push((k.to_string(), v.to_string()));
    }
    env
}

#[derive(Debug, Clone, PartialEq)]
pub struct GroupView {
    pub desired: i32,
    pub min: i32,
    pub max: i32,
}

pub async fn group_view(c: &Clients, name: &str) -> Result<GroupView, HarnessError> {
    let out = c
        .asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(name)
        .send()
        .await
        .map_err(|e| dbg_err("describe_auto_scaling_groups", e))?;
    let g = out
        .auto_scaling_groups()
        .first()
        .ok_or_else(|| err("group", format!("{name} missing")))?;
    Ok(GroupView {
        desired: g.desired_capacity().unwrap_or(-1),
        min: g.min_size().unwrap_or(-1),
        max: g.max_size().unwrap_or(-1),
    })
}

pub async fn tag_group(
    c: &Clients,
    name: &str,
    key: &str,
    value: &str,
) -> Result<(), HarnessError> {
    c.asg
        .create_or_update_tags()
        .tags(
            AsgTag::builder()
                .key(key)
                .value(value)
                .resource_id(name)
                .resource_type("auto-scaling-group")
                .propagate_at_launch(false)
                .build(),
        )
        .send()
        .await
        .map_err(|e| dbg_err("create_or_update_tags", e))?;
    Ok(())
}

pub async fn untag_group(c: &Clients, name: &str, key: &str) -> Result<(), HarnessError> {
    c.asg
        .delete_tags()
        .tags(
            AsgTag::builder()
                .key(key)
                .resource_id(name)
                .resource_type("auto-scaling-group")
                .build(),
        )
        .send()
        .await
        .map_err(|e| dbg_err("delete_tags", e))?;
    Ok(())
}

pub async fn db_class(c: &Clients, id: &str) -> Result<(String, Option<String>), HarnessError> {
    let out = c
        .rds
        .describe_db_instances()
        .db_instance_identifier(id)
        .send()
        .await
        .map_err(|e| dbg_err("describe_db_instances", e))?;
    let i = out
        .db_instances()
        .first()
        .ok_or_else(|| err("db", format!("{id} missing")))?;
    Ok((
        i.db_instance_class().unwrap_or_default().to_string(),
        i.pending_modified_values()
            .and_then(|p| p.db_instance_class())
            .map(String::from),
    ))
}

pub async fn cache_nodes(c: &Clients, id: &str) -> Result<i32, HarnessError> {
    let out = c
        .cache
        .describe_cache_clusters()
        .cache_cluster_id(id)
        .send()
        .await
        .map_err(|e| dbg_err("describe_cache_clusters", e))?;
    Ok(out
        .cache_clusters()
        .first()
        .and_then(|c| c.num_cache_nodes())
        .unwrap_or(-1))
}

/// Drains an SQS tap: every message published to its topic since the last drain.
pub async fn drain(c: &Clients, queue_url: &str) -> Result<Vec<Value>, HarnessError> {
    let mut out = Vec::new();
    loop {
        let r = c
            .sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .send()
            .await
            .map_err(|e| dbg_err("receive_message", e))?;
        let msgs = r.messages();
        if msgs.is_empty() {
            return Ok(out);
        }
        for m in msgs {
            let body = m.body().unwrap_or_default();
            out.push(serde_json::from_str(body).unwrap_or(Value::String(body.to_string())));
            if let Some(h) = m.receipt_handle() {
                let _ = c
                    .sqs
                    .delete_message()
                    .queue_url(queue_url)
                    .receipt_handle(h)
                    .send()
                    .await;
            }
        }
    }
}

/// Counts ledger items by key prefix (audit#, idem#, cooldown#...).
pub async fn ledger_counts(c: &Clients) -> Result<BTreeMap<String, usize>, HarnessError> {
    let mut counts = BTreeMap::new();
    let mut start = None;
    loop {
        let page = c
            .ddb
            .scan()
            .table_name(LEDGER)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| dbg_err("scan", e))?;
        for item in page.items() {
            if let Some(Ok(pk)) = item.get("pk").map(|v| v.as_s()) {
                let kind = pk.split('#').next().unwrap_or("").to_string();
                *counts.entry(kind).or_insert(0) += 1;
            }
        }
        match page.last_evaluated_key() {
            Some(k) if !k.is_empty() => start = Some(k.clone()),
            _ => return Ok(counts),
        }
    }
}

/// The `test` environment's scheduled resources (offhours, its fault and deadline tests).
pub const TEST_WEB: &str = "nbaops-test-web";
pub const TEST_DB: &str = "nbaops-test-db";
/// Office hours, Paris: Wednesday 2 December 2026 19:00 is 18:00 UTC, Thursday 08:00 is 07:00 UTC.
pub const OFFICE: &str = r#"{"office":{"tz":"Europe/Paris","periods":[{"days":["mon","tue","wed","thu","fri"],"start":"08:00","stop":"19:00"}],"holidays":["2026-12-25"]}}"#;

/// A `test` environment: a group 1..4 (desired 2) and an RDS instance, both tagged env=test and
/// nbaops:schedule=office. Test set-up: a failure panics with the SDK's error.
#[allow(clippy::unwrap_used)]
pub async fn create_test_env(stack: &crate::demo::Stack) {
    let c = &stack.clients;
    c.asg
        .create_launch_configuration()
        .launch_configuration_name("nbaops-test-lc")
        .image_id("ami-12c6146b")
        .instance_type("t3.micro")
        .send()
        .await
        .unwrap();
    let tag = |k: &str, v: &str| {
        AsgTag::builder()
            .key(k)
            .value(v)
            .resource_id(TEST_WEB)
            .resource_type("auto-scaling-group")
            .propagate_at_launch(true)
            .build()
    };
    c.asg
        .create_auto_scaling_group()
        .auto_scaling_group_name(TEST_WEB)
        .launch_configuration_name("nbaops-test-lc")
        .min_size(1)
        .max_size(4)
        .desired_capacity(2)
        .availability_zones("us-east-1a")
        .tags(tag("env", "test"))
        .tags(tag("nbaops:schedule", "office"))
        .send()
        .await
        .unwrap();
    c.rds
        .create_db_instance()
        .db_instance_identifier(TEST_DB)
        .db_instance_class("db.t3.micro")
        .engine("postgres")
        .engine_version("15.7")
        .allocated_storage(20)
        .master_username("nbaops")
        .master_user_password("not-a-real-password")
        .tags(RdsTag::builder().key("env").value("test").build())
        .tags(
            RdsTag::builder()
                .key("nbaops:schedule")
                .value("office")
                .build(),
        )
        .send()
        .await
        .unwrap();
}

/// `minutes` datapoints of the group's CPU (AWS/EC2 CPUUtilization by AutoScalingGroupName), one a
/// minute up to now on the test clock, as EC2 would have published them.
pub async fn put_cpu(
    c: &Clients,
    group: &str,
    percent: f64,
    minutes: i64,
) -> Result<(), HarnessError> {
    put_cpu_until(c, group, percent, minutes, crate::clock::now()).await
}

/// [`put_cpu`] ending at `until` (one datapoint a minute in the `minutes` before it).
pub async fn put_cpu_until(
    c: &Clients,
    group: &str,
    percent: f64,
    minutes: i64,
    until: chrono::DateTime<chrono::Utc>,
) -> Result<(), HarnessError> {
    use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
    let data: Vec<MetricDatum> = (1..=minutes)
        .map(|m| {
            let at = until - chrono::Duration::minutes(m);
            MetricDatum::builder()
                .metric_name("CPUUtilization")
                .dimensions(
                    Dimension::builder()
                        .name("AutoScalingGroupName")
                        .value(group)
                        .build(),
                )
                .timestamp(aws_smithy_types::DateTime::from_secs(at.timestamp()))
                .value(percent)
                .unit(StandardUnit::Percent)
                .build()
        })
        .collect();
    c.cw.put_metric_data()
        .namespace("AWS/EC2")
        .set_metric_data(Some(data))
        .send()
        .await
        .map(drop)
        .map_err(|e| HarnessError::Setup(format!("put_metric_data {group}: {e:?}")))
}

/// The group's CPU alarm (`> 70 %` on AWS/EC2 CPUUtilization by AutoScalingGroupName, 5-minute
/// periods), created and put in ALARM as CloudWatch would hold it while the group is busy.
pub async fn cpu_alarm_firing(
    c: &Clients,
    alarm: &str,
    group: &str,
    evaluation_periods: i32,
    reason: &str,
) -> Result<(), HarnessError> {
    use aws_sdk_cloudwatch::types::{ComparisonOperator, Dimension, StateValue, Statistic};
    c.cw.put_metric_alarm()
        .alarm_name(alarm)
        .namespace("AWS/EC2")
        .metric_name("CPUUtilization")
        .dimensions(
            Dimension::builder()
                .name("AutoScalingGroupName")
                .value(group)
                .build(),
        )
        .statistic(Statistic::Average)
        .period(300)
        .evaluation_periods(evaluation_periods)
        .threshold(70.0)
        .comparison_operator(ComparisonOperator::GreaterThanThreshold)
        .send()
        .await
        .map_err(|e| dbg_err(&format!("put_metric_alarm {alarm}"), e))?;
    c.cw.set_alarm_state()
        .alarm_name(alarm)
        .state_value(StateValue::Alarm)
        .state_reason(reason)
        .send()
        .await
        .map(drop)
        .map_err(|e| dbg_err(&format!("set_alarm_state {alarm}"), e))
}

/// One EventBridge Scheduler schedule as the emulator holds it (read back with GetSchedule).
#[derive(Debug, Clone)]
pub struct FollowUp {
    pub name: String,
    pub expression: String,
    /// The instant of an `at(...)` expression (UTC), `None` for any other expression.
    pub at: Option<chrono::DateTime<chrono::Utc>>,
    pub timezone: Option<String>,
    pub after_completion: Option<String>,
    pub target_arn: String,
    pub role_arn: String,
    pub input: Value,
}

/// The schedules of a schedule group, by name.
pub async fn follow_ups(c: &Clients, group: &str) -> Result<Vec<FollowUp>, HarnessError> {
    let listed = c
        .scheduler
        .list_schedules()
        .group_name(group)
        .send()
        .await
        .map_err(|e| dbg_err(&format!("list_schedules {group}"), e))?;
    let mut out = Vec::new();
    for s in listed.schedules() {
        let name = s.name().unwrap_or_default().to_string();
        let got = c
            .scheduler
            .get_schedule()
            .group_name(group)
            .name(&name)
            .send()
            .await
            .map_err(|e| dbg_err(&format!("get_schedule {name}"), e))?;
        let expression = got.schedule_expression().unwrap_or_default().to_string();
        let at = expression
            .strip_prefix("at(")
            .and_then(|x| x.strip_suffix(')'))
            .and_then(|x| chrono::NaiveDateTime::parse_from_str(x, "%Y-%m-%dT%H:%M:%S").ok())
            .map(|t| t.and_utc());
        let target = got
            .target()
            .ok_or_else(|| err(&format!("schedule {name}"), "no target"))?;
        let input = match target.input() {
            Some(i) => serde_json::from_str(i).map_err(|e| err(&format!("input of {name}"), e))?,
            None => Value::Null,
        };
        out.push(FollowUp {
            name,
            expression,
            at,
            timezone: got.schedule_expression_timezone().map(String::from),
            after_completion: got
                .action_after_completion()
                .map(|a| a.as_str().to_string()),
            target_arn: target.arn().to_string(),
            role_arn: target.role_arn().to_string(),
            input,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

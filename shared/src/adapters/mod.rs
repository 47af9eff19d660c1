//! Adapters: the ports implemented on the AWS SDK and on tokio-postgres. This is the only place
//! that imports `aws_sdk_*`; SDK errors become `NbaopsError` here.

mod autoscaling;
mod dynamodb;
mod elasticache;
mod http_post;
mod pg_connector;
pub mod postgres;
pub use pg_connector::{pg_access, TokioPgConnector};
mod rds;
mod rds_backup;
pub use rds_backup::SdkRdsBackups;
mod sns;
mod sqs;
mod ssm;

pub use dynamodb::{create_ledger_table, DynamoLedger, BY_DAY_INDEX};
pub use http_post::HyperHttpPost;
pub use postgres::{PgSession, PgTls, Transport, RDS_CA_BUNDLE};
pub use sqs::{SdkDeadLetter, SdkWorkQueue};

use std::sync::OnceLock;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;

use crate::error::NbaopsError;

/// How every SDK client retries and how long it waits, set once here for every function.
///
/// - Retry: the SDK's **standard** mode, 3 attempts (the initial one and two retries), exponential
///   backoff with full jitter from 1 s: the first retry after 0–1 s, the second after 0–2 s.
///   Throttling errors, HTTP 5xx, timeouts and connection errors are retried; a refused request
///   (validation, access denied) is not. These are the SDK defaults, written out so that a change of
///   default cannot silently change them:
///   <https://docs.aws.amazon.com/sdk-for-rust/latest/dg/retries.html>,
///   <https://docs.aws.amazon.com/sdkref/latest/guide/feature-retry-behavior.html>.
/// - Timeouts: the SDK sets only a connect timeout (3.1 s) and **no** per-attempt or per-operation
///   timeout (<https://docs.aws.amazon.com/sdk-for-rust/latest/dg/timeouts.html>), so one stalled
///   response would hold an invocation until Lambda kills it, with no audit record and no alert.
///   Here an attempt gets [`SDK_ATTEMPT_TIMEOUT`] and the whole call, retries and backoff included,
///   [`SDK_OPERATION_TIMEOUT`], which is below the shortest Lambda timeout of the template
///   (alert-ack, 10 s; checked by `tests/tests/e2e_aws_faults.rs`), so a call that gives up still
///   leaves the invocation time to record the failure and raise its alert.
pub const SDK_MAX_ATTEMPTS: u32 = 3;
pub const SDK_INITIAL_BACKOFF: Duration = Duration::from_secs(1);
pub const SDK_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
pub const SDK_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
pub const SDK_OPERATION_TIMEOUT: Duration = Duration::from_secs(8);

pub fn sdk_retry_config() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(SDK_MAX_ATTEMPTS)
        .with_initial_backoff(SDK_INITIAL_BACKOFF)
}

pub fn sdk_timeout_config() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(SDK_CONNECT_TIMEOUT)
        .operation_attempt_timeout(SDK_ATTEMPT_TIMEOUT)
        .operation_timeout(SDK_OPERATION_TIMEOUT)
        .build()
}

/// SDK clients, built once at init. `AWS_ENDPOINT_URL` (and the per-service variants) are honoured
/// by the SDK itself, so the same binary runs against the emulator.
/// The SDK configuration (region, credentials, endpoint, retries, timeouts) loaded once, and the
/// service clients built from it on first use: a function builds only the clients it calls.
#[derive(Debug)]
pub struct AwsClients {
    conf: aws_config::SdkConfig,
    autoscaling: OnceLock<aws_sdk_autoscaling::Client>,
    rds: OnceLock<aws_sdk_rds::Client>,
    elasticache: OnceLock<aws_sdk_elasticache::Client>,
    sns: OnceLock<aws_sdk_sns::Client>,
    ssm: OnceLock<aws_sdk_ssm::Client>,
    dynamodb: OnceLock<aws_sdk_dynamodb::Client>,
    sqs: OnceLock<aws_sdk_sqs::Client>,
    costexplorer: OnceLock<aws_sdk_costexplorer::Client>,
    cloudwatch: OnceLock<aws_sdk_cloudwatch::Client>,
    scheduler: OnceLock<aws_sdk_scheduler::Client>,
    ec2: OnceLock<aws_sdk_ec2::Client>,
    elbv2: OnceLock<aws_sdk_elasticloadbalancingv2::Client>,
    tagging: OnceLock<aws_sdk_resourcegroupstagging::Client>,
    s3: OnceLock<aws_sdk_s3::Client>,
    /// Set: every client refuses any operation not on its list ([`ReadOnly`]).
    read_only: Option<ReadOnly>,
    /// Clients of a fleet member ([`AwsClients::for_member`]): the hub's configuration, for
    /// the services whose resources live in the hub whatever the record's origin (the ledger,
    /// the topics, the configuration, the queues, the follow-up schedules). `None`: the hub.
    hub_conf: Option<aws_config::SdkConfig>,
}

macro_rules! client {
    ($name:ident, $krate:ident) => {
        client!($name, $krate, conf_ref);
    };
    ($name:ident, $krate:ident, $which:ident) => {
        pub fn $name(&self) -> $krate::Client {
            let conf = self.$which();
            self.$name
                .get_or_init(|| match &self.read_only {
                    None => $krate::Client::new(conf),
                    Some(r) => $krate::Client::from_conf(
                        $krate::config::Builder::from(conf)
                            .interceptor(r.clone())
                            .build(),
                    ),
                })
                .clone()
        }
    };
}

/// How long before its expiry an assumed role's credentials are renewed (the SDK's identity
/// cache renews lazily, on the first call inside this window; its default is 10 s). Five minutes
/// leave room for a call's retries and timeouts ([`SDK_OPERATION_TIMEOUT`]) on the old ones.
pub const ASSUMED_ROLE_RENEW_BEFORE: Duration = Duration::from_secs(300);

/// An SDK interceptor that refuses, before anything is sent, every operation whose name is not on
/// its list: the safety net of `nbaops plan` (the guard is forced to dry-run, the ledger and the
/// topics are in memory; a bug in a function still cannot mutate the account through a client).
/// The list is of IAM action names (`autoscaling:DescribeAutoScalingGroups`); an operation passes
/// when its name is the action's. The operation's name (`Metadata`) is in the config bag once the
/// operation's configuration is applied, which is after a client interceptor's
/// `read_before_execution` and before serialization: the check runs there, before any byte is
/// sent (a test below proves both).
#[derive(Debug, Clone)]
pub struct ReadOnly {
    pub allowed: &'static [&'static str],
}

impl ReadOnly {
    pub fn allows(&self, operation: &str) -> bool {
        self.allowed
            .iter()
            .any(|a| a.rsplit(':').next() == Some(operation))
    }
}

impl aws_smithy_runtime_api::client::interceptors::Intercept for ReadOnly {
    fn name(&self) -> &'static str {
        "nbaops-read-only"
    }

    fn read_before_serialization(
        &self,
        _ctx: &aws_smithy_runtime_api::client::interceptors::context::BeforeSerializationInterceptorContextRef<'_>,
        _rc: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> std::result::Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        let meta = cfg.load::<aws_smithy_runtime_api::client::orchestrator::Metadata>();
        match meta {
            Some(m) if self.allows(m.name()) => Ok(()),
            Some(m) => Err(format!(
                "refused by nbaops read-only mode: {} {} is not a read-only operation",
                m.service(),
                m.name()
            )
            .into()),
            None => Err("refused by nbaops read-only mode: an operation without a name".into()),
        }
    }
}

impl AwsClients {
    pub async fn from_env() -> AwsClients {
        let conf = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(sdk_retry_config())
            .timeout_config(sdk_timeout_config())
            .load()
            .await;
        AwsClients {
            conf,
            autoscaling: OnceLock::new(),
            rds: OnceLock::new(),
            elasticache: OnceLock::new(),
            sns: OnceLock::new(),
            ssm: OnceLock::new(),
            dynamodb: OnceLock::new(),
            sqs: OnceLock::new(),
            costexplorer: OnceLock::new(),
            cloudwatch: OnceLock::new(),
            scheduler: OnceLock::new(),
            ec2: OnceLock::new(),
            elbv2: OnceLock::new(),
            tagging: OnceLock::new(),
            s3: OnceLock::new(),
            read_only: None,
            hub_conf: None,
        }
    }

    /// The clients of a fleet member (issue #20, [`crate::fleet`]): Auto Scaling, RDS,
    /// ElastiCache and CloudWatch act in `origin`'s account and region
    /// ([`crate::aws_operations::MEMBER_SERVICES`]), through
    /// `role_arn` assumed with `external_id` (`sts:AssumeRole`, made by the hub's credentials at
    /// the hub's STS endpoint; `None`: the hub's own account in another region, its own
    /// credentials). SNS, SSM, DynamoDB, SQS, Scheduler and Cost Explorer stay the hub's: the
    /// alerts, the configuration, the ledger, the queues and the follow-ups live there, and cost is
    /// the payer's view. The assumed
    /// credentials are fetched on first use and cached for the process, renewed
    /// [`ASSUMED_ROLE_RENEW_BEFORE`] before they expire (the SDK's lazy identity cache). The
    /// read-only guard of `nbaops plan` carries over.
    /// <https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html>,
    /// <https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_common-scenarios_third-party.html>
    /// (the external id).
    pub async fn for_member(
        hub: &AwsClients,
        origin: &crate::fleet::Origin,
        role_arn: Option<&str>,
        external_id: Option<&str>,
        session_name: &str,
    ) -> AwsClients {
        let hub_conf = hub.hub_conf.clone().unwrap_or_else(|| hub.conf.clone());
        let mut builder = hub_conf
            .clone()
            .into_builder()
            .region(aws_config::Region::new(origin.region.clone()));
        if let Some(role) = role_arn {
            let mut assume = aws_config::sts::AssumeRoleProvider::builder(role)
                .session_name(session_name)
                .configure(&hub_conf);
            if let Some(id) = external_id {
                assume = assume.external_id(id);
            }
            let provider = assume.build().await;
            builder = builder
                .credentials_provider(aws_sdk_sts::config::SharedCredentialsProvider::new(
                    provider,
                ))
                .identity_cache(
                    aws_config::identity::IdentityCache::lazy()
                        .buffer_time(ASSUMED_ROLE_RENEW_BEFORE)
                        .build(),
                );
        }
        AwsClients {
            conf: builder.build(),
            autoscaling: OnceLock::new(),
            rds: OnceLock::new(),
            elasticache: OnceLock::new(),
            sns: OnceLock::new(),
            ssm: OnceLock::new(),
            dynamodb: OnceLock::new(),
            sqs: OnceLock::new(),
            costexplorer: OnceLock::new(),
            cloudwatch: OnceLock::new(),
            scheduler: OnceLock::new(),
            ec2: OnceLock::new(),
            elbv2: OnceLock::new(),
            tagging: OnceLock::new(),
            s3: OnceLock::new(),
            read_only: hub.read_only.clone(),
            hub_conf: Some(hub_conf),
        }
    }

    /// The configuration of the services that are always the hub's.
    fn hub(&self) -> &aws_config::SdkConfig {
        self.hub_conf.as_ref().unwrap_or(&self.conf)
    }

    fn conf_ref(&self) -> &aws_config::SdkConfig {
        &self.conf
    }

    /// [`AwsClients::from_env`], every client refusing the operations `guard` does not allow.
    pub async fn from_env_read_only(guard: ReadOnly) -> AwsClients {
        let mut c = AwsClients::from_env().await;
        c.read_only = Some(guard);
        c
    }

    /// The loaded SDK configuration (for a client in another region).
    pub fn conf(&self) -> &aws_config::SdkConfig {
        &self.conf
    }

    client!(autoscaling, aws_sdk_autoscaling);
    client!(rds, aws_sdk_rds);
    client!(elasticache, aws_sdk_elasticache);
    client!(sns, aws_sdk_sns, hub);
    client!(ssm, aws_sdk_ssm, hub);
    client!(dynamodb, aws_sdk_dynamodb, hub);
    client!(sqs, aws_sdk_sqs, hub);
    client!(costexplorer, aws_sdk_costexplorer, hub);
    client!(cloudwatch, aws_sdk_cloudwatch);
    client!(scheduler, aws_sdk_scheduler, hub);
    client!(ec2, aws_sdk_ec2);
    client!(elbv2, aws_sdk_elasticloadbalancingv2);
    client!(tagging, aws_sdk_resourcegroupstagging);

    /// S3 (issue #22: the backup bucket, the hub's). Path-style addressing when an endpoint is
    /// configured (an emulator on a loopback address has no per-bucket host names); AWS's own
    /// endpoints keep the default virtual-hosted style.
    pub fn s3(&self) -> aws_sdk_s3::Client {
        let conf = self.hub();
        self.s3
            .get_or_init(|| {
                let mut b = aws_sdk_s3::config::Builder::from(conf)
                    .force_path_style(conf.endpoint_url().is_some());
                if let Some(r) = &self.read_only {
                    b = b.interceptor(r.clone());
                }
                aws_sdk_s3::Client::from_conf(b.build())
            })
            .clone()
    }
}

pub struct SdkAutoScaling(pub aws_sdk_autoscaling::Client);
pub struct SdkRds(pub aws_sdk_rds::Client);
pub struct SdkElastiCache(pub aws_sdk_elasticache::Client);
pub struct SdkNotifier(pub aws_sdk_sns::Client);
pub struct SdkParams(pub aws_sdk_ssm::Client);

/// Throttling and server faults are worth a retry; a refused request is not.
fn dependency<E>(service: &'static str, err: E) -> NbaopsError
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + 'static,
{
    let code = err.code().unwrap_or("").to_string();
    let retryable = code.is_empty()
        || code.contains("Throttl")
        || code.contains("RequestLimitExceeded")
        || code.contains("ServiceUnavailable")
        || code.contains("InternalFailure")
        || code.contains("InternalError")
        || code.contains("TooManyRequests");
    // The SDK's full context dumps the raw HTTP response; the operator needs code and message.
    let message = match (err.code(), err.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_string(),
        _ => {
            let full = aws_smithy_types::error::display::DisplayErrorContext(&err).to_string();
            let status = full
                .find("StatusCode(")
                .map(|i| {
                    full[i + 11..]
                        .chars()
                        .take_while(|c| c.is_ascii_digit())
                        .collect::<String>()
                })
                .filter(|s| !s.is_empty());
            match status {
                Some(s) => format!(
                    "HTTP {s} without an AWS error code (an emulator gap or a proxy in the way)"
                ),
                None => full.chars().take(300).collect(),
            }
        }
    };
    NbaopsError::Dependency {
        service,
        message,
        retryable,
    }
}
mod costexplorer;
pub use costexplorer::SdkCostExplorer;
mod rds_power;
pub use rds_power::SdkRdsPower;
mod inventory;
pub use inventory::SdkInventory;
mod cloudwatch;
pub use cloudwatch::SdkCloudWatch;
mod scheduler;
pub use scheduler::SdkScheduler;
mod posture;
pub use posture::SdkPosture;
mod backup_store;
mod drill_group;
pub use backup_store::SdkBackupStore;

#[cfg(test)]
mod read_only_tests {
    use super::*;

    /// Clients whose endpoint nothing listens on: a request that is sent fails to connect; one
    /// the interceptor refuses fails before that, with its words.
    async fn clients(allowed: &'static [&'static str]) -> AwsClients {
        let conf = aws_config::defaults(BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url("http://127.0.0.1:9")
            .credentials_provider(aws_sdk_autoscaling::config::Credentials::new(
                "test", "test", None, None, "test",
            ))
            .retry_config(RetryConfig::disabled())
            .load()
            .await;
        let mut c = AwsClients::from_env().await;
        c.conf = conf;
        c.read_only = Some(ReadOnly { allowed });
        c
    }

    #[tokio::test]
    async fn a_mutation_is_refused_before_it_is_sent_and_a_read_is_sent() {
        let c = clients(&["autoscaling:DescribeAutoScalingGroups"]).await;
        let set = c
            .autoscaling()
            .set_desired_capacity()
            .auto_scaling_group_name("g")
            .desired_capacity(3)
            .send()
            .await;
        let err = set.err().map(|e| format!("{e:?}")).unwrap_or_default();
        assert!(err.contains("refused by nbaops read-only mode"), "{err}");
        let read = c.autoscaling().describe_auto_scaling_groups().send().await;
        let err = read.err().map(|e| format!("{e:?}")).unwrap_or_default();
        assert!(
            !err.is_empty() && !err.contains("read-only mode"),
            "sent (and failed to connect): {err}"
        );
        assert!(ReadOnly {
            allowed: &["dynamodb:Query"]
        }
        .allows("Query"));
        assert!(!ReadOnly {
            allowed: &["dynamodb:Query"]
        }
        .allows("PutItem"));
    }
}

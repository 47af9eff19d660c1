//! The IAM actions the `nbaops` command calls: all of them read-only, but for `nbaops approve`/`deny`
//! ([`APPROVE_AWS_OPERATIONS`], granted by `OperatorApprovePolicy`). `nbaops plan` builds every
//! SDK client with an interceptor that refuses any other operation
//! (`nbaops_shared::adapters::ReadOnly`), and the template's `OperatorReadOnlyPolicy` grants exactly
//! these (infra/tests/check_aws_operations.py checks both ways).

pub const OPERATOR_AWS_OPERATIONS: &[&str] = &[
    "ssm:GetParametersByPath", // config show/check, status, every plan's config (as the function loads it)
    "ssm:GetParameter", // plan: what the function reads one by one (game calendar, database secrets)
    "kms:Decrypt", // Parameter Store decrypting a SecureString a plan reads (pg-health's session)
    "dynamodb:GetItem", // plan: the ledger's reads go through (cooldowns, idempotency, state)
    "dynamodb:Query", // audit (the by-day index), status (incidents, drills, containment), plan's ledger queries
    "autoscaling:DescribeAutoScalingGroups", // plan: the groups a function looks at
    "rds:DescribeDBInstances", // plan: the instances a function looks at
    "rds:DescribeDBSnapshots", // plan: backup-guard's snapshots
    "elasticache:DescribeCacheClusters", // plan: scale-on-alarm's clusters
    "elasticache:ListTagsForResource", // plan: the protect tag of a cluster
    "cloudwatch:GetMetricStatistics", // plan: off-peak and cache memory statistics
    "cloudwatch:DescribeAlarms", // plan: alarms in state (re-check, off-peak)
    "cloudwatch:DescribeAlarmsForMetric", // plan: thresholds alignment
    "ce:GetCostAndUsage", // plan: cost-anomaly's attribution
    // plan of posture-check (issue #21): what its daily check reads
    "rds:DescribeDBParameters", // plan: posture-check's TLS parameter of each database
    "rds:DescribeDBSnapshotAttributes", // plan: posture-check's snapshot restore attribute
    "rds:DescribeDBInstanceAutomatedBackups", // plan: posture-check's DR replication
    "elasticache:DescribeReplicationGroups", // plan: posture-check's caches
    "ec2:DescribeSecurityGroups", // plan: posture-check's open cache security groups
    "ec2:DescribeVolumes",      // plan: posture-check's unused volumes
    "ec2:DescribeAddresses",    // plan: posture-check's unused Elastic IPs
    "ec2:DescribeInstances",    // plan: posture-check's stopped instances
    "elasticloadbalancing:DescribeLoadBalancers", // plan: posture-check's idle load balancers
    "tag:GetResources",         // plan: posture-check's tags (caches, load balancers, the rest)
];

/// What `nbaops approve`/`deny` adds to the read-only list: the answer's writes (granted by the
/// template's `OperatorApprovePolicy`, infra/tests/check_aws_operations.py checks both ways).
pub const APPROVE_AWS_OPERATIONS: &[&str] = &[
    "dynamodb:PutItem", // decide (TransactWriteItems put of the approval item) and the audit record
    "sns:Publish", // write_audit: the audit record on the actions topic (when one is configured)
    "scheduler:CreateSchedule", // approval::dispatch: the schedule approval-<id>
    "iam:PassRole", // SdkScheduler::create_once passes alerts.approval.role_arn to Scheduler
];

//! The IAM actions this function's own code adds to the shared path's
//! (`nbaops_shared::aws_operations::RUNTIME_AWS_OPERATIONS`: config, guard, ledger, alerts), read from
//! its code and the shared adapters it reaches. The template's role for this function must allow
//! exactly the union (infra/tests/check_aws_operations.py checks both ways).
//! Actions another service authorises on our behalf are listed too, with the call that causes them.

pub const AWS_OPERATIONS: &[&str] = &[
    "sts:AssumeRole", // a fleet member's role (issue #20, nbaops_shared::adapters::AwsClients::for_member)
    "ssm:GetParameter", // SecureString /nbaops/<env>/secrets/backup/drill/<db> (the drill session)
    "rds:DescribeDBInstances", // SdkRdsBackups::describe_instance
    "rds:DescribeDBSnapshots", // SdkRdsBackups::list_snapshots
    "rds:CreateDBSnapshot", // SdkRdsBackups::create_snapshot
    "rds:CopyDBSnapshot", // SdkRdsBackups::copy_to_dr
    "rds:DeleteDBSnapshot", // SdkRdsBackups::delete_snapshot
    "rds:RestoreDBInstanceFromDBSnapshot", // SdkRdsBackups::restore_instance
    "rds:DeleteDBInstance", // SdkRdsBackups::delete_instance
    "rds:AddTagsToResource", // RDS authorises it when create/copy/restore pass Tags
    "kms:CreateGrant", // RDS granting itself the DR key (and the source's) for an encrypted copy_to_dr / start_replication
    "kms:DescribeKey", // RDS checking the DR key for an encrypted copy_to_dr / start_replication
    "rds:DescribeDBInstanceAutomatedBackups", // SdkRdsBackups::replicated_backups (DR region)
    "rds:StartDBInstanceAutomatedBackupsReplication", // SdkRdsBackups::start_replication (called in the DR region)
    // Issue #22, the full-system drill's smoke-test group (nbaops_shared::ports::DrillGroups on SdkAutoScaling).
    "autoscaling:CreateAutoScalingGroup", // SdkAutoScaling::create_group
    "autoscaling:CreateOrUpdateTags",     // the tags passed to CreateAutoScalingGroup
    "autoscaling:DescribeAutoScalingGroups", // SdkAutoScaling::describe_group
    "autoscaling:DeleteAutoScalingGroup", // SdkAutoScaling::force_delete_group
    "ec2:RunInstances", // checked on the caller of CreateAutoScalingGroup with a launch template
    "ec2:CreateTags",   // ... when the launch template tags its instances and volumes
    "s3:ListBucket", // SdkBackupStore::list (ListObjectsV2 is authorised as s3:ListBucket; issue #22)
    "sqs:SendMessage", // a dispatch tick's SendMessageBatch of work items (shared/src/runtime/fanout.rs)
    // Authorised on our behalf: the event source mapping polls the work queue with this role.
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
];

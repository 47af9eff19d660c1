//! The IAM actions this function's own code adds to the shared path's
//! (`nbaops_shared::aws_operations::RUNTIME_AWS_OPERATIONS`: config, guard, ledger, alerts), read from
//! its code and the shared adapter it reaches (`nbaops_shared::adapters::SdkPosture`). The template's
//! role for this function must allow exactly the union (infra/tests/check_aws_operations.py checks
//! both ways). Read-only but for the two fixes, which the template scopes to tagged resources.

pub const AWS_OPERATIONS: &[&str] = &[
    "rds:DescribeDBInstances",                    // SdkPosture::db_instances
    "rds:DescribeDBParameters",                   // SdkPosture::db_parameter (rds.force_ssl)
    "rds:DescribeDBSnapshots",                    // SdkPosture::db_snapshots
    "rds:DescribeDBSnapshotAttributes",           // SdkPosture::db_snapshots (restore: all)
    "rds:DescribeDBInstanceAutomatedBackups",     // SdkPosture::replicated_backups (DR region)
    "rds:ModifyDBInstance",                       // SdkPosture::enable_deletion_protection (fix)
    "rds:AddTagsToResource",                      // SdkPosture::add_rds_tags (fix)
    "elasticache:DescribeReplicationGroups",      // SdkPosture::caches
    "elasticache:DescribeCacheClusters",          // SdkPosture::caches
    "ec2:DescribeSecurityGroups",                 // SdkPosture::security_groups
    "ec2:DescribeVolumes",                        // SdkPosture::volumes
    "ec2:DescribeAddresses",                      // SdkPosture::addresses
    "ec2:DescribeInstances",                      // SdkPosture::instances
    "elasticloadbalancing:DescribeLoadBalancers", // SdkPosture::load_balancers
    "cloudwatch:GetMetricStatistics",             // SdkPosture::load_balancers (traffic)
    "tag:GetResources", // SdkPosture::tagged_resources, caches' and load balancers' tags
];

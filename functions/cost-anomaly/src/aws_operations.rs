//! The IAM actions this function's own code adds to the shared path's
//! (`nbaops_shared::aws_operations::RUNTIME_AWS_OPERATIONS`: config, guard, ledger, alerts), read from
//! its code and the shared adapters it reaches. The template's role for this function must allow
//! exactly the union (infra/tests/check_aws_operations.py checks both ways).
//! Actions another service authorises on our behalf are listed too, with the call that causes them.

pub const AWS_OPERATIONS: &[&str] = &[
    "ce:GetCostAndUsage",                    // SdkCostExplorer::daily_cost
    "autoscaling:DescribeAutoScalingGroups", // SdkAutoScaling::describe_group
    "autoscaling:UpdateAutoScalingGroup", // SdkAutoScaling::update_group_size (containment to 0/0/0)
    "rds:DescribeDBInstances",            // SdkRds::describe_instance
    "rds:StopDBInstance",                 // SdkRdsPower::stop_instance (containment)
];

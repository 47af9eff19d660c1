//! The IAM actions this function's own code adds to the shared path's
//! (`nbaops_shared::aws_operations::RUNTIME_AWS_OPERATIONS`: config, guard, ledger, alerts), read from
//! its code and the shared adapters it reaches. The template's role for this function must allow
//! exactly the union (infra/tests/check_aws_operations.py checks both ways).
//! Actions another service authorises on our behalf are listed too, with the call that causes them.

pub const AWS_OPERATIONS: &[&str] = &[
    "sts:AssumeRole", // a fleet member's role (issue #20, nbaops_shared::adapters::AwsClients::for_member)
    "ssm:GetParameter", // the fleet's external id /nbaops/<env>/secrets/fleet/external_id (issue #20)
    "autoscaling:DescribeAutoScalingGroups", // SdkInventory::list_groups_with_tag
    "autoscaling:UpdateAutoScalingGroup", // SdkAutoScaling::update_group_size
    "rds:DescribeDBInstances", // SdkInventory::list_db_instances_with_tag, SdkRds::describe_instance
    "rds:StopDBInstance",      // SdkRdsPower::stop_instance
    "rds:StartDBInstance",     // SdkRdsPower::start_instance
    "sqs:SendMessage", // a dispatch tick's SendMessageBatch of work items (shared/src/runtime/fanout.rs)
    // Authorised on our behalf: the event source mapping polls the work queue with this role.
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
];

//! The IAM actions this function's own code adds to the shared path's
//! (`nbaops_shared::aws_operations::RUNTIME_AWS_OPERATIONS`: config, guard, ledger, alerts), read from
//! its code and the shared adapters it reaches. The template's role for this function must allow
//! exactly the union (infra/tests/check_aws_operations.py checks both ways).
//! Actions another service authorises on our behalf are listed too, with the call that causes them.

pub const AWS_OPERATIONS: &[&str] = &[
    "sts:AssumeRole", // a fleet member's role (issue #20, nbaops_shared::adapters::AwsClients::for_member)
    "autoscaling:DescribeAutoScalingGroups", // SdkAutoScaling::describe_group
    "autoscaling:SetDesiredCapacity", // SdkAutoScaling::set_desired_capacity
    "rds:DescribeDBInstances", // SdkRds::describe_instance
    "rds:ModifyDBInstance", // SdkRds::modify_instance_class
    "elasticache:DescribeCacheClusters", // SdkElastiCache::describe_cluster
    "elasticache:ListTagsForResource", // SdkElastiCache::describe_cluster (protect tag)
    "elasticache:ModifyCacheCluster", // SdkElastiCache::set_node_count
    "cloudwatch:GetMetricStatistics", // SdkCloudWatch::statistics (offpeak.rs, cache_memory.rs)
    "cloudwatch:DescribeAlarms", // SdkCloudWatch::alarms_in_state (offpeak.rs); set_alarm_threshold reads the alarm to rewrite it whole
    "cloudwatch:DescribeAlarmsForMetric", // SdkCloudWatch::alarms_for_metric (thresholds.rs)
    "cloudwatch:PutMetricAlarm", // SdkCloudWatch::set_alarm_threshold (thresholds.rs)
    "ssm:GetParameter",          // SdkParams::get (the game calendar, gamenight.rs)
    // Follow-ups (re-checks, off-peak steps, game nights); DescribeAlarms above.
    "scheduler:CreateSchedule", // SdkScheduler::create_once
    "scheduler:DeleteSchedule", // SdkScheduler::delete (alarm back to OK, a re-planned game night)
    "iam:PassRole", // SdkScheduler::create_once passes scale.followup.role_arn to Scheduler
];

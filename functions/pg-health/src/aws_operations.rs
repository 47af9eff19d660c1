//! The IAM actions this function's own code adds to the shared path's
//! (`nbaops_shared::aws_operations::RUNTIME_AWS_OPERATIONS`: config, guard, ledger, alerts), read from
//! its code and the shared adapters it reaches. The template's role for this function must allow
//! exactly the union (infra/tests/check_aws_operations.py checks both ways).
//! Actions another service authorises on our behalf are listed too, with the call that causes them.
#![allow(dead_code)] // read by infra/tests/check_aws_operations.py, not by the binary

pub const AWS_OPERATIONS: &[&str] = &[
    "sts:AssumeRole", // a fleet member's role (issue #20, nbaops_shared::adapters::AwsClients::for_member)
    "ssm:GetParameter", // SecureString /nbaops/<env>/secrets/pg/<db>/monitor (shared/src/sql)
    "scheduler:CreateSchedule", // SdkScheduler::create_once: the immediate wraparound freeze (freeze.rs)
    "iam:PassRole", // SdkScheduler::create_once passes pg.emergency_freeze.role_arn to Scheduler
    "sqs:SendMessage", // a dispatch tick's SendMessageBatch of work items (shared/src/runtime/fanout.rs)
    // Authorised on our behalf: the event source mapping polls the work queue with this role.
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
];

//! The IAM actions every function's shared path calls: configuration at init and the guard's live
//! switches (SSM by path), the ledger (DynamoDB) and the alerts and actions topics (SNS). Each
//! function's `src/aws_operations.rs` lists only what its own code adds; its template role must
//! allow exactly the union (infra/tests/check_aws_operations.py checks both ways, and
//! infra/tests/check_observed_calls.py holds every call the test suite saw to it).
//! Actions another service authorises on our behalf are listed too, with the call that causes them.
#![allow(dead_code)] // read by infra/tests/check_aws_operations.py and check_observed_calls.py

pub const RUNTIME_AWS_OPERATIONS: &[&str] = &[
    "ssm:GetParametersByPath", // config at init (guard, audit, the function's sections) and the guard's switches (shared/src/config, shared/src/guard/)
    "dynamodb:GetItem",        // ledger get (guard cooldown/idempotency, state)
    "dynamodb:PutItem", // ledger put / put_if_absent / TransactWriteItems puts (audit, idempotency, state)
    "dynamodb:DeleteItem", // ledger delete / TransactWriteItems deletes
    "dynamodb:Query",   // ledger query
    "sns:Publish",      // alerts (shared/src/alerts.rs) and audit records on the actions topic
    "kms:GenerateDataKey", // SNS encrypting what we publish to a customer-managed-key topic
    "kms:Decrypt",      // SNS encrypting what we publish to a customer-managed-key topic
];

/// Issue #20: the functions whose records may come from a fleet member (routed by origin,
/// shared/src/runtime/members.rs). Each lists in its own `AWS_OPERATIONS`, besides what it calls,
/// `sts:AssumeRole` (the member role, `nbaops-member-<env>`) and `ssm:GetParameter` (the external
/// id, `/nbaops/<env>/secrets/fleet/external_id`, decrypted under the shared `kms:Decrypt`).
/// alert-router (no AWS resources of a member) and cost-anomaly (cost alerts carry no origin: the
/// payer's view) are the hub's only.
pub const FLEET_FUNCTIONS: &[&str] = &[
    "scale-on-alarm",
    "pg-health",
    "vacuum-trigger",
    "failover-notify",
    "backup-guard",
    "offhours",
];

/// The services a member's clients call in the member account (`AwsClients::for_member`), and
/// KMS, which RDS authorises there on our behalf (backup-guard's encrypted copies). The member
/// role (infra/member-role.yaml) allows exactly the operations of these services in the
/// `AWS_OPERATIONS` of the [`FLEET_FUNCTIONS`] (infra/tests/check_member_role.py).
pub const MEMBER_SERVICES: &[&str] = &["autoscaling", "rds", "elasticache", "cloudwatch", "kms"];

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

//! The IAM actions this function's code can call, read from its code and every shared adapter it
//! reaches (shared/src/adapters, shared/src/runtime/, shared/src/guard.rs). The template's role for
//! this function must allow exactly these (infra/tests/check_aws_operations.py checks both ways).
//! Actions another service authorises on our behalf are listed too, with the call that causes them.

pub const AWS_OPERATIONS: &[&str] = &[
    "ssm:GetParametersByPath", // config loading at init: guard, audit and this function's sections
    "ssm:GetParameter",        // SecureString /nbaops/<env>/secrets/failover/<db> (verify.rs)
    "kms:Decrypt",             // Parameter Store decrypting that SecureString
    "dynamodb:GetItem",        // ledger get (guard cooldown/idempotency, state)
    "dynamodb:PutItem",        // ledger put / put_if_absent (audit, idempotency, state)
    "dynamodb:DeleteItem",     // ledger delete
    "dynamodb:Query",          // ledger query
    "sns:Publish", // alerts (shared/src/alerts.rs) and audit records on the actions topic
    "kms:GenerateDataKey", // SNS encrypting what we publish to a customer-managed-key topic
    "rds:DescribeDBInstances", // SdkRds::describe_instance
];

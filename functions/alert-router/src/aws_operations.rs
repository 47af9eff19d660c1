//! The IAM actions this function's own code adds to the shared path's
//! (`nbaops_shared::aws_operations::RUNTIME_AWS_OPERATIONS`: config, guard, ledger, alerts), read from
//! its code and the shared adapters it reaches. The template's role for this function must allow
//! exactly the union (infra/tests/check_aws_operations.py checks both ways).
//! Actions another service authorises on our behalf are listed too, with the call that causes them.

pub const AWS_OPERATIONS: &[&str] = &[
    "ssm:GetParameter", // SecureString /nbaops/<env>/secrets/alerts/* (Slack, PagerDuty, link keys)
    "sqs:SendMessage",  // SdkDeadLetter::send
    "scheduler:CreateSchedule", // approval::dispatch_approved (approved by timeout in the sweep)
    "iam:PassRole",     // SdkScheduler::create_once passes alerts.approval.role_arn to Scheduler
];

/// The acknowledgement URL (the same binary deployed as its own function, AlertAckFunction): only
/// config, the secrets its init reads, the incident record and the approval requests it decides.
pub const ACK_AWS_OPERATIONS: &[&str] = &[
    "ssm:GetParametersByPath", // config loading at init: guard, audit and this function's sections
    "ssm:GetParameter", // SecureStrings /nbaops/<env>/secrets/alerts/*: the binary reads the link keys and the channel secrets at init
    "kms:Decrypt",      // Parameter Store decrypting that SecureString
    "dynamodb:GetItem", // load_incident
    "dynamodb:PutItem", // save_incident
    "dynamodb:DeleteItem", // save_incident (open index)
    "sns:Publish", // write_audit: the audit record of each approval answer on the actions topic
    "scheduler:CreateSchedule", // approval::dispatch_approved (approval::dispatch)
    "iam:PassRole", // SdkScheduler::create_once passes alerts.approval.role_arn to Scheduler
];

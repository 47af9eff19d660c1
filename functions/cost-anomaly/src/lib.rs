//! cost-anomaly: Cost Anomaly Detection alerts, AWS Budgets notifications and a daily Cost
//! Explorer check, attributed to an nbaops environment, alerted, and contained where allowed.

pub mod aws_operations;
pub mod handler;
pub mod plan;

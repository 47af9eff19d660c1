//! posture-check as a library (issue #21): `handler` (the daily task: gather, judge, remember,
//! report, fix), `rules` (pure: facts to findings) and `aws_operations` (its IAM actions).

pub mod aws_operations;
pub mod handler;
pub mod rules;

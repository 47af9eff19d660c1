//! backup-guard as a library: `handler` (the function: which inbound goes where), the three tasks
//! `rpo` (RPO check), `monthly` (snapshot lifecycle) and `drill` (restore drill), the
//! `s3kinds` check of the backups kept in S3 (issue #22), `observe`
//! (reading backup state, for the RPO check and the drill) and `plan` (pure decisions).

pub mod aws_operations;
pub mod drill;
pub mod handler;
pub mod monthly;
pub mod observe;
pub mod plan;
pub mod rpo;
pub mod s3kinds;

//! backup-guard as a library: `plan` (pure decisions), `handler` (dispatch and the RPO check),
//! `monthly` (snapshot lifecycle), `drill` (restore drill state machine effects).

pub mod aws_operations;
pub mod drill;
pub mod handler;
pub mod monthly;
pub mod plan;

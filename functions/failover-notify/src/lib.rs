//! failover-notify as a library: `incident` (the pure timeline), `verify` (the new primary's
//! checks), `handler` (translation, ledger, notifications).

pub mod aws_operations;
pub mod handler;
pub mod incident;
pub mod verify;

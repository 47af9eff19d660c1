//! offhours: tagged Auto Scaling groups and RDS instances of non-production environments stop
//! and start on named schedules, acting on transitions, database first on the way up and last
//! on the way down.

pub mod aws_operations;
mod execution;
pub mod handler;
mod inventory;
pub mod plan;
pub mod schedule;
mod state;

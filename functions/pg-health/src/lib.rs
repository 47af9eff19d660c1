//! pg-health as a library too, so the `nbaops` command (plan, replay) runs the same decisions.

pub mod aws_operations;
pub mod checks;
pub mod freeze;
pub mod handler;
pub mod logs;
#[cfg(test)]
mod properties;
pub mod scan;

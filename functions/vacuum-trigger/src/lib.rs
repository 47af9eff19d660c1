//! vacuum-trigger as a library too, so the `nbaops` command (plan, replay) runs the same decisions.

pub mod approved;
pub mod aws_operations;
pub mod emergency;
pub mod handler;
pub mod plan;
#[cfg(test)]
mod properties;
pub mod runaway;
pub mod statement;

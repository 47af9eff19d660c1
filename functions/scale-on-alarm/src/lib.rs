//! scale-on-alarm as a library too, so the benchmark can time parse + plan in-process.

pub mod aws_operations;
pub mod handler;
pub mod plan;
pub mod recheck;
